/*
 * api_catalog.c - what the event store holds, for operators and the console:
 *   GET /streams?category=&prefix=&after=&limit=&deleted=   streams by name, keyset pages
 *   GET /categories?after=&limit=                  categories with stream and event counts
 *   GET /events/head                               the feed position a live tail starts after
 * Parameters are checked before any database work; the queries walk one
 * index (store/catalog.h).
 */
#include "http/api.h"

#include <stdio.h>
#include <string.h>

#include "factd/events.h"
#include "http/problem.h"
#include "store/catalog.h"

#define CATALOG_DEFAULT_LIMIT 100

/* A category: a stream name without '-'; absent -> NULL.  False: a 400 is in resp. */
static bool category_param(struct fd_req *req, struct fd_resp *resp, const char *name, const char **out)
{
	const char *v = fd_req_query(req, name);
	*out = NULL;
	if (v && (!fd_stream_name_valid(v) || strchr(v, '-'))) {
		fd_api_bad_param(resp, req, name, "a category is 1-200 characters of A-Z a-z 0-9 _ . : (no -)");
		return false;
	}
	*out = v;
	return true;
}

static bool limit_param(struct fd_req *req, struct fd_resp *resp, unsigned *out)
{
	unsigned max = req->ctx->cfg->max_read_limit;
	const char *v = fd_req_query(req, "limit");
	*out = CATALOG_DEFAULT_LIMIT < max ? CATALOG_DEFAULT_LIMIT : max;
	if (v && !fd_input_limit(v, max, out)) {
		char detail[64];
		snprintf(detail, sizeof detail, "limit must be an integer in 1..%u", max);
		fd_api_bad_param(resp, req, "limit", detail);
		return false;
	}
	return true;
}

void fd_api_list_streams(struct fd_req *req, struct fd_resp *resp)
{
	struct fd_stream_query q = { 0 };
	if (!category_param(req, resp, "category", &q.category) || !limit_param(req, resp, &q.limit))
		return;
	static const char *const names[] = { "prefix", "after" };
	const char **vals[] = { &q.prefix, &q.after };
	for (size_t i = 0; i < 2; i++) {
		const char *v = fd_req_query(req, names[i]);
		if (v && !fd_stream_name_valid(v)) {
			fd_api_bad_param(resp, req, names[i],
					 i == 0 ? "prefix must be 1-200 characters of A-Z a-z 0-9 _ . : -"
						: "after must be a stream name (the next member of a page)");
			return;
		}
		*vals[i] = v;
	}
	const char *del = fd_req_query(req, "deleted");
	if (del && strcmp(del, "true") != 0 && strcmp(del, "false") != 0) {
		fd_api_bad_param(resp, req, "deleted", "deleted must be true or false");
		return;
	}
	q.deleted = del && strcmp(del, "true") == 0;
	json_t *page = NULL;
	enum fd_err err = FD_OK;
	for (struct fd_pool *pool = fd_req_read_pool(req, NULL); pool; pool = fd_req_read_retry(req, err))
		err = fd_catalog_streams(pool, &q, &page);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_resp_json_doc(resp, 200, page);
}

void fd_api_categories(struct fd_req *req, struct fd_resp *resp)
{
	const char *after = NULL;
	unsigned limit;
	if (!category_param(req, resp, "after", &after) || !limit_param(req, resp, &limit))
		return;
	json_t *page = NULL;
	enum fd_err err = FD_OK;
	for (struct fd_pool *pool = fd_req_read_pool(req, NULL); pool; pool = fd_req_read_retry(req, err))
		err = fd_catalog_categories(pool, after, limit, &page);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_resp_json_doc(resp, 200, page);
}

void fd_api_feed_head(struct fd_req *req, struct fd_resp *resp)
{
	char head[FD_CURSOR_STRLEN];
	enum fd_err err = fd_catalog_head(req->ctx->pool, head, sizeof head);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_resp_json_doc(resp, 200, json_pack("{s:s}", "head", head));
}
