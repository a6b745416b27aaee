/*
 * test_accounts.c - accounts over HTTP: commands and their refusals, the
 * shape of GET /accounts/{id}, the list endpoint over account_summaries,
 * and the bank's own migration.
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bank.h"
#include "bank_test.h"
#include "factd/uuid.h"

static void post(uint16_t port, const char *path, const char *body, int status)
{
	struct bt_resp r = bt_expect(port, "POST", path, body, status);
	bt_resp_free(&r);
}

Test(accounts, open_deposit_withdraw_and_read)
{
	struct bt_server s;
	bt_server_start(&s, NULL, false);
	struct bt_resp r = bt_expect(s.port, "POST", "/accounts", "{\"owner\":\"ann\"}", 201);
	const char *id = bt_str(&r, "account_id");
	struct fd_uuid u;
	cr_assert(id && fd_uuid_parse(id, &u), "server-made id: %s", r.body);
	cr_assert_eq(bt_int(&r, "version"), 1);
	char acc[37], loc[128], want[128], path[128];
	snprintf(acc, sizeof acc, "%s", id);
	snprintf(want, sizeof want, "/accounts/%s", acc);
	cr_assert(bt_header(&r, "Location", loc, sizeof loc));
	cr_assert_str_eq(loc, want);
	bt_resp_free(&r);

	snprintf(path, sizeof path, "/accounts/%s/deposit", acc);
	r = bt_expect(s.port, "POST", path, "{\"amount_cents\":1500}", 200);
	cr_assert_str_eq(bt_str(&r, "account_id"), acc);
	cr_assert_eq(bt_int(&r, "version"), 2);
	cr_assert(bt_str(&r, "position"), "%s", r.body);
	bt_resp_free(&r);
	snprintf(path, sizeof path, "/accounts/%s/withdraw", acc);
	r = bt_expect(s.port, "POST", path, "{\"amount_cents\":400}", 200);
	cr_assert_eq(bt_int(&r, "version"), 3);
	bt_resp_free(&r);

	snprintf(path, sizeof path, "/accounts/%s", acc);
	r = bt_expect(s.port, "GET", path, NULL, 200);
	cr_assert_str_eq(bt_str(&r, "account_id"), acc);
	cr_assert_str_eq(bt_str(&r, "owner"), "ann");
	cr_assert_str_eq(bt_str(&r, "status"), "open");
	cr_assert_eq(bt_int(&r, "balance_cents"), 1100);
	cr_assert_eq(bt_int(&r, "held_cents"), 0);
	cr_assert_eq(bt_int(&r, "available_cents"), 1100);
	cr_assert_eq(bt_int(&r, "version"), 3);
	cr_assert_eq(json_object_size(r.json), 7, "exactly the documented members: %s", r.body);
	char etag[32];
	cr_assert(bt_header(&r, "ETag", etag, sizeof etag));
	cr_assert_str_eq(etag, "\"3\"");
	bt_resp_free(&r);

	/* an id given by the client is used, once */
	const char *given = "0f0e0d0c-0b0a-4908-8706-050403020100";
	r = bt_expect(s.port, "POST", "/accounts", "{\"owner\":\"bob\",\"account_id\":\"0F0E0D0C-0B0A-4908-8706-050403020100\"}", 201);
	cr_assert_str_eq(bt_str(&r, "account_id"), given, "stored in lower case");
	bt_resp_free(&r);
	r = bt_expect(s.port, "POST", "/accounts", "{\"owner\":\"bob\",\"account_id\":\"0f0e0d0c-0b0a-4908-8706-050403020100\"}", 409);
	bt_assert_problem(&r, 409, "account-exists");
	bt_resp_free(&r);
	bt_server_stop(&s);
}

