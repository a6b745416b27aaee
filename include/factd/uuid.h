/*
 * uuid.h - RFC 9562 UUIDs: generation (version 7, time-ordered so b-tree
 * inserts stay local), parsing and canonical formatting.
 * Thread-safe.
 */
#ifndef FACTD_UUID_H
#define FACTD_UUID_H

#include <stdbool.h>
#include "factd/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FD_UUID_STRLEN 36

struct fd_uuid {
	unsigned char b[16];
};

/* A new version-7 UUID from the clock and the kernel's CSPRNG. */
FD_MUST_USE enum fd_err fd_uuid_v7(struct fd_uuid *out);
/* Accepts the canonical 8-4-4-4-12 hex form, either case.  False on anything else. */
bool fd_uuid_parse(const char *s, struct fd_uuid *out);
/* Writes the lower-case canonical form and a NUL into out. */
void fd_uuid_format(const struct fd_uuid *u, char out[FD_UUID_STRLEN + 1]);

#ifdef __cplusplus
}
#endif

#endif
