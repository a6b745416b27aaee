/*
 * api.c - the shop's own handlers, beside the framework's generic command and
 * aggregate routes:
 *   GET  /orders                  order summaries (?status, ?customer_id, ?after, ?limit, ?min_position)
 *   GET  /products                product stock (?after, ?limit, ?min_position)
 *   POST /payments/{id}/process   ask the gateway once about a pending payment and record the answer
 * The lists read the read models' tables (queries.c) and never replay events.
 * Every parameter is checked before any database work.
 */
#include "shop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/handlers.h"
#include "factd/bus.h"
#include "factd/events.h"
#include "factd/uuid.h"
#include "payments.h"
#include "queries.h"

void shop_api_list_orders(struct fd_req *req, struct fd_resp *resp)
{
	const char *status = fd_req_query(req, "status");
	const char *customer = fd_req_query(req, "customer_id");
	const char *after = fd_req_query(req, "after");
	struct fd_uuid u;
	unsigned limit;

	if (status && !fd_query_order_status_valid(status)) {
		fd_api_bad_param(resp, req, "status", "status must be one of draft, placed, confirmed, shipped, cancelled");
		return;
	}
	if (customer && !fd_query_customer_valid(customer)) {
		fd_api_bad_param(resp, req, "customer_id", "customer_id must be 1 to 128 characters of UTF-8");
		return;
	}
	if (after && !fd_uuid_parse(after, &u)) {
		fd_api_bad_param(resp, req, "after", "after must be an order id (a UUID) from a previous page");
		return;
	}
	if (!fd_api_list_limit(req, resp, &limit) || !fd_api_list_min_position(req, resp, "order_summaries"))
		return;
	char *json = NULL;
	enum fd_err err = FD_OK;
	for (struct fd_pool *pool = fd_req_read_pool(req, NULL); pool; pool = fd_req_read_retry(req, err))
		err = fd_query_orders(pool, status, customer, after, limit, &json);
	fd_api_list_answer(req, resp, err, json);
}

void shop_api_list_products(struct fd_req *req, struct fd_resp *resp)
{
	const char *after = fd_req_query(req, "after");
	unsigned limit;

	if (after && !fd_query_sku_valid(after)) {
		fd_api_bad_param(resp, req, "after", "after must be a product id (1 to 64 characters of A-Z a-z 0-9 _ . : -)");
		return;
	}
	if (!fd_api_list_limit(req, resp, &limit) || !fd_api_list_min_position(req, resp, "product_stock"))
		return;
	char *json = NULL;
	enum fd_err err = FD_OK;
	for (struct fd_pool *pool = fd_req_read_pool(req, NULL); pool; pool = fd_req_read_retry(req, err))
		err = fd_query_products(pool, after, limit, &json);
	fd_api_list_answer(req, resp, err, json);
}

static const char *const gateway_names[] = {
	[FD_GATEWAY_AUTHORISED] = "authorised",
	[FD_GATEWAY_DECLINED] = "declined",
	[FD_GATEWAY_TRANSIENT] = "transient_failure",
	[FD_GATEWAY_NO_ANSWER] = "no_answer",
};

void shop_api_process_payment(struct fd_req *req, struct fd_resp *resp)
{
	char id[FD_UUID_STRLEN + 1];
	struct fd_cmd_meta meta;
	struct fd_cmd_result res = { 0 };
	enum fd_gateway_result gw = FD_GATEWAY_NO_ANSWER;
	fd_api_cmd_meta(req, &meta);
	if (!fd_api_canonical_id(&fd_payment_type, req->params[0], id, sizeof id)) {
		fd_problem(resp, req, 404, "not-found", "Not found", "no payment has this id", NULL);
		return;
	}
	enum fd_err err = fd_payment_process(req->ctx->bus, shop_gateway(req->ctx->services), id, &meta, &gw, &res);
	if (err) {
		fd_api_command_problem(req, resp, &fd_payment_type, err, &res);
	} else {
		json_t *out = json_pack("{s:s, s:s}", "payment_id", id, "gateway", gateway_names[gw]);
		if (out && res.version) {
			char cursor[FD_CURSOR_STRLEN];
			fd_cursor_format(&res.position, cursor, sizeof cursor);
			json_object_set_new(out, "version", json_integer(res.version));
			json_object_set_new(out, "position", json_string(cursor));
			fd_api_set_etag(resp, res.version);
		}
		fd_resp_json_doc(resp, res.version ? 200 : 202, out);
	}
	fd_cmd_result_release(&res);
}
