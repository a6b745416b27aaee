/* test_app.c - the framework's test-only app (see test_app.h). */
#include "test_app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "factd/events.h"
#include "factd/handlers.h"
#include "factd/router.h"

/* ---- the counter aggregate ---------------------------------------------------- */

static void counter_init(void *s)
{
	memset(s, 0, sizeof(struct fd_test_counter));
}

static void counter_release(void *s)
{
	(void)s;
}

static enum fd_err counter_apply(void *state, const char *type, const json_t *data)
{
	struct fd_test_counter *c = state;
	if (strcmp(type, "CounterCreated") == 0) {
		if (c->exists)
			return FD_ERR_INVAL;
		c->exists = true;
	} else if (strcmp(type, "CounterAdded") == 0) {
		json_t *a = json_object_get(data, "amount");
		if (!c->exists || c->closed || !json_is_integer(a) || json_integer_value(a) < 1)
			return FD_ERR_INVAL;
		c->total += json_integer_value(a);
		c->adds++;
	} else if (strcmp(type, "CounterAdjusted") == 0) {
		/* version 3: {delta, reason}; the total never goes below 0 */
		json_t *d = json_object_get(data, "delta"), *r = json_object_get(data, "reason");
		if (!c->exists || c->closed || !json_is_integer(d) || json_integer_value(d) == 0 ||
		    json_integer_value(d) < -1000 || json_integer_value(d) > 1000 || !json_is_string(r) ||
		    json_object_size(data) != 2 || c->total + json_integer_value(d) < 0)
			return FD_ERR_INVAL;
		c->total += json_integer_value(d);
	} else if (strcmp(type, "CounterClosed") == 0) {
		if (!c->exists || c->closed)
			return FD_ERR_INVAL;
		c->closed = true;
	}
	return FD_OK;
}

static json_t *counter_snapshot(const void *state)
{
	const struct fd_test_counter *c = state;
	return json_pack("{s:b, s:b, s:I, s:I}", "exists", c->exists, "closed", c->closed, "total",
			 (json_int_t)c->total, "adds", (json_int_t)c->adds);
}

static enum fd_err counter_restore(void *state, const json_t *snap)
{
	struct fd_test_counter *c = state;
	int exists = 0, closed = 0;
	json_int_t total = 0, adds = 0;
	if (json_unpack((json_t *)snap, "{s:b, s:b, s:I, s:I}", "exists", &exists, "closed", &closed, "total", &total,
			"adds", &adds) != 0 || total < 0 || adds < 0)
		return FD_ERR_INVAL;
	*c = (struct fd_test_counter){ .exists = exists, .closed = closed, .total = total, .adds = adds };
	return FD_OK;
}

static json_t *counter_view(const void *state)
{
	const struct fd_test_counter *c = state;
	return json_pack("{s:s, s:I, s:I}", "status", c->closed ? "closed" : "open", "total", (json_int_t)c->total,
			 "adds", (json_int_t)c->adds);
}

static bool counter_exists(const void *state)
{
	return ((const struct fd_test_counter *)state)->exists;
}

static enum fd_err decide_create(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const allowed[] = { "counter_id" };
	if (!fd_payload_only(payload, allowed, 1, out))
		return FD_OK;
	if (counter_exists(state)) {
		fd_decide_refuse(out, "counter-exists", "Counter exists", "this counter exists already");
		return FD_OK;
	}
	return fd_decide_event(out, "CounterCreated", json_object());
}

static enum fd_err decide_add(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct fd_test_counter *c = state;
	static const char *const allowed[] = { "amount" };
	int64_t amount = 0;
	if (!c->exists) {
		fd_decide_refuse(out, "counter-not-found", "Counter not found", "no counter has this id");
		return FD_OK;
	}
	if (!fd_payload_only(payload, allowed, 1, out) || !fd_payload_int(payload, "amount", 1, 1000, false, &amount, out))
		return FD_OK;
	if (c->closed) {
		fd_decide_refuse(out, "counter-closed", "Counter is closed", "a closed counter takes no more");
		return FD_OK;
	}
	return fd_decide_event(out, "CounterAdded", json_pack("{s:I}", "amount", (json_int_t)amount));
}

