/*
 * test_bus.c - the command bus and aggregate loading against real PostgreSQL:
 * snapshots (equal state with, without, and with a stale-schema snapshot),
 * temporal loads, conflict retries, If-Match, idempotency keys, metadata.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "factd/bus.h"
#include "shop.h"
#include "factd/events.h"
#include "factd/pool.h"
#include "store/snapshots.h"
#include "testdb.h"

struct env {
	char *url;
	struct fd_pool *pool;
	struct fd_bus *bus;
};

static struct env env_open(int snapshot_every, unsigned retries)
{
	struct env e = { .url = fd_test_db_new() };
	cr_assert_eq(fd_pool_new(e.url, 8, 10000, &e.pool), FD_OK);
	struct fd_bus_config cfg = { .max_retries = retries, .snapshot_every = snapshot_every, .cache_entries = 256 };
	cr_assert_eq(fd_bus_new(e.pool, &cfg, &e.bus), FD_OK);
	return e;
}

static void env_close(struct env *e)
{
	fd_bus_free(e->bus);
	fd_pool_free(e->pool);
	free(e->url);
}

static const char *new_id(char buf[FD_UUID_STRLEN + 1])
{
	struct fd_uuid u;
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	fd_uuid_format(&u, buf);
	return buf;
}

static enum fd_err send_cmd(struct env *e, const struct fd_aggregate_type *t, const char *id, const char *cmd,
			    json_t *payload, const struct fd_cmd_meta *meta, struct fd_cmd_result *r)
{
	enum fd_err err = fd_bus_send(e->bus, t, id, cmd, payload, meta, r);
	json_decref(payload);
	return err;
}

static void must_send(struct env *e, const struct fd_aggregate_type *t, const char *id, const char *cmd,
		      json_t *payload)
{
	struct fd_cmd_result r;
	enum fd_err err = send_cmd(e, t, id, cmd, payload, NULL, &r);
	cr_assert_eq(err, FD_OK, "%s failed: %s (%s: %s)", cmd, fd_err_name(err), r.decision.slug, r.decision.detail);
	fd_cmd_result_release(&r);
}

/* The state of an aggregate as canonical JSON (its snapshot form). */
static json_t *state_json(struct env *e, const struct fd_aggregate_type *t, const char *id,
			  const struct fd_load_target *target, int64_t *version)
{
	void *s = malloc(t->state_size);
	enum fd_err err = fd_bus_load(e->bus, t, id, target, s, version);
	cr_assert_eq(err, FD_OK, "load: %s", fd_err_name(err));
	json_t *j = t->snapshot(s);
	t->release(s);
	free(s);
	cr_assert_not_null(j);
	return j;
}

/* Append `n` order events straight to the store in batches: created, then lines added and removed. */
static void build_long_order(struct env *e, const char *id, int n)
{
	char stream[FD_STREAM_MAX + 1];
	fd_bus_stream_name(&fd_order_type, id, stream, sizeof stream);
	enum { BATCH = 500 };
	static char data[BATCH][128];
	struct fd_event_in evs[BATCH];
	int v = 0;
	while (v < n) {
		int k = 0;
		for (; k < BATCH && v + k < n; k++) {
			int ver = v + k + 1;
			memset(&evs[k], 0, sizeof evs[k]);
			cr_assert_eq(fd_uuid_v7(&evs[k].event_id), FD_OK);
			evs[k].metadata_json = "{}";
			/* created; then per three versions: add A, add B, remove A (prices fixed per sku) */
			if (ver == 1) {
				evs[k].type = "OrderCreated";
				snprintf(data[k], sizeof data[k], "{\"customer_id\":\"c-long\"}");
			} else if (ver % 3 == 1) {
				evs[k].type = "OrderLineRemoved";
				snprintf(data[k], sizeof data[k], "{\"product_id\":\"sku-%d\"}", ((ver - 2) / 3) % 50);
			} else {
				int sku = ver % 3 == 2 ? (ver / 3) % 50 : (ver / 3 + 25) % 50;
				evs[k].type = "OrderLineAdded";
				snprintf(data[k], sizeof data[k],
					 "{\"product_id\":\"sku-%d\",\"quantity\":%d,\"unit_price_cents\":%d}", sku,
					 1 + ver % 7, 100 + sku);
			}
			evs[k].data_json = data[k];
		}
		struct fd_append_result r;
		enum fd_err err = fd_store_append(e->pool, stream, (struct fd_expected){ FD_EXPECT_EXACT, v }, evs,
						  (size_t)k, &r);
		cr_assert_eq(err, FD_OK, "append batch at %d: %s", v, fd_err_name(err));
		v += k;
	}
}

