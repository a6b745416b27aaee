/*
 * test_snapshots.c - loading streams for aggregates against a real
 * PostgreSQL: snapshot choice by schema and version, the events after the
 * snapshot, point-in-time version lookup, snapshot upserts, and stored-event
 * lookup by id and by version.
 *
 * Each test gets its own database cloned from the migrated template.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "factd/events.h"
#include "factd/pool.h"
#include "store/snapshots.h"
#include "testdb.h"
#include "testutil.h"

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

static const struct fd_expected any = { FD_EXPECT_ANY, 0 };

/* Append n events "T<version>" with data {"n": <version>} to stream, one call. */
static void append_n(struct db *d, const char *stream, int n)
{
	struct fd_event_in *in = calloc((size_t)n, sizeof *in);
	char (*data)[32] = calloc((size_t)n, sizeof *data);
	char (*types)[32] = calloc((size_t)n, sizeof *types);
	cr_assert(in && data && types);
	struct fd_stream_load cur;
	cr_assert_eq(fd_store_load_stream(d->pool, stream, -1, 0, &cur), FD_OK);
	for (int i = 0; i < n; i++) {
		long long v = cur.stream_version + i + 1;
		snprintf(data[i], sizeof data[i], "{\"n\": %lld}", v);
		snprintf(types[i], sizeof types[i], "T%lld", v);
		in[i] = (struct fd_event_in){ .type = types[i], .data_json = data[i], .metadata_json = "{}" };
		cr_assert_eq(fd_uuid_v7(&in[i].event_id), FD_OK);
	}
	struct fd_append_result r;
	cr_assert_eq(fd_store_append(d->pool, stream, (struct fd_expected){ FD_EXPECT_EXACT, cur.stream_version },
				     in, (size_t)n, &r),
		     FD_OK);
	fd_stream_load_release(&cur);
	free(in);
	free(data);
	free(types);
}

static json_t *parse(const char *text)
{
	json_error_t jerr;
	json_t *j = json_loads(text, 0, &jerr);
	cr_assert(j, "invalid JSON (%s): %s", jerr.text, text);
	return j;
}

/*
 * Check a load's events: exactly versions first..last, each [version, "T<version>", {"n": version}].
 * first > last means none.
 */
static void assert_events(const struct fd_stream_load *l, int64_t first, int64_t last)
{
	size_t want = first > last ? 0 : (size_t)(last - first + 1);
	cr_assert_not_null(l->events_json);
	cr_assert_eq(l->count, want, "count %zu, want %zu", l->count, want);
	json_t *arr = parse(l->events_json);
	cr_assert(json_is_array(arr), "events must be an array: %s", l->events_json);
	cr_assert_eq(json_array_size(arr), want);
	for (size_t i = 0; i < want; i++) {
		json_t *e = json_array_get(arr, i);
		int64_t v = first + (int64_t)i;
		cr_assert(json_is_array(e) && json_array_size(e) == 5,
			  "event %zu must be [version, type, data, schema_version, personal]", i);
		cr_assert(json_is_null(json_array_get(e, 3)), "no schema_version in its metadata");
		cr_assert(json_is_null(json_array_get(e, 4)), "no personal data declared in its metadata");
		cr_assert(json_is_integer(json_array_get(e, 0)));
		cr_assert_eq(json_integer_value(json_array_get(e, 0)), v);
		char type[32];
		snprintf(type, sizeof type, "T%lld", (long long)v);
		cr_assert_str_eq(json_string_value(json_array_get(e, 1)), type);
		json_t *data = json_array_get(e, 2);
		cr_assert(json_is_object(data));
		cr_assert_eq(json_integer_value(json_object_get(data, "n")), v);
	}
	json_decref(arr);
}

static void save(struct db *d, const char *stream, int64_t version, int schema)
{
	char state[64];
	snprintf(state, sizeof state, "{\"at\": %lld, \"schema\": %d}", (long long)version, schema);
	cr_assert_eq(fd_store_save_snapshot(d->pool, stream, version, schema, state), FD_OK, "snapshot %lld/%d",
		     (long long)version, schema);
}

