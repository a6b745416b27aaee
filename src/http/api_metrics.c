/*
 * api_metrics.c - GET /metrics, and the registry labelled for this server.
 *
 * The counters live in the app's registry and are written by the server,
 * the store and the command bus as they work; the pool gauges are read here
 * at scrape time.  Thread-safe: rendering only reads atomic counters and the
 * pool's stats.
 */
#include "http/api.h"

#include <string.h>

#include <stdlib.h>

#include "factd/app.h"
#include "factd/metrics.h"
#include "http/problem.h"
#include "factd/proj.h"
#include "factd/saga.h"
#include "factd/router.h"
#include "store/replicas.h"

/* Every aggregate type of the app has a label of its own (a type from elsewhere counts as "other"). */
enum fd_err fd_http_metrics_new(const struct fd_ctx *ctx, const char *version, struct fd_metrics **out)
{
	const struct fd_app *app = ctx->app;
	const char **routes = malloc((ctx->nroutes + 1) * sizeof *routes);
	const char **aggregates = malloc((app->naggregates + 1) * sizeof *aggregates);
	enum fd_err err = FD_OK;

	*out = NULL;
	if (!routes || !aggregates) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	for (size_t i = 0; i < ctx->nroutes; i++)
		routes[i] = ctx->routes[i].pattern;
	for (size_t i = 0; i < app->naggregates; i++)
		aggregates[i] = app->aggregates[i]->name;
	struct fd_metrics_config cfg = { .version = version, .routes = routes, .nroutes = ctx->nroutes,
					 .aggregates = aggregates, .naggregates = app->naggregates };
	err = fd_metrics_new(&cfg, out);
done:
	free(routes);
	free(aggregates);
	return err;
}

/*
 * Projection lag, read from the database at scrape time (it is shared by every
 * process, whichever runs the projection).  Left out when the database cannot
 * be asked: the process metrics are still worth serving.
 */
static void append_projection_gauges(struct fd_pool *pool, const struct fd_projection_set *projections,
				     struct fd_buf *out)
{
	json_t *st = NULL;
	if (fd_projection_status(pool, projections, &st) != FD_OK)
		return;
	static const struct {
		const char *name, *help, *field;
	} gauges[] = {
		{ "factd_projection_lag_events", "Events in the feed a projection has not applied yet.", "lag_events" },
		{ "factd_projection_lag_seconds", "Age in seconds of the oldest event a projection has not applied yet.",
		  "lag_seconds" },
	};
	enum fd_err err = FD_OK;
	for (size_t g = 0; g < sizeof gauges / sizeof gauges[0] && !err; g++) {
		err = fd_buf_appendf(out, "# HELP %s %s\n# TYPE %s gauge\n", gauges[g].name, gauges[g].help, gauges[g].name);
		size_t i;
		json_t *p;
		json_array_foreach(st, i, p) {
			if (!err)
				err = fd_buf_appendf(out, "%s{projection=\"%s\"} %.6g\n", gauges[g].name,
						     json_string_value(json_object_get(p, "name")),
						     json_number_value(json_object_get(p, gauges[g].field)));
		}
	}
	if (!err)
		err = fd_buf_appendf(out, "# HELP factd_projection_running 1 when some factd process runs the projection.\n"
					  "# TYPE factd_projection_running gauge\n");
	size_t i;
	json_t *p;
	json_array_foreach(st, i, p) {
		if (!err)
			err = fd_buf_appendf(out, "factd_projection_running{projection=\"%s\"} %d\n",
					     json_string_value(json_object_get(p, "name")),
					     strcmp(json_string_value(json_object_get(p, "status")), "stopped") != 0);
	}
	json_decref(st);
}

/* Saga gauges, read from the database at scrape time like the projections'. */
static void append_saga_gauges(struct fd_pool *pool, const struct fd_saga_set *sagas, struct fd_buf *out)
{
	json_t *st = NULL;
	if (fd_saga_stats(pool, sagas, &st) != FD_OK)
		return;
	enum fd_err err = fd_buf_appendf(out, "# HELP factd_sagas Sagas that are running, compensating or failed.\n"
					      "# TYPE factd_sagas gauge\n");
	size_t i;
	json_t *r;
	json_array_foreach(json_object_get(st, "live"), i, r) {
		if (!err)
			err = fd_buf_appendf(out, "factd_sagas{type=\"%s\",status=\"%s\"} %lld\n",
					     json_string_value(json_object_get(r, "type")),
					     json_string_value(json_object_get(r, "status")),
					     (long long)json_integer_value(json_object_get(r, "count")));
	}
	if (!err)
		err = fd_buf_appendf(out,
			       "# HELP factd_saga_overdue Sagas whose step or timer has been due for over a second.\n"
			       "# TYPE factd_saga_overdue gauge\nfactd_saga_overdue %lld\n",
			       (long long)json_integer_value(json_object_get(st, "overdue")));
	(void)err; /* a partial body is still valid exposition text */
	json_decref(st);
}

