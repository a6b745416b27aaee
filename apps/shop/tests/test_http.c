/*
 * test_http.c - the HTTP API's success paths against a real PostgreSQL:
 * append (201, Location, position), stream reads with ETag, every expected-
 * version form, idempotent repeats, duplicate event ids, the global feed with
 * paging and filters, metadata stamping, request ids, exact numbers, health
 * and readiness (also against an unmigrated and an unreachable database),
 * concurrent writers on one stream and a graceful stop with requests in
 * flight.
 *
 * Each test starts its own in-process server on its own database (criterion
 * runs tests in parallel processes).  Worker threads in the concurrency and
 * shutdown tests only record what happened; the assertions run on the test's
 * main thread.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "factd/events.h"
#include "factd/jsonspan.h"
#include "factd/pool.h"
#include "http/problem.h"
#include "factd/uuid.h"
#include "http_client.h"
#define FD_TEST_APP (&shop_app) /* the shop's routes and types */
#include "shop.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------------ */

static void post_h(const struct fd_test_server *ts, const char *stream, const char *headers, const char *body,
		   struct fd_test_resp *r)
{
	char path[512];
	snprintf(path, sizeof path, "/streams/%s/events", stream);
	cr_assert_eq(fd_test_http(ts->port, "POST", path, headers, body, strlen(body), r), 0, "POST %s: no connection",
		     path);
}

static void post(const struct fd_test_server *ts, const char *stream, const char *body, struct fd_test_resp *r)
{
	post_h(ts, stream, NULL, body, r);
}

static void get(const struct fd_test_server *ts, const char *path, struct fd_test_resp *r)
{
	cr_assert_eq(fd_test_get(ts->port, path, r), 0, "GET %s: no connection", path);
}

static const char *header(const struct fd_test_resp *r, const char *name)
{
	static char buf[4][512];
	static int next;
	char *b = buf[next++ % 4];
	return fd_test_header(r, name, b, sizeof buf[0]);
}

static void assert_json_ct(const struct fd_test_resp *r)
{
	const char *ct = header(r, "Content-Type");
	cr_assert(ct, "no Content-Type; head: %s", r->head);
	cr_assert_str_eq(ct, "application/json");
	cr_assert(json_is_object(r->json), "body is not a JSON object: %s", r->body);
}

static int is_cursor(const char *s)
{
	struct fd_cursor c;
	if (!s || !fd_cursor_parse(s, &c))
		return 0;
	size_t d = strspn(s, "0123456789");
	return d > 0 && s[d] == '-' && strspn(s + d + 1, "0123456789") == strlen(s + d + 1) && s[d + 1];
}

static int cursor_cmp_str(const char *a, const char *b)
{
	struct fd_cursor ca, cb;
	cr_assert(fd_cursor_parse(a, &ca), "bad cursor %s", a);
	cr_assert(fd_cursor_parse(b, &cb), "bad cursor %s", b);
	return fd_cursor_cmp(&ca, &cb);
}

/* YYYY-MM-DDTHH:MM:SS.ffffffZ */
static int is_timestamp(const char *s)
{
	static const char pat[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
	if (!s || strlen(s) != sizeof pat - 1)
		return 0;
	for (size_t i = 0; pat[i]; i++)
		if (pat[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != pat[i])
			return 0;
	return 1;
}

/* Assert a 201/200 append result: exactly stream, first_version, last_version, position. */
static void assert_append_result(const struct fd_test_resp *r, int status, const char *stream, long long first,
				 long long last)
{
	cr_assert_eq(r->status, status, "status %d, expected %d: %s", r->status, status, r->body);
	assert_json_ct(r);
	cr_assert_eq(json_object_size(r->json), 4, "unexpected members: %s", r->body);
	cr_assert_str_eq(fd_test_json_str(r, "stream"), stream);
	cr_assert_eq(fd_test_json_int(r, "first_version"), first, "%s", r->body);
	cr_assert_eq(fd_test_json_int(r, "last_version"), last, "%s", r->body);
	const char *pos = fd_test_json_str(r, "position");
	cr_assert(is_cursor(pos), "position %s is not a cursor", pos ? pos : "(null)");
	cr_assert_str_neq(pos, "0-0");
}

/* Assert one stored event's full shape. */
static void assert_event_shape(json_t *e, const char *stream, long long version)
{
	cr_assert(json_is_object(e));
	cr_assert_eq(json_object_size(e), 8, "an event has exactly 8 members");
	cr_assert_str_eq(json_string_value(json_object_get(e, "stream")), stream);
	cr_assert(json_is_integer(json_object_get(e, "version")));
	if (version > 0)
		cr_assert_eq(json_integer_value(json_object_get(e, "version")), version);
	const char *type = json_string_value(json_object_get(e, "type"));
	cr_assert(type && *type);
	cr_assert(json_is_object(json_object_get(e, "data")));
	cr_assert(json_is_object(json_object_get(e, "metadata")));
	struct fd_uuid u;
	cr_assert(fd_uuid_parse(json_string_value(json_object_get(e, "event_id")), &u), "event_id");
	cr_assert(is_timestamp(json_string_value(json_object_get(e, "recorded_at"))), "recorded_at %s",
		  json_string_value(json_object_get(e, "recorded_at")));
	cr_assert(is_cursor(json_string_value(json_object_get(e, "position"))));
}

static long long db_count(const struct fd_test_server *ts, const char *sql)
{
	return fd_test_server_scalar(ts, sql);
}

static const char *ev_str(json_t *e, const char *k)
{
	return json_string_value(json_object_get(e, k));
}

static long long ev_int(json_t *e, const char *k)
{
	return (long long)json_integer_value(json_object_get(e, k));
}

/* ---- append and read ------------------------------------------------------------ */

Test(http_append, created_with_location_and_position)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(id);
	char *body = fd_test_fmt("{\"expected_version\":0,\"events\":["
			 "{\"event_id\":\"%s\",\"type\":\"OrderPlaced\",\"data\":{\"sku\":\"BK-1\",\"qty\":2},"
			 "\"metadata\":{\"user_agent\":\"t/1\"}},"
			 "{\"type\":\"OrderConfirmed\",\"data\":{}}]}",
			 id);
	struct fd_test_resp r;
	post(&ts, "order-1", body, &r);
	assert_append_result(&r, 201, "order-1", 1, 2);
	cr_assert_str_eq(header(&r, "Location"), "/streams/order-1/events?from_version=1");
	cr_assert(header(&r, "X-Request-Id"));
	char pos1[FD_CURSOR_STRLEN];
	snprintf(pos1, sizeof pos1, "%s", fd_test_json_str(&r, "position"));
	fd_test_resp_free(&r);
	free(body);

	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM events"), 2);
	cr_assert_eq(db_count(&ts, "SELECT version FROM streams WHERE stream_id = 'order-1'"), 2);
	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM streams WHERE stream_id = 'order-1' AND category = 'order'"), 1);
	char *sql = fd_test_fmt("SELECT version FROM events WHERE event_id = '%s'", id);
	cr_assert_eq(db_count(&ts, sql), 1, "the client's event_id is stored on the first event");
	free(sql);
	/* The position is the cursor of the last event written. */
	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM events WHERE version = 2 AND"
				   " tx_id::text || '-' || seq::text = (SELECT max(tx_id::text || '-' || seq::text) FROM events)"), 1);
	sql = fd_test_fmt("SELECT count(*) FROM events WHERE stream_id = 'order-1' AND version = 2 AND tx_id::text || '-' || seq::text = '%s'",
		  pos1);
	cr_assert_eq(db_count(&ts, sql), 1, "position %s is not the last event's", pos1);
	free(sql);

	post(&ts, "order-1", "{\"expected_version\":2,\"events\":[{\"type\":\"OrderShipped\",\"data\":{\"carrier\":\"x\"}}]}", &r);
	assert_append_result(&r, 201, "order-1", 3, 3);
	cr_assert_str_eq(header(&r, "Location"), "/streams/order-1/events?from_version=3");
	cr_assert_gt(cursor_cmp_str(fd_test_json_str(&r, "position"), pos1), 0, "positions grow");
	fd_test_resp_free(&r);
	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM events"), 3);
	fd_test_server_stop(&ts);
}

Test(http_append, content_type_with_charset_accepted)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	const char *body = "{\"expected_version\":\"any\",\"events\":[{\"type\":\"A\",\"data\":{}}]}";
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts.port, "POST", "/streams/ct-1/events", "Content-Type: application/json; charset=utf-8\r\n",
				  body, strlen(body), &r), 0);
	assert_append_result(&r, 201, "ct-1", 1, 1);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_http(ts.port, "POST", "/streams/ct-1/events", "Content-Type: Application/JSON\r\n", body,
				  strlen(body), &r), 0);
	assert_append_result(&r, 201, "ct-1", 2, 2);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(http_append, type_of_200_characters_and_stream_of_200_accepted)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char type[401] = "", stream[201];
	for (int i = 0; i < 200; i++)
		strcat(type, "\xc3\xa9"); /* 200 characters, 400 bytes */
	memset(stream, 'S', 200);
	stream[200] = '\0';
	char *body = fd_test_fmt("{\"expected_version\":\"no_stream\",\"events\":[{\"type\":\"%s\",\"data\":{}}]}", type);
	struct fd_test_resp r;
	post(&ts, stream, body, &r);
	assert_append_result(&r, 201, stream, 1, 1);
	fd_test_resp_free(&r);
	free(body);
	char *path = fd_test_fmt("/streams/%s/events", stream);
	get(&ts, path, &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *e = json_array_get(json_object_get(r.json, "events"), 0);
	cr_assert_str_eq(ev_str(e, "type"), type);
	fd_test_resp_free(&r);
	free(path);
	fd_test_server_stop(&ts);
}

