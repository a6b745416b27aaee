/*
 * test_scaleout.c - the shop behind a real PgBouncer in transaction mode and
 * beside a real streaming standby, both started by scripts/test
 * (FACTD_TEST_PGBOUNCER_URL, FACTD_TEST_STANDBY_URL).
 *
 * Through PgBouncer: two factd processes whose request traffic shares 8
 * server connections in all (the pooler's max_db_connections) run 200 sagas
 * under load, with their session work (projector and saga leases, LISTEN)
 * on direct connections (FACTD_SESSION_DATABASE_URL); then the assertions
 * of the two-process saga test (each saga ended once, no command, step
 * attempt or reservation twice, stock conserved) and of the projections
 * (each read-model row at its stream's version, stock as the events say).
 * Without a session URL factd finds the pooler and refuses to run
 * background work over it, saying why.  With a standby the order list
 * reads from it, read-your-writes included.
 *
 * The factd binary comes from FACTD_BIN (meson passes it).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"
#include "shop_orders.h"
#include "testdb.h"
#include "testutil.h"

/* The URL of (primary) url's database at the server named by the environment variable `var`. */
static char *url_at(const char *var, const char *url)
{
	const char *base = getenv(var);
	cr_assert(base && *base, "%s is not set: scripts/test starts the server these tests need", var);
	const char *db = strrchr(url, '/'), *slash = strrchr(base, '/');
	cr_assert(db && slash);
	return fd_test_fmt("%.*s%s", (int)(slash - base), base, db);
}

/*
 * Start factd with the saga settings of these tests, then `env` ("NAME=value"
 * strings, NULL-terminated), and the arguments; with `wait`, until it
 * answers /healthz.
 */
static void spawn(struct fd_test_proc *p, const char *const *env, const char *arg1, const char *arg2, bool wait)
{
	const char *all[16] = { "FACTD_WORKERS=8", "FACTD_SAGA_WORKERS=2", "FACTD_SAGA_POLL_MS=20",
				"FACTD_SAGA_LEASE_MS=1500", "FACTD_SAGA_TIME_PERCENT=10", "FACTD_PAYMENT_FAIL_FIRST=1" };
	size_t n = 6;
	for (size_t i = 0; env[i]; i++) {
		cr_assert_lt(n, sizeof all / sizeof all[0] - 1);
		all[n++] = env[i];
	}
	*p = (struct fd_test_proc){ 0 };
	fd_test_proc_start(p, all, (const char *const[]){ arg1, arg2, NULL }, wait ? "/healthz" : NULL);
}

