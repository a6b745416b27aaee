/*
 * api_streams.c - the generic event-store endpoints:
 *   POST /streams/{stream}/events   append
 *   GET  /streams/{stream}/events   read one stream
 *   GET  /events                    the global feed
 *
 * Validation is strict (unknown fields are errors) and happens before any
 * database work; every failure names the offending field as a JSON pointer.
 */
#include "http/api.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/buf.h"
#include "factd/bus.h"
#include "factd/app.h"
#include "factd/events.h"
#include "factd/jsonspan.h"
#include "factd/log.h"
#include "http/input.h"
#include "http/problem.h"
#include "store/personal.h"
#include "factd/uuid.h"

#define FEED_DEFAULT_LIMIT 1000
#define STREAM_DEFAULT_LIMIT 100

static void bad_field(struct fd_resp *resp, const struct fd_req *req, const char *pointer, const char *detail)
{
	fd_problem(resp, req, 400, "invalid-field", "Invalid field", detail, json_pack("{s:s}", "field", pointer));
}

/* A decimal integer query parameter in [min, max]; absent -> dflt. */
static bool query_int(const struct fd_req *req, const char *name, long long min, long long max, long long dflt,
		      long long *out)
{
	const char *v = fd_req_query(req, name);
	if (!v) {
		*out = dflt;
		return true;
	}
	return fd_input_int(v, min, max, out);
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

/*
 * Streams of the app's aggregates (for the shop "order-<id>", "product-<sku>",
 * "payment-<id>"; fd_app_aggregate_of_stream) take events through this generic endpoint too (operators
 * repair with it, tests inject with it), but only events the aggregate itself
 * accepts in that place: an event its apply() refuses would make the
 * aggregate unloadable for good.  Such appends are checked on the aggregate's
 * state and appended at exactly the version checked.
 */
static bool expectation_holds(const struct fd_expected *e, int64_t version)
{
	switch (e->kind) {
	case FD_EXPECT_EXACT:
		return e->version == version;
	case FD_EXPECT_NO_STREAM:
		return version == 0;
	case FD_EXPECT_EXISTS:
		return version > 0;
	case FD_EXPECT_ANY:
		break;
	}
	return true;
}

/*
 * Fold the new events onto the aggregate's current state, each upcast from
 * the schema version its metadata gives (1 without one) to the current
 * version of its type first.  FD_OK with *version the state's version and
 * *bad = n when all are accepted; otherwise *bad is the first refused event
 * and *too_new says whether its schema version is newer than the aggregate
 * knows.  FD_ERR_* when it cannot load (FD_ERR_SCHEMA: a stored event is
 * newer than the code).
 */
static enum fd_err check_on_aggregate(struct fd_req *req, const struct fd_aggregate_type *t, const char *id,
				      const struct fd_event_in *evs, json_t *const *metadata, size_t n,
				      int64_t *version, size_t *bad, bool *too_new)
{
	void *state = malloc(t->state_size);
	if (!state)
		return FD_ERR_NOMEM;
	enum fd_err err = fd_bus_load(req->ctx->bus, t, id, NULL, state, version);
	if (err == FD_ERR_DELETED) {
		/* a deleted stream starts again from nothing (no_stream, any, 0; fd_append decides) */
		t->release(state);
		t->init(state);
		*version = 0;
		err = FD_OK;
	}
	*bad = n;
	*too_new = false;
	for (size_t i = 0; !err && i < n; i++) {
		json_t *data = json_loads(evs[i].data_json, 0, NULL);
		if (!data) /* integers past 64 bits: the aggregate gets them as reals (and refuses them where it counts) */
			data = json_loads(evs[i].data_json, JSON_DECODE_INT_AS_REAL, NULL);
		const char *type = evs[i].type;
		int schema = 1;
		enum fd_err aerr = data ? fd_event_schema_version_of(metadata[i], &schema) : FD_ERR_INVAL;
		if (!aerr)
			aerr = fd_event_schema_upcast(&t->events, req->ctx->services, &type, &schema, data);
		if (aerr == FD_ERR_SCHEMA)
			*too_new = true;
		else if (!aerr)
			aerr = t->apply(state, type, data);
		json_decref(data);
		if (aerr == FD_ERR_NOMEM)
			err = aerr;
		else if (aerr) {
			*bad = i;
			break;
		}
	}
	t->release(state);
	free(state);
	return err;
}

void fd_api_append(struct fd_req *req, struct fd_resp *resp)
{
	const char *stream = req->params[0];
	struct fd_append_body body = { 0 };
	struct fd_input_error ie;
	char **meta = NULL; /* the metadata text of each event, owned */
	char **sealed = NULL; /* the data text of each event with personal data, sealed; owned */
	struct fd_event_in *stored = NULL; /* the events as stored: evs, with sealed data where there is some */
	char detail[256];

	if (!fd_stream_name_valid(stream)) {
		fd_api_bad_param(resp, req, "stream", "stream names are 1-200 characters of A-Z a-z 0-9 _ . : -");
		goto done;
	}
	enum fd_err perr = fd_append_parse(req->body.data, req->body.len, req->ctx->cfg->max_append_events, &body,
					   &ie);
	if (perr == FD_ERR_INVAL) {
		fd_problem(resp, req, ie.status, ie.slug, ie.title, ie.detail,
			   ie.has_field ? json_pack("{s:s}", "field", ie.field) : NULL);
		goto done;
	}
	if (perr) {
		fd_problem_err(resp, req, perr, NULL, NULL);
		goto done;
	}
	struct fd_expected expected = body.expected;
	struct fd_event_in *evs = body.events;
	size_t n = body.n;
	if (!(meta = calloc(n, sizeof *meta))) {
		fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		if (!(meta[i] = event_metadata(req, body.metadata[i]))) {
			fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
			goto done;
		}
		evs[i].metadata_json = meta[i];
	}
	if (!(sealed = calloc(n, sizeof *sealed)) || !(stored = calloc(n, sizeof *stored))) {
		fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		stored[i] = evs[i];
		json_t *personal = json_object_get(body.metadata[i], FD_PERSONAL_KEY);
		if (!personal)
			continue;
		/* the client's bytes, parsed again: numbers as exact as jansson keeps them */
		json_t *data = json_loads(evs[i].data_json, 0, NULL);
		if (!data)
			data = json_loads(evs[i].data_json, JSON_DECODE_INT_AS_REAL, NULL);
		enum fd_err serr = data ? fd_personal_seal(req->ctx->pool, personal, data) : FD_ERR_NOMEM;
		if (!serr && !(sealed[i] = json_dumps(data, JSON_COMPACT)))
			serr = FD_ERR_NOMEM;
		json_decref(data);
		if (serr) {
			char pointer[64];
			snprintf(pointer, sizeof pointer, "/events/%zu/metadata/" FD_PERSONAL_KEY, i);
			if (serr == FD_ERR_ERASED)
				snprintf(detail, sizeof detail, "subject %.160s was erased; no new personal data of it is stored",
					 json_string_value(json_object_get(personal, "subject")));
			else if (serr == FD_ERR_CONFLICT)
				serr = FD_ERR_INTERNAL; /* the master key does not match the database's (logged at start) */
			fd_problem_err(resp, req, serr, serr == FD_ERR_ERASED ? detail : NULL,
				       serr == FD_ERR_NOKEY || serr == FD_ERR_ERASED ? json_pack("{s:s}", "field", pointer)
										     : NULL);
			goto done;
		}
		stored[i].data_json = sealed[i];
	}

	struct fd_append_result res;
	enum fd_err err;
	const char *agg_id = NULL;
	const struct fd_aggregate_type *agg = req->ctx->bus ? fd_app_aggregate_of_stream(req->ctx->app, stream, &agg_id) : NULL;
	if (!agg) {
		err = fd_store_append(req->ctx->pool, stream, expected, stored, n, &res);
	} else {
		for (unsigned round = 0;; round++) {
			int64_t version = 0;
			size_t bad = n;
			bool too_new = false;
			err = check_on_aggregate(req, agg, agg_id, evs, body.metadata, n, &version, &bad, &too_new);
			if (err)
				break;
			bool mismatch = !expectation_holds(&expected, version);
			if (mismatch || bad < n) {
				/* a repeat of events already stored is still answered as one (no version can match) */
				bool ids = false;
				for (size_t i = 0; i < n; i++)
					ids = ids || evs[i].id_given;
				struct fd_expected never = { .kind = FD_EXPECT_EXACT, .version = INT64_MAX };
				err = ids ? fd_store_append(req->ctx->pool, stream, never, stored, n, &res) : FD_ERR_CONFLICT;
				if (!err && res.duplicate)
					break;
				if (err != FD_ERR_CONFLICT && err != FD_ERR_DUPLICATE)
					break;
				if (mismatch) {
					err = FD_ERR_CONFLICT;
					res.current_version = version;
					break;
				}
				char pointer[64];
				if (too_new) {
					snprintf(pointer, sizeof pointer, "/events/%zu/metadata/" FD_SCHEMA_VERSION_KEY, bad);
					snprintf(detail, sizeof detail,
						 "the %s aggregate knows %s events up to schema version %d; this server "
						 "cannot check newer ones",
						 agg->name, evs[bad].type, fd_event_schema_version(&agg->events, evs[bad].type));
					fd_problem_err(resp, req, FD_ERR_SCHEMA, detail, json_pack("{s:s}", "field", pointer));
					goto done;
				}
				snprintf(pointer, sizeof pointer, "/events/%zu", bad);
				snprintf(detail, sizeof detail,
					 "the %s aggregate of this stream does not accept a %s event with this data at version %"
					 PRId64 "; use its commands",
					 agg->name, evs[bad].type, version + (int64_t)bad + 1);
				fd_problem(resp, req, 422, "event-rejected", "Event rejected by the aggregate", detail,
					   json_pack("{s:s}", "field", pointer));
				goto done;
			}
			struct fd_expected at = { .kind = FD_EXPECT_EXACT, .version = version };
			err = fd_store_append(req->ctx->pool, stream, at, stored, n, &res);
			/* someone wrote between the check and the append: check again, unless the client pinned the version */
			if (err != FD_ERR_CONFLICT || expected.kind == FD_EXPECT_EXACT || round >= 4)
				break;
		}
	}
	if (err == FD_ERR_CONFLICT) {
		char want[32];
		if (expected.kind == FD_EXPECT_EXACT)
			snprintf(want, sizeof want, "version %" PRId64, expected.version);
		else
			snprintf(want, sizeof want, "%s", body.expected_name);
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
	if (meta)
		for (size_t i = 0; i < body.n; i++)
			free(meta[i]);
	free(meta);
	if (sealed)
		for (size_t i = 0; i < body.n; i++)
			free(sealed[i]);
	free(sealed);
	free(stored);
	fd_append_body_release(&body);
}

/* ---- ?upcast=true --------------------------------------------------------- */

bool fd_api_upcast_param(struct fd_req *req, struct fd_resp *resp, bool *out)
{
	const char *v = fd_req_query(req, "upcast");
	*out = v && strcmp(v, "true") == 0;
	if (!v || *out || strcmp(v, "false") == 0)
		return true;
	fd_api_bad_param(resp, req, "upcast", "upcast must be true or false");
	return false;
}

/*
 * One rendered event, upcast into b when its type has moved on since it was
 * written, else copied as it is.  Its integers beyond 64 bits are read as
 * reals, but only an event that changes is printed again.
 */
static enum fd_err upcast_one(const struct fd_ctx *ctx, const char *text, size_t len, struct fd_buf *b)
{
	json_t *ev = json_loadb(text, len, 0, NULL);
	if (!ev)
		ev = json_loadb(text, len, JSON_DECODE_INT_AS_REAL, NULL);
	const char *stream = json_string_value(json_object_get(ev, "stream"));
	const char *stored_type = json_string_value(json_object_get(ev, "type"));
	json_t *data = json_object_get(ev, "data"), *md = json_object_get(ev, "metadata");
	enum fd_err err = FD_OK;
	if (!ev || !stream || !stored_type || !json_is_object(data)) {
		err = ev ? FD_ERR_INTERNAL : FD_ERR_NOMEM;
		goto done;
	}
	char category[FD_STREAM_MAX + 1];
	fd_stream_category(stream, category, sizeof category);
	const char *type = stored_type;
	int stored = 1, version = 1;
	if ((err = fd_event_schema_version_of(md, &stored)) ||
	    (err = fd_schemas_upcast(&ctx->schemas, category, md, &type, &version, data))) {
		if (err != FD_ERR_NOMEM && err != FD_ERR_SCHEMA) {
			fd_log_fields(FD_LOG_ERROR, "event does not upcast",
				      json_pack("{s:s, s:O?, s:s}", "stream", stream, "version", json_object_get(ev, "version"),
						"type", stored_type));
			err = FD_ERR_INTERNAL;
		}
		goto done;
	}
	if (version == stored && strcmp(type, stored_type) == 0) {
		err = fd_buf_append(b, text, len);
		goto done;
	}
	char *out = NULL;
	if (json_object_set_new(ev, "type", json_string(type)) != 0 || !json_is_object(md) ||
	    json_object_set_new(md, FD_SCHEMA_VERSION_KEY, json_integer(version)) != 0 ||
	    !(out = json_dumps(ev, JSON_COMPACT))) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	err = fd_buf_append(b, out, strlen(out));
	free(out);
done:
	json_decref(ev);
	return err;
}

enum fd_err fd_api_upcast_events(const struct fd_ctx *ctx, const char *events_json, char **out)
{
	struct fd_buf b = FD_BUF_INIT;
	size_t len = strlen(events_json), pos = 0, i = 0;
	struct fd_span whole = { 0, len }, sp;
	enum fd_err err = fd_buf_append(&b, "[", 1);
	while (!err && fd_json_next_element(events_json, len, whole, &pos, &sp)) {
		if (i++ > 0)
			err = fd_buf_append(&b, ",", 1);
		if (!err)
			err = upcast_one(ctx, events_json + sp.start, sp.end - sp.start, &b);
	}
	if (!err)
		err = fd_buf_append(&b, "]", 1);
	if (!err && !(*out = fd_buf_detach(&b)))
		err = FD_ERR_NOMEM;
	fd_buf_release(&b);
	return err;
}

/* Replace *events_json by its upcast form; false after answering the problem. */
static bool upcast_page(struct fd_req *req, struct fd_resp *resp, char **events_json)
{
	char *up = NULL;
	enum fd_err err = fd_api_upcast_events(req->ctx, *events_json, &up);
	if (err) {
		fd_problem_err(resp, req, err,
			       err == FD_ERR_SCHEMA ? "an event of this page was written with a newer schema version of "
						      "its type than this server knows; read it without upcast=true"
						    : NULL,
			       NULL);
		return false;
	}
	free(*events_json);
	*events_json = up;
	return true;
}

void fd_api_read_stream(struct fd_req *req, struct fd_resp *resp)
{
	const char *stream = req->params[0];
	if (!fd_stream_name_valid(stream)) {
		fd_api_bad_param(resp, req, "stream", "stream names are 1-200 characters of A-Z a-z 0-9 _ . : -");
		return;
	}
	fd_api_stream_page(req, resp, stream);
}

void fd_api_stream_page(struct fd_req *req, struct fd_resp *resp, const char *stream)
{
	long long from, limit;
	if (!query_int(req, "from_version", 1, INT64_MAX, 1, &from)) {
		fd_api_bad_param(resp, req, "from_version", "from_version must be an integer >= 1");
		return;
	}
	unsigned max = req->ctx->cfg->max_read_limit;
	if (!query_int(req, "limit", 1, max, STREAM_DEFAULT_LIMIT < max ? STREAM_DEFAULT_LIMIT : max, &limit)) {
		char detail[64];
		snprintf(detail, sizeof detail, "limit must be an integer in 1..%u", max);
		fd_api_bad_param(resp, req, "limit", detail);
		return;
	}
	bool upcast;
	if (!fd_api_upcast_param(req, resp, &upcast))
		return;
	struct fd_read_need need = { 0 };
	if (!fd_req_min_position(req, resp, &need))
		return;
	struct fd_stream_page page = { 0 };
	enum fd_err err = FD_OK;
	for (struct fd_pool *pool = fd_req_read_pool(req, &need); pool; pool = fd_req_read_retry(req, err))
		err = fd_store_read_stream(pool, stream, from, (unsigned)limit, &page);
	if (err == FD_ERR_NOTFOUND) {
		fd_problem(resp, req, 404, "not-found", "Stream not found", "no events were ever appended to this stream",
			   NULL);
		return;
	}
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	if (upcast && !upcast_page(req, resp, &page.events_json)) {
		free(page.events_json);
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

bool fd_api_feed_filter_parse(struct fd_req *req, struct fd_resp *resp, struct fd_api_feed_filter *f)
{
	memset(f, 0, sizeof *f);
	const char *cat = fd_req_query(req, "category");
	if (cat) {
		if (!*cat || !fd_stream_name_valid(cat) || strchr(cat, '-')) {
			fd_api_bad_param(resp, req, "category", "category must be 1-200 characters of A-Z a-z 0-9 _ . : (no -)");
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
		if (!fd_input_types(ts, &f->types_copy, f->types, &f->filter.ntypes)) {
			fd_api_bad_param(resp, req, "types", "types must be a comma-separated list of 1-64 event types");
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

bool fd_api_widen_types(const struct fd_schemas *set, struct fd_feed_filter *f, const char ***out)
{
	size_t cap = f->ntypes, n = 0;
	for (size_t i = 0; i < f->ntypes; i++)
		for (size_t c = 0; c < set->n; c++)
			cap += fd_event_schema_names(set->items[c].schema, f->types[i], NULL, 0);
	const char **t = calloc(cap ? cap : 1, sizeof *t);
	if (!t)
		return false;
	for (size_t i = 0; i < f->ntypes; i++) {
		t[n++] = f->types[i];
		for (size_t c = 0; c < set->n; c++) {
			if (f->category && strcmp(f->category, set->items[c].category) != 0)
				continue;
			const char *names[16];
			size_t k = fd_event_schema_names(set->items[c].schema, f->types[i], names, 16);
			for (size_t j = 1; j < k && j < 16 && n < cap; j++)
				t[n++] = names[j];
		}
	}
	f->types = t;
	f->ntypes = n;
	*out = t;
	return true;
}

void fd_api_read_feed(struct fd_req *req, struct fd_resp *resp)
{
	struct fd_cursor after = { 0, 0 };
	const char *a = fd_req_query(req, "after");
	if (a && !fd_cursor_parse(a, &after)) {
		fd_api_bad_param(resp, req, "after", "after must be a cursor from a previous response (\"<tx>-<seq>\") or 0");
		return;
	}
	unsigned max = req->ctx->cfg->max_read_limit;
	long long limit;
	if (!query_int(req, "limit", 1, max, FEED_DEFAULT_LIMIT < max ? FEED_DEFAULT_LIMIT : max, &limit)) {
		char detail[64];
		snprintf(detail, sizeof detail, "limit must be an integer in 1..%u", max);
		fd_api_bad_param(resp, req, "limit", detail);
		return;
	}
	struct fd_read_need need = { 0 };
	if (!fd_req_min_position(req, resp, &need))
		return;
	struct fd_api_feed_filter f;
	if (!fd_api_feed_filter_parse(req, resp, &f)) {
		fd_api_feed_filter_release(&f);
		return;
	}
	bool upcast;
	if (!fd_api_upcast_param(req, resp, &upcast)) {
		fd_api_feed_filter_release(&f);
		return;
	}
	/* Upcast, ?types= names current types: it also reads the names their events were stored under. */
	const char **wide = NULL;
	struct fd_feed_filter filter = f.filter;
	if (upcast && filter.ntypes && !fd_api_widen_types(&req->ctx->schemas, &filter, &wide)) {
		fd_api_feed_filter_release(&f);
		fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
		return;
	}
	struct fd_feed_page page = { 0 };
	enum fd_err err = FD_OK;
	for (struct fd_pool *pool = fd_req_read_pool(req, &need); pool; pool = fd_req_read_retry(req, err))
		err = fd_store_read_feed(pool, after, &filter, (unsigned)limit, &page);
	fd_api_feed_filter_release(&f);
	free(wide);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	if (upcast && !upcast_page(req, resp, &page.events_json)) {
		free(page.events_json);
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
