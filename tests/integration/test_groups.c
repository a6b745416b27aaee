/*
 * test_groups.c - consumer groups against a real PostgreSQL over real HTTP:
 * two consumers sharing 1,000 events (each delivered, never to both at once,
 * per-stream order), redelivery of a silent consumer's events to another,
 * nack retry / park / skip and replay, parking after max_deliveries, acks
 * after expiry, the group's definition rules, and two factd processes
 * serving one group while one of them is killed and restarted.
 *
 * Consumer threads only record what happened; assertions run on the test's
 * main thread.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_client.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

#define ADMIN_JSON "Content-Type: application/json\r\n"

/* ---- helpers ----------------------------------------------------------------- */

/* Append n events of type T to stream (expected "any"); fails the test unless 200/201. */
static void append_n(uint16_t port, const char *stream, int n)
{
	for (int done = 0; done < n;) {
		int k = n - done > 50 ? 50 : n - done;
		char *body = fd_test_fmt("{\"expected_version\":\"any\",\"events\":[");
		for (int i = 0; i < k; i++) {
			char *nb = fd_test_fmt("%s%s{\"type\":\"T\",\"data\":{\"i\":%d}}", body, i ? "," : "", done + i);
			free(body);
			body = nb;
		}
		char *full = fd_test_fmt("%s]}", body);
		free(body);
		struct fd_test_resp r;
		cr_assert_eq(fd_test_post(port, fd_test_P("/streams/%s/events", stream), full, &r), 0);
		cr_assert(r.status == 200 || r.status == 201, "append: %d %s", r.status, r.body);
		fd_test_resp_free(&r);
		free(full);
		done += k;
	}
}

static int put_group(uint16_t port, const char *name, const char *body, struct fd_test_resp *r)
{
	cr_assert_eq(fd_test_http(port, "PUT", fd_test_P("/subscriptions/%s", name), ADMIN_JSON, body, strlen(body), r), 0);
	return r->status;
}

static void put_group_ok(uint16_t port, const char *name, const char *body)
{
	struct fd_test_resp r;
	int st = put_group(port, name, body, &r);
	cr_assert(st == 201 || st == 200, "PUT /subscriptions/%s: %d %s", name, st, r.body);
	fd_test_resp_free(&r);
}

/* Pull; returns the response (caller frees) and asserts 200 when must. */
static int pull(uint16_t port, const char *name, const char *consumer, int max, int wait_ms, struct fd_test_resp *r)
{
	int rc = fd_test_get(port, fd_test_P("/subscriptions/%s/events?consumer=%s&max=%d&wait_ms=%d", name, consumer, max,
					     wait_ms), r);
	return rc ? -1 : r->status;
}

static json_t *pulled(const struct fd_test_resp *r)
{
	cr_assert_eq(r->status, 200, "pull: %d %s", r->status, r->body);
	json_t *ev = json_object_get(r->json, "events");
	cr_assert(json_is_array(ev), "%s", r->body);
	return ev;
}

static int settle(uint16_t port, const char *name, const char *what, const char *body, struct fd_test_resp *r)
{
	int rc = fd_test_post(port, fd_test_P("/subscriptions/%s/%s", name, what), body, r);
	return rc ? -1 : r->status;
}

/* {"delivery_ids":["<id>", ...]} of the pulled events (caller frees). */
static char *ids_body(json_t *events, const char *extra)
{
	json_t *ids = json_array();
	size_t i;
	json_t *e;
	json_array_foreach(events, i, e)
		json_array_append(ids, json_object_get(e, "delivery_id"));
	json_t *doc = json_pack("{s:o}", "delivery_ids", ids);
	char *s = json_dumps(doc, JSON_COMPACT);
	json_decref(doc);
	if (extra) {
		s[strlen(s) - 1] = '\0';
		char *t = fd_test_fmt("%s,%s}", s, extra);
		free(s);
		return t;
	}
	return s;
}

/*
 * Pull until n events have come (events of separate appends become visible
 * one after another) or 15 s pass; a JSON array of them (caller decrefs).
 */
static json_t *pull_n(uint16_t port, const char *name, const char *consumer, size_t n)
{
	json_t *all = json_array();
	for (long long end = fd_test_now_ms() + 15000; json_array_size(all) < n && fd_test_now_ms() < end;) {
		struct fd_test_resp r;
		cr_assert_eq(pull(port, name, consumer, (int)(n - json_array_size(all)), 2000, &r), 200, "%s", r.body);
		json_array_extend(all, json_object_get(r.json, "events"));
		fd_test_resp_free(&r);
	}
	cr_assert_eq(json_array_size(all), n, "pulled %zu of %zu events", json_array_size(all), n);
	return all;
}

