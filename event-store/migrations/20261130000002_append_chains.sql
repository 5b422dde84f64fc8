-- Chains: a request may depend on an earlier request of the same batch (`r_after`, its 1-based
-- index, 0 for none). A command lane decides several commands of a stream in turn and appends
-- them as a chain, each expecting the version the one before creates; if a link is refused, every
-- later link was decided on a state that did not happen and is refused too (outcome 1), even when
-- its expected version happens to match what another writer left.

DROP FUNCTION ordo_append_batch(TEXT[], TEXT[], BYTEA[], SMALLINT[], JSONB[], TEXT[], TEXT[], INTEGER[], INTEGER[],
                                BIGINT[], BYTEA[], INTEGER[], TEXT[], UUID[], UUID[], TEXT[], INTEGER[], JSONB[],
                                JSONB[], BYTEA[]);

CREATE FUNCTION ordo_append_batch(
    r_idem_scope  TEXT[],
    r_idem_key    TEXT[],
    r_idem_hash   BYTEA[],
    r_idem_status SMALLINT[],
    r_idem_body   JSONB[],
    r_claim_kind  TEXT[],
    r_claim_value TEXT[],
    r_streams     INTEGER[],
    r_after       INTEGER[],
    s_slot        INTEGER[],
    s_expected    BIGINT[],
    s_head_hash   BYTEA[],
    s_count       INTEGER[],
    d_category    TEXT[],
    d_stream_id   UUID[],
    e_event_id    UUID[],
    e_type        TEXT[],
    e_schema      INTEGER[],
    e_data        JSONB[],
    e_metadata    JSONB[],
    e_content     BYTEA[]
) RETURNS TABLE (
    out_request       INTEGER,
    out_outcome       SMALLINT,
    out_append        INTEGER,
    out_version       BIGINT,
    out_first         BIGINT,
    out_last          BIGINT,
    out_head_hash     BYTEA,
    out_recorded_at   TIMESTAMPTZ,
    out_stored_hash   BYTEA,
    out_stored_status SMALLINT,
    out_stored_body   JSONB
)
LANGUAGE plpgsql AS $$
DECLARE
    nr        INTEGER := coalesce(array_length(r_streams, 1), 0);
    nd        INTEGER := coalesce(array_length(d_category, 1), 0);
    -- Local copies are kept in expanded form, so subscripts cost O(1).
    content   BYTEA[] := e_content;
    slots     INTEGER[] := s_slot;
    expected  BIGINT[] := s_expected;
    exp_hash  BYTEA[] := s_head_hash;
    counts    INTEGER[] := s_count;
    ts        TIMESTAMPTZ;
    last_ts   TIMESTAMPTZ;
    ts_tail   BYTEA;
    hv        BIGINT[];
    hh        BYTEA[];
    dirty     BOOLEAN[];
    idem_hit  BOOLEAN[];
    idem_hash BYTEA[];
    idem_stat SMALLINT[];
    idem_body JSONB[];
    claim_hit BOOLEAN[];
    accepted  BOOLEAN[];
    ev_src    INTEGER[] := '{}';
    ev_cat    TEXT[] := '{}';
    ev_sid    UUID[] := '{}';
    ev_ver    BIGINT[] := '{}';
    ev_prev   BYTEA[] := '{}';
    ev_hash   BYTEA[] := '{}';
    acc_req   INTEGER[] := '{}';
    acc_app   INTEGER[] := '{}';
    acc_cat   TEXT[] := '{}';
    acc_sid   UUID[] := '{}';
    acc_from  BIGINT[] := '{}';
    acc_to    BIGINT[] := '{}';
    acc_hash  BYTEA[] := '{}';
    ik_scope  TEXT[] := '{}';
    ik_key    TEXT[] := '{}';
    ik_hash   BYTEA[] := '{}';
    ik_stat   SMALLINT[] := '{}';
    ik_body   JSONB[] := '{}';
    cl_kind   TEXT[] := '{}';
    cl_value  TEXT[] := '{}';
    cl_cat    TEXT[] := '{}';
    cl_sid    UUID[] := '{}';
    rec       RECORD;
    s         INTEGER := 1;
    e         INTEGER := 1;
    ne        INTEGER := 0;
    na        INTEGER := 0;
    n         INTEGER;
    slot      INTEGER;
    bad       INTEGER;
    v         BIGINT;
    h         BYTEA;
