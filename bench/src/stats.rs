//! Latency summaries.

use std::time::Duration;

/// Throughput and latency percentiles of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub ops: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl Summary {
    /// Summarises latencies in microseconds gathered over `elapsed`.
    pub fn from_micros(mut micros: Vec<u64>, elapsed: Duration) -> Self {
        micros.sort_unstable();
        let pct = |p: f64| -> f64 {
            if micros.is_empty() {
                return 0.0;
            }
            let idx = ((micros.len() as f64 - 1.0) * p).round() as usize;
            micros[idx.min(micros.len() - 1)] as f64 / 1000.0
        };
        let seconds = elapsed.as_secs_f64();
        Self {
            ops: micros.len() as u64,
            seconds,
            per_second: if seconds > 0.0 { micros.len() as f64 / seconds } else { 0.0 },
            p50_ms: pct(0.50),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
        }
    }
}
