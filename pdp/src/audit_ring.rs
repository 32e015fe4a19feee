//! The audit hand-off: one lock-free SPSC ring (rtrb) per shard, drained by one writer
//! thread into the durable audit log ([`crate::audit_log`]), in batches.
//!
//! A full ring hands the record back ([`AuditProducer::try_push`]); the shard keeps it and
//! stops reading from its sockets until there is room, so no record is ever dropped. The
//! writer publishes, per shard, how many of its records are durable (or written, with
//! durability `none`): in `sync` mode a shard holds a reply until that count passes the
//! reply's record. The writer ends when every producer is gone and every ring is empty.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::audit::AuditRecord;
use crate::audit_log::AuditLog;

/// A shard's end of its ring.
#[derive(Debug)]
pub struct AuditProducer {
    ring: rtrb::Producer<AuditRecord>,
    /// Records pushed so far: the next record's number is this plus one.
    pushed: u64,
    durable: Arc<Vec<AtomicU64>>,
    index: usize,
}

impl AuditProducer {
    /// Queue a record and return its number on this ring (1, 2, …), or hand it back when
    /// the ring is full.
    ///
    /// # Errors
    /// The record itself, when the ring is full.
    // Handing the record back is the point (glommio's `try_push`): the shard decides.
    #[allow(clippy::result_large_err)]
    pub fn try_push(&mut self, record: AuditRecord) -> Result<u64, AuditRecord> {
        self.ring.push(record).map_err(|rtrb::PushError::Full(r)| r)?;
        self.pushed += 1;
        Ok(self.pushed)
    }

    /// Free slots right now.
    pub fn slots(&self) -> usize {
        self.ring.slots()
    }

    /// How many of this ring's records the writer has made durable (written, with
    /// durability `none`).
    pub fn durable(&self) -> u64 {
        self.durable.get(self.index).map_or(0, |c| c.load(Ordering::Acquire))
    }
}

/// The writer's end of every ring.
#[derive(Debug)]
pub struct AuditDrain {
    rings: Vec<rtrb::Consumer<AuditRecord>>,
    durable: Arc<Vec<AtomicU64>>,
    /// The log's next sequence number, published after each pass (sinks' lag is measured
    /// against it).
    pub next_seq: Arc<AtomicU64>,
}

/// One ring per shard, each of `capacity` records.
pub fn rings(shards: usize, capacity: usize) -> (Vec<AuditProducer>, AuditDrain) {
    let durable: Arc<Vec<AtomicU64>> = Arc::new((0..shards).map(|_| AtomicU64::new(0)).collect());
    let (producers, consumers) = (0..shards)
        .map(|index| {
            let (p, c) = rtrb::RingBuffer::new(capacity.max(1));
            (AuditProducer { ring: p, pushed: 0, durable: durable.clone(), index }, c)
        })
        .unzip();
    (producers, AuditDrain { rings: consumers, durable, next_seq: Arc::new(AtomicU64::new(0)) })
}

