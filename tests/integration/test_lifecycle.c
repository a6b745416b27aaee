/*
 * test_lifecycle.c - forgetting events, over real HTTP and a real
 * PostgreSQL: soft and hard stream deletion, truncation (of an aggregate's
 * stream too, which gets its snapshot first), both racing appends, the
 * retention job (policies, batches, archives, their restore byte for byte,
 * nothing removed that is still in policy under an append load), and the
 * removal of ended sagas, which a late event does not bring back.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "factd/events.h"
#include "http_client.h"
#include "saga/rows.h"
#include "store/lifecycle.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

static struct fd_test_resp call(uint16_t port, const char *method, const char *path, const char *body, int status)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(port, method, path, body ? "Content-Type: application/json\r\n" : NULL, body,
				  body ? strlen(body) : 0, &r),
		     0);
	cr_assert_eq(r.status, status, "%s %s: %d %s", method, path, r.status, r.body);
	return r;
}

static void expect(uint16_t port, const char *method, const char *path, const char *body, int status)
{
	struct fd_test_resp r = call(port, method, path, body, status);
	fd_test_resp_free(&r);
}

static void problem(uint16_t port, const char *method, const char *path, const char *body, int status,
		    const char *slug)
{
	struct fd_test_resp r = call(port, method, path, body, status);
	fd_test_assert_problem(&r, status, slug);
	fd_test_resp_free(&r);
}

/* Append one event {"n": n} of type T with the expected version given as JSON text. */
static long long append(uint16_t port, const char *stream, const char *expected, int n, int status)
{
	char path[256], body[256];
	snprintf(path, sizeof path, "/streams/%s/events", stream);
	snprintf(body, sizeof body, "{\"expected_version\":%s,\"events\":[{\"type\":\"T\",\"data\":{\"n\":%d}}]}",
		 expected, n);
	struct fd_test_resp r = call(port, "POST", path, body, status);
	long long v = status == 201 ? fd_test_json_int(&r, "first_version") : 0;
	fd_test_resp_free(&r);
	return v;
}

static long long scalar(const struct fd_test_server *ts, const char *sql)
{
	return fd_test_server_scalar(ts, sql);
}

Test(lifecycle, a_soft_deleted_stream_answers_404_and_restarts_with_its_versions_going_on)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	for (int i = 1; i <= 3; i++)
		append(ts.port, "item-1", "\"any\"", i, 201);
	/* the expected version must hold; nothing is written when it does not */
	problem(ts.port, "DELETE", "/streams/item-1?expected_version=2", NULL, 409, "wrong-version");
	expect(ts.port, "GET", "/streams/item-1/events", NULL, 200);
	struct fd_test_resp r = call(ts.port, "DELETE", "/streams/item-1?expected_version=3", NULL, 200);
	cr_assert_eq(fd_test_json_int(&r, "deleted_version"), 4);
	fd_test_resp_free(&r);
	problem(ts.port, "GET", "/streams/item-1/events", NULL, 404, "stream-deleted");
	problem(ts.port, "DELETE", "/streams/item-1", NULL, 404, "stream-deleted");
	problem(ts.port, "POST", "/streams/item-1/truncate", "{\"before_version\":2}", 404, "stream-deleted");
	/* exists and an exact version do not restart it; no_stream does, at the next version */
	r = call(ts.port, "POST", "/streams/item-1/events",
		 "{\"expected_version\":\"exists\",\"events\":[{\"type\":\"T\",\"data\":{}}]}", 409);
	cr_assert_eq(fd_test_json_int(&r, "current_version"), 0);
	fd_test_resp_free(&r);
	append(ts.port, "item-1", "3", 9, 409);
	cr_assert_eq(append(ts.port, "item-1", "\"no_stream\"", 5, 201), 5);
	r = call(ts.port, "GET", "/streams/item-1/events", NULL, 200);
	json_t *evs = json_object_get(r.json, "events");
	cr_assert_eq(json_array_size(evs), 1, "only the new life: %s", r.body);
	cr_assert_eq(json_integer_value(json_object_get(json_array_get(evs, 0), "version")), 5);
	cr_assert_eq(fd_test_json_int(&r, "version"), 5);
	fd_test_resp_free(&r);
	/* the feed holds the old life and the $StreamDeleted event between them */
	/* an event shows in the feed once no older writing transaction of the cluster is open: wait for all 5 */
	for (int i = 0;; i++) {
		r = call(ts.port, "GET", "/events?category=item", NULL, 200);
		evs = json_object_get(r.json, "events");
		if (json_array_size(evs) == 5 || i == 100)
			break;
		fd_test_resp_free(&r);
		fd_test_sleep_ms(100);
	}
	cr_assert_eq(json_array_size(evs), 5, "%s", r.body);
	json_t *del = json_array_get(evs, 3);
	cr_assert_str_eq(json_string_value(json_object_get(del, "type")), FD_EVENT_STREAM_DELETED);
	cr_assert_eq(json_integer_value(json_object_get(del, "version")), 4);
	json_t *data = json_object_get(del, "data");
	cr_assert_eq(json_integer_value(json_object_get(data, "last_version")), 3);
	cr_assert(json_is_false(json_object_get(data, "hard")));
	fd_test_resp_free(&r);
	/* clients cannot write system events */
	r = call(ts.port, "POST", "/streams/item-2/events",
		 "{\"expected_version\":\"any\",\"events\":[{\"type\":\"$StreamDeleted\",\"data\":{}}]}", 400);
	cr_assert_str_eq(fd_test_json_str(&r, "field"), "/events/0/type");
	fd_test_resp_free(&r);
	problem(ts.port, "DELETE", "/streams/never-was", NULL, 404, "not-found");
	fd_test_server_stop(&ts);
}

