/*
 * test_append_batch.c - group commit of appends (src/store/batch.c) against a
 * real PostgreSQL: concurrent appends share transactions, yet each keeps its
 * own version check and answer; a bad request or a lost connection fails
 * nobody else; the feed still shows every stream in version order.
 *
 * To put chosen requests into one batch, a test stalls the batch in flight:
 * another connection holds a lock on the events table that blocks inserts,
 * so the first batch waits in the database while the next requests queue
 * behind it (one batch at a time: fd_pool_set_append_batches(pool, 1)).  The
 * test waits until the queue holds them all (fd_pool_stats' append_queue),
 * then releases the lock: the queued requests go as the next batch.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "factd/events.h"
#include "factd/pool.h"
#include "factd/uuid.h"
#include "testdb.h"
#include "testutil.h"

struct db {
	char *url;
	struct fd_pool *pool;
};

static struct db db_open(unsigned pool_size, unsigned batches)
{
	struct db d = { .url = fd_test_db_new() };
	cr_assert_eq(fd_pool_new(d.url, pool_size, 10000, &d.pool), FD_OK);
	fd_pool_set_append_batches(d.pool, batches);
	return d;
}

static void db_close(struct db *d)
{
	fd_pool_free(d->pool);
	free(d->url);
}

static void exec_ok(PGconn *c, const char *sql)
{
	PGresult *res = PQexec(c, sql);
	cr_assert(PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql,
		  PQerrorMessage(c));
	PQclear(res);
}

/* Create `stream` with one event (a new stream is never batched). */
static void create_stream(struct fd_pool *pool, const char *stream)
{
	struct fd_event_in e = { .type = "Created", .data_json = "{}", .metadata_json = "{}" };
	struct fd_append_result r;
	cr_assert_eq(fd_uuid_v7(&e.event_id), FD_OK);
	cr_assert_eq(fd_store_append(pool, stream, (struct fd_expected){ FD_EXPECT_NO_STREAM, 0 }, &e, 1, &r), FD_OK);
}

/* One append on its own thread. */
struct call {
	struct fd_pool *pool;
	const char *stream;
	struct fd_expected expected;
	const char *data;
	size_t n;
	const struct fd_uuid *ids; /* the events' ids, chosen by the caller (NULL: made by the store) */
	enum fd_err err;
	struct fd_append_result res;
	pthread_t th;
};

static void *call_run(void *arg)
{
	struct call *c = arg;
	struct fd_event_in evs[4];
	for (size_t i = 0; i < c->n; i++) {
		evs[i] = (struct fd_event_in){ .type = "Batched", .data_json = c->data, .metadata_json = "{}" };
		if (c->ids) {
			evs[i].event_id = c->ids[i];
			evs[i].id_given = true;
		} else if (fd_uuid_v7(&evs[i].event_id) != FD_OK) {
			c->err = FD_ERR_INTERNAL;
			return NULL;
		}
	}
	c->err = fd_store_append(c->pool, c->stream, c->expected, evs, c->n, &c->res);
	return NULL;
}

static void call_start(struct call *c)
{
	if (!c->n)
		c->n = 1;
	if (!c->data)
		c->data = "{\"k\":1}";
	cr_assert_eq(pthread_create(&c->th, NULL, call_run, c), 0);
}

static void wait_queue(struct fd_pool *pool, unsigned want)
{
	struct fd_pool_stats s;
	for (int i = 0; i < 2000; i++) {
		fd_pool_stats(pool, &s);
		if (s.append_queue >= want)
			return;
		fd_test_sleep_ms(5);
	}
	cr_assert_fail("the append queue never held %u requests (holds %u)", want, s.append_queue);
}

/* Backends of url's database blocked on a lock while running the batch statement. */
static long long stalled_batches(const char *url)
{
	return fd_test_scalar_at(url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
			   " AND wait_event_type = 'Lock' AND query LIKE 'WITH r AS (SELECT * FROM unnest%'");
}

/*
 * Hold a lock that blocks inserts into events, start `first` and wait until
 * its batch is stalled in the database.  Returns the holder (in a transaction).
 */
