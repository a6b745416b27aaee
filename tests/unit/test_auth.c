/*
 * test_auth.c - API key lists (parsing, hashed keys, lookup), the role rule
 * of routes, Bearer parsing, the loopback-only rule without keys, CORS origin
 * lists and the JSON depth scan.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "factd/auth.h"
#include "factd/config.h"
#include "factd/hash.h"
#include "core/limits.h"
#include "factd/router.h"

static enum fd_err parse(struct fd_api_keys *set, const char *list, char *err, size_t errlen)
{
	memset(set, 0, sizeof *set);
	err[0] = '\0';
	return fd_api_keys_parse(set, list, ',', "FACTD_API_KEYS", err, errlen);
}

static enum fd_role lookup(const struct fd_api_keys *set, const char *key)
{
	return fd_api_keys_lookup(set, key, strlen(key));
}

Test(api_keys, plaintext_roles)
{
	struct fd_api_keys set;
	char err[256];
	cr_assert_eq(parse(&set, "read:reader-key-0123456789, write:writer-key-0123456789,admin:admin-key-0123456789",
			   err, sizeof err),
		     FD_OK, "%s", err);
	cr_assert_eq(set.n, 3);
	cr_assert_eq(lookup(&set, "reader-key-0123456789"), FD_ROLE_READ);
	cr_assert_eq(lookup(&set, "writer-key-0123456789"), FD_ROLE_WRITE);
	cr_assert_eq(lookup(&set, "admin-key-0123456789"), FD_ROLE_ADMIN);
	cr_assert_eq(lookup(&set, "admin-key-012345678"), FD_ROLE_DEFAULT, "a prefix is not the key");
	cr_assert_eq(lookup(&set, "admin-key-01234567890"), FD_ROLE_DEFAULT);
	cr_assert_eq(lookup(&set, ""), FD_ROLE_DEFAULT);
	/* Only digests are kept: the plaintext is nowhere in the set. */
	cr_assert_null(memmem(set.keys, set.n * sizeof set.keys[0], "reader-key", 10));
	fd_api_keys_release(&set);
	cr_assert_eq(set.n, 0);
}

Test(api_keys, hashed_keys)
{
	char hex[65], list[128];
	fd_sha256_hex("prehashed-secret-0001", strlen("prehashed-secret-0001"), hex);
	snprintf(list, sizeof list, "admin:sha256:%s", hex);
	struct fd_api_keys set;
	char err[256];
	cr_assert_eq(parse(&set, list, err, sizeof err), FD_OK, "%s", err);
	cr_assert_eq(lookup(&set, "prehashed-secret-0001"), FD_ROLE_ADMIN);
	cr_assert_eq(lookup(&set, hex), FD_ROLE_DEFAULT, "the digest itself is not a key");
	fd_api_keys_release(&set);
	/* Upper-case hex is the same digest. */
	for (char *p = list; *p; p++)
		if (*p >= 'a' && *p <= 'f' && p > list + 13)
			*p = (char)(*p - 'a' + 'A');
	cr_assert_eq(parse(&set, list, err, sizeof err), FD_OK, "%s", err);
	cr_assert_eq(lookup(&set, "prehashed-secret-0001"), FD_ROLE_ADMIN);
	fd_api_keys_release(&set);
}

Test(api_keys, bad_entries_never_quote_the_secret)
{
	static const char *const bad[] = {
		"reader:long-enough-secret-123",   /* unknown role */
		"read",                            /* no key */
		"read:",                           /* empty key */
		"read:short",                      /* under 16 characters */
		"read:sha256:abcd",                /* digest too short */
		"read:sha256:zz23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"read:long-enough-secret-123,write:long-enough-secret-123", /* the same key twice */
		":long-enough-secret-123",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct fd_api_keys set;
		char err[256];
		cr_assert_eq(parse(&set, bad[i], err, sizeof err), FD_ERR_INVAL, "accepted %s", bad[i]);
		cr_assert(strstr(err, "FACTD_API_KEYS"), "message names the variable: %s", err);
		cr_assert_null(strstr(err, "long-enough"), "message quotes the secret: %s", err);
		cr_assert_null(strstr(err, "short"), "message quotes the secret: %s", err);
		fd_api_keys_release(&set);
	}
}

