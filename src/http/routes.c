/*
 * routes.c - the framework's route table, and the table a server serves: the
 * framework's rows, then the app's (struct fd_app.routes).  Adding an
 * endpoint is adding a row.  The pattern doubles as the route label in logs
 * and metrics (a route's metrics slot is its index in the served table).  A
 * row's .role is the API-key role it needs; unset, GET needs read and other
 * methods write (see router.h).
 */
#include "http/api.h"
#include "factd/app.h"
#include "factd/router.h"

#include <stdlib.h>
#include <string.h>

const struct fd_route fd_routes[] = {
	{ .method = "GET", .pattern = "/healthz", .handler = fd_api_healthz, .role = FD_ROLE_OPEN },
	{ .method = "GET", .pattern = "/readyz", .handler = fd_api_readyz, .role = FD_ROLE_OPEN },
	{ .method = "GET", .pattern = "/metrics", .handler = fd_api_metrics },

	/* the generic event store */
	{ .method = "POST", .pattern = "/streams/{stream}/events", .handler = fd_api_append, .json_body = true },
	{ .method = "GET", .pattern = "/streams/{stream}/events", .handler = fd_api_read_stream },
	{ .method = "GET", .pattern = "/events", .handler = fd_api_read_feed },
	{ .method = "GET", .pattern = "/events/stream", .handler = fd_api_event_stream },
	{ .method = "GET", .pattern = "/schema/events", .handler = fd_api_schema_events },

	/* read models */
	{ .method = "GET", .pattern = "/projections", .handler = fd_api_projections },
	{ .method = "POST", .pattern = "/projections/{name}/rebuild", .handler = fd_api_rebuild_projection,
	  .role = FD_ROLE_ADMIN },

	/* sagas (process managers) */
	{ .method = "GET", .pattern = "/sagas", .handler = fd_api_list_sagas },
	{ .method = "GET", .pattern = "/sagas/{id}", .handler = fd_api_get_saga },
	{ .method = "POST", .pattern = "/sagas/{id}/retry", .handler = fd_api_retry_saga,
	  .role = FD_ROLE_ADMIN },
	{ .method = "POST", .pattern = "/sagas/{id}/abort", .handler = fd_api_abort_saga,
	  .role = FD_ROLE_ADMIN },

	/* what the store holds, who is asking, what the app is; the operator console */
	{ .method = "GET", .pattern = "/streams", .handler = fd_api_list_streams },
	{ .method = "GET", .pattern = "/categories", .handler = fd_api_categories },
	{ .method = "GET", .pattern = "/events/head", .handler = fd_api_feed_head },
	{ .method = "GET", .pattern = "/whoami", .handler = fd_api_whoami, .role = FD_ROLE_OPEN },
	{ .method = "GET", .pattern = "/app", .handler = fd_api_app },
	{ .method = "GET", .pattern = "/console", .handler = fd_api_console_asset, .arg = "index.html",
	  .role = FD_ROLE_OPEN },
	{ .method = "GET", .pattern = "/console/{asset}", .handler = fd_api_console_asset, .role = FD_ROLE_OPEN },

	/* data lifecycle: deleting and truncating streams, retention per category */
	{ .method = "DELETE", .pattern = "/streams/{stream}", .handler = fd_api_delete_stream, .role = FD_ROLE_ADMIN },
	{ .method = "POST", .pattern = "/streams/{stream}/truncate", .handler = fd_api_truncate_stream,
	  .json_body = true, .role = FD_ROLE_ADMIN },
	{ .method = "GET", .pattern = "/retention", .handler = fd_api_list_retention, .role = FD_ROLE_ADMIN },
	{ .method = "GET", .pattern = "/retention/{category}", .handler = fd_api_get_retention, .role = FD_ROLE_ADMIN },
	{ .method = "PUT", .pattern = "/retention/{category}", .handler = fd_api_put_retention, .json_body = true,
	  .role = FD_ROLE_ADMIN },
	{ .method = "DELETE", .pattern = "/retention/{category}", .handler = fd_api_delete_retention,
	  .role = FD_ROLE_ADMIN },
	/* personal data: data subjects and their erasure */
	{ .method = "GET", .pattern = "/subjects/{subject}", .handler = fd_api_get_subject, .role = FD_ROLE_ADMIN },
	{ .method = "DELETE", .pattern = "/subjects/{subject}", .handler = fd_api_erase_subject,
	  .role = FD_ROLE_ADMIN },
	/* consumer groups: pulls lease events, acks and nacks settle them */
	{ .method = "GET", .pattern = "/subscriptions", .handler = fd_api_list_groups },
	{ .method = "PUT", .pattern = "/subscriptions/{name}", .handler = fd_api_put_group, .json_body = true,
	  .role = FD_ROLE_ADMIN },
	{ .method = "GET", .pattern = "/subscriptions/{name}", .handler = fd_api_get_group },
	{ .method = "DELETE", .pattern = "/subscriptions/{name}", .handler = fd_api_delete_group, .role = FD_ROLE_ADMIN },
	{ .method = "GET", .pattern = "/subscriptions/{name}/events", .handler = fd_api_group_pull },
	{ .method = "POST", .pattern = "/subscriptions/{name}/ack", .handler = fd_api_group_ack, .json_body = true },
	{ .method = "POST", .pattern = "/subscriptions/{name}/nack", .handler = fd_api_group_nack, .json_body = true },
	{ .method = "GET", .pattern = "/subscriptions/{name}/parked", .handler = fd_api_group_parked },
	{ .method = "POST", .pattern = "/subscriptions/{name}/parked/replay", .handler = fd_api_group_replay,
	  .role = FD_ROLE_ADMIN },

	/* webhooks: signed pushes, delivered by one process at a time */
	{ .method = "GET", .pattern = "/webhooks", .handler = fd_api_list_webhooks },
	{ .method = "PUT", .pattern = "/webhooks/{name}", .handler = fd_api_put_webhook, .json_body = true,
	  .role = FD_ROLE_ADMIN },
	{ .method = "GET", .pattern = "/webhooks/{name}", .handler = fd_api_get_webhook },
	{ .method = "DELETE", .pattern = "/webhooks/{name}", .handler = fd_api_delete_webhook, .role = FD_ROLE_ADMIN },
	{ .method = "POST", .pattern = "/webhooks/{name}/resume", .handler = fd_api_resume_webhook,
	  .role = FD_ROLE_ADMIN },
};

