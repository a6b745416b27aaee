/*
 * test_replicas.c - reads served by a real streaming standby
 * (FACTD_READ_DATABASE_URL), which scripts/test starts beside the primary
 * (pg_basebackup -R) and names in FACTD_TEST_STANDBY_URL.
 *
 * It shows that the read routes are served by the replica (X-Factd-Replica),
 * that the feed read there is exactly as gap-safe as on the primary (a
 * transaction held open on the primary hides the later ones that committed
 * and replicated), that a read with min_position or an aggregate's version
 * waits for the replica to replay it and else reads from the primary, that
 * a lagging replica is skipped, that a replica that goes down is skipped and
 * used again once it answers, and what /readyz and /metrics report.
 *
 * Replay is paused on the standby in some tests, so the tests of this suite
 * run one at a time (meson passes -j1).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_client.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"
#include "factd/migrate.h"

/* The standby's URL for the database at (primary) url; waits until the database has replicated. */
static char *standby_url_for(const char *url)
{
	const char *base = getenv("FACTD_TEST_STANDBY_URL");
	cr_assert(base && *base, "FACTD_TEST_STANDBY_URL is not set: scripts/test starts the standby these tests need");
	const char *db = strrchr(url, '/');
	const char *slash = strrchr(base, '/');
	cr_assert(db && slash);
	char *out = fd_test_fmt("%.*s%s", (int)(slash - base), base, db);
	for (long long end = fd_test_now_ms() + 30000;;) {
		const char *const keys[] = { "dbname", "connect_timeout", NULL };
		const char *const vals[] = { out, "3", NULL };
		PGconn *c = PQconnectdbParams(keys, vals, 1);
		bool ok = PQstatus(c) == CONNECTION_OK;
		PQfinish(c);
		if (ok)
			return out;
		cr_assert_lt(fd_test_now_ms(), end, "the database did not reach the standby");
		fd_test_sleep_ms(50);
	}
}

static const char *standby_admin(void)
{
	const char *base = getenv("FACTD_TEST_STANDBY_URL");
	cr_assert(base && *base, "FACTD_TEST_STANDBY_URL is not set: scripts/test starts the standby these tests need");
	return base;
}

/* Pause or resume WAL replay on the standby (the whole cluster). */
static void replay(bool on)
{
	fd_test_exec_at(standby_admin(), on ? "SELECT pg_wal_replay_resume()" : "SELECT pg_wal_replay_pause()");
}

/* Every test starts, and ends, with replay running (a failed test may have left it paused). */
static void resume_replay(void)
{
	const char *base = getenv("FACTD_TEST_STANDBY_URL");
	if (base && *base)
		fd_test_exec_at(base, "SELECT pg_wal_replay_resume()");
}
TestSuite(replicas, .init = resume_replay, .fini = resume_replay);

/* ---- what the server under test is configured with ------------------------- */

static char *read_urls;    /* FACTD_READ_DATABASE_URL */
static unsigned wait_ms = 2000, max_lag_ms = 60000;

static void tweak(struct fd_config *c)
{
	c->read_database_urls = strdup(read_urls);
	c->read_pool_size = 2;
	c->replica_wait_ms = wait_ms;
	c->replica_max_lag_ms = max_lag_ms;
	c->replica_probe_ms = 50;
}

/* A new database with the test app's schema (fd_test_server_start leaves a given one as it is). */
static char *app_db_new(void)
{
	char *url = fd_test_db_new();
	cr_assert_eq(fd_migrate_run(url, FD_TEST_APP->migrations, NULL), FD_OK, "the test app's migrations");
	return url;
}

static void start(struct fd_test_server *ts, const char *extra_url)
{
	char *url = app_db_new();
	char *standby = standby_url_for(url);
	read_urls = extra_url ? fd_test_fmt("%s,%s", standby, extra_url) : fd_test_fmt("%s", standby);
	fd_test_server_start_with(ts, url, tweak);
	free(standby);
	free(url);
}

