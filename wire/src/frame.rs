//! Frames: a fixed 16-byte header and a payload of the length it states.
//!
//! ```text
//!  0               4       5       6               8                              16
//!  +---------------+-------+-------+---------------+-------------------------------+
//!  | payload len   | ver   | op    | flags         | request id                    |
//!  | u32 LE        | u8    | u8    | u16 LE        | u64 LE                        |
//!  +---------------+-------+-------+---------------+-------------------------------+
//!  | payload: `payload len` bytes, laid out per opcode (see `message.rs`)          |
//!  +-------------------------------------------------------------------------------+
//! ```
//!
//! Check, then parse: [`check`] looks at buffered bytes without allocating and says
//! whether a whole frame is there ([`Check::Incomplete`] is not an error); a payload length
//! over the limit is refused from the header alone, before any memory is reserved.

use crate::error::WireError;

/// Header length in bytes.
pub const HEADER_LEN: usize = 16;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Default maximum payload length (1 MiB); HELLO may negotiate it down.
pub const DEFAULT_MAX_PAYLOAD: u32 = 1 << 20;

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub version: u8,
    pub opcode: u8,
    pub flags: u16,
    pub request_id: u64,
}

/// What [`check`] found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not yet a whole frame; read more.
    Incomplete,
    /// A whole frame of `total` bytes (header + payload) starts the buffer.
    Complete { header: Header, total: usize },
}

impl Header {
    /// Read a header from the first 16 bytes, if there are that many.
    pub fn peek(buf: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
        let [l0, l1, l2, l3, version, opcode, f0, f1, r @ ..] = *b;
        Some(Header {
            len: u32::from_le_bytes([l0, l1, l2, l3]),
            version,
            opcode,
            flags: u16::from_le_bytes([f0, f1]),
            request_id: u64::from_le_bytes(r),
        })
    }

    /// Append this header to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_le_bytes());
        out.push(self.version);
        out.push(self.opcode);
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.request_id.to_le_bytes());
    }
}

/// Is a whole frame buffered at the front of `buf`?
///
/// # Errors
/// [`WireError::TooLarge`] when the header states a payload over `max_payload` — decided
/// from the header alone, so the caller never buffers it; [`WireError::Version`] for a
/// version this crate does not speak. Both are fatal for the connection.
pub fn check(buf: &[u8], max_payload: u32) -> Result<Check, WireError> {
    let Some(header) = Header::peek(buf) else {
        return Ok(Check::Incomplete);
    };
    if header.version != VERSION {
        return Err(WireError::Version(header.version));
    }
    if header.len > max_payload {
        return Err(WireError::TooLarge {
            len: header.len,
            max: max_payload,
        });
    }
    let total = HEADER_LEN + header.len as usize;
    if buf.len() < total {
        return Ok(Check::Incomplete);
    }
    Ok(Check::Complete { header, total })
}

/// Append a whole frame: header with the payload's length, then the payload written by
/// `body`. The length is patched in after the body is written, so nothing is copied.
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, flags: u16, request_id: u64, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    Header {
        len: 0,
        version: VERSION,
        opcode,
        flags,
        request_id,
    }
    .write(out);
    body(out);
    let len = u32::try_from(out.len() - start - HEADER_LEN).unwrap_or(u32::MAX);
    if let Some(slot) = out.get_mut(start..start + 4) {
        slot.copy_from_slice(&len.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            len: 7,
            version: VERSION,
            opcode: 3,
            flags: 0xbeef,
            request_id: u64::MAX - 1,
        };
        let mut out = Vec::new();
        h.write(&mut out);
        assert_eq!(out.len(), HEADER_LEN);
        assert_eq!(Header::peek(&out), Some(h));
    }

    #[test]
    fn incomplete_is_not_an_error_at_any_split() {
        let mut out = Vec::new();
        write_frame(&mut out, 1, 0, 42, |b| b.extend_from_slice(b"hello"));
        for cut in 0..out.len() {
            assert_eq!(check(&out[..cut], 1024), Ok(Check::Incomplete), "cut at {cut}");
        }
        let Ok(Check::Complete { header, total }) = check(&out, 1024) else {
            panic!("whole frame not found");
        };
        assert_eq!((header.len, header.request_id, total), (5, 42, out.len()));
    }

    #[test]
    fn oversized_and_foreign_frames_are_refused_from_the_header() {
        let mut out = Vec::new();
        Header {
            len: 2_000_000,
            version: VERSION,
            opcode: 1,
            flags: 0,
            request_id: 1,
        }
        .write(&mut out);
        assert_eq!(
            check(&out, DEFAULT_MAX_PAYLOAD),
            Err(WireError::TooLarge {
                len: 2_000_000,
                max: DEFAULT_MAX_PAYLOAD
            })
        );
        out[4] = 9;
        assert_eq!(check(&out, DEFAULT_MAX_PAYLOAD), Err(WireError::Version(9)));
    }
}
