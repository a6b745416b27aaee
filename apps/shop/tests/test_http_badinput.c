/*
 * test_http_badinput.c - hostile input over real HTTP, driven by the route
 * table the shop serves (the framework's routes, then the shop's), so a route added later is covered or makes this
 * suite fail until it is:
 *
 *   - every body-parsing route gets malformed, truncated, NUL-holding,
 *     invalid-UTF-8, deeply nested, duplicate-key and empty bodies, and each
 *     field of a valid body replaced by wrong types, huge, negative and
 *     fractional numbers, SQL and over-long strings, plus unknown fields;
 *   - every path parameter of every route, every query parameter a route
 *     reads and the command headers get SQL-injection strings;
 *   - every route pattern gets the methods it does not have (405 + Allow),
 *     and every JSON route other content types (415).
 *
 * Each must answer its 4xx application/problem+json; after each batch the
 * server must still answer /healthz and the row count of every table of the
 * database's public schema (listed at test time from information_schema)
 * must be what it was.  Where an injection string is a legal value (a
 * customer id, a reason, an event type) the last test shows it is stored
 * and read back as plain data.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/api.h"
#include "http/problem.h"
#include "factd/router.h"
#include "http_client.h"
#define FD_TEST_APP (&shop_app) /* the shop's routes and types */
#include "shop.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

#define ORDER "0190f0a4-1b2c-7d3e-8f40-000000000001"
#define PAYMENT "0190f0a4-1b2c-7d3e-8f40-000000000002"
#define MISSING_UUID "0190f0a4-1b2c-7d3e-8f40-0000000000ff"
#define EVENT_ID "0190f0a4-1b2c-7d3e-8f40-000000000003"

static const char *const injections[] = {
	"'; DROP TABLE events; --",
	"1 OR 1=1",
	"1' OR '1'='1",
	"\" OR \"\"=\"",
	"x'); DELETE FROM streams; --",
};
#define NINJ (sizeof injections / sizeof injections[0])

/* ---- helpers ------------------------------------------------------------------ */

/* Percent-encode everything but unreserved characters (caller frees). */
static char *urlenc(const char *s)
{
	char *out = malloc(3 * strlen(s) + 1), *o = out;
	cr_assert(out);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("-._~", c))
			*o++ = (char)c;
		else
			o += sprintf(o, "%%%02X", c);
	}
	*o = '\0';
	return out;
}

/* ---- every table's rows ----------------------------------------------------- */

#define MAX_TABLES 64
struct rows {
	size_t n;
	char name[MAX_TABLES][160];
	long long count[MAX_TABLES];
};

static void rows_now(const struct fd_test_server *ts, struct rows *out)
{
	PGconn *c = fd_test_connect(ts->db_url);
	PGresult *r = PQexec(c, "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) "
				"FROM information_schema.tables WHERE table_schema = 'public' "
				"AND table_type = 'BASE TABLE' ORDER BY 1");
	cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
	out->n = (size_t)PQntuples(r);
	cr_assert(out->n > 0 && out->n <= MAX_TABLES, "%zu tables", out->n);
	for (size_t i = 0; i < out->n; i++) {
		snprintf(out->name[i], sizeof out->name[i], "%s", PQgetvalue(r, (int)i, 0));
		char *sql = fd_test_fmt("SELECT count(*) FROM %s", out->name[i]);
		out->count[i] = fd_test_scalar(c, sql);
		free(sql);
	}
	PQclear(r);
	PQfinish(c);
}

/* Nothing written since `before`, no table gone, and the server still answers. */
static void assert_unchanged(const struct fd_test_server *ts, const struct rows *before, const char *batch)
{
	struct fd_test_resp h;
	cr_assert_eq(fd_test_get(ts->port, "/healthz", &h), 0, "%s: the server stopped answering", batch);
	cr_assert_eq(h.status, 200, "%s: /healthz answered %d", batch, h.status);
	fd_test_resp_free(&h);
	struct rows now;
	rows_now(ts, &now);
	cr_assert_eq(now.n, before->n, "%s: %zu tables, %zu before", batch, now.n, before->n);
	for (size_t i = 0; i < now.n; i++) {
		cr_assert_str_eq(now.name[i], before->name[i], "%s: tables differ", batch);
		cr_assert_eq(now.count[i], before->count[i], "%s: %s has %lld rows, %lld before", batch, now.name[i],
			     now.count[i], before->count[i]);
	}
}

/* ---- the server and its data ---------------------------------------------- */

static void must(const struct fd_test_server *ts, const char *method, const char *path, const char *body, int status,
		 char *position, size_t position_len)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts->port, method, path, NULL, body, body ? strlen(body) : 0, &r), 0);
	cr_assert_eq(r.status, status, "%s %s: %d %s", method, path, r.status, r.body);
	const char *pos = fd_test_json_str(&r, "position");
	if (position && pos)
		snprintf(position, position_len, "%s", pos);
	fd_test_resp_free(&r);
}

/*
 * A server whose database holds a product, a draft order with a line, a
 * requested payment and a plain stream, with both read models caught up (so
 * the projections write nothing more while the batches run).
 */
static void start(struct fd_test_server *ts, struct rows *before)
{
	char pos[64] = "";
	fd_test_server_start(ts, NULL);
	must(ts, "POST", "/products", "{\"product_id\":\"sku-1\",\"name\":\"Widget\",\"stock\":10}", 201, NULL, 0);
	must(ts, "POST", "/orders", "{\"order_id\":\"" ORDER "\",\"customer_id\":\"c-1\"}", 201, NULL, 0);
	must(ts, "POST", "/orders/" ORDER "/lines", "{\"product_id\":\"sku-1\",\"quantity\":2,\"unit_price_cents\":1250}",
	     200, NULL, 0);
	must(ts, "POST", "/payments", "{\"payment_id\":\"" PAYMENT "\",\"order_id\":\"" ORDER "\",\"amount_cents\":2500}",
	     201, NULL, 0);
	must(ts, "POST", "/streams/seed-1/events", "{\"expected_version\":0,\"events\":[{\"type\":\"Seeded\",\"data\":{}}]}",
	     201, pos, sizeof pos);
	char *orders = fd_test_fmt("/orders?min_position=%s", pos), *products = fd_test_fmt("/products?min_position=%s", pos);
	must(ts, "GET", orders, NULL, 200, NULL, 0);
	must(ts, "GET", products, NULL, 200, NULL, 0);
	/* a consumer group and a webhook of a category nobody writes, so that neither writes while batches run */
	must(ts, "PUT", "/subscriptions/g-1", "{\"start\":\"beginning\",\"categories\":[\"nocat\"]}", 201, NULL, 0);
	must(ts, "PUT", "/webhooks/w-1",
	     "{\"url\":\"https://receiver.invalid/hook\",\"secret\":\"0123456789abcdef\",\"categories\":[\"nocat\"]}", 201,
	     NULL, 0);
	free(orders);
	free(products);
	rows_now(ts, before);
}

/* ---- the route table, as data ------------------------------------------------ */