/* The read replicas: reads by target, each replica's state and lag, fallbacks to the primary by reason. */
static void append_replica_metrics(struct fd_replicas *r, struct fd_buf *out)
{
	unsigned n = fd_replicas_count(r);
	if (!n)
		return;
	struct fd_replica_state st[16];
	for (unsigned i = 0; i < n && i < 16; i++)
		fd_replicas_state(r, i, &st[i]);
	enum fd_err err = fd_buf_appendf(out, "# HELP factd_read_requests_total Reads routed between the primary and the read replicas, by the database that served them.\n"
					      "# TYPE factd_read_requests_total counter\n"
					      "factd_read_requests_total{target=\"primary\",replica=\"\"} %llu\n",
					 (unsigned long long)fd_replicas_primary_reads(r));
	for (unsigned i = 0; !err && i < n && i < 16; i++)
		err = fd_buf_appendf(out, "factd_read_requests_total{target=\"replica\",replica=\"%u\"} %llu\n", i,
				     (unsigned long long)st[i].reads);
	if (!err)
		err = fd_buf_appendf(out, "# HELP factd_replica_up 1 while a read replica is usable (up, a standby, within FACTD_REPLICA_MAX_LAG_MS).\n"
					  "# TYPE factd_replica_up gauge\n");
	for (unsigned i = 0; !err && i < n && i < 16; i++)
		err = fd_buf_appendf(out, "factd_replica_up{replica=\"%u\"} %d\n", i, st[i].usable ? 1 : 0);
	if (!err)
		err = fd_buf_appendf(out, "# HELP factd_replica_lag_seconds How long ago the primary had WAL a replica has not replayed yet.\n"
					  "# TYPE factd_replica_lag_seconds gauge\n");
	for (unsigned i = 0; !err && i < n && i < 16; i++)
		if (st[i].up && st[i].lag_known)
			err = fd_buf_appendf(out, "factd_replica_lag_seconds{replica=\"%u\"} %.3f\n", i, (double)st[i].lag_ms / 1000.0);
	if (!err)
		err = fd_buf_appendf(out, "# HELP factd_replica_fallbacks_total Reads the primary served although replicas are configured, by reason.\n"
					  "# TYPE factd_replica_fallbacks_total counter\n");
	for (int k = 0; !err && k < FD_FALLBACK_COUNT; k++)
		err = fd_buf_appendf(out, "factd_replica_fallbacks_total{reason=\"%s\"} %llu\n", fd_replica_fallback_names[k],
				     (unsigned long long)fd_replicas_fallbacks(r, (enum fd_replica_fallback)k));
	(void)err; /* a partial body is still valid exposition text */
}

void fd_api_metrics(struct fd_req *req, struct fd_resp *resp)
{
	struct fd_buf out = FD_BUF_INIT;
	struct fd_metrics_pool pool = { 0 };

	if (!req->ctx->metrics) {
		fd_problem(resp, req, 404, "not-found", "Not found", "this server keeps no metrics", NULL);
		return;
	}
	if (req->ctx->pool) {
		struct fd_pool_stats s;
		fd_pool_stats(req->ctx->pool, &s);
		pool = (struct fd_metrics_pool){ .size = s.size, .open = s.open, .in_use = s.in_use, .waiting = s.waiting,
						 .append_queue = s.append_queue };
	}
	enum fd_err err = fd_metrics_render(req->ctx->metrics, req->ctx->pool ? &pool : NULL, &out);
	if (!err && req->ctx->pool) {
		append_projection_gauges(req->ctx->pool, &req->ctx->projections, &out);
		append_saga_gauges(req->ctx->pool, &req->ctx->sagas, &out);
		fd_api_integ_metrics(req->ctx->pool, &out);
	}
	if (!err)
		append_replica_metrics(req->ctx->replicas, &out);
	size_t len = out.len;
	char *body = err ? NULL : fd_buf_detach(&out);
	fd_buf_release(&out);
	if (!body) {
		fd_problem_err(resp, req, err ? err : FD_ERR_NOMEM, NULL, NULL);
		return;
	}
	resp->status = 200;
	resp->body = body;
	resp->body_len = len;
	resp->content_type = FD_METRICS_CONTENT_TYPE;
}
