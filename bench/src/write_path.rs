//! `ordo-bench write-path-report`: the figures of one write-path sequence (`scripts/bench.sh
//! write-path`), read from the JSON files the runs left in one directory, as one Markdown table
//! of figure, measured, target and whether it is met, with the load average before and after.
//!
//! Files read (each optional; a missing one leaves its rows out):
//! - `append.json`: `ordo-bench append` in one process, beside pgbench;
//! - `append-3p-lock.json`, `append-3p-nolock.json`: three processes with and without the
//!   writer lock (ADR 0019);
//! - `commands.json`, `commands-hot.json`: the command service called directly, beside the peer;
//! - `cold-load.json`: cold loads of long streams;
//! - `load.json`: the whole stack over HTTP, beside pgbench;
//! - `uptime-before.txt`, `uptime-after.txt`: `uptime` at the start and the end.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::report::{HOT_GOAL_PER_S, RSS_GOAL_MIB};

#[derive(clap::Args)]
pub struct Args {
    /// The directory the runs wrote their JSON files into.
    #[arg(long)]
    dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let md = markdown(&args.dir);
    std::fs::write(args.dir.join("write-path.md"), &md)?;
    println!("{md}");
    Ok(())
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub figure: String,
    pub measured: String,
    pub target: String,
    /// `None`: not judged (no target, or the figure is missing).
    pub met: Option<bool>,
}

fn read(dir: &Path, name: &str) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(dir.join(name)).ok()?).ok()
}

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    let mut v = v;
    for p in path {
        v = v.get(*p)?;
    }
    v.as_f64()
}

fn by<'a>(runs: &'a Value, key: &str, n: u64) -> Option<&'a Value> {
    runs.as_array()?.iter().find(|r| r.get(key).and_then(Value::as_u64) == Some(n))
}

fn phase<'a>(load: &'a Value, name: &str) -> Option<&'a Value> {
    load.get("phases")?.as_array()?.iter().find(|p| p.get("name").and_then(Value::as_str) == Some(name))
}

fn status_count(phase: &Value, statuses: &[&str]) -> u64 {
    let Some(errors) = phase.get("errors").and_then(Value::as_object) else { return 0 };
    errors
        .values()
        .filter_map(Value::as_object)
        .flat_map(|e| e.iter())
        .filter(|(s, _)| statuses.is_empty() || statuses.contains(&s.as_str()))
        .filter_map(|(_, n)| n.as_u64())
        .sum()
}

