/*
 * test_app.c - the framework serving an app that is not the shop: the
 * test-only counter app (tests/support/test_app.c) with its own aggregate,
 * routes, projection, saga and migration.  Everything generic is derived
 * from its definition: the route table, the guarded category of
 * POST /streams, metrics labels, the saga and projection endpoints, /readyz,
 * and what GET /app tells the operator console.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "factd/handlers.h"
#include "http_client.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

static void sagas_on(struct fd_config *c)
{
	c->sagas = 1;
	c->saga_workers = 2;
	c->saga_poll_ms = 20;
	c->saga_time_pct = 10;
}

static struct fd_test_resp send_json(uint16_t port, const char *method, const char *path, const char *body,
				     int status)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(port, method, path, body ? "Content-Type: application/json\r\n" : NULL, body,
				  body ? strlen(body) : 0, &r),
		     0);
	cr_assert_eq(r.status, status, "%s %s: %d %s", method, path, r.status, r.body);
	return r;
}

static void expect(uint16_t port, const char *method, const char *path, const char *body, int status)
{
	struct fd_test_resp r = send_json(port, method, path, body, status);
	fd_test_resp_free(&r);
}

Test(app, commands_reads_and_refusals_of_the_apps_own_aggregate)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-1\"}", 201);
	expect(ts.port, "POST", "/counters/c-1/add", "{\"amount\":7}", 200);
	expect(ts.port, "POST", "/counters/c-1/add", "{\"amount\":5}", 200);
	struct fd_test_resp r = send_json(ts.port, "GET", "/counters/c-1", NULL, 200);
	cr_assert_eq(fd_test_json_int(&r, "total"), 12);
	cr_assert_str_eq(fd_test_json_str(&r, "counter_id"), "c-1");
	char etag[32];
	cr_assert(fd_test_header(&r, "ETag", etag, sizeof etag));
	cr_assert_str_eq(etag, "\"3\"");
	fd_test_resp_free(&r);
	/* the app's refusals and field errors come back as its problems */
	r = send_json(ts.port, "POST", "/counters/c-1/add", "{\"amount\":0}", 400);
	fd_test_assert_problem(&r, 400, "invalid-field");
	fd_test_resp_free(&r);
	r = send_json(ts.port, "POST", "/counters/nope/add", "{\"amount\":1}", 404);
	fd_test_assert_problem(&r, 404, "counter-not-found");
	fd_test_resp_free(&r);
	expect(ts.port, "POST", "/counters/c-1/close", NULL, 200);
	r = send_json(ts.port, "POST", "/counters/c-1/add", "{\"amount\":1}", 409);
	fd_test_assert_problem(&r, 409, "counter-closed");
	fd_test_resp_free(&r);
	/* history through the generic handler */
	r = send_json(ts.port, "GET", "/counters/c-1/events", NULL, 200);
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 4);
	fd_test_resp_free(&r);
	/* the shop is not linked into this app: its routes do not exist */
	r = send_json(ts.port, "GET", "/orders", NULL, 404);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/* The console learns the app from GET /app and lists its streams without knowing it. */
