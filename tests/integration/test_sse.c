/*
 * test_sse.c - GET /events/stream against a real PostgreSQL: catch-up from
 * the log in feed order (across feed pages), live delivery through the
 * notifier and through polling alone, resuming with Last-Event-ID while
 * appends go on (every event exactly once, in order), filters, malformed
 * cursors, heartbeats, clients that vanish, the stream cap, an unreachable
 * database and a prompt server stop with streams open.
 *
 * The streaming client below speaks just enough HTTP/1.1 (chunked bodies)
 * and SSE to read frames incrementally with a deadline.  Worker threads only
 * record what happened; assertions run on the test's main thread.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "factd/jsonspan.h"
#include "http/live.h"
#include "http/problem.h"
#include "http_client.h"
#include "test_server.h"
#include "factd/notify.h"
#include "testdb.h"
#include "testutil.h"

/* ---- time ------------------------------------------------------------------- */

/* ---- a growable byte string --------------------------------------------------- */

struct bytes {
	char *p;
	size_t len, cap;
};

static void bytes_add(struct bytes *b, const char *p, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		cr_assert(b->p);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void bytes_drop(struct bytes *b, size_t n)
{
	memmove(b->p, b->p + n, b->len - n);
	b->len -= n;
	b->p[b->len] = '\0';
}

/* ---- a streaming SSE client ---------------------------------------------------------- */

struct sse_conn {
	int fd;
	int status;
	char head[4096];
	bool chunked;
	bool ended;  /* the terminating chunk arrived */
	bool closed; /* the server closed the connection */
	struct bytes raw;  /* received, not yet de-chunked */
	struct bytes body; /* de-chunked, not yet parsed into frames */
};

struct sse_frame {
	char id[64];
	char event[256];
	char *data;      /* joined data: lines (owned), NULL when none */
	char comment[64];
	int retry;       /* -1 when absent */
	bool has_id, is_comment;
};

static void frame_clear(struct sse_frame *f)
{
	free(f->data);
	memset(f, 0, sizeof *f);
	f->retry = -1;
}

static int connect_port(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_geq(fd, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0, "cannot connect to port %u", port);
	return fd;
}

static void send_stream_request(int fd, const char *path, const char *headers)
{
	char req[2048];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n%s\r\n",
			 path, headers ? headers : "");
	cr_assert(n > 0 && (size_t)n < sizeof req);
	cr_assert_eq(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
}

/* Receive what is there, waiting until deadline.  1: got bytes, 0: timed out, -1: closed. */
static int recv_some(struct sse_conn *c, long long deadline)
{
	if (c->closed)
		return -1;
	long long left = deadline - fd_test_now_ms();
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	if (left <= 0 || poll(&p, 1, (int)left) <= 0)
		return 0;
	char tmp[16384];
	ssize_t n = recv(c->fd, tmp, sizeof tmp, 0);
	if (n <= 0) {
		c->closed = true;
		return -1;
	}
	bytes_add(&c->raw, tmp, (size_t)n);
	return 1;
}

/* Move complete chunks from raw to body. */
static void dechunk(struct sse_conn *c)
{
	if (!c->chunked) {
		bytes_add(&c->body, c->raw.p ? c->raw.p : "", c->raw.len);
		c->raw.len = 0;
		return;
	}
	while (!c->ended && c->raw.len) {
		char *eol = strstr(c->raw.p, "\r\n");
		if (!eol)
			return;
		size_t size = strtoul(c->raw.p, NULL, 16);
		size_t line = (size_t)(eol - c->raw.p) + 2;
		if (size == 0) {
			c->ended = true;
			return;
		}
		if (c->raw.len < line + size + 2)
			return;
		bytes_add(&c->body, c->raw.p + line, size);
		cr_assert(c->raw.p[line + size] == '\r' && c->raw.p[line + size + 1] == '\n', "bad chunk framing");
		bytes_drop(&c->raw, line + size + 2);
	}
}

static const char *head_value(const struct sse_conn *c, const char *name, char *buf, size_t len)
{
	size_t nlen = strlen(name);
	for (const char *line = strstr(c->head, "\r\n"); line && line[2];) {
		line += 2;
		const char *eol = strstr(line, "\r\n");
		size_t llen = eol ? (size_t)(eol - line) : strlen(line);
		if (llen > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
			const char *v = line + nlen + 1;
			while (*v == ' ')
				v++;
			snprintf(buf, len, "%.*s", (int)(llen - (size_t)(v - line)), v);
			return buf;
		}
		line = eol;
	}
	return NULL;
}

/* Open a stream and read the response head; returns the status (0 when none came). */
static int sse_open(struct sse_conn *c, uint16_t port, const char *path, const char *headers)
{
	memset(c, 0, sizeof *c);
	c->fd = connect_port(port);
	send_stream_request(c->fd, path, headers);
	long long deadline = fd_test_now_ms() + 10000;
	while (!c->raw.p || !strstr(c->raw.p, "\r\n\r\n"))
		if (recv_some(c, deadline) <= 0)
			return 0;
	char *sep = strstr(c->raw.p, "\r\n\r\n");
	size_t hlen = (size_t)(sep - c->raw.p);
	cr_assert_lt(hlen, sizeof c->head);
	memcpy(c->head, c->raw.p, hlen);
	c->head[hlen] = '\0';
	bytes_drop(&c->raw, hlen + 4);
	c->status = atoi(c->head + 9);
	char te[64];
	c->chunked = head_value(c, "Transfer-Encoding", te, sizeof te) && strcasecmp(te, "chunked") == 0;
	dechunk(c);
	return c->status;
}

static void sse_close(struct sse_conn *c)
{
	if (c->fd > 0)
		close(c->fd);
	free(c->raw.p);
	free(c->body.p);
	memset(c, 0, sizeof *c);
}

static void parse_frame(const char *p, size_t len, struct sse_frame *f)
{
	struct bytes data = { 0 };
	bool any_data = false;
	while (len) {
		const char *eol = memchr(p, '\n', len);
		size_t llen = eol ? (size_t)(eol - p) : len;
		if (llen && p[0] == ':') {
			f->is_comment = true;
			snprintf(f->comment, sizeof f->comment, "%.*s", (int)llen - 1, p + 1);
		} else if (llen) {
			const char *colon = memchr(p, ':', llen);
			size_t nlen = colon ? (size_t)(colon - p) : llen;
			const char *v = colon ? colon + 1 : p + llen;
			if (v < p + llen && *v == ' ')
				v++;
			size_t vlen = (size_t)(p + llen - v);
			if (nlen == 2 && strncmp(p, "id", 2) == 0) {
				f->has_id = true;
				snprintf(f->id, sizeof f->id, "%.*s", (int)vlen, v);
			} else if (nlen == 5 && strncmp(p, "event", 5) == 0) {
				snprintf(f->event, sizeof f->event, "%.*s", (int)vlen, v);
			} else if (nlen == 4 && strncmp(p, "data", 4) == 0) {
				if (any_data)
					bytes_add(&data, "\n", 1);
				bytes_add(&data, v, vlen);
				any_data = true;
			} else if (nlen == 5 && strncmp(p, "retry", 5) == 0) {
				f->retry = atoi(v);
			} else {
				cr_assert_fail("unknown SSE field in line %.*s", (int)llen, p);
			}
		}
		p += llen + (eol ? 1 : 0);
		len -= llen + (eol ? 1 : 0);
	}
	f->data = any_data ? (data.p ? data.p : strdup("")) : NULL;
	if (!any_data)
		free(data.p);
}

/* The next frame of any kind.  1: got one, 0: deadline passed, -1: the stream ended. */
static int sse_next(struct sse_conn *c, struct sse_frame *f, long long deadline)
{
	frame_clear(f);
	for (;;) {
		char *end = c->body.p ? strstr(c->body.p, "\n\n") : NULL;
		if (end) {
			size_t len = (size_t)(end - c->body.p);
			parse_frame(c->body.p, len, f);
			bytes_drop(&c->body, len + 2);
			return 1;
		}
		if (c->ended)
			return -1;
		int r = recv_some(c, deadline);
		if (r < 0)
			return -1;
		if (r == 0)
			return 0;
		dechunk(c);
	}
}

/* The next event frame, skipping retry and heartbeat frames. */
static int sse_next_event(struct sse_conn *c, struct sse_frame *f, long long deadline)
{
	for (;;) {
		int r = sse_next(c, f, deadline);
		if (r != 1 || f->has_id)
			return r;
	}
}

/* ---- server helpers -------------------------------------------------------------- */

/* Append one event; returns its position (caller frees). */
static char *append(const struct fd_test_server *ts, const char *stream, const char *type, int i)
{
	char path[256], body[256];
	snprintf(path, sizeof path, "/streams/%s/events", stream);
	snprintf(body, sizeof body, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"%s\",\"data\":{\"i\":%d}}]}",
		 type, i);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts->port, "POST", path, NULL, body, strlen(body), &r), 0);
	cr_assert_eq(r.status, 201, "append: %d %s", r.status, r.body);
	char *pos = strdup(fd_test_json_str(&r, "position"));
	fd_test_resp_free(&r);
	return pos;
}