Test(http_append, escaped_keys_and_whitespace)
{
	/*
	 * The server hands each event's data to PostgreSQL as the client's own
	 * bytes, located in the raw text: escaped member names, odd spacing and
	 * brackets inside strings must not confuse it.
	 */
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	const char *body = "\r\n {\t\"ev\\u0065nts\" :\n [ {\"metadata\":{\"data\":{\"decoy\":true}},\"typ\\u0065\":\"A\","
			   " \"d\\u0061ta\" : { \"s\" : \"]}[{\\\"\" , \"n\":[ 1 ,2 ] } } ,\n"
			   "{ \"data\":{\"k\":\"v\"},\"type\":\"B\"} ] , \"expected_version\" : 0 }\n";
	struct fd_test_resp r;
	post(&ts, "esc-1", body, &r);
	assert_append_result(&r, 201, "esc-1", 1, 2);
	fd_test_resp_free(&r);
	get(&ts, "/streams/esc-1/events", &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *events = json_object_get(r.json, "events");
	json_t *want0 = json_loads("{\"s\":\"]}[{\\\"\",\"n\":[1,2]}", 0, NULL);
	json_t *want1 = json_loads("{\"k\":\"v\"}", 0, NULL);
	cr_assert(want0 && want1);
	cr_assert(json_equal(json_object_get(json_array_get(events, 0), "data"), want0), "event 1 data: %s", r.body);
	cr_assert(json_equal(json_object_get(json_array_get(events, 1), "data"), want1), "event 2 data: %s", r.body);
	cr_assert_str_eq(ev_str(json_array_get(events, 0), "type"), "A");
	json_t *meta = json_object_get(json_array_get(events, 0), "metadata");
	cr_assert(json_is_true(json_object_get(json_object_get(meta, "data"), "decoy")));
	json_decref(want0);
	json_decref(want1);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

static void tweak_read_limit(struct fd_config *cfg)
{
	cfg->max_read_limit = 2;
}

Test(http_read, configured_read_limit)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak_read_limit);
	struct fd_test_resp r;
	post(&ts, "lim-1", "{\"expected_version\":0,\"events\":[{\"type\":\"A\",\"data\":{}},{\"type\":\"B\",\"data\":{}},"
			    "{\"type\":\"C\",\"data\":{}}]}", &r);
	assert_append_result(&r, 201, "lim-1", 1, 3);
	fd_test_resp_free(&r);
	get(&ts, "/streams/lim-1/events", &r);
	cr_assert_eq(r.status, 200);
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 2, "the default limit is capped by FACTD_MAX_READ_LIMIT");
	fd_test_resp_free(&r);
	get(&ts, "/streams/lim-1/events?limit=3", &r);
	fd_test_assert_problem(&r, 400, "invalid-parameter");
	cr_assert(strstr(fd_test_json_str(&r, "detail"), "1..2"), "%s", r.body);
	fd_test_resp_free(&r);
	double deadline = fd_test_now_s() + 30;
	for (;;) {
		get(&ts, "/events", &r);
		cr_assert_eq(r.status, 200);
		size_t n = json_array_size(json_object_get(r.json, "events"));
		fd_test_resp_free(&r);
		cr_assert_leq(n, 2, "the feed's default limit is capped by FACTD_MAX_READ_LIMIT");
		if (n == 2)
			break;
		cr_assert_lt(fd_test_now_s(), deadline, "the events never became visible");
		fd_test_sleep_ms(50);
	}
	get(&ts, "/events?limit=3", &r);
	fd_test_assert_problem(&r, 400, "invalid-parameter");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(http_read, stream_read_back_exact_fields)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char id[3][FD_UUID_STRLEN + 1];
	for (int i = 0; i < 3; i++)
		fd_test_new_uuid(id[i]);
	char *body = fd_test_fmt("{\"expected_version\":\"no_stream\",\"events\":["
			 "{\"event_id\":\"%s\",\"type\":\"OrderPlaced\",\"data\":{\"customer\":\"c-1\",\"lines\":[{\"sku\":\"a\",\"q\":1}],"
			 "\"note\":\"caf\\u00e9 \\\"quoted\\\" \\\\ \\n\",\"ok\":true,\"none\":null}},"
			 "{\"event_id\":\"%s\",\"type\":\"PaymentReceived\",\"data\":{\"cents\":2500},\"metadata\":{\"src\":\"web\"}},"
			 "{\"event_id\":\"%s\",\"type\":\"OrderConfirmed\",\"data\":{}}]}",
			 id[0], id[1], id[2]);
	struct fd_test_resp r;
	post_h(&ts, "order-42", "X-Request-Id: read-back-1\r\n", body, &r);
	assert_append_result(&r, 201, "order-42", 1, 3);
	char last_pos[FD_CURSOR_STRLEN];
	snprintf(last_pos, sizeof last_pos, "%s", fd_test_json_str(&r, "position"));
	fd_test_resp_free(&r);

	get(&ts, "/streams/order-42/events", &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	assert_json_ct(&r);
	cr_assert_eq(json_object_size(r.json), 3, "%s", r.body);
	cr_assert_str_eq(fd_test_json_str(&r, "stream"), "order-42");
	cr_assert_eq(fd_test_json_int(&r, "version"), 3);
	cr_assert_str_eq(header(&r, "ETag"), "\"3\"");
	json_t *events = json_object_get(r.json, "events");
	cr_assert_eq(json_array_size(events), 3);
	static const char *const types[] = { "OrderPlaced", "PaymentReceived", "OrderConfirmed" };
	const char *prev_pos = NULL;
	for (size_t i = 0; i < 3; i++) {
		json_t *e = json_array_get(events, i);
		assert_event_shape(e, "order-42", (long long)i + 1);
		cr_assert_str_eq(ev_str(e, "event_id"), id[i]);
		cr_assert_str_eq(ev_str(e, "type"), types[i]);
		cr_assert_str_eq(json_string_value(json_object_get(json_object_get(e, "metadata"), "request_id")), "read-back-1");
		if (prev_pos)
			cr_assert_gt(cursor_cmp_str(ev_str(e, "position"), prev_pos), 0);
		prev_pos = ev_str(e, "position");
	}
	cr_assert_str_eq(prev_pos, last_pos, "the append's position is the last event's");

	/* The data comes back equal in value. */
	json_t *want = json_loads("{\"customer\":\"c-1\",\"lines\":[{\"sku\":\"a\",\"q\":1}],"
				  "\"note\":\"caf\xc3\xa9 \\\"quoted\\\" \\\\ \\n\",\"ok\":true,\"none\":null}", 0, NULL);
	cr_assert_not_null(want);
	cr_assert(json_equal(json_object_get(json_array_get(events, 0), "data"), want), "data: %s", r.body);
	json_decref(want);
	json_t *meta1 = json_object_get(json_array_get(events, 1), "metadata");
	cr_assert_str_eq(json_string_value(json_object_get(meta1, "src")), "web");
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(json_array_get(events, 1), "data"), "cents")), 2500);
	cr_assert_eq(json_object_size(json_object_get(json_array_get(events, 2), "data")), 0);
	fd_test_resp_free(&r);
	free(body);
	fd_test_server_stop(&ts);
}

Test(http_read, paging_with_from_version_and_limit)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	post(&ts, "page-1", "{\"expected_version\":0,\"events\":[{\"type\":\"E\",\"data\":{\"n\":1}},{\"type\":\"E\",\"data\":{\"n\":2}},"
			     "{\"type\":\"E\",\"data\":{\"n\":3}},{\"type\":\"E\",\"data\":{\"n\":4}},{\"type\":\"E\",\"data\":{\"n\":5}}]}", &r);
	assert_append_result(&r, 201, "page-1", 1, 5);
	fd_test_resp_free(&r);

	get(&ts, "/streams/page-1/events?from_version=2&limit=2", &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert_eq(fd_test_json_int(&r, "version"), 5, "version is the stream's, not the page's");
	json_t *ev = json_object_get(r.json, "events");
	cr_assert_eq(json_array_size(ev), 2);
	cr_assert_eq(ev_int(json_array_get(ev, 0), "version"), 2);
	cr_assert_eq(ev_int(json_array_get(ev, 1), "version"), 3);
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(json_array_get(ev, 1), "data"), "n")), 3);
	cr_assert_str_eq(header(&r, "ETag"), "\"5\"");
	fd_test_resp_free(&r);

	get(&ts, "/streams/page-1/events?from_version=5&limit=100", &r);
	cr_assert_eq(r.status, 200);
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 1);
	fd_test_resp_free(&r);

	get(&ts, "/streams/page-1/events?from_version=6", &r);
	cr_assert_eq(r.status, 200, "reading past the end is an empty page, not an error");
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 0);
	cr_assert_eq(fd_test_json_int(&r, "version"), 5);
	fd_test_resp_free(&r);

	get(&ts, "/streams/page-1/events?limit=1000", &r);
	cr_assert_eq(r.status, 200, "limit=max is allowed");
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 5);
	fd_test_resp_free(&r);

	get(&ts, "/streams/page-1/events?limit=1", &r);
	cr_assert_eq(r.status, 200);
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 1);
	cr_assert_eq(ev_int(json_array_get(json_object_get(r.json, "events"), 0), "version"), 1);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(http_read, default_limit_is_100)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_buf b = FD_BUF_INIT;
	cr_assert_eq(fd_buf_appendf(&b, "%s", "{\"expected_version\":0,\"events\":["), FD_OK);
	for (int i = 0; i < 150; i++)
		cr_assert_eq(fd_buf_appendf(&b, "%s{\"type\":\"T\",\"data\":{\"i\":%d}}", i ? "," : "", i), FD_OK);
	cr_assert_eq(fd_buf_append(&b, "]}", 2), FD_OK);
	struct fd_test_resp r;
	post(&ts, "many-1", b.data, &r);
	assert_append_result(&r, 201, "many-1", 1, 150);
	fd_test_resp_free(&r);
	fd_buf_release(&b);
	get(&ts, "/streams/many-1/events", &r);
	cr_assert_eq(r.status, 200);
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 100);
	cr_assert_eq(fd_test_json_int(&r, "version"), 150);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(http_read, etag_follows_version)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	for (int v = 1; v <= 4; v++) {
		char *body = fd_test_fmt("{\"expected_version\":%d,\"events\":[{\"type\":\"Tick\",\"data\":{\"v\":%d}}]}", v - 1, v);
		post(&ts, "etag-1", body, &r);
		assert_append_result(&r, 201, "etag-1", v, v);
		fd_test_resp_free(&r);
		free(body);
		get(&ts, "/streams/etag-1/events?from_version=1&limit=1", &r);
		cr_assert_eq(r.status, 200);
		char want[16];
		snprintf(want, sizeof want, "\"%d\"", v);
		cr_assert_str_eq(header(&r, "ETag"), want);
		cr_assert_eq(fd_test_json_int(&r, "version"), v);
		fd_test_resp_free(&r);
	}
	fd_test_server_stop(&ts);
}

