//! Bytes on the wire, sans-IO: SARK PDP's binary protocol (`PROTOCOL.md`). Later: the
//! HTTP shim's request/response mapping and a blocking client.
//!
//! One request through this crate, on the server side:
//! 1. [`frame::check`] finds a whole frame at the front of the read buffer without
//!    allocating ("need more bytes" is [`frame::Check::Incomplete`], not an error), and
//!    refuses an oversized length from the header alone;
//! 2. [`message::decode_request`] parses exactly that frame's payload into a
//!    [`message::Request`], rejecting leftovers;
//! 3. the shard answers, and [`message::encode_reply`] appends the reply frame, carrying
//!    the request id, to the write buffer.
//!
//! [`client::Client`] is the blocking client (HELLO, eval, batch, pipelining);
//! [`client::Router`] holds one per shard and sends each question to the shard that owns
//! it ([`route`]).
//!
//! Modules: [`frame`] (header, check, write), [`opcode`], [`message`] (payload layouts),
//! [`error`] (decode errors and their wire codes), `codec` (primitive encodings).

pub mod client;
mod codec;
pub mod error;
pub mod frame;
pub mod message;
pub mod opcode;
pub mod route;

pub use client::{Client, ClientError, Router};
pub use error::WireError;
pub use frame::{Check, DEFAULT_MAX_PAYLOAD, HEADER_LEN, Header, VERSION, check};
pub use message::{
    DecisionView, Explain, Reply, Request, decode_reply, decode_request, encode_decision, encode_decision_batch, encode_explanation, encode_reply,
    encode_request,
};
