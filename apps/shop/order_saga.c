/*
 * order_saga.c - the reference sagas.
 *
 * order_fulfillment (correlation key: the order id):
 *   accept_order       on OrderPlaced (starts the saga)     undo: cancel the order with the reason
 *   reserve_inventory  right after                          undo: release every line's reservation
 *   take_payment       when every line is reserved          undo: cancel the order, then refund what
 *                                                           was taken, or void a payment still
 *                                                           waiting for the gateway
 *   confirm_order      when the payment is authorised       (last step: the saga completes; records
 *                                                           the customer's e-mail the confirmation goes
 *                                                           to, personal data of the customer: sealed)
 * The conditions read the saga's data, which the events fold into (the
 * StockReserved and PaymentAuthorised of the log) and which a step's own
 * results also set (the reservations and the authorisation it just got), so
 * a worker goes on to the next step without waiting for its own events to
 * come back through the intake; folding them later changes nothing.
 * Insufficient stock, a declined payment, payment retries running out, a
 * payment that never answers (timeout) or the order being cancelled by
 * someone else all make the saga compensate: refund, release, cancel, in
 * that (reverse) order.
 *
 * The order cancelled after the saga completed (the customer changed their
 * mind about a confirmed order) makes the completed saga compensate too
 * (compensate_when_completed): the same undo, under the same saga id and
 * idempotency keys, so the payment is refunded and the stock released
 * exactly once.  Undoing take_payment cancels the order before it gives the
 * money back: a confirmed order could otherwise ship between the refund and
 * the cancel (an operator's abort racing the confirmation); when it has
 * shipped, the cancel is refused and the saga fails with the payment and the
 * stock left to the shipped order.
 *
 * order_shipping (key: the order id): commit_reservations on OrderShipped.
 *
 * Every compensation accepts "nothing to undo" (no reservation, nothing
 * authorised, already cancelled), because a step that failed part way is
 * compensated too.
 */
#include <stdio.h>
#include <string.h>

#include "factd/hash.h"
#include "payments.h"
#include "shop.h"
#include "factd/saga.h"
#include "factd/uuid.h"

static const char *const order_categories[] = { "order", "product", "payment", NULL };
static const char *const shipping_categories[] = { "order", NULL };
static const char *const order_events[] = { "OrderPlaced", "OrderConfirmed", "OrderCancelled", "StockReserved",
					    "ReservationReleased", "PaymentAttemptFailed", "PaymentAuthorised",
					    "PaymentDeclined", "PaymentRefunded", NULL };
static const char *const shipping_events[] = { "OrderShipped", NULL };

/* The id part of "<category>-<id>". */
static const char *stream_id(const struct fd_feed_event *ev)
{
	size_t n = strlen(ev->category);
	return strncmp(ev->stream, ev->category, n) == 0 && ev->stream[n] == '-' ? ev->stream + n + 1 : NULL;
}

static bool correlate_order(const struct fd_feed_event *ev, char *key, size_t len)
{
	const char *id = NULL;
	if (strcmp(ev->category, "order") == 0)
		id = stream_id(ev);
	else
		id = json_string_value(json_object_get(ev->data, "order_id"));
	if (!id || !*id || strlen(id) >= len)
		return false;
	snprintf(key, len, "%s", id);
	return true;
}

static bool correlate_shipping(const struct fd_feed_event *ev, char *key, size_t len)
{
	return strcmp(ev->type, "OrderShipped") == 0 && correlate_order(ev, key, len);
}

/* The payment of an order's fulfillment: a name-based id, so a rerun asks for the same payment. */
static void payment_id_for(const char *order_id, char out[37])
{
	struct fd_uuid u;
	fd_uuid_from_name("factd.saga.payment", order_id, strlen(order_id), &u);
	fd_uuid_format(&u, out);
}

