//! One source's path from bytes to events: framing, unwrapping, assembling, the head
//! parse, and the counts of every line read (port of retrywatch/pipeline.py).
//!
//! Every line read is counted once: as part of an event (`lines_parsed`) or as unparsed
//! under a reason (`too_long`, `blank`, `no_timestamp`, `bad_prefix`, `unknown_level`,
//! `bad_timestamp`, `bad_docker_json`).

use crate::assemble::{Assembler, Piece};
use crate::framing::{frame_datagram, Datagram, Framer};
use crate::head::{parse_head, Head};
use crate::snapshot::{Reader, Result, Writer};
use crate::text::{is_blank, is_event_start};
use crate::wrappers::{Step, Unwrapper};

/// Unparsed reasons, in a fixed order (the index is the reason's id).
pub const REASONS: [&str; 9] = [
    "too_long",
    "blank",
    "no_timestamp",
    "bad_prefix",
    "unknown_level",
    "bad_timestamp",
    "bad_docker_json",
    "too_many_streams",
    "other",
];

fn reason_id(reason: &str) -> usize {
    REASONS
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(REASONS.len() - 1)
}

/// Counters of what one source read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    pub bytes_read: u64,
    pub lines_read: u64,
    pub lines_parsed: u64,
    pub events: u64,
    pub unparsed: [u64; REASONS.len()],
}

impl SourceStats {
    pub fn lines_unparsed(&self) -> u64 {
        self.unparsed.iter().sum()
    }
}

/// Where a pipeline's output goes.
pub trait Sink {
    /// A complete event whose head parsed.
    fn event(&mut self, text: &[u8], head: &Head);
    /// Lines that are no event (only the ordered `parse` output wants the text).
    fn unparsed(&mut self, _reason: &'static str, _text: &[u8]) {}
}

pub struct Pipeline {
    framer: Framer,
    unwrapper: Unwrapper,
    assembler: Assembler,
    pub stats: SourceStats,
    max_line: usize,
}

fn lines_in(text: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', text).count() as u64 + 1
}

struct Stage<'s, S: Sink> {
    stats: &'s mut SourceStats,
    sink: &'s mut S,
}

impl<S: Sink> Stage<'_, S> {
    fn unparsed(&mut self, reason: &'static str, lines: u64, text: &[u8]) {
        self.stats.unparsed[reason_id(reason)] += lines;
        self.sink.unparsed(reason, text);
    }

    fn piece(&mut self, piece: Piece<'_>) {
        match piece {
            Piece::Orphan(line) => {
                let reason = if is_blank(line) {
                    "blank"
                } else {
                    "no_timestamp"
                };
                self.unparsed(reason, 1, line);
            }
            Piece::Event(text, lines) => self.event(text, lines as u64),
        }
    }

    /// An event made of `lines` lines read (each counted once, parsed or not).
    fn event(&mut self, text: &[u8], lines: u64) {
        match parse_head(text) {
            Ok(head) => {
                self.stats.events += 1;
                self.stats.lines_parsed += lines;
                self.sink.event(text, &head);
            }
            Err(reason) => self.unparsed(reason, lines, text),
        }
    }
}

impl Pipeline {
    pub fn new(max_line: usize) -> Self {
        Pipeline {
            framer: Framer::new(max_line),
            unwrapper: Unwrapper::new(max_line),
            assembler: Assembler::new(),
            stats: SourceStats::default(),
            max_line,
        }
    }

    /// Bytes of a stream (a file, stdin).
    pub fn feed<S: Sink>(&mut self, chunk: &[u8], sink: &mut S) {
        self.stats.bytes_read += chunk.len() as u64;
        self.frame(sink, |framer, on_line| framer.feed(chunk, on_line));
    }

    /// Lines out of the framer (`feed` or `flush`), each through the wrappers and the
    /// assembler; every line and over-long line counted.
    fn frame<S: Sink>(
        &mut self,
        sink: &mut S,
        run: impl FnOnce(&mut Framer, &mut dyn FnMut(&[u8])) -> u64,
    ) {
        let Pipeline {
            framer,
            unwrapper,
            assembler,
            stats,
            ..
        } = self;
        let mut stage = Stage { stats, sink };
        let mut lines = 0u64;
        let too_long = run(framer, &mut |line| {
            lines += 1;
            Self::line(unwrapper, assembler, &mut stage, line);
        });
        stage.stats.lines_read += lines + too_long;
        if too_long > 0 {
            stage.unparsed("too_long", too_long, b"");
        }
    }

