//! The sources and the one detector together: bytes of a source in, alert changes out.
//!
//! Time zones: nginx writes local time without a zone. The head parse gives the naive
//! local seconds; a [`Zone`] turns them into POSIX seconds (the boundary asks Python's
//! zoneinfo once per distinct second, cached; a fixed zone needs no call).

use crate::event::{failure_peer, parse_event};
use crate::head::{ended_hint, failure_kind, Head, Kind};
use crate::pipeline::{Pipeline, Sink};
use crate::snapshot::{Reader, Result, SnapshotError, Writer};
use crate::tracker::{new_map, Change, Config, Detector, Input, Key, SourceId};
use crate::upstreams::Upstreams;

type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Naive local seconds to POSIX seconds.
pub trait Zone {
    fn ts(&mut self, naive: i64) -> i64;
}

/// A zone whose offset never changes (UTC, `+02:00`).
pub struct FixedZone(pub i64);

impl Zone for FixedZone {
    fn ts(&mut self, naive: i64) -> i64 {
        naive - self.0
    }
}

/// Any zone, through a conversion function, remembered per distinct second (bounded).
pub struct CachedZone<F: FnMut(i64) -> i64> {
    convert: F,
    last: Option<(i64, i64)>,
    seen: Map<i64, i64>,
}

impl<F: FnMut(i64) -> i64> CachedZone<F> {
    pub fn new(convert: F) -> Self {
        CachedZone {
            convert,
            last: None,
            seen: new_map(),
        }
    }
}

impl<F: FnMut(i64) -> i64> Zone for CachedZone<F> {
    fn ts(&mut self, naive: i64) -> i64 {
        if let Some((n, ts)) = self.last {
            if n == naive {
                return ts;
            }
        }
        let ts = match self.seen.get(&naive) {
            Some(&ts) => ts,
            None => {
                if self.seen.len() >= 4096 {
                    self.seen.clear();
                }
                let ts = (self.convert)(naive);
                self.seen.insert(naive, ts);
                ts
            }
        };
        self.last = Some((naive, ts));
        ts
    }
}

/// A second and a name's id (a peer or a server, absent when the line has none).
pub type SecondAnd = (i64, Option<u32>);

/// What `analyze` folds: connect failures per second by kind, peer and server, per errno.
/// Peers and servers are kept once each, by id, so a line costs no allocation.
#[derive(Default)]
pub struct Aggregates {
    pub first: Option<i64>,
    pub last: Option<i64>,
    pub by_kind: Map<(i64, Kind), u64>,
    pub by_peer: Map<SecondAnd, u64>,
    pub by_server: Map<SecondAnd, u64>,
    pub by_errno: Map<Option<u64>, u64>,
    /// Event rows for the export (one per distinct failure a batch, counted), when asked.
    pub rows: Option<Vec<Row>>,
    row_index: Map<RowKey, usize>,
    cache: Map<Box<[u8]>, FailureFields>,
    hits: u64,
    bypass: usize,
    names: Vec<Box<[u8]>>,
    name_ids: Map<Box<[u8]>, u32>,
}

/// Failure lines whose fields `analyze` remembers at once.
const CACHE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FailureFields {
    peer: Option<u32>,
    server: Option<u32>,
    errno: Option<u64>,
}

type RowKey = (i64, SourceId, u64, u64, Kind, FailureFields);

/// One export row: a failure line and how many times it came in the batch.
#[derive(Clone, Debug)]
pub struct Row {
    pub ts: i64,
    pub source: SourceId,
    pub pid: u64,
    pub cid: u64,
    pub kind: Kind,
    pub errno: Option<u64>,
    pub peer: Option<u32>,
    pub server: Option<u32>,
    pub count: u64,
}

