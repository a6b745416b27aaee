-- The event store: streams, events and the one-round-trip append function.
--
-- events.tx_id is the id of the transaction that wrote the event (xid8).  The
-- global feed orders by (tx_id, seq) and only shows rows whose transaction is
-- older than every transaction still running (pg_snapshot_xmin), so a reader
-- following the feed by cursor can never skip an event that commits later with
-- a smaller sequence number.  See docs/design.md.

CREATE TABLE streams (
    stream_id   text        PRIMARY KEY,
    category    text        NOT NULL,
    version     bigint      NOT NULL CHECK (version >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE events (
    seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tx_id        xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id     uuid        NOT NULL,
    stream_id    text        NOT NULL REFERENCES streams (stream_id),
    category     text        NOT NULL,
    version      bigint      NOT NULL CHECK (version >= 1),
    type         text        NOT NULL CHECK (length(type) BETWEEN 1 AND 200),
    data         jsonb       NOT NULL,
    metadata     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

-- The feed: WHERE (tx_id, seq) > cursor AND tx_id < xmin ORDER BY tx_id, seq.
CREATE INDEX events_feed_idx ON events (tx_id, seq);
CREATE INDEX events_category_feed_idx ON events (category, tx_id, seq);

-- Renders an event as the JSON object the HTTP API returns.
CREATE FUNCTION fd_event_json(e events) RETURNS json
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT json_build_object(
        'event_id', e.event_id,
        'stream', e.stream_id,
        'version', e.version,
        'type', e.type,
        'data', e.data,
        'metadata', e.metadata,
        'recorded_at', to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'position', e.tx_id::text || '-' || e.seq::text)
$$;

-- Appends events to one stream in the caller's transaction.
--
-- p_expected_kind: 'exact' (p_expected_version, 0 = stream must not exist),
-- 'any', 'no_stream', 'exists'.  p_check_ids: some event ids came from the
-- client, so an already-stored id means an idempotent repeat (same stream,
-- same versions, same order) or a duplicate-id conflict.
--
-- Returns one row: status is 'ok', 'duplicate' (nothing written, the original
-- result returned), 'conflict' (expected version mismatch; current_version
-- set) or 'id_conflict'.
CREATE FUNCTION fd_append(
    p_stream text, p_category text,
    p_expected_kind text, p_expected_version bigint,
    p_ids uuid[], p_types text[], p_data jsonb[], p_metadata jsonb[],
    p_check_ids boolean,
    OUT status text, OUT first_version bigint, OUT last_version bigint,
    OUT current_version bigint, OUT tx_id text, OUT last_seq bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n       integer := cardinality(p_ids);
    cur     bigint;
    found_n integer;
    match_n integer;
    v0      bigint;
BEGIN
    IF n IS NULL OR n = 0 OR cardinality(p_types) <> n OR cardinality(p_data) <> n
       OR cardinality(p_metadata) <> n THEN
        RAISE EXCEPTION 'fd_append: event arrays must be non-empty and of equal length'
            USING ERRCODE = '22023';
    END IF;

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

    INSERT INTO events (event_id, stream_id, category, version, type, data, metadata)
    SELECT i.id, p_stream, p_category, cur + i.ord, p_types[i.ord], p_data[i.ord], p_metadata[i.ord]
      FROM unnest(p_ids) WITH ORDINALITY AS i(id, ord);

    SELECT max(e.seq) INTO last_seq FROM events e
     WHERE e.stream_id = p_stream AND e.version = cur + n;
    status := 'ok';
    first_version := cur + 1;
    last_version := cur + n;
    current_version := cur + n;
    tx_id := pg_current_xact_id()::text;
END
$$;

-- A feed reader's cursor must never point past a transaction id the cluster has
-- not reached: after a dump and restore into a new cluster, transaction ids
-- restart lower.  factd compares this at start-up (see docs/design.md).
CREATE FUNCTION fd_feed_xid_ok() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT max(tx_id) FROM events) < pg_snapshot_xmax(pg_current_snapshot()), true)
$$;
