/*
 * api_query.c - the read side:
 *   GET  /orders                      order summaries (?status, ?customer_id, ?after, ?limit)
 *   GET  /products                    product stock (?after, ?limit)
 *   GET  /projections                 each projection's checkpoint, lag and status
 *   POST /projections/{name}/rebuild  rebuild a projection from the start of the feed
 *
 * The lists read the projections' tables and never replay events.  With
 * ?min_position=<cursor> (the "position" a command or append answered) a
 * list first waits, up to FACTD_MIN_POSITION_WAIT_MS, until its projection
 * has applied the feed up to that cursor, so a client reads its own writes;
 * when the wait runs out the answer is 503 projection-behind with
 * Retry-After.  Every parameter is checked before any database work.
 */
#include "factd/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/events.h"
#include "factd/input.h"
#include "factd/proj.h"
#include "factd/problem.h"
#include "factd/queries.h"
#include "factd/uuid.h"

#define LIST_DEFAULT_LIMIT 100

static void bad_param(struct fd_resp *resp, const struct fd_req *req, const char *name, const char *detail)
{
	fd_problem(resp, req, 400, "invalid-parameter", "Invalid parameter", detail,
		   json_pack("{s:s}", "parameter", name));
}

/* ?limit=: decimal 1..FACTD_MAX_READ_LIMIT, default LIST_DEFAULT_LIMIT (capped).  False after a 400. */
static bool read_limit(struct fd_req *req, struct fd_resp *resp, unsigned *out)
{
	unsigned max = req->app->cfg->max_read_limit;
	const char *v = fd_req_query(req, "limit");
	*out = LIST_DEFAULT_LIMIT < max ? LIST_DEFAULT_LIMIT : max;
	if (!v)
		return true;
	if (!fd_input_limit(v, max, out)) {
		char detail[64];
		snprintf(detail, sizeof detail, "limit must be an integer in 1..%u", max);
		bad_param(resp, req, "limit", detail);
		return false;
	}
	return true;
}

/* ?min_position=: a feed cursor.  *has is false when absent.  False after a 400. */
static bool read_min_position(struct fd_req *req, struct fd_resp *resp, struct fd_cursor *pos, bool *has)
{
	const char *v = fd_req_query(req, "min_position");
	*has = v != NULL;
	if (v && !fd_cursor_parse(v, pos)) {
		bad_param(resp, req, "min_position",
			  "min_position must be a position from a previous response (\"<tx>-<seq>\") or 0");
		return false;
	}
	return true;
}

/* Wait for `projection` to reach pos.  False after a problem response. */
static bool wait_for(struct fd_req *req, struct fd_resp *resp, const char *projection, struct fd_cursor pos)
{
	unsigned timeout = req->app->cfg->min_position_wait_ms;
	enum fd_err err = fd_projection_wait(req->app->pool, projection, pos, timeout);
	if (err == FD_OK)
		return true;
	if (err == FD_ERR_RETRY) {
		char detail[200], cursor[FD_CURSOR_STRLEN];
		fd_cursor_format(&pos, cursor, sizeof cursor);
		snprintf(detail, sizeof detail, "the %s projection has not reached position %s within %u ms; try again",
			 projection, cursor, timeout);
		fd_problem(resp, req, 503, "projection-behind", "Projection behind", detail,
			   json_pack("{s:s, s:s}", "projection", projection, "min_position", cursor));
		return false;
	}
	fd_problem_err(resp, req, err, NULL, NULL);
	return false;
}

static void answer_page(struct fd_req *req, struct fd_resp *resp, enum fd_err err, char *json)
{
	if (err == FD_ERR_UNAVAILABLE)
		fd_problem_err(resp, req, err, "the read model is not available yet; try again shortly", NULL);
	else if (err)
		fd_problem_err(resp, req, err, NULL, NULL);
	else
		fd_resp_json(resp, 200, json);
}

void fd_api_list_orders(struct fd_req *req, struct fd_resp *resp)
{
	const char *status = fd_req_query(req, "status");
	const char *customer = fd_req_query(req, "customer_id");
	const char *after = fd_req_query(req, "after");
	struct fd_cursor pos = { 0, 0 };
	struct fd_uuid u;
	unsigned limit;
	bool has_pos;

	if (status && !fd_query_order_status_valid(status)) {
		bad_param(resp, req, "status", "status must be one of draft, placed, confirmed, shipped, cancelled");
		return;
	}
	if (customer && !fd_query_customer_valid(customer)) {
		bad_param(resp, req, "customer_id", "customer_id must be 1 to 128 characters of UTF-8");
		return;
	}
	if (after && !fd_uuid_parse(after, &u)) {
		bad_param(resp, req, "after", "after must be an order id (a UUID) from a previous page");
		return;
	}
	if (!read_limit(req, resp, &limit) || !read_min_position(req, resp, &pos, &has_pos))
		return;
	if (has_pos && !wait_for(req, resp, "order_summaries", pos))
		return;
	char *json = NULL;
	enum fd_err err = fd_query_orders(req->app->pool, status, customer, after, limit, &json);
	answer_page(req, resp, err, json);
}

void fd_api_list_products(struct fd_req *req, struct fd_resp *resp)
{
	const char *after = fd_req_query(req, "after");
	struct fd_cursor pos = { 0, 0 };
	unsigned limit;
	bool has_pos;

	if (after && !fd_query_sku_valid(after)) {
		bad_param(resp, req, "after", "after must be a product id (1 to 64 characters of A-Z a-z 0-9 _ . : -)");
		return;
	}
	if (!read_limit(req, resp, &limit) || !read_min_position(req, resp, &pos, &has_pos))
		return;
	if (has_pos && !wait_for(req, resp, "product_stock", pos))
		return;
	char *json = NULL;
	enum fd_err err = fd_query_products(req->app->pool, after, limit, &json);
	answer_page(req, resp, err, json);
}

void fd_api_projections(struct fd_req *req, struct fd_resp *resp)
{
	json_t *list = NULL;
	enum fd_err err = fd_projection_status(req->app->pool, &list);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_resp_json_doc(resp, 200, json_pack("{s:o}", "projections", list));
}

void fd_api_rebuild_projection(struct fd_req *req, struct fd_resp *resp)
{
	const char *name = req->params[0];
	enum fd_err err = fd_projection_find(name) ? fd_projection_request_rebuild(req->app->pool, name)
						   : FD_ERR_NOTFOUND;
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