Test(http_read, head_stream_has_headers_no_body)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	post(&ts, "head-1", "{\"expected_version\":0,\"events\":[{\"type\":\"A\",\"data\":{}},{\"type\":\"B\",\"data\":{}}]}", &r);
	assert_append_result(&r, 201, "head-1", 1, 2);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_http(ts.port, "HEAD", "/streams/head-1/events", NULL, NULL, 0, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.head);
	cr_assert_eq(r.body_len, 0, "HEAD has no body");
	cr_assert_str_eq(header(&r, "ETag"), "\"2\"");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(http_read, missing_stream_404)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	get(&ts, "/streams/nobody-here/events", &r);
	fd_test_assert_problem(&r, 404, "not-found");
	cr_assert_null(header(&r, "ETag"));
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/* ---- expected versions ---------------------------------------------------------- */

static void append_one(const struct fd_test_server *ts, const char *stream, const char *expected, struct fd_test_resp *r)
{
	char *body = fd_test_fmt("{\"expected_version\":%s,\"events\":[{\"type\":\"E\",\"data\":{}}]}", expected);
	post(ts, stream, body, r);
	free(body);
}

/* A 409 wrong-version with current_version, writing nothing. */
static void expect_conflict(const struct fd_test_server *ts, const char *stream, const char *expected, long long current)
{
	long long before = db_count(ts, "SELECT count(*) FROM events");
	long long streams = db_count(ts, "SELECT count(*) FROM streams");
	struct fd_test_resp r;
	append_one(ts, stream, expected, &r);
	fd_test_assert_problem(&r, 409, "wrong-version");
	cr_assert(json_is_integer(json_object_get(r.json, "current_version")), "no current_version: %s", r.body);
	cr_assert_eq(fd_test_json_int(&r, "current_version"), current, "expected_version %s: %s", expected, r.body);
	cr_assert_null(header(&r, "Location"));
	fd_test_resp_free(&r);
	cr_assert_eq(db_count(ts, "SELECT count(*) FROM events"), before, "a conflict wrote events");
	cr_assert_eq(db_count(ts, "SELECT count(*) FROM streams"), streams, "a conflict created a stream");
}

static void expect_appended(const struct fd_test_server *ts, const char *stream, const char *expected, long long version)
{
	struct fd_test_resp r;
	append_one(ts, stream, expected, &r);
	assert_append_result(&r, 201, stream, version, version);
	fd_test_resp_free(&r);
}

Test(http_expected, exact_versions)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	expect_conflict(&ts, "ex-1", "3", 0);  /* a version > 0 on a stream that does not exist */
	expect_appended(&ts, "ex-1", "0", 1);
	expect_conflict(&ts, "ex-1", "0", 1);
	expect_appended(&ts, "ex-1", "1", 2);
	expect_conflict(&ts, "ex-1", "1", 2);
	expect_conflict(&ts, "ex-1", "7", 2);
	expect_appended(&ts, "ex-1", "2", 3);
	cr_assert_eq(db_count(&ts, "SELECT version FROM streams WHERE stream_id = 'ex-1'"), 3);
	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM events WHERE stream_id = 'ex-1'"), 3);
	fd_test_server_stop(&ts);
}

Test(http_expected, any)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	expect_appended(&ts, "any-1", "\"any\"", 1);
	expect_appended(&ts, "any-1", "\"any\"", 2);
	expect_appended(&ts, "any-1", "\"any\"", 3);
	fd_test_server_stop(&ts);
}

Test(http_expected, no_stream)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	expect_appended(&ts, "ns-1", "\"no_stream\"", 1);
	expect_conflict(&ts, "ns-1", "\"no_stream\"", 1);
	expect_appended(&ts, "ns-1", "1", 2);
	expect_conflict(&ts, "ns-1", "\"no_stream\"", 2);
	fd_test_server_stop(&ts);
}

Test(http_expected, exists)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	expect_conflict(&ts, "exi-1", "\"exists\"", 0);
	struct fd_test_resp r;
	get(&ts, "/streams/exi-1/events", &r);
	cr_assert_eq(r.status, 404, "a failed \"exists\" append must not create the stream");
	fd_test_resp_free(&r);
	expect_appended(&ts, "exi-1", "\"any\"", 1);
	expect_appended(&ts, "exi-1", "\"exists\"", 2);
	expect_appended(&ts, "exi-1", "\"exists\"", 3);
	fd_test_server_stop(&ts);
}

Test(http_expected, conflict_detail_and_request_id)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	expect_appended(&ts, "cd-1", "0", 1);
	struct fd_test_resp r;
	post_h(&ts, "cd-1", "X-Request-Id: conflict-req-1\r\n",
	       "{\"expected_version\":5,\"events\":[{\"type\":\"E\",\"data\":{}}]}", &r);
	fd_test_assert_problem(&r, 409, "wrong-version");
	cr_assert_str_eq(fd_test_json_str(&r, "request_id"), "conflict-req-1");
	cr_assert_str_eq(header(&r, "X-Request-Id"), "conflict-req-1");
	cr_assert_eq(fd_test_json_int(&r, "current_version"), 1);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/* ---- idempotency and duplicate ids ---------------------------------------------- */

Test(http_idempotency, repeat_returns_original_and_writes_nothing)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char a[FD_UUID_STRLEN + 1], b[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(a);
	fd_test_new_uuid(b);
	char *body = fd_test_fmt("{\"expected_version\":0,\"events\":[{\"event_id\":\"%s\",\"type\":\"A\",\"data\":{\"x\":1}},"
			 "{\"event_id\":\"%s\",\"type\":\"B\",\"data\":{\"x\":2}}]}",
			 a, b);
	struct fd_test_resp first, again;
	post(&ts, "idem-1", body, &first);
	assert_append_result(&first, 201, "idem-1", 1, 2);
	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM events"), 2);

	post(&ts, "idem-1", body, &again);
	assert_append_result(&again, 200, "idem-1", 1, 2);
	cr_assert_str_eq(again.body, first.body, "a repeat returns the original result");
	cr_assert_str_eq(header(&again, "Location"), header(&first, "Location"));
	fd_test_resp_free(&again);
	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM events"), 2, "a repeat wrote rows");
	cr_assert_eq(db_count(&ts, "SELECT version FROM streams WHERE stream_id = 'idem-1'"), 2);

	/* The stream moves on; a late retry of the first request still gets its original result. */
	expect_appended(&ts, "idem-1", "2", 3);
	post(&ts, "idem-1", body, &again);
	assert_append_result(&again, 200, "idem-1", 1, 2);
	cr_assert_str_eq(again.body, first.body);
	fd_test_resp_free(&again);

	/* The idempotency check comes before the version check, whatever the repeat expects. */
	char *body_any = fd_test_fmt("{\"expected_version\":\"no_stream\",\"events\":[{\"event_id\":\"%s\",\"type\":\"A\",\"data\":{\"x\":1}},"
			     "{\"event_id\":\"%s\",\"type\":\"B\",\"data\":{\"x\":2}}]}",
			     a, b);
	post(&ts, "idem-1", body_any, &again);
	assert_append_result(&again, 200, "idem-1", 1, 2);
	cr_assert_str_eq(again.body, first.body);
	fd_test_resp_free(&again);
	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM events"), 3);
	cr_assert_eq(db_count(&ts, "SELECT version FROM streams WHERE stream_id = 'idem-1'"), 3);
	fd_test_resp_free(&first);
	free(body);
	free(body_any);
	fd_test_server_stop(&ts);
}

Test(http_idempotency, same_id_in_another_stream_is_409)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char a[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(a);
	char *body = fd_test_fmt("{\"expected_version\":\"any\",\"events\":[{\"event_id\":\"%s\",\"type\":\"A\",\"data\":{}}]}", a);
	struct fd_test_resp r;
	post(&ts, "dup-1", body, &r);
	assert_append_result(&r, 201, "dup-1", 1, 1);
	fd_test_resp_free(&r);

	post(&ts, "dup-2", body, &r);
	fd_test_assert_problem(&r, 409, "duplicate-event-id");
	fd_test_resp_free(&r);
	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM events"), 1);
	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM streams"), 1, "the other stream must not be created");
	get(&ts, "/streams/dup-2/events", &r);
	cr_assert_eq(r.status, 404);
	fd_test_resp_free(&r);
	free(body);
	fd_test_server_stop(&ts);
}

