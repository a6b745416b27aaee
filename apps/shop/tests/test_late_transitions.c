/*
 * test_late_transitions.c - commands that come after an order's fulfillment
 * saga completed, over HTTP against a real PostgreSQL with the saga engine
 * running in the test's server: a cancel of a confirmed order gives back
 * the stock and the money exactly once and shows in the saga's history; a
 * restock while stock is reserved; a refund by hand of a live order's
 * payment, of a cancelled one's; an operator's abort of a completed saga; a
 * cancel after shipping.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_client.h"
#define FD_TEST_APP (&shop_app) /* the shop's routes and types */
#include "shop.h"
#include "test_server.h"
#include "testdb.h"

/* ---- helpers ---------------------------------------------------------------------- */

static const char *P(const char *f, ...) __attribute__((format(printf, 1, 2)));
static const char *P(const char *f, ...)
{
	static char ring[32][1024];
	static unsigned next;
	char *b = ring[next++ % 32];
	va_list ap;
	va_start(ap, f);
	vsnprintf(b, sizeof ring[0], f, ap);
	va_end(ap);
	return b;
}

static long long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void post(const struct fd_test_server *ts, const char *path, const char *body, int want, struct fd_test_resp *r)
{
	cr_assert_eq(fd_test_http(ts->port, "POST", path, body ? "Content-Type: application/json\r\n" : NULL, body,
				  body ? strlen(body) : 0, r),
		     0);
	cr_assert_eq(r->status, want, "POST %s: %d %s", path, r->status, r->body);
}

static void post_ok(const struct fd_test_server *ts, const char *path, const char *body, int want)
{
	struct fd_test_resp r;
	post(ts, path, body, want, &r);
	fd_test_resp_free(&r);
}

/* POST expecting a problem with this status and slug. */
static void post_refused(const struct fd_test_server *ts, const char *path, const char *body, int want,
			 const char *slug)
{
	struct fd_test_resp r;
	post(ts, path, body, want, &r);
	fd_test_assert_problem(&r, want, slug);
	fd_test_resp_free(&r);
}

static json_t *get_json(const struct fd_test_server *ts, const char *path)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts->port, path, &r), 0);
	cr_assert_eq(r.status, 200, "GET %s: %d %s", path, r.status, r.body);
	json_t *j = json_incref(r.json);
	fd_test_resp_free(&r);
	return j;
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

/* A product of `stock`, and an order of `quantity` of it at 1250 cents, placed; the order id into out. */
static void place(const struct fd_test_server *ts, const char *sku, long long stock, long long quantity, char out[37])
{
	post_ok(ts, "/products", P("{\"product_id\": \"%s\", \"name\": \"Widget\", \"stock\": %lld}", sku, stock), 201);
	struct fd_test_resp r;
	post(ts, "/orders", "{\"customer_id\": \"c-1\"}", 201, &r);
	snprintf(out, 37, "%s", fd_test_json_str(&r, "order_id"));
	fd_test_resp_free(&r);
	post_ok(ts, P("/orders/%s/lines", out),
		P("{\"product_id\": \"%s\", \"quantity\": %lld, \"unit_price_cents\": 1250}", sku, quantity), 200);
	post_ok(ts, P("/orders/%s/place", out), NULL, 200);
}

/* Poll the order's saga until its status is `want`; fails the test after 20 s. */
static json_t *wait_saga(const struct fd_test_server *ts, const char *order_id, const char *want)
{
	long long end = now_ms() + 20000;
	for (;;) {
		struct fd_test_resp r;
		cr_assert_eq(fd_test_get(ts->port, P("/orders/%s/saga", order_id), &r), 0);
		json_t *s = r.status == 200 ? json_incref(r.json) : NULL;
		fd_test_resp_free(&r);
		if (s && strcmp(str(s, "status"), want) == 0)
			return s;
		if (now_ms() > end)
			cr_assert_fail("saga of order %s is not %s: %s", order_id, want,
				       s ? json_dumps(s, JSON_INDENT(1)) : "(no saga)");
		json_decref(s);
		struct timespec ts50 = { 0, 50000000L };
		nanosleep(&ts50, NULL);
	}
}

static void assert_stock(const struct fd_test_server *ts, const char *sku, long long available, long long reserved,
			 long long committed, size_t reservations)
{
	json_t *p = get_json(ts, P("/products/%s", sku));
	cr_assert_eq(num(p, "available"), available, "%s: %s", sku, json_dumps(p, 0));
	cr_assert_eq(num(p, "reserved"), reserved, "%s: %s", sku, json_dumps(p, 0));
	cr_assert_eq(num(p, "committed"), committed, "%s: %s", sku, json_dumps(p, 0));
	cr_assert_eq(num(p, "available") + num(p, "reserved") + num(p, "committed"), num(p, "stocked"));
	cr_assert_eq(json_array_size(json_object_get(p, "reservations")), reservations, "%s: %s", sku, json_dumps(p, 0));
	json_decref(p);
}

