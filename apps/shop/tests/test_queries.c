/*
 * test_queries.c - the read side over HTTP against a real PostgreSQL:
 * GET /orders (filters, keyset pages, every field after lines, place,
 * confirm, ship and cancel), GET /products, parameter checking,
 * read-your-writes with ?min_position= (also across projections, and the
 * bounded 503 when the projection does not get there), GET /projections,
 * and POST /projections/{name}/rebuild while a writer and a reader keep
 * working: the reader never misses a row that existed before the rebuild,
 * and afterwards the read model agrees with the aggregates.
 *
 * Each test starts its own in-process server, with its projector, on its own
 * database.  Reads pass min_position=<the position of the test's last write>,
 * so what they see is consistent with what the test wrote.  Worker threads
 * only record what happened; the assertions run on the test's main thread.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "factd/bus.h"
#include "shop.h"
#include "factd/events.h"
#include "http/problem.h"
#include "factd/uuid.h"
#include "http_client.h"
#define FD_TEST_APP (&shop_app) /* the shop's routes and types */
#include "shop.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

#define ID_LEN (FD_UUID_STRLEN + 1)

/* ---- helpers ------------------------------------------------------------------ */

static void send_req(const struct fd_test_server *ts, const char *method, const char *path, const char *body,
		     struct fd_test_resp *r)
{
	cr_assert_eq(fd_test_http(ts->port, method, path, NULL, body, body ? strlen(body) : 0, r), 0,
		     "%s %s: no connection", method, path);
	cr_assert(r->status > 0, "%s %s: no response", method, path);
}

static const char *header(const struct fd_test_resp *r, const char *name)
{
	static char buf[4][512];
	static int next;
	char *b = buf[next++ % 4];
	return fd_test_header(r, name, b, sizeof buf[0]);
}

