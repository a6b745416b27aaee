/*
 * api_console.c - the operator console and what it asks about the service:
 *   GET /console/{asset}         the console's embedded files (GET /console/ and GET /console: index.html)
 *   GET /whoami                  the role of the caller's key (no key needed: "none" without a valid one)
 *   GET /app                     the app's aggregate types, sagas and projections, and where they are served
 *
 * The files need no key (they hold no data; everything the console shows
 * comes through the API with the operator's key).  Each carries a strong
 * ETag made at build time (If-None-Match answers 304), Cache-Control:
 * no-cache (revalidate every time, so an upgraded factd is never mixed with
 * a stale script), and a Content-Security-Policy that allows only the
 * console's own files and connections to this origin.
 */
#include "http/api.h"

#include <stdlib.h>
#include <string.h>

#include "factd/app.h"
#include "factd/auth.h"
#include "factd/router.h"
#include "http/console.h"
#include "http/problem.h"

#define CONSOLE_CSP                                                                                               \
	"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "   \
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

const struct fd_console_asset *fd_console_asset(const char *name)
{
	for (size_t i = 0; i < fd_console_nassets; i++)
		if (strcmp(fd_console_assets[i].name, name) == 0)
			return &fd_console_assets[i];
	return NULL;
}

void fd_api_console_asset(struct fd_req *req, struct fd_resp *resp)
{
	/* a route's row may name the file (GET /console is the index) */
	const struct fd_console_asset *a = fd_console_asset(req->route->arg ? req->route->arg : req->params[0]);
	if (!a) {
		fd_problem(resp, req, 404, "not-found", "Not found", "the console has no such file", NULL);
		return;
	}
	fd_resp_header(resp, "ETag", a->etag);
	fd_resp_header(resp, "Cache-Control", "no-cache");
	fd_resp_header(resp, "Content-Security-Policy", CONSOLE_CSP);
	fd_resp_header(resp, "X-Content-Type-Options", "nosniff");
	fd_resp_header(resp, "Referrer-Policy", "no-referrer");
	const char *inm = fd_req_header(req, "If-None-Match");
	if (inm && (strstr(inm, a->etag) || strcmp(inm, "*") == 0)) {
		resp->status = 304;
		return;
	}
	char *body = malloc(a->len ? a->len : 1);
	if (!body) {
		fd_problem_err(resp, req, FD_ERR_NOMEM, NULL, NULL);
		return;
	}
	memcpy(body, a->data, a->len);
	resp->status = 200;
	resp->body = body;
	resp->body_len = a->len;
	resp->content_type = a->content_type;
}

void fd_api_whoami(struct fd_req *req, struct fd_resp *resp)
{
	const struct fd_api_keys *keys = &req->ctx->cfg->api_keys;
	enum fd_role role = FD_ROLE_ADMIN; /* without keys, anyone may do anything (on loopback) */
	if (keys->n) {
		size_t len = 0;
		const char *token = fd_auth_bearer(fd_req_header(req, "Authorization"), &len);
		role = token ? fd_api_keys_lookup(keys, token, len) : FD_ROLE_DEFAULT;
	}
	/* open, like the probes: it tells a caller without a valid key only that one is needed */
	fd_resp_json_doc(resp, 200, json_pack("{s:s, s:b}", "role", role == FD_ROLE_DEFAULT ? "none" : fd_role_name(role),
					      "keys_required", keys->n > 0));
}

/* The first GET route of the served table with this handler and aggregate type, or NULL. */
static const struct fd_route *route_of(const struct fd_ctx *ctx, fd_handler_fn handler, const struct fd_aggregate_type *t)
{
	for (size_t i = 0; i < ctx->nroutes; i++) {
		const struct fd_route *r = &ctx->routes[i];
		if (r->handler != handler || strcmp(r->method, "GET") != 0)
			continue;
		const struct fd_aggregate_type *rt = handler == fd_api_aggregate_saga
							     ? ((const struct fd_aggregate_saga_route *)r->arg)->type
							     : r->arg;
		if (rt == t)
			return r;
	}
	return NULL;
}

static json_t *names(const char *const *list)
{
	json_t *a = json_array();
	for (size_t i = 0; a && list && list[i]; i++)
		json_array_append_new(a, json_string(list[i]));
	return a;
}

void fd_api_app(struct fd_req *req, struct fd_resp *resp)
{
	const struct fd_ctx *ctx = req->ctx;
	const struct fd_app *app = ctx->app;
	json_t *aggs = json_array(), *sagas = json_array(), *projs = json_array();
	for (size_t i = 0; aggs && i < app->naggregates; i++) {
		const struct fd_aggregate_type *t = app->aggregates[i];
		const struct fd_route *saga = route_of(ctx, fd_api_aggregate_saga, t);
		const struct fd_route *state = route_of(ctx, fd_api_get_aggregate, t);
		const struct fd_route *events = route_of(ctx, fd_api_aggregate_events, t);
		json_array_append_new(
			aggs, json_pack("{s:s, s:s, s:s, s:s?, s:s?, s:s?, s:s?}", "name", t->name, "category", t->category,
					"id_field", t->id_field, "state_path", state ? state->pattern : NULL, "events_path",
					events ? events->pattern : NULL, "saga_path", saga ? saga->pattern : NULL, "saga_type",
					saga ? ((const struct fd_aggregate_saga_route *)saga->arg)->saga : NULL));
	}
	for (size_t i = 0; sagas && i < ctx->sagas.n; i++) {
		const struct fd_saga_type *t = ctx->sagas.items[i];
		json_t *steps = json_array();
		for (size_t k = 0; steps && k < t->nsteps; k++)
			json_array_append_new(steps, json_pack("{s:s, s:b}", "name", t->steps[k].name, "compensates",
							       t->steps[k].compensate != NULL));
		json_array_append_new(sagas, json_pack("{s:s, s:o, s:o}", "name", t->name, "categories",
						       names(t->categories), "steps", steps ? steps : json_null()));
	}
	for (size_t i = 0; projs && i < ctx->projections.n; i++) {
		const struct fd_projection *p = ctx->projections.items[i];
		json_array_append_new(projs, json_pack("{s:s, s:o}", "name", p->name, "categories", names(p->categories)));
	}
	fd_resp_json_doc(resp, 200,
			 aggs && sagas && projs
				 ? json_pack("{s:s, s:s, s:s, s:o, s:o, s:o}", "name", app->name, "version",
					     app->version ? app->version : FACTD_VERSION, "framework_version", FACTD_VERSION,
					     "aggregates", aggs, "sagas", sagas, "projections", projs)
				 : NULL);
}
