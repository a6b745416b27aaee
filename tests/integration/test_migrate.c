/*
 * test_migrate.c - schema migrations against a real PostgreSQL: apply once,
 * detect pending and edited migrations, and stay correct when several
 * migrators (threads, and `factd migrate` processes) start together.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "factd/migrate.h"
#include "test_app.h"
#include "testdb.h"
#include "testutil.h"

static void exec_ok(PGconn *c, const char *sql)
{
	PGresult *res = PQexec(c, sql);
	ExecStatusType st = PQresultStatus(res);
	cr_assert(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(res));
	PQclear(res);
}

static const char *dbname_of(const char *url)
{
	return strrchr(url, '/') + 1;
}

/* Every compiled migration is recorded exactly once with its checksum. */
static void assert_recorded_once(PGconn *c)
{
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM schema_migrations WHERE scope = 'factd'"),
		     (long long)fd_migrations_count);
	for (size_t i = 0; i < fd_migrations_count; i++) {
		char sql[256];
		snprintf(sql, sizeof sql, "SELECT count(*) FROM schema_migrations WHERE version = %d AND sha256 = '%s'",
			 fd_migrations[i].version, fd_migrations[i].sha256);
		cr_assert_eq(fd_test_scalar(c, sql), 1, "version %d", fd_migrations[i].version);
	}
}

Test(migrate, compiled_table_is_contiguous)
{
	cr_assert_gt(fd_migrations_count, 0);
	for (size_t i = 0; i < fd_migrations_count; i++) {
		cr_assert_eq(fd_migrations[i].version, (int)i + 1);
		cr_assert_eq(strlen(fd_migrations[i].sha256), 64);
		cr_assert_gt(strlen(fd_migrations[i].sql), 0);
	}
}

Test(migrate, applies_everything_once)
{
	char *url = fd_test_db_new_empty();
	PGconn *c = fd_test_connect(url);
	cr_assert_eq(fd_migrate_check(c, NULL), FD_ERR_NOTFOUND, "no schema_migrations table yet");
	cr_assert_eq(PQtransactionStatus(c), PQTRANS_IDLE);

	int applied = -1;
	cr_assert_eq(fd_migrate_run(url, NULL, &applied), FD_OK);
	cr_assert_eq(applied, (int)fd_migrations_count);
	assert_recorded_once(c);
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM pg_proc WHERE proname = 'fd_append'"), 1);
	cr_assert_eq(fd_migrate_check(c, NULL), FD_OK);

	applied = -1;
	cr_assert_eq(fd_migrate_run(url, NULL, &applied), FD_OK);
	cr_assert_eq(applied, 0, "a second run has nothing to do");
	cr_assert_eq(fd_migrate_run(url, NULL, NULL), FD_OK, "applied may be NULL");
	assert_recorded_once(c);
	cr_assert_eq(fd_test_scalar(c, "SELECT fd_feed_xid_ok()::int"), 1);
	PQfinish(c);
	free(url);
}

/* The installation secret of a freshly migrated database (caller frees). */
static char *installation_secret(void)
{
	char *url = fd_test_db_new_empty();
	cr_assert_eq(fd_migrate_run(url, NULL, NULL), FD_OK);
	PGconn *c = fd_test_connect(url);
	PGresult *res = PQexec(c, "SELECT secret FROM installation_secret");
	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
	cr_assert_eq(PQntuples(res), 1, "one row");
	char *secret = strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	PQfinish(c);
	free(url);
	return secret;
}

Test(migrate, each_installation_gets_its_own_random_secret)
{
	char *a = installation_secret(), *b = installation_secret();
	cr_assert_eq(strlen(a), 64, "%s", a);
	cr_assert_eq(strspn(a, "0123456789abcdef"), 64, "%s", a);
	cr_assert_str_neq(a, b, "two installations share a secret");
	free(a);
	free(b);
}

Test(migrate, check_reports_a_pending_migration)
{
	char *url = fd_test_db_new_empty();
	cr_assert_eq(fd_migrate_run(url, NULL, NULL), FD_OK);
	PGconn *c = fd_test_connect(url);
	char sql[128];
	snprintf(sql, sizeof sql, "DELETE FROM schema_migrations WHERE version = %d",
		 fd_migrations[fd_migrations_count - 1].version);
	exec_ok(c, sql);
	cr_assert_eq(fd_migrate_check(c, NULL), FD_ERR_NOTFOUND);
	PQfinish(c);
	free(url);
}

Test(migrate, failing_migration_is_rolled_back)
{
	/* The schema exists but its record is gone: re-running migration 1 fails (tables exist). */
	char *url = fd_test_db_new_empty();
	cr_assert_eq(fd_migrate_run(url, NULL, NULL), FD_OK);
	PGconn *c = fd_test_connect(url);
	exec_ok(c, "DELETE FROM schema_migrations WHERE version = 1");
	exec_ok(c, "INSERT INTO streams (stream_id, category, version) VALUES ('keep-1', 'keep', 1)");
	int applied = -1;
	cr_assert_eq(fd_migrate_run(url, NULL, &applied), FD_ERR_DB);
	cr_assert_eq(applied, 0);
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM schema_migrations WHERE version = 1"), 0,
		     "a failed migration must not be recorded");
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM streams"), 1, "the failed transaction touched nothing");
	/* the advisory lock was given back: another run gets past it and fails the same way */
	cr_assert_eq(fd_migrate_run(url, NULL, NULL), FD_ERR_DB);
	PQfinish(c);
	free(url);
}

