/*
 * account.c - the account aggregate: opened for an owner, money deposited
 * and withdrawn, held for transfers (then released or settled), credited by
 * transfers, and closed once empty.
 *
 * apply() accepts exactly the events decide() can produce from the current
 * state; anything else with a known type is FD_ERR_INVAL and leaves the
 * state unchanged.  Pure; thread-safe (each state has one owner).
 */
#include "bank.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- holds -------------------------------------------------------------------- */

static struct bank_hold *find_hold(const struct bank_account *a, const char *transfer_id)
{
	for (size_t i = 0; i < a->nholds; i++)
		if (strcmp(a->holds[i].transfer_id, transfer_id) == 0)
			return &a->holds[i];
	return NULL;
}

static enum fd_err add_hold(struct bank_account *a, const char *transfer_id, int64_t amount)
{
	if (a->nholds == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 4;
		struct bank_hold *h = realloc(a->holds, cap * sizeof *h);
		if (!h)
			return FD_ERR_NOMEM;
		a->holds = h;
		a->cap = cap;
	}
	struct bank_hold *h = &a->holds[a->nholds++];
	memcpy(h->transfer_id, transfer_id, sizeof h->transfer_id);
	h->amount_cents = amount;
	a->held_cents += amount;
	return FD_OK;
}

static void drop_hold(struct bank_account *a, struct bank_hold *h)
{
	size_t i = (size_t)(h - a->holds);
	a->held_cents -= h->amount_cents;
	memmove(&a->holds[i], &a->holds[i + 1], (a->nholds - i - 1) * sizeof *h);
	a->nholds--;
}

/* Would the account hold more than BANK_TOTAL_MAX with amount more? */
static bool too_large(const struct bank_account *a, int64_t amount)
{
	return a->balance_cents + a->held_cents > BANK_TOTAL_MAX - amount;
}

/* ---- state -------------------------------------------------------------------- */

static void account_init(void *state)
{
	memset(state, 0, sizeof(struct bank_account));
}

static void account_release(void *state)
{
	struct bank_account *a = state;
	free(a->owner);
	free(a->holds);
	memset(a, 0, sizeof *a);
}

/* ---- payload fields ----------------------------------------------------------- */

static bool read_amount(const json_t *data, int64_t *out, struct fd_decision *d)
{
	return fd_payload_int(data, "amount_cents", 1, BANK_AMOUNT_MAX, false, out, d);
}

/* {transfer_id, amount_cents}, nothing else. */
static bool read_movement(const json_t *data, char id[FD_UUID_STRLEN + 1], int64_t *amount, struct fd_decision *d)
{
	static const char *const keys[] = { "transfer_id", "amount_cents" };
	return fd_payload_only(data, keys, 2, d) && fd_payload_uuid(data, "transfer_id", id, d) &&
	       read_amount(data, amount, d);
}

/* {amount_cents}, nothing else. */
static bool read_amount_only(const json_t *data, int64_t *amount, struct fd_decision *d)
{
	static const char *const keys[] = { "amount_cents" };
	return fd_payload_only(data, keys, 1, d) && read_amount(data, amount, d);
}

/* ---- apply -------------------------------------------------------------------- */

static enum fd_err on_opened(struct bank_account *a, const json_t *data)
{
	static const char *const keys[] = { "owner" };
	struct fd_decision d;
	const char *owner;
	if (a->exists || !fd_payload_only(data, keys, 1, &d) ||
	    !fd_payload_string(data, "owner", 1, BANK_OWNER_MAX, false, &owner, &d))
		return FD_ERR_INVAL;
	char *copy = strdup(owner);
	if (!copy)
		return FD_ERR_NOMEM;
	a->owner = copy;
	a->exists = true;
	return FD_OK;
}

static bool open_account(const struct bank_account *a)
{
	return a->exists && !a->closed;
}

static enum fd_err on_deposited(struct bank_account *a, const json_t *data)
{
	struct fd_decision d;
	int64_t amount;
	if (!open_account(a) || !read_amount_only(data, &amount, &d) || too_large(a, amount))
		return FD_ERR_INVAL;
	a->balance_cents += amount;
	return FD_OK;
}

static enum fd_err on_withdrawn(struct bank_account *a, const json_t *data)
{
	struct fd_decision d;
	int64_t amount;
	if (!open_account(a) || !read_amount_only(data, &amount, &d) || amount > a->balance_cents)
		return FD_ERR_INVAL;
	a->balance_cents -= amount;
	return FD_OK;
}

