/*
 * pool.c - a fixed-size pool of PostgreSQL connections.
 *
 * Each slot holds at most one PGconn.  A slot is either free or handed to one
 * thread.  The mutex guards only the slot bookkeeping: connecting, preparing
 * statements, health checks and PQfinish all happen outside it, so a slow or
 * unreachable server never blocks threads that hold healthy connections.
 *
 * Threading: acquire/release/stats from any thread.  The PGconn inside an
 * in-use slot belongs to the borrowing thread; only the slot's `conn` field
 * is written under the mutex (when a borrower reconnects or gives it back).
 */
#include "factd/pool.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "factd/config.h"
#include "factd/log.h"
#include "internal.h"

struct slot {
	PGconn *conn;  /* NULL when not connected */
	bool in_use;
};

struct fd_pool {
	pthread_mutex_t mu;
	pthread_cond_t freed;    /* signalled when a slot becomes free */
	char *conninfo;
	unsigned size;
	unsigned timeout_ms;
	unsigned open;
	unsigned in_use;
	unsigned waiting;
	unsigned flags;               /* FD_POOL_UNNAMED, FD_POOL_PREPARE_ON_USE; set before threads share the pool */
	struct fd_metrics *metrics;  /* set before threads share the pool; read-only after */
	struct fd_notifier *notifier; /* woken after each append commits; same rule */
	struct fd_keyring *keyring;   /* personal data (personal.h); same rule */
	struct fd_batcher *batcher;   /* group commit of appends (batch.c) */
	struct slot slots[];
};

/* Seconds libpq may spend connecting when the conninfo does not say otherwise. */
static const char default_connect_timeout[] = "10";

enum fd_err fd_pool_new(const char *conninfo, unsigned size, unsigned acquire_timeout_ms,
			struct fd_pool **out)
{
	enum fd_err err = FD_OK;
	struct fd_pool *pool = NULL;
	pthread_condattr_t attr;
	bool attr_ok = false, mu_ok = false;

	*out = NULL;
	if (!conninfo || size == 0)
		return FD_ERR_INVAL;
	pool = calloc(1, sizeof *pool + size * sizeof pool->slots[0]);
	if (!pool) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	pool->size = size;
	pool->timeout_ms = acquire_timeout_ms;
	pool->conninfo = strdup(conninfo);
	if (!pool->conninfo || (err = fd_batcher_new(FD_POOL_APPEND_BATCHES, &pool->batcher))) {
		err = err ? err : FD_ERR_NOMEM;
		goto done;
	}
	if (pthread_mutex_init(&pool->mu, NULL) != 0) {
		err = FD_ERR_INTERNAL;
		goto done;
	}
	mu_ok = true;
	if (pthread_condattr_init(&attr) != 0) {
		err = FD_ERR_INTERNAL;
		goto done;
	}
	attr_ok = true;
	if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
	    pthread_cond_init(&pool->freed, &attr) != 0) {
		err = FD_ERR_INTERNAL;
		goto done;
	}
	*out = pool;
	pool = NULL;
done:
	if (attr_ok)
		pthread_condattr_destroy(&attr);
	if (pool) {
		if (mu_ok)
			pthread_mutex_destroy(&pool->mu);
		fd_batcher_free(pool->batcher);
		free(pool->conninfo);
		free(pool);
	}
	return err;
}

void fd_pool_free(struct fd_pool *pool)
{
	if (!pool)
		return;
	for (unsigned i = 0; i < pool->size; i++)
		if (pool->slots[i].conn)
			PQfinish(pool->slots[i].conn);
	pthread_cond_destroy(&pool->freed);
	pthread_mutex_destroy(&pool->mu);
	fd_batcher_free(pool->batcher);
	free(pool->conninfo);
	free(pool);
}

/* Server notices go to the structured log instead of libpq's raw stderr output. */
static void log_connect_failure(const struct fd_pool *pool, const char *what, const char *detail)
{
	char *url = fd_config_redact_url(pool->conninfo);
	json_t *fields = json_pack("{s:s?, s:s?}", "database", url, "error", detail);
	fd_log_fields(FD_LOG_WARN, what, fields);
	free(url);
}

/*
 * Open a connection and prepare every store statement.  Runs without the
 * pool lock.  FD_ERR_UNAVAILABLE when the server cannot be reached,
 * FD_ERR_DB when it can but a statement does not prepare (schema missing).
 */
