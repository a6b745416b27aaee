/*
 * rows.c - saga rows in and out of PostgreSQL.
 */
#include "rows.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/log.h"
#include "factd/sql.h"

static PGresult *checked(enum fd_err err, PGresult *res)
{
	if (!err)
		return res;
	const char *msg = res ? PQresultErrorMessage(res) : NULL;
	fd_log_fields(FD_LOG_WARN, "saga query failed", json_pack("{s:s}", "error", msg ? msg : ""));
	PQclear(res);
	return NULL;
}

PGresult *fd_saga_sql(PGconn *conn, const char *sql, int n, const char *const *params)
{
	char name[FD_SQL_NAME_MAX];
	fd_sql_text_name(sql, name);
	PGresult *res = NULL;
	enum fd_err err = fd_sql_exec(conn, &(struct fd_stmt){ .name = name, .sql = sql, .nparams = n }, params, &res);
	return checked(err, res);
}

PGresult *fd_saga_sql_once(PGconn *conn, const char *sql, int n, const char *const *params)
{
	PGresult *res = NULL;
	enum fd_err err = fd_sql_once(conn, sql, n, params, &res);
	return checked(err, res);
}

bool fd_saga_exec(PGconn *conn, const char *sql)
{
	PGresult *res = fd_saga_sql_once(conn, sql, 0, NULL);
	PQclear(res);
	return res != NULL;
}

enum fd_err fd_saga_row_parse(const struct fd_saga_set *types, const PGresult *res, int i, unsigned time_pct,
			      struct fd_saga_state *st, char *lease)
{
	const struct fd_saga_type *type = fd_saga_set_find(types, PQgetvalue(res, i, 1));
	if (!type)
		return FD_ERR_NOTFOUND;
	enum fd_err err = fd_saga_state_init(st, type, PQgetvalue(res, i, 0), time_pct);
	if (err)
		return err;
	json_decref(st->completed);
	json_decref(st->seen);
	json_decref(st->data);
	st->completed = json_loads(PQgetvalue(res, i, 6), 0, NULL);
	st->seen = json_loads(PQgetvalue(res, i, 9), 0, NULL);
	st->data = json_loads(PQgetvalue(res, i, 10), 0, NULL);
	long step = strtol(PQgetvalue(res, i, 4), NULL, 10);
	if (!fd_saga_status_parse(PQgetvalue(res, i, 3), &st->status) ||
	    !fd_saga_phase_parse(PQgetvalue(res, i, 5), &st->phase) || !json_is_array(st->completed) ||
	    !json_is_array(st->seen) || !json_is_object(st->data) || step < 0 || (size_t)step >= type->nsteps) {
		fd_saga_state_release(st);
		return FD_ERR_INVAL;
	}
	st->current = (int)step;
	st->attempts = (unsigned)strtoul(PQgetvalue(res, i, 7), NULL, 10);
	st->leased = strcmp(PQgetvalue(res, i, 8), "t") == 0;
	snprintf(st->error, sizeof st->error, "%s", PQgetvalue(res, i, 11));
	if (lease)
		snprintf(lease, 37, "%s", PQgetvalue(res, i, 12));
	fd_saga_state_reset_outputs(st);
	return FD_OK;
}

/* A state's columns as statement parameters.  False on NOMEM; release with row_text_free either way. */
struct row_text {
	char step[16], attempts[16];
	char due[24];  /* "keep", "none" or milliseconds from now */
	char *completed, *seen, *data;
};

static bool row_text(const struct fd_saga_state *st, struct row_text *t)
{
	snprintf(t->step, sizeof t->step, "%d", st->current);
	snprintf(t->attempts, sizeof t->attempts, "%u", st->attempts);
	if (st->due == FD_DUE_KEEP)
		snprintf(t->due, sizeof t->due, "keep");
	else if (st->due == FD_DUE_NONE)
		snprintf(t->due, sizeof t->due, "none");
	else
		snprintf(t->due, sizeof t->due, "%lld", (long long)st->due_ms);
	t->completed = json_dumps(st->completed, JSON_COMPACT);
	t->seen = json_dumps(st->seen, JSON_COMPACT);
	t->data = json_dumps(st->data, JSON_COMPACT);
	return t->completed && t->seen && t->data;
}

