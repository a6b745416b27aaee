/*
 * timeutil.h - RFC 3339 timestamps on the wire.  Pure; thread-safe.
 */
#ifndef FACTD_TIMEUTIL_H
#define FACTD_TIMEUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Parse an RFC 3339 date-time ("2026-01-02T03:04:05Z", optional fraction of
 * up to 9 digits, "Z" or "+hh:mm"/"-hh:mm", 'T' or 't' or ' ' between date
 * and time) into microseconds since the Unix epoch (UTC), truncating below a
 * microsecond.  Rejects out-of-range fields (month 13, Feb 30, hour 24,
 * minute 60; second 60 is accepted as a leap second and read as 59) and
 * years outside 0001..9999.
 */
bool fd_time_parse_rfc3339(const char *s, int64_t *unix_us);
/* Format microseconds since the epoch as "YYYY-MM-DDThh:mm:ss.uuuuuuZ" into buf (>= 28 bytes). */
void fd_time_format_rfc3339(int64_t unix_us, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
