/*
 * test_domain.c - the bank's aggregates as pure code: decisions, the events
 * apply() accepts, snapshots.  No database.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "bank.h"

#define SRC "11111111-1111-4111-8111-111111111111"
#define DST "22222222-2222-4222-8222-222222222222"
#define T1 "33333333-3333-4333-8333-333333333333"
#define T2 "44444444-4444-4444-8444-444444444444"

/* Decide `command` with payload (JSON text) on state; apply the events it decides.  The outcome. */
static enum fd_outcome run(const struct fd_aggregate_type *t, void *state, const char *command, const char *payload,
			   char slug[64])
{
	const struct fd_command_type *c = fd_aggregate_command(t, command);
	cr_assert(c, "no command %s", command);
	json_t *p = json_loads(payload, 0, NULL);
	cr_assert(p, "bad JSON %s", payload);
	struct fd_decision d;
	cr_assert_eq(c->decide(state, t->exists(state), p, &d), FD_OK);
	json_decref(p);
	if (slug)
		snprintf(slug, 64, "%s", d.outcome == FD_INVALID ? d.field : d.slug);
	if (d.outcome == FD_DECIDED) {
		size_t i;
		json_t *ev;
		json_array_foreach(d.events, i, ev)
			cr_assert_eq(t->apply(state, json_string_value(json_object_get(ev, "type")),
					      json_object_get(ev, "data")),
				     FD_OK);
	}
	enum fd_outcome out = d.outcome;
	fd_decision_release(&d);
	return out;
}

static void expect_refused(const struct fd_aggregate_type *t, void *state, const char *command, const char *payload,
			   const char *slug)
{
	char got[64];
	cr_assert_eq(run(t, state, command, payload, got), FD_REFUSED, "%s %s was not refused", command, payload);
	cr_assert_str_eq(got, slug);
}

static void expect_invalid(const struct fd_aggregate_type *t, void *state, const char *command, const char *payload,
			   const char *field)
{
	char got[64];
	cr_assert_eq(run(t, state, command, payload, got), FD_INVALID, "%s %s was not invalid", command, payload);
	cr_assert_str_eq(got, field);
}

static void expect_ok(const struct fd_aggregate_type *t, void *state, const char *command, const char *payload)
{
	char got[64];
	cr_assert_eq(run(t, state, command, payload, got), FD_DECIDED, "%s %s: %s", command, payload, got);
}

static const char *apply_json(const struct fd_aggregate_type *t, void *state, const char *type, const char *data)
{
	json_t *d = json_loads(data, 0, NULL);
	enum fd_err err = t->apply(state, type, d);
	json_decref(d);
	return err == FD_OK ? "ok" : "invalid";
}

Test(account, money_moves_and_refusals)
{
	struct bank_account a;
	bank_account_type.init(&a);
	expect_refused(&bank_account_type, &a, "deposit", "{\"amount_cents\":5}", "account-not-found");
	expect_invalid(&bank_account_type, &a, "open", "{}", "/owner");
	expect_ok(&bank_account_type, &a, "open", "{\"owner\":\"ann\"}");
	expect_refused(&bank_account_type, &a, "open", "{\"owner\":\"ann\"}", "account-exists");
	expect_invalid(&bank_account_type, &a, "deposit", "{\"amount_cents\":0}", "/amount_cents");
	expect_invalid(&bank_account_type, &a, "deposit", "{\"amount_cents\":1.5}", "/amount_cents");
	expect_invalid(&bank_account_type, &a, "deposit", "{\"amount_cents\":1,\"x\":1}", "/x");
	expect_ok(&bank_account_type, &a, "deposit", "{\"amount_cents\":1000}");
	expect_refused(&bank_account_type, &a, "withdraw", "{\"amount_cents\":1001}", "insufficient-funds");
	expect_ok(&bank_account_type, &a, "withdraw", "{\"amount_cents\":400}");
	cr_assert_eq(a.balance_cents, 600);

	/* holds: taken from the balance, once per transfer, released or settled whole */
	expect_refused(&bank_account_type, &a, "hold", "{\"transfer_id\":\"" T1 "\",\"amount_cents\":601}", "insufficient-funds");
	expect_ok(&bank_account_type, &a, "hold", "{\"transfer_id\":\"" T1 "\",\"amount_cents\":500}");
	cr_assert_eq(a.balance_cents, 100);
	cr_assert_eq(a.held_cents, 500);
	expect_refused(&bank_account_type, &a, "hold", "{\"transfer_id\":\"" T1 "\",\"amount_cents\":1}", "hold-exists");
	expect_refused(&bank_account_type, &a, "withdraw", "{\"amount_cents\":101}", "insufficient-funds");
	expect_refused(&bank_account_type, &a, "close", "{}", "account-not-empty");
	expect_ok(&bank_account_type, &a, "hold", "{\"transfer_id\":\"" T2 "\",\"amount_cents\":100}");
	expect_ok(&bank_account_type, &a, "release", "{\"transfer_id\":\"" T2 "\"}");
	expect_refused(&bank_account_type, &a, "release", "{\"transfer_id\":\"" T2 "\"}", "hold-not-found");
	cr_assert_eq(a.balance_cents, 100);
	expect_ok(&bank_account_type, &a, "settle", "{\"transfer_id\":\"" T1 "\"}");
	cr_assert_eq(a.held_cents, 0);
	cr_assert_eq(a.balance_cents, 100);
	expect_refused(&bank_account_type, &a, "settle", "{\"transfer_id\":\"" T1 "\"}", "hold-not-found");

	/* credits add to the balance; an account closes only empty, and then takes nothing */
	expect_ok(&bank_account_type, &a, "credit", "{\"transfer_id\":\"" T2 "\",\"amount_cents\":50}");
	cr_assert_eq(a.balance_cents, 150);
	expect_refused(&bank_account_type, &a, "close", "{}", "account-not-empty");
	expect_ok(&bank_account_type, &a, "withdraw", "{\"amount_cents\":150}");
	expect_ok(&bank_account_type, &a, "close", "{}");
	expect_refused(&bank_account_type, &a, "deposit", "{\"amount_cents\":1}", "account-closed");
	expect_refused(&bank_account_type, &a, "credit", "{\"transfer_id\":\"" T1 "\",\"amount_cents\":1}", "account-closed");
	expect_refused(&bank_account_type, &a, "close", "{}", "account-closed");
	bank_account_type.release(&a);
}