/* A path for `route` with each {param} filled: existing resources, or missing ones, or `inject` at index `at`. */
static char *route_path(const struct fd_route *route, bool existing, int at, const char *inject)
{
	char out[4096] = "";
	const char *p = route->pattern;
	int idx = 0;
	while (*p) {
		if (*p != '{') {
			strncat(out, p, 1);
			p++;
			continue;
		}
		const char *close = strchr(p, '}');
		cr_assert(close);
		char name[32];
		snprintf(name, sizeof name, "%.*s", (int)(close - p - 1), p + 1);
		const char *v;
		if (idx == at) {
			v = inject;
		} else if (strcmp(name, "stream") == 0) {
			v = existing ? "seed-1" : "missing-1";
		} else if (strcmp(name, "product_id") == 0) {
			v = "sku-1";
		} else if (strcmp(name, "name") == 0 && strncmp(route->pattern, "/subscriptions/", 15) == 0) {
			v = existing ? "g-1" : "no-such-group";
		} else if (strcmp(name, "name") == 0 && strncmp(route->pattern, "/webhooks/", 10) == 0) {
			v = existing ? "w-1" : "no-such-webhook";
		} else if (strcmp(name, "name") == 0) {
			v = existing ? "order_summaries" : "no_such_projection";
		} else if (strcmp(name, "id") == 0 && strncmp(route->pattern, "/orders/", 8) == 0) {
			v = existing ? ORDER : MISSING_UUID;
		} else if (strcmp(name, "id") == 0 && strncmp(route->pattern, "/products/", 10) == 0) {
			v = existing ? "sku-1" : "no-such-sku";
		} else if (strcmp(name, "id") == 0 && strncmp(route->pattern, "/payments/", 10) == 0) {
			v = existing ? PAYMENT : MISSING_UUID;
		} else if (strcmp(name, "subject") == 0) {
			v = existing ? "cust-1" : "cust-unknown";
		} else if (strcmp(name, "asset") == 0) {
			v = existing ? "index.html" : "no-such-file.js";
		} else if (strcmp(name, "category") == 0) {
			v = existing ? "seed" : "nothing";
		} else if (strcmp(name, "id") == 0 && strncmp(route->pattern, "/sagas/", 7) == 0) {
			v = MISSING_UUID; /* this server runs no sagas: none exists */
		} else {
			cr_assert_fail("route %s: no test value for {%s}; add one here", route->pattern, name);
		}
		char *enc = idx == at ? urlenc(v) : strdup(v);
		strncat(out, enc, sizeof out - strlen(out) - 1);
		free(enc);
		idx++;
		p = close + 1;
	}
	return strdup(out);
}

static size_t route_nparams(const struct fd_route *route)
{
	size_t n = 0;
	for (const char *p = route->pattern; *p; p++)
		n += *p == '{';
	return n;
}

static bool parses_body(const struct fd_route *route)
{
	return route->handler == fd_api_command || route->handler == shop_api_refund_payment || route->handler == fd_api_append ||
	       route->handler == fd_api_truncate_stream || route->handler == fd_api_put_retention ||

	       route->handler == fd_api_put_group || route->handler == fd_api_group_ack ||
	       route->handler == fd_api_group_nack || route->handler == fd_api_group_replay ||
	       route->handler == fd_api_put_webhook;
}

/* Field kinds of a command body, and values that are wrong for each. */
enum kind { K_INT, K_SKU, K_UUID, K_TEXT, K_OBJECT, K_EVENTS, K_EXPECTED };

struct field {
	const char *name;
	enum kind kind;
	size_t max_chars;   /* K_TEXT */
	bool in_event;      /* a member of events[0] (append) */
};

struct body_template {
	const char *method, *pattern;
	const char *valid;  /* a body the route would accept (on the existing resources; a fresh id for creates) */
	struct field fields[5];
};

static const struct body_template templates[] = {
	{ "POST", "/streams/{stream}/events",
	  "{\"expected_version\":1,\"events\":[{\"type\":\"T\",\"data\":{},\"metadata\":{},\"event_id\":\"" EVENT_ID "\"}]}",
	  { { .name = "expected_version", .kind = K_EXPECTED }, { .name = "events", .kind = K_EVENTS }, { .name = "type", .kind = K_TEXT, .max_chars = 200, .in_event = true },
	    { .name = "data", .kind = K_OBJECT, .in_event = true }, { .name = "event_id", .kind = K_UUID, .in_event = true } } },
	{ "POST", "/orders", "{\"order_id\":\"" MISSING_UUID "\",\"customer_id\":\"c-2\"}",
	  { { .name = "order_id", .kind = K_UUID }, { .name = "customer_id", .kind = K_TEXT, .max_chars = 128 } } },
	{ "POST", "/orders/{id}/lines", "{\"product_id\":\"sku-2\",\"quantity\":1,\"unit_price_cents\":100}",
	  { { .name = "product_id", .kind = K_SKU }, { .name = "quantity", .kind = K_INT }, { .name = "unit_price_cents", .kind = K_INT } } },
	{ "DELETE", "/orders/{id}/lines/{product_id}", "{}", { { .name = NULL } } },
	{ "POST", "/orders/{id}/place", "{}", { { .name = NULL } } },
	{ "POST", "/orders/{id}/cancel", "{\"reason\":\"r\"}", { { .name = "reason", .kind = K_TEXT, .max_chars = 500 } } },
	{ "POST", "/orders/{id}/ship", "{}", { { .name = NULL } } },
	{ "POST", "/products", "{\"product_id\":\"sku-3\",\"name\":\"Gadget\",\"stock\":1}",
	  { { .name = "product_id", .kind = K_SKU }, { .name = "name", .kind = K_TEXT, .max_chars = 200 }, { .name = "stock", .kind = K_INT } } },
	{ "POST", "/products/{id}/restock", "{\"quantity\":1}", { { .name = "quantity", .kind = K_INT } } },
	{ "POST", "/payments", "{\"payment_id\":\"" MISSING_UUID "\",\"order_id\":\"" ORDER "\",\"amount_cents\":1}",
	  { { .name = "payment_id", .kind = K_UUID }, { .name = "order_id", .kind = K_UUID }, { .name = "amount_cents", .kind = K_INT } } },
	{ "POST", "/payments/{id}/refund", "{\"amount_cents\":1}", { { .name = "amount_cents", .kind = K_INT } } },
	{ "POST", "/streams/{stream}/truncate", "{\"before_version\":1}", { { .name = "before_version", .kind = K_INT } } },
	{ "PUT", "/retention/{category}", "{\"max_age_days\":1}", { { .name = "max_age_days", .kind = K_INT } } },
	/* consumer groups and webhooks (their lists of names take K_OBJECT's wrong values: none is a list) */
	{ "PUT", "/subscriptions/{name}",
	  "{\"start\":\"beginning\",\"categories\":[\"nocat\"],\"ack_timeout_ms\":1000,\"max_deliveries\":2,\"ordering\":\"none\"}",
	  { { .name = "start", .kind = K_TEXT, .max_chars = 48 }, { .name = "categories", .kind = K_OBJECT },
	    { .name = "ack_timeout_ms", .kind = K_INT }, { .name = "max_deliveries", .kind = K_INT },
	    { .name = "ordering", .kind = K_TEXT, .max_chars = 6 } } },
	{ "POST", "/subscriptions/{name}/ack", "{\"delivery_ids\":[\"" MISSING_UUID "\"]}",
	  { { .name = "delivery_ids", .kind = K_EVENTS } } },
	{ "POST", "/subscriptions/{name}/nack", "{\"delivery_ids\":[\"" MISSING_UUID "\"],\"action\":\"retry\",\"delay_ms\":10}",
	  { { .name = "delivery_ids", .kind = K_EVENTS }, { .name = "action", .kind = K_TEXT, .max_chars = 5 },
	    { .name = "delay_ms", .kind = K_INT } } },
	{ "POST", "/subscriptions/{name}/parked/replay", "{\"delivery_ids\":[\"" MISSING_UUID "\"]}",
	  { { .name = "delivery_ids", .kind = K_EVENTS } } },
	{ "PUT", "/webhooks/{name}",
	  "{\"url\":\"https://receiver.invalid/hook\",\"secret\":\"0123456789abcdef\",\"categories\":[\"nocat\"],"
	  "\"max_attempts\":3,\"timeout_ms\":1000}",
	  { { .name = "url", .kind = K_TEXT, .max_chars = 2048 }, { .name = "secret", .kind = K_TEXT, .max_chars = 256 },
	    { .name = "categories", .kind = K_OBJECT }, { .name = "max_attempts", .kind = K_INT },
	    { .name = "timeout_ms", .kind = K_INT } } },
};

