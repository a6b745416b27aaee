/*
 * test_http_errors.c - every malformed or refused request: its status, a
 * complete application/problem+json document, nothing written (rows of
 * events and streams counted before and after over a direct connection), no
 * SQL in the answer, and a server that still answers /healthz afterwards.
 *
 * Each test starts its own in-process server on its own database.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "factd/buf.h"
#include "http/problem.h"
#include "http_client.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

/* ---- helpers ------------------------------------------------------------------ */

/* Row counts that a refused request must leave alone. */
struct counts {
	long long events, streams;
};

static struct counts counts_now(const struct fd_test_server *ts)
{
	struct counts c = {
		.events = fd_test_server_scalar(ts, "SELECT count(*) FROM events"),
		.streams = fd_test_server_scalar(ts, "SELECT count(*) FROM streams"),
	};
	return c;
}

static void assert_counts(const struct fd_test_server *ts, struct counts before)
{
	struct counts now = counts_now(ts);
	cr_assert_eq(now.events, before.events, "events: %lld rows, %lld before", now.events, before.events);
	cr_assert_eq(now.streams, before.streams, "streams: %lld rows, %lld before", now.streams, before.streams);
}

/* A server with one stored event (so "nothing written" is checked against a non-empty table). */
static struct counts start_seeded(struct fd_test_server *ts, void (*tweak)(struct fd_config *))
{
	fd_test_server_start_with(ts, NULL, tweak);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_post(ts->port, "/streams/seed-1/events",
				  "{\"expected_version\":0,\"events\":[{\"type\":\"Seeded\",\"data\":{}}]}", &r), 0);
	cr_assert_eq(r.status, 201, "seeding failed: %s", r.body);
	fd_test_resp_free(&r);
	struct counts c = counts_now(ts);
	cr_assert_eq(c.events, 1);
	cr_assert_eq(c.streams, 1);
	return c;
}

/* The answer never shows SQL or PostgreSQL's messages. */
static void assert_no_sql(const struct fd_test_resp *r)
{
	static const char *const words[] = { "SELECT", "select ", "INSERT", "syntax", "ERROR:", "fd_append", "LINE 1",
					     "pg_", "relation \"" };
	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
		cr_assert_null(strstr(r->body ? r->body : "", words[i]), "the answer shows \"%s\": %s", words[i], r->body);
}

/* The process is still up and serving. */
static void assert_alive(const struct fd_test_server *ts)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts->port, "/healthz", &r), 0, "the server stopped answering");
	cr_assert_eq(r.status, 200);
	cr_assert_str_eq(fd_test_json_str(&r, "status"), "ok");
	fd_test_resp_free(&r);
}

static void finish(struct fd_test_server *ts, struct counts before)
{
	assert_counts(ts, before);
	assert_alive(ts);
	fd_test_server_stop(ts);
}

static void assert_field(const struct fd_test_resp *r, const char *member, const char *want)
{
	const char *got = fd_test_json_str(r, member);
	cr_assert(got, "no \"%s\" member: %s", member, r->body);
	cr_assert_str_eq(got, want, "%s: %s", member, r->body);
}

/*
 * POST `body` (len bytes, may hold NULs) to /streams/err-1/events and expect
 * a problem of `status` (and `slug`, `field` when not NULL), with nothing written.
 */
static void check_body_len(const char *body, size_t len, int status, const char *slug, const char *field)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts.port, "POST", "/streams/err-1/events", NULL, body, len, &r), 0);
	/* Status, no SQL, nothing written and still alive first; then the problem document in full. */
	cr_assert_eq(r.status, status, "status %d, expected %d: %s", r.status, status, r.body);
	assert_no_sql(&r);
	cr_assert_null(fd_test_header(&r, "Location", (char[64]){ 0 }, 64));
	assert_counts(&ts, before);
	struct fd_test_resp g;
	cr_assert_eq(fd_test_get(ts.port, "/streams/err-1/events", &g), 0);
	cr_assert_eq(g.status, 404, "a refused append must not create its stream");
	fd_test_resp_free(&g);
	assert_alive(&ts);
	fd_test_assert_problem(&r, status, slug);
	if (field)
		assert_field(&r, "field", field);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

static void check_body(const char *body, int status, const char *slug, const char *field)
{
	check_body_len(body, strlen(body), status, slug, field);
}

#define EV_OK "{\"type\":\"A\",\"data\":{}}"
#define APPEND(events) "{\"expected_version\":0,\"events\":" events "}"
#define APPEND_EV(ev) APPEND("[" ev "]")
#define APPEND_EXPECTED(ev) "{\"expected_version\":" ev ",\"events\":[" EV_OK "]}"

#define BAD_BODY(name, body, status, slug, field) \
	Test(append_body, name) { check_body_len(body, sizeof(body) - 1, status, slug, field); }

/* ---- JSON that does not parse ------------------------------------------------------------ */

BAD_BODY(malformed_json, "{\"expected_version\":0,\"events\":[}", 400, "invalid-json", NULL)
BAD_BODY(truncated_json, "{\"expected_version\":0,\"events\":[{\"type\":\"A\",\"data\":{}}", 400, "invalid-json", NULL)
BAD_BODY(truncated_mid_string, "{\"expected_version\":0,\"events\":[{\"type\":\"A", 400, "invalid-json", NULL)
BAD_BODY(empty_body, "", 400, "invalid-json", NULL)
BAD_BODY(whitespace_body, " \r\n\t ", 400, "invalid-json", NULL)
BAD_BODY(trailing_garbage, APPEND_EV(EV_OK) " x", 400, "invalid-json", NULL)
BAD_BODY(two_documents, APPEND_EV(EV_OK) APPEND_EV(EV_OK), 400, "invalid-json", NULL)
BAD_BODY(single_quotes, "{'expected_version':0,'events':[]}", 400, "invalid-json", NULL)
BAD_BODY(trailing_comma, "{\"expected_version\":0,\"events\":[" EV_OK ",]}", 400, "invalid-json", NULL)
BAD_BODY(comment, "{\"expected_version\":0, /* c */ \"events\":[" EV_OK "]}", 400, "invalid-json", NULL)
BAD_BODY(duplicate_top_level_key, "{\"expected_version\":0,\"expected_version\":1,\"events\":[" EV_OK "]}", 400,
	 "invalid-json", NULL)
BAD_BODY(duplicate_key_escaped, "{\"expected_version\":0,\"events\":[" EV_OK "],\"ev\\u0065nts\":[" EV_OK "]}", 400,
	 "invalid-json", NULL)
BAD_BODY(duplicate_data_key_escaped, APPEND_EV("{\"type\":\"A\",\"data\":{\"x\":1},\"d\\u0061ta\":{\"x\":2}}"), 400,
	 "invalid-json", NULL)
