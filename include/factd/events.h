/*
 * events.h - the generic event store: append with an expected version, read a
 * stream, and read the global feed by a gap-safe cursor.
 *
 * All functions borrow a pool connection for the duration of the call and are
 * thread-safe.  Reads hand over events as JSON text rendered straight from
 * their columns (data and metadata spliced as stored), so the hot read path
 * never parses and re-serialises events.
 * See docs/design.md for why the feed cursor is (transaction id, sequence).
 */
#ifndef FACTD_EVENTS_H
#define FACTD_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "factd/error.h"
#include "factd/pool.h"
#include "factd/uuid.h"

#define FD_STREAM_MAX 200
#define FD_CURSOR_STRLEN 48

enum fd_expected_kind {
	FD_EXPECT_EXACT,     /* the stream's version must equal .version (0 = must not exist) */
	FD_EXPECT_ANY,
	FD_EXPECT_NO_STREAM,
	FD_EXPECT_EXISTS,
};

struct fd_expected {
	enum fd_expected_kind kind;
	int64_t version;     /* only for FD_EXPECT_EXACT, >= 0 */
};

/*
 * A position in the global feed: the writing transaction's id (xid8) and the
 * event's sequence number.  {0, 0} is "before everything".  Ordered by (tx, seq).
 */
struct fd_cursor {
	uint64_t tx;
	int64_t seq;
};

/* Wire form "<tx>-<seq>" ("0" or "0-0" for the beginning).  False on anything else. */
bool fd_cursor_parse(const char *s, struct fd_cursor *out);
/* Writes the wire form into buf (at least FD_CURSOR_STRLEN bytes). */
void fd_cursor_format(const struct fd_cursor *c, char *buf, size_t len);
int fd_cursor_cmp(const struct fd_cursor *a, const struct fd_cursor *b);

/* Stream names: 1..200 chars of [A-Za-z0-9_.:-], except "." and "..". */
bool fd_stream_name_valid(const char *s);
/* The category: the part before the first '-', or the whole name.  Writes at most len-1 bytes. */
void fd_stream_category(const char *stream, char *out, size_t len);
/* Parse the JSON-level expected version: an integer >= 0 or "any"/"no_stream"/"exists". */
bool fd_expected_parse_str(const char *s, struct fd_expected *out);

/* One event to append.  Strings are borrowed for the duration of the call. */
struct fd_event_in {
	struct fd_uuid event_id;
	bool id_given;              /* the client chose the id (idempotency applies) */
	const char *type;
	const char *data_json;      /* a JSON object, serialised */
	const char *metadata_json;  /* a JSON object, serialised */
};

struct fd_append_result {
	int64_t first_version;
	int64_t last_version;
	int64_t current_version;    /* on FD_ERR_CONFLICT: the stream's version now (0 = none) */
	struct fd_cursor position;  /* cursor of the last event written */
	bool duplicate;             /* an idempotent repeat: nothing was written */
};

/*
 * Append n >= 1 events to `stream` in one transaction, checking `expected`.
 * FD_OK: written, or (duplicate=true) every event id was already stored at
 * the same versions of this stream, in which case the original versions and
 * position are returned.  FD_ERR_CONFLICT: expected version mismatch,
 * nothing written, current_version set.  FD_ERR_DUPLICATE: an event id is
 * already stored elsewhere (another stream or other versions).
 * FD_ERR_INVAL: bad stream name or n == 0.  FD_ERR_UNAVAILABLE / FD_ERR_DB.
 */
FD_MUST_USE enum fd_err fd_store_append(struct fd_pool *pool, const char *stream,
					struct fd_expected expected,
					const struct fd_event_in *events, size_t n,
					struct fd_append_result *out);

struct fd_stream_page {
	int64_t stream_version;  /* the stream's current version */
	size_t count;            /* events in events_json */
	char *events_json;       /* JSON array text; caller owns, free() */
};

/*
 * Read up to `limit` events of `stream` with version >= from_version, in
 * version order.  FD_ERR_NOTFOUND when the stream does not exist.
 */
FD_MUST_USE enum fd_err fd_store_read_stream(struct fd_pool *pool, const char *stream,
					     int64_t from_version, unsigned limit,
					     struct fd_stream_page *out);

struct fd_feed_filter {
	const char *category;        /* NULL = all */
	const char *const *types;    /* NULL or ntypes == 0 = all */
	size_t ntypes;
};

struct fd_feed_page {
	size_t count;
	char *events_json;          /* JSON array text; caller owns, free() */
	struct fd_cursor next;      /* resume from here; never behind `after` */
};

/*
 * Read up to `limit` events after `after` in global order, never returning an
 * event while an older transaction that may still add events before it is in
 * progress (gap-safe).  With filters, `next` may move past skipped events.
 */
FD_MUST_USE enum fd_err fd_store_read_feed(struct fd_pool *pool, struct fd_cursor after,
					   const struct fd_feed_filter *filter, unsigned limit,
					   struct fd_feed_page *out);

/*
 * Check that the feed's transaction-id horizon is sane: every stored event's
 * tx_id must be below the cluster's next transaction id.  After a logical
 * dump and restore into a new cluster it is not (ids restart lower), and new
 * events would sort before old cursors; FD_ERR_CONFLICT then, and the server
 * refuses to start (docs/design.md explains the fix).
 */
FD_MUST_USE enum fd_err fd_store_check_feed_horizon(struct fd_pool *pool);

/*
 * For feed followers that keep their own cursor (projections, the saga
 * intake), at the end of a round: one row of the newest visible event past
 * the cursor (tx_id and seq as text; NULL when there is none) and whether
 * committed events lie beyond the visible end, held back by an older
 * transaction still running.  $1 the visible end (pg_snapshot_xmin as
 * text), $2 and $3 the cursor.  Both are reads of events_feed_idx from one
 * end.
 */
#define FD_FEED_FOLLOWER_HEAD_SQL                                                                             \
	"SELECT h.tx_id::text, h.seq::text,"                                                                  \
	" coalesce((SELECT tx_id FROM events ORDER BY tx_id DESC LIMIT 1) >= $1::xid8, false)"               \
	" FROM (SELECT) one LEFT JOIN LATERAL (SELECT tx_id, seq FROM events WHERE tx_id < $1::xid8"          \
	" AND (tx_id, seq) > ($2::xid8, $3::bigint) ORDER BY events.tx_id DESC, events.seq DESC LIMIT 1) h"    \
	" ON true"

#endif