static const char *jstr(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static long long jint(const json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	cr_assert(json_is_integer(v), "member %s is not an integer", k);
	return (long long)json_integer_value(v);
}

/* The newest position this test wrote (main thread only). */
static char last_pos[FD_CURSOR_STRLEN] = "0";

static void note_position(const char *pos)
{
	struct fd_cursor a, b;
	cr_assert(pos && fd_cursor_parse(pos, &a), "not a position: %s", pos ? pos : "(null)");
	cr_assert(fd_cursor_parse(last_pos, &b));
	if (fd_cursor_cmp(&a, &b) > 0)
		snprintf(last_pos, sizeof last_pos, "%s", pos);
}

/* A command over HTTP that must succeed with `status`; its position is noted.  Returns the body (new reference). */
static json_t *command(const struct fd_test_server *ts, const char *method, const char *path, const char *body,
		       int status)
{
	struct fd_test_resp r;
	send_req(ts, method, path, body, &r);
	cr_assert_eq(r.status, status, "%s %s: %d %s", method, path, r.status, r.body);
	cr_assert(json_is_object(r.json), "%s %s: %s", method, path, r.body);
	note_position(fd_test_json_str(&r, "position"));
	json_t *j = json_incref(r.json);
	fd_test_resp_free(&r);
	return j;
}

static void create_order(const struct fd_test_server *ts, const char *customer, char out[ID_LEN])
{
	json_t *j = command(ts, "POST", "/orders", fd_test_P("{\"customer_id\":\"%s\"}", customer), 201);
	snprintf(out, ID_LEN, "%s", jstr(j, "order_id"));
	json_decref(j);
}

static void add_line(const struct fd_test_server *ts, const char *order, const char *sku, long long q, long long p)
{
	json_decref(command(ts, "POST", fd_test_P("/orders/%s/lines", order),
			    fd_test_P("{\"product_id\":\"%s\",\"quantity\":%lld,\"unit_price_cents\":%lld}", sku, q, p), 200));
}

/* A command sent through the bus (for those without an HTTP route); its position is noted. */
static void bus_cmd(struct fd_test_server *ts, const struct fd_aggregate_type *t, const char *id, const char *cmd,
		    json_t *payload)
{
	struct fd_cmd_result res;
	enum fd_err err = fd_bus_send(ts->bus, t, id, cmd, payload, NULL, &res);
	cr_assert_eq(err, FD_OK, "%s %s: %s %s", t->name, cmd, fd_err_name(err), res.decision.slug);
	char pos[FD_CURSOR_STRLEN];
	fd_cursor_format(&res.position, pos, sizeof pos);
	note_position(pos);
	fd_cmd_result_release(&res);
	json_decref(payload);
}

/* GET path; assert status 200 and a JSON object body; return it (new reference). */
static json_t *get_ok(const struct fd_test_server *ts, const char *path)
{
	struct fd_test_resp r;
	send_req(ts, "GET", path, NULL, &r);
	cr_assert_eq(r.status, 200, "GET %s: %d %s", path, r.status, r.body);
	cr_assert_str_eq(header(&r, "Content-Type"), "application/json", "GET %s", path);
	cr_assert(json_is_object(r.json), "GET %s: %s", path, r.body);
	json_t *j = json_incref(r.json);
	fd_test_resp_free(&r);
	return j;
}

/* GET a list (path has a query string or not) consistent with the test's writes. */
static json_t *list_ok(const struct fd_test_server *ts, const char *path)
{
	return get_ok(ts, fd_test_P("%s%cmin_position=%s", path, strchr(path, '?') ? '&' : '?', last_pos));
}

/* The array `key` of a page, checking the page has exactly {key, next}. */
static json_t *rows(json_t *page, const char *key)
{
	cr_assert_eq(json_object_size(page), 2, "page members: %s", json_dumps(page, JSON_COMPACT));
	cr_assert(json_object_get(page, "next"), "page without next");
	json_t *a = json_object_get(page, key);
	cr_assert(json_is_array(a), "page without %s array", key);
	return a;
}

/* The row with `key` == id in array a, or NULL. */
static json_t *find_row(json_t *a, const char *key, const char *id)
{
	size_t i;
	json_t *o;
	json_array_foreach(a, i, o) if (strcmp(jstr(o, key), id) == 0) return o;
	return NULL;
}

static void assert_rfc3339_us(const char *s, const char *what)
{
	regex_t re;
	cr_assert_eq(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$", REG_EXTENDED | REG_NOSUB), 0);
	int m = s ? regexec(&re, s, 0, NULL, 0) : 1;
	regfree(&re);
	cr_assert_eq(m, 0, "%s is not RFC 3339 UTC with microseconds: %s", what, s ? s : "(null)");
}

/* The recorded_at of the order's event of `type` (the first one). */
static char *event_time(const struct fd_test_server *ts, const char *order, const char *type)
{
	json_t *page = get_ok(ts, fd_test_P("/orders/%s/events", order));
	size_t i;
	json_t *e;
	char *at = NULL;
	json_array_foreach(json_object_get(page, "events"), i, e) {
		if (!at && strcmp(jstr(e, "type"), type) == 0)
			at = strdup(jstr(e, "recorded_at"));
	}
	json_decref(page);
	cr_assert(at, "order %s has no %s event", order, type);
	return at;
}

static void assert_bad_param(const struct fd_test_server *ts, const char *path, const char *param)
{
	struct fd_test_resp r;
	send_req(ts, "GET", path, NULL, &r);
	fd_test_assert_problem(&r, 400, "invalid-parameter");
	cr_assert_str_eq(fd_test_json_str(&r, "parameter"), param, "GET %s: %s", path, r.body);
	fd_test_resp_free(&r);
}

static void tweak_wait_300(struct fd_config *c)
{
	c->min_position_wait_ms = 300;
}

/* Long enough for a projector on a loaded machine: the test is about reaching the position, not speed. */
static void tweak_wait_long(struct fd_config *c)
{
	c->min_position_wait_ms = 20000;
}

static void tweak_no_projector(struct fd_config *c)
{
	c->projections = 0;
	c->min_position_wait_ms = 200;
}

static int cmp_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

/*
 * Every order of the read model, by following `next` with ?limit=per_page
 * (and the extra query `q`, "" or "&..."), into ids (sorted, as the pages
 * are).  Asserts the pages are in order, without repeats, and that `next`
 * is the last id of a page exactly when another page follows.
 */
static size_t all_order_ids(const struct fd_test_server *ts, const char *q, unsigned per_page,
			    char (*ids)[ID_LEN], size_t cap, size_t *npages)
{
	size_t n = 0;
	char after[ID_LEN] = "";
	*npages = 0;
	for (;;) {
		json_t *page = list_ok(ts, after[0] ? fd_test_P("/orders?limit=%u&after=%s%s", per_page, after, q)
						    : fd_test_P("/orders?limit=%u%s", per_page, q));
		json_t *a = rows(page, "orders");
		(*npages)++;
		size_t i;
		json_t *o;
		json_array_foreach(a, i, o) {
			cr_assert_lt(n, cap);
			snprintf(ids[n], ID_LEN, "%s", jstr(o, "order_id"));
			if (n > 0)
				cr_assert_lt(strcmp(ids[n - 1], ids[n]), 0, "out of order or repeated: %s then %s", ids[n - 1],
					     ids[n]);
			n++;
		}
		cr_assert_leq(json_array_size(a), per_page);
		json_t *next = json_object_get(page, "next");
		if (json_is_null(next)) {
			json_decref(page);
			return n;
		}
		cr_assert_eq(json_array_size(a), per_page, "a short page with next");
		cr_assert_str_eq(json_string_value(next), ids[n - 1], "next is not the page's last id");
		snprintf(after, sizeof after, "%s", json_string_value(next));
		json_decref(page);
	}
}

/* ---- orders --------------------------------------------------------------------- */

Test(queries_orders, fields_follow_lines_place_confirm_ship_and_cancel)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char a[ID_LEN], b[ID_LEN], c[ID_LEN];
	create_order(&ts, "cust-a", a);
	create_order(&ts, "cust-a", b);
	create_order(&ts, "cust-b", c);

	/* a: lines added, merged and removed, then placed, confirmed and shipped */
	add_line(&ts, a, "sku-1", 2, 150);
	add_line(&ts, a, "sku-2", 1, 1000);
	add_line(&ts, a, "sku-1", 1, 150);
	add_line(&ts, a, "sku-3", 5, 7);
	json_decref(command(&ts, "DELETE", fd_test_P("/orders/%s/lines/sku-2", a), NULL, 200));
	json_t *list = list_ok(&ts, "/orders");
	json_t *ra = find_row(rows(list, "orders"), "order_id", a);
	cr_assert(ra, "order a missing");
	cr_assert_eq(jint(ra, "line_count"), 2);
	cr_assert_eq(jint(ra, "total_cents"), 3 * 150 + 5 * 7);
	cr_assert_str_eq(jstr(ra, "status"), "draft");
	cr_assert_eq(jint(ra, "version"), 6);
	json_decref(list);

	json_decref(command(&ts, "POST", fd_test_P("/orders/%s/place", a), NULL, 200));
	bus_cmd(&ts, &fd_order_type, a, "confirm", json_object());
	json_decref(command(&ts, "POST", fd_test_P("/orders/%s/ship", a), NULL, 200));
	/* b: one line, placed, cancelled */
	add_line(&ts, b, "sku-9", 3, 333);
	json_decref(command(&ts, "POST", fd_test_P("/orders/%s/place", b), NULL, 200));
	json_decref(command(&ts, "POST", fd_test_P("/orders/%s/cancel", b), "{\"reason\":\"changed my mind\"}", 200));

	list = list_ok(&ts, "/orders");
	json_t *arr = rows(list, "orders");
	cr_assert_eq(json_array_size(arr), 3, "%s", json_dumps(list, JSON_COMPACT));
	cr_assert(json_is_null(json_object_get(list, "next")));
	static const char *const fields[] = { "order_id", "customer_id", "status", "line_count", "total_cents",
					      "created_at", "placed_at", "confirmed_at", "shipped_at", "cancelled_at",
					      "cancel_reason", "email", "shipping_address", "version" };
	size_t i;
	json_t *o;
	json_array_foreach(arr, i, o) {
		cr_assert_eq(json_object_size(o), sizeof fields / sizeof fields[0], "row members: %s",
			     json_dumps(o, JSON_COMPACT));
		for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
			cr_assert(json_object_get(o, fields[f]), "row without %s", fields[f]);
		assert_rfc3339_us(jstr(o, "created_at"), "created_at");
	}

	ra = find_row(arr, "order_id", a);
	json_t *rb = find_row(arr, "order_id", b), *rc = find_row(arr, "order_id", c);
	cr_assert(ra && rb && rc);
	cr_assert_str_eq(jstr(ra, "status"), "shipped");
	cr_assert_str_eq(jstr(ra, "customer_id"), "cust-a");
	cr_assert_eq(jint(ra, "line_count"), 2);
	cr_assert_eq(jint(ra, "total_cents"), 485);
	cr_assert_eq(jint(ra, "version"), 9);
	static const struct {
		const char *field, *type;
	} steps[] = { { "created_at", "OrderCreated" }, { "placed_at", "OrderPlaced" },
		      { "confirmed_at", "OrderConfirmed" }, { "shipped_at", "OrderShipped" } };
	for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
		char *at = event_time(&ts, a, steps[s].type);
		assert_rfc3339_us(jstr(ra, steps[s].field), steps[s].field);
		cr_assert_str_eq(jstr(ra, steps[s].field), at, "%s", steps[s].field);
		free(at);
	}
	cr_assert(json_is_null(json_object_get(ra, "cancelled_at")));
	cr_assert(json_is_null(json_object_get(ra, "cancel_reason")));

	cr_assert_str_eq(jstr(rb, "status"), "cancelled");
	cr_assert_eq(jint(rb, "line_count"), 1);
	cr_assert_eq(jint(rb, "total_cents"), 999);
	cr_assert_str_eq(jstr(rb, "cancel_reason"), "changed my mind");
	char *cancelled = event_time(&ts, b, "OrderCancelled");
	cr_assert_str_eq(jstr(rb, "cancelled_at"), cancelled);
	free(cancelled);
	assert_rfc3339_us(jstr(rb, "placed_at"), "placed_at");
	cr_assert(json_is_null(json_object_get(rb, "confirmed_at")));

	cr_assert_str_eq(jstr(rc, "status"), "draft");
	cr_assert_eq(jint(rc, "line_count"), 0);
	cr_assert_eq(jint(rc, "total_cents"), 0);
	cr_assert_eq(jint(rc, "version"), 1);
	cr_assert(json_is_null(json_object_get(rc, "placed_at")));
	json_decref(list);
	fd_test_server_stop(&ts);
}

