//! Bulk loading of the folded rows: COPY text-format buffers per table, handed in chunks of
//! about [`CHUNK`] bytes to a writer task on a connection of its own, so reading the log and
//! loading the tables overlap and at most [`QUEUED`] chunks are held in memory.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::fold::{OrderRow, Payment, ProductRow, SalesRow, StreamFold};
use crate::apply::sales::Daily;
use crate::model::{Projection, Target};
use crate::ProjectorError;

/// Bytes of COPY data per statement.
const CHUNK: usize = 1 << 20;
/// Chunks waiting for the writer at most.
const QUEUED: usize = 4;

/// One COPY statement's data.
struct Chunk {
    sql: String,
    data: Vec<u8>,
}

/// A COPY text-format buffer for one table.
pub(super) struct CopyBuf {
    sql: String,
    data: Vec<u8>,
    first: bool,
}

impl CopyBuf {
    fn new(table: &str, columns: &str) -> Self {
        Self {
            sql: format!("COPY {table} ({columns}) FROM STDIN"),
            data: Vec::with_capacity(CHUNK + 4096),
            first: true,
        }
    }

    fn sep(&mut self) {
        if !self.first {
            self.data.push(b'\t');
        }
        self.first = false;
    }

    fn text(&mut self, s: &str) -> &mut Self {
        self.sep();
        for b in s.bytes() {
            match b {
                b'\\' => self.data.extend_from_slice(b"\\\\"),
                b'\t' => self.data.extend_from_slice(b"\\t"),
                b'\n' => self.data.extend_from_slice(b"\\n"),
                b'\r' => self.data.extend_from_slice(b"\\r"),
                _ => self.data.push(b),
            }
        }
        self
    }

    fn null(&mut self) -> &mut Self {
        self.sep();
        self.data.extend_from_slice(b"\\N");
        self
    }

    fn opt_text(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.text(s),
            None => self.null(),
        }
    }

    fn raw(&mut self, s: impl std::fmt::Display) -> &mut Self {
        use std::io::Write;
        self.sep();
        let _ = write!(self.data, "{s}");
        self
    }

    fn uuid(&mut self, id: Uuid) -> &mut Self {
        self.raw(id.hyphenated())
    }

    fn time(&mut self, t: DateTime<Utc>) -> &mut Self {
        self.raw(t.format("%Y-%m-%d %H:%M:%S%.6f+00"))
    }

    fn opt_time(&mut self, t: Option<DateTime<Utc>>) -> &mut Self {
        match t {
            Some(t) => self.time(t),
            None => self.null(),
        }
    }

    fn date(&mut self, d: NaiveDate) -> &mut Self {
        self.raw(d.format("%Y-%m-%d"))
    }

    fn end(&mut self) {
        self.data.push(b'\n');
        self.first = true;
    }

    fn take(&mut self) -> Chunk {
        Chunk { sql: self.sql.clone(), data: std::mem::replace(&mut self.data, Vec::with_capacity(CHUNK + 4096)) }
    }
}

/// What the pass applied to one projection, for its `projection_state` row.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals {
    pub events: u64,
    pub last_position: i64,
    pub last_recorded_at: Option<DateTime<Utc>>,
}

impl Totals {
    fn count(&mut self, fold: &StreamFold) {
        self.events += fold.events;
        self.last_position = self.last_position.max(fold.position);
        self.last_recorded_at = Some(self.last_recorded_at.map_or(fold.recorded_at, |t| t.max(fold.recorded_at)));
    }
}

/// Every table the pass loads, and the writer that loads them.
pub(super) struct Loader {
    orders: Option<(Target, CopyBuf)>,
    products: Option<(Target, CopyBuf)>,
    sales: Option<(Target, CopyBuf)>,
    /// Per projection, its progress rows (to the target's progress table).
    progress: BTreeMap<Projection, CopyBuf>,
    daily: BTreeMap<(Uuid, NaiveDate, String), Daily>,
    pub totals: BTreeMap<Projection, Totals>,
    tx: mpsc::Sender<Chunk>,
    writer: JoinHandle<Result<(), ProjectorError>>,
}

