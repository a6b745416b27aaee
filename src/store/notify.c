/*
 * notify.c - the LISTEN thread behind include/factd/notify.h.
 *
 * One thread owns one PGconn (never shared, never from the pool): it
 * connects without blocking, sends LISTEN factd_events, and then sleeps in
 * poll() on the connection's socket and a self-pipe.  Readable socket:
 * PQconsumeInput, drain PQnotifies, and if any arrived advance the generation
 * and broadcast.  A failed read means the connection is gone: the thread
 * closes it and reconnects after a backoff (100 ms doubling to 5 s).  The
 * self-pipe wakes the thread at once when the notifier stops, so stopping
 * never waits for the database, even while a connect is in progress.
 *
 * Categories: an announce names the category of the appended stream, and
 * the NOTIFY carries the categories announced since the last one as its
 * payload ("order,product"), so a follower that reads only some categories
 * (fd_notifier_wait_for) sleeps through appends to others.  Each category
 * seen recently has a slot in a small direct-mapped table holding the
 * generation it last advanced at; a notification without a payload (from an
 * older factd, or one whose categories did not fit), a reconnect, a wake
 * and a category pushed out of its slot all advance `all_gen`, which every
 * follower counts as its own.  So a follower can be woken for nothing, never
 * left asleep.
 *
 * Threading: the generations, the table, the listening flag and the stop
 * flag are guarded by one mutex; waiters sleep on a condition variable (monotonic
 * clock).  TCP keepalives (overridable in the conninfo) let a silently
 * vanished server be noticed while the thread waits for notifications.
 */
#include "factd/notify.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "factd/events.h"
#include "factd/hash.h"
#include "factd/log.h"
#include "factd/sql.h"

/*
 * The notifier's own NOTIFY transactions need no durability: a lost one
 * only means followers wait for their poll.  Without the WAL flush each
 * would wait for (up to ~200 a second), they cost the appends' commits less.
 */
#define CHANNEL_SQL "SET synchronous_commit = off; LISTEN factd_events"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 10000
#define ANNOUNCE_PAUSE_MS 5 /* at most ~200 NOTIFYs a second per process */
#define CATEGORY_SLOTS 128   /* a power of two */
#define CATEGORY_NAME_MAX 63 /* longer categories count as "all" */
#define PAYLOAD_MAX 1024     /* PostgreSQL allows 8000 bytes; past this the NOTIFY says "all" */

struct category_slot {
	char name[CATEGORY_NAME_MAX + 1]; /* "" = free */
	uint64_t gen;                     /* the generation it last advanced at */
	bool pending;                     /* announced here since the last NOTIFY */
};

struct fd_notifier {
	char *conninfo;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t changed;
	uint64_t generation;
	uint64_t all_gen;      /* the last advance that concerns every category */
	bool pending_all;      /* an announce since the last NOTIFY had no slot */
	size_t npending;       /* slots with pending set */
	struct category_slot slots[CATEGORY_SLOTS];
	bool listening;
	bool stopping;
	int wake[2]; /* self-pipe: [0] polled by the thread, [1] written by fd_notifier_stop */
	int kick[2]; /* [1] written by fd_notifier_announce: local appends to tell other processes about */
};

/* What waiting on the socket (and the self-pipe) ended with. */
enum wait_result { WAIT_READY, WAIT_TIMEOUT, WAIT_STOP, WAIT_ERROR, WAIT_KICK };

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static bool stopping(struct fd_notifier *n)
{
	pthread_mutex_lock(&n->lock);
	bool s = n->stopping;
	pthread_mutex_unlock(&n->lock);
	return s;
}

static void advance(struct fd_notifier *n)
{
	pthread_mutex_lock(&n->lock);
	n->all_gen = ++n->generation;
	pthread_cond_broadcast(&n->changed);
	pthread_mutex_unlock(&n->lock);
}

/* The slot `category` maps to; NULL when the name is too long for one. */
static struct category_slot *slot_of(struct fd_notifier *n, const char *category, size_t len)
{
	if (len == 0 || len > CATEGORY_NAME_MAX)
		return NULL;
	char name[CATEGORY_NAME_MAX + 1];
	memcpy(name, category, len);
	name[len] = '\0';
	return &n->slots[fd_fnv1a(FD_FNV1A_BASIS, name) & (CATEGORY_SLOTS - 1)];
}

/*
 * With the lock held: `category` (len bytes, not terminated) advanced at the
 * current generation.  A category that finds its slot taken pushes the
 * other one out, and the other's followers are woken through all_gen.
 * Returns its slot, or NULL when it has none (all_gen advanced instead).
 */
