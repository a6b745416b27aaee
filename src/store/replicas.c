/*
 * replicas.c - read replicas behind src/store/replicas.h.
 *
 * The prober thread samples the primary's WAL position (pg_current_wal_lsn)
 * into a ring of (time, position) and then asks each replica whether it is
 * in recovery and how far it has replayed (pg_last_wal_replay_lsn).  A
 * replica's lag is the age of the oldest sample past its replayed position:
 * the primary had WAL the replica lacks at least that long ago.  Probing
 * never stops, so a replica that was down is used again once it answers.
 *
 * Threading: the mutex guards every replica's state and the ring; the pools
 * are thread-safe; counters are atomics.  The probe connections belong to
 * the prober thread.
 */
#include "store/replicas.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "factd/config.h"
#include "factd/log.h"

#define MAX_REPLICAS 16
#define RING 1024 /* primary samples: 1024 probe intervals of history */

const char *const fd_replica_fallback_names[FD_FALLBACK_COUNT] = {
	[FD_FALLBACK_UNAVAILABLE] = "unavailable",
	[FD_FALLBACK_BEHIND] = "behind",
	[FD_FALLBACK_ERROR] = "error",
};

struct replica {
	char *url;
	char shown[256];          /* redacted url */
	struct fd_pool *pool;
	PGconn *probe;            /* the prober's own connection */
	/* under mu */
	bool up, standby, failed, lag_known;
	int64_t lag_ms;
	char error[160];
	atomic_uint_fast64_t reads;
};

