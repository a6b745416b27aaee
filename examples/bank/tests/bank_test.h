/*
 * bank_test.h - what the bank's suites share: throwaway databases, the bank
 * served in the test process, a small HTTP client, and the factd-bank
 * binary run as a child process.  Built on the public API only, so the
 * suites build wherever the bank does (in factd's tree or against an
 * installed factd).
 *
 * FACTD_TEST_ADMIN_URL is a superuser URL of a PostgreSQL cluster to make
 * databases in (scripts/test sets it); FACTD_BANK_BIN the binary (meson
 * sets it).  Helpers fail the test on error.
 */
#ifndef BANK_TEST_H
#define BANK_TEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "factd/config.h"
#include "factd/runtime.h"

/* A new database with factd's and the bank's schema; its URL (caller frees). */
char *bt_db_new(void);
/* One number from SQL on a fresh connection to db_url. */
long long bt_scalar(const char *db_url, const char *sql);

/* The bank served in this process on an ephemeral port. */
struct bt_server {
	struct fd_config cfg;
	struct fd_runtime rt;
	uint16_t port;
	char *db_url;  /* owned */
};
/*
 * Start on db_url (copied; NULL: a new database), with the transfer saga
 * running when `sagas` (two workers, quick polls).
 */
void bt_server_start(struct bt_server *s, const char *db_url, bool sagas);
void bt_server_stop(struct bt_server *s);

struct bt_resp {
	int status;     /* 0: no answer (the connection failed or closed) */
	char *head;     /* status line and headers */
	char *body;
	json_t *json;   /* the body parsed, when JSON */
};
/*
 * One request (Connection: close) to 127.0.0.1:port; a body is sent as
 * application/json.  Returns the status (0 when nothing came back).
 */
int bt_request(uint16_t port, const char *method, const char *path, const char *body, struct bt_resp *out);
/* The request, asserting the status; the response is the caller's (bt_resp_free). */
struct bt_resp bt_expect(uint16_t port, const char *method, const char *path, const char *body, int status);
void bt_resp_free(struct bt_resp *r);
/* A header's value into buf, or NULL when absent. */
const char *bt_header(const struct bt_resp *r, const char *name, char *buf, size_t len);
const char *bt_str(const struct bt_resp *r, const char *key);
long long bt_int(const struct bt_resp *r, const char *key);
/* Assert a problem document: status, application/problem+json, type FD_PROBLEM_BASE + slug. */
void bt_assert_problem(const struct bt_resp *r, int status, const char *slug);

/* Open an account for owner with `cents` deposited (none when 0); its id into id. */
void bt_open_account(uint16_t port, const char *owner, long long cents, char id[37]);
/* POST /transfers; the transfer id into id. */
void bt_transfer(uint16_t port, const char *from, const char *to, long long cents, char id[37]);
/* Poll GET /transfers/{id} until it is no longer pending (or time runs out); its status. */
const char *bt_wait_transfer(uint16_t port, const char *id, char reason[128]);

/* factd-bank (FACTD_BANK_BIN) as a child process. */
struct bt_proc {
	pid_t pid;
	uint16_t port;
	char log[256];  /* its stderr, a file */
};
/* Start `factd-bank serve` on db_url with sagas on, short saga leases and more env (NAME=value, NULL-ended). */
void bt_proc_start(struct bt_proc *p, const char *db_url, const char *const *env);
/* SIGKILL, and reap it. */
void bt_proc_kill9(struct bt_proc *p);
/* SIGTERM; true when it exited with status 0 within 20 s (else it is killed). */
bool bt_proc_stop(struct bt_proc *p);

#endif

/* ---- the bank's invariants, from the outside ------------------------------------ */

/* Deposits minus withdrawals, from the event log (what clients cannot always know after a crash). */
long long bt_money_in(const char *db_url);
/*
 * Wait (up to timeout_s) until every recorded transfer has finished
 * (completed or failed) and every transfer saga has ended; fails the test
 * otherwise.  Returns how many transfers there are.
 */
long long bt_wait_settled(const char *db_url, int timeout_s);
/*
 * With everything settled: for every account (read through GET
 * /accounts/{id} on port), no hold left and no negative balance, and the
 * balances add up to bt_money_in; in the log, no balance was ever negative,
 * no transfer moved money twice (one hold, one credit, one settle or
 * release at most), each completed transfer was credited and settled once,
 * and each failed one credited nothing and released what it held.  The
 * account_summaries read model catches up to the same totals.
 */
void bt_check_invariant(uint16_t port, const char *db_url);
