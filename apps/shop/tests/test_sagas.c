/*
 * test_sagas.c - the order fulfillment saga end to end over HTTP, against a
 * real PostgreSQL, with the saga engine running in the test's server:
 * the happy path to OrderConfirmed, out of stock, a declined payment with
 * compensation in reverse order, a transient payment failure recovered by a
 * retry, retries running out, a payment that never answers (timeout), the
 * order cancelled by its customer mid-saga, shipping committing the stock,
 * and the operations API (list, show, abort, retry, their 404/409/400s).
 *
 * "Exactly once" is checked on the events themselves: each saga's commands
 * must have recorded each event once, and stock must be conserved.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "factd/events.h"
#include "factd/uuid.h"
#include "http_client.h"
#define FD_TEST_APP (&shop_app) /* the shop's routes and types */
#include "shop.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

/* ---- helpers ---------------------------------------------------------------------- */

static void post_ok(const struct fd_test_server *ts, const char *path, const char *body, int want,
		    struct fd_test_resp *r)
{
	cr_assert_eq(fd_test_http(ts->port, "POST", path, body ? "Content-Type: application/json\r\n" : NULL, body,
				  body ? strlen(body) : 0, r),
		     0);
	cr_assert_eq(r->status, want, "POST %s: %d %s", path, r->status, r->body);
}

static void create_product(const struct fd_test_server *ts, const char *id, long long stock)
{
	struct fd_test_resp r;
	post_ok(ts, "/products", fd_test_P("{\"product_id\": \"%s\", \"name\": \"%s\", \"stock\": %lld}", id, id, stock), 201, &r);
	fd_test_resp_free(&r);
}

struct line {
	const char *product;
	long long quantity;
	long long price;
};

/* Create an order with the lines and place it; its id into out. */
static void place_order(const struct fd_test_server *ts, const struct line *lines, size_t n, char out[37])
{
	struct fd_test_resp r;
	post_ok(ts, "/orders", "{\"customer_id\": \"c-1\"}", 201, &r);
	snprintf(out, 37, "%s", fd_test_json_str(&r, "order_id"));
	fd_test_resp_free(&r);
	for (size_t i = 0; i < n; i++) {
		post_ok(ts, fd_test_P("/orders/%s/lines", out),
			fd_test_P("{\"product_id\": \"%s\", \"quantity\": %lld, \"unit_price_cents\": %lld}", lines[i].product,
			  lines[i].quantity, lines[i].price),
			200, &r);
		fd_test_resp_free(&r);
	}
	post_ok(ts, fd_test_P("/orders/%s/place", out), NULL, 200, &r);
	fd_test_resp_free(&r);
}

static json_t *get_json(const struct fd_test_server *ts, const char *path, int want)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts->port, path, &r), 0);
	cr_assert_eq(r.status, want, "GET %s: %d %s", path, r.status, r.body);
	json_t *j = json_incref(r.json);
	fd_test_resp_free(&r);
	return j;
}

static const char *str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

/* Poll the order's saga until its status is `want` (or the wait runs out: fail). */
static json_t *wait_saga(const struct fd_test_server *ts, const char *order_id, const char *want, long timeout_ms)
{
	long long end = fd_test_now_ms() + timeout_ms;
	json_t *s = NULL;
	for (;;) {
		struct fd_test_resp r;
		cr_assert_eq(fd_test_get(ts->port, fd_test_P("/orders/%s/saga", order_id), &r), 0);
		json_decref(s);
		s = r.status == 200 ? json_incref(r.json) : NULL;
		fd_test_resp_free(&r);
		if (s && strcmp(str(s, "status"), want) == 0)
			return s;
		if (fd_test_now_ms() > end)
			cr_assert_fail("saga of order %s is not %s after %ld ms: %s", order_id, want, timeout_ms,
				       s ? json_dumps(s, JSON_INDENT(1)) : "(no saga)");
		fd_test_sleep_ms(50);
	}
}

/* Wait until the running saga of the order is in `phase` (pending, waiting). */
/*
 * Poll the running saga until it is at `step` in `phase`.  The step matters:
 * a saga is also "waiting" between reserve_inventory and take_payment, until
 * the intake has folded the StockReserved events.
 */
static json_t *wait_phase(const struct fd_test_server *ts, const char *order_id, const char *step, const char *phase)
{
	json_t *s = wait_saga(ts, order_id, "running", 5000);
	for (long long end = fd_test_now_ms() + 10000;
	     strcmp(str(s, "current_step"), step) != 0 || strcmp(str(s, "phase"), phase) != 0;) {
		cr_assert_lt(fd_test_now_ms(), end, "the saga never reached %s in phase %s: %s", step, phase, json_dumps(s, 0));
		json_decref(s);
		fd_test_sleep_ms(50);
		s = wait_saga(ts, order_id, "running", 5000);
	}
	return s;
}

/* GET /metrics has the line (e.g. "factd_sagas{type=\"order_fulfillment\",status=\"running\"} 1"). */
static void assert_metric(const struct fd_test_server *ts, const char *line)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts->port, "/metrics", &r), 0);
	cr_assert_eq(r.status, 200);
	char want[256];
	snprintf(want, sizeof want, "\n%s\n", line);
	cr_assert(strstr(r.body, want), "no \"%s\" in /metrics:\n%s", line, r.body);
	fd_test_resp_free(&r);
}

