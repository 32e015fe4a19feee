//! The admin API, on its own listener (default off; on with a token), every call behind
//! `Authorization: Bearer <token>` (401 otherwise, and logged):
//!
//! - `POST /v1/admin/reload`: load the bundle again from where it came from, validate it
//!   (compile, run its cases) off the shards, and swap it in on every shard. 200 with the
//!   revision once every shard serves it; 422 `bundle_refused` with the reason when it
//!   fails validation (nothing changes).
//! - `PUT /v1/data/{path}` (a JSON value) and `PATCH /v1/data/{path}` (a JSON Patch):
//!   change the data the policies read (roles, teams, tool sensitivity, lists…); the result
//!   is compiled off the shards and served by every shard as revision
//!   `<bundle revision>+data.<n>` before the call returns 204. A reload starts again from
//!   the bundle's own data.
//! - With `--cluster-redis`, invalidations and data writes are also published to the other
//!   nodes (`crate::cluster`); `?wait_nodes=N` waits for N of them to acknowledge
//!   (`nodes_acknowledged` in the answer; 504 when fewer did in time).
//! - `POST /v1/admin/invalidate` with `{"all": true}`, or any of `{"user_id": …, "tool":
//!   …, "server_id": …}`: forget every cached decision, or those made for that user, tool
//!   or server, on every shard; 200 once every shard has.

use std::time::Duration;

use crate::http::{Head, Response, method_not_allowed};
use crate::server::Shard;

/// How long a call waits for every shard to acknowledge.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Constant-time equality (the token must not leak through timing).
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an `authorization` value is `Bearer <token>` (compared in constant time).
pub(crate) fn bearer_is(authorization: Option<&str>, token: &str) -> bool {
    authorization.is_some_and(|a| same(a.as_bytes(), format!("Bearer {token}").as_bytes()))
}

pub(crate) async fn route(shard: &Shard, head: &Head, body: &mut [u8]) -> Response {
    let Some(admin) = &shard.config.admin else {
        return Response::error(404, "not_found", "the admin API is off");
    };
    if !bearer_is(head.authorization.as_deref(), &admin.token) {
        pdp::say!("sark-pdp: admin: refused {} {}: no valid bearer token", head.method, head.path);
        return Response::error(401, "unauthorized", "a valid bearer token is required");
    }
    match (head.method.as_str(), head.path.as_str()) {
        ("POST", "/v1/admin/reload") => reload(shard).await,
        (m @ ("PUT" | "PATCH"), p) if p.starts_with("/v1/data/") => write_data(shard, head, m == "PUT", p, body).await,
        ("POST", "/v1/admin/invalidate") => invalidate(shard, head, body).await,
        (_, "/v1/admin/reload" | "/v1/admin/invalidate") => method_not_allowed("POST"),
        (_, p) => Response::error(404, "not_found", format!("no admin endpoint {p}")),
    }
}

/// Run `work` on a thread of its own (compiling a bundle would stall this shard) and
/// wait for it without blocking the shard.
async fn off_shard<T: Send + 'static>(work: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| format!("could not start: {e}"))?;
    loop {
        match rx.try_recv() {
            Ok(r) => return r,
            Err(std::sync::mpsc::TryRecvError::Empty) => monoio::time::sleep(Duration::from_millis(1)).await,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return Err("the worker thread died".into()),
        }
    }
}

/// `?wait_nodes=N`: how many other nodes must acknowledge before the call returns.
fn wait_nodes(head: &Head) -> usize {
    head.query.split('&').find_map(|kv| kv.strip_prefix("wait_nodes=")).and_then(|n| n.parse().ok()).unwrap_or(0).min(1000)
}

