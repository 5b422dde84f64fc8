-- Read models of the query API and the bookkeeping of the projectors that build them.
--
-- Every read-model row carries the version of the stream it reflects. Rebuilds create
-- `<table>_shadow` copies with `LIKE ... INCLUDING ALL` and swap them in by renaming, so the
-- query API always reads the tables under these names.

-- Projection `orders`: order detail. The per-customer and per-merchant lists are indexes over
-- this one table (newest first, optionally by status).
CREATE TABLE rm_orders (
    order_id         UUID        PRIMARY KEY,
    customer_id      UUID        NOT NULL,
    merchant_id      UUID        NOT NULL,
    status           TEXT        NOT NULL,
    lines            JSONB       NOT NULL,
    total_minor      BIGINT      NOT NULL,
    currency         TEXT        NOT NULL,
    shipping_address JSONB       NOT NULL,
    rejection        JSONB,
    payment          JSONB,
    shipment         JSONB,
    cancellation     JSONB,
    delivered_at     TIMESTAMPTZ,
    placed_at        TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    version          BIGINT      NOT NULL
);
CREATE INDEX rm_orders_by_customer ON rm_orders (customer_id, placed_at DESC, order_id DESC);
CREATE INDEX rm_orders_by_customer_status ON rm_orders (customer_id, status, placed_at DESC, order_id DESC);
CREATE INDEX rm_orders_by_merchant ON rm_orders (merchant_id, placed_at DESC, order_id DESC);
CREATE INDEX rm_orders_by_merchant_status ON rm_orders (merchant_id, status, placed_at DESC, order_id DESC);

-- Projection `catalog`: products with stock figures.
CREATE TABLE rm_products (
    product_id  UUID        PRIMARY KEY,
    merchant_id UUID        NOT NULL,
    sku         TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    description TEXT,
    price_minor BIGINT      NOT NULL,
    currency    TEXT        NOT NULL,
    on_hand     BIGINT      NOT NULL,
    reserved    BIGINT      NOT NULL,
    status      TEXT        NOT NULL,
    listed_at   TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL,
    version     BIGINT      NOT NULL
);
CREATE INDEX rm_products_by_name ON rm_products (name, product_id);
CREATE INDEX rm_products_by_merchant ON rm_products (merchant_id, name, product_id);

-- Projection `sales`: which merchant each order belongs to, and paid orders per merchant per
-- UTC day and currency.
CREATE TABLE rm_sales_orders (
    order_id    UUID   PRIMARY KEY,
    merchant_id UUID   NOT NULL,
    paid        BOOL   NOT NULL DEFAULT false,
    version     BIGINT NOT NULL
);
CREATE TABLE rm_merchant_daily_sales (
    merchant_id        UUID        NOT NULL,
    day                DATE        NOT NULL,
    currency           TEXT        NOT NULL,
    orders             BIGINT      NOT NULL,
    revenue_minor      BIGINT      NOT NULL,
    -- The last order event counted into this row: its stream, version and log position.
    last_order_id      UUID        NOT NULL,
    last_order_version BIGINT      NOT NULL,
    last_position      BIGINT      NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (merchant_id, day, currency)
);

-- Per projection and stream, the last version applied. A projection named `<name>#rebuild`
-- is the shadow of a rebuild in progress.
CREATE TABLE projection_progress (
    projection TEXT        NOT NULL,
    category   TEXT        NOT NULL,
    stream_id  UUID        NOT NULL,
    version    BIGINT      NOT NULL,
    position   BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, stream_id, category)
);

-- Per projection: totals and the newest event applied, for lag and status.
CREATE TABLE projection_state (
    projection       TEXT        PRIMARY KEY,
    events_applied   BIGINT      NOT NULL DEFAULT 0,
    last_position    BIGINT      NOT NULL DEFAULT 0,
    last_recorded_at TIMESTAMPTZ,
    last_applied_at  TIMESTAMPTZ,
    rebuilding_since TIMESTAMPTZ,
    rebuilt_at       TIMESTAMPTZ
);

-- Kafka offsets (the next offset to read) per consumer group, topic and partition, written in
-- the same transaction as the read-model writes they imply.
CREATE TABLE projector_offsets (
    group_id    TEXT        NOT NULL,
    topic       TEXT        NOT NULL,
    partition   INTEGER     NOT NULL,
    next_offset BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- Events a projection could not apply (`poison`) and events it held back because their stream
-- was parked (`parked`).
CREATE TABLE dead_letters (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    projection   TEXT        NOT NULL,
    kind         TEXT        NOT NULL CHECK (kind IN ('poison', 'parked')),
    category     TEXT,
    stream_id    UUID,
    version      BIGINT,
    position     BIGINT,
    topic        TEXT,
    partition    INTEGER,
    kafka_offset BIGINT,
    error        TEXT        NOT NULL,
    payload      BYTEA       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at  TIMESTAMPTZ
);
CREATE INDEX dead_letters_open ON dead_letters (projection, stream_id) WHERE resolved_at IS NULL;

-- Streams a projection stopped applying after a poison event, until `retry_parked` succeeds.
CREATE TABLE parked_streams (
    projection     TEXT        NOT NULL,
    category       TEXT        NOT NULL,
    stream_id      UUID        NOT NULL,
    reason         TEXT        NOT NULL,
    dead_letter_id BIGINT,
    parked_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, stream_id, category)
);
