//! Replays every committed fuzz input through its target's body: the seed corpora
//! (`fuzz/corpus/<target>/`) and every crash the fuzzer found (`fuzz/regressions/<target>/`,
//! each a regression test from the day it was found). A target without seeds fails: a
//! corpus that went missing would otherwise pass by replaying nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

fn inputs(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut v: Vec<_> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).map(|p| (p.display().to_string(), std::fs::read(&p).unwrap())).collect();
    v.sort();
    v
}

#[test]
fn every_target_has_seeds_and_replays_them_and_its_regressions() {
    for (target, body) in fuzz_bodies::TARGETS {
        let seeds = inputs("corpus", target);
        assert!(seeds.len() >= 3, "fuzz/corpus/{target} holds {} seeds", seeds.len());
        for (path, bytes) in seeds.iter().chain(inputs("regressions", target).iter()) {
            if std::panic::catch_unwind(|| body(bytes)).is_err() {
                panic!("{target}: {path} breaks a property");
            }
        }
    }
}
