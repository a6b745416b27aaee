/*
 * fuzz_jsonspan.c - src/core/jsonspan.c over any text jansson accepts, and
 * fd_utf8_valid against a straightforward reference decoder.
 *
 * Properties: for an accepted object, every member's span holds text that
 * parses to that member's value; for an array, iteration yields exactly its
 * elements, each equal to its span's text; fd_json_skip_value covers the
 * document; fd_json_compact keeps the value and is idempotent;
 * fd_utf8_valid agrees with the reference.
 */
#include <jansson.h>

#include "factd/jsonspan.h"
#include "fuzz_common.h"

/* RFC 3629 UTF-8, decoded the long way. */
static bool utf8_reference(const unsigned char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned c = s[i], need;
		uint32_t cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xC2 && c <= 0xDF) {
			need = 1;
			cp = c & 0x1F;
		} else if (c >= 0xE0 && c <= 0xEF) {
			need = 2;
			cp = c & 0x0F;
		} else if (c >= 0xF0 && c <= 0xF4) {
			need = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i <= need)
			return false;
		for (unsigned k = 1; k <= need; k++) {
			if ((s[i + k] & 0xC0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3F);
		}
		if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || cp > 0x10FFFF ||
		    (cp >= 0xD800 && cp <= 0xDFFF))
			return false;
		i += need + 1;
	}
	return true;
}

static json_t *load_span(const char *s, struct fd_span sp)
{
	return json_loadb(s + sp.start, sp.end - sp.start, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	FUZZ_CHECK(fd_utf8_valid(s, size) == utf8_reference(data, size));

	/* jansson skips a raw NUL after a number or literal; the parsers refuse NULs first */
	if (memchr(s, '\0', size))
		return 0;
	json_t *root = json_loadb(s, size, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_REJECT_DUPLICATES, NULL);
	if (!root)
		return 0;
	struct fd_span whole = { 0, size }, sp;
	size_t pos = 0;
	FUZZ_CHECK(fd_json_skip_value(s, size, &pos));
	if (json_is_object(root)) {
		const char *key;
		json_t *v;
		json_object_foreach(root, key, v) {
			FUZZ_CHECK(fd_json_member(s, size, whole, key, &sp));
			json_t *again = load_span(s, sp);
			FUZZ_CHECK(again && json_equal(again, v));
			json_decref(again);
		}
	} else if (json_is_array(root)) {
		size_t i = 0, it = 0;
		while (fd_json_next_element(s, size, whole, &it, &sp)) {
			FUZZ_CHECK(i < json_array_size(root));
			json_t *again = load_span(s, sp);
			FUZZ_CHECK(again && json_equal(again, json_array_get(root, i)));
			json_decref(again);
			struct fd_span sp2;
			FUZZ_CHECK(fd_json_element(s, size, whole, i, &sp2) && sp2.start == sp.start && sp2.end == sp.end);
			i++;
		}
		FUZZ_CHECK(i == json_array_size(root));
	}
	/* compacting keeps the value and leaves no whitespace outside strings */
	char *c = malloc(size ? size : 1);
	FUZZ_CHECK(c);
	size_t clen = fd_json_compact(c, s, size);
	FUZZ_CHECK(clen <= size);
	json_t *again = json_loadb(c, clen, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL | JSON_REJECT_DUPLICATES, NULL);
	FUZZ_CHECK(again && json_equal(again, root));
	json_decref(again);
	FUZZ_CHECK(fd_json_compact(c, c, clen) == clen);
	free(c);
	json_decref(root);
	return 0;
}