Test(lifecycle, a_hard_deleted_stream_is_gone_for_good_with_its_snapshots)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"h-1\"}", 201);
	for (int i = 0; i < 6; i++)
		expect(ts.port, "POST", "/counters/h-1/add", "{\"amount\":1}", 200);
	fd_bus_flush(ts.bus);
	cr_assert_gt(scalar(&ts, "SELECT count(*) FROM snapshots WHERE stream_id = 'counter-h-1'"), 0);
	struct fd_test_resp r = call(ts.port, "DELETE", "/streams/counter-h-1?hard=true", NULL, 200);
	cr_assert_eq(fd_test_json_int(&r, "removed"), 7);
	fd_test_resp_free(&r);
	cr_assert_eq(scalar(&ts, "SELECT count(*) FROM snapshots WHERE stream_id = 'counter-h-1'"), 0);
	cr_assert_eq(scalar(&ts, "SELECT count(*) FROM events WHERE stream_id = 'counter-h-1' AND type <> '$StreamDeleted'"),
		     0);
	problem(ts.port, "GET", "/streams/counter-h-1/events", NULL, 410, "stream-tombstoned");
	problem(ts.port, "GET", "/counters/h-1", NULL, 410, "stream-tombstoned");
	problem(ts.port, "POST", "/counters/h-1/add", "{\"amount\":1}", 410, "stream-tombstoned");
	problem(ts.port, "POST", "/streams/counter-h-1/events",
		"{\"expected_version\":\"any\",\"events\":[{\"type\":\"CounterCreated\",\"data\":{}}]}", 410,
		"stream-tombstoned");
	append(ts.port, "item-h", "\"any\"", 1, 201);
	expect(ts.port, "DELETE", "/streams/item-h?hard=true", NULL, 200);
	problem(ts.port, "POST", "/streams/item-h/events",
		"{\"expected_version\":\"no_stream\",\"events\":[{\"type\":\"T\",\"data\":{}}]}", 410, "stream-tombstoned");
	problem(ts.port, "DELETE", "/streams/item-h", NULL, 410, "stream-tombstoned");
	problem(ts.port, "POST", "/streams/item-h/truncate", "{\"before_version\":1}", 410, "stream-tombstoned");
	fd_test_server_stop(&ts);
}

Test(lifecycle, a_deleted_aggregate_is_never_served_from_the_command_cache)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"d-1\"}", 201);
	expect(ts.port, "POST", "/counters/d-1/add", "{\"amount\":4}", 200); /* its state is now cached */
	expect(ts.port, "DELETE", "/streams/counter-d-1", NULL, 200);
	problem(ts.port, "POST", "/counters/d-1/add", "{\"amount\":4}", 404, "stream-deleted");
	problem(ts.port, "GET", "/counters/d-1", NULL, 404, "stream-deleted");
	/* restarted through the stream API, it loads from its new life only */
	expect(ts.port, "POST", "/streams/counter-d-1/events",
	       "{\"expected_version\":\"no_stream\",\"events\":[{\"type\":\"CounterCreated\",\"data\":{}}]}", 201);
	expect(ts.port, "POST", "/counters/d-1/add", "{\"amount\":2}", 200);
	struct fd_test_resp r = call(ts.port, "GET", "/counters/d-1", NULL, 200);
	cr_assert_eq(fd_test_json_int(&r, "total"), 2, "%s", r.body);
	cr_assert_eq(fd_test_json_int(&r, "version"), 5, "%s", r.body);
	fd_test_resp_free(&r);
	/* a point-in-time load of the old life is not found */
	problem(ts.port, "GET", "/counters/d-1?version=2", NULL, 404, "not-found");
	fd_test_server_stop(&ts);
}