BAD_BODY(duplicate_key_in_data, APPEND_EV("{\"type\":\"A\",\"data\":{\"k\":1,\"k\":2}}"), 400, "invalid-json", NULL)
BAD_BODY(nan_in_data, APPEND_EV("{\"type\":\"A\",\"data\":{\"x\":NaN}}"), 400, "invalid-json", NULL)
BAD_BODY(infinity_in_data, APPEND_EV("{\"type\":\"A\",\"data\":{\"x\":-Infinity}}"), 400, "invalid-json", NULL)
BAD_BODY(leading_zero_number, APPEND_EV("{\"type\":\"A\",\"data\":{\"x\":012}}"), 400, "invalid-json", NULL)
BAD_BODY(real_overflow_in_data, APPEND_EV("{\"type\":\"A\",\"data\":{\"x\":1e400}}"), 400, NULL, NULL)

/* ---- the wrong shape ---------------------------------------------------------------------- */

BAD_BODY(json_array_body, "[" APPEND_EV(EV_OK) "]", 400, NULL, NULL)
BAD_BODY(json_string_body, "\"events\"", 400, NULL, NULL)
BAD_BODY(json_number_body, "42", 400, NULL, NULL)
BAD_BODY(json_null_body, "null", 400, NULL, NULL)
BAD_BODY(empty_object, "{}", 400, "invalid-field", NULL)
BAD_BODY(unknown_top_level_field, "{\"expected_version\":0,\"events\":[" EV_OK "],\"extra\":1}", 400, "invalid-field",
	 NULL)
BAD_BODY(unknown_event_field, APPEND_EV("{\"type\":\"A\",\"data\":{},\"bogus\":1}"), 400, "invalid-field", "/events/0")
BAD_BODY(unknown_field_in_second_event, APPEND("[" EV_OK ",{\"type\":\"A\",\"data\":{},\"Type\":\"x\"}]"), 400,
	 "invalid-field", "/events/1")

/* ---- expected_version ---------------------------------------------------------------------- */

BAD_BODY(missing_expected_version, "{\"events\":[" EV_OK "]}", 400, "invalid-field", "/expected_version")
BAD_BODY(expected_version_negative, APPEND_EXPECTED("-1"), 400, "invalid-field", "/expected_version")
BAD_BODY(expected_version_fraction, APPEND_EXPECTED("1.5"), 400, "invalid-field", "/expected_version")
BAD_BODY(expected_version_whole_real, APPEND_EXPECTED("1.0"), 400, "invalid-field", "/expected_version")
BAD_BODY(expected_version_numeric_string, APPEND_EXPECTED("\"1\""), 400, "invalid-field", "/expected_version")
BAD_BODY(expected_version_zero_string, APPEND_EXPECTED("\"0\""), 400, "invalid-field", "/expected_version")
BAD_BODY(expected_version_bogus, APPEND_EXPECTED("\"bogus\""), 400, "invalid-field", "/expected_version")
BAD_BODY(expected_version_wrong_case, APPEND_EXPECTED("\"ANY\""), 400, "invalid-field", "/expected_version")
BAD_BODY(expected_version_empty_string, APPEND_EXPECTED("\"\""), 400, "invalid-field", "/expected_version")
BAD_BODY(expected_version_true, APPEND_EXPECTED("true"), 400, "invalid-field", "/expected_version")
BAD_BODY(expected_version_null, APPEND_EXPECTED("null"), 400, "invalid-field", "/expected_version")
BAD_BODY(expected_version_object, APPEND_EXPECTED("{}"), 400, "invalid-field", "/expected_version")
BAD_BODY(expected_version_array, APPEND_EXPECTED("[0]"), 400, "invalid-field", "/expected_version")
BAD_BODY(expected_version_1e400, APPEND_EXPECTED("1e400"), 400, NULL, NULL)
BAD_BODY(expected_version_huge_integer, APPEND_EXPECTED("123456789012345678901234567890"), 400, NULL, NULL)
BAD_BODY(expected_version_int64_overflow, APPEND_EXPECTED("9223372036854775808"), 400, NULL, NULL)
BAD_BODY(expected_version_min_int64, APPEND_EXPECTED("-9223372036854775808"), 400, NULL, NULL)

/* ---- events --------------------------------------------------------------------------------- */

BAD_BODY(events_missing, "{\"expected_version\":0}", 400, "invalid-field", "/events")
BAD_BODY(events_empty, APPEND("[]"), 400, "invalid-field", "/events")
BAD_BODY(events_object, APPEND(EV_OK), 400, "invalid-field", "/events")
BAD_BODY(events_string, APPEND("\"events\""), 400, "invalid-field", "/events")
BAD_BODY(events_null, APPEND("null"), 400, "invalid-field", "/events")
BAD_BODY(event_number, APPEND("[1]"), 400, "invalid-field", "/events/0")
BAD_BODY(event_string, APPEND("[\"A\"]"), 400, "invalid-field", "/events/0")
BAD_BODY(event_array, APPEND("[[]]"), 400, "invalid-field", "/events/0")
BAD_BODY(event_null, APPEND("[null]"), 400, "invalid-field", "/events/0")
BAD_BODY(second_event_not_object, APPEND("[" EV_OK ",5]"), 400, "invalid-field", "/events/1")

/* ---- type -------------------------------------------------------------------------------------- */

#define T201 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
	     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

BAD_BODY(type_missing, APPEND_EV("{\"data\":{}}"), 400, "invalid-field", "/events/0/type")
BAD_BODY(type_empty, APPEND_EV("{\"type\":\"\",\"data\":{}}"), 400, "invalid-field", "/events/0/type")
BAD_BODY(type_number, APPEND_EV("{\"type\":7,\"data\":{}}"), 400, "invalid-field", "/events/0/type")
BAD_BODY(type_null, APPEND_EV("{\"type\":null,\"data\":{}}"), 400, "invalid-field", "/events/0/type")
BAD_BODY(type_object, APPEND_EV("{\"type\":{},\"data\":{}}"), 400, "invalid-field", "/events/0/type")
BAD_BODY(type_201_chars, APPEND_EV("{\"type\":\"" T201 "\",\"data\":{}}"), 400, "invalid-field", "/events/0/type")
BAD_BODY(type_in_second_event, APPEND("[" EV_OK ",{\"type\":\"\",\"data\":{}}]"), 400, "invalid-field",
	 "/events/1/type")

Test(append_body, type_201_multibyte_chars)
{
	struct fd_buf b = FD_BUF_INIT;
	cr_assert_eq(fd_buf_appendf(&b, "%s", "{\"expected_version\":0,\"events\":[{\"type\":\""), FD_OK);
	for (int i = 0; i < 201; i++)
		cr_assert_eq(fd_buf_append(&b, "\xc3\xa9", 2), FD_OK);
	cr_assert_eq(fd_buf_appendf(&b, "%s", "\",\"data\":{}}]}"), FD_OK);
	check_body(b.data, 400, "invalid-field", "/events/0/type");
	fd_buf_release(&b);
}

/* ---- data, metadata, event_id ---------------------------------------------------------------------- */

