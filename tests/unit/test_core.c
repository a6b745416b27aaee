/*
 * test_core.c - the core layer without a database: UUIDs, byte buffers,
 * configuration from the environment and argv, URL redaction, error names,
 * JSON spans, log levels and the request-id rule.
 *
 * Criterion runs each test in its own process, so tests that setenv() do not
 * see each other's variables; every config test starts from a clean FACTD_
 * environment anyway (clean_env).
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "factd/buf.h"
#include "factd/config.h"
#include "factd/error.h"
#include "factd/http.h"
#include "factd/jsonspan.h"
#include "factd/log.h"
#include "factd/uuid.h"
#include <jansson.h>

/* ---- uuid ----------------------------------------------------------------- */

static uint64_t uuid_ms(const struct fd_uuid *u)
{
	uint64_t ms = 0;
	for (int i = 0; i < 6; i++)
		ms = ms << 8 | u->b[i];
	return ms;
}

static int uuid_cmp(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct fd_uuid));
}

Test(uuid, v7_version_and_variant_bits)
{
	for (int i = 0; i < 1000; i++) {
		struct fd_uuid u;
		cr_assert_eq(fd_uuid_v7(&u), FD_OK);
		cr_assert_eq(u.b[6] >> 4, 7, "version nibble must be 7");
		cr_assert_eq(u.b[8] & 0xC0, 0x80, "variant bits must be 10");
		char s[FD_UUID_STRLEN + 1];
		fd_uuid_format(&u, s);
		cr_assert_eq(s[14], '7');
		cr_assert(strchr("89ab", s[19]), "variant digit %c", s[19]);
	}
}

Test(uuid, v7_timestamp_is_now)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t before = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	struct fd_uuid u;
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t after = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	cr_assert_geq(uuid_ms(&u), before);
	cr_assert_leq(uuid_ms(&u), after);
}

Test(uuid, v7_unique_over_10000)
{
	enum { N = 10000 };
	struct fd_uuid *all = malloc(N * sizeof *all);
	cr_assert_not_null(all);
	for (int i = 0; i < N; i++)
		cr_assert_eq(fd_uuid_v7(&all[i]), FD_OK);
	qsort(all, N, sizeof *all, uuid_cmp);
	for (int i = 1; i < N; i++)
		cr_assert_neq(memcmp(&all[i - 1], &all[i], sizeof *all), 0, "duplicate UUID at %d", i);
	free(all);
}

Test(uuid, v7_time_ordered)
{
	/* The 48-bit millisecond prefix never goes backwards, and it advances across a sleep. */
	struct fd_uuid prev, cur;
	cr_assert_eq(fd_uuid_v7(&prev), FD_OK);
	uint64_t first = uuid_ms(&prev);
	for (int i = 0; i < 5000; i++) {
		cr_assert_eq(fd_uuid_v7(&cur), FD_OK);
		cr_assert_geq(uuid_ms(&cur), uuid_ms(&prev), "timestamp went backwards at %d", i);
		prev = cur;
	}
	struct timespec pause = { 0, 5 * 1000000L };
	nanosleep(&pause, NULL);
	cr_assert_eq(fd_uuid_v7(&cur), FD_OK);
	cr_assert_gt(uuid_ms(&cur), first);
	/* Across different milliseconds, byte order is time order. */
	cr_assert_lt(uuid_ms(&prev), uuid_ms(&cur));
	cr_assert_lt(memcmp(&prev, &cur, sizeof cur), 0);
}

Test(uuid, format_parse_round_trip)
{
	for (int i = 0; i < 100; i++) {
		struct fd_uuid u, back;
		char s[FD_UUID_STRLEN + 1];
		cr_assert_eq(fd_uuid_v7(&u), FD_OK);
		memset(s, 'Z', sizeof s);
		fd_uuid_format(&u, s);
		cr_assert_eq(strlen(s), FD_UUID_STRLEN);
		cr_assert(fd_uuid_parse(s, &back));
		cr_assert_eq(memcmp(&u, &back, sizeof u), 0);
	}
}

Test(uuid, parse_known_value_and_upper_case)
{
	struct fd_uuid u;
	cr_assert(fd_uuid_parse("0193F1A2-4B10-7C3E-9A41-6D2F0E8B7C11", &u));
	static const unsigned char want[16] = { 0x01, 0x93, 0xf1, 0xa2, 0x4b, 0x10, 0x7c, 0x3e,
						0x9a, 0x41, 0x6d, 0x2f, 0x0e, 0x8b, 0x7c, 0x11 };
	cr_assert_eq(memcmp(u.b, want, 16), 0);
	char s[FD_UUID_STRLEN + 1];
	fd_uuid_format(&u, s);
	cr_assert_str_eq(s, "0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c11", "formatting is lower case");

	cr_assert(fd_uuid_parse("00000000-0000-0000-0000-000000000000", &u));
	fd_uuid_format(&u, s);
	cr_assert_str_eq(s, "00000000-0000-0000-0000-000000000000");
	cr_assert(fd_uuid_parse("ffffffff-ffff-ffff-ffff-ffffffffffff", &u));
	for (int i = 0; i < 16; i++)
		cr_assert_eq(u.b[i], 0xff);
}