Test(bus_snapshots, ten_thousand_events_load_equal_with_and_without_snapshots, .timeout = 300)
{
	struct env e = env_open(100, 3);
	char id[FD_UUID_STRLEN + 1];
	new_id(id);
	build_long_order(&e, id, 10000);

	struct fd_load_target replay_all = { .no_snapshot = true };
	int64_t v_replay, v_snap, v_stale;
	json_t *replayed = state_json(&e, &fd_order_type, id, &replay_all, &v_replay);
	cr_assert_eq(v_replay, 10000);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM snapshots"), 0, "a full replay writes no snapshot");

	/* A latest load replays everything once and queues a snapshot of what it built. */
	json_t *first = state_json(&e, &fd_order_type, id, NULL, &v_snap);
	fd_bus_flush(e.bus);
	/* Of the order's snapshot schema: its own version plus its event types' (OrderLineAdded is at 2). */
	cr_assert_eq(fd_aggregate_snapshot_schema(&fd_order_type), 2);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM snapshots WHERE version = 10000 AND schema_version = 2"), 1);
	json_t *from_snapshot = state_json(&e, &fd_order_type, id, NULL, &v_snap);
	cr_assert_eq(v_snap, 10000);
	cr_assert(json_equal(replayed, first));
	cr_assert(json_equal(replayed, from_snapshot), "snapshot load differs from a full replay");

	/* A newer snapshot of another schema, with state this code cannot read, is ignored. */
	fd_test_exec_at(e.url, "INSERT INTO snapshots (stream_id, version, schema_version, state) "
			"SELECT stream_id, 10000, 0, '{\"garbage\": true}' FROM streams");
	fd_test_exec_at(e.url, "DELETE FROM snapshots WHERE schema_version = 2");
	json_t *stale = state_json(&e, &fd_order_type, id, NULL, &v_stale);
	cr_assert_eq(v_stale, 10000);
	cr_assert(json_equal(replayed, stale), "a stale-schema snapshot was misread");
	fd_bus_flush(e.bus);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM snapshots WHERE schema_version = 2"), 1,
		     "the stale snapshot is replaced by one of the current schema");

	json_decref(replayed);
	json_decref(first);
	json_decref(from_snapshot);
	json_decref(stale);
	env_close(&e);
}

Test(bus_snapshots, snapshot_written_every_n_events_after_commit)
{
	struct env e = env_open(10, 3);
	char id[FD_UUID_STRLEN + 1];
	new_id(id);
	must_send(&e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "c-1"));
	for (int i = 0; i < 24; i++)
		must_send(&e, &fd_order_type, id, "add_line",
			  json_pack("{s:s, s:i, s:i}", "product_id", "sku-a", "quantity", 1, "unit_price_cents", 5));
	fd_bus_flush(e.bus);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM snapshots WHERE version IN (10, 20)"), 2,
		     "a snapshot each time the version crosses a multiple of 10");
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT min(version) FROM snapshots"), 10, "none before 10 events");
	int64_t v;
	json_t *s = state_json(&e, &fd_order_type, id, NULL, &v);
	cr_assert_eq(v, 25);
	struct fd_load_target all = { .no_snapshot = true };
	json_t *r = state_json(&e, &fd_order_type, id, &all, &v);
	cr_assert(json_equal(s, r));
	json_decref(s);
	json_decref(r);
	env_close(&e);
}