Test(lifecycle, truncating_an_aggregates_stream_snapshots_it_first_so_it_still_loads)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"t-1\"}", 201);
	expect(ts.port, "POST", "/counters/t-1/add", "{\"amount\":3}", 200);
	expect(ts.port, "POST", "/counters/t-1/add", "{\"amount\":4}", 200);
	cr_assert_eq(scalar(&ts, "SELECT count(*) FROM snapshots WHERE stream_id = 'counter-t-1'"), 0);
	problem(ts.port, "POST", "/streams/counter-t-1/truncate", "{\"before_version\":5}", 409, "truncate-beyond-end");
	struct fd_test_resp r = call(ts.port, "POST", "/streams/counter-t-1/truncate", "{\"before_version\":4}", 200);
	cr_assert_eq(fd_test_json_int(&r, "removed"), 3, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(scalar(&ts, "SELECT count(*) FROM snapshots WHERE stream_id = 'counter-t-1' AND version = 3"), 1);
	cr_assert_eq(scalar(&ts, "SELECT count(*) FROM events WHERE stream_id = 'counter-t-1'"), 0);
	r = call(ts.port, "GET", "/counters/t-1", NULL, 200);
	cr_assert_eq(fd_test_json_int(&r, "total"), 7, "%s", r.body);
	fd_test_resp_free(&r);
	expect(ts.port, "POST", "/counters/t-1/add", "{\"amount\":1}", 200);
	r = call(ts.port, "GET", "/counters/t-1", NULL, 200);
	cr_assert_eq(fd_test_json_int(&r, "total"), 8);
	cr_assert_eq(fd_test_json_int(&r, "version"), 4);
	fd_test_resp_free(&r);
	r = call(ts.port, "GET", "/counters/t-1/events", NULL, 200);
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 1, "%s", r.body);
	fd_test_resp_free(&r);
	/* a stream no aggregate owns is cut anywhere */
	for (int i = 1; i <= 4; i++)
		append(ts.port, "item-t", "\"any\"", i, 201);
	expect(ts.port, "POST", "/streams/item-t/truncate", "{\"before_version\":3}", 200);
	r = call(ts.port, "GET", "/streams/item-t/events", NULL, 200);
	json_t *evs = json_object_get(r.json, "events");
	cr_assert_eq(json_array_size(evs), 2);
	cr_assert_eq(json_integer_value(json_object_get(json_array_get(evs, 0), "version")), 3);
	fd_test_resp_free(&r);
	problem(ts.port, "POST", "/streams/item-t/truncate", "{\"before_version\":0}", 400, "invalid-field");
	problem(ts.port, "POST", "/streams/item-t/truncate", "{\"before\":3}", 400, "invalid-field");
	problem(ts.port, "POST", "/streams/nothing/truncate", "{\"before_version\":3}", 404, "not-found");
	fd_test_server_stop(&ts);
}

/* ---- racing appends ----------------------------------------------------- */

struct racer {
	uint16_t port;
	const char *stream;
	int n;
	atomic_int *done;
	long long *versions; /* first_version of each append, 0 when refused */
};

static void *append_many(void *arg)
{
	struct racer *a = arg;
	for (int i = 0; i < a->n; i++) {
		char path[128];
		snprintf(path, sizeof path, "/streams/%s/events", a->stream);
		struct fd_test_resp r;
		const char *body = "{\"expected_version\":\"any\",\"events\":[{\"type\":\"T\",\"data\":{}}]}";
		cr_assert_eq(fd_test_http(a->port, "POST", path, "Content-Type: application/json\r\n", body, strlen(body),
					  &r),
			     0);
		cr_assert_eq(r.status, 201, "%s", r.body);
		a->versions[i] = fd_test_json_int(&r, "first_version");
		fd_test_resp_free(&r);
	}
	atomic_fetch_add(a->done, 1);
	return NULL;
}

