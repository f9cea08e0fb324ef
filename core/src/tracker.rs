//! Per-connection state: the key, the below-threshold pending store, O(1) eviction under
//! a hard cap, threshold crossing and the alert lifecycle's changes (port of
//! retrywatch/detector.py and connection.py; the Python reference model lives in
//! tests/reference/).
//!
//! Keys live in one slab of nodes threaded on two intrusive doubly linked lists (tracked,
//! least recently updated first; firing, in firing order), indexed by a hash map: moving
//! a key to the end, expiring the idle head and evicting are constant work per event.
//! Eviction looks at the first `EVICTION_SAMPLE` tracked keys (the least recently
//! updated) and drops the one with the fewest failures in the window: a firing key is
//! never evicted, a hot key is at the far end of the list and is not pushed out by a
//! flood of one-off keys.

use std::collections::HashMap;

use crate::event::{parse_event, Subsystem};
use crate::head::{subsystem_of, Kind};
use crate::snapshot::{Reader, Result, SnapshotError, Writer};
use crate::window::SecondWindow;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub const EVICTION_SAMPLE: usize = 8;
/// Distinct upstreams, errnos and requests remembered per connection; more are summed
/// under `(other)`, so a connection's memory is bounded however long it runs.
pub const MAX_DISTINCT: usize = 32;
pub const OTHER: &[u8] = b"(other)";
/// Distinct failing requests counted per connection (the count saturates).
pub const MAX_REQUEST_KEYS: usize = 256;
/// Parsed failure lines remembered by their text after the time stamp: a storm repeats a
/// handful of lines, so each is parsed once (bounded; cleared when full).
const FIELD_CACHE: usize = 4096;
const STAMP: usize = 19;
/// Buffers of dropped pending keys kept for reuse, and the largest line buffer kept.
const POOL: usize = 1024;
const POOLED_TEXT: usize = 4096;
/// Bytes of pending lines held at most (see `within_budget`): with the default cap of
/// 100,000 keys of ordinary 300-byte lines a flood stays far below it.
pub const PENDING_BYTES: usize = 256 << 20;

pub type SourceId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub source: SourceId,
    pub pid: u64,
    pub cid: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub window: i64,
    pub threshold: u64,
    pub min_repeat: u64,
    pub resolve_after: i64,
    pub max_tracked: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: 60,
            threshold: 10,
            min_repeat: 2,
            resolve_after: 60,
            max_tracked: 100_000,
        }
    }
}

/// One event handed to the detector.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub ts: i64,
    pub source: SourceId,
    pub pid: u64,
    pub cid: Option<u64>,
    pub failure: Option<Kind>,
    pub ended_hint: bool,
    pub text: &'a [u8],
    /// Where the message starts in `text` (the head's `msg_start`).
    pub msg: usize,
}

/// What a failure line tells a connection's state.
#[derive(Clone, Debug, Default)]
pub struct Fields {
    pub peer: Option<Box<[u8]>>,
    pub kind: Option<Kind>,
    pub errno: Option<Box<[u8]>>, // "111: Connection refused"
    pub request: Option<Box<[u8]>>,
    pub request_crc: u32,
    pub client: Option<Box<[u8]>>,
    pub server: Option<Box<[u8]>>,
    pub host: Option<Box<[u8]>>,
    pub upstream: Option<Box<[u8]>>,
    pub subsystem: Option<Subsystem>,
    /// `head::subsystem_of` of the line (the metrics' label).
    pub subsystem_of: &'static str,
}

fn boxed(v: Option<&[u8]>) -> Option<Box<[u8]>> {
    v.map(Box::from)
}

impl Fields {
    pub fn of(text: &[u8]) -> Fields {
        let Ok(ev) = parse_event(text) else {
            return Fields {
                subsystem_of: subsystem_of(text),
                ..Fields::default()
            };
        };
        let errno = ev.errno.map(|errno| {
            let mut s = format!("{errno}: ").into_bytes();
            s.extend_from_slice(ev.errno_text.unwrap_or_default());
            s.into_boxed_slice()
        });
        let request_crc = ev
            .request
            .map_or(0, |r| crc32(crate::text::decode_escaped(r).as_bytes()));
        Fields {
            peer: boxed(ev.peer),
            kind: ev.kind,
            errno,
            request: boxed(ev.request),
            request_crc,
            client: boxed(ev.client),
            server: boxed(ev.server),
            host: boxed(ev.host),
            upstream: boxed(ev.upstream),
            subsystem: ev.subsystem,
            subsystem_of: subsystem_of(text),
        }
    }
}

/// Failure lines parsed once, by their text after the time stamp (bounded).
#[derive(Default)]
struct FieldCache {
    index: Map<Box<[u8]>, u32>,
    fields: Vec<Fields>,
}

/// Counts by name, insertion-ordered, at most `MAX_DISTINCT` names then `(other)`.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub entries: Vec<(Box<[u8]>, u64)>,
}

impl Table {
    fn bump(&mut self, key: &[u8], n: u64) -> u64 {
        if let Some(entry) = self.entries.iter_mut().find(|(k, _)| &**k == key) {
            entry.1 += n;
            return entry.1;
        }
        if self.entries.len() < MAX_DISTINCT {
            self.entries.push((key.into(), n));
            return n;
        }
        if let Some(entry) = self.entries.iter_mut().find(|(k, _)| &**k == OTHER) {
            entry.1 += n;
            return entry.1;
        }
        self.entries.push((OTHER.into(), n));
        n
    }

    fn save(&self, w: &mut Writer) {
        w.usize(self.entries.len());
        for (k, n) in &self.entries {
            w.bytes(k);
            w.u64(*n);
        }
    }

    fn load(r: &mut Reader<'_>) -> Result<Self> {
        let n = r.count(2)?;
        if n > MAX_DISTINCT + 1 {
            return Err(SnapshotError("table too large".into()));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push((r.bytes()?.into(), r.u64()?));
        }
        Ok(Table { entries })
    }
}

/// Failures of one (source, pid, cid) while it is tracked.
#[derive(Clone, Debug)]
pub struct Conn {
    pub window: SecondWindow,
    pub failures: u64,
    pub first: i64,
    pub last: i64,
    pub peak: u64,
    pub peak_ts: i64,
    pub max_repeat: u64,
    pub upstreams: Table,
    pub errnos: Table,
    pub kinds: Vec<(Kind, u64)>,
    pub requests: Table,
    pub request_keys: Vec<u32>,
    pub client: Option<Box<[u8]>>,
    pub server: Option<Box<[u8]>>,
    pub host: Option<Box<[u8]>>,
    pub upstream_url: Option<Box<[u8]>>,
    pub subsystem: Option<Subsystem>,
    pub sample: Box<[u8]>,
}

impl Conn {
    fn new(width: i64, f: &Fields, ts: i64, text: &[u8]) -> Conn {
        Conn {
            window: SecondWindow::new(width),
            failures: 0,
            first: ts,
            last: ts,
            peak: 0,
            peak_ts: ts,
            max_repeat: 0,
            upstreams: Table::default(),
            errnos: Table::default(),
            kinds: Vec::new(),
            requests: Table::default(),
            request_keys: Vec::new(),
            client: f.client.clone(),
            server: f.server.clone(),
            host: f.host.clone(),
            upstream_url: f.upstream.clone(),
            subsystem: f.subsystem,
            sample: text.into(),
        }
    }

    /// Counts `n` identical failures; returns the failures now in the window.
    fn add(&mut self, f: &Fields, ts: i64, n: u64) -> u64 {
        self.failures += n;
        let in_second = self.window.add(ts, n);
        if in_second > self.peak {
            self.peak = in_second;
            self.peak_ts = ts;
        }
        if ts >= self.last {
            self.last = ts;
        } else if ts < self.first {
            self.first = ts;
        }
        let repeat = self.upstreams.bump(f.peer.as_deref().unwrap_or(b"?"), n);
        self.max_repeat = self.max_repeat.max(repeat);
        let kind = f.kind.unwrap_or(Kind::Other);
        match self.kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some(entry) => entry.1 += n,
            None => self.kinds.push((kind, n)),
        }
        if let Some(errno) = &f.errno {
            self.errnos.bump(errno, n);
        }
        if let Some(request) = &f.request {
            self.requests.bump(request, n);
            if self.request_keys.len() < MAX_REQUEST_KEYS
                && !self.request_keys.contains(&f.request_crc)
            {
                self.request_keys.push(f.request_crc);
            }
        }
        if self.client.is_none() {
            self.client.clone_from(&f.client);
        }
        if self.server.is_none() {
            self.server.clone_from(&f.server);
        }
        if self.host.is_none() {
            self.host.clone_from(&f.host);
        }
        if self.subsystem.is_none() {
            self.subsystem = f.subsystem;
        }
        if self.upstream_url.is_none() {
            self.upstream_url.clone_from(&f.upstream);
        }
        self.window.total()
    }

    fn save(&self, w: &mut Writer) {
        self.window.save(w);
        w.u64(self.failures);
        w.i64(self.first);
        w.i64(self.last);
        w.u64(self.peak);
        w.i64(self.peak_ts);
        w.u64(self.max_repeat);
        self.upstreams.save(w);
        self.errnos.save(w);
        w.usize(self.kinds.len());
        for &(k, n) in &self.kinds {
            w.u64(u64::from(k.index()));
            w.u64(n);
        }
        self.requests.save(w);
        w.usize(self.request_keys.len());
        for &crc in &self.request_keys {
            w.u64(u64::from(crc));
        }
        w.opt_bytes(self.client.as_deref());
        w.opt_bytes(self.server.as_deref());
        w.opt_bytes(self.host.as_deref());
        w.opt_bytes(self.upstream_url.as_deref());
        w.u64(self.subsystem.map_or(0, |s| u64::from(s.index()) + 1));
        w.bytes(&self.sample);
    }

    fn load(r: &mut Reader<'_>, width: i64) -> Result<Conn> {
        let window = SecondWindow::load(r, width)?;
        let failures = r.u64()?;
        let first = r.i64()?;
        let last = r.i64()?;
        let peak = r.u64()?;
        let peak_ts = r.i64()?;
        let max_repeat = r.u64()?;
        let upstreams = Table::load(r)?;
        let errnos = Table::load(r)?;
        let n = r.count(2)?;
        let mut kinds = Vec::with_capacity(n.min(8));
        for _ in 0..n {
            let k = small(r.u64()?)
                .and_then(Kind::from_index)
                .ok_or_else(|| bad("kind"))?;
            kinds.push((k, r.u64()?));
        }
        let requests = Table::load(r)?;
        let n = r.count(1)?;
        if n > MAX_REQUEST_KEYS {
            return Err(bad("request keys"));
        }
        let mut request_keys = Vec::with_capacity(n);
        for _ in 0..n {
            request_keys.push(u32::try_from(r.u64()?).map_err(|_| bad("request key"))?);
        }
        let client = r.opt_bytes()?.map(Box::from);
        let server = r.opt_bytes()?.map(Box::from);
        let host = r.opt_bytes()?.map(Box::from);
        let upstream_url = r.opt_bytes()?.map(Box::from);
        let subsystem = match r.u64()? {
            0 => None,
            i => Some(
                small(i - 1)
                    .and_then(Subsystem::from_index)
                    .ok_or_else(|| bad("subsystem"))?,
            ),
        };
        let sample = r.bytes()?.into();
        Ok(Conn {
            window,
            failures,
            first,
            last,
            peak,
            peak_ts,
            max_repeat,
            upstreams,
            errnos,
            kinds,
            requests,
            request_keys,
            client,
            server,
            host,
            upstream_url,
            subsystem,
            sample,
        })
    }
}