BAD_BODY(data_missing, APPEND_EV("{\"type\":\"A\"}"), 400, "invalid-field", "/events/0/data")
BAD_BODY(data_array, APPEND_EV("{\"type\":\"A\",\"data\":[]}"), 400, "invalid-field", "/events/0/data")
BAD_BODY(data_string, APPEND_EV("{\"type\":\"A\",\"data\":\"{}\"}"), 400, "invalid-field", "/events/0/data")
BAD_BODY(data_number, APPEND_EV("{\"type\":\"A\",\"data\":1}"), 400, "invalid-field", "/events/0/data")
BAD_BODY(data_null, APPEND_EV("{\"type\":\"A\",\"data\":null}"), 400, "invalid-field", "/events/0/data")
BAD_BODY(metadata_array, APPEND_EV("{\"type\":\"A\",\"data\":{},\"metadata\":[]}"), 400, "invalid-field",
	 "/events/0/metadata")
BAD_BODY(metadata_string, APPEND_EV("{\"type\":\"A\",\"data\":{},\"metadata\":\"m\"}"), 400, "invalid-field",
	 "/events/0/metadata")
BAD_BODY(metadata_null, APPEND_EV("{\"type\":\"A\",\"data\":{},\"metadata\":null}"), 400, "invalid-field",
	 "/events/0/metadata")
BAD_BODY(event_id_not_uuid, APPEND_EV("{\"event_id\":\"not-a-uuid\",\"type\":\"A\",\"data\":{}}"), 400,
	 "invalid-field", "/events/0/event_id")
BAD_BODY(event_id_number, APPEND_EV("{\"event_id\":123,\"type\":\"A\",\"data\":{}}"), 400, "invalid-field",
	 "/events/0/event_id")
BAD_BODY(event_id_empty, APPEND_EV("{\"event_id\":\"\",\"type\":\"A\",\"data\":{}}"), 400, "invalid-field",
	 "/events/0/event_id")
BAD_BODY(event_id_null, APPEND_EV("{\"event_id\":null,\"type\":\"A\",\"data\":{}}"), 400, "invalid-field",
	 "/events/0/event_id")
BAD_BODY(event_id_braced, APPEND_EV("{\"event_id\":\"{0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c11}\",\"type\":\"A\",\"data\":{}}"),
	 400, "invalid-field", "/events/0/event_id")
BAD_BODY(event_id_no_hyphens, APPEND_EV("{\"event_id\":\"0193f1a24b107c3e9a416d2f0e8b7c11\",\"type\":\"A\",\"data\":{}}"),
	 400, "invalid-field", "/events/0/event_id")
BAD_BODY(event_id_repeated_in_request,
	 APPEND("[{\"event_id\":\"0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c11\",\"type\":\"A\",\"data\":{}},"
		"{\"event_id\":\"0193F1A2-4B10-7C3E-9A41-6D2F0E8B7C11\",\"type\":\"B\",\"data\":{}}]"),
	 400, "invalid-field", "/events/1/event_id")

/* ---- bytes JSON does not allow ---------------------------------------------------------------------- */

BAD_BODY(invalid_utf8_in_type, APPEND_EV("{\"type\":\"A\xff\xfe\",\"data\":{}}"), 400, "invalid-json", NULL)
BAD_BODY(invalid_utf8_in_data, APPEND_EV("{\"type\":\"A\",\"data\":{\"s\":\"\xc3\x28\"}}"), 400, "invalid-json", NULL)
BAD_BODY(invalid_utf8_in_key, APPEND_EV("{\"type\":\"A\",\"data\":{\"\xed\xa0\x80\":1}}"), 400, "invalid-json", NULL)
BAD_BODY(overlong_utf8, APPEND_EV("{\"type\":\"A\",\"data\":{\"s\":\"\xc0\xaf\"}}"), 400, "invalid-json", NULL)
BAD_BODY(escaped_nul_in_type, APPEND_EV("{\"type\":\"A\\u0000B\",\"data\":{}}"), 400, "invalid-json", NULL)
BAD_BODY(escaped_nul_in_data, APPEND_EV("{\"type\":\"A\",\"data\":{\"s\":\"\\u0000\"}}"), 400, "invalid-json", NULL)
BAD_BODY(escaped_nul_in_key, APPEND_EV("{\"type\":\"A\",\"data\":{\"\\u0000\":1}}"), 400, "invalid-json", NULL)
BAD_BODY(lone_surrogate_in_data, APPEND_EV("{\"type\":\"A\",\"data\":{\"s\":\"\\ud800\"}}"), 400, "invalid-json", NULL)
BAD_BODY(raw_nul_in_string, APPEND_EV("{\"type\":\"A\0B\",\"data\":{}}"), 400, "invalid-json", NULL)
BAD_BODY(raw_nul_between_tokens, "{\"expected_version\":0,\0\"events\":[" EV_OK "]}", 400, "invalid-json", NULL)
BAD_BODY(raw_nul_after_document, APPEND_EV(EV_OK) "\0", 400, "invalid-json", NULL)
BAD_BODY(raw_control_char_in_string, APPEND_EV("{\"type\":\"A\x01\",\"data\":{}}"), 400, "invalid-json", NULL)

/*
 * A number jansson accepts (it underflows to 0.0) but PostgreSQL's numeric
 * cannot hold ("value overflows numeric format"): still a client error with
 * a full problem document.
 */
BAD_BODY(number_beyond_numeric_range, APPEND_EV("{\"type\":\"A\",\"data\":{\"x\":1e-20000}}"), 400, NULL, NULL)
BAD_BODY(number_beyond_numeric_range_second_event,
	 APPEND("[" EV_OK ",{\"type\":\"A\",\"data\":{\"x\":1e-20000}}]"), 400, NULL, NULL)

/* ---- nesting ------------------------------------------------------------------------------------------ */

/* data = {"x": <open>*depth <close>*depth}, or unclosed. */
static char *nested_body(size_t depth, char open, char close, int closed)
{
	struct fd_buf b = FD_BUF_INIT;
	cr_assert_eq(fd_buf_appendf(&b, "%s", "{\"expected_version\":0,\"events\":[{\"type\":\"A\",\"data\":{\"x\":"), FD_OK);
	for (size_t i = 0; i < depth; i++) {
		if (open == '{')
			cr_assert_eq(fd_buf_append(&b, "{\"a\":", 5), FD_OK);
		else
			cr_assert_eq(fd_buf_append(&b, &open, 1), FD_OK);
	}
	if (open == '{')
		cr_assert_eq(fd_buf_append(&b, "1", 1), FD_OK);
	if (closed) {
		for (size_t i = 0; i < depth; i++)
			cr_assert_eq(fd_buf_append(&b, &close, 1), FD_OK);
		cr_assert_eq(fd_buf_append(&b, "}}]}", 4), FD_OK);
	}
	return fd_buf_detach(&b);
}

Test(append_body, deeply_nested_arrays_unclosed)
{
	char *body = nested_body(100000, '[', ']', 0);
	check_body(body, 400, NULL, NULL);
	free(body);
}