Test(account, too_much_money_is_refused)
{
	struct bank_account a;
	bank_account_type.init(&a);
	expect_ok(&bank_account_type, &a, "open", "{\"owner\":\"ann\"}");
	char body[64];
	snprintf(body, sizeof body, "{\"amount_cents\":%lld}", BANK_AMOUNT_MAX);
	for (long long have = 0; have + BANK_AMOUNT_MAX <= BANK_TOTAL_MAX; have += BANK_AMOUNT_MAX)
		expect_ok(&bank_account_type, &a, "deposit", body);
	expect_refused(&bank_account_type, &a, "deposit", body, "balance-too-large");
	expect_invalid(&bank_account_type, &a, "deposit", "{\"amount_cents\":100000000001}", "/amount_cents");
	bank_account_type.release(&a);
}

Test(account, apply_refuses_what_decide_could_not_make)
{
	struct bank_account a;
	bank_account_type.init(&a);
	cr_assert_str_eq(apply_json(&bank_account_type, &a, "MoneyDeposited", "{\"amount_cents\":5}"), "invalid");
	cr_assert_str_eq(apply_json(&bank_account_type, &a, "AccountOpened", "{\"owner\":\"ann\"}"), "ok");
	cr_assert_str_eq(apply_json(&bank_account_type, &a, "MoneyWithdrawn", "{\"amount_cents\":1}"), "invalid");
	cr_assert_str_eq(apply_json(&bank_account_type, &a, "MoneyDeposited", "{\"amount_cents\":-5}"), "invalid");
	cr_assert_str_eq(apply_json(&bank_account_type, &a, "MoneyDeposited", "{\"amount_cents\":10}"), "ok");
	cr_assert_str_eq(apply_json(&bank_account_type, &a, "FundsHeld", "{\"transfer_id\":\"" T1 "\",\"amount_cents\":11}"),
			 "invalid");
	cr_assert_str_eq(apply_json(&bank_account_type, &a, "FundsHeld", "{\"transfer_id\":\"" T1 "\",\"amount_cents\":4}"), "ok");
	/* a release must name the hold's amount */
	cr_assert_str_eq(apply_json(&bank_account_type, &a, "HoldReleased", "{\"transfer_id\":\"" T1 "\",\"amount_cents\":3}"),
			 "invalid");
	cr_assert_str_eq(apply_json(&bank_account_type, &a, "HoldSettled", "{\"transfer_id\":\"" T2 "\",\"amount_cents\":4}"),
			 "invalid");
	cr_assert_str_eq(apply_json(&bank_account_type, &a, "AccountClosed", "{}"), "invalid");
	cr_assert_str_eq(apply_json(&bank_account_type, &a, "SomethingElse", "{}"), "ok");
	cr_assert_eq(a.balance_cents, 6);
	cr_assert_eq(a.held_cents, 4);
	bank_account_type.release(&a);
}

