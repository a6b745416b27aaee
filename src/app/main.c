/*
 * main.c - fd_main: an app's whole process.  Read the configuration, answer
 * --help and --version, migrate, start the runtime, serve until SIGTERM or
 * SIGINT, then stop gracefully.
 *
 * Threading: the main thread waits for a signal with sigwait; the signals are
 * blocked before any other thread starts, so only the main thread sees them.
 */
#include "factd/app.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/config.h"
#include "factd/log.h"
#include "factd/migrate.h"
#include "factd/runtime.h"
#include "app/healthcheck.h"
#include "store/lifecycle.h"

#ifndef FACTD_VERSION
#define FACTD_VERSION "unknown"
#endif

#define SHUTDOWN_GRACE_MS 10000

static const char *app_version(const struct fd_app *app)
{
	return app->version ? app->version : FACTD_VERSION;
}

static int serve(const struct fd_config *cfg, const struct fd_app *app)
{
	struct fd_runtime rt;
	char errbuf[512] = "";
	char *redacted = fd_config_redact_url(cfg->database_url);
	struct fd_runtime_options opts = { .version = app_version(app) };

	enum fd_err err = fd_runtime_start(&rt, cfg, app, &opts, errbuf, sizeof errbuf);
	if (err) {
		fd_log(FD_LOG_ERROR, "%s", errbuf[0] ? errbuf : fd_err_name(err));
		free(redacted);
		return err == FD_ERR_INVAL ? 2 : 1;
	}
	fd_log_fields(FD_LOG_INFO, "listening",
		      json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:s, s:b, s:i}", "app", app->name, "version",
				app_version(app), "host", cfg->listen_host, "port", (int)rt.port, "workers",
				(int)cfg->workers, "pool_size", (int)cfg->pool_size, "database", redacted ? redacted : "",
				"tls", cfg->tls_cert != NULL, "api_keys", (int)cfg->api_keys.n));
	if (!cfg->api_keys.n && fd_config_host_is_loopback(cfg->listen_host))
		fd_log(FD_LOG_WARN, "no API keys configured: serving without authentication, on loopback (%s) only; "
				    "set FACTD_API_KEYS to listen elsewhere",
		       cfg->listen_host);
	else if (!cfg->api_keys.n)
		fd_log(FD_LOG_WARN, "no API keys configured and FACTD_ALLOW_INSECURE=1: anyone who reaches %s:%d can "
				    "read and write every event",
		       cfg->listen_host, (int)rt.port);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	int sig = 0;
	sigwait(&set, &sig);
	fd_log(FD_LOG_INFO, "received %s, stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	fd_runtime_stop(&rt, SHUTDOWN_GRACE_MS);
	free(redacted);
	fd_log(FD_LOG_INFO, "stopped");
	return 0;
}

static int migrate(const struct fd_config *cfg, const struct fd_app *app)
{
	int applied = 0;
	bool pooled = false;
	const char *session = NULL;
	fd_runtime_connections(cfg, &pooled, &session);
	if (!session) {
		fd_log(FD_LOG_ERROR, "FACTD_DATABASE_URL goes through a transaction pooler, which gives no session: "
				     "migrations hold a session advisory lock. set FACTD_SESSION_DATABASE_URL to a direct "
				     "connection to PostgreSQL, or run with --no-migrate and migrate elsewhere");
		return 1;
	}
	enum fd_err err = fd_migrate_run(session, app->migrations, &applied);
	if (err) {
		fd_log(FD_LOG_ERROR, "migrations failed: %s", fd_err_name(err));
		return 1;
	}
	fd_log(FD_LOG_INFO, "migrations applied: %d", applied);
	return 0;
}

/*
 * Exit codes follow Docker's HEALTHCHECK: 0 ready, 1 not (2 is reserved
 * there, so a configuration error is 1 too).  One line either way, on stdout
 * when ready and on stderr when not.
 */
static int healthcheck(const struct fd_config *cfg, const char *prog)
{
	char msg[512] = "";
	enum fd_err err = fd_healthcheck(cfg, msg, sizeof msg);
	if (err) {
		fprintf(stderr, "%s healthcheck: %s\n", prog, msg[0] ? msg : fd_err_name(err));
		return 1;
	}
	printf("%s healthcheck: %s\n", prog, msg);
	return 0;
}

