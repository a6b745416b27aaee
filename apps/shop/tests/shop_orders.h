/*
 * shop_orders.h - driving the shop's order flow over HTTP, for the suites
 * that run sagas across real factd processes (test_saga_processes.c,
 * test_scaleout.c): products with a known stock, orders whose sagas end
 * confirmed or (every tenth) declined, and waiting for them to end.  They
 * fail the test (criterion) rather than return errors.
 */
#ifndef SHOP_ORDERS_H
#define SHOP_ORDERS_H

#include <stdint.h>

#define SHOP_PRODUCTS 4       /* products p-0 .. p-3 */
#define SHOP_STOCK 100000     /* each product's stock */

/*
 * POST body (JSON, or none when NULL) to path; the test fails unless the
 * answer is `want` (a 503 of a busy pool is asked again, up to 20 times).
 * With id_out (37 bytes), the answer's "order_id" goes there.
 */
void shop_post_ok(uint16_t port, const char *path, const char *body, int want, char *id_out);
/* Create the SHOP_PRODUCTS products with SHOP_STOCK each. */
void shop_create_products(uint16_t port);
/*
 * Create and place order n: one or two lines; every tenth is priced over the
 * payment simulator's limit, so it is declined.  Its id goes to id.
 */
void shop_place(uint16_t port, int n, char id[37]);
/* Place orders 0..orders-1 from `threads` threads at once, order n through ports[n % 2]. */
void shop_place_many(const uint16_t ports[2], int orders, int threads);
/* Wait until n order_fulfillment sagas of the database at url have ended; the test fails after timeout_ms. */
void shop_wait_sagas_ended(const char *url, long long n, long timeout_ms);
/* The stock of product p-<i> that its events leave reserved. */
long long shop_reserved_by_events(const char *url, int i);
/*
 * The effects of `orders` order sagas (`declined` of them declined, each
 * payment failing `fail_first` times first), counted on the events of the
 * database at url: each order ended once (confirmed or cancelled, never
 * both), each saga command recorded once, no reservation made or released
 * twice, and what stays reserved exactly the confirmed orders' lines.
 */
void shop_assert_sagas_once(const char *url, long long orders, long long declined, unsigned fail_first);
/*
 * Every saga step attempt ran once across all processes, none is left
 * running or interrupted, and take_payment was retried `retries` times.
 */
void shop_assert_steps_once(const char *url, long long retries);

#endif
