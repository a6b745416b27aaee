/*
 * aggregate.h - the aggregate framework: how an aggregate type is declared.
 *
 * An aggregate type is a static const table (struct fd_aggregate_type): its
 * name and stream category, how to make its initial state, ONE apply function
 * used both to replay stored events and to fold newly decided ones, how to
 * snapshot and restore its state (with a schema version), a public JSON
 * view, and its command table.  Everything here is pure: no I/O, no clocks,
 * no randomness; the command bus (bus.h) does loading and appending.
 * Thread-safe: states are owned by one caller at a time.
 */
#ifndef FACTD_AGGREGATE_H
#define FACTD_AGGREGATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "factd/error.h"
#include "factd/schema.h"
#include "factd/uuid.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How a decision turned out. */
enum fd_outcome {
	FD_DECIDED,   /* events to record (at least one) */
	FD_INVALID,   /* the command's payload is malformed -> 400, names a field */
	FD_REFUSED,   /* the command is illegal in this state -> 409 domain problem */
};

/* What a command handler returns.  Fill with the fd_decide_* helpers below. */
struct fd_decision {
	enum fd_outcome outcome;
	json_t *events;      /* FD_DECIDED: array of {"type": str, "data": object}; owned */
	char slug[48];       /* problem type slug, e.g. "order-not-draft" */
	char title[96];      /* short, stable, e.g. "Order is not a draft" */
	char field[64];      /* FD_INVALID: JSON pointer into the payload, e.g. "/quantity" */
	char detail[256];
};

/*
 * A command handler: look at the current state (`exists` false when the
 * aggregate has no events yet) and the payload (an object, borrowed), and
 * decide.  Never does I/O.  Returns FD_OK with *out filled, or FD_ERR_NOMEM.
 * *out need not be initialised: every return path overwrites it, and it
 * holds no events after an error.  The caller releases it with
 * fd_decision_release.
 */
typedef enum fd_err (*fd_decide_fn)(const void *state, bool exists, const json_t *payload,
				     struct fd_decision *out);

struct fd_command_type {
	const char *name;      /* "add_line" */
	fd_decide_fn decide;
};

struct fd_aggregate_type {
	const char *name;            /* "order" */
	const char *category;        /* stream name = category "-" id */
	const char *id_field;        /* name of the id in views and responses: "order_id" */
	bool id_is_uuid;             /* ids are UUIDs (server-made when absent) vs client SKUs */
	/*
	 * Of snapshot()'s format.  Snapshots are stored under
	 * fd_aggregate_snapshot_schema(), which adds the event types' versions,
	 * and one stored under another number is ignored.
	 */
	int schema_version;
	unsigned snapshot_every;     /* default snapshot interval in events; 0 = never */
	size_t state_size;
	void (*init)(void *state);
	void (*release)(void *state);
	/*
	 * Fold one event into the state.  Unknown event types are ignored (the
	 * generic stream API can add them); a known type with malformed data is
	 * FD_ERR_INVAL.  Events arrive upcast to the current version of their
	 * type (events below), so apply only knows the current shapes.
	 */
	enum fd_err (*apply)(void *state, const char *type, const json_t *data);
	/*
	 * Snapshots: both or neither.  A type without them is never
	 * snapshotted, whatever FACTD_SNAPSHOT_EVERY says, and always loads by
	 * replaying its events.
	 */
	json_t *(*snapshot)(const void *state);                 /* new reference, NULL on NOMEM */
	enum fd_err (*restore)(void *state, const json_t *snap); /* into an init'ed state */
	json_t *(*view)(const void *state);                     /* public JSON, new reference */
	/* Has the aggregate been created?  (Its stream may hold only foreign event types.) */
	bool (*exists)(const void *state);
	const struct fd_command_type *commands;
	size_t ncommands;
	/*
	 * The event types decide() records, one row each with its current
	 * schema version, and the upcasters from their older versions (one row
	 * each; schema.h).  The command bus writes each event with its type's
	 * version and every reader upcasts stored events to it.  Types not
	 * declared are written and read as version 1.
	 */
	struct fd_event_schema events;
};

/* The longest aggregate id (fd_aggregate_id_valid), in bytes. */
#define FD_AGGREGATE_ID_MAX 64

/*
 * The schema number snapshots of t are stored and looked up under:
 * t->schema_version plus the weight of its event types
 * (fd_event_schema_weight).  Raising an event type's version raises it, so
 * every snapshot folded from the older shapes is ignored and rebuilt.
 */
int fd_aggregate_snapshot_schema(const struct fd_aggregate_type *t);

/* The command named `name`, or NULL. */
const struct fd_command_type *fd_aggregate_command(const struct fd_aggregate_type *t, const char *name);
/*
 * Valid aggregate id for this type: a UUID (canonical 8-4-4-4-12 hex, either
 * case) when t->id_is_uuid, else 1-64 characters of [A-Za-z0-9_.:-].  NULL is
 * never valid.
 */
bool fd_aggregate_id_valid(const struct fd_aggregate_type *t, const char *id);

/*
 * Decision helpers.  Each overwrites *d entirely, so release a decision that
 * holds events first.  `events` is stolen.  Texts longer than their field
 * are truncated.
 */
void fd_decide_events(struct fd_decision *d, json_t *events);
/*
 * One event: {"type": type, "data": data}; data stolen (NULL data, e.g. a
 * failed json_pack, is FD_ERR_NOMEM).  On error *d holds no events.
 */
enum fd_err fd_decide_event(struct fd_decision *d, const char *type, json_t *data);
void fd_decide_invalid(struct fd_decision *d, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void fd_decide_refuse(struct fd_decision *d, const char *slug, const char *title, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void fd_decision_release(struct fd_decision *d);

/*
 * Payload field readers for decide functions: each returns false (and fills
 * an FD_INVALID decision naming the field) when the field is missing (unless
 * optional) or has the wrong type or range.  Strings are borrowed.
 *
 * Strings: lengths count code points; a string with an embedded NUL or
 * invalid UTF-8 is invalid.  A missing optional string sets *out to NULL.
 * Integers: JSON integers only (1.0, "1" and true are invalid), within
 * [min, max].  A missing optional integer leaves *out untouched, so preset
 * the default.  A payload that is not an object has no fields.
 */
bool fd_payload_string(const json_t *payload, const char *key, size_t min_len, size_t max_len, bool optional,
		       const char **out, struct fd_decision *d);
bool fd_payload_int(const json_t *payload, const char *key, int64_t min, int64_t max, bool optional,
		    int64_t *out, struct fd_decision *d);
/*
 * A UUID string field (either case), written to out in canonical lower case.
 * Not optional: a missing field is invalid.
 */
bool fd_payload_uuid(const json_t *payload, const char *key, char out[FD_UUID_STRLEN + 1], struct fd_decision *d);
/*
 * Fails (FD_INVALID naming the field) if payload has a key not in allowed,
 * or is not an object (the field is then "", the whole payload).
 */
bool fd_payload_only(const json_t *payload, const char *const *allowed, size_t n, struct fd_decision *d);

#ifdef __cplusplus
}
#endif

#endif
