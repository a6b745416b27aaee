-- Sagas (process managers): one row per running or finished workflow, the
-- history of every step attempt, and the checkpoint of the subscription that
-- feeds them events from the durable log.
--
-- A saga row is changed only inside a transaction that holds its row lock:
-- by the subscription (folding an event into it, in the same transaction
-- that advances the checkpoint) or by a worker that claimed it.  Work that
-- is due (run a step, retry one, fire a timeout, compensate) is a row whose
-- due_at has passed; workers claim such rows with FOR UPDATE SKIP LOCKED and
-- push due_at forward by a lease while they run the step, so a process that
-- dies mid-step leaves the row to be claimed again once the lease ends.

CREATE TABLE sagas (
    id               uuid        PRIMARY KEY,
    type             text        NOT NULL,
    correlation_key  text        NOT NULL,
    status           text        NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'completed', 'compensating', 'compensated', 'failed')),
    current_step     integer     NOT NULL DEFAULT 0,
    -- pending: the current step's action (or, while compensating, the next
    -- compensation) is to run at due_at; waiting: the step ran and waits for
    -- the event that starts the next one, until due_at (its timeout) if set;
    -- done: the saga has ended.
    phase            text        NOT NULL DEFAULT 'pending'
        CHECK (phase IN ('pending', 'waiting', 'done')),
    completed_steps  jsonb       NOT NULL DEFAULT '[]',   -- step indexes whose effects may need undoing, in order
    attempts         integer     NOT NULL DEFAULT 0,      -- attempts of the action or compensation now due
    due_at           timestamptz,                         -- when a worker should act; NULL = nothing due
    lease_token      uuid,                                -- the claim of the worker running it
    seen             jsonb       NOT NULL DEFAULT '[]',   -- event types this saga has seen
    data             jsonb       NOT NULL DEFAULT '{}',
    error            text,                                -- why compensation started / why it failed
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),  -- sagas started by one intake batch stay in order
    updated_at       timestamptz NOT NULL DEFAULT now(),
    version          bigint      NOT NULL DEFAULT 1,
    UNIQUE (type, correlation_key)
);

CREATE INDEX sagas_due ON sagas (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX sagas_list ON sagas (created_at DESC, id DESC);
-- the sagas an operator watches (GET /metrics counts them at each scrape)
CREATE INDEX sagas_live ON sagas (type, status) WHERE status IN ('running', 'compensating', 'failed');

CREATE TABLE saga_steps (
    saga_id      uuid        NOT NULL REFERENCES sagas (id),
    seq          integer     NOT NULL,
    step         text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('action', 'compensation', 'timeout')),
    attempt      integer     NOT NULL,
    outcome      text        NOT NULL DEFAULT 'running'
        CHECK (outcome IN ('running', 'succeeded', 'waiting', 'retry', 'failed', 'interrupted', 'timed_out')),
    error        text,
    worker       text,                                -- host:pid of the process that ran it
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    PRIMARY KEY (saga_id, seq)
);

-- Checkpoints of durable subscriptions to the feed (the saga intake).
CREATE TABLE subscriptions (
    name        text        PRIMARY KEY,
    tx_id       xid8        NOT NULL DEFAULT '0',
    seq         bigint      NOT NULL DEFAULT 0,
    owner       text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
