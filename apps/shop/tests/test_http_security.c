/*
 * test_http_security.c - access and limits against a real server and
 * PostgreSQL: API keys and roles (401/403 with WWW-Authenticate), hashed key
 * files, open probes, TLS, CORS (preflight and exposed headers), the JSON
 * depth limit, length limits, a slow client being dropped, and 503 past the
 * connection limit.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "factd/hash.h"
#include "http_client.h"
#define FD_TEST_APP (&shop_app) /* the shop's routes and types */
#include "shop.h"
#include "test_server.h"
#include "testutil.h"

#define READ_KEY "reader-key-0123456789"
#define WRITE_KEY "writer-key-0123456789"
#define ADMIN_KEY "admin-key-0123456789ab"
#define APPEND "{\"expected_version\":\"any\",\"events\":[{\"type\":\"Noted\",\"data\":{\"n\":1}}]}"

static void with_keys(struct fd_config *cfg)
{
	char err[256];
	cr_assert_eq(fd_api_keys_parse(&cfg->api_keys, "read:" READ_KEY ",write:" WRITE_KEY ",admin:" ADMIN_KEY, ',',
				       "test", err, sizeof err),
		     FD_OK, "%s", err);
}

/* "Authorization: Bearer <key>\r\n" (static buffer), or "" for NULL. */
static const char *auth(const char *key)
{
	static char buf[256];
	if (!key)
		return "";
	snprintf(buf, sizeof buf, "Authorization: Bearer %s\r\n", key);
	return buf;
}

static int call(const struct fd_test_server *ts, const char *method, const char *path, const char *key,
		const char *body, struct fd_test_resp *r)
{
	cr_assert_eq(fd_test_http(ts->port, method, path, auth(key), body, body ? strlen(body) : 0, r), 0,
		     "%s %s: no connection", method, path);
	return r->status;
}

static void expect_challenge(const struct fd_test_resp *r, const char *needle)
{
	char h[256];
	cr_assert(fd_test_header(r, "WWW-Authenticate", h, sizeof h), "no WWW-Authenticate; head: %s", r->head);
	cr_assert(strstr(h, "Bearer realm=\"factd\""), "%s", h);
	if (needle)
		cr_assert(strstr(h, needle), "WWW-Authenticate \"%s\" lacks %s", h, needle);
	else
		cr_assert_null(strstr(h, "error="), "no error code without a key: %s", h);
}

/* ---- keys and roles ------------------------------------------------------------ */

Test(keys, missing_and_unknown_keys_get_401)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_keys);
	struct fd_test_resp r;

	call(&ts, "GET", "/events", NULL, NULL, &r);
	fd_test_assert_problem(&r, 401, "unauthorized");
	expect_challenge(&r, NULL);
	fd_test_resp_free(&r);

	call(&ts, "GET", "/events", "not-a-key-of-ours-at-all", NULL, &r);
	fd_test_assert_problem(&r, 401, "unauthorized");
	expect_challenge(&r, "error=\"invalid_token\"");
	cr_assert_null(strstr(r.body, "not-a-key"), "the key is echoed: %s", r.body);
	fd_test_resp_free(&r);

	/* Another scheme is no key. */
	cr_assert_eq(fd_test_http(ts.port, "GET", "/events", "Authorization: Basic dXNlcjpwYXNz\r\n", NULL, 0, &r), 0);
	fd_test_assert_problem(&r, 401, "unauthorized");
	fd_test_resp_free(&r);

	/* Writes too, and unknown paths do not reveal that they are unknown. */
	call(&ts, "POST", "/streams/k-1/events", NULL, APPEND, &r);
	fd_test_assert_problem(&r, 401, "unauthorized");
	fd_test_resp_free(&r);
	call(&ts, "GET", "/no/such/thing", NULL, NULL, &r);
	fd_test_assert_problem(&r, 401, "unauthorized");
	fd_test_resp_free(&r);
	call(&ts, "GET", "/no/such/thing", READ_KEY, NULL, &r);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM events"), 0, "a rejected append was stored");
	fd_test_server_stop(&ts);
}

