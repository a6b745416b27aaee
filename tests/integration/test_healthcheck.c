/*
 * test_healthcheck.c - `factd healthcheck`: the probe a container's
 * HEALTHCHECK runs finds the server where its configuration says it listens
 * (FACTD_LISTEN, wildcard addresses, TLS), is healthy only when /readyz
 * answers 200, and exits 0 or 1 as Docker expects.
 *
 * The binary (the test app's) comes from FACTD_BIN (meson passes it).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "app/healthcheck.h"
#include "http_client.h"
#include "test_server.h"
#include "testdb.h"
#include "testutil.h"

#define KEYS "read:hc-read-key-0123456789,write:hc-write-key-0123456789"

/* A configuration as `factd healthcheck` would read it: listen on host:port, TLS when cert is set. */
static void probe_config(struct fd_config *cfg, const char *host, unsigned port, const char *cert)
{
	cr_assert_eq(fd_config_defaults(cfg), FD_OK);
	free(cfg->listen_host);
	cfg->listen_host = strdup(host);
	cfg->port = port;
	if (cert)
		cfg->tls_cert = strdup(cert);
}

Test(healthcheck, url_follows_listen_and_tls)
{
	struct fd_config cfg;
	char url[600], err[256];
	static const struct {
		const char *host, *cert;
		unsigned port;
		bool live;
		const char *want;
	} cases[] = {
		{ "0.0.0.0", NULL, 9191, false, "http://127.0.0.1:9191/readyz" },
		{ "::", NULL, 8443, false, "http://[::1]:8443/readyz" },
		{ "127.0.0.5", "/c.pem", 8080, false, "https://127.0.0.5:8080/readyz" },
		{ "::1", "/c.pem", 7000, true, "https://[::1]:7000/healthz" },
		{ "db.internal", NULL, 80, false, "http://db.internal:80/readyz" },
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		probe_config(&cfg, cases[i].host, cases[i].port, cases[i].cert);
		cfg.healthcheck_live = cases[i].live;
		cr_assert_eq(fd_healthcheck_url(&cfg, url, sizeof url, err, sizeof err), FD_OK, "%s", err);
		cr_assert_str_eq(url, cases[i].want);
		fd_config_release(&cfg);
	}
	probe_config(&cfg, "0.0.0.0", 0, NULL);
	cr_assert_eq(fd_healthcheck_url(&cfg, url, sizeof url, err, sizeof err), FD_ERR_INVAL);
	cr_assert(strstr(err, "port 0"), "%s", err);
	fd_config_release(&cfg);
}

/* Ready only while /readyz is 200: with a migration row missing the database is "not ready",
 * and the probe fails although the process (--live, /healthz) still answers. */
Test(healthcheck, ready_follows_readyz, .timeout = 120)
{
	struct fd_test_server ts;
	fd_test_server_start(&ts, NULL);
	struct fd_config cfg;
	char msg[512];
	probe_config(&cfg, "127.0.0.1", ts.port, NULL);
	cr_assert_eq(fd_healthcheck(&cfg, msg, sizeof msg), FD_OK, "%s", msg);
	cr_assert(strstr(msg, "answered 200"), "%s", msg);

	cr_assert_eq(fd_test_server_scalar(&ts, "WITH d AS (DELETE FROM schema_migrations WHERE version = "
						"(SELECT max(version) FROM schema_migrations WHERE scope = 'factd') "
						"AND scope = 'factd' RETURNING 1) SELECT count(*) FROM d"),
		     1);
	cr_assert_neq(fd_healthcheck(&cfg, msg, sizeof msg), FD_OK);
	cr_assert(strstr(msg, "answered 503") && strstr(msg, "migrations"), "%s", msg);
	cfg.healthcheck_live = true;
	cr_assert_eq(fd_healthcheck(&cfg, msg, sizeof msg), FD_OK, "--live asks the process only: %s", msg);
	fd_config_release(&cfg);
	unsigned port = ts.port;
	fd_test_server_stop(&ts);

	/* Nobody listens on the port any more. */
	probe_config(&cfg, "127.0.0.1", port, NULL);
	cfg.healthcheck_live = true;
	enum fd_err err = fd_healthcheck(&cfg, msg, sizeof msg);
	cr_assert_eq(err, FD_ERR_UNAVAILABLE, "%s: %s", fd_err_name(err), msg);
	cr_assert(strstr(msg, "GET http://127.0.0.1:"), "%s", msg);
	fd_config_release(&cfg);
}

/* ---- TLS ------------------------------------------------------------------------ */

static char tls_dir[64];

static void with_tls(struct fd_config *cfg)
{
	char path[128];
	snprintf(path, sizeof path, "%s/cert.pem", tls_dir);
	cfg->tls_cert = strdup(path);
	snprintf(path, sizeof path, "%s/key.pem", tls_dir);
	cfg->tls_key = strdup(path);
}

