/*
 * test_projections.c - the projector against real PostgreSQL: read models
 * (order lines included) equal a replay of the aggregates, a failed or killed
 * batch neither loses nor repeats an event, one projection never runs in two
 * places at once, a rebuild equals incremental processing, tables made
 * by another version of a definition are rebuilt or left alone, and the
 * handlers' prepared statements write the right tables across rebuilds,
 * swaps and new connections, with index lookups in their generic plans.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "factd/bus.h"
#include "shop.h"
#include "factd/events.h"
#include "factd/hash.h"
#include "factd/notify.h"
#include "factd/proj.h"
#include "factd/uuid.h"
#include "store/lifecycle.h"
#include "testdb.h"
#include "testutil.h"

/* The shop's read models, as the projector takes them. */
#define SHOP_PROJECTIONS (&(const struct fd_projection_set){ shop_app.projections, shop_app.nprojections })

struct env {
	char *url;
	struct fd_pool *pool;
	struct fd_bus *bus;
};

static struct env env_open(void)
{
	struct env e = { .url = fd_test_db_new() };
	cr_assert_eq(fd_pool_new(e.url, 4, 10000, &e.pool), FD_OK);
	struct fd_bus_config cfg = { .max_retries = 10, .snapshot_every = -1 };
	cr_assert_eq(fd_bus_new(e.pool, &cfg, &e.bus), FD_OK);
	return e;
}

static void env_close(struct env *e)
{
	fd_bus_free(e->bus);
	fd_pool_free(e->pool);
	free(e->url);
}

/* The feed position of the newest event this test wrote. */
static struct fd_cursor last_written;

static void send_ok(struct env *e, const struct fd_aggregate_type *t, const char *id, const char *cmd, json_t *payload)
{
	struct fd_cmd_result r;
	enum fd_err err = fd_bus_send(e->bus, t, id, cmd, payload, NULL, &r);
	cr_assert_eq(err, FD_OK, "%s %s: %s %s", t->name, cmd, fd_err_name(err), r.decision.slug);
	if (fd_cursor_cmp(&r.position, &last_written) > 0)
		last_written = r.position;
	fd_cmd_result_release(&r);
	json_decref(payload);
}

/*
 * Wait until every projection has applied everything this test wrote and is
 * live at the feed head.  (The head alone is not enough: transactions of
 * other tests sharing the cluster can hold the visible end back.)
 */
static void wait_caught_up(struct env *e, int seconds)
{
	time_t end = time(NULL) + seconds;
	for (size_t i = 0; i < shop_app.nprojections; i++)
		cr_assert_eq(fd_projection_wait(e->pool, shop_app.projections[i]->name, last_written, (unsigned)seconds * 1000),
			     FD_OK, "%s did not reach the last write", shop_app.projections[i]->name);
	for (;;) {
		json_t *st = NULL;
		cr_assert_eq(fd_projection_status(e->pool, SHOP_PROJECTIONS, &st), FD_OK);
		bool all = json_array_size(st) == shop_app.nprojections;
		size_t i;
		json_t *p;
		json_array_foreach(st, i, p) {
			all = all && json_integer_value(json_object_get(p, "lag_events")) == 0 &&
			      strcmp(json_string_value(json_object_get(p, "status")), "live") == 0;
		}
		json_decref(st);
		if (all)
			return;
		cr_assert(time(NULL) < end, "projections did not catch up in %d s", seconds);
		usleep(20000);
	}
}

/* A mixed workload over a few orders and products; returns the order ids (static storage). */
static char orders[12][FD_UUID_STRLEN + 1];
static void workload(struct env *e, int round)
{
	char sku[32];
	snprintf(sku, sizeof sku, "sku-%d", round);
	send_ok(e, &fd_product_type, sku, "create", json_pack("{s:s, s:i}", "name", "Widget", "stock", 100));
	send_ok(e, &fd_product_type, sku, "restock", json_pack("{s:i}", "quantity", 5));
	for (int i = 0; i < 12; i++) {
		struct fd_uuid u;
		cr_assert_eq(fd_uuid_v7(&u), FD_OK);
		fd_uuid_format(&u, orders[i]);
		const char *id = orders[i];
		send_ok(e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", i % 2 ? "alice" : "bob"));
		send_ok(e, &fd_order_type, id, "add_line",
			json_pack("{s:s, s:i, s:i}", "product_id", "p1", "quantity", 1 + i, "unit_price_cents", 100));
		send_ok(e, &fd_order_type, id, "add_line",
			json_pack("{s:s, s:i, s:i}", "product_id", "p2", "quantity", 2, "unit_price_cents", 250));
		send_ok(e, &fd_order_type, id, "add_line",
			json_pack("{s:s, s:i, s:i}", "product_id", "p1", "quantity", 1, "unit_price_cents", 100));
		if (i % 3 == 0)
			send_ok(e, &fd_order_type, id, "remove_line", json_pack("{s:s}", "product_id", "p2"));
		if (i % 2 == 0)
			send_ok(e, &fd_order_type, id, "place", json_object());
		if (i % 4 == 0)
			send_ok(e, &fd_order_type, id, "cancel", json_pack("{s:s}", "reason", "changed mind"));
		send_ok(e, &fd_product_type, sku, "reserve", json_pack("{s:s, s:i}", "order_id", id, "quantity", 3));
		if (i % 2)
			send_ok(e, &fd_product_type, sku, "release", json_pack("{s:s}", "order_id", id));
		else if (i % 4 == 2)
			send_ok(e, &fd_product_type, sku, "commit", json_pack("{s:s}", "order_id", id));
	}
}

/* The line rows of order `id` are the lines of o: the same products, quantities and prices. */
static void assert_lines(PGconn *c, const char *id, const struct fd_order *o)
{
	const char *params[] = { id };
	PGresult *r = PQexecParams(c, "SELECT product_id, quantity, unit_price_cents FROM order_summaries_lines"
				      " WHERE order_id = $1",
				   1, NULL, params, NULL, NULL, 0);
	cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
	cr_assert_eq((size_t)PQntuples(r), o->nlines, "order %s: line rows", id);
	for (int i = 0; i < PQntuples(r); i++) {
		size_t k = 0;
		while (k < o->nlines && strcmp(o->lines[k].product_id, PQgetvalue(r, i, 0)) != 0)
			k++;
		cr_assert_lt(k, o->nlines, "order %s: %s is not on the order", id, PQgetvalue(r, i, 0));
		cr_assert_eq(atoll(PQgetvalue(r, i, 1)), o->lines[k].quantity, "order %s: %s", id, PQgetvalue(r, i, 0));
		cr_assert_eq(atoll(PQgetvalue(r, i, 2)), o->lines[k].unit_price_cents);
	}
	PQclear(r);
}

/* Every order summary (with its lines) and stock row equals the aggregate replayed from its events. */
static void assert_equals_replay(struct env *e)
{
	PGconn *c = fd_test_connect(e->url);
	PGresult *r = PQexec(c, "SELECT order_id, status, line_count, total_cents, version FROM order_summaries");
	cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK);
	cr_assert_eq(PQntuples(r), fd_test_scalar_at(e->url, "SELECT count(*) FROM streams WHERE category = 'order'"));
	for (int i = 0; i < PQntuples(r); i++) {
		struct fd_order o;
		int64_t v;
		cr_assert_eq(fd_bus_load(e->bus, &fd_order_type, PQgetvalue(r, i, 0), NULL, &o, &v), FD_OK);
		cr_assert_str_eq(PQgetvalue(r, i, 1), fd_order_status_name(o.status));
		cr_assert_eq(atoll(PQgetvalue(r, i, 2)), (long long)o.nlines);
		cr_assert_eq(atoll(PQgetvalue(r, i, 3)), (long long)fd_order_total_cents(&o));
		cr_assert_eq(atoll(PQgetvalue(r, i, 4)), v);
		assert_lines(c, PQgetvalue(r, i, 0), &o);
		fd_order_type.release(&o);
	}
	PQclear(r);
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM order_summaries s WHERE line_count <>"
				       " (SELECT count(*) FROM order_summaries_lines l WHERE l.order_id = s.order_id)"
				       " OR total_cents <> (SELECT coalesce(sum(quantity * unit_price_cents), 0)"
				       "   FROM order_summaries_lines l WHERE l.order_id = s.order_id)"),
		     0, "line_count and total_cents are those of the order's line rows");
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM order_summaries_lines l WHERE NOT EXISTS"
				       " (SELECT 1 FROM order_summaries s WHERE s.order_id = l.order_id)"),
		     0, "no line rows without a summary");
	r = PQexec(c, "SELECT product_id, available, reserved, committed, version FROM product_stock");
	cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK);
	cr_assert_eq(PQntuples(r), fd_test_scalar_at(e->url, "SELECT count(*) FROM streams WHERE category = 'product'"));
	for (int i = 0; i < PQntuples(r); i++) {
		struct fd_product p;
		int64_t v;
		cr_assert_eq(fd_bus_load(e->bus, &fd_product_type, PQgetvalue(r, i, 0), NULL, &p, &v), FD_OK);
		cr_assert_eq(atoll(PQgetvalue(r, i, 1)), p.available);
		cr_assert_eq(atoll(PQgetvalue(r, i, 2)), p.reserved);
		cr_assert_eq(atoll(PQgetvalue(r, i, 3)), p.committed);
		cr_assert_eq(atoll(PQgetvalue(r, i, 4)), v);
		fd_product_type.release(&p);
	}
	PQclear(r);
	PQfinish(c);
}

