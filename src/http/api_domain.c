/*
 * api_domain.c - an app's aggregates over REST, mapped onto the command bus.
 * Each command route is a row of the app's route table naming an aggregate
 * type and a command; this file turns HTTP into a command (payload, id,
 * If-Match, Idempotency-Key, request metadata) and the result into HTTP, and
 * serves an aggregate's state and history.
 */
#include "http/api.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "factd/bus.h"
#include "factd/hash.h"
#include "http/input.h"
#include "http/problem.h"
#include "factd/router.h"
#include "factd/timeutil.h"
#include "factd/uuid.h"

bool fd_api_canonical_id(const struct fd_aggregate_type *t, const char *given, char *out, size_t len)
{
	if (!fd_aggregate_id_valid(t, given))
		return false;
	struct fd_uuid u;
	if (t->id_is_uuid && fd_uuid_parse(given, &u) && len > FD_UUID_STRLEN)
		fd_uuid_format(&u, out);
	else
		snprintf(out, len, "%s", given);
	return true;
}

bool fd_api_if_match(const char *header, int64_t *out)
{
	return fd_input_if_match(header, out);
}

void fd_api_set_etag(struct fd_resp *resp, int64_t version)
{
	char etag[32];
	snprintf(etag, sizeof etag, "\"%" PRId64 "\"", version);
	fd_resp_header(resp, "ETag", etag);
}

static const char *caller_of(const struct fd_req *req)
{
	return req->caller[0] ? req->caller : "anonymous";
}

void fd_api_cmd_meta(const struct fd_req *req, struct fd_cmd_meta *meta)
{
	const char *corr = fd_req_header(req, "X-Correlation-Id");
	const char *cause = fd_req_header(req, "X-Causation-Id");
	*meta = (struct fd_cmd_meta){ .request_id = req->request_id, .caller = caller_of(req) };
	meta->correlation_id = fd_request_id_valid(corr) ? corr : req->request_id;
	meta->causation_id = fd_request_id_valid(cause) ? cause : NULL;
}

void fd_api_command_problem(struct fd_req *req, struct fd_resp *resp, const struct fd_aggregate_type *t,
			    enum fd_err err, const struct fd_cmd_result *r)
{
	const struct fd_decision *d = &r->decision;
	switch (err) {
	case FD_ERR_INVAL:
		fd_problem(resp, req, 400, "invalid-field", "Invalid field", d->detail[0] ? d->detail : NULL,
			   json_pack("{s:s}", "field", d->field));
		return;
	case FD_ERR_REJECTED: {
		char missing_slug[64];
		snprintf(missing_slug, sizeof missing_slug, "%s-not-found", t->name);
		bool missing = strcmp(d->slug, missing_slug) == 0;
		fd_problem(resp, req, missing ? 404 : 409, d->slug, d->title, d->detail[0] ? d->detail : NULL, NULL);
		return;
	}
	case FD_ERR_PRECONDITION:
		fd_problem_err(resp, req, err, "the resource changed since the version in If-Match", NULL);
		return;
	case FD_ERR_CONFLICT:
		fd_problem(resp, req, 409, "concurrency-conflict", "Too much concurrent change",
			   "the aggregate kept changing while the command was retried; try again", NULL);
		return;
	case FD_ERR_IDEMPOTENCY:
		fd_problem_err(resp, req, err, "this Idempotency-Key was first used with a different request", NULL);
		return;
	case FD_ERR_DUPLICATE: /* only commands with an Idempotency-Key choose their event ids */
		fd_problem(resp, req, 409, "idempotency-key-conflict", "Idempotency key conflicts with stored events",
			   "events stored under the ids this Idempotency-Key stands for were not recorded by a command "
			   "with this key; send the command with another key",
			   NULL);
		return;
	default:
		fd_problem_err(resp, req, err, NULL, NULL);
	}
}

