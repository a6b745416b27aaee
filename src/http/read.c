/*
 * read.c - the read seam (http.h, fd_req_read_pool): which pool serves a
 * read request, a read replica or the primary.
 *
 * A read handler asks once per request, saying what the read needs to have
 * been replayed (a ?min_position=, an aggregate's ?version=); the choice is
 * kept in the request, so a handler that asks again (a list that first
 * waits for its projection, then queries) reads from the same database, and
 * the server adds X-Factd-Replica to the response when a replica served it.
 *
 * Threading: per request, on its worker thread.
 */
#include "factd/http.h"
#include "factd/handlers.h"

#include "store/replicas.h"

struct fd_pool *fd_req_read_pool(struct fd_req *req, const struct fd_read_need *need)
{
	if (req->read_pool)
		return req->read_pool;
	struct fd_pool *pool = NULL;
	int i = fd_replicas_choose(req->ctx->replicas, need, &pool);
	req->replica = i;
	req->read_pool = i >= 0 ? pool : req->ctx->pool;
	return req->read_pool;
}

struct fd_pool *fd_req_read_retry(struct fd_req *req, enum fd_err err)
{
	if (!err || !req->read_pool || req->read_pool == req->ctx->pool || req->replica < 0)
		return NULL;
	if (err != FD_ERR_UNAVAILABLE && err != FD_ERR_RETRY)
		return NULL;
	fd_replicas_failed(req->ctx->replicas, req->replica, err);
	req->replica = -1;
	req->read_pool = req->ctx->pool;
	return req->read_pool;
}

bool fd_req_min_position(struct fd_req *req, struct fd_resp *resp, struct fd_read_need *need)
{
	const char *v = fd_req_query(req, "min_position");
	if (!v)
		return true;
	if (!fd_cursor_parse(v, &need->position)) {
		fd_api_bad_param(resp, req, "min_position",
				 "min_position must be a position from a previous response (\"<tx>-<seq>\") or 0");
		return false;
	}
	need->has_position = true;
	return true;
}