/// The targets, each with what this run measured.
pub fn rows(dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let missing = |figure: String, target: &str| Row {
        figure,
        measured: "not measured".into(),
        target: target.into(),
        met: None,
    };

    let append = read(dir, "append.json");
    for (writers, target) in [(32u64, 1.5), (8, 1.0), (1, 0.6)] {
        let figure = format!("`ordo-bench append` / pgbench, {writers} writer{}", if writers == 1 { "" } else { "s" });
        let t = format!(">= {target:.1}x");
        match append.as_ref().and_then(|a| by(a, "writers", writers)) {
            Some(r) => {
                let (o, p) = (f(r, &["ordo", "per_second"]).unwrap_or(0.0), f(r, &["pgbench", "per_second"]));
                let ratio = p.map(|p| o / p.max(1e-9));
                rows.push(Row {
                    figure,
                    measured: match (p, ratio) {
                        (Some(p), Some(ratio)) => format!("{o:.0} appends/s vs {p:.0} tx/s = **{ratio:.2}x**"),
                        _ => format!("{o:.0} appends/s (no pgbench)"),
                    },
                    target: t,
                    met: ratio.map(|r| r >= target),
                });
            }
            None => rows.push(missing(figure, &t)),
        }
    }
    let figure = "`ordo-bench append` p99 / pgbench p99, 32 writers".to_string();
    match append.as_ref().and_then(|a| by(a, "writers", 32)) {
        Some(r) => {
            let (o, p) = (f(r, &["ordo", "p99_ms"]).unwrap_or(0.0), f(r, &["pgbench", "p99_ms"]).unwrap_or(0.0));
            let ratio = o / p.max(1e-9);
            rows.push(Row {
                figure,
                measured: format!("{o:.2} ms vs {p:.2} ms = **{ratio:.2}x**"),
                target: "<= 2x".into(),
                met: Some(p > 0.0 && ratio <= 2.0),
            });
        }
        None => rows.push(missing(figure, "<= 2x")),
    }

    let load = read(dir, "load.json");
    let clients = load.as_ref().and_then(|l| l.get("concurrency")).and_then(Value::as_u64).unwrap_or(32);
    let figure = format!("HTTP single-stream adjustments at {clients} clients, relay and projectors running / pgbench");
    match load.as_ref().and_then(|l| Some((phase(l, "adjust-max")?, l.get("pgbench")?))) {
        Some((max, pg)) if !pg.is_null() => {
            let (o, p) =
                (f(max, &["commands", "per_second"]).unwrap_or(0.0), f(pg, &["max", "per_second"]).unwrap_or(0.0));
            let ratio = o / p.max(1e-9);
            rows.push(Row {
                figure,
                measured: format!("{o:.0} cmd/s vs {p:.0} tx/s = **{ratio:.2}x**"),
                target: ">= 0.5x".into(),
                met: Some(ratio >= 0.5),
            });
        }
        _ => rows.push(missing(figure, ">= 0.5x")),
    }
    let figure = "p99 at half that rate / pgbench's p99 at half its rate".to_string();
    match load.as_ref().and_then(|l| Some((phase(l, "adjust-half")?, l.get("pgbench")?))) {
        Some((half, pg)) if !pg.is_null() => {
            let (o, p) = (f(half, &["commands", "p99_ms"]).unwrap_or(0.0), f(pg, &["half", "p99_ms"]).unwrap_or(0.0));
            let ratio = o / p.max(1e-9);
            let rate = f(half, &["commands", "per_second"]).unwrap_or(0.0);
            rows.push(Row {
                figure,
                measured: format!("{o:.2} ms (at {rate:.0} cmd/s) vs {p:.2} ms = **{ratio:.1}x**"),
                target: "<= 3x".into(),
                met: Some(p > 0.0 && ratio <= 3.0),
            });
        }
        _ => rows.push(missing(figure, "<= 3x")),
    }
    let target = format!(">= {HOT_GOAL_PER_S:.0} ok/s, 0 conflicts surfaced");
    match load.as_ref().and_then(|l| phase(l, "hot-product")) {
        Some(hot) => {
            let n = hot.get("concurrency").and_then(Value::as_u64).unwrap_or(8);
            let per_s = f(hot, &["commands", "per_second"]).unwrap_or(0.0);
            let conflicts = status_count(hot, &["409", "412"]);
            let failed = status_count(hot, &[]);
            rows.push(Row {
                figure: format!("one product, {n} clients, no If-Match (HTTP)"),
                measured: format!(
                    "**{per_s:.0} ok/s** ({:.2}x the goal), **{conflicts}** 409/412, {failed} failed in all",
                    per_s / HOT_GOAL_PER_S
                ),
                target,
                met: Some(per_s >= HOT_GOAL_PER_S && conflicts == 0),
            });
        }
        None => rows.push(missing("one product, 8 clients, no If-Match (HTTP)".into(), &target)),
    }

    let figure = "the command path without HTTP, distinct streams, 32 tasks / the cqrs-es peer".to_string();
    match read(dir, "commands.json").as_ref().and_then(|c| by(c, "tasks", 32)) {
        Some(r) if r.get("peer").is_some_and(|p| !p.is_null()) => {
            let (o, p) = (f(r, &["ordo", "per_second"]).unwrap_or(0.0), f(r, &["peer", "ok_per_s"]).unwrap_or(0.0));
            let ratio = o / p.max(1e-9);
            rows.push(Row {
                figure,
                measured: format!("{o:.0} cmd/s vs {p:.0} cmd/s = **{ratio:.2}x**"),
                target: ">= 2x".into(),
                met: Some(ratio >= 2.0),
            });
        }
        Some(r) => rows.push(Row {
            figure,
            measured: format!("{:.0} cmd/s (the peer did not run)", f(r, &["ordo", "per_second"]).unwrap_or(0.0)),
            target: ">= 2x".into(),
            met: None,
        }),
        None => rows.push(missing(figure, ">= 2x")),
    }

    let target = format!("< {RSS_GOAL_MIB:.0} MiB");
    match load.as_ref().and_then(|l| l.get("processes")).and_then(Value::as_object) {
        Some(procs) if !procs.is_empty() => {
            let mut all: Vec<(&String, f64)> =
                procs.iter().map(|(n, s)| (n, f(s, &["peak_rss_mib"]).unwrap_or(0.0))).collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1));
            let ordo_max = all.iter().filter(|(n, _)| !n.contains("broker")).map(|(_, r)| *r).fold(0.0, f64::max);
            let list: Vec<String> = all.iter().map(|(n, r)| format!("{n} {r:.0}")).collect();
            rows.push(Row {
                figure: "peak RSS of every process (MiB; the broker is not Ordo's)".into(),
                measured: list.join(", "),
                target,
                met: Some(ordo_max < RSS_GOAL_MIB),
            });
        }
        _ => rows.push(missing("peak RSS of every process".into(), &target)),
    }
    rows
}