Test(queries_orders, filters_are_optional_and_combine)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char a1[ID_LEN], a2[ID_LEN], a3[ID_LEN], b1[ID_LEN];
	create_order(&ts, "alice", a1);
	create_order(&ts, "alice", a2);
	create_order(&ts, "alice", a3);
	create_order(&ts, "bob", b1);
	add_line(&ts, a2, "sku-1", 1, 100);
	json_decref(command(&ts, "POST", fd_test_P("/orders/%s/place", a2), NULL, 200));
	add_line(&ts, b1, "sku-1", 1, 100);
	json_decref(command(&ts, "POST", fd_test_P("/orders/%s/place", b1), NULL, 200));
	json_decref(command(&ts, "POST", fd_test_P("/orders/%s/cancel", a3), "{\"reason\":\"x\"}", 200));

	static const struct {
		const char *query;
		int n;
	} cases[] = {
		{ "", 4 },
		{ "?customer_id=alice", 3 },
		{ "?customer_id=bob", 1 },
		{ "?customer_id=carol", 0 },
		{ "?status=placed", 2 },
		{ "?status=draft", 1 },
		{ "?status=cancelled", 1 },
		{ "?status=shipped", 0 },
		{ "?status=placed&customer_id=alice", 1 },
		{ "?status=placed&customer_id=bob", 1 },
		{ "?status=draft&customer_id=bob", 0 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_t *page = list_ok(&ts, fd_test_P("/orders%s", cases[i].query));
		json_t *arr = rows(page, "orders");
		cr_assert_eq((int)json_array_size(arr), cases[i].n, "%s: %s", cases[i].query, json_dumps(page, JSON_COMPACT));
		cr_assert(json_is_null(json_object_get(page, "next")), "%s", cases[i].query);
		size_t k;
		json_t *o;
		json_array_foreach(arr, k, o) {
			const char *st = strstr(cases[i].query, "status=");
			const char *cu = strstr(cases[i].query, "customer_id=");
			if (st)
				cr_assert(strncmp(jstr(o, "status"), st + 7, strlen(jstr(o, "status"))) == 0, "%s", cases[i].query);
			if (cu)
				cr_assert(strncmp(jstr(o, "customer_id"), cu + 12, strlen(jstr(o, "customer_id"))) == 0, "%s",
					  cases[i].query);
		}
		json_decref(page);
	}
	json_t *page = list_ok(&ts, "/orders?status=placed&customer_id=alice");
	cr_assert_str_eq(jstr(json_array_get(rows(page, "orders"), 0), "order_id"), a2);
	json_decref(page);
	/* a customer id that needs percent-encoding and is not ASCII */
	char u[ID_LEN];
	create_order(&ts, "Zo\xc3\xab & co", u);
	page = list_ok(&ts, "/orders?customer_id=Zo%C3%AB%20%26%20co");
	cr_assert_eq(json_array_size(rows(page, "orders")), 1);
	cr_assert_str_eq(jstr(json_array_get(rows(page, "orders"), 0), "order_id"), u);
	json_decref(page);
	fd_test_server_stop(&ts);
}

Test(queries_orders, keyset_pages_over_25_orders, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char made[25][ID_LEN], other[ID_LEN];
	for (int i = 0; i < 25; i++) {
		create_order(&ts, "pager", made[i]);
		if (i % 5 == 0)
			create_order(&ts, "someone-else", other);
	}
	qsort(made, 25, ID_LEN, cmp_id);

	char got[64][ID_LEN];
	size_t pages;
	size_t n = all_order_ids(&ts, "&customer_id=pager", 10, got, 64, &pages);
	cr_assert_eq(n, 25, "%zu orders over the pages", n);
	cr_assert_eq(pages, 3);
	for (int i = 0; i < 25; i++)
		cr_assert_str_eq(got[i], made[i], "page order differs at %d", i);

	/* every order, unfiltered: 30 in pages of 10 and of 7 */
	n = all_order_ids(&ts, "", 10, got, 64, &pages);
	cr_assert_eq(n, 30);
	cr_assert_eq(pages, 3);
	n = all_order_ids(&ts, "", 7, got, 64, &pages);
	cr_assert_eq(n, 30);
	cr_assert_eq(pages, 5);
	/* a page that ends exactly at the last row says there is no next */
	json_t *page = list_ok(&ts, fd_test_P("/orders?customer_id=pager&after=%s&limit=5", made[19]));
	cr_assert_eq(json_array_size(rows(page, "orders")), 5);
	cr_assert(json_is_null(json_object_get(page, "next")));
	json_decref(page);
	/* after the last id: empty */
	page = list_ok(&ts, fd_test_P("/orders?customer_id=pager&after=%s", made[24]));
	cr_assert_eq(json_array_size(rows(page, "orders")), 0);
	cr_assert(json_is_null(json_object_get(page, "next")));
	json_decref(page);
	/* after in upper case is the same id; an id that is no order still orders the page */
	char upper[ID_LEN];
	for (int i = 0; i < ID_LEN; i++)
		upper[i] = (char)(made[9][i] >= 'a' && made[9][i] <= 'f' ? made[9][i] - 32 : made[9][i]);
	page = list_ok(&ts, fd_test_P("/orders?customer_id=pager&limit=1&after=%s", upper));
	cr_assert_str_eq(jstr(json_array_get(rows(page, "orders"), 0), "order_id"), made[10]);
	cr_assert_str_eq(json_string_value(json_object_get(page, "next")), made[10]);
	json_decref(page);
	page = list_ok(&ts, "/orders?customer_id=pager&limit=2&after=00000000-0000-0000-0000-000000000000");
	cr_assert_str_eq(jstr(json_array_get(rows(page, "orders"), 0), "order_id"), made[0]);
	json_decref(page);
	/* the default page is 100 rows, the limit can reach FACTD_MAX_READ_LIMIT */
	page = list_ok(&ts, fd_test_P("/orders?limit=%u", ts.cfg.max_read_limit));
	cr_assert_eq(json_array_size(rows(page, "orders")), 30);
	json_decref(page);
	fd_test_server_stop(&ts);
}