static long long count(const struct fd_test_server *ts, const char *sql)
{
	return fd_test_server_scalar(ts, sql);
}

/* The product's view member (available, reserved, committed, stocked). */
static long long product_field(const struct fd_test_server *ts, const char *id, const char *field)
{
	json_t *p = get_json(ts, fd_test_P("/products/%s", id), 200);
	long long v = json_integer_value(json_object_get(p, field));
	json_decref(p);
	return v;
}

static void assert_stock(const struct fd_test_server *ts, const char *id, long long available, long long reserved,
			 long long committed)
{
	json_t *p = get_json(ts, fd_test_P("/products/%s", id), 200);
	long long a = json_integer_value(json_object_get(p, "available"));
	long long r = json_integer_value(json_object_get(p, "reserved"));
	long long c = json_integer_value(json_object_get(p, "committed"));
	long long s = json_integer_value(json_object_get(p, "stocked"));
	cr_assert_eq(a, available, "%s available %lld, expected %lld", id, a, available);
	cr_assert_eq(r, reserved, "%s reserved %lld, expected %lld", id, r, reserved);
	cr_assert_eq(c, committed, "%s committed %lld, expected %lld", id, c, committed);
	cr_assert_eq(a + r + c, s, "stock not conserved for %s", id);
	json_decref(p);
}

static const char *order_status(const struct fd_test_server *ts, const char *id, char *reason, size_t len)
{
	static char status[32];
	json_t *o = get_json(ts, fd_test_P("/orders/%s", id), 200);
	snprintf(status, sizeof status, "%s", str(o, "status"));
	if (reason)
		snprintf(reason, len, "%s", str(o, "cancel_reason"));
	json_decref(o);
	return status;
}

/* No command of any saga recorded an event twice: one event per idempotency key and event index. */
static void assert_no_duplicates(const struct fd_test_server *ts)
{
	cr_assert_eq(count(ts, "SELECT count(*) FROM (SELECT metadata->'idempotency'->>'key' FROM events"
			       " WHERE metadata->>'caller' = 'saga' AND metadata ? 'idempotency' GROUP BY 1 HAVING count(*) > 1) d"),
		     0, "a saga command recorded its events twice");
	cr_assert_eq(count(ts, "SELECT count(*) FROM (SELECT stream_id FROM events WHERE type IN"
			       " ('OrderConfirmed', 'OrderCancelled', 'PaymentRequested', 'PaymentAuthorised')"
			       " GROUP BY stream_id, type HAVING count(*) > 1) d"),
		     0, "an order or payment event was recorded twice");
	cr_assert_eq(count(ts, "SELECT count(*) FROM (SELECT stream_id, data->>'order_id' FROM events"
			       " WHERE type IN ('StockReserved', 'ReservationReleased', 'ReservationCommitted')"
			       " GROUP BY 1, 2, type HAVING count(*) > 1) d"),
		     0, "a reservation event was recorded twice");
}

/* The kinds and steps of the saga's history rows, e.g. "action:accept_order,compensation:...". */
static void history_of(const json_t *saga, const char *kind, char *out, size_t len)
{
	size_t i, o = 0;
	json_t *h;
	out[0] = '\0';
	json_array_foreach(json_object_get(saga, "history"), i, h) {
		if (kind && strcmp(str(h, "kind"), kind) != 0)
			continue;
		o += (size_t)snprintf(out + o, len - o, "%s%s:%s", o ? "," : "", str(h, "step"), str(h, "outcome"));
		if (o >= len)
			break;
	}
}

static const json_t *step_entry(const json_t *saga, const char *name, bool compensation)
{
	size_t i;
	json_t *s;
	json_array_foreach(json_object_get(saga, "steps"), i, s)
		if (strcmp(str(s, "name"), name) == 0 && json_is_true(json_object_get(s, "compensation")) == compensation)
			return s;
	return NULL;
}

/* ---- servers ------------------------------------------------------------------------- */

static unsigned g_fail_first, g_never_answer, g_time_pct = 10, g_poll_ms = 20;

static void tweak(struct fd_config *c)
{
	c->sagas = 1;
	c->saga_workers = 2;
	c->saga_poll_ms = g_poll_ms;
	c->saga_time_pct = g_time_pct;
	char v[16]; /* the shop's gateway reads its settings from the environment at start */
	snprintf(v, sizeof v, "%u", g_fail_first);
	setenv("FACTD_PAYMENT_FAIL_FIRST", v, 1);
	snprintf(v, sizeof v, "%u", g_never_answer);
	setenv("FACTD_PAYMENT_NEVER_ANSWER", v, 1);
	c->pool_size = 8;
}

static void start(struct fd_test_server *ts, unsigned fail_first, unsigned never_answer, unsigned time_pct)
{
	g_fail_first = fail_first;
	g_never_answer = never_answer;
	g_time_pct = time_pct;
	fd_test_server_start_with(ts, NULL, tweak);
}

/* ---- the saga's paths ------------------------------------------------------------------- */