/* Whether a rebuild of `name` is asked for or running. */
static bool rebuild_pending(const char *url, const char *name)
{
	char sql[256];
	snprintf(sql, sizeof sql,
		 "SELECT count(*) FROM projections WHERE name = '%s' AND (rebuilding OR rebuild_requested)", name);
	return fd_test_scalar_at(url, sql) > 0;
}

/* Wait (a minute at most) until no rebuild of order_summaries is asked for or running. */
static void wait_rebuilt(const char *url)
{
	time_t end = time(NULL) + 60;
	while (rebuild_pending(url, "order_summaries")) {
		cr_assert(time(NULL) < end, "the rebuild did not finish");
		usleep(10000);
	}
}

/* The version a projection table is stamped with (0 without a stamp). */
static long long table_version(const char *url, const char *table)
{
	char sql[256];
	snprintf(sql, sizeof sql,
		 "SELECT coalesce(substring(obj_description('%s'::regclass, 'pg_class') FROM ' version ([0-9]+)$')::int, 0)",
		 table);
	return fd_test_scalar_at(url, sql);
}

/* Stamp an order_summaries table as if the definition of `version` had made it. */
static void stamp_orders(const char *url, const char *table, unsigned version)
{
	char sql[256];
	snprintf(sql, sizeof sql, "COMMENT ON TABLE %s IS 'factd projection order_summaries version %u'", table, version);
	fd_test_exec_at(url, sql);
}

static struct fd_projector *projector_start(struct env *e)
{
	struct fd_projector *p = NULL;
	struct fd_projector_config cfg = { .projections = SHOP_PROJECTIONS, .conninfo = e->url, .batch = 7, .idle_ms = 20 };
	cr_assert_eq(fd_projector_start(&cfg, &p), FD_OK);
	return p;
}

Test(projections, read_models_equal_a_replay_after_a_mixed_workload, .timeout = 120)
{
	struct env e = env_open();
	workload(&e, 1); /* before the projector starts: it must catch up from the beginning */
	struct fd_projector *p = projector_start(&e);
	workload(&e, 2); /* and while it runs */
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM order_summaries WHERE status = 'cancelled'"
				   " AND cancel_reason = 'changed mind' AND cancelled_at IS NOT NULL"),
		     6);
	fd_projector_stop(p);
	env_close(&e);
}

Test(projections, a_failed_batch_is_rolled_back_with_its_checkpoint_and_applied_once_later, .timeout = 120)
{
	struct env e = env_open();
	struct fd_projector *p = projector_start(&e);
	wait_caught_up(&e, 30); /* tables exist */
	/* Make the projection fail mid-batch: a row for customer "boom" cannot be written. */
	fd_test_exec_at(e.url, "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
			" IF NEW.customer_id = 'boom' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$");
	fd_test_exec_at(e.url, "CREATE TRIGGER boom BEFORE INSERT ON order_summaries FOR EACH ROW EXECUTE FUNCTION boom()");
	workload(&e, 1);
	char id[FD_UUID_STRLEN + 1];
	struct fd_uuid u;
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	fd_uuid_format(&u, id);
	send_ok(&e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "boom"));
	send_ok(&e, &fd_order_type, id, "add_line",
		json_pack("{s:s, s:i, s:i}", "product_id", "p9", "quantity", 4, "unit_price_cents", 10));
	usleep(500000);
	long long stuck = fd_test_scalar_at(e.url, "SELECT count(*) FROM order_summaries");
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM order_summaries WHERE customer_id = 'boom'"), 0);
	cr_assert_lt(stuck, 13, "the batch holding the failing event was not applied");
	fd_test_exec_at(e.url, "DROP TRIGGER boom ON order_summaries");
	wait_caught_up(&e, 60);
	assert_equals_replay(&e); /* quantities prove nothing was applied twice */
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT total_cents FROM order_summaries WHERE customer_id = 'boom'"), 40);
	fd_projector_stop(p);
	env_close(&e);
}

Test(projections, a_killed_projector_neither_loses_nor_repeats, .timeout = 180)
{
	struct env e = env_open();
	workload(&e, 1);
	fflush(NULL);
	pid_t child = fork();
	cr_assert_geq(child, 0);
	if (child == 0) {
		struct fd_projector *cp = NULL;
		struct fd_projector_config cfg = { .projections = SHOP_PROJECTIONS, .conninfo = e.url, .batch = 3, .idle_ms = 10 };
		if (fd_projector_start(&cfg, &cp) != FD_OK)
			_exit(2);
		for (pid_t parent = getppid(); getppid() == parent;)
			usleep(100000);
		_exit(0);
	}
	/* Let it get part-way, then kill it without warning while more events arrive.
	 * (If the parent fails first, the orphan notices and exits.) */
	time_t end = time(NULL) + 30;
	const char *progress = "SELECT coalesce(max(seq), 0) FROM projections WHERE name = 'order_summaries'";
	while (fd_test_scalar_at(e.url, progress) < 3 && time(NULL) < end)
		usleep(5000);
	workload(&e, 2);
	kill(child, SIGKILL);
	int status;
	waitpid(child, &status, 0);
	cr_assert(WIFSIGNALED(status));
	cr_assert_gt(fd_test_scalar_at(e.url, progress), 0, "the killed projector had started");
	struct fd_projector *p = projector_start(&e);
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	fd_projector_stop(p);
	env_close(&e);
}

Test(projections, one_projection_runs_in_one_place_and_fails_over, .timeout = 120)
{
	struct env e = env_open();
	struct fd_projector *a = projector_start(&e);
	wait_caught_up(&e, 30);
	struct fd_projector *b = projector_start(&e);
	workload(&e, 1);
	wait_caught_up(&e, 60);
	usleep(200000);
	/* Each projection's advisory lock is held by exactly one session. */
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
				   " AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
		     (long long)shop_app.nprojections);
	fd_projector_stop(a); /* the owner goes away: b must take over */
	workload(&e, 2);
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	fd_projector_stop(b);
	env_close(&e);
}

Test(projections, rebuild_swaps_in_a_complete_copy, .timeout = 120)
{
	struct env e = env_open();
	struct fd_projector *p = projector_start(&e);
	workload(&e, 1);
	wait_caught_up(&e, 60);
	/* Damage the live copy; a rebuild must replace it with a correct one. */
	fd_test_exec_at(e.url, "UPDATE order_summaries SET total_cents = -1");
	cr_assert_eq(fd_projection_request_rebuild(e.pool, SHOP_PROJECTIONS, "order_summaries"), FD_OK);
	cr_assert_eq(fd_projection_request_rebuild(e.pool, SHOP_PROJECTIONS, "nope"), FD_ERR_NOTFOUND);
	time_t end = time(NULL) + 60;
	while (rebuild_pending(e.url, "order_summaries")) {
		cr_assert_gt(fd_test_scalar_at(e.url, "SELECT count(*) FROM order_summaries"), 0, "readers never see an empty table");
		cr_assert(time(NULL) < end, "rebuild did not finish");
		usleep(10000);
	}
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM order_summaries WHERE total_cents < 0"), 0);
	fd_projector_stop(p);
	env_close(&e);
}

Test(projections, tables_of_an_older_version_are_served_untouched_until_their_rebuild_is_in, .timeout = 120)
{
	struct env e = env_open();
	const struct fd_projection *d = fd_app_projection(&shop_app, "order_summaries");
	struct fd_projector *p = projector_start(&e);
	workload(&e, 1);
	wait_caught_up(&e, 60);
	cr_assert_eq(table_version(e.url, "order_summaries"), d->version, "the projector stamps the tables it makes");
	fd_projector_stop(p);
	/*
	 * As an older factd left them: order_summaries made by the previous
	 * version (its totals marked, to tell its rows from rebuilt ones), and
	 * product_stock from before the stamps, which counts as version 1.
	 */
	stamp_orders(e.url, "order_summaries", d->version - 1);
	fd_test_exec_at(e.url, "UPDATE order_summaries SET total_cents = -1");
	fd_test_exec_at(e.url, "COMMENT ON TABLE product_stock IS NULL");
	long long stock_oid = fd_test_scalar_at(e.url, "SELECT 'product_stock'::regclass::oid::bigint");
	long long rows = fd_test_scalar_at(e.url, "SELECT count(*) FROM order_summaries");
	workload(&e, 2);
	p = projector_start(&e);
	/*
	 * Readers see the old rows, unchanged, until the copy is swapped in.
	 * 1: the old table as it was; 2: the new one.  (Locked first, as
	 * readers do, so the stamp and the rows are of the same table.)
	 */
	char sql[512];
	snprintf(sql, sizeof sql,
		 "BEGIN; LOCK TABLE order_summaries IN ACCESS SHARE MODE;"
		 " SELECT CASE WHEN v = %u THEN 2 WHEN v = %u AND n = %lld AND marked = n THEN 1 ELSE 0 END"
		 " FROM (SELECT substring(obj_description('order_summaries'::regclass, 'pg_class')"
		 "   FROM ' version ([0-9]+)$')::int AS v, count(*) AS n,"
		 "   count(*) FILTER (WHERE total_cents = -1) AS marked FROM order_summaries) s",
		 d->version, d->version - 1, rows);
	time_t end = time(NULL) + 60;
	long long seen;
	while ((seen = fd_test_scalar_at(e.url, sql)) == 1) {
		cr_assert(time(NULL) < end, "the old tables were not replaced");
		usleep(5000);
	}
	cr_assert_eq(seen, 2, "the old table was written to before it was replaced");
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT 'product_stock'::regclass::oid::bigint"), stock_oid,
		     "a table from before the stamps is of version 1 and kept");
	fd_projector_stop(p);
	env_close(&e);
}

