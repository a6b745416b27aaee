/*
 * runtime.h - everything one factd process runs for an app, started and
 * stopped together: the app's services, the metrics registry, the connection
 * pool, the command bus, the projector, the notifier, the saga engine and
 * the HTTP server.  fd_main uses it; so can a program (or a test) that
 * embeds factd.
 *
 * Threading: start and stop from one thread; everything started runs its
 * own threads.
 */
#ifndef FACTD_RUNTIME_H
#define FACTD_RUNTIME_H

#include <stdint.h>

#include "factd/app.h"
#include "factd/bus.h"
#include "factd/config.h"
#include "factd/http.h"
#include "factd/notify.h"
#include "factd/proj.h"
#include "factd/saga.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fd_webhooks;
struct fd_runtime_options {
	const char *version;          /* factd_build_info{version}; a literal */
	unsigned projection_idle_ms;  /* the projector's quiet-feed poll (0: its default) */
};

struct fd_retention_job;

struct fd_runtime {
	struct fd_ctx ctx;            /* what handlers see: cfg, app, services, pool, bus, metrics, notifier */
	struct fd_projector *projector;    /* NULL unless cfg->projections and the app has projections */
	struct fd_notifier *notifier;      /* NULL unless cfg->sse_notify */
	struct fd_saga_engine *sagas;      /* NULL unless cfg->sagas and the app has saga types */
	struct fd_retention_job *retention; /* NULL unless cfg->retention */
	struct fd_webhooks *webhooks;      /* NULL unless cfg->webhooks */
	struct fd_server *srv;
	uint16_t port;                /* the port bound */
	struct fd_replicas *replicas;      /* NULL unless cfg->read_database_urls */
	bool pooled;                  /* FACTD_DATABASE_URL goes through a transaction pooler */
	struct fd_keyring *keyring;   /* the master key of personal data; NULL without FACTD_MASTER_KEY_FILE */
};

/*
 * What FACTD_DATABASE_URL goes through and where session work connects:
 * *pooled from FACTD_POOLER, or probed (fd_pooler_probe) when it is auto;
 * *session is FACTD_SESSION_DATABASE_URL, else FACTD_DATABASE_URL unless
 * that is pooled, else NULL (no connection is safe for session work).
 * Borrowed from cfg.
 */
void fd_runtime_connections(const struct fd_config *cfg, bool *pooled, const char **session);

/*
 * Start everything for `app` under `cfg` (both borrowed; they must outlive
 * rt).  Migrations are not run here (fd_migrate_run).  On failure what was
 * started is stopped again and a message is in errbuf; FD_ERR_INVAL for a
 * bad setting of the app's services.
 */
FD_MUST_USE enum fd_err fd_runtime_start(struct fd_runtime *rt, const struct fd_config *cfg, const struct fd_app *app,
					 const struct fd_runtime_options *opts, char *errbuf, size_t errlen);
/* Stop the server (letting requests in flight finish for up to grace_ms), then the rest, newest first. */
void fd_runtime_stop(struct fd_runtime *rt, unsigned grace_ms);

#ifdef __cplusplus
}
#endif

#endif
