/*
 * test_store.c - the event store and connection pool against a real
 * PostgreSQL: append/read round trips, every expected-version form,
 * idempotency, concurrency, the gap-safe feed, and connection failures.
 *
 * Each test gets its own database cloned from the migrated template.  The
 * feed's horizon (the oldest running transaction) is cluster-wide, so tests
 * that expect events to show up in the feed poll with a deadline: another
 * test's open transaction may briefly hold them back.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "factd/events.h"
#include "factd/jsonspan.h"
#include "factd/pool.h"
#include "factd/sql.h"
#include "testdb.h"
#include "testutil.h"

#define FEED_DEADLINE_MS 20000

struct db {
	char *url;
	struct fd_pool *pool;
};

static struct db db_open(unsigned pool_size)
{
	struct db d = { .url = fd_test_db_new() };
	cr_assert_eq(fd_pool_new(d.url, pool_size, 10000, &d.pool), FD_OK);
	return d;
}

static void db_close(struct db *d)
{
	fd_pool_free(d->pool);
	free(d->url);
}

static const char *dbname_of(const char *url)
{
	return strrchr(url, '/') + 1;
}

static struct fd_event_in ev(const char *type, const char *data)
{
	struct fd_event_in e = { .type = type, .data_json = data, .metadata_json = "{}" };
	cr_assert_eq(fd_uuid_v7(&e.event_id), FD_OK);
	return e;
}

static struct fd_event_in ev_id(const char *type, const char *data)
{
	struct fd_event_in e = ev(type, data);
	e.id_given = true;
	return e;
}

static const struct fd_expected any = { FD_EXPECT_ANY, 0 };

static struct fd_expected exact(int64_t v)
{
	return (struct fd_expected){ FD_EXPECT_EXACT, v };
}

static json_t *parse_json(const char *text)
{
	json_error_t jerr;
	json_t *j = json_loads(text, 0, &jerr);
	cr_assert(j, "invalid JSON (%s): %s", jerr.text, text);
	cr_assert(json_is_array(j), "expected an array: %s", text);
	return j;
}

static const char *jstr(json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));
	cr_assert(s, "member %s missing or not a string", key);
	return s;
}

static void uuid_str(const struct fd_uuid *u, char out[FD_UUID_STRLEN + 1])
{
	fd_uuid_format(u, out);
}

/* ---------------------------------------------------------------- append and read */

Test(store, append_and_read_round_trip)
{
	struct db d = db_open(2);
	/* Quotes, backslashes, braces, commas and non-ASCII exercise the array-literal quoting. */
	struct fd_event_in in[3] = {
		ev("OrderPlaced", "{\"total\": 1250, \"note\": \"say \\\"hi\\\", {ok}\"}"),
		ev("Item \"Added\", {x}\\y", "{\"path\": \"C:\\\\tmp\\\\a\", \"list\": [1, 2, 3]}"),
		ev("Caf\xc3\xa9Ordered", "{\"name\": \"caf\xc3\xa9 \xe2\x82\xac\", \"nested\": {\"a\": null}}"),
	};
	in[1].metadata_json = "{\"user\": \"alice\", \"quote\": \"\\\"\"}";
	in[2].metadata_json = NULL; /* defaults to {} */

	struct fd_append_result r;
	cr_assert_eq(fd_store_append(d.pool, "order-1", exact(0), in, 3, &r), FD_OK);
	cr_assert_eq(r.first_version, 1);
	cr_assert_eq(r.last_version, 3);
	cr_assert_not(r.duplicate);
	cr_assert_gt(r.position.tx, 0);
	cr_assert_gt(r.position.seq, 0);

	struct fd_stream_page page;
	cr_assert_eq(fd_store_read_stream(d.pool, "order-1", 0, 100, &page), FD_OK);
	cr_assert_eq(page.stream_version, 3);
	cr_assert_eq(page.count, 3);
	json_t *arr = parse_json(page.events_json);
	cr_assert_eq(json_array_size(arr), 3);
	for (size_t i = 0; i < 3; i++) {
		json_t *e = json_array_get(arr, i);
		char id[FD_UUID_STRLEN + 1];
		uuid_str(&in[i].event_id, id);
		cr_assert_str_eq(jstr(e, "event_id"), id);
		cr_assert_str_eq(jstr(e, "stream"), "order-1");
		cr_assert_str_eq(jstr(e, "type"), in[i].type);
		cr_assert_eq(json_integer_value(json_object_get(e, "version")), (json_int_t)i + 1);
		json_t *want = json_loads(in[i].data_json, 0, NULL);
		cr_assert(json_equal(json_object_get(e, "data"), want), "data of event %zu", i);
		json_decref(want);
		want = json_loads(in[i].metadata_json ? in[i].metadata_json : "{}", 0, NULL);
		cr_assert(json_equal(json_object_get(e, "metadata"), want), "metadata of event %zu", i);
		json_decref(want);
		cr_assert_eq(strlen(jstr(e, "recorded_at")), 27, "RFC 3339 with microseconds and Z");
		struct fd_cursor pos;
		cr_assert(fd_cursor_parse(jstr(e, "position"), &pos));
		cr_assert_eq(pos.tx, r.position.tx, "one transaction wrote all three");
	}
	struct fd_cursor last;
	cr_assert(fd_cursor_parse(jstr(json_array_get(arr, 2), "position"), &last));
	cr_assert_eq(fd_cursor_cmp(&last, &r.position), 0, "append reports the last event's position");
	json_decref(arr);
	free(page.events_json);

	cr_assert_eq(fd_store_append(d.pool, "order-1", exact(3), (struct fd_event_in[]){ ev("Shipped", "{}") }, 1, &r),
		     FD_OK);
	cr_assert_eq(r.first_version, 4);
	cr_assert_eq(r.last_version, 4);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events WHERE stream_id = 'order-1'"), 4);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM streams WHERE category = 'order'"), 1);
	db_close(&d);
}

/* The text of one SQL query's single value; caller frees. */
static char *query_text(const char *url, const char *sql)
{
	PGconn *c = fd_test_connect(url);
	PGresult *res = PQexec(c, sql);
	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(res));
	cr_assert_eq(PQntuples(res), 1);
	char *text = strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	PQfinish(c);
	return text;
}

/* PostgreSQL's JSON text (caller frees) without whitespace between tokens, in place. */
static char *compact(char *json)
{
	json[fd_json_compact(json, json, strlen(json))] = '\0';
	return json;
}

/*
 * Reads render events in C; the bytes must be those PostgreSQL's
 * fd_event_json and json_agg produce, without the whitespace between tokens
 * (responses are compact JSON).
 */
