/*
 * payment.c - the payment aggregate: requested for an order, then either
 * authorised (and possibly refunded, in parts) or declined.  Transient
 * gateway failures are recorded while the payment is pending.
 *
 * apply() accepts exactly the events decide() can produce from the current
 * state; anything else with a known type is FD_ERR_INVAL and leaves the
 * state unchanged.  Pure; thread-safe (each state has one owner).
 */
#include "shop.h"

#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[] = {
	[FD_PAYMENT_NONE] = "none",
	[FD_PAYMENT_REQUESTED] = "requested",
	[FD_PAYMENT_AUTHORISED] = "authorised",
	[FD_PAYMENT_DECLINED] = "declined",
	[FD_PAYMENT_REFUNDED] = "refunded",
};

#define NSTATUS (sizeof status_names / sizeof status_names[0])

const char *fd_payment_status_name(enum fd_payment_status s)
{
	if ((unsigned)s < NSTATUS)
		return status_names[s];
	return "unknown";
}

static bool status_from_name(const char *name, enum fd_payment_status *out)
{
	for (size_t i = 0; i < NSTATUS; i++) {
		if (strcmp(status_names[i], name) == 0) {
			*out = (enum fd_payment_status)i;
			return true;
		}
	}
	return false;
}

/* ---- state -------------------------------------------------------------------- */

static void payment_init(void *state)
{
	memset(state, 0, sizeof(struct fd_payment));
}

static void payment_release(void *state)
{
	struct fd_payment *p = state;
	free(p->decline_reason);
	memset(p, 0, sizeof *p);
}

/* ---- apply -------------------------------------------------------------------- */

static enum fd_err on_requested(struct fd_payment *p, const json_t *data)
{
	static const char *const keys[] = {"order_id", "amount_cents"};
	struct fd_decision d;
	char order_id[40];
	int64_t amount;
	if (p->status != FD_PAYMENT_NONE || !fd_payload_only(data, keys, 2, &d) ||
	    !fd_payload_uuid(data, "order_id", order_id, &d) ||
	    !fd_payload_int(data, "amount_cents", 1, FD_PRICE_MAX, false, &amount, &d))
		return FD_ERR_INVAL;
	memcpy(p->order_id, order_id, sizeof p->order_id);
	p->amount_cents = amount;
	p->status = FD_PAYMENT_REQUESTED;
	return FD_OK;
}

static enum fd_err on_attempt_failed(struct fd_payment *p, const json_t *data)
{
	static const char *const keys[] = {"error"};
	struct fd_decision d;
	const char *error;
	if (p->status != FD_PAYMENT_REQUESTED || p->attempts == UINT_MAX || !fd_payload_only(data, keys, 1, &d) ||
	    !fd_payload_string(data, "error", 1, FD_REASON_MAX, false, &error, &d))
		return FD_ERR_INVAL;
	p->attempts++;
	return FD_OK;
}

static enum fd_err on_authorised(struct fd_payment *p, const json_t *data)
{
	static const char *const keys[] = {"authorisation"};
	struct fd_decision d;
	const char *code;
	if (p->status != FD_PAYMENT_REQUESTED || !fd_payload_only(data, keys, 1, &d) ||
	    !fd_payload_string(data, "authorisation", 1, FD_AUTHORISATION_MAX, false, &code, &d))
		return FD_ERR_INVAL;
	p->status = FD_PAYMENT_AUTHORISED;
	return FD_OK;
}

static enum fd_err on_declined(struct fd_payment *p, const json_t *data)
{
	static const char *const keys[] = {"reason"};
	struct fd_decision d;
	const char *reason;
	if (p->status != FD_PAYMENT_REQUESTED || !fd_payload_only(data, keys, 1, &d) ||
	    !fd_payload_string(data, "reason", 1, FD_REASON_MAX, false, &reason, &d))
		return FD_ERR_INVAL;
	char *copy = strdup(reason);
	if (!copy)
		return FD_ERR_NOMEM;
	p->decline_reason = copy;
	p->status = FD_PAYMENT_DECLINED;
	return FD_OK;
}

static enum fd_err on_refunded(struct fd_payment *p, const json_t *data)
{
	static const char *const keys[] = {"amount_cents"};
	struct fd_decision d;
	int64_t amount;
	if (p->status != FD_PAYMENT_AUTHORISED || !fd_payload_only(data, keys, 1, &d) ||
	    !fd_payload_int(data, "amount_cents", 1, p->amount_cents - p->refunded_cents, false, &amount, &d))
		return FD_ERR_INVAL;
	p->refunded_cents += amount;
	if (p->refunded_cents == p->amount_cents)
		p->status = FD_PAYMENT_REFUNDED;
	return FD_OK;
}