static enum fd_err decide_close(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct fd_test_counter *c = state;
	if (!c->exists) {
		fd_decide_refuse(out, "counter-not-found", "Counter not found", "no counter has this id");
		return FD_OK;
	}
	if (!fd_payload_only(payload, NULL, 0, out))
		return FD_OK;
	if (c->closed) {
		fd_decide_refuse(out, "counter-closed", "Counter is closed", "the counter is closed already");
		return FD_OK;
	}
	return fd_decide_event(out, "CounterClosed", json_object());
}

static enum fd_err decide_adjust(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct fd_test_counter *c = state;
	static const char *const allowed[] = { "delta", "reason" };
	int64_t delta = 0;
	const char *reason = NULL;
	if (!c->exists) {
		fd_decide_refuse(out, "counter-not-found", "Counter not found", "no counter has this id");
		return FD_OK;
	}
	if (!fd_payload_only(payload, allowed, 2, out) ||
	    !fd_payload_int(payload, "delta", -1000, 1000, false, &delta, out) ||
	    !fd_payload_string(payload, "reason", 1, 100, false, &reason, out))
		return FD_OK;
	if (delta == 0 || c->closed || c->total + delta < 0) {
		fd_decide_refuse(out, "counter-adjust", "Adjustment refused", "zero, closed, or below zero");
		return FD_OK;
	}
	return fd_decide_event(out, "CounterAdjusted", json_pack("{s:I, s:s}", "delta", (json_int_t)delta, "reason", reason));
}

static const struct fd_command_type counter_commands[] = {
	{ "create", decide_create },
	{ "add", decide_add },
	{ "close", decide_close },
	{ "adjust", decide_adjust },
};

/*
 * The counter's event history, for the schema tests: CounterAdjusted is at
 * version 3.  Version 1 was called CounterCorrected {by}; version 2 took
 * the new name and a reason {by, reason}; version 3 calls the amount delta
 * {delta, reason}.
 */
static enum fd_err corrected_to_adjusted(json_t *data, const void *services)
{
	(void)services;
	if (!json_object_get(data, "by"))
		return FD_ERR_INVAL;
	return json_object_set_new(data, "reason", json_string("correction")) == 0 ? FD_OK : FD_ERR_NOMEM;
}

static enum fd_err adjusted_by_to_delta(json_t *data, const void *services)
{
	(void)services;
	json_t *by = json_object_get(data, "by");
	if (!by || !json_object_get(data, "reason"))
		return FD_ERR_INVAL;
	if (json_object_set(data, "delta", by) != 0)
		return FD_ERR_NOMEM;
	json_object_del(data, "by");
	return FD_OK;
}

static const struct fd_event_type counter_event_types[] = {
	{ .type = "CounterCreated" },
	{ .type = "CounterAdded" },
	{ .type = "CounterClosed" },
	{ .type = "CounterAdjusted", .version = 3 },
};

static const struct fd_upcaster counter_upcasters[] = {
	{ .type = "CounterCorrected", .from = 1, .renamed_to = "CounterAdjusted", .up = corrected_to_adjusted },
	{ .type = "CounterAdjusted", .from = 2, .up = adjusted_by_to_delta },
};

const struct fd_aggregate_type fd_test_counter_type = {
	.name = "counter",
	.category = "counter",
	.id_field = "counter_id",
	.schema_version = 1,
	.snapshot_every = 5,
	.state_size = sizeof(struct fd_test_counter),
	.init = counter_init,
	.release = counter_release,
	.apply = counter_apply,
	.snapshot = counter_snapshot,
	.restore = counter_restore,
	.view = counter_view,
	.exists = counter_exists,
	.commands = counter_commands,
	.ncommands = FD_COUNT(counter_commands),
	.events = { .types = counter_event_types, .ntypes = FD_COUNT(counter_event_types),
		    .upcasters = counter_upcasters, .nupcasters = FD_COUNT(counter_upcasters) },
};

