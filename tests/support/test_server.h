/*
 * test_server.h - run factd's HTTP server in the test process on an
 * ephemeral port, against a database of the test's own.
 */
#ifndef FACTD_TEST_SERVER_H
#define FACTD_TEST_SERVER_H

#include <stdint.h>
#include "factd/bus.h"
#include "factd/config.h"
#include "factd/app.h"
#include "factd/http.h"
#include "factd/runtime.h"
#include "factd/notify.h"
#include "factd/pool.h"
#include "factd/proj.h"
#include "factd/saga.h"

struct fd_test_server {
	struct fd_config cfg;
	struct fd_pool *pool;
	struct fd_bus *bus;
	struct fd_projector *projector;
	struct fd_notifier *notifier;   /* started when cfg.sse_notify */
	struct fd_saga_engine *sagas;   /* started only when a tweak sets cfg.sagas (off by default here) */
	struct fd_metrics *metrics;
	struct fd_runtime rt;
	struct fd_ctx ctx;              /* a copy of rt.ctx, for tests that start a second server like it */
	struct fd_server *srv;
	uint16_t port;
	char *db_url;   /* owned */
};

/*
 * Start `app` on a fresh migrated database (db_url NULL) or the given one
 * (copied), with configuration tweaks applied by `tweak` (may be NULL)
 * before start.  Fails the test on error.  On a fresh database the app's
 * own migrations are applied first.
 */
void fd_test_server_start_app(struct fd_test_server *ts, const char *db_url, const struct fd_app *app,
			      void (*tweak)(struct fd_config *));
/*
 * The app a suite serves: the framework's test-only app (test_app.h) unless
 * the suite defines FD_TEST_APP before including this header (an app's
 * suites: #define FD_TEST_APP (&shop_app)).
 */
#ifndef FD_TEST_APP
#include "test_app.h"
#define FD_TEST_APP (&fd_test_app)
#endif
#define fd_test_server_start(ts, db_url) fd_test_server_start_app((ts), (db_url), FD_TEST_APP, NULL)
#define fd_test_server_start_with(ts, db_url, tweak) fd_test_server_start_app((ts), (db_url), FD_TEST_APP, (tweak))
void fd_test_server_stop(struct fd_test_server *ts);

/* Run SQL returning one number on a fresh connection to the server's database (fails the test on error). */
long long fd_test_server_scalar(const struct fd_test_server *ts, const char *sql);

struct fd_test_resp;
/*
 * Assert that r is a problem document: the given status, Content-Type
 * application/problem+json, and members type (FD_PROBLEM_BASE + slug; any
 * slug when NULL), title, status, detail and request_id (equal to the
 * X-Request-Id header).
 */
void fd_test_assert_problem(const struct fd_test_resp *r, int status, const char *slug);
/* The same checks except that detail may be absent (to test other properties of a response separately). */
void fd_test_assert_problem_no_detail(const struct fd_test_resp *r, int status, const char *slug);

#endif
