/*
 * api_groups.c - consumer groups over HTTP:
 *   PUT    /subscriptions/{name}                 create (201) or update (200) a group
 *   GET    /subscriptions                        every group with position, lag, in-flight, parked
 *   GET    /subscriptions/{name}                 one group
 *   DELETE /subscriptions/{name}                 remove a group and its deliveries
 *   GET    /subscriptions/{name}/events          long-poll pull: leased events
 *   POST   /subscriptions/{name}/ack             settle deliveries
 *   POST   /subscriptions/{name}/nack            retry, park or skip deliveries
 *   GET    /subscriptions/{name}/parked          parked events, by position
 *   POST   /subscriptions/{name}/parked/replay   put parked events back
 *
 * All state is in PostgreSQL (store/groups.h); this file parses, waits and
 * answers.  Every input is checked before any database work.
 *
 * Threading: handlers run on the server's handler workers; a pull that
 * finds nothing parks the request (fd_req_park, no thread waits), up to ?wait_ms.
 */
#include "http/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/notify.h"
#include "http/input_integ.h"
#include "http/problem.h"
#include "push/webhook.h"
#include "store/groups.h"

#define PULL_DEFAULT_MAX 100
#define PULL_MAX 1000
#define WAIT_DEFAULT_MS 5000
#define WAIT_MAX_MS 30000
/* A waiting pull looks again at least this often: leases run out and retry delays end without a NOTIFY. */
#define WAIT_SLICE_MS 200

static bool group_name(struct fd_req *req, struct fd_resp *resp)
{
	if (fd_integ_name_valid(req->params[0]))
		return true;
	fd_api_bad_param(resp, req, "name", "a subscription name is 1..100 characters of [A-Za-z0-9_.-], not starting with '.'");
	return false;
}

static void input_problem(struct fd_req *req, struct fd_resp *resp, const struct fd_input_error *e)
{
	fd_problem(resp, req, e->status, e->slug, e->title, e->detail,
		   e->has_field ? json_pack("{s:s}", "field", e->field) : NULL);
}

static void not_found(struct fd_req *req, struct fd_resp *resp)
{
	fd_problem(resp, req, 404, "not-found", "Not found", "no subscription has this name", NULL);
}

static void store_problem(struct fd_req *req, struct fd_resp *resp, enum fd_err err)
{
	if (err == FD_ERR_NOTFOUND)
		not_found(req, resp);
	else
		fd_problem_err(resp, req, err, NULL, NULL);
}

void fd_api_put_group(struct fd_req *req, struct fd_resp *resp)
{
	struct fd_group_def d;
	struct fd_input_error e;
	if (!group_name(req, resp))
		return;
	enum fd_err err = fd_group_def_parse(req->body.data, req->body.len, &d, &e);
	if (err) {
		input_problem(req, resp, &e);
		return;
	}
	char start[FD_CURSOR_STRLEN];
	if (d.start == FD_GROUP_START_POSITION)
		fd_cursor_format(&d.start_at, start, sizeof start);
	else
		snprintf(start, sizeof start, "%s", d.start == FD_GROUP_START_BEGINNING ? "beginning" : "end");
	struct fd_group_spec spec = {
		.name = req->params[0],
		.categories = d.filter.categories, .ncategories = d.filter.ncategories,
		.types = d.filter.types, .ntypes = d.filter.ntypes,
		.start = start, .ack_timeout_ms = d.ack_timeout_ms, .max_deliveries = d.max_deliveries,
		.ordering_stream = d.ordering_stream,
	};
	bool created = false;
	err = fd_group_put(req->ctx->pool, &spec, &created);
	fd_group_def_release(&d);
	if (err == FD_ERR_CONFLICT) {
		fd_problem(resp, req, 409, "subscription-start-fixed", "Start cannot change",
			   "the subscription exists with another start; delete it and create it again to start elsewhere",
			   NULL);
		return;
	}
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	json_t *list = NULL;
	if ((err = fd_group_list(req->ctx->pool, req->params[0], &list))) {
		store_problem(req, resp, err);
		return;
	}
	fd_resp_json_doc(resp, created ? 201 : 200, json_incref(json_array_get(list, 0)));
	json_decref(list);
	if (created) {
		char loc[160];
		snprintf(loc, sizeof loc, "/subscriptions/%s", req->params[0]);
		fd_resp_header(resp, "Location", loc);
	}
}

