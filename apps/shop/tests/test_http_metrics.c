/*
 * test_http_metrics.c - GET /metrics against a real server and PostgreSQL:
 * the content type and families, request counts labelled by route template
 * (never by raw path) including 404/405 on unknown paths and a 409 conflict,
 * append and event counters against the rows written, command results and
 * version conflicts met by the command bus (a conflict forced with an
 * advisory lock, not left to timing), snapshot writes, pool gauges, and a
 * server without a registry.
 *
 * Each test starts its own in-process server on its own database.  Worker
 * threads only record what happened; the assertions run on the test's main
 * thread.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "factd/bus.h"
#include "factd/metrics.h"
#include "factd/router.h"
#include "factd/uuid.h"
#include "http_client.h"
#define FD_TEST_APP (&shop_app) /* the shop's routes and types */
#include "shop.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------------ */

/* GET /metrics: 200 with the exposition content type; returns the body (caller frees). */
static char *scrape(uint16_t port)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(port, "/metrics", &r), 0, "GET /metrics: no connection");
	cr_assert_eq(r.status, 200, "GET /metrics: %d %s", r.status, r.body);
	char ct[128];
	cr_assert(fd_test_header(&r, "Content-Type", ct, sizeof ct), "no Content-Type: %s", r.head);
	cr_assert_str_eq(ct, FD_METRICS_CONTENT_TYPE);
	cr_assert_eq(strlen(r.body), r.body_len, "NUL inside the exposition");
	char *text = strdup(r.body);
	fd_test_resp_free(&r);
	return text;
}

/* The value of the sample written exactly as `series` (name and labels); -1 when absent. */
static long long value_of(const char *text, const char *series)
{
	size_t n = strlen(series);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, series, n) == 0 && p[n] == ' ')
			return strtoll(p + n + 1, NULL, 10);
	return -1;
}

static long long requests(const char *text, const char *route, const char *method, int status)
{
	char *series = fd_test_fmt("factd_http_requests_total{route=\"%s\",method=\"%s\",status=\"%d\"}", route, method, status);
	long long v = value_of(text, series);
	free(series);
	return v;
}

static long long hist_count(const char *text, const char *route)
{
	char *series = fd_test_fmt("factd_http_request_duration_seconds_count{route=\"%s\"}", route);
	char *inf = fd_test_fmt("factd_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"}", route);
	long long v = value_of(text, series);
	cr_assert_eq(value_of(text, inf), v, "%s: +Inf bucket differs from _count", route);
	free(series);
	free(inf);
	return v;
}

static long long appends(const char *text, const char *result)
{
	char *series = fd_test_fmt("factd_appends_total{result=\"%s\"}", result);
	long long v = value_of(text, series);
	cr_assert_geq(v, 0, "%s missing", series);
	free(series);
	return v;
}

static long long commands(const char *text, const char *aggregate, const char *result)
{
	char *series = fd_test_fmt("factd_commands_total{aggregate=\"%s\",result=\"%s\"}", aggregate, result);
	long long v = value_of(text, series);
	cr_assert_geq(v, 0, "%s missing", series);
	free(series);
	return v;
}

static long long conflicts(const char *text, const char *aggregate)
{
	char *series = fd_test_fmt("factd_command_conflicts_total{aggregate=\"%s\"}", aggregate);
	long long v = value_of(text, series);
	cr_assert_geq(v, 0, "%s missing", series);
	free(series);
	return v;
}

/* Every route="..." label in the text is a template of the route table or "unmatched". */
static void assert_route_labels_are_templates(const char *text)
{
	size_t seen = 0;
	struct fd_ctx served = { 0 }; /* the table the shop's server serves */
	cr_assert_eq(fd_ctx_init(&served, &shop_app), FD_OK);
	for (const char *p = strstr(text, "route=\""); p; p = strstr(p, "route=\"")) {
		p += 7;
		size_t n = strcspn(p, "\"");
		int known = n == strlen("unmatched") && strncmp(p, "unmatched", n) == 0;
		for (size_t i = 0; i < served.nroutes && !known; i++)
			known = strlen(served.routes[i].pattern) == n && strncmp(p, served.routes[i].pattern, n) == 0;
		cr_assert(known, "route label \"%.*s\" is not a route template", (int)n, p);
		seen++;
	}
	fd_ctx_release(&served);
	cr_assert_gt(seen, 0, "no route labels at all");
}