Test(migrate, changed_checksum_is_refused)
{
	char *url = fd_test_db_new_empty();
	cr_assert_eq(fd_migrate_run(url, NULL, NULL), FD_OK);
	PGconn *c = fd_test_connect(url);
	exec_ok(c, "UPDATE schema_migrations SET sha256 = 'x' WHERE version = 1");
	int applied = -1;
	cr_assert_eq(fd_migrate_run(url, NULL, &applied), FD_ERR_CONFLICT);
	cr_assert_eq(applied, 0);
	cr_assert_eq(fd_migrate_check(c, NULL), FD_ERR_CONFLICT);
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM schema_migrations WHERE sha256 = 'x'"), 1,
		     "the record is left for an operator to inspect");
	PQfinish(c);
	free(url);
}

Test(migrate, newer_database_version_is_tolerated)
{
	char *url = fd_test_db_new_empty();
	cr_assert_eq(fd_migrate_run(url, NULL, NULL), FD_OK);
	PGconn *c = fd_test_connect(url);
	exec_ok(c, "INSERT INTO schema_migrations (version, name, sha256) VALUES (9999, 'from_the_future', 'abc')");
	int applied = -1;
	cr_assert_eq(fd_migrate_run(url, NULL, &applied), FD_OK);
	cr_assert_eq(applied, 0);
	cr_assert_eq(fd_migrate_check(c, NULL), FD_OK);
	PQfinish(c);
	free(url);
}

Test(migrate, template_clone_is_current)
{
	char *url = fd_test_db_new();
	PGconn *c = fd_test_connect(url);
	cr_assert_eq(fd_migrate_check(c, NULL), FD_OK);
	PQfinish(c);
	free(url);
}

Test(migrate, unreachable_database_is_unavailable)
{
	int applied = -1;
	cr_assert_eq(fd_migrate_run("postgresql://postgres@127.0.0.1:1/postgres?connect_timeout=5", NULL, &applied),
		     FD_ERR_UNAVAILABLE);
	cr_assert_eq(applied, 0);
}

/*
 * Hold the migration lock from another session while the migrators start, so
 * they are certain to overlap; release it once `waiters` of them queue on it.
 */
static PGconn *hold_migration_lock(const char *url)
{
	PGconn *c = fd_test_connect(url);
	char sql[96];
	snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%lld)", (long long)FD_MIGRATE_LOCK_KEY);
	exec_ok(c, sql);
	return c;
}

static void release_when_waiting(PGconn *holder, const char *url, int waiters)
{
	char sql[256];
	snprintf(sql, sizeof sql,
		 "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
		 " WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = '%s'",
		 dbname_of(url));
	long long n = 0;
	for (int i = 0; i < 3000 && (n = fd_test_scalar(holder, sql)) < waiters; i++)
		fd_test_sleep_ms(10);
	cr_assert_eq(n, waiters, "the migrators should all be waiting on the advisory lock");
	PQfinish(holder); /* ends the session: the lock is released */
}

struct migrator {
	const char *url;
	enum fd_err err;
	int applied;
};

static void *run_migrator(void *arg)
{
	struct migrator *m = arg;
	m->err = fd_migrate_run(m->url, NULL, &m->applied);
	return NULL;
}

Test(migrate, concurrent_threads_apply_each_migration_once, .timeout = 120)
{
	char *url = fd_test_db_new_empty();
	PGconn *holder = hold_migration_lock(url);
	struct migrator m[2] = { { .url = url, .applied = -1 }, { .url = url, .applied = -1 } };
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, run_migrator, &m[i]), 0);
	release_when_waiting(holder, url, 2);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	cr_assert_eq(m[0].err, FD_OK);
	cr_assert_eq(m[1].err, FD_OK);
	cr_assert_eq(m[0].applied + m[1].applied, (int)fd_migrations_count);
	cr_assert(m[0].applied == 0 || m[1].applied == 0, "one of them found nothing left to apply");
	PGconn *c = fd_test_connect(url);
	assert_recorded_once(c);
	PQfinish(c);
	free(url);
}

/* Fork `factd migrate` against url; the child waits for a byte on gate before exec. */
static pid_t spawn_migrate(const char *bin, const char *url, int gate)
{
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		char go;
		if (read(gate, &go, 1) < 0)
			_exit(126);
		setenv("FACTD_DATABASE_URL", url, 1);
		execl(bin, bin, "migrate", (char *)NULL);
		_exit(127);
	}
	return pid;
}

