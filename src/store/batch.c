/*
 * batch.c - group commit for appends: concurrent appends from different
 * requests share one statement and one transaction.
 *
 * Why: an append alone is one transaction, and on a small machine most of
 * PostgreSQL's time per append goes to what every transaction pays (start,
 * commit, the WAL flush, the statement's parse, plan and executor start-up),
 * not to the rows.  A set-based statement that appends to k streams costs
 * little more than one that appends to a single stream.
 *
 * How: a thread that wants to append queues its request and waits.  Each of
 * `max_inflight` committer threads (started with the first request) takes
 * everything queued (up to MAX_REQUESTS requests of distinct streams,
 * MAX_EVENTS events) as one batch, runs it, answers its requests, and goes
 * straight on to what queued meanwhile.  An idle committer starts at once, so
 * an append on an idle server waits for no other; under load the batch size
 * follows the load, with no timer.  (Requests used to lead batches
 * themselves, handing the turn from thread to thread: on 2 busy cores that
 * hand-over took 180 us of each 1 ms batch cycle.)
 *
 * Each request keeps its own version check and its own answer.  The batch
 * statement (ST_APPEND_BATCH in events.c) locks the streams' rows with
 * FOR UPDATE SKIP LOCKED, appends to every stream whose version matches, and
 * reports per request: written (with its versions and position), a conflict
 * (with the stream's version, read under the lock), or "not here" - the
 * stream does not exist, or another transaction holds its row.  "Not here"
 * and every failure of the statement as a whole go back to the caller, which
 * appends alone through fd_append exactly as without batching: a failed
 * statement wrote nothing, and a lost connection is handled as for a single
 * append (the retry checks the event ids).
 *
 * Why SKIP LOCKED: the feed orders events by writing transaction id, and
 * promises that a stream's events appear in version order.  A transaction
 * gets its id at its first write; a batch's first write is the first row it
 * locks.  If a batch waited for a stream row after that, a single append
 * could take the row meanwhile, get a later id, and commit an earlier version
 * of the stream under it.  A batch never waits for a stream row, so every
 * stream it writes was already its own when it got its id.
 *
 * Only appends to existing streams are batched (the bulk of the traffic:
 * commands, saga steps' commands and appends at a known version).  A new
 * stream and large appends take the single-append path.  Ids the caller
 * chose (a command's idempotency key) are batched too: one already stored
 * (a repeat, rare) fails the statement with a unique violation, and the
 * whole batch's requests then go alone as above; the single append tells a
 * duplicate from an id conflict.
 *
 * Threading: fd_batch_append from any thread; the queue and the counters are
 * under one mutex, every waiter sleeps on its own condition variable, the
 * committers on a shared one, and a committer runs its batch without the
 * mutex.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/buf.h"
#include "factd/log.h"
#include "factd/metrics.h"
#include "internal.h"

enum {
	MAX_REQUESTS = 64,      /* requests in one batch */
	MAX_EVENTS = 1000,      /* events in one batch */
	MAX_BATCHED_EVENTS = 16 /* larger appends go alone */
};

struct pending {
	/* the request, borrowed from the caller */
	const char *stream;
	const char *category;
	struct fd_expected expected;
	const struct fd_event_in *events;
	size_t n;
	/* the answer */
	struct fd_append_result *out;
	enum fd_err err;
	bool lost;
	/* the queue */
	bool done;               /* answered (set by the committer that ran it) */
	pthread_cond_t wake;
	struct pending *next;
};

enum { MAX_COMMITTERS = 64 };

struct fd_batcher {
	pthread_mutex_t mu;
	pthread_cond_t work;    /* committers wait here for requests */
	struct pending *head;
	struct pending **tail;
	unsigned queued;        /* requests in the queue */
	unsigned max_inflight;  /* committers wanted; 0: batching is off */
	unsigned committers;    /* committer threads started */
	bool stopping;
	struct fd_pool *pool;   /* the pool of the first request (there is one per pool) */
	pthread_t threads[MAX_COMMITTERS];
};

enum fd_err fd_batcher_new(unsigned max_inflight, struct fd_batcher **out)
{
	struct fd_batcher *b = calloc(1, sizeof *b);
	*out = NULL;
	if (!b)
		return FD_ERR_NOMEM;
	if (pthread_mutex_init(&b->mu, NULL) != 0) {
		free(b);
		return FD_ERR_INTERNAL;
	}
	if (pthread_cond_init(&b->work, NULL) != 0) {
		pthread_mutex_destroy(&b->mu);
		free(b);
		return FD_ERR_INTERNAL;
	}
	b->tail = &b->head;
	b->max_inflight = max_inflight > MAX_COMMITTERS ? MAX_COMMITTERS : max_inflight;
	*out = b;
	return FD_OK;
}