/* ---- the counter_totals projection -------------------------------------------- */

static const char *const counter_categories[] = { "counter", NULL };

static const char *const totals_statements[] = {
	"INSERT INTO {table} (counter_id, total, adds, version) VALUES ($1, 0, 0, $2::bigint)"
	" ON CONFLICT (counter_id) DO NOTHING",
	"UPDATE {table} SET total = total + $2::bigint, adds = adds + 1, version = $3::bigint"
	" WHERE counter_id = $1 AND version < $3::bigint",
	NULL,
};

static enum fd_err totals_handle(PGconn *conn, const char *table, const struct fd_feed_event *ev)
{
	const char *id = ev->stream + strlen("counter-");
	char version[24], amount[24];
	snprintf(version, sizeof version, "%lld", (long long)ev->version);
	if (strcmp(ev->type, "CounterCreated") == 0) {
		const char *p[] = { id, version };
		return fd_projection_exec(conn, table, 0, 2, p);
	}
	if (strcmp(ev->type, "CounterAdded") == 0) {
		snprintf(amount, sizeof amount, "%lld", (long long)json_integer_value(json_object_get(ev->data, "amount")));
		const char *p[] = { id, amount, version };
		return fd_projection_exec(conn, table, 1, 3, p);
	}
	return FD_OK;
}

const struct fd_projection fd_test_counter_totals = {
	.name = "counter_totals",
	.table = "counter_totals",
	.categories = counter_categories,
	.create_sql = "CREATE TABLE {table} (counter_id text PRIMARY KEY, total bigint NOT NULL,"
		      " adds bigint NOT NULL, version bigint NOT NULL)",
	.version = 1,
	.statements = totals_statements,
	.handle = totals_handle,
};

/* ---- the counter_closer saga --------------------------------------------------- */

static const char *const closer_events[] = { "CounterCreated", "CounterAdded", "CounterAdjusted", NULL };

static bool closer_correlate(const struct fd_feed_event *ev, char *key, size_t len)
{
	if (strncmp(ev->stream, "counter-", 8) != 0)
		return false;
	snprintf(key, len, "%s", ev->stream + 8);
	return true;
}

atomic_int fd_test_fold_hold;
atomic_bool fd_test_fold_held;
atomic_bool fd_test_step_hold;
atomic_bool fd_test_step_held;

/* Wait while *hold is true (at most 20 s), saying so through *held. */
static void hold_here(atomic_bool *hold, atomic_bool *held)
{
	atomic_store(held, true);
	for (int i = 0; i < 2000 && atomic_load(hold); i++)
		usleep(10000);
	atomic_store(held, false);
}

static enum fd_err closer_fold(json_t *data, const struct fd_feed_event *ev, struct fd_saga_fold *out)
{
	(void)out;
	int hold = atomic_load(&fd_test_fold_hold);
	if (hold && strcmp(ev->type, "CounterAdded") == 0 &&
	    json_integer_value(json_object_get(ev->data, "amount")) == hold) {
		atomic_store(&fd_test_fold_held, true);
		for (int i = 0; i < 2000 && atomic_load(&fd_test_fold_hold) == hold; i++)
			usleep(10000);
		atomic_store(&fd_test_fold_hold, 0);
		atomic_store(&fd_test_fold_held, false);
	}
	/* CounterAdjusted arrives at version 3 ({delta}), also when it was stored as a CounterCorrected */
	const char *key = strcmp(ev->type, "CounterAdded") == 0 ? "amount"
			  : strcmp(ev->type, "CounterAdjusted") == 0 ? "delta"
								     : NULL;
	if (!key)
		return FD_OK;
	json_int_t total = json_integer_value(json_object_get(data, "total"));
	total += json_integer_value(json_object_get(ev->data, key));
	return json_object_set_new(data, "total", json_integer(total)) == 0 ? FD_OK : FD_ERR_NOMEM;
}

static bool full(const json_t *data)
{
	return json_integer_value(json_object_get(data, "total")) >= 100;
}

