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

#include "factd/error.h"
#include "factd/pool.h"

enum fd_stmt_id {
	/* events.c */
	ST_APPEND,
	ST_APPEND_NEXT,
	ST_APPEND_CREATE,
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

struct fd_buf;
/*
 * Append the event in columns col..col+8 of row (FD_EVENT_COLS, binary) to b
 * as the JSON object fd_event_json renders, byte for byte.  FD_ERR_INTERNAL
 * when a column is NULL or not in the expected binary format.
 */
FD_MUST_USE enum fd_err fd_render_event(struct fd_buf *b, const PGresult *res, int row, int col);

/* A binary int8 or xid8 column; false when NULL or not 8 bytes. */
bool fd_bin_u64(const PGresult *res, int row, int col, uint64_t *out);

/* The registry the store records into (pool.c; see fd_pool_set_metrics), or NULL. */
struct fd_metrics *fd_pool_metrics(const struct fd_pool *pool);

#endif
