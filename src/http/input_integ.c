/*
 * input_integ.c - pure parsers of the consumer-group and webhook bodies
 * (input_integ.h).  Unknown members are refused; every failure names its
 * field as a JSON pointer.
 *
 * Threading: no state; safe from any thread.
 */
#include "http/input_integ.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TYPE_MAX 200

static bool name_chars(const char *s, size_t max, const char *extra)
{
	size_t n = 0;
	if (!s || !*s)
		return false;
	for (const char *p = s; *p; p++, n++) {
		char c = *p;
		if (n >= max)
			return false;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr(extra, c)))
			return false;
	}
	return true;
}

bool fd_integ_name_valid(const char *s)
{
	return name_chars(s, FD_INTEG_NAME_MAX, "_.-") && s[0] != '.';
}

bool fd_integ_consumer_valid(const char *s)
{
	return name_chars(s, FD_INTEG_CONSUMER_MAX, "_.:@-");
}

/* An optional integer member in [min, max]; *out keeps its default when absent.  False after refusing. */
static bool opt_uint(json_t *root, const char *name, unsigned min, unsigned max, unsigned *out,
		     struct fd_input_error *e)
{
	json_t *v = json_object_get(root, name);
	char field[64], detail[128];
	if (!v)
		return true;
	if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min || json_integer_value(v) > (json_int_t)max) {
		snprintf(field, sizeof field, "/%s", name);
		snprintf(detail, sizeof detail, "%s must be an integer in %u..%u", name, min, max);
		fd_input_bad_field(e, field, detail);
		return false;
	}
	*out = (unsigned)json_integer_value(v);
	return true;
}

/* A category: a stream name without '-'. */
static bool category_valid(const char *s)
{
	return fd_stream_name_valid(s) && !strchr(s, '-');
}

static bool type_valid(const char *s)
{
	size_t chars = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		chars += (*p & 0xC0) != 0x80;
	return chars >= 1 && chars <= TYPE_MAX;
}

/* An optional array of 1..64 distinct strings passing `valid`, into a NULL-terminated array. */
static bool opt_list(json_t *root, const char *name, bool (*valid)(const char *), const char *what,
		     const char ***out, size_t *n, struct fd_input_error *e)
{
	json_t *v = json_object_get(root, name);
	char field[64], detail[160];
	*out = NULL;
	*n = 0;
	if (!v)
		return true;
	size_t len = json_array_size(v);
	if (!json_is_array(v) || len < 1 || len > FD_INTEG_MAX_FILTER) {
		snprintf(field, sizeof field, "/%s", name);
		snprintf(detail, sizeof detail, "%s must be an array of 1..%d %s", name, FD_INTEG_MAX_FILTER, what);
		fd_input_bad_field(e, field, detail);
		return false;
	}
	const char **list = calloc(len + 1, sizeof *list);
	if (!list) {
		fd_input_refuse(e, 500, "internal", "Internal error", NULL, "out of memory");
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		const char *s = json_string_value(json_array_get(v, i));
		bool dup = false;
		for (size_t j = 0; s && j < i && !dup; j++)
			dup = strcmp(list[j], s) == 0;
		if (!s || !valid(s) || dup) {
			snprintf(field, sizeof field, "/%s/%zu", name, i);
			snprintf(detail, sizeof detail, "%s", dup ? "a repeated item" : what);
			fd_input_bad_field(e, field, detail);
			free(list);
			return false;
		}
		list[i] = s;
	}
	*out = list;
	*n = len;
	return true;
}

static bool parse_filter(json_t *root, struct fd_integ_filter *f, struct fd_input_error *e)
{
	return opt_list(root, "categories", category_valid,
			"categories (stream names without '-': the part of a stream name before its first '-')",
			&f->categories, &f->ncategories, e) &&
	       opt_list(root, "types", type_valid, "event types of 1..200 characters", &f->types, &f->ntypes, e);
}

static void filter_release(struct fd_integ_filter *f)
{
	free(f->categories);
	free(f->types);
	*f = (struct fd_integ_filter){ 0 };
}