static struct category_slot *mark(struct fd_notifier *n, const char *category, size_t len)
{
	struct category_slot *s = slot_of(n, category, len);
	if (!s) {
		n->all_gen = n->generation;
		return NULL;
	}
	if (strncmp(s->name, category, len) != 0 || s->name[len] != '\0') {
		if (s->name[0])
			n->all_gen = n->generation;
		if (s->pending) {
			s->pending = false;
			n->npending--;
			n->pending_all = true; /* its NOTIFY must still go out */
		}
		memcpy(s->name, category, len);
		s->name[len] = '\0';
	}
	s->gen = n->generation;
	return s;
}

/* The newest generation that concerns a follower of `categories` (NULL: of every category). */
static uint64_t relevant(struct fd_notifier *n, const char *const *categories)
{
	if (!categories)
		return n->generation;
	uint64_t g = n->all_gen;
	for (size_t i = 0; categories[i]; i++) {
		size_t len = strlen(categories[i]);
		struct category_slot *s = slot_of(n, categories[i], len);
		if (s && s->gen > g && strcmp(s->name, categories[i]) == 0)
			g = s->gen;
	}
	return g;
}

/* Notifications arrived: advance once for all of them, by the categories their payloads name. */
static void advance_for(struct fd_notifier *n, const char *const *payloads, size_t count)
{
	pthread_mutex_lock(&n->lock);
	n->generation++;
	for (size_t i = 0; i < count; i++) {
		const char *p = payloads[i];
		if (!p || !*p) {
			n->all_gen = n->generation;
			continue;
		}
		while (*p) {
			size_t len = strcspn(p, ",");
			if (len)
				mark(n, p, len);
			p += len;
			if (*p == ',')
				p++;
		}
	}
	pthread_cond_broadcast(&n->changed);
	pthread_mutex_unlock(&n->lock);
}

/* Take the categories announced since the last NOTIFY as its payload ("" = every category). */
static void take_payload(struct fd_notifier *n, char *out, size_t cap)
{
	size_t len = 0;
	out[0] = '\0';
	pthread_mutex_lock(&n->lock);
	bool all = n->pending_all;
	for (size_t i = 0; i < CATEGORY_SLOTS && n->npending; i++) {
		struct category_slot *s = &n->slots[i];
		if (!s->pending)
			continue;
		s->pending = false;
		n->npending--;
		size_t add = strlen(s->name) + (len ? 1 : 0);
		if (all || len + add >= cap) {
			all = true;
			continue;
		}
		len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? "," : "", s->name);
	}
	n->pending_all = false;
	n->npending = 0;
	pthread_mutex_unlock(&n->lock);
	if (all)
		out[0] = '\0';
}

static void set_listening(struct fd_notifier *n, bool on)
{
	pthread_mutex_lock(&n->lock);
	n->listening = on;
	pthread_mutex_unlock(&n->lock);
}

/* Wait for `events` on sock (sock < 0: only for the self-pipe) for up to timeout_ms (-1: no limit). */
static enum wait_result wait_socket(struct fd_notifier *n, int sock, short events, int timeout_ms)
{
	struct pollfd fds[3] = { { .fd = n->wake[0], .events = POLLIN }, { .fd = sock, .events = events },
				 { .fd = n->kick[0], .events = POLLIN } };
	int r;
	do
		r = poll(fds, sock >= 0 ? 3 : 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return WAIT_ERROR;
	if (fds[0].revents || stopping(n))
		return WAIT_STOP;
	if (r == 0)
		return WAIT_TIMEOUT;
	if (fds[1].revents & (POLLERR | POLLNVAL))
		return WAIT_ERROR;
	if (sock >= 0 && (fds[2].revents & POLLIN)) {
		char drain[64];
		while (read(n->kick[0], drain, sizeof drain) > 0)
			;
		return WAIT_KICK;
	}
	return WAIT_READY;
}

/*
 * Connect without blocking the thread past a stop.  NULL when it failed
 * (logged as a warning when `loud`) or the notifier is stopping.
 */
static PGconn *connect_db(struct fd_notifier *n, bool loud)
{
	/* Entries before dbname may be overridden by the conninfo; application_name may not. */
	static const char *const keys[] = { "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
					    "dbname", "application_name", NULL };
	const char *vals[] = { "1", "30", "10", "3", n->conninfo, "factd-notify", NULL };
	PGconn *c = PQconnectStartParams(keys, vals, 1);
	if (!c)
		return NULL;
	fd_pg_log_notices(c, "notifier");
	int64_t deadline = now_ms() + CONNECT_TIMEOUT_MS;
	PostgresPollingStatusType st = PQstatus(c) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
	while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
		int64_t left = deadline - now_ms();
		if (left <= 0 || PQsocket(c) < 0)
			break;
		enum wait_result w = wait_socket(n, PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT,
						 (int)left);
		if (w == WAIT_STOP)
			break;
		if (w != WAIT_TIMEOUT)
			st = PQconnectPoll(c);
	}
	if (st != PGRES_POLLING_OK) {
		if (!stopping(n))
			fd_log(loud ? FD_LOG_WARN : FD_LOG_DEBUG, "notifier: cannot connect, live streams poll until it can: %s",
			       st == PGRES_POLLING_FAILED ? PQerrorMessage(c) : "timed out");
		PQfinish(c);
		return NULL;
	}
	return c;
}

