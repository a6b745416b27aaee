/*
 * test_domain.c - the domain layer without a database: the aggregate
 * framework's helpers, the order, product and payment aggregates (every
 * command's success and refusals, strict apply, snapshot round trips over
 * long random histories, the inventory invariant) and the payment gateway
 * simulator.
 *
 * Commands are decided against states built by applying events, and the
 * decided events are applied back, as the command bus does.  Randomised
 * tests use a fixed-seed xorshift generator, so every run sees the same
 * sequences.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/aggregate.h"
#include "shop.h"
#include "factd/uuid.h"

/* ---- fixtures --------------------------------------------------------------- */

static const char *const OID1 = "0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c11";
static const char *const OID2 = "0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c22";

static json_t *J(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
	cr_assert_not_null(j, "bad test JSON %s: %s", text, e.text);
	return j;
}

static char *dump(const json_t *j)
{
	char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
	cr_assert_not_null(s);
	return s;
}

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);
	cr_assert_not_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* tmpl with every "$ID" replaced by id. */
static void with_id(char *out, size_t len, const char *tmpl, const char *id)
{
	size_t o = 0;
	for (const char *t = tmpl; *t && o + 1 < len;) {
		if (strncmp(t, "$ID", 3) == 0) {
			for (const char *i = id; *i && o + 1 < len; i++)
				out[o++] = *i;
			t += 3;
		} else {
			out[o++] = *t++;
		}
	}
	out[o] = '\0';
	cr_assert_lt(o + 1, len, "buffer too small for %s", tmpl);
}

/* xorshift64*: a fixed-seed generator so random tests are reproducible. */
struct rng {
	uint64_t s;
};

static uint64_t next(struct rng *r)
{
	r->s ^= r->s >> 12;
	r->s ^= r->s << 25;
	r->s ^= r->s >> 27;
	return r->s * 0x2545F4914F6CDD1DULL;
}

static uint64_t below(struct rng *r, uint64_t n)
{
	return next(r) % n;
}

/* An aggregate under test: its type, state and version (events applied). */
struct agg {
	const struct fd_aggregate_type *t;
	void *state;
	unsigned version;
};

static struct agg agg_new(const struct fd_aggregate_type *t)
{
	struct agg a = {.t = t, .state = calloc(1, t->state_size)};
	cr_assert_not_null(a.state);
	t->init(a.state);
	return a;
}

static void agg_free(struct agg *a)
{
	a->t->release(a->state);
	free(a->state);
	a->state = NULL;
}

/*
 * Apply an event as stored by code of schema version `version` of its type:
 * upcast to the current version (with the upcasters' built-in defaults),
 * then applied.  An event that does not upcast is refused like one apply
 * refuses.
 */
static enum fd_err apply_stored(struct agg *a, const char *type, json_t *data, int version)
{
	enum fd_err err = fd_event_schema_upcast(&a->t->events, NULL, &type, &version, data);
	return err == FD_ERR_INVAL ? FD_ERR_INVAL : err ? err : a->t->apply(a->state, type, data);
}

/* The tests' given events are written as version 1 of their types (as stored before any change). */
static enum fd_err apply_text(struct agg *a, const char *type, const char *data)
{
	json_t *d = J(data);
	enum fd_err err = apply_stored(a, type, d, 1);
	json_decref(d);
	if (err == FD_OK)
		a->version++;
	return err;
}

/*
 * Apply a JSON array of [type, data] pairs, or [type, data, schema version]
 * (1 when absent: stored before any change of the type); each must succeed.
 */
static void given(struct agg *a, const char *events)
{
	json_t *arr = J(events);
	size_t i;
	json_t *e;
	json_array_foreach(arr, i, e) {
		const char *type = json_string_value(json_array_get(e, 0));
		json_t *jv = json_array_get(e, 2);
		enum fd_err err = apply_stored(a, type, json_array_get(e, 1), jv ? (int)json_integer_value(jv) : 1);
		cr_assert_eq(err, FD_OK, "given event %zu (%s) failed: %s", i, type, fd_err_name(err));
		a->version++;
	}
	json_decref(arr);
}

static json_t *snap_of(const struct agg *a)
{
	json_t *s = a->t->snapshot(a->state);
	cr_assert_not_null(s);
	return s;
}

static json_t *view_of(const struct agg *a)
{
	json_t *v = a->t->view(a->state);
	cr_assert_not_null(v);
	return v;
}

/* Snapshot, serialise, parse, restore into a fresh state: snapshot and view must match. */
static void assert_round_trip(const struct agg *a)
{
	json_t *snap = snap_of(a);
	char *text = dump(snap);
	json_t *back = J(text);
	struct agg b = agg_new(a->t);
	cr_assert_eq(a->t->restore(b.state, back), FD_OK, "restore of %s", text);
	json_t *snap2 = snap_of(&b), *v1 = view_of(a), *v2 = view_of(&b);
	cr_assert(json_equal(snap, snap2), "snapshot differs after restore: %s", text);
	cr_assert(json_equal(v1, v2), "view differs after restore: %s", text);
	json_decref(snap);
	json_decref(snap2);
	json_decref(back);
	json_decref(v1);
	json_decref(v2);
	free(text);
	agg_free(&b);
}

/*
 * Decide (checking the state is untouched) into an uninitialised decision:
 * the handler must overwrite every byte that matters.
 */
static void decide_j(struct agg *a, const char *cmd, const json_t *payload, struct fd_decision *d)
{
	const struct fd_command_type *c = fd_aggregate_command(a->t, cmd);
	cr_assert_not_null(c, "no command %s", cmd);
	json_t *before = snap_of(a);
	memset(d, 0xA5, sizeof *d);
	cr_assert_eq(c->decide(a->state, a->version > 0, payload, d), FD_OK);
	json_t *after = snap_of(a);
	cr_assert(json_equal(before, after), "decide %s changed the state", cmd);
	json_decref(before);
	json_decref(after);
}

/* Apply every decided event; each must be accepted by apply. */
static void apply_decision(struct agg *a, const struct fd_decision *d)
{
	size_t i;
	json_t *e;
	cr_assert(json_is_array(d->events) && json_array_size(d->events) > 0);
	json_array_foreach(d->events, i, e) {
		const char *type = json_string_value(json_object_get(e, "type"));
		cr_assert_not_null(type);
		cr_assert_eq(json_object_size(e), 2, "an event is exactly {type, data}");
		enum fd_err err = a->t->apply(a->state, type, json_object_get(e, "data"));
		cr_assert_eq(err, FD_OK, "decided %s does not apply: %s", type, fd_err_name(err));
		a->version++;
	}
}

/* The command must succeed; its events are applied and returned (caller decrefs). */
static json_t *accept_j(struct agg *a, const char *cmd, const json_t *payload)
{
	struct fd_decision d;
	decide_j(a, cmd, payload, &d);
	cr_assert_eq(d.outcome, FD_DECIDED, "%s: expected events, got %s (%s)", cmd, d.slug, d.detail);
	apply_decision(a, &d);
	json_t *events = json_incref(d.events);
	fd_decision_release(&d);
	cr_assert_null(d.events);
	assert_round_trip(a);
	return events;
}

static json_t *accept(struct agg *a, const char *cmd, const char *payload)
{
	json_t *p = J(payload);
	json_t *events = accept_j(a, cmd, p);
	json_decref(p);
	return events;
}

/* Accept and check the single decided event's type and data. */
static void accept_event(struct agg *a, const char *cmd, const char *payload, const char *type, const char *data)
{
	json_t *events = accept(a, cmd, payload);
	cr_assert_eq(json_array_size(events), 1);
	json_t *e = json_array_get(events, 0), *want = J(data);
	cr_assert_str_eq(json_string_value(json_object_get(e, "type")), type);
	char *got = dump(json_object_get(e, "data"));
	cr_assert(json_equal(json_object_get(e, "data"), want), "%s data %s, want %s", type, got, data);
	free(got);
	json_decref(want);
	json_decref(events);
}

static void refused_j(struct agg *a, const char *cmd, const json_t *payload, const char *slug)
{
	struct fd_decision d;
	decide_j(a, cmd, payload, &d);
	cr_assert_eq(d.outcome, FD_REFUSED, "%s: expected refusal %s, got outcome %d (%s)", cmd, slug, d.outcome,
		     d.slug);
	cr_assert_str_eq(d.slug, slug);
	cr_assert_neq(d.title[0], '\0', "a refusal has a title");
	cr_assert_null(d.events);
	fd_decision_release(&d);
}

static void refused(struct agg *a, const char *cmd, const char *payload, const char *slug)
{
	json_t *p = J(payload);
	refused_j(a, cmd, p, slug);
	json_decref(p);
}

static void invalid_j(struct agg *a, const char *cmd, const json_t *payload, const char *field)
{
	struct fd_decision d;
	decide_j(a, cmd, payload, &d);
	cr_assert_eq(d.outcome, FD_INVALID, "%s: expected invalid %s, got outcome %d (%s)", cmd, field, d.outcome,
		     d.slug);
	cr_assert_str_eq(d.field, field);
	cr_assert_neq(d.detail[0], '\0');
	cr_assert_null(d.events);
	fd_decision_release(&d);
}

static void invalid(struct agg *a, const char *cmd, const char *payload, const char *field)
{
	json_t *p = J(payload);
	invalid_j(a, cmd, p, field);
	json_decref(p);
}

static void expect_view(const struct agg *a, const char *want)
{
	json_t *v = view_of(a), *w = J(want);
	char *got = dump(v);
	cr_assert(json_equal(v, w), "view %s, want %s", got, want);
	free(got);
	json_decref(v);
	json_decref(w);
}

/* apply must refuse the event and leave the state exactly as it was. */
static void apply_rejected_j(struct agg *a, const char *type, const json_t *data)
{
	json_t *before = snap_of(a), *copy = json_deep_copy(data);
	cr_assert_eq(apply_stored(a, type, copy, 1), FD_ERR_INVAL, "%s must be rejected", type);
	json_decref(copy);
	json_t *after = snap_of(a);
	cr_assert(json_equal(before, after), "a rejected %s changed the state", type);
	json_decref(before);
	json_decref(after);
}

static void apply_rejected(struct agg *a, const char *type, const char *data)
{
	json_t *d = J(data);
	apply_rejected_j(a, type, d);
	json_decref(d);
}

static void restore_rejected(const struct fd_aggregate_type *t, const char *snap)
{
	struct agg b = agg_new(t);
	json_t *before = snap_of(&b), *s = J(snap);
	cr_assert_eq(t->restore(b.state, s), FD_ERR_INVAL, "restore must reject %s", snap);
	json_t *after = snap_of(&b);
	cr_assert(json_equal(before, after), "a rejected restore changed the state");
	json_decref(before);
	json_decref(after);
	json_decref(s);
	agg_free(&b);
}

/* ---- framework: type tables, ids, decisions ---------------------------------- */

Test(aggregate, type_tables)
{
	const struct fd_aggregate_type *types[] = {&fd_order_type, &fd_product_type, &fd_payment_type};
	const char *names[] = {"order", "product", "payment"};
	const char *ids[] = {"order_id", "product_id", "payment_id"};
	const bool uuid[] = {true, false, true};
	for (size_t i = 0; i < 3; i++) {
		const struct fd_aggregate_type *t = types[i];
		cr_assert_str_eq(t->name, names[i]);
		cr_assert_str_eq(t->category, names[i]);
		cr_assert_str_eq(t->id_field, ids[i]);
		cr_assert_eq(t->id_is_uuid, uuid[i]);
		cr_assert_eq(t->schema_version, 1);
		cr_assert_eq(t->snapshot_every, 100);
		cr_assert(t->init && t->release && t->apply && t->snapshot && t->restore && t->view);
		for (size_t c = 0; c < t->ncommands; c++) {
			cr_assert_not_null(t->commands[c].decide);
			cr_assert_eq(fd_aggregate_command(t, t->commands[c].name), &t->commands[c]);
		}
	}
	cr_assert_eq(fd_order_type.state_size, sizeof(struct fd_order));
	cr_assert_eq(fd_product_type.state_size, sizeof(struct fd_product));
	cr_assert_eq(fd_payment_type.state_size, sizeof(struct fd_payment));
	cr_assert_eq(fd_order_type.ncommands, 7);
	cr_assert_eq(fd_product_type.ncommands, 5);
	cr_assert_eq(fd_payment_type.ncommands, 5);
}

Test(aggregate, command_lookup)
{
	const char *order[] = {"create", "add_line", "remove_line", "place", "confirm", "ship", "cancel"};
	for (size_t i = 0; i < 7; i++) {
		const struct fd_command_type *c = fd_aggregate_command(&fd_order_type, order[i]);
		cr_assert_not_null(c, "%s", order[i]);
		cr_assert_str_eq(c->name, order[i]);
	}
	const char *product[] = {"create", "restock", "reserve", "release", "commit"};
	for (size_t i = 0; i < 5; i++)
		cr_assert_not_null(fd_aggregate_command(&fd_product_type, product[i]), "%s", product[i]);
	const char *payment[] = {"request", "record_failure", "authorise", "decline", "refund"};
	for (size_t i = 0; i < 5; i++)
		cr_assert_not_null(fd_aggregate_command(&fd_payment_type, payment[i]), "%s", payment[i]);
	cr_assert_null(fd_aggregate_command(&fd_order_type, "refund"));
	cr_assert_null(fd_aggregate_command(&fd_order_type, "Create"));
	cr_assert_null(fd_aggregate_command(&fd_order_type, ""));
	cr_assert_null(fd_aggregate_command(&fd_order_type, NULL));
	cr_assert_null(fd_aggregate_command(NULL, "create"));
}

Test(aggregate, id_valid_uuid_types)
{
	cr_assert(fd_aggregate_id_valid(&fd_order_type, OID1));
	cr_assert(fd_aggregate_id_valid(&fd_payment_type, "0193F1A2-4B10-7C3E-9A41-6D2F0E8B7C11"));
	cr_assert_not(fd_aggregate_id_valid(&fd_order_type, "0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c1"));
	cr_assert_not(fd_aggregate_id_valid(&fd_order_type, "0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c111"));
	cr_assert_not(fd_aggregate_id_valid(&fd_order_type, "0193f1a24b107c3e9a416d2f0e8b7c11"));
	cr_assert_not(fd_aggregate_id_valid(&fd_order_type, "g193f1a2-4b10-7c3e-9a41-6d2f0e8b7c11"));
	cr_assert_not(fd_aggregate_id_valid(&fd_order_type, "SKU-1"), "a SKU is not an order id");
	cr_assert_not(fd_aggregate_id_valid(&fd_order_type, ""));
	cr_assert_not(fd_aggregate_id_valid(&fd_order_type, NULL));
}

