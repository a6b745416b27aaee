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
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "testdb.h"
#include "testutil.h"

static uint16_t free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t len = sizeof a;
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

struct proc {
	pid_t pid;
	uint16_t port;
};

/* Start `factd serve` on url with the saga settings of these tests; wait until it answers /healthz. */
static void spawn(struct proc *p, const char *url, unsigned fail_first)
{
	const char *bin = getenv("FACTD_BIN");
	cr_assert(bin && access(bin, X_OK) == 0, "FACTD_BIN is not set or not executable: run through meson test");
	p->port = free_port();
	p->pid = fork();
	cr_assert_neq(p->pid, -1);
	if (p->pid == 0) {
		char listen[32], ff[16];
		snprintf(listen, sizeof listen, "127.0.0.1:%u", p->port);
		snprintf(ff, sizeof ff, "%u", fail_first);
		setenv("FACTD_DATABASE_URL", url, 1);
		setenv("FACTD_LISTEN", listen, 1);
		setenv("FACTD_LOG_LEVEL", "warn", 1);
		setenv("FACTD_WORKERS", "8", 1);
		setenv("FACTD_SAGA_WORKERS", "2", 1);
		setenv("FACTD_SAGA_POLL_MS", "20", 1);
		setenv("FACTD_SAGA_LEASE_MS", "10000", 1);
		setenv("FACTD_SAGA_TIME_PERCENT", "10", 1);
		setenv("FACTD_PAYMENT_FAIL_FIRST", ff, 1);
		execl(bin, bin, "serve", (char *)NULL);
		_exit(127);
	}
	for (long long end = fd_test_now_ms() + 20000;;) {
		struct fd_test_resp r;
		int rc = fd_test_get(p->port, "/healthz", &r);
		int status = r.status;
		fd_test_resp_free(&r);
		if (rc == 0 && status == 200)
			return;
		int st;
		cr_assert_eq(waitpid(p->pid, &st, WNOHANG), 0, "factd exited during start");
		cr_assert_lt(fd_test_now_ms(), end, "factd did not answer /healthz");
		fd_test_sleep_ms(50);
	}
}

static void stop(struct proc *p, int sig)
{
	kill(p->pid, sig);
	int st = 0;
	cr_assert_eq(waitpid(p->pid, &st, 0), p->pid);
	if (sig == SIGTERM)
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "factd did not stop cleanly");
}

static void post_ok(uint16_t port, const char *path, const char *body, int want, char *id_out)
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

#define PRODUCTS 4
#define STOCK 100000

static void create_products(uint16_t port)
{
	for (int i = 0; i < PRODUCTS; i++)
		post_ok(port, "/products", fd_test_P("{\"product_id\": \"p-%d\", \"name\": \"P%d\", \"stock\": %d}", i, i, STOCK),
			201, NULL);
}

/* Order n: one or two lines; every tenth is priced over the simulator's limit, so it is declined. */
static void place(uint16_t port, int n, char id[37])
{
	post_ok(port, "/orders", "{\"customer_id\": \"c\"}", 201, id);
	int lines = 1 + n % 2;
	for (int l = 0; l < lines; l++) {
		long long price = n % 10 == 9 && l == 0 ? 200000 : 100 + n;
		post_ok(port, fd_test_P("/orders/%s/lines", id),
			fd_test_P("{\"product_id\": \"p-%d\", \"quantity\": %d, \"unit_price_cents\": %lld}", (n + l) % PRODUCTS,
			  1 + (n + l) % 3, price),
			200, NULL);
	}
	post_ok(port, fd_test_P("/orders/%s/place", id), NULL, 200, NULL);
}

static void wait_all_ended(const char *url, long long n, long timeout_ms)
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

/*
 * The effects, counted on the events: each order ended once (confirmed or
 * cancelled, never both), each saga command recorded once, stock conserved
 * and reserved exactly for the confirmed orders.
 */
static void assert_exactly_once(const char *url, long long orders, long long declined, unsigned fail_first)
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
	for (int i = 0; i < PRODUCTS; i++) {
		long long reserved = fd_test_scalar_at(
			url, fd_test_P("SELECT coalesce(sum(CASE type WHEN 'StockReserved' THEN (data->>'quantity')::bigint"
			       " WHEN 'ReservationReleased' THEN -(data->>'quantity')::bigint ELSE 0 END), 0)"
			       " FROM events WHERE stream_id = 'product-p-%d'",
			       i));
		long long confirmed = fd_test_scalar_at(
			url, fd_test_P("SELECT coalesce(sum((l->>'quantity')::bigint), 0) FROM events e,"
			       " jsonb_array_elements(e.data->'lines') l WHERE e.type = 'OrderPlaced'"
			       " AND l->>'product_id' = 'p-%d' AND e.stream_id IN"
			       " (SELECT stream_id FROM events WHERE type = 'OrderConfirmed')",
			       i));
		cr_assert_eq(reserved, confirmed, "p-%d: %lld reserved for %lld confirmed", i, reserved, confirmed);
	}
}

