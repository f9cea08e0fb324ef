//! Versioned state bytes: the primitives every stage writes its state with.
//!
//! The format is plain data, never code: a magic, a version, then each stage's fields
//! in a fixed order as unsigned LEB128 integers, zigzag signed integers, and
//! length-prefixed byte strings. `docs/state-format.md` describes the layout.

/// Writes state fields.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u64(&mut self, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.buf.push(byte);
                return;
            }
            self.buf.push(byte | 0x80);
        }
    }
    pub fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }
    pub fn usize(&mut self, v: usize) {
        self.u64(v as u64);
    }
    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.usize(v.len());
        self.buf.extend_from_slice(v);
    }
    pub fn opt_bytes(&mut self, v: Option<&[u8]>) {
        match v {
            None => self.bool(false),
            Some(b) => {
                self.bool(true);
                self.bytes(b);
            }
        }
    }
}

/// A state that cannot be read: truncated, or not what this version writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotError(pub String);

impl std::fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid state: {}", self.0)
    }
}

pub type Result<T> = std::result::Result<T, SnapshotError>;

fn truncated<T>() -> Result<T> {
    Err(SnapshotError("truncated".into()))
}

/// Reads state fields in the order they were written.
pub struct Reader<'a> {
    pub buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    pub fn u64(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some((&byte, rest)) = self.buf.split_first() else {
                return truncated();
            };
            self.buf = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(SnapshotError("integer too long".into()))
    }
    pub fn i64(&mut self) -> Result<i64> {
        let v = self.u64()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }
    pub fn usize(&mut self) -> Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| SnapshotError("size too large".into()))
    }
    /// A count of items that follow, each at least `min_size` bytes: refused when the
    /// rest of the input cannot hold them (a crafted count never allocates).
    pub fn count(&mut self, min_size: usize) -> Result<usize> {
        let n = self.usize()?;
        if n.saturating_mul(min_size.max(1)) > self.buf.len() {
            return truncated();
        }
        Ok(n)
    }
    pub fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(SnapshotError("bad boolean".into())),
        }
    }
    pub fn u8(&mut self) -> Result<u8> {
        let Some((&byte, rest)) = self.buf.split_first() else {
            return truncated();
        };
        self.buf = rest;
        Ok(byte)
    }
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.usize()?;
        if n > self.buf.len() {
            return truncated();
        }
        let (v, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(v)
    }
    pub fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>> {
        Ok(if self.bool()? {
            Some(self.bytes()?)
        } else {
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut w = Writer::default();
        w.u64(0);
        w.u64(u64::MAX);
        w.i64(-5);
        w.i64(i64::MIN);
        w.bytes(b"abc");
        w.opt_bytes(None);
        w.bool(true);
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.u64().unwrap(), 0);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.i64().unwrap(), i64::MIN);
        assert_eq!(r.bytes().unwrap(), b"abc");
        assert_eq!(r.opt_bytes().unwrap(), None);
        assert!(r.bool().unwrap());
        assert!(r.u8().is_err());
    }

    #[test]
    fn crafted_counts_are_refused() {
        let mut w = Writer::default();
        w.u64(1 << 40);
        assert!(Reader::new(&w.buf).count(1).is_err());
        assert!(Reader::new(&w.buf).bytes().is_err());
    }
}
