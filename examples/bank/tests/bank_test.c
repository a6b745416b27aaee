/* bank_test.c - the bank suites' shared helpers (see bank_test.h). */
#include "bank_test.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../bank.h"
#include "factd/handlers.h"
#include "factd/log.h"
#include "factd/migrate.h"

/* ---- databases -------------------------------------------------------------------- */

static const char *admin_url(void)
{
	const char *url = getenv("FACTD_TEST_ADMIN_URL");
	if (!url || !*url)
		cr_assert_fail("FACTD_TEST_ADMIN_URL is not set: run the tests through scripts/test");
	return url;
}

static PGconn *connect_or_fail(const char *url)
{
	PGconn *c = PQconnectdb(url);
	if (PQstatus(c) != CONNECTION_OK) {
		char msg[512];
		snprintf(msg, sizeof msg, "%s", PQerrorMessage(c));
		PQfinish(c);
		cr_assert_fail("cannot connect to %s: %s", url, msg);
	}
	return c;
}

char *bt_db_new(void)
{
	static atomic_uint counter;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	char name[64], sql[128];
	snprintf(name, sizeof name, "bank_%ld_%u_%lx", (long)getpid(), atomic_fetch_add(&counter, 1),
		 (unsigned long)(ts.tv_nsec ^ ts.tv_sec));
	snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
	PGconn *admin = connect_or_fail(admin_url());
	PGresult *r = PQexec(admin, sql);
	cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
	PQfinish(admin);
	const char *admin_s = admin_url();
	const char *slash = strrchr(admin_s, '/');
	cr_assert(slash, "FACTD_TEST_ADMIN_URL must end in /dbname");
	size_t len = (size_t)(slash - admin_s) + 1 + strlen(name) + 1;
	char *url = malloc(len);
	cr_assert(url);
	snprintf(url, len, "%.*s/%s", (int)(slash - admin_s), admin_s, name);
	fd_log_set_level(FD_LOG_WARN);
	cr_assert_eq(fd_migrate_run(url, &bank_migrations, NULL), FD_OK, "migrating %s", url);
	return url;
}

long long bt_scalar(const char *db_url, const char *sql)
{
	PGconn *c = connect_or_fail(db_url);
	PGresult *r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		char msg[512];
		snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
		PQclear(r);
		PQfinish(c);
		cr_assert_fail("%s: %s", sql, msg);
	}
	long long v = PQgetisnull(r, 0, 0) ? 0 : atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(c);
	return v;
}

/* ---- the bank in this process ------------------------------------------------------- */

void bt_server_start(struct bt_server *s, const char *db_url, bool sagas)
{
	memset(s, 0, sizeof *s);
	cr_assert_eq(fd_config_defaults(&s->cfg), FD_OK);
	fd_log_set_level(FD_LOG_WARN);
	s->db_url = db_url ? strdup(db_url) : bt_db_new();
	s->cfg.database_url = strdup(s->db_url);
	s->cfg.port = 0;
	s->cfg.workers = 8;
	s->cfg.pool_size = 8;
	s->cfg.pool_timeout_ms = 5000;
	s->cfg.sagas = sagas;
	s->cfg.saga_workers = 2;
	s->cfg.saga_poll_ms = 20;
	char errbuf[512] = "";
	struct fd_runtime_options opts = { .version = "test", .projection_idle_ms = 50 };
	enum fd_err err = fd_runtime_start(&s->rt, &s->cfg, &bank_app, &opts, errbuf, sizeof errbuf);
	cr_assert_eq(err, FD_OK, "the bank did not start: %s", errbuf);
	s->port = s->rt.port;
	cr_assert_neq(s->port, 0);
}

void bt_server_stop(struct bt_server *s)
{
	fd_runtime_stop(&s->rt, 5000);
	fd_config_release(&s->cfg);
	free(s->db_url);
	memset(s, 0, sizeof *s);
}

/* ---- HTTP ------------------------------------------------------------------------------- */

static bool send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return false;
		p += w;
		n -= (size_t)w;
	}
	return true;
}

int bt_request(uint16_t port, const char *method, const char *path, const char *body, struct bt_resp *out)
{
	memset(out, 0, sizeof *out);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return 0;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	struct timeval tv = { .tv_sec = 60 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		close(fd);
		return 0;
	}
	char head[1024];
	int n = body ? snprintf(head, sizeof head,
				"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
				"Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
				method, path, strlen(body))
		     : snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
				method, path);
	if (n < 0 || (size_t)n >= sizeof head || !send_all(fd, head, (size_t)n) ||
	    (body && !send_all(fd, body, strlen(body)))) {
		close(fd);
		return 0;
	}
	size_t cap = 16384, len = 0;
	char *buf = malloc(cap);
	cr_assert(buf);
	for (;;) {
		if (len + 1 >= cap) {
			buf = realloc(buf, cap *= 2);
			cr_assert(buf);
		}
		ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	char *sep = strstr(buf, "\r\n\r\n");
	if (sep && strncmp(buf, "HTTP/1.", 7) == 0) {
		out->status = atoi(buf + 9);
		out->head = strndup(buf, (size_t)(sep - buf));
		out->body = strdup(sep + 4);
		out->json = json_loads(out->body, 0, NULL);
	}
	free(buf);
	return out->status;
}