static bool has_arg(int argc, char **argv, const char *arg)
{
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], arg) == 0)
			return true;
	return false;
}

/* `archive-restore FILE`: load a retention archive back into the (migrated) database. */
static int archive_restore(const struct fd_config *cfg)
{
	PGconn *conn = PQconnectdb(cfg->database_url);
	if (PQstatus(conn) != CONNECTION_OK) {
		fd_log(FD_LOG_ERROR, "cannot connect to the database: %s", PQerrorMessage(conn));
		PQfinish(conn);
		return 1;
	}
	char errbuf[512] = "";
	size_t restored = 0, skipped = 0;
	enum fd_err err = fd_archive_restore(conn, cfg->restore_file, &restored, &skipped, errbuf, sizeof errbuf);
	PQfinish(conn);
	if (err) {
		fd_log_fields(FD_LOG_ERROR, "archive restore failed",
			      json_pack("{s:s, s:s, s:I, s:I}", "file", cfg->restore_file, "error",
					errbuf[0] ? errbuf : fd_err_name(err), "restored", (json_int_t)restored,
					"skipped", (json_int_t)skipped));
		return err == FD_ERR_INVAL || err == FD_ERR_IO ? 2 : 1;
	}
	fd_log_fields(FD_LOG_INFO, "archive restored",
		      json_pack("{s:s, s:I, s:I}", "file", cfg->restore_file, "restored", (json_int_t)restored,
				"already_stored", (json_int_t)skipped));
	return 0;
}

static void usage(const char *prog, const struct fd_app *app)
{
	printf("usage: %s [serve|migrate|healthcheck|archive-restore FILE] [--no-migrate] [--live] [--help] [--version]\n\n", prog);
	fputs(fd_config_usage(), stdout);
	if (app->services && app->services->usage)
		printf("\nthe %s app:\n%s", app->name, app->services->usage);
}

int fd_main(int argc, char **argv, const struct fd_app *app)
{
	struct fd_config cfg;
	char errbuf[512] = "";
	int rc = 1;
	const char *prog = argc > 0 && argv[0] ? strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0] : "factd";

	if (!app || !app->name || strcmp(app->name, FD_MIGRATE_SCOPE) == 0 ||
	    (app->migrations && strcmp(app->migrations->scope, app->name) != 0)) {
		fprintf(stderr, "%s: the app needs a name other than \"%s\", and its migrations that name as scope\n",
			prog, FD_MIGRATE_SCOPE);
		return 2;
	}
	/* Block the stop signals before any thread exists; main waits for them.
	 * A shell may start us with SIGINT ignored; restore the default so it pends. */
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	enum fd_err err = fd_config_load(&cfg, argc, argv, errbuf, sizeof errbuf);
	if (err == FD_OK && cfg.command == FD_CMD_HELP) {
		usage(prog, app);
		rc = 0;
		goto done;
	}
	if (err == FD_OK && cfg.command == FD_CMD_VERSION) {
		if (app->version)
			printf("%s %s (factd %s)\n", prog, app->version, FACTD_VERSION);
		else
			printf("%s %s\n", prog, FACTD_VERSION);
		rc = 0;
		goto done;
	}
	if (err) {
		fprintf(stderr, "%s: %s\n", prog, err == FD_ERR_INVAL ? errbuf : fd_err_name(err));
		rc = has_arg(argc, argv, "healthcheck") ? 1 : 2;
		goto done;
	}
	if (cfg.command == FD_CMD_HEALTHCHECK) {
		rc = healthcheck(&cfg, prog);
		goto done;
	}
	fd_log_set_level((enum fd_log_level)cfg.log_level);
	if (cfg.command == FD_CMD_MIGRATE) {
		rc = migrate(&cfg, app);
		goto done;
	}
	if (cfg.command == FD_CMD_ARCHIVE_RESTORE) {
		rc = migrate(&cfg, app) == 0 ? archive_restore(&cfg) : 1;
		goto done;
	}
	if (cfg.migrate_on_start && migrate(&cfg, app) != 0)
		goto done;
	rc = serve(&cfg, app);
done:
	fd_config_release(&cfg);
	return rc;
}
