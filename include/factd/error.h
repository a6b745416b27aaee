/*
 * error.h - the one error enum every fallible factd function returns.
 *
 * Outputs travel in trailing out-parameters; the return value is always an
 * enum fd_err.  The HTTP layer maps each value to a status and problem type in
 * one table (src/http/problem.c).  Thread-safe: pure functions only.
 */
#ifndef FACTD_ERROR_H
#define FACTD_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#define FD_MUST_USE __attribute__((warn_unused_result))

enum fd_err {
	FD_OK = 0,
	FD_ERR_NOMEM,       /* allocation failed */
	FD_ERR_INVAL,       /* caller supplied invalid input */
	FD_ERR_NOTFOUND,    /* the thing asked for does not exist */
	FD_ERR_CONFLICT,    /* optimistic concurrency check failed (expected version) */
	FD_ERR_DUPLICATE,   /* a unique identity (event id) is already used elsewhere */
	FD_ERR_RETRY,       /* transient: serialization failure or deadlock, safe to retry */
	FD_ERR_DB,          /* database reported an unexpected error */
	FD_ERR_UNAVAILABLE, /* database unreachable or pool exhausted */
	FD_ERR_TOOLARGE,    /* input exceeds a configured limit */
	FD_ERR_IO,          /* operating-system I/O failure */
	FD_ERR_INTERNAL,    /* a bug: an invariant did not hold */
	FD_ERR_REJECTED,    /* the domain refused a command (illegal transition, rule broken) */
	FD_ERR_PRECONDITION, /* the caller's If-Match version no longer holds */
	FD_ERR_IDEMPOTENCY, /* an idempotency key was reused with a different request */
	FD_ERR_SCHEMA,      /* a stored event's schema version is newer than this code knows (schema.h) */
	FD_ERR_DELETED,     /* the stream was deleted (soft): 404 stream-deleted */
	FD_ERR_GONE,        /* the stream was deleted for good (tombstoned): 410 stream-tombstoned */
	FD_ERR_NOKEY,       /* personal data needs the master key, and none is configured */
	FD_ERR_ERASED,      /* the data subject was erased: no new personal data of it is taken */
};

/* Stable lower-case name of an error ("conflict"), never NULL. */
const char *fd_err_name(enum fd_err err);

#ifdef __cplusplus
}
#endif

#endif