Test(app, the_console_learns_the_app_from_its_definition)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r = send_json(ts.port, "GET", "/app", NULL, 200);
	cr_assert_str_eq(fd_test_json_str(&r, "name"), "test");
	json_t *aggs = json_object_get(r.json, "aggregates");
	cr_assert_eq(json_array_size(aggs), 1);
	json_t *a = json_array_get(aggs, 0);
	cr_assert_str_eq(json_string_value(json_object_get(a, "category")), "counter");
	cr_assert_str_eq(json_string_value(json_object_get(a, "state_path")), "/counters/{id}");
	cr_assert_str_eq(json_string_value(json_object_get(a, "events_path")), "/counters/{id}/events");
	cr_assert_str_eq(json_string_value(json_object_get(a, "saga_path")), "/counters/{id}/saga");
	cr_assert_str_eq(json_string_value(json_object_get(a, "saga_type")), "counter_closer");
	json_t *saga = json_array_get(json_object_get(r.json, "sagas"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(saga, "name")), "counter_closer");
	cr_assert_eq(json_array_size(json_object_get(saga, "steps")), 2);
	json_t *proj = json_array_get(json_object_get(r.json, "projections"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(proj, "name")), "counter_totals");
	fd_test_resp_free(&r);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-1\"}", 201);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-2\"}", 201);
	expect(ts.port, "POST", "/counters/c-2/add", "{\"amount\":1}", 200);
	r = send_json(ts.port, "GET", "/categories", NULL, 200);
	json_t *c = json_array_get(json_object_get(r.json, "categories"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(c, "category")), "counter");
	cr_assert_eq(json_integer_value(json_object_get(c, "streams")), 2);
	cr_assert_eq(json_integer_value(json_object_get(c, "events")), 3);
	fd_test_resp_free(&r);
	r = send_json(ts.port, "GET", "/streams?category=counter&limit=1", NULL, 200);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "streams"), 0), "stream")),
			 "counter-c-1");
	cr_assert_str_eq(fd_test_json_str(&r, "next"), "counter-c-1");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(app, appends_to_the_apps_categories_are_checked_by_its_aggregate)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-2\"}", 201);
	/* an event the counter's apply() refuses never reaches its stream */
	struct fd_test_resp r = send_json(ts.port, "POST", "/streams/counter-c-2/events",
					  "{\"expected_version\":\"any\",\"events\":[{\"type\":\"CounterAdded\",\"data\":{\"amount\":-3}}]}", 422);
	fd_test_assert_problem(&r, 422, "event-rejected");
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM events WHERE stream_id = 'counter-c-2'"), 1);
	expect(ts.port, "POST", "/streams/counter-c-2/events",
	       "{\"expected_version\":1,\"events\":[{\"type\":\"CounterAdded\",\"data\":{\"amount\":3}}]}", 201);
	/* a category no aggregate owns takes any event */
	expect(ts.port, "POST", "/streams/notes-1/events", "{\"expected_version\":\"any\",\"events\":[{\"type\":\"Anything\",\"data\":{}}]}", 201);
	r = send_json(ts.port, "GET", "/counters/c-2", NULL, 200);
	cr_assert_eq(fd_test_json_int(&r, "total"), 3);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(app, metrics_label_the_apps_aggregates_and_routes)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-3\"}", 201);
	struct fd_test_resp r = send_json(ts.port, "GET", "/metrics", NULL, 200);
	cr_assert(strstr(r.body, "factd_commands_total{aggregate=\"counter\",result=\"ok\"} 1"), "%s", r.body);
	cr_assert(strstr(r.body, "route=\"/counters\""), "%s", r.body);
	cr_assert_null(strstr(r.body, "aggregate=\"order\""));
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(app, its_projection_runs_and_is_listed, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-4\"}", 201);
	expect(ts.port, "POST", "/counters/c-4/add", "{\"amount\":9}", 200);
	long long total = -1;
	for (int i = 0; i < 500 && total != 9; i++) {
		usleep(20000);
		PGconn *c = fd_test_connect(ts.db_url);
		PGresult *res = PQexec(c, "SELECT total FROM counter_totals WHERE counter_id = 'c-4'");
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
			total = atoll(PQgetvalue(res, 0, 0));
		PQclear(res);
		PQfinish(c);
	}
	cr_assert_eq(total, 9, "counter_totals never caught up");
	struct fd_test_resp r = send_json(ts.port, "GET", "/projections", NULL, 200);
	json_t *list = json_object_get(r.json, "projections");
	cr_assert_eq(json_array_size(list), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 0), "name")), "counter_totals");
	fd_test_resp_free(&r);
	expect(ts.port, "POST", "/projections/counter_totals/rebuild", NULL, 202);
	r = send_json(ts.port, "POST", "/projections/order_summaries/rebuild", NULL, 404);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(app, its_saga_runs_and_the_ops_endpoints_serve_it, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, sagas_on);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-5\"}", 201);
	expect(ts.port, "POST", "/counters/c-5/add", "{\"amount\":60}", 200);
	expect(ts.port, "POST", "/counters/c-5/add", "{\"amount\":60}", 200);
	const char *status = NULL;
	struct fd_test_resp r = { 0 };
	for (int i = 0; i < 500; i++) {
		r = send_json(ts.port, "GET", "/counters/c-5", NULL, 200);
		status = fd_test_json_str(&r, "status");
		if (status && strcmp(status, "closed") == 0)
			break;
		fd_test_resp_free(&r);
		usleep(20000);
	}
	cr_assert_str_eq(status, "closed", "the saga never closed the full counter");
	fd_test_resp_free(&r);
	r = send_json(ts.port, "GET", "/counters/c-5/saga", NULL, 200);
	cr_assert_str_eq(fd_test_json_str(&r, "type"), "counter_closer");
	for (int i = 0; i < 200 && strcmp(fd_test_json_str(&r, "status"), "completed") != 0; i++) {
		fd_test_resp_free(&r);
		usleep(20000);
		r = send_json(ts.port, "GET", "/counters/c-5/saga", NULL, 200);
	}
	cr_assert_str_eq(fd_test_json_str(&r, "status"), "completed");
	fd_test_resp_free(&r);
	r = send_json(ts.port, "GET", "/sagas?type=counter_closer", NULL, 200);
	cr_assert_eq(json_array_size(json_object_get(r.json, "items")), 1);
	fd_test_resp_free(&r);
	r = send_json(ts.port, "GET", "/sagas?type=order_fulfillment", NULL, 400);
	cr_assert(strstr(r.body, "counter_closer"), "the error names the app's saga types: %s", r.body);
	fd_test_resp_free(&r);
	r = send_json(ts.port, "GET", "/metrics", NULL, 200);
	cr_assert(strstr(r.body, "type=\"counter_closer\""), "%s", r.body);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(app, its_migrations_run_in_their_own_sequence_and_readyz_waits_for_them)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM schema_migrations WHERE scope = 'test' AND version = 1"
					       " AND name = 'counter_audit'"),
		     1);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM pg_tables WHERE tablename = 'counter_audit'"), 1);
	expect(ts.port, "GET", "/readyz", NULL, 200);
	/* without the app's migration the service is not ready */
	PGconn *c = fd_test_connect(ts.db_url);
	PGresult *res = PQexec(c, "DELETE FROM schema_migrations WHERE scope = 'test'");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	PQfinish(c);
	struct fd_test_resp r = send_json(ts.port, "GET", "/readyz", NULL, 503);
	fd_test_assert_problem(&r, 503, "not-ready");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/* ---- an aggregate type without snapshots --------------------------------------- */

