/*
 * test_webhooks.c - webhooks against a real PostgreSQL and a real HTTP
 * receiver that each test starts in its own process (libmicrohttpd): signed
 * deliveries of every event in per-stream order, retries of a receiver that
 * fails, a receiver that hangs past the timeout, disabling and resuming,
 * private targets refused when defined and when connecting, a receiver's
 * check of the signature's time, and another process taking a webhook over
 * when the one delivering it stops.
 *
 * The receiver checks signatures with OpenSSL's one-shot HMAC, not with
 * factd's signing code.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "factd/hash.h"
#include "http_client.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

#define SECRET "a-secret-of-enough-length"
#define MAX_SEEN 4096

/* ---- the receiver ---------------------------------------------------------------- */

struct delivery {
	char event_id[64];
	char signature[160];
	char content_type[64];
	char *body;
	int answered;
};

struct receiver {
	struct MHD_Daemon *d;
	uint16_t port;
	pthread_mutex_t mu;
	struct delivery seen[MAX_SEEN];
	size_t n;
	int fail_first;       /* answer 500 to the first attempts of each event */
	int hang_first_ms;    /* sleep this long before answering the first request */
	bool always_fail;
	bool hold;            /* every request waits, unanswered, until this is cleared */
};

struct upload {
	char *body;
	size_t len;
};

/* Attempts so far at the event with this id (under the lock). */
static int attempts_of(struct receiver *rc, const char *id)
{
	int n = 0;
	for (size_t i = 0; i < rc->n; i++)
		n += strcmp(rc->seen[i].event_id, id) == 0;
	return n;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *data, size_t *size, void **con_cls)
{
	struct receiver *rc = cls;
	(void)url;
	(void)version;
	struct upload *u = *con_cls;
	if (!u) {
		*con_cls = calloc(1, sizeof *u);
		return MHD_YES;
	}
	if (*size) {
		u->body = realloc(u->body, u->len + *size + 1);
		memcpy(u->body + u->len, data, *size);
		u->len += *size;
		u->body[u->len] = '\0';
		*size = 0;
		return MHD_YES;
	}
	const char *id = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Factd-Event-Id");
	const char *sig = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Factd-Signature");
	const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
	int status = 200, prior, hang = 0;
	size_t mine = MAX_SEEN;
	pthread_mutex_lock(&rc->mu);
	bool hold = rc->hold;
	prior = attempts_of(rc, id ? id : "");
	if (strcmp(method, "POST") != 0 || rc->always_fail || prior < rc->fail_first)
		status = 500;
	if (rc->n == 0 && rc->hang_first_ms) /* the very first request only */
		hang = rc->hang_first_ms;
	if (rc->n < MAX_SEEN) {
		mine = rc->n;
		struct delivery *d = &rc->seen[rc->n++];
		snprintf(d->event_id, sizeof d->event_id, "%s", id ? id : "");
		snprintf(d->signature, sizeof d->signature, "%s", sig ? sig : "");
		snprintf(d->content_type, sizeof d->content_type, "%s", ct ? ct : "");
		d->body = u->body ? strdup(u->body) : strdup("");
		d->answered = hang || hold ? 0 : status;
	}
	pthread_mutex_unlock(&rc->mu);
	if (hang)
		fd_test_sleep_ms(hang);
	/* held: unanswered until the test lets go, then answered and marked so */
	for (bool held = hold; held;) {
		fd_test_sleep_ms(20);
		pthread_mutex_lock(&rc->mu);
		held = rc->hold;
		if (!held && mine < MAX_SEEN)
			rc->seen[mine].answered = status;
		pthread_mutex_unlock(&rc->mu);
	}
	struct MHD_Response *r = MHD_create_response_from_buffer(2, (void *)"ok", MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
	MHD_destroy_response(r);
	return ret;
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)c;
	(void)toe;
	struct upload *u = *con_cls;
	if (u) {
		free(u->body);
		free(u);
	}
	*con_cls = NULL;
}

static void receiver_start(struct receiver *rc)
{
	memset(rc, 0, sizeof *rc);
	pthread_mutex_init(&rc->mu, NULL);
	rc->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL,
				 on_request, rc, MHD_OPTION_NOTIFY_COMPLETED, on_done, rc, MHD_OPTION_END);
	cr_assert_not_null(rc->d);
	rc->port = MHD_get_daemon_info(rc->d, MHD_DAEMON_INFO_BIND_PORT)->port;
}

