-- Consumer groups (server-side subscriptions with leases, acks and parking)
-- and webhooks (signed pushes with retries).  Everything a group or a
-- webhook knows is a row here, so any factd process serves any group and a
-- restart forgets nothing.  See docs/design.md, "Consumer groups and webhooks".
--
-- A group reads the feed past its watermark (tx_id, seq) by the gap-safe
-- rule (only events of transactions older than every running one) and copies
-- what matches into group_deliveries, one row per event not yet acknowledged
-- or skipped.  A row is 'ready' (waiting, maybe until available_at),
-- 'leased' (handed to a consumer until lease_until) or 'parked'.  Every
-- hand-out gives the row a new delivery_id, so an ack of an earlier
-- hand-out can never settle a later one.

CREATE TABLE consumer_groups (
    name            text        PRIMARY KEY,
    categories      text[],                  -- NULL: every category
    types           text[],                  -- NULL: every type
    start           text        NOT NULL,    -- as given at creation: 'beginning', 'end' or a position
    ack_timeout_ms  integer     NOT NULL CHECK (ack_timeout_ms BETWEEN 100 AND 86400000),
    max_deliveries  integer     NOT NULL CHECK (max_deliveries BETWEEN 1 AND 1000),
    ordering        text        NOT NULL CHECK (ordering IN ('stream', 'none')),
    tx_id           xid8        NOT NULL,    -- watermark: every event up to here is copied or filtered out
    seq             bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Deliveries by outcome, kept apart from the group row so that acks do not
-- wait for pulls (which lock the group row while they fill and hand out).
CREATE TABLE consumer_group_stats (
    group_name  text    PRIMARY KEY REFERENCES consumer_groups (name) ON DELETE CASCADE,
    delivered   bigint  NOT NULL DEFAULT 0,   -- hand-outs, first ones and redeliveries
    acked       bigint  NOT NULL DEFAULT 0,
    retried     bigint  NOT NULL DEFAULT 0,   -- nack retry
    skipped     bigint  NOT NULL DEFAULT 0,   -- nack skip
    parked      bigint  NOT NULL DEFAULT 0,   -- nack park, or max_deliveries reached
    expired     bigint  NOT NULL DEFAULT 0,   -- leases that ran out before an ack
    replayed    bigint  NOT NULL DEFAULT 0
);

CREATE TABLE group_deliveries (
    group_name      text        NOT NULL REFERENCES consumer_groups (name) ON DELETE CASCADE,
    tx_id           xid8        NOT NULL,
    seq             bigint      NOT NULL,
    stream_id       text        NOT NULL,
    state           text        NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'leased', 'parked')),
    delivery_id     uuid        UNIQUE,
    delivery_count  integer     NOT NULL DEFAULT 0,
    consumer        text,
    lease_until     timestamptz,
    available_at    timestamptz NOT NULL DEFAULT now(),
    parked_at       timestamptz,
    park_reason     text,
    PRIMARY KEY (group_name, tx_id, seq)
);
CREATE INDEX group_deliveries_stream_idx ON group_deliveries (group_name, stream_id, tx_id, seq);

-- The functions run with enable_seqscan = off: PL/pgSQL keeps a generic plan
-- per statement for the life of a connection, and one planned while events
-- was small would go on scanning it whole (as fd_append, 0005).
--
-- Pull: lock the group, copy newly visible events, park leases that ran out
-- max_deliveries times, and lease up to p_max events to p_consumer.  With
-- ordering 'stream' only the oldest row of each stream may be handed out,
-- and only when it is ready or its lease ran out: a later event of a stream
-- never leaves while an earlier one is in flight, waiting for a retry, or
-- parked.  Raises P0002 when there is no such group.  The leased events come
-- back with their columns, read by a statement of this function: a caller's
-- statement has an older snapshot, which may not show an event the copy
-- (with its newer snapshot) took in.
CREATE FUNCTION fd_group_pull(p_name text, p_consumer text, p_max integer)
RETURNS TABLE (delivery_id uuid, delivery_count integer, e_event_id uuid, e_stream_id text, e_version bigint,
               e_type text, e_data jsonb, e_metadata jsonb, e_recorded_at timestamptz, tx_id xid8, seq bigint)
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    g         consumer_groups;
    v_xmin    xid8;
    v_pending bigint;
    v_n       bigint;
    v_fill    integer := 1000;
    v_last_tx xid8;
    v_last_sq bigint;
    v_parked  bigint;
    v_expired bigint;
    v_ptx     xid8[];
    v_pseq    bigint[];