static enum fd_err connect_slot(const struct fd_pool *pool, PGconn **out)
{
	static const char *const keywords[] = { "connect_timeout", "dbname", "application_name", NULL };
	const char *values[] = { default_connect_timeout, pool->conninfo, "factd", NULL };
	enum fd_err err = FD_OK;
	PGconn *conn = NULL;
	PGresult *res = NULL;

	*out = NULL;
	/* Entries before dbname may be overridden by the conninfo; application_name may not. */
	conn = PQconnectdbParams(keywords, values, 1);
	if (!conn) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		log_connect_failure(pool, "cannot connect to the database", PQerrorMessage(conn));
		err = FD_ERR_UNAVAILABLE;
		goto done;
	}
	fd_pg_log_notices(conn, "pool");
	if ((pool->flags & FD_POOL_UNNAMED) && !fd_sql_set_unnamed(conn)) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	for (unsigned i = 0; !(pool->flags & (FD_POOL_UNNAMED | FD_POOL_PREPARE_ON_USE)) && i < fd_store_statements_count; i++) {
		const struct fd_stmt *st = &fd_store_statements[i];
		if ((err = fd_sql_prepare(conn, st, &res))) {
			const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
			/* A schema that is not migrated yet (undefined table, function,
			 * column) is a database not ready to serve, not a server fault. */
			if (err != FD_ERR_UNAVAILABLE)
				err = state && (strcmp(state, "42P01") == 0 || strcmp(state, "42883") == 0 ||
						strcmp(state, "42703") == 0)
					      ? FD_ERR_UNAVAILABLE
					      : FD_ERR_DB;
			json_t *fields = json_pack("{s:s, s:s?, s:s}", "statement", st->name, "sqlstate",
						   PQresultErrorField(res, PG_DIAG_SQLSTATE), "error",
						   PQresultErrorMessage(res));
			fd_log_fields(err == FD_ERR_DB ? FD_LOG_ERROR : FD_LOG_WARN,
				      "cannot prepare a store statement (is the schema migrated?)", fields);
			goto done;
		}
		PQclear(res);
		res = NULL;
	}
	*out = conn;
	conn = NULL;
done:
	PQclear(res);
	if (conn)
		PQfinish(conn);
	return err;
}

/*
 * Notice, without blocking, that an idle connection's server has gone away:
 * a terminated backend leaves an error message and EOF on the socket, which
 * PQconsumeInput turns into CONNECTION_BAD.
 */
static bool conn_healthy(PGconn *conn)
{
	if (PQstatus(conn) != CONNECTION_OK)
		return false;
	struct pollfd pfd = { .fd = PQsocket(conn), .events = POLLIN };
	if (pfd.fd < 0)
		return false;
	/* The first read may return the farewell message; the next one sees EOF. */
	for (int i = 0; i < 4 && poll(&pfd, 1, 0) > 0; i++)
		if (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK)
			return false;
	return PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) == PQTRANS_IDLE;
}

