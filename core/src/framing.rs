//! Line framing: a byte stream in, complete lines out (port of retrywatch/framing.py).
//!
//! CONTRACT (the rest of the core relies on it):
//! - `Framer::feed(chunk, on_line)` calls `on_line(&[u8])` once per complete line, in
//!   order, without its `\n`, with one trailing `\r` removed (CRLF), with every NUL byte
//!   removed. The unfinished last line is carried to the next call. Returns how many
//!   over-long lines (> max_line bytes) were skipped: each over-long line is counted
//!   exactly once, whether it ends in this chunk or spans many, and dropped to its end.
//! - `Framer::flush(on_line)`: end of input, the carried partial line (if non-empty,
//!   its trailing `\r` removed) as a last line.
//! - `Framer::release(on_line)`: a quiet source, the same, except that an over-long line
//!   being dropped stays dropped to its end (it is counted once, however slowly it comes).
//! - `frame_datagram(payload, max_line)`: one record = one line (see the Python).
//!
//! Lines inside a chunk are handed out borrowed from the chunk (no copy); only the line
//! that spans chunks is assembled in the carried buffer, and a chunk holding NUL bytes
//! is copied once without them.

use std::borrow::Cow;

use memchr::{memchr, memchr_iter};

use crate::snapshot::{Reader, Result, Writer};

/// Splits a byte stream into lines, carrying the partial last line between chunks.
#[derive(Debug, Clone)]
pub struct Framer {
    max_line: usize,
    /// The unfinished last line (never longer than `max_line` plus one `\r`).
    pending: Vec<u8>,
    /// Inside an over-long line (already counted), dropping bytes up to its end.
    skipping: bool,
    /// Reused buffer for a chunk with its NUL bytes removed.
    scratch: Vec<u8>,
}

/// The length of `line` without one trailing `\r`.
#[inline]
fn without_cr(line: &[u8]) -> usize {
    line.len() - usize::from(line.last() == Some(&b'\r'))
}

/// A complete line from inside a chunk: its `\r` removed, skipped when over-long.
#[inline]
fn emit<F: FnMut(&[u8])>(line: &[u8], max_line: usize, too_long: &mut u64, on_line: &mut F) {
    let line = &line[..without_cr(line)];
    if line.len() > max_line {
        *too_long += 1;
    } else {
        on_line(line);
    }
}

impl Framer {
    pub fn new(max_line: usize) -> Self {
        Framer {
            max_line,
            pending: Vec::new(),
            skipping: false,
            scratch: Vec::new(),
        }
    }