/// Tell the other nodes (when there are some) and wait for `wait` of them; how many
/// acknowledged, or why they could not be told.
async fn fan_out(shard: &Shard, shared: crate::cluster::Shared, wait: usize) -> Result<Option<usize>, String> {
    let Some(cluster) = shard.control.cluster.get().cloned() else {
        return if wait > 0 { Err("wait_nodes needs --cluster-redis".into()) } else { Ok(None) };
    };
    off_shard(move || {
        let seq = cluster.broadcast(shared).map_err(|e| e.to_string())?;
        Ok(Some(cluster.wait_acks(seq, wait, ACK_TIMEOUT)))
    })
    .await
}

async fn write_data(shard: &Shard, head: &Head, put: bool, path: &str, body: &mut [u8]) -> Response {
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Response::error(400, "invalid_parameter", format!("body: {e}")),
    };
    let segments: Vec<String> = path.trim_start_matches("/v1/data/").split('/').filter(|s| !s.is_empty()).map(str::to_string).collect();
    let (write, shared) = if put {
        (crate::control::DataWrite::Put(value.clone()), crate::cluster::Shared::Put { path: segments.clone(), value })
    } else {
        match serde_json::from_value::<json_patch::Patch>(value) {
            Ok(p) => (crate::control::DataWrite::Patch(p.clone()), crate::cluster::Shared::Patch { path: segments.clone(), patch: p }),
            Err(e) => return Response::error(400, "invalid_parameter", format!("not a JSON Patch: {e}")),
        }
    };
    let control = shard.control.clone();
    let local = segments.clone();
    let result = off_shard(move || control.write_data(&local.iter().map(String::as_str).collect::<Vec<_>>(), write)).await;
    match result {
        Ok((revision, epoch)) => {
            let acked = shard.control.wait(epoch, ACK_TIMEOUT).await;
            pdp::say!("sark-pdp: admin: data written at {path}: revision {revision}");
            let want = wait_nodes(head);
            match fan_out(shard, shared, want).await {
                Ok(nodes) if acked && nodes.unwrap_or(0) >= want => Response::empty(204),
                Ok(nodes) => Response::json(504, &serde_json::json!({"revision": revision, "acknowledged": acked, "nodes_acknowledged": nodes})),
                Err(why) => Response::error(502, "cluster_unreachable", format!("written here (revision {revision}) but not shared: {why}")),
            }
        }
        Err(why) => Response::error(400, "invalid_parameter", why),
    }
}

async fn reload(shard: &Shard) -> Response {
    // Validation compiles and runs every case: a thread of its own, not this shard.
    let control = shard.control.clone();
    let result = off_shard(move || control.reload()).await;
    match result {
        Ok((revision, epoch)) => {
            let acked = shard.control.wait(epoch, ACK_TIMEOUT).await;
            pdp::say!("sark-pdp: admin: bundle {revision} loaded{}", if acked { ", serving on every shard" } else { "; not acknowledged by every shard in time" });
            Response::json(if acked { 200 } else { 504 }, &serde_json::json!({"revision": revision, "acknowledged": acked}))
        }
        Err(why) => {
            pdp::say!("sark-pdp: admin: bundle refused, the old one keeps serving: {why}");
            Response::error(422, "bundle_refused", why)
        }
    }
}

async fn invalidate(shard: &Shard, head: &Head, body: &mut [u8]) -> Response {
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
    let shared = match &change {
        crate::control::Change::Invalidate(tags) => crate::cluster::Shared::Invalidate { tags: tags.clone() },
        _ => crate::cluster::Shared::InvalidateAll,
    };
    let epoch = shard.control.publish(change);
    let acked = shard.control.wait(epoch, ACK_TIMEOUT).await;
    let want = wait_nodes(head);
    match fan_out(shard, shared, want).await {
        Ok(None) => Response::json(if acked { 200 } else { 504 }, &serde_json::json!({"acknowledged": acked})),
        Ok(Some(nodes)) => {
            let ok = acked && nodes >= want;
            Response::json(if ok { 200 } else { 504 }, &serde_json::json!({"acknowledged": acked, "nodes_acknowledged": nodes}))
        }
        Err(why) => Response::error(502, "cluster_unreachable", format!("applied here but not shared: {why}")),
    }
}
