//! The head of an nginx error line: time, level, pid, tid, cid, and whether the message
//! is an upstream connect failure (port of retrywatch/parser.py, `Parser.head`).
//!
//! Everything works on bytes. The Python reference parses the text decoded with
//! `backslashreplace`; every pattern here delimits its groups with ASCII characters and
//! treats an invalid byte as Python treats its `\xNN` escape (not a digit, not a letter,
//! not a word character, not whitespace), so the groups are the same text once decoded.
//!
//! Numbers (`\d+`) are read into `u64`. Python's `int` has no bound; here a pid, tid or
//! cid that does not fit makes the line unparsed (`bad_prefix`), and a regex call whose
//! match holds an errno (or, in `event`, a byte counter) that does not fit is treated as
//! not matching (documented deviations, see [`parse_head`] and [`failure_kind`]).

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// An nginx log level (`levels` in parsers/nginx_error.toml, in that order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Level {
    Debug,
    Info,
    Notice,
    Warn,
    Error,
    Crit,
    Alert,
    Emerg,
}

const LEVELS: [Level; 8] = [
    Level::Debug,
    Level::Info,
    Level::Notice,
    Level::Warn,
    Level::Error,
    Level::Crit,
    Level::Alert,
    Level::Emerg,
];

impl Level {
    /// The name nginx writes (`"error"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Notice => "notice",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Crit => "crit",
            Level::Alert => "alert",
            Level::Emerg => "emerg",
        }
    }

    /// The level of [`Level::index`].
    pub fn from_index(i: u8) -> Option<Level> {
        LEVELS.get(usize::from(i)).copied()
    }

    /// 0 (debug) ..= 7 (emerg): the order of severity.
    pub fn index(self) -> u8 {
        self as u8
    }

    fn from_name(name: &[u8]) -> Option<Level> {
        LEVELS
            .iter()
            .copied()
            .find(|l| l.as_str().as_bytes() == name)
    }

    /// `error`, `crit`, `alert` or `emerg` (what `_classify` may call kind `other`).
    pub(crate) fn is_error_or_worse(self) -> bool {
        self.index() >= Level::Error.index()
    }
}

/// An upstream failure kind (events.py `Kind`; `[kinds]` of the TOML, then `other`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    ConnectFailed,
    ConnectToFailed,
    UpstreamTimedOut,
    NoLiveUpstreams,
    Other,
}

const KINDS: [Kind; 5] = [
    Kind::ConnectFailed,
    Kind::ConnectToFailed,
    Kind::UpstreamTimedOut,
    Kind::NoLiveUpstreams,
    Kind::Other,
];

impl Kind {
    /// The Python name (`"connect_failed"`, ..., `"other"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ConnectFailed => "connect_failed",
            Kind::ConnectToFailed => "connect_to_failed",
            Kind::UpstreamTimedOut => "upstream_timed_out",
            Kind::NoLiveUpstreams => "no_live_upstreams",
            Kind::Other => "other",
        }
    }

    /// The kind of [`Kind::index`].
    pub fn from_index(i: u8) -> Option<Kind> {
        KINDS.get(usize::from(i)).copied()
    }

    /// 0 ..= 4, in the order of the enum.
    pub fn index(self) -> u8 {
        self as u8
    }

    /// `CONNECT_FAILURE_KINDS`: always a connect failure (a timeout only while connecting).
    pub(crate) fn always_connect_failure(self) -> bool {
        matches!(
            self,
            Kind::ConnectFailed | Kind::ConnectToFailed | Kind::NoLiveUpstreams
        )
    }
}

/// The prefix of an nginx error event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The stamp as seconds since 1970-01-01 00:00:00 of the same civil time (no zone).
    pub naive: i64,
    pub level: Level,
    pub pid: u64,
    pub tid: u64,
    /// The connection id (`*CID`), absent on lines outside a connection.
    pub cid: Option<u64>,
    /// Where the message starts: Python's `m.end()` of the head pattern.
    pub msg_start: usize,
}

// -- small matchers ----------------------------------------------------------------------

/// `\d+` (ASCII) at `pos`: its end and its value (`None` when it does not fit in u64),
/// or `None` when no digit is there.
#[inline]
pub(crate) fn digits(text: &[u8], pos: usize) -> Option<(usize, Option<u64>)> {
    let run = text.get(pos..)?;
    let n = run.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let mut value: Option<u64> = Some(0);
    for &b in &run[..n] {
        value = value
            .and_then(|v| v.checked_mul(10))
            .and_then(|v| v.checked_add(u64::from(b - b'0')));
    }
    Some((pos + n, value))
}

#[inline]
fn at(text: &[u8], pos: usize, lit: &[u8]) -> bool {
    text.get(pos..).is_some_and(|rest| rest.starts_with(lit))
}

/// An ASCII word character (`\w` under `re.ASCII`): what `\b` looks at.
#[inline]
pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `\s` under `re.ASCII`: `[ \t\n\r\f\v]`.
#[inline]
pub(crate) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x0b')
}

// -- the head ------------------------------------------------------------------------------