Test(api_keys, file_format)
{
	char path[] = "/tmp/factd-keys-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	char hex[65];
	fd_sha256_hex("file-admin-secret-0001", strlen("file-admin-secret-0001"), hex);
	FILE *f = fdopen(fd, "w");
	fprintf(f, "# factd keys\n\nread file-reader-secret-01\r\n  write:file-writer-secret-01  \nadmin:sha256:%s\n",
		hex);
	fclose(f);
	struct fd_api_keys set = { 0 };
	char err[256] = "";
	cr_assert_eq(fd_api_keys_load_file(&set, path, err, sizeof err), FD_OK, "%s", err);
	cr_assert_eq(set.n, 3);
	cr_assert_eq(lookup(&set, "file-reader-secret-01"), FD_ROLE_READ);
	cr_assert_eq(lookup(&set, "file-writer-secret-01"), FD_ROLE_WRITE);
	cr_assert_eq(lookup(&set, "file-admin-secret-0001"), FD_ROLE_ADMIN);
	fd_api_keys_release(&set);
	unlink(path);
	cr_assert_eq(fd_api_keys_load_file(&set, path, err, sizeof err), FD_ERR_INVAL);
	cr_assert(strstr(err, "FACTD_API_KEYS_FILE"), "%s", err);
}

Test(auth, bearer_header)
{
	size_t n;
	const char *t = fd_auth_bearer("Bearer abc.def", &n);
	cr_assert(t && n == 7 && strncmp(t, "abc.def", n) == 0);
	t = fd_auth_bearer("  bearer   tok  ", &n);
	cr_assert(t && n == 3 && strncmp(t, "tok", 3) == 0);
	cr_assert_null(fd_auth_bearer(NULL, &n));
	cr_assert_null(fd_auth_bearer("Basic dXNlcjpwdw==", &n));
	cr_assert_null(fd_auth_bearer("Bearer", &n));
	cr_assert_null(fd_auth_bearer("Bearer   ", &n));
	cr_assert_null(fd_auth_bearer("Bearerabc", &n));
}

Test(auth, role_rule)
{
	cr_assert_eq(fd_role_required(FD_ROLE_DEFAULT, "GET"), FD_ROLE_READ);
	cr_assert_eq(fd_role_required(FD_ROLE_DEFAULT, "HEAD"), FD_ROLE_READ);
	cr_assert_eq(fd_role_required(FD_ROLE_DEFAULT, "POST"), FD_ROLE_WRITE);
	cr_assert_eq(fd_role_required(FD_ROLE_DEFAULT, "DELETE"), FD_ROLE_WRITE);
	cr_assert_eq(fd_role_required(FD_ROLE_ADMIN, "POST"), FD_ROLE_ADMIN);
	cr_assert_eq(fd_role_required(FD_ROLE_OPEN, "GET"), FD_ROLE_OPEN);
	cr_assert(FD_ROLE_ADMIN > FD_ROLE_WRITE && FD_ROLE_WRITE > FD_ROLE_READ, "roles are ordered");
}

Test(auth, route_table_roles)
{
	/*
	 * Probes, the caller's role and the console's files are open; rebuilding
	 * a projection is an admin operation; the rest follows the method.
	 */
	for (size_t i = 0; i < fd_routes_count; i++) {
		const struct fd_route *r = &fd_routes[i];
		enum fd_role need = fd_role_required(r->role, r->method);
		if (strcmp(r->pattern, "/healthz") == 0 || strcmp(r->pattern, "/readyz") == 0 ||
		    strcmp(r->pattern, "/whoami") == 0 || strncmp(r->pattern, "/console", 8) == 0)
			cr_assert_eq(need, FD_ROLE_OPEN, "%s", r->pattern);
		else if (strstr(r->pattern, "/rebuild") || strstr(r->pattern, "/retry") || strstr(r->pattern, "/abort"))
			cr_assert_eq(need, FD_ROLE_ADMIN, "%s %s must need admin", r->method, r->pattern);
		else
			cr_assert_geq(need, FD_ROLE_READ, "%s %s", r->method, r->pattern);
		if (strcmp(r->method, "GET") != 0)
			cr_assert_geq(need, FD_ROLE_WRITE, "%s %s changes state: at least write", r->method, r->pattern);
	}
}

/* ---- serving beyond loopback needs keys ---------------------------------------- */

static enum fd_err exposure(const char *host, bool with_key, bool insecure, char *err, size_t errlen)
{
	struct fd_config cfg;
	cr_assert_eq(fd_config_defaults(&cfg), FD_OK);
	free(cfg.listen_host);
	cfg.listen_host = strdup(host);
	cfg.allow_insecure = insecure;
	char perr[128];
	if (with_key)
		cr_assert_eq(fd_api_keys_parse(&cfg.api_keys, "read:some-long-reader-key", ',', "k", perr, sizeof perr),
			     FD_OK);
	err[0] = '\0';
	enum fd_err e = fd_config_check_exposure(&cfg, err, errlen);
	fd_config_release(&cfg);
	return e;
}