Test(http_idempotency, same_id_at_other_position_is_409)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char a[FD_UUID_STRLEN + 1], b[FD_UUID_STRLEN + 1];
	fd_test_new_uuid(a);
	fd_test_new_uuid(b);
	char *one = fd_test_fmt("{\"expected_version\":0,\"events\":[{\"event_id\":\"%s\",\"type\":\"A\",\"data\":{}}]}", a);
	struct fd_test_resp r;
	post(&ts, "dup-3", one, &r);
	assert_append_result(&r, 201, "dup-3", 1, 1);
	fd_test_resp_free(&r);
	/* a is stored at version 1; here it would be version 2. */
	char *two = fd_test_fmt("{\"expected_version\":\"any\",\"events\":[{\"event_id\":\"%s\",\"type\":\"B\",\"data\":{}},"
			"{\"event_id\":\"%s\",\"type\":\"A\",\"data\":{}}]}",
			b, a);
	post(&ts, "dup-3", two, &r);
	fd_test_assert_problem(&r, 409, "duplicate-event-id");
	fd_test_resp_free(&r);
	/* Partly repeated: a at the same place plus a new id. */
	char *partial = fd_test_fmt("{\"expected_version\":\"any\",\"events\":[{\"event_id\":\"%s\",\"type\":\"A\",\"data\":{}},"
			    "{\"event_id\":\"%s\",\"type\":\"B\",\"data\":{}}]}",
			    a, b);
	post(&ts, "dup-3", partial, &r);
	fd_test_assert_problem(&r, 409, "duplicate-event-id");
	fd_test_resp_free(&r);
	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM events"), 1, "nothing of a rejected batch is written");
	cr_assert_eq(db_count(&ts, "SELECT version FROM streams WHERE stream_id = 'dup-3'"), 1);
	free(one);
	free(two);
	free(partial);
	fd_test_server_stop(&ts);
}

/* ---- the feed ---------------------------------------------------------------------- */

struct feed_page {
	json_t *events; /* owned */
	char next[FD_CURSOR_STRLEN];
	int status;
};

static void feed_get(const struct fd_test_server *ts, const char *query, struct feed_page *p)
{
	char *path = fd_test_fmt("/events%s", query);
	struct fd_test_resp r;
	get(ts, path, &r);
	p->status = r.status;
	cr_assert_eq(r.status, 200, "GET %s: %d %s", path, r.status, r.body);
	assert_json_ct(&r);
	cr_assert_eq(json_object_size(r.json), 2, "%s", r.body);
	p->events = json_incref(json_object_get(r.json, "events"));
	cr_assert(json_is_array(p->events), "%s", r.body);
	const char *next = fd_test_json_str(&r, "next");
	cr_assert(next && fd_cursor_parse(next, &(struct fd_cursor){ 0, 0 }), "next: %s", r.body);
	snprintf(p->next, sizeof p->next, "%s", next);
	fd_test_resp_free(&r);
	free(path);
}

/*
 * The feed only shows an event once every older transaction in the cluster has
 * ended; other test processes share the cluster, so wait until `want` events
 * are visible.
 */
static void feed_wait_visible(const struct fd_test_server *ts, size_t want)
{
	double deadline = fd_test_now_s() + 30;
	for (;;) {
		struct feed_page p;
		feed_get(ts, "?limit=1000", &p);
		size_t n = json_array_size(p.events);
		json_decref(p.events);
		cr_assert_leq(n, want, "more events than appended");
		if (n == want)
			return;
		cr_assert_lt(fd_test_now_s(), deadline, "only %zu of %zu events became visible in the feed", n, want);
		fd_test_sleep_ms(50);
	}
}

struct feed_fixture_event {
	const char *stream;
	long long version;
	const char *type;
};

/* Appended in this order by feed_fixture. */
static const struct feed_fixture_event fixture[] = {
	{ "order-1", 1, "OrderPlaced" },    { "order-1", 2, "PaymentReceived" }, { "customer-7", 1, "CustomerRegistered" },
	{ "order-2", 1, "OrderPlaced" },    { "order-1", 3, "OrderShipped" },    { "customer-7", 2, "AddressChanged" },
	{ "order-3-x", 1, "OrderPlaced" },  { "orders-1", 1, "OrderPlaced" },
};
#define NFIXTURE (sizeof fixture / sizeof fixture[0])

static void feed_fixture(const struct fd_test_server *ts)
{
	static const struct {
		const char *stream, *body;
	} appends[] = {
		{ "order-1", "{\"expected_version\":0,\"events\":[{\"type\":\"OrderPlaced\",\"data\":{\"i\":0}},"
			     "{\"type\":\"PaymentReceived\",\"data\":{\"i\":1}}]}" },
		{ "customer-7", "{\"expected_version\":0,\"events\":[{\"type\":\"CustomerRegistered\",\"data\":{\"i\":2}}]}" },
		{ "order-2", "{\"expected_version\":0,\"events\":[{\"type\":\"OrderPlaced\",\"data\":{\"i\":3}}]}" },
		{ "order-1", "{\"expected_version\":2,\"events\":[{\"type\":\"OrderShipped\",\"data\":{\"i\":4}}]}" },
		{ "customer-7", "{\"expected_version\":1,\"events\":[{\"type\":\"AddressChanged\",\"data\":{\"i\":5}}]}" },
		{ "order-3-x", "{\"expected_version\":\"any\",\"events\":[{\"type\":\"OrderPlaced\",\"data\":{\"i\":6}}]}" },
		{ "orders-1", "{\"expected_version\":\"any\",\"events\":[{\"type\":\"OrderPlaced\",\"data\":{\"i\":7}}]}" },
	};
	for (size_t i = 0; i < sizeof appends / sizeof appends[0]; i++) {
		struct fd_test_resp r;
		post(ts, appends[i].stream, appends[i].body, &r);
		cr_assert_eq(r.status, 201, "%s: %s", appends[i].stream, r.body);
		fd_test_resp_free(&r);
	}
	feed_wait_visible(ts, NFIXTURE);
}

/* Assert that `events` are exactly the fixture rows selected by `pick`, in order. */
static void assert_fixture_events(json_t *events, int (*pick)(const struct feed_fixture_event *))
{
	size_t k = 0;
	const char *prev = NULL;
	for (size_t i = 0; i < NFIXTURE; i++) {
		if (pick && !pick(&fixture[i]))
			continue;
		json_t *e = json_array_get(events, k);
		cr_assert_not_null(e, "missing event %zu (%s v%lld)", k, fixture[i].stream, fixture[i].version);
		assert_event_shape(e, fixture[i].stream, fixture[i].version);
		cr_assert_str_eq(ev_str(e, "type"), fixture[i].type);
		cr_assert_eq(json_integer_value(json_object_get(json_object_get(e, "data"), "i")), (json_int_t)i);
		if (prev)
			cr_assert_gt(cursor_cmp_str(ev_str(e, "position"), prev), 0, "feed order");
		prev = ev_str(e, "position");
		k++;
	}
	cr_assert_eq(json_array_size(events), k, "unexpected extra events");
}

/* Read a whole (filtered) feed in pages of `limit`; returns all events (caller decrefs). */
static json_t *feed_read_all(const struct fd_test_server *ts, const char *filters, int limit, size_t *pages,
			     char final_next[FD_CURSOR_STRLEN])
{
	json_t *all = json_array();
	char after[FD_CURSOR_STRLEN] = "0";
	*pages = 0;
	for (int guard = 0; guard < 100; guard++) {
		char *q = fd_test_fmt("?after=%s&limit=%d%s", after, limit, filters);
		struct feed_page p;
		feed_get(ts, q, &p);
		free(q);
		size_t n = json_array_size(p.events);
		cr_assert_leq(n, (size_t)limit);
		cr_assert_geq(cursor_cmp_str(p.next, after), 0, "next went behind after");
		if (n) {
			const char *last = ev_str(json_array_get(p.events, n - 1), "position");
			cr_assert_geq(cursor_cmp_str(p.next, last), 0, "next %s behind the page's last event %s", p.next, last);
			if (n == (size_t)limit)
				cr_assert_str_eq(p.next, last, "a full page resumes after its last event");
			json_array_extend(all, p.events);
			(*pages)++;
		}
		json_decref(p.events);
		if (n == 0) {
			/* Unfiltered, an empty page keeps the cursor; filtered, it may skip what was filtered out. */
			if (!*filters)
				cr_assert_str_eq(p.next, after, "an empty page keeps the cursor");
			snprintf(final_next, FD_CURSOR_STRLEN, "%s", p.next);
			if (strcmp(p.next, after) != 0) {
				char *q2 = fd_test_fmt("?after=%s&limit=%d%s", p.next, limit, filters);
				struct feed_page p2;
				feed_get(ts, q2, &p2);
				free(q2);
				cr_assert_eq(json_array_size(p2.events), 0, "events after the final cursor");
				cr_assert_str_eq(p2.next, p.next);
				json_decref(p2.events);
			}
			return all;
		}
		snprintf(after, sizeof after, "%s", p.next);
	}
	cr_assert_fail("the feed did not end");
	return NULL;
}

Test(http_feed, pages_across_streams)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	feed_fixture(&ts);

	struct feed_page p;
	feed_get(&ts, "", &p);
	assert_fixture_events(p.events, NULL);
	cr_assert_str_eq(p.next, ev_str(json_array_get(p.events, NFIXTURE - 1), "position"));
	json_decref(p.events);

	size_t pages;
	char final_next[FD_CURSOR_STRLEN];
	json_t *all = feed_read_all(&ts, "", 3, &pages, final_next);
	cr_assert_eq(pages, 3, "8 events in pages of 3");
	assert_fixture_events(all, NULL);
	json_decref(all);

	all = feed_read_all(&ts, "", 1, &pages, final_next);
	cr_assert_eq(pages, NFIXTURE);
	assert_fixture_events(all, NULL);
	json_decref(all);

	/* after=0 and no after are the same; "0-0" as well. */
	feed_get(&ts, "?after=0&limit=2", &p);
	cr_assert_eq(json_array_size(p.events), 2);
	cr_assert_str_eq(ev_str(json_array_get(p.events, 0), "stream"), "order-1");
	json_decref(p.events);
	feed_get(&ts, "?after=0-0&limit=2", &p);
	cr_assert_eq(json_array_size(p.events), 2);
	json_decref(p.events);

	/* Positions in the feed equal the append results' and the stream reads'. */
	struct fd_test_resp r;
	get(&ts, "/streams/customer-7/events", &r);
	json_t *c = json_object_get(r.json, "events");
	feed_get(&ts, "?limit=1000", &p);
	cr_assert_str_eq(ev_str(json_array_get(c, 0), "position"), ev_str(json_array_get(p.events, 2), "position"));
	cr_assert_str_eq(ev_str(json_array_get(c, 1), "event_id"), ev_str(json_array_get(p.events, 5), "event_id"));
	fd_test_resp_free(&r);
	json_decref(p.events);
	fd_test_server_stop(&ts);
}

