/*
 * testutil.h - small helpers every suite wants: sleeping, a monotonic clock,
 * formatted strings, fresh UUIDs, free ports, and factd processes started
 * from the binary meson names in FACTD_BIN.  They fail the test (criterion)
 * rather than return errors.
 */
#ifndef FACTD_TEST_UTIL_H
#define FACTD_TEST_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

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

/* A TCP port on 127.0.0.1 that nothing listens on right now. */
uint16_t fd_test_free_port(void);

/* A process of the binary FACTD_BIN names (fd_test_proc_start). */
struct fd_test_proc {
	pid_t pid;
	uint16_t port;    /* its FACTD_LISTEN port on 127.0.0.1 */
	char log[128];    /* the file its stderr goes to */
	bool own_log;     /* log was named by fd_test_proc_start: fd_test_proc_stop removes it */
};

/*
 * Start FACTD_BIN with the arguments `args` (NULL-terminated; NULL: none)
 * and, over FACTD_LISTEN=127.0.0.1:<port> and FACTD_LOG_LEVEL=warn, the
 * environment `env` ("NAME=value", NULL-terminated; may be NULL).  The port
 * is p->port, or a free one when that is 0 (set it to restart a process on
 * its port); stderr goes to p->log, or a new /tmp file when that is empty.
 * The process is killed (SIGKILL) should the test's process end first.
 * With `ready_path` ("/healthz", "/readyz"), wait up to 30 s until GET on it
 * answers 200; the test fails if the process exits or does not answer.
 */
void fd_test_proc_start(struct fd_test_proc *p, const char *const *env, const char *const *args,
			const char *ready_path);
/*
 * Send `sig` and reap the process; after SIGTERM the test fails unless it
 * exited 0.  Removes a log fd_test_proc_start named.
 */
void fd_test_proc_stop(struct fd_test_proc *p, int sig);
/*
 * Wait up to 30 s for the process to exit by itself (the test fails, after a
 * SIGKILL, if it does not); its exit status (-1: a signal ended it), and its
 * stderr in *log (caller frees).  Removes a log fd_test_proc_start named.
 */
int fd_test_proc_exited(struct fd_test_proc *p, char **log);

#endif
