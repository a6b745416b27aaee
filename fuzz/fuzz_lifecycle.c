/*
 * fuzz_lifecycle.c - the request bodies of the data lifecycle through their
 * pure parsers (src/http/input.c): POST /streams/{stream}/truncate
 * {before_version} and PUT /retention/{category} {max_age_days?,
 * max_count_per_stream?}; and the append body, whose events may never be of
 * a system event type.
 *
 * Properties: an accepted truncation names a version >= 1 that is the
 * body's integer; an accepted policy has at least one limit, each in its
 * range and equal to the body's integer, and the absent one 0; a refusal
 * is a 400 with a slug and a title; an accepted append has no event type
 * starting with '$'.
 */
#include <jansson.h>

#include "http/input.h"
#include "fuzz_common.h"

static void check_refusal(const struct fd_input_error *e)
{
	FUZZ_CHECK(e->status == 400 || e->status == 413 || e->status == 500);
	FUZZ_CHECK(e->slug && *e->slug && e->title && *e->title);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body = (const char *)data;
	struct fd_input_error e;
	json_t *doc = json_loadb(body, size, JSON_REJECT_DUPLICATES, NULL);

	int64_t before = -1;
	if (fd_truncate_parse(body, size, &before, &e) == FD_OK) {
		FUZZ_CHECK(before >= 1);
		FUZZ_CHECK(json_is_integer(json_object_get(doc, "before_version")));
		FUZZ_CHECK(json_integer_value(json_object_get(doc, "before_version")) == before);
	} else {
		check_refusal(&e);
	}

	int age = -1;
	int64_t count = -1;
	if (fd_retention_parse(body, size, &age, &count, &e) == FD_OK) {
		FUZZ_CHECK(age > 0 || count > 0);
		FUZZ_CHECK(age >= 0 && age <= FD_RETENTION_MAX_AGE_DAYS && count >= 0);
		json_t *a = json_object_get(doc, "max_age_days"), *c = json_object_get(doc, "max_count_per_stream");
		FUZZ_CHECK(age == (json_is_integer(a) ? json_integer_value(a) : 0));
		FUZZ_CHECK(count == (json_is_integer(c) ? json_integer_value(c) : 0));
	} else {
		check_refusal(&e);
	}

	struct fd_append_body ab;
	if (fd_append_parse(body, size, 100, &ab, &e) == FD_OK) {
		for (size_t i = 0; i < ab.n; i++)
			FUZZ_CHECK(ab.events[i].type[0] != '$');
		fd_append_body_release(&ab);
	}
	json_decref(doc);
	return 0;
}