static const struct body_template *template_for(const struct fd_route *route)
{
	for (size_t i = 0; i < sizeof templates / sizeof templates[0]; i++)
		if (strcmp(templates[i].method, route->method) == 0 && strcmp(templates[i].pattern, route->pattern) == 0)
			return &templates[i];
	return NULL;
}

/* Wrong values (JSON text) for each kind; NULL-terminated. */
static const char *const bad_int[] = { "1.5", "-1", "9223372036854775808", "-9223372036854775809", "1e400",
				       "1e3", "\"1\"", "true", "null", "[]", "{}", "\"'; DROP TABLE events; --\"",
				       "\"1 OR 1=1\"", NULL };
static const char *const bad_id[] = { "\"'; DROP TABLE events; --\"", "\"1 OR 1=1\"", "\"\"", "1", "true", "null",
				      "[]", "{}", "\"a\\u0000b\"", "\"\\u00e9\"", NULL };
static const char *const bad_text[] = { "\"\"", "1", "1.5", "true", "null", "[]", "{}", "\"a\\u0000b\"", NULL };
static const char *const bad_object[] = { "[]", "1", "\"'; DROP TABLE events; --\"", "null", "true", NULL };
static const char *const bad_events[] = { "[]", "{}", "[1]", "[[]]", "\"'; DROP TABLE events; --\"", "null", NULL };
static const char *const bad_expected[] = { "-1", "-0", "1.5", "1e2", "9223372036854775808", "1e400", "\"1\"",
					    "\"'; DROP TABLE events; --\"", "\"1 OR 1=1\"", "null", "true", "[]",
					    NULL };

/* The template's body with `field` set to the JSON text `value` (caller frees). */
static char *with_field(const struct body_template *t, const struct field *f, const char *value)
{
	json_t *doc = json_loads(t->valid, 0, NULL);
	cr_assert(doc, "template of %s does not parse", t->pattern);
	json_t *target = f->in_event ? json_array_get(json_object_get(doc, "events"), 0) : doc;
	json_object_set_new(target, f->name, json_string("@@VALUE@@"));
	char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(doc);
	char *at = strstr(text, "\"@@VALUE@@\"");
	cr_assert(at);
	*at = '\0';
	char *out = fd_test_fmt("%s%s%s", text, value, at + strlen("\"@@VALUE@@\""));
	free(text);
	return out;
}

/* ---- one request ------------------------------------------------------------ */

/*
 * Send and expect a problem with `status` (any 4xx when 0) and, when not
 * NULL, one of the slugs in `slugs` ("a|b").
 */
static void expect_problem(const struct fd_test_server *ts, const char *method, const char *path,
			   const char *headers, const char *body, size_t len, int status, const char *slugs)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts->port, method, path, headers, body, len, &r), 0, "%s %s: no connection", method,
		     path);
	cr_assert(r.status >= 400 && r.status < 500, "%s %s [%.*s]: status %d, body %s", method, path,
		  (int)(len > 200 ? 200 : len), body ? body : "", r.status, r.body);
	if (status)
		cr_assert_eq(r.status, status, "%s %s [%.*s]: status %d, expected %d; body %s", method, path,
			     (int)(len > 200 ? 200 : len), body ? body : "", r.status, status, r.body);
	fd_test_assert_problem(&r, r.status, NULL);
	if (slugs) {
		const char *type = fd_test_json_str(&r, "type");
		const char *slug = type + strlen(FD_PROBLEM_BASE);
		char want[160];
		snprintf(want, sizeof want, "|%s|", slugs);
		char got[160];
		snprintf(got, sizeof got, "|%s|", slug);
		cr_assert(strstr(want, got), "%s %s [%.*s]: type %s, expected %s", method, path,
			  (int)(len > 200 ? 200 : len), body ? body : "", slug, slugs);
	}
	fd_test_resp_free(&r);
}

/* ---- bodies ------------------------------------------------------------------ */

struct raw_body {
	const char *name;
	const char *body;
	size_t len;         /* 0: strlen */
	int status;
	const char *slugs;
};

#define RAW(name, lit, status, slugs) { name, lit, sizeof(lit) - 1, status, slugs }

static const struct raw_body malformed[] = {
	RAW("truncated object", "{\"customer_id\":\"c-1\"", 400, "invalid-json"),
	RAW("truncated string", "{\"customer_id\":\"c-", 400, "invalid-json"),
	RAW("trailing comma", "{\"a\":1,}", 400, "invalid-json"),
	RAW("open bracket", "[", 400, "invalid-json"),
	RAW("garbage", "not json at all", 400, "invalid-json"),
	RAW("two documents", "{} {}", 400, "invalid-json"),
	RAW("top-level string", "\"x\"", 400, "invalid-json"),
	RAW("top-level number", "1", 400, "invalid-json"),
	RAW("array", "[1,2]", 400, "invalid-field|invalid-json"),
	RAW("duplicate keys", "{\"a\":1,\"a\":2}", 400, "invalid-json"),
	RAW("escaped duplicate keys", "{\"a\":1,\"\\u0061\":2}", 400, "invalid-json"),
	RAW("1e400", "{\"x\":1e400}", 400, "invalid-json"),
	RAW("escaped NUL in a string", "{\"x\":\"a\\u0000b\"}", 400, "invalid-json"),
	RAW("escaped NUL in a key", "{\"a\\u0000b\":1}", 400, "invalid-json"),
	RAW("raw NUL in a string", "{\"x\":\"a\0b\"}", 400, "invalid-json"),
	RAW("raw NUL after a number", "{\"x\":1\0}", 400, "invalid-json"),
	RAW("raw NUL after a literal", "{\"x\":true\0,\"y\":1}", 400, "invalid-json"),
	RAW("raw NUL first", "\0{}", 400, "invalid-json"),
	RAW("invalid UTF-8", "{\"x\":\"\xff\xfe\"}", 400, "invalid-json"),
	RAW("overlong UTF-8", "{\"x\":\"\xc0\xaf\"}", 400, "invalid-json"),
	RAW("UTF-8 surrogate", "{\"x\":\"\xed\xa0\x80\"}", 400, "invalid-json"),
	RAW("lone escaped surrogate", "{\"x\":\"\\ud800\"}", 400, "invalid-json"),
	RAW("UTF-16 BOM", "\xfe\xff{}", 400, "invalid-json"),
	RAW("unknown field", "{\"no_such_field\":1}", 400, "invalid-field"),
};

