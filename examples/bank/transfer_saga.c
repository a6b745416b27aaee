/*
 * transfer_saga.c - the transfer saga (correlation key: the transfer id),
 * started by TransferRequested on the transfer's stream:
 *
 *   accept         on TransferRequested          undo: record the transfer failed (with its reason)
 *   hold_funds     hold the amount on the source undo: release the hold
 *   credit_target  credit the target             (nothing to undo: see below)
 *   settle         settle the source's hold, then record the transfer completed
 *
 * A source without the money fails hold_funds (reason insufficient-funds),
 * a missing or closed source too (source-unavailable); a missing or closed
 * target fails credit_target (target-unavailable).  Either way the saga
 * compensates: the hold is released (when there is one) and the transfer
 * is recorded failed.  The failing step names the reason in the saga's data
 * ("reason"), which the last compensation records.
 *
 * Every command goes through fd_saga_send, whose idempotency key is made of
 * the saga, the step and a sub-key: a step that runs again after a crash or
 * a lost lease finds its command's events and records nothing twice.
 *
 * Money moves from the source's hold to the target in two commands on two
 * streams, so between credit_target and settle the bank holds the amount
 * twice; settle only fails transiently and is retried for minutes.  Should
 * the saga compensate after the credit nevertheless (retries ran out, an
 * operator's abort), undoing hold_funds settles the hold instead of
 * releasing it and the transfer is recorded completed: the money has
 * reached the target, and releasing the hold would make money.  The saga's
 * data says whether the credit happened ("credited", set by credit_target's
 * outcome).
 */
#include "bank.h"

#include <stdio.h>
#include <string.h>

#include "factd/saga.h"

static const char *const categories[] = { "transfer", NULL };
static const char *const event_types[] = { "TransferRequested", NULL };

/* The id part of "<category>-<id>". */
static const char *stream_id(const struct fd_feed_event *ev)
{
	size_t n = strlen(ev->category);
	return strncmp(ev->stream, ev->category, n) == 0 && ev->stream[n] == '-' ? ev->stream + n + 1 : NULL;
}

static bool correlate(const struct fd_feed_event *ev, char *key, size_t len)
{
	const char *id = strcmp(ev->type, "TransferRequested") == 0 ? stream_id(ev) : NULL;
	if (!id || !*id || strlen(id) >= len)
		return false;
	snprintf(key, len, "%s", id);
	return true;
}

/* The request, as the saga's data: {transfer_id, from_account, to_account, amount_cents}. */
static enum fd_err fold(json_t *data, const struct fd_feed_event *ev, struct fd_saga_fold *out)
{
	const char *id = stream_id(ev);
	if (!id || strcmp(ev->type, "TransferRequested") != 0)
		return FD_OK;
	if (json_object_set_new(data, "transfer_id", json_string(id)) != 0 ||
	    json_object_set(data, "from_account", json_object_get(ev->data, "from_account")) != 0 ||
	    json_object_set(data, "to_account", json_object_get(ev->data, "to_account")) != 0 ||
	    json_object_set(data, "amount_cents", json_object_get(ev->data, "amount_cents")) != 0)
		return FD_ERR_NOMEM;
	return FD_OK;
}

/* ---- helpers ------------------------------------------------------------------ */

static const char *data_str(const struct fd_saga_ctx *ctx, const char *key)
{
	const char *s = json_string_value(json_object_get(ctx->data, key));
	return s ? s : "";
}

static const char *transfer_id(const struct fd_saga_ctx *ctx)
{
	const char *id = json_string_value(json_object_get(ctx->data, "transfer_id"));
	return id ? id : ctx->correlation_key;
}

static bool credited(const struct fd_saga_ctx *ctx)
{
	return json_is_true(json_object_get(ctx->data, "credited"));
}

/*
 * Send `command` to aggregate `id` of type t with payload (stolen); the
 * outcome in *err and *r (release r).
 */
static void send_cmd(struct fd_saga_ctx *ctx, const struct fd_aggregate_type *t, const char *id, const char *command,
		 json_t *payload, const char *sub, enum fd_err *err, struct fd_cmd_result *r)
{
	memset(r, 0, sizeof *r);
	*err = payload ? fd_saga_send(ctx, t, id, command, payload, sub, r) : FD_ERR_NOMEM;
	json_decref(payload);
}

