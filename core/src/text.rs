//! Text helpers shared by the stages: Python-compatible decoding and whitespace.

/// The text of `bytes` with invalid UTF-8 as `\xNN` escapes (Python's
/// `bytes.decode("utf-8", "backslashreplace")`: each byte of a maximal invalid
/// subpart is escaped on its own).
pub fn decode_escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                out.push_str(valid);
                return out;
            }
            Err(err) => {
                let (valid, after) = rest.split_at(err.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let bad = err.error_len().unwrap_or(after.len());
                for b in &after[..bad] {
                    out.push_str(&format!("\\x{b:02x}"));
                }
                rest = &after[bad..];
            }
        }
    }
}

/// Whether a character is whitespace for Python's `str.strip()` / `str.isspace()`.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Whether a line is blank as Python's `not line.decode(...).strip()` says.
pub fn is_blank(line: &[u8]) -> bool {
    // Invalid bytes decode to `\xNN` escapes, which are never whitespace.
    std::str::from_utf8(line).is_ok_and(|text| text.chars().all(is_py_space))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_backslashreplace() {
        assert_eq!(decode_escaped(b"a\xffb"), "a\\xffb");
        assert_eq!(decode_escaped("é".as_bytes()), "é");
        assert_eq!(decode_escaped(b"\xe2\x82"), "\\xe2\\x82");
        assert_eq!(decode_escaped(b"\xed\xa0\x80"), "\\xed\\xa0\\x80");
    }

    #[test]
    fn blank_is_python_strip() {
        assert!(is_blank(b""));
        assert!(is_blank(b" \t\x0b\x0c\r\x1c"));
        assert!(is_blank("\u{a0}\u{3000}".as_bytes()));
        assert!(!is_blank(b" x "));
        assert!(!is_blank(b" \xff "));
    }
}

/// Whether a line starts an nginx error event: `^\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2} \[`
/// (`event_start` in parsers/nginx_error.toml). Lines that do not continue the event
/// before them.
#[inline]
pub fn is_event_start(line: &[u8]) -> bool {
    const SHAPE: &[u8; 21] = b"dddd/dd/dd dd:dd:dd [";
    if line.len() < SHAPE.len() {
        return false;
    }
    SHAPE.iter().zip(line).all(|(&want, &got)| {
        if want == b'd' {
            got.is_ascii_digit()
        } else {
            got == want
        }
    })
}

#[cfg(test)]
mod start_tests {
    use super::is_event_start;

    #[test]
    fn event_start_shape() {
        assert!(is_event_start(b"2026/11/25 17:33:53 [error] 1#1: x"));
        assert!(is_event_start(b"9999/99/99 99:99:99 ["));
        assert!(!is_event_start(b"2026/11/25 17:33:53 error"));
        assert!(!is_event_start(b"2026-11-25 17:33:53 [error]"));
        assert!(!is_event_start(b"<187>Nov 25 17:33:53 nginx: 2026/11/25"));
    }
}
