/*
 * replicas.h - read replicas: one connection pool per streaming standby,
 * a prober that keeps each one's state and lag, and the choice of the
 * replica (or the primary) that serves one read.
 *
 * Reads go to a replica that is up, is a standby and lags no more than
 * max_lag_ms, in turn.  A read that needs a position or a stream version
 * (read-your-writes) waits up to wait_ms for a replica that has replayed
 * it, then goes to the primary.  A replica a request found broken is
 * skipped until the prober reaches it again.  Lag is measured against the
 * primary's WAL position as this process sampled it, so no clocks of other
 * hosts are involved: a replica whose replayed position the primary passed
 * at time t lags now - t.
 *
 * Threading: everything here may be called from any thread; the prober runs
 * its own.
 */
#ifndef FACTD_REPLICAS_H
#define FACTD_REPLICAS_H

#include <stdbool.h>
#include <stdint.h>

#include "factd/error.h"
#include "factd/events.h"
#include "factd/pool.h"

struct fd_replicas;

struct fd_replicas_config {
	const char *urls;         /* FACTD_READ_DATABASE_URL (fd_config_split_urls), borrowed */
	const char *primary_url;  /* where the primary's WAL position is sampled, borrowed */
	unsigned pool_size;       /* connections per replica */
	unsigned pool_timeout_ms;
	unsigned probe_ms;        /* how often each replica is probed */
	unsigned max_lag_ms;      /* lagging more: skipped */
	unsigned wait_ms;         /* longest wait for a replica to replay what a read needs */
};

/* Parse the URLs, make the pools and start the prober.  FD_ERR_INVAL on a bad list.  Caller owns *out. */
FD_MUST_USE enum fd_err fd_replicas_start(const struct fd_replicas_config *cfg, struct fd_replicas **out);
/* Stop the prober, close every connection and free.  No pool may be in use.  NULL is a no-op. */
void fd_replicas_stop(struct fd_replicas *r);

unsigned fd_replicas_count(const struct fd_replicas *r);

/*
 * The replica that serves a read needing `need` (may be NULL): its index and
 * *pool, or -1 (*pool untouched) when the primary must serve it.  May wait
 * up to wait_ms.  Counts the read by target, and a fallback by its reason.
 */
int fd_replicas_choose(struct fd_replicas *r, const struct fd_read_need *need, struct fd_pool **pool);

/*
 * A read on replica i failed with err (FD_ERR_UNAVAILABLE: the replica is
 * skipped until the prober reaches it again); the primary serves the read
 * instead, counted as a fallback.
 */
void fd_replicas_failed(struct fd_replicas *r, int i, enum fd_err err);

struct fd_replica_state {
	char url[256];            /* redacted */
	bool up;                  /* the last probe reached it */
	bool standby;             /* in recovery (a streaming standby) */
	bool usable;              /* up, a standby, not failed, lag within the limit */
	bool lag_known;           /* a primary sample exists to compare with */
	int64_t lag_ms;
	char error[160];          /* why it is not up, "" otherwise */
	uint64_t reads;           /* reads served */
};
void fd_replicas_state(struct fd_replicas *r, unsigned i, struct fd_replica_state *out);

enum fd_replica_fallback { FD_FALLBACK_UNAVAILABLE, FD_FALLBACK_BEHIND, FD_FALLBACK_ERROR, FD_FALLBACK_COUNT };
/* Reads served by the primary, and the fallbacks by reason (fd_replica_fallback_names). */
uint64_t fd_replicas_primary_reads(struct fd_replicas *r);
uint64_t fd_replicas_fallbacks(struct fd_replicas *r, enum fd_replica_fallback reason);
extern const char *const fd_replica_fallback_names[FD_FALLBACK_COUNT];

#endif