Test(keys, roles)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_keys);
	struct fd_test_resp r;

	/* read: GETs only. */
	cr_assert_eq(call(&ts, "GET", "/events", READ_KEY, NULL, &r), 200, "%s", r.body);
	fd_test_resp_free(&r);
	call(&ts, "POST", "/streams/k-1/events", READ_KEY, APPEND, &r);
	fd_test_assert_problem(&r, 403, "forbidden");
	expect_challenge(&r, "error=\"insufficient_scope\"");
	cr_assert_str_eq(fd_test_json_str(&r, "required_role"), "write");
	cr_assert_str_eq(fd_test_json_str(&r, "key_role"), "read");
	fd_test_resp_free(&r);

	/* write: appends and commands, not rebuilds. */
	cr_assert_eq(call(&ts, "POST", "/streams/k-1/events", WRITE_KEY, APPEND, &r), 201, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(call(&ts, "GET", "/streams/k-1/events", WRITE_KEY, NULL, &r), 200, "write implies read");
	fd_test_resp_free(&r);
	call(&ts, "POST", "/projections/order_summaries/rebuild", WRITE_KEY, NULL, &r);
	fd_test_assert_problem(&r, 403, "forbidden");
	expect_challenge(&r, "scope=\"admin\"");
	fd_test_resp_free(&r);

	/* admin: everything. */
	cr_assert_eq(call(&ts, "POST", "/projections/order_summaries/rebuild", ADMIN_KEY, NULL, &r), 202, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(call(&ts, "POST", "/streams/k-1/events", ADMIN_KEY, APPEND, &r), 201, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(call(&ts, "GET", "/projections", ADMIN_KEY, NULL, &r), 200);
	fd_test_resp_free(&r);

	/* Commands record which key asked, by its public id, never the key. */
	cr_assert_eq(call(&ts, "POST", "/orders", WRITE_KEY, "{\"customer_id\":\"c-1\"}", &r), 201, "%s", r.body);
	fd_test_resp_free(&r);
	char id[FD_API_KEY_ID_LEN + 1], sql[256];
	fd_api_key_id(WRITE_KEY, strlen(WRITE_KEY), id);
	cr_assert_eq(strncmp(id, "key:", 4), 0);
	snprintf(sql, sizeof sql, "SELECT count(*) FROM events WHERE metadata->>'caller' = '%s'", id);
	cr_assert_eq(fd_test_server_scalar(&ts, sql), 1, "%s", id);
	fd_test_server_stop(&ts);
}

Test(keys, probes_open_metrics_needs_read)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_keys);
	struct fd_test_resp r;
	cr_assert_eq(call(&ts, "GET", "/healthz", NULL, NULL, &r), 200);
	fd_test_resp_free(&r);
	cr_assert_eq(call(&ts, "GET", "/readyz", NULL, NULL, &r), 200, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(call(&ts, "GET", "/healthz", "a-wrong-key-is-ignored-here", NULL, &r), 200);
	fd_test_resp_free(&r);
	call(&ts, "GET", "/metrics", NULL, NULL, &r);
	fd_test_assert_problem(&r, 401, "unauthorized");
	fd_test_resp_free(&r);
	cr_assert_eq(call(&ts, "GET", "/metrics", READ_KEY, NULL, &r), 200);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(keys, without_keys_everything_is_open)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	cr_assert_eq(call(&ts, "POST", "/streams/k-1/events", NULL, APPEND, &r), 201, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(call(&ts, "POST", "/projections/order_summaries/rebuild", "any-key-whatsoever-0000", NULL, &r), 202);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

static char key_file[64];

static void with_key_file(struct fd_config *cfg)
{
	char err[256];
	cr_assert_eq(fd_api_keys_load_file(&cfg->api_keys, key_file, err, sizeof err), FD_OK, "%s", err);
}

Test(keys, hashed_key_file)
{
	snprintf(key_file, sizeof key_file, "/tmp/factd-keys-XXXXXX");
	int fd = mkstemp(key_file);
	cr_assert_geq(fd, 0);
	char hex[65];
	fd_sha256_hex(ADMIN_KEY, strlen(ADMIN_KEY), hex);
	FILE *f = fdopen(fd, "w");
	fprintf(f, "# operators keep only digests here\nadmin:sha256:%s\nread " READ_KEY "\n", hex);
	fclose(f);
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_key_file);
	unlink(key_file);
	struct fd_test_resp r;
	cr_assert_eq(call(&ts, "POST", "/projections/order_summaries/rebuild", ADMIN_KEY, NULL, &r), 202, "%s", r.body);
	fd_test_resp_free(&r);
	call(&ts, "POST", "/projections/order_summaries/rebuild", hex, NULL, &r);
	fd_test_assert_problem(&r, 401, "unauthorized"); /* the digest is not the key */
	fd_test_resp_free(&r);
	call(&ts, "POST", "/streams/k-1/events", READ_KEY, APPEND, &r);
	fd_test_assert_problem(&r, 403, "forbidden");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/* ---- TLS ------------------------------------------------------------------------ */

static char tls_dir[64];

static void with_tls(struct fd_config *cfg)
{
	char path[128];
	snprintf(path, sizeof path, "%s/cert.pem", tls_dir);
	cfg->tls_cert = strdup(path);
	snprintf(path, sizeof path, "%s/key.pem", tls_dir);
	cfg->tls_key = strdup(path);
	with_keys(cfg);
}

/* Run a shell command and return its stdout (caller frees). */
static char *run(const char *cmd)
{
	FILE *p = popen(cmd, "r");
	cr_assert(p, "popen %s", cmd);
	char *out = calloc(1, 65536);
	size_t n = fread(out, 1, 65535, p);
	out[n] = '\0';
	pclose(p);
	return out;
}

Test(tls, https_round_trip, .timeout = 120)
{
	snprintf(tls_dir, sizeof tls_dir, "/tmp/factd-tls-XXXXXX");
	cr_assert(mkdtemp(tls_dir));
	char cmd[512];
	snprintf(cmd, sizeof cmd,
		 "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 -keyout %s/key.pem "
		 "-out %s/cert.pem >/dev/null 2>&1",
		 tls_dir, tls_dir);
	cr_assert_eq(system(cmd), 0, "openssl could not make a certificate");
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_tls);

	snprintf(cmd, sizeof cmd, "curl -sk -o /dev/null -w '%%{http_code}' https://127.0.0.1:%u/healthz", ts.port);
	char *out = run(cmd);
	cr_assert_str_eq(out, "200", "GET /healthz over TLS: %s", out);
	free(out);
	snprintf(cmd, sizeof cmd,
		 "curl -sk -X POST -H 'Authorization: Bearer " WRITE_KEY "' -H 'Content-Type: application/json' "
		 "-d '" APPEND "' -w ' %%{http_code}' https://127.0.0.1:%u/streams/tls-1/events",
		 ts.port);
	out = run(cmd);
	cr_assert(strstr(out, "\"last_version\":1") && strstr(out, " 201"), "append over TLS: %s", out);
	free(out);
	/* Plain HTTP on the TLS port gets no HTTP answer. */
	struct fd_test_resp r;
	fd_test_get(ts.port, "/healthz", &r);
	cr_assert_neq(r.status, 200);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
	snprintf(cmd, sizeof cmd, "rm -rf %s", tls_dir);
	cr_assert_eq(system(cmd), 0);
}

/* ---- CORS ----------------------------------------------------------------------- */

static void with_cors(struct fd_config *cfg)
{
	cfg->cors_origins = strdup("https://app.example, http://localhost:3000");
	with_keys(cfg);
}

Test(cors, preflight_allowed_origin)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_cors);
	struct fd_test_resp r;
	char h[256];
	cr_assert_eq(fd_test_http(ts.port, "OPTIONS", "/streams/s-1/events",
				  "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n"
				  "Access-Control-Request-Headers: authorization, content-type\r\n",
				  NULL, 0, &r),
		     0);
	cr_assert_eq(r.status, 204, "preflight needs no key: %d %s", r.status, r.body);
	cr_assert_str_eq(fd_test_header(&r, "Access-Control-Allow-Origin", h, sizeof h), "https://app.example");
	cr_assert(fd_test_header(&r, "Access-Control-Allow-Methods", h, sizeof h));
	cr_assert(strstr(h, "GET") && strstr(h, "POST") && !strstr(h, "DELETE"), "methods of this path: %s", h);
	cr_assert(fd_test_header(&r, "Access-Control-Allow-Headers", h, sizeof h));
	static const char *const want[] = { "Authorization", "Content-Type", "If-Match", "Idempotency-Key",
					    "Last-Event-ID", "X-Request-Id" };
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		cr_assert(strstr(h, want[i]), "Allow-Headers %s lacks %s", h, want[i]);
	cr_assert(fd_test_header(&r, "Access-Control-Max-Age", h, sizeof h));
	cr_assert(fd_test_header(&r, "Vary", h, sizeof h) && strstr(h, "Origin"));
	cr_assert_null(fd_test_header(&r, "Access-Control-Allow-Credentials", h, sizeof h));
	fd_test_resp_free(&r);

	/* An unknown path: 404 even for an allowed origin. */
	cr_assert_eq(fd_test_http(ts.port, "OPTIONS", "/nope",
				  "Origin: https://app.example\r\nAccess-Control-Request-Method: GET\r\n", NULL, 0, &r),
		     0);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(cors, preflight_disallowed_origin)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_cors);
	struct fd_test_resp r;
	char h[256];
	cr_assert_eq(fd_test_http(ts.port, "OPTIONS", "/streams/s-1/events",
				  "Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n", NULL, 0, &r),
		     0);
	fd_test_assert_problem(&r, 403, "cors-origin-not-allowed");
	cr_assert_null(fd_test_header(&r, "Access-Control-Allow-Origin", h, sizeof h));
	cr_assert_null(fd_test_header(&r, "Access-Control-Allow-Methods", h, sizeof h));
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(cors, responses_expose_headers_to_allowed_origins_only)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_cors);
	struct fd_test_resp r;
	char h[256], hdrs[512]; /* an Origin line plus all 256 bytes auth() may return */
	snprintf(hdrs, sizeof hdrs, "Origin: http://localhost:3000\r\n%s", auth(WRITE_KEY));
	cr_assert_eq(fd_test_http(ts.port, "POST", "/streams/c-1/events", hdrs, APPEND, strlen(APPEND), &r), 0);
	cr_assert_eq(r.status, 201, "%s", r.body);
	cr_assert_str_eq(fd_test_header(&r, "Access-Control-Allow-Origin", h, sizeof h), "http://localhost:3000");
	cr_assert(fd_test_header(&r, "Access-Control-Expose-Headers", h, sizeof h));
	static const char *const want[] = { "ETag", "Location", "X-Request-Id", "Retry-After" };
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
		cr_assert(strstr(h, want[i]), "Expose-Headers %s lacks %s", h, want[i]);
	fd_test_resp_free(&r);

	/* A 401 is readable by the allowed frontend too. */
	cr_assert_eq(fd_test_http(ts.port, "GET", "/events", "Origin: http://localhost:3000\r\n", NULL, 0, &r), 0);
	fd_test_assert_problem(&r, 401, "unauthorized");
	cr_assert(fd_test_header(&r, "Access-Control-Allow-Origin", h, sizeof h));
	fd_test_resp_free(&r);

	snprintf(hdrs, sizeof hdrs, "Origin: https://evil.example\r\n%s", auth(READ_KEY));
	cr_assert_eq(fd_test_http(ts.port, "GET", "/events", hdrs, NULL, 0, &r), 0);
	cr_assert_eq(r.status, 200);
	cr_assert_null(fd_test_header(&r, "Access-Control-Allow-Origin", h, sizeof h));
	cr_assert_null(fd_test_header(&r, "Access-Control-Expose-Headers", h, sizeof h));
	cr_assert(fd_test_header(&r, "Vary", h, sizeof h) && strstr(h, "Origin"));
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(cors, off_by_default)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	char h[256];
	cr_assert_eq(fd_test_http(ts.port, "GET", "/events", "Origin: https://app.example\r\n", NULL, 0, &r), 0);
	cr_assert_eq(r.status, 200);
	cr_assert_null(fd_test_header(&r, "Access-Control-Allow-Origin", h, sizeof h));
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_http(ts.port, "OPTIONS", "/events",
				  "Origin: https://app.example\r\nAccess-Control-Request-Method: GET\r\n", NULL, 0, &r),
		     0);
	fd_test_assert_problem(&r, 403, "cors-origin-not-allowed");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/* ---- limits --------------------------------------------------------------------- */

