//! Removing the wrappers around nginx error lines: syslog (RFC 3164 as nginx writes it,
//! RFC 5424), journal prefixes, CRI (with `P` joining), docker json-file, compose
//! prefixes (port of retrywatch/wrappers.py; shapes documented in parsers/wrappers.toml).
//!
//! Each shape of parsers/wrappers.toml is a hand-written matcher here, with the same
//! groups. The Python matches the *decoded* line (invalid UTF-8 as `\xNN` escapes) with
//! the `regex` module, whose `\d`, `\w` and `\s` are Unicode classes; the matchers below
//! read UTF-8 characters from the bytes and treat an invalid byte as its escape would
//! match (never a digit, word or space character). Text that pieces are joined into is
//! kept as the Python's text: an invalid byte of a joined piece becomes the four
//! characters `\xNN`, which decode to what the Python holds.

use std::borrow::Cow;

use foldhash::{HashMap, HashSet};
use memchr::{memchr, memchr2};

use crate::snapshot::{Reader, Result, SnapshotError, Writer};
use crate::text::{decode_escaped, is_event_start};

/// Wrappers nest (a journal prefix inside a syslog message): unwrapped up to 3 times.
const MAX_DEPTH: usize = 3;
/// `piece[:200]`: how much of an over-long piece is kept in its broken record.
const BROKEN_CHARS: usize = 200;

/// The wrappers, in the order of parsers/wrappers.toml (the order they are tried in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Cri,
    DockerJson,
    Rfc5424,
    Rfc3164,
    Journal,
    Compose,
}

const ORDER: [Kind; 6] = [
    Kind::Cri,
    Kind::DockerJson,
    Kind::Rfc5424,
    Kind::Rfc3164,
    Kind::Journal,
    Kind::Compose,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Cri => "cri",
            Kind::DockerJson => "docker_json",
            Kind::Rfc5424 => "rfc5424",
            Kind::Rfc3164 => "rfc3164",
            Kind::Journal => "journal",
            Kind::Compose => "compose",
        }
    }

    /// `_DEFINITE`: an unmistakable shape; the others must reveal an nginx line.
    fn definite(self) -> bool {
        matches!(
            self,
            Kind::Cri | Kind::DockerJson | Kind::Rfc5424 | Kind::Rfc3164
        )
    }

    fn index(self) -> usize {
        ORDER.iter().position(|&k| k == self).unwrap_or(0)
    }
}

// -- characters ----------------------------------------------------------------------

/// One character of the text the Python matches: a UTF-8 character, or an invalid byte
/// (the Python sees its `\xNN` escape: a backslash first, so never a digit, word or
/// space character, and always a non-space one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Char(char),
    Bad,
}

/// The character at the start of `s` (not empty, first byte not ASCII) and its length.
fn non_ascii(s: &[u8]) -> (Unit, usize) {
    let head = &s[..s.len().min(4)];
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(err) => std::str::from_utf8(&head[..err.valid_up_to()]).unwrap_or_default(),
    };
    match valid.chars().next() {
        Some(c) => (Unit::Char(c), c.len_utf8()),
        None => (Unit::Bad, 1),
    }
}

#[inline]
fn unit_at(s: &[u8], i: usize) -> Option<(Unit, usize)> {
    let b = *s.get(i)?;
    if b < 0x80 {
        Some((Unit::Char(char::from(b)), 1))
    } else {
        Some(non_ascii(&s[i..]))
    }
}

fn in_ranges(c: char, ranges: &[(u32, u32)]) -> bool {
    let c = u32::from(c);
    ranges
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// `\d` of the `regex` module: a Unicode decimal digit.
fn is_digit(u: Unit) -> bool {
    match u {
        Unit::Char(c) if c.is_ascii() => c.is_ascii_digit(),
        Unit::Char(c) => in_ranges(c, DIGIT_RANGES),
        Unit::Bad => false,
    }
}

/// `\s` of the `regex` module: Unicode White_Space (25 characters, as Rust's).
fn is_space(u: Unit) -> bool {
    matches!(u, Unit::Char(c) if c.is_whitespace())
}

/// `\w` of the `regex` module.
fn is_word(u: Unit) -> bool {
    match u {
        Unit::Char(c) if c.is_ascii() => c.is_ascii_alphanumeric() || c == '_',
        Unit::Char(c) => in_ranges(c, WORD_RANGES),
        Unit::Bad => false,
    }
}

/// A cursor over the bytes of a line, matching the pieces of a wrapper's shape.
struct Scan<'s> {
    s: &'s [u8],
    i: usize,
}

impl<'s> Scan<'s> {
    fn new(s: &'s [u8], i: usize) -> Self {
        Scan { s, i }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn byte(&mut self, b: u8) -> Option<()> {
        if self.peek() == Some(b) {
            self.i += 1;
            Some(())
        } else {
            None
        }
    }

    fn bytes(&mut self, lit: &[u8]) -> Option<()> {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            Some(())
        } else {
            None
        }
    }

    fn byte_in(&mut self, lo: u8, hi: u8) -> Option<()> {
        match self.peek() {
            Some(b) if (lo..=hi).contains(&b) => {
                self.i += 1;
                Some(())
            }
            _ => None,
        }
    }

    /// One character matching `pred`.
    fn one(&mut self, pred: impl Fn(Unit) -> bool) -> Option<()> {
        let (u, n) = unit_at(self.s, self.i)?;
        if pred(u) {
            self.i += n;
            Some(())
        } else {
            None
        }
    }

    /// Up to `max` characters matching `pred` (greedy); how many.
    fn run_max(&mut self, max: usize, pred: impl Fn(Unit) -> bool) -> usize {
        let mut count = 0;
        while count < max {
            match unit_at(self.s, self.i) {
                Some((u, n)) if pred(u) => {
                    self.i += n;
                    count += 1;
                }
                _ => break,
            }
        }
        count
    }

    /// `pred+` (greedy): at least one character.
    fn run1(&mut self, pred: impl Fn(Unit) -> bool) -> Option<()> {
        (self.run_max(usize::MAX, pred) > 0).then_some(())
    }

    /// `\d{n}`.
    fn digits(&mut self, n: usize) -> Option<()> {
        (self.run_max(n, is_digit) == n).then_some(())
    }

    /// `\d{2}:\d{2}:\d{2}`.
    fn clock(&mut self) -> Option<()> {
        self.digits(2)?;
        self.byte(b':')?;
        self.digits(2)?;
        self.byte(b':')?;
        self.digits(2)
    }

    /// `[A-Z][a-z]{2}\x20[\x20\d]\d\x20\d{2}:\d{2}:\d{2}` (a BSD syslog time).
    fn bsd_time(&mut self) -> Option<()> {
        self.byte_in(b'A', b'Z')?;
        self.byte_in(b'a', b'z')?;
        self.byte_in(b'a', b'z')?;
        self.byte(b' ')?;
        self.one(|u| u == Unit::Char(' ') || is_digit(u))?;
        self.one(is_digit)?;
        self.byte(b' ')?;
        self.clock()
    }

    /// `<\d{1,3}>`.
    fn pri(&mut self) -> Option<()> {
        self.byte(b'<')?;
        if self.run_max(3, is_digit) == 0 {
            return None;
        }
        self.byte(b'>')
    }

    /// `(?:\[\d+\])?:\x20`: an optional process id, then the colon and space.
    fn procid_colon(&mut self) -> Option<()> {
        if self.peek() == Some(b'[') {
            self.i += 1;
            self.run1(is_digit)?;
            self.byte(b']')?;
        }
        self.bytes(b": ")
    }
}

// -- the shapes of parsers/wrappers.toml ---------------------------------------------

/// What a shape matched: where its `payload` group starts (it always runs to the end of
/// the text; `None` when the optional group did not take part), and CRI's groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Match {
    payload: Option<usize>,
    stdout: bool,
    partial: bool,
}

impl Match {
    fn payload(at: usize) -> Self {
        Match {
            payload: Some(at),
            stdout: false,
            partial: false,
        }
    }

    /// `m.group("payload") or ""`.
    fn payload_start(&self, text: &[u8]) -> usize {
        self.payload.unwrap_or(text.len())
    }
}

/// cri: `TS\x20(stdout|stderr)\x20[PF](?:\x20(?P<payload>.*))?\Z`, TS being
/// `\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})`.
fn match_cri(s: &[u8]) -> Option<Match> {
    let mut p = Scan::new(s, 0);
    p.digits(4)?;
    p.byte(b'-')?;
    p.digits(2)?;
    p.byte(b'-')?;
    p.digits(2)?;
    p.byte(b'T')?;
    p.clock()?;
    if p.peek() == Some(b'.') {
        p.i += 1;
        p.run1(is_digit)?;
    }
    match p.peek()? {
        b'Z' => p.i += 1,
        b'+' | b'-' => {
            p.i += 1;
            p.digits(2)?;
            p.byte(b':')?;
            p.digits(2)?;
        }
        _ => return None,
    }
    p.byte(b' ')?;
    let stdout = if p.bytes(b"stdout").is_some() {
        true
    } else {
        p.bytes(b"stderr")?;
        false
    };
    p.byte(b' ')?;
    let partial = match p.peek()? {
        b'P' => true,
        b'F' => false,
        _ => return None,
    };
    p.i += 1;
    let payload = if p.at_end() {
        None
    } else {
        p.byte(b' ')?;
        Some(p.i)
    };
    Some(Match {
        payload,
        stdout,
        partial,
    })
}

/// docker_json: `^\{.*"log"\s*:` (the record itself is read by [`parse_docker`]).
fn match_docker(s: &[u8]) -> bool {
    if s.first() != Some(&b'{') {
        return false;
    }
    memchr::memchr_iter(b'"', &s[1..]).any(|at| {
        let at = 1 + at;
        s[at..].starts_with(b"\"log\"") && {
            let mut p = Scan::new(s, at + 5);
            p.run_max(usize::MAX, is_space);
            p.peek() == Some(b':')
        }
    })
}

/// One RFC 5424 SD-ELEMENT at `i` (`s[i]` is `[`):
/// `\[(?:[^\]"\\]|\\.|"(?:[^"\\]|\\.)*")*\]`; where it ends.
fn sd_element(s: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        match *s.get(i)? {
            b']' => return Some(i + 1),
            b'\\' => i += 1 + unit_at(s, i + 1)?.1,
            b'"' => {
                i += 1;
                loop {
                    match *s.get(i)? {
                        b'"' => break,
                        b'\\' => i += 1 + unit_at(s, i + 1)?.1,
                        _ => i += unit_at(s, i)?.1,
                    }
                }
                i += 1;
            }
            _ => i += unit_at(s, i)?.1,
        }
    }
}

/// rfc5424: `<PRI>1 TS HOST APP PROCID MSGID SD[ [BOM]MSG]`, the five fields `\S+`, SD
/// `-` or SD-ELEMENTs, BOM `\xEF\xBB\xBF|\ufeff`. In the Python's text pattern
/// `\xEF\xBB\xBF` is the three characters "ï»¿" (UTF-8 C3 AF C2 BB C2 BF) and `\ufeff`
/// the BOM itself (UTF-8 EF BB BF).
fn match_rfc5424(s: &[u8]) -> Option<Option<usize>> {
    let mut p = Scan::new(s, 0);
    p.pri()?;
    p.bytes(b"1 ")?;
    for _ in 0..5 {
        p.run1(|u| !is_space(u))?;
        p.byte(b' ')?;
    }
    if p.peek() == Some(b'-') {
        p.i += 1;
    } else {
        if p.peek() != Some(b'[') {
            return None;
        }
        while p.peek() == Some(b'[') {
            p.i = sd_element(s, p.i)?;
        }
    }
    if p.at_end() {
        return Some(None);
    }
    p.byte(b' ')?;
    if p.bytes("\u{ef}\u{bb}\u{bf}".as_bytes()).is_none() {
        let _ = p.bytes("\u{feff}".as_bytes());
    }
    Some(Some(p.i))
}

/// rfc3164's `(?P<tag>[^\s:\[]+)(?:\[\d+\])?:\x20` at `i`; where the payload starts.
fn rfc3164_tag(s: &[u8], i: usize) -> Option<usize> {
    let mut p = Scan::new(s, i);
    p.run1(|u| !is_space(u) && u != Unit::Char(':') && u != Unit::Char('['))?;
    p.procid_colon()?;
    Some(p.i)
}

/// rfc3164: `<PRI>Mmm dd HH:MM:SS (?:HOST\x20)??TAG(?:\[PID\])?:\x20MSG`; the host is
/// lazy: tried only when the line does not match without it.
fn match_rfc3164(s: &[u8]) -> Option<usize> {
    let mut p = Scan::new(s, 0);
    p.pri()?;
    p.bsd_time()?;
    p.byte(b' ')?;
    let at = p.i;
    if let Some(payload) = rfc3164_tag(s, at) {
        return Some(payload);
    }
    p.run1(|u| !is_space(u))?;
    p.byte(b' ')?;
    rfc3164_tag(s, p.i)
}

/// journal's `(?P<host>[^\s:]+)\x20(?P<tag>[\w./-]+)(?:\[\d+\])?:\x20` at `i`.
fn journal_rest(s: &[u8], i: usize) -> Option<usize> {
    let mut p = Scan::new(s, i);
    p.run1(|u| !is_space(u) && u != Unit::Char(':'))?;
    p.byte(b' ')?;
    p.run1(|u| is_word(u) || matches!(u, Unit::Char('.' | '/' | '-')))?;
    p.procid_colon()?;
    Some(p.i)
}

/// journal: `(?:Mmm dd HH:MM:SS\x20|\d{4}-\d{2}-\d{2}T\S+\x20)?HOST TAG[PID]: MSG`; the
/// time is optional (greedy: tried first, then the line without it).
fn match_journal(s: &[u8]) -> Option<usize> {
    let mut p = Scan::new(s, 0);
    let prefix = if p.peek().is_some_and(|b| b.is_ascii_uppercase()) {
        p.bsd_time().and_then(|()| p.byte(b' '))
    } else {
        (|| {
            p.digits(4)?;
            p.byte(b'-')?;
            p.digits(2)?;
            p.byte(b'-')?;
            p.digits(2)?;
            p.byte(b'T')?;
            p.run1(|u| !is_space(u))?;
            p.byte(b' ')
        })()
    };
    if prefix.is_some() {
        if let Some(payload) = journal_rest(s, p.i) {
            return Some(payload);
        }
    }
    journal_rest(s, 0)
}

