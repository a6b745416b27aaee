/*
 * ops.c - what operators see and do: list sagas, show one with its steps and
 * history, retry a failed one, abort a running one.  Pool connections.
 */
#include "factd/saga.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/uuid.h"
#include "machine.h"
#include "rows.h"

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* One saga's summary as JSON text, built by PostgreSQL. */
#define SUMMARY                                                                                                  \
	"json_build_object('id', s.id, 'type', s.type, 'correlation_key', s.correlation_key, 'status', s.status," \
	" 'current_step', s.current_step, 'phase', s.phase, 'attempts', s.attempts,"                              \
	" 'due_at', " TS("s.due_at") ", 'error', s.error, 'created_at', " TS("s.created_at") ","                  \
	" 'updated_at', " TS("s.updated_at") ", 'version', s.version)::text"

/* Replace the numeric current_step with the step's name. */
static void name_step(const struct fd_saga_set *types, json_t *o)
{
	const struct fd_saga_type *t = fd_saga_set_find(types, json_string_value(json_object_get(o, "type")));
	json_int_t i = json_integer_value(json_object_get(o, "current_step"));
	if (t && i >= 0 && (size_t)i < t->nsteps)
		json_object_set_new(o, "current_step", json_string(t->steps[i].name));
}

enum fd_err fd_saga_list(struct fd_pool *pool, const struct fd_saga_set *types, const struct fd_saga_filter *f,
			 json_t **out)
{
	*out = NULL;
	PGconn *conn;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	char limit[16];
	snprintf(limit, sizeof limit, "%u", f->limit + 1);
	if (f->after) {
		struct fd_uuid u;
		const char *ap[] = { f->after };
		if (!fd_uuid_parse(f->after, &u)) {
			fd_pool_release(pool, conn, false);
			return FD_ERR_NOTFOUND;
		}
		PGresult *chk = fd_saga_sql_once(conn, "SELECT 1 FROM sagas WHERE id = $1::uuid", 1, ap);
		if (!chk) { /* a database error is not an unknown saga */
			fd_pool_release(pool, conn, PQstatus(conn) != CONNECTION_OK);
			return FD_ERR_IO;
		}
		bool known = PQntuples(chk) == 1;
		PQclear(chk);
		if (!known) {
			fd_pool_release(pool, conn, false);
			return FD_ERR_NOTFOUND;
		}
	}
	const char *p[] = { f->type, f->status, f->after, limit };
	PGresult *res = fd_saga_sql_once(
		conn,
		"SELECT " SUMMARY ", s.id::text FROM sagas s"
		" WHERE ($1::text IS NULL OR s.type = $1) AND ($2::text IS NULL OR s.status = $2)"
		" AND ($3::uuid IS NULL OR (s.created_at, s.id) < (SELECT a.created_at, a.id FROM sagas a WHERE a.id = $3::uuid))"
		" ORDER BY s.created_at DESC, s.id DESC LIMIT $4::int",
		4, p);
	if (!res) {
		fd_pool_release(pool, conn, PQstatus(conn) != CONNECTION_OK);
		return FD_ERR_IO;
	}
	fd_pool_release(pool, conn, false);
	json_t *items = json_array();
	json_t *next = json_null();
	int rows = PQntuples(res);
	for (int i = 0; i < rows && items; i++) {
		if ((unsigned)i == f->limit) {
			json_decref(next);
			next = json_string(PQgetvalue(res, i - 1, 1));
			break;
		}
		json_t *o = json_loads(PQgetvalue(res, i, 0), 0, NULL);
		if (o) {
			name_step(types, o);
			json_array_append_new(items, o);
		}
	}
	PQclear(res);
	*out = items ? json_pack("{s:o, s:o}", "items", items, "next", next) : NULL;
	return *out ? FD_OK : FD_ERR_NOMEM;
}

