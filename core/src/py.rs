//! The Python boundary: one class, `Core`, fed whole chunks of bytes with the GIL
//! released; it hands back alert changes, counts and aggregates, never lines.

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::engine::{Aggregates, CachedZone, Engine, FixedZone, Parsed, SourceReader, Zone};
use crate::event::parse_event;
use crate::head::Head;
use crate::pipeline::{Pipeline, Sink, REASONS};
use crate::text::decode_escaped;
use crate::tracker::{Change, Config, Conn, Key, SourceId, Table};
use crate::upstreams::{self, Upstreams};

/// The seconds of a peer's `recent` failures (`Core.upstreams`).
const RECENT: i64 = 10;

fn config(
    window: i64,
    threshold: u64,
    min_repeat: u64,
    resolve_after: i64,
    max_tracked: usize,
) -> PyResult<Config> {
    if window < 1 || threshold < 1 || min_repeat < 1 || resolve_after < 1 || max_tracked < 1 {
        return Err(PyValueError::new_err(
            "window, threshold, min_repeat, resolve_after and max_tracked must be at least 1",
        ));
    }
    Ok(Config {
        window,
        threshold,
        min_repeat,
        resolve_after,
        max_tracked,
    })
}

enum PyZone {
    Fixed(FixedZone),
    Call(CachedZone<Box<dyn FnMut(i64) -> i64 + Send + Sync>>),
}

impl Zone for PyZone {
    fn ts(&mut self, naive: i64) -> i64 {
        match self {
            PyZone::Fixed(z) => z.ts(naive),
            PyZone::Call(z) => z.ts(naive),
        }
    }
}

fn zone(utc_offset: Option<i64>, to_ts: Option<Py<PyAny>>) -> PyZone {
    match (utc_offset, to_ts) {
        (_, Some(f)) => PyZone::Call(CachedZone::new(Box::new(move |naive: i64| {
            // Asked once per distinct second of log time: the GIL for a moment.
            Python::attach(|py| {
                f.call1(py, (naive,))
                    .and_then(|v| v.extract::<i64>(py))
                    .unwrap_or(naive)
            })
        }))),
        (offset, None) => PyZone::Fixed(FixedZone(offset.unwrap_or(0))),
    }
}

fn text(py: Python<'_>, bytes: &[u8]) -> Py<PyAny> {
    decode_escaped(bytes)
        .into_pyobject(py)
        .map(|s| s.into_any().unbind())
        .unwrap_or_else(|_| py.None())
}

fn opt_text(py: Python<'_>, bytes: Option<&[u8]>) -> Py<PyAny> {
    bytes.map_or_else(|| py.None(), |b| text(py, b))
}

fn table<'py>(py: Python<'py>, t: &Table) -> PyResult<Bound<'py, PyList>> {
    let items: Vec<(String, u64)> = t
        .entries
        .iter()
        .map(|(k, n)| (decode_escaped(k), *n))
        .collect();
    PyList::new(py, items)
}

/// A connection's figures as a dict (the alert's and the API's view of it).
fn conn_dict<'py>(
    py: Python<'py>,
    names: &[String],
    key: Key,
    c: &Conn,
    in_window: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("source", &names[key.source as usize])?;
    d.set_item("pid", key.pid)?;
    d.set_item("cid", key.cid)?;
    d.set_item("failures", c.failures)?;
    d.set_item("failures_in_window", in_window)?;
    d.set_item("window_span", c.window.span())?;
    d.set_item("first", c.first)?;
    d.set_item("last", c.last)?;
    d.set_item("peak", c.peak)?;
    d.set_item("peak_ts", c.peak_ts)?;
    d.set_item("max_repeat", c.max_repeat)?;
    d.set_item("upstreams", table(py, &c.upstreams)?)?;
    d.set_item("errnos", table(py, &c.errnos)?)?;
    let kinds: Vec<(&str, u64)> = c.kinds.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    d.set_item("kinds", kinds)?;
    d.set_item("requests", table(py, &c.requests)?)?;
    d.set_item("distinct_requests", c.request_keys.len())?;
    d.set_item("client", opt_text(py, c.client.as_deref()))?;
    d.set_item("server", opt_text(py, c.server.as_deref()))?;
    d.set_item("host", opt_text(py, c.host.as_deref()))?;
    d.set_item("upstream_url", opt_text(py, c.upstream_url.as_deref()))?;
    d.set_item("subsystem", c.subsystem.map(|s| s.as_str()))?;
    d.set_item("sample", text(py, &c.sample))?;
    Ok(d)
}

