/*
 * test_http_domain.c - the REST endpoints of the reference domain (orders,
 * products, payments) against a real PostgreSQL: every command's success
 * answer and each of its error statuses (400 with "field", 404, 405, 409
 * with the refusal slug as the problem type, 412, 415, 422), the views and
 * their ETags, point-in-time reads (?version= and ?at=, also with snapshots
 * present, compared with a server that has snapshots switched off), the
 * event history endpoint, request metadata on recorded events, If-Match,
 * Idempotency-Key (also with concurrent twins), the payment gateway
 * simulator's answers, and eight concurrent writers on one order.
 *
 * Each test starts its own in-process server on its own database (criterion
 * runs tests in parallel processes).  "Nothing recorded" is checked by
 * counting rows of events over a direct connection.  Worker threads only
 * record what happened; the assertions run on the test's main thread.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "factd/bus.h"
#include "shop.h"
#include "factd/events.h"
#include "factd/hash.h"
#include "http/problem.h"
#include "factd/timeutil.h"
#include "factd/uuid.h"
#include "http_client.h"
#define FD_TEST_APP (&shop_app) /* the shop's routes and types */
#include "shop.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------------ */

/* The wall clock as RFC 3339 with microseconds, into buf (>= 32 bytes). */
static void now_rfc3339(char *buf, size_t len)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	fd_time_format_rfc3339((int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000, buf, len);
}

/* Any request; body NULL sends none (and no Content-Length). */
static void send_req(const struct fd_test_server *ts, const char *method, const char *path, const char *headers,
		     const char *body, struct fd_test_resp *r)
{
	cr_assert_eq(fd_test_http(ts->port, method, path, headers, body, body ? strlen(body) : 0, r), 0,
		     "%s %s: no connection", method, path);
	cr_assert(r->status > 0, "%s %s: no response", method, path);
}

static void get(const struct fd_test_server *ts, const char *path, struct fd_test_resp *r)
{
	send_req(ts, "GET", path, NULL, NULL, r);
}

static void post(const struct fd_test_server *ts, const char *path, const char *body, struct fd_test_resp *r)
{
	send_req(ts, "POST", path, NULL, body, r);
}

static const char *header(const struct fd_test_resp *r, const char *name)
{
	static char buf[4][512];
	static int next;
	char *b = buf[next++ % 4];
	return fd_test_header(r, name, b, sizeof buf[0]);
}

static long long count_events(const struct fd_test_server *ts)
{
	return fd_test_server_scalar(ts, "SELECT count(*) FROM events");
}

static void assert_events(const struct fd_test_server *ts, long long want)
{
	long long n = count_events(ts);
	cr_assert_eq(n, want, "events: %lld rows, expected %lld", n, want);
}

static int is_canonical_uuid(const char *s)
{
	struct fd_uuid u;
	char again[FD_UUID_STRLEN + 1];
	if (!s || !fd_uuid_parse(s, &u))
		return 0;
	fd_uuid_format(&u, again);
	return strcmp(again, s) == 0;
}

static int is_cursor(const char *s)
{
	struct fd_cursor c;
	return s && fd_cursor_parse(s, &c) && strcmp(s, "0-0") != 0 && strchr(s, '-');
}

static void assert_json_ct(const struct fd_test_resp *r)
{
	const char *ct = header(r, "Content-Type");
	cr_assert(ct, "no Content-Type; head: %s", r->head);
	cr_assert_str_eq(ct, "application/json");
	cr_assert(json_is_object(r->json), "body is not a JSON object: %s", r->body);
}

/*
 * A command's success answer: status, exactly {<id_field>, version,
 * position}, the id (when given), the version also as ETag.
 */
static void assert_command_ok(const struct fd_test_resp *r, int status, const char *id_field, const char *id,
			      long long version)
{
	cr_assert_eq(r->status, status, "status %d, expected %d: %s", r->status, status, r->body);
	assert_json_ct(r);
	cr_assert_eq(json_object_size(r->json), 3, "unexpected members: %s", r->body);
	const char *got = fd_test_json_str(r, id_field);
	cr_assert(got, "no %s: %s", id_field, r->body);
	if (id)
		cr_assert_str_eq(got, id);
	cr_assert_eq(fd_test_json_int(r, "version"), version, "%s", r->body);
	cr_assert(is_cursor(fd_test_json_str(r, "position")), "position: %s", r->body);
	char etag[32];
	snprintf(etag, sizeof etag, "\"%lld\"", version);
	const char *h = header(r, "ETag");
	cr_assert(h, "no ETag; head: %s", r->head);
	cr_assert_str_eq(h, etag);
}

/* 400 invalid-field naming `field` (a JSON pointer). */
static void assert_field_problem(const struct fd_test_resp *r, const char *field)
{
	fd_test_assert_problem(r, 400, "invalid-field");
	const char *f = fd_test_json_str(r, "field");
	cr_assert(f, "no field member: %s", r->body);
	cr_assert_str_eq(f, field, "body: %s", r->body);
}

/* A refusal: the status, the slug as the type, and the title given. */
static void assert_refusal(const struct fd_test_resp *r, int status, const char *slug, const char *title)
{
	fd_test_assert_problem(r, status, slug);
	if (title)
		cr_assert_str_eq(fd_test_json_str(r, "title"), title, "body: %s", r->body);
}

/*
 * A refusal of POST /payments/{id}/process.  Its "detail" is checked on its
 * own (process_refusals_have_detail), so that these tests judge the rest.
 */
static void assert_process_refusal(const struct fd_test_resp *r, int status, const char *slug, const char *title)
{
	fd_test_assert_problem_no_detail(r, status, slug);
	if (title)
		cr_assert_str_eq(fd_test_json_str(r, "title"), title, "body: %s", r->body);
}

/* POST /orders; returns the new order's id in out. */
static void create_order(const struct fd_test_server *ts, const char *customer, char out[FD_UUID_STRLEN + 1])
{
	struct fd_test_resp r;
	char *body = fd_test_fmt("{\"customer_id\":\"%s\"}", customer);
	post(ts, "/orders", body, &r);
	assert_command_ok(&r, 201, "order_id", NULL, 1);
	const char *id = fd_test_json_str(&r, "order_id");
	cr_assert(is_canonical_uuid(id), "order_id %s", id);
	snprintf(out, FD_UUID_STRLEN + 1, "%s", id);
	fd_test_resp_free(&r);
	free(body);
}

static long long add_line(const struct fd_test_server *ts, const char *order, const char *sku, long long quantity,
			  long long price)
{
	struct fd_test_resp r;
	char *path = fd_test_fmt("/orders/%s/lines", order);
	char *body = fd_test_fmt("{\"product_id\":\"%s\",\"quantity\":%lld,\"unit_price_cents\":%lld}", sku, quantity, price);
	post(ts, path, body, &r);
	cr_assert_eq(r.status, 200, "add_line %s: %d %s", sku, r.status, r.body);
	long long v = fd_test_json_int(&r, "version");
	fd_test_resp_free(&r);
	free(path);
	free(body);
	return v;
}

/* A command on /orders/{id}/<what> with no body; returns the response in r. */
static void order_cmd(const struct fd_test_server *ts, const char *order, const char *what, const char *body,
		      struct fd_test_resp *r)
{
	char *path = fd_test_fmt("/orders/%s/%s", order, what);
	send_req(ts, "POST", path, NULL, body, r);
	free(path);
}

/* GET path, assert 200, return the body (a new reference). */
static json_t *get_ok(const struct fd_test_server *ts, const char *path)
{
	struct fd_test_resp r;
	get(ts, path, &r);
	cr_assert_eq(r.status, 200, "GET %s: %d %s", path, r.status, r.body);
	assert_json_ct(&r);
	json_t *j = json_incref(r.json);
	fd_test_resp_free(&r);
	return j;
}