Test(aggregate, id_valid_sku_types)
{
	char *max = repeat('a', 64), *over = repeat('a', 65);
	cr_assert(fd_aggregate_id_valid(&fd_product_type, "SKU-1"));
	cr_assert(fd_aggregate_id_valid(&fd_product_type, "A.b_c:d-9"));
	cr_assert(fd_aggregate_id_valid(&fd_product_type, "x"));
	cr_assert(fd_aggregate_id_valid(&fd_product_type, max));
	cr_assert(fd_aggregate_id_valid(&fd_product_type, OID1), "a UUID is also a valid SKU");
	cr_assert_not(fd_aggregate_id_valid(&fd_product_type, over));
	cr_assert_not(fd_aggregate_id_valid(&fd_product_type, ""));
	cr_assert_not(fd_aggregate_id_valid(&fd_product_type, NULL));
	const char *bad[] = {"a b", "a/b", "a%2F", "caf\xc3\xa9", "a\tb", "a?b", "a#b", "..\\x", "a,b", "a+b"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		cr_assert_not(fd_aggregate_id_valid(&fd_product_type, bad[i]), "%s", bad[i]);
	free(max);
	free(over);
}

Test(decision, decide_event_wraps_type_and_data)
{
	struct fd_decision d;
	memset(&d, 0x5A, sizeof d);
	cr_assert_eq(fd_decide_event(&d, "Thing", json_pack("{s:i}", "n", 1)), FD_OK);
	cr_assert_eq(d.outcome, FD_DECIDED);
	json_t *want = J("[{\"type\":\"Thing\",\"data\":{\"n\":1}}]");
	cr_assert(json_equal(d.events, want));
	cr_assert_eq(d.slug[0], '\0');
	json_decref(want);
	fd_decision_release(&d);
	cr_assert_null(d.events);
	fd_decision_release(&d); /* twice is harmless */
	fd_decision_release(NULL);
}

Test(decision, decide_event_null_data_is_nomem)
{
	struct fd_decision d;
	memset(&d, 0x5A, sizeof d);
	cr_assert_eq(fd_decide_event(&d, "Thing", NULL), FD_ERR_NOMEM);
	cr_assert_null(d.events, "no events after an error");
	fd_decision_release(&d);
}

Test(decision, decide_events_steals_array)
{
	struct fd_decision d;
	json_t *events = J("[{\"type\":\"A\",\"data\":{}},{\"type\":\"B\",\"data\":{}}]");
	fd_decide_events(&d, events);
	cr_assert_eq(d.outcome, FD_DECIDED);
	cr_assert_eq(d.events, events);
	cr_assert_eq(json_array_size(d.events), 2);
	fd_decision_release(&d);
}

Test(decision, invalid_and_refuse_fill_fields)
{
	struct fd_decision d;
	memset(&d, 0x5A, sizeof d);
	fd_decide_invalid(&d, "/quantity", "bad %d", 7);
	cr_assert_eq(d.outcome, FD_INVALID);
	cr_assert_str_eq(d.field, "/quantity");
	cr_assert_str_eq(d.detail, "bad 7");
	cr_assert_neq(d.slug[0], '\0');
	cr_assert_null(d.events);

	fd_decide_refuse(&d, "order-not-draft", "Order is not a draft", "the order is %s", "placed");
	cr_assert_eq(d.outcome, FD_REFUSED);
	cr_assert_str_eq(d.slug, "order-not-draft");
	cr_assert_str_eq(d.title, "Order is not a draft");
	cr_assert_str_eq(d.detail, "the order is placed");
	cr_assert_eq(d.field[0], '\0', "a refusal names no field");
	cr_assert_null(d.events);
}

Test(decision, long_texts_are_truncated)
{
	struct fd_decision d;
	char *longs = repeat('x', 1000);
	fd_decide_refuse(&d, longs, longs, "%s", longs);
	cr_assert_eq(strlen(d.slug), sizeof d.slug - 1);
	cr_assert_eq(strlen(d.title), sizeof d.title - 1);
	cr_assert_eq(strlen(d.detail), sizeof d.detail - 1);
	fd_decide_invalid(&d, longs, "%s", longs);
	cr_assert_eq(strlen(d.field), sizeof d.field - 1);
	free(longs);
}

/* ---- payload helpers ---------------------------------------------------------- */

Test(payload, string_ok_and_borrowed)
{
	struct fd_decision d;
	json_t *p = J("{\"name\":\"caf\xc3\xa9\"}");
	const char *s = NULL;
	cr_assert(fd_payload_string(p, "name", 1, 4, false, &s, &d));
	cr_assert_eq(s, json_string_value(json_object_get(p, "name")), "borrowed, not copied");
	json_decref(p);
}

Test(payload, string_length_counts_code_points)
{
	struct fd_decision d;
	const char *s;
	/* three 2-byte characters, one 3-byte, one 4-byte: 5 characters in 13 bytes */
	json_t *p = json_pack("{s:s}", "k", "\xc3\xa9\xc3\xa9\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	cr_assert(fd_payload_string(p, "k", 5, 5, false, &s, &d));
	cr_assert_not(fd_payload_string(p, "k", 1, 4, false, &s, &d));
	cr_assert_eq(d.outcome, FD_INVALID);
	cr_assert_str_eq(d.field, "/k");
	cr_assert_not(fd_payload_string(p, "k", 6, 10, false, &s, &d));
	json_decref(p);
}

Test(payload, string_missing_optional_empty_wrong_type)
{
	struct fd_decision d;
	const char *s = "sentinel";
	json_t *p = J("{\"n\":1,\"e\":\"\",\"z\":null,\"a\":[\"x\"]}");
	cr_assert(fd_payload_string(p, "missing", 1, 10, true, &s, &d));
	cr_assert_null(s, "a missing optional string is NULL");
	cr_assert_not(fd_payload_string(p, "missing", 1, 10, false, &s, &d));
	cr_assert_str_eq(d.field, "/missing");
	cr_assert_not(fd_payload_string(p, "n", 1, 10, false, &s, &d));
	cr_assert_str_eq(d.field, "/n");
	cr_assert_not(fd_payload_string(p, "e", 1, 10, false, &s, &d), "empty is below the minimum");
	cr_assert(fd_payload_string(p, "e", 0, 10, false, &s, &d));
	cr_assert_not(fd_payload_string(p, "z", 1, 10, true, &s, &d), "null is not a string, even when optional");
	cr_assert_not(fd_payload_string(p, "a", 1, 10, false, &s, &d));
	cr_assert_not(fd_payload_string(NULL, "n", 1, 10, false, &s, &d));
	json_decref(p);
}

Test(payload, string_with_nul_is_invalid)
{
	struct fd_decision d;
	const char *s;
	json_t *p = json_object();
	json_object_set_new(p, "customer_id", json_stringn("ab\0cd", 5));
	cr_assert_eq(json_string_length(json_object_get(p, "customer_id")), 5);
	cr_assert_not(fd_payload_string(p, "customer_id", 1, 128, false, &s, &d));
	cr_assert_eq(d.outcome, FD_INVALID);
	cr_assert_str_eq(d.field, "/customer_id");
	json_decref(p);
}

Test(payload, string_invalid_utf8_is_invalid)
{
	struct fd_decision d;
	const char *s;
	const char *bad[] = {"\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xff", "a\x80"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		json_t *p = json_object();
		json_object_set_new(p, "k", json_stringn_nocheck(bad[i], strlen(bad[i])));
		cr_assert_not(fd_payload_string(p, "k", 0, 100, false, &s, &d), "case %zu", i);
		json_decref(p);
	}
}

Test(payload, pointer_escapes_key)
{
	struct fd_decision d;
	const char *s;
	json_t *p = J("{}");
	cr_assert_not(fd_payload_string(p, "a/b~c", 1, 2, false, &s, &d));
	cr_assert_str_eq(d.field, "/a~1b~0c");
	json_decref(p);
}

Test(payload, int_accepts_only_json_integers)
{
	struct fd_decision d;
	int64_t v = 0;
	json_t *p = J("{\"i\":7,\"r\":1.0,\"s\":\"1\",\"t\":true,\"f\":false,\"n\":null,\"o\":{},\"e\":1e3}");
	cr_assert(fd_payload_int(p, "i", 1, 10, false, &v, &d));
	cr_assert_eq(v, 7);
	const char *bad[] = {"r", "s", "t", "f", "n", "o", "e"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		v = 99;
		cr_assert_not(fd_payload_int(p, bad[i], 0, 10000, false, &v, &d), "%s", bad[i]);
		cr_assert_eq(d.outcome, FD_INVALID);
		cr_assert_eq(d.field[0], '/');
		cr_assert_str_eq(d.field + 1, bad[i]);
		cr_assert_eq(v, 99, "out untouched on failure");
	}
	json_decref(p);
}

Test(payload, int_range_bounds)
{
	struct fd_decision d;
	int64_t v;
	json_t *p = json_pack("{s:I, s:I, s:I, s:I, s:I}", "lo", (json_int_t)1, "hi", (json_int_t)FD_QUANTITY_MAX, "neg",
			      (json_int_t)-1, "over", (json_int_t)FD_QUANTITY_MAX + 1, "huge", (json_int_t)INT64_MAX);
	cr_assert(fd_payload_int(p, "lo", 1, FD_QUANTITY_MAX, false, &v, &d));
	cr_assert_eq(v, 1);
	cr_assert(fd_payload_int(p, "hi", 1, FD_QUANTITY_MAX, false, &v, &d));
	cr_assert_eq(v, FD_QUANTITY_MAX);
	cr_assert_not(fd_payload_int(p, "neg", 0, FD_QUANTITY_MAX, false, &v, &d));
	cr_assert_str_eq(d.field, "/neg");
	cr_assert_not(fd_payload_int(p, "over", 1, FD_QUANTITY_MAX, false, &v, &d));
	cr_assert_not(fd_payload_int(p, "huge", 1, FD_QUANTITY_MAX, false, &v, &d));
	cr_assert(fd_payload_int(p, "huge", 0, INT64_MAX, false, &v, &d));
	cr_assert_eq(v, INT64_MAX);
	json_decref(p);
}

Test(payload, int_missing_and_optional)
{
	struct fd_decision d;
	int64_t v = 42;
	json_t *p = J("{}");
	cr_assert(fd_payload_int(p, "amount_cents", 1, 10, true, &v, &d));
	cr_assert_eq(v, 42, "a missing optional integer keeps the preset default");
	cr_assert_not(fd_payload_int(p, "amount_cents", 1, 10, false, &v, &d));
	cr_assert_eq(d.outcome, FD_INVALID);
	cr_assert_str_eq(d.field, "/amount_cents");
	json_decref(p);
}

Test(payload, only_rejects_unknown_fields)
{
	struct fd_decision d;
	static const char *const keys[] = {"a", "b"};
	json_t *ok = J("{\"a\":1}"), *both = J("{\"a\":1,\"b\":2}"), *extra = J("{\"a\":1,\"zz\":2}");
	json_t *empty = J("{}"), *arr = J("[]"), *str = J("\"x\"");
	cr_assert(fd_payload_only(ok, keys, 2, &d));
	cr_assert(fd_payload_only(both, keys, 2, &d));
	cr_assert(fd_payload_only(empty, keys, 2, &d));
	cr_assert(fd_payload_only(empty, NULL, 0, &d));
	cr_assert_not(fd_payload_only(ok, NULL, 0, &d));
	cr_assert_str_eq(d.field, "/a");
	cr_assert_not(fd_payload_only(extra, keys, 2, &d));
	cr_assert_eq(d.outcome, FD_INVALID);
	cr_assert_str_eq(d.field, "/zz");
	cr_assert_not(fd_payload_only(arr, keys, 2, &d));
	cr_assert_str_eq(d.field, "");
	cr_assert_not(fd_payload_only(str, keys, 2, &d));
	cr_assert_not(fd_payload_only(NULL, keys, 2, &d));
	json_decref(ok);
	json_decref(both);
	json_decref(extra);
	json_decref(empty);
	json_decref(arr);
	json_decref(str);
}

Test(payload, only_rejects_key_with_nul)
{
	struct fd_decision d;
	static const char *const keys[] = {"a"};
	json_t *p = json_object();
	cr_assert_eq(json_object_setn_new(p, "a\0b", 3, json_integer(1)), 0);
	cr_assert_not(fd_payload_only(p, keys, 1, &d), "\"a\\u0000b\" is not \"a\"");
	cr_assert_eq(d.outcome, FD_INVALID);
	json_decref(p);
}

Test(payload, uuid_canonicalises)
{
	struct fd_decision d;
	char out[FD_UUID_STRLEN + 1];
	json_t *p = J("{\"u\":\"0193F1A2-4B10-7C3E-9A41-6D2F0E8B7C11\",\"bad\":\"nope\",\"n\":5}");
	cr_assert(fd_payload_uuid(p, "u", out, &d));
	cr_assert_str_eq(out, OID1);
	cr_assert_not(fd_payload_uuid(p, "bad", out, &d));
	cr_assert_str_eq(d.field, "/bad");
	cr_assert_not(fd_payload_uuid(p, "n", out, &d));
	cr_assert_not(fd_payload_uuid(p, "missing", out, &d));
	json_decref(p);
}

/* ---- order ---------------------------------------------------------------------- */

#define CREATED "[\"OrderCreated\",{\"customer_id\":\"c1\"}]"
#define LINE(p, q, c) "[\"OrderLineAdded\",{\"product_id\":\"" p "\",\"quantity\":" #q ",\"unit_price_cents\":" #c "}]"

static struct agg order_with(const char *events)
{
	struct agg a = agg_new(&fd_order_type);
	given(&a, events);
	return a;
}

/* An order in status `to` with one line SKU-1 x2 @150 (cancelled from draft). */
static struct agg order_in(enum fd_order_status to)
{
	struct agg a = order_with("[" CREATED "," LINE("SKU-1", 2, 150) "]");
	if (to == FD_ORDER_CANCELLED)
		given(&a, "[[\"OrderCancelled\",{\"reason\":\"r\"}]]");
	if (to >= FD_ORDER_PLACED && to != FD_ORDER_CANCELLED)
		given(&a, "[[\"OrderPlaced\",{\"lines\":[{\"product_id\":\"SKU-1\",\"quantity\":2,"
			  "\"unit_price_cents\":150}],\"total_cents\":300}]]");
	if (to >= FD_ORDER_CONFIRMED && to != FD_ORDER_CANCELLED)
		given(&a, "[[\"OrderConfirmed\",{}]]");
	if (to == FD_ORDER_SHIPPED)
		given(&a, "[[\"OrderShipped\",{}]]");
	cr_assert_eq(((struct fd_order *)a.state)->status, to);
	return a;
}

Test(order, create)
{
	struct agg a = agg_new(&fd_order_type);
	expect_view(&a, "{\"customer_id\":null,\"status\":\"none\",\"lines\":[],\"total_cents\":0}");
	accept_event(&a, "create", "{\"customer_id\":\"cust-42\"}", "OrderCreated", "{\"customer_id\":\"cust-42\"}");
	expect_view(&a, "{\"customer_id\":\"cust-42\",\"status\":\"draft\",\"lines\":[],\"total_cents\":0}");
	const struct fd_order *o = a.state;
	cr_assert_eq(o->status, FD_ORDER_DRAFT);
	cr_assert_str_eq(o->customer_id, "cust-42");
	agg_free(&a);
}

Test(order, create_refused_when_exists)
{
	for (enum fd_order_status s = FD_ORDER_DRAFT; s <= FD_ORDER_CANCELLED; s++) {
		struct agg a = order_in(s);
		refused(&a, "create", "{\"customer_id\":\"c2\"}", "order-exists");
		agg_free(&a);
	}
}

Test(order, create_payload_rules)
{
	struct agg a = agg_new(&fd_order_type);
	char *c128 = repeat('c', 128), *c129 = repeat('c', 129);
	invalid(&a, "create", "{}", "/customer_id");
	invalid(&a, "create", "{\"customer_id\":\"\"}", "/customer_id");
	invalid(&a, "create", "{\"customer_id\":7}", "/customer_id");
	invalid(&a, "create", "{\"customer_id\":null}", "/customer_id");
	invalid(&a, "create", "{\"customer_id\":\"c\",\"vip\":true}", "/vip");
	invalid(&a, "create", "[]", "");
	json_t *p = json_pack("{s:s}", "customer_id", c129);
	invalid_j(&a, "create", p, "/customer_id");
	json_decref(p);
	p = json_object();
	json_object_set_new(p, "customer_id", json_stringn("c\0d", 3));
	invalid_j(&a, "create", p, "/customer_id");
	json_decref(p);
	p = json_pack("{s:s}", "customer_id", c128);
	json_decref(accept_j(&a, "create", p));
	json_decref(p);
	cr_assert_eq(strlen(((struct fd_order *)a.state)->customer_id), 128);
	free(c128);
	free(c129);
	agg_free(&a);
}

Test(order, commands_on_missing_order_are_not_found)
{
	struct agg a = agg_new(&fd_order_type);
	refused(&a, "add_line", "{\"product_id\":\"SKU-1\",\"quantity\":1,\"unit_price_cents\":1}", "order-not-found");
	refused(&a, "remove_line", "{\"product_id\":\"SKU-1\"}", "order-not-found");
	refused(&a, "place", "{}", "order-not-found");
	refused(&a, "confirm", "{}", "order-not-found");
	refused(&a, "ship", "{}", "order-not-found");
	refused(&a, "cancel", "{\"reason\":\"x\"}", "order-not-found");
	/* existence is checked before the payload */
	refused(&a, "add_line", "{\"bogus\":1}", "order-not-found");
	/* a stream of foreign events alone does not create an order */
	cr_assert_eq(apply_text(&a, "SomethingElse", "{\"x\":1}"), FD_OK);
	cr_assert_eq(a.version, 1);
	refused(&a, "place", "{}", "order-not-found");
	json_decref(accept(&a, "create", "{\"customer_id\":\"c\"}"));
	agg_free(&a);
}

Test(order, add_line_and_merge_same_price)
{
	struct agg a = order_with("[" CREATED "]");
	accept_event(&a, "add_line", "{\"product_id\":\"SKU-1\",\"quantity\":2,\"unit_price_cents\":150}",
		     "OrderLineAdded",
		     "{\"product_id\":\"SKU-1\",\"quantity\":2,\"unit_price\":{\"amount_cents\":150,\"currency\":\"EUR\"}}");
	json_decref(accept(&a, "add_line", "{\"product_id\":\"B.2:x_y-z\",\"quantity\":1,\"unit_price_cents\":0}"));
	json_decref(accept(&a, "add_line", "{\"product_id\":\"SKU-1\",\"quantity\":3,\"unit_price_cents\":150}"));
	expect_view(&a, "{\"currency\":\"EUR\",\"customer_id\":\"c1\",\"status\":\"draft\",\"total_cents\":750,\"lines\":["
			"{\"product_id\":\"SKU-1\",\"quantity\":5,\"unit_price_cents\":150,\"currency\":\"EUR\"},"
			"{\"product_id\":\"B.2:x_y-z\",\"quantity\":1,\"unit_price_cents\":0,\"currency\":\"EUR\"}]}");
	cr_assert_eq(((struct fd_order *)a.state)->nlines, 2, "merged, not a second line");
	agg_free(&a);
}

Test(order, add_line_price_mismatch)
{
	struct agg a = order_with("[" CREATED "," LINE("SKU-1", 2, 150) "]");
	refused(&a, "add_line", "{\"product_id\":\"SKU-1\",\"quantity\":1,\"unit_price_cents\":151}", "price-mismatch");
	refused(&a, "add_line", "{\"product_id\":\"SKU-1\",\"quantity\":1,\"unit_price_cents\":0}", "price-mismatch");
	apply_rejected(&a, "OrderLineAdded", "{\"product_id\":\"SKU-1\",\"quantity\":1,\"unit_price_cents\":151}");
	agg_free(&a);
}

Test(order, add_line_payload_rules)
{
	struct agg a = order_with("[" CREATED "]");
	char *sku64 = repeat('s', 64), *sku65 = repeat('s', 65);
	char buf[256];
	invalid(&a, "add_line", "{\"quantity\":1,\"unit_price_cents\":1}", "/product_id");
	invalid(&a, "add_line", "{\"product_id\":\"a b\",\"quantity\":1,\"unit_price_cents\":1}", "/product_id");
	invalid(&a, "add_line", "{\"product_id\":\"\",\"quantity\":1,\"unit_price_cents\":1}", "/product_id");
	snprintf(buf, sizeof buf, "{\"product_id\":\"%s\",\"quantity\":1,\"unit_price_cents\":1}", sku65);
	invalid(&a, "add_line", buf, "/product_id");
	invalid(&a, "add_line", "{\"product_id\":\"P\",\"quantity\":0,\"unit_price_cents\":1}", "/quantity");
	invalid(&a, "add_line", "{\"product_id\":\"P\",\"quantity\":-3,\"unit_price_cents\":1}", "/quantity");
	invalid(&a, "add_line", "{\"product_id\":\"P\",\"quantity\":1000001,\"unit_price_cents\":1}", "/quantity");
	invalid(&a, "add_line", "{\"product_id\":\"P\",\"quantity\":1.0,\"unit_price_cents\":1}", "/quantity");
	invalid(&a, "add_line", "{\"product_id\":\"P\",\"quantity\":\"1\",\"unit_price_cents\":1}", "/quantity");
	invalid(&a, "add_line", "{\"product_id\":\"P\",\"quantity\":true,\"unit_price_cents\":1}", "/quantity");
	invalid(&a, "add_line", "{\"product_id\":\"P\",\"quantity\":9223372036854775807,\"unit_price_cents\":1}",
		"/quantity");
	invalid(&a, "add_line", "{\"product_id\":\"P\",\"quantity\":1,\"unit_price_cents\":-1}", "/unit_price_cents");
	invalid(&a, "add_line", "{\"product_id\":\"P\",\"quantity\":1,\"unit_price_cents\":100000000001}",
		"/unit_price_cents");
	invalid(&a, "add_line", "{\"product_id\":\"P\",\"quantity\":1}", "/unit_price_cents");
	invalid(&a, "add_line", "{\"product_id\":\"P\",\"quantity\":1,\"unit_price_cents\":1,\"note\":\"x\"}", "/note");
	snprintf(buf, sizeof buf, "{\"product_id\":\"%s\",\"quantity\":1000000,\"unit_price_cents\":100000000000}",
		 sku64);
	json_decref(accept(&a, "add_line", buf));
	cr_assert_eq(fd_order_total_cents(a.state), 100000000000000000LL);
	free(sku64);
	free(sku65);
	agg_free(&a);
}

Test(order, line_commands_need_a_draft)
{
	for (enum fd_order_status s = FD_ORDER_PLACED; s <= FD_ORDER_CANCELLED; s++) {
		struct agg a = order_in(s);
		struct fd_decision d;
		json_t *p = J("{\"product_id\":\"SKU-2\",\"quantity\":1,\"unit_price_cents\":1}");
		decide_j(&a, "add_line", p, &d);
		cr_assert_eq(d.outcome, FD_REFUSED);
		cr_assert_str_eq(d.slug, "order-not-draft");
		cr_assert_str_eq(d.title, "Order is not a draft");
		json_decref(p);
		refused(&a, "remove_line", "{\"product_id\":\"SKU-1\"}", "order-not-draft");
		apply_rejected(&a, "OrderLineAdded", "{\"product_id\":\"SKU-2\",\"quantity\":1,\"unit_price_cents\":1}");
		apply_rejected(&a, "OrderLineRemoved", "{\"product_id\":\"SKU-1\"}");
		agg_free(&a);
	}
}

Test(order, too_many_lines)
{
	struct agg a = order_with("[" CREATED "]");
	for (int i = 0; i < FD_ORDER_MAX_LINES; i++) {
		char sku[32];
		snprintf(sku, sizeof sku, "P%d", i);
		json_t *data = json_pack("{s:s, s:i, s:{s:i, s:s}}", "product_id", sku, "quantity", 1, "unit_price",
					 "amount_cents", 10, "currency", "EUR");
		cr_assert_eq(a.t->apply(a.state, "OrderLineAdded", data), FD_OK, "line %d", i);
		json_decref(data);
	}
	cr_assert_eq(((struct fd_order *)a.state)->nlines, FD_ORDER_MAX_LINES);
	refused(&a, "add_line", "{\"product_id\":\"one-more\",\"quantity\":1,\"unit_price_cents\":10}", "too-many-lines");
	apply_rejected(&a, "OrderLineAdded", "{\"product_id\":\"one-more\",\"quantity\":1,\"unit_price_cents\":10}");
	/* adding to an existing line is still fine */
	json_decref(accept(&a, "add_line", "{\"product_id\":\"P7\",\"quantity\":4,\"unit_price_cents\":10}"));
	cr_assert_eq(fd_order_total_cents(a.state), (FD_ORDER_MAX_LINES + 4) * 10);
	json_decref(accept(&a, "remove_line", "{\"product_id\":\"P0\"}"));
	json_decref(accept(&a, "add_line", "{\"product_id\":\"one-more\",\"quantity\":1,\"unit_price_cents\":10}"));
	agg_free(&a);
}

Test(order, amount_too_large)
{
	struct agg a = order_with("[" CREATED "]");
	/* each line is 1e6 * 1e11 = 1e17; 92 of them fit in int64, 93 do not */
	for (int i = 0; i < 92; i++) {
		char payload[128];
		snprintf(payload, sizeof payload,
			 "{\"product_id\":\"P%d\",\"quantity\":1000000,\"unit_price_cents\":100000000000}", i);
		struct fd_decision d;
		json_t *p = J(payload);
		decide_j(&a, "add_line", p, &d);
		cr_assert_eq(d.outcome, FD_DECIDED, "line %d", i);
		apply_decision(&a, &d);
		fd_decision_release(&d);
		json_decref(p);
	}
	cr_assert_eq(fd_order_total_cents(a.state), 9200000000000000000LL);
	refused(&a, "add_line", "{\"product_id\":\"P92\",\"quantity\":1000000,\"unit_price_cents\":100000000000}",
		"amount-too-large");
	/* merging into an existing line overflows too */
	refused(&a, "add_line", "{\"product_id\":\"P0\",\"quantity\":1000000,\"unit_price_cents\":100000000000}",
		"amount-too-large");
	apply_rejected(&a, "OrderLineAdded",
		       "{\"product_id\":\"P0\",\"quantity\":1000000,\"unit_price_cents\":100000000000}");
	/* a small line still fits */
	json_decref(accept(&a, "add_line", "{\"product_id\":\"tiny\",\"quantity\":1,\"unit_price_cents\":1}"));
	json_t *events = accept(&a, "place", "{}");
	json_t *data = json_object_get(json_array_get(events, 0), "data");
	cr_assert_eq(json_integer_value(json_object_get(data, "total_cents")), 9200000000000000001LL);
	json_decref(events);
	agg_free(&a);
}

Test(order, remove_line)
{
	struct agg a = order_with("[" CREATED "," LINE("A", 1, 100) "," LINE("B", 2, 10) "," LINE("C", 3, 1) "]");
	accept_event(&a, "remove_line", "{\"product_id\":\"B\"}", "OrderLineRemoved", "{\"product_id\":\"B\"}");
	expect_view(&a, "{\"currency\":\"EUR\",\"customer_id\":\"c1\",\"status\":\"draft\",\"total_cents\":103,\"lines\":["
			"{\"product_id\":\"A\",\"quantity\":1,\"unit_price_cents\":100,\"currency\":\"EUR\"},"
			"{\"product_id\":\"C\",\"quantity\":3,\"unit_price_cents\":1,\"currency\":\"EUR\"}]}");
	refused(&a, "remove_line", "{\"product_id\":\"B\"}", "line-not-found");
	refused(&a, "remove_line", "{\"product_id\":\"a\"}", "line-not-found");
	invalid(&a, "remove_line", "{}", "/product_id");
	invalid(&a, "remove_line", "{\"product_id\":\"A\",\"quantity\":1}", "/quantity");
	invalid(&a, "remove_line", "{\"product_id\":\"no way\"}", "/product_id");
	apply_rejected(&a, "OrderLineRemoved", "{\"product_id\":\"B\"}");
	/* a removed product can come back at a new price */
	json_decref(accept(&a, "add_line", "{\"product_id\":\"B\",\"quantity\":1,\"unit_price_cents\":99}"));
	cr_assert_eq(fd_order_total_cents(a.state), 202);
	agg_free(&a);
}

Test(order, place)
{
	struct agg a = order_with("[" CREATED "," LINE("A", 2, 150) "," LINE("B", 1, 25) "]");
	accept_event(&a, "place", "{}", "OrderPlaced",
		     "{\"total_cents\":325,\"lines\":[{\"product_id\":\"A\",\"quantity\":2,\"unit_price_cents\":150},"
		     "{\"product_id\":\"B\",\"quantity\":1,\"unit_price_cents\":25}]}");
	expect_view(&a, "{\"currency\":\"EUR\",\"customer_id\":\"c1\",\"status\":\"placed\",\"total_cents\":325,\"lines\":["
			"{\"product_id\":\"A\",\"quantity\":2,\"unit_price_cents\":150,\"currency\":\"EUR\"},"
			"{\"product_id\":\"B\",\"quantity\":1,\"unit_price_cents\":25,\"currency\":\"EUR\"}]}");
	refused(&a, "place", "{}", "order-not-draft");
	agg_free(&a);
}

Test(order, place_rules)
{
	struct agg a = order_with("[" CREATED "]");
	refused(&a, "place", "{}", "order-empty");
	apply_rejected(&a, "OrderPlaced", "{\"lines\":[],\"total_cents\":0}");
	given(&a, "[" LINE("A", 1, 5) "]");
	invalid(&a, "place", "{\"now\":true}", "/now");
	invalid(&a, "place", "[1]", "");
	/* emptied again by removal */
	given(&a, "[[\"OrderLineRemoved\",{\"product_id\":\"A\"}]]");
	refused(&a, "place", "{}", "order-empty");
	agg_free(&a);
}

Test(order, confirm_and_ship)
{
	struct agg a = order_in(FD_ORDER_DRAFT);
	refused(&a, "confirm", "{}", "order-not-placed");
	refused(&a, "ship", "{}", "order-not-confirmed");
	json_decref(accept(&a, "place", "{}"));
	refused(&a, "ship", "{}", "order-not-confirmed");
	invalid(&a, "confirm", "{\"x\":1}", "/x");
	accept_event(&a, "confirm", "{}", "OrderConfirmed", "{}");
	cr_assert_eq(((struct fd_order *)a.state)->status, FD_ORDER_CONFIRMED);
	refused(&a, "confirm", "{}", "order-not-placed");
	invalid(&a, "ship", "{\"x\":1}", "/x");
	accept_event(&a, "ship", "{}", "OrderShipped", "{}");
	expect_view(&a, "{\"currency\":\"EUR\",\"customer_id\":\"c1\",\"status\":\"shipped\",\"total_cents\":300,\"lines\":["
			"{\"product_id\":\"SKU-1\",\"quantity\":2,\"unit_price_cents\":150,\"currency\":\"EUR\"}]}");
	refused(&a, "ship", "{}", "order-not-confirmed");
	refused(&a, "confirm", "{}", "order-not-placed");
	agg_free(&a);
}

Test(order, cancel_from_each_open_status)
{
	enum fd_order_status open[] = {FD_ORDER_DRAFT, FD_ORDER_PLACED, FD_ORDER_CONFIRMED};
	for (size_t i = 0; i < 3; i++) {
		struct agg a = order_in(open[i]);
		accept_event(&a, "cancel", "{\"reason\":\"changed my mind\"}", "OrderCancelled",
			     "{\"reason\":\"changed my mind\"}");
		expect_view(&a, "{\"currency\":\"EUR\",\"customer_id\":\"c1\",\"status\":\"cancelled\",\"total_cents\":300,"
				"\"cancel_reason\":\"changed my mind\",\"lines\":["
				"{\"product_id\":\"SKU-1\",\"quantity\":2,\"unit_price_cents\":150,\"currency\":\"EUR\"}]}");
		refused(&a, "cancel", "{\"reason\":\"again\"}", "order-cancelled");
		refused(&a, "place", "{}", "order-not-draft");
		refused(&a, "confirm", "{}", "order-not-placed");
		refused(&a, "ship", "{}", "order-not-confirmed");
		agg_free(&a);
	}
}

Test(order, cancel_rules)
{
	struct agg shipped = order_in(FD_ORDER_SHIPPED);
	refused(&shipped, "cancel", "{\"reason\":\"late\"}", "order-shipped");
	apply_rejected(&shipped, "OrderCancelled", "{\"reason\":\"late\"}");
	agg_free(&shipped);

	struct agg a = order_in(FD_ORDER_DRAFT);
	char *r500 = repeat('r', 500), *r501 = repeat('r', 501);
	invalid(&a, "cancel", "{}", "/reason");
	invalid(&a, "cancel", "{\"reason\":\"\"}", "/reason");
	invalid(&a, "cancel", "{\"reason\":5}", "/reason");
	invalid(&a, "cancel", "{\"reason\":\"x\",\"force\":true}", "/force");
	json_t *p = json_pack("{s:s}", "reason", r501);
	invalid_j(&a, "cancel", p, "/reason");
	json_decref(p);
	p = json_pack("{s:s}", "reason", r500);
	json_decref(accept_j(&a, "cancel", p));
	json_decref(p);
	cr_assert_str_eq(((struct fd_order *)a.state)->cancel_reason, r500);
	free(r500);
	free(r501);
	agg_free(&a);
}

Test(order, status_names)
{
	cr_assert_str_eq(fd_order_status_name(FD_ORDER_NONE), "none");
	cr_assert_str_eq(fd_order_status_name(FD_ORDER_DRAFT), "draft");
	cr_assert_str_eq(fd_order_status_name(FD_ORDER_PLACED), "placed");
	cr_assert_str_eq(fd_order_status_name(FD_ORDER_CONFIRMED), "confirmed");
	cr_assert_str_eq(fd_order_status_name(FD_ORDER_SHIPPED), "shipped");
	cr_assert_str_eq(fd_order_status_name(FD_ORDER_CANCELLED), "cancelled");
	cr_assert_str_eq(fd_order_status_name((enum fd_order_status)99), "unknown");
}

Test(order, total_derived_from_lines)
{
	struct rng r = {0x1234567u};
	struct agg a = order_with("[" CREATED "]");
	int64_t price[8] = {0};
	int64_t qty[8] = {0};
	for (int step = 0; step < 3000; step++) {
		int k = (int)below(&r, 8);
		char payload[160];
		if (qty[k] > 0 && below(&r, 3) == 0) {
			snprintf(payload, sizeof payload, "{\"product_id\":\"P%d\"}", k);
			json_decref(accept(&a, "remove_line", payload));
			qty[k] = 0;
		} else {
			int64_t q = 1 + (int64_t)below(&r, 9), p = qty[k] ? price[k] : (int64_t)below(&r, 100000);
			snprintf(payload, sizeof payload,
				 "{\"product_id\":\"P%d\",\"quantity\":%" PRId64 ",\"unit_price_cents\":%" PRId64 "}", k, q,
				 p);
			json_decref(accept(&a, "add_line", payload));
			qty[k] += q;
			price[k] = p;
		}
		int64_t want = 0;
		for (int i = 0; i < 8; i++)
			want += qty[i] * price[i];
		cr_assert_eq(fd_order_total_cents(a.state), want, "step %d", step);
		json_t *v = view_of(&a);
		cr_assert_eq(json_integer_value(json_object_get(v, "total_cents")), want);
		json_decref(v);
	}
	agg_free(&a);
}

Test(order, apply_ignores_unknown_types)
{
	struct agg a = order_in(FD_ORDER_PLACED);
	json_t *before = snap_of(&a);
	cr_assert_eq(a.t->apply(a.state, "OrderAudited", NULL), FD_OK);
	cr_assert_eq(apply_text(&a, "orderCreated", "{\"customer_id\":\"other\"}"), FD_OK, "types are case-sensitive");
	cr_assert_eq(apply_text(&a, "", "42"), FD_OK);
	cr_assert_eq(apply_text(&a, "ProductCreated", "{\"name\":\"n\",\"stock\":1}"), FD_OK);
	json_t *after = snap_of(&a);
	cr_assert(json_equal(before, after));
	json_decref(before);
	json_decref(after);
	cr_assert_eq(a.t->apply(a.state, NULL, NULL), FD_ERR_INVAL);
	agg_free(&a);
}

Test(order, apply_rejects_malformed_known_events)
{
	struct agg none = agg_new(&fd_order_type);
	apply_rejected_j(&none, "OrderCreated", NULL);
	apply_rejected(&none, "OrderCreated", "[]");
	apply_rejected(&none, "OrderCreated", "\"c1\"");
	apply_rejected(&none, "OrderCreated", "{}");
	apply_rejected(&none, "OrderCreated", "{\"customer_id\":1}");
	apply_rejected(&none, "OrderCreated", "{\"customer_id\":\"\"}");
	apply_rejected(&none, "OrderCreated", "{\"customer_id\":\"c\",\"extra\":1}");
	/* nothing but creation is possible before creation */
	apply_rejected(&none, "OrderLineAdded", "{\"product_id\":\"A\",\"quantity\":1,\"unit_price_cents\":1}");
	apply_rejected(&none, "OrderConfirmed", "{}");
	apply_rejected(&none, "OrderCancelled", "{\"reason\":\"r\"}");
	agg_free(&none);

	struct agg a = order_in(FD_ORDER_DRAFT);
	apply_rejected(&a, "OrderCreated", "{\"customer_id\":\"again\"}");
	apply_rejected(&a, "OrderLineAdded", "{\"product_id\":\"A\",\"quantity\":-1,\"unit_price_cents\":1}");
	apply_rejected(&a, "OrderLineAdded", "{\"product_id\":\"A\",\"quantity\":0,\"unit_price_cents\":1}");
	apply_rejected(&a, "OrderLineAdded", "{\"product_id\":\"A\",\"quantity\":1,\"unit_price_cents\":-5}");
	apply_rejected(&a, "OrderLineAdded", "{\"product_id\":\"A\",\"quantity\":\"1\",\"unit_price_cents\":1}");
	apply_rejected(&a, "OrderLineAdded", "{\"product_id\":\"A\",\"quantity\":1.5,\"unit_price_cents\":1}");
	apply_rejected(&a, "OrderLineAdded", "{\"product_id\":\"A\",\"quantity\":1}");
	apply_rejected(&a, "OrderLineAdded", "{\"product_id\":[],\"quantity\":1,\"unit_price_cents\":1}");
	apply_rejected(&a, "OrderLineAdded", "{\"product_id\":\"a b\",\"quantity\":1,\"unit_price_cents\":1}");
	apply_rejected(&a, "OrderLineAdded", "[\"A\",1,1]");
	apply_rejected(&a, "OrderLineRemoved", "{\"product_id\":\"missing\"}");
	apply_rejected(&a, "OrderLineRemoved", "{}");
	apply_rejected(&a, "OrderPlaced", "{\"lines\":[{\"product_id\":\"SKU-1\",\"quantity\":2,"
					  "\"unit_price_cents\":150}],\"total_cents\":301}");
	apply_rejected(&a, "OrderPlaced", "{\"lines\":[{\"product_id\":\"SKU-1\",\"quantity\":3,"
					  "\"unit_price_cents\":150}],\"total_cents\":450}");
	apply_rejected(&a, "OrderPlaced", "{\"lines\":[],\"total_cents\":300}");
	apply_rejected(&a, "OrderPlaced", "{\"lines\":{},\"total_cents\":300}");
	apply_rejected(&a, "OrderPlaced", "{\"total_cents\":300}");
	apply_rejected(&a, "OrderPlaced", "{\"lines\":[{\"product_id\":\"SKU-1\",\"quantity\":2,"
					  "\"unit_price_cents\":150}]}");
	apply_rejected(&a, "OrderPlaced", "{\"lines\":[{\"product_id\":\"SKU-1\",\"quantity\":2,"
					  "\"unit_price_cents\":150},null],\"total_cents\":300}");
	apply_rejected(&a, "OrderConfirmed", "{}");
	apply_rejected(&a, "OrderShipped", "{}");
	apply_rejected(&a, "OrderCancelled", "{}");
	apply_rejected(&a, "OrderCancelled", "{\"reason\":null}");
	agg_free(&a);

	struct agg placed = order_in(FD_ORDER_PLACED);
	apply_rejected(&placed, "OrderConfirmed", "{\"by\":\"me\"}");
	apply_rejected(&placed, "OrderConfirmed", "[]");
	apply_rejected_j(&placed, "OrderConfirmed", NULL);
	apply_rejected(&placed, "OrderShipped", "{}");
	agg_free(&placed);
}

/* ---- product -------------------------------------------------------------------- */

#define PCREATED "[\"ProductCreated\",{\"name\":\"Widget\",\"stock\":10}]"

static struct agg product_with(const char *events)
{
	struct agg a = agg_new(&fd_product_type);
	given(&a, events);
	return a;
}

static void assert_inventory_invariant(const struct fd_product *p)
{
	cr_assert_geq(p->available, 0);
	cr_assert_geq(p->reserved, 0);
	cr_assert_geq(p->committed, 0);
	cr_assert_eq(p->available + p->reserved + p->committed, p->stocked, "available %" PRId64 " + reserved %" PRId64
		     " + committed %" PRId64 " != stocked %" PRId64, p->available, p->reserved, p->committed, p->stocked);
	int64_t sum = 0;
	for (size_t i = 0; i < p->nres; i++) {
		cr_assert_gt(p->reservations[i].quantity, 0);
		sum += p->reservations[i].quantity;
		for (size_t j = i + 1; j < p->nres; j++)
			cr_assert_str_neq(p->reservations[i].order_id, p->reservations[j].order_id);
	}
	cr_assert_eq(sum, p->reserved);
}

Test(product, create)
{
	struct agg a = agg_new(&fd_product_type);
	accept_event(&a, "create", "{\"name\":\"Widget\",\"stock\":10}", "ProductCreated",
		     "{\"name\":\"Widget\",\"stock\":10}");
	expect_view(&a, "{\"name\":\"Widget\",\"available\":10,\"reserved\":0,\"committed\":0,\"stocked\":10,"
			"\"reservations\":[]}");
	refused(&a, "create", "{\"name\":\"Other\",\"stock\":1}", "product-exists");
	agg_free(&a);
}

Test(product, create_payload_rules)
{
	struct agg a = agg_new(&fd_product_type);
	char *n200 = repeat('n', 200), *n201 = repeat('n', 201);
	invalid(&a, "create", "{\"stock\":1}", "/name");
	invalid(&a, "create", "{\"name\":\"\",\"stock\":1}", "/name");
	invalid(&a, "create", "{\"name\":\"x\"}", "/stock");
	invalid(&a, "create", "{\"name\":\"x\",\"stock\":-1}", "/stock");
	invalid(&a, "create", "{\"name\":\"x\",\"stock\":1000000000001}", "/stock");
	invalid(&a, "create", "{\"name\":\"x\",\"stock\":2.0}", "/stock");
	invalid(&a, "create", "{\"name\":\"x\",\"stock\":1,\"price\":3}", "/price");
	json_t *p = json_pack("{s:s, s:i}", "name", n201, "stock", 1);
	invalid_j(&a, "create", p, "/name");
	json_decref(p);
	p = json_pack("{s:s, s:I}", "name", n200, "stock", (json_int_t)FD_STOCK_MAX);
	json_decref(accept_j(&a, "create", p));
	json_decref(p);
	cr_assert_eq(((struct fd_product *)a.state)->stocked, FD_STOCK_MAX);
	free(n200);
	free(n201);
	agg_free(&a);

	struct agg z = agg_new(&fd_product_type);
	json_decref(accept(&z, "create", "{\"name\":\"Empty\",\"stock\":0}"));
	expect_view(&z, "{\"name\":\"Empty\",\"available\":0,\"reserved\":0,\"committed\":0,\"stocked\":0,"
			"\"reservations\":[]}");
	agg_free(&z);
}

Test(product, commands_on_missing_product_are_not_found)
{
	struct agg a = agg_new(&fd_product_type);
	char buf[160];
	refused(&a, "restock", "{\"quantity\":1}", "product-not-found");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":1}", OID1);
	refused(&a, "reserve", buf, "product-not-found");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\"}", OID1);
	refused(&a, "release", buf, "product-not-found");
	refused(&a, "commit", buf, "product-not-found");
	agg_free(&a);
}