static enum fd_err fold_order(json_t *data, const struct fd_feed_event *ev, struct fd_saga_fold *out)
{
	const char *t = ev->type;
	const char *corr = json_string_value(json_object_get(ev->metadata, "correlation_id"));
	bool ours = corr && strcmp(corr, out->saga_id) == 0;
	if (strcmp(t, "OrderPlaced") == 0) {
		const char *order_id = stream_id(ev);
		char pid[37];
		payment_id_for(order_id ? order_id : "", pid);
		json_t *lines = json_array();
		size_t i;
		json_t *l;
		json_array_foreach(json_object_get(ev->data, "lines"), i, l)
			json_array_append_new(lines, json_pack("{s:O, s:O}", "product_id", json_object_get(l, "product_id"),
							       "quantity", json_object_get(l, "quantity")));
		json_object_set_new(data, "order_id", json_string(order_id ? order_id : ""));
		json_object_set_new(data, "lines", lines);
		json_object_set(data, "total_cents", json_object_get(ev->data, "total_cents"));
		json_object_set_new(data, "payment_id", json_string(pid));
		json_object_set_new(data, "reserved", json_object());
		json_object_set_new(data, "payment", json_string("none"));
	} else if (strcmp(t, "StockReserved") == 0 || strcmp(t, "ReservationReleased") == 0) {
		const char *pid = stream_id(ev);
		json_t *reserved = json_object_get(data, "reserved");
		if (!pid || !json_is_object(reserved))
			return FD_OK;
		if (strcmp(t, "StockReserved") == 0)
			json_object_set(reserved, pid, json_object_get(ev->data, "quantity"));
		else
			json_object_del(reserved, pid);
	} else if (strcmp(t, "PaymentAttemptFailed") == 0) {
		json_int_t n = json_integer_value(json_object_get(data, "payment_failures"));
		json_object_set_new(data, "payment_failures", json_integer(n + 1));
	} else if (strcmp(t, "PaymentAuthorised") == 0) {
		json_object_set_new(data, "payment", json_string("authorised"));
	} else if (strcmp(t, "PaymentDeclined") == 0) {
		const char *why = json_string_value(json_object_get(ev->data, "reason"));
		json_object_set_new(data, "payment", json_string("declined"));
		out->fail = true;
		snprintf(out->reason, sizeof out->reason, "payment declined: %s", why ? why : "declined");
	} else if (strcmp(t, "PaymentRefunded") == 0) {
		json_object_set_new(data, "payment", json_string("refunded"));
	} else if (strcmp(t, "OrderConfirmed") == 0) {
		json_object_set_new(data, "order_status", json_string("confirmed"));
	} else if (strcmp(t, "OrderCancelled") == 0) {
		const char *why = json_string_value(json_object_get(ev->data, "reason"));
		json_object_set_new(data, "order_status", json_string("cancelled"));
		if (!ours) {
			out->fail = true;
			snprintf(out->reason, sizeof out->reason, "order cancelled: %s", why ? why : "");
		}
	}
	return FD_OK;
}

static bool all_reserved(const json_t *data)
{
	const json_t *reserved = json_object_get(data, "reserved");
	size_t i;
	json_t *l;
	json_array_foreach(json_object_get(data, "lines"), i, l) {
		const char *pid = json_string_value(json_object_get(l, "product_id"));
		if (!pid || !json_object_get(reserved, pid))
			return false;
	}
	return true;
}

static bool payment_settled(const json_t *data)
{
	const char *p = json_string_value(json_object_get(data, "payment"));
	return p && (strcmp(p, "authorised") == 0 || strcmp(p, "not_needed") == 0);
}

/* A bus error that may go away on its own (conflicts, the database, a full pool). */
static enum fd_step_result transient(struct fd_saga_ctx *ctx, enum fd_err err, const char *what)
{
	snprintf(ctx->error, sizeof ctx->error, "%s: %s", what, fd_err_name(err));
	return FD_STEP_RETRY;
}

static enum fd_step_result refused(struct fd_saga_ctx *ctx, const struct fd_cmd_result *r, const char *what)
{
	snprintf(ctx->error, sizeof ctx->error, "%.40s: %.47s%s%.160s", what, r->decision.slug,
		 r->decision.detail[0] ? ": " : "", r->decision.detail);
	return FD_STEP_FAIL;
}