static json_t *get_order(const struct fd_test_server *ts, const char *id)
{
	char *path = fd_test_fmt("/orders/%s", id);
	json_t *j = get_ok(ts, path);
	free(path);
	return j;
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

/* The events array of /orders/{id}/events (a new reference). */
static json_t *order_events(const struct fd_test_server *ts, const char *id)
{
	char *path = fd_test_fmt("/orders/%s/events?limit=1000", id);
	json_t *page = get_ok(ts, path);
	json_t *events = json_incref(json_object_get(page, "events"));
	cr_assert(json_is_array(events), "no events array");
	json_decref(page);
	free(path);
	return events;
}

static json_t *event_meta(json_t *events, size_t i)
{
	return json_object_get(json_array_get(events, i), "metadata");
}

/* Send the order's confirm command straight through the bus (it has no HTTP route). */
static void confirm_order(struct fd_test_server *ts, const char *id)
{
	struct fd_cmd_result res;
	json_t *payload = json_object();
	enum fd_err err = fd_bus_send(ts->bus, &fd_order_type, id, "confirm", payload, NULL, &res);
	cr_assert_eq(err, FD_OK, "confirm: %s", fd_err_name(err));
	fd_cmd_result_release(&res);
	json_decref(payload);
}

static void tweak_snap3(struct fd_config *c)
{
	c->snapshot_every = 3;
}

static void tweak_snap0(struct fd_config *c)
{
	c->snapshot_every = 0;
}

static void tweak_limit_5000(struct fd_config *c)
{
	(void)c; /* the shop's services read their settings from the environment at start */
	setenv("FACTD_PAYMENT_LIMIT_CENTS", "5000", 1);
}

static void tweak_fail_first_2(struct fd_config *c)
{
	(void)c;
	setenv("FACTD_PAYMENT_FAIL_FIRST", "2", 1);
}

static void tweak_never_answer(struct fd_config *c)
{
	(void)c;
	setenv("FACTD_PAYMENT_NEVER_ANSWER", "1", 1);
}

/* ---- orders: commands that succeed -------------------------------------------------- */

Test(domain_orders, create_answers_201_with_id_location_and_etag)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	post(&ts, "/orders", "{\"customer_id\":\"c-1\"}", &r);
	assert_command_ok(&r, 201, "order_id", NULL, 1);
	const char *id = fd_test_json_str(&r, "order_id");
	cr_assert(is_canonical_uuid(id), "server-made order_id %s is not a canonical UUID", id);
	char *loc = fd_test_fmt("/orders/%s", id);
	cr_assert_str_eq(header(&r, "Location"), loc);
	cr_assert_null(header(&r, "Idempotent-Replayed"), "a first request is not a replay");
	char first[FD_UUID_STRLEN + 1];
	snprintf(first, sizeof first, "%s", id);
	fd_test_resp_free(&r);

	/* The state reads back exactly. */
	get(&ts, loc, &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	assert_json_ct(&r);
	cr_assert_str_eq(header(&r, "ETag"), "\"1\"");
	json_t *want = json_pack("{s:s, s:s, s:s, s:[], s:i, s:i}", "order_id", first, "customer_id", "c-1", "status",
				 "draft", "lines", "total_cents", 0, "version", 1);
	cr_assert(json_equal(r.json, want), "view: %s", r.body);
	json_decref(want);
	fd_test_resp_free(&r);

	/* A second create gets another id. */
	char second[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-1", second);
	cr_assert_str_neq(first, second);
	assert_events(&ts, 2);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM events WHERE type = 'OrderCreated'"), 2);
	free(loc);
	fd_test_server_stop(&ts);
}

Test(domain_orders, create_with_client_id_then_order_exists)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(id);
	char *body = fd_test_fmt("{\"order_id\":\"%s\",\"customer_id\":\"c-9\"}", id);
	struct fd_test_resp r;
	post(&ts, "/orders", body, &r);
	assert_command_ok(&r, 201, "order_id", id, 1);
	char *loc = fd_test_fmt("/orders/%s", id);
	cr_assert_str_eq(header(&r, "Location"), loc);
	fd_test_resp_free(&r);
	json_t *o = get_order(&ts, id);
	cr_assert_str_eq(jstr(o, "customer_id"), "c-9");
	cr_assert_str_eq(jstr(o, "order_id"), id);
	json_decref(o);

	/* Again: the rule refuses, nothing is recorded. */
	post(&ts, "/orders", body, &r);
	assert_refusal(&r, 409, "order-exists", "Order already exists");
	fd_test_resp_free(&r);
	assert_events(&ts, 1);
	free(body);
	free(loc);
	fd_test_server_stop(&ts);
}

/*
 * A client-chosen order id in upper case names the same UUID as its lower-case
 * form: factd answers the canonical (lower-case) id, the order is found under
 * it, and the same UUID cannot create a second order.
 */
Test(domain_orders, client_id_in_upper_case_is_canonicalised)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char lower[FD_UUID_STRLEN + 1], upper[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(lower);
	for (size_t i = 0; i <= FD_UUID_STRLEN; i++)
		upper[i] = (char)(lower[i] >= 'a' && lower[i] <= 'f' ? lower[i] - 'a' + 'A' : lower[i]);
	cr_assert_str_neq(lower, upper, "the UUID has letters to upper-case");
	char *body = fd_test_fmt("{\"order_id\":\"%s\",\"customer_id\":\"c-up\"}", upper);
	struct fd_test_resp r;
	post(&ts, "/orders", body, &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	cr_assert_str_eq(fd_test_json_str(&r, "order_id"), lower, "the answer should carry the canonical id: %s", r.body);
	fd_test_resp_free(&r);

	char *path = fd_test_fmt("/orders/%s", lower);
	get(&ts, path, &r);
	cr_assert_eq(r.status, 200, "the order is not found under its canonical id: %d %s", r.status, r.body);
	cr_assert_str_eq(fd_test_json_str(&r, "customer_id"), "c-up");
	fd_test_resp_free(&r);

	char *again = fd_test_fmt("{\"order_id\":\"%s\",\"customer_id\":\"c-other\"}", lower);
	post(&ts, "/orders", again, &r);
	fd_test_assert_problem(&r, 409, "order-exists");
	fd_test_resp_free(&r);
	assert_events(&ts, 1);
	free(body);
	free(path);
	free(again);
	fd_test_server_stop(&ts);
}

Test(domain_orders, lines_merge_remove_place_and_cancel)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-2", id);
	struct fd_test_resp r;
	char *lines = fd_test_fmt("/orders/%s/lines", id);

	post(&ts, lines, "{\"product_id\":\"BK-0042\",\"quantity\":2,\"unit_price_cents\":1250}", &r);
	assert_command_ok(&r, 200, "order_id", id, 2);
	cr_assert_null(header(&r, "Location"), "only creates have a Location");
	fd_test_resp_free(&r);
	/* Product ids may use every allowed punctuation character. */
	cr_assert_eq(add_line(&ts, id, "MG.7:x_y-z", 1, 899), 3);
	/* The same product again adds to its line. */
	cr_assert_eq(add_line(&ts, id, "BK-0042", 3, 1250), 4);
	/* A price of zero is allowed. */
	cr_assert_eq(add_line(&ts, id, "FREE-1", 1, 0), 5);

	json_t *o = get_order(&ts, id);
	json_t *want = json_pack("[{s:s, s:i, s:i, s:s}, {s:s, s:i, s:i, s:s}, {s:s, s:i, s:i, s:s}]", "product_id",
				 "BK-0042", "quantity", 5, "unit_price_cents", 1250, "currency", "EUR", "product_id",
				 "MG.7:x_y-z", "quantity", 1, "unit_price_cents", 899, "currency", "EUR", "product_id",
				 "FREE-1", "quantity", 1, "unit_price_cents", 0, "currency", "EUR");
	cr_assert(json_equal(json_object_get(o, "lines"), want), "lines: %s", json_dumps(o, 0));
	cr_assert_eq(jint(o, "total_cents"), 5 * 1250 + 899);
	cr_assert_eq(jint(o, "version"), 5);
	json_decref(want);
	json_decref(o);

	/* Remove a line. */
	char *del = fd_test_fmt("/orders/%s/lines/MG.7:x_y-z", id);
	send_req(&ts, "DELETE", del, NULL, NULL, &r);
	assert_command_ok(&r, 200, "order_id", id, 6);
	fd_test_resp_free(&r);
	o = get_order(&ts, id);
	cr_assert_eq(json_array_size(json_object_get(o, "lines")), 2);
	cr_assert_str_eq(jstr(json_array_get(json_object_get(o, "lines"), 1), "product_id"), "FREE-1");
	cr_assert_eq(jint(o, "total_cents"), 5 * 1250);
	json_decref(o);

	/* Place: no body at all, and an empty object, are both fine (the second is refused by the rules). */
	order_cmd(&ts, id, "place", NULL, &r);
	assert_command_ok(&r, 200, "order_id", id, 7);
	fd_test_resp_free(&r);
	o = get_order(&ts, id);
	cr_assert_str_eq(jstr(o, "status"), "placed");
	cr_assert_eq(jint(o, "total_cents"), 6250);
	cr_assert_null(json_object_get(o, "cancel_reason"));
	json_decref(o);

	/* Cancel a placed order. */
	order_cmd(&ts, id, "cancel", "{\"reason\":\"Customer changed their mind.\"}", &r);
	assert_command_ok(&r, 200, "order_id", id, 8);
	fd_test_resp_free(&r);
	o = get_order(&ts, id);
	cr_assert_str_eq(jstr(o, "status"), "cancelled");
	cr_assert_str_eq(jstr(o, "cancel_reason"), "Customer changed their mind.");
	cr_assert_eq(json_object_size(o), 8, "view members (currency among them): %s", json_dumps(o, 0));
	json_decref(o);

	/* The history, one event per command, in order. */
	json_t *events = order_events(&ts, id);
	static const char *const types[] = { "OrderCreated", "OrderLineAdded", "OrderLineAdded", "OrderLineAdded",
					     "OrderLineAdded", "OrderLineRemoved", "OrderPlaced", "OrderCancelled" };
	cr_assert_eq(json_array_size(events), 8);
	for (size_t i = 0; i < 8; i++) {
		json_t *e = json_array_get(events, i);
		cr_assert_str_eq(jstr(e, "type"), types[i]);
		cr_assert_eq(jint(e, "version"), (long long)i + 1);
		cr_assert_str_eq(jstr(e, "stream"), fd_test_P("order-%s", id));
	}
	json_t *placed = json_object_get(json_array_get(events, 6), "data");
	cr_assert_eq(jint(placed, "total_cents"), 6250);
	cr_assert_eq(json_array_size(json_object_get(placed, "lines")), 2);
	json_decref(events);
	assert_events(&ts, 8);
	free(lines);
	free(del);
	fd_test_server_stop(&ts);
}

Test(domain_orders, ship_needs_a_confirmed_order)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-3", id);
	struct fd_test_resp r;
	order_cmd(&ts, id, "ship", NULL, &r);
	assert_refusal(&r, 409, "order-not-confirmed", "Order is not confirmed");
	fd_test_resp_free(&r);
	add_line(&ts, id, "sku-1", 1, 100);
	order_cmd(&ts, id, "place", "{}", &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	fd_test_resp_free(&r);
	order_cmd(&ts, id, "ship", NULL, &r);
	assert_refusal(&r, 409, "order-not-confirmed", NULL);
	fd_test_resp_free(&r);
	assert_events(&ts, 3);

	confirm_order(&ts, id);
	json_t *o = get_order(&ts, id);
	cr_assert_str_eq(jstr(o, "status"), "confirmed");
	json_decref(o);
	order_cmd(&ts, id, "ship", "{}", &r);
	assert_command_ok(&r, 200, "order_id", id, 5);
	fd_test_resp_free(&r);
	o = get_order(&ts, id);
	cr_assert_str_eq(jstr(o, "status"), "shipped");
	json_decref(o);

	/* Nothing more is possible on a shipped order. */
	order_cmd(&ts, id, "cancel", "{\"reason\":\"too late\"}", &r);
	assert_refusal(&r, 409, "order-shipped", "Order has already shipped");
	fd_test_resp_free(&r);
	order_cmd(&ts, id, "ship", NULL, &r);
	assert_refusal(&r, 409, "order-not-confirmed", NULL);
	fd_test_resp_free(&r);
	order_cmd(&ts, id, "lines", "{\"product_id\":\"sku-2\",\"quantity\":1,\"unit_price_cents\":1}", &r);
	assert_refusal(&r, 409, "order-not-draft", "Order is not a draft");
	fd_test_resp_free(&r);
	assert_events(&ts, 5);
	fd_test_server_stop(&ts);
}

/* ---- orders: refusals (409) ----------------------------------------------------------- */

Test(domain_orders, illegal_transitions_are_409_with_the_rule_as_type)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-4", id);
	struct fd_test_resp r;

	order_cmd(&ts, id, "place", NULL, &r);
	assert_refusal(&r, 409, "order-empty", "Order has no lines");
	fd_test_resp_free(&r);

	add_line(&ts, id, "sku-1", 2, 500);
	order_cmd(&ts, id, "lines", "{\"product_id\":\"sku-1\",\"quantity\":1,\"unit_price_cents\":501}", &r);
	assert_refusal(&r, 409, "price-mismatch", "Price differs from the order's line");
	fd_test_resp_free(&r);

	char *del = fd_test_fmt("/orders/%s/lines/sku-9", id);
	send_req(&ts, "DELETE", del, NULL, NULL, &r);
	assert_refusal(&r, 409, "line-not-found", "Line not found");
	fd_test_resp_free(&r);
	assert_events(&ts, 2);

	order_cmd(&ts, id, "place", NULL, &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	fd_test_resp_free(&r);

	/* Adding a line to a placed order: the issue's example. */
	order_cmd(&ts, id, "lines", "{\"product_id\":\"sku-2\",\"quantity\":1,\"unit_price_cents\":100}", &r);
	assert_refusal(&r, 409, "order-not-draft", "Order is not a draft");
	cr_assert(strstr(fd_test_json_str(&r, "detail"), "placed"), "detail: %s", r.body);
	fd_test_resp_free(&r);
	char *del1 = fd_test_fmt("/orders/%s/lines/sku-1", id);
	send_req(&ts, "DELETE", del1, NULL, NULL, &r);
	assert_refusal(&r, 409, "order-not-draft", NULL);
	fd_test_resp_free(&r);
	order_cmd(&ts, id, "place", NULL, &r);
	assert_refusal(&r, 409, "order-not-draft", NULL);
	fd_test_resp_free(&r);

	order_cmd(&ts, id, "cancel", "{\"reason\":\"r\"}", &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	fd_test_resp_free(&r);
	order_cmd(&ts, id, "cancel", "{\"reason\":\"again\"}", &r);
	assert_refusal(&r, 409, "order-cancelled", "Order is already cancelled");
	fd_test_resp_free(&r);
	order_cmd(&ts, id, "ship", NULL, &r);
	assert_refusal(&r, 409, "order-not-confirmed", NULL);
	fd_test_resp_free(&r);
	order_cmd(&ts, id, "place", NULL, &r);
	assert_refusal(&r, 409, "order-not-draft", NULL);
	fd_test_resp_free(&r);

	/* Refusals recorded nothing: create, a line, place, cancel. */
	assert_events(&ts, 4);
	json_t *o = get_order(&ts, id);
	cr_assert_eq(jint(o, "version"), 4);
	cr_assert_str_eq(jstr(o, "cancel_reason"), "r");
	json_decref(o);
	free(del);
	free(del1);
	fd_test_server_stop(&ts);
}

Test(domain_orders, total_beyond_64_bits_is_amount_too_large, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-big", id);
	/* 92 x (1e6 x 1e11 cents) = 9.2e18 still fits in int64 (9.22e18); a 93rd does not. */
	for (int i = 0; i < 92; i++)
		add_line(&ts, id, "gold", FD_QUANTITY_MAX, FD_PRICE_MAX);
	struct fd_test_resp r;
	char *body = fd_test_fmt("{\"product_id\":\"gold\",\"quantity\":%d,\"unit_price_cents\":%lld}", FD_QUANTITY_MAX,
			 (long long)FD_PRICE_MAX);
	order_cmd(&ts, id, "lines", body, &r);
	assert_refusal(&r, 409, "amount-too-large", "Amount too large");
	fd_test_resp_free(&r);
	/* A new line that would overflow the total is refused as well. */
	char *silver = fd_test_fmt("{\"product_id\":\"silver\",\"quantity\":%d,\"unit_price_cents\":%lld}", FD_QUANTITY_MAX,
			   (long long)FD_PRICE_MAX);
	order_cmd(&ts, id, "lines", silver, &r);
	assert_refusal(&r, 409, "amount-too-large", NULL);
	fd_test_resp_free(&r);
	assert_events(&ts, 93);
	/* The exact total comes back, past 2^53. */
	get(&ts, fd_test_P("/orders/%s", id), &r);
	cr_assert_eq(r.status, 200);
	cr_assert(strstr(r.body, "\"total_cents\":9200000000000000000"), "%s", r.body);
	cr_assert(strstr(r.body, "\"quantity\":92000000,"), "%s", r.body);
	fd_test_resp_free(&r);
	free(body);
	free(silver);
	fd_test_server_stop(&ts);
}

/* ---- orders: missing aggregates (404) ------------------------------------------------- */

Test(domain_orders, commands_on_a_missing_order_are_404)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(id);
	struct {
		const char *method, *suffix, *body;
	} cmds[] = {
		{ "POST", "lines", "{\"product_id\":\"sku-1\",\"quantity\":1,\"unit_price_cents\":1}" },
		/* existence is checked before the payload */
		{ "POST", "lines", "{\"quantity\":\"many\"}" },
		{ "DELETE", "lines/sku-1", NULL },
		{ "POST", "place", NULL },
		{ "POST", "cancel", "{\"reason\":\"r\"}" },
		{ "POST", "cancel", "{}" },
		{ "POST", "ship", NULL },
	};
	struct fd_test_resp r;
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
		char *path = fd_test_fmt("/orders/%s/%s", id, cmds[i].suffix);
		send_req(&ts, cmds[i].method, path, NULL, cmds[i].body, &r);
		assert_refusal(&r, 404, "order-not-found", "Order not found");
		fd_test_resp_free(&r);
		/* An id that is not a UUID cannot name an order at all. */
		char *bad = fd_test_fmt("/orders/not-a-uuid/%s", cmds[i].suffix);
		send_req(&ts, cmds[i].method, bad, NULL, cmds[i].body, &r);
		fd_test_assert_problem(&r, 404, "not-found");
		fd_test_resp_free(&r);
		free(path);
		free(bad);
	}
	char *path = fd_test_fmt("/orders/%s", id);
	get(&ts, path, &r);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	get(&ts, "/orders/12345", &r);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	char *ev = fd_test_fmt("/orders/%s/events", id);
	get(&ts, ev, &r);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	get(&ts, "/orders/nope/events", &r);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	get(&ts, fd_test_P("/orders/%s/unknown", id), &r);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	assert_events(&ts, 0);
	free(path);
	free(ev);
	fd_test_server_stop(&ts);
}

/*
 * A stream that holds only events of other types has not created the order
 * (domain.h: existence is read from the state): reading it is 404 like any
 * order that does not exist, as commands on it are.
 */
Test(domain_orders, stream_without_order_events_is_not_an_order)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(id);
	char *stream = fd_test_fmt("/streams/order-%s/events", id);
	struct fd_test_resp r;
	post(&ts, stream, "{\"expected_version\":0,\"events\":[{\"type\":\"NoteAdded\",\"data\":{\"text\":\"hi\"}}]}", &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);

	order_cmd(&ts, id, "place", NULL, &r);
	fd_test_assert_problem(&r, 404, "order-not-found");
	fd_test_resp_free(&r);

	char *path = fd_test_fmt("/orders/%s", id);
	get(&ts, path, &r);
	cr_assert_eq(r.status, 404, "GET of an order that was never created answered %d: %s", r.status, r.body);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	free(stream);
	free(path);
	fd_test_server_stop(&ts);
}

/* ---- orders: invalid payloads (400) ---------------------------------------------------- */

struct bad_payload {
	const char *suffix;  /* after /orders/{id}/, or NULL for POST /orders */
	const char *body;
	const char *field;   /* NULL: invalid-json */
};

Test(domain_orders, invalid_payloads_are_400_naming_the_field)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-5", id);
	char long_customer[130], long_sku[66], long_reason[502];
	memset(long_customer, 'c', 129);
	long_customer[129] = '\0';
	memset(long_sku, 's', 65);
	long_sku[65] = '\0';
	memset(long_reason, 'r', 501);
	long_reason[501] = '\0';
	char *b_customer = fd_test_fmt("{\"customer_id\":\"%s\"}", long_customer);
	char *b_sku = fd_test_fmt("{\"product_id\":\"%s\",\"quantity\":1,\"unit_price_cents\":1}", long_sku);
	char *b_reason = fd_test_fmt("{\"reason\":\"%s\"}", long_reason);
	const struct bad_payload cases[] = {
		{ NULL, "{}", "/customer_id" },
		{ NULL, "{\"customer_id\":\"\"}", "/customer_id" },
		{ NULL, "{\"customer_id\":5}", "/customer_id" },
		{ NULL, "{\"customer_id\":null}", "/customer_id" },
		{ NULL, b_customer, "/customer_id" },
		{ NULL, "{\"customer_id\":\"c\",\"note\":\"x\"}", "/note" },
		{ NULL, "{\"order_id\":\"not-a-uuid\",\"customer_id\":\"c\"}", "/order_id" },
		{ NULL, "{\"order_id\":7,\"customer_id\":\"c\"}", "/order_id" },
		{ NULL, "[]", "" },
		{ NULL, "\"text\"", NULL },
		{ NULL, "{\"customer_id\":", NULL },
		{ NULL, "{\"customer_id\":\"a\",\"customer_id\":\"b\"}", NULL },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":12.5,\"unit_price_cents\":1}", "/quantity" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":\"12\",\"unit_price_cents\":1}", "/quantity" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":1e3,\"unit_price_cents\":1}", "/quantity" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":1.0,\"unit_price_cents\":1}", "/quantity" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":0,\"unit_price_cents\":1}", "/quantity" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":-1,\"unit_price_cents\":1}", "/quantity" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":1000001,\"unit_price_cents\":1}", "/quantity" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":true,\"unit_price_cents\":1}", "/quantity" },
		{ "lines", "{\"product_id\":\"sku\",\"unit_price_cents\":1}", "/quantity" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":1,\"unit_price_cents\":12.5}", "/unit_price_cents" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":1,\"unit_price_cents\":\"12\"}", "/unit_price_cents" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":1,\"unit_price_cents\":1e3}", "/unit_price_cents" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":1,\"unit_price_cents\":-1}", "/unit_price_cents" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":1,\"unit_price_cents\":100000000001}", "/unit_price_cents" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":1}", "/unit_price_cents" },
		{ "lines", "{\"product_id\":\"bad sku\",\"quantity\":1,\"unit_price_cents\":1}", "/product_id" },
		{ "lines", "{\"product_id\":\"\",\"quantity\":1,\"unit_price_cents\":1}", "/product_id" },
		{ "lines", "{\"product_id\":7,\"quantity\":1,\"unit_price_cents\":1}", "/product_id" },
		{ "lines", b_sku, "/product_id" },
		{ "lines", "{\"quantity\":1,\"unit_price_cents\":1}", "/product_id" },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":1,\"unit_price_cents\":1,\"note\":1}", "/note" },
		{ "lines", "", NULL },
		{ "lines", "{\"product_id\":\"sku\",\"quantity\":1,\"unit_price_cents\":99999999999999999999}", NULL },
		{ "cancel", "{}", "/reason" },
		{ "cancel", "{\"reason\":\"\"}", "/reason" },
		{ "cancel", "{\"reason\":3}", "/reason" },
		{ "cancel", b_reason, "/reason" },
		{ "cancel", "{\"reason\":\"r\",\"by\":\"me\"}", "/by" },
		{ "place", "{\"now\":true}", "/now" },
		{ "place", "null", NULL },
		{ "place", "[]", "" },
		{ "ship", "{\"carrier\":\"x\"}", "/carrier" },
		{ "lines/bad%20sku", NULL, "/product_id" },
		{ "lines/sku-1", "{\"extra\":1}", "/extra" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct fd_test_resp r;
		const char *path = cases[i].suffix ? fd_test_P("/orders/%s/%s", id, cases[i].suffix) : "/orders";
		const char *method = cases[i].suffix && strncmp(cases[i].suffix, "lines/", 6) == 0 ? "DELETE" : "POST";
		send_req(&ts, method, path, NULL, cases[i].body, &r);
		cr_log_info("case %zu: %s %s %s", i, method, path, cases[i].body ? cases[i].body : "(none)");
		if (cases[i].field)
			assert_field_problem(&r, cases[i].field);
		else
			fd_test_assert_problem(&r, 400, "invalid-json");
		fd_test_resp_free(&r);
	}
	/* A merged line may grow past the per-add maximum, and the largest price is fine. */
	add_line(&ts, id, "sku", FD_QUANTITY_MAX, FD_PRICE_MAX);
	add_line(&ts, id, "sku", 1, FD_PRICE_MAX);
	json_t *o = get_order(&ts, id);
	cr_assert_eq(jint(json_array_get(json_object_get(o, "lines"), 0), "quantity"), FD_QUANTITY_MAX + 1);
	json_decref(o);
	/* Only the create and the two good lines were recorded. */
	assert_events(&ts, 3);
	free(b_customer);
	free(b_sku);
	free(b_reason);
	fd_test_server_stop(&ts);
}

