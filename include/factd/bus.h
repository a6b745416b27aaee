/*
 * bus.h - the command bus: find the handler by command name, load the
 * aggregate (newest usable snapshot + later events, folded with the type's
 * apply), decide, append with the loaded version as the expected version,
 * and on a version conflict reload and decide again (bounded).
 *
 * Idempotent commands: with an idempotency key, the events a command records
 * get ids derived from the key (fd_uuid_from_name), and the key and a
 * fingerprint of the request go into their metadata.  A repeat finds those
 * events and answers with the first result without deciding again; a
 * concurrent twin that got past that check collides on the event ids, which
 * the store reports as an idempotent repeat.  The same key with another
 * request is FD_ERR_IDEMPOTENCY.
 *
 * Events are recorded with their type's schema version in their metadata
 * (when above 1) and loaded upcast to the current version of their type
 * (schema.h); a stored event newer than the code is FD_ERR_SCHEMA, for
 * loads and commands alike.
 *
 * Snapshots are written by a background thread after the append commits,
 * never inside it; a failed snapshot write is logged and loses nothing.
 *
 * Recently used states are kept in a bounded cache (aggcache.h): a command
 * on a cached aggregate decides without reading the database and appends
 * with the cached version as the expected version.  When that version is
 * stale (another process wrote), or the cached state refuses the command,
 * the bus reloads from the database and decides again, so the cache never
 * changes an outcome; it only saves the read.
 *
 * Threading: fd_bus_send and fd_bus_load are thread-safe.
 */
#ifndef FACTD_BUS_H
#define FACTD_BUS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "factd/aggregate.h"
#include "factd/error.h"
#include "factd/events.h"
#include "factd/pool.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fd_bus;
struct fd_metrics;

struct fd_bus_config {
	unsigned max_retries;      /* reload-and-decide attempts after a conflict (FACTD_COMMAND_RETRIES) */
	int snapshot_every;        /* -1: each type's default; 0: never; N: every N events */
	unsigned snapshot_queue;   /* pending snapshot writes kept before dropping (bounded memory) */
	struct fd_metrics *metrics; /* commands and version conflicts are counted here; borrowed, may be NULL */
	size_t cache_entries;      /* aggregate states kept in memory (FACTD_AGGREGATE_CACHE); 0 = none */
	const void *services;      /* the app's services, handed to upcasters (schema.h); borrowed, may be NULL */
};

/* Create a bus over `pool` (borrowed).  Starts the snapshot writer.  Caller owns *out. */
FD_MUST_USE enum fd_err fd_bus_new(struct fd_pool *pool, const struct fd_bus_config *cfg, struct fd_bus **out);
/* Write queued snapshots, stop the writer and free.  NULL is a no-op. */
void fd_bus_free(struct fd_bus *bus);
/* Block until every snapshot queued so far is written (tests, shutdown). */
void fd_bus_flush(struct fd_bus *bus);

/* Who sent a command and why; every string is optional (NULL) and borrowed. */
struct fd_cmd_meta {
	const char *correlation_id;
	const char *causation_id;
	const char *request_id;
	const char *caller;
	const char *idempotency_key;  /* makes the command idempotent */
	const char *request_hash;     /* fingerprint of the request the key was first used with */
	/*
	 * Repeats of this key are rare (a saga step's commands: only a step run
	 * again after a crash repeats them): look for an earlier command with
	 * the key only when this one's outcome may be its repeat (its events'
	 * ids are stored already, or the domain refused it), not with a
	 * statement of its own before every command.  The answers are the same.
	 */
	bool repeat_rare;
	bool has_if_match;            /* the caller's If-Match: version must still equal if_match */
	int64_t if_match;
};

struct fd_cmd_result {
	int64_t version;             /* the aggregate's version after the command */
	int64_t first_version;       /* version of the first event recorded */
	struct fd_cursor position;   /* feed cursor of the last event recorded */
	bool replayed;               /* an idempotent repeat: nothing new recorded */
	unsigned attempts;           /* decide/append rounds it took */
	struct fd_decision decision; /* on FD_ERR_REJECTED / FD_ERR_INVAL: why (slug, title, field, detail) */
};

/*
 * Run `command` of aggregate type `t` on aggregate `id` with `payload` (an
 * object, borrowed).  FD_OK: events recorded (or replayed).  FD_ERR_INVAL:
 * unknown command, bad id, or the payload was invalid (decision says which
 * field).  FD_ERR_REJECTED: the domain refused (decision has slug/title;
 * slug "<name>-not-found" means the aggregate does not exist).
 * FD_ERR_PRECONDITION: If-Match no longer holds.  FD_ERR_CONFLICT: retries
 * exhausted.  FD_ERR_IDEMPOTENCY: key reused with another request.  Release
 * out with fd_cmd_result_release.
 */
FD_MUST_USE enum fd_err fd_bus_send(struct fd_bus *bus, const struct fd_aggregate_type *t, const char *id,
				    const char *command, const json_t *payload, const struct fd_cmd_meta *meta,
				    struct fd_cmd_result *out);
void fd_cmd_result_release(struct fd_cmd_result *r);

/* What version of an aggregate to load. */
struct fd_load_target {
	int64_t version;   /* > 0: exactly this version (FD_ERR_NOTFOUND when beyond the stream) */
	bool at_time;      /* else: the state as of unix_us */
	int64_t unix_us;
	bool no_snapshot;  /* replay every event (tests, benchmarks) */
	struct fd_pool *pool; /* read from this pool (a read replica, fd_req_read_pool); NULL: the bus's */
};

/*
 * Load aggregate `id` of type `t` into `state` (caller-allocated,
 * t->state_size bytes, NOT yet initialised: load initialises it; release with
 * t->release even on error).  target NULL = latest.  *version receives the
 * version loaded (0 = does not exist / did not exist then).  FD_ERR_SCHEMA
 * when an event was written with a newer schema version of its type than
 * t declares; FD_ERR_INTERNAL when a stored event does not upcast or apply.
 */
FD_MUST_USE enum fd_err fd_bus_load(struct fd_bus *bus, const struct fd_aggregate_type *t, const char *id,
				    const struct fd_load_target *target, void *state, int64_t *version);

/*
 * The snapshot schema loads of t use (fd_aggregate_snapshot_schema), or -1
 * when snapshots of t are off in this bus.
 */
int fd_bus_snapshot_schema(const struct fd_bus *bus, const struct fd_aggregate_type *t);
/*
 * Load aggregate `id` at its latest version and store its snapshot there,
 * now (not through the writer's queue).  *version: the version snapshotted.
 * FD_ERR_REJECTED when snapshots of t are off; FD_ERR_NOTFOUND when it
 * does not exist; as fd_bus_load otherwise (FD_ERR_DELETED, FD_ERR_GONE).
 */
FD_MUST_USE enum fd_err fd_bus_snapshot_now(struct fd_bus *bus, const struct fd_aggregate_type *t, const char *id,
					    int64_t *version);

/* The stream name of an aggregate: "<category>-<id>" into buf. */
/*
 * fd_bus_load, and *erased: the JSON pointers (into the events' data) of
 * the personal values folded as null because their subject was erased, an
 * array the caller owns, or NULL when there were none.
 */
FD_MUST_USE enum fd_err fd_bus_load_ex(struct fd_bus *bus, const struct fd_aggregate_type *t, const char *id,
				       const struct fd_load_target *target, void *state, int64_t *version,
				       json_t **erased);

void fd_bus_stream_name(const struct fd_aggregate_type *t, const char *id, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
