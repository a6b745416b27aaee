-- Data lifecycle: deleting and truncating streams, retention per category,
-- and the removal of sagas that ended long ago.  See docs/design.md, "Data
-- lifecycle".
--
-- A stream row is never removed, so a stream's version only grows:
--   life_start  the version of the $StreamDeleted event that ended the last
--               life of the stream; events at or below it are hidden from
--               stream reads and aggregate loads (0: never deleted).
--   deleted     soft-deleted and not appended to since: reads answer 404
--               stream-deleted; an append with no_stream or any restarts it.
--   tombstoned  hard-deleted: its events and snapshots are gone for good and
--               the name can never be used again (410 stream-tombstoned).
-- Adding columns with constant defaults rewrites nothing.

ALTER TABLE streams
    ADD COLUMN life_start bigint  NOT NULL DEFAULT 0,
    ADD COLUMN deleted    boolean NOT NULL DEFAULT false,
    ADD COLUMN tombstoned boolean NOT NULL DEFAULT false;

-- Retention policies: what the retention job removes from a category.
CREATE TABLE retention_policies (
    category              text        PRIMARY KEY,
    max_age_days          integer     CHECK (max_age_days >= 1),
    max_count_per_stream  bigint      CHECK (max_count_per_stream >= 1),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CHECK (max_age_days IS NOT NULL OR max_count_per_stream IS NOT NULL)
);

-- What is left of a saga the retention job removed: enough for the saga
-- intake to know that the business process under this key already ran and
-- ended, so a late event of a starting type does not start it again.
CREATE TABLE saga_tombstones (
    type             text        NOT NULL,
    correlation_key  text        NOT NULL,
    saga_id          uuid        NOT NULL,
    status           text        NOT NULL,
    ended_at         timestamptz NOT NULL,
    removed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (type, correlation_key)
);

-- Ended sagas by the time they ended, for the retention job's batches.
CREATE INDEX sagas_ended ON sagas (updated_at) WHERE status IN ('completed', 'compensated', 'failed');

-- Same contract as in 0005_append_speed.sql, plus deleted streams.  A
-- soft-deleted stream counts as one that does not exist for the expected
-- version (no_stream, any and exact 0 restart it, with its versions going on;
-- exists and exact N are conflicts that report version 0), and a tombstoned
-- one refuses every append with status 'tombstoned'.  The fast path only
-- writes streams that are neither.
CREATE OR REPLACE FUNCTION fd_append(
    p_stream text, p_category text,
    p_expected_kind text, p_expected_version bigint,
    p_ids uuid[], p_types text[], p_data jsonb[], p_metadata jsonb[],
    p_check_ids boolean,
    OUT status text, OUT first_version bigint, OUT last_version bigint,
    OUT current_version bigint, OUT tx_id text, OUT last_seq bigint)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    n       integer := cardinality(p_ids);
    cur     bigint;
    del     boolean;
    tomb    boolean;
    found_n integer;
    match_n integer;
    v0      bigint;
    fast    boolean := true;