/* Parse the body as a JSON object; an empty body is {} unless required. */
static json_t *body_object(struct fd_req *req, struct fd_resp *resp, bool required)
{
	if (req->body.len == 0) {
		if (required) {
			fd_problem(resp, req, 400, "invalid-json", "Malformed JSON", "a JSON object body is required", NULL);
			return NULL;
		}
		return json_object();
	}
	const char *ct = fd_req_header(req, "Content-Type");
	if (!ct || strncasecmp(ct, "application/json", 16) != 0) {
		fd_problem(resp, req, 415, "unsupported-media-type", "Unsupported media type",
			   "the body must be application/json", NULL);
		return NULL;
	}
	/* jansson would skip a raw NUL after a number; JSON text never has one */
	const char *nul = memchr(req->body.data, '\0', req->body.len);
	if (nul) {
		char detail[96];
		snprintf(detail, sizeof detail, "malformed JSON: a NUL byte at offset %zu", (size_t)(nul - req->body.data));
		fd_problem(resp, req, 400, "invalid-json", "Malformed JSON", detail, NULL);
		return NULL;
	}
	json_error_t jerr;
	json_t *root = json_loadb(req->body.data, req->body.len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		char detail[256];
		snprintf(detail, sizeof detail, "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column,
			 jerr.text);
		fd_problem(resp, req, 400, "invalid-json", "Malformed JSON", detail, NULL);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		fd_problem(resp, req, 400, "invalid-field", "Invalid field", "the body must be a JSON object",
			   json_pack("{s:s}", "field", ""));
		return NULL;
	}
	return root;
}

/* ---- POST/DELETE commands: parse, run, answer ---------------------------------- */

/*
 * The command's metadata from the request's headers: correlation and
 * causation ids, Idempotency-Key (with the request's fingerprint in hash)
 * and If-Match.  False when a header is malformed: the problem is answered.
 */
static bool parse_command_meta(struct fd_req *req, struct fd_resp *resp, struct fd_cmd_meta *meta, char hash[65])
{
	*meta = (struct fd_cmd_meta){ .request_id = req->request_id, .caller = caller_of(req) };
	const char *corr = fd_req_header(req, "X-Correlation-Id");
	const char *cause = fd_req_header(req, "X-Causation-Id");
	meta->correlation_id = fd_request_id_valid(corr) ? corr : req->request_id;
	meta->causation_id = fd_request_id_valid(cause) ? cause : NULL;

	const char *key = fd_req_header(req, "Idempotency-Key");
	if (key) {
		if (!fd_input_idempotency_key_valid(key)) {
			fd_problem(resp, req, 400, "invalid-header", "Invalid header",
				   "Idempotency-Key must be 1-255 visible ASCII characters",
				   json_pack("{s:s}", "header", "Idempotency-Key"));
			return false;
		}
		struct fd_sha256 c;
		unsigned char digest[32];
		fd_sha256_init(&c);
		fd_sha256_update(&c, req->method, strlen(req->method));
		fd_sha256_update(&c, "\n", 1);
		fd_sha256_update(&c, req->path, strlen(req->path));
		fd_sha256_update(&c, "\n", 1);
		if (req->body.len)
			fd_sha256_update(&c, req->body.data, req->body.len);
		fd_sha256_final(&c, digest);
		for (int i = 0; i < 32; i++)
			snprintf(hash + 2 * i, 3, "%02x", digest[i]);
		meta->idempotency_key = key;
		meta->request_hash = hash;
	}
	const char *im = fd_req_header(req, "If-Match");
	if (im) {
		if (!fd_input_if_match(im, &meta->if_match)) {
			fd_problem(resp, req, 400, "invalid-header", "Invalid header",
				   "If-Match must be an ETag from a previous response, e.g. \"3\"",
				   json_pack("{s:s}", "header", "If-Match"));
			return false;
		}
		meta->has_if_match = true;
	}
	return true;
}

/*
 * The aggregate the command is for, into id: the path's id, or for a
 * creating command the payload's id field (taken out of the payload), else
 * one derived from the Idempotency-Key, else a new one.  A path parameter
 * the route names goes into the payload.  False when the id is malformed
 * or unknown: the problem is answered.
 */