/* Append n events to one stream in one request. */
static void append_batch(const struct fd_test_server *ts, const char *stream, int n)
{
	struct bytes body = { 0 };
	char item[96];
	bytes_add(&body, "{\"expected_version\":\"any\",\"events\":[", 36);
	for (int i = 0; i < n; i++) {
		int len = snprintf(item, sizeof item, "%s{\"type\":\"Batch\",\"data\":{\"i\":%d,\"x\":0.10}}", i ? "," : "", i);
		bytes_add(&body, item, (size_t)len);
	}
	bytes_add(&body, "]}", 2);
	char path[256];
	snprintf(path, sizeof path, "/streams/%s/events", stream);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_http(ts->port, "POST", path, NULL, body.p, body.len, &r), 0);
	cr_assert_eq(r.status, 201, "batch append: %d %s", r.status, r.body);
	fd_test_resp_free(&r);
	free(body.p);
}

/* The feed as GET /events has it: each event's position, type and exact JSON text. */
struct feed_event {
	char position[64];
	char type[256];
	char *json;
};
struct feed {
	struct feed_event *ev;
	size_t n;
};

static void feed_read(const struct fd_test_server *ts, const char *filters, struct feed *out)
{
	memset(out, 0, sizeof *out);
	char after[64] = "0";
	for (;;) {
		char path[512];
		snprintf(path, sizeof path, "/events?limit=1000&after=%s%s%s", after, filters ? "&" : "", filters ? filters : "");
		struct fd_test_resp r;
		cr_assert_eq(fd_test_get(ts->port, path, &r), 0);
		cr_assert_eq(r.status, 200, "%s: %d %s", path, r.status, r.body);
		struct fd_span whole = { 0, r.body_len }, arr, el;
		cr_assert(fd_json_member(r.body, r.body_len, whole, "events", &arr));
		json_t *events = json_object_get(r.json, "events");
		size_t n = json_array_size(events), pos = 0;
		out->ev = realloc(out->ev, (out->n + n + 1) * sizeof *out->ev);
		for (size_t i = 0; i < n; i++) {
			json_t *e = json_array_get(events, i);
			struct feed_event *fe = &out->ev[out->n++];
			snprintf(fe->position, sizeof fe->position, "%s", json_string_value(json_object_get(e, "position")));
			snprintf(fe->type, sizeof fe->type, "%s", json_string_value(json_object_get(e, "type")));
			cr_assert(fd_json_next_element(r.body, r.body_len, arr, &pos, &el));
			fe->json = strndup(r.body + el.start, el.end - el.start);
		}
		snprintf(after, sizeof after, "%s", fd_test_json_str(&r, "next"));
		fd_test_resp_free(&r);
		if (n == 0)
			return;
	}
}

static void feed_free(struct feed *f)
{
	for (size_t i = 0; i < f->n; i++)
		free(f->ev[i].json);
	free(f->ev);
	memset(f, 0, sizeof *f);
}

/*
 * The feed once it shows `want` events.  Tests share one PostgreSQL cluster,
 * and a transaction still running in another test's database holds back the
 * feed's horizon for a moment (docs/design.md, the gap-safe global feed).
 */
static void feed_wait(const struct fd_test_server *ts, const char *filters, size_t want, struct feed *out)
{
	long long deadline = fd_test_now_ms() + 20000;
	for (;;) {
		feed_read(ts, filters, out);
		if (out->n >= want || fd_test_now_ms() > deadline)
			break;
		feed_free(out);
		fd_test_sleep_ms(50);
	}
	cr_assert_eq(out->n, want, "%s: the feed has %zu events, not %zu", filters ? filters : "all", out->n, want);
}

/* Read n events from c and check them against feed entries [from, from + n). */
static void expect_events(struct sse_conn *c, const struct feed *feed, size_t from, size_t n, long long timeout_ms)
{
	struct sse_frame f = { 0 };
	long long deadline = fd_test_now_ms() + timeout_ms;
	for (size_t i = from; i < from + n; i++) {
		int r = sse_next_event(c, &f, deadline);
		cr_assert_eq(r, 1, "event %zu of %zu did not arrive (%s)", i, from + n, r ? "stream ended" : "timeout");
		cr_assert_str_eq(f.id, feed->ev[i].position, "event %zu", i);
		cr_assert_str_eq(f.event, feed->ev[i].type, "event %zu", i);
		cr_assert_str_eq(f.data, feed->ev[i].json, "event %zu: the data is not the feed's JSON", i);
	}
	frame_clear(&f);
}

/* Nothing but heartbeats (or nothing) for `ms`. */
static void expect_no_event(struct sse_conn *c, long ms)
{
	struct sse_frame f = { 0 };
	int r = sse_next_event(c, &f, fd_test_now_ms() + ms);
	cr_assert_eq(r, 0, "unexpected %s: id %s", r > 0 ? "event" : "end of stream", f.id);
	frame_clear(&f);
}