Test(store, reads_render_events_as_fd_event_json_does, .timeout = 120)
{
	struct db d = db_open(2);
	struct fd_event_in in[] = {
		ev("Plain", "{}"),
		ev("q\"uote \\back/slash", "{\"s\": \"tab\\there\\nnl \\\"q\\\" \\\\ \\/ \\u00e9 \\u001f \\u007f\"}"),
		ev("ctl\x01\x1f\b\f\n\r\t\x7f end", "{\"n\": [1.50, -0, 1e3, 12345678901234567890123, 0.000001]}"),
		ev("Caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "{\"nested\": {\"a\": null, \"b\": [true, false, {}, []]}, \"\": \"\"}"),
		ev("Last", "[1, \"two\", {\"three\": 3}]"),
	};
	size_t n = sizeof in / sizeof in[0];
	in[1].metadata_json = "{\"user\": \"alice\", \"quote\": \"\\\"\", \"deep\": {\"x\": [1, {\"y\": \"z\"}]}}";
	in[3].metadata_json = "{\"correlation_id\": \"c\\u00e9\"}";
	struct fd_append_result r;
	cr_assert_eq(fd_store_append(d.pool, "render-1", exact(0), in, n, &r), FD_OK);
	cr_assert_eq(fd_store_append(d.pool, "render-2", any, (struct fd_event_in[]){ ev("Other", "{\"k\": 1}") }, 1, &r),
		     FD_OK);
	/* Moments around the epochs, the start of a day and the ends of the supported years. */
	fd_test_exec_at(d.url, "UPDATE events SET recorded_at = CASE version"
			" WHEN 1 THEN timestamptz '2000-01-01 00:00:00+00'"
			" WHEN 2 THEN timestamptz '1999-12-31 23:59:59.999999+00'"
			" WHEN 3 THEN timestamptz '1970-01-01 00:00:00.000001+00'"
			" WHEN 4 THEN timestamptz '0099-02-28 12:00:00.5+00'"
			" ELSE timestamptz '9999-12-31 23:59:59.999999+00' END"
			" WHERE stream_id = 'render-1'");

	struct fd_stream_page page;
	for (int64_t from = 0; from <= 6; from += 3) {
		cr_assert_eq(fd_store_read_stream(d.pool, "render-1", from, 100, &page), FD_OK);
		char sql[256];
		snprintf(sql, sizeof sql,
			 "SELECT coalesce(json_agg(fd_event_json(e) ORDER BY e.version), '[]')::text"
			 " FROM events e WHERE e.stream_id = 'render-1' AND e.version >= %lld",
			 (long long)from);
		char *want = compact(query_text(d.url, sql));
		cr_assert_str_eq(page.events_json, want, "stream from version %lld", (long long)from);
		free(want);
		free(page.events_json);
	}

	/* The feed, filtered to these streams' category: poll until the horizon passes them. */
	struct fd_feed_filter filter = { .category = "render" };
	struct fd_feed_page fp = { 0 };
	long long deadline = fd_test_now_ms() + FEED_DEADLINE_MS;
	for (;;) {
		cr_assert_eq(fd_store_read_feed(d.pool, (struct fd_cursor){ 0, 0 }, &filter, 100, &fp), FD_OK);
		if (fp.count == n + 1)
			break;
		cr_assert_lt(fd_test_now_ms(), deadline, "the feed did not show the events in time");
		free(fp.events_json);
		fd_test_sleep_ms(20);
	}
	char *want = compact(query_text(d.url, "SELECT json_agg(fd_event_json(e) ORDER BY e.tx_id, e.seq)::text"
					       " FROM events e WHERE e.category = 'render'"));
	cr_assert_str_eq(fp.events_json, want, "feed");
	free(want);
	free(fp.events_json);
	db_close(&d);
}

Test(store, expected_version_forms)
{
	struct db d = db_open(2);
	struct fd_append_result r;
	struct fd_event_in e;

	/* exact 0 on a missing stream creates it */
	e = ev("A", "{}");
	cr_assert_eq(fd_store_append(d.pool, "exp-1", exact(0), &e, 1, &r), FD_OK);
	cr_assert_eq(r.last_version, 1);
	/* exact 0 on an existing stream conflicts */
	e = ev("A", "{}");
	cr_assert_eq(fd_store_append(d.pool, "exp-1", exact(0), &e, 1, &r), FD_ERR_CONFLICT);
	cr_assert_eq(r.current_version, 1);
	/* exact match */
	e = ev("A", "{}");
	cr_assert_eq(fd_store_append(d.pool, "exp-1", exact(1), &e, 1, &r), FD_OK);
	cr_assert_eq(r.first_version, 2);
	/* exact mismatch, both lower and higher, reports the current version */
	e = ev("A", "{}");
	cr_assert_eq(fd_store_append(d.pool, "exp-1", exact(1), &e, 1, &r), FD_ERR_CONFLICT);
	cr_assert_eq(r.current_version, 2);
	cr_assert_eq(fd_store_append(d.pool, "exp-1", exact(7), &e, 1, &r), FD_ERR_CONFLICT);
	cr_assert_eq(r.current_version, 2);
	/* exact non-zero on a missing stream conflicts with current 0 */
	cr_assert_eq(fd_store_append(d.pool, "exp-2", exact(3), &e, 1, &r), FD_ERR_CONFLICT);
	cr_assert_eq(r.current_version, 0);
	/* no_stream */
	cr_assert_eq(fd_store_append(d.pool, "exp-1", (struct fd_expected){ FD_EXPECT_NO_STREAM, 0 }, &e, 1, &r),
		     FD_ERR_CONFLICT);
	cr_assert_eq(r.current_version, 2);
	cr_assert_eq(fd_store_append(d.pool, "exp-3", (struct fd_expected){ FD_EXPECT_NO_STREAM, 0 }, &e, 1, &r),
		     FD_OK);
	cr_assert_eq(r.first_version, 1);
	/* exists */
	e = ev("A", "{}");
	cr_assert_eq(fd_store_append(d.pool, "exp-4", (struct fd_expected){ FD_EXPECT_EXISTS, 0 }, &e, 1, &r),
		     FD_ERR_CONFLICT);
	cr_assert_eq(r.current_version, 0);
	cr_assert_eq(fd_store_append(d.pool, "exp-1", (struct fd_expected){ FD_EXPECT_EXISTS, 0 }, &e, 1, &r),
		     FD_OK);
	cr_assert_eq(r.first_version, 3);
	/* any, on a missing and on an existing stream */
	e = ev("A", "{}");
	cr_assert_eq(fd_store_append(d.pool, "exp-5", any, &e, 1, &r), FD_OK);
	cr_assert_eq(r.first_version, 1);
	e = ev("A", "{}");
	cr_assert_eq(fd_store_append(d.pool, "exp-5", any, &e, 1, &r), FD_OK);
	cr_assert_eq(r.first_version, 2);

	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events"), 6);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM streams WHERE stream_id IN ('exp-2', 'exp-4')"), 0,
		     "a conflict must not create the stream");
	db_close(&d);
}

Test(store, nothing_written_on_conflict)
{
	struct db d = db_open(1);
	struct fd_append_result r;
	struct fd_event_in first[2] = { ev("A", "{}"), ev("B", "{}") };
	cr_assert_eq(fd_store_append(d.pool, "c-1", any, first, 2, &r), FD_OK);
	struct fd_event_in batch[5] = { ev("X", "{}"), ev("X", "{}"), ev("X", "{}"), ev("X", "{}"), ev("X", "{}") };
	cr_assert_eq(fd_store_append(d.pool, "c-1", exact(1), batch, 5, &r), FD_ERR_CONFLICT);
	cr_assert_eq(r.current_version, 2);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events"), 2);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT version FROM streams WHERE stream_id = 'c-1'"), 2);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events WHERE type = 'X'"), 0);
	db_close(&d);
}

Test(store, idempotent_repeat_with_client_ids)
{
	struct db d = db_open(2);
	struct fd_append_result r1, r2;
	struct fd_event_in pre = ev("Pre", "{}");
	cr_assert_eq(fd_store_append(d.pool, "idem-1", any, &pre, 1, &r1), FD_OK);
	struct fd_event_in in[2] = { ev_id("A", "{\"n\": 1}"), ev_id("B", "{\"n\": 2}") };
	cr_assert_eq(fd_store_append(d.pool, "idem-1", exact(1), in, 2, &r1), FD_OK);
	cr_assert_not(r1.duplicate);
	cr_assert_eq(r1.first_version, 2);

	/* The same request again (its expected version is stale by now). */
	cr_assert_eq(fd_store_append(d.pool, "idem-1", exact(1), in, 2, &r2), FD_OK);
	cr_assert(r2.duplicate);
	cr_assert_eq(r2.first_version, r1.first_version);
	cr_assert_eq(r2.last_version, r1.last_version);
	cr_assert_eq(fd_cursor_cmp(&r2.position, &r1.position), 0);
	/* ... and with another expected form */
	cr_assert_eq(fd_store_append(d.pool, "idem-1", any, in, 2, &r2), FD_OK);
	cr_assert(r2.duplicate);
	cr_assert_eq(r2.last_version, 3);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events"), 3, "a repeat writes nothing");
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT version FROM streams"), 3);
	db_close(&d);
}

