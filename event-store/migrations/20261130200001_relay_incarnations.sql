-- The broker is a copy of the log, and it can lose everything (a developer's broker restarted on
-- empty storage, a cluster rebuilt). The relay numbers each broker incarnation it publishes to,
-- remembers how far each partition got, and republishes the log when a partition is found
-- shorter than it left it or a topic had to be created again (ADR 0021).

CREATE TABLE relay_incarnations (
    name        TEXT        PRIMARY KEY,
    incarnation BIGINT      NOT NULL CHECK (incarnation > 0),
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    reason      TEXT        NOT NULL
);

-- Per partition of the current incarnation: the next offset the relay's messages reached, and the
-- lowest high watermark a broker that still holds them may report (one past the first offset of
-- the relay's latest batch there: some brokers report the start of their last record batch).
CREATE TABLE relay_partitions (
    name            TEXT    NOT NULL,
    topic           TEXT    NOT NULL,
    partition       INTEGER NOT NULL,
    next_offset     BIGINT  NOT NULL,
    watermark_floor BIGINT  NOT NULL,
    PRIMARY KEY (name, topic, partition)
);

-- Stored events the relay published with substitute metadata because theirs does not decode.
CREATE TABLE relay_dead_letters (
    position    BIGINT      PRIMARY KEY,
    category    TEXT        NOT NULL,
    stream_id   UUID        NOT NULL,
    version     BIGINT      NOT NULL,
    error       TEXT        NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The key the relay signs messages with and the projectors verify them with, when
-- ORDO_EVENT_SIGNING_KEY does not give one (ADR 0022). One row, created by whichever process
-- needs it first.
CREATE TABLE event_signing_key (
    id         SMALLINT    PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    key        BYTEA       NOT NULL CHECK (octet_length(key) >= 32),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