/// Python `Parser.head`'s acceptance of `text` (one event: a line, or lines joined by
/// `\n`): the head, or the reason the event is unparsed: `"blank"`, `"bad_prefix"`,
/// `"no_timestamp"`, `"unknown_level"` or `"bad_timestamp"`.
///
/// Deviation: a pid, tid or cid too large for u64 gives `"bad_prefix"` (Python reads any
/// integer). It is checked last, so every line Python rejects gets Python's reason.
pub fn parse_head(text: &[u8]) -> Result<Head, &'static str> {
    // ^(?P<stamp>\d{4}/\d{2}/\d{2}\x20\d{2}:\d{2}:\d{2})
    const SHAPE: &[u8; 19] = b"dddd/dd/dd dd:dd:dd";
    let shape_ok = text.len() >= SHAPE.len()
        && SHAPE.iter().zip(text).all(|(&want, &got)| {
            if want == b'd' {
                got.is_ascii_digit()
            } else {
                got == want
            }
        });
    if !shape_ok {
        return Err(prefix_problem(text));
    }
    // \x20\[(?P<level>[a-z]+)\]
    if !at(text, 19, b" [") {
        return Err(prefix_problem(text));
    }
    let level_start = 21;
    let level_len = text[level_start..]
        .iter()
        .take_while(|b| b.is_ascii_lowercase())
        .count();
    let level_end = level_start + level_len;
    if level_len == 0 || !at(text, level_end, b"] ") {
        return Err(prefix_problem(text));
    }
    // \x20(?P<pid>\d+)\#(?P<tid>\d+):
    let Some((pid_end, pid)) = digits(text, level_end + 2) else {
        return Err(prefix_problem(text));
    };
    if !at(text, pid_end, b"#") {
        return Err(prefix_problem(text));
    }
    let Some((tid_end, tid)) = digits(text, pid_end + 1) else {
        return Err(prefix_problem(text));
    };
    if !at(text, tid_end, b":") {
        return Err(prefix_problem(text));
    }
    let colon_end = tid_end + 1;
    // (?:\x20\*(?P<cid>\d+))?(?:\x20|\Z): the group is tried first; when what follows its
    // digits is neither a space nor the end, backtracking into `\d+` cannot help (the next
    // character would be a digit), so the group is left out and `\x20|\Z` tried at `:`.
    let mut cid: Option<Option<u64>> = None;
    let mut msg_start = None;
    if at(text, colon_end, b" *") {
        if let Some((cid_end, value)) = digits(text, colon_end + 2) {
            if cid_end == text.len() {
                cid = Some(value);
                msg_start = Some(cid_end);
            } else if text[cid_end] == b' ' {
                cid = Some(value);
                msg_start = Some(cid_end + 1);
            }
        }
    }
    let msg_start = match msg_start {
        Some(end) => end,
        None if colon_end == text.len() => colon_end,
        None if text[colon_end] == b' ' => colon_end + 1,
        None => return Err(prefix_problem(text)),
    };
    let Some(level) = Level::from_name(&text[level_start..level_end]) else {
        return Err("unknown_level");
    };
    let Some(naive) = naive_time(&text[..19]) else {
        return Err("bad_timestamp");
    };
    let (Some(pid), Some(tid)) = (pid, tid) else {
        return Err("bad_prefix");
    };
    let cid = match cid {
        None => None,
        Some(Some(value)) => Some(value),
        Some(None) => return Err("bad_prefix"),
    };
    Ok(Head {
        naive,
        level,
        pid,
        tid,
        cid,
        msg_start,
    })
}

/// `_prefix_problem`: why a text that does not match the head pattern is no event.
fn prefix_problem(text: &[u8]) -> &'static str {
    if crate::text::is_blank(text) {
        return "blank";
    }
    // text[:4].isdigit() and text[4:5] == "/": four characters (not bytes) that Python's
    // str.isdigit accepts, then a slash. An invalid byte decodes to "\xNN" (no digit).
    let head = &text[..text.len().min(17)];
    let valid = match std::str::from_utf8(head) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
    };
    let mut chars = valid.char_indices();
    let mut after = 0;
    for _ in 0..4 {
        match chars.next() {
            Some((i, c)) if py_isdigit(c) => after = i + c.len_utf8(),
            _ => return "no_timestamp",
        }
    }
    if text.get(after) == Some(&b'/') {
        "bad_prefix"
    } else {
        "no_timestamp"
    }
}

