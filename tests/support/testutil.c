/* testutil.c - helpers shared by the suites (see testutil.h). */
#include "testutil.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http_client.h"

void fd_test_sleep_ms(long ms)
{
	struct timespec t = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&t, NULL);
}

long long fd_test_now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

double fd_test_now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

char *fd_test_fmt(const char *f, ...)
{
	va_list ap;
	va_start(ap, f);
	char *s = NULL;
	int n = vasprintf(&s, f, ap);
	va_end(ap);
	cr_assert_geq(n, 0);
	return s;
}

const char *fd_test_P(const char *f, ...)
{
	static __thread char ring[64][1024];
	static __thread unsigned next;
	char *b = ring[next++ % 64];
	va_list ap;
	va_start(ap, f);
	int n = vsnprintf(b, sizeof ring[0], f, ap);
	va_end(ap);
	cr_assert(n >= 0 && (size_t)n < sizeof ring[0], "fd_test_P(): string too long");
	return b;
}

void fd_test_new_uuid(char out[FD_UUID_STRLEN + 1])
{
	struct fd_uuid u;
	cr_assert_eq(fd_uuid_v7(&u), FD_OK);
	fd_uuid_format(&u, out);
}

uint16_t fd_test_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert_neq(fd, -1);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t len = sizeof a;
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

void fd_test_proc_start(struct fd_test_proc *p, const char *const *env, const char *const *args,
			const char *ready_path)
{
	const char *bin = getenv("FACTD_BIN");
	cr_assert(bin && access(bin, X_OK) == 0, "FACTD_BIN is not set or not executable: run through meson test");
	if (!p->port)
		p->port = fd_test_free_port();
	if (!p->log[0]) {
		snprintf(p->log, sizeof p->log, "/tmp/factd-test-%d-%u.log", (int)getpid(), p->port);
		p->own_log = true;
	}
	const char *argv[16] = { bin };
	size_t argc = 1;
	for (size_t i = 0; args && args[i]; i++) {
		cr_assert_lt(argc, sizeof argv / sizeof argv[0] - 1, "too many arguments");
		argv[argc++] = args[i];
	}
	argv[argc] = NULL;
	p->pid = fork();
	cr_assert_neq(p->pid, -1);
	if (p->pid == 0) {
		/* a failed assertion ends the test process: the server must not outlive it */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		char listen[32];
		snprintf(listen, sizeof listen, "127.0.0.1:%u", p->port);
		setenv("FACTD_LISTEN", listen, 1);
		setenv("FACTD_LOG_LEVEL", "warn", 1);
		for (size_t i = 0; env && env[i]; i++)
			putenv((char *)env[i]);
		int fd = open(p->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || dup2(fd, 2) < 0)
			_exit(126);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	for (long long end = fd_test_now_ms() + 30000; ready_path;) {
		struct fd_test_resp r;
		int rc = fd_test_get(p->port, ready_path, &r);
		int status = r.status;
		fd_test_resp_free(&r);
		if (rc == 0 && status == 200)
			return;
		int st;
		cr_assert_eq(waitpid(p->pid, &st, WNOHANG), 0, "%s exited during start; see %s", bin, p->log);
		cr_assert_lt(fd_test_now_ms(), end, "%s did not answer %s; see %s", bin, ready_path, p->log);
		fd_test_sleep_ms(50);
	}
}

void fd_test_proc_stop(struct fd_test_proc *p, int sig)
{
	kill(p->pid, sig);
	int st = 0;
	cr_assert_eq(waitpid(p->pid, &st, 0), p->pid);
	if (sig == SIGTERM)
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the process did not stop cleanly (%d); see %s", st,
			  p->log);
	if (p->own_log)
		unlink(p->log);
}

int fd_test_proc_exited(struct fd_test_proc *p, char **log)
{
	int st = 0;
	for (long long end = fd_test_now_ms() + 30000;; fd_test_sleep_ms(20)) {
		if (waitpid(p->pid, &st, WNOHANG) == p->pid)
			break;
		if (fd_test_now_ms() > end) {
			kill(p->pid, SIGKILL);
			waitpid(p->pid, &st, 0);
			cr_assert_fail("the process kept running where it should have exited; see %s", p->log);
		}
	}
	FILE *f = fopen(p->log, "r");
	char buf[8192] = "";
	size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
	buf[n] = '\0';
	if (f)
		fclose(f);
	if (p->own_log)
		unlink(p->log);
	*log = strdup(buf);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}
