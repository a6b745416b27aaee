/*
 * fuzz_append.c - the body of POST /streams/{stream}/events through
 * fd_append_parse (src/http/input.c), the parser the append handler uses.
 *
 * Properties: a refusal is a 400 or 413 with a slug and a detail, never the
 * 500 for "jansson accepted text that jsonspan cannot walk"; an accepted
 * body's events carry data text that parses to the very object jansson read
 * (the client's own bytes go to PostgreSQL), a type, and distinct client ids.
 */
#include <jansson.h>

#include "http/input.h"
#include "fuzz_common.h"

#define MAX_EVENTS 1000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fd_append_body b;
	struct fd_input_error e;
	enum fd_err err = fd_append_parse((const char *)data, size, MAX_EVENTS, &b, &e);
	if (err == FD_ERR_INVAL) {
		FUZZ_CHECK(e.status == 400 || e.status == 413);
		FUZZ_CHECK(e.slug && e.title && e.detail[0]);
		FUZZ_CHECK(!e.has_field || e.field[0] == '\0' || e.field[0] == '/');
		return 0;
	}
	FUZZ_CHECK(err == FD_OK || err == FD_ERR_NOMEM);
	if (err)
		return 0;
	FUZZ_CHECK(b.n >= 1 && b.n <= MAX_EVENTS);
	FUZZ_CHECK(b.expected.kind != FD_EXPECT_EXACT || b.expected.version >= 0);
	FUZZ_CHECK((b.expected.kind == FD_EXPECT_EXACT) == (b.expected_name == NULL));
	json_t *events = json_object_get(b.root, "events");
	for (size_t i = 0; i < b.n; i++) {
		const struct fd_event_in *ev = &b.events[i];
		json_t *given = json_object_get(json_array_get(events, i), "data");
		json_t *text = json_loads(ev->data_json, JSON_DECODE_INT_AS_REAL, NULL);
		FUZZ_CHECK(text != NULL && json_equal(text, given));
		json_decref(text);
		FUZZ_CHECK(ev->type && ev->type[0]);
		FUZZ_CHECK(!b.metadata[i] || json_is_object(b.metadata[i]));
		for (size_t j = 0; j < i; j++)
			FUZZ_CHECK(!(ev->id_given && b.events[j].id_given &&
				     memcmp(&ev->event_id, &b.events[j].event_id, sizeof ev->event_id) == 0));
	}
	fd_append_body_release(&b);
	return 0;
}
