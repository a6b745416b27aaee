/*
 * metrics.h - the metrics registry: counters and histograms with label sets
 * fixed at creation, written out in the Prometheus text exposition format
 * 0.0.4.
 *
 * Every series is a slot in arrays allocated once by fd_metrics_new.
 * Recording is a relaxed atomic add to one or two slots: no lock and no
 * allocation, so request threads, the command bus and the store record
 * concurrently.  A scrape reads each slot once; the series are not one
 * instant's snapshot, but a histogram's +Inf bucket always equals its _count.
 *
 * Labels are bounded by construction: routes are the route table's templates
 * plus "unmatched" (never raw paths), methods and statuses come from fixed
 * tables with an "other" row, aggregates are the names given at creation
 * plus "other".
 *
 * Every recording function accepts a NULL registry and then does nothing, so
 * callers need no checks and code runs the same with metrics left out.
 *
 * Threading: recording and rendering are thread-safe; fd_metrics_new and
 * fd_metrics_free are not (start-up and shutdown).
 */
#ifndef FACTD_METRICS_H
#define FACTD_METRICS_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "factd/buf.h"
#include "factd/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FD_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* The route index of a request that matched no route (404 or 405 before routing). */
#define FD_METRICS_UNMATCHED ((size_t)-1)

struct fd_metrics;

/* What a registry is labelled with.  The arrays are copied; the strings are borrowed and must outlive it. */
struct fd_metrics_config {
	const char *version;            /* factd_build_info{version} */
	const char *const *routes;      /* route template of each route index; a template may repeat
					   (one path, several methods) and is then one label value */
	size_t nroutes;
	const char *const *aggregates;  /* aggregate type names, e.g. "order" */
	size_t naggregates;
};

/*
 * Create a registry; the process start time is taken now.  FD_ERR_INVAL when
 * a string is NULL or an array is NULL with a non-zero count.  Caller owns
 * *out; free with fd_metrics_free.
 */
FD_MUST_USE enum fd_err fd_metrics_new(const struct fd_metrics_config *cfg, struct fd_metrics **out);
/* NULL is a no-op.  Nothing may record into the registry any more. */
void fd_metrics_free(struct fd_metrics *m);

/*
 * One answered HTTP request: `route` is its index in the config's routes (or
 * FD_METRICS_UNMATCHED; any index out of range counts as unmatched),
 * `method` the request method, `status` the response status, `duration_ns`
 * the time it took.  Counts factd_http_requests_total and observes
 * factd_http_request_duration_seconds.
 */
void fd_metrics_http_request(struct fd_metrics *m, size_t route, const char *method, unsigned status,
			     uint64_t duration_ns);

/* How one call to the event store's append ended (factd_appends_total{result}). */
enum fd_metrics_append {
	FD_METRICS_APPEND_OK,         /* events written */
	FD_METRICS_APPEND_DUPLICATE,  /* an idempotent repeat: nothing written */
	FD_METRICS_APPEND_CONFLICT,   /* expected version or event id conflict: nothing written */
	FD_METRICS_APPEND_ERROR,      /* invalid input, database or internal failure */
	FD_METRICS_APPEND_COUNT
};

/* One append and the number of events it wrote (factd_events_appended_total). */
void fd_metrics_append(struct fd_metrics *m, enum fd_metrics_append result, size_t events_written);

/* How one command sent through the command bus ended (factd_commands_total{aggregate,result}). */
enum fd_metrics_command {
	FD_METRICS_COMMAND_OK,
	FD_METRICS_COMMAND_REPLAYED,      /* an idempotent repeat: answered from the first result */
	FD_METRICS_COMMAND_INVALID,       /* unknown command, bad id or invalid payload */
	FD_METRICS_COMMAND_REJECTED,      /* the domain refused it */
	FD_METRICS_COMMAND_PRECONDITION,  /* If-Match no longer held */
	FD_METRICS_COMMAND_CONFLICT,      /* version conflicts outlasted the retries */
	FD_METRICS_COMMAND_IDEMPOTENCY,   /* idempotency key reused with another request */
	FD_METRICS_COMMAND_ERROR,         /* database or internal failure */
	FD_METRICS_COMMAND_COUNT
};

/* One command of aggregate type `aggregate` (a name not given at creation counts as "other"). */
void fd_metrics_command(struct fd_metrics *m, const char *aggregate, enum fd_metrics_command result);
/* One version conflict the command bus met appending (factd_command_conflicts_total{aggregate}). */
void fd_metrics_command_conflict(struct fd_metrics *m, const char *aggregate);
/* One batch of `appends` appends run together (factd_append_batches_total, factd_append_batched_total). */
void fd_metrics_append_batch(struct fd_metrics *m, size_t appends);
/* One aggregate snapshot written (factd_snapshots_written_total). */
void fd_metrics_snapshot_written(struct fd_metrics *m);

/* What one round of the retention job removed and wrote (factd_retention_*). */
struct fd_metrics_retention {
	uint64_t events_removed;   /* events removed by retention policies */
	uint64_t events_archived;  /* of those, written to archive files first */
	uint64_t archive_files;    /* archive files written */
	uint64_t sagas_removed;    /* ended sagas removed */
	bool failed;               /* the round (or the saga cleanup) stopped on an error */
};
/*
 * One round of the retention job run by this process (the one holding its
 * lock), ended at unix time `at`: adds to the factd_retention_* counters and
 * sets factd_retention_last_run_timestamp_seconds.
 */
void fd_metrics_retention_round(struct fd_metrics *m, const struct fd_metrics_retention *r, int64_t at);

/* The connection pool's gauges, read by the caller at scrape time. */
struct fd_metrics_pool {
	unsigned size;     /* configured connections */
	unsigned open;     /* established */
	unsigned in_use;   /* handed out */
	unsigned waiting;  /* threads waiting for one */
	unsigned append_queue; /* appends waiting to join a batch */
};

/*
 * Append the exposition text of every metric in `m` (not NULL) to `out`:
 * "# HELP" and "# TYPE" for each family, then its series.  The HTTP families
 * (requests by route, method and status; durations by route) show only the
 * series that have counted something, as the full products would be mostly
 * zeros; the other families show every label value, zeros included
 * (aggregate "other" once used).  `pool` NULL leaves the pool gauges out.
 */
FD_MUST_USE enum fd_err fd_metrics_render(const struct fd_metrics *m, const struct fd_metrics_pool *pool,
					  struct fd_buf *out);

#ifdef __cplusplus
}
#endif

#endif
