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
#include "store/replicas.h"

#include <string.h>

void fd_api_healthz(struct fd_req *req, struct fd_resp *resp)
{
	fd_resp_json(resp, 200, strdup("{\"status\":\"ok\"}"));
}

/*
 * The read replicas' state for /readyz: ready never depends on them (the
 * primary serves every read they cannot), but operators see each one.
 */
static json_t *replica_states(struct fd_replicas *r)
{
	json_t *list = json_array();
	for (unsigned i = 0; list && i < fd_replicas_count(r); i++) {
		struct fd_replica_state st;
		fd_replicas_state(r, i, &st);
		const char *state = st.usable ? "up" : !st.up ? "down" : !st.standby ? "not-standby" : "lagging";
		json_t *o = json_pack("{s:i, s:s, s:s}", "index", (int)i, "state", state, "database", st.url);
		if (o && st.up && st.lag_known)
			json_object_set_new(o, "lag_ms", json_integer(st.lag_ms));
		if (o && st.error[0])
			json_object_set_new(o, "error", json_string(st.error));
		json_array_append_new(list, o);
	}
	return list;
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
	else if (!req->ctx->replicas)
		fd_resp_json(resp, 200, strdup("{\"status\":\"ready\"}"));
	else
		fd_resp_json_doc(resp, 200, json_pack("{s:s, s:o}", "status", "ready", "replicas", replica_states(req->ctx->replicas)));
}
