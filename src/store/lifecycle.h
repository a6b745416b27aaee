/*
 * lifecycle.h - forgetting events: deleting and truncating streams, the
 * retention policies of categories and the removal they make, archives of
 * what is removed and their restore.  See docs/design.md, "Data lifecycle".
 *
 * The stream operations run on a pooled connection, one statement each
 * (fd_delete_stream, fd_truncate_stream in migrations/0008_lifecycle.sql),
 * which locks the stream row first, as every append does.  The retention
 * round runs on a connection its caller holds (the retention job's).
 *
 * Threading: thread-safe; a PGconn passed in is used by the calling thread only.
 */
#ifndef FACTD_STORE_LIFECYCLE_H
#define FACTD_STORE_LIFECYCLE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <libpq-fe.h>

#include "factd/error.h"
#include "factd/events.h"
#include "factd/pool.h"

struct fd_delete_result {
	int64_t deleted_version; /* the version of the $StreamDeleted event */
	int64_t current_version; /* on FD_ERR_CONFLICT: the stream's version (0 when it is deleted) */
	struct fd_cursor position;
	int64_t removed; /* events removed (hard deletion) */
};

/*
 * Delete `stream`: soft, or for good (hard).  expected < 0: whatever its
 * version.  Records a $StreamDeleted event (FD_EVENT_STREAM_DELETED) with
 * the metadata given (JSON object text) and drops the stream's snapshots;
 * hard also removes its events.  FD_ERR_NOTFOUND: no such stream;
 * FD_ERR_DELETED: already deleted (a soft deletion again); FD_ERR_GONE:
 * tombstoned; FD_ERR_CONFLICT: the expected version does not hold.
 */
FD_MUST_USE enum fd_err fd_store_delete_stream(struct fd_pool *pool, const char *stream, int64_t expected, bool hard,
					       const char *metadata_json, struct fd_delete_result *out);

enum fd_truncate_refusal {
	FD_TRUNCATE_BEYOND = 1,   /* before_version is past the stream's next version */
	FD_TRUNCATE_NEEDS_SNAPSHOT, /* an aggregate's stream with no snapshot at before_version - 1 or later */
};

struct fd_truncate_result {
	int64_t removed;
	int64_t current_version;
	enum fd_truncate_refusal refusal; /* with FD_ERR_REJECTED */
};

/*
 * Remove the events of `stream` below `before` (>= 1).  schema >= 0: the
 * stream is an aggregate's whose current snapshot schema it is; then a
 * snapshot of that schema at before - 1 or later must exist.  Errors as
 * fd_store_delete_stream's, plus FD_ERR_REJECTED with out->refusal.
 */
FD_MUST_USE enum fd_err fd_store_truncate_stream(struct fd_pool *pool, const char *stream, int64_t before, int schema,
						 struct fd_truncate_result *out);

/* Set the retention policy of a category (0: no limit of that kind; not both 0). */
FD_MUST_USE enum fd_err fd_retention_put(struct fd_pool *pool, const char *category, int max_age_days,
					 int64_t max_count);
/* Every policy as a JSON array text {category, max_age_days?, max_count_per_stream?, updated_at}; caller frees. */
FD_MUST_USE enum fd_err fd_retention_list(struct fd_pool *pool, char **json_out);
/* The policy of one category as a JSON object text; FD_ERR_NOTFOUND when none.  Caller frees. */
FD_MUST_USE enum fd_err fd_retention_get(struct fd_pool *pool, const char *category, char **json_out);
/* Drop a category's policy; FD_ERR_NOTFOUND when it had none. */
FD_MUST_USE enum fd_err fd_retention_delete(struct fd_pool *pool, const char *category);

/* A category an aggregate type owns, and the snapshot schema its loads use. */
struct fd_retention_aggregate {
	const char *category;
	int snapshot_schema; /* < 0: snapshots are off, nothing of the category is removed but deleted lives */
};

struct fd_retention_config {
	const char *archive_dir;                      /* NULL: removed events are not archived */
	unsigned batch;                               /* events per batch (each its own transaction) */
	const struct fd_retention_aggregate *aggregates;
	size_t naggregates;
	const atomic_bool *stop;                      /* checked between batches; may be NULL */
	int64_t *archived;                            /* out, may be NULL: += events written to archives */
	int64_t *files;                               /* out, may be NULL: += archive files written */
};

/*
 * One pass over every policy: remove what falls out, batch by batch, until
 * nothing does.  With an archive directory each batch is first written to
 * "<category>.<first position>.<last position>.jsonl.gz" there (one line per
 * event, as the feed renders it, in feed order) and fsynced, file and
 * directory, before the delete.  *removed counts the events removed.
 */
FD_MUST_USE enum fd_err fd_retention_round(PGconn *conn, const struct fd_retention_config *cfg, int64_t *removed);

/*
 * Load an archive back: every event not stored already, at its original
 * position, version and time.  Streams that do not exist are created (at
 * the highest version restored); events of tombstoned streams are skipped.
 * *restored counts the events written, *skipped the others.
 */
FD_MUST_USE enum fd_err fd_archive_restore(PGconn *conn, const char *path, size_t *restored, size_t *skipped,
					   char *errbuf, size_t errlen);

#endif
