/*
 * events.h - the generic event store: append with an expected version, read a
 * stream, and read the global feed by a gap-safe cursor.
 *
 * All functions borrow a pool connection for the duration of the call and are
 * thread-safe.  Reads hand over events as JSON text rendered straight from
 * their columns (data and metadata spliced as stored), so the hot read path
 * never parses and re-serialises events.  Except the feed follower at the
 * end (src/store/follower.c): the one reader of batches past a cursor for
 * the projector and the saga intake, which runs on a connection its caller
 * holds and hands over parsed events.
 * See docs/design.md for why the feed cursor is (transaction id, sequence).
 */
#ifndef FACTD_EVENTS_H
#define FACTD_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <libpq-fe.h>
#include "factd/error.h"
#include "factd/pool.h"
#include "factd/schema.h"
#include "factd/uuid.h"

#ifdef __cplusplus
extern "C" {
#endif

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

/*
 * What a read needs to have been replayed before a read replica may serve
 * it: a feed position (a write's "position", e.g. ?min_position=) and/or a
 * stream at a version (?version=N of an aggregate).  Zero: nothing.
 */
struct fd_read_need {
	bool has_position;
	struct fd_cursor position;
	const char *stream;       /* with min_version > 0; borrowed */
	int64_t min_version;
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
/*
 * System events: recorded by factd itself in the stream they concern, so the
 * followers of its category see them.  Their types start with '$', which
 * clients may not use (POST /streams/{stream}/events answers 400).  Every
 * system event type is a row of fd_system_event_types.
 */
#define FD_EVENT_STREAM_DELETED "$StreamDeleted" /* data: {stream, last_version, hard} */
#define FD_EVENT_SUBJECT_ERASED "$SubjectErased" /* data: {subject}; appended to each stream of an erased subject */
extern const char *const fd_system_event_types[];
extern const size_t fd_system_event_types_count;
/* Is `type` reserved for system events (it starts with '$')? */
bool fd_event_type_reserved(const char *type);

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

/* ---- feed followers -------------------------------------------------------- */

/*
 * One event as a follower of the feed (a projection, the saga intake) sees
 * it.  Everything is borrowed for the call.  data and metadata are never
 * NULL when a follower reads the event.
 */
struct fd_feed_event {
	const char *event_id;
	const char *stream;
	const char *category;
	int64_t version;
	const char *type;            /* with the follower's schemas: the current name of the type */
	json_t *data;                /* with the follower's schemas: upcast to the type's current version */
	json_t *metadata;            /* as stored */
	const char *recorded_at;     /* RFC 3339 UTC */
	struct fd_cursor position;   /* where the event is in the feed */
	int schema_version;          /* of data as handed over (upcast or stored; 1 when the metadata has none) */
};

/* What a follower reads: its name for the log, its filter and batch size. */
struct fd_follow {
	const char *name;                /* "order_summaries", "saga intake" */
	const char *const *categories;   /* stream categories; NULL-terminated, at least one */
	const char *const *types;        /* event types; NULL-terminated, or NULL: every type */
	unsigned limit;                  /* events per batch, at least 1 */
	/*
	 * The event schemas to upcast with (schema.h): every event of a
	 * category they know is handed over at the current version of its
	 * type, and a type filter also reads the earlier names of its types.
	 * NULL: events as stored.
	 */
	const struct fd_schemas *schemas;
};

/* One batch; release with fd_follow_batch_release. */
struct fd_follow_batch {
	struct fd_feed_event *events;    /* count events in feed order, owned by the batch */
	size_t count;
	/*
	 * The cursor after this batch: its last event, or, when caught up, the
	 * newest visible event of any category (so a follower of few categories
	 * does not read past the same other events every round).  Equal to the
	 * cursor read from when nothing moved.
	 */
	struct fd_cursor next;
	bool caught_up;                  /* fewer than limit events: the batch reached the visible end */
	bool held_back;                  /* caught up, and committed events lie beyond the visible end */
	PGresult *res;                   /* the rows the events borrow from */
};

/*
 * Read the next batch of events past `after` for a follower that keeps its
 * own cursor, on a connection it holds (normally inside the transaction that
 * also writes its checkpoint): the same gap-safe rule as fd_store_read_feed,
 * in three statements (the visible end, the batch, and when caught up the
 * head).  Every event comes with its position and with data and metadata
 * parsed (integers beyond 64 bits as reals).
 *
 * An event whose data or metadata does not parse, or that does not upcast,
 * is an error, logged with the event: FD_ERR_INVAL (FD_ERR_SCHEMA for one
 * newer than the schemas know, FD_ERR_NOMEM when memory ran out), and
 * nothing is returned, so the round fails and the cursor stays before that
 * event.  A
 * follower never moves past an event it could not read, and never acts on
 * a stand-in for it (docs/design.md, "Feed followers").
 *
 * The statements run by sql.h's policy: the visible end, the head and the
 * read of one category without a type filter (every projection's so far)
 * are prepared on the connection; a read of several categories or with a
 * type filter is not, as a generic plan of "= ANY (array)" cannot read the
 * category index in order.  Database errors are logged and returned as
 * fd_pg_classify classifies them.  *out is set either way (empty on error);
 * release it.
 */
FD_MUST_USE enum fd_err fd_feed_follow(PGconn *conn, struct fd_cursor after, const struct fd_follow *f,
				       struct fd_follow_batch *out);
void fd_follow_batch_release(struct fd_follow_batch *b);

#ifdef __cplusplus
}
#endif

#endif
