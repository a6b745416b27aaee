/*
 * jsonspan.h - locate values inside JSON text without re-serialising them.
 *
 * The append path validates a request with jansson and then hands each
 * event's "data" to PostgreSQL as the client's own bytes: numbers keep their
 * exact digits (jansson would round 0.1 through a double) and nothing is
 * printed twice.  These functions expect text jansson has already accepted;
 * on anything else they return false rather than read out of bounds.
 * Pure; thread-safe.
 */
#ifndef FACTD_JSONSPAN_H
#define FACTD_JSONSPAN_H

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct fd_span {
	size_t start; /* offset of the value's first byte */
	size_t end;   /* offset one past its last byte */
};

/* Skip whitespace and one value starting at *pos; *pos ends just after it. */
bool fd_json_skip_value(const char *s, size_t len, size_t *pos);

/* The span of member `key` of the object at `obj` (whitespace allowed before it). */
bool fd_json_member(const char *s, size_t len, struct fd_span obj, const char *key, struct fd_span *out);

/* The span of element `index` of the array at `arr`. */
bool fd_json_element(const char *s, size_t len, struct fd_span arr, size_t index, struct fd_span *out);

/*
 * Iterate an array: *pos starts at 0 for the first call; each call yields the
 * next element's span and returns false at the end (or on malformed text).
 */
bool fd_json_next_element(const char *s, size_t len, struct fd_span arr, size_t *pos, struct fd_span *out);

/*
 * Copy the JSON text src[0..len) to dst without the whitespace between its
 * tokens (the compact form every response uses); strings are copied as they
 * are.  dst has room for len bytes and may be src itself.  Returns the bytes
 * written; no NUL is added.
 */
size_t fd_json_compact(char *dst, const char *src, size_t len);

/* Is s[0..len) well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF)? */
bool fd_utf8_valid(const char *s, size_t len);

#ifdef __cplusplus
}
#endif

#endif