static void receiver_stop(struct receiver *rc)
{
	MHD_stop_daemon(rc->d);
	for (size_t i = 0; i < rc->n; i++)
		free(rc->seen[i].body);
}

/*
 * What a receiver does with Factd-Signature: split t and v1, check that t is
 * within tolerance_s of now, and compare v1 with the HMAC-SHA256 of
 * "<t>.<body>" in constant time.
 */
static bool verify(const char *header, const char *body, const char *secret, long long now, long long tolerance_s)
{
	long long t;
	char v1[65];
	if (sscanf(header, "t=%lld,v1=%64[0-9a-f]", &t, v1) != 2 || strlen(v1) != 64)
		return false;
	if (t < now - tolerance_s || t > now + tolerance_s)
		return false;
	char *msg = fd_test_fmt("%lld.%s", t, body);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)msg, strlen(msg), mac, &len);
	free(msg);
	char hex[65];
	for (unsigned i = 0; i < len; i++)
		snprintf(hex + 2 * i, 3, "%02x", mac[i]);
	return len == 32 && CRYPTO_memcmp(hex, v1, 64) == 0;
}

/* ---- helpers ------------------------------------------------------------------------ */

static void allow_private(struct fd_config *cfg)
{
	cfg->webhook_allow_private = 1;
	cfg->webhook_backoff_ms = 20;
	cfg->webhook_poll_ms = 50;
}

static void fast_but_strict(struct fd_config *cfg)
{
	cfg->webhook_backoff_ms = 20;
	cfg->webhook_poll_ms = 50;
}

static void append(uint16_t port, const char *stream, int i)
{
	struct fd_test_resp r;
	const char *body = fd_test_P("{\"expected_version\":\"any\",\"events\":[{\"type\":\"T\",\"data\":{\"i\":%d}}]}", i);
	cr_assert_eq(fd_test_post(port, fd_test_P("/streams/%s/events", stream), body, &r), 0);
	cr_assert(r.status == 200 || r.status == 201, "%d %s", r.status, r.body);
	fd_test_resp_free(&r);
}

static int put_webhook(uint16_t port, const char *name, const char *body, struct fd_test_resp *r)
{
	cr_assert_eq(fd_test_http(port, "PUT", fd_test_P("/webhooks/%s", name), "Content-Type: application/json\r\n", body,
				  strlen(body), r), 0);
	return r->status;
}

static json_t *webhook_doc(uint16_t port, const char *name)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(port, fd_test_P("/webhooks/%s", name), &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert_null(strstr(r.body, SECRET), "the secret was shown: %s", r.body);
	cr_assert_null(json_object_get(r.json, "secret"));
	json_t *d = json_incref(r.json);
	fd_test_resp_free(&r);
	return d;
}

static const char *str_of(json_t *doc, const char *key)
{
	return json_string_value(json_object_get(doc, key));
}

/* Wait (up to 30 s) until the receiver has seen `n` successful deliveries. */
static void wait_delivered(struct receiver *rc, size_t n)
{
	for (long long end = fd_test_now_ms() + 30000;; fd_test_sleep_ms(20)) {
		pthread_mutex_lock(&rc->mu);
		size_t ok = 0;
		for (size_t i = 0; i < rc->n; i++)
			ok += rc->seen[i].answered == 200;
		pthread_mutex_unlock(&rc->mu);
		if (ok >= n)
			return;
		cr_assert_lt(fd_test_now_ms(), end, "the receiver got %zu of %zu events", ok, n);
	}
}

/* Wait (up to 30 s) until GET /webhooks/{name} has `status`. */
static json_t *wait_status(uint16_t port, const char *name, const char *status)
{
	for (long long end = fd_test_now_ms() + 30000;; fd_test_sleep_ms(50)) {
		json_t *d = webhook_doc(port, name);
		if (strcmp(str_of(d, "status"), status) == 0)
			return d;
		json_decref(d);
		cr_assert_lt(fd_test_now_ms(), end, "webhook %s never became %s", name, status);
	}
}

