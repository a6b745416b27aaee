/*
 * test_input.c - the pure request-input parsers (src/http/input.c) without a
 * server: query numbers, If-Match, Idempotency-Key, ?types= and the append
 * body.  The fuzz harnesses in fuzz/ check their properties on random input;
 * these pin down the exact answers.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "http/input.h"

Test(input, integers)
{
	long long v = 0;
	cr_assert(fd_input_int("42", 1, 100, &v) && v == 42);
	cr_assert(fd_input_int("-5", -5, 0, &v) && v == -5);
	cr_assert(fd_input_int("9223372036854775807", 1, INT64_MAX, &v) && v == INT64_MAX);
	static const char *const bad[] = { "", "0", "101", "+1", " 1", "1 ", "1.5", "1e3", "0x10",
					   "9223372036854775808", "-", "abc" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_not(fd_input_int(bad[i], 1, 100, &v), "\"%s\" must be rejected", bad[i]);
	cr_assert_not(fd_input_int(NULL, 1, 100, &v));

	unsigned l = 0;
	cr_assert(fd_input_limit("1000", 1000, &l) && l == 1000);
	cr_assert(fd_input_limit("007", 1000, &l) && l == 7);
	for (const char *const *b = (const char *const[]){ "0", "1001", "-1", "", "+1", "1x", "18446744073709551617",
							    NULL }; *b; b++)
		cr_assert_not(fd_input_limit(*b, 1000, &l), "limit \"%s\"", *b);

	int64_t ver = 0;
	cr_assert(fd_input_version("3", &ver) && ver == 3);
	for (const char *const *b = (const char *const[]){ "0", "-1", "", "1.0", "9223372036854775808", NULL }; *b; b++)
		cr_assert_not(fd_input_version(*b, &ver), "version \"%s\"", *b);
}

Test(input, headers)
{
	int64_t v = -1;
	cr_assert(fd_input_if_match("\"3\"", &v) && v == 3);
	cr_assert(fd_input_if_match("W/\"0\"", &v) && v == 0);
	cr_assert(fd_input_if_match("\"9223372036854775807\"", &v) && v == INT64_MAX);
	for (const char *const *b = (const char *const[]){ "3", "\"\"", "\"3", "\"-1\"", "\"9223372036854775808\"",
							    "\"1 OR 1=1\"", "*", NULL }; *b; b++)
		cr_assert_not(fd_input_if_match(*b, &v), "If-Match %s", *b);

	char key[300];
	memset(key, 'k', 255);
	key[255] = '\0';
	cr_assert(fd_input_idempotency_key_valid(key));
	key[255] = 'k';
	key[256] = '\0';
	cr_assert_not(fd_input_idempotency_key_valid(key));
	cr_assert_not(fd_input_idempotency_key_valid(""));
	cr_assert_not(fd_input_idempotency_key_valid("a b"));
	cr_assert_not(fd_input_idempotency_key_valid(NULL));
}

Test(input, types)
{
	char *copy = NULL;
	const char *types[FD_INPUT_MAX_TYPES];
	size_t n = 0;
	cr_assert(fd_input_types("A,B", &copy, types, &n));
	cr_assert_eq(n, 2);
	cr_assert_str_eq(types[0], "A");
	cr_assert_str_eq(types[1], "B");
	free(copy);
	for (const char *const *b = (const char *const[]){ "", ",", "A,", ",A", "A,,B", "\xff", NULL }; *b; b++) {
		cr_assert_not(fd_input_types(*b, &copy, types, &n), "types \"%s\"", *b);
		free(copy);
	}
}

static void refused(const char *body, size_t len, unsigned status, const char *slug, const char *field)
{
	struct fd_append_body b;
	struct fd_input_error e;
	cr_assert_eq(fd_append_parse(body, len, 10, &b, &e), FD_ERR_INVAL, "%s", body);
	cr_assert_eq(e.status, status, "%s: %u %s", body, e.status, e.detail);
	cr_assert_str_eq(e.slug, slug, "%s", body);
	if (field)
		cr_assert(e.has_field && strcmp(e.field, field) == 0, "%s: field %s", body, e.field);
	cr_assert(e.detail[0]);
	fd_append_body_release(&b);
}

Test(input, append_body)
{
	static const char ok[] = "{\"expected_version\": 2, \"events\": [{\"type\": \"A\", \"data\": {\"n\": 0.10},"
				 " \"metadata\": {\"m\": 1}}, {\"event_id\": \"0190F0A4-1B2C-7D3E-8F40-123456789ABC\","
				 " \"type\": \"B\", \"data\": {}}]}";
	struct fd_append_body b;
	struct fd_input_error e;
	cr_assert_eq(fd_append_parse(ok, sizeof ok - 1, 10, &b, &e), FD_OK, "%s", e.detail);
	cr_assert_eq(b.expected.kind, FD_EXPECT_EXACT);
	cr_assert_eq(b.expected.version, 2);
	cr_assert_null(b.expected_name);
	cr_assert_eq(b.n, 2);
	cr_assert_str_eq(b.events[0].type, "A");
	cr_assert_str_eq(b.events[0].data_json, "{\"n\": 0.10}"); /* the client's own bytes */
	cr_assert_not(b.events[0].id_given);
	cr_assert(b.metadata[0] && !b.metadata[1]);
	cr_assert(b.events[1].id_given);
	fd_append_body_release(&b);

	static const char any[] = "{\"events\":[{\"type\":\"A\",\"data\":{}}],\"expected_version\":\"any\"}";
	cr_assert_eq(fd_append_parse(any, sizeof any - 1, 10, &b, &e), FD_OK);
	cr_assert_eq(b.expected.kind, FD_EXPECT_ANY);
	cr_assert_str_eq(b.expected_name, "any");
	fd_append_body_release(&b);

