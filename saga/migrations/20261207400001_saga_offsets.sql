-- The order saga's progress per partition (ADR 0021): the next offset its commit watermark
-- reached and the broker incarnation of the message it follows. The group's committed offset is
-- only the broker's copy; after the broker lost its data it can be a late commit of the old log,
-- so a saga process checks the partitions it is given against this record. Written beside every
-- commit: a newer incarnation replaces the row, within one incarnation the higher offset wins.
CREATE TABLE saga_offsets (
    group_id    TEXT        NOT NULL,
    topic       TEXT        NOT NULL,
    partition   INTEGER     NOT NULL,
    next_offset BIGINT      NOT NULL,
    incarnation BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