Test(lifecycle, deletion_and_truncation_racing_appends_lose_nothing_and_apply_nothing_twice, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	append(ts.port, "race-1", "\"any\"", 0, 201);
	append(ts.port, "race-2", "\"any\"", 0, 201);
	enum { THREADS = 3, N = 40 };
	atomic_int done = 0;
	pthread_t th[2 * THREADS];
	struct racer rs[2 * THREADS];
	long long versions[2 * THREADS][N];
	for (int i = 0; i < 2 * THREADS; i++) {
		rs[i] = (struct racer){ ts.port, i < THREADS ? "race-1" : "race-2", N, &done, versions[i] };
		cr_assert_eq(pthread_create(&th[i], NULL, append_many, &rs[i]), 0);
	}
	/* delete race-1 and truncate race-2 while they are appended to */
	fd_test_sleep_ms(100);
	struct fd_test_resp r = call(ts.port, "DELETE", "/streams/race-1", NULL, 200);
	long long deleted = fd_test_json_int(&r, "deleted_version");
	fd_test_resp_free(&r);
	long long cut = 0;
	for (;;) {
		r = call(ts.port, "GET", "/streams/race-2/events?limit=1", NULL, 200);
		cut = fd_test_json_int(&r, "version");
		fd_test_resp_free(&r);
		if (cut > 10 || atomic_load(&done) == 2 * THREADS)
			break;
	}
	char body[64];
	snprintf(body, sizeof body, "{\"before_version\":%lld}", cut);
	expect(ts.port, "POST", "/streams/race-2/truncate", body, 200);
	for (int i = 0; i < 2 * THREADS; i++)
		pthread_join(th[i], NULL);
	/* race-1: every append is stored once, versions 1..max without a gap; the new life is what came after */
	long long total = 1 + THREADS * N + 1, after = 0;
	cr_assert_eq(scalar(&ts, "SELECT count(*) FROM events WHERE stream_id = 'race-1'"), total);
	cr_assert_eq(scalar(&ts, "SELECT count(DISTINCT version) FROM events WHERE stream_id = 'race-1'"), total);
	cr_assert_eq(scalar(&ts, "SELECT max(version) FROM events WHERE stream_id = 'race-1'"), total);
	for (int i = 0; i < THREADS; i++)
		for (int k = 0; k < N; k++) {
			cr_assert_neq(versions[i][k], deleted);
			after += versions[i][k] > deleted;
		}
	r = call(ts.port, "GET", "/streams/race-1/events?limit=1000", NULL, after ? 200 : 404);
	if (after)
		cr_assert_eq((long long)json_array_size(json_object_get(r.json, "events")), after, "%s", r.body);
	fd_test_resp_free(&r);
	/* race-2: exactly the events below the cut are gone */
	char *q = fd_test_fmt("SELECT count(*) FROM events WHERE stream_id = 'race-2' AND version < %lld", cut);
	cr_assert_eq(scalar(&ts, q), 0);
	free(q);
	q = fd_test_fmt("SELECT count(*) FROM events WHERE stream_id = 'race-2' AND version >= %lld", cut);
	cr_assert_eq(scalar(&ts, q), 1 + THREADS * N - cut + 1);
	free(q);
	fd_test_server_stop(&ts);
}

/* ---- retention and archives -------------------------------------------- */

static char archive_dir[256];

static void retention_fast(struct fd_config *c)
{
	c->retention_interval_s = 1;
	c->retention_batch = 3; /* several batches per round */
	free(c->archive_dir);
	c->archive_dir = archive_dir[0] ? strdup(archive_dir) : NULL;
}

static void make_archive_dir(void)
{
	snprintf(archive_dir, sizeof archive_dir, "/tmp/factd-archive-XXXXXX");
	cr_assert(mkdtemp(archive_dir));
}

/* The decompressed text of every archive in the directory, in name order of their first positions. */
static char *read_archives(int *files)
{
	DIR *d = opendir(archive_dir);
	cr_assert(d);
	struct dirent *e;
	char *names[256];
	int n = 0;
	while ((e = readdir(d)))
		if (strstr(e->d_name, ".jsonl.gz") && e->d_name[0] != '.' && n < 256)
			names[n++] = strdup(e->d_name);
	closedir(d);
	*files = n;
	size_t cap = 1 << 20, len = 0;
	char *out = calloc(1, cap);
	/* archives of one category are written in feed order; sort by their first position's numbers */
	for (int i = 0; i < n; i++)
		for (int k = i + 1; k < n; k++) {
			unsigned long long ti, si, tk, sk;
			sscanf(strchr(names[i], '.') + 1, "%llu-%llu", &ti, &si);
			sscanf(strchr(names[k], '.') + 1, "%llu-%llu", &tk, &sk);
			if (tk < ti || (tk == ti && sk < si)) {
				char *t = names[i];
				names[i] = names[k];
				names[k] = t;
			}
		}
	for (int i = 0; i < n; i++) {
		char path[512];
		snprintf(path, sizeof path, "%s/%s", archive_dir, names[i]);
		gzFile gz = gzopen(path, "rb");
		cr_assert(gz);
		int got;
		while ((got = gzread(gz, out + len, (unsigned)(cap - len - 1))) > 0)
			len += (size_t)got;
		gzclose(gz);
		free(names[i]);
	}
	out[len] = '\0';
	return out;
}