static void row_text_free(struct row_text *t)
{
	free(t->completed);
	free(t->seen);
	free(t->data);
}

static enum fd_err write_row(PGconn *conn, const char *sql, const char *const *params, int n)
{
	PGresult *res = fd_saga_sql(conn, sql, n, params);
	PQclear(res);
	return res ? FD_OK : FD_ERR_IO;
}

enum fd_err fd_saga_row_save(PGconn *conn, const struct fd_saga_state *st)
{
	struct row_text t;
	enum fd_err err = FD_ERR_NOMEM;
	if (row_text(st, &t)) {
		const char *p[] = { st->id, fd_saga_status_name(st->status), t.step, fd_saga_phase_name(st->phase),
				    t.completed, t.attempts, t.due, st->clear_lease ? "t" : "f", t.seen, t.data,
				    st->error[0] ? st->error : NULL };
		err = write_row(conn,
				"UPDATE sagas SET status = $2, current_step = $3::int, phase = $4, completed_steps = $5::jsonb,"
				" attempts = $6::int,"
				" due_at = CASE $7 WHEN 'keep' THEN due_at WHEN 'none' THEN NULL"
				" ELSE now() + $7::bigint * interval '1 millisecond' END,"
				" lease_token = CASE WHEN $8::boolean THEN NULL ELSE lease_token END,"
				" seen = $9::jsonb, data = $10::jsonb, error = $11, version = version + 1, updated_at = now()"
				" WHERE id = $1::uuid",
				p, 11);
	}
	row_text_free(&t);
	return err;
}

enum fd_err fd_saga_row_insert(PGconn *conn, const struct fd_saga_state *st, const char *key)
{
	struct row_text t;
	enum fd_err err = FD_ERR_NOMEM;
	if (row_text(st, &t)) {
		const char *p[] = { st->id, st->type->name, key, fd_saga_status_name(st->status), t.step,
				    fd_saga_phase_name(st->phase), t.completed, t.due, t.seen, t.data,
				    st->error[0] ? st->error : NULL, t.attempts };
		/*
		 * Not when the retention job removed an ended saga of this type and
		 * key: the business process ran already (docs/design.md, "Saga
		 * cleanup").  The intake runs this holding its checkpoint row, which
		 * the removal takes first too, so the statement sees every tombstone
		 * committed before its batch began.
		 */
		PGresult *res = fd_saga_sql(
			conn,
			"WITH t AS (SELECT 1 FROM saga_tombstones WHERE type = $2 AND correlation_key = $3),"
			" i AS (INSERT INTO sagas (id, type, correlation_key, status, current_step, phase, completed_steps,"
			" due_at, seen, data, error, attempts, created_at)"
			" SELECT $1::uuid, $2, $3, $4, $5::int, $6, $7::jsonb,"
			" CASE WHEN $8 IN ('keep', 'none') THEN NULL ELSE now() + $8::bigint * interval '1 millisecond' END,"
			" $9::jsonb, $10::jsonb, $11, $12::int, clock_timestamp() WHERE NOT EXISTS (SELECT 1 FROM t)"
			" ON CONFLICT (id) DO NOTHING RETURNING 1)"
			" SELECT EXISTS (SELECT 1 FROM t)",
			12, p);
		err = !res ? FD_ERR_IO : strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? FD_ERR_GONE : FD_OK;
		PQclear(res);
	}
	row_text_free(&t);
	return err;
}

enum fd_err fd_saga_notes_write(PGconn *conn, const struct fd_saga_state *st)
{
	size_t i;
	json_t *n;
	json_array_foreach(st->notes, i, n) {
		const char *p[] = { st->id, json_string_value(json_object_get(n, "step")),
				    json_string_value(json_object_get(n, "kind")),
				    json_string_value(json_object_get(n, "outcome")),
				    json_string_value(json_object_get(n, "error")) };
		PGresult *res = fd_saga_sql(
			conn,
			"INSERT INTO saga_steps (saga_id, seq, step, kind, attempt, outcome, error, started_at, finished_at)"
			" SELECT $1::uuid, coalesce(max(seq), 0) + 1, $2, $3, 1, $4, $5, now(), now()"
			" FROM saga_steps WHERE saga_id = $1::uuid",
			5, p);
		if (!res)
			return FD_ERR_IO;
		PQclear(res);
	}
	return FD_OK;
}