Test(uuid, parse_rejections)
{
	static const char *const bad[] = {
		"",
		"0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c1",    /* 35 chars */
		"0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c111",  /* 37 chars */
		"0193f1a24b107c3e9a416d2f0e8b7c11",       /* no hyphens */
		"0193f1a2-4b10-7c3e-9a416-d2f0e8b7c11",   /* hyphen moved */
		"0193f1a2_4b10_7c3e_9a41_6d2f0e8b7c11",   /* wrong separator */
		"0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c1g",   /* non-hex */
		"{193f1a2-4b10-7c3e-9a41-6d2f0e8b7c1}",
		" 193f1a2-4b10-7c3e-9a41-6d2f0e8b7c11",
		"0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c1 ",
		"0193f1a2-4b10-7c3e-9a41--d2f0e8b7c11",
		"-0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c1",
		"0x93f1a2-4b10-7c3e-9a41-6d2f0e8b7c11",
		"not-a-uuid",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct fd_uuid u;
		cr_assert_not(fd_uuid_parse(bad[i], &u), "accepted \"%s\"", bad[i]);
	}
	struct fd_uuid u;
	cr_assert_not(fd_uuid_parse(NULL, &u));
	/* An embedded NUL makes the string short. */
	char nul[] = "0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c11";
	nul[20] = '\0';
	cr_assert_not(fd_uuid_parse(nul, &u));
}

/* ---- buf -------------------------------------------------------------------- */

Test(buf, append_and_appendf_grow)
{
	struct fd_buf b = FD_BUF_INIT;
	cr_assert_null(b.data);
	cr_assert_eq(fd_buf_append(&b, "abc", 3), FD_OK);
	cr_assert_eq(b.len, 3);
	cr_assert_str_eq(b.data, "abc");
	cr_assert_eq(fd_buf_append(&b, "", 0), FD_OK);
	cr_assert_eq(b.len, 3);
	cr_assert_eq(fd_buf_appendf(&b, "-%d-%s-", 42, "x"), FD_OK);
	cr_assert_str_eq(b.data, "abc-42-x-");
	cr_assert_eq(b.len, strlen("abc-42-x-"));
	/* Force several reallocations and check every byte survived. */
	for (int i = 0; i < 1000; i++)
		cr_assert_eq(fd_buf_appendf(&b, "%04d", i), FD_OK);
	cr_assert_eq(b.len, 9 + 4000);
	cr_assert_eq(b.data[b.len], '\0');
	cr_assert_geq(b.cap, b.len + 1);
	cr_assert_eq(strncmp(b.data + 9, "000000010002", 12), 0);
	cr_assert_str_eq(b.data + b.len - 4, "0999");
	/* A single appendf far larger than the initial capacity. */
	char big[3000];
	memset(big, 'q', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	size_t before = b.len;
	cr_assert_eq(fd_buf_appendf(&b, "[%s]", big), FD_OK);
	cr_assert_eq(b.len, before + 3001);
	cr_assert_eq(b.data[before], '[');
	cr_assert_eq(b.data[b.len - 1], ']');
	fd_buf_release(&b);
	cr_assert_null(b.data);
	cr_assert_eq(b.len, 0);
}

Test(buf, binary_bytes_kept)
{
	struct fd_buf b = FD_BUF_INIT;
	const char bytes[] = { 'a', '\0', 'b', '\xff' };
	cr_assert_eq(fd_buf_append(&b, bytes, sizeof bytes), FD_OK);
	cr_assert_eq(b.len, 4);
	cr_assert_eq(memcmp(b.data, bytes, 4), 0);
	cr_assert_eq(b.data[4], '\0');
	fd_buf_release(&b);
}

static char *json_str(const char *s)
{
	struct fd_buf b = FD_BUF_INIT;
	cr_assert_eq(fd_buf_append_json_str(&b, s), FD_OK);
	return fd_buf_detach(&b);
}

Test(buf, json_str_escaping)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
		{ "", "\"\"" },
		{ "plain", "\"plain\"" },
		{ "say \"hi\"", "\"say \\\"hi\\\"\"" },
		{ "back\\slash", "\"back\\\\slash\"" },
		{ "a\nb\rc\td", "\"a\\nb\\rc\\td\"" },
		{ "\x01\x02\x1f", "\"\\u0001\\u0002\\u001f\"" },
		{ "\b\f", "\"\\u0008\\u000c\"" },
		{ "/ and \x7f stay", "\"/ and \x7f stay\"" },
		{ "caf\xc3\xa9 \xe2\x82\xac", "\"caf\xc3\xa9 \xe2\x82\xac\"" },
		{ "\"\\\"", "\"\\\"\\\\\\\"\"" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char *got = json_str(cases[i].in);
		cr_assert_str_eq(got, cases[i].out, "case %zu", i);
		/* Whatever comes out is one valid JSON string that decodes to the input. */
		json_t *j = json_loads(got, JSON_DECODE_ANY, NULL);
		cr_assert(json_is_string(j), "case %zu not valid JSON: %s", i, got);
		cr_assert_str_eq(json_string_value(j), cases[i].in, "case %zu does not round-trip", i);
		json_decref(j);
		free(got);
	}
}

Test(buf, json_str_all_control_chars_round_trip)
{
	char in[32];
	for (int c = 1; c < 32; c++)
		in[c - 1] = (char)c;
	in[31] = '\0';
	char *got = json_str(in);
	for (const char *p = got; *p; p++)
		cr_assert_geq((unsigned char)*p, 0x20, "raw control byte in output");
	json_t *j = json_loads(got, JSON_DECODE_ANY, NULL);
	cr_assert(json_is_string(j));
	cr_assert_str_eq(json_string_value(j), in);
	json_decref(j);
	free(got);
}

Test(buf, json_str_appends_after_existing)
{
	struct fd_buf b = FD_BUF_INIT;
	cr_assert_eq(fd_buf_append(&b, "{\"k\":", 5), FD_OK);
	cr_assert_eq(fd_buf_append_json_str(&b, "v\""), FD_OK);
	cr_assert_eq(fd_buf_append(&b, "}", 1), FD_OK);
	cr_assert_str_eq(b.data, "{\"k\":\"v\\\"\"}");
	fd_buf_release(&b);
}

