/*
 * workers.h - a fixed pool of threads that run request handlers (which may
 * block on PostgreSQL) off libmicrohttpd's event loop.
 *
 * A job is embedded in what it works on (no allocation per submission) and
 * is run exactly once per successful submission, in submission order.
 * Threading: every function is thread-safe.
 */
#ifndef FACTD_HTTP_WORKERS_H
#define FACTD_HTTP_WORKERS_H

#include <stdbool.h>
#include "factd/error.h"

struct fd_job {
	void (*run)(struct fd_job *job); /* called on a worker thread */
	struct fd_job *next;             /* the queue's link; the pool's while queued */
};

struct fd_workers;

/* Start `n` threads (at least one).  Caller owns *out; FD_ERR_NOMEM / FD_ERR_IO. */
FD_MUST_USE enum fd_err fd_workers_start(unsigned n, struct fd_workers **out);
/*
 * Queue `job` (borrowed until its run() returns).  False once
 * fd_workers_close has been called: the job will not run.
 */
bool fd_workers_submit(struct fd_workers *w, struct fd_job *job);
/* Jobs queued or running now (for metrics and tests). */
unsigned fd_workers_busy(struct fd_workers *w);
/*
 * Refuse new jobs and wait until every queued and running job has returned.
 * Jobs may still be submitted by running jobs until then; those are refused.
 */
void fd_workers_close(struct fd_workers *w);
/* Close (if not yet), join the threads and free.  NULL is a no-op. */
void fd_workers_stop(struct fd_workers *w);

#endif
