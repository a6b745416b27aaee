/*
 * test_transfers.c - transfers over HTTP with the transfer saga running:
 * completing, failing for insufficient funds, compensating for a closed or
 * missing target, the 400s of POST /transfers, the shape of GET
 * /transfers/{id}, and a transfer recorded while no process runs sagas.
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

static void expect_account(uint16_t port, const char *id, long long balance, long long held)
{
	char path[128];
	snprintf(path, sizeof path, "/accounts/%s", id);
	struct bt_resp r = bt_expect(port, "GET", path, NULL, 200);
	cr_assert_eq(bt_int(&r, "balance_cents"), balance, "%s", r.body);
	cr_assert_eq(bt_int(&r, "held_cents"), held, "%s", r.body);
	bt_resp_free(&r);
}

/* The types of an aggregate's events, comma-separated, into out. */
static void event_types(uint16_t port, const char *what, const char *id, char *out, size_t len)
{
	char path[160];
	snprintf(path, sizeof path, "/%s/%s/events", what, id);
	struct bt_resp r = bt_expect(port, "GET", path, NULL, 200);
	out[0] = '\0';
	size_t i;
	json_t *ev;
	json_array_foreach(json_object_get(r.json, "events"), i, ev) {
		size_t n = strlen(out);
		snprintf(out + n, len - n, "%s%s", n ? "," : "", json_string_value(json_object_get(ev, "type")));
	}
	bt_resp_free(&r);
}

Test(transfers, a_transfer_completes_and_reads_back_exactly)
{
	struct bt_server s;
	bt_server_start(&s, NULL, true);
	char a[37], b[37], t[37], reason[128], path[128], loc[128];
	bt_open_account(s.port, "ann", 1000, a);
	bt_open_account(s.port, "bob", 0, b);
	char body[256];
	snprintf(body, sizeof body, "{\"from_account\":\"%s\",\"to_account\":\"%s\",\"amount_cents\":300}", a, b);
	struct bt_resp r = bt_expect(s.port, "POST", "/transfers", body, 202);
	snprintf(t, sizeof t, "%s", bt_str(&r, "transfer_id"));
	struct fd_uuid u;
	cr_assert(fd_uuid_parse(t, &u), "%s", r.body);
	snprintf(path, sizeof path, "/transfers/%s", t);
	cr_assert(bt_header(&r, "Location", loc, sizeof loc));
	cr_assert_str_eq(loc, path);
	bt_resp_free(&r);

	cr_assert_str_eq(bt_wait_transfer(s.port, t, reason), "completed");
	r = bt_expect(s.port, "GET", path, NULL, 200);
	cr_assert_str_eq(bt_str(&r, "transfer_id"), t);
	cr_assert_str_eq(bt_str(&r, "from_account"), a);
	cr_assert_str_eq(bt_str(&r, "to_account"), b);
	cr_assert_eq(bt_int(&r, "amount_cents"), 300);
	cr_assert_str_eq(bt_str(&r, "status"), "completed");
	cr_assert(json_is_null(json_object_get(r.json, "reason")), "%s", r.body);
	cr_assert_eq(bt_int(&r, "version"), 2);
	char etag[16];
	cr_assert(bt_header(&r, "ETag", etag, sizeof etag));
	bt_resp_free(&r);
	expect_account(s.port, a, 700, 0);
	expect_account(s.port, b, 300, 0);

	char types[512];
	event_types(s.port, "accounts", a, types, sizeof types);
	cr_assert_str_eq(types, "AccountOpened,MoneyDeposited,FundsHeld,HoldSettled");
	event_types(s.port, "accounts", b, types, sizeof types);
	cr_assert_str_eq(types, "AccountOpened,TransferCredited");
	event_types(s.port, "transfers", t, types, sizeof types);
	cr_assert_str_eq(types, "TransferRequested,TransferCompleted");

	snprintf(path, sizeof path, "/transfers/%s/saga", t);
	for (int i = 0; i < 200; i++) {
		r = bt_expect(s.port, "GET", path, NULL, 200);
		bool done = strcmp(bt_str(&r, "status"), "completed") == 0;
		if (done)
			break;
		bt_resp_free(&r);
		usleep(20000);
	}
	cr_assert_str_eq(bt_str(&r, "type"), "transfer");
	cr_assert_str_eq(bt_str(&r, "status"), "completed");
	bt_resp_free(&r);
	bt_check_invariant(s.port, s.db_url);
	bt_server_stop(&s);
}