Test(product, restock)
{
	struct agg a = product_with("[" PCREATED "]");
	accept_event(&a, "restock", "{\"quantity\":5}", "ProductRestocked", "{\"quantity\":5}");
	expect_view(&a, "{\"name\":\"Widget\",\"available\":15,\"reserved\":0,\"committed\":0,\"stocked\":15,"
			"\"reservations\":[]}");
	invalid(&a, "restock", "{\"quantity\":0}", "/quantity");
	invalid(&a, "restock", "{\"quantity\":-5}", "/quantity");
	invalid(&a, "restock", "{\"quantity\":1000000000001}", "/quantity");
	invalid(&a, "restock", "{}", "/quantity");
	invalid(&a, "restock", "{\"quantity\":1,\"why\":\"x\"}", "/why");
	agg_free(&a);
}

Test(product, restock_overflow_refused)
{
	struct agg a = agg_new(&fd_product_type);
	char snap[256];
	snprintf(snap, sizeof snap,
		 "{\"exists\":true,\"name\":\"Big\",\"available\":%" PRId64 ",\"reserved\":0,\"committed\":0,"
		 "\"stocked\":%" PRId64 ",\"reservations\":[]}",
		 INT64_MAX - 5, INT64_MAX - 5);
	json_t *s = J(snap);
	cr_assert_eq(a.t->restore(a.state, s), FD_OK);
	json_decref(s);
	a.version = 1;
	refused(&a, "restock", "{\"quantity\":6}", "stock-too-large");
	apply_rejected(&a, "ProductRestocked", "{\"quantity\":6}");
	json_decref(accept(&a, "restock", "{\"quantity\":5}"));
	cr_assert_eq(((struct fd_product *)a.state)->stocked, INT64_MAX);
	agg_free(&a);
}