/* An append whose data nests `depth` levels below the envelope (which itself has 4). */
static char *nested_append(unsigned depth)
{
	size_t cap = 64 + 2 * (size_t)depth + 64;
	char *b = malloc(cap);
	int n = snprintf(b, cap, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"Deep\",\"data\":{\"x\":");
	for (unsigned i = 0; i < depth; i++)
		b[n++] = '[';
	if (!depth)
		b[n++] = '0';
	for (unsigned i = 0; i < depth; i++)
		b[n++] = ']';
	snprintf(b + n, cap - (size_t)n, "}}]}");
	return b;
}

Test(limits, json_depth)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL); /* FACTD_MAX_JSON_DEPTH 128 */
	struct fd_test_resp r;
	char *ok = nested_append(124), *deep = nested_append(125), *huge = nested_append(100000);
	cr_assert_eq(call(&ts, "POST", "/streams/d-1/events", NULL, ok, &r), 201, "128 levels: %s", r.body);
	fd_test_resp_free(&r);
	call(&ts, "POST", "/streams/d-1/events", NULL, deep, &r);
	fd_test_assert_problem(&r, 400, "json-too-deep");
	fd_test_resp_free(&r);
	call(&ts, "POST", "/streams/d-1/events", NULL, huge, &r);
	fd_test_assert_problem(&r, 400, "json-too-deep");
	fd_test_resp_free(&r);
	/* Commands too. */
	char cmd[400];
	int n = snprintf(cmd, sizeof cmd, "{\"customer_id\":");
	for (int i = 0; i < 130; i++)
		cmd[n++] = '[';
	for (int i = 0; i < 130; i++)
		cmd[n++] = ']';
	snprintf(cmd + n, sizeof cmd - (size_t)n, "}");
	call(&ts, "POST", "/orders", NULL, cmd, &r);
	fd_test_assert_problem(&r, 400, "json-too-deep");
	fd_test_resp_free(&r);
	free(ok);
	free(deep);
	free(huge);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM events"), 1);
	fd_test_server_stop(&ts);
}