Test(projections, tables_of_a_newer_version_are_left_to_the_newer_factd, .timeout = 120)
{
	struct env e = env_open();
	const struct fd_projection *d = fd_app_projection(&shop_app, "order_summaries");
	struct fd_projector *p = projector_start(&e);
	workload(&e, 1);
	wait_caught_up(&e, 60);
	fd_projector_stop(p);
	stamp_orders(e.url, "order_summaries", d->version + 1);
	const char *checkpoint = "SELECT seq FROM projections WHERE name = 'order_summaries'";
	long long at = fd_test_scalar_at(e.url, checkpoint), rows = fd_test_scalar_at(e.url, "SELECT count(*) FROM order_summaries");
	workload(&e, 2);
	p = projector_start(&e);
	cr_assert_eq(fd_projection_wait(e.pool, "product_stock", last_written, 30000), FD_OK, "the others run");
	usleep(500000);
	cr_assert_eq(fd_test_scalar_at(e.url, checkpoint), at, "order_summaries was run by an older definition");
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM order_summaries"), rows);
	cr_assert_eq(table_version(e.url, "order_summaries"), d->version + 1, "it was rebuilt to an older version");
	cr_assert(!rebuild_pending(e.url, "order_summaries"));
	/* Tables of this version again (the newer factd rolled back, say): it is taken and resumes. */
	stamp_orders(e.url, "order_summaries", d->version);
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	fd_projector_stop(p);
	env_close(&e);
}

Test(projections, a_copy_begun_by_another_version_is_started_over, .timeout = 120)
{
	struct env e = env_open();
	const struct fd_projection *d = fd_app_projection(&shop_app, "order_summaries");
	struct fd_projector *p = projector_start(&e);
	workload(&e, 1);
	wait_caught_up(&e, 60);
	fd_projector_stop(p);
	/*
	 * An older factd was rebuilding: its copy (empty, and so wrong) is at
	 * the end of the feed, so it would be swapped in as it is.
	 */
	fd_test_exec_at(e.url, "CREATE TABLE order_summaries_next (LIKE order_summaries INCLUDING ALL)");
	stamp_orders(e.url, "order_summaries_next", d->version - 1);
	fd_test_exec_at(e.url, "UPDATE projections SET rebuilding = true, rebuild_tx_id = tx_id, rebuild_seq = seq"
			" WHERE name = 'order_summaries'");
	p = projector_start(&e);
	wait_rebuilt(e.url);
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	cr_assert_eq(table_version(e.url, "order_summaries"), d->version);
	fd_projector_stop(p);
	env_close(&e);
}

/* Wait until order_summaries has applied everything written so far. */
static void wait_orders(struct env *e)
{
	cr_assert_eq(fd_projection_wait(e->pool, "order_summaries", last_written, 30000), FD_OK);
}

/* The order's summary and lines as "<line_count> <total_cents> [product:quantityxprice ...]". */
static void expect_order(const char *url, const char *id, const char *want)
{
	char sql[512];
	snprintf(sql, sizeof sql,
		 "SELECT s.line_count || ' ' || s.total_cents || ' [' || coalesce((SELECT string_agg(product_id || ':'"
		 " || quantity || 'x' || unit_price_cents, ' ' ORDER BY product_id) FROM order_summaries_lines l"
		 " WHERE l.order_id = s.order_id), '') || ']' FROM order_summaries s WHERE s.order_id = '%s'",
		 id);
	PGconn *c = fd_test_connect(url);
	PGresult *r = PQexec(c, sql);
	cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s", PQresultErrorMessage(r));
	cr_assert_str_eq(PQgetvalue(r, 0, 0), want);
	PQclear(r);
	PQfinish(c);
}

static void new_order(struct env *e, char id[FD_UUID_STRLEN + 1])
{
	struct fd_uuid u;
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	fd_uuid_format(&u, id);
	send_ok(e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "lines"));
}

static void add_line(struct env *e, const char *id, const char *sku, int quantity, int price)
{
	send_ok(e, &fd_order_type, id, "add_line",
		json_pack("{s:s, s:i, s:i}", "product_id", sku, "quantity", quantity, "unit_price_cents", price));
}

static void remove_line(struct env *e, const char *id, const char *sku)
{
	send_ok(e, &fd_order_type, id, "remove_line", json_pack("{s:s}", "product_id", sku));
}

Test(projections, a_line_is_added_grown_in_place_and_removed, .timeout = 60)
{
	struct env e = env_open();
	struct fd_projector *p = projector_start(&e);
	char id[FD_UUID_STRLEN + 1];
	new_order(&e, id);
	wait_orders(&e);
	expect_order(e.url, id, "0 0 []");
	add_line(&e, id, "p1", 2, 250);
	wait_orders(&e);
	expect_order(e.url, id, "1 500 [p1:2x250]");
	add_line(&e, id, "p2", 1, 1000);
	wait_orders(&e);
	expect_order(e.url, id, "2 1500 [p1:2x250 p2:1x1000]");
	/* the same product again: the one line grows, it is neither a second line nor counted twice */
	add_line(&e, id, "p1", 3, 250);
	wait_orders(&e);
	expect_order(e.url, id, "2 2250 [p1:5x250 p2:1x1000]");
	remove_line(&e, id, "p2");
	wait_orders(&e);
	expect_order(e.url, id, "1 1250 [p1:5x250]");
	remove_line(&e, id, "p1");
	wait_orders(&e);
	expect_order(e.url, id, "0 0 []");
	/* a removed product comes back as a new line, not on top of its old quantity */
	add_line(&e, id, "p2", 4, 10);
	wait_orders(&e);
	expect_order(e.url, id, "1 40 [p2:4x10]");
	fd_projector_stop(p);
	env_close(&e);
}

/* Delete a stream (soft or hard) through the store, as DELETE /streams/{stream} does. */
static void delete_stream(struct env *e, const char *stream, bool hard)
{
	struct fd_delete_result r;
	cr_assert_eq(fd_store_delete_stream(e->pool, stream, -1, hard, "{}", &r), FD_OK);
	if (fd_cursor_cmp(&r.position, &last_written) > 0)
		last_written = r.position;
}

Test(projections, a_deleted_stream_drops_its_rows_and_a_restarted_one_makes_them_anew, .timeout = 60)
{
	struct env e = env_open();
	struct fd_projector *p = projector_start(&e);
	char id[FD_UUID_STRLEN + 1], kept[FD_UUID_STRLEN + 1], stream[FD_STREAM_MAX + 1];
	new_order(&e, id);
	new_order(&e, kept);
	add_line(&e, id, "p1", 2, 250);
	add_line(&e, kept, "p1", 1, 100);
	send_ok(&e, &fd_product_type, "sku-del", "create", json_pack("{s:s, s:i}", "name", "Widget", "stock", 5));
	send_ok(&e, &fd_product_type, "sku-kept", "create", json_pack("{s:s, s:i}", "name", "Widget", "stock", 5));
	wait_caught_up(&e, 30);
	expect_order(e.url, id, "1 500 [p1:2x250]");
	snprintf(stream, sizeof stream, "order-%s", id);
	delete_stream(&e, stream, false);
	delete_stream(&e, "product-sku-del", true);
	wait_caught_up(&e, 30);
	char *q = fd_test_fmt("SELECT count(*) FROM order_summaries WHERE order_id = '%s'", id);
	cr_assert_eq(fd_test_scalar_at(e.url, q), 0, "the deleted order's summary is still there");
	free(q);
	q = fd_test_fmt("SELECT count(*) FROM order_summaries_lines WHERE order_id = '%s'", id);
	cr_assert_eq(fd_test_scalar_at(e.url, q), 0, "the deleted order's lines are still there");
	free(q);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM product_stock WHERE product_id = 'sku-del'"), 0);
	/* the others are untouched */
	expect_order(e.url, kept, "1 100 [p1:1x100]");
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM product_stock WHERE product_id = 'sku-kept'"), 1);
	/* a stream started again after its deletion gets its rows back from its new life */
	struct fd_event_in ev = { .type = "OrderCreated", .data_json = "{\"customer_id\":\"again\"}",
				  .metadata_json = "{}" };
	cr_assert_eq(fd_uuid_v7(&ev.event_id), FD_OK);
	struct fd_append_result ar;
	cr_assert_eq(fd_store_append(e.pool, stream, (struct fd_expected){ FD_EXPECT_NO_STREAM, 0 }, &ev, 1, &ar), FD_OK);
	last_written = ar.position;
	wait_caught_up(&e, 30);
	expect_order(e.url, id, "0 0 []");
	fd_projector_stop(p);
	env_close(&e);
}