static void check_stock_views(uint16_t port)
{
	for (int i = 0; i < PRODUCTS; i++) {
		struct fd_test_resp r;
		cr_assert_eq(fd_test_get(port, fd_test_P("/products/p-%d", i), &r), 0);
		cr_assert_eq(r.status, 200);
		long long a = json_integer_value(json_object_get(r.json, "available"));
		long long res = json_integer_value(json_object_get(r.json, "reserved"));
		long long c = json_integer_value(json_object_get(r.json, "committed"));
		cr_assert_eq(a + res + c, STOCK, "stock of p-%d not conserved", i);
		fd_test_resp_free(&r);
	}
}

Test(saga_processes, kill_9_mid_saga_and_restart_finishes_each_once, .timeout = 300)
{
	char *url = fd_test_db_new();
	struct proc a;
	spawn(&a, url, 2); /* two transient payment failures per order: sagas wait on retry timers */
	create_products(a.port);
	enum { ORDERS = 30 };
	char ids[ORDERS][37];
	for (int n = 0; n < ORDERS; n++)
		place(a.port, n, ids[n]);
	/* kill it while sagas are between steps */
	for (long long end = fd_test_now_ms() + 10000;
	     fd_test_scalar_at(url, "SELECT count(*) FROM saga_steps WHERE step = 'take_payment'") == 0;) {
		cr_assert_lt(fd_test_now_ms(), end, "no saga reached the payment");
		fd_test_sleep_ms(20);
	}
	stop(&a, SIGKILL);
	long long unfinished = fd_test_scalar_at(url, "SELECT count(*) FROM sagas WHERE status IN ('running', 'compensating')");
	long long started = fd_test_scalar_at(url, "SELECT count(*) FROM sagas");
	cr_assert_gt(unfinished, 0, "every saga had ended before the kill: the test proved nothing");

	struct proc b;
	spawn(&b, url, 2);
	wait_all_ended(url, ORDERS, 120000);
	cr_log_info("killed with %lld of %lld started sagas unfinished", unfinished, started);
	long long declined = 0;
	for (int n = 0; n < ORDERS; n++)
		declined += n % 10 == 9;
	assert_exactly_once(url, ORDERS, declined, 2);
	check_stock_views(b.port);
	stop(&b, SIGTERM);
	free(url);
}

struct placer {
	uint16_t ports[2];
	int first, count;
};

static void *place_many(void *arg)
{
	struct placer *pl = arg;
	for (int n = pl->first; n < pl->first + pl->count; n++) {
		char id[37];
		place(pl->ports[n % 2], n, id);
	}
	return NULL;
}

Test(saga_processes, two_processes_run_200_sagas_each_exactly_once, .timeout = 600)
{
	char *url = fd_test_db_new();
	struct proc a, b;
	/* each payment fails once first: every saga also waits on a retry timer */
	spawn(&a, url, 1);
	spawn(&b, url, 1);
	create_products(a.port);
	enum { ORDERS = 200, THREADS = 4 };
	pthread_t t[THREADS];
	struct placer pl[THREADS];
	for (int i = 0; i < THREADS; i++) {
		pl[i] = (struct placer){ .ports = { a.port, b.port }, .first = i * (ORDERS / THREADS),
					 .count = ORDERS / THREADS };
		cr_assert_eq(pthread_create(&t[i], NULL, place_many, &pl[i]), 0);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	wait_all_ended(url, ORDERS, 300000);
	assert_exactly_once(url, ORDERS, ORDERS / 10, 1);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(DISTINCT worker) FROM saga_steps WHERE worker IS NOT NULL"), 2,
		     "both processes should have run saga steps");
	/* every run of a step, retries and timers included, happened once in all processes */
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM (SELECT saga_id, step, kind, attempt FROM saga_steps"
				 " GROUP BY 1, 2, 3, 4 HAVING count(*) > 1) d"),
		     0, "a step attempt ran twice");
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM saga_steps WHERE outcome IN ('running', 'interrupted')"), 0);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM saga_steps WHERE step = 'take_payment' AND kind = 'action'"
				 " AND outcome = 'retry'"),
		     ORDERS, "each saga retried its payment once, after its timer");
	check_stock_views(a.port);
	check_stock_views(b.port);
	stop(&a, SIGTERM);
	stop(&b, SIGTERM);
	free(url);
}