void fd_api_list_groups(struct fd_req *req, struct fd_resp *resp)
{
	json_t *list = NULL;
	enum fd_err err = fd_group_list(req->ctx->pool, NULL, &list);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	fd_resp_json_doc(resp, 200, json_pack("{s:o}", "subscriptions", list));
}

void fd_api_get_group(struct fd_req *req, struct fd_resp *resp)
{
	json_t *list = NULL;
	if (!group_name(req, resp))
		return;
	enum fd_err err = fd_group_list(req->ctx->pool, req->params[0], &list);
	if (err) {
		store_problem(req, resp, err);
		return;
	}
	fd_resp_json_doc(resp, 200, json_incref(json_array_get(list, 0)));
	json_decref(list);
}

void fd_api_delete_group(struct fd_req *req, struct fd_resp *resp)
{
	if (!group_name(req, resp))
		return;
	enum fd_err err = fd_group_delete(req->ctx->pool, req->params[0]);
	if (err) {
		store_problem(req, resp, err);
		return;
	}
	resp->status = 204;
}

/*
 * GET /subscriptions/{name}/events: lease up to ?max events to ?consumer,
 * waiting up to ?wait_ms for some without holding a thread (see below).
 */
void fd_api_group_pull(struct fd_req *req, struct fd_resp *resp)
{
	const char *consumer = fd_req_query(req, "consumer");
	long long max = PULL_DEFAULT_MAX, wait_ms = WAIT_DEFAULT_MS;
	if (!group_name(req, resp))
		return;
	if (!consumer || !fd_integ_consumer_valid(consumer)) {
		fd_api_bad_param(resp, req, "consumer",
				 "consumer is required: 1..200 characters of [A-Za-z0-9_.:@-] naming the consumer");
		return;
	}
	const char *v = fd_req_query(req, "max");
	if (v && !fd_input_int(v, 1, PULL_MAX, &max)) {
		fd_api_bad_param(resp, req, "max", "max must be an integer in 1..1000");
		return;
	}
	v = fd_req_query(req, "wait_ms");
	if (v && !fd_input_int(v, 0, WAIT_MAX_MS, &wait_ms)) {
		fd_api_bad_param(resp, req, "wait_ms", "wait_ms must be an integer in 0..30000");
		return;
	}
	/* never wait so long that the connection's own timeout could end it first */
	long long cap = (long long)req->ctx->cfg->request_timeout_s * 1000 / 2;
	if (wait_ms > cap)
		wait_ms = cap;
	char *json = NULL;
	size_t count = 0;
	enum fd_err err = fd_group_pull(req->ctx->pool, req->params[0], consumer, (unsigned)max, &json, &count);
	if (err) {
		store_problem(req, resp, err);
		return;
	}
	/*
	 * Nothing yet: park (fd_req_park, which keeps the wait's deadline across
	 * runs), holding no worker, until an append is announced or a slice
	 * passes (leases of other consumers expire without an announcement),
	 * then pull again.
	 */
	if (count == 0 && fd_req_park(req, (unsigned)wait_ms, WAIT_SLICE_MS)) {
		free(json);
		return;
	}
	struct fd_buf b = FD_BUF_INIT;
	if (fd_buf_appendf(&b, "{\"events\":%s}", json)) {
		free(json);
		fd_buf_release(&b);
		fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
		return;
	}
	free(json);
	fd_resp_json(resp, 200, fd_buf_detach(&b));
}

static void settle_conflict(struct fd_req *req, struct fd_resp *resp, char *bad, const char *what)
{
	json_t *ids = json_array();
	for (char *tok = bad && *bad ? strtok(bad, ",") : NULL; tok; tok = strtok(NULL, ","))
		json_array_append_new(ids, json_string(tok));
	fd_problem(resp, req, 409, "unknown-delivery", "Unknown delivery", what,
		   json_pack("{s:o}", "delivery_ids", ids));
}