Test(buf, detach_and_reset)
{
	struct fd_buf b = FD_BUF_INIT;
	char *empty = fd_buf_detach(&b);
	cr_assert_not_null(empty, "detach of an empty buffer gives \"\", not NULL");
	cr_assert_str_eq(empty, "");
	free(empty);

	cr_assert_eq(fd_buf_append(&b, "hello", 5), FD_OK);
	char *p = fd_buf_detach(&b);
	cr_assert_str_eq(p, "hello");
	cr_assert_null(b.data, "detach empties the buffer");
	cr_assert_eq(b.len, 0);
	cr_assert_eq(b.cap, 0);
	/* The buffer is reusable and independent of the detached bytes. */
	cr_assert_eq(fd_buf_append(&b, "x", 1), FD_OK);
	cr_assert_str_eq(b.data, "x");
	cr_assert_str_eq(p, "hello");
	free(p);

	size_t cap = b.cap;
	fd_buf_reset(&b);
	cr_assert_eq(b.len, 0);
	cr_assert_str_eq(b.data, "");
	cr_assert_eq(b.cap, cap, "reset keeps the allocation");
	cr_assert_eq(fd_buf_append(&b, "yz", 2), FD_OK);
	cr_assert_str_eq(b.data, "yz");
	fd_buf_release(&b);
	fd_buf_reset(&b); /* reset of a released buffer is harmless */
	cr_assert_null(b.data);
}

/* ---- config ----------------------------------------------------------------- */

static const char *const env_names[] = {
	"FACTD_LISTEN", "FACTD_DATABASE_URL", "FACTD_WORKERS", "FACTD_POOL_SIZE", "FACTD_POOL_TIMEOUT_MS",
	"FACTD_MAX_BODY", "FACTD_MAX_APPEND_EVENTS", "FACTD_MAX_READ_LIMIT", "FACTD_MAX_CONNECTIONS",
	"FACTD_REQUEST_TIMEOUT", "FACTD_LOG_LEVEL", "FACTD_MIGRATE", "FACTD_API_KEYS", "FACTD_API_KEYS_FILE",
	"FACTD_ALLOW_INSECURE", "FACTD_TLS_CERT", "FACTD_TLS_KEY", "FACTD_CORS_ORIGINS", "FACTD_MAX_JSON_DEPTH",
};

static void clean_env(void)
{
	for (size_t i = 0; i < sizeof env_names / sizeof env_names[0]; i++)
		unsetenv(env_names[i]);
	setenv("FACTD_DATABASE_URL", "postgresql://u@h/db", 1);
}

/* Load with argv = {"factd", args..., NULL}; returns the error, errbuf filled. */
static enum fd_err load(struct fd_config *cfg, char *errbuf, size_t errlen, const char *a1, const char *a2)
{
	char *argv[4] = { (char *)"factd", (char *)a1, (char *)a2, NULL };
	int argc = 1 + (a1 != NULL) + (a1 && a2);
	errbuf[0] = '\0';
	return fd_config_load(cfg, argc, argv, errbuf, errlen);
}

/* Expect FD_ERR_INVAL with a message containing `needle`. */
static void expect_inval(const char *needle, const char *a1, const char *a2)
{
	struct fd_config cfg;
	char err[256];
	enum fd_err e = load(&cfg, err, sizeof err, a1, a2);
	cr_assert_eq(e, FD_ERR_INVAL, "expected FD_ERR_INVAL, got %s", fd_err_name(e));
	cr_assert(strstr(err, needle), "message \"%s\" does not name \"%s\"", err, needle);
	fd_config_release(&cfg);
}

Test(config, defaults, .init = clean_env)
{
	struct fd_config cfg;
	char err[256];
	cr_assert_eq(load(&cfg, err, sizeof err, NULL, NULL), FD_OK, "%s", err);
	cr_assert_eq(cfg.command, FD_CMD_SERVE);
	cr_assert_str_eq(cfg.listen_host, "127.0.0.1");
	cr_assert_eq(cfg.port, 8080);
	cr_assert_str_eq(cfg.database_url, "postgresql://u@h/db");
	cr_assert_eq(cfg.workers, 16);
	cr_assert_eq(cfg.pool_size, 16, "pool size defaults to the worker count");
	cr_assert_eq(cfg.pool_timeout_ms, 5000);
	cr_assert_eq(cfg.max_body, 1048576);
	cr_assert_eq(cfg.max_append_events, 1000);
	cr_assert_eq(cfg.max_read_limit, 1000);
	cr_assert_eq(cfg.max_connections, 1024);
	cr_assert_eq(cfg.request_timeout_s, 30);
	cr_assert_eq(cfg.log_level, FD_LOG_INFO);
	cr_assert(cfg.migrate_on_start);
	fd_config_release(&cfg);
	cr_assert_null(cfg.listen_host);
	cr_assert_null(cfg.database_url);
}

Test(config, defaults_without_environment)
{
	struct fd_config cfg;
	setenv("FACTD_WORKERS", "3", 1);
	cr_assert_eq(fd_config_defaults(&cfg), FD_OK);
	cr_assert_eq(cfg.workers, 16, "fd_config_defaults must not read the environment");
	cr_assert_null(cfg.database_url);
	cr_assert_str_eq(cfg.listen_host, "127.0.0.1");
	cr_assert_eq(cfg.max_body, 1048576);
	fd_config_release(&cfg);
}

