/*
 * api.c - the bank's own handler, beside the framework's generic command and
 * aggregate routes:
 *   GET /accounts   account summaries (?owner, ?after, ?limit, ?min_position)
 *
 * A page is one statement over the account_summaries read model that
 * PostgreSQL renders as JSON: up to `limit` rows after the keyset cursor
 * `after` in account_id order (one more is read to know whether another page
 * follows), {"accounts": [...], "next": "<last account_id>" | null}.  It
 * never replays events; ?min_position= waits for the projection first.
 * Every parameter is checked before any database work.
 *
 * Threading: thread-safe; each request borrows one pool connection.
 */
#include "bank.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/handlers.h"
#include "factd/jsonspan.h"
#include "factd/log.h"
#include "factd/pool.h"
#include "factd/uuid.h"

static const char accounts_sql[] =
	"SELECT json_build_object("
	" 'accounts', coalesce(json_agg(json_build_object("
	"   'account_id', p.account_id, 'owner', p.owner, 'status', p.status,"
	"   'balance_cents', p.balance_cents, 'held_cents', p.held_cents, 'available_cents', p.balance_cents,"
	"   'version', p.version) ORDER BY p.account_id) FILTER (WHERE p.n <= $1::int), '[]'::json),"
	" 'next', CASE WHEN count(*) > $1::int THEN max(p.account_id::text) FILTER (WHERE p.n = $1::int) END)::text"
	" FROM (SELECT s.*, row_number() OVER (ORDER BY s.account_id) AS n FROM ("
	"  SELECT account_id, owner, status, balance_cents::bigint, held_cents::bigint, version"
	"  FROM account_summaries"
	"  WHERE ($2::text IS NULL OR owner = $2::text) AND ($3::uuid IS NULL OR account_id > $3::uuid)"
	"  ORDER BY account_id LIMIT $1::int + 1) s) p";

/*
 * Run the page's statement and hand over the text it returns.  The read
 * model is locked first, in a statement of its own: a rebuild swaps the
 * table in by DROP and RENAME, and a statement that waited for the swap
 * would read the new table with the snapshot it took before the wait.  A
 * lost connection is retried once (reads are safe to repeat); a missing
 * table (42P01) means the projector has not made it yet.
 */
static enum fd_err query_accounts(struct fd_pool *pool, const char *const params[3], char **json)
{
	*json = NULL;
	for (int attempt = 0;; attempt++) {
		PGconn *conn = NULL;
		enum fd_err err = fd_pool_acquire(pool, &conn);
		if (err)
			return err;
		PGresult *res = PQexec(conn, "BEGIN; LOCK TABLE account_summaries IN ACCESS SHARE MODE");
		if (PQresultStatus(res) == PGRES_COMMAND_OK) {
			PQclear(res);
			res = PQexecParams(conn, accounts_sql, 3, NULL, params, NULL, NULL, 0);
		}
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
			*json = strdup(PQgetvalue(res, 0, 0));
			err = *json ? FD_OK : FD_ERR_NOMEM;
		} else if (PQresultStatus(res) == PGRES_TUPLES_OK) {
			err = FD_ERR_INTERNAL;
		} else {
			err = fd_pg_classify(conn, res);
			const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
			if (state && strcmp(state, "42P01") == 0)
				err = FD_ERR_UNAVAILABLE;
			else if (err == FD_ERR_DB)
				fd_log_fields(FD_LOG_ERROR, "account_summaries query failed",
					      json_pack("{s:s?, s:s}", "sqlstate", state, "error", PQresultErrorMessage(res)));
		}
		PQclear(res);
		res = PQexec(conn, PQtransactionStatus(conn) == PQTRANS_INERROR ? "ROLLBACK" : "COMMIT");
		bool broken = PQstatus(conn) != CONNECTION_OK;
		PQclear(res);
		fd_pool_release(pool, conn, broken);
		if (!broken || attempt > 0)
			return err;
	}
}

/* 1..BANK_OWNER_MAX characters of UTF-8, as an account's owner. */
static bool owner_valid(const char *s)
{
	size_t len = strlen(s), chars = 0;
	if (len == 0 || !fd_utf8_valid(s, len))
		return false;
	for (size_t i = 0; i < len; i++)
		chars += ((unsigned char)s[i] & 0xC0) != 0x80;
	return chars <= BANK_OWNER_MAX;
}

void bank_api_list_accounts(struct fd_req *req, struct fd_resp *resp)
{
	const char *owner = fd_req_query(req, "owner");
	const char *after = fd_req_query(req, "after");
	char after_id[FD_UUID_STRLEN + 1], lim[16];
	struct fd_uuid u;
	unsigned limit;

	if (owner && !owner_valid(owner)) {
		fd_api_bad_param(resp, req, "owner", "owner must be 1 to 128 characters of UTF-8");
		return;
	}
	if (after && !fd_uuid_parse(after, &u)) {
		fd_api_bad_param(resp, req, "after", "after must be an account id (a UUID) from a previous page");
		return;
	}
	if (after)
		fd_uuid_format(&u, after_id);
	if (!fd_api_list_limit(req, resp, &limit) || !fd_api_list_min_position(req, resp, "account_summaries"))
		return;
	snprintf(lim, sizeof lim, "%u", limit);
	const char *params[3] = { lim, owner, after ? after_id : NULL };
	char *json = NULL;
	enum fd_err err = FD_OK;
	for (struct fd_pool *pool = fd_req_read_pool(req, NULL); pool; pool = fd_req_read_retry(req, err))
		err = query_accounts(pool, params, &json);
	fd_api_list_answer(req, resp, err, json);
}
