/*
 * test_personal.c - personal data and its erasure, against a real
 * PostgreSQL and the shop over HTTP: orders with an e-mail and a shipping
 * address, events with a personal declaration through the stream API, the
 * sealed storage (greps of a real pg_dump of the test database), erasure
 * and every read path after it, commands on erased aggregates, and the
 * master key: missing, malformed, wrong.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "factd/uuid.h"
#include "http_client.h"
#define FD_TEST_APP (&shop_app)
#include "shop.h"
#include "store/personal.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

#define EMAIL_A "alice.personal@example.org"
#define STREET_A "17 Rue des Oubliettes"
#define EMAIL_B "bob.keeps@example.org"
#define STREET_B "4 Remembrance Lane"

static const char key_a_hex[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
static const char key_b_hex[] = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

/* A key file in the test's own directory; criterion runs each test in its own process. */
static char *key_file(const char *content)
{
	char path[] = "/tmp/factd-master-key-XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
	return strdup(path);
}

static void with_key_a(struct fd_config *c)
{
	c->master_key_file = key_file(key_a_hex);
	c->snapshot_every = 2; /* snapshots of orders hold their plaintext too */
}

static void with_key_b(struct fd_config *c)
{
	c->master_key_file = key_file(key_b_hex);
}

static void req(const struct fd_test_server *ts, const char *method, const char *path, const char *body,
		struct fd_test_resp *r)
{
	cr_assert_eq(fd_test_http(ts->port, method, path, NULL, body, body ? strlen(body) : 0, r), 0, "%s %s", method,
		     path);
}

static json_t *get_json(const struct fd_test_server *ts, const char *path, int status)
{
	struct fd_test_resp r;
	req(ts, "GET", path, NULL, &r);
	cr_assert_eq(r.status, status, "GET %s: %d %s", path, r.status, r.body);
	json_t *j = json_incref(r.json);
	fd_test_resp_free(&r);
	return j;
}