/// The code points for which Python's `str.isdigit` is true (Unicode 14.0, Python 3.11:
/// numeric type Digit or Decimal), as sorted, disjoint inclusive ranges. Generated with
/// `chr(c).isdigit()` over every code point.
#[rustfmt::skip]
const DIGIT_RANGES: &[(u32, u32)] = &[
    (0x30, 0x39), (0xB2, 0xB3), (0xB9, 0xB9), (0x660, 0x669), (0x6F0, 0x6F9),
    (0x7C0, 0x7C9), (0x966, 0x96F), (0x9E6, 0x9EF), (0xA66, 0xA6F), (0xAE6, 0xAEF),
    (0xB66, 0xB6F), (0xBE6, 0xBEF), (0xC66, 0xC6F), (0xCE6, 0xCEF), (0xD66, 0xD6F),
    (0xDE6, 0xDEF), (0xE50, 0xE59), (0xED0, 0xED9), (0xF20, 0xF29), (0x1040, 0x1049),
    (0x1090, 0x1099), (0x1369, 0x1371), (0x17E0, 0x17E9), (0x1810, 0x1819),
    (0x1946, 0x194F), (0x19D0, 0x19DA), (0x1A80, 0x1A89), (0x1A90, 0x1A99),
    (0x1B50, 0x1B59), (0x1BB0, 0x1BB9), (0x1C40, 0x1C49), (0x1C50, 0x1C59),
    (0x2070, 0x2070), (0x2074, 0x2079), (0x2080, 0x2089), (0x2460, 0x2468),
    (0x2474, 0x247C), (0x2488, 0x2490), (0x24EA, 0x24EA), (0x24F5, 0x24FD),
    (0x24FF, 0x24FF), (0x2776, 0x277E), (0x2780, 0x2788), (0x278A, 0x2792),
    (0xA620, 0xA629), (0xA8D0, 0xA8D9), (0xA900, 0xA909), (0xA9D0, 0xA9D9),
    (0xA9F0, 0xA9F9), (0xAA50, 0xAA59), (0xABF0, 0xABF9), (0xFF10, 0xFF19),
    (0x104A0, 0x104A9), (0x10A40, 0x10A43), (0x10D30, 0x10D39), (0x10E60, 0x10E68),
    (0x11052, 0x1105A), (0x11066, 0x1106F), (0x110F0, 0x110F9), (0x11136, 0x1113F),
    (0x111D0, 0x111D9), (0x112F0, 0x112F9), (0x11450, 0x11459), (0x114D0, 0x114D9),
    (0x11650, 0x11659), (0x116C0, 0x116C9), (0x11730, 0x11739), (0x118E0, 0x118E9),
    (0x11950, 0x11959), (0x11C50, 0x11C59), (0x11D50, 0x11D59), (0x11DA0, 0x11DA9),
    (0x16A60, 0x16A69), (0x16AC0, 0x16AC9), (0x16B50, 0x16B59), (0x1D7CE, 0x1D7FF),
    (0x1E140, 0x1E149), (0x1E2F0, 0x1E2F9), (0x1E950, 0x1E959), (0x1F100, 0x1F10A),
    (0x1FBF0, 0x1FBF9),
];

/// Python's `str.isdigit` for one character: ASCII first, then a binary search.
fn py_isdigit(c: char) -> bool {
    let c = u32::from(c);
    if c < 0x80 {
        return c.wrapping_sub(0x30) < 10;
    }
    let i = DIGIT_RANGES.partition_point(|&(_, hi)| hi < c);
    DIGIT_RANGES.get(i).is_some_and(|&(lo, _)| lo <= c)
}

/// `YYYY/MM/DD HH:MM:SS` (ASCII digits, already checked) as naive seconds since the
/// epoch, or `None` when Python's `datetime(...)` would raise `ValueError`.
fn naive_time(stamp: &[u8]) -> Option<i64> {
    let num = |a: usize, b: usize| {
        stamp[a..b]
            .iter()
            .fold(0i64, |v, &d| v * 10 + i64::from(d - b'0'))
    };
    let (year, month, day) = (num(0, 4), num(5, 7), num(8, 10));
    let (hour, minute, second) = (num(11, 13), num(14, 16), num(17, 19));
    if !(1..=9999).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=month_days).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// -- failure kinds -----------------------------------------------------------------------

/// `_FAILURE_STARTS`.
pub(crate) fn starts_failure(message: &[u8]) -> bool {
    message.starts_with(b"connect() ")
        || message.starts_with(b"no live upstreams")
        || message.starts_with(b"upstream timed out (")
}

/// What one `[kinds]` pattern matched (positions in the text it was matched against).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KindMatch {
    pub kind: Kind,
    pub errno: Option<u64>,
    pub errno_text: Option<(usize, usize)>,
    pub peer: Option<(usize, usize)>,
}

/// The answer of a forward search for a byte (`find(from)`: its first place at or after
/// `from`, or the end) when the places asked about only grow: once it answered `hit` from
/// `from`, every place in `from..=hit` has the same answer. Keeps the searches that try
/// every start (regex backtracking over `[^)\n]*`) linear.
#[derive(Default)]
pub(crate) struct Ahead {
    from: usize,
    hit: Option<usize>,
}

impl Ahead {
    pub(crate) fn get(&mut self, from: usize, find: impl FnOnce(usize) -> usize) -> usize {
        if let Some(hit) = self.hit {
            if self.from <= from && from <= hit {
                return hit;
            }
        }
        let hit = find(from);
        (self.from, self.hit) = (from, Some(hit));
        hit
    }
}

/// What `\((?P<errno>\d+):\x20(?P<errno_text>[^)\n]*)\)` matches at `pos` (the `(`).
pub(crate) struct ErrnoMatch {
    /// `None` when the number does not fit in u64.
    pub errno: Option<u64>,
    pub text: (usize, usize),
}