Test(store, reused_ids_elsewhere_are_duplicates)
{
	struct db d = db_open(2);
	struct fd_append_result r;
	struct fd_event_in in[2] = { ev_id("A", "{}"), ev_id("B", "{}") };
	cr_assert_eq(fd_store_append(d.pool, "dup-1", any, in, 2, &r), FD_OK);

	/* one known id plus a new one */
	struct fd_event_in partial[2] = { in[0], ev_id("C", "{}") };
	cr_assert_eq(fd_store_append(d.pool, "dup-1", any, partial, 2, &r), FD_ERR_DUPLICATE);
	/* the same ids in another order (other versions) */
	struct fd_event_in swapped[2] = { in[1], in[0] };
	cr_assert_eq(fd_store_append(d.pool, "dup-1", any, swapped, 2, &r), FD_ERR_DUPLICATE);
	/* a new id first, then a known one: the known one would land at another version */
	struct fd_event_in shifted[2] = { ev_id("E", "{}"), in[0] };
	cr_assert_eq(fd_store_append(d.pool, "dup-1", any, shifted, 2, &r), FD_ERR_DUPLICATE);
	/* (a contiguous run of already-stored ids, such as in[1] alone, is an idempotent repeat) */
	cr_assert_eq(fd_store_append(d.pool, "dup-1", any, &in[1], 1, &r), FD_OK);
	cr_assert(r.duplicate);
	cr_assert_eq(r.first_version, 2);
	cr_assert_eq(r.last_version, 2);
	/* the same ids in another stream */
	cr_assert_eq(fd_store_append(d.pool, "dup-2", any, in, 2, &r), FD_ERR_DUPLICATE);
	/* a server-made id that collides: caught by the unique constraint (23505) */
	struct fd_event_in server = in[0];
	server.id_given = false;
	cr_assert_eq(fd_store_append(d.pool, "dup-3", any, &server, 1, &r), FD_ERR_DUPLICATE);
	/* the same id twice in one request */
	struct fd_event_in twice[2] = { ev("D", "{}"), ev("D", "{}") };
	twice[1].event_id = twice[0].event_id;
	cr_assert_eq(fd_store_append(d.pool, "dup-4", any, twice, 2, &r), FD_ERR_DUPLICATE);

	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events"), 2);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM streams"), 1);
	db_close(&d);
}

Test(store, invalid_input)
{
	struct db d = db_open(1);
	struct fd_append_result r;
	struct fd_event_in e = ev("A", "{}");
	cr_assert_eq(fd_store_append(d.pool, "bad name", any, &e, 1, &r), FD_ERR_INVAL);
	cr_assert_eq(fd_store_append(d.pool, "", any, &e, 1, &r), FD_ERR_INVAL);
	cr_assert_eq(fd_store_append(d.pool, "ok-1", any, &e, 0, &r), FD_ERR_INVAL);
	cr_assert_eq(fd_store_append(d.pool, "ok-1", exact(-1), &e, 1, &r), FD_ERR_INVAL);
	struct fd_event_in bad_json = ev("A", "{not json");
	cr_assert_eq(fd_store_append(d.pool, "ok-1", any, &bad_json, 1, &r), FD_ERR_INVAL);
	struct fd_event_in empty_type = ev("", "{}");
	cr_assert_eq(fd_store_append(d.pool, "ok-1", any, &empty_type, 1, &r), FD_ERR_INVAL);
	char long_type[202];
	memset(long_type, 'T', 201);
	long_type[201] = '\0';
	struct fd_event_in too_long = ev(long_type, "{}");
	cr_assert_eq(fd_store_append(d.pool, "ok-1", any, &too_long, 1, &r), FD_ERR_INVAL);
	long_type[200] = '\0';
	struct fd_event_in edge = ev(long_type, "{}");
	cr_assert_eq(fd_store_append(d.pool, "ok-1", any, &edge, 1, &r), FD_OK, "200 characters is allowed");

	struct fd_stream_page page;
	cr_assert_eq(fd_store_read_stream(d.pool, "a/b", 0, 10, &page), FD_ERR_INVAL);
	cr_assert_eq(fd_store_read_stream(d.pool, "ok-1", 0, 0, &page), FD_ERR_INVAL);
	cr_assert_eq(fd_store_read_stream(d.pool, "ok-1", -1, 10, &page), FD_ERR_INVAL);
	struct fd_feed_page feed;
	cr_assert_eq(fd_store_read_feed(d.pool, (struct fd_cursor){ 0, 0 }, NULL, 0, &feed), FD_ERR_INVAL);
	struct fd_feed_filter bad_cat = { .category = "a b" };
	cr_assert_eq(fd_store_read_feed(d.pool, (struct fd_cursor){ 0, 0 }, &bad_cat, 10, &feed), FD_ERR_INVAL);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events"), 1);
	db_close(&d);
}

Test(store, read_missing_stream_is_notfound)
{
	struct db d = db_open(1);
	struct fd_stream_page page;
	cr_assert_eq(fd_store_read_stream(d.pool, "nothing-here", 0, 10, &page), FD_ERR_NOTFOUND);
	cr_assert_null(page.events_json);
	db_close(&d);
}

Test(store, read_stream_paging)
{
	struct db d = db_open(1);
	struct fd_append_result r;
	struct fd_event_in in[10];
	for (int i = 0; i < 10; i++)
		in[i] = ev("Tick", "{}");
	cr_assert_eq(fd_store_append(d.pool, "page-1", any, in, 10, &r), FD_OK);
	struct fd_event_in other = ev("Other", "{}");
	cr_assert_eq(fd_store_append(d.pool, "page-2", any, &other, 1, &r), FD_OK);

	static const struct {
		int64_t from;
		unsigned limit;
		size_t count;
		json_int_t first;
	} cases[] = {
		{ 0, 3, 3, 1 }, { 1, 100, 10, 1 }, { 4, 3, 3, 4 }, { 9, 5, 2, 9 }, { 10, 1, 1, 10 }, { 11, 5, 0, 0 },
	};
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		struct fd_stream_page page;
		cr_assert_eq(fd_store_read_stream(d.pool, "page-1", cases[c].from, cases[c].limit, &page), FD_OK);
		cr_assert_eq(page.stream_version, 10);
		cr_assert_eq(page.count, cases[c].count, "case %zu", c);
		json_t *arr = parse_json(page.events_json);
		cr_assert_eq(json_array_size(arr), cases[c].count);
		for (size_t i = 0; i < json_array_size(arr); i++) {
			json_t *e = json_array_get(arr, i);
			cr_assert_eq(json_integer_value(json_object_get(e, "version")), cases[c].first + (json_int_t)i);
			cr_assert_str_eq(jstr(e, "stream"), "page-1");
		}
		json_decref(arr);
		free(page.events_json);
	}
	db_close(&d);
}

/* ---------------------------------------------------------------- concurrency */

#define THREADS 8
#define PER_THREAD 50

struct race {
	struct fd_pool *pool;
	const char *stream;
	bool use_exact;
	pthread_mutex_t mu;
	int64_t firsts[THREADS * PER_THREAD];
	size_t nfirsts;
	enum fd_err failure;  /* first unexpected error, asserted by the main thread */
	long conflicts;
};

