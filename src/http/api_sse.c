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
 * Threading: no stream has a thread of its own.  libmicrohttpd calls
 * sse_read on its polling thread whenever the connection can take more; it
 * never blocks and never touches the database.  With nothing to send it
 * suspends the connection, and whoever has something for it resumes it:
 *
 * - the hub (one thread per server, see live.h) follows the feed for all
 *   streams at once: while any stream is open it reads each new feed page
 *   once, unfiltered, turns every event into a ready frame (and, on demand,
 *   its upcast frame) kept in a ring of the recent events, and resumes every
 *   waiting stream; each stream then copies the frames its filter wants, after
 *   its own cursor.  The ring covers the feed from `base` (exclusive) to
 *   `head`: a stream whose cursor is in that range misses nothing there,
 *   since the feed is gap-safe.  The hub reads when the notifier announces
 *   appends (at most every 20 ms, following up a read that found nothing after
 *   200, 400 and 800 ms: an event can be held back by an older transaction)
 *   and otherwise every second (notifications can be lost, and there may be
 *   no notifier).  Every second it also resumes streams due a heartbeat and
 *   ends those whose client has gone (a suspended connection is not watched
 *   by libmicrohttpd).
 * - a stream behind the ring (a catch-up, or a slow client the ring has
 *   moved past) reads one filtered page of its own on the worker pool, then is
 *   resumed; a pool connection is only held for that statement.
 *
 * Buffers: a stream holds at most one page of frames (while catching up, or
 * one frame too large for the connection's write buffer); live frames are
 * copied from the ring straight into libmicrohttpd's buffer.  The ring keeps
 * at most RING_EVENTS events and RING_BYTES bytes of frames.
 * FACTD_MAX_STREAMS bounds the streams.  The hub's lock guards the ring, the
 * list of streams and each stream's suspension; sse_read and the hub call
 * libmicrohttpd's suspend and resume under it, so a stream is never resumed
 * after it was freed, nor left suspended when the server stops.
 */
#include "http/api.h"
#include "http/live.h"

#include <jansson.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
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
#define HUB_PAGES 20            /* pages the hub reads in one go before it lets streams send */
#define RETRY_FRAME "retry: 2000\n\n"
#define HEARTBEAT_FRAME ": heartbeat\n\n"
#define POLL_MS 1000            /* hub feed reads when not woken */
#define MIN_READ_GAP_MS 100     /* woken hub reads at most this often: each read resumes every waiting stream */
#define FOLLOW_UP_MS 200        /* first follow-up after a woken read that found nothing */
#define MAX_FOLLOW_UP_MS 800
#define TICK_MS 1000            /* heartbeats, vanished clients, retries of failed reads */
#define RING_EVENTS 8192        /* a power of two */
#define RING_BYTES ((size_t)32 << 20)
#define KEEP_BUFFER 4096        /* output buffer capacity a stream keeps once drained */

/* One event in the hub's ring, with its frame ready to send. */
struct ring_ev {
	struct fd_cursor pos;
	char *category;         /* owned */
	char *type;             /* owned: the type as stored */
	char *frame;            /* owned: id, event and data lines */
	size_t frame_len;
	size_t data_off, data_len; /* the event's JSON inside frame */
	char *up_frame;         /* owned: the frame of the upcast event, NULL until a stream wants it */
	size_t up_len;
	bool up_failed;         /* does not upcast: upcast streams stop before it */
};

struct sse;

struct fd_sse_hub {
	struct fd_ctx *ctx;              /* borrowed */
	struct fd_workers *workers;      /* borrowed */
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;             /* wakes the thread without a notifier, and on quit */
	bool quit, stopping;
	struct ring_ev *ring;            /* RING_EVENTS slots; events first..next-1 (absolute indices) */
	uint64_t first, next;
	size_t bytes;                    /* frames held */
	bool valid;                      /* base and head are set */
	struct fd_cursor base, head;     /* the ring holds every event after base up to head */
	struct sse *streams;             /* doubly linked */
	size_t nstreams;
	bool failing;                    /* the last feed read failed (logged once) */
};

struct sse {
	struct fd_ctx *ctx;             /* borrowed */
	struct fd_sse_hub *hub;         /* borrowed; outlives every stream */
	struct MHD_Connection *conn;
	struct fd_pool *catchup;        /* a read replica serving the catch-up; NULL: the primary */
	int replica;                    /* its index */
	int sock;                       /* the client's socket, -1 when unknown */
	struct sse *prev, *next;        /* in hub->streams while registered */
	bool registered;
	bool suspended;                 /* under hub->lock: the connection is suspended */
	bool paging;                    /* a page job is queued or running (suspended meanwhile) */
	bool behind;                    /* the next frames come from a page read of its own */
	bool gone;                      /* the client has closed its end */
	bool fatal;                     /* out of memory or a bad page: the stream ends with an error */
	bool failing;                   /* the last page read failed (logged once) */
	bool stalled;                   /* an event does not upcast (logged once) */
	int64_t retry_ms;               /* after a failed read, the next not before this */
	struct fd_job job;
	struct fd_api_feed_filter filter;
	bool upcast;                    /* ?upcast=true: events at the current version of their type */
	const char **wide_types;        /* with upcast, ?types= and the names they had before renames (owned) */
	struct fd_cursor cursor;        /* every event up to here was sent or is not wanted */
	struct fd_buf out;              /* frames not yet handed to libmicrohttpd */
	size_t out_pos;
	int64_t last_write_ms;
	int64_t heartbeat_ms;
	char request_id[FD_REQUEST_ID_MAX + 1];
};

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- frames ------------------------------------------------------------------ */

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

/*
 * The frame of one event (its JSON at events[ev]) appended to b; *type gets
 * its type (caller frees) when asked for, *data_off the offset in b where its
 * data line's JSON starts.
 */
static enum fd_err append_frame(struct fd_buf *b, const char *events, size_t len, struct fd_span ev, char **type,
				size_t *data_off)
{
	struct fd_span position, ty;
	if (!fd_json_member(events, len, ev, "position", &position) || !fd_json_member(events, len, ev, "type", &ty) ||
	    position.end - position.start < 3)
		return FD_ERR_INTERNAL;
	json_t *t = json_loadb(events + ty.start, ty.end - ty.start, JSON_DECODE_ANY, NULL);
	if (!json_is_string(t)) {
		json_decref(t);
		return FD_ERR_INTERNAL;
	}
	/* The position is a plain "<tx>-<seq>" string: its bytes between the quotes. */
	enum fd_err err = fd_buf_appendf(b, "id: %.*s\nevent: ", (int)(position.end - position.start - 2),
					 events + position.start + 1);
	const char *name = json_string_value(t);
	for (size_t i = 0, n = json_string_length(t); !err && i < n; i++) {
		char c = name[i] == '\n' || name[i] == '\r' || name[i] == '\0' ? ' ' : name[i];
		err = fd_buf_append(b, &c, 1);
	}
	if (!err && type && !(*type = strdup(name)))
		err = FD_ERR_NOMEM;
	json_decref(t);
	if (!err)
		err = fd_buf_append(b, "\n", 1);
	if (data_off)
		*data_off = b->len + 6; /* after "data: " */
	if (!err)
		err = append_data(b, events + ev.start, ev.end - ev.start);
	if (!err)
		err = fd_buf_append(b, "\n", 1);
	return err;
}

/* One frame per event of a feed page (a JSON array rendered by PostgreSQL). */
static enum fd_err append_frames(struct fd_buf *b, const char *events)
{
	size_t len = strlen(events), pos = 0;
	struct fd_span all = { 0, len }, ev;
	enum fd_err err = FD_OK;
	while (!err && fd_json_next_element(events, len, all, &pos, &ev))
		err = append_frame(b, events, len, ev, NULL, NULL);
	return err;
}

/* ---- the hub's ring ------------------------------------------------------------ */

static void ring_ev_release(struct ring_ev *e)
{
	free(e->category);
	free(e->type);
	free(e->frame);
	free(e->up_frame);
	memset(e, 0, sizeof *e);
}

static size_t ring_ev_bytes(const struct ring_ev *e)
{
	return e->frame_len + e->up_len + sizeof *e;
}

static struct ring_ev *ring_at(struct fd_sse_hub *hub, uint64_t i)
{
	return &hub->ring[i & (RING_EVENTS - 1)];
}

static void ring_evict_first(struct fd_sse_hub *hub)
{
	struct ring_ev *e = ring_at(hub, hub->first++);
	hub->base = e->pos;
	hub->bytes -= ring_ev_bytes(e);
	ring_ev_release(e);
}

/* Forget everything (no stream is left); the next stream's cursor starts it again. */
static void ring_reset(struct fd_sse_hub *hub)
{
	while (hub->first < hub->next)
		ring_evict_first(hub);
	hub->valid = false;
}

/* The first event in the ring after `c`. */
static uint64_t ring_first_after(struct fd_sse_hub *hub, const struct fd_cursor *c)
{
	uint64_t lo = hub->first, hi = hub->next;
	while (lo < hi) {
		uint64_t mid = lo + (hi - lo) / 2;
		if (fd_cursor_cmp(&ring_at(hub, mid)->pos, c) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* A page's events as ring entries (outside the lock).  *n: how many were made. */
static enum fd_err make_entries(const char *events, struct ring_ev *out, size_t max, size_t *n)
{
	size_t len = strlen(events), pos = 0;
	struct fd_span all = { 0, len }, ev, stream;
	enum fd_err err = FD_OK;
	*n = 0;
	while (!err && *n < max && fd_json_next_element(events, len, all, &pos, &ev)) {
		struct ring_ev *e = &out[*n];
		struct fd_buf b = FD_BUF_INIT;
		struct fd_span position;
		memset(e, 0, sizeof *e);
		if (!fd_json_member(events, len, ev, "stream", &stream) ||
		    !fd_json_member(events, len, ev, "position", &position) || stream.end - stream.start < 3 ||
		    position.end - position.start < 3 || position.end - position.start > 64)
			return FD_ERR_INTERNAL;
		char cur[72], name[FD_STREAM_MAX + 1];
		snprintf(cur, sizeof cur, "%.*s", (int)(position.end - position.start - 2), events + position.start + 1);
		/* Stream names are plain ASCII (fd_stream_name_valid): their bytes between the quotes. */
		snprintf(name, sizeof name, "%.*s", (int)(stream.end - stream.start - 2), events + stream.start + 1);
		char category[FD_STREAM_MAX + 1];
		fd_stream_category(name, category, sizeof category);
		if (!fd_cursor_parse(cur, &e->pos))
			return FD_ERR_INTERNAL;
		if (!(e->category = strdup(category)))
			return FD_ERR_NOMEM;
		(*n)++;
		err = append_frame(&b, events, len, ev, &e->type, &e->data_off);
		if (!err) {
			e->data_len = ev.end - ev.start;
			e->frame_len = b.len;
			if (!(e->frame = fd_buf_detach(&b)))
				err = FD_ERR_NOMEM;
		}
		fd_buf_release(&b);
	}
	return err;
}

/* The upcast frame of e, made on first use (CPU only).  False when it does not upcast. */
static bool upcast_frame(struct fd_sse_hub *hub, struct ring_ev *e)
{
	if (e->up_frame || e->up_failed)
		return e->up_frame != NULL;
	struct fd_buf in = FD_BUF_INIT, b = FD_BUF_INIT;
	char *up = NULL;
	enum fd_err err = fd_buf_appendf(&in, "[%.*s]", (int)e->data_len, e->frame + e->data_off);
	if (!err)
		err = fd_api_upcast_events(hub->ctx, in.data, &up);
	if (!err) {
		size_t len = strlen(up), pos = 0;
		struct fd_span all = { 0, len }, ev;
		err = fd_json_next_element(up, len, all, &pos, &ev) ? append_frame(&b, up, len, ev, NULL, NULL)
								     : FD_ERR_INTERNAL;
	}
	if (!err && (e->up_frame = fd_buf_detach(&b))) {
		e->up_len = strlen(e->up_frame);
		hub->bytes += e->up_len;
	} else {
		e->up_failed = true;
	}
	free(up);
	fd_buf_release(&in);
	fd_buf_release(&b);
	return e->up_frame != NULL;
}

/* ---- streams --------------------------------------------------------------------- */

/* Under hub->lock. */
static void resume(struct sse *s)
{
	s->suspended = false;
	MHD_resume_connection(s->conn);
}

static void resume_waiting(struct fd_sse_hub *hub)
{
	for (struct sse *s = hub->streams; s; s = s->next)
		if (s->suspended && !s->paging)
			resume(s);
}

static void sse_free(void *cls)
{
	struct sse *s = cls;
	if (s->registered) {
		struct fd_sse_hub *hub = s->hub;
		pthread_mutex_lock(&hub->lock);
		if (s->prev)
			s->prev->next = s->next;
		else
			hub->streams = s->next;
		if (s->next)
			s->next->prev = s->prev;
		if (--hub->nstreams == 0)
			ring_reset(hub);
		pthread_mutex_unlock(&hub->lock);
	}
	fd_api_feed_filter_release(&s->filter);
	free(s->wide_types);
	fd_buf_release(&s->out);
	free(s);
}

/* Is e one the stream's filter wants?  (The filter's types are the stored names, widened when upcasting.) */
static bool wanted(const struct sse *s, const struct ring_ev *e)
{
	const struct fd_feed_filter *f = &s->filter.filter;
	if (f->category && strcmp(f->category, e->category) != 0)
		return false;
	if (!f->ntypes)
		return true;
	for (size_t i = 0; i < f->ntypes; i++)
		if (strcmp(f->types[i], e->type) == 0)
			return true;
	return false;
}

/* Move buffered frames to buf. */
static size_t drain_out(struct sse *s, char *buf, size_t max)
{
	if (s->out_pos >= s->out.len)
		return 0;
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
	return n;
}

/*
 * Copy the ring's frames that the stream wants, after its cursor, to buf
 * (under hub->lock).  A frame larger than the room left goes to s->out when
 * nothing else was copied.
 */
static size_t copy_live(struct fd_sse_hub *hub, struct sse *s, char *buf, size_t max)
{
	if (!hub->valid) {
		/* The first stream: the hub follows on from its cursor. */
		hub->base = hub->head = s->cursor;
		hub->valid = true;
		return 0;
	}
	size_t n = 0;
	uint64_t i = ring_first_after(hub, &s->cursor);
	for (; i < hub->next; i++) {
		struct ring_ev *e = ring_at(hub, i);
		if (!wanted(s, e)) {
			s->cursor = e->pos;
			continue;
		}
		const char *f = e->frame;
		size_t len = e->frame_len;
		if (s->upcast) {
			if (!upcast_frame(hub, e)) {
				if (!s->stalled)
					fd_log(FD_LOG_WARN, "event stream %s: an event does not upcast; the stream waits before it",
					       s->request_id);
				s->stalled = true;
				return n;
			}
			f = e->up_frame;
			len = e->up_len;
		}
		if (len > max - n) {
			if (n > 0)
				return n;
			if (fd_buf_append(&s->out, f, len) != FD_OK) {
				s->fatal = true;
				return 0;
			}
			s->cursor = e->pos;
			return 0;
		}
		memcpy(buf + n, f, len);
		n += len;
		s->cursor = e->pos;
	}
	if (fd_cursor_cmp(&hub->head, &s->cursor) > 0)
		s->cursor = hub->head; /* everything up to the head was seen */
	return n;
}

/* Read the stream's next page after its cursor into s->out (on a worker, or in the handler). */
static enum fd_err read_page(struct sse *s)
{
	struct fd_feed_page page = { 0 };
	/* Catch-up pages may come from a read replica; once caught up the stream follows the primary. */
	struct fd_pool *pool = s->catchup ? s->catchup : s->ctx->pool;
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
	err = append_frames(&s->out, page.events_json);
	free(page.events_json);
	if (err)
		return err;
	s->cursor = page.next;
	s->behind = page.count >= PAGE_LIMIT;
	if (!s->behind)
		s->catchup = NULL;
	return FD_OK;
}

static void page_job(struct fd_job *job)
{
	struct sse *s = (struct sse *)(void *)((char *)job - offsetof(struct sse, job));
	enum fd_err err = read_page(s);
	if (err == FD_ERR_NOMEM || err == FD_ERR_INTERNAL) {
		fd_log(FD_LOG_ERROR, "event stream %s: %s; closing it", s->request_id, fd_err_name(err));
	} else if (err && !s->failing) {
		fd_log(FD_LOG_WARN, "event stream %s: cannot read the feed (%s); retrying", s->request_id,
		       fd_err_name(err));
	}
	pthread_mutex_lock(&s->hub->lock);
	s->fatal = err == FD_ERR_NOMEM || err == FD_ERR_INTERNAL;
	s->failing = err != FD_OK;
	if (err)
		s->retry_ms = now_ms() + POLL_MS;
	s->paging = false;
	resume(s);
	pthread_mutex_unlock(&s->hub->lock);
}

/*
 * libmicrohttpd's content reader, on its polling thread: what is ready now,
 * or suspend until the hub or a page job has more (returning 0).
 */
static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct sse *s = cls;
	struct fd_sse_hub *hub = s->hub;
	ssize_t ret = 0;
	size_t n;
	(void)pos;
	pthread_mutex_lock(&hub->lock);
	if (hub->stopping || s->gone) {
		ret = FD_STREAM_END;
		goto done;
	}
	if (s->fatal) {
		ret = FD_STREAM_ERROR;
		goto done;
	}
	n = drain_out(s, buf, max);
	if (!n && !s->behind) {
		if (hub->valid && fd_cursor_cmp(&s->cursor, &hub->base) < 0)
			s->behind = true; /* the ring has moved past it */
		else if ((n = copy_live(hub, s, buf, max)) == 0)
			n = drain_out(s, buf, max);
		if (s->fatal) {
			ret = FD_STREAM_ERROR;
			goto done;
		}
	}
	int64_t now = now_ms();
	if (!n && s->behind && now >= s->retry_ms) {
		/* A page of its own, read on a worker; the job resumes the connection. */
		s->paging = true;
		s->suspended = true;
		MHD_suspend_connection(s->conn);
		if (!fd_workers_submit(hub->workers, &s->job)) {
			s->paging = false;
			s->gone = true; /* the server is closing: end at the next call */
			resume(s);
		}
		goto done;
	}
	if (!n && now - s->last_write_ms >= s->heartbeat_ms && max >= sizeof HEARTBEAT_FRAME - 1) {
		memcpy(buf, HEARTBEAT_FRAME, sizeof HEARTBEAT_FRAME - 1);
		n = sizeof HEARTBEAT_FRAME - 1;
	}
	if (n) {
		s->last_write_ms = now;
		ret = (ssize_t)n;
		goto done;
	}
	s->suspended = true;
	MHD_suspend_connection(s->conn);
done:
	pthread_mutex_unlock(&hub->lock);
	return ret;
}

/* ---- the hub's thread --------------------------------------------------------------- */

/*
 * Every second: resume the suspended streams that are due a heartbeat or a
 * retry, and end those whose client has closed its end.
 */
static void tick(struct fd_sse_hub *hub, int64_t now)
{
	struct pollfd *fds = hub->nstreams ? calloc(hub->nstreams, sizeof *fds) : NULL;
	struct sse **of = hub->nstreams ? calloc(hub->nstreams, sizeof *of) : NULL;
	size_t k = 0;
	for (struct sse *s = hub->streams; s; s = s->next) {
		if (!s->suspended || s->paging)
			continue;
		if (now - s->last_write_ms >= s->heartbeat_ms || (s->behind && now >= s->retry_ms)) {
			resume(s);
		} else if (fds && of && s->sock >= 0) {
			fds[k] = (struct pollfd){ .fd = s->sock, .events = POLLRDHUP };
			of[k++] = s;
		}
	}
	if (k && poll(fds, (nfds_t)k, 0) > 0) {
		for (size_t i = 0; i < k; i++) {
			if (fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) {
				of[i]->gone = true;
				resume(of[i]);
			}
		}
	}
	free(fds);
	free(of);
}

/*
 * Read the feed after the head (outside the lock) and put what came into the
 * ring.  True when the ring moved; *full when the last page was full.
 */
static bool hub_read(struct fd_sse_hub *hub, bool *full)
{
	struct fd_cursor from = hub->head;
	bool moved = false;
	*full = false;
	for (int p = 0; p < HUB_PAGES; p++) {
		struct fd_feed_page page = { 0 };
		struct ring_ev *made = NULL;
		size_t n = 0;
		pthread_mutex_unlock(&hub->lock);
		enum fd_err err = fd_store_read_feed(hub->ctx->pool, from, NULL, PAGE_LIMIT, &page);
		if (!err && page.count && !(made = calloc(page.count, sizeof *made)))
			err = FD_ERR_NOMEM;
		if (!err && made)
			err = make_entries(page.events_json, made, page.count, &n);
		free(page.events_json);
		if (err) {
			for (size_t i = 0; i < n; i++)
				ring_ev_release(&made[i]);
			free(made);
		}
		pthread_mutex_lock(&hub->lock);
		if (err) {
			if (!hub->failing)
				fd_log(FD_LOG_WARN, "event streams: cannot read the feed (%s); retrying", fd_err_name(err));
			hub->failing = true;
			return moved;
		}
		hub->failing = false;
		if (!hub->valid || fd_cursor_cmp(&hub->head, &from) != 0) {
			/* every stream left (and maybe another came) meanwhile: this page is not the ring's */
			for (size_t i = 0; i < n; i++)
				ring_ev_release(&made[i]);
			free(made);
			return moved;
		}
		for (size_t i = 0; i < n; i++) {
			while (hub->next - hub->first >= RING_EVENTS ||
			       (hub->first < hub->next && hub->bytes + ring_ev_bytes(&made[i]) > RING_BYTES))
				ring_evict_first(hub);
			*ring_at(hub, hub->next++) = made[i];
			hub->bytes += ring_ev_bytes(&made[i]);
		}
		free(made);
		if (fd_cursor_cmp(&page.next, &hub->head) > 0) {
			hub->head = page.next;
			moved = true;
		}
		from = hub->head;
		*full = page.count >= PAGE_LIMIT;
		if (!*full)
			break;
	}
	return moved;
}

static void *hub_main(void *arg)
{
	struct fd_sse_hub *hub = arg;
	struct fd_notifier *notifier = hub->ctx->notifier;
	uint64_t gen = notifier ? fd_notifier_generation(notifier) : 0;
	int64_t last_read = 0, next_read = 0, follow_up = 0, last_tick = now_ms();
	bool woken = false;
	pthread_mutex_lock(&hub->lock);
	while (!hub->quit) {
		int64_t now = now_ms();
		bool active = hub->valid && hub->nstreams && !hub->stopping;
		if (active && now >= next_read) {
			bool was_woken = woken, full;
			woken = false;
			last_read = now;
			bool moved = hub_read(hub, &full);
			if (moved)
				resume_waiting(hub);
			now = now_ms();
			if (full) {
				next_read = now;
			} else if (was_woken && !moved && follow_up < MAX_FOLLOW_UP_MS) {
				/* announced but not visible yet: an older transaction holds it back */
				follow_up = follow_up ? follow_up * 2 : FOLLOW_UP_MS;
				next_read = now + follow_up;
			} else {
				follow_up = 0;
				next_read = now + POLL_MS;
			}
			continue;
		}
		if (now - last_tick >= TICK_MS) {
			tick(hub, now);
			last_tick = now;
		}
		int64_t until = last_tick + TICK_MS;
		if (active && next_read < until)
			until = next_read;
		int64_t wait = until - now;
		if (wait < 1)
			wait = 1;
		pthread_mutex_unlock(&hub->lock);
		if (notifier) {
			uint64_t g = fd_notifier_wait(notifier, gen, (unsigned)wait);
			if (g != gen) {
				gen = g;
				woken = true;
			}
		}
		pthread_mutex_lock(&hub->lock);
		if (!notifier && !hub->quit) {
			struct timespec t;
			clock_gettime(CLOCK_REALTIME, &t);
			t.tv_sec += wait / 1000;
			t.tv_nsec += (long)(wait % 1000) * 1000000L;
			if (t.tv_nsec >= 1000000000L) {
				t.tv_sec++;
				t.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&hub->cond, &hub->lock, &t);
		}
		if (woken) {
			follow_up = 0;
			int64_t soon = last_read + MIN_READ_GAP_MS;
			if (next_read > soon)
				next_read = soon;
		}
	}
	pthread_mutex_unlock(&hub->lock);
	return NULL;
}

enum fd_err fd_sse_hub_start(struct fd_ctx *ctx, struct fd_workers *workers, struct fd_sse_hub **out)
{
	struct fd_sse_hub *hub = calloc(1, sizeof *hub);
	if (!hub || !(hub->ring = calloc(RING_EVENTS, sizeof *hub->ring))) {
		free(hub);
		return FD_ERR_NOMEM;
	}
	hub->ctx = ctx;
	hub->workers = workers;
	pthread_mutex_init(&hub->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_cond_init(&hub->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&hub->thread, NULL, hub_main, hub) != 0) {
		pthread_cond_destroy(&hub->cond);
		pthread_mutex_destroy(&hub->lock);
		free(hub->ring);
		free(hub);
		return FD_ERR_IO;
	}
	*out = hub;
	return FD_OK;
}

void fd_sse_hub_stopping(struct fd_sse_hub *hub)
{
	if (!hub)
		return;
	pthread_mutex_lock(&hub->lock);
	hub->stopping = true;
	resume_waiting(hub);
	pthread_mutex_unlock(&hub->lock);
}

void fd_sse_hub_free(struct fd_sse_hub *hub)
{
	if (!hub)
		return;
	pthread_mutex_lock(&hub->lock);
	hub->quit = true;
	pthread_cond_broadcast(&hub->cond);
	pthread_mutex_unlock(&hub->lock);
	if (hub->ctx->notifier)
		fd_notifier_wake(hub->ctx->notifier);
	pthread_join(hub->thread, NULL);
	ring_reset(hub);
	pthread_cond_destroy(&hub->cond);
	pthread_mutex_destroy(&hub->lock);
	free(hub->ring);
	free(hub);
}

size_t fd_sse_hub_streams(struct fd_sse_hub *hub)
{
	pthread_mutex_lock(&hub->lock);
	size_t n = hub->nstreams;
	pthread_mutex_unlock(&hub->lock);
	return n;
}

/* ---- the handler --------------------------------------------------------------------- */

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
	s->hub = fd_server_sse_hub(req->server);
	s->conn = req->conn;
	s->sock = -1;
	s->job.run = page_job;
	s->replica = -1;
	s->heartbeat_ms = (int64_t)req->ctx->cfg->sse_heartbeat_s * 1000;
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
	s->last_write_ms = now_ms();
	struct fd_sse_hub *hub = s->hub;
	pthread_mutex_lock(&hub->lock);
	s->next = hub->streams;
	if (hub->streams)
		hub->streams->prev = s;
	hub->streams = s;
	hub->nstreams++;
	s->registered = true;
	pthread_mutex_unlock(&hub->lock);
	resp->content_type = "text/event-stream";
	resp->stream_read = sse_read;
	resp->stream_free = sse_free;
	resp->stream_cls = s;
	return;
done: /* a problem, or HEAD: no stream to hand over */
	sse_free(s);
}