/// The per-line path of one retrywatch: every source's pipeline and the detector.
#[pyclass(module = "retrywatch._core")]
pub struct Core {
    engine: Engine,
    zone: PyZone,
}

impl Core {
    /// Runs `f` on the engine for one source with the GIL released; the changes it made.
    fn run<'py>(
        &mut self,
        py: Python<'py>,
        source: &str,
        f: impl FnOnce(&mut Engine, SourceId, &mut PyZone, &mut Vec<Change>) + Send,
    ) -> PyResult<Bound<'py, PyList>> {
        let id = self.engine.source(source);
        let Core { engine, zone } = self;
        let changes = py.detach(|| {
            let mut changes = Vec::new();
            f(engine, id, zone, &mut changes);
            changes
        });
        self.changes(py, changes)
    }

    fn changes<'py>(&self, py: Python<'py>, changes: Vec<Change>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for ch in changes {
            let conn = conn_dict(
                py,
                &self.engine.names,
                ch.key,
                &ch.conn,
                ch.conn.window.total(),
            )?;
            out.append((ch.kind.as_str(), ch.at, ch.reason, conn))?;
        }
        Ok(out)
    }
}

#[pymethods]
impl Core {
    #[new]
    #[pyo3(signature = (*, window, threshold, min_repeat, resolve_after, max_tracked, max_line=65536, utc_offset=None, to_ts=None, aggregates=false, rows=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        window: i64,
        threshold: u64,
        min_repeat: u64,
        resolve_after: i64,
        max_tracked: usize,
        max_line: usize,
        utc_offset: Option<i64>,
        to_ts: Option<Py<PyAny>>,
        aggregates: bool,
        rows: bool,
    ) -> PyResult<Self> {
        let mut engine = Engine::new(
            config(window, threshold, min_repeat, resolve_after, max_tracked)?,
            max_line.max(1),
        );
        if aggregates {
            engine.agg = Some(Aggregates::new(rows));
        }
        Ok(Core {
            engine,
            zone: zone(utc_offset, to_ts),
        })
    }

    /// A core from saved state, with today's settings (never the state's).
    #[staticmethod]
    #[pyo3(signature = (state, *, window, threshold, min_repeat, resolve_after, max_tracked, max_line=65536, utc_offset=None, to_ts=None))]
    #[allow(clippy::too_many_arguments)]
    fn restore(
        py: Python<'_>,
        state: &[u8],
        window: i64,
        threshold: u64,
        min_repeat: u64,
        resolve_after: i64,
        max_tracked: usize,
        max_line: usize,
        utc_offset: Option<i64>,
        to_ts: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let cfg = config(window, threshold, min_repeat, resolve_after, max_tracked)?;
        let engine = py
            .detach(|| Engine::load(state, cfg, max_line.max(1)))
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(Core {
            engine,
            zone: zone(utc_offset, to_ts),
        })
    }

    /// The state as versioned bytes (docs/state-format.md).
    fn snapshot<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let state = py.detach(|| self.engine.save());
        PyBytes::new(py, &state)
    }

    /// Registers a source (a no-op when known).
    fn add_source(&mut self, source: &str) {
        self.engine.source(source);
    }

    /// Bytes of a stream source; returns the alert changes as (kind, at, reason, conn).
    fn feed<'py>(
        &mut self,
        py: Python<'py>,
        source: &str,
        data: &[u8],
    ) -> PyResult<Bound<'py, PyList>> {
        self.run(py, source, |engine, id, zone, changes| {
            engine.feed(id, data, zone, changes)
        })
    }

    /// Datagrams of a record source (syslog): each one line.
    fn feed_records<'py>(
        &mut self,
        py: Python<'py>,
        source: &str,
        records: Vec<Vec<u8>>,
    ) -> PyResult<Bound<'py, PyList>> {
        self.run(py, source, |engine, id, zone, changes| {
            let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            engine.feed_records(id, &slices, zone, changes);
        })
    }

    /// Complete events, one text each (no framing, wrappers or joining): one batch.
    fn feed_events<'py>(
        &mut self,
        py: Python<'py>,
        source: &str,
        events: Vec<Vec<u8>>,
    ) -> PyResult<Bound<'py, PyList>> {
        self.run(py, source, |engine, id, zone, changes| {
            let slices: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();
            engine.feed_events(id, &slices, zone, changes);
        })
    }

    /// End of a stream: release what it holds. `idle`: a quiet source, whose line
    /// being dropped (over-long, already counted) stays dropped up to its end.
    #[pyo3(signature = (source, idle = false))]
    fn flush<'py>(
        &mut self,
        py: Python<'py>,
        source: &str,
        idle: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        self.run(py, source, |engine, id, zone, changes| {
            if idle {
                engine.release(id, zone, changes)
            } else {
                engine.flush(id, zone, changes)
            }
        })
    }

    /// Detects a chunk a `SourceReader` read: one batch, as `feed` would (GIL released).
    fn detect<'py>(
        &mut self,
        py: Python<'py>,
        chunk: &ParsedChunk,
    ) -> PyResult<Bound<'py, PyList>> {
        let parsed = &chunk.parsed;
        self.run(py, &chunk.source, |engine, id, _zone, changes| {
            engine.detect(id, parsed, changes)
        })
    }

    /// Moves event time on without an event.
    fn advance<'py>(&mut self, py: Python<'py>, ts: i64) -> PyResult<Bound<'py, PyList>> {
        let mut changes = Vec::new();
        self.engine.advance(ts, &mut changes);
        self.changes(py, changes)
    }

    /// The newest event second a source gave (None before its first event).
    fn newest(&self, source: &str) -> Option<i64> {
        self.engine
            .lookup(source)
            .and_then(|id| self.engine.newest[id as usize])
    }

    /// Whether a source holds an unfinished line or event.
    fn holds(&self, source: &str) -> bool {
        self.engine
            .lookup(source)
            .is_some_and(|id| self.engine.pipes[id as usize].holds())
    }

    #[getter]
    fn watermark(&self) -> Option<i64> {
        self.engine.detector.watermark
    }

    #[getter]
    fn tracked_keys(&self) -> usize {
        self.engine.detector.tracked_keys()
    }

    #[getter]
    fn sources(&self) -> Vec<String> {
        self.engine.names.clone()
    }

    /// Each source's counters: {name: {bytes_read, lines_read, lines_parsed, events, unparsed}}.
    fn source_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (name, pipe) in self.engine.names.iter().zip(&self.engine.pipes) {
            out.set_item(name, stats_dict(py, &pipe.stats)?)?;
        }
        Ok(out)
    }

    /// Forgets a source: its pipeline, counters and keys; the changes that made (a firing
    /// key resolves, reason `source_removed`). Nothing when unknown.
    fn remove_source<'py>(
        &mut self,
        py: Python<'py>,
        source: &str,
    ) -> PyResult<Bound<'py, PyList>> {
        let Some(id) = self.engine.lookup(source) else {
            return Ok(PyList::empty(py));
        };
        let mut changes = Vec::new();
        self.engine.release_source(id, &mut changes);
        let out = self.changes(py, changes)?; // before the ids move
        self.engine.remove_source(source);
        Ok(out)
    }

    /// The detector's counters, with failures by (source, kind, subsystem).
    fn detector_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = &self.engine.detector.stats;
        let d = PyDict::new(py);
        d.set_item("connect_failures", s.connect_failures)?;
        d.set_item("evictions", s.evictions)?;
        d.set_item("untracked", s.untracked)?;
        d.set_item("expired", s.expired)?;
        d.set_item("ended", s.ended)?;
        d.set_item("fired", s.fired)?;
        d.set_item("resolved", s.resolved)?;
        let mut by: Vec<((String, &str, &str), u64)> = s
            .by_source_kind
            .iter()
            .map(|((source, kind, sub), n)| {
                (
                    (
                        self.engine.names[*source as usize].clone(),
                        kind.as_str(),
                        *sub,
                    ),
                    *n,
                )
            })
            .collect();
        by.sort();
        d.set_item("by_source_kind", by)?;
        Ok(d)
    }

    /// The hottest connections now (firing and tracked), as dicts with `firing`.
    fn hottest<'py>(&self, py: Python<'py>, limit: usize) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for (key, firing, c, in_window) in self.engine.detector.hottest(limit) {
            let d = conn_dict(py, &self.engine.names, key, c, in_window)?;
            d.set_item("firing", firing)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// The firing connections, in firing order.
    fn firing<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for (key, c) in self.engine.detector.firing() {
            out.append(conn_dict(py, &self.engine.names, key, c, c.window.total())?)?;
        }
        Ok(out)
    }

    /// Counts connect failures per upstream peer from now on, naming at most `capacity`
    /// peers (0: stops, forgetting them), their baselines learnt in full for the first
    /// `warmup` seconds of log time; other settings start afresh. (Not in the state:
    /// `upstream_baselines` and `seed_upstreams` carry the baselines over a restart.)
    #[pyo3(signature = (capacity, warmup=60))]
    fn set_upstreams(&mut self, capacity: usize, warmup: i64) {
        let u = &mut self.engine.upstreams;
        if capacity == 0 {
            *u = None;
        } else if u
            .as_ref()
            .is_none_or(|u| u.capacity != capacity || u.warmup != warmup.max(0))
        {
            *u = Some(Upstreams::new(capacity, warmup));
        }
    }

    /// Every named peer's baseline: (peer, mean, variance, seconds learnt).
    fn upstream_baselines<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for p in self.engine.upstreams.iter().flat_map(|u| u.peers()) {
            out.append((text(py, &p.name), p.mean, p.var, p.seconds_learnt))?;
        }
        Ok(out)
    }

    /// Baselines saved by `upstream_baselines` before a restart, at log second `now`: those
    /// peers judge against them at once (no warm-up). Nothing when not counting.
    fn seed_upstreams(&mut self, baselines: Vec<(String, f64, f64, u64)>, now: i64) {
        if let Some(u) = &mut self.engine.upstreams {
            for (peer, mean, var, seconds) in baselines {
                u.seed(peer.as_bytes(), mean, var, seconds, now);
            }
        }
    }

    /// Connect failures per upstream peer in the window ending at `now` (default: the
    /// newest event second), and in its last `RECENT` seconds (`recent`), while counting
    /// (`set_upstreams`; else None). Seconds before
    /// `now` are learnt by each peer's baseline first. Peers are sorted by failures in the
    /// window, most first, at most `limit` of them; `window_failures` counts every peer.
    #[pyo3(signature = (now=None, limit=usize::MAX))]
    fn upstreams<'py>(
        &mut self,
        py: Python<'py>,
        now: Option<i64>,
        limit: usize,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        let watermark = self.engine.detector.watermark;
        let Some(u) = &mut self.engine.upstreams else {
            return Ok(None);
        };
        let now = now.or(watermark).or(u.newest);
        let d = PyDict::new(py);
        d.set_item("now", now)?;
        d.set_item("window", upstreams::WINDOW)?;
        d.set_item("capacity", u.capacity)?;
        d.set_item("named", u.len())?;
        d.set_item("failures_total", u.failures)?;
        d.set_item("without_peer_total", u.without_peer)?;
        d.set_item("evicted_total", u.evicted)?;
        d.set_item("warm_from", u.warm_from())?;
        d.set_item("recent_seconds", RECENT)?;
        let peers = PyList::empty(py);
        let Some(now) = now else {
            d.set_item("window_failures", 0)?;
            d.set_item("peers", peers)?;
            return Ok(Some(d));
        };
        py.detach(|| u.settle(now));
        d.set_item("window_failures", u.all_in_window(now))?;
        let mut rows: Vec<(u64, u32, &upstreams::Peer)> = u
            .peers()
            .iter()
            .map(|p| {
                let (failures, seconds) = p.window(now);
                (failures, seconds, p)
            })
            .collect();
        rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.2.name.cmp(&b.2.name)));
        for (failures, seconds, p) in rows.into_iter().take(limit) {
            let row = PyDict::new(py);
            row.set_item("peer", text(py, &p.name))?;
            row.set_item("failures", failures)?;
            row.set_item("failing_seconds", seconds)?;
            row.set_item("recent", p.last_seconds(now, RECENT).0)?;
            row.set_item("connections", p.distinct(now).round())?;
            row.set_item("baseline_mean", p.mean)?;
            row.set_item("baseline_sd", p.sd())?;
            row.set_item("seconds_learnt", p.seconds_learnt)?;
            row.set_item("warm", p.warm(now))?;
            row.set_item("total", p.total)?;
            row.set_item("first", p.first)?;
            row.set_item("last", p.last_failure)?;
            peers.append(row)?;
        }
        d.set_item("peers", peers)?;
        Ok(Some(d))
    }

    /// What `analyze` folds (when made with aggregates=True): first and last event
    /// second, and failures by (second, kind), (second, peer), (second, server), errno.
    fn aggregates<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let Some(agg) = &self.engine.agg else {
            return Err(PyKeyError::new_err("made without aggregates"));
        };
        let d = PyDict::new(py);
        d.set_item("first", agg.first)?;
        d.set_item("last", agg.last)?;
        let kinds: Vec<(i64, &str, u64)> = agg
            .by_kind
            .iter()
            .map(|((t, k), n)| (*t, k.as_str(), *n))
            .collect();
        d.set_item("by_kind", kinds)?;
        let name = |id: Option<u32>| opt_text(py, id.map(|id| agg.name(id)));
        let peers = PyList::empty(py);
        for ((t, p), n) in &agg.by_peer {
            peers.append((*t, name(*p), *n))?;
        }
        d.set_item("by_peer", peers)?;
        let servers = PyList::empty(py);
        for ((t, s), n) in &agg.by_server {
            servers.append((*t, name(*s), *n))?;
        }
        d.set_item("by_server", servers)?;
        let errnos: Vec<(Option<u64>, u64)> = agg.by_errno.iter().map(|(e, n)| (*e, *n)).collect();
        d.set_item("by_errno", errnos)?;
        Ok(d)
    }

    /// Export rows gathered since the last call: columns time, source, pid, cid, kind,
    /// errno, peer, server, count.
    fn take_rows<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let rows = self
            .engine
            .agg
            .as_mut()
            .map(Aggregates::take_rows)
            .unwrap_or_default();
        let names = &self.engine.names;
        let d = PyDict::new(py);
        d.set_item("time", rows.iter().map(|r| r.ts).collect::<Vec<_>>())?;
        d.set_item(
            "source",
            rows.iter()
                .map(|r| names[r.source as usize].as_str())
                .collect::<Vec<_>>(),
        )?;
        d.set_item("pid", rows.iter().map(|r| r.pid).collect::<Vec<_>>())?;
        d.set_item("cid", rows.iter().map(|r| r.cid).collect::<Vec<_>>())?;
        d.set_item(
            "kind",
            rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
        )?;
        d.set_item("errno", rows.iter().map(|r| r.errno).collect::<Vec<_>>())?;
        let peers = PyList::empty(py);
        let servers = PyList::empty(py);
        if let Some(agg) = &self.engine.agg {
            for r in &rows {
                peers.append(opt_text(py, r.peer.map(|id| agg.name(id))))?;
                servers.append(opt_text(py, r.server.map(|id| agg.name(id))))?;
            }
        }
        d.set_item("peer", peers)?;
        d.set_item("server", servers)?;
        d.set_item("count", rows.iter().map(|r| r.count).collect::<Vec<_>>())?;
        Ok(d)
    }
}

