-- The event log: one append-only table, the stream heads that guard expected versions,
-- idempotency records and named read checkpoints.

CREATE TABLE streams (
    category   TEXT        NOT NULL,
    stream_id  UUID        NOT NULL,
    version    BIGINT      NOT NULL CHECK (version >= 0),
    head_hash  BYTEA       NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (category, stream_id)
);

CREATE TABLE events (
    position       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction's id (xid8 as bigint): readers of the whole log only read rows
    -- whose transaction is older than every transaction still running.
    tx_id          BIGINT      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    category       TEXT        NOT NULL CHECK (category IN ('customer', 'merchant', 'product', 'order')),
    stream_id      UUID        NOT NULL,
    version        BIGINT      NOT NULL CHECK (version > 0),
    event_id       UUID        NOT NULL,
    event_type     TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL CHECK (schema_version > 0),
    data           JSONB       NOT NULL,
    metadata       JSONB       NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL,
    prev_hash      BYTEA,
    hash           BYTEA       NOT NULL,
    CONSTRAINT events_stream_version UNIQUE (category, stream_id, version)
);

CREATE INDEX events_commit_order ON events (tx_id, position);
CREATE INDEX events_recorded_at ON events (recorded_at, position);
CREATE INDEX events_correlation ON events (((metadata ->> 'correlation_id')::uuid), position);
CREATE INDEX events_actor ON events (((metadata -> 'actor' ->> 'id')::uuid), position);

CREATE FUNCTION ordo_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'OR001';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION ordo_events_append_only();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION ordo_events_append_only();

CREATE TABLE idempotency_keys (
    scope           TEXT        NOT NULL,
    key             TEXT        NOT NULL,
    request_hash    BYTEA       NOT NULL,
    response_status SMALLINT    NOT NULL,
    response_body   JSONB       NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

CREATE TABLE checkpoints (
    name       TEXT        PRIMARY KEY,
    tx_id      BIGINT      NOT NULL,
    position   BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