BEGIN
    SELECT * INTO g FROM consumer_groups c WHERE c.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no consumer group %', p_name USING ERRCODE = 'P0002';
    END IF;

    -- Copy newly visible events.  The bound is final once taken (every
    -- transaction below it has ended), so later statements, with newer
    -- snapshots, may read up to it.
    SELECT count(*) INTO v_pending FROM group_deliveries d
     WHERE d.group_name = p_name AND d.state <> 'parked';
    IF v_pending < v_fill THEN
        v_xmin := pg_snapshot_xmin(pg_current_snapshot());
        WITH c AS (
            SELECT e.tx_id, e.seq, e.stream_id FROM events e
             WHERE (e.tx_id, e.seq) > (g.tx_id, g.seq) AND e.tx_id < v_xmin
               AND (g.categories IS NULL OR e.category = ANY (g.categories))
               AND (g.types IS NULL OR e.type = ANY (g.types))
             ORDER BY e.tx_id, e.seq LIMIT v_fill - v_pending),
        ins AS (
            INSERT INTO group_deliveries AS i (group_name, tx_id, seq, stream_id)
            SELECT p_name, c.tx_id, c.seq, c.stream_id FROM c
            RETURNING i.tx_id, i.seq)
        SELECT count(*) OVER (), ins.tx_id, ins.seq INTO v_n, v_last_tx, v_last_sq
          FROM ins ORDER BY ins.tx_id DESC, ins.seq DESC LIMIT 1;
        IF coalesce(v_n, 0) < v_fill - v_pending THEN
            -- Caught up: everything up to the newest final event is copied
            -- or filtered out, so the watermark moves there.
            SELECT e.tx_id, e.seq INTO v_last_tx, v_last_sq FROM events e
             WHERE e.tx_id < v_xmin ORDER BY e.tx_id DESC, e.seq DESC LIMIT 1;
        END IF;
        IF v_last_tx IS NOT NULL AND (v_last_tx, v_last_sq) > (g.tx_id, g.seq) THEN
            UPDATE consumer_groups c SET tx_id = v_last_tx, seq = v_last_sq WHERE c.name = p_name;
        END IF;
    END IF;

    -- Leases that ran out on the last allowed delivery are parked.
    UPDATE group_deliveries d SET state = 'parked', parked_at = now(), consumer = NULL,
           park_reason = 'max_deliveries reached'
     WHERE d.group_name = p_name AND d.state = 'leased' AND d.lease_until <= now()
       AND d.delivery_count >= g.max_deliveries;
    GET DIAGNOSTICS v_parked = ROW_COUNT;

    -- What may go out: with ordering 'stream' only the oldest row of each stream.
    IF g.ordering = 'stream' THEN
        SELECT array_agg(p.tx_id ORDER BY p.tx_id, p.seq), array_agg(p.seq ORDER BY p.tx_id, p.seq),
               count(*) FILTER (WHERE p.state = 'leased')
          INTO v_ptx, v_pseq, v_expired
          FROM (SELECT h.tx_id, h.seq, h.state FROM (
                    SELECT DISTINCT ON (d.stream_id) d.tx_id, d.seq, d.state, d.lease_until, d.available_at
                      FROM group_deliveries d WHERE d.group_name = p_name
                     ORDER BY d.stream_id, d.tx_id, d.seq) h
                 WHERE (h.state = 'ready' AND h.available_at <= now())
                    OR (h.state = 'leased' AND h.lease_until <= now())
                 ORDER BY h.tx_id, h.seq LIMIT p_max) p;
    ELSE
        SELECT array_agg(p.tx_id ORDER BY p.tx_id, p.seq), array_agg(p.seq ORDER BY p.tx_id, p.seq),
               count(*) FILTER (WHERE p.state = 'leased')
          INTO v_ptx, v_pseq, v_expired
          FROM (SELECT d.tx_id, d.seq, d.state FROM group_deliveries d
                 WHERE d.group_name = p_name
                   AND ((d.state = 'ready' AND d.available_at <= now())
                        OR (d.state = 'leased' AND d.lease_until <= now()))
                 ORDER BY d.tx_id, d.seq LIMIT p_max) p;
    END IF;

    v_n := coalesce(cardinality(v_ptx), 0);
    IF v_n > 0 OR v_parked > 0 THEN
        UPDATE consumer_group_stats s SET delivered = s.delivered + v_n, parked = s.parked + v_parked,
               expired = s.expired + v_parked + coalesce(v_expired, 0)
         WHERE s.group_name = p_name;
    END IF;
    IF v_n = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
    WITH leased AS (
        UPDATE group_deliveries d
           SET state = 'leased', delivery_id = gen_random_uuid(), delivery_count = d.delivery_count + 1,
               consumer = p_consumer, lease_until = now() + g.ack_timeout_ms * interval '1 millisecond'
          FROM unnest(v_ptx, v_pseq) AS pick (tx_id, seq)
         WHERE d.group_name = p_name AND d.tx_id = pick.tx_id AND d.seq = pick.seq
        RETURNING d.delivery_id, d.delivery_count, d.seq)
    SELECT l.delivery_id, l.delivery_count, e.event_id, e.stream_id, e.version, e.type, e.data, e.metadata,
           e.recorded_at, e.tx_id, e.seq
      FROM leased l JOIN events e ON e.seq = l.seq;
