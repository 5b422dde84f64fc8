-- Stored offsets belong to one broker incarnation (ADR 0021): a message of a newer incarnation
-- makes the stored offset of its partition meaningless, so it is replaced rather than maxed.
ALTER TABLE projector_offsets ADD COLUMN incarnation BIGINT NOT NULL DEFAULT 0;