/* ---- tests ----------------------------------------------------------------------------- */

#define HOOK_BODY(rc, extra)                                                                                  \
	fd_test_P("{\"url\":\"http://127.0.0.1:%u/hook\",\"secret\":\"" SECRET "\"%s}", (rc)->port, extra)

Test(webhooks, every_event_arrives_signed_in_stream_order, .timeout = 120)
{
	struct receiver rc;
	receiver_start(&rc);
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, allow_private);
	struct fd_test_resp r;
	cr_assert_eq(put_webhook(ts.port, "all", HOOK_BODY(&rc, ",\"categories\":[\"wh\"]"), &r), 201, "%s", r.body);
	cr_assert_null(strstr(r.body, SECRET), "the secret was shown: %s", r.body);
	cr_assert_str_eq(fd_test_json_str(&r, "status"), "active");
	fd_test_resp_free(&r);
	for (int i = 0; i < 20; i++)
		for (int s = 0; s < 3; s++)
			append(ts.port, fd_test_P("wh-%d", s), i);
	append(ts.port, "other-1", 0);
	wait_delivered(&rc, 60);

	long long now = (long long)time(NULL);
	long long next[3] = { 1, 1, 1 };
	pthread_mutex_lock(&rc.mu);
	for (size_t i = 0; i < rc.n; i++) {
		struct delivery *d = &rc.seen[i];
		cr_assert_eq(d->answered, 200);
		cr_assert(verify(d->signature, d->body, SECRET, now, 300), "bad signature %s on %s", d->signature, d->body);
		cr_assert_str_eq(d->content_type, "application/json");
		json_t *ev = json_loads(d->body, 0, NULL);
		cr_assert_not_null(ev, "%s", d->body);
		cr_assert_str_eq(str_of(ev, "event_id"), d->event_id);
		const char *stream = str_of(ev, "stream");
		cr_assert(strncmp(stream, "wh-", 3) == 0, "delivered an event of another category: %s", stream);
		int s = atoi(stream + 3);
		cr_assert_eq(json_integer_value(json_object_get(ev, "version")), next[s], "%s out of order", stream);
		next[s]++;
		json_decref(ev);
	}
	cr_assert_eq(rc.n, 60);
	pthread_mutex_unlock(&rc.mu);
	/* a wrong secret does not verify */
	cr_assert_not(verify(rc.seen[0].signature, rc.seen[0].body, "another-secret-entirely", now, 300));

	json_t *d = webhook_doc(ts.port, "all");
	for (long long end = fd_test_now_ms() + 10000;
	     json_integer_value(json_object_get(d, "delivered")) < 60 && fd_test_now_ms() < end; fd_test_sleep_ms(50)) {
		json_decref(d);
		d = webhook_doc(ts.port, "all");
	}
	cr_assert_eq(json_integer_value(json_object_get(d, "delivered")), 60);
	cr_assert_eq(json_integer_value(json_object_get(d, "failures")), 0);
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(d, "last_delivery"), "status")), 200);
	json_decref(d);
	cr_assert_eq(fd_test_get(ts.port, "/webhooks", &r), 0);
	cr_assert_eq(json_array_size(json_object_get(r.json, "webhooks")), 1);
	cr_assert_null(strstr(r.body, SECRET));
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
	receiver_stop(&rc);
}

Test(webhooks, a_receiver_failing_three_times_gets_each_event_again_in_order, .timeout = 120)
{
	struct receiver rc;
	receiver_start(&rc);
	rc.fail_first = 3;
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, allow_private);
	struct fd_test_resp r;
	cr_assert_eq(put_webhook(ts.port, "retry", HOOK_BODY(&rc, ""), &r), 201, "%s", r.body);
	fd_test_resp_free(&r);
	append(ts.port, "rt-1", 0);
	append(ts.port, "rt-1", 1);
	wait_delivered(&rc, 2);
	pthread_mutex_lock(&rc.mu);
	cr_assert_eq(rc.n, 8, "four attempts per event, got %zu", rc.n);
	/* all four attempts at the first event come before any at the second */
	for (size_t i = 0; i < 8; i++) {
		cr_assert_str_eq(rc.seen[i].event_id, rc.seen[i < 4 ? 0 : 4].event_id);
		cr_assert_eq(rc.seen[i].answered, i % 4 == 3 ? 200 : 500);
	}
	cr_assert_str_neq(rc.seen[0].event_id, rc.seen[4].event_id);
	pthread_mutex_unlock(&rc.mu);
	json_t *d = webhook_doc(ts.port, "retry");
	cr_assert_eq(json_integer_value(json_object_get(d, "failures")), 6);
	cr_assert_str_eq(str_of(d, "status"), "active");
	json_decref(d);
	fd_test_server_stop(&ts);
	receiver_stop(&rc);
}