END
$$;

-- Settle deliveries: every id must name a current, unexpired lease of the
-- group, or nothing changes and FD409 is raised (its DETAIL lists the ids
-- that do not).  p_action: 'ack' or 'skip' (delete), 'retry' (ready again
-- after p_delay_ms), 'park'.  Raises P0002 when there is no such group.
CREATE FUNCTION fd_group_settle(p_name text, p_ids uuid[], p_action text, p_delay_ms integer)
RETURNS integer
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_ids uuid[] := ARRAY(SELECT DISTINCT u FROM unnest(p_ids) u ORDER BY u);
    v_n   integer;
    v_bad text;
BEGIN
    PERFORM 1 FROM consumer_groups c WHERE c.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no consumer group %', p_name USING ERRCODE = 'P0002';
    END IF;
    SELECT string_agg(u::text, ',' ORDER BY u) INTO v_bad FROM unnest(v_ids) u
     WHERE NOT EXISTS (SELECT 1 FROM group_deliveries d WHERE d.group_name = p_name AND d.delivery_id = u
                          AND d.state = 'leased' AND d.lease_until > now());
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'unknown or expired deliveries' USING ERRCODE = 'FD409', DETAIL = v_bad;
    END IF;
    IF p_action IN ('ack', 'skip') THEN
        DELETE FROM group_deliveries d WHERE d.group_name = p_name AND d.delivery_id = ANY (v_ids)
           AND d.state = 'leased' AND d.lease_until > now();
    ELSIF p_action = 'retry' THEN
        UPDATE group_deliveries d SET state = 'ready', consumer = NULL, lease_until = NULL,
               available_at = now() + coalesce(p_delay_ms, 0) * interval '1 millisecond'
         WHERE d.group_name = p_name AND d.delivery_id = ANY (v_ids) AND d.state = 'leased' AND d.lease_until > now();
    ELSIF p_action = 'park' THEN
        UPDATE group_deliveries d SET state = 'parked', consumer = NULL, lease_until = NULL, parked_at = now(),
               park_reason = 'parked by a consumer'
         WHERE d.group_name = p_name AND d.delivery_id = ANY (v_ids) AND d.state = 'leased' AND d.lease_until > now();
    ELSE
        RAISE EXCEPTION 'unknown action %', p_action USING ERRCODE = '22023';
    END IF;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF v_n <> cardinality(v_ids) THEN
        -- a lease ran out or was settled by a concurrent call since the check
        RAISE EXCEPTION 'unknown or expired deliveries' USING ERRCODE = 'FD409', DETAIL = '';
    END IF;
    UPDATE consumer_group_stats s SET
           acked = s.acked + CASE WHEN p_action = 'ack' THEN v_n ELSE 0 END,
           skipped = s.skipped + CASE WHEN p_action = 'skip' THEN v_n ELSE 0 END,
           retried = s.retried + CASE WHEN p_action = 'retry' THEN v_n ELSE 0 END,
           parked = s.parked + CASE WHEN p_action = 'park' THEN v_n ELSE 0 END
     WHERE s.group_name = p_name;
    RETURN v_n;