enum fd_err fd_saga_get(struct fd_pool *pool, const struct fd_saga_set *types, const char *id, json_t **out)
{
	*out = NULL;
	struct fd_uuid u;
	if (!fd_uuid_parse(id, &u))
		return FD_ERR_NOTFOUND;
	PGconn *conn;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	const char *p[] = { id };
	PGresult *res = fd_saga_sql_once(
		conn,
		"SELECT " SUMMARY ", s.data::text, s.completed_steps::text,"
		" (SELECT coalesce(json_agg(json_build_object('seq', h.seq, 'step', h.step, 'kind', h.kind,"
		"   'attempt', h.attempt, 'outcome', h.outcome, 'error', h.error, 'worker', h.worker,"
		"   'started_at', " TS("h.started_at") ","
		"   'finished_at', " TS("h.finished_at") ") ORDER BY h.seq), '[]')::text"
		"  FROM saga_steps h WHERE h.saga_id = s.id), coalesce(s.personal::text, '')"
		" FROM sagas s WHERE s.id = $1::uuid",
		1, p);
	if (!res) {
		fd_pool_release(pool, conn, PQstatus(conn) != CONNECTION_OK);
		return FD_ERR_IO;
	}
	if (PQntuples(res) == 0) {
		fd_pool_release(pool, conn, false);
		PQclear(res);
		return FD_ERR_NOTFOUND;
	}
	json_t *o = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	json_t *data = json_loads(PQgetvalue(res, 0, 1), 0, NULL);
	json_t *history = json_loads(PQgetvalue(res, 0, 3), 0, NULL);
	json_t *sealed = *PQgetvalue(res, 0, 4) ? json_loads(PQgetvalue(res, 0, 4), 0, NULL) : NULL;
	bool has_sealed = *PQgetvalue(res, 0, 4) != '\0';
	PQclear(res);
	json_t *erased = json_array();
	if (!o || !data || !history || !erased || (has_sealed && !sealed)) {
		fd_pool_release(pool, conn, false);
		json_decref(o);
		json_decref(data);
		json_decref(history);
		json_decref(sealed);
		json_decref(erased);
		return FD_ERR_NOMEM;
	}
	/* sealed personal values open; an erased subject's read as null, listed in "erased" */
	err = sealed ? fd_saga_data_open(conn, pool, sealed, data, erased) : FD_OK;
	fd_pool_release(pool, conn, fd_pg_conn_broken(conn, err));
	json_decref(sealed);
	if (err) {
		json_decref(o);
		json_decref(data);
		json_decref(history);
		json_decref(erased);
		return err;
	}
	if (json_array_size(erased))
		json_object_set(o, "erased", erased);
	json_decref(erased);
	const struct fd_saga_type *t = fd_saga_set_find(types, json_string_value(json_object_get(o, "type")));
	json_int_t cur = json_integer_value(json_object_get(o, "current_step"));
	name_step(types, o);
	json_object_set_new(o, "data", data);
	/*
	 * steps: one entry per declared step (and per compensation that ran), in
	 * the order they first ran; status is the last outcome, attempts the
	 * most runs seen, started/finished the first start and last finish.
	 */
	json_t *steps = json_array();
	size_t i;
	json_t *h;
	json_array_foreach(history, i, h) {
		const char *name = json_string_value(json_object_get(h, "step"));
		const char *kind = json_string_value(json_object_get(h, "kind"));
		bool undo = kind && strcmp(kind, "compensation") == 0;
		json_t *entry = NULL;
		size_t k;
		json_t *s;
		json_array_foreach(steps, k, s)
			if (strcmp(json_string_value(json_object_get(s, "name")), name) == 0 &&
			    json_is_true(json_object_get(s, "compensation")) == undo)
				entry = s;
		if (!entry) {
			entry = json_pack("{s:s, s:b, s:i, s:n, s:O, s:n}", "name", name, "compensation", undo, "attempts",
					  0, "error", "started_at", json_object_get(h, "started_at"), "finished_at");
			json_array_append_new(steps, entry);
		}
		const char *outcome = json_string_value(json_object_get(h, "outcome"));
		json_object_set_new(entry, "status",
				    json_string(strcmp(outcome, "timed_out") == 0 ? "timed_out" : outcome));
		json_int_t a = json_integer_value(json_object_get(h, "attempt"));
		if (a > json_integer_value(json_object_get(entry, "attempts")))
			json_object_set_new(entry, "attempts", json_integer(a));
		json_t *why = json_object_get(h, "error");
		if (json_is_string(why))
			json_object_set(entry, "error", why);
		else if (strcmp(outcome, "succeeded") == 0 || strcmp(outcome, "waiting") == 0)
			json_object_set_new(entry, "error", json_null());
		json_object_set(entry, "finished_at", json_object_get(h, "finished_at"));
	}
	/* steps that have not run yet, so the whole plan is visible */
	for (size_t k = 0; t && k < t->nsteps; k++) {
		bool found = false;
		size_t j;
		json_t *s;
		json_array_foreach(steps, j, s)
			found = found || (strcmp(json_string_value(json_object_get(s, "name")), t->steps[k].name) == 0 &&
					  !json_is_true(json_object_get(s, "compensation")));
		if (!found)
			json_array_append_new(
				steps, json_pack("{s:s, s:b, s:s, s:i, s:n, s:n, s:n}", "name", t->steps[k].name,
						 "compensation", 0, "status", (json_int_t)k == cur ? "pending" : "not_started",
						 "attempts", 0, "error", "started_at", "finished_at"));
	}
	json_object_set_new(o, "steps", steps);
	json_object_set_new(o, "history", history);
	*out = o;
	return FD_OK;
}