Test(projections, line_count_and_total_after_many_line_events, .timeout = 120)
{
	struct env e = env_open();
	struct fd_projector *p = projector_start(&e);
	char id[FD_UUID_STRLEN + 1];
	new_order(&e, id);
	enum { PRODUCTS = 37 };
	long long quantity[PRODUCTS] = { 0 };
	for (int k = 0; k < 300; k++) {
		char sku[16];
		int i = k % 7 == 6 ? (k * 5) % PRODUCTS : (k * 11) % PRODUCTS;
		snprintf(sku, sizeof sku, "sku-%02d", i);
		if (k % 7 == 6 && quantity[i]) {
			remove_line(&e, id, sku);
			quantity[i] = 0;
		} else {
			add_line(&e, id, sku, 1 + k % 5, 100 + i);
			quantity[i] += 1 + k % 5;
		}
	}
	long long lines = 0, total = 0;
	for (int i = 0; i < PRODUCTS; i++) {
		lines += quantity[i] > 0;
		total += quantity[i] * (100 + i);
	}
	wait_orders(&e);
	char sql[256];
	snprintf(sql, sizeof sql, "SELECT line_count FROM order_summaries WHERE order_id = '%s'", id);
	cr_assert_eq(fd_test_scalar_at(e.url, sql), lines);
	snprintf(sql, sizeof sql, "SELECT total_cents FROM order_summaries WHERE order_id = '%s'", id);
	cr_assert_eq(fd_test_scalar_at(e.url, sql), total);
	fd_projector_stop(p);
	assert_equals_replay(&e);
	env_close(&e);
}

/* Keep a copy of order_summaries and its lines as they are now. */
static void keep_orders(const char *url)
{
	fd_test_exec_at(url, "CREATE TABLE kept_s AS TABLE order_summaries; CREATE TABLE kept_l AS TABLE order_summaries_lines");
}

/* order_summaries and its lines hold exactly the rows kept by keep_orders. */
static void assert_orders_as_kept(const char *url)
{
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM ((TABLE kept_s EXCEPT TABLE order_summaries)"
				 " UNION ALL (TABLE order_summaries EXCEPT TABLE kept_s)) d"),
		     0, "the summaries differ");
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM ((TABLE kept_l EXCEPT TABLE order_summaries_lines)"
				 " UNION ALL (TABLE order_summaries_lines EXCEPT TABLE kept_l)) d"),
		     0, "the lines differ");
}

Test(projections, a_rebuild_from_scratch_equals_incremental_processing, .timeout = 120)
{
	struct env e = env_open();
	struct fd_projector *p = projector_start(&e);
	workload(&e, 1); /* applied as it is written, a few events a batch */
	workload(&e, 2);
	wait_caught_up(&e, 60);
	keep_orders(e.url);
	cr_assert_eq(fd_projection_request_rebuild(e.pool, SHOP_PROJECTIONS, "order_summaries"), FD_OK);
	wait_rebuilt(e.url);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM order_summaries"), 24);
	cr_assert_gt(fd_test_scalar_at(e.url, "SELECT count(*) FROM order_summaries_lines"), 24);
	assert_orders_as_kept(e.url);
	fd_projector_stop(p);
	env_close(&e);
}

Test(projections, replaying_the_feed_over_current_rows_changes_nothing, .timeout = 120)
{
	struct env e = env_open();
	struct fd_projector *p = projector_start(&e);
	workload(&e, 1);
	/* a line removed and added again: its replayed removal must not take the new line */
	char id[FD_UUID_STRLEN + 1];
	new_order(&e, id);
	add_line(&e, id, "p1", 2, 100);
	add_line(&e, id, "p2", 1, 50);
	remove_line(&e, id, "p1");
	add_line(&e, id, "p1", 3, 100);
	wait_caught_up(&e, 60);
	fd_projector_stop(p);
	keep_orders(e.url);
	fd_test_exec_at(e.url, "UPDATE projections SET tx_id = '0', seq = 0 WHERE name = 'order_summaries'");
	p = projector_start(&e);
	wait_caught_up(&e, 60);
	assert_orders_as_kept(e.url);
	expect_order(e.url, id, "2 350 [p1:3x100 p2:1x50]");
	fd_projector_stop(p);
	env_close(&e);
}

/*
 * A replay over a row left at an older version (a checkpoint set back, say),
 * with a line since removed and another at an old quantity: the batch that
 * holds the order's whole history writes the order as it is now, its lines
 * too.
 */
Test(projections, a_replay_over_an_older_row_writes_the_order_as_it_is_now, .timeout = 120)
{
	struct env e = env_open();
	struct fd_projector *p = projector_start(&e);
	workload(&e, 1);
	char id[FD_UUID_STRLEN + 1];
	new_order(&e, id);
	add_line(&e, id, "p1", 2, 100);
	add_line(&e, id, "p2", 1, 50);
	remove_line(&e, id, "p2");
	add_line(&e, id, "p1", 3, 100);
	wait_caught_up(&e, 60);
	fd_projector_stop(p);
	keep_orders(e.url);
	expect_order(e.url, id, "1 500 [p1:5x100]");
	fd_test_exec_at(e.url, fd_test_P("UPDATE order_summaries SET version = 2, line_count = 2, total_cents = 250"
					 " WHERE order_id = '%s';"
					 " UPDATE order_summaries_lines SET quantity = 2 WHERE order_id = '%s';"
					 " INSERT INTO order_summaries_lines VALUES ('%s', 'p2', 1, 50);"
					 " UPDATE projections SET tx_id = '0', seq = 0 WHERE name = 'order_summaries'",
					 id, id, id));
	expect_order(e.url, id, "2 250 [p1:2x100 p2:1x50]");
	p = projector_start(&e);
	wait_caught_up(&e, 60);
	expect_order(e.url, id, "1 500 [p1:5x100]");
	assert_orders_as_kept(e.url);
	fd_projector_stop(p);
	env_close(&e);
}

/*
 * An installation from before order lines had their own table: the
 * order_summaries table of version 1 (no stamp), with each order's lines as
 * a jsonb document, current up to the head of the feed when factd stopped;
 * more orders are written before the new version starts.
 */
Test(projections, order_summaries_with_lines_in_a_document_are_rebuilt_with_line_rows, .timeout = 120)
{
	struct env e = env_open();
	workload(&e, 1);
	fd_test_exec_at(e.url, "CREATE TABLE order_summaries ("
			" order_id uuid PRIMARY KEY, customer_id text NOT NULL, status text NOT NULL,"
			" lines jsonb NOT NULL DEFAULT '{}', line_count int NOT NULL DEFAULT 0,"
			" total_cents bigint NOT NULL DEFAULT 0, created_at timestamptz NOT NULL,"
			" placed_at timestamptz, confirmed_at timestamptz, shipped_at timestamptz, cancelled_at timestamptz,"
			" cancel_reason text, version bigint NOT NULL, updated_at timestamptz NOT NULL);"
			" CREATE INDEX ON order_summaries (status, order_id);"
			" CREATE INDEX ON order_summaries (customer_id, order_id)");
	PGconn *c = fd_test_connect(e.url);
	for (int i = 0; i < 12; i++) {
		struct fd_order o;
		int64_t v;
		cr_assert_eq(fd_bus_load(e.bus, &fd_order_type, orders[i], NULL, &o, &v), FD_OK);
		json_t *lines = json_object();
		for (size_t k = 0; k < o.nlines; k++)
			json_object_set_new(lines, o.lines[k].product_id,
					    json_pack("{s:I, s:I}", "q", (json_int_t)o.lines[k].quantity, "p",
						      (json_int_t)o.lines[k].unit_price_cents));
		char *doc = json_dumps(lines, 0), count[24], total[24], version[24];
		snprintf(count, sizeof count, "%zu", o.nlines);
		snprintf(total, sizeof total, "%lld", (long long)fd_order_total_cents(&o));
		snprintf(version, sizeof version, "%lld", (long long)v);
		const char *params[] = { orders[i], o.customer_id, fd_order_status_name(o.status), doc, count, total,
					 version };
		PGresult *r = PQexecParams(c, "INSERT INTO order_summaries (order_id, customer_id, status, lines,"
					      " line_count, total_cents, created_at, version, updated_at)"
					      " VALUES ($1, $2, $3, $4, $5, $6, now(), $7, now())",
					   7, NULL, params, NULL, NULL, 0);
		cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
		PQclear(r);
		free(doc);
		json_decref(lines);
		fd_order_type.release(&o);
	}
	PQfinish(c);
	fd_test_exec_at(e.url, "INSERT INTO projections (name, tx_id, seq) SELECT 'order_summaries', tx_id, seq FROM events"
			" ORDER BY tx_id DESC, seq DESC LIMIT 1");
	workload(&e, 2);
	struct fd_projector *p = projector_start(&e);
	time_t end = time(NULL) + 60;
	while (table_version(e.url, "order_summaries") != fd_app_projection(&shop_app, "order_summaries")->version ||
	       rebuild_pending(e.url, "order_summaries")) {
		cr_assert(time(NULL) < end, "order_summaries was not rebuilt");
		usleep(10000);
	}
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM information_schema.columns"
				   " WHERE table_name = 'order_summaries' AND column_name = 'lines'"),
		     0, "the lines document is gone");
	wait_caught_up(&e, 60);
	assert_equals_replay(&e); /* the orders from before the upgrade and after, with their line rows */
	fd_projector_stop(p);
	env_close(&e);
}

Test(projections, wait_reaches_a_position_or_times_out)
{
	struct env e = env_open();
	struct fd_projector *p = projector_start(&e);
	struct fd_uuid u;
	char id[FD_UUID_STRLEN + 1];
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	fd_uuid_format(&u, id);
	struct fd_cmd_result r;
	json_t *pl = json_pack("{s:s}", "customer_id", "c");
	cr_assert_eq(fd_bus_send(e.bus, &fd_order_type, id, "create", pl, NULL, &r), FD_OK);
	json_decref(pl);
	cr_assert_eq(fd_projection_wait(e.pool, "order_summaries", r.position, 10000), FD_OK);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM order_summaries"), 1, "visible once the wait returns");
	struct fd_cursor future = { r.position.tx + 1000000, 1 };
	cr_assert_eq(fd_projection_wait(e.pool, "order_summaries", future, 200), FD_ERR_RETRY);
	fd_cmd_result_release(&r);
	fd_projector_stop(p);
	env_close(&e);
}