static char *deep(char open, char close, size_t n, bool closed)
{
	char *s = malloc(2 * n + 1);
	cr_assert(s);
	memset(s, open, n);
	if (closed)
		memset(s + n, close, n);
	s[closed ? 2 * n : n] = '\0';
	return s;
}

/* Every malformed body to every route that parses one, on existing and on missing resources. */
Test(badinput, malformed_bodies_on_every_route, .timeout = 600)
{
	struct fd_test_server ts;
	struct rows before;
	start(&ts, &before);
	char *nests[] = { deep('[', ']', 10000, false), deep('[', ']', 10000, true), deep('{', '}', 1, true), NULL };
	/* {"a":{"a":...}} 5000 deep */
	struct fd_buf objs = FD_BUF_INIT;
	for (int i = 0; i < 5000; i++)
		cr_assert_eq(fd_buf_append(&objs, "{\"a\":", 5), FD_OK);
	cr_assert_eq(fd_buf_append(&objs, "1", 1), FD_OK);
	for (int i = 0; i < 5000; i++)
		cr_assert_eq(fd_buf_append(&objs, "}", 1), FD_OK);
	cr_assert_eq(fd_buf_append(&objs, "", 1), FD_OK);
	free(nests[2]);
	nests[2] = fd_buf_detach(&objs);
	size_t covered = 0;
	for (size_t i = 0; i < ts.ctx.nroutes; i++) {
		const struct fd_route *route = &ts.ctx.routes[i];
		if (!parses_body(route))
			continue;
		covered++;
		for (int existing = 0; existing < 2; existing++) {
			char *path = route_path(route, existing, -1, NULL);
			for (size_t k = 0; k < sizeof malformed / sizeof malformed[0]; k++) {
				const struct raw_body *m = &malformed[k];
				/* on a missing aggregate, a well-formed body is answered 404 before its fields are read */
				bool any = !existing && strcmp(m->name, "unknown field") == 0;
				expect_problem(&ts, route->method, path, NULL, m->body, m->len, any ? 0 : m->status,
					       any ? NULL : m->slugs);
			}
			for (size_t k = 0; nests[k]; k++)
				expect_problem(&ts, route->method, path, NULL, nests[k], strlen(nests[k]), 400,
					       "json-too-deep"); /* past FACTD_MAX_JSON_DEPTH, refused before parsing */
			free(path);
		}
		if (route->json_body) {
			/* a JSON route needs its body */
			char *path = route_path(route, true, -1, NULL);
			expect_problem(&ts, route->method, path, "Content-Type: application/json\r\n", "", 0, 400,
				       "invalid-json");
			/* and it must be JSON */
			static const char *const types[] = { "Content-Type: text/plain\r\n",
							     "Content-Type: application/x-www-form-urlencoded\r\n",
							     "Content-Type: application/jsonx\r\n",
							     "Content-Type: multipart/form-data; boundary=x\r\n",
							     "Content-Type: \r\n" };
			const struct body_template *t = template_for(route);
			cr_assert(t);
			for (size_t k = 0; k < sizeof types / sizeof types[0]; k++)
				expect_problem(&ts, route->method, path, types[k], t->valid, strlen(t->valid), 415,
					       "unsupported-media-type");
			free(path);
		} else {
			/* an optional body, when there is one, must be JSON too */
			char *path = route_path(route, true, -1, NULL);
			expect_problem(&ts, route->method, path, "Content-Type: text/plain\r\n", "{}", 2, 415,
				       "unsupported-media-type");
			free(path);
		}
		assert_unchanged(&ts, &before, route->pattern);
	}
	cr_assert_geq(covered, 11, "fewer body routes than expected: %zu", covered);
	for (size_t k = 0; nests[k]; k++)
		free(nests[k]);
	fd_test_server_stop(&ts);
}