static void stop(struct fd_test_server *ts)
{
	fd_test_server_stop(ts);
	free(read_urls);
	read_urls = NULL;
}

/* ---- requests ----------------------------------------------------------------- */

/* GET path; returns the X-Factd-Replica header (-1 when absent) and fills r (caller frees). */
static int get(const struct fd_test_server *ts, const char *path, struct fd_test_resp *r)
{
	char h[16];
	cr_assert_eq(fd_test_get(ts->port, path, r), 0);
	return fd_test_header(r, "X-Factd-Replica", h, sizeof h) ? atoi(h) : -1;
}

/* Append one event to stream; returns its position (caller frees). */
static char *append(const struct fd_test_server *ts, const char *stream)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_post(ts->port, fd_test_P("/streams/%s/events", stream),
				  "{\"expected_version\": \"any\", \"events\": [{\"type\": \"Noted\", \"data\": {}}]}", &r),
		     0);
	cr_assert_eq(r.status, 201, "append: %d %s", r.status, r.body);
	char *pos = strdup(fd_test_json_str(&r, "position"));
	fd_test_resp_free(&r);
	return pos;
}

/* Wait until the standby has replayed everything the primary has written so far. */
static void wait_replayed(const struct fd_test_server *ts)
{
	PGconn *p = fd_test_connect(ts->db_url);
	PGresult *res = PQexec(p, "SELECT pg_current_wal_lsn()::text");
	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK);
	char *lsn = fd_test_fmt("%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	PQfinish(p);
	for (long long end = fd_test_now_ms() + 30000;;) {
		if (fd_test_scalar_at(standby_admin(),
				      fd_test_P("SELECT (pg_last_wal_replay_lsn() >= '%s'::pg_lsn)::int", lsn)) == 1)
			break;
		cr_assert_lt(fd_test_now_ms(), end, "the standby did not replay %s", lsn);
		fd_test_sleep_ms(10);
	}
	free(lsn);
}

static long long metric(const struct fd_test_server *ts, const char *series)
{
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(ts->port, "/metrics", &r), 0);
	cr_assert_eq(r.status, 200);
	const char *at = strstr(r.body, series);
	long long v = -1;
	if (at)
		v = atoll(at + strlen(series) + 1);
	fd_test_resp_free(&r);
	return v;
}

/* ---- the tests ------------------------------------------------------------------ */

Test(replicas, every_read_route_is_served_by_the_replica, .timeout = 120)
{
	struct fd_test_server ts;
	start(&ts, NULL);
	char *pos = append(&ts, "note-1");
	struct fd_test_resp r;
	cr_assert_eq(fd_test_post(ts.port, "/counters", "{}", &r), 0);
	cr_assert_eq(r.status, 201, "%s", r.body);
	char *counter = strdup(fd_test_json_str(&r, "counter_id"));
	fd_test_resp_free(&r);
	wait_replayed(&ts);

	const char *paths[] = {
		"/streams/note-1/events", fd_test_P("/streams/note-1/events?min_position=%s", pos), "/events",
		fd_test_P("/events?min_position=%s", pos), fd_test_P("/counters/%s", counter),
		fd_test_P("/counters/%s?version=1", counter), fd_test_P("/counters/%s/events", counter), "/streams",
		"/categories",
	};
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		int rep = get(&ts, paths[i], &r);
		cr_assert_eq(r.status, 200, "%s: %d %s", paths[i], r.status, r.body);
		cr_assert_eq(rep, 0, "%s was not served by the replica", paths[i]);
		fd_test_resp_free(&r);
	}
	/* what the replica served is what was written */
	cr_assert_eq(get(&ts, "/streams/note-1/events", &r), 0);
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 1);
	fd_test_resp_free(&r);
	/* writes and operations stay on the primary */
	cr_assert_eq(fd_test_post(ts.port, "/streams/note-1/events",
				  "{\"expected_version\": 1, \"events\": [{\"type\": \"Noted\", \"data\": {}}]}", &r),
		     0);
	cr_assert_eq(r.status, 201);
	char h[16];
	cr_assert_null(fd_test_header(&r, "X-Factd-Replica", h, sizeof h), "an append answered by a replica");
	fd_test_resp_free(&r);
	cr_assert_eq(get(&ts, "/events/head", &r), -1);
	fd_test_resp_free(&r);

	cr_assert_geq(metric(&ts, "factd_read_requests_total{target=\"replica\",replica=\"0\"}"), 9);
	cr_assert_eq(metric(&ts, "factd_replica_up{replica=\"0\"}"), 1);
	cr_assert_neq(metric(&ts, "factd_replica_lag_seconds{replica=\"0\"}"), -1, "no lag gauge");
	/* /readyz reports the replica */
	cr_assert_eq(fd_test_get(ts.port, "/readyz", &r), 0);
	cr_assert_eq(r.status, 200);
	json_t *rep = json_array_get(json_object_get(r.json, "replicas"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(rep, "state")), "up", "%s", r.body);
	cr_assert(json_is_integer(json_object_get(rep, "lag_ms")), "%s", r.body);
	fd_test_resp_free(&r);
	free(counter);
	free(pos);
	stop(&ts);
}