static bool parse_command_target(struct fd_req *req, struct fd_resp *resp, const struct fd_command_route *cr,
				 const struct fd_cmd_meta *meta, json_t *payload, char *id, size_t len)
{
	const struct fd_aggregate_type *t = cr->type;
	if (!cr->creates) {
		if (!fd_api_canonical_id(t, req->params[0], id, len)) {
			char detail[96];
			snprintf(detail, sizeof detail, "no %s has this id", t->name);
			fd_problem(resp, req, 404, "not-found", "Not found", detail, NULL);
			return false;
		}
	} else if (json_object_get(payload, t->id_field)) {
		json_t *given = json_object_get(payload, t->id_field);
		if (!json_is_string(given) || !fd_api_canonical_id(t, json_string_value(given), id, len)) {
			char ptr[64], detail[128];
			snprintf(ptr, sizeof ptr, "/%s", t->id_field);
			snprintf(detail, sizeof detail, "%s must be %s", t->id_field,
				 t->id_is_uuid ? "a UUID" : "1-64 characters of A-Z a-z 0-9 _ . : -");
			fd_problem(resp, req, 400, "invalid-field", "Invalid field", detail, json_pack("{s:s}", "field", ptr));
			return false;
		}
		json_object_del(payload, t->id_field);
	} else {
		struct fd_uuid u;
		const char *key = meta->idempotency_key;
		if (key)
			fd_uuid_from_name("factd.aggregate-id", key, strlen(key), &u);
		else if (fd_uuid_v7(&u) != FD_OK) {
			fd_problem_err(resp, req, FD_ERR_IO, NULL, NULL);
			return false;
		}
		fd_uuid_format(&u, id);
	}
	if (cr->param_field && req->nparams > 1)
		json_object_set_new(payload, cr->param_field, json_string(req->params[1]));
	return true;
}

/* The answer to a command the bus recorded (or replayed): the route's status (else 201 or 200), ETag, Location, the replay header. */
static void answer_command(struct fd_req *req, struct fd_resp *resp, const struct fd_command_route *cr,
			   const char *id, const struct fd_cmd_result *res)
{
	const struct fd_aggregate_type *t = cr->type;
	char cursor[FD_CURSOR_STRLEN];
	fd_cursor_format(&res->position, cursor, sizeof cursor);
	json_t *out = json_object();
	if (out) {
		json_object_set_new(out, t->id_field, json_string(id));
		json_object_set_new(out, "version", json_integer(res->version));
		json_object_set_new(out, "position", json_string(cursor));
	}
	fd_resp_json_doc(resp, cr->status ? cr->status : cr->creates ? 201 : 200, out);
	fd_api_set_etag(resp, res->version);
	if (cr->creates) {
		char loc[FD_AGGREGATE_ID_MAX + 256];
		/* the collection the command was posted to, then the new id */
		snprintf(loc, sizeof loc, "%s/%s", req->route->pattern, id);
		fd_resp_header(resp, "Location", loc);
	}
	if (res->replayed)
		fd_resp_header(resp, "Idempotent-Replayed", "true");
}

void fd_api_command(struct fd_req *req, struct fd_resp *resp)
{
	const struct fd_command_route *cr = req->route->arg;
	struct fd_cmd_result res = { 0 };
	struct fd_cmd_meta meta;
	char id[FD_AGGREGATE_ID_MAX + 1];
	char hash[65];
	json_t *payload = body_object(req, resp, req->route->json_body);
	if (!payload)
		return;
	if (parse_command_meta(req, resp, &meta, hash) &&
	    parse_command_target(req, resp, cr, &meta, payload, id, sizeof id)) {
		enum fd_err err = cr->complete ? cr->complete(payload, req->ctx->services) : FD_OK;
		if (!err)
			err = fd_bus_send(req->ctx->bus, cr->type, id, cr->command, payload, &meta, &res);
		if (err)
			fd_api_command_problem(req, resp, cr->type, err, &res);
		else
			answer_command(req, resp, cr, id, &res);
	}
	fd_cmd_result_release(&res);
	json_decref(payload);
}