/* "step:outcome,..." of the saga's history rows of one kind. */
static void history_of(const json_t *saga, const char *kind, char *out, size_t len)
{
	size_t i, o = 0;
	json_t *h;
	out[0] = '\0';
	json_array_foreach(json_object_get(saga, "history"), i, h) {
		if (strcmp(str(h, "kind"), kind) != 0)
			continue;
		o += (size_t)snprintf(out + o, len - o, "%s%s:%s", o ? "," : "", str(h, "step"), str(h, "outcome"));
		if (o >= len)
			break;
	}
}

static void tweak(struct fd_config *c)
{
	c->sagas = 1;
	c->saga_workers = 2;
	c->saga_poll_ms = 20;
	c->saga_time_pct = 10;
	c->pool_size = 8;
}

/* ---- the tests ----------------------------------------------------------------------- */

Test(late_transitions, cancelling_a_confirmed_order_gives_back_stock_and_money_once)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak);
	char id[37];
	place(&ts, "sku-late", 5, 2, id);
	json_t *s = wait_saga(&ts, id, "completed");
	char sid[37], pid[37];
	snprintf(sid, sizeof sid, "%s", str(s, "id"));
	snprintf(pid, sizeof pid, "%s", str(json_object_get(s, "data"), "payment_id"));
	json_decref(s);
	assert_stock(&ts, "sku-late", 3, 2, 0, 1);

	post_ok(&ts, P("/orders/%s/cancel", id), "{\"reason\": \"changed my mind\"}", 200);
	s = wait_saga(&ts, id, "compensated");
	cr_assert_str_eq(str(s, "error"), "order cancelled: changed my mind");
	char h[512];
	history_of(s, "action", h, sizeof h);
	cr_assert_str_eq(h, "accept_order:succeeded,reserve_inventory:succeeded,take_payment:succeeded,"
			    "confirm_order:succeeded");
	history_of(s, "compensation", h, sizeof h);
	cr_assert_str_eq(h, "take_payment:succeeded,reserve_inventory:succeeded,accept_order:succeeded",
			 "everything the order held is undone, newest first");
	json_t *byid = get_json(&ts, P("/sagas/%s", sid));
	cr_assert(json_equal(json_object_get(byid, "history"), json_object_get(s, "history")));
	json_decref(byid);
	json_decref(s);

	assert_stock(&ts, "sku-late", 5, 0, 0, 0);
	json_t *pay = get_json(&ts, P("/payments/%s", pid));
	cr_assert_str_eq(str(pay, "status"), "refunded");
	cr_assert_eq(num(pay, "refunded_cents"), 2500);
	json_decref(pay);
	json_t *o = get_json(&ts, P("/orders/%s", id));
	cr_assert_str_eq(str(o, "status"), "cancelled");
	cr_assert_str_eq(str(o, "cancel_reason"), "changed my mind", "the customer's cancel, not the saga's");
	json_decref(o);
	/* once: one cancel, one refund, one release; the saga's own cancels were refused */
	cr_assert_eq(fd_test_server_scalar(&ts, P("SELECT count(*) FROM events WHERE stream_id = 'order-%s'"
						  " AND type = 'OrderCancelled'", id)), 1);
	cr_assert_eq(fd_test_server_scalar(&ts, P("SELECT count(*) FROM events WHERE stream_id = 'payment-%s'"
						  " AND type = 'PaymentRefunded'", pid)), 1);
	cr_assert_eq(fd_test_server_scalar(&ts, P("SELECT count(*) FROM events WHERE type = 'ReservationReleased'"
						  " AND data->>'order_id' = '%s'", id)), 1);
	cr_assert_eq(fd_test_server_scalar(&ts, P("SELECT count(*) FROM events WHERE type = 'PaymentRefunded'"
						  " AND metadata->>'correlation_id' = '%s'", sid)), 1,
		     "the refund is the saga's");

	/* what may follow: nothing more to cancel, refund or abort */
	post_refused(&ts, P("/orders/%s/cancel", id), "{\"reason\": \"again\"}", 409, "order-cancelled");
	post_refused(&ts, P("/payments/%s/refund", pid), NULL, 409, "payment-not-authorised");
	post_refused(&ts, P("/sagas/%s/abort", sid), NULL, 409, "saga-state");
	fd_test_server_stop(&ts);
}

Test(late_transitions, a_completed_saga_cannot_be_aborted)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak);
	char id[37];
	place(&ts, "sku-abort", 5, 2, id);
	json_t *s = wait_saga(&ts, id, "completed");
	struct fd_test_resp r;
	post(&ts, P("/sagas/%s/abort", str(s, "id")), NULL, 409, &r);
	fd_test_assert_problem(&r, 409, "saga-state");
	cr_assert_str_eq(fd_test_json_str(&r, "saga_status"), "completed");
	fd_test_resp_free(&r);
	json_t *after = get_json(&ts, P("/sagas/%s", str(s, "id")));
	cr_assert_str_eq(str(after, "status"), "completed");
	cr_assert_eq(num(after, "version"), num(s, "version"), "the refused abort changed nothing");
	json_decref(after);
	json_decref(s);
	json_t *o = get_json(&ts, P("/orders/%s", id));
	cr_assert_str_eq(str(o, "status"), "confirmed");
	json_decref(o);
	assert_stock(&ts, "sku-abort", 3, 2, 0, 1);
	fd_test_server_stop(&ts);
}

