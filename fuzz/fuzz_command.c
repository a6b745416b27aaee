/*
 * fuzz_command.c - JSON command bodies through the domain: parse as the HTTP
 * layer does (api_domain.c), then decide, then fold the decided events into
 * the state with apply(), as the command bus does.  Pure, no database.
 *
 * Input: one byte choosing the aggregate ('o' order, 'p' product, 'm'
 * payment, else byte % 3), then lines "<command><JSON body>", where
 * <command> is '0' + the index in the aggregate's command table (modulo its
 * size).  An empty body is {} like an empty HTTP body.  The lines run in
 * order on one state, so a seed can build an order, place it, ship it...
 *
 * A line "!<Type> <JSON object>" instead folds that event with apply(), as
 * loading does for a stored event: the generic stream API lets a client
 * append any event to an aggregate's stream, so apply() sees client bytes
 * too.  It must accept the event or refuse it (FD_ERR_INVAL) leaving the
 * state as it was (domain.h).
 *
 * A line "~<digit><Type> <JSON object>" folds an event as stored by code of
 * schema version <digit> of its type: it goes through the type's upcasters
 * first (schema.h), as every reader takes it, then apply().  Upcasting must
 * succeed, refuse (FD_ERR_INVAL), or find the version newer than the code
 * (FD_ERR_SCHEMA, only past the type's current version); what it makes is
 * an object, and the current version of the type it names.
 *
 * Properties checked besides the sanitizers': decide never fails but for
 * memory; a decision is well formed; every event decide produces is accepted
 * by apply (domain.h: "apply() accepts exactly the events decide() could
 * have produced"); snapshot() restores to an equal state and view() works.
 */
#include <jansson.h>

#include "factd/aggregate.h"
#include "shop.h"
#include "fuzz_common.h"

#define MAX_COMMANDS 64

static const struct fd_aggregate_type *pick(uint8_t b)
{
	switch (b) {
	case 'o': return &fd_order_type;
	case 'p': return &fd_product_type;
	case 'm': return &fd_payment_type;
	default: break;
	}
	static const struct fd_aggregate_type *const all[] = { &fd_order_type, &fd_product_type, &fd_payment_type };
	return all[b % 3];
}

/* The creating command of each type: the one the collection's POST route runs (routes.c). */
static bool creates(const struct fd_aggregate_type *t, const char *command)
{
	return strcmp(command, t == &fd_payment_type ? "request" : "create") == 0;
}

/* Parse a body as api_domain.c does; NULL when the HTTP layer would answer 400. */
static json_t *body_object(const char *text, size_t len)
{
	if (len == 0)
		return json_object();
	if (memchr(text, '\0', len))
		return NULL;
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (root && !json_is_object(root)) {
		json_decref(root);
		return NULL;
	}
	return root;
}

static void check_snapshot(const struct fd_aggregate_type *t, const void *state)
{
	json_t *snap = t->snapshot(state);
	if (!snap)
		return;
	void *copy = malloc(t->state_size);
	if (copy) {
		t->init(copy);
		FUZZ_CHECK(t->restore(copy, snap) == FD_OK);
		json_t *again = t->snapshot(copy);
		FUZZ_CHECK(!again || json_equal(snap, again));
		json_decref(again);
		t->release(copy);
		free(copy);
	}
	json_decref(snap);
	json_t *view = t->view(state);
	json_decref(view);
}

/* "<Type> <JSON object>": fold it; a refusal must leave the state unchanged. */
static void apply_line(const struct fd_aggregate_type *t, void *state, const char *text, size_t len, size_t *events)
{
	const char *sp = memchr(text, ' ', len);
	if (!sp)
		return;
	char *type = strndup(text, (size_t)(sp - text));
	json_t *data = json_loadb(sp + 1, len - (size_t)(sp - text) - 1, 0, NULL);
	if (type && json_is_object(data)) {
		json_t *before = t->snapshot(state);
		enum fd_err err = t->apply(state, type, data);
		FUZZ_CHECK(err == FD_OK || err == FD_ERR_INVAL || err == FD_ERR_NOMEM);
		if (err == FD_OK) {
			(*events)++;
			check_snapshot(t, state);
		} else if (err == FD_ERR_INVAL && before) {
			json_t *after = t->snapshot(state);
			FUZZ_CHECK(!after || json_equal(before, after));
			json_decref(after);
		}
		json_decref(before);
	}
	json_decref(data);
	free(type);
}