static PGconn *stall_first_batch(const struct db *d, struct call *first)
{
	PGconn *holder = fd_test_connect(d->url);
	exec_ok(holder, "BEGIN");
	exec_ok(holder, "LOCK TABLE events IN SHARE MODE");
	call_start(first);
	for (int i = 0; i < 2000 && stalled_batches(d->url) < 1; i++)
		fd_test_sleep_ms(5);
	cr_assert_eq(stalled_batches(d->url), 1, "the first batch never stalled on the lock");
	return holder;
}

/*
 * Stall `first`'s batch in the database, queue `calls` behind it, then let
 * them all go: the queued calls run as the next batch.  Every call has
 * ended when this returns.
 */
static void run_behind_a_stalled_batch(const struct db *d, struct call *first, struct call *calls, size_t n)
{
	PGconn *holder = stall_first_batch(d, first);
	for (size_t i = 0; i < n; i++)
		call_start(&calls[i]);
	wait_queue(d->pool, (unsigned)n);
	exec_ok(holder, "COMMIT");
	PQfinish(holder);
	pthread_join(first->th, NULL);
	for (size_t i = 0; i < n; i++)
		pthread_join(calls[i].th, NULL);
}

Test(append_batch, queued_requests_share_one_transaction_and_keep_their_own_answers, .timeout = 120)
{
	struct db d = db_open(4, 1);
	const char *streams[] = { "bat-0", "bat-1", "bat-2", "bat-3", "bat-4", "bat-5" };
	for (size_t i = 0; i < 6; i++)
		create_stream(d.pool, streams[i]);

	struct call first = { .pool = d.pool, .stream = "bat-0", .expected = { FD_EXPECT_EXACT, 1 } };
	struct call calls[] = {
		{ .pool = d.pool, .stream = "bat-1", .expected = { FD_EXPECT_EXACT, 1 } },          /* ok */
		{ .pool = d.pool, .stream = "bat-2", .expected = { FD_EXPECT_EXACT, 7 } },          /* conflict */
		{ .pool = d.pool, .stream = "bat-3", .expected = { FD_EXPECT_ANY, 0 }, .n = 3 },    /* ok, 3 events */
		{ .pool = d.pool, .stream = "bat-4", .expected = { FD_EXPECT_EXISTS, 0 } },         /* ok */
		{ .pool = d.pool, .stream = "bat-none", .expected = { FD_EXPECT_EXISTS, 0 } },      /* no stream */
		{ .pool = d.pool, .stream = "bat-5", .expected = { FD_EXPECT_EXACT, 1 }, .n = 2 },  /* ok, 2 events */
	};
	run_behind_a_stalled_batch(&d, &first, calls, sizeof calls / sizeof calls[0]);

	cr_assert_eq(first.err, FD_OK);
	cr_assert_eq(first.res.first_version, 2);

	/* The four that matched were written by one transaction, not the first one's. */
	const size_t oks[] = { 0, 2, 3, 5 };
	for (size_t j = 0; j < 4; j++) {
		const struct call *c = &calls[oks[j]];
		cr_assert_eq(c->err, FD_OK, "%s: %s", c->stream, fd_err_name(c->err));
		cr_assert_eq(c->res.first_version, 2, "%s", c->stream);
		cr_assert_eq(c->res.last_version, 1 + (int64_t)c->n, "%s", c->stream);
		cr_assert_eq(c->res.current_version, c->res.last_version);
		cr_assert_not(c->res.duplicate);
		cr_assert_eq(c->res.position.tx, calls[0].res.position.tx, "%s was not in the batch", c->stream);
		/* Its position is its own last event's. */
		char sql[256];
		snprintf(sql, sizeof sql,
			 "SELECT count(*) FROM events WHERE stream_id = '%s' AND version = %lld"
			 " AND tx_id = '%llu'::xid8 AND seq = %lld",
			 c->stream, (long long)c->res.last_version, (unsigned long long)c->res.position.tx,
			 (long long)c->res.position.seq);
		cr_assert_eq(fd_test_scalar_at(d.url, sql), 1, "position of %s", c->stream);
	}
	cr_assert_neq(calls[0].res.position.tx, first.res.position.tx);

	cr_assert_eq(calls[1].err, FD_ERR_CONFLICT);
	cr_assert_eq(calls[1].res.current_version, 1);
	cr_assert_eq(calls[4].err, FD_ERR_CONFLICT, "exists on a missing stream: %s", fd_err_name(calls[4].err));
	cr_assert_eq(calls[4].res.current_version, 0);

	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events WHERE stream_id = 'bat-2'"), 1);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM streams WHERE stream_id = 'bat-none'"), 0);
	/* 6 creations + first + 1 + 3 + 1 + 2 */
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events"), 14);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM streams s WHERE s.version <>"
				   " (SELECT max(version) FROM events e WHERE e.stream_id = s.stream_id)"),
		     0);
	db_close(&d);
}