static void shallow(struct fd_config *cfg)
{
	cfg->max_json_depth = 4;
}

Test(limits, json_depth_configured)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, shallow);
	struct fd_test_resp r;
	char *ok = nested_append(0), *deep = nested_append(1);
	cr_assert_eq(call(&ts, "POST", "/streams/d-1/events", NULL, ok, &r), 201, "%s", r.body);
	fd_test_resp_free(&r);
	call(&ts, "POST", "/streams/d-1/events", NULL, deep, &r);
	fd_test_assert_problem(&r, 400, "json-too-deep");
	cr_assert(strstr(fd_test_json_str(&r, "detail"), "at most 4 levels"), "%s", r.body);
	fd_test_resp_free(&r);
	free(ok);
	free(deep);
	fd_test_server_stop(&ts);
}

static void small_limits(struct fd_config *cfg)
{
	cfg->max_body = 2048;
	cfg->max_append_events = 2;
	cfg->max_read_limit = 5;
}

Test(limits, body_events_and_read_limit)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, small_limits);
	struct fd_test_resp r;
	/* Over the body limit, announced by Content-Length and sent chunked. */
	char *big = malloc(4096);
	memset(big, ' ', 4095);
	big[0] = '{';
	big[4094] = '}';
	big[4095] = '\0';
	call(&ts, "POST", "/streams/l-1/events", NULL, big, &r);
	fd_test_assert_problem(&r, 413, "body-too-large");
	fd_test_resp_free(&r);
	char raw[8192];
	int n = snprintf(raw, sizeof raw,
			 "POST /streams/l-1/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
			 "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n",
			 (unsigned)strlen(big), big);
	cr_assert_eq(fd_test_http_raw(ts.port, raw, (size_t)n, &r), 0);
	fd_test_assert_problem(&r, 413, "body-too-large");
	fd_test_resp_free(&r);
	free(big);
	/* More events than allowed. */
	const char *three = "{\"expected_version\":\"any\",\"events\":[{\"type\":\"A\",\"data\":{}},"
			    "{\"type\":\"B\",\"data\":{}},{\"type\":\"C\",\"data\":{}}]}";
	call(&ts, "POST", "/streams/l-1/events", NULL, three, &r);
	fd_test_assert_problem(&r, 413, "too-many-events");
	fd_test_resp_free(&r);
	/* A read limit past the cap. */
	call(&ts, "GET", "/events?limit=6", NULL, NULL, &r);
	fd_test_assert_problem(&r, 400, NULL);
	fd_test_resp_free(&r);
	cr_assert_eq(call(&ts, "GET", "/events?limit=5", NULL, NULL, &r), 200);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM events"), 0);
	fd_test_server_stop(&ts);
}