BEGIN
    IF n IS NULL OR n = 0 OR cardinality(p_types) <> n OR cardinality(p_data) <> n
       OR cardinality(p_metadata) <> n THEN
        RAISE EXCEPTION 'fd_append: event arrays must be non-empty and of equal length'
            USING ERRCODE = '22023';
    END IF;

    IF p_check_ids THEN
        fast := NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = ANY (p_ids));
    END IF;

    IF fast THEN
        IF p_expected_kind IN ('any', 'exists')
           OR (p_expected_kind = 'exact' AND p_expected_version > 0) THEN
            UPDATE streams s SET version = s.version + n, updated_at = now()
             WHERE s.stream_id = p_stream AND NOT s.deleted AND NOT s.tombstoned
               AND (p_expected_kind <> 'exact' OR s.version = p_expected_version)
            RETURNING s.version - n INTO cur;
            fast := FOUND;
        ELSIF p_expected_kind IN ('no_stream', 'exact') THEN
            INSERT INTO streams (stream_id, category, version)
            VALUES (p_stream, p_category, n)
            ON CONFLICT (stream_id) DO NOTHING;
            fast := FOUND;
            cur := 0;
        ELSE
            fast := false;
        END IF;
    END IF;

    IF NOT fast THEN
        LOOP
            SELECT s.version, s.deleted, s.tombstoned INTO cur, del, tomb
              FROM streams s WHERE s.stream_id = p_stream FOR UPDATE;

            IF tomb THEN
                status := 'tombstoned';
                current_version := cur;
                RETURN;
            END IF;

            IF p_check_ids THEN
                SELECT count(*), min(e.version) INTO found_n, v0
                  FROM events e WHERE e.event_id = ANY (p_ids);
                IF found_n > 0 THEN
                    SELECT count(*) INTO match_n
                      FROM unnest(p_ids) WITH ORDINALITY AS i(id, ord)
                      JOIN events e ON e.event_id = i.id
                     WHERE e.stream_id = p_stream AND e.version = v0 + i.ord - 1;
                    IF match_n = n THEN
                        status := 'duplicate';
                        first_version := v0;
                        last_version := v0 + n - 1;
                        current_version := cur;
                        SELECT e.tx_id::text, e.seq INTO tx_id, last_seq
                          FROM events e WHERE e.stream_id = p_stream AND e.version = v0 + n - 1;
                        RETURN;
                    END IF;
                    status := 'id_conflict';
                    current_version := coalesce(cur, 0);
                    RETURN;
                END IF;
            END IF;

            IF del THEN
                IF p_expected_kind = 'exists'
                   OR (p_expected_kind = 'exact' AND p_expected_version <> 0) THEN
                    status := 'conflict';
                    current_version := 0;
                    RETURN;
                END IF;
                UPDATE streams SET version = cur + n, deleted = false, updated_at = now()
                 WHERE stream_id = p_stream;
                EXIT;
            END IF;

            IF (p_expected_kind = 'exact' AND coalesce(cur, 0) <> p_expected_version)
               OR (p_expected_kind = 'no_stream' AND cur IS NOT NULL)
               OR (p_expected_kind = 'exists' AND cur IS NULL) THEN
                status := 'conflict';
                current_version := coalesce(cur, 0);
                RETURN;
            END IF;

            IF cur IS NULL THEN
                INSERT INTO streams (stream_id, category, version)
                VALUES (p_stream, p_category, n)
                ON CONFLICT (stream_id) DO NOTHING;
                IF FOUND THEN
                    cur := 0;
                    EXIT;
                END IF;
            ELSE
                UPDATE streams SET version = cur + n, updated_at = now() WHERE stream_id = p_stream;
                EXIT;
            END IF;
        END LOOP;
    END IF;

    WITH ins AS (
        INSERT INTO events (event_id, stream_id, category, version, type, data, metadata)
        SELECT i.id, p_stream, p_category, cur + i.ord, p_types[i.ord], p_data[i.ord], p_metadata[i.ord]
          FROM unnest(p_ids) WITH ORDINALITY AS i(id, ord)
        RETURNING seq)
    SELECT max(ins.seq) INTO last_seq FROM ins;
    status := 'ok';
    first_version := cur + 1;
    last_version := cur + n;
    current_version := cur + n;
    tx_id := pg_current_xact_id()::text;
END
$$;

-- Deletes a stream: soft (hidden, may restart) or hard (events and snapshots
-- removed, the name tombstoned).  The stream row is locked first, so the
-- deletion is serialised with every append to the stream, and the
-- $StreamDeleted event it records (version + 1, in the stream's own category,
-- so the followers of that category see it) keeps the feed in version order.
-- p_expected < 0: any version.  status: 'ok', 'notfound', 'deleted' (already
-- soft-deleted, and this one is soft too), 'tombstoned', 'conflict'.
CREATE FUNCTION fd_delete_stream(
    p_stream text, p_expected bigint, p_hard boolean, p_event_id uuid, p_metadata jsonb,
    OUT status text, OUT current_version bigint, OUT deleted_version bigint,
    OUT tx_id text, OUT last_seq bigint, OUT removed bigint)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    cur  bigint;
    cat  text;
    del  boolean;
    tomb boolean;
BEGIN
    removed := 0;
    SELECT s.version, s.category, s.deleted, s.tombstoned INTO cur, cat, del, tomb
      FROM streams s WHERE s.stream_id = p_stream FOR UPDATE;
    IF NOT FOUND THEN
        status := 'notfound';
        RETURN;
    END IF;
    current_version := CASE WHEN del THEN 0 ELSE cur END;
    IF tomb THEN
        status := 'tombstoned';
        RETURN;
    END IF;
    IF del AND NOT p_hard THEN
        status := 'deleted';
        RETURN;
    END IF;
    IF p_expected >= 0 AND p_expected <> current_version THEN
        status := 'conflict';
        RETURN;
    END IF;
    INSERT INTO events (event_id, stream_id, category, version, type, data, metadata)
    VALUES (p_event_id, p_stream, cat, cur + 1, '$StreamDeleted',
            jsonb_build_object('stream', p_stream, 'last_version', cur, 'hard', p_hard), p_metadata)
    RETURNING events.seq INTO last_seq;
    UPDATE streams SET version = cur + 1, life_start = cur + 1, deleted = true,
                       tombstoned = p_hard, updated_at = now()
     WHERE stream_id = p_stream;
    DELETE FROM snapshots WHERE stream_id = p_stream;
    IF p_hard THEN
        DELETE FROM events e WHERE e.stream_id = p_stream AND e.version <= cur;
        GET DIAGNOSTICS removed = ROW_COUNT;
    END IF;
    status := 'ok';
    deleted_version := cur + 1;
    tx_id := pg_current_xact_id()::text;
END
$$;