enum fd_err fd_saga_cleanup_batch(PGconn *conn, unsigned retention_s, unsigned limit, int64_t *removed)
{
	*removed = 0;
	char ret_s[16], lim_s[16];
	snprintf(ret_s, sizeof ret_s, "%u", retention_s);
	snprintf(lim_s, sizeof lim_s, "%u", limit ? limit : 1000);
	const char *np[] = { FD_SAGA_SUBSCRIPTION };
	const char *p[] = { ret_s, lim_s };
	/*
	 * Nothing due: no transaction at all.  The removal's transaction holds
	 * a row lock, so an xid: while it is open the feed's horizon (and every
	 * follower of it) waits behind it, and the intake waits for the lock.
	 * The check reads without an xid.  The temporary table is made before
	 * the transaction, once per session, for the same reason.
	 */
	PGresult *res = fd_saga_sql(conn,
				    "SELECT 1 FROM sagas WHERE status IN ('completed', 'compensated', 'failed')"
				    " AND updated_at < now() - $1::int * interval '1 second' LIMIT 1",
				    1, p);
	if (!res)
		return FD_ERR_IO;
	bool due = PQntuples(res) > 0;
	PQclear(res);
	if (!due)
		return FD_OK;
	res = fd_saga_sql_once(conn, "CREATE TEMP TABLE IF NOT EXISTS fd_saga_gone (id uuid) ON COMMIT DELETE ROWS", 0,
			       NULL);
	if (!res)
		return FD_ERR_IO;
	PQclear(res);
	if (!fd_saga_exec(conn, "BEGIN"))
		return FD_ERR_IO;
	/*
	 * The intake's lock first: removal and an intake batch never interleave.
	 * No row: no intake ever ran, so no saga exists (an intake makes the row
	 * before its first batch).
	 */
	res = fd_saga_sql(conn, "SELECT 1 FROM subscriptions WHERE name = $1 FOR UPDATE", 1, np);
	bool ok = res != NULL, any = res && PQntuples(res) == 1;
	PQclear(res);
	if (ok && !any) {
		fd_saga_exec(conn, "ROLLBACK");
		return FD_OK;
	}
	/* Ended sagas nobody holds (SKIP LOCKED): an operator's retry holding one keeps it for the next round. */
	if (ok) {
		res = fd_saga_sql(conn,
				  "WITH d AS (SELECT id FROM sagas"
				  " WHERE status IN ('completed', 'compensated', 'failed')"
				  " AND updated_at < now() - $1::int * interval '1 second'"
				  " ORDER BY updated_at LIMIT $2::int FOR UPDATE SKIP LOCKED),"
				  " t AS (INSERT INTO saga_tombstones (type, correlation_key, saga_id, status, ended_at)"
				  "  SELECT s.type, s.correlation_key, s.id, s.status, s.updated_at FROM sagas s"
				  "  WHERE s.id IN (SELECT id FROM d)"
				  "  ON CONFLICT (type, correlation_key) DO UPDATE SET saga_id = EXCLUDED.saga_id,"
				  "  status = EXCLUDED.status, ended_at = EXCLUDED.ended_at, removed_at = now())"
				  " INSERT INTO fd_saga_gone SELECT id FROM d",
				  2, p);
		ok = res != NULL;
		PQclear(res);
	}
	if (ok) {
		res = fd_saga_sql(conn, "DELETE FROM saga_steps WHERE saga_id IN (SELECT id FROM fd_saga_gone)", 0, NULL);
		ok = res != NULL;
		PQclear(res);
	}
	if (ok) {
		res = fd_saga_sql(conn, "DELETE FROM sagas WHERE id IN (SELECT id FROM fd_saga_gone)", 0, NULL);
		ok = res != NULL;
		if (ok)
			*removed = strtoll(PQcmdTuples(res), NULL, 10);
		PQclear(res);
	}
	if (ok && fd_saga_exec(conn, "COMMIT"))
		return FD_OK;
	fd_saga_exec(conn, "ROLLBACK");
	*removed = 0;
	return FD_ERR_IO;
}