Test(replicas, the_feed_on_a_standby_is_gap_safe, .timeout = 120)
{
	struct fd_test_server ts;
	start(&ts, NULL);
	/* A: an append whose transaction stays open on the primary */
	PGconn *raw = fd_test_connect(ts.db_url);
	PGresult *res = PQexec(raw, "BEGIN");
	PQclear(res);
	res = PQexec(raw, "SELECT status FROM fd_append('gapa-1', 'gapa', 'any', 0, ARRAY[gen_random_uuid()],"
			  " ARRAY['A'], ARRAY['{}'::jsonb], ARRAY['{}'::jsonb], false)");
	cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQresultErrorMessage(res));
	PQclear(res);
	/* B and C commit after it, and replicate */
	char *b = append(&ts, "gapb-1");
	char *c = append(&ts, "gapc-1");
	wait_replayed(&ts);
	char *standby = standby_url_for(ts.db_url);
	cr_assert_eq(fd_test_scalar_at(standby, "SELECT count(*) FROM events WHERE stream_id IN ('gapb-1', 'gapc-1')"), 2,
		     "B and C are on the standby");
	free(standby);
	struct fd_test_resp r;
	char *next = NULL;
	for (int i = 0; i < 3; i++) {
		int rep = get(&ts, fd_test_P("/events?min_position=%s", c), &r);
		cr_assert_eq(r.status, 200);
		cr_assert_eq(rep, 0, "the feed was not read from the standby");
		cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 0,
			     "B and C must stay hidden while A may still commit before them: %s", r.body);
		free(next);
		next = strdup(fd_test_json_str(&r, "next"));
		fd_test_resp_free(&r);
		struct fd_cursor nc, bc;
		cr_assert(fd_cursor_parse(next, &nc) && fd_cursor_parse(b, &bc));
		cr_assert_lt(fd_cursor_cmp(&nc, &bc), 0, "next must not pass B");
		fd_test_sleep_ms(20);
	}
	res = PQexec(raw, "COMMIT");
	cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	PQfinish(raw);
	wait_replayed(&ts);
	/* A's commit reaches the standby's snapshots with its replay; a loaded machine may take a moment more */
	int rep = -1;
	for (int i = 0; i < 200; i++) {
		rep = get(&ts, fd_test_P("/events?after=%s", next), &r);
		if (rep == 0 && json_array_size(json_object_get(r.json, "events")) == 3)
			break;
		fd_test_resp_free(&r);
		fd_test_sleep_ms(50);
		wait_replayed(&ts);
	}
	cr_assert_eq(rep, 0);
	json_t *evs = json_object_get(r.json, "events");
	cr_assert_eq(json_array_size(evs), 3, "%s", r.body);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(evs, 0), "stream")), "gapa-1",
			 "A's transaction is older: A comes first");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(evs, 1), "stream")), "gapb-1");
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(evs, 2), "stream")), "gapc-1");
	fd_test_resp_free(&r);
	free(next);
	free(b);
	free(c);
	stop(&ts);
}