/* ---- media types (415) and methods (405) ------------------------------------------------- */

Test(domain_http, bodies_that_are_not_json_are_415)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1], pay[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-6", id);
	fd_test_new_uuid(pay);
	struct fd_test_resp r;
	char *body = fd_test_fmt("{\"order_id\":\"%s\",\"amount_cents\":100,\"payment_id\":\"%s\"}", id, pay);
	post(&ts, "/payments", body, &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);
	post(&ts, "/products", "{\"product_id\":\"p-1\",\"name\":\"P\",\"stock\":1}", &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);
	long long before = count_events(&ts);

	struct {
		const char *method, *path;
		int accept_post; /* routes whose body is required say what they accept */
	} cases[] = {
		{ "POST", "/orders", 1 },
		{ "POST", fd_test_P("/orders/%s/lines", id), 1 },
		{ "POST", fd_test_P("/orders/%s/cancel", id), 1 },
		{ "POST", "/products", 1 },
		{ "POST", "/products/p-1/restock", 1 },
		{ "POST", "/payments", 1 },
		{ "POST", fd_test_P("/orders/%s/place", id), 0 },
		{ "POST", fd_test_P("/orders/%s/ship", id), 0 },
		{ "DELETE", fd_test_P("/orders/%s/lines/sku-1", id), 0 },
		{ "POST", fd_test_P("/payments/%s/refund", pay), 0 },
	};
	static const char *const types[] = { "Content-Type: text/plain\r\n",
					     "Content-Type: application/x-www-form-urlencoded\r\n" };
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		for (size_t t = 0; t < 2; t++) {
			send_req(&ts, cases[i].method, cases[i].path, types[t], "{}", &r);
			fd_test_assert_problem(&r, 415, "unsupported-media-type");
			if (cases[i].accept_post)
				cr_assert_str_eq(header(&r, "Accept-Post"), "application/json", "%s", cases[i].path);
			fd_test_resp_free(&r);
		}
	}
	/* A parameter on the media type is fine. */
	send_req(&ts, "POST", fd_test_P("/orders/%s/lines", id), "Content-Type: application/json; charset=utf-8\r\n",
		 "{\"product_id\":\"sku-1\",\"quantity\":1,\"unit_price_cents\":1}", &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	fd_test_resp_free(&r);
	assert_events(&ts, before + 1);
	free(body);
	fd_test_server_stop(&ts);
}

Test(domain_http, wrong_methods_are_405_with_allow)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-7", id);
	struct {
		const char *method, *path, *allow;
	} cases[] = {
		{ "PUT", "/orders", "POST, GET, HEAD" },
		{ "DELETE", "/orders", "POST, GET, HEAD" },
		{ "DELETE", fd_test_P("/orders/%s", id), "GET, HEAD" },
		{ "POST", fd_test_P("/orders/%s", id), "GET, HEAD" },
		{ "GET", fd_test_P("/orders/%s/lines", id), "POST" },
		{ "GET", fd_test_P("/orders/%s/lines/sku-1", id), "DELETE" },
		{ "POST", fd_test_P("/orders/%s/lines/sku-1", id), "DELETE" },
		{ "GET", fd_test_P("/orders/%s/place", id), "POST" },
		{ "HEAD", fd_test_P("/orders/%s/place", id), "POST" },
		{ "GET", fd_test_P("/orders/%s/cancel", id), "POST" },
		{ "PUT", fd_test_P("/orders/%s/ship", id), "POST" },
		{ "POST", fd_test_P("/orders/%s/events", id), "GET, HEAD" },
		{ "PUT", "/products", "POST, GET, HEAD" },
		{ "DELETE", "/products/p-1", "GET, HEAD" },
		{ "GET", "/products/p-1/restock", "POST" },
		{ "PUT", "/products/p-1/events", "GET, HEAD" },
		{ "GET", "/payments", "POST" },
		{ "PATCH", fd_test_P("/payments/%s", id), "GET, HEAD" },
		{ "GET", fd_test_P("/payments/%s/process", id), "POST" },
		{ "GET", fd_test_P("/payments/%s/refund", id), "POST" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct fd_test_resp r;
		send_req(&ts, cases[i].method, cases[i].path, NULL, NULL, &r);
		cr_assert_eq(r.status, 405, "%s %s: %d %s", cases[i].method, cases[i].path, r.status, r.body);
		cr_assert_str_eq(header(&r, "Allow"), cases[i].allow, "%s %s", cases[i].method, cases[i].path);
		if (strcmp(cases[i].method, "HEAD") != 0)
			fd_test_assert_problem(&r, 405, "method-not-allowed");
		fd_test_resp_free(&r);
	}
	assert_events(&ts, 1);
	fd_test_server_stop(&ts);
}

/* ---- reads: views, ETag, HEAD, the history ---------------------------------------------- */

Test(domain_read, head_and_etag_of_an_order)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-8", id);
	add_line(&ts, id, "sku-1", 1, 10);
	struct fd_test_resp r;
	char *path = fd_test_fmt("/orders/%s", id);
	send_req(&ts, "HEAD", path, NULL, NULL, &r);
	cr_assert_eq(r.status, 200);
	cr_assert_str_eq(header(&r, "ETag"), "\"2\"");
	cr_assert_eq(r.body_len, 0);
	fd_test_resp_free(&r);
	get(&ts, path, &r);
	cr_assert_str_eq(header(&r, "ETag"), "\"2\"");
	cr_assert_str_eq(header(&r, "Cache-Control"), "no-store");
	cr_assert_eq(fd_test_json_int(&r, "version"), 2);
	fd_test_resp_free(&r);
	free(path);
	fd_test_server_stop(&ts);
}

Test(domain_read, events_endpoint_is_the_stream_read)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-9", id);
	add_line(&ts, id, "sku-1", 1, 10);
	add_line(&ts, id, "sku-2", 2, 20);
	struct fd_test_resp a, b;
	char *p1 = fd_test_fmt("/orders/%s/events", id), *p2 = fd_test_fmt("/streams/order-%s/events", id);
	get(&ts, p1, &a);
	get(&ts, p2, &b);
	cr_assert_eq(a.status, 200, "%s", a.body);
	assert_json_ct(&a);
	cr_assert_str_eq(a.body, b.body, "the order's history differs from its stream");
	cr_assert_str_eq(header(&a, "ETag"), "\"3\"");
	cr_assert_eq(json_object_size(a.json), 3, "%s", a.body);
	char *stream = fd_test_fmt("order-%s", id);
	cr_assert_str_eq(fd_test_json_str(&a, "stream"), stream);
	cr_assert_eq(fd_test_json_int(&a, "version"), 3);
	json_t *events = json_object_get(a.json, "events");
	cr_assert_eq(json_array_size(events), 3);
	json_t *e2 = json_array_get(events, 1);
	json_t *want = json_pack("{s:s, s:i, s:{s:i, s:s}}", "product_id", "sku-1", "quantity", 1, "unit_price",
				 "amount_cents", 10, "currency", "EUR");
	cr_assert(json_equal(json_object_get(e2, "data"), want), "data: %s", a.body);
	json_decref(want);
	cr_assert_str_eq(jstr(e2, "type"), "OrderLineAdded");
	struct fd_uuid u;
	cr_assert(fd_uuid_parse(jstr(e2, "event_id"), &u));
	cr_assert(jstr(e2, "recorded_at"));
	cr_assert(is_cursor(jstr(e2, "position")));
	fd_test_resp_free(&a);
	fd_test_resp_free(&b);

	/* Paged like a stream. */
	char *paged = fd_test_fmt("/orders/%s/events?from_version=2&limit=1", id);
	get(&ts, paged, &a);
	cr_assert_eq(a.status, 200);
	events = json_object_get(a.json, "events");
	cr_assert_eq(json_array_size(events), 1);
	cr_assert_eq(jint(json_array_get(events, 0), "version"), 2);
	fd_test_resp_free(&a);
	char *bad = fd_test_fmt("/orders/%s/events?limit=0", id);
	get(&ts, bad, &a);
	fd_test_assert_problem(&a, 400, "invalid-parameter");
	fd_test_resp_free(&a);
	free(p1);
	free(p2);
	free(stream);
	free(paged);
	free(bad);
	fd_test_server_stop(&ts);
}

/* ---- reads: ?version and ?at ------------------------------------------------------------ */

static void get_status(const struct fd_test_server *ts, const char *path, int status, const char *slug)
{
	struct fd_test_resp r;
	get(ts, path, &r);
	cr_log_info("GET %s -> %d", path, r.status);
	fd_test_assert_problem(&r, status, slug);
	fd_test_resp_free(&r);
}

Test(domain_read, version_and_at_parameters)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char before[40], mid[40];
	now_rfc3339(before, sizeof before);
	fd_test_sleep_ms(30);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-10", id);
	add_line(&ts, id, "sku-1", 1, 100);
	fd_test_sleep_ms(30);
	now_rfc3339(mid, sizeof mid);
	fd_test_sleep_ms(30);
	add_line(&ts, id, "sku-2", 1, 200);

	for (int v = 1; v <= 3; v++) {
		struct fd_test_resp r;
		char *path = fd_test_fmt("/orders/%s?version=%d", id, v);
		get(&ts, path, &r);
		cr_assert_eq(r.status, 200, "%s: %s", path, r.body);
		cr_assert_eq(fd_test_json_int(&r, "version"), v);
		char etag[16];
		snprintf(etag, sizeof etag, "\"%d\"", v);
		cr_assert_str_eq(header(&r, "ETag"), etag);
		cr_assert_eq(json_array_size(json_object_get(r.json, "lines")), (size_t)v - 1);
		fd_test_resp_free(&r);
		free(path);
	}
	/* Leading zeros are still a number. */
	json_t *o = get_ok(&ts, fd_test_P("/orders/%s?version=02", id));
	cr_assert_eq(jint(o, "version"), 2);
	json_decref(o);

	static const char *const bad_versions[] = { "0", "-1", "abc", "", "1.5", "+1", "1x", " 1", "99999999999999999999" };
	for (size_t i = 0; i < sizeof bad_versions / sizeof bad_versions[0]; i++) {
		struct fd_test_resp r;
		char *path = fd_test_fmt("/orders/%s?version=%s", id, bad_versions[i][0] == ' ' ? "%201" : bad_versions[i]);
		get(&ts, path, &r);
		fd_test_assert_problem(&r, 400, "invalid-parameter");
		cr_assert_str_eq(fd_test_json_str(&r, "parameter"), "version", "%s", path);
		fd_test_resp_free(&r);
		free(path);
	}
	get_status(&ts, fd_test_P("/orders/%s?version=4", id), 404, "not-found");
	get_status(&ts, fd_test_P("/orders/%s?version=9223372036854775807", id), 404, "not-found");

	/* ?at */
	o = get_ok(&ts, fd_test_P("/orders/%s?at=%s", id, mid));
	cr_assert_eq(jint(o, "version"), 2, "at the moment between the second and third command");
	cr_assert_eq(json_array_size(json_object_get(o, "lines")), 1);
	json_decref(o);
	o = get_ok(&ts, fd_test_P("/orders/%s?at=9999-12-31T23:59:59Z", id));
	cr_assert_eq(jint(o, "version"), 3);
	json_decref(o);
	get_status(&ts, fd_test_P("/orders/%s?at=%s", id, before), 404, "not-found");
	get_status(&ts, fd_test_P("/orders/%s?at=2000-01-01T00:00:00Z", id), 404, "not-found");

	static const char *const bad_at[] = { "garbage", "", "2026-13-01T00:00:00Z", "2026-01-01", "2026-01-01T00:00:00",
					      "1700000000", "2026-02-30T00:00:00Z" };
	for (size_t i = 0; i < sizeof bad_at / sizeof bad_at[0]; i++) {
		struct fd_test_resp r;
		char *path = fd_test_fmt("/orders/%s?at=%s", id, bad_at[i]);
		get(&ts, path, &r);
		fd_test_assert_problem(&r, 400, "invalid-parameter");
		cr_assert_str_eq(fd_test_json_str(&r, "parameter"), "at", "%s", path);
		fd_test_resp_free(&r);
		free(path);
	}
	/* Both at once. */
	struct fd_test_resp r;
	get(&ts, fd_test_P("/orders/%s?version=1&at=%s", id, mid), &r);
	fd_test_assert_problem(&r, 400, "invalid-parameter");
	fd_test_resp_free(&r);
	/* A missing order at a version or a moment is 404 too. */
	char other[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(other);
	get_status(&ts, fd_test_P("/orders/%s?version=1", other), 404, "not-found");
	get_status(&ts, fd_test_P("/orders/%s?at=%s", other, mid), 404, "not-found");
	fd_test_server_stop(&ts);
}