Test(healthcheck, tls_is_probed_over_https, .timeout = 120)
{
	snprintf(tls_dir, sizeof tls_dir, "/tmp/factd-hc-tls-XXXXXX");
	cr_assert(mkdtemp(tls_dir));
	char cmd[512];
	/* CN=example.invalid: the probe reaches 127.0.0.1, a name the certificate does not carry. */
	snprintf(cmd, sizeof cmd,
		 "openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=example.invalid -days 1 -keyout %s/key.pem "
		 "-out %s/cert.pem >/dev/null 2>&1",
		 tls_dir, tls_dir);
	cr_assert_eq(system(cmd), 0, "openssl could not make a certificate");
	struct fd_test_server ts;
	fd_test_server_start_with(&ts, NULL, with_tls);

	struct fd_config cfg;
	char msg[512];
	char cert[128];
	snprintf(cert, sizeof cert, "%s/cert.pem", tls_dir);
	probe_config(&cfg, "0.0.0.0", ts.port, cert);
	cr_assert_eq(fd_healthcheck(&cfg, msg, sizeof msg), FD_OK, "%s", msg);
	cr_assert(strstr(msg, "https://127.0.0.1:"), "%s", msg);
	fd_config_release(&cfg);
	/* Plain HTTP to the TLS port is not healthy: the probe must follow FACTD_TLS_CERT. */
	probe_config(&cfg, "0.0.0.0", ts.port, NULL);
	cr_assert_neq(fd_healthcheck(&cfg, msg, sizeof msg), FD_OK, "plain HTTP to a TLS port: %s", msg);
	fd_config_release(&cfg);

	fd_test_server_stop(&ts);
	snprintf(cmd, sizeof cmd, "rm -rf %s", tls_dir);
	cr_assert_eq(system(cmd), 0);
}

/* ---- the command, as a container runs it ------------------------------------------ */

/* Run `FACTD_BIN healthcheck` with `listen` as FACTD_LISTEN (NULL: unset); its output goes to out. */
static int run_healthcheck(const char *listen, const char *extra_env, char *out, size_t outlen)
{
	const char *bin = getenv("FACTD_BIN");
	cr_assert(bin && access(bin, X_OK) == 0, "FACTD_BIN is not set or not executable: run through meson test");
	char cmd[1024];
	snprintf(cmd, sizeof cmd, "env -u FACTD_DATABASE_URL %s%s%s %s healthcheck 2>&1", listen ? "FACTD_LISTEN=" : "",
		 listen ? listen : "", extra_env ? extra_env : "", bin);
	FILE *p = popen(cmd, "r");
	cr_assert(p);
	size_t n = fread(out, 1, outlen - 1, p);
	out[n] = '\0';
	int st = pclose(p);
	cr_assert(WIFEXITED(st), "%s: %d", cmd, st);
	return WEXITSTATUS(st);
}

Test(healthcheck, command_reads_the_server_configuration, .timeout = 120)
{
	char *url = fd_test_db_new();
	struct fd_test_proc proc = { .port = fd_test_free_port() };
	uint16_t port = proc.port;
	char listen[32];
	snprintf(listen, sizeof listen, "0.0.0.0:%u", port);
	const char *env[] = { fd_test_P("FACTD_DATABASE_URL=%s", url), fd_test_P("FACTD_LISTEN=%s", listen),
			      "FACTD_API_KEYS=" KEYS, "FACTD_WORKERS=4", "FACTD_SAGAS=0", NULL };
	fd_test_proc_start(&proc, env, (const char *const[]){ "serve", NULL }, NULL);
	char out[2048];
	int rc = 1;
	/* Until the server is ready the probe says so and exits 1; then 0. */
	for (long long end = fd_test_now_ms() + 30000; (rc = run_healthcheck(listen, NULL, out, sizeof out)) != 0;) {
		cr_assert_eq(rc, 1, "not ready yet must be exit 1, got %d: %s", rc, out);
		int st;
		cr_assert_eq(waitpid(proc.pid, &st, WNOHANG), 0, "factd exited during start; see %s", proc.log);
		cr_assert_lt(fd_test_now_ms(), end, "factd healthcheck never passed: %s", out);
		fd_test_sleep_ms(100);
	}
	char want[64];
	snprintf(want, sizeof want, "http://127.0.0.1:%u/readyz answered 200", port);
	cr_assert(strstr(out, want), "%s", out);

	/* The default address (127.0.0.1:8080) is not where this server listens. */
	char other[32];
	snprintf(other, sizeof other, "127.0.0.1:%u", fd_test_free_port());
	cr_assert_eq(run_healthcheck(other, NULL, out, sizeof out), 1, "%s", out);
	cr_assert(strstr(out, "healthcheck: GET http://127.0.0.1:"), "%s", out);
	/* A configuration error is exit 1 too: Docker reserves 2. */
	cr_assert_eq(run_healthcheck("nonsense", NULL, out, sizeof out), 1, "%s", out);
	cr_assert(strstr(out, "FACTD_LISTEN"), "%s", out);
	cr_assert_eq(run_healthcheck(listen, " FACTD_HEALTHCHECK_TIMEOUT_MS=0", out, sizeof out), 1, "%s", out);
	cr_assert(strstr(out, "FACTD_HEALTHCHECK_TIMEOUT_MS"), "%s", out);

	fd_test_proc_stop(&proc, SIGTERM);
	cr_assert_eq(run_healthcheck(listen, NULL, out, sizeof out), 1, "a stopped server: %s", out);
	free(url);
}
