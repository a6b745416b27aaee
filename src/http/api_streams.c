/*
 * api_streams.c - the generic event-store endpoints:
 *   POST /streams/{stream}/events   append
 *   GET  /streams/{stream}/events   read one stream
 *   GET  /events                    the global feed
 *
 * Validation is strict (unknown fields are errors) and happens before any
 * database work; every failure names the offending field as a JSON pointer.
 */
#include "factd/api.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/buf.h"
#include "factd/events.h"
#include "factd/jsonspan.h"
#include "factd/problem.h"
#include "factd/uuid.h"

#define TYPE_MAX_CHARS 200
#define FEED_DEFAULT_LIMIT 1000
#define STREAM_DEFAULT_LIMIT 100

static void bad_field(struct fd_resp *resp, const struct fd_req *req, const char *pointer, const char *detail)
{
	fd_problem(resp, req, 400, "invalid-field", "Invalid field", detail, json_pack("{s:s}", "field", pointer));
}

static void bad_param(struct fd_resp *resp, const struct fd_req *req, const char *name, const char *detail)
{
	fd_problem(resp, req, 400, "invalid-parameter", "Invalid parameter", detail,
		   json_pack("{s:s}", "parameter", name));
}

static size_t utf8_chars(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += ((unsigned char)*s & 0xC0) != 0x80;
	return n;
}

/* Parse a decimal integer query parameter in [min, max]; absent -> dflt. */
static bool query_int(const struct fd_req *req, const char *name, long long min, long long max, long long dflt,
		      long long *out)
{
	const char *v = fd_req_query(req, name);
	if (!v) {
		*out = dflt;
		return true;
	}
	if (!*v || !((*v >= '0' && *v <= '9') || *v == '-'))
		return false;
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (errno || *end || n < min || n > max)
		return false;
	*out = n;
	return true;
}

/* An exact expected version as written: decimal digits only, fitting int64. */
static bool parse_version_text(const char *s, size_t len, struct fd_expected *out)
{
	int64_t v = 0;
	if (len == 0 || len > 18)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	out->kind = FD_EXPECT_EXACT;
	out->version = v;
	return true;
}

static const char *const append_keys[] = { "expected_version", "events" };
static const char *const event_keys[] = { "event_id", "type", "data", "metadata" };

static const char *unknown_key(json_t *obj, const char *const *allowed, size_t n)
{
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v) {
		bool ok = false;
		for (size_t i = 0; i < n && !ok; i++)
			ok = strcmp(key, allowed[i]) == 0;
		if (!ok)
			return key;
	}
	return NULL;
}

/* Metadata for one event: the client's, plus request context it did not set. */
static char *event_metadata(const struct fd_req *req, json_t *given)
{
	json_t *m = given ? json_deep_copy(given) : json_object();
	if (!m)
		return NULL;
	const char *corr = fd_req_header(req, "X-Correlation-Id");
	const char *cause = fd_req_header(req, "X-Causation-Id");
	if (!json_object_get(m, "correlation_id"))
		json_object_set_new(m, "correlation_id", json_string(fd_request_id_valid(corr) ? corr : req->request_id));
	if (fd_request_id_valid(cause) && !json_object_get(m, "causation_id"))
		json_object_set_new(m, "causation_id", json_string(cause));
	if (!json_object_get(m, "request_id"))
		json_object_set_new(m, "request_id", json_string(req->request_id));
	char *text = json_dumps(m, JSON_COMPACT);
	json_decref(m);
	return text;
}