    fn line<S: Sink>(
        unwrapper: &mut Unwrapper,
        assembler: &mut Assembler,
        stage: &mut Stage<'_, S>,
        line: &[u8],
    ) {
        if unwrapper.last().is_none() && is_event_start(line) {
            assembler.feed(line, |piece| stage.piece(piece));
            return;
        }
        let step = unwrapper.unwrap(line);
        // Pieces joined into a line that itself became a piece or broke (rare).
        stage.stats.lines_parsed += unwrapper.unreported_pieces();
        match step {
            Step::Line { text, pieces } => {
                stage.stats.lines_parsed += pieces;
                assembler.feed(&text, |piece| stage.piece(piece));
            }
            Step::Broken { reason, raws } => {
                for raw in &raws {
                    stage.unparsed(reason, 1, raw);
                }
            }
            Step::Held => {}
        }
    }

    /// Datagrams (syslog): each one line, never joined to another.
    pub fn feed_records<S: Sink>(&mut self, records: &[&[u8]], sink: &mut S) {
        let Pipeline {
            unwrapper,
            assembler,
            stats,
            max_line,
            ..
        } = self;
        let mut stage = Stage { stats, sink };
        // What a stream left held ends here: a datagram continues nothing.
        assembler.flush(|piece| stage.piece(piece));
        for record in records {
            stage.stats.bytes_read += record.len() as u64;
            stage.stats.lines_read += 1;
            let line = match frame_datagram(record, *max_line) {
                Datagram::TooLong => {
                    stage.unparsed("too_long", 1, b"");
                    continue;
                }
                Datagram::Line(line) => line,
            };
            let step = unwrapper.unwrap(&line);
            stage.stats.lines_parsed += unwrapper.unreported_pieces();
            let text = match step {
                Step::Line { text, pieces } => {
                    stage.stats.lines_parsed += pieces;
                    text
                }
                Step::Broken { reason, raws } => {
                    for raw in &raws {
                        stage.unparsed(reason, 1, raw);
                    }
                    continue;
                }
                Step::Held => continue,
            };
            if is_event_start(&text) {
                stage.event(&text, 1); // a datagram is one line
            } else {
                stage.piece(Piece::Orphan(&text));
            }
        }
    }

    /// Complete events, each one text (lines joined by "\n"): no framing, wrappers or
    /// joining. For tests of the detector and for callers that frame events themselves.
    pub fn feed_events<S: Sink>(&mut self, events: &[&[u8]], sink: &mut S) {
        let mut stage = Stage {
            stats: &mut self.stats,
            sink,
        };
        for text in events {
            stage.stats.bytes_read += text.len() as u64;
            let lines = lines_in(text);
            stage.stats.lines_read += lines;
            stage.event(text, lines);
        }
    }

    /// End of input: the held line, pieces and event; a line being dropped ends too.
    pub fn flush<S: Sink>(&mut self, sink: &mut S) {
        self.finish(sink, true);
    }

    /// A quiet source: the held line, pieces and event, as `flush` gives them; but an
    /// over-long line (or CRI/docker line) being dropped stays dropped up to its end, so
    /// however slowly it is written it is counted once.
    pub fn release<S: Sink>(&mut self, sink: &mut S) {
        self.finish(sink, false);
    }

    fn finish<S: Sink>(&mut self, sink: &mut S, end: bool) {
        if end {
            self.frame(sink, |framer, on_line| framer.flush(on_line));
        } else {
            self.frame(sink, |framer, on_line| framer.release(on_line));
        }
        let Pipeline {
            unwrapper,
            assembler,
            stats,
            ..
        } = self;
        let mut stage = Stage { stats, sink };
        let (held, pieces) = if end {
            unwrapper.flush()
        } else {
            unwrapper.release()
        };
        stage.stats.lines_parsed += pieces;
        for line in &held {
            assembler.feed(line, |piece| stage.piece(piece));
        }
        assembler.flush(|piece| stage.piece(piece));
    }

    /// Whether an event or a partial line is held (released by `flush`).
    pub fn holds(&self) -> bool {
        self.assembler.has_pending() || self.framer.pending_bytes() > 0
    }

    pub fn save(&self, w: &mut Writer) {
        self.framer.save(w);
        self.unwrapper.save(w);
        self.assembler.save(w);
        let s = &self.stats;
        for v in [s.bytes_read, s.lines_read, s.lines_parsed, s.events] {
            w.u64(v);
        }
        for v in s.unparsed {
            w.u64(v);
        }
    }

    pub fn load(r: &mut Reader<'_>, max_line: usize) -> Result<Self> {
        let framer = Framer::load(r, max_line)?;
        let unwrapper = Unwrapper::load(r, max_line)?;
        let assembler = Assembler::load(r)?;
        let mut stats = SourceStats {
            bytes_read: r.u64()?,
            lines_read: r.u64()?,
            lines_parsed: r.u64()?,
            events: r.u64()?,
            ..SourceStats::default()
        };
        for v in &mut stats.unparsed {
            *v = r.u64()?;
        }
        Ok(Pipeline {
            framer,
            unwrapper,
            assembler,
            stats,
            max_line,
        })
    }
}
