//! Every metric an Ordo process exports, described in one place: HELP text, histogram buckets
//! that fit what is measured, `ordo_build_info` and the standard `process_*` metrics.
//!
//! Describing a metric a process never records costs nothing: the exporter writes HELP only for
//! metrics that have values.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// Latencies, in seconds: 0.5 ms to 10 s.
const SECONDS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Sizes of batches, in items: 1 to 5000.
const COUNTS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram { count_shaped: bool },
}

/// `(name, kind, help)` of every metric of every Ordo process.
const METRICS: &[(&str, Kind, &str)] = &[
    // HTTP (both APIs)
    ("ordo_http_requests_total", Kind::Counter, "HTTP requests answered, by method, matched route and status."),
    (
        "ordo_http_request_duration_seconds",
        Kind::Histogram { count_shaped: false },
        "Time to answer an HTTP request, by method, matched route and status.",
    ),
    // Commands (command API, saga)
    ("ordo_commands_total", Kind::Counter, "Commands handled, by command and outcome."),
    ("ordo_command_duration_seconds", Kind::Histogram { count_shaped: false }, "Time to handle a command, by command."),
    (
        "ordo_append_conflicts_total",
        Kind::Counter,
        "Appends that lost a race with a concurrent writer of the same stream.",
    ),
    (
        "ordo_command_retries_total",
        Kind::Counter,
        "Commands retried after losing a race with a concurrent writer, by command.",
    ),
    // Event log writer
    (
        "ordo_append_batch_requests",
        Kind::Histogram { count_shaped: true },
        "Append requests committed together in one group commit.",
    ),
    ("ordo_append_batch_seconds", Kind::Histogram { count_shaped: false }, "Time to commit one group of appends."),
    ("ordo_append_lock_timeouts_total", Kind::Counter, "Appends that waited too long for the event log's writer lock."),
    (
        "ordo_append_refused_tries_total",
        Kind::Counter,
        "What the database refused of the writer's decided batches, by kind (head, clock, key, claim); the writer decides again.",
    ),
    (
        "ordo_append_left_to_database_total",
        Kind::Counter,
        "Batches still refused after the writer's tries, decided in the database instead.",
    ),
    (
        "ordo_log_writer_lock_held_seconds",
        Kind::Gauge,
        "How long the current holder has held the event log's writer lock.",
    ),
    // Relay
    ("ordo_relay_events_published_total", Kind::Counter, "Events the relay published to Kafka."),
    ("ordo_relay_publish_errors_total", Kind::Counter, "Failed publish or topic-creation attempts of the relay."),
    ("ordo_relay_republishes_total", Kind::Counter, "Events published again after an unconfirmed batch."),
    ("ordo_relay_dead_letters_total", Kind::Counter, "Events the relay could not publish and set aside."),
    ("ordo_relay_lag_events", Kind::Gauge, "Events in the log not yet published by the relay."),
    ("ordo_relay_lag_seconds", Kind::Gauge, "Age of the oldest event not yet published by the relay."),
    ("ordo_relay_is_leader", Kind::Gauge, "1 while this relay holds the leader lock, else 0."),
    ("ordo_relay_incarnation", Kind::Gauge, "Leader incarnation this relay publishes under."),
    // Projectors
    ("ordo_projector_events_applied_total", Kind::Counter, "Events applied to read models, by projection."),
    ("ordo_projector_events_skipped_total", Kind::Counter, "Events the projectors skipped as already applied."),
    (
        "ordo_projector_dead_letters_total",
        Kind::Counter,
        "Events the projectors set aside as dead letters (poisoned or on a parked stream).",
    ),
    (
        "ordo_projector_streams_parked_total",
        Kind::Counter,
        "Events the projectors could not apply (poisoned), parking their stream.",
    ),
    (
        "ordo_projector_batch_failures_total",
        Kind::Counter,
        "Batches of the projectors that failed and were retried after a backoff.",
    ),
    ("ordo_projector_forged_messages_total", Kind::Counter, "Messages refused because their signature did not verify."),
    ("ordo_projector_offsets_skipped_total", Kind::Counter, "Kafka offsets skipped as unreadable."),
    ("ordo_projector_batch_size", Kind::Histogram { count_shaped: true }, "Events in one batch of the projectors."),
    (
        "ordo_projector_batch_duration_seconds",
        Kind::Histogram { count_shaped: false },
        "Time to apply one batch of the projectors.",
    ),
    ("ordo_projection_lag_events", Kind::Gauge, "Events in the log a projection has not applied yet, by projection."),
    (
        "ordo_projection_lag_seconds",
        Kind::Gauge,
        "Age of the oldest event a projection has not applied yet, by projection.",
    ),
    (
        "ordo_projection_last_event_age_seconds",
        Kind::Gauge,
        "Age of the last event a projection applied, by projection.",
    ),
    ("ordo_projection_dead_letters", Kind::Gauge, "Dead letters waiting, by projection."),
    ("ordo_projection_parked_streams", Kind::Gauge, "Parked streams waiting, by projection."),
    ("ordo_projection_rebuilds_total", Kind::Counter, "Projection rebuilds swapped in, by projection."),
    // Saga
    ("ordo_saga_outcomes_total", Kind::Counter, "Messages the order saga handled, by outcome."),
    ("ordo_saga_in_flight", Kind::Gauge, "Events the order saga is handling right now."),
    (
        "ordo_saga_uncommitted",
        Kind::Gauge,
        "Events the order saga received whose offsets are not committed yet (some earlier offset is still being handled).",
    ),
    // Query API
    ("ordo_query_consistency_total", Kind::Counter, "Reads that waited for a consistency token, by outcome."),
    ("ordo_query_log_subscribers", Kind::Gauge, "Clients following the live event log."),
    ("ordo_query_cache_total", Kind::Counter, "Reads the query API's cache could answer (hit) or not (miss)."),
    ("ordo_query_cache_entries", Kind::Gauge, "Rows and first pages held by the query API's cache."),
    ("ordo_query_cache_bytes", Kind::Gauge, "Bytes of response bodies held by the query API's cache."),
    (
        "ordo_query_cache_resets_total",
        Kind::Counter,
        "Times the query API's cache was emptied because its invalidation listener was lost.",
    ),
    ("ordo_query_log_catch_up_reads_total", Kind::Counter, "Reads of the event log for subscribers that fell behind."),
    // Every process
    ("ordo_build_info", Kind::Gauge, "Always 1; the labels name the version and the process."),
];