Test(sagas, happy_path_confirms_the_order)
{
	struct fd_test_server ts;
	start(&ts, 0, 0, 10);
	create_product(&ts, "sku-a", 10);
	create_product(&ts, "sku-b", 5);
	char id[37];
	const struct line lines[] = { { "sku-a", 2, 1250 }, { "sku-b", 1, 400 } };
	place_order(&ts, lines, 2, id);
	json_t *s = wait_saga(&ts, id, "completed", 20000);

	cr_assert_str_eq(order_status(&ts, id, NULL, 0), "confirmed");
	assert_stock(&ts, "sku-a", 8, 2, 0);
	assert_stock(&ts, "sku-b", 4, 1, 0);
	cr_assert_str_eq(str(s, "type"), "order_fulfillment");
	cr_assert_str_eq(str(s, "correlation_key"), id);
	cr_assert_str_eq(str(s, "current_step"), "confirm_order");
	cr_assert(json_is_null(json_object_get(s, "error")));
	char h[512];
	history_of(s, NULL, h, sizeof h);
	cr_assert_str_eq(h, "accept_order:succeeded,reserve_inventory:succeeded,take_payment:succeeded,"
			    "confirm_order:succeeded");
	const char *steps[] = { "accept_order", "reserve_inventory", "take_payment", "confirm_order" };
	for (size_t i = 0; i < 4; i++) {
		const json_t *e = step_entry(s, steps[i], false);
		cr_assert(e, "no step %s", steps[i]);
		cr_assert_str_eq(str(e, "status"), "succeeded");
		cr_assert_eq(json_integer_value(json_object_get(e, "attempts")), 1);
		cr_assert(json_is_string(json_object_get(e, "started_at")));
		cr_assert(json_is_string(json_object_get(e, "finished_at")));
	}
	/* the payment was authorised for the order's total */
	json_t *pay = get_json(&ts, fd_test_P("/payments/%s", str(json_object_get(s, "data"), "payment_id")), 200);
	cr_assert_str_eq(str(pay, "status"), "authorised");
	cr_assert_eq(json_integer_value(json_object_get(pay, "amount_cents")), 2 * 1250 + 400);
	json_decref(pay);
	/* every command it sent carries the saga id */
	const char *sid = str(s, "id");
	cr_assert_eq(count(&ts, fd_test_P("SELECT count(*) FROM events WHERE type IN ('StockReserved', 'PaymentRequested',"
				  " 'PaymentAuthorised', 'OrderConfirmed') AND metadata->>'correlation_id' = '%s'",
				  sid)),
		     5);
	/* the same saga by id and in the list */
	json_t *byid = get_json(&ts, fd_test_P("/sagas/%s", sid), 200);
	cr_assert_str_eq(str(byid, "status"), "completed");
	json_decref(byid);
	json_t *list = get_json(&ts, "/sagas?type=order_fulfillment&status=completed", 200);
	cr_assert_eq(json_array_size(json_object_get(list, "items")), 1);
	cr_assert_str_eq(str(json_array_get(json_object_get(list, "items"), 0), "id"), sid);
	json_decref(list);
	assert_no_duplicates(&ts);
	json_decref(s);
	fd_test_server_stop(&ts);
}

Test(sagas, out_of_stock_releases_what_was_reserved_and_cancels)
{
	struct fd_test_server ts;
	start(&ts, 0, 0, 10);
	create_product(&ts, "sku-a", 10);
	create_product(&ts, "sku-b", 1);
	char id[37];
	const struct line lines[] = { { "sku-a", 3, 100 }, { "sku-b", 5, 100 } };
	place_order(&ts, lines, 2, id);
	json_t *s = wait_saga(&ts, id, "compensated", 20000);

	char reason[600];
	cr_assert_str_eq(order_status(&ts, id, reason, sizeof reason), "cancelled");
	cr_assert(strstr(reason, "insufficient-stock"), "cancel reason: %s", reason);
	cr_assert(strstr(str(s, "error"), "insufficient-stock"), "error: %s", str(s, "error"));
	assert_stock(&ts, "sku-a", 10, 0, 0);
	assert_stock(&ts, "sku-b", 1, 0, 0);
	cr_assert_eq(count(&ts, fd_test_P("SELECT count(*) FROM events WHERE type = 'StockReserved'"
				  " AND data->>'order_id' = '%s'", id)),
		     1, "sku-a was reserved before sku-b was refused");
	cr_assert_eq(count(&ts, fd_test_P("SELECT count(*) FROM events WHERE type = 'ReservationReleased'"
				  " AND data->>'order_id' = '%s'", id)),
		     1);
	cr_assert_eq(count(&ts, "SELECT count(*) FROM events WHERE type = 'PaymentRequested'"), 0, "no payment asked");
	char h[512];
	history_of(s, "compensation", h, sizeof h);
	cr_assert_str_eq(h, "reserve_inventory:succeeded,accept_order:succeeded");
	assert_no_duplicates(&ts);
	json_decref(s);
	fd_test_server_stop(&ts);
}