static void tweak_read_limit_3(struct fd_config *c)
{
	c->max_read_limit = 3;
}

Test(queries_orders, default_limit_is_capped_by_the_read_limit)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak_read_limit_3);
	char id[ID_LEN];
	for (int i = 0; i < 5; i++)
		create_order(&ts, "cap", id);
	json_t *page = list_ok(&ts, "/orders");
	cr_assert_eq(json_array_size(rows(page, "orders")), 3);
	cr_assert(json_is_string(json_object_get(page, "next")));
	json_decref(page);
	assert_bad_param(&ts, "/orders?limit=4", "limit");
	fd_test_server_stop(&ts);
}

Test(queries_orders, answers_come_from_the_read_model)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[ID_LEN];
	create_order(&ts, "c", id);
	add_line(&ts, id, "sku-1", 2, 50);
	json_decref(list_ok(&ts, "/orders"));
	/* change the row behind the projector's back: the list shows the row, the aggregate its events */
	PGconn *c = fd_test_connect(ts.db_url);
	PGresult *res = PQexec(c, "UPDATE order_summaries SET total_cents = 424242");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(res));
	PQclear(res);
	PQfinish(c);
	json_t *page = list_ok(&ts, "/orders");
	cr_assert_eq(jint(json_array_get(rows(page, "orders"), 0), "total_cents"), 424242);
	json_decref(page);
	json_t *agg = get_ok(&ts, fd_test_P("/orders/%s", id));
	cr_assert_eq(jint(agg, "total_cents"), 100);
	json_decref(agg);
	fd_test_server_stop(&ts);
}

/* ---- products ------------------------------------------------------------------- */

/*
 * A body exactly as jansson writes it compactly: no whitespace between
 * tokens, members in the order given.  The data below has no reals and no
 * integers past 64 bits, so re-encoding the parsed body changes nothing else.
 */
static void assert_compact(const struct fd_test_server *ts, const char *path)
{
	struct fd_test_resp r;
	send_req(ts, "GET", path, NULL, &r);
	cr_assert_eq(r.status, 200, "GET %s: %d %s", path, r.status, r.body);
	json_t *doc = json_loadb(r.body, r.body_len, 0, NULL);
	cr_assert(doc, "GET %s: not JSON: %s", path, r.body);
	char *want = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
	cr_assert_null(strstr(r.body, "\" : "), "GET %s has \" : \": %s", path, r.body);
	cr_assert_str_eq(r.body, want, "GET %s is not compact", path);
	free(want);
	json_decref(doc);
	fd_test_resp_free(&r);
}

static void tweak_sagas(struct fd_config *c)
{
	c->sagas = 1;
}

Test(queries_format, list_responses_are_compact_json)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak_sagas);
	json_decref(command(&ts, "POST", "/products", "{\"product_id\":\"p-1\",\"name\":\"Mug and jug\",\"stock\":5}", 201));
	json_decref(command(&ts, "POST", "/products", "{\"product_id\":\"p-2\",\"name\":\"a : b, c\",\"stock\":1}", 201));
	char o1[ID_LEN], o2[ID_LEN];
	create_order(&ts, "c : 1", o1);
	create_order(&ts, "c-2", o2);
	add_line(&ts, o1, "p-1", 2, 100);
	json_decref(command(&ts, "POST", fd_test_P("/orders/%s/place", o1), NULL, 200));
	struct fd_test_resp r;
	send_req(&ts, "POST", "/streams/notes-1/events",
		 "{\"expected_version\":0,\"events\":[{\"type\":\"Noted\",\"data\":{ \"text\" : \"x : y , z\","
		 " \"list\" : [ 1 , { } , [ ] , null , true ] },\"metadata\":{ \"who\" : \"me\" }}]}",
		 &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	note_position(fd_test_json_str(&r, "position"));
	fd_test_resp_free(&r);
	/* wait for the saga to have started, so its list is not empty */
	for (long end = fd_test_now_ms() + 10000;; fd_test_sleep_ms(20)) {
		json_t *sagas = get_ok(&ts, "/sagas");
		size_t n = json_array_size(json_object_get(sagas, "items"));
		json_decref(sagas);
		if (n > 0)
			break;
		cr_assert_lt(fd_test_now_ms(), end, "no saga started");
	}

	const char *paths[] = {
		fd_test_P("/orders?min_position=%s", last_pos), fd_test_P("/orders?limit=1&min_position=%s", last_pos),
		fd_test_P("/products?min_position=%s", last_pos), "/products?limit=1", "/sagas", "/sagas?limit=1",
		"/projections", "/events", "/events?limit=2", "/streams/notes-1/events", fd_test_P("/orders/%s/events", o1),
		"/products/p-1/events",
	};
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
		assert_compact(&ts, paths[i]);
	fd_test_server_stop(&ts);
}