const size_t fd_routes_count = sizeof fd_routes / sizeof fd_routes[0];

enum fd_err fd_ctx_init(struct fd_ctx *ctx, const struct fd_app *app)
{
	size_t napp = app->nroutes;
	if (!napp)
		while (app->routes && app->routes[napp].method)
			napp++;
	size_t n = fd_routes_count + napp;
	ctx->app = app;
	ctx->routes = malloc(n * sizeof *ctx->routes);
	if (!ctx->routes)
		return FD_ERR_NOMEM;
	memcpy(ctx->routes, fd_routes, fd_routes_count * sizeof *ctx->routes);
	if (napp)
		memcpy(ctx->routes + fd_routes_count, app->routes, napp * sizeof *ctx->routes);
	ctx->nroutes = n;
	ctx->sagas = (struct fd_saga_set){ app->sagas, app->nsagas };
	ctx->projections = (struct fd_projection_set){ app->projections, app->nprojections };
	struct fd_schema_category *cats = app->naggregates ? calloc(app->naggregates, sizeof *cats) : NULL;
	if (app->naggregates && !cats) {
		fd_ctx_release(ctx);
		return FD_ERR_NOMEM;
	}
	for (size_t i = 0; i < app->naggregates; i++)
		cats[i] = (struct fd_schema_category){ app->aggregates[i]->category, &app->aggregates[i]->events };
	ctx->schemas = (struct fd_schemas){ .items = cats, .n = app->naggregates };
	return FD_OK;
}

void fd_ctx_release(struct fd_ctx *ctx)
{
	free(ctx->routes);
	ctx->routes = NULL;
	ctx->nroutes = 0;
	free((void *)ctx->schemas.items);
	ctx->schemas = (struct fd_schemas){ 0 };
}