Test(config, every_setting_from_env, .init = clean_env)
{
	setenv("FACTD_LISTEN", "0.0.0.0:9001", 1);
	setenv("FACTD_API_KEYS", "read:a-read-key-of-16+chars", 1);
	setenv("FACTD_DATABASE_URL", "host=db dbname=facts", 1);
	setenv("FACTD_WORKERS", "7", 1);
	setenv("FACTD_POOL_SIZE", "3", 1);
	setenv("FACTD_POOL_TIMEOUT_MS", "250", 1);
	setenv("FACTD_MAX_BODY", "4096", 1);
	setenv("FACTD_MAX_APPEND_EVENTS", "5", 1);
	setenv("FACTD_MAX_READ_LIMIT", "50", 1);
	setenv("FACTD_MAX_CONNECTIONS", "64", 1);
	setenv("FACTD_REQUEST_TIMEOUT", "9", 1);
	setenv("FACTD_LOG_LEVEL", "debug", 1);
	setenv("FACTD_MIGRATE", "0", 1);
	struct fd_config cfg;
	char err[256];
	cr_assert_eq(load(&cfg, err, sizeof err, NULL, NULL), FD_OK, "%s", err);
	cr_assert_str_eq(cfg.listen_host, "0.0.0.0");
	cr_assert_eq(cfg.port, 9001);
	cr_assert_str_eq(cfg.database_url, "host=db dbname=facts");
	cr_assert_eq(cfg.workers, 7);
	cr_assert_eq(cfg.pool_size, 3);
	cr_assert_eq(cfg.pool_timeout_ms, 250);
	cr_assert_eq(cfg.max_body, 4096);
	cr_assert_eq(cfg.max_append_events, 5);
	cr_assert_eq(cfg.max_read_limit, 50);
	cr_assert_eq(cfg.max_connections, 64);
	cr_assert_eq(cfg.request_timeout_s, 9);
	cr_assert_eq(cfg.log_level, FD_LOG_DEBUG);
	cr_assert_not(cfg.migrate_on_start);
	fd_config_release(&cfg);
}

Test(config, pool_size_follows_workers, .init = clean_env)
{
	setenv("FACTD_WORKERS", "5", 1);
	struct fd_config cfg;
	char err[256];
	cr_assert_eq(load(&cfg, err, sizeof err, NULL, NULL), FD_OK, "%s", err);
	cr_assert_eq(cfg.workers, 5);
	cr_assert_eq(cfg.pool_size, 5);
	fd_config_release(&cfg);
}

Test(config, empty_variables_mean_default, .init = clean_env)
{
	setenv("FACTD_LISTEN", "", 1);
	setenv("FACTD_WORKERS", "", 1);
	setenv("FACTD_LOG_LEVEL", "", 1);
	struct fd_config cfg;
	char err[256];
	cr_assert_eq(load(&cfg, err, sizeof err, NULL, NULL), FD_OK, "%s", err);
	cr_assert_str_eq(cfg.listen_host, "127.0.0.1");
	cr_assert_eq(cfg.port, 8080);
	cr_assert_eq(cfg.workers, 16);
	cr_assert_eq(cfg.log_level, FD_LOG_INFO);
	fd_config_release(&cfg);
}

static void expect_listen(const char *value, const char *host, unsigned port)
{
	setenv("FACTD_LISTEN", value, 1);
	struct fd_config cfg;
	char err[256];
	cr_assert_eq(load(&cfg, err, sizeof err, NULL, NULL), FD_OK, "FACTD_LISTEN=%s: %s", value, err);
	cr_assert_str_eq(cfg.listen_host, host, "FACTD_LISTEN=%s", value);
	cr_assert_eq(cfg.port, port, "FACTD_LISTEN=%s", value);
	fd_config_release(&cfg);
}

Test(config, listen_forms, .init = clean_env)
{
	setenv("FACTD_ALLOW_INSECURE", "1", 1); /* beyond loopback without keys; see test_auth.c */
	expect_listen("127.0.0.1:8081", "127.0.0.1", 8081);
	expect_listen("localhost:80", "localhost", 80);
	expect_listen("[::1]:9000", "::1", 9000);
	expect_listen("[::]:1", "::", 1);
	expect_listen(":8082", "0.0.0.0", 8082);
	expect_listen("0.0.0.0:0", "0.0.0.0", 0);
	expect_listen("host:65535", "host", 65535);
}

Test(config, listen_bad_values, .init = clean_env)
{
	static const char *const bad[] = {
		"localhost", "host:", "host:abc", "host:65536", "host:-1", "host:+80", "host:80x", "[::1]", "[::1]:",
		"host:99999999999999999999",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		setenv("FACTD_LISTEN", bad[i], 1);
		expect_inval("FACTD_LISTEN", NULL, NULL);
	}
}

Test(config, numeric_bounds, .init = clean_env)
{
	static const struct {
		const char *env;
		const char *ok_lo, *ok_hi, *bad_lo, *bad_hi;
	} rows[] = {
		{ "FACTD_WORKERS", "1", "1024", "0", "1025" },
		{ "FACTD_POOL_SIZE", "1", "1024", "0", "1025" },
		{ "FACTD_POOL_TIMEOUT_MS", "1", "600000", "0", "600001" },
		{ "FACTD_MAX_BODY", "1024", "1073741824", "1023", "1073741825" },
		{ "FACTD_MAX_APPEND_EVENTS", "1", "100000", "0", "100001" },
		{ "FACTD_MAX_READ_LIMIT", "1", "100000", "0", "100001" },
		{ "FACTD_MAX_CONNECTIONS", "1", "65536", "0", "65537" },
		{ "FACTD_REQUEST_TIMEOUT", "1", "3600", "0", "3601" },
	};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		struct fd_config cfg;
		char err[256];
		const char *okv[2] = { rows[i].ok_lo, rows[i].ok_hi };
		for (int k = 0; k < 2; k++) {
			setenv(rows[i].env, okv[k], 1);
			cr_assert_eq(load(&cfg, err, sizeof err, NULL, NULL), FD_OK, "%s=%s: %s", rows[i].env, okv[k], err);
			fd_config_release(&cfg);
		}
		const char *badv[] = { rows[i].bad_lo, rows[i].bad_hi, "abc", "-1", "+5", "12x", "1.5",
				       "18446744073709551616" };
		for (size_t k = 0; k < sizeof badv / sizeof badv[0]; k++) {
			setenv(rows[i].env, badv[k], 1);
			expect_inval(rows[i].env, NULL, NULL);
		}
		unsetenv(rows[i].env);
	}
}

