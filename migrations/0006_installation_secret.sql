-- A random secret of this installation (this database), made once here and
-- shared by every factd process that serves the database.
--
-- Commands sent with an Idempotency-Key record events whose ids are derived
-- from the key.  Derived from the key alone, those ids could be computed by
-- anyone who knows (or guesses) a key, and events appended with them through
-- POST /streams/{stream}/events ahead of the command: the command would then
-- find events it never recorded.  The derivation mixes this secret in, so the
-- ids cannot be computed outside factd.  It is random from the server's
-- strong generator (gen_random_uuid, 2 x 122 bits), never sent to clients;
-- keep this table with the events in a backup.
CREATE TABLE installation_secret (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    secret text NOT NULL CHECK (length(secret) BETWEEN 32 AND 128),
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO installation_secret (secret)
VALUES (replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