/* Each field of each route's valid body replaced by wrong values, and unknown fields added. */
Test(badinput, wrong_fields_on_every_route, .timeout = 600)
{
	struct fd_test_server ts;
	struct rows before;
	start(&ts, &before);
	char long_text[2100];
	for (size_t i = 0; i < ts.ctx.nroutes; i++) {
		const struct fd_route *route = &ts.ctx.routes[i];
		if (!parses_body(route))
			continue;
		const struct body_template *t = template_for(route);
		cr_assert(t, "%s %s parses a body but has no template in this test; add one", route->method,
			  route->pattern);
		char *path = route_path(route, true, -1, NULL);
		for (size_t f = 0; f < 5 && t->fields[f].name; f++) {
			const struct field *fl = &t->fields[f];
			const char *const *bad = fl->kind == K_INT      ? bad_int
						 : fl->kind == K_SKU || fl->kind == K_UUID ? bad_id
						 : fl->kind == K_TEXT     ? bad_text
						 : fl->kind == K_OBJECT   ? bad_object
						 : fl->kind == K_EVENTS   ? bad_events
									  : bad_expected;
			for (size_t k = 0; bad[k]; k++) {
				/* "é" is a fine text, only not an id */
				char *body = with_field(t, fl, bad[k]);
				expect_problem(&ts, route->method, path, NULL, body, strlen(body), 400,
					       "invalid-field|invalid-json");
				free(body);
			}
			if (fl->kind == K_TEXT) {
				snprintf(long_text, sizeof long_text, "\"%0*d\"", (int)fl->max_chars + 1, 0);
				char *body = with_field(t, fl, long_text);
				expect_problem(&ts, route->method, path, NULL, body, strlen(body), 400, "invalid-field");
				free(body);
			}
			if (fl->kind == K_SKU) {
				char *body = with_field(t, fl, "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"");
				expect_problem(&ts, route->method, path, NULL, body, strlen(body), 400, "invalid-field");
				free(body);
			}
		}
		/* unknown fields, at the top and (append) inside an event */
		struct field unknown = { .name = "unknown_field", .kind = K_TEXT };
		char *body = with_field(t, &unknown, "1");
		expect_problem(&ts, route->method, path, NULL, body, strlen(body), 400, "invalid-field");
		free(body);
		if (route->handler == fd_api_append) {
			unknown.in_event = true;
			body = with_field(t, &unknown, "\"'; DROP TABLE events; --\"");
			expect_problem(&ts, route->method, path, NULL, body, strlen(body), 400, "invalid-field");
			free(body);
		}
		free(path);
		assert_unchanged(&ts, &before, route->pattern);
	}
	/* numbers one by one where the range matters */
	static const struct {
		const char *path, *body;
	} ranges[] = {
		{ "/orders/" ORDER "/lines", "{\"product_id\":\"sku-2\",\"quantity\":0,\"unit_price_cents\":1}" },
		{ "/orders/" ORDER "/lines", "{\"product_id\":\"sku-2\",\"quantity\":-0,\"unit_price_cents\":1}" },
		{ "/orders/" ORDER "/lines", "{\"product_id\":\"sku-2\",\"quantity\":1000001,\"unit_price_cents\":1}" },
		{ "/orders/" ORDER "/lines", "{\"product_id\":\"sku-2\",\"quantity\":1,\"unit_price_cents\":100000000001}" },
		{ "/orders/" ORDER "/lines", "{\"product_id\":\"sku-2\",\"quantity\":1,\"unit_price_cents\":1.5}" },
		{ "/orders/" ORDER "/lines", "{\"product_id\":\"sku-2\",\"quantity\":1,\"unit_price_cents\":-1}" },
		{ "/orders/" ORDER "/lines", "{\"product_id\":\"sku-2\",\"quantity\":1,\"unit_price_cents\":1.0}" },
		{ "/products", "{\"product_id\":\"sku-9\",\"name\":\"n\",\"stock\":1000000000001}" },
		{ "/products", "{\"product_id\":\"sku-9\",\"name\":\"n\",\"stock\":-9223372036854775808}" },
		{ "/products/sku-1/restock", "{\"quantity\":0}" },
		{ "/products/sku-1/restock", "{\"quantity\":9223372036854775807}" },
		{ "/payments", "{\"order_id\":\"" ORDER "\",\"amount_cents\":0}" },
		{ "/payments", "{\"order_id\":\"" ORDER "\",\"amount_cents\":-0}" },
		{ "/payments", "{\"order_id\":\"" ORDER "\",\"amount_cents\":0.5}" },
		{ "/payments/" PAYMENT "/refund", "{\"amount_cents\":-1}" },
		{ "/payments/" PAYMENT "/refund", "{\"amount_cents\":1.5}" },
	};
	for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
		expect_problem(&ts, "POST", ranges[i].path, NULL, ranges[i].body, strlen(ranges[i].body), 400,
			       "invalid-field");
	assert_unchanged(&ts, &before, "number ranges");
	fd_test_server_stop(&ts);
}

/* ---- paths, query strings, headers -------------------------------------------- */

/* SQL in every path parameter of every route (and as an extra segment of those without). */
Test(badinput, injection_in_every_path_segment, .timeout = 600)
{
	struct fd_test_server ts;
	struct rows before;
	start(&ts, &before);
	for (size_t i = 0; i < ts.ctx.nroutes; i++) {
		const struct fd_route *route = &ts.ctx.routes[i];
		if (route->handler == fd_api_event_stream)
			continue; /* a stream would stay open; its only segment is literal, covered below */
		size_t np = route_nparams(route);
		const struct body_template *t = template_for(route);
		const char *body = t ? t->valid : NULL;
		for (size_t k = 0; k < NINJ; k++) {
			for (size_t at = 0; at < np; at++) {
				char *path = route_path(route, true, (int)at, injections[k]);
				/* the stream name is checked (400), an id names nothing (404), a line's product id is a payload field (400) */
				expect_problem(&ts, route->method, path, NULL, body, body ? strlen(body) : 0, 0, NULL);
				free(path);
			}
			char *enc = urlenc(injections[k]);
			char *path = fd_test_fmt("%s/%s", route->pattern, enc);
			char *filled = strchr(path, '{') ? NULL : path;
			if (filled) /* 404, or 405 where the longer path is another route's */
				expect_problem(&ts, route->method, filled, NULL, body, body ? strlen(body) : 0, 0, NULL);
			free(path);
			free(enc);
		}
		assert_unchanged(&ts, &before, route->pattern);
	}
	fd_test_server_stop(&ts);
}

/* The query parameters each GET route reads and which of them an injection string is invalid for. */
static const struct {
	const char *pattern;
	const char *params[6];      /* every value in `injections` is invalid for these */
	const char *legal[3];       /* these take any text: covered by injection_strings_are_data */
} queries[] = {
	{ .pattern = "/streams/{stream}/events", .params = { "from_version", "limit", "upcast", "min_position" } },
	{ .pattern = "/events", .params = { "after", "limit", "category", "upcast", "min_position" }, .legal = { "types" } },
	{ .pattern = "/events/stream", .params = { "after", "category", "upcast" }, .legal = { "types" } },
	{ .pattern = "/orders", .params = { "status", "after", "limit", "min_position" }, .legal = { "customer_id" } },
	{ .pattern = "/orders/{id}", .params = { "version", "at", "min_position" } },
	{ .pattern = "/orders/{id}/events", .params = { "from_version", "limit", "upcast", "min_position" } },
	{ .pattern = "/products", .params = { "after", "limit", "min_position" } },
	{ .pattern = "/products/{id}", .params = { "version", "at", "min_position" } },
	{ .pattern = "/products/{id}/events", .params = { "from_version", "limit", "upcast", "min_position" } },
	{ .pattern = "/payments/{id}", .params = { "version", "at", "min_position" } },
	{ .pattern = "/payments/{id}/events", .params = { "from_version", "limit", "upcast", "min_position" } },
	{ .pattern = "/sagas", .params = { "type", "status", "after", "limit" } },
	{ .pattern = "/sagas/{id}" }, { .pattern = "/orders/{id}/saga" },
	{ .pattern = "/streams", .params = { "category", "prefix", "after", "limit", "deleted" } },
	{ .pattern = "/categories", .params = { "after", "limit" } },
	/* no query parameters */
	{ .pattern = "/healthz" }, { .pattern = "/readyz" }, { .pattern = "/metrics" }, { .pattern = "/projections" },
	{ .pattern = "/events/head" }, { .pattern = "/whoami" }, { .pattern = "/app" }, { .pattern = "/console" },
	{ .pattern = "/console/{asset}" },
	{ .pattern = "/schema/events" },
	{ .pattern = "/retention" }, { .pattern = "/retention/{category}" },
	{ .pattern = "/subjects/{subject}" },
	/* consumer groups and webhooks */
	{ .pattern = "/subscriptions" }, { .pattern = "/subscriptions/{name}" },
	{ .pattern = "/subscriptions/{name}/events", .params = { "consumer", "max", "wait_ms" } },
	{ .pattern = "/subscriptions/{name}/parked", .params = { "after", "limit" } },
	{ .pattern = "/webhooks" }, { .pattern = "/webhooks/{name}" },
};

Test(badinput, injection_in_every_query_parameter, .timeout = 600)
{
	struct fd_test_server ts;
	struct rows before;
	start(&ts, &before);
	static const char *const bad_numbers[] = { "-1", "0", "1.5", "1e3", "9223372036854775808", "-0", "", "+1",
						   " 1", "0x10", NULL };
	for (size_t i = 0; i < ts.ctx.nroutes; i++) {
		const struct fd_route *route = &ts.ctx.routes[i];
		if (strcmp(route->method, "GET") != 0)
			continue;
		size_t q = 0;
		while (q < sizeof queries / sizeof queries[0] && strcmp(queries[q].pattern, route->pattern) != 0)
			q++;
		cr_assert(q < sizeof queries / sizeof queries[0], "GET %s: list its query parameters in this test",
			  route->pattern);
		char *base = route_path(route, true, -1, NULL);
		for (size_t p = 0; p < 6 && queries[q].params[p]; p++) {
			const char *name = queries[q].params[p];
			for (size_t k = 0; k < NINJ; k++) {
				char *enc = urlenc(injections[k]);
				char *path = fd_test_fmt("%s?%s=%s", base, name, enc);
				expect_problem(&ts, "GET", path, NULL, NULL, 0, 400, "invalid-parameter");
				free(path);
				free(enc);
			}
			bool numeric = strcmp(name, "limit") == 0 || strcmp(name, "from_version") == 0 ||
				       strcmp(name, "version") == 0;
			for (size_t k = 0; numeric && bad_numbers[k]; k++) {
				char *enc = urlenc(bad_numbers[k]);
				char *path = fd_test_fmt("%s?%s=%s", base, name, enc);
				expect_problem(&ts, "GET", path, NULL, NULL, 0, 400, "invalid-parameter");
				free(path);
				free(enc);
			}
		}
		free(base);
		assert_unchanged(&ts, &before, route->pattern);
	}
	/* more than one value for a parameter, invalid UTF-8 and NUL in values */
	static const char *const odd[] = {
		"/events?after=%27%3B&after=0", "/orders?customer_id=%FF%FE", "/orders?customer_id=",
		"/events?types=%FF", "/events?types=a,,b",
		"/orders/" ORDER "?version=1&at=2026-01-01T00:00:00Z", "/orders/" ORDER "?at=2026-02-30T00:00:00Z",
		"/orders/" ORDER "?at=1%20OR%201%3D1", "/events?limit=1001",
		"/streams?deleted=1", "/streams?deleted=TRUE", "/streams?deleted=",
	};
	for (size_t k = 0; k < sizeof odd / sizeof odd[0]; k++)
		expect_problem(&ts, "GET", odd[k], NULL, NULL, 0, 400, "invalid-parameter");
	/* headers of the live feed and the commands */
	for (size_t k = 0; k < NINJ; k++) {
		char *h = fd_test_fmt("Last-Event-ID: %s\r\n", injections[k]);
		expect_problem(&ts, "GET", "/events/stream", h, NULL, 0, 400, NULL);
		free(h);
		const char *body = "{\"quantity\":1}";
		h = fd_test_fmt("If-Match: %s\r\n", injections[k]);
		expect_problem(&ts, "POST", "/products/sku-1/restock", h, body, strlen(body), 400, "invalid-header");
		free(h);
		h = fd_test_fmt("Idempotency-Key: %s\r\n", injections[k]);
		expect_problem(&ts, "POST", "/products/sku-1/restock", h, body, strlen(body), 400, "invalid-header");
		free(h);
	}
	assert_unchanged(&ts, &before, "odd queries and headers");
	fd_test_server_stop(&ts);
}

/* ---- methods ------------------------------------------------------------------- */

Test(badinput, wrong_methods_on_every_route, .timeout = 600)
{
	struct fd_test_server ts;
	struct rows before;
	start(&ts, &before);
	static const char *const methods[] = { "GET", "POST", "PUT", "PATCH", "DELETE" };
	for (size_t i = 0; i < ts.ctx.nroutes; i++) {
		const struct fd_route *route = &ts.ctx.routes[i];
		char allowed[64] = "";
		for (size_t j = 0; j < ts.ctx.nroutes; j++)
			if (strcmp(ts.ctx.routes[j].pattern, route->pattern) == 0) {
				strcat(allowed, ts.ctx.routes[j].method);
				strcat(allowed, " ");
			}
		char *path = route_path(route, true, -1, NULL);
		for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
			char probe[16];
			snprintf(probe, sizeof probe, "%s ", methods[m]);
			if (strstr(allowed, probe))
				continue;
			struct fd_test_resp r;
			cr_assert_eq(fd_test_http(ts.port, methods[m], path, NULL, "{}", 2, &r), 0);
			cr_assert_eq(r.status, 405, "%s %s: %d %s", methods[m], path, r.status, r.body);
			fd_test_assert_problem(&r, 405, "method-not-allowed");
			char allow[128];
			cr_assert(fd_test_header(&r, "Allow", allow, sizeof allow), "%s %s: no Allow", methods[m], path);
			/* Allow lists exactly the table's methods for this path (and HEAD with GET) */
			char *save = NULL, *copy = strdup(allowed);
			for (char *a = strtok_r(copy, " ", &save); a; a = strtok_r(NULL, " ", &save))
				cr_assert(strstr(allow, a), "%s %s: Allow \"%s\" lacks %s", methods[m], path, allow, a);
			free(copy);
			cr_assert_null(strstr(allow, methods[m]), "%s %s: Allow \"%s\"", methods[m], path, allow);
			fd_test_resp_free(&r);
		}
		free(path);
	}
	assert_unchanged(&ts, &before, "wrong methods");
	fd_test_server_stop(&ts);
}

