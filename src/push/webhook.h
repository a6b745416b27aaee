/*
 * webhook.h - webhooks: signed HTTP pushes of feed events with retries.
 *
 * A webhook is a row in `webhooks` (migrations/0010_consumer_groups_webhooks.sql)
 * with a watermark in the feed.  Every factd process runs one dispatcher
 * thread; a webhook is delivered by the process whose dispatcher holds its
 * PostgreSQL advisory lock (on a session connection of its own, like the
 * projector's), so exactly one process delivers it at a time, and when that
 * process dies its session ends, the lock goes, and another takes over.
 *
 * Delivery: the events past the watermark that match the filter, in feed
 * order, one at a time, each POSTed (libcurl) as the feed shows it, with
 * Factd-Event-Id and Factd-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256
 * of "<t>.<body>" keyed with the secret>.  A 2xx moves the watermark past
 * the event; anything else (or a timeout) is retried after an exponential
 * backoff with jitter, and the events after it wait, so order holds per
 * stream (and overall).  After max_attempts failed attempts at one event the
 * webhook is disabled, its watermark kept, until resumed.  Delivery is at
 * least once: a crash after the receiver answered and before the watermark
 * moved sends that event again.
 *
 * Targets: http and https only, TLS verified, no redirects, no proxies.
 * Private, loopback, link-local and other non-public addresses are refused
 * unless allowed (FACTD_WEBHOOK_ALLOW_PRIVATE=1), both when a webhook is
 * defined and for the address each connection actually opens (a name that
 * resolves elsewhere later gains nothing).
 *
 * The secret is stored for signing and never shown or logged.
 *
 * Threading: fd_webhooks_start/stop from one thread; the check and sign
 * functions are pure and thread-safe.
 */
#ifndef FACTD_WEBHOOK_H
#define FACTD_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "factd/error.h"

struct fd_notifier;

/* True for an address no webhook may reach without FACTD_WEBHOOK_ALLOW_PRIVATE. */
bool fd_webhook_addr_private(const struct sockaddr *sa);

/*
 * Check a webhook URL: http or https, a host, no user name or password, and
 * (unless allow_private) a host that is no private address and does not
 * resolve to one.  FD_OK, or FD_ERR_INVAL with the reason in why.
 */
FD_MUST_USE enum fd_err fd_webhook_url_check(const char *url, bool allow_private, char *why, size_t whylen);

/* The Factd-Signature value for body at unix time t: "t=<t>,v1=<64 hex>".  out: at least 96 bytes. */
FD_MUST_USE enum fd_err fd_webhook_sign(const char *secret, long long t, const char *body, size_t len, char *out,
					size_t outlen);

struct fd_webhooks_config {
	const char *conninfo;             /* copied */
	bool allow_private;
	unsigned poll_ms;                 /* how often the dispatcher looks for due work (default 200) */
	unsigned backoff_ms;              /* the first retry's delay; doubles per attempt, capped at 5 minutes */
	struct fd_notifier *notifier;     /* wakes the dispatcher when events commit; may be NULL */
	struct fd_pool *pool;             /* fetches the subject keys that open personal values (store/personal.h) */
};
struct fd_webhooks;

/* Start the dispatcher thread.  Caller owns *out; stop with fd_webhooks_stop. */
FD_MUST_USE enum fd_err fd_webhooks_start(const struct fd_webhooks_config *cfg, struct fd_webhooks **out);
/* Stop the thread (a delivery in progress ends within its timeout), release the locks, free.  NULL is a no-op. */
void fd_webhooks_stop(struct fd_webhooks *w);

/* ---- the rows, for the HTTP API (thread-safe; each borrows a pool connection) ---- */

#include <jansson.h>
#include "factd/pool.h"

struct fd_webhook_spec {
	const char *name;
	const char *url;
	const char *secret;
	const char *const *categories;   /* NULL: every category */
	size_t ncategories;
	const char *const *types;        /* NULL: every type */
	size_t ntypes;
	unsigned max_attempts;
	unsigned timeout_ms;
};
/*
 * Create (from the newest event on: it delivers what is appended after) or
 * update a webhook; *created tells which.  An update keeps the position and
 * the status.
 */
FD_MUST_USE enum fd_err fd_webhook_put(struct fd_pool *pool, const struct fd_webhook_spec *spec, bool *created);
/*
 * Every webhook (name NULL) or one as a JSON array: definition without the
 * secret, status, position, lag, the last delivery attempt, counts.
 * FD_ERR_NOTFOUND for a name that is none.
 */
FD_MUST_USE enum fd_err fd_webhook_list(struct fd_pool *pool, const char *name, json_t **out);
FD_MUST_USE enum fd_err fd_webhook_delete(struct fd_pool *pool, const char *name);
/* Make a webhook active again with a fresh count of attempts, due now.  FD_ERR_NOTFOUND. */
FD_MUST_USE enum fd_err fd_webhook_resume(struct fd_pool *pool, const char *name);

#endif