Test(http_feed, new_events_after_cursor)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	feed_fixture(&ts);
	struct feed_page p;
	feed_get(&ts, "", &p);
	char next[FD_CURSOR_STRLEN];
	snprintf(next, sizeof next, "%s", p.next);
	json_decref(p.events);

	struct fd_test_resp r;
	post(&ts, "late-1", "{\"expected_version\":0,\"events\":[{\"type\":\"Late\",\"data\":{}}]}", &r);
	assert_append_result(&r, 201, "late-1", 1, 1);
	char pos[FD_CURSOR_STRLEN];
	snprintf(pos, sizeof pos, "%s", fd_test_json_str(&r, "position"));
	fd_test_resp_free(&r);
	feed_wait_visible(&ts, NFIXTURE + 1);

	char *q = fd_test_fmt("?after=%s", next);
	feed_get(&ts, q, &p);
	free(q);
	cr_assert_eq(json_array_size(p.events), 1, "only the new event follows the old cursor");
	cr_assert_str_eq(ev_str(json_array_get(p.events, 0), "stream"), "late-1");
	cr_assert_str_eq(ev_str(json_array_get(p.events, 0), "position"), pos);
	cr_assert_str_eq(p.next, pos);
	json_decref(p.events);
	fd_test_server_stop(&ts);
}

static int pick_order(const struct feed_fixture_event *e)
{
	return strncmp(e->stream, "order-", 6) == 0;
}

static int pick_customer(const struct feed_fixture_event *e)
{
	return strncmp(e->stream, "customer-", 9) == 0;
}

static int pick_placed_or_address(const struct feed_fixture_event *e)
{
	return strcmp(e->type, "OrderPlaced") == 0 || strcmp(e->type, "AddressChanged") == 0;
}

static int pick_order_placed(const struct feed_fixture_event *e)
{
	return pick_order(e) && strcmp(e->type, "OrderPlaced") == 0;
}

static int pick_orders(const struct feed_fixture_event *e)
{
	return strcmp(e->stream, "orders-1") == 0;
}

Test(http_feed, category_filter)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	feed_fixture(&ts);
	struct feed_page p;
	feed_get(&ts, "?category=order", &p);
	assert_fixture_events(p.events, pick_order);
	json_decref(p.events);
	feed_get(&ts, "?category=customer", &p);
	assert_fixture_events(p.events, pick_customer);
	json_decref(p.events);
	feed_get(&ts, "?category=orders", &p);
	assert_fixture_events(p.events, pick_orders);
	json_decref(p.events);
	feed_get(&ts, "?category=ord", &p);
	cr_assert_eq(json_array_size(p.events), 0, "a category is the whole prefix, not a prefix of it");
	json_decref(p.events);

	size_t pages;
	char final_next[FD_CURSOR_STRLEN];
	json_t *all = feed_read_all(&ts, "&category=order", 2, &pages, final_next);
	cr_assert_eq(pages, 3, "5 order events in pages of 2");
	assert_fixture_events(all, pick_order);
	json_decref(all);
	fd_test_server_stop(&ts);
}

Test(http_feed, types_filter_and_combined)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	feed_fixture(&ts);
	struct feed_page p;
	feed_get(&ts, "?types=OrderPlaced,AddressChanged", &p);
	assert_fixture_events(p.events, pick_placed_or_address);
	json_decref(p.events);
	feed_get(&ts, "?types=OrderPlaced&category=order", &p);
	assert_fixture_events(p.events, pick_order_placed);
	json_decref(p.events);
	feed_get(&ts, "?types=NoSuchType", &p);
	cr_assert_eq(json_array_size(p.events), 0);
	json_decref(p.events);

	size_t pages;
	char final_next[FD_CURSOR_STRLEN];
	json_t *all = feed_read_all(&ts, "&types=OrderPlaced,AddressChanged", 2, &pages, final_next);
	cr_assert_eq(pages, 3);
	assert_fixture_events(all, pick_placed_or_address);
	json_decref(all);
	all = feed_read_all(&ts, "&types=OrderPlaced&category=order", 1, &pages, final_next);
	cr_assert_eq(pages, 3);
	assert_fixture_events(all, pick_order_placed);
	json_decref(all);
	fd_test_server_stop(&ts);
}

Test(http_feed, empty_database)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct feed_page p;
	feed_get(&ts, "", &p);
	cr_assert_eq(json_array_size(p.events), 0);
	struct fd_cursor c;
	cr_assert(fd_cursor_parse(p.next, &c));
	cr_assert_eq(c.tx, 0);
	cr_assert_eq(c.seq, 0);
	json_decref(p.events);
	fd_test_server_stop(&ts);
}

/* ---- metadata and request ids ---------------------------------------------------- */

/* Append with headers and read back the metadata of each event (caller decrefs). */
static json_t *append_and_metadata(const struct fd_test_server *ts, const char *stream, const char *headers,
				   const char *events_json, char rid[160])
{
	char *body = fd_test_fmt("{\"expected_version\":\"any\",\"events\":%s}", events_json);
	struct fd_test_resp r;
	post_h(ts, stream, headers, body, &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	cr_assert(fd_test_header(&r, "X-Request-Id", rid, 160));
	fd_test_resp_free(&r);
	free(body);
	char *path = fd_test_fmt("/streams/%s/events", stream);
	get(ts, path, &r);
	cr_assert_eq(r.status, 200);
	json_t *metas = json_array();
	json_t *e;
	size_t i;
	json_array_foreach(json_object_get(r.json, "events"), i, e)
		json_array_append(metas, json_object_get(e, "metadata"));
	fd_test_resp_free(&r);
	free(path);
	return metas;
}

static const char *meta_str(json_t *metas, size_t i, const char *key)
{
	return json_string_value(json_object_get(json_array_get(metas, i), key));
}

Test(http_metadata, defaults_to_generated_request_id)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char rid[160];
	json_t *m = append_and_metadata(&ts, "meta-1", NULL, "[{\"type\":\"A\",\"data\":{}}]", rid);
	struct fd_uuid u;
	cr_assert(fd_uuid_parse(rid, &u), "a generated request id is a UUID: %s", rid);
	cr_assert_eq(json_object_size(json_array_get(m, 0)), 2, "only correlation_id and request_id");
	cr_assert_str_eq(meta_str(m, 0, "correlation_id"), rid);
	cr_assert_str_eq(meta_str(m, 0, "request_id"), rid);
	cr_assert_null(json_object_get(json_array_get(m, 0), "causation_id"), "no causation without X-Causation-Id");
	json_decref(m);
	fd_test_server_stop(&ts);
}

Test(http_metadata, request_id_is_the_default_correlation)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char rid[160];
	json_t *m = append_and_metadata(&ts, "meta-2", "X-Request-Id: req-abc.1\r\n", "[{\"type\":\"A\",\"data\":{}}]", rid);
	cr_assert_str_eq(rid, "req-abc.1");
	cr_assert_str_eq(meta_str(m, 0, "correlation_id"), "req-abc.1");
	cr_assert_str_eq(meta_str(m, 0, "request_id"), "req-abc.1");
	json_decref(m);
	fd_test_server_stop(&ts);
}

Test(http_metadata, headers_stamped_on_every_event)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char rid[160];
	json_t *m = append_and_metadata(&ts, "meta-3",
					"X-Request-Id: req-3\r\nX-Correlation-Id: corr:9\r\nX-Causation-Id: cause_7\r\n",
					"[{\"type\":\"A\",\"data\":{}},{\"type\":\"B\",\"data\":{},\"metadata\":{\"k\":\"v\"}}]", rid);
	cr_assert_eq(json_array_size(m), 2);
	for (size_t i = 0; i < 2; i++) {
		cr_assert_str_eq(meta_str(m, i, "correlation_id"), "corr:9");
		cr_assert_str_eq(meta_str(m, i, "causation_id"), "cause_7");
		cr_assert_str_eq(meta_str(m, i, "request_id"), "req-3");
	}
	cr_assert_eq(json_object_size(json_array_get(m, 0)), 3);
	cr_assert_str_eq(meta_str(m, 1, "k"), "v");
	cr_assert_eq(json_object_size(json_array_get(m, 1)), 4);
	json_decref(m);
	/* The stored rows say the same. */
	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM events WHERE metadata->>'correlation_id' = 'corr:9'"
				   " AND metadata->>'causation_id' = 'cause_7' AND metadata->>'request_id' = 'req-3'"), 2);
	fd_test_server_stop(&ts);
}

