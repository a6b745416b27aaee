/*
 * rows.h - reading and writing saga rows (migrations/0004_sagas.sql) for the
 * engine and the operations API.  Every function runs on a connection the
 * caller holds, inside the caller's transaction.
 */
#ifndef FACTD_SAGA_ROWS_H
#define FACTD_SAGA_ROWS_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "machine.h"

/* The saga intake's checkpoint row in `subscriptions`. */
#define FD_SAGA_SUBSCRIPTION "sagas"

/* The columns fd_saga_row_parse reads, with a table prefix ("" or "s."). */
#define FD_SAGA_COLS(p)                                                                                         \
	p "id::text, " p "type, " p "correlation_key, " p "status, " p "current_step, " p "phase, " p            \
	  "completed_steps::text, " p "attempts, (" p "lease_token IS NOT NULL AND " p "due_at > now()), " p     \
	  "seen::text, " p "data::text, coalesce(" p "error, ''), coalesce(" p "lease_token::text, '')"

/*
 * Parse row `i` of a result with FD_SAGA_COLS into st (initialised here;
 * release it); its type is looked up in `types`.  lease (optional, 37 bytes) receives the lease token or "".
 * FD_ERR_NOTFOUND when the row's type is unknown to this build,
 * FD_ERR_INVAL when the row does not parse.
 */
FD_MUST_USE enum fd_err fd_saga_row_parse(const struct fd_saga_set *types, const PGresult *res, int i, unsigned time_pct,
					  struct fd_saga_state *st, char *lease);
/* Write the state back (status, step, phase, stacks, data, error; due and lease as the machine left them). */
FD_MUST_USE enum fd_err fd_saga_row_save(PGconn *conn, const struct fd_saga_state *st);
/*
 * Insert a new saga row for st with correlation key `key`.  FD_ERR_GONE:
 * a saga of this type and key ended and was removed (saga_tombstones);
 * nothing is written.
 */
FD_MUST_USE enum fd_err fd_saga_row_insert(PGconn *conn, const struct fd_saga_state *st, const char *key);
/* Add the machine's history notes as finished saga_steps rows. */
FD_MUST_USE enum fd_err fd_saga_notes_write(PGconn *conn, const struct fd_saga_state *st);
/*
 * Run SQL with text params, prepared on the connection the first time under
 * a name derived from its text (sql.h); NULL (logged) on failure, else a
 * result to PQclear.  For the statements the engine runs again and again,
 * and the row writes above, which find their rows by key.
 */
PGresult *fd_saga_sql(PGconn *conn, const char *sql, int n, const char *const *params);
/* The same, unprepared: for operator queries (optional filters want a plan made for their values). */
PGresult *fd_saga_sql_once(PGconn *conn, const char *sql, int n, const char *const *params);
/* BEGIN / COMMIT / ROLLBACK, unprepared; false on failure. */
bool fd_saga_exec(PGconn *conn, const char *sql);

/*
 * Remove up to `limit` sagas that ended (completed, compensated, failed)
 * more than `retention_s` seconds ago, with their step history, leaving a
 * tombstone of each type and key.  One transaction, which first locks the
 * saga intake's checkpoint row, so it never interleaves with an intake
 * batch.  *removed counts them.
 */
FD_MUST_USE enum fd_err fd_saga_cleanup_batch(PGconn *conn, unsigned retention_s, unsigned limit, int64_t *removed);

#endif
