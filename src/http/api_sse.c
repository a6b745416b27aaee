/*
 * api_sse.c - GET /events/stream: the global feed as Server-Sent Events.
 *
 * The stream starts after ?after=, or after the Last-Event-ID header (which
 * wins: a browser's EventSource reconnects to the same URL, ?after= and all,
 * with Last-Event-ID set to the last event it got), or at the beginning.  It
 * catches up from the log one feed page at a time and then follows new
 * events.  Each event is one frame:
 *
 *   id: <position>\nevent: <type>\ndata: <the event's JSON, as GET /events has it>\n\n
 *
 * preceded once by "retry: 2000" and interleaved with ": heartbeat" comment
 * frames after FACTD_SSE_HEARTBEAT_S seconds of silence.  Pages come from
 * fd_store_read_feed, so the stream is gap-safe like the feed, and a resumed
 * stream starts exactly after the last event the client saw.
 *
 * Threading: libmicrohttpd runs each connection on a thread of its own, and
 * calls sse_read on it whenever it can send more; sse_read blocks until it
 * has bytes (a frame or a heartbeat) or the server stops, because returning
 * 0 would make that thread spin.  The stream borrows a pool connection only
 * for the statement that reads a page, never while waiting, so idle or slow
 * clients never hold back writers; at most one page of frames is buffered per
 * stream.  While caught up it waits on the notifier (app->notifier, woken
 * when appends are announced on factd_events) and reads the feed when woken,
 * at most every 100 ms (following up a read that found nothing new after
 * 200, 400 and 800 ms), and otherwise every second: an event can become
 * visible without a notification of its own (when an older transaction that
 * held it back ends), notifications can be lost, and there may be no
 * notifier at all.  Waits are sliced to a second so that a stopping server,
 * or a client that has closed its connection, ends the stream promptly;
 * FACTD_MAX_STREAMS bounds the streams (and threads).
 */
#include "http/api.h"

#include <jansson.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "factd/buf.h"
#include "factd/events.h"
#include "factd/jsonspan.h"
#include "factd/log.h"
#include "factd/notify.h"
#include "http/problem.h"
#include "store/replicas.h"

#define PAGE_LIMIT 500          /* events per feed read */
#define RETRY_FRAME "retry: 2000\n\n"
#define HEARTBEAT_FRAME ": heartbeat\n\n"
#define POLL_MS 1000            /* feed reads while caught up and not woken */
#define MIN_READ_GAP_MS 100     /* woken reads of one stream at most this often */
#define MAX_READ_GAP_MS 800     /* longest follow-up gap after a woken read found nothing */
#define SLICE_MS 1000           /* longest single wait on the notifier */
#define SLEEP_SLICE_MS 250      /* longest single sleep without one */
#define KEEP_BUFFER 65536       /* output buffer capacity kept between pages */

struct sse {
	struct fd_ctx *ctx;             /* borrowed */
	struct fd_pool *catchup;        /* a read replica serving the catch-up; NULL: the primary */
	int replica;                    /* its index */
	struct fd_server *server;       /* borrowed; outlives every stream */
	int sock;                       /* the client's socket, -1 when unknown */
	struct fd_api_feed_filter filter;
	bool upcast;                    /* ?upcast=true: events at the current version of their type */
	const char **wide_types;        /* with upcast, ?types= and the names they had before renames (owned) */
	struct fd_cursor cursor;        /* the next read starts after this */
	struct fd_buf out;              /* frames not yet handed to libmicrohttpd */
	size_t out_pos;
	bool caught_up;                 /* the last read returned a short page */
	bool wanted;                    /* read again after gap_ms (woken, or following up) */
	bool failing;                   /* the last read failed (logged once) */
	uint64_t generation;            /* the notifier's generation seen last */
	int64_t last_write_ms;
	int64_t last_read_ms;
	int64_t gap_ms;                 /* see next_read_ms */
	int64_t heartbeat_ms;
	char request_id[FD_REQUEST_ID_MAX + 1];
};

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void sse_free(void *cls)
{
	struct sse *s = cls;
	fd_api_feed_filter_release(&s->filter);
	free(s->wide_types);
	fd_buf_release(&s->out);
	free(s);
}