struct fd_replicas {
	struct fd_replicas_config cfg;
	char *primary_url;
	pthread_mutex_t mu;
	pthread_cond_t wake;
	bool stop;
	pthread_t thread;
	bool thread_ok;
	PGconn *primary;          /* the prober's */
	struct { int64_t ms; int64_t lsn; } ring[RING];
	unsigned ring_head, ring_n;
	atomic_uint next;         /* round-robin start */
	atomic_uint_fast64_t primary_reads;
	atomic_uint_fast64_t fallbacks[FD_FALLBACK_COUNT];
	unsigned n;
	struct replica rep[MAX_REPLICAS];
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static PGconn *connect_probe(const char *url, const char *name)
{
	static const char *const keys[] = { "connect_timeout", "dbname", "application_name", NULL };
	const char *vals[] = { "2", url, name, NULL };
	PGconn *c = PQconnectdbParams(keys, vals, 1);
	fd_pg_log_notices(c, "replicas");
	return c;
}

/* One bigint from a one-row, one-column answer of sql on *c (reconnecting first if needed). */
static bool probe_query(PGconn **c, const char *url, const char *sql, char *a, size_t alen, int64_t *b,
			char *error, size_t elen)
{
	if (!*c || PQstatus(*c) != CONNECTION_OK) {
		PQfinish(*c);
		*c = connect_probe(url, "factd-replica-probe");
	}
	if (!*c || PQstatus(*c) != CONNECTION_OK) {
		snprintf(error, elen, "%s", *c ? PQerrorMessage(*c) : "out of memory");
		PQfinish(*c);
		*c = NULL;
		return false;
	}
	PGresult *res = PQexec(*c, sql);
	bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
	if (ok) {
		if (a)
			snprintf(a, alen, "%s", PQgetvalue(res, 0, 0));
		*b = strtoll(PQgetvalue(res, 0, PQnfields(res) - 1), NULL, 10);
	} else {
		snprintf(error, elen, "%s", PQerrorMessage(*c));
		if (PQstatus(*c) != CONNECTION_OK) {
			PQfinish(*c);
			*c = NULL;
		}
	}
	PQclear(res);
	/* libpq messages end with a newline */
	size_t n = strlen(error);
	while (n && (error[n - 1] == '\n' || error[n - 1] == ' '))
		error[--n] = '\0';
	return ok;
}

static void probe_round(struct fd_replicas *r)
{
	char error[160] = "";
	int64_t lsn = 0;
	if (probe_query(&r->primary, r->primary_url, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint", NULL,
			0, &lsn, error, sizeof error)) {
		pthread_mutex_lock(&r->mu);
		unsigned slot = (r->ring_head + r->ring_n) % RING;
		if (r->ring_n == RING)
			r->ring_head = (r->ring_head + 1) % RING;
		else
			r->ring_n++;
		r->ring[slot].ms = now_ms();
		r->ring[slot].lsn = lsn;
		pthread_mutex_unlock(&r->mu);
	}
	for (unsigned i = 0; i < r->n; i++) {
		struct replica *p = &r->rep[i];
		char rec[8] = "";
		int64_t replay = 0;
		error[0] = '\0';
		bool ok = probe_query(&p->probe, p->url,
				      "SELECT pg_is_in_recovery()::text,"
				      " pg_wal_lsn_diff(coalesce(pg_last_wal_replay_lsn(), '0/0'), '0/0')::bigint",
				      rec, sizeof rec, &replay, error, sizeof error);
		pthread_mutex_lock(&r->mu);
		bool was_up = p->up && !p->failed;
		p->up = ok;
		if (ok) {
			p->failed = false;
			p->standby = strcmp(rec, "true") == 0;
			snprintf(p->error, sizeof p->error, "%s", p->standby ? "" : "not in recovery: not a standby");
			/* the oldest sample past what the replica replayed */
			p->lag_known = r->ring_n > 0;
			p->lag_ms = 0;
			int64_t now = now_ms();
			for (unsigned k = 0; k < r->ring_n; k++) {
				unsigned s = (r->ring_head + k) % RING;
				if (r->ring[s].lsn > replay) {
					p->lag_ms = now - r->ring[s].ms;
					break;
				}
			}
		} else {
			snprintf(p->error, sizeof p->error, "%s", error[0] ? error : "unreachable");
		}
		bool is_up = p->up && !p->failed;
		pthread_mutex_unlock(&r->mu);
		if (was_up != is_up)
			fd_log_fields(is_up ? FD_LOG_INFO : FD_LOG_WARN, is_up ? "read replica up" : "read replica down",
				      json_pack("{s:i, s:s, s:s}", "replica", (int)i, "database", p->shown, "error", error));
	}
}

static void *prober(void *arg)
{
	struct fd_replicas *r = arg;
	pthread_mutex_lock(&r->mu);
	while (!r->stop) {
		pthread_mutex_unlock(&r->mu);
		probe_round(r);
		pthread_mutex_lock(&r->mu);
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += r->cfg.probe_ms / 1000;
		ts.tv_nsec += (long)(r->cfg.probe_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!r->stop && pthread_cond_timedwait(&r->wake, &r->mu, &ts) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

enum fd_err fd_replicas_start(const struct fd_replicas_config *cfg, struct fd_replicas **out)
{
	enum fd_err err = FD_OK;
	char *urls[MAX_REPLICAS] = { 0 };
	*out = NULL;
	size_t n = fd_config_split_urls(cfg->urls, urls, MAX_REPLICAS);
	if (n == 0 || n > MAX_REPLICAS) {
		for (size_t i = 0; i < MAX_REPLICAS; i++)
			free(urls[i]);
		return FD_ERR_INVAL;
	}
	struct fd_replicas *r = calloc(1, sizeof *r);
	if (!r) {
		for (size_t i = 0; i < n; i++)
			free(urls[i]);
		return FD_ERR_NOMEM;
	}
	r->cfg = *cfg;
	r->cfg.urls = NULL;
	r->n = (unsigned)n;
	pthread_mutex_init(&r->mu, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&r->wake, &attr);
	pthread_condattr_destroy(&attr);
	r->primary_url = strdup(cfg->primary_url ? cfg->primary_url : "");
	if (!r->primary_url)
		err = FD_ERR_NOMEM;
	for (unsigned i = 0; i < r->n; i++) {
		struct replica *p = &r->rep[i];
		p->url = urls[i];
		urls[i] = NULL;
		char *shown = fd_config_redact_url(p->url);
		snprintf(p->shown, sizeof p->shown, "%s", shown ? shown : "");
		free(shown);
		snprintf(p->error, sizeof p->error, "not probed yet");
		if (!err && !(err = fd_pool_new(p->url, cfg->pool_size, cfg->pool_timeout_ms, &p->pool)))
			fd_pool_set_flags(p->pool, FD_POOL_PREPARE_ON_USE);
	}
	if (!err) {
		probe_round(r); /* know the replicas' state before the first request */
		if (pthread_create(&r->thread, NULL, prober, r) != 0)
			err = FD_ERR_INTERNAL;
		else
			r->thread_ok = true;
	}
	if (err) {
		fd_replicas_stop(r);
		return err;
	}
	*out = r;
	return FD_OK;
}

void fd_replicas_stop(struct fd_replicas *r)
{
	if (!r)
		return;
	if (r->thread_ok) {
		pthread_mutex_lock(&r->mu);
		r->stop = true;
		pthread_cond_signal(&r->wake);
		pthread_mutex_unlock(&r->mu);
		pthread_join(r->thread, NULL);
	}
	for (unsigned i = 0; i < r->n; i++) {
		PQfinish(r->rep[i].probe);
		fd_pool_free(r->rep[i].pool);
		free(r->rep[i].url);
	}
	PQfinish(r->primary);
	pthread_cond_destroy(&r->wake);
	pthread_mutex_destroy(&r->mu);
	free(r->primary_url);
	free(r);
}

unsigned fd_replicas_count(const struct fd_replicas *r)
{
	return r ? r->n : 0;
}

static bool usable_locked(const struct fd_replicas *r, const struct replica *p)
{
	return p->up && p->standby && !p->failed && (!p->lag_known || p->lag_ms <= (int64_t)r->cfg.max_lag_ms);
}

static bool usable(struct fd_replicas *r, unsigned i)
{
	pthread_mutex_lock(&r->mu);
	bool ok = usable_locked(r, &r->rep[i]);
	pthread_mutex_unlock(&r->mu);
	return ok;
}

/* Has replica i replayed what `need` asks for?  false with *broken on a connection failure. */
static bool has_replayed(struct fd_replicas *r, unsigned i, const struct fd_read_need *need, bool *broken)
{
	PGconn *conn = NULL;
	*broken = false;
	enum fd_err err = fd_pool_acquire(r->rep[i].pool, &conn);
	if (err) {
		*broken = err == FD_ERR_UNAVAILABLE;
		return false;
	}
	bool ok = true;
	if (need->has_position && need->position.tx > 0) {
		char tx[24];
		snprintf(tx, sizeof tx, "%llu", (unsigned long long)need->position.tx);
		const char *params[] = { tx };
		PGresult *res = NULL;
		/* The writing transaction committed on the primary; it is visible here once replayed. */
		err = fd_sql_once(conn, "SELECT pg_visible_in_snapshot($1::xid8, pg_current_snapshot())", 1, params, &res);
		ok = !err && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		PQclear(res);
	}
	if (ok && !err && need->stream && need->min_version > 0) {
		char v[24];
		snprintf(v, sizeof v, "%lld", (long long)need->min_version);
		const char *params[] = { need->stream, v };
		PGresult *res = NULL;
		err = fd_sql_once(conn, "SELECT coalesce((SELECT version FROM streams WHERE stream_id = $1), 0) >= $2::bigint", 2,
				  params, &res);
		ok = !err && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		PQclear(res);
	}
	*broken = err && fd_pg_conn_broken(conn, err);
	fd_pool_release(r->rep[i].pool, conn, *broken);
	return ok && !err;
}

static void mark_failed(struct fd_replicas *r, unsigned i)
{
	pthread_mutex_lock(&r->mu);
	bool was = r->rep[i].failed;
	r->rep[i].failed = true;
	pthread_mutex_unlock(&r->mu);
	if (!was)
		fd_log_fields(FD_LOG_WARN, "read replica failed; reads go elsewhere until it answers a probe",
			      json_pack("{s:i, s:s}", "replica", (int)i, "database", r->rep[i].shown));
}

static int chosen(struct fd_replicas *r, unsigned i, struct fd_pool **pool)
{
	atomic_fetch_add(&r->rep[i].reads, 1);
	*pool = r->rep[i].pool;
	return (int)i;
}

static int fallback(struct fd_replicas *r, enum fd_replica_fallback why)
{
	atomic_fetch_add(&r->fallbacks[why], 1);
	atomic_fetch_add(&r->primary_reads, 1);
	return -1;
}

int fd_replicas_choose(struct fd_replicas *r, const struct fd_read_need *need, struct fd_pool **pool)
{
	if (!r || r->n == 0)
		return -1;
	unsigned start = atomic_fetch_add(&r->next, 1);
	bool needs = need && ((need->has_position && need->position.tx > 0) || (need->stream && need->min_version > 0));
	if (!needs) {
		for (unsigned k = 0; k < r->n; k++) {
			unsigned i = (start + k) % r->n;
			if (usable(r, i))
				return chosen(r, i, pool);
		}
		return fallback(r, FD_FALLBACK_UNAVAILABLE);
	}
	int64_t deadline = now_ms() + r->cfg.wait_ms;
	for (unsigned delay_ms = 2;; delay_ms = delay_ms < 20 ? delay_ms * 2 : 20) {
		bool any = false;
		for (unsigned k = 0; k < r->n; k++) {
			unsigned i = (start + k) % r->n;
			if (!usable(r, i))
				continue;
			any = true;
			bool broken = false;
			if (has_replayed(r, i, need, &broken))
				return chosen(r, i, pool);
			if (broken)
				mark_failed(r, i);
		}
		int64_t left = deadline - now_ms();
		if (!any)
			return fallback(r, FD_FALLBACK_UNAVAILABLE);
		if (left <= 0)
			return fallback(r, FD_FALLBACK_BEHIND);
		usleep((useconds_t)(left < delay_ms ? left : delay_ms) * 1000);
	}
}

void fd_replicas_failed(struct fd_replicas *r, int i, enum fd_err err)
{
	if (!r || i < 0 || (unsigned)i >= r->n)
		return;
	if (err == FD_ERR_UNAVAILABLE)
		mark_failed(r, (unsigned)i);
	atomic_fetch_sub(&r->rep[i].reads, 1);
	(void)fallback(r, FD_FALLBACK_ERROR);
}

void fd_replicas_state(struct fd_replicas *r, unsigned i, struct fd_replica_state *out)
{
	memset(out, 0, sizeof *out);
	if (!r || i >= r->n)
		return;
	struct replica *p = &r->rep[i];
	pthread_mutex_lock(&r->mu);
	snprintf(out->url, sizeof out->url, "%s", p->shown);
	out->up = p->up && !p->failed;
	out->standby = p->standby;
	out->usable = usable_locked(r, p);
	out->lag_known = p->lag_known;
	out->lag_ms = p->lag_ms;
	snprintf(out->error, sizeof out->error, "%s",
		 p->failed ? "a request could not reach it; waiting for the next probe" : p->error);
	if (out->usable)
		out->error[0] = '\0';
	else if (!out->error[0] && p->lag_known && p->lag_ms > (int64_t)r->cfg.max_lag_ms)
		snprintf(out->error, sizeof out->error, "lagging more than FACTD_REPLICA_MAX_LAG_MS");
	pthread_mutex_unlock(&r->mu);
	out->reads = atomic_load(&p->reads);
}

uint64_t fd_replicas_primary_reads(struct fd_replicas *r)
{
	return r ? atomic_load(&r->primary_reads) : 0;
}

uint64_t fd_replicas_fallbacks(struct fd_replicas *r, enum fd_replica_fallback reason)
{
	return r && reason < FD_FALLBACK_COUNT ? atomic_load(&r->fallbacks[reason]) : 0;
}