void fd_api_append(struct fd_req *req, struct fd_resp *resp)
{
	const char *stream = req->params[0];
	json_t *root = NULL;
	struct fd_event_in *evs = NULL;
	char **owned = NULL; /* 2 strings per event: data, metadata */
	size_t n = 0;
	char ptr[64], detail[256];

	if (!fd_stream_name_valid(stream)) {
		bad_param(resp, req, "stream", "stream names are 1-200 characters of A-Z a-z 0-9 _ . : -");
		goto done;
	}
	const char *body = req->body.data ? req->body.data : "";
	json_error_t jerr;
	/* Integers as reals: event data goes to PostgreSQL as the client's own bytes, so
	 * jansson's 64-bit integer limit must not refuse numbers jsonb keeps exactly. */
	root = json_loadb(body, req->body.len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, &jerr);
	if (!root) {
		snprintf(detail, sizeof detail, "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column,
			 jerr.text);
		fd_problem(resp, req, 400, "invalid-json", "Malformed JSON", detail, NULL);
		goto done;
	}
	if (!json_is_object(root)) {
		bad_field(resp, req, "", "the body must be a JSON object");
		goto done;
	}
	const char *extra = unknown_key(root, append_keys, 2);
	if (extra) {
		snprintf(detail, sizeof detail, "unknown field \"%.64s\"", extra);
		bad_field(resp, req, "/", detail);
		goto done;
	}

	struct fd_expected expected;
	json_t *ev = json_object_get(root, "expected_version");
	struct fd_span whole = { 0, req->body.len }, ev_span;
	if (!(json_is_number(ev) && fd_json_member(body, req->body.len, whole, "expected_version", &ev_span) &&
	      parse_version_text(body + ev_span.start, ev_span.end - ev_span.start, &expected)) &&
	    !(json_is_string(ev) && fd_expected_parse_str(json_string_value(ev), &expected) &&
	      expected.kind != FD_EXPECT_EXACT)) {
		bad_field(resp, req, "/expected_version",
			  ev ? "expected_version must be an integer >= 0 or \"any\", \"no_stream\", \"exists\""
			     : "expected_version is required");
		goto done;
	}

	json_t *events = json_object_get(root, "events");
	if (!json_is_array(events) || json_array_size(events) == 0) {
		bad_field(resp, req, "/events", "events must be a non-empty array");
		goto done;
	}
	n = json_array_size(events);
	if (n > req->app->cfg->max_append_events) {
		snprintf(detail, sizeof detail, "at most %u events per append", req->app->cfg->max_append_events);
		fd_problem(resp, req, 413, "too-many-events", "Too many events", detail,
			   json_pack("{s:s}", "field", "/events"));
		goto done;
	}

	struct fd_span events_span;
	if (!fd_json_member(body, req->body.len, whole, "events", &events_span)) {
		fd_problem(resp, req, 500, "internal", "Internal server error", "cannot locate events", NULL);
		goto done;
	}
	evs = calloc(n, sizeof *evs);
	owned = calloc(2 * n, sizeof *owned);
	if (!evs || !owned) {
		fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
		goto done;
	}
	size_t pos = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(events, i);
		struct fd_span espan, dspan;
		if (!json_is_object(e)) {
			snprintf(ptr, sizeof ptr, "/events/%zu", i);
			bad_field(resp, req, ptr, "each event must be an object");
			goto done;
		}
		if ((extra = unknown_key(e, event_keys, 4))) {
			snprintf(ptr, sizeof ptr, "/events/%zu", i);
			snprintf(detail, sizeof detail, "unknown field \"%.64s\" in an event", extra);
			bad_field(resp, req, ptr, detail);
			goto done;
		}
		json_t *type = json_object_get(e, "type");
		if (!json_is_string(type) || json_string_length(type) == 0 ||
		    strlen(json_string_value(type)) != json_string_length(type) ||
		    utf8_chars(json_string_value(type)) > TYPE_MAX_CHARS) {
			snprintf(ptr, sizeof ptr, "/events/%zu/type", i);
			bad_field(resp, req, ptr, "type must be a string of 1-200 characters");
			goto done;
		}
		json_t *data = json_object_get(e, "data");
		if (!json_is_object(data)) {
			snprintf(ptr, sizeof ptr, "/events/%zu/data", i);
			bad_field(resp, req, ptr, "data must be a JSON object");
			goto done;
		}
		json_t *meta = json_object_get(e, "metadata");
		if (meta && !json_is_object(meta)) {
			snprintf(ptr, sizeof ptr, "/events/%zu/metadata", i);
			bad_field(resp, req, ptr, "metadata must be a JSON object");
			goto done;
		}
		json_t *id = json_object_get(e, "event_id");
		if (id) {
			if (!json_is_string(id) || !fd_uuid_parse(json_string_value(id), &evs[i].event_id)) {
				snprintf(ptr, sizeof ptr, "/events/%zu/event_id", i);
				bad_field(resp, req, ptr, "event_id must be a UUID (8-4-4-4-12 hex digits)");
				goto done;
			}
			for (size_t j = 0; j < i; j++)
				if (evs[j].id_given && memcmp(&evs[j].event_id, &evs[i].event_id, 16) == 0) {
					snprintf(ptr, sizeof ptr, "/events/%zu/event_id", i);
					bad_field(resp, req, ptr, "event_id repeats an earlier event of this request");
					goto done;
				}
			evs[i].id_given = true;
		} else if (fd_uuid_v7(&evs[i].event_id) != FD_OK) {
			fd_problem_err(resp, req, FD_ERR_IO, NULL, NULL);
			goto done;
		}
		if (!fd_json_next_element(body, req->body.len, events_span, &pos, &espan) ||
		    !fd_json_member(body, req->body.len, espan, "data", &dspan)) {
			fd_problem(resp, req, 500, "internal", "Internal server error", "cannot locate event data", NULL);
			goto done;
		}
		owned[2 * i] = strndup(body + dspan.start, dspan.end - dspan.start);
		owned[2 * i + 1] = event_metadata(req, meta);
		if (!owned[2 * i] || !owned[2 * i + 1]) {
			fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
			goto done;
		}
		evs[i].type = json_string_value(type);
		evs[i].data_json = owned[2 * i];
		evs[i].metadata_json = owned[2 * i + 1];
	}

	struct fd_append_result res;
	enum fd_err err = fd_store_append(req->app->pool, stream, expected, evs, n, &res);
	if (err == FD_ERR_CONFLICT) {
		char want[32];
		if (expected.kind == FD_EXPECT_EXACT)
			snprintf(want, sizeof want, "version %" PRId64, expected.version);
		else
			snprintf(want, sizeof want, "%s", json_string_value(ev));
		snprintf(detail, sizeof detail, "expected %s, but stream %s is at version %" PRId64, want, stream,
			 res.current_version);
		fd_problem_err(resp, req, err, detail, json_pack("{s:I}", "current_version", (json_int_t)res.current_version));
		goto done;
	}
	if (err == FD_ERR_DUPLICATE) {
		fd_problem_err(resp, req, err, "an event_id of this request is already stored at another position", NULL);
		goto done;
	}
	if (err == FD_ERR_INVAL) {
		bad_field(resp, req, "/events",
			  "the database refused a value of these events (for example a number beyond its numeric range)");
		goto done;
	}
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		goto done;
	}
	char cursor[FD_CURSOR_STRLEN];
	fd_cursor_format(&res.position, cursor, sizeof cursor);
	struct fd_buf out = FD_BUF_INIT;
	enum fd_err berr = fd_buf_append(&out, "{\"stream\":", 10);
	if (!berr)
		berr = fd_buf_append_json_str(&out, stream);
	if (!berr)
		berr = fd_buf_appendf(&out, ",\"first_version\":%" PRId64 ",\"last_version\":%" PRId64
				      ",\"position\":\"%s\"}", res.first_version, res.last_version, cursor);
	if (berr) {
		fd_buf_release(&out);
		fd_problem_err(resp, req, berr, NULL, NULL);
		goto done;
	}
	fd_resp_json(resp, res.duplicate ? 200 : 201, fd_buf_detach(&out));
	char loc[FD_STREAM_MAX + 64];
	snprintf(loc, sizeof loc, "/streams/%s/events?from_version=%" PRId64, stream, res.first_version);
	fd_resp_header(resp, "Location", loc);