/* ?at is inclusive to the microsecond and understands numeric offsets. */
Test(domain_read, at_boundaries_and_offsets)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-11", id);
	fd_test_sleep_ms(20);
	add_line(&ts, id, "sku-1", 1, 100);
	fd_test_sleep_ms(20);
	add_line(&ts, id, "sku-2", 1, 100);
	json_t *events = order_events(&ts, id);
	const char *rec2 = jstr(json_array_get(events, 1), "recorded_at");
	int64_t us;
	cr_assert(fd_time_parse_rfc3339(rec2, &us), "recorded_at %s", rec2);

	json_t *o = get_ok(&ts, fd_test_P("/orders/%s?at=%s", id, rec2));
	cr_assert_eq(jint(o, "version"), 2, "at exactly the second event's recorded_at");
	json_decref(o);
	char just_before[40];
	fd_time_format_rfc3339(us - 1, just_before, sizeof just_before);
	o = get_ok(&ts, fd_test_P("/orders/%s?at=%s", id, just_before));
	cr_assert_eq(jint(o, "version"), 1, "one microsecond earlier");
	json_decref(o);

	/* The same moment written with offsets: +02:00 (the plus percent-encoded) and -05:30. */
	int64_t secs = us / 1000000, frac = us % 1000000;
	char plus[64], minus[64];
	{
		char base[40];
		fd_time_format_rfc3339((secs + 2 * 3600) * 1000000 + frac, base, sizeof base);
		base[26] = '\0'; /* drop the Z */
		snprintf(plus, sizeof plus, "%s%%2B02:00", base);
		fd_time_format_rfc3339((secs - 5 * 3600 - 30 * 60) * 1000000 + frac, base, sizeof base);
		base[26] = '\0';
		snprintf(minus, sizeof minus, "%s-05:30", base);
	}
	o = get_ok(&ts, fd_test_P("/orders/%s?at=%s", id, plus));
	cr_assert_eq(jint(o, "version"), 2, "at=%s", plus);
	json_decref(o);
	o = get_ok(&ts, fd_test_P("/orders/%s?at=%s", id, minus));
	cr_assert_eq(jint(o, "version"), 2, "at=%s", minus);
	json_decref(o);
	json_decref(events);
	fd_test_server_stop(&ts);
}

/* ---- the README scenario ---------------------------------------------------------------- */

