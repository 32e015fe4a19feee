//! The serving runtime behind `sark-pdp`: [`server`] (thread-per-core shards speaking the
//! binary protocol, and the audit writer) and [`convert`] (between wire messages and the
//! decision domain), with the other front doors: [`http`] (OPA's data API, AuthZEN, SARK's
//! endpoints) and [`ext_authz`] (Envoy's gRPC authorization service). [`stages`] times
//! sampled decisions stage by stage for `/metrics`.

mod admin;
pub mod authzen;
pub mod cluster;
pub mod config;
pub mod control;
pub mod convert;
pub mod ext_authz;
pub mod prewarm;
pub mod http;
mod metrics;
pub mod server;
pub mod stages;
pub mod tls;
