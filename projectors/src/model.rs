//! The projections this crate maintains, the tables each one owns and the advisory lock that
//! serialises live batches against the swap of a rebuild.

use ordo_schemas::StreamCategory;

/// One read model (or a group of read-model tables fed by the same events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    /// Order detail (`rm_orders`); the per-customer and per-merchant lists are its indexes.
    Orders,
    /// The product catalog with stock figures (`rm_products`).
    Catalog,
    /// Paid orders per merchant per UTC day (`rm_sales_orders`, `rm_merchant_daily_sales`).
    Sales,
}

impl Projection {
    /// Every projection, in a fixed order.
    pub const ALL: [Projection; 3] = [Projection::Orders, Projection::Catalog, Projection::Sales];

    /// The stored name (`orders`, `catalog`, `sales`).
    pub fn name(self) -> &'static str {
        match self {
            Projection::Orders => "orders",
            Projection::Catalog => "catalog",
            Projection::Sales => "sales",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The stream categories whose events change this projection.
    pub fn categories(self) -> &'static [StreamCategory] {
        match self {
            Projection::Orders | Projection::Sales => &[StreamCategory::Order],
            Projection::Catalog => &[StreamCategory::Product],
        }
    }

    pub fn reads(self, category: StreamCategory) -> bool {
        self.categories().contains(&category)
    }

    /// The key of the advisory lock live batches take shared and a rebuild swap takes exclusive.
    pub fn lock_key(self) -> i64 {
        // "ordo" in ASCII followed by the projection's index: stable and unlikely to collide
        0x6f72_646f_0000_0100
            + match self {
                Projection::Orders => 1,
                Projection::Catalog => 2,
                Projection::Sales => 3,
            }
    }

    /// The live tables of this projection (what the query API reads).
    pub fn base_tables(self) -> &'static [&'static str] {
        match self {
            Projection::Orders => &["rm_orders"],
            Projection::Catalog => &["rm_products"],
            Projection::Sales => &["rm_sales_orders", "rm_merchant_daily_sales"],
        }
    }

    /// The partition of `projection_progress` holding this projection's live progress
    /// (`projection_progress_orders`); a rebuild attaches its own in its place (ADR 0030).
    pub fn progress_partition(self) -> &'static str {
        match self {
            Projection::Orders => "projection_progress_orders",
            Projection::Catalog => "projection_progress_catalog",
            Projection::Sales => "projection_progress_sales",
        }
    }

    /// The progress namespace of a rebuild's shadow (`orders#rebuild`).
    pub fn shadow_key(self) -> String {
        format!("{}#rebuild", self.name())
    }
}

impl std::fmt::Display for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The partitioned table of per-stream progress (ADR 0005, ADR 0030).
pub const PROGRESS: &str = "projection_progress";

/// Where one projection writes: its progress namespace and its table names.
///
/// Table names come only from [`Projection::base_tables`] plus a fixed suffix, never from
/// input, so formatting them into SQL is safe; every value is still a bind parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub projection: Projection,
    /// The `projection` column value of progress, parked and dead-letter rows.
    pub key: String,
    /// `""` for the live tables, `"_shadow"` for a rebuild's, `"_replay"` for a replay's.
    suffix: &'static str,
    /// The table of the per-stream progress and the `projection` value of its rows.
    progress: (String, String),
    /// Live targets take the projection's advisory lock shared in every batch.
    pub live: bool,
}

impl Target {
    /// The tables the query API reads.
    pub fn live(projection: Projection) -> Self {
        let progress = (PROGRESS.to_owned(), projection.name().to_owned());
        Self { projection, key: projection.name().to_owned(), suffix: "", progress, live: true }
    }

    /// The shadow tables of a rebuild.
    pub fn shadow(projection: Projection) -> Self {
        // rows already under the live name, in a table swapped in as the live partition
        let progress = (format!("{}_shadow", projection.progress_partition()), projection.name().to_owned());
        Self { projection, key: projection.shadow_key(), suffix: "_shadow", progress, live: false }
    }

    /// The tables of a drift-detection replay (`<table>_replay`, progress key `<name>#replay`).
    pub fn replay(projection: Projection) -> Self {
        let key = format!("{}#replay", projection.name());
        Self { projection, progress: (PROGRESS.to_owned(), key.clone()), key, suffix: "_replay", live: false }
    }

    /// The name of one of the projection's tables in this target, e.g. `rm_orders_shadow`.
    pub fn table(&self, base: &str) -> String {
        format!("{base}{}", self.suffix)
    }

    /// The table this target's per-stream progress is written to: `projection_progress` (the
    /// partitioned table) for live and replay targets, a rebuild's own table for its shadow.
    pub fn progress_table(&self) -> &str {
        &self.progress.0
    }

    /// The `projection` column value of this target's progress rows: the live name in a
    /// rebuild's shadow too, so its table can become the live partition unchanged.
    pub fn progress_key(&self) -> &str {
        &self.progress.1
    }

    /// Every live target.
    pub fn all_live() -> Vec<Target> {
        Projection::ALL.into_iter().map(Target::live).collect()
    }
}