struct bt_resp bt_expect(uint16_t port, const char *method, const char *path, const char *body, int status)
{
	struct bt_resp r;
	bt_request(port, method, path, body, &r);
	cr_assert_eq(r.status, status, "%s %s %s: %d %s", method, path, body ? body : "", r.status,
		     r.body ? r.body : "");
	return r;
}

void bt_resp_free(struct bt_resp *r)
{
	free(r->head);
	free(r->body);
	json_decref(r->json);
	memset(r, 0, sizeof *r);
}

const char *bt_header(const struct bt_resp *r, const char *name, char *buf, size_t len)
{
	size_t n = strlen(name);
	for (const char *line = r->head ? strstr(r->head, "\r\n") : NULL; line; line = strstr(line + 2, "\r\n")) {
		const char *h = line + 2;
		if (strncasecmp(h, name, n) == 0 && h[n] == ':') {
			h += n + 1;
			while (*h == ' ')
				h++;
			size_t v = strcspn(h, "\r\n");
			snprintf(buf, len, "%.*s", (int)v, h);
			return buf;
		}
	}
	return NULL;
}

const char *bt_str(const struct bt_resp *r, const char *key)
{
	return json_string_value(json_object_get(r->json, key));
}

long long bt_int(const struct bt_resp *r, const char *key)
{
	json_t *v = json_object_get(r->json, key);
	return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}

void bt_assert_problem(const struct bt_resp *r, int status, const char *slug)
{
	char ct[128], want[160];
	cr_assert_eq(r->status, status, "status %d, expected %d: %s", r->status, status, r->body);
	cr_assert(bt_header(r, "Content-Type", ct, sizeof ct));
	cr_assert_str_eq(ct, "application/problem+json");
	snprintf(want, sizeof want, "%s%s", FD_PROBLEM_BASE, slug);
	cr_assert_str_eq(bt_str(r, "type"), want, "%s", r->body);
	cr_assert_eq(bt_int(r, "status"), status);
}

void bt_open_account(uint16_t port, const char *owner, long long cents, char id[37])
{
	char body[256], path[128];
	snprintf(body, sizeof body, "{\"owner\":\"%s\"}", owner);
	struct bt_resp r = bt_expect(port, "POST", "/accounts", body, 201);
	cr_assert(bt_str(&r, "account_id"));
	snprintf(id, 37, "%s", bt_str(&r, "account_id"));
	bt_resp_free(&r);
	if (cents > 0) {
		snprintf(path, sizeof path, "/accounts/%s/deposit", id);
		snprintf(body, sizeof body, "{\"amount_cents\":%lld}", cents);
		r = bt_expect(port, "POST", path, body, 200);
		bt_resp_free(&r);
	}
}

void bt_transfer(uint16_t port, const char *from, const char *to, long long cents, char id[37])
{
	char body[256];
	snprintf(body, sizeof body, "{\"from_account\":\"%s\",\"to_account\":\"%s\",\"amount_cents\":%lld}", from, to,
		 cents);
	struct bt_resp r = bt_expect(port, "POST", "/transfers", body, 202);
	cr_assert(bt_str(&r, "transfer_id"), "%s", r.body);
	snprintf(id, 37, "%s", bt_str(&r, "transfer_id"));
	bt_resp_free(&r);
}

const char *bt_wait_transfer(uint16_t port, const char *id, char reason[128])
{
	static const char *const names[] = { "pending", "completed", "failed" };
	char path[128];
	snprintf(path, sizeof path, "/transfers/%s", id);
	const char *status = "pending";
	reason[0] = '\0';
	for (int i = 0; i < 1500 && strcmp(status, "pending") == 0; i++) {
		if (i)
			usleep(20000);
		struct bt_resp r = bt_expect(port, "GET", path, NULL, 200);
		const char *s = bt_str(&r, "status");
		for (size_t k = 0; s && k < 3; k++)
			if (strcmp(s, names[k]) == 0)
				status = names[k];
		snprintf(reason, 128, "%s", bt_str(&r, "reason") ? bt_str(&r, "reason") : "");
		bt_resp_free(&r);
	}
	return status;
}