Test(config, numeric_value_lands_in_its_field, .init = clean_env)
{
	setenv("FACTD_MAX_BODY", "1073741824", 1);
	setenv("FACTD_MAX_CONNECTIONS", "65536", 1);
	struct fd_config cfg;
	char err[256];
	cr_assert_eq(load(&cfg, err, sizeof err, NULL, NULL), FD_OK, "%s", err);
	cr_assert_eq(cfg.max_body, (size_t)1 << 30);
	cr_assert_eq(cfg.max_connections, 65536);
	cr_assert_eq(cfg.max_append_events, 1000, "neighbouring fields untouched");
	cr_assert_eq(cfg.max_read_limit, 1000);
	fd_config_release(&cfg);
}

Test(config, log_level, .init = clean_env)
{
	static const struct {
		const char *v;
		int level;
	} ok[] = { { "debug", FD_LOG_DEBUG }, { "info", FD_LOG_INFO }, { "warn", FD_LOG_WARN },
		   { "error", FD_LOG_ERROR }, { "WARNING", FD_LOG_WARN } };
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		setenv("FACTD_LOG_LEVEL", ok[i].v, 1);
		struct fd_config cfg;
		char err[256];
		cr_assert_eq(load(&cfg, err, sizeof err, NULL, NULL), FD_OK, "%s", err);
		cr_assert_eq(cfg.log_level, ok[i].level, "FACTD_LOG_LEVEL=%s", ok[i].v);
		fd_config_release(&cfg);
	}
	setenv("FACTD_LOG_LEVEL", "verbose", 1);
	expect_inval("FACTD_LOG_LEVEL", NULL, NULL);
	expect_inval("verbose", NULL, NULL);
}

Test(config, migrate_variable, .init = clean_env)
{
	static const struct {
		const char *v;
		bool on;
	} ok[] = { { "0", false }, { "false", false }, { "1", true }, { "true", true } };
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		setenv("FACTD_MIGRATE", ok[i].v, 1);
		struct fd_config cfg;
		char err[256];
		cr_assert_eq(load(&cfg, err, sizeof err, NULL, NULL), FD_OK, "%s", err);
		cr_assert_eq(cfg.migrate_on_start, ok[i].on, "FACTD_MIGRATE=%s", ok[i].v);
		fd_config_release(&cfg);
	}
	setenv("FACTD_MIGRATE", "yes", 1);
	expect_inval("FACTD_MIGRATE", NULL, NULL);
}

Test(config, arguments, .init = clean_env)
{
	struct fd_config cfg;
	char err[256];
	cr_assert_eq(load(&cfg, err, sizeof err, "migrate", NULL), FD_OK, "%s", err);
	cr_assert_eq(cfg.command, FD_CMD_MIGRATE);
	cr_assert(cfg.migrate_on_start);
	fd_config_release(&cfg);

	cr_assert_eq(load(&cfg, err, sizeof err, "serve", NULL), FD_OK, "%s", err);
	cr_assert_eq(cfg.command, FD_CMD_SERVE);
	fd_config_release(&cfg);

	cr_assert_eq(load(&cfg, err, sizeof err, "--no-migrate", NULL), FD_OK, "%s", err);
	cr_assert_eq(cfg.command, FD_CMD_SERVE);
	cr_assert_not(cfg.migrate_on_start);
	fd_config_release(&cfg);

	cr_assert_eq(load(&cfg, err, sizeof err, "serve", "--no-migrate"), FD_OK, "%s", err);
	cr_assert_eq(cfg.command, FD_CMD_SERVE);
	cr_assert_not(cfg.migrate_on_start);
	fd_config_release(&cfg);

	cr_assert_eq(load(&cfg, err, sizeof err, "--help", NULL), FD_OK, "%s", err);
	cr_assert_eq(cfg.command, FD_CMD_HELP);
	fd_config_release(&cfg);

	cr_assert_eq(load(&cfg, err, sizeof err, "--version", NULL), FD_OK, "%s", err);
	cr_assert_eq(cfg.command, FD_CMD_VERSION);
	fd_config_release(&cfg);

	expect_inval("--bogus", "--bogus", NULL);
	expect_inval("frobnicate", "serve", "frobnicate");
}

Test(config, help_and_version_need_no_database, .init = clean_env)
{
	unsetenv("FACTD_DATABASE_URL");
	struct fd_config cfg;
	char err[256];
	cr_assert_eq(load(&cfg, err, sizeof err, "--help", NULL), FD_OK, "%s", err);
	cr_assert_eq(cfg.command, FD_CMD_HELP);
	fd_config_release(&cfg);
	cr_assert_eq(load(&cfg, err, sizeof err, "--version", NULL), FD_OK, "%s", err);
	fd_config_release(&cfg);
	cr_assert(strstr(fd_config_usage(), "FACTD_DATABASE_URL"));
	cr_assert(strstr(fd_config_usage(), "FACTD_MAX_APPEND_EVENTS"));
}

Test(config, missing_database_url, .init = clean_env)
{
	unsetenv("FACTD_DATABASE_URL");
	expect_inval("FACTD_DATABASE_URL", NULL, NULL);
	expect_inval("FACTD_DATABASE_URL", "migrate", NULL);
	setenv("FACTD_DATABASE_URL", "", 1);
	expect_inval("FACTD_DATABASE_URL", "serve", NULL);
}

/* ---- URL redaction ------------------------------------------------------------ */

static void expect_redacted(const char *url, const char *want)
{
	char *got = fd_config_redact_url(url);
	cr_assert_not_null(got);
	cr_assert_str_eq(got, want, "redacting %s", url);
	free(got);
}

