/*
 * migrate.h - schema migrations compiled into the binary from migrations/NNNN_name.sql.
 *
 * Each migration runs once, inside its own transaction, recorded in
 * schema_migrations (scope, version, name, sha256, applied_at).  A session-level
 * advisory lock serialises concurrent migrators (several factd processes
 * starting together): the second waits, then finds nothing left to apply.
 */
#ifndef FACTD_MIGRATE_H
#define FACTD_MIGRATE_H

#include <stddef.h>
#include <libpq-fe.h>
#include "factd/error.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fd_migration {
	int version;         /* 1..n, contiguous */
	const char *name;
	const char *sha256;  /* of the file's bytes; a changed applied file is refused */
	const char *sql;
};

/* The framework's own migrations (migrations/), recorded under scope FD_MIGRATE_SCOPE. */
extern const struct fd_migration fd_migrations[];
extern const size_t fd_migrations_count;
#define FD_MIGRATE_SCOPE "factd"

/*
 * A numbered set of migrations with its own sequence: an app's (scope = the
 * app's name).  items[i].version is i + 1.
 */
struct fd_migration_set {
	const char *scope;
	const struct fd_migration *items;
	size_t n;
};

/* The advisory-lock key migrations hold (documented so operators can see it in pg_locks). */
#define FD_MIGRATE_LOCK_KEY 0x66616374646d6967LL /* "factdmig" */

/*
 * Apply every pending migration over a dedicated connection to `conninfo`:
 * the framework's, then those of `app` (NULL: none).
 * *applied (may be NULL) receives how many this call applied.  FD_ERR_CONFLICT
 * when an applied migration's checksum differs from the compiled one;
 * FD_ERR_UNAVAILABLE when the database cannot be reached; FD_ERR_DB when a
 * migration fails (its transaction is rolled back).  Logs each migration.
 */
FD_MUST_USE enum fd_err fd_migrate_run(const char *conninfo, const struct fd_migration_set *app, int *applied);

/*
 * Check, on an open connection, that every compiled migration is applied,
 * the framework's and those of `app` (NULL: none).
 * FD_OK when current, FD_ERR_NOTFOUND when some are pending (or the table is
 * missing), FD_ERR_CONFLICT when an applied checksum differs, FD_ERR_UNAVAILABLE /
 * FD_ERR_DB on failure.
 */
FD_MUST_USE enum fd_err fd_migrate_check(PGconn *conn, const struct fd_migration_set *app);

#ifdef __cplusplus
}
#endif

#endif
