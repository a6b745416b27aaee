/*
 * groups.h - consumer groups in PostgreSQL: define, list, delete, pull with
 * leases, settle (ack, retry, park, skip), list and replay parked events.
 *
 * Every group's state is rows (migrations/0010_consumer_groups_webhooks.sql):
 * a watermark in the feed, and one row per event copied past it and not yet
 * acknowledged or skipped.  A pull is one call of fd_group_pull, which locks
 * the group row, so pulls of one group from any number of processes take
 * turns and never hand one event out twice at once; acks and nacks lock only
 * the rows they settle.
 *
 * Threading: every function borrows a pool connection for the call; all are
 * thread-safe.
 */
#ifndef FACTD_STORE_GROUPS_H
#define FACTD_STORE_GROUPS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "factd/error.h"
#include "factd/events.h"
#include "factd/pool.h"
#include "factd/uuid.h"

struct fd_group_spec {
	const char *name;
	const char *const *categories;   /* NULL: every category */
	size_t ncategories;
	const char *const *types;        /* NULL: every type */
	size_t ntypes;
	const char *start;               /* "beginning", "end" or a position "<tx>-<seq>" (normalised) */
	unsigned ack_timeout_ms;
	unsigned max_deliveries;
	bool ordering_stream;
};

/*
 * Create the group or update it.  *created tells which.  FD_ERR_CONFLICT when
 * it exists with another start (which never changes).
 */
FD_MUST_USE enum fd_err fd_group_put(struct fd_pool *pool, const struct fd_group_spec *spec, bool *created);
/* FD_ERR_NOTFOUND when there is no such group; its deliveries go with it. */
FD_MUST_USE enum fd_err fd_group_delete(struct fd_pool *pool, const char *name);
/*
 * Every group (name NULL) or one, each with its definition, position, lag
 * (events and seconds), in-flight and parked counts and deliveries by
 * outcome, as a JSON array (caller owns *out).  FD_ERR_NOTFOUND for a name
 * that is no group.
 */
FD_MUST_USE enum fd_err fd_group_list(struct fd_pool *pool, const char *name, json_t **out);

/*
 * Lease up to max events of the group to `consumer`: *json receives a JSON
 * array of {delivery_id, delivery_count, event} in feed order (caller
 * frees), *count their number (0 when nothing is ready).  FD_ERR_NOTFOUND.
 */
FD_MUST_USE enum fd_err fd_group_pull(struct fd_pool *pool, const char *name, const char *consumer, unsigned max,
				      char **json, size_t *count);

enum fd_group_settle { FD_GROUP_ACK, FD_GROUP_RETRY, FD_GROUP_PARK, FD_GROUP_SKIP };
/*
 * Settle n deliveries: all or none.  FD_ERR_CONFLICT when one is no current
 * lease of the group (unknown, settled, or expired): *bad then lists them,
 * comma-separated (caller frees; may be empty when a lease ran out during
 * the call).  FD_ERR_NOTFOUND: no such group.
 */
FD_MUST_USE enum fd_err fd_group_settle(struct fd_pool *pool, const char *name, const struct fd_uuid *ids, size_t n,
					enum fd_group_settle action, unsigned delay_ms, char **bad);

/*
 * Parked events after `after` in feed order: *json a JSON array of
 * {delivery_id, delivery_count, parked_at, reason, event}, *next the
 * position of the last one (or `after`).  FD_ERR_NOTFOUND.
 */
FD_MUST_USE enum fd_err fd_group_parked(struct fd_pool *pool, const char *name, struct fd_cursor after,
					unsigned limit, char **json, size_t *count, struct fd_cursor *next);
/*
 * Make parked deliveries ready again (n == 0: all of the group's).
 * FD_ERR_CONFLICT with *bad as for settle when an id is not parked.
 */
FD_MUST_USE enum fd_err fd_group_replay(struct fd_pool *pool, const char *name, const struct fd_uuid *ids, size_t n,
					size_t *replayed, char **bad);

#endif