fn stats_dict<'py>(
    py: Python<'py>,
    s: &crate::pipeline::SourceStats,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("bytes_read", s.bytes_read)?;
    d.set_item("lines_read", s.lines_read)?;
    d.set_item("lines_parsed", s.lines_parsed)?;
    d.set_item("events", s.events)?;
    let unparsed = PyDict::new(py);
    for (reason, n) in REASONS.iter().zip(s.unparsed) {
        if n > 0 {
            unparsed.set_item(reason, n)?;
        }
    }
    d.set_item("unparsed", unparsed)?;
    Ok(d)
}

/// One source read apart from the detector (its own pipeline and zone), so that
/// `replay` reads files on every core: chunks in, [`ParsedChunk`]s out, handed to
/// `Core.detect` in event-time order.
#[pyclass(name = "SourceReader", module = "retrywatch._core")]
pub struct PySourceReader {
    reader: SourceReader,
    zone: PyZone,
    source: String,
}

/// A chunk's events, read and not yet detected.
#[pyclass(module = "retrywatch._core", frozen)]
pub struct ParsedChunk {
    source: String,
    parsed: Parsed,
}

#[pymethods]
impl ParsedChunk {
    #[getter]
    fn source(&self) -> &str {
        &self.source
    }

    /// The event second of its first event (None: no event).
    #[getter]
    fn first_ts(&self) -> Option<i64> {
        self.parsed.first_ts()
    }