void fd_group_def_release(struct fd_group_def *d)
{
	filter_release(&d->filter);
	json_decref(d->root);
	memset(d, 0, sizeof *d);
}

enum fd_err fd_group_def_parse(const char *body, size_t len, struct fd_group_def *out, struct fd_input_error *e)
{
	static const char *const keys[] = { "categories", "types", "start", "ack_timeout_ms", "max_deliveries",
					    "ordering" };
	memset(out, 0, sizeof *out);
	memset(e, 0, sizeof *e);
	out->ack_timeout_ms = 30000;
	out->max_deliveries = 5;
	out->ordering_stream = true;
	if (!(out->root = fd_input_object(body, len, 0, keys, sizeof keys / sizeof keys[0], e)))
		return FD_ERR_INVAL;
	if (!parse_filter(out->root, &out->filter, e))
		goto fail;
	const char *start = json_string_value(json_object_get(out->root, "start"));
	if (start && strcmp(start, "beginning") == 0) {
		out->start = FD_GROUP_START_BEGINNING;
	} else if (start && strcmp(start, "end") == 0) {
		out->start = FD_GROUP_START_END;
	} else if (start && fd_cursor_parse(start, &out->start_at)) {
		out->start = FD_GROUP_START_POSITION;
	} else {
		fd_input_bad_field(e, "/start", json_object_get(out->root, "start")
					       ? "start must be \"beginning\", \"end\" or a position (\"<tx>-<seq>\")"
					       : "start is required: \"beginning\", \"end\" or a position");
		goto fail;
	}
	out->start_text = start;
	if (!opt_uint(out->root, "ack_timeout_ms", 100, 86400000, &out->ack_timeout_ms, e) ||
	    !opt_uint(out->root, "max_deliveries", 1, 1000, &out->max_deliveries, e))
		goto fail;
	json_t *ord = json_object_get(out->root, "ordering");
	if (ord) {
		const char *o = json_string_value(ord);
		if (!o || (strcmp(o, "stream") && strcmp(o, "none"))) {
			fd_input_bad_field(e, "/ordering", "ordering must be \"stream\" or \"none\"");
			goto fail;
		}
		out->ordering_stream = strcmp(o, "stream") == 0;
	}
	return FD_OK;
fail:
	fd_group_def_release(out);
	return e->status == 500 ? FD_ERR_NOMEM : FD_ERR_INVAL;
}

void fd_settle_body_release(struct fd_settle_body *b)
{
	free(b->ids);
	memset(b, 0, sizeof *b);
}

enum fd_err fd_settle_parse(const char *kind, const char *body, size_t len, struct fd_settle_body *out,
			    struct fd_input_error *e)
{
	static const char *const ack_keys[] = { "delivery_ids" };
	static const char *const nack_keys[] = { "delivery_ids", "action", "delay_ms" };
	bool nack = strcmp(kind, "nack") == 0, replay = strcmp(kind, "replay") == 0;
	char field[64], detail[128];
	json_t *root = NULL;