Test(redact, uri_form)
{
	expect_redacted("postgresql://alice:s3cret@db.example:5432/facts", "postgresql://alice:***@db.example:5432/facts");
	expect_redacted("postgres://u:p@h/d?sslmode=require", "postgres://u:***@h/d?sslmode=require");
	expect_redacted("postgresql://u:@h/d", "postgresql://u:***@h/d");
	/* Nothing to hide: unchanged. */
	expect_redacted("postgresql://postgres@127.0.0.1:5434/postgres", "postgresql://postgres@127.0.0.1:5434/postgres");
	expect_redacted("postgresql://h:5432/d", "postgresql://h:5432/d");
	expect_redacted("postgresql:///d", "postgresql:///d");
	/* An unencoded '@' in the password: everything up to the last '@' of the authority is secret. */
	expect_redacted("postgresql://u:p@ss@h/d", "postgresql://u:***@h/d");
	expect_redacted("postgresql://u:pw@h/d?x=a@b", "postgresql://u:***@h/d?x=a@b");
}

Test(redact, uri_password_in_query)
{
	char *got = fd_config_redact_url("postgresql://u@h/d?password=s3cret&application_name=x");
	cr_assert_not_null(got);
	cr_assert_null(strstr(got, "s3cret"), "password leaked: %s", got);
	cr_assert(strstr(got, "postgresql://u@h/d?"), "%s", got);
	free(got);
}

Test(redact, keyword_form)
{
	expect_redacted("host=db password=s3cret dbname=facts", "host=db password=*** dbname=facts");
	expect_redacted("password=s3cret", "password=***");
	expect_redacted("host=db user=u password='a \\' secret' dbname=facts", "host=db user=u password=*** dbname=facts");
	expect_redacted("host=db dbname=facts", "host=db dbname=facts");
}

Test(redact, keyword_form_spaces_around_equals)
{
	/* libpq allows "keyword = value"; the password must not leak either way. */
	static const char *const urls[] = {
		"host=db password = s3cret dbname=facts",
		"host=db password= s3cret dbname=facts",
		"host=db password =s3cret dbname=facts",
	};
	for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
		char *got = fd_config_redact_url(urls[i]);
		cr_assert_not_null(got);
		char copy[128];
		snprintf(copy, sizeof copy, "%s", got);
		free(got);
		cr_assert_null(strstr(copy, "s3cret"), "password leaked: %s -> %s", urls[i], copy);
	}
}

Test(redact, null_and_empty)
{
	expect_redacted(NULL, "");
	expect_redacted("", "");
}

/* ---- error names ---------------------------------------------------------------- */

Test(error, every_name)
{
	static const struct {
		enum fd_err e;
		const char *name;
	} rows[] = {
		{ FD_OK, "ok" },
		{ FD_ERR_NOMEM, "nomem" },
		{ FD_ERR_INVAL, "invalid" },
		{ FD_ERR_NOTFOUND, "not_found" },
		{ FD_ERR_CONFLICT, "conflict" },
		{ FD_ERR_DUPLICATE, "duplicate" },
		{ FD_ERR_RETRY, "retry" },
		{ FD_ERR_DB, "db" },
		{ FD_ERR_UNAVAILABLE, "unavailable" },
		{ FD_ERR_TOOLARGE, "too_large" },
		{ FD_ERR_IO, "io" },
		{ FD_ERR_INTERNAL, "internal" },
		{ FD_ERR_REJECTED, "rejected" },
		{ FD_ERR_PRECONDITION, "precondition" },
		{ FD_ERR_IDEMPOTENCY, "idempotency" },
	};
	size_t n = sizeof rows / sizeof rows[0];
	for (size_t i = 0; i < n; i++) {
		cr_assert_str_eq(fd_err_name(rows[i].e), rows[i].name);
		for (size_t j = i + 1; j < n; j++)
			cr_assert_str_neq(fd_err_name(rows[i].e), fd_err_name(rows[j].e), "names must be distinct");
	}
	/* The enum is contiguous from FD_OK: every value below the largest has a real name. */
	int max = 0;
	for (size_t i = 0; i < n; i++)
		max = (int)rows[i].e > max ? (int)rows[i].e : max;
	cr_assert_eq((size_t)max + 1, n, "a value of enum fd_err is missing from this table");
	cr_assert_str_eq(fd_err_name((enum fd_err)-1), "unknown");
	cr_assert_str_eq(fd_err_name((enum fd_err)1000), "unknown");
}

/* ---- jsonspan ------------------------------------------------------------------- */

static struct fd_span whole(const char *s)
{
	return (struct fd_span){ 0, strlen(s) };
}

/* The text of a span, for comparisons (static buffer). */
static const char *span_text(const char *s, struct fd_span sp)
{
	static char out[512];
	cr_assert_leq(sp.start, sp.end);
	cr_assert_lt(sp.end - sp.start, sizeof out);
	memcpy(out, s + sp.start, sp.end - sp.start);
	out[sp.end - sp.start] = '\0';
	return out;
}

static void expect_member(const char *s, struct fd_span obj, const char *key, const char *want)
{
	struct fd_span out;
	cr_assert(fd_json_member(s, strlen(s), obj, key, &out), "member %s not found in %s", key, s);
	cr_assert_str_eq(span_text(s, out), want, "member %s", key);
}

Test(jsonspan, member_top_level_not_nested)
{
	const char *s = "{\"a\":{\"data\":1},\"data\":{\"x\":[1,2,{\"y\":\"}\"}]},\"z\":null}";
	expect_member(s, whole(s), "data", "{\"x\":[1,2,{\"y\":\"}\"}]}");
	expect_member(s, whole(s), "a", "{\"data\":1}");
	expect_member(s, whole(s), "z", "null");
	struct fd_span out;
	cr_assert_not(fd_json_member(s, strlen(s), whole(s), "y", &out), "only direct members");
	cr_assert_not(fd_json_member(s, strlen(s), whole(s), "x", &out));
	cr_assert_not(fd_json_member(s, strlen(s), whole(s), "dat", &out));
	cr_assert_not(fd_json_member(s, strlen(s), whole(s), "datax", &out));
	/* Nested lookup through the outer span. */
	cr_assert(fd_json_member(s, strlen(s), whole(s), "a", &out));
	expect_member(s, out, "data", "1");
}