    pub fn max_line(&self) -> usize {
        self.max_line
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Calls `on_line` for each complete line in order (no `\n`, one trailing `\r`
    /// removed, NUL bytes removed); returns the number of over-long lines skipped (each
    /// counted exactly once).
    pub fn feed<F: FnMut(&[u8])>(&mut self, chunk: &[u8], mut on_line: F) -> u64 {
        if memchr(0, chunk).is_none() {
            return self.feed_clean(chunk, &mut on_line);
        }
        let mut clean = std::mem::take(&mut self.scratch);
        clean.clear();
        let mut rest = chunk;
        while let Some(nul) = memchr(0, rest) {
            clean.extend_from_slice(&rest[..nul]);
            rest = &rest[nul + 1..];
        }
        clean.extend_from_slice(rest);
        let too_long = self.feed_clean(&clean, &mut on_line);
        self.scratch = clean;
        too_long
    }

    fn feed_clean<F: FnMut(&[u8])>(&mut self, data: &[u8], on_line: &mut F) -> u64 {
        let max_line = self.max_line;
        let mut too_long = 0u64;
        let Some(first_nl) = memchr(b'\n', data) else {
            // No line ends here: the line in progress grows (unless it is being dropped).
            if !self.skipping {
                let ends_cr = match data.last() {
                    Some(&b) => b == b'\r',
                    None => self.pending.last() == Some(&b'\r'),
                };
                let size = self.pending.len() + data.len() - usize::from(ends_cr);
                if size > max_line {
                    too_long += 1;
                    self.pending.clear();
                    self.skipping = true;
                } else {
                    self.pending.extend_from_slice(data);
                }
            }
            return too_long;
        };
        // The first line ending here: the rest of a dropped line, the end of the carried
        // one, or a line of its own.
        let first = &data[..first_nl];
        if self.skipping {
            self.skipping = false;
        } else if !self.pending.is_empty() {
            let ends_cr = match first.last() {
                Some(&b) => b == b'\r',
                None => self.pending.last() == Some(&b'\r'),
            };
            let size = self.pending.len() + first.len() - usize::from(ends_cr);
            if size > max_line {
                too_long += 1;
            } else {
                self.pending.extend_from_slice(first);
                self.pending.truncate(size);
                on_line(&self.pending);
            }
            self.pending.clear();
        } else {
            emit(first, max_line, &mut too_long, on_line);
        }
        let base = first_nl + 1;
        let mut start = base;
        for nl in memchr_iter(b'\n', &data[base..]) {
            let end = base + nl;
            emit(&data[start..end], max_line, &mut too_long, on_line);
            start = end + 1;
        }
        // The unfinished last line is carried, unless it is already too long.
        let tail = &data[start..];
        if without_cr(tail) > max_line {
            too_long += 1;
            self.skipping = true;
        } else {
            self.pending.extend_from_slice(tail);
        }
        too_long
    }

    /// End of input: the carried partial line (if any) as a last line; returns too_long
    /// (always 0: a carried line is never over-long). An over-long line being dropped
    /// ends here: what comes next is a new line.
    pub fn flush<F: FnMut(&[u8])>(&mut self, on_line: F) -> u64 {
        let too_long = self.release(on_line);
        self.skipping = false;
        too_long
    }

    /// A quiet source: the carried partial line (if any) as a line, as `flush` gives it;
    /// but an over-long line being dropped (already counted) stays dropped up to its end,
    /// so its rest, whenever it comes, is never counted again.
    pub fn release<F: FnMut(&[u8])>(&mut self, mut on_line: F) -> u64 {
        if !self.pending.is_empty() {
            let n = without_cr(&self.pending);
            on_line(&self.pending[..n]);
            self.pending.clear();
        }
        0
    }

    /// Whether an over-long line (already counted) is being dropped up to its end.
    pub fn dropping(&self) -> bool {
        self.skipping
    }

    pub fn save(&self, w: &mut Writer) {
        w.bytes(&self.pending);
        w.bool(self.skipping);
    }

    pub fn load(r: &mut Reader<'_>, max_line: usize) -> Result<Self> {
        let pending = r.bytes()?.to_vec();
        let skipping = r.bool()?;
        Ok(Framer {
            max_line,
            pending,
            skipping,
            scratch: Vec::new(),
        })
    }
}

/// A datagram framed as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datagram<'a> {
    Line(Cow<'a, [u8]>),
    TooLong,
}

/// A datagram is one record: NUL bytes removed, trailing line ends dropped, a line break
/// inside kept visible as the two characters `\n`; never joined to the next.
pub fn frame_datagram(payload: &[u8], max_line: usize) -> Datagram<'_> {
    if payload.len() > max_line {
        return Datagram::TooLong;
    }
    let mut line: Cow<'_, [u8]> = if memchr(0, payload).is_some() {
        Cow::Owned(payload.iter().copied().filter(|&b| b != 0).collect())
    } else {
        Cow::Borrowed(payload)
    };
    let end = line
        .iter()
        .rposition(|&b| b != b'\r' && b != b'\n')
        .map_or(0, |i| i + 1);
    match &mut line {
        Cow::Borrowed(b) => *b = &b[..end],
        Cow::Owned(v) => v.truncate(end),
    }
    if memchr(b'\n', &line).is_none() {
        return Datagram::Line(line);
    }
    // `replace(b"\r\n", b"\\n")` then `replace(b"\n", b"\\n")`.
    let mut out = Vec::with_capacity(line.len() + 8);
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b'\r' if line.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\\n");
                i += 2;
            }
            b'\n' => {
                out.extend_from_slice(b"\\n");
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Datagram::Line(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A literal port of the Python `LineFramer` (copies everything), the model the
    /// framer is checked against.
    struct Model {
        max_line: usize,
        pending: Vec<u8>,
        skipping: bool,
    }

    impl Model {
        fn new(max_line: usize) -> Self {
            Model {
                max_line,
                pending: Vec::new(),
                skipping: false,
            }
        }

        fn check_pending(&mut self) -> u64 {
            let size = self.pending.len() - usize::from(self.pending.ends_with(b"\r"));
            if size > self.max_line {
                self.pending.clear();
                self.skipping = true;
                return 1;
            }
            0
        }

        fn feed(&mut self, chunk: &[u8]) -> (Vec<Vec<u8>>, u64) {
            let chunk: Vec<u8> = chunk.iter().copied().filter(|&b| b != 0).collect();
            if !chunk.contains(&b'\n') {
                if self.skipping {
                    self.pending.clear();
                } else {
                    self.pending.extend_from_slice(&chunk);
                }
                return (Vec::new(), self.check_pending());
            }
            let mut lines: Vec<Vec<u8>> =
                chunk.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let partial = lines.pop().unwrap_or_default();
            if self.skipping {
                self.skipping = false;
                lines.remove(0);
            } else if !self.pending.is_empty() {
                let mut first = self.pending.clone();
                first.extend_from_slice(&lines[0]);
                lines[0] = first;
            }
            if chunk.contains(&b'\r') || self.pending.ends_with(b"\r") {
                for line in &mut lines {
                    if line.ends_with(b"\r") {
                        line.pop();
                    }
                }
            }
            self.pending = partial;
            let before = lines.len();
            lines.retain(|l| l.len() <= self.max_line);
            let too_long = (before - lines.len()) as u64;
            (lines, too_long + self.check_pending())
        }

        fn flush(&mut self) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            if !self.pending.is_empty() {
                let mut line = std::mem::take(&mut self.pending);
                if line.ends_with(b"\r") {
                    line.pop();
                }
                out.push(line);
            }
            self.skipping = false;
            out
        }
    }

    fn feed(framer: &mut Framer, chunk: &[u8]) -> (Vec<Vec<u8>>, u64) {
        let mut lines = Vec::new();
        let too_long = framer.feed(chunk, |l| lines.push(l.to_vec()));
        (lines, too_long)
    }

    fn flush(framer: &mut Framer) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        assert_eq!(framer.flush(|l| lines.push(l.to_vec())), 0);
        lines
    }

    /// All lines and the too-long count of feeding `chunks` then flushing.
    fn frame(chunks: &[&[u8]], max_line: usize) -> (Vec<Vec<u8>>, u64) {
        let mut framer = Framer::new(max_line);
        let mut lines = Vec::new();
        let mut too_long = 0;
        for chunk in chunks {
            too_long += framer.feed(chunk, |l| lines.push(l.to_vec()));
        }
        too_long += framer.flush(|l| lines.push(l.to_vec()));
        assert_eq!(framer.pending_bytes(), 0);
        (lines, too_long)
    }

    fn v(lines: &[&[u8]]) -> Vec<Vec<u8>> {
        lines.iter().map(|l| l.to_vec()).collect()
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn lf_crlf_and_mixed_line_ends() {
        assert_eq!(frame(&[b"one\ntwo\n"], 100), (v(&[b"one", b"two"]), 0));
        assert_eq!(frame(&[b"one\r\ntwo\r\n"], 100), (v(&[b"one", b"two"]), 0));
        assert_eq!(frame(&[b"a\nb\r\nc\n"], 100), (v(&[b"a", b"b", b"c"]), 0));
    }

    #[test]
    fn lone_cr_is_kept_and_only_one_cr_is_the_line_end() {
        assert_eq!(frame(&[b"a\rb\n"], 100), (v(&[b"a\rb"]), 0));
        assert_eq!(frame(&[b"a\r\r\nb\n"], 100), (v(&[b"a\r", b"b"]), 0));
    }

    #[test]
    fn blank_lines_are_lines() {
        assert_eq!(
            frame(&[b"a\n\n\r\nb\n"], 100),
            (v(&[b"a", b"", b"", b"b"]), 0)
        );
    }

    #[test]
    fn cr_at_a_chunk_end() {
        let mut framer = Framer::new(100);
        assert_eq!(feed(&mut framer, b"one\r"), (vec![], 0));
        assert_eq!(framer.pending_bytes(), 4);
        assert_eq!(feed(&mut framer, b"\ntwo\r\n"), (v(&[b"one", b"two"]), 0));
        // A CR that is no line end after all.
        assert_eq!(feed(&mut framer, b"x\r"), (vec![], 0));
        assert_eq!(feed(&mut framer, b"y\n"), (v(&[b"x\ry"]), 0));
    }

    #[test]
    fn nul_bytes_are_dropped() {
        let chunks: [&[u8]; 1] = [b"\x00\x00ab\x00c\n\x00\x00\x00d\n"];
        assert_eq!(frame(&chunks, 100), (v(&[b"abc", b"d"]), 0));
        // NUL bytes are no part of a line's size.
        assert_eq!(frame(&[b"ab\x00\x00\x00c\n"], 3), (v(&[b"abc"]), 0));
        let mut framer = Framer::new(100);
        assert_eq!(feed(&mut framer, b"\x00"), (vec![], 0));
        assert_eq!(framer.pending_bytes(), 0);
        assert_eq!(feed(&mut framer, b"a\x00"), (vec![], 0));
        assert_eq!(framer.pending_bytes(), 1);
    }

    #[test]
    fn partial_line_is_carried_to_the_next_chunk() {
        let mut framer = Framer::new(100);
        assert_eq!(feed(&mut framer, b"2024/01/01 00:00:00 [err"), (vec![], 0));
        assert_eq!(framer.pending_bytes(), 24);
        let out = feed(&mut framer, b"or] 1#1: x\nnext");
        assert_eq!(out, (v(&[b"2024/01/01 00:00:00 [error] 1#1: x"]), 0));
        assert_eq!(framer.pending_bytes(), 4);
        assert_eq!(flush(&mut framer), v(&[b"next"]));
    }

    #[test]
    fn empty_chunks_change_nothing() {
        assert_eq!(frame(&[b"", b"a", b"", b"\n", b""], 100), (v(&[b"a"]), 0));
    }

    #[test]
    fn flush_gives_the_final_line_without_its_cr() {
        let mut framer = Framer::new(100);
        assert_eq!(feed(&mut framer, b"a\nb\r"), (v(&[b"a"]), 0));
        assert_eq!(flush(&mut framer), v(&[b"b"]));
        assert_eq!(flush(&mut framer), Vec::<Vec<u8>>::new());
        // A final lone "\r" is an empty line (the Python's `if self._pending`).
        assert_eq!(feed(&mut framer, b"\r"), (vec![], 0));
        assert_eq!(flush(&mut framer), v(&[b""]));
        // Reusable after flush.
        assert_eq!(feed(&mut framer, b"c"), (vec![], 0));
        assert_eq!(flush(&mut framer), v(&[b"c"]));
        assert_eq!(feed(&mut framer, b"d\n"), (v(&[b"d"]), 0));
        assert_eq!(flush(&mut framer), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn over_long_line_in_one_chunk() {
        let mut framer = Framer::new(10);
        let out = feed(&mut framer, b"short\nxxxxxxxxxxx\nnext\n");
        assert_eq!(out, (v(&[b"short", b"next"]), 1));
        // Exactly max_line is kept; its CR is no byte of it.
        assert_eq!(
            frame(&[b"xxxxxxxxxx\r\nnext\n"], 10),
            (v(&[b"xxxxxxxxxx", b"next"]), 0)
        );
        // Several in one chunk, the first and the last too.
        let data = b"yyyyyyyyyyyy\nok\nzzzzzzzzzzzz\nok2\nwwwwwwwwwwwwww";
        assert_eq!(frame(&[data], 10), (v(&[b"ok", b"ok2"]), 3));
    }

    #[test]
    fn over_long_line_across_chunks_is_counted_once() {
        let mut framer = Framer::new(10);
        let outs = [
            feed(&mut framer, b"xxxxxxxx"),
            feed(&mut framer, b"xxxxxxxx"),
            feed(&mut framer, &[b'x'; 30]),
            feed(&mut framer, b"xx\nnext\n"),
        ];
        assert_eq!(outs.iter().map(|o| o.1).sum::<u64>(), 1);
        assert_eq!(
            outs.iter().flat_map(|o| o.0.clone()).collect::<Vec<_>>(),
            v(&[b"next"])
        );
        assert_eq!(flush(&mut framer), Vec::<Vec<u8>>::new());
        // Carried line plus the first line of the next chunk over the limit.
        let mut framer = Framer::new(10);
        assert_eq!(feed(&mut framer, b"xxxxxx"), (vec![], 0));
        assert_eq!(feed(&mut framer, b"xxxxx\nok\n"), (v(&[b"ok"]), 1));
        // Ending exactly at a chunk end, then the line end alone.
        let mut framer = Framer::new(10);
        assert_eq!(feed(&mut framer, &[b'y'; 20]), (vec![], 1));
        assert_eq!(feed(&mut framer, b"\n"), (vec![], 0));
        assert_eq!(feed(&mut framer, b"next\n"), (v(&[b"next"]), 0));
        // Counted at once, even when no line end ever comes.
        assert_eq!(frame(&[b"a\nxxxxxxxxxxx"], 10), (v(&[b"a"]), 1));
        // A CR at the end of a carried line of max_line bytes is no byte of it.
        let mut framer = Framer::new(3);
        assert_eq!(feed(&mut framer, b"abc\r"), (vec![], 0));
        assert_eq!(feed(&mut framer, b"\n"), (v(&[b"abc"]), 0));
    }

    #[test]
    fn flush_in_the_middle_of_an_over_long_line_ends_it() {
        let mut framer = Framer::new(10);
        assert_eq!(feed(&mut framer, &[b'x'; 20]), (vec![], 1));
        assert_eq!(flush(&mut framer), Vec::<Vec<u8>>::new());
        assert_eq!(feed(&mut framer, b"next\n"), (v(&[b"next"]), 0));
    }

    #[test]
    fn release_keeps_an_over_long_line_dropped_to_its_end() {
        // A 10 MB line written slowly, with quiet spells (releases) between its parts:
        // counted once, and its end is no line of its own.
        let mut framer = Framer::new(64 * 1024);
        let part = vec![b'x'; 2_500_000];
        let mut lines = Vec::new();
        let mut too_long = 0;
        for _ in 0..4 {
            too_long += framer.feed(&part, |l| lines.push(l.to_vec()));
            too_long += framer.release(|l| lines.push(l.to_vec()));
            assert!(framer.dropping());
            assert_eq!(framer.pending_bytes(), 0);
        }
        too_long += framer.feed(b"\nnext\n", |l| lines.push(l.to_vec()));
        assert_eq!((lines, too_long), (v(&[b"next"]), 1));
        assert!(!framer.dropping());
        // A short partial line is released as a line, as flush gives it.
        let mut framer = Framer::new(10);
        assert_eq!(feed(&mut framer, b"ab\r"), (vec![], 0));
        let mut released = Vec::new();
        assert_eq!(framer.release(|l| released.push(l.to_vec())), 0);
        assert_eq!(released, v(&[b"ab"]));
        // flush ends a dropped line: what follows is a new line.
        let mut framer = Framer::new(10);
        assert_eq!(feed(&mut framer, &[b'x'; 20]), (vec![], 1));
        assert_eq!(framer.release(|_| panic!("nothing held")), 0);
        assert!(framer.dropping());
        assert_eq!(flush(&mut framer), Vec::<Vec<u8>>::new());
        assert_eq!(feed(&mut framer, b"rest\n"), (v(&[b"rest"]), 0));
    }

    const SAMPLES: [&[u8]; 6] = [
        b"first line\r\nsecond\n\nthird\rx\nlast without end",
        b"a\nyyyyyyyyyyyyyyyyyyyyyyyyy\nb\nzzzzzzzzzzz\nc",
        b"\r\n\r\r\n\x00x\x00\nxxxxxxxxxx\r\nxxxxxxxxxx\r\r\n",
        b"0123456789\n01234567890\n\x00\x000123456789\x00\n",
        b"\n\n\n",
        b"ab\rcd\r",
    ];

    #[test]
    fn every_split_equals_one_feed() {
        for data in SAMPLES {
            for max_line in [0, 1, 3, 10, 100] {
                let whole = frame(&[data], max_line);
                assert_eq!(frame(&data.chunks(1).collect::<Vec<_>>(), max_line), whole);
                for size in 1..=data.len() {
                    let chunks: Vec<&[u8]> = data.chunks(size).collect();
                    assert_eq!(frame(&chunks, max_line), whole, "size {size}");
                }
                for a in 0..=data.len() {
                    for b in a..=data.len() {
                        let chunks = [&data[..a], &data[a..b], &data[b..]];
                        assert_eq!(frame(&chunks, max_line), whole, "cuts {a} {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn matches_the_python_model_on_random_streams() {
        let alphabet: [&[u8]; 8] = [b"a", b"b", b"\r", b"\n", b"\x00", b"\r\n", b"xyz", b"\xff"];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..3000 {
            let max_line = rng.below(9);
            let data: Vec<u8> = (0..rng.below(60))
                .flat_map(|_| alphabet[rng.below(alphabet.len())].to_vec())
                .collect();
            let mut framer = Framer::new(max_line);
            let mut model = Model::new(max_line);
            let mut rest = &data[..];
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(rng.below(rest.len() + 1));
                rest = tail;
                assert_eq!(feed(&mut framer, chunk), model.feed(chunk), "{data:?}");
                assert_eq!(framer.pending_bytes(), model.pending.len());
                if rng.below(5) == 0 {
                    let mut w = Writer::default();
                    framer.save(&mut w);
                    framer = Framer::load(&mut Reader::new(&w.buf), max_line).unwrap();
                }
            }
            assert_eq!(flush(&mut framer), model.flush());
        }
    }

    #[test]
    fn plain_lines_are_borrowed_from_the_chunk() {
        let chunk = b"a\nbc\n";
        let mut framer = Framer::new(100);
        let base = chunk.as_ptr() as usize;
        let mut at = Vec::new();
        framer.feed(chunk, |l| at.push(l.as_ptr() as usize - base));
        assert_eq!(at, vec![0, 2]);
    }

    #[test]
    fn state_round_trips() {
        for (chunk, pending) in [(&b"abc"[..], 3), (&[b'x'; 20][..], 0)] {
            let mut framer = Framer::new(10);
            feed(&mut framer, chunk);
            let mut w = Writer::default();
            framer.save(&mut w);
            let mut r = Reader::new(&w.buf);
            let mut loaded = Framer::load(&mut r, 10).unwrap();
            assert!(r.buf.is_empty());
            assert_eq!(loaded.max_line(), 10);
            assert_eq!(loaded.pending_bytes(), pending);
            assert_eq!(feed(&mut loaded, b"d\ne\n"), feed(&mut framer, b"d\ne\n"));
        }
        assert!(Framer::load(&mut Reader::new(&[5, b'a']), 10).is_err());
    }

    #[test]
    fn datagrams() {
        let line = |p: &[u8], max| match frame_datagram(p, max) {
            Datagram::Line(l) => Some(l.into_owned()),
            Datagram::TooLong => None,
        };
        assert_eq!(line(b"abc", 3), Some(b"abc".to_vec()));
        assert_eq!(line(b"abcd", 3), None);
        // The limit is on the datagram as it came (NUL bytes and line ends included).
        assert_eq!(line(b"ab\x00\x00", 3), None);
        assert_eq!(line(b"ab\n\n", 3), None);
        assert_eq!(line(b"a\x00b\r\n\r\n\n", 100), Some(b"ab".to_vec()));
        assert_eq!(line(b"\r\n", 100), Some(b"".to_vec()));
        assert_eq!(line(b"", 0), Some(b"".to_vec()));
        // A line break inside stays visible as `\n`; a lone CR stays as it is.
        assert_eq!(
            line(b"a\nb\r\nc\rd\r\r\ne\n", 100),
            Some(b"a\\nb\\nc\rd\r\\ne".to_vec())
        );
        assert_eq!(line(b"a\rb\r", 100), Some(b"a\rb".to_vec()));
        assert!(matches!(
            frame_datagram(b"plain\n", 100),
            Datagram::Line(Cow::Borrowed(b"plain"))
        ));
    }
}