/*
 * Transaction ids that gain a digit (99 -> 100) must keep their numeric order:
 * a batch sorted by the text form would jump past events and lose them.
 */
Test(projections, batches_follow_numeric_transaction_order_across_a_digit_boundary, .timeout = 60)
{
	struct env e = env_open();
	char sql[1024];
	for (int i = 0; i < 24; i++) {
		char id[FD_UUID_STRLEN + 1];
		struct fd_uuid u;
		cr_assert_eq(fd_uuid_v7(&u), FD_OK);
		fd_uuid_format(&u, id);
		snprintf(sql, sizeof sql,
			 "INSERT INTO streams (stream_id, category, version) VALUES ('order-%s', 'order', 1);"
			 "INSERT INTO events (tx_id, event_id, stream_id, category, version, type, data)"
			 " VALUES ('%d'::xid8, gen_random_uuid(), 'order-%s', 'order', 1, 'OrderCreated',"
			 " '{\"customer_id\": \"c\"}')",
			 id, 88 + i, id);
		fd_test_exec_at(e.url, sql);
	}
	struct fd_projector *p = projector_start(&e); /* batches of 7 straddle tx 99 -> 100 */
	time_t end = time(NULL) + 30;
	while (fd_test_scalar_at(e.url, "SELECT count(*) FROM projections WHERE name = 'order_summaries' AND tx_id >= '111'::xid8") == 0) {
		cr_assert(time(NULL) < end, "the projector did not get past the inserted events");
		usleep(20000);
	}
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM order_summaries"), 24, "every event was applied");
	fd_projector_stop(p);
	env_close(&e);
}

/* ---- prepared statements -------------------------------------------------- */

static void run_on(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
		  PQresultErrorMessage(r));
	PQclear(r);
}

/* Make the projection's tables under the name `base`, as the projector does. */
static void create_as(PGconn *c, const struct fd_projection *d, const char *base)
{
	char *sql = fd_projection_sql(d->create_sql, base);
	cr_assert_not_null(sql);
	run_on(c, sql);
	free(sql);
}

/* Prepare the handler's statements for `table` on c, under the names the projector uses. */
static void prepare_as(PGconn *c, const struct fd_projection *d, const char *table)
{
	for (unsigned i = 0; d->statements[i]; i++) {
		char name[FD_PROJECTION_STATEMENT_NAME];
		cr_assert(fd_projection_statement_name(table, i, name));
		char *sql = fd_projection_sql(d->statements[i], table);
		PGresult *r = PQprepare(c, name, sql, 0, NULL);
		cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s: %s", name, PQresultErrorMessage(r));
		PQclear(r);
		free(sql);
	}
}

/* Apply one order event (data is taken) with the order_summaries handler to `table`, in a transaction of its own. */
static enum fd_err apply_order_event(PGconn *c, const char *table, const char *id, int64_t version, const char *type,
				     json_t *data)
{
	char stream[64];
	snprintf(stream, sizeof stream, "order-%s", id);
	struct fd_feed_event ev = {
		.event_id = "00000000-0000-7000-8000-000000000000",
		.stream = stream,
		.category = "order",
		.version = version,
		.type = type,
		.data = data,
		.recorded_at = "2026-01-01T00:00:00.000000Z",
	};
	run_on(c, "BEGIN");
	enum fd_err err = fd_app_projection(&shop_app, "order_summaries")->handle(c, table, &ev);
	run_on(c, err ? "ROLLBACK" : "COMMIT");
	json_decref(data);
	return err;
}

/* A new order with one line, written by the handler's statements into `table`; its id in id. */
static void order_with_a_line(PGconn *c, const char *table, char id[FD_UUID_STRLEN + 1])
{
	struct fd_uuid u;
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	fd_uuid_format(&u, id);
	cr_assert_eq(apply_order_event(c, table, id, 1, "OrderCreated", json_pack("{s:s}", "customer_id", table)), FD_OK,
		     "%s", PQerrorMessage(c));
	cr_assert_eq(apply_order_event(c, table, id, 2, "OrderLineAdded",
				       json_pack("{s:s, s:i, s:{s:i, s:s}}", "product_id", "p1", "quantity", 2, "unit_price",
						 "amount_cents", 5, "currency", "EUR")),
		     FD_OK, "%s", PQerrorMessage(c));
}

/* The number of summaries and of line rows in order_summaries under the name `base`, as "<summaries> <lines>". */
static void expect_rows(PGconn *c, const char *base, const char *want)
{
	char sql[256];
	snprintf(sql, sizeof sql, "SELECT (SELECT count(*) FROM %s) || ' ' || (SELECT count(*) FROM %s_lines)", base, base);
	PGresult *r = PQexec(c, sql);
	cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s", PQresultErrorMessage(r));
	cr_assert_str_eq(PQgetvalue(r, 0, 0), want, "%s", base);
	PQclear(r);
}

/*
 * The projector prepares the handlers' statements once per connection for
 * each table name, live and shadow, and keeps them across swaps.  That is
 * right only because PostgreSQL analyses a statement afresh, looking its
 * names up again, once a table it uses is dropped, renamed or altered: this
 * holds it to that on one connection, with the plans cached as generic ones
 * first (six executions each).
 */
Test(projections, prepared_handler_statements_follow_the_table_names_across_a_swap_and_a_drop, .timeout = 60)
{
	char *url = fd_test_db_new();
	PGconn *c = fd_test_connect(url);
	const struct fd_projection *d = fd_app_projection(&shop_app, "order_summaries");
	char id[FD_UUID_STRLEN + 1];
	create_as(c, d, "order_summaries");
	create_as(c, d, "order_summaries_next");
	prepare_as(c, d, "order_summaries");
	prepare_as(c, d, "order_summaries_next");
	for (int i = 0; i < 6; i++) {
		order_with_a_line(c, "order_summaries", id);
		order_with_a_line(c, "order_summaries_next", id);
	}
	expect_rows(c, "order_summaries", "6 6");
	expect_rows(c, "order_summaries_next", "6 6");
	/* The swap, as the projector makes it. */
	run_on(c, "BEGIN; DROP TABLE IF EXISTS order_summaries, order_summaries_lines;"
		  " ALTER TABLE order_summaries_next RENAME TO order_summaries;"
		  " ALTER TABLE order_summaries_next_lines RENAME TO order_summaries_lines; COMMIT");
	long long swapped_in = fd_test_scalar(c, "SELECT 'order_summaries'::regclass::oid::bigint");
	/* The live statements write the copy swapped in, in its own line table too. */
	order_with_a_line(c, "order_summaries", id);
	expect_rows(c, "order_summaries", "7 7");
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM order_summaries WHERE customer_id = 'order_summaries'"), 1,
		     "the old live table's rows are gone with it");
	/* The shadow statements write no table while there is no copy: not the one swapped in. */
	struct fd_uuid u;
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	fd_uuid_format(&u, id);
	cr_assert_neq(apply_order_event(c, "order_summaries_next", id, 1, "OrderCreated",
					json_pack("{s:s}", "customer_id", "nowhere")),
		      FD_OK, "a statement for order_summaries_next ran without such a table");
	expect_rows(c, "order_summaries", "7 7");
	/* The next rebuild's copy: the shadow statements write it. */
	create_as(c, d, "order_summaries_next");
	order_with_a_line(c, "order_summaries_next", id);
	expect_rows(c, "order_summaries_next", "1 1");
	expect_rows(c, "order_summaries", "7 7");
	/* A copy dropped and made again (a rebuild started over), and the live tables likewise. */
	run_on(c, "DROP TABLE order_summaries_next, order_summaries_next_lines");
	create_as(c, d, "order_summaries_next");
	order_with_a_line(c, "order_summaries_next", id);
	expect_rows(c, "order_summaries_next", "1 1");
	run_on(c, "DROP TABLE order_summaries, order_summaries_lines");
	create_as(c, d, "order_summaries");
	cr_assert_neq(fd_test_scalar(c, "SELECT 'order_summaries'::regclass::oid::bigint"), swapped_in);
	order_with_a_line(c, "order_summaries", id);
	expect_rows(c, "order_summaries", "1 1");
	expect_rows(c, "order_summaries_next", "1 1");
	PQfinish(c);
	free(url);
}

/* The backend of the session that runs projection `name` (holds its advisory lock); 0 when none does. */
static long long runner_pid(const char *url, const char *name)
{
	char sql[512];
	long long key = fd_lock_key("factd.projection:", name);
	snprintf(sql, sizeof sql,
		 "SELECT coalesce(max(pid), 0) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
		 " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
		 " AND classid::bigint = %lld AND objid::bigint = %lld",
		 key >> 32, key & 4294967295LL);
	return fd_test_scalar_at(url, sql);
}

/* Ask for a rebuild of order_summaries over a damaged live table and wait until it is swapped in. */
static void rebuild_orders(struct env *e)
{
	fd_test_exec_at(e->url, "UPDATE order_summaries SET total_cents = -1");
	cr_assert_eq(fd_projection_request_rebuild(e->pool, SHOP_PROJECTIONS, "order_summaries"), FD_OK);
	wait_rebuilt(e->url);
}

