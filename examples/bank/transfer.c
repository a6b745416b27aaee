/*
 * transfer.c - the transfer aggregate: the durable record of one transfer,
 * requested over HTTP, then completed or failed by the transfer saga
 * (transfer_saga.c), which follows its stream.
 *
 * apply() accepts exactly the events decide() can produce from the current
 * state; anything else with a known type is FD_ERR_INVAL and leaves the
 * state unchanged.  Pure; thread-safe (each state has one owner).
 */
#include "bank.h"

#include <stdlib.h>
#include <string.h>

static const char *const status_names[] = {
	[BANK_TRANSFER_NONE] = "none",
	[BANK_TRANSFER_PENDING] = "pending",
	[BANK_TRANSFER_COMPLETED] = "completed",
	[BANK_TRANSFER_FAILED] = "failed",
};

const char *bank_transfer_status_name(enum bank_transfer_status s)
{
	return (unsigned)s < FD_COUNT(status_names) ? status_names[s] : "unknown";
}

static bool status_from_name(const char *name, enum bank_transfer_status *out)
{
	for (size_t i = 0; i < FD_COUNT(status_names); i++)
		if (strcmp(status_names[i], name) == 0) {
			*out = (enum bank_transfer_status)i;
			return true;
		}
	return false;
}

/* ---- state -------------------------------------------------------------------- */

static void transfer_init(void *state)
{
	memset(state, 0, sizeof(struct bank_transfer));
}

static void transfer_release(void *state)
{
	struct bank_transfer *t = state;
	free(t->reason);
	memset(t, 0, sizeof *t);
}

/*
 * {from_account, to_account, amount_cents}: two different account ids and an
 * amount.  The same account twice is invalid, naming to_account.
 */
static bool read_request(const json_t *data, struct bank_transfer *t, struct fd_decision *d)
{
	static const char *const keys[] = { "from_account", "to_account", "amount_cents" };
	if (!fd_payload_only(data, keys, 3, d) || !fd_payload_uuid(data, "from_account", t->from_account, d) ||
	    !fd_payload_uuid(data, "to_account", t->to_account, d) ||
	    !fd_payload_int(data, "amount_cents", 1, BANK_AMOUNT_MAX, false, &t->amount_cents, d))
		return false;
	if (strcmp(t->from_account, t->to_account) == 0) {
		fd_decide_invalid(d, "/to_account", "a transfer needs two different accounts");
		return false;
	}
	return true;
}

/* ---- apply -------------------------------------------------------------------- */

static enum fd_err on_requested(struct bank_transfer *t, const json_t *data)
{
	struct fd_decision d;
	struct bank_transfer n = { 0 };
	if (t->status != BANK_TRANSFER_NONE || !read_request(data, &n, &d))
		return FD_ERR_INVAL;
	*t = n;
	t->status = BANK_TRANSFER_PENDING;
	return FD_OK;
}

static enum fd_err on_completed(struct bank_transfer *t, const json_t *data)
{
	struct fd_decision d;
	if (t->status != BANK_TRANSFER_PENDING || !fd_payload_only(data, NULL, 0, &d))
		return FD_ERR_INVAL;
	t->status = BANK_TRANSFER_COMPLETED;
	return FD_OK;
}

static enum fd_err on_failed(struct bank_transfer *t, const json_t *data)
{
	static const char *const keys[] = { "reason" };
	struct fd_decision d;
	const char *reason;
	if (t->status != BANK_TRANSFER_PENDING || !fd_payload_only(data, keys, 1, &d) ||
	    !fd_payload_string(data, "reason", 1, BANK_REASON_MAX, false, &reason, &d))
		return FD_ERR_INVAL;
	char *copy = strdup(reason);
	if (!copy)
		return FD_ERR_NOMEM;
	t->reason = copy;
	t->status = BANK_TRANSFER_FAILED;
	return FD_OK;
}

static const struct {
	const char *type;
	enum fd_err (*apply)(struct bank_transfer *t, const json_t *data);
} event_types[] = {
	{ .type = "TransferRequested", .apply = on_requested },
	{ .type = "TransferCompleted", .apply = on_completed },
	{ .type = "TransferFailed", .apply = on_failed },
};

static enum fd_err transfer_apply(void *state, const char *type, const json_t *data)
{
	if (!type)
		return FD_ERR_INVAL;
	for (size_t i = 0; i < FD_COUNT(event_types); i++)
		if (strcmp(event_types[i].type, type) == 0)
			return event_types[i].apply(state, data);
	return FD_OK;
}

/* ---- snapshot, restore, view ------------------------------------------------- */

static json_t *transfer_view(const void *state)
{
	const struct bank_transfer *t = state;
	return json_pack("{s:s?, s:s?, s:I, s:s, s:s?}", "from_account", t->from_account[0] ? t->from_account : NULL,
			 "to_account", t->to_account[0] ? t->to_account : NULL, "amount_cents",
			 (json_int_t)t->amount_cents, "status", bank_transfer_status_name(t->status), "reason", t->reason);
}