Test(queries_products, stock_after_create_restock_and_reservations)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	json_decref(command(&ts, "POST", "/products", "{\"product_id\":\"p-1\",\"name\":\"Mug\",\"stock\":5}", 201));
	json_decref(command(&ts, "POST", "/products", "{\"product_id\":\"p-2\",\"name\":\"Book\",\"stock\":0}", 201));
	json_decref(command(&ts, "POST", "/products", "{\"product_id\":\"A.3\",\"name\":\"Pen\",\"stock\":1}", 201));
	json_decref(command(&ts, "POST", "/products/p-2/restock", "{\"quantity\":7}", 200));
	json_decref(command(&ts, "POST", "/products/p-1/restock", "{\"quantity\":3}", 200));

	json_t *page = list_ok(&ts, "/products");
	json_t *arr = rows(page, "products");
	cr_assert_eq(json_array_size(arr), 3, "%s", json_dumps(page, JSON_COMPACT));
	cr_assert(json_is_null(json_object_get(page, "next")));
	json_t *p1 = find_row(arr, "product_id", "p-1"), *p2 = find_row(arr, "product_id", "p-2");
	cr_assert(p1 && p2);
	cr_assert_eq(json_object_size(p1), 6, "%s", json_dumps(p1, JSON_COMPACT));
	cr_assert_str_eq(jstr(p1, "name"), "Mug");
	cr_assert_eq(jint(p1, "available"), 8);
	cr_assert_eq(jint(p1, "reserved"), 0);
	cr_assert_eq(jint(p1, "committed"), 0);
	cr_assert_eq(jint(p1, "version"), 2);
	cr_assert_eq(jint(p2, "available"), 7);
	json_decref(page);

	/* reservations move stock between the columns */
	char o1[ID_LEN], o2[ID_LEN];
	create_order(&ts, "c", o1);
	create_order(&ts, "c", o2);
	bus_cmd(&ts, &fd_product_type, "p-1", "reserve", json_pack("{s:s, s:i}", "order_id", o1, "quantity", 3));
	bus_cmd(&ts, &fd_product_type, "p-1", "reserve", json_pack("{s:s, s:i}", "order_id", o2, "quantity", 2));
	bus_cmd(&ts, &fd_product_type, "p-1", "commit", json_pack("{s:s}", "order_id", o1));
	bus_cmd(&ts, &fd_product_type, "p-1", "release", json_pack("{s:s}", "order_id", o2));
	page = list_ok(&ts, "/products?limit=1&after=A.3");
	arr = rows(page, "products");
	cr_assert_eq(json_array_size(arr), 1);
	p1 = json_array_get(arr, 0);
	cr_assert_str_eq(jstr(p1, "product_id"), "p-1");
	cr_assert_eq(jint(p1, "available"), 5);
	cr_assert_eq(jint(p1, "reserved"), 0);
	cr_assert_eq(jint(p1, "committed"), 3);
	cr_assert_eq(jint(p1, "version"), 6);
	cr_assert_str_eq(json_string_value(json_object_get(page, "next")), "p-1");
	json_decref(page);
	/* the view agrees */
	json_t *view = get_ok(&ts, "/products/p-1");
	cr_assert_eq(jint(view, "available"), 5);
	cr_assert_eq(jint(view, "committed"), 3);
	json_decref(view);
	fd_test_server_stop(&ts);
}

Test(queries_products, keyset_pages)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	for (int i = 0; i < 7; i++)
		json_decref(command(&ts, "POST", "/products", fd_test_P("{\"product_id\":\"sku-%02d\",\"name\":\"P%d\",\"stock\":%d}", i, i, i), 201));
	char after[80] = "";
	int seen = 0, pages = 0;
	for (;;) {
		json_t *page = list_ok(&ts, after[0] ? fd_test_P("/products?limit=3&after=%s", after) : "/products?limit=3");
		json_t *arr = rows(page, "products");
		pages++;
		size_t i;
		json_t *o;
		json_array_foreach(arr, i, o) {
			char want[16];
			snprintf(want, sizeof want, "sku-%02d", seen);
			cr_assert_str_eq(jstr(o, "product_id"), want);
			cr_assert_eq(jint(o, "available"), seen);
			seen++;
		}
		json_t *next = json_object_get(page, "next");
		if (json_is_null(next)) {
			json_decref(page);
			break;
		}
		snprintf(after, sizeof after, "%s", json_string_value(next));
		json_decref(page);
	}
	cr_assert_eq(seen, 7);
	cr_assert_eq(pages, 3);
	fd_test_server_stop(&ts);
}

/* ---- parameters ------------------------------------------------------------------ */

Test(queries_params, invalid_parameters_are_400_naming_them)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char long_customer[200];
	memset(long_customer, 'c', 129);
	long_customer[129] = '\0';
	char long_sku[80];
	memset(long_sku, 's', 65);
	long_sku[65] = '\0';
	static const char *const statuses[] = { "bogus", "", "Placed", "placed%20", "draft,placed" };
	for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
		assert_bad_param(&ts, fd_test_P("/orders?status=%s", statuses[i]), "status");
	assert_bad_param(&ts, "/orders?customer_id=", "customer_id");
	assert_bad_param(&ts, fd_test_P("/orders?customer_id=%s", long_customer), "customer_id");
	assert_bad_param(&ts, "/orders?customer_id=%FF%FE", "customer_id");
	static const char *const afters[] = { "", "not-a-uuid", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5", "0" };
	for (size_t i = 0; i < sizeof afters / sizeof afters[0]; i++)
		assert_bad_param(&ts, fd_test_P("/orders?after=%s", afters[i]), "after");
	static const char *const limits[] = { "0", "-1", "abc", "", "1001", "10x", "+5", "99999999999999999999" };
	for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
		assert_bad_param(&ts, fd_test_P("/orders?limit=%s", limits[i]), "limit");
		assert_bad_param(&ts, fd_test_P("/products?limit=%s", limits[i]), "limit");
	}
	static const char *const positions[] = { "", "x", "1-", "-1", "1-2-3", "abc-1" };
	for (size_t i = 0; i < sizeof positions / sizeof positions[0]; i++) {
		assert_bad_param(&ts, fd_test_P("/orders?min_position=%s", positions[i]), "min_position");
		assert_bad_param(&ts, fd_test_P("/products?min_position=%s", positions[i]), "min_position");
	}
	assert_bad_param(&ts, "/products?after=", "after");
	assert_bad_param(&ts, "/products?after=bad%20sku", "after");
	assert_bad_param(&ts, fd_test_P("/products?after=%s", long_sku), "after");
	/* parameters are checked before any wait: a bad limit with an unreachable position is 400 at once */
	long t0 = fd_test_now_ms();
	assert_bad_param(&ts, "/orders?min_position=999999999-1&limit=0", "limit");
	cr_assert_lt(fd_test_now_ms() - t0, 2000);
	/* the edges that are valid (min_position=0 waits until the projector has set its tables up) */
	json_decref(list_ok(&ts, "/orders?limit=1000"));
	json_decref(list_ok(&ts, "/orders?limit=1"));
	json_decref(list_ok(&ts, fd_test_P("/orders?customer_id=%.128s", long_customer)));
	json_decref(list_ok(&ts, fd_test_P("/products?after=%.64s", long_sku)));
	fd_test_server_stop(&ts);
}

/* ---- read-your-writes ------------------------------------------------------------- */

Test(queries_min_position, an_unreached_position_is_503_with_retry_after_in_bounded_time)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak_wait_300);
	char id[ID_LEN];
	create_order(&ts, "c", id);
	static const char *const paths[] = { "/orders?min_position=999999999-1", "/products?min_position=999999999-1" };
	for (size_t i = 0; i < 2; i++) {
		struct fd_test_resp r;
		long t0 = fd_test_now_ms();
		send_req(&ts, "GET", paths[i], NULL, &r);
		long took = fd_test_now_ms() - t0;
		fd_test_assert_problem(&r, 503, "projection-behind");
		cr_assert_str_eq(header(&r, "Retry-After"), "1");
		cr_assert_str_eq(fd_test_json_str(&r, "min_position"), "999999999-1");
		cr_assert_str_eq(fd_test_json_str(&r, "projection"), i == 0 ? "order_summaries" : "product_stock");
		cr_assert_geq(took, 300, "answered after %ld ms, before the wait ran out", took);
		cr_assert_lt(took, 3000, "answered after %ld ms", took);
		fd_test_resp_free(&r);
	}
	/* a reached position answers at once */
	json_t *page = list_ok(&ts, "/orders");
	cr_assert_eq(json_array_size(rows(page, "orders")), 1);
	json_decref(page);
	fd_test_server_stop(&ts);
}

