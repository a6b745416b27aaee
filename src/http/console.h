/*
 * console.h - the operator console's static files (src/http/console/),
 * embedded at build time by tools/embed_console.py and served by
 * GET /console/{asset} (api_console.c).  Read-only; thread-safe.
 */
#ifndef FACTD_HTTP_CONSOLE_H
#define FACTD_HTTP_CONSOLE_H

#include <stddef.h>

struct fd_console_asset {
	const char *name;          /* "app.js": served as /console/app.js */
	const char *content_type;
	const unsigned char *data;
	size_t len;
	const char *etag;          /* strong, quoted: a digest of data */
};

extern const struct fd_console_asset fd_console_assets[];
extern const size_t fd_console_nassets;

/* The asset called name, or NULL. */
const struct fd_console_asset *fd_console_asset(const char *name);

#endif