Test(product, reserve_release_commit)
{
	struct agg a = product_with("[" PCREATED "]");
	char buf[160];
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":4}", OID1);
	char want[160];
	snprintf(want, sizeof want, "{\"order_id\":\"%s\",\"quantity\":4}", OID1);
	accept_event(&a, "reserve", buf, "StockReserved", want);
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":6}", OID2);
	json_decref(accept(&a, "reserve", buf));
	char view[512];
	snprintf(view, sizeof view,
		 "{\"name\":\"Widget\",\"available\":0,\"reserved\":10,\"committed\":0,\"stocked\":10,"
		 "\"reservations\":[{\"order_id\":\"%s\",\"quantity\":4},{\"order_id\":\"%s\",\"quantity\":6}]}",
		 OID1, OID2);
	expect_view(&a, view);

	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\"}", OID1);
	accept_event(&a, "release", buf, "ReservationReleased", want);
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\"}", OID2);
	snprintf(want, sizeof want, "{\"order_id\":\"%s\",\"quantity\":6}", OID2);
	accept_event(&a, "commit", buf, "ReservationCommitted", want);
	expect_view(&a, "{\"name\":\"Widget\",\"available\":4,\"reserved\":0,\"committed\":6,\"stocked\":10,"
			"\"reservations\":[]}");
	assert_inventory_invariant(a.state);
	agg_free(&a);
}