Test(limits, lengths)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	char path[512], stream[300];
	memset(stream, 's', 201);
	stream[201] = '\0';
	snprintf(path, sizeof path, "/streams/%s/events", stream);
	call(&ts, "POST", path, NULL, APPEND, &r);
	fd_test_assert_problem(&r, 400, NULL);
	fd_test_resp_free(&r);

	char hdr[400] = "Idempotency-Key: ";
	memset(hdr + strlen(hdr), 'k', 256);
	strcat(hdr, "\r\n");
	const char *body = "{\"customer_id\":\"c-1\"}";
	cr_assert_eq(fd_test_http(ts.port, "POST", "/orders", hdr, body, strlen(body), &r), 0);
	fd_test_assert_problem(&r, 400, NULL);
	fd_test_resp_free(&r);

	/* Headers beyond 16 KiB: factd's 431, server alive. */
	size_t big = 24 * 1024;
	char *h = malloc(big + 32);
	strcpy(h, "X-Filler: ");
	memset(h + 10, 'x', big);
	strcpy(h + 10 + big, "\r\n");
	cr_assert_eq(fd_test_http(ts.port, "GET", "/healthz", h, NULL, 0, &r), 0);
	fd_test_assert_problem(&r, 431, "headers-too-large");
	fd_test_resp_free(&r);
	free(h);
	cr_assert_eq(call(&ts, "GET", "/healthz", NULL, NULL, &r), 200);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

