/* testdb.c - per-test databases cloned from the migrated template. */
#include "testdb.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *fd_test_admin_url(void)
{
	const char *url = getenv("FACTD_TEST_ADMIN_URL");
	if (!url || !*url)
		cr_assert_fail("FACTD_TEST_ADMIN_URL is not set: run the tests through scripts/test");
	return url;
}

char *fd_test_url_for(const char *dbname)
{
	const char *admin = fd_test_admin_url();
	const char *slash = strrchr(admin, '/');
	cr_assert(slash, "admin URL must end in /dbname");
	size_t len = (size_t)(slash - admin) + 1 + strlen(dbname) + 1;
	char *url = malloc(len);
	cr_assert(url);
	snprintf(url, len, "%.*s/%s", (int)(slash - admin), admin, dbname);
	return url;
}

PGconn *fd_test_connect(const char *url)
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

long long fd_test_scalar(PGconn *conn, const char *sql)
{
	PGresult *r = PQexec(conn, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		char msg[512];
		snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
		PQclear(r);
		cr_assert_fail("query failed: %s: %s", sql, msg);
	}
	long long v = PQgetisnull(r, 0, 0) ? 0 : atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

static char *create_db(const char *template_name)
{
	static atomic_uint counter;
	char name[64];
	/* The pid alone can repeat when a cluster outlives one run; add the clock. */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(name, sizeof name, "t_%ld_%u_%lx", (long)getpid(), atomic_fetch_add(&counter, 1),
		 (unsigned long)(ts.tv_nsec ^ ts.tv_sec));
	char sql[256];
	if (template_name)
		snprintf(sql, sizeof sql, "CREATE DATABASE %s TEMPLATE %s STRATEGY FILE_COPY", name, template_name);
	else
		snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
	PGconn *admin = fd_test_connect(fd_test_admin_url());
	PGresult *r = PQexec(admin, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		char msg[512];
		snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(r));
		PQclear(r);
		PQfinish(admin);
		cr_assert_fail("%s: %s", sql, msg);
	}
	PQclear(r);
	PQfinish(admin);
	return fd_test_url_for(name);
}

char *fd_test_db_new(void)
{
	return create_db("factd_template");
}

char *fd_test_db_new_empty(void)
{
	return create_db(NULL);
}

long long fd_test_scalar_at(const char *url, const char *sql)
{
	PGconn *c = fd_test_connect(url);
	long long v = fd_test_scalar(c, sql);
	PQfinish(c);
	return v;
}

void fd_test_exec_at(const char *url, const char *sql)
{
	PGconn *c = fd_test_connect(url);
	PGresult *r = PQexec(c, sql);
	cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
		  PQresultErrorMessage(r));
	PQclear(r);
	PQfinish(c);
}
