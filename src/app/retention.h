/*
 * retention.h - the retention job: one background thread per process, of
 * which exactly one at a time (a session advisory lock on its own
 * connection, like a projection's) runs the rounds: every category's
 * retention policy (store/lifecycle.h) and the removal of ended sagas.
 *
 * Threading: start and stop from one thread; the job runs its own.
 */
#ifndef FACTD_APP_RETENTION_H
#define FACTD_APP_RETENTION_H

#include "factd/app.h"
#include "factd/bus.h"
#include "factd/config.h"
#include "factd/error.h"
#include "factd/metrics.h"

struct fd_retention_job;

/*
 * Start the job for `app` under `cfg` (both borrowed; they, bus and metrics
 * must outlive it).  Each round it runs is counted in metrics (may be NULL).
 */
FD_MUST_USE enum fd_err fd_retention_start(const struct fd_config *cfg, const struct fd_app *app,
					   const struct fd_bus *bus, struct fd_metrics *metrics,
					   struct fd_retention_job **out);
/* Stop and free it; NULL is a no-op. */
void fd_retention_stop(struct fd_retention_job *job);

#endif
