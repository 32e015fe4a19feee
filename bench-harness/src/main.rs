//! `pdp-bench`: the load generator that will drive a running `sark-pdp` over both protocols
//! (issue 8). Until the server exists it only says so.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    eprintln!("pdp-bench: no server to drive yet; see `cargo bench -p perf` for the engine and cache benchmarks");
    std::process::ExitCode::from(2)
}
