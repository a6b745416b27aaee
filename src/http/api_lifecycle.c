/*
 * api_lifecycle.c - forgetting events, for operators (admin role):
 *   DELETE /streams/{stream}            soft (or ?hard=true) deletion, ?expected_version=N
 *   POST   /streams/{stream}/truncate   remove the events before a version
 *   GET    /retention                   every category's retention policy
 *   GET    /retention/{category}        one
 *   PUT    /retention/{category}        set one
 *   DELETE /retention/{category}        drop one
 *
 * Validation happens before any database work (input.c parses the bodies).
 */
#include "http/api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/app.h"
#include "factd/buf.h"
#include "factd/bus.h"
#include "factd/log.h"
#include "http/input.h"
#include "http/problem.h"
#include "store/lifecycle.h"

static bool stream_param(struct fd_req *req, struct fd_resp *resp, const char **out)
{
	*out = req->params[0];
	if (fd_stream_name_valid(*out))
		return true;
	fd_api_bad_param(resp, req, "stream", "stream names are 1-200 characters of A-Z a-z 0-9 _ . : -");
	return false;
}

static bool category_param(struct fd_req *req, struct fd_resp *resp, const char **out)
{
	*out = req->params[0];
	if (fd_stream_name_valid(*out) && !strchr(*out, '-'))
		return true;
	fd_api_bad_param(resp, req, "category", "category must be 1-200 characters of A-Z a-z 0-9 _ . : (no -)");
	return false;
}

static void input_problem(struct fd_resp *resp, const struct fd_req *req, const struct fd_input_error *ie)
{
	fd_problem(resp, req, ie->status, ie->slug, ie->title, ie->detail,
		   ie->has_field ? json_pack("{s:s}", "field", ie->field) : NULL);
}

/* The stream errors every lifecycle operation shares; false when err is another. */
static bool stream_problem(struct fd_resp *resp, const struct fd_req *req, enum fd_err err)
{
	if (err == FD_ERR_NOTFOUND) {
		fd_problem(resp, req, 404, "not-found", "Stream not found", "no events were ever appended to this stream",
			   NULL);
		return true;
	}
	if (err == FD_ERR_DELETED || err == FD_ERR_GONE) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return true;
	}
	return false;
}

void fd_api_delete_stream(struct fd_req *req, struct fd_resp *resp)
{
	const char *stream;
	if (!stream_param(req, resp, &stream))
		return;
	const char *qh = fd_req_query(req, "hard"), *qv = fd_req_query(req, "expected_version");
	bool hard = qh && strcmp(qh, "true") == 0;
	if (qh && !hard && strcmp(qh, "false") != 0) {
		fd_api_bad_param(resp, req, "hard", "hard must be true or false");
		return;
	}
	long long expected = -1;
	if (qv && !fd_input_int(qv, 0, INT64_MAX - 1, &expected)) {
		fd_api_bad_param(resp, req, "expected_version", "expected_version must be an integer >= 0");
		return;
	}
	const char *corr = fd_req_header(req, "X-Correlation-Id");
	json_t *meta = json_pack("{s:s, s:s, s:s}", "correlation_id", fd_request_id_valid(corr) ? corr : req->request_id,
				 "request_id", req->request_id, "caller", req->caller[0] ? req->caller : "anonymous");
	char *meta_s = meta ? json_dumps(meta, JSON_COMPACT) : NULL;
	json_decref(meta);
	if (!meta_s) {
		fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
		return;
	}
	struct fd_delete_result r;
	enum fd_err err = fd_store_delete_stream(req->ctx->pool, stream, expected, hard, meta_s, &r);
	free(meta_s);
	if (err == FD_ERR_CONFLICT) {
		char detail[160];
		snprintf(detail, sizeof detail, "expected version %lld, but stream %s is at version %" PRId64, expected,
			 stream, r.current_version);
		fd_problem_err(resp, req, err, detail, json_pack("{s:I}", "current_version", (json_int_t)r.current_version));
		return;
	}
	if (stream_problem(resp, req, err))
		return;
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	char pos[FD_CURSOR_STRLEN];
	fd_cursor_format(&r.position, pos, sizeof pos);
	fd_log_fields(FD_LOG_INFO, hard ? "stream deleted for good" : "stream deleted",
		      json_pack("{s:s, s:I, s:I, s:s}", "stream", stream, "version", (json_int_t)r.deleted_version,
				"removed", (json_int_t)r.removed, "caller", req->caller[0] ? req->caller : "anonymous"));
	fd_resp_json_doc(resp, 200,
			 json_pack("{s:s, s:b, s:I, s:s, s:I}", "stream", stream, "hard", hard, "deleted_version",
				   (json_int_t)r.deleted_version, "position", pos, "removed", (json_int_t)r.removed));
}