static const struct {
	const char *type;
	enum fd_err (*apply)(struct fd_payment *p, const json_t *data);
} event_types[] = {
	{.type = "PaymentRequested", .apply = on_requested},
	{.type = "PaymentAttemptFailed", .apply = on_attempt_failed},
	{.type = "PaymentAuthorised", .apply = on_authorised},
	{.type = "PaymentDeclined", .apply = on_declined},
	{.type = "PaymentRefunded", .apply = on_refunded},
};

static enum fd_err payment_apply(void *state, const char *type, const json_t *data)
{
	if (!type)
		return FD_ERR_INVAL;
	for (size_t i = 0; i < sizeof event_types / sizeof event_types[0]; i++)
		if (strcmp(event_types[i].type, type) == 0)
			return event_types[i].apply(state, data);
	return FD_OK;
}

/* ---- snapshot, restore, view ------------------------------------------------- */

static json_t *payment_view(const void *state)
{
	const struct fd_payment *p = state;
	json_t *view = json_pack("{s:s?, s:I, s:s, s:I, s:I}", "order_id", p->order_id[0] ? p->order_id : NULL,
				 "amount_cents", (json_int_t)p->amount_cents, "status",
				 fd_payment_status_name(p->status), "refunded_cents", (json_int_t)p->refunded_cents,
				 "attempts", (json_int_t)p->attempts);
	if (view && p->decline_reason && json_object_set_new(view, "decline_reason", json_string(p->decline_reason)) != 0) {
		json_decref(view);
		return NULL;
	}
	return view;
}

/* The view's fields; a payment not yet requested is {"status": "none"}. */
static json_t *payment_snapshot(const void *state)
{
	const struct fd_payment *p = state;
	if (p->status == FD_PAYMENT_NONE)
		return json_pack("{s:s}", "status", fd_payment_status_name(p->status));
	return payment_view(state);
}

/*
 * Strict: every field present and well-typed, and the amounts consistent
 * with the status (nothing refunded unless authorised or refunded, all of it
 * exactly when refunded), a decline reason exactly when declined.
 */
static enum fd_err payment_restore(void *state, const json_t *snap)
{
	static const char *const keys[] = {
		"status", "order_id", "amount_cents", "refunded_cents", "attempts", "decline_reason",
	};
	struct fd_payment t = {0};
	struct fd_decision d;
	const char *status, *reason = NULL;
	int64_t attempts;
	enum fd_err err = FD_ERR_INVAL;

	if (!fd_payload_only(snap, keys, 6, &d) || !fd_payload_string(snap, "status", 1, 16, false, &status, &d) ||
	    !status_from_name(status, &t.status))
		goto done;
	if (t.status == FD_PAYMENT_NONE) {
		err = json_object_size(snap) == 1 ? FD_OK : FD_ERR_INVAL;
		goto done;
	}
	if (!fd_payload_uuid(snap, "order_id", t.order_id, &d) ||
	    !fd_payload_int(snap, "amount_cents", 1, FD_PRICE_MAX, false, &t.amount_cents, &d) ||
	    !fd_payload_int(snap, "refunded_cents", 0, t.amount_cents, false, &t.refunded_cents, &d) ||
	    !fd_payload_int(snap, "attempts", 0, UINT_MAX, false, &attempts, &d) ||
	    !fd_payload_string(snap, "decline_reason", 1, FD_REASON_MAX, true, &reason, &d) ||
	    (reason != NULL) != (t.status == FD_PAYMENT_DECLINED))
		goto done;
	if ((t.status == FD_PAYMENT_REQUESTED || t.status == FD_PAYMENT_DECLINED) && t.refunded_cents != 0)
		goto done;
	if (t.status == FD_PAYMENT_AUTHORISED && t.refunded_cents == t.amount_cents)
		goto done;
	if (t.status == FD_PAYMENT_REFUNDED && t.refunded_cents != t.amount_cents)
		goto done;
	t.attempts = (unsigned)attempts;
	t.decline_reason = reason ? strdup(reason) : NULL;
	err = reason && !t.decline_reason ? FD_ERR_NOMEM : FD_OK;
done:
	if (err == FD_OK) {
		payment_release(state);
		*(struct fd_payment *)state = t;
	} else {
		payment_release(&t);
	}
	return err;
}

/* ---- commands ----------------------------------------------------------------- */

static bool found(const struct fd_payment *p, struct fd_decision *out)
{
	if (p->status != FD_PAYMENT_NONE)
		return true;
	fd_decide_refuse(out, "payment-not-found", "Payment not found", "the payment has not been requested");
	return false;
}

static bool pending(const struct fd_payment *p, struct fd_decision *out)
{
	if (p->status == FD_PAYMENT_REQUESTED)
		return true;
	fd_decide_refuse(out, "payment-not-pending", "Payment is not pending", "the payment is %s",
			 fd_payment_status_name(p->status));
	return false;
}

