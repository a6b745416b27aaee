/*
 * testutil.h - small helpers every suite wants: sleeping, a monotonic clock,
 * formatted strings and fresh UUIDs.  They fail the test (criterion) rather
 * than return errors.
 */
#ifndef FACTD_TEST_UTIL_H
#define FACTD_TEST_UTIL_H

#include "factd/uuid.h"

/* Sleep for ms milliseconds. */
void fd_test_sleep_ms(long ms);
/* The monotonic clock in milliseconds, and in seconds. */
long long fd_test_now_ms(void);
double fd_test_now_s(void);
/* printf into a new string (caller frees). */
char *fd_test_fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
/*
 * printf into one of a ring of 64 buffers of 1 kB, per thread: for short-lived
 * paths, headers and bodies.  Borrowed until the same thread has made 64
 * more; a longer string fails the test.
 */
const char *fd_test_P(const char *f, ...) __attribute__((format(printf, 1, 2)));
/* A new version-7 UUID in its text form. */
void fd_test_new_uuid(char out[FD_UUID_STRLEN + 1]);

#endif
