//! The decision path's audit cost: building a record (one allocation) and pushing it on the
//! shard's ring. `cargo bench -p perf --bench ring`.

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pdp::audit::{AuditRecord, Fields};
use pdp::audit_ring::rings;
use pdp::point::Answer;

fn fields() -> Fields<'static> {
    perf::sample_audit_fields()
}

fn ring(c: &mut Criterion) {
    let decision = Arc::new(pdp::Decision::deny(pdp::EvalError::Policy("x".into()), pdp::EngineKind::Rvm, "r".into()));
    let answer = Answer { decision, cache_hit: true, ttl: Duration::from_secs(60) };
    let f = fields();
    let mut g = c.benchmark_group("audit");
    g.bench_function("record_build", |b| b.iter(|| black_box(AuditRecord::new(1, 2, &answer, 3, Some(true), black_box(&f)))));
    let (mut producers, drain) = rings(1, 4096);
    let producer = RefCell::new(producers.remove(0));
    let consumer = RefCell::new(drain);
    let record = AuditRecord::new(1, 2, &answer, 3, Some(true), &f);
    g.bench_function("ring_push", |b| {
        b.iter_batched(
            || {
                // Keep room on the ring (outside the timed part).
                if producer.borrow().slots() == 0 {
                    consumer.borrow_mut().discard(4096);
                }
                record.clone()
            },
            |r| black_box(producer.borrow_mut().try_push(r).is_ok()),
            BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);