static void create_order(const struct fd_test_server *ts, const char *customer, const char *email, const char *street,
			 char out[FD_UUID_STRLEN + 1])
{
	struct fd_test_resp r;
	char *body = fd_test_fmt("{\"customer_id\":\"%s\",\"email\":\"%s\",\"shipping_address\":{\"name\":\"Ann Example\","
				 "\"street\":\"%s\",\"city\":\"Lyon\",\"postal_code\":\"69001\",\"country\":\"FR\"}}",
				 customer, email, street);
	req(ts, "POST", "/orders", body, &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	snprintf(out, FD_UUID_STRLEN + 1, "%s", fd_test_json_str(&r, "order_id"));
	fd_test_resp_free(&r);
	free(body);
}

static void add_line(const struct fd_test_server *ts, const char *order, const char *sku)
{
	struct fd_test_resp r;
	char *path = fd_test_fmt("/orders/%s/lines", order);
	char *body = fd_test_fmt("{\"product_id\":\"%s\",\"quantity\":1,\"unit_price_cents\":500}", sku);
	req(ts, "POST", path, body, &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	fd_test_resp_free(&r);
	free(path);
	free(body);
}

/* The whole database as pg_dump writes it (plain SQL), or only the tables named. */
static char *pg_dump(const struct fd_test_server *ts, const char *only_table)
{
	char *cmd = fd_test_fmt("pg_dump --no-owner %s%s '%s'", only_table ? "--table=" : "", only_table ? only_table : "",
				ts->db_url);
	FILE *p = popen(cmd, "r");
	cr_assert(p, "cannot run pg_dump");
	size_t cap = 1 << 20, len = 0;
	char *out = malloc(cap);
	size_t n;
	while ((n = fread(out + len, 1, cap - len - 1, p)) > 0) {
		len += n;
		if (cap - len < 4096)
			out = realloc(out, cap *= 2);
	}
	out[len] = '\0';
	cr_assert_eq(pclose(p), 0, "pg_dump failed: %s", cmd);
	cr_assert(strstr(out, "PostgreSQL database dump"), "not a dump: %.200s", out);
	free(cmd);
	return out;
}

static long long db(const struct fd_test_server *ts, const char *sql)
{
	return fd_test_server_scalar(ts, sql);
}

/* Wait (bounded) until sql counts want; the projector runs beside the test. */
static void wait_count(const struct fd_test_server *ts, const char *sql, long long want)
{
	long long got = -1;
	/* the projector makes its tables once it starts: not yet there is "not yet" */
	for (int i = 0; i < 600 && strstr(sql, "order_summaries") &&
			db(ts, "SELECT (to_regclass('order_summaries') IS NULL)::int") == 1;
	     i++)
		fd_test_sleep_ms(50);
	for (int i = 0; i < 600 && (got = db(ts, sql)) != want; i++)
		fd_test_sleep_ms(50);
	cr_assert_eq(got, want, "%s: %lld, want %lld", sql, got, want);
}

static bool has_erased(const json_t *doc, const char *path)
{
	const json_t *e = json_object_get(doc, "erased");
	for (size_t i = 0; i < json_array_size(e); i++)
		if (strcmp(json_string_value(json_array_get(e, i)), path) == 0)
			return true;
	return false;
}

/* The OrderCreated event of a page of events (a JSON array), borrowed. */
static json_t *created_event(json_t *events)
{
	for (size_t i = 0; i < json_array_size(events); i++) {
		json_t *e = json_array_get(events, i);
		if (strcmp(json_string_value(json_object_get(e, "type")), "OrderCreated") == 0)
			return e;
	}
	cr_assert_fail("no OrderCreated event");
	return NULL;
}

Test(personal_orders, sealed_at_rest_readable_until_erased_then_null_everywhere, .timeout = 240)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_key_a);
	char a[FD_UUID_STRLEN + 1], b[FD_UUID_STRLEN + 1];
	create_order(&ts, "cust-a", EMAIL_A, STREET_A, a);
	add_line(&ts, a, "sku-1");
	add_line(&ts, a, "sku-2"); /* a snapshot of version 2 or 3 */
	create_order(&ts, "cust-b", EMAIL_B, STREET_B, b);
	fd_bus_flush(ts.bus);

	/* readable through the API */
	json_t *o = get_json(&ts, fd_test_P("/orders/%s", a), 200);
	cr_assert_str_eq(json_string_value(json_object_get(o, "email")), EMAIL_A);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(o, "shipping_address"), "street")), STREET_A);
	cr_assert_null(json_object_get(o, "erased"));
	json_decref(o);
	json_t *page = get_json(&ts, fd_test_P("/orders/%s/events", a), 200);
	json_t *ev = created_event(json_object_get(page, "events"));
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(ev, "data"), "email")), EMAIL_A);
	json_t *decl = json_object_get(json_object_get(ev, "metadata"), "personal");
	cr_assert_str_eq(json_string_value(json_object_get(decl, "subject")), "cust-a");
	json_decref(page);

	/* ... and sealed at rest: the events table holds no plaintext of either customer */
	cr_assert_gt(db(&ts, "SELECT count(*) FROM snapshots WHERE stream_id LIKE 'order-%' AND state::text LIKE '%" EMAIL_A "%'"), 0,
		     "the test needs a snapshot holding the personal data");
	wait_count(&ts, "SELECT count(*) FROM order_summaries WHERE email = '" EMAIL_A "'", 1);
	char *events_dump = pg_dump(&ts, "events");
	cr_assert(strstr(events_dump, "cust-a"), "the dump of events is not of these events");
	cr_assert_null(strstr(events_dump, EMAIL_A), "plaintext e-mail in the events table");
	cr_assert_null(strstr(events_dump, STREET_A), "plaintext street in the events table");
	cr_assert_null(strstr(events_dump, EMAIL_B), "plaintext e-mail in the events table");
	cr_assert_null(strstr(events_dump, STREET_B), "plaintext street in the events table");
	free(events_dump);
	char *dump = pg_dump(&ts, NULL);
	cr_assert(strstr(dump, EMAIL_A), "the grep must be able to find it: snapshots and read models hold it");
	free(dump);

	/* erase customer a: 204, and 204 again */
	struct fd_test_resp r;
	req(&ts, "DELETE", "/subjects/cust-a", NULL, &r);
	cr_assert_eq(r.status, 204, "%s", r.body);
	fd_test_resp_free(&r);
	req(&ts, "DELETE", "/subjects/cust-a", NULL, &r);
	cr_assert_eq(r.status, 204, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(db(&ts, "SELECT count(*) FROM events WHERE type = '$SubjectErased'"), 1,
		     "one erasure event per stream, however often erased");
	json_t *s = get_json(&ts, "/subjects/cust-a", 200);
	cr_assert(json_is_true(json_object_get(s, "erased")));
	cr_assert_eq(json_array_size(json_object_get(s, "streams")), 1);
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(s, "streams"), 0)), fd_test_P("order-%s", a));
	json_decref(s);
	s = get_json(&ts, "/subjects/cust-b", 200);
	cr_assert(json_is_false(json_object_get(s, "erased")));
	json_decref(s);

	/* every read path: null, with the pointers in erased */
	static const char *const loads[] = { "", "?version=1", "?version=3" };
	for (size_t i = 0; i < 3; i++) {
		o = get_json(&ts, fd_test_P("/orders/%s%s", a, loads[i]), 200);
		cr_assert(json_is_null(json_object_get(o, "email")), "%s: %s", loads[i], json_dumps(o, 0));
		cr_assert(json_is_null(json_object_get(o, "shipping_address")), "%s", loads[i]);
		cr_assert(has_erased(o, "/email") && has_erased(o, "/shipping_address"), "%s", loads[i]);
		cr_assert_str_eq(json_string_value(json_object_get(o, "customer_id")), "cust-a");
		json_decref(o);
	}
	o = get_json(&ts, fd_test_P("/orders/%s?at=2999-01-01T00:00:00Z", a), 200);
	cr_assert(json_is_null(json_object_get(o, "email")) && has_erased(o, "/email"));
	json_decref(o);
	page = get_json(&ts, fd_test_P("/streams/order-%s/events", a), 200);
	ev = created_event(json_object_get(page, "events"));
	cr_assert(json_is_null(json_object_get(json_object_get(ev, "data"), "email")));
	cr_assert(has_erased(ev, "/email") && has_erased(ev, "/shipping_address"), "%s", json_dumps(ev, 0));
	json_t *last = json_array_get(json_object_get(page, "events"), json_array_size(json_object_get(page, "events")) - 1);
	cr_assert_str_eq(json_string_value(json_object_get(last, "type")), "$SubjectErased");
	json_decref(page);
	page = get_json(&ts, "/events?category=order", 200);
	size_t erased_seen = 0, b_seen = 0;
	for (size_t i = 0; i < json_array_size(json_object_get(page, "events")); i++) {
		ev = json_array_get(json_object_get(page, "events"), i);
		if (strcmp(json_string_value(json_object_get(ev, "type")), "OrderCreated") != 0)
			continue;
		const char *email = json_string_value(json_object_get(json_object_get(ev, "data"), "email"));
		if (has_erased(ev, "/email"))
			erased_seen++;
		else if (email && strcmp(email, EMAIL_B) == 0)
			b_seen++;
	}
	cr_assert_eq(erased_seen, 1, "the feed shows a's order erased");
	cr_assert_eq(b_seen, 1, "the feed still opens b's");
	json_decref(page);
	page = get_json(&ts, fd_test_P("/events?category=order&upcast=true"), 200);
	json_decref(page);

	/* b is untouched */
	o = get_json(&ts, fd_test_P("/orders/%s", b), 200);
	cr_assert_str_eq(json_string_value(json_object_get(o, "email")), EMAIL_B);
	json_decref(o);

	/* read models and snapshots purged, and no plaintext of a anywhere in the database */
	wait_count(&ts, fd_test_P("SELECT count(*) FROM order_summaries WHERE order_id = '%s' AND email IS NULL"
				  " AND shipping_address IS NULL", a), 1);
	o = get_json(&ts, "/orders?customer_id=cust-a", 200);
	cr_assert(json_is_null(json_object_get(json_array_get(json_object_get(o, "orders"), 0), "email")));
	json_decref(o);
	cr_assert_eq(db(&ts, fd_test_P("SELECT count(*) FROM snapshots WHERE stream_id = 'order-%s'", a)), 0);
	dump = pg_dump(&ts, NULL);
	cr_assert_null(strstr(dump, EMAIL_A), "erased e-mail still in the database");
	cr_assert_null(strstr(dump, STREET_A), "erased street still in the database");
	cr_assert(strstr(dump, "cust-a"), "the dump is of this database");
	free(dump);

	/* the aggregate still loads and takes commands; no snapshot of it comes back */
	add_line(&ts, a, "sku-3");
	add_line(&ts, a, "sku-4");
	fd_bus_flush(ts.bus);
	o = get_json(&ts, fd_test_P("/orders/%s", a), 200);
	cr_assert_eq(json_array_size(json_object_get(o, "lines")), 4);
	cr_assert(has_erased(o, "/email"));
	json_decref(o);
	cr_assert_eq(db(&ts, fd_test_P("SELECT count(*) FROM snapshots WHERE stream_id = 'order-%s'", a)), 0);

	/* no new personal data of an erased subject; an order without any is fine */
	req(&ts, "POST", "/orders", "{\"customer_id\":\"cust-a\",\"email\":\"" EMAIL_A "\"}", &r);
	fd_test_assert_problem(&r, 409, "subject-erased");
	fd_test_resp_free(&r);
	req(&ts, "POST", "/orders", "{\"customer_id\":\"cust-a\"}", &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);
	dump = pg_dump(&ts, NULL);
	cr_assert_null(strstr(dump, EMAIL_A), "the refused order wrote the e-mail");
	free(dump);
	fd_test_server_stop(&ts);
}