/// The names of every described metric.
pub fn described() -> impl Iterator<Item = &'static str> {
    METRICS.iter().map(|(name, _, _)| *name)
}

/// The recorder's settings: seconds buckets by default, count-shaped buckets for batch sizes.
///
/// # Errors
/// Never with the constant bucket lists above.
pub fn builder() -> Result<PrometheusBuilder, BuildError> {
    let mut builder = PrometheusBuilder::new().set_buckets(SECONDS)?;
    for (name, kind, _) in METRICS {
        let buckets = match kind {
            Kind::Histogram { count_shaped: true } => COUNTS,
            Kind::Histogram { count_shaped: false } => SECONDS,
            Kind::Counter | Kind::Gauge => continue,
        };
        builder = builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)?;
    }
    Ok(builder)
}

/// Gives every metric its HELP text and sets `ordo_build_info{version,process} 1`. Call once the
/// recorder is installed.
pub fn describe() {
    for (name, kind, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram { .. } => metrics::describe_histogram!(*name, *help),
        }
    }
    let process = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "ordo".into());
    metrics::gauge!("ordo_build_info", "version" => env!("CARGO_PKG_VERSION"), "process" => process).set(1.0);
}

/// The standard `process_*` metrics of this process, read from `/proc` at scrape time, in the
/// Prometheus text format (empty where `/proc` is missing).
pub fn process_metrics() -> String {
    let mut out = String::new();
    let Some(stat) = ProcStat::read() else { return out };
    let mut write = |name: &str, kind: &str, help: &str, value: f64| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n"));
    };
    write("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", stat.cpu_seconds);
    write("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", stat.rss_bytes);
    write("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", stat.vsize_bytes);
    if let Some(start) = stat.start_time_seconds {
        write("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", start);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        write("process_open_fds", "gauge", "Number of open file descriptors.", fds.count() as f64);
    }
    if let Some(max) = max_fds() {
        write("process_max_fds", "gauge", "Maximum number of open file descriptors.", max);
    }
    out
}

