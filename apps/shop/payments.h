/*
 * payments.h - talking to the payment gateway on behalf of a payment
 * aggregate: ask once, record the answer as a command.  Used by
 * POST /payments and by the order saga.  Thread-safe when the gateway is.
 */
#ifndef FACTD_PAYMENTS_H
#define FACTD_PAYMENTS_H

#include "factd/bus.h"
#include "shop.h"

/*
 * Load payment `payment_id`; when it is still requested, ask the gateway
 * (attempt = recorded attempts + 1) and record the answer: authorise,
 * decline, or record_failure for a transient error.  A gateway that does not
 * answer records nothing.  *result receives the gateway's answer.
 * FD_ERR_REJECTED (decision in *cmd) when the payment is not pending.
 */
FD_MUST_USE enum fd_err fd_payment_process(struct fd_bus *bus, struct fd_gateway *gw, const char *payment_id,
					   const struct fd_cmd_meta *meta, enum fd_gateway_result *result,
					   struct fd_cmd_result *cmd);

#endif
