/*
 * test_schema.c - versioned event types without a database (schema.h): each
 * upcaster of the test app's counter on its own, chains of more than one
 * step with a rename, events at or past the current version, undeclared
 * types, gaps, the start-up check of a table, the names a type was stored
 * under, the schema version in metadata, and the snapshot schema derived
 * from the event types.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "factd/aggregate.h"
#include "factd/schema.h"
#include "test_app.h"
#include <jansson.h>

static const struct fd_event_schema *counter_events(void)
{
	return &fd_test_counter_type.events;
}

static json_t *J(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);
	cr_assert_not_null(j, "bad JSON in the test: %s", e.text);
	return j;
}

/* Does j equal the JSON text? */
static bool eq(const json_t *j, const char *text)
{
	json_t *w = J(text);
	bool same = json_equal(j, w);
	json_decref(w);
	return same;
}

/* Upcast `data` stored as (type, version); check the result's type, version and data. */
static void upcasts_to(const char *type, int version, const char *data, const char *want_type, int want_version,
		       const char *want_data)
{
	json_t *d = J(data), *w = J(want_data);
	const char *t = type;
	int v = version;
	cr_assert_eq(fd_event_schema_upcast(counter_events(), NULL, &t, &v, d), FD_OK, "%s@%d", type, version);
	cr_assert_str_eq(t, want_type);
	cr_assert_eq(v, want_version);
	char *got = json_dumps(d, JSON_COMPACT | JSON_SORT_KEYS);
	cr_assert(json_equal(d, w), "%s@%d became %s, want %s", type, version, got, want_data);
	free(got);
	json_decref(d);
	json_decref(w);
}

Test(upcasters, each_step_on_its_own)
{
	/* CounterCorrected 1 -> CounterAdjusted 2: the new name and a reason */
	const struct fd_upcaster *u = &counter_events()->upcasters[0];
	json_t *d = J("{\"by\": 4}");
	cr_assert_eq(u->up(d, NULL), FD_OK);
	cr_assert(eq(d, "{\"by\": 4, \"reason\": \"correction\"}"));
	cr_assert_str_eq(u->renamed_to, "CounterAdjusted");
	json_decref(d);
	/* CounterAdjusted 2 -> 3: by becomes delta */
	u = &counter_events()->upcasters[1];
	d = J("{\"by\": -2, \"reason\": \"typo\"}");
	cr_assert_eq(u->up(d, NULL), FD_OK);
	cr_assert(eq(d, "{\"delta\": -2, \"reason\": \"typo\"}"));
	cr_assert_null(u->renamed_to);
	json_decref(d);
	/* each refuses data that is not of its version */
	d = J("{\"delta\": 1}");
	cr_assert_eq(counter_events()->upcasters[0].up(d, NULL), FD_ERR_INVAL);
	cr_assert_eq(counter_events()->upcasters[1].up(d, NULL), FD_ERR_INVAL);
	json_decref(d);
}

Test(upcasters, a_chain_of_two_steps_with_a_rename)
{
	upcasts_to("CounterCorrected", 1, "{\"by\": 7}", "CounterAdjusted", 3, "{\"delta\": 7, \"reason\": \"correction\"}");
	upcasts_to("CounterAdjusted", 2, "{\"by\": 7, \"reason\": \"r\"}", "CounterAdjusted", 3,
		   "{\"delta\": 7, \"reason\": \"r\"}");
}

Test(upcasters, the_current_version_and_undeclared_types_stay_as_stored)
{
	upcasts_to("CounterAdjusted", 3, "{\"delta\": 1, \"reason\": \"r\"}", "CounterAdjusted", 3,
		   "{\"delta\": 1, \"reason\": \"r\"}");
	upcasts_to("CounterAdded", 1, "{\"amount\": 2}", "CounterAdded", 1, "{\"amount\": 2}");
	upcasts_to("SomethingElse", 1, "{\"x\": 1}", "SomethingElse", 1, "{\"x\": 1}");
	upcasts_to("SomethingElse", 9, "{\"x\": 1}", "SomethingElse", 9, "{\"x\": 1}");
	/* no schema at all: nothing to do */
	const char *t = "CounterCorrected";
	int v = 1;
	json_t *d = J("{\"by\": 1}");
	cr_assert_eq(fd_event_schema_upcast(NULL, NULL, &t, &v, d), FD_OK);
	cr_assert_str_eq(t, "CounterCorrected");
	json_decref(d);
}

