/*
 * sql.h - how factd runs SQL on a connection it holds: one execution and
 * prepare policy for the store, the projector and the saga engine.
 *
 * The policy:
 *
 * - A statement that runs again and again on a long-lived connection is a
 *   struct fd_stmt (a name, its SQL, its parameter count) and runs prepared:
 *   fd_sql_exec prepares it the first time it runs on a connection and only
 *   executes it after that.  fd_sql_prepare prepares one earlier, where that
 *   matters: before a libpq pipeline (nothing can be prepared inside one), or
 *   at connect time to find out that the schema is not there.  A statement
 *   written out as a literal in the code may go by a name derived from its
 *   text (fd_sql_text_name), so the caller need not invent one.  A name
 *   stands for one SQL text on every connection.
 * - Which names a connection has prepared is kept with the PGconn itself
 *   (libpq instance data): it goes when the connection is closed, and a
 *   reconnect (a new PGconn, or PQreset) starts with nothing prepared.  No
 *   caller keeps "prepared yet?" flags of its own.
 * - Transaction control, DDL, set-up and statements that run rarely
 *   (operator queries) run unprepared, with fd_sql_once.  So does a
 *   statement whose best plan depends on its parameters' values, where a
 *   cached generic plan could be far worse (optional filters, "= ANY" of an
 *   array that decides which index range to read).  Session settings that
 *   change how prepared statements are planned (the projector's
 *   enable_seqscan = off, the saga engine's plan_cache_mode) stay with the
 *   connection's owner.
 * - A statement succeeds with PGRES_COMMAND_OK or PGRES_TUPLES_OK; anything
 *   else is fd_pg_classify's error.  *out receives libpq's result either way
 *   (NULL when there was none): the caller clears it, and logs a failure
 *   with what it knows (which projection, which saga).  No retries here;
 *   fd_tx_run-style policies (the store's fd_store_run) sit above this.
 *
 * Threading: as libpq's.  One thread uses a connection at a time, and its
 * bookkeeping travels with it.
 */
#ifndef FACTD_SQL_H
#define FACTD_SQL_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "factd/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * One statement run by name.  sql NULL: the statement was prepared on the
 * connection beforehand (fd_sql_prepare, or plain PQprepare) and is only
 * executed by name.
 */
struct fd_stmt {
	const char *name;
	const char *sql;
	int nparams;
	bool binary; /* results in binary format (parameters are always text) */
};

/* Room for a statement name: PostgreSQL keeps 63 bytes of it. */
#define FD_SQL_NAME_MAX 64

/*
 * Prepare st on conn unless it is prepared there already (st->sql must be
 * set).  out (optional) receives a failed prepare's result, else NULL; the
 * caller clears it.  Not in pipeline mode.
 */
FD_MUST_USE enum fd_err fd_sql_prepare(PGconn *conn, const struct fd_stmt *st, PGresult **out);

/*
 * Run every statement on conn unnamed from now on (also after PQreset):
 * fd_sql_exec sends its SQL with each execution (parse, bind, execute and
 * sync together) and fd_sql_prepare does nothing.  For a connection through
 * a transaction-pooling PgBouncer (1.18 and older do not carry named
 * prepared statements from one server connection to the next), where a
 * statement prepared in one transaction may be missing in the next.  False
 * on NOMEM.  Statements with sql NULL cannot run on such a connection
 * (FD_ERR_INTERNAL).
 */
FD_MUST_USE bool fd_sql_set_unnamed(PGconn *conn);
/* Whether fd_sql_set_unnamed was called on conn. */
bool fd_sql_unnamed(const PGconn *conn);

/* Whether a statement of that name was prepared on conn through this module. */
bool fd_sql_is_prepared(const PGconn *conn, const char *name);

/*
 * Run st prepared with text parameters, preparing it first when this
 * connection has not.  In pipeline mode it is only queued (*out NULL) and
 * must have been prepared before the pipeline began (FD_ERR_INTERNAL
 * otherwise); its result comes with the pipeline's.
 */
FD_MUST_USE enum fd_err fd_sql_exec(PGconn *conn, const struct fd_stmt *st, const char *const *params,
				    PGresult **out);

/*
 * Run SQL unprepared.  n > 0: one statement with n text parameters (extended
 * protocol).  n == 0: the simple protocol, so `sql` may hold several
 * statements (the result is the last one's).
 */
FD_MUST_USE enum fd_err fd_sql_once(PGconn *conn, const char *sql, int n, const char *const *params,
				    PGresult **out);

/*
 * A statement name derived from its SQL text ("fd_" and 16 hex digits of a
 * 64-bit hash), for statements written out where they run.
 */
void fd_sql_text_name(const char *sql, char name[FD_SQL_NAME_MAX]);

#ifdef __cplusplus
}
#endif

#endif