	memset(out, 0, sizeof *out);
	memset(e, 0, sizeof *e);
	/* a replay of everything may come without a body */
	if (replay && len == 0)
		return FD_OK;
	if (!(root = fd_input_object(body, len, 0, nack ? nack_keys : ack_keys, nack ? 3 : 1, e)))
		return FD_ERR_INVAL;
	json_t *ids = json_object_get(root, "delivery_ids");
	size_t n = json_array_size(ids);
	if (!(replay && !ids) && (!json_is_array(ids) || n < 1 || n > FD_INTEG_MAX_IDS)) {
		snprintf(detail, sizeof detail, "delivery_ids must be an array of 1..%d delivery ids%s", FD_INTEG_MAX_IDS,
			 ids ? "" : " (required)");
		fd_input_bad_field(e, "/delivery_ids", detail);
		goto fail;
	}
	if (n && !(out->ids = calloc(n, sizeof *out->ids))) {
		fd_input_refuse(e, 500, "internal", "Internal error", NULL, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(ids, i));
		if (!s || !fd_uuid_parse(s, &out->ids[i])) {
			snprintf(field, sizeof field, "/delivery_ids/%zu", i);
			fd_input_bad_field(e, field, "a delivery id is a UUID from a pulled event's delivery_id");
			goto fail;
		}
	}
	out->n = n;
	out->action = FD_SETTLE_ACK;
	if (nack) {
		const char *a = json_string_value(json_object_get(root, "action"));
		if (a && strcmp(a, "retry") == 0)
			out->action = FD_SETTLE_RETRY;
		else if (a && strcmp(a, "park") == 0)
			out->action = FD_SETTLE_PARK;
		else if (a && strcmp(a, "skip") == 0)
			out->action = FD_SETTLE_SKIP;
		else {
			fd_input_bad_field(e, "/action", "action must be \"retry\", \"park\" or \"skip\"");
			goto fail;
		}
		if (!opt_uint(root, "delay_ms", 0, 86400000, &out->delay_ms, e))
			goto fail;
		if (out->action != FD_SETTLE_RETRY && json_object_get(root, "delay_ms")) {
			fd_input_bad_field(e, "/delay_ms", "delay_ms applies only to the action \"retry\"");
			goto fail;
		}
	}
	json_decref(root);
	return FD_OK;
fail:
	json_decref(root);
	fd_settle_body_release(out);
	return e->status == 500 ? FD_ERR_NOMEM : FD_ERR_INVAL;
}

void fd_webhook_def_release(struct fd_webhook_def *d)
{
	filter_release(&d->filter);
	json_decref(d->root);
	memset(d, 0, sizeof *d);
}

static bool printable_ascii(const char *s)
{
	for (; *s; s++)
		if (*s <= 0x20 || *s >= 0x7f)
			return false;
	return true;
}

enum fd_err fd_webhook_def_parse(const char *body, size_t len, struct fd_webhook_def *out, struct fd_input_error *e)
{
	static const char *const keys[] = { "url", "categories", "types", "secret", "max_attempts", "timeout_ms" };
	char detail[128];
	memset(out, 0, sizeof *out);
	memset(e, 0, sizeof *e);
	out->max_attempts = 10;
	out->timeout_ms = 5000;
	if (!(out->root = fd_input_object(body, len, 0, keys, sizeof keys / sizeof keys[0], e)))
		return FD_ERR_INVAL;
	out->url = json_string_value(json_object_get(out->root, "url"));
	size_t ulen = out->url ? strlen(out->url) : 0;
	if (!out->url || ulen < 8 || ulen > FD_INTEG_URL_MAX || !printable_ascii(out->url) ||
	    !(strncmp(out->url, "http://", 7) == 0 || strncmp(out->url, "https://", 8) == 0)) {
		fd_input_bad_field(e, "/url", "url is required: an http:// or https:// URL of at most 2048 characters");
		goto fail;
	}
	out->secret = json_string_value(json_object_get(out->root, "secret"));
	size_t slen = out->secret ? strlen(out->secret) : 0;
	if (!out->secret || slen < FD_INTEG_SECRET_MIN || slen > FD_INTEG_SECRET_MAX) {
		snprintf(detail, sizeof detail, "secret is required: a string of %d..%d bytes", FD_INTEG_SECRET_MIN,
			 FD_INTEG_SECRET_MAX);
		fd_input_bad_field(e, "/secret", detail);
		goto fail;
	}
	if (!parse_filter(out->root, &out->filter, e) ||
	    !opt_uint(out->root, "max_attempts", 1, 100, &out->max_attempts, e) ||
	    !opt_uint(out->root, "timeout_ms", 100, 60000, &out->timeout_ms, e))
		goto fail;
	return FD_OK;
fail:
	fd_webhook_def_release(out);
	return e->status == 500 ? FD_ERR_NOMEM : FD_ERR_INVAL;
}
