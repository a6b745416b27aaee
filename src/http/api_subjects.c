/*
 * api_subjects.c - data subjects and their erasure (store/personal.h):
 *   GET    /subjects/{subject}   {subject, erased, streams}
 *   DELETE /subjects/{subject}   erase: 204, and 204 again on a repeat
 *
 * Both are admin routes.  The subject id is the one events name in their
 * "personal" metadata (the shop's customer_id); it is not itself sealed.
 */
#include "http/api.h"

#include <stdio.h>

#include "factd/log.h"
#include "http/problem.h"
#include "store/personal.h"

static bool subject_param(struct fd_req *req, struct fd_resp *resp, const char **out)
{
	*out = req->params[0];
	if (fd_personal_subject_valid(*out))
		return true;
	fd_api_bad_param(resp, req, "subject", "a subject id is 1 to 200 characters of A-Z a-z 0-9 _ . : @ + -");
	return false;
}

void fd_api_get_subject(struct fd_req *req, struct fd_resp *resp)
{
	const char *subject;
	bool known = false, erased = false;
	json_t *streams = NULL;
	if (!subject_param(req, resp, &subject))
		return;
	enum fd_err err = fd_subject_status(req->ctx->pool, subject, &known, &erased, &streams);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	if (!known) {
		json_decref(streams);
		fd_problem(resp, req, 404, "subject-not-found", "Subject not found",
			   "no event declares personal data of this subject, and it was never erased", NULL);
		return;
	}
	fd_resp_json_doc(resp, 200, json_pack("{s:s, s:b, s:o}", "subject", subject, "erased", erased, "streams", streams));
}

void fd_api_erase_subject(struct fd_req *req, struct fd_resp *resp)
{
	const char *subject;
	struct fd_cursor last;
	if (!subject_param(req, resp, &subject))
		return;
	enum fd_err err = fd_subject_erase(req->ctx->pool, subject, req->request_id, &last);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	/* the subject id only: it is what the operator asked to erase by, not a value of the subject */
	fd_log_fields(FD_LOG_INFO, "data subject erased", json_pack("{s:s}", "request_id", req->request_id));
	if (last.tx) {
		char cursor[FD_CURSOR_STRLEN];
		fd_cursor_format(&last, cursor, sizeof cursor);
		/* where read models have applied the erasure: GET ...?min_position= of it */
		fd_resp_header(resp, "X-Position", cursor);
	}
	resp->status = 204;
}