Test(http_metadata, client_values_win)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char rid[160];
	json_t *m = append_and_metadata(
		&ts, "meta-4", "X-Request-Id: req-4\r\nX-Correlation-Id: corr-4\r\nX-Causation-Id: cause-4\r\n",
		"[{\"type\":\"A\",\"data\":{},\"metadata\":{\"correlation_id\":\"mine\",\"causation_id\":\"c0\","
		"\"request_id\":\"r0\",\"user\":\"u\"}},"
		"{\"type\":\"B\",\"data\":{},\"metadata\":{\"correlation_id\":\"only-this\"}}]",
		rid);
	cr_assert_str_eq(meta_str(m, 0, "correlation_id"), "mine");
	cr_assert_str_eq(meta_str(m, 0, "causation_id"), "c0");
	cr_assert_str_eq(meta_str(m, 0, "request_id"), "r0");
	cr_assert_str_eq(meta_str(m, 0, "user"), "u");
	cr_assert_eq(json_object_size(json_array_get(m, 0)), 4);
	cr_assert_str_eq(meta_str(m, 1, "correlation_id"), "only-this");
	cr_assert_str_eq(meta_str(m, 1, "causation_id"), "cause-4");
	cr_assert_str_eq(meta_str(m, 1, "request_id"), "req-4");
	json_decref(m);
	fd_test_server_stop(&ts);
}

static void expect_request_id(const struct fd_test_server *ts, const char *method, const char *path,
			      const char *sent, int echoed)
{
	char hdr[512] = "";
	if (sent)
		snprintf(hdr, sizeof hdr, "X-Request-Id: %s\r\n", sent);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts->port, method, path, hdr, NULL, 0, &r), 0);
	cr_assert_gt(r.status, 0);
	const char *got = header(&r, "X-Request-Id");
	cr_assert(got, "%s %s: no X-Request-Id", method, path);
	if (echoed) {
		cr_assert_str_eq(got, sent);
	} else {
		struct fd_uuid u;
		cr_assert(fd_uuid_parse(got, &u), "generated id %s is not a UUID", got);
		cr_assert_eq(u.b[6] >> 4, 7, "generated ids are UUIDv7");
		if (sent)
			cr_assert_str_neq(got, sent);
	}
	if (r.status >= 400)
		cr_assert_str_eq(fd_test_json_str(&r, "request_id"), got);
	fd_test_resp_free(&r);
}

Test(http_request_id, echoed_generated_or_replaced)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char max[129], over[130];
	memset(max, 'a', 128);
	max[128] = '\0';
	memset(over, 'b', 129);
	over[129] = '\0';
	expect_request_id(&ts, "GET", "/healthz", "checkout-7f3a9c2e", 1);
	expect_request_id(&ts, "GET", "/healthz", "A.b_c:d-0", 1);
	expect_request_id(&ts, "GET", "/healthz", max, 1);
	expect_request_id(&ts, "GET", "/nowhere", "on-a-404", 1);
	expect_request_id(&ts, "DELETE", "/events", "on-a-405", 1);
	expect_request_id(&ts, "GET", "/streams/none-1/events", "on-stream-404", 1);
	expect_request_id(&ts, "GET", "/healthz", NULL, 0);
	expect_request_id(&ts, "GET", "/healthz", over, 0);
	expect_request_id(&ts, "GET", "/healthz", "has space", 0);
	expect_request_id(&ts, "GET", "/healthz", "bad/char", 0);
	expect_request_id(&ts, "GET", "/healthz", "caf\xc3\xa9", 0);
	expect_request_id(&ts, "GET", "/healthz", "semi;colon", 0);
	expect_request_id(&ts, "GET", "/nowhere", "bad id on 404", 0);
	fd_test_server_stop(&ts);
}

Test(http_request_id, generated_ids_differ)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char seen[20][160];
	for (int i = 0; i < 20; i++) {
		struct fd_test_resp r;
		get(&ts, "/healthz", &r);
		cr_assert(fd_test_header(&r, "X-Request-Id", seen[i], sizeof seen[i]));
		for (int j = 0; j < i; j++)
			cr_assert_str_neq(seen[i], seen[j]);
		fd_test_resp_free(&r);
	}
	fd_test_server_stop(&ts);
}

/* ---- exact numbers -------------------------------------------------------------------- */

/* The raw text of data member `key` of event `index` in a response (jansson may not parse the body). */
static void raw_data_member(const struct fd_test_resp *r, size_t index, const char *key, char *out, size_t len)
{
	struct fd_span whole = { 0, r->body_len }, events, ev, data, v;
	cr_assert(fd_json_member(r->body, r->body_len, whole, "events", &events), "no events: %s", r->body);
	cr_assert(fd_json_element(r->body, r->body_len, events, index, &ev), "no event %zu", index);
	cr_assert(fd_json_member(r->body, r->body_len, ev, "data", &data), "no data");
	cr_assert(fd_json_member(r->body, r->body_len, data, key, &v), "no data member %s: %s", key, r->body);
	cr_assert_lt(v.end - v.start, len);
	memcpy(out, r->body + v.start, v.end - v.start);
	out[v.end - v.start] = '\0';
}

static const struct {
	const char *key, *text;
} exact_numbers[] = {
	{ "amount", "0.1" },
	{ "third", "0.30000000000000004" },
	{ "pi", "3.14159265358979323846264338327950288419716939937510" },
	{ "scale", "1.50" },
	{ "neg", "-0.000001" },
	{ "int", "9007199254740993" },
	{ "max", "9223372036854775807" },
	{ "min", "-9223372036854775808" },
	{ "zero", "0" },
};

Test(http_numbers, decimals_round_trip_exactly)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_buf data = FD_BUF_INIT;
	cr_assert_eq(fd_buf_append(&data, "{", 1), FD_OK);
	for (size_t i = 0; i < sizeof exact_numbers / sizeof exact_numbers[0]; i++)
		cr_assert_eq(fd_buf_appendf(&data, "%s\"%s\":%s", i ? "," : "", exact_numbers[i].key, exact_numbers[i].text), FD_OK);
	cr_assert_eq(fd_buf_append(&data, "}", 1), FD_OK);
	char *body = fd_test_fmt("{\"expected_version\":0,\"events\":[{\"type\":\"Money\",\"data\":%s}]}", data.data);
	struct fd_test_resp r;
	post(&ts, "num-1", body, &r);
	assert_append_result(&r, 201, "num-1", 1, 1);
	fd_test_resp_free(&r);

	get(&ts, "/streams/num-1/events", &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	for (size_t i = 0; i < sizeof exact_numbers / sizeof exact_numbers[0]; i++) {
		char got[128];
		raw_data_member(&r, 0, exact_numbers[i].key, got, sizeof got);
		cr_assert_str_eq(got, exact_numbers[i].text, "stream read changed %s", exact_numbers[i].key);
	}
	fd_test_resp_free(&r);

	feed_wait_visible(&ts, 1);
	get(&ts, "/events", &r);
	cr_assert_eq(r.status, 200);
	for (size_t i = 0; i < sizeof exact_numbers / sizeof exact_numbers[0]; i++) {
		char got[128];
		raw_data_member(&r, 0, exact_numbers[i].key, got, sizeof got);
		cr_assert_str_eq(got, exact_numbers[i].text, "feed changed %s", exact_numbers[i].key);
	}
	fd_test_resp_free(&r);
	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM events WHERE data->>'amount' = '0.1' AND data->>'scale' = '1.50'"), 1);
	fd_buf_release(&data);
	free(body);
	fd_test_server_stop(&ts);
}