static void settle(struct fd_req *req, struct fd_resp *resp, const char *kind)
{
	struct fd_settle_body b;
	struct fd_input_error e;
	if (!group_name(req, resp))
		return;
	if (fd_settle_parse(kind, req->body.data, req->body.len, &b, &e)) {
		input_problem(req, resp, &e);
		return;
	}
	static const enum fd_group_settle map[] = { [FD_SETTLE_ACK] = FD_GROUP_ACK, [FD_SETTLE_RETRY] = FD_GROUP_RETRY,
						    [FD_SETTLE_PARK] = FD_GROUP_PARK, [FD_SETTLE_SKIP] = FD_GROUP_SKIP };
	char *bad = NULL;
	enum fd_err err = fd_group_settle(req->ctx->pool, req->params[0], b.ids, b.n, map[b.action], b.delay_ms, &bad);
	size_t n = b.n;
	fd_settle_body_release(&b);
	if (err == FD_ERR_CONFLICT)
		settle_conflict(req, resp, bad,
				"a delivery id is unknown, already settled, or its lease ran out (the event will be "
				"delivered again); nothing was changed");
	else if (err)
		store_problem(req, resp, err);
	else
		fd_resp_json_doc(resp, 200, json_pack("{s:I}", strcmp(kind, "ack") ? "nacked" : "acked", (json_int_t)n));
	free(bad);
}

void fd_api_group_ack(struct fd_req *req, struct fd_resp *resp)
{
	settle(req, resp, "ack");
}

void fd_api_group_nack(struct fd_req *req, struct fd_resp *resp)
{
	settle(req, resp, "nack");
}

void fd_api_group_parked(struct fd_req *req, struct fd_resp *resp)
{
	struct fd_cursor after = { 0, 0 }, next;
	unsigned limit;
	if (!group_name(req, resp))
		return;
	const char *v = fd_req_query(req, "after");
	if (v && !fd_cursor_parse(v, &after)) {
		fd_api_bad_param(resp, req, "after", "after must be the \"next\" of a previous page (\"<tx>-<seq>\") or 0");
		return;
	}
	if (!fd_api_list_limit(req, resp, &limit))
		return;
	char *json = NULL;
	size_t count = 0;
	enum fd_err err = fd_group_parked(req->ctx->pool, req->params[0], after, limit, &json, &count, &next);
	if (err) {
		store_problem(req, resp, err);
		return;
	}
	struct fd_buf b = FD_BUF_INIT;
	char cur[FD_CURSOR_STRLEN];
	fd_cursor_format(&next, cur, sizeof cur);
	err = fd_buf_appendf(&b, "{\"parked\":%s,\"next\":\"%s\"}", json, cur);
	free(json);
	if (err) {
		fd_buf_release(&b);
		fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
		return;
	}
	fd_resp_json(resp, 200, fd_buf_detach(&b));
}

void fd_api_group_replay(struct fd_req *req, struct fd_resp *resp)
{
	struct fd_settle_body b;
	struct fd_input_error e;
	if (!group_name(req, resp))
		return;
	const char *ct = fd_req_header(req, "Content-Type");
	if (req->body.len && (!ct || strncasecmp(ct, "application/json", 16) != 0)) {
		fd_problem(resp, req, 415, "unsupported-media-type", "Unsupported media type",
			   "the body must be application/json", NULL);
		fd_resp_header(resp, "Accept-Post", "application/json");
		return;
	}
	if (fd_settle_parse("replay", req->body.data, req->body.len, &b, &e)) {
		input_problem(req, resp, &e);
		return;
	}
	char *bad = NULL;
	size_t replayed = 0;
	enum fd_err err = fd_group_replay(req->ctx->pool, req->params[0], b.ids, b.n, &replayed, &bad);
	fd_settle_body_release(&b);
	if (err == FD_ERR_CONFLICT)
		settle_conflict(req, resp, bad, "a delivery id names no parked event of this subscription; nothing was changed");
	else if (err)
		store_problem(req, resp, err);
	else
		fd_resp_json_doc(resp, 200, json_pack("{s:I}", "replayed", (json_int_t)replayed));
	free(bad);
}

/* ---- metrics ------------------------------------------------------------------------ */

static const char *name_of(json_t *o)
{
	const char *s = json_string_value(json_object_get(o, "name"));
	return s ? s : "";
}

