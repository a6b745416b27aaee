/*
 * mailroom.c - the library's outside system: letters are posted to the
 * library_mail table (migrations/0001_mail.sql), which a mail relay drains.
 * One object per process, made by start() before anything is served and
 * handed to saga steps as ctx->services.  Thread-safe (the pool is).
 */
#include "library.h"

#include <stdlib.h>

#include <factd/pool.h>
#include <factd/sql.h>

struct mailroom {
	struct fd_pool *pool;
};

static enum fd_err mailroom_start(const struct fd_config *cfg, void **out, char *errbuf, size_t errlen)
{
	long long connections = 2;
	enum fd_err err = fd_env_int("FACTD_MAILROOM_CONNECTIONS", 1, 64, &connections, errbuf, errlen);
	struct mailroom *m = err ? NULL : calloc(1, sizeof *m);
	*out = NULL;
	if (err)
		return err;
	if (!m)
		return FD_ERR_NOMEM;
	if ((err = fd_pool_new(cfg->database_url, (unsigned)connections, cfg->pool_timeout_ms, &m->pool))) {
		free(m);
		return err;
	}
	*out = m;
	return FD_OK;
}

static void mailroom_stop(void *services)
{
	struct mailroom *m = services;
	if (m)
		fd_pool_free(m->pool);
	free(m);
}

const struct fd_app_services mailroom_services = {
	.start = mailroom_start,
	.stop = mailroom_stop,
	.usage = "  FACTD_MAILROOM_CONNECTIONS database connections of the mailroom (default 2)\n",
};

/* It runs again and again on the mailroom's connections: prepared once on each (sql.h). */
static const struct fd_stmt post_letter = {
	.name = "library_post_letter",
	.sql = "INSERT INTO library_mail (mail_key, recipient, body) VALUES ($1, $2, $3)"
	       " ON CONFLICT (mail_key) DO NOTHING",
	.nparams = 3,
};

enum fd_err mailroom_post(void *services, const char *key, const char *to, const char *text)
{
	struct mailroom *m = services;
	PGconn *conn = NULL;
	enum fd_err err = fd_pool_acquire(m->pool, &conn);
	if (err)
		return err;
	const char *params[] = { key, to, text };
	PGresult *res = NULL;
	err = fd_sql_exec(conn, &post_letter, params, &res);
	PQclear(res);
	fd_pool_release(m->pool, conn, fd_pg_conn_broken(conn, err));
	return err;
}