static const char *order_id_of(struct fd_saga_ctx *ctx)
{
	const char *id = json_string_value(json_object_get(ctx->data, "order_id"));
	return id ? id : ctx->correlation_key;
}

/* ---- reserve_inventory ---------------------------------------------------- */

static enum fd_step_result reserve(struct fd_saga_ctx *ctx)
{
	size_t i;
	json_t *l;
	json_t *reserved = json_object();
	if (!reserved)
		return transient(ctx, FD_ERR_NOMEM, "reserve");
	json_object_set_new(ctx->set, "reserved", reserved);
	json_array_foreach(json_object_get(ctx->data, "lines"), i, l) {
		const char *pid = json_string_value(json_object_get(l, "product_id"));
		char sub[32];
		snprintf(sub, sizeof sub, "line-%zu", i);
		json_t *payload = json_pack("{s:s, s:O}", "order_id", order_id_of(ctx), "quantity",
					    json_object_get(l, "quantity"));
		struct fd_cmd_result r;
		enum fd_err err = payload ? fd_saga_send(ctx, &fd_product_type, pid ? pid : "", "reserve", payload, sub, &r)
					  : FD_ERR_NOMEM;
		json_decref(payload);
		enum fd_step_result out = FD_STEP_OK;
		if (!err || (err == FD_ERR_REJECTED && strcmp(r.decision.slug, "already-reserved") == 0))
			json_object_set(reserved, pid ? pid : "", json_object_get(l, "quantity")); /* what StockReserved says */
		else if (err == FD_ERR_REJECTED || err == FD_ERR_INVAL || err == FD_ERR_IDEMPOTENCY)
			out = refused(ctx, &r, pid ? pid : "product");
		else if (err)
			out = transient(ctx, err, "reserve");
		fd_cmd_result_release(&r);
		if (out != FD_STEP_OK)
			return out;
	}
	return FD_STEP_OK;
}

static enum fd_step_result release(struct fd_saga_ctx *ctx)
{
	size_t i;
	json_t *l;
	json_array_foreach(json_object_get(ctx->data, "lines"), i, l) {
		const char *pid = json_string_value(json_object_get(l, "product_id"));
		char sub[32];
		snprintf(sub, sizeof sub, "line-%zu", i);
		json_t *payload = json_pack("{s:s}", "order_id", order_id_of(ctx));
		struct fd_cmd_result r;
		enum fd_err err = payload ? fd_saga_send(ctx, &fd_product_type, pid ? pid : "", "release", payload, sub, &r)
					  : FD_ERR_NOMEM;
		json_decref(payload);
		enum fd_step_result out = FD_STEP_OK;
		if (err == FD_ERR_REJECTED || err == FD_ERR_INVAL)
			out = FD_STEP_OK; /* nothing reserved for this line (or no such product): nothing to release */
		else if (err)
			out = transient(ctx, err, "release");
		fd_cmd_result_release(&r);
		if (out != FD_STEP_OK)
			return out;
	}
	return FD_STEP_OK;
}

/* ---- take_payment ----------------------------------------------------------- */

static enum fd_err load_payment(struct fd_saga_ctx *ctx, const char *id, struct fd_payment *p)
{
	int64_t version;
	enum fd_err err = fd_bus_load(ctx->bus, &fd_payment_type, id, NULL, p, &version);
	return err;
}