/* The read models, read through the API at the feed's head: every row at its stream's version, stock as the events say. */
static void assert_read_models(const char *url, uint16_t port, long long orders, long long declined)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(port, "/events/head", &r), 0);
	char *head = strdup(fd_test_json_str(&r, "head"));
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_get(port, fd_test_P("/orders?limit=1000&min_position=%s", head), &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *items = json_object_get(r.json, "orders");
	cr_assert_eq((long long)json_array_size(items), orders, "%zu orders in the read model", json_array_size(items));
	long long confirmed = 0, cancelled = 0;
	size_t i;
	json_t *o;
	json_array_foreach(items, i, o) {
		const char *id = json_string_value(json_object_get(o, "order_id"));
		const char *status = json_string_value(json_object_get(o, "status"));
		confirmed += strcmp(status, "confirmed") == 0;
		cancelled += strcmp(status, "cancelled") == 0;
		cr_assert_eq(json_integer_value(json_object_get(o, "version")),
			     fd_test_scalar_at(url, fd_test_P("SELECT version FROM streams WHERE stream_id = 'order-%s'", id)),
			     "order %s: the read model is not at its stream's version", id);
	}
	cr_assert_eq(confirmed, orders - declined);
	cr_assert_eq(cancelled, declined);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_get(port, fd_test_P("/products?min_position=%s", head), &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_array_foreach(json_object_get(r.json, "products"), i, o) {
		const char *id = json_string_value(json_object_get(o, "product_id"));
		int n = atoi(id + 2);
		cr_assert_eq(json_integer_value(json_object_get(o, "reserved")), shop_reserved_by_events(url, n),
			     "%s: reserved differs from its events (an event applied twice or never)", id);
		long long sum = json_integer_value(json_object_get(o, "available")) +
				json_integer_value(json_object_get(o, "reserved")) +
				json_integer_value(json_object_get(o, "committed"));
		cr_assert_eq(sum, SHOP_STOCK, "%s: stock not conserved", id);
		cr_assert_eq(json_integer_value(json_object_get(o, "version")),
			     fd_test_scalar_at(url, fd_test_P("SELECT version FROM streams WHERE stream_id = 'product-%s'", id)));
	}
	fd_test_resp_free(&r);
	free(head);
}

/* A number of PgBouncer's admin console: `show` (SHOW STATS, ...) row of database db, column col. */
static long long bouncer_number(const char *show, const char *db, const char *col)
{
	char *admin = url_at("FACTD_TEST_PGBOUNCER_URL", "/pgbouncer");
	PGconn *c = PQconnectdb(admin);
	cr_assert_eq(PQstatus(c), CONNECTION_OK, "PgBouncer's admin console: %s", PQerrorMessage(c));
	PGresult *res = PQexec(c, show);
	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
	int name = PQfnumber(res, "database") >= 0 ? PQfnumber(res, "database") : PQfnumber(res, "name");
	int k = PQfnumber(res, col);
	cr_assert(name >= 0 && k >= 0, "no column %s in %s", col, show);
	long long v = -1;
	for (int row = 0; row < PQntuples(res); row++)
		if (strcmp(PQgetvalue(res, row, name), db) == 0)
			v = atoll(PQgetvalue(res, row, k));
	PQclear(res);
	PQfinish(c);
	free(admin);
	return v;
}

Test(pooler, two_processes_through_pgbouncer_run_200_sagas_each_exactly_once, .timeout = 600)
{
	char *url = fd_test_db_new();
	char *bouncer = url_at("FACTD_TEST_PGBOUNCER_URL", url);
	const char *db = strrchr(url, '/') + 1;
	char *e_url = fd_test_fmt("FACTD_DATABASE_URL=%s", bouncer), *e_session = fd_test_fmt("FACTD_SESSION_DATABASE_URL=%s", url);
	const char *env[] = { e_url, e_session, NULL };
	struct fd_test_proc a, b;
	spawn(&a, env, "serve", "--no-migrate", true);
	spawn(&b, env, "serve", "--no-migrate", true);
	shop_create_products(a.port);
	enum { ORDERS = 200 };
	shop_place_many((const uint16_t[]){ a.port, b.port }, ORDERS, 4);
	shop_wait_sagas_ended(url, ORDERS, 300000);
	shop_assert_sagas_once(url, ORDERS, ORDERS / 10, 1);
	shop_assert_steps_once(url, ORDERS);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(DISTINCT worker) FROM saga_steps WHERE worker IS NOT NULL"), 2,
		     "both processes should have run saga steps");
	assert_read_models(url, a.port, ORDERS, ORDERS / 10);
	assert_read_models(url, b.port, ORDERS, ORDERS / 10);
	/* the requests went through PgBouncer, over at most 8 server connections */
	cr_assert_gt(bouncer_number("SHOW STATS", db, "total_xact_count"), 1000, "the traffic did not pass PgBouncer");
	cr_assert_eq(bouncer_number("SHOW DATABASES", db, "max_connections"), 8);
	cr_assert_leq(bouncer_number("SHOW DATABASES", db, "current_connections"), 8);
	fd_test_proc_stop(&a, SIGTERM);
	fd_test_proc_stop(&b, SIGTERM);
	free(e_url);
	free(e_session);
	free(bouncer);
	free(url);
}