Test(queries_min_position, every_write_is_visible_right_after_it, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[ID_LEN];
	create_order(&ts, "c", id);
	for (int i = 1; i <= 15; i++) {
		add_line(&ts, id, fd_test_P("sku-%d", i), i, 10);
		json_t *page = list_ok(&ts, "/orders");
		json_t *o = json_array_get(rows(page, "orders"), 0);
		cr_assert_eq(jint(o, "line_count"), i, "after line %d", i);
		cr_assert_eq(jint(o, "version"), i + 1);
		json_decref(page);
	}
	fd_test_server_stop(&ts);
}

Test(queries_min_position, a_position_of_another_category_is_reached)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak_wait_long);
	char id[ID_LEN];
	create_order(&ts, "c", id);
	json_t *r = command(&ts, "POST", "/products", "{\"product_id\":\"p-1\",\"name\":\"P\",\"stock\":1}", 201);
	char product_pos[FD_CURSOR_STRLEN];
	snprintf(product_pos, sizeof product_pos, "%s", jstr(r, "position"));
	json_decref(r);
	/* order_summaries reads no product events, yet it has passed that position */
	json_t *page = get_ok(&ts, fd_test_P("/orders?min_position=%s", product_pos));
	cr_assert_eq(json_array_size(rows(page, "orders")), 1);
	json_decref(page);
	/* and the event store's own appends are positions too */
	r = command(&ts, "POST", "/streams/misc-1/events",
		    "{\"expected_version\":\"any\",\"events\":[{\"type\":\"Noted\",\"data\":{}}]}", 201);
	page = get_ok(&ts, fd_test_P("/products?min_position=%s", jstr(r, "position")));
	cr_assert_eq(json_array_size(rows(page, "products")), 1);
	json_decref(page);
	json_decref(r);
	fd_test_server_stop(&ts);
}

/* ---- projections ------------------------------------------------------------------ */

/* The entry for `name` of GET /projections (new reference). */
static json_t *projection(const struct fd_test_server *ts, const char *name)
{
	json_t *doc = get_ok(ts, "/projections");
	json_t *arr = json_object_get(doc, "projections");
	cr_assert(json_is_array(arr), "%s", json_dumps(doc, JSON_COMPACT));
	json_t *p = json_incref(find_row(arr, "name", name));
	json_decref(doc);
	cr_assert(p, "no projection %s", name);
	return p;
}

Test(queries_projections, both_show_lag_zero_after_a_wait)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[ID_LEN];
	create_order(&ts, "c", id);
	add_line(&ts, id, "p-1", 1, 5);
	json_decref(command(&ts, "POST", "/products", "{\"product_id\":\"p-1\",\"name\":\"P\",\"stock\":1}", 201));
	json_decref(list_ok(&ts, "/orders"));
	json_decref(list_ok(&ts, "/products"));

	json_t *doc = get_ok(&ts, "/projections");
	json_t *arr = json_object_get(doc, "projections");
	cr_assert_eq(json_array_size(arr), 2, "%s", json_dumps(doc, JSON_COMPACT));
	static const char *const names[] = { "order_summaries", "product_stock" };
	struct fd_cursor want, at, head;
	cr_assert(fd_cursor_parse(last_pos, &want));
	for (size_t i = 0; i < 2; i++) {
		json_t *p = find_row(arr, "name", names[i]);
		cr_assert(p, "no %s in %s", names[i], json_dumps(doc, JSON_COMPACT));
		cr_assert_eq(jint(p, "lag_events"), 0, "%s", json_dumps(p, JSON_COMPACT));
		cr_assert(json_is_number(json_object_get(p, "lag_seconds")));
		cr_assert_eq(json_number_value(json_object_get(p, "lag_seconds")), 0.0);
		cr_assert_str_eq(jstr(p, "status"), "live");
		cr_assert(fd_cursor_parse(jstr(p, "checkpoint"), &at), "%s", json_dumps(p, JSON_COMPACT));
		cr_assert(fd_cursor_parse(jstr(p, "head"), &head));
		cr_assert_geq(fd_cursor_cmp(&at, &want), 0, "%s is behind %s", jstr(p, "checkpoint"), last_pos);
		cr_assert_eq(fd_cursor_cmp(&head, &want), 0, "head %s, last write %s", jstr(p, "head"), last_pos);
		cr_assert(json_is_null(json_object_get(p, "rebuild")));
	}
	json_decref(doc);
	fd_test_server_stop(&ts);
}

Test(queries_projections, rebuild_of_an_unknown_projection_is_404)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	send_req(&ts, "POST", "/projections/nope/rebuild", NULL, &r);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	send_req(&ts, "GET", "/projections/order_summaries/rebuild", NULL, &r);
	cr_assert_eq(r.status, 405);
	cr_assert_str_eq(header(&r, "Allow"), "POST");
	fd_test_resp_free(&r);
	send_req(&ts, "DELETE", "/projections", NULL, &r);
	cr_assert_eq(r.status, 405);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM projections WHERE rebuild_requested"), 0);
	fd_test_server_stop(&ts);
}

Test(queries_projections, without_a_projector_reads_are_503_and_status_is_stopped)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak_no_projector);
	char id[ID_LEN];
	create_order(&ts, "c", id);
	struct fd_test_resp r;
	send_req(&ts, "GET", "/orders", NULL, &r);
	fd_test_assert_problem(&r, 503, "database-unavailable");
	cr_assert_str_eq(header(&r, "Retry-After"), "1");
	fd_test_resp_free(&r);
	send_req(&ts, "GET", "/products", NULL, &r);
	fd_test_assert_problem(&r, 503, "database-unavailable");
	fd_test_resp_free(&r);
	send_req(&ts, "GET", fd_test_P("/orders?min_position=%s", last_pos), NULL, &r);
	fd_test_assert_problem(&r, 503, "projection-behind");
	fd_test_resp_free(&r);
	json_t *p = projection(&ts, "order_summaries");
	cr_assert_str_eq(jstr(p, "status"), "stopped");
	cr_assert_geq(jint(p, "lag_events"), 1);
	json_decref(p);
	fd_test_server_stop(&ts);
}

/* ---- rebuild under load ------------------------------------------------------------ */