static double num(json_t *o, const char *a, const char *b)
{
	json_t *v = json_object_get(o, a);
	if (b)
		v = json_object_get(v, b);
	return json_number_value(v);
}

void fd_api_integ_metrics(struct fd_pool *pool, struct fd_buf *out)
{
	json_t *groups = NULL, *hooks = NULL;
	enum fd_err err = FD_OK;
	size_t i;
	json_t *g;
	if (fd_group_list(pool, NULL, &groups) == FD_OK && json_array_size(groups)) {
		static const struct { const char *name, *help, *key; } gauges[] = {
			{ "factd_subscription_lag_events", "Events a consumer group has not settled yet (acked or skipped).", "lag_events" },
			{ "factd_subscription_lag_seconds", "Age in seconds of the oldest event a consumer group has not settled.", "lag_seconds" },
			{ "factd_subscription_in_flight", "Events leased to a consumer of the group now.", "in_flight" },
			{ "factd_subscription_parked", "Parked events of the group.", "parked" },
		};
		for (size_t k = 0; k < sizeof gauges / sizeof gauges[0] && !err; k++) {
			err = fd_buf_appendf(out, "# HELP %s %s\n# TYPE %s gauge\n", gauges[k].name, gauges[k].help, gauges[k].name);
			json_array_foreach(groups, i, g) if (!err) err = fd_buf_appendf(out, "%s{subscription=\"%s\"} %.6g\n",
			    gauges[k].name, name_of(g), num(g, gauges[k].key, NULL));
		}
		static const char *const outcomes[] = { "delivered", "acked", "retried", "skipped", "parked", "expired", "replayed" };
		if (!err)
			err = fd_buf_appendf(out, "# HELP factd_subscription_deliveries_total Consumer group deliveries by outcome,"
						  " counted by every process in the database.\n"
						  "# TYPE factd_subscription_deliveries_total counter\n");
		json_array_foreach(groups, i, g) for (size_t k = 0; k < sizeof outcomes / sizeof outcomes[0] && !err; k++)
			err = fd_buf_appendf(out, "factd_subscription_deliveries_total{subscription=\"%s\",outcome=\"%s\"} %.0f\n",
					     name_of(g), outcomes[k],
					     num(g, "deliveries", outcomes[k]));
	}
	if (!err && fd_webhook_list(pool, NULL, &hooks) == FD_OK && json_array_size(hooks)) {
		err = fd_buf_appendf(out, "# HELP factd_webhook_lag_events Events a webhook has not delivered yet.\n"
					  "# TYPE factd_webhook_lag_events gauge\n");
		json_array_foreach(hooks, i, g) if (!err) err = fd_buf_appendf(out, "factd_webhook_lag_events{webhook=\"%s\"} %.0f\n",
		    name_of(g), num(g, "lag_events", NULL));
		if (!err)
			err = fd_buf_appendf(out, "# HELP factd_webhook_disabled 1 when the webhook is disabled after failing.\n"
						  "# TYPE factd_webhook_disabled gauge\n");
		json_array_foreach(hooks, i, g) if (!err) err = fd_buf_appendf(out, "factd_webhook_disabled{webhook=\"%s\"} %d\n",
		    name_of(g),
		    json_string_value(json_object_get(g, "status")) &&
			    strcmp(json_string_value(json_object_get(g, "status")), "disabled") == 0);
		if (!err)
			err = fd_buf_appendf(out, "# HELP factd_webhook_deliveries_total Webhook delivery attempts by outcome.\n"
						  "# TYPE factd_webhook_deliveries_total counter\n");
		json_array_foreach(hooks, i, g) if (!err) err = fd_buf_appendf(out,
		    "factd_webhook_deliveries_total{webhook=\"%s\",outcome=\"delivered\"} %.0f\n"
		    "factd_webhook_deliveries_total{webhook=\"%s\",outcome=\"failed\"} %.0f\n",
		    name_of(g), num(g, "delivered", NULL),
		    name_of(g), num(g, "failures", NULL));
	}
	(void)err; /* a partial body is still valid exposition text */
	json_decref(groups);
	json_decref(hooks);
}