/* The loaded snapshot must be the one save() wrote at `version` with `schema`. */
static void assert_snapshot(const struct fd_stream_load *l, int64_t version, int schema)
{
	cr_assert_eq(l->snapshot_version, version, "snapshot version %lld, want %lld", (long long)l->snapshot_version,
		     (long long)version);
	if (version == 0) {
		cr_assert_null(l->snapshot_json);
		return;
	}
	cr_assert_not_null(l->snapshot_json);
	json_t *s = parse(l->snapshot_json);
	cr_assert_eq(json_integer_value(json_object_get(s, "at")), version);
	cr_assert_eq(json_integer_value(json_object_get(s, "schema")), schema);
	json_decref(s);
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---------------------------------------------------------------- loading */

Test(load, missing_stream_is_empty)
{
	struct db d = db_open(1);
	struct fd_stream_load l;
	cr_assert_eq(fd_store_load_stream(d.pool, "order-none", 1, 0, &l), FD_OK);
	cr_assert_eq(l.stream_version, 0);
	assert_snapshot(&l, 0, 0);
	assert_events(&l, 1, 0);
	fd_stream_load_release(&l);
	cr_assert_null(l.events_json, "release leaves the struct empty");
	fd_stream_load_release(&l);
	db_close(&d);
}

Test(load, without_snapshots)
{
	struct db d = db_open(1);
	append_n(&d, "order-1", 5);
	struct fd_stream_load l;
	cr_assert_eq(fd_store_load_stream(d.pool, "order-1", 1, 0, &l), FD_OK);
	cr_assert_eq(l.stream_version, 5);
	assert_snapshot(&l, 0, 0);
	assert_events(&l, 1, 5);
	fd_stream_load_release(&l);

	/* up to a version; past the end is the whole stream */
	static const struct {
		int64_t max, last;
	} cases[] = { { 1, 1 }, { 3, 3 }, { 5, 5 }, { 6, 5 }, { 1000, 5 } };
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		cr_assert_eq(fd_store_load_stream(d.pool, "order-1", 1, cases[i].max, &l), FD_OK);
		cr_assert_eq(l.stream_version, 5, "the stream's version is the current one");
		assert_events(&l, 1, cases[i].last);
		fd_stream_load_release(&l);
	}
	db_close(&d);
}

Test(load, data_and_types_survive_as_json)
{
	struct db d = db_open(1);
	struct fd_event_in in[2] = {
		{ .type = "Caf\xc3\xa9 \"quoted\"", .data_json = "{\"s\": \"a\\\"b\\\\c\", \"list\": [1, {\"x\": null}]}" },
		{ .type = "Empty", .data_json = "{}" },
	};
	cr_assert_eq(fd_uuid_v7(&in[0].event_id), FD_OK);
	cr_assert_eq(fd_uuid_v7(&in[1].event_id), FD_OK);
	struct fd_append_result r;
	cr_assert_eq(fd_store_append(d.pool, "odd-1", any, in, 2, &r), FD_OK);
	struct fd_stream_load l;
	cr_assert_eq(fd_store_load_stream(d.pool, "odd-1", -1, 0, &l), FD_OK);
	cr_assert_eq(l.count, 2);
	json_t *arr = parse(l.events_json);
	for (size_t i = 0; i < 2; i++) {
		json_t *e = json_array_get(arr, i);
		cr_assert_eq(json_integer_value(json_array_get(e, 0)), (json_int_t)i + 1);
		cr_assert_str_eq(json_string_value(json_array_get(e, 1)), in[i].type);
		json_t *want = parse(in[i].data_json);
		cr_assert(json_equal(json_array_get(e, 2), want), "data of event %zu", i);
		json_decref(want);
	}
	json_decref(arr);
	fd_stream_load_release(&l);
	db_close(&d);
}