void fd_api_get_aggregate(struct fd_req *req, struct fd_resp *resp)
{
	const struct fd_aggregate_type *t = req->route->arg;
	char id[FD_AGGREGATE_ID_MAX + 1];
	struct fd_load_target target = { 0 };
	const char *qv = fd_req_query(req, "version"), *qat = fd_req_query(req, "at");
	char detail[96];
	snprintf(detail, sizeof detail, "no %s has this id", t->name);
	if (!fd_api_canonical_id(t, req->params[0], id, sizeof id)) {
		fd_problem(resp, req, 404, "not-found", "Not found", detail, NULL);
		return;
	}
	if (qv && qat) {
		fd_api_bad_param(resp, req, "version", "give either version or at, not both");
		return;
	}
	if (qv) {
		if (!fd_input_version(qv, &target.version)) {
			fd_api_bad_param(resp, req, "version", "version must be an integer >= 1");
			return;
		}
	}
	if (qat) {
		if (!fd_time_parse_rfc3339(qat, &target.unix_us)) {
			fd_api_bad_param(resp, req, "at", "at must be an RFC 3339 timestamp, e.g. 2026-01-02T03:04:05Z");
			return;
		}
		target.at_time = true;
	}
	/* A replica serves it once it has the asked version (or ?min_position=), else the primary. */
	char stream[FD_STREAM_MAX + 1];
	fd_bus_stream_name(t, id, stream, sizeof stream);
	struct fd_read_need need = { .stream = stream, .min_version = qv ? target.version : 0 };
	if (!fd_req_min_position(req, resp, &need))
		return;
	void *state = malloc(t->state_size);
	if (!state) {
		fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
		return;
	}
	int64_t version = 0;
	json_t *erased = NULL;
	enum fd_err err = FD_OK;
	for (target.pool = fd_req_read_pool(req, &need); target.pool; target.pool = fd_req_read_retry(req, err)) {
		if (err) { /* a second round on the primary: load into a fresh state */
			t->release(state);
			json_decref(erased);
			erased = NULL;
			err = FD_OK;
		}
		err = fd_bus_load_ex(req->ctx->bus, t, id, &target, state, &version, &erased);
	}
	if (err == FD_ERR_NOTFOUND || (!err && (version == 0 || !t->exists(state)))) {
		if (err == FD_ERR_NOTFOUND)
			snprintf(detail, sizeof detail, "this %s has no version %s", t->name, qv);
		else if (qat)
			snprintf(detail, sizeof detail, "this %s did not exist at that time", t->name);
		fd_problem(resp, req, 404, "not-found", "Not found", detail, NULL);
	} else if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
	} else {
		json_t *view = t->view(state);
		json_t *out = json_object();
		if (out) {
			json_object_set_new(out, t->id_field, json_string(id));
			if (view)
				json_object_update(out, view);
			json_object_set_new(out, "version", json_integer(version));
			/* personal values of an erased subject: null in the view, their pointers listed */
			if (erased)
				json_object_set(out, "erased", erased);
		}
		json_decref(view);
		fd_resp_json_doc(resp, 200, out);
		fd_api_set_etag(resp, version);
	}
	json_decref(erased);
	t->release(state);
	free(state);
}

void fd_api_aggregate_events(struct fd_req *req, struct fd_resp *resp)
{
	const struct fd_aggregate_type *t = req->route->arg;
	char id[FD_AGGREGATE_ID_MAX + 1];
	if (!fd_api_canonical_id(t, req->params[0], id, sizeof id)) {
		fd_problem(resp, req, 404, "not-found", "Not found", "no such aggregate", NULL);
		return;
	}
	char stream[FD_STREAM_MAX + 1];
	fd_bus_stream_name(t, id, stream, sizeof stream);
	fd_api_stream_page(req, resp, stream);
}