/* ---- raw requests ------------------------------------------------------------- */

Test(badinput, raw_requests, .timeout = 600)
{
	struct fd_test_server ts;
	struct rows before;
	start(&ts, &before);
	static const struct raw_body raws[] = {
		RAW("no content type", "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 19\r\nConnection: close\r\n\r\n"
				       "{\"customer_id\":\"c\"}",
		    415, "unsupported-media-type"),
		RAW("body too large", "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
				      "Content-Length: 999999999\r\nConnection: close\r\n\r\n{",
		    413, "body-too-large"),
		RAW("unknown method", "BREW /orders HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405,
		    "method-not-allowed"),
		RAW("unknown path", "GET /orders/x/y/z/w HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404, "not-found"),
		RAW("dot segments", "GET /streams/../events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0, NULL),
		RAW("encoded slash", "GET /streams/a%2Fb/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0, NULL),
		RAW("encoded NUL", "GET /streams/a%00b/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0, NULL),
	};
	for (size_t k = 0; k < sizeof raws / sizeof raws[0]; k++) {
		struct fd_test_resp r;
		cr_assert_eq(fd_test_http_raw(ts.port, raws[k].body, raws[k].len, &r), 0, "%s", raws[k].name);
		cr_assert(r.status >= 400 && r.status < 500, "%s: status %d %s", raws[k].name, r.status, r.body);
		if (raws[k].status)
			cr_assert_eq(r.status, raws[k].status, "%s: status %d %s", raws[k].name, r.status, r.body);
		fd_test_assert_problem(&r, r.status, raws[k].slugs);
		fd_test_resp_free(&r);
	}
	/* a raw NUL in a body (after a number, where jansson would skip it) */
	static const char nul_body[] = "{\"expected_version\":0\0,\"events\":[{\"type\":\"T\",\"data\":{}}]}";
	char head[256];
	int hl = snprintf(head, sizeof head,
			  "POST /streams/raw-1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
			  "Content-Length: %zu\r\nConnection: close\r\n\r\n", sizeof nul_body - 1);
	char req[512];
	memcpy(req, head, (size_t)hl);
	memcpy(req + hl, nul_body, sizeof nul_body - 1);
	struct fd_test_resp nr;
	cr_assert_eq(fd_test_http_raw(ts.port, req, (size_t)hl + sizeof nul_body - 1, &nr), 0);
	fd_test_assert_problem(&nr, 400, "invalid-json");
	fd_test_resp_free(&nr);
	/* bytes that are not HTTP: libmicrohttpd answers or closes; the server stays up */
	static const struct raw_body junk[] = {
		RAW("binary", "\x00\x01\x02\xff\r\n\r\n", 0, NULL),
		RAW("no version", "GET /healthz\r\n\r\n", 0, NULL),
		RAW("negative length", "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 0, NULL),
		RAW("NUL in the path", "GET /orders/\0/x HTTP/1.1\r\nHost: x\r\n\r\n", 0, NULL),
	};
	for (size_t k = 0; k < sizeof junk / sizeof junk[0]; k++) {
		struct fd_test_resp r;
		fd_test_http_raw(ts.port, junk[k].body, junk[k].len, &r);
		cr_assert(r.status == 0 || (r.status >= 400 && r.status != 500), "%s: status %d", junk[k].name, r.status);
		fd_test_resp_free(&r);
	}
	assert_unchanged(&ts, &before, "raw requests");
	fd_test_server_stop(&ts);
}

/* ---- legal values that look like SQL ------------------------------------------ */

static json_t *get_json(const struct fd_test_server *ts, const char *path)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts->port, path, &r), 0);
	cr_assert_eq(r.status, 200, "GET %s: %d %s", path, r.status, r.body);
	json_t *j = json_incref(r.json);
	fd_test_resp_free(&r);
	return j;
}

/* Where an injection string is a legal value it is stored and read back as data, nothing more. */
Test(badinput, injection_strings_are_data, .timeout = 600)
{
	struct fd_test_server ts;
	struct rows before;
	start(&ts, &before);
	long long events = before.count[0];
	for (size_t i = 0; i < before.n; i++)
		if (strcmp(before.name[i], "events") == 0)
			events = before.count[i];
	for (size_t k = 0; k < NINJ; k++) {
		const char *inj = injections[k];
		json_t *body = json_pack("{s:s}", "customer_id", inj);
		char *text = json_dumps(body, JSON_COMPACT);
		struct fd_test_resp r;
		cr_assert_eq(fd_test_post(ts.port, "/orders", text, &r), 0);
		cr_assert_eq(r.status, 201, "%s: %s", text, r.body);
		char *order = strdup(fd_test_json_str(&r, "order_id"));
		char *pos = strdup(fd_test_json_str(&r, "position"));
		fd_test_resp_free(&r);
		free(text);
		json_decref(body);

		body = json_pack("{s:s}", "reason", inj);
		text = json_dumps(body, JSON_COMPACT);
		char *path = fd_test_fmt("/orders/%s/cancel", order);
		must(&ts, "POST", path, text, 200, NULL, 0);
		free(path);
		free(text);
		json_decref(body);

		path = fd_test_fmt("/orders/%s", order);
		json_t *got = get_json(&ts, path);
		cr_assert_str_eq(json_string_value(json_object_get(got, "customer_id")), inj);
		cr_assert_str_eq(json_string_value(json_object_get(got, "cancel_reason")), inj);
		json_decref(got);
		free(path);

		/* the read model filters on it as a value */
		char *enc = urlenc(inj);
		path = fd_test_fmt("/orders?customer_id=%s&min_position=%s", enc, pos);
		got = get_json(&ts, path);
		json_t *list = json_object_get(got, "orders");
		cr_assert_eq(json_array_size(list), 0 + 1, "%s: %zu orders", path, json_array_size(list));
		json_decref(got);
		free(path);

		/* an event type and data */
		char *stream = fd_test_fmt("inj-%zu", k);
		body = json_pack("{s:i, s:[{s:s, s:{s:s}}]}", "expected_version", 0, "events", "type", inj, "data", "q", inj);
		text = json_dumps(body, JSON_COMPACT);
		path = fd_test_fmt("/streams/%s/events", stream);
		must(&ts, "POST", path, text, 201, NULL, 0);
		got = get_json(&ts, path);
		json_t *ev = json_array_get(json_object_get(got, "events"), 0);
		cr_assert_str_eq(json_string_value(json_object_get(ev, "type")), inj);
		cr_assert_str_eq(json_string_value(json_object_get(json_object_get(ev, "data"), "q")), inj);
		json_decref(got);
		free(path);
		/* the feed holds an event back while an older transaction is open (a projection's): poll */
		path = fd_test_fmt("/events?types=%s", enc);
		size_t seen = 0;
		for (int tries = 0; tries < 100 && seen == 0; tries++) {
			if (tries)
				usleep(50 * 1000);
			got = get_json(&ts, path);
			seen = json_array_size(json_object_get(got, "events"));
			json_decref(got);
		}
		cr_assert_eq(seen, 1, "%s: %zu events", path, seen);
		free(path);
		free(text);
		json_decref(body);
		free(stream);
		free(enc);
		free(order);
		free(pos);
	}
	/* every table is still there, and the events are exactly the ones written */
	struct rows after;
	rows_now(&ts, &after);
	cr_assert_eq(after.n, before.n);
	for (size_t i = 0; i < after.n; i++)
		if (strcmp(after.name[i], "events") == 0)
			cr_assert_eq(after.count[i], events + 3 * (long long)NINJ, "events: %lld", after.count[i]);
	fd_test_server_stop(&ts);
}

/* ---- events that the stream API accepts but readers must survive ------------- */

/*
 * The generic stream API stores any JSON object as an event's data, with its
 * numbers as written, so a client can put an event with an integer beyond
 * 64 bits into an aggregate's stream.  Loading that aggregate and running
 * the projections over it must go on working: an aggregate ignores event
 * types it does not know, and a read model must not stall on one event.
 */
Test(badinput, huge_numbers_in_aggregate_streams, .timeout = 600)
{
	struct fd_test_server ts;
	struct rows before;
	start(&ts, &before);
	static const char *const streams[] = { "order-" ORDER, "product-sku-1", "payment-" PAYMENT };
	for (size_t i = 0; i < sizeof streams / sizeof streams[0]; i++) {
		char *path = fd_test_fmt("/streams/%s/events", streams[i]);
		must(&ts, "POST", path,
		     "{\"expected_version\":\"exists\",\"events\":[{\"type\":\"Note\",\"data\":"
		     "{\"n\":123456789012345678901234567890,\"m\":-99999999999999999999.5}}]}",
		     201, NULL, 0);
		free(path);
	}
	json_t *got = get_json(&ts, "/orders/" ORDER);
	cr_assert_str_eq(json_string_value(json_object_get(got, "status")), "draft");
	json_decref(got);
	got = get_json(&ts, "/products/sku-1");
	cr_assert_eq(json_integer_value(json_object_get(got, "available")), 10);
	json_decref(got);
	got = get_json(&ts, "/payments/" PAYMENT);
	cr_assert_str_eq(json_string_value(json_object_get(got, "status")), "requested");
	json_decref(got);
	/* commands on them still work, and both read models move past the events */
	char pos[64] = "";
	must(&ts, "POST", "/products/sku-1/restock", "{\"quantity\":1}", 200, NULL, 0);
	must(&ts, "POST", "/orders/" ORDER "/place", NULL, 200, pos, sizeof pos);
	char *orders = fd_test_fmt("/orders?min_position=%s", pos), *products = fd_test_fmt("/products?min_position=%s", pos);
	got = get_json(&ts, orders);
	cr_assert_eq(json_array_size(json_object_get(got, "orders")), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(got, "orders"), 0), "status")),
			 "placed");
	json_decref(got);
	got = get_json(&ts, products);
	json_decref(got);
	free(orders);
	free(products);
	fd_test_server_stop(&ts);
}

