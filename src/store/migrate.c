/*
 * migrate.c - apply the migrations compiled into the binary (fd_migrations,
 * generated from the migrations directory by tools/embed_migrations.py).
 *
 * fd_migrate_run holds a session-level advisory lock for its whole run, so
 * several processes starting together apply each migration exactly once: the
 * others wait, then find nothing pending.  Each migration runs in its own
 * transaction together with the INSERT that records it.
 *
 * Threading: fd_migrate_run uses its own connection and may run in any
 * thread; fd_migrate_check uses the caller's connection.
 */
#include "factd/migrate.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "factd/config.h"
#include "factd/log.h"
#include "factd/pool.h"

/*
 * The bookkeeping table.  Each set of migrations (the framework's, scope
 * "factd", and an app's, scope = the app's name) has its own numbering.
 * Tables made before scopes existed get the column (their rows are the
 * framework's) and the two-column key, once, under the lock.
 */
static const char create_table_sql[] =
	"CREATE TABLE IF NOT EXISTS schema_migrations ("
	" scope text NOT NULL DEFAULT 'factd',"
	" version integer NOT NULL,"
	" name text NOT NULL,"
	" sha256 text NOT NULL,"
	" applied_at timestamptz NOT NULL DEFAULT now(),"
	" PRIMARY KEY (scope, version));"
	"ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS scope text NOT NULL DEFAULT 'factd';"
	"DO $$ BEGIN"
	" IF EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = 'schema_migrations'::regclass"
	"            AND i.indisprimary AND i.indnatts = 1) THEN"
	"  ALTER TABLE schema_migrations DROP CONSTRAINT schema_migrations_pkey, ADD PRIMARY KEY (scope, version);"
	" END IF;"
	" END $$";

static const char select_applied_sql[] =
	"SELECT version, sha256 FROM schema_migrations WHERE scope = $1 ORDER BY version";

static const char insert_sql[] = "INSERT INTO schema_migrations (scope, version, name, sha256) VALUES ($1, $2, $3, $4)";

static const struct fd_migration_set framework_set = { .scope = FD_MIGRATE_SCOPE, .items = fd_migrations };

static PGresult *select_applied(PGconn *conn, const char *scope)
{
	const char *params[1] = { scope };
	return PQexecParams(conn, select_applied_sql, 1, NULL, params, NULL, NULL, 0);
}

/* Server notices ("relation already exists, skipping") go to the debug log, not raw stderr. */
/* Log a failed statement and classify it; res may be NULL. */
static enum fd_err report(PGconn *conn, const PGresult *res, const char *what, int version)
{
	enum fd_err err = fd_pg_classify(conn, res);
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
	json_t *fields = json_pack("{s:s, s:s?, s:s}", "step", what, "sqlstate",
				   res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL, "error", msg ? msg : "");
	if (fields && version > 0)
		json_object_set_new(fields, "version", json_integer(version));
	fd_log_fields(FD_LOG_ERROR, "migration failed", fields);
	return err == FD_ERR_UNAVAILABLE ? err : FD_ERR_DB;
}

/* Run a statement that returns no rows. */
static enum fd_err exec_command(PGconn *conn, const char *sql, const char *what, int version)
{
	PGresult *res = PQexec(conn, sql);
	enum fd_err err = FD_OK;
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		err = report(conn, res, what, version);
	PQclear(res);
	return err;
}

static const char *applied_sha(const PGresult *applied, int version)
{
	for (int i = 0; i < PQntuples(applied); i++)
		if (atoi(PQgetvalue(applied, i, 0)) == version)
			return PQgetvalue(applied, i, 1);
	return NULL;
}

/* Refuse to run when an applied migration was edited after the fact. */
static enum fd_err verify_applied(const struct fd_migration_set *set, const PGresult *applied)
{
	enum fd_err err = FD_OK;
	for (size_t i = 0; i < set->n; i++) {
		const struct fd_migration *m = &set->items[i];
		const char *sha = applied_sha(applied, m->version);
		if (sha && strcmp(sha, m->sha256) != 0) {
			fd_log_fields(FD_LOG_ERROR,
				      "an applied migration differs from the one compiled into this binary; "
				      "refusing to continue (restore the original file or repair schema_migrations)",
				      json_pack("{s:s, s:i, s:s, s:s, s:s}", "scope", set->scope, "version", m->version,
						"name", m->name, "applied_sha256", sha, "compiled_sha256", m->sha256));
			err = FD_ERR_CONFLICT;
		}
	}
	int known = set->n ? set->items[set->n - 1].version : 0;
	for (int i = 0; i < PQntuples(applied); i++) {
		int v = atoi(PQgetvalue(applied, i, 0));
		if (v > known)
			fd_log_fields(FD_LOG_WARN, "the database has a migration this binary does not know (newer binary ran?)",
				      json_pack("{s:s, s:i, s:i}", "scope", set->scope, "version", v, "known_up_to", known));
	}
	return err;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* Apply one migration and record it, in one transaction. */
static enum fd_err apply_one(PGconn *conn, const char *scope, const struct fd_migration *m)
{
	enum fd_err err = FD_OK;
	PGresult *res = NULL;
	struct timespec t0;
	char version[16];
	const char *params[4] = { scope, version, m->name, m->sha256 };

