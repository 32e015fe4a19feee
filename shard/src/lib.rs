//! The serving runtime behind `sark-pdp` (issue 3, in progress). Today: [`convert`], the
//! mapping between the binary protocol's messages and the decision domain, which every
//! shard's connection loop will use.

pub mod convert;
