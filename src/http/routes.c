/*
 * routes.c - the route table.  Adding an endpoint is adding a row.
 * The pattern doubles as the route label in logs.
 */
#include "factd/api.h"
#include "factd/router.h"

const struct fd_route fd_routes[] = {
	{ .method = "GET", .pattern = "/healthz", .handler = fd_api_healthz },
	{ .method = "GET", .pattern = "/readyz", .handler = fd_api_readyz },
	{ .method = "POST", .pattern = "/streams/{stream}/events", .handler = fd_api_append, .json_body = true },
	{ .method = "GET", .pattern = "/streams/{stream}/events", .handler = fd_api_read_stream },
	{ .method = "GET", .pattern = "/events", .handler = fd_api_read_feed },
};

const size_t fd_routes_count = sizeof fd_routes / sizeof fd_routes[0];