/* The feed of a category as lines, one per event, as GET /events renders them. */
static char *feed_lines(uint16_t port, const char *category)
{
	char path[128];
	snprintf(path, sizeof path, "/events?category=%s&limit=1000", category);
	struct fd_test_resp r = call(port, "GET", path, NULL, 200);
	json_t *evs = json_object_get(r.json, "events");
	size_t cap = 1 << 20, len = 0;
	char *out = calloc(1, cap);
	/* split the page's text itself, not a re-serialisation: each event object between the array's commas */
	const char *p = strstr(r.body, "\"events\":[") + 10;
	for (size_t i = 0; i < json_array_size(evs); i++) {
		int depth = 0;
		const char *s = p;
		bool in_str = false;
		for (; *p; p++) {
			if (in_str) {
				if (*p == '\\')
					p++;
				else if (*p == '"')
					in_str = false;
			} else if (*p == '"')
				in_str = true;
			else if (*p == '{')
				depth++;
			else if (*p == '}' && --depth == 0) {
				p++;
				break;
			}
		}
		memcpy(out + len, s, (size_t)(p - s));
		len += (size_t)(p - s);
		out[len++] = '\n';
		if (*p == ',')
			p++;
	}
	fd_test_resp_free(&r);
	return out;
}

static bool wait_for(const struct fd_test_server *ts, const char *sql, long long want, int seconds)
{
	for (int i = 0; i < seconds * 10; i++) {
		if (scalar(ts, sql) == want)
			return true;
		fd_test_sleep_ms(100);
	}
	return false;
}

Test(lifecycle, retention_by_count_archives_before_it_removes_and_the_archive_restores_byte_for_byte, .timeout = 120)
{
	make_archive_dir();
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, retention_fast);
	for (int s = 1; s <= 3; s++)
		for (int i = 1; i <= 5; i++) {
			char stream[32];
			snprintf(stream, sizeof stream, "keep-%d", s);
			append(ts.port, stream, "\"any\"", i, 201);
		}
	append(ts.port, "other-1", "\"any\"", 1, 201);
	/*
	 * The feed shows an event once no older writing transaction is open
	 * (the projector's or the saga intake's may be): read it until all 15 are there.
	 */
	char *before = NULL;
	for (int i = 0; i < 100; i++) {
		free(before);
		before = feed_lines(ts.port, "keep");
		size_t n = 0;
		for (const char *c = before; *c; c++)
			n += *c == '\n';
		if (n == 15)
			break;
		fd_test_sleep_ms(100);
	}
	problem(ts.port, "GET", "/retention/keep", NULL, 404, "not-found");
	struct fd_test_resp r = call(ts.port, "PUT", "/retention/keep", "{\"max_count_per_stream\":2}", 200);
	cr_assert_eq(fd_test_json_int(&r, "max_count_per_stream"), 2);
	cr_assert_null(json_object_get(r.json, "max_age_days"));
	fd_test_resp_free(&r);
	r = call(ts.port, "GET", "/retention", NULL, 200);
	cr_assert_eq(json_array_size(json_object_get(r.json, "policies")), 1, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert(wait_for(&ts, "SELECT count(*) FROM events WHERE category = 'keep'", 6, 60),
		  "the retention job did not remove the events past the newest 2 of each stream");
	cr_assert_eq(scalar(&ts, "SELECT count(*) FROM events WHERE category = 'keep' AND version < 4"), 0);
	cr_assert_eq(scalar(&ts, "SELECT count(*) FROM events WHERE category = 'other'"), 1);
	/* the stream reads what is left */
	r = call(ts.port, "GET", "/streams/keep-1/events", NULL, 200);
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 2);
	fd_test_resp_free(&r);
	expect(ts.port, "DELETE", "/retention/keep", NULL, 204);
	problem(ts.port, "DELETE", "/retention/keep", NULL, 404, "not-found");

	/* the archives hold exactly the removed events, as the feed rendered them */
	int files = 0;
	char *archived = read_archives(&files);
	cr_assert_geq(files, 3, "batches of 3 make several archives");
	char *expected = calloc(1, strlen(before) + 1);
	size_t el = 0;
	for (char *line = before; *line;) {
		char *nl = strchr(line, '\n');
		*nl = '\0';
		bool old = strstr(line, "\"version\":1,") || strstr(line, "\"version\":2,") || strstr(line, "\"version\":3,");
		*nl = '\n';
		if (old) {
			memcpy(expected + el, line, (size_t)(nl - line + 1));
			el += (size_t)(nl - line + 1);
		}
		line = nl + 1;
	}
	cr_assert_str_eq(archived, expected);

	/* restored, the feed is what it was, byte for byte, at the same positions */
	PGconn *c = fd_test_connect(ts.db_url);
	DIR *d = opendir(archive_dir);
	struct dirent *e;
	size_t restored_all = 0;
	while ((e = readdir(d))) {
		if (!strstr(e->d_name, ".jsonl.gz") || e->d_name[0] == '.')
			continue;
		char path[512], errbuf[256] = "";
		snprintf(path, sizeof path, "%s/%s", archive_dir, e->d_name);
		size_t restored = 0, skipped = 0;
		cr_assert_eq(fd_archive_restore(c, path, &restored, &skipped, errbuf, sizeof errbuf), FD_OK, "%s", errbuf);
		restored_all += restored;
		/* again: nothing new */
		cr_assert_eq(fd_archive_restore(c, path, &restored, &skipped, errbuf, sizeof errbuf), FD_OK);
		cr_assert_eq(restored, 0);
	}
	closedir(d);
	PQfinish(c);
	cr_assert_eq(restored_all, 9);
	char *after = feed_lines(ts.port, "keep");
	cr_assert_str_eq(after, before);
	free(before);
	free(after);
	free(archived);
	free(expected);
	fd_test_server_stop(&ts);
}

