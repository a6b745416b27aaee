/* shop_orders.c - the shop's order flow over HTTP for the multi-process suites (see shop_orders.h). */
#include "shop_orders.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "http_client.h"
#include "testdb.h"
#include "testutil.h"

void shop_post_ok(uint16_t port, const char *path, const char *body, int want, char *id_out)
{
	struct fd_test_resp r;
	for (int tries = 0;; tries++) {
		cr_assert_eq(fd_test_http(port, "POST", path, body ? "Content-Type: application/json\r\n" : NULL, body,
					  body ? strlen(body) : 0, &r),
			     0);
		if (r.status != 503 || tries > 20)
			break;
		fd_test_resp_free(&r); /* the pool was busy: ask again */
		fd_test_sleep_ms(50);
	}
	cr_assert_eq(r.status, want, "POST %s: %d %s", path, r.status, r.body);
	if (id_out)
		snprintf(id_out, 37, "%s", fd_test_json_str(&r, "order_id"));
	fd_test_resp_free(&r);
}

void shop_create_products(uint16_t port)
{
	for (int i = 0; i < SHOP_PRODUCTS; i++)
		shop_post_ok(port, "/products",
			     fd_test_P("{\"product_id\": \"p-%d\", \"name\": \"P%d\", \"stock\": %d}", i, i, SHOP_STOCK), 201,
			     NULL);
}

void shop_place(uint16_t port, int n, char id[37])
{
	shop_post_ok(port, "/orders", "{\"customer_id\": \"c\"}", 201, id);
	int lines = 1 + n % 2;
	for (int l = 0; l < lines; l++) {
		long long price = n % 10 == 9 && l == 0 ? 200000 : 100 + n;
		shop_post_ok(port, fd_test_P("/orders/%s/lines", id),
			     fd_test_P("{\"product_id\": \"p-%d\", \"quantity\": %d, \"unit_price_cents\": %lld}",
				       (n + l) % SHOP_PRODUCTS, 1 + (n + l) % 3, price),
			     200, NULL);
	}
	shop_post_ok(port, fd_test_P("/orders/%s/place", id), NULL, 200, NULL);
}

struct placer {
	const uint16_t *ports;
	int first, count;
};

static void *placer_main(void *arg)
{
	struct placer *pl = arg;
	for (int n = pl->first; n < pl->first + pl->count; n++) {
		char id[37];
		shop_place(pl->ports[n % 2], n, id);
	}
	return NULL;
}

void shop_place_many(const uint16_t ports[2], int orders, int threads)
{
	pthread_t t[16];
	struct placer pl[16];
	cr_assert(threads >= 1 && threads <= 16 && orders % threads == 0, "orders must split evenly over 1..16 threads");
	for (int i = 0; i < threads; i++) {
		pl[i] = (struct placer){ .ports = ports, .first = i * (orders / threads), .count = orders / threads };
		cr_assert_eq(pthread_create(&t[i], NULL, placer_main, &pl[i]), 0);
	}
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
}

void shop_wait_sagas_ended(const char *url, long long n, long timeout_ms)
{
	for (long long end = fd_test_now_ms() + timeout_ms;;) {
		long long ended = fd_test_scalar_at(url, "SELECT count(*) FROM sagas WHERE type = 'order_fulfillment'"
							 " AND status IN ('completed', 'compensated', 'failed')");
		if (ended == n)
			return;
		cr_assert_lt(fd_test_now_ms(), end, "%lld of %lld sagas ended", ended, n);
		fd_test_sleep_ms(100);
	}
}

long long shop_reserved_by_events(const char *url, int i)
{
	return fd_test_scalar_at(url, fd_test_P("SELECT coalesce(sum(CASE type WHEN 'StockReserved' THEN (data->>'quantity')::bigint"
						" WHEN 'ReservationReleased' THEN -(data->>'quantity')::bigint ELSE 0 END), 0)"
						" FROM events WHERE stream_id = 'product-p-%d'",
						i));
}

/* See shop_orders.h.  The effects, counted on the events: each order ended once (confirmed or
 * cancelled, never both), each saga command recorded once, stock conserved
 * and reserved exactly for the confirmed orders.
 */
void shop_assert_sagas_once(const char *url, long long orders, long long declined, unsigned fail_first)
{
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM sagas WHERE type = 'order_fulfillment'"), orders);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM sagas WHERE status = 'completed' AND type = 'order_fulfillment'"),
		     orders - declined);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM sagas WHERE status = 'compensated'"), declined);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM events WHERE type = 'OrderConfirmed'"), orders - declined);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM events WHERE type = 'OrderCancelled'"), declined);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM (SELECT stream_id FROM events WHERE type IN"
				 " ('OrderConfirmed', 'OrderCancelled') GROUP BY stream_id HAVING count(*) > 1) d"),
		     0, "an order ended twice");
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM events WHERE type = 'PaymentRequested'"), orders);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM events WHERE type = 'PaymentAuthorised'"), orders - declined);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM events WHERE type = 'PaymentDeclined'"), declined);
	cr_assert_eq(fd_test_scalar_at(url, fd_test_P("SELECT count(*) FROM (SELECT (SELECT count(*) FROM events f WHERE f.stream_id ="
				   " r.stream_id AND f.type = 'PaymentAttemptFailed') AS n FROM events r"
				   " WHERE r.type = 'PaymentRequested') d WHERE n <> %u",
				   fail_first)),
		     0, "each payment must have failed exactly %u times before its answer", fail_first);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM (SELECT metadata->'idempotency'->>'key' FROM events"
				 " WHERE metadata ? 'idempotency' AND metadata->>'caller' = 'saga'"
				 " GROUP BY 1 HAVING count(*) > 1) d"),
		     0, "a saga command recorded its events twice");
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM (SELECT stream_id, data->>'order_id', type FROM events"
				 " WHERE type IN ('StockReserved', 'ReservationReleased')"
				 " GROUP BY 1, 2, 3 HAVING count(*) > 1) d"),
		     0, "a reservation was made or released twice");
	/* stock: what is still reserved is exactly the confirmed orders' lines */
	for (int i = 0; i < SHOP_PRODUCTS; i++) {
		long long reserved = shop_reserved_by_events(url, i);
		long long confirmed = fd_test_scalar_at(
			url, fd_test_P("SELECT coalesce(sum((l->>'quantity')::bigint), 0) FROM events e,"
			       " jsonb_array_elements(e.data->'lines') l WHERE e.type = 'OrderPlaced'"
			       " AND l->>'product_id' = 'p-%d' AND e.stream_id IN"
			       " (SELECT stream_id FROM events WHERE type = 'OrderConfirmed')",
			       i));
		cr_assert_eq(reserved, confirmed, "p-%d: %lld reserved for %lld confirmed", i, reserved, confirmed);
	}
}

void shop_assert_steps_once(const char *url, long long retries)
{
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM (SELECT saga_id, step, kind, attempt FROM saga_steps"
						 " GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d"),
		     0, "a step attempt ran twice");
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM saga_steps WHERE outcome IN ('running', 'interrupted')"), 0);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM saga_steps WHERE step = 'take_payment' AND kind = 'action'"
						 " AND outcome = 'retry'"),
		     retries, "each saga retried its payment once, after its timer");
}
