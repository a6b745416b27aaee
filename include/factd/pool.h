/*
 * pool.h - a fixed-size pool of PostgreSQL connections.
 *
 * Connections are opened lazily and re-opened after the server restarts or a
 * connection breaks.  Every statement in the store's statement table
 * (fd_store_statements) is prepared once per connection, right after it
 * connects (with sql.h, which keeps the bookkeeping), so that a schema not
 * migrated yet is found before any request uses the connection.
 * Thread-safe: acquire/release may be called from any thread; a PGconn
 * handed out is used by one thread until it is released.
 */
#ifndef FACTD_POOL_H
#define FACTD_POOL_H

#include <stdbool.h>
#include <libpq-fe.h>
#include "factd/error.h"
#include "factd/sql.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fd_pool;
struct fd_metrics;

struct fd_pool_stats {
	unsigned size;     /* configured connections */
	unsigned open;     /* connections currently established */
	unsigned in_use;   /* handed out right now */
	unsigned waiting;  /* threads blocked in acquire */
	unsigned append_queue; /* appends waiting to join a batch (fd_pool_set_append_batches) */
};

/*
 * Create a pool of `size` connections to `conninfo` (copied).  No connection
 * is made yet.  Caller owns *out; free with fd_pool_free.
 */
FD_MUST_USE enum fd_err fd_pool_new(const char *conninfo, unsigned size, unsigned acquire_timeout_ms,
				    struct fd_pool **out);
/* Close every connection and free the pool.  No connection may be in use.  NULL is a no-op. */
void fd_pool_free(struct fd_pool *pool);

/*
 * Borrow a connected, prepared connection.  Waits up to the acquire timeout
 * for a free slot.  FD_ERR_UNAVAILABLE when the database cannot be reached or
 * no slot frees up in time.  The connection is borrowed: give it back with
 * fd_pool_release exactly once.
 */
FD_MUST_USE enum fd_err fd_pool_acquire(struct fd_pool *pool, PGconn **out);
/*
 * Return a connection.  Pass broken=true when the caller saw a connection
 * failure; the pool then closes it and reconnects on next use.  A connection
 * whose PQstatus is bad or that is still inside a transaction is treated as
 * broken regardless.
 */
void fd_pool_release(struct fd_pool *pool, PGconn *conn, bool broken);

void fd_pool_stats(struct fd_pool *pool, struct fd_pool_stats *out);

/*
 * How the pool's connections run statements (sql.h).  FD_POOL_UNNAMED: every
 * statement unnamed (fd_sql_set_unnamed), for a pool behind a
 * transaction-pooling PgBouncer.  FD_POOL_PREPARE_ON_USE: prepare each
 * statement when it first runs rather than all at connect (a read replica's
 * pool, which runs only the reads).  0 by default.  Call before the pool is
 * shared between threads.
 */
enum { FD_POOL_UNNAMED = 1, FD_POOL_PREPARE_ON_USE = 2 };
void fd_pool_set_flags(struct fd_pool *pool, unsigned flags);

/*
 * Record the store's work (appends, events, snapshots written) in `metrics`
 * (borrowed, must outlive the pool; NULL records nothing, the default).  The
 * pool is the handle every store function receives, so this is how the store
 * reaches the registry.  Call before the pool is shared between threads.
 */
void fd_pool_set_metrics(struct fd_pool *pool, struct fd_metrics *metrics);
/*
 * Wake `notifier` (borrowed, may be NULL) after every append through this
 * pool commits, so live followers in this process see it at once.  Set
 * before threads share the pool.
 */
struct fd_notifier;
void fd_pool_set_notifier(struct fd_pool *pool, struct fd_notifier *notifier);
/*
 * The master key that seals and opens personal data (src/store/personal.h),
 * borrowed; set before threads share the pool.  NULL (the default): events
 * that declare personal data are refused, and only erased values can be read.
 */
struct fd_keyring;
void fd_pool_set_keyring(struct fd_pool *pool, struct fd_keyring *keyring);
struct fd_keyring *fd_pool_keyring(const struct fd_pool *pool);
struct fd_notifier *fd_pool_notifier(const struct fd_pool *pool);

/*
 * Appends from concurrent requests share transactions (group commit, see
 * src/store/batch.c): at most max_inflight such batches run at once; 0 turns
 * it off, so every append is its own transaction.  FD_POOL_APPEND_BATCHES by
 * default.  Call before the pool is shared between threads.
 */
enum { FD_POOL_APPEND_BATCHES = 1 };
void fd_pool_set_append_batches(struct fd_pool *pool, unsigned max_inflight);

/* The store's statements (struct fd_stmt, sql.h): the pool prepares all of them on each new connection. */
extern const struct fd_stmt fd_store_statements[];
extern const unsigned fd_store_statements_count;

/*
 * Classify a failed PGresult (or NULL result) into an fd_err:
 * 23505 -> FD_ERR_DUPLICATE, 40001/40P01 -> FD_ERR_RETRY, connection
 * failures (class 08, 57P0x, bad PQstatus) -> FD_ERR_UNAVAILABLE, else FD_ERR_DB.
 */
enum fd_err fd_pg_classify(PGconn *conn, const PGresult *res);
/* True when err means the connection should be dropped and reopened. */
bool fd_pg_conn_broken(PGconn *conn, enum fd_err err);

/*
 * Does `conninfo` lead through a transaction-pooling pooler (PgBouncer with
 * pool_mode = transaction or statement)?  Two connections each ask for their
 * server process's id, one right after the other, a few times: directly,
 * or through a session pooler, two open connections never share a server;
 * a transaction pooler hands the server the first one just gave back to the
 * second.  FD_OK with *transaction set; FD_ERR_UNAVAILABLE when it cannot
 * connect.  A pooler under heavy load from others may go unnoticed (it then
 * hands out another idle server): say so with FACTD_POOLER=transaction.
 */
FD_MUST_USE enum fd_err fd_pooler_probe(const char *conninfo, bool *transaction);

/*
 * Send the server's notices and warnings on conn to factd's JSON log instead
 * of libpq's default, which prints them to stderr as plain text.  WARNING is
 * logged at warn, everything milder (NOTICE, INFO, LOG, DEBUG) at debug; the
 * line names `source` (a static string: "pool", "projector", ...).  Call on
 * every connection right after PQconnect*; a NULL conn is a no-op.
 */
void fd_pg_log_notices(PGconn *conn, const char *source);

#ifdef __cplusplus
}
#endif

#endif