Test(personal_streams, declared_values_sealed_validated_and_erased)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_key_a);
	struct fd_test_resp r;
	req(&ts, "POST", "/streams/person-1/events",
	    "{\"expected_version\":\"no_stream\",\"events\":[{\"type\":\"Registered\",\"data\":{\"name\":\"Zoe Q\","
	    "\"contact\":{\"email\":\"zoe.q@example.org\",\"phone\":[\"+33 1 23 45 67 89\"]},\"plan\":\"gold\",\"n\":12345678901234567890},"
	    "\"metadata\":{\"personal\":{\"subject\":\"person-1\",\"paths\":[\"/name\",\"/contact/phone/0\",\"/contact/email\"]}}}]}",
	    &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(db(&ts, "SELECT count(*) FROM events WHERE data::text LIKE '%zoe.q%' OR data::text LIKE '%Zoe Q%'"
			     " OR data::text LIKE '%23 45%'"), 0, "stored in the clear");
	cr_assert_eq(db(&ts, "SELECT count(*) FROM events WHERE data->>'plan' = 'gold'"), 1, "only declared values are sealed");
	json_t *page = get_json(&ts, "/streams/person-1/events", 200);
	json_t *data = json_object_get(json_array_get(json_object_get(page, "events"), 0), "data");
	cr_assert_str_eq(json_string_value(json_object_get(data, "name")), "Zoe Q");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(data, "contact"), "email")), "zoe.q@example.org");
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(json_object_get(data, "contact"), "phone"), 0)),
			 "+33 1 23 45 67 89");
	json_decref(page);

	/* tampering: a sealed value moved to another path does not open (bound to its pointer) */
	fd_test_exec_at(ts.db_url, "UPDATE events SET data = jsonb_set(data, '{name}', data #> '{contact,email}')"
				   " WHERE stream_id = 'person-1'");
	req(&ts, "GET", "/streams/person-1/events", NULL, &r);
	fd_test_assert_problem(&r, 500, "internal");
	cr_assert_null(strstr(r.body, "zoe"), "%s", r.body);
	fd_test_resp_free(&r);

	req(&ts, "DELETE", "/subjects/person-1", NULL, &r);
	cr_assert_eq(r.status, 204, "%s", r.body);
	fd_test_resp_free(&r);
	page = get_json(&ts, "/streams/person-1/events", 200);
	json_t *ev = json_array_get(json_object_get(page, "events"), 0);
	data = json_object_get(ev, "data");
	cr_assert(json_is_null(json_object_get(data, "name")));
	cr_assert(json_is_null(json_array_get(json_object_get(json_object_get(data, "contact"), "phone"), 0)));
	cr_assert_str_eq(json_string_value(json_object_get(data, "plan")), "gold");
	cr_assert_eq(json_array_size(json_object_get(ev, "erased")), 3, "%s", json_dumps(ev, 0));
	json_decref(page);

	/* unknown subjects */
	req(&ts, "GET", "/subjects/nobody", NULL, &r);
	fd_test_assert_problem(&r, 404, "subject-not-found");
	fd_test_resp_free(&r);
	req(&ts, "DELETE", "/subjects/nobody", NULL, &r);
	cr_assert_eq(r.status, 204);
	fd_test_resp_free(&r);
	json_t *s = get_json(&ts, "/subjects/nobody", 200);
	cr_assert(json_is_true(json_object_get(s, "erased")));
	cr_assert_eq(json_array_size(json_object_get(s, "streams")), 0);
	json_decref(s);
	fd_test_server_stop(&ts);
}