static void no_projections(struct fd_config *cfg)
{
	cfg->projections = 0;
}

static void poll_only(struct fd_config *cfg)
{
	no_projections(cfg);
	cfg->sse_notify = 0;
}

static void heartbeat_1s(struct fd_config *cfg)
{
	no_projections(cfg);
	cfg->sse_heartbeat_s = 1;
}

static void two_streams(struct fd_config *cfg)
{
	no_projections(cfg);
	cfg->max_streams = 2;
}

static void five_streams(struct fd_config *cfg)
{
	no_projections(cfg);
	cfg->max_streams = 5;
}

static void wait_listening(const struct fd_test_server *ts)
{
	long long deadline = fd_test_now_ms() + 10000;
	while (!fd_notifier_listening(ts->notifier) && fd_test_now_ms() < deadline)
		fd_test_sleep_ms(20);
	cr_assert(fd_notifier_listening(ts->notifier), "the notifier did not connect");
}

/* ---- catch-up ------------------------------------------------------------------------ */

Test(sse, catch_up_from_the_beginning_in_feed_order, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, no_projections);
	for (int i = 0; i < 12; i++) {
		char stream[32];
		snprintf(stream, sizeof stream, "%s-%d", i % 3 ? "order" : "customer", i % 4);
		free(append(&ts, stream, i % 2 ? "Placed" : "Created", i));
	}
	append_batch(&ts, "bulk-1", 700); /* crosses a feed page inside one transaction */
	append_batch(&ts, "bulk-2", 300);
	free(append(&ts, "order-9", "Last", 99));
	struct feed feed;
	feed_wait(&ts, NULL, 1013, &feed);

	struct sse_conn c;
	cr_assert_eq(sse_open(&c, ts.port, "/events/stream", "X-Request-Id: sse-catch-up\r\n"), 200, "head: %s", c.head);
	char v[128];
	cr_assert(head_value(&c, "Content-Type", v, sizeof v));
	cr_assert_str_eq(v, "text/event-stream");
	cr_assert(head_value(&c, "Cache-Control", v, sizeof v));
	cr_assert_str_eq(v, "no-store");
	cr_assert(head_value(&c, "X-Accel-Buffering", v, sizeof v));
	cr_assert_str_eq(v, "no");
	cr_assert(head_value(&c, "X-Request-Id", v, sizeof v));
	cr_assert_str_eq(v, "sse-catch-up");
	cr_assert(c.chunked, "an HTTP/1.1 stream is chunked: %s", c.head);

	struct sse_frame f = { 0 };
	cr_assert_eq(sse_next(&c, &f, fd_test_now_ms() + 5000), 1);
	cr_assert_eq(f.retry, 2000, "the first frame is the retry hint");
	cr_assert(!f.has_id && !f.data);
	frame_clear(&f);
	expect_events(&c, &feed, 0, feed.n, 30000);
	expect_no_event(&c, 1500);
	sse_close(&c);

	/* ?after= starts after that event; Last-Event-ID wins over it (an EventSource reconnecting to its URL). */
	char path[128], hdr[128];
	snprintf(path, sizeof path, "/events/stream?after=%s", feed.ev[1000].position);
	cr_assert_eq(sse_open(&c, ts.port, path, NULL), 200);
	expect_events(&c, &feed, 1001, feed.n - 1001, 10000);
	sse_close(&c);
	snprintf(hdr, sizeof hdr, "Last-Event-ID: %s\r\n", feed.ev[1010].position);
	cr_assert_eq(sse_open(&c, ts.port, path, hdr), 200);
	expect_events(&c, &feed, 1011, feed.n - 1011, 10000);
	expect_no_event(&c, 500);
	sse_close(&c);
	feed_free(&feed);
	fd_test_server_stop(&ts);
}

Test(sse, empty_log_sends_only_the_retry_hint, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, no_projections);
	struct sse_conn c;
	cr_assert_eq(sse_open(&c, ts.port, "/events/stream?after=0", NULL), 200);
	struct sse_frame f = { 0 };
	cr_assert_eq(sse_next(&c, &f, fd_test_now_ms() + 5000), 1);
	cr_assert_eq(f.retry, 2000);
	expect_no_event(&c, 1500);
	frame_clear(&f);
	sse_close(&c);
	fd_test_server_stop(&ts);
}

Test(sse, head_answers_the_head_without_a_body, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, no_projections);
	free(append(&ts, "h-1", "H", 1));
	/* Keep-alive: a stray last chunk would be read as the start of the next response. */
	int fd = connect_port(ts.port);
	static const char two[] = "HEAD /events/stream HTTP/1.1\r\nHost: x\r\n\r\n"
				  "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	cr_assert_eq(send(fd, two, sizeof two - 1, MSG_NOSIGNAL), (ssize_t)(sizeof two - 1));
	struct sse_conn c = { .fd = fd };
	long long deadline = fd_test_now_ms() + 10000;
	while (recv_some(&c, deadline) > 0)
		;
	cr_assert(c.closed, "no end of the responses");
	cr_assert(c.raw.p && strncmp(c.raw.p, "HTTP/1.1 200", 12) == 0, "%s", c.raw.p);
	cr_assert(strcasestr(c.raw.p, "Content-Type: text/event-stream\r\n"), "%s", c.raw.p);
	char *second = strstr(c.raw.p, "\r\n\r\n");
	cr_assert(second);
	cr_assert(strncmp(second + 4, "HTTP/1.1 200", 12) == 0, "the HEAD response has a body: %s", c.raw.p);
	sse_close(&c);
	fd_test_server_stop(&ts);
}

/* ---- live ------------------------------------------------------------------------------ */

/*
 * Connect, then append events one by one, each as soon as the one before
 * arrived (so just after the stream read the feed); each must arrive within
 * max_latency_ms.  With `announce`, each append is followed by a NOTIFY
 * factd_events on that connection, as factd announces appends.
 */
static void live_delivery(struct fd_test_server *ts, PGconn *announce, long long max_latency_ms)
{
	free(append(ts, "order-1", "Before", 0));
	struct sse_conn c;
	cr_assert_eq(sse_open(&c, ts->port, "/events/stream", NULL), 200);
	struct sse_frame f = { 0 };
	cr_assert_eq(sse_next_event(&c, &f, fd_test_now_ms() + 5000), 1);
	cr_assert_str_eq(f.event, "Before");
	for (int i = 1; i <= 5; i++) {
		long long t0 = fd_test_now_ms();
		char *pos = append(ts, "order-1", "Live", i);
		if (announce)
			PQclear(PQexec(announce, "NOTIFY factd_events"));
		cr_assert_eq(sse_next_event(&c, &f, t0 + 10000), 1, "live event %d did not arrive", i);
		long long latency = fd_test_now_ms() - t0;
		cr_assert_str_eq(f.id, pos);
		cr_assert_str_eq(f.event, "Live");
		json_t *ev = json_loads(f.data, 0, NULL);
		cr_assert(ev, "data is not JSON: %s", f.data);
		cr_assert_eq(json_integer_value(json_object_get(json_object_get(ev, "data"), "i")), i);
		cr_assert_str_eq(json_string_value(json_object_get(ev, "position")), pos);
		json_decref(ev);
		cr_assert_leq(latency, max_latency_ms, "live event %d took %lld ms", i, latency);
		free(pos);
	}
	frame_clear(&f);
	sse_close(&c);
}

