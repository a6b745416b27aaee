/*
 * payments.c - one round with the payment gateway for a pending payment.
 * Threading: no state of its own; as thread-safe as the gateway.
 */
#include "payments.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum fd_err fd_payment_process(struct fd_bus *bus, struct fd_gateway *gw, const char *payment_id,
			       const struct fd_cmd_meta *meta, enum fd_gateway_result *result,
			       struct fd_cmd_result *cmd)
{
	struct fd_payment p;
	int64_t version = 0;
	json_t *payload = NULL;
	enum fd_err err = fd_bus_load(bus, &fd_payment_type, payment_id, NULL, &p, &version);
	memset(cmd, 0, sizeof *cmd);
	if (err)
		goto done;
	if (p.status != FD_PAYMENT_REQUESTED) {
		bool missing = p.status == FD_PAYMENT_NONE;
		cmd->decision.outcome = FD_REFUSED;
		strcpy(cmd->decision.slug, missing ? "payment-not-found" : "payment-not-pending");
		strcpy(cmd->decision.title, missing ? "Payment not found" : "Payment is not pending");
		if (missing)
			snprintf(cmd->decision.detail, sizeof cmd->decision.detail, "the payment has not been requested");
		else
			snprintf(cmd->decision.detail, sizeof cmd->decision.detail, "the payment is %s",
				 fd_payment_status_name(p.status));
		err = FD_ERR_REJECTED;
		goto done;
	}
	char message[128] = "";
	*result = gw->authorise(gw, payment_id, p.amount_cents, p.attempts + 1, message, sizeof message);
	struct fd_cmd_meta m = *meta;
	m.has_if_match = true; /* the answer is about the version we just read */
	m.if_match = version;
	m.idempotency_key = NULL;
	switch (*result) {
	case FD_GATEWAY_AUTHORISED:
		payload = json_pack("{s:s}", "authorisation", message);
		err = payload ? fd_bus_send(bus, &fd_payment_type, payment_id, "authorise", payload, &m, cmd) : FD_ERR_NOMEM;
		break;
	case FD_GATEWAY_DECLINED:
		payload = json_pack("{s:s}", "reason", message[0] ? message : "declined");
		err = payload ? fd_bus_send(bus, &fd_payment_type, payment_id, "decline", payload, &m, cmd) : FD_ERR_NOMEM;
		break;
	case FD_GATEWAY_TRANSIENT:
		payload = json_pack("{s:s}", "error", message[0] ? message : "transient failure");
		err = payload ? fd_bus_send(bus, &fd_payment_type, payment_id, "record_failure", payload, &m, cmd)
			      : FD_ERR_NOMEM;
		break;
	case FD_GATEWAY_NO_ANSWER:
		break;
	}
done:
	json_decref(payload);
	fd_payment_type.release(&p);
	return err;
}
