//! Opcodes. Requests have the high bit clear; their replies set it.

pub const HELLO: u8 = 0x01;
pub const EVAL: u8 = 0x02;
pub const EVAL_JSON: u8 = 0x03;
pub const EVAL_BATCH: u8 = 0x04;
pub const PING: u8 = 0x05;
pub const INVALIDATE: u8 = 0x06;

pub const HELLO_OK: u8 = 0x81;
pub const DECISION: u8 = 0x82;
pub const RESULT: u8 = 0x83;
pub const DECISION_BATCH: u8 = 0x84;
pub const PONG: u8 = 0x85;
pub const INVALIDATED: u8 = 0x86;
/// An explained EVAL's answer: a DECISION body, then the explanation (json).
pub const EXPLANATION: u8 = 0x87;
pub const ERROR: u8 = 0xff;
