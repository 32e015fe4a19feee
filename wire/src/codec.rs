//! Primitive encodings shared by every payload: little-endian integers, strings as a
//! u32 length then UTF-8 bytes, lists as a u32 count then items, optional values as a
//! u8 tag (0 absent, 1 present) then the value. The reader checks every length against
//! the bytes that remain before allocating, and rejects trailing bytes.

use crate::error::WireError;

/// Appends primitives to a buffer.
pub(crate) trait Put {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn i64(&mut self, v: i64);
    fn u128(&mut self, v: u128);
    fn bytes(&mut self, v: &[u8]);
    fn str(&mut self, v: &str);
    fn strs(&mut self, v: &[String]);
    fn opt_str(&mut self, v: Option<&str>);
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Put for Vec<u8> {
    fn u8(&mut self, v: u8) {
        self.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn u128(&mut self, v: u128) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.u32(len32(v.len()));
        self.extend_from_slice(v);
    }
    fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
    fn strs(&mut self, v: &[String]) {
        self.u32(len32(v.len()));
        for s in v {
            self.str(s);
        }
    }
    fn opt_str(&mut self, v: Option<&str>) {
        match v {
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
            None => self.u8(0),
        }
    }
}

/// A cursor over one payload.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { buf, what }
    }

    pub(crate) fn malformed(&self, why: impl Into<String>) -> WireError {
        WireError::Malformed {
            what: self.what,
            why: why.into(),
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, rest) = self.buf.split_first_chunk::<N>().ok_or_else(|| self.malformed("truncated"))?;
        self.buf = rest;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        let [b] = self.take::<1>()?;
        Ok(b)
    }
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    pub(crate) fn u128(&mut self) -> Result<u128, WireError> {
        Ok(u128::from_le_bytes(self.take()?))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        if n > self.buf.len() {
            return Err(self.malformed(format!("length {n} exceeds the {} bytes left", self.buf.len())));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn str(&mut self) -> Result<String, WireError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|e| self.malformed(format!("invalid UTF-8: {e}")))
    }

    /// A count of items, each at least `min_item` bytes: refused before allocating when
    /// the bytes left cannot hold them.
    pub(crate) fn count(&mut self, min_item: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.buf.len() {
            return Err(self.malformed(format!("count {n} exceeds what the {} bytes left can hold", self.buf.len())));
        }
        Ok(n)
    }

    pub(crate) fn strs(&mut self) -> Result<Vec<String>, WireError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.str()).collect()
    }

    pub(crate) fn present(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(self.malformed(format!("presence tag {t}"))),
        }
    }

    pub(crate) fn opt_str(&mut self) -> Result<Option<String>, WireError> {
        if self.present()? { self.str().map(Some) } else { Ok(None) }
    }

    /// The payload must be used up exactly.
    pub(crate) fn finish(self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.malformed(format!("{} trailing bytes", self.buf.len())))
        }
    }
}