Test(replicas, read_your_writes_waits_for_replay_then_reads_the_primary, .timeout = 120)
{
	struct fd_test_server ts;
	wait_ms = 300;
	start(&ts, NULL);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_post(ts.port, "/counters", "{}", &r), 0);
	char *counter = strdup(fd_test_json_str(&r, "counter_id"));
	fd_test_resp_free(&r);
	wait_replayed(&ts);

	replay(false);
	char *pos = append(&ts, "ryw-1");
	cr_assert_eq(fd_test_post(ts.port, fd_test_P("/counters/%s/add", counter), "{\"amount\": 5}", &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	fd_test_resp_free(&r);
	long long behind = metric(&ts, "factd_replica_fallbacks_total{reason=\"behind\"}");

	/* the replica has not replayed them: the primary answers, with the writes */
	long long t0 = fd_test_now_ms();
	cr_assert_eq(get(&ts, fd_test_P("/streams/ryw-1/events?min_position=%s", pos), &r), -1,
		     "a replica that has not replayed the position served the read");
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 1);
	fd_test_resp_free(&r);
	cr_assert_geq(fd_test_now_ms() - t0, 300, "it did not wait FACTD_REPLICA_WAIT_MS for the replica");
	cr_assert_eq(get(&ts, fd_test_P("/counters/%s?version=2", counter), &r), -1);
	cr_assert_eq(r.status, 200, "%s", r.body);
	cr_assert_eq(fd_test_json_int(&r, "version"), 2);
	fd_test_resp_free(&r);
	cr_assert_eq(get(&ts, fd_test_P("/events?min_position=%s", pos), &r), -1);
	fd_test_resp_free(&r);
	cr_assert_eq(metric(&ts, "factd_replica_fallbacks_total{reason=\"behind\"}"), behind + 3);
	/* without a position the (stale) replica serves: it was not read-your-writes */
	cr_assert_eq(get(&ts, "/streams/ryw-1/events", &r), 0);
	cr_assert_eq(r.status, 404, "the paused replica has not seen the stream: %s", r.body);
	fd_test_resp_free(&r);

	/* once the replica has replayed them, it serves the same reads */
	replay(true);
	wait_replayed(&ts);
	cr_assert_eq(get(&ts, fd_test_P("/streams/ryw-1/events?min_position=%s", pos), &r), 0);
	cr_assert_eq(json_array_size(json_object_get(r.json, "events")), 1);
	fd_test_resp_free(&r);
	cr_assert_eq(get(&ts, fd_test_P("/counters/%s?version=2", counter), &r), 0);
	cr_assert_eq(fd_test_json_int(&r, "version"), 2);
	fd_test_resp_free(&r);
	free(pos);
	free(counter);
	stop(&ts);
	wait_ms = 2000;
}

Test(replicas, a_lagging_replica_is_skipped_and_readyz_stays_ready, .timeout = 120)
{
	struct fd_test_server ts;
	max_lag_ms = 300;
	start(&ts, NULL);
	struct fd_test_resp r;
	cr_assert_eq(get(&ts, "/events", &r), 0);
	fd_test_resp_free(&r);
	replay(false);
	long long unavailable = metric(&ts, "factd_replica_fallbacks_total{reason=\"unavailable\"}");
	/* the primary moves on while the standby stands still: its lag grows past the limit */
	bool skipped = false;
	for (long long end = fd_test_now_ms() + 20000; !skipped;) {
		free(append(&ts, "lag-1"));
		skipped = get(&ts, "/events", &r) == -1;
		fd_test_resp_free(&r);
		cr_assert_lt(fd_test_now_ms(), end, "a replica lagging past FACTD_REPLICA_MAX_LAG_MS still served reads");
		fd_test_sleep_ms(50);
	}
	cr_assert_gt(metric(&ts, "factd_replica_fallbacks_total{reason=\"unavailable\"}"), unavailable);
	cr_assert_eq(metric(&ts, "factd_replica_up{replica=\"0\"}"), 0);
	cr_assert_eq(fd_test_get(ts.port, "/readyz", &r), 0);
	cr_assert_eq(r.status, 200, "ready with the primary alone: %s", r.body);
	json_t *rep = json_array_get(json_object_get(r.json, "replicas"), 0);
	cr_assert_str_eq(json_string_value(json_object_get(rep, "state")), "lagging", "%s", r.body);
	cr_assert_gt(json_integer_value(json_object_get(rep, "lag_ms")), 300);
	fd_test_resp_free(&r);
	replay(true);
	/* caught up, it serves again */
	for (long long end = fd_test_now_ms() + 20000;;) {
		int rep_i = get(&ts, "/events", &r);
		fd_test_resp_free(&r);
		if (rep_i == 0)
			break;
		cr_assert_lt(fd_test_now_ms(), end, "the replica was not used again after catching up");
		fd_test_sleep_ms(50);
	}
	stop(&ts);
	max_lag_ms = 60000;
}