impl Loader {
    /// Starts the writer task on its own connection; `targets` are the tables to fill.
    pub async fn start(pool: &PgPool, targets: &[Target]) -> Result<Self, ProjectorError> {
        let mut conn = pool.acquire().await?;
        let (tx, mut rx) = mpsc::channel::<Chunk>(QUEUED);
        let writer = tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                let mut copy = conn.copy_in_raw(&chunk.sql).await?;
                copy.send(chunk.data).await?;
                copy.finish().await?;
            }
            Ok(())
        });
        let find = |p: Projection| targets.iter().find(|t| t.projection == p).cloned();
        let orders = find(Projection::Orders).map(|t| {
            let table = t.table("rm_orders");
            (
                t,
                CopyBuf::new(
                    &table,
                    "order_id, customer_id, merchant_id, status, lines, total_minor, currency, shipping_address, \
                     rejection, payment, shipment, cancellation, delivered_at, placed_at, updated_at, version",
                ),
            )
        });
        let products = find(Projection::Catalog).map(|t| {
            let table = t.table("rm_products");
            (
                t,
                CopyBuf::new(
                    &table,
                    "product_id, merchant_id, sku, name, description, price_minor, currency, on_hand, reserved, \
                     status, listed_at, updated_at, version",
                ),
            )
        });
        let sales = find(Projection::Sales).map(|t| {
            let table = t.table("rm_sales_orders");
            (t, CopyBuf::new(&table, "order_id, merchant_id, paid, version"))
        });
        Ok(Self {
            orders,
            products,
            sales,
            progress: targets
                .iter()
                .map(|t| {
                    let columns = "projection, category, stream_id, version, position";
                    (t.projection, CopyBuf::new(t.progress_table(), columns))
                })
                .collect(),
            daily: BTreeMap::new(),
            totals: BTreeMap::new(),
            tx,
            writer,
        })
    }

    async fn send(&mut self, chunk: Chunk) -> Result<(), ProjectorError> {
        if self.tx.send(chunk).await.is_err() {
            // the writer stopped on an error: take it
            return Err(self.stop().await.err().unwrap_or_else(|| ProjectorError::Other("the writer stopped".into())));
        }
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), ProjectorError> {
        let (tx, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, tx));
        match (&mut self.writer).await {
            Ok(result) => result,
            Err(e) => Err(ProjectorError::Other(format!("the table writer failed: {e}"))),
        }
    }

    /// Writes the rows of a completely folded stream.
    pub async fn stream(&mut self, fold: StreamFold) -> Result<(), ProjectorError> {
        let category = fold.stream.category.as_str();
        if let (Some(row), Some((t, buf))) = (&fold.order, self.orders.as_mut()) {
            order_row(buf, row);
            progress_row(self.progress.get_mut(&Projection::Orders), t.progress_key(), category, &fold);
            self.totals.entry(Projection::Orders).or_default().count(&fold);
        }
        if let (Some(row), Some((t, buf))) = (&fold.sales, self.sales.as_mut()) {
            buf.uuid(row.order_id).uuid(row.merchant_id).raw(if row.paid { "t" } else { "f" }).raw(row.version).end();
            progress_row(self.progress.get_mut(&Projection::Sales), t.progress_key(), category, &fold);
            self.totals.entry(Projection::Sales).or_default().count(&fold);
            for p in &row.payments {
                book(&mut self.daily, row, p)?;
            }
        }
        if let (Some(row), Some((t, buf))) = (&fold.product, self.products.as_mut()) {
            product_row(buf, row);
            progress_row(self.progress.get_mut(&Projection::Catalog), t.progress_key(), category, &fold);
            self.totals.entry(Projection::Catalog).or_default().count(&fold);
        }
        self.flush(CHUNK).await
    }

    /// Hands every buffer of at least `min` bytes to the writer.
    async fn flush(&mut self, min: usize) -> Result<(), ProjectorError> {
        let mut chunks = Vec::new();
        for buf in [
            self.orders.as_mut().map(|o| &mut o.1),
            self.products.as_mut().map(|o| &mut o.1),
            self.sales.as_mut().map(|o| &mut o.1),
        ]
        .into_iter()
        .flatten()
        .chain(self.progress.values_mut())
        {
            if !buf.data.is_empty() && buf.data.len() >= min {
                chunks.push(buf.take());
            }
        }
        for chunk in chunks {
            self.send(chunk).await?;
        }
        Ok(())
    }

    /// Writes the daily sales and whatever is buffered, and waits for the writer.
    pub async fn finish(mut self) -> Result<BTreeMap<Projection, Totals>, ProjectorError> {
        if let Some((t, _)) = &self.sales {
            let mut buf = CopyBuf::new(
                &t.table("rm_merchant_daily_sales"),
                "merchant_id, day, currency, orders, revenue_minor, last_order_id, last_order_version, \
                 last_position, updated_at",
            );
            for ((merchant, day, currency), d) in std::mem::take(&mut self.daily) {
                buf.uuid(merchant).date(day).text(&currency).raw(d.orders).raw(d.revenue_minor);
                buf.uuid(d.last.0).raw(d.last.1).raw(d.last.2).time(d.updated_at).end();
                if buf.data.len() >= CHUNK {
                    let chunk = buf.take();
                    self.send(chunk).await?;
                }
            }
            let chunk = buf.take();
            if !chunk.data.is_empty() {
                self.send(chunk).await?;
            }
        }
        self.flush(1).await?;
        self.stop().await?;
        Ok(self.totals)
    }
}