Test(bus_snapshots, failed_snapshot_write_loses_nothing)
{
	struct env e = env_open(5, 3);
	fd_test_exec_at(e.url, "ALTER TABLE snapshots ADD CONSTRAINT refuse_all CHECK (false) NOT VALID");
	char id[FD_UUID_STRLEN + 1];
	new_id(id);
	must_send(&e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "c-1"));
	for (int i = 0; i < 12; i++)
		must_send(&e, &fd_order_type, id, "add_line",
			  json_pack("{s:s, s:i, s:i}", "product_id", "sku-b", "quantity", 2, "unit_price_cents", 7));
	fd_bus_flush(e.bus);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM snapshots"), 0);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM events"), 13);
	struct fd_order o;
	int64_t v;
	cr_assert_eq(fd_bus_load(e.bus, &fd_order_type, id, NULL, &o, &v), FD_OK);
	cr_assert_eq(v, 13);
	cr_assert_eq(o.nlines, 1);
	cr_assert_eq(o.lines[0].quantity, 24);
	fd_order_type.release(&o);
	env_close(&e);
}

Test(bus_temporal, version_and_time_targets_ignore_newer_snapshots, .timeout = 120)
{
	struct env e = env_open(10, 3);
	char id[FD_UUID_STRLEN + 1];
	new_id(id);
	must_send(&e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "c-t"));
	for (int i = 0; i < 14; i++)
		must_send(&e, &fd_order_type, id, "add_line",
			  json_pack("{s:s, s:i, s:i}", "product_id", "sku-t", "quantity", 1, "unit_price_cents", 3));
	usleep(30000);
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	int64_t cut = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
	usleep(30000);
	for (int i = 0; i < 10; i++)
		must_send(&e, &fd_order_type, id, "add_line",
			  json_pack("{s:s, s:i, s:i}", "product_id", "sku-t", "quantity", 1, "unit_price_cents", 3));
	fd_bus_flush(e.bus);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM snapshots WHERE version IN (10, 20)"), 2,
		     "snapshots at 10 and 20 exist");

	struct fd_order o;
	int64_t v;
	struct fd_load_target at_v = { .version = 7 };
	cr_assert_eq(fd_bus_load(e.bus, &fd_order_type, id, &at_v, &o, &v), FD_OK);
	cr_assert_eq(v, 7);
	cr_assert_eq(o.lines[0].quantity, 6, "version 7 = created + 6 lines");
	fd_order_type.release(&o);

	struct fd_load_target at_15 = { .version = 15 };
	struct fd_load_target at_15_replay = { .version = 15, .no_snapshot = true };
	json_t *a = state_json(&e, &fd_order_type, id, &at_15, &v);
	cr_assert_eq(v, 15);
	json_t *b = state_json(&e, &fd_order_type, id, &at_15_replay, &v);
	cr_assert(json_equal(a, b), "version 15 via snapshot 10 differs from a replay");
	json_decref(a);
	json_decref(b);

	struct fd_load_target at_time = { .at_time = true, .unix_us = cut };
	cr_assert_eq(fd_bus_load(e.bus, &fd_order_type, id, &at_time, &o, &v), FD_OK);
	cr_assert_eq(v, 15, "the state as of the cut is version 15");
	cr_assert_eq(o.lines[0].quantity, 14);
	fd_order_type.release(&o);

	struct fd_load_target before = { .at_time = true, .unix_us = 1000000 };
	cr_assert_eq(fd_bus_load(e.bus, &fd_order_type, id, &before, &o, &v), FD_OK);
	cr_assert_eq(v, 0, "the order did not exist in 1970");
	fd_order_type.release(&o);

	struct fd_load_target beyond = { .version = 26 };
	cr_assert_eq(fd_bus_load(e.bus, &fd_order_type, id, &beyond, &o, &v), FD_ERR_NOTFOUND);
	fd_order_type.release(&o);
	env_close(&e);
}

