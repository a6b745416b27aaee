/*
 * gateway.c - the built-in payment gateway simulator.  Deterministic: the
 * same payment, amount and attempt always get the same answer, and an
 * authorisation code is derived from the payment id alone.
 *
 * Pure; thread-safe (the simulator is read-only after init).
 */
#include "shop.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "factd/hash.h"

static enum fd_gateway_result sim_authorise(struct fd_gateway *gw, const char *payment_id, int64_t amount_cents,
					    unsigned attempt, char *message, size_t message_len)
{
	const struct fd_gateway_sim *sim =
		(const struct fd_gateway_sim *)(const void *)((const char *)gw - offsetof(struct fd_gateway_sim, base));
	char text[64];
	enum fd_gateway_result result;

	if (sim->never_answer) {
		snprintf(text, sizeof text, "%s", "gateway did not answer");
		result = FD_GATEWAY_NO_ANSWER;
	} else if (sim->fail_first > 0 && attempt <= sim->fail_first) {
		snprintf(text, sizeof text, "gateway temporarily unavailable (attempt %u)", attempt);
		result = FD_GATEWAY_TRANSIENT;
	} else if (amount_cents > sim->limit_cents) {
		snprintf(text, sizeof text, "%s", "amount exceeds limit");
		result = FD_GATEWAY_DECLINED;
	} else {
		snprintf(text, sizeof text, "AUTH-%016llX", (unsigned long long)fd_fnv1a(FD_FNV1A_BASIS, payment_id ? payment_id : ""));
		result = FD_GATEWAY_AUTHORISED;
	}
	if (message && message_len > 0)
		snprintf(message, message_len, "%s", text);
	return result;
}

void fd_gateway_sim_init(struct fd_gateway_sim *sim, int64_t limit_cents, unsigned fail_first, bool never_answer)
{
	*sim = (struct fd_gateway_sim){
		.base = {.authorise = sim_authorise},
		.limit_cents = limit_cents,
		.fail_first = fail_first,
		.never_answer = never_answer,
	};
}
