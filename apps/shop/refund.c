/*
 * refund.c - POST /payments/{id}/refund: the payment's refund command
 * (fd_api_command does the work) behind one rule that spans two aggregates.
 *
 * A payment made for an order that exists is given back by cancelling the
 * order: its fulfillment saga then refunds or voids it together with
 * releasing the stock, even after the order was confirmed.  A refund by hand
 * of such a payment while the order is not cancelled would leave a confirmed
 * or shipped order unpaid, so it is refused, 409 order-not-cancelled.  Once
 * the order is cancelled a refund by hand is allowed (the saga's own refund
 * then finds less or nothing left to give back).  Cancelled is an order's
 * last status, so the check cannot be overtaken between the read and the
 * refund.  The rule comes after the payment's own checks (404, 400, 412 and
 * its 409s keep answering as they did): it is consulted only for a refund
 * the payment would accept.
 */
#include "shop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "factd/bus.h"
#include "factd/handlers.h"
#include "factd/router.h"
#include "factd/uuid.h"

/* The refund's payload when the body is one (else NULL: the command handler answers the problem). */
static json_t *payload_of(const struct fd_req *req)
{
	if (req->body.len == 0)
		return json_object();
	const char *ct = fd_req_header(req, "Content-Type");
	if (!ct || strncasecmp(ct, "application/json", 16) != 0 || memchr(req->body.data, '\0', req->body.len))
		return NULL;
	json_t *p = json_loadb(req->body.data, req->body.len, JSON_REJECT_DUPLICATES, NULL);
	if (p && !json_is_object(p)) {
		json_decref(p);
		return NULL;
	}
	return p;
}

/*
 * Would the payment accept this refund?  True and its order's id in order_id
 * when so; false for anything the command itself answers first (unknown
 * payment, bad payload or If-Match, a stale If-Match, a refusal, a store
 * error).
 */
static bool refundable(struct fd_req *req, const char *payment_id, char order_id[FD_UUID_STRLEN + 1])
{
	const struct fd_command_type *refund = fd_aggregate_command(&fd_payment_type, "refund");
	json_t *payload = payload_of(req);
	struct fd_payment p;
	int64_t version = 0;
	bool ok = false;
	enum fd_err err = fd_bus_load(req->ctx->bus, &fd_payment_type, payment_id, NULL, &p, &version); /* inits p */
	if (err || !refund || !payload)
		goto done;
	const char *im = fd_req_header(req, "If-Match");
	int64_t want;
	if (im && (!fd_api_if_match(im, &want) || want != version))
		goto done;
	struct fd_decision d;
	if (refund->decide(&p, version > 0, payload, &d) != FD_OK)
		goto done;
	ok = d.outcome == FD_DECIDED;
	fd_decision_release(&d);
	memcpy(order_id, p.order_id, FD_UUID_STRLEN);
	order_id[FD_UUID_STRLEN] = '\0';
done:
	fd_payment_type.release(&p);
	json_decref(payload);
	return ok;
}

void shop_api_refund_payment(struct fd_req *req, struct fd_resp *resp)
{
	struct fd_uuid u;
	char payment_id[FD_UUID_STRLEN + 1], order_id[FD_UUID_STRLEN + 1];
	bool valid = fd_uuid_parse(req->params[0], &u);
	if (valid)
		fd_uuid_format(&u, payment_id);
	if (!valid || !refundable(req, payment_id, order_id)) {
		fd_api_command(req, resp);
		return;
	}
	struct fd_order o;
	int64_t version = 0;
	enum fd_err err = fd_bus_load(req->ctx->bus, &fd_order_type, order_id, NULL, &o, &version);
	enum fd_order_status status = o.status;
	fd_order_type.release(&o);
	if (err) {
		fd_problem_err(resp, req, err, NULL, NULL);
		return;
	}
	if (status != FD_ORDER_NONE && status != FD_ORDER_CANCELLED) {
		char detail[256];
		snprintf(detail, sizeof detail,
			 "the payment belongs to order %s, which is %s; cancel the order to give its payment back",
			 order_id, fd_order_status_name(status));
		fd_problem(resp, req, 409, "order-not-cancelled", "The payment's order is not cancelled", detail, NULL);
		return;
	}
	fd_api_command(req, resp);
}