Test(sse, live_events_arrive_through_the_notifier, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, no_projections);
	wait_listening(&ts);
	PGconn *announce = fd_test_connect(ts.db_url);
	/*
	 * Each append follows a feed read at once, and the stream polls 1 s
	 * after a read, so arriving well within that shows the notification
	 * woke it.
	 */
	live_delivery(&ts, announce, 700);
	PQfinish(announce);
	fd_test_server_stop(&ts);
}

Test(sse, live_events_arrive_while_listening_even_without_a_notification, .timeout = 120)
{
	/* A lost notification (or an event held back by an older transaction) only delays the stream. */
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, no_projections);
	wait_listening(&ts);
	live_delivery(&ts, NULL, 2500);
	fd_test_server_stop(&ts);
}

Test(sse, the_notifier_reconnects_after_losing_its_connection, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, no_projections);
	wait_listening(&ts);
	uint64_t before = fd_notifier_generation(ts.notifier);
	cr_assert_eq(fd_test_server_scalar(&ts, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
						" WHERE application_name = 'factd-notify' AND datname = current_database()"),
		     1);
	/* Reconnecting advances the generation: what committed meanwhile was not announced. */
	long long deadline = fd_test_now_ms() + 10000;
	while ((fd_notifier_generation(ts.notifier) == before || !fd_notifier_listening(ts.notifier)) &&
	       fd_test_now_ms() < deadline)
		fd_test_sleep_ms(20);
	cr_assert_gt(fd_notifier_generation(ts.notifier), before, "no reconnect");
	cr_assert(fd_notifier_listening(ts.notifier));
	PGconn *announce = fd_test_connect(ts.db_url);
	live_delivery(&ts, announce, 700);
	PQfinish(announce);
	fd_test_server_stop(&ts);
}

Test(sse, live_events_arrive_by_polling_without_a_notifier, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, poll_only);
	cr_assert_null(ts.ctx.notifier);
	live_delivery(&ts, NULL, 2500);
	fd_test_server_stop(&ts);
}

/* ---- resume ------------------------------------------------------------------------------ */

struct appender {
	struct fd_test_server *ts;
	int count;
	int failures; /* appends that did not answer 201 */
	volatile int done;
};

static void *append_thread(void *arg)
{
	struct appender *a = arg;
	for (int i = 0; i < a->count; i++) {
		char path[64], body[160];
		snprintf(path, sizeof path, "/streams/resume-%d/events", i % 5);
		snprintf(body, sizeof body, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"T%d\",\"data\":{\"i\":%d}}]}",
			 i % 3, i);
		struct fd_test_resp r;
		if (fd_test_http(a->ts->port, "POST", path, NULL, body, strlen(body), &r) != 0 || r.status != 201)
			a->failures++;
		fd_test_resp_free(&r);
		fd_test_sleep_ms(15);
	}
	__atomic_store_n(&a->done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/*
 * Disconnect after k events and resume with Last-Event-ID, over and over
 * while another thread appends: every event exactly once, in feed order.
 */
static void resume_while_appending(void (*tweak)(struct fd_config *))
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak);
	for (int i = 0; i < 20; i++)
		free(append(&ts, "early-1", "Early", i));
	struct appender a = { .ts = &ts, .count = 150 };
	pthread_t th;
	cr_assert_eq(pthread_create(&th, NULL, append_thread, &a), 0);

	size_t cap = 1024, got = 0;
	char (*ids)[64] = calloc(cap, sizeof *ids);
	char last[64] = "";
	int connections = 0;
	long long deadline = fd_test_now_ms() + 60000;
	while (got < 170 && fd_test_now_ms() < deadline) {
		struct sse_conn c;
		char hdr[128] = "";
		if (*last)
			snprintf(hdr, sizeof hdr, "Last-Event-ID: %s\r\n", last);
		/* Like a browser: the URL keeps its ?after=0, the header says where to resume. */
		cr_assert_eq(sse_open(&c, ts.port, "/events/stream?after=0", hdr), 200);
		connections++;
		size_t k = 7 + (size_t)(connections % 5) * 3;
		struct sse_frame f = { 0 };
		for (size_t i = 0; i < k && got < 170; i++) {
			if (sse_next_event(&c, &f, fd_test_now_ms() + 10000) != 1)
				break;
			cr_assert_lt(got, cap);
			snprintf(ids[got++], sizeof ids[0], "%s", f.id);
			snprintf(last, sizeof last, "%s", f.id);
		}
		frame_clear(&f);
		sse_close(&c); /* often with frames unread in flight */
	}
	pthread_join(th, NULL);
	cr_assert_eq(a.failures, 0);
	cr_assert_geq(connections, 10, "only %d connections", connections);

	struct feed feed;
	feed_wait(&ts, NULL, 170, &feed);
	cr_assert_eq(got, feed.n, "received %zu events over %d connections, the feed has %zu", got, connections,
		     feed.n);
	for (size_t i = 0; i < feed.n; i++)
		cr_assert_str_eq(ids[i], feed.ev[i].position, "event %zu (exactly once, in order)", i);
	feed_free(&feed);
	free(ids);
	fd_test_server_stop(&ts);
}

Test(sse, resume_with_last_event_id_gets_every_event_once_in_order, .timeout = 180)
{
	resume_while_appending(no_projections);
}

Test(sse, resume_without_a_notifier, .timeout = 180)
{
	resume_while_appending(poll_only);
}

/* ---- filters ------------------------------------------------------------------------------ */

static void expect_filtered(struct fd_test_server *ts, const char *filters, size_t want)
{
	struct feed feed;
	feed_wait(ts, filters, want, &feed);
	char path[256];
	snprintf(path, sizeof path, "/events/stream?%s", filters);
	struct sse_conn c;
	cr_assert_eq(sse_open(&c, ts->port, path, NULL), 200);
	expect_events(&c, &feed, 0, feed.n, 10000);
	expect_no_event(&c, 1200);
	sse_close(&c);
	feed_free(&feed);
}