/// What `/proc/self/stat` says, in base units.
struct ProcStat {
    cpu_seconds: f64,
    rss_bytes: f64,
    vsize_bytes: f64,
    start_time_seconds: Option<f64>,
}

/// Clock ticks per second and page size of Linux on every platform Ordo runs on.
const TICKS_PER_SECOND: f64 = 100.0;
const PAGE_BYTES: f64 = 4096.0;

impl ProcStat {
    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name may hold spaces; the fields after it are space-separated.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
        // After the name: state is field 3, so field n is at index n - 3.
        let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        let cpu_seconds = (field(14)? + field(15)?) / TICKS_PER_SECOND;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<f64>().ok()));
        let start_time_seconds = boot_time.zip(field(22)).map(|(boot, ticks)| boot + ticks / TICKS_PER_SECOND);
        Some(Self { cpu_seconds, vsize_bytes: field(23)?, rss_bytes: field(24)? * PAGE_BYTES, start_time_seconds })
    }
}

fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    fn sources(dir: &Path, out: &mut String) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("metrics.rs") {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }

    /// Names given to `counter!`, `gauge!` and `histogram!` in the processes' sources.
    fn recorded_names() -> BTreeSet<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut text = String::new();
        for crate_dir in ["service", "event-store", "commands", "command-api", "query-api", "projectors", "saga"] {
            sources(&root.join(crate_dir).join("src"), &mut text);
        }
        let mut names = BTreeSet::new();
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = text[at + macro_name.len()..].trim_start();
                if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                    names.insert(name.to_owned());
                }
            }
        }
        names
    }

    #[test]
    fn every_recorded_metric_is_described_and_every_description_is_recorded() {
        let recorded = recorded_names();
        assert!(recorded.len() > 30, "found only {recorded:?}");
        let described: BTreeSet<String> = described().map(str::to_owned).collect();
        let missing: Vec<_> = recorded.difference(&described).collect();
        assert!(missing.is_empty(), "metrics without HELP text: {missing:?}");
        let stale: Vec<_> = described.difference(&recorded).filter(|n| *n != "ordo_build_info").collect();
        assert!(stale.is_empty(), "described but never recorded: {stale:?}");
    }

    #[test]
    fn every_described_metric_with_its_buckets_and_the_process_metrics_pass_promtool() {
        let handle = crate::ops::metrics_handle();
        for (name, kind, _) in METRICS {
            match kind {
                Kind::Counter => metrics::counter!(*name, "outcome" => "ok").increment(1),
                Kind::Gauge => metrics::gauge!(*name).set(1.0),
                Kind::Histogram { .. } => metrics::histogram!(*name).record(3.0),
            }
        }
        let text = format!("{}{}", handle.render(), process_metrics());
        if let Err(findings) = crate::test_process::promtool_check_metrics(&text) {
            panic!("promtool check metrics:\n{findings}\n{text}");
        }
        assert!(text.contains("# HELP ordo_projector_batch_size "), "{text}");
        assert!(text.contains("ordo_projector_batch_size_bucket{le=\"500\"}"), "count buckets: {text}");
        assert!(text.contains("ordo_http_request_duration_seconds_bucket{le=\"0.005\"}"), "seconds: {text}");
        assert!(!text.contains("ordo_projector_batch_size_bucket{le=\"0.005\"}"), "{text}");
        assert!(text.contains("ordo_build_info{"), "{text}");
    }

    #[test]
    fn process_metrics_are_read_from_proc() {
        let text = process_metrics();
        for name in
            ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_max_fds"]
        {
            assert!(text.contains(&format!("\n{name} ")), "{name} missing from {text}");
        }
        assert!(builder().is_ok());
    }
}