Test(upcasters, a_newer_version_than_the_code_knows_is_refused_untouched)
{
	const char *t = "CounterAdjusted";
	int v = 4;
	json_t *d = J("{\"whatever\": true}");
	cr_assert_eq(fd_event_schema_upcast(counter_events(), NULL, &t, &v, d), FD_ERR_SCHEMA);
	cr_assert_str_eq(t, "CounterAdjusted");
	cr_assert_eq(v, 4);
	cr_assert(eq(d, "{\"whatever\": true}"));
	json_decref(d);
	t = "CounterAdded";
	v = 2;
	d = J("{\"amount\": 1}");
	cr_assert_eq(fd_event_schema_upcast(counter_events(), NULL, &t, &v, d), FD_ERR_SCHEMA, "declared at version 1");
	json_decref(d);
}

Test(upcasters, a_gap_or_a_refused_step_fails_loudly)
{
	/* CounterAdjusted at version 1 never existed (version 1 was CounterCorrected) */
	const char *t = "CounterAdjusted";
	int v = 1;
	json_t *d = J("{\"delta\": 1, \"reason\": \"r\"}");
	cr_assert_eq(fd_event_schema_upcast(counter_events(), NULL, &t, &v, d), FD_ERR_INVAL);
	json_decref(d);
	t = "CounterCorrected";
	v = 1;
	d = J("{\"amount\": 1}");
	cr_assert_eq(fd_event_schema_upcast(counter_events(), NULL, &t, &v, d), FD_ERR_INVAL, "no by: not version 1");
	json_decref(d);
}

Test(upcasters, the_counter_applies_an_old_event_once_upcast)
{
	const struct fd_aggregate_type *c = &fd_test_counter_type;
	struct fd_test_counter s;
	c->init(&s);
	json_t *created = J("{}"), *added = J("{\"amount\": 10}"), *corrected = J("{\"by\": -3}");
	cr_assert_eq(c->apply(&s, "CounterCreated", created), FD_OK);
	cr_assert_eq(c->apply(&s, "CounterAdded", added), FD_OK);
	const char *t = "CounterCorrected";
	int v = 1;
	cr_assert_eq(fd_event_schema_upcast(&c->events, NULL, &t, &v, corrected), FD_OK);
	cr_assert_eq(c->apply(&s, t, corrected), FD_OK);
	cr_assert_eq(s.total, 7);
	c->release(&s);
	json_decref(created);
	json_decref(added);
	json_decref(corrected);
}

Test(schema, names_a_type_was_stored_under)
{
	const char *names[4];
	cr_assert_eq(fd_event_schema_names(counter_events(), "CounterAdjusted", names, 4), 2);
	cr_assert_str_eq(names[0], "CounterAdjusted");
	cr_assert_str_eq(names[1], "CounterCorrected");
	cr_assert_eq(fd_event_schema_names(counter_events(), "CounterAdded", names, 4), 1);
	cr_assert_eq(fd_event_schema_names(counter_events(), "CounterAdjusted", NULL, 0), 2, "counts without room");
}

static enum fd_err noop(json_t *data, const void *services)
{
	(void)data;
	(void)services;
	return FD_OK;
}

