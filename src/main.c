/*
 * main.c - read the configuration, migrate, build the application context,
 * serve until SIGTERM/SIGINT, then stop gracefully.
 *
 * Threading: the main thread waits for a signal with sigwait; the signals are
 * blocked before any other thread starts, so only the main thread sees them.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/bus.h"
#include "factd/config.h"
#include "factd/domain.h"
#include "factd/events.h"
#include "factd/http.h"
#include "factd/log.h"
#include "factd/metrics.h"
#include "factd/migrate.h"
#include "factd/notify.h"
#include "factd/pool.h"
#include "factd/proj.h"
#include "factd/saga.h"

#define SHUTDOWN_GRACE_MS 10000

static int serve(const struct fd_config *cfg)
{
	struct fd_pool *pool = NULL;
	struct fd_server *srv = NULL;
	struct fd_bus *bus = NULL;
	struct fd_projector *projector = NULL;
	struct fd_notifier *notifier = NULL;
	struct fd_saga_engine *sagas = NULL;
	struct fd_metrics *metrics = NULL;
	int rc = 1;
	char *redacted = fd_config_redact_url(cfg->database_url);

	if (fd_http_metrics_new(FACTD_VERSION, &metrics) != FD_OK) {
		fd_log(FD_LOG_ERROR, "cannot create the metrics registry");
		goto done;
	}
	if (fd_pool_new(cfg->database_url, cfg->pool_size, cfg->pool_timeout_ms, &pool) != FD_OK) {
		fd_log(FD_LOG_ERROR, "cannot create the connection pool");
		goto done;
	}
	fd_pool_set_metrics(pool, metrics);
	fd_pool_set_append_batches(pool, cfg->append_batches);
	enum fd_err err = fd_store_check_feed_horizon(pool);
	if (err == FD_ERR_CONFLICT) {
		fd_log(FD_LOG_ERROR, "stored events carry transaction ids ahead of this cluster (was it restored from "
				     "a logical dump?); the feed would skip new events. see docs/design.md, the gap-safe global feed, what it costs (c)");
		goto done;
	}
	if (err) /* the database may come up later; /readyz tells */
		fd_log(FD_LOG_WARN, "cannot check the event feed's horizon: %s", fd_err_name(err));
	struct fd_bus_config bus_cfg = { .max_retries = cfg->command_retries, .snapshot_every = cfg->snapshot_every,
					 .metrics = metrics, .cache_entries = cfg->aggregate_cache };
	if (fd_bus_new(pool, &bus_cfg, &bus) != FD_OK) {
		fd_log(FD_LOG_ERROR, "cannot start the command bus");
		goto done;
	}
	struct fd_gateway_sim gateway;
	fd_gateway_sim_init(&gateway, cfg->payment_limit_cents, cfg->payment_fail_first, cfg->payment_never_answer);
	struct fd_app app = { .cfg = cfg, .pool = pool, .bus = bus, .gateway = &gateway.base, .metrics = metrics };
	if (cfg->projections) {
		struct fd_projector_config pc = { .conninfo = cfg->database_url, .metrics = metrics };
		if (fd_projector_start(&pc, &projector) != FD_OK) {
			fd_log(FD_LOG_ERROR, "cannot start the projector");
			goto done;
		}
	}
	if (cfg->sse_notify && fd_notifier_start(cfg->database_url, &notifier) != FD_OK) {
		fd_log(FD_LOG_ERROR, "cannot start the event notifier");
		goto done;
	}
	app.notifier = notifier;
	fd_pool_set_notifier(pool, notifier);
	if (cfg->sagas) {
		struct fd_saga_config sc = { .conninfo = cfg->database_url, .bus = bus, .gateway = &gateway.base,
					     .notifier = notifier, .metrics = metrics, .workers = cfg->saga_workers,
					     .intake = true, .poll_ms = cfg->saga_poll_ms, .lease_ms = cfg->saga_lease_ms,
					     .time_pct = cfg->saga_time_pct };
		if (fd_saga_engine_start(&sc, &sagas) != FD_OK) {
			fd_log(FD_LOG_ERROR, "cannot start the saga engine");
			goto done;
		}
	}
	if (fd_server_start(&app, &srv) != FD_OK)
		goto done;
	fd_log_fields(FD_LOG_INFO, "listening",
		      json_pack("{s:s, s:i, s:i, s:i, s:s, s:b, s:i}", "host", cfg->listen_host, "port",
				(int)fd_server_port(srv), "workers", (int)cfg->workers, "pool_size", (int)cfg->pool_size,
				"database", redacted ? redacted : "", "tls", cfg->tls_cert != NULL, "api_keys",
				(int)cfg->api_keys.n));
	if (!cfg->api_keys.n && fd_config_host_is_loopback(cfg->listen_host))
		fd_log(FD_LOG_WARN, "no API keys configured: serving without authentication, on loopback (%s) only; "
				    "set FACTD_API_KEYS to listen elsewhere",
		       cfg->listen_host);
	else if (!cfg->api_keys.n)
		fd_log(FD_LOG_WARN, "no API keys configured and FACTD_ALLOW_INSECURE=1: anyone who reaches %s:%d can "
				    "read and write every event",
		       cfg->listen_host, (int)fd_server_port(srv));
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	int sig = 0;
	sigwait(&set, &sig);
	fd_log(FD_LOG_INFO, "received %s, stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	fd_server_stop(srv, SHUTDOWN_GRACE_MS);
	srv = NULL;
	rc = 0;
done:
	fd_server_stop(srv, 0);
	fd_saga_engine_stop(sagas);
	fd_notifier_stop(notifier);
	fd_projector_stop(projector);
	fd_bus_free(bus);
	fd_pool_free(pool);
	fd_metrics_free(metrics);
	free(redacted);
	if (rc == 0)
		fd_log(FD_LOG_INFO, "stopped");
	return rc;
}

static int migrate(const struct fd_config *cfg)
{
	int applied = 0;
	enum fd_err err = fd_migrate_run(cfg->database_url, &applied);
	if (err) {
		fd_log(FD_LOG_ERROR, "migrations failed: %s", fd_err_name(err));
		return 1;
	}
	fd_log(FD_LOG_INFO, "migrations applied: %d", applied);
	return 0;
}

int main(int argc, char **argv)
{
	struct fd_config cfg;
	char errbuf[512] = "";
	int rc = 1;

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
		fputs(fd_config_usage(), stdout);
		rc = 0;
		goto done;
	}
	if (err == FD_OK && cfg.command == FD_CMD_VERSION) {
		puts("factd " FACTD_VERSION);
		rc = 0;
		goto done;
	}
	if (err) {
		fprintf(stderr, "factd: %s\n", err == FD_ERR_INVAL ? errbuf : fd_err_name(err));
		rc = 2;
		goto done;
	}
	fd_log_set_level((enum fd_log_level)cfg.log_level);
	if (cfg.command == FD_CMD_MIGRATE) {
		rc = migrate(&cfg);
		goto done;
	}
	if (cfg.migrate_on_start && migrate(&cfg) != 0)
		goto done;
	rc = serve(&cfg);
done:
	fd_config_release(&cfg);
	return rc;
}