Test(product, reserve_refusals)
{
	struct agg a = product_with("[" PCREATED "]");
	char buf[160];
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":11}", OID1);
	refused(&a, "reserve", buf, "insufficient-stock");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":10}", OID1);
	json_decref(accept(&a, "reserve", buf));
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":1}", OID2);
	refused(&a, "reserve", buf, "insufficient-stock");
	/* already reserved wins over insufficient stock, in any case of the id */
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":1}", "0193F1A2-4B10-7C3E-9A41-6D2F0E8B7C11");
	refused(&a, "reserve", buf, "already-reserved");
	json_decref(accept(&a, "restock", "{\"quantity\":100}"));
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":1}", OID1);
	refused(&a, "reserve", buf, "already-reserved");
	assert_inventory_invariant(a.state);
	agg_free(&a);
}

Test(product, reserve_payload_rules)
{
	struct agg a = product_with("[" PCREATED "]");
	char buf[160];
	invalid(&a, "reserve", "{\"order_id\":\"not-a-uuid\",\"quantity\":1}", "/order_id");
	invalid(&a, "reserve", "{\"order_id\":7,\"quantity\":1}", "/order_id");
	invalid(&a, "reserve", "{\"quantity\":1}", "/order_id");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":0}", OID1);
	invalid(&a, "reserve", buf, "/quantity");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":-2}", OID1);
	invalid(&a, "reserve", buf, "/quantity");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\"}", OID1);
	invalid(&a, "reserve", buf, "/quantity");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":1,\"x\":0}", OID1);
	invalid(&a, "reserve", buf, "/x");
	/* an upper-case id is stored canonically */
	json_t *events = accept(&a, "reserve", "{\"order_id\":\"0193F1A2-4B10-7C3E-9A41-6D2F0E8B7C11\",\"quantity\":2}");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(json_array_get(events, 0), "data"),
							   "order_id")), OID1);
	cr_assert_str_eq(((struct fd_product *)a.state)->reservations[0].order_id, OID1);
	json_decref(events);
	agg_free(&a);
}

Test(product, release_and_commit_need_a_reservation)
{
	struct agg a = product_with("[" PCREATED "]");
	char buf[160];
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\"}", OID1);
	refused(&a, "release", buf, "reservation-not-found");
	refused(&a, "commit", buf, "reservation-not-found");
	invalid(&a, "release", "{\"order_id\":\"x\"}", "/order_id");
	invalid(&a, "commit", "{}", "/order_id");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":3}", OID1);
	invalid(&a, "release", buf, "/quantity");
	json_decref(accept(&a, "reserve", buf));
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\"}", OID1);
	json_decref(accept(&a, "commit", buf));
	refused(&a, "commit", buf, "reservation-not-found");
	refused(&a, "release", buf, "reservation-not-found");
	/* the same order may reserve again once its reservation is closed */
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":7}", OID1);
	json_decref(accept(&a, "reserve", buf));
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\"}", OID1);
	json_decref(accept(&a, "release", buf));
	expect_view(&a, "{\"name\":\"Widget\",\"available\":7,\"reserved\":0,\"committed\":3,\"stocked\":10,"
			"\"reservations\":[]}");
	agg_free(&a);
}

Test(product, apply_rejects_malformed_and_impossible_events)
{
	struct agg none = agg_new(&fd_product_type);
	apply_rejected(&none, "ProductCreated", "{\"name\":\"x\",\"stock\":-1}");
	apply_rejected(&none, "ProductCreated", "{\"name\":\"x\"}");
	apply_rejected(&none, "ProductCreated", "{\"name\":5,\"stock\":1}");
	apply_rejected(&none, "ProductCreated", "{\"name\":\"x\",\"stock\":\"1\"}");
	apply_rejected(&none, "ProductRestocked", "{\"quantity\":1}");
	apply_rejected_j(&none, "ProductCreated", NULL);
	cr_assert_eq(apply_text(&none, "PriceChanged", "{\"price\":1}"), FD_OK);
	agg_free(&none);

	struct agg a = product_with("[" PCREATED "]");
	char buf[200];
	apply_rejected(&a, "ProductCreated", "{\"name\":\"again\",\"stock\":1}");
	apply_rejected(&a, "ProductRestocked", "{\"quantity\":0}");
	apply_rejected(&a, "ProductRestocked", "{\"quantity\":-4}");
	apply_rejected(&a, "ProductRestocked", "{\"quantity\":1.0}");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":11}", OID1);
	apply_rejected(&a, "StockReserved", buf);
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":-1}", OID1);
	apply_rejected(&a, "StockReserved", buf);
	apply_rejected(&a, "StockReserved", "{\"order_id\":\"nope\",\"quantity\":1}");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":1}", OID1);
	apply_rejected(&a, "ReservationReleased", buf);
	apply_rejected(&a, "ReservationCommitted", buf);
	snprintf(buf, sizeof buf, "[[\"StockReserved\",{\"order_id\":\"%s\",\"quantity\":4}]]", OID1);
	given(&a, buf);
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":1}", OID1);
	apply_rejected(&a, "StockReserved", buf);
	apply_rejected(&a, "ReservationReleased", buf);
	apply_rejected(&a, "ReservationCommitted", buf);
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\"}", OID1);
	apply_rejected(&a, "ReservationCommitted", buf);
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":4,\"x\":1}", OID1);
	apply_rejected(&a, "ReservationReleased", buf);
	assert_inventory_invariant(a.state);
	agg_free(&a);
}

static const char *const pool_ids[16] = {
	"00000000-0000-7000-8000-000000000000", "00000000-0000-7000-8000-000000000001",
	"00000000-0000-7000-8000-000000000002", "00000000-0000-7000-8000-000000000003",
	"00000000-0000-7000-8000-000000000004", "00000000-0000-7000-8000-000000000005",
	"00000000-0000-7000-8000-000000000006", "00000000-0000-7000-8000-000000000007",
	"00000000-0000-7000-8000-000000000008", "00000000-0000-7000-8000-000000000009",
	"00000000-0000-7000-8000-00000000000a", "00000000-0000-7000-8000-00000000000b",
	"00000000-0000-7000-8000-00000000000c", "00000000-0000-7000-8000-00000000000d",
	"00000000-0000-7000-8000-00000000000e", "00000000-0000-7000-8000-00000000000f",
};

/* One random product command (some invalid); decided events are applied. */
static enum fd_outcome random_product_step(struct agg *a, struct rng *r, int *which, int64_t *qty,
					   const char **cmd_out)
{
	char buf[200];
	const char *cmd;
	int k = (int)below(r, 16);
	int64_t q = below(r, 8) == 0 ? (int64_t)below(r, 1000) : 1 + (int64_t)below(r, 12);
	switch (below(r, 10)) {
	case 0:
		cmd = "create";
		snprintf(buf, sizeof buf, "{\"name\":\"P\",\"stock\":%" PRId64 "}", q);
		break;
	case 1:
		cmd = "restock";
		snprintf(buf, sizeof buf, "{\"quantity\":%" PRId64 "}", q);
		break;
	case 2: case 3: case 4:
		cmd = "reserve";
		snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":%" PRId64 "}", pool_ids[k], q);
		break;
	case 5: case 6:
		cmd = "release";
		snprintf(buf, sizeof buf, "{\"order_id\":\"%s\"}", pool_ids[k]);
		break;
	case 7: case 8:
		cmd = "commit";
		snprintf(buf, sizeof buf, "{\"order_id\":\"%s\"}", pool_ids[k]);
		break;
	default:
		cmd = "reserve";
		snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"quantity\":%" PRId64 ",\"bad\":1}", pool_ids[k], q);
		break;
	}
	struct fd_decision d;
	json_t *p = J(buf);
	decide_j(a, cmd, p, &d);
	json_decref(p);
	enum fd_outcome outcome = d.outcome;
	if (outcome == FD_DECIDED)
		apply_decision(a, &d);
	fd_decision_release(&d);
	*which = k;
	*qty = q;
	*cmd_out = cmd;
	return outcome;
}

Test(product, invariant_under_10000_random_commands)
{
	struct rng r = {0x9E3779B97F4A7C15ULL};
	struct agg a = agg_new(&fd_product_type);
	/* an independent model of the inventory */
	int64_t available = 0, committed = 0, stocked = 0, held[16] = {0};
	bool exists = false;
	unsigned counts[3] = {0};
	for (int step = 0; step < 10000; step++) {
		int k;
		int64_t q;
		const char *cmd;
		enum fd_outcome outcome = random_product_step(&a, &r, &k, &q, &cmd);
		counts[outcome]++;
		if (outcome == FD_DECIDED) {
			if (strcmp(cmd, "create") == 0) {
				cr_assert_not(exists);
				exists = true;
				available = stocked = q;
			} else if (strcmp(cmd, "restock") == 0) {
				available += q;
				stocked += q;
			} else if (strcmp(cmd, "reserve") == 0) {
				cr_assert_eq(held[k], 0);
				cr_assert_leq(q, available);
				held[k] = q;
				available -= q;
			} else if (strcmp(cmd, "release") == 0) {
				cr_assert_gt(held[k], 0);
				available += held[k];
				held[k] = 0;
			} else {
				cr_assert_gt(held[k], 0);
				committed += held[k];
				held[k] = 0;
			}
		}
		const struct fd_product *p = a.state;
		assert_inventory_invariant(p);
		int64_t reserved = 0;
		for (int i = 0; i < 16; i++) {
			reserved += held[i];
			const struct fd_reservation *res = NULL;
			for (size_t j = 0; j < p->nres; j++)
				if (strcmp(p->reservations[j].order_id, pool_ids[i]) == 0)
					res = &p->reservations[j];
			cr_assert_eq(res ? res->quantity : 0, held[i], "step %d order %d", step, i);
		}
		cr_assert_eq(p->exists, exists);
		cr_assert_eq(p->available, available, "step %d", step);
		cr_assert_eq(p->reserved, reserved, "step %d", step);
		cr_assert_eq(p->committed, committed, "step %d", step);
		cr_assert_eq(p->stocked, stocked, "step %d", step);
		if (step % 97 == 0)
			assert_round_trip(&a);
	}
	cr_assert_gt(counts[FD_DECIDED], 1000, "the sequence must exercise success");
	cr_assert_gt(counts[FD_REFUSED], 1000, "and refusals");
	cr_assert_gt(counts[FD_INVALID], 100, "and invalid payloads");
	agg_free(&a);
}

