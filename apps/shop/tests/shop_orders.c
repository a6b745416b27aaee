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