    fn __len__(&self) -> usize {
        self.parsed.len()
    }
}

#[pymethods]
impl PySourceReader {
    #[new]
    #[pyo3(signature = (source, *, max_line=65536, utc_offset=None, to_ts=None))]
    fn new(
        source: &str,
        max_line: usize,
        utc_offset: Option<i64>,
        to_ts: Option<Py<PyAny>>,
    ) -> Self {
        PySourceReader {
            reader: SourceReader::new(max_line.max(1)),
            zone: zone(utc_offset, to_ts),
            source: source.to_owned(),
        }
    }

    /// Reads a chunk of the stream (the GIL released).
    fn parse(&mut self, py: Python<'_>, data: &[u8]) -> ParsedChunk {
        let PySourceReader {
            reader,
            zone,
            source,
        } = self;
        let parsed = py.detach(|| reader.parse(data, zone));
        ParsedChunk {
            source: source.clone(),
            parsed,
        }
    }

    /// End of the stream: what it held.
    fn flush(&mut self, py: Python<'_>) -> ParsedChunk {
        let PySourceReader {
            reader,
            zone,
            source,
        } = self;
        let parsed = py.detach(|| reader.flush(zone));
        ParsedChunk {
            source: source.clone(),
            parsed,
        }
    }

    /// The counters, as `Core.source_stats` gives them for one source.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.reader.pipe.stats)
    }
}