static const char *ev_id(json_t *d)
{
	return json_string_value(json_object_get(json_object_get(d, "event"), "event_id"));
}

static const char *ev_stream(json_t *d)
{
	return json_string_value(json_object_get(json_object_get(d, "event"), "stream"));
}

static long long ev_version(json_t *d)
{
	return json_integer_value(json_object_get(json_object_get(d, "event"), "version"));
}

static long long dcount(json_t *d)
{
	return json_integer_value(json_object_get(d, "delivery_count"));
}

/* GET /subscriptions/{name} as JSON (caller decrefs). */
static json_t *group_doc(uint16_t port, const char *name)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(port, fd_test_P("/subscriptions/%s", name), &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *d = json_incref(r.json);
	fd_test_resp_free(&r);
	return d;
}

static long long member(json_t *doc, const char *a, const char *b)
{
	json_t *v = json_object_get(doc, a);
	if (b)
		v = json_object_get(v, b);
	cr_assert(json_is_integer(v), "%s%s%s missing", a, b ? "." : "", b ? b : "");
	return json_integer_value(v);
}

/* ---- two consumers, 1,000 events ------------------------------------------------- */

#define STREAMS 20
#define PER_STREAM 50

struct shared {
	pthread_mutex_t mu;
	uint16_t port[2];
	const char *group;
	long long next[STREAMS];       /* the version each stream must deliver next */
	bool in_flight[STREAMS];
	bool uncertain[STREAMS];       /* the last ack of the stream failed: it may have committed or not */
	int delivered;                 /* events acked */
	int total;
	char failure[512];             /* the first thing that went wrong */
	int per_consumer[2];
	atomic_bool stop;
	bool tolerate_errors;          /* a server may be down for a while (restart test) */
};

struct consumer {
	struct shared *sh;
	int id;
};

static void fail(struct shared *sh, const char *msg)
{
	pthread_mutex_lock(&sh->mu);
	if (!sh->failure[0])
		snprintf(sh->failure, sizeof sh->failure, "%s", msg);
	pthread_mutex_unlock(&sh->mu);
	atomic_store(&sh->stop, true);
}

static void *consume(void *arg)
{
	struct consumer *c = arg;
	struct shared *sh = c->sh;
	char name[16];
	snprintf(name, sizeof name, "c%d", c->id);
	while (!atomic_load(&sh->stop)) {
		pthread_mutex_lock(&sh->mu);
		bool done = sh->delivered >= sh->total;
		pthread_mutex_unlock(&sh->mu);
		if (done)
			break;
		struct fd_test_resp r;
		int st = pull(sh->port[c->id], sh->group, name, 7, 1000, &r);
		if (st != 200) {
			if (!sh->tolerate_errors)
				fail(sh, fd_test_P("pull failed: %d %.300s", st, r.body ? r.body : ""));
			fd_test_resp_free(&r);
			fd_test_sleep_ms(100);
			continue;
		}
		json_t *events = json_object_get(r.json, "events");
		size_t i;
		json_t *d;
		/* record each receipt: in order for its stream, and not in anyone else's hands */
		json_array_foreach(events, i, d) {
			int s = atoi(ev_stream(d) + strlen("gs-"));
			long long v = ev_version(d);
			pthread_mutex_lock(&sh->mu);
			bool ok = s >= 0 && s < STREAMS && !sh->in_flight[s] &&
				  (v == sh->next[s] || (sh->uncertain[s] && v == sh->next[s] + 1));
			if (ok) {
				sh->in_flight[s] = true;
				sh->next[s] = v + 1;
				sh->uncertain[s] = false;
			}
			pthread_mutex_unlock(&sh->mu);
			if (!ok)
				fail(sh, fd_test_P("stream %s: version %lld out of turn or in flight twice", ev_stream(d), v));
		}
		if (json_array_size(events)) {
			json_array_foreach(events, i, d) {
				int s = atoi(ev_stream(d) + strlen("gs-"));
				pthread_mutex_lock(&sh->mu);
				sh->in_flight[s] = false;
				pthread_mutex_unlock(&sh->mu);
			}
			char *body = ids_body(events, NULL);
			struct fd_test_resp a;
			int ast = settle(sh->port[c->id], sh->group, "ack", body, &a);
			free(body);
			if (ast == 200) {
				pthread_mutex_lock(&sh->mu);
				sh->delivered += (int)json_array_size(events);
				sh->per_consumer[c->id] += (int)json_array_size(events);
				pthread_mutex_unlock(&sh->mu);
			} else if (!sh->tolerate_errors) {
				fail(sh, fd_test_P("ack failed: %d %.300s", ast, a.body ? a.body : ""));
			} else {
				/* the events come again: let them be received again in order */
				json_array_foreach(events, i, d) {
					int s = atoi(ev_stream(d) + strlen("gs-"));
					pthread_mutex_lock(&sh->mu);
					if (sh->next[s] > ev_version(d))
						sh->next[s] = ev_version(d);
					sh->uncertain[s] = true;
					pthread_mutex_unlock(&sh->mu);
				}
			}
			fd_test_resp_free(&a);
		}
		fd_test_resp_free(&r);
	}
	return NULL;
}