Test(accounts, refusals_and_bad_input)
{
	struct bt_server s;
	bt_server_start(&s, NULL, false);
	char acc[37], path[128];
	bt_open_account(s.port, "ann", 1000, acc);
	struct bt_resp r;

	snprintf(path, sizeof path, "/accounts/%s/withdraw", acc);
	r = bt_expect(s.port, "POST", path, "{\"amount_cents\":1001}", 409);
	bt_assert_problem(&r, 409, "insufficient-funds");
	bt_resp_free(&r);
	static const char *const bad_amounts[] = { "{\"amount_cents\":0}", "{\"amount_cents\":-5}", "{\"amount_cents\":\"10\"}",
						   "{\"amount_cents\":1.5}", "{}", "{\"amount_cents\":1,\"note\":\"x\"}" };
	for (size_t i = 0; i < sizeof bad_amounts / sizeof bad_amounts[0]; i++) {
		r = bt_expect(s.port, "POST", path, bad_amounts[i], 400);
		bt_assert_problem(&r, 400, "invalid-field");
		bt_resp_free(&r);
		snprintf(path, sizeof path, "/accounts/%s/deposit", acc);
		r = bt_expect(s.port, "POST", path, bad_amounts[i], 400);
		bt_assert_problem(&r, 400, "invalid-field");
		bt_resp_free(&r);
		snprintf(path, sizeof path, "/accounts/%s/withdraw", acc);
	}
	r = bt_expect(s.port, "POST", "/accounts", "{}", 400);
	bt_assert_problem(&r, 400, "invalid-field");
	cr_assert_str_eq(bt_str(&r, "field"), "/owner");
	bt_resp_free(&r);
	r = bt_expect(s.port, "POST", "/accounts", "{\"owner\":\"x\",\"account_id\":\"nope\"}", 400);
	bt_assert_problem(&r, 400, "invalid-field");
	bt_resp_free(&r);

	/* unknown and malformed ids */
	r = bt_expect(s.port, "POST", "/accounts/6b1d3a4e-0000-4000-8000-000000000000/deposit", "{\"amount_cents\":1}", 404);
	bt_assert_problem(&r, 404, "account-not-found");
	bt_resp_free(&r);
	r = bt_expect(s.port, "GET", "/accounts/6b1d3a4e-0000-4000-8000-000000000000", NULL, 404);
	bt_assert_problem(&r, 404, "not-found");
	bt_resp_free(&r);
	r = bt_expect(s.port, "GET", "/accounts/not-a-uuid", NULL, 404);
	bt_assert_problem(&r, 404, "not-found");
	bt_resp_free(&r);

	/* closing: only empty, then nothing more */
	snprintf(path, sizeof path, "/accounts/%s/close", acc);
	r = bt_expect(s.port, "POST", path, NULL, 409);
	bt_assert_problem(&r, 409, "account-not-empty");
	bt_resp_free(&r);
	snprintf(path, sizeof path, "/accounts/%s/withdraw", acc);
	post(s.port, path, "{\"amount_cents\":1000}", 200);
	snprintf(path, sizeof path, "/accounts/%s/close", acc);
	post(s.port, path, NULL, 200);
	r = bt_expect(s.port, "POST", path, NULL, 409);
	bt_assert_problem(&r, 409, "account-closed");
	bt_resp_free(&r);
	snprintf(path, sizeof path, "/accounts/%s/deposit", acc);
	r = bt_expect(s.port, "POST", path, "{\"amount_cents\":1}", 409);
	bt_assert_problem(&r, 409, "account-closed");
	bt_resp_free(&r);
	snprintf(path, sizeof path, "/accounts/%s", acc);
	r = bt_expect(s.port, "GET", path, NULL, 200);
	cr_assert_str_eq(bt_str(&r, "status"), "closed");
	cr_assert_eq(bt_int(&r, "balance_cents"), 0);
	bt_resp_free(&r);

	/* the bank's commands for its saga are not routes */
	snprintf(path, sizeof path, "/accounts/%s/hold", acc);
	r = bt_expect(s.port, "POST", path, "{}", 404);
	bt_resp_free(&r);
	bt_server_stop(&s);
}

/* The accounts of a page, in order, into ids; its "next" into next ("" when null). */
static size_t page(uint16_t port, const char *query, char ids[][37], size_t max, char next[37])
{
	char path[512];
	snprintf(path, sizeof path, "/accounts%s", query);
	struct bt_resp r = bt_expect(port, "GET", path, NULL, 200);
	json_t *list = json_object_get(r.json, "accounts");
	cr_assert(json_is_array(list), "%s", r.body);
	size_t n = json_array_size(list);
	cr_assert_leq(n, max);
	for (size_t i = 0; i < n; i++) {
		json_t *a = json_array_get(list, i);
		snprintf(ids[i], 37, "%s", json_string_value(json_object_get(a, "account_id")));
		cr_assert_eq(json_integer_value(json_object_get(a, "available_cents")),
			     json_integer_value(json_object_get(a, "balance_cents")));
	}
	json_t *nx = json_object_get(r.json, "next");
	cr_assert(json_is_null(nx) || json_is_string(nx), "%s", r.body);
	snprintf(next, 37, "%s", json_is_string(nx) ? json_string_value(nx) : "");
	bt_resp_free(&r);
	return n;
}

static int cmp_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