Test(transfers, insufficient_funds_fail_the_transfer_and_hold_nothing)
{
	struct bt_server s;
	bt_server_start(&s, NULL, true);
	char a[37], b[37], t[37], reason[128];
	bt_open_account(s.port, "ann", 100, a);
	bt_open_account(s.port, "bob", 0, b);
	bt_transfer(s.port, a, b, 101, t);
	cr_assert_str_eq(bt_wait_transfer(s.port, t, reason), "failed");
	cr_assert_str_eq(reason, "insufficient-funds");
	expect_account(s.port, a, 100, 0);
	expect_account(s.port, b, 0, 0);
	char types[512];
	event_types(s.port, "accounts", a, types, sizeof types);
	cr_assert_str_eq(types, "AccountOpened,MoneyDeposited");
	event_types(s.port, "transfers", t, types, sizeof types);
	cr_assert_str_eq(types, "TransferRequested,TransferFailed");
	/* all of it can go */
	bt_transfer(s.port, a, b, 100, t);
	cr_assert_str_eq(bt_wait_transfer(s.port, t, reason), "completed");
	expect_account(s.port, a, 0, 0);
	expect_account(s.port, b, 100, 0);
	bt_check_invariant(s.port, s.db_url);
	bt_server_stop(&s);
}

Test(transfers, a_closed_or_missing_target_releases_the_hold)
{
	struct bt_server s;
	bt_server_start(&s, NULL, true);
	char a[37], closed[37], t[37], reason[128], path[128];
	bt_open_account(s.port, "ann", 500, a);
	bt_open_account(s.port, "cat", 0, closed);
	snprintf(path, sizeof path, "/accounts/%s/close", closed);
	struct bt_resp r = bt_expect(s.port, "POST", path, NULL, 200);
	bt_resp_free(&r);

	bt_transfer(s.port, a, closed, 200, t);
	cr_assert_str_eq(bt_wait_transfer(s.port, t, reason), "failed");
	cr_assert_str_eq(reason, "target-unavailable");
	expect_account(s.port, a, 500, 0);
	char types[512];
	event_types(s.port, "accounts", a, types, sizeof types);
	cr_assert_str_eq(types, "AccountOpened,MoneyDeposited,FundsHeld,HoldReleased", "compensated: %s", types);
	event_types(s.port, "accounts", closed, types, sizeof types);
	cr_assert_str_eq(types, "AccountOpened,AccountClosed");

	bt_transfer(s.port, a, "7e57ab1e-0000-4000-8000-000000000001", 200, t);
	cr_assert_str_eq(bt_wait_transfer(s.port, t, reason), "failed");
	cr_assert_str_eq(reason, "target-unavailable");
	expect_account(s.port, a, 500, 0);

	/* a missing source fails at once */
	bt_transfer(s.port, "7e57ab1e-0000-4000-8000-000000000002", a, 1, t);
	cr_assert_str_eq(bt_wait_transfer(s.port, t, reason), "failed");
	cr_assert_str_eq(reason, "source-unavailable");
	expect_account(s.port, a, 500, 0);

	snprintf(path, sizeof path, "/transfers/%s/saga", t);
	for (int i = 0; i < 200; i++) {
		r = bt_expect(s.port, "GET", path, NULL, 200);
		if (strcmp(bt_str(&r, "status"), "compensated") == 0)
			break;
		bt_resp_free(&r);
		usleep(20000);
	}
	cr_assert_str_eq(bt_str(&r, "status"), "compensated", "%s", r.body);
	bt_resp_free(&r);
	bt_check_invariant(s.port, s.db_url);
	bt_server_stop(&s);
}

