/*
 * test_schema.c - the shop's event schema evolution over HTTP against a real
 * PostgreSQL, with the projector and the saga engine running: order lines
 * recorded as version 1 of OrderLineAdded (unit_price_cents, no currency),
 * appended through the stream API or written by SQL, load (latest,
 * ?version=, ?at=), project into order_summaries and run the fulfillment
 * saga to completion; streams mixing version 1 and 2; a snapshot of the
 * schema before currencies is ignored; ?upcast=true on the raw reads; an
 * event newer than the code is refused 409 schema-too-new; currencies on
 * lines and mixed-currency at place; the catalogue; FACTD_DEFAULT_CURRENCY.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_client.h"
#define FD_TEST_APP (&shop_app)
#include "shop.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

#define P fd_test_P

static void tweak(struct fd_config *c)
{
	c->sagas = 1;
	c->saga_workers = 2;
	c->saga_poll_ms = 20;
	c->saga_time_pct = 10;
	c->pool_size = 8;
}

static void send(const struct fd_test_server *ts, const char *method, const char *path, const char *body, int want,
		 struct fd_test_resp *r)
{
	cr_assert_eq(fd_test_http(ts->port, method, path, body ? "Content-Type: application/json\r\n" : NULL, body,
				  body ? strlen(body) : 0, r),
		     0);
	cr_assert_eq(r->status, want, "%s %s: %d %s", method, path, r->status, r->body);
}

static void post_ok(const struct fd_test_server *ts, const char *path, const char *body, int want)
{
	struct fd_test_resp r;
	send(ts, "POST", path, body, want, &r);
	fd_test_resp_free(&r);
}

static void post_refused(const struct fd_test_server *ts, const char *path, const char *body, int want, const char *slug)
{
	struct fd_test_resp r;
	send(ts, "POST", path, body, want, &r);
	fd_test_assert_problem(&r, want, slug);
	fd_test_resp_free(&r);
}

static json_t *get_json(const struct fd_test_server *ts, const char *path)
{
	struct fd_test_resp r;
	send(ts, "GET", path, NULL, 200, &r);
	json_t *j = json_incref(r.json);
	fd_test_resp_free(&r);
	return j;
}

static void get_refused(const struct fd_test_server *ts, const char *path, int want, const char *slug)
{
	struct fd_test_resp r;
	send(ts, "GET", path, NULL, want, &r);
	fd_test_assert_problem(&r, want, slug);
	fd_test_resp_free(&r);
}

static const char *str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

static long long num(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

/* A new draft order; its id into out. */
static void new_order(const struct fd_test_server *ts, char out[37])
{
	struct fd_test_resp r;
	send(ts, "POST", "/orders", "{\"customer_id\": \"c-old\"}", 201, &r);
	snprintf(out, 37, "%s", fd_test_json_str(&r, "order_id"));
	fd_test_resp_free(&r);
}

/* An OrderLineAdded of version 1 appended through the stream API at the stream's next version. */
static void append_v1_line(const struct fd_test_server *ts, const char *id, const char *sku, int quantity, int cents)
{
	post_ok(ts, P("/streams/order-%s/events", id),
		P("{\"expected_version\": \"any\", \"events\": [{\"type\": \"OrderLineAdded\","
		  " \"data\": {\"product_id\": \"%s\", \"quantity\": %d,"
		  " \"unit_price_cents\": %d}}]}",
		  sku, quantity, cents),
		201);
}

/* Wait until order_summaries holds the order at `version`; fails the test after 20 s. */
static void wait_summary(const struct fd_test_server *ts, const char *id, long long version)
{
	long long end = fd_test_now_ms() + 20000;
	while (fd_test_server_scalar(ts, P("SELECT coalesce(max(version), 0) FROM order_summaries WHERE order_id = '%s'",
					   id)) < version) {
		cr_assert(fd_test_now_ms() < end, "order_summaries did not reach version %lld of %s", version, id);
		fd_test_sleep_ms(50);
	}
}