Test(sagas, declined_payment_compensates_in_reverse_order)
{
	struct fd_test_server ts;
	start(&ts, 0, 0, 10);
	create_product(&ts, "sku-a", 10);
	create_product(&ts, "sku-b", 10);
	char id[37];
	/* the simulator declines more than 100000 cents */
	const struct line lines[] = { { "sku-a", 1, 150000 }, { "sku-b", 2, 100 } };
	place_order(&ts, lines, 2, id);
	json_t *s = wait_saga(&ts, id, "compensated", 20000);

	char h[512];
	history_of(s, "compensation", h, sizeof h);
	cr_assert_str_eq(h, "take_payment:succeeded,reserve_inventory:succeeded,accept_order:succeeded",
			 "compensations must run in reverse order of the steps");
	history_of(s, "action", h, sizeof h);
	cr_assert_str_eq(h, "accept_order:succeeded,reserve_inventory:succeeded,take_payment:failed");
	char reason[600];
	cr_assert_str_eq(order_status(&ts, id, reason, sizeof reason), "cancelled");
	cr_assert(strstr(reason, "declined"), "cancel reason: %s", reason);
	assert_stock(&ts, "sku-a", 10, 0, 0);
	assert_stock(&ts, "sku-b", 10, 0, 0);
	json_t *pay = get_json(&ts, fd_test_P("/payments/%s", str(json_object_get(s, "data"), "payment_id")), 200);
	cr_assert_str_eq(str(pay, "status"), "declined");
	json_decref(pay);
	cr_assert_eq(count(&ts, "SELECT count(*) FROM events WHERE type = 'PaymentRefunded'"), 0, "nothing was taken");
	assert_no_duplicates(&ts);
	json_decref(s);
	fd_test_server_stop(&ts);
}

Test(sagas, transient_payment_failure_is_retried)
{
	struct fd_test_server ts;
	start(&ts, 2, 0, 10); /* the gateway fails the first two attempts */
	create_product(&ts, "sku-a", 10);
	char id[37];
	const struct line lines[] = { { "sku-a", 1, 999 } };
	place_order(&ts, lines, 1, id);
	json_t *s = wait_saga(&ts, id, "completed", 20000);

	cr_assert_str_eq(order_status(&ts, id, NULL, 0), "confirmed");
	const json_t *e = step_entry(s, "take_payment", false);
	cr_assert(e);
	cr_assert_eq(json_integer_value(json_object_get(e, "attempts")), 3, "%s", json_dumps(e, 0));
	cr_assert_str_eq(str(e, "status"), "succeeded");
	char h[512];
	history_of(s, "action", h, sizeof h);
	cr_assert_str_eq(h, "accept_order:succeeded,reserve_inventory:succeeded,take_payment:retry,"
			    "take_payment:retry,take_payment:succeeded,confirm_order:succeeded");
	cr_assert_eq(count(&ts, "SELECT count(*) FROM events WHERE type = 'PaymentAttemptFailed'"), 2);
	json_t *pay = get_json(&ts, fd_test_P("/payments/%s", str(json_object_get(s, "data"), "payment_id")), 200);
	cr_assert_str_eq(str(pay, "status"), "authorised");
	cr_assert_eq(json_integer_value(json_object_get(pay, "attempts")), 2);
	json_decref(pay);
	assert_stock(&ts, "sku-a", 9, 1, 0);
	assert_no_duplicates(&ts);
	json_decref(s);
	fd_test_server_stop(&ts);
}

Test(sagas, exhausted_payment_retries_compensate)
{
	struct fd_test_server ts;
	start(&ts, 1000, 0, 5);
	create_product(&ts, "sku-a", 10);
	char id[37];
	const struct line lines[] = { { "sku-a", 4, 10 } };
	place_order(&ts, lines, 1, id);
	json_t *s = wait_saga(&ts, id, "compensated", 20000);

	cr_assert(strstr(str(s, "error"), "take_payment failed after 4 attempts"), "error: %s", str(s, "error"));
	cr_assert_eq(count(&ts, "SELECT count(*) FROM events WHERE type = 'PaymentAttemptFailed'"), 4);
	char reason[600];
	cr_assert_str_eq(order_status(&ts, id, reason, sizeof reason), "cancelled");
	cr_assert(strstr(reason, "after 4 attempts"), "cancel reason: %s", reason);
	assert_stock(&ts, "sku-a", 10, 0, 0);
	assert_no_duplicates(&ts);
	json_decref(s);
	fd_test_server_stop(&ts);
}

Test(sagas, payment_that_never_answers_times_out_and_compensates)
{
	struct fd_test_server ts;
	start(&ts, 0, 1, 5); /* take_payment waits 5% of 30 s = 1.5 s */
	create_product(&ts, "sku-a", 10);
	char id[37];
	const struct line lines[] = { { "sku-a", 2, 10 } };
	place_order(&ts, lines, 1, id);
	/* first it waits for the gateway: still running, stock held */
	long long t0 = fd_test_now_ms();
	json_t *s = wait_saga(&ts, id, "running", 5000);
	json_decref(s);
	s = wait_saga(&ts, id, "compensated", 20000);
	cr_assert_geq(fd_test_now_ms() - t0, 1000, "the timeout fired too early");

	cr_assert(strstr(str(s, "error"), "take_payment timed out"), "error: %s", str(s, "error"));
	const json_t *e = step_entry(s, "take_payment", false);
	cr_assert(e);
	char h[512];
	history_of(s, "timeout", h, sizeof h);
	cr_assert_str_eq(h, "take_payment:timed_out");
	history_of(s, "compensation", h, sizeof h);
	cr_assert_str_eq(h, "take_payment:succeeded,reserve_inventory:succeeded,accept_order:succeeded");
	cr_assert_str_eq(order_status(&ts, id, NULL, 0), "cancelled");
	assert_stock(&ts, "sku-a", 10, 0, 0);
	/* the payment still waiting for the gateway is closed, so a late answer cannot charge */
	const char *pid = str(json_object_get(s, "data"), "payment_id");
	json_t *pay = get_json(&ts, fd_test_P("/payments/%s", pid), 200);
	cr_assert_str_eq(str(pay, "status"), "declined");
	cr_assert(strstr(str(pay, "decline_reason"), "voided by the order saga: take_payment timed out"), "%s",
		  str(pay, "decline_reason"));
	json_decref(pay);
	struct fd_test_resp r;
	post_ok(&ts, fd_test_P("/payments/%s/process", pid), NULL, 409, &r);
	fd_test_assert_problem(&r, 409, "payment-not-pending");
	fd_test_resp_free(&r);
	assert_no_duplicates(&ts);
	json_decref(s);
	fd_test_server_stop(&ts);
}

