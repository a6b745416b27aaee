/* buf.c - growable NUL-terminated byte buffer.  Not thread-safe. */
#include "factd/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

static enum fd_err grow(struct fd_buf *b, size_t extra)
{
	if (extra > SIZE_MAX / 2 - b->len - 1)
		return FD_ERR_NOMEM;
	size_t need = b->len + extra + 1;
	if (need <= b->cap)
		return FD_OK;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	char *p = realloc(b->data, cap);
	if (!p)
		return FD_ERR_NOMEM;
	b->data = p;
	b->cap = cap;
	return FD_OK;
}

enum fd_err fd_buf_reserve(struct fd_buf *b, size_t extra)
{
	enum fd_err err = grow(b, extra);
	if (!err)
		b->data[b->len] = '\0';
	return err;
}

enum fd_err fd_buf_append(struct fd_buf *b, const void *data, size_t len)
{
	enum fd_err err = grow(b, len);
	if (err)
		return err;
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return FD_OK;
}

enum fd_err fd_buf_appendf(struct fd_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return FD_ERR_INVAL;
	enum fd_err err = grow(b, (size_t)n);
	if (err)
		return err;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return FD_OK;
}

enum fd_err fd_buf_append_json_str(struct fd_buf *b, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	enum fd_err err = fd_buf_append(b, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)s; !err && *p; p++) {
		char esc[7];
		switch (*p) {
		case '"': err = fd_buf_append(b, "\\\"", 2); break;
		case '\\': err = fd_buf_append(b, "\\\\", 2); break;
		case '\n': err = fd_buf_append(b, "\\n", 2); break;
		case '\r': err = fd_buf_append(b, "\\r", 2); break;
		case '\t': err = fd_buf_append(b, "\\t", 2); break;
		default:
			if (*p < 0x20) {
				memcpy(esc, "\\u00", 4);
				esc[4] = hex[*p >> 4];
				esc[5] = hex[*p & 15];
				err = fd_buf_append(b, esc, 6);
			} else {
				err = fd_buf_append(b, p, 1);
			}
		}
	}
	return err ? err : fd_buf_append(b, "\"", 1);
}

void fd_buf_reset(struct fd_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

void fd_buf_release(struct fd_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

char *fd_buf_detach(struct fd_buf *b)
{
	char *p = b->data ? b->data : strdup("");
	b->data = NULL;
	b->len = b->cap = 0;
	return p;
}