/* Run LISTEN without blocking the thread past a stop.  True once the server confirmed it. */
static bool send_listen(struct fd_notifier *n, PGconn *c)
{
	bool ok = true;
	if (!PQsendQuery(c, CHANNEL_SQL))
		return false;
	for (;;) {
		while (PQisBusy(c)) {
			if (wait_socket(n, PQsocket(c), POLLIN, CONNECT_TIMEOUT_MS) != WAIT_READY || !PQconsumeInput(c))
				return false;
		}
		PGresult *res = PQgetResult(c);
		if (!res)
			return ok;
		ok = ok && PQresultStatus(res) == PGRES_COMMAND_OK;
		PQclear(res);
	}
}

/* Wait for notifications until the connection fails or the notifier stops. */
static void listen_loop(struct fd_notifier *n, PGconn *c)
{
	while (PQsocket(c) >= 0) {
		enum wait_result w = wait_socket(n, PQsocket(c), POLLIN, -1);
		if (w == WAIT_STOP)
			return;
		if (w == WAIT_KICK) {
			/* Tell other processes; then pause so a burst of appends costs one NOTIFY. */
			char payload[PAYLOAD_MAX];
			take_payload(n, payload, sizeof payload);
			const char *params[] = { payload };
			static const struct fd_stmt notify = { "fd_notify", "SELECT pg_notify('factd_events', $1)", 1, false };
			if (fd_sql_exec(c, &notify, params, NULL)) {
				fd_log(FD_LOG_WARN, "notifier: NOTIFY failed: %s", PQerrorMessage(c));
				return;
			}
			struct timespec pause = { .tv_sec = 0, .tv_nsec = ANNOUNCE_PAUSE_MS * 1000000L };
			nanosleep(&pause, NULL);
		}
		if (w == WAIT_ERROR || !PQconsumeInput(c)) {
			fd_log(FD_LOG_WARN, "notifier: lost the LISTEN connection: %s", PQerrorMessage(c));
			return;
		}
		/* Our own NOTIFYs come back too: their announces already advanced. */
		enum { BURST = 32 };
		PGnotify *notes[BURST];
		const char *payloads[BURST];
		size_t count = 0;
		PGnotify *note;
		int self = PQbackendPID(c);
		while ((note = PQnotifies(c))) {
			if (note->be_pid == self) {
				PQfreemem(note);
				continue;
			}
			if (count == BURST) {
				advance_for(n, payloads, count);
				for (size_t i = 0; i < count; i++)
					PQfreemem(notes[i]);
				count = 0;
			}
			notes[count] = note;
			payloads[count++] = note->extra;
		}
		if (count)
			advance_for(n, payloads, count);
		for (size_t i = 0; i < count; i++)
			PQfreemem(notes[i]);
	}
}

static void *run(void *arg)
{
	struct fd_notifier *n = arg;
	int backoff = BACKOFF_MIN_MS;
	bool was_up = true; /* log the first failure, not every retry */
	while (!stopping(n)) {
		PGconn *c = connect_db(n, was_up);
		if (c && send_listen(n, c)) {
			if (!was_up)
				fd_log(FD_LOG_INFO, "notifier: listening again");
			was_up = true;
			backoff = BACKOFF_MIN_MS;
			set_listening(n, true);
			advance(n); /* events may have committed while nobody listened */
			listen_loop(n, c);
			set_listening(n, false);
		} else if (!stopping(n)) {
			if (c && was_up)
				fd_log(FD_LOG_WARN, "notifier: LISTEN failed, live streams poll until it works: %s",
				       PQerrorMessage(c));
			was_up = false;
		}
		PQfinish(c);
		if (wait_socket(n, -1, 0, backoff) == WAIT_STOP)
			break;
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
	}
	return NULL;
}

