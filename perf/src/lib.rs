//! Benchmarks of the hot paths: `benches/` (criterion) and `src/bin/` (measurements that are not times, such as cache hit ratios).