static void run_consumers(struct shared *sh, long long deadline_ms)
{
	pthread_t t[2];
	struct consumer c[2] = { { sh, 0 }, { sh, 1 } };
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, consume, &c[i]), 0);
	while (fd_test_now_ms() < deadline_ms && !atomic_load(&sh->stop)) {
		pthread_mutex_lock(&sh->mu);
		bool done = sh->delivered >= sh->total;
		pthread_mutex_unlock(&sh->mu);
		if (done)
			break;
		fd_test_sleep_ms(50);
	}
	atomic_store(&sh->stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
}

static void shared_init(struct shared *sh, const char *group)
{
	memset(sh, 0, sizeof *sh);
	pthread_mutex_init(&sh->mu, NULL);
	sh->group = group;
	sh->total = STREAMS * PER_STREAM;
	for (int s = 0; s < STREAMS; s++)
		sh->next[s] = 1;
}

Test(groups, two_consumers_share_a_thousand_events_in_stream_order, .timeout = 300)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	put_group_ok(ts.port, "share", "{\"categories\":[\"gs\"],\"start\":\"beginning\"}");
	for (int s = 0; s < STREAMS; s++)
		append_n(ts.port, fd_test_P("gs-%d", s), PER_STREAM);
	append_n(ts.port, "other-1", 10); /* another category: never delivered */

	struct shared sh;
	shared_init(&sh, "share");
	sh.port[0] = sh.port[1] = ts.port;
	run_consumers(&sh, fd_test_now_ms() + 240000);
	cr_assert_eq(sh.failure[0], '\0', "%s", sh.failure);
	cr_assert_eq(sh.delivered, STREAMS * PER_STREAM);
	for (int s = 0; s < STREAMS; s++)
		cr_assert_eq(sh.next[s], PER_STREAM + 1, "stream gs-%d ended at %lld", s, sh.next[s]);
	cr_assert_gt(sh.per_consumer[0], 0, "consumer 0 got nothing: the work was not shared");
	cr_assert_gt(sh.per_consumer[1], 0, "consumer 1 got nothing: the work was not shared");

	/* nothing left, nothing delivered twice, and the list says so */
	struct fd_test_resp r;
	cr_assert_eq(pull(ts.port, "share", "c0", 100, 0, &r), 200);
	cr_assert_eq(json_array_size(pulled(&r)), 0, "%s", r.body);
	fd_test_resp_free(&r);
	json_t *g = group_doc(ts.port, "share");
	cr_assert_eq(member(g, "lag_events", NULL), 0);
	cr_assert_eq(member(g, "in_flight", NULL), 0);
	cr_assert_eq(member(g, "deliveries", "delivered"), STREAMS * PER_STREAM);
	cr_assert_eq(member(g, "deliveries", "acked"), STREAMS * PER_STREAM);
	json_decref(g);
	fd_test_server_stop(&ts);
}

/* ---- leases -------------------------------------------------------------------------- */

