/*
 * test_crash.c - the real factd-bank binary killed with SIGKILL while
 * transfers are in flight; another process takes over the sagas it left
 * (their leases run out), they settle, and the money adds up with nothing
 * applied twice.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bank.h"
#include "bank_test.h"

#define ACCOUNTS 10
#define THREADS 8

struct run {
	uint16_t port;
	char accounts[ACCOUNTS][37];
	atomic_int accepted;
	atomic_bool stop;
};

static struct run run;

/* Transfers until the process dies under it (a request gets no answer). */
static void *client(void *arg)
{
	unsigned seed = 104729u * (unsigned)(uintptr_t)arg + 1;
	while (!atomic_load(&run.stop)) {
		unsigned from = (unsigned)rand_r(&seed) % ACCOUNTS, to = (from + 1 + (unsigned)rand_r(&seed) % (ACCOUNTS - 1)) % ACCOUNTS;
		char body[256];
		snprintf(body, sizeof body, "{\"from_account\":\"%s\",\"to_account\":\"%s\",\"amount_cents\":%d}",
			 run.accounts[from], run.accounts[to], 1 + rand_r(&seed) % 3000);
		struct bt_resp r;
		int status = bt_request(run.port, "POST", "/transfers", body, &r);
		bt_resp_free(&r);
		if (status == 202)
			atomic_fetch_add(&run.accepted, 1);
		else if (status == 0)
			break;
	}
	return NULL;
}

Test(crash, kill9_mid_transfers_then_another_process_settles_them, .timeout = 600)
{
	char *db = bt_db_new();
	struct bt_proc first;
	bt_proc_start(&first, db, NULL);
	run.port = first.port;
	for (int i = 0; i < ACCOUNTS; i++)
		bt_open_account(first.port, "crash", 10000, run.accounts[i]);

	pthread_t threads[THREADS];
	for (uintptr_t i = 0; i < THREADS; i++)
		cr_assert_eq(pthread_create(&threads[i], NULL, client, (void *)i), 0);
	/* kill it once transfers are flowing, with requests and saga steps in flight */
	for (int i = 0; i < 3000 && atomic_load(&run.accepted) < 150; i++)
		usleep(10000);
	int before = atomic_load(&run.accepted);
	long long started = bt_scalar(db, "SELECT count(*) FROM sagas WHERE type = 'transfer'");
	long long running = bt_scalar(db, "SELECT count(*) FROM sagas WHERE type = 'transfer' AND status = 'running'");
	bt_proc_kill9(&first);
	atomic_store(&run.stop, true);
	for (int i = 0; i < THREADS; i++)
		pthread_join(threads[i], NULL);
	cr_assert_geq(before, 150, "only %d transfers accepted before the kill", before);
	long long unfinished = bt_scalar(db, "SELECT count(*) FROM streams s WHERE s.category = 'transfer' AND NOT EXISTS"
					     " (SELECT 1 FROM events e WHERE e.stream_id = s.stream_id"
					     " AND e.type IN ('TransferCompleted', 'TransferFailed'))");
	fprintf(stderr, "killed with %d transfers accepted, %lld sagas (%lld running), %lld transfers unfinished\n", before,
		    started, running, unfinished);
	cr_assert_gt(unfinished, 0, "the kill left no transfer in flight; the test proves nothing");

	struct bt_proc second;
	bt_proc_start(&second, db, NULL);
	long long transfers = bt_wait_settled(db, 300);
	cr_assert_geq(transfers, before);
	bt_check_invariant(second.port, db);
	/* every saga ended as its transfer did */
	cr_assert_eq(bt_scalar(db, "SELECT count(*) FROM sagas WHERE type = 'transfer' AND status = 'completed'"),
		     bt_scalar(db, "SELECT count(*) FROM events WHERE type = 'TransferCompleted'"));
	cr_assert(bt_proc_stop(&second), "the second process did not stop cleanly; see %s", second.log);
	unlink(first.log);
	unlink(second.log);
	free(db);
}