struct loader {
	uint16_t port;
	atomic_bool *stop;
	int appended;
};

static void *load_appends(void *arg)
{
	struct loader *l = arg;
	while (!atomic_load(l->stop)) {
		char stream[32];
		snprintf(stream, sizeof stream, "aged-new%d", l->appended % 7);
		append(l->port, stream, "\"any\"", l->appended, 201);
		l->appended++;
	}
	return NULL;
}

Test(lifecycle, retention_by_age_under_an_append_load_removes_nothing_still_in_policy, .timeout = 120)
{
	archive_dir[0] = '\0';
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, retention_fast);
	for (int i = 1; i <= 20; i++)
		append(ts.port, i % 2 ? "aged-old1" : "aged-old2", "\"any\"", i, 201);
	/* make the first 20 events three days old */
	PGconn *c = fd_test_connect(ts.db_url);
	PQclear(PQexec(c, "UPDATE events SET recorded_at = recorded_at - interval '3 days' WHERE category = 'aged'"));
	PQfinish(c);
	atomic_bool stop = false;
	struct loader l = { ts.port, &stop, 0 };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, load_appends, &l), 0);
	fd_test_sleep_ms(200);
	expect(ts.port, "PUT", "/retention/aged", "{\"max_age_days\":2}", 200);
	bool gone = wait_for(&ts, "SELECT count(*) FROM events WHERE stream_id LIKE 'aged-old%'", 0, 60);
	fd_test_sleep_ms(1500); /* another round or two under load */
	atomic_store(&stop, true);
	pthread_join(th, NULL);
	cr_assert(gone, "the old events were not removed");
	char *q = fd_test_fmt("SELECT count(*) FROM events WHERE stream_id LIKE 'aged-new%%'");
	cr_assert_eq(scalar(&ts, q), l.appended, "an event still in policy was removed");
	free(q);
	cr_assert_gt(l.appended, 0);
	fd_test_server_stop(&ts);
}

/* ---- saga cleanup ------------------------------------------------------- */

static void sagas_and_cleanup(struct fd_config *c)
{
	c->sagas = 1;
	c->saga_workers = 2;
	c->saga_poll_ms = 20;
	c->saga_time_pct = 10;
	c->saga_retention_s = 1;
	c->retention_interval_s = 1;
}