/* ---- a TCP relay to the standby that the test can cut ------------------------- */

struct relay {
	int listen_fd;
	uint16_t port, target;
	atomic_bool down;
	atomic_bool stop;
	pthread_t thread;
	int fds[64];
	int nfds;
	pthread_mutex_t mu;
};

struct pipe_pair { struct relay *rl; int a, b; };

static void *pump(void *arg)
{
	struct pipe_pair *pp = arg;
	char buf[16384];
	struct pollfd p[2] = { { .fd = pp->a, .events = POLLIN }, { .fd = pp->b, .events = POLLIN } };
	while (!atomic_load(&pp->rl->down) && !atomic_load(&pp->rl->stop)) {
		if (poll(p, 2, 50) <= 0)
			continue;
		for (int i = 0; i < 2; i++) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(p[i].fd, buf, sizeof buf);
			if (n <= 0 || write(p[1 - i].fd, buf, (size_t)n) != n)
				goto out;
		}
	}
out:
	close(pp->a);
	close(pp->b);
	free(pp);
	return NULL;
}

static void *accept_loop(void *arg)
{
	struct relay *rl = arg;
	while (!atomic_load(&rl->stop)) {
		struct pollfd p = { .fd = rl->listen_fd, .events = POLLIN };
		if (poll(&p, 1, 50) <= 0)
			continue;
		int c = accept(rl->listen_fd, NULL, NULL);
		if (c < 0)
			continue;
		if (atomic_load(&rl->down)) {
			close(c);
			continue;
		}
		int s = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(rl->target),
					 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
			close(s);
			close(c);
			continue;
		}
		struct pipe_pair *pp = malloc(sizeof *pp);
		*pp = (struct pipe_pair){ rl, c, s };
		pthread_t t;
		pthread_create(&t, NULL, pump, pp);
		pthread_detach(t);
	}
	return NULL;
}

