-- The test app's own table: proves an app's migrations run in their own
-- sequence after the framework's.
CREATE TABLE counter_audit (
    counter_id text PRIMARY KEY,
    note       text NOT NULL DEFAULT ''
);
