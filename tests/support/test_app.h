/*
 * test_app.h - a test-only app that proves the framework with types of its
 * own: a "counter" aggregate (commands create, add {amount}, close, adjust
 * {delta, reason}, whose CounterAdjusted event is at schema version 3 after
 * a rename from CounterCorrected: the schema tests' versioned types), a
 * "counter_totals" projection, a "counter_closer" saga that closes a counter
 * once its total reaches 100, and a migration of its own (counter_audit).
 * Routes: POST /counters, POST /counters/{id}/add, POST /counters/{id}/close,
 * GET /counters/{id}, GET /counters/{id}/events, GET /counters/{id}/saga.
 */
#ifndef FACTD_TEST_APP_H
#define FACTD_TEST_APP_H

#include <stdbool.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "factd/app.h"

struct fd_test_counter {
	bool exists, closed;
	int64_t total;
	int64_t adds;
};

extern const struct fd_aggregate_type fd_test_counter_type;
extern const struct fd_projection fd_test_counter_totals;
extern const struct fd_saga_type fd_test_counter_closer;
/*
 * Holds that let a test interleave with the saga engine (0: none, the
 * default).  The closer's fold stops at a CounterAdded of exactly
 * fd_test_fold_hold (inside the intake's batch, between reading the saga's
 * row and writing it), and its close step stops before its command while
 * fd_test_step_hold is set; each stop sets its *_held flag and waits (at
 * most 20 s) until the test clears the hold.  A fold hold stops once.
 */
extern atomic_int fd_test_fold_hold;
extern atomic_bool fd_test_fold_held;
extern atomic_bool fd_test_step_hold;
extern atomic_bool fd_test_step_held;
/* Personal data in saga data: a member's e-mail (stream API, category "member"). */
extern const struct fd_saga_type fd_test_member_welcome;
/* Its migrations (support/migrations), scope "test". */
extern const struct fd_migration_set fd_test_app_migrations;
extern const struct fd_app fd_test_app;

#endif