/* The query parameters of DELETE /streams/{stream}: refused before anything is deleted. */
Test(badinput, injection_in_the_deletion_parameters, .timeout = 120)
{
	struct fd_test_server ts;
	struct rows before;
	start(&ts, &before);
	static const char *const names[] = { "expected_version", "hard" };
	static const char *const numbers[] = { "-1", "1.5", "1e3", "9223372036854775808", "", "+1", " 1", "0x10", NULL };
	for (size_t n = 0; n < 2; n++) {
		for (size_t k = 0; k < NINJ; k++) {
			char *enc = urlenc(injections[k]);
			char *path = fd_test_fmt("/streams/seed-1?%s=%s", names[n], enc);
			expect_problem(&ts, "DELETE", path, NULL, NULL, 0, 400, "invalid-parameter");
			free(path);
			free(enc);
		}
	}
	for (size_t k = 0; numbers[k]; k++) {
		char *enc = urlenc(numbers[k]);
		char *path = fd_test_fmt("/streams/seed-1?expected_version=%s", enc);
		expect_problem(&ts, "DELETE", path, NULL, NULL, 0, 400, "invalid-parameter");
		free(path);
		free(enc);
	}
	/* a version that does not hold deletes nothing either */
	expect_problem(&ts, "DELETE", "/streams/seed-1?expected_version=999", NULL, NULL, 0, 409, "wrong-version");
	assert_unchanged(&ts, &before, "deletion parameters");
	fd_test_server_stop(&ts);
}