done:
	if (owned)
		for (size_t i = 0; i < 2 * n; i++)
			free(owned[i]);
	free(owned);
	free(evs);
	json_decref(root);
}

void fd_api_read_stream(struct fd_req *req, struct fd_resp *resp)
{
	const char *stream = req->params[0];
	if (!fd_stream_name_valid(stream)) {
		bad_param(resp, req, "stream", "stream names are 1-200 characters of A-Z a-z 0-9 _ . : -");
		return;
	}
	fd_api_stream_page(req, resp, stream);
}

void fd_api_stream_page(struct fd_req *req, struct fd_resp *resp, const char *stream)
{
	long long from, limit;
	if (!query_int(req, "from_version", 1, INT64_MAX, 1, &from)) {
		bad_param(resp, req, "from_version", "from_version must be an integer >= 1");
		return;
	}
	unsigned max = req->app->cfg->max_read_limit;
	if (!query_int(req, "limit", 1, max, STREAM_DEFAULT_LIMIT < max ? STREAM_DEFAULT_LIMIT : max, &limit)) {
		char detail[64];
		snprintf(detail, sizeof detail, "limit must be an integer in 1..%u", max);
		bad_param(resp, req, "limit", detail);
		return;
	}
	struct fd_stream_page page = { 0 };
	enum fd_err err = fd_store_read_stream(req->app->pool, stream, from, (unsigned)limit, &page);
	if (err == FD_ERR_NOTFOUND) {
		fd_problem(resp, req, 404, "not-found", "Stream not found", "no events were ever appended to this stream",
			   NULL);
		return;
	}
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	struct fd_buf out = FD_BUF_INIT;
	enum fd_err berr = fd_buf_append(&out, "{\"stream\":", 10);
	if (!berr)
		berr = fd_buf_append_json_str(&out, stream);
	if (!berr)
		berr = fd_buf_appendf(&out, ",\"version\":%" PRId64 ",\"events\":", page.stream_version);
	if (!berr)
		berr = fd_buf_append(&out, page.events_json, strlen(page.events_json));
	if (!berr)
		berr = fd_buf_append(&out, "}", 1);
	free(page.events_json);
	if (berr) {
		fd_buf_release(&out);
		fd_problem_err(resp, req, berr, NULL, NULL);
		return;
	}
	char etag[32];
	snprintf(etag, sizeof etag, "\"%" PRId64 "\"", page.stream_version);
	fd_resp_json(resp, 200, fd_buf_detach(&out));
	fd_resp_header(resp, "ETag", etag);
}