Test(groups, a_silent_consumers_events_go_to_another_and_its_late_ack_is_refused, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	put_group_ok(ts.port, "lease", "{\"start\":\"end\",\"ack_timeout_ms\":3000}");
	for (int s = 0; s < 5; s++)
		append_n(ts.port, fd_test_P("lease-%d", s), 1);

	struct fd_test_resp b;
	json_t *ea = pull_n(ts.port, "lease", "silent", 5);
	size_t i;
	json_t *d;
	json_array_foreach(ea, i, d)
		cr_assert_eq(dcount(d), 1);
	/* while the leases hold, another consumer gets nothing */
	cr_assert_eq(pull(ts.port, "lease", "other", 10, 0, &b), 200);
	cr_assert_eq(json_array_size(pulled(&b)), 0, "%s", b.body);
	fd_test_resp_free(&b);
	/* after they run out, the same events go to the other consumer, counted again, under new delivery ids */
	json_t *eb = pull_n(ts.port, "lease", "other", 5);
	json_array_foreach(eb, i, d) {
		cr_assert_eq(dcount(d), 2);
		size_t j;
		json_t *o;
		bool found = false;
		json_array_foreach(ea, j, o)
			if (strcmp(ev_id(o), ev_id(d)) == 0) {
				found = true;
				cr_assert_str_neq(json_string_value(json_object_get(d, "delivery_id")),
						  json_string_value(json_object_get(o, "delivery_id")));
			}
		cr_assert(found, "event %s was not the silent consumer's", ev_id(d));
	}
	/* the silent consumer wakes up: its ack is 409 and changes nothing */
	char *body = ids_body(ea, NULL);
	struct fd_test_resp r;
	cr_assert_eq(settle(ts.port, "lease", "ack", body, &r), 409);
	fd_test_assert_problem(&r, 409, "unknown-delivery");
	cr_assert_eq(json_array_size(json_object_get(r.json, "delivery_ids")), 5, "%s", r.body);
	fd_test_resp_free(&r);
	free(body);
	json_t *g = group_doc(ts.port, "lease");
	cr_assert_eq(member(g, "in_flight", NULL), 5);
	cr_assert_eq(member(g, "deliveries", "acked"), 0);
	cr_assert_eq(member(g, "deliveries", "expired"), 5);
	json_decref(g);
	/* the current holder's ack settles them */
	body = ids_body(eb, NULL);
	cr_assert_eq(settle(ts.port, "lease", "ack", body, &r), 200, "%s", r.body);
	fd_test_resp_free(&r);
	/* an ack mixing a settled id with nothing else: 409 */
	cr_assert_eq(settle(ts.port, "lease", "ack", body, &r), 409, "%s", r.body);
	fd_test_resp_free(&r);
	free(body);
	json_decref(ea);
	json_decref(eb);
	g = group_doc(ts.port, "lease");
	cr_assert_eq(member(g, "in_flight", NULL), 0);
	cr_assert_eq(member(g, "lag_events", NULL), 0);
	json_decref(g);
	fd_test_server_stop(&ts);
}

Test(groups, an_ack_after_expiry_is_409_and_all_or_nothing, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	put_group_ok(ts.port, "exp", "{\"start\":\"end\",\"ack_timeout_ms\":2000,\"ordering\":\"none\"}");
	append_n(ts.port, "exp-1", 2);
	struct fd_test_resp a, r;
	cr_assert_eq(pull(ts.port, "exp", "c", 1, 5000, &a), 200);
	json_t *first = pulled(&a);
	cr_assert_eq(json_array_size(first), 1);
	fd_test_sleep_ms(2500);
	/* a second, live lease, acked together with the expired one: neither is settled */
	struct fd_test_resp b;
	cr_assert_eq(pull(ts.port, "exp", "c", 1, 5000, &b), 200);
	json_t *second = pulled(&b);
	cr_assert_eq(json_array_size(second), 1);
	json_t *both = json_array();
	json_array_extend(both, first);
	json_array_extend(both, second);
	char *body = ids_body(both, NULL);
	json_decref(both);
	cr_assert_eq(settle(ts.port, "exp", "ack", body, &r), 409);
	fd_test_assert_problem(&r, 409, "unknown-delivery");
	cr_assert_eq(json_array_size(json_object_get(r.json, "delivery_ids")), 1, "only the expired id: %s", r.body);
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(r.json, "delivery_ids"), 0)),
			 json_string_value(json_object_get(json_array_get(first, 0), "delivery_id")));
	fd_test_resp_free(&r);
	free(body);
	json_t *g = group_doc(ts.port, "exp");
	cr_assert_eq(member(g, "deliveries", "acked"), 0, "the live lease must not be acked by a refused call");
	json_decref(g);
	/* the live one alone is fine */
	body = ids_body(second, NULL);
	cr_assert_eq(settle(ts.port, "exp", "ack", body, &r), 200, "%s", r.body);
	fd_test_resp_free(&r);
	free(body);
	/* an unknown id is 409 too */
	cr_assert_eq(settle(ts.port, "exp", "ack", "{\"delivery_ids\":[\"0190a4b2-0000-7000-8000-000000000000\"]}", &r), 409);
	fd_test_resp_free(&r);
	fd_test_resp_free(&a);
	fd_test_resp_free(&b);
	fd_test_server_stop(&ts);
}

/* ---- nack, parking and replay ------------------------------------------------------------- */

