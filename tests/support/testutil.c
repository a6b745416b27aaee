/* testutil.c - helpers shared by the suites (see testutil.h). */
#include "testutil.h"

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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
