/*
 * routes.c - the route table.  Adding an endpoint is adding a row; a domain
 * command is a row naming its aggregate type and command.
 * The pattern doubles as the route label in logs and metrics (a route's
 * metrics slot is its index here).  A row's .role is the API-key role it
 * needs; unset, GET needs read and other methods write (see router.h).
 */
#include "factd/api.h"
#include "factd/domain.h"
#include "factd/router.h"

#define CMD(agg, name, ...) (&(const struct fd_command_route){ .type = &agg, .command = name, __VA_ARGS__ })

const struct fd_route fd_routes[] = {
	{ .method = "GET", .pattern = "/healthz", .handler = fd_api_healthz, .role = FD_ROLE_OPEN },
	{ .method = "GET", .pattern = "/readyz", .handler = fd_api_readyz, .role = FD_ROLE_OPEN },
	{ .method = "GET", .pattern = "/metrics", .handler = fd_api_metrics },

	/* the generic event store */
	{ .method = "POST", .pattern = "/streams/{stream}/events", .handler = fd_api_append, .json_body = true },
	{ .method = "GET", .pattern = "/streams/{stream}/events", .handler = fd_api_read_stream },
	{ .method = "GET", .pattern = "/events", .handler = fd_api_read_feed },
	{ .method = "GET", .pattern = "/events/stream", .handler = fd_api_event_stream },

	/* orders */
	{ .method = "POST", .pattern = "/orders", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(fd_order_type, "create", .creates = true) },
	{ .method = "GET", .pattern = "/orders", .handler = fd_api_list_orders },
	{ .method = "GET", .pattern = "/orders/{id}", .handler = fd_api_get_aggregate, .arg = &fd_order_type },
	{ .method = "GET", .pattern = "/orders/{id}/events", .handler = fd_api_aggregate_events, .arg = &fd_order_type },
	{ .method = "GET", .pattern = "/orders/{id}/saga", .handler = fd_api_order_saga },
	{ .method = "POST", .pattern = "/orders/{id}/lines", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(fd_order_type, "add_line") },
	{ .method = "DELETE", .pattern = "/orders/{id}/lines/{product_id}", .handler = fd_api_command,
	  .arg = CMD(fd_order_type, "remove_line", .param_field = "product_id") },
	{ .method = "POST", .pattern = "/orders/{id}/place", .handler = fd_api_command, .arg = CMD(fd_order_type, "place") },
	{ .method = "POST", .pattern = "/orders/{id}/cancel", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(fd_order_type, "cancel") },
	{ .method = "POST", .pattern = "/orders/{id}/ship", .handler = fd_api_command, .arg = CMD(fd_order_type, "ship") },

	/* products (inventory) */
	{ .method = "POST", .pattern = "/products", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(fd_product_type, "create", .creates = true) },
	{ .method = "GET", .pattern = "/products", .handler = fd_api_list_products },
	{ .method = "GET", .pattern = "/products/{id}", .handler = fd_api_get_aggregate, .arg = &fd_product_type },
	{ .method = "GET", .pattern = "/products/{id}/events", .handler = fd_api_aggregate_events,
	  .arg = &fd_product_type },
	{ .method = "POST", .pattern = "/products/{id}/restock", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(fd_product_type, "restock") },

	/* payments */
	{ .method = "POST", .pattern = "/payments", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(fd_payment_type, "request", .creates = true) },
	{ .method = "GET", .pattern = "/payments/{id}", .handler = fd_api_get_aggregate, .arg = &fd_payment_type },
	{ .method = "GET", .pattern = "/payments/{id}/events", .handler = fd_api_aggregate_events,
	  .arg = &fd_payment_type },
	{ .method = "POST", .pattern = "/payments/{id}/process", .handler = fd_api_process_payment },
	{ .method = "POST", .pattern = "/payments/{id}/refund", .handler = fd_api_refund_payment,
	  .arg = CMD(fd_payment_type, "refund") },

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
};

const size_t fd_routes_count = sizeof fd_routes / sizeof fd_routes[0];