Test(sagas, timeout_fires_after_a_restart)
{
	/* the timer is a row: a server that stops while the saga waits leaves it to the next one */
	struct fd_test_server ts;
	start(&ts, 0, 1, 10); /* take_payment waits 3 s */
	create_product(&ts, "sku-a", 10);
	char id[37];
	const struct line lines[] = { { "sku-a", 2, 10 } };
	place_order(&ts, lines, 1, id);
	json_decref(wait_phase(&ts, id, "take_payment", "waiting"));
	char *url = strdup(ts.db_url);
	fd_test_server_stop(&ts);
	g_never_answer = 1;
	fd_test_server_start_with(&ts, url, tweak);
	free(url);
	json_t *s = wait_saga(&ts, id, "compensated", 20000);
	cr_assert(strstr(str(s, "error"), "timed out"), "error: %s", str(s, "error"));
	assert_stock(&ts, "sku-a", 10, 0, 0);
	json_decref(s);
	fd_test_server_stop(&ts);
}

Test(sagas, customer_cancelling_mid_saga_compensates)
{
	struct fd_test_server ts;
	start(&ts, 0, 1, 100); /* the payment never answers and the timeout is 30 s: the saga waits */
	create_product(&ts, "sku-a", 10);
	char id[37];
	const struct line lines[] = { { "sku-a", 3, 10 } };
	place_order(&ts, lines, 1, id);
	for (long long end = fd_test_now_ms() + 10000; product_field(&ts, "sku-a", "reserved") != 3;) {
		cr_assert_lt(fd_test_now_ms(), end, "the stock was never reserved");
		fd_test_sleep_ms(50);
	}
	struct fd_test_resp r;
	post_ok(&ts, fd_test_P("/orders/%s/cancel", id), "{\"reason\": \"changed my mind\"}", 200, &r);
	fd_test_resp_free(&r);
	json_t *s = wait_saga(&ts, id, "compensated", 20000);
	cr_assert(strstr(str(s, "error"), "order cancelled: changed my mind"), "error: %s", str(s, "error"));
	assert_stock(&ts, "sku-a", 10, 0, 0);
	char reason[600];
	order_status(&ts, id, reason, sizeof reason);
	cr_assert_str_eq(reason, "changed my mind", "the saga must not cancel a second time");
	assert_no_duplicates(&ts);
	json_decref(s);
	fd_test_server_stop(&ts);
}

Test(sagas, shipping_commits_the_reservations)
{
	struct fd_test_server ts;
	start(&ts, 0, 0, 10);
	create_product(&ts, "sku-a", 10);
	create_product(&ts, "sku-b", 10);
	char id[37];
	const struct line lines[] = { { "sku-a", 2, 10 }, { "sku-b", 3, 10 } };
	place_order(&ts, lines, 2, id);
	json_decref(wait_saga(&ts, id, "completed", 20000));
	struct fd_test_resp r;
	post_ok(&ts, fd_test_P("/orders/%s/ship", id), NULL, 200, &r);
	fd_test_resp_free(&r);
	for (long long end = fd_test_now_ms() + 20000;;) {
		json_t *l = get_json(&ts, "/sagas?type=order_shipping&status=completed", 200);
		size_t n = json_array_size(json_object_get(l, "items"));
		if (n == 1)
			cr_assert_str_eq(str(json_array_get(json_object_get(l, "items"), 0), "correlation_key"), id);
		json_decref(l);
		if (n == 1)
			break;
		cr_assert_lt(fd_test_now_ms(), end, "the shipping saga did not complete");
		fd_test_sleep_ms(50);
	}
	assert_stock(&ts, "sku-a", 8, 0, 2);
	assert_stock(&ts, "sku-b", 7, 0, 3);
	assert_no_duplicates(&ts);
	fd_test_server_stop(&ts);
}

/* ---- operations -------------------------------------------------------------------------- */

