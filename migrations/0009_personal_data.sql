-- Personal data and its erasure by crypto-shredding (docs/design.md,
-- "Personal data and erasure").
--
-- An event may declare values of its data personal, of one data subject:
-- metadata {"personal": {"subject": "<id>", "paths": ["/email", ...]}}.
-- Those values are stored encrypted under the subject's own random key; the
-- key is stored here wrapped (encrypted) under the master key only the
-- processes hold (FACTD_MASTER_KEY_FILE).  Erasing a subject sets its
-- wrapped key to NULL: every value sealed under it is unreadable from then
-- on, wherever a copy of the event went.
CREATE TABLE subject_keys (
    subject     text        PRIMARY KEY CHECK (length(subject) BETWEEN 1 AND 200),
    wrapped     bytea,                   -- NULL once erased
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz,
    CHECK ((wrapped IS NULL) = (erased_at IS NOT NULL))
);

-- One row: a value sealed under the master key, so that a process started
-- with another master key refuses to start instead of failing (or worse,
-- making new subject keys) later.
CREATE TABLE master_key_check (
    id      int   PRIMARY KEY CHECK (id = 1),
    sealed  bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The streams that hold a subject's personal data, for erasure and
-- GET /subjects/{subject}.  Partial: events without personal data are not in
-- it, so their appends pay only the predicate.
CREATE INDEX events_personal_subject_idx ON events ((metadata -> 'personal' ->> 'subject'), stream_id)
    WHERE metadata ? 'personal';

-- The erasure events of a stream, for the snapshot guard below.
CREATE INDEX events_subject_erased_idx ON events (stream_id) WHERE type = '$SubjectErased';

-- Save a snapshot unless the stream does not exist, is shorter than
-- p_version (written 0), or holds a $SubjectErased event (written -1).  Snapshots of aggregates hold
-- their state in plaintext, personal values included: erasure deletes the
-- snapshots of the subject's streams (fd_subject_purge_snapshots), and no
-- snapshot is saved for an erased stream afterwards, so that one folded
-- before the erasure and written late cannot bring the values back.  The
-- shared advisory lock orders a save against the purge: a save that holds
-- it commits before the purge deletes; one that comes after the purge sees
-- the $SubjectErased event (each PL/pgSQL statement takes a new snapshot
-- under READ COMMITTED, and the event was committed before the purge ran).
CREATE FUNCTION fd_save_snapshot(p_stream text, p_version bigint, p_schema int, p_state jsonb,
                                 OUT stream_version bigint, OUT written int)
LANGUAGE plpgsql AS $$
DECLARE
    v_life_start bigint;
    v_gone boolean;
BEGIN
    written := 0;
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('factd.snapshot:' || p_stream, 0));
    -- a snapshot is of the stream's current life (0008: deletion and truncation)
    SELECT s.version, s.life_start, s.deleted OR s.tombstoned INTO stream_version, v_life_start, v_gone
      FROM streams s WHERE s.stream_id = p_stream FOR SHARE;
    IF stream_version IS NULL OR stream_version < p_version OR p_version <= v_life_start OR v_gone THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM events e WHERE e.stream_id = p_stream AND e.type = '$SubjectErased') THEN
        written := -1;
        RETURN;
    END IF;
    INSERT INTO snapshots (stream_id, version, schema_version, state)
    VALUES (p_stream, p_version, p_schema, p_state)
    ON CONFLICT (stream_id, schema_version, version)
    DO UPDATE SET state = EXCLUDED.state, created_at = now();
    written := 1;
END
$$;

-- Delete every snapshot of the given streams, under the lock each save takes.
CREATE FUNCTION fd_subject_purge_snapshots(p_streams text[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    s text;
    n bigint;
BEGIN
    -- in one order, so that two purges never wait for each other's locks
    FOR s IN SELECT DISTINCT x FROM unnest(p_streams) x ORDER BY x LOOP
        PERFORM pg_advisory_xact_lock(hashtextextended('factd.snapshot:' || s, 0));
    END LOOP;
    DELETE FROM snapshots WHERE stream_id = ANY (p_streams);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