/* Append `len` bytes as data: lines (a line break inside starts a new data: line). */
static enum fd_err append_data(struct fd_buf *b, const char *p, size_t len)
{
	enum fd_err err = fd_buf_append(b, "data: ", 6);
	while (!err && len) {
		size_t run = 0;
		while (run < len && p[run] != '\n' && p[run] != '\r')
			run++;
		err = fd_buf_append(b, p, run);
		if (!err && run < len) {
			size_t brk = p[run] == '\r' && run + 1 < len && p[run + 1] == '\n' ? 2 : 1;
			err = fd_buf_append(b, "\ndata: ", 7);
			run += brk;
		}
		p += run;
		len -= run;
	}
	return err ? err : fd_buf_append(b, "\n", 1);
}

/* One frame per event of a feed page (a JSON array rendered by PostgreSQL). */
static enum fd_err append_frames(struct sse *s, const char *events)
{
	size_t len = strlen(events), pos = 0;
	struct fd_span all = { 0, len }, ev, position, type;
	enum fd_err err = FD_OK;
	while (!err && fd_json_next_element(events, len, all, &pos, &ev)) {
		if (!fd_json_member(events, len, ev, "position", &position) ||
		    !fd_json_member(events, len, ev, "type", &type) || position.end - position.start < 3)
			return FD_ERR_INTERNAL;
		json_t *t = json_loadb(events + type.start, type.end - type.start, JSON_DECODE_ANY, NULL);
		if (!json_is_string(t)) {
			json_decref(t);
			return FD_ERR_INTERNAL;
		}
		/* The position is a plain "<tx>-<seq>" string: its bytes between the quotes. */
		err = fd_buf_appendf(&s->out, "id: %.*s\nevent: ", (int)(position.end - position.start - 2),
				     events + position.start + 1);
		const char *name = json_string_value(t);
		for (size_t i = 0, n = json_string_length(t); !err && i < n; i++) {
			char c = name[i] == '\n' || name[i] == '\r' || name[i] == '\0' ? ' ' : name[i];
			err = fd_buf_append(&s->out, &c, 1);
		}
		json_decref(t);
		if (!err)
			err = fd_buf_append(&s->out, "\n", 1);
		if (!err)
			err = append_data(&s->out, events + ev.start, ev.end - ev.start);
		if (!err)
			err = fd_buf_append(&s->out, "\n", 1);
	}
	return err;
}

/*
 * Read the next page after the cursor into the output buffer.  A woken read
 * that finds the feed where it was (the announced event is still held back
 * by an older transaction) is followed up after 200, 400, 800 ms.
 */
static enum fd_err read_page(struct sse *s)
{
	struct fd_feed_page page = { 0 };
	bool woken = s->wanted;
	s->wanted = false;
	s->last_read_ms = now_ms();
	/* Catch-up pages may come from a read replica; once caught up the stream follows the primary. */
	struct fd_pool *pool = s->catchup && !s->caught_up ? s->catchup : s->ctx->pool;
	enum fd_err err = fd_store_read_feed(pool, s->cursor, &s->filter.filter, PAGE_LIMIT, &page);
	if (err && pool != s->ctx->pool && (err == FD_ERR_UNAVAILABLE || err == FD_ERR_RETRY)) {
		fd_replicas_failed(s->ctx->replicas, s->replica, err);
		s->catchup = NULL;
		s->replica = -1;
		err = fd_store_read_feed(s->ctx->pool, s->cursor, &s->filter.filter, PAGE_LIMIT, &page);
	}
	if (err)
		return err;
	if (s->upcast) {
		char *up = NULL;
		if ((err = fd_api_upcast_events(s->ctx, page.events_json, &up))) {
			free(page.events_json);
			return err; /* an event newer than the code: the stream stops before it, as a follower does */
		}
		free(page.events_json);
		page.events_json = up;
	}
	err = append_frames(s, page.events_json);
	free(page.events_json);
	if (err)
		return err;
	bool moved = fd_cursor_cmp(&page.next, &s->cursor) > 0;
	s->cursor = page.next;
	s->caught_up = page.count < PAGE_LIMIT;
	if (s->caught_up)
		s->catchup = NULL;
	if (woken && !moved && s->gap_ms < MAX_READ_GAP_MS) {
		s->gap_ms *= 2;
		s->wanted = true;
	}
	return FD_OK;
}

