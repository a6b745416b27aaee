/*
 * catalog.h - what the event store holds, for operators: streams by name
 * (keyset pages filtered by category and prefix), categories with their
 * stream and event counts, and the feed's head.  Framework-only (the HTTP
 * layer's GET /streams, /categories and /events/head).
 *
 * Every query walks streams_name_c_idx (stream names in byte order,
 * migration 0006); none reads the events table except the head, which takes
 * one row from the feed index.  Threading: as the pool; each call borrows
 * one connection.
 */
#ifndef FACTD_STORE_CATALOG_H
#define FACTD_STORE_CATALOG_H

#include <jansson.h>
#include <stdbool.h>

#include "factd/error.h"
#include "factd/pool.h"

struct fd_stream_query {
	const char *category;  /* only this category's streams; NULL: all (validated by the caller) */
	const char *prefix;    /* only names starting with it; NULL: all */
	const char *after;     /* the page starts after this name; NULL: at the start */
	unsigned limit;        /* rows per page, >= 1 */
	bool deleted;          /* list deleted and tombstoned streams too, each with its "state" */
};

/*
 * One page of streams in byte order of their names: *out is
 * {"streams": [{stream, category, version, updated_at}], "next": name|null}
 * (caller owns).  Deleted (soft) and tombstoned streams are left out unless
 * q->deleted; then every row has "state": "live", "deleted" or "tombstoned".  FD_ERR_UNAVAILABLE, FD_ERR_DB, FD_ERR_NOMEM.
 */
FD_MUST_USE enum fd_err fd_catalog_streams(struct fd_pool *pool, const struct fd_stream_query *q, json_t **out);

/*
 * One page of categories in byte order, each with its number of streams and
 * events (the sum of its streams' versions), deleted and tombstoned streams
 * not counted (a category with none left is not listed; a page may then be
 * shorter than limit with "next" still set): *out is
 * {"categories": [{category, streams, events}], "next": category|null}.
 * Counting reads the index range of each category on the page.
 */
FD_MUST_USE enum fd_err fd_catalog_categories(struct fd_pool *pool, const char *after, unsigned limit, json_t **out);

/*
 * The position of the newest event a feed reader can see now (the cursor to
 * pass as ?after= to follow only what comes next), "0" when there is none;
 * written to out (at least FD_CURSOR_STRLEN bytes).
 */
FD_MUST_USE enum fd_err fd_catalog_head(struct fd_pool *pool, char *out, size_t len);

#endif