/// Records for `retrywatch parse`: every event with all its fields, and every unparsed
/// line with its reason, in input order.
#[pyclass(module = "retrywatch._core")]
pub struct EventReader {
    pipe: Pipeline,
    source: String,
}

/// An event's text, or an unparsed line with its reason.
type Record = Result<Vec<u8>, (&'static str, Vec<u8>)>;

struct Records {
    items: Vec<Record>,
}

impl Sink for Records {
    fn event(&mut self, text: &[u8], _head: &Head) {
        self.items.push(Ok(text.to_vec()));
    }
    fn unparsed(&mut self, reason: &'static str, text: &[u8]) {
        self.items.push(Err((reason, text.to_vec())));
    }
}

fn event_dict<'py>(
    py: Python<'py>,
    text_bytes: &[u8],
    source: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let Ok(ev) = parse_event(text_bytes) else {
        return Ok(d);
    };
    let h = ev.head;
    d.set_item("stamp", text(py, &text_bytes[..19]))?;
    d.set_item("level", h.level.as_str())?;
    d.set_item("pid", h.pid)?;
    d.set_item("tid", h.tid)?;
    d.set_item("cid", h.cid)?;
    d.set_item("message", text(py, ev.message))?;
    d.set_item("line", text(py, text_bytes))?;
    d.set_item("source", source)?;
    for (name, value) in [
        ("context", ev.context),
        ("client", ev.client),
        ("server", ev.server),
        ("request", ev.request),
        ("subrequest", ev.subrequest),
        ("upstream", ev.upstream),
        ("host", ev.host),
        ("referrer", ev.referrer),
        ("login", ev.login),
        ("peer", ev.peer),
    ] {
        d.set_item(name, opt_text(py, value))?;
    }
    d.set_item("kind", ev.kind.map(|k| k.as_str()))?;
    d.set_item("errno", ev.errno)?;
    d.set_item("errno_text", opt_text(py, ev.errno_text))?;
    d.set_item("subsystem", ev.subsystem.map(|s| s.as_str()))?;
    d.set_item("lua_context", opt_text(py, ev.lua_context))?;
    d.set_item("bytes_from_client", ev.bytes_from_client)?;
    d.set_item("bytes_to_client", ev.bytes_to_client)?;
    d.set_item("bytes_from_upstream", ev.bytes_from_upstream)?;
    d.set_item("bytes_to_upstream", ev.bytes_to_upstream)?;
    d.set_item("connect_failure", ev.connect_failure)?;
    d.set_item("ended", ev.ended)?;
    d.set_item("lines", ev.lines)?;
    Ok(d)
}