/* "<digit><Type> <JSON object>": upcast from that version, then fold as apply_line does. */
static void upcast_line(const struct fd_aggregate_type *t, void *state, const char *text, size_t len, size_t *events)
{
	if (len < 2 || text[0] < '0' || text[0] > '9')
		return;
	int version = text[0] - '0';
	const char *sp = memchr(text + 1, ' ', len - 1);
	if (!sp)
		return;
	char *type = strndup(text + 1, (size_t)(sp - text - 1));
	json_t *data = json_loadb(sp + 1, len - (size_t)(sp - text) - 1, 0, NULL);
	if (type && json_is_object(data) && version >= 1) {
		const char *name = type;
		int v = version;
		int known = fd_event_schema_version(&t->events, type);
		enum fd_err err = fd_event_schema_upcast(&t->events, NULL, &name, &v, data);
		FUZZ_CHECK(err == FD_OK || err == FD_ERR_INVAL || err == FD_ERR_NOMEM || err == FD_ERR_SCHEMA);
		FUZZ_CHECK(err != FD_ERR_SCHEMA || (known > 0 && version > known));
		if (err == FD_OK) {
			FUZZ_CHECK(json_is_object(data));
			int now = fd_event_schema_version(&t->events, name);
			FUZZ_CHECK(now == 0 || v == now);
			json_t *before = t->snapshot(state);
			enum fd_err aerr = t->apply(state, name, data);
			FUZZ_CHECK(aerr == FD_OK || aerr == FD_ERR_INVAL || aerr == FD_ERR_NOMEM);
			if (aerr == FD_OK) {
				(*events)++;
				check_snapshot(t, state);
			} else if (aerr == FD_ERR_INVAL && before) {
				json_t *after = t->snapshot(state);
				FUZZ_CHECK(!after || json_equal(before, after));
				json_decref(after);
			}
			json_decref(before);
		}
	}
	json_decref(data);
	free(type);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const struct fd_aggregate_type *t = pick(data[0]);
	void *state = malloc(t->state_size);
	if (!state)
		return 0;
	t->init(state);
	size_t events = 0;
	const char *p = (const char *)data + 1, *end = (const char *)data + size;
	for (int n = 0; p < end && n < MAX_COMMANDS; n++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *line_end = nl ? nl : end;
		if (line_end == p) { /* an empty line */
			p++;
			continue;
		}
		if (p[0] == '!') {
			apply_line(t, state, p + 1, (size_t)(line_end - p - 1), &events);
			p = nl ? nl + 1 : end;
			continue;
		}
		if (p[0] == '~') {
			upcast_line(t, state, p + 1, (size_t)(line_end - p - 1), &events);
			p = nl ? nl + 1 : end;
			continue;
		}
		const struct fd_command_type *cmd = &t->commands[(uint8_t)(p[0] - '0') % t->ncommands];
		json_t *payload = body_object(p + 1, (size_t)(line_end - p - 1));
		p = nl ? nl + 1 : end;
		if (!payload)
			continue;
		if (creates(t, cmd->name)) {
			/* api_domain.c takes the id out of the body before the command is sent. */
			json_t *given = json_object_get(payload, t->id_field);
			if (given) {
				if (!json_is_string(given) || !fd_aggregate_id_valid(t, json_string_value(given))) {
					json_decref(payload);
					continue;
				}
				json_object_del(payload, t->id_field);
			}
		}
		struct fd_decision d;
		enum fd_err err = cmd->decide(state, events > 0, payload, &d);
		FUZZ_CHECK(err == FD_OK || err == FD_ERR_NOMEM);
		if (err == FD_OK) {
			switch (d.outcome) {
			case FD_DECIDED:
				FUZZ_CHECK(json_is_array(d.events) && json_array_size(d.events) > 0);
				for (size_t i = 0; i < json_array_size(d.events); i++) {
					json_t *ev = json_array_get(d.events, i);
					json_t *type = json_object_get(ev, "type"), *evdata = json_object_get(ev, "data");
					FUZZ_CHECK(json_is_string(type) && json_is_object(evdata));
					/* what the bus stores: the data serialised, read back */
					char *text = json_dumps(evdata, JSON_COMPACT);
					json_t *stored = text ? json_loads(text, 0, NULL) : NULL;
					free(text);
					if (!stored)
						continue;
					FUZZ_CHECK(t->apply(state, json_string_value(type), stored) == FD_OK);
					json_decref(stored);
					events++;
				}
				check_snapshot(t, state);
				break;
			case FD_INVALID:
				FUZZ_CHECK(d.slug[0] && d.title[0] && (d.field[0] == '\0' || d.field[0] == '/'));
				break;
			case FD_REFUSED:
				FUZZ_CHECK(d.slug[0] && d.title[0] && !d.events);
				break;
			default:
				FUZZ_CHECK(!"unknown outcome");
			}
			fd_decision_release(&d);
		}
		json_decref(payload);
	}
	t->release(state);
	free(state);
	return 0;
}
