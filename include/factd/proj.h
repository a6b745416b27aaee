/*
 * proj.h - projections: read models kept current from the global feed.
 *
 * A projection is declared like an aggregate type, as a row of a static const
 * table: its name, its table, the stream categories it reads, the SQL that
 * creates its table (with "{table}" where the name goes, so a shadow copy can
 * be built beside the live one), and a handler that applies one event with
 * SQL on the projection's own connection.
 *
 * The projector runs in the background of every factd process.  Each
 * projection is run by exactly one process at a time: the one holding its
 * session advisory lock on a dedicated connection; when that process dies its
 * connection closes, the lock is released, and another process takes over.
 * Events are applied and the checkpoint (a gap-safe feed cursor) advanced in
 * one transaction, so a crash neither skips nor repeats an event.
 *
 * Rebuild: a shadow table is filled from the start of the feed while the live
 * one keeps serving and advancing; once the shadow has caught up, one
 * transaction swaps them, so readers never see an empty table.
 */
#ifndef FACTD_PROJ_H
#define FACTD_PROJ_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "factd/buf.h"
#include "factd/error.h"
#include "factd/events.h"
#include "factd/pool.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fd_projection {
	const char *name;                   /* "order_summaries": also the checkpoint's name */
	const char *table;                  /* live table */
	const char *const *categories;      /* stream categories read; NULL-terminated */
	const char *create_sql;             /* CREATE TABLE {table} ... ; may hold several statements */
	/*
	 * Further tables create_sql makes, as suffixes of the table's name
	 * ("_lines" for {table}_lines); NULL-terminated, or NULL.  They are
	 * created, rebuilt, swapped in and dropped together with the table.
	 */
	const char *const *companions;
	/*
	 * The version of create_sql and of what the handler writes: raise it
	 * when either changes.  The projector stamps the tables it makes with
	 * it (a comment on the table).  Tables of an older version (1 for those
	 * made before the stamps) are rebuilt from the start of the feed beside
	 * the old ones, which keep being served, no longer updated, until the
	 * copy is swapped in; tables of a newer version are left to the newer
	 * factd that made them.
	 */
	unsigned version;
	/*
	 * Every statement the handler runs, with "{table}" where the name of the
	 * table it writes goes (and "{table}_lines" for a companion); NULL-
	 * terminated, at most FD_PROJECTION_STATEMENTS_MAX.  The projector
	 * prepares them on its connection, once for the live table and once for
	 * the shadow copy, before the first batch it applies to each, and the
	 * handler runs them by index with fd_projection_exec: an event then costs
	 * PostgreSQL no parsing and, once a statement's plan is cached, no
	 * planning.
	 */
	const char *const *statements;
	/*
	 * Apply one event inside the projection's open transaction on `conn`,
	 * writing to `table` (live or shadow) with fd_projection_exec.  Any error
	 * aborts the batch; it is retried later.  The projector calls handlers
	 * with `conn` in libpq pipeline mode: a handler queues its statements and
	 * does not read results; the projector checks them all at the end of the
	 * batch, so a batch of events costs one round trip, not one per
	 * statement.  Statements still run in order in the one transaction.
	 */
	enum fd_err (*handle)(PGconn *conn, const char *table, const struct fd_feed_event *ev);
	/*
	 * Optional: apply a whole batch of events (feed order, n >= 1) at once,
	 * in place of calling handle for each.  The same contract as handle (the
	 * open transaction, pipeline mode, statements run by index with
	 * fd_projection_exec), but a batch handler gathers the events of each
	 * type into arrays (fd_pg_array) and writes them with a few set-based
	 * statements per batch instead of one or more per event: what makes a
	 * replay of millions of events fast.  The result must be exactly what
	 * handle would have written event by event, the version checks
	 * included.  NULL: the projector calls handle per event.
	 */
	enum fd_err (*handle_batch)(PGconn *conn, const char *table, const struct fd_feed_event *evs, size_t n);
};

/*
 * A PostgreSQL array literal ("{...}") built one element at a time, the
 * parameter a batch handler's set-based statement takes per column (cast
 * in SQL: $1::bigint[], unnest($1::uuid[], $2::text[])).  Every element is
 * quoted and escaped, so any text is safe.  Initialise with FD_PG_ARRAY_INIT.
 */
struct fd_pg_array {
	struct fd_buf buf;
	size_t n;        /* elements added */
	bool failed;     /* an append ran out of memory: fd_pg_array_text returns NULL */
};
#define FD_PG_ARRAY_INIT { FD_BUF_INIT, 0, false }
/* Append value (NULL: an SQL NULL element).  Out of memory is remembered and reported by fd_pg_array_text. */
void fd_pg_array_add(struct fd_pg_array *a, const char *value);
/* Append a 64-bit integer. */
void fd_pg_array_add_int(struct fd_pg_array *a, long long value);
/* The literal, valid until the next add or release; NULL when an add failed. */
const char *fd_pg_array_text(struct fd_pg_array *a);
/* Empty it for reuse (keeps its memory). */
void fd_pg_array_reset(struct fd_pg_array *a);
void fd_pg_array_release(struct fd_pg_array *a);