#define REFUSED(lit, status, slug, field) refused(lit, sizeof(lit) - 1, status, slug, field)
	REFUSED("", 400, "invalid-json", NULL);
	REFUSED("{\"expected_version\":0\0,\"events\":[{\"type\":\"A\",\"data\":{}}]}", 400, "invalid-json", NULL);
	REFUSED("[]", 400, "invalid-field", "");
	REFUSED("{\"expected_version\":0,\"events\":[],\"x\":1}", 400, "invalid-field", "/");
	REFUSED("{\"expected_version\":\"5\",\"events\":[{\"type\":\"A\",\"data\":{}}]}", 400, "invalid-field",
		"/expected_version");
	REFUSED("{\"expected_version\":1.0,\"events\":[{\"type\":\"A\",\"data\":{}}]}", 400, "invalid-field",
		"/expected_version");
	REFUSED("{\"expected_version\":0,\"events\":[]}", 400, "invalid-field", "/events");
	REFUSED("{\"expected_version\":0,\"events\":[1,1,1,1,1,1,1,1,1,1,1]}", 413, "too-many-events", "/events");
	REFUSED("{\"expected_version\":0,\"events\":[{\"type\":\"\",\"data\":{}}]}", 400, "invalid-field",
		"/events/0/type");
	REFUSED("{\"expected_version\":0,\"events\":[{\"type\":\"A\",\"data\":[]}]}", 400, "invalid-field",
		"/events/0/data");
	REFUSED("{\"expected_version\":0,\"events\":[{\"type\":\"A\",\"data\":{},\"metadata\":null}]}", 400,
		"invalid-field", "/events/0/metadata");
	REFUSED("{\"expected_version\":0,\"events\":[{\"type\":\"A\",\"data\":{},\"event_id\":\"x\"}]}", 400,
		"invalid-field", "/events/0/event_id");
	REFUSED("{\"expected_version\":0,\"events\":[{\"type\":\"A\",\"data\":{},\"event_id\":\"0190f0a4-1b2c-7d3e-8f40-"
		"123456789abc\"},{\"type\":\"A\",\"data\":{},\"event_id\":\"0190f0a4-1b2c-7d3e-8f40-123456789abc\"}]}",
		400, "invalid-field", "/events/1/event_id");
}

Test(input, truncate_body)
{
	struct fd_input_error e;
	int64_t before = 0;
	cr_assert_eq(fd_truncate_parse("{\"before_version\":12}", 21, &before, &e), FD_OK, "%s", e.detail);
	cr_assert_eq(before, 12);
	static const char *const bad[] = { "", "{}", "[]", "{\"before_version\":0}", "{\"before_version\":-3}",
					   "{\"before_version\":1.5}", "{\"before_version\":\"3\"}",
					   "{\"before_version\":null}", "{\"before_version\":3,\"x\":1}",
					   "{\"before_version\":3,\"before_version\":4}", "{\"before_version\":9223372036854775807}",
					   "{\"before_version\":" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cr_assert_eq(fd_truncate_parse(bad[i], strlen(bad[i]), &before, &e), FD_ERR_INVAL, "%s", bad[i]);
		cr_assert_eq(e.status, 400, "%s", bad[i]);
	}
	cr_assert_eq(fd_truncate_parse("{\"before_version\":1}\0", 21, &before, &e), FD_ERR_INVAL);
	cr_assert_str_eq(e.slug, "invalid-json");
}

Test(input, retention_body)
{
	struct fd_input_error e;
	int age = -1;
	int64_t count = -1;
	cr_assert_eq(fd_retention_parse("{\"max_age_days\":90}", 19, &age, &count, &e), FD_OK, "%s", e.detail);
	cr_assert(age == 90 && count == 0);
	const char *both = "{\"max_age_days\":1,\"max_count_per_stream\":1000}";
	cr_assert_eq(fd_retention_parse(both, strlen(both), &age, &count, &e), FD_OK);
	cr_assert(age == 1 && count == 1000);
	static const char *const bad[] = { "{}", "{\"max_age_days\":0}", "{\"max_age_days\":36501}",
					   "{\"max_count_per_stream\":0}", "{\"max_count_per_stream\":-1}",
					   "{\"max_age_days\":1.5}", "{\"max_age_days\":\"9\"}", "{\"keep\":1}",
					   "{\"max_age_days\":null}", "[1]", "" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		cr_assert_eq(fd_retention_parse(bad[i], strlen(bad[i]), &age, &count, &e), FD_ERR_INVAL, "%s", bad[i]);
		cr_assert_eq(e.status, 400, "%s", bad[i]);
	}
}

Test(input, system_event_types_are_not_appended)
{
	struct fd_append_body b;
	struct fd_input_error e;
	const char *body = "{\"expected_version\":\"any\",\"events\":[{\"type\":\"T\",\"data\":{}},"
			   "{\"type\":\"$StreamDeleted\",\"data\":{}}]}";
	cr_assert_eq(fd_append_parse(body, strlen(body), 10, &b, &e), FD_ERR_INVAL);
	cr_assert_str_eq(e.field, "/events/1/type");
	fd_append_body_release(&b);
	cr_assert(fd_event_type_reserved(FD_EVENT_STREAM_DELETED));
	for (size_t i = 0; i < fd_system_event_types_count; i++)
		cr_assert(fd_event_type_reserved(fd_system_event_types[i]), "%s", fd_system_event_types[i]);
}