Test(personal_keys, without_a_master_key_personal_data_is_refused_and_nothing_written)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_test_resp r;
	req(&ts, "POST", "/orders", "{\"customer_id\":\"c\",\"email\":\"" EMAIL_A "\"}", &r);
	fd_test_assert_problem(&r, 422, "master-key-missing");
	fd_test_resp_free(&r);
	req(&ts, "POST", "/streams/p-1/events",
	    "{\"expected_version\":\"any\",\"events\":[{\"type\":\"T\",\"data\":{\"e\":\"x@y.z\"},\"metadata\":{\"personal\":{\"subject\":\"s\","
	    "\"paths\":[\"/e\"]}}}]}",
	    &r);
	fd_test_assert_problem(&r, 422, "master-key-missing");
	cr_assert_str_eq(fd_test_json_str(&r, "field"), "/events/0/metadata/personal");
	fd_test_resp_free(&r);
	cr_assert_eq(db(&ts, "SELECT count(*) FROM events"), 0);
	cr_assert_eq(db(&ts, "SELECT count(*) FROM subject_keys"), 0);
	/* without personal data all is as before */
	req(&ts, "POST", "/orders", "{\"customer_id\":\"c\"}", &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(personal_keys, a_wrong_or_malformed_master_key_is_refused_and_nothing_opens_with_it, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_key_a);
	char a[FD_UUID_STRLEN + 1];
	create_order(&ts, "cust-k", EMAIL_A, STREET_A, a);
	char *url = strdup(ts.db_url);
	fd_test_server_stop(&ts);

	/* another key: the process does not start */
	struct fd_config cfg;
	cr_assert_eq(fd_config_defaults(&cfg), FD_OK);
	cfg.database_url = strdup(url);
	cfg.port = 0;
	cfg.sagas = 0;
	cfg.workers = 2;
	cfg.pool_size = 2;
	cfg.pool_timeout_ms = 2000;
	cfg.master_key_file = key_file(key_b_hex);
	struct fd_runtime rt;
	char errbuf[512] = "";
	cr_assert_neq(fd_runtime_start(&rt, &cfg, &shop_app, NULL, errbuf, sizeof errbuf), FD_OK);
	cr_assert(strstr(errbuf, "FACTD_MASTER_KEY_FILE") && strstr(errbuf, "another master key"), "%s", errbuf);

	/* malformed keys: a clear message */
	static const char *const bad[] = { "", "abc", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeg0",
					   "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		free(cfg.master_key_file);
		cfg.master_key_file = key_file(bad[i]);
		errbuf[0] = '\0';
		cr_assert_neq(fd_runtime_start(&rt, &cfg, &shop_app, NULL, errbuf, sizeof errbuf), FD_OK);
		cr_assert(strstr(errbuf, "64 hexadecimal digits"), "%s", errbuf);
	}
	free(cfg.master_key_file);
	cfg.master_key_file = strdup("/nonexistent/factd-key");
	cr_assert_neq(fd_runtime_start(&rt, &cfg, &shop_app, NULL, errbuf, sizeof errbuf), FD_OK);
	cr_assert(strstr(errbuf, "cannot open"), "%s", errbuf);
	fd_config_release(&cfg);

	/*
	 * Even with the check row gone (so that key b starts), nothing opens
	 * under key b: the wrapped key is authenticated, the read fails whole.
	 */
	fd_test_exec_at(url, "DELETE FROM master_key_check");
	fd_test_server_start_app(&ts, url, &shop_app, with_key_b);
	struct fd_test_resp r;
	req(&ts, "GET", fd_test_P("/orders/%s", a), NULL, &r);
	fd_test_assert_problem(&r, 500, "internal");
	cr_assert_null(strstr(r.body, "@"), "%s", r.body);
	fd_test_resp_free(&r);
	req(&ts, "GET", fd_test_P("/orders/%s/events", a), NULL, &r);
	fd_test_assert_problem(&r, 500, "internal");
	fd_test_resp_free(&r);
	/* and a new personal value of that subject is not sealed under a key it cannot open either */
	req(&ts, "POST", "/orders", "{\"customer_id\":\"cust-k\",\"email\":\"" EMAIL_B "\"}", &r);
	cr_assert_eq(r.status, 500, "%s", r.body);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
	free(url);
}