static void *race_worker(void *arg)
{
	struct race *rc = arg;
	int done = 0;
	long conflicts = 0;
	enum fd_err failure = FD_OK;
	while (done < PER_THREAD && !failure) {
		struct fd_expected expected = any;
		if (rc->use_exact) {
			struct fd_stream_page page;
			enum fd_err err = fd_store_read_stream(rc->pool, rc->stream, 0, 1, &page);
			if (err == FD_ERR_NOTFOUND) {
				expected = exact(0);
			} else if (err == FD_OK) {
				expected = exact(page.stream_version);
				free(page.events_json);
			} else {
				failure = err;
				break;
			}
		}
		struct fd_event_in e = { .type = "Raced", .data_json = "{}", .metadata_json = "{}" };
		if (fd_uuid_v7(&e.event_id) != FD_OK) {
			failure = FD_ERR_INTERNAL;
			break;
		}
		struct fd_append_result r;
		enum fd_err err = fd_store_append(rc->pool, rc->stream, expected, &e, 1, &r);
		if (err == FD_ERR_CONFLICT && rc->use_exact) {
			conflicts++;
			continue;
		}
		if (err) {
			failure = err;
			break;
		}
		pthread_mutex_lock(&rc->mu);
		rc->firsts[rc->nfirsts++] = r.first_version;
		pthread_mutex_unlock(&rc->mu);
		done++;
	}
	pthread_mutex_lock(&rc->mu);
	if (failure && !rc->failure)
		rc->failure = failure;
	rc->conflicts += conflicts;
	pthread_mutex_unlock(&rc->mu);
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

static void run_race(bool use_exact)
{
	struct db d = db_open(THREADS);
	struct race *rc = calloc(1, sizeof *rc);
	cr_assert(rc);
	rc->pool = d.pool;
	rc->stream = "race-1";
	rc->use_exact = use_exact;
	pthread_mutex_init(&rc->mu, NULL);
	pthread_t th[THREADS];
	for (int i = 0; i < THREADS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, race_worker, rc), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	cr_assert_eq(rc->failure, FD_OK, "a worker failed: %s", fd_err_name(rc->failure));
	cr_assert_eq(rc->nfirsts, THREADS * PER_THREAD);

	/* exactly one winner per version */
	qsort(rc->firsts, rc->nfirsts, sizeof rc->firsts[0], cmp_i64);
	for (size_t i = 0; i < rc->nfirsts; i++)
		cr_assert_eq(rc->firsts[i], (int64_t)i + 1, "success %zu got version %lld", i, (long long)rc->firsts[i]);

	/* versions 1..N contiguous in the stream */
	struct fd_stream_page page;
	cr_assert_eq(fd_store_read_stream(d.pool, "race-1", 0, 1000, &page), FD_OK);
	cr_assert_eq(page.stream_version, THREADS * PER_THREAD);
	cr_assert_eq(page.count, THREADS * PER_THREAD);
	json_t *arr = parse_json(page.events_json);
	for (size_t i = 0; i < json_array_size(arr); i++)
		cr_assert_eq(json_integer_value(json_object_get(json_array_get(arr, i), "version")), (json_int_t)i + 1);
	json_decref(arr);
	free(page.events_json);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events"), THREADS * PER_THREAD);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(DISTINCT version) FROM events"), THREADS * PER_THREAD);
	if (use_exact)
		cr_log_info("exact-version race: %ld conflicts retried", rc->conflicts);
	pthread_mutex_destroy(&rc->mu);
	free(rc);
	db_close(&d);
}

Test(store_concurrency, exact_expected_version_one_winner_per_version, .timeout = 300)
{
	run_race(true);
}

Test(store_concurrency, any_expected_version_stays_contiguous, .timeout = 300)
{
	run_race(false);
}

/* ---------------------------------------------------------------- the feed */

struct feed_event {
	char id[FD_UUID_STRLEN + 1];
	char stream[64];
	char type[16];
	struct fd_cursor pos;
};

/* Append the page's events to list (which has room for cap). */
static size_t take_page(const char *json, struct feed_event *list, size_t n, size_t cap)
{
	json_t *arr = parse_json(json);
	for (size_t i = 0; i < json_array_size(arr); i++) {
		json_t *e = json_array_get(arr, i);
		cr_assert_lt(n, cap, "the feed returned more events than were appended");
		struct feed_event *fe = &list[n++];
		snprintf(fe->id, sizeof fe->id, "%s", jstr(e, "event_id"));
		snprintf(fe->stream, sizeof fe->stream, "%s", jstr(e, "stream"));
		snprintf(fe->type, sizeof fe->type, "%s", jstr(e, "type"));
		cr_assert(fd_cursor_parse(jstr(e, "position"), &fe->pos));
	}
	json_decref(arr);
	return n;
}

/*
 * Follow the feed from `after` in pages of `limit` until `want` events have
 * arrived (or the deadline passes), checking the cursor contract on every
 * page.  Returns how many arrived; *next_out gets the final cursor.
 */
static size_t follow_feed(struct fd_pool *pool, struct fd_cursor after, const struct fd_feed_filter *filter,
			  unsigned limit, struct feed_event *list, size_t want, struct fd_cursor *next_out)
{
	size_t n = 0;
	long long deadline = fd_test_now_ms() + FEED_DEADLINE_MS;
	while (n < want && fd_test_now_ms() < deadline) {
		struct fd_feed_page page;
		cr_assert_eq(fd_store_read_feed(pool, after, filter, limit, &page), FD_OK);
		cr_assert_leq(page.count, limit);
		cr_assert_geq(fd_cursor_cmp(&page.next, &after), 0, "next moved backwards");
		size_t before = n;
		n = take_page(page.events_json, list, n, want);
		cr_assert_eq(n - before, page.count);
		free(page.events_json);
		for (size_t i = before; i < n; i++) {
			cr_assert_gt(fd_cursor_cmp(&list[i].pos, &after), 0, "event at or before the cursor");
			if (i > before)
				cr_assert_gt(fd_cursor_cmp(&list[i].pos, &list[i - 1].pos), 0, "page out of order");
			cr_assert_leq(fd_cursor_cmp(&list[i].pos, &page.next), 0, "next is behind a returned event");
		}
		if (page.count == limit)
			cr_assert_eq(fd_cursor_cmp(&page.next, &list[n - 1].pos), 0, "a full page resumes after its last event");
		if (page.count == 0)
			fd_test_sleep_ms(20);
		after = page.next;
	}
	*next_out = after;
	return n;
}

Test(feed, gap_safe_while_an_older_transaction_is_open, .timeout = 120)
{
	struct db d = db_open(2);
	PGconn *raw = fd_test_connect(d.url);
	PGresult *res = PQexec(raw, "BEGIN");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	res = PQexec(raw, "SELECT status FROM fd_append('gapa-1', 'gapa', 'any', 0, ARRAY[gen_random_uuid()],"
			  " ARRAY['A'], ARRAY['{}'::jsonb], ARRAY['{}'::jsonb], false)");
	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
	cr_assert_str_eq(PQgetvalue(res, 0, 0), "ok");
	PQclear(res);

	/* B commits through the pool while A's older transaction is still open. */
	struct fd_append_result rb;
	struct fd_event_in b = ev("B", "{}");
	cr_assert_eq(fd_store_append(d.pool, "gapb-1", any, &b, 1, &rb), FD_OK);

	struct fd_cursor start = { 0, 0 };
	struct fd_feed_page page;
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(fd_store_read_feed(d.pool, start, NULL, 100, &page), FD_OK);
		cr_assert_eq(page.count, 0, "B must stay hidden while A may still commit before it: %s",
			     page.events_json);
		cr_assert_lt(fd_cursor_cmp(&page.next, &rb.position), 0, "next must not pass B");
		free(page.events_json);
		fd_test_sleep_ms(10);
	}
	struct fd_cursor resume = page.next;

	res = PQexec(raw, "COMMIT");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	PQfinish(raw);

	struct feed_event got[2];
	struct fd_cursor next;
	cr_assert_eq(follow_feed(d.pool, resume, NULL, 100, got, 2, &next), 2);
	cr_assert_str_eq(got[0].stream, "gapa-1", "A's transaction is older: A comes first");
	cr_assert_str_eq(got[1].stream, "gapb-1");
	cr_assert_eq(fd_cursor_cmp(&got[1].pos, &rb.position), 0);
	cr_assert_eq(fd_cursor_cmp(&next, &rb.position), 0);
	db_close(&d);
}