static json_t *wait_saga(const struct fd_test_server *ts, const char *order_id, const char *want)
{
	long long end = fd_test_now_ms() + 20000;
	for (;;) {
		struct fd_test_resp r;
		cr_assert_eq(fd_test_get(ts->port, P("/orders/%s/saga", order_id), &r), 0);
		json_t *s = r.status == 200 ? json_incref(r.json) : NULL;
		fd_test_resp_free(&r);
		if (s && strcmp(str(s, "status"), want) == 0)
			return s;
		if (fd_test_now_ms() > end)
			cr_assert_fail("saga of order %s is not %s: %s", order_id, want,
				       s ? json_dumps(s, JSON_INDENT(1)) : "(no saga)");
		json_decref(s);
		fd_test_sleep_ms(50);
	}
}

/* ---- version 1 everywhere ------------------------------------------------------------ */

Test(schema, version_1_lines_from_the_stream_api_load_project_and_run_the_saga, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak);
	post_ok(&ts, "/products", "{\"product_id\": \"sku-v1\", \"name\": \"Old\", \"stock\": 10}", 201);
	char id[37];
	new_order(&ts, id);
	append_v1_line(&ts, id, "sku-v1", 2, 1250);
	append_v1_line(&ts, id, "sku-v1", 1, 1250); /* merges, as the same product did before currencies */
	cr_assert_eq(fd_test_server_scalar(&ts, P("SELECT count(*) FROM events WHERE stream_id = 'order-%s'"
						  " AND type = 'OrderLineAdded' AND metadata ? 'schema_version'", id)),
		     0, "stored as version 1, without a schema_version");

	json_t *o = get_json(&ts, P("/orders/%s", id));
	json_t *line = json_array_get(json_object_get(o, "lines"), 0);
	cr_assert_eq(num(line, "quantity"), 3);
	cr_assert_eq(num(line, "unit_price_cents"), 1250);
	cr_assert_str_eq(str(line, "currency"), "EUR", "version 1 lines are in the default currency");
	cr_assert_str_eq(str(o, "currency"), "EUR");
	cr_assert_eq(num(o, "total_cents"), 3750);
	json_decref(o);
	o = get_json(&ts, P("/orders/%s?version=2", id));
	cr_assert_eq(num(json_array_get(json_object_get(o, "lines"), 0), "quantity"), 2, "?version= upcasts too");
	json_decref(o);

	wait_summary(&ts, id, 3);
	cr_assert_eq(fd_test_server_scalar(&ts, P("SELECT total_cents FROM order_summaries WHERE order_id = '%s'", id)),
		     3750);
	cr_assert_eq(fd_test_server_scalar(&ts, P("SELECT quantity * unit_price_cents FROM order_summaries_lines"
						  " WHERE order_id = '%s'", id)),
		     3750);

	post_ok(&ts, P("/orders/%s/place", id), NULL, 200);
	json_t *s = wait_saga(&ts, id, "completed");
	json_decref(s);
	o = get_json(&ts, P("/orders/%s", id));
	cr_assert_str_eq(str(o, "status"), "confirmed");
	json_decref(o);
	json_t *p = get_json(&ts, "/products/sku-v1");
	cr_assert_eq(num(p, "reserved"), 3);
	json_decref(p);
	wait_summary(&ts, id, 5);
	fd_test_server_stop(&ts);
}

