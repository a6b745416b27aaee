/*
 * problem.c - problem+json bodies and the error-to-status table.
 * Thread-safe: pure functions over const tables.
 */
#include "http/problem.h"

#include <stdlib.h>
#include <string.h>

struct err_row {
	unsigned status;
	const char *slug;
	const char *title;
	const char *detail; /* used when the caller has nothing more specific */
};

static const struct err_row err_table[] = {
	[FD_OK] = { 200, "ok", "OK", "OK" },
	[FD_ERR_NOMEM] = { 500, "internal", "Internal server error", "the server ran out of memory" },
	[FD_ERR_INVAL] = { 400, "invalid-field", "Invalid request", "the request is not valid" },
	[FD_ERR_NOTFOUND] = { 404, "not-found", "Not found", "nothing exists at this address" },
	[FD_ERR_CONFLICT] = { 409, "wrong-version", "Wrong expected version", "the expected version did not match" },
	[FD_ERR_DUPLICATE] = { 409, "duplicate-event-id", "Event id already used", "an event id is already stored elsewhere" },
	[FD_ERR_RETRY] = { 503, "database-busy", "Database busy, try again", "the database stayed busy through every retry; try again" },
	[FD_ERR_DB] = { 500, "internal", "Internal server error", "the database reported an unexpected error" },
	[FD_ERR_UNAVAILABLE] = { 503, "database-unavailable", "Database unavailable", "the database cannot be reached; try again shortly" },
	[FD_ERR_TOOLARGE] = { 413, "body-too-large", "Request too large", "the request exceeds a configured limit" },
	[FD_ERR_IO] = { 500, "internal", "Internal server error", "an operating-system call failed" },
	[FD_ERR_INTERNAL] = { 500, "internal", "Internal server error", "an internal invariant did not hold" },
	[FD_ERR_REJECTED] = { 409, "command-refused", "Command refused", "the command is not allowed in the current state" },
	[FD_ERR_PRECONDITION] = { 412, "precondition-failed", "Version precondition failed", "the resource changed since the version in If-Match" },
	[FD_ERR_IDEMPOTENCY] = { 422, "idempotency-key-reused", "Idempotency key reused with a different request", "this Idempotency-Key was first used with a different request" },
	[FD_ERR_NOKEY] = { 422, "master-key-missing", "Personal data cannot be stored or read", "events declare personal data, which is stored encrypted, and this server has no master key (FACTD_MASTER_KEY_FILE)" },
	[FD_ERR_ERASED] = { 409, "subject-erased", "Data subject erased", "the data subject of this personal data was erased; no new personal data of it is stored" },
	[FD_ERR_SCHEMA] = { 409, "schema-too-new", "Event schema too new", "an event was written with a newer schema version of its type than this server knows; it must run the newer code" },
	[FD_ERR_DELETED] = { 404, "stream-deleted", "Stream deleted", "the stream was deleted; an append with no_stream or any starts it again" },
	[FD_ERR_GONE] = { 410, "stream-tombstoned", "Stream deleted for good", "the stream was deleted for good; its name cannot be used again" },
};

static const struct err_row *row_for(enum fd_err err)
{
	if ((unsigned)err < sizeof err_table / sizeof err_table[0] && err_table[err].slug)
		return &err_table[err];
	return &err_table[FD_ERR_INTERNAL];
}

unsigned fd_problem_status(enum fd_err err)
{
	return row_for(err)->status;
}

void fd_problem(struct fd_resp *resp, const struct fd_req *req, unsigned status, const char *slug,
		const char *title, const char *detail, json_t *extra)
{
	char type[128];
	snprintf(type, sizeof type, "%s%s", FD_PROBLEM_BASE, slug);
	json_t *doc = json_object();
	if (doc) {
		json_object_set_new(doc, "type", json_string(type));
		json_object_set_new(doc, "title", json_string(title));
		json_object_set_new(doc, "status", json_integer(status));
		if (detail)
			json_object_set_new(doc, "detail", json_string(detail));
		if (req && req->request_id[0])
			json_object_set_new(doc, "request_id", json_string(req->request_id));
		if (extra)
			json_object_update_missing(doc, extra);
	}
	json_decref(extra);
	fd_resp_json_doc(resp, status, doc);
	resp->content_type = "application/problem+json";
	if (status == 503)
		fd_resp_header(resp, "Retry-After", "1");
}

void fd_problem_err(struct fd_resp *resp, const struct fd_req *req, enum fd_err err, const char *detail,
		    json_t *extra)
{
	const struct err_row *r = row_for(err);
	fd_problem(resp, req, r->status, r->slug, r->title, detail ? detail : r->detail, extra);
}
