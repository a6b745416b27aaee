-- Projections: one row per read model with its checkpoint in the gap-safe
-- feed, plus the state of a rebuild in progress.  The read-model tables
-- themselves are created by factd from each projection's definition.

CREATE TABLE projections (
    name             text        PRIMARY KEY,
    tx_id            xid8        NOT NULL DEFAULT '0',
    seq              bigint      NOT NULL DEFAULT 0,
    last_event_at    timestamptz,
    rebuild_requested boolean    NOT NULL DEFAULT false,
    rebuilding       boolean     NOT NULL DEFAULT false,
    rebuild_tx_id    xid8        NOT NULL DEFAULT '0',
    rebuild_seq      bigint      NOT NULL DEFAULT 0,
    owner            text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Feed followers (projections, the live feed) are woken by NOTIFY factd_events,
-- which factd sends outside the append transaction and at most every few
-- milliseconds per process: a NOTIFY inside the append would take the
-- notification queue's lock at commit and serialise every append behind the
-- previous one's WAL flush.  Followers also poll, so a lost wake-up only
-- delays them.