#define FEED_EVENTS 250

static const char *const feed_categories[] = { "alpha", "beta", "gamma" };
static const char *const feed_types[] = { "Created", "Renamed", "Closed", "Noted" };

/* Append FEED_EVENTS events over several streams, categories and batch sizes; returns them in feed order. */
static void fill_feed(struct fd_pool *pool, struct feed_event *all)
{
	size_t n = 0;
	for (int batch = 0; n < FEED_EVENTS; batch++) {
		size_t size = (size_t)(batch % 3) + 1;
		if (n + size > FEED_EVENTS)
			size = FEED_EVENTS - n;
		char stream[64];
		snprintf(stream, sizeof stream, "%s-%d", feed_categories[batch % 3], batch % 7);
		struct fd_event_in in[3];
		for (size_t i = 0; i < size; i++) {
			in[i] = ev(feed_types[(n + i) % 4], "{\"k\": 1}");
			struct feed_event *fe = &all[n + i];
			fd_uuid_format(&in[i].event_id, fe->id);
			snprintf(fe->stream, sizeof fe->stream, "%s", stream);
			snprintf(fe->type, sizeof fe->type, "%s", in[i].type);
		}
		struct fd_append_result r;
		cr_assert_eq(fd_store_append(pool, stream, any, in, size, &r), FD_OK);
		n += size;
	}
}

static bool matches(const struct feed_event *e, const struct fd_feed_filter *f)
{
	if (f->category && strncmp(e->stream, f->category, strlen(f->category)) != 0)
		return false;
	if (!f->ntypes)
		return true;
	for (size_t i = 0; i < f->ntypes; i++)
		if (strcmp(e->type, f->types[i]) == 0)
			return true;
	return false;
}

Test(feed, paging_never_skips_or_repeats, .timeout = 300)
{
	struct db d = db_open(2);
	struct feed_event *all = calloc(FEED_EVENTS, sizeof *all);
	struct feed_event *got = calloc(FEED_EVENTS, sizeof *got);
	cr_assert(all && got);
	fill_feed(d.pool, all);

	static const char *const closed_noted[] = { "Closed", "Noted" };
	static const char *const created[] = { "Created" };
	const struct fd_feed_filter filters[] = {
		{ 0 },
		{ .category = "beta" },
		{ .types = closed_noted, .ntypes = 2 },
		{ .category = "gamma", .types = created, .ntypes = 1 },
		{ .category = "nosuch" },
	};
	struct fd_cursor tip = { 0, 0 };
	for (size_t f = 0; f < sizeof filters / sizeof filters[0]; f++) {
		size_t want = 0;
		for (size_t i = 0; i < FEED_EVENTS; i++)
			if (matches(&all[i], &filters[f]))
				want++;
		struct fd_cursor next;
		size_t n = follow_feed(d.pool, (struct fd_cursor){ 0, 0 }, &filters[f], 7, got, want, &next);
		cr_assert_eq(n, want, "filter %zu: %zu of %zu events arrived", f, n, want);
		/* the same events, in append order, none missing, none twice */
		size_t j = 0;
		for (size_t i = 0; i < FEED_EVENTS; i++) {
			if (!matches(&all[i], &filters[f]))
				continue;
			cr_assert_str_eq(got[j].id, all[i].id, "filter %zu: event %zu", f, j);
			j++;
		}
		if (f == 0)
			tip = got[FEED_EVENTS - 1].pos;
		/* Once everything is visible, a short page moves `next` to the newest event overall,
		 * even past events the filter skipped, and the feed stays empty from there. */
		long long deadline = fd_test_now_ms() + FEED_DEADLINE_MS;
		struct fd_feed_page page = { 0 };
		do {
			free(page.events_json);
			cr_assert_eq(fd_store_read_feed(d.pool, next, &filters[f], 7, &page), FD_OK);
			cr_assert_eq(page.count, 0, "filter %zu: an event was repeated: %s", f, page.events_json);
			next = page.next;
		} while (fd_cursor_cmp(&next, &tip) != 0 && fd_test_now_ms() < deadline && (fd_test_sleep_ms(20), true));
		free(page.events_json);
		cr_assert_eq(fd_cursor_cmp(&next, &tip), 0, "filter %zu: next should reach the newest event", f);
	}
	free(all);
	free(got);
	db_close(&d);
}

Test(feed, cursor_beyond_the_end_is_kept)
{
	struct db d = db_open(1);
	struct fd_append_result r;
	struct fd_event_in e = ev("A", "{}");
	cr_assert_eq(fd_store_append(d.pool, "far-1", any, &e, 1, &r), FD_OK);
	struct fd_cursor far = { r.position.tx + 1000000, 5 };
	struct fd_feed_page page;
	cr_assert_eq(fd_store_read_feed(d.pool, far, NULL, 10, &page), FD_OK);
	cr_assert_eq(page.count, 0);
	cr_assert_str_eq(page.events_json, "[]");
	cr_assert_eq(fd_cursor_cmp(&page.next, &far), 0, "next is never behind after");
	free(page.events_json);
	db_close(&d);
}

/* ---------------------------------------------------------------- the pool */

/* ---------------------------------------------------------------- the feed follower */

/*
 * fd_feed_follow is the one reader of batches for the projector and the saga
 * intake.  Follow the feed with `f` from the beginning on `c` until a
 * caught-up batch reaches `tip`, checking every batch; the events arrive in
 * list (room for cap).
 */
static size_t follow_all(PGconn *c, const struct fd_follow *f, struct fd_cursor tip, struct feed_event *list,
			 size_t cap)
{
	struct fd_cursor at = { 0, 0 };
	size_t n = 0;
	long long deadline = fd_test_now_ms() + FEED_DEADLINE_MS;
	for (;;) {
		struct fd_follow_batch b;
		cr_assert_eq(fd_feed_follow(c, at, f, &b), FD_OK, "%s", f->name);
		cr_assert_leq(b.count, f->limit);
		cr_assert_eq(b.caught_up, b.count < f->limit, "%s", f->name);
		for (size_t i = 0; i < b.count; i++) {
			const struct fd_feed_event *e = &b.events[i];
			cr_assert_gt(fd_cursor_cmp(&e->position, i ? &b.events[i - 1].position : &at), 0,
				     "%s: an event's position is not past the one before it (is it set?)", f->name);
			cr_assert(json_is_object(e->data) && json_integer_value(json_object_get(e->data, "k")) == 1,
				  "%s: data not parsed", f->name);
			cr_assert(json_is_object(e->metadata), "%s: metadata not parsed", f->name);
			char cat[32];
			fd_stream_category(e->stream, cat, sizeof cat);
			cr_assert_str_eq(e->category, cat);
			cr_assert_eq(e->version >= 1, true);
			cr_assert_lt(n, cap, "%s: more events than were appended", f->name);
			struct feed_event *fe = &list[n++];
			snprintf(fe->id, sizeof fe->id, "%s", e->event_id);
			snprintf(fe->stream, sizeof fe->stream, "%s", e->stream);
			snprintf(fe->type, sizeof fe->type, "%s", e->type);
			fe->pos = e->position;
		}
		if (b.count == f->limit)
			cr_assert_eq(fd_cursor_cmp(&b.next, &b.events[b.count - 1].position), 0,
				     "%s: a full batch resumes after its last event", f->name);
		else if (b.count)
			cr_assert_geq(fd_cursor_cmp(&b.next, &b.events[b.count - 1].position), 0);
		cr_assert_geq(fd_cursor_cmp(&b.next, &at), 0, "%s: next moved backwards", f->name);
		at = b.next;
		bool caught_up = b.caught_up;
		fd_follow_batch_release(&b);
		if (caught_up && fd_cursor_cmp(&at, &tip) == 0)
			return n;
		cr_assert_lt(fd_test_now_ms(), deadline, "%s: the follower did not reach the newest event", f->name);
		if (caught_up)
			fd_test_sleep_ms(20);
	}
}

