/*
 * notify.h - wake feed followers when events commit.
 *
 * Appends are announced with NOTIFY on the channel factd_events (see
 * migrations/0003_projections.sql).  A notifier is one background thread per
 * process with a PostgreSQL connection of its own (not from the pool) that
 * LISTENs on that channel and turns each burst of notifications into a new
 * "generation": a counter that only grows.
 * Followers remember the generation they last acted on and wait for a newer
 * one instead of polling the database.
 *
 * A notification says only "something was appended to these categories";
 * the follower still reads the feed to find out what is visible.  A
 * follower of some categories waits with fd_notifier_wait_for and is not
 * woken by appends to others (it may be woken for nothing, never missed).  Notifications can be missed
 * (while the connection is down, or between a follower's read and its next
 * wait), so followers keep a slow poll as a fallback.  The generation also
 * advances whenever the notifier (re)connects, because events may have
 * committed while nobody was listening.
 *
 * Threading: all functions are thread-safe; any number of threads may wait.
 */
#ifndef FACTD_NOTIFY_H
#define FACTD_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>
#include "factd/error.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fd_notifier;

/*
 * Start the LISTEN thread for `conninfo` (copied).  Does not wait for the
 * database: an unreachable one is retried with backoff in the background.
 * FD_ERR_NOMEM / FD_ERR_IO (no thread).  Caller owns *out; stop with
 * fd_notifier_stop.
 */
FD_MUST_USE enum fd_err fd_notifier_start(const char *conninfo, struct fd_notifier **out);

/*
 * Stop the thread, wake every waiter, close the connection and free the
 * notifier.  No thread may be waiting in or about to call fd_notifier_wait
 * after it returns.  NULL is a no-op.
 */
void fd_notifier_stop(struct fd_notifier *n);

/* The current generation (to start waiting from). */
uint64_t fd_notifier_generation(struct fd_notifier *n);

/*
 * Wait until the generation differs from `seen`, `timeout_ms` passes, or the
 * notifier is woken or stopped; returns the generation then (== seen on a
 * plain timeout).
 */
uint64_t fd_notifier_wait(struct fd_notifier *n, uint64_t seen, unsigned timeout_ms);

/*
 * fd_notifier_wait for a follower of `categories` (NULL-terminated; NULL
 * means every category): wait until appends to one of them, or a change
 * that may concern any (a notification without categories, a reconnect, a
 * wake), have advanced the generation past `seen`.  Returns the newest
 * generation that concerns the follower, or `seen` on a plain timeout;
 * start from fd_notifier_generation.
 */
uint64_t fd_notifier_wait_for(struct fd_notifier *n, uint64_t seen, const char *const *categories,
			      unsigned timeout_ms);

/*
 * True when a factd_events payload may concern a follower of `categories`:
 * an empty payload concerns every follower, a list ("order,product") those
 * of a category in it.  For followers that LISTEN on their own connection.
 */
bool fd_notify_payload_matches(const char *payload, const char *const *categories);

/* Advance the generation and wake every waiter, as if events had arrived (used on shutdown). */
void fd_notifier_wake(struct fd_notifier *n);

/*
 * Events were appended by this process to a stream of `category` (NULL: of
 * any): wake local waiters now, and have the notifier thread send NOTIFY
 * factd_events with the categories announced since its last one (outside
 * any append transaction, at most every few milliseconds) so followers in
 * other processes wake too.
 */
void fd_notifier_announce(struct fd_notifier *n, const char *category);

/* True while the LISTEN connection is up; false before it first connects and while it reconnects. */
bool fd_notifier_listening(struct fd_notifier *n);

#ifdef __cplusplus
}
#endif

#endif
