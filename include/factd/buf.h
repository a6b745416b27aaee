/*
 * buf.h - a growable byte buffer, always NUL-terminated.
 *
 * Ownership: the struct is a value owned by its user; fd_buf_release frees its
 * bytes, fd_buf_detach hands them to the caller (caller owns, free()).
 * Not thread-safe.
 */
#ifndef FACTD_BUF_H
#define FACTD_BUF_H

#include <stddef.h>
#include "factd/error.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fd_buf {
	char *data;   /* NULL until the first append */
	size_t len;
	size_t cap;
};

#define FD_BUF_INIT { NULL, 0, 0 }

FD_MUST_USE enum fd_err fd_buf_append(struct fd_buf *b, const void *data, size_t len);
FD_MUST_USE enum fd_err fd_buf_appendf(struct fd_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Append s as a JSON string literal (with quotes and escapes). */
FD_MUST_USE enum fd_err fd_buf_append_json_str(struct fd_buf *b, const char *s);
/* Make room for extra more bytes (plus the NUL) without changing the contents. */
FD_MUST_USE enum fd_err fd_buf_reserve(struct fd_buf *b, size_t extra);
void fd_buf_reset(struct fd_buf *b);
void fd_buf_release(struct fd_buf *b);
/* Returns the bytes (caller owns; "" when empty, never NULL unless NOMEM) and empties b. */
char *fd_buf_detach(struct fd_buf *b);

#ifdef __cplusplus
}
#endif

#endif