Test(load, newest_matching_snapshot_is_chosen)
{
	struct db d = db_open(2);
	append_n(&d, "order-7", 50);
	save(&d, "order-7", 10, 1);
	save(&d, "order-7", 30, 1);
	save(&d, "order-7", 20, 1);
	save(&d, "order-7", 40, 2);

	static const struct {
		int schema;
		int64_t max;
		int64_t snap;      /* expected snapshot version, 0 = none */
		int64_t last;      /* last event version expected */
	} cases[] = {
		{ 1, 35, 30, 35 },  /* the newest schema-1 snapshot at or below 35 */
		{ 1, 0, 30, 50 },   /* latest: 40 has another schema */
		{ 1, 30, 30, 30 },  /* the snapshot is the whole answer */
		{ 1, 29, 20, 29 },
		{ 1, 10, 10, 10 },
		{ 1, 9, 0, 9 },     /* below every snapshot */
		{ 2, 0, 40, 50 },
		{ 2, 45, 40, 45 },
		{ 2, 39, 0, 39 },
		{ 3, 0, 0, 50 },    /* no snapshot with that schema */
		{ 0, 0, 0, 50 },
		{ -1, 0, 0, 50 },   /* schema < 0: snapshots ignored */
		{ -1, 35, 0, 35 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct fd_stream_load l;
		cr_assert_eq(fd_store_load_stream(d.pool, "order-7", cases[i].schema, cases[i].max, &l), FD_OK);
		cr_assert_eq(l.stream_version, 50, "case %zu", i);
		assert_snapshot(&l, cases[i].snap, cases[i].schema);
		assert_events(&l, cases[i].snap + 1, cases[i].last);
		fd_stream_load_release(&l);
	}
	db_close(&d);
}

Test(load, snapshots_of_other_streams_are_not_used)
{
	struct db d = db_open(1);
	append_n(&d, "order-a", 10);
	append_n(&d, "order-ab", 10);
	save(&d, "order-ab", 8, 1);
	struct fd_stream_load l;
	cr_assert_eq(fd_store_load_stream(d.pool, "order-a", 1, 0, &l), FD_OK);
	assert_snapshot(&l, 0, 1);
	assert_events(&l, 1, 10);
	fd_stream_load_release(&l);
	db_close(&d);
}

Test(load, a_long_stream)
{
	struct db d = db_open(1);
	for (int i = 0; i < 10; i++)
		append_n(&d, "order-long", 1000);
	struct fd_stream_load l;
	cr_assert_eq(fd_store_load_stream(d.pool, "order-long", 1, 0, &l), FD_OK);
	cr_assert_eq(l.stream_version, 10000);
	assert_events(&l, 1, 10000);
	fd_stream_load_release(&l);
	save(&d, "order-long", 9900, 1);
	cr_assert_eq(fd_store_load_stream(d.pool, "order-long", 1, 0, &l), FD_OK);
	assert_snapshot(&l, 9900, 1);
	assert_events(&l, 9901, 10000);
	fd_stream_load_release(&l);
	db_close(&d);
}

Test(load, invalid_input)
{
	struct db d = db_open(1);
	struct fd_stream_load l;
	cr_assert_eq(fd_store_load_stream(d.pool, "bad name", 1, 0, &l), FD_ERR_INVAL);
	cr_assert_null(l.events_json);
	cr_assert_eq(fd_store_load_stream(d.pool, "", 1, 0, &l), FD_ERR_INVAL);
	cr_assert_eq(fd_store_load_stream(d.pool, NULL, 1, 0, &l), FD_ERR_INVAL);
	cr_assert_eq(fd_store_load_stream(d.pool, "order-1", 1, -1, &l), FD_ERR_INVAL);
	db_close(&d);
}

/* ---------------------------------------------------------------- snapshots */

static long long scalar(struct db *d, const char *sql)
{
	PGconn *c = fd_test_connect(d->url);
	long long v = fd_test_scalar(c, sql);
	PQfinish(c);
	return v;
}

Test(snapshot, save_is_an_upsert)
{
	struct db d = db_open(1);
	append_n(&d, "order-u", 3);
	cr_assert_eq(fd_store_save_snapshot(d.pool, "order-u", 3, 1, "{\"v\": 1}"), FD_OK);
	cr_assert_eq(fd_store_save_snapshot(d.pool, "order-u", 3, 1, "{\"v\": 2}"), FD_OK);
	cr_assert_eq(scalar(&d, "SELECT count(*) FROM snapshots"), 1);
	cr_assert_eq(scalar(&d, "SELECT (state->>'v')::int FROM snapshots"), 2);
	/* another schema at the same version is another row */
	cr_assert_eq(fd_store_save_snapshot(d.pool, "order-u", 3, 2, "{\"v\": 3}"), FD_OK);
	cr_assert_eq(scalar(&d, "SELECT count(*) FROM snapshots"), 2);

	struct fd_stream_load l;
	cr_assert_eq(fd_store_load_stream(d.pool, "order-u", 1, 0, &l), FD_OK);
	cr_assert_eq(l.snapshot_version, 3);
	json_t *s = parse(l.snapshot_json);
	cr_assert_eq(json_integer_value(json_object_get(s, "v")), 2);
	json_decref(s);
	assert_events(&l, 4, 3);
	fd_stream_load_release(&l);
	db_close(&d);
}

Test(snapshot, save_refuses_what_cannot_be_a_snapshot)
{
	struct db d = db_open(1);
	append_n(&d, "order-r", 3);
	cr_assert_eq(fd_store_save_snapshot(d.pool, "order-none", 1, 1, "{}"), FD_ERR_NOTFOUND);
	cr_assert_eq(fd_store_save_snapshot(d.pool, "order-r", 4, 1, "{}"), FD_ERR_INVAL, "past the stream's end");
	cr_assert_eq(fd_store_save_snapshot(d.pool, "order-r", 0, 1, "{}"), FD_ERR_INVAL);
	cr_assert_eq(fd_store_save_snapshot(d.pool, "order-r", 1, -1, "{}"), FD_ERR_INVAL);
	cr_assert_eq(fd_store_save_snapshot(d.pool, "order-r", 1, 1, NULL), FD_ERR_INVAL);
	cr_assert_eq(fd_store_save_snapshot(d.pool, "order-r", 1, 1, "{not json"), FD_ERR_INVAL);
	cr_assert_eq(fd_store_save_snapshot(d.pool, "order-r", 1, 1, "[1, 2]"), FD_ERR_INVAL, "not an object");
	cr_assert_eq(fd_store_save_snapshot(d.pool, "bad name", 1, 1, "{}"), FD_ERR_INVAL);
	cr_assert_eq(scalar(&d, "SELECT count(*) FROM snapshots"), 0);
	cr_assert_eq(fd_store_save_snapshot(d.pool, "order-r", 3, 0, "{}"), FD_OK, "schema 0 is a schema");
	db_close(&d);
}

/* ---------------------------------------------------------------- version at a moment */

/* recorded_at of an event, in microseconds since the epoch, read exactly. */
static int64_t recorded_us(struct db *d, const char *stream, int64_t version)
{
	char sql[256];
	snprintf(sql, sizeof sql,
		 "SELECT (extract(epoch FROM recorded_at) * 1000000)::bigint FROM events"
		 " WHERE stream_id = '%s' AND version = %lld",
		 stream, (long long)version);
	return scalar(d, sql);
}

static int64_t version_at(struct db *d, const char *stream, int64_t us)
{
	int64_t v = -1;
	cr_assert_eq(fd_store_version_at(d->pool, stream, us, &v), FD_OK);
	return v;
}

Test(version_at, before_between_and_after)
{
	struct db d = db_open(1);
	int64_t before = now_us();
	fd_test_sleep_ms(20);
	append_n(&d, "order-t", 1);
	append_n(&d, "order-t", 1);
	append_n(&d, "order-t", 1);
	fd_test_sleep_ms(20);
	int64_t middle = now_us();
	fd_test_sleep_ms(20);
	append_n(&d, "order-t", 2);

	cr_assert_eq(version_at(&d, "order-t", before), 0, "before the first event");
	cr_assert_eq(version_at(&d, "order-t", middle), 3, "between the appends");
	cr_assert_eq(version_at(&d, "order-t", now_us()), 5);
	cr_assert_eq(version_at(&d, "order-t", INT64_MAX), 5, "far future");
	cr_assert_eq(version_at(&d, "order-t", INT64_MIN), 0, "far past");
	cr_assert_eq(version_at(&d, "order-t", 0), 0);
	cr_assert_eq(version_at(&d, "order-none", INT64_MAX), 0, "no such stream");

	/* exact to the microsecond: the moment an event was recorded includes it, one before does not */
	for (int64_t v = 1; v <= 3; v++) {
		int64_t at = recorded_us(&d, "order-t", v);
		cr_assert_eq(version_at(&d, "order-t", at), v, "at the moment of version %lld", (long long)v);
		cr_assert_eq(version_at(&d, "order-t", at - 1), v - 1, "just before version %lld", (long long)v);
	}
	db_close(&d);
}

Test(version_at, before_1970)
{
	struct db d = db_open(1);
	append_n(&d, "order-old", 2);
	/* a history imported with its original times */
	PGconn *c = fd_test_connect(d.url);
	PGresult *res = PQexec(c, "UPDATE events SET recorded_at = CASE version"
				  " WHEN 1 THEN timestamptz '1969-12-31 23:59:59.999998+00'"
				  " ELSE timestamptz '1969-12-31 23:59:59.999999+00' END");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(res));
	PQclear(res);
	PQfinish(c);
	cr_assert_eq(version_at(&d, "order-old", -3), 0);
	cr_assert_eq(version_at(&d, "order-old", -2), 1);
	cr_assert_eq(version_at(&d, "order-old", -1), 2);
	cr_assert_eq(version_at(&d, "order-old", 0), 2);
	db_close(&d);
}

