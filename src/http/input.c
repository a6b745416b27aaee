/*
 * input.c - pure parsers for query parameters, request headers and the
 * append body (input.h).  They see untrusted bytes, so each
 * has a libFuzzer harness in fuzz/.
 *
 * Threading: no state; safe from any thread.
 */
#include "http/input.h"

#include "factd/schema.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/jsonspan.h"
#include "factd/uuid.h"
#include "store/personal.h"

#define TYPE_MAX_CHARS 200
#define IDEMPOTENCY_KEY_MAX 255

bool fd_input_int(const char *v, long long min, long long max, long long *out)
{
	if (!v || !*v || !((*v >= '0' && *v <= '9') || *v == '-'))
		return false;
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (errno || *end || n < min || n > max)
		return false;
	*out = n;
	return true;
}

bool fd_input_limit(const char *v, unsigned max, unsigned *out)
{
	if (!v || !(*v >= '0' && *v <= '9'))
		return false;
	char *end;
	errno = 0;
	unsigned long long n = strtoull(v, &end, 10);
	if (n < 1 || n > max || errno || *end)
		return false;
	*out = (unsigned)n;
	return true;
}

bool fd_input_version(const char *v, int64_t *out)
{
	if (!v || !(*v >= '0' && *v <= '9'))
		return false;
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (n < 1 || errno || *end)
		return false;
	*out = n;
	return true;
}

