//! Rebuilds the crate when a migration is added or removed: `sqlx::migrate!` embeds the files it
//! finds, and without this a new file in `migrations/` would not reach the binary until the
//! crate's own sources changed. The commands, projectors and saga crates use this script too,
//! each for its own `migrations/` (the path is relative to the crate being built).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