-- Removes the events of a stream below p_before.  For an aggregate's stream
-- (p_schema >= 0, its current snapshot schema) only when a snapshot of that
-- schema at p_before - 1 or later exists in the current life, so the
-- aggregate still loads.  The stream row is locked first, like an append.
-- status: 'ok', 'notfound', 'deleted', 'tombstoned', 'beyond' (p_before past
-- the next version), 'needs_snapshot'.
CREATE FUNCTION fd_truncate_stream(
    p_stream text, p_before bigint, p_schema integer,
    OUT status text, OUT current_version bigint, OUT removed bigint)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    cur  bigint;
    ls   bigint;
    del  boolean;
    tomb boolean;
BEGIN
    removed := 0;
    SELECT s.version, s.life_start, s.deleted, s.tombstoned INTO cur, ls, del, tomb
      FROM streams s WHERE s.stream_id = p_stream FOR UPDATE;
    IF NOT FOUND THEN
        status := 'notfound';
        RETURN;
    END IF;
    current_version := cur;
    IF tomb THEN
        status := 'tombstoned';
        RETURN;
    END IF;
    IF del THEN
        status := 'deleted';
        RETURN;
    END IF;
    IF p_before > cur + 1 THEN
        status := 'beyond';
        RETURN;
    END IF;
    IF p_schema >= 0 AND p_before - 1 > ls AND NOT EXISTS (
        SELECT 1 FROM snapshots sn
         WHERE sn.stream_id = p_stream AND sn.schema_version = p_schema
           AND sn.version >= p_before - 1 AND sn.version > ls) THEN
        status := 'needs_snapshot';
        RETURN;
    END IF;
    DELETE FROM events e WHERE e.stream_id = p_stream AND e.version < p_before;
    GET DIAGNOSTICS removed = ROW_COUNT;
    -- Snapshots below the new first event could only serve loads of versions whose events are gone.
    DELETE FROM snapshots sn WHERE sn.stream_id = p_stream AND sn.version < p_before - 1;
    status := 'ok';
END
$$;

-- The retention job's candidates by age in one category: events recorded
-- before p_cutoff, in feed order, at most p_limit of them, looking at no
-- more than p_scan events.  The walk stops at the first event recorded at or
-- after the cutoff (events of a stream are recorded in version order, and
-- across streams the feed order follows time closely; an old event behind a
-- young one waits for a later round).  For an aggregate's category (p_schema
-- >= 0) an event qualifies only when a snapshot of the current schema at or
-- after it exists in the current life, or it belongs to a deleted life, so
-- the aggregate still loads.
CREATE FUNCTION fd_retention_by_age(
    p_category text, p_cutoff timestamptz, p_schema integer, p_limit integer, p_scan integer)
RETURNS SETOF events
LANGUAGE plpgsql
STABLE
SET enable_seqscan = off
AS $$
DECLARE
    r       events;
    scanned integer := 0;
    found_n integer := 0;
BEGIN
    FOR r IN SELECT * FROM events e WHERE e.category = p_category ORDER BY e.tx_id, e.seq LOOP
        EXIT WHEN r.recorded_at >= p_cutoff OR scanned >= p_scan;
        scanned := scanned + 1;
        IF p_schema < 0 OR EXISTS (
            SELECT 1 FROM streams st WHERE st.stream_id = r.stream_id
               AND (r.version <= st.life_start OR EXISTS (
                    SELECT 1 FROM snapshots sn
                     WHERE sn.stream_id = r.stream_id AND sn.schema_version = p_schema
                       AND sn.version >= r.version AND sn.version > st.life_start))) THEN
            RETURN NEXT r;
            found_n := found_n + 1;
            EXIT WHEN found_n >= p_limit;
        END IF;
    END LOOP;
END
$$;

-- The retention job's candidates by count: of every stream of the category,
-- the events beyond its newest p_max (by version), at most p_limit in all,
-- over the streams from p_after on in name order; the same snapshot rule as
-- above for an aggregate's category.
CREATE FUNCTION fd_retention_by_count(
    p_category text, p_max bigint, p_schema integer, p_after text, p_limit integer)
RETURNS SETOF events
LANGUAGE sql
STABLE
AS $$
    SELECT e.* FROM streams st
     CROSS JOIN LATERAL (
        SELECT max(sn.version) AS v FROM snapshots sn
         WHERE p_schema >= 0 AND sn.stream_id = st.stream_id AND sn.schema_version = p_schema
           AND sn.version > st.life_start) snap
     CROSS JOIN LATERAL (
        SELECT * FROM events e
         WHERE e.stream_id = st.stream_id AND e.version <= st.version - p_max
           AND (p_schema < 0 OR e.version <= st.life_start OR e.version <= snap.v)
         ORDER BY e.version LIMIT p_limit) e
     WHERE st.stream_id COLLATE "C" >= p_category AND st.stream_id COLLATE "C" < p_category || '.'
       AND st.stream_id COLLATE "C" >= p_after
       AND st.category = p_category AND st.version > p_max
     ORDER BY st.stream_id COLLATE "C", e.version
     LIMIT p_limit
$$;