/* ---- saga data: the order saga records the e-mail its confirmation goes to --------------- */

#define EMAIL_S "sam.saga-confirm@example.org"

static void with_key_a_and_sagas(struct fd_config *c)
{
	with_key_a(c);
	c->sagas = 1;
	c->saga_workers = 2;
	c->saga_poll_ms = 20;
	c->saga_time_pct = 10;
	setenv("FACTD_PAYMENT_FAIL_FIRST", "0", 1);
	setenv("FACTD_PAYMENT_NEVER_ANSWER", "0", 1);
}

/* The order's saga once completed (bounded wait). */
static json_t *completed_saga(const struct fd_test_server *ts, const char *order)
{
	json_t *s = NULL;
	for (int i = 0; i < 1000; i++) {
		struct fd_test_resp r;
		req(ts, "GET", fd_test_P("/orders/%s/saga", order), NULL, &r);
		const char *status = r.status == 200 ? fd_test_json_str(&r, "status") : NULL;
		if (status && strcmp(status, "completed") == 0)
			s = json_incref(r.json);
		fd_test_resp_free(&r);
		if (s)
			return s;
		fd_test_sleep_ms(20);
	}
	cr_assert_fail("the saga of order %s did not complete", order);
	return NULL;
}

Test(personal_sagas, the_order_saga_holds_the_email_sealed_then_null_after_erasure, .timeout = 240)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_key_a_and_sagas);
	struct fd_test_resp r;
	req(&ts, "POST", "/products", "{\"product_id\":\"sku-s\",\"name\":\"Saga widget\",\"stock\":10}", &r);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);
	char a[FD_UUID_STRLEN + 1], b[FD_UUID_STRLEN + 1];
	create_order(&ts, "cust-s", EMAIL_S, STREET_A, a);
	create_order(&ts, "cust-t", EMAIL_B, STREET_B, b);
	const char *orders[] = { a, b };
	for (size_t i = 0; i < 2; i++) {
		add_line(&ts, orders[i], "sku-s");
		req(&ts, "POST", fd_test_P("/orders/%s/place", orders[i]), NULL, &r);
		cr_assert_eq(r.status, 200, "%s", r.body);
		fd_test_resp_free(&r);
	}

	/* the saga's view shows the e-mail its confirmation went to */
	json_t *s = completed_saga(&ts, a);
	char *saga_id = strdup(json_string_value(json_object_get(s, "id")));
	json_t *data = json_object_get(s, "data");
	cr_assert_str_eq(json_string_value(json_object_get(data, "confirmation_email")), EMAIL_S, "%s", json_dumps(s, 0));
	cr_assert_str_eq(json_string_value(json_object_get(data, "customer_id")), "cust-s");
	cr_assert_null(json_object_get(s, "erased"));
	json_decref(s);
	json_decref(completed_saga(&ts, b));

	/* ... and none of it in the clear at rest: the saga tables hold it sealed */
	cr_assert_eq(db(&ts, fd_test_P("SELECT count(*) FROM sagas WHERE id = '%s' AND data->>'confirmation_email' LIKE 'fdp1:%%'"
				       " AND personal->>'subject' = 'cust-s'", saga_id)),
		     1);
	char *saga_dump = pg_dump(&ts, "'saga*'");
	cr_assert(strstr(saga_dump, saga_id), "the dump of the saga tables is not of this saga");
	cr_assert_null(strstr(saga_dump, EMAIL_S), "plaintext e-mail in the saga tables");
	cr_assert_null(strstr(saga_dump, EMAIL_B), "plaintext e-mail in the saga tables");
	free(saga_dump);
	char *events_dump = pg_dump(&ts, "events");
	cr_assert_null(strstr(events_dump, EMAIL_S), "plaintext e-mail in the events table");
	free(events_dump);
	wait_count(&ts, "SELECT count(*) FROM order_summaries WHERE email = '" EMAIL_S "'", 1);
	char *dump = pg_dump(&ts, NULL);
	cr_assert(strstr(dump, EMAIL_S), "the grep must be able to find it: the read model holds it until erasure");
	free(dump);

	/* erased: the saga's view has null and says so; b's saga still opens */
	req(&ts, "DELETE", "/subjects/cust-s", NULL, &r);
	cr_assert_eq(r.status, 204, "%s", r.body);
	fd_test_resp_free(&r);
	s = get_json(&ts, fd_test_P("/sagas/%s", saga_id), 200);
	data = json_object_get(s, "data");
	cr_assert(json_is_null(json_object_get(data, "confirmation_email")), "%s", json_dumps(s, 0));
	cr_assert(has_erased(s, "/confirmation_email"), "%s", json_dumps(s, 0));
	cr_assert_str_eq(json_string_value(json_object_get(data, "customer_id")), "cust-s");
	json_decref(s);
	s = get_json(&ts, fd_test_P("/orders/%s/saga", b), 200);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(s, "data"), "confirmation_email")), EMAIL_B);
	json_decref(s);

	/* a later write of the erased saga keeps nothing of it: cancelling the confirmed order compensates it */
	req(&ts, "POST", fd_test_P("/orders/%s/cancel", a), "{\"reason\":\"changed my mind\"}", &r);
	cr_assert_eq(r.status, 200, "%s", r.body);
	fd_test_resp_free(&r);
	for (int i = 0; i < 1000; i++) {
		s = get_json(&ts, fd_test_P("/sagas/%s", saga_id), 200);
		bool done = strcmp(json_string_value(json_object_get(s, "status")), "compensated") == 0;
		if (done) {
			cr_assert(json_is_null(json_object_get(json_object_get(s, "data"), "confirmation_email")));
			cr_assert(has_erased(s, "/confirmation_email"));
		}
		json_decref(s);
		if (done)
			break;
		cr_assert_lt(i, 999, "the cancelled order's saga did not compensate");
		fd_test_sleep_ms(20);
	}

	/* no plaintext of the erased e-mail anywhere in the database */
	wait_count(&ts, fd_test_P("SELECT count(*) FROM order_summaries WHERE order_id = '%s' AND email IS NULL", a), 1);
	dump = pg_dump(&ts, NULL);
	cr_assert_null(strstr(dump, EMAIL_S), "erased e-mail still in the database");
	cr_assert(strstr(dump, saga_id), "the dump is of this database");
	free(dump);
	free(saga_id);
	fd_test_server_stop(&ts);
}