static struct timespec deadline_after(unsigned ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

/* A free slot, preferring one that is already connected; NULL when all are in use.  Lock held. */
static struct slot *find_free(struct fd_pool *pool)
{
	struct slot *unconnected = NULL;
	for (unsigned i = 0; i < pool->size; i++) {
		struct slot *s = &pool->slots[i];
		if (s->in_use)
			continue;
		if (s->conn)
			return s;
		if (!unconnected)
			unconnected = s;
	}
	return unconnected;
}

/* Record the slot's connection (NULL = closed) and keep the open count.  Lock held. */
static void set_conn_locked(struct fd_pool *pool, struct slot *s, PGconn *conn)
{
	if (s->conn && !conn)
		pool->open--;
	else if (!s->conn && conn)
		pool->open++;
	s->conn = conn;
}

static void set_conn(struct fd_pool *pool, struct slot *s, PGconn *conn)
{
	pthread_mutex_lock(&pool->mu);
	set_conn_locked(pool, s, conn);
	pthread_mutex_unlock(&pool->mu);
}

/* Give a slot back with its connection (NULL when closed).  Lock not held. */
static void put_back(struct fd_pool *pool, struct slot *s, PGconn *conn)
{
	pthread_mutex_lock(&pool->mu);
	set_conn_locked(pool, s, conn);
	s->in_use = false;
	pool->in_use--;
	pthread_cond_signal(&pool->freed);
	pthread_mutex_unlock(&pool->mu);
}

enum fd_err fd_pool_acquire(struct fd_pool *pool, PGconn **out)
{
	enum fd_err err = FD_OK;
	struct slot *s = NULL;
	PGconn *conn = NULL;
	bool timed_out = false;

	*out = NULL;
	pthread_mutex_lock(&pool->mu);
	if (!(s = find_free(pool))) {
		struct timespec deadline = deadline_after(pool->timeout_ms);
		pool->waiting++;
		while (!(s = find_free(pool)) && !timed_out) {
			int rc = pthread_cond_timedwait(&pool->freed, &pool->mu, &deadline);
			timed_out = rc == ETIMEDOUT;
		}
		pool->waiting--;
	}
	if (s) {
		s->in_use = true;
		pool->in_use++;
		conn = s->conn;
	}
	pthread_mutex_unlock(&pool->mu);
	if (!s) {
		fd_log(FD_LOG_WARN, "no database connection became free within %u ms", pool->timeout_ms);
		return FD_ERR_UNAVAILABLE;
	}

	/* The fast path: a healthy connection, one poll(2) and no lock. */
	if (conn && conn_healthy(conn)) {
		*out = conn;
		return FD_OK;
	}
	if (conn) {
		fd_log(FD_LOG_INFO, "database connection lost; reconnecting");
		set_conn(pool, s, NULL);  /* before PQfinish: no slot may point at freed memory */
		PQfinish(conn);
		conn = NULL;
	}
	err = connect_slot(pool, &conn);
	if (err) {
		put_back(pool, s, NULL);
		return err;
	}
	set_conn(pool, s, conn);
	*out = conn;
	return FD_OK;
}

void fd_pool_release(struct fd_pool *pool, PGconn *conn, bool broken)
{
	struct slot *s = NULL;

	if (!conn)
		return;
	if (PQstatus(conn) != CONNECTION_OK || PQtransactionStatus(conn) != PQTRANS_IDLE)
		broken = true;
	pthread_mutex_lock(&pool->mu);
	for (unsigned i = 0; i < pool->size && !s; i++)
		if (pool->slots[i].in_use && pool->slots[i].conn == conn)
			s = &pool->slots[i];
	pthread_mutex_unlock(&pool->mu);
	if (!s) {
		fd_log(FD_LOG_ERROR, "fd_pool_release: connection does not belong to this pool");
		return;
	}
	if (broken) {
		put_back(pool, s, NULL);
		PQfinish(conn);
	} else {
		put_back(pool, s, conn);
	}
}

void fd_pool_stats(struct fd_pool *pool, struct fd_pool_stats *out)
{
	pthread_mutex_lock(&pool->mu);
	out->size = pool->size;
	out->open = pool->open;
	out->in_use = pool->in_use;
	out->waiting = pool->waiting;
	pthread_mutex_unlock(&pool->mu);
	out->append_queue = fd_batcher_queued(pool->batcher);
}

void fd_pool_set_flags(struct fd_pool *pool, unsigned flags)
{
	pool->flags = flags;
}

void fd_pool_set_metrics(struct fd_pool *pool, struct fd_metrics *metrics)
{
	pool->metrics = metrics;
}

void fd_pool_set_notifier(struct fd_pool *pool, struct fd_notifier *notifier)
{
	pool->notifier = notifier;
}

void fd_pool_set_keyring(struct fd_pool *pool, struct fd_keyring *keyring)
{
	pool->keyring = keyring;
}

struct fd_keyring *fd_pool_keyring(const struct fd_pool *pool)
{
	return pool ? pool->keyring : NULL;
}

struct fd_notifier *fd_pool_notifier(const struct fd_pool *pool)
{
	return pool ? pool->notifier : NULL;
}

struct fd_metrics *fd_pool_metrics(const struct fd_pool *pool)
{
	return pool ? pool->metrics : NULL;
}

/* SQLSTATEs with their own meaning; everything else is FD_ERR_DB. */
static const struct {
	const char *sqlstate;
	size_t prefix;          /* compare this many characters: 2 for a class */
	enum fd_err err;
} sqlstate_map[] = {
	{ .sqlstate = "23505", .prefix = 5, .err = FD_ERR_DUPLICATE },    /* unique_violation */
	{ .sqlstate = "40001", .prefix = 5, .err = FD_ERR_RETRY },        /* serialization_failure */
	{ .sqlstate = "40P01", .prefix = 5, .err = FD_ERR_RETRY },        /* deadlock_detected */
	{ .sqlstate = "08", .prefix = 2, .err = FD_ERR_UNAVAILABLE },     /* connection exception */
	{ .sqlstate = "57P01", .prefix = 5, .err = FD_ERR_UNAVAILABLE },  /* admin_shutdown */
	{ .sqlstate = "57P02", .prefix = 5, .err = FD_ERR_UNAVAILABLE },  /* crash_shutdown */
	{ .sqlstate = "57P03", .prefix = 5, .err = FD_ERR_UNAVAILABLE },  /* cannot_connect_now */
	{ .sqlstate = "53300", .prefix = 5, .err = FD_ERR_UNAVAILABLE },  /* too_many_connections */
};

enum fd_err fd_pg_classify(PGconn *conn, const PGresult *res)
{
	if (!conn || PQstatus(conn) != CONNECTION_OK)
		return FD_ERR_UNAVAILABLE;
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	if (!state)
		return FD_ERR_DB;
	for (size_t i = 0; i < sizeof sqlstate_map / sizeof sqlstate_map[0]; i++)
		if (strncmp(state, sqlstate_map[i].sqlstate, sqlstate_map[i].prefix) == 0)
			return sqlstate_map[i].err;
	return FD_ERR_DB;
}

bool fd_pg_conn_broken(PGconn *conn, enum fd_err err)
{
	return !conn || PQstatus(conn) != CONNECTION_OK || err == FD_ERR_UNAVAILABLE;
}

static void log_notice(void *arg, const PGresult *res)
{
	const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
	if (!severity)
		severity = PQresultErrorField(res, PG_DIAG_SEVERITY);
	bool warning = severity && strcmp(severity, "WARNING") == 0;
	const char *message = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	json_t *fields = json_pack("{s:s, s:s?, s:s?, s:s, s:s?, s:s?}", "source", (const char *)arg, "severity",
				   severity, "sqlstate", PQresultErrorField(res, PG_DIAG_SQLSTATE), "notice",
				   message ? message : PQresultErrorMessage(res), "detail",
				   PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL), "hint",
				   PQresultErrorField(res, PG_DIAG_MESSAGE_HINT));
	fd_log_fields(warning ? FD_LOG_WARN : FD_LOG_DEBUG, warning ? "postgresql warning" : "postgresql notice",
		      fields);
}

