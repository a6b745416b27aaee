-- Aggregate snapshots and point-in-time lookups.
--
-- A snapshot is a cache of an aggregate's state after `version` events of its
-- stream, in the format of the aggregate's snapshot schema_version.  Several
-- are kept per stream, so a load "as of version N" can start from the newest
-- one at or below N; a snapshot whose schema_version the code no longer
-- writes is simply never chosen.  Losing every row here loses nothing.

CREATE TABLE snapshots (
    stream_id       text        NOT NULL REFERENCES streams (stream_id),
    version         bigint      NOT NULL CHECK (version >= 1),
    schema_version  int         NOT NULL,
    state           jsonb       NOT NULL CHECK (jsonb_typeof(state) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, schema_version, version)
);

-- The stream's version as of a moment:
--   max(version) WHERE stream_id = $1 AND recorded_at <= $2
-- is an index-only range scan here.
CREATE INDEX events_stream_recorded_idx ON events (stream_id, recorded_at, version);