END
$$;

-- Webhooks: each delivered in feed order by the one process that holds its
-- advisory lock; the watermark moves past an event once a 2xx came back.
CREATE TABLE webhooks (
    name             text        PRIMARY KEY,
    url              text        NOT NULL,
    categories       text[],
    types            text[],
    secret           text        NOT NULL,
    max_attempts     integer     NOT NULL CHECK (max_attempts BETWEEN 1 AND 100),
    timeout_ms       integer     NOT NULL CHECK (timeout_ms BETWEEN 100 AND 60000),
    status           text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    tx_id            xid8        NOT NULL,
    seq              bigint      NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,   -- failed attempts at the event past the watermark
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    failures         bigint      NOT NULL DEFAULT 0,   -- failed attempts in all
    delivered        bigint      NOT NULL DEFAULT 0,
    last_attempt_at  timestamptz,
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Put parked deliveries back (all of the group's when p_ids is NULL): ready
-- at once, counted from zero again.  With ids, each must be parked, or
-- nothing changes and FD409 is raised (DETAIL: the ids that are not).
CREATE FUNCTION fd_group_replay(p_name text, p_ids uuid[])
RETURNS integer
LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    v_n   integer;
    v_bad text;
BEGIN
    PERFORM 1 FROM consumer_groups c WHERE c.name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no consumer group %', p_name USING ERRCODE = 'P0002';
    END IF;
    IF p_ids IS NOT NULL THEN
        SELECT string_agg(u::text, ',' ORDER BY u) INTO v_bad FROM (SELECT DISTINCT u FROM unnest(p_ids) u) x
         WHERE NOT EXISTS (SELECT 1 FROM group_deliveries d WHERE d.group_name = p_name AND d.delivery_id = x.u
                              AND d.state = 'parked');
        IF v_bad IS NOT NULL THEN
            RAISE EXCEPTION 'deliveries not parked' USING ERRCODE = 'FD409', DETAIL = v_bad;
        END IF;
    END IF;
    UPDATE group_deliveries d SET state = 'ready', delivery_count = 0, parked_at = NULL, park_reason = NULL,
           consumer = NULL, lease_until = NULL, available_at = now()
     WHERE d.group_name = p_name AND d.state = 'parked' AND (p_ids IS NULL OR d.delivery_id = ANY (p_ids));
    GET DIAGNOSTICS v_n = ROW_COUNT;
    UPDATE consumer_group_stats s SET replayed = s.replayed + v_n WHERE s.group_name = p_name;
    RETURN v_n;
END
$$;