/*
 * Requests whose event ids the caller chose (a command's idempotency key)
 * share a batch too.  A repeat of one already written is answered alone as
 * the duplicate it is: at its old expected version the batch finds it at
 * another version; at "any" its stored ids fail the batch statement, and
 * every request of that batch then goes alone and gets its own answer.
 */
Test(append_batch, requests_with_their_own_event_ids_are_batched_and_a_repeat_is_a_duplicate, .timeout = 120)
{
	struct db d = db_open(4, 1);
	const char *streams[] = { "idb-0", "idb-1", "idb-2", "idb-3" };
	for (size_t i = 0; i < 4; i++)
		create_stream(d.pool, streams[i]);
	struct fd_uuid ids[4][2];
	for (size_t i = 0; i < 4; i++)
		for (size_t k = 0; k < 2; k++)
			cr_assert_eq(fd_uuid_v7(&ids[i][k]), FD_OK);
	struct call earlier = { .pool = d.pool, .stream = "idb-3", .expected = { FD_EXPECT_EXACT, 1 }, .n = 2,
				.ids = ids[3] };
	call_start(&earlier);
	pthread_join(earlier.th, NULL);
	cr_assert_eq(earlier.err, FD_OK);
	cr_assert_eq(earlier.res.last_version, 3);

	struct call first = { .pool = d.pool, .stream = "idb-0", .expected = { FD_EXPECT_EXACT, 1 }, .ids = ids[0] };
	struct call calls[] = {
		{ .pool = d.pool, .stream = "idb-1", .expected = { FD_EXPECT_EXACT, 1 }, .n = 2, .ids = ids[1] },
		{ .pool = d.pool, .stream = "idb-2", .expected = { FD_EXPECT_ANY, 0 }, .n = 2, .ids = ids[2] },
		/* the earlier request again, at the version it was made for */
		{ .pool = d.pool, .stream = "idb-3", .expected = { FD_EXPECT_EXACT, 1 }, .n = 2, .ids = ids[3] },
	};
	run_behind_a_stalled_batch(&d, &first, calls, 3);

	cr_assert_eq(first.err, FD_OK);
	for (size_t i = 0; i < 2; i++) {
		cr_assert_eq(calls[i].err, FD_OK, "%s: %s", calls[i].stream, fd_err_name(calls[i].err));
		cr_assert_not(calls[i].res.duplicate);
		cr_assert_eq(calls[i].res.first_version, 2);
		cr_assert_eq(calls[i].res.last_version, 3);
	}
	cr_assert_eq(calls[0].res.position.tx, calls[1].res.position.tx, "the two were not written by one batch");
	cr_assert_neq(calls[0].res.position.tx, first.res.position.tx);
	cr_assert_eq(calls[2].err, FD_OK, "the repeat: %s", fd_err_name(calls[2].err));
	cr_assert(calls[2].res.duplicate, "the repeat was not answered as a duplicate");
	cr_assert_eq(calls[2].res.first_version, 2);
	cr_assert_eq(calls[2].res.last_version, 3);
	cr_assert_eq(fd_cursor_cmp(&calls[2].res.position, &earlier.res.position), 0);
	/* 4 creations + 2 earlier + first + 2 + 2, with the chosen ids */
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events"), 11);

	/* a repeat at "any" in one batch with a new request: both answered, the new one written once */
	struct fd_uuid more[1];
	cr_assert_eq(fd_uuid_v7(&more[0]), FD_OK);
	struct call first2 = { .pool = d.pool, .stream = "idb-0", .expected = { FD_EXPECT_ANY, 0 } };
	struct call second[] = {
		{ .pool = d.pool, .stream = "idb-1", .expected = { FD_EXPECT_EXACT, 3 }, .ids = more },
		{ .pool = d.pool, .stream = "idb-2", .expected = { FD_EXPECT_ANY, 0 }, .n = 2, .ids = ids[2] },
	};
	run_behind_a_stalled_batch(&d, &first2, second, 2);
	cr_assert_eq(first2.err, FD_OK);
	cr_assert_eq(second[0].err, FD_OK, "%s", fd_err_name(second[0].err));
	cr_assert_not(second[0].res.duplicate);
	cr_assert_eq(second[0].res.first_version, 4);
	cr_assert_eq(second[1].err, FD_OK, "the repeat at any: %s", fd_err_name(second[1].err));
	cr_assert(second[1].res.duplicate);
	cr_assert_eq(second[1].res.first_version, 2);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events"), 13);
	for (size_t i = 0; i < 3; i++) {
		char id[37];
		fd_uuid_format(&ids[i][0], id);
		cr_assert_eq(fd_test_scalar_at(d.url, fd_test_P("SELECT count(*) FROM events WHERE event_id = '%s'"
								" AND stream_id = '%s' AND version = 2",
								id, streams[i])),
			     1);
	}
	db_close(&d);
}

