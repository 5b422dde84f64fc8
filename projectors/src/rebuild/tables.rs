//! The shadow tables of the one-pass rebuild: created without indexes for the bulk load (logged
//! for a rebuild, UNLOGGED for a replay), then indexed like the live tables (under temporary
//! names that the swap gives back their live names) and analysed.

use sqlx::{PgConnection, PgPool};

use crate::model::{Target, PROGRESS};
use crate::ProjectorError;

/// Appended to an index name while it belongs to a shadow table.
const PENDING: &str = "_rebuilt";

/// Fresh, empty copies of `target`'s tables without indexes: logged when `durable` (a rebuild's,
/// which become the live tables: loading them logged costs less than rewriting them with
/// `SET LOGGED` afterwards), else UNLOGGED (a replay's).
pub(crate) async fn create_bare(conn: &mut PgConnection, target: &Target, durable: bool) -> Result<(), ProjectorError> {
    let kind = if durable { "TABLE" } else { "UNLOGGED TABLE" };
    for base in target.projection.base_tables() {
        let table = target.table(base);
        sqlx::query(&format!("DROP TABLE IF EXISTS {table}")).execute(&mut *conn).await?;
        sqlx::query(&format!("CREATE {kind} {table} (LIKE {base} INCLUDING ALL EXCLUDING INDEXES)"))
            .execute(&mut *conn)
            .await?;
    }
    if let Some(table) = own_progress(target) {
        sqlx::query(&format!("DROP TABLE IF EXISTS {table}")).execute(&mut *conn).await?;
        sqlx::query(&format!("CREATE {kind} {table} (LIKE {PROGRESS} INCLUDING DEFAULTS)")).execute(&mut *conn).await?;
    }
    Ok(())
}

/// The progress table of `target` when it is one of its own (a rebuild's shadow), not the
/// partitioned table.
fn own_progress(target: &Target) -> Option<&str> {
    Some(target.progress_table()).filter(|t| *t != PROGRESS)
}

/// One index of a live table: its name, definition and whether it is the primary key.
struct Index {
    name: String,
    definition: String,
    primary: bool,
}

async fn indexes_of(pool: &PgPool, table: &str) -> Result<Vec<Index>, ProjectorError> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_indexdef(c.oid), x.indisprimary FROM pg_index x \
         JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = $1::text::regclass ORDER BY x.indisprimary DESC, 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(name, definition, primary)| Index { name, definition, primary }).collect())
}

/// The definition of `index` moved onto `table` under its pending name.
fn moved(index: &Index, table: &str) -> Result<String, ProjectorError> {
    let def = &index.definition;
    let bad = || ProjectorError::Other(format!("unexpected index definition: {def}"));
    let on = def.find(" ON ").ok_or_else(bad)?;
    let using = def[on..].find(" USING ").map(|i| i + on).ok_or_else(bad)?;
    let head = def[..on].strip_suffix(&format!(" {}", index.name)).ok_or_else(bad)?;
    Ok(format!("{head} {}{PENDING} ON {table}{}", index.name, &def[using..]))
}

/// Makes the loaded tables durable (a no-op for a rebuild's, created logged) and gives them the
/// live tables' indexes (the primary key only with `secondary` false), then analyses them.
pub(crate) async fn finish(pool: &PgPool, target: &Target, secondary: bool) -> Result<(), ProjectorError> {
    for base in target.projection.base_tables() {
        let table = target.table(base);
        if target.live || secondary {
            sqlx::query(&format!("ALTER TABLE {table} SET LOGGED")).execute(pool).await?;
        }
        for index in indexes_of(pool, base).await? {
            if !index.primary && !secondary {
                continue;
            }
            sqlx::query(&moved(&index, &table)?).execute(pool).await?;
            if index.primary {
                let name = format!("{}{PENDING}", index.name);
                sqlx::query(&format!("ALTER TABLE {table} ADD CONSTRAINT {name} PRIMARY KEY USING INDEX {name}"))
                    .execute(pool)
                    .await?;
            }
        }
        sqlx::query(&format!("ANALYZE {table}")).execute(pool).await?;
    }
    if let Some(table) = own_progress(target) {
        // the live partition's key and check, so attaching it needs no scan of either table
        let partition = target.projection.progress_partition();
        for sql in [
            format!("ALTER TABLE {table} SET LOGGED"),
            format!(
                "ALTER TABLE {table} ADD CONSTRAINT {partition}_pkey{PENDING} PRIMARY KEY (projection, stream_id, category)"
            ),
            format!(
                "ALTER TABLE {table} ADD CONSTRAINT {partition}_live CHECK (projection = '{}')",
                target.projection.name()
            ),
            format!("ANALYZE {table}"),
        ] {
            sqlx::query(&sql).execute(pool).await?;
        }
    }
    Ok(())
}

/// Inside the swap: the live progress partition of `target`'s projection is detached and
/// dropped, the shadow's progress table attached in its place under the partition's name.
pub(super) async fn swap_progress(conn: &mut PgConnection, target: &Target) -> Result<(), ProjectorError> {
    let Some(table) = own_progress(target) else { return Ok(()) };
    let partition = target.projection.progress_partition();
    for sql in [
        format!("ALTER TABLE {PROGRESS} DETACH PARTITION {partition}"),
        format!("DROP TABLE {partition}"),
        format!("ALTER TABLE {table} RENAME TO {partition}"),
        format!("ALTER TABLE {PROGRESS} ATTACH PARTITION {partition} FOR VALUES IN ('{}')", target.projection.name()),
        format!("ALTER INDEX {partition}_pkey{PENDING} RENAME TO {partition}_pkey"),
    ] {
        sqlx::query(&sql).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Inside the swap, after the live table was dropped and the shadow renamed: the indexes take
/// the live names back.
pub(super) async fn rename_indexes(conn: &mut PgConnection, base: &str) -> Result<(), ProjectorError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid \
         WHERE x.indrelid = $1::text::regclass AND c.relname LIKE '%' || $2",
    )
    .bind(base)
    .bind(PENDING)
    .fetch_all(&mut *conn)
    .await?;
    for name in names {
        let live = &name[..name.len() - PENDING.len()];
        sqlx::query(&format!("ALTER INDEX {name} RENAME TO {live}")).execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_definition_moves_to_the_shadow_table_under_its_pending_name() {
        let index = Index {
            name: "rm_orders_by_customer".into(),
            definition:
                "CREATE INDEX rm_orders_by_customer ON public.rm_orders USING btree (customer_id, placed_at DESC)"
                    .into(),
            primary: false,
        };
        assert_eq!(
            moved(&index, "rm_orders_shadow").ok().as_deref(),
            Some("CREATE INDEX rm_orders_by_customer_rebuilt ON rm_orders_shadow USING btree (customer_id, placed_at DESC)")
        );
    }
}