impl Aggregates {
    pub fn new(rows: bool) -> Self {
        Aggregates {
            by_kind: new_map(),
            by_peer: new_map(),
            by_server: new_map(),
            by_errno: new_map(),
            rows: rows.then(Vec::new),
            row_index: new_map(),
            cache: new_map(),
            first: None,
            last: None,
            hits: 0,
            bypass: 0,
            names: Vec::new(),
            name_ids: new_map(),
        }
    }

    /// The peer or server name of an id.
    pub fn name(&self, id: u32) -> &[u8] {
        &self.names[id as usize]
    }

    fn intern(&mut self, name: &[u8]) -> u32 {
        if let Some(&id) = self.name_ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.into());
        self.name_ids.insert(name.into(), id);
        id
    }

    fn event(&mut self, ts: i64) {
        self.first = Some(self.first.map_or(ts, |f| f.min(ts)));
        self.last = Some(self.last.map_or(ts, |l| l.max(ts)));
    }

    /// A failure line's peer, server and errno: parsed once per distinct line while the
    /// cache pays (a storm repeats its lines); a flood of distinct lines bypasses it.
    fn fields(&mut self, text: &[u8]) -> FailureFields {
        let body = text.get(19..).unwrap_or_default();
        let cached = self.bypass == 0;
        if cached {
            if let Some(&f) = self.cache.get(body) {
                self.hits += 1;
                return f;
            }
        } else {
            self.bypass -= 1;
        }
        let f = match parse_event(text) {
            Ok(ev) => FailureFields {
                peer: ev.peer.map(|p| self.intern(p)),
                server: ev.server.map(|s| self.intern(s)),
                errno: ev.errno,
            },
            Err(_) => FailureFields {
                peer: None,
                server: None,
                errno: None,
            },
        };
        if cached {
            if self.cache.len() >= CACHE {
                // Fewer hits than lines kept: the lines do not repeat; stop caching awhile.
                if self.hits < CACHE as u64 {
                    self.bypass = 16 * CACHE;
                }
                self.hits = 0;
                self.cache.clear();
            }
            self.cache.insert(body.into(), f);
        }
        f
    }

    fn failure(&mut self, ts: i64, source: SourceId, pid: u64, cid: u64, kind: Kind, text: &[u8]) {
        let f = self.fields(text);
        *self.by_kind.entry((ts, kind)).or_insert(0) += 1;
        *self.by_peer.entry((ts, f.peer)).or_insert(0) += 1;
        *self.by_server.entry((ts, f.server)).or_insert(0) += 1;
        *self.by_errno.entry(f.errno).or_insert(0) += 1;
        if let Some(rows) = &mut self.rows {
            let key = (ts, source, pid, cid, kind, f);
            match self.row_index.get(&key) {
                Some(&i) => rows[i].count += 1,
                None => {
                    self.row_index.insert(key, rows.len());
                    rows.push(Row {
                        ts,
                        source,
                        pid,
                        cid,
                        kind,
                        errno: f.errno,
                        peer: f.peer,
                        server: f.server,
                        count: 1,
                    });
                }
            }
        }
    }

    /// The export rows gathered since the last call.
    pub fn take_rows(&mut self) -> Vec<Row> {
        self.row_index.clear();
        self.rows.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Rows of `source` dropped; those of `moved` take its id (see `Engine::remove_source`).
    fn remove_source(&mut self, source: SourceId, moved: SourceId) {
        let Some(rows) = &mut self.rows else {
            return;
        };
        rows.retain(|r| r.source != source);
        self.row_index.clear();
        for (i, r) in rows.iter_mut().enumerate() {
            if r.source == moved {
                r.source = source;
            }
            let fields = FailureFields {
                peer: r.peer,
                server: r.server,
                errno: r.errno,
            };
            self.row_index
                .insert((r.ts, r.source, r.pid, r.cid, r.kind, fields), i);
        }
    }
}

struct DetectSink<'a, Z: Zone> {
    detector: &'a mut Detector,
    zone: &'a mut Z,
    source: SourceId,
    changes: &'a mut Vec<Change>,
    agg: Option<&'a mut Aggregates>,
    upstreams: Option<&'a mut Upstreams>,
    newest: &'a mut Option<i64>,
}