Test(sse, category_and_types_filters, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, no_projections);
	for (int i = 0; i < 18; i++) {
		static const char *const streams[] = { "order-1", "order-2", "customer-1" };
		static const char *const types[] = { "A", "B", "C" };
		free(append(&ts, streams[i % 3], types[(i / 3) % 3], i));
	}
	expect_filtered(&ts, "category=order", 12);
	expect_filtered(&ts, "types=B", 6);
	expect_filtered(&ts, "types=A,C", 12);
	expect_filtered(&ts, "category=customer&types=B,C", 4);

	/* Live, filtered: other events do not show and do not hold the stream back. */
	struct sse_conn c;
	cr_assert_eq(sse_open(&c, ts.port, "/events/stream?category=customer&types=C&after=0", NULL), 200);
	struct sse_frame f = { 0 };
	for (int i = 0; i < 2; i++)
		cr_assert_eq(sse_next_event(&c, &f, fd_test_now_ms() + 5000), 1);
	free(append(&ts, "order-1", "C", 100));
	free(append(&ts, "customer-1", "B", 101));
	char *pos = append(&ts, "customer-2", "C", 102);
	cr_assert_eq(sse_next_event(&c, &f, fd_test_now_ms() + 10000), 1);
	cr_assert_str_eq(f.id, pos);
	cr_assert_str_eq(f.event, "C");
	free(pos);
	frame_clear(&f);
	sse_close(&c);
	fd_test_server_stop(&ts);
}

/* ---- errors ------------------------------------------------------------------------------------ */

static void get_h(const struct fd_test_server *ts, const char *path, const char *headers, struct fd_test_resp *r)
{
	cr_assert_eq(fd_test_http(ts->port, "GET", path, headers, NULL, 0, r), 0);
}

Test(sse, malformed_cursors_and_filters_are_400, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, no_projections);
	struct fd_test_resp r;
	static const char *const bad_after[] = { "abc", "1-", "-1", "1-2-3", "" };
	for (size_t i = 0; i < sizeof bad_after / sizeof bad_after[0]; i++) {
		char path[64];
		snprintf(path, sizeof path, "/events/stream?after=%s", bad_after[i]);
		get_h(&ts, path, NULL, &r);
		fd_test_assert_problem(&r, 400, "invalid-parameter");
		cr_assert_str_eq(fd_test_json_str(&r, "parameter"), "after");
		fd_test_resp_free(&r);
	}
	get_h(&ts, "/events/stream", "Last-Event-ID: 12-x\r\n", &r);
	fd_test_assert_problem(&r, 400, "invalid-header");
	cr_assert_str_eq(fd_test_json_str(&r, "header"), "Last-Event-ID");
	fd_test_resp_free(&r);
	/* A malformed header is refused even when ?after= is fine. */
	get_h(&ts, "/events/stream?after=0", "Last-Event-ID: nope\r\n", &r);
	fd_test_assert_problem(&r, 400, "invalid-header");
	fd_test_resp_free(&r);
	get_h(&ts, "/events/stream?category=order-1", NULL, &r);
	fd_test_assert_problem(&r, 400, "invalid-parameter");
	cr_assert_str_eq(fd_test_json_str(&r, "parameter"), "category");
	fd_test_resp_free(&r);
	get_h(&ts, "/events/stream?types=A,,B", NULL, &r);
	fd_test_assert_problem(&r, 400, "invalid-parameter");
	cr_assert_str_eq(fd_test_json_str(&r, "parameter"), "types");
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_http(ts.port, "POST", "/events/stream", NULL, "{}", 2, &r), 0);
	fd_test_assert_problem(&r, 405, "method-not-allowed");
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

Test(sse, unreachable_database_is_503, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, "postgresql://postgres@127.0.0.1:1/x", no_projections);
	struct fd_test_resp r;
	get_h(&ts, "/events/stream", NULL, &r);
	fd_test_assert_problem(&r, 503, "database-unavailable");
	char ra[16];
	cr_assert(fd_test_header(&r, "Retry-After", ra, sizeof ra));
	fd_test_resp_free(&r);
	fd_test_server_stop(&ts);
}

/* ---- heartbeats ------------------------------------------------------------------------------ */

Test(sse, heartbeats_while_idle, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, heartbeat_1s);
	struct sse_conn c;
	cr_assert_eq(sse_open(&c, ts.port, "/events/stream", NULL), 200);
	struct sse_frame f = { 0 };
	cr_assert_eq(sse_next(&c, &f, fd_test_now_ms() + 5000), 1);
	cr_assert_eq(f.retry, 2000);
	long long t0 = fd_test_now_ms();
	int beats = 0;
	while (beats < 3) {
		cr_assert_eq(sse_next(&c, &f, t0 + 6000), 1, "only %d heartbeats in 6 s", beats);
		cr_assert(f.is_comment && !f.has_id && !f.data, "an idle stream sends only heartbeats");
		cr_assert_str_eq(f.comment, " heartbeat");
		beats++;
	}
	long long took = fd_test_now_ms() - t0;
	cr_assert_geq(took, 2000, "3 heartbeats in %lld ms: not one per second", took);
	/* An event resets the idle timer; the stream still works. */
	char *pos = append(&ts, "hb-1", "Beat", 1);
	cr_assert_eq(sse_next_event(&c, &f, fd_test_now_ms() + 5000), 1);
	cr_assert_str_eq(f.id, pos);
	free(pos);
	frame_clear(&f);
	sse_close(&c);
	fd_test_server_stop(&ts);
}

static void heartbeat_beyond_idle_timeout(struct fd_config *cfg)
{
	no_projections(cfg);
	cfg->sse_heartbeat_s = 3;
	cfg->request_timeout_s = 2;
}

Test(sse, idle_timeout_shorter_than_the_heartbeat_does_not_cut_streams, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, heartbeat_beyond_idle_timeout);
	struct sse_conn c;
	cr_assert_eq(sse_open(&c, ts.port, "/events/stream", NULL), 200);
	struct sse_frame f = { 0 };
	cr_assert_eq(sse_next(&c, &f, fd_test_now_ms() + 5000), 1);
	cr_assert_eq(f.retry, 2000);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(sse_next(&c, &f, fd_test_now_ms() + 5000), 1, "heartbeat %d: the stream %s", i,
			     c.closed || c.ended ? "was closed" : "stayed silent");
		cr_assert(f.is_comment);
	}
	frame_clear(&f);
	sse_close(&c);
	fd_test_server_stop(&ts);
}

/* ---- many clients, the cap, shutdown --------------------------------------------------------------- */

/* Open a stream and go away without reading: returns once the server has answered. */
static void vanish(uint16_t port)
{
	int fd = connect_port(port);
	send_stream_request(fd, "/events/stream", NULL);
	struct pollfd p = { .fd = fd, .events = POLLIN };
	cr_assert_eq(poll(&p, 1, 10000), 1, "no answer to a stream request");
	close(fd);
}

