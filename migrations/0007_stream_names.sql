-- Streams by name in byte order, for GET /streams (keyset pages, prefix and
-- category filters) and GET /categories (a skip scan over categories).
--
-- A category's streams are "<category>" and "<category>-<id>", which in byte
-- order ("C" collation) are exactly the names in [category, category || '.'):
-- '-' is the only stream-name character below '.'.  So one index serves a
-- prefix, a category and the list of categories.  stream_id never changes, so
-- appends (which update version and updated_at) keep their HOT updates.
CREATE INDEX streams_name_c_idx ON streams (stream_id COLLATE "C");