static enum fd_err on_held(struct bank_account *a, const json_t *data)
{
	struct fd_decision d;
	char id[FD_UUID_STRLEN + 1];
	int64_t amount;
	if (!open_account(a) || !read_movement(data, id, &amount, &d) || amount > a->balance_cents ||
	    find_hold(a, id) || a->nholds >= BANK_HOLDS_MAX)
		return FD_ERR_INVAL;
	enum fd_err err = add_hold(a, id, amount);
	if (!err)
		a->balance_cents -= amount;
	return err;
}

/* HoldReleased and HoldSettled name the hold's whole amount. */
static struct bank_hold *named_hold(struct bank_account *a, const json_t *data)
{
	struct fd_decision d;
	char id[FD_UUID_STRLEN + 1];
	int64_t amount;
	if (!a->exists || !read_movement(data, id, &amount, &d))
		return NULL;
	struct bank_hold *h = find_hold(a, id);
	return h && h->amount_cents == amount ? h : NULL;
}

static enum fd_err on_released(struct bank_account *a, const json_t *data)
{
	struct bank_hold *h = named_hold(a, data);
	if (!h)
		return FD_ERR_INVAL;
	a->balance_cents += h->amount_cents;
	drop_hold(a, h);
	return FD_OK;
}

static enum fd_err on_settled(struct bank_account *a, const json_t *data)
{
	struct bank_hold *h = named_hold(a, data);
	if (!h)
		return FD_ERR_INVAL;
	drop_hold(a, h);
	return FD_OK;
}

static enum fd_err on_credited(struct bank_account *a, const json_t *data)
{
	struct fd_decision d;
	char id[FD_UUID_STRLEN + 1];
	int64_t amount;
	if (!open_account(a) || !read_movement(data, id, &amount, &d) || too_large(a, amount))
		return FD_ERR_INVAL;
	a->balance_cents += amount;
	return FD_OK;
}

static enum fd_err on_closed(struct bank_account *a, const json_t *data)
{
	struct fd_decision d;
	if (!open_account(a) || a->balance_cents != 0 || a->held_cents != 0 || !fd_payload_only(data, NULL, 0, &d))
		return FD_ERR_INVAL;
	a->closed = true;
	return FD_OK;
}

static const struct {
	const char *type;
	enum fd_err (*apply)(struct bank_account *a, const json_t *data);
} event_types[] = {
	{ .type = "AccountOpened", .apply = on_opened },
	{ .type = "MoneyDeposited", .apply = on_deposited },
	{ .type = "MoneyWithdrawn", .apply = on_withdrawn },
	{ .type = "FundsHeld", .apply = on_held },
	{ .type = "HoldReleased", .apply = on_released },
	{ .type = "HoldSettled", .apply = on_settled },
	{ .type = "TransferCredited", .apply = on_credited },
	{ .type = "AccountClosed", .apply = on_closed },
};

static enum fd_err account_apply(void *state, const char *type, const json_t *data)
{
	if (!type)
		return FD_ERR_INVAL;
	for (size_t i = 0; i < FD_COUNT(event_types); i++)
		if (strcmp(event_types[i].type, type) == 0)
			return event_types[i].apply(state, data);
	return FD_OK;
}

/* ---- snapshot, restore, view ------------------------------------------------- */

static const char *status_name(const struct bank_account *a)
{
	return !a->exists ? "none" : a->closed ? "closed" : "open";
}

static json_t *account_view(const void *state)
{
	const struct bank_account *a = state;
	return json_pack("{s:s?, s:s, s:I, s:I, s:I}", "owner", a->owner, "status", status_name(a), "balance_cents",
			 (json_int_t)a->balance_cents, "held_cents", (json_int_t)a->held_cents, "available_cents",
			 (json_int_t)a->balance_cents);
}

/* {status, owner, balance_cents, holds: [{transfer_id, amount_cents}]}; an account not opened is {"status": "none"}. */
static json_t *account_snapshot(const void *state)
{
	const struct bank_account *a = state;
	if (!a->exists)
		return json_pack("{s:s}", "status", "none");
	json_t *holds = json_array();
	for (size_t i = 0; holds && i < a->nholds; i++)
		if (json_array_append_new(holds, json_pack("{s:s, s:I}", "transfer_id", a->holds[i].transfer_id,
							   "amount_cents", (json_int_t)a->holds[i].amount_cents)) != 0) {
			json_decref(holds);
			return NULL;
		}
	return json_pack("{s:s, s:s, s:I, s:o}", "status", status_name(a), "owner", a->owner, "balance_cents",
			 (json_int_t)a->balance_cents, "holds", holds);
}