	clock_gettime(CLOCK_MONOTONIC, &t0);
	snprintf(version, sizeof version, "%d", m->version);
	if ((err = exec_command(conn, "BEGIN", "begin", m->version)))
		goto done;
	if ((err = exec_command(conn, m->sql, "migration sql", m->version)))
		goto done;
	res = PQexecParams(conn, insert_sql, 4, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		err = report(conn, res, "record migration", m->version);
		goto done;
	}
	if ((err = exec_command(conn, "COMMIT", "commit", m->version)))
		goto done;
	fd_log_fields(FD_LOG_INFO, "migration applied",
		      json_pack("{s:s, s:i, s:s, s:s, s:I}", "scope", scope, "version", m->version, "name", m->name,
				"sha256", m->sha256, "ms", (json_int_t)ms_since(&t0)));
done:
	PQclear(res);
	if (err && PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) != PQTRANS_IDLE) {
		PGresult *rb = PQexec(conn, "ROLLBACK");
		PQclear(rb);
	}
	return err;
}

/* Apply the pending migrations of one set; *count grows by those applied. */
static enum fd_err apply_set(PGconn *conn, const struct fd_migration_set *set, int *count)
{
	enum fd_err err = FD_OK;
	PGresult *res = select_applied(conn, set->scope);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		err = report(conn, res, "read schema_migrations", 0);
		goto done;
	}
	if ((err = verify_applied(set, res)))
		goto done;
	for (size_t i = 0; i < set->n; i++) {
		const struct fd_migration *m = &set->items[i];
		if (applied_sha(res, m->version))
			continue;
		if ((err = apply_one(conn, set->scope, m)))
			goto done;
		(*count)++;
	}
done:
	PQclear(res);
	return err;
}

enum fd_err fd_migrate_run(const char *conninfo, const struct fd_migration_set *app, int *applied)
{
	enum fd_err err = FD_OK;
	PGconn *conn = NULL;
	bool locked = false;
	int count = 0;
	char lock_sql[96];

	if (applied)
		*applied = 0;
	snprintf(lock_sql, sizeof lock_sql, "SELECT pg_advisory_lock(%lld)", (long long)FD_MIGRATE_LOCK_KEY);

	conn = PQconnectdb(conninfo);
	if (!conn) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		char *url = fd_config_redact_url(conninfo);
		fd_log_fields(FD_LOG_ERROR, "migrate: cannot connect to the database",
			      json_pack("{s:s?, s:s}", "database", url, "error", PQerrorMessage(conn)));
		free(url);
		err = FD_ERR_UNAVAILABLE;
		goto done;
	}
	fd_pg_log_notices(conn, "migrate");

	/* Everything below, including creating the bookkeeping table, happens under the lock. */
	if ((err = exec_command(conn, lock_sql, "advisory lock", 0)))
		goto done;
	locked = true;
	if ((err = exec_command(conn, create_table_sql, "create schema_migrations", 0)))
		goto done;
	struct fd_migration_set framework = framework_set;
	framework.n = fd_migrations_count;
	if ((err = apply_set(conn, &framework, &count)))
		goto done;
	if (app && app->n && (err = apply_set(conn, app, &count)))
		goto done;
	if (count == 0)
		fd_log(FD_LOG_DEBUG, "migrate: schema is current");
done:
	if (locked && PQstatus(conn) == CONNECTION_OK) {
		char unlock_sql[96];
		snprintf(unlock_sql, sizeof unlock_sql, "SELECT pg_advisory_unlock(%lld)",
			 (long long)FD_MIGRATE_LOCK_KEY);
		PGresult *u = PQexec(conn, unlock_sql);
		PQclear(u);
	}
	if (conn)
		PQfinish(conn);
	if (applied)
		*applied = count;
	return err;
}

/* FD_OK when every migration of the set is applied with its checksum. */
static enum fd_err check_set(PGconn *conn, const struct fd_migration_set *set)
{
	enum fd_err err = FD_OK;
	PGresult *res = select_applied(conn, set->scope);

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		/* undefined_table: never migrated; undefined_column: migrated by a factd without scopes */
		if (state && (strcmp(state, "42P01") == 0 || strcmp(state, "42703") == 0))
			err = FD_ERR_NOTFOUND;
		else
			err = fd_pg_classify(conn, res) == FD_ERR_UNAVAILABLE ? FD_ERR_UNAVAILABLE : FD_ERR_DB;
		goto done;
	}
	for (size_t i = 0; i < set->n; i++) {
		const char *sha = applied_sha(res, set->items[i].version);
		if (!sha) {
			err = FD_ERR_NOTFOUND;
			goto done;
		}
		if (strcmp(sha, set->items[i].sha256) != 0)
			err = FD_ERR_CONFLICT;
	}
done:
	PQclear(res);
	return err;
}

enum fd_err fd_migrate_check(PGconn *conn, const struct fd_migration_set *app)
{
	struct fd_migration_set framework = framework_set;
	framework.n = fd_migrations_count;
	enum fd_err err = check_set(conn, &framework);
	if (!err && app && app->n)
		err = check_set(conn, app);
	return err;
}
