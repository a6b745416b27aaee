/*
 * input_integ.h - pure parsers for the bodies and names of the integration
 * endpoints: consumer groups (PUT /subscriptions/{name}, ack, nack, replay)
 * and webhooks (PUT /webhooks/{name}).  Like input.h they see untrusted
 * bytes, never touch libmicrohttpd or the database, and are fuzzed
 * (fuzz/fuzz_integ.c).  Thread-safe.
 */
#ifndef FACTD_INPUT_INTEG_H
#define FACTD_INPUT_INTEG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "factd/events.h"
#include "factd/uuid.h"
#include "http/input.h"

#define FD_INTEG_NAME_MAX 100        /* group and webhook names */
#define FD_INTEG_CONSUMER_MAX 200    /* ?consumer= */
#define FD_INTEG_MAX_FILTER 64       /* categories or types in a filter */
#define FD_INTEG_MAX_IDS 1000        /* delivery ids in one ack, nack or replay */
#define FD_INTEG_URL_MAX 2048
#define FD_INTEG_SECRET_MIN 16
#define FD_INTEG_SECRET_MAX 256

/* A group or webhook name: 1..100 characters of [A-Za-z0-9_.-], not starting with '.'. */
bool fd_integ_name_valid(const char *s);
/* A consumer id: 1..200 characters of [A-Za-z0-9_.:@-]. */
bool fd_integ_consumer_valid(const char *s);

/* A filter of categories and types; each array NULL-terminated, NULL when absent.  Borrowed from a root. */
struct fd_integ_filter {
	const char **categories;     /* owned array, strings borrowed */
	size_t ncategories;
	const char **types;          /* owned array, strings borrowed */
	size_t ntypes;
};

enum fd_group_start { FD_GROUP_START_BEGINNING, FD_GROUP_START_END, FD_GROUP_START_POSITION };

/* PUT /subscriptions/{name}. */
struct fd_group_def {
	json_t *root;                /* owned */
	struct fd_integ_filter filter;
	enum fd_group_start start;
	struct fd_cursor start_at;   /* FD_GROUP_START_POSITION */
	const char *start_text;      /* as sent (borrowed from root) */
	unsigned ack_timeout_ms;     /* default 30000, 100..86400000 */
	unsigned max_deliveries;     /* default 5, 1..1000 */
	bool ordering_stream;        /* "stream" (default) or "none" */
};
FD_MUST_USE enum fd_err fd_group_def_parse(const char *body, size_t len, struct fd_group_def *out,
					   struct fd_input_error *e);
void fd_group_def_release(struct fd_group_def *d);

enum fd_settle_action { FD_SETTLE_ACK, FD_SETTLE_RETRY, FD_SETTLE_PARK, FD_SETTLE_SKIP };

/* POST .../ack {delivery_ids}, .../nack {delivery_ids, action, delay_ms?}, .../parked/replay {delivery_ids?}. */
struct fd_settle_body {
	struct fd_uuid *ids;         /* owned, n of them (0 for a replay of everything) */
	size_t n;
	enum fd_settle_action action;
	unsigned delay_ms;           /* nack retry: 0..86400000 */
};
/* kind: "ack", "nack" or "replay" (which fields are allowed and required). */
FD_MUST_USE enum fd_err fd_settle_parse(const char *kind, const char *body, size_t len, struct fd_settle_body *out,
					struct fd_input_error *e);
void fd_settle_body_release(struct fd_settle_body *b);

/* PUT /webhooks/{name}.  The URL is only checked for its form here (webhook.h checks where it points). */
struct fd_webhook_def {
	json_t *root;                /* owned */
	const char *url;             /* borrowed from root */
	const char *secret;          /* borrowed from root */
	struct fd_integ_filter filter;
	unsigned max_attempts;       /* default 10, 1..100 */
	unsigned timeout_ms;         /* default 5000, 100..60000 */
};
FD_MUST_USE enum fd_err fd_webhook_def_parse(const char *body, size_t len, struct fd_webhook_def *out,
					     struct fd_input_error *e);
void fd_webhook_def_release(struct fd_webhook_def *d);

#endif
