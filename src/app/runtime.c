/*
 * runtime.c - start and stop everything one process runs for an app.
 *
 * Threading: called from one thread; the parts it starts run their own.
 */
#include "factd/runtime.h"

#include <stdio.h>
#include <string.h>

#include "factd/events.h"
#include "factd/log.h"
#include "factd/metrics.h"
#include "factd/pool.h"
#include "store/replicas.h"

void fd_runtime_connections(const struct fd_config *cfg, bool *pooled, const char **session)
{
	*pooled = cfg->pooler == FD_POOLER_TRANSACTION;
	if (cfg->pooler == FD_POOLER_AUTO) {
		enum fd_err err = fd_pooler_probe(cfg->database_url, pooled);
		if (err)
			fd_log(FD_LOG_WARN, "cannot tell whether FACTD_DATABASE_URL goes through a transaction pooler "
					    "(%s); assuming not: set FACTD_POOLER to say",
			       fd_err_name(err));
		else if (*pooled)
			fd_log(FD_LOG_INFO, "FACTD_DATABASE_URL goes through a transaction pooler: statements run unnamed");
	}
	*session = cfg->session_database_url ? cfg->session_database_url : *pooled ? NULL : cfg->database_url;
}
#include "app/retention.h"
#include "store/personal.h"
#include "push/webhook.h"

enum fd_err fd_runtime_start(struct fd_runtime *rt, const struct fd_config *cfg, const struct fd_app *app,
			     const struct fd_runtime_options *opts, char *errbuf, size_t errlen)
{
	struct fd_ctx *ctx = &rt->ctx;
	enum fd_err err;

	memset(rt, 0, sizeof *rt);
	ctx->cfg = cfg;
	if ((err = fd_ctx_init(ctx, app))) {
		snprintf(errbuf, errlen, "out of memory");
		goto fail;
	}
	if (app->services && app->services->start &&
	    (err = app->services->start(cfg, &ctx->services, errbuf, errlen))) {
		if (err != FD_ERR_INVAL)
			snprintf(errbuf, errlen, "cannot start the %s app's services: %s", app->name, fd_err_name(err));
		goto fail;
	}
	ctx->schemas.services = ctx->services;
	for (size_t i = 0; i < app->naggregates; i++)
		if ((err = fd_event_schema_check(&app->aggregates[i]->events, app->aggregates[i]->name, errbuf, errlen)))
			goto fail;
	if ((err = fd_http_metrics_new(ctx, opts && opts->version ? opts->version : "unknown", &ctx->metrics))) {
		snprintf(errbuf, errlen, "cannot create the metrics registry");
		goto fail;
	}
	const char *session = NULL;
	fd_runtime_connections(cfg, &rt->pooled, &session);
	if (!session) {
		const char *what = cfg->projections && app->nprojections ? "projections (advisory-lock leases)"
				   : cfg->sagas && app->nsagas	       ? "sagas (the intake's advisory lock)"
				   : cfg->sse_notify		       ? "live streams (LISTEN)"
				   : cfg->retention		       ? "the retention job (an advisory lock)"
				   : cfg->webhooks		       ? "webhook delivery (advisory-lock leases)"
								       : NULL;
		if (what) {
			snprintf(errbuf, errlen,
				 "FACTD_DATABASE_URL goes through a transaction pooler (%s), which gives no session: %s would "
				 "not be safe over it. set FACTD_SESSION_DATABASE_URL to a direct connection to PostgreSQL, or "
				 "turn that work off in this process (FACTD_PROJECTIONS=0 FACTD_SAGAS=0 FACTD_SSE_NOTIFY=0 "
				 "FACTD_RETENTION=0 FACTD_WEBHOOKS=0)",
				 cfg->pooler == FD_POOLER_TRANSACTION ? "FACTD_POOLER=transaction" : "detected", what);
			err = FD_ERR_INVAL;
			goto fail;
		}
	}
	if ((err = fd_pool_new(cfg->database_url, cfg->pool_size, cfg->pool_timeout_ms, &ctx->pool))) {
		snprintf(errbuf, errlen, "cannot create the connection pool");
		goto fail;
	}
	if (rt->pooled)
		fd_pool_set_flags(ctx->pool, FD_POOL_UNNAMED);
	if (cfg->read_database_urls) {
		struct fd_replicas_config rc = { .urls = cfg->read_database_urls, .primary_url = cfg->database_url,
						 .pool_size = cfg->read_pool_size, .pool_timeout_ms = cfg->pool_timeout_ms,
						 .probe_ms = cfg->replica_probe_ms, .max_lag_ms = cfg->replica_max_lag_ms,
						 .wait_ms = cfg->replica_wait_ms };
		if ((err = fd_replicas_start(&rc, &rt->replicas))) {
			snprintf(errbuf, errlen, err == FD_ERR_INVAL ? "FACTD_READ_DATABASE_URL lists no usable URL (at most 16)"
								     : "cannot start the read replicas");
			goto fail;
		}
		ctx->replicas = rt->replicas;
	}
	fd_pool_set_metrics(ctx->pool, ctx->metrics);
	if (cfg->master_key_file) {
		if ((err = fd_keyring_load(cfg->master_key_file, &rt->keyring, errbuf, errlen)))
			goto fail;
		fd_pool_set_keyring(ctx->pool, rt->keyring);
		ctx->schemas.keyring = rt->keyring;
		err = fd_keyring_check(ctx->pool, rt->keyring);
		if (err == FD_ERR_CONFLICT) {
			snprintf(errbuf, errlen, "FACTD_MASTER_KEY_FILE holds another master key than the one this "
						 "database's personal data was sealed under; nothing would open with it");
			goto fail;
		}
		if (err) /* checked again before a subject key is made; every key read is authenticated anyway */
			fd_log(FD_LOG_WARN, "cannot check the master key against the database yet: %s", fd_err_name(err));
		err = FD_OK;
	}
	fd_pool_set_append_batches(ctx->pool, cfg->append_batches);
	err = fd_store_check_feed_horizon(ctx->pool);
	if (err == FD_ERR_CONFLICT) {
		snprintf(errbuf, errlen, "stored events carry transaction ids ahead of this cluster (was it restored from "
					 "a logical dump?); the feed would skip new events. see docs/design.md, the "
					 "gap-safe global feed, what it costs (c)");
		goto fail;
	}
	if (err) /* the database may come up later; /readyz tells */
		fd_log(FD_LOG_WARN, "cannot check the event feed's horizon: %s", fd_err_name(err));
	struct fd_bus_config bus_cfg = { .max_retries = cfg->command_retries, .snapshot_every = cfg->snapshot_every,
					 .metrics = ctx->metrics, .cache_entries = cfg->aggregate_cache,
					 .services = ctx->services };
	if ((err = fd_bus_new(ctx->pool, &bus_cfg, &ctx->bus))) {
		snprintf(errbuf, errlen, "cannot start the command bus");
		goto fail;
	}
	if (cfg->projections && app->nprojections) {
		struct fd_projector_config pc = { .projections = &ctx->projections, .conninfo = session,
						  .metrics = ctx->metrics, .schemas = &ctx->schemas,
						  .idle_ms = opts ? opts->projection_idle_ms : 0 };
		if ((err = fd_projector_start(&pc, &rt->projector))) {
			snprintf(errbuf, errlen, "cannot start the projector");
			goto fail;
		}
	}
	if (cfg->sse_notify) {
		if ((err = fd_notifier_start(session, &rt->notifier))) {
			snprintf(errbuf, errlen, "cannot start the event notifier");
			goto fail;
		}
		ctx->notifier = rt->notifier;
		fd_pool_set_notifier(ctx->pool, rt->notifier);
	}
	if (cfg->sagas && app->nsagas) {
		struct fd_saga_config sc = { .types = &ctx->sagas, .conninfo = session, .bus = ctx->bus,
					     .services = ctx->services, .notifier = rt->notifier, .metrics = ctx->metrics,
					     .schemas = &ctx->schemas, .pool = ctx->pool, .workers = cfg->saga_workers, .intake = true, .poll_ms = cfg->saga_poll_ms,
					     .lease_ms = cfg->saga_lease_ms, .time_pct = cfg->saga_time_pct };
		if ((err = fd_saga_engine_start(&sc, &rt->sagas))) {
			snprintf(errbuf, errlen, "cannot start the saga engine");
			goto fail;
		}
	}
	if (cfg->retention && (err = fd_retention_start(cfg, app, ctx->bus, ctx->metrics, &rt->retention))) {
		snprintf(errbuf, errlen, "cannot start the retention job");
		goto fail;
	}
	if (cfg->webhooks) {
		struct fd_webhooks_config wc = { .conninfo = session, .allow_private = cfg->webhook_allow_private,
						 .poll_ms = cfg->webhook_poll_ms, .backoff_ms = cfg->webhook_backoff_ms,
						 .notifier = rt->notifier, .pool = ctx->pool };
		if ((err = fd_webhooks_start(&wc, &rt->webhooks))) {
			snprintf(errbuf, errlen, "cannot start the webhook dispatcher");
			goto fail;
		}
	}
	if ((err = fd_server_start(ctx, &rt->srv))) {
		snprintf(errbuf, errlen, "cannot start the HTTP server on %s:%u", cfg->listen_host, cfg->port);
		goto fail;
	}
	rt->port = fd_server_port(rt->srv);
	return FD_OK;
fail:
	fd_runtime_stop(rt, 0);
	return err;
}

