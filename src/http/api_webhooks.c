/*
 * api_webhooks.c - webhooks over HTTP:
 *   PUT    /webhooks/{name}          create (201) or update (200); the URL's target is checked
 *   GET    /webhooks                 every webhook: status, position, lag, last delivery, failures
 *   GET    /webhooks/{name}          one webhook
 *   DELETE /webhooks/{name}          remove it (its dispatcher lets go within a round)
 *   POST   /webhooks/{name}/resume   make a disabled webhook deliver again
 *
 * The secret is written, never read back: no answer and no log line has it.
 * Delivery itself is push/webhook.c's dispatcher.
 *
 * Threading: handlers run on the server's connection threads.
 */
#include "http/api.h"

#include <stdio.h>
#include <string.h>

#include "http/input_integ.h"
#include "http/problem.h"
#include "push/webhook.h"

static bool webhook_name(struct fd_req *req, struct fd_resp *resp)
{
	if (fd_integ_name_valid(req->params[0]))
		return true;
	fd_api_bad_param(resp, req, "name", "a webhook name is 1..100 characters of [A-Za-z0-9_.-], not starting with '.'");
	return false;
}

static void store_problem(struct fd_req *req, struct fd_resp *resp, enum fd_err err)
{
	if (err == FD_ERR_NOTFOUND)
		fd_problem(resp, req, 404, "not-found", "Not found", "no webhook has this name", NULL);
	else
		fd_problem_err(resp, req, err, NULL, NULL);
}

/* Answer status with the one webhook `name` as GET shows it. */
static void answer_one(struct fd_req *req, struct fd_resp *resp, unsigned status)
{
	json_t *list = NULL;
	enum fd_err err = fd_webhook_list(req->ctx->pool, req->params[0], &list);
	if (err) {
		store_problem(req, resp, err);
		return;
	}
	fd_resp_json_doc(resp, status, json_incref(json_array_get(list, 0)));
	json_decref(list);
}

void fd_api_put_webhook(struct fd_req *req, struct fd_resp *resp)
{
	struct fd_webhook_def d;
	struct fd_input_error e;
	char why[256];
	if (!webhook_name(req, resp))
		return;
	if (fd_webhook_def_parse(req->body.data, req->body.len, &d, &e)) {
		fd_problem(resp, req, e.status, e.slug, e.title, e.detail,
			   e.has_field ? json_pack("{s:s}", "field", e.field) : NULL);
		return;
	}
	enum fd_err err = fd_webhook_url_check(d.url, req->ctx->cfg->webhook_allow_private, why, sizeof why);
	if (err) {
		fd_webhook_def_release(&d);
		if (err == FD_ERR_INVAL)
			fd_problem(resp, req, 400, "invalid-field", "Invalid field", why, json_pack("{s:s}", "field", "/url"));
		else
			fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	struct fd_webhook_spec spec = {
		.name = req->params[0], .url = d.url, .secret = d.secret,
		.categories = d.filter.categories, .ncategories = d.filter.ncategories,
		.types = d.filter.types, .ntypes = d.filter.ntypes,
		.max_attempts = d.max_attempts, .timeout_ms = d.timeout_ms,
	};
	bool created = false;
	err = fd_webhook_put(req->ctx->pool, &spec, &created);
	fd_webhook_def_release(&d);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	answer_one(req, resp, created ? 201 : 200);
	if (created && resp->status == 201) {
		char loc[160];
		snprintf(loc, sizeof loc, "/webhooks/%s", req->params[0]);
		fd_resp_header(resp, "Location", loc);
	}
}

void fd_api_list_webhooks(struct fd_req *req, struct fd_resp *resp)
{
	json_t *list = NULL;
	enum fd_err err = fd_webhook_list(req->ctx->pool, NULL, &list);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_resp_json_doc(resp, 200, json_pack("{s:o}", "webhooks", list));
}

void fd_api_get_webhook(struct fd_req *req, struct fd_resp *resp)
{
	if (webhook_name(req, resp))
		answer_one(req, resp, 200);
}

void fd_api_delete_webhook(struct fd_req *req, struct fd_resp *resp)
{
	if (!webhook_name(req, resp))
		return;
	enum fd_err err = fd_webhook_delete(req->ctx->pool, req->params[0]);
	if (err)
		store_problem(req, resp, err);
	else
		resp->status = 204;
}

void fd_api_resume_webhook(struct fd_req *req, struct fd_resp *resp)
{
	if (!webhook_name(req, resp))
		return;
	enum fd_err err = fd_webhook_resume(req->ctx->pool, req->params[0]);
	if (err)
		store_problem(req, resp, err);
	else
		answer_one(req, resp, 200);
}