static enum fd_step_result close_counter(struct fd_saga_ctx *ctx)
{
	if (atomic_load(&fd_test_step_hold))
		hold_here(&fd_test_step_hold, &fd_test_step_held);
	struct fd_cmd_result r;
	json_t *payload = json_object();
	enum fd_err err = payload ? fd_saga_send(ctx, &fd_test_counter_type, ctx->correlation_key, "close", payload,
						 "close", &r)
				  : FD_ERR_NOMEM;
	json_decref(payload);
	enum fd_step_result out = FD_STEP_OK;
	if (err == FD_ERR_REJECTED && strcmp(r.decision.slug, "counter-closed") == 0)
		out = FD_STEP_OK; /* closed by someone else: the goal holds */
	else if (err) {
		snprintf(ctx->error, sizeof ctx->error, "close: %s", fd_err_name(err));
		out = FD_STEP_RETRY;
	}
	fd_cmd_result_release(&r);
	return out;
}

static const struct fd_saga_step closer_steps[] = {
	{ .name = "watch", .on_event = "CounterCreated" },
	{ .name = "close_when_full", .ready = full, .action = close_counter,
	  .retry = { .max_attempts = 5, .delay_ms = 100, .backoff_pct = 200 } },
};

const struct fd_saga_type fd_test_counter_closer = {
	.name = "counter_closer",
	.categories = counter_categories,
	.event_types = closer_events,
	.correlate = closer_correlate,
	.fold = closer_fold,
	.steps = closer_steps,
	.nsteps = FD_COUNT(closer_steps),
};

/* ---- a long poll over the parking seam ------------------------------------------- */

static char notified_mark;

/*
 * GET /test/park?after=<cursor>&wait_ms=<n>: the feed's events after the
 * cursor (at most 10) once there are any, or none after wait_ms; waits by
 * parking the request (fd_req_park), so no thread is held meanwhile.  Answers
 * {"count", "wake", "runs"}: how many events, why the last run happened, and
 * how many runs came before it.
 */
static void park_poll(struct fd_req *req, struct fd_resp *resp)
{
	static const char *const wakes[] = { "none", "notified", "timeout", "stopping" };
	struct fd_cursor after = { 0, 0 };
	const char *a = fd_req_query(req, "after"), *w = fd_req_query(req, "wait_ms");
	if ((a && !fd_cursor_parse(a, &after)) || !w || atoi(w) < 0) {
		fd_resp_json(resp, 400, strdup("{\"title\":\"after must be a cursor, wait_ms a number\"}"));
		return;
	}
	struct fd_feed_page page = { 0 };
	if (fd_store_read_feed(req->ctx->pool, after, NULL, 10, &page) != FD_OK) {
		fd_resp_json(resp, 503, strdup("{\"title\":\"feed unreadable\"}"));
		return;
	}
	free(page.events_json);
	/* park_state marks that some run was woken by a notification (it owns nothing) */
	if (req->wake == FD_WAKE_NOTIFIED)
		req->park_state = &notified_mark;
	/*
	 * Notified, yet nothing: the event may be held back behind an older
	 * open transaction (the feed is gap-safe), and no second notification
	 * will come for it: look again soon.
	 */
	if (page.count == 0 && fd_req_park(req, (unsigned)atoi(w), req->park_state ? 200 : 0))
		return;
	enum fd_wake wake = page.count > 0 && req->park_state ? FD_WAKE_NOTIFIED : req->wake;
	fd_resp_json_doc(resp, 200, json_pack("{s:i, s:s, s:i}", "count", (int)page.count, "wake", wakes[wake],
					      "runs", (int)req->runs));
}

/* ---- the app -------------------------------------------------------------------- */