Test(append_batch, a_request_the_database_refuses_fails_alone, .timeout = 120)
{
	struct db d = db_open(4, 1);
	const char *streams[] = { "bad-0", "bad-1", "bad-2", "bad-3" };
	for (size_t i = 0; i < 4; i++)
		create_stream(d.pool, streams[i]);

	struct call first = { .pool = d.pool, .stream = "bad-0", .expected = { FD_EXPECT_EXACT, 1 } };
	struct call calls[] = {
		{ .pool = d.pool, .stream = "bad-1", .expected = { FD_EXPECT_EXACT, 1 } },
		{ .pool = d.pool, .stream = "bad-2", .expected = { FD_EXPECT_EXACT, 1 }, .data = "{not json" },
		{ .pool = d.pool, .stream = "bad-3", .expected = { FD_EXPECT_ANY, 0 } },
	};
	run_behind_a_stalled_batch(&d, &first, calls, 3);

	cr_assert_eq(first.err, FD_OK);
	cr_assert_eq(calls[0].err, FD_OK, "%s", fd_err_name(calls[0].err));
	cr_assert_eq(calls[0].res.first_version, 2);
	cr_assert_eq(calls[1].err, FD_ERR_INVAL, "%s", fd_err_name(calls[1].err));
	cr_assert_eq(calls[2].err, FD_OK, "%s", fd_err_name(calls[2].err));
	cr_assert_eq(calls[2].res.first_version, 2);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events WHERE stream_id = 'bad-2'"), 1);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT version FROM streams WHERE stream_id = 'bad-2'"), 1);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events"), 4 + 3);
	db_close(&d);
}

Test(append_batch, a_batch_whose_connection_dies_is_written_once, .timeout = 120)
{
	struct db d = db_open(4, 1);
	create_stream(d.pool, "lost-0");
	create_stream(d.pool, "lost-1");

	struct call first = { .pool = d.pool, .stream = "lost-0", .expected = { FD_EXPECT_EXACT, 1 }, .n = 2 };
	PGconn *holder = stall_first_batch(&d, &first);
	struct call second = { .pool = d.pool, .stream = "lost-1", .expected = { FD_EXPECT_EXACT, 1 } };
	call_start(&second);
	wait_queue(d.pool, 1);
	/* Kill the stalled batch's backend: its requests go alone and check their ids. */
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
				   " WHERE datname = current_database() AND wait_event_type = 'Lock'"
				   " AND query LIKE 'WITH r AS (SELECT * FROM unnest%'"),
		     1);
	fd_test_sleep_ms(100);
	exec_ok(holder, "COMMIT");
	PQfinish(holder);
	pthread_join(first.th, NULL);
	pthread_join(second.th, NULL);

	cr_assert_eq(first.err, FD_OK, "%s", fd_err_name(first.err));
	cr_assert_eq(first.res.first_version, 2);
	cr_assert_eq(first.res.last_version, 3);
	cr_assert_eq(second.err, FD_OK, "%s", fd_err_name(second.err));
	cr_assert_eq(second.res.first_version, 2);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events WHERE stream_id = 'lost-0'"), 3);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events WHERE stream_id = 'lost-1'"), 2);
	db_close(&d);
}

/*
 * The feed promises each stream's events in version order, and orders by
 * writing transaction id.  A batch must therefore never wait for a stream row
 * after it has its transaction id: here a batch for inv-x and inv-s meets
 * inv-x held by another transaction; a batch that waited (FOR UPDATE
 * without SKIP LOCKED) would let a later transaction append to inv-s
 * meanwhile and then write the next version of inv-s under its older id.
 */
