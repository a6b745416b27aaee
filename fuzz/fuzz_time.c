/*
 * fuzz_time.c - ?at= timestamps through fd_time_parse_rfc3339
 * (src/core/timeutil.c).
 *
 * Properties: an accepted time lies within years 0001-9999 (give or take a
 * day of offset); formatting it gives an RFC 3339 text that parses back to
 * the same microsecond.
 */
#include "factd/timeutil.h"
#include "fuzz_common.h"

/* 0000-12-31T00:00:00Z and 10000-01-02T00:00:00Z in microseconds. */
#define MIN_US (-62135683200LL * 1000000)
#define MAX_US (253402387200LL * 1000000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size);
	if (!s)
		return 0;
	int64_t us, back;
	if (fd_time_parse_rfc3339(s, &us)) {
		FUZZ_CHECK(us >= MIN_US && us <= MAX_US);
		char text[40];
		fd_time_format_rfc3339(us, text, sizeof text);
		/* an offset can carry a time into year 0 or 10000, which do not parse */
		if (strlen(text) == 27 && strncmp(text, "0000", 4) != 0)
			FUZZ_CHECK(fd_time_parse_rfc3339(text, &back) && back == us);
	}
	free(s);
	return 0;
}