Test(sse, vanished_clients_do_not_block_writers, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, no_projections);
	for (int i = 0; i < 5; i++)
		free(append(&ts, "pre-1", "Pre", i));
	for (int i = 0; i < 30; i++)
		vanish(ts.port);
	/* Writers neither wait for the streams nor for pool connections (pool_size is 4). */
	for (int i = 0; i < 20; i++) {
		long long t0 = fd_test_now_ms();
		free(append(&ts, "after-1", "After", i));
		long long took = fd_test_now_ms() - t0;
		cr_assert_lt(took, 1000, "append %d took %lld ms with 30 vanished stream clients", i, took);
	}
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts.port, "/healthz", &r), 0);
	cr_assert_eq(r.status, 200);
	fd_test_resp_free(&r);
	struct feed feed;
	feed_wait(&ts, NULL, 25, &feed);
	struct sse_conn c;
	cr_assert_eq(sse_open(&c, ts.port, "/events/stream", NULL), 200);
	expect_events(&c, &feed, 0, feed.n, 10000);
	sse_close(&c);
	feed_free(&feed);
	long long t0 = fd_test_now_ms();
	fd_test_server_stop(&ts);
	cr_assert_lt(fd_test_now_ms() - t0, 3000, "stopping took %lld ms", fd_test_now_ms() - t0);
}

Test(sse, slots_of_vanished_clients_come_back, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, five_streams);
	for (int i = 0; i < 5; i++)
		vanish(ts.port);
	/* The default heartbeat is 15 s; the slots must free up long before a write would fail. */
	long long t0 = fd_test_now_ms();
	int status = 0;
	while (fd_test_now_ms() - t0 < 5000) {
		struct sse_conn c;
		status = sse_open(&c, ts.port, "/events/stream", NULL);
		sse_close(&c);
		if (status == 200)
			break;
		cr_assert_eq(status, 503);
		fd_test_sleep_ms(100);
	}
	cr_assert_eq(status, 200, "no stream slot came back within 5 s of 5 clients vanishing");
	fd_test_server_stop(&ts);
}

Test(sse, stream_cap_answers_503, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, two_streams);
	struct sse_conn a, b;
	cr_assert_eq(sse_open(&a, ts.port, "/events/stream", NULL), 200);
	cr_assert_eq(sse_open(&b, ts.port, "/events/stream", NULL), 200);
	struct fd_test_resp r;
	get_h(&ts, "/events/stream", NULL, &r);
	fd_test_assert_problem(&r, 503, "too-many-streams");
	char ra[16];
	cr_assert(fd_test_header(&r, "Retry-After", ra, sizeof ra), "503 without Retry-After");
	fd_test_resp_free(&r);
	/* Other requests are not affected. */
	cr_assert_eq(fd_test_get(ts.port, "/events", &r), 0);
	cr_assert_eq(r.status, 200);
	fd_test_resp_free(&r);
	sse_close(&a);
	long long t0 = fd_test_now_ms();
	int status = 0;
	while (fd_test_now_ms() - t0 < 5000) {
		struct sse_conn c;
		status = sse_open(&c, ts.port, "/events/stream", NULL);
		sse_close(&c);
		if (status == 200)
			break;
		fd_test_sleep_ms(100);
	}
	cr_assert_eq(status, 200, "the closed stream's slot did not come back");
	sse_close(&b);
	fd_test_server_stop(&ts);
}

static void stop_with_open_streams(void (*tweak)(struct fd_config *))
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, tweak);
	free(append(&ts, "s-1", "One", 1));
	struct sse_conn c[10];
	struct sse_frame f = { 0 };
	for (int i = 0; i < 10; i++) {
		cr_assert_eq(sse_open(&c[i], ts.port, "/events/stream", NULL), 200);
		cr_assert_eq(sse_next_event(&c[i], &f, fd_test_now_ms() + 5000), 1);
	}
	for (int i = 0; i < 10; i++)
		vanish(ts.port);
	long long t0 = fd_test_now_ms();
	fd_test_server_stop(&ts);
	long long took = fd_test_now_ms() - t0;
	cr_assert_lt(took, 3000, "stopping with 20 streams open took %lld ms", took);
	for (int i = 0; i < 10; i++) {
		cr_assert_eq(sse_next(&c[i], &f, fd_test_now_ms() + 2000), -1, "stream %d did not end", i);
		sse_close(&c[i]);
	}
	frame_clear(&f);
}

Test(sse, server_stops_promptly_with_streams_open, .timeout = 60)
{
	stop_with_open_streams(no_projections);
}

Test(sse, server_stops_promptly_with_polling_streams_open, .timeout = 60)
{
	stop_with_open_streams(poll_only);
}

/* An append in one process wakes notifiers in the others: the announcing notifier sends NOTIFY. */
Test(sse_notifier, announce_reaches_another_process_notifier, .timeout = 60)
{
	char *url = fd_test_db_new();
	struct fd_notifier *here = NULL, *there = NULL;
	cr_assert_eq(fd_notifier_start(url, &here), FD_OK);
	cr_assert_eq(fd_notifier_start(url, &there), FD_OK);
	for (int i = 0; i < 500 && !(fd_notifier_listening(here) && fd_notifier_listening(there)); i++)
		usleep(10000);
	cr_assert(fd_notifier_listening(here) && fd_notifier_listening(there));
	uint64_t seen = fd_notifier_generation(there);
	/* Nothing is announced: the other notifier stays put (it does not poll). */
	cr_assert_eq(fd_notifier_wait(there, seen, 300), seen);
	fd_notifier_announce(here, "order");
	cr_assert_neq(fd_notifier_wait(there, seen, 5000), seen, "the NOTIFY did not reach the other notifier");
	fd_notifier_stop(there);
	fd_notifier_stop(here);
	free(url);
}

/* Start two notifiers on one database and wait until both listen. */
static void two_notifiers(const char *url, struct fd_notifier **here, struct fd_notifier **there)
{
	cr_assert_eq(fd_notifier_start(url, here), FD_OK);
	cr_assert_eq(fd_notifier_start(url, there), FD_OK);
	for (int i = 0; i < 500 && !(fd_notifier_listening(*here) && fd_notifier_listening(*there)); i++)
		usleep(10000);
	cr_assert(fd_notifier_listening(*here) && fd_notifier_listening(*there));
}

/*
 * A follower of some categories sleeps through appends to others, here and
 * in another process, and wakes for its own.
 */