Test(projections, after_a_rebuild_events_land_in_the_new_tables_on_the_same_connection_and_a_fresh_one,
     .timeout = 180)
{
	struct env e = env_open();
	struct fd_projector *p = projector_start(&e);
	workload(&e, 1);
	wait_caught_up(&e, 60);
	long long pid = runner_pid(e.url, "order_summaries");
	cr_assert_gt(pid, 0);
	/* Swapped in: the live statements prepared before it write the new table. */
	rebuild_orders(&e);
	workload(&e, 2);
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	/*
	 * A second rebuild on the same connection: the shadow statements prepared
	 * for the first copy, now the live table, must fill the new copy, or it
	 * would be swapped in without the rows.
	 */
	rebuild_orders(&e);
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	workload(&e, 3);
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	cr_assert_eq(runner_pid(e.url, "order_summaries"), pid, "all of it ran on one connection");
	fd_projector_stop(p);
	/* A fresh projector, on new connections, over tables a rebuild swapped in. */
	p = projector_start(&e);
	workload(&e, 4);
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	cr_assert_neq(runner_pid(e.url, "order_summaries"), pid);
	rebuild_orders(&e);
	workload(&e, 5);
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	fd_projector_stop(p);
	env_close(&e);
}

/* End the sessions that run projections (hold advisory locks) in this database; returns how many. */
static long long cut_projector_sessions(PGconn *c, const char *only_while)
{
	char sql[512];
	snprintf(sql, sizeof sql,
		 "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted"
		 " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND (%s)",
		 only_while);
	return fd_test_scalar(c, sql);
}

Test(projections, a_projector_whose_connections_were_cut_prepares_its_statements_on_the_new_ones, .timeout = 180)
{
	struct env e = env_open();
	/* One event a batch, so that a rebuild takes many rounds and can be cut part-way. */
	struct fd_projector *p = NULL;
	struct fd_projector_config cfg = { .projections = SHOP_PROJECTIONS, .conninfo = e.url, .batch = 1, .idle_ms = 20 };
	cr_assert_eq(fd_projector_start(&cfg, &p), FD_OK);
	workload(&e, 1);
	wait_caught_up(&e, 60);
	PGconn *c = fd_test_connect(e.url);
	long long pid = runner_pid(e.url, "order_summaries");
	cr_assert_eq(cut_projector_sessions(c, "true"), (long long)shop_app.nprojections);
	workload(&e, 2);
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	long long again = runner_pid(e.url, "order_summaries");
	cr_assert(again != 0 && again != pid, "the projection runs on a new connection");
	/* Cut while the copy is being filled: its statements are prepared again too. */
	fd_test_exec_at(e.url, "UPDATE order_summaries SET total_cents = -1");
	cr_assert_eq(fd_projection_request_rebuild(e.pool, SHOP_PROJECTIONS, "order_summaries"), FD_OK);
	time_t end = time(NULL) + 60;
	while (cut_projector_sessions(c, "(SELECT rebuilding AND rebuild_tx_id > '0' FROM projections"
					 " WHERE name = 'order_summaries')") == 0) {
		cr_assert(rebuild_pending(e.url, "order_summaries"), "the rebuild ended before it could be cut");
		cr_assert(time(NULL) < end, "the rebuild did not start");
		usleep(1000);
	}
	PQfinish(c);
	wait_rebuilt(e.url);
	workload(&e, 3);
	wait_caught_up(&e, 60);
	assert_equals_replay(&e);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM order_summaries WHERE total_cents < 0"), 0);
	fd_projector_stop(p);
	env_close(&e);
}

/*
 * After five executions PostgreSQL may run a prepared statement on a generic
 * plan, made without the parameters' values and kept until its tables'
 * statistics change.  Made while they are tiny (here: a few rows, just
 * vacuumed), it would scan them however big they grow; under the projector's
 * session settings each handler statement's finds its rows by index.
 */
Test(projections, every_handler_statement_has_a_generic_plan_of_index_lookups_even_on_tiny_tables, .timeout = 60)
{
	char *url = fd_test_db_new();
	PGconn *c = fd_test_connect(url);
	for (size_t i = 0; i < shop_app.nprojections; i++)
		create_as(c, shop_app.projections[i], shop_app.projections[i]->table);
	run_on(c, "INSERT INTO order_summaries (order_id, customer_id, status, created_at, version, updated_at)"
		  " SELECT gen_random_uuid(), 'c', 'placed', now(), 3, now() FROM generate_series(1, 64);"
		  " INSERT INTO order_summaries_lines SELECT order_id, 'p' || k, 1, 100"
		  " FROM order_summaries, generate_series(1, 3) k;"
		  " INSERT INTO product_stock (product_id, name, available, version, updated_at)"
		  " SELECT 'sku-' || g, 'n', 10, 1, now() FROM generate_series(1, 10) g");
	run_on(c, "VACUUM ANALYZE");
	run_on(c, FD_PROJECTION_SESSION_SQL);
	run_on(c, "SET plan_cache_mode = force_generic_plan");
	for (size_t k = 0; k < shop_app.nprojections; k++) {
		const struct fd_projection *d = shop_app.projections[k];
		prepare_as(c, d, d->table);
		for (unsigned i = 0; d->statements[i]; i++) {
			char name[FD_PROJECTION_STATEMENT_NAME], sql[512];
			cr_assert(fd_projection_statement_name(d->table, i, name));
			PGresult *r = PQdescribePrepared(c, name);
			cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK);
			int o = snprintf(sql, sizeof sql, "EXPLAIN (COSTS OFF) EXECUTE \"%s\"", name);
			for (int n = 0; n < PQnparams(r); n++)
				o += snprintf(sql + o, sizeof sql - (size_t)o, "%sNULL", n ? ", " : "(");
			snprintf(sql + o, sizeof sql - (size_t)o, "%s", PQnparams(r) ? ")" : "");
			PQclear(r);
			r = PQexec(c, sql);
			cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
			char plan[16384] = "";
			for (int row = 0; row < PQntuples(r); row++) {
				size_t used = strlen(plan);
				snprintf(plan + used, sizeof plan - used, "%s\n", PQgetvalue(r, row, 0));
			}
			PQclear(r);
			cr_assert_null(strstr(plan, "Seq Scan"), "%s scans a table:\n%s", name, plan);
			/* a merge join reads a whole index in order: as slow as a scan once the table is big */
			cr_assert(!strstr(plan, "Merge Join") && !strstr(plan, "Hash Join"), "%s joins by scanning:\n%s",
				  name, plan);
			/* a batch statement reads its parameters as rows: unnest(...) AS u */
			cr_assert(strstr(plan, "$1") || strstr(plan, "Insert") || strstr(plan, "Function Scan on u"),
				  "%s: not a generic plan:\n%s", name, plan);
		}
	}
	PQfinish(c);
	free(url);
}

/* Scans of the projection tables so far, as "<sequential> <by index>". */
static void table_scans(const char *url, long long *seq, long long *idx)
{
	static const char *const where = " FROM pg_stat_user_tables"
					 " WHERE relname IN ('order_summaries', 'order_summaries_lines', 'product_stock')";
	char sql[256];
	snprintf(sql, sizeof sql, "SELECT coalesce(sum(seq_scan), 0)%s", where);
	*seq = fd_test_scalar_at(url, sql);
	snprintf(sql, sizeof sql, "SELECT coalesce(sum(idx_scan), 0)%s", where);
	*idx = fd_test_scalar_at(url, sql);
}

/* Stop a projector and wait until its sessions are gone (their table statistics are written as they end). */
static void projector_stop_and_wait(struct env *e, struct fd_projector *p)
{
	long long pids[2] = { runner_pid(e->url, "order_summaries"), runner_pid(e->url, "product_stock") };
	fd_projector_stop(p);
	char sql[256];
	snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid IN (%lld, %lld)", pids[0], pids[1]);
	time_t end = time(NULL) + 30;
	while (fd_test_scalar_at(e->url, sql) > 0) {
		cr_assert(time(NULL) < end, "the projector's sessions did not end");
		usleep(10000);
	}
}

Test(projections, the_projector_never_scans_its_tables_even_when_vacuumed_while_tiny, .timeout = 120)
{
	struct env e = env_open();
	struct fd_projector *p = projector_start(&e);
	char ids[4][FD_UUID_STRLEN + 1];
	send_ok(&e, &fd_product_type, "sku-1", "create", json_pack("{s:s, s:i}", "name", "Widget", "stock", 100));
	for (int i = 0; i < 4; i++) {
		new_order(&e, ids[i]);
		add_line(&e, ids[i], "p0", 1, 100);
	}
	wait_caught_up(&e, 60);
	projector_stop_and_wait(&e, p);
	fd_test_exec_at(e.url, "VACUUM ANALYZE order_summaries, order_summaries_lines, product_stock");
	/*
	 * Building a table's indexes counts as scanning it: wait for those of
	 * the first session, which made the tables, to be in the statistics.
	 */
	time_t end = time(NULL) + 30;
	while (fd_test_scalar_at(e.url, "SELECT count(*) FROM pg_stat_user_tables WHERE seq_scan > 0"
			     " AND relname IN ('order_summaries', 'order_summaries_lines', 'product_stock')") < 3) {
		cr_assert(time(NULL) < end, "the statistics of the tables' creation did not show");
		usleep(50000);
	}
	long long seq0, idx0, seq1, idx1;
	table_scans(e.url, &seq0, &idx0);
	/* New sessions plan the statements against the tiny tables' statistics, generic plans after five runs. */
	p = projector_start(&e);
	for (int k = 1; k <= 12; k++) {
		for (int i = 0; i < 4; i++)
			add_line(&e, ids[i], k % 3 ? "p1" : "p2", 1, k % 3 ? 100 : 200);
		send_ok(&e, &fd_product_type, "sku-1", "restock", json_pack("{s:i}", "quantity", k));
	}
	wait_caught_up(&e, 60);
	projector_stop_and_wait(&e, p);
	end = time(NULL) + 30;
	/* (Statistics are written shortly after a session ends: wait for those of the events' lookups.) */
	for (table_scans(e.url, &seq1, &idx1); seq1 + idx1 < seq0 + idx0 + 12 * 5; table_scans(e.url, &seq1, &idx1)) {
		cr_assert(time(NULL) < end, "the projector's table statistics did not show its lookups");
		usleep(50000);
	}
	cr_assert_eq(seq1, seq0, "the projector scanned its tables %lld times", seq1 - seq0);
	assert_equals_replay(&e);
	env_close(&e);
}

