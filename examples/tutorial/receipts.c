/*
 * receipts.c - the loan_receipt saga: every loan (a BookLent event) gets a
 * receipt posted to the member through the mailroom.  One saga per loan,
 * keyed "<book_id>/<loan>"; its one step retries while the mailroom fails.
 */
#include "library.h"

#include <stdio.h>
#include <string.h>

#include <factd/saga.h>

static const char *const categories[] = { "book", NULL };
static const char *const event_types[] = { "BookLent", NULL };

static bool correlate(const struct fd_feed_event *ev, char *key, size_t len)
{
	json_int_t loan = json_integer_value(json_object_get(ev->data, "loan"));
	int n = snprintf(key, len, "%s/%lld", ev->stream + strlen("book-"), (long long)loan);
	return strcmp(ev->type, "BookLent") == 0 && n > 0 && (size_t)n < len;
}

/* What the step needs, from the event that started the saga. */
static enum fd_err fold(json_t *data, const struct fd_feed_event *ev, struct fd_saga_fold *out)
{
	if (json_object_set_new(data, "book_id", json_string(ev->stream + strlen("book-"))) != 0 ||
	    json_object_set(data, "member", json_object_get(ev->data, "member")) != 0)
		return FD_ERR_NOMEM;
	return FD_OK;
}

static enum fd_step_result post_receipt(struct fd_saga_ctx *ctx)
{
	const char *book = json_string_value(json_object_get(ctx->data, "book_id"));
	const char *member = json_string_value(json_object_get(ctx->data, "member"));
	char text[256];
	if (!book || !member) {
		snprintf(ctx->error, sizeof ctx->error, "the loan has no book or member");
		return FD_STEP_FAIL;
	}
	snprintf(text, sizeof text, "You borrowed %s. Please bring it back within three weeks.", book);
	/* The saga's key names the loan: posting again after a crash posts nothing twice. */
	enum fd_err err = mailroom_post(ctx->services, ctx->correlation_key, member, text);
	if (err) {
		snprintf(ctx->error, sizeof ctx->error, "mailroom: %s", fd_err_name(err));
		return FD_STEP_RETRY;
	}
	return json_object_set_new(ctx->set, "receipt", json_string("posted")) == 0 ? FD_STEP_OK : FD_STEP_RETRY;
}

static const struct fd_saga_step steps[] = {
	{ .name = "post_receipt", .on_event = "BookLent", .action = post_receipt,
	  .retry = { .max_attempts = 5, .delay_ms = 500, .backoff_pct = 200 } },
};

const struct fd_saga_type loan_receipt_saga = {
	.name = "loan_receipt",
	.categories = categories,
	.event_types = event_types,
	.correlate = correlate,
	.fold = fold,
	.steps = steps,
	.nsteps = FD_COUNT(steps),
};
