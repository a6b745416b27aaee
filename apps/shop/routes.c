/*
 * routes.c - the shop's routes, served after the framework's own.  A command
 * route names its aggregate type and command (FD_COMMAND); reads of an
 * aggregate's state and history use the framework's generic handlers.
 */
#include "shop.h"

#include "factd/handlers.h"
#include "factd/router.h"

#define CMD FD_COMMAND

const struct fd_route shop_routes[] = {
	/* orders */
	{ .method = "POST", .pattern = "/orders", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(fd_order_type, "create", .creates = true) },
	{ .method = "GET", .pattern = "/orders", .handler = shop_api_list_orders },
	{ .method = "GET", .pattern = "/orders/{id}", .handler = fd_api_get_aggregate, .arg = &fd_order_type },
	{ .method = "GET", .pattern = "/orders/{id}/events", .handler = fd_api_aggregate_events, .arg = &fd_order_type },
	{ .method = "GET", .pattern = "/orders/{id}/saga", .handler = fd_api_aggregate_saga,
	  .arg = &(const struct fd_aggregate_saga_route){ .type = &fd_order_type, .saga = "order_fulfillment",
						     .missing = "this order has no fulfillment saga (it has not been placed)" } },
	{ .method = "POST", .pattern = "/orders/{id}/lines", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(fd_order_type, "add_line", .complete = shop_line_defaults) },
	{ .method = "DELETE", .pattern = "/orders/{id}/lines/{product_id}", .handler = fd_api_command,
	  .arg = CMD(fd_order_type, "remove_line", .param_field = "product_id") },
	{ .method = "POST", .pattern = "/orders/{id}/place", .handler = fd_api_command, .arg = CMD(fd_order_type, "place") },
	{ .method = "POST", .pattern = "/orders/{id}/cancel", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(fd_order_type, "cancel") },
	{ .method = "POST", .pattern = "/orders/{id}/ship", .handler = fd_api_command, .arg = CMD(fd_order_type, "ship") },

	/* products (inventory) */
	{ .method = "POST", .pattern = "/products", .handler = fd_api_command, .json_body = true,
	  .arg = CMD(fd_product_type, "create", .creates = true) },
	{ .method = "GET", .pattern = "/products", .handler = shop_api_list_products },
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
	{ .method = "POST", .pattern = "/payments/{id}/process", .handler = shop_api_process_payment },
	{ .method = "POST", .pattern = "/payments/{id}/refund", .handler = shop_api_refund_payment,
	  .arg = CMD(fd_payment_type, "refund") },

	{ 0 } /* the end */
};
