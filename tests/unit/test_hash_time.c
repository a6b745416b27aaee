/*
 * test_hash_time.c - SHA-256 against the FIPS 180-4 / NIST example vectors,
 * name-based UUIDs, and RFC 3339 parsing and formatting (no database).
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "factd/hash.h"
#include "factd/timeutil.h"
#include "factd/uuid.h"

/* ---- SHA-256 -------------------------------------------------------------- */

static void digest_hex(const unsigned char d[32], char out[65])
{
	static const char hex[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 15];
	}
	out[64] = '\0';
}

static void assert_sha(const char *msg, const char *want)
{
	char got[65];
	fd_sha256_hex(msg, strlen(msg), got);
	cr_assert_str_eq(got, want, "SHA-256 of \"%s\"", msg);
}

Test(sha256, nist_short_vectors)
{
	assert_sha("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	assert_sha("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	/* 448 bits: the padding needs a second block */
	assert_sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		   "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	/* 896 bits */
	assert_sha("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
		   "mnopqrstnopqrstu",
		   "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

Test(sha256, one_million_a_in_odd_chunks)
{
	static const size_t chunks[] = { 1, 3, 7, 13, 63, 64, 65, 127, 1000, 4099 };
	char block[4099];
	memset(block, 'a', sizeof block);
	struct fd_sha256 c;
	fd_sha256_init(&c);
	size_t fed = 0;
	for (size_t i = 0; fed < 1000000; i++) {
		size_t n = chunks[i % (sizeof chunks / sizeof chunks[0])];
		if (n > 1000000 - fed)
			n = 1000000 - fed;
		fd_sha256_update(&c, block, n);
		fed += n;
	}
	unsigned char d[32];
	char hex[65];
	fd_sha256_final(&c, d);
	digest_hex(d, hex);
	cr_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void pattern(unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)((i * 7 + 3) & 255);
}

/* Lengths around the 55/56-byte padding edge and the block edges, checked against an independent implementation. */
Test(sha256, padding_edges)
{
	static const struct {
		size_t len;
		const char *hex;
	} cases[] = {
		{ 55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b" },
		{ 56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27" },
		{ 63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055" },
		{ 64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241" },
		{ 65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e" },
		{ 119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e" },
		{ 120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5" },
		{ 127, "a8d23e75d936f303d248888d9b165ee543f4cbafcad3c9dd2a79bd84faa11d07" },
		{ 128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6" },
	};
	unsigned char msg[128];
	pattern(msg, sizeof msg);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char got[65];
		fd_sha256_hex(msg, cases[i].len, got);
		cr_assert_str_eq(got, cases[i].hex, "length %zu", cases[i].len);
	}
}

Test(sha256, any_split_gives_the_same_digest)
{
	unsigned char msg[300];
	pattern(msg, sizeof msg);
	for (size_t len = 0; len <= sizeof msg; len += 7) {
		char one[65], split[65];
		fd_sha256_hex(msg, len, one);
		for (size_t cut = 0; cut <= len; cut += 5) {
			struct fd_sha256 c;
			unsigned char d[32];
			fd_sha256_init(&c);
			fd_sha256_update(&c, msg, cut);
			fd_sha256_update(&c, NULL, 0);
			fd_sha256_update(&c, msg + cut, len - cut);
			fd_sha256_final(&c, d);
			digest_hex(d, split);
			cr_assert_str_eq(split, one, "length %zu cut at %zu", len, cut);
		}
	}
}

/* ---- name-based UUIDs ------------------------------------------------------ */

Test(uuid_from_name, deterministic_with_version_8_and_variant)
{
	struct fd_uuid a, b;
	fd_uuid_from_name("factd.test", "order-1", 7, &a);
	fd_uuid_from_name("factd.test", "order-1", 7, &b);
	cr_assert_eq(memcmp(&a, &b, sizeof a), 0, "same inputs, same UUID");
	cr_assert_eq(a.b[6] >> 4, 8, "version nibble must be 8");
	cr_assert_eq(a.b[8] & 0xC0, 0x80, "variant bits must be 10");
	char s[FD_UUID_STRLEN + 1];
	fd_uuid_format(&a, s);
	/* first 16 bytes of SHA-256("factd.test" 0x00 "order-1"), bits set */
	cr_assert_str_eq(s, "e88d8a98-11a4-8ef0-93e5-f887d05945ef");
}

Test(uuid_from_name, different_inputs_differ)
{
	static const struct {
		const char *ns, *name;
	} inputs[] = {
		{ "factd.test", "order-1" }, { "factd.test", "order-2" }, { "factd.other", "order-1" },
		{ "ab", "c" },               { "a", "bc" },               { "", "abc" },
		{ "abc", "" },               { "factd.test", "" },
	};
	enum { N = sizeof inputs / sizeof inputs[0] };
	struct fd_uuid u[N];
	for (size_t i = 0; i < N; i++) {
		fd_uuid_from_name(inputs[i].ns, inputs[i].name, strlen(inputs[i].name), &u[i]);
		cr_assert_eq(u[i].b[6] >> 4, 8);
		cr_assert_eq(u[i].b[8] & 0xC0, 0x80);
	}
	for (size_t i = 0; i < N; i++)
		for (size_t j = i + 1; j < N; j++)
			cr_assert_neq(memcmp(&u[i], &u[j], sizeof u[i]), 0, "(%s, %s) vs (%s, %s)", inputs[i].ns,
				      inputs[i].name, inputs[j].ns, inputs[j].name);
	/* Names are bytes: an embedded NUL counts. */
	struct fd_uuid x, y;
	fd_uuid_from_name("ns", "a\0b", 3, &x);
	fd_uuid_from_name("ns", "a", 1, &y);
	cr_assert_neq(memcmp(&x, &y, sizeof x), 0);
}

/* ---- RFC 3339 -------------------------------------------------------------- */

static void assert_time(const char *s, int64_t want)
{
	int64_t got = 42;
	cr_assert(fd_time_parse_rfc3339(s, &got), "\"%s\" should parse", s);
	cr_assert_eq(got, want, "\"%s\": got %lld, want %lld", s, (long long)got, (long long)want);
}

Test(rfc3339, known_epochs)
{
	assert_time("1970-01-01T00:00:00Z", 0);
	assert_time("2000-01-01T00:00:00Z", 946684800000000LL);
	assert_time("1969-12-31T23:59:59.999999Z", -1);
	assert_time("1969-12-31T23:59:59Z", -1000000);
	assert_time("1969-12-31T23:59:59.5Z", -500000);
	assert_time("2026-01-02T03:04:05Z", 1767323045000000LL);
	assert_time("2024-02-29T12:34:56.789012Z", 1709210096789012LL);
	assert_time("1900-03-01T00:00:00Z", -2203891200000000LL);
	assert_time("1600-02-29T00:00:00Z", -11670998400000000LL);
	assert_time("0001-01-01T00:00:00Z", -62135596800000000LL);
	assert_time("9999-12-31T23:59:59.999999Z", 253402300799999999LL);
	assert_time("2000-02-29T00:00:00Z", 951782400000000LL);
}

Test(rfc3339, valid_forms)
{
	const int64_t base = 1767323045000000LL; /* 2026-01-02T03:04:05Z */
	assert_time("2026-01-02t03:04:05z", base);
	assert_time("2026-01-02 03:04:05Z", base);
	assert_time("2026-01-02T03:04:05+00:00", base);
	assert_time("2026-01-02T03:04:05-00:00", base);
	assert_time("2026-01-02T05:04:05+02:00", base);
	assert_time("2026-01-01T22:34:05-04:30", base);
	assert_time("2026-01-02T08:49:05+05:45", base);
	assert_time("2026-01-01T03:05:05-23:59", base);
	assert_time("2026-01-02T03:04:05.1Z", base + 100000);
	assert_time("2026-01-02T03:04:05.12Z", base + 120000);
	assert_time("2026-01-02T03:04:05.123Z", base + 123000);
	assert_time("2026-01-02T03:04:05.1234Z", base + 123400);
	assert_time("2026-01-02T03:04:05.12345Z", base + 123450);
	assert_time("2026-01-02T03:04:05.123456Z", base + 123456);
	assert_time("2026-01-02T03:04:05.1234567Z", base + 123456);
	assert_time("2026-01-02T03:04:05.12345678Z", base + 123456);
	assert_time("2026-01-02T03:04:05.123456789Z", base + 123456);
	assert_time("2026-01-02T03:04:05.000000000Z", base);
	assert_time("2026-01-02T03:04:05.999999999+01:00", base - 3600000000LL + 999999);
	/* leap day and the last day of months */
	assert_time("2024-02-29T00:00:00Z", 1709164800000000LL);
	assert_time("2026-04-30T00:00:00Z", 1777507200000000LL);
	assert_time("2026-12-31T23:59:59Z", 1798761599000000LL);
	/* a leap second is read as :59 */
	assert_time("2016-12-31T23:59:60Z", 1483228799000000LL);
	assert_time("2016-12-31T23:59:60.5Z", 1483228799500000LL);
	/* an offset may carry the moment across the year boundary and before 1970 */
	assert_time("1970-01-01T00:30:00+01:00", -1800000000LL);
	assert_time("1999-12-31T23:00:00-01:00", 946684800000000LL);
}

Test(rfc3339, rejects_malformed_and_out_of_range)
{
	static const char *const bad[] = {
		"",
		"2023-02-29T00:00:00Z",        /* not a leap year */
		"1900-02-29T00:00:00Z",        /* century, not a leap year */
		"2026-13-01T00:00:00Z",
		"2026-00-10T00:00:00Z",
		"2026-01-00T00:00:00Z",
		"2026-01-32T00:00:00Z",
		"2026-04-31T00:00:00Z",
		"2026-01-01T24:00:00Z",
		"2026-01-01T12:60:00Z",
		"2026-01-01T12:00:61Z",
		"2026-01-01T12:00:00",         /* missing zone */
		"2026-01-01T12:00:00+25:00",
		"2026-01-01T12:00:00+24:00",
		"2026-01-01T12:00:00+01:60",
		"2026-01-01T12:00:00+0100",
		"2026-01-01T12:00:00+01",
		"2026-01-01T12:00:00Zjunk",
		"2026-01-01T12:00:00Z ",
		" 2026-01-01T12:00:00Z",
		"2026-01-01T12:00:00.1234567890Z", /* 10 fraction digits */
		"2026-01-01T12:00:00.Z",
		"2026-01-01T12:00:00,5Z",
		"0000-01-01T00:00:00Z",
		"2026-1-01T00:00:00Z",
		"2026-01-1T00:00:00Z",
		"2026-01-01T1:00:00Z",
		"2026-01-01T12:0:00Z",
		"2026-01-01T12:00:0Z",
		"20260-01-01T00:00:00Z",
		"2026-01-01",
		"2026-01-01T",
		"2026-01-01X12:00:00Z",
		"2026-01-01T12:00Z",
		"+2026-01-01T12:00:00Z",
		"2026/01/01T12:00:00Z",
		"2026-01-01T12:00:00UTC",
		"2026-01-01T12:00:00+01:00Z",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int64_t t = 7;
		cr_assert_not(fd_time_parse_rfc3339(bad[i], &t), "\"%s\" must be rejected", bad[i]);
	}
	int64_t t;
	cr_assert_not(fd_time_parse_rfc3339(NULL, &t));
}

static void assert_format(int64_t us, const char *want)
{
	char buf[28];
	fd_time_format_rfc3339(us, buf, sizeof buf);
	cr_assert_str_eq(buf, want, "%lld", (long long)us);
}

Test(rfc3339, format)
{
	assert_format(0, "1970-01-01T00:00:00.000000Z");
	assert_format(-1, "1969-12-31T23:59:59.999999Z");
	assert_format(-1000000, "1969-12-31T23:59:59.000000Z");
	assert_format(946684800000000LL, "2000-01-01T00:00:00.000000Z");
	assert_format(1709210096789012LL, "2024-02-29T12:34:56.789012Z");
	assert_format(-62135596800000000LL, "0001-01-01T00:00:00.000000Z");
	assert_format(253402300799999999LL, "9999-12-31T23:59:59.999999Z");
	char small[11];
	fd_time_format_rfc3339(0, small, sizeof small);
	cr_assert_str_eq(small, "1970-01-01", "a short buffer is truncated, still terminated");
}

Test(rfc3339, format_parse_round_trip)
{
	/* A spread of moments over 0001..9999, including negative ones and odd microseconds. */
	const int64_t lo = -62135596800000000LL, hi = 253402300799999999LL;
	uint64_t x = 88172645463325252ULL;
	for (int i = 0; i < 20000; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		int64_t us = lo + (int64_t)(x % (uint64_t)(hi - lo + 1));
		char buf[28];
		fd_time_format_rfc3339(us, buf, sizeof buf);
		int64_t back = 0;
		cr_assert(fd_time_parse_rfc3339(buf, &back), "%s must parse", buf);
		cr_assert_eq(back, us, "%s: %lld != %lld", buf, (long long)back, (long long)us);
	}
	/* every day of a leap year and the days around 1970 */
	for (int64_t day = -400; day <= 800; day++) {
		int64_t us = day * 86400000000LL + 12345;
		char buf[28];
		fd_time_format_rfc3339(us, buf, sizeof buf);
		int64_t back = 0;
		cr_assert(fd_time_parse_rfc3339(buf, &back), "%s must parse", buf);
		cr_assert_eq(back, us, "%s", buf);
	}
}

/* Processes of different builds must take the same advisory locks. */
Test(lock_key, is_fnv1a_of_namespace_then_name_and_never_negative)
{
	cr_assert_eq(fd_lock_key("factd.projection:", "order_summaries"), 6995880975446998963LL);
	cr_assert_eq(fd_lock_key("factd.projection:", "order_summaries"), fd_lock_key("factd.projection:order_summaries", ""));
	cr_assert_geq(fd_lock_key("factd.saga.intake", ""), 0);
}
