//! Instruction counts (iai-callgrind, under valgrind) of the HTTP front door's parse — head
//! and JSON body of SARK's typical question over OPA's data API and AuthZEN — and of
//! AuthZEN's mapping to SARK's input. Time per operation: `benches/http.rs`.
//! `scripts/install-iai.sh && cargo bench -p perf --bench iai_http`; `perf/check` compares
//! the counts with `perf/baseline/`.

use std::hint::black_box;

use iai_callgrind::{library_benchmark, library_benchmark_group, main};
use shard::http::{HttpConfig, parse_request};

fn config() -> HttpConfig {
    HttpConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 8181)))
}

fn request(which: usize) -> (HttpConfig, Vec<u8>) {
    let all = perf::sample_http_requests();
    (config(), all.get(which).map(|(_, r)| r.clone()).unwrap_or_default())
}

#[library_benchmark]
#[bench::opa_data(request(0))]
#[bench::authzen_evaluation(request(1))]
fn parse((cfg, mut buf): (HttpConfig, Vec<u8>)) -> bool {
    black_box(parse_request(&cfg, black_box(&mut buf))).is_ok_and(|r| r.is_some())
}

fn authzen_body() -> serde_json::Value {
    let (cfg, mut buf) = request(1);
    parse_request(&cfg, &mut buf).ok().flatten().map(|(_, v)| v).unwrap_or_default()
}

#[library_benchmark]
#[bench::evaluation(authzen_body())]
fn authzen_to_input(body: serde_json::Value) -> bool {
    black_box(shard::authzen::evaluation(black_box(&body))).is_ok()
}

library_benchmark_group!(name = http; benchmarks = parse, authzen_to_input);
main!(library_benchmark_groups = http);
