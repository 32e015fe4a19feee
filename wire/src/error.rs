//! Decode errors, with the stable codes ERROR frames carry.

/// A frame or payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The header states a payload over the negotiated maximum.
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: u32, max: u32 },
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {0}")]
    Version(u8),
    /// An opcode this build does not know; the frame is skipped, the connection stays.
    #[error("unknown opcode {0:#04x}")]
    UnknownOpcode(u8),
    /// The payload does not match its opcode's layout (short, trailing bytes, bad UTF-8,
    /// a count larger than the bytes that follow).
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    /// Within the layout but over a limit (batch size).
    #[error("{0}")]
    Limit(String),
}

impl WireError {
    /// The stable numeric code sent in an ERROR frame.
    pub fn wire_code(&self) -> u16 {
        match self {
            WireError::TooLarge { .. } => 3001,
            WireError::Version(_) => 3002,
            WireError::UnknownOpcode(_) => 3003,
            WireError::Malformed { .. } => 3004,
            WireError::Limit(_) => 3005,
        }
    }

    /// Whether the connection must be closed after the ERROR reply: the stream can no
    /// longer be trusted to be in step (or the peer speaks another protocol).
    pub fn is_fatal(&self) -> bool {
        match self {
            WireError::TooLarge { .. } | WireError::Version(_) | WireError::Malformed { .. } => true,
            WireError::UnknownOpcode(_) | WireError::Limit(_) => false,
        }
    }
}
