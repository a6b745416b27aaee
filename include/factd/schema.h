/*
 * schema.h - versioned event types and the upcasters between their versions.
 *
 * The data of an event type has a schema version: 1 until its shape first
 * changes, then one more for every change.  An aggregate type declares its
 * event types in one table (struct fd_event_schema, on the aggregate type):
 * one row per event type with its current version, and one row per
 * upcaster, a pure function that turns the data of version N into version
 * N+1 and may give the type a new name from N+1 on (ProductStocked 1 ->
 * StockReceived 2).  Changing an event's shape is adding one upcaster row
 * and its function and raising the type's version.
 *
 * Stored events are never rewritten.  Every reader that interprets events
 * (aggregate loads, projections, the saga intake, the check of appends to
 * an aggregate's stream) upcasts them in memory to the current version of
 * their type, one step at a time.  The version an event was written with
 * is its metadata's "schema_version"; without one it is version 1
 * (docs/design.md, "Event schema versions", says why metadata).
 *
 * An event whose version is newer than the running code knows is
 * FD_ERR_SCHEMA: it is never guessed at.  Event types a table does not
 * declare (events other writers added to the stream) are read as stored.
 *
 * Pure; thread-safe.
 */
#ifndef FACTD_SCHEMA_H
#define FACTD_SCHEMA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "factd/error.h"

/* The largest schema version an event may carry. */
#define FD_SCHEMA_VERSION_MAX 32767
/* The metadata member that holds it. */
#define FD_SCHEMA_VERSION_KEY "schema_version"

/*
 * Which values of an event type's data are personal data, and whose
 * (docs/design.md, "Personal data and erasure").  The command bus stores
 * each value named by `paths` that is present in the data sealed under the
 * key of the subject whose id is the string at `subject`, and records the
 * declaration in the event's metadata ("personal"), which is what readers
 * go by.  Erasing the subject makes those values null for every reader.
 */
struct fd_personal_decl {
	const char *subject;        /* JSON pointer to the subject's id in data: "/customer_id" */
	const char *const *paths;   /* NULL-terminated JSON pointers: "/email", "/shipping_address" */
};

/*
 * A data subject's id: 1 to 200 characters of A-Z a-z 0-9 and _ . : @ + -
 * (it appears in the path of /subjects/{subject}; opaque ids, not names).
 */
#define FD_SUBJECT_ID_MAX 200
bool fd_subject_id_valid(const char *s);

/* One event type as the code writes it now. */
struct fd_event_type {
	const char *type;     /* "OrderLineAdded": the current name */
	int version;          /* the current version of its data; 0 is read as 1 */
	const struct fd_personal_decl *personal; /* its personal data, or NULL: none */
};


/*
 * One step: edit `data` (an object, the caller's, the step's to change in
 * place) from version `from` of its type into version from + 1.  Pure: no
 * I/O, no clock, nothing but `data` and `services` read.  `services` is the
 * app's services object (struct fd_app_services), for settings that say
 * what old events meant (the shop's default currency); NULL where there is
 * none (unit tests, fuzzers), and a step then uses its built-in default.
 * FD_OK; FD_ERR_INVAL when data is not valid data of version `from` (the
 * read fails loudly); FD_ERR_NOMEM.
 */
typedef enum fd_err (*fd_upcast_fn)(json_t *data, const void *services);

struct fd_upcaster {
	const char *type;        /* the type's name at version `from`, as stored */
	int from;                /* >= 1: turns version from into from + 1 */
	const char *renamed_to;  /* the type's name from version from + 1 on; NULL: the name stays */
	fd_upcast_fn up;
};

/* The event types of one aggregate type (struct fd_aggregate_type.events). */
struct fd_event_schema {
	const struct fd_event_type *types;
	size_t ntypes;
	const struct fd_upcaster *upcasters;
	size_t nupcasters;
};

/* The personal-data declaration of `type` (by its current name), or NULL. */
const struct fd_personal_decl *fd_event_schema_personal(const struct fd_event_schema *s, const char *type);

/* The current version of `type` (by its current name); 0 when the schema does not declare it. */
int fd_event_schema_version(const struct fd_event_schema *s, const char *type);

/*
 * Bring one event to the current version of its type, in memory.  In:
 * *type and *version as stored; out: as current (*type then points into the
 * schema's rows).  data is edited in place.  Nothing changes for a type at
 * its current version or one the schema neither declares nor upcasts.
 * FD_ERR_SCHEMA: *version is newer than the type's current version (left as
 * stored).  FD_ERR_INVAL: a step refused the data, or no step leads on from
 * a version below the current one (a gap in the table; fd_event_schema_check
 * finds those at start).  FD_ERR_NOMEM.  s may be NULL (nothing to do).
 */
FD_MUST_USE enum fd_err fd_event_schema_upcast(const struct fd_event_schema *s, const void *services,
					       const char **type, int *version, json_t *data);

/*
 * The names stored events of `type` (a current name) may carry: type itself
 * first, then every earlier name that upcasters rename into it.  Writes at
 * most n into out; returns how many there are.
 */
size_t fd_event_schema_names(const struct fd_event_schema *s, const char *type, const char **out, size_t n);

/*
 * Is the table complete?  Every declared type of version V > 1 has one step
 * from each version 1..V-1 leading to it, every upcaster has a function, a
 * name and from >= 1, leads to a declared type, and no type is declared
 * twice.  FD_ERR_INVAL with what is wrong in errbuf.
 */
FD_MUST_USE enum fd_err fd_event_schema_check(const struct fd_event_schema *s, const char *owner, char *errbuf,
					      size_t errlen);

/*
 * The sum over declared types of (version - 1): grows whenever any event
 * type's version is raised.  Aggregates add it to the version of their
 * snapshots (fd_aggregate_snapshot_schema), so a snapshot folded from older
 * event shapes is never restored by code that reads newer ones.
 */
int fd_event_schema_weight(const struct fd_event_schema *s);

/*
 * The schema version in an event's metadata (object or NULL): 1 when absent
 * (or metadata is NULL or not an object), else the member, which must be an
 * integer in 1..FD_SCHEMA_VERSION_MAX (FD_ERR_INVAL otherwise).
 */
FD_MUST_USE enum fd_err fd_event_schema_version_of(const json_t *metadata, int *out);

/* ---- readers of several categories ------------------------------------- */

/* The event schema of one stream category (an aggregate type's). */
struct fd_schema_category {
	const char *category;
	const struct fd_event_schema *schema;
};

/*
 * What a reader of the feed upcasts with: the schemas of the app's
 * categories and the app's services for the upcasters.  Built from the app
 * definition (fd_ctx_init); borrowed by the projector, the saga intake and
 * the HTTP reads.
 */
struct fd_keyring;
struct fd_schemas {
	const struct fd_schema_category *items;
	size_t n;
	const void *services;
	/*
	 * The master key the feed's followers open personal data with (set by
	 * the runtime from FACTD_MASTER_KEY_FILE; NULL: only erased values can
	 * be read).  Borrowed.
	 */
	struct fd_keyring *keyring;
};

/* The schema of `category`, or NULL (set may be NULL). */
const struct fd_event_schema *fd_schemas_find(const struct fd_schemas *set, const char *category);

/*
 * Upcast an event of stream category `category` whose metadata is
 * `metadata` (may be NULL): fd_event_schema_version_of, then
 * fd_event_schema_upcast with the category's schema.  *version receives the
 * version after it (the stored one when nothing changed).
 */
FD_MUST_USE enum fd_err fd_schemas_upcast(const struct fd_schemas *set, const char *category, const json_t *metadata,
					  const char **type, int *version, json_t *data);

#endif