Test(groups, nack_retry_park_skip_and_replay, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	put_group_ok(ts.port, "nk", "{\"categories\":[\"nk\"],\"start\":\"end\"}");
	append_n(ts.port, "nk-1", 3);
	append_n(ts.port, "nk-2", 1);
	struct fd_test_resp r, p;

	/* stream order: only nk-1 v1 and nk-2 v1 go out */
	json_t *ev = pull_n(ts.port, "nk", "c", 2);
	cr_assert_eq(pull(ts.port, "nk", "c", 10, 0, &p), 200);
	cr_assert_eq(json_array_size(pulled(&p)), 0, "%s", p.body);
	json_t *one = json_array_get(ev, 0), *two = json_array_get(ev, 1);
	cr_assert_str_eq(ev_stream(one), "nk-1");
	cr_assert_eq(ev_version(one), 1);
	cr_assert_str_eq(ev_stream(two), "nk-2");
	json_t *only1 = json_pack("[O]", one), *only2 = json_pack("[O]", two);

	/* skip nk-2's event: gone for good */
	char *body = ids_body(only2, "\"action\":\"skip\"");
	cr_assert_eq(settle(ts.port, "nk", "nack", body, &r), 200, "%s", r.body);
	fd_test_resp_free(&r);
	free(body);
	/* retry nk-1 v1 later: not now, then again with delivery_count 2 */
	body = ids_body(only1, "\"action\":\"retry\",\"delay_ms\":2000");
	cr_assert_eq(settle(ts.port, "nk", "nack", body, &r), 200, "%s", r.body);
	fd_test_resp_free(&r);
	free(body);
	struct fd_test_resp q;
	cr_assert_eq(pull(ts.port, "nk", "c", 10, 0, &q), 200);
	cr_assert_eq(json_array_size(pulled(&q)), 0, "retried too early, or v2 overtook v1: %s", q.body);
	fd_test_resp_free(&q);
	cr_assert_eq(pull(ts.port, "nk", "c", 10, 10000, &q), 200);
	json_t *again = pulled(&q);
	cr_assert_eq(json_array_size(again), 1, "%s", q.body);
	cr_assert_eq(ev_version(json_array_get(again, 0)), 1);
	cr_assert_eq(dcount(json_array_get(again, 0)), 2);

	/* park it: v2 and v3 of nk-1 stay behind it */
	body = ids_body(again, "\"action\":\"park\"");
	cr_assert_eq(settle(ts.port, "nk", "nack", body, &r), 200, "%s", r.body);
	fd_test_resp_free(&r);
	free(body);
	struct fd_test_resp e;
	cr_assert_eq(pull(ts.port, "nk", "c", 10, 300, &e), 200);
	cr_assert_eq(json_array_size(pulled(&e)), 0, "an event left while an earlier one of its stream is parked: %s", e.body);
	fd_test_resp_free(&e);
	cr_assert_eq(fd_test_get(ts.port, "/subscriptions/nk/parked", &e), 0);
	cr_assert_eq(e.status, 200, "%s", e.body);
	json_t *parked = json_object_get(e.json, "parked");
	cr_assert_eq(json_array_size(parked), 1, "%s", e.body);
	cr_assert_eq(ev_version(json_array_get(parked, 0)), 1);
	cr_assert_str_eq(ev_stream(json_array_get(parked, 0)), "nk-1");
	cr_assert(json_is_string(json_object_get(json_array_get(parked, 0), "parked_at")));
	cr_assert(json_is_string(e.json ? json_object_get(e.json, "next") : NULL));
	json_t *g = group_doc(ts.port, "nk");
	cr_assert_eq(member(g, "parked", NULL), 1);
	cr_assert_eq(member(g, "deliveries", "skipped"), 1);
	cr_assert_eq(member(g, "deliveries", "retried"), 1);
	cr_assert_eq(member(g, "deliveries", "parked"), 1);
	json_decref(g);
	/* a replay of an id that is not parked changes nothing */
	cr_assert_eq(fd_test_post(ts.port, "/subscriptions/nk/parked/replay", "{\"delivery_ids\":[\"0190a4b2-0000-7000-8000-000000000000\"]}", &r), 0);
	cr_assert_eq(r.status, 409, "%s", r.body);
	fd_test_resp_free(&r);
	/* replay it by id: it comes back first, counted from 1, then v2 and v3 in turn */
	body = ids_body(parked, NULL);
	cr_assert_eq(fd_test_post(ts.port, "/subscriptions/nk/parked/replay", body, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert_eq(fd_test_json_int(&r, "replayed"), 1);
	fd_test_resp_free(&r);
	free(body);
	fd_test_resp_free(&e);
	for (int v = 1; v <= 3; v++) {
		struct fd_test_resp x;
		cr_assert_eq(pull(ts.port, "nk", "c", 10, 5000, &x), 200);
		json_t *xe = pulled(&x);
		cr_assert_eq(json_array_size(xe), 1, "v%d: %s", v, x.body);
		cr_assert_eq(ev_version(json_array_get(xe, 0)), v);
		cr_assert_eq(dcount(json_array_get(xe, 0)), 1);
		body = ids_body(xe, NULL);
		cr_assert_eq(settle(ts.port, "nk", "ack", body, &r), 200, "%s", r.body);
		fd_test_resp_free(&r);
		free(body);
		fd_test_resp_free(&x);
	}
	g = group_doc(ts.port, "nk");
	cr_assert_eq(member(g, "parked", NULL), 0);
	cr_assert_eq(member(g, "lag_events", NULL), 0);
	cr_assert_eq(member(g, "deliveries", "replayed"), 1);
	cr_assert_eq(member(g, "deliveries", "acked"), 3);
	json_decref(g);
	/* the same numbers for Prometheus */
	struct fd_test_resp m;
	cr_assert_eq(fd_test_get(ts.port, "/metrics", &m), 0);
	cr_assert_eq(m.status, 200);
	cr_assert(strstr(m.body, "factd_subscription_deliveries_total{subscription=\"nk\",outcome=\"acked\"} 3\n"), "%s", m.body);
	cr_assert(strstr(m.body, "factd_subscription_deliveries_total{subscription=\"nk\",outcome=\"skipped\"} 1\n"));
	cr_assert(strstr(m.body, "factd_subscription_parked{subscription=\"nk\"} 0\n"));
	cr_assert(strstr(m.body, "factd_subscription_lag_events{subscription=\"nk\"} 0\n"));
	fd_test_resp_free(&m);
	json_decref(only1);
	json_decref(only2);
	json_decref(ev);
	fd_test_resp_free(&q);
	fd_test_resp_free(&p);
	fd_test_server_stop(&ts);
}

Test(groups, leases_that_run_out_max_deliveries_times_are_parked_and_replayed_all, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	put_group_ok(ts.port, "mx", "{\"start\":\"end\",\"ack_timeout_ms\":200,\"max_deliveries\":2,\"ordering\":\"none\"}");
	append_n(ts.port, "mx-1", 2);
	struct fd_test_resp r;
	for (int round = 1; round <= 2; round++) {
		cr_assert_eq(pull(ts.port, "mx", "c", 10, 5000, &r), 200);
		json_t *ev = pulled(&r);
		cr_assert_eq(json_array_size(ev), 2, "round %d: %s", round, r.body);
		cr_assert_eq(dcount(json_array_get(ev, 0)), round);
		fd_test_resp_free(&r);
		fd_test_sleep_ms(400);
	}
	cr_assert_eq(pull(ts.port, "mx", "c", 10, 300, &r), 200);
	cr_assert_eq(json_array_size(pulled(&r)), 0, "%s", r.body);
	fd_test_resp_free(&r);
	json_t *g = group_doc(ts.port, "mx");
	cr_assert_eq(member(g, "parked", NULL), 2);
	cr_assert_eq(member(g, "deliveries", "parked"), 2);
	json_decref(g);
	/* paging through the parked list with after= */
	cr_assert_eq(fd_test_get(ts.port, "/subscriptions/mx/parked?limit=1", &r), 0);
	cr_assert_eq(json_array_size(json_object_get(r.json, "parked")), 1, "%s", r.body);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "parked"), 0), "reason")),
			 "max_deliveries reached");
	char *next = strdup(fd_test_json_str(&r, "next"));
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_get(ts.port, fd_test_P("/subscriptions/mx/parked?limit=1&after=%s", next), &r), 0);
	json_t *p2 = json_object_get(r.json, "parked");
	cr_assert_eq(json_array_size(p2), 1, "%s", r.body);
	cr_assert_eq(ev_version(json_array_get(p2, 0)), 2);
	fd_test_resp_free(&r);
	free(next);
	/* replay everything (no body) */
	cr_assert_eq(fd_test_http(ts.port, "POST", "/subscriptions/mx/parked/replay", NULL, NULL, 0, &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert_eq(fd_test_json_int(&r, "replayed"), 2);
	fd_test_resp_free(&r);
	cr_assert_eq(pull(ts.port, "mx", "c", 10, 5000, &r), 200);
	cr_assert_eq(json_array_size(pulled(&r)), 2, "%s", r.body);
	cr_assert_eq(dcount(json_array_get(pulled(&r), 0)), 1);
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/* ---- the long poll ------------------------------------------------------------------------------ */

struct waiting_pull {
	uint16_t port;
	int status;
	size_t pulled;
	long long took_ms;
	atomic_bool done;
};

static void *waiting_pull_main(void *arg)
{
	struct waiting_pull *w = arg;
	struct fd_test_resp r;
	long long t0 = fd_test_now_ms();
	w->status = pull(w->port, "lp", "c", 10, 1500, &r);
	w->took_ms = fd_test_now_ms() - t0;
	w->pulled = json_array_size(pulled(&r));
	fd_test_resp_free(&r);
	atomic_store(&w->done, true);
	return NULL;
}

/*
 * Every append wakes a parked pull; one that finds nothing for it parks
 * again with what is left of its wait_ms (fd_req_park keeps the deadline
 * across runs), so appends it does not take neither end it early nor keep
 * it waiting past its wait.
 */
Test(groups, a_pull_woken_by_events_it_does_not_take_answers_at_its_deadline, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	put_group_ok(ts.port, "lp", "{\"categories\":[\"lp\"],\"start\":\"end\"}");
	struct waiting_pull w = { .port = ts.port };
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, waiting_pull_main, &w), 0);
	int appends = 0;
	for (long long end = fd_test_now_ms() + 60000; !atomic_load(&w.done) && fd_test_now_ms() < end; appends++) {
		append_n(ts.port, "other-1", 1);
		fd_test_sleep_ms(50);
	}
	cr_assert(atomic_load(&w.done), "a pull of 1500 ms still waited after a minute of appends it does not take");
	pthread_join(t, NULL);
	cr_assert_eq(w.status, 200);
	cr_assert_eq(w.pulled, 0);
	cr_assert_geq(w.took_ms, 1500, "the pull answered before its wait_ms, after %lld ms", w.took_ms);
	cr_assert_gt(appends, 1, "no append came while the pull waited: the test proved nothing");
	fd_test_server_stop(&ts);
}

