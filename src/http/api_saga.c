/*
 * api_saga.c - watching and steering sagas:
 *   GET  /sagas?type=&status=&after=&limit=   newest first, keyset pages
 *   GET  /sagas/{id}                          one saga with its steps and history
 *   GET  /<aggregate>/{id}/saga               an aggregate's saga (an app's route row names which)
 *   POST /sagas/{id}/retry                    a failed saga compensates again from where it stopped
 *   POST /sagas/{id}/abort                    a running saga starts compensating
 * Illegal transitions are 409 saga-state with the saga's status.
 */
#include "http/api.h"

#include <stdio.h>
#include <string.h>

#include "http/input.h"
#include "http/problem.h"
#include "factd/router.h"
#include "factd/saga.h"
#include "factd/uuid.h"

#define SAGA_LIST_DEFAULT 50

static const char *const statuses[] = { "running", "completed", "compensating", "compensated", "failed" };

static void saga_not_found(struct fd_resp *resp, const struct fd_req *req, const char *detail)
{
	fd_problem(resp, req, 404, "not-found", "Not found", detail, NULL);
}

void fd_api_list_sagas(struct fd_req *req, struct fd_resp *resp)
{
	struct fd_saga_filter f = { .limit = SAGA_LIST_DEFAULT };
	unsigned max = req->ctx->cfg->max_read_limit;
	if (f.limit > max)
		f.limit = max;
	const char *v;
	if ((v = fd_req_query(req, "type"))) {
		if (!fd_saga_set_find(&req->ctx->sagas, v)) {
			char detail[512];
			size_t o = (size_t)snprintf(detail, sizeof detail, "type must name a saga type (");
			for (size_t i = 0; i < req->ctx->sagas.n && o < sizeof detail; i++)
				o += (size_t)snprintf(detail + o, sizeof detail - o, "%s%s", i ? ", " : "",
						      req->ctx->sagas.items[i]->name);
			if (o < sizeof detail)
				snprintf(detail + o, sizeof detail - o, ")");
			fd_api_bad_param(resp, req, "type", detail);
			return;
		}
		f.type = v;
	}
	if ((v = fd_req_query(req, "status"))) {
		bool ok = false;
		for (size_t i = 0; i < sizeof statuses / sizeof *statuses; i++)
			ok = ok || strcmp(v, statuses[i]) == 0;
		if (!ok) {
			fd_api_bad_param(resp, req, "status",
				  "status must be running, completed, compensating, compensated or failed");
			return;
		}
		f.status = v;
	}
	if ((v = fd_req_query(req, "limit")) && !fd_input_limit(v, max, &f.limit)) {
		char detail[64];
		snprintf(detail, sizeof detail, "limit must be an integer in 1..%u", max);
		fd_api_bad_param(resp, req, "limit", detail);
		return;
	}
	if ((v = fd_req_query(req, "after"))) {
		struct fd_uuid u;
		if (!fd_uuid_parse(v, &u)) {
			fd_api_bad_param(resp, req, "after", "after must be the id of a saga (the next member of a page)");
			return;
		}
		f.after = v;
	}
	json_t *page = NULL;
	enum fd_err err = fd_saga_list(req->ctx->pool, &req->ctx->sagas, &f, &page);
	if (err == FD_ERR_NOTFOUND) {
		fd_api_bad_param(resp, req, "after", "no saga has this id");
		return;
	}
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_resp_json_doc(resp, 200, page);
}

static void show(struct fd_req *req, struct fd_resp *resp, const char *id, unsigned status)
{
	json_t *doc = NULL;
	enum fd_err err = fd_saga_get(req->ctx->pool, &req->ctx->sagas, id, &doc);
	if (err == FD_ERR_NOTFOUND) {
		saga_not_found(resp, req, "no saga has this id");
		return;
	}
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_resp_json_doc(resp, status, doc);
}

void fd_api_get_saga(struct fd_req *req, struct fd_resp *resp)
{
	show(req, resp, req->params[0], 200);
}

void fd_api_aggregate_saga(struct fd_req *req, struct fd_resp *resp)
{
	const struct fd_aggregate_saga_route *r = req->route->arg;
	char key[FD_UUID_STRLEN + 200], id[37];
	enum fd_err err = FD_ERR_NOTFOUND;
	/* the correlation key is the aggregate id as its stream names it (UUIDs in lower case) */
	if (fd_api_canonical_id(r->type, req->params[0], key, sizeof key))
		err = fd_saga_find(req->ctx->pool, r->saga, key, id);
	if (err == FD_ERR_NOTFOUND) {
		saga_not_found(resp, req, r->missing);
		return;
	}
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	show(req, resp, id, 200);
}

static void operate(struct fd_req *req, struct fd_resp *resp, bool abort)
{
	char status[16] = "";
	const char *id = req->params[0];
	enum fd_err err = abort ? fd_saga_abort(req->ctx->pool, &req->ctx->sagas, id, "aborted by an operator", status)
				: fd_saga_retry(req->ctx->pool, &req->ctx->sagas, id, status);
	if (err == FD_ERR_NOTFOUND) {
		saga_not_found(resp, req, "no saga has this id");
		return;
	}
	if (err == FD_ERR_CONFLICT) {
		char detail[160];
		snprintf(detail, sizeof detail, "the saga is %s; %s", status,
			 abort ? "only a running saga can be aborted" : "only a failed saga can be retried");
		fd_problem(resp, req, 409, "saga-state", "Saga is not in a state that allows this", detail,
			   json_pack("{s:s}", "saga_status", status));
		return;
	}
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	show(req, resp, id, 202);
}

void fd_api_retry_saga(struct fd_req *req, struct fd_resp *resp)
{
	operate(req, resp, false);
}

void fd_api_abort_saga(struct fd_req *req, struct fd_resp *resp)
{
	operate(req, resp, true);
}
