//! Instruction counts (iai-callgrind, under valgrind) of the decision path's audit work:
//! building a record and pushing it on the shard's ring.
//! `scripts/install-iai.sh && cargo bench -p perf --bench iai_audit`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use iai_callgrind::{library_benchmark, library_benchmark_group, main};
use pdp::audit::{AuditRecord, Fields};
use pdp::audit_ring::{AuditDrain, AuditProducer, rings};
use pdp::point::Answer;

fn answer() -> Answer {
    let decision = Arc::new(pdp::Decision::deny(pdp::EvalError::Policy("x".into()), pdp::EngineKind::Rvm, "r".into()));
    Answer { decision, cache_hit: true, ttl: Duration::from_secs(60) }
}

fn fields() -> Fields<'static> {
    perf::sample_audit_fields()
}

fn ring_with_record() -> (AuditProducer, AuditDrain, AuditRecord) {
    let (mut producers, drain) = rings(1, 1024);
    let record = AuditRecord::new(1, 2, &answer(), 3, Some(true), &fields());
    (producers.remove(0), drain, record)
}

#[library_benchmark]
#[bench::typical((answer(), fields()))]
fn record_build((answer, fields): (Answer, Fields<'static>)) -> (AuditRecord, Answer, Fields<'static>) {
    let r = black_box(AuditRecord::new(1, 2, &answer, 3, Some(true), &fields));
    (r, answer, fields)
}

#[library_benchmark]
#[bench::one(ring_with_record())]
fn ring_push((mut producer, drain, record): (AuditProducer, AuditDrain, AuditRecord)) -> (AuditProducer, AuditDrain, bool) {
    let ok = black_box(producer.try_push(record).is_ok());
    (producer, drain, ok)
}

library_benchmark_group!(name = audit; benchmarks = record_build, ring_push);
main!(library_benchmark_groups = audit);