/// compose: `(?P<service>[\w.-]+)\s*\|\x20(?P<payload>.*)`.
fn match_compose(s: &[u8]) -> Option<usize> {
    let mut p = Scan::new(s, 0);
    p.run1(|u| is_word(u) || matches!(u, Unit::Char('.' | '-')))?;
    p.run_max(usize::MAX, is_space);
    p.bytes(b"| ")?;
    Some(p.i)
}

/// The shape `kind` on `s` (`pattern.match(text)`).
fn match_kind(kind: Kind, s: &[u8]) -> Option<Match> {
    match kind {
        Kind::Cri => match_cri(s),
        Kind::DockerJson => match_docker(s).then_some(Match {
            payload: None,
            stdout: false,
            partial: false,
        }),
        Kind::Rfc5424 => match_rfc5424(s).map(|payload| Match {
            payload,
            stdout: false,
            partial: false,
        }),
        Kind::Rfc3164 => match_rfc3164(s).map(Match::payload),
        Kind::Journal => match_journal(s).map(Match::payload),
        Kind::Compose => match_compose(s).map(Match::payload),
    }
}

/// `_reveals_event`: whether a loose wrapper's payload is an nginx line, directly or
/// inside more wrappers (a continuation line such as `PHP message: ...` is not one).
fn reveals_event(payload: &[u8], depth: usize) -> bool {
    if is_event_start(payload) {
        return true;
    }
    if depth <= 1 {
        return false;
    }
    ORDER.iter().any(|&kind| {
        match_kind(kind, payload).is_some_and(|m| {
            kind.definite() || reveals_event(&payload[m.payload_start(payload)..], depth - 1)
        })
    })
}

/// `m` for `kind` if it counts: a definite shape, or one whose payload reveals an event.
fn accept(kind: Kind, text: &[u8]) -> Option<Match> {
    let m = match_kind(kind, text)?;
    (kind.definite() || reveals_event(&text[m.payload_start(text)..], MAX_DEPTH)).then_some(m)
}

// -- docker json-file records ----------------------------------------------------------

/// orjson's nesting limit: 1024 arrays/objects deep, the record itself included.
const JSON_MAX_DEPTH: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JKind {
    Str,
    True,
    False,
    Null,
    Int,
    Float,
    Container,
}

/// A member value of the record: where its text is (for a string, its content between
/// the quotes, and whether it holds escapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct JValue {
    kind: JKind,
    start: usize,
    end: usize,
    escaped: bool,
}

#[derive(Default, Debug)]
struct DockerRecord {
    log: Option<JValue>,
    stream: Option<JValue>,
}

/// A strict JSON reader for one docker record, accepting exactly what `orjson.loads`
/// accepts of the Python's text of the line. An invalid byte is `\xNN` in that text: an
/// invalid JSON escape inside a string and a syntax error outside, except right after a
/// backslash, where the Python reads `\\` then `xNN` (the four characters `\xNN`).
struct Json<'s>(Scan<'s>);

/// The JSON reader moves the same cursor as the wrapper matchers (`peek`, `byte`,
/// `bytes`), and adds what JSON needs.
impl<'s> std::ops::Deref for Json<'s> {
    type Target = Scan<'s>;

    fn deref(&self) -> &Scan<'s> {
        &self.0
    }
}

impl std::ops::DerefMut for Json<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

fn hex4(s: &[u8], at: usize) -> Option<u32> {
    let digits = s.get(at..at + 4)?;
    digits
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc * 16 + char::from(b).to_digit(16)?))
}

impl Json<'_> {
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string at `"`; whether it holds escapes.
    fn string(&mut self) -> Option<bool> {
        self.byte(b'"')?;
        let mut escaped = false;
        loop {
            // Plain text up to the next quote or backslash: checked in one go.
            let rest = &self.s[self.i..];
            let plain = memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
            let span = &rest[..plain];
            // (No early exit: the OR over the span vectorizes.)
            let unusual = span
                .iter()
                .fold(0u8, |acc, &b| acc | u8::from(b.wrapping_sub(0x20) >= 0x60));
            if unusual != 0
                && (span.iter().any(|&b| b < 0x20) || std::str::from_utf8(span).is_err())
            {
                return None;
            }
            self.i += plain;
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let code = hex4(self.s, self.i + 1)?;
                            self.i += 5;
                            if (0xD800..0xDC00).contains(&code) {
                                if !self.s[self.i..].starts_with(b"\\u") {
                                    return None;
                                }
                                let low = hex4(self.s, self.i + 2)?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return None;
                                }
                                self.i += 6;
                            } else if (0xDC00..0xE000).contains(&code) {
                                return None;
                            }
                        }
                        0x80.. if non_ascii(&self.s[self.i..]).0 == Unit::Bad => self.i += 1,
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    /// A number; `Int` when orjson keeps it an integer (64 bits), else `Float` (`None`
    /// when it is infinite as a double, which orjson refuses).
    fn number(&mut self) -> Option<JKind> {
        let start = self.i;
        let _ = self.byte(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digit_run(),
            _ => return None,
        }
        let mut float = false;
        if self.byte(b'.').is_some() {
            float = true;
            self.digits1()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            float = true;
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits1()?;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        if !float && (text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok()) {
            return Some(JKind::Int);
        }
        text.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(|_| JKind::Float)
    }

    fn digit_run(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }

    fn digits1(&mut self) -> Option<()> {
        let start = self.i;
        self.digit_run();
        (self.i > start).then_some(())
    }

    /// An object member's key and colon.
    fn key(&mut self) -> Option<()> {
        self.ws();
        self.string()?;
        self.ws();
        self.byte(b':')
    }

    /// Any value, validated and skipped, inside a container `depth` deep.
    fn skip_value(&mut self, depth: usize) -> Option<JKind> {
        let mut objects = [0u64; JSON_MAX_DEPTH / 64]; // bit set: an object, else an array
        let mut open = 0usize;
        let mut outer = None;
        loop {
            self.ws();
            let kind = match self.peek()? {
                c @ (b'{' | b'[') => {
                    if depth + open + 1 > JSON_MAX_DEPTH {
                        return None;
                    }
                    self.i += 1;
                    let object = c == b'{';
                    let (word, bit) = (open / 64, 1u64 << (open % 64));
                    if object {
                        objects[word] |= bit;
                    } else {
                        objects[word] &= !bit;
                    }
                    open += 1;
                    outer.get_or_insert(JKind::Container);
                    self.ws();
                    if self.byte(if object { b'}' } else { b']' }).is_none() {
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                    open -= 1;
                    JKind::Container
                }
                b'"' => self.string().map(|_| JKind::Str)?,
                b't' => self.bytes(b"true").map(|()| JKind::True)?,
                b'f' => self.bytes(b"false").map(|()| JKind::False)?,
                b'n' => self.bytes(b"null").map(|()| JKind::Null)?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return None,
            };
            let outer = *outer.get_or_insert(kind);
            loop {
                if open == 0 {
                    return Some(outer);
                }
                self.ws();
                let top = open - 1;
                let object = objects[top / 64] >> (top % 64) & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if object {
                            self.key()?;
                        }
                        break;
                    }
                    b']' if !object => {
                        self.i += 1;
                        open -= 1;
                    }
                    b'}' if object => {
                        self.i += 1;
                        open -= 1;
                    }
                    _ => return None,
                }
            }
        }
    }
}

/// Whether the string content `raw` (between its quotes, `escaped` if it holds escapes)
/// is `name`.
fn key_is(raw: &[u8], escaped: bool, name: &[u8]) -> bool {
    if escaped {
        let mut key = Vec::new();
        decode_json_string(raw, &mut key);
        key == name
    } else {
        raw == name
    }
}