Test(schema, version_1_lines_written_by_sql_and_a_mixed_stream, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak);
	post_ok(&ts, "/products", "{\"product_id\": \"sku-a\", \"name\": \"A\", \"stock\": 10}", 201);
	post_ok(&ts, "/products", "{\"product_id\": \"sku-b\", \"name\": \"B\", \"stock\": 10}", 201);
	char id[37];
	new_order(&ts, id);
	/* as code from before currencies wrote it, straight into the tables */
	char *url = ts.db_url;
	fd_test_exec_at(url, P("UPDATE streams SET version = 2 WHERE stream_id = 'order-%s';"
			       "INSERT INTO events (event_id, stream_id, category, version, type, data, metadata)"
			       " VALUES (gen_random_uuid(), 'order-%s', 'order', 2, 'OrderLineAdded',"
			       " '{\"product_id\": \"sku-a\", \"quantity\": 1, \"unit_price_cents\": 500}',"
			       " '{\"command\": \"add_line\"}')",
			       id, id));
	/* a version 2 line by the command, then the same product again in version 2 */
	post_ok(&ts, P("/orders/%s/lines", id), "{\"product_id\": \"sku-b\", \"quantity\": 2, \"unit_price_cents\": 300}",
		200);
	post_ok(&ts, P("/orders/%s/lines", id),
		"{\"product_id\": \"sku-a\", \"quantity\": 1, \"unit_price_cents\": 500, \"currency\": \"EUR\"}", 200);
	post_refused(&ts, P("/orders/%s/lines", id),
		     "{\"product_id\": \"sku-a\", \"quantity\": 1, \"unit_price_cents\": 500, \"currency\": \"USD\"}", 409,
		     "price-mismatch");
	cr_assert_eq(fd_test_server_scalar(&ts, P("SELECT count(*) FROM events WHERE stream_id = 'order-%s'"
						  " AND (metadata->>'schema_version')::int = 2", id)),
		     2, "the commands recorded version 2");
	json_t *o = get_json(&ts, P("/orders/%s", id));
	cr_assert_eq(num(o, "total_cents"), 1600);
	cr_assert_eq(num(json_array_get(json_object_get(o, "lines"), 0), "quantity"), 2);
	json_decref(o);
	/* ?at= now: the same state */
	char at[40];
	time_t now = time(NULL) + 5;
	strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
	o = get_json(&ts, P("/orders/%s?at=%s", id, at));
	cr_assert_eq(num(o, "total_cents"), 1600);
	json_decref(o);
	wait_summary(&ts, id, 4);
	cr_assert_eq(fd_test_server_scalar(&ts, P("SELECT total_cents FROM order_summaries WHERE order_id = '%s'", id)),
		     1600);
	post_ok(&ts, P("/orders/%s/place", id), NULL, 200);
	json_decref(wait_saga(&ts, id, "completed"));
	fd_test_server_stop(&ts);
}

/* ---- snapshots ------------------------------------------------------------------------ */

Test(schema, a_snapshot_from_before_currencies_is_ignored_and_replaced, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[37];
	new_order(&ts, id);
	append_v1_line(&ts, id, "sku-s", 1, 100);
	/*
	 * What the code before currencies snapshotted (schema 1: lines without
	 * a currency), made wrong on purpose: were it read, the order would
	 * show 99 of them.
	 */
	fd_test_exec_at(ts.db_url,
			P("INSERT INTO snapshots (stream_id, version, schema_version, state) VALUES ('order-%s', 2, 1,"
			  " '{\"status\": \"draft\", \"customer_id\": \"c-old\", \"lines\": [{\"product_id\": \"sku-s\","
			  " \"quantity\": 99, \"unit_price_cents\": 100}]}')",
			  id));
	cr_assert_eq(fd_aggregate_snapshot_schema(&fd_order_type), 2);
	json_t *o = get_json(&ts, P("/orders/%s", id));
	cr_assert_eq(num(json_array_get(json_object_get(o, "lines"), 0), "quantity"), 1, "the old snapshot was read");
	json_decref(o);
	o = get_json(&ts, P("/orders/%s?version=2", id));
	cr_assert_eq(num(json_array_get(json_object_get(o, "lines"), 0), "quantity"), 1);
	json_decref(o);
	/* a current one is written at the next multiple of the interval: here, a load that replays enough */
	fd_test_server_stop(&ts);
}

/* ---- the raw reads --------------------------------------------------------------------- */