static bool refused_as(enum fd_err err, const struct fd_cmd_result *r, const char *slug)
{
	return err == FD_ERR_REJECTED && strcmp(r->decision.slug, slug) == 0;
}

/* A failure that may go away on its own (conflicts, the database, a full pool): retry. */
static enum fd_step_result transient(struct fd_saga_ctx *ctx, enum fd_err err, const char *what)
{
	snprintf(ctx->error, sizeof ctx->error, "%s: %s", what, fd_err_name(err));
	return FD_STEP_RETRY;
}

/* A refusal that ends the transfer, with `reason` for its record. */
static enum fd_step_result fail(struct fd_saga_ctx *ctx, const struct fd_cmd_result *r, const char *reason)
{
	json_object_set_new(ctx->set, "reason", json_string(reason));
	snprintf(ctx->error, sizeof ctx->error, "%s (%.47s%s%.160s)", reason, r->decision.slug,
		 r->decision.detail[0] ? ": " : "", r->decision.detail);
	return FD_STEP_FAIL;
}

/* A refusal nothing in the saga explains (a bug, or a change behind its back): stop for an operator. */
static enum fd_step_result unexpected(struct fd_saga_ctx *ctx, enum fd_err err, const struct fd_cmd_result *r,
				      const char *what)
{
	snprintf(ctx->error, sizeof ctx->error, "%.40s: %s %.47s%s%.160s", what, fd_err_name(err), r->decision.slug,
		 r->decision.detail[0] ? ": " : "", r->decision.detail);
	return FD_STEP_FAIL;
}

static json_t *movement(const struct fd_saga_ctx *ctx)
{
	return json_pack("{s:s, s:O}", "transfer_id", transfer_id(ctx), "amount_cents",
			 json_object_get(ctx->data, "amount_cents"));
}

/* ---- hold_funds ------------------------------------------------------------------- */

static enum fd_step_result hold(struct fd_saga_ctx *ctx)
{
	enum fd_err err;
	struct fd_cmd_result r;
	send_cmd(ctx, &bank_account_type, data_str(ctx, "from_account"), "hold", movement(ctx), "hold", &err, &r);
	enum fd_step_result out = FD_STEP_OK;
	if (!err || refused_as(err, &r, "hold-exists"))
		out = FD_STEP_OK;
	else if (refused_as(err, &r, "insufficient-funds"))
		out = fail(ctx, &r, BANK_REASON_INSUFFICIENT_FUNDS);
	else if (err == FD_ERR_REJECTED || err == FD_ERR_INVAL)
		out = fail(ctx, &r, BANK_REASON_SOURCE_UNAVAILABLE); /* missing or closed, too many holds */
	else if (err == FD_ERR_IDEMPOTENCY)
		out = unexpected(ctx, err, &r, "hold");
	else
		out = transient(ctx, err, "hold");
	fd_cmd_result_release(&r);
	return out;
}

/* Undo hold_funds: release the hold, or settle it when the target has the money already. */
static enum fd_step_result unhold(struct fd_saga_ctx *ctx)
{
	const char *command = credited(ctx) ? "settle" : "release";
	enum fd_err err;
	struct fd_cmd_result r;
	send_cmd(ctx, &bank_account_type, data_str(ctx, "from_account"), command,
	     json_pack("{s:s}", "transfer_id", transfer_id(ctx)), command, &err, &r);
	enum fd_step_result out = FD_STEP_OK;
	if (!err || err == FD_ERR_REJECTED || err == FD_ERR_INVAL)
		out = FD_STEP_OK; /* refused: no hold (hold_funds failed, or no such account): nothing to undo */
	else if (err == FD_ERR_IDEMPOTENCY)
		out = unexpected(ctx, err, &r, command);
	else
		out = transient(ctx, err, command);
	fd_cmd_result_release(&r);
	return out;
}

/* ---- credit_target -------------------------------------------------------------- */

static enum fd_step_result credit(struct fd_saga_ctx *ctx)
{
	enum fd_err err;
	struct fd_cmd_result r;
	send_cmd(ctx, &bank_account_type, data_str(ctx, "to_account"), "credit", movement(ctx), "credit", &err, &r);
	enum fd_step_result out = FD_STEP_OK;
	if (!err) {
		json_object_set_new(ctx->set, "credited", json_true());
	} else if (err == FD_ERR_REJECTED || err == FD_ERR_INVAL) {
		out = fail(ctx, &r, BANK_REASON_TARGET_UNAVAILABLE); /* missing or closed (or full) */
	} else if (err == FD_ERR_IDEMPOTENCY) {
		out = unexpected(ctx, err, &r, "credit");
	} else {
		out = transient(ctx, err, "credit");
	}
	fd_cmd_result_release(&r);
	return out;
}

