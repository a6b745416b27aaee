/* test_server.c - in-process factd server for HTTP tests. */
#include "test_server.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/log.h"
#include "factd/migrate.h"
#include "factd/metrics.h"
#include "http/problem.h"
#include "http_client.h"
#include "testdb.h"

void fd_test_server_start_app(struct fd_test_server *ts, const char *db_url, const struct fd_app *app,
			      void (*tweak)(struct fd_config *))
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
	if (!db_url && app->migrations) /* a database of the caller's is the caller's to migrate */
		cr_assert_eq(fd_migrate_run(ts->cfg.database_url, app->migrations, NULL), FD_OK, "the app's migrations");
	char errbuf[512] = "";
	struct fd_runtime_options opts = { .version = FACTD_VERSION, .projection_idle_ms = 50 };
	enum fd_err err = fd_runtime_start(&ts->rt, &ts->cfg, app, &opts, errbuf, sizeof errbuf);
	cr_assert_eq(err, FD_OK, "server did not start: %s", errbuf);
	ts->pool = ts->rt.ctx.pool;
	ts->bus = ts->rt.ctx.bus;
	ts->metrics = ts->rt.ctx.metrics;
	ts->projector = ts->rt.projector;
	ts->notifier = ts->rt.notifier;
	ts->sagas = ts->rt.sagas;
	ts->srv = ts->rt.srv;
	ts->ctx = ts->rt.ctx;
	ts->port = ts->rt.port;
	cr_assert_neq(ts->port, 0);
}

void fd_test_server_stop(struct fd_test_server *ts)
{
	fd_runtime_stop(&ts->rt, 5000);
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
