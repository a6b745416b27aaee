/*
 * app.h - an application built on factd: one `struct fd_app` value.
 *
 * An app declares everything it adds to the framework in one static const
 * value: its aggregate types, its HTTP routes, its saga types, its
 * projections, its own migrations and the outside systems ("services") its
 * handlers and saga steps talk to.  The framework derives everything generic
 * from it: the route table (the framework's routes, then the app's), the
 * categories whose appends through POST /streams/{stream}/events are checked
 * by their aggregate, the metrics labels, the saga and projection operations
 * endpoints, and the migrations /readyz waits for.  Nothing of an app is
 * reached through a link-time global.
 *
 * An app's main() is one line:
 *
 *     int main(int argc, char **argv) { return fd_main(argc, argv, &shop_app); }
 *
 * Threading: the value is read-only and shared by every thread.
 */
#ifndef FACTD_APP_H
#define FACTD_APP_H

#include <stddef.h>

#include "factd/aggregate.h"
#include "factd/config.h"
#include "factd/error.h"
#include "factd/migrate.h"
#include "factd/proj.h"
#include "factd/router.h"
#include "factd/saga.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The outside systems of an app (a payment gateway, a mail service, ...) with
 * their configuration.  start() runs once per process before anything is
 * served; it reads its own settings (FACTD_* variables, see fd_env_int) and
 * returns the object handlers find in req->ctx->services and saga steps in
 * ctx->services.  On FD_ERR_INVAL it writes why to errbuf and the process
 * exits with status 2, as for a bad framework setting.  stop() frees it.
 */
struct fd_app_services {
	FD_MUST_USE enum fd_err (*start)(const struct fd_config *cfg, void **out, char *errbuf, size_t errlen);
	void (*stop)(void *services);
	const char *usage;  /* lines added to --help for the settings start() reads; may be NULL */
};

struct fd_app {
	const char *name;      /* "shop": in logs, --help, --version and /readyz */
	const char *version;   /* the app's version, e.g. "1.4.0"; NULL: the framework's */
	const struct fd_aggregate_type *const *aggregates;
	size_t naggregates;
	/*
	 * Served after the framework's own routes: nroutes rows, or when
	 * nroutes is 0, the rows before the first without a method ({ 0 }), so
	 * a table in another file needs no count.
	 */
	const struct fd_route *routes;
	size_t nroutes;
	const struct fd_saga_type *const *sagas;
	size_t nsagas;
	const struct fd_projection *const *projections;
	size_t nprojections;
	/*
	 * The app's own schema, numbered 1..n in their own sequence: applied
	 * after the framework's migrations, behind the same lock, recorded with
	 * their checksums under the set's scope (the app's name).  Made from the
	 * app's NNNN_name.sql files by factd-embed-migrations; NULL: none.
	 */
	const struct fd_migration_set *migrations;
	const struct fd_app_services *services;  /* NULL: none */
};

/* Number of elements of a static array, for the counts of an app's tables. */
#define FD_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/*
 * The whole process: configuration from the environment and argv, --help,
 * --version, `migrate`, `serve` (migrate unless --no-migrate, start the
 * services, the pool, the command bus, the projector, the notifier, the
 * saga engine and the HTTP server), then wait for SIGTERM or SIGINT and stop
 * gracefully.  Returns the process's exit status.
 */
int fd_main(int argc, char **argv, const struct fd_app *app);

/* Lookups in an app's tables by name; NULL when absent. */
const struct fd_aggregate_type *fd_app_aggregate(const struct fd_app *app, const char *name);
const struct fd_saga_type *fd_app_saga(const struct fd_app *app, const char *name);
const struct fd_projection *fd_app_projection(const struct fd_app *app, const char *name);
/*
 * The app's aggregate type whose streams `stream` belongs to
 * ("<category>-<valid id>"), with *id pointing at the id inside stream; NULL
 * when none.
 */
const struct fd_aggregate_type *fd_app_aggregate_of_stream(const struct fd_app *app, const char *stream,
							   const char **id);

#ifdef __cplusplus
}
#endif

#endif