Test(lifecycle, ended_sagas_are_removed_and_a_late_event_does_not_start_them_again, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, sagas_and_cleanup);
	/* c-full's saga closes it and completes; c-open's waits (running) and must stay */
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-full\"}", 201);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-open\"}", 201);
	expect(ts.port, "POST", "/counters/c-full/add", "{\"amount\":100}", 200);
	expect(ts.port, "POST", "/counters/c-open/add", "{\"amount\":1}", 200);
	cr_assert(wait_for(&ts, "SELECT count(*) FROM saga_tombstones WHERE correlation_key = 'c-full'", 1, 60),
		  "the completed saga was not removed");
	cr_assert_eq(scalar(&ts, "SELECT count(*) FROM sagas WHERE correlation_key = 'c-full'"), 0);
	cr_assert_eq(scalar(&ts, "SELECT count(*) FROM saga_steps s WHERE NOT EXISTS (SELECT 1 FROM sagas WHERE id = s.saga_id)"),
		     0);
	problem(ts.port, "GET", "/counters/c-full/saga", NULL, 404, NULL);
	PGconn *c = fd_test_connect(ts.db_url);
	PGresult *res = PQexec(c, "SELECT saga_id::text FROM saga_tombstones WHERE correlation_key = 'c-full'");
	char *path = fd_test_fmt("/sagas/%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	problem(ts.port, "GET", path, NULL, 404, NULL);
	free(path);
	/* the aggregate and its events are untouched */
	struct fd_test_resp r = call(ts.port, "GET", "/counters/c-full", NULL, 200);
	cr_assert_str_eq(fd_test_json_str(&r, "status"), "closed");
	fd_test_resp_free(&r);
	/* the running saga stays, however long it waits */
	fd_test_sleep_ms(2500);
	cr_assert_eq(scalar(&ts, "SELECT count(*) FROM sagas WHERE correlation_key = 'c-open' AND status = 'running'"), 1);
	/* a late starting event for the same key: the counter deleted and created again under its id */
	expect(ts.port, "DELETE", "/streams/counter-c-full", NULL, 200);
	r = call(ts.port, "POST", "/streams/counter-c-full/events",
		 "{\"expected_version\":\"no_stream\",\"events\":[{\"type\":\"CounterCreated\",\"data\":{}}]}", 201);
	char *pos = fd_test_fmt("%s", fd_test_json_str(&r, "position"));
	fd_test_resp_free(&r);
	/* wait until the intake has read past it: its checkpoint passes the event's position */
	unsigned long long ptx, pseq;
	cr_assert_eq(sscanf(pos, "%llu-%llu", &ptx, &pseq), 2);
	char *q = fd_test_fmt("SELECT count(*) FROM subscriptions WHERE name = 'sagas' AND (tx_id::text::numeric, seq) >= "
			      "(%llu, %llu)",
			      ptx, pseq);
	cr_assert(wait_for(&ts, q, 1, 60), "the saga intake did not read the late event");
	free(q);
	free(pos);
	cr_assert_eq(scalar(&ts, "SELECT count(*) FROM sagas WHERE correlation_key = 'c-full'"), 0,
		     "a late event started the ended process again");
	PQfinish(c);
	fd_test_server_stop(&ts);
}

struct locker_arg {
	const char *url;
	atomic_bool finished;
};

static void *cleanup_thread(void *arg)
{
	struct locker_arg *a = arg;
	PGconn *c = fd_test_connect(a->url);
	int64_t n = -1;
	cr_assert_eq(fd_saga_cleanup_batch(c, 0, 100, &n), FD_OK);
	PQfinish(c);
	atomic_store(&a->finished, true);
	return NULL;
}

Test(lifecycle, saga_removal_waits_for_an_intake_batch_in_progress, .timeout = 60)
{
	char *url = fd_test_db_new();
	PGconn *intake = fd_test_connect(url);
	PQclear(PQexec(intake, "INSERT INTO subscriptions (name) VALUES ('sagas')"));
	PQclear(PQexec(intake, "INSERT INTO sagas (id, type, correlation_key, status, phase, updated_at)"
			       " VALUES (gen_random_uuid(), 'x', 'k', 'completed', 'done', now() - interval '1 hour')"));
	/* an intake batch holds its checkpoint row */
	PQclear(PQexec(intake, "BEGIN"));
	PQclear(PQexec(intake, "SELECT 1 FROM subscriptions WHERE name = 'sagas' FOR UPDATE"));
	struct locker_arg a = { url, false };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, cleanup_thread, &a), 0);
	fd_test_sleep_ms(500);
	cr_assert(!atomic_load(&a.finished), "the removal ran beside an intake batch");
	/* meanwhile the batch sees the saga, so it cannot start another for its key */
	cr_assert_eq(fd_test_scalar(intake, "SELECT count(*) FROM sagas WHERE correlation_key = 'k'"), 1);
	PQclear(PQexec(intake, "COMMIT"));
	pthread_join(th, NULL);
	cr_assert(atomic_load(&a.finished));
	cr_assert_eq(fd_test_scalar(intake, "SELECT count(*) FROM sagas"), 0);
	cr_assert_eq(fd_test_scalar(intake, "SELECT count(*) FROM saga_tombstones WHERE correlation_key = 'k'"), 1);
	PQfinish(intake);
	free(url);
}