impl<Z: Zone> Sink for DetectSink<'_, Z> {
    fn event(&mut self, text: &[u8], head: &Head) {
        let input = input_of(self.zone, self.source, text, head);
        detect_one(
            self.detector,
            self.agg.as_deref_mut(),
            self.upstreams.as_deref_mut(),
            self.newest,
            &input,
            self.changes,
        );
    }
}

/// What the detector needs of an event whose head parsed.
fn input_of<'t, Z: Zone>(zone: &mut Z, source: SourceId, text: &'t [u8], head: &Head) -> Input<'t> {
    let failure = failure_kind(text, head);
    Input {
        ts: zone.ts(head.naive),
        source,
        pid: head.pid,
        cid: head.cid,
        failure,
        ended_hint: head.cid.is_some() && failure.is_none() && ended_hint(text),
        text,
        msg: head.msg_start,
    }
}

fn detect_one(
    detector: &mut Detector,
    agg: Option<&mut Aggregates>,
    upstreams: Option<&mut Upstreams>,
    newest: &mut Option<i64>,
    input: &Input<'_>,
    changes: &mut Vec<Change>,
) {
    if newest.is_none_or(|n| input.ts > n) {
        *newest = Some(input.ts);
    }
    detector.process(input, 1, changes);
    if let (Some(upstreams), Some(_), Some(cid)) = (upstreams, input.failure, input.cid) {
        let key = Key {
            source: input.source,
            pid: input.pid,
            cid,
        };
        // the detector's read of the line when it made one (a tracked connection's: a
        // storm's every line), else the peer alone (a pending key's line stays unread)
        let peer = match detector.line_peer() {
            Some(peer) => peer,
            None => failure_peer(input.text, input.msg),
        };
        upstreams.failure(input.ts, &key, peer, 1);
    }
    if let Some(agg) = agg {
        agg.event(input.ts);
        if let (Some(kind), Some(cid)) = (input.failure, input.cid) {
            agg.failure(input.ts, input.source, input.pid, cid, kind, input.text);
        }
    }
}

/// One chunk's events, read but not yet detected: what a reader thread hands the
/// detector (`replay` and `analyze` read their files on every core).
#[derive(Default)]
pub struct Parsed {
    arena: Vec<u8>,
    events: Vec<ParsedEvent>,
}

struct ParsedEvent {
    ts: i64,
    pid: u64,
    cid: Option<u64>,
    failure: Option<Kind>,
    ended_hint: bool,
    msg: usize,
    start: usize,
    end: usize,
}

impl Parsed {
    /// The event time of the first event (None when the chunk had none).
    pub fn first_ts(&self) -> Option<i64> {
        self.events.first().map(|e| e.ts)
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

struct CollectSink<'a, Z: Zone> {
    zone: &'a mut Z,
    out: &'a mut Parsed,
}

impl<Z: Zone> Sink for CollectSink<'_, Z> {
    fn event(&mut self, text: &[u8], head: &Head) {
        let input = input_of(self.zone, 0, text, head);
        let start = self.out.arena.len();
        self.out.arena.extend_from_slice(text);
        self.out.events.push(ParsedEvent {
            ts: input.ts,
            pid: input.pid,
            cid: input.cid,
            failure: input.failure,
            ended_hint: input.ended_hint,
            msg: input.msg,
            start,
            end: self.out.arena.len(),
        });
    }
}

/// One source read apart from the detector: its pipeline, chunks in, [`Parsed`] out.
pub struct SourceReader {
    pub pipe: Pipeline,
}

impl SourceReader {
    pub fn new(max_line: usize) -> Self {
        SourceReader {
            pipe: Pipeline::new(max_line),
        }
    }