/* The projections' checkpoint rows as they are stored, row versions and locks included. */
static char *checkpoint_rows(const char *url)
{
	PGconn *c = fd_test_connect(url);
	PGresult *r = PQexec(c, "SELECT string_agg(name || ' ' || xmin || ' ' || xmax || ' ' || tx_id || '-' || seq"
				" || ' ' || updated_at, '; ' ORDER BY name) FROM projections");
	cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
	char *rows = strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(c);
	return rows;
}

/* Wait (60 s at most) until the feed's horizon has passed the transaction of `pos`. */
static void wait_visible(const char *url, struct fd_cursor pos)
{
	char sql[160];
	snprintf(sql, sizeof sql, "SELECT ('%llu'::xid8 < pg_snapshot_xmin(pg_current_snapshot()))::int",
		 (unsigned long long)pos.tx);
	for (long long end = fd_test_now_ms() + 60000; fd_test_scalar_at(url, sql) != 1;) {
		cr_assert_lt(fd_test_now_ms(), end, "the feed never showed transaction %llu", (unsigned long long)pos.tx);
		fd_test_sleep_ms(10);
	}
}

/* The cluster's sessions with a transaction id, for a failure's message (static buffer). */
static const char *cluster_xacts(const char *url)
{
	static char out[4096];
	PGconn *c = fd_test_connect(url);
	PGresult *r = PQexec(c, "SELECT coalesce(string_agg(format('%s/%s xid %s for %s s: %s', datname, application_name,"
				" backend_xid, round(extract(epoch FROM now() - xact_start)), left(query, 80)), '; '), 'none')"
				" FROM pg_stat_activity WHERE backend_xid IS NOT NULL");
	snprintf(out, sizeof out, "%s", PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
	return out;
}

/* Append one event to `stream` (made first when it is new). */
static void append_one(struct fd_pool *pool, const char *stream)
{
	struct fd_event_in ev = { .type = "Happened", .data_json = "{}", .metadata_json = "{}" };
	struct fd_append_result r;
	cr_assert_eq(fd_uuid_v7(&ev.event_id), FD_OK);
	cr_assert_eq(fd_store_append(pool, stream, (struct fd_expected){ FD_EXPECT_ANY, 0 }, &ev, 1, &r), FD_OK);
}

/*
 * Appends to categories no projection reads cost the projector no rounds,
 * and a quiet projection's timed rounds neither lock nor write its row; an
 * append to a category a projection reads wakes it at once (long before
 * its timed round).
 */
Test(projections, only_appends_to_a_projections_categories_wake_it, .timeout = 120)
{
	struct env e = env_open();
	struct fd_notifier *n = NULL;
	cr_assert_eq(fd_notifier_start(e.url, &n), FD_OK);
	fd_pool_set_notifier(e.pool, n);
	for (int i = 0; i < 500 && !fd_notifier_listening(n); i++)
		usleep(10000);
	cr_assert(fd_notifier_listening(n));
	/* Timed rounds every 60 s: only a NOTIFY can wake the projector within the test. */
	struct fd_projector *p = NULL;
	struct fd_projector_config cfg = { .projections = SHOP_PROJECTIONS, .conninfo = e.url, .batch = 50, .idle_ms = 60000 };
	cr_assert_eq(fd_projector_start(&cfg, &p), FD_OK);
	/*
	 * Its LISTEN session is up (in this database: another test's projector
	 * listening elsewhere in the cluster is no sign of this one's, and an
	 * append before this one listens wakes nobody), and its first rounds
	 * (at start) made both rows.
	 */
	time_t end = time(NULL) + 30;
	while (fd_test_scalar_at(e.url, "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN factd_events'"
			     " AND application_name <> 'factd-notify' AND state = 'idle'"
			     " AND datname = current_database()") < 1 ||
	       fd_test_scalar_at(e.url, "SELECT count(*) FROM projections WHERE owner IS NOT NULL") < 2) {
		cr_assert(time(NULL) < end, "the projector did not start");
		usleep(20000);
	}
	char id[FD_UUID_STRLEN + 1];
	new_order(&e, id);
	/*
	 * Woken long before its 60 s timed round.  The event can be held back
	 * for a while behind another database's open transaction (the feed's
	 * horizon is cluster-wide); the projector then looks again within a
	 * second until it shows.  So the bound counts from when the feed shows
	 * it, and stays well under the timed round.
	 */
	wait_visible(e.url, last_written);
	cr_assert_eq(fd_projection_wait(e.pool, "order_summaries", last_written, 20000), FD_OK,
		     "an order event did not wake order_summaries; the cluster's transactions: %s",
		     cluster_xacts(e.url));
	usleep(300000); /* the rounds that event started are over */
	char *before = checkpoint_rows(e.url);
	for (int i = 0; i < 40; i++) {
		char stream[32];
		snprintf(stream, sizeof stream, "bench-%d", i % 4);
		append_one(e.pool, stream);
		usleep(10000);
	}
	usleep(500000);
	char *after = checkpoint_rows(e.url);
	cr_assert_str_eq(after, before, "appends to another category touched a projection's row");
	free(after);
	/* An order event wakes order_summaries, whose round also moves past the other events. */
	add_line(&e, id, "p1", 2, 300);
	wait_visible(e.url, last_written);
	cr_assert_eq(fd_projection_wait(e.pool, "order_summaries", last_written, 20000), FD_OK,
		     "an order event did not wake order_summaries; the cluster's transactions: %s",
		     cluster_xacts(e.url));
	expect_order(e.url, id, "1 600 [p1:2x300]");
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM events e, projections p WHERE p.name = 'order_summaries'"
				   " AND (e.tx_id, e.seq) > (p.tx_id, p.seq)"),
		     0, "order_summaries stopped short of the other events");
	/* product_stock's row is still as it was: no product event came. */
	char *now = checkpoint_rows(e.url);
	cr_assert_not_null(strstr(before, "product_stock"));
	cr_assert_not_null(strstr(now, strstr(before, "product_stock")), "product_stock's row changed: %s", now);
	free(now);
	free(before);
	fd_projector_stop(p);

	/* Timed rounds every 20 ms on a quiet feed: read-only checks, the rows never change. */
	cfg.idle_ms = 20;
	cr_assert_eq(fd_projector_start(&cfg, &p), FD_OK);
	wait_caught_up(&e, 60);
	usleep(200000);
	before = checkpoint_rows(e.url);
	usleep(600000);
	after = checkpoint_rows(e.url);
	cr_assert_str_eq(after, before, "a quiet projection's rounds wrote or locked its row");
	free(after);
	free(before);
	fd_projector_stop(p);
	fd_pool_set_notifier(e.pool, NULL);
	fd_notifier_stop(n);
	env_close(&e);
}

/*
 * The status (GET /projections, and every /metrics scrape) counts the lag
 * through events_feed_idx from the checkpoint: it never reads the whole
 * events table, which the planner would otherwise choose for a range whose
 * bounds it cannot see (250 ms a call at 300,000 events).
 */
Test(projections, the_status_reads_the_lag_through_the_index, .timeout = 60)
{
	struct env e = env_open();
	char id[FD_UUID_STRLEN + 1];
	for (int i = 0; i < 3; i++) {
		new_order(&e, id);
		add_line(&e, id, "p1", 1, 100);
	}
	char *url = strdup(e.url);
	env_close(&e); /* its sessions end and write their table statistics */
	fd_test_exec_at(url, "ANALYZE events");
	const char *scans = "SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_user_tables WHERE relname = 'events'";
	const char *lookups = "SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_tables WHERE relname = 'events'";
	usleep(1500000);
	long long seq0 = fd_test_scalar_at(url, scans), idx0 = fd_test_scalar_at(url, lookups);
	struct fd_pool *pool = NULL;
	cr_assert_eq(fd_pool_new(url, 1, 10000, &pool), FD_OK);
	for (int i = 0; i < 5; i++) {
		json_t *st = NULL;
		cr_assert_eq(fd_projection_status(pool, SHOP_PROJECTIONS, &st), FD_OK);
		cr_assert_eq(json_array_size(st), shop_app.nprojections);
		/* No projector runs: every event is lag. */
		json_t *first = json_array_get(st, 0);
		cr_assert_eq(json_integer_value(json_object_get(first, "lag_events")), 6,
			     "lag %lld", (long long)json_integer_value(json_object_get(first, "lag_events")));
		cr_assert_gt(json_real_value(json_object_get(first, "lag_seconds")), 0.0);
		json_decref(st);
	}
	fd_pool_free(pool); /* the session ends and writes its statistics */
	time_t end = time(NULL) + 30;
	while (fd_test_scalar_at(url, lookups) < idx0 + 5) {
		cr_assert(time(NULL) < end, "the status's index lookups did not show in the statistics");
		usleep(50000);
	}
	cr_assert_eq(fd_test_scalar_at(url, scans), seq0, "the status read the events table from end to end");
	free(url);
}