static bool in_list(const char *const *list, const char *s)
{
	for (size_t i = 0; list && list[i]; i++)
		if (strcmp(list[i], s) == 0)
			return true;
	return false;
}

/*
 * Every shape a follower reads with: one category (the projector's prepared
 * fast path), several, and several with event types (the saga intake).  Each
 * gets exactly the feed's events that match, in feed order, each with its
 * position in the feed; caught up, the cursor moves to the newest event of
 * any category.
 */
Test(follower, batches_carry_the_feed_positions_for_every_filter, .timeout = 300)
{
	struct db d = db_open(2);
	struct feed_event *all = calloc(FEED_EVENTS, sizeof *all);
	struct feed_event *got = calloc(FEED_EVENTS, sizeof *got);
	cr_assert(all && got);
	fill_feed(d.pool, all);
	struct fd_cursor tip;
	cr_assert_eq(follow_feed(d.pool, (struct fd_cursor){ 0, 0 }, NULL, 100, all, FEED_EVENTS, &tip), FEED_EVENTS);

	static const char *const beta[] = { "beta", NULL };
	static const char *const alpha_gamma[] = { "alpha", "gamma", NULL };
	static const char *const every[] = { "alpha", "beta", "gamma", NULL };
	static const char *const closed_noted[] = { "Closed", "Noted", NULL };
	const struct fd_follow follows[] = {
		{ .name = "one category", .categories = beta, .limit = 7 },
		{ .name = "two categories", .categories = alpha_gamma, .limit = 500 },
		{ .name = "categories and types", .categories = every, .types = closed_noted, .limit = 7 },
	};
	PGconn *c = fd_test_connect(d.url);
	for (size_t f = 0; f < sizeof follows / sizeof follows[0]; f++) {
		const struct fd_follow *fw = &follows[f];
		size_t n = follow_all(c, fw, tip, got, FEED_EVENTS), j = 0;
		for (size_t i = 0; i < FEED_EVENTS; i++) {
			char cat[32];
			fd_stream_category(all[i].stream, cat, sizeof cat);
			if (!in_list(fw->categories, cat) || (fw->types && !in_list(fw->types, all[i].type)))
				continue;
			cr_assert_lt(j, n, "%s: event %zu is missing", fw->name, j);
			cr_assert_str_eq(got[j].id, all[i].id, "%s: event %zu", fw->name, j);
			cr_assert_eq(fd_cursor_cmp(&got[j].pos, &all[i].pos), 0, "%s: event %zu has another position",
				     fw->name, j);
			j++;
		}
		cr_assert_eq(j, n, "%s: %zu events, %zu expected", fw->name, n, j);
	}
	PQfinish(c);
	free(all);
	free(got);
	db_close(&d);
}

/* Follow `f` from `at` until the batch fails (returned) or the deadline passes; *at moves with the batches. */
static enum fd_err follow_until_error(PGconn *c, const struct fd_follow *f, struct fd_cursor *at, size_t *read)
{
	long long deadline = fd_test_now_ms() + FEED_DEADLINE_MS;
	*read = 0;
	while (fd_test_now_ms() < deadline) {
		struct fd_follow_batch b;
		enum fd_err err = fd_feed_follow(c, *at, f, &b);
		if (err) {
			cr_assert_eq(b.count, 0, "a failed batch hands over nothing");
			cr_assert_eq(fd_cursor_cmp(&b.next, at), 0, "a failed batch does not move the cursor");
			fd_follow_batch_release(&b);
			return err;
		}
		*read += b.count;
		*at = b.next;
		bool idle = b.count == 0;
		fd_follow_batch_release(&b);
		if (idle)
			fd_test_sleep_ms(20);
	}
	return FD_OK;
}

/*
 * An event whose data or metadata jansson cannot read (nested deeper than
 * it parses; the HTTP layer would refuse such a body, a direct append does
 * not) stops a follower before it, with an error: no batch with it or past
 * it, however the batch is cut, until the event is repaired.
 */
Test(follower, an_unreadable_event_stops_the_follower_before_it, .timeout = 120)
{
	struct db d = db_open(1);
	char *deep = malloc(10000);
	cr_assert_not_null(deep);
	int o = sprintf(deep, "{\"a\": ");
	for (int i = 0; i < 3000; i++)
		deep[o++] = '[';
	for (int i = 0; i < 3000; i++)
		deep[o++] = ']';
	strcpy(deep + o, "}");
	struct fd_event_in good1 = ev("Good", "{\"k\": 1}"), bad_data = ev("Deep", deep),
			   bad_meta = ev("DeepMeta", "{\"k\": 1}"), good2 = ev("Good", "{\"k\": 1}");
	bad_meta.metadata_json = deep;
	struct fd_append_result r;
	cr_assert_eq(fd_store_append(d.pool, "unread-1", any, &good1, 1, &r), FD_OK);
	struct fd_cursor first = r.position;
	cr_assert_eq(fd_store_append(d.pool, "unread-1", any, &bad_data, 1, &r), FD_OK);
	cr_assert_eq(fd_store_append(d.pool, "unread-1", any, &bad_meta, 1, &r), FD_OK);
	cr_assert_eq(fd_store_append(d.pool, "unread-1", any, &good2, 1, &r), FD_OK);
	free(deep);

	static const char *const unread[] = { "unread", NULL };
	static const char *const typed[] = { "Good", "Deep", "DeepMeta", NULL };
	PGconn *c = fd_test_connect(d.url);
	for (unsigned limit = 1; limit <= 10; limit += 9) {
		const struct fd_follow plain = { .name = "plain", .categories = unread, .limit = limit };
		const struct fd_follow with_types = { .name = "typed", .categories = unread, .types = typed, .limit = limit };
		const struct fd_follow *fs[] = { &plain, &with_types };
		for (size_t f = 0; f < 2; f++) {
			struct fd_cursor at = { 0, 0 };
			size_t read;
			cr_assert_eq(follow_until_error(c, fs[f], &at, &read), FD_ERR_INVAL, "%s, limit %u", fs[f]->name,
				     limit);
			cr_assert_eq(read, limit == 1 ? 1 : 0, "%s, limit %u: only the event before it", fs[f]->name, limit);
			if (limit == 1)
				cr_assert_eq(fd_cursor_cmp(&at, &first), 0);
		}
	}
	/* Repair the data: the follower stops at the unreadable metadata next. */
	PGresult *res = PQexec(c, "UPDATE events SET data = '{\"k\": 1}' WHERE type = 'Deep'");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(res));
	PQclear(res);
	const struct fd_follow plain = { .name = "plain", .categories = unread, .limit = 10 };
	struct fd_cursor at = first;
	size_t read;
	cr_assert_eq(follow_until_error(c, &plain, &at, &read), FD_ERR_INVAL);
	cr_assert_eq(read, 0);
	cr_assert_eq(fd_cursor_cmp(&at, &first), 0);
	res = PQexec(c, "UPDATE events SET metadata = '{}' WHERE type = 'DeepMeta'");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(res));
	PQclear(res);
	struct fd_follow_batch b;
	cr_assert_eq(fd_feed_follow(c, first, &plain, &b), FD_OK);
	cr_assert_eq(b.count, 3, "every event reads once repaired");
	cr_assert_eq(fd_cursor_cmp(&b.next, &r.position), 0);
	fd_follow_batch_release(&b);
	PQfinish(c);
	db_close(&d);
}

