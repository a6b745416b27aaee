/* error.c - names of the error enum.  Pure, thread-safe. */
#include "factd/error.h"

static const char *const names[] = {
	[FD_OK] = "ok",
	[FD_ERR_NOMEM] = "nomem",
	[FD_ERR_INVAL] = "invalid",
	[FD_ERR_NOTFOUND] = "not_found",
	[FD_ERR_CONFLICT] = "conflict",
	[FD_ERR_DUPLICATE] = "duplicate",
	[FD_ERR_RETRY] = "retry",
	[FD_ERR_DB] = "db",
	[FD_ERR_UNAVAILABLE] = "unavailable",
	[FD_ERR_TOOLARGE] = "too_large",
	[FD_ERR_IO] = "io",
	[FD_ERR_INTERNAL] = "internal",
	[FD_ERR_REJECTED] = "rejected",
	[FD_ERR_PRECONDITION] = "precondition",
	[FD_ERR_IDEMPOTENCY] = "idempotency",
	[FD_ERR_SCHEMA] = "schema",
	[FD_ERR_DELETED] = "deleted",
	[FD_ERR_GONE] = "gone",
	[FD_ERR_NOKEY] = "no_key",
	[FD_ERR_ERASED] = "erased",
};

const char *fd_err_name(enum fd_err err)
{
	if ((unsigned)err < sizeof names / sizeof names[0] && names[err])
		return names[err];
	return "unknown";
}
