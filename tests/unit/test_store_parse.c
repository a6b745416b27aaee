/*
 * test_store_parse.c - the event store's pure wire-value functions (no
 * database): feed cursors, stream names, categories, expected versions.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "factd/events.h"

static void assert_cursor(const char *s, uint64_t tx, int64_t seq)
{
	struct fd_cursor c = { 99, 99 };
	cr_assert(fd_cursor_parse(s, &c), "\"%s\" should parse", s);
	cr_assert_eq(c.tx, tx, "\"%s\": tx", s);
	cr_assert_eq(c.seq, seq, "\"%s\": seq", s);
}

Test(cursor, parses_valid_forms)
{
	assert_cursor("0", 0, 0);
	assert_cursor("0-0", 0, 0);
	assert_cursor("1-2", 1, 2);
	assert_cursor("731-12", 731, 12);
	assert_cursor("18446744073709551615-9223372036854775807", UINT64_MAX, INT64_MAX);
}

Test(cursor, rejects_malformed)
{
	static const char *const bad[] = {
		"", "-", "1-", "-1", "1-2-3", "18446744073709551616-1", "1-9223372036854775808", " 1-2",
		"1-2 ", "1-2x", "+1-2", "1-+2", "1--2", "1", "00", "0-", "x", "1 -2", "1- 2", "0x1-2",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct fd_cursor c = { 7, 7 };
		cr_assert_not(fd_cursor_parse(bad[i], &c), "\"%s\" must be rejected", bad[i]);
	}
	cr_assert_not(fd_cursor_parse(NULL, &(struct fd_cursor){ 0, 0 }));
}

Test(cursor, format_round_trips)
{
	static const struct fd_cursor cases[] = {
		{ 0, 0 }, { 1, 2 }, { 731, 12 }, { UINT64_MAX, INT64_MAX }, { 4294967296ULL, 1 },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char buf[FD_CURSOR_STRLEN];
		struct fd_cursor back;
		fd_cursor_format(&cases[i], buf, sizeof buf);
		cr_assert(fd_cursor_parse(buf, &back), "formatted \"%s\" must parse", buf);
		cr_assert_eq(fd_cursor_cmp(&cases[i], &back), 0, "round trip of \"%s\"", buf);
	}
	char buf[FD_CURSOR_STRLEN];
	fd_cursor_format(&(struct fd_cursor){ 731, 12 }, buf, sizeof buf);
	cr_assert_str_eq(buf, "731-12");
	fd_cursor_format(&(struct fd_cursor){ UINT64_MAX, INT64_MAX }, buf, sizeof buf);
	cr_assert_str_eq(buf, "18446744073709551615-9223372036854775807");
	cr_assert_lt(strlen(buf), FD_CURSOR_STRLEN);
}

Test(cursor, format_truncates_to_buffer)
{
	char buf[4];
	memset(buf, 'x', sizeof buf);
	fd_cursor_format(&(struct fd_cursor){ 12345, 6 }, buf, sizeof buf);
	cr_assert_str_eq(buf, "123");
}

Test(cursor, orders_by_tx_then_seq)
{
	struct fd_cursor a = { 5, 100 }, b = { 6, 1 }, c = { 6, 2 }, d = { 6, 2 };
	cr_assert_lt(fd_cursor_cmp(&a, &b), 0);
	cr_assert_gt(fd_cursor_cmp(&b, &a), 0);
	cr_assert_lt(fd_cursor_cmp(&b, &c), 0);
	cr_assert_eq(fd_cursor_cmp(&c, &d), 0);
	struct fd_cursor big = { UINT64_MAX, 0 }, small = { 1, INT64_MAX };
	cr_assert_gt(fd_cursor_cmp(&big, &small), 0, "tx compares unsigned");
}

Test(stream_name, accepts_allowed_characters)
{
	cr_assert(fd_stream_name_valid("a"));
	cr_assert(fd_stream_name_valid("order-123"));
	cr_assert(fd_stream_name_valid("Order_1.v2:eu-west-1"));
	cr_assert(fd_stream_name_valid("-"));
	char name[FD_STREAM_MAX + 2];
	memset(name, 'a', FD_STREAM_MAX);
	name[FD_STREAM_MAX] = '\0';
	cr_assert(fd_stream_name_valid(name), "200 characters is the edge");
	name[FD_STREAM_MAX] = 'a';
	name[FD_STREAM_MAX + 1] = '\0';
	cr_assert_not(fd_stream_name_valid(name), "201 characters is too long");
}

Test(stream_name, rejects_everything_else)
{
	static const char *const bad[] = {
		"", "a b", "a/b", "\xc3\xa9", "caf\xc3\xa9", "x'; DROP TABLE events; --", "a\tb", "a\nb",
		"a,b", "a\"b", "a\\b", "{a}", "a%b", "a?b", "a#b",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_not(fd_stream_name_valid(bad[i]), "\"%s\" must be invalid", bad[i]);
	cr_assert_not(fd_stream_name_valid(NULL));
}

Test(stream_category, is_the_part_before_the_first_dash)
{
	char cat[FD_STREAM_MAX + 1];
	fd_stream_category("order-123", cat, sizeof cat);
	cr_assert_str_eq(cat, "order");
	fd_stream_category("order-123-456", cat, sizeof cat);
	cr_assert_str_eq(cat, "order");
	fd_stream_category("account", cat, sizeof cat);
	cr_assert_str_eq(cat, "account");
	fd_stream_category("-x", cat, sizeof cat);
	cr_assert_str_eq(cat, "");
	fd_stream_category("a.b:c-d", cat, sizeof cat);
	cr_assert_str_eq(cat, "a.b:c");
}

Test(stream_category, respects_the_buffer)
{
	char small[4];
	fd_stream_category("customer-1", small, sizeof small);
	cr_assert_str_eq(small, "cus");
	char one[1] = { 'x' };
	fd_stream_category("customer-1", one, sizeof one);
	cr_assert_eq(one[0], '\0');
}

Test(expected, parses_names_and_numbers)
{
	struct fd_expected e;
	cr_assert(fd_expected_parse_str("any", &e));
	cr_assert_eq(e.kind, FD_EXPECT_ANY);
	cr_assert(fd_expected_parse_str("no_stream", &e));
	cr_assert_eq(e.kind, FD_EXPECT_NO_STREAM);
	cr_assert(fd_expected_parse_str("exists", &e));
	cr_assert_eq(e.kind, FD_EXPECT_EXISTS);
	cr_assert(fd_expected_parse_str("0", &e));
	cr_assert_eq(e.kind, FD_EXPECT_EXACT);
	cr_assert_eq(e.version, 0);
	cr_assert(fd_expected_parse_str("42", &e));
	cr_assert_eq(e.kind, FD_EXPECT_EXACT);
	cr_assert_eq(e.version, 42);
	cr_assert(fd_expected_parse_str("9223372036854775807", &e));
	cr_assert_eq(e.version, INT64_MAX);
}

Test(expected, rejects_everything_else)
{
	static const char *const bad[] = {
		"", "-1", "+1", " 1", "1 ", "1x", "ANY", "Any", "none", "no-stream", "9223372036854775808",
		"1.0", "0x10", "anyx",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct fd_expected e = { FD_EXPECT_ANY, 77 };
		cr_assert_not(fd_expected_parse_str(bad[i], &e), "\"%s\" must be rejected", bad[i]);
	}
	cr_assert_not(fd_expected_parse_str(NULL, &(struct fd_expected){ FD_EXPECT_ANY, 0 }));
}
