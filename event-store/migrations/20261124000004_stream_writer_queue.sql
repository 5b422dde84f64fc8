-- Concurrent writers of one stream used to queue on the head's row lock, and taking a row lock
-- gives a transaction its id before it waits: a writer could then commit after a newer one and
-- be refused (OR003). Writers now queue on a per-stream advisory lock first, which assigns no
-- transaction id, so a single-statement append is never refused for its transaction's age.

CREATE OR REPLACE FUNCTION ordo_append(
    p_category    TEXT[],
    p_stream_id   UUID[],
    p_expected    BIGINT[],
    p_count       INTEGER[],
    p_event_id    UUID[],
    p_type        TEXT[],
    p_schema      INTEGER[],
    p_data        JSONB[],
    p_metadata    JSONB[],
    p_content     BYTEA[],
    p_idem_scope  TEXT,
    p_idem_key    TEXT,
    p_idem_hash   BYTEA,
    p_idem_status SMALLINT,
    p_idem_body   JSONB
) RETURNS TABLE (out_category TEXT, out_stream_id UUID, out_version BIGINT, out_first BIGINT, out_last BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    ts        TIMESTAMPTZ := now();
    ts_text   TEXT := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    n         INTEGER := coalesce(array_length(p_category, 1), 0);
    heads_v   BIGINT[] := '{}';
    heads_h   BYTEA[] := '{}';
    ev_cat    TEXT[] := '{}';
    ev_sid    UUID[] := '{}';
    ev_ver    BIGINT[] := '{}';
    ev_prev   BYTEA[] := '{}';
    ev_hash   BYTEA[] := '{}';
    v         BIGINT;
    h         BYTEA;
    htx       BIGINT;
    my_tx     BIGINT;
    e         INTEGER := 1;
BEGIN
    -- Serialise writers per stream before this transaction takes its id (an advisory lock
    -- assigns none, a row lock does): the id is then taken while no other writer of these
    -- streams is in flight, so it is newer than the last writer's.
    FOR i IN 1..n LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended(p_category[i] || ':' || p_stream_id[i]::text, 0));
    END LOOP;

    FOR i IN 1..n LOOP
        SELECT s.version, s.head_hash, s.head_tx_id INTO v, h, htx FROM streams s
         WHERE s.category = p_category[i] AND s.stream_id = p_stream_id[i] FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO streams (category, stream_id, version, head_hash)
            VALUES (p_category[i], p_stream_id[i], 0, '\x'::bytea) ON CONFLICT DO NOTHING;
            IF FOUND THEN
                v := 0;
                htx := 0;
            ELSE
                -- Created by a writer that committed while we waited: lock what it left.
                SELECT s.version, s.head_hash, s.head_tx_id INTO v, h, htx FROM streams s
                 WHERE s.category = p_category[i] AND s.stream_id = p_stream_id[i] FOR UPDATE;
            END IF;
        END IF;
        -- Whole-log readers order by transaction id. A transaction that took its id before the
        -- stream's last writer (it wrote elsewhere first, then waited for this head) would put a
        -- later version in front of an earlier one: refuse it; a retry gets a newer id.
        my_tx := pg_current_xact_id()::text::bigint;
        IF htx > my_tx THEN
            RAISE EXCEPTION 'stream written by a newer transaction'
                USING ERRCODE = 'OR003', DETAIL = json_build_object('index', i, 'actual', v)::text;
        END IF;
        IF p_expected[i] IS NOT NULL AND p_expected[i] <> v THEN
            RAISE EXCEPTION 'stream version conflict'
                USING ERRCODE = 'OR002', DETAIL = json_build_object('index', i, 'actual', v)::text;
        END IF;
        heads_v[i] := v;
        heads_h[i] := CASE WHEN v = 0 THEN NULL ELSE h END;
    END LOOP;

    FOR i IN 1..n LOOP
        v := heads_v[i];
        h := heads_h[i];
        FOR k IN 1..p_count[i] LOOP
            v := v + 1;
            ev_cat[e] := p_category[i];
            ev_sid[e] := p_stream_id[i];
            ev_ver[e] := v;
            ev_prev[e] := h;
            h := sha256(coalesce(h, '\x'::bytea) || p_content[e] || convert_to('|' || v || '|' || ts_text, 'UTF8'));
            ev_hash[e] := h;
            e := e + 1;
        END LOOP;
        UPDATE streams s SET version = v, head_hash = h, head_tx_id = my_tx, updated_at = ts
         WHERE s.category = p_category[i] AND s.stream_id = p_stream_id[i];
    END LOOP;

    -- After the head locks, so this write does not give the transaction its id early.
    IF p_idem_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (scope, key, request_hash, response_status, response_body)
        VALUES (p_idem_scope, p_idem_key, p_idem_hash, p_idem_status, p_idem_body);
    END IF;

    RETURN QUERY
    WITH ins AS (
        INSERT INTO events (category, stream_id, version, event_id, event_type, schema_version,
                            data, metadata, recorded_at, prev_hash, hash)
        SELECT u.c, u.s, u.v, u.id, u.t, u.sv, u.d, u.m, ts, u.p, u.h
        FROM unnest(ev_cat, ev_sid, ev_ver, p_event_id, p_type, p_schema, p_data, p_metadata, ev_prev, ev_hash)
             AS u(c, s, v, id, t, sv, d, m, p, h)
        RETURNING events.category AS c, events.stream_id AS s, events.version AS v, events.position AS pos
    )
    SELECT ins.c, ins.s, max(ins.v), min(ins.pos), max(ins.pos) FROM ins GROUP BY ins.c, ins.s;
END
$$;