enum fd_err fd_saga_find(struct fd_pool *pool, const char *type, const char *key, char id[37])
{
	PGconn *conn;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	const char *p[] = { type, key };
	PGresult *res = fd_saga_sql_once(conn, "SELECT id::text FROM sagas WHERE type = $1 AND correlation_key = $2", 2, p);
	if (!res) {
		fd_pool_release(pool, conn, PQstatus(conn) != CONNECTION_OK);
		return FD_ERR_IO;
	}
	fd_pool_release(pool, conn, false);
	err = PQntuples(res) ? FD_OK : FD_ERR_NOTFOUND;
	if (!err)
		snprintf(id, 37, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	return err;
}

/* Lock the saga, apply an operator action, save.  FD_ERR_CONFLICT when `act` refused. */
static enum fd_err operate(struct fd_pool *pool, const struct fd_saga_set *types, const char *id, bool (*act)(struct fd_saga_state *, const char *),
			   const char *reason, char status[16])
{
	struct fd_uuid u;
	status[0] = '\0';
	if (!fd_uuid_parse(id, &u))
		return FD_ERR_NOTFOUND;
	PGconn *conn;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	if (!fd_saga_exec(conn, "BEGIN")) {
		fd_pool_release(pool, conn, true);
		return FD_ERR_IO;
	}
	const char *p[] = { id };
	PGresult *res = fd_saga_sql_once(conn, "SELECT " FD_SAGA_COLS("") " FROM sagas WHERE id = $1::uuid FOR UPDATE", 1, p);
	struct fd_saga_state st;
	bool have = false;
	if (!res) {
		err = FD_ERR_IO;
	} else if (PQntuples(res) == 0) {
		err = FD_ERR_NOTFOUND;
	} else {
		err = fd_saga_row_parse(types, res, 0, 100, &st, NULL);
		if (!err && (err = fd_saga_row_open(conn, pool, &st)))
			fd_saga_state_release(&st);
		have = err == FD_OK;
		if (err == FD_ERR_NOTFOUND || err == FD_ERR_INVAL)
			err = FD_ERR_IO; /* a type this build does not know, or a row it cannot read: a server fault */
	}
	PQclear(res);
	if (have) {
		if (!act(&st, reason)) {
			err = FD_ERR_CONFLICT;
		} else {
			err = fd_saga_row_save(conn, pool, &st);
			if (!err)
				err = fd_saga_notes_write(conn, &st);
		}
		snprintf(status, 16, "%s", fd_saga_status_name(st.status));
		fd_saga_state_release(&st);
	}
	bool ok = err == FD_OK ? fd_saga_exec(conn, "COMMIT") : fd_saga_exec(conn, "ROLLBACK");
	if (!ok && err == FD_OK)
		err = FD_ERR_IO;
	fd_pool_release(pool, conn, PQstatus(conn) != CONNECTION_OK);
	return err;
}

static bool do_retry(struct fd_saga_state *st, const char *reason)
{
	(void)reason;
	return fd_saga_retry_state(st);
}

enum fd_err fd_saga_retry(struct fd_pool *pool, const struct fd_saga_set *types, const char *id, char status[16])
{
	return operate(pool, types, id, do_retry, NULL, status);
}

enum fd_err fd_saga_abort(struct fd_pool *pool, const struct fd_saga_set *types, const char *id, const char *reason,
			  char status[16])
{
	return operate(pool, types, id, fd_saga_abort_state, reason, status);
}

enum fd_err fd_saga_stats(struct fd_pool *pool, const struct fd_saga_set *types, json_t **out)
{
	*out = NULL;
	PGconn *conn;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	PGresult *res = fd_saga_sql_once(conn,
				    "SELECT type, status, count(*)::text FROM sagas"
				    " WHERE status IN ('running', 'compensating', 'failed') GROUP BY 1, 2",
				    0, NULL);
	PGresult *due = res ? fd_saga_sql_once(conn,
					  "SELECT count(*)::text FROM sagas WHERE due_at < now() - interval '1 second'",
					  0, NULL)
			    : NULL;
	fd_pool_release(pool, conn, !due && PQstatus(conn) != CONNECTION_OK);
	if (!res || !due) {
		PQclear(res);
		return FD_ERR_IO;
	}
	static const char *const live[] = { "running", "compensating", "failed" };
	json_t *rows = json_array();
	for (size_t t = 0; rows && t < types->n; t++)
		for (size_t k = 0; k < 3; k++) {
			long long n = 0;
			for (int i = 0; i < PQntuples(res); i++)
				if (strcmp(PQgetvalue(res, i, 0), types->items[t]->name) == 0 &&
				    strcmp(PQgetvalue(res, i, 1), live[k]) == 0)
					n = strtoll(PQgetvalue(res, i, 2), NULL, 10);
			json_array_append_new(rows, json_pack("{s:s, s:s, s:I}", "type", types->items[t]->name, "status",
							      live[k], "count", (json_int_t)n));
		}
	long long overdue = strtoll(PQgetvalue(due, 0, 0), NULL, 10);
	PQclear(res);
	PQclear(due);
	*out = rows ? json_pack("{s:o, s:I}", "live", rows, "overdue", (json_int_t)overdue) : NULL;
	return *out ? FD_OK : FD_ERR_NOMEM;
}
