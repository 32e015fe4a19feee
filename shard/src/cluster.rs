//! Many nodes: an invalidation or a data write accepted by one node's admin API is
//! published on a Redis channel; every other node applies it (on all its shards, through
//! its control plane) and publishes an acknowledgement. The admin call may wait for N
//! nodes' acknowledgements (`?wait_nodes=N`). Bundles are not sent this way: every node
//! polls the same bundle server.
//!
//! Consistency: once a call that waited for N acknowledgements returns, this node and N
//! others have applied the change on every shard. A node that was not subscribed when the
//! change was published (down, partitioned) does not get it later: Redis pub/sub keeps
//! nothing. Run the same bundle server and invalidate-all after a node rejoins.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::control::{Change, Control, DataWrite};

const CHANNEL: &str = "sark-pdp:changes";

/// A change as it travels between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shared {
    InvalidateAll,
    Invalidate { tags: Vec<u64> },
    Put { path: Vec<String>, value: serde_json::Value },
    Patch { path: Vec<String>, patch: json_patch::Patch },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message {
    Change { node: String, seq: u64, change: Shared },
    Ack { node: String, seq: u64, from: String },
}

/// This node's membership.
#[derive(Debug)]
pub struct Cluster {
    client: redis::Client,
    pub node: String,
    seq: AtomicU64,
    acks: Mutex<HashMap<u64, usize>>,
}

impl Cluster {
    /// # Errors
    /// A URL redis does not accept, or no answer from the server.
    pub fn connect(url: &str, node: String) -> anyhow::Result<Arc<Cluster>> {
        let client = redis::Client::open(url)?;
        let mut c = client.get_connection_with_timeout(Duration::from_secs(5))?;
        redis::cmd("PING").query::<String>(&mut c)?;
        Ok(Arc::new(Cluster { client, node, seq: AtomicU64::new(0), acks: Mutex::new(HashMap::new()) }))
    }

    /// Subscribe (on a thread of its own) and apply what other nodes publish.
    ///
    /// # Errors
    /// The subscription could not be made.
    pub fn start(self: &Arc<Self>, control: Arc<Control>) -> anyhow::Result<()> {
        let mut conn = self.client.get_connection_with_timeout(Duration::from_secs(5))?;
        let me = self.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("cluster".into()).spawn(move || {
            let mut pubsub = conn.as_pubsub();
            let subscribed = pubsub.subscribe(CHANNEL);
            let _ = ready_tx.send(subscribed.is_ok());
            if let Err(e) = subscribed {
                pdp::say!("sark-pdp: cluster: cannot subscribe: {e}");
                return;
            }
            loop {
                let msg = match pubsub.get_message() {
                    Ok(m) => m,
                    Err(e) => {
                        pdp::say!("sark-pdp: cluster: {e}; changes from other nodes are not received");
                        return;
                    }
                };
                let Ok(payload) = msg.get_payload::<String>() else { continue };
                let Ok(message) = serde_json::from_str::<Message>(&payload) else { continue };
                me.handle(&control, message);
            }
        })?;
        anyhow::ensure!(ready_rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false), "cluster: no subscription to {CHANNEL}");
        Ok(())
    }

    fn handle(&self, control: &Control, message: Message) {
        match message {
            Message::Change { node, seq, change } if node != self.node => {
                let applied = match change {
                    Shared::InvalidateAll => Ok(control.publish(Change::InvalidateAll)),
                    Shared::Invalidate { tags } => Ok(control.publish(Change::Invalidate(tags))),
                    Shared::Put { path, value } => control.write_data(&path.iter().map(String::as_str).collect::<Vec<_>>(), DataWrite::Put(value)).map(|(_, e)| e),
                    Shared::Patch { path, patch } => control.write_data(&path.iter().map(String::as_str).collect::<Vec<_>>(), DataWrite::Patch(patch)).map(|(_, e)| e),
                };
                match applied {
                    Ok(epoch) if control.wait_blocking(epoch, Duration::from_secs(30)) => {
                        let ack = Message::Ack { node, seq, from: self.node.clone() };
                        if let Err(e) = self.send(&ack) {
                            pdp::say!("sark-pdp: cluster: cannot acknowledge: {e}");
                        }
                    }
                    Ok(_) => pdp::say!("sark-pdp: cluster: a change from {node} was not acknowledged by every shard in time"),
                    Err(why) => pdp::say!("sark-pdp: cluster: a change from {node} was refused here: {why}"),
                }
            }
            Message::Ack { node, seq, .. } if node == self.node => {
                let mut acks = self.acks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                *acks.entry(seq).or_insert(0) += 1;
            }
            _ => {}
        }
    }

    fn send(&self, message: &Message) -> anyhow::Result<()> {
        let mut c = self.client.get_connection_with_timeout(Duration::from_secs(5))?;
        redis::cmd("PUBLISH").arg(CHANNEL).arg(serde_json::to_string(message)?).query::<i64>(&mut c)?;
        Ok(())
    }

    /// Publish a change this node has applied; its sequence number (blocking).
    ///
    /// # Errors
    /// Redis unreachable.
    pub fn broadcast(&self, change: Shared) -> anyhow::Result<u64> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.send(&Message::Change { node: self.node.clone(), seq, change })?;
        Ok(seq)
    }

    /// Wait until `n` other nodes acknowledged `seq`, or `timeout`; how many did (blocking).
    pub fn wait_acks(&self, seq: u64, n: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.acks.lock().map_or(0, |a| a.get(&seq).copied().unwrap_or(0));
            if got >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