fn small(v: u64) -> Option<u8> {
    u8::try_from(v).ok()
}

fn bad(what: &str) -> SnapshotError {
    SnapshotError(format!("bad {what}"))
}

/// A key whose failures cannot fire yet: its lines, kept unparsed. Most failing
/// connections fail once or a few times; their lines are parsed only if the key reaches
/// the threshold, and a key that goes quiet is dropped unread.
///
/// The first line lives in the key's node itself (most keys never get a second), the
/// others in `rest`.
#[derive(Clone, Debug)]
pub struct Pending {
    first: Entry,
    rest: Vec<Entry>,
    n: u64,
    last: i64,
}

/// A pending line: its second, how many times it came, its text.
type Entry = (i64, u64, Vec<u8>);

impl Pending {
    const fn empty() -> Pending {
        Pending {
            first: (0, 0, Vec::new()),
            rest: Vec::new(),
            n: 0,
            last: 0,
        }
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        std::iter::once(&self.first).chain(&self.rest)
    }

    fn in_window(&self, now: i64, width: i64) -> u64 {
        let edge = now - width;
        self.entries().filter(|e| e.0 > edge).map(|e| e.1).sum()
    }
}

#[derive(Clone, Debug)]
enum State {
    Pending(Pending),
    Conn(Box<Conn>),
}

impl State {
    fn last(&self) -> i64 {
        match self {
            State::Pending(p) => p.last,
            State::Conn(c) => c.last,
        }
    }
}

const NIL: u32 = u32::MAX;
const TRACKED: usize = 0;
const FIRING: usize = 1;

#[derive(Debug)]
struct Node {
    key: Key,
    state: State,
    prev: u32,
    next: u32,
    list: usize,
    gen: u64,
}

#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
    len: 0,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    Fired,
    Updated,
    Resolved,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Fired => "fired",
            ChangeKind::Updated => "updated",
            ChangeKind::Resolved => "resolved",
        }
    }
}

/// An alert change: the connection's figures at that moment.
#[derive(Clone, Debug)]
pub struct Change {
    pub kind: ChangeKind,
    pub key: Key,
    /// Event time of the change: the failure that fired it, the line that ended the
    /// connection, or the last failure plus `resolve_after` for a quiet one.
    pub at: i64,
    pub reason: Option<&'static str>,
    pub conn: Box<Conn>,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub connect_failures: u64,
    pub by_source_kind: Map<(SourceId, Kind, &'static str), u64>,
    pub evictions: u64,
    pub untracked: u64,
    pub expired: u64,
    pub ended: u64,
    pub fired: u64,
    pub resolved: u64,
}

/// The runaway-connection detector.
pub struct Detector {
    pub config: Config,
    pub stats: Stats,
    pub watermark: Option<i64>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    map: Map<Key, u32>,
    lists: [List; 2],
    gen: u64,
    fields: FieldCache,
    /// The index in `fields` of the last processed line's fields, when they were read.
    line_fields: Option<usize>,
    touched: Vec<(Key, u64)>,
    text_pool: Vec<Vec<u8>>,
    entry_pool: Vec<Vec<Entry>>,
    /// Bytes of the lines held by pending keys, and the most it may be (`within_budget`).
    pending_bytes: usize,
    pub pending_budget: usize,
    touched_at: Map<Key, (u64, u32, u64)>, // key -> (seq, slot, gen)
    seq: u64,
}

pub fn new_map<K, V>() -> Map<K, V> {
    Map::with_hasher(foldhash::fast::RandomState::default())
}

impl Detector {
    pub fn new(config: Config) -> Self {
        Detector {
            config,
            stats: Stats {
                by_source_kind: new_map(),
                ..Stats::default()
            },
            watermark: None,
            nodes: Vec::new(),
            free: Vec::new(),
            map: new_map(),
            lists: [EMPTY, EMPTY],
            gen: 0,
            fields: FieldCache::default(),
            line_fields: None,
            touched: Vec::new(),
            text_pool: Vec::new(),
            entry_pool: Vec::new(),
            pending_bytes: 0,
            pending_budget: PENDING_BYTES,
            touched_at: new_map(),
            seq: 0,
        }
    }

    /// Keys held now (tracked and firing).
    pub fn tracked_keys(&self) -> usize {
        self.lists[TRACKED].len + self.lists[FIRING].len
    }

    pub fn firing_len(&self) -> usize {
        self.lists[FIRING].len
    }

    // -- lists ------------------------------------------------------------------
    fn unlink(&mut self, slot: u32) {
        let (prev, next, list) = {
            let n = &self.nodes[slot as usize];
            (n.prev, n.next, n.list)
        };
        if prev == NIL {
            self.lists[list].head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[list].tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        self.lists[list].len -= 1;
    }

    fn push_back(&mut self, slot: u32, list: usize) {
        let tail = self.lists[list].tail;
        {
            let n = &mut self.nodes[slot as usize];
            n.prev = tail;
            n.next = NIL;
            n.list = list;
        }
        if tail == NIL {
            self.lists[list].head = slot;
        } else {
            self.nodes[tail as usize].next = slot;
        }
        self.lists[list].tail = slot;
        self.lists[list].len += 1;
    }

    fn move_to_end(&mut self, slot: u32) {
        let list = self.nodes[slot as usize].list;
        if self.lists[list].tail != slot {
            self.unlink(slot);
            self.push_back(slot, list);
        }
    }

    fn alloc(&mut self, key: Key, state: State, list: usize) -> u32 {
        let node = Node {
            key,
            state,
            prev: NIL,
            next: NIL,
            list,
            gen: 0,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.nodes[slot as usize] = node;
                slot
            }
            None => {
                self.nodes.push(node);
                u32::try_from(self.nodes.len() - 1).unwrap_or(NIL)
            }
        };
        self.push_back(slot, list);
        self.map.insert(key, slot);
        slot
    }

    /// Removes a node; returns its state.
    fn remove(&mut self, slot: u32) -> State {
        self.unlink(slot);
        let node = &mut self.nodes[slot as usize];
        self.map.remove(&node.key);
        let state = std::mem::replace(&mut node.state, State::Pending(Pending::empty()));
        self.free.push(slot);
        match state {
            State::Pending(p) => {
                self.recycle(p);
                State::Pending(Pending::empty())
            }
            conn => conn,
        }
    }

    /// Keeps a dropped pending key's buffers for the next one: in a flood of one-off
    /// keys every new key takes the buffers its evicted predecessor left (no allocator
    /// round trip, memory that is still in cache). Bounded: at most `POOL` of each, and
    /// only line buffers of an ordinary size.
    fn recycle(&mut self, p: Pending) {
        let Pending {
            first, mut rest, ..
        } = p;
        for (_, _, text) in std::iter::once(first).chain(rest.drain(..)) {
            self.pending_bytes = self.pending_bytes.saturating_sub(text.capacity());
            if self.text_pool.len() < POOL && text.capacity() <= POOLED_TEXT {
                self.text_pool.push(text);
            }
        }
        if self.entry_pool.len() < POOL && rest.capacity() > 0 && rest.capacity() <= 64 {
            self.entry_pool.push(rest);
        }
    }

    fn text_buffer(&mut self, text: &[u8]) -> Vec<u8> {
        let mut buf = match self.text_pool.pop() {
            Some(buf) if buf.capacity() >= text.len() => buf,
            // Sized to the line rounded up, not doubled: lines of a log differ by a
            // few bytes, and a doubled buffer would be kept at twice the size.
            _ => Vec::with_capacity(text.len().next_multiple_of(64)),
        };
        buf.clear();
        buf.extend_from_slice(text);
        self.pending_bytes += buf.capacity();
        buf
    }

    /// Pending lines are held by count (`max_tracked` keys, under `threshold` lines each)
    /// and by bytes: past `PENDING_BYTES` the coldest keys are evicted (counted), so
    /// long lines from many connections cannot grow memory beyond it.
    fn within_budget(&mut self) {
        while self.pending_bytes > self.pending_budget && self.evict() {}
    }