fn yes_no(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "-",
    }
}

fn uptime(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .ok()
        .and_then(|u| u.split_once("load average:").map(|(_, l)| l.trim().to_owned()))
        .unwrap_or_else(|| "not recorded".into())
}

/// The whole report: targets first, then the supporting figures of each run.
pub fn markdown(dir: &Path) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Write path (issue 12 targets)\n");
    let _ = writeln!(
        md,
        "Load average (1, 5, 15 min) before: {}; after: {}.\n",
        uptime(dir, "uptime-before.txt"),
        uptime(dir, "uptime-after.txt")
    );
    let _ = writeln!(md, "| figure | measured | target | met |\n|---|---|---|---|");
    for r in rows(dir) {
        let _ = writeln!(md, "| {} | {} | {} | {} |", r.figure, r.measured, r.target, yes_no(r.met));
    }

    if let Some(append) = read(dir, "append.json") {
        let _ = writeln!(
            md,
            "\n### Appends, one process, beside pgbench (one-row INSERT, `-M prepared`)\n\n\
             | writers | appends/s | p50 ms | p99 ms | pgbench tx/s | p50 ms | p99 ms | ratio | p99 ratio |\n\
             |---|---|---|---|---|---|---|---|---|"
        );
        for r in append.as_array().into_iter().flatten() {
            let g = |p: &[&str]| f(r, p).unwrap_or(0.0);
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2}x | {:.2}x |",
                g(&["writers"]),
                g(&["ordo", "per_second"]),
                g(&["ordo", "p50_ms"]),
                g(&["ordo", "p99_ms"]),
                g(&["pgbench", "per_second"]),
                g(&["pgbench", "p50_ms"]),
                g(&["pgbench", "p99_ms"]),
                g(&["ratio"]),
                g(&["p99_ratio"]),
            );
        }
    }
    if let (Some(lock), Some(nolock)) = (read(dir, "append-3p-lock.json"), read(dir, "append-3p-nolock.json")) {
        let _ = writeln!(
            md,
            "\n### Appends from three processes: writer lock vs none (ADR 0019)\n\n\
             | writers | with the lock: appends/s | p99 ms | without: appends/s | p99 ms | lock / none |\n\
             |---|---|---|---|---|---|"
        );
        for r in lock.as_array().into_iter().flatten() {
            let w = r.get("writers").and_then(Value::as_u64).unwrap_or(0);
            let Some(n) = by(&nolock, "writers", w) else { continue };
            let (a, b) = (f(r, &["ordo", "per_second"]).unwrap_or(0.0), f(n, &["ordo", "per_second"]).unwrap_or(0.0));
            let _ = writeln!(
                md,
                "| {w} | {a:.0} | {:.2} | {b:.0} | {:.2} | {:.2}x |",
                f(r, &["ordo", "p99_ms"]).unwrap_or(0.0),
                f(n, &["ordo", "p99_ms"]).unwrap_or(0.0),
                a / b.max(1e-9)
            );
        }
    }
    for (file, title) in [
        ("commands.json", "Commands without HTTP, distinct streams, beside the cqrs-es peer"),
        ("commands-hot.json", "Commands without HTTP, one hot stream, beside the cqrs-es peer"),
    ] {
        let Some(c) = read(dir, file) else { continue };
        let _ = writeln!(
            md,
            "\n### {title}\n\n\
             | tasks | Ordo cmd/s | p50 ms | p99 ms | errors | peer ok/s | p50 ms | p99 ms | peer conflicts | ratio |\n\
             |---|---|---|---|---|---|---|---|---|---|"
        );
        for r in c.as_array().into_iter().flatten() {
            let g = |p: &[&str]| f(r, p).unwrap_or(0.0);
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {:.2} | {:.2} | {} | {:.2}x |",
                g(&["tasks"]),
                g(&["ordo", "per_second"]),
                g(&["ordo", "p50_ms"]),
                g(&["ordo", "p99_ms"]),
                g(&["errors"]) + g(&["refused"]),
                g(&["peer", "ok_per_s"]),
                g(&["peer", "p50_ms"]),
                g(&["peer", "p99_ms"]),
                g(&["peer", "conflicts"]),
                g(&["ratio"]),
            );
        }
    }
    if let Some(c) = read(dir, "cold-load.json") {
        let _ = writeln!(
            md,
            "\n### Cold load of one product stream by a fresh command service\n\n\
             | events | whole fold ms | from the snapshot ms | snapshot at version |\n|---|---|---|---|"
        );
        for r in c.as_array().into_iter().flatten() {
            let g = |p: &[&str]| f(r, p).unwrap_or(0.0);
            let _ = writeln!(
                md,
                "| {:.0} | {:.1} | {:.1} | {:.0} |",
                g(&["events"]),
                g(&["whole_fold_ms"]),
                g(&["from_snapshot_ms"]),
                g(&["snapshot_version"])
            );
        }
    }
    if let Some(load) = read(dir, "load.json") {
        let _ = writeln!(
            md,
            "\n### HTTP phases (whole stack)\n\n| phase | clients | rate limit | commands/s | p50 ms | p99 ms | failed | 409/412 |\n|---|---|---|---|---|---|---|---|"
        );
        for p in load.get("phases").and_then(Value::as_array).into_iter().flatten() {
            let g = |k: &[&str]| f(p, k).unwrap_or(0.0);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.0} | {:.1} | {:.1} | {} | {} |",
                p.get("name").and_then(Value::as_str).unwrap_or("?"),
                g(&["concurrency"]),
                f(p, &["rate_limit"]).map_or("none".into(), |r| format!("{r:.0}/s")),
                g(&["commands", "per_second"]),
                g(&["commands", "p50_ms"]),
                g(&["commands", "p99_ms"]),
                status_count(p, &[]),
                status_count(p, &["409", "412"]),
            );
        }
        if let Some(pg) = load.get("pgbench").filter(|p| !p.is_null()) {
            for (name, key) in [("pgbench flat out", "max"), ("pgbench at half its rate", "half")] {
                let _ = writeln!(
                    md,
                    "| {name} | {} | | {:.0} tx/s | {:.2} | {:.2} | | |",
                    f(pg, &["clients"]).unwrap_or(0.0),
                    f(pg, &[key, "per_second"]).unwrap_or(0.0),
                    f(pg, &[key, "p50_ms"]).unwrap_or(0.0),
                    f(pg, &[key, "p99_ms"]).unwrap_or(0.0),
                );
            }
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_gets_a_row_and_missing_runs_are_not_judged() {
        let dir = std::env::temp_dir().join(format!("ordo-write-path-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let append = serde_json::json!([
            {"writers": 32, "ordo": {"per_second": 30000.0, "p99_ms": 4.0}, "pgbench": {"per_second": 15000.0, "p99_ms": 3.0}},
            {"writers": 1, "ordo": {"per_second": 1000.0, "p99_ms": 1.0}, "pgbench": {"per_second": 4000.0, "p99_ms": 0.5}}
        ]);
        std::fs::write(dir.join("append.json"), append.to_string()).unwrap();
        let load = serde_json::json!({"concurrency": 32, "phases": [
            {"name": "hot-product", "concurrency": 8, "commands": {"per_second": 2500.0},
             "errors": {"hot": {"409": 3, "0": 1}}}
        ]});
        std::fs::write(dir.join("load.json"), load.to_string()).unwrap();
        std::fs::write(dir.join("uptime-before.txt"), " 10:00:00 up 1 min,  load average: 1.50, 0.80, 0.30\n").unwrap();

        let rows = rows(&dir);
        assert_eq!(rows.len(), 9);
        assert_eq!(rows[0].met, Some(true), "32 writers at 2.0x meets 1.5x");
        assert_eq!(rows[1].met, None, "no 8-writer run");
        assert_eq!(rows[2].met, Some(false), "1 writer at 0.25x misses 0.6x");
        assert_eq!(rows[3].met, Some(true), "p99 1.33x is within 2x");
        let hot = rows.iter().find(|r| r.figure.starts_with("one product")).unwrap();
        assert_eq!(hot.met, Some(false), "three conflicts reached clients");
        assert!(hot.measured.contains("**3** 409/412, 4 failed in all"), "{}", hot.measured);
        let md = markdown(&dir);
        assert!(md.contains("before: 1.50, 0.80, 0.30; after: not recorded"), "{md}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
