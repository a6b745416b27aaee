/*
 * aggregate.c - the aggregate framework's shared parts: command lookup, id
 * rules, decision helpers and strict payload field readers.
 *
 * Pure; thread-safe (no state beyond the arguments).
 */
#include "factd/aggregate.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define ID_MAX FD_AGGREGATE_ID_MAX

int fd_aggregate_snapshot_schema(const struct fd_aggregate_type *t)
{
	return t->schema_version + fd_event_schema_weight(&t->events);
}

const struct fd_command_type *fd_aggregate_command(const struct fd_aggregate_type *t, const char *name)
{
	if (!t || !name)
		return NULL;
	for (size_t i = 0; i < t->ncommands; i++)
		if (strcmp(t->commands[i].name, name) == 0)
			return &t->commands[i];
	return NULL;
}

static bool id_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
	       c == '.' || c == ':' || c == '-';
}

bool fd_aggregate_id_valid(const struct fd_aggregate_type *t, const char *id)
{
	if (!t || !id)
		return false;
	if (t->id_is_uuid) {
		struct fd_uuid u;
		return fd_uuid_parse(id, &u);
	}
	size_t n = 0;
	for (; id[n]; n++)
		if (n >= ID_MAX || !id_char(id[n]))
			return false;
	return n > 0;
}

/* ---- decisions ------------------------------------------------------------ */

static void clear(struct fd_decision *d, enum fd_outcome outcome)
{
	memset(d, 0, sizeof *d);
	d->outcome = outcome;
}

void fd_decide_events(struct fd_decision *d, json_t *events)
{
	clear(d, FD_DECIDED);
	d->events = events;
}

enum fd_err fd_decide_event(struct fd_decision *d, const char *type, json_t *data)
{
	clear(d, FD_DECIDED);
	if (!type || !data) {
		json_decref(data);
		return FD_ERR_NOMEM;
	}
	json_t *events = json_pack("[{s:s, s:o}]", "type", type, "data", data);
	if (!events)
		return FD_ERR_NOMEM;
	d->events = events;
	return FD_OK;
}

void fd_decide_invalid(struct fd_decision *d, const char *field, const char *fmt, ...)
{
	clear(d, FD_INVALID);
	snprintf(d->slug, sizeof d->slug, "%s", "invalid-payload");
	snprintf(d->title, sizeof d->title, "%s", "Invalid command payload");
	snprintf(d->field, sizeof d->field, "%s", field ? field : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d->detail, sizeof d->detail, fmt, ap);
	va_end(ap);
}

void fd_decide_refuse(struct fd_decision *d, const char *slug, const char *title, const char *fmt, ...)
{
	clear(d, FD_REFUSED);
	snprintf(d->slug, sizeof d->slug, "%s", slug ? slug : "");
	snprintf(d->title, sizeof d->title, "%s", title ? title : "");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d->detail, sizeof d->detail, fmt, ap);
	va_end(ap);
}

void fd_decision_release(struct fd_decision *d)
{
	if (!d)
		return;
	json_decref(d->events);
	d->events = NULL;
}

/* ---- payload fields --------------------------------------------------------- */

/* "/" + key as an RFC 6901 JSON pointer ("~" -> "~0", "/" -> "~1"), truncated to fit. */
static void pointer_to(const char *key, char out[64])
{
	size_t o = 0;
	out[o++] = '/';
	for (const char *p = key; *p && o < 63; p++) {
		if (*p == '~' || *p == '/') {
			if (o + 2 > 63)
				break;
			out[o++] = '~';
			out[o++] = *p == '~' ? '0' : '1';
		} else {
			out[o++] = *p;
		}
	}
	out[o] = '\0';
}

/*
 * Count the code points of len bytes of UTF-8; false on any malformed,
 * overlong or surrogate sequence or a code point past U+10FFFF.
 */