Test(transfers, bad_requests_are_400_and_unknown_ids_404)
{
	struct bt_server s;
	bt_server_start(&s, NULL, false);
	char a[37], b[37], body[512];
	bt_open_account(s.port, "ann", 100, a);
	bt_open_account(s.port, "bob", 0, b);
	struct {
		const char *tail;  /* after the two accounts */
		const char *field;
	} bad[] = {
		{ ",\"amount_cents\":5", "/to_account" }, /* the same account twice */
		{ ",\"amount_cents\":0", "/amount_cents" },
		{ ",\"amount_cents\":-1", "/amount_cents" },
		{ ",\"amount_cents\":\"5\"", "/amount_cents" },
		{ "", "/amount_cents" },
		{ ",\"amount_cents\":5,\"memo\":1", "/memo" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		snprintf(body, sizeof body, "{\"from_account\":\"%s\",\"to_account\":\"%s\"%s}", a, i == 0 ? a : b,
			 bad[i].tail);
		struct bt_resp r = bt_expect(s.port, "POST", "/transfers", body, 400);
		bt_assert_problem(&r, 400, "invalid-field");
		cr_assert_str_eq(bt_str(&r, "field"), bad[i].field, "%s", body);
		bt_resp_free(&r);
	}
	snprintf(body, sizeof body, "{\"from_account\":\"nope\",\"to_account\":\"%s\",\"amount_cents\":5}", b);
	struct bt_resp r = bt_expect(s.port, "POST", "/transfers", body, 400);
	cr_assert_str_eq(bt_str(&r, "field"), "/from_account");
	bt_resp_free(&r);
	r = bt_expect(s.port, "POST", "/transfers", "[]", 400);
	bt_resp_free(&r);
	/* a transfer id given twice */
	snprintf(body, sizeof body,
		 "{\"transfer_id\":\"5ca1ab1e-0000-4000-8000-000000000000\",\"from_account\":\"%s\",\"to_account\":\"%s\","
		 "\"amount_cents\":5}",
		 a, b);
	r = bt_expect(s.port, "POST", "/transfers", body, 202);
	cr_assert_str_eq(bt_str(&r, "transfer_id"), "5ca1ab1e-0000-4000-8000-000000000000");
	bt_resp_free(&r);
	r = bt_expect(s.port, "POST", "/transfers", body, 409);
	bt_assert_problem(&r, 409, "transfer-exists");
	bt_resp_free(&r);
	r = bt_expect(s.port, "GET", "/transfers/5ca1ab1e-0000-4000-8000-000000000009", NULL, 404);
	bt_assert_problem(&r, 404, "not-found");
	bt_resp_free(&r);
	r = bt_expect(s.port, "GET", "/transfers/not-a-uuid", NULL, 404);
	bt_assert_problem(&r, 404, "not-found");
	bt_resp_free(&r);
	bt_server_stop(&s);
}

/* Recorded while no process runs sagas, the transfer waits, pending, for the next one that does. */
Test(transfers, a_recorded_transfer_survives_until_a_process_runs_its_saga)
{
	struct bt_server s;
	bt_server_start(&s, NULL, false);
	char a[37], b[37], t[37], reason[128], path[128];
	bt_open_account(s.port, "ann", 50, a);
	bt_open_account(s.port, "bob", 0, b);
	bt_transfer(s.port, a, b, 20, t);
	usleep(300000);
	snprintf(path, sizeof path, "/transfers/%s", t);
	struct bt_resp r = bt_expect(s.port, "GET", path, NULL, 200);
	cr_assert_str_eq(bt_str(&r, "status"), "pending");
	cr_assert(json_is_null(json_object_get(r.json, "reason")));
	bt_resp_free(&r);
	expect_account(s.port, a, 50, 0);
	char *db = strdup(s.db_url);
	bt_server_stop(&s);

	bt_server_start(&s, db, true);
	free(db);
	cr_assert_str_eq(bt_wait_transfer(s.port, t, reason), "completed");
	expect_account(s.port, a, 30, 0);
	expect_account(s.port, b, 20, 0);
	bt_check_invariant(s.port, s.db_url);
	bt_server_stop(&s);
}

static long long count_events(const char *db, const char *where)
{
	char sql[512];
	snprintf(sql, sizeof sql, "SELECT count(*) FROM events WHERE %s", where);
	return bt_scalar(db, sql);
}

/*
 * A completed transfer's saga made to run its steps again (as after a crash
 * that lost their outcomes): every command is an idempotent repeat of its
 * first run, so nothing new is recorded and the money stays where it is.
 */
Test(transfers, running_the_steps_again_records_nothing_twice)
{
	struct bt_server s;
	bt_server_start(&s, NULL, true);
	char a[37], b[37], t[37], reason[128], sql[1024];
	bt_open_account(s.port, "ann", 900, a);
	bt_open_account(s.port, "bob", 0, b);
	bt_transfer(s.port, a, b, 400, t);
	cr_assert_str_eq(bt_wait_transfer(s.port, t, reason), "completed");
	bt_wait_settled(s.db_url, 60);
	long long events = count_events(s.db_url, "true");
	snprintf(sql, sizeof sql,
		 "SELECT count(*) FROM saga_steps st JOIN sagas sg ON sg.id = st.saga_id"
		 " WHERE sg.correlation_key = '%s' AND st.kind = 'action' AND st.step = 'hold_funds'",
		 t);
	cr_assert_eq(bt_scalar(s.db_url, sql), 1);

	PGconn *c = PQconnectdb(s.db_url);
	char update[512];
	snprintf(update, sizeof update,
		 "UPDATE sagas SET status = 'running', phase = 'pending', current_step = 1, completed_steps = '[0]',"
		 " attempts = 0, due_at = now(), lease_token = NULL, data = data - 'credited', version = version + 1"
		 " WHERE type = 'transfer' AND correlation_key = '%s'",
		 t);
	PGresult *res = PQexec(c, update);
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(res));
	cr_assert_str_eq(PQcmdTuples(res), "1");
	PQclear(res);
	PQfinish(c);
	for (int i = 0; i < 500 && bt_scalar(s.db_url, sql) < 2; i++)
		usleep(20000);
	bt_wait_settled(s.db_url, 60);
	cr_assert_eq(bt_scalar(s.db_url, sql), 2, "the steps did not run again");
	cr_assert_eq(count_events(s.db_url, "true"), events, "a step run again recorded something");
	expect_account(s.port, a, 500, 0);
	expect_account(s.port, b, 400, 0);
	bt_check_invariant(s.port, s.db_url);
	bt_server_stop(&s);
}