static enum fd_step_result pay(struct fd_saga_ctx *ctx)
{
	const char *pid = json_string_value(json_object_get(ctx->data, "payment_id"));
	json_int_t total = json_integer_value(json_object_get(ctx->data, "total_cents"));
	if (!pid) {
		snprintf(ctx->error, sizeof ctx->error, "the saga has no payment id");
		return FD_STEP_FAIL;
	}
	if (total <= 0) {
		json_object_set_new(ctx->set, "payment", json_string("not_needed"));
		return FD_STEP_OK;
	}
	json_t *payload = json_pack("{s:s, s:I}", "order_id", order_id_of(ctx), "amount_cents", total);
	struct fd_cmd_result r;
	enum fd_err err = payload ? fd_saga_send(ctx, &fd_payment_type, pid, "request", payload, "request", &r)
				  : FD_ERR_NOMEM;
	json_decref(payload);
	bool exists = err == FD_ERR_REJECTED && strcmp(r.decision.slug, "payment-exists") == 0;
	enum fd_step_result out = FD_STEP_OK;
	if (err && !exists)
		out = err == FD_ERR_REJECTED || err == FD_ERR_INVAL || err == FD_ERR_IDEMPOTENCY
			      ? refused(ctx, &r, "payment request")
			      : transient(ctx, err, "payment request");
	fd_cmd_result_release(&r);
	if (out != FD_STEP_OK)
		return out;

	struct fd_cmd_meta meta;
	fd_saga_meta(ctx, &meta);
	enum fd_gateway_result answer = FD_GATEWAY_NO_ANSWER;
	err = fd_payment_process(ctx->bus, shop_gateway(ctx->services), pid, &meta, &answer, &r);
	if (err == FD_ERR_REJECTED) {
		/* not pending any more: an earlier run got an answer; go by the payment's state */
		fd_cmd_result_release(&r);
		struct fd_payment p;
		err = load_payment(ctx, pid, &p);
		enum fd_payment_status s = p.status;
		fd_payment_type.release(&p);
		if (err)
			return transient(ctx, err, "payment");
		if (s == FD_PAYMENT_AUTHORISED) {
			json_object_set_new(ctx->set, "payment", json_string("authorised"));
			return FD_STEP_OK;
		}
		snprintf(ctx->error, sizeof ctx->error, "payment %s", fd_payment_status_name(s));
		return FD_STEP_FAIL;
	}
	fd_cmd_result_release(&r);
	if (err)
		return transient(ctx, err, "payment");
	switch (answer) {
	case FD_GATEWAY_AUTHORISED:
		json_object_set_new(ctx->set, "payment", json_string("authorised")); /* what PaymentAuthorised says */
		return FD_STEP_OK;
	case FD_GATEWAY_DECLINED:
		snprintf(ctx->error, sizeof ctx->error, "payment declined");
		return FD_STEP_FAIL;
	case FD_GATEWAY_TRANSIENT:
		snprintf(ctx->error, sizeof ctx->error, "payment gateway unavailable");
		return FD_STEP_RETRY;
	case FD_GATEWAY_NO_ANSWER:
		break;
	}
	return FD_STEP_WAIT; /* no answer yet: the step's timeout decides */
}

static enum fd_step_result cancel(struct fd_saga_ctx *ctx);