/*
 * Strict: every field present and well-typed, distinct holds with valid
 * amounts, the totals within the limits, and a closed account empty.
 */
static enum fd_err account_restore(void *state, const json_t *snap)
{
	static const char *const keys[] = { "status", "owner", "balance_cents", "holds" };
	struct bank_account t = { 0 };
	struct fd_decision d;
	const char *status, *owner;
	const json_t *holds = json_object_get(snap, "holds");
	enum fd_err err = FD_ERR_INVAL;

	if (!fd_payload_only(snap, keys, 4, &d) || !fd_payload_string(snap, "status", 1, 16, false, &status, &d))
		goto done;
	if (strcmp(status, "none") == 0) {
		err = json_object_size(snap) == 1 ? FD_OK : FD_ERR_INVAL;
		goto done;
	}
	if ((strcmp(status, "open") != 0 && strcmp(status, "closed") != 0) ||
	    !fd_payload_string(snap, "owner", 1, BANK_OWNER_MAX, false, &owner, &d) ||
	    !fd_payload_int(snap, "balance_cents", 0, BANK_TOTAL_MAX, false, &t.balance_cents, &d) ||
	    !json_is_array(holds) || json_array_size(holds) > BANK_HOLDS_MAX)
		goto done;
	t.exists = true;
	t.closed = strcmp(status, "closed") == 0;
	size_t i;
	const json_t *h;
	json_array_foreach(holds, i, h) {
		char id[FD_UUID_STRLEN + 1];
		int64_t amount;
		if (!read_movement(h, id, &amount, &d) || find_hold(&t, id) || too_large(&t, amount))
			goto done;
		if (add_hold(&t, id, amount) != FD_OK) {
			err = FD_ERR_NOMEM;
			goto done;
		}
	}
	if (t.closed && (t.balance_cents != 0 || t.held_cents != 0))
		goto done;
	t.owner = strdup(owner);
	err = t.owner ? FD_OK : FD_ERR_NOMEM;
done:
	if (err == FD_OK) {
		account_release(state);
		*(struct bank_account *)state = t;
	} else {
		account_release(&t);
	}
	return err;
}

/* ---- commands ----------------------------------------------------------------- */

static bool found(const struct bank_account *a, struct fd_decision *out)
{
	if (a->exists)
		return true;
	fd_decide_refuse(out, "account-not-found", "Account not found", "no account has this id");
	return false;
}

static bool is_open(const struct bank_account *a, struct fd_decision *out)
{
	if (!a->closed)
		return true;
	fd_decide_refuse(out, "account-closed", "Account is closed", "a closed account takes no more transactions");
	return false;
}

static bool room_for(const struct bank_account *a, int64_t amount, struct fd_decision *out)
{
	if (!too_large(a, amount))
		return true;
	fd_decide_refuse(out, "balance-too-large", "Balance too large",
			 "the account would hold more than %lld cents", (long long)BANK_TOTAL_MAX);
	return false;
}

static bool funds_for(const struct bank_account *a, int64_t amount, struct fd_decision *out)
{
	if (amount <= a->balance_cents)
		return true;
	fd_decide_refuse(out, "insufficient-funds", "Insufficient funds",
			 "%" PRId64 " cents asked for, %" PRId64 " available", amount, a->balance_cents);
	return false;
}

static enum fd_err decide_open(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const keys[] = { "owner" };
	const struct bank_account *a = state;
	const char *owner;
	if (!fd_payload_only(payload, keys, 1, out) ||
	    !fd_payload_string(payload, "owner", 1, BANK_OWNER_MAX, false, &owner, out))
		return FD_OK;
	if (a->exists) {
		fd_decide_refuse(out, "account-exists", "Account already exists", "the account is %s", status_name(a));
		return FD_OK;
	}
	return fd_decide_event(out, "AccountOpened", json_pack("{s:s}", "owner", owner));
}

static enum fd_err decide_deposit(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct bank_account *a = state;
	int64_t amount;
	if (!found(a, out) || !read_amount_only(payload, &amount, out) || !is_open(a, out) || !room_for(a, amount, out))
		return FD_OK;
	return fd_decide_event(out, "MoneyDeposited", json_pack("{s:I}", "amount_cents", (json_int_t)amount));
}

static enum fd_err decide_withdraw(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct bank_account *a = state;
	int64_t amount;
	if (!found(a, out) || !read_amount_only(payload, &amount, out) || !is_open(a, out) || !funds_for(a, amount, out))
		return FD_OK;
	return fd_decide_event(out, "MoneyWithdrawn", json_pack("{s:I}", "amount_cents", (json_int_t)amount));
}