Test(append_batch, a_batch_never_waits_for_a_stream_row, .timeout = 120)
{
	struct db d = db_open(4, 1);
	create_stream(d.pool, "inv-x"); /* before inv-s in the table, so a batch reaches it first */
	create_stream(d.pool, "inv-s");
	create_stream(d.pool, "inv-0");

	PGconn *row_holder = fd_test_connect(d.url);
	exec_ok(row_holder, "BEGIN");
	exec_ok(row_holder, "SELECT 1 FROM streams WHERE stream_id = 'inv-x' FOR UPDATE");
	struct call first = { .pool = d.pool, .stream = "inv-0", .expected = { FD_EXPECT_EXACT, 1 } };
	PGconn *holder = stall_first_batch(&d, &first);
	struct call x = { .pool = d.pool, .stream = "inv-x", .expected = { FD_EXPECT_EXACT, 1 } };
	struct call s = { .pool = d.pool, .stream = "inv-s", .expected = { FD_EXPECT_ANY, 0 } };
	call_start(&x);
	call_start(&s);
	wait_queue(d.pool, 2);
	exec_ok(holder, "COMMIT"); /* the batch of inv-x and inv-s runs */
	PQfinish(holder);
	pthread_join(first.th, NULL);
	fd_test_sleep_ms(300);

	/* Another transaction appends to inv-s now, alone (a client id). */
	struct fd_event_in e = { .type = "Later", .data_json = "{}", .metadata_json = "{}", .id_given = true };
	struct fd_append_result r;
	cr_assert_eq(fd_uuid_v7(&e.event_id), FD_OK);
	cr_assert_eq(fd_store_append(d.pool, "inv-s", (struct fd_expected){ FD_EXPECT_ANY, 0 }, &e, 1, &r), FD_OK);
	exec_ok(row_holder, "COMMIT");
	PQfinish(row_holder);
	pthread_join(x.th, NULL);
	pthread_join(s.th, NULL);

	cr_assert_eq(x.err, FD_OK, "%s", fd_err_name(x.err));
	cr_assert_eq(s.err, FD_OK, "%s", fd_err_name(s.err));
	cr_assert_eq(r.first_version, 3, "the later append came first");
	cr_assert_eq(s.res.first_version, 2);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM (SELECT version, lag(version) OVER"
				   " (PARTITION BY stream_id ORDER BY tx_id, seq) AS prev FROM events) o"
				   " WHERE prev IS NOT NULL AND version <> prev + 1"),
		     0, "a stream's events are out of version order in the feed");
	db_close(&d);
}

/* ---------------------------------------------------------------- under load */

#define LOAD_THREADS 12
#define LOAD_APPENDS 150
#define SHARED_STREAMS 3

struct load {
	struct fd_pool *pool;
	int no;
	enum fd_err failure;
	size_t ok, conflicts;
	uint64_t tx[LOAD_APPENDS];
};

/*
 * Each thread appends to its own stream at exact versions, and to shared
 * streams at whatever version it last saw (conflicts expected), every third
 * append with a client id (the single-append path) so both paths race.
 */