Test(append_body, deeply_nested_arrays_closed)
{
	char *body = nested_body(100000, '[', ']', 1);
	check_body(body, 400, NULL, NULL);
	free(body);
}

Test(append_body, deeply_nested_objects_closed)
{
	char *body = nested_body(50000, '{', '}', 1);
	check_body(body, 400, NULL, NULL);
	free(body);
}

Test(append_body, moderately_nested_data_accepted)
{
	/* The nesting limit is not so low that ordinary documents fail. */
	struct fd_test_server ts;
	start_seeded(&ts, NULL);
	char *body = nested_body(100, '[', ']', 1);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_post(ts.port, "/streams/deep-1/events", body, &r), 0);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);
	free(body);
	assert_alive(&ts);
	fd_test_server_stop(&ts);
}

/* ---- sizes -------------------------------------------------------------------------------------------- */

/* A valid append whose body is exactly `size` bytes (padding inside data). */
static char *sized_body(size_t size)
{
	static const char head[] = "{\"expected_version\":\"any\",\"events\":[{\"type\":\"Big\",\"data\":{\"pad\":\"";
	static const char tail[] = "\"}}]}";
	size_t fixed = sizeof head - 1 + sizeof tail - 1;
	cr_assert_gt(size, fixed);
	char *b = malloc(size + 1);
	cr_assert_not_null(b);
	memcpy(b, head, sizeof head - 1);
	memset(b + sizeof head - 1, 'p', size - fixed);
	memcpy(b + size - (sizeof tail - 1), tail, sizeof tail - 1);
	b[size] = '\0';
	return b;
}

/* Send `body` with chunked transfer encoding in chunks of `chunk` bytes. */
static void post_chunked(uint16_t port, const char *path, const char *body, size_t len, size_t chunk,
			 struct fd_test_resp *r)
{
	struct fd_buf raw = FD_BUF_INIT;
	cr_assert_eq(fd_buf_appendf(&raw,
				    "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
				    "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
				    path), FD_OK);
	for (size_t off = 0; off < len; off += chunk) {
		size_t n = len - off < chunk ? len - off : chunk;
		cr_assert_eq(fd_buf_appendf(&raw, "%zx\r\n", n), FD_OK);
		cr_assert_eq(fd_buf_append(&raw, body + off, n), FD_OK);
		cr_assert_eq(fd_buf_append(&raw, "\r\n", 2), FD_OK);
	}
	cr_assert_eq(fd_buf_append(&raw, "0\r\n\r\n", 5), FD_OK);
	cr_assert_eq(fd_test_http_raw(port, raw.data, raw.len, r), 0);
	fd_buf_release(&raw);
}

Test(append_size, body_over_1mib_with_content_length)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	char *body = sized_body(1048577);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_post(ts.port, "/streams/big-1/events", body, &r), 0);
	fd_test_assert_problem(&r, 413, "body-too-large");
	fd_test_resp_free(&r);
	free(body);
	finish(&ts, before);
}

Test(append_size, body_far_over_limit_with_content_length)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	char *body = sized_body(8 * 1048576);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_post(ts.port, "/streams/big-1/events", body, &r), 0);
	fd_test_assert_problem(&r, 413, "body-too-large");
	fd_test_resp_free(&r);
	free(body);
	finish(&ts, before);
}

Test(append_size, body_of_exactly_1mib_accepted)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	char *body = sized_body(1048576);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_post(ts.port, "/streams/big-1/events", body, &r), 0);
	cr_assert_eq(r.status, 201, "a body of exactly FACTD_MAX_BODY is allowed: %d %s", r.status, r.body);
	fd_test_resp_free(&r);
	free(body);
	cr_assert_eq(counts_now(&ts).events, before.events + 1);
	assert_alive(&ts);
	fd_test_server_stop(&ts);
}

Test(append_size, body_over_1mib_chunked)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	char *body = sized_body(1048577 + 4096);
	struct fd_test_resp r;
	post_chunked(ts.port, "/streams/big-1/events", body, strlen(body), 65536, &r);
	fd_test_assert_problem(&r, 413, "body-too-large");
	fd_test_resp_free(&r);
	free(body);
	finish(&ts, before);
}

Test(append_size, small_body_chunked_accepted)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	const char *body = "{\"expected_version\":0,\"events\":[{\"type\":\"Chunked\",\"data\":{\"n\":1}}]}";
	struct fd_test_resp r;
	post_chunked(ts.port, "/streams/chunk-1/events", body, strlen(body), 7, &r);
	cr_assert_eq(r.status, 201, "%d %s", r.status, r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(counts_now(&ts).events, before.events + 1);
	assert_alive(&ts);
	fd_test_server_stop(&ts);
}

static void tweak_small(struct fd_config *cfg)
{
	cfg->max_body = 4096;
	cfg->max_append_events = 3;
}

Test(append_size, configured_body_limit)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, tweak_small);
	char *over = sized_body(4097), *at = sized_body(4096);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_post(ts.port, "/streams/small-1/events", over, &r), 0);
	fd_test_assert_problem(&r, 413, "body-too-large");
	cr_assert(strstr(fd_test_json_str(&r, "detail"), "4096"), "the detail names the limit: %s", r.body);
	fd_test_resp_free(&r);
	post_chunked(ts.port, "/streams/small-1/events", over, strlen(over), 1000, &r);
	fd_test_assert_problem(&r, 413, "body-too-large");
	fd_test_resp_free(&r);
	assert_counts(&ts, before);
	cr_assert_eq(fd_test_post(ts.port, "/streams/small-1/events", at, &r), 0);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);
	free(over);
	free(at);
	assert_alive(&ts);
	fd_test_server_stop(&ts);
}

Test(append_size, too_many_events)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, tweak_small);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_post(ts.port, "/streams/many-1/events", APPEND("[" EV_OK "," EV_OK "," EV_OK "," EV_OK "]"), &r),
		     0);
	fd_test_assert_problem(&r, 413, NULL);
	assert_no_sql(&r);
	fd_test_resp_free(&r);
	assert_counts(&ts, before);
	cr_assert_eq(fd_test_post(ts.port, "/streams/many-1/events", APPEND("[" EV_OK "," EV_OK "," EV_OK "]"), &r), 0);
	cr_assert_eq(r.status, 201, "exactly FACTD_MAX_APPEND_EVENTS events are allowed: %s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(counts_now(&ts).events, before.events + 3);
	assert_alive(&ts);
	fd_test_server_stop(&ts);
}

Test(append_size, too_many_events_default_limit)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	struct fd_buf b = FD_BUF_INIT;
	cr_assert_eq(fd_buf_appendf(&b, "%s", "{\"expected_version\":0,\"events\":["), FD_OK);
	for (int i = 0; i < 1001; i++)
		cr_assert_eq(fd_buf_appendf(&b, "%s{\"type\":\"T\",\"data\":{}}", i ? "," : ""), FD_OK);
	cr_assert_eq(fd_buf_append(&b, "]}", 2), FD_OK);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_post(ts.port, "/streams/many-2/events", b.data, &r), 0);
	fd_test_assert_problem(&r, 413, NULL);
	fd_test_resp_free(&r);
	fd_buf_release(&b);
	finish(&ts, before);
}