    pub fn parse<Z: Zone>(&mut self, chunk: &[u8], zone: &mut Z) -> Parsed {
        let mut out = Parsed::default();
        self.pipe.feed(
            chunk,
            &mut CollectSink {
                zone,
                out: &mut out,
            },
        );
        out
    }

    pub fn parse_records<Z: Zone>(&mut self, records: &[&[u8]], zone: &mut Z) -> Parsed {
        let mut out = Parsed::default();
        self.pipe.feed_records(
            records,
            &mut CollectSink {
                zone,
                out: &mut out,
            },
        );
        out
    }

    pub fn flush<Z: Zone>(&mut self, zone: &mut Z) -> Parsed {
        let mut out = Parsed::default();
        self.pipe.flush(&mut CollectSink {
            zone,
            out: &mut out,
        });
        out
    }
}

pub struct Engine {
    pub names: Vec<String>,
    index: Map<String, SourceId>,
    pub pipes: Vec<Pipeline>,
    /// The newest event second each source gave.
    pub newest: Vec<Option<i64>>,
    pub detector: Detector,
    pub max_line: usize,
    pub agg: Option<Aggregates>,
    /// Connect failures per upstream peer, when asked for.
    pub upstreams: Option<Upstreams>,
}

/// Sources an engine holds at most (each has a pipeline; names come from paths).
pub const MAX_SOURCES: usize = 1 << 20;

impl Engine {
    pub fn new(config: Config, max_line: usize) -> Self {
        Engine {
            names: Vec::new(),
            index: new_map(),
            pipes: Vec::new(),
            newest: Vec::new(),
            detector: Detector::new(config),
            max_line,
            agg: None,
            upstreams: None,
        }
    }