void fd_api_truncate_stream(struct fd_req *req, struct fd_resp *resp)
{
	const char *stream;
	if (!stream_param(req, resp, &stream))
		return;
	int64_t before;
	struct fd_input_error ie;
	if (fd_truncate_parse(req->body.data, req->body.len, &before, &ie)) {
		input_problem(resp, req, &ie);
		return;
	}
	const char *agg_id = NULL;
	const struct fd_aggregate_type *agg =
		req->ctx->bus ? fd_app_aggregate_of_stream(req->ctx->app, stream, &agg_id) : NULL;
	int schema = -1;
	if (agg && (schema = fd_bus_snapshot_schema(req->ctx->bus, agg)) < 0) {
		fd_problem(resp, req, 409, "truncate-needs-snapshot", "Truncation needs a snapshot",
			   "this stream is an aggregate's and its snapshots are off (FACTD_SNAPSHOT_EVERY=0): without a "
			   "snapshot it could not load after a truncation",
			   NULL);
		return;
	}
	struct fd_truncate_result r;
	enum fd_err err = fd_store_truncate_stream(req->ctx->pool, stream, before, schema, &r);
	if (err == FD_ERR_REJECTED && r.refusal == FD_TRUNCATE_NEEDS_SNAPSHOT && agg) {
		/* make the snapshot the aggregate will load from, then try again */
		int64_t at = 0;
		err = fd_bus_snapshot_now(req->ctx->bus, agg, agg_id, &at);
		if (!err)
			err = fd_store_truncate_stream(req->ctx->pool, stream, before, schema, &r);
		else if (err == FD_ERR_NOTFOUND || err == FD_ERR_INVAL)
			err = FD_ERR_REJECTED; /* appended to meanwhile, or never loadable: refuse below */
	}
	if (stream_problem(resp, req, err))
		return;
	if (err == FD_ERR_REJECTED) {
		char detail[200];
		if (r.refusal == FD_TRUNCATE_BEYOND) {
			snprintf(detail, sizeof detail, "before_version %" PRId64 " is past the stream's next version %" PRId64,
				 before, r.current_version + 1);
			fd_problem(resp, req, 409, "truncate-beyond-end", "Truncation beyond the end", detail,
				   json_pack("{s:I}", "current_version", (json_int_t)r.current_version));
		} else {
			fd_problem(resp, req, 409, "truncate-needs-snapshot", "Truncation needs a snapshot",
				   "no snapshot of the aggregate at before_version - 1 or later could be made", NULL);
		}
		return;
	}
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_log_fields(FD_LOG_INFO, "stream truncated",
		      json_pack("{s:s, s:I, s:I, s:s}", "stream", stream, "before_version", (json_int_t)before, "removed",
				(json_int_t)r.removed, "caller", req->caller[0] ? req->caller : "anonymous"));
	fd_resp_json_doc(resp, 200,
			 json_pack("{s:s, s:I, s:I, s:I}", "stream", stream, "before_version", (json_int_t)before,
				   "removed", (json_int_t)r.removed, "version", (json_int_t)r.current_version));
}

void fd_api_list_retention(struct fd_req *req, struct fd_resp *resp)
{
	char *list = NULL;
	enum fd_err err = fd_retention_list(req->ctx->pool, &list);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	struct fd_buf out = FD_BUF_INIT;
	err = fd_buf_appendf(&out, "{\"policies\":%s}", list);
	free(list);
	if (err) {
		fd_buf_release(&out);
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_resp_json(resp, 200, fd_buf_detach(&out));
}

void fd_api_get_retention(struct fd_req *req, struct fd_resp *resp)
{
	const char *category;
	if (!category_param(req, resp, &category))
		return;
	char *doc = NULL;
	enum fd_err err = fd_retention_get(req->ctx->pool, category, &doc);
	if (err == FD_ERR_NOTFOUND) {
		fd_problem(resp, req, 404, "not-found", "No retention policy", "this category has no retention policy",
			   NULL);
		return;
	}
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_resp_json(resp, 200, doc);
}

void fd_api_put_retention(struct fd_req *req, struct fd_resp *resp)
{
	const char *category;
	if (!category_param(req, resp, &category))
		return;
	int age;
	int64_t count;
	struct fd_input_error ie;
	if (fd_retention_parse(req->body.data, req->body.len, &age, &count, &ie)) {
		input_problem(resp, req, &ie);
		return;
	}
	enum fd_err err = fd_retention_put(req->ctx->pool, category, age, count);
	char *doc = NULL;
	if (!err)
		err = fd_retention_get(req->ctx->pool, category, &doc);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_log_fields(FD_LOG_INFO, "retention policy set",
		      json_pack("{s:s, s:i, s:I, s:s}", "category", category, "max_age_days", age,
				"max_count_per_stream", (json_int_t)count, "caller",
				req->caller[0] ? req->caller : "anonymous"));
	fd_resp_json(resp, 200, doc);
}

void fd_api_delete_retention(struct fd_req *req, struct fd_resp *resp)
{
	const char *category;
	if (!category_param(req, resp, &category))
		return;
	enum fd_err err = fd_retention_delete(req->ctx->pool, category);
	if (err == FD_ERR_NOTFOUND) {
		fd_problem(resp, req, 404, "not-found", "No retention policy", "this category has no retention policy",
			   NULL);
		return;
	}
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	resp->status = 204;
}