/* ---- media types ------------------------------------------------------------------------------------- */

static void check_content_type(const char *ct_header)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	const char *body = APPEND_EV(EV_OK);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts.port, "POST", "/streams/ct-1/events", ct_header, body, strlen(body), &r), 0);
	fd_test_assert_problem(&r, 415, "unsupported-media-type");
	fd_test_resp_free(&r);
	finish(&ts, before);
}

Test(media_type, text_plain)
{
	check_content_type("Content-Type: text/plain\r\n");
}

Test(media_type, form_urlencoded)
{
	check_content_type("Content-Type: application/x-www-form-urlencoded\r\n");
}

Test(media_type, json_lookalike)
{
	check_content_type("Content-Type: application/jsonx\r\n");
}

Test(media_type, json_patch)
{
	check_content_type("Content-Type: application/json-patch+json\r\n");
}

Test(media_type, empty_content_type)
{
	check_content_type("Content-Type: \r\n");
}

Test(media_type, missing_content_type)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	const char *body = APPEND_EV(EV_OK);
	char *raw = fd_test_fmt("POST /streams/ct-1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
			"Content-Length: %zu\r\n\r\n%s",
			strlen(body), body);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http_raw(ts.port, raw, strlen(raw), &r), 0);
	fd_test_assert_problem(&r, 415, "unsupported-media-type");
	fd_test_resp_free(&r);
	free(raw);
	finish(&ts, before);
}

/* ---- routing ------------------------------------------------------------------------------------------ */

Test(routing, unknown_paths_404)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	static const char *const paths[] = { "/nope", "/stream", "/streams/x/events/1",
					     "/streams/x/events/", "/streams//events", "//events", "/events/", "/Events",
					     "/streams/a%2Fb/events" };
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		struct fd_test_resp r;
		cr_assert_eq(fd_test_get(ts.port, paths[i], &r), 0);
		cr_assert(r.status == 404 || r.status == 400, "GET %s: %d", paths[i], r.status);
		fd_test_assert_problem(&r, r.status, NULL);
		fd_test_resp_free(&r);
	}
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts.port, "/nope", &r), 0);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_post(ts.port, "/nope", APPEND_EV(EV_OK), &r), 0);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	finish(&ts, before);
}

/* Does the comma-separated Allow value list `method`? */
static int allow_has(const char *allow, const char *method)
{
	size_t n = strlen(method);
	for (const char *p = allow; *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		size_t len = strcspn(p, ", ");
		if (len == n && strncmp(p, method, n) == 0)
			return 1;
		p += len;
	}
	return 0;
}

static void check_405(uint16_t port, const char *method, const char *path, const char *const *allowed, size_t nallowed,
		      const char *body)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(port, method, path, NULL, body, body ? strlen(body) : 0, &r), 0);
	fd_test_assert_problem(&r, 405, "method-not-allowed");
	char allow[128];
	cr_assert(fd_test_header(&r, "Allow", allow, sizeof allow), "405 without Allow: %s", r.head);
	for (size_t i = 0; i < nallowed; i++)
		cr_assert(allow_has(allow, allowed[i]), "%s %s: Allow \"%s\" lacks %s", method, path, allow, allowed[i]);
	cr_assert_not(allow_has(allow, method), "Allow \"%s\" lists the refused %s", allow, method);
	fd_test_resp_free(&r);
}

Test(routing, method_not_allowed)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	static const char *const stream_methods[] = { "GET", "POST", "HEAD" };
	static const char *const get_only[] = { "GET", "HEAD" };
	check_405(ts.port, "DELETE", "/streams/x/events", stream_methods, 3, NULL);
	check_405(ts.port, "PUT", "/streams/seed-1/events", stream_methods, 3, APPEND_EV(EV_OK));
	check_405(ts.port, "PATCH", "/streams/seed-1/events", stream_methods, 3, APPEND_EV(EV_OK));
	check_405(ts.port, "PUT", "/events", get_only, 2, APPEND_EV(EV_OK));
	check_405(ts.port, "POST", "/events", get_only, 2, APPEND_EV(EV_OK));
	check_405(ts.port, "DELETE", "/events", get_only, 2, NULL);
	check_405(ts.port, "POST", "/healthz", get_only, 2, "{}");
	check_405(ts.port, "DELETE", "/readyz", get_only, 2, NULL);
	/* a stream itself is only deleted */
	check_405(ts.port, "GET", "/streams/x", (const char *const[]){ "DELETE" }, 1, NULL);
	/* an encoded NUL would end the decoded path early (/streams/a): it names nothing, whatever the method */
	struct fd_test_resp nul;
	cr_assert_eq(fd_test_http(ts.port, "DELETE", "/streams/seed-1%00b", NULL, NULL, 0, &nul), 0);
	fd_test_assert_problem(&nul, 404, "not-found");
	fd_test_resp_free(&nul);
	finish(&ts, before);
}

/* ---- stream names -------------------------------------------------------------------------------------- */

/* GET and POST to /streams/<encoded>/events: 400 or 404, never a 5xx, nothing written. */
static void check_bad_stream(const char *encoded)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	char *path = fd_test_fmt("/streams/%s/events", encoded);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts.port, "POST", path, NULL, APPEND_EV(EV_OK), strlen(APPEND_EV(EV_OK)), &r), 0);
	cr_assert(r.status == 400 || r.status == 404, "POST %s: %d %s", path, r.status, r.body);
	fd_test_assert_problem(&r, r.status, NULL);
	assert_no_sql(&r);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_get(ts.port, path, &r), 0);
	cr_assert(r.status == 400 || r.status == 404, "GET %s: %d %s", path, r.status, r.body);
	fd_test_assert_problem(&r, r.status, NULL);
	assert_no_sql(&r);
	fd_test_resp_free(&r);
	free(path);
	finish(&ts, before);
}

Test(stream_name, too_long)
{
	char name[202];
	memset(name, 'a', 201);
	name[201] = '\0';
	check_bad_stream(name);
	/* And precisely: the parameter is named. */
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	char *path = fd_test_fmt("/streams/%s/events", name);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts.port, "POST", path, NULL, APPEND_EV(EV_OK), strlen(APPEND_EV(EV_OK)), &r), 0);
	fd_test_assert_problem(&r, 400, "invalid-parameter");
	assert_field(&r, "parameter", "stream");
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_get(ts.port, path, &r), 0);
	fd_test_assert_problem(&r, 400, "invalid-parameter");
	fd_test_resp_free(&r);
	free(path);
	finish(&ts, before);
}

Test(stream_name, space)
{
	check_bad_stream("a%20b");
}

Test(stream_name, sql_injection)
{
	check_bad_stream("a%27b%3BDROP%20TABLE%20events%3B--");
}

