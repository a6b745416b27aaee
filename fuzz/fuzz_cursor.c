/*
 * fuzz_cursor.c - the event store's wire values (src/store/cursor.c) and
 * the id rules every path segment meets: feed cursors (?after=,
 * ?min_position=), expected versions, stream names and categories,
 * aggregate ids, UUIDs and request ids.
 *
 * Properties: a parsed cursor formats to text that parses back to the same
 * cursor and fits FD_CURSOR_STRLEN; a parsed UUID formats canonically and
 * parses back equal; a stream's category is a prefix of it; valid names and
 * ids stay within their length limits.
 */
#include "factd/aggregate.h"
#include "shop.h"
#include "factd/events.h"
#include "factd/http.h"
#include "factd/uuid.h"
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	if (!s)
		return 0;
	size_t len = strlen(s);

	struct fd_cursor c, back;
	if (fd_cursor_parse(s, &c)) {
		char text[FD_CURSOR_STRLEN];
		fd_cursor_format(&c, text, sizeof text);
		FUZZ_CHECK(strlen(text) < FD_CURSOR_STRLEN - 1);
		FUZZ_CHECK(fd_cursor_parse(text, &back) && fd_cursor_cmp(&c, &back) == 0);
		FUZZ_CHECK(c.seq >= 0);
	}

	struct fd_expected ex;
	if (fd_expected_parse_str(s, &ex))
		FUZZ_CHECK(ex.kind != FD_EXPECT_EXACT || ex.version >= 0);

	if (fd_stream_name_valid(s)) {
		FUZZ_CHECK(len >= 1 && len <= FD_STREAM_MAX);
		char cat[FD_STREAM_MAX + 1];
		fd_stream_category(s, cat, sizeof cat);
		FUZZ_CHECK(strncmp(cat, s, strlen(cat)) == 0 && !strchr(cat, '-'));
	}
	char small[8];
	fd_stream_category(s, small, sizeof small);
	FUZZ_CHECK(strlen(small) < sizeof small);

	const struct fd_aggregate_type *types[] = { &fd_order_type, &fd_product_type, &fd_payment_type };
	for (size_t i = 0; i < 3; i++)
		if (fd_aggregate_id_valid(types[i], s))
			FUZZ_CHECK(len >= 1 && len <= 64);

	struct fd_uuid u, u2;
	if (fd_uuid_parse(s, &u)) {
		char text[FD_UUID_STRLEN + 1];
		fd_uuid_format(&u, text);
		FUZZ_CHECK(strlen(text) == FD_UUID_STRLEN && strcasecmp(text, s) == 0);
		FUZZ_CHECK(fd_uuid_parse(text, &u2) && memcmp(&u, &u2, sizeof u) == 0);
	}

	if (fd_request_id_valid(s))
		FUZZ_CHECK(len >= 1 && len <= FD_REQUEST_ID_MAX);
	free(s);
	return 0;
}