/* No request may be in fd_batch_append (the pool is being freed). */
void fd_batcher_free(struct fd_batcher *b)
{
	if (!b)
		return;
	pthread_mutex_lock(&b->mu);
	b->stopping = true;
	pthread_cond_broadcast(&b->work);
	unsigned n = b->committers;
	pthread_mutex_unlock(&b->mu);
	for (unsigned i = 0; i < n; i++)
		pthread_join(b->threads[i], NULL);
	pthread_cond_destroy(&b->work);
	pthread_mutex_destroy(&b->mu);
	free(b);
}

void fd_batcher_set_max(struct fd_batcher *b, unsigned max_inflight)
{
	pthread_mutex_lock(&b->mu);
	b->max_inflight = max_inflight > MAX_COMMITTERS ? MAX_COMMITTERS : max_inflight;
	pthread_mutex_unlock(&b->mu);
}

unsigned fd_batcher_queued(struct fd_batcher *b)
{
	pthread_mutex_lock(&b->mu);
	unsigned n = b->queued;
	pthread_mutex_unlock(&b->mu);
	return n;
}

bool fd_batcher_accepts(const struct fd_batcher *b, struct fd_expected expected, size_t n)
{
	/* max_inflight is set before the pool is shared; read without the lock. */
	return b && b->max_inflight > 0 && n >= 1 && n <= MAX_BATCHED_EVENTS &&
	       (expected.kind == FD_EXPECT_ANY || expected.kind == FD_EXPECT_EXISTS ||
		(expected.kind == FD_EXPECT_EXACT && expected.version > 0));
}

/*
 * Unlink from the queue the requests of the next batch: oldest first, one per
 * stream.  Lock held.
 */
static size_t take_batch(struct fd_batcher *b, struct pending **batch)
{
	size_t k = 0, events = 0;
	struct pending **link = &b->head;
	while (*link && k < MAX_REQUESTS) {
		struct pending *p = *link;
		bool take = events + p->n <= MAX_EVENTS;
		for (size_t i = 0; take && i < k; i++)
			take = strcmp(batch[i]->stream, p->stream) != 0;
		if (!take) {
			link = &p->next;
			continue;
		}
		*link = p->next;
		p->next = NULL;
		batch[k++] = p;
		events += p->n;
		b->queued--;
	}
	b->tail = link;
	while (*b->tail)
		b->tail = &(*b->tail)->next;
	return k;
}

/* The batch statement's parameters: ten array literals. */
enum { P_STREAM, P_CATEGORY, P_EXPECTED, P_COUNT, P_ID, P_TYPE, P_DATA, P_META, P_REQ, P_ORD, P_N };

static enum fd_err number_elem(struct fd_buf *b, long long v, bool first)
{
	char s[32];
	int len = snprintf(s, sizeof s, "%s%lld", first ? "" : ",", v);
	return fd_buf_append(b, s, (size_t)len);
}

static enum fd_err build_params(struct pending *const *batch, size_t k, struct fd_buf *a)
{
	enum fd_err err = FD_OK;
	bool first_event = true;
	for (int j = 0; j < P_N && !err; j++)
		err = fd_buf_append(&a[j], "{", 1);
	for (size_t i = 0; i < k && !err; i++) {
		const struct pending *p = batch[i];
		bool first = i == 0;
		long long expected = p->expected.kind == FD_EXPECT_EXACT ? (long long)p->expected.version : -1;
		err = fd_store_array_elem(&a[P_STREAM], p->stream, first);
		if (!err)
			err = fd_store_array_elem(&a[P_CATEGORY], p->category, first);
		if (!err)
			err = number_elem(&a[P_EXPECTED], expected, first);
		if (!err)
			err = number_elem(&a[P_COUNT], (long long)p->n, first);
		for (size_t e = 0; e < p->n && !err; e++, first_event = false) {
			err = fd_store_event_elems(&a[P_ID], &a[P_TYPE], &a[P_DATA], &a[P_META], &p->events[e],
						   first_event);
			if (!err)
				err = number_elem(&a[P_REQ], (long long)i + 1, first_event);
			if (!err)
				err = number_elem(&a[P_ORD], (long long)e + 1, first_event);
		}
	}
	for (int j = 0; j < P_N && !err; j++)
		err = fd_buf_append(&a[j], "}", 1);
	return err;
}