Test(sse_notifier, followers_wake_only_for_their_categories, .timeout = 60)
{
	char *url = fd_test_db_new();
	struct fd_notifier *here = NULL, *there = NULL;
	two_notifiers(url, &here, &there);
	static const char *const products[] = { "product", NULL };
	static const char *const orders[] = { "inventory", "order", NULL };
	uint64_t seen_there = fd_notifier_generation(there), seen_here = fd_notifier_generation(here);
	for (int i = 0; i < 20; i++)
		fd_notifier_announce(here, "order");
	/* The order follower in the other process wakes; the product followers, here and there, do not. */
	uint64_t woke = fd_notifier_wait_for(there, seen_there, orders, 5000);
	cr_assert_gt(woke, seen_there, "the order NOTIFY did not reach the other process");
	cr_assert_eq(fd_notifier_wait_for(there, seen_there, products, 300), seen_there,
		     "a product follower woke for order events in another process");
	cr_assert_eq(fd_notifier_wait_for(here, seen_here, products, 300), seen_here,
		     "a product follower woke for order events in its own process");
	cr_assert_gt(fd_notifier_wait_for(here, seen_here, orders, 0), seen_here, "the local order follower was not woken");
	/* A follower of everything wakes for anything. */
	cr_assert_gt(fd_notifier_wait_for(there, seen_there, NULL, 0), seen_there);
	/* Now a product append: the product follower there wakes, and the order follower does not again. */
	uint64_t orders_seen = fd_notifier_wait_for(there, seen_there, orders, 0);
	fd_notifier_announce(here, "product");
	cr_assert_gt(fd_notifier_wait_for(there, seen_there, products, 5000), seen_there,
		     "the product NOTIFY did not reach the other process");
	cr_assert_eq(fd_notifier_wait_for(there, orders_seen, orders, 300), orders_seen,
		     "an order follower woke for a product event");
	fd_notifier_stop(there);
	fd_notifier_stop(here);
	free(url);
}

/* A NOTIFY without categories (as older processes send) and a reconnect wake every follower. */
Test(sse_notifier, notify_without_categories_wakes_every_follower, .timeout = 60)
{
	char *url = fd_test_db_new();
	struct fd_notifier *n = NULL;
	cr_assert_eq(fd_notifier_start(url, &n), FD_OK);
	for (int i = 0; i < 500 && !fd_notifier_listening(n); i++)
		usleep(10000);
	cr_assert(fd_notifier_listening(n));
	static const char *const products[] = { "product", NULL };
	uint64_t seen = fd_notifier_generation(n);
	PGconn *c = PQconnectdb(url);
	cr_assert_eq(PQstatus(c), CONNECTION_OK);
	PGresult *r = PQexec(c, "NOTIFY factd_events");
	cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK);
	PQclear(r);
	cr_assert_gt(fd_notifier_wait_for(n, seen, products, 5000), seen, "a NOTIFY without payload woke nobody");
	seen = fd_notifier_wait_for(n, seen, products, 0);
	r = PQexec(c, "SELECT pg_notify('factd_events', 'order,inventory')");
	cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK);
	PQclear(r);
	cr_assert_eq(fd_notifier_wait_for(n, seen, products, 500), seen, "woken by other categories' NOTIFY");
	r = PQexec(c, "SELECT pg_notify('factd_events', 'order,product')");
	cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK);
	PQclear(r);
	cr_assert_gt(fd_notifier_wait_for(n, seen, products, 5000), seen, "a NOTIFY naming the category woke nobody");
	PQfinish(c);
	fd_notifier_stop(n);
	free(url);
}

/*
 * More categories than a NOTIFY or the table holds: followers may be woken
 * for nothing, never missed.  Each of 300 distinct categories announced
 * once must reach a follower of it in another process.
 */
Test(sse_notifier, many_categories_never_leave_a_follower_asleep, .timeout = 120)
{
	char *url = fd_test_db_new();
	struct fd_notifier *here = NULL, *there = NULL;
	two_notifiers(url, &here, &there);
	for (int i = 0; i < 300; i++) {
		char cat[48];
		snprintf(cat, sizeof cat, "category_%03d_with_a_long_name_to_fill_payloads", i);
		const char *const mine[] = { cat, NULL };
		uint64_t seen = fd_notifier_generation(there);
		/* Others announced in the same burst, so slots and payloads overflow. */
		for (int j = 0; j < 40; j++) {
			char other[48];
			snprintf(other, sizeof other, "other_category_number_%03d_%02d", i, j);
			fd_notifier_announce(here, other);
		}
		fd_notifier_announce(here, cat);
		cr_assert_gt(fd_notifier_wait_for(there, seen, mine, 5000), seen, "the follower of %s was not woken", cat);
	}
	fd_notifier_stop(there);
	fd_notifier_stop(here);
	free(url);
}

Test(sse_notifier, payload_matching)
{
	static const char *const cats[] = { "order", "product", NULL };
	cr_assert(fd_notify_payload_matches("", cats), "an empty payload concerns everyone");
	cr_assert(fd_notify_payload_matches(NULL, cats));
	cr_assert(fd_notify_payload_matches("order", cats));
	cr_assert(fd_notify_payload_matches("bench,product", cats));
	cr_assert(fd_notify_payload_matches("x,order,y", cats));
	cr_assert_not(fd_notify_payload_matches("orders,produc,bench", cats), "a prefix or a longer name matched");
	cr_assert_not(fd_notify_payload_matches("bench", cats));
	cr_assert(fd_notify_payload_matches("bench", NULL), "a follower of everything");
}

/* ---- parking (fd_req_park): long polls that hold no thread ------------------------------------------------ */

static void two_workers(struct fd_config *cfg)
{
	no_projections(cfg);
	cfg->workers = 2;
	cfg->pool_size = 4;
}

static int send_park(uint16_t port, const char *after, int wait_ms)
{
	int fd = connect_port(port);
	char req[256];
	int n = snprintf(req, sizeof req, "GET /test/park?after=%s&wait_ms=%d HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
			 after, wait_ms);
	cr_assert_eq(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
	return fd;
}

static bool has_bytes(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, 0) > 0;
}

/* Read the whole answer of a park request (the server closes after it). */
static void read_park(int fd, struct fd_test_resp *r)
{
	struct bytes b = { 0 };
	char tmp[4096];
	struct timeval tv = { .tv_sec = 30 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	ssize_t n;
	while ((n = recv(fd, tmp, sizeof tmp, 0)) > 0)
		bytes_add(&b, tmp, (size_t)n);
	close(fd);
	memset(r, 0, sizeof *r);
	cr_assert(b.len > 12, "no answer to a parked request");
	char *sep = strstr(b.p, "\r\n\r\n");
	cr_assert_not_null(sep);
	r->status = atoi(b.p + 9);
	r->head = strndup(b.p, (size_t)(sep - b.p));
	r->body = strdup(sep + 4);
	r->json = json_loads(r->body, 0, NULL);
	free(b.p);
}

/* Wait (up to 30 s) until `n` requests are parked. */
static void wait_parked(const struct fd_test_server *ts, unsigned n)
{
	long long deadline = fd_test_now_ms() + 30000;
	while (fd_server_parked(ts->srv) < n && fd_test_now_ms() < deadline)
		fd_test_sleep_ms(10);
	cr_assert_eq(fd_server_parked(ts->srv), n, "%u requests parked, not %u", fd_server_parked(ts->srv), n);
}

static char *feed_head(const struct fd_test_server *ts)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts->port, "/events/head", &r), 0);
	cr_assert_eq(r.status, 200);
	char *h = strdup(fd_test_json_str(&r, "head"));
	fd_test_resp_free(&r);
	return h;
}