struct load {
	uint16_t port;
	atomic_bool stop;
	/* the reader's */
	char (*before)[ID_LEN]; /* sorted ids that existed before the rebuild */
	size_t nbefore;
	atomic_long reads;
	long bad_reads;
	char first_bad[512];
	/* the writer's */
	long writes;
	long bad_writes;
	char last_pos[FD_CURSOR_STRLEN];
};

static void note_bad(char *buf, size_t len, const char *what, const struct fd_test_resp *r)
{
	if (!buf[0])
		snprintf(buf, len, "%s: %d %.300s", what, r ? r->status : 0, r && r->body ? r->body : "");
}

static void *writer_main(void *arg)
{
	struct load *l = arg;
	char body[160], path[160];
	for (int i = 0; !atomic_load(&l->stop); i++) {
		struct fd_test_resp r = { 0 };
		snprintf(body, sizeof body, "{\"customer_id\":\"w-%d\"}", i % 3);
		if (fd_test_http(l->port, "POST", "/orders", NULL, body, strlen(body), &r) != 0 || r.status != 201 ||
		    !fd_test_json_str(&r, "order_id")) {
			l->bad_writes++;
			fd_test_resp_free(&r);
			continue;
		}
		snprintf(path, sizeof path, "/orders/%s/lines", fd_test_json_str(&r, "order_id"));
		fd_test_resp_free(&r);
		snprintf(body, sizeof body, "{\"product_id\":\"sku-%d\",\"quantity\":%d,\"unit_price_cents\":%d}", i % 4,
			 1 + i % 3, 100 + i);
		if (fd_test_http(l->port, "POST", path, NULL, body, strlen(body), &r) != 0 || r.status != 200 ||
		    !fd_test_json_str(&r, "position")) {
			l->bad_writes++;
		} else {
			snprintf(l->last_pos, sizeof l->last_pos, "%s", fd_test_json_str(&r, "position"));
			l->writes++;
		}
		fd_test_resp_free(&r);
	}
	return NULL;
}

/* Page through GET /orders; every id from before the rebuild must be there. */
static void *reader_main(void *arg)
{
	struct load *l = arg;
	size_t cap = 20000;
	char (*seen)[ID_LEN] = malloc(cap * ID_LEN);
	while (!atomic_load(&l->stop) && seen) {
		size_t n = 0;
		char path[200], after[ID_LEN] = "";
		bool ok = true;
		for (;;) {
			struct fd_test_resp r = { 0 };
			snprintf(path, sizeof path, "/orders?limit=500%s%s", after[0] ? "&after=" : "", after);
			if (fd_test_http(l->port, "GET", path, NULL, NULL, 0, &r) != 0 || r.status != 200 ||
			    !json_is_array(json_object_get(r.json, "orders"))) {
				note_bad(l->first_bad, sizeof l->first_bad, path, &r);
				fd_test_resp_free(&r);
				ok = false;
				break;
			}
			size_t i;
			json_t *o;
			json_array_foreach(json_object_get(r.json, "orders"), i, o) {
				if (n < cap)
					snprintf(seen[n++], ID_LEN, "%s", jstr(o, "order_id"));
			}
			json_t *next = json_object_get(r.json, "next");
			bool more = json_is_string(next);
			if (more)
				snprintf(after, sizeof after, "%s", json_string_value(next));
			fd_test_resp_free(&r);
			if (!more)
				break;
		}
		if (ok && n == 0) {
			note_bad(l->first_bad, sizeof l->first_bad, "an empty list", NULL);
			ok = false;
		}
		for (size_t i = 0; ok && i < l->nbefore; i++) {
			if (!bsearch(l->before[i], seen, n, ID_LEN, cmp_id)) {
				char what[128];
				snprintf(what, sizeof what, "order %s missing from a list of %zu", l->before[i], n);
				note_bad(l->first_bad, sizeof l->first_bad, what, NULL);
				ok = false;
			}
		}
		atomic_fetch_add(&l->reads, 1);
		if (!ok)
			l->bad_reads++;
	}
	free(seen);
	return NULL;
}

/* Poll GET /projections until `name` has finished rebuilding; returns the statuses seen on the way. */
static void wait_rebuilt(const struct fd_test_server *ts, const char *name, bool *saw_rebuilding)
{
	long deadline = fd_test_now_ms() + 90000;
	*saw_rebuilding = false;
	for (;;) {
		json_t *p = projection(ts, name);
		const char *st = jstr(p, "status");
		bool busy = strcmp(st, "rebuilding") == 0 || strcmp(st, "rebuild_requested") == 0 ||
			    !json_is_null(json_object_get(p, "rebuild"));
		*saw_rebuilding = *saw_rebuilding || strcmp(st, "rebuilding") == 0;
		json_decref(p);
		if (!busy)
			return;
		cr_assert_lt(fd_test_now_ms(), deadline, "%s still rebuilding", name);
		fd_test_sleep_ms(20);
	}
}

static long long table_oid(const struct fd_test_server *ts, const char *table)
{
	char sql[128];
	snprintf(sql, sizeof sql, "SELECT '%s'::regclass::oid::bigint", table);
	return fd_test_server_scalar(ts, sql);
}

