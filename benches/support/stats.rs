//! Medians and percentiles of samples. Benchmarks report medians (machines are noisy) and
//! nearest-rank percentiles; both are NaN for no samples, so an empty series prints as `NaN`
//! instead of panicking in the middle of a report.
//!
//! Some benchmarks include this file alone (`#[path = "support/stats.rs"] mod stats;`) and use
//! a part of it.
#![allow(dead_code)]

/// `v` sorted ascending (total order: NaN last).
pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The median: the middle sample, or the mean of the two middle ones.
pub fn median(v: &[f64]) -> f64 {
    let v = sorted(v);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The nearest-rank `p`-th percentile (`p` in 0..=100): the smallest sample with at least
/// `p` % of the samples at or below it.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let v = sorted(v);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A whole-number knob from the environment (`BENCH_…`), at least 1; `default` when unset.
/// Panics with the variable named when it is set to anything else.
pub fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .unwrap_or_else(|| panic!("{name} must be a whole number >= 1, got {v:?}")),
        Err(_) => default,
    }
}