Test(account, snapshot_round_trip_and_strict_restore)
{
	struct bank_account a, b;
	bank_account_type.init(&a);
	bank_account_type.init(&b);
	expect_ok(&bank_account_type, &a, "open", "{\"owner\":\"ann\"}");
	expect_ok(&bank_account_type, &a, "deposit", "{\"amount_cents\":100}");
	expect_ok(&bank_account_type, &a, "hold", "{\"transfer_id\":\"" T1 "\",\"amount_cents\":30}");
	json_t *snap = bank_account_type.snapshot(&a);
	cr_assert_eq(bank_account_type.restore(&b, snap), FD_OK);
	json_decref(snap);
	cr_assert_eq(b.balance_cents, 70);
	cr_assert_eq(b.held_cents, 30);
	cr_assert_str_eq(b.owner, "ann");
	expect_ok(&bank_account_type, &b, "settle", "{\"transfer_id\":\"" T1 "\"}");
	static const char *const bad[] = {
		"{\"status\":\"open\",\"owner\":\"ann\",\"balance_cents\":-1,\"holds\":[]}",
		"{\"status\":\"closed\",\"owner\":\"ann\",\"balance_cents\":5,\"holds\":[]}",
		"{\"status\":\"open\",\"owner\":\"ann\",\"balance_cents\":5,\"holds\":[{\"transfer_id\":\"" T1
		"\",\"amount_cents\":1},{\"transfer_id\":\"" T1 "\",\"amount_cents\":2}]}",
		"{\"status\":\"shut\",\"owner\":\"ann\",\"balance_cents\":5,\"holds\":[]}",
		"{\"status\":\"none\",\"owner\":\"ann\"}",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		json_t *s = json_loads(bad[i], 0, NULL);
		cr_assert_eq(bank_account_type.restore(&b, s), FD_ERR_INVAL, "%s", bad[i]);
		json_decref(s);
	}
	cr_assert_eq(b.balance_cents, 70, "a refused snapshot changed the state");
	bank_account_type.release(&a);
	bank_account_type.release(&b);
}

Test(transfer, request_complete_fail)
{
	struct bank_transfer t;
	bank_transfer_type.init(&t);
	expect_refused(&bank_transfer_type, &t, "complete", "{}", "transfer-not-found");
	expect_invalid(&bank_transfer_type, &t, "request",
		       "{\"from_account\":\"" SRC "\",\"to_account\":\"" SRC "\",\"amount_cents\":5}", "/to_account");
	expect_invalid(&bank_transfer_type, &t, "request",
		       "{\"from_account\":\"" SRC "\",\"to_account\":\"" DST "\",\"amount_cents\":0}", "/amount_cents");
	expect_invalid(&bank_transfer_type, &t, "request",
		       "{\"from_account\":\"" SRC "\",\"to_account\":\"" DST "\",\"amount_cents\":-3}", "/amount_cents");
	expect_invalid(&bank_transfer_type, &t, "request", "{\"from_account\":\"x\",\"to_account\":\"" DST "\",\"amount_cents\":1}",
		       "/from_account");
	expect_ok(&bank_transfer_type, &t, "request", "{\"from_account\":\"" SRC "\",\"to_account\":\"" DST "\",\"amount_cents\":5}");
	expect_refused(&bank_transfer_type, &t, "request",
		       "{\"from_account\":\"" SRC "\",\"to_account\":\"" DST "\",\"amount_cents\":5}", "transfer-exists");
	json_t *view = bank_transfer_type.view(&t);
	cr_assert_str_eq(json_string_value(json_object_get(view, "status")), "pending");
	cr_assert(json_is_null(json_object_get(view, "reason")));
	json_decref(view);

	struct bank_transfer u;
	bank_transfer_type.init(&u);
	json_t *snap = bank_transfer_type.snapshot(&t);
	cr_assert_eq(bank_transfer_type.restore(&u, snap), FD_OK);
	json_decref(snap);
	expect_ok(&bank_transfer_type, &u, "fail", "{\"reason\":\"insufficient-funds\"}");
	expect_refused(&bank_transfer_type, &u, "complete", "{}", "transfer-not-pending");
	snap = bank_transfer_type.snapshot(&u);
	bank_transfer_type.release(&u);
	bank_transfer_type.init(&u);
	cr_assert_eq(bank_transfer_type.restore(&u, snap), FD_OK);
	json_decref(snap);
	cr_assert_str_eq(u.reason, "insufficient-funds");

	expect_ok(&bank_transfer_type, &t, "complete", "{}");
	expect_refused(&bank_transfer_type, &t, "fail", "{\"reason\":\"x\"}", "transfer-not-pending");
	cr_assert_str_eq(apply_json(&bank_transfer_type, &t, "TransferFailed", "{\"reason\":\"x\"}"), "invalid");
	bank_transfer_type.release(&t);
	bank_transfer_type.release(&u);
}
