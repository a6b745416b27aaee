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
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_client.h"
#include "testdb.h"
#include "testutil.h"

/* Wait until every projection reports "live": each has made its tables by then. */
static void wait_projections_live(uint16_t port)
{
	for (long long end = fd_test_now_ms() + 20000;; fd_test_sleep_ms(50)) {
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
		cr_assert_lt(fd_test_now_ms(), end, "the projections did not become live");
	}
}

Test(process, stderr_is_json_lines_only, .timeout = 120)
{
	char *url = fd_test_db_new_empty(); /* factd migrates it and the projector creates its tables */
	char err_path[] = "/tmp/factd-test-stderr-XXXXXX";
	int fd = mkstemp(err_path);
	cr_assert_neq(fd, -1);
	close(fd);
	struct fd_test_proc proc = { 0 };
	snprintf(proc.log, sizeof proc.log, "%s", err_path);
	const char *env[] = { fd_test_P("FACTD_DATABASE_URL=%s", url), "FACTD_LOG_LEVEL=debug", "FACTD_WORKERS=4",
			      "FACTD_SAGA_WORKERS=1", NULL };
	fd_test_proc_start(&proc, env, (const char *const[]){ "serve", NULL }, "/healthz");
	uint16_t port = proc.port;

	wait_projections_live(port);
	struct fd_test_resp r;
	cr_assert_eq(fd_test_get(port, "/readyz", &r), 0);
	cr_assert_eq(r.status, 200, "%s", r.body);
	fd_test_resp_free(&r);
	cr_assert_eq(fd_test_post(port, "/counters", "{\"counter_id\":\"log-1\"}", &r), 0);
	cr_assert_eq(r.status, 201, "%s", r.body);
	fd_test_resp_free(&r);

	fd_test_proc_stop(&proc, SIGTERM);

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
