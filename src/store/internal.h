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

/* The registry the store records into (pool.c; see fd_pool_set_metrics), or NULL. */
struct fd_metrics *fd_pool_metrics(const struct fd_pool *pool);

#endif