/* When the next feed read is due, while caught up. */
static int64_t next_read_ms(const struct sse *s)
{
	return s->last_read_ms + (s->wanted ? s->gap_ms : POLL_MS);
}

/* Has the client closed its end (or reset the connection)? */
static bool client_gone(const struct sse *s)
{
	if (s->sock < 0)
		return false;
	struct pollfd p = { .fd = s->sock, .events = POLLRDHUP };
	return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* Sleep until `until` at most, or until a notification. */
static void wait_until(struct sse *s, int64_t until)
{
	int64_t left = until - now_ms();
	struct fd_notifier *n = s->ctx->notifier;
	if (left <= 0)
		return;
	if (n) {
		uint64_t g = fd_notifier_wait(n, s->generation, (unsigned)(left < SLICE_MS ? left : SLICE_MS));
		if (g != s->generation) {
			s->generation = g;
			s->wanted = true;
			s->gap_ms = MIN_READ_GAP_MS;
		}
	} else {
		if (left > SLEEP_SLICE_MS)
			left = SLEEP_SLICE_MS;
		struct timespec t = { (time_t)(left / 1000), (long)(left % 1000) * 1000000L };
		nanosleep(&t, NULL);
	}
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct sse *s = cls;
	for (;;) {
		if (fd_server_stopping(s->server))
			return FD_STREAM_END;
		if (s->out_pos < s->out.len) {
			size_t n = s->out.len - s->out_pos < max ? s->out.len - s->out_pos : max;
			memcpy(buf, s->out.data + s->out_pos, n);
			s->out_pos += n;
			if (s->out_pos == s->out.len) {
				if (s->out.cap > KEEP_BUFFER)
					fd_buf_release(&s->out);
				else
					fd_buf_reset(&s->out);
				s->out_pos = 0;
			}
			s->last_write_ms = now_ms();
			return (ssize_t)n;
		}
		int64_t now = now_ms();
		if (!s->caught_up || now >= next_read_ms(s)) {
			enum fd_err err = read_page(s);
			if (err == FD_ERR_NOMEM || err == FD_ERR_INTERNAL) {
				fd_log(FD_LOG_ERROR, "event stream %s: %s; closing it", s->request_id, fd_err_name(err));
				return FD_STREAM_ERROR;
			}
			if (err && !s->failing)
				fd_log(FD_LOG_WARN, "event stream %s: cannot read the feed (%s); retrying", s->request_id,
				       fd_err_name(err));
			s->failing = err != FD_OK;
			if (err)
				s->caught_up = true; /* wait for the next poll */
			continue;
		}
		if (now - s->last_write_ms >= s->heartbeat_ms) {
			if (fd_buf_append(&s->out, HEARTBEAT_FRAME, sizeof HEARTBEAT_FRAME - 1))
				return FD_STREAM_ERROR;
			continue;
		}
		if (client_gone(s))
			return FD_STREAM_END;
		int64_t until = next_read_ms(s);
		if (s->last_write_ms + s->heartbeat_ms < until)
			until = s->last_write_ms + s->heartbeat_ms;
		wait_until(s, until);
	}
}

static void bad_cursor(struct fd_resp *resp, const struct fd_req *req, bool header)
{
	static const char shape[] = "must be a cursor from the feed (\"<tx>-<seq>\") or 0";
	char detail[128];
	snprintf(detail, sizeof detail, "%s %s", header ? "Last-Event-ID" : "after", shape);
	if (header)
		fd_problem(resp, req, 400, "invalid-header", "Invalid header", detail,
			   json_pack("{s:s}", "header", "Last-Event-ID"));
	else
		fd_api_bad_param(resp, req, "after", detail);
}

void fd_api_event_stream(struct fd_req *req, struct fd_resp *resp)
{
	struct sse *s = calloc(1, sizeof *s);
	if (!s) {
		fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
		return;
	}
	s->ctx = req->ctx;
	s->server = req->server;
	s->sock = -1;
	s->replica = -1;
	s->heartbeat_ms = (int64_t)req->ctx->cfg->sse_heartbeat_s * 1000;
	s->gap_ms = MIN_READ_GAP_MS;
	snprintf(s->request_id, sizeof s->request_id, "%s", req->request_id);

	struct fd_cursor after = { 0, 0 }, last = { 0, 0 };
	const char *a = fd_req_query(req, "after");
	const char *l = fd_req_header(req, "Last-Event-ID");
	if (l && !*l)
		l = NULL; /* an EventSource that has seen no id sends none; treat an empty one alike */
	if (a && !fd_cursor_parse(a, &after)) {
		bad_cursor(resp, req, false);
		goto done;
	}
	if (l && !fd_cursor_parse(l, &last)) {
		bad_cursor(resp, req, true);
		goto done;
	}
	if (!fd_api_feed_filter_parse(req, resp, &s->filter) || !fd_api_upcast_param(req, resp, &s->upcast))
		goto done;
	if (s->upcast && s->filter.filter.ntypes && !fd_api_widen_types(&req->ctx->schemas, &s->filter.filter, &s->wide_types)) {
		fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
		goto done;
	}
	s->cursor = l ? last : after;

	if (!fd_req_stream_slot(req)) {
		char detail[96];
		snprintf(detail, sizeof detail, "this server already serves %u live streams; try again later",
			 req->ctx->cfg->max_streams);
		fd_problem(resp, req, 503, "too-many-streams", "Too many streams", detail, NULL);
		goto done;
	}
	if (req->ctx->notifier)
		s->generation = fd_notifier_generation(req->ctx->notifier);
	if (req->ctx->replicas) {
		struct fd_pool *pool = fd_req_read_pool(req, NULL);
		if (pool != req->ctx->pool) {
			s->catchup = pool;
			s->replica = req->replica;
		}
	}
	/* The first page now, so that an unreachable database is a 503 rather than an empty stream. */
	enum fd_err err = fd_buf_append(&s->out, RETRY_FRAME, sizeof RETRY_FRAME - 1);
	if (!err)
		err = read_page(s);
	if (req->replica >= 0 && s->replica < 0) { /* the replica failed: the primary served it */
		req->replica = -1;
		req->read_pool = req->ctx->pool;
	}
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		goto done;
	}
	resp->status = 200;
	fd_resp_header(resp, "X-Accel-Buffering", "no");
	if (strcmp(req->method, "HEAD") == 0) {
		/* The head alone: libmicrohttpd would end a streamed body with a last chunk even for HEAD. */
		fd_resp_header(resp, "Content-Type", "text/event-stream");
		goto done;
	}
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci)
		s->sock = ci->connect_fd;
	/*
	 * libmicrohttpd closes a connection that saw no I/O for its timeout,
	 * checked right after sse_read returns: allow a heartbeat interval of
	 * silence on top of the usual idle timeout.
	 */
	MHD_set_connection_option(req->conn, MHD_CONNECTION_OPTION_TIMEOUT,
				  req->ctx->cfg->request_timeout_s + req->ctx->cfg->sse_heartbeat_s);
	s->last_write_ms = now_ms();
	resp->content_type = "text/event-stream";
	resp->stream_read = sse_read;
	resp->stream_free = sse_free;
	resp->stream_cls = s;
	return;
done: /* a problem, or HEAD: no stream to hand over */
	sse_free(s);
}
