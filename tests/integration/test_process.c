/*
 * test_process.c - the factd binary as operators run it: `factd serve` on a
 * fresh database, its stderr captured whole.
 *
 * Log collectors parse factd's stderr as JSON lines, so nothing else may
 * reach it: PostgreSQL's notices (the projector's DROP TABLE IF EXISTS on a
 * new database, CREATE ... IF NOT EXISTS of the migrations) go through the
 * JSON logger like every other line.
 *
 * The binary (an app's: the test app's) comes from FACTD_BIN (meson passes it).
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"
#include "testdb.h"

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static long long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static uint16_t free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t len = sizeof a;
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

/* Start `factd serve` on url with stderr to the file err_path; wait until /healthz answers. */
static pid_t spawn(const char *url, uint16_t port, const char *err_path)
{
	const char *bin = getenv("FACTD_BIN");
	cr_assert(bin && access(bin, X_OK) == 0, "FACTD_BIN is not set or not executable: run through meson test");
	pid_t pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		/* a failed assertion ends the test process: the server must not outlive it */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		char listen[32];
		snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
		if (!freopen(err_path, "w", stderr))
			_exit(126);
		setenv("FACTD_DATABASE_URL", url, 1);
		setenv("FACTD_LISTEN", listen, 1);
		setenv("FACTD_LOG_LEVEL", "debug", 1);
		setenv("FACTD_WORKERS", "4", 1);
		setenv("FACTD_SAGA_WORKERS", "1", 1);
		execl(bin, bin, "serve", (char *)NULL);
		_exit(127);
	}
	for (long long end = now_ms() + 20000;;) {
		struct fd_test_resp r;
		int rc = fd_test_get(port, "/healthz", &r);
		int status = r.status;
		fd_test_resp_free(&r);
		if (rc == 0 && status == 200)
			return pid;
		int st;
		cr_assert_eq(waitpid(pid, &st, WNOHANG), 0, "factd exited during start");
		cr_assert_lt(now_ms(), end, "factd did not answer /healthz");
		sleep_ms(50);
	}
}

/* Wait until every projection reports "live": each has made its tables by then. */
static void wait_projections_live(uint16_t port)
{
	for (long long end = now_ms() + 20000;; sleep_ms(50)) {
		struct fd_test_resp r;
		cr_assert_eq(fd_test_get(port, "/projections", &r), 0);
		json_t *list = r.json ? json_object_get(r.json, "projections") : NULL;
		size_t i, live = 0;
		json_t *p;
		json_array_foreach(list, i, p)
			live += json_is_string(json_object_get(p, "status")) &&
				strcmp(json_string_value(json_object_get(p, "status")), "live") == 0;
		bool done = r.status == 200 && json_array_size(list) > 0 && live == json_array_size(list);
		fd_test_resp_free(&r);
		if (done)
			return;
		cr_assert_lt(now_ms(), end, "the projections did not become live");
	}
}

Test(process, stderr_is_json_lines_only, .timeout = 120)
{
	char *url = fd_test_db_new_empty(); /* factd migrates it and the projector creates its tables */
	char err_path[] = "/tmp/factd-test-stderr-XXXXXX";
	int fd = mkstemp(err_path);
	cr_assert_neq(fd, -1);
	close(fd);
	uint16_t port = free_port();
	pid_t pid = spawn(url, port, err_path);

	wait_projections_live(port);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(port, "/readyz", &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_post(port, "/counters", "{\"counter_id\":\"log-1\"}", &r), 0);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);

	kill(pid, SIGTERM);
	int st = 0;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "factd did not stop cleanly");

	FILE *f = fopen(err_path, "r");
	cr_assert_not_null(f);
	char *line = NULL;
	size_t cap = 0, lines = 0, notices = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, f)) > 0) {
		lines++;
		cr_assert_eq(line[n - 1], '\n', "stderr line %zu is not terminated: %s", lines, line);
		json_error_t jerr;
		json_t *o = json_loadb(line, (size_t)n - 1, 0, &jerr);
		cr_assert(json_is_object(o), "stderr line %zu is not a JSON object (%s): %s", lines, jerr.text, line);
		cr_assert(json_is_string(json_object_get(o, "ts")), "line %zu has no ts: %s", lines, line);
		cr_assert(json_is_string(json_object_get(o, "level")), "line %zu has no level: %s", lines, line);
		cr_assert(json_is_string(json_object_get(o, "msg")), "line %zu has no msg: %s", lines, line);
		if (strcmp(json_string_value(json_object_get(o, "msg")), "postgresql notice") == 0) {
			notices++;
			cr_assert_str_eq(json_string_value(json_object_get(o, "level")), "debug", "%s", line);
			cr_assert_str_eq(json_string_value(json_object_get(o, "severity")), "NOTICE", "%s", line);
			cr_assert(json_is_string(json_object_get(o, "notice")), "%s", line);
			cr_assert(json_is_string(json_object_get(o, "source")), "%s", line);
		}
		json_decref(o);
	}
	free(line);
	fclose(f);
	unlink(err_path);
	cr_assert_gt(lines, 0, "factd wrote nothing to stderr");
	/* A new database makes the projector drop tables that are not there yet: PostgreSQL notices that. */
	cr_assert_gt(notices, 0, "no PostgreSQL notice was logged as JSON");
	free(url);
}
