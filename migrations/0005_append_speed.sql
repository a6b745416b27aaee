-- A cheaper append: fewer things maintained per event row, and fd_append
-- doing its common case in fewer statements.
--
-- Per inserted event the store used to maintain six indexes and run a
-- foreign-key check.  Now:
--
-- * events_stream_id_fkey goes.  Events are only written by fd_append, which
--   has locked or created the stream row in the same transaction before it
--   inserts, so the check (a query and a row lock per event) never fails.
-- * events_pkey (seq) goes.  No query looks an event up by seq alone: the feed
--   reads (tx_id, seq) through events_feed_idx, everything else goes by stream
--   and version or by event id.  seq stays an identity column, unique by
--   construction.
-- * events_stream_recorded_idx (stream_id, recorded_at, version) merges into
--   the (stream_id, version) unique index, which now carries recorded_at as an
--   INCLUDE column: "the stream's version as of a moment" walks that index
--   backwards from the newest version to the first one recorded at or before
--   the moment, still without visiting the table.

ALTER TABLE events DROP CONSTRAINT events_stream_id_fkey;
ALTER TABLE events DROP CONSTRAINT events_pkey;
DROP INDEX events_stream_recorded_idx;
ALTER TABLE events DROP CONSTRAINT events_stream_version_key;
ALTER TABLE events ADD CONSTRAINT events_stream_version_key
    UNIQUE (stream_id, version) INCLUDE (recorded_at);

-- Every append updates its stream row: room on the page keeps those updates HOT.
ALTER TABLE streams SET (fillfactor = 70);

-- Same contract as before (see 0001_event_store.sql); the body changes.
--
-- The common case, a stream that exists and an expected version that matches
-- (or none is expected), is one UPDATE of the stream row that both locks it
-- and checks the version, then the INSERT of the events.  A first append to a
-- new stream is one INSERT of the stream row.  Anything else (a version
-- mismatch, a stream created concurrently, a stream that should exist but
-- does not) falls through to the general loop, which locks the row and
-- decides with it held, as before.
--
-- Client event ids are checked before the fast path without a lock.  That is
-- enough: a transaction that stores those ids in this stream after the check
-- must have updated the stream row first, so the fast path's version test
-- fails and the general loop repeats the check with the row locked.  Ids
-- stored in another stream meanwhile still hit events_event_id_key.
--
-- The first write of every append is still its stream row (the UPDATE, the
-- INSERT or the row lock), which the feed relies on: appends to one stream get
-- increasing transaction ids in version order.
--
-- enable_seqscan is off inside the function: its statements are all lookups
-- by key, and PL/pgSQL caches a generic plan per statement for the life of a
-- connection, which was a sequential scan of streams when the table was small
-- at the time it was planned.
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
        -- Any stored id sends the request to the general loop, which decides
        -- between an idempotent repeat and a conflict with the row locked.
        fast := NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = ANY (p_ids));
    END IF;

    IF fast THEN
        IF p_expected_kind IN ('any', 'exists')
           OR (p_expected_kind = 'exact' AND p_expected_version > 0) THEN
            UPDATE streams s SET version = s.version + n, updated_at = now()
             WHERE s.stream_id = p_stream
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
        -- An 'any' append to a stream that does not exist yet also lands in
        -- the general loop, which creates it.
    END IF;

    IF NOT fast THEN
        LOOP
            SELECT s.version INTO cur FROM streams s WHERE s.stream_id = p_stream FOR UPDATE;

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

            IF (p_expected_kind = 'exact' AND coalesce(cur, 0) <> p_expected_version)
               OR (p_expected_kind = 'no_stream' AND cur IS NOT NULL)
               OR (p_expected_kind = 'exists' AND cur IS NULL) THEN
                status := 'conflict';
                current_version := coalesce(cur, 0);
                RETURN;
            END IF;

            IF cur IS NULL THEN
                -- Create the stream.  A concurrent creator makes this insert wait and
                -- then do nothing; loop to lock its row and check again.
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