Test(schema, raw_reads_as_stored_and_upcast)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[37];
	new_order(&ts, id);
	append_v1_line(&ts, id, "sku-r", 2, 700);
	post_ok(&ts, P("/orders/%s/lines", id), "{\"product_id\": \"sku-q\", \"quantity\": 1, \"unit_price_cents\": 5}",
		200);

	json_t *raw = get_json(&ts, P("/streams/order-%s/events", id));
	json_t *e2 = json_array_get(json_object_get(raw, "events"), 1);
	cr_assert_eq(num(json_object_get(e2, "data"), "unit_price_cents"), 700, "as stored");
	cr_assert_null(json_object_get(json_object_get(e2, "metadata"), "schema_version"));
	json_t *e3 = json_array_get(json_object_get(raw, "events"), 2);
	cr_assert_eq(num(json_object_get(e3, "metadata"), "schema_version"), 2);
	json_decref(raw);

	json_t *up = get_json(&ts, P("/streams/order-%s/events?upcast=true", id));
	e2 = json_array_get(json_object_get(up, "events"), 1);
	json_t *price = json_object_get(json_object_get(e2, "data"), "unit_price");
	cr_assert_eq(num(price, "amount_cents"), 700);
	cr_assert_str_eq(str(price, "currency"), "EUR");
	cr_assert_null(json_object_get(json_object_get(e2, "data"), "unit_price_cents"));
	cr_assert_eq(num(json_object_get(e2, "metadata"), "schema_version"), 2);
	cr_assert_str_eq(str(e2, "type"), "OrderLineAdded");
	json_t *first = json_array_get(json_object_get(up, "events"), 0);
	cr_assert_null(json_object_get(json_object_get(first, "metadata"), "schema_version"), "OrderCreated is at 1");
	json_decref(up);

	up = get_json(&ts, P("/orders/%s/events?upcast=true", id));
	cr_assert_eq(num(json_object_get(json_array_get(json_object_get(up, "events"), 1), "metadata"), "schema_version"), 2);
	json_decref(up);
	/* the feed shows an event once every older transaction has ended: wait for both */
	long long end = fd_test_now_ms() + 10000;
	for (;;) {
		up = get_json(&ts, "/events?category=order&types=OrderLineAdded&upcast=true");
		if (json_array_size(json_object_get(up, "events")) >= 2 || fd_test_now_ms() > end)
			break;
		json_decref(up);
		fd_test_sleep_ms(50);
	}
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(up, "events"), i, e) {
		cr_assert(json_is_object(json_object_get(json_object_get(e, "data"), "unit_price")), "feed event %zu", i);
		cr_assert_eq(num(json_object_get(e, "metadata"), "schema_version"), 2);
	}
	cr_assert_eq(json_array_size(json_object_get(up, "events")), 2, "%s", json_dumps(up, 0));
	json_decref(up);
	get_refused(&ts, P("/streams/order-%s/events?upcast=yes", id), 400, "invalid-parameter");
	get_refused(&ts, "/events?upcast=1", 400, "invalid-parameter");
	fd_test_server_stop(&ts);
}

/* ---- newer than the code ----------------------------------------------------------------- */

Test(schema, events_newer_than_the_code_are_refused)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[37];
	new_order(&ts, id);
	/* through the stream API: the order cannot check a version it does not know */
	post_refused(&ts, P("/streams/order-%s/events", id),
		     "{\"expected_version\": \"any\", \"events\": [{\"type\": \"OrderLineAdded\", \"data\": {\"product_id\": \"x\", \"quantity\": 1,"
		     " \"unit_price\": {\"amount_cents\": 1, \"currency\": \"EUR\", \"tax\": 0}},"
		     " \"metadata\": {\"schema_version\": 3}}]}",
		     409, "schema-too-new");
	post_refused(&ts, P("/streams/order-%s/events", id),
		     "{\"expected_version\": \"any\", \"events\": [{\"type\": \"Anything\", \"data\": {}, \"metadata\": {\"schema_version\": \"3\"}}]}", 400,
		     "invalid-field");
	/* a version 2 line through the stream API is fine when it says so */
	post_ok(&ts, P("/streams/order-%s/events", id),
		"{\"expected_version\": \"any\", \"events\": [{\"type\": \"OrderLineAdded\", \"data\": {\"product_id\": \"x\", \"quantity\": 1,"
		" \"unit_price\": {\"amount_cents\": 1, \"currency\": \"SEK\"}}, \"metadata\": {\"schema_version\": 2}}]}",
		201);
	/* written by newer code sharing the database */
	fd_test_exec_at(ts.db_url,
			P("UPDATE streams SET version = 3 WHERE stream_id = 'order-%s';"
			  "INSERT INTO events (event_id, stream_id, category, version, type, data, metadata)"
			  " VALUES (gen_random_uuid(), 'order-%s', 'order', 3, 'OrderLineAdded',"
			  " '{\"product_id\": \"y\", \"quantity\": 1, \"unit_price\": {\"amount_cents\": 1, \"currency\": \"SEK\","
			  " \"tax\": 0}}', '{\"schema_version\": 3}')",
			  id, id));
	post_refused(&ts, P("/orders/%s/lines", id), "{\"product_id\": \"z\", \"quantity\": 1, \"unit_price_cents\": 1}",
		     409, "schema-too-new");
	post_refused(&ts, P("/orders/%s/place", id), NULL, 409, "schema-too-new");
	get_refused(&ts, P("/orders/%s", id), 409, "schema-too-new");
	get_refused(&ts, P("/orders/%s?version=3", id), 409, "schema-too-new");
	json_t *before = get_json(&ts, P("/orders/%s?version=2", id));
	cr_assert_eq(num(before, "total_cents"), 1, "before the newer event it still loads");
	json_decref(before);
	get_refused(&ts, P("/streams/order-%s/events?upcast=true", id), 409, "schema-too-new");
	json_t *raw = get_json(&ts, P("/streams/order-%s/events", id));
	cr_assert_eq(json_array_size(json_object_get(raw, "events")), 3, "as stored it reads");
	json_decref(raw);
	fd_test_server_stop(&ts);
}

