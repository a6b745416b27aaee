/*
 * limits.h - cheap checks of untrusted input against configured limits,
 * done before the expensive work (parsing) starts.  Pure; thread-safe.
 */
#ifndef FACTD_LIMITS_H
#define FACTD_LIMITS_H

#include <stdbool.h>
#include <stddef.h>

/*
 * True when no array or object in the JSON text s[0..n) nests deeper than
 * `max` levels ("[]" is depth 1).  A byte scan that skips strings (and the
 * escapes in them); it does not validate the JSON, the parser does that after.
 */
bool fd_json_depth_within(const char *s, size_t n, unsigned max);

#endif
