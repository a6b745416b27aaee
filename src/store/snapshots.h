/*
 * snapshots.h - loading aggregates from the store: the newest usable
 * snapshot plus the events after it, snapshot writes, point-in-time version
 * lookup, and event lookup by id and the installation's secret (for
 * idempotent commands).
 *
 * Thread-safe; each call borrows one pool connection for one round trip.
 */
#ifndef FACTD_SNAPSHOTS_H
#define FACTD_SNAPSHOTS_H

#include <stdint.h>

#include "factd/error.h"
#include "factd/events.h"
#include "factd/pool.h"
#include "factd/uuid.h"

struct fd_stream_load {
	int64_t stream_version;   /* the stream's current version; 0 when it does not exist */
	int64_t snapshot_version; /* version the snapshot holds; 0 when none was used */
	char *snapshot_json;      /* the snapshot's state (JSON object text) or NULL; caller frees */
	/*
	 * JSON array of [version, "type", data, schema_version, personal] in
	 * version order, schema_version and personal (store/personal.h) as
	 * stored in the metadata (null when absent); caller frees
	 */
	char *events_json;
	size_t count;             /* events in events_json */
	int64_t life_start;       /* events at or below it belong to a deleted life (hidden); 0 when never deleted */
};

/*
 * Load `stream` up to max_version (0 = latest): the newest snapshot with
 * schema_version == schema and version <= max_version (none when schema < 0),
 * then every event after it up to max_version, in one round trip.  A stream
 * that does not exist is FD_OK with stream_version 0 and no events.
 */
FD_MUST_USE enum fd_err fd_store_load_stream(struct fd_pool *pool, const char *stream, int schema,
					     int64_t max_version, struct fd_stream_load *out);
void fd_stream_load_release(struct fd_stream_load *l);

/*
 * The stream's version as of a moment (microseconds since the Unix epoch,
 * UTC): the last version recorded at or before it; 0 when the stream did not
 * exist yet (or does not exist).
 */
FD_MUST_USE enum fd_err fd_store_version_at(struct fd_pool *pool, const char *stream, int64_t unix_us,
					    int64_t *version);

/*
 * Upsert a snapshot of `stream` at `version`.  Snapshots are a cache: a
 * failure here loses nothing, the caller only logs it.
 */
FD_MUST_USE enum fd_err fd_store_save_snapshot(struct fd_pool *pool, const char *stream, int64_t version,
					       int schema, const char *state_json);

struct fd_stored_event {
	char stream[FD_STREAM_MAX + 1];
	int64_t version;
	struct fd_cursor position;
	char *metadata_json;  /* caller frees */
};

/* The stored event with this id; FD_ERR_NOTFOUND when there is none. */
FD_MUST_USE enum fd_err fd_store_find_event(struct fd_pool *pool, const struct fd_uuid *id,
					    struct fd_stored_event *out);
/* The event at `version` of `stream`; FD_ERR_NOTFOUND when there is none. */
FD_MUST_USE enum fd_err fd_store_event_at(struct fd_pool *pool, const char *stream, int64_t version,
					  struct fd_stored_event *out);
void fd_stored_event_release(struct fd_stored_event *e);

/*
 * The installation's secret (table installation_secret, made once by a
 * migration): mixed into the ids of events that commands derive from an
 * Idempotency-Key, and the same for every process sharing the database.
 * Copied to out (NUL-terminated; len of FD_INSTALLATION_SECRET_MAX + 1 is
 * enough).  FD_ERR_UNAVAILABLE when the database cannot be reached or is not
 * migrated yet.
 */
enum { FD_INSTALLATION_SECRET_MAX = 128 };
FD_MUST_USE enum fd_err fd_store_installation_secret(struct fd_pool *pool, char *out, size_t len);

#endif
