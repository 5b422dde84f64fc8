//! Rebuilds the crate when a migration is added or removed: `sqlx::migrate!` embeds the files it
//! finds, and without this a new file in `migrations/` would not reach the binary until the
//! crate's own sources changed.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