static enum fd_step_result refund(struct fd_saga_ctx *ctx)
{
	const char *pid = json_string_value(json_object_get(ctx->data, "payment_id"));
	if (!pid)
		return FD_STEP_OK;
	/* no money back while the order may still ship: it is cancelled first (refused once shipped) */
	enum fd_step_result cancelled = cancel(ctx);
	if (cancelled != FD_STEP_OK)
		return cancelled;
	struct fd_payment p;
	enum fd_err err = load_payment(ctx, pid, &p);
	enum fd_payment_status s = p.status;
	fd_payment_type.release(&p);
	if (err)
		return transient(ctx, err, "payment");
	if (s == FD_PAYMENT_REQUESTED) {
		/*
		 * Still waiting for the gateway (it never answered): close the
		 * payment, so a late answer cannot take money for a cancelled order.
		 */
		char reason[FD_REASON_MAX + 1];
		snprintf(reason, sizeof reason, "voided by the order saga: %s", ctx->reason ? ctx->reason : "compensating");
		json_t *why = json_pack("{s:s}", "reason", reason);
		struct fd_cmd_result r;
		err = why ? fd_saga_send(ctx, &fd_payment_type, pid, "decline", why, "void", &r) : FD_ERR_NOMEM;
		json_decref(why);
		enum fd_step_result out = FD_STEP_OK;
		if (err == FD_ERR_REJECTED || err == FD_ERR_PRECONDITION || err == FD_ERR_CONFLICT)
			out = transient(ctx, err, "void payment"); /* it moved meanwhile: look again */
		else if (err == FD_ERR_INVAL || err == FD_ERR_IDEMPOTENCY)
			out = refused(ctx, &r, "void payment");
		else if (err)
			out = transient(ctx, err, "void payment");
		fd_cmd_result_release(&r);
		return out;
	}
	if (s != FD_PAYMENT_AUTHORISED)
		return FD_STEP_OK; /* nothing taken, or already refunded or declined */
	json_t *payload = json_object();
	struct fd_cmd_result r;
	err = payload ? fd_saga_send(ctx, &fd_payment_type, pid, "refund", payload, "refund", &r) : FD_ERR_NOMEM;
	json_decref(payload);
	enum fd_step_result out = FD_STEP_OK;
	if (err == FD_ERR_REJECTED)
		out = transient(ctx, err, "refund"); /* refunded by hand meanwhile: look again */
	else if (err == FD_ERR_INVAL || err == FD_ERR_IDEMPOTENCY)
		out = refused(ctx, &r, "refund");
	else if (err)
		out = transient(ctx, err, "refund");
	fd_cmd_result_release(&r);
	return out;
}

/* ---- the order itself --------------------------------------------------------- */

static enum fd_order_status order_status(struct fd_saga_ctx *ctx, enum fd_err *err)
{
	struct fd_order o;
	int64_t version;
	*err = fd_bus_load(ctx->bus, &fd_order_type, order_id_of(ctx), NULL, &o, &version);
	enum fd_order_status s = o.status;
	fd_order_type.release(&o);
	return s;
}

/*
 * Send an order command (payload stolen).  A refusal is fine when the order
 * already is where the command would take it (done, or done by someone
 * else): `done` and `also_done` name those statuses.
 */
static enum fd_step_result order_command(struct fd_saga_ctx *ctx, const char *command, json_t *payload,
					 enum fd_order_status done, enum fd_order_status also_done)
{
	struct fd_cmd_result r;
	enum fd_err err = payload ? fd_saga_send(ctx, &fd_order_type, order_id_of(ctx), command, payload, command, &r)
				  : FD_ERR_NOMEM;
	json_decref(payload);
	enum fd_step_result out = FD_STEP_OK;
	if (err == FD_ERR_REJECTED) {
		enum fd_err lerr;
		enum fd_order_status s = order_status(ctx, &lerr);
		if (lerr)
			out = transient(ctx, lerr, "order");
		else if (s != done && s != also_done)
			out = refused(ctx, &r, command); /* say, cancelling a shipped order: an operator must look */
	} else if (err == FD_ERR_INVAL || err == FD_ERR_IDEMPOTENCY) {
		out = refused(ctx, &r, command);
	} else if (err) {
		out = transient(ctx, err, command);
	}
	fd_cmd_result_release(&r);
	return out;
}

/*
 * Confirm the order, and record where its confirmation goes: the customer's
 * e-mail, when the order has one (personal data of the customer in the
 * saga's data: stored sealed, null once the customer is erased).
 */
static enum fd_step_result confirm(struct fd_saga_ctx *ctx)
{
	enum fd_step_result out = order_command(ctx, "confirm", json_object(), FD_ORDER_CONFIRMED, FD_ORDER_SHIPPED);
	if (out != FD_STEP_OK)
		return out;
	struct fd_order o;
	int64_t version;
	enum fd_err err = fd_bus_load(ctx->bus, &fd_order_type, order_id_of(ctx), NULL, &o, &version);
	if (err)
		out = transient(ctx, err, "order");
	else if (o.customer_id && json_is_string(o.email))
		if (json_object_set_new(ctx->set, "customer_id", json_string(o.customer_id)) ||
		    json_object_set(ctx->set, "confirmation_email", o.email))
			out = transient(ctx, FD_ERR_NOMEM, "confirmation");
	fd_order_type.release(&o);
	return out;
}