Test(sagas, abort_and_retry_follow_the_rules)
{
	struct fd_test_server ts;
	start(&ts, 0, 1, 100); /* waits for the payment for 30 s */
	create_product(&ts, "sku-a", 10);
	char id[37];
	const struct line lines[] = { { "sku-a", 1, 10 } };
	place_order(&ts, lines, 1, id);
	json_t *s = wait_saga(&ts, id, "running", 5000);
	char sid[37];
	snprintf(sid, sizeof sid, "%s", str(s, "id"));
	json_decref(s);
	struct fd_test_resp r;

	assert_metric(&ts, "factd_sagas{type=\"order_fulfillment\",status=\"running\"} 1");
	assert_metric(&ts, "factd_saga_overdue 0");

	/* retry is only for failed sagas */
	post_ok(&ts, fd_test_P("/sagas/%s/retry", sid), NULL, 409, &r);
	fd_test_assert_problem(&r, 409, "saga-state");
	cr_assert_str_eq(fd_test_json_str(&r, "saga_status"), "running");
	fd_test_resp_free(&r);

	post_ok(&ts, fd_test_P("/sagas/%s/abort", sid), NULL, 202, &r);
	cr_assert_str_eq(fd_test_json_str(&r, "id"), sid);
	fd_test_resp_free(&r);
	s = wait_saga(&ts, id, "compensated", 20000);
	cr_assert_str_eq(str(s, "error"), "aborted by an operator");
	json_decref(s);
	char reason[600];
	cr_assert_str_eq(order_status(&ts, id, reason, sizeof reason), "cancelled");
	cr_assert_str_eq(reason, "aborted by an operator");
	assert_stock(&ts, "sku-a", 10, 0, 0);
	assert_metric(&ts, "factd_sagas{type=\"order_fulfillment\",status=\"running\"} 0");

	/* a finished saga can be neither aborted nor retried */
	post_ok(&ts, fd_test_P("/sagas/%s/abort", sid), NULL, 409, &r);
	fd_test_assert_problem(&r, 409, "saga-state");
	cr_assert_str_eq(fd_test_json_str(&r, "saga_status"), "compensated");
	fd_test_resp_free(&r);
	post_ok(&ts, fd_test_P("/sagas/%s/retry", sid), NULL, 409, &r);
	fd_test_assert_problem(&r, 409, "saga-state");
	fd_test_resp_free(&r);

	/* unknown and malformed ids */
	char other[37];
	struct fd_uuid u;
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	fd_uuid_format(&u, other);
	post_ok(&ts, fd_test_P("/sagas/%s/abort", other), NULL, 404, &r);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	post_ok(&ts, "/sagas/not-a-uuid/retry", NULL, 404, &r);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_get(ts.port, fd_test_P("/sagas/%s", other), &r), 0);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_get(ts.port, fd_test_P("/orders/%s/saga", other), &r), 0);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(sagas, retry_resumes_a_failed_compensation)
{
	struct fd_test_server ts;
	start(&ts, 0, 1, 100);
	create_product(&ts, "sku-a", 10);
	char id[37];
	const struct line lines[] = { { "sku-a", 2, 10 } };
	place_order(&ts, lines, 1, id);
	json_t *s = wait_phase(&ts, id, "take_payment", "waiting");
	cr_assert_eq(product_field(&ts, "sku-a", "reserved"), 2);
	char sid[37];
	snprintf(sid, sizeof sid, "%s", str(s, "id"));
	json_decref(s);
	/*
	 * A compensation that could not complete leaves a failed saga.  Make one
	 * as the engine would (compensating with its undo stack, then failed) on
	 * a saga whose worker is idle, and let an operator retry it.
	 */
	PGconn *c = fd_test_connect(ts.db_url);
	char sql[512];
	snprintf(sql, sizeof sql,
		 "WITH u AS (UPDATE sagas SET status = 'failed', phase = 'done', due_at = NULL, lease_token = NULL,"
		 " error = 'compensation of take_payment failed after 4 attempts: db' WHERE id = '%s'"
		 " AND phase = 'waiting' RETURNING 1) SELECT count(*) FROM u",
		 sid);
	cr_assert_eq(fd_test_scalar(c, sql), 1);
	PQfinish(c);
	json_t *f = get_json(&ts, fd_test_P("/sagas/%s", sid), 200);
	cr_assert_str_eq(str(f, "status"), "failed");
	json_decref(f);
	assert_metric(&ts, "factd_sagas{type=\"order_fulfillment\",status=\"failed\"} 1");
	struct fd_test_resp r;
	post_ok(&ts, fd_test_P("/sagas/%s/abort", sid), NULL, 409, &r);
	fd_test_assert_problem(&r, 409, "saga-state");
	fd_test_resp_free(&r);
	post_ok(&ts, fd_test_P("/sagas/%s/retry", sid), NULL, 202, &r);
	cr_assert_str_eq(fd_test_json_str(&r, "status"), "compensating");
	fd_test_resp_free(&r);
	s = wait_saga(&ts, id, "compensated", 20000);
	assert_stock(&ts, "sku-a", 10, 0, 0);
	cr_assert_str_eq(order_status(&ts, id, NULL, 0), "cancelled");
	json_decref(s);
	fd_test_server_stop(&ts);
}

Test(sagas, list_pages_and_rejects_bad_parameters)
{
	struct fd_test_server ts;
	start(&ts, 0, 0, 10);
	create_product(&ts, "sku-a", 100);
	char ids[3][37];
	const struct line lines[] = { { "sku-a", 1, 10 } };
	for (int i = 0; i < 3; i++)
		place_order(&ts, lines, 1, ids[i]);
	for (int i = 0; i < 3; i++)
		json_decref(wait_saga(&ts, ids[i], "completed", 20000));

	/* newest first, two pages */
	json_t *p1 = get_json(&ts, "/sagas?limit=2", 200);
	json_t *items = json_object_get(p1, "items");
	cr_assert_eq(json_array_size(items), 2);
	cr_assert_str_eq(str(json_array_get(items, 0), "correlation_key"), ids[2]);
	cr_assert_str_eq(str(json_array_get(items, 1), "correlation_key"), ids[1]);
	const char *next = str(p1, "next");
	cr_assert_str_eq(next, str(json_array_get(items, 1), "id"));
	json_t *p2 = get_json(&ts, fd_test_P("/sagas?limit=2&after=%s", next), 200);
	cr_assert_eq(json_array_size(json_object_get(p2, "items")), 1);
	cr_assert_str_eq(str(json_array_get(json_object_get(p2, "items"), 0), "correlation_key"), ids[0]);
	cr_assert(json_is_null(json_object_get(p2, "next")));
	json_decref(p1);
	json_decref(p2);
	json_t *none = get_json(&ts, "/sagas?status=failed", 200);
	cr_assert_eq(json_array_size(json_object_get(none, "items")), 0);
	json_decref(none);

	const char *bad[] = { "/sagas?status=bogus", "/sagas?type=nope", "/sagas?limit=0", "/sagas?limit=x",
			      "/sagas?limit=100000000", "/sagas?after=nope",
			      "/sagas?after=01a21bf6-0000-7000-8000-000000000000" };
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		struct fd_test_resp r;
		cr_assert_eq(fd_test_get(ts.port, bad[i], &r), 0);
		fd_test_assert_problem(&r, 400, "invalid-parameter");
		fd_test_resp_free(&r);
	}
	fd_test_server_stop(&ts);
}

