-- Per-stream progress is partitioned by projection, one partition per live projection (ADR 0030).
-- A rebuild loads its progress into a table of its own (`projection_progress_<name>_shadow`,
-- rows already under the live name) and swaps it in by detaching the live partition and
-- attaching the shadow: a change of catalog entries, not of 130,000 rows. The CHECK
-- constraints let Postgres attach a partition (and keep the default partition) without scanning
-- either.
ALTER TABLE projection_progress RENAME TO projection_progress_unpartitioned;
ALTER INDEX projection_progress_pkey RENAME TO projection_progress_unpartitioned_pkey;

CREATE TABLE projection_progress (
    projection TEXT        NOT NULL,
    category   TEXT        NOT NULL,
    stream_id  UUID        NOT NULL,
    version    BIGINT      NOT NULL,
    position   BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, stream_id, category)
) PARTITION BY LIST (projection);

CREATE TABLE projection_progress_orders PARTITION OF projection_progress
    (CONSTRAINT projection_progress_orders_live CHECK (projection = 'orders')) FOR VALUES IN ('orders');
CREATE TABLE projection_progress_catalog PARTITION OF projection_progress
    (CONSTRAINT projection_progress_catalog_live CHECK (projection = 'catalog')) FOR VALUES IN ('catalog');
CREATE TABLE projection_progress_sales PARTITION OF projection_progress
    (CONSTRAINT projection_progress_sales_live CHECK (projection = 'sales')) FOR VALUES IN ('sales');
-- Replays (`<name>#replay`) and anything else.
CREATE TABLE projection_progress_other PARTITION OF projection_progress
    (CONSTRAINT projection_progress_other_not_live CHECK (projection NOT IN ('orders', 'catalog', 'sales'))) DEFAULT;

INSERT INTO projection_progress (projection, category, stream_id, version, position, updated_at)
SELECT projection, category, stream_id, version, position, updated_at FROM projection_progress_unpartitioned;
DROP TABLE projection_progress_unpartitioned;