Test(stream_name, unicode)
{
	check_bad_stream("caf%C3%A9");
}

Test(stream_name, raw_utf8_bytes)
{
	check_bad_stream("caf\xc3\xa9");
}

Test(stream_name, invalid_utf8_escape)
{
	check_bad_stream("a%FFb");
}

Test(stream_name, percent_encoded_nul)
{
	check_bad_stream("a%00b");
}

Test(stream_name, encoded_slash)
{
	check_bad_stream("a%2Fb");
	/* Precisely: 400 encoded-slash, not the 404 of the decoded path /streams/a/b/events. */
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	static const char *const paths[] = { "/streams/a%2Fb/events", "/streams/seed-1%2f/events",
					     "/streams/%2Fseed-1/events?from_version=1" };
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		struct fd_test_resp r;
		cr_assert_eq(fd_test_http(ts.port, "POST", paths[i], NULL, APPEND_EV(EV_OK), strlen(APPEND_EV(EV_OK)), &r),
			     0);
		fd_test_assert_problem(&r, 400, "encoded-slash");
		fd_test_resp_free(&r);
		cr_assert_eq(fd_test_get(ts.port, paths[i], &r), 0);
		fd_test_assert_problem(&r, 400, "encoded-slash");
		fd_test_resp_free(&r);
	}
	/* In the query string it is only a character of a value. */
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts.port, "/streams/seed-1/events?from_version=%2F", &r), 0);
	fd_test_assert_problem(&r, 400, "invalid-parameter");
	fd_test_resp_free(&r);
	finish(&ts, before);
}

Test(stream_name, quote_and_backslash)
{
	check_bad_stream("a%22b%5Cc");
}

/* ---- query parameters -------------------------------------------------------------------------------------- */

static void expect_bad_param(const struct fd_test_server *ts, const char *path, const char *param)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts->port, path, &r), 0);
	fd_test_assert_problem(&r, 400, "invalid-parameter");
	assert_field(&r, "parameter", param);
	assert_no_sql(&r);
	fd_test_resp_free(&r);
}

Test(query, stream_read_parameters)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	static const char *const limits[] = { "0", "1001", "abc", "-1", "", "1.5", "10abc", "%205", "99999999999999999999",
					      "0x10", "1e2" };
	for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
		char *path = fd_test_fmt("/streams/seed-1/events?limit=%s", limits[i]);
		expect_bad_param(&ts, path, "limit");
		free(path);
	}
	static const char *const froms[] = { "0", "-1", "abc", "", "1.0", "99999999999999999999", "9223372036854775808",
					     "+1" };
	for (size_t i = 0; i < sizeof froms / sizeof froms[0]; i++) {
		char *path = fd_test_fmt("/streams/seed-1/events?from_version=%s", froms[i]);
		expect_bad_param(&ts, path, "from_version");
		free(path);
	}
	/* The same checks apply to a stream that does not exist (no database round trip needed). */
	expect_bad_param(&ts, "/streams/nobody/events?limit=0", "limit");
	/* The largest from_version is fine: an empty page. */
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts.port, "/streams/seed-1/events?from_version=9223372036854775807", &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 0);
	fd_test_resp_free(&r);
	finish(&ts, before);
}

Test(query, feed_parameters)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	static const char *const afters[] = { "garbage", "-1", "1-", "-1-1", "1-2-3", "abc-1", "1-abc", "", "1--1",
					      "18446744073709551616-1", "1-9223372036854775808", "%201-1", "1-1%20",
					      "0x1-1" };
	for (size_t i = 0; i < sizeof afters / sizeof afters[0]; i++) {
		char *path = fd_test_fmt("/events?after=%s", afters[i]);
		expect_bad_param(&ts, path, "after");
		free(path);
	}
	static const char *const limits[] = { "0", "1001", "abc", "-5", "" };
	for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
		char *path = fd_test_fmt("/events?limit=%s", limits[i]);
		expect_bad_param(&ts, path, "limit");
		free(path);
	}
	static const char *const types[] = { "%2C", "%2CA", "A%2C", "A%2C%2CB", "" };
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
		char *path = fd_test_fmt("/events?types=%s", types[i]);
		expect_bad_param(&ts, path, "types");
		free(path);
	}
	/* read-your-writes positions (read replicas): the stream and feed reads and aggregate GETs */
	for (size_t i = 0; i < sizeof afters / sizeof afters[0]; i++) {
		const char *paths[] = { "/events", "/streams/seed-1/events", "/counters/00000000-0000-7000-8000-000000000000",
					"/counters/00000000-0000-7000-8000-000000000000/events" };
		for (size_t k = 0; k < sizeof paths / sizeof paths[0]; k++) {
			char *path = fd_test_fmt("%s?min_position=%s", paths[k], afters[i]);
			expect_bad_param(&ts, path, "min_position");
			free(path);
		}
	}
	static const char *const cats[] = { "order-1", "-", "", "a%20b", "caf%C3%A9",
					    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
					    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
					    "xxxxxxxxxxxxxxxxxxxxxxx" };
	for (size_t i = 0; i < sizeof cats / sizeof cats[0]; i++) {
		char *path = fd_test_fmt("/events?category=%s", cats[i]);
		expect_bad_param(&ts, path, "category");
		free(path);
	}
	finish(&ts, before);
}

Test(query, too_many_types)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	struct fd_buf b = FD_BUF_INIT;
	cr_assert_eq(fd_buf_append(&b, "/events?types=", 14), FD_OK);
	for (int i = 0; i < 65; i++)
		cr_assert_eq(fd_buf_appendf(&b, "%sT%d", i ? "%2C" : "", i), FD_OK);
	expect_bad_param(&ts, b.data, "types");
	fd_buf_release(&b);
	finish(&ts, before);
}

Test(query, types_with_invalid_utf8)
{
	/* Bytes that are not UTF-8 reach PostgreSQL as a type name: a 400 problem, not a 500 or a bare status. */
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	expect_bad_param(&ts, "/events?types=%FF%FE", "types");
	finish(&ts, before);
}

Test(query, missing_stream_404)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts.port, "/streams/missing-1/events", &r), 0);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_get(ts.port, "/streams/missing-1/events?from_version=5&limit=3", &r), 0);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	finish(&ts, before);
}

/* ---- SQL injection in every parameter ------------------------------------------------------------------------ */

static const char *const injections[] = {
	"1'%20OR%20'1'%3D'1",
	"1%3B%20DROP%20TABLE%20events%3B%20--",
	"'%20UNION%20SELECT%20event_id%20FROM%20events--",
	"1))%3B%20SELECT%20pg_sleep(5)%3B%20--",
	"%241",
	"0-0'%20OR%201%3D1--",
	"%5C'%3B--",
	"%22%7D%2C%7B%22",
	"order'--",
	"A'%2C'B",
};