/* ---- payment ------------------------------------------------------------------ */

static struct agg payment_requested(int64_t amount)
{
	struct agg a = agg_new(&fd_payment_type);
	char buf[200];
	snprintf(buf, sizeof buf, "[[\"PaymentRequested\",{\"order_id\":\"%s\",\"amount_cents\":%" PRId64 "}]]", OID1,
		 amount);
	given(&a, buf);
	return a;
}

Test(payment, request)
{
	struct agg a = agg_new(&fd_payment_type);
	char buf[200], want[200];
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"amount_cents\":1999}", OID1);
	accept_event(&a, "request", buf, "PaymentRequested", buf);
	snprintf(want, sizeof want,
		 "{\"order_id\":\"%s\",\"amount_cents\":1999,\"status\":\"requested\",\"refunded_cents\":0,"
		 "\"attempts\":0}", OID1);
	expect_view(&a, want);
	refused(&a, "request", buf, "payment-exists");
	agg_free(&a);
}

Test(payment, request_payload_rules)
{
	struct agg a = agg_new(&fd_payment_type);
	char buf[200];
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"amount_cents\":0}", OID1);
	invalid(&a, "request", buf, "/amount_cents");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"amount_cents\":-100}", OID1);
	invalid(&a, "request", buf, "/amount_cents");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"amount_cents\":100000000001}", OID1);
	invalid(&a, "request", buf, "/amount_cents");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"amount_cents\":10.5}", OID1);
	invalid(&a, "request", buf, "/amount_cents");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\"}", OID1);
	invalid(&a, "request", buf, "/amount_cents");
	invalid(&a, "request", "{\"order_id\":\"SKU-1\",\"amount_cents\":1}", "/order_id");
	invalid(&a, "request", "{\"amount_cents\":1}", "/order_id");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"amount_cents\":1,\"currency\":\"EUR\"}", OID1);
	invalid(&a, "request", buf, "/currency");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"amount_cents\":100000000000}", OID1);
	json_decref(accept(&a, "request", buf));
	cr_assert_eq(((struct fd_payment *)a.state)->amount_cents, FD_PRICE_MAX);
	agg_free(&a);
}

Test(payment, commands_on_missing_payment_are_not_found)
{
	struct agg a = agg_new(&fd_payment_type);
	refused(&a, "record_failure", "{\"error\":\"timeout\"}", "payment-not-found");
	refused(&a, "authorise", "{\"authorisation\":\"A1\"}", "payment-not-found");
	refused(&a, "decline", "{\"reason\":\"no\"}", "payment-not-found");
	refused(&a, "refund", "{}", "payment-not-found");
	agg_free(&a);
}

Test(payment, record_failure_counts_attempts)
{
	struct agg a = payment_requested(500);
	accept_event(&a, "record_failure", "{\"error\":\"gateway timeout\"}", "PaymentAttemptFailed",
		     "{\"error\":\"gateway timeout\"}");
	json_decref(accept(&a, "record_failure", "{\"error\":\"again\"}"));
	cr_assert_eq(((struct fd_payment *)a.state)->attempts, 2);
	invalid(&a, "record_failure", "{}", "/error");
	invalid(&a, "record_failure", "{\"error\":\"\"}", "/error");
	invalid(&a, "record_failure", "{\"error\":\"x\",\"code\":1}", "/code");
	json_decref(accept(&a, "authorise", "{\"authorisation\":\"AUTH-1\"}"));
	refused(&a, "record_failure", "{\"error\":\"late\"}", "payment-not-pending");
	apply_rejected(&a, "PaymentAttemptFailed", "{\"error\":\"late\"}");
	cr_assert_eq(((struct fd_payment *)a.state)->attempts, 2, "attempts survive authorisation");
	agg_free(&a);
}

Test(payment, authorise)
{
	struct agg a = payment_requested(500);
	accept_event(&a, "authorise", "{\"authorisation\":\"AUTH-XYZ\"}", "PaymentAuthorised",
		     "{\"authorisation\":\"AUTH-XYZ\"}");
	char want[256];
	snprintf(want, sizeof want,
		 "{\"order_id\":\"%s\",\"amount_cents\":500,\"status\":\"authorised\",\"refunded_cents\":0,"
		 "\"attempts\":0}", OID1);
	expect_view(&a, want);
	refused(&a, "authorise", "{\"authorisation\":\"AUTH-XYZ\"}", "payment-not-pending");
	refused(&a, "decline", "{\"reason\":\"no\"}", "payment-not-pending");
	agg_free(&a);

	struct agg b = payment_requested(500);
	char *a128 = repeat('a', 128), *a129 = repeat('a', 129);
	invalid(&b, "authorise", "{}", "/authorisation");
	invalid(&b, "authorise", "{\"authorisation\":7}", "/authorisation");
	json_t *p = json_pack("{s:s}", "authorisation", a129);
	invalid_j(&b, "authorise", p, "/authorisation");
	json_decref(p);
	p = json_pack("{s:s}", "authorisation", a128);
	json_decref(accept_j(&b, "authorise", p));
	json_decref(p);
	free(a128);
	free(a129);
	agg_free(&b);
}

Test(payment, decline)
{
	struct agg a = payment_requested(500);
	given(&a, "[[\"PaymentAttemptFailed\",{\"error\":\"e\"}]]");
	accept_event(&a, "decline", "{\"reason\":\"insufficient funds\"}", "PaymentDeclined",
		     "{\"reason\":\"insufficient funds\"}");
	char want[256];
	snprintf(want, sizeof want,
		 "{\"order_id\":\"%s\",\"amount_cents\":500,\"status\":\"declined\",\"refunded_cents\":0,"
		 "\"attempts\":1,\"decline_reason\":\"insufficient funds\"}", OID1);
	expect_view(&a, want);
	refused(&a, "authorise", "{\"authorisation\":\"A\"}", "payment-not-pending");
	refused(&a, "decline", "{\"reason\":\"again\"}", "payment-not-pending");
	refused(&a, "refund", "{}", "payment-not-authorised");
	agg_free(&a);

	struct agg b = payment_requested(500);
	invalid(&b, "decline", "{}", "/reason");
	invalid(&b, "decline", "{\"reason\":\"\"}", "/reason");
	invalid(&b, "decline", "{\"reason\":\"r\",\"x\":1}", "/x");
	agg_free(&b);
}

Test(payment, refund_whole_by_default)
{
	struct agg a = payment_requested(500);
	given(&a, "[[\"PaymentAuthorised\",{\"authorisation\":\"A\"}]]");
	accept_event(&a, "refund", "{}", "PaymentRefunded", "{\"amount_cents\":500}");
	const struct fd_payment *p = a.state;
	cr_assert_eq(p->status, FD_PAYMENT_REFUNDED);
	cr_assert_eq(p->refunded_cents, 500);
	refused(&a, "refund", "{}", "payment-not-authorised");
	refused(&a, "refund", "{\"amount_cents\":1}", "payment-not-authorised");
	agg_free(&a);
}

Test(payment, refund_in_parts)
{
	struct agg a = payment_requested(500);
	refused(&a, "refund", "{}", "payment-not-authorised");
	given(&a, "[[\"PaymentAuthorised\",{\"authorisation\":\"A\"}]]");
	accept_event(&a, "refund", "{\"amount_cents\":200}", "PaymentRefunded", "{\"amount_cents\":200}");
	cr_assert_eq(((struct fd_payment *)a.state)->status, FD_PAYMENT_AUTHORISED, "partly refunded stays authorised");
	refused(&a, "refund", "{\"amount_cents\":301}", "refund-exceeds-payment");
	apply_rejected(&a, "PaymentRefunded", "{\"amount_cents\":301}");
	invalid(&a, "refund", "{\"amount_cents\":0}", "/amount_cents");
	invalid(&a, "refund", "{\"amount_cents\":-1}", "/amount_cents");
	invalid(&a, "refund", "{\"amount_cents\":\"10\"}", "/amount_cents");
	invalid(&a, "refund", "{\"amount_cents\":null}", "/amount_cents");
	invalid(&a, "refund", "{\"amount\":1}", "/amount");
	accept_event(&a, "refund", "{}", "PaymentRefunded", "{\"amount_cents\":300}");
	char want[256];
	snprintf(want, sizeof want,
		 "{\"order_id\":\"%s\",\"amount_cents\":500,\"status\":\"refunded\",\"refunded_cents\":500,"
		 "\"attempts\":0}", OID1);
	expect_view(&a, want);
	agg_free(&a);
}

Test(payment, status_names)
{
	cr_assert_str_eq(fd_payment_status_name(FD_PAYMENT_NONE), "none");
	cr_assert_str_eq(fd_payment_status_name(FD_PAYMENT_REQUESTED), "requested");
	cr_assert_str_eq(fd_payment_status_name(FD_PAYMENT_AUTHORISED), "authorised");
	cr_assert_str_eq(fd_payment_status_name(FD_PAYMENT_DECLINED), "declined");
	cr_assert_str_eq(fd_payment_status_name(FD_PAYMENT_REFUNDED), "refunded");
	cr_assert_str_eq(fd_payment_status_name((enum fd_payment_status)-1), "unknown");
}

Test(payment, apply_rejects_malformed_and_impossible_events)
{
	struct agg none = agg_new(&fd_payment_type);
	char buf[200];
	apply_rejected(&none, "PaymentAuthorised", "{\"authorisation\":\"A\"}");
	apply_rejected(&none, "PaymentRefunded", "{\"amount_cents\":1}");
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"amount_cents\":0}", OID1);
	apply_rejected(&none, "PaymentRequested", buf);
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"amount_cents\":\"5\"}", OID1);
	apply_rejected(&none, "PaymentRequested", buf);
	apply_rejected(&none, "PaymentRequested", "{\"order_id\":\"x\",\"amount_cents\":5}");
	apply_rejected(&none, "PaymentRequested", "null");
	agg_free(&none);

	struct agg a = payment_requested(100);
	snprintf(buf, sizeof buf, "{\"order_id\":\"%s\",\"amount_cents\":5}", OID2);
	apply_rejected(&a, "PaymentRequested", buf);
	apply_rejected(&a, "PaymentRefunded", "{\"amount_cents\":1}");
	apply_rejected(&a, "PaymentAttemptFailed", "{}");
	apply_rejected(&a, "PaymentAttemptFailed", "{\"error\":3}");
	apply_rejected(&a, "PaymentDeclined", "{\"reason\":[]}");
	apply_rejected(&a, "PaymentAuthorised", "{\"authorisation\":\"\"}");
	given(&a, "[[\"PaymentAuthorised\",{\"authorisation\":\"A\"}]]");
	apply_rejected(&a, "PaymentRefunded", "{\"amount_cents\":101}");
	apply_rejected(&a, "PaymentRefunded", "{\"amount_cents\":-1}");
	apply_rejected(&a, "PaymentRefunded", "{}");
	apply_rejected(&a, "PaymentDeclined", "{\"reason\":\"late\"}");
	cr_assert_eq(apply_text(&a, "PaymentSettled", "{}"), FD_OK);
	agg_free(&a);
}

/* ---- snapshots: random histories round-trip --------------------------------------- */

static const char *const skus[] = {"SKU-1", "SKU-2", "sku.3", "a:b", "X_9", "P-6", "Q", "R-8"};

/* Random order commands, biased by status so histories grow long; some refused or invalid. */
static void random_order_payload(struct rng *r, const void *state, const char **cmd, char *buf, size_t len)
{
	const struct fd_order *o = state;
	int k = (int)below(r, 8);
	int64_t price = 100 * (k + 1) + (below(r, 12) == 0 ? 1 : 0);
	uint64_t pick = below(r, 1000);
	if (o->status == FD_ORDER_NONE && pick < 800)
		pick = 0;
	else if ((o->status == FD_ORDER_PLACED || o->status == FD_ORDER_CONFIRMED) && pick < 600)
		pick = 800 + below(r, 100);
	if (pick < 40) {
		*cmd = "create";
		snprintf(buf, len, "{\"customer_id\":\"cust-%d\"}", k);
	} else if (pick < 600) {
		*cmd = "add_line";
		snprintf(buf, len, "{\"product_id\":\"%s\",\"quantity\":%d,\"unit_price_cents\":%" PRId64 "}", skus[k],
			 1 + (int)below(r, 5), price);
	} else if (pick < 800) {
		*cmd = "remove_line";
		snprintf(buf, len, "{\"product_id\":\"%s\"}", skus[k]);
	} else if (pick < 835) {
		*cmd = "place";
		snprintf(buf, len, "{}");
	} else if (pick < 870) {
		*cmd = "confirm";
		snprintf(buf, len, "{}");
	} else if (pick < 895) {
		*cmd = "ship";
		snprintf(buf, len, "{}");
	} else if (pick < 910) {
		*cmd = "cancel";
		snprintf(buf, len, "{\"reason\":\"reason %d \xc3\xa9\"}", k);
	} else {
		*cmd = below(r, 2) ? "add_line" : "cancel";
		snprintf(buf, len, "{\"product_id\":\"%s\",\"quantity\":0,\"unit_price_cents\":1}", skus[k]);
	}
}

/* Random payment commands, biased by status so histories grow long; some refused or invalid. */
static void random_payment_payload(struct rng *r, const void *state, const char **cmd, char *buf, size_t len)
{
	const struct fd_payment *p = state;
	uint64_t pick = below(r, 1000);
	if (p->status == FD_PAYMENT_NONE && pick < 800)
		pick = 0;
	else if (p->status == FD_PAYMENT_AUTHORISED && pick < 700)
		pick = 700 + below(r, 200);
	if (pick < 60) {
		*cmd = "request";
		snprintf(buf, len, "{\"order_id\":\"%s\",\"amount_cents\":%d}", pool_ids[below(r, 16)],
			 100 + (int)below(r, 1000));
	} else if (pick < 600) {
		*cmd = "record_failure";
		snprintf(buf, len, "{\"error\":\"timeout %d\"}", (int)below(r, 100));
	} else if (pick < 630) {
		*cmd = "authorise";
		snprintf(buf, len, "{\"authorisation\":\"AUTH-%d\"}", (int)below(r, 100));
	} else if (pick < 645) {
		*cmd = "decline";
		snprintf(buf, len, "{\"reason\":\"declined %d\"}", (int)below(r, 100));
	} else if (pick < 900) {
		*cmd = "refund";
		if (below(r, 40) == 0)
			snprintf(buf, len, "{}");
		else
			snprintf(buf, len, "{\"amount_cents\":%d}", 1 + (int)below(r, 60));
	} else {
		*cmd = below(r, 2) ? "refund" : "request";
		snprintf(buf, len, "{\"amount_cents\":1.5}");
	}
}