Test(bus_commands, refusals_invalid_payloads_and_unknown_commands_write_nothing)
{
	struct env e = env_open(-1, 3);
	char id[FD_UUID_STRLEN + 1];
	new_id(id);
	struct fd_cmd_result r;
	cr_assert_eq(send_cmd(&e, &fd_order_type, id, "place", json_object(), NULL, &r), FD_ERR_REJECTED);
	cr_assert_str_eq(r.decision.slug, "order-not-found");
	fd_cmd_result_release(&r);
	must_send(&e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "c-1"));
	cr_assert_eq(send_cmd(&e, &fd_order_type, id, "place", json_object(), NULL, &r), FD_ERR_REJECTED);
	cr_assert_str_eq(r.decision.slug, "order-empty");
	fd_cmd_result_release(&r);
	cr_assert_eq(send_cmd(&e, &fd_order_type, id, "add_line",
			      json_pack("{s:s, s:i, s:i}", "product_id", "sku-1", "quantity", 0, "unit_price_cents", 1),
			      NULL, &r),
		     FD_ERR_INVAL);
	cr_assert_str_eq(r.decision.field, "/quantity");
	fd_cmd_result_release(&r);
	cr_assert_eq(send_cmd(&e, &fd_order_type, id, "explode", json_object(), NULL, &r), FD_ERR_INVAL);
	fd_cmd_result_release(&r);
	cr_assert_eq(send_cmd(&e, &fd_order_type, "not-a-uuid", "create", json_pack("{s:s}", "customer_id", "x"),
			      NULL, &r),
		     FD_ERR_INVAL);
	fd_cmd_result_release(&r);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM events"), 1);
	env_close(&e);
}

Test(bus_commands, metadata_is_stamped_on_every_event)
{
	struct env e = env_open(-1, 3);
	char id[FD_UUID_STRLEN + 1];
	new_id(id);
	struct fd_cmd_meta meta = { .correlation_id = "corr-1", .causation_id = "cause-1", .request_id = "req-1",
				    .caller = "tester" };
	struct fd_cmd_result r;
	cr_assert_eq(send_cmd(&e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "c-1"), &meta, &r),
		     FD_OK);
	cr_assert_eq(r.version, 1);
	fd_cmd_result_release(&r);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM events WHERE metadata->>'correlation_id' = 'corr-1'"
				   " AND metadata->>'causation_id' = 'cause-1' AND metadata->>'request_id' = 'req-1'"
				   " AND metadata->>'caller' = 'tester' AND metadata->>'command' = 'create'"),
		     1);
	env_close(&e);
}

Test(bus_commands, if_match_mismatch_is_a_precondition_failure)
{
	struct env e = env_open(-1, 3);
	char id[FD_UUID_STRLEN + 1];
	new_id(id);
	must_send(&e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "c-1"));
	struct fd_cmd_meta stale = { .has_if_match = true, .if_match = 0 };
	struct fd_cmd_result r;
	cr_assert_eq(send_cmd(&e, &fd_order_type, id, "add_line",
			      json_pack("{s:s, s:i, s:i}", "product_id", "p", "quantity", 1, "unit_price_cents", 1),
			      &stale, &r),
		     FD_ERR_PRECONDITION);
	fd_cmd_result_release(&r);
	struct fd_cmd_meta fresh = { .has_if_match = true, .if_match = 1 };
	cr_assert_eq(send_cmd(&e, &fd_order_type, id, "add_line",
			      json_pack("{s:s, s:i, s:i}", "product_id", "p", "quantity", 1, "unit_price_cents", 1),
			      &fresh, &r),
		     FD_OK);
	cr_assert_eq(r.version, 2);
	fd_cmd_result_release(&r);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM events"), 2);
	env_close(&e);
}

static void idempotency_replays_and_detects_reuse(bool repeat_rare)
{
	struct env e = env_open(-1, 3);
	char id[FD_UUID_STRLEN + 1];
	new_id(id);
	must_send(&e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "c-1"));
	struct fd_cmd_meta meta = { .idempotency_key = "key-1", .request_hash = "hash-a", .repeat_rare = repeat_rare };
	struct fd_cmd_result r1, r2, r3;
	json_t *line = json_pack("{s:s, s:i, s:i}", "product_id", "p", "quantity", 1, "unit_price_cents", 1);
	cr_assert_eq(fd_bus_send(e.bus, &fd_order_type, id, "add_line", line, &meta, &r1), FD_OK);
	cr_assert_not(r1.replayed);
	/* The state moved on in between: the repeat must still answer with the first result. */
	must_send(&e, &fd_order_type, id, "add_line",
		  json_pack("{s:s, s:i, s:i}", "product_id", "q", "quantity", 1, "unit_price_cents", 1));
	cr_assert_eq(fd_bus_send(e.bus, &fd_order_type, id, "add_line", line, &meta, &r2), FD_OK);
	cr_assert(r2.replayed);
	cr_assert_eq(r2.version, r1.version);
	cr_assert_eq(fd_cursor_cmp(&r2.position, &r1.position), 0);
	struct fd_cmd_meta other = { .idempotency_key = "key-1", .request_hash = "hash-b", .repeat_rare = repeat_rare };
	cr_assert_eq(fd_bus_send(e.bus, &fd_order_type, id, "add_line", line, &other, &r3), FD_ERR_IDEMPOTENCY);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM events"), 3);
	fd_cmd_result_release(&r1);
	fd_cmd_result_release(&r2);
	fd_cmd_result_release(&r3);
	json_decref(line);
	env_close(&e);
}

