-- Keys of data subjects (customers) for their personal fields in the log (ADR 0027). Never in the
-- log itself: destroying a key erases every field sealed with it while every hash chain still
-- verifies. A key is wrapped (AES-256-GCM) by a key-encryption key (KEK) from the environment;
-- `kek_id` names that KEK so a rotation can rewrap. An erased subject keeps its row with
-- `wrapped` NULL, so no new key is ever made for it.
CREATE TABLE personal_data_keys (
    subject_id UUID        PRIMARY KEY,
    kid        UUID        NOT NULL UNIQUE,
    kek_id     TEXT,
    wrapped    BYTEA,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    erased_at  TIMESTAMPTZ,
    CHECK ((wrapped IS NULL) = (erased_at IS NOT NULL)),
    CHECK ((wrapped IS NULL) = (kek_id IS NULL))
);

-- Development only: the KEK generated when ORDO_PERSONAL_DATA_KEK is unset. Production sets the
-- variable, and then this table stays empty.
CREATE TABLE personal_data_dev_kek (
    id  INT   PRIMARY KEY CHECK (id = 1),
    kek BYTEA NOT NULL
);
