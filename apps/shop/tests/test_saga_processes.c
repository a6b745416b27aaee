/*
 * test_saga_processes.c - sagas across real factd processes sharing one
 * PostgreSQL: a process killed with SIGKILL in the middle of its sagas and
 * a new one started in its place finishes them without running any step's
 * effect twice; two processes running 200 sagas at once end each exactly
 * once, send no command twice, run every step attempt (retries after their
 * timers included) once across both processes, and conserve the stock.
 *
 * The factd binary comes from FACTD_BIN (meson passes it).  Each process
 * listens on a port picked free by the test.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_client.h"
#include "shop_orders.h"
#include "testdb.h"
#include "testutil.h"

/* Start `factd serve` on url with the saga settings of these tests; wait until it answers /healthz. */
static void spawn(struct fd_test_proc *p, const char *url, unsigned fail_first)
{
	const char *env[] = { fd_test_P("FACTD_DATABASE_URL=%s", url), "FACTD_WORKERS=8", "FACTD_SAGA_WORKERS=2",
			      "FACTD_SAGA_POLL_MS=20", "FACTD_SAGA_LEASE_MS=10000", "FACTD_SAGA_TIME_PERCENT=10",
			      fd_test_P("FACTD_PAYMENT_FAIL_FIRST=%u", fail_first), NULL };
	*p = (struct fd_test_proc){ 0 };
	fd_test_proc_start(p, env, (const char *const[]){ "serve", NULL }, "/healthz");
}

static void check_stock_views(uint16_t port)
{
	for (int i = 0; i < SHOP_PRODUCTS; i++) {
		struct fd_test_resp r;
		cr_assert_eq(fd_test_get(port, fd_test_P("/products/p-%d", i), &r), 0);
		cr_assert_eq(r.status, 200);
		long long a = json_integer_value(json_object_get(r.json, "available"));
		long long res = json_integer_value(json_object_get(r.json, "reserved"));
		long long c = json_integer_value(json_object_get(r.json, "committed"));
		cr_assert_eq(a + res + c, SHOP_STOCK, "stock of p-%d not conserved", i);
		fd_test_resp_free(&r);
	}
}

Test(saga_processes, kill_9_mid_saga_and_restart_finishes_each_once, .timeout = 300)
{
	char *url = fd_test_db_new();
	struct fd_test_proc a;
	spawn(&a, url, 2); /* two transient payment failures per order: sagas wait on retry timers */
	shop_create_products(a.port);
	enum { ORDERS = 30 };
	char ids[ORDERS][37];
	for (int n = 0; n < ORDERS; n++)
		shop_place(a.port, n, ids[n]);
	/* kill it while sagas are between steps */
	for (long long end = fd_test_now_ms() + 10000;
	     fd_test_scalar_at(url, "SELECT count(*) FROM saga_steps WHERE step = 'take_payment'") == 0;) {
		cr_assert_lt(fd_test_now_ms(), end, "no saga reached the payment");
		fd_test_sleep_ms(20);
	}
	fd_test_proc_stop(&a, SIGKILL);
	long long unfinished = fd_test_scalar_at(url, "SELECT count(*) FROM sagas WHERE status IN ('running', 'compensating')");
	long long started = fd_test_scalar_at(url, "SELECT count(*) FROM sagas");
	cr_assert_gt(unfinished, 0, "every saga had ended before the kill: the test proved nothing");

	struct fd_test_proc b;
	spawn(&b, url, 2);
	shop_wait_sagas_ended(url, ORDERS, 120000);
	cr_log_info("killed with %lld of %lld started sagas unfinished", unfinished, started);
	long long declined = 0;
	for (int n = 0; n < ORDERS; n++)
		declined += n % 10 == 9;
	shop_assert_sagas_once(url, ORDERS, declined, 2);
	check_stock_views(b.port);
	fd_test_proc_stop(&b, SIGTERM);
	free(url);
}

Test(saga_processes, two_processes_run_200_sagas_each_exactly_once, .timeout = 600)
{
	char *url = fd_test_db_new();
	struct fd_test_proc a, b;
	/* each payment fails once first: every saga also waits on a retry timer */
	spawn(&a, url, 1);
	spawn(&b, url, 1);
	shop_create_products(a.port);
	enum { ORDERS = 200 };
	shop_place_many((const uint16_t[]){ a.port, b.port }, ORDERS, 4);
	shop_wait_sagas_ended(url, ORDERS, 300000);
	shop_assert_sagas_once(url, ORDERS, ORDERS / 10, 1);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(DISTINCT worker) FROM saga_steps WHERE worker IS NOT NULL"), 2,
		     "both processes should have run saga steps");
	/* every run of a step, retries and timers included, happened once in all processes */
	shop_assert_steps_once(url, ORDERS);
	check_stock_views(a.port);
	check_stock_views(b.port);
	fd_test_proc_stop(&a, SIGTERM);
	fd_test_proc_stop(&b, SIGTERM);
	free(url);
}