Test(version_at, invalid_input)
{
	struct db d = db_open(1);
	int64_t v = 99;
	cr_assert_eq(fd_store_version_at(d.pool, "bad name", 0, &v), FD_ERR_INVAL);
	cr_assert_eq(v, 0);
	cr_assert_eq(fd_store_version_at(d.pool, NULL, 0, &v), FD_ERR_INVAL);
	db_close(&d);
}

/* ---------------------------------------------------------------- stored events */

Test(stored_event, find_by_id_and_by_version)
{
	struct db d = db_open(1);
	append_n(&d, "order-f", 2);
	struct fd_event_in e = { .type = "Tagged", .data_json = "{}",
				 .metadata_json = "{\"idempotency_key\": \"k-1\", \"n\": [1, 2]}", .id_given = true };
	cr_assert_eq(fd_uuid_v7(&e.event_id), FD_OK);
	struct fd_append_result r;
	cr_assert_eq(fd_store_append(d.pool, "order-f", any, &e, 1, &r), FD_OK);

	struct fd_stored_event s;
	cr_assert_eq(fd_store_find_event(d.pool, &e.event_id, &s), FD_OK);
	cr_assert_str_eq(s.stream, "order-f");
	cr_assert_eq(s.version, 3);
	cr_assert_eq(fd_cursor_cmp(&s.position, &r.position), 0, "the append's position");
	json_t *meta = parse(s.metadata_json);
	json_t *want = parse(e.metadata_json);
	cr_assert(json_equal(meta, want), "metadata: %s", s.metadata_json);
	json_decref(meta);
	json_decref(want);
	fd_stored_event_release(&s);
	cr_assert_null(s.metadata_json);

	struct fd_stored_event at;
	cr_assert_eq(fd_store_event_at(d.pool, "order-f", 3, &at), FD_OK);
	cr_assert_str_eq(at.stream, "order-f");
	cr_assert_eq(at.version, 3);
	cr_assert_eq(fd_cursor_cmp(&at.position, &r.position), 0);
	cr_assert_not_null(at.metadata_json);
	fd_stored_event_release(&at);

	cr_assert_eq(fd_store_event_at(d.pool, "order-f", 1, &at), FD_OK);
	cr_assert_eq(at.version, 1);
	cr_assert_str_eq(at.metadata_json, "{}");
	cr_assert_lt(fd_cursor_cmp(&at.position, &r.position), 0, "an earlier event sorts earlier");
	fd_stored_event_release(&at);
	db_close(&d);
}

Test(stored_event, not_found_and_invalid)
{
	struct db d = db_open(1);
	append_n(&d, "order-n", 2);
	struct fd_uuid other;
	cr_assert_eq(fd_uuid_v7(&other), FD_OK);
	struct fd_stored_event s;
	cr_assert_eq(fd_store_find_event(d.pool, &other, &s), FD_ERR_NOTFOUND);
	cr_assert_null(s.metadata_json);
	cr_assert_eq(fd_store_find_event(d.pool, NULL, &s), FD_ERR_INVAL);
	cr_assert_eq(fd_store_event_at(d.pool, "order-n", 3, &s), FD_ERR_NOTFOUND);
	cr_assert_eq(fd_store_event_at(d.pool, "order-none", 1, &s), FD_ERR_NOTFOUND);
	cr_assert_eq(fd_store_event_at(d.pool, "order-n", 0, &s), FD_ERR_INVAL);
	cr_assert_eq(fd_store_event_at(d.pool, "bad name", 1, &s), FD_ERR_INVAL);
	db_close(&d);
}