/* ---- factd-bank as a child ----------------------------------------------------------- */

void bt_proc_start(struct bt_proc *p, const char *db_url, const char *const *env)
{
	static atomic_uint counter;
	memset(p, 0, sizeof *p);
	const char *bin = getenv("FACTD_BANK_BIN");
	cr_assert(bin && *bin, "FACTD_BANK_BIN is not set (meson test sets it)");
	snprintf(p->log, sizeof p->log, "/tmp/factd-bank-test-%ld-%u.log", (long)getpid(), atomic_fetch_add(&counter, 1));
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0)
			_exit(127);
		dup2(fd, STDERR_FILENO);
		dup2(fd, STDOUT_FILENO);
		close(fd);
		setenv("FACTD_DATABASE_URL", db_url, 1);
		setenv("FACTD_LISTEN", "127.0.0.1:0", 1);
		setenv("FACTD_LOG_LEVEL", "info", 1);
		setenv("FACTD_SAGA_LEASE_MS", "1000", 1);
		setenv("FACTD_SAGA_POLL_MS", "20", 1);
		setenv("FACTD_SAGA_WORKERS", "4", 1);
		for (size_t i = 0; env && env[i]; i++)
			putenv((char *)env[i]);
		execl(bin, bin, "serve", (char *)NULL);
		_exit(127);
	}
	p->pid = pid;
	/* it logs {"msg":"listening", ..., "port": N} once it serves */
	for (int i = 0; i < 600 && !p->port; i++) {
		usleep(50000);
		FILE *f = fopen(p->log, "r");
		char line[4096];
		while (f && fgets(line, sizeof line, f)) {
			json_t *j = json_loads(line, 0, NULL);
			const char *msg = json_string_value(json_object_get(j, "msg"));
			if (msg && strcmp(msg, "listening") == 0)
				p->port = (uint16_t)json_integer_value(json_object_get(j, "port"));
			json_decref(j);
		}
		if (f)
			fclose(f);
		int st;
		cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "factd-bank exited before listening; see %s", p->log);
	}
	cr_assert_neq(p->port, 0, "factd-bank did not start listening within 30 s; see %s", p->log);
}

void bt_proc_kill9(struct bt_proc *p)
{
	int st;
	kill(p->pid, SIGKILL);
	waitpid(p->pid, &st, 0);
	p->pid = 0;
}

bool bt_proc_stop(struct bt_proc *p)
{
	int st = 0;
	kill(p->pid, SIGTERM);
	for (int i = 0; i < 400; i++) {
		pid_t w = waitpid(p->pid, &st, WNOHANG);
		if (w == p->pid) {
			p->pid = 0;
			return WIFEXITED(st) && WEXITSTATUS(st) == 0;
		}
		usleep(50000);
	}
	bt_proc_kill9(p);
	return false;
}

/* ---- invariants --------------------------------------------------------------------- */

long long bt_money_in(const char *db_url)
{
	return bt_scalar(db_url, "SELECT coalesce(sum(CASE WHEN type = 'MoneyDeposited' THEN 1 ELSE -1 END"
				 " * (data->>'amount_cents')::bigint), 0) FROM events"
				 " WHERE category = 'account' AND type IN ('MoneyDeposited', 'MoneyWithdrawn')");
}

static const char unfinished_sql[] =
	"SELECT count(*) FROM streams s WHERE s.category = 'transfer' AND NOT EXISTS (SELECT 1 FROM events e"
	" WHERE e.stream_id = s.stream_id AND e.type IN ('TransferCompleted', 'TransferFailed'))";
static const char live_sagas_sql[] =
	"SELECT count(*) FROM sagas WHERE type = 'transfer' AND status NOT IN ('completed', 'compensated')";

long long bt_wait_settled(const char *db_url, int timeout_s)
{
	long long unfinished = -1, live = -1, transfers = -1, sagas = -1;
	for (int i = 0; i < timeout_s * 10; i++) {
		transfers = bt_scalar(db_url, "SELECT count(*) FROM streams WHERE category = 'transfer'");
		sagas = bt_scalar(db_url, "SELECT count(*) FROM sagas WHERE type = 'transfer'");
		unfinished = bt_scalar(db_url, unfinished_sql);
		live = bt_scalar(db_url, live_sagas_sql);
		if (unfinished == 0 && live == 0 && sagas == transfers)
			return transfers;
		usleep(100000);
	}
	cr_assert_fail("not settled after %d s: %lld of %lld transfers unfinished, %lld of %lld sagas live", timeout_s,
		       unfinished, transfers, live, sagas);
	return -1;
}