/// The errno pattern matched at `pos`; `ahead` remembers where `[^)\n]*` stopped (the
/// places asked about must only grow).
pub(crate) fn errno_at(text: &[u8], pos: usize, ahead: &mut Ahead) -> Option<ErrnoMatch> {
    if text.get(pos) != Some(&b'(') {
        return None;
    }
    let (end, errno) = digits(text, pos + 1)?;
    if !at(text, end, b": ") {
        return None;
    }
    let start = end + 2;
    let close = ahead.get(start, |from| {
        memchr::memchr2(b')', b'\n', &text[from..]).map_or(text.len(), |i| from + i)
    });
    (text.get(close) == Some(&b')')).then_some(ErrnoMatch {
        errno,
        text: (start, close),
    })
}

/// The first `[kinds]` pattern (in the TOML's order) that matches `text` at `pos`, as
/// Python's `pattern.match(text, pos)`. A match whose errno does not fit in u64 counts as
/// no match of that pattern (deviation: Python reads any integer).
pub(crate) fn kind_at(text: &[u8], pos: usize) -> Option<KindMatch> {
    let msg = text.get(pos..)?;
    // connect_failed: connect\(\)\x20failed\x20\((?P<errno>\d+):\x20(?P<errno_text>[^)\n]*)\)
    if msg.starts_with(b"connect() failed ") {
        if let Some(ErrnoMatch {
            errno: Some(errno),
            text: range,
        }) = errno_at(text, pos + 17, &mut Ahead::default())
        {
            return Some(KindMatch {
                kind: Kind::ConnectFailed,
                errno: Some(errno),
                errno_text: Some(range),
                peer: None,
            });
        }
    }
    // connect_to_failed: connect\(\)\x20to\x20(?P<peer>.+?)\x20failed\x20\((?P<errno>..
    // The peer is lazy (and `.` takes newlines): the first " failed (" after at least one
    // character from which the rest matches.
    if msg.starts_with(b"connect() to ") {
        static FAILED: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b" failed "));
        let peer_start = pos + 13;
        let mut from = peer_start + 1;
        let mut ahead = Ahead::default();
        while let Some(i) = text.get(from..).and_then(|rest| FAILED.find(rest)) {
            let peer_end = from + i;
            if let Some(ErrnoMatch { errno, text: range }) =
                errno_at(text, peer_end + 8, &mut ahead)
            {
                // Python's match; its errno must fit.
                return errno.map(|errno| KindMatch {
                    kind: Kind::ConnectToFailed,
                    errno: Some(errno),
                    errno_text: Some(range),
                    peer: Some((peer_start, peer_end)),
                });
            }
            from = peer_end + 1;
        }
    }
    // upstream_timed_out: upstream\x20timed\x20out\x20\((?P<errno>\d+):\x20(?P<errno_text>..
    if msg.starts_with(b"upstream timed out ") {
        if let Some(ErrnoMatch {
            errno: Some(errno),
            text: range,
        }) = errno_at(text, pos + 19, &mut Ahead::default())
        {
            return Some(KindMatch {
                kind: Kind::UpstreamTimedOut,
                errno: Some(errno),
                errno_text: Some(range),
                peer: None,
            });
        }
    }
    // no_live_upstreams: no\x20live\x20upstreams\b
    const NO_LIVE: &[u8] = b"no live upstreams";
    if msg.starts_with(NO_LIVE) && !msg.get(NO_LIVE.len()).is_some_and(|&b| is_word(b)) {
        return Some(KindMatch {
            kind: Kind::NoLiveUpstreams,
            errno: None,
            errno_text: None,
            peer: None,
        });
    }
    None
}

/// `_while_connecting`: the action right before the tail (or at the end) is connecting.
pub(crate) fn while_connecting(text: &[u8]) -> bool {
    const CONNECTING: &[u8] = b" while connecting to upstream";
    static TAIL: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b" while connecting to upstream, client: "));
    TAIL.find(text).is_some() || text.ends_with(CONNECTING)
}

/// The failure kind as Python's `head()` gives it: `failure if cid else None`, where
/// `failure` is `_failure_kind(text, pos)` when the message starts with a failure start.
///
/// `head` must be `parse_head(text)`'s. Deviation: a match whose errno does not fit in
/// u64 is no match (see `kind_at`).
pub fn failure_kind(text: &[u8], head: &Head) -> Option<Kind> {
    head.cid?;
    let pos = head.msg_start;
    if !starts_failure(text.get(pos..)?) {
        return None;
    }
    let found = kind_at(text, pos)?;
    (found.kind.always_connect_failure() || while_connecting(text)).then_some(found.kind)
}

/// Python `head()`'s `ended_hint`: the text may end its connection.
pub fn ended_hint(text: &[u8]) -> bool {
    static CLOSED: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"closed"));
    static DISCONNECTED: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b"client disconnected"));
    static TIMED_OUT: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b"client timed out"));
    CLOSED.find(text).is_some()
        || DISCONNECTED.find(text).is_some()
        || TIMED_OUT.find(text).is_some()
}