/*
 * The feed's head once it shows the event appended at pos (taken over).
 * The feed is gap-safe across the whole cluster: another test's open
 * transaction can hold a fresh append back for a moment, and a head read
 * before it shows would make a parked request answer at once with it.
 */
static char *visible_head(const struct fd_test_server *ts, char *pos)
{
	char *h = feed_head(ts);
	for (long long end = fd_test_now_ms() + 30000; strcmp(h, pos) != 0; h = feed_head(ts)) {
		cr_assert_lt(fd_test_now_ms(), end, "the feed's head stayed at %s, not %s", h, pos);
		free(h);
		fd_test_sleep_ms(10);
	}
	free(pos);
	return h;
}

Test(parking, parked_requests_hold_no_worker_and_wake_on_appends, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, two_workers);
	wait_listening(&ts);
	char *head = visible_head(&ts, append(&ts, "park-1", "Before", 0));
	enum { N = 6 };
	int fds[N];
	for (int i = 0; i < N; i++)
		fds[i] = send_park(ts.port, head, 60000);
	wait_parked(&ts, N);
	/*
	 * Two workers, six requests waiting: were they holding a worker each, no
	 * other request would be served before they end.
	 */
	struct fd_test_resp h;
	cr_assert_eq(fd_test_get(ts.port, "/healthz", &h), 0);
	cr_assert_eq(h.status, 200, "no worker was free for another request");
	fd_test_resp_free(&h);
	/* An append (which needs a worker too) after `head`: every parked request wakes and answers it. */
	free(append(&ts, "other-1", "Other", 0));
	for (int i = 0; i < N; i++) {
		struct fd_test_resp r;
		read_park(fds[i], &r);
		cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
		cr_assert_eq(fd_test_json_int(&r, "count"), 1, "%s", r.body);
		cr_assert_str_eq(fd_test_json_str(&r, "wake"), "notified", "%s", r.body);
		cr_assert_geq(fd_test_json_int(&r, "runs"), 1, "the handler answered at once: %s", r.body);
		fd_test_resp_free(&r);
	}
	free(head);
	fd_test_server_stop(&ts);
}

Test(parking, parked_requests_stay_unanswered_until_there_is_something, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, two_workers);
	wait_listening(&ts);
	char *head = visible_head(&ts, append(&ts, "park-1", "Before", 0));
	enum { N = 6 };
	int fds[N];
	for (int i = 0; i < N; i++)
		fds[i] = send_park(ts.port, head, 60000);
	wait_parked(&ts, N);
	/* More requests than workers are served meanwhile, and the parked ones have no answer yet. */
	for (int i = 0; i < 10; i++) {
		struct fd_test_resp r;
		cr_assert_eq(fd_test_get(ts.port, "/events/head", &r), 0);
		cr_assert_eq(r.status, 200);
		fd_test_resp_free(&r);
	}
	for (int i = 0; i < N; i++)
		cr_assert(!has_bytes(fds[i]), "parked request %d answered with nothing to say", i);
	free(append(&ts, "park-1", "After", 1));
	for (int i = 0; i < N; i++) {
		struct fd_test_resp r;
		read_park(fds[i], &r);
		cr_assert_eq(fd_test_json_int(&r, "count"), 1, "%s", r.body);
		fd_test_resp_free(&r);
	}
	free(head);
	fd_test_server_stop(&ts);
}

Test(parking, a_parked_request_times_out_with_nothing, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, two_workers);
	char *head = visible_head(&ts, append(&ts, "park-1", "Before", 0));
	int fd = send_park(ts.port, head, 300);
	struct fd_test_resp r;
	read_park(fd, &r);
	cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
	cr_assert_eq(fd_test_json_int(&r, "count"), 0, "%s", r.body);
	cr_assert_str_eq(fd_test_json_str(&r, "wake"), "timeout", "%s", r.body);
	fd_test_resp_free(&r);
	free(head);
	fd_test_server_stop(&ts);
}

Test(parking, stopping_answers_parked_requests, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, two_workers);
	char *head = visible_head(&ts, append(&ts, "park-1", "Before", 0));
	int fd = send_park(ts.port, head, 60000);
	wait_parked(&ts, 1);
	struct fd_test_resp r;
	fd_test_server_stop(&ts);
	/* Answered because the server stopped, long before its 60 s were up. */
	read_park(fd, &r);
	cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
	cr_assert_str_eq(fd_test_json_str(&r, "wake"), "stopping", "%s", r.body);
	fd_test_resp_free(&r);
	free(head);
}
/* Personal data on the live feed: opened while the subject lives, null (listed in "erased") after erasure. */
static void with_master_key(struct fd_config *c)
{
	char path[] = "/tmp/factd-sse-key-XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	static const char key[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
	cr_assert_eq(write(fd, key, sizeof key - 1), (ssize_t)(sizeof key - 1));
	close(fd);
	c->master_key_file = strdup(path);
	c->projections = 0;
}

static char *first_event_data(uint16_t port)
{
	struct sse_conn c;
	cr_assert_eq(sse_open(&c, port, "/events/stream", NULL), 200, "head: %s", c.head);
	struct sse_frame f = { 0 };
	cr_assert_eq(sse_next_event(&c, &f, fd_test_now_ms() + 10000), 1, "no event on the live feed");
	char *data = f.data ? strdup(f.data) : NULL;
	frame_clear(&f);
	sse_close(&c);
	cr_assert(data);
	return data;
}

Test(sse, personal_values_open_until_their_subject_is_erased, .timeout = 60)
{
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_master_key);
	struct fd_test_resp r;
	const char *body = "{\"expected_version\":\"any\",\"events\":[{\"type\":\"Joined\",\"data\":{\"email\":\"sse.person@example.org\","
			   "\"plan\":\"gold\"},\"metadata\":{\"personal\":{\"subject\":\"sse-1\",\"paths\":[\"/email\"]}}}]}";
	cr_assert_eq(fd_test_http(ts.port, "POST", "/streams/member-1/events", NULL, body, strlen(body), &r), 0);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);
	char *data = first_event_data(ts.port);
	json_t *ev = json_loads(data, 0, NULL);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(ev, "data"), "email")), "sse.person@example.org",
			 "%s", data);
	cr_assert_null(json_object_get(ev, "erased"));
	json_decref(ev);
	free(data);

	cr_assert_eq(fd_test_http(ts.port, "DELETE", "/subjects/sse-1", NULL, NULL, 0, &r), 0);
	cr_assert_eq(r.status, 204, "%s", r.body);
	fd_test_resp_free(&r);
	data = first_event_data(ts.port);
	ev = json_loads(data, 0, NULL);
	cr_assert(json_is_null(json_object_get(json_object_get(ev, "data"), "email")), "%s", data);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(ev, "data"), "plan")), "gold");
	cr_assert_str_eq(json_string_value(json_array_get(json_object_get(ev, "erased"), 0)), "/email", "%s", data);
	cr_assert_null(strstr(data, "sse.person"), "%s", data);
	json_decref(ev);
	free(data);
	fd_test_server_stop(&ts);
}