static int status_of(uint16_t port, const char *method, const char *path, const char *headers, const char *body)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(port, method, path, headers, body, body ? strlen(body) : 0, &r), 0, "%s %s", method,
		     path);
	int status = r.status;
	fd_test_resp_free(&r);
	return status;
}

static void expect(uint16_t port, const char *method, const char *path, const char *headers, const char *body,
		   int status)
{
	int got = status_of(port, method, path, headers, body);
	cr_assert_eq(got, status, "%s %s: %d, expected %d", method, path, got, status);
}

static void exec_sql(PGconn *c, const char *sql)
{
	PGresult *res = PQexec(c, sql);
	cr_assert(PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql,
		  PQerrorMessage(c));
	PQclear(res);
}

/* Poll `sql` (one number) until it equals `want`, for up to ten seconds. */
static void wait_for(PGconn *c, const char *sql, long long want)
{
	long long got = -1;
	for (int i = 0; i < 1000; i++) {
		if ((got = fd_test_scalar(c, sql)) == want)
			return;
		fd_test_sleep_ms(10);
	}
	cr_assert_fail("%s: %lld, waited for %lld", sql, got, want);
}

/* ---- the endpoint ------------------------------------------------------------- */

Test(http_metrics, families_content_type_and_pool_gauges)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char *text = scrape(ts.port);
	static const char *const families[][2] = {
		{ "factd_http_requests_total", "counter" },
		{ "factd_http_request_duration_seconds", "histogram" },
		{ "factd_appends_total", "counter" },
		{ "factd_events_appended_total", "counter" },
		{ "factd_commands_total", "counter" },
		{ "factd_command_conflicts_total", "counter" },
		{ "factd_snapshots_written_total", "counter" },
		{ "factd_db_pool_connections", "gauge" },
		{ "factd_db_pool_waiting", "gauge" },
		{ "factd_process_start_time_seconds", "gauge" },
		{ "factd_build_info", "gauge" },
	};
	for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) {
		char *help = fd_test_fmt("\n# HELP %s ", families[i][0]);
		char *type = fd_test_fmt("\n# TYPE %s %s\n", families[i][0], families[i][1]);
		cr_assert(strstr(text, help) || strncmp(text, help + 1, strlen(help + 1)) == 0, "no HELP for %s",
			  families[i][0]);
		cr_assert(strstr(text, type) || strncmp(text, type + 1, strlen(type + 1)) == 0, "no TYPE for %s",
			  families[i][0]);
		free(help);
		free(type);
	}
	cr_assert_eq(value_of(text, "factd_db_pool_connections{state=\"size\"}"), 4, "the test server's pool has 4");
	long long open = value_of(text, "factd_db_pool_connections{state=\"open\"}");
	long long in_use = value_of(text, "factd_db_pool_connections{state=\"in_use\"}");
	cr_assert(open >= 0 && open <= 4, "open %lld", open);
	cr_assert_eq(in_use, 0, "the scrape itself holds no connection");
	cr_assert_eq(value_of(text, "factd_db_pool_waiting"), 0);
	char *build = fd_test_fmt("factd_build_info{version=\"%s\"}", FACTD_VERSION);
	cr_assert_eq(value_of(text, build), 1);
	free(build);
	cr_assert(strstr(text, "\nfactd_process_start_time_seconds "));
	cr_assert_eq(requests(text, "/metrics", "GET", 200), -1, "a scrape is counted after it is rendered");
	free(text);

	/* The scrape above is counted in the next one; HEAD is a method of its own. */
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts.port, "HEAD", "/metrics", NULL, NULL, 0, &r), 0);
	cr_assert_eq(r.status, 200);
	cr_assert_eq(r.body_len, 0);
	fd_test_resp_free(&r);
	text = scrape(ts.port);
	cr_assert_eq(requests(text, "/metrics", "GET", 200), 1);
	cr_assert_eq(requests(text, "/metrics", "HEAD", 200), 1);
	cr_assert_eq(hist_count(text, "/metrics"), 2);
	/* After real traffic the pool has connected. */
	expect(ts.port, "GET", "/streams/none-1/events", NULL, NULL, 404);
	free(text);
	text = scrape(ts.port);
	cr_assert_geq(value_of(text, "factd_db_pool_connections{state=\"open\"}"), 1);
	free(text);
	fd_test_server_stop(&ts);
}

