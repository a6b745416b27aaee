/*
 * internal.h - private to src/store: the rows of the store's one statement
 * table (fd_store_statements in events.c, prepared by the pool on every
 * connection) and the helper that runs them with the store's retry policy.
 *
 * Adding a statement is adding an id here and a row to the table.  Also here:
 * how store modules reach the metrics registry the pool carries.
 * Threading: as events.h; fd_store_run borrows one pool connection per try.
 */
#ifndef FACTD_STORE_INTERNAL_H
#define FACTD_STORE_INTERNAL_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "factd/buf.h"
#include "factd/error.h"
#include "factd/events.h"
#include "factd/pool.h"

enum fd_stmt_id {
	/* events.c */
	ST_APPEND,
	ST_APPEND_NEXT,
	ST_APPEND_CREATE,
	ST_APPEND_BATCH,
	ST_READ_STREAM,
	ST_FEED,
	ST_FEED_CAT,
	ST_FEED_TYPES,
	ST_FEED_CAT_TYPES,
	/* snapshots.c */
	ST_LOAD_STREAM,
	ST_VERSION_AT,
	ST_SAVE_SNAPSHOT,
	ST_FIND_EVENT,
	ST_EVENT_AT,
	ST_COUNT
};

/*
 * Execute one prepared statement that returns rows (PGRES_TUPLES_OK).
 * Serialization failures and deadlocks are retried up to three times, a lost
 * connection once on a fresh one.  recheck_param: index of a boolean
 * parameter to set "t" before retrying after a lost connection, or -1
 * (params must then be writable).  Malformed input that PostgreSQL rejects
 * (SQLSTATE class 22, check violations) is FD_ERR_INVAL.  On FD_OK *out
 * holds the result (caller owns, PQclear); otherwise *out is NULL.
 */
FD_MUST_USE enum fd_err fd_store_run(struct fd_pool *pool, enum fd_stmt_id id, const char **params,
				     int recheck_param, PGresult **out);

/*
 * fd_store_run, except that with lost != NULL a lost connection is not
 * retried: *lost is set and the error returned, for a statement whose repeat
 * would not be safe after it may have committed.  *lost is false otherwise.
 */
FD_MUST_USE enum fd_err fd_store_run_ex(struct fd_pool *pool, enum fd_stmt_id id, const char **params,
					int recheck_param, bool *lost, PGresult **out);

/*
 * render.c.  FD_EVENT_COLS: the columns of an event (table alias e) that
 * fd_render_event reads, in its order, from a result in binary format.
 */
#define FD_EVENT_COLS "e.event_id, e.stream_id, e.version, e.type, e.data, e.metadata, e.recorded_at, e.tx_id, e.seq"
enum { FD_EVENT_NCOLS = 9 };

/*
 * Append the event in columns col..col+8 of row (FD_EVENT_COLS, binary) to b
 * as the JSON object fd_event_json renders, in compact form.  FD_ERR_INTERNAL
 * when a column is NULL or not in the expected binary format.
 */
struct fd_subject_keys;
FD_MUST_USE enum fd_err fd_render_event(struct fd_buf *b, const PGresult *res, int row, int col,
				       const struct fd_subject_keys *keys);
/*
 * An event whose metadata declares personal data (store/personal.h) is
 * rendered with its values opened, or null and listed in a last member
 * "erased" when its subject was erased; keys must hold its subject
 * (fd_render_keys).  Others are spliced as stored.
 */
bool fd_render_is_personal(const PGresult *res, int row, int col);
/*
 * The event as stored: personal values stay sealed (retention archives keep
 * them so, and erasing the subject later makes them unreadable there too).
 */
FD_MUST_USE enum fd_err fd_render_event_stored(struct fd_buf *b, const PGresult *res, int row, int col);
/*
 * The keys of the subjects of the personal events among rows[0..n) (all of
 * from..to when rows is NULL) of res, in one statement; *out NULL when there
 * are none.
 */
FD_MUST_USE enum fd_err fd_render_keys(struct fd_pool *pool, const PGresult *res, const int *rows, int from, int to,
				       int col, struct fd_subject_keys **out);

/* events.c: a text integer column of a result; 0 when NULL. */
int64_t fd_store_int(const PGresult *res, int row, int col);

/* A binary int8 or xid8 column; false when NULL or not 8 bytes. */
bool fd_bin_u64(const PGresult *res, int row, int col, uint64_t *out);

/* events.c: append s as a double-quoted element of a PostgreSQL array literal (first: no comma). */
FD_MUST_USE enum fd_err fd_store_array_elem(struct fd_buf *b, const char *s, bool first);
/* The n strings as a whole PostgreSQL text array literal, "{...}", appended to b. */
FD_MUST_USE enum fd_err fd_store_text_array(struct fd_buf *b, const char *const *items, size_t n);
/*
 * events.c: append one event to the four parallel array literals of an
 * append (ids, types, data, metadata; "{}" for no metadata).
 */
FD_MUST_USE enum fd_err fd_store_event_elems(struct fd_buf *ids, struct fd_buf *types, struct fd_buf *data,
					     struct fd_buf *metadata, const struct fd_event_in *ev, bool first);

/*
 * batch.c: group commit of appends (see there).  A batcher belongs to a pool
 * (fd_pool_batcher) and lets at most max_inflight batches run at once; 0
 * turns batching off.
 */
struct fd_batcher;
FD_MUST_USE enum fd_err fd_batcher_new(unsigned max_inflight, struct fd_batcher **out);
void fd_batcher_free(struct fd_batcher *b);
void fd_batcher_set_max(struct fd_batcher *b, unsigned max_inflight);
struct fd_batcher *fd_pool_batcher(const struct fd_pool *pool);
/* Appends waiting in the queue now. */
unsigned fd_batcher_queued(struct fd_batcher *b);
/* Whether an append of n events at `expected` may go through fd_batch_append. */
bool fd_batcher_accepts(const struct fd_batcher *b, struct fd_expected expected, size_t n);
/*
 * Append as part of a batch.  FD_OK: written, out set.  FD_ERR_CONFLICT: the
 * version did not match, out->current_version set.  FD_ERR_NOTFOUND: not
 * written here; append alone.  *lost: the batch's connection broke, so the
 * events may have been written: the single append must check their ids.
 */
FD_MUST_USE enum fd_err fd_batch_append(struct fd_pool *pool, struct fd_batcher *b, const char *stream,
					const char *category, struct fd_expected expected,
					const struct fd_event_in *events, size_t n, struct fd_append_result *out,
					bool *lost);

/* The registry the store records into (pool.c; see fd_pool_set_metrics), or NULL. */
struct fd_metrics *fd_pool_metrics(const struct fd_pool *pool);

#endif