    fn conn_mut(&mut self, slot: u32) -> &mut Conn {
        match &mut self.nodes[slot as usize].state {
            State::Conn(c) => c,
            State::Pending(_) => unreachable!("a firing or promoted key holds a Conn"),
        }
    }

    // -- the per-event path ---------------------------------------------------------
    /// One event counted `n` times (identical events may come counted).
    pub fn process(&mut self, inp: &Input<'_>, n: u64, changes: &mut Vec<Change>) {
        self.line_fields = None;
        if self.watermark.is_none_or(|w| inp.ts > w) {
            self.advance_to(inp.ts, changes);
        }
        let Some(cid) = inp.cid else {
            return;
        };
        let key = Key {
            source: inp.source,
            pid: inp.pid,
            cid,
        };
        if let Some(kind) = inp.failure {
            self.stats.connect_failures += n;
            let found = self.map.get(&key).copied();
            if let Some(slot) = found {
                if self.nodes[slot as usize].list == FIRING {
                    // A storm's line: its fields (and subsystem) were read once.
                    self.move_to_end(slot);
                    let i = Self::fields_of(&mut self.fields, inp.text);
                    self.line_fields = Some(i);
                    let fields = &self.fields.fields[i];
                    *self
                        .stats
                        .by_source_kind
                        .entry((inp.source, kind, fields.subsystem_of))
                        .or_insert(0) += n;
                    if let State::Conn(c) = &mut self.nodes[slot as usize].state {
                        c.add(fields, inp.ts, n);
                    }
                    let gen = self.nodes[slot as usize].gen;
                    self.touch(key, slot, gen);
                    return;
                }
            }
            *self
                .stats
                .by_source_kind
                .entry((inp.source, kind, subsystem_of(inp.text)))
                .or_insert(0) += n;
            let Some(slot) = self.state(key, found, inp, n) else {
                return;
            };
            let i = Self::fields_of(&mut self.fields, inp.text);
            self.line_fields = Some(i);
            let fields = &self.fields.fields[i];
            let (count, repeat) = match &mut self.nodes[slot as usize].state {
                State::Conn(c) => (c.add(fields, inp.ts, n), c.max_repeat),
                State::Pending(_) => return,
            };
            if count >= self.config.threshold && repeat >= self.config.min_repeat {
                self.unlink(slot);
                self.push_back(slot, FIRING);
                self.gen += 1;
                self.nodes[slot as usize].gen = self.gen;
                self.stats.fired += 1;
                let conn = Box::new(self.conn_mut(slot).clone());
                changes.push(Change {
                    kind: ChangeKind::Fired,
                    key,
                    at: inp.ts,
                    reason: None,
                    conn,
                });
            }
        } else if inp.ended_hint {
            let Some(&slot) = self.map.get(&key) else {
                return;
            };
            if !parse_event(inp.text).is_ok_and(|ev| ev.ended) {
                return;
            }
            if self.nodes[slot as usize].list == FIRING {
                self.touched_at.remove(&key);
                if let State::Conn(conn) = self.remove(slot) {
                    self.stats.resolved += 1;
                    changes.push(Change {
                        kind: ChangeKind::Resolved,
                        key,
                        at: inp.ts,
                        reason: Some("connection_ended"),
                        conn,
                    });
                }
            } else {
                self.remove(slot);
                self.stats.ended += 1;
            }
        }
    }

    fn touch(&mut self, key: Key, slot: u32, gen: u64) {
        match self.touched_at.get_mut(&key) {
            Some(entry) => {
                entry.1 = slot;
                entry.2 = gen;
            }
            None => {
                self.seq += 1;
                self.touched_at.insert(key, (self.seq, slot, gen));
                self.touched.push((key, self.seq));
            }
        }
    }

    /// The end of a batch: an `updated` change for each firing key that failed again.
    pub fn finish_batch(&mut self, changes: &mut Vec<Change>) {
        let touched = std::mem::take(&mut self.touched);
        for (key, seq) in touched {
            let Some(&(at_seq, slot, gen)) = self.touched_at.get(&key) else {
                continue;
            };
            if at_seq != seq {
                continue;
            }
            let live = self.map.get(&key) == Some(&slot) && {
                let node = &self.nodes[slot as usize];
                node.list == FIRING && node.gen == gen
            };
            if live {
                let conn = Box::new(self.conn_mut(slot).clone());
                let at = self.watermark.unwrap_or(conn.last);
                changes.push(Change {
                    kind: ChangeKind::Updated,
                    key,
                    at,
                    reason: None,
                    conn,
                });
            }
        }
        self.touched_at.clear();
    }

    /// The peer of the failure line last processed, when the detector read its fields
    /// (a line of a tracked connection: a storm's lines); `None` when it did not (a
    /// pending key's line is kept unread).
    pub fn line_peer(&self) -> Option<Option<&[u8]>> {
        let i = self.line_fields?;
        Some(self.fields.fields[i].peer.as_deref())
    }

    /// The index in `cache.fields` of the fields of `text`.
    fn fields_of(cache: &mut FieldCache, text: &[u8]) -> usize {
        let body = text.get(STAMP..).unwrap_or_default();
        // One lookup on a hit (a storm's every line): the map gives an index, not a
        // borrow that would outlive the miss branch.
        let i = match cache.index.get(body) {
            Some(&i) => i as usize,
            None => {
                if cache.fields.len() >= FIELD_CACHE {
                    cache.index.clear();
                    cache.fields.clear();
                }
                cache.fields.push(Fields::of(text));
                let i = cache.fields.len() - 1;
                cache.index.insert(body.into(), i as u32);
                i
            }
        };
        i
    }

    /// The slot whose Conn counts this failure, or None when it went to a pending key (or
    /// no slot was free).
    /// `found` is the key's slot as the caller looked it up.
    fn state(&mut self, key: Key, found: Option<u32>, inp: &Input<'_>, n: u64) -> Option<u32> {
        let cfg = self.config;
        let mut entry = found;
        if let Some(slot) = entry {
            // Idle for a whole window of event time (the watermark, not this line's time: a
            // worker's line a few seconds late must not revive a key the sweep would have
            // dropped): a fresh start, whether or not the sweep got to it.
            let now = self.watermark.unwrap_or(inp.ts);
            if self.nodes[slot as usize].state.last() <= now - cfg.window {
                self.remove(slot);
                self.stats.expired += 1;
                entry = None;
            }
        }
        let Some(slot) = entry else {
            if n < cfg.threshold {
                let pending = Pending {
                    first: (inp.ts, n, self.text_buffer(inp.text)),
                    rest: Vec::new(),
                    n,
                    last: inp.ts,
                };
                self.track(key, State::Pending(pending), n);
                self.within_budget();
                return None;
            }
            let i = Self::fields_of(&mut self.fields, inp.text);
            let conn = Conn::new(cfg.window, &self.fields.fields[i], inp.ts, inp.text);
            return self.track(key, State::Conn(Box::new(conn)), n);
        };
        self.move_to_end(slot);
        let State::Pending(p) = &self.nodes[slot as usize].state else {
            return Some(slot);
        };
        let oldest = p.first.0;
        let grow = p.rest.capacity() == 0;
        if p.n + n < cfg.threshold && oldest > inp.ts - cfg.window {
            let text = self.text_buffer(inp.text);
            let pooled = if grow { self.entry_pool.pop() } else { None };
            if let State::Pending(p) = &mut self.nodes[slot as usize].state {
                if let Some(rest) = pooled {
                    p.rest = rest;
                }
                p.rest.push((inp.ts, n, text));
                p.n += n;
                p.last = p.last.max(inp.ts);
            }
            self.within_budget();
            return None;
        }
        let state = std::mem::replace(
            &mut self.nodes[slot as usize].state,
            State::Pending(Pending::empty()),
        );
        let State::Pending(p) = state else {
            return Some(slot);
        };
        let (ts0, _, text0) = &p.first;
        let i = Self::fields_of(&mut self.fields, text0);
        let mut conn = Conn::new(cfg.window, &self.fields.fields[i], *ts0, text0);
        for (ts, times, text) in p.entries() {
            let i = Self::fields_of(&mut self.fields, text);
            conn.add(&self.fields.fields[i], *ts, *times);
        }
        self.nodes[slot as usize].state = State::Conn(Box::new(conn));
        self.recycle(p);
        Some(slot)
    }

    fn track(&mut self, key: Key, state: State, n: u64) -> Option<u32> {
        if self.tracked_keys() >= self.config.max_tracked && !self.evict() {
            self.stats.untracked += n;
            if let State::Pending(p) = state {
                self.recycle(p);
            }
            return None;
        }
        Some(self.alloc(key, state, TRACKED))
    }

    fn in_window(&self, slot: u32) -> u64 {
        let now = self.watermark.unwrap_or(0);
        match &self.nodes[slot as usize].state {
            State::Pending(p) => p.in_window(now, self.config.window),
            State::Conn(c) => c.window.count_at(now),
        }
    }

    /// Drops the coldest of the least recently updated non-firing keys.
    fn evict(&mut self) -> bool {
        let mut slot = self.lists[TRACKED].head;
        if slot == NIL {
            return false;
        }
        let mut victim = slot;
        let mut coldest = u64::MAX;
        for _ in 0..EVICTION_SAMPLE {
            if slot == NIL {
                break;
            }
            let count = self.in_window(slot);
            if count < coldest {
                coldest = count;
                victim = slot;
            }
            slot = self.nodes[slot as usize].next;
        }
        self.remove(victim);
        self.stats.evictions += 1;
        true
    }

    // -- time ------------------------------------------------------------------------
    /// Moves event time forward without an event (idle sources, a quiet period).
    pub fn advance(&mut self, ts: i64, changes: &mut Vec<Change>) {
        if self.watermark.is_none_or(|w| ts > w) {
            self.advance_to(ts, changes);
        }
    }

