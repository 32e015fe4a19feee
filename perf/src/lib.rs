//! Benchmarks of the hot paths: `benches/` (criterion: time per operation) and `src/bin/`
//! (measurements criterion does not make: engines side by side with per-evaluation
//! percentiles, cache hit ratios). Shared helpers live here.

use std::path::Path;

use pdp::bundle::{Bundle, BundleLimits, DECISION_ENTRYPOINT};

/// The shipped bundle, read from `policies/` (what `sark-pdp` embeds).
///
/// # Errors
/// The bundle does not load.
pub fn shipped_bundle() -> anyhow::Result<Bundle> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    Ok(Bundle::load(&dir, BundleLimits::default())?)
}

/// The inputs of the bundle's `data.sark.decision` cases, as JSON text: the benchmark
/// workload (every rule, every deny reason, allows and denies).
///
/// # Errors
/// The cases do not load, or there are none.
pub fn decision_inputs(bundle: &Bundle) -> anyhow::Result<Vec<String>> {
    let cases = pdp::cases::load(bundle).map_err(anyhow::Error::msg)?;
    let inputs: Vec<String> = cases
        .iter()
        .filter(|c| c.entrypoint == DECISION_ENTRYPOINT)
        .map(|c| c.input.to_string())
        .collect();
    anyhow::ensure!(!inputs.is_empty(), "no data.sark.decision cases to benchmark");
    Ok(inputs)
}

/// The `q`-quantile of sorted samples (nearest rank).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied().unwrap_or(0)
}

/// The median of a few values.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(0.0),
        n => (v.get(n / 2 - 1).copied().unwrap_or(0.0) + v.get(n / 2).copied().unwrap_or(0.0)) / 2.0,
    }
}

/// SARK's typical audit fields (a developer invoking `update_ticket`), for the audit
/// benches.
pub fn sample_audit_fields() -> pdp::audit::Fields<'static> {
    pdp::audit::Fields {
        user_id: "alice",
        action: "tool:invoke",
        tool_name: Some("update_ticket"),
        sensitivity_level: Some("medium"),
        server_id: None,
        server_name: None,
        client_ip: Some("10.20.30.40"),
        request_id: Some("req-0000000000000001"),
        session_id: Some("sess-1"),
        user_roles: vec!["developer"],
        user_teams: vec!["payments"],
    }
}