Test(webhooks, a_hanging_receiver_times_out_and_disable_then_resume, .timeout = 120)
{
	struct receiver rc;
	receiver_start(&rc);
	rc.hang_first_ms = 2000;
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, allow_private);
	struct fd_test_resp r;
	cr_assert_eq(put_webhook(ts.port, "hang", HOOK_BODY(&rc, ",\"timeout_ms\":300,\"max_attempts\":1"), &r), 201,
		     "%s", r.body);
	fd_test_resp_free(&r);
	append(ts.port, "hg-1", 0);
	append(ts.port, "hg-1", 1);
	/* the one attempt allowed times out: disabled, position kept */
	json_t *d = wait_status(ts.port, "hang", "disabled");
	json_t *last = json_object_get(d, "last_delivery");
	cr_assert(strstr(json_string_value(json_object_get(last, "error")), "timed out"), "%s",
		  json_string_value(json_object_get(last, "error")));
	cr_assert(json_is_null(json_object_get(last, "status")));
	cr_assert_eq(json_integer_value(json_object_get(d, "failures")), 1);
	cr_assert_eq(json_integer_value(json_object_get(d, "lag_events")), 2);
	json_decref(d);
	/* disabled: nothing more is sent */
	fd_test_sleep_ms(2500);
	pthread_mutex_lock(&rc.mu);
	cr_assert_eq(rc.n, 1);
	pthread_mutex_unlock(&rc.mu);
	/* resumed: the same event first, then the next */
	cr_assert_eq(fd_test_post(ts.port, "/webhooks/hang/resume", "", &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert_str_eq(fd_test_json_str(&r, "status"), "active");
	fd_test_resp_free(&r);
	wait_delivered(&rc, 2);
	pthread_mutex_lock(&rc.mu);
	cr_assert_eq(rc.n, 3);
	cr_assert_str_eq(rc.seen[1].event_id, rc.seen[0].event_id);
	cr_assert_str_neq(rc.seen[2].event_id, rc.seen[0].event_id);
	pthread_mutex_unlock(&rc.mu);
	/* resuming an unknown webhook: 404 */
	cr_assert_eq(fd_test_post(ts.port, "/webhooks/nope/resume", "", &r), 0);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
	receiver_stop(&rc);
}

Test(webhooks, a_receiver_that_does_not_answer_holds_up_only_its_own_webhook, .timeout = 180)
{
	struct receiver slow, fast;
	receiver_start(&slow);
	receiver_start(&fast);
	slow.hold = true;
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, allow_private);
	struct fd_test_resp r;
	cr_assert_eq(put_webhook(ts.port, "a-silent", HOOK_BODY(&slow, ",\"categories\":[\"iso\"],\"timeout_ms\":60000"), &r),
		     201, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(put_webhook(ts.port, "b-answering", HOOK_BODY(&fast, ",\"categories\":[\"iso\"]"), &r), 201, "%s", r.body);
	fd_test_resp_free(&r);
	/* the dispatcher takes webhooks in name order: the silent one first */
	for (int i = 0; i < 10; i++)
		append(ts.port, "iso-1", i);
	/* every event reaches the answering receiver while the other's first POST still waits (its timeout is 60 s) */
	wait_delivered(&fast, 10);
	pthread_mutex_lock(&slow.mu);
	cr_assert_eq(slow.n, 1, "the silent receiver got %zu requests", slow.n);
	cr_assert_eq(slow.seen[0].answered, 0, "the silent receiver's request was answered");
	slow.hold = false;
	pthread_mutex_unlock(&slow.mu);
	/* once it answers, it gets the same events in the same order */
	wait_delivered(&slow, 10);
	pthread_mutex_lock(&slow.mu);
	pthread_mutex_lock(&fast.mu);
	cr_assert_eq(slow.n, 10);
	cr_assert_eq(fast.n, 10);
	for (size_t i = 0; i < 10; i++)
		cr_assert_str_eq(slow.seen[i].event_id, fast.seen[i].event_id, "event %zu", i);
	pthread_mutex_unlock(&fast.mu);
	pthread_mutex_unlock(&slow.mu);
	fd_test_server_stop(&ts);
	receiver_stop(&slow);
	receiver_stop(&fast);
}

Test(webhooks, disabled_after_max_attempts_and_resumed, .timeout = 120)
{
	struct receiver rc;
	receiver_start(&rc);
	rc.always_fail = true;
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, allow_private);
	struct fd_test_resp r;
	cr_assert_eq(put_webhook(ts.port, "dis", HOOK_BODY(&rc, ",\"max_attempts\":3"), &r), 201, "%s", r.body);
	char *position = strdup(fd_test_json_str(&r, "position"));
	fd_test_resp_free(&r);
	append(ts.port, "ds-1", 0);
	json_t *d = wait_status(ts.port, "dis", "disabled");
	cr_assert_eq(json_integer_value(json_object_get(d, "failures")), 3);
	cr_assert_str_eq(str_of(d, "position"), position, "the position moved past an undelivered event");
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(d, "last_delivery"), "status")), 500);
	json_decref(d);
	pthread_mutex_lock(&rc.mu);
	cr_assert_eq(rc.n, 3);
	rc.always_fail = false;
	pthread_mutex_unlock(&rc.mu);
	cr_assert_eq(fd_test_post(ts.port, "/webhooks/dis/resume", "", &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	fd_test_resp_free(&r);
	wait_delivered(&rc, 1);
	d = wait_status(ts.port, "dis", "active");
	json_decref(d);
	/* delete: 204, then 404 */
	cr_assert_eq(fd_test_http(ts.port, "DELETE", "/webhooks/dis", NULL, NULL, 0, &r), 0);
	cr_assert_eq(r.status, 204);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_get(ts.port, "/webhooks/dis", &r), 0);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	free(position);
	fd_test_server_stop(&ts);
	receiver_stop(&rc);
}