/*
 * Run one batch and set every request's answer.  Result rows, one per request
 * in order: its number, the version it appended after (NULL: not written),
 * the last seq it wrote, the stream's version under lock (NULL: missing or
 * locked elsewhere), the transaction id.
 */
static void run_batch(struct fd_pool *pool, struct pending *const *batch, size_t k)
{
	struct fd_buf a[P_N];
	const char *params[P_N];
	PGresult *res = NULL;
	bool lost = false;
	enum fd_err err;

	for (int j = 0; j < P_N; j++)
		a[j] = (struct fd_buf)FD_BUF_INIT;
	if (!(err = build_params(batch, k, a))) {
		for (int j = 0; j < P_N; j++)
			params[j] = a[j].data;
		err = fd_store_run_ex(pool, ST_APPEND_BATCH, params, -1, &lost, &res);
		fd_metrics_append_batch(fd_pool_metrics(pool), k);
	}
	if (!err && (PQntuples(res) != (int)k || PQnfields(res) != 5)) {
		fd_log(FD_LOG_ERROR, "the batch append statement returned an unexpected shape");
		err = FD_ERR_INTERNAL;
	}
	for (size_t i = 0; i < k; i++) {
		struct pending *p = batch[i];
		p->lost = lost;
		if (err) {
			/* Nothing was written (or, lost, maybe everything): each goes alone. */
			p->err = FD_ERR_NOTFOUND;
			continue;
		}
		int row = (int)i;
		if (!PQgetisnull(res, row, 1)) {
			int64_t cur = fd_store_int(res, row, 1);
			p->out->first_version = cur + 1;
			p->out->last_version = cur + (int64_t)p->n;
			p->out->current_version = p->out->last_version;
			p->out->position.seq = fd_store_int(res, row, 2);
			p->out->position.tx = strtoull(PQgetvalue(res, row, 4), NULL, 10);
			p->err = FD_OK;
		} else if (!PQgetisnull(res, row, 3)) {
			p->out->current_version = fd_store_int(res, row, 3);
			p->err = FD_ERR_CONFLICT;
		} else {
			p->err = FD_ERR_NOTFOUND;
		}
	}
	PQclear(res);
	for (int j = 0; j < P_N; j++)
		fd_buf_release(&a[j]);
}

/*
 * A committer: run batches while requests are queued, sleep while none are.
 * A batch of requests that are all for streams already in a running batch
 * of another committer is still taken: the statement skips the rows that
 * batch holds, and those requests go alone.
 */
static void *committer_main(void *arg)
{
	struct fd_batcher *b = arg;
	struct pending *batch[MAX_REQUESTS];
	pthread_mutex_lock(&b->mu);
	for (;;) {
		while (!b->head && !b->stopping)
			pthread_cond_wait(&b->work, &b->mu);
		if (!b->head)
			break; /* stopping, and nothing left to answer */
		size_t k = take_batch(b, batch);
		pthread_mutex_unlock(&b->mu);
		run_batch(b->pool, batch, k);
		pthread_mutex_lock(&b->mu);
		for (size_t i = 0; i < k; i++) {
			batch[i]->done = true;
			pthread_cond_signal(&batch[i]->wake);
		}
	}
	pthread_mutex_unlock(&b->mu);
	return NULL;
}

enum fd_err fd_batch_append(struct fd_pool *pool, struct fd_batcher *b, const char *stream, const char *category,
			    struct fd_expected expected, const struct fd_event_in *events, size_t n,
			    struct fd_append_result *out, bool *lost)
{
	struct pending self = { .stream = stream, .category = category, .expected = expected,
				.events = events, .n = n, .out = out };

	*lost = false;
	if (pthread_cond_init(&self.wake, NULL) != 0)
		return FD_ERR_NOTFOUND;
	pthread_mutex_lock(&b->mu);
	if (!b->pool)
		b->pool = pool;
	while (b->committers < b->max_inflight && !b->stopping) {
		if (pthread_create(&b->threads[b->committers], NULL, committer_main, b) != 0)
			break;
		b->committers++;
	}
	if (!b->committers || b->stopping) {
		/* No committer could start: this request goes alone. */
		pthread_mutex_unlock(&b->mu);
		pthread_cond_destroy(&self.wake);
		return FD_ERR_NOTFOUND;
	}
	*b->tail = &self;
	b->tail = &self.next;
	b->queued++;
	pthread_cond_signal(&b->work);
	while (!self.done)
		pthread_cond_wait(&self.wake, &b->mu);
	pthread_mutex_unlock(&b->mu);
	pthread_cond_destroy(&self.wake);
	*lost = self.lost;
	return self.err;
}