/* Split "A,B,C" into at most FD_API_MAX_TYPES non-empty names (in a copy the caller frees). */
static bool parse_types(const char *s, char **copy, const char *types[], size_t *n)
{
	*n = 0;
	*copy = strdup(s);
	if (!*copy)
		return false;
	char *save = NULL;
	for (char *t = strtok_r(*copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (*n >= FD_API_MAX_TYPES || strlen(t) > TYPE_MAX_CHARS * 4 || !fd_utf8_valid(t, strlen(t)))
			return false;
		types[(*n)++] = t;
	}
	return *n > 0 && s[strlen(s) - 1] != ',' && s[0] != ',' && !strstr(s, ",,");
}

bool fd_api_feed_filter_parse(struct fd_req *req, struct fd_resp *resp, struct fd_api_feed_filter *f)
{
	memset(f, 0, sizeof *f);
	const char *cat = fd_req_query(req, "category");
	if (cat) {
		if (!*cat || !fd_stream_name_valid(cat) || strchr(cat, '-')) {
			bad_param(resp, req, "category", "category must be 1-200 characters of A-Z a-z 0-9 _ . : (no -)");
			return false;
		}
		if (!(f->category = strdup(cat))) {
			fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
			return false;
		}
		f->filter.category = f->category;
	}
	const char *ts = fd_req_query(req, "types");
	if (ts) {
		if (!parse_types(ts, &f->types_copy, f->types, &f->filter.ntypes)) {
			bad_param(resp, req, "types", "types must be a comma-separated list of 1-64 event types");
			return false;
		}
		f->filter.types = f->types;
	}
	return true;
}

void fd_api_feed_filter_release(struct fd_api_feed_filter *f)
{
	free(f->category);
	free(f->types_copy);
	memset(f, 0, sizeof *f);
}

void fd_api_read_feed(struct fd_req *req, struct fd_resp *resp)
{
	struct fd_cursor after = { 0, 0 };
	const char *a = fd_req_query(req, "after");
	if (a && !fd_cursor_parse(a, &after)) {
		bad_param(resp, req, "after", "after must be a cursor from a previous response (\"<tx>-<seq>\") or 0");
		return;
	}
	unsigned max = req->app->cfg->max_read_limit;
	long long limit;
	if (!query_int(req, "limit", 1, max, FEED_DEFAULT_LIMIT < max ? FEED_DEFAULT_LIMIT : max, &limit)) {
		char detail[64];
		snprintf(detail, sizeof detail, "limit must be an integer in 1..%u", max);
		bad_param(resp, req, "limit", detail);
		return;
	}
	struct fd_api_feed_filter f;
	if (!fd_api_feed_filter_parse(req, resp, &f)) {
		fd_api_feed_filter_release(&f);
		return;
	}
	struct fd_feed_page page = { 0 };
	enum fd_err err = fd_store_read_feed(req->app->pool, after, &f.filter, (unsigned)limit, &page);
	fd_api_feed_filter_release(&f);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	char next[FD_CURSOR_STRLEN];
	fd_cursor_format(&page.next, next, sizeof next);
	struct fd_buf out = FD_BUF_INIT;
	enum fd_err berr = fd_buf_append(&out, "{\"events\":", 10);
	if (!berr)
		berr = fd_buf_append(&out, page.events_json, strlen(page.events_json));
	if (!berr)
		berr = fd_buf_appendf(&out, ",\"next\":\"%s\"}", next);
	free(page.events_json);
	if (berr) {
		fd_buf_release(&out);
		fd_problem_err(resp, req, berr, NULL, NULL);
		return;
	}
	fd_resp_json(resp, 200, fd_buf_detach(&out));
}