/* ---------------------------------------------------------------- sql.h */

/*
 * What a connection has prepared goes with the connection: a statement is
 * prepared the first time it runs, a reset or a new connection starts with
 * nothing prepared, and a statement that is not prepared cannot be queued in
 * a pipeline.
 */
Test(sql, prepared_statements_are_kept_per_connection)
{
	char *url = fd_test_db_new();
	static const struct fd_stmt st = { "test_sql_two", "SELECT $1::int * 2", 1, false };
	const char *p[] = { "21" };
	PGconn *c = fd_test_connect(url);
	cr_assert_not(fd_sql_is_prepared(c, st.name));
	PGresult *res = NULL;
	cr_assert_eq(fd_sql_exec(c, &st, p, &res), FD_OK);
	cr_assert_str_eq(PQgetvalue(res, 0, 0), "42");
	PQclear(res);
	cr_assert(fd_sql_is_prepared(c, st.name));
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM pg_prepared_statements WHERE name = 'test_sql_two'"), 1);
	cr_assert_eq(fd_sql_exec(c, &st, p, NULL), FD_OK, "runs again without preparing again");

	PQreset(c);
	cr_assert_eq(PQstatus(c), CONNECTION_OK);
	cr_assert_not(fd_sql_is_prepared(c, st.name), "a reset session has nothing prepared");
	cr_assert_eq(fd_sql_exec(c, &st, p, NULL), FD_OK, "prepared again on the new session");
	cr_assert(fd_sql_is_prepared(c, st.name));

	cr_assert_eq(PQenterPipelineMode(c), 1);
	static const struct fd_stmt other = { "test_sql_three", "SELECT $1::int * 3", 1, false };
	cr_assert_eq(fd_sql_exec(c, &other, p, NULL), FD_ERR_INTERNAL, "nothing is prepared inside a pipeline");
	cr_assert_eq(fd_sql_exec(c, &st, p, NULL), FD_OK, "a prepared statement is queued");
	cr_assert_eq(PQpipelineSync(c), 1);
	res = PQgetResult(c);
	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
	cr_assert_str_eq(PQgetvalue(res, 0, 0), "42");
	PQclear(res);
	cr_assert_null(PQgetResult(c)); /* the end of that statement's results */
	res = PQgetResult(c);
	cr_assert_eq(PQresultStatus(res), PGRES_PIPELINE_SYNC);
	PQclear(res);
	cr_assert_eq(PQexitPipelineMode(c), 1);
	PQfinish(c);

	c = fd_test_connect(url);
	cr_assert_not(fd_sql_is_prepared(c, st.name), "a new connection has nothing prepared");
	cr_assert_eq(fd_sql_once(c, "SELECT 1/0", 0, NULL, &res), FD_ERR_DB);
	cr_assert_str_eq(PQresultErrorField(res, PG_DIAG_SQLSTATE), "22012", "the failed result is handed over");
	PQclear(res);
	char a[FD_SQL_NAME_MAX], b[FD_SQL_NAME_MAX];
	fd_sql_text_name("SELECT 1", a);
	fd_sql_text_name("SELECT 1", b);
	cr_assert_str_eq(a, b);
	fd_sql_text_name("SELECT 2", b);
	cr_assert_str_neq(a, b);
	PQfinish(c);
	free(url);
}

Test(pool, unreachable_database_is_unavailable_promptly)
{
	struct fd_pool *pool = NULL;
	/* Port 1 on loopback: nothing listens, the connect is refused at once. */
	cr_assert_eq(fd_pool_new("postgresql://postgres:secret@127.0.0.1:1/postgres", 2, 1000, &pool), FD_OK);
	long long t0 = fd_test_now_ms();
	PGconn *conn = NULL;
	cr_assert_eq(fd_pool_acquire(pool, &conn), FD_ERR_UNAVAILABLE);
	cr_assert_null(conn);
	struct fd_append_result r;
	struct fd_event_in e = ev("A", "{}");
	cr_assert_eq(fd_store_append(pool, "x-1", any, &e, 1, &r), FD_ERR_UNAVAILABLE);
	struct fd_stream_page page;
	cr_assert_eq(fd_store_read_stream(pool, "x-1", 0, 1, &page), FD_ERR_UNAVAILABLE);
	cr_assert_lt(fd_test_now_ms() - t0, 3000, "failing must not wait");
	struct fd_pool_stats st;
	fd_pool_stats(pool, &st);
	cr_assert_eq(st.size, 2);
	cr_assert_eq(st.open, 0);
	cr_assert_eq(st.in_use, 0, "failed acquires must give their slot back");
	fd_pool_free(pool);
}

Test(pool, acquire_times_out_when_exhausted)
{
	struct db d = db_open(1);
	fd_pool_free(d.pool);
	cr_assert_eq(fd_pool_new(d.url, 1, 200, &d.pool), FD_OK);
	PGconn *c1 = NULL, *c2 = NULL;
	cr_assert_eq(fd_pool_acquire(d.pool, &c1), FD_OK);
	cr_assert_not_null(c1);
	struct fd_pool_stats st;
	fd_pool_stats(d.pool, &st);
	cr_assert_eq(st.open, 1);
	cr_assert_eq(st.in_use, 1);
	long long t0 = fd_test_now_ms();
	cr_assert_eq(fd_pool_acquire(d.pool, &c2), FD_ERR_UNAVAILABLE);
	long long waited = fd_test_now_ms() - t0;
	cr_assert_geq(waited, 150, "waited only %lld ms", waited);
	cr_assert_lt(waited, 3000);
	fd_pool_release(d.pool, c1, false);
	cr_assert_eq(fd_pool_acquire(d.pool, &c2), FD_OK);
	cr_assert_eq(c2, c1, "the healthy connection is reused");
	fd_pool_release(d.pool, c2, false);
	fd_pool_stats(d.pool, &st);
	cr_assert_eq(st.in_use, 0);
	cr_assert_eq(st.waiting, 0);
	db_close(&d);
}

struct waiter {
	struct fd_pool *pool;
	enum fd_err err;
};

static void *wait_for_conn(void *arg)
{
	struct waiter *w = arg;
	PGconn *c = NULL;
	w->err = fd_pool_acquire(w->pool, &c);
	if (!w->err)
		fd_pool_release(w->pool, c, false);
	return NULL;
}

Test(pool, waiter_gets_a_released_connection)
{
	struct db d = db_open(1);
	PGconn *c1 = NULL;
	cr_assert_eq(fd_pool_acquire(d.pool, &c1), FD_OK);
	struct waiter w = { .pool = d.pool, .err = FD_ERR_INTERNAL };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, wait_for_conn, &w), 0);
	struct fd_pool_stats st = { 0 };
	long long deadline = fd_test_now_ms() + 5000;
	do {
		fd_test_sleep_ms(5);
		fd_pool_stats(d.pool, &st);
	} while (st.waiting == 0 && fd_test_now_ms() < deadline);
	cr_assert_eq(st.waiting, 1, "the second acquire should be waiting");
	fd_pool_release(d.pool, c1, false);
	pthread_join(th, NULL);
	cr_assert_eq(w.err, FD_OK);
	db_close(&d);
}