Test(http_metrics, requests_by_route_template_never_raw_paths)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	uint16_t p = ts.port;
	const char *one = "{\"expected_version\":0,\"events\":[{\"type\":\"Tested\",\"data\":{}}]}";
	char order[FD_UUID_STRLEN + 1];
	struct fd_uuid u;
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	fd_uuid_format(&u, order);
	char *order_path = fd_test_fmt("/orders/%s", order);

	expect(p, "GET", "/healthz", NULL, NULL, 200);
	expect(p, "GET", "/healthz", NULL, NULL, 200);
	expect(p, "POST", "/streams/raw-stream-77/events", NULL, one, 201);
	expect(p, "POST", "/streams/raw-stream-77/events", NULL, one, 409);           /* expected version 0 again */
	expect(p, "GET", "/streams/raw-stream-77/events", NULL, NULL, 200);
	expect(p, "GET", "/streams/raw-missing-88/events", NULL, NULL, 404);         /* a 404 of a route */
	expect(p, "POST", "/streams/raw-stream-77/events", "Content-Type: text/plain\r\n", one, 415);
	expect(p, "GET", "/no/such/place", NULL, NULL, 404);                         /* unknown path */
	expect(p, "DELETE", "/events", NULL, NULL, 405);                             /* no such method here */
	expect(p, "GET", order_path, NULL, NULL, 404);

	char *text = scrape(p);
	cr_assert_eq(requests(text, "/healthz", "GET", 200), 2);
	cr_assert_eq(requests(text, "/streams/{stream}/events", "POST", 201), 1);
	cr_assert_eq(requests(text, "/streams/{stream}/events", "POST", 409), 1);
	cr_assert_eq(requests(text, "/streams/{stream}/events", "POST", 415), 1);
	cr_assert_eq(requests(text, "/streams/{stream}/events", "GET", 200), 1);
	cr_assert_eq(requests(text, "/streams/{stream}/events", "GET", 404), 1);
	cr_assert_eq(requests(text, "unmatched", "GET", 404), 1);
	cr_assert_eq(requests(text, "unmatched", "DELETE", 405), 1);
	cr_assert_eq(requests(text, "/orders/{id}", "GET", 200), -1);
	cr_assert_eq(requests(text, "/orders/{id}", "GET", 404), 1);
	cr_assert_eq(requests(text, "/events", "DELETE", 405), -1, "a 405 before routing has no route");

	cr_assert_eq(hist_count(text, "/healthz"), 2);
	cr_assert_eq(hist_count(text, "/streams/{stream}/events"), 5, "one histogram for both methods");
	cr_assert_eq(hist_count(text, "unmatched"), 2);
	cr_assert_eq(hist_count(text, "/orders/{id}"), 1);
	cr_assert_eq(hist_count(text, "/readyz"), -1, "no series for a route never requested");

	static const char *const raw[] = { "raw-stream-77", "raw-missing-88", "/no/such/place", "such" };
	for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++)
		cr_assert_null(strstr(text, raw[i]), "the raw path part %s shows in the metrics", raw[i]);
	cr_assert_null(strstr(text, order), "an order id shows in the metrics");
	assert_route_labels_are_templates(text);

	cr_assert_eq(appends(text, "ok"), 1);
	cr_assert_eq(appends(text, "conflict"), 1);
	cr_assert_eq(appends(text, "duplicate"), 0);
	cr_assert_eq(appends(text, "error"), 0);
	cr_assert_eq(value_of(text, "factd_events_appended_total"), 1);
	free(text);
	free(order_path);
	fd_test_server_stop(&ts);
}

