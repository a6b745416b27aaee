/*
 * bank.h - the bank app: accounts, transfers between them as a saga, the
 * account_summaries read model, and the app definition that binds them
 * (bank_app, app.c).  Built only on factd's public API (include/factd).
 *
 * Money is integer cents.  An account's balance is the money its owner can
 * use now; money held for a transfer in flight leaves the balance for the
 * account's holds until the transfer settles it (it leaves the bank's
 * account) or releases it (it comes back).  So, for the whole bank and at
 * every moment:
 *
 *     sum(balance_cents + held_cents) == deposits - withdrawals
 *                                        (+ the amounts credited to a target
 *                                           whose source hold is not settled yet)
 *
 * and once every transfer has finished, exactly deposits - withdrawals.
 * No balance and no hold is ever negative.
 *
 * Common rules of both aggregates (as the shop's): every command but the
 * creating one is refused "<name>-not-found" on an aggregate that does not
 * exist, then the payload is checked (FD_INVALID, unknown fields included),
 * then the state rules (FD_REFUSED); apply() accepts exactly the events
 * decide() could have produced; restore() only a snapshot of a reachable
 * state.  Pure code: thread-safe, each state has one owner.
 */
#ifndef BANK_H
#define BANK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "factd/aggregate.h"
#include "factd/app.h"
#include "factd/http.h"
#include "factd/uuid.h"

#define BANK_OWNER_MAX 128               /* characters of an owner */
#define BANK_REASON_MAX 500              /* characters of a transfer's failure reason */
#define BANK_AMOUNT_MAX 100000000000LL   /* one deposit, withdrawal or transfer: 1e9 in major units */
#define BANK_TOTAL_MAX 1000000000000000LL /* an account's balance plus holds: 1e13 in major units */
#define BANK_HOLDS_MAX 10000             /* open holds of one account */

/* ---- Account ------------------------------------------------------------ */

struct bank_hold {
	char transfer_id[FD_UUID_STRLEN + 1];
	int64_t amount_cents;
};

struct bank_account {
	bool exists, closed;
	char *owner;                 /* owned */
	int64_t balance_cents;       /* available to withdraw or transfer */
	int64_t held_cents;          /* sum of the open holds */
	struct bank_hold *holds;     /* open holds by transfer, owned, in the order taken */
	size_t nholds, cap;
};

/*
 * Events (type: data):
 *   AccountOpened    {owner}
 *   MoneyDeposited   {amount_cents}
 *   MoneyWithdrawn   {amount_cents}
 *   FundsHeld        {transfer_id, amount_cents}   balance -> the transfer's hold
 *   HoldReleased     {transfer_id, amount_cents}   the hold -> balance (the transfer failed)
 *   HoldSettled      {transfer_id, amount_cents}   the hold leaves the account (the transfer completed)
 *   TransferCredited {transfer_id, amount_cents}   the target's side of a transfer
 *   AccountClosed    {}
 * Commands: open {owner}; deposit {amount_cents}; withdraw {amount_cents};
 *   close {}; and for the transfer saga: hold {transfer_id, amount_cents},
 *   release {transfer_id}, settle {transfer_id}, credit {transfer_id, amount_cents}.
 * Limits: owner 1-BANK_OWNER_MAX characters; amount_cents 1-BANK_AMOUNT_MAX;
 *   balance plus holds at most BANK_TOTAL_MAX; at most BANK_HOLDS_MAX open
 *   holds; transfer_id a UUID.
 * Refusals: account-exists, account-not-found, account-closed,
 *   insufficient-funds (withdraw, hold: balance < amount), account-not-empty
 *   (close while balance or holds are not zero), balance-too-large,
 *   hold-exists, hold-not-found, too-many-holds.
 * View: {owner, status: "open"|"closed", balance_cents, held_cents, available_cents}.
 */
extern const struct fd_aggregate_type bank_account_type;

/* ---- Transfer ------------------------------------------------------------- */

enum bank_transfer_status { BANK_TRANSFER_NONE = 0, BANK_TRANSFER_PENDING, BANK_TRANSFER_COMPLETED, BANK_TRANSFER_FAILED };

struct bank_transfer {
	enum bank_transfer_status status;
	char from_account[FD_UUID_STRLEN + 1];
	char to_account[FD_UUID_STRLEN + 1];
	int64_t amount_cents;
	char *reason;                /* owned, set only when failed */
};

/*
 * The record of one transfer, whose stream the transfer saga follows.
 * Events:
 *   TransferRequested {from_account, to_account, amount_cents}
 *   TransferCompleted {}
 *   TransferFailed    {reason}
 * Commands: request {from_account, to_account, amount_cents} (two different
 *   account ids, amount_cents 1-BANK_AMOUNT_MAX); complete {}; fail {reason}
 *   (1-BANK_REASON_MAX characters).
 * Refusals: transfer-exists, transfer-not-found, transfer-not-pending.
 * View: {from_account, to_account, amount_cents, status:
 *   "pending"|"completed"|"failed", reason (null unless failed)}.
 */
extern const struct fd_aggregate_type bank_transfer_type;
/* "none", "pending", "completed", "failed"; "unknown" otherwise. */
const char *bank_transfer_status_name(enum bank_transfer_status s);

/*
 * Why a transfer failed (its reason), for the failures the saga itself
 * finds; other failures (an operator's abort, retries running out) record
 * the saga's error instead.
 */
#define BANK_REASON_INSUFFICIENT_FUNDS "insufficient-funds"
#define BANK_REASON_SOURCE_UNAVAILABLE "source-unavailable"  /* the source is missing or closed */
#define BANK_REASON_TARGET_UNAVAILABLE "target-unavailable"  /* the target is missing or closed */

/* ---- the app -------------------------------------------------------------- */

/* The transfer saga (transfer_saga.c) and the account_summaries read model (projections.c). */
extern const struct fd_saga_type bank_transfer_saga;
extern const struct fd_projection bank_account_summaries;

/* GET /accounts (api.c). */
void bank_api_list_accounts(struct fd_req *req, struct fd_resp *resp);
/* The route table (routes.c), ended by a row without a method. */
extern const struct fd_route bank_routes[];
/* The bank's own migrations (migrations/, embedded by factd-embed-migrations). */
extern const struct fd_migration_set bank_migrations;

/* The app definition: everything above in one value (app.c). */
extern const struct fd_app bank_app;

#endif