Test(domain_readme, curl_scenario)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	post(&ts, "/products", "{\"product_id\": \"sku-1\", \"name\": \"Widget\", \"stock\": 10}", &r);
	assert_command_ok(&r, 201, "product_id", "sku-1", 1);
	cr_assert_str_eq(header(&r, "Location"), "/products/sku-1");
	fd_test_resp_free(&r);

	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-1", id);
	fd_test_sleep_ms(30);
	char t_created[40];
	now_rfc3339(t_created, sizeof t_created);
	fd_test_sleep_ms(30);
	order_cmd(&ts, id, "lines", "{\"product_id\": \"sku-1\", \"quantity\": 2, \"unit_price_cents\": 1250}", &r);
	assert_command_ok(&r, 200, "order_id", id, 2);
	fd_test_resp_free(&r);
	fd_test_sleep_ms(30);
	char t_line[40];
	now_rfc3339(t_line, sizeof t_line);
	fd_test_sleep_ms(30);
	order_cmd(&ts, id, "place", NULL, &r);
	assert_command_ok(&r, 200, "order_id", id, 3);
	fd_test_resp_free(&r);

	char *path = fd_test_fmt("/orders/%s", id);
	get(&ts, path, &r);
	cr_assert_eq(r.status, 200);
	cr_assert_str_eq(header(&r, "ETag"), "\"3\"");
	json_t *want = json_pack("{s:s, s:s, s:s, s:[{s:s, s:i, s:i, s:s}], s:i, s:s, s:i}", "order_id", id,
				 "customer_id", "c-1", "status", "placed", "lines", "product_id", "sku-1", "quantity", 2,
				 "unit_price_cents", 1250, "currency", "EUR", "total_cents", 2500, "currency", "EUR",
				 "version", 3);
	cr_assert(json_equal(r.json, want), "%s", r.body);
	fd_test_resp_free(&r);

	/* As it was before it was placed. */
	json_object_set_new(want, "status", json_string("draft"));
	json_object_set_new(want, "version", json_integer(2));
	get(&ts, fd_test_P("%s?version=2", path), &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert_str_eq(header(&r, "ETag"), "\"2\"");
	cr_assert(json_equal(r.json, want), "?version=2: %s", r.body);
	fd_test_resp_free(&r);
	get(&ts, fd_test_P("%s?at=%s", path, t_line), &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert(json_equal(r.json, want), "?at=%s: %s", t_line, r.body);
	fd_test_resp_free(&r);
	json_decref(want);

	/* As it was right after it was created. */
	want = json_pack("{s:s, s:s, s:s, s:[], s:i, s:i}", "order_id", id, "customer_id", "c-1", "status", "draft",
			 "lines", "total_cents", 0, "version", 1);
	get(&ts, fd_test_P("%s?at=%s", path, t_created), &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert(json_equal(r.json, want), "?at=%s: %s", t_created, r.body);
	fd_test_resp_free(&r);
	json_decref(want);

	/* Its history. */
	json_t *events = order_events(&ts, id);
	cr_assert_eq(json_array_size(events), 3);
	cr_assert_str_eq(jstr(json_array_get(events, 0), "type"), "OrderCreated");
	cr_assert_str_eq(jstr(json_array_get(events, 1), "type"), "OrderLineAdded");
	json_t *placed = json_array_get(events, 2);
	cr_assert_str_eq(jstr(placed, "type"), "OrderPlaced");
	want = json_pack("{s:[{s:s, s:i, s:i}], s:i}", "lines", "product_id", "sku-1", "quantity", 2, "unit_price_cents",
			 1250, "total_cents", 2500);
	cr_assert(json_equal(json_object_get(placed, "data"), want));
	json_decref(want);
	json_decref(events);

	/* The product is as created (no saga reserves stock in this version). */
	json_t *p = get_ok(&ts, "/products/sku-1");
	cr_assert_eq(jint(p, "available"), 10);
	cr_assert_eq(jint(p, "reserved"), 0);
	cr_assert_eq(jint(p, "committed"), 0);
	cr_assert_eq(jint(p, "version"), 1);
	json_decref(p);
	free(path);
	fd_test_server_stop(&ts);
}

/* ---- temporal reads with snapshots ----------------------------------------------------- */

/*
 * One order of 13 events (create, 10 lines, a removal, place) on a server
 * snapshotting every 3 events; each version and each moment between commands
 * reads the same, byte for byte, as on a second server over the same database
 * with snapshots off.
 */
Test(domain_snapshots, temporal_reads_equal_a_server_without_snapshots, .timeout = 120)
{
	struct fd_test_server a, b;
	fd_test_server_start_with(&a, NULL, tweak_snap3);
	enum { LINES = 10, EVENTS = LINES + 3 };
	char at[EVENTS + 1][40];
	char id[FD_UUID_STRLEN + 1];
	create_order(&a, "c-snap", id);
	fd_test_sleep_ms(20);
	now_rfc3339(at[1], sizeof at[1]);
	for (int i = 1; i <= LINES; i++) {
		fd_test_sleep_ms(20);
		char sku[16];
		snprintf(sku, sizeof sku, "p%d", i);
		cr_assert_eq(add_line(&a, id, sku, i, 100 * i), i + 1);
		fd_test_sleep_ms(20);
		now_rfc3339(at[i + 1], sizeof at[i + 1]);
	}
	struct fd_test_resp r;
	char *del = fd_test_fmt("/orders/%s/lines/p5", id);
	send_req(&a, "DELETE", del, NULL, NULL, &r);
	assert_command_ok(&r, 200, "order_id", id, LINES + 2);
	fd_test_resp_free(&r);
	fd_test_sleep_ms(20);
	now_rfc3339(at[LINES + 2], sizeof at[LINES + 2]);
	fd_test_sleep_ms(20);
	order_cmd(&a, id, "place", NULL, &r);
	assert_command_ok(&r, 200, "order_id", id, EVENTS);
	fd_test_resp_free(&r);
	fd_test_sleep_ms(20);
	now_rfc3339(at[EVENTS], sizeof at[EVENTS]);

	fd_bus_flush(a.bus);
	char *snaps = fd_test_fmt("SELECT count(*) FROM snapshots WHERE stream_id = 'order-%s' AND version IN (3, 6, 9, 12)", id);
	cr_assert_eq(fd_test_server_scalar(&a, snaps), 4, "snapshots at every third version");

	fd_test_server_start_with(&b, a.db_url, tweak_snap0);
	for (int v = 1; v <= EVENTS; v++) {
		struct fd_test_resp ra, rb;
		char *path = fd_test_fmt("/orders/%s?version=%d", id, v);
		get(&a, path, &ra);
		get(&b, path, &rb);
		cr_assert_eq(ra.status, 200, "%s: %d %s", path, ra.status, ra.body);
		cr_assert_eq(rb.status, 200, "%s: %d %s", path, rb.status, rb.body);
		cr_assert_str_eq(ra.body, rb.body, "%s differs with snapshots", path);
		cr_assert_str_eq(header(&ra, "ETag"), header(&rb, "ETag"));
		cr_assert_eq(fd_test_json_int(&ra, "version"), v);
		fd_test_resp_free(&ra);
		fd_test_resp_free(&rb);
		free(path);

		path = fd_test_fmt("/orders/%s?at=%s", id, at[v]);
		get(&a, path, &ra);
		get(&b, path, &rb);
		cr_assert_eq(ra.status, 200, "%s: %d %s", path, ra.status, ra.body);
		cr_assert_str_eq(ra.body, rb.body, "%s differs with snapshots", path);
		cr_assert_eq(fd_test_json_int(&ra, "version"), v, "%s", path);
		fd_test_resp_free(&ra);
		fd_test_resp_free(&rb);
		free(path);
	}
	/* The latest state too. */
	json_t *la = get_order(&a, id), *lb = get_order(&b, id);
	cr_assert(json_equal(la, lb));
	cr_assert_str_eq(jstr(la, "status"), "placed");
	cr_assert_eq(json_array_size(json_object_get(la, "lines")), LINES - 1);
	json_decref(la);
	json_decref(lb);

	/* Version 4 is the state after three lines. */
	json_t *v4 = get_order(&a, fd_test_P("%s?version=4", id));
	json_t *want = json_pack("{s:s, s:s, s:s, s:[{s:s, s:i, s:i, s:s}, {s:s, s:i, s:i, s:s}, {s:s, s:i, s:i, s:s}],"
				 " s:i, s:s, s:i}",
				 "order_id", id, "customer_id", "c-snap", "status", "draft", "lines", "product_id", "p1",
				 "quantity", 1, "unit_price_cents", 100, "currency", "EUR", "product_id", "p2", "quantity",
				 2, "unit_price_cents", 200, "currency", "EUR", "product_id", "p3", "quantity", 3,
				 "unit_price_cents", 300, "currency", "EUR", "total_cents", 1400, "currency", "EUR",
				 "version", 4);
	cr_assert(json_equal(v4, want), "version 4: %s", json_dumps(v4, 0));
	json_decref(want);
	json_decref(v4);

	/*
	 * The comparison above is only worth something if the first server did read
	 * the snapshots: mark the one at version 9 and see it come through there only.
	 */
	char *mark = fd_test_fmt("WITH u AS (UPDATE snapshots SET state = jsonb_set(state, '{customer_id}', '\"from-snapshot\"')"
			 " WHERE stream_id = 'order-%s' AND version = 9 RETURNING 1) SELECT count(*) FROM u", id);
	cr_assert_eq(fd_test_server_scalar(&a, mark), 1);
	json_t *ma = get_order(&a, fd_test_P("%s?version=10", id)), *mb = get_order(&b, fd_test_P("%s?version=10", id));
	cr_assert_str_eq(jstr(ma, "customer_id"), "from-snapshot", "the snapshot server did not read the snapshot");
	cr_assert_str_eq(jstr(mb, "customer_id"), "c-snap");
	json_decref(ma);
	json_decref(mb);

	fd_test_server_stop(&b);
	fd_test_server_stop(&a);
	free(del);
	free(snaps);
	free(mark);
}

/* ---- products ----------------------------------------------------------------------- */

Test(domain_products, create_restock_and_read)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	post(&ts, "/products", "{\"product_id\":\"BK-0042\",\"name\":\"Book\",\"stock\":5}", &r);
	assert_command_ok(&r, 201, "product_id", "BK-0042", 1);
	cr_assert_str_eq(header(&r, "Location"), "/products/BK-0042");
	fd_test_resp_free(&r);

	json_t *p = get_ok(&ts, "/products/BK-0042");
	json_t *want = json_pack("{s:s, s:s, s:i, s:i, s:i, s:i, s:[], s:i}", "product_id", "BK-0042", "name", "Book",
				 "available", 5, "reserved", 0, "committed", 0, "stocked", 5, "reservations", "version", 1);
	cr_assert(json_equal(p, want), "%s", json_dumps(p, 0));
	json_decref(p);

	post(&ts, "/products/BK-0042/restock", "{\"quantity\":7}", &r);
	assert_command_ok(&r, 200, "product_id", "BK-0042", 2);
	fd_test_resp_free(&r);
	p = get_ok(&ts, "/products/BK-0042");
	cr_assert_eq(jint(p, "available"), 12);
	cr_assert_eq(jint(p, "stocked"), 12);
	cr_assert_eq(jint(p, "version"), 2);
	json_decref(p);
	p = get_ok(&ts, "/products/BK-0042?version=1");
	cr_assert_eq(jint(p, "available"), 5);
	json_decref(p);
	get(&ts, "/products/BK-0042", &r);
	cr_assert_str_eq(header(&r, "ETag"), "\"2\"");
	fd_test_resp_free(&r);

	/* Without product_id the server makes one; stock 0 is allowed. */
	post(&ts, "/products", "{\"name\":\"Mug\",\"stock\":0}", &r);
	assert_command_ok(&r, 201, "product_id", NULL, 1);
	char made[80];
	snprintf(made, sizeof made, "%s", fd_test_json_str(&r, "product_id"));
	cr_assert(is_canonical_uuid(made), "server-made product id %s", made);
	char *loc = fd_test_fmt("/products/%s", made);
	cr_assert_str_eq(header(&r, "Location"), loc);
	fd_test_resp_free(&r);
	p = get_ok(&ts, loc);
	cr_assert_str_eq(jstr(p, "name"), "Mug");
	cr_assert_eq(jint(p, "available"), 0);
	json_decref(p);

	/* The product's history. */
	get(&ts, "/products/BK-0042/events", &r);
	cr_assert_eq(r.status, 200);
	cr_assert_str_eq(fd_test_json_str(&r, "stream"), "product-BK-0042");
	json_t *events = json_object_get(r.json, "events");
	cr_assert_eq(json_array_size(events), 2);
	cr_assert_str_eq(jstr(json_array_get(events, 1), "type"), "ProductRestocked");
	fd_test_resp_free(&r);
	assert_events(&ts, 3);
	json_decref(want);
	free(loc);
	fd_test_server_stop(&ts);
}

Test(domain_products, errors)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	post(&ts, "/products", "{\"product_id\":\"p-1\",\"name\":\"P\",\"stock\":1}", &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);

	post(&ts, "/products", "{\"product_id\":\"p-1\",\"name\":\"Other\",\"stock\":3}", &r);
	assert_refusal(&r, 409, "product-exists", "Product already exists");
	fd_test_resp_free(&r);

	char long_sku[66];
	memset(long_sku, 'x', 65);
	long_sku[65] = '\0';
	char *b_long = fd_test_fmt("{\"product_id\":\"%s\",\"name\":\"P\",\"stock\":1}", long_sku);
	const struct {
		const char *path, *body, *field;
	} cases[] = {
		{ "/products", "{\"product_id\":\"bad sku\",\"name\":\"P\",\"stock\":1}", "/product_id" },
		{ "/products", "{\"product_id\":\"\",\"name\":\"P\",\"stock\":1}", "/product_id" },
		{ "/products", "{\"product_id\":5,\"name\":\"P\",\"stock\":1}", "/product_id" },
		{ "/products", b_long, "/product_id" },
		{ "/products", "{\"product_id\":\"p-2\",\"stock\":1}", "/name" },
		{ "/products", "{\"product_id\":\"p-2\",\"name\":\"\",\"stock\":1}", "/name" },
		{ "/products", "{\"product_id\":\"p-2\",\"name\":\"P\"}", "/stock" },
		{ "/products", "{\"product_id\":\"p-2\",\"name\":\"P\",\"stock\":-1}", "/stock" },
		{ "/products", "{\"product_id\":\"p-2\",\"name\":\"P\",\"stock\":12.5}", "/stock" },
		{ "/products", "{\"product_id\":\"p-2\",\"name\":\"P\",\"stock\":\"12\"}", "/stock" },
		{ "/products", "{\"product_id\":\"p-2\",\"name\":\"P\",\"stock\":1e3}", "/stock" },
		{ "/products", "{\"product_id\":\"p-2\",\"name\":\"P\",\"stock\":1000000000001}", "/stock" },
		{ "/products", "{\"product_id\":\"p-2\",\"name\":\"P\",\"stock\":1,\"price\":3}", "/price" },
		{ "/products/p-1/restock", "{}", "/quantity" },
		{ "/products/p-1/restock", "{\"quantity\":0}", "/quantity" },
		{ "/products/p-1/restock", "{\"quantity\":12.5}", "/quantity" },
		{ "/products/p-1/restock", "{\"quantity\":\"12\"}", "/quantity" },
		{ "/products/p-1/restock", "{\"quantity\":1e3}", "/quantity" },
		{ "/products/p-1/restock", "{\"quantity\":1,\"why\":\"x\"}", "/why" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		post(&ts, cases[i].path, cases[i].body, &r);
		cr_log_info("case %zu: %s %s", i, cases[i].path, cases[i].body);
		assert_field_problem(&r, cases[i].field);
		fd_test_resp_free(&r);
	}

	/* Missing products: a command is 404 product-not-found, reads are 404 not-found. */
	post(&ts, "/products/p-404/restock", "{\"quantity\":1}", &r);
	assert_refusal(&r, 404, "product-not-found", "Product not found");
	fd_test_resp_free(&r);
	post(&ts, "/products/p-404/restock", "{\"quantity\":0}", &r);
	fd_test_assert_problem(&r, 404, "product-not-found");
	fd_test_resp_free(&r);
	get_status(&ts, "/products/p-404", 404, "not-found");
	get_status(&ts, "/products/p-404/events", 404, "not-found");
	get_status(&ts, fd_test_P("/products/%s", long_sku), 404, "not-found");
	post(&ts, fd_test_P("/products/%s/restock", long_sku), "{\"quantity\":1}", &r);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	get_status(&ts, "/products/p-1?version=2", 404, "not-found");
	get_status(&ts, "/products/p-1?version=0", 400, "invalid-parameter");
	assert_events(&ts, 1);
	free(b_long);
	fd_test_server_stop(&ts);
}

/* ---- payments ----------------------------------------------------------------------- */

/* POST /payments for a new order id; the payment id in out. */
static void request_payment(const struct fd_test_server *ts, long long amount, char out[FD_UUID_STRLEN + 1])
{
	char order[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(order);
	char *body = fd_test_fmt("{\"order_id\":\"%s\",\"amount_cents\":%lld}", order, amount);
	struct fd_test_resp r;
	post(ts, "/payments", body, &r);
	assert_command_ok(&r, 201, "payment_id", NULL, 1);
	const char *id = fd_test_json_str(&r, "payment_id");
	cr_assert(is_canonical_uuid(id), "payment_id %s", id);
	snprintf(out, FD_UUID_STRLEN + 1, "%s", id);
	fd_test_resp_free(&r);
	free(body);
}

static void payment_cmd(const struct fd_test_server *ts, const char *id, const char *what, const char *headers,
			const char *body, struct fd_test_resp *r)
{
	char *path = fd_test_fmt("/payments/%s/%s", id, what);
	send_req(ts, "POST", path, headers, body, r);
	free(path);
}

static json_t *get_payment(const struct fd_test_server *ts, const char *id)
{
	char *path = fd_test_fmt("/payments/%s", id);
	json_t *j = get_ok(ts, path);
	free(path);
	return j;
}

/* A process answer that recorded an event: exactly {payment_id, gateway, version, position}. */
static void assert_processed(const struct fd_test_resp *r, const char *id, const char *gateway, long long version)
{
	cr_assert_eq(r->status, 200, "%d %s", r->status, r->body);
	assert_json_ct(r);
	cr_assert_eq(json_object_size(r->json), 4, "%s", r->body);
	cr_assert_str_eq(fd_test_json_str(r, "payment_id"), id);
	cr_assert_str_eq(fd_test_json_str(r, "gateway"), gateway);
	cr_assert_eq(fd_test_json_int(r, "version"), version);
	cr_assert(is_cursor(fd_test_json_str(r, "position")));
	char etag[16];
	snprintf(etag, sizeof etag, "\"%lld\"", version);
	cr_assert_str_eq(header(r, "ETag"), etag);
}

Test(domain_payments, request_authorise_and_refund)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char order[FD_UUID_STRLEN + 1], pay[FD_UUID_STRLEN + 1], upper[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(order);
	fd_test_new_uuid(pay);
	for (size_t i = 0; i <= FD_UUID_STRLEN; i++)
		upper[i] = (char)(order[i] >= 'a' && order[i] <= 'f' ? order[i] - 'a' + 'A' : order[i]);
	/* A client-chosen payment id; the order id in either case is recorded canonical. */
	char *body = fd_test_fmt("{\"payment_id\":\"%s\",\"order_id\":\"%s\",\"amount_cents\":2500}", pay, upper);
	struct fd_test_resp r;
	post(&ts, "/payments", body, &r);
	assert_command_ok(&r, 201, "payment_id", pay, 1);
	char *loc = fd_test_fmt("/payments/%s", pay);
	cr_assert_str_eq(header(&r, "Location"), loc);
	fd_test_resp_free(&r);
	json_t *p = get_payment(&ts, pay);
	json_t *want = json_pack("{s:s, s:s, s:i, s:s, s:i, s:i, s:i}", "payment_id", pay, "order_id", order,
				 "amount_cents", 2500, "status", "requested", "refunded_cents", 0, "attempts", 0,
				 "version", 1);
	cr_assert(json_equal(p, want), "%s", json_dumps(p, 0));
	json_decref(want);
	json_decref(p);

	/* Not authorised yet: no refund. */
	payment_cmd(&ts, pay, "refund", NULL, NULL, &r);
	assert_refusal(&r, 409, "payment-not-authorised", "Payment is not authorised");
	fd_test_resp_free(&r);

	payment_cmd(&ts, pay, "process", NULL, NULL, &r);
	assert_processed(&r, pay, "authorised", 2);
	fd_test_resp_free(&r);
	p = get_payment(&ts, pay);
	cr_assert_str_eq(jstr(p, "status"), "authorised");
	cr_assert_eq(jint(p, "version"), 2);
	json_decref(p);
	/* The authorisation code is recorded. */
	get(&ts, fd_test_P("/payments/%s/events", pay), &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *e = json_array_get(json_object_get(r.json, "events"), 1);
	cr_assert_str_eq(jstr(e, "type"), "PaymentAuthorised");
	const char *code = jstr(json_object_get(e, "data"), "authorisation");
	cr_assert(code && strlen(code) == 21 && strncmp(code, "AUTH-", 5) == 0 &&
			  strspn(code + 5, "0123456789ABCDEF") == 16,
		  "authorisation %s", code ? code : "(none)");
	fd_test_resp_free(&r);

	/* Once is enough. */
	payment_cmd(&ts, pay, "process", NULL, NULL, &r);
	assert_process_refusal(&r, 409, "payment-not-pending", "Payment is not pending");
	fd_test_resp_free(&r);

	/* Refunds: too much, a part, then the rest (no body), then nothing is left. */
	payment_cmd(&ts, pay, "refund", NULL, "{\"amount_cents\":2501}", &r);
	assert_refusal(&r, 409, "refund-exceeds-payment", "Refund exceeds the payment");
	fd_test_resp_free(&r);
	payment_cmd(&ts, pay, "refund", NULL, "{\"amount_cents\":1000}", &r);
	assert_command_ok(&r, 200, "payment_id", pay, 3);
	fd_test_resp_free(&r);
	p = get_payment(&ts, pay);
	cr_assert_str_eq(jstr(p, "status"), "authorised");
	cr_assert_eq(jint(p, "refunded_cents"), 1000);
	json_decref(p);
	payment_cmd(&ts, pay, "refund", NULL, "{\"amount_cents\":1501}", &r);
	assert_refusal(&r, 409, "refund-exceeds-payment", NULL);
	fd_test_resp_free(&r);
	payment_cmd(&ts, pay, "refund", NULL, NULL, &r);
	assert_command_ok(&r, 200, "payment_id", pay, 4);
	fd_test_resp_free(&r);
	p = get_payment(&ts, pay);
	cr_assert_str_eq(jstr(p, "status"), "refunded");
	cr_assert_eq(jint(p, "refunded_cents"), 2500);
	json_decref(p);
	payment_cmd(&ts, pay, "refund", NULL, "{}", &r);
	assert_refusal(&r, 409, "payment-not-authorised", NULL);
	fd_test_resp_free(&r);
	payment_cmd(&ts, pay, "process", NULL, NULL, &r);
	assert_process_refusal(&r, 409, "payment-not-pending", NULL);
	fd_test_resp_free(&r);

	/* The same payment id again. */
	post(&ts, "/payments", body, &r);
	assert_refusal(&r, 409, "payment-exists", "Payment already exists");
	fd_test_resp_free(&r);
	assert_events(&ts, 4);
	/* The earlier state is still there. */
	p = get_ok(&ts, fd_test_P("/payments/%s?version=3", pay));
	cr_assert_eq(jint(p, "refunded_cents"), 1000);
	json_decref(p);
	free(body);
	free(loc);
	fd_test_server_stop(&ts);
}

Test(domain_payments, amounts_above_the_limit_are_declined)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak_limit_5000);
	char at_limit[FD_UUID_STRLEN + 1], above[FD_UUID_STRLEN + 1];
	request_payment(&ts, 5000, at_limit);
	request_payment(&ts, 5001, above);
	struct fd_test_resp r;
	payment_cmd(&ts, at_limit, "process", NULL, NULL, &r);
	assert_processed(&r, at_limit, "authorised", 2);
	fd_test_resp_free(&r);
	payment_cmd(&ts, above, "process", NULL, NULL, &r);
	assert_processed(&r, above, "declined", 2);
	fd_test_resp_free(&r);
	json_t *p = get_payment(&ts, above);
	cr_assert_str_eq(jstr(p, "status"), "declined");
	cr_assert_str_eq(jstr(p, "decline_reason"), "amount exceeds limit");
	json_decref(p);
	payment_cmd(&ts, above, "process", NULL, NULL, &r);
	assert_process_refusal(&r, 409, "payment-not-pending", NULL);
	fd_test_resp_free(&r);
	payment_cmd(&ts, above, "refund", NULL, NULL, &r);
	assert_refusal(&r, 409, "payment-not-authorised", NULL);
	fd_test_resp_free(&r);
	assert_events(&ts, 4);
	fd_test_server_stop(&ts);
}

Test(domain_payments, transient_failures_are_counted)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak_fail_first_2);
	char pay[FD_UUID_STRLEN + 1];
	request_payment(&ts, 700, pay);
	struct fd_test_resp r;
	for (int attempt = 1; attempt <= 2; attempt++) {
		payment_cmd(&ts, pay, "process", NULL, NULL, &r);
		assert_processed(&r, pay, "transient_failure", 1 + attempt);
		fd_test_resp_free(&r);
		json_t *p = get_payment(&ts, pay);
		cr_assert_str_eq(jstr(p, "status"), "requested");
		cr_assert_eq(jint(p, "attempts"), attempt);
		json_decref(p);
	}
	payment_cmd(&ts, pay, "process", NULL, NULL, &r);
	assert_processed(&r, pay, "authorised", 4);
	fd_test_resp_free(&r);
	json_t *p = get_payment(&ts, pay);
	cr_assert_str_eq(jstr(p, "status"), "authorised");
	cr_assert_eq(jint(p, "attempts"), 2);
	json_decref(p);
	get(&ts, fd_test_P("/payments/%s/events", pay), &r);
	json_t *events = json_object_get(r.json, "events");
	cr_assert_eq(json_array_size(events), 4);
	static const char *const types[] = { "PaymentRequested", "PaymentAttemptFailed", "PaymentAttemptFailed",
					     "PaymentAuthorised" };
	static const char *const commands[] = { "request", "record_failure", "record_failure", "authorise" };
	for (size_t i = 0; i < 4; i++) {
		cr_assert_str_eq(jstr(json_array_get(events, i), "type"), types[i]);
		cr_assert_str_eq(jstr(event_meta(events, i), "command"), commands[i]);
	}
	cr_assert(strstr(jstr(json_object_get(json_array_get(events, 1), "data"), "error"), "attempt 1"), "%s", r.body);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(domain_payments, no_answer_is_202_and_records_nothing)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak_never_answer);
	char pay[FD_UUID_STRLEN + 1];
	request_payment(&ts, 700, pay);
	struct fd_test_resp r;
	for (int i = 0; i < 2; i++) {
		payment_cmd(&ts, pay, "process", NULL, NULL, &r);
		cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
		assert_json_ct(&r);
		json_t *want = json_pack("{s:s, s:s}", "payment_id", pay, "gateway", "no_answer");
		cr_assert(json_equal(r.json, want), "%s", r.body);
		json_decref(want);
		cr_assert_null(header(&r, "ETag"), "nothing was recorded, so there is no new version");
		fd_test_resp_free(&r);
	}
	assert_events(&ts, 1);
	json_t *p = get_payment(&ts, pay);
	cr_assert_str_eq(jstr(p, "status"), "requested");
	cr_assert_eq(jint(p, "attempts"), 0);
	cr_assert_eq(jint(p, "version"), 1);
	json_decref(p);
	fd_test_server_stop(&ts);
}