/* ---- definitions ------------------------------------------------------------------------------- */

Test(groups, create_update_list_delete_and_a_fixed_start, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	append_n(ts.port, "def-1", 3);
	struct fd_test_resp r;
	cr_assert_eq(put_group(ts.port, "def", "{\"start\":\"beginning\",\"types\":[\"T\"]}", &r), 201, "%s", r.body);
	cr_assert_str_eq(fd_test_json_str(&r, "ordering"), "stream");
	cr_assert_eq(fd_test_json_int(&r, "ack_timeout_ms"), 30000);
	cr_assert_eq(fd_test_json_int(&r, "max_deliveries"), 5);
	char loc[128];
	cr_assert_str_eq(fd_test_header(&r, "Location", loc, sizeof loc), "/subscriptions/def");
	fd_test_resp_free(&r);
	cr_assert_eq(put_group(ts.port, "def", "{\"start\":\"beginning\",\"ack_timeout_ms\":1000,\"ordering\":\"none\"}", &r),
		     200, "%s", r.body);
	cr_assert_eq(fd_test_json_int(&r, "ack_timeout_ms"), 1000);
	cr_assert_str_eq(fd_test_json_str(&r, "ordering"), "none");
	fd_test_resp_free(&r);
	cr_assert_eq(put_group(ts.port, "def", "{\"start\":\"end\"}", &r), 409, "%s", r.body);
	fd_test_assert_problem(&r, 409, "subscription-start-fixed");
	fd_test_resp_free(&r);
	/* the lag counts the three events before anything was pulled */
	json_t *g = group_doc(ts.port, "def");
	cr_assert_eq(member(g, "lag_events", NULL), 3);
	cr_assert_str_eq(json_string_value(json_object_get(g, "start")), "beginning");
	json_decref(g);
	/*
	 * a group from "end" sees only what comes after: "end" is the feed's
	 * visible end, which passes def-1 once no older writing transaction of
	 * the cluster is open; wait for that first
	 */
	for (int i = 0; i < 100; i++) {
		cr_assert_eq(fd_test_get(ts.port, "/events?category=def", &r), 0);
		size_t seen = json_array_size(json_object_get(r.json, "events"));
		fd_test_resp_free(&r);
		if (seen == 3)
			break;
		fd_test_sleep_ms(100);
	}
	put_group_ok(ts.port, "late", "{\"start\":\"end\"}");
	cr_assert_eq(pull(ts.port, "late", "c", 10, 0, &r), 200);
	cr_assert_eq(json_array_size(pulled(&r)), 0);
	fd_test_resp_free(&r);
	append_n(ts.port, "def-2", 1);
	cr_assert_eq(pull(ts.port, "late", "c", 10, 5000, &r), 200);
	cr_assert_eq(json_array_size(pulled(&r)), 1, "%s", r.body);
	cr_assert_str_eq(ev_stream(json_array_get(pulled(&r), 0)), "def-2");
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_get(ts.port, "/subscriptions", &r), 0);
	cr_assert_eq(json_array_size(json_object_get(r.json, "subscriptions")), 2, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_http(ts.port, "DELETE", "/subscriptions/def", NULL, NULL, 0, &r), 0);
	cr_assert_eq(r.status, 204);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_http(ts.port, "DELETE", "/subscriptions/def", NULL, NULL, 0, &r), 0);
	fd_test_assert_problem(&r, 404, "not-found");
	fd_test_resp_free(&r);
	cr_assert_eq(pull(ts.port, "def", "c", 10, 0, &r), 404);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(*) FROM group_deliveries WHERE group_name = 'def'"), 0);
	fd_test_server_stop(&ts);
}