Test(schema, the_start_up_check)
{
	char err[256];
	cr_assert_eq(fd_event_schema_check(counter_events(), "counter", err, sizeof err), FD_OK, "%s", err);
	cr_assert_eq(fd_event_schema_check(NULL, "none", err, sizeof err), FD_OK);

	static const struct fd_event_type at3[] = { { .type = "T", .version = 3 } };
	static const struct fd_upcaster only_2[] = { { "T", 2, NULL, noop } };
	struct fd_event_schema gap = { at3, 1, only_2, 1 };
	cr_assert_eq(fd_event_schema_check(&gap, "gap", err, sizeof err), FD_ERR_INVAL);
	cr_assert(strstr(err, "from version 1 to 2"), "%s", err);

	static const struct fd_upcaster twice[] = { { "T", 1, NULL, noop }, { "T", 1, NULL, noop }, { "T", 2, NULL, noop } };
	struct fd_event_schema dup = { at3, 1, twice, 3 };
	cr_assert_eq(fd_event_schema_check(&dup, "dup", err, sizeof err), FD_ERR_INVAL);

	static const struct fd_event_type at2[] = { { .type = "T", .version = 2 } };
	static const struct fd_upcaster nowhere[] = { { "T", 1, NULL, noop }, { "Old", 1, "Gone", noop } };
	struct fd_event_schema lost = { at2, 1, nowhere, 2 };
	cr_assert_eq(fd_event_schema_check(&lost, "lost", err, sizeof err), FD_ERR_INVAL);
	cr_assert(strstr(err, "Gone"), "%s", err);

	static const struct fd_upcaster no_fn[] = { { "T", 1, NULL, NULL } };
	struct fd_event_schema nofn = { at2, 1, no_fn, 1 };
	cr_assert_eq(fd_event_schema_check(&nofn, "nofn", err, sizeof err), FD_ERR_INVAL);

	static const struct fd_event_type twice_t[] = { { .type = "T", .version = 1 }, { .type = "T", .version = 1 } };
	struct fd_event_schema tt = { twice_t, 2, NULL, 0 };
	cr_assert_eq(fd_event_schema_check(&tt, "tt", err, sizeof err), FD_ERR_INVAL);
}

Test(schema, the_version_in_metadata)
{
	int v = 0;
	cr_assert_eq(fd_event_schema_version_of(NULL, &v), FD_OK);
	cr_assert_eq(v, 1);
	json_t *m = J("{\"correlation_id\": \"x\"}");
	cr_assert_eq(fd_event_schema_version_of(m, &v), FD_OK);
	cr_assert_eq(v, 1, "absent is version 1");
	json_decref(m);
	m = J("{\"schema_version\": 3}");
	cr_assert_eq(fd_event_schema_version_of(m, &v), FD_OK);
	cr_assert_eq(v, 3);
	json_decref(m);
	static const char *const bad[] = { "{\"schema_version\": 0}", "{\"schema_version\": \"2\"}",
					   "{\"schema_version\": 2.0}", "{\"schema_version\": 32768}",
					   "{\"schema_version\": null}", "{\"schema_version\": -1}" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		m = J(bad[i]);
		cr_assert_eq(fd_event_schema_version_of(m, &v), FD_ERR_INVAL, "%s", bad[i]);
		json_decref(m);
	}
}

Test(schema, upcasting_by_category)
{
	const struct fd_schema_category cats[] = { { "counter", counter_events() } };
	const struct fd_schemas set = { cats, 1, NULL, NULL };
	json_t *md = J("{\"schema_version\": 2}"), *d = J("{\"by\": 5, \"reason\": \"r\"}");
	const char *t = "CounterAdjusted";
	int v = 0;
	cr_assert_eq(fd_schemas_upcast(&set, "counter", md, &t, &v, d), FD_OK);
	cr_assert_eq(v, 3);
	cr_assert(eq(d, "{\"delta\": 5, \"reason\": \"r\"}"));
	json_decref(d);
	/* another category is not upcast */
	d = J("{\"by\": 5, \"reason\": \"r\"}");
	t = "CounterAdjusted";
	cr_assert_eq(fd_schemas_upcast(&set, "other", md, &t, &v, d), FD_OK);
	cr_assert_eq(v, 2);
	cr_assert(eq(d, "{\"by\": 5, \"reason\": \"r\"}"));
	json_decref(d);
	json_decref(md);
	cr_assert_null(fd_schemas_find(NULL, "counter"));
}

Test(schema, snapshots_follow_the_event_versions)
{
	/* the counter's own snapshot version 1, plus CounterAdjusted at 3 */
	cr_assert_eq(fd_event_schema_weight(counter_events()), 2);
	cr_assert_eq(fd_aggregate_snapshot_schema(&fd_test_counter_type), 3);
	static const struct fd_event_type raised[] = { { .type = "CounterCreated", .version = 1 }, { .type = "CounterAdded", .version = 2 }, { .type = "CounterClosed", .version = 1 },
							{ .type = "CounterAdjusted", .version = 3 } };
	struct fd_aggregate_type t = fd_test_counter_type;
	t.events.types = raised;
	t.events.ntypes = 4;
	cr_assert_eq(fd_aggregate_snapshot_schema(&t), 4, "raising an event's version retires the snapshots");
	t.schema_version = 2;
	cr_assert_eq(fd_aggregate_snapshot_schema(&t), 5, "and so does the snapshot format's own");
}
