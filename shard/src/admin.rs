//! The admin API, on its own listener (default off; on with a token), every call behind
//! `Authorization: Bearer <token>` (401 otherwise, and logged):
//!
//! - `POST /v1/admin/reload`: load the bundle again from where it came from, validate it
//!   (compile, run its cases) off the shards, and swap it in on every shard. 200 with the
//!   revision once every shard serves it; 422 `bundle_refused` with the reason when it
//!   fails validation (nothing changes).
//! - `POST /v1/admin/invalidate` with `{"all": true}`, or any of `{"user_id": …, "tool":
//!   …, "server_id": …}`: forget every cached decision, or those made for that user, tool
//!   or server, on every shard; 200 once every shard has.

use std::time::Duration;

use crate::http::{Head, Response, method_not_allowed};
use crate::server::Shard;

/// How long a call waits for every shard to acknowledge.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Constant-time equality (the token must not leak through timing).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) async fn route(shard: &Shard, head: &Head, body: &mut [u8]) -> Response {
    let Some(admin) = &shard.config.admin else {
        return Response::error(404, "not_found", "the admin API is off");
    };
    let want = format!("Bearer {}", admin.token);
    if !head.authorization.as_deref().is_some_and(|a| same(a.as_bytes(), want.as_bytes())) {
        eprintln!("sark-pdp: admin: refused {} {}: no valid bearer token", head.method, head.path);
        return Response::error(401, "unauthorized", "a valid bearer token is required");
    }
    match (head.method.as_str(), head.path.as_str()) {
        ("POST", "/v1/admin/reload") => reload(shard).await,
        ("POST", "/v1/admin/invalidate") => invalidate(shard, body).await,
        (_, "/v1/admin/reload" | "/v1/admin/invalidate") => method_not_allowed("POST"),
        (_, p) => Response::error(404, "not_found", format!("no admin endpoint {p}")),
    }
}

async fn reload(shard: &Shard) -> Response {
    // Validation compiles and runs every case: a thread of its own, not this shard.
    let control = shard.control.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new().name("reload".into()).spawn(move || {
        let _ = tx.send(control.reload());
    });
    if spawned.is_err() {
        return Response::error(500, "internal_error", "could not start the reload");
    }
    let result = loop {
        match rx.try_recv() {
            Ok(r) => break r,
            Err(std::sync::mpsc::TryRecvError::Empty) => monoio::time::sleep(Duration::from_millis(1)).await,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => break Err("the reload thread died".into()),
        }
    };
    match result {
        Ok((revision, epoch)) => {
            let acked = shard.control.wait(epoch, ACK_TIMEOUT).await;
            eprintln!("sark-pdp: admin: bundle {revision} loaded{}", if acked { ", serving on every shard" } else { "; not acknowledged by every shard in time" });
            Response::json(if acked { 200 } else { 504 }, &serde_json::json!({"revision": revision, "acknowledged": acked}))
        }
        Err(why) => {
            eprintln!("sark-pdp: admin: bundle refused, the old one keeps serving: {why}");
            Response::error(422, "bundle_refused", why)
        }
    }
}

async fn invalidate(shard: &Shard, body: &mut [u8]) -> Response {
    let req: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Response::error(400, "invalid_parameter", format!("body: {e}")),
    };
    let change = if req.get("all") == Some(&serde_json::Value::Bool(true)) {
        crate::control::Change::InvalidateAll
    } else {
        let mut tags = Vec::new();
        for (field, kind) in [("user_id", "user"), ("tool", "tool"), ("server_id", "server")] {
            match req.get(field) {
                None => {}
                Some(serde_json::Value::String(v)) => tags.push(pdp::cache::tag(kind, v)),
                Some(_) => return Response::error(400, "invalid_parameter", format!("{field} must be a string")),
            }
        }
        if tags.is_empty() {
            return Response::error(400, "invalid_parameter", "say what to invalidate: {\"all\": true}, user_id, tool or server_id");
        }
        crate::control::Change::Invalidate(tags)
    };
    let epoch = shard.control.publish(change);
    let acked = shard.control.wait(epoch, ACK_TIMEOUT).await;
    Response::json(if acked { 200 } else { 504 }, &serde_json::json!({"acknowledged": acked}))
}