fn book(
    daily: &mut BTreeMap<(Uuid, NaiveDate, String), Daily>,
    row: &SalesRow,
    p: &Payment,
) -> Result<(), ProjectorError> {
    let d = daily.entry((row.merchant_id, p.day, p.currency.clone())).or_insert(Daily {
        orders: 0,
        revenue_minor: 0,
        last: (row.order_id, p.version, p.position),
        updated_at: p.recorded_at,
    });
    d.orders += 1;
    d.revenue_minor = d.revenue_minor.checked_add(p.amount_minor).ok_or_else(|| {
        ProjectorError::Other(format!("revenue of merchant {} on {} out of range", row.merchant_id, p.day))
    })?;
    if p.position >= d.last.2 {
        d.last = (row.order_id, p.version, p.position);
    }
    d.updated_at = d.updated_at.max(p.recorded_at);
    Ok(())
}

fn progress_row(buf: Option<&mut CopyBuf>, key: &str, category: &str, fold: &StreamFold) {
    let Some(buf) = buf else { return };
    buf.text(key).text(category).uuid(fold.stream.id).raw(fold.version).raw(fold.position).end();
}

fn order_row(buf: &mut CopyBuf, r: &OrderRow) {
    buf.uuid(r.order_id).uuid(r.customer_id).uuid(r.merchant_id).text(r.status).text(&r.lines);
    buf.raw(r.total_minor).text(&r.currency).text(&r.shipping_address);
    buf.opt_text(r.rejection.as_deref()).opt_text(r.payment.as_deref());
    buf.opt_text(r.shipment.as_deref()).opt_text(r.cancellation.as_deref());
    buf.opt_time(r.delivered_at).time(r.placed_at).time(r.updated_at).raw(r.version).end();
}

fn product_row(buf: &mut CopyBuf, r: &ProductRow) {
    buf.uuid(r.product_id).uuid(r.merchant_id).text(&r.sku).text(&r.name).opt_text(r.description.as_deref());
    buf.raw(r.price_minor).text(&r.currency).raw(r.on_hand).raw(r.reserved).text(r.status);
    buf.time(r.listed_at).time(r.updated_at).raw(r.version).end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_the_format_reserves_and_writes_nulls() {
        let mut buf = CopyBuf::new("t", "a, b, c");
        buf.text("a\tb\\c\nd\re").null().uuid(Uuid::nil()).end();
        assert_eq!(
            String::from_utf8_lossy(&buf.data),
            "a\\tb\\\\c\\nd\\re\t\\N\t00000000-0000-0000-0000-000000000000\n"
        );
    }
}