static enum fd_err decide_close(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct bank_account *a = state;
	if (!found(a, out) || !fd_payload_only(payload, NULL, 0, out) || !is_open(a, out))
		return FD_OK;
	if (a->balance_cents != 0 || a->held_cents != 0) {
		fd_decide_refuse(out, "account-not-empty", "Account is not empty",
				 "%" PRId64 " cents in the balance and %" PRId64 " held; an account closes empty",
				 a->balance_cents, a->held_cents);
		return FD_OK;
	}
	return fd_decide_event(out, "AccountClosed", json_object());
}

static json_t *movement(const char *transfer_id, int64_t amount)
{
	return json_pack("{s:s, s:I}", "transfer_id", transfer_id, "amount_cents", (json_int_t)amount);
}

static enum fd_err decide_hold(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct bank_account *a = state;
	char id[FD_UUID_STRLEN + 1];
	int64_t amount;
	if (!found(a, out) || !read_movement(payload, id, &amount, out) || !is_open(a, out))
		return FD_OK;
	if (find_hold(a, id)) {
		fd_decide_refuse(out, "hold-exists", "Hold exists", "the transfer holds money here already");
		return FD_OK;
	}
	if (a->nholds >= BANK_HOLDS_MAX) {
		fd_decide_refuse(out, "too-many-holds", "Too many holds", "an account has at most %d open holds",
				 BANK_HOLDS_MAX);
		return FD_OK;
	}
	if (!funds_for(a, amount, out))
		return FD_OK;
	return fd_decide_event(out, "FundsHeld", movement(id, amount));
}

/* release and settle: {transfer_id} of an open hold, which the event names with its amount. */
static enum fd_err decide_end_hold(const struct bank_account *a, const json_t *payload, const char *type,
				   struct fd_decision *out)
{
	char id[FD_UUID_STRLEN + 1];
	if (!found(a, out) || !fd_payload_only(payload, (const char *const[]){ "transfer_id" }, 1, out) ||
	    !fd_payload_uuid(payload, "transfer_id", id, out))
		return FD_OK;
	const struct bank_hold *h = find_hold(a, id);
	if (!h) {
		fd_decide_refuse(out, "hold-not-found", "Hold not found", "the transfer holds no money here");
		return FD_OK;
	}
	return fd_decide_event(out, type, movement(id, h->amount_cents));
}

static enum fd_err decide_release(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	return decide_end_hold(state, payload, "HoldReleased", out);
}

static enum fd_err decide_settle(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	return decide_end_hold(state, payload, "HoldSettled", out);
}

static enum fd_err decide_credit(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct bank_account *a = state;
	char id[FD_UUID_STRLEN + 1];
	int64_t amount;
	if (!found(a, out) || !read_movement(payload, id, &amount, out) || !is_open(a, out) || !room_for(a, amount, out))
		return FD_OK;
	return fd_decide_event(out, "TransferCredited", movement(id, amount));
}

static const struct fd_command_type commands[] = {
	{ .name = "open", .decide = decide_open },
	{ .name = "deposit", .decide = decide_deposit },
	{ .name = "withdraw", .decide = decide_withdraw },
	{ .name = "close", .decide = decide_close },
	{ .name = "hold", .decide = decide_hold },
	{ .name = "release", .decide = decide_release },
	{ .name = "settle", .decide = decide_settle },
	{ .name = "credit", .decide = decide_credit },
};

static bool account_exists(const void *state)
{
	return ((const struct bank_account *)state)->exists;
}

/* The account's events, each at schema version 1 so far (factd/schema.h). */
static const struct fd_event_type account_event_types[] = {
	{ .type = "AccountOpened" },
	{ .type = "MoneyDeposited" },
	{ .type = "MoneyWithdrawn" },
	{ .type = "FundsHeld" },
	{ .type = "HoldReleased" },
	{ .type = "HoldSettled" },
	{ .type = "TransferCredited" },
	{ .type = "AccountClosed" },
};

const struct fd_aggregate_type bank_account_type = {
	.name = "account",
	.category = "account",
	.id_field = "account_id",
	.id_is_uuid = true,
	.schema_version = 1,
	.snapshot_every = 100,
	.state_size = sizeof(struct bank_account),
	.init = account_init,
	.release = account_release,
	.apply = account_apply,
	.snapshot = account_snapshot,
	.restore = account_restore,
	.view = account_view,
	.exists = account_exists,
	.commands = commands,
	.ncommands = FD_COUNT(commands),
	.events = { .types = account_event_types, .ntypes = FD_COUNT(account_event_types) },
};