/* ---- currencies --------------------------------------------------------------------------- */

Test(schema, currencies_on_lines_and_mixed_currency_at_place)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[37];
	new_order(&ts, id);
	post_ok(&ts, P("/orders/%s/lines", id),
		"{\"product_id\": \"a\", \"quantity\": 1, \"unit_price_cents\": 100, \"currency\": \"USD\"}", 200);
	post_ok(&ts, P("/orders/%s/lines", id), "{\"product_id\": \"b\", \"quantity\": 1, \"unit_price_cents\": 100}", 200);
	json_t *o = get_json(&ts, P("/orders/%s", id));
	cr_assert_str_eq(str(json_array_get(json_object_get(o, "lines"), 0), "currency"), "USD");
	cr_assert_str_eq(str(json_array_get(json_object_get(o, "lines"), 1), "currency"), "EUR");
	cr_assert_null(json_object_get(o, "currency"), "no one currency");
	json_decref(o);
	post_refused(&ts, P("/orders/%s/place", id), NULL, 409, "mixed-currency");
	static const char *const bad[] = { "\"usd\"", "\"US\"", "\"USDX\"", "1", "null", "\"U5D\"" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		post_refused(&ts, P("/orders/%s/lines", id),
			     P("{\"product_id\": \"c\", \"quantity\": 1, \"unit_price_cents\": 1, \"currency\": %s}", bad[i]),
			     400, "invalid-field");
	struct fd_test_resp r;
	send(&ts, "DELETE", P("/orders/%s/lines/b", id), NULL, 200, &r);
	fd_test_resp_free(&r);
	post_ok(&ts, P("/orders/%s/place", id), NULL, 200);
	fd_test_server_stop(&ts);
}

Test(schema, the_default_currency_is_a_setting)
{
	setenv("FACTD_DEFAULT_CURRENCY", "SEK", 1);
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[37];
	new_order(&ts, id);
	append_v1_line(&ts, id, "old", 1, 100);
	post_ok(&ts, P("/orders/%s/lines", id), "{\"product_id\": \"new\", \"quantity\": 1, \"unit_price_cents\": 1}", 200);
	json_t *o = get_json(&ts, P("/orders/%s", id));
	cr_assert_str_eq(str(o, "currency"), "SEK", "%s", json_dumps(o, 0));
	json_decref(o);
	fd_test_server_stop(&ts);
	unsetenv("FACTD_DEFAULT_CURRENCY");
}

/* ---- the catalogue ------------------------------------------------------------------------ */

Test(schema, the_catalogue)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	json_t *c = get_json(&ts, "/schema/events");
	size_t i, n = 0;
	json_t *t;
	json_array_foreach(json_object_get(c, "types"), i, t) {
		n++;
		if (strcmp(str(t, "type"), "OrderLineAdded") == 0) {
			cr_assert_str_eq(str(t, "category"), "order");
			cr_assert_eq(num(t, "version"), 2);
			json_t *want = json_pack("[{s:i, s:i, s:s}]", "from", 1, "to", 2, "type", "OrderLineAdded");
			cr_assert(json_equal(json_object_get(t, "upcasts"), want), "%s", json_dumps(t, 0));
			cr_assert_null(json_object_get(t, "renamed_from"));
			json_decref(want);
		} else {
			cr_assert_eq(num(t, "version"), 1, "%s", str(t, "type"));
			cr_assert_eq(json_array_size(json_object_get(t, "upcasts")), 0);
		}
	}
	cr_assert_eq(n, 7 + 5 + 5, "every declared type of the three aggregates");
	json_decref(c);
	fd_test_server_stop(&ts);
}