/* Personal data: declarations through the stream API, the order's e-mail and address, subject ids. */
Test(badinput, personal_data, .timeout = 600)
{
	struct fd_test_server ts;
	struct rows before;
	start(&ts, &before);
#define EV(data, personal)                                                                                          \
	"{\"expected_version\":\"any\",\"events\":[{\"type\":\"T\",\"data\":" data ",\"metadata\":{\"personal\":" personal \
	"}}]}"
	static const struct {
		const char *method, *path, *body, *field;
	} cases[] = {
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "[]"), "/events/0/metadata/personal" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "\"s\""), "/events/0/metadata/personal" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"paths\":[\"/a\"]}"), "/events/0/metadata/personal/subject" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":\"a b\",\"paths\":[\"/a\"]}"),
		  "/events/0/metadata/personal/subject" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":\"'; DROP TABLE events; --\",\"paths\":[\"/a\"]}"),
		  "/events/0/metadata/personal/subject" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":7,\"paths\":[\"/a\"]}"),
		  "/events/0/metadata/personal/subject" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":\"\",\"paths\":[\"/a\"]}"),
		  "/events/0/metadata/personal/subject" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":\"s\"}"), "/events/0/metadata/personal/paths" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":\"s\",\"paths\":[]}"),
		  "/events/0/metadata/personal/paths" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":\"s\",\"paths\":\"/a\"}"),
		  "/events/0/metadata/personal/paths" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":\"s\",\"paths\":[\"a\"]}"),
		  "/events/0/metadata/personal/paths/0" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":\"s\",\"paths\":[\"\"]}"),
		  "/events/0/metadata/personal/paths/0" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":\"s\",\"paths\":[1]}"),
		  "/events/0/metadata/personal/paths/0" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":\"s\",\"paths\":[\"/b\"]}"),
		  "/events/0/metadata/personal/paths/0" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":\"s\",\"paths\":[\"/a~2\"]}"),
		  "/events/0/metadata/personal/paths/0" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":[1]}", "{\"subject\":\"s\",\"paths\":[\"/a/01\"]}"),
		  "/events/0/metadata/personal/paths/0" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":\"s\",\"paths\":[\"/a\",\"/a\"]}"),
		  "/events/0/metadata/personal/paths/1" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":{\"b\":1}}", "{\"subject\":\"s\",\"paths\":[\"/a/b\",\"/a\"]}"),
		  "/events/0/metadata/personal/paths/1" },
		{ "POST", "/streams/p-1/events", EV("{\"a\":1}", "{\"subject\":\"s\",\"paths\":[\"/a\"],\"key\":\"k\"}"),
		  "/events/0/metadata/personal/key" },
		{ "POST", "/orders", "{\"customer_id\":\"c-1\",\"email\":\"no-at-sign\"}", "/email" },
		{ "POST", "/orders", "{\"customer_id\":\"c-1\",\"email\":\"@example.org\"}", "/email" },
		{ "POST", "/orders", "{\"customer_id\":\"c-1\",\"email\":\"a b@example.org\"}", "/email" },
		{ "POST", "/orders", "{\"customer_id\":\"c-1\",\"email\":42}", "/email" },
		{ "POST", "/orders", "{\"customer_id\":\"c-1\",\"email\":null}", "/email" },
		{ "POST", "/orders", "{\"customer_id\":\"c-1\",\"shipping_address\":\"Main St\"}", "/shipping_address" },
		{ "POST", "/orders", "{\"customer_id\":\"c-1\",\"shipping_address\":{\"name\":\"A\",\"street\":\"S\","
				     "\"city\":\"C\",\"postal_code\":\"1\"}}", "/shipping_address/country" },
		{ "POST", "/orders", "{\"customer_id\":\"c-1\",\"shipping_address\":{\"name\":\"A\",\"street\":\"S\","
				     "\"city\":\"C\",\"postal_code\":\"1\",\"country\":\"fr\"}}", "/shipping_address/country" },
		{ "POST", "/orders", "{\"customer_id\":\"c-1\",\"shipping_address\":{\"name\":\" \",\"street\":\"S\","
				     "\"city\":\"C\",\"postal_code\":\"1\",\"country\":\"FR\"}}", "/shipping_address/name" },
		{ "POST", "/orders", "{\"customer_id\":\"c-1\",\"shipping_address\":{\"name\":\"A\",\"street\":\"S\","
				     "\"city\":\"C\",\"postal_code\":\"123456789012345678901\",\"country\":\"FR\"}}",
		  "/shipping_address/postal_code" },
		{ "POST", "/orders", "{\"customer_id\":\"c-1\",\"shipping_address\":{\"name\":\"A\",\"street\":\"S\","
				     "\"city\":\"C\",\"postal_code\":\"1\",\"country\":\"FR\",\"floor\":\"2\"}}", "/shipping_address" },
		{ "POST", "/orders", "{\"customer_id\":\"c 1\",\"email\":\"a@example.org\"}", "/customer_id" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct fd_test_resp r;
		cr_assert_eq(fd_test_http(ts.port, cases[i].method, cases[i].path, NULL, cases[i].body, strlen(cases[i].body),
					  &r), 0);
		fd_test_assert_problem(&r, 400, "invalid-field");
		cr_assert_str_eq(fd_test_json_str(&r, "field"), cases[i].field, "%s: %s", cases[i].body, r.body);
		fd_test_resp_free(&r);
	}
	/* 65 paths */
	char body[4096] = EV("{\"a\":1}", "{\"subject\":\"s\",\"paths\":[");
	char *tail = strstr(body, "[") ? strrchr(body, '[') + 1 : NULL;
	*tail = '\0';
	for (int i = 0; i < 65; i++)
		strcat(body, i ? ",\"/a\"" : "\"/a\"");
	strcat(body, "]}}}]}");
	expect_problem(&ts, "POST", "/streams/p-1/events", NULL, body, strlen(body), 400, "invalid-field");
	/* subject ids in the path */
	char longid[260];
	memset(longid, 'x', 201);
	longid[201] = '\0';
	static const char *const methods[] = { "GET", "DELETE" };
	for (size_t m = 0; m < 2; m++) {
		expect_problem(&ts, methods[m], fd_test_P("/subjects/%s", longid), NULL, NULL, 0, 400, "invalid-parameter");
		expect_problem(&ts, methods[m], "/subjects/a%20b", NULL, NULL, 0, 400, "invalid-parameter");
		expect_problem(&ts, methods[m], "/subjects/a%22b", NULL, NULL, 0, 400, "invalid-parameter");
	}
	assert_unchanged(&ts, &before, "personal data");
	fd_test_server_stop(&ts);
#undef EV
}
