/* test_server.c - in-process factd server for HTTP tests. */
#include "test_server.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/log.h"
#include "factd/metrics.h"
#include "factd/problem.h"
#include "http_client.h"
#include "testdb.h"

void fd_test_server_start_with(struct fd_test_server *ts, const char *db_url, void (*tweak)(struct fd_config *))
{
	memset(ts, 0, sizeof *ts);
	cr_assert_eq(fd_config_defaults(&ts->cfg), FD_OK);
	fd_log_set_level(FD_LOG_WARN);
	ts->db_url = db_url ? strdup(db_url) : fd_test_db_new();
	ts->cfg.database_url = strdup(ts->db_url);
	ts->cfg.port = 0;
	ts->cfg.workers = 4;
	ts->cfg.pool_size = 4;
	ts->cfg.pool_timeout_ms = 2000;
	ts->cfg.sagas = 0; /* sagas would change orders behind a test's back; saga tests switch them on */
	if (tweak)
		tweak(&ts->cfg);
	cr_assert_eq(fd_http_metrics_new(FACTD_VERSION, &ts->metrics), FD_OK);
	cr_assert_eq(fd_pool_new(ts->cfg.database_url, ts->cfg.pool_size, ts->cfg.pool_timeout_ms, &ts->pool), FD_OK);
	fd_pool_set_metrics(ts->pool, ts->metrics);
	struct fd_bus_config bus_cfg = { .max_retries = ts->cfg.command_retries,
					 .snapshot_every = ts->cfg.snapshot_every, .metrics = ts->metrics,
					 .cache_entries = ts->cfg.aggregate_cache };
	cr_assert_eq(fd_bus_new(ts->pool, &bus_cfg, &ts->bus), FD_OK);
	fd_gateway_sim_init(&ts->gateway, ts->cfg.payment_limit_cents, ts->cfg.payment_fail_first,
			    ts->cfg.payment_never_answer);
	ts->app.cfg = &ts->cfg;
	ts->app.pool = ts->pool;
	ts->app.bus = ts->bus;
	ts->app.gateway = &ts->gateway.base;
	ts->app.metrics = ts->metrics;
	if (ts->cfg.projections) {
		struct fd_projector_config pc = { .conninfo = ts->cfg.database_url, .idle_ms = 50 };
		cr_assert_eq(fd_projector_start(&pc, &ts->projector), FD_OK);
	}
	if (ts->cfg.sse_notify) {
		cr_assert_eq(fd_notifier_start(ts->cfg.database_url, &ts->notifier), FD_OK);
		ts->app.notifier = ts->notifier;
		fd_pool_set_notifier(ts->pool, ts->notifier);
	}
	if (ts->cfg.sagas) {
		struct fd_saga_config sc = { .conninfo = ts->cfg.database_url, .bus = ts->bus,
					     .gateway = &ts->gateway.base, .notifier = ts->notifier,
					     .workers = ts->cfg.saga_workers, .intake = true, .poll_ms = ts->cfg.saga_poll_ms,
					     .lease_ms = ts->cfg.saga_lease_ms, .time_pct = ts->cfg.saga_time_pct };
		cr_assert_eq(fd_saga_engine_start(&sc, &ts->sagas), FD_OK);
	}
	cr_assert_eq(fd_server_start(&ts->app, &ts->srv), FD_OK, "server did not start");
	ts->port = fd_server_port(ts->srv);
	cr_assert_neq(ts->port, 0);
}

void fd_test_server_start(struct fd_test_server *ts, const char *db_url)
{
	fd_test_server_start_with(ts, db_url, NULL);
}

void fd_test_server_stop(struct fd_test_server *ts)
{
	fd_server_stop(ts->srv, 5000);
	fd_saga_engine_stop(ts->sagas);
	fd_notifier_stop(ts->notifier);
	fd_projector_stop(ts->projector);
	fd_bus_free(ts->bus);
	fd_pool_free(ts->pool);
	fd_metrics_free(ts->metrics);
	fd_config_release(&ts->cfg);
	free(ts->db_url);
	memset(ts, 0, sizeof *ts);
}

long long fd_test_server_scalar(const struct fd_test_server *ts, const char *sql)
{
	PGconn *c = fd_test_connect(ts->db_url);
	long long v = fd_test_scalar(c, sql);
	PQfinish(c);
	return v;
}

static void assert_problem(const struct fd_test_resp *r, int status, const char *slug, int need_detail)
{
	char ct[128], rid[160];
	cr_assert_eq(r->status, status, "status %d, expected %d; body: %s", r->status, status, r->body);
	cr_assert(fd_test_header(r, "Content-Type", ct, sizeof ct), "no Content-Type; head: %s", r->head);
	cr_assert_str_eq(ct, "application/problem+json");
	cr_assert(json_is_object(r->json), "problem body is not a JSON object: %s", r->body);
	const char *type = fd_test_json_str(r, "type");
	cr_assert(type, "problem without type: %s", r->body);
	if (slug) {
		char want[160];
		snprintf(want, sizeof want, "%s%s", FD_PROBLEM_BASE, slug);
		cr_assert_str_eq(type, want, "body: %s", r->body);
	} else {
		cr_assert(strncmp(type, FD_PROBLEM_BASE, strlen(FD_PROBLEM_BASE)) == 0, "type %s", type);
		cr_assert_gt(strlen(type), strlen(FD_PROBLEM_BASE));
	}
	const char *title = fd_test_json_str(r, "title");
	cr_assert(title && *title, "problem without title: %s", r->body);
	cr_assert_eq(fd_test_json_int(r, "status"), status, "body: %s", r->body);
	const char *detail = fd_test_json_str(r, "detail");
	if (need_detail || json_object_get(r->json, "detail"))
		cr_assert(detail && *detail, "problem without detail: %s", r->body);
	const char *req_id = fd_test_json_str(r, "request_id");
	cr_assert(req_id, "problem without request_id: %s", r->body);
	cr_assert(fd_test_header(r, "X-Request-Id", rid, sizeof rid), "no X-Request-Id header");
	cr_assert_str_eq(req_id, rid);
}

void fd_test_assert_problem(const struct fd_test_resp *r, int status, const char *slug)
{
	assert_problem(r, status, slug, 1);
}

void fd_test_assert_problem_no_detail(const struct fd_test_resp *r, int status, const char *slug)
{
	assert_problem(r, status, slug, 0);
}