/* ---- the store and the command bus -------------------------------------------- */

Test(http_metrics, appends_events_and_commands_counted)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	uint16_t p = ts.port;
	char *before = scrape(p);

	char id1[FD_UUID_STRLEN + 1], id2[FD_UUID_STRLEN + 1], id3[FD_UUID_STRLEN + 1];
	struct fd_uuid u;
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	fd_uuid_format(&u, id1);
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	fd_uuid_format(&u, id2);
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	fd_uuid_format(&u, id3);
	char *three = fd_test_fmt("{\"expected_version\":0,\"events\":[{\"event_id\":\"%s\",\"type\":\"A\",\"data\":{}},"
			  "{\"event_id\":\"%s\",\"type\":\"B\",\"data\":{}},{\"event_id\":\"%s\",\"type\":\"C\",\"data\":{}}]}",
			  id1, id2, id3);
	char *reused = fd_test_fmt("{\"expected_version\":\"any\",\"events\":[{\"event_id\":\"%s\",\"type\":\"A\",\"data\":{}}]}",
			   id1);
	expect(p, "POST", "/streams/ae-1/events", NULL, three, 201);      /* ok, 3 events */
	expect(p, "POST", "/streams/ae-1/events", NULL, three, 200);      /* an idempotent repeat */
	expect(p, "POST", "/streams/ae-1/events", NULL,
	       "{\"expected_version\":99,\"events\":[{\"type\":\"A\",\"data\":{}}]}", 409);
	expect(p, "POST", "/streams/ae-2/events", NULL, reused, 409);     /* the event id is stored elsewhere */

	const char *key = "Idempotency-Key: metrics-key-1\r\n";
	expect(p, "POST", "/products", NULL, "{\"product_id\":\"sku-m1\",\"name\":\"Widget\",\"stock\":5}", 201);
	expect(p, "POST", "/products/sku-m1/restock", NULL, "{\"quantity\":3}", 200);
	expect(p, "POST", "/products", NULL, "{\"product_id\":\"sku-m1\",\"name\":\"Again\",\"stock\":1}", 409);
	expect(p, "POST", "/products", key, "{\"product_id\":\"sku-m2\",\"name\":\"Gadget\",\"stock\":1}", 201);
	expect(p, "POST", "/products", key, "{\"product_id\":\"sku-m2\",\"name\":\"Gadget\",\"stock\":1}", 201);
	expect(p, "POST", "/products", key, "{\"product_id\":\"sku-m2\",\"name\":\"Other\",\"stock\":1}", 422);
	char *place = fd_test_fmt("/orders/%s/place", id1);
	expect(p, "POST", place, NULL, NULL, 404);                         /* refused: no such order */
	expect(p, "POST", "/orders", NULL, "{\"customer_id\":\"\"}", 400);  /* invalid payload */

	char *after = scrape(p);
	cr_assert_eq(appends(after, "ok") - appends(before, "ok"), 4, "the stream append, two creates, a restock");
	cr_assert_eq(appends(after, "duplicate") - appends(before, "duplicate"), 1);
	cr_assert_eq(appends(after, "conflict") - appends(before, "conflict"), 2);
	cr_assert_eq(appends(after, "error") - appends(before, "error"), 0);
	long long events = value_of(after, "factd_events_appended_total") - value_of(before, "factd_events_appended_total");
	cr_assert_eq(events, 6);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM events"), value_of(after, "factd_events_appended_total"),
		     "the counter matches the rows written");

	cr_assert_eq(commands(after, "product", "ok"), 3);
	cr_assert_eq(commands(after, "product", "replayed"), 1);
	cr_assert_eq(commands(after, "product", "rejected"), 1);
	cr_assert_eq(commands(after, "product", "idempotency"), 1);
	cr_assert_eq(commands(after, "order", "rejected"), 1);
	cr_assert_eq(commands(after, "order", "invalid"), 1);
	cr_assert_eq(commands(after, "order", "ok"), 0);
	cr_assert_eq(commands(after, "payment", "ok"), 0);
	cr_assert_eq(conflicts(after, "product"), 0);
	cr_assert_null(strstr(after, "aggregate=\"other\""));
	free(place);
	free(three);
	free(reused);
	free(before);
	free(after);
	fd_test_server_stop(&ts);
}