Test(exposure, loopback_without_keys_is_fine)
{
	char err[512];
	static const char *const loop[] = { "127.0.0.1", "127.1.2.3", "::1", "localhost", "::ffff:127.0.0.1" };
	for (size_t i = 0; i < sizeof loop / sizeof loop[0]; i++)
		cr_assert_eq(exposure(loop[i], false, false, err, sizeof err), FD_OK, "%s: %s", loop[i], err);
}

Test(exposure, elsewhere_needs_keys_or_the_escape_hatch)
{
	char err[512];
	static const char *const open_[] = { "0.0.0.0", "::", "10.0.0.5", "192.168.1.1", "db.example", "128.0.0.1" };
	for (size_t i = 0; i < sizeof open_ / sizeof open_[0]; i++) {
		cr_assert_eq(exposure(open_[i], false, false, err, sizeof err), FD_ERR_INVAL, "%s accepted", open_[i]);
		cr_assert(strstr(err, "FACTD_API_KEYS") && strstr(err, "FACTD_ALLOW_INSECURE") && strstr(err, open_[i]),
			  "%s", err);
		cr_assert_eq(exposure(open_[i], true, false, err, sizeof err), FD_OK, "%s with a key: %s", open_[i], err);
		cr_assert_eq(exposure(open_[i], false, true, err, sizeof err), FD_OK, "%s insecure: %s", open_[i], err);
	}
}

static void clean_env(void)
{
	static const char *const names[] = { "FACTD_LISTEN", "FACTD_API_KEYS", "FACTD_API_KEYS_FILE",
					     "FACTD_ALLOW_INSECURE", "FACTD_TLS_CERT", "FACTD_TLS_KEY",
					     "FACTD_CORS_ORIGINS", "FACTD_MAX_JSON_DEPTH" };
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		unsetenv(names[i]);
	setenv("FACTD_DATABASE_URL", "postgresql://u@h/db", 1);
}

static enum fd_err load(struct fd_config *cfg, char *err, size_t errlen)
{
	char *argv[] = { (char *)"factd", NULL };
	err[0] = '\0';
	return fd_config_load(cfg, 1, argv, err, errlen);
}

Test(config_access, serve_refuses_open_listen_without_keys, .init = clean_env)
{
	struct fd_config cfg;
	char err[512];
	setenv("FACTD_LISTEN", "0.0.0.0:8080", 1);
	cr_assert_eq(load(&cfg, err, sizeof err), FD_ERR_INVAL);
	cr_assert(strstr(err, "refusing"), "%s", err);
	fd_config_release(&cfg);
	setenv("FACTD_ALLOW_INSECURE", "1", 1);
	cr_assert_eq(load(&cfg, err, sizeof err), FD_OK, "%s", err);
	cr_assert(cfg.allow_insecure);
	fd_config_release(&cfg);
	unsetenv("FACTD_ALLOW_INSECURE");
	setenv("FACTD_API_KEYS", "write:writer-key-0123456789", 1);
	cr_assert_eq(load(&cfg, err, sizeof err), FD_OK, "%s", err);
	cr_assert_eq(cfg.api_keys.n, 1);
	fd_config_release(&cfg);
	/* `migrate` serves nothing: no refusal. */
	unsetenv("FACTD_API_KEYS");
	char *argv[] = { (char *)"factd", (char *)"migrate", NULL };
	cr_assert_eq(fd_config_load(&cfg, 2, argv, err, sizeof err), FD_OK, "%s", err);
	fd_config_release(&cfg);
}

Test(config_access, tls_both_or_neither, .init = clean_env)
{
	struct fd_config cfg;
	char err[512];
	setenv("FACTD_TLS_CERT", "/etc/factd/cert.pem", 1);
	cr_assert_eq(load(&cfg, err, sizeof err), FD_ERR_INVAL);
	cr_assert(strstr(err, "FACTD_TLS_KEY"), "%s", err);
	fd_config_release(&cfg);
	setenv("FACTD_TLS_KEY", "/etc/factd/key.pem", 1);
	cr_assert_eq(load(&cfg, err, sizeof err), FD_OK, "%s", err);
	cr_assert_str_eq(cfg.tls_cert, "/etc/factd/cert.pem");
	cr_assert_str_eq(cfg.tls_key, "/etc/factd/key.pem");
	fd_config_release(&cfg);
	unsetenv("FACTD_TLS_CERT");
	cr_assert_eq(load(&cfg, err, sizeof err), FD_ERR_INVAL);
	fd_config_release(&cfg);
}