Test(jsonspan, member_escaped_key)
{
	const char *s = "{\"dat\\u0061x\":0,\"d\\u0061ta\":{\"k\":true},\"data\":\"second\"}";
	/* The first member whose decoded name is "data" is the escaped one. */
	expect_member(s, whole(s), "data", "{\"k\":true}");
	expect_member(s, whole(s), "datax", "0");
	const char *q = "{\"a\\\"b\":1,\"a\\\\\":2,\"\\u00e9\":3}";
	expect_member(q, whole(q), "a\"b", "1");
	expect_member(q, whole(q), "a\\", "2");
	expect_member(q, whole(q), "\xc3\xa9", "3");
}

Test(jsonspan, member_whitespace_heavy)
{
	const char *s = " \n\t{ \r\n \"events\"\t :\n [ {\"data\" : { } } ,\n { \"data\":{\"a\":\"]\"} } ] ,\n"
			" \"expected_version\" :  7 \n } \n";
	expect_member(s, whole(s), "expected_version", "7");
	struct fd_span ev;
	cr_assert(fd_json_member(s, strlen(s), whole(s), "events", &ev));
	cr_assert_eq(s[ev.start], '[');
	cr_assert_eq(s[ev.end - 1], ']');
	size_t pos = 0;
	struct fd_span e;
	cr_assert(fd_json_next_element(s, strlen(s), ev, &pos, &e));
	expect_member(s, e, "data", "{ }");
	cr_assert(fd_json_next_element(s, strlen(s), ev, &pos, &e));
	expect_member(s, e, "data", "{\"a\":\"]\"}");
	cr_assert_not(fd_json_next_element(s, strlen(s), ev, &pos, &e), "only two elements");
}

Test(jsonspan, compact_drops_whitespace_between_tokens_only)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "{\"orders\" : [{\"a\" : 1, \"b\" : \"x : y, z\"}], \"next\" : null}",
		  "{\"orders\":[{\"a\":1,\"b\":\"x : y, z\"}],\"next\":null}" },
		{ " \n\t[ 1 ,\r\n2 , { } , [ ] , true , false , -0.5e3 ]\n", "[1,2,{},[],true,false,-0.5e3]" },
		{ "{\"q\\\" : \\\\\" : \"\\\\\", \"e\" : \"\\\" , \\\"\"}", "{\"q\\\" : \\\\\":\"\\\\\",\"e\":\"\\\" , \\\"\"}" },
		{ "\"  \"", "\"  \"" },
		{ "", "" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char out[128];
		size_t n = fd_json_compact(out, cases[i].in, strlen(cases[i].in));
		out[n] = '\0';
		cr_assert_str_eq(out, cases[i].want, "case %zu", i);
		/* in place, and the same as jansson's compact form */
		char *copy = strdup(cases[i].in);
		copy[fd_json_compact(copy, copy, strlen(copy))] = '\0';
		cr_assert_str_eq(copy, cases[i].want);
		free(copy);
		json_t *j = json_loads(cases[i].in, JSON_DECODE_ANY, NULL);
		if (j && !strchr(cases[i].in, '.')) {
			char *dumped = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
			cr_assert_str_eq(dumped, cases[i].want, "case %zu against jansson", i);
			free(dumped);
		}
		json_decref(j);
	}
}

Test(jsonspan, strings_with_brackets_and_escapes)
{
	const char *s = "{\"s\":\"[{\\\"}\",\"t\":\"\\\\\",\"data\":{\"q\":\"}]}[{\"},\"u\":\"x\"}";
	expect_member(s, whole(s), "s", "\"[{\\\"}\"");
	expect_member(s, whole(s), "t", "\"\\\\\"");
	expect_member(s, whole(s), "data", "{\"q\":\"}]}[{\"}");
	expect_member(s, whole(s), "u", "\"x\"");
}

Test(jsonspan, next_element_over_mixed_values)
{
	const char *s = "[ 1 , -2.5e3,\"a,b\" ,true,false , null,{\"k\":[1,[2]]},[],\"\\\"]\" ]";
	static const char *const want[] = { "1", "-2.5e3", "\"a,b\"", "true", "false", "null", "{\"k\":[1,[2]]}", "[]",
					    "\"\\\"]\"" };
	size_t pos = 0, n = 0;
	struct fd_span e;
	while (fd_json_next_element(s, strlen(s), whole(s), &pos, &e)) {
		cr_assert_lt(n, sizeof want / sizeof want[0]);
		cr_assert_str_eq(span_text(s, e), want[n], "element %zu", n);
		n++;
	}
	cr_assert_eq(n, sizeof want / sizeof want[0]);
	/* fd_json_element agrees with iteration. */
	for (size_t i = 0; i < n; i++) {
		cr_assert(fd_json_element(s, strlen(s), whole(s), i, &e));
		cr_assert_str_eq(span_text(s, e), want[i]);
	}
	cr_assert_not(fd_json_element(s, strlen(s), whole(s), n, &e));
}

Test(jsonspan, empty_containers)
{
	const char *a = " [ ] ";
	size_t pos = 0;
	struct fd_span e;
	cr_assert_not(fd_json_next_element(a, strlen(a), whole(a), &pos, &e));
	const char *o = "{ }";
	cr_assert_not(fd_json_member(o, strlen(o), whole(o), "data", &e));
	/* Not an array / not an object. */
	const char *obj = "{\"a\":1}";
	pos = 0;
	cr_assert_not(fd_json_next_element(obj, strlen(obj), whole(obj), &pos, &e));
	const char *arr = "[1]";
	cr_assert_not(fd_json_member(arr, strlen(arr), whole(arr), "a", &e));
}