static void relay_start(struct relay *rl, uint16_t target)
{
	memset(rl, 0, sizeof *rl);
	rl->target = target;
	rl->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(bind(rl->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
	cr_assert_eq(listen(rl->listen_fd, 64), 0);
	socklen_t len = sizeof a;
	getsockname(rl->listen_fd, (struct sockaddr *)&a, &len);
	rl->port = ntohs(a.sin_port);
	cr_assert_eq(pthread_create(&rl->thread, NULL, accept_loop, rl), 0);
}

Test(replicas, a_replica_that_goes_down_is_skipped_and_used_again_when_it_answers, .timeout = 120)
{
	/* replica 0 is the standby reached through a relay the test cuts; replica 1 is never reachable */
	char *url = app_db_new();
	char *standby = standby_url_for(url);
	const char *at = strstr(standby, "127.0.0.1:");
	cr_assert(at, "the standby URL has no 127.0.0.1:port: %s", standby);
	uint16_t sport = (uint16_t)atoi(at + 10);
	static struct relay rl;
	relay_start(&rl, sport);
	const char *db = strrchr(standby, '/');
	read_urls = fd_test_fmt("postgresql://postgres@127.0.0.1:%u%s,postgresql://postgres@127.0.0.1:1%s", rl.port, db, db);
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, url, tweak);
	struct fd_test_resp r;
	cr_assert_eq(get(&ts, "/events", &r), 0, "the standby through the relay serves");
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_get(ts.port, "/readyz", &r), 0);
	json_t *rep1 = json_array_get(json_object_get(r.json, "replicas"), 1);
	cr_assert_str_eq(json_string_value(json_object_get(rep1, "state")), "down", "%s", r.body);
	cr_assert(json_is_string(json_object_get(rep1, "error")), "%s", r.body);
	fd_test_resp_free(&r);

	atomic_store(&rl.down, true); /* every connection to it breaks, new ones are refused */
	for (int i = 0; i < 20; i++) {
		int rep = get(&ts, "/streams?limit=5", &r);
		cr_assert_eq(r.status, 200, "a read failed while a replica was down: %d %s", r.status, r.body);
		cr_assert_eq(rep, -1, "a down replica served");
		fd_test_resp_free(&r);
	}
	cr_assert_eq(fd_test_get(ts.port, "/readyz", &r), 0);
	cr_assert_eq(r.status, 200);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(json_object_get(r.json, "replicas"), 0), "state")),
			 "down", "%s", r.body);
	fd_test_resp_free(&r);

	atomic_store(&rl.down, false);
	for (long long end = fd_test_now_ms() + 20000;;) {
		int rep = get(&ts, "/events", &r);
		fd_test_resp_free(&r);
		if (rep == 0)
			break;
		cr_assert_lt(fd_test_now_ms(), end, "the replica was not probed again after it came back");
		fd_test_sleep_ms(50);
	}
	fd_test_server_stop(&ts);
	atomic_store(&rl.stop, true);
	pthread_join(rl.thread, NULL);
	close(rl.listen_fd);
	free(read_urls);
	read_urls = NULL;
	free(standby);
	free(url);
}

Test(replicas, a_bad_read_url_list_is_refused_at_start)
{
	char err[256] = "";
	struct fd_config c;
	cr_assert_eq(fd_config_defaults(&c), FD_OK);
	setenv("FACTD_DATABASE_URL", "postgresql://x@127.0.0.1:1/db", 1);
	setenv("FACTD_READ_DATABASE_URL", "postgresql://a@h1/db,not a url", 1);
	char *argv[] = { "factd", "serve", NULL };
	fd_config_release(&c);
	cr_assert_eq(fd_config_load(&c, 2, argv, err, sizeof err), FD_ERR_INVAL);
	cr_assert(strstr(err, "FACTD_READ_DATABASE_URL"), "%s", err);
	fd_config_release(&c);
	/* a multi-host URI is one replica; two URIs are two */
	cr_assert_eq(fd_config_split_urls("postgresql://h1:1,h2:2/db?sslmode=disable", NULL, 0), 1);
	cr_assert_eq(fd_config_split_urls("postgresql://h1/db, postgres://h2/db,host=h3 dbname=db", NULL, 0), 3);
	setenv("FACTD_READ_DATABASE_URL", "postgresql://a@h1/db,postgresql://b@h2/db", 1);
	setenv("FACTD_POOLER", "sometimes", 1);
	cr_assert_eq(fd_config_load(&c, 2, argv, err, sizeof err), FD_ERR_INVAL);
	cr_assert(strstr(err, "FACTD_POOLER"), "%s", err);
	fd_config_release(&c);
	unsetenv("FACTD_POOLER");
	cr_assert_eq(fd_config_load(&c, 2, argv, err, sizeof err), FD_OK, "%s", err);
	cr_assert_str_eq(c.read_database_urls, "postgresql://a@h1/db,postgresql://b@h2/db");
	fd_config_release(&c);
	unsetenv("FACTD_READ_DATABASE_URL");
	unsetenv("FACTD_DATABASE_URL");
}
