/*
 * api_query.c - the read side:
 *   GET  /projections                 each projection's checkpoint, lag and status
 *   POST /projections/{name}/rebuild  rebuild a projection from the start of the feed
 * and what an app's list endpoints share (api.h: fd_api_list_*): the
 * ?limit= and ?min_position= parameters and the answer.
 *
 * An app's lists read its projections' tables and never replay events.  With
 * ?min_position=<cursor> (the "position" a command or append answered) a
 * list first waits, up to FACTD_MIN_POSITION_WAIT_MS, until its projection
 * has applied the feed up to that cursor, so a client reads its own writes;
 * when the wait runs out the answer is 503 projection-behind with
 * Retry-After.  Every parameter is checked before any database work.
 */
#include "http/api.h"
#include "factd/app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/events.h"
#include "http/input.h"
#include "factd/proj.h"
#include "http/problem.h"
#include "factd/uuid.h"

#define LIST_DEFAULT_LIMIT 100

void fd_api_bad_param(struct fd_resp *resp, const struct fd_req *req, const char *name, const char *detail)
{
	fd_problem(resp, req, 400, "invalid-parameter", "Invalid parameter", detail,
		   json_pack("{s:s}", "parameter", name));
}

bool fd_api_list_limit(struct fd_req *req, struct fd_resp *resp, unsigned *out)
{
	unsigned max = req->ctx->cfg->max_read_limit;
	const char *v = fd_req_query(req, "limit");
	*out = LIST_DEFAULT_LIMIT < max ? LIST_DEFAULT_LIMIT : max;
	if (!v)
		return true;
	if (!fd_input_limit(v, max, out)) {
		char detail[64];
		snprintf(detail, sizeof detail, "limit must be an integer in 1..%u", max);
		fd_api_bad_param(resp, req, "limit", detail);
		return false;
	}
	return true;
}

static bool wait_for(struct fd_req *req, struct fd_resp *resp, const char *projection, const struct fd_read_need *need)
{
	unsigned timeout = req->ctx->cfg->min_position_wait_ms;
	/* On a replica the projection's checkpoint is read as replicated, so the wait is the same there.
	 * FD_ERR_RETRY is the wait running out, not the replica failing: only an unreachable one falls back. */
	struct fd_pool *pool = fd_req_read_pool(req, need);
	enum fd_err err = fd_projection_wait(pool, projection, need->position, timeout);
	if (err == FD_ERR_UNAVAILABLE && (pool = fd_req_read_retry(req, err)))
		err = fd_projection_wait(pool, projection, need->position, timeout);
	if (err == FD_OK)
		return true;
	if (err == FD_ERR_RETRY) {
		char detail[200], cursor[FD_CURSOR_STRLEN];
		fd_cursor_format(&need->position, cursor, sizeof cursor);
		snprintf(detail, sizeof detail, "the %s projection has not reached position %s within %u ms; try again",
			 projection, cursor, timeout);
		fd_problem(resp, req, 503, "projection-behind", "Projection behind", detail,
			   json_pack("{s:s, s:s}", "projection", projection, "min_position", cursor));
		return false;
	}
	fd_problem_err(resp, req, err, NULL, NULL);
	return false;
}

bool fd_api_list_min_position(struct fd_req *req, struct fd_resp *resp, const char *projection)
{
	struct fd_read_need need = { 0 };
	if (!fd_req_min_position(req, resp, &need))
		return false;
	return !need.has_position || wait_for(req, resp, projection, &need);
}

void fd_api_list_answer(struct fd_req *req, struct fd_resp *resp, enum fd_err err, char *json)
{
	if (err == FD_ERR_UNAVAILABLE)
		fd_problem_err(resp, req, err, "the read model is not available yet; try again shortly", NULL);
	else if (err)
		fd_problem_err(resp, req, err, NULL, NULL);
	else
		fd_resp_json(resp, 200, json);
}

void fd_api_projections(struct fd_req *req, struct fd_resp *resp)
{
	json_t *list = NULL;
	struct fd_projection_set set = { req->ctx->app->projections, req->ctx->app->nprojections };
	enum fd_err err = fd_projection_status(req->ctx->pool, &set, &list);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_resp_json_doc(resp, 200, json_pack("{s:o}", "projections", list));
}

void fd_api_rebuild_projection(struct fd_req *req, struct fd_resp *resp)
{
	const char *name = req->params[0];
	struct fd_projection_set set = { req->ctx->app->projections, req->ctx->app->nprojections };
	enum fd_err err = fd_projection_request_rebuild(req->ctx->pool, &set, name);
	if (err == FD_ERR_NOTFOUND) {
		fd_problem(resp, req, 404, "not-found", "Not found", "no projection has this name", NULL);
		return;
	}
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_resp_json_doc(resp, 202, json_pack("{s:s, s:s}", "name", name, "status", "rebuild requested"));
	fd_resp_header(resp, "Location", "/projections");
}