    fn advance_to(&mut self, ts: i64, changes: &mut Vec<Change>) {
        self.watermark = Some(ts);
        let idle_edge = ts - self.config.window;
        loop {
            let head = self.lists[TRACKED].head;
            if head == NIL || self.nodes[head as usize].state.last() > idle_edge {
                break;
            }
            self.remove(head);
            self.stats.expired += 1;
        }
        // Firing keys are few: check them all (their order of update is not the order of
        // their last failure when workers' clocks differ by a second).
        let quiet_edge = ts - self.config.resolve_after;
        let mut slot = self.lists[FIRING].head;
        while slot != NIL {
            let next = self.nodes[slot as usize].next;
            let last = self.nodes[slot as usize].state.last();
            if last <= quiet_edge {
                let key = self.nodes[slot as usize].key;
                if let State::Conn(conn) = self.remove(slot) {
                    self.stats.resolved += 1;
                    changes.push(Change {
                        kind: ChangeKind::Resolved,
                        key,
                        at: last + self.config.resolve_after,
                        reason: Some("quiet"),
                        conn,
                    });
                }
            }
            slot = next;
        }
    }

    // -- reading -----------------------------------------------------------------------
    /// Firing and tracked connections (not pending keys) with the most failures in the
    /// window now, firing first on ties.
    pub fn hottest(&self, limit: usize) -> Vec<(Key, bool, &Conn, u64)> {
        let mut out = Vec::new();
        for list in [FIRING, TRACKED] {
            let mut slot = self.lists[list].head;
            while slot != NIL {
                let node = &self.nodes[slot as usize];
                if let State::Conn(c) = &node.state {
                    let now = self.watermark.unwrap_or(c.last);
                    out.push((node.key, list == FIRING, &**c, c.window.count_at(now)));
                }
                slot = node.next;
            }
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.3));
        out.truncate(limit);
        out
    }

    /// The firing connections, in firing order.
    pub fn firing(&self) -> Vec<(Key, &Conn)> {
        let mut out = Vec::new();
        let mut slot = self.lists[FIRING].head;
        while slot != NIL {
            let node = &self.nodes[slot as usize];
            if let State::Conn(c) = &node.state {
                out.push((node.key, &**c));
            }
            slot = node.next;
        }
        out
    }

    // -- forgetting a source -----------------------------------------------------------
    /// Drops every key of `source`; a firing one resolves (reason `source_removed`, at the
    /// watermark). Between batches only.
    pub fn release_source(&mut self, source: SourceId, changes: &mut Vec<Change>) {
        let mut slots: Vec<u32> = self
            .map
            .iter()
            .filter(|(k, _)| k.source == source)
            .map(|(_, &slot)| slot)
            .collect();
        slots.sort_unstable();
        for slot in slots {
            let key = self.nodes[slot as usize].key;
            let firing = self.nodes[slot as usize].list == FIRING;
            self.touched_at.remove(&key);
            if let (true, State::Conn(conn)) = (firing, self.remove(slot)) {
                self.stats.resolved += 1;
                changes.push(Change {
                    kind: ChangeKind::Resolved,
                    key,
                    at: self.watermark.unwrap_or(conn.last),
                    reason: Some("source_removed"),
                    conn,
                });
            }
        }
    }

    /// Forgets `source` (its keys and failure counters), then gives the keys and counters
    /// of source `moved` its id: the engine moves its last source into the freed place.
    pub fn remove_source(&mut self, source: SourceId, moved: SourceId) {
        self.release_source(source, &mut Vec::new());
        let stats = &mut self.stats.by_source_kind;
        stats.retain(|k, _| k.0 != source);
        if moved == source {
            return;
        }
        let counts: Vec<_> = stats
            .iter()
            .filter(|(k, _)| k.0 == moved)
            .map(|(k, n)| (*k, *n))
            .collect();
        for ((_, kind, subsystem), n) in counts {
            stats.remove(&(moved, kind, subsystem));
            stats.insert((source, kind, subsystem), n);
        }
        let keys: Vec<(Key, u32)> = self
            .map
            .iter()
            .filter(|(k, _)| k.source == moved)
            .map(|(k, &slot)| (*k, slot))
            .collect();
        for (key, slot) in keys {
            self.map.remove(&key);
            self.touched_at.remove(&key);
            let renamed = Key { source, ..key };
            self.nodes[slot as usize].key = renamed;
            self.map.insert(renamed, slot);
        }
        self.touched
            .retain(|(k, _)| k.source != moved && k.source != source);
    }

    // -- state ---------------------------------------------------------------------------
    pub fn save(&self, w: &mut Writer) {
        w.opt_bytes(None); // reserved
        match self.watermark {
            None => w.bool(false),
            Some(ts) => {
                w.bool(true);
                w.i64(ts);
            }
        }
        let s = &self.stats;
        for v in [
            s.connect_failures,
            s.evictions,
            s.untracked,
            s.expired,
            s.ended,
            s.fired,
            s.resolved,
        ] {
            w.u64(v);
        }
        let mut by: Vec<_> = s.by_source_kind.iter().collect();
        by.sort_by_key(|(k, _)| (k.0, k.1.index(), k.2));
        w.usize(by.len());
        for ((source, kind, subsystem), n) in by {
            w.u64(u64::from(*source));
            w.u64(u64::from(kind.index()));
            w.bytes(subsystem.as_bytes());
            w.u64(*n);
        }
        for list in [TRACKED, FIRING] {
            w.usize(self.lists[list].len);
            let mut slot = self.lists[list].head;
            while slot != NIL {
                let node = &self.nodes[slot as usize];
                w.u64(u64::from(node.key.source));
                w.u64(node.key.pid);
                w.u64(node.key.cid);
                match &node.state {
                    State::Pending(p) => {
                        w.u64(0);
                        w.u64(p.n);
                        w.i64(p.last);
                        w.usize(1 + p.rest.len());
                        for (ts, n, text) in p.entries() {
                            w.i64(*ts);
                            w.u64(*n);
                            w.bytes(text);
                        }
                    }
                    State::Conn(c) => {
                        w.u64(1);
                        c.save(w);
                    }
                }
                slot = node.next;
            }
        }
    }

    /// A detector with today's `config` and the saved keys, windows and counts.
    pub fn load(r: &mut Reader<'_>, config: Config, sources: u32) -> Result<Detector> {
        let mut d = Detector::new(config);
        r.opt_bytes()?;
        d.watermark = if r.bool()? { Some(r.i64()?) } else { None };
        let s = &mut d.stats;
        s.connect_failures = r.u64()?;
        s.evictions = r.u64()?;
        s.untracked = r.u64()?;
        s.expired = r.u64()?;
        s.ended = r.u64()?;
        s.fired = r.u64()?;
        s.resolved = r.u64()?;
        let n = r.count(4)?;
        for _ in 0..n {
            let source = source_id(r.u64()?, sources)?;
            let kind = small(r.u64()?)
                .and_then(Kind::from_index)
                .ok_or_else(|| bad("kind"))?;
            let subsystem = match r.bytes()? {
                b"stream" => "stream",
                b"http" => "http",
                b"unknown" => "unknown",
                _ => return Err(bad("subsystem")),
            };
            s.by_source_kind.insert((source, kind, subsystem), r.u64()?);
        }
        for list in [TRACKED, FIRING] {
            let n = r.count(4)?;
            for _ in 0..n {
                let key = Key {
                    source: source_id(r.u64()?, sources)?,
                    pid: r.u64()?,
                    cid: r.u64()?,
                };
                let state = match r.u64()? {
                    0 => {
                        let total = r.u64()?;
                        let last = r.i64()?;
                        let m = r.count(3)?;
                        if m == 0 {
                            return Err(bad("pending key"));
                        }
                        let first = (r.i64()?, r.u64()?, r.bytes()?.to_vec());
                        d.pending_bytes += first.2.capacity();
                        let mut rest = Vec::new();
                        for _ in 1..m {
                            let entry = (r.i64()?, r.u64()?, r.bytes()?.to_vec());
                            d.pending_bytes += entry.2.capacity();
                            rest.push(entry);
                        }
                        State::Pending(Pending {
                            first,
                            rest,
                            n: total,
                            last,
                        })
                    }
                    1 => State::Conn(Box::new(Conn::load(r, config.window)?)),
                    _ => return Err(bad("key state")),
                };
                if d.map.contains_key(&key) {
                    return Err(bad("duplicate key"));
                }
                if list == FIRING && matches!(state, State::Pending(_)) {
                    return Err(bad("firing key without its connection"));
                }
                let slot = d.alloc(key, state, list);
                if list == FIRING {
                    d.gen += 1;
                    d.nodes[slot as usize].gen = d.gen;
                }
            }
        }
        // Today's cap may be lower than the one the state was written with.
        while d.lists[TRACKED].len > 0 && d.tracked_keys() > config.max_tracked {
            d.evict();
        }
        d.within_budget();
        Ok(d)
    }
}

fn source_id(v: u64, sources: u32) -> Result<SourceId> {
    match u32::try_from(v) {
        Ok(id) if id < sources => Ok(id),
        _ => Err(bad("source")),
    }
}