Test(webhooks, private_targets_are_refused_when_defined_and_when_connecting, .timeout = 120)
{
	struct receiver rc;
	receiver_start(&rc);
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, fast_but_strict);
	static const char *const hosts[] = {
		"127.0.0.1", "localhost", "[::1]", "10.1.2.3", "169.254.169.254", "192.168.0.1", "[fe80::1]", "0.0.0.0",
		"[::ffff:127.0.0.1]", "172.16.0.9", "100.64.1.1",
	};
	for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
		struct fd_test_resp r;
		char *url = fd_test_fmt("http://%s:%u/hook", hosts[i], rc.port);
		const char *body = fd_test_P("{\"url\":\"%s\",\"secret\":\"" SECRET "\"}", url);
		cr_assert_eq(put_webhook(ts.port, "priv", body, &r), 400, "%s: %d %s", url, r.status, r.body);
		fd_test_assert_problem(&r, 400, "invalid-field");
		cr_assert_str_eq(fd_test_json_str(&r, "field"), "/url");
		fd_test_resp_free(&r);
		free(url);
	}
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM webhooks"), 0);
	/* a name that pointed elsewhere when defined and at a private address now: refused at connect time */
	char *sql = fd_test_fmt("INSERT INTO webhooks (name, url, secret, max_attempts, timeout_ms, tx_id, seq)"
				" VALUES ('rebound', 'http://127.0.0.1:%u/hook', '" SECRET "', 1, 1000, '0', 0)", rc.port);
	fd_test_exec_at(ts.db_url, sql);
	free(sql);
	append(ts.port, "pv-1", 0);
	json_t *d = wait_status(ts.port, "rebound", "disabled");
	const char *err = json_string_value(json_object_get(json_object_get(d, "last_delivery"), "error"));
	cr_assert(err && strstr(err, "private address"), "%s", err ? err : "(none)");
	json_decref(d);
	pthread_mutex_lock(&rc.mu);
	cr_assert_eq(rc.n, 0, "the receiver at a private address was reached");
	pthread_mutex_unlock(&rc.mu);
	fd_test_server_stop(&ts);
	receiver_stop(&rc);
}