impl AuditDrain {
    /// Drain every ring into `log` until all producers are dropped and the rings are
    /// empty, taking at most `batch` records from each ring per pass (one busy shard
    /// cannot starve the others). After each pass the lines go to the kernel; they are made
    /// durable as the log's durability mode asks, and then each shard's durable count is
    /// published. Returns the number of records written.
    ///
    /// # Errors
    /// A write or an `fdatasync` failed; the records not yet written stay in the rings.
    pub fn run(mut self, log: &mut AuditLog, batch: usize) -> std::io::Result<u64> {
        let mut written = 0u64;
        let mut taken = vec![0u64; self.rings.len()];
        let mut idle = 0u32;
        loop {
            let mut took = 0usize;
            for (ring, count) in self.rings.iter_mut().zip(taken.iter_mut()) {
                for _ in 0..batch.max(1) {
                    match ring.pop() {
                        Ok(r) => {
                            log.append(&r)?;
                            *count += 1;
                            took += 1;
                        }
                        Err(_) => break,
                    }
                }
            }
            let done = took == 0 && self.rings.iter().all(|r| r.is_abandoned() && r.is_empty());
            if took > 0 {
                log.flush()?;
                written += took as u64;
                self.next_seq.store(log.next_seq(), Ordering::Release);
            }
            let none = log.durability() == crate::audit_log::Durability::None;
            if log.commit_due() || (done && !none) {
                log.sync()?;
                self.publish(&taken);
            } else if none && took > 0 {
                self.publish(&taken);
            }
            if done {
                return Ok(written);
            }
            if took > 0 {
                idle = 0;
                continue;
            }
            // Nothing to do: back off from spinning to short sleeps, and after ~100 ms
            // without a record to 1 ms ones (an idle server's writer then wakes 1,000 times
            // a second, not 20,000: ~11% of a core before). The first record after such a
            // lull waits up to 1 ms for the writer; only `sync` replies wait with it.
            idle = idle.saturating_add(1);
            if idle < 64 {
                std::hint::spin_loop();
            } else if idle < 2_000 {
                std::thread::sleep(Duration::from_micros(50));
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Throw away up to `n` queued records of every ring (benchmarks make room this way;
    /// the server never discards).
    pub fn discard(&mut self, n: usize) {
        for ring in &mut self.rings {
            for _ in 0..n {
                if ring.pop().is_err() {
                    break;
                }
            }
        }
    }

    fn publish(&self, taken: &[u64]) {
        for (cell, n) in self.durable.iter().zip(taken) {
            cell.store(*n, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn record(shard: u16, n: u64) -> AuditRecord {
        crate::audit::test_record((u128::from(shard) << 64) | u128::from(n), &format!("u{n}"), n.is_multiple_of(2))
    }

    #[test]
    fn every_record_is_written_exactly_once_through_full_rings() {
        const PER_SHARD: u64 = 10_000;
        // Tiny rings: the producers are refused often and must hold on and retry.
        let (producers, drain) = rings(3, 8);
        let dir = std::env::temp_dir().join(format!("sark-pdp-ring-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut log = crate::audit_log::AuditLog::open(crate::audit_log::LogConfig::new(&dir)).unwrap();
        let writer = std::thread::spawn(move || drain.run(&mut log, 4).unwrap());
        let mut refused = 0u64;
        let shards: Vec<_> = producers
            .into_iter()
            .enumerate()
            .map(|(shard, mut p)| {
                std::thread::spawn(move || {
                    let mut refused = 0u64;
                    for n in 0..PER_SHARD {
                        let mut r = record(shard as u16, n);
                        loop {
                            match p.try_push(r) {
                                Ok(number) => {
                                    assert_eq!(number, n + 1);
                                    break;
                                }
                                Err(back) => {
                                    refused += 1;
                                    r = back;
                                    std::thread::yield_now();
                                }
                            }
                        }
                    }
                    refused
                })
            })
            .collect();
        for s in shards {
            refused += s.join().unwrap();
        }
        let n = writer.join().unwrap();
        assert_eq!(n, 3 * PER_SHARD);
        let lines = crate::audit_log::read_all(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let ids: Vec<String> = lines
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["decision_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids.len() as u64, 3 * PER_SHARD);
        assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), ids.len(), "a record was written twice");
        // The test exercised the full-ring path (it is what keeps records from being dropped).
        assert!(refused > 0, "rings never filled; the back-pressure path went untested");
    }

    #[test]
    fn the_writer_stops_when_the_shards_are_gone_and_publishes_what_is_durable() {
        let dir = std::env::temp_dir().join(format!("sark-pdp-ring-stop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = crate::audit_log::LogConfig::new(&dir);
        cfg.durability = crate::audit_log::Durability::Sync;
        let mut log = crate::audit_log::AuditLog::open(cfg).unwrap();
        let (mut producers, drain) = rings(2, 16);
        for n in 0..5 {
            assert!(producers[1].try_push(record(1, n)).is_ok());
        }
        let watch = producers.pop().unwrap();
        let other = producers.pop().unwrap();
        drop(other);
        let writer = std::thread::spawn(move || drain.run(&mut log, 8).unwrap());
        // The shard sees its five records become durable, then leaves.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while watch.durable() < 5 {
            assert!(std::time::Instant::now() < deadline, "records never became durable");
            std::thread::yield_now();
        }
        drop(watch);
        assert_eq!(writer.join().unwrap(), 5);
        assert_eq!(crate::audit_log::read_all(&dir).unwrap().len(), 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