void fd_pg_log_notices(PGconn *conn, const char *source)
{
	if (conn)
		PQsetNoticeReceiver(conn, log_notice, (void *)(source ? source : "postgresql"));
}

void fd_pool_set_append_batches(struct fd_pool *pool, unsigned max_inflight)
{
	fd_batcher_set_max(pool->batcher, max_inflight);
}

struct fd_batcher *fd_pool_batcher(const struct fd_pool *pool)
{
	return pool ? pool->batcher : NULL;
}

static bool backend_pid(PGconn *conn, long *pid)
{
	PGresult *res = PQexec(conn, "SELECT pg_backend_pid()");
	bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
	if (ok)
		*pid = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return ok;
}

enum fd_err fd_pooler_probe(const char *conninfo, bool *transaction)
{
	static const char *const keywords[] = { "connect_timeout", "dbname", "application_name", NULL };
	const char *values[] = { "3", conninfo, "factd-pooler-probe", NULL };
	enum fd_err err = FD_OK;
	PGconn *a = PQconnectdbParams(keywords, values, 1), *b = NULL;
	*transaction = false;
	if (PQstatus(a) == CONNECTION_OK)
		b = PQconnectdbParams(keywords, values, 1);
	fd_pg_log_notices(a, "pool");
	fd_pg_log_notices(b, "pool");
	if (PQstatus(a) != CONNECTION_OK || PQstatus(b) != CONNECTION_OK) {
		err = FD_ERR_UNAVAILABLE;
		goto done;
	}
	for (int i = 0; i < 5 && !*transaction; i++) {
		long pa = 0, pb = 0;
		if (!backend_pid(a, &pa) || !backend_pid(b, &pb)) {
			err = FD_ERR_UNAVAILABLE;
			goto done;
		}
		*transaction = pa == pb;
	}
done:
	PQfinish(a);
	PQfinish(b);
	return err;
}