Test(http_numbers, issue_example_with_big_integer)
{
	/* The contract's own example: an integer beyond 64 bits is stored and returned exactly. */
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	post(&ts, "num-2", "{\"expected_version\":0,\"events\":[{\"type\":\"Money\",\"data\":{\"amount\":0.1,\"big\":12345678901234567890}}]}", &r);
	assert_append_result(&r, 201, "num-2", 1, 1);
	fd_test_resp_free(&r);
	get(&ts, "/streams/num-2/events", &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	char got[64];
	raw_data_member(&r, 0, "amount", got, sizeof got);
	cr_assert_str_eq(got, "0.1");
	raw_data_member(&r, 0, "big", got, sizeof got);
	cr_assert_str_eq(got, "12345678901234567890");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/* ---- health and readiness --------------------------------------------------------------- */

Test(http_health, healthz_and_readyz_ok)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	get(&ts, "/healthz", &r);
	cr_assert_eq(r.status, 200);
	assert_json_ct(&r);
	cr_assert_str_eq(fd_test_json_str(&r, "status"), "ok");
	cr_assert_eq(json_object_size(r.json), 1);
	fd_test_resp_free(&r);
	get(&ts, "/readyz", &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	assert_json_ct(&r);
	cr_assert_str_eq(fd_test_json_str(&r, "status"), "ready");
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_http(ts.port, "HEAD", "/healthz", NULL, NULL, 0, &r), 0);
	cr_assert_eq(r.status, 200);
	cr_assert_eq(r.body_len, 0);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/* A 503 problem with Retry-After (detail is checked by its own tests). */
static void expect_503(const struct fd_test_resp *r)
{
	fd_test_assert_problem_no_detail(r, 503, NULL);
	const char *ra = header(r, "Retry-After");
	cr_assert(ra, "503 without Retry-After");
	char *end;
	long secs = strtol(ra, &end, 10);
	cr_assert(*ra && !*end && secs >= 0, "Retry-After %s", ra);
}

Test(http_health, unmigrated_database_not_ready)
{
	char *url = fd_test_db_new_empty();
	struct fd_test_server ts;
	fd_test_server_start(&ts, url);
	free(url);
	struct fd_test_resp r;
	get(&ts, "/readyz", &r);
	expect_503(&r);
	fd_test_resp_free(&r);
	get(&ts, "/healthz", &r);
	cr_assert_eq(r.status, 200, "liveness does not depend on the database");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(http_health, unmigrated_database_readyz_says_migrations_pending)
{
	char *url = fd_test_db_new_empty();
	struct fd_test_server ts;
	fd_test_server_start(&ts, url);
	free(url);
	struct fd_test_resp r;
	get(&ts, "/readyz", &r);
	expect_503(&r);
	cr_assert_str_eq(fd_test_json_str(&r, "type"), FD_PROBLEM_BASE "not-ready",
			 "an unmigrated database is reachable; readyz should say migrations are pending: %s", r.body);
	cr_assert(strstr(fd_test_json_str(&r, "detail"), "migration"), "%s", r.body);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(http_health, unmigrated_database_append_503)
{
	char *url = fd_test_db_new_empty();
	struct fd_test_server ts;
	fd_test_server_start(&ts, url);
	struct fd_test_resp r;
	post(&ts, "x-1", "{\"expected_version\":0,\"events\":[{\"type\":\"A\",\"data\":{}}]}", &r);
	expect_503(&r);
	cr_assert_null(strstr(r.body, "SELECT"));
	fd_test_resp_free(&r);
	/* Nothing was created in the empty database. */
	PGconn *c = fd_test_connect(url);
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), 0);
	PQfinish(c);
	free(url);
	fd_test_server_stop(&ts);
}

#define UNREACHABLE_URL "postgresql://postgres@127.0.0.1:1/x"

Test(http_health, unreachable_database_problems_have_detail)
{
	/* Every error is a full problem document: type, title, status and detail. */
	struct fd_test_server ts;
	fd_test_server_start(&ts, UNREACHABLE_URL);
	struct fd_test_resp r;
	get(&ts, "/readyz", &r);
	fd_test_assert_problem(&r, 503, NULL);
	fd_test_resp_free(&r);
	post(&ts, "x-1", "{\"expected_version\":0,\"events\":[{\"type\":\"A\",\"data\":{}}]}", &r);
	fd_test_assert_problem(&r, 503, "database-unavailable");
	fd_test_resp_free(&r);
	get(&ts, "/streams/x-1/events", &r);
	fd_test_assert_problem(&r, 503, "database-unavailable");
	fd_test_resp_free(&r);
	get(&ts, "/events", &r);
	fd_test_assert_problem(&r, 503, "database-unavailable");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(http_health, unreachable_database)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, UNREACHABLE_URL);
	struct fd_test_resp r;
	get(&ts, "/readyz", &r);
	expect_503(&r);
	fd_test_resp_free(&r);

	post(&ts, "x-1", "{\"expected_version\":0,\"events\":[{\"type\":\"A\",\"data\":{}}]}", &r);
	expect_503(&r);
	cr_assert_str_eq(fd_test_json_str(&r, "type"), FD_PROBLEM_BASE "database-unavailable");
	fd_test_resp_free(&r);

	get(&ts, "/streams/x-1/events", &r);
	expect_503(&r);
	fd_test_resp_free(&r);

	get(&ts, "/events", &r);
	expect_503(&r);
	fd_test_resp_free(&r);

	get(&ts, "/healthz", &r);
	cr_assert_eq(r.status, 200);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/* ---- concurrent writers on one stream ----------------------------------------------------- */

enum { WRITERS = 8, APPENDS_PER_WRITER = 25 };

struct writer {
	uint16_t port;
	int index;
	int ok;
	int conflicts;
	int errors;
	int last_error_status;
	int mismatches; /* a 201 whose versions did not follow the expected version */
	long long first_versions[APPENDS_PER_WRITER];
};

static long long current_version(uint16_t port, int *status)
{
	struct fd_test_resp r;
	if (fd_test_get(port, "/streams/conc-1/events?from_version=1&limit=1", &r) != 0) {
		*status = -1;
		return -1;
	}
	*status = r.status;
	json_t *v = json_object_get(r.json, "version");
	long long version = r.status == 404 ? 0 : json_is_integer(v) ? (long long)json_integer_value(v) : -1;
	fd_test_resp_free(&r);
	return version;
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	for (int attempt = 0; w->ok < APPENDS_PER_WRITER && attempt < 5000; attempt++) {
		int st;
		long long v = current_version(w->port, &st);
		if (v < 0) {
			w->errors++;
			w->last_error_status = st;
			continue;
		}
		char body[256];
		snprintf(body, sizeof body,
			 "{\"expected_version\":%lld,\"events\":[{\"type\":\"Inc\",\"data\":{\"writer\":%d,\"n\":%d}}]}", v,
			 w->index, w->ok);
		struct fd_test_resp r;
		if (fd_test_post(w->port, "/streams/conc-1/events", body, &r) != 0) {
			w->errors++;
			w->last_error_status = -1;
			continue;
		}
		if (r.status == 201) {
			long long first = fd_test_json_int(&r, "first_version");
			if (first != v + 1 || fd_test_json_int(&r, "last_version") != v + 1)
				w->mismatches++;
			w->first_versions[w->ok++] = first;
		} else if (r.status == 409) {
			w->conflicts++;
		} else {
			w->errors++;
			w->last_error_status = r.status;
		}
		fd_test_resp_free(&r);
	}
	return NULL;
}

static int ll_cmp(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;
	return (x > y) - (x < y);
}

Test(http_concurrency, eight_writers_one_stream, .timeout = 300)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct writer w[WRITERS];
	pthread_t th[WRITERS];
	memset(w, 0, sizeof w);
	for (int i = 0; i < WRITERS; i++) {
		w[i].port = ts.port;
		w[i].index = i;
		cr_assert_eq(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
	}
	for (int i = 0; i < WRITERS; i++)
		pthread_join(th[i], NULL);

	long long all[WRITERS * APPENDS_PER_WRITER];
	size_t n = 0;
	int conflicts = 0;
	for (int i = 0; i < WRITERS; i++) {
		cr_assert_eq(w[i].errors, 0, "writer %d saw %d unexpected responses (last status %d)", i, w[i].errors,
			     w[i].last_error_status);
		cr_assert_eq(w[i].ok, APPENDS_PER_WRITER, "writer %d appended %d times", i, w[i].ok);
		cr_assert_eq(w[i].mismatches, 0, "writer %d got versions that do not follow its expected version", i);
		conflicts += w[i].conflicts;
		for (int k = 0; k < w[i].ok; k++)
			all[n++] = w[i].first_versions[k];
	}
	cr_log_info("%d conflicts (409) while appending 200 events", conflicts);
	cr_assert_eq(n, WRITERS * APPENDS_PER_WRITER);
	qsort(all, n, sizeof all[0], ll_cmp);
	for (size_t i = 0; i < n; i++)
		cr_assert_eq(all[i], (long long)i + 1, "201 first_versions must be exactly 1..200, each once");

	struct fd_test_resp r;
	get(&ts, "/streams/conc-1/events?limit=1000", &r);
	cr_assert_eq(r.status, 200);
	cr_assert_eq(fd_test_json_int(&r, "version"), 200);
	json_t *events = json_object_get(r.json, "events");
	cr_assert_eq(json_array_size(events), 200);
	int per_writer[WRITERS] = { 0 };
	for (size_t i = 0; i < 200; i++) {
		json_t *e = json_array_get(events, i);
		cr_assert_eq(ev_int(e, "version"), (long long)i + 1, "versions are contiguous");
		json_int_t wi = json_integer_value(json_object_get(json_object_get(e, "data"), "writer"));
		cr_assert(wi >= 0 && wi < WRITERS);
		/* Each writer's events appear in its own order. */
		cr_assert_eq(json_integer_value(json_object_get(json_object_get(e, "data"), "n")), per_writer[wi]);
		per_writer[wi]++;
	}
	fd_test_resp_free(&r);
	cr_assert_eq(db_count(&ts, "SELECT count(*) FROM events"), 200);
	cr_assert_eq(db_count(&ts, "SELECT count(DISTINCT version) FROM events WHERE stream_id = 'conc-1'"), 200);
	cr_assert_eq(db_count(&ts, "SELECT max(version) FROM events"), 200);
	cr_assert_eq(db_count(&ts, "SELECT version FROM streams WHERE stream_id = 'conc-1'"), 200);
	fd_test_server_stop(&ts);
}

/* ---- graceful stop ---------------------------------------------------------------------------- */

struct inflight {
	uint16_t port;
	char id[FD_UUID_STRLEN + 1];
	int rc;
	struct fd_test_resp r;
	int complete;
};

static void *inflight_main(void *arg)
{
	struct inflight *f = arg;
	char body[256];
	snprintf(body, sizeof body,
		 "{\"expected_version\":\"any\",\"events\":[{\"event_id\":\"%s\",\"type\":\"Slow\",\"data\":{}}]}", f->id);
	f->rc = fd_test_post(f->port, "/streams/gs-1/events", body, &f->r);
	f->complete = f->rc == 0 && fd_test_resp_complete(&f->r);
	return NULL;
}

struct stopper {
	struct fd_server *srv;
	volatile int done;
	double seconds;
};

static void *stopper_main(void *arg)
{
	struct stopper *s = arg;
	double t0 = fd_test_now_s();
	fd_server_stop(s->srv, 10000);
	s->seconds = fd_test_now_s() - t0;
	s->done = 1;
	return NULL;
}

static void exec_ok(PGconn *c, const char *sql)
{
	PGresult *res = PQexec(c, sql);
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s: %s", sql, PQresultErrorMessage(res));
	PQclear(res);
}

Test(http_shutdown, stop_completes_requests_in_flight, .timeout = 120)
{
	enum { N = 3 };
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	post(&ts, "gs-1", "{\"expected_version\":0,\"events\":[{\"type\":\"First\",\"data\":{}}]}", &r);
	assert_append_result(&r, 201, "gs-1", 1, 1);
	fd_test_resp_free(&r);

	/* Hold appends inside the database so they are certainly in flight when the stop begins. */
	PGconn *locker = fd_test_connect(ts.db_url);
	PGconn *observer = fd_test_connect(ts.db_url);
	exec_ok(locker, "BEGIN");
	exec_ok(locker, "LOCK TABLE streams IN EXCLUSIVE MODE");

	struct inflight f[N];
	pthread_t th[N];
	memset(f, 0, sizeof f);
	for (int i = 0; i < N; i++) {
		f[i].port = ts.port;
		fd_test_new_uuid(f[i].id);
	}
	/*
	 * One at a time: libmicrohttpd may accept a burst of connections on one
	 * worker thread, where the second would wait behind the first's blocked
	 * handler.  A worker blocked in a handler accepts nothing, so each new
	 * request lands on an idle worker.  An append is in flight once it waits
	 * for the lock in the database, or queues behind the append batch that
	 * does (appends to one stream go one batch at a time).
	 */
	for (int i = 0; i < N; i++) {
		cr_assert_eq(pthread_create(&th[i], NULL, inflight_main, &f[i]), 0);
		double deadline = fd_test_now_s() + 20;
		for (;;) {
			struct fd_pool_stats ps;
			fd_pool_stats(ts.pool, &ps);
			long long waiting = fd_test_scalar(observer, "SELECT count(*) FROM pg_stat_activity"
							   " WHERE datname = current_database() AND wait_event_type = 'Lock'");
			if (waiting + ps.append_queue >= i + 1)
				break;
			cr_assert_lt(fd_test_now_s(), deadline, "append %d never reached the database", i);
			fd_test_sleep_ms(20);
		}
	}

	struct stopper s = { .srv = ts.srv };
	pthread_t st;
	cr_assert_eq(pthread_create(&st, NULL, stopper_main, &s), 0);
	fd_test_sleep_ms(300);
	cr_assert_not(s.done, "the stop must wait for requests in flight");
	/* Draining: new connections are refused. */
	struct fd_test_resp late;
	int late_rc = fd_test_get(ts.port, "/healthz", &late);
	if (late_rc == 0)
		fd_test_resp_free(&late);
	cr_assert_eq(late_rc, -1, "a new connection was accepted while stopping");

	exec_ok(locker, "COMMIT");
	for (int i = 0; i < N; i++)
		pthread_join(th[i], NULL);
	pthread_join(st, NULL);
	ts.srv = ts.rt.srv = NULL; /* already stopped */
	cr_assert(s.done);
	cr_assert_lt(s.seconds, 9.0, "the stop waited for the grace period instead of the requests");

	for (int i = 0; i < N; i++) {
		cr_assert_eq(f[i].rc, 0, "request %d: no connection", i);
		cr_assert_eq(f[i].r.status, 201, "request %d: status %d (%zu bytes)", i, f[i].r.status, f[i].r.raw_len);
		cr_assert(f[i].complete, "request %d: truncated response", i);
		cr_assert_str_eq(fd_test_json_str(&f[i].r, "stream"), "gs-1");
		fd_test_resp_free(&f[i].r);
	}
	cr_assert_eq(fd_test_scalar(observer, "SELECT count(*) FROM events"), 1 + N);
	cr_assert_eq(fd_test_scalar(observer, "SELECT version FROM streams WHERE stream_id = 'gs-1'"), 1 + N);
	PQfinish(observer);
	PQfinish(locker);
	fd_test_server_stop(&ts);
}

enum { LOOPERS = 4, LOOP_MAX = 2000 };

enum outcome { OUT_NONE, OUT_FULL, OUT_REFUSED, OUT_NO_BYTES, OUT_TRUNCATED };

struct looper {
	uint16_t port;
	volatile int started;
	int n;
	char ids[LOOP_MAX][FD_UUID_STRLEN + 1];
	enum outcome out[LOOP_MAX];
	int status[LOOP_MAX];
};

static void *looper_main(void *arg)
{
	struct looper *l = arg;
	int refusals = 0;
	for (l->n = 0; l->n < LOOP_MAX && refusals < 3; l->n++) {
		int i = l->n;
		struct fd_uuid u;
		if (fd_uuid_v7(&u) != FD_OK)
			break;
		fd_uuid_format(&u, l->ids[i]);
		char body[512];
		snprintf(body, sizeof body,
			 "{\"expected_version\":\"any\",\"events\":[{\"event_id\":\"%s\",\"type\":\"Loop\",\"data\":{\"pad\":"
			 "\"................................................................................\"}}]}",
			 l->ids[i]);
		struct fd_test_resp r;
		int rc = fd_test_post(l->port, "/streams/loop-1/events", body, &r);
		if (rc != 0) {
			l->out[i] = OUT_REFUSED;
			refusals++;
			continue;
		}
		l->status[i] = r.status;
		if (fd_test_resp_complete(&r))
			l->out[i] = OUT_FULL;
		else if (r.raw_len == 0)
			l->out[i] = OUT_NO_BYTES;
		else
			l->out[i] = OUT_TRUNCATED;
		fd_test_resp_free(&r);
		l->started = 1;
	}
	return NULL;
}

Test(http_shutdown, stop_during_append_loops_truncates_nothing, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	char *url = strdup(ts.db_url);
	struct looper *l = calloc(LOOPERS, sizeof *l);
	pthread_t th[LOOPERS];
	cr_assert_not_null(l);
	for (int k = 0; k < LOOPERS; k++) {
		l[k].port = ts.port;
		cr_assert_eq(pthread_create(&th[k], NULL, looper_main, &l[k]), 0);
	}
	double deadline = fd_test_now_s() + 20;
	for (int k = 0; k < LOOPERS; k++)
		while (!l[k].started) {
			cr_assert_lt(fd_test_now_s(), deadline, "append loop %d never got a response", k);
			fd_test_sleep_ms(5);
		}
	fd_test_sleep_ms(200);
	fd_test_server_stop(&ts);
	for (int k = 0; k < LOOPERS; k++)
		pthread_join(th[k], NULL);

	PGconn *c = fd_test_connect(url);
	int full = 0, refused = 0, dropped = 0;
	for (int k = 0; k < LOOPERS; k++) {
		cr_assert_lt(l[k].n, LOOP_MAX, "loop %d never saw the server stop", k);
		for (int i = 0; i < l[k].n; i++) {
			char *sql = fd_test_fmt("SELECT count(*) FROM events WHERE event_id = '%s'", l[k].ids[i]);
			long long stored = fd_test_scalar(c, sql);
			free(sql);
			cr_assert_neq(l[k].out[i], OUT_TRUNCATED, "loop %d request %d: truncated response (status %d)", k, i,
				      l[k].status[i]);
			if (l[k].out[i] == OUT_FULL) {
				full++;
				cr_assert_eq(l[k].status[i], 201, "loop %d request %d: status %d", k, i, l[k].status[i]);
				cr_assert_eq(stored, 1, "loop %d request %d: answered 201 but not stored", k, i);
			} else {
				/*
				 * No response at all: the connection was refused, or reset
				 * before the server read the request (it sat in the listen
				 * backlog when the listener closed).  Either way the server
				 * must not have processed it: an append that was written
				 * but never answered is a request cut off mid-flight.
				 */
				refused += l[k].out[i] == OUT_REFUSED;
				dropped += l[k].out[i] == OUT_NO_BYTES;
				cr_assert_eq(stored, 0, "loop %d request %d was written but got no response", k, i);
			}
		}
		cr_assert_eq(l[k].out[l[k].n - 1], OUT_REFUSED, "loop %d ends on refusals after the stop", k);
	}
	cr_log_info("append loops: %d answered, %d refused, %d dropped unread", full, refused, dropped);
	cr_assert_gt(full, 0);
	cr_assert_eq(fd_test_scalar(c, "SELECT count(*) FROM events"), full);
	PQfinish(c);
	free(l);
	free(url);
}

/* ---- pool exhaustion ------------------------------------------------------------------------------------ */

static void tweak_one_connection(struct fd_config *cfg)
{
	cfg->workers = 2;
	cfg->pool_size = 1;
	cfg->pool_timeout_ms = 300;
}

Test(http_pool, exhausted_pool_is_503_with_retry_after, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak_one_connection);
	struct fd_test_resp r;
	post(&ts, "gs-1", "{\"expected_version\":0,\"events\":[{\"type\":\"First\",\"data\":{}}]}", &r);
	assert_append_result(&r, 201, "gs-1", 1, 1);
	fd_test_resp_free(&r);

	/* The only pooled connection is held by an append waiting on a lock. */
	PGconn *locker = fd_test_connect(ts.db_url);
	PGconn *observer = fd_test_connect(ts.db_url);
	exec_ok(locker, "BEGIN");
	exec_ok(locker, "LOCK TABLE streams IN EXCLUSIVE MODE");
	struct inflight f = { .port = ts.port };
	fd_test_new_uuid(f.id);
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, inflight_main, &f), 0);
	double deadline = fd_test_now_s() + 20;
	while (fd_test_scalar(observer, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
					" AND wait_event_type = 'Lock'") < 1) {
		cr_assert_lt(fd_test_now_s(), deadline, "the append never reached the database");
		fd_test_sleep_ms(20);
	}

	double t0 = fd_test_now_s();
	get(&ts, "/streams/gs-1/events", &r);
	double waited = fd_test_now_s() - t0;
	expect_503(&r);
	cr_assert_str_eq(fd_test_json_str(&r, "type"), FD_PROBLEM_BASE "database-unavailable");
	cr_assert_geq(waited, 0.25, "the request should wait FACTD_POOL_TIMEOUT_MS for a connection (%.3fs)", waited);
	fd_test_resp_free(&r);

	exec_ok(locker, "COMMIT");
	pthread_join(th, NULL);
	cr_assert_eq(f.r.status, 201, "the blocked append completes: %d %s", f.r.status, f.r.body);
	fd_test_resp_free(&f.r);
	get(&ts, "/streams/gs-1/events", &r);
	cr_assert_eq(r.status, 200, "the pool recovers: %s", r.body);
	cr_assert_eq(fd_test_json_int(&r, "version"), 2);
	fd_test_resp_free(&r);
	PQfinish(observer);
	PQfinish(locker);
	fd_test_server_stop(&ts);
}