Test(bus_commands, idempotency_key_replays_and_detects_reuse)
{
	idempotency_replays_and_detects_reuse(false);
}

/*
 * The same with repeat_rare (a saga step's commands): no look for the key
 * before deciding, and the same answers.  Also a repeat that the state its
 * first run left refuses (placing a placed order) or finds invalid (a line
 * of an order no longer a draft) is answered with that first run.
 */
Test(bus_commands, a_rare_repeat_is_found_by_its_outcome_and_answered_the_same)
{
	idempotency_replays_and_detects_reuse(true);
	struct env e = env_open(-1, 3);
	char id[FD_UUID_STRLEN + 1];
	new_id(id);
	must_send(&e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "c-1"));
	must_send(&e, &fd_order_type, id, "add_line",
		  json_pack("{s:s, s:i, s:i}", "product_id", "p", "quantity", 1, "unit_price_cents", 5));
	struct fd_cmd_meta meta = { .idempotency_key = "place-1", .request_hash = "h", .repeat_rare = true };
	struct fd_cmd_result r1, r2;
	json_t *none = json_object();
	cr_assert_eq(fd_bus_send(e.bus, &fd_order_type, id, "place", none, &meta, &r1), FD_OK);
	cr_assert_not(r1.replayed);
	cr_assert_eq(fd_bus_send(e.bus, &fd_order_type, id, "place", none, &meta, &r2), FD_OK, "%s", r2.decision.slug);
	cr_assert(r2.replayed);
	cr_assert_eq(r2.version, r1.version);
	fd_cmd_result_release(&r1);
	fd_cmd_result_release(&r2);
	/* a new key on the placed order: refused, nothing to replay */
	struct fd_cmd_meta fresh = { .idempotency_key = "place-2", .request_hash = "h", .repeat_rare = true };
	cr_assert_eq(fd_bus_send(e.bus, &fd_order_type, id, "place", none, &fresh, &r2), FD_ERR_REJECTED);
	fd_cmd_result_release(&r2);
	json_decref(none);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM events"), 3);
	env_close(&e);
}

struct race {
	struct env *e;
	const char *id;
	int thread;
	int per_thread;
	const char *key;  /* shared idempotency key, or NULL */
	bool rare;        /* send it with repeat_rare */
	int ok, conflicts, replays;
	int64_t versions[64];
};

static void *race_worker(void *arg)
{
	struct race *r = arg;
	for (int i = 0; i < r->per_thread; i++) {
		char sku[32];
		snprintf(sku, sizeof sku, "sku-%d-%d", r->thread, i);
		json_t *p = r->key ? json_pack("{s:s, s:i, s:i}", "product_id", "same", "quantity", 1, "unit_price_cents", 1)
				   : json_pack("{s:s, s:i, s:i}", "product_id", sku, "quantity", 1, "unit_price_cents", 1);
		struct fd_cmd_meta meta = { .idempotency_key = r->key, .request_hash = "h", .repeat_rare = r->rare };
		struct fd_cmd_result res;
		enum fd_err err = fd_bus_send(r->e->bus, &fd_order_type, r->id, "add_line", p, &meta, &res);
		json_decref(p);
		if (err == FD_OK) {
			if (res.replayed)
				r->replays++;
			else
				r->versions[r->ok++] = res.version;
		} else if (err == FD_ERR_CONFLICT) {
			r->conflicts++;
		} else {
			cr_log_error("thread %d: %s", r->thread, fd_err_name(err));
		}
		fd_cmd_result_release(&res);
	}
	return NULL;
}