Test(pooler, without_a_session_url_background_work_is_refused_and_says_why, .timeout = 120)
{
	char *url = fd_test_db_new();
	char *bouncer = url_at("FACTD_TEST_PGBOUNCER_URL", url);
	char *e_url = fd_test_fmt("FACTD_DATABASE_URL=%s", bouncer);
	char *log = NULL;
	struct fd_test_proc p;

	/* found by the probe: serving with projections, sagas and LISTEN is refused */
	const char *env1[] = { e_url, NULL };
	spawn(&p, env1, "serve", "--no-migrate", false);
	cr_assert_eq(fd_test_proc_exited(&p, &log), 2, "%s", log);
	cr_assert(strstr(log, "transaction pooler (detected)") && strstr(log, "FACTD_SESSION_DATABASE_URL"), "%s", log);
	free(log);
	/* migrations hold a session advisory lock: refused too */
	spawn(&p, env1, "migrate", NULL, false);
	cr_assert_eq(fd_test_proc_exited(&p, &log), 1, "%s", log);
	cr_assert(strstr(log, "advisory lock") && strstr(log, "FACTD_SESSION_DATABASE_URL"), "%s", log);
	free(log);
	/* told so on a direct connection */
	char *e_direct = fd_test_fmt("FACTD_DATABASE_URL=%s", url);
	const char *env2[] = { e_direct, "FACTD_POOLER=transaction", NULL };
	spawn(&p, env2, "serve", "--no-migrate", false);
	cr_assert_eq(fd_test_proc_exited(&p, &log), 2, "%s", log);
	cr_assert(strstr(log, "FACTD_POOLER=transaction"), "%s", log);
	free(log);
	/* with the background work off it serves commands and reads through the pooler */
	const char *env3[] = { e_url, "FACTD_PROJECTIONS=0", "FACTD_SAGAS=0", "FACTD_SSE_NOTIFY=0",
			       "FACTD_RETENTION=0", "FACTD_WEBHOOKS=0", NULL };
	spawn(&p, env3, "serve", "--no-migrate", true);
	shop_create_products(p.port);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(p.port, "/products/p-1", &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	fd_test_resp_free(&r);
	fd_test_proc_stop(&p, SIGTERM);
	free(e_direct);
	free(e_url);
	free(bouncer);
	free(url);
}

Test(replica, the_order_list_reads_the_standby_with_read_your_writes, .timeout = 120)
{
	char *url = fd_test_db_new();
	char *standby = url_at("FACTD_TEST_STANDBY_URL", url);
	for (long long end = fd_test_now_ms() + 30000;; fd_test_sleep_ms(50)) { /* the new database replicates */
		PGconn *c = PQconnectdb(standby);
		bool ok = PQstatus(c) == CONNECTION_OK;
		PQfinish(c);
		if (ok)
			break;
		cr_assert_lt(fd_test_now_ms(), end, "the database did not reach the standby");
	}
	char *e_url = fd_test_fmt("FACTD_DATABASE_URL=%s", url), *e_read = fd_test_fmt("FACTD_READ_DATABASE_URL=%s", standby);
	const char *env[] = { e_url, e_read, "FACTD_REPLICA_WAIT_MS=5000", NULL };
	struct fd_test_proc p;
	spawn(&p, env, "serve", "--no-migrate", true);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_post(p.port, "/orders", "{\"customer_id\": \"c-replica\"}", &r), 0);
	cr_assert_eq(r.status, 201, "%s", r.body);
	char *pos = strdup(fd_test_json_str(&r, "position"));
	char *id = strdup(fd_test_json_str(&r, "order_id"));
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_get(p.port, fd_test_P("/orders?customer_id=c-replica&min_position=%s", pos), &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	char h[16];
	cr_assert(fd_test_header(&r, "X-Factd-Replica", h, sizeof h), "the list was not served by the standby: %s", r.head);
	cr_assert_str_eq(h, "0");
	json_t *first = json_array_get(json_object_get(r.json, "orders"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(first, "order_id")), id, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_get(p.port, fd_test_P("/orders/%s?version=1", id), &r), 0);
	cr_assert_eq(r.status, 200);
	cr_assert(fd_test_header(&r, "X-Factd-Replica", h, sizeof h), "the order was not read from the standby");
	fd_test_resp_free(&r);
	fd_test_proc_stop(&p, SIGTERM);
	free(pos);
	free(id);
	free(e_url);
	free(e_read);
	free(standby);
	free(url);
}