Test(config_access, keys_and_depth_from_env, .init = clean_env)
{
	struct fd_config cfg;
	char err[512];
	setenv("FACTD_API_KEYS", "read:reader-key-0123456789", 1);
	setenv("FACTD_MAX_JSON_DEPTH", "8", 1);
	cr_assert_eq(load(&cfg, err, sizeof err), FD_OK, "%s", err);
	cr_assert_eq(cfg.api_keys.n, 1);
	cr_assert_eq(cfg.max_json_depth, 8);
	fd_config_release(&cfg);
	setenv("FACTD_API_KEYS", "read:short", 1);
	cr_assert_eq(load(&cfg, err, sizeof err), FD_ERR_INVAL);
	cr_assert_null(strstr(err, "short"), "%s", err);
	fd_config_release(&cfg);
	unsetenv("FACTD_API_KEYS");
	setenv("FACTD_MAX_JSON_DEPTH", "0", 1);
	cr_assert_eq(load(&cfg, err, sizeof err), FD_ERR_INVAL);
	fd_config_release(&cfg);
	cr_assert(strstr(fd_config_usage(), "FACTD_API_KEYS_FILE"));
	cr_assert(strstr(fd_config_usage(), "FACTD_CORS_ORIGINS"));
	cr_assert(strstr(fd_config_usage(), "FACTD_TLS_CERT"));
	cr_assert(strstr(fd_config_usage(), "FACTD_ALLOW_INSECURE"));
	cr_assert(strstr(fd_config_usage(), "FACTD_MAX_JSON_DEPTH"));
}

Test(config_access, cors_origins, .init = clean_env)
{
	struct fd_config cfg;
	char err[512];
	setenv("FACTD_CORS_ORIGINS", "https://app.example, http://localhost:3000", 1);
	cr_assert_eq(load(&cfg, err, sizeof err), FD_OK, "%s", err);
	cr_assert(fd_config_cors_allowed(&cfg, "https://app.example"));
	cr_assert(fd_config_cors_allowed(&cfg, "http://localhost:3000"));
	cr_assert_not(fd_config_cors_allowed(&cfg, "https://app.example.evil"));
	cr_assert_not(fd_config_cors_allowed(&cfg, "https://app.exampl"));
	cr_assert_not(fd_config_cors_allowed(&cfg, "http://localhost"));
	cr_assert_not(fd_config_cors_allowed(&cfg, NULL));
	cr_assert_not(fd_config_cors_allowed(&cfg, "null"));
	fd_config_release(&cfg);
	setenv("FACTD_CORS_ORIGINS", "*", 1);
	cr_assert_eq(load(&cfg, err, sizeof err), FD_OK, "%s", err);
	cr_assert(fd_config_cors_allowed(&cfg, "https://anything.example"));
	fd_config_release(&cfg);
	static const char *const bad[] = { "app.example", "https://app.example/", "https://a.example/path", "https://",
					   "https://a b" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		setenv("FACTD_CORS_ORIGINS", bad[i], 1);
		cr_assert_eq(load(&cfg, err, sizeof err), FD_ERR_INVAL, "accepted %s", bad[i]);
		fd_config_release(&cfg);
	}
	unsetenv("FACTD_CORS_ORIGINS");
	cr_assert_eq(load(&cfg, err, sizeof err), FD_OK, "%s", err);
	cr_assert_not(fd_config_cors_allowed(&cfg, "https://app.example"), "no origin is allowed by default");
	fd_config_release(&cfg);
}

/* ---- JSON depth ---------------------------------------------------------------- */

static bool within(const char *s, unsigned max)
{
	return fd_json_depth_within(s, strlen(s), max);
}

Test(limits, json_depth)
{
	cr_assert(within("{}", 1));
	cr_assert(within("[1,2,{\"a\":[]}]", 3));
	cr_assert_not(within("[1,2,{\"a\":[]}]", 2));
	cr_assert(within("\"[[[[[[\"", 1), "brackets in strings do not count");
	cr_assert(within("{\"a\\\"[[[[\":1}", 1), "escaped quotes do not end strings");
	cr_assert(within("]]]]{}", 1), "stray closers do not go negative");
	cr_assert(within("", 1));
	char deep[200];
	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	cr_assert(fd_json_depth_within(deep, 200, 100));
	cr_assert_not(fd_json_depth_within(deep, 200, 99));
	cr_assert_not(fd_json_depth_within(deep, 60, 32), "an unterminated body is cut off as soon as it is too deep");
}

Test(auth, key_id_is_a_digest_prefix)
{
	char id[FD_API_KEY_ID_LEN + 1], hex[65];
	fd_api_key_id("writer-key-0123456789", 21, id);
	fd_sha256_hex("writer-key-0123456789", 21, hex);
	cr_assert_eq(strlen(id), 16);
	cr_assert_eq(strncmp(id, "key:", 4), 0);
	cr_assert_eq(strncmp(id + 4, hex, 12), 0, "%s vs %s", id, hex);
}
