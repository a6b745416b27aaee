/*
 * input.h - pure parsers for the untrusted parts of a request that are not
 * JSON command payloads: query parameters, the If-Match and Idempotency-Key
 * headers, the body of an append and the data-lifecycle bodies, and the
 * loader and error helpers every JSON body parser shares (input_integ.h too).
 *
 * The handlers call these and turn a false / FD_ERR_INVAL into their 400
 * (or 413) problem; keeping them free of libmicrohttpd lets the fuzz
 * harnesses (fuzz/) drive them with arbitrary bytes.  Pure apart from
 * fd_append_parse making event ids; thread-safe.
 */
#ifndef FACTD_INPUT_H
#define FACTD_INPUT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "factd/error.h"
#include "factd/events.h"

/*
 * A decimal integer (a leading '-' allowed, nothing else around it) in
 * [min, max].  NULL is invalid.
 */
bool fd_input_int(const char *v, long long min, long long max, long long *out);
/* ?limit= of the read-model lists: decimal digits only, 1..max. */
bool fd_input_limit(const char *v, unsigned max, unsigned *out);
/* ?version= of an aggregate read: decimal digits only, >= 1, fitting int64. */
bool fd_input_version(const char *v, int64_t *out);
/* If-Match: "N" or W/"N" with N decimal and fitting int64. */
bool fd_input_if_match(const char *s, int64_t *out);
/* Idempotency-Key: 1-255 visible ASCII characters. */
bool fd_input_idempotency_key_valid(const char *k);

#define FD_INPUT_MAX_TYPES 64
/*
 * ?types=: "A,B,C" split into at most FD_INPUT_MAX_TYPES non-empty,
 * well-formed UTF-8 names of at most 800 bytes, no empty item.  *copy is a
 * malloc'd copy split in place that types[] points into; the caller frees it
 * whatever the result (it may be NULL).
 */
bool fd_input_types(const char *s, char **copy, const char *types[FD_INPUT_MAX_TYPES], size_t *n);

/* Why an input was refused: the 4xx (or 500) problem a handler answers. */
struct fd_input_error {
	unsigned status;     /* 400, 413, or 500 for text jansson accepted that jsonspan cannot walk */
	const char *slug;    /* problem type slug, static */
	const char *title;   /* static */
	bool has_field;      /* add a "field" member with `field` (a JSON pointer) */
	char field[64];
	char detail[256];
};

/* Fill e: `status`, problem type `slug` and `title` (static), `field` a JSON pointer or NULL, and `detail`. */
void fd_input_refuse(struct fd_input_error *e, unsigned status, const char *slug, const char *title, const char *field,
		     const char *detail);
/* Fill e with 400 invalid-field at `field` (a JSON pointer). */
void fd_input_bad_field(struct fd_input_error *e, const char *field, const char *detail);

/*
 * A request body that must be a JSON object with only the `nallowed` members
 * named in `allowed`: parsed with json_loadb(JSON_REJECT_DUPLICATES | flags)
 * (NULL body is empty).  The object (caller decrefs), or NULL with e filled:
 * 400 invalid-json for a NUL byte or malformed JSON, 400 invalid-field for
 * a body that is not an object ("") or has an unknown member ("/").  e is
 * cleared first.
 */
json_t *fd_input_object(const char *body, size_t len, size_t flags, const char *const *allowed, size_t nallowed,
			struct fd_input_error *e);

/* An append request's body, parsed and validated.  Release with fd_append_body_release. */
struct fd_append_body {
	json_t *root;                  /* the parsed document, owned */
	struct fd_expected expected;
	const char *expected_name;     /* "any"/"no_stream"/"exists" as sent, NULL for a number; borrowed from root */
	size_t n;                      /* events, >= 1 */
	struct fd_event_in *events;    /* n, owned; type borrowed from root, data_json owned; metadata_json NULL */
	json_t **metadata;             /* n, each the event's "metadata" object or NULL; borrowed from root */
};

/*
 * Parse the body of POST /streams/{stream}/events: {"expected_version",
 * "events": [{"type", "data", "metadata"?, "event_id"?}, ...]}.  Unknown
 * fields are refused; each event's data_json is the client's own bytes of
 * its "data" (numbers keep their digits).  Events without an event_id get a
 * new version-7 one.  FD_OK: *out filled.  FD_ERR_INVAL: *err says why
 * (400, or 413 past max_events).  FD_ERR_NOMEM / FD_ERR_IO (making an id).
 * On any error *out holds nothing to release, though releasing is harmless.
 */
FD_MUST_USE enum fd_err fd_append_parse(const char *body, size_t len, unsigned max_events,
					struct fd_append_body *out, struct fd_input_error *err);
void fd_append_body_release(struct fd_append_body *b);

/* POST /streams/{stream}/truncate: {"before_version": N >= 1}.  FD_ERR_INVAL with e filled. */
FD_MUST_USE enum fd_err fd_truncate_parse(const char *body, size_t len, int64_t *before, struct fd_input_error *e);

/*
 * PUT /retention/{category}: {"max_age_days"?: 1..FD_RETENTION_MAX_AGE_DAYS,
 * "max_count_per_stream"?: >= 1}, at least one of them; absent ones are 0.
 * FD_ERR_INVAL with e filled.
 */
#define FD_RETENTION_MAX_AGE_DAYS 36500
FD_MUST_USE enum fd_err fd_retention_parse(const char *body, size_t len, int *max_age_days, int64_t *max_count,
					   struct fd_input_error *e);

#endif