Test(migrate, concurrent_factd_processes_apply_each_migration_once, .timeout = 120)
{
	const char *bin = getenv("FACTD_BIN");
	if (!bin || !*bin || access(bin, X_OK) != 0)
		cr_assert_fail("FACTD_BIN (an app's binary: the test app's) is not set or not executable (\"%s\"): "
			       "run the tests through scripts/test / meson test",
			       bin ? bin : "");
	char *url = fd_test_db_new_empty();
	PGconn *holder = hold_migration_lock(url);
	int gate[2];
	cr_assert_eq(pipe(gate), 0);
	pid_t pids[2];
	for (int i = 0; i < 2; i++)
		pids[i] = spawn_migrate(bin, url, gate[0]);
	close(gate[0]);
	/* Start both at once. */
	cr_assert_eq(write(gate[1], "gg", 2), 2);
	close(gate[1]);
	release_when_waiting(holder, url, 2);
	for (int i = 0; i < 2; i++) {
		int status = 0;
		cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
		cr_assert(WIFEXITED(status), "factd migrate %d did not exit normally", i);
		cr_assert_eq(WEXITSTATUS(status), 0, "factd migrate %d exited with %d", i, WEXITSTATUS(status));
	}
	PGconn *c = fd_test_connect(url);
	assert_recorded_once(c);
	cr_assert_eq(fd_migrate_check(c, NULL), FD_OK);
	/* the app's own migration too, once */
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM schema_migrations WHERE scope = 'test'"),
		     (long long)fd_test_app_migrations.n);
	cr_assert_eq(fd_migrate_check(c, &fd_test_app_migrations), FD_OK);
	PQfinish(c);
	free(url);
}

/* ---- an app's migrations ------------------------------------------------------ */

static const struct fd_migration app_items[] = {
	{ .version = 1, .name = "widgets", .sha256 = "1111111111111111111111111111111111111111111111111111111111111111",
	  .sql = "CREATE TABLE widgets (id int PRIMARY KEY)" },
	{ .version = 2, .name = "widget_names", .sha256 = "2222222222222222222222222222222222222222222222222222222222222222",
	  .sql = "ALTER TABLE widgets ADD COLUMN name text" },
};

Test(migrate, an_apps_migrations_have_their_own_sequence_after_the_frameworks)
{
	char *url = fd_test_db_new_empty();
	struct fd_migration_set first = { .scope = "widgets", .items = app_items, .n = 1 };
	int applied = -1;
	cr_assert_eq(fd_migrate_run(url, &first, &applied), FD_OK);
	cr_assert_eq(applied, (int)fd_migrations_count + 1);
	PGconn *c = fd_test_connect(url);
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM schema_migrations WHERE scope = 'factd'"),
		     (long long)fd_migrations_count);
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM schema_migrations WHERE scope = 'widgets' AND version = 1"), 1);
	/* a newer build of the app adds its second migration; the framework's are not run again */
	struct fd_migration_set second = { .scope = "widgets", .items = app_items, .n = 2 };
	cr_assert_eq(fd_migrate_check(c, &second), FD_ERR_NOTFOUND, "the app's second migration is pending");
	cr_assert_eq(fd_migrate_check(c, &first), FD_OK);
	cr_assert_eq(fd_migrate_run(url, &second, &applied), FD_OK);
	cr_assert_eq(applied, 1);
	cr_assert_eq(fd_migrate_check(c, &second), FD_OK);
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'widgets'"), 2);
	/* an edited app migration is refused like a framework one */
	exec_ok(c, "UPDATE schema_migrations SET sha256 = 'x' WHERE scope = 'widgets' AND version = 2");
	cr_assert_eq(fd_migrate_run(url, &second, NULL), FD_ERR_CONFLICT);
	cr_assert_eq(fd_migrate_check(c, &second), FD_ERR_CONFLICT);
	PQfinish(c);
	free(url);
}

Test(migrate, a_table_from_before_scopes_is_upgraded_in_place)
{
	char *url = fd_test_db_new_empty();
	cr_assert_eq(fd_migrate_run(url, NULL, NULL), FD_OK);
	PGconn *c = fd_test_connect(url);
	/* the bookkeeping as factd kept it before apps had migrations of their own */
	exec_ok(c, "ALTER TABLE schema_migrations DROP CONSTRAINT schema_migrations_pkey;"
		   "ALTER TABLE schema_migrations DROP COLUMN scope;"
		   "ALTER TABLE schema_migrations ADD PRIMARY KEY (version)");
	cr_assert_eq(fd_migrate_check(c, NULL), FD_ERR_NOTFOUND, "a table without scopes reads as pending");
	struct fd_migration_set app = { .scope = "widgets", .items = app_items, .n = 1 };
	int applied = -1;
	cr_assert_eq(fd_migrate_run(url, &app, &applied), FD_OK);
	cr_assert_eq(applied, 1, "only the app's migration is new");
	cr_assert_eq(fd_migrate_check(c, &app), FD_OK);
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM schema_migrations WHERE scope = 'factd'"),
		     (long long)fd_migrations_count);
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM pg_index WHERE indrelid = 'schema_migrations'::regclass"
				       " AND indisprimary AND indnatts = 2"),
		     1);
	PQfinish(c);
	free(url);
}