static bool utf8_count(const unsigned char *s, size_t len, size_t *count)
{
	size_t n = 0;
	for (size_t i = 0; i < len; n++) {
		unsigned char c = s[i];
		size_t extra;
		uint32_t cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xC2 && c <= 0xDF) {
			extra = 1;
			cp = c & 0x1F;
		} else if (c >= 0xE0 && c <= 0xEF) {
			extra = 2;
			cp = c & 0x0F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			extra = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i <= extra)
			return false;
		for (size_t k = 1; k <= extra; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3F);
		}
		if ((extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += extra + 1;
	}
	*count = n;
	return true;
}

bool fd_payload_string(const json_t *payload, const char *key, size_t min_len, size_t max_len, bool optional,
		       const char **out, struct fd_decision *d)
{
	char ptr[64];
	pointer_to(key, ptr);
	const json_t *v = json_is_object(payload) ? json_object_get(payload, key) : NULL;
	if (!v) {
		if (optional) {
			*out = NULL;
			return true;
		}
		fd_decide_invalid(d, ptr, "%s is required", key);
		return false;
	}
	if (!json_is_string(v)) {
		fd_decide_invalid(d, ptr, "%s must be a string", key);
		return false;
	}
	const char *s = json_string_value(v);
	size_t bytes = json_string_length(v);
	if (strlen(s) != bytes) {
		fd_decide_invalid(d, ptr, "%s must not contain NUL characters", key);
		return false;
	}
	size_t chars;
	if (!utf8_count((const unsigned char *)s, bytes, &chars)) {
		fd_decide_invalid(d, ptr, "%s is not valid UTF-8", key);
		return false;
	}
	if (chars < min_len || chars > max_len) {
		fd_decide_invalid(d, ptr, "%s must be %zu to %zu characters long", key, min_len, max_len);
		return false;
	}
	*out = s;
	return true;
}

bool fd_payload_int(const json_t *payload, const char *key, int64_t min, int64_t max, bool optional,
		    int64_t *out, struct fd_decision *d)
{
	char ptr[64];
	pointer_to(key, ptr);
	const json_t *v = json_is_object(payload) ? json_object_get(payload, key) : NULL;
	if (!v) {
		if (optional)
			return true;
		fd_decide_invalid(d, ptr, "%s is required", key);
		return false;
	}
	if (!json_is_integer(v)) {
		fd_decide_invalid(d, ptr, "%s must be an integer", key);
		return false;
	}
	json_int_t n = json_integer_value(v);
	if (n < min || n > max) {
		fd_decide_invalid(d, ptr, "%s must be between %" PRId64 " and %" PRId64, key, min, max);
		return false;
	}
	*out = (int64_t)n;
	return true;
}

bool fd_payload_uuid(const json_t *payload, const char *key, char out[FD_UUID_STRLEN + 1], struct fd_decision *d)
{
	const char *s;
	struct fd_uuid u;
	if (!fd_payload_string(payload, key, 1, FD_UUID_STRLEN, false, &s, d))
		return false;
	if (!fd_uuid_parse(s, &u)) {
		char ptr[64];
		pointer_to(key, ptr);
		fd_decide_invalid(d, ptr, "%s must be a UUID", key);
		return false;
	}
	fd_uuid_format(&u, out);
	return true;
}

bool fd_payload_only(const json_t *payload, const char *const *allowed, size_t n, struct fd_decision *d)
{
	if (!json_is_object(payload)) {
		fd_decide_invalid(d, "", "the payload must be a JSON object");
		return false;
	}
	const char *key;
	const json_t *value;
	json_object_foreach((json_t *)payload, key, value) {
		bool known = false;
		for (size_t i = 0; i < n && !known; i++)
			known = strcmp(key, allowed[i]) == 0;
		if (!known) {
			char ptr[64];
			pointer_to(key, ptr);
			fd_decide_invalid(d, ptr, "unknown field \"%.64s\"", key);
			return false;
		}
	}
	/* A key with an embedded NUL passes strcmp above but matches no json_object_get. */
	size_t present = 0;
	for (size_t i = 0; i < n; i++)
		present += json_object_get(payload, allowed[i]) != NULL;
	if (present != json_object_size(payload)) {
		fd_decide_invalid(d, "", "the payload has a field name containing NUL");
		return false;
	}
	return true;
}