/// Parses the whole `s` as one JSON object (`orjson.loads`), keeping its last `log` and
/// `stream` members; `None` when it is not valid JSON.
fn parse_docker(s: &[u8]) -> Option<DockerRecord> {
    let mut j = Json(Scan::new(s, 0));
    let mut record = DockerRecord::default();
    j.ws();
    j.byte(b'{')?;
    j.ws();
    if j.byte(b'}').is_none() {
        loop {
            j.ws();
            let key_start = j.i + 1;
            let key_escaped = j.string()?;
            let key = &s[key_start..j.i - 1];
            j.ws();
            j.byte(b':')?;
            j.ws();
            let start = j.i;
            let value = if j.peek() == Some(b'"') {
                let escaped = j.string()?;
                JValue {
                    kind: JKind::Str,
                    start: start + 1,
                    end: j.i - 1,
                    escaped,
                }
            } else {
                let kind = j.skip_value(1)?;
                JValue {
                    kind,
                    start,
                    end: j.i,
                    escaped: false,
                }
            };
            if key_is(key, key_escaped, b"log") {
                record.log = Some(value);
            } else if key_is(key, key_escaped, b"stream") {
                record.stream = Some(value);
            }
            j.ws();
            match j.peek()? {
                b',' => j.i += 1,
                b'}' => {
                    j.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    j.ws();
    (j.i == s.len()).then_some(record)
}

/// Appends the text of a validated JSON string's content `raw` to `out` (UTF-8).
fn decode_json_string(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        let Some(at) = memchr(b'\\', &raw[i..]) else {
            out.extend_from_slice(&raw[i..]);
            return;
        };
        out.extend_from_slice(&raw[i..i + at]);
        i += at + 1;
        let Some(&e) = raw.get(i) else { return };
        i += 1;
        let simple = match e {
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'"' | b'\\' | b'/' => Some(e),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
        } else if e == b'u' {
            let mut code = hex4(raw, i).unwrap_or(0xFFFD);
            i += 4;
            if (0xD800..0xDC00).contains(&code) {
                let low = hex4(raw, i + 2).unwrap_or(0xDC00);
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                i += 6;
            }
            let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        } else {
            // A backslash before an invalid byte: the Python's text reads `\\` `xNN`.
            out.extend_from_slice(format!("\\x{e:02x}").as_bytes());
        }
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in fixed notation when
/// the exponent is in -4..16, else as `d.ddde+XX`.
fn py_float_repr(v: f64) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|&c| c != '.').collect();
    let mut out = String::from(sign);
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let whole = exp as usize + 1;
            if digits.len() <= whole {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', whole - digits.len()));
                out.push_str(".0");
            } else {
                out.push_str(&digits[..whole]);
                out.push('.');
                out.push_str(&digits[whole..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push_str(&format!(
            "e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        ));
    }
    out
}

/// `"docker:" + str(record.get("stream", ""))`. A string is its text, a scalar Python's
/// `str()` of what orjson gives (`True`, `None`, `5`, `1e+16`); an array or object is
/// its JSON text (the Python's `str()` of a list or dict is not reproduced).
fn docker_stream_key(text: &[u8], stream: Option<JValue>) -> Vec<u8> {
    let mut key = b"docker:".to_vec();
    let Some(v) = stream else { return key };
    let raw = &text[v.start..v.end];
    match v.kind {
        JKind::Str if v.escaped => decode_json_string(raw, &mut key),
        JKind::Str | JKind::Container => key.extend_from_slice(raw),
        JKind::True => key.extend_from_slice(b"True"),
        JKind::False => key.extend_from_slice(b"False"),
        JKind::Null => key.extend_from_slice(b"None"),
        JKind::Int => key.extend_from_slice(if raw == b"-0" { b"0" } else { raw }),
        JKind::Float => {
            let v = std::str::from_utf8(raw)
                .ok()
                .and_then(|t| t.parse::<f64>().ok());
            key.extend_from_slice(py_float_repr(v.unwrap_or(0.0)).as_bytes());
        }
    }
    key
}

/// The `log` text of a record: a range of the line when it holds no escape but its
/// final `\n` (or `\r\n`), else decoded. `complete`: it ended with "\n" (removed here,
/// with one "\r" before it: `piece[:-1].removesuffix("\r")`).
enum LogText {
    Range(usize, usize),
    Owned(Vec<u8>),
}

fn docker_log(text: &[u8], log: JValue) -> (LogText, bool) {
    let (start, end) = (log.start, log.end);
    if !log.escaped {
        return (LogText::Range(start, end), false);
    }
    let raw = &text[start..end];
    for (tail, cut) in [(&b"\\r\\n"[..], 4), (&b"\\n"[..], 2)] {
        if raw.ends_with(tail) && memchr(b'\\', &raw[..raw.len() - cut]).is_none() {
            return (LogText::Range(start, end - cut), true);
        }
    }
    let mut piece = Vec::with_capacity(raw.len());
    decode_json_string(raw, &mut piece);
    if piece.last() == Some(&b'\n') {
        piece.pop();
        if piece.last() == Some(&b'\r') {
            piece.pop();
        }
        (LogText::Owned(piece), true)
    } else {
        (LogText::Owned(piece), false)
    }
}

// -- joining pieces ----------------------------------------------------------------------

/// `text[start..end]`, borrowed from the line when `text` is.
fn sub(text: Cow<'_, [u8]>, start: usize, end: usize) -> Cow<'_, [u8]> {
    match text {
        Cow::Borrowed(b) => Cow::Borrowed(&b[start..end]),
        Cow::Owned(mut v) => {
            v.truncate(end);
            v.drain(..start);
            Cow::Owned(v)
        }
    }
}

/// Appends `piece` as the Python's text (an invalid byte as the characters `\xNN`);
/// returns its length in characters.
fn push_text(out: &mut Vec<u8>, piece: &[u8]) -> usize {
    match std::str::from_utf8(piece) {
        Ok(text) => {
            out.extend_from_slice(piece);
            text.chars().count()
        }
        Err(_) => {
            let text = decode_escaped(piece);
            out.extend_from_slice(text.as_bytes());
            text.chars().count()
        }
    }
}

/// `piece[:200]` of the Python's text of `piece`.
fn broken_head(piece: &[u8]) -> Vec<u8> {
    let mut text = Vec::new();
    push_text(&mut text, piece);
    head_chars(&text).to_vec()
}

/// The first 200 characters of `text` (valid UTF-8, as pieces are held).
fn head_chars(text: &[u8]) -> &[u8] {
    let s = std::str::from_utf8(text).unwrap_or_default();
    match s.char_indices().nth(BROKEN_CHARS) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// What a piece of `chars` characters counts towards the bound on a held line: its
/// length, and one for an empty piece (a raw line read all the same).
#[inline]
fn piece_weight(chars: usize) -> usize {
    chars.max(1)
}

/// The leading pieces of one stream's split line.
#[derive(Debug, Clone, Default)]
struct Pieces {
    /// When the stream got its first piece (the Python's dict order).
    seq: u64,
    /// The pieces' text, one after the other.
    text: Vec<u8>,
    /// Where each piece ends in `text`.
    ends: Vec<usize>,
    /// `sum(max(len(p), 1) for p in pieces)`: characters, an empty piece counted as
    /// one, so that every piece counts towards the bound (`max_line`) and a line of
    /// empty pieces cannot grow without end.
    chars: usize,
}

impl Pieces {
    fn each(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(a, b)| &self.text[a..b])
    }
}

/// Streams (CRI stdout/stderr, docker `stream` values) whose split lines are held at
/// once; a piece of a further stream is counted as unparsed (`too_many_streams`).
pub const MAX_STREAMS: usize = 16;

/// What [`Unwrapper::unwrap`] made of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<'a> {
    /// A line for the assembler. `pieces`: earlier raw lines (CRI "P" / docker pieces)
    /// joined into it (Python `out.partial += len(pieces)`), 0 for an ordinary line.
    Line { text: Cow<'a, [u8]>, pieces: u64 },
    /// Raw lines that were wrapped but are broken: each one is one unparsed line under
    /// `reason` ("bad_docker_json" or "too_long"); `raws` has one entry per such line
    /// (the whole raw line for bad_docker_json, the piece's first 200 characters for
    /// too_long).
    Broken {
        reason: &'static str,
        raws: Vec<Vec<u8>>,
    },
    /// A leading piece of a split line, held until its last piece comes.
    Held,
}

/// Per-source state: the wrapper seen last, and partial CRI/docker pieces.
#[derive(Debug, Clone)]
pub struct Unwrapper {
    last: Option<Kind>,
    max_line: usize,
    /// Pieces of a split line, per stream (a pod's stdout and stderr interleave).
    pieces: HashMap<Vec<u8>, Pieces>,
    next_seq: u64,
    /// Streams whose over-long line is being dropped up to its last piece.
    dropping: HashSet<Vec<u8>>,
    /// Pieces joined by the last `unwrap` that its `Step` does not carry.
    unreported: u64,
}

impl Unwrapper {
    pub fn new(max_line: usize) -> Self {
        Unwrapper {
            last: None,
            max_line,
            pieces: HashMap::default(),
            next_seq: 0,
            dropping: HashSet::default(),
            unreported: 0,
        }
    }

    /// The wrapper that matched last ("cri", "docker_json", "rfc5424", "rfc3164",
    /// "journal", "compose"), `None` before any.
    pub fn last(&self) -> Option<&'static str> {
        self.last.map(Kind::name)
    }

    /// Raw lines joined by the last [`unwrap`](Self::unwrap) call that its `Step` could
    /// not carry, to be counted like `Step::Line`'s `pieces` (the Python's
    /// `out.partial`). Only a CRI line whose joined text turns out to be a docker record
    /// that is broken or a piece, or a CRI piece itself, gives a `Broken` or `Held`
    /// after a join; 0 otherwise.
    pub fn unreported_pieces(&self) -> u64 {
        self.unreported
    }

    /// `_match`: the wrapper around `text`, the one that matched last tried first.
    fn find(&self, text: &[u8]) -> Option<(Kind, Match)> {
        if let Some(kind) = self.last {
            if let Some(m) = accept(kind, text) {
                return Some((kind, m));
            }
        }
        ORDER
            .iter()
            .filter(|&&kind| Some(kind) != self.last)
            .find_map(|&kind| accept(kind, text).map(|m| (kind, m)))
    }

    /// Python `_one` for one framed line.
    pub fn unwrap<'a>(&mut self, line: &'a [u8]) -> Step<'a> {
        self.unreported = 0;
        if is_event_start(line) {
            return Step::Line {
                text: Cow::Borrowed(line),
                pieces: 0,
            };
        }
        let mut joined = 0u64;
        let mut text = Cow::Borrowed(line);
        for _ in 0..MAX_DEPTH {
            let Some((kind, m)) = self.find(&text) else {
                break;
            };
            self.last = Some(kind);
            let payload = m.payload_start(&text);
            match kind {
                Kind::Cri => {
                    let stream: &[u8] = if m.stdout {
                        b"cri:stdout"
                    } else {
                        b"cri:stderr"
                    };
                    let step = if m.partial {
                        Err(self.add_piece(stream, &text[payload..]))
                    } else {
                        let end = text.len();
                        self.join(stream, sub(text, payload, end), &mut joined)
                    };
                    match step {
                        Ok(whole) => text = whole,
                        Err(step) => {
                            self.unreported = joined;
                            return step;
                        }
                    }
                }
                Kind::DockerJson => {
                    let log = parse_docker(&text).and_then(|record| match record.log {
                        Some(log) if log.kind == JKind::Str => Some((log, record.stream)),
                        _ => None,
                    });
                    let Some((log, stream)) = log else {
                        self.unreported = joined;
                        return Step::Broken {
                            reason: "bad_docker_json",
                            raws: vec![line.to_vec()],
                        };
                    };
                    let (piece, complete) = docker_log(&text, log);
                    let holding = !self.pieces.is_empty() || !self.dropping.is_empty();
                    let key = (holding || !complete).then(|| docker_stream_key(&text, stream));
                    let piece = match piece {
                        LogText::Range(start, end) => sub(text, start, end),
                        LogText::Owned(v) => Cow::Owned(v),
                    };
                    let step = match (key, complete) {
                        (Some(key), false) => Err(self.add_piece(&key, &piece)),
                        (Some(key), true) => self.join(&key, piece, &mut joined),
                        (None, _) => Ok(piece),
                    };
                    match step {
                        Ok(whole) => text = whole,
                        Err(step) => {
                            self.unreported = joined;
                            return step;
                        }
                    }
                }
                _ => {
                    let end = text.len();
                    text = sub(text, payload, end);
                }
            }
            if is_event_start(&text) {
                break;
            }
        }
        Step::Line {
            text,
            pieces: joined,
        }
    }

    /// `_add_piece`: holds a leading piece (or drops it with its line when too long).
    fn add_piece(&mut self, stream: &[u8], piece: &[u8]) -> Step<'static> {
        if self.dropping.contains(stream) {
            return Step::Broken {
                reason: "too_long",
                raws: vec![broken_head(piece)],
            };
        }
        if !self.pieces.contains_key(stream) {
            if self.pieces.len() >= MAX_STREAMS {
                // A docker `stream` is any JSON value: pieces are held for a bounded
                // number of streams; a piece of one more is counted, not kept.
                return Step::Broken {
                    reason: "too_many_streams",
                    raws: vec![broken_head(piece)],
                };
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.pieces.insert(
                stream.to_vec(),
                Pieces {
                    seq,
                    ..Pieces::default()
                },
            );
        }
        let Some(held) = self.pieces.get_mut(stream) else {
            return Step::Held;
        };
        held.chars += piece_weight(push_text(&mut held.text, piece));
        held.ends.push(held.text.len());
        if held.chars <= self.max_line {
            return Step::Held;
        }
        let raws = held.each().map(|p| head_chars(p).to_vec()).collect();
        self.pieces.remove(stream);
        if self.dropping.len() < MAX_STREAMS {
            self.dropping.insert(stream.to_vec());
        }
        Step::Broken {
            reason: "too_long",
            raws,
        }
    }

    /// `_join`: the whole line ending with `last`, or the broken end of a dropped one.
    fn join<'a>(
        &mut self,
        stream: &[u8],
        last: Cow<'a, [u8]>,
        joined: &mut u64,
    ) -> std::result::Result<Cow<'a, [u8]>, Step<'a>> {
        if self.pieces.is_empty() && self.dropping.is_empty() {
            return Ok(last);
        }
        if self.dropping.remove(stream) {
            return Err(Step::Broken {
                reason: "too_long",
                raws: vec![broken_head(&last)],
            });
        }
        let Some(held) = self.pieces.remove(stream) else {
            return Ok(last);
        };
        *joined += held.ends.len() as u64;
        let mut text = held.text;
        push_text(&mut text, &last);
        Ok(Cow::Owned(text))
    }

    /// Python `flush`: the pieces of lines whose last piece never came, joined (one line
    /// per stream, in the order the streams first got a piece), and how many raw lines
    /// they span beyond one each. Lines being dropped end here too.
    pub fn flush(&mut self) -> (Vec<Vec<u8>>, u64) {
        let out = self.release();
        self.dropping.clear();
        out
    }

    /// A quiet source (Python `flush(idle=True)`): the held pieces as `flush` gives
    /// them, but a stream's over-long line being dropped (already counted) stays dropped
    /// up to its last piece.
    pub fn release(&mut self) -> (Vec<Vec<u8>>, u64) {
        let mut held: Vec<Pieces> = self.pieces.drain().map(|(_, p)| p).collect();
        held.sort_by_key(|p| p.seq);
        let extra = held.iter().map(|p| p.ends.len() as u64 - 1).sum();
        (held.into_iter().map(|p| p.text).collect(), extra)
    }

    pub fn save(&self, w: &mut Writer) {
        w.usize(self.last.map_or(0, |k| k.index() + 1));
        let mut held: Vec<(&Vec<u8>, &Pieces)> = self.pieces.iter().collect();
        held.sort_by_key(|(_, p)| p.seq);
        w.usize(held.len());
        for (stream, pieces) in held {
            w.bytes(stream);
            w.usize(pieces.ends.len());
            for piece in pieces.each() {
                w.bytes(piece);
            }
        }
        let mut dropping: Vec<&Vec<u8>> = self.dropping.iter().collect();
        dropping.sort();
        w.usize(dropping.len());
        for stream in dropping {
            w.bytes(stream);
        }
    }

    pub fn load(r: &mut Reader<'_>, max_line: usize) -> Result<Self> {
        let mut u = Unwrapper::new(max_line);
        u.last = match r.usize()? {
            0 => None,
            n => Some(
                *ORDER
                    .get(n - 1)
                    .ok_or_else(|| SnapshotError("bad wrapper".into()))?,
            ),
        };
        for seq in 0..r.count(2)? as u64 {
            let stream = r.bytes()?.to_vec();
            let mut held = Pieces {
                seq,
                ..Pieces::default()
            };
            let n = r.count(1)?;
            if n == 0 {
                return Err(SnapshotError("empty pieces".into()));
            }
            for _ in 0..n {
                let piece = r.bytes()?;
                let text = std::str::from_utf8(piece)
                    .map_err(|_| SnapshotError("piece is not UTF-8".into()))?;
                held.chars += piece_weight(text.chars().count());
                held.text.extend_from_slice(piece);
                held.ends.push(held.text.len());
            }
            u.pieces.insert(stream, held);
            u.next_seq = seq + 1;
        }
        for _ in 0..r.count(1)? {
            u.dropping.insert(r.bytes()?.to_vec());
        }
        Ok(u)
    }
}

// -- Unicode classes of the `regex` module ------------------------------------------------
//
// Generated from the project's `regex` module: the runs of code points from 0x80 up that
// `regex.match(r"\d", chr(c))` (resp. `r"\w"`) matches; the ASCII ones are tested in
// code. Regenerate when the `regex` module's Unicode version moves.

/// Non-ASCII characters `\d` matches (71 ranges, generated from the `regex` module 2026.11.19).
const DIGIT_RANGES: &[(u32, u32)] = &[
    (0x660, 0x669),
    (0x6F0, 0x6F9),
    (0x7C0, 0x7C9),
    (0x966, 0x96F),
    (0x9E6, 0x9EF),
    (0xA66, 0xA6F),
    (0xAE6, 0xAEF),
    (0xB66, 0xB6F),
    (0xBE6, 0xBEF),
    (0xC66, 0xC6F),
    (0xCE6, 0xCEF),
    (0xD66, 0xD6F),
    (0xDE6, 0xDEF),
    (0xE50, 0xE59),
    (0xED0, 0xED9),
    (0xF20, 0xF29),
    (0x1040, 0x1049),
    (0x1090, 0x1099),
    (0x17E0, 0x17E9),
    (0x1810, 0x1819),
    (0x1946, 0x194F),
    (0x19D0, 0x19D9),
    (0x1A80, 0x1A89),
    (0x1A90, 0x1A99),
    (0x1B50, 0x1B59),
    (0x1BB0, 0x1BB9),
    (0x1C40, 0x1C49),
    (0x1C50, 0x1C59),
    (0xA620, 0xA629),
    (0xA8D0, 0xA8D9),
    (0xA900, 0xA909),
    (0xA9D0, 0xA9D9),
    (0xA9F0, 0xA9F9),
    (0xAA50, 0xAA59),
    (0xABF0, 0xABF9),
    (0xFF10, 0xFF19),
    (0x104A0, 0x104A9),
    (0x10D30, 0x10D39),
    (0x10D40, 0x10D49),
    (0x11066, 0x1106F),
    (0x110F0, 0x110F9),
    (0x11136, 0x1113F),
    (0x111D0, 0x111D9),
    (0x112F0, 0x112F9),
    (0x11450, 0x11459),
    (0x114D0, 0x114D9),
    (0x11650, 0x11659),
    (0x116C0, 0x116C9),
    (0x116D0, 0x116E3),
    (0x11730, 0x11739),
    (0x118E0, 0x118E9),
    (0x11950, 0x11959),
    (0x11BF0, 0x11BF9),
    (0x11C50, 0x11C59),
    (0x11D50, 0x11D59),
    (0x11DA0, 0x11DA9),
    (0x11DE0, 0x11DE9),
    (0x11F50, 0x11F59),
    (0x16130, 0x16139),
    (0x16A60, 0x16A69),
    (0x16AC0, 0x16AC9),
    (0x16B50, 0x16B59),
    (0x16D70, 0x16D79),
    (0x1CCF0, 0x1CCF9),
    (0x1D7CE, 0x1D7FF),
    (0x1E140, 0x1E149),
    (0x1E2F0, 0x1E2F9),
    (0x1E4F0, 0x1E4F9),
    (0x1E5F1, 0x1E5FA),
    (0x1E950, 0x1E959),
    (0x1FBF0, 0x1FBF9),
];
/// Non-ASCII characters `\w` matches (813 ranges, generated from the `regex` module 2026.11.19).
const WORD_RANGES: &[(u32, u32)] = &[
    (0xAA, 0xAA),
    (0xB5, 0xB5),
    (0xBA, 0xBA),
    (0xC0, 0xD6),
    (0xD8, 0xF6),
    (0xF8, 0x2C1),
    (0x2C6, 0x2D1),
    (0x2E0, 0x2E4),
    (0x2EC, 0x2EC),
    (0x2EE, 0x2EE),
    (0x300, 0x374),
    (0x376, 0x377),
    (0x37A, 0x37D),
    (0x37F, 0x37F),
    (0x386, 0x386),
    (0x388, 0x38A),
    (0x38C, 0x38C),
    (0x38E, 0x3A1),
    (0x3A3, 0x3F5),
    (0x3F7, 0x481),
    (0x483, 0x52F),
    (0x531, 0x556),
    (0x558, 0x559),
    (0x560, 0x588),
    (0x58B, 0x58C),
    (0x591, 0x5BD),
    (0x5BF, 0x5BF),
    (0x5C1, 0x5C2),
    (0x5C4, 0x5C5),
    (0x5C7, 0x5C9),
    (0x5D0, 0x5EA),
    (0x5EF, 0x5F2),
    (0x610, 0x61A),
    (0x620, 0x669),
    (0x66E, 0x6D3),
    (0x6D5, 0x6DC),
    (0x6DF, 0x6E8),
    (0x6EA, 0x6FC),
    (0x6FF, 0x6FF),
    (0x710, 0x74A),
    (0x74D, 0x7B1),
    (0x7C0, 0x7F5),
    (0x7FA, 0x7FA),
    (0x7FD, 0x7FD),
    (0x800, 0x82D),
    (0x840, 0x85B),
    (0x860, 0x86A),
    (0x870, 0x887),
    (0x889, 0x88F),
    (0x897, 0x8E1),
    (0x8E3, 0x963),
    (0x966, 0x96F),
    (0x971, 0x983),
    (0x985, 0x98C),
    (0x98F, 0x990),
    (0x993, 0x9A8),
    (0x9AA, 0x9B0),
    (0x9B2, 0x9B2),
    (0x9B6, 0x9B9),
    (0x9BC, 0x9C4),
    (0x9C7, 0x9C8),
    (0x9CB, 0x9CE),
    (0x9D7, 0x9D7),
    (0x9DC, 0x9DD),
    (0x9DF, 0x9E3),
    (0x9E6, 0x9F1),
    (0x9FC, 0x9FC),
    (0x9FE, 0x9FE),
    (0xA01, 0xA03),
    (0xA05, 0xA0A),
    (0xA0F, 0xA10),
    (0xA13, 0xA28),
    (0xA2A, 0xA30),
    (0xA32, 0xA33),
    (0xA35, 0xA36),
    (0xA38, 0xA39),
    (0xA3C, 0xA3C),
    (0xA3E, 0xA42),
    (0xA47, 0xA48),
    (0xA4B, 0xA4D),
    (0xA51, 0xA51),
    (0xA59, 0xA5C),
    (0xA5E, 0xA5E),
    (0xA66, 0xA75),
    (0xA81, 0xA83),
    (0xA85, 0xA8D),
    (0xA8F, 0xA91),
    (0xA93, 0xAA8),
    (0xAAA, 0xAB0),
    (0xAB2, 0xAB3),
    (0xAB5, 0xAB9),
    (0xABC, 0xAC5),
    (0xAC7, 0xAC9),
    (0xACB, 0xACD),
    (0xAD0, 0xAD0),
    (0xAE0, 0xAE3),
    (0xAE6, 0xAEF),
    (0xAF9, 0xAFF),
    (0xB01, 0xB03),
    (0xB05, 0xB0C),
    (0xB0F, 0xB10),
    (0xB13, 0xB28),
    (0xB2A, 0xB30),
    (0xB32, 0xB33),
    (0xB35, 0xB39),
    (0xB3C, 0xB44),
    (0xB47, 0xB48),
    (0xB4B, 0xB4D),
    (0xB53, 0xB57),
    (0xB5C, 0xB5D),
    (0xB5F, 0xB63),
    (0xB66, 0xB6F),
    (0xB71, 0xB71),
    (0xB82, 0xB83),
    (0xB85, 0xB8A),
    (0xB8E, 0xB90),
    (0xB92, 0xB95),
    (0xB99, 0xB9A),
    (0xB9C, 0xB9C),
    (0xB9E, 0xB9F),
    (0xBA3, 0xBA4),
    (0xBA8, 0xBAA),
    (0xBAE, 0xBB9),
    (0xBBE, 0xBC2),
    (0xBC6, 0xBC8),
    (0xBCA, 0xBCD),
    (0xBD0, 0xBD0),
    (0xBD7, 0xBD7),
    (0xBE6, 0xBEF),
    (0xC00, 0xC0C),
    (0xC0E, 0xC10),
    (0xC12, 0xC28),
    (0xC2A, 0xC39),
    (0xC3C, 0xC44),
    (0xC46, 0xC48),
    (0xC4A, 0xC4D),
    (0xC55, 0xC56),
    (0xC58, 0xC5A),
    (0xC5C, 0xC5D),
    (0xC60, 0xC63),
    (0xC66, 0xC6F),
    (0xC80, 0xC83),
    (0xC85, 0xC8C),
    (0xC8E, 0xC90),
    (0xC92, 0xCA8),
    (0xCAA, 0xCB3),
    (0xCB5, 0xCB9),
    (0xCBC, 0xCC4),
    (0xCC6, 0xCC8),
    (0xCCA, 0xCCD),
    (0xCD5, 0xCD6),
    (0xCDC, 0xCDE),
    (0xCE0, 0xCE3),
    (0xCE6, 0xCEF),
    (0xCF1, 0xCF3),
    (0xD00, 0xD0C),
    (0xD0E, 0xD10),
    (0xD12, 0xD44),
    (0xD46, 0xD48),
    (0xD4A, 0xD4E),
    (0xD54, 0xD57),
    (0xD5F, 0xD63),
    (0xD66, 0xD6F),
    (0xD7A, 0xD7F),
    (0xD81, 0xD83),
    (0xD85, 0xD96),
    (0xD9A, 0xDB1),
    (0xDB3, 0xDBB),
    (0xDBD, 0xDBD),
    (0xDC0, 0xDC6),
    (0xDCA, 0xDCA),
    (0xDCF, 0xDD4),
    (0xDD6, 0xDD6),
    (0xDD8, 0xDDF),
    (0xDE6, 0xDEF),
    (0xDF2, 0xDF3),
    (0xE01, 0xE3A),
    (0xE40, 0xE4E),
    (0xE50, 0xE59),
    (0xE81, 0xE82),
    (0xE84, 0xE84),
    (0xE86, 0xE8A),
    (0xE8C, 0xEA3),
    (0xEA5, 0xEA5),
    (0xEA7, 0xEBD),
    (0xEC0, 0xEC4),
    (0xEC6, 0xEC6),
    (0xEC8, 0xECE),
    (0xED0, 0xED9),
    (0xEDC, 0xEDF),
    (0xF00, 0xF00),
    (0xF18, 0xF19),
    (0xF20, 0xF29),
    (0xF35, 0xF35),
    (0xF37, 0xF37),
    (0xF39, 0xF39),
    (0xF3E, 0xF47),
    (0xF49, 0xF6C),
    (0xF71, 0xF84),
    (0xF86, 0xF97),
    (0xF99, 0xFBC),
    (0xFC6, 0xFC6),
    (0x1000, 0x1049),
    (0x1050, 0x109D),
    (0x10A0, 0x10C5),
    (0x10C7, 0x10C7),
    (0x10CD, 0x10CD),
    (0x10D0, 0x10FA),
    (0x10FC, 0x1248),
    (0x124A, 0x124D),
    (0x1250, 0x1256),
    (0x1258, 0x1258),
    (0x125A, 0x125D),
    (0x1260, 0x1288),
    (0x128A, 0x128D),
    (0x1290, 0x12B0),
    (0x12B2, 0x12B5),
    (0x12B8, 0x12BE),
    (0x12C0, 0x12C0),
    (0x12C2, 0x12C5),
    (0x12C8, 0x12D6),
    (0x12D8, 0x1310),
    (0x1312, 0x1315),
    (0x1318, 0x135A),
    (0x135D, 0x135F),
    (0x1380, 0x138F),
    (0x13A0, 0x13F5),
    (0x13F8, 0x13FD),
    (0x1401, 0x166C),
    (0x166F, 0x167F),
    (0x1681, 0x169A),
    (0x16A0, 0x16EA),
    (0x16EE, 0x16F8),
    (0x1700, 0x1715),
    (0x171F, 0x1734),
    (0x1740, 0x1753),
    (0x1760, 0x176C),
    (0x176E, 0x1770),
    (0x1772, 0x1773),
    (0x1780, 0x17D3),
    (0x17D7, 0x17D7),
    (0x17DC, 0x17DD),
    (0x17E0, 0x17E9),
    (0x180B, 0x180D),
    (0x180F, 0x1819),
    (0x1820, 0x1878),
    (0x1880, 0x18AA),
    (0x18B0, 0x18F5),
    (0x1900, 0x191E),
    (0x1920, 0x192B),
    (0x1930, 0x193B),
    (0x1946, 0x196D),
    (0x1970, 0x1974),
    (0x1980, 0x19AB),
    (0x19B0, 0x19C9),
    (0x19D0, 0x19D9),
    (0x1A00, 0x1A1B),
    (0x1A20, 0x1A5E),
    (0x1A60, 0x1A7C),
    (0x1A7F, 0x1A89),
    (0x1A90, 0x1A99),
    (0x1AA7, 0x1AA7),
    (0x1AB0, 0x1AF0),
    (0x1B00, 0x1B4C),
    (0x1B50, 0x1B59),
    (0x1B6B, 0x1B73),
    (0x1B80, 0x1BF3),
    (0x1C00, 0x1C37),
    (0x1C40, 0x1C49),
    (0x1C4D, 0x1C7D),
    (0x1C80, 0x1C8A),
    (0x1C90, 0x1CBA),
    (0x1CBD, 0x1CBF),
    (0x1CD0, 0x1CD2),
    (0x1CD4, 0x1CFA),
    (0x1D00, 0x1F15),
    (0x1F18, 0x1F1D),
    (0x1F20, 0x1F45),
    (0x1F48, 0x1F4D),
    (0x1F50, 0x1F57),
    (0x1F59, 0x1F59),
    (0x1F5B, 0x1F5B),
    (0x1F5D, 0x1F5D),
    (0x1F5F, 0x1F7D),
    (0x1F80, 0x1FB4),
    (0x1FB6, 0x1FBC),
    (0x1FBE, 0x1FBE),
    (0x1FC2, 0x1FC4),
    (0x1FC6, 0x1FCC),
    (0x1FD0, 0x1FD3),
    (0x1FD6, 0x1FDB),
    (0x1FE0, 0x1FEC),
    (0x1FF2, 0x1FF4),
    (0x1FF6, 0x1FFC),
    (0x200C, 0x200D),
    (0x203F, 0x2040),
    (0x2054, 0x2054),
    (0x2071, 0x2071),
    (0x207F, 0x207F),
    (0x208F, 0x209F),
    (0x20D0, 0x20F0),
    (0x2102, 0x2102),
    (0x2107, 0x2107),
    (0x210A, 0x2113),
    (0x2115, 0x2115),
    (0x2119, 0x211D),
    (0x2124, 0x2124),
    (0x2126, 0x2126),
    (0x2128, 0x2128),
    (0x212A, 0x212D),
    (0x212F, 0x2139),
    (0x213C, 0x213F),
    (0x2145, 0x2149),
    (0x214E, 0x214E),
    (0x2160, 0x2188),
    (0x24B6, 0x24E9),
    (0x2C00, 0x2CE4),
    (0x2CEB, 0x2CF3),
    (0x2D00, 0x2D25),
    (0x2D27, 0x2D27),
    (0x2D2D, 0x2D2D),
    (0x2D30, 0x2D67),
    (0x2D6F, 0x2D6F),
    (0x2D7F, 0x2D96),
    (0x2DA0, 0x2DA6),
    (0x2DA8, 0x2DAE),
    (0x2DB0, 0x2DB6),
    (0x2DB8, 0x2DBE),
    (0x2DC0, 0x2DC6),
    (0x2DC8, 0x2DCE),
    (0x2DD0, 0x2DD6),
    (0x2DD8, 0x2DDE),
    (0x2DE0, 0x2DFF),
    (0x2E2F, 0x2E2F),
    (0x3005, 0x3007),
    (0x3021, 0x302F),
    (0x3031, 0x3035),
    (0x3038, 0x303C),
    (0x3041, 0x3096),
    (0x3099, 0x309A),
    (0x309D, 0x309F),
    (0x30A1, 0x30FA),
    (0x30FC, 0x30FF),
    (0x3105, 0x312F),
    (0x3131, 0x318E),
    (0x31A0, 0x31BF),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0xA48C),
    (0xA4D0, 0xA4FD),
    (0xA500, 0xA60C),
    (0xA610, 0xA62B),
    (0xA640, 0xA672),
    (0xA674, 0xA67D),
    (0xA67F, 0xA6F1),
    (0xA717, 0xA71F),
    (0xA722, 0xA788),
    (0xA78B, 0xA7DD),
    (0xA7E2, 0xA7E2),
    (0xA7F1, 0xA827),
    (0xA82C, 0xA82C),
    (0xA840, 0xA873),
    (0xA880, 0xA8C5),
    (0xA8D0, 0xA8D9),
    (0xA8E0, 0xA8F7),
    (0xA8FB, 0xA8FB),
    (0xA8FD, 0xA92D),
    (0xA930, 0xA953),
    (0xA960, 0xA97C),
    (0xA980, 0xA9C0),
    (0xA9CF, 0xA9D9),
    (0xA9E0, 0xA9FE),
    (0xAA00, 0xAA36),
    (0xAA40, 0xAA4D),
    (0xAA50, 0xAA59),
    (0xAA60, 0xAA76),
    (0xAA7A, 0xAAC2),
    (0xAADB, 0xAADD),
    (0xAAE0, 0xAAEF),
    (0xAAF2, 0xAAF6),
    (0xAB01, 0xAB06),
    (0xAB09, 0xAB0E),
    (0xAB11, 0xAB16),
    (0xAB20, 0xAB26),
    (0xAB28, 0xAB2E),
    (0xAB30, 0xAB5A),
    (0xAB5C, 0xAB69),
    (0xAB6C, 0xAB6D),
    (0xAB70, 0xABEA),
    (0xABEC, 0xABED),
    (0xABF0, 0xABF9),
    (0xAC00, 0xD7A3),
    (0xD7B0, 0xD7C6),
    (0xD7CB, 0xD7FB),
    (0xF900, 0xFA6D),
    (0xFA70, 0xFAD9),
    (0xFB00, 0xFB06),
    (0xFB13, 0xFB17),
    (0xFB1D, 0xFB28),
    (0xFB2A, 0xFB36),
    (0xFB38, 0xFB3C),
    (0xFB3E, 0xFB3E),
    (0xFB40, 0xFB41),
    (0xFB43, 0xFB44),
    (0xFB46, 0xFBB1),
    (0xFBD3, 0xFD3D),
    (0xFD50, 0xFD8F),
    (0xFD92, 0xFDC7),
    (0xFDF0, 0xFDFB),
    (0xFE00, 0xFE0F),
    (0xFE20, 0xFE2F),
    (0xFE33, 0xFE34),
    (0xFE4D, 0xFE4F),
    (0xFE70, 0xFE74),
    (0xFE76, 0xFEFC),
    (0xFF10, 0xFF19),
    (0xFF21, 0xFF3A),
    (0xFF3F, 0xFF3F),
    (0xFF41, 0xFF5A),
    (0xFF66, 0xFFBE),
    (0xFFC2, 0xFFC7),
    (0xFFCA, 0xFFCF),
    (0xFFD2, 0xFFD7),
    (0xFFDA, 0xFFDC),
    (0x10000, 0x1000B),
    (0x1000D, 0x10026),
    (0x10028, 0x1003A),
    (0x1003C, 0x1003D),
    (0x1003F, 0x1004D),
    (0x10050, 0x1005D),
    (0x10080, 0x100FA),
    (0x10140, 0x10174),
    (0x101FD, 0x101FD),
    (0x10280, 0x1029C),
    (0x102A0, 0x102D0),
    (0x102E0, 0x102E0),
    (0x10300, 0x1031F),
    (0x1032D, 0x1034A),
    (0x10350, 0x1037A),
    (0x10380, 0x1039D),
    (0x103A0, 0x103C3),
    (0x103C8, 0x103CF),
    (0x103D1, 0x103D5),
    (0x10400, 0x1049D),
    (0x104A0, 0x104A9),
    (0x104B0, 0x104D3),
    (0x104D8, 0x104FB),
    (0x10500, 0x10527),
    (0x10530, 0x10563),
    (0x10570, 0x1057A),
    (0x1057C, 0x1058A),
    (0x1058C, 0x10592),
    (0x10594, 0x10595),
    (0x10597, 0x105A1),
    (0x105A3, 0x105B1),
    (0x105B3, 0x105B9),
    (0x105BB, 0x105BC),
    (0x105C0, 0x105F3),
    (0x10600, 0x10736),
    (0x10740, 0x10755),
    (0x10760, 0x10767),
    (0x10780, 0x10785),
    (0x10787, 0x107B0),
    (0x107B2, 0x107BF),
    (0x10800, 0x10805),
    (0x10808, 0x10808),
    (0x1080A, 0x10835),
    (0x10837, 0x10838),
    (0x1083C, 0x1083C),
    (0x1083F, 0x10855),
    (0x10860, 0x10876),
    (0x10880, 0x1089E),
    (0x108E0, 0x108F2),
    (0x108F4, 0x108F5),
    (0x10900, 0x10915),
    (0x10920, 0x10939),
    (0x10940, 0x10959),
    (0x10980, 0x109B7),
    (0x109BE, 0x109BF),
    (0x10A00, 0x10A03),
    (0x10A05, 0x10A06),
    (0x10A0C, 0x10A13),
    (0x10A15, 0x10A17),
    (0x10A19, 0x10A35),
    (0x10A38, 0x10A3A),
    (0x10A3F, 0x10A3F),
    (0x10A60, 0x10A7C),
    (0x10A80, 0x10A9C),
    (0x10AC0, 0x10AC7),
    (0x10AC9, 0x10AE6),
    (0x10B00, 0x10B35),
    (0x10B40, 0x10B55),
    (0x10B60, 0x10B72),
    (0x10B80, 0x10B91),
    (0x10C00, 0x10C48),
    (0x10C80, 0x10CB2),
    (0x10CC0, 0x10CF2),
    (0x10D00, 0x10D27),
    (0x10D30, 0x10D39),
    (0x10D40, 0x10D65),
    (0x10D69, 0x10D6D),
    (0x10D6F, 0x10D85),
    (0x10E80, 0x10EA9),
    (0x10EAB, 0x10EAC),
    (0x10EB0, 0x10EB1),
    (0x10EC2, 0x10EC7),
    (0x10ECB, 0x10ECF),
    (0x10ED9, 0x10EEE),
    (0x10EF0, 0x10F1C),
    (0x10F27, 0x10F27),
    (0x10F30, 0x10F50),
    (0x10F70, 0x10F85),
    (0x10FB0, 0x10FC4),
    (0x10FE0, 0x10FF6),
    (0x11000, 0x11046),
    (0x11066, 0x11075),
    (0x1107F, 0x110BA),
    (0x110C2, 0x110C2),
    (0x110D0, 0x110E8),
    (0x110F0, 0x110F9),
    (0x11100, 0x11134),
    (0x11136, 0x1113F),
    (0x11144, 0x11147),
    (0x11150, 0x11173),
    (0x11176, 0x11176),
    (0x11180, 0x111C4),
    (0x111C9, 0x111CC),
    (0x111CE, 0x111DA),
    (0x111DC, 0x111DC),
    (0x11200, 0x11211),
    (0x11213, 0x11237),
    (0x1123E, 0x11241),
    (0x11280, 0x11286),
    (0x11288, 0x11288),
    (0x1128A, 0x1128D),
    (0x1128F, 0x1129D),
    (0x1129F, 0x112A8),
    (0x112B0, 0x112EA),
    (0x112F0, 0x112F9),
    (0x11300, 0x11303),
    (0x11305, 0x1130C),
    (0x1130F, 0x11310),
    (0x11313, 0x11328),
    (0x1132A, 0x11330),
    (0x11332, 0x11333),
    (0x11335, 0x11339),
    (0x1133B, 0x11344),
    (0x11347, 0x11348),
    (0x1134B, 0x1134D),
    (0x11350, 0x11350),
    (0x11357, 0x11357),
    (0x1135D, 0x11363),
    (0x11366, 0x1136C),
    (0x11370, 0x11374),
    (0x11380, 0x11389),
    (0x1138B, 0x1138B),
    (0x1138E, 0x1138E),
    (0x11390, 0x113B5),
    (0x113B7, 0x113C0),
    (0x113C2, 0x113C2),
    (0x113C5, 0x113C5),
    (0x113C7, 0x113CA),
    (0x113CC, 0x113D3),
    (0x113E1, 0x113E2),
    (0x11400, 0x1144A),
    (0x11450, 0x11459),
    (0x1145E, 0x11461),
    (0x11480, 0x114C5),
    (0x114C7, 0x114C7),
    (0x114D0, 0x114D9),
    (0x11580, 0x115B5),
    (0x115B8, 0x115C0),
    (0x115D8, 0x115DD),
    (0x11600, 0x11640),
    (0x11644, 0x11644),
    (0x11650, 0x11659),
    (0x11680, 0x116B8),
    (0x116C0, 0x116C9),
    (0x116D0, 0x116E3),
    (0x11700, 0x1171A),
    (0x1171D, 0x1172B),
    (0x11730, 0x11739),
    (0x11740, 0x11746),
    (0x11800, 0x1183A),
    (0x118A0, 0x118E9),
    (0x118FF, 0x11906),
    (0x11909, 0x11909),
    (0x1190C, 0x11913),
    (0x11915, 0x11916),
    (0x11918, 0x11935),
    (0x11937, 0x11938),
    (0x1193B, 0x11943),
    (0x11950, 0x11959),
    (0x119A0, 0x119A7),
    (0x119AA, 0x119D7),
    (0x119DA, 0x119E1),
    (0x119E3, 0x119E4),
    (0x11A00, 0x11A3E),
    (0x11A47, 0x11A47),
    (0x11A50, 0x11A99),
    (0x11A9D, 0x11A9D),
    (0x11AB0, 0x11AF8),
    (0x11B0A, 0x11B0A),
    (0x11B60, 0x11B67),
    (0x11BC0, 0x11BE0),
    (0x11BF0, 0x11BF9),
    (0x11C00, 0x11C08),
    (0x11C0A, 0x11C36),
    (0x11C38, 0x11C40),
    (0x11C50, 0x11C59),
    (0x11C72, 0x11C8F),
    (0x11C92, 0x11CA7),
    (0x11CA9, 0x11CB6),
    (0x11D00, 0x11D06),
    (0x11D08, 0x11D09),
    (0x11D0B, 0x11D36),
    (0x11D3A, 0x11D3A),
    (0x11D3C, 0x11D3D),
    (0x11D3F, 0x11D47),
    (0x11D50, 0x11D59),
    (0x11D60, 0x11D65),
    (0x11D67, 0x11D68),
    (0x11D6A, 0x11D8E),
    (0x11D90, 0x11D91),
    (0x11D93, 0x11D98),
    (0x11DA0, 0x11DA9),
    (0x11DB0, 0x11DDB),
    (0x11DE0, 0x11DE9),
    (0x11DF0, 0x11DF1),
    (0x11EE0, 0x11EF6),
    (0x11F00, 0x11F10),
    (0x11F12, 0x11F3A),
    (0x11F3E, 0x11F42),
    (0x11F50, 0x11F5A),
    (0x11FB0, 0x11FB0),
    (0x12000, 0x12399),
    (0x12400, 0x1246F),
    (0x12475, 0x12543),
    (0x12550, 0x12686),
    (0x12F90, 0x12FF0),
    (0x13000, 0x1342F),
    (0x13440, 0x13455),
    (0x13460, 0x143FA),
    (0x14400, 0x14646),
    (0x16100, 0x16139),
    (0x16800, 0x16A38),
    (0x16A40, 0x16A5E),
    (0x16A60, 0x16A69),
    (0x16A70, 0x16ABE),
    (0x16AC0, 0x16AC9),
    (0x16AD0, 0x16AED),
    (0x16AF0, 0x16AF4),
    (0x16B00, 0x16B36),
    (0x16B40, 0x16B43),
    (0x16B50, 0x16B59),
    (0x16B63, 0x16B77),
    (0x16B7D, 0x16B8F),
    (0x16D40, 0x16D6C),
    (0x16D70, 0x16D79),
    (0x16E40, 0x16E7F),
    (0x16EA0, 0x16EB8),
    (0x16EBB, 0x16ED3),
    (0x16F00, 0x16F4A),
    (0x16F4F, 0x16F87),
    (0x16F8F, 0x16F9F),
    (0x16FE0, 0x16FE1),
    (0x16FE3, 0x16FE4),
    (0x16FF0, 0x16FF6),
    (0x17000, 0x18CDA),
    (0x18CFF, 0x18D20),
    (0x18D80, 0x18DF2),
    (0x18E00, 0x19191),
    (0x191A0, 0x191D2),
    (0x1AFF0, 0x1AFF3),
    (0x1AFF5, 0x1AFFB),
    (0x1AFFD, 0x1AFFE),
    (0x1B000, 0x1B128),
    (0x1B132, 0x1B132),
    (0x1B150, 0x1B152),
    (0x1B155, 0x1B155),
    (0x1B164, 0x1B168),
    (0x1B170, 0x1B2FB),
    (0x1BC00, 0x1BC6A),
    (0x1BC70, 0x1BC7C),
    (0x1BC80, 0x1BC88),
    (0x1BC90, 0x1BC99),
    (0x1BC9D, 0x1BC9E),
    (0x1CCF0, 0x1CCF9),
    (0x1CF00, 0x1CF2D),
    (0x1CF30, 0x1CF46),
    (0x1D127, 0x1D128),
    (0x1D165, 0x1D169),
    (0x1D16D, 0x1D172),
    (0x1D17B, 0x1D182),
    (0x1D185, 0x1D18B),
    (0x1D1AA, 0x1D1AD),
    (0x1D242, 0x1D244),
    (0x1D250, 0x1D252),
    (0x1D25B, 0x1D25C),
    (0x1D25F, 0x1D25F),
    (0x1D280, 0x1D281),
    (0x1D400, 0x1D454),
    (0x1D456, 0x1D49C),
    (0x1D49E, 0x1D49F),
    (0x1D4A2, 0x1D4A2),
    (0x1D4A5, 0x1D4A6),
    (0x1D4A9, 0x1D4AC),
    (0x1D4AE, 0x1D4B9),
    (0x1D4BB, 0x1D4BB),
    (0x1D4BD, 0x1D4C3),
    (0x1D4C5, 0x1D505),
    (0x1D507, 0x1D50A),
    (0x1D50D, 0x1D514),
    (0x1D516, 0x1D51C),
    (0x1D51E, 0x1D539),
    (0x1D53B, 0x1D53E),
    (0x1D540, 0x1D544),
    (0x1D546, 0x1D546),
    (0x1D54A, 0x1D550),
    (0x1D552, 0x1D6A6),
    (0x1D6A8, 0x1D6C0),
    (0x1D6C2, 0x1D6DA),
    (0x1D6DC, 0x1D6FA),
    (0x1D6FC, 0x1D714),
    (0x1D716, 0x1D734),
    (0x1D736, 0x1D74E),
    (0x1D750, 0x1D76E),
    (0x1D770, 0x1D788),
    (0x1D78A, 0x1D7A8),
    (0x1D7AA, 0x1D7C2),
    (0x1D7C4, 0x1D7CB),
    (0x1D7CE, 0x1D7FF),
    (0x1DA00, 0x1DA36),
    (0x1DA3B, 0x1DA6C),
    (0x1DA75, 0x1DA75),
    (0x1DA84, 0x1DA84),
    (0x1DA9B, 0x1DA9F),
    (0x1DAA1, 0x1DAAF),
    (0x1DF00, 0x1DF81),
    (0x1DF90, 0x1DF96),
    (0x1DFCD, 0x1E006),
    (0x1E008, 0x1E018),
    (0x1E01B, 0x1E021),
    (0x1E023, 0x1E024),
    (0x1E026, 0x1E02A),
    (0x1E030, 0x1E06D),
    (0x1E08F, 0x1E08F),
    (0x1E100, 0x1E12C),
    (0x1E130, 0x1E13D),
    (0x1E140, 0x1E149),
    (0x1E14E, 0x1E14E),
    (0x1E290, 0x1E2AE),
    (0x1E2C0, 0x1E2F9),
    (0x1E4D0, 0x1E4F9),
    (0x1E5D0, 0x1E5FA),
    (0x1E6C0, 0x1E6DE),
    (0x1E6E0, 0x1E6F5),
    (0x1E6FE, 0x1E6FF),
    (0x1E7E0, 0x1E7E6),
    (0x1E7E8, 0x1E7EB),
    (0x1E7ED, 0x1E7EE),
    (0x1E7F0, 0x1E7FE),
    (0x1E800, 0x1E8C4),
    (0x1E8D0, 0x1E8D6),
    (0x1E900, 0x1E94B),
    (0x1E950, 0x1E959),
    (0x1EE00, 0x1EE03),
    (0x1EE05, 0x1EE1F),
    (0x1EE21, 0x1EE22),
    (0x1EE24, 0x1EE24),
    (0x1EE27, 0x1EE27),
    (0x1EE29, 0x1EE32),
    (0x1EE34, 0x1EE37),
    (0x1EE39, 0x1EE39),
    (0x1EE3B, 0x1EE3B),
    (0x1EE42, 0x1EE42),
    (0x1EE47, 0x1EE47),
    (0x1EE49, 0x1EE49),
    (0x1EE4B, 0x1EE4B),
    (0x1EE4D, 0x1EE4F),
    (0x1EE51, 0x1EE52),
    (0x1EE54, 0x1EE54),
    (0x1EE57, 0x1EE57),
    (0x1EE59, 0x1EE59),
    (0x1EE5B, 0x1EE5B),
    (0x1EE5D, 0x1EE5D),
    (0x1EE5F, 0x1EE5F),
    (0x1EE61, 0x1EE62),
    (0x1EE64, 0x1EE64),
    (0x1EE67, 0x1EE6A),
    (0x1EE6C, 0x1EE72),
    (0x1EE74, 0x1EE77),
    (0x1EE79, 0x1EE7C),
    (0x1EE7E, 0x1EE7E),
    (0x1EE80, 0x1EE89),
    (0x1EE8B, 0x1EE9B),
    (0x1EEA1, 0x1EEA3),
    (0x1EEA5, 0x1EEA9),
    (0x1EEAB, 0x1EEBB),
    (0x1F130, 0x1F149),
    (0x1F150, 0x1F169),
    (0x1F170, 0x1F189),
    (0x1FBF0, 0x1FBF9),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B81E),
    (0x2B820, 0x2CEAD),
    (0x2CEB0, 0x2EBE0),
    (0x2EBF0, 0x2EE5D),
    (0x2F800, 0x2FA1D),
    (0x30000, 0x3134A),
    (0x31350, 0x33479),
    (0x3D000, 0x3FC3F),
    (0xE0100, 0xE01EF),
];

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str =
        "2024/01/01 00:00:00 [error] 37#37: *5 connect() failed (111: Connection refused) \
        while connecting to upstream, client: 10.0.0.1, server: 0.0.0.0:9009, upstream: \
        \"10.0.0.2:9009\", bytes from/to client:0/0, bytes from/to upstream:0/0";
    const HTTP_LINE: &str =
        "2024/01/02 03:04:05 [error] 7#7: *1 no live upstreams while connecting \
        to upstream, client: 10.0.0.1, server: a, request: \"GET / HTTP/1.1\", upstream: \
        \"http://b/\", host: \"a\"";
    const EV: &str = "2024/01/01 00:00:00 [error] 1#1: x";
    const CRI_TS: &str = "2024-01-01T00:00:00.123456789Z";

    fn cri(payload: &str, tag: &str, stream: &str) -> String {
        format!("{CRI_TS} {stream} {tag} {payload}")
    }

    fn json_string(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    fn docker(log: &str, stream: &str) -> String {
        format!(
            "{{\"log\":{},\"stream\":{},\"time\":\"2024-01-01T00:00:00.1Z\"}}",
            json_string(log),
            json_string(stream)
        )
    }

    /// What the Python's `Unwrapped` collects over some lines.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Out {
        lines: Vec<Vec<u8>>,
        broken: Vec<(&'static str, Vec<u8>)>,
        partial: u64,
    }

    fn unwrap_into(u: &mut Unwrapper, lines: &[&[u8]], out: &mut Out) {
        for line in lines {
            match u.unwrap(line) {
                Step::Line { text, pieces } => {
                    out.lines.push(text.into_owned());
                    out.partial += pieces;
                }
                Step::Broken { reason, raws } => {
                    out.broken.extend(raws.into_iter().map(|r| (reason, r)));
                }
                Step::Held => {}
            }
            out.partial += u.unreported_pieces();
        }
    }

    fn unwrap_with(u: &mut Unwrapper, lines: &[&str]) -> Out {
        let mut out = Out::default();
        let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        unwrap_into(u, &lines, &mut out);
        out
    }

    fn unwrap(lines: &[&str]) -> Out {
        unwrap_with(&mut Unwrapper::new(64 * 1024), lines)
    }

    fn out(lines: &[&str], broken: &[(&'static str, &str)], partial: u64) -> Out {
        Out {
            lines: lines.iter().map(|l| l.as_bytes().to_vec()).collect(),
            broken: broken
                .iter()
                .map(|(r, l)| (*r, l.as_bytes().to_vec()))
                .collect(),
            partial,
        }
    }

    fn only_line(line: &str) -> Vec<u8> {
        let o = unwrap(&[line]);
        assert!(o.broken.is_empty() && o.partial == 0, "{o:?}");
        assert_eq!(o.lines.len(), 1);
        o.lines.into_iter().next().unwrap_or_default()
    }

    /// The `[[example]]` entries of parsers/wrappers.toml: (line, wrapper, inner).
    fn examples() -> Vec<(String, String, String)> {
        let spec = include_str!("../../parsers/wrappers.toml");
        let mut found = Vec::new();
        let mut current: [Option<String>; 3] = [None, None, None];
        for line in spec.lines() {
            for (i, key) in ["line = ", "wrapper = ", "inner = "].iter().enumerate() {
                if let Some(value) = line.strip_prefix(key) {
                    current[i] = Some(value[1..value.len() - 1].to_string());
                }
            }
            if let [Some(l), Some(w), Some(i)] = &current {
                found.push((l.clone(), w.clone(), i.clone()));
                current = [None, None, None];
            }
        }
        found
    }

    #[test]
    fn every_example_of_the_spec_unwraps_to_its_inner_line() {
        let found = examples();
        assert_eq!(found.len(), 7);
        for (line, wrapper, inner) in found {
            let mut u = Unwrapper::new(64 * 1024);
            assert_eq!(
                unwrap_with(&mut u, &[&line]),
                out(&[&inner], &[], 0),
                "{line}"
            );
            assert_eq!(u.last(), Some(wrapper.as_str()));
        }
    }

    #[test]
    fn an_nginx_line_passes_borrowed_and_unchanged() {
        let mut u = Unwrapper::new(64 * 1024);
        let line = LINE.as_bytes();
        match u.unwrap(line) {
            Step::Line {
                text: Cow::Borrowed(text),
                pieces: 0,
            } => {
                assert_eq!(text.as_ptr(), line.as_ptr());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(u.last(), None);
        assert_eq!(
            unwrap_with(&mut u, &[&cri(LINE, "F", "stderr"), LINE])
                .lines
                .len(),
            2
        );
        assert_eq!(u.last(), Some("cri"));
    }

    #[test]
    fn unwrapped_payloads_are_borrowed_from_the_line() {
        for line in [
            cri(LINE, "F", "stderr"),
            format!("<187>Nov 25 17:33:53 nginx: {LINE}"),
            format!("kong_1 | {LINE}"),
            docker(&format!("{EV}\n"), "stderr"),
            docker(&format!("{EV}\r\n"), "stderr"),
        ] {
            let mut u = Unwrapper::new(64 * 1024);
            match u.unwrap(line.as_bytes()) {
                Step::Line {
                    text: Cow::Borrowed(_),
                    pieces: 0,
                } => {}
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    // -- CRI -------------------------------------------------------------------------

    #[test]
    fn cri_timestamps() {
        for ts in [
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00.5+02:00",
            "2024-01-01T00:00:00-07:00",
            // `\d` of the `regex` module is any decimal digit.
            "٢٠٢٤-٠١-01T00:00:00Z",
        ] {
            assert_eq!(
                only_line(&format!("{ts} stdout F {LINE}")),
                LINE.as_bytes(),
                "{ts}"
            );
        }
        for ts in [
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00",
            "2024-01-01 00:00:00Z",
        ] {
            let line = format!("{ts} stdout F {LINE}");
            assert_eq!(only_line(&line), line.as_bytes(), "{ts}");
        }
    }

    #[test]
    fn cri_shapes() {
        // No payload: "".
        assert_eq!(only_line(&format!("{CRI_TS} stderr F")), b"");
        // Anything but a space after the tag: no CRI line.
        let line = format!("{CRI_TS} stderr Fx");
        assert_eq!(only_line(&line), line.as_bytes());
        let line = format!("{CRI_TS} stdin F {EV}");
        assert_eq!(only_line(&line), line.as_bytes());
        // The payload is the rest, spaces included.
        assert_eq!(only_line(&format!("{CRI_TS} stderr F  x ")), b" x ");
    }

    #[test]
    fn cri_partial_pieces_are_joined() {
        let raws = [
            cri(&LINE[..20], "P", "stderr"),
            cri(&LINE[20..70], "P", "stderr"),
            cri(&LINE[70..], "F", "stderr"),
        ];
        assert_eq!(
            unwrap(&[&raws[0], &raws[1], &raws[2]]),
            out(&[LINE], &[], 2)
        );
        // Across calls, a piece ending in a space.
        let mut u = Unwrapper::new(64 * 1024);
        let (head, rest) = LINE.split_at(28);
        assert!(head.ends_with(' '));
        assert_eq!(
            unwrap_with(&mut u, &[&cri(head, "P", "stderr")]),
            out(&[], &[], 0)
        );
        let o = unwrap_with(
            &mut u,
            &[&cri(rest, "F", "stderr"), &cri(HTTP_LINE, "F", "stderr")],
        );
        assert_eq!(o, out(&[LINE, HTTP_LINE], &[], 1));
    }

    #[test]
    fn cri_any_split_joins_to_the_line() {
        let n = LINE.len();
        for a in (0..=n).step_by(7) {
            for b in (a..=n).step_by(23) {
                let raws = [
                    cri(&LINE[..a], "P", "stdout"),
                    cri(&LINE[a..b], "P", "stdout"),
                    cri(&LINE[b..], "F", "stdout"),
                ];
                assert_eq!(
                    unwrap(&[&raws[0], &raws[1], &raws[2]]),
                    out(&[LINE], &[], 2)
                );
            }
        }
    }

    #[test]
    fn cri_pieces_of_other_streams_are_not_joined() {
        let o = unwrap(&[
            &cri("10.0.0.1 - - \"GET /long", "P", "stdout"),
            &cri(LINE, "F", "stderr"),
            &cri("rest\"", "F", "stdout"),
        ]);
        assert_eq!(o, out(&[LINE, "10.0.0.1 - - \"GET /longrest\""], &[], 1));
    }

    #[test]
    fn joined_pieces_keep_the_python_text_of_invalid_bytes() {
        // The Python decodes each raw line: a character split between two pieces is two
        // invalid pieces, `\xe2\x82` and `\xac`, never a "€".
        let mut u = Unwrapper::new(64 * 1024);
        let first = [format!("{CRI_TS} stderr P ab").as_bytes(), b"\xe2\x82"].concat();
        let last = [
            format!("{CRI_TS} stderr F ").as_bytes(),
            b"\xac",
            EV.as_bytes(),
        ]
        .concat();
        let mut o = Out::default();
        unwrap_into(&mut u, &[&first, &last], &mut o);
        let want = format!("ab\\xe2\\x82\\xac{EV}");
        assert_eq!(o, out(&[&want], &[], 1));
    }

    // -- docker json-file ------------------------------------------------------------------

    #[test]
    fn docker_json_lines() {
        let mut u = Unwrapper::new(64 * 1024);
        assert_eq!(
            unwrap_with(&mut u, &[&docker(&format!("{LINE}\n"), "stderr")]),
            out(&[LINE], &[], 0)
        );
        assert_eq!(u.last(), Some("docker_json"));
        assert_eq!(
            only_line(&docker(&format!("{LINE}\r\n"), "stderr")),
            LINE.as_bytes()
        );
        // Escapes are decoded.
        assert_eq!(
            only_line(&docker(&format!("{HTTP_LINE}\n"), "stderr")),
            HTTP_LINE.as_bytes()
        );
        // Key order and spacing.
        let raw = format!(
            "{{\"stream\": \"stderr\", \"log\" : {}}}",
            json_string(&format!("{LINE}\n"))
        );
        assert_eq!(only_line(&raw), LINE.as_bytes());
        // A wrapper inside.
        let inner = format!("<187>Nov 25 17:33:53 nginx: {LINE}\n");
        assert_eq!(only_line(&docker(&inner, "stderr")), LINE.as_bytes());
    }

    #[test]
    fn docker_json_strings() {
        let cases: [(&[u8], &str); 7] = [
            (
                br#"{"log":"a\ud83d\ude00\u00e9\/\b\f\t\"\\\n"}"#,
                "a😀é/\u{8}\u{c}\t\"\\",
            ),
            // A backslash before an invalid byte: the Python's text reads `\\` `xff`.
            (b"{\"log\":\"\\\xffz\\n\"}", "\\xffz"),
            (br#"{"log":"x\n"} "#, "x"),
            (b"{\"log\":\"x\\n\"}\t\r\n ", "x"),
            // Duplicate keys: the last one.
            (br#"{"log":"dup\n","log":"y\n"}"#, "y"),
            (
                br#"{"log":"x\n","n":123456789012345678901234567890,"m":[1,{"a":null}]}"#,
                "x",
            ),
            (br#"{"log":"\u0000\n"}"#, "\u{0}"),
        ];
        for (raw, want) in cases {
            let mut o = Out::default();
            unwrap_into(&mut Unwrapper::new(64 * 1024), &[raw], &mut o);
            assert_eq!(o, out(&[want], &[], 0), "{}", String::from_utf8_lossy(raw));
        }
        // A key written with escapes is "log" too (so the last one wins), but the shape
        // wants `"log"` itself.
        let raw = br#"{"log":"y\n","l\u006fg":"x\n"}"#;
        let mut o = Out::default();
        unwrap_into(&mut Unwrapper::new(64 * 1024), &[raw], &mut o);
        assert_eq!(o, out(&["x"], &[], 0));
        let raw = r#"{"l\u006fg":"x\n"}"#;
        assert_eq!(only_line(raw), raw.as_bytes());
    }

    #[test]
    fn broken_docker_json_is_reported_with_its_raw_line() {
        let deep_ok = format!(
            "{{\"log\":\"x\\n\",\"n\":{}{}}}",
            "[".repeat(1023),
            "]".repeat(1023)
        );
        assert_eq!(only_line(&deep_ok), b"x");
        let deep = format!(
            "{{\"log\":\"x\\n\",\"n\":{}{}}}",
            "[".repeat(1024),
            "]".repeat(1024)
        );
        let bad: Vec<&[u8]> = vec![
            br#"{"log":"2024/01/01 00:00:00 [error] 1#1: x\n", "stream": broken"#,
            br#"{"log": 5}"#,
            br#"{"log": null, "stream": "stderr"}"#,
            br#"{"log": ["a"]}"#,
            br#"{"log":"unterminated"#,
            br#"{"x":1,"log"  :"a\n","stream":"s",}"#,
            br#"{"log":"x\n"}x"#,
            br#"{"log":"\ud800\n"}"#,
            br#"{"log":"\udc00"}"#,
            br#"{"log":"\ud800\u0041"}"#,
            br#"{"log":"\x41"}"#,
            br#"{"log":"\u12g4"}"#,
            b"{\"log\":\"\xff\\n\"}",
            b"{\"log\":\"a\tb\\n\"}",
            b"{\"log\":\"\\\xe2\x82\\n\"}",
            br#"{"log":"x\n","n":1e400}"#,
            br#"{"log":"x\n","n":01}"#,
            br#"{"log":"x\n","n":1.}"#,
            br#"{"log":"x\n","n":-}"#,
            br#"{"log":"x\n","n":NaN}"#,
            br#"{"log":"x\n","n":tru}"#,
            br#"{"log":"x\n","n":[1,]}"#,
            br#"{"log":"x\n","n":{1:2}}"#,
            b"{\"log\":\"x\\n\"}\x0b",
            b"{\"log\":\"x\\n\"}\xef\xbb\xbf",
            b"{\"log\":",
            deep.as_bytes(),
        ];
        for raw in bad {
            let mut u = Unwrapper::new(64 * 1024);
            let mut o = Out::default();
            unwrap_into(&mut u, &[raw], &mut o);
            assert_eq!(
                o.broken,
                vec![("bad_docker_json", raw.to_vec())],
                "{}",
                String::from_utf8_lossy(raw)
            );
            assert!(o.lines.is_empty());
            assert_eq!(u.last(), Some("docker_json"));
        }
    }

    #[test]
    fn docker_json_pieces_without_newline_are_joined() {
        let o = unwrap(&[
            &docker(&LINE[..40], "stderr"),
            &docker(&LINE[40..90], "stderr"),
            &docker(&format!("{}\n", &LINE[90..]), "stderr"),
        ]);
        assert_eq!(o, out(&[LINE], &[], 2));
        let o = unwrap(&[
            &docker("access part", "stdout"),
            &docker(&format!("{LINE}\n"), "stderr"),
            &docker(" end\n", "stdout"),
        ]);
        assert_eq!(o, out(&[LINE, "access part end"], &[], 1));
    }

    #[test]
    fn docker_streams_are_python_str_of_the_value() {
        // 1e2 and 100.0 are both the float 100.0; true is "True", -0 and 0 the int 0.
        let mut u = Unwrapper::new(64 * 1024);
        let o = unwrap_with(
            &mut u,
            &[
                r#"{"log":"a","stream":1e2}"#,
                r#"{"log":"b\n","stream":100.0}"#,
                r#"{"log":"c","stream":true}"#,
                r#"{"log":"d","stream":"True"}"#,
                r#"{"log":"e","stream":-0}"#,
                r#"{"log":"f","stream":0}"#,
                r#"{"log":"g"}"#,
                r#"{"log":"h","stream":""}"#,
            ],
        );
        assert_eq!(o, out(&["ab"], &[], 1));
        assert_eq!(
            u.flush(),
            (vec![b"cd".to_vec(), b"ef".to_vec(), b"gh".to_vec()], 3)
        );
    }

    #[test]
    fn python_float_repr() {
        let cases = [
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (1234567890123456.0, "1234567890123456.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (2.5e-5, "2.5e-05"),
            (1.5, "1.5"),
            (100.0, "100.0"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (-1.0, "-1.0"),
            (1.2345678901234568e29, "1.2345678901234568e+29"),
            (1.5e300, "1.5e+300"),
            (5e-324, "5e-324"),
            (0.1, "0.1"),
        ];
        for (v, want) in cases {
            assert_eq!(py_float_repr(v), want);
        }
    }

    #[test]
    fn a_cri_line_may_carry_a_docker_piece() {
        // The CRI join counts its piece even when the joined text is itself a piece.
        let mut u = Unwrapper::new(64 * 1024);
        let first = format!("{CRI_TS} stderr P {{\"log\":\"ab");
        assert_eq!(u.unwrap(first.as_bytes()), Step::Held);
        assert_eq!(u.unreported_pieces(), 0);
        assert_eq!(
            u.unwrap(format!("{CRI_TS} stderr F c\"}}").as_bytes()),
            Step::Held
        );
        assert_eq!(u.last(), Some("docker_json"));
        assert_eq!(u.unreported_pieces(), 1);
        assert_eq!(
            u.unwrap(EV.as_bytes()),
            Step::Line {
                text: Cow::Borrowed(EV.as_bytes()),
                pieces: 0
            }
        );
        assert_eq!(u.unreported_pieces(), 0);
        assert_eq!(u.flush(), (vec![b"abc".to_vec()], 0));
        // And a broken record.
        let mut u = Unwrapper::new(64 * 1024);
        u.unwrap(format!("{CRI_TS} stderr P {{\"log\"").as_bytes());
        let last = format!("{CRI_TS} stderr F :5}}");
        let want = Step::Broken {
            reason: "bad_docker_json",
            raws: vec![last.as_bytes().to_vec()],
        };
        assert_eq!(u.unwrap(last.as_bytes()), want);
        assert_eq!(u.unreported_pieces(), 1);
    }

    // -- syslog, journal, compose ----------------------------------------------------------

    #[test]
    fn rfc3164() {
        for prefix in [
            "<187>Nov 25 17:33:53 nginx: ",
            "<187>Nov 25 17:33:53 vm nginx: ",
            "<187>Nov  5 17:33:53 vm nginx: ",
            "<187>Nov  5 17:33:53 nginx: ",
            "<11>Jan 31 00:00:00 host.example.com nginx[123]: ",
            "<0>Dec  1 23:59:59 nginx_errors: ",
            // The host is lazy: taken only when the line does not match without it.
            "<1>Nov 25 17:33:53 a:b c: ",
            "<1>Nov 25 17:33:53 h[1] c: ",
            "<1>Nov 25 17:33:53 x]y: ",
        ] {
            let mut u = Unwrapper::new(64 * 1024);
            assert_eq!(
                unwrap_with(&mut u, &[&format!("{prefix}{LINE}")]),
                out(&[LINE], &[], 0),
                "{prefix}"
            );
            assert_eq!(u.last(), Some("rfc3164"));
        }
        // A definite shape: its payload is taken whatever it is.
        assert_eq!(
            only_line("<13>Nov  5 17:33:53 vm cron[1]: job done"),
            b"job done"
        );
        // Without the host: the tag is everything up to ": " (here "vm").
        assert_eq!(only_line("<13>Nov  5 17:33:53 vm: a b: c"), b"a b: c");
        for line in [
            "<1234>Nov 25 17:33:53 nginx: x",
            "<13>nov 25 17:33:53 nginx: x",
            "<13>Nov 25 17:33:53 nginx:x",
            "<13>Nov 25 17:33:53 nginx[x]: x",
            "<13>Nov 25 17:33:53  nginx: x",
        ] {
            assert_eq!(only_line(line), line.as_bytes(), "{line}");
        }
    }

    #[test]
    fn rfc5424() {
        for sd in [
            "-",
            r#"[exampleSDID@32473 iut="3" eventSource="Application" eventID="1011"]"#,
            r#"[a@1 k="v"][b@2 x="y"]"#,
            r#"[a@1 k="quote \" and bracket \] inside"]"#,
            r#"[timeQuality tzKnown="1" isSynced="1"]"#,
            r#"[a [nested \\ "x]y"]"#,
        ] {
            let raw = format!(
                "<171>1 2025-11-05T20:47:03.000000+00:00 firewall.lan nginx 4242 ID47 {sd} {LINE}"
            );
            let mut u = Unwrapper::new(64 * 1024);
            assert_eq!(unwrap_with(&mut u, &[&raw]), out(&[LINE], &[], 0), "{sd}");
            assert_eq!(u.last(), Some("rfc5424"));
        }
        // The BOM, and the same three bytes read as Latin-1 ("ï»¿").
        assert_eq!(
            only_line(&format!("<171>1 - - - - - [a@1 k=\"v\"] \u{feff}{LINE}")),
            LINE.as_bytes()
        );
        assert_eq!(
            only_line(&format!("<171>1 - - - - - - \u{ef}\u{bb}\u{bf}{LINE}")),
            LINE.as_bytes()
        );
        assert_eq!(
            only_line(&format!("<171>1 - - - - - - {LINE}")),
            LINE.as_bytes()
        );
        // No message: "".
        assert_eq!(only_line("<171>1 - - - - - -"), b"");
        assert_eq!(only_line("<171>1 - - - - - [x]"), b"");
        for line in [
            "<171>1 - - - - - -x",
            "<171>1 - - - - - [x",
            "<171>1 - - - - - [x=\"]",
            "<171>1 - - - - - [x]y",
            "<171>1 - - - - -",
            "<171>1 - - - -  - - x",
            "<171>2 - - - - - - x",
        ] {
            assert_eq!(only_line(line), line.as_bytes(), "{line}");
        }
    }

    #[test]
    fn journal() {
        let mut u = Unwrapper::new(64 * 1024);
        let raw = format!("host nginx[23141]: host nginx: {LINE}");
        assert_eq!(unwrap_with(&mut u, &[&raw]), out(&[LINE], &[], 0));
        assert_eq!(u.last(), Some("journal"));
        for prefix in [
            "Jan  5 01:02:03 myhost nginx[5]: ",
            "Jan 15 01:02:03 myhost nginx: ",
            "2024-01-05T01:02:03.123456+00:00 myhost nginx[5]: ",
            "myhost nginx[5]: ",
            "Jan  5 01:02:03 myhost nginx[5]: myhost nginx: ",
            "h php-fpm/8.1: ",
            // `\w` of the `regex` module: letters, marks, digits, connectors.
            "h ngínx: ",
            "h ng\u{301}x: ",
            "h a\u{203f}b: ",
            // Without the time when the line does not match with it.
            "2024-01-05Tx h: ",
        ] {
            assert_eq!(
                only_line(&format!("{prefix}{LINE}")),
                LINE.as_bytes(),
                "{prefix}"
            );
        }
        // `²` is a digit of no decimal kind: no word character.
        let line = format!("h n²: {LINE}");
        assert_eq!(only_line(&line), line.as_bytes());
        // With the time, the host is "nginx:" (no host); without it, the tag " 5".
        let line = format!("Jan  5 01:02:03 nginx: {LINE}");
        assert_eq!(only_line(&line), line.as_bytes());
    }

    #[test]
    fn compose() {
        let mut u = Unwrapper::new(64 * 1024);
        assert_eq!(
            unwrap_with(&mut u, &[&format!("kong_1         | {LINE}")]).lines,
            vec![LINE.as_bytes()]
        );
        assert_eq!(u.last(), Some("compose"));
        // `\s` of the `regex` module is Unicode White_Space, which \x1c is not.
        assert_eq!(only_line(&format!("svc\u{3000}| {LINE}")), LINE.as_bytes());
        assert_eq!(only_line(&format!("svc\u{85}| {LINE}")), LINE.as_bytes());
        let line = format!("svc\x1c| {LINE}");
        assert_eq!(only_line(&line), line.as_bytes());
        assert_eq!(only_line(&format!("sérvice | {LINE}")), LINE.as_bytes());
    }

    #[test]
    fn invalid_bytes_are_as_their_escapes() {
        // `\xff` is four non-space characters of the Python's text.
        let mut o = Out::default();
        let lines: [&[u8]; 3] = [
            &[b"h\xff nginx: ", EV.as_bytes()].concat(),
            &[b"<13>Nov  5 17:33:53 h\xff nginx: ", EV.as_bytes()].concat(),
            &[b"<1>1 - h\xff - - - [a=\"\xff\" \\\xff] ", EV.as_bytes()].concat(),
        ];
        unwrap_into(&mut Unwrapper::new(64 * 1024), &lines, &mut o);
        assert_eq!(o, out(&[EV, EV, EV], &[], 0));
        // ... never a word or digit character.
        for line in [
            &[b"h n\xffx: ", EV.as_bytes()].concat(),
            &[b"s\xff | ", EV.as_bytes()].concat(),
        ] {
            let mut o = Out::default();
            unwrap_into(&mut Unwrapper::new(64 * 1024), &[line], &mut o);
            assert_eq!(o.lines, vec![line.clone()]);
        }
    }

    #[test]
    fn cri_around_syslog_and_nesting_depth() {
        let raw = cri(
            &format!("<13>Nov  5 17:33:53 myhost nginx: {LINE}"),
            "F",
            "stderr",
        );
        let mut u = Unwrapper::new(64 * 1024);
        assert_eq!(unwrap_with(&mut u, &[&raw]).lines, vec![LINE.as_bytes()]);
        assert_eq!(u.last(), Some("rfc3164"));
        // Three wrappers are removed; a fourth stays.
        let three = format!("a b: c d: e f: {EV}");
        assert_eq!(only_line(&three), EV.as_bytes());
        let four = format!("<1>Nov  5 17:33:53 t: a b: c d: e f: {EV}");
        assert_eq!(only_line(&four), format!("e f: {EV}").as_bytes());
    }

    #[test]
    fn a_loose_wrapper_needs_an_nginx_line_inside() {
        for line in [
            "PHP message: PHP Warning: x",
            "PHP message: PHP Warning:  Undefined variable $a in /var/www/index.php on line 3",
            "kong_1   | PHP message: x",
            "host php: hello",
            "stack traceback:",
            "\tcoroutine 0:",
            "",
        ] {
            let mut u = Unwrapper::new(64 * 1024);
            assert_eq!(unwrap_with(&mut u, &[line]), out(&[line], &[], 0));
            assert_eq!(u.last(), None);
        }
        // Inside more wrappers is fine (up to the depth), a definite one too.
        assert_eq!(only_line(&format!("svc | h nginx: {EV}")), EV.as_bytes());
        assert_eq!(only_line("svc | <13>Nov  5 17:33:53 cron: job"), b"job");
        let mut u = Unwrapper::new(64 * 1024);
        let o = unwrap_with(
            &mut u,
            &[
                &format!("host nginx[1]: {LINE}"),
                "PHP message: PHP Warning: x",
            ],
        );
        assert_eq!(
            o.lines,
            vec![LINE.as_bytes(), b"PHP message: PHP Warning: x"]
        );
    }

    #[test]
    fn the_wrapper_seen_last_is_tried_first() {
        // Both a docker record (broken) and a journal line.
        let line = format!("{{\"x\" y: {EV}\"log\":");
        let mut u = Unwrapper::new(64 * 1024);
        assert_eq!(
            unwrap_with(&mut u, &[&line]),
            out(&[], &[("bad_docker_json", &line)], 0)
        );
        let mut u = Unwrapper::new(64 * 1024);
        unwrap_with(&mut u, &[&format!("h nginx: {EV}")]);
        assert_eq!(
            unwrap_with(&mut u, &[&line]),
            out(&[&format!("{EV}\"log\":")], &[], 0)
        );
        assert_eq!(u.last(), Some("journal"));
    }

    // -- bounds and flush ------------------------------------------------------------------

    #[test]
    fn over_long_pieces_are_reported() {
        let mut u = Unwrapper::new(50);
        let x30 = "x".repeat(30);
        let o = unwrap_with(
            &mut u,
            &[&cri(&x30, "P", "stderr"), &cri(&x30, "P", "stderr")],
        );
        assert_eq!(o, out(&[], &[("too_long", &x30), ("too_long", &x30)], 0));
        // The rest of the line is dropped up to its last piece, one record a raw line.
        let o = unwrap_with(
            &mut u,
            &[
                &cri(&"y".repeat(30), "P", "stderr"),
                &cri("zzzzz", "F", "stderr"),
                &cri(LINE, "F", "stderr"),
            ],
        );
        assert_eq!(
            o,
            out(
                &[LINE],
                &[("too_long", &"y".repeat(30)), ("too_long", "zzzzz")],
                0
            )
        );
        // A broken record holds the first 200 characters of a piece.
        let mut u = Unwrapper::new(250);
        let long = "é".repeat(240);
        let a20 = "a".repeat(20);
        let o = unwrap_with(
            &mut u,
            &[&cri(&long, "P", "stderr"), &cri(&a20, "P", "stderr")],
        );
        let want = out(
            &[],
            &[("too_long", &"é".repeat(200)), ("too_long", &a20)],
            0,
        );
        assert_eq!(o, want);
        // Characters, not bytes: 240 "é" (480 bytes) are within 250.
        let mut u = Unwrapper::new(250);
        let o = unwrap_with(
            &mut u,
            &[&cri(&long, "P", "stderr"), &cri("a", "F", "stderr")],
        );
        assert_eq!(o, out(&[&format!("{long}a")], &[], 1));
        // An invalid byte is four characters (`\xff`), and cut as the Python cuts its text.
        let mut u = Unwrapper::new(10);
        let first = [format!("{CRI_TS} stderr P abcdefghi").as_bytes(), b"\xff"].concat();
        let mut o = Out::default();
        unwrap_into(&mut u, &[&first], &mut o);
        assert_eq!(o, out(&[], &[("too_long", "abcdefghi\\xff")], 0));
        let mut u = Unwrapper::new(300);
        let piece = [&[b'a'; 198][..], b"\xff"].concat();
        let raw = [format!("{CRI_TS} stderr P ").as_bytes(), &piece, &piece].concat();
        let mut o = Out::default();
        unwrap_into(&mut u, &[&raw], &mut o);
        let want = format!("{}\\x", "a".repeat(198));
        assert_eq!(o, out(&[], &[("too_long", &want)], 0));
    }

    #[test]
    fn rest_of_an_over_long_docker_line_is_dropped() {
        let mut u = Unwrapper::new(50);
        let x30 = "x".repeat(30);
        let o = unwrap_with(
            &mut u,
            &[
                &docker(&x30, "stderr"),
                &docker(&x30, "stderr"),
                &docker("y\n", "stderr"),
                &docker(&format!("{LINE}\n"), "stderr"),
            ],
        );
        assert_eq!(
            o,
            out(
                &[LINE],
                &[("too_long", &x30), ("too_long", &x30), ("too_long", "y")],
                0
            )
        );
    }

    #[test]
    fn flush_gives_the_pieces_whose_last_piece_never_came() {
        let mut u = Unwrapper::new(64 * 1024);
        let o = unwrap_with(
            &mut u,
            &[
                &docker(&HTTP_LINE[..10], "stderr"),
                &cri(&LINE[..30], "P", "stderr"),
                &cri(&LINE[30..60], "P", "stderr"),
            ],
        );
        assert_eq!(o, out(&[], &[], 0));
        // In the order the streams got their first piece, as the Python's dict.
        assert_eq!(
            u.flush(),
            (
                vec![
                    HTTP_LINE.as_bytes()[..10].to_vec(),
                    LINE.as_bytes()[..60].to_vec()
                ],
                1
            )
        );
        assert_eq!(u.flush(), (vec![], 0));
        assert_eq!(
            unwrap_with(&mut u, &[&cri(LINE, "F", "stderr")]).lines,
            vec![LINE.as_bytes()]
        );
        // Flush ends a dropped line too.
        let mut u = Unwrapper::new(10);
        unwrap_with(&mut u, &[&cri(&"x".repeat(11), "P", "stderr")]);
        assert_eq!(u.flush(), (vec![], 0));
        assert_eq!(
            unwrap_with(&mut u, &[&cri("ab", "F", "stderr")]),
            out(&["ab"], &[], 0)
        );
    }

    #[test]
    fn release_gives_the_pieces_but_keeps_a_line_dropped() {
        let mut u = Unwrapper::new(10);
        let o = unwrap_with(
            &mut u,
            &[
                &cri(&"x".repeat(11), "P", "stderr"),
                &cri("abc", "P", "stdout"),
            ],
        );
        assert_eq!(o, out(&[], &[("too_long", &"x".repeat(11))], 0));
        // The held stdout pieces come out; stderr's dropped line stays dropped.
        assert_eq!(u.release(), (vec![b"abc".to_vec()], 0));
        let o = unwrap_with(
            &mut u,
            &[
                &cri("yy", "P", "stderr"),
                &cri("zz", "F", "stderr"),
                &cri("ok", "F", "stderr"),
            ],
        );
        assert_eq!(
            o,
            out(&["ok"], &[("too_long", "yy"), ("too_long", "zz")], 0)
        );
    }

    #[test]
    fn empty_pieces_count_towards_the_bound() {
        // Each empty piece is a raw line: counted as one character, so a stream of them
        // is dropped (every one counted) instead of being held without end.
        let max_line = 100;
        let mut u = Unwrapper::new(max_line);
        let empty_p = cri("", "P", "stdout");
        let mut o = Out::default();
        for _ in 0..max_line {
            unwrap_into(&mut u, &[empty_p.as_bytes()], &mut o);
        }
        assert_eq!(o, Out::default());
        assert_eq!(u.pieces["cri:stdout".as_bytes()].ends.len(), max_line);
        unwrap_into(&mut u, &[empty_p.as_bytes()], &mut o);
        assert_eq!(o.broken.len(), max_line + 1);
        assert!(o
            .broken
            .iter()
            .all(|(r, t)| *r == "too_long" && t.is_empty()));
        assert!(u.pieces.is_empty());
        // Then dropped up to the last piece, one record each; the next line is whole.
        let mut o = Out::default();
        for _ in 0..1000 {
            unwrap_into(&mut u, &[empty_p.as_bytes()], &mut o);
        }
        let last = cri("", "F", "stdout");
        let line = cri(LINE, "F", "stdout");
        unwrap_into(&mut u, &[last.as_bytes(), line.as_bytes()], &mut o);
        assert_eq!(o.broken.len(), 1001);
        assert_eq!(o.lines, vec![LINE.as_bytes().to_vec()]);
        // A non-empty piece counts its characters only, as before: a line of exactly
        // max_line characters in pieces is whole.
        let mut u = Unwrapper::new(max_line);
        let half = "a".repeat(max_line / 2);
        let o = unwrap_with(
            &mut u,
            &[&cri(&half, "P", "stdout"), &cri(&half, "F", "stdout")],
        );
        assert_eq!(o, out(&[&format!("{half}{half}")], &[], 1));
        // Empty docker pieces too.
        let mut u = Unwrapper::new(max_line);
        let empty_d = docker("", "stdout");
        let mut o = Out::default();
        for _ in 0..=max_line {
            unwrap_into(&mut u, &[empty_d.as_bytes()], &mut o);
        }
        assert_eq!(o.broken.len(), max_line + 1);
        assert!(u.pieces.is_empty());
    }

    #[test]
    fn held_pieces_stay_bounded_in_any_stream() {
        // Millions of raw piece lines over 16 streams, empty and not: what is held never
        // passes max_line characters (plus one piece) a stream, whatever comes.
        let max_line = 1000;
        let mut u = Unwrapper::new(max_line);
        let shapes: Vec<String> = (0..MAX_STREAMS + 4)
            .flat_map(|s| {
                let stream = format!("s{s}");
                [docker("", &stream), docker("abcdefg", &stream)]
            })
            .chain([cri("", "P", "stdout"), cri("xyz", "P", "stderr")])
            .collect();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..300_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let line = &shapes[(state % shapes.len() as u64) as usize];
            let _ = u.unwrap(line.as_bytes());
            assert!(u.pieces.len() <= MAX_STREAMS);
        }
        for held in u.pieces.values() {
            assert!(held.chars <= max_line);
            assert!(held.ends.len() <= max_line);
            assert!(held.text.len() <= 4 * max_line);
        }
    }

    #[test]
    fn every_raw_line_is_accounted_for() {
        // One of: a line, a leading piece of a joined line, a broken record, or a piece
        // still held (given back by flush).
        let shapes = [
            String::new(),
            format!("{CRI_TS} stderr P "),
            format!("{CRI_TS} stdout F "),
            "{\"log\":\"".to_string(),
            "{\"log\":".to_string(),
            "<13>Nov  5 17:33:53 ".to_string(),
            "<13>1 - - - - - - ".to_string(),
            "host nginx[1]: ".to_string(),
            "svc | ".to_string(),
            LINE[..20].to_string(),
        ];
        let texts = [
            "",
            "x",
            "\\n\"}",
            "\"}",
            EV,
            &LINE[..80],
            "é\"",
            "\\u00e9\\n\"}",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..2000 {
            let raws: Vec<String> = (0..next(7))
                .map(|_| format!("{}{}", shapes[next(shapes.len())], texts[next(texts.len())]))
                .collect();
            let mut u = Unwrapper::new(100);
            let mut o = Out::default();
            for (i, raw) in raws.iter().enumerate() {
                if i == 2 {
                    let mut w = Writer::default();
                    u.save(&mut w);
                    u = Unwrapper::load(&mut Reader::new(&w.buf), 100).unwrap();
                }
                unwrap_into(&mut u, &[raw.as_bytes()], &mut o);
            }
            let (held, extra) = u.flush();
            let total = o.lines.len() as u64
                + o.partial
                + o.broken.len() as u64
                + held.len() as u64
                + extra;
            assert_eq!(total, raws.len() as u64, "{raws:?}");
        }
    }

    #[test]
    fn state_round_trips() {
        let mut u = Unwrapper::new(40);
        let lines = [
            docker("ab", "stdout"),
            cri("cd", "P", "stderr"),
            cri(&"x".repeat(30), "P", "stdout"),
            cri(&"x".repeat(30), "P", "stdout"),
        ];
        unwrap_with(&mut u, &[&lines[0], &lines[1], &lines[2], &lines[3]]);
        let mut w = Writer::default();
        u.save(&mut w);
        let mut r = Reader::new(&w.buf);
        let mut loaded = Unwrapper::load(&mut r, 40).unwrap();
        assert!(r.buf.is_empty());
        assert_eq!(loaded.last(), Some("cri"));
        let rest = [
            cri("y", "F", "stdout"),
            cri("ef", "F", "stderr"),
            docker("gh\n", "stdout"),
        ];
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        let want = unwrap_with(&mut u, &rest);
        assert_eq!(unwrap_with(&mut loaded, &rest), want);
        assert_eq!(want, out(&["cdef", "abgh"], &[("too_long", "y")], 2));
        assert_eq!(loaded.flush(), u.flush());
        let mut w = Writer::default();
        Unwrapper::new(10).save(&mut w);
        assert_eq!(
            Unwrapper::load(&mut Reader::new(&w.buf), 10)
                .unwrap()
                .last(),
            None
        );
        assert!(Unwrapper::load(&mut Reader::new(&[7, 0, 0]), 10).is_err());
        assert!(Unwrapper::load(&mut Reader::new(&[1, 1]), 10).is_err());
    }

    #[test]
    fn unicode_classes() {
        assert!(
            is_digit(Unit::Char('7')) && is_digit(Unit::Char('٣')) && is_digit(Unit::Char('𝟘'))
        );
        assert!(!is_digit(Unit::Char('²')) && !is_digit(Unit::Char('a')) && !is_digit(Unit::Bad));
        assert!(
            is_word(Unit::Char('_')) && is_word(Unit::Char('é')) && is_word(Unit::Char('\u{301}'))
        );
        assert!(
            is_word(Unit::Char('\u{200c}')) && is_word(Unit::Char('٣')) && is_word(Unit::Char('Ⅳ'))
        );
        assert!(!is_word(Unit::Char('-')) && !is_word(Unit::Char('²')) && !is_word(Unit::Bad));
        let spaces: Vec<char> = (0..=0x10FFFFu32)
            .filter_map(char::from_u32)
            .filter(|&c| is_space(Unit::Char(c)))
            .collect();
        assert_eq!(spaces.len(), 25);
        assert!(!is_space(Unit::Char('\x1c')) && is_space(Unit::Char('\u{85}')));
        assert!(DIGIT_RANGES.windows(2).all(|w| w[0].1 < w[1].0));
        assert!(WORD_RANGES.windows(2).all(|w| w[0].1 < w[1].0));
        assert_eq!(non_ascii(b"\xe2\x82\xac!"), (Unit::Char('€'), 3));
        assert_eq!(non_ascii(b"\xe2\x82!"), (Unit::Bad, 1));
        assert_eq!(non_ascii(b"\xed\xa0\x80"), (Unit::Bad, 1));
        assert_eq!(non_ascii(b"\xc3\xa9\xff"), (Unit::Char('é'), 2));
    }
}