    /// The id of a source, added on first use.
    pub fn source(&mut self, name: &str) -> SourceId {
        if let Some(&id) = self.index.get(name) {
            return id;
        }
        let id = SourceId::try_from(self.names.len()).unwrap_or(SourceId::MAX);
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), id);
        self.pipes.push(Pipeline::new(self.max_line));
        self.newest.push(None);
        id
    }

    pub fn lookup(&self, name: &str) -> Option<SourceId> {
        self.index.get(name).copied()
    }

    fn run<Z: Zone>(
        &mut self,
        source: SourceId,
        zone: &mut Z,
        changes: &mut Vec<Change>,
        f: impl FnOnce(&mut Pipeline, &mut DetectSink<'_, Z>),
    ) {
        let Engine {
            pipes,
            detector,
            agg,
            upstreams,
            newest,
            ..
        } = self;
        let newest = &mut newest[source as usize];
        let mut sink = DetectSink {
            detector,
            zone,
            source,
            changes,
            agg: agg.as_mut(),
            upstreams: upstreams.as_mut(),
            newest,
        };
        f(&mut pipes[source as usize], &mut sink);
        sink.detector.finish_batch(sink.changes);
    }

    pub fn feed<Z: Zone>(
        &mut self,
        source: SourceId,
        chunk: &[u8],
        zone: &mut Z,
        changes: &mut Vec<Change>,
    ) {
        self.run(source, zone, changes, |pipe, sink| pipe.feed(chunk, sink));
    }

    pub fn feed_records<Z: Zone>(
        &mut self,
        source: SourceId,
        records: &[&[u8]],
        zone: &mut Z,
        changes: &mut Vec<Change>,
    ) {
        self.run(source, zone, changes, |pipe, sink| {
            pipe.feed_records(records, sink)
        });
    }

    pub fn feed_events<Z: Zone>(
        &mut self,
        source: SourceId,
        events: &[&[u8]],
        zone: &mut Z,
        changes: &mut Vec<Change>,
    ) {
        self.run(source, zone, changes, |pipe, sink| {
            pipe.feed_events(events, sink)
        });
    }

    pub fn flush<Z: Zone>(&mut self, source: SourceId, zone: &mut Z, changes: &mut Vec<Change>) {
        self.run(source, zone, changes, |pipe, sink| pipe.flush(sink));
    }

    /// A quiet source: what it holds is released ([`Pipeline::release`]).
    pub fn release<Z: Zone>(&mut self, source: SourceId, zone: &mut Z, changes: &mut Vec<Change>) {
        self.run(source, zone, changes, |pipe, sink| pipe.release(sink));
    }

    /// Detects the events a [`SourceReader`] read from `source`: one batch, as `feed` would.
    pub fn detect(&mut self, source: SourceId, parsed: &Parsed, changes: &mut Vec<Change>) {
        let Engine {
            detector,
            agg,
            upstreams,
            newest,
            ..
        } = self;
        let newest = &mut newest[source as usize];
        for ev in &parsed.events {
            let input = Input {
                ts: ev.ts,
                source,
                pid: ev.pid,
                cid: ev.cid,
                failure: ev.failure,
                ended_hint: ev.ended_hint,
                text: &parsed.arena[ev.start..ev.end],
                msg: ev.msg,
            };
            detect_one(
                detector,
                agg.as_mut(),
                upstreams.as_mut(),
                newest,
                &input,
                changes,
            );
        }
        detector.finish_batch(changes);
    }

    pub fn advance(&mut self, ts: i64, changes: &mut Vec<Change>) {
        self.detector.advance(ts, changes);
    }

    /// Releases every key the detector holds for `source` (a firing one resolves, reason
    /// `source_removed`): the changes name the source, so take them before
    /// [`Engine::remove_source`], which renumbers.
    pub fn release_source(&mut self, source: SourceId, changes: &mut Vec<Change>) {
        self.detector.release_source(source, changes);
    }

    /// Forgets a source: its pipeline, counters and keys (false when unknown). Its id goes
    /// to the last source (a swap-remove), so ids taken before are stale after.
    pub fn remove_source(&mut self, name: &str) -> bool {
        let Some(id) = self.index.remove(name) else {
            return false;
        };
        let last = SourceId::try_from(self.names.len() - 1).unwrap_or(SourceId::MAX);
        self.detector.remove_source(id, last);
        if let Some(agg) = &mut self.agg {
            agg.remove_source(id, last);
        }
        self.names.swap_remove(id as usize);
        self.pipes.swap_remove(id as usize);
        self.newest.swap_remove(id as usize);
        if let Some(name) = self.names.get(id as usize) {
            self.index.insert(name.clone(), id);
        }
        true
    }

    /// The versioned state: sources with their pipelines, then the detector.
    pub fn save(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.buf.extend_from_slice(MAGIC);
        w.u64(VERSION);
        w.usize(self.names.len());
        for (name, pipe) in self.names.iter().zip(&self.pipes) {
            w.bytes(name.as_bytes());
            pipe.save(&mut w);
        }
        self.detector.save(&mut w);
        w.buf
    }

    /// An engine from saved state, with today's settings.
    pub fn load(state: &[u8], config: Config, max_line: usize) -> Result<Engine> {
        let Some(rest) = state.strip_prefix(MAGIC) else {
            return Err(SnapshotError("not a retrywatch state".into()));
        };
        let mut r = Reader::new(rest);
        let version = r.u64()?;
        if version != VERSION {
            return Err(SnapshotError(format!(
                "state version {version}, this build reads {VERSION}"
            )));
        }
        let mut engine = Engine::new(config, max_line);
        let n = r.count(2)?;
        if n > MAX_SOURCES {
            return Err(SnapshotError("too many sources".into()));
        }
        for _ in 0..n {
            let name = std::str::from_utf8(r.bytes()?)
                .map_err(|_| SnapshotError("source name".into()))?
                .to_owned();
            if engine.index.contains_key(&name) {
                return Err(SnapshotError("duplicate source".into()));
            }
            let id = engine.source(&name);
            engine.pipes[id as usize] = Pipeline::load(&mut r, max_line)?;
        }
        let sources = u32::try_from(engine.names.len()).unwrap_or(u32::MAX);
        engine.detector = Detector::load(&mut r, config, sources)?;
        if !r.buf.is_empty() {
            return Err(SnapshotError("trailing bytes".into()));
        }
        Ok(engine)
    }
}

