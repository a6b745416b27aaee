/*
 * test_concurrency.c - 200 transfers among 10 accounts at once, with
 * deposits and withdrawals racing them: money is conserved (balances plus
 * holds are deposits minus withdrawals), no balance is ever negative, and
 * every transfer ends completed or failed.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "bank.h"
#include "bank_test.h"

#define ACCOUNTS 10
#define TRANSFERS 200
#define THREADS 20

struct run {
	uint16_t port;
	char accounts[ACCOUNTS][37];
	char transfers[TRANSFERS][37];
	long long withdrawn[THREADS], deposited[THREADS];
};

struct worker {
	struct run *run;
	unsigned index;
};

static void *client(void *arg)
{
	struct worker *w = arg;
	struct run *run = w->run;
	unsigned seed = 7919u * (w->index + 1);
	for (unsigned k = w->index; k < TRANSFERS; k += THREADS) {
		unsigned from = (unsigned)rand_r(&seed) % ACCOUNTS, to = (from + 1 + (unsigned)rand_r(&seed) % (ACCOUNTS - 1)) % ACCOUNTS;
		long long amount = 1 + rand_r(&seed) % 4000; /* some exceed what their source has */
		char body[256];
		snprintf(body, sizeof body, "{\"from_account\":\"%s\",\"to_account\":\"%s\",\"amount_cents\":%lld}",
			 run->accounts[from], run->accounts[to], amount);
		struct bt_resp r;
		bt_request(run->port, "POST", "/transfers", body, &r);
		if (r.status == 202 && bt_str(&r, "transfer_id"))
			snprintf(run->transfers[k], 37, "%s", bt_str(&r, "transfer_id"));
		bt_resp_free(&r);
		/* every tenth round, a withdrawal and a deposit race the transfers */
		if (k % 10 == w->index % 10) {
			char path[128];
			snprintf(path, sizeof path, "/accounts/%s/withdraw", run->accounts[to]);
			bt_request(run->port, "POST", path, "{\"amount_cents\":500}", &r);
			if (r.status == 200)
				run->withdrawn[w->index] += 500;
			bt_resp_free(&r);
			snprintf(path, sizeof path, "/accounts/%s/deposit", run->accounts[from]);
			bt_request(run->port, "POST", path, "{\"amount_cents\":250}", &r);
			if (r.status == 200)
				run->deposited[w->index] += 250;
			bt_resp_free(&r);
		}
	}
	return NULL;
}

Test(concurrency, two_hundred_transfers_among_ten_accounts_conserve_money, .timeout = 600)
{
	static struct run run;
	struct bt_server s;
	bt_server_start(&s, NULL, true);
	run.port = s.port;
	for (int i = 0; i < ACCOUNTS; i++)
		bt_open_account(s.port, "crowd", 10000, run.accounts[i]);
	pthread_t threads[THREADS];
	struct worker workers[THREADS];
	for (unsigned i = 0; i < THREADS; i++) {
		workers[i] = (struct worker){ .run = &run, .index = i };
		cr_assert_eq(pthread_create(&threads[i], NULL, client, &workers[i]), 0);
	}
	for (unsigned i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);

	long long deposits = ACCOUNTS * 10000LL, withdrawals = 0;
	for (unsigned i = 0; i < THREADS; i++) {
		deposits += run.deposited[i];
		withdrawals += run.withdrawn[i];
	}
	for (int k = 0; k < TRANSFERS; k++)
		cr_assert(run.transfers[k][0], "transfer %d was not accepted", k);
	cr_assert_eq(bt_wait_settled(s.db_url, 300), TRANSFERS);
	cr_assert_eq(bt_money_in(s.db_url), deposits - withdrawals, "the log and the clients disagree");

	int completed = 0, failed = 0;
	for (int k = 0; k < TRANSFERS; k++) {
		char reason[128];
		const char *status = bt_wait_transfer(s.port, run.transfers[k], reason);
		if (strcmp(status, "completed") == 0) {
			completed++;
		} else {
			cr_assert_str_eq(status, "failed");
			cr_assert_str_eq(reason, "insufficient-funds", "transfer %s", run.transfers[k]);
			failed++;
		}
	}
	cr_assert_eq(completed + failed, TRANSFERS);
	cr_assert_gt(completed, 0);
	bt_check_invariant(s.port, s.db_url);
	fprintf(stderr, "%d transfers completed, %d failed for insufficient funds\n", completed, failed);
	bt_server_stop(&s);
}