static void tally_init(void *s)
{
	*(long long *)s = 0;
}

static void tally_release(void *s)
{
	(void)s;
}

static enum fd_err tally_apply(void *s, const char *type, const json_t *data)
{
	(void)data;
	if (strcmp(type, "Bumped") == 0)
		(*(long long *)s)++;
	return FD_OK;
}

static json_t *tally_view(const void *s)
{
	return json_pack("{s:I}", "bumps", (json_int_t) * (const long long *)s);
}

static bool tally_exists(const void *s)
{
	return *(const long long *)s > 0;
}

static enum fd_err tally_bump(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	return fd_decide_event(out, "Bumped", json_object());
}

static const struct fd_command_type tally_commands[] = { { "bump", tally_bump } };

/* No snapshot or restore: such a type always loads by replay, whatever FACTD_SNAPSHOT_EVERY says. */
static const struct fd_aggregate_type tally_type = {
	.name = "tally",
	.category = "tally",
	.id_field = "tally_id",
	.schema_version = 1,
	.snapshot_every = 2,
	.state_size = sizeof(long long),
	.init = tally_init,
	.release = tally_release,
	.apply = tally_apply,
	.view = tally_view,
	.exists = tally_exists,
	.commands = tally_commands,
	.ncommands = 1,
};

static void snapshot_every_event(struct fd_config *c)
{
	c->snapshot_every = 1;
}