struct restock {
	uint16_t port;
	int status;
};

static void *restock_once(void *arg)
{
	struct restock *r = arg;
	struct fd_test_resp resp;
	const char *body = "{\"quantity\":1}";
	r->status = fd_test_http(r->port, "POST", "/products/sku-race/restock", NULL, body, strlen(body), &resp) == 0
			    ? resp.status
			    : -1;
	fd_test_resp_free(&resp);
	return NULL;
}

/*
 * Two restocks of one product through two servers on one database (as two
 * factd processes: within one, commands on an aggregate queue instead of
 * racing).  The first is held inside its append (a trigger waits for an
 * advisory lock the test holds) until the second has loaded the same version
 * and is waiting for the stream row.  Then the first commits, the second's
 * append conflicts, and its bus reloads and retries: exactly one version
 * conflict, counted by the second server.
 */
Test(http_metrics, command_bus_conflict_counted_once)
{
	struct fd_test_server ts, ts2;
	fd_test_server_start(&ts, NULL);
	fd_test_server_start(&ts2, ts.db_url);
	expect(ts.port, "POST", "/products", NULL, "{\"product_id\":\"sku-race\",\"name\":\"Race\",\"stock\":1}", 201);
	PGconn *gate = fd_test_connect(ts.db_url);
	exec_sql(gate, "CREATE FUNCTION metrics_test_gate() RETURNS trigger LANGUAGE plpgsql AS $$"
		       " BEGIN IF NEW.stream_id = 'product-sku-race' THEN PERFORM pg_advisory_xact_lock_shared(7007);"
		       " END IF; RETURN NEW; END $$");
	exec_sql(gate, "CREATE TRIGGER metrics_test_gate BEFORE INSERT ON events FOR EACH ROW"
		       " EXECUTE FUNCTION metrics_test_gate()");
	exec_sql(gate, "SELECT pg_advisory_lock(7007)");
	const char *waiting = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
			      " AND wait_event_type = 'Lock'";

	struct restock a = { .port = ts.port }, b = { .port = ts2.port };
	pthread_t ta, tb;
	cr_assert_eq(pthread_create(&ta, NULL, restock_once, &a), 0);
	wait_for(gate, waiting, 1);  /* the first holds the stream row and waits at the gate */
	cr_assert_eq(pthread_create(&tb, NULL, restock_once, &b), 0);
	wait_for(gate, waiting, 2);  /* the second has loaded version 1 and waits for the row */
	exec_sql(gate, "SELECT pg_advisory_unlock(7007)");
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	PQfinish(gate);
	cr_assert_eq(a.status, 200);
	cr_assert_eq(b.status, 200);

	char *text = scrape(ts.port), *text2 = scrape(ts2.port);
	cr_assert_eq(conflicts(text, "product"), 0, "the first restock did not conflict");
	cr_assert_eq(conflicts(text2, "product"), 1);
	cr_assert_eq(conflicts(text2, "order"), 0);
	cr_assert_eq(appends(text, "conflict"), 0);
	cr_assert_eq(appends(text2, "conflict"), 1, "the store saw the same conflict");
	cr_assert_eq(appends(text, "ok"), 2, "the create and the first restock");
	cr_assert_eq(appends(text2, "ok"), 1);
	cr_assert_eq(commands(text2, "product", "ok"), 1, "the retried command succeeded");
	cr_assert_eq(commands(text2, "product", "conflict"), 0);
	cr_assert_eq(value_of(text, "factd_events_appended_total") + value_of(text2, "factd_events_appended_total"), 3);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT version FROM streams WHERE stream_id = 'product-sku-race'"), 3);
	free(text);
	free(text2);
	fd_test_server_stop(&ts2);
	fd_test_server_stop(&ts);
}

static void snapshot_every_2(struct fd_config *cfg)
{
	cfg->snapshot_every = 2;
}