/* ---- the retention job's metrics ------------------------------------------------ */

/* The value of an unlabelled series in a /metrics body. */
static double metric(const char *body, const char *name)
{
	size_t n = strlen(name);
	for (const char *l = body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (strncmp(l, name, n) == 0 && l[n] == ' ')
			return strtod(l + n + 1, NULL);
	cr_assert_fail("no series %s in /metrics", name);
	return -1;
}

static char *metrics_body(uint16_t port)
{
	struct fd_test_resp r = call(port, "GET", "/metrics", NULL, 200);
	char *b = strdup(r.body);
	fd_test_resp_free(&r);
	return b;
}

static void retention_and_sagas(struct fd_config *c)
{
	retention_fast(c);
	c->sagas = 1;
	c->saga_workers = 2;
	c->saga_poll_ms = 20;
	c->saga_time_pct = 10;
	c->saga_retention_s = 1;
}

Test(lifecycle, the_retention_jobs_metrics_count_what_its_rounds_removed_and_archived, .timeout = 120)
{
	make_archive_dir();
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, retention_and_sagas);
	long long started = (long long)time(NULL);
	char *b = metrics_body(ts.port);
	double removed0 = metric(b, "factd_retention_events_removed_total");
	double archived0 = metric(b, "factd_retention_events_archived_total");
	double files0 = metric(b, "factd_retention_archive_files_total");
	double sagas0 = metric(b, "factd_retention_sagas_removed_total");
	double errors0 = metric(b, "factd_retention_errors_total");
	double runs0 = metric(b, "factd_retention_runs_total");
	cr_assert_eq(removed0 + archived0 + files0 + sagas0, 0, "nothing was due before: %s", b);
	free(b);

	/* 2 streams of 5 events, at most 2 kept each: 6 removed and archived; one saga ends and is removed */
	for (int s = 1; s <= 2; s++)
		for (int i = 1; i <= 5; i++)
			append(ts.port, fd_test_P("metr-%d", s), "\"any\"", i, 201);
	expect(ts.port, "POST", "/counters", "{\"counter_id\":\"c-metr\"}", 201);
	expect(ts.port, "POST", "/counters/c-metr/add", "{\"amount\":100}", 200);
	expect(ts.port, "PUT", "/retention/metr", "{\"max_count_per_stream\":2}", 200);
	cr_assert(wait_for(&ts, "SELECT count(*) FROM events WHERE category = 'metr'", 4, 60));
	cr_assert(wait_for(&ts, "SELECT count(*) FROM saga_tombstones WHERE correlation_key = 'c-metr'", 1, 60));

	/* the counters move at the end of the round that did it */
	double removed = 0, sagas = 0;
	for (int i = 0; i < 300; i++) {
		b = metrics_body(ts.port);
		removed = metric(b, "factd_retention_events_removed_total") - removed0;
		sagas = metric(b, "factd_retention_sagas_removed_total") - sagas0;
		if (removed >= 6 && sagas >= 1)
			break;
		free(b);
		b = NULL;
		fd_test_sleep_ms(50);
	}
	cr_assert(b, "the metrics never showed the round");
	int files = 0;
	free(read_archives(&files));
	cr_assert_geq(files, 2, "batches of 3 events make at least two archives");
	cr_assert_eq(removed, 6, "%s", b);
	cr_assert_eq(metric(b, "factd_retention_events_archived_total") - archived0, 6, "%s", b);
	cr_assert_eq(metric(b, "factd_retention_archive_files_total") - files0, files, "%s", b);
	cr_assert_eq(sagas, 1, "%s", b);
	cr_assert_eq(metric(b, "factd_retention_errors_total") - errors0, 0, "%s", b);
	cr_assert_gt(metric(b, "factd_retention_runs_total"), runs0, "%s", b);
	double last = metric(b, "factd_retention_last_run_timestamp_seconds");
	cr_assert(last >= (double)started && last <= (double)time(NULL) + 1, "last run %f, started %lld", last, started);
	free(b);
	fd_test_server_stop(&ts);
}