static void check_injection(const struct fd_test_server *ts, const char *path)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts->port, path, &r), 0, "GET %s", path);
	cr_assert(r.status == 200 || r.status == 400 || r.status == 404, "GET %s: %d %s", path, r.status, r.body);
	if (r.status >= 400)
		fd_test_assert_problem(&r, r.status, NULL);
	assert_no_sql(&r);
	fd_test_resp_free(&r);
}

Test(injection, every_query_parameter)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	static const struct {
		const char *before, *after;
	} forms[] = {
		{ "/streams/seed-1/events?from_version=", "" },
		{ "/streams/seed-1/events?limit=", "" },
		{ "/streams/seed-1/events?from_version=1&limit=", "" },
		{ "/events?after=", "" },
		{ "/events?limit=", "" },
		{ "/events?category=", "" },
		{ "/events?types=", "" },
		{ "/events?types=Seeded%2C", "" },
		{ "/events?category=seed&types=", "" },
		{ "/streams/", "/events" },
		{ "/streams/", "/events?from_version=1" },
	};
	for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++)
		for (size_t i = 0; i < sizeof injections / sizeof injections[0]; i++) {
			char *path = fd_test_fmt("%s%s%s", forms[f].before, injections[i], forms[f].after);
			check_injection(&ts, path);
			free(path);
		}
	/* Type names are data, not SQL: the real one still matches, the others match nothing. */
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts.port, "/events?types=Seeded%2C1'%20OR%20'1'%3D'1", &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *ev = json_object_get(r.json, "events");
	cr_assert_leq(json_array_size(ev), 1);
	for (size_t i = 0; i < json_array_size(ev); i++)
		cr_assert_str_eq(json_string_value(json_object_get(json_array_get(ev, i), "type")), "Seeded");
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM pg_tables WHERE tablename IN ('events', 'streams')"), 2);
	finish(&ts, before);
}

Test(injection, in_event_fields_is_stored_as_data)
{
	/* SQL in a type, data or metadata is just text: stored verbatim, nothing else happens. */
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	const char *body = "{\"expected_version\":0,\"events\":[{\"type\":\"x'); DROP TABLE events; --\","
			   "\"data\":{\"q\":\"'; DELETE FROM streams; --\",\"a\":\"\\\"},{\\\"\"},"
			   "\"metadata\":{\"m\":\"$1 $$ \\\\ '\"}}]}";
	struct fd_test_resp r;
	cr_assert_eq(fd_test_post(ts.port, "/streams/inj-1/events", body, &r), 0);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(counts_now(&ts).events, before.events + 1);
	cr_assert_eq(counts_now(&ts).streams, before.streams + 1);
	cr_assert_eq(fd_test_get(ts.port, "/streams/inj-1/events", &r), 0);
	cr_assert_eq(r.status, 200);
	json_t *e = json_array_get(json_object_get(r.json, "events"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(e, "type")), "x'); DROP TABLE events; --");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(e, "data"), "q")), "'; DELETE FROM streams; --");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(e, "data"), "a")), "\"},{\"");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(e, "metadata"), "m")), "$1 $$ \\ '");
	fd_test_resp_free(&r);
	assert_alive(&ts);
	fd_test_server_stop(&ts);
}

/* ---- HTTP-level abuse --------------------------------------------------------------------------------------- */

Test(protocol, garbage_and_aborted_uploads_keep_the_server_up)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	static const char *const raws[] = {
		"GARBAGE\r\n\r\n",
		"GET\r\n\r\n",
		"GET /healthz HTTP/9.9\r\n\r\n",
		"POST /streams/x/events HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: abc\r\n\r\n{}",
		"POST /streams/x/events HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n{}",
		"POST /streams/x/events HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
		"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
		/* Announces 1000 bytes, sends 10, then closes. */
		"POST /streams/x/events HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
		"{\"expected",
		"POST /streams/x/events HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
		"Transfer-Encoding: chunked\r\n\r\n5\r\n{\"exp",
	};
	for (size_t i = 0; i < sizeof raws / sizeof raws[0]; i++) {
		struct fd_test_resp r;
		cr_assert_eq(fd_test_http_raw(ts.port, raws[i], strlen(raws[i]), &r), 0, "raw request %zu", i);
		/* libmicrohttpd answers some of these itself (400, 505 for an unknown HTTP version) or just closes. */
		cr_assert(r.status == 0 || (r.status >= 400 && r.status < 500) || r.status == 505,
			  "raw request %zu: status %d", i, r.status);
		fd_test_resp_free(&r);
		assert_alive(&ts);
	}
	finish(&ts, before);
}

/* "GET /healthz HTTP/1.1" with header lines of filler up to `total` bytes of request line and headers. */
static char *request_of(size_t total, size_t line_max)
{
	static const char head[] = "GET /healthz HTTP/1.1\r\nHost: h\r\n";
	char *raw = malloc(total + 1);
	cr_assert_not_null(raw);
	size_t n = sizeof head - 1, end = total - 2;
	memcpy(raw, head, n);
	for (int i = 0; n < end; i++) {
		size_t len = end - n < line_max ? end - n : line_max; /* the whole line, "X-Fnnnnn: ...\r\n" */
		if (end - n - len < 16 && end - n > len)
			len = (end - n) / 2; /* keep the last line long enough for its name */
		cr_assert_geq(len, 16);
		int k = snprintf(raw + n, 12, "X-F%05d: ", i);
		memset(raw + n + k, 'f', len - (size_t)k - 2);
		memcpy(raw + n + len - 2, "\r\n", 2);
		n += len;
	}
	memcpy(raw + n, "\r\n", 3);
	cr_assert_eq(strlen(raw), total);
	return raw;
}

Test(protocol, request_line_and_headers_over_16_kib_are_431_problems)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	struct fd_test_resp r;
	/* Exactly 16 KiB is served; one byte more is factd's 431, also as many lines or far beyond. */
	char *raw = request_of(16384, 8000);
	cr_assert_eq(fd_test_http_raw(ts.port, raw, strlen(raw), &r), 0);
	cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
	fd_test_resp_free(&r);
	free(raw);
	static const size_t sizes[][2] = { { 16385, 8000 }, { 16385, 100 }, { 24 * 1024, 24 * 1024 }, { 28 * 1024, 4000 } };
	for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
		raw = request_of(sizes[i][0], sizes[i][1]);
		cr_assert_eq(fd_test_http_raw(ts.port, raw, strlen(raw), &r), 0);
		fd_test_assert_problem(&r, 431, "headers-too-large");
		char h[64];
		cr_assert_str_eq(fd_test_header(&r, "Connection", h, sizeof h), "close");
		fd_test_resp_free(&r);
		free(raw);
	}
	/* Past libmicrohttpd's memory for a connection it answers its own 431 (or closes); factd stays up. */
	raw = request_of(100 * 1024, 8000);
	cr_assert_eq(fd_test_http_raw(ts.port, raw, strlen(raw), &r), 0);
	cr_assert(r.status == 431 || r.raw_len == 0, "status %d", r.status);
	fd_test_resp_free(&r);
	free(raw);
	finish(&ts, before);
}

