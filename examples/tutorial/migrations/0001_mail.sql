-- The library's mailroom: letters to members, which a mail relay sends on.
-- mail_key makes posting idempotent: a saga step that runs twice posts once.
CREATE TABLE library_mail (
    mail_key  text PRIMARY KEY,
    recipient text NOT NULL,
    body      text NOT NULL,
    posted_at timestamptz NOT NULL DEFAULT now()
);