Test(queries_rebuild, readers_never_miss_a_row_and_the_copy_equals_the_aggregates, .timeout = 300)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	enum { N = 200 }; /* enough events for the copy to take several batches */
	char (*ids)[ID_LEN] = calloc(N, ID_LEN);
	for (int i = 0; i < N; i++) {
		create_order(&ts, i % 2 ? "odd" : "even", ids[i]);
		for (int k = 0; k < 1 + i % 4; k++)
			add_line(&ts, ids[i], fd_test_P("sku-%d", k), 1 + k, 100 * (k + 1));
		if (i % 7 == 1 && i % 4 != 0)
			json_decref(command(&ts, "DELETE", fd_test_P("/orders/%s/lines/sku-0", ids[i]), NULL, 200));
		if (i % 3 == 0)
			json_decref(command(&ts, "POST", fd_test_P("/orders/%s/place", ids[i]), NULL, 200));
		if (i % 6 == 0)
			json_decref(command(&ts, "POST", fd_test_P("/orders/%s/cancel", ids[i]), "{\"reason\":\"r\"}", 200));
	}
	json_decref(list_ok(&ts, "/orders"));
	qsort(ids, N, ID_LEN, cmp_id);
	long long oid_before = table_oid(&ts, "order_summaries");

	struct load l = { .port = ts.port, .before = ids, .nbefore = N };
	atomic_init(&l.stop, false);
	atomic_init(&l.reads, 0);
	pthread_t writer, reader;
	cr_assert_eq(pthread_create(&writer, NULL, writer_main, &l), 0);
	cr_assert_eq(pthread_create(&reader, NULL, reader_main, &l), 0);
	fd_test_sleep_ms(200);

	struct fd_test_resp r;
	send_req(&ts, "POST", "/projections/order_summaries/rebuild", NULL, &r);
	long reads_at_request = atomic_load(&l.reads);
	cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
	cr_assert_str_eq(fd_test_json_str(&r, "name"), "order_summaries");
	cr_assert_str_eq(fd_test_json_str(&r, "status"), "rebuild requested");
	fd_test_resp_free(&r);
	bool saw_rebuilding;
	wait_rebuilt(&ts, "order_summaries", &saw_rebuilding);
	long reads_during = atomic_load(&l.reads) - reads_at_request;
	fd_test_sleep_ms(200);
	atomic_store(&l.stop, true);
	pthread_join(writer, NULL);
	pthread_join(reader, NULL);

	cr_assert_gt(reads_during, 0, "the reader finished no read while the rebuild ran");
	cr_assert_eq(l.bad_reads, 0, "%ld of %ld reads were wrong; first: %s", l.bad_reads, atomic_load(&l.reads),
		     l.first_bad);
	cr_assert_eq(l.bad_writes, 0, "%ld writes failed", l.bad_writes);
	cr_assert_gt(l.writes, 0, "the writer wrote nothing");
	cr_assert_neq(table_oid(&ts, "order_summaries"), oid_before, "the table was not replaced");
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM pg_class WHERE relname LIKE 'order\\_summaries\\_next%'"
						" AND relkind = 'r'"),
		     0, "a copy of the table was left behind");

	/* the rebuilt model agrees with the aggregates, for the orders from before and during the rebuild */
	note_position(l.last_pos);
	size_t cap = N + 4 * (size_t)l.writes + 16, pages;
	char (*all)[ID_LEN] = calloc(cap, ID_LEN);
	json_t *page = list_ok(&ts, "/orders?limit=1");
	json_decref(page);
	size_t n = all_order_ids(&ts, "", 37, all, cap, &pages);
	long long orders = fd_test_server_scalar(&ts, "SELECT count(*) FROM streams WHERE category = 'order'");
	cr_assert_eq((long long)n, orders, "%zu rows, %lld orders", n, orders);
	char after[ID_LEN] = "";
	size_t checked = 0;
	for (;;) {
		page = list_ok(&ts, after[0] ? fd_test_P("/orders?limit=100&after=%s", after) : "/orders?limit=100");
		size_t i;
		json_t *o;
		json_array_foreach(rows(page, "orders"), i, o) {
			json_t *agg = get_ok(&ts, fd_test_P("/orders/%s", jstr(o, "order_id")));
			cr_assert_str_eq(jstr(o, "status"), jstr(agg, "status"), "order %s", jstr(o, "order_id"));
			cr_assert_str_eq(jstr(o, "customer_id"), jstr(agg, "customer_id"));
			cr_assert_eq((size_t)jint(o, "line_count"), json_array_size(json_object_get(agg, "lines")),
				     "order %s", jstr(o, "order_id"));
			long long total = 0;
			size_t k;
			json_t *line;
			json_array_foreach(json_object_get(agg, "lines"), k, line)
				total += jint(line, "quantity") * jint(line, "unit_price_cents");
			cr_assert_eq(jint(o, "total_cents"), total, "order %s", jstr(o, "order_id"));
			cr_assert_eq(jint(o, "total_cents"), jint(agg, "total_cents"));
			cr_assert_eq(jint(o, "version"), jint(agg, "version"), "order %s", jstr(o, "order_id"));
			json_decref(agg);
			checked++;
		}
		json_t *next = json_object_get(page, "next");
		bool more = json_is_string(next);
		if (more)
			snprintf(after, sizeof after, "%s", json_string_value(next));
		json_decref(page);
		if (!more)
			break;
	}
	cr_assert_eq(checked, n);
	json_t *p = projection(&ts, "order_summaries");
	cr_assert_str_eq(jstr(p, "status"), "live");
	cr_assert_eq(jint(p, "lag_events"), 0);
	json_decref(p);
	free(all);
	free(ids);
	fd_test_server_stop(&ts);
}

Test(queries_rebuild, product_stock_is_rebuilt_equal_to_the_aggregates, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char order[ID_LEN];
	create_order(&ts, "c", order);
	for (int i = 0; i < 12; i++) {
		json_decref(command(&ts, "POST", "/products", fd_test_P("{\"product_id\":\"p-%02d\",\"name\":\"N%d\",\"stock\":%d}", i, i, 10 + i), 201));
		if (i % 2)
			json_decref(command(&ts, "POST", fd_test_P("/products/p-%02d/restock", i), "{\"quantity\":5}", 200));
		if (i % 3 == 0)
			bus_cmd(&ts, &fd_product_type, fd_test_P("p-%02d", i), "reserve",
				json_pack("{s:s, s:i}", "order_id", order, "quantity", 4));
	}
	json_t *before = list_ok(&ts, "/products");
	long long oid_before = table_oid(&ts, "product_stock");
	json_decref(command(&ts, "POST", "/products/p-00/restock", "{\"quantity\":1}", 200));

	struct fd_test_resp r;
	send_req(&ts, "POST", "/projections/product_stock/rebuild", NULL, &r);
	cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
	fd_test_resp_free(&r);
	bool saw;
	wait_rebuilt(&ts, "product_stock", &saw);
	cr_assert_neq(table_oid(&ts, "product_stock"), oid_before, "the table was not replaced");

	json_t *after = list_ok(&ts, "/products");
	json_t *arr = rows(after, "products");
	cr_assert_eq(json_array_size(arr), 12);
	size_t i;
	json_t *o;
	json_array_foreach(arr, i, o) {
		json_t *view = get_ok(&ts, fd_test_P("/products/%s", jstr(o, "product_id")));
		cr_assert_str_eq(jstr(o, "name"), jstr(view, "name"));
		cr_assert_eq(jint(o, "available"), jint(view, "available"), "%s", jstr(o, "product_id"));
		cr_assert_eq(jint(o, "reserved"), jint(view, "reserved"), "%s", jstr(o, "product_id"));
		cr_assert_eq(jint(o, "committed"), jint(view, "committed"));
		cr_assert_eq(jint(o, "version"), jint(view, "version"));
		json_decref(view);
		json_t *old = find_row(rows(before, "products"), "product_id", jstr(o, "product_id"));
		cr_assert(old);
		if (strcmp(jstr(o, "product_id"), "p-00") != 0)
			cr_assert(json_equal(old, o), "%s changed by the rebuild", jstr(o, "product_id"));
		else
			cr_assert_eq(jint(o, "available"), jint(old, "available") + 1);
	}
	json_decref(after);
	json_decref(before);
	fd_test_server_stop(&ts);
}