Test(app, a_type_without_snapshot_functions_is_never_snapshotted)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, snapshot_every_event);
	json_t *payload = json_object();
	for (int i = 0; i < 5; i++) {
		struct fd_cmd_result r = { 0 };
		struct fd_cmd_meta meta = { .request_id = "tally" };
		cr_assert_eq(fd_bus_send(ts.bus, &tally_type, "t-1", "bump", payload, &meta, &r), FD_OK);
		cr_assert_eq(r.version, i + 1);
		fd_cmd_result_release(&r);
	}
	json_decref(payload);
	fd_bus_flush(ts.bus);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM snapshots WHERE stream_id = 'tally-t-1'"), 0);
	long long bumps = 0;
	int64_t version = 0;
	cr_assert_eq(fd_bus_load(ts.bus, &tally_type, "t-1", NULL, &bumps, &version), FD_OK);
	cr_assert_eq(bumps, 5);
	cr_assert_eq(version, 5);
	/* the counter, which has them, is snapshotted at every event under the same setting */
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-6\"}", 201);
	fd_bus_flush(ts.bus);
	cr_assert_geq(fd_test_server_scalar(&ts, "SELECT count(*) FROM snapshots WHERE stream_id = 'counter-c-6'"), 1);
	fd_test_server_stop(&ts);
}

/* An app of one route whose collection is not the type's name plus "s". */
static const struct fd_route tally_routes[] = {
	{ .method = "POST", .pattern = "/tallies", .handler = fd_api_command, .json_body = true,
	  .arg = FD_COMMAND(tally_type, "bump", .creates = true) },
	{ .method = "GET", .pattern = "/tallies/{id}", .handler = fd_api_get_aggregate, .arg = &tally_type },
};
static const struct fd_aggregate_type *const tally_types[] = { &tally_type };
static const struct fd_app tally_app = {
	.name = "tallies",
	.aggregates = tally_types,
	.naggregates = 1,
	.routes = tally_routes,
	.nroutes = FD_COUNT(tally_routes),
};

