/*
 * api_schema.c - GET /schema/events: the event catalogue, derived from the
 * app definition.  One entry per event type an aggregate type declares: its
 * category, current name and schema version, the name it had before its
 * latest rename, and the upcasters that bring older events to it, oldest
 * first.  Pure over the app's tables; thread-safe.
 */
#include "http/api.h"
#include "factd/app.h"
#include "http/problem.h"

#include <string.h>

/* The step that leaves data of version from + 1 under `name`; NULL when none. */
static const struct fd_upcaster *step_into(const struct fd_event_schema *s, const char *name, int from)
{
	for (size_t i = 0; i < s->nupcasters; i++) {
		const struct fd_upcaster *u = &s->upcasters[i];
		const char *to = u->renamed_to ? u->renamed_to : u->type;
		if (u->from == from && u->type && strcmp(to, name) == 0)
			return u;
	}
	return NULL;
}

/* {category, aggregate, type, version, renamed_from?, upcasts: [{from, to, type}]}, or NULL on NOMEM. */
static json_t *type_entry(const struct fd_aggregate_type *agg, const struct fd_event_type *t)
{
	int version = t->version > 0 ? t->version : 1;
	json_t *e = json_pack("{s:s, s:s, s:s, s:i}", "category", agg->category, "aggregate", agg->name, "type", t->type,
			      "version", version);
	json_t *ups = json_array();
	if (!e || !ups)
		goto fail;
	const char *name = t->type;
	for (int v = version - 1; v >= 1; v--) {
		const struct fd_upcaster *u = step_into(&agg->events, name, v);
		if (!u)
			break; /* the start-up check refuses such a table */
		if (u->renamed_to && !json_object_get(e, "renamed_from") &&
		    json_object_set_new(e, "renamed_from", json_string(u->type)) != 0)
			goto fail;
		if (json_array_insert_new(ups, 0, json_pack("{s:i, s:i, s:s}", "from", v, "to", v + 1, "type", u->type)) != 0)
			goto fail;
		name = u->type;
	}
	if (json_object_set_new(e, "upcasts", ups) == 0)
		return e;
	ups = NULL;
fail:
	json_decref(ups);
	json_decref(e);
	return NULL;
}

void fd_api_schema_events(struct fd_req *req, struct fd_resp *resp)
{
	const struct fd_app *app = req->ctx->app;
	json_t *types = json_array();
	for (size_t i = 0; types && app && i < app->naggregates; i++) {
		const struct fd_aggregate_type *agg = app->aggregates[i];
		for (size_t k = 0; types && k < agg->events.ntypes; k++) {
			if (json_array_append_new(types, type_entry(agg, &agg->events.types[k])) != 0) {
				json_decref(types);
				types = NULL;
			}
		}
	}
	json_t *doc = types ? json_pack("{s:o}", "types", types) : NULL;
	if (!doc) {
		fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
		return;
	}
	fd_resp_json_doc(resp, 200, doc);
}
