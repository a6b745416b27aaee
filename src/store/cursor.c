/*
 * cursor.c - pure parsing and formatting for the event store's wire values:
 * feed cursors ("<tx>-<seq>"), stream names, categories and expected versions.
 *
 * Threading: pure functions, no state; safe from any thread.
 */
#include "factd/events.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/*
 * Parse a run of decimal digits starting at s, stopping at the first
 * non-digit.  At least one digit is required and the value must not exceed
 * max.  *end receives the first unparsed character.
 */
static bool parse_digits(const char *s, uint64_t max, uint64_t *out, const char **end)
{
	uint64_t v = 0;
	const char *p = s;
	for (; *p >= '0' && *p <= '9'; p++) {
		uint64_t d = (uint64_t)(*p - '0');
		if (v > (max - d) / 10)
			return false;
		v = v * 10 + d;
	}
	if (p == s)
		return false;
	*out = v;
	*end = p;
	return true;
}

bool fd_cursor_parse(const char *s, struct fd_cursor *out)
{
	if (!s || !out)
		return false;
	if (strcmp(s, "0") == 0) {
		out->tx = 0;
		out->seq = 0;
		return true;
	}
	uint64_t tx, seq;
	const char *p;
	if (!parse_digits(s, UINT64_MAX, &tx, &p) || *p != '-')
		return false;
	if (!parse_digits(p + 1, (uint64_t)INT64_MAX, &seq, &p) || *p != '\0')
		return false;
	out->tx = tx;
	out->seq = (int64_t)seq;
	return true;
}

void fd_cursor_format(const struct fd_cursor *c, char *buf, size_t len)
{
	if (!buf || !len)
		return;
	snprintf(buf, len, "%" PRIu64 "-%" PRId64, c->tx, c->seq);
}

int fd_cursor_cmp(const struct fd_cursor *a, const struct fd_cursor *b)
{
	if (a->tx != b->tx)
		return a->tx < b->tx ? -1 : 1;
	if (a->seq != b->seq)
		return a->seq < b->seq ? -1 : 1;
	return 0;
}

static bool stream_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
	       c == '.' || c == ':' || c == '-';
}

bool fd_stream_name_valid(const char *s)
{
	if (!s)
		return false;
	size_t n = 0;
	for (; s[n]; n++)
		if (n >= FD_STREAM_MAX || !stream_char((unsigned char)s[n]))
			return false;
	/* "." and ".." would be rewritten by clients and proxies as path segments. */
	return n > 0 && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

const char *const fd_system_event_types[] = {
	FD_EVENT_STREAM_DELETED,
	FD_EVENT_SUBJECT_ERASED,
};
const size_t fd_system_event_types_count = sizeof fd_system_event_types / sizeof fd_system_event_types[0];

bool fd_event_type_reserved(const char *type)
{
	return type && type[0] == '$';
}

void fd_stream_category(const char *stream, char *out, size_t len)
{
	if (!out || !len)
		return;
	size_t n = strcspn(stream, "-");
	if (n > len - 1)
		n = len - 1;
	memcpy(out, stream, n);
	out[n] = '\0';
}

/* The named expected-version forms; an integer is the fourth. */
static const struct {
	const char *name;
	enum fd_expected_kind kind;
} expected_names[] = {
	{ .name = "any", .kind = FD_EXPECT_ANY },
	{ .name = "no_stream", .kind = FD_EXPECT_NO_STREAM },
	{ .name = "exists", .kind = FD_EXPECT_EXISTS },
};

bool fd_expected_parse_str(const char *s, struct fd_expected *out)
{
	if (!s || !out)
		return false;
	for (size_t i = 0; i < sizeof expected_names / sizeof expected_names[0]; i++) {
		if (strcmp(s, expected_names[i].name) == 0) {
			out->kind = expected_names[i].kind;
			out->version = 0;
			return true;
		}
	}
	uint64_t v;
	const char *end;
	if (!parse_digits(s, (uint64_t)INT64_MAX, &v, &end) || *end != '\0')
		return false;
	out->kind = FD_EXPECT_EXACT;
	out->version = (int64_t)v;
	return true;
}