static const struct fd_route routes[] = {
	{ .method = "POST", .pattern = "/counters", .handler = fd_api_command, .json_body = true,
	  .arg = FD_COMMAND(fd_test_counter_type, "create", .creates = true) },
	{ .method = "GET", .pattern = "/counters/{id}", .handler = fd_api_get_aggregate, .arg = &fd_test_counter_type },
	{ .method = "GET", .pattern = "/counters/{id}/events", .handler = fd_api_aggregate_events,
	  .arg = &fd_test_counter_type },
	{ .method = "GET", .pattern = "/counters/{id}/saga", .handler = fd_api_aggregate_saga,
	  .arg = &(const struct fd_aggregate_saga_route){ .type = &fd_test_counter_type, .saga = "counter_closer",
							.missing = "this counter has no saga" } },
	{ .method = "POST", .pattern = "/counters/{id}/add", .handler = fd_api_command, .json_body = true,
	  .arg = FD_COMMAND(fd_test_counter_type, "add") },
	{ .method = "POST", .pattern = "/counters/{id}/close", .handler = fd_api_command,
	  .arg = FD_COMMAND(fd_test_counter_type, "close") },
	{ .method = "GET", .pattern = "/test/park", .handler = park_poll },
};

/* ---- the member_welcome saga: personal values in saga data ------------------------- */

/*
 * Folds a MemberJoined of a "member-<id>" stream (appended through the
 * stream API with a personal declaration of its "/email") into
 * {member_id, email}: the e-mail is personal data of the member in the
 * saga's data too.  Its one step fails once with the e-mail in its error
 * (which the engine must redact), then records the e-mail's domain, which
 * it can only know from the opened value.
 */
static const char *const member_categories[] = { "member", NULL };
static const char *const member_events[] = { "MemberJoined", NULL };

static bool member_correlate(const struct fd_feed_event *ev, char *key, size_t len)
{
	if (strncmp(ev->stream, "member-", 7) != 0 || !ev->stream[7])
		return false;
	snprintf(key, len, "%s", ev->stream + 7);
	return true;
}

static enum fd_err member_fold(json_t *data, const struct fd_feed_event *ev, struct fd_saga_fold *out)
{
	(void)out;
	if (strcmp(ev->type, "MemberJoined") != 0)
		return FD_OK;
	if (json_object_set(data, "member_id", json_object_get(ev->data, "member_id")) ||
	    json_object_set(data, "email", json_object_get(ev->data, "email")))
		return FD_ERR_NOMEM;
	return FD_OK;
}

static enum fd_step_result welcome(struct fd_saga_ctx *ctx)
{
	const char *email = json_string_value(json_object_get(ctx->data, "email"));
	if (ctx->attempt == 1) {
		snprintf(ctx->error, sizeof ctx->error, "the mailbox of %s is full", email ? email : "(none)");
		return FD_STEP_RETRY;
	}
	const char *at = email ? strchr(email, '@') : NULL;
	json_object_set_new(ctx->set, "mail_domain", at ? json_string(at + 1) : json_null());
	return FD_STEP_OK;
}

static const struct fd_saga_step member_steps[] = {
	{ .name = "welcome", .on_event = "MemberJoined", .action = welcome,
	  .retry = { .max_attempts = 3, .delay_ms = 50, .backoff_pct = 100 } },
};

static const char *const member_personal_paths[] = { "/email", NULL };
static const struct fd_personal_decl member_personal = { .subject = "/member_id", .paths = member_personal_paths };

const struct fd_saga_type fd_test_member_welcome = {
	.name = "member_welcome",
	.categories = member_categories,
	.event_types = member_events,
	.correlate = member_correlate,
	.fold = member_fold,
	.steps = member_steps,
	.nsteps = FD_COUNT(member_steps),
	.personal = &member_personal,
};

static const struct fd_aggregate_type *const aggregates[] = { &fd_test_counter_type };
static const struct fd_saga_type *const sagas[] = { &fd_test_counter_closer, &fd_test_member_welcome };
static const struct fd_projection *const projections[] = { &fd_test_counter_totals };

const struct fd_app fd_test_app = {
	.name = "test",
	.aggregates = aggregates,
	.naggregates = FD_COUNT(aggregates),
	.routes = routes,
	.nroutes = FD_COUNT(routes),
	.sagas = sagas,
	.nsagas = FD_COUNT(sagas),
	.projections = projections,
	.nprojections = FD_COUNT(projections),
	.migrations = &fd_test_app_migrations,
};