/* ---- the transfer's record ------------------------------------------------------ */

/* Record the transfer's outcome (payload stolen); already recorded the same way is fine. */
static enum fd_step_result record(struct fd_saga_ctx *ctx, const char *command, json_t *payload,
				  enum bank_transfer_status done)
{
	enum fd_err err;
	struct fd_cmd_result r;
	send_cmd(ctx, &bank_transfer_type, transfer_id(ctx), command, payload, command, &err, &r);
	enum fd_step_result out = FD_STEP_OK;
	if (refused_as(err, &r, "transfer-not-pending")) {
		struct bank_transfer t;
		int64_t version;
		enum fd_err lerr = fd_bus_load(ctx->bus, &bank_transfer_type, transfer_id(ctx), NULL, &t, &version);
		enum bank_transfer_status s = t.status;
		bank_transfer_type.release(&t);
		if (lerr)
			out = transient(ctx, lerr, "transfer");
		else if (s != done)
			out = unexpected(ctx, err, &r, command);
	} else if (err == FD_ERR_REJECTED || err == FD_ERR_INVAL || err == FD_ERR_IDEMPOTENCY) {
		out = unexpected(ctx, err, &r, command);
	} else if (err) {
		out = transient(ctx, err, command);
	}
	fd_cmd_result_release(&r);
	return out;
}

static enum fd_step_result complete(struct fd_saga_ctx *ctx)
{
	return record(ctx, "complete", json_object(), BANK_TRANSFER_COMPLETED);
}

/* Undo accept: the transfer failed, for the reason the failing step gave (else the saga's error). */
static enum fd_step_result record_failure(struct fd_saga_ctx *ctx)
{
	if (credited(ctx))
		return complete(ctx);
	char reason[BANK_REASON_MAX + 1];
	const char *given = json_string_value(json_object_get(ctx->data, "reason"));
	snprintf(reason, sizeof reason, "%s", given && *given ? given : ctx->reason && *ctx->reason ? ctx->reason : "failed");
	return record(ctx, "fail", json_pack("{s:s}", "reason", reason), BANK_TRANSFER_FAILED);
}

/* ---- settle ----------------------------------------------------------------------- */

static enum fd_step_result settle(struct fd_saga_ctx *ctx)
{
	enum fd_err err;
	struct fd_cmd_result r;
	send_cmd(ctx, &bank_account_type, data_str(ctx, "from_account"), "settle",
	     json_pack("{s:s}", "transfer_id", transfer_id(ctx)), "settle", &err, &r);
	enum fd_step_result out = FD_STEP_OK;
	if (err == FD_ERR_REJECTED || err == FD_ERR_INVAL || err == FD_ERR_IDEMPOTENCY)
		out = unexpected(ctx, err, &r, "settle"); /* the hold is gone: nothing here took it away */
	else if (err)
		out = transient(ctx, err, "settle");
	fd_cmd_result_release(&r);
	return out == FD_STEP_OK ? complete(ctx) : out;
}

/*
 * Retries: conflicts on a busy account and a database that is away are the
 * only transient failures; 20 runs 50 ms apart, each delay half as long
 * again as the one before, wait some five minutes in all.
 */
#define RETRY { .max_attempts = 20, .delay_ms = 50, .backoff_pct = 150 }

static const struct fd_saga_step steps[] = {
	{ .name = "accept", .on_event = "TransferRequested", .compensate = record_failure, .retry = RETRY },
	{ .name = "hold_funds", .action = hold, .compensate = unhold, .retry = RETRY },
	{ .name = "credit_target", .action = credit, .retry = RETRY },
	{ .name = "settle", .action = settle, .retry = RETRY },
};

const struct fd_saga_type bank_transfer_saga = {
	.name = "transfer",
	.categories = categories,
	.event_types = event_types,
	.correlate = correlate,
	.fold = fold,
	.steps = steps,
	.nsteps = FD_COUNT(steps),
};