/*
 * The batch handlers against the per-event ones: the shop's projections,
 * and copies of them without their batch handlers writing tables of their
 * own, follow the same feed, the whole workload in one batch (so every
 * order's creation, lines, status changes and its line removed and added
 * again land in one call) and then again event by event in batches of one.
 * Every row of every table must be the same, to the timestamps and versions.
 */
static const char *const compared_tables[][2] = {
	{ "order_summaries", "order_summaries_ev" },
	{ "order_summaries_lines", "order_summaries_ev_lines" },
	{ "product_stock", "product_stock_ev" },
};

static void assert_tables_equal(const char *url)
{
	for (size_t i = 0; i < sizeof compared_tables / sizeof compared_tables[0]; i++) {
		char sql[512];
		snprintf(sql, sizeof sql,
			 "SELECT count(*) FROM ((TABLE %s EXCEPT ALL TABLE %s) UNION ALL (TABLE %s EXCEPT ALL TABLE %s)) d",
			 compared_tables[i][0], compared_tables[i][1], compared_tables[i][1], compared_tables[i][0]);
		cr_assert_eq(fd_test_scalar_at(url, sql), 0, "%s and %s differ", compared_tables[i][0],
			     compared_tables[i][1]);
		snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", compared_tables[i][0]);
		cr_assert_gt(fd_test_scalar_at(url, sql), 0, "%s is empty", compared_tables[i][0]);
	}
}

static void batch_workload(struct env *e, char id[FD_UUID_STRLEN + 1])
{
	workload(e, 1);
	char other[FD_UUID_STRLEN + 1];
	new_order(e, id);
	new_order(e, other);
	/* interleaved orders; a line removed and added again at another price, twice */
	add_line(e, id, "p1", 2, 100);
	add_line(e, other, "p1", 1, 70);
	add_line(e, id, "p2", 1, 50);
	add_line(e, id, "p1", 1, 100);
	remove_line(e, id, "p1");
	add_line(e, other, "p9", 4, 10);
	add_line(e, id, "p1", 3, 120);
	remove_line(e, id, "p1");
	add_line(e, id, "p1", 5, 130);
	add_line(e, id, "p1", 1, 130);
	remove_line(e, other, "p9");
	send_ok(e, &fd_order_type, id, "place", json_object());
	send_ok(e, &fd_order_type, other, "cancel", json_pack("{s:s}", "reason", "first reason"));
	send_ok(e, &fd_order_type, id, "confirm", json_object());
	send_ok(e, &fd_order_type, id, "ship", json_object());
	/* a product made, moved every way, and another made after it in the same batch */
	send_ok(e, &fd_product_type, "sku-b1", "create", json_pack("{s:s, s:i}", "name", "Bolt", "stock", 40));
	send_ok(e, &fd_product_type, "sku-b1", "reserve", json_pack("{s:s, s:i}", "order_id", id, "quantity", 6));
	send_ok(e, &fd_product_type, "sku-b1", "restock", json_pack("{s:i}", "quantity", 9));
	send_ok(e, &fd_product_type, "sku-b1", "commit", json_pack("{s:s}", "order_id", id));
	send_ok(e, &fd_product_type, "sku-b2", "create", json_pack("{s:s, s:i}", "name", "Nut", "stock", 3));
	send_ok(e, &fd_product_type, "sku-b1", "reserve", json_pack("{s:s, s:i}", "order_id", other, "quantity", 2));
	send_ok(e, &fd_product_type, "sku-b1", "release", json_pack("{s:s}", "order_id", other));
}

static void start_both(struct env *e, unsigned batch, struct fd_projector **out)
{
	static struct fd_projection copies[2];
	static const struct fd_projection *items[4];
	static const char *const tables[][2] = { { "order_summaries_ev", "order_summaries_ev" },
						  { "product_stock_ev", "product_stock_ev" } };
	for (size_t i = 0; i < 2; i++) {
		copies[i] = *shop_app.projections[i];
		copies[i].name = tables[i][0];
		copies[i].table = tables[i][1];
		copies[i].handle_batch = NULL;
		cr_assert_not_null(shop_app.projections[i]->handle_batch, "%s has a batch handler",
				   shop_app.projections[i]->name);
		items[i] = shop_app.projections[i];
		items[2 + i] = &copies[i];
	}
	static struct fd_projection_set set = { items, 4 };
	struct fd_projector_config cfg = { .projections = &set, .conninfo = e->url, .batch = batch, .idle_ms = 20 };
	cr_assert_eq(fd_projector_start(&cfg, out), FD_OK);
}

static void wait_all(struct env *e)
{
	static const char *const names[] = { "order_summaries", "product_stock", "order_summaries_ev", "product_stock_ev" };
	for (size_t i = 0; i < 4; i++)
		cr_assert_eq(fd_projection_wait(e->pool, names[i], last_written, 60000), FD_OK, "%s did not catch up",
			     names[i]);
}

Test(projections, batch_handlers_write_what_the_per_event_handlers_write, .timeout = 180)
{
	struct env e = env_open();
	char id[FD_UUID_STRLEN + 1];
	batch_workload(&e, id);
	struct fd_projector *p = NULL;
	start_both(&e, 5000, &p);
	wait_all(&e);
	expect_order(e.url, id, "2 830 [p1:6x130 p2:1x50]");
	assert_tables_equal(e.url);
	assert_equals_replay(&e);
	fd_projector_stop(p);
	/* the same from the start with batches of one event: the batch handler's runs of one */
	fd_test_exec_at(e.url, "TRUNCATE order_summaries, order_summaries_lines, product_stock;"
			       " UPDATE projections SET tx_id = '0', seq = 0 WHERE name IN ('order_summaries', 'product_stock')");
	start_both(&e, 1, &p);
	wait_all(&e);
	assert_tables_equal(e.url);
	fd_projector_stop(p);
	/* and once more over the rows as they are: every event is at or below a row's version, nothing moves */
	fd_test_exec_at(e.url, "CREATE TABLE kept AS TABLE order_summaries; CREATE TABLE kept_lines AS TABLE order_summaries_lines;"
			       " CREATE TABLE kept_stock AS TABLE product_stock;"
			       " UPDATE projections SET tx_id = '0', seq = 0 WHERE name IN ('order_summaries', 'product_stock')");
	start_both(&e, 5000, &p);
	wait_all(&e);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT (SELECT count(*) FROM (TABLE kept EXCEPT ALL TABLE order_summaries) a)"
					      " + (SELECT count(*) FROM (TABLE kept_lines EXCEPT ALL TABLE order_summaries_lines) b)"
					      " + (SELECT count(*) FROM (TABLE kept_stock EXCEPT ALL TABLE product_stock) c)"),
		     0, "a replay over current rows changed them");
	assert_tables_equal(e.url);
	fd_projector_stop(p);
	env_close(&e);
}

/* What a batch handler passes: any text, NULLs and integers come back from PostgreSQL as they went in. */
Test(projections, array_literals_carry_any_text_to_postgresql)
{
	char *url = fd_test_db_new();
	PGconn *c = fd_test_connect(url);
	static const char *const values[] = { "plain", "", "with \"quotes\"", "back\\slash\\", "{braces},commas",
					      "NULL", " spaced ", "ünïcödé", "'single'", NULL };
	struct fd_pg_array a = FD_PG_ARRAY_INIT, n = FD_PG_ARRAY_INIT, empty = FD_PG_ARRAY_INIT;
	for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
		fd_pg_array_add(&a, values[i]);
	fd_pg_array_add_int(&n, -9223372036854775807LL - 1);
	fd_pg_array_add_int(&n, 42);
	const char *params[] = { fd_pg_array_text(&a), fd_pg_array_text(&n), fd_pg_array_text(&empty) };
	cr_assert(params[0] && params[1] && params[2]);
	PGresult *r = PQexecParams(c,
				   "SELECT u.v, u.v IS NULL, u.k FROM unnest($1::text[]) WITH ORDINALITY AS u(v, k)"
				   " UNION ALL SELECT x::text, false, 100 + k FROM unnest($2::bigint[]) WITH ORDINALITY AS t(x, k)"
				   " UNION ALL SELECT 'empty', false, 200 + cardinality($3::text[]) ORDER BY 3",
				   3, NULL, params, NULL, NULL, 0);
	cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
	size_t nv = sizeof values / sizeof values[0];
	cr_assert_eq((size_t)PQntuples(r), nv + 3);
	for (size_t i = 0; i < nv; i++) {
		if (!values[i])
			cr_assert_str_eq(PQgetvalue(r, (int)i, 1), "t", "element %zu is an SQL NULL", i);
		else
			cr_assert_str_eq(PQgetvalue(r, (int)i, 0), values[i]);
	}
	cr_assert_str_eq(PQgetvalue(r, (int)nv, 0), "-9223372036854775808");
	cr_assert_str_eq(PQgetvalue(r, (int)nv + 1, 0), "42");
	cr_assert_str_eq(PQgetvalue(r, (int)nv + 2, 2), "200", "an empty array is {}");
	PQclear(r);
	fd_pg_array_reset(&a);
	fd_pg_array_add(&a, "again");
	cr_assert_str_eq(fd_pg_array_text(&a), "{\"again\"}", "a reset array starts over");
	fd_pg_array_release(&a);
	fd_pg_array_release(&n);
	fd_pg_array_release(&empty);
	PQfinish(c);
	free(url);
}