Test(domain_payments, errors)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char order[FD_UUID_STRLEN + 1], pay[FD_UUID_STRLEN + 1], missing[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(order);
	fd_test_new_uuid(missing);
	request_payment(&ts, 1000, pay);
	char *c[12];
	c[0] = fd_test_fmt("{\"amount_cents\":1}");
	c[1] = fd_test_fmt("{\"order_id\":\"nope\",\"amount_cents\":1}");
	c[2] = fd_test_fmt("{\"order_id\":\"%s\",\"amount_cents\":0}", order);
	c[3] = fd_test_fmt("{\"order_id\":\"%s\",\"amount_cents\":12.5}", order);
	c[4] = fd_test_fmt("{\"order_id\":\"%s\",\"amount_cents\":\"12\"}", order);
	c[5] = fd_test_fmt("{\"order_id\":\"%s\",\"amount_cents\":1e3}", order);
	c[6] = fd_test_fmt("{\"order_id\":\"%s\",\"amount_cents\":-5}", order);
	c[7] = fd_test_fmt("{\"order_id\":\"%s\"}", order);
	c[8] = fd_test_fmt("{\"order_id\":\"%s\",\"amount_cents\":100000000001}", order);
	c[9] = fd_test_fmt("{\"order_id\":\"%s\",\"amount_cents\":1,\"currency\":\"EUR\"}", order);
	c[10] = fd_test_fmt("{\"payment_id\":\"nope\",\"order_id\":\"%s\",\"amount_cents\":1}", order);
	c[11] = fd_test_fmt("{\"payment_id\":42,\"order_id\":\"%s\",\"amount_cents\":1}", order);
	static const char *const fields[] = { "/order_id", "/order_id", "/amount_cents", "/amount_cents",
					      "/amount_cents", "/amount_cents", "/amount_cents", "/amount_cents",
					      "/amount_cents", "/currency", "/payment_id", "/payment_id" };
	struct fd_test_resp r;
	for (size_t i = 0; i < 12; i++) {
		post(&ts, "/payments", c[i], &r);
		cr_log_info("case %zu: %s", i, c[i]);
		assert_field_problem(&r, fields[i]);
		fd_test_resp_free(&r);
		free(c[i]);
	}
	static const char *const refunds[] = { "{\"amount_cents\":12.5}", "{\"amount_cents\":\"12\"}",
					       "{\"amount_cents\":1e3}", "{\"amount_cents\":0}",
					       "{\"amount_cents\":1,\"x\":1}" };
	static const char *const refund_fields[] = { "/amount_cents", "/amount_cents", "/amount_cents", "/amount_cents",
						     "/x" };
	for (size_t i = 0; i < 5; i++) {
		payment_cmd(&ts, pay, "refund", NULL, refunds[i], &r);
		assert_field_problem(&r, refund_fields[i]);
		fd_test_resp_free(&r);
	}
	payment_cmd(&ts, pay, "refund", NULL, "{\"amount_cents\":", &r);
	fd_test_assert_problem(&r, 400, "invalid-json");
	fd_test_resp_free(&r);

	/* Missing payments. */
	payment_cmd(&ts, missing, "process", NULL, NULL, &r);
	assert_process_refusal(&r, 404, "payment-not-found", "Payment not found");
	fd_test_resp_free(&r);
	payment_cmd(&ts, missing, "refund", NULL, NULL, &r);
	assert_refusal(&r, 404, "payment-not-found", "Payment not found");
	fd_test_resp_free(&r);
	payment_cmd(&ts, "not-a-uuid", "process", NULL, NULL, &r);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	payment_cmd(&ts, "not-a-uuid", "refund", NULL, NULL, &r);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	get_status(&ts, fd_test_P("/payments/%s", missing), 404, "not-found");
	get_status(&ts, "/payments/not-a-uuid", 404, "not-found");
	get_status(&ts, fd_test_P("/payments/%s/events", missing), 404, "not-found");
	get_status(&ts, fd_test_P("/payments/%s?version=2", pay), 404, "not-found");
	get_status(&ts, fd_test_P("/payments/%s?at=yesterday", pay), 400, "invalid-parameter");
	assert_events(&ts, 1);
	fd_test_server_stop(&ts);
}

/* The event a process call records carries the request's metadata. */
Test(domain_payments, process_records_request_metadata)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char pay[FD_UUID_STRLEN + 1];
	request_payment(&ts, 100, pay);
	struct fd_test_resp r;
	payment_cmd(&ts, pay, "process", "X-Request-Id: proc-1\r\nX-Correlation-Id: checkout-77\r\n", NULL, &r);
	assert_processed(&r, pay, "authorised", 2);
	fd_test_resp_free(&r);
	get(&ts, fd_test_P("/payments/%s/events", pay), &r);
	json_t *m = event_meta(json_object_get(r.json, "events"), 1);
	cr_assert_str_eq(jstr(m, "request_id"), "proc-1");
	cr_assert_str_eq(jstr(m, "correlation_id"), "checkout-77");
	cr_assert_str_eq(jstr(m, "command"), "authorise");
	cr_assert_str_eq(jstr(m, "caller"), "anonymous");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/*
 * Every other refusal explains itself in "detail" (the same slugs from other
 * routes do: "the payment is authorised", "the payment has not been
 * requested"); process's own refusals should too.
 */
Test(domain_payments, process_refusals_have_detail)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char pay[FD_UUID_STRLEN + 1], missing[FD_UUID_STRLEN + 1];
	request_payment(&ts, 100, pay);
	fd_test_new_uuid(missing);
	struct fd_test_resp r;
	payment_cmd(&ts, pay, "process", NULL, NULL, &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	fd_test_resp_free(&r);
	payment_cmd(&ts, pay, "process", NULL, NULL, &r);
	fd_test_assert_problem(&r, 409, "payment-not-pending");
	fd_test_resp_free(&r);
	payment_cmd(&ts, missing, "process", NULL, NULL, &r);
	fd_test_assert_problem(&r, 404, "payment-not-found");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/* The same for payments: a stream of foreign events is no payment to read or to process. */
Test(domain_payments, stream_without_payment_events_is_not_a_payment)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(id);
	struct fd_test_resp r;
	post(&ts, fd_test_P("/streams/payment-%s/events", id),
	     "{\"expected_version\":0,\"events\":[{\"type\":\"NoteAdded\",\"data\":{}}]}", &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);
	payment_cmd(&ts, id, "refund", NULL, NULL, &r);
	fd_test_assert_problem(&r, 404, "payment-not-found");
	fd_test_resp_free(&r);
	payment_cmd(&ts, id, "process", NULL, NULL, &r);
	cr_assert_eq(r.status, 404, "process on a payment that was never requested answered %d: %s", r.status, r.body);
	fd_test_assert_problem_no_detail(&r, 404, "payment-not-found");
	fd_test_resp_free(&r);
	get(&ts, fd_test_P("/payments/%s", id), &r);
	cr_assert_eq(r.status, 404, "GET of a payment that was never requested answered %d: %s", r.status, r.body);
	fd_test_resp_free(&r);
	assert_events(&ts, 1);
	fd_test_server_stop(&ts);
}

/* ---- metadata ------------------------------------------------------------------------ */

Test(domain_metadata, request_headers_on_every_recorded_event)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	send_req(&ts, "POST", "/orders", "X-Request-Id: rq-create\r\nX-Correlation-Id: corr-1\r\nX-Causation-Id: cause-0\r\n",
		 "{\"customer_id\":\"c-m\"}", &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	char id[FD_UUID_STRLEN + 1];
	snprintf(id, sizeof id, "%s", fd_test_json_str(&r, "order_id"));
	fd_test_resp_free(&r);
	struct {
		const char *method, *suffix, *body, *command;
	} cmds[] = {
		{ "POST", "lines", "{\"product_id\":\"a\",\"quantity\":1,\"unit_price_cents\":5}", "add_line" },
		{ "POST", "lines", "{\"product_id\":\"b\",\"quantity\":1,\"unit_price_cents\":5}", "add_line" },
		{ "DELETE", "lines/a", NULL, "remove_line" },
		{ "POST", "place", NULL, "place" },
		{ "POST", "cancel", "{\"reason\":\"r\"}", "cancel" },
	};
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
		char *path = fd_test_fmt("/orders/%s/%s", id, cmds[i].suffix);
		char *h = fd_test_fmt("X-Request-Id: rq-%zu\r\nX-Correlation-Id: corr-1\r\nX-Causation-Id: cause-%zu\r\n", i + 1,
			      i + 1);
		send_req(&ts, cmds[i].method, path, h, cmds[i].body, &r);
		cr_assert_eq(r.status, 200, "%s: %s", path, r.body);
		cr_assert_str_eq(header(&r, "X-Request-Id"), fd_test_P("rq-%zu", i + 1));
		fd_test_resp_free(&r);
		free(path);
		free(h);
	}
	json_t *events = order_events(&ts, id);
	cr_assert_eq(json_array_size(events), 6);
	for (size_t i = 0; i < 6; i++) {
		json_t *m = event_meta(events, i);
		char rid[32], cause[32];
		snprintf(rid, sizeof rid, i ? "rq-%zu" : "rq-create", i);
		snprintf(cause, sizeof cause, "cause-%zu", i);
		json_t *want = json_pack("{s:s, s:s, s:s, s:s, s:s}", "correlation_id", "corr-1", "causation_id", cause,
					 "request_id", rid, "caller", "anonymous", "command",
					 i ? cmds[i - 1].command : "create");
		if (i && strcmp(cmds[i - 1].command, "add_line") == 0) /* OrderLineAdded is at schema version 2 */
			json_object_set_new(want, "schema_version", json_integer(2));
		cr_assert(json_equal(m, want), "event %zu metadata: %s", i + 1, json_dumps(m, 0));
		json_decref(want);
	}
	json_decref(events);
	fd_test_server_stop(&ts);
}

Test(domain_metadata, defaults_and_invalid_headers)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	post(&ts, "/orders", "{\"customer_id\":\"c-d\"}", &r);
	cr_assert_eq(r.status, 201);
	char id[FD_UUID_STRLEN + 1], rid[160];
	snprintf(id, sizeof id, "%s", fd_test_json_str(&r, "order_id"));
	snprintf(rid, sizeof rid, "%s", header(&r, "X-Request-Id"));
	fd_test_resp_free(&r);
	/* Headers that break the id rules are ignored. */
	send_req(&ts, "POST", fd_test_P("/orders/%s/lines", id),
		 "X-Request-Id: has space\r\nX-Correlation-Id: bad/corr\r\nX-Causation-Id: bad cause\r\n",
		 "{\"product_id\":\"a\",\"quantity\":1,\"unit_price_cents\":5}", &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	char rid2[160];
	snprintf(rid2, sizeof rid2, "%s", header(&r, "X-Request-Id"));
	cr_assert_str_neq(rid2, "has space");
	fd_test_resp_free(&r);

	json_t *events = order_events(&ts, id);
	const char *const rids[] = { rid, rid2 };
	for (size_t i = 0; i < 2; i++) {
		json_t *m = event_meta(events, i);
		cr_assert_str_eq(jstr(m, "request_id"), rids[i]);
		cr_assert_str_eq(jstr(m, "correlation_id"), rids[i], "the correlation defaults to the request id");
		cr_assert_null(json_object_get(m, "causation_id"));
		cr_assert_str_eq(jstr(m, "command"), i ? "add_line" : "create");
		/* an OrderLineAdded also carries its schema version, 2 */
		cr_assert_eq(json_integer_value(json_object_get(m, "schema_version")), i ? 2 : 0);
		cr_assert_eq(json_object_size(m), i ? 5 : 4, "%s", json_dumps(m, 0));
	}
	json_decref(events);
	fd_test_server_stop(&ts);
}

/* ---- If-Match ------------------------------------------------------------------------ */

Test(domain_if_match, stale_version_is_412_and_records_nothing)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-im", id);
	struct fd_test_resp r;
	char *path = fd_test_fmt("/orders/%s", id);
	get(&ts, path, &r);
	char etag[32];
	snprintf(etag, sizeof etag, "%s", header(&r, "ETag"));
	cr_assert_str_eq(etag, "\"1\"");
	fd_test_resp_free(&r);
	char *im = fd_test_fmt("If-Match: %s\r\n", etag);
	const char *line1 = "{\"product_id\":\"a\",\"quantity\":1,\"unit_price_cents\":5}";
	const char *line2 = "{\"product_id\":\"b\",\"quantity\":1,\"unit_price_cents\":5}";

	/* The version still holds: recorded. */
	send_req(&ts, "POST", fd_test_P("/orders/%s/lines", id), im, line1, &r);
	assert_command_ok(&r, 200, "order_id", id, 2);
	fd_test_resp_free(&r);
	/* Now it does not. */
	send_req(&ts, "POST", fd_test_P("/orders/%s/lines", id), im, line2, &r);
	fd_test_assert_problem(&r, 412, "precondition-failed");
	fd_test_resp_free(&r);
	assert_events(&ts, 2);
	/* Checked before the payload and the rules. */
	send_req(&ts, "POST", fd_test_P("/orders/%s/lines", id), im, "{\"quantity\":\"x\"}", &r);
	fd_test_assert_problem(&r, 412, "precondition-failed");
	fd_test_resp_free(&r);
	send_req(&ts, "POST", fd_test_P("/orders/%s/ship", id), im, NULL, &r);
	fd_test_assert_problem(&r, 412, "precondition-failed");
	fd_test_resp_free(&r);
	/* Every command route honours it. */
	send_req(&ts, "DELETE", fd_test_P("/orders/%s/lines/a", id), im, NULL, &r);
	fd_test_assert_problem(&r, 412, "precondition-failed");
	fd_test_resp_free(&r);
	send_req(&ts, "POST", fd_test_P("/orders/%s/cancel", id), im, "{\"reason\":\"r\"}", &r);
	fd_test_assert_problem(&r, 412, "precondition-failed");
	fd_test_resp_free(&r);
	send_req(&ts, "POST", fd_test_P("/orders/%s/place", id), im, NULL, &r);
	fd_test_assert_problem(&r, 412, "precondition-failed");
	fd_test_resp_free(&r);
	assert_events(&ts, 2);

	/* A weak ETag of the current version works. */
	send_req(&ts, "POST", fd_test_P("/orders/%s/lines", id), "If-Match: W/\"2\"\r\n", line2, &r);
	assert_command_ok(&r, 200, "order_id", id, 3);
	fd_test_resp_free(&r);
	/* "0": the aggregate must not exist. */
	char fresh[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(fresh);
	char *create = fd_test_fmt("{\"order_id\":\"%s\",\"customer_id\":\"c\"}", fresh);
	send_req(&ts, "POST", "/orders", "If-Match: \"0\"\r\n", create, &r);
	assert_command_ok(&r, 201, "order_id", fresh, 1);
	fd_test_resp_free(&r);
	send_req(&ts, "POST", fd_test_P("/orders/%s/place", fresh), "If-Match: \"0\"\r\n", NULL, &r);
	fd_test_assert_problem(&r, 412, "precondition-failed");
	fd_test_resp_free(&r);
	/* On a missing order a non-zero version cannot hold. */
	char missing[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(missing);
	send_req(&ts, "POST", fd_test_P("/orders/%s/place", missing), "If-Match: \"1\"\r\n", NULL, &r);
	fd_test_assert_problem(&r, 412, "precondition-failed");
	fd_test_resp_free(&r);
	/* Products and payments too. */
	post(&ts, "/products", "{\"product_id\":\"p\",\"name\":\"P\",\"stock\":1}", &r);
	fd_test_resp_free(&r);
	send_req(&ts, "POST", "/products/p/restock", "If-Match: \"7\"\r\n", "{\"quantity\":1}", &r);
	fd_test_assert_problem(&r, 412, "precondition-failed");
	fd_test_resp_free(&r);
	send_req(&ts, "POST", "/products/p/restock", "If-Match: \"1\"\r\n", "{\"quantity\":1}", &r);
	assert_command_ok(&r, 200, "product_id", "p", 2);
	fd_test_resp_free(&r);
	assert_events(&ts, 6);
	free(path);
	free(im);
	free(create);
	fd_test_server_stop(&ts);
}

Test(domain_if_match, malformed_if_match_is_400)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-im2", id);
	static const char *const bad[] = { "1", "*", "\"abc\"", "\"\"", "\"-1\"", "W/1", "\"1", "\"1\", \"2\"",
					   "\"99999999999999999999\"" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct fd_test_resp r;
		char *h = fd_test_fmt("If-Match: %s\r\n", bad[i]);
		send_req(&ts, "POST", fd_test_P("/orders/%s/place", id), h, NULL, &r);
		cr_log_info("If-Match: %s -> %d", bad[i], r.status);
		fd_test_assert_problem(&r, 400, "invalid-header");
		cr_assert_str_eq(fd_test_json_str(&r, "header"), "If-Match");
		fd_test_resp_free(&r);
		free(h);
	}
	assert_events(&ts, 1);
	fd_test_server_stop(&ts);
}