BEGIN
    PERFORM pg_advisory_xact_lock(ordo_writer_lock_key());
    -- A caller that appends inside its own transaction and then stalls holds the writer lock:
    -- the server ends such a transaction instead of letting it block every writer.
    PERFORM set_config('idle_in_transaction_session_timeout', '5s', true);
    PERFORM set_config('statement_timeout', '10s', true);

    ts := clock_timestamp();
    SELECT ev.recorded_at INTO last_ts FROM events ev ORDER BY ev.position DESC LIMIT 1;
    IF last_ts IS NOT NULL AND last_ts > ts THEN
        ts := last_ts;
    END IF;
    ts_tail := convert_to('|' || to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), 'UTF8');

    hv := array_fill(0::BIGINT, ARRAY[nd]);
    hh := array_fill(NULL::BYTEA, ARRAY[nd]);
    dirty := array_fill(false, ARRAY[nd]);
    FOR rec IN
        SELECT u.slot, st.version, st.head_hash
          FROM unnest(d_category, d_stream_id) WITH ORDINALITY AS u(c, sid, slot)
          JOIN streams st ON st.category = u.c AND st.stream_id = u.sid
    LOOP
        hv[rec.slot] := rec.version;
        hh[rec.slot] := CASE WHEN rec.version = 0 THEN NULL ELSE rec.head_hash END;
    END LOOP;

    idem_hit := array_fill(false, ARRAY[nr]);
    idem_hash := array_fill(NULL::BYTEA, ARRAY[nr]);
    idem_stat := array_fill(NULL::SMALLINT, ARRAY[nr]);
    idem_body := array_fill(NULL::JSONB, ARRAY[nr]);
    FOR rec IN
        SELECT u.r, k.request_hash, k.response_status, k.response_body
          FROM unnest(r_idem_scope, r_idem_key) WITH ORDINALITY AS u(sc, k, r)
          JOIN idempotency_keys k ON k.scope = u.sc AND k.key = u.k
    LOOP
        idem_hit[rec.r] := true;
        idem_hash[rec.r] := rec.request_hash;
        idem_stat[rec.r] := rec.response_status;
        idem_body[rec.r] := rec.response_body;
    END LOOP;

    claim_hit := array_fill(false, ARRAY[nr]);
    FOR rec IN
        SELECT u.r
          FROM unnest(r_claim_kind, r_claim_value) WITH ORDINALITY AS u(k, val, r)
          JOIN unique_claims c ON c.kind = u.k AND c.value = u.val
    LOOP
        claim_hit[rec.r] := true;
    END LOOP;

    accepted := array_fill(false, ARRAY[nr]);
    FOR r IN 1..nr LOOP
        n := r_streams[r];
        bad := NULL;
        out_outcome := 0;
        IF r_after[r] > 0 AND NOT accepted[r_after[r]] THEN
            -- Decided on the state the request before it in its chain would have left.
            out_outcome := 1;
            bad := s;
        ELSIF idem_hit[r] THEN
            out_outcome := 2;
        ELSIF claim_hit[r] THEN
            out_outcome := 3;
        ELSE
            FOR j IN s..s + n - 1 LOOP
                slot := slots[j];
                IF (expected[j] IS NOT NULL AND expected[j] <> hv[slot])
                   OR (exp_hash[j] IS NOT NULL AND hh[slot] IS DISTINCT FROM exp_hash[j]) THEN
                    out_outcome := 1;
                    bad := j;
                    EXIT;
                END IF;
            END LOOP;
        END IF;

        IF out_outcome = 0 THEN
            accepted[r] := true;
            FOR j IN s..s + n - 1 LOOP
                slot := slots[j];
                v := hv[slot];
                h := hh[slot];
                FOR k IN 1..counts[j] LOOP
                    v := v + 1;
                    ne := ne + 1;
                    ev_src[ne] := e;
                    ev_cat[ne] := d_category[slot];
                    ev_sid[ne] := d_stream_id[slot];
                    ev_ver[ne] := v;
                    ev_prev[ne] := h;
                    h := sha256(coalesce(h, '\x'::BYTEA) || content[e] || convert_to('|' || v, 'UTF8') || ts_tail);
                    ev_hash[ne] := h;
                    e := e + 1;
                END LOOP;
                hv[slot] := v;
                hh[slot] := h;
                dirty[slot] := true;
                na := na + 1;
                acc_req[na] := r;
                acc_app[na] := j;
                acc_cat[na] := d_category[slot];
                acc_sid[na] := d_stream_id[slot];
                acc_from[na] := v - counts[j] + 1;
                acc_to[na] := v;
                acc_hash[na] := h;
            END LOOP;
            IF r_idem_key[r] IS NOT NULL THEN
                ik_scope := ik_scope || r_idem_scope[r];
                ik_key := ik_key || r_idem_key[r];
                ik_hash := ik_hash || r_idem_hash[r];
                ik_stat := ik_stat || r_idem_status[r];
                ik_body := ik_body || r_idem_body[r];
            END IF;
            IF r_claim_kind[r] IS NOT NULL THEN
                cl_kind := cl_kind || r_claim_kind[r];
                cl_value := cl_value || r_claim_value[r];
                cl_cat := cl_cat || d_category[slots[s]];
                cl_sid := cl_sid || d_stream_id[slots[s]];
            END IF;
        ELSE
            FOR j IN s..s + n - 1 LOOP
                e := e + counts[j];
            END LOOP;
            out_request := r;
            out_append := coalesce(bad, s);
            out_version := CASE WHEN bad IS NULL THEN NULL ELSE hv[slots[bad]] END;
            out_head_hash := CASE WHEN bad IS NULL THEN NULL ELSE hh[slots[bad]] END;
            out_first := NULL;
            out_last := NULL;
            out_recorded_at := NULL;
            out_stored_hash := CASE WHEN out_outcome = 2 THEN idem_hash[r] END;
            out_stored_status := CASE WHEN out_outcome = 2 THEN idem_stat[r] END;
            out_stored_body := CASE WHEN out_outcome = 2 THEN idem_body[r] END;
            RETURN NEXT;
        END IF;
        s := s + n;
    END LOOP;

    IF ne = 0 THEN
        RETURN;
    END IF;

    INSERT INTO streams AS st (category, stream_id, version, head_hash, updated_at)
    SELECT u.c, u.sid, u.v, u.h, ts
      FROM unnest(d_category, d_stream_id, hv, hh, dirty) AS u(c, sid, v, h, d)
     WHERE u.d
    ON CONFLICT (category, stream_id) DO UPDATE
       SET version = EXCLUDED.version, head_hash = EXCLUDED.head_hash, updated_at = EXCLUDED.updated_at;

    IF array_length(ik_key, 1) > 0 THEN
        INSERT INTO idempotency_keys (scope, key, request_hash, response_status, response_body)
        SELECT * FROM unnest(ik_scope, ik_key, ik_hash, ik_stat, ik_body);
    END IF;
    IF array_length(cl_kind, 1) > 0 THEN
        INSERT INTO unique_claims (kind, value, category, stream_id)
        SELECT * FROM unnest(cl_kind, cl_value, cl_cat, cl_sid);
    END IF;

    RETURN QUERY
    WITH ins AS (
        INSERT INTO events (category, stream_id, version, event_id, event_type, schema_version,
                            data, metadata, recorded_at, prev_hash, hash)
        SELECT a.c, a.sid, a.v, x.id, x.t, x.sv, x.d, x.m, ts, a.p, a.h
          FROM unnest(ev_src, ev_cat, ev_sid, ev_ver, ev_prev, ev_hash) AS a(src, c, sid, v, p, h)
          JOIN unnest(e_event_id, e_type, e_schema, e_data, e_metadata) WITH ORDINALITY
               AS x(id, t, sv, d, m, src) ON x.src = a.src
         ORDER BY a.src
        RETURNING events.category AS c, events.stream_id AS sid, events.version AS v, events.position AS pos
    ), notified AS (
        SELECT pg_notify('ordo_log', max(ins.pos)::text) FROM ins
    )
    SELECT a.r, 0::SMALLINT, a.j, a.t, min(ins.pos), max(ins.pos), a.h, ts,
           NULL::BYTEA, NULL::SMALLINT, NULL::JSONB
      FROM unnest(acc_req, acc_app, acc_cat, acc_sid, acc_from, acc_to, acc_hash) AS a(r, j, c, sid, f, t, h)
      JOIN ins ON ins.c = a.c AND ins.sid = a.sid AND ins.v BETWEEN a.f AND a.t
     CROSS JOIN notified
     GROUP BY a.r, a.j, a.t, a.h;
END
$$;