static int connect_raw(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
	return fd;
}

/* Seconds until the server closes fd (reading and discarding), at most `limit`. */
static double seconds_until_closed(int fd, double limit)
{
	double t0 = fd_test_now_s();
	char buf[4096];
	while (fd_test_now_s() - t0 < limit) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 200) > 0) {
			ssize_t n = recv(fd, buf, sizeof buf, 0);
			if (n <= 0)
				return fd_test_now_s() - t0;
		}
	}
	return limit;
}

static void short_timeout(struct fd_config *cfg)
{
	cfg->request_timeout_s = 1;
}

Test(limits, slow_clients_are_dropped, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, short_timeout);
	/* Half a request line and headers, then silence. */
	int a = connect_raw(ts.port);
	const char *half = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
	cr_assert_eq(send(a, half, strlen(half), 0), (ssize_t)strlen(half));
	/* Whole headers, half the body, then silence. */
	int b = connect_raw(ts.port);
	const char *part = "POST /streams/slow-1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
			   "Content-Length: 200\r\n\r\n{\"events\":[";
	cr_assert_eq(send(b, part, strlen(part), 0), (ssize_t)strlen(part));
	/* Connected, never a byte. */
	int c = connect_raw(ts.port);
	double ta = seconds_until_closed(a, 10), tb = seconds_until_closed(b, 10), tc = seconds_until_closed(c, 10);
	cr_assert_lt(ta, 5, "half headers held the connection %.1f s", ta);
	cr_assert_lt(tb, 5, "half a body held the connection %.1f s", tb);
	cr_assert_lt(tc, 5, "a silent connection was held %.1f s", tc);
	close(a);
	close(b);
	close(c);
	struct fd_test_resp r;
	cr_assert_eq(call(&ts, "GET", "/healthz", NULL, NULL, &r), 200);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM events"), 0);
	double t0 = fd_test_now_s();
	fd_test_server_stop(&ts);
	cr_assert_lt(fd_test_now_s() - t0, 3, "stop waited on a dropped request");
}