bool fd_input_if_match(const char *s, int64_t *out)
{
	if (!s)
		return false;
	if (strncmp(s, "W/", 2) == 0)
		s += 2;
	size_t n = strlen(s);
	if (n < 3 || s[0] != '"' || s[n - 1] != '"' || n > 21)
		return false;
	int64_t v = 0;
	for (size_t i = 1; i < n - 1; i++) {
		if (s[i] < '0' || s[i] > '9' || v > (INT64_MAX - (s[i] - '0')) / 10)
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

bool fd_input_idempotency_key_valid(const char *k)
{
	size_t n = 0;
	if (!k)
		return false;
	for (; k[n]; n++)
		if ((unsigned char)k[n] < 0x21 || (unsigned char)k[n] > 0x7e || n >= IDEMPOTENCY_KEY_MAX)
			return false;
	return n > 0;
}

bool fd_input_types(const char *s, char **copy, const char *types[FD_INPUT_MAX_TYPES], size_t *n)
{
	*n = 0;
	*copy = s ? strdup(s) : NULL;
	if (!*copy)
		return false;
	char *save = NULL;
	for (char *t = strtok_r(*copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (*n >= FD_INPUT_MAX_TYPES || strlen(t) > TYPE_MAX_CHARS * 4 || !fd_utf8_valid(t, strlen(t)))
			return false;
		types[(*n)++] = t;
	}
	return *n > 0 && s[strlen(s) - 1] != ',' && s[0] != ',' && !strstr(s, ",,");
}

/* ---- the append body ------------------------------------------------------ */

static size_t utf8_chars(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += ((unsigned char)*s & 0xC0) != 0x80;
	return n;
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

void fd_input_refuse(struct fd_input_error *e, unsigned status, const char *slug, const char *title,
		     const char *field, const char *detail)
{
	e->status = status;
	e->slug = slug;
	e->title = title;
	e->has_field = field != NULL;
	snprintf(e->field, sizeof e->field, "%s", field ? field : "");
	snprintf(e->detail, sizeof e->detail, "%s", detail);
}

void fd_input_bad_field(struct fd_input_error *e, const char *field, const char *detail)
{
	fd_input_refuse(e, 400, "invalid-field", "Invalid field", field, detail);
}

json_t *fd_input_object(const char *body, size_t len, size_t flags, const char *const *allowed, size_t nallowed,
			struct fd_input_error *e)
{
	char detail[256];
	memset(e, 0, sizeof *e);
	if (!body)
		body = "";
	/* jansson drops a raw NUL that follows a number or a literal ("1\0,"), and
	 * then what a parser locates in the text would not be what it read; JSON never has one. */
	const char *nul = memchr(body, '\0', len);
	if (nul) {
		snprintf(detail, sizeof detail, "malformed JSON: a NUL byte at offset %zu", (size_t)(nul - body));
		fd_input_refuse(e, 400, "invalid-json", "Malformed JSON", NULL, detail);
		return NULL;
	}
	json_error_t jerr;
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | flags, &jerr);
	if (!root) {
		snprintf(detail, sizeof detail, "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column,
			 jerr.text);
		fd_input_refuse(e, 400, "invalid-json", "Malformed JSON", NULL, detail);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		fd_input_bad_field(e, "", "the body must be a JSON object");
		return NULL;
	}
	const char *extra = unknown_key(root, allowed, nallowed);
	if (extra) {
		snprintf(detail, sizeof detail, "unknown field \"%.64s\"", extra);
		fd_input_bad_field(e, "/", detail);
		json_decref(root);
		return NULL;
	}
	return root;
}

void fd_append_body_release(struct fd_append_body *b)
{
	if (b->events)
		for (size_t i = 0; i < b->n; i++)
			free((char *)b->events[i].data_json);
	free(b->events);
	free(b->metadata);
	json_decref(b->root);
	memset(b, 0, sizeof *b);
}

enum fd_err fd_append_parse(const char *body, size_t len, unsigned max_events, struct fd_append_body *out,
			    struct fd_input_error *e)
{
	struct fd_append_body b = { 0 };
	enum fd_err rc = FD_ERR_INVAL;
	char ptr[64], detail[256];

	memset(out, 0, sizeof *out);
	if (!body)
		body = "";
	/* Integers as reals: event data goes to PostgreSQL as the client's own bytes, so
	 * jansson's 64-bit integer limit must not refuse numbers jsonb keeps exactly. */
	b.root = fd_input_object(body, len, JSON_DECODE_INT_AS_REAL, append_keys, 2, e);
	if (!b.root)
		goto done;

	json_t *ev = json_object_get(b.root, "expected_version");
	struct fd_span whole = { 0, len }, ev_span;
	if (json_is_number(ev) && fd_json_member(body, len, whole, "expected_version", &ev_span) &&
	    parse_version_text(body + ev_span.start, ev_span.end - ev_span.start, &b.expected)) {
		b.expected_name = NULL;
	} else if (json_is_string(ev) && fd_expected_parse_str(json_string_value(ev), &b.expected) &&
		   b.expected.kind != FD_EXPECT_EXACT) {
		b.expected_name = json_string_value(ev);
	} else {
		fd_input_bad_field(e, "/expected_version",
			  ev ? "expected_version must be an integer >= 0 or \"any\", \"no_stream\", \"exists\""
			     : "expected_version is required");
		goto done;
	}

	json_t *events = json_object_get(b.root, "events");
	if (!json_is_array(events) || json_array_size(events) == 0) {
		fd_input_bad_field(e, "/events", "events must be a non-empty array");
		goto done;
	}
	size_t n = json_array_size(events);
	if (n > max_events) {
		snprintf(detail, sizeof detail, "at most %u events per append", max_events);
		fd_input_refuse(e, 413, "too-many-events", "Too many events", "/events", detail);
		goto done;
	}

	struct fd_span events_span;
	if (!fd_json_member(body, len, whole, "events", &events_span)) {
		fd_input_refuse(e, 500, "internal", "Internal server error", NULL, "cannot locate events");
		goto done;
	}
	b.events = calloc(n, sizeof *b.events);
	b.metadata = calloc(n, sizeof *b.metadata);
	if (!b.events || !b.metadata) {
		rc = FD_ERR_NOMEM;
		goto done;
	}
	b.n = n;
	size_t pos = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *ej = json_array_get(events, i);
		struct fd_event_in *evi = &b.events[i];
		struct fd_span espan, dspan;
		if (!json_is_object(ej)) {
			snprintf(ptr, sizeof ptr, "/events/%zu", i);
			fd_input_bad_field(e, ptr, "each event must be an object");
			goto done;
		}
		const char *extra = unknown_key(ej, event_keys, 4);
		if (extra) {
			snprintf(ptr, sizeof ptr, "/events/%zu", i);
			snprintf(detail, sizeof detail, "unknown field \"%.64s\" in an event", extra);
			fd_input_bad_field(e, ptr, detail);
			goto done;
		}
		json_t *type = json_object_get(ej, "type");
		if (!json_is_string(type) || json_string_length(type) == 0 ||
		    strlen(json_string_value(type)) != json_string_length(type) ||
		    utf8_chars(json_string_value(type)) > TYPE_MAX_CHARS) {
			snprintf(ptr, sizeof ptr, "/events/%zu/type", i);
			fd_input_bad_field(e, ptr, "type must be a string of 1-200 characters");
			goto done;
		}
		if (fd_event_type_reserved(json_string_value(type))) {
			snprintf(ptr, sizeof ptr, "/events/%zu/type", i);
			fd_input_bad_field(e, ptr, "types starting with $ are reserved for the events factd records itself");
			goto done;
		}
		json_t *data = json_object_get(ej, "data");
		if (!json_is_object(data)) {
			snprintf(ptr, sizeof ptr, "/events/%zu/data", i);
			fd_input_bad_field(e, ptr, "data must be a JSON object");
			goto done;
		}
		json_t *meta = json_object_get(ej, "metadata");
		if (meta && !json_is_object(meta)) {
			snprintf(ptr, sizeof ptr, "/events/%zu/metadata", i);
			fd_input_bad_field(e, ptr, "metadata must be a JSON object");
			goto done;
		}
		/* the body is read with integers as reals: the version goes on as the integer it is */
		json_t *sv = meta ? json_object_get(meta, FD_SCHEMA_VERSION_KEY) : NULL;
		if (json_is_real(sv) && json_real_value(sv) >= 1 && json_real_value(sv) <= FD_SCHEMA_VERSION_MAX &&
		    json_real_value(sv) == (double)(int)json_real_value(sv) &&
		    json_object_set_new(meta, FD_SCHEMA_VERSION_KEY, json_integer((json_int_t)json_real_value(sv))) != 0) {
			rc = FD_ERR_NOMEM;
			goto done;
		}
		int schema_version;
		if (fd_event_schema_version_of(meta, &schema_version) != FD_OK) {
			snprintf(ptr, sizeof ptr, "/events/%zu/metadata/" FD_SCHEMA_VERSION_KEY, i);
			fd_input_bad_field(e, ptr, "metadata.schema_version is the version of the event's data: an integer in 1..32767");
			goto done;
		}
		json_t *personal = meta ? json_object_get(meta, FD_PERSONAL_KEY) : NULL;
		char where[40], pdetail[200], pptr[128];
		if (personal && !fd_personal_check(personal, data, where, sizeof where, pdetail, sizeof pdetail)) {
			snprintf(pptr, sizeof pptr, "/events/%zu/metadata/" FD_PERSONAL_KEY "%s", i, where);
			fd_input_bad_field(e, pptr, pdetail);
			goto done;
		}
		json_t *id = json_object_get(ej, "event_id");
		if (id) {
			if (!json_is_string(id) || !fd_uuid_parse(json_string_value(id), &evi->event_id)) {
				snprintf(ptr, sizeof ptr, "/events/%zu/event_id", i);
				fd_input_bad_field(e, ptr, "event_id must be a UUID (8-4-4-4-12 hex digits)");
				goto done;
			}
			for (size_t j = 0; j < i; j++)
				if (b.events[j].id_given && memcmp(&b.events[j].event_id, &evi->event_id, 16) == 0) {
					snprintf(ptr, sizeof ptr, "/events/%zu/event_id", i);
					fd_input_bad_field(e, ptr, "event_id repeats an earlier event of this request");
					goto done;
				}
			evi->id_given = true;
		} else if (fd_uuid_v7(&evi->event_id) != FD_OK) {
			rc = FD_ERR_IO;
			goto done;
		}
		if (!fd_json_next_element(body, len, events_span, &pos, &espan) ||
		    !fd_json_member(body, len, espan, "data", &dspan)) {
			fd_input_refuse(e, 500, "internal", "Internal server error", NULL, "cannot locate event data");
			goto done;
		}
		char *text = strndup(body + dspan.start, dspan.end - dspan.start);
		if (!text) {
			rc = FD_ERR_NOMEM;
			goto done;
		}
		evi->type = json_string_value(type);
		evi->data_json = text;
		b.metadata[i] = meta;
	}
	*out = b;
	memset(&b, 0, sizeof b);
	rc = FD_OK;
done:
	fd_append_body_release(&b);
	return rc;
}

/* ---- data lifecycle bodies ----------------------------------------------- */

/* Member `key` as an integer in [min, max]; absent is *out = 0 when optional. */
static bool int_member(json_t *root, const char *key, bool optional, json_int_t min, json_int_t max, json_int_t *out)
{
	json_t *v = json_object_get(root, key);
	*out = 0;
	if (!v || json_is_null(v))
		return optional;
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return false;
	*out = json_integer_value(v);
	return true;
}

static const char *const truncate_keys[] = { "before_version" };

enum fd_err fd_truncate_parse(const char *body, size_t len, int64_t *before, struct fd_input_error *e)
{
	*before = 0;
	json_t *root = fd_input_object(body, len, 0, truncate_keys, 1, e);
	if (!root)
		return FD_ERR_INVAL;
	json_int_t v;
	enum fd_err err = FD_OK;
	if (!int_member(root, "before_version", false, 1, INT64_MAX - 1, &v)) {
		fd_input_bad_field(e, "/before_version", "before_version is required: an integer >= 1");
		err = FD_ERR_INVAL;
	} else {
		*before = v;
	}
	json_decref(root);
	return err;
}

static const char *const retention_keys[] = { "max_age_days", "max_count_per_stream" };

enum fd_err fd_retention_parse(const char *body, size_t len, int *max_age_days, int64_t *max_count,
			       struct fd_input_error *e)
{
	*max_age_days = 0;
	*max_count = 0;
	json_t *root = fd_input_object(body, len, 0, retention_keys, 2, e);
	if (!root)
		return FD_ERR_INVAL;
	json_int_t age, count;
	enum fd_err err = FD_ERR_INVAL;
	if (!int_member(root, "max_age_days", true, 1, FD_RETENTION_MAX_AGE_DAYS, &age)) {
		fd_input_bad_field(e, "/max_age_days", "max_age_days must be an integer in 1..36500");
	} else if (!int_member(root, "max_count_per_stream", true, 1, INT64_MAX, &count)) {
		fd_input_bad_field(e, "/max_count_per_stream", "max_count_per_stream must be an integer >= 1");
	} else if (age == 0 && count == 0) {
		fd_input_bad_field(e, "/", "give max_age_days, max_count_per_stream or both");
	} else {
		*max_age_days = (int)age;
		*max_count = count;
		err = FD_OK;
	}
	json_decref(root);
	return err;
}