/*
 * A version of 19 digits fits the header's length check but not int64: it can
 * name no version, so it must be refused (400) or fail to match (412), never
 * overflow while it is parsed.
 */
Test(domain_if_match, nineteen_digit_version_does_not_overflow)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-im3", id);
	struct fd_test_resp r;
	send_req(&ts, "POST", fd_test_P("/orders/%s/lines", id), "If-Match: \"9999999999999999999\"\r\n",
		 "{\"product_id\":\"a\",\"quantity\":1,\"unit_price_cents\":5}", &r);
	cr_assert(r.status == 400 || r.status == 412, "status %d: %s", r.status, r.body);
	fd_test_assert_problem(&r, r.status, r.status == 400 ? "invalid-header" : "precondition-failed");
	fd_test_resp_free(&r);
	assert_events(&ts, 1);
	fd_test_server_stop(&ts);
}

/* ---- Idempotency-Key ---------------------------------------------------------------------- */

/* Assert that `again` repeats `first` exactly, marked as a replay. */
static void assert_replay(const struct fd_test_resp *first, const struct fd_test_resp *again)
{
	cr_assert_null(header(first, "Idempotent-Replayed"), "the first answer is no replay");
	cr_assert_eq(again->status, first->status, "replay status %d, first %d: %s", again->status, first->status,
		     again->body);
	cr_assert_str_eq(again->body, first->body, "the replay's body differs");
	cr_assert_str_eq(header(again, "Idempotent-Replayed"), "true");
	cr_assert_str_eq(header(again, "ETag"), header(first, "ETag"));
	const char *l1 = header(first, "Location"), *l2 = header(again, "Location");
	if (l1)
		cr_assert_str_eq(l2 ? l2 : "(none)", l1);
}

Test(domain_idempotency, same_key_same_request_replays_the_first_answer)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp first, again;
	/* A create without order_id: the key decides the id. */
	send_req(&ts, "POST", "/orders", "Idempotency-Key: create-1\r\n", "{\"customer_id\":\"c-i\"}", &first);
	assert_command_ok(&first, 201, "order_id", NULL, 1);
	char id[FD_UUID_STRLEN + 1];
	snprintf(id, sizeof id, "%s", fd_test_json_str(&first, "order_id"));
	cr_assert(is_canonical_uuid(id));
	send_req(&ts, "POST", "/orders", "Idempotency-Key: create-1\r\n", "{\"customer_id\":\"c-i\"}", &again);
	assert_replay(&first, &again);
	cr_assert_str_eq(fd_test_json_str(&again, "order_id"), id);
	fd_test_resp_free(&first);
	fd_test_resp_free(&again);
	assert_events(&ts, 1);
	/* Another key, the same body: another order. */
	send_req(&ts, "POST", "/orders", "Idempotency-Key: create-2\r\n", "{\"customer_id\":\"c-i\"}", &first);
	cr_assert_eq(first.status, 201);
	cr_assert_str_neq(fd_test_json_str(&first, "order_id"), id);
	fd_test_resp_free(&first);
	assert_events(&ts, 2);

	/* A line, repeated three times. */
	char *lines = fd_test_fmt("/orders/%s/lines", id);
	const char *line = "{\"product_id\":\"a\",\"quantity\":2,\"unit_price_cents\":5}";
	send_req(&ts, "POST", lines, "Idempotency-Key: line-a\r\n", line, &first);
	assert_command_ok(&first, 200, "order_id", id, 2);
	for (int i = 0; i < 3; i++) {
		send_req(&ts, "POST", lines, "Idempotency-Key: line-a\r\n", line, &again);
		assert_replay(&first, &again);
		fd_test_resp_free(&again);
	}
	fd_test_resp_free(&first);
	assert_events(&ts, 3);
	json_t *o = get_order(&ts, id);
	cr_assert_eq(jint(json_array_get(json_object_get(o, "lines"), 0), "quantity"), 2, "the line was added once");
	json_decref(o);

	/* Even after the order moved on, the repeat answers the first result. */
	send_req(&ts, "POST", fd_test_P("/orders/%s/place", id), "Idempotency-Key: place-1\r\n", NULL, &first);
	assert_command_ok(&first, 200, "order_id", id, 3);
	send_req(&ts, "POST", fd_test_P("/orders/%s/place", id), "Idempotency-Key: place-1\r\n", NULL, &again);
	assert_replay(&first, &again);
	fd_test_resp_free(&again);
	/* Without the key, the same command is decided afresh and refused. */
	send_req(&ts, "POST", fd_test_P("/orders/%s/place", id), NULL, NULL, &again);
	fd_test_assert_problem(&again, 409, "order-not-draft");
	fd_test_resp_free(&again);
	/* A replay comes before If-Match: the stale version is not looked at. */
	send_req(&ts, "POST", fd_test_P("/orders/%s/place", id), "Idempotency-Key: place-1\r\nIf-Match: \"1\"\r\n", NULL,
		 &again);
	assert_replay(&first, &again);
	fd_test_resp_free(&again);
	fd_test_resp_free(&first);
	assert_events(&ts, 4);

	/* Products: the key on a create with an explicit id. */
	send_req(&ts, "POST", "/products", "Idempotency-Key: prod-1\r\n", "{\"product_id\":\"k-1\",\"name\":\"K\",\"stock\":2}",
		 &first);
	assert_command_ok(&first, 201, "product_id", "k-1", 1);
	send_req(&ts, "POST", "/products", "Idempotency-Key: prod-1\r\n", "{\"product_id\":\"k-1\",\"name\":\"K\",\"stock\":2}",
		 &again);
	assert_replay(&first, &again);
	fd_test_resp_free(&first);
	fd_test_resp_free(&again);
	assert_events(&ts, 5);

	/* The recorded events carry the key. */
	json_t *events = order_events(&ts, id);
	json_t *idem = json_object_get(event_meta(events, 1), "idempotency");
	cr_assert_str_eq(jstr(idem, "key"), "line-a");
	cr_assert_eq(jint(idem, "events"), 1);
	const char *hash = jstr(idem, "request_hash");
	cr_assert(hash && strlen(hash) == 64 && strspn(hash, "0123456789abcdef") == 64, "request_hash %s",
		  hash ? hash : "(none)");
	json_decref(events);
	free(lines);
	fd_test_server_stop(&ts);
}

Test(domain_idempotency, same_key_other_request_is_422)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-422", id);
	struct fd_test_resp r;
	char *lines = fd_test_fmt("/orders/%s/lines", id);
	send_req(&ts, "POST", lines, "Idempotency-Key: k-1\r\n", "{\"product_id\":\"a\",\"quantity\":1,\"unit_price_cents\":5}",
		 &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	fd_test_resp_free(&r);
	/* Another body (even one meaning the same thing, spaced differently). */
	send_req(&ts, "POST", lines, "Idempotency-Key: k-1\r\n", "{\"product_id\":\"b\",\"quantity\":1,\"unit_price_cents\":5}",
		 &r);
	fd_test_assert_problem(&r, 422, "idempotency-key-reused");
	fd_test_resp_free(&r);
	send_req(&ts, "POST", lines, "Idempotency-Key: k-1\r\n",
		 "{\"product_id\": \"a\", \"quantity\": 1, \"unit_price_cents\": 5}", &r);
	fd_test_assert_problem(&r, 422, "idempotency-key-reused");
	fd_test_resp_free(&r);
	/* Another path or method. */
	send_req(&ts, "POST", fd_test_P("/orders/%s/place", id), "Idempotency-Key: k-1\r\n", NULL, &r);
	fd_test_assert_problem(&r, 422, "idempotency-key-reused");
	fd_test_resp_free(&r);
	send_req(&ts, "DELETE", fd_test_P("/orders/%s/lines/a", id), "Idempotency-Key: k-1\r\n", NULL, &r);
	fd_test_assert_problem(&r, 422, "idempotency-key-reused");
	fd_test_resp_free(&r);
	/* A create without id, with the same key. */
	send_req(&ts, "POST", "/orders", "Idempotency-Key: k-1\r\n", "{\"customer_id\":\"c\"}", &r);
	fd_test_assert_problem(&r, 422, "idempotency-key-reused");
	fd_test_resp_free(&r);
	/* A create without id whose body changes. */
	send_req(&ts, "POST", "/orders", "Idempotency-Key: k-2\r\n", "{\"customer_id\":\"c-a\"}", &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);
	send_req(&ts, "POST", "/orders", "Idempotency-Key: k-2\r\n", "{\"customer_id\":\"c-b\"}", &r);
	fd_test_assert_problem(&r, 422, "idempotency-key-reused");
	fd_test_resp_free(&r);
	assert_events(&ts, 3);
	free(lines);
	fd_test_server_stop(&ts);
}

Test(domain_idempotency, refused_requests_are_decided_again_and_keys_are_checked)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-k", id);
	struct fd_test_resp r;
	/* Refused: nothing recorded, so the repeat is decided afresh. */
	send_req(&ts, "POST", fd_test_P("/orders/%s/place", id), "Idempotency-Key: pl\r\n", NULL, &r);
	fd_test_assert_problem(&r, 409, "order-empty");
	fd_test_resp_free(&r);
	add_line(&ts, id, "a", 1, 1);
	send_req(&ts, "POST", fd_test_P("/orders/%s/place", id), "Idempotency-Key: pl\r\n", NULL, &r);
	assert_command_ok(&r, 200, "order_id", id, 3);
	cr_assert_null(header(&r, "Idempotent-Replayed"));
	fd_test_resp_free(&r);

	/* Key rules: 1-255 visible ASCII characters. */
	char k255[256], k256[257];
	memset(k255, 'k', 255);
	k255[255] = '\0';
	memset(k256, 'k', 256);
	k256[256] = '\0';
	char *h = fd_test_fmt("Idempotency-Key: %s\r\n", k255);
	send_req(&ts, "POST", "/orders", h, "{\"customer_id\":\"c\"}", &r);
	cr_assert_eq(r.status, 201, "a 255-character key: %d %s", r.status, r.body);
	fd_test_resp_free(&r);
	free(h);
	static const char *const bad[] = { NULL, "a b", "caf\xc3\xa9" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		h = fd_test_fmt("Idempotency-Key: %s\r\n", bad[i] ? bad[i] : k256);
		send_req(&ts, "POST", "/orders", h, "{\"customer_id\":\"c\"}", &r);
		fd_test_assert_problem(&r, 400, "invalid-header");
		cr_assert_str_eq(fd_test_json_str(&r, "header"), "Idempotency-Key");
		fd_test_resp_free(&r);
		free(h);
	}
	assert_events(&ts, 4);
	fd_test_server_stop(&ts);
}

/*
 * Concurrent twins.  Both requests are let past the "was this key used?"
 * check while the test holds an EXCLUSIVE lock on events (reads go on, the
 * appends wait); the lock is released once both wait on it, so they really
 * race at the store.
 */
struct twin {
	uint16_t port;
	const char *method, *path, *headers, *body;
	struct fd_test_resp r;
	int rc;
};

static void *twin_main(void *arg)
{
	struct twin *t = arg;
	t->rc = fd_test_http(t->port, t->method, t->path, t->headers, t->body, strlen(t->body), &t->r);
	return NULL;
}

static void exec_ok(PGconn *c, const char *sql)
{
	PGresult *res = PQexec(c, sql);
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s: %s", sql, PQresultErrorMessage(res));
	PQclear(res);
}

/*
 * Each twin goes to a server of its own on the same database, as to separate
 * factd processes: within one process the bus queues commands on one
 * aggregate (its per-stream gate), so only other processes race at the store.
 */
static void run_twins(struct fd_test_server *ts, struct twin *tw, size_t n)
{
	struct fd_test_server others[16];
	cr_assert_leq(n, 16);
	for (size_t i = 1; i < n; i++)
		fd_test_server_start(&others[i], ts->db_url);
	PGconn *lock = fd_test_connect(ts->db_url);
	exec_ok(lock, "BEGIN");
	exec_ok(lock, "LOCK TABLE events IN EXCLUSIVE MODE");
	pthread_t th[16];
	for (size_t i = 0; i < n; i++) {
		tw[i].port = i ? others[i].port : ts->port;
		cr_assert_eq(pthread_create(&th[i], NULL, twin_main, &tw[i]), 0);
	}
	long long waiting = 0;
	for (int i = 0; i < 1000 && waiting < (long long)n; i++) {
		fd_test_sleep_ms(10);
		waiting = fd_test_server_scalar(ts, "SELECT count(*) FROM pg_stat_activity"
						    " WHERE datname = current_database() AND wait_event_type = 'Lock'");
	}
	exec_ok(lock, "COMMIT");
	PQfinish(lock);
	for (size_t i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	for (size_t i = 1; i < n; i++)
		fd_test_server_stop(&others[i]);
	cr_assert_eq(waiting, (long long)n, "only %lld of %zu requests reached the store together", waiting, n);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(tw[i].rc, 0, "twin %zu: no connection", i);
}

Test(domain_idempotency, concurrent_twins_record_once, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	/* Creates without an id: the key decides it. */
	struct twin tw[3];
	for (size_t i = 0; i < 3; i++)
		tw[i] = (struct twin){ .method = "POST", .path = "/orders", .headers = "Idempotency-Key: twin-create\r\n",
				       .body = "{\"customer_id\":\"c-twin\"}" };
	run_twins(&ts, tw, 3);
	int replays = 0;
	for (size_t i = 0; i < 3; i++) {
		cr_assert_eq(tw[i].r.status, 201, "twin %zu: %d %s", i, tw[i].r.status, tw[i].r.body);
		cr_assert_str_eq(tw[i].r.body, tw[0].r.body, "twins got different answers");
		replays += header(&tw[i].r, "Idempotent-Replayed") != NULL;
	}
	cr_assert_eq(replays, 2, "all but one are replays");
	char id[FD_UUID_STRLEN + 1];
	snprintf(id, sizeof id, "%s", fd_test_json_str(&tw[0].r, "order_id"));
	for (size_t i = 0; i < 3; i++)
		fd_test_resp_free(&tw[i].r);
	assert_events(&ts, 1);

	/* Lines on an existing order. */
	char *lines = fd_test_fmt("/orders/%s/lines", id);
	for (size_t i = 0; i < 3; i++)
		tw[i] = (struct twin){ .method = "POST", .path = lines, .headers = "Idempotency-Key: twin-line\r\n",
				       .body = "{\"product_id\":\"a\",\"quantity\":1,\"unit_price_cents\":5}" };
	run_twins(&ts, tw, 3);
	replays = 0;
	for (size_t i = 0; i < 3; i++) {
		cr_assert_eq(tw[i].r.status, 200, "twin %zu: %d %s", i, tw[i].r.status, tw[i].r.body);
		cr_assert_str_eq(tw[i].r.body, tw[0].r.body);
		replays += header(&tw[i].r, "Idempotent-Replayed") != NULL;
	}
	for (size_t i = 0; i < 3; i++)
		fd_test_resp_free(&tw[i].r);
	cr_assert_eq(replays, 2);
	assert_events(&ts, 2);
	json_t *o = get_order(&ts, id);
	cr_assert_eq(jint(json_array_get(json_object_get(o, "lines"), 0), "quantity"), 1);
	json_decref(o);
	free(lines);
	fd_test_server_stop(&ts);
}

/*
 * Concurrent requests with one key but different bodies: one is recorded,
 * the other is a reuse of the key (422) - never a "replay" of a request it
 * did not send.
 */
Test(domain_idempotency, concurrent_same_key_other_body_is_422, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct twin tw[2] = {
		{ .method = "POST", .path = "/orders", .headers = "Idempotency-Key: race-1\r\n", .body = "{\"customer_id\":\"c-one\"}" },
		{ .method = "POST", .path = "/orders", .headers = "Idempotency-Key: race-1\r\n", .body = "{\"customer_id\":\"c-two\"}" },
	};
	run_twins(&ts, tw, 2);
	assert_events(&ts, 1);
	int created = -1, reused = -1;
	for (int i = 0; i < 2; i++) {
		cr_log_info("twin %d: %d %s (replayed: %s)", i, tw[i].r.status, tw[i].r.body,
			    header(&tw[i].r, "Idempotent-Replayed") ? "yes" : "no");
		if (tw[i].r.status == 201)
			created = i;
		else if (tw[i].r.status == 422)
			reused = i;
	}
	cr_assert(created >= 0 && reused >= 0,
		  "expected one 201 and one 422; got %d%s and %d%s", tw[0].r.status,
		  header(&tw[0].r, "Idempotent-Replayed") ? " (replayed)" : "", tw[1].r.status,
		  header(&tw[1].r, "Idempotent-Replayed") ? " (replayed)" : "");
	fd_test_assert_problem(&tw[reused].r, 422, "idempotency-key-reused");
	json_t *o = get_order(&ts, fd_test_json_str(&tw[created].r, "order_id"));
	cr_assert_str_eq(jstr(o, "customer_id"), created ? "c-two" : "c-one", "the 201 is for the body recorded");
	json_decref(o);
	fd_test_resp_free(&tw[0].r);
	fd_test_resp_free(&tw[1].r);
	fd_test_server_stop(&ts);
}

/*
 * The ids a command with an Idempotency-Key gives its events are derived
 * from the key and the installation's secret.  Without the secret a client
 * could compute them and take them first with an append of its own.
 */
static void forge_event(const struct fd_test_server *ts, const char *stream, const char *ns, const char *key)
{
	char name[300], id[FD_UUID_STRLEN + 1];
	struct fd_uuid u;
	int n = snprintf(name, sizeof name, "%s#0", key);
	fd_uuid_from_name(ns, name, (size_t)n, &u);
	fd_uuid_format(&u, id);
	struct fd_test_resp r;
	post(ts, fd_test_P("/streams/%s/events", stream),
	     fd_test_P("{\"expected_version\":\"any\",\"events\":[{\"event_id\":\"%s\",\"type\":\"Noted\",\"data\":{}}]}", id), &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);
}

Test(domain_idempotency, ids_derived_from_the_key_alone_are_not_the_commands)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	/* What the ids were before the secret: the key alone. */
	forge_event(&ts, "notes-1", "factd.command", "forged-1");
	struct fd_test_resp first, again;
	send_req(&ts, "POST", "/orders", "Idempotency-Key: forged-1\r\n", "{\"customer_id\":\"c-f\"}", &first);
	assert_command_ok(&first, 201, "order_id", NULL, 1);
	send_req(&ts, "POST", "/orders", "Idempotency-Key: forged-1\r\n", "{\"customer_id\":\"c-f\"}", &again);
	assert_replay(&first, &again);
	fd_test_resp_free(&first);
	fd_test_resp_free(&again);
	assert_events(&ts, 2);
	fd_test_server_stop(&ts);
}