/* The view; a transfer not yet requested is {"status": "none"}. */
static json_t *transfer_snapshot(const void *state)
{
	const struct bank_transfer *t = state;
	if (t->status == BANK_TRANSFER_NONE)
		return json_pack("{s:s}", "status", "none");
	return transfer_view(state);
}

/* Strict: a valid request, and a reason exactly when failed. */
static enum fd_err transfer_restore(void *state, const json_t *snap)
{
	struct bank_transfer t = { 0 };
	struct fd_decision d;
	const char *status, *reason = NULL;
	json_t *request = NULL;
	enum fd_err err = FD_ERR_INVAL;

	if (!fd_payload_string(snap, "status", 1, 16, false, &status, &d) || !status_from_name(status, &t.status))
		goto done;
	if (t.status == BANK_TRANSFER_NONE) {
		err = json_object_size(snap) == 1 ? FD_OK : FD_ERR_INVAL;
		goto done;
	}
	/* the request's fields, checked as the event's; then status and reason */
	request = json_deep_copy(snap);
	if (!request) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	json_object_del(request, "status");
	if (!json_is_null(json_object_get(snap, "reason")) &&
	    !fd_payload_string(snap, "reason", 1, BANK_REASON_MAX, false, &reason, &d))
		goto done;
	json_object_del(request, "reason");
	if (!read_request(request, &t, &d) || (reason != NULL) != (t.status == BANK_TRANSFER_FAILED))
		goto done;
	t.reason = reason ? strdup(reason) : NULL;
	err = reason && !t.reason ? FD_ERR_NOMEM : FD_OK;
done:
	json_decref(request);
	if (err == FD_OK) {
		transfer_release(state);
		*(struct bank_transfer *)state = t;
	} else {
		transfer_release(&t);
	}
	return err;
}

/* ---- commands ----------------------------------------------------------------- */

static bool found(const struct bank_transfer *t, struct fd_decision *out)
{
	if (t->status != BANK_TRANSFER_NONE)
		return true;
	fd_decide_refuse(out, "transfer-not-found", "Transfer not found", "no transfer has this id");
	return false;
}

static bool pending(const struct bank_transfer *t, struct fd_decision *out)
{
	if (t->status == BANK_TRANSFER_PENDING)
		return true;
	fd_decide_refuse(out, "transfer-not-pending", "Transfer is not pending", "the transfer is %s",
			 bank_transfer_status_name(t->status));
	return false;
}

static enum fd_err decide_request(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct bank_transfer *t = state;
	struct bank_transfer n = { 0 };
	if (!read_request(payload, &n, out))
		return FD_OK;
	if (t->status != BANK_TRANSFER_NONE) {
		fd_decide_refuse(out, "transfer-exists", "Transfer already exists", "the transfer is %s",
				 bank_transfer_status_name(t->status));
		return FD_OK;
	}
	return fd_decide_event(out, "TransferRequested",
			       json_pack("{s:s, s:s, s:I}", "from_account", n.from_account, "to_account", n.to_account,
					 "amount_cents", (json_int_t)n.amount_cents));
}

static enum fd_err decide_complete(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct bank_transfer *t = state;
	if (!found(t, out) || !fd_payload_only(payload, NULL, 0, out) || !pending(t, out))
		return FD_OK;
	return fd_decide_event(out, "TransferCompleted", json_object());
}

static enum fd_err decide_fail(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const keys[] = { "reason" };
	const struct bank_transfer *t = state;
	const char *reason;
	if (!found(t, out) || !fd_payload_only(payload, keys, 1, out) ||
	    !fd_payload_string(payload, "reason", 1, BANK_REASON_MAX, false, &reason, out) || !pending(t, out))
		return FD_OK;
	return fd_decide_event(out, "TransferFailed", json_pack("{s:s}", "reason", reason));
}

static const struct fd_command_type commands[] = {
	{ .name = "request", .decide = decide_request },
	{ .name = "complete", .decide = decide_complete },
	{ .name = "fail", .decide = decide_fail },
};

static bool transfer_exists(const void *state)
{
	return ((const struct bank_transfer *)state)->status != BANK_TRANSFER_NONE;
}

/* The transfer's events, each at schema version 1 so far (factd/schema.h). */
static const struct fd_event_type transfer_event_types[] = {
	{ .type = "TransferRequested" },
	{ .type = "TransferCompleted" },
	{ .type = "TransferFailed" },
};

const struct fd_aggregate_type bank_transfer_type = {
	.name = "transfer",
	.category = "transfer",
	.id_field = "transfer_id",
	.id_is_uuid = true,
	.schema_version = 1,
	.snapshot_every = 100,
	.state_size = sizeof(struct bank_transfer),
	.init = transfer_init,
	.release = transfer_release,
	.apply = transfer_apply,
	.snapshot = transfer_snapshot,
	.restore = transfer_restore,
	.view = transfer_view,
	.exists = transfer_exists,
	.commands = commands,
	.ncommands = FD_COUNT(commands),
	.events = { .types = transfer_event_types, .ntypes = FD_COUNT(transfer_event_types) },
};