Test(app, a_created_aggregates_location_is_under_the_collection_it_was_posted_to)
{
	struct fd_test_server ts;
	fd_test_server_start_app(&ts, NULL, &tally_app, NULL);
	struct fd_test_resp r = send_json(ts.port, "POST", "/tallies", "{\"tally_id\":\"t-9\"}", 201);
	char loc[128];
	cr_assert(fd_test_header(&r, "Location", loc, sizeof loc));
	cr_assert_str_eq(loc, "/tallies/t-9");
	fd_test_resp_free(&r);
	r = send_json(ts.port, "GET", loc, NULL, 200);
	cr_assert_eq(fd_test_json_int(&r, "bumps"), 1);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/*
 * The counter's versioned event (CounterAdjusted at 3, stored as
 * CounterCorrected at 1 and CounterAdjusted at 2 by older code): every read
 * path sees version 3.  The aggregate's loads, the check of appends to its
 * stream, ?upcast=true, the catalogue, and the saga intake, whose type
 * filter names CounterAdjusted and must also read the old name.
 */
Test(app, its_versioned_events_reach_every_reader_upcast, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, sagas_on);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-v\"}", 201);
	expect(ts.port, "POST", "/counters/c-v/add", "{\"amount\":90}", 200);
	/* version 1 under its old name, version 2 under the new one, as older code wrote them */
	expect(ts.port, "POST", "/streams/counter-c-v/events",
	       "{\"expected_version\":2,\"events\":[{\"type\":\"CounterCorrected\",\"data\":{\"by\":-5}},"
	       "{\"type\":\"CounterAdjusted\",\"data\":{\"by\":8,\"reason\":\"late\"},\"metadata\":{\"schema_version\":2}}]}",
	       201);
	struct fd_test_resp r = send_json(ts.port, "GET", "/counters/c-v?version=3", NULL, 200);
	cr_assert_eq(fd_test_json_int(&r, "total"), 85);
	fd_test_resp_free(&r);
	/* a version 2 CounterAdjusted that would take the total below 0 is refused by the aggregate */
	r = send_json(ts.port, "POST", "/streams/counter-c-v/events",
		      "{\"expected_version\":\"any\",\"events\":[{\"type\":\"CounterAdjusted\",\"data\":{\"by\":-500,\"reason\":\"x\"},"
		      "\"metadata\":{\"schema_version\":2}}]}",
		      422);
	fd_test_assert_problem(&r, 422, "event-rejected");
	fd_test_resp_free(&r);
	r = send_json(ts.port, "POST", "/streams/counter-c-v/events",
		      "{\"expected_version\":\"any\",\"events\":[{\"type\":\"CounterAdjusted\",\"data\":{},\"metadata\":{\"schema_version\":4}}]}", 409);
	fd_test_assert_problem(&r, 409, "schema-too-new");
	fd_test_resp_free(&r);

	/* 90 - 5 + 8 = 93; the saga folds the old events upcast and does not close below 100 */
	r = send_json(ts.port, "GET", "/counters/c-v", NULL, 200);
	cr_assert_eq(fd_test_json_int(&r, "total"), 93);
	fd_test_resp_free(&r);
	/* one more correction as old code wrote it brings the total to 100 */
	expect(ts.port, "POST", "/streams/counter-c-v/events",
	       "{\"expected_version\":\"any\",\"events\":[{\"type\":\"CounterCorrected\",\"data\":{\"by\":7}}]}", 201);
	const char *status = NULL;
	for (int i = 0; i < 500; i++) {
		r = send_json(ts.port, "GET", "/counters/c-v", NULL, 200);
		status = fd_test_json_str(&r, "status");
		if (status && strcmp(status, "closed") == 0)
			break;
		fd_test_resp_free(&r);
		usleep(20000);
	}
	cr_assert_str_eq(status, "closed", "the saga did not fold the old CounterCorrected events to 100");
	fd_test_resp_free(&r);

	r = send_json(ts.port, "GET", "/streams/counter-c-v/events?upcast=true", NULL, 200);
	json_t *events = json_object_get(r.json, "events");
	json_t *e3 = json_array_get(events, 2), *e4 = json_array_get(events, 3);
	cr_assert_str_eq(json_string_value(json_object_get(e3, "type")), "CounterAdjusted");
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(e3, "data"), "delta")), -5);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(e3, "data"), "reason")), "correction");
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(e3, "metadata"), "schema_version")), 3);
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(e4, "data"), "delta")), 8);
	fd_test_resp_free(&r);
	r = send_json(ts.port, "GET", "/streams/counter-c-v/events", NULL, 200);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "events"), 2), "type")),
			 "CounterCorrected", "as stored");
	fd_test_resp_free(&r);
	r = send_json(ts.port, "GET", "/events?types=CounterAdjusted&upcast=true", NULL, 200);
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 3, "the filter reads the old name too: %s", r.body);
	fd_test_resp_free(&r);
	r = send_json(ts.port, "GET", "/events?types=CounterAdjusted", NULL, 200);
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 1, "as stored, names as stored");
	fd_test_resp_free(&r);

	r = send_json(ts.port, "GET", "/schema/events", NULL, 200);
	json_t *types = json_object_get(r.json, "types"), *t;
	size_t i;
	bool seen = false;
	json_array_foreach(types, i, t) {
		if (strcmp(json_string_value(json_object_get(t, "type")), "CounterAdjusted") != 0)
			continue;
		seen = true;
		cr_assert_eq(json_integer_value(json_object_get(t, "version")), 3);
		cr_assert_str_eq(json_string_value(json_object_get(t, "renamed_from")), "CounterCorrected");
		cr_assert_str_eq(json_string_value(json_object_get(t, "category")), "counter");
		json_t *want = json_pack("[{s:i, s:i, s:s}, {s:i, s:i, s:s}]", "from", 1, "to", 2, "type", "CounterCorrected",
					 "from", 2, "to", 3, "type", "CounterAdjusted");
		cr_assert(json_equal(json_object_get(t, "upcasts"), want), "%s", r.body);
		json_decref(want);
	}
	cr_assert(seen, "%s", r.body);
	cr_assert_eq(json_array_size(types), 4);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/* ---- personal values in saga data (the member_welcome saga) ------------------------- */

#define MEMBER_EMAIL "maud.saga-secret@example.net"

static void sagas_on_with_key(struct fd_config *c)
{
	sagas_on(c);
	char path[] = "/tmp/factd-saga-key-XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	static const char hex[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	cr_assert_eq(write(fd, hex, sizeof hex - 1), (ssize_t)(sizeof hex - 1));
	close(fd);
	c->master_key_file = strdup(path);
}