Test(webhooks, a_receiver_checking_t_refuses_a_replayed_signature, .timeout = 120)
{
	struct receiver rc;
	receiver_start(&rc);
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, allow_private);
	struct fd_test_resp r;
	cr_assert_eq(put_webhook(ts.port, "replay", HOOK_BODY(&rc, ""), &r), 201, "%s", r.body);
	fd_test_resp_free(&r);
	append(ts.port, "rp-1", 0);
	wait_delivered(&rc, 1);
	pthread_mutex_lock(&rc.mu);
	struct delivery *d = &rc.seen[0];
	long long t;
	cr_assert_eq(sscanf(d->signature, "t=%lld,", &t), 1);
	long long now = (long long)time(NULL);
	cr_assert(t <= now && t >= now - 60, "t=%lld is not the time of sending", t);
	/* fresh: accepted; captured and replayed ten minutes later: refused with a 5-minute tolerance */
	cr_assert(verify(d->signature, d->body, SECRET, t + 5, 300));
	cr_assert_not(verify(d->signature, d->body, SECRET, t + 600, 300));
	/* and a replayer cannot move t forward: v1 signs it */
	char *forged = fd_test_fmt("t=%lld,%s", t + 600, strstr(d->signature, "v1="));
	cr_assert_not(verify(forged, d->body, SECRET, t + 600, 300));
	free(forged);
	/* nor change the body */
	char *tampered = fd_test_fmt("%s ", d->body);
	cr_assert_not(verify(d->signature, tampered, SECRET, t + 5, 300));
	free(tampered);
	pthread_mutex_unlock(&rc.mu);
	fd_test_server_stop(&ts);
	receiver_stop(&rc);
}

Test(webhooks, one_process_delivers_and_another_takes_over_when_it_stops, .timeout = 180)
{
	struct receiver rc;
	receiver_start(&rc);
	struct fd_test_server a, b;
	fd_test_server_start_with(&a, NULL, allow_private);
	struct fd_test_resp r;
	cr_assert_eq(put_webhook(a.port, "one", HOOK_BODY(&rc, ""), &r), 201, "%s", r.body);
	fd_test_resp_free(&r);
	/* the webhook's advisory lock in this database, held by some session */
	char *held = fd_test_fmt("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database ="
				 " (SELECT oid FROM pg_database WHERE datname = current_database())"
				 " AND ((classid::bigint << 32) | objid::bigint) = %lld",
				 fd_lock_key("factd.webhook:", "one"));
	/* the first process takes it, then a second starts on the same database */
	for (long long end = fd_test_now_ms() + 10000; fd_test_server_scalar(&a, held) < 1; fd_test_sleep_ms(20))
		cr_assert_lt(fd_test_now_ms(), end, "no process took the webhook");
	fd_test_server_start_with(&b, a.db_url, allow_private);
	for (int i = 0; i < 20; i++)
		append(i % 2 ? b.port : a.port, "to-1", i);
	wait_delivered(&rc, 20);
	cr_assert_eq(fd_test_server_scalar(&a, held), 1);
	free(held);
	/* the deliverer stops; the other takes over and nothing is lost */
	fd_test_server_stop(&a);
	for (int i = 20; i < 40; i++)
		append(b.port, "to-1", i);
	wait_delivered(&rc, 40);
	pthread_mutex_lock(&rc.mu);
	long long v = 0;
	for (size_t i = 0; i < rc.n; i++) {
		json_t *ev = json_loads(rc.seen[i].body, 0, NULL);
		long long ver = json_integer_value(json_object_get(ev, "version"));
		/* in order; a repeat of the last one is allowed (at least once across a takeover) */
		cr_assert(ver == v + 1 || ver == v, "version %lld after %lld", ver, v);
		v = ver;
		json_decref(ev);
	}
	cr_assert_eq(v, 40);
	pthread_mutex_unlock(&rc.mu);
	fd_test_server_stop(&b);
	receiver_stop(&rc);
}
