/*
 * api_health.c - liveness and readiness.
 *
 * /healthz answers while the process runs; /readyz also needs the database
 * reachable and every compiled migration applied, the app's included.
 */
#include "http/api.h"
#include "factd/app.h"
#include "factd/migrate.h"
#include "http/problem.h"

#include <string.h>

void fd_api_healthz(struct fd_req *req, struct fd_resp *resp)
{
	fd_resp_json(resp, 200, strdup("{\"status\":\"ok\"}"));
}

void fd_api_readyz(struct fd_req *req, struct fd_resp *resp)
{
	PGconn *conn = NULL;
	enum fd_err err = fd_pool_acquire(req->ctx->pool, &conn);
	if (err == FD_OK) {
		err = fd_migrate_check(conn, req->ctx->app->migrations);
		fd_pool_release(req->ctx->pool, conn, err == FD_ERR_UNAVAILABLE);
	} else {
		/*
		 * Pooled connections prepare the store's statements and so cannot
		 * open on an unmigrated database; ask over a plain connection
		 * whether that is why.
		 */
		const char *const keys[] = { "dbname", "connect_timeout", NULL };
		const char *const vals[] = { req->ctx->cfg->database_url, "3", NULL };
		conn = PQconnectdbParams(keys, vals, 1);
		fd_pg_log_notices(conn, "readyz");
		err = PQstatus(conn) == CONNECTION_OK ? fd_migrate_check(conn, req->ctx->app->migrations) : FD_ERR_UNAVAILABLE;
		PQfinish(conn);
	}
	if (err == FD_ERR_NOTFOUND)
		fd_problem(resp, req, 503, "not-ready", "Not ready", "database migrations are pending", NULL);
	else if (err)
		fd_problem(resp, req, 503, "database-unavailable", "Not ready", "the database is unreachable", NULL);
	else
		fd_resp_json(resp, 200, strdup("{\"status\":\"ready\"}"));
}