/*
 * Run `count` random commands on fresh aggregates (a new one after `life`
 * commands or once a dozen commands in a row decided nothing, as in a
 * final status); after each decided command the state must round-trip through
 * its snapshot, and a restored copy that keeps applying the same events must
 * stay equal to the original.
 */
static void random_histories(const struct fd_aggregate_type *t,
			     void (*gen)(struct rng *, const void *, const char **, char *, size_t),
			     uint64_t seed, int count, int life)
{
	struct rng r = {seed};
	struct agg a = agg_new(t), copy = agg_new(t);
	unsigned counts[3] = {0}, longest = 0, idle = 0, age = 0;
	for (int step = 0; step < count; step++, age++) {
		if (age == (unsigned)life || idle == 12) {
			age = idle = 0;
			agg_free(&a);
			agg_free(&copy);
			a = agg_new(t);
			copy = agg_new(t);
		}
		const char *cmd;
		char buf[256];
		gen(&r, a.state, &cmd, buf, sizeof buf);
		struct fd_decision d;
		json_t *p = J(buf);
		decide_j(&a, cmd, p, &d);
		json_decref(p);
		counts[d.outcome]++;
		idle = d.outcome == FD_DECIDED ? 0 : idle + 1;
		if (d.outcome == FD_DECIDED) {
			apply_decision(&a, &d);
			apply_decision(&copy, &d);
			if (a.version > longest)
				longest = a.version;
			assert_round_trip(&a);
			json_t *s1 = snap_of(&a), *s2 = snap_of(&copy);
			cr_assert(json_equal(s1, s2), "the restored copy diverged at step %d", step);
			json_decref(s1);
			json_decref(s2);
			if (below(&r, 4) == 0) {
				/* swap the copy for a fresh restore of the original */
				json_t *snap = snap_of(&a);
				agg_free(&copy);
				copy = agg_new(t);
				cr_assert_eq(t->restore(copy.state, snap), FD_OK);
				copy.version = a.version;
				json_decref(snap);
			}
		}
		fd_decision_release(&d);
	}
	cr_assert_gt(counts[FD_DECIDED], (unsigned)count / 3, "histories must grow");
	cr_assert_gt(counts[FD_REFUSED], 0);
	cr_assert_gt(counts[FD_INVALID], 0);
	cr_assert_gt(longest, 50, "some history is long");
	agg_free(&a);
	agg_free(&copy);
}

Test(snapshot, order_random_histories_round_trip)
{
	random_histories(&fd_order_type, random_order_payload, 0xC0FFEEULL, 6000, 400);
}

Test(snapshot, payment_random_histories_round_trip)
{
	random_histories(&fd_payment_type, random_payment_payload, 0xBADC0DEULL, 6000, 400);
}

Test(snapshot, product_long_history_round_trip)
{
	struct rng r = {0x5EEDULL};
	struct agg a = agg_new(&fd_product_type);
	for (int step = 0; step < 3000; step++) {
		int k;
		int64_t q;
		const char *cmd;
		random_product_step(&a, &r, &k, &q, &cmd);
		if (step % 50 == 49)
			assert_round_trip(&a);
	}
	cr_assert_gt(a.version, 300);
	assert_round_trip(&a);
	agg_free(&a);
}

Test(snapshot, fresh_states_round_trip)
{
	const struct fd_aggregate_type *types[] = {&fd_order_type, &fd_product_type, &fd_payment_type};
	for (size_t i = 0; i < 3; i++) {
		struct agg a = agg_new(types[i]);
		assert_round_trip(&a);
		agg_free(&a);
	}
	struct agg o = agg_new(&fd_order_type);
	json_t *s = snap_of(&o), *want = J("{\"status\":\"none\"}");
	cr_assert(json_equal(s, want));
	json_decref(s);
	json_decref(want);
	agg_free(&o);
}

Test(snapshot, restore_replaces_previous_state)
{
	struct agg a = order_in(FD_ORDER_CANCELLED);
	struct agg b = order_with("[[\"OrderCreated\",{\"customer_id\":\"z\"}]," LINE("Q", 9, 9) "]");
	json_t *snap = snap_of(&b);
	cr_assert_eq(a.t->restore(a.state, snap), FD_OK);
	json_t *again = snap_of(&a);
	cr_assert(json_equal(snap, again));
	cr_assert_null(((struct fd_order *)a.state)->cancel_reason);
	json_decref(snap);
	json_decref(again);
	agg_free(&a);
	agg_free(&b);
}

Test(snapshot, order_restore_rejects_malformed)
{
	const struct fd_aggregate_type *t = &fd_order_type;
	restore_rejected(t, "null");
	restore_rejected(t, "[]");
	restore_rejected(t, "{}");
	restore_rejected(t, "{\"status\":\"none\",\"customer_id\":\"c\"}");
	restore_rejected(t, "{\"status\":\"lost\",\"customer_id\":\"c\",\"lines\":[]}");
	restore_rejected(t, "{\"status\":3,\"customer_id\":\"c\",\"lines\":[]}");
	restore_rejected(t, "{\"status\":\"draft\",\"lines\":[]}");
	restore_rejected(t, "{\"status\":\"draft\",\"customer_id\":\"\",\"lines\":[]}");
	restore_rejected(t, "{\"status\":\"draft\",\"customer_id\":\"c\"}");
	restore_rejected(t, "{\"status\":\"draft\",\"customer_id\":\"c\",\"lines\":{}}");
	restore_rejected(t, "{\"status\":\"draft\",\"customer_id\":\"c\",\"lines\":[],\"extra\":1}");
	restore_rejected(t, "{\"status\":\"draft\",\"customer_id\":\"c\",\"lines\":[],\"cancel_reason\":\"r\"}");
	restore_rejected(t, "{\"status\":\"cancelled\",\"customer_id\":\"c\",\"lines\":[]}");
	restore_rejected(t, "{\"status\":\"placed\",\"customer_id\":\"c\",\"lines\":[]}");
	restore_rejected(t, "{\"status\":\"shipped\",\"customer_id\":\"c\",\"lines\":[]}");
	restore_rejected(t, "{\"status\":\"draft\",\"customer_id\":\"c\",\"lines\":[{\"product_id\":\"A\","
			    "\"quantity\":1,\"unit_price_cents\":1},{\"product_id\":\"A\",\"quantity\":1,"
			    "\"unit_price_cents\":1}]}");
	restore_rejected(t, "{\"status\":\"draft\",\"customer_id\":\"c\",\"lines\":[{\"product_id\":\"A\","
			    "\"quantity\":0,\"unit_price_cents\":1}]}");
	restore_rejected(t, "{\"status\":\"draft\",\"customer_id\":\"c\",\"lines\":[{\"product_id\":\"A\","
			    "\"quantity\":1,\"unit_price_cents\":-1}]}");
	restore_rejected(t, "{\"status\":\"draft\",\"customer_id\":\"c\",\"lines\":[{\"product_id\":\"A B\","
			    "\"quantity\":1,\"unit_price_cents\":1}]}");
	restore_rejected(t, "{\"status\":\"draft\",\"customer_id\":\"c\",\"lines\":[{\"product_id\":\"A\","
			    "\"quantity\":1}]}");
	restore_rejected(t, "{\"status\":\"draft\",\"customer_id\":\"c\",\"lines\":[{\"product_id\":\"A\","
			    "\"quantity\":1,\"unit_price_cents\":1,\"x\":0}]}");
	restore_rejected(t, "{\"status\":\"draft\",\"customer_id\":\"c\",\"lines\":[7]}");
	/* two lines of 5e18 overflow the total */
	restore_rejected(t, "{\"status\":\"draft\",\"customer_id\":\"c\",\"lines\":[{\"product_id\":\"A\","
			    "\"quantity\":50000000,\"unit_price_cents\":100000000000},{\"product_id\":\"B\","
			    "\"quantity\":50000000,\"unit_price_cents\":100000000000}]}");
	/* too many lines */
	json_t *lines = json_array();
	for (int i = 0; i <= FD_ORDER_MAX_LINES; i++) {
		char sku[16];
		snprintf(sku, sizeof sku, "P%d", i);
		json_array_append_new(lines, json_pack("{s:s, s:i, s:i, s:s}", "product_id", sku, "quantity", 1,
						       "unit_price_cents", 1, "currency", "EUR"));
	}
	json_t *big = json_pack("{s:s, s:s, s:o}", "status", "draft", "customer_id", "c", "lines", lines);
	char *text = dump(big);
	restore_rejected(t, text);
	free(text);
	json_array_remove(lines, 0);
	struct agg a = agg_new(t);
	cr_assert_eq(t->restore(a.state, big), FD_OK, "exactly the maximum is fine");
	cr_assert_eq(((struct fd_order *)a.state)->nlines, FD_ORDER_MAX_LINES);
	json_decref(big);
	agg_free(&a);
}

Test(snapshot, product_restore_rejects_malformed)
{
	const struct fd_aggregate_type *t = &fd_product_type;
	char buf[512];
	restore_rejected(t, "{}");
	restore_rejected(t, "\"x\"");
	restore_rejected(t, "{\"exists\":1}");
	restore_rejected(t, "{\"exists\":false,\"name\":\"x\"}");
	restore_rejected(t, "{\"exists\":true}");
	const char *good = "{\"exists\":true,\"name\":\"W\",\"available\":5,\"reserved\":3,\"committed\":2,"
			   "\"stocked\":10,\"reservations\":[{\"order_id\":\"$ID\",\"quantity\":3}]}";
	with_id(buf, sizeof buf, good, OID1);
	struct agg a = agg_new(t);
	json_t *s = J(buf);
	cr_assert_eq(t->restore(a.state, s), FD_OK, "the baseline is valid");
	json_object_set_new(s, "price", json_integer(1));
	cr_assert_eq(t->restore(a.state, s), FD_ERR_INVAL, "unknown field");
	json_decref(s);
	agg_free(&a);
	with_id(buf, sizeof buf, good, "not-a-uuid");
	restore_rejected(t, buf);
	const char *broken[] = {
		/* stocked does not add up */
		"{\"exists\":true,\"name\":\"W\",\"available\":5,\"reserved\":3,\"committed\":2,\"stocked\":11,"
		"\"reservations\":[{\"order_id\":\"$ID\",\"quantity\":3}]}",
		/* reserved differs from the reservations */
		"{\"exists\":true,\"name\":\"W\",\"available\":6,\"reserved\":2,\"committed\":2,\"stocked\":10,"
		"\"reservations\":[{\"order_id\":\"$ID\",\"quantity\":3}]}",
		/* negative */
		"{\"exists\":true,\"name\":\"W\",\"available\":-1,\"reserved\":3,\"committed\":8,\"stocked\":10,"
		"\"reservations\":[{\"order_id\":\"$ID\",\"quantity\":3}]}",
		/* zero-quantity reservation */
		"{\"exists\":true,\"name\":\"W\",\"available\":10,\"reserved\":0,\"committed\":0,\"stocked\":10,"
		"\"reservations\":[{\"order_id\":\"$ID\",\"quantity\":0}]}",
		/* missing name */
		"{\"exists\":true,\"available\":7,\"reserved\":3,\"committed\":0,\"stocked\":10,"
		"\"reservations\":[{\"order_id\":\"$ID\",\"quantity\":3}]}",
		/* reservations not an array */
		"{\"exists\":true,\"name\":\"W\",\"available\":7,\"reserved\":3,\"committed\":0,\"stocked\":10,"
		"\"reservations\":{\"order_id\":\"$ID\",\"quantity\":3}}",
		/* real number */
		"{\"exists\":true,\"name\":\"W\",\"available\":7.0,\"reserved\":3,\"committed\":0,\"stocked\":10,"
		"\"reservations\":[{\"order_id\":\"$ID\",\"quantity\":3}]}",
	};
	for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
		with_id(buf, sizeof buf, broken[i], OID1);
		restore_rejected(t, buf);
	}
	/* the same order twice */
	snprintf(buf, sizeof buf,
		 "{\"exists\":true,\"name\":\"W\",\"available\":4,\"reserved\":6,\"committed\":0,\"stocked\":10,"
		 "\"reservations\":[{\"order_id\":\"%s\",\"quantity\":3},{\"order_id\":\"%s\",\"quantity\":3}]}",
		 OID1, "0193F1A2-4B10-7C3E-9A41-6D2F0E8B7C11");
	restore_rejected(t, buf);
	/* sums that overflow */
	snprintf(buf, sizeof buf,
		 "{\"exists\":true,\"name\":\"W\",\"available\":%" PRId64 ",\"reserved\":0,\"committed\":%" PRId64
		 ",\"stocked\":-2,\"reservations\":[]}",
		 INT64_MAX, INT64_MAX);
	restore_rejected(t, buf);
}