enum { RACERS = 8 };

/*
 * RACERS threads each send n add_line commands to one new order (its id into
 * id); every command must succeed without a conflict reaching the caller.
 */
static void race_on_one_order(struct env *e, int n, struct race *r, char id[FD_UUID_STRLEN + 1])
{
	new_id(id);
	must_send(e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "c-1"));
	pthread_t th[RACERS];
	for (int i = 0; i < RACERS; i++) {
		r[i] = (struct race){ .e = e, .id = id, .thread = i, .per_thread = n };
		pthread_create(&th[i], NULL, race_worker, &r[i]);
	}
	int ok = 0;
	for (int i = 0; i < RACERS; i++) {
		pthread_join(th[i], NULL);
		ok += r[i].ok;
		cr_assert_eq(r[i].conflicts, 0, "thread %d met %d conflicts", i, r[i].conflicts);
	}
	cr_assert_eq(ok, RACERS * n);
	cr_assert_eq(fd_test_scalar_at(e->url, "SELECT count(*) FROM events"), 1 + RACERS * n);
}

/*
 * Commands on one aggregate in one process queue behind each other (the bus's
 * per-stream gate), each deciding on the state its predecessor left: with
 * no retries at all, none of them conflicts, with the aggregate cache on and off.
 */
static void one_process_never_conflicts(size_t cache_entries)
{
	struct env e = { .url = fd_test_db_new() };
	cr_assert_eq(fd_pool_new(e.url, 8, 10000, &e.pool), FD_OK);
	struct fd_bus_config cfg = { .max_retries = 0, .snapshot_every = -1, .cache_entries = cache_entries };
	cr_assert_eq(fd_bus_new(e.pool, &cfg, &e.bus), FD_OK);
	struct race r[RACERS];
	char id[FD_UUID_STRLEN + 1];
	race_on_one_order(&e, 20, r, id);
	env_close(&e);
}

Test(bus_concurrency, commands_on_one_aggregate_queue_instead_of_conflicting, .timeout = 300)
{
	one_process_never_conflicts(256);
	one_process_never_conflicts(0);
}

Test(bus_concurrency, eight_threads_on_one_order_lose_no_update, .timeout = 300)
{
	struct env e = env_open(-1, 50);
	enum { T = RACERS, N = 25 };
	struct race r[T];
	char id[FD_UUID_STRLEN + 1];
	race_on_one_order(&e, N, r, id);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(DISTINCT data->>'product_id') FROM events WHERE type = 'OrderLineAdded'"),
		     T * N, "every accepted command's event is in the stream exactly once");
	struct fd_order o;
	int64_t v;
	cr_assert_eq(fd_bus_load(e.bus, &fd_order_type, id, NULL, &o, &v), FD_OK);
	cr_assert_eq(v, 1 + T * N);
	cr_assert_eq(o.nlines, (size_t)(T * N));
	fd_order_type.release(&o);
	env_close(&e);
}

Test(bus_concurrency, exhausted_retries_report_conflict_and_write_nothing_extra, .timeout = 300)
{
	struct env e = env_open(-1, 0);
	char id[FD_UUID_STRLEN + 1];
	new_id(id);
	must_send(&e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "c-1"));
	enum { T = 8, N = 20 };
	pthread_t th[T];
	struct race r[T];
	for (int i = 0; i < T; i++) {
		r[i] = (struct race){ .e = &e, .id = id, .thread = i, .per_thread = N };
		pthread_create(&th[i], NULL, race_worker, &r[i]);
	}
	int ok = 0, conflicts = 0;
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		ok += r[i].ok;
		conflicts += r[i].conflicts;
	}
	cr_assert_eq(ok + conflicts, T * N, "every command either succeeded or reported a conflict");
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM events"), 1 + ok, "a conflict wrote nothing");
	env_close(&e);
}