static enum fd_err decide_request(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const keys[] = {"order_id", "amount_cents"};
	const struct fd_payment *p = state;
	char order_id[40];
	int64_t amount;
	if (!fd_payload_only(payload, keys, 2, out) || !fd_payload_uuid(payload, "order_id", order_id, out) ||
	    !fd_payload_int(payload, "amount_cents", 1, FD_PRICE_MAX, false, &amount, out))
		return FD_OK;
	if (p->status != FD_PAYMENT_NONE) {
		fd_decide_refuse(out, "payment-exists", "Payment already exists", "the payment is %s",
				 fd_payment_status_name(p->status));
		return FD_OK;
	}
	return fd_decide_event(out, "PaymentRequested",
			       json_pack("{s:s, s:I}", "order_id", order_id, "amount_cents", (json_int_t)amount));
}

static enum fd_err decide_record_failure(const void *state, bool exists, const json_t *payload,
					 struct fd_decision *out)
{
	static const char *const keys[] = {"error"};
	const struct fd_payment *p = state;
	const char *error;
	if (!found(p, out) || !fd_payload_only(payload, keys, 1, out) ||
	    !fd_payload_string(payload, "error", 1, FD_REASON_MAX, false, &error, out) || !pending(p, out))
		return FD_OK;
	if (p->attempts == UINT_MAX) {
		fd_decide_refuse(out, "too-many-attempts", "Too many attempts", "the attempt counter is full");
		return FD_OK;
	}
	return fd_decide_event(out, "PaymentAttemptFailed", json_pack("{s:s}", "error", error));
}

static enum fd_err decide_authorise(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const keys[] = {"authorisation"};
	const struct fd_payment *p = state;
	const char *code;
	if (!found(p, out) || !fd_payload_only(payload, keys, 1, out) ||
	    !fd_payload_string(payload, "authorisation", 1, FD_AUTHORISATION_MAX, false, &code, out) ||
	    !pending(p, out))
		return FD_OK;
	return fd_decide_event(out, "PaymentAuthorised", json_pack("{s:s}", "authorisation", code));
}

static enum fd_err decide_decline(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const keys[] = {"reason"};
	const struct fd_payment *p = state;
	const char *reason;
	if (!found(p, out) || !fd_payload_only(payload, keys, 1, out) ||
	    !fd_payload_string(payload, "reason", 1, FD_REASON_MAX, false, &reason, out) || !pending(p, out))
		return FD_OK;
	return fd_decide_event(out, "PaymentDeclined", json_pack("{s:s}", "reason", reason));
}

static enum fd_err decide_refund(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const keys[] = {"amount_cents"};
	const struct fd_payment *p = state;
	if (!found(p, out) || !fd_payload_only(payload, keys, 1, out))
		return FD_OK;
	int64_t remaining = p->amount_cents - p->refunded_cents, amount = remaining;
	if (!fd_payload_int(payload, "amount_cents", 1, FD_PRICE_MAX, true, &amount, out))
		return FD_OK;
	if (p->status != FD_PAYMENT_AUTHORISED) {
		fd_decide_refuse(out, "payment-not-authorised", "Payment is not authorised", "the payment is %s",
				 fd_payment_status_name(p->status));
		return FD_OK;
	}
	if (amount > remaining) {
		fd_decide_refuse(out, "refund-exceeds-payment", "Refund exceeds the payment",
				 "%" PRId64 " cents requested, %" PRId64 " refundable", amount, remaining);
		return FD_OK;
	}
	return fd_decide_event(out, "PaymentRefunded", json_pack("{s:I}", "amount_cents", (json_int_t)amount));
}

static const struct fd_command_type commands[] = {
	{.name = "request", .decide = decide_request},
	{.name = "record_failure", .decide = decide_record_failure},
	{.name = "authorise", .decide = decide_authorise},
	{.name = "decline", .decide = decide_decline},
	{.name = "refund", .decide = decide_refund},
};

static bool payment_exists(const void *state)
{
	return ((const struct fd_payment *)state)->status != FD_PAYMENT_NONE;
}

/* The payment's events, each at schema version 1 so far (schema.h). */
static const struct fd_event_type payment_event_types[] = {
	{ .type = "PaymentRequested" },
	{ .type = "PaymentAttemptFailed" },
	{ .type = "PaymentAuthorised" },
	{ .type = "PaymentDeclined" },
	{ .type = "PaymentRefunded" },
};

const struct fd_aggregate_type fd_payment_type = {
	.name = "payment",
	.category = "payment",
	.id_field = "payment_id",
	.id_is_uuid = true,
	.schema_version = 1,
	.snapshot_every = 100,
	.state_size = sizeof(struct fd_payment),
	.init = payment_init,
	.release = payment_release,
	.apply = payment_apply,
	.snapshot = payment_snapshot,
	.restore = payment_restore,
	.view = payment_view,
	.exists = payment_exists,
	.commands = commands,
	.ncommands = sizeof commands / sizeof commands[0],
	.events = { .types = payment_event_types, .ntypes = FD_COUNT(payment_event_types) },
};
