-- Personal data in saga data (docs/design.md, "Personal data in sagas").
--
-- A saga type may declare values of its data personal data of one subject
-- (struct fd_saga_type.personal).  Those values are stored in sagas.data
-- sealed under the subject's key, like an event's (0009), and this column
-- records which: {"subject": "<id>", "paths": ["/email", ...]}, the same
-- shape as an event's metadata "personal".  NULL: the row holds no sealed
-- value, and reading it costs nothing more than before.
ALTER TABLE sagas ADD COLUMN personal jsonb;