struct burst {
	struct fd_pool *pool;
	char stream[32];
	enum fd_err err;
};

static void *burst_worker(void *arg)
{
	struct burst *b = arg;
	for (int i = 0; i < 20 && !b->err; i++) {
		struct fd_event_in e = { .type = "Burst", .data_json = "{}" };
		struct fd_append_result r;
		b->err = fd_uuid_v7(&e.event_id);
		if (!b->err)
			b->err = fd_store_append(b->pool, b->stream, any, &e, 1, &r);
		if (!b->err && r.last_version != i + 1)
			b->err = FD_ERR_INTERNAL;
	}
	return NULL;
}

Test(pool, more_threads_than_connections, .timeout = 120)
{
	enum { NTHREADS = 16, NCONN = 3 };
	struct db d = db_open(NCONN);
	struct burst b[NTHREADS];
	pthread_t th[NTHREADS];
	for (int i = 0; i < NTHREADS; i++) {
		b[i] = (struct burst){ .pool = d.pool, .err = FD_OK };
		snprintf(b[i].stream, sizeof b[i].stream, "burst-%d", i);
		cr_assert_eq(pthread_create(&th[i], NULL, burst_worker, &b[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
	for (int i = 0; i < NTHREADS; i++)
		cr_assert_eq(b[i].err, FD_OK, "thread %d: %s", i, fd_err_name(b[i].err));
	struct fd_pool_stats st;
	fd_pool_stats(d.pool, &st);
	cr_assert_eq(st.size, NCONN);
	cr_assert_leq(st.open, NCONN);
	cr_assert_geq(st.open, 1);
	cr_assert_eq(st.in_use, 0);
	cr_assert_eq(st.waiting, 0);
	cr_assert_eq(fd_test_scalar_at(d.url, "SELECT count(*) FROM events"), NTHREADS * 20);
	char sql[256];
	snprintf(sql, sizeof sql,
		 "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' AND application_name = 'factd'",
		 dbname_of(d.url));
	cr_assert_leq(fd_test_scalar_at(d.url, sql), NCONN, "the pool never opens more than its size");
	db_close(&d);
}

Test(pool, connection_left_in_a_transaction_is_replaced)
{
	struct db d = db_open(1);
	PGconn *c = NULL;
	cr_assert_eq(fd_pool_acquire(d.pool, &c), FD_OK);
	long long pid1 = fd_test_scalar(c, "SELECT pg_backend_pid()");
	PGresult *res = PQexec(c, "BEGIN");
	PQclear(res);
	fd_pool_release(d.pool, c, false);
	cr_assert_eq(fd_pool_acquire(d.pool, &c), FD_OK);
	cr_assert_eq(PQtransactionStatus(c), PQTRANS_IDLE);
	long long pid2 = fd_test_scalar(c, "SELECT pg_backend_pid()");
	cr_assert_neq(pid1, pid2, "a connection released mid-transaction must not be reused");
	cr_assert_str_eq(PQparameterStatus(c, "application_name"), "factd");
	fd_pool_release(d.pool, c, false);
	db_close(&d);
}

Test(pool, reconnects_after_backends_are_killed, .timeout = 120)
{
	struct db d = db_open(2);
	/* Open both connections. */
	PGconn *c1 = NULL, *c2 = NULL;
	cr_assert_eq(fd_pool_acquire(d.pool, &c1), FD_OK);
	cr_assert_eq(fd_pool_acquire(d.pool, &c2), FD_OK);
	fd_pool_release(d.pool, c1, false);
	fd_pool_release(d.pool, c2, false);
	struct fd_pool_stats st;
	fd_pool_stats(d.pool, &st);
	cr_assert_eq(st.open, 2);

	PGconn *admin = fd_test_connect(fd_test_admin_url());
	char sql[256];
	snprintf(sql, sizeof sql,
		 "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
		 " WHERE datname = '%s' AND application_name = 'factd'",
		 dbname_of(d.url));
	cr_assert_eq(fd_test_scalar(admin, sql), 2, "the pool's two backends should be found by application_name");
	snprintf(sql, sizeof sql,
		 "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' AND application_name = 'factd'",
		 dbname_of(d.url));
	long long deadline = fd_test_now_ms() + 10000;
	while (fd_test_scalar(admin, sql) > 0 && fd_test_now_ms() < deadline)
		fd_test_sleep_ms(10);
	cr_assert_eq(fd_test_scalar(admin, sql), 0, "backends did not exit");

	struct fd_append_result r;
	struct fd_event_in e1 = ev("A", "{}");
	enum fd_err first = fd_store_append(d.pool, "rc-1", any, &e1, 1, &r);
	struct fd_event_in e2 = ev("B", "{}");
	cr_assert_eq(fd_store_append(d.pool, "rc-1", any, &e2, 1, &r), FD_OK, "the second call must succeed");
	cr_assert_eq(first, FD_OK, "a dead idle connection should be noticed before use (got %s)", fd_err_name(first));
	cr_assert_eq(r.last_version, 2);

	snprintf(sql, sizeof sql,
		 "SELECT count(*) FROM pg_stat_activity WHERE datname = '%s' AND application_name = 'factd'",
		 dbname_of(d.url));
	cr_assert_geq(fd_test_scalar(admin, sql), 1, "the pool reconnected");
	PQfinish(admin);
	db_close(&d);
}

Test(pool, classify_sqlstates)
{
	struct db d = db_open(1);
	PGconn *c = fd_test_connect(d.url);
	static const struct {
		const char *sql;
		enum fd_err want;
	} cases[] = {
		{ "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '23505'; END $$", FD_ERR_DUPLICATE },
		{ "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40001'; END $$", FD_ERR_RETRY },
		{ "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40P01'; END $$", FD_ERR_RETRY },
		{ "DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '08006'; END $$", FD_ERR_UNAVAILABLE },
		{ "SELECT * FROM no_such_table", FD_ERR_DB },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		PGresult *res = PQexec(c, cases[i].sql);
		cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR);
		cr_assert_eq(fd_pg_classify(c, res), cases[i].want, "case %zu: %s", i, cases[i].sql);
		PQclear(res);
	}
	cr_assert_not(fd_pg_conn_broken(c, FD_ERR_DB));
	cr_assert(fd_pg_conn_broken(c, FD_ERR_UNAVAILABLE));
	cr_assert(fd_pg_conn_broken(NULL, FD_OK));
	PQfinish(c);
	db_close(&d);
}

Test(feed, horizon_check_refuses_ids_ahead_of_the_cluster)
{
	struct db d = db_open(1);
	struct fd_event_in e = ev("Created", "{}");
	struct fd_append_result r;
	cr_assert_eq(fd_store_append(d.pool, "horizon-1", any, &e, 1, &r), FD_OK);
	cr_assert_eq(fd_store_check_feed_horizon(d.pool), FD_OK, "a healthy store passes");

	/* What a logical restore into a fresh cluster looks like: stored ids ahead of the counter. */
	PGconn *c = fd_test_connect(d.url);
	PGresult *res = PQexec(c, "INSERT INTO events (tx_id, event_id, stream_id, category, version, type, data)"
				  " VALUES ((pg_current_xact_id()::text::numeric + 1000000)::text::xid8,"
				  " gen_random_uuid(), 'horizon-1', 'horizon', 2, 'Restored', '{}')");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(res));
	PQclear(res);
	PQfinish(c);
	cr_assert_eq(fd_store_check_feed_horizon(d.pool), FD_ERR_CONFLICT);
	db_close(&d);
}