Test(protocol, header_injection_in_request_id_is_not_echoed)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts.port, "GET", "/nope", "X-Request-Id: a\tb<script>\r\n", NULL, 0, &r), 0);
	fd_test_assert_problem(&r, 404, "not-found");
	cr_assert_null(strstr(r.head, "<script>"));
	cr_assert_null(strstr(r.body, "<script>"));
	fd_test_resp_free(&r);
	finish(&ts, before);
}

/* ---- RFC 9112 framing: Host and field names ------------------------------------------------------------------ */

/*
 * Send `raw` on one connection and keep it open (no half-close, so the server
 * decides whether it stays alive); read until the server closes it or 10 s of
 * silence pass.  *closed: the server closed it.  Caller frees the bytes.
 */
static char *raw_on_kept_alive(uint16_t port, const char *raw, bool *closed)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	struct timeval tv = { .tv_sec = 10 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	size_t len = strlen(raw);
	cr_assert_eq(send(fd, raw, len, MSG_NOSIGNAL), (ssize_t)len);
	struct fd_buf got = FD_BUF_INIT;
	char buf[4096];
	*closed = false;
	for (;;) {
		ssize_t r = recv(fd, buf, sizeof buf, 0);
		if (r == 0 || (r < 0 && errno == ECONNRESET)) {
			*closed = true;
			break;
		}
		if (r < 0)
			break; /* silence: the connection stayed open */
		cr_assert_eq(fd_buf_append(&got, buf, (size_t)r), FD_OK);
	}
	close(fd);
	cr_assert_eq(fd_buf_append(&got, "", 1), FD_OK);
	return fd_buf_detach(&got);
}

/* How many responses the bytes hold: status lines ("HTTP/1.1 ddd "), at the start or right after a body. */
static int responses_in(const char *bytes)
{
	int n = 0;
	for (const char *p = bytes; (p = strstr(p, "HTTP/1.1 ")) != NULL; p++)
		if (p[9] >= '1' && p[9] <= '5' && p[10] >= '0' && p[10] <= '9' && p[11] >= '0' && p[11] <= '9' &&
		    p[12] == ' ')
			n++;
	return n;
}

/* `raw` on a kept-alive connection: one 400 malformed-request naming `header`, then the server closes. */
static void expect_malformed(uint16_t port, const char *raw, const char *header)
{
	bool closed;
	char *bytes = raw_on_kept_alive(port, raw, &closed);
	cr_assert(closed, "the connection stayed open after: %s\n-> %s", raw, bytes);
	cr_assert_eq(responses_in(bytes), 1, "more than one answer (a second request was read): %s", bytes);
	struct fd_test_resp r = { 0 };
	char *sep = strstr(bytes, "\r\n\r\n");
	cr_assert_not_null(sep, "no response to: %s", raw);
	r.status = atoi(bytes + 9);
	r.head = strndup(bytes, (size_t)(sep - bytes));
	r.body = strdup(sep + 4);
	r.body_len = strlen(r.body);
	r.json = json_loads(r.body, 0, NULL);
	fd_test_assert_problem(&r, 400, "malformed-request");
	cr_assert(fd_test_resp_complete(&r), "incomplete answer: %s", bytes);
	char h[64];
	cr_assert_str_eq(fd_test_header(&r, "Connection", h, sizeof h), "close");
	if (header)
		assert_field(&r, "header", header);
	fd_test_resp_free(&r);
	free(bytes);
}

Test(framing, http11_without_host_is_400_and_closes)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	expect_malformed(ts.port, "GET /healthz HTTP/1.1\r\n\r\n", "Host");
	expect_malformed(ts.port,
			 "POST /streams/nohost-1/events HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 43\r\n\r\n"
			 "{\"events\":[{\"type\":\"Smuggled\",\"data\":{}}]}",
			 "Host");
	/* HTTP/1.0 has no Host requirement: served. */
	struct fd_test_resp r;
	static const char old[] = "GET /healthz HTTP/1.0\r\n\r\n";
	cr_assert_eq(fd_test_http_raw(ts.port, old, sizeof old - 1, &r), 0);
	cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
	fd_test_resp_free(&r);
	finish(&ts, before);
}

Test(framing, two_host_fields_are_400_and_close)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	expect_malformed(ts.port, "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "Host");
	expect_malformed(ts.port, "GET /healthz HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", "Host");
	finish(&ts, before);
}

Test(framing, whitespace_before_a_colon_is_400_and_closes)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	expect_malformed(ts.port, "GET /healthz HTTP/1.1\r\nHost: h\r\nX-Thing : v\r\n\r\n", "X-Thing");
	expect_malformed(ts.port, "GET /healthz HTTP/1.1\r\nHost: h\r\nX-Thing\t: v\r\n\r\n", "X-Thing");
	expect_malformed(ts.port, "GET /healthz HTTP/1.1\r\nHost : h\r\n\r\n", "Host");
	finish(&ts, before);
}

/*
 * Request smuggling: "Content-Length : N" must not be ignored so that the body
 * becomes the next request on a kept-alive connection.  Here the body is an
 * append; it must neither run nor be answered.
 */
Test(framing, content_length_with_a_space_does_not_smuggle_a_request)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	static const char inner[] = "POST /streams/smuggled-1/events HTTP/1.1\r\nHost: h\r\n"
				    "Content-Type: application/json\r\nContent-Length: 43\r\n\r\n"
				    "{\"events\":[{\"type\":\"Smuggled\",\"data\":{}}]}";
	char raw[1024];
	snprintf(raw, sizeof raw, "GET /healthz HTTP/1.1\r\nHost: h\r\nContent-Length : %zu\r\n\r\n%s", sizeof inner - 1,
		 inner);
	expect_malformed(ts.port, raw, "Content-Length");
	snprintf(raw, sizeof raw,
		 "POST /streams/outer-1/events HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
		 "Content-Length : %zu\r\n\r\n%s",
		 sizeof inner - 1, inner);
	expect_malformed(ts.port, raw, "Content-Length");
	struct fd_test_resp g;
	cr_assert_eq(fd_test_get(ts.port, "/streams/smuggled-1/events", &g), 0);
	cr_assert_eq(g.status, 404, "the smuggled append ran");
	fd_test_resp_free(&g);
	finish(&ts, before);
}

/* The same connection with well-formed pipelined requests stays open and answers each. */
Test(framing, well_formed_pipelined_requests_keep_the_connection)
{
	struct fd_test_server ts;
	struct counts before = start_seeded(&ts, NULL);
	bool closed;
	char *bytes = raw_on_kept_alive(ts.port,
					"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\nGET /healthz HTTP/1.1\r\nHost: h\r\n\r\n",
					&closed);
	cr_assert_eq(responses_in(bytes), 2, "%s", bytes);
	cr_assert(!closed, "a well-formed keep-alive connection was closed");
	cr_assert_null(strstr(bytes, "malformed-request"));
	free(bytes);
	finish(&ts, before);
}