Test(domain_idempotency, ids_taken_by_other_events_are_409_not_500)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	/* Someone who has the secret (it sits in the database) can still take the ids. */
	PGconn *c = fd_test_connect(ts.db_url);
	PGresult *res = PQexec(c, "SELECT secret FROM installation_secret");
	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
	char ns[256];
	snprintf(ns, sizeof ns, "factd.command\n%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	PQfinish(c);
	forge_event(&ts, "notes-1", ns, "taken-1");
	assert_events(&ts, 1);

	struct fd_test_resp r;
	send_req(&ts, "POST", "/orders", "Idempotency-Key: taken-1\r\n", "{\"customer_id\":\"c-t\"}", &r);
	fd_test_assert_problem(&r, 409, "idempotency-key-conflict");
	fd_test_resp_free(&r);
	send_req(&ts, "POST", "/products", "Idempotency-Key: taken-1\r\n", "{\"product_id\":\"t-1\",\"name\":\"T\",\"stock\":1}",
		 &r);
	fd_test_assert_problem(&r, 409, "idempotency-key-conflict");
	fd_test_resp_free(&r);
	assert_events(&ts, 1);
	/* Another key works as ever. */
	send_req(&ts, "POST", "/products", "Idempotency-Key: taken-2\r\n", "{\"product_id\":\"t-1\",\"name\":\"T\",\"stock\":1}",
		 &r);
	assert_command_ok(&r, 201, "product_id", "t-1", 1);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(domain_idempotency, processes_sharing_a_database_derive_the_same_ids)
{
	struct fd_test_server a, b;
	fd_test_server_start(&a, NULL);
	fd_test_server_start(&b, a.db_url);
	struct fd_test_resp first, again;
	send_req(&a, "POST", "/orders", "Idempotency-Key: shared-1\r\n", "{\"customer_id\":\"c-s\"}", &first);
	assert_command_ok(&first, 201, "order_id", NULL, 1);
	send_req(&b, "POST", "/orders", "Idempotency-Key: shared-1\r\n", "{\"customer_id\":\"c-s\"}", &again);
	assert_replay(&first, &again);
	fd_test_resp_free(&first);
	fd_test_resp_free(&again);
	assert_events(&a, 1);
	fd_test_server_stop(&b);
	fd_test_server_stop(&a);
}

/* ---- eight writers on one order ------------------------------------------------------- */

enum { WRITERS = 8, LINES_PER_WRITER = 5, MAX_SENDS = 200 };

struct writer {
	uint16_t port;
	const char *order;
	int index;
	int ok;
	int conflicts;   /* 409 concurrency-conflict: recorded nothing, sent again */
	int errors;
	int last_error_status;
	char last_error[256];
	/* every request sent: its request id, status and (for 200) version */
	int nsent;
	char rid[MAX_SENDS][48];
	int status[MAX_SENDS];
	long long version[MAX_SENDS];
	int line[MAX_SENDS];
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	for (int k = 0; k < LINES_PER_WRITER && w->nsent < MAX_SENDS;) {
		int s = w->nsent++;
		snprintf(w->rid[s], sizeof w->rid[s], "w%d-line%d-send%d", w->index, k, s);
		char path[128], headers[128], body[160];
		snprintf(path, sizeof path, "/orders/%s/lines", w->order);
		snprintf(headers, sizeof headers, "X-Request-Id: %s\r\n", w->rid[s]);
		snprintf(body, sizeof body, "{\"product_id\":\"w%d-p%d\",\"quantity\":%d,\"unit_price_cents\":%d}", w->index, k,
			 w->index * 10 + k + 1, 100 + w->index);
		struct fd_test_resp r;
		w->line[s] = k;
		if (fd_test_http(w->port, "POST", path, headers, body, strlen(body), &r) != 0) {
			w->status[s] = -1;
			w->errors++;
			w->last_error_status = -1;
			continue;
		}
		w->status[s] = r.status;
		const char *type = fd_test_json_str(&r, "type");
		if (r.status == 200) {
			w->version[s] = fd_test_json_int(&r, "version");
			w->ok++;
			k++;
		} else if (r.status == 409 && type && strcmp(type, FD_PROBLEM_BASE "concurrency-conflict") == 0) {
			w->conflicts++;
		} else {
			w->errors++;
			w->last_error_status = r.status;
			snprintf(w->last_error, sizeof w->last_error, "%s", r.body ? r.body : "");
		}
		fd_test_resp_free(&r);
	}
	return NULL;
}

Test(domain_concurrency, eight_writers_on_one_order_lose_nothing, .timeout = 300)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-conc", id);
	static struct writer w[WRITERS];
	pthread_t th[WRITERS];
	memset(w, 0, sizeof w);
	for (int i = 0; i < WRITERS; i++) {
		w[i].port = ts.port;
		w[i].order = id;
		w[i].index = i;
		cr_assert_eq(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < WRITERS; i++)
		pthread_join(th[i], NULL);

	int conflicts = 0;
	for (int i = 0; i < WRITERS; i++) {
		cr_assert_eq(w[i].errors, 0, "writer %d: %d unexpected answers (last %d: %s)", i, w[i].errors,
			     w[i].last_error_status, w[i].last_error);
		cr_assert_eq(w[i].ok, LINES_PER_WRITER, "writer %d added %d lines", i, w[i].ok);
		conflicts += w[i].conflicts;
	}
	cr_log_info("%d concurrency-conflict answers while adding %d lines", conflicts, WRITERS * LINES_PER_WRITER);

	/* Each 200 has its event exactly once, at the version it answered; a 409 has none. */
	json_t *events = order_events(&ts, id);
	size_t n = json_array_size(events);
	cr_assert_eq(n, 1 + WRITERS * LINES_PER_WRITER, "%zu events", n);
	long long seen_versions[1 + WRITERS * LINES_PER_WRITER + 1] = { 0 };
	for (int i = 0; i < WRITERS; i++) {
		for (int s = 0; s < w[i].nsent; s++) {
			int found = 0;
			json_t *match = NULL;
			for (size_t e = 0; e < n; e++) {
				const char *rid = jstr(event_meta(events, e), "request_id");
				if (rid && strcmp(rid, w[i].rid[s]) == 0) {
					found++;
					match = json_array_get(events, e);
				}
			}
			if (w[i].status[s] != 200) {
				cr_assert_eq(found, 0, "%s answered %d but recorded an event", w[i].rid[s], w[i].status[s]);
				continue;
			}
			cr_assert_eq(found, 1, "%s answered 200 and has %d events", w[i].rid[s], found);
			cr_assert_eq(jint(match, "version"), w[i].version[s], "%s: event at %lld, answered %lld", w[i].rid[s],
				     jint(match, "version"), w[i].version[s]);
			char sku[32];
			snprintf(sku, sizeof sku, "w%d-p%d", i, w[i].line[s]);
			cr_assert_str_eq(jstr(json_object_get(match, "data"), "product_id"), sku);
			cr_assert_str_eq(jstr(event_meta(events, (size_t)jint(match, "version") - 1), "command"), "add_line");
			long long v = w[i].version[s];
			cr_assert(v >= 2 && v <= 1 + WRITERS * LINES_PER_WRITER, "version %lld", v);
			cr_assert_eq(seen_versions[v]++, 0, "version %lld answered twice", v);
		}
	}
	json_decref(events);

	/* Every line is on the order, with its quantity. */
	json_t *o = get_order(&ts, id);
	json_t *lines = json_object_get(o, "lines");
	cr_assert_eq(json_array_size(lines), WRITERS * LINES_PER_WRITER);
	cr_assert_eq(jint(o, "version"), 1 + WRITERS * LINES_PER_WRITER);
	long long total = 0;
	for (int i = 0; i < WRITERS; i++) {
		for (int k = 0; k < LINES_PER_WRITER; k++) {
			char sku[32];
			snprintf(sku, sizeof sku, "w%d-p%d", i, k);
			int found = 0;
			for (size_t l = 0; l < json_array_size(lines); l++) {
				json_t *line = json_array_get(lines, l);
				if (strcmp(jstr(line, "product_id"), sku) == 0) {
					found++;
					cr_assert_eq(jint(line, "quantity"), i * 10 + k + 1);
					cr_assert_eq(jint(line, "unit_price_cents"), 100 + i);
				}
			}
			cr_assert_eq(found, 1, "line %s on the order %d times", sku, found);
			total += (long long)(i * 10 + k + 1) * (100 + i);
		}
	}
	cr_assert_eq(jint(o, "total_cents"), total);
	json_decref(o);
	assert_events(&ts, 1 + WRITERS * LINES_PER_WRITER);
	fd_test_server_stop(&ts);
}

/* ---- the generic stream API on an aggregate's stream --------------------------- */

Test(http_domain, appends_that_would_break_an_aggregate_are_refused)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char order[FD_UUID_STRLEN + 1];
	create_order(&ts, "c-guard", order);
	add_line(&ts, order, "sku-1", 2, 150);
	long long before = count_events(&ts);
	struct fd_test_resp r;

	/* out of order for a draft: confirmed before placed */
	char *path = fd_test_fmt("/streams/order-%s/events", order);
	post(&ts, path, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"OrderConfirmed\",\"data\":{}}]}", &r);
	fd_test_assert_problem(&r, 422, "event-rejected");
	cr_assert_str_eq(fd_test_json_str(&r, "field"), "/events/0");
	fd_test_resp_free(&r);
	/* a known type with data of the wrong shape, second in the batch */
	post(&ts, path,
	     "{\"expected_version\":2,\"events\":[{\"type\":\"Note\",\"data\":{}},"
	     "{\"type\":\"OrderLineAdded\",\"data\":{\"product_id\":\"sku-2\",\"quantity\":\"many\",\"unit_price_cents\":1}}]}",
	     &r);
	fd_test_assert_problem(&r, 422, "event-rejected");
	cr_assert_str_eq(fd_test_json_str(&r, "field"), "/events/1");
	fd_test_resp_free(&r);
	/* a new product stream whose first event is not its creation */
	post(&ts, "/streams/product-sku-guard/events",
	     "{\"expected_version\":0,\"events\":[{\"type\":\"ProductRestocked\",\"data\":{\"quantity\":5}}]}", &r);
	fd_test_assert_problem(&r, 422, "event-rejected");
	fd_test_resp_free(&r);
	assert_events(&ts, before);

	/* the client's expected version is still checked first */
	post(&ts, path, "{\"expected_version\":7,\"events\":[{\"type\":\"Note\",\"data\":{}}]}", &r);
	fd_test_assert_problem(&r, 409, "wrong-version");
	cr_assert_eq(fd_test_json_int(&r, "current_version"), 2);
	fd_test_resp_free(&r);

	/* events the aggregate accepts (or does not know) go in, and it reads them */
	char id[FD_UUID_STRLEN + 1], note[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(id);
	fd_test_new_uuid(note);
	char *placed = fd_test_fmt("{\"expected_version\":2,\"events\":[{\"event_id\":\"%s\",\"type\":\"Note\",\"data\":{\"x\":1}},"
			   "{\"event_id\":\"%s\",\"type\":\"OrderPlaced\",\"data\":{\"lines\":[{\"product_id\":\"sku-1\","
			   "\"quantity\":2,\"unit_price_cents\":150}],\"total_cents\":300}}]}",
			   note, id);
	post(&ts, path, placed, &r);
	cr_assert_eq(r.status, 201, "%d %s", r.status, r.body);
	fd_test_resp_free(&r);
	char *view = fd_test_fmt("/orders/%s", order);
	json_t *o = get_ok(&ts, view);
	free(view);
	cr_assert_str_eq(json_string_value(json_object_get(o, "status")), "placed");
	cr_assert_eq(json_integer_value(json_object_get(o, "version")), 4);
	json_decref(o);
	/* a repeat of the same events is still an idempotent repeat, though placing twice would be refused */
	post(&ts, path, placed, &r);
	cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
	cr_assert_eq(fd_test_json_int(&r, "first_version"), 3);
	fd_test_resp_free(&r);
	assert_events(&ts, before + 2);
	free(placed);
	free(path);
	fd_test_server_stop(&ts);
}
