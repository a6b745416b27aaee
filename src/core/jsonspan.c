/* jsonspan.c - value spans in validated JSON text.  Pure; thread-safe. */
#include "factd/jsonspan.h"

#include <jansson.h>
#include <string.h>

static size_t skip_ws(const char *s, size_t len, size_t i)
{
	while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	return i;
}

/* s[*pos] is '"'; move past the closing quote. */
static bool skip_string(const char *s, size_t len, size_t *pos)
{
	size_t i = *pos + 1;
	while (i < len) {
		if (s[i] == '\\')
			i += 2;
		else if (s[i] == '"') {
			*pos = i + 1;
			return true;
		} else
			i++;
	}
	return false;
}

bool fd_json_skip_value(const char *s, size_t len, size_t *pos)
{
	size_t i = skip_ws(s, len, *pos);
	if (i >= len)
		return false;
	if (s[i] == '"') {
		if (!skip_string(s, len, &i))
			return false;
		*pos = i;
		return true;
	}
	if (s[i] == '{' || s[i] == '[') {
		size_t depth = 0;
		while (i < len) {
			char c = s[i];
			if (c == '"') {
				if (!skip_string(s, len, &i))
					return false;
				continue;
			}
			if (c == '{' || c == '[')
				depth++;
			else if (c == '}' || c == ']') {
				if (--depth == 0) {
					*pos = i + 1;
					return true;
				}
			}
			i++;
		}
		return false;
	}
	/* number, true, false, null: up to the next delimiter */
	size_t start = i;
	while (i < len && !strchr(",}] \t\n\r", s[i]))
		i++;
	if (i == start)
		return false;
	*pos = i;
	return true;
}

/* Does the JSON string literal s[a..b) (quotes included) decode to key? */
static bool key_equals(const char *s, size_t a, size_t b, const char *key)
{
	size_t klen = strlen(key);
	if (!memchr(s + a, '\\', b - a))
		return b - a == klen + 2 && memcmp(s + a + 1, key, klen) == 0;
	json_t *k = json_loadb(s + a, b - a, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
	bool eq = k && json_is_string(k) && json_string_length(k) == klen && memcmp(json_string_value(k), key, klen) == 0;
	json_decref(k);
	return eq;
}

bool fd_json_member(const char *s, size_t len, struct fd_span obj, const char *key, struct fd_span *out)
{
	size_t i = skip_ws(s, len, obj.start);
	if (obj.end > len || i >= obj.end || s[i] != '{')
		return false;
	i = skip_ws(s, obj.end, i + 1);
	if (i < obj.end && s[i] == '}')
		return false;
	while (i < obj.end && s[i] == '"') {
		size_t ka = i;
		if (!skip_string(s, obj.end, &i))
			return false;
		size_t kb = i;
		i = skip_ws(s, obj.end, i);
		if (i >= obj.end || s[i] != ':')
			return false;
		size_t v = skip_ws(s, obj.end, i + 1);
		i = v;
		if (!fd_json_skip_value(s, obj.end, &i))
			return false;
		if (key_equals(s, ka, kb, key)) {
			out->start = v;
			out->end = i;
			return true;
		}
		i = skip_ws(s, obj.end, i);
		if (i >= obj.end || s[i] != ',')
			return false;
		i = skip_ws(s, obj.end, i + 1);
	}
	return false;
}

bool fd_json_next_element(const char *s, size_t len, struct fd_span arr, size_t *pos, struct fd_span *out)
{
	if (arr.end > len)
		return false;
	size_t i;
	if (*pos == 0) {
		i = skip_ws(s, arr.end, arr.start);
		if (i >= arr.end || s[i] != '[')
			return false;
		i = skip_ws(s, arr.end, i + 1);
		if (i < arr.end && s[i] == ']')
			return false;
	} else {
		i = skip_ws(s, arr.end, *pos);
		if (i >= arr.end || s[i] != ',')
			return false;
		i = skip_ws(s, arr.end, i + 1);
	}
	size_t v = i;
	if (!fd_json_skip_value(s, arr.end, &i))
		return false;
	out->start = v;
	out->end = i;
	*pos = i;
	return true;
}

bool fd_json_element(const char *s, size_t len, struct fd_span arr, size_t index, struct fd_span *out)
{
	size_t pos = 0;
	for (size_t k = 0; fd_json_next_element(s, len, arr, &pos, out); k++)
		if (k == index)
			return true;
	return false;
}

size_t fd_json_compact(char *dst, const char *src, size_t len)
{
	size_t o = 0;
	bool in_string = false;
	for (size_t i = 0; i < len; i++) {
		char c = src[i];
		if (in_string) {
			dst[o++] = c;
			if (c == '\\' && i + 1 < len)
				dst[o++] = src[++i];
			else if (c == '"')
				in_string = false;
		} else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
			dst[o++] = c;
			in_string = c == '"';
		}
	}
	return o;
}

bool fd_utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;
	while (i < len) {
		unsigned c = s[i];
		size_t n;
		unsigned cp, min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xE0) == 0xC0) {
			n = 1, cp = c & 0x1F, min = 0x80;
		} else if ((c & 0xF0) == 0xE0) {
			n = 2, cp = c & 0x0F, min = 0x800;
		} else if ((c & 0xF8) == 0xF0) {
			n = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if (len - i <= n)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += n + 1;
	}
	return true;
}
