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
	if ((err = fd_pool_new(cfg->database_url, cfg->pool_size, cfg->pool_timeout_ms, &ctx->pool))) {
		snprintf(errbuf, errlen, "cannot create the connection pool");
		goto fail;
	}
	fd_pool_set_metrics(ctx->pool, ctx->metrics);
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
		struct fd_projector_config pc = { .projections = &ctx->projections, .conninfo = cfg->database_url,
						  .metrics = ctx->metrics, .schemas = &ctx->schemas,
						  .idle_ms = opts ? opts->projection_idle_ms : 0 };
		if ((err = fd_projector_start(&pc, &rt->projector))) {
			snprintf(errbuf, errlen, "cannot start the projector");
			goto fail;
		}
	}
	if (cfg->sse_notify) {
		if ((err = fd_notifier_start(cfg->database_url, &rt->notifier))) {
			snprintf(errbuf, errlen, "cannot start the event notifier");
			goto fail;
		}
		ctx->notifier = rt->notifier;
		fd_pool_set_notifier(ctx->pool, rt->notifier);
	}
	if (cfg->sagas && app->nsagas) {
		struct fd_saga_config sc = { .types = &ctx->sagas, .conninfo = cfg->database_url, .bus = ctx->bus,
					     .services = ctx->services, .notifier = rt->notifier, .metrics = ctx->metrics,
					     .schemas = &ctx->schemas, .workers = cfg->saga_workers, .intake = true, .poll_ms = cfg->saga_poll_ms,
					     .lease_ms = cfg->saga_lease_ms, .time_pct = cfg->saga_time_pct };
		if ((err = fd_saga_engine_start(&sc, &rt->sagas))) {
			snprintf(errbuf, errlen, "cannot start the saga engine");
			goto fail;
		}
	}
	if (cfg->webhooks) {
		struct fd_webhooks_config wc = { .conninfo = cfg->database_url, .allow_private = cfg->webhook_allow_private,
						 .poll_ms = cfg->webhook_poll_ms, .backoff_ms = cfg->webhook_backoff_ms,
						 .notifier = rt->notifier };
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
	fd_pool_free(ctx->pool);
	ctx->pool = NULL;
	fd_metrics_free(ctx->metrics);
	ctx->metrics = NULL;
	if (ctx->services && ctx->app && ctx->app->services && ctx->app->services->stop)
		ctx->app->services->stop(ctx->services);
	ctx->services = NULL;
	fd_ctx_release(ctx);
}
