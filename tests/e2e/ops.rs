//! The operations pack: alert rules pass promtool, their unit tests fire as expected, and every
//! metric the rules and the dashboard use is one the code exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn promtool(args: &[&str]) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .expect("promtool (Debian package prometheus; scripts/install-tools.sh installs it)")
}

#[test]
fn the_shipped_alert_rules_pass_promtool_check() {
    let out = promtool(&["check", "rules", "ordo-alerts.yml"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_alert_rules_fire_in_their_unit_tests() {
    let out = promtool(&["test", "rules", "ordo-alerts.test.yml"]);
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// `ordo_*` names in a text, without the histogram suffixes Prometheus adds.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("ordo_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if boundary {
            let name = &text[start..end];
            let base = ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
            names.insert(base.to_owned());
        }
        i = end.max(start + 5);
    }
    names
}

fn exported_metrics() -> BTreeSet<String> {
    let mut source = String::new();
    for dir in ["command-api", "event-store", "saga", "projectors", "query-api", "service"] {
        collect_rs(&root().join(dir).join("src"), &mut source);
    }
    metric_names(&source)
}

fn collect_rs(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_metric_in_the_rules_and_the_dashboard_is_exported_by_the_code() {
    let exported = exported_metrics();
    for file in ["deploy/prometheus/ordo-alerts.yml", "deploy/grafana/ordo-dashboard.json"] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let used = metric_names(&text);
        assert!(!used.is_empty(), "{file} uses no metric");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(unknown.is_empty(), "{file} uses metrics no process exports: {unknown:?}");
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("deploy/grafana/ordo-dashboard.json")).unwrap())
            .unwrap();
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 10));
}