Test(limits, trickled_body_is_cut_off, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, short_timeout);
	int fd = connect_raw(ts.port);
	const char *head = "POST /streams/trickle-1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
			   "Content-Length: 200\r\n\r\n";
	cr_assert_eq(send(fd, head, strlen(head), 0), (ssize_t)strlen(head));
	/* A byte every 300 ms: never silent for the 1 s timeout, but the body is overdue after it. */
	double t0 = fd_test_now_s(), closed = 0;
	for (int i = 0; i < 40 && !closed; i++) {
		struct timespec pause = { .tv_nsec = 300 * 1000000L };
		nanosleep(&pause, NULL);
		char buf[256];
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (send(fd, " ", 1, MSG_NOSIGNAL) != 1 || (poll(&p, 1, 0) > 0 && recv(fd, buf, sizeof buf, 0) <= 0))
			closed = fd_test_now_s() - t0;
	}
	close(fd);
	cr_assert_gt(closed, 0, "a trickling client held its request for 12 s");
	cr_assert_lt(closed, 5, "cut off only after %.1f s", closed);
	struct fd_test_resp r;
	cr_assert_eq(call(&ts, "GET", "/healthz", NULL, NULL, &r), 200);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM events"), 0);
	fd_test_server_stop(&ts);
}

static void two_connections(struct fd_config *cfg)
{
	cfg->max_connections = 2;
}

Test(limits, connection_cap_answers_503, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, two_connections);
	int a = connect_raw(ts.port), b = connect_raw(ts.port);
	struct timespec settle = { .tv_nsec = 200 * 1000000L };
	nanosleep(&settle, NULL);
	struct fd_test_resp r;
	char h[64];
	cr_assert_eq(fd_test_get(ts.port, "/healthz", &r), 0);
	fd_test_assert_problem(&r, 503, "too-many-connections");
	cr_assert(fd_test_header(&r, "Retry-After", h, sizeof h), "no Retry-After");
	cr_assert_gt(atoi(h), 0);
	fd_test_resp_free(&r);
	/* The held connections still work. */
	const char *req = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	cr_assert_eq(send(a, req, strlen(req), 0), (ssize_t)strlen(req));
	char buf[512] = "";
	ssize_t n = recv(a, buf, sizeof buf - 1, 0);
	cr_assert_gt(n, 12);
	cr_assert(strncmp(buf, "HTTP/1.1 200", 12) == 0, "%s", buf);
	close(a);
	close(b);
	nanosleep(&settle, NULL);
	/* Freed: served again. */
	cr_assert_eq(fd_test_get(ts.port, "/healthz", &r), 0);
	cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}