static enum fd_step_result cancel(struct fd_saga_ctx *ctx)
{
	char reason[FD_REASON_MAX + 1];
	snprintf(reason, sizeof reason, "%s", ctx->reason && *ctx->reason ? ctx->reason : "cancelled by the order saga");
	return order_command(ctx, "cancel", json_pack("{s:s}", "reason", reason), FD_ORDER_CANCELLED, FD_ORDER_CANCELLED);
}

static const struct fd_saga_step fulfillment_steps[] = {
	{ .name = "accept_order", .on_event = "OrderPlaced", .compensate = cancel,
	  .retry = { .max_attempts = 5, .delay_ms = 500, .backoff_pct = 200 } },
	{ .name = "reserve_inventory", .action = reserve, .compensate = release, .timeout_ms = 30000,
	  .retry = { .max_attempts = 5, .delay_ms = 500, .backoff_pct = 200 } },
	{ .name = "take_payment", .ready = all_reserved, .action = pay,
	  .compensate = refund, .timeout_ms = 30000,
	  .retry = { .max_attempts = 4, .delay_ms = 1000, .backoff_pct = 200 } },
	{ .name = "confirm_order", .ready = payment_settled, .action = confirm,
	  .retry = { .max_attempts = 5, .delay_ms = 500, .backoff_pct = 200 } },
};

/* The address the confirmation went to is personal data of the order's customer. */
static const char *const fulfillment_personal_paths[] = { "/confirmation_email", NULL };
static const struct fd_personal_decl fulfillment_personal = {
	.subject = "/customer_id",
	.paths = fulfillment_personal_paths,
};

const struct fd_saga_type fd_order_fulfillment_saga = {
	.name = "order_fulfillment",
	.categories = order_categories,
	.event_types = order_events,
	.correlate = correlate_order,
	.fold = fold_order,
	.steps = fulfillment_steps,
	.nsteps = sizeof fulfillment_steps / sizeof fulfillment_steps[0],
	.compensate_when_completed = true,
	.personal = &fulfillment_personal,
};

/* ---- order_shipping ------------------------------------------------------------- */

static enum fd_step_result commit_stock(struct fd_saga_ctx *ctx)
{
	struct fd_order o;
	int64_t version;
	enum fd_err err = fd_bus_load(ctx->bus, &fd_order_type, ctx->correlation_key, NULL, &o, &version);
	enum fd_step_result out = FD_STEP_OK;
	if (err) {
		out = transient(ctx, err, "order");
		goto done;
	}
	for (size_t i = 0; i < o.nlines && out == FD_STEP_OK; i++) {
		char sub[32];
		snprintf(sub, sizeof sub, "line-%zu", i);
		json_t *payload = json_pack("{s:s}", "order_id", ctx->correlation_key);
		struct fd_cmd_result r;
		err = payload ? fd_saga_send(ctx, &fd_product_type, o.lines[i].product_id, "commit", payload, sub, &r)
			      : FD_ERR_NOMEM;
		json_decref(payload);
		if (err && err != FD_ERR_REJECTED && err != FD_ERR_INVAL)
			out = transient(ctx, err, "commit");
		/* refused: nothing reserved for the line (confirmed by hand, say): nothing to commit */
		fd_cmd_result_release(&r);
	}
done:
	fd_order_type.release(&o);
	return out;
}

static const struct fd_saga_step shipping_steps[] = {
	{ .name = "commit_reservations", .on_event = "OrderShipped", .action = commit_stock,
	  .retry = { .max_attempts = 10, .delay_ms = 1000, .backoff_pct = 200 } },
};

const struct fd_saga_type fd_order_shipping_saga = {
	.name = "order_shipping",
	.categories = shipping_categories,
	.event_types = shipping_events,
	.correlate = correlate_shipping,
	.steps = shipping_steps,
	.nsteps = sizeof shipping_steps / sizeof shipping_steps[0],
};