pub const MAGIC: &[u8] = b"RWCORE\0";
pub const VERSION: u64 = 1;

#[cfg(test)]
mod remove_source_tests {
    use super::*;
    use crate::tracker::ChangeKind;

    fn lines(cid: u64, n: usize) -> Vec<u8> {
        let one = format!(
            "2019/09/17 03:46:20 [error] 2454#2454: *{cid} connect() failed (111: Connection \
             refused) while connecting to upstream, client: 10.0.0.1, server: a, upstream: \
             \"http://10.0.0.2:80/\"\n"
        );
        one.repeat(n).into_bytes()
    }

    fn feed(engine: &mut Engine, name: &str, data: &[u8]) -> Vec<Change> {
        let id = engine.source(name);
        let mut changes = Vec::new();
        engine.feed(id, data, &mut FixedZone(0), &mut changes);
        engine.flush(id, &mut FixedZone(0), &mut changes);
        changes
    }

    fn config() -> Config {
        Config {
            threshold: 3,
            ..Config::default()
        }
    }

    #[test]
    fn a_removed_source_is_forgotten_and_the_others_keep_their_state() {
        let mut engine = Engine::new(config(), 65536);
        for name in ["a", "b", "c"] {
            engine.source(name);
        }
        assert!(feed(&mut engine, "a", &lines(1, 5))
            .iter()
            .any(|c| c.kind == ChangeKind::Fired));
        feed(&mut engine, "b", &lines(2, 1));
        feed(&mut engine, "c", &lines(3, 2));
        let a = engine.lookup("a").unwrap();
        let mut changes = Vec::new();
        engine.release_source(a, &mut changes);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::Resolved);
        assert_eq!(changes[0].reason, Some("source_removed"));
        assert_eq!(engine.names[changes[0].key.source as usize], "a");

        assert!(engine.remove_source("a"));
        assert!(!engine.remove_source("a"));
        assert_eq!(engine.names, ["c", "b"]);
        assert_eq!(engine.lookup("a"), None);
        assert_eq!(engine.lookup("c"), Some(0));
        assert_eq!(engine.pipes[0].stats.lines_read, 2);
        assert_eq!(engine.pipes[1].stats.lines_read, 1);
        let by = &engine.detector.stats.by_source_kind;
        assert_eq!(by.keys().filter(|k| k.0 == 0).count(), 1); // c's, renumbered
        assert_eq!(by.values().sum::<u64>(), 3);
        // c's key moved with it: one more failure fires it (threshold 3).
        let fired = feed(&mut engine, "c", &lines(3, 1));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].key.source, 0);
        assert_eq!(fired[0].conn.failures, 3);
        // The state round-trips, and a new source takes the next id.
        let back = Engine::load(&engine.save(), config(), 65536).unwrap();
        assert_eq!(back.names, ["c", "b"]);
        assert_eq!(back.detector.firing_len(), 1);
        assert_eq!(engine.source("d"), 2);
    }

    #[test]
    fn removing_the_last_or_only_source() {
        let mut engine = Engine::new(config(), 65536);
        feed(&mut engine, "a", &lines(1, 2));
        feed(&mut engine, "b", &lines(2, 2));
        assert!(engine.remove_source("b"));
        assert_eq!(engine.names, ["a"]);
        assert_eq!(engine.detector.tracked_keys(), 1);
        assert!(engine.remove_source("a"));
        assert!(engine.names.is_empty() && engine.pipes.is_empty());
        assert_eq!(engine.detector.tracked_keys(), 0);
        assert!(engine.detector.stats.by_source_kind.is_empty());
        assert_eq!(engine.source("a"), 0);
    }
}