void fd_runtime_stop(struct fd_runtime *rt, unsigned grace_ms)
{
	struct fd_ctx *ctx = &rt->ctx;
	fd_server_stop(rt->srv, grace_ms);
	rt->srv = NULL;
	fd_retention_stop(rt->retention);
	rt->retention = NULL;
	fd_webhooks_stop(rt->webhooks);
	rt->webhooks = NULL;
	fd_saga_engine_stop(rt->sagas);
	rt->sagas = NULL;
	fd_notifier_stop(rt->notifier);
	rt->notifier = ctx->notifier = NULL;
	fd_projector_stop(rt->projector);
	rt->projector = NULL;
	fd_bus_free(ctx->bus);
	ctx->bus = NULL;
	fd_replicas_stop(rt->replicas);
	rt->replicas = ctx->replicas = NULL;
	fd_pool_free(ctx->pool);
	ctx->pool = NULL;
	ctx->schemas.keyring = NULL;
	fd_keyring_free(rt->keyring);
	rt->keyring = NULL;
	fd_metrics_free(ctx->metrics);
	ctx->metrics = NULL;
	if (ctx->services && ctx->app && ctx->app->services && ctx->app->services->stop)
		ctx->app->services->stop(ctx->services);
	ctx->services = NULL;
	fd_ctx_release(ctx);
}