#define FD_PROJECTION_STATEMENTS_MAX 64
/*
 * What the projector sets on each connection it opens.  Every handler
 * statement finds its rows by key, and PostgreSQL keeps a prepared
 * statement's generic plan until the statistics of its tables change: one
 * made while a table was tiny (a new projection, a rebuild's copy, a table
 * just vacuumed) would scan the table as it grows, where an index lookup
 * costs the same at any size.  Without sequential scans to choose from, the
 * planner takes the indexes.  The same holds for a batch handler's joins of
 * its arrays with a table: a merge join made while the table was tiny reads
 * the whole of an index in order (as slow as a scan, and growing with the
 * table); without merge and hash joins, each array element is an index
 * lookup.
 *
 * A round commits without waiting for its WAL flush: its rows and its
 * checkpoint are in one transaction and WAL is flushed in order, so a crash
 * can only lose the last rounds whole, and the projector applies their
 * events again from the checkpoint that survived (the events themselves
 * were committed durably before any round could read them).  The flush
 * each round used to wait for shared the disk with the appends' commits.
 */
#define FD_PROJECTION_SESSION_SQL                                                                            \
	"SET enable_seqscan = off; SET enable_mergejoin = off; SET enable_hashjoin = off;"                  \
	" SET synchronous_commit = off"
/* Room for a prepared statement's name: PostgreSQL keeps 63 bytes of it. */
#define FD_PROJECTION_STATEMENT_NAME 64

/* The projections of an app (struct fd_app.projections). */
struct fd_projection_set {
	const struct fd_projection *const *items;
	size_t n;
};
/* The projection named `name` in set, or NULL. */
const struct fd_projection *fd_projection_set_find(const struct fd_projection_set *set, const char *name);
/* sql with every "{table}" replaced by table (caller frees); NULL when out of memory. */
char *fd_projection_sql(const char *sql, const char *table);
/*
 * The name statement i of a projection is prepared under for `table`
 * ("order_summaries_next/2"): one name per statement and table, so the live
 * and the shadow tables each have their own.  False when it would not fit
 * in PostgreSQL's 63 bytes.
 */
bool fd_projection_statement_name(const char *table, unsigned i, char name[FD_PROJECTION_STATEMENT_NAME]);
/*
 * Run statement i of the projection's statements, prepared on conn for
 * `table`, with n text parameters.  On a connection in pipeline mode (the
 * projector's batches) it is only queued; its result is checked with the
 * rest of the batch.
 */
FD_MUST_USE enum fd_err fd_projection_exec(PGconn *conn, const char *table, unsigned i, int n,
					   const char *const *params);

struct fd_projector;
struct fd_metrics;

struct fd_projector_config {
	const struct fd_projection_set *projections; /* what it runs; borrowed */
	const char *conninfo;   /* the projector opens its own connections (one per projection it runs) */
	unsigned batch;         /* events per transaction (default 500) */
	unsigned idle_ms;       /* poll interval when the feed is quiet (default 200); NOTIFY wakes it sooner */
	struct fd_metrics *metrics; /* may be NULL */
	const struct fd_schemas *schemas; /* handlers see events upcast with these (schema.h); NULL: as stored */
};

/* Start the background projector.  Caller owns *out. */
FD_MUST_USE enum fd_err fd_projector_start(const struct fd_projector_config *cfg, struct fd_projector **out);
/* Stop it: finishes the batch in flight, releases its locks and connections.  NULL is a no-op. */
void fd_projector_stop(struct fd_projector *p);

/*
 * GET /projections: a JSON array (new reference) of
 * {name, checkpoint, head, lag_events, lag_seconds, status, rebuild: {checkpoint}|null, updated_at}.
 */
FD_MUST_USE enum fd_err fd_projection_status(struct fd_pool *pool, const struct fd_projection_set *set, json_t **out);
/* Ask for a rebuild (whichever process runs the projection does it).  FD_ERR_NOTFOUND for an unknown name. */
FD_MUST_USE enum fd_err fd_projection_request_rebuild(struct fd_pool *pool, const struct fd_projection_set *set,
						       const char *name);
/*
 * Wait (up to timeout_ms) until projection `name` has applied everything up
 * to `pos`.  FD_OK when it has, FD_ERR_RETRY when the wait ran out.
 */
FD_MUST_USE enum fd_err fd_projection_wait(struct fd_pool *pool, const char *name, struct fd_cursor pos,
					   unsigned timeout_ms);

#ifdef __cplusplus
}
#endif

#endif