Test(jsonspan, skip_value)
{
	static const struct {
		const char *s;
		size_t end;
	} rows[] = {
		{ "123,", 3 },
		{ "  -0.5e-7 ]", 9 },
		{ "true}", 4 },
		{ "null", 4 },
		{ "\"a\\\"b\" ,", 6 },
		{ "\"\\\\\"x", 4 },
		{ " {\"a\":[1,{\"b\":\"]}\"}]} rest", 21 },
		{ "[[[[]]]],1", 8 },
		{ "\"\\u005d\"]", 8 },
	};
	for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
		size_t pos = 0;
		cr_assert(fd_json_skip_value(rows[i].s, strlen(rows[i].s), &pos), "row %zu", i);
		cr_assert_eq(pos, rows[i].end, "row %zu: %s ended at %zu", i, rows[i].s, pos);
	}
	/* Starting mid-text. */
	const char *s = "[10,20]";
	size_t pos = 4;
	cr_assert(fd_json_skip_value(s, strlen(s), &pos));
	cr_assert_eq(pos, 6);
}

Test(jsonspan, truncated_or_malformed_text_is_refused)
{
	/* Copies on the heap with exact lengths, so ASan catches any read past the end. */
	static const char *const bad[] = { "\"abc", "\"ab\\", "{\"a\":[1,2", "[", "{", "", "   ", "]", "}", ",",
					   "{\"a\":\"}" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		size_t len = strlen(bad[i]);
		char *s = malloc(len ? len : 1);
		cr_assert_not_null(s);
		memcpy(s, bad[i], len);
		size_t pos = 0;
		cr_assert_not(fd_json_skip_value(s, len, &pos), "skip accepted \"%s\"", bad[i]);
		free(s);
	}
	static const char *const bad_obj[] = { "{\"data\"", "{\"data\":", "{\"data\" 1}", "{\"x\":1 \"data\":2}",
					       "{data:1}", "{\"x\":{\"a\":1}" };
	for (size_t i = 0; i < sizeof bad_obj / sizeof bad_obj[0]; i++) {
		size_t len = strlen(bad_obj[i]);
		char *s = malloc(len);
		memcpy(s, bad_obj[i], len);
		struct fd_span out;
		cr_assert_not(fd_json_member(s, len, (struct fd_span){ 0, len }, "data", &out), "member accepted \"%s\"",
			      bad_obj[i]);
		free(s);
	}
	/* A span that claims more than the text has is refused. */
	const char *ok = "{\"data\":1}";
	struct fd_span out;
	cr_assert_not(fd_json_member(ok, strlen(ok), (struct fd_span){ 0, strlen(ok) + 5 }, "data", &out));
	size_t pos = 0;
	cr_assert_not(fd_json_next_element("[1]", 3, (struct fd_span){ 0, 9 }, &pos, &out));
}

Test(jsonspan, deep_nesting_without_recursion)
{
	enum { DEPTH = 100000 };
	size_t len = 2 * DEPTH + 2;
	char *s = malloc(len + 1);
	cr_assert_not_null(s);
	memset(s, '[', DEPTH);
	memset(s + DEPTH, ']', DEPTH);
	s[2 * DEPTH] = ',';
	s[2 * DEPTH + 1] = '1';
	s[len] = '\0';
	size_t pos = 0;
	cr_assert(fd_json_skip_value(s, len, &pos));
	cr_assert_eq(pos, 2 * DEPTH);
	free(s);
}

/* ---- log levels and request ids ---------------------------------------------------- */

Test(log, level_parse)
{
	cr_assert_eq(fd_log_level_parse("debug"), FD_LOG_DEBUG);
	cr_assert_eq(fd_log_level_parse("info"), FD_LOG_INFO);
	cr_assert_eq(fd_log_level_parse("warn"), FD_LOG_WARN);
	cr_assert_eq(fd_log_level_parse("warning"), FD_LOG_WARN);
	cr_assert_eq(fd_log_level_parse("error"), FD_LOG_ERROR);
	cr_assert_eq(fd_log_level_parse("DEBUG"), FD_LOG_DEBUG);
	cr_assert_eq(fd_log_level_parse("Error"), FD_LOG_ERROR);
	cr_assert_eq(fd_log_level_parse(""), -1);
	cr_assert_eq(fd_log_level_parse("trace"), -1);
	cr_assert_eq(fd_log_level_parse("info "), -1);
	cr_assert_eq(fd_log_level_parse("err"), -1);
	cr_assert_eq(fd_log_level_parse(NULL), -1);
}

Test(log, enabled_follows_level)
{
	fd_log_set_level(FD_LOG_WARN);
	cr_assert_not(fd_log_enabled(FD_LOG_DEBUG));
	cr_assert_not(fd_log_enabled(FD_LOG_INFO));
	cr_assert(fd_log_enabled(FD_LOG_WARN));
	cr_assert(fd_log_enabled(FD_LOG_ERROR));
	fd_log_set_level(FD_LOG_DEBUG);
	cr_assert(fd_log_enabled(FD_LOG_DEBUG));
}

Test(request_id, valid_and_invalid)
{
	cr_assert(fd_request_id_valid("a"));
	cr_assert(fd_request_id_valid("checkout-7f3a9c2e"));
	cr_assert(fd_request_id_valid("A.b_c:d-E0123456789"));
	cr_assert(fd_request_id_valid("0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c11"));
	char id[200];
	memset(id, 'x', sizeof id);
	id[128] = '\0';
	cr_assert(fd_request_id_valid(id), "128 characters are allowed");
	id[128] = 'x';
	id[129] = '\0';
	cr_assert_not(fd_request_id_valid(id), "129 characters are too many");

	static const char *const bad[] = { "", "a b", "a/b", "a\tb", "a\nb", "caf\xc3\xa9", "a;b", "a\"b", "a,b",
					   "<script>", "a+b", "a=b", "a@b", "(x)" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_not(fd_request_id_valid(bad[i]), "accepted \"%s\"", bad[i]);
	cr_assert_not(fd_request_id_valid(NULL));
}