Test(accounts, list_pages_by_owner_from_the_read_model)
{
	struct bt_server s;
	bt_server_start(&s, NULL, false);
	char ann[5][37], bob[2][37], path[128], pos[64] = "";
	for (int i = 0; i < 5; i++)
		bt_open_account(s.port, "ann", 100 * (i + 1), ann[i]);
	for (int i = 0; i < 2; i++)
		bt_open_account(s.port, "bob smith", 7, bob[i]);
	snprintf(path, sizeof path, "/accounts/%s/withdraw", bob[1]);
	struct bt_resp r = bt_expect(s.port, "POST", path, "{\"amount_cents\":7}", 200);
	bt_resp_free(&r);
	snprintf(path, sizeof path, "/accounts/%s/close", bob[1]);
	r = bt_expect(s.port, "POST", path, NULL, 200);
	snprintf(pos, sizeof pos, "%s", bt_str(&r, "position"));
	bt_resp_free(&r);
	qsort(ann, 5, 37, cmp_id);

	/* read-your-writes through min_position, then pages of two */
	char got[8][37], next[37], q[256];
	snprintf(q, sizeof q, "?owner=ann&limit=2&min_position=%s", pos);
	size_t n = page(s.port, q, got, 8, next);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(got[0], ann[0]);
	cr_assert_str_eq(got[1], ann[1]);
	cr_assert_str_eq(next, ann[1]);
	snprintf(q, sizeof q, "?owner=ann&limit=2&after=%s", next);
	n = page(s.port, q, got, 8, next);
	cr_assert_eq(n, 2);
	cr_assert_str_eq(got[0], ann[2]);
	snprintf(q, sizeof q, "?owner=ann&limit=2&after=%s", next);
	n = page(s.port, q, got, 8, next);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(got[0], ann[4]);
	cr_assert_str_eq(next, "", "the last page has no next");

	/* an owner with a space, and what the rows say */
	r = bt_expect(s.port, "GET", "/accounts?owner=bob%20smith", NULL, 200);
	json_t *list = json_object_get(r.json, "accounts");
	cr_assert_eq(json_array_size(list), 2, "%s", r.body);
	for (size_t i = 0; i < 2; i++) {
		json_t *a = json_array_get(list, i);
		bool closed = strcmp(json_string_value(json_object_get(a, "account_id")), bob[1]) == 0;
		cr_assert_str_eq(json_string_value(json_object_get(a, "status")), closed ? "closed" : "open");
		cr_assert_eq(json_integer_value(json_object_get(a, "balance_cents")), closed ? 0 : 7);
		cr_assert_eq(json_integer_value(json_object_get(a, "held_cents")), 0);
		cr_assert_str_eq(json_string_value(json_object_get(a, "owner")), "bob smith");
		cr_assert_eq(json_integer_value(json_object_get(a, "version")), closed ? 4 : 2);
	}
	bt_resp_free(&r);
	/* everyone */
	n = page(s.port, "?limit=100", got, 8, next);
	cr_assert_eq(n, 7);
	cr_assert_str_eq(next, "");
	n = page(s.port, "?owner=nobody", got, 8, next);
	cr_assert_eq(n, 0);

	static const char *const bad[] = { "?limit=0", "?limit=x", "?after=nope", "?owner=", "?min_position=zz" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(q, sizeof q, "/accounts%s", bad[i]);
		r = bt_expect(s.port, "GET", q, NULL, 400);
		bt_assert_problem(&r, 400, "invalid-parameter");
		bt_resp_free(&r);
	}
	bt_server_stop(&s);
}

Test(accounts, the_banks_migration_is_applied_and_used)
{
	struct bt_server s;
	bt_server_start(&s, NULL, false);
	cr_assert_eq(bt_scalar(s.db_url, "SELECT count(*) FROM schema_migrations WHERE scope = 'bank' AND version = 1"
					 " AND name = 'money_domains'"),
		     1);
	struct bt_resp r = bt_expect(s.port, "GET", "/readyz", NULL, 200);
	bt_resp_free(&r);
	char acc[37];
	bt_open_account(s.port, "ann", 5, acc);
	/* the read model's money columns are of the bank's domain, which refuses a negative amount */
	long long rows = 0;
	for (int i = 0; i < 200 && rows == 0; i++) {
		usleep(20000);
		rows = bt_scalar(s.db_url, "SELECT count(*) FROM account_summaries");
	}
	cr_assert_eq(rows, 1);
	cr_assert_eq(bt_scalar(s.db_url, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'account_summaries'"
					 " AND domain_name = 'bank_cents'"),
		     2);
	PGconn *c = PQconnectdb(s.db_url);
	PGresult *res = PQexec(c, "UPDATE account_summaries SET balance_cents = -1");
	cr_assert_eq(PQresultStatus(res), PGRES_FATAL_ERROR, "a negative balance was stored");
	cr_assert_str_eq(PQresultErrorField(res, PG_DIAG_SQLSTATE), "23514");
	PQclear(res);
	PQfinish(c);
	bt_server_stop(&s);
}
