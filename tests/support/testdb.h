/*
 * testdb.h - throwaway databases for integration tests.
 *
 * scripts/test starts a fresh cluster, migrates a template database
 * (factd_template) with `factd migrate`, and exports FACTD_TEST_ADMIN_URL.
 * Each test asks for its own database cloned from the template, so tests run
 * in parallel without seeing each other's events.
 */
#ifndef FACTD_TEST_TESTDB_H
#define FACTD_TEST_TESTDB_H

#include <libpq-fe.h>

/* The admin URL (postgres database) from FACTD_TEST_ADMIN_URL; aborts the test when unset. */
const char *fd_test_admin_url(void);
/* A URL for a database with the same server but another dbname (caller frees). */
char *fd_test_url_for(const char *dbname);
/* A new database cloned from factd_template; returns its URL (caller frees). */
char *fd_test_db_new(void);
/* A new empty database (no schema); returns its URL (caller frees). */
char *fd_test_db_new_empty(void);
/* Connect or fail the test (caller PQfinish-es). */
PGconn *fd_test_connect(const char *url);
/* Run SQL that returns one value; returns it as a long long (fails the test on error). */
long long fd_test_scalar(PGconn *conn, const char *sql);
/* The same on a connection of its own to the database at url. */
long long fd_test_scalar_at(const char *url, const char *sql);
/* Run SQL (several statements allowed) on a connection of its own to url; fails the test on error. */
void fd_test_exec_at(const char *url, const char *sql);

#endif