Test(http_metrics, snapshots_written_counted)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, snapshot_every_2);
	expect(ts.port, "POST", "/products", NULL, "{\"product_id\":\"sku-s\",\"name\":\"Snap\",\"stock\":1}", 201);
	for (int i = 0; i < 3; i++)
		expect(ts.port, "POST", "/products/sku-s/restock", NULL, "{\"quantity\":1}", 200);
	fd_bus_flush(ts.bus);
	char *text = scrape(ts.port);
	cr_assert_eq(value_of(text, "factd_snapshots_written_total"), 2, "at versions 2 and 4");
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM snapshots"), 2);
	free(text);
	fd_test_server_stop(&ts);
}

/* ---- without a registry --------------------------------------------------------- */

Test(http_metrics, server_without_registry)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_pool *pool = NULL;
	struct fd_bus *bus = NULL;
	struct fd_server *srv = NULL;
	cr_assert_eq(fd_pool_new(ts.db_url, 2, 2000, &pool), FD_OK);
	struct fd_bus_config bus_cfg = { .max_retries = 3, .snapshot_every = 1 };
	cr_assert_eq(fd_bus_new(pool, &bus_cfg, &bus), FD_OK);
	struct fd_ctx app = { .cfg = &ts.cfg, .pool = pool, .bus = bus, .services = ts.ctx.services };
	cr_assert_eq(fd_ctx_init(&app, &shop_app), FD_OK);
	cr_assert_eq(fd_server_start(&app, &srv), FD_OK);
	uint16_t p = fd_server_port(srv);

	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(p, "/metrics", &r), 0);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	expect(p, "POST", "/streams/plain-1/events", NULL,
	       "{\"expected_version\":0,\"events\":[{\"type\":\"A\",\"data\":{}}]}", 201);
	expect(p, "POST", "/products", NULL, "{\"product_id\":\"sku-n\",\"name\":\"N\",\"stock\":1}", 201);
	expect(p, "POST", "/products/sku-n/restock", NULL, "{\"quantity\":1}", 200);
	expect(p, "GET", "/nowhere", NULL, NULL, 404);
	fd_bus_flush(bus);
	fd_server_stop(srv, 5000);
	fd_ctx_release(&app);
	fd_bus_free(bus);
	fd_pool_free(pool);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM events"), 3);
	cr_assert_geq(fd_test_server_scalar(&ts, "SELECT count(*) FROM snapshots"), 1);

	/* None of that reached the test server's registry. */
	char *text = scrape(ts.port);
	cr_assert_eq(appends(text, "ok"), 0);
	cr_assert_eq(value_of(text, "factd_events_appended_total"), 0);
	cr_assert_eq(value_of(text, "factd_snapshots_written_total"), 0);
	cr_assert_eq(commands(text, "product", "ok"), 0);
	cr_assert_eq(requests(text, "unmatched", "GET", 404), -1);
	free(text);
	fd_test_server_stop(&ts);
}

Test(http_metrics, projection_lag_gauges_follow_the_projector, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	expect(ts.port, "POST", "/products", NULL, "{\"product_id\":\"sku-lag\",\"name\":\"Lag\",\"stock\":1}", 201);
	/* The test server runs the projector: the lag returns to zero and both projections report running. */
	char *text = NULL;
	for (int i = 0; i < 500; i++) {
		free(text);
		text = scrape(ts.port);
		if (strstr(text, "factd_projection_lag_events{projection=\"product_stock\"} 0\n") &&
		    strstr(text, "factd_projection_running{projection=\"product_stock\"} 1\n"))
			break;
		usleep(20000);
	}
	cr_assert(strstr(text, "# TYPE factd_projection_lag_events gauge"), "%s", text);
	cr_assert(strstr(text, "# TYPE factd_projection_lag_seconds gauge"));
	cr_assert(strstr(text, "factd_projection_lag_events{projection=\"product_stock\"} 0\n"), "lag never reached 0");
	cr_assert(strstr(text, "factd_projection_running{projection=\"order_summaries\"} 1\n"));
	free(text);
	fd_test_server_stop(&ts);
}