enum fd_err fd_notifier_start(const char *conninfo, struct fd_notifier **out)
{
	enum fd_err err = FD_ERR_NOMEM;
	struct fd_notifier *n = calloc(1, sizeof *n);
	pthread_condattr_t attr;
	bool sync_ready = false;
	if (!n)
		goto done;
	n->wake[0] = n->wake[1] = -1;
	n->kick[0] = n->kick[1] = -1;
	if (!(n->conninfo = strdup(conninfo ? conninfo : "")))
		goto done;
	err = FD_ERR_IO;
	if (pipe2(n->wake, O_CLOEXEC | O_NONBLOCK) != 0 || pipe2(n->kick, O_CLOEXEC | O_NONBLOCK) != 0)
		goto done;
	pthread_mutex_init(&n->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&n->changed, &attr);
	pthread_condattr_destroy(&attr);
	sync_ready = true;
	if (pthread_create(&n->thread, NULL, run, n) != 0)
		goto done;
	*out = n;
	n = NULL;
	err = FD_OK;
done:
	if (n) {
		if (sync_ready) {
			pthread_cond_destroy(&n->changed);
			pthread_mutex_destroy(&n->lock);
		}
		for (int i = 0; i < 2; i++) {
			if (n->wake[i] >= 0)
				close(n->wake[i]);
			if (n->kick[i] >= 0)
				close(n->kick[i]);
		}
		free(n->conninfo);
		free(n);
	}
	return err;
}

void fd_notifier_stop(struct fd_notifier *n)
{
	if (!n)
		return;
	pthread_mutex_lock(&n->lock);
	n->stopping = true;
	n->all_gen = ++n->generation;
	pthread_cond_broadcast(&n->changed);
	pthread_mutex_unlock(&n->lock);
	ssize_t w;
	do
		w = write(n->wake[1], "x", 1);
	while (w < 0 && errno == EINTR);
	pthread_join(n->thread, NULL);
	close(n->wake[0]);
	close(n->wake[1]);
	close(n->kick[0]);
	close(n->kick[1]);
	pthread_cond_destroy(&n->changed);
	pthread_mutex_destroy(&n->lock);
	free(n->conninfo);
	free(n);
}

uint64_t fd_notifier_generation(struct fd_notifier *n)
{
	pthread_mutex_lock(&n->lock);
	uint64_t g = n->generation;
	pthread_mutex_unlock(&n->lock);
	return g;
}

uint64_t fd_notifier_wait(struct fd_notifier *n, uint64_t seen, unsigned timeout_ms)
{
	return fd_notifier_wait_for(n, seen, NULL, timeout_ms);
}

uint64_t fd_notifier_wait_for(struct fd_notifier *n, uint64_t seen, const char *const *categories,
			      unsigned timeout_ms)
{
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&n->lock);
	uint64_t g;
	while ((g = relevant(n, categories)) <= seen && !n->stopping)
		if (pthread_cond_timedwait(&n->changed, &n->lock, &deadline) == ETIMEDOUT)
			break;
	g = relevant(n, categories);
	pthread_mutex_unlock(&n->lock);
	return g > seen ? g : seen;
}

void fd_notifier_wake(struct fd_notifier *n)
{
	if (n)
		advance(n);
}

void fd_notifier_announce(struct fd_notifier *n, const char *category)
{
	if (!n)
		return;
	pthread_mutex_lock(&n->lock);
	n->generation++;
	struct category_slot *s = category ? mark(n, category, strlen(category)) : NULL;
	if (!category)
		n->all_gen = n->generation;
	if (s && !s->pending) {
		s->pending = true;
		n->npending++;
	} else if (!s) {
		n->pending_all = true;
	}
	pthread_cond_broadcast(&n->changed);
	pthread_mutex_unlock(&n->lock);
	ssize_t w = write(n->kick[1], "k", 1); /* a full pipe already holds a kick */
	(void)w;
}

bool fd_notify_payload_matches(const char *payload, const char *const *categories)
{
	if (!payload || !*payload || !categories)
		return true;
	for (const char *p = payload; *p;) {
		size_t len = strcspn(p, ",");
		for (size_t i = 0; categories[i]; i++)
			if (strlen(categories[i]) == len && strncmp(categories[i], p, len) == 0)
				return true;
		p += len;
		if (*p == ',')
			p++;
	}
	return false;
}

bool fd_notifier_listening(struct fd_notifier *n)
{
	pthread_mutex_lock(&n->lock);
	bool on = n->listening;
	pthread_mutex_unlock(&n->lock);
	return on;
}