/* The saga of type `type` once its status is `status` (bounded wait), as GET /sagas/{id} shows it. */
static json_t *saga_when(const struct fd_test_server *ts, const char *type, const char *status)
{
	for (int i = 0; i < 1000; i++) {
		struct fd_test_resp r = send_json(ts->port, "GET", fd_test_P("/sagas?type=%s", type), NULL, 200);
		json_t *item = json_array_get(json_object_get(r.json, "items"), 0);
		const char *id = json_string_value(json_object_get(item, "id"));
		bool done = id && strcmp(json_string_value(json_object_get(item, "status")), status) == 0;
		char sid[37] = "";
		if (done)
			snprintf(sid, sizeof sid, "%s", id);
		fd_test_resp_free(&r);
		if (done) {
			r = send_json(ts->port, "GET", fd_test_P("/sagas/%s", sid), NULL, 200);
			json_t *o = json_incref(r.json);
			fd_test_resp_free(&r);
			return o;
		}
		usleep(20000);
	}
	cr_assert_fail("no %s saga became %s", type, status);
	return NULL;
}

Test(app, a_sagas_personal_values_are_sealed_at_rest_open_for_its_steps_and_null_once_erased, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, sagas_on_with_key);
	expect(ts.port, "POST", "/streams/member-m1/events",
	       "{\"expected_version\":\"no_stream\",\"events\":[{\"type\":\"MemberJoined\",\"data\":{\"member_id\":\"m-1\","
	       "\"email\":\"" MEMBER_EMAIL "\"},\"metadata\":{\"personal\":{\"subject\":\"m-1\",\"paths\":[\"/email\"]}}}]}",
	       201);
	json_t *s = saga_when(&ts, "member_welcome", "completed");
	json_t *data = json_object_get(s, "data");
	/* the fold and the step saw the value open: the domain can only come from it */
	cr_assert_str_eq(json_string_value(json_object_get(data, "email")), MEMBER_EMAIL, "%s", json_dumps(s, 0));
	cr_assert_str_eq(json_string_value(json_object_get(data, "mail_domain")), "example.net");
	cr_assert_null(json_object_get(s, "erased"));
	/* the first attempt's error named the e-mail: stored redacted */
	json_t *h0 = json_array_get(json_object_get(s, "history"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(h0, "outcome")), "retry", "%s", json_dumps(s, 0));
	cr_assert_str_eq(json_string_value(json_object_get(h0, "error")), "the mailbox of [personal] is full");
	char *id = strdup(json_string_value(json_object_get(s, "id")));
	json_decref(s);

	/* at rest: no plaintext in any column of the saga or its history; its declaration beside it */
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM sagas s WHERE s::text LIKE '%saga-secret%'"), 0);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM saga_steps h WHERE h::text LIKE '%saga-secret%'"), 0);
	cr_assert_eq(fd_test_server_scalar(&ts, fd_test_P("SELECT count(*) FROM sagas WHERE id = '%s'"
							  " AND data->>'email' LIKE 'fdp1:%%'"
							  " AND personal = '{\"subject\":\"m-1\",\"paths\":[\"/email\"]}'::jsonb",
							  id)),
		     1);

	/* erased: null, listed, the rest kept; a sealed value moved into another saga does not open */
	expect(ts.port, "DELETE", "/subjects/m-1", NULL, 204);
	struct fd_test_resp r = send_json(ts.port, "GET", fd_test_P("/sagas/%s", id), NULL, 200);
	data = json_object_get(r.json, "data");
	cr_assert(json_is_null(json_object_get(data, "email")), "%s", r.body);
	cr_assert_str_eq(json_string_value(json_object_get(data, "mail_domain")), "example.net");
	json_t *erased = json_object_get(r.json, "erased");
	cr_assert_eq(json_array_size(erased), 1, "%s", r.body);
	cr_assert_str_eq(json_string_value(json_array_get(erased, 0)), "/email");
	cr_assert_null(strstr(r.body, "saga-secret"));
	fd_test_resp_free(&r);
	free(id);
	fd_test_server_stop(&ts);
}

/* A saga type without personal data writes none of it: its rows have no declaration. */
Test(app, a_saga_without_personal_data_keeps_no_declaration, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, sagas_on);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-9\"}", 201);
	json_t *s = saga_when(&ts, "counter_closer", "running");
	json_decref(s);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM sagas WHERE personal IS NOT NULL"), 0);
	fd_test_server_stop(&ts);
}

