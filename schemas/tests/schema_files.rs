//! The checked-in JSON Schema files under `schemas/json/` must match the Rust types.
//! `UPDATE_SCHEMAS=1 cargo test -p ordo-schemas schema_files` (`make schemas`) rewrites them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SUBDIRS: [&str; 2] = ["events", "commands"];

fn json_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("json")
}

/// Relative path -> content of every `.json` file currently checked in.
fn checked_in() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for sub in SUBDIRS {
        let Ok(entries) = std::fs::read_dir(json_dir().join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let name = format!("{sub}/{}", entry.file_name().to_string_lossy());
                let content = std::fs::read_to_string(&path).unwrap_or_default();
                files.insert(name, content);
            }
        }
    }
    files
}

#[test]
fn schema_files_match_the_code() {
    let expected = ordo_schemas::json_schema::schema_files().expect("schemas generate");
    let actual = checked_in();

    if std::env::var("UPDATE_SCHEMAS").is_ok_and(|v| v == "1") {
        for sub in SUBDIRS {
            std::fs::create_dir_all(json_dir().join(sub)).expect("create schema dir");
        }
        for extra in actual.keys().filter(|k| !expected.contains_key(*k)) {
            std::fs::remove_file(json_dir().join(extra)).expect("remove stale schema");
        }
        for (name, content) in &expected {
            if actual.get(name) != Some(content) {
                std::fs::write(json_dir().join(name), content).expect("write schema");
            }
        }
        return;
    }

    let mut problems = Vec::new();
    for (name, content) in &expected {
        match actual.get(name) {
            None => problems.push(format!("missing: schemas/json/{name}")),
            Some(c) if c != content => problems.push(format!("differs from the code: schemas/json/{name}")),
            Some(_) => {}
        }
    }
    for name in actual.keys().filter(|k| !expected.contains_key(*k)) {
        problems.push(format!("extra (no such type): schemas/json/{name}"));
    }
    assert!(problems.is_empty(), "json schema files drifted, run: make schemas\n{}", problems.join("\n"));
}

#[test]
fn every_event_type_and_command_has_a_schema_file() {
    let files = ordo_schemas::json_schema::schema_files().expect("schemas generate");
    for info in ordo_schemas::event_types() {
        let name = format!("events/{}.v{}.json", info.event_type, info.schema_version);
        assert!(files.contains_key(&name), "{name}");
    }
    for name in ordo_schemas::CustomerCommand::NAMES
        .iter()
        .chain(ordo_schemas::MerchantCommand::NAMES)
        .chain(ordo_schemas::ProductCommand::NAMES)
        .chain(ordo_schemas::OrderCommand::NAMES)
    {
        assert!(files.contains_key(&format!("commands/{name}.json")), "{name}");
    }
    assert!(files.contains_key("events/ProductListed.v1.json"));
}