Test(snapshot, payment_restore_rejects_malformed)
{
	const struct fd_aggregate_type *t = &fd_payment_type;
	const char *cases[] = {
		"{\"status\":\"requested\",\"order_id\":\"$ID\",\"amount_cents\":0,\"refunded_cents\":0,\"attempts\":0}",
		"{\"status\":\"requested\",\"order_id\":\"$ID\",\"amount_cents\":5,\"refunded_cents\":1,\"attempts\":0}",
		"{\"status\":\"requested\",\"order_id\":\"$ID\",\"amount_cents\":5,\"refunded_cents\":0,\"attempts\":-1}",
		"{\"status\":\"requested\",\"order_id\":\"$ID\",\"amount_cents\":5,\"refunded_cents\":0,"
		"\"attempts\":4294967296}",
		"{\"status\":\"requested\",\"order_id\":\"$ID\",\"amount_cents\":5,\"refunded_cents\":0}",
		"{\"status\":\"requested\",\"order_id\":\"$ID\",\"amount_cents\":5,\"refunded_cents\":0,\"attempts\":0,"
		"\"decline_reason\":\"r\"}",
		"{\"status\":\"declined\",\"order_id\":\"$ID\",\"amount_cents\":5,\"refunded_cents\":0,\"attempts\":0}",
		"{\"status\":\"authorised\",\"order_id\":\"$ID\",\"amount_cents\":5,\"refunded_cents\":5,\"attempts\":0}",
		"{\"status\":\"authorised\",\"order_id\":\"$ID\",\"amount_cents\":5,\"refunded_cents\":6,\"attempts\":0}",
		"{\"status\":\"refunded\",\"order_id\":\"$ID\",\"amount_cents\":5,\"refunded_cents\":4,\"attempts\":0}",
		"{\"status\":\"paid\",\"order_id\":\"$ID\",\"amount_cents\":5,\"refunded_cents\":0,\"attempts\":0}",
		"{\"status\":\"requested\",\"order_id\":\"0193f1a2\",\"amount_cents\":5,\"refunded_cents\":0,\"attempts\":0}",
		"{\"status\":\"requested\",\"order_id\":\"$ID\",\"amount_cents\":5,\"refunded_cents\":0,\"attempts\":0,"
		"\"authorisation\":\"A\"}",
		"{\"status\":\"none\",\"order_id\":\"$ID\"}",
	};
	char buf[512];
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		with_id(buf, sizeof buf, cases[i], OID1);
		restore_rejected(t, buf);
	}
	restore_rejected(t, "[]");
	restore_rejected(t, "{}");
	snprintf(buf, sizeof buf,
		 "{\"status\":\"declined\",\"order_id\":\"%s\",\"amount_cents\":5,\"refunded_cents\":0,"
		 "\"attempts\":4294967295,\"decline_reason\":\"r\"}",
		 OID1);
	struct agg a = agg_new(t);
	json_t *s = J(buf);
	cr_assert_eq(t->restore(a.state, s), FD_OK);
	cr_assert_eq(((struct fd_payment *)a.state)->attempts, UINT_MAX);
	json_decref(s);
	agg_free(&a);
}

/* ---- never crash on any JSON ---------------------------------------------------- */

static const char *const fuzz_keys[] = {
	"customer_id", "product_id", "quantity", "unit_price_cents", "lines",	     "total_cents",
	"reason",      "name",	     "stock",	 "order_id",	     "amount_cents", "error",
	"authorisation", "status",   "exists",	 "available",	     "reserved",     "committed",
	"stocked",     "reservations", "refunded_cents", "attempts", "cancel_reason", "x",
};

static json_t *random_json(struct rng *r, int depth);

static json_t *random_object(struct rng *r, int depth)
{
	json_t *o = json_object();
	size_t n = below(r, 5);
	for (size_t i = 0; i < n; i++)
		json_object_set_new(o, fuzz_keys[below(r, sizeof fuzz_keys / sizeof fuzz_keys[0])],
				    random_json(r, depth + 1));
	return o;
}

static json_t *random_json(struct rng *r, int depth)
{
	static const json_int_t ints[] = {0, 1, -1, 2, 3, 10, 150, 300, FD_QUANTITY_MAX, FD_QUANTITY_MAX + 1,
					  FD_PRICE_MAX, FD_PRICE_MAX + 1, INT64_MAX, INT64_MIN, 4294967295LL};
	static const char *const strs[] = {"", "SKU-1", "a b", "draft", "placed", "cancelled", "requested",
					   "authorised", "refunded", "0193f1a2-4b10-7c3e-9a41-6d2f0e8b7c11",
					   "00000000-0000-7000-8000-000000000003", "x"};
	switch (below(r, depth > 2 ? 6 : 9)) {
	case 0:
		return json_null();
	case 1:
		return json_boolean(below(r, 2));
	case 2:
	case 3:
		return json_integer(ints[below(r, sizeof ints / sizeof ints[0])]);
	case 4:
		return json_real(below(r, 2) ? 1.0 : -2.5);
	case 5:
		return json_string(strs[below(r, sizeof strs / sizeof strs[0])]);
	case 6:
		return json_stringn("a\0b", 3);
	case 7: {
		json_t *a = json_array();
		size_t n = below(r, 4);
		for (size_t i = 0; i < n; i++)
			json_array_append_new(a, below(r, 2) ? random_object(r, depth + 1) : random_json(r, depth + 1));
		return a;
	}
	default:
		return random_object(r, depth);
	}
}

static void fuzz_apply(const struct fd_aggregate_type *t, const char *const *types, size_t ntypes,
		       const char *setup, uint64_t seed)
{
	struct rng r = {seed};
	struct agg a = agg_new(t);
	given(&a, setup);
	unsigned accepted = 0;
	for (int i = 0; i < 20000; i++) {
		if (i % 500 == 0) {
			agg_free(&a);
			a = agg_new(t);
			given(&a, setup);
		}
		const char *type = types[below(&r, ntypes)];
		json_t *data = below(&r, 10) ? random_object(&r, 0) : random_json(&r, 0);
		json_t *before = snap_of(&a);
		enum fd_err err = t->apply(a.state, type, data);
		cr_assert(err == FD_OK || err == FD_ERR_INVAL, "%s gave %s", type, fd_err_name(err));
		if (err == FD_OK) {
			accepted++;
			assert_round_trip(&a);
		} else {
			json_t *after = snap_of(&a);
			cr_assert(json_equal(before, after), "a rejected %s changed the state", type);
			json_decref(after);
		}
		if (t == &fd_product_type)
			assert_inventory_invariant(a.state);
		json_decref(before);
		json_decref(data);
	}
	cr_assert_lt(accepted, 20000, "most random events are rejected");
	agg_free(&a);
}

Test(fuzz, order_apply_random_json)
{
	const char *types[] = {"OrderCreated", "OrderLineAdded", "OrderLineRemoved", "OrderPlaced",
			       "OrderConfirmed", "OrderShipped", "OrderCancelled"};
	fuzz_apply(&fd_order_type, types, 7, "[]", 11);
	fuzz_apply(&fd_order_type, types, 7, "[" CREATED "," LINE("SKU-1", 2, 150) "]", 12);
}

Test(fuzz, product_apply_random_json)
{
	const char *types[] = {"ProductCreated", "ProductRestocked", "StockReserved", "ReservationReleased",
			       "ReservationCommitted"};
	char setup[256];
	snprintf(setup, sizeof setup, "[" PCREATED ",[\"StockReserved\",{\"order_id\":\"%s\",\"quantity\":3}]]",
		 "00000000-0000-7000-8000-000000000003");
	fuzz_apply(&fd_product_type, types, 5, "[]", 21);
	fuzz_apply(&fd_product_type, types, 5, setup, 22);
}

Test(fuzz, payment_apply_random_json)
{
	const char *types[] = {"PaymentRequested", "PaymentAttemptFailed", "PaymentAuthorised", "PaymentDeclined",
			       "PaymentRefunded"};
	char setup[256];
	snprintf(setup, sizeof setup, "[[\"PaymentRequested\",{\"order_id\":\"%s\",\"amount_cents\":300}]]", OID1);
	fuzz_apply(&fd_payment_type, types, 5, "[]", 31);
	fuzz_apply(&fd_payment_type, types, 5, setup, 32);
}

Test(fuzz, restore_random_mutations)
{
	const struct fd_aggregate_type *types[] = {&fd_order_type, &fd_product_type, &fd_payment_type};
	char psnap[512];
	snprintf(psnap, sizeof psnap,
		 "{\"status\":\"authorised\",\"order_id\":\"%s\",\"amount_cents\":300,\"refunded_cents\":100,"
		 "\"attempts\":2}", OID1);
	char prod[512];
	snprintf(prod, sizeof prod,
		 "{\"exists\":true,\"name\":\"W\",\"available\":5,\"reserved\":3,\"committed\":2,\"stocked\":10,"
		 "\"reservations\":[{\"order_id\":\"%s\",\"quantity\":3}]}", OID1);
	const char *bases[] = {
		"{\"status\":\"placed\",\"customer_id\":\"c\",\"lines\":[{\"product_id\":\"A\",\"quantity\":2,"
		"\"unit_price_cents\":150},{\"product_id\":\"B\",\"quantity\":1,\"unit_price_cents\":3}]}",
		prod, psnap,
	};
	struct rng r = {77};
	unsigned restored = 0, rejected = 0;
	for (int i = 0; i < 6000; i++) {
		size_t k = below(&r, 3);
		json_t *snap = J(bases[k]);
		const char *key = fuzz_keys[below(&r, sizeof fuzz_keys / sizeof fuzz_keys[0])];
		switch (below(&r, 3)) {
		case 0:
			json_object_del(snap, key);
			break;
		default:
			json_object_set_new(snap, key, random_json(&r, 1));
			break;
		}
		struct agg a = agg_new(types[k]);
		enum fd_err err = types[k]->restore(a.state, snap);
		cr_assert(err == FD_OK || err == FD_ERR_INVAL);
		if (err == FD_OK) {
			restored++;
			assert_round_trip(&a);
			if (types[k] == &fd_product_type)
				assert_inventory_invariant(a.state);
		} else {
			rejected++;
		}
		json_decref(snap);
		agg_free(&a);
	}
	cr_assert_gt(restored, 0);
	cr_assert_gt(rejected, restored, "almost every mutation breaks a strict snapshot");
}

/* ---- gateway simulator ---------------------------------------------------------- */

static enum fd_gateway_result gw_call(struct fd_gateway_sim *sim, const char *id, int64_t amount, unsigned attempt,
				      char *msg, size_t len)
{
	struct fd_gateway *gw = &sim->base;
	return gw->authorise(gw, id, amount, attempt, msg, len);
}

Test(gateway, authorises_within_limit_with_stable_code)
{
	struct fd_gateway_sim sim;
	fd_gateway_sim_init(&sim, 100000, 0, false);
	cr_assert_eq(sim.limit_cents, 100000);
	char m1[64], m2[64], m3[64];
	cr_assert_eq(gw_call(&sim, OID1, 100000, 1, m1, sizeof m1), FD_GATEWAY_AUTHORISED, "the limit itself is fine");
	cr_assert_eq(gw_call(&sim, OID1, 1, 7, m2, sizeof m2), FD_GATEWAY_AUTHORISED);
	cr_assert_eq(gw_call(&sim, OID2, 1, 1, m3, sizeof m3), FD_GATEWAY_AUTHORISED);
	cr_assert_eq(strncmp(m1, "AUTH-", 5), 0, "%s", m1);
	cr_assert_eq(strlen(m1), 21);
	cr_assert_str_eq(m1, m2, "the code depends on the payment id alone");
	cr_assert_str_neq(m1, m3, "different payments get different codes");
	struct fd_gateway_sim other;
	fd_gateway_sim_init(&other, 5, 0, false);
	char m4[64];
	cr_assert_eq(gw_call(&other, OID1, 5, 1, m4, sizeof m4), FD_GATEWAY_AUTHORISED);
	cr_assert_str_eq(m1, m4, "deterministic across instances");
}

Test(gateway, declines_above_limit)
{
	struct fd_gateway_sim sim;
	fd_gateway_sim_init(&sim, 1000, 0, false);
	char m[64];
	cr_assert_eq(gw_call(&sim, OID1, 1001, 1, m, sizeof m), FD_GATEWAY_DECLINED);
	cr_assert_str_eq(m, "amount exceeds limit");
	cr_assert_eq(gw_call(&sim, OID1, 1000, 1, m, sizeof m), FD_GATEWAY_AUTHORISED);
}

Test(gateway, transient_for_first_attempts)
{
	struct fd_gateway_sim sim;
	fd_gateway_sim_init(&sim, 1000, 2, false);
	char m[64];
	cr_assert_eq(gw_call(&sim, OID1, 10, 1, m, sizeof m), FD_GATEWAY_TRANSIENT);
	cr_assert_neq(m[0], '\0', "a transient failure says why");
	cr_assert_eq(gw_call(&sim, OID1, 10, 2, m, sizeof m), FD_GATEWAY_TRANSIENT);
	cr_assert_eq(gw_call(&sim, OID1, 10, 3, m, sizeof m), FD_GATEWAY_AUTHORISED);
	/* transient failures come before the limit check */
	cr_assert_eq(gw_call(&sim, OID1, 5000, 1, m, sizeof m), FD_GATEWAY_TRANSIENT);
	cr_assert_eq(gw_call(&sim, OID1, 5000, 3, m, sizeof m), FD_GATEWAY_DECLINED);
	/* per payment: another payment's first attempt fails too */
	cr_assert_eq(gw_call(&sim, OID2, 10, 1, m, sizeof m), FD_GATEWAY_TRANSIENT);

	struct fd_gateway_sim none;
	fd_gateway_sim_init(&none, 1000, 0, false);
	cr_assert_eq(gw_call(&none, OID1, 10, 0, m, sizeof m), FD_GATEWAY_AUTHORISED, "fail_first 0 never fails");
}

Test(gateway, never_answers)
{
	struct fd_gateway_sim sim;
	fd_gateway_sim_init(&sim, 1000, 3, true);
	char m[64];
	for (unsigned attempt = 1; attempt < 10; attempt++) {
		cr_assert_eq(gw_call(&sim, OID1, 10, attempt, m, sizeof m), FD_GATEWAY_NO_ANSWER);
		cr_assert_eq(gw_call(&sim, OID1, 100000, attempt, m, sizeof m), FD_GATEWAY_NO_ANSWER);
	}
}

Test(gateway, message_buffer_handling)
{
	struct fd_gateway_sim sim;
	fd_gateway_sim_init(&sim, 1000, 0, false);
	char small[8];
	memset(small, 'Z', sizeof small);
	cr_assert_eq(gw_call(&sim, OID1, 10, 1, small, sizeof small), FD_GATEWAY_AUTHORISED);
	cr_assert_eq(strlen(small), sizeof small - 1, "truncated and terminated");
	cr_assert_eq(strncmp(small, "AUTH-", 5), 0);
	cr_assert_eq(gw_call(&sim, OID1, 10, 1, NULL, 0), FD_GATEWAY_AUTHORISED);
	char one = 'Z';
	cr_assert_eq(gw_call(&sim, OID1, 2000, 1, &one, 1), FD_GATEWAY_DECLINED);
	cr_assert_eq(one, '\0');
}

Test(gateway, authorisation_code_is_a_valid_authorise_payload)
{
	struct fd_gateway_sim sim;
	fd_gateway_sim_init(&sim, 1000, 0, false);
	char code[FD_AUTHORISATION_MAX + 1];
	cr_assert_eq(gw_call(&sim, OID1, 500, 1, code, sizeof code), FD_GATEWAY_AUTHORISED);
	struct agg a = payment_requested(500);
	json_t *p = json_pack("{s:s}", "authorisation", code);
	json_decref(accept_j(&a, "authorise", p));
	json_decref(p);
	cr_assert_eq(((struct fd_payment *)a.state)->status, FD_PAYMENT_AUTHORISED);
	agg_free(&a);
}