Test(late_transitions, a_live_orders_payment_is_refunded_only_by_cancelling_the_order)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak);
	char id[37], pid[37];
	place(&ts, "sku-refund", 5, 2, id);
	json_t *s = wait_saga(&ts, id, "completed");
	snprintf(pid, sizeof pid, "%s", str(json_object_get(s, "data"), "payment_id"));
	json_decref(s);
	post_refused(&ts, P("/payments/%s/refund", pid), NULL, 409, "order-not-cancelled");
	post_refused(&ts, P("/payments/%s/refund", pid), "{\"amount_cents\": 100}", 409, "order-not-cancelled");
	/* the payment's own answers come first */
	post_refused(&ts, P("/payments/%s/refund", pid), "{\"amount_cents\": 2501}", 409, "refund-exceeds-payment");
	post_refused(&ts, P("/payments/%s/refund", pid), "{\"amount_cents\": 0}", 400, "invalid-field");
	post_refused(&ts, P("/payments/%s/refund", pid), "{\"amount_cents\": ", 400, "invalid-json");
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts.port, "POST", P("/payments/%s/refund", pid),
				  "Content-Type: application/json\r\nIf-Match: \"1\"\r\n", "{}", 2, &r),
		     0);
	fd_test_assert_problem(&r, 412, "precondition-failed");
	fd_test_resp_free(&r);
	json_t *pay = get_json(&ts, P("/payments/%s", pid));
	cr_assert_str_eq(str(pay, "status"), "authorised");
	cr_assert_eq(num(pay, "refunded_cents"), 0);
	json_decref(pay);

	/* shipped: still refused, and the shipped order keeps its money */
	post_ok(&ts, P("/orders/%s/ship", id), NULL, 200);
	post_refused(&ts, P("/payments/%s/refund", pid), NULL, 409, "order-not-cancelled");
	post_refused(&ts, P("/orders/%s/cancel", id), "{\"reason\": \"too late\"}", 409, "order-shipped");
	pay = get_json(&ts, P("/payments/%s", pid));
	cr_assert_str_eq(str(pay, "status"), "authorised");
	json_decref(pay);
	fd_test_server_stop(&ts);
}

Test(late_transitions, a_cancelled_orders_payment_may_be_refunded_by_hand_and_the_saga_refunds_the_rest)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak);
	char id[37], pid[37];
	place(&ts, "sku-rest", 5, 2, id);
	json_t *s = wait_saga(&ts, id, "completed");
	snprintf(pid, sizeof pid, "%s", str(json_object_get(s, "data"), "payment_id"));
	json_decref(s);
	/* an order cancelled by hand behind the saga (no intake race: appended, then refunded at once) */
	post_ok(&ts, P("/orders/%s/cancel", id), "{\"reason\": \"changed my mind\"}", 200);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts.port, "POST", P("/payments/%s/refund", pid), "Content-Type: application/json\r\n",
				  "{\"amount_cents\": 400}", strlen("{\"amount_cents\": 400}"), &r),
		     0);
	/* 200 when it came before the saga's refund, else nothing is left to refund */
	cr_assert(r.status == 200 || r.status == 409, "%d %s", r.status, r.body);
	if (r.status == 409)
		fd_test_assert_problem(&r, 409, "payment-not-authorised");
	fd_test_resp_free(&r);
	s = wait_saga(&ts, id, "compensated");
	json_decref(s);
	json_t *pay = get_json(&ts, P("/payments/%s", pid));
	cr_assert_str_eq(str(pay, "status"), "refunded");
	cr_assert_eq(num(pay, "refunded_cents"), 2500, "refunded in full, never more");
	json_decref(pay);
	cr_assert_eq(fd_test_server_scalar(&ts, P("SELECT coalesce(sum((data->>'amount_cents')::bigint), 0) FROM events"
						  " WHERE stream_id = 'payment-%s' AND type = 'PaymentRefunded'", pid)),
		     2500);
	assert_stock(&ts, "sku-rest", 5, 0, 0, 0);
	fd_test_server_stop(&ts);
}

Test(late_transitions, restocking_while_reserved_keeps_the_reservation)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak);
	char id[37];
	place(&ts, "sku-restock", 5, 2, id);
	json_decref(wait_saga(&ts, id, "completed"));
	post_ok(&ts, "/products/sku-restock/restock", "{\"quantity\": 3}", 200);
	assert_stock(&ts, "sku-restock", 6, 2, 0, 1);
	post_ok(&ts, P("/orders/%s/cancel", id), "{\"reason\": \"changed my mind\"}", 200);
	json_decref(wait_saga(&ts, id, "compensated"));
	assert_stock(&ts, "sku-restock", 8, 0, 0, 0);
	fd_test_server_stop(&ts);
}