static void *load_run(void *arg)
{
	struct load *l = arg;
	char own[32];
	int64_t own_version = 1, shared_seen[SHARED_STREAMS] = { 1, 1, 1 };
	snprintf(own, sizeof own, "own-%d", l->no);
	for (int i = 0; i < LOAD_APPENDS && !l->failure; i++) {
		struct fd_event_in e = { .type = "Loaded", .data_json = "{\"x\":1}", .metadata_json = "{}",
					 .id_given = i % 3 == 2 };
		struct fd_append_result r;
		if (fd_uuid_v7(&e.event_id) != FD_OK) {
			l->failure = FD_ERR_INTERNAL;
			break;
		}
		enum fd_err err;
		if (i % 2 == 0) {
			err = fd_store_append(l->pool, own, (struct fd_expected){ FD_EXPECT_EXACT, own_version }, &e, 1, &r);
			if (!err && r.first_version != own_version + 1)
				err = FD_ERR_INTERNAL;
			if (!err)
				own_version = r.last_version;
		} else {
			int s = (l->no + i) % SHARED_STREAMS;
			char name[32];
			snprintf(name, sizeof name, "shared-%d", s);
			err = fd_store_append(l->pool, name, (struct fd_expected){ FD_EXPECT_EXACT, shared_seen[s] }, &e, 1,
					      &r);
			if (err == FD_ERR_CONFLICT) {
				if (r.current_version < shared_seen[s])
					err = FD_ERR_INTERNAL; /* a version never goes back */
				else {
					shared_seen[s] = r.current_version;
					l->conflicts++;
					continue;
				}
			} else if (!err) {
				if (r.first_version != shared_seen[s] + 1)
					err = FD_ERR_INTERNAL;
				shared_seen[s] = r.last_version;
			}
		}
		if (err) {
			l->failure = err;
			break;
		}
		l->tx[l->ok++] = r.position.tx;
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

Test(append_batch, under_load_versions_stay_exact_and_the_feed_in_version_order, .timeout = 300)
{
	struct db d = db_open(8, 2);
	struct load *loads = calloc(LOAD_THREADS, sizeof *loads);
	cr_assert(loads);
	char name[32];
	for (int s = 0; s < SHARED_STREAMS; s++) {
		snprintf(name, sizeof name, "shared-%d", s);
		create_stream(d.pool, name);
	}
	for (int t = 0; t < LOAD_THREADS; t++) {
		snprintf(name, sizeof name, "own-%d", t);
		create_stream(d.pool, name);
	}
	pthread_t th[LOAD_THREADS];
	for (int t = 0; t < LOAD_THREADS; t++) {
		loads[t] = (struct load){ .pool = d.pool, .no = t };
		cr_assert_eq(pthread_create(&th[t], NULL, load_run, &loads[t]), 0);
	}
	size_t written = 0, conflicts = 0;
	uint64_t *txs = calloc(LOAD_THREADS * LOAD_APPENDS, sizeof *txs);
	cr_assert(txs);
	for (int t = 0; t < LOAD_THREADS; t++) {
		pthread_join(th[t], NULL);
		cr_assert_eq(loads[t].failure, FD_OK, "thread %d: %s", t, fd_err_name(loads[t].failure));
		memcpy(txs + written, loads[t].tx, loads[t].ok * sizeof *txs);
		written += loads[t].ok;
		conflicts += loads[t].conflicts;
	}
	/* Batching happened: fewer transactions than appends. */
	qsort(txs, written, sizeof *txs, cmp_u64);
	size_t distinct = 0;
	for (size_t i = 0; i < written; i++)
		distinct += i == 0 || txs[i] != txs[i - 1];
	cr_log_info("%zu appends in %zu transactions, %zu conflicts", written, distinct, conflicts);
	cr_assert_lt(distinct, written, "no two appends shared a transaction");

	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events"), (long long)(written + SHARED_STREAMS + LOAD_THREADS));
	/* Every stream: versions 1..N, and its row agrees. */
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM (SELECT stream_id FROM events GROUP BY stream_id"
				   " HAVING count(*) <> max(version) OR min(version) <> 1) x"),
		     0);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM streams s WHERE s.version <>"
				   " (SELECT max(version) FROM events e WHERE e.stream_id = s.stream_id)"),
		     0);
	/* In feed order, each stream's events come in version order. */
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM (SELECT version, lag(version) OVER"
				   " (PARTITION BY stream_id ORDER BY tx_id, seq) AS prev FROM events) x"
				   " WHERE prev IS NOT NULL AND version <> prev + 1"),
		     0);
	free(txs);
	free(loads);
	db_close(&d);
}

Test(append_batch, batching_off_writes_every_append_alone, .timeout = 120)
{
	struct db d = db_open(8, 0);
	create_stream(d.pool, "off-0");
	create_stream(d.pool, "off-1");
	struct call calls[8];
	for (int i = 0; i < 8; i++) {
		calls[i] = (struct call){ .pool = d.pool, .stream = i % 2 ? "off-1" : "off-0",
					  .expected = { FD_EXPECT_ANY, 0 } };
		call_start(&calls[i]);
	}
	for (int i = 0; i < 8; i++) {
		pthread_join(calls[i].th, NULL);
		cr_assert_eq(calls[i].err, FD_OK);
	}
	/* Each append had a transaction of its own. */
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(DISTINCT tx_id) FROM events"), 2 + 8);
	db_close(&d);
}