impl EventReader {
    fn emit<'py>(&self, py: Python<'py>, records: Records) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for item in records.items {
            match item {
                Ok(ev) => out.append(event_dict(py, &ev, &self.source)?)?,
                Err((reason, raw)) => out.append(PyTuple::new(
                    py,
                    [
                        reason.into_pyobject(py)?.into_any(),
                        text(py, &raw).into_bound(py),
                    ],
                )?)?,
            }
        }
        Ok(out)
    }
}

#[pymethods]
impl EventReader {
    #[new]
    #[pyo3(signature = (source="", max_line=65536))]
    fn new(source: &str, max_line: usize) -> Self {
        EventReader {
            pipe: Pipeline::new(max_line.max(1)),
            source: source.to_owned(),
        }
    }

    /// Records of a chunk: a dict of fields per event (with its `stamp`), a (reason,
    /// text) tuple per unparsed line.
    fn feed<'py>(&mut self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let mut records = Records { items: Vec::new() };
        self.pipe.feed(data, &mut records);
        self.emit(py, records)
    }

    fn feed_records<'py>(
        &mut self,
        py: Python<'py>,
        records: Vec<Vec<u8>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut out = Records { items: Vec::new() };
        let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        self.pipe.feed_records(&slices, &mut out);
        self.emit(py, out)
    }

    fn flush<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut records = Records { items: Vec::new() };
        self.pipe.flush(&mut records);
        self.emit(py, records)
    }

    /// The counters, as `Core.source_stats` gives them for one source.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        stats_dict(py, &self.pipe.stats)
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_class::<EventReader>()?;
    m.add_class::<PySourceReader>()?;
    m.add_class::<ParsedChunk>()?;
    m.add("STATE_VERSION", crate::engine::VERSION)?;
    Ok(())
}
