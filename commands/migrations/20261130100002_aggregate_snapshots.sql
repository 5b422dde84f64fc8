-- The latest snapshot of each long stream: the folded aggregate state at a version, with the
-- hash of the event at that version (a snapshot the log disagrees with is ignored).
CREATE TABLE aggregate_snapshots (
    category  TEXT        NOT NULL,
    stream_id UUID        NOT NULL,
    version   BIGINT      NOT NULL,
    head_hash BYTEA       NOT NULL,
    format    INTEGER     NOT NULL,
    state     JSONB       NOT NULL,
    taken_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (category, stream_id)
);
