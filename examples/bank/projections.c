/*
 * projections.c - the bank's read model.
 *
 *   account_summaries  one row per account: owner, status, balance and
 *                      holds, and the stream version it reflects; indexed
 *                      by (owner, account_id) for GET /accounts?owner=.
 *
 * Its money columns are of the bank's domain bank_cents (migrations/0001),
 * which refuses a negative amount.  Each row records the version of the
 * account's stream it reflects and a handler skips an event at or below
 * it, so a replay over existing rows is harmless.  Handlers run inside the
 * projector's transaction, on the statements it prepared (proj.h).
 */
#include "bank.h"

#include <stdio.h>
#include <string.h>

#include "factd/proj.h"
#include "factd/uuid.h"

static const char account_summaries_sql[] =
	"CREATE TABLE {table} ("
	" account_id uuid PRIMARY KEY,"
	" owner text NOT NULL,"
	" status bank_account_status NOT NULL,"
	" balance_cents bank_cents NOT NULL DEFAULT 0,"
	" held_cents bank_cents NOT NULL DEFAULT 0,"
	" version bigint NOT NULL,"
	" updated_at timestamptz NOT NULL);"
	"CREATE INDEX ON {table} (owner, account_id)";

enum { OPENED, MOVED, CLOSED };

static const char *const statements[] = {
	[OPENED] = "INSERT INTO {table} (account_id, owner, status, version, updated_at)"
		   " VALUES ($1, $2, 'open', $3, $4) ON CONFLICT (account_id) DO NOTHING",
	/* money moves between the balance ($2) and the holds ($3), or in or out of the account */
	[MOVED] = "UPDATE {table} SET balance_cents = balance_cents + $2::bigint, held_cents = held_cents + $3::bigint,"
		  " version = $4, updated_at = $5 WHERE account_id = $1 AND version < $4",
	[CLOSED] = "UPDATE {table} SET status = 'closed', version = $2, updated_at = $3"
		   " WHERE account_id = $1 AND version < $2",
	NULL,
};

/* How each money event moves the balance and the holds, by its amount. */
static const struct {
	const char *type;
	int balance, held;
} moves[] = {
	{ "MoneyDeposited", 1, 0 },
	{ "MoneyWithdrawn", -1, 0 },
	{ "FundsHeld", -1, 1 },
	{ "HoldReleased", 1, -1 },
	{ "HoldSettled", 0, -1 },
	{ "TransferCredited", 1, 0 },
};

static enum fd_err handle(PGconn *conn, const char *table, const struct fd_feed_event *ev)
{
	const char *id = ev->stream + strlen("account-");
	char version[24], balance[24], held[24];
	struct fd_uuid u;
	if (!fd_uuid_parse(id, &u))
		return FD_OK; /* not an account the domain made (the generic API can write anything) */
	snprintf(version, sizeof version, "%lld", (long long)ev->version);
	if (strcmp(ev->type, "AccountOpened") == 0) {
		const char *owner = json_string_value(json_object_get(ev->data, "owner"));
		const char *p[] = { id, owner ? owner : "", version, ev->recorded_at };
		return fd_projection_exec(conn, table, OPENED, 4, p);
	}
	if (strcmp(ev->type, "AccountClosed") == 0) {
		const char *p[] = { id, version, ev->recorded_at };
		return fd_projection_exec(conn, table, CLOSED, 3, p);
	}
	for (size_t i = 0; i < FD_COUNT(moves); i++) {
		if (strcmp(ev->type, moves[i].type) != 0)
			continue;
		long long amount = (long long)json_integer_value(json_object_get(ev->data, "amount_cents"));
		snprintf(balance, sizeof balance, "%lld", moves[i].balance * amount);
		snprintf(held, sizeof held, "%lld", moves[i].held * amount);
		const char *p[] = { id, balance, held, version, ev->recorded_at };
		return fd_projection_exec(conn, table, MOVED, 5, p);
	}
	return FD_OK;
}

static const char *const account_categories[] = { "account", NULL };

const struct fd_projection bank_account_summaries = {
	.name = "account_summaries",
	.table = "account_summaries",
	.categories = account_categories,
	.create_sql = account_summaries_sql,
	.version = 1,
	.statements = statements,
	.handle = handle,
};