/* ---- two processes, one killed and restarted ------------------------------------------------- */

/* Start `factd serve` (the test app) on url, on p->port or a free port; wait until it is ready. */
static void spawn(struct fd_test_proc *p, const char *url)
{
	const char *env[] = { fd_test_P("FACTD_DATABASE_URL=%s", url), "FACTD_WORKERS=4", "FACTD_SAGAS=0", NULL };
	fd_test_proc_start(p, env, (const char *const[]){ "serve", NULL }, "/readyz");
}

Test(groups, two_processes_serve_one_group_and_a_kill_loses_nothing, .timeout = 300)
{
	char *url = fd_test_db_new();
	struct fd_test_proc a = { 0 }, b = { 0 };
	spawn(&a, url);
	spawn(&b, url);
	uint16_t p0 = a.port, p1 = b.port;
	put_group_ok(p0, "procs", "{\"categories\":[\"gs\"],\"start\":\"beginning\",\"ack_timeout_ms\":10000}");
	for (int s = 0; s < STREAMS; s++)
		append_n(p1, fd_test_P("gs-%d", s), PER_STREAM);

	struct shared sh;
	shared_init(&sh, "procs");
	sh.port[0] = p0;
	sh.port[1] = p1;
	sh.tolerate_errors = true;
	pthread_t t[2];
	struct consumer c[2] = { { &sh, 0 }, { &sh, 1 } };
	for (int i = 0; i < 2; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, consume, &c[i]), 0);
	/* once a third is through, kill process 0 without warning and start it again */
	long long deadline = fd_test_now_ms() + 240000;
	for (;;) {
		pthread_mutex_lock(&sh.mu);
		int done = sh.delivered;
		pthread_mutex_unlock(&sh.mu);
		if (done >= sh.total / 3 || fd_test_now_ms() > deadline)
			break;
		fd_test_sleep_ms(20);
	}
	fd_test_proc_stop(&a, SIGKILL);
	fd_test_sleep_ms(300);
	spawn(&a, url); /* on its port again */
	/* done when the database has every ack (an ack whose answer was lost with the process may have committed) */
	while (fd_test_now_ms() < deadline && !atomic_load(&sh.stop)) {
		if (fd_test_scalar_at(url, "SELECT acked FROM consumer_group_stats WHERE group_name = 'procs'") >= sh.total)
			break;
		fd_test_sleep_ms(200);
	}
	atomic_store(&sh.stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	cr_assert_eq(sh.failure[0], '\0', "%s", sh.failure);
	/* every event acknowledged exactly once (the database counts settled leases), each stream in order */
	for (int s = 0; s < STREAMS; s++)
		cr_assert(sh.next[s] == PER_STREAM + 1 || (sh.uncertain[s] && sh.next[s] == PER_STREAM),
			  "stream gs-%d ended at %lld", s, sh.next[s]);
	cr_assert_gt(sh.per_consumer[0], 0);
	cr_assert_gt(sh.per_consumer[1], 0);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT count(*) FROM group_deliveries"), 0);
	cr_assert_eq(fd_test_scalar_at(url, "SELECT acked FROM consumer_group_stats WHERE group_name = 'procs'"),
		     STREAMS * PER_STREAM);
	fd_test_proc_stop(&a, SIGTERM);
	fd_test_proc_stop(&b, SIGTERM);
	free(url);
}
