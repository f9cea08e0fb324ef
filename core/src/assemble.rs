//! Assembling events from lines: a line that does not start with an nginx timestamp
//! continues the event before it (port of retrywatch/assemble.py).
//!
//! The last event is held back until the next event starts (or `flush`), since its
//! continuation lines may come with the next chunk. Blank lines after it are held too:
//! they are joined to it only if a continuation line follows. Events and orphans are
//! handed out in the order they are decided (the Python returns them in two lists).
//!
//! The held event is one buffer (its lines joined by "\n"), so a line costs a copy but
//! no allocation. Blank lines are held only while they can still be joined: once the
//! event's lines and the blanks after it are more than [`MAX_CONTINUATION_LINES`], no
//! continuation line can take them (the Python's `len(pending) + len(blanks) <= 256`
//! only grows false until the blanks are let go, and every way of letting them go makes
//! them orphans), so they are orphans at once instead of growing a list.

use crate::snapshot::{Reader, Result, SnapshotError, Writer};
use crate::text::{is_blank, is_event_start};

pub const MAX_CONTINUATION_LINES: usize = 256;

/// What the assembler hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A complete event: its first line and continuation lines joined by b"\n", and how
    /// many lines it was made of (a line may itself hold a "\n", from a docker `log`).
    Event(&'a [u8], usize),
    /// A line that is no part of an event (Python `orphans`); the caller classifies it
    /// as "blank" (is_blank) or "no_timestamp".
    Orphan(&'a [u8]),
}

#[derive(Debug, Clone, Default)]
pub struct Assembler {
    /// The held event's text (its lines joined by "\n"), when `lines > 0`.
    event: Vec<u8>,
    /// How many lines the held event has (`len(pending)`); 0: none held.
    lines: usize,
    /// Blank lines after the held event, not yet placed, one after the other.
    blanks: Vec<u8>,
    /// Where each held blank line ends in `blanks`.
    blank_ends: Vec<usize>,
    /// Blank lines after the held event were already given out as orphans: more came
    /// than can ever be joined (the Python still holds them), so no continuation line
    /// joins the event until they would have been let go.
    overflow: bool,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn has_pending(&self) -> bool {
        self.lines > 0
    }

    /// Hands out the held blank lines as orphans, and forgets them.
    fn release_blanks<F: FnMut(Piece<'_>)>(&mut self, out: &mut F) {
        let mut start = 0;
        for &end in &self.blank_ends {
            out(Piece::Orphan(&self.blanks[start..end]));
            start = end;
        }
        self.blanks.clear();
        self.blank_ends.clear();
        self.overflow = false;
    }

    /// Python `EventAssembler.feed` for one line: calls `out` for every event completed
    /// and every orphan, in order.
    pub fn feed<F: FnMut(Piece<'_>)>(&mut self, line: &[u8], mut out: F) {
        if is_event_start(line) {
            if self.lines > 0 {
                out(Piece::Event(&self.event, self.lines));
            }
            self.release_blanks(&mut out);
            self.event.clear();
            self.event.extend_from_slice(line);
            self.lines = 1;
        } else if self.lines > 0 && is_blank(line) {
            if self.overflow {
                out(Piece::Orphan(line));
            } else if self.lines + self.blank_ends.len() + 1 > MAX_CONTINUATION_LINES {
                // Never joinable now: these blanks are orphans whatever follows.
                self.release_blanks(&mut out);
                out(Piece::Orphan(line));
                self.overflow = true;
            } else {
                self.blanks.extend_from_slice(line);
                self.blank_ends.push(self.blanks.len());
            }
        } else if self.lines > 0
            && !self.overflow
            && self.lines + self.blank_ends.len() <= MAX_CONTINUATION_LINES
        {
            let mut start = 0;
            for &end in &self.blank_ends {
                self.event.push(b'\n');
                self.event.extend_from_slice(&self.blanks[start..end]);
                start = end;
            }
            self.lines += self.blank_ends.len() + 1;
            self.blanks.clear();
            self.blank_ends.clear();
            self.event.push(b'\n');
            self.event.extend_from_slice(line);
        } else {
            self.release_blanks(&mut out);
            out(Piece::Orphan(line));
        }
    }

    /// Python `flush`: the blank lines held as orphans, then the held event.
    pub fn flush<F: FnMut(Piece<'_>)>(&mut self, mut out: F) {
        self.release_blanks(&mut out);
        if self.lines > 0 {
            out(Piece::Event(&self.event, self.lines));
            self.event.clear();
            self.lines = 0;
        }
    }

    pub fn save(&self, w: &mut Writer) {
        w.usize(self.lines);
        w.bytes(if self.lines > 0 { &self.event } else { b"" });
        w.usize(self.blank_ends.len());
        let mut start = 0;
        for &end in &self.blank_ends {
            w.bytes(&self.blanks[start..end]);
            start = end;
        }
        w.bool(self.overflow);
    }

    pub fn load(r: &mut Reader<'_>) -> Result<Self> {
        let mut a = Assembler::new();
        a.lines = r.usize()?;
        a.event = r.bytes()?.to_vec();
        for _ in 0..r.count(1)? {
            a.blanks.extend_from_slice(r.bytes()?);
            a.blank_ends.push(a.blanks.len());
        }
        a.overflow = r.bool()?;
        if a.lines == 0 && (!a.event.is_empty() || !a.blank_ends.is_empty() || a.overflow) {
            return Err(SnapshotError("blank lines held without an event".into()));
        }
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EV1: &[u8] = b"2024/01/01 00:00:00 [error] 1#1: first";
    const EV2: &[u8] = b"2024/01/01 00:00:01 [error] 1#1: second";

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Out {
        E(Vec<u8>),
        O(Vec<u8>),
    }

    fn push(out: &mut Vec<Out>) -> impl FnMut(Piece<'_>) + '_ {
        move |p| match p {
            Piece::Event(e, _) => out.push(Out::E(e.to_vec())),
            Piece::Orphan(o) => out.push(Out::O(o.to_vec())),
        }
    }

    fn feed_all(a: &mut Assembler, lines: &[&[u8]]) -> Vec<Out> {
        let mut out = Vec::new();
        for line in lines {
            a.feed(line, push(&mut out));
        }
        out
    }

    fn run(lines: &[&[u8]]) -> Vec<Out> {
        let mut a = Assembler::new();
        let mut out = feed_all(&mut a, lines);
        a.flush(push(&mut out));
        assert!(!a.has_pending());
        out
    }

    fn e(parts: &[&[u8]]) -> Out {
        Out::E(parts.join(&b'\n'))
    }

    fn o(line: &[u8]) -> Out {
        Out::O(line.to_vec())
    }

    /// A literal port of the Python `EventAssembler` (lists of lines), returning its
    /// events and orphans over the whole input, flush included.
    fn model(lines: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let (mut events, mut orphans) = (Vec::new(), Vec::new());
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let mut blanks: Vec<Vec<u8>> = Vec::new();
        for &line in lines {
            if is_event_start(line) {
                if !pending.is_empty() {
                    events.push(pending.join(&b'\n'));
                }
                orphans.append(&mut blanks);
                pending = vec![line.to_vec()];
            } else if is_blank(line) && !pending.is_empty() {
                blanks.push(line.to_vec());
            } else if !pending.is_empty() && pending.len() + blanks.len() <= MAX_CONTINUATION_LINES
            {
                pending.append(&mut blanks);
                pending.push(line.to_vec());
            } else {
                orphans.append(&mut blanks);
                orphans.push(line.to_vec());
            }
        }
        orphans.append(&mut blanks);
        if !pending.is_empty() {
            events.push(pending.join(&b'\n'));
        }
        (events, orphans)
    }

    fn split(out: &[Out]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut events = Vec::new();
        let mut orphans = Vec::new();
        for item in out {
            match item {
                Out::E(t) => events.push(t.clone()),
                Out::O(t) => orphans.push(t.clone()),
            }
        }
        (events, orphans)
    }

    #[test]
    fn events_are_held_until_the_next_one_starts() {
        let mut a = Assembler::default();
        assert!(!a.has_pending());
        assert_eq!(feed_all(&mut a, &[EV1]), vec![]);
        assert!(a.has_pending());
        assert_eq!(feed_all(&mut a, &[EV2]), vec![e(&[EV1])]);
        let mut out = Vec::new();
        a.flush(push(&mut out));
        assert_eq!(out, vec![e(&[EV2])]);
        let mut out = Vec::new();
        a.flush(push(&mut out));
        assert_eq!(out, vec![]);
    }

    #[test]
    fn continuation_lines_join_the_event() {
        let lines: [&[u8]; 5] = [
            EV1,
            b"FastCGI sent in stderr:",
            b"\tstack",
            EV2,
            b"PHP message: x",
        ];
        assert_eq!(
            run(&lines),
            vec![
                e(&[EV1, b"FastCGI sent in stderr:", b"\tstack"]),
                e(&[EV2, b"PHP message: x"])
            ]
        );
    }

    #[test]
    fn blank_lines_join_only_when_a_continuation_follows() {
        let lines: [&[u8]; 5] = [EV1, b"", b"  ", b"cont", b"\t"];
        assert_eq!(run(&lines), vec![o(b"\t"), e(&[EV1, b"", b"  ", b"cont"])]);
        let lines: [&[u8]; 4] = [EV1, b" ", b"\xe3\x80\x80", EV2];
        assert_eq!(
            run(&lines),
            vec![e(&[EV1]), o(b" "), o(b"\xe3\x80\x80"), e(&[EV2])]
        );
        // An invalid byte is no whitespace: a continuation line.
        let lines: [&[u8]; 2] = [EV1, b" \xff "];
        assert_eq!(run(&lines), vec![e(&[EV1, b" \xff "])]);
    }

    #[test]
    fn lines_before_any_event_are_orphans() {
        let lines: [&[u8]; 4] = [b"", b"no timestamp", b" ", EV1];
        assert_eq!(
            run(&lines),
            vec![o(b""), o(b"no timestamp"), o(b" "), e(&[EV1])]
        );
    }

    #[test]
    fn the_continuation_limit() {
        // An event takes continuation lines while it has at most 256 lines (with the
        // blanks before the new one): so 257 at most.
        let cont: &[u8] = b"cont";
        let mut lines = vec![EV1];
        lines.extend(std::iter::repeat_n(cont, MAX_CONTINUATION_LINES + 1));
        let out = run(&lines);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], o(cont));
        let Out::E(event) = &out[1] else {
            panic!("no event")
        };
        assert_eq!(
            event.split(|&b| b == b'\n').count(),
            MAX_CONTINUATION_LINES + 1
        );
        assert_eq!(split(&out), model(&lines));
    }

    #[test]
    fn blanks_count_toward_the_limit() {
        // 1 + 254 blanks + 1 continuation: joined (256 lines, one more may come); 1 + 255
        // blanks: 256 lines, joined (257: no more); one more blank and they can never be.
        for blanks in [254, 255, 256, 400] {
            let mut lines = vec![EV1];
            lines.extend(std::iter::repeat_n(&b""[..], blanks));
            lines.push(b"cont");
            lines.push(b"more");
            let out = run(&lines);
            assert_eq!(split(&out), model(&lines), "{blanks}");
            let (events, orphans) = split(&out);
            assert_eq!(events.len(), 1);
            match blanks {
                254 => assert!(orphans.is_empty()),
                255 => assert_eq!(orphans, vec![b"more".to_vec()]),
                _ => {
                    // The blanks and the first continuation are orphans; the next
                    // continuation still joins the event (the Python's list was let go).
                    assert_eq!(orphans.len(), blanks + 1);
                    assert_eq!(events[0], [EV1, b"more"].join(&b'\n'));
                }
            }
        }
    }

    #[test]
    fn blank_lines_that_cannot_be_joined_are_not_held() {
        let mut a = Assembler::new();
        let mut orphans = 0;
        a.feed(EV1, |_| {});
        for _ in 0..100_000 {
            a.feed(b"   ", |p| {
                assert!(matches!(p, Piece::Orphan(b"   ")));
                orphans += 1;
            });
            assert!(a.blank_ends.len() < MAX_CONTINUATION_LINES);
        }
        // The first 255 were held, then given out with the 256th, which no line can join.
        assert_eq!(orphans, 100_000);
        let mut out = Vec::new();
        a.feed(EV2, push(&mut out));
        assert_eq!(out, vec![e(&[EV1])]);
    }

    #[test]
    fn flush_gives_the_blanks_then_the_event() {
        let lines: [&[u8]; 3] = [EV1, b"", b" "];
        assert_eq!(run(&lines), vec![o(b""), o(b" "), e(&[EV1])]);
    }

    #[test]
    fn an_event_line_holding_newlines_is_one_line() {
        // A docker record's log may hold "\n": still one line of the event.
        let first: &[u8] = b"2024/01/01 00:00:00 [error] 1#1: a\nb";
        let lines: [&[u8]; 2] = [first, b"c\nd"];
        assert_eq!(run(&lines), vec![e(&[first, b"c\nd"])]);
    }

    #[test]
    fn matches_the_python_model_on_random_lines() {
        let alphabet: [&[u8]; 9] = [
            EV1,
            EV2,
            b"cont",
            b"",
            b" ",
            b"\t",
            b"\xc2\xa0",
            b"x\ny",
            b"\xff",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for round in 0..300 {
            let count = [10, 100, 600][round % 3];
            let weights = [1 + next(3), 1, 1 + next(20), 1 + next(40), 1, 1, 1, 1, 1];
            let total: usize = weights.iter().sum();
            let lines: Vec<&[u8]> = (0..count)
                .map(|_| {
                    let mut pick = next(total);
                    let mut i = 0;
                    while pick >= weights[i] {
                        pick -= weights[i];
                        i += 1;
                    }
                    alphabet[i]
                })
                .collect();
            let mut a = Assembler::new();
            let mut out = Vec::new();
            for (i, line) in lines.iter().enumerate() {
                if i % 50 == 7 {
                    let mut w = Writer::default();
                    a.save(&mut w);
                    a = Assembler::load(&mut Reader::new(&w.buf)).unwrap();
                }
                a.feed(line, push(&mut out));
            }
            a.flush(push(&mut out));
            assert_eq!(split(&out), model(&lines));
        }
    }

    #[test]
    fn state_round_trips() {
        let mut a = Assembler::new();
        feed_all(&mut a, &[EV1, b"cont", b"", b" "]);
        let mut w = Writer::default();
        a.save(&mut w);
        let mut r = Reader::new(&w.buf);
        let mut b = Assembler::load(&mut r).unwrap();
        assert!(r.buf.is_empty());
        assert!(b.has_pending());
        assert_eq!(
            feed_all(&mut b, &[b"x", EV2]),
            vec![e(&[EV1, b"cont", b"", b" ", b"x"])]
        );
        let mut w = Writer::default();
        Assembler::new().save(&mut w);
        assert!(!Assembler::load(&mut Reader::new(&w.buf))
            .unwrap()
            .has_pending());
        // Blank lines without an event are no state the assembler makes.
        let mut w = Writer::default();
        w.usize(0);
        w.bytes(b"");
        w.usize(1);
        w.bytes(b" ");
        w.bool(false);
        assert!(Assembler::load(&mut Reader::new(&w.buf)).is_err());
        assert!(Assembler::load(&mut Reader::new(&[1])).is_err());
    }
}