/// Python `subsystem_of(text)`: `"stream"` (byte counters), `"http"` (a request or an
/// upstream URL) or `"unknown"`.
pub fn subsystem_of(text: &[u8]) -> &'static str {
    // Built once: constructing a searcher per call costs more than the search.
    static BYTES: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(b", bytes from/to client:"));
    static REQUEST: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b", request: \""));
    if BYTES.find(text).is_some() {
        return "stream";
    }
    if REQUEST.find(text).is_some() || SCHEME.find(text).is_some() {
        return "http";
    }
    "unknown"
}

static SCHEME: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"://"));

/// Python `peer_of(upstream)`: the peer address in an `upstream:` value, no scheme, no
/// URI (`http://127.0.0.1:8080/x` → `127.0.0.1:8080`, `http://unix:/run/a.sock:/x` →
/// `unix:/run/a.sock`; a value with no `://` as it is).
pub fn peer_of(upstream: &[u8]) -> &[u8] {
    let Some(scheme_end) = SCHEME.find(upstream) else {
        return upstream;
    };
    let rest = &upstream[scheme_end + 3..];
    if let Some(path) = rest.strip_prefix(b"unix:") {
        // "unix:" + rest[5:].split(":", 1)[0]
        let end = memchr::memchr(b':', path).unwrap_or(path.len());
        return &rest[..5 + end];
    }
    match memchr::memchr(b'/', rest) {
        Some(slash) => &rest[..slash],
        None => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes()).unwrap_or_else(|r| panic!("{r}: {text}"))
    }

    fn reason(text: &[u8]) -> &'static str {
        parse_head(text).expect_err("must not parse")
    }

    fn kind(text: &str) -> Option<Kind> {
        failure_kind(text.as_bytes(), &head(text))
    }

    const STORM: &str = "2019/09/17 03:46:20 [error] 2454#2454: *3584946 connect() failed (111: \
        Connection refused) while connecting to upstream, client: 10.10.122.117, server: \
        0.0.0.0:55556, upstream: \"10.12.39.132:5555\", bytes from/to client:0/0, bytes from/to \
        upstream:0/0";

    #[test]
    fn enums_round_trip() {
        for i in 0..8 {
            let level = Level::from_index(i).unwrap();
            assert_eq!(level.index(), i);
            assert_eq!(Level::from_name(level.as_str().as_bytes()), Some(level));
        }
        assert_eq!(Level::from_index(8), None);
        let names: Vec<_> = (0..8)
            .map(|i| Level::from_index(i).unwrap().as_str())
            .collect();
        assert_eq!(
            names,
            ["debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"]
        );
        let kinds: Vec<_> = (0..5).map(|i| Kind::from_index(i).unwrap()).collect();
        assert_eq!(
            kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            [
                "connect_failed",
                "connect_to_failed",
                "upstream_timed_out",
                "no_live_upstreams",
                "other"
            ]
        );
        assert!(kinds
            .iter()
            .enumerate()
            .all(|(i, k)| usize::from(k.index()) == i));
        assert_eq!(Kind::from_index(5), None);
        assert!(Level::Error.is_error_or_worse() && Level::Emerg.is_error_or_worse());
        assert!(!Level::Warn.is_error_or_worse());
    }

    #[test]
    fn reads_the_prefix() {
        let h = head(STORM);
        assert_eq!(
            (h.naive, h.level, h.pid, h.tid, h.cid),
            (1_568_691_980, Level::Error, 2454, 2454, Some(3_584_946))
        );
        assert!(STORM[h.msg_start..].starts_with("connect() failed"));
        let h = head("2026/11/25 17:33:40 [notice] 17996#17996: start worker processes");
        assert_eq!((h.level, h.pid, h.cid), (Level::Notice, 17996, None));
        assert_eq!(h.msg_start, 42);
        let h = head("2023/05/02 10:00:01 [error] 6352#8908: *6776 x");
        assert_eq!((h.pid, h.tid, h.cid), (6352, 8908, Some(6776)));
        // Leading zeros are read as Python's int() reads them; u64::MAX fits.
        let h = head(
            "2024/01/01 00:00:00 [info] 007#18446744073709551615: *0000000000000000000000042 x",
        );
        assert_eq!((h.pid, h.tid, h.cid), (7, u64::MAX, Some(42)));
    }

    #[test]
    fn cid_group_and_message_start() {
        // The whole text is the head: `\Z` ends it.
        let h = head("2024/01/01 00:00:00 [info] 1#1:");
        assert_eq!((h.cid, h.msg_start), (None, 31));
        let h = head("2024/01/01 00:00:00 [info] 1#1: *5");
        assert_eq!((h.cid, h.msg_start), (Some(5), 34));
        // "*12x": the cid group cannot end there; the message starts at "*".
        let h = head("2024/01/01 00:00:00 [info] 1#1: *12x y");
        assert_eq!((h.cid, h.msg_start), (None, 32));
        let h = head("2024/01/01 00:00:00 [info] 1#1: *");
        assert_eq!((h.cid, h.msg_start), (None, 32));
        let h = head("2024/01/01 00:00:00 [info] 1#1: *7, client: a, server: b");
        assert_eq!((h.cid, h.msg_start), (None, 32));
        let h = head("2024/01/01 00:00:00 [info] 1#1:  *7 x");
        assert_eq!((h.cid, h.msg_start), (None, 32));
        // "*0" is a connection id (Python tests the group's text, "0", which is true).
        let text = "2024/01/01 00:00:00 [error] 1#1: *0 no live upstreams";
        assert_eq!(head(text).cid, Some(0));
        assert_eq!(kind(text), Some(Kind::NoLiveUpstreams));
    }

    #[test]
    fn rejection_reasons() {
        for blank in ["", " ", " \t\r\n", "\u{3000}\u{a0}", "\x1c\x1f\x0b\x0c"] {
            assert_eq!(reason(blank.as_bytes()), "blank", "{blank:?}");
        }
        assert_eq!(reason(b" \xff "), "no_timestamp");
        for bad_prefix in [
            "2024/01/01 00:00:00 error 1#1: x",
            "2024/01/01",
            "2024/",
            "0000/x",
            "2024/01/01 00:00:00 [error] 1#x: y",
            "2024/01/01 00:00:00 [error] #1: y",
            "2024/01/01 00:00:00 [error] 1#1 x",
            "2024/01/01 00:00:00 [error] 1#1:x",
            "2024/01/01 00:00:00 [error]  1#1: x",
            "2024/01/01 00:00:00 [] 1#1: x",
            "2024/01/01 00:00:00 [Error] 1#1: x",
            "2024/1/01 00:00:00 [error] 1#1: x",
            // str.isdigit is Unicode: Arabic-Indic, superscript and mathematical digits.
            "\u{661}\u{662}\u{663}\u{664}/",
            "\u{b2}\u{b3}\u{b9}1/x",
            "\u{1d7ce}\u{1d7cf}\u{1d7d0}\u{1d7d1}/",
        ] {
            assert_eq!(
                reason(bad_prefix.as_bytes()),
                "bad_prefix",
                "{bad_prefix:?}"
            );
        }
        for no_timestamp in [
            "hello",
            "PHP message: PHP Warning: x",
            "123/01/01",
            "2024-01-01 00:00:00 [error] 1#1: x",
            " 2024/01/01 00:00:00 [error] 1#1: x",
            "12345/",
            "\u{bd}234/", // "½" is numeric but not a digit for str.isdigit
            "<187>Nov  5 17:33:53 vm nginx: 2024/01/01 00:00:04 [error] 4#4: *1 x",
        ] {
            assert_eq!(
                reason(no_timestamp.as_bytes()),
                "no_timestamp",
                "{no_timestamp:?}"
            );
        }
        assert_eq!(reason(b"123\xff/"), "no_timestamp");
        assert_eq!(reason(b"1234\xff"), "no_timestamp");
        assert_eq!(
            reason(b"2024/01/01 00:00:00 [loud] 1#1: *1 bad level"),
            "unknown_level"
        );
        assert_eq!(
            reason(b"2024/13/45 00:00:00 [loud] 1#1: x"),
            "unknown_level"
        );
        assert_eq!(
            reason(b"2024/13/45 00:00:00 [error] 1#1: *1 bad date"),
            "bad_timestamp"
        );
    }

    #[test]
    fn dates_are_python_datetimes() {
        for bad in [
            "2023/02/29 00:00:00", // not a leap year
            "1900/02/29 00:00:00", // nor is 1900
            "2024/02/30 00:00:00",
            "2024/04/31 00:00:00",
            "2024/13/01 00:00:00",
            "2024/00/01 00:00:00",
            "2024/01/00 00:00:00",
            "2024/01/32 00:00:00",
            "2024/01/01 24:00:00",
            "2024/01/01 00:60:00",
            "2024/01/01 00:00:60",
            "0000/01/01 00:00:00",
        ] {
            let line = format!("{bad} [error] 1#1: x");
            assert_eq!(reason(line.as_bytes()), "bad_timestamp", "{bad}");
        }
        for (stamp, naive) in [
            ("1970/01/01 00:00:00", 0),
            ("1969/12/31 23:59:59", -1),
            ("2024/02/29 23:59:59", 1_709_251_199),
            ("2000/02/29 12:00:00", 951_825_600),
            ("0001/01/01 00:00:00", -62_135_596_800),
            ("9999/12/31 23:59:59", 253_402_300_799),
        ] {
            assert_eq!(
                head(&format!("{stamp} [error] 1#1: x")).naive,
                naive,
                "{stamp}"
            );
        }
    }

    #[test]
    fn huge_numbers_are_bad_prefix_after_pythons_checks() {
        let big = "18446744073709551616"; // u64::MAX + 1
        for line in [
            format!("2024/01/01 00:00:00 [error] {big}#1: *1 x"),
            format!("2024/01/01 00:00:00 [error] 1#{big}: *1 x"),
            format!("2024/01/01 00:00:00 [error] 1#1: *{big} x"),
            format!("2024/01/01 00:00:00 [error] 1#1: *{big}"),
        ] {
            assert_eq!(reason(line.as_bytes()), "bad_prefix", "{line}");
        }
        // The reasons Python gives come first.
        assert_eq!(
            reason(format!("2024/01/01 00:00:00 [loud] {big}#1: x").as_bytes()),
            "unknown_level"
        );
        assert_eq!(
            reason(format!("2023/02/29 00:00:00 [info] {big}#1: x").as_bytes()),
            "bad_timestamp"
        );
        // A huge "*cid" that does not end the head is message text, not a cid.
        assert_eq!(
            head(&format!("2024/01/01 00:00:00 [error] 1#1: *{big}x")).cid,
            None
        );
    }

    #[test]
    fn failure_kinds() {
        assert_eq!(kind(STORM), Some(Kind::ConnectFailed));
        assert_eq!(
            kind(
                "2026/11/25 17:33:44 [error] 18265#18265: *49447 connect() to unix:/tmp/s.sock \
                 failed (111: Connection refused) while connecting to upstream, client: \
                 127.0.0.69, server: storm.test, request: \"GET / HTTP/1.1\", upstream: \
                 \"http://unix:/tmp/s.sock:/\", host: \"storm.test\""
            ),
            Some(Kind::ConnectToFailed)
        );
        assert_eq!(
            kind(
                "2023/03/08 16:02:40 [error] 31#31: *569 upstream timed out (110: Operation timed \
                 out) while connecting to upstream, client: 1.2.3.4, server: a, request: \"GET / \
                 HTTP/1.1\", upstream: \"http://192.168.215.1:80/\", host: \"a\""
            ),
            Some(Kind::UpstreamTimedOut)
        );
        assert_eq!(
            kind("2024/01/01 00:00:00 [error] 1#1: *1 no live upstreams while connecting to upstream"),
            Some(Kind::NoLiveUpstreams)
        );
        // No connection id: no failure for the detector.
        assert_eq!(
            kind("2024/01/01 00:00:00 [error] 1#1: no live upstreams"),
            None
        );
        assert_eq!(
            kind("2024/01/01 00:00:00 [error] 1#1: *1 open() failed (2: x)"),
            None
        );
        // The kinds need their whole pattern: "connect() failed" without "(errno: text)".
        assert_eq!(
            kind("2024/01/01 00:00:00 [error] 1#1: *1 connect() failed"),
            None
        );
        assert_eq!(
            kind("2024/01/01 00:00:00 [error] 1#1: *1 connect() failed (111: x\n)"),
            None
        );
        assert_eq!(
            kind("2024/01/01 00:00:00 [error] 1#1: *1 connect() failed (x: y)"),
            None
        );
        // The errno text may be empty; `connect() to`'s peer is lazy and may hold " failed ".
        assert_eq!(
            kind("2024/01/01 00:00:00 [error] 1#1: *1 connect() failed (1: )"),
            Some(Kind::ConnectFailed)
        );
        assert_eq!(
            kind("2024/01/01 00:00:00 [error] 1#1: *1 connect() to a failed b failed (1: x)"),
            Some(Kind::ConnectToFailed)
        );
        // The peer is at least one character: "connect() to  failed" has none; with one
        // more space the peer is " ".
        assert_eq!(
            kind("2024/01/01 00:00:00 [error] 1#1: *1 connect() to  failed (1: x)"),
            None
        );
        assert_eq!(
            kind("2024/01/01 00:00:00 [error] 1#1: *1 connect() to   failed (1: x)"),
            Some(Kind::ConnectToFailed)
        );
        assert_eq!(
            kind("2024/01/01 00:00:00 [error] 1#1: *1 connect() to failed (1: x)"),
            None
        );
        // An errno too large for u64: no match (documented deviation).
        assert_eq!(
            kind("2024/01/01 00:00:00 [error] 1#1: *1 connect() failed (18446744073709551616: x)"),
            None
        );
        assert_eq!(
            kind("2024/01/01 00:00:00 [error] 1#1: *1 connect() failed (18446744073709551615: x)"),
            Some(Kind::ConnectFailed)
        );
    }

    #[test]
    fn a_timeout_fails_a_connect_only_while_connecting() {
        let reading = "2026/11/25 17:33:50 [error] 1#1: *300 upstream timed out (110: Connection \
            timed out) while reading response header from upstream, client: 127.0.0.1, server: s, \
            request: \"GET /x HTTP/1.1\", upstream: \"http://127.0.0.1:1/x\", host: \"a while connecting to upstream\"";
        assert_eq!(kind(reading), None);
        let bare = "2024/01/01 00:00:00 [error] 1#1: *1 upstream timed out (110: x) while connecting to upstream";
        assert_eq!(kind(bare), Some(Kind::UpstreamTimedOut));
        assert_eq!(kind(&format!("{bare}\n")), None);
        assert!(while_connecting(
            b"x while connecting to upstream, client: y"
        ));
        assert!(!while_connecting(
            b"x while connecting to upstream,client: y"
        ));
        // The other kinds are failures wherever they are.
        let read = "2024/01/01 00:00:00 [error] 1#1: *1 connect() failed (111: x) while reading";
        assert_eq!(kind(read), Some(Kind::ConnectFailed));
    }

    #[test]
    fn no_live_upstreams_ends_at_a_word_boundary() {
        let line =
            |rest: &str| format!("2024/01/01 00:00:00 [error] 1#1: *1 no live upstreams{rest}");
        for (rest, want) in [
            ("", true),
            (" while connecting to upstream", true),
            (".", true),
            (",", true),
            ("-x", true),
            ("\n", true),
            ("X", false),
            ("x", false),
            ("_", false),
            ("0", false),
            ("é", true), // not an ASCII word character (re.ASCII)
        ] {
            let text = line(rest);
            assert_eq!(kind(&text).is_some(), want, "{text:?}");
        }
        let mut raw = line("").into_bytes();
        raw.push(0xff);
        assert_eq!(
            failure_kind(&raw, &parse_head(&raw).unwrap()),
            Some(Kind::NoLiveUpstreams)
        );
    }

    #[test]
    fn ended_hint_is_three_substrings() {
        assert!(ended_hint(b"client 1.2.3.4 closed keepalive connection"));
        assert!(ended_hint(b"x closed"));
        assert!(ended_hint(b"client disconnected, bytes"));
        assert!(ended_hint(b"client timed out (110: x)"));
        assert!(!ended_hint(b"client timed-out"));
        assert!(!ended_hint(b"Closed"));
        assert!(!ended_hint(b""));
    }

    #[test]
    fn subsystem_from_the_tail() {
        assert_eq!(subsystem_of(STORM.as_bytes()), "stream");
        assert_eq!(subsystem_of(b"x, request: \"GET / HTTP/1.1\""), "http");
        assert_eq!(subsystem_of(b"x, upstream: \"http://a/\""), "http");
        assert_eq!(subsystem_of(b"x, upstream: \"10.0.0.1:80\""), "unknown");
        assert_eq!(subsystem_of(b"bytes from/to client:1/1"), "unknown");
        assert_eq!(subsystem_of(b""), "unknown");
    }

    #[test]
    fn peer_of_upstreams() {
        for (upstream, peer) in [
            ("http://127.0.0.1:8080/x", "127.0.0.1:8080"),
            ("http://127.0.0.1:8080", "127.0.0.1:8080"),
            ("https://[::1]:8443/a/b?c", "[::1]:8443"),
            ("http://[2001:db8::1]/", "[2001:db8::1]"),
            ("http://unix:/run/a.sock:/x", "unix:/run/a.sock"),
            ("http://unix:/run/a.sock", "unix:/run/a.sock"),
            ("http://unix:", "unix:"),
            ("grpc://unix:/tmp/g.sock:", "unix:/tmp/g.sock"),
            ("fastcgi://127.0.0.1:9000", "127.0.0.1:9000"),
            ("10.12.39.132:5555", "10.12.39.132:5555"),
            ("dead3z", "dead3z"),
            ("unix:/run/a.sock", "unix:/run/a.sock"),
            ("", ""),
            ("://x/y", "x"),
            ("a://b://c/d", "b:"),
            ("http:///x", ""),
        ] {
            assert_eq!(peer_of(upstream.as_bytes()), peer.as_bytes(), "{upstream}");
        }
        let raw = b"http://h\xff:1/\xfe";
        assert_eq!(peer_of(raw), b"h\xff:1");
    }

    #[test]
    fn digits_and_python_isdigit() {
        assert_eq!(digits(b"x12y", 1), Some((3, Some(12))));
        assert_eq!(digits(b"x", 0), None);
        assert_eq!(digits(b"", 0), None);
        assert_eq!(digits(b"99999999999999999999", 0), Some((20, None)));
        assert!(
            py_isdigit('7')
                && py_isdigit('\u{b2}')
                && py_isdigit('\u{2460}')
                && py_isdigit('\u{1fbf9}')
        );
        assert!(
            !py_isdigit('a')
                && !py_isdigit('\u{bd}')
                && !py_isdigit('\u{2169}')
                && !py_isdigit('/')
        );
    }

    #[test]
    fn ahead_answers_from_its_memory_only_between_the_asked_and_the_found() {
        let mut ahead = Ahead::default();
        let calls = std::cell::Cell::new(0);
        let find = |from: usize, at: usize| {
            calls.set(calls.get() + 1);
            assert!(at >= from);
            at
        };
        assert_eq!(ahead.get(2, |f| find(f, 10)), 10);
        assert_eq!(ahead.get(2, |f| find(f, 99)), 10); // remembered: no search
        assert_eq!(ahead.get(7, |f| find(f, 99)), 10);
        assert_eq!(ahead.get(10, |f| find(f, 99)), 10); // the found place itself
        assert_eq!(calls.get(), 1);
        assert_eq!(ahead.get(11, |f| find(f, 15)), 15); // past it: searched again
        assert_eq!(calls.get(), 2);
        assert_eq!(ahead.get(3, |f| find(f, 4)), 4); // before the searched part: again
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn py_isdigit_is_its_ranges_at_every_code_point() {
        // the binary search needs the ranges sorted and disjoint
        assert!(DIGIT_RANGES
            .windows(2)
            .all(|w| w[0].0 <= w[0].1 && w[0].1 < w[1].0));
        for cp in 0..=0x10FFFF_u32 {
            if let Some(c) = char::from_u32(cp) {
                let listed = DIGIT_RANGES.iter().any(|&(lo, hi)| lo <= cp && cp <= hi);
                assert_eq!(py_isdigit(c), listed, "U+{cp:04X}");
            }
        }
    }
}
