/*
 * rows.h - reading and writing saga rows (migrations/0004_sagas.sql) for the
 * engine and the operations API.  Every function runs on a connection the
 * caller holds, inside the caller's transaction.
 */
#ifndef FACTD_SAGA_ROWS_H
#define FACTD_SAGA_ROWS_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "factd/pool.h"

#include "machine.h"

/* The saga intake's checkpoint row in `subscriptions`. */
#define FD_SAGA_SUBSCRIPTION "sagas"

/* The columns fd_saga_row_parse reads, with a table prefix ("" or "s."). */
#define FD_SAGA_COLS(p)                                                                                         \
	p "id::text, " p "type, " p "correlation_key, " p "status, " p "current_step, " p "phase, " p            \
	  "completed_steps::text, " p "attempts, (" p "lease_token IS NOT NULL AND " p "due_at > now()), " p     \
	  "seen::text, " p "data::text, coalesce(" p "error, ''), coalesce(" p "lease_token::text, ''),"     \
	  " coalesce(" p "personal::text, ''), " p "version"

/*
 * Parse row `i` of a result with FD_SAGA_COLS into st (initialised here;
 * release it); its type is looked up in `types`.  lease (optional, 37 bytes) receives the lease token or "".
 * FD_ERR_NOTFOUND when the row's type is unknown to this build,
 * FD_ERR_INVAL when the row does not parse.
 */
FD_MUST_USE enum fd_err fd_saga_row_parse(const struct fd_saga_set *types, const PGresult *res, int i, unsigned time_pct,
					  struct fd_saga_state *st, char *lease);
/*
 * Open the sealed personal values of a parsed row's data (nothing to do, and
 * no statement, when the row has none): one statement on conn for the
 * subject's key, unwrapped with pool's keyring.  Values of an erased subject
 * become null, their pointers listed in st->erased.  FD_ERR_NOKEY: the
 * subject is live and this process has no master key; FD_ERR_INTERNAL: a
 * value does not open (logged).  A row parsed and not opened is never saved.
 */
/* The same for a row read otherwise: sealed is its "personal" column, data its data (opened in place). */
FD_MUST_USE enum fd_err fd_saga_data_open(PGconn *conn, struct fd_pool *pool, const json_t *sealed, json_t *data,
					  json_t *erased);
FD_MUST_USE enum fd_err fd_saga_row_open(PGconn *conn, struct fd_pool *pool, struct fd_saga_state *st);
/*
 * Write the state back (status, step, phase, stacks, data, error; due and
 * lease as the machine left them).  The personal values its type declares
 * are sealed on the way (pool: for the subject's key; one statement on a
 * pool connection when there are any).  st->row_version becomes the row's
 * new version.  fd_saga_row_save is for a row the caller holds locked;
 * fd_saga_row_save_if writes only while the row's version is still
 * st->row_version, else FD_ERR_CONFLICT and nothing is written.
 */
FD_MUST_USE enum fd_err fd_saga_row_save(PGconn *conn, struct fd_pool *pool, struct fd_saga_state *st);
FD_MUST_USE enum fd_err fd_saga_row_save_if(PGconn *conn, struct fd_pool *pool, struct fd_saga_state *st);

/* A worker's run ends: what fd_saga_row_finish records besides the row. */
struct fd_saga_finish {
	const char *token;       /* the claim's lease token */
	const char *seq;         /* the run's history row */
	const char *outcome;     /* its outcome and error (NULL: none) */
	const char *error;
	const char *next_step;   /* the next run's step and kind when the claim goes on with it; NULL: none */
	const char *next_kind;
	unsigned next_attempt;
	const char *worker;
};
/*
 * Record a run's end in one statement (its own transaction, so outside any
 * the caller has open): the saga's row as st holds it, only while the claim
 * (f->token) holds it and its version is still st->row_version; the run's
 * history row; and the next run's, whose seq goes into next_seq ("" when
 * none).  FD_ERR_CONFLICT when the row moved on (written meanwhile, or the
 * claim lost): nothing is written.
 */
FD_MUST_USE enum fd_err fd_saga_row_finish(PGconn *conn, struct fd_pool *pool, struct fd_saga_state *st,
					   const struct fd_saga_finish *f, char next_seq[16]);
/*
 * Insert a new saga row for st with correlation key `key`, with its history
 * notes (st->notes), in one statement.  FD_ERR_GONE: a saga of this type
 * and key ended and was removed (saga_tombstones); nothing is written.
 */
FD_MUST_USE enum fd_err fd_saga_row_insert(PGconn *conn, struct fd_pool *pool, const struct fd_saga_state *st,
					   const char *key);
/*
 * Replace, in text (NUL-terminated, capacity cap), every occurrence of the
 * text of a personal value of st's data (each string within the values its
 * type declares; those of 3 characters or more) with "[personal]".  For step
 * errors and compensation reasons, which go to saga rows, the step history
 * and the log.  Nothing to do for a type without personal data.
 */
void fd_saga_redact(const struct fd_saga_state *st, char *text, size_t cap);
/* fd_saga_redact on st->error and the error of each of st->notes. */
void fd_saga_redact_state(struct fd_saga_state *st);
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