/* Account events as (stream, version, change of the balance) rows. */
#define BALANCE_DELTAS                                                                                         \
	"SELECT stream_id, version, CASE type WHEN 'MoneyDeposited' THEN a WHEN 'MoneyWithdrawn' THEN -a"      \
	" WHEN 'FundsHeld' THEN -a WHEN 'HoldReleased' THEN a WHEN 'TransferCredited' THEN a ELSE 0 END AS d," \
	" CASE type WHEN 'FundsHeld' THEN a WHEN 'HoldReleased' THEN -a WHEN 'HoldSettled' THEN -a ELSE 0 END AS h" \
	" FROM events, LATERAL (SELECT coalesce((data->>'amount_cents')::bigint, 0) AS a) x WHERE category = 'account'"

/* Per transfer: how many of each account event name it. */
#define MOVES(type) \
	"(SELECT count(*) FROM events e WHERE e.category = 'account' AND e.type = '" type "'" \
	" AND e.data->>'transfer_id' = substr(t.stream_id, 10))"

void bt_check_invariant(uint16_t port, const char *db_url)
{
	long long in = bt_money_in(db_url);
	cr_assert_eq(bt_scalar(db_url, unfinished_sql), 0, "a transfer is still pending");

	/* every account, as GET /accounts/{id} shows it */
	PGconn *c = connect_or_fail(db_url);
	PGresult *res = PQexec(c, "SELECT substr(stream_id, 9) FROM streams WHERE category = 'account' ORDER BY 1");
	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK);
	long long total = 0;
	for (int i = 0; i < PQntuples(res); i++) {
		char path[128];
		snprintf(path, sizeof path, "/accounts/%s", PQgetvalue(res, i, 0));
		struct bt_resp r = bt_expect(port, "GET", path, NULL, 200);
		long long balance = bt_int(&r, "balance_cents"), held = bt_int(&r, "held_cents");
		cr_assert_geq(balance, 0, "%s", r.body);
		cr_assert_eq(held, 0, "a hold is left: %s", r.body);
		cr_assert_eq(bt_int(&r, "available_cents"), balance, "%s", r.body);
		total += balance + held;
		bt_resp_free(&r);
	}
	PQclear(res);
	PQfinish(c);
	cr_assert_eq(total, in, "the balances add up to %lld, deposits minus withdrawals are %lld", total, in);

	/* at no point of any account's history was its balance or its holds negative */
	cr_assert_eq(bt_scalar(db_url, "SELECT count(*) FROM (SELECT sum(d) OVER w AS b, sum(h) OVER w AS h FROM ("
				       BALANCE_DELTAS ") x WINDOW w AS (PARTITION BY stream_id ORDER BY version)) y"
				       " WHERE b < 0 OR h < 0"),
		     0, "a balance or a hold went negative");
	/* nothing twice */
	cr_assert_eq(bt_scalar(db_url, "SELECT count(*) FROM (SELECT data->>'transfer_id', type FROM events"
				       " WHERE category = 'account' AND type IN ('FundsHeld', 'HoldReleased', 'HoldSettled',"
				       " 'TransferCredited') GROUP BY 1, 2 HAVING count(*) > 1) x"),
		     0, "a transfer held, released, settled or credited twice");
	/* each transfer's money moved as its record says */
	cr_assert_eq(bt_scalar(db_url, "SELECT count(*) FROM streams t WHERE t.category = 'transfer' AND CASE"
				       " WHEN EXISTS (SELECT 1 FROM events e WHERE e.stream_id = t.stream_id"
				       "   AND e.type = 'TransferCompleted')"
				       " THEN " MOVES("FundsHeld") " <> 1 OR " MOVES("TransferCredited") " <> 1 OR "
				       MOVES("HoldSettled") " <> 1 OR " MOVES("HoldReleased") " <> 0"
				       " ELSE " MOVES("TransferCredited") " <> 0 OR " MOVES("HoldSettled") " <> 0 OR "
				       MOVES("HoldReleased") " <> " MOVES("FundsHeld") " END"),
		     0, "a transfer's money moved otherwise than its outcome says");

	/* the read model agrees once it has caught up */
	long long projected = -1, rows = -1;
	long long accounts = bt_scalar(db_url, "SELECT count(*) FROM streams WHERE category = 'account'");
	for (int i = 0; i < 600 && (projected != in || rows != accounts); i++) {
		if (i)
			usleep(50000);
		projected = bt_scalar(db_url, "SELECT coalesce(sum(balance_cents + held_cents), 0) FROM account_summaries");
		rows = bt_scalar(db_url, "SELECT count(*) FROM account_summaries WHERE held_cents = 0");
	}
	cr_assert_eq(projected, in, "account_summaries adds up to %lld, not %lld", projected, in);
	cr_assert_eq(rows, accounts);
}