Test(sagas, intake_checkpoint_moves_past_events_no_saga_reads)
{
	/* else every intake round would scan the same run of other streams' events again */
	struct fd_test_server ts;
	start(&ts, 0, 0, 10);
	struct fd_test_resp r;
	post_ok(&ts, "/streams/audit-1/events",
		"{\"expected_version\": \"any\", \"events\": [{\"type\": \"Noted\", \"data\": {}},"
		" {\"type\": \"Noted\", \"data\": {}}]}",
		201, &r);
	char pos[64];
	snprintf(pos, sizeof pos, "%s", fd_test_json_str(&r, "position"));
	fd_test_resp_free(&r);
	char *dash = strchr(pos, '-');
	cr_assert(dash, "position %s", pos);
	*dash = '\0';
	for (long long end = fd_test_now_ms() + 10000;;) {
		if (count(&ts, fd_test_P("SELECT count(*) FROM subscriptions WHERE name = 'sagas'"
				 " AND (tx_id, seq) >= ('%s'::xid8, %s)", pos, dash + 1)) == 1)
			break;
		cr_assert_lt(fd_test_now_ms(), end, "the intake checkpoint never passed %s-%s", pos, dash + 1);
		fd_test_sleep_ms(50);
	}
	fd_test_server_stop(&ts);
}

/* ---- waking the intake ------------------------------------------------------------------- */

/* The intake's checkpoint row as stored, row version and lock included. */
static char *intake_row(const struct fd_test_server *ts)
{
	PGconn *c = fd_test_connect(ts->cfg.database_url);
	PGresult *r = PQexec(c, "SELECT xmin || ' ' || xmax || ' ' || tx_id || '-' || seq || ' ' || updated_at"
				" FROM subscriptions WHERE name = 'sagas'");
	cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s", PQerrorMessage(c));
	char *row = strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(c);
	return row;
}

/* Wait until the intake runs and its checkpoint is at the end of the feed, and its round is over. */
static void intake_caught_up(const struct fd_test_server *ts)
{
	long long until = fd_test_now_ms() + 20000;
	while (count(ts, "SELECT count(*) FROM subscriptions s WHERE name = 'sagas' AND owner IS NOT NULL AND NOT"
			 " EXISTS (SELECT 1 FROM events e WHERE (e.tx_id, e.seq) > (s.tx_id, s.seq))") != 1) {
		cr_assert_lt(fd_test_now_ms(), until, "the intake did not read the product's events");
		fd_test_sleep_ms(20);
	}
	fd_test_sleep_ms(200);
}

/*
 * Appends to categories no saga reads neither wake the intake nor touch its
 * checkpoint; an order placed wakes it at once, long before its poll.
 */
Test(sagas, the_intake_sleeps_through_appends_to_other_categories, .timeout = 120)
{
	g_poll_ms = 60000; /* only a notification can wake the intake within the test */
	struct fd_test_server ts;
	start(&ts, 0, 0, 10);
	create_product(&ts, "sku-a", 10);
	intake_caught_up(&ts);
	char *before = intake_row(&ts);
	for (int i = 0; i < 40; i++) {
		struct fd_test_resp r;
		post_ok(&ts, fd_test_P("/streams/bench-%d/events", i % 4),
			"{\"expected_version\": \"any\", \"events\": [{\"type\": \"Happened\", \"data\": {}}]}", 201, &r);
		fd_test_resp_free(&r);
		fd_test_sleep_ms(10);
	}
	fd_test_sleep_ms(500);
	char *after = intake_row(&ts);
	cr_assert_str_eq(after, before, "appends to another category touched the intake's checkpoint");
	free(after);
	free(before);
	char id[37];
	const struct line lines[] = { { "sku-a", 1, 100 } };
	place_order(&ts, lines, 1, id);
	long long until = fd_test_now_ms() + 20000;
	while (count(&ts, "SELECT count(*) FROM sagas") != 1) {
		cr_assert_lt(fd_test_now_ms(), until, "the order placed did not wake the intake");
		fd_test_sleep_ms(20);
	}
	fd_test_server_stop(&ts);
}

/* Sagas on, but the test starts the engine itself (with settings fd_config does not have). */
static void tweak_no_engine(struct fd_config *c)
{
	tweak(c);
	c->sagas = 0;
}