/// CRC-32 (IEEE), as Python's `zlib.crc32`: a stable hash of a request line.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "2019/09/17 03:46:20 [error] 2454#2454: *CID connect() failed (111: Connection refused) while connecting to upstream, client: 10.10.122.117, server: 0.0.0.0:55556, upstream: \"PEER\", bytes from/to client:0/0, bytes from/to upstream:0/0";

    fn line(cid: u64, peer: &str) -> Vec<u8> {
        LINE.replace("CID", &cid.to_string())
            .replace("PEER", peer)
            .into_bytes()
    }

    #[test]
    fn a_table_counts_by_name_then_other() {
        let mut t = Table::default();
        assert_eq!(t.bump(b"a", 2), 2);
        assert_eq!(t.bump(b"a", 3), 5);
        for i in 1..MAX_DISTINCT {
            assert_eq!(t.bump(format!("k{i}").as_bytes(), 1), 1);
        }
        assert_eq!(t.entries.len(), MAX_DISTINCT);
        assert_eq!(t.bump(b"new1", 4), 4); // no room: counted as (other)
        assert_eq!(t.bump(b"new2", 1), 5);
        assert_eq!(t.bump(b"a", 1), 6); // a name kept still counts by itself
        assert_eq!(t.entries.len(), MAX_DISTINCT + 1);
        assert_eq!(t.entries[0], (Box::from(&b"a"[..]), 6));
        assert_eq!(t.entries[MAX_DISTINCT], (Box::from(OTHER), 5));
    }

    #[test]
    fn a_table_loads_up_to_its_bound_with_other() {
        let save = |n: usize| {
            let t = Table {
                entries: (0..n).map(|i| (Box::from(&[i as u8][..]), 1)).collect(),
            };
            let mut w = Writer::default();
            t.save(&mut w);
            w.buf
        };
        let full = save(MAX_DISTINCT + 1); // every name kept and (other)
        let back = Table::load(&mut Reader::new(&full)).unwrap();
        assert_eq!(back.entries.len(), MAX_DISTINCT + 1);
        assert_eq!(back.entries[3], (Box::from(&[3u8][..]), 1));
        assert!(Table::load(&mut Reader::new(&save(MAX_DISTINCT + 2))).is_err());
        assert!(Table::load(&mut Reader::new(&save(0)))
            .unwrap()
            .entries
            .is_empty());
    }

    #[test]
    fn a_connection_keeps_its_peak_second_and_its_span() {
        let text = line(7, "10.0.0.2:5555");
        let f = Fields::of(&text);
        let mut c = Conn::new(60, &f, 100, &text);
        assert_eq!(c.add(&f, 100, 3), 3);
        assert_eq!((c.peak, c.peak_ts), (3, 100));
        assert_eq!(c.add(&f, 101, 5), 8);
        assert_eq!((c.peak, c.peak_ts), (5, 101));
        assert_eq!(c.add(&f, 102, 5), 13); // as high, not higher: the first second stays
        assert_eq!((c.peak, c.peak_ts), (5, 101));
        assert_eq!(c.add(&f, 99, 1), 14); // a line a second late widens the start
        assert_eq!((c.first, c.last), (99, 102));
        assert_eq!(c.add(&f, 100, 4), 18); // 100 now holds 7: the new peak
        assert_eq!((c.peak, c.peak_ts), (7, 100));
        assert_eq!((c.first, c.last, c.failures), (99, 102, 18));
        assert_eq!(c.max_repeat, 18); // one upstream: every failure a repeat of it
    }

    const HTTP: &str = "2026/11/25 17:33:43 [error] 18264#18264: *7 KIND while connecting to upstream, client: 127.0.0.66, server: storm.test, request: \"GET /PATH HTTP/1.1\", upstream: \"http://127.0.0.1:17939/PATH\", host: \"storm.test\"";

    fn http(kind: &str, path: &str) -> Vec<u8> {
        HTTP.replace("KIND", kind)
            .replace("PATH", path)
            .into_bytes()
    }

    #[test]
    fn a_connection_counts_kinds_errnos_requests_and_distinct_request_keys() {
        let refused = http("connect() failed (111: Connection refused)", "a");
        let timed_out = http("upstream timed out (110: Connection timed out)", "a");
        let other = http("connect() failed (111: Connection refused)", "b");
        let (fr, ft, fo) = (
            Fields::of(&refused),
            Fields::of(&timed_out),
            Fields::of(&other),
        );
        let mut c = Conn::new(60, &fr, 10, &refused);
        c.add(&fr, 10, 3);
        c.add(&ft, 10, 2);
        c.add(&fr, 11, 1);
        c.add(&fo, 11, 4);
        assert_eq!(
            c.kinds,
            vec![(Kind::ConnectFailed, 8), (Kind::UpstreamTimedOut, 2)]
        );
        assert_eq!(
            c.errnos.entries,
            vec![
                (Box::from(&b"111: Connection refused"[..]), 8),
                (Box::from(&b"110: Connection timed out"[..]), 2)
            ]
        );
        assert_eq!(c.requests.entries.len(), 2);
        assert_eq!(c.requests.entries[0].1, 6); // GET /a: 3 + 2 + 1
        assert_eq!(c.request_keys, vec![fr.request_crc, fo.request_crc]);
        assert_eq!(c.client.as_deref(), Some(&b"127.0.0.66"[..]));
        assert_eq!(c.host.as_deref(), Some(&b"storm.test"[..]));
        // at most MAX_REQUEST_KEYS distinct requests are remembered
        for i in 0..MAX_REQUEST_KEYS + 10 {
            let text = http(
                "connect() failed (111: Connection refused)",
                &format!("r{i}"),
            );
            c.add(&Fields::of(&text), 12, 1);
        }
        assert_eq!(c.request_keys.len(), MAX_REQUEST_KEYS);
        let mut distinct = c.request_keys.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), MAX_REQUEST_KEYS);
        // a full set of keys is saved and read back; one more is refused
        let mut w = Writer::default();
        c.save(&mut w);
        let back = Conn::load(&mut Reader::new(&w.buf), 60).unwrap();
        assert_eq!(back.request_keys, c.request_keys);
        assert_eq!(back.kinds, c.kinds);
        c.request_keys.push(7);
        let mut w = Writer::default();
        c.save(&mut w);
        assert!(Conn::load(&mut Reader::new(&w.buf), 60).is_err());
    }

    #[test]
    fn fields_of_a_line_that_does_not_parse_keep_its_subsystem() {
        let f = Fields::of(b"not an nginx line, bytes from/to client:0/0");
        assert_eq!(f.subsystem_of, "stream");
        assert_eq!(f.kind, None);
        assert_eq!(Fields::of(b"neither").subsystem_of, "unknown");
    }

    fn fail<'a>(ts: i64, cid: u64, text: &'a [u8]) -> Input<'a> {
        Input {
            ts,
            source: 0,
            pid: 2454,
            cid: Some(cid),
            failure: Some(Kind::ConnectFailed),
            ended_hint: false,
            text,
            msg: 0, // the tracker does not read the message
        }
    }

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn fires_at_the_threshold_with_repetition() {
        let mut d = Detector::new(Config {
            threshold: 5,
            ..Config::default()
        });
        let a = line(7, "10.0.0.1:80");
        let b = line(7, "10.0.0.2:80");
        let mut changes = Vec::new();
        for i in 0..4 {
            d.process(
                &fail(100, 7, if i % 2 == 0 { &a } else { &b }),
                1,
                &mut changes,
            );
        }
        assert!(changes.is_empty());
        d.process(&fail(100, 7, &a), 1, &mut changes);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::Fired);
        assert_eq!(changes[0].conn.failures, 5);
        assert_eq!(changes[0].conn.upstreams.entries.len(), 2);
        d.process(&fail(101, 7, &a), 1, &mut changes);
        d.finish_batch(&mut changes);
        assert_eq!(changes.last().unwrap().kind, ChangeKind::Updated);
        assert_eq!(changes.last().unwrap().conn.failures, 6);
        let mut later = Vec::new();
        d.advance(101 + 60, &mut later);
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].reason, Some("quiet"));
        assert_eq!(later[0].at, 161);
    }

    #[test]
    fn distinct_peers_do_not_fire_without_repetition() {
        let mut d = Detector::new(Config {
            threshold: 3,
            min_repeat: 2,
            ..Config::default()
        });
        let lines: Vec<_> = (0..3).map(|i| line(9, &format!("10.0.0.{i}:80"))).collect();
        let mut changes = Vec::new();
        for l in &lines {
            d.process(&fail(5, 9, l), 1, &mut changes);
        }
        assert!(changes.is_empty());
    }

    #[test]
    fn a_flood_is_bounded_and_a_hot_key_survives() {
        let mut d = Detector::new(Config {
            threshold: 50,
            max_tracked: 100,
            ..Config::default()
        });
        let hot = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        let mut fired = false;
        for i in 0..20_000u64 {
            let ts = 1000 + (i / 1000) as i64;
            let one = line(10 + i, "10.0.0.9:80");
            d.process(&fail(ts, 10 + i, &one), 1, &mut changes);
            // The hot key fails once every 20 new keys: it must never be the coldest of
            // the 8 least recently updated (a key that fails only once per `cap` new
            // keys cannot be told from the flood, by any scheme).
            if i % 20 == 0 {
                d.process(&fail(ts, 1, &hot), 1, &mut changes);
            }
            assert!(d.tracked_keys() <= 100);
            fired |= changes.iter().any(|c| c.key.cid == 1);
        }
        assert!(fired, "the hot key reached its threshold");
        assert!(d.stats.evictions > 19_000);
    }

    #[test]
    fn eviction_takes_the_key_with_fewest_failures_inside_the_window() {
        let mut d = Detector::new(Config {
            threshold: 50,
            window: 10,
            max_tracked: 3,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        let key = |cid| Key {
            source: 0,
            pid: 2454,
            cid,
        };
        // least recently updated first: 2 (1 failure), 1 (5, all at the window's edge
        // once time reaches 112), 3 (2)
        d.process(&fail(105, 2, &text), 1, &mut changes);
        d.process(&fail(102, 1, &text), 5, &mut changes);
        d.process(&fail(106, 3, &text), 2, &mut changes);
        d.process(&fail(112, 4, &text), 1, &mut changes);
        // (102, 112] holds none of 1's failures: it is the coldest, not 2
        assert_eq!(d.stats.evictions, 1);
        assert!(!d.map.contains_key(&key(1)));
        for cid in [2, 3, 4] {
            assert!(d.map.contains_key(&key(cid)), "{cid}");
        }
        assert!(changes.is_empty());
    }

    #[test]
    fn a_key_that_fails_again_is_the_most_recently_updated() {
        let mut d = Detector::new(Config {
            threshold: 50,
            max_tracked: 3,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        d.process(&fail(100, 1, &text), 1, &mut changes);
        d.process(&fail(100, 2, &text), 2, &mut changes);
        d.process(&fail(100, 3, &text), 2, &mut changes);
        d.process(&fail(100, 1, &text), 1, &mut changes); // 1 moves behind 3
        d.process(&fail(100, 4, &text), 1, &mut changes);
        // all three hold 2: the least recently updated of them goes, 2, not 1
        let kept: Vec<u64> = [1, 2, 3, 4]
            .into_iter()
            .filter(|&cid| {
                d.map.contains_key(&Key {
                    source: 0,
                    pid: 2454,
                    cid,
                })
            })
            .collect();
        assert_eq!(kept, vec![1, 3, 4]);
    }

    #[test]
    fn firing_and_tracked_keys_are_counted_apart() {
        let mut d = Detector::new(Config {
            threshold: 3,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        for cid in [1, 2] {
            d.process(&fail(100, cid, &text), 3, &mut changes);
        }
        d.process(&fail(100, 3, &text), 1, &mut changes);
        d.finish_batch(&mut changes);
        assert_eq!(d.firing_len(), 2);
        assert_eq!(d.tracked_keys(), 3);
    }

    #[test]
    fn recycled_buffers_are_bounded_in_number_and_size() {
        let mut d = Detector::new(Config::default());
        let pending = |text: usize, rest: usize| Pending {
            first: (0, 1, Vec::with_capacity(text)),
            rest: Vec::with_capacity(rest),
            n: 1,
            last: 0,
        };
        d.pending_bytes = 100;
        d.recycle(pending(64, 4));
        assert_eq!(d.pending_bytes, 36);
        d.recycle(pending(64, 4));
        assert_eq!(d.pending_bytes, 0); // never below nothing
        for _ in 0..POOL {
            d.recycle(pending(64, 4));
        }
        assert_eq!((d.text_pool.len(), d.entry_pool.len()), (POOL, POOL));
        d.text_pool.clear();
        d.entry_pool.clear();
        d.recycle(pending(POOLED_TEXT + 1, 65)); // too big to keep
        assert!(d.text_pool.is_empty() && d.entry_pool.is_empty());
        d.recycle(pending(POOLED_TEXT, 0)); // an empty list has nothing worth keeping
        assert_eq!((d.text_pool.len(), d.entry_pool.len()), (1, 0));
        d.recycle(pending(1, 64));
        assert_eq!((d.text_pool.len(), d.entry_pool.len()), (2, 1));
    }

    #[test]
    fn a_pooled_buffer_is_reused_only_when_the_line_fits() {
        let mut d = Detector::new(Config::default());
        d.text_pool.push(Vec::with_capacity(64));
        let long = d.text_buffer(&[b'x'; 200]);
        assert_eq!(long.capacity(), 256); // its own, rounded up to 64 bytes
        assert!(d.text_pool.is_empty()); // the small one is let go
        assert_eq!(d.pending_bytes, 256);
        let pooled = Vec::with_capacity(64);
        let at = pooled.as_ptr();
        d.text_pool.push(pooled);
        let short = d.text_buffer(b"0123456789");
        assert_eq!(short, b"0123456789");
        assert_eq!(short.as_ptr(), at); // the very buffer that was pooled
        assert_eq!(d.pending_bytes, 256 + 64);
    }

    #[test]
    fn event_time_moves_forward_only() {
        let mut d = Detector::new(Config::default());
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        assert_eq!(d.watermark, None);
        d.process(&fail(100, 1, &text), 1, &mut changes);
        assert_eq!(d.watermark, Some(100));
        d.process(&fail(105, 1, &text), 1, &mut changes);
        assert_eq!(d.watermark, Some(105));
        d.process(&fail(103, 1, &text), 1, &mut changes); // a worker a little behind
        assert_eq!(d.watermark, Some(105));
        d.advance(104, &mut changes);
        assert_eq!(d.watermark, Some(105));
        d.advance(106, &mut changes);
        assert_eq!(d.watermark, Some(106));
    }

    #[test]
    fn the_byte_budget_is_kept_exactly() {
        let mut d = Detector::new(Config {
            threshold: 50,
            ..Config::default()
        });
        // each pending key holds its line, in a buffer rounded up to 64 bytes
        let held = line(1, "10.0.0.1:80").len().next_multiple_of(64);
        d.pending_budget = 3 * held;
        let mut changes = Vec::new();
        for cid in 1..=3 {
            d.process(&fail(100, cid, &line(cid, "10.0.0.1:80")), 1, &mut changes);
        }
        assert_eq!(d.pending_bytes, 3 * held); // at the budget: nothing evicted
        assert_eq!((d.stats.evictions, d.tracked_keys()), (0, 3));
        d.process(&fail(100, 4, &line(4, "10.0.0.1:80")), 1, &mut changes);
        assert_eq!((d.stats.evictions, d.tracked_keys()), (1, 3));
    }

    fn ended(ts: i64, cid: u64, text: &[u8]) -> Input<'_> {
        Input {
            ts,
            source: 0,
            pid: 2454,
            cid: Some(cid),
            failure: None,
            ended_hint: true,
            text,
            msg: 0,
        }
    }

    const ENDED: &str = "2019/09/17 03:46:21 [info] 2454#2454: *CID client disconnected, bytes from/to client:0/0, bytes from/to upstream:0/0";

    #[test]
    fn an_ended_connection_resolves_or_is_forgotten_and_is_counted() {
        let mut d = Detector::new(Config {
            threshold: 3,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        d.process(&fail(100, 1, &text), 2, &mut changes);
        d.process(&fail(100, 1, &text), 2, &mut changes); // fires
        d.process(&fail(100, 2, &text), 1, &mut changes); // pending
        assert_eq!(d.stats.connect_failures, 5);
        assert_eq!(d.stats.by_source_kind.values().sum::<u64>(), 5);
        assert_eq!((d.stats.fired, d.firing_len(), d.tracked_keys()), (1, 1, 2));
        changes.clear();
        // "closed" in a line that is no end of the connection: nothing happens
        let not_an_end = ENDED.replace("client disconnected", "upstream closed prematurely");
        let not_an_end = not_an_end.replace("CID", "1");
        d.process(&ended(101, 1, not_an_end.as_bytes()), 1, &mut changes);
        assert!(changes.is_empty());
        assert_eq!(d.tracked_keys(), 2);
        let end1 = ENDED.replace("CID", "1");
        d.process(&ended(101, 1, end1.as_bytes()), 1, &mut changes);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::Resolved);
        assert_eq!(changes[0].reason, Some("connection_ended"));
        assert_eq!((changes[0].at, changes[0].key.cid), (101, 1));
        assert_eq!(changes[0].conn.failures, 4);
        let end2 = ENDED.replace("CID", "2");
        d.process(&ended(101, 2, end2.as_bytes()), 1, &mut changes);
        assert_eq!(changes.len(), 1); // a pending key ends without a change
        assert_eq!(
            (d.stats.resolved, d.stats.ended, d.tracked_keys()),
            (1, 1, 0)
        );
        // the end of a connection nobody tracks: nothing
        let end3 = ENDED.replace("CID", "3");
        d.process(&ended(101, 3, end3.as_bytes()), 1, &mut changes);
        assert_eq!((d.stats.resolved, d.stats.ended), (1, 1));
    }

    fn key(source: SourceId, cid: u64) -> Key {
        Key {
            source,
            pid: 2454,
            cid,
        }
    }

    #[test]
    fn a_firing_key_is_updated_once_per_batch_while_it_lives() {
        let mut d = Detector::new(Config {
            threshold: 3,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        d.process(&fail(100, 1, &text), 3, &mut changes); // fires
        d.finish_batch(&mut changes);
        assert_eq!(
            changes.iter().map(|c| c.kind).collect::<Vec<_>>(),
            vec![ChangeKind::Fired]
        );
        changes.clear();
        for _ in 0..4 {
            d.process(&fail(101, 1, &text), 1, &mut changes);
        }
        d.finish_batch(&mut changes);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, ChangeKind::Updated);
        assert_eq!((changes[0].conn.failures, changes[0].at), (7, 101));
        changes.clear();
        d.finish_batch(&mut changes); // nothing new: nothing said
        assert!(changes.is_empty());
        // failed, then ended in the same batch: resolved, not updated
        d.process(&fail(102, 1, &text), 1, &mut changes);
        let end = ENDED.replace("CID", "1");
        d.process(&ended(102, 1, end.as_bytes()), 1, &mut changes);
        d.finish_batch(&mut changes);
        assert_eq!(
            changes.iter().map(|c| c.kind).collect::<Vec<_>>(),
            vec![ChangeKind::Resolved]
        );
        changes.clear();
        // fired again in a later batch under the same key: one fired, then its updates
        d.process(&fail(103, 1, &text), 3, &mut changes);
        d.process(&fail(103, 1, &text), 1, &mut changes);
        d.finish_batch(&mut changes);
        assert_eq!(
            changes.iter().map(|c| c.kind).collect::<Vec<_>>(),
            vec![ChangeKind::Fired, ChangeKind::Updated]
        );
        assert_eq!(changes[1].conn.failures, 4);
    }

    fn tick(ts: i64) -> Input<'static> {
        Input {
            ts,
            source: 0,
            pid: 2454,
            cid: Some(999),
            failure: None,
            ended_hint: false,
            text: b"",
            msg: 0,
        }
    }

    fn kinds(changes: &[Change]) -> Vec<(ChangeKind, u64)> {
        changes.iter().map(|c| (c.kind, c.key.cid)).collect()
    }

    #[test]
    fn within_one_batch_a_key_resolves_and_comes_back_without_a_stale_update() {
        let mut d = Detector::new(Config {
            threshold: 3,
            resolve_after: 10,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        d.process(&fail(100, 1, &text), 3, &mut changes); // fires
        d.process(&fail(100, 1, &text), 1, &mut changes); // its update, due at the end
        d.process(&tick(120), 1, &mut changes); // quiet: resolved (slot freed)
        d.process(&fail(120, 1, &text), 1, &mut changes); // back, pending, same slot
        d.finish_batch(&mut changes);
        use ChangeKind::{Fired, Resolved, Updated};
        assert_eq!(kinds(&changes), vec![(Fired, 1), (Resolved, 1)]);
        changes.clear();
        // fired again in the batch it came back in, then failing on: one update, its own
        d.process(&fail(121, 1, &text), 2, &mut changes); // fires anew (3 in the window)
        d.process(&fail(121, 1, &text), 1, &mut changes);
        d.process(&fail(121, 1, &text), 1, &mut changes);
        d.finish_batch(&mut changes);
        assert_eq!(kinds(&changes), vec![(Fired, 1), (Updated, 1)]);
        assert_eq!(changes[1].conn.failures, 5);
        changes.clear();
        // ended, back and firing again, all in one batch: the first life's touch is stale
        d.process(&fail(122, 1, &text), 1, &mut changes);
        let end = ENDED.replace("CID", "1");
        d.process(&ended(122, 1, end.as_bytes()), 1, &mut changes);
        d.process(&fail(122, 1, &text), 3, &mut changes);
        d.process(&fail(122, 1, &text), 1, &mut changes);
        d.finish_batch(&mut changes);
        assert_eq!(
            kinds(&changes),
            vec![(Resolved, 1), (Fired, 1), (Updated, 1)]
        );
        assert_eq!(changes[2].conn.failures, 4);
        // every failure counted once, by kind and subsystem too
        assert_eq!(d.stats.connect_failures, 14);
        assert_eq!(d.stats.by_source_kind.values().sum::<u64>(), 14);
    }

    #[test]
    fn a_key_that_fired_resolved_quiet_and_fired_again_in_one_batch_is_not_updated() {
        let mut d = Detector::new(Config {
            threshold: 3,
            resolve_after: 10,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        d.process(&fail(100, 1, &text), 3, &mut changes); // fires
        d.process(&fail(100, 1, &text), 1, &mut changes); // touched
        d.process(&tick(120), 1, &mut changes); // resolved quiet
        d.process(&fail(120, 1, &text), 3, &mut changes); // fires anew in the same slot
        d.finish_batch(&mut changes);
        use ChangeKind::{Fired, Resolved};
        assert_eq!(kinds(&changes), vec![(Fired, 1), (Resolved, 1), (Fired, 1)]);
    }

    #[test]
    fn a_line_at_the_watermark_sweeps_nothing() {
        let mut d = Detector::new(Config {
            threshold: 50,
            window: 10,
            ..Config::default()
        });
        let text = line(5, "10.0.0.1:80");
        let mut changes = Vec::new();
        d.process(&tick(100), 1, &mut changes);
        d.process(&fail(80, 5, &text), 1, &mut changes); // a window late: kept for now
        d.process(&tick(100), 1, &mut changes); // time has not moved: no sweep
        assert_eq!((d.tracked_keys(), d.stats.expired), (1, 0));
        d.process(&tick(101), 1, &mut changes);
        assert_eq!((d.tracked_keys(), d.stats.expired), (0, 1));
    }

    #[test]
    fn the_peer_of_a_line_is_given_when_its_fields_were_read() {
        let mut d = Detector::new(Config {
            threshold: 3,
            ..Config::default()
        });
        let mut changes = Vec::new();
        let text = line(1, "10.0.0.1:80");
        d.process(&fail(100, 1, &text), 1, &mut changes);
        assert_eq!(d.line_peer(), None); // pending: kept unread
        d.process(&fail(100, 1, &text), 1, &mut changes);
        d.process(&fail(100, 1, &text), 1, &mut changes); // a Conn now, and fired
        assert_eq!(d.line_peer(), Some(Some(&b"10.0.0.1:80"[..])));
        let other = line(1, "10.0.0.2:80");
        d.process(&fail(101, 1, &other), 1, &mut changes); // firing: the storm's path
        assert_eq!(d.line_peer(), Some(Some(&b"10.0.0.2:80"[..])));
        d.process(&tick(102), 1, &mut changes); // not a failure
        assert_eq!(d.line_peer(), None);
    }

    #[test]
    fn the_field_cache_is_bounded() {
        let mut cache = FieldCache::default();
        for cid in 0..FIELD_CACHE as u64 {
            Detector::fields_of(&mut cache, &line(cid, "10.0.0.1:80"));
        }
        assert_eq!(cache.fields.len(), FIELD_CACHE);
        let i = Detector::fields_of(&mut cache, &line(5, "10.0.0.1:80"));
        let again = &cache.fields[i];
        assert_eq!(again.peer.as_deref(), Some(&b"10.0.0.1:80"[..]));
        assert_eq!(cache.fields.len(), FIELD_CACHE); // a hit adds nothing
        let i = Detector::fields_of(&mut cache, &line(1, "10.0.0.7:80"));
        let new = &cache.fields[i];
        assert_eq!(new.peer.as_deref(), Some(&b"10.0.0.7:80"[..]));
        assert_eq!((cache.fields.len(), cache.index.len()), (1, 1)); // full: started over
    }

    #[test]
    fn a_key_idle_for_a_window_starts_afresh_even_unswept() {
        let mut d = Detector::new(Config {
            threshold: 50,
            window: 10,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        d.process(&fail(100, 1, &text), 1, &mut changes);
        d.process(&fail(95, 2, &text), 2, &mut changes); // late: behind 1 in the sweep
        assert_eq!(d.stats.expired, 0);
        // the sweep to 106 stops at 1 (100 > 96); 2 (95 <= 106 - 10) is idle all the same
        d.process(&fail(106, 2, &text), 1, &mut changes);
        assert_eq!((d.stats.expired, d.tracked_keys()), (1, 2));
        let slot = d.map[&key(0, 2)];
        match &d.nodes[slot as usize].state {
            State::Pending(p) => assert_eq!((p.n, p.first.0), (1, 106)),
            State::Conn(_) => panic!("a fresh start is pending"),
        }
    }

    #[test]
    fn a_pending_key_whose_oldest_line_leaves_the_window_is_counted_in_a_conn() {
        let mut d = Detector::new(Config {
            threshold: 5,
            window: 10,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        d.process(&fail(100, 1, &text), 2, &mut changes);
        d.process(&fail(104, 1, &text), 1, &mut changes);
        assert!(d.hottest(10).is_empty()); // pending keys are not listed
        d.process(&fail(110, 1, &text), 1, &mut changes); // 100 is out of (100, 110]
        let hot = d.hottest(10);
        assert_eq!(hot.len(), 1);
        let (k, firing, conn, in_window) = hot[0];
        assert_eq!(
            (k, firing, conn.failures, in_window),
            (key(0, 1), false, 4, 2)
        );
        assert!(changes.is_empty());
    }

    #[test]
    fn the_sweep_drops_keys_idle_for_a_window_exactly() {
        let mut d = Detector::new(Config {
            threshold: 50,
            window: 10,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        d.process(&fail(100, 1, &text), 1, &mut changes);
        d.process(&fail(101, 2, &text), 1, &mut changes);
        d.advance(110, &mut changes);
        assert_eq!((d.tracked_keys(), d.stats.expired), (1, 1)); // 100 <= 110 - 10
        d.advance(111, &mut changes);
        assert_eq!((d.tracked_keys(), d.stats.expired), (0, 2));
        d.advance(111, &mut changes);
        assert_eq!(d.stats.expired, 2);
    }

    #[test]
    fn hottest_and_firing_list_the_connections() {
        let mut d = Detector::new(Config {
            threshold: 4,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        d.process(&fail(100, 1, &text), 4, &mut changes); // fires
        d.process(&fail(100, 2, &text), 6, &mut changes); // fires, hotter
        d.process(&fail(100, 3, &text), 1, &mut changes); // pending
        let firing: Vec<(Key, u64)> = d.firing().iter().map(|(k, c)| (*k, c.failures)).collect();
        assert_eq!(firing, vec![(key(0, 1), 4), (key(0, 2), 6)]);
        let hot: Vec<(u64, bool, u64)> = d
            .hottest(10)
            .iter()
            .map(|(k, f, _, n)| (k.cid, *f, *n))
            .collect();
        assert_eq!(hot, vec![(2, true, 6), (1, true, 4)]);
        assert_eq!(d.hottest(1).len(), 1);
    }

    #[test]
    fn a_source_released_or_removed_takes_its_keys_and_counts() {
        let mut d = Detector::new(Config {
            threshold: 3,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        for source in [0, 1, 2] {
            let inp = Input {
                source,
                ..fail(100, 1, &text)
            };
            d.process(&inp, 3, &mut changes); // each source's *1 fires
            let pending = Input {
                source,
                ..fail(100, 2, &text)
            };
            d.process(&pending, 1, &mut changes);
        }
        d.finish_batch(&mut changes);
        changes.clear();
        d.release_source(1, &mut changes);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].key, key(1, 1));
        assert_eq!(changes[0].reason, Some("source_removed"));
        assert_eq!((changes[0].at, d.stats.resolved), (100, 1));
        assert_eq!(d.tracked_keys(), 4);
        // source 0 goes; source 2 (the last) takes its id, keys and counts
        d.remove_source(0, 2);
        assert_eq!(d.tracked_keys(), 2);
        let mut keys: Vec<Key> = d.map.keys().copied().collect();
        keys.sort_by_key(|k| k.cid);
        assert_eq!(keys, vec![key(0, 1), key(0, 2)]);
        let mut sources: Vec<SourceId> = d.stats.by_source_kind.keys().map(|k| k.0).collect();
        sources.sort_unstable();
        sources.dedup();
        assert_eq!(sources, vec![0, 1]);
        assert_eq!(
            d.stats
                .by_source_kind
                .iter()
                .filter(|(k, _)| k.0 == 0)
                .map(|(_, n)| n)
                .sum::<u64>(),
            4
        );
        // the renamed key is the same connection: it still fires on
        let again = Input {
            source: 0,
            ..fail(101, 1, &text)
        };
        d.process(&again, 1, &mut changes);
        d.finish_batch(&mut changes);
        assert_eq!(
            changes.last().map(|c| (c.kind, c.key)),
            Some((ChangeKind::Updated, key(0, 1)))
        );
    }

    #[test]
    fn a_rich_state_round_trips_whole_and_narrows_to_todays_cap() {
        let config = Config {
            threshold: 4,
            ..Config::default()
        };
        let mut d = Detector::new(config);
        let text = line(1, "10.0.0.1:80");
        // no bytes counters, no request: a subsystem nobody can tell ("unknown")
        let bare = b"2019/09/17 03:46:20 [error] 2454#2454: *9 connect() failed (111: Connection refused) while connecting to upstream";
        let mut changes = Vec::new();
        d.process(&fail(100, 1, &text), 4, &mut changes); // firing
        d.process(&fail(100, 2, &text), 1, &mut changes); // pending, three entries
        d.process(&fail(101, 2, &line(2, "10.0.0.2:80")), 1, &mut changes);
        d.process(&fail(102, 2, &line(2, "10.0.0.3:80")), 1, &mut changes);
        for cid in 3..6 {
            d.process(&fail(102, cid, &text), 1, &mut changes);
        }
        d.process(&fail(102, 9, bare), 1, &mut changes);
        let end = ENDED.replace("CID", "3");
        d.process(&ended(102, 3, end.as_bytes()), 1, &mut changes);
        assert_eq!(Fields::of(bare).subsystem_of, "unknown");
        let mut w = Writer::default();
        d.save(&mut w);
        let back = Detector::load(&mut Reader::new(&w.buf), config, 1).unwrap();
        assert_eq!(back.watermark, Some(102));
        let stats = |x: &Detector| {
            let s = &x.stats;
            let mut by: Vec<_> = s.by_source_kind.iter().map(|(k, n)| (*k, *n)).collect();
            by.sort_unstable_by_key(|(k, _)| (k.0, k.1.index(), k.2));
            (
                [
                    s.connect_failures,
                    s.evictions,
                    s.untracked,
                    s.expired,
                    s.ended,
                    s.fired,
                    s.resolved,
                ],
                by,
            )
        };
        assert_eq!(stats(&back), stats(&d));
        assert_eq!(stats(&back).0[4], 1); // ended
        assert_eq!((back.tracked_keys(), back.firing_len()), (5, 1));
        // the pending key keeps its three lines, counted in the byte budget
        let slot = back.map[&key(0, 2)];
        match &back.nodes[slot as usize].state {
            State::Pending(p) => {
                assert_eq!((p.n, p.last, p.rest.len()), (3, 102, 2));
            }
            State::Conn(_) => panic!("pending"),
        }
        let texts: usize = [
            line(2, "10.0.0.1:80"),
            line(2, "10.0.0.2:80"),
            line(2, "10.0.0.3:80"),
            line(4, "10.0.0.1:80"),
            line(5, "10.0.0.1:80"),
            bare.to_vec(),
        ]
        .iter()
        .map(Vec::len)
        .sum();
        assert_eq!(back.pending_bytes, texts);
        // saved again: the same bytes
        let mut again = Writer::default();
        back.save(&mut again);
        assert_eq!(again.buf, w.buf);
        // today's cap is lower: the coldest tracked keys go, the firing one stays
        let narrow = Config {
            max_tracked: 2,
            ..config
        };
        let small = Detector::load(&mut Reader::new(&w.buf), narrow, 1).unwrap();
        assert_eq!((small.tracked_keys(), small.firing_len()), (2, 1));
        assert_eq!(small.stats.evictions, 3);
        // a source id the engine no longer has is refused
        assert!(Detector::load(&mut Reader::new(&w.buf), config, 0).is_err());
    }

    #[test]
    fn a_pending_key_takes_a_pooled_list_only_for_its_first_extra_line() {
        let mut d = Detector::new(Config {
            threshold: 50,
            ..Config::default()
        });
        let pooled: Vec<Entry> = Vec::with_capacity(8);
        let at = pooled.as_ptr();
        d.entry_pool.push(pooled);
        d.entry_pool.push(Vec::with_capacity(8));
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        for ts in [100, 101, 102] {
            d.process(&fail(ts, 1, &text), 1, &mut changes);
        }
        let slot = d.map[&key(0, 1)];
        match &d.nodes[slot as usize].state {
            State::Pending(p) => {
                assert_eq!((p.n, p.first.0), (3, 100));
                let rest: Vec<i64> = p.rest.iter().map(|e| e.0).collect();
                assert_eq!(rest, vec![101, 102]);
                assert_ne!(p.rest.as_ptr(), at); // the last pooled list, not the first
            }
            State::Conn(_) => panic!("pending"),
        }
        assert_eq!(d.entry_pool.len(), 1);
    }

    #[test]
    fn firing_keys_over_a_lower_cap_are_all_kept_on_load() {
        let config = Config {
            threshold: 2,
            ..Config::default()
        };
        let mut d = Detector::new(config);
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        for cid in [1, 2, 3] {
            d.process(&fail(100, cid, &text), 2, &mut changes);
        }
        let mut w = Writer::default();
        d.save(&mut w);
        let narrow = Config {
            max_tracked: 1,
            ..config
        };
        let back = Detector::load(&mut Reader::new(&w.buf), narrow, 1).unwrap();
        assert_eq!((back.firing_len(), back.tracked_keys()), (3, 3));
        assert_eq!(back.stats.evictions, 0);
    }

    #[test]
    fn with_only_firing_keys_at_the_cap_a_new_key_is_counted_untracked() {
        let mut d = Detector::new(Config {
            threshold: 2,
            max_tracked: 1,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        d.process(&fail(100, 1, &text), 2, &mut changes); // fires: not evictable
        d.process(&fail(100, 2, &text), 1, &mut changes);
        d.process(&fail(100, 3, &text), 3, &mut changes);
        assert_eq!((d.stats.untracked, d.tracked_keys()), (4, 1));
        assert_eq!(d.stats.connect_failures, 6);
    }

    #[test]
    fn a_quiet_resolution_is_counted_and_advancing_to_now_does_nothing() {
        let mut d = Detector::new(Config {
            threshold: 2,
            window: 10,
            resolve_after: 10,
            ..Config::default()
        });
        let text = line(1, "10.0.0.1:80");
        let mut changes = Vec::new();
        d.process(&fail(100, 1, &text), 2, &mut changes);
        d.process(&fail(85, 7, &text), 1, &mut changes); // a window late: kept for now
        d.advance(100, &mut changes); // not later: nothing
        d.advance(99, &mut changes);
        assert_eq!(
            (d.watermark, d.stats.expired, d.tracked_keys()),
            (Some(100), 0, 2)
        );
        d.advance(110, &mut changes);
        assert_eq!(d.stats.resolved, 1);
        assert_eq!(
            changes.last().map(|c| (c.kind, c.at)),
            Some((ChangeKind::Resolved, 110))
        );
    }

    #[test]
    fn change_kinds_are_named() {
        assert_eq!(
            [ChangeKind::Fired, ChangeKind::Updated, ChangeKind::Resolved].map(ChangeKind::as_str),
            ["fired", "updated", "resolved"]
        );
    }

    #[test]
    fn pending_lines_are_bounded_by_bytes_too() {
        let mut d = Detector::new(Config {
            threshold: 5,
            ..Config::default()
        });
        d.pending_budget = 1 << 20;
        let long = "x".repeat(60_000);
        let mut changes = Vec::new();
        for cid in 0..200u64 {
            let text = line(cid, &long);
            d.process(&fail(100, cid, &text), 1, &mut changes);
            assert!(d.pending_bytes <= d.pending_budget + 70_000);
        }
        assert!(d.stats.evictions > 150, "{}", d.stats.evictions);
        assert!(d.tracked_keys() < 20);
        // A key that fails again before it is evicted is still counted and can fire.
        let hot = line(7, "10.0.0.1:80");
        for _ in 0..5 {
            d.process(&fail(101, 7, &hot), 1, &mut changes);
        }
        assert!(changes
            .iter()
            .any(|c| c.key.cid == 7 && c.kind == ChangeKind::Fired));
    }

    #[test]
    fn state_round_trips() {
        let mut d = Detector::new(Config {
            threshold: 3,
            ..Config::default()
        });
        let a = line(7, "10.0.0.1:80");
        let mut changes = Vec::new();
        for cid in [7, 7, 7, 8] {
            d.process(&fail(100, cid, &a), 1, &mut changes);
        }
        let mut w = Writer::default();
        d.save(&mut w);
        let back = Detector::load(&mut Reader::new(&w.buf), d.config, 1).unwrap();
        assert_eq!(back.tracked_keys(), 2);
        assert_eq!(back.firing_len(), 1);
        assert_eq!(back.stats.connect_failures, 4);
        let mut again = Writer::default();
        back.save(&mut again);
        assert_eq!(w.buf, again.buf);
        for cut in 0..w.buf.len() {
            assert!(Detector::load(&mut Reader::new(&w.buf[..cut]), d.config, 1).is_err());
        }
    }
}
