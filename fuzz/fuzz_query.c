/*
 * fuzz_query.c - query parameters and request headers through the pure
 * parsers the handlers use (src/http/input.c, src/proj/queries.c): ?limit=,
 * ?from_version=, ?version=, ?types=, ?status=, ?customer_id=, ?after= of
 * the lists, If-Match and Idempotency-Key.
 *
 * Properties: every accepted number is within its bounds and is what the
 * text says (formatting it back gives the text, up to leading zeros and
 * "+"/"-0"); accepted types are non-empty, well formed and at most 64.
 */
#include <inttypes.h>
#include <stdio.h>

#include "http/input.h"
#include "factd/jsonspan.h"
#include "queries.h"
#include "fuzz_common.h"

/* Strip leading zeros (keeping one digit) for comparing numbers as text. */
static const char *digits_of(const char *s)
{
	while (s[0] == '0' && s[1] >= '0' && s[1] <= '9')
		s++;
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	if (!s)
		return 0;
	char text[32];

	long long v;
	if (fd_input_int(s, 1, INT64_MAX, &v)) {
		FUZZ_CHECK(v >= 1);
		snprintf(text, sizeof text, "%lld", v);
		FUZZ_CHECK(strcmp(text, digits_of(s)) == 0);
	}
	if (fd_input_int(s, -5, 1000, &v))
		FUZZ_CHECK(v >= -5 && v <= 1000);

	unsigned limit;
	if (fd_input_limit(s, 1000, &limit)) {
		FUZZ_CHECK(limit >= 1 && limit <= 1000);
		snprintf(text, sizeof text, "%u", limit);
		FUZZ_CHECK(strcmp(text, digits_of(s)) == 0);
	}

	int64_t version;
	if (fd_input_version(s, &version)) {
		FUZZ_CHECK(version >= 1);
		snprintf(text, sizeof text, "%" PRId64, version);
		FUZZ_CHECK(strcmp(text, digits_of(s)) == 0);
	}

	int64_t etag;
	if (fd_input_if_match(s, &etag))
		FUZZ_CHECK(etag >= 0);

	if (fd_input_idempotency_key_valid(s))
		FUZZ_CHECK(strlen(s) >= 1 && strlen(s) <= 255);

	char *copy = NULL;
	const char *types[FD_INPUT_MAX_TYPES];
	size_t n = 0;
	if (fd_input_types(s, &copy, types, &n)) {
		FUZZ_CHECK(n >= 1 && n <= FD_INPUT_MAX_TYPES);
		for (size_t i = 0; i < n; i++)
			FUZZ_CHECK(types[i][0] && !strchr(types[i], ',') && fd_utf8_valid(types[i], strlen(types[i])));
	}
	free(copy);

	(void)fd_query_order_status_valid(s);
	if (fd_query_customer_valid(s))
		FUZZ_CHECK(fd_utf8_valid(s, strlen(s)));
	if (fd_query_sku_valid(s))
		FUZZ_CHECK(strlen(s) >= 1 && strlen(s) <= 64);
	free(s);
	return 0;
}