/*
 * With one event per intake batch, the intake's checkpoint after each batch
 * is the position of the event it folded: the events the follower hands the
 * intake must carry their positions, or it would never get past the first.
 */
Test(sagas, an_intake_of_one_event_per_batch_resumes_at_each_folded_event, .timeout = 120)
{
	struct fd_test_server ts;
	g_fail_first = g_never_answer = 0;
	g_time_pct = 10;
	fd_test_server_start_with(&ts, NULL, tweak_no_engine);
	struct fd_saga_config sc = { .types = &ts.ctx.sagas, .conninfo = ts.cfg.database_url, .bus = ts.bus,
				     .services = ts.ctx.services, .pool = ts.ctx.pool, .workers = 2, .intake = true, .poll_ms = 20, .lease_ms = ts.cfg.saga_lease_ms,
				     .time_pct = 10, .batch = 1 };
	struct fd_saga_engine *engine = NULL;
	cr_assert_eq(fd_saga_engine_start(&sc, &engine), FD_OK);
	create_product(&ts, "sku-a", 10);
	create_product(&ts, "sku-b", 10);
	char id[37];
	const struct line lines[] = { { "sku-a", 2, 100 }, { "sku-b", 1, 300 } };
	place_order(&ts, lines, 2, id);
	json_decref(wait_saga(&ts, id, "completed", 30000));
	intake_caught_up(&ts);
	fd_saga_engine_stop(engine);
	fd_test_server_stop(&ts);
}

/*
 * An event the followers cannot read (its data nested deeper than jansson
 * parses; only a direct append gets it past the HTTP layer's limit) holds
 * back the saga intake and the projections that read it alike: neither
 * moves past it nor folds anything after it, until it is dealt with.
 */
Test(sagas, an_unreadable_event_holds_back_the_intake_and_the_projections_alike, .timeout = 120)
{
	struct fd_test_server ts;
	start(&ts, 0, 0, 10);
	create_product(&ts, "sku-a", 10);
	intake_caught_up(&ts);

	char *deep = malloc(8000), stream[64], bad_id[FD_UUID_STRLEN + 1];
	cr_assert_not_null(deep);
	int o = sprintf(deep, "{\"lines\": ");
	for (int i = 0; i < 3000; i++)
		deep[o++] = '[';
	for (int i = 0; i < 3000; i++)
		deep[o++] = ']';
	strcpy(deep + o, "}");
	struct fd_uuid u;
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	char order[FD_UUID_STRLEN + 1];
	fd_uuid_format(&u, order);
	snprintf(stream, sizeof stream, "order-%s", order);
	struct fd_event_in bad = { .type = "OrderPlaced", .data_json = deep, .metadata_json = "{}" };
	cr_assert_eq(fd_uuid_v7(&bad.event_id), FD_OK);
	fd_uuid_format(&bad.event_id, bad_id);
	struct fd_append_result r;
	cr_assert_eq(fd_store_append(ts.pool, stream, (struct fd_expected){ FD_EXPECT_ANY, 0 }, &bad, 1, &r), FD_OK);
	free(deep);
	char before[160];
	snprintf(before, sizeof before, "(tx_id, seq) < ('%llu'::xid8, %lld)", (unsigned long long)r.position.tx,
		 (long long)r.position.seq);

	/* A real order after it: nothing of it is folded or projected while the unreadable event waits. */
	char id[37];
	const struct line lines[] = { { "sku-a", 1, 100 } };
	place_order(&ts, lines, 1, id);
	fd_test_sleep_ms(1500);
	cr_assert_eq(count(&ts, fd_test_P("SELECT count(*) FROM subscriptions WHERE name = 'sagas' AND %s", before)), 1,
		     "the intake moved past an event it could not read");
	cr_assert_eq(count(&ts, fd_test_P("SELECT count(*) FROM projections WHERE name = 'order_summaries' AND %s", before)), 1,
		     "the projection moved past an event it could not read");
	cr_assert_eq(count(&ts, "SELECT count(*) FROM sagas"), 0, "a saga was started past the unreadable event");

	/* Once it is gone, both go on. */
	cr_assert_eq(count(&ts, fd_test_P("WITH d AS (DELETE FROM events WHERE event_id = '%s' RETURNING 1) SELECT count(*) FROM d",
				  bad_id)),
		     1);
	json_decref(wait_saga(&ts, id, "completed", 20000));
	long long until = fd_test_now_ms() + 20000;
	while (count(&ts, fd_test_P("SELECT count(*) FROM projections WHERE name = 'order_summaries' AND NOT %s", before)) != 1) {
		cr_assert_lt(fd_test_now_ms(), until, "the projection did not go on");
		fd_test_sleep_ms(20);
	}
	fd_test_server_stop(&ts);
}

/* On a quiet feed the intake's timed rounds neither lock nor write its checkpoint. */
Test(sagas, a_quiet_intake_does_not_write, .timeout = 60)
{
	struct fd_test_server ts;
	start(&ts, 0, 0, 10);
	create_product(&ts, "sku-a", 10);
	intake_caught_up(&ts);
	char *before = intake_row(&ts);
	fd_test_sleep_ms(600); /* about ten polls of 20 ms (plus rests) */
	char *after = intake_row(&ts);
	cr_assert_str_eq(after, before, "a quiet intake's rounds wrote or locked its checkpoint");
	free(after);
	free(before);
	fd_test_server_stop(&ts);
}