/* GET the counter's saga until `member` of its data is `want` (10 s at most); the saga. */
static json_t *saga_data_when(const struct fd_test_server *ts, const char *counter, const char *member, long long want)
{
	json_t *s = NULL;
	for (int i = 0; i < 500; i++) {
		struct fd_test_resp r = send_json(ts->port, "GET", fd_test_P("/counters/%s/saga", counter), NULL, 200);
		json_decref(s);
		s = json_incref(r.json);
		fd_test_resp_free(&r);
		json_t *v = json_object_get(json_object_get(s, "data"), member);
		if (json_is_integer(v) && json_integer_value(v) == want)
			return s;
		usleep(20000);
	}
	cr_assert_fail("the saga's %s never became %lld: %s", member, want, json_dumps(s, 0));
	return NULL;
}

static void wait_flag(atomic_bool *flag, const char *what)
{
	for (int i = 0; i < 500 && !atomic_load(flag); i++)
		usleep(20000);
	cr_assert(atomic_load(flag), "%s never happened", what);
}

/*
 * The intake reads saga rows without locking them: while it folds an event
 * (held inside the fold, so between reading the row and writing it), another
 * writer updates the same row at once (a lock_timeout of 2 s would fail it).
 * The intake's write then finds the row moved on, reads it again and folds
 * the event into what it holds now: neither write is lost.
 */
Test(app, the_intake_locks_no_saga_while_it_folds_and_loses_no_write_made_meanwhile, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, sagas_on);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-20\"}", 201);
	json_t *s = saga_when(&ts, "counter_closer", "running");
	char id[37];
	snprintf(id, sizeof id, "%s", json_string_value(json_object_get(s, "id")));
	json_decref(s);

	atomic_store(&fd_test_fold_hold, 7);
	expect(ts.port, "POST", "/counters/c-20/add", "{\"amount\":7}", 200);
	wait_flag(&fd_test_fold_held, "the intake folding the add");
	fd_test_exec_at(ts.db_url, fd_test_P("SET lock_timeout = '2s'; UPDATE sagas SET data = data || '{\"mark\": 1}',"
					     " version = version + 1 WHERE id = '%s'",
					     id));
	atomic_store(&fd_test_fold_hold, 0);

	s = saga_data_when(&ts, "c-20", "total", 7);
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(s, "data"), "mark")), 1,
		     "the write made while the intake folded was lost: %s", json_dumps(s, 0));
	cr_assert_str_eq(json_string_value(json_object_get(s, "status")), "running");
	json_decref(s);
	fd_test_server_stop(&ts);
}

/*
 * A step's outcome is recorded on the saga as it is when the step ends, not
 * as it was claimed: an event folded while the step ran stays folded.
 */
Test(app, a_step_ending_after_an_event_changed_its_saga_keeps_that_change, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, sagas_on);
	atomic_store(&fd_test_step_hold, true);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-21\"}", 201);
	expect(ts.port, "POST", "/counters/c-21/add", "{\"amount\":100}", 200);
	wait_flag(&fd_test_step_held, "the close step starting");
	expect(ts.port, "POST", "/counters/c-21/add", "{\"amount\":5}", 200);
	json_t *s = saga_data_when(&ts, "c-21", "total", 105);
	cr_assert_str_eq(json_string_value(json_object_get(s, "status")), "running", "%s", json_dumps(s, 0));
	json_decref(s);
	atomic_store(&fd_test_step_hold, false);

	s = saga_when(&ts, "counter_closer", "completed");
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(s, "data"), "total")), 105,
		     "the step's outcome overwrote the event folded while it ran: %s", json_dumps(s, 0));
	size_t ran = 0, i;
	json_t *h;
	json_array_foreach(json_object_get(s, "history"), i, h)
		ran += strcmp(json_string_value(json_object_get(h, "step")), "close_when_full") == 0;
	cr_assert_eq(ran, 1, "the close step ran once: %s", json_dumps(s, 0));
	json_decref(s);
	struct fd_test_resp r = send_json(ts.port, "GET", "/counters/c-21", NULL, 200);
	cr_assert_str_eq(fd_test_json_str(&r, "status"), "closed");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}