static void one_key_from_many_threads(bool rare)
{
	struct env e = env_open(-1, 20);
	char id[FD_UUID_STRLEN + 1];
	new_id(id);
	must_send(&e, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "c-1"));
	enum { T = 6 };
	pthread_t th[T];
	struct race r[T];
	for (int i = 0; i < T; i++) {
		r[i] = (struct race){ .e = &e, .id = id, .thread = i, .per_thread = 3, .key = "shared-key", .rare = rare };
		pthread_create(&th[i], NULL, race_worker, &r[i]);
	}
	int ok = 0, replays = 0;
	for (int i = 0; i < T; i++) {
		pthread_join(th[i], NULL);
		ok += r[i].ok;
		replays += r[i].replays;
	}
	cr_assert_eq(ok, 1, "exactly one command recorded events");
	cr_assert_eq(ok + replays, T * 3);
	cr_assert_eq(fd_test_scalar_at(e.url, "SELECT count(*) FROM events"), 2);
	env_close(&e);
}

Test(bus_concurrency, one_idempotency_key_from_many_threads_records_once, .timeout = 120)
{
	one_key_from_many_threads(false);
}

Test(bus_concurrency, one_rare_repeat_key_from_many_threads_records_once, .timeout = 120)
{
	one_key_from_many_threads(true);
}

/* Two buses on one database stand for two factd processes, each with its own cache. */
Test(bus_cache, a_stale_cache_entry_costs_a_retry_never_an_outcome)
{
	struct env a = env_open(-1, 0);
	struct fd_bus *b = NULL;
	struct fd_bus_config cfg = { .max_retries = 0, .snapshot_every = -1, .cache_entries = 256 };
	cr_assert_eq(fd_bus_new(a.pool, &cfg, &b), FD_OK);
	struct env other = { .url = a.url, .pool = a.pool, .bus = b };
	char id[FD_UUID_STRLEN + 1];
	new_id(id);

	must_send(&a, &fd_order_type, id, "create", json_pack("{s:s}", "customer_id", "c-1")); /* a caches v1 */
	/* b adds a line behind a's back: a's cached state (no lines) is now stale. */
	must_send(&other, &fd_order_type, id, "add_line",
		  json_pack("{s:s, s:i, s:i}", "product_id", "p1", "quantity", 1, "unit_price_cents", 10));
	/* On a's stale state "place" would be refused as empty; it must be decided on the stored state. */
	struct fd_cmd_result r;
	cr_assert_eq(send_cmd(&a, &fd_order_type, id, "place", json_object(), NULL, &r), FD_OK,
		     "refused on a stale cached state: %s", r.decision.slug);
	cr_assert_eq(r.version, 3);
	fd_cmd_result_release(&r);

	/* a caches v3 (placed); b cancels (v4); a's stale "ship" ... is refused on the stored state too. */
	must_send(&other, &fd_order_type, id, "cancel", json_pack("{s:s}", "reason", "changed mind"));
	cr_assert_eq(send_cmd(&a, &fd_order_type, id, "cancel", json_pack("{s:s}", "reason", "again"), NULL, &r),
		     FD_ERR_REJECTED);
	cr_assert_str_eq(r.decision.slug, "order-cancelled", "decided on the stored state, not the cached one");
	fd_cmd_result_release(&r);

	/* With retries off, a stale entry on a legal command must still succeed (not a 409). */
	char id2[FD_UUID_STRLEN + 1];
	new_id(id2);
	must_send(&a, &fd_order_type, id2, "create", json_pack("{s:s}", "customer_id", "c-2"));
	must_send(&other, &fd_order_type, id2, "add_line",
		  json_pack("{s:s, s:i, s:i}", "product_id", "p1", "quantity", 1, "unit_price_cents", 10));
	cr_assert_eq(send_cmd(&a, &fd_order_type, id2, "add_line",
			      json_pack("{s:s, s:i, s:i}", "product_id", "p2", "quantity", 1, "unit_price_cents", 10),
			      NULL, &r),
		     FD_OK);
	cr_assert_eq(r.version, 3);
	fd_cmd_result_release(&r);
	struct fd_order o;
	int64_t v;
	cr_assert_eq(fd_bus_load(a.bus, &fd_order_type, id2, NULL, &o, &v), FD_OK);
	cr_assert_eq(o.nlines, 2, "both lines are kept");
	fd_order_type.release(&o);
	fd_bus_free(b);
	env_close(&a);
}
