/*
 * rows.c - saga rows in and out of PostgreSQL.
 */
#include "rows.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/log.h"
#include "factd/sql.h"
#include "store/personal.h"

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
	st->row_version = strtoll(PQgetvalue(res, i, 14), NULL, 10);
	const char *personal = PQgetvalue(res, i, 13);
	if (*personal) {
		/* sealed values in data: fd_saga_row_open must run before anything reads or saves it */
		st->sealed = json_loads(personal, 0, NULL);
		st->unopened = true;
		if (!json_is_object(st->sealed)) {
			fd_saga_state_release(st);
			return FD_ERR_INVAL;
		}
	}
	fd_saga_state_reset_outputs(st);
	return FD_OK;
}

enum fd_err fd_saga_data_open(PGconn *conn, struct fd_pool *pool, const json_t *sealed, json_t *data, json_t *erased)
{
	const char *subject = json_string_value(json_object_get(sealed, "subject"));
	if (!subject) {
		fd_log(FD_LOG_ERROR, "a saga's personal declaration has no subject");
		return FD_ERR_INTERNAL;
	}
	json_t *subjects = json_pack("[s]", subject);
	json_t *meta = json_pack("{s:O}", FD_PERSONAL_KEY, sealed);
	struct fd_subject_keys *keys = NULL;
	enum fd_err err = subjects && meta ? FD_OK : FD_ERR_NOMEM;
	if (!err)
		err = fd_subject_keys_fetch(conn, fd_pool_keyring(pool), subjects, &keys);
	if (!err)
		err = fd_personal_unseal(keys, meta, data, erased);
	fd_subject_keys_free(keys);
	json_decref(subjects);
	json_decref(meta);
	return err;
}

enum fd_err fd_saga_row_open(PGconn *conn, struct fd_pool *pool, struct fd_saga_state *st)
{
	if (!st->unopened)
		return FD_OK;
	json_t *erased = json_array();
	enum fd_err err = erased ? fd_saga_data_open(conn, pool, st->sealed, st->data, erased) : FD_ERR_NOMEM;
	if (!err) {
		st->unopened = false;
		json_decref(st->erased);
		st->erased = json_array_size(erased) ? json_incref(erased) : NULL;
	} else {
		fd_log_fields(FD_LOG_ERROR, "a saga's personal data cannot be opened",
			      json_pack("{s:s, s:s}", "saga_id", st->id, "error", fd_err_name(err)));
	}
	json_decref(erased);
	return err;
}

/*
 * The data as stored: st's data with the personal values its type declares
 * sealed (a copy; st->data stays open).  *personal: the row's "personal"
 * column, NULL when nothing is sealed.  Both caller-freed.
 */
static enum fd_err stored_data(struct fd_pool *pool, const struct fd_saga_state *st, char **data, char **personal)
{
	*data = *personal = NULL;
	if (st->unopened) {
		fd_log_fields(FD_LOG_ERROR, "a saga's data was about to be saved with its personal values still sealed",
			      json_pack("{s:s}", "saga_id", st->id));
		return FD_ERR_INTERNAL;
	}
	const struct fd_personal_decl *d = st->type->personal;
	bool present = false; /* none of the declared values in the data yet: written as is, no copy, no key */
	for (size_t i = 0; d && d->paths && d->paths[i] && !present; i++)
		present = fd_json_pointer_get(st->data, d->paths[i]) != NULL;
	if (!present) {
		*data = json_dumps(st->data, JSON_COMPACT);
		return *data ? FD_OK : FD_ERR_NOMEM;
	}
	enum fd_err err = FD_OK;
	json_t *copy = json_deep_copy(st->data), *paths = json_array(), *decl = NULL;
	if (!copy || !paths) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	bool any = false; /* a value other than null */
	for (size_t i = 0; d->paths[i]; i++) {
		const json_t *v = fd_json_pointer_get(copy, d->paths[i]);
		if (v) {
			any = any || !json_is_null(v);
			if (json_array_append_new(paths, json_string(d->paths[i]))) {
				err = FD_ERR_NOMEM;
				goto done;
			}
		}
	}
	const char *subject = d->subject ? json_string_value(fd_json_pointer_get(copy, d->subject)) : NULL;
	bool drop = false;
	if (json_array_size(paths) && (!subject || !fd_personal_subject_valid(subject))) {
		if (any)
			fd_log_fields(FD_LOG_WARN, "a saga's personal values have no valid subject id: not kept",
				      json_pack("{s:s, s:s}", "saga_id", st->id, "type", st->type->name));
		drop = true;
	} else if (json_array_size(paths)) {
		decl = json_pack("{s:s, s:O}", "subject", subject, "paths", paths);
		err = decl ? (pool ? fd_personal_seal(pool, decl, copy) : FD_ERR_NOKEY) : FD_ERR_NOMEM;
		if (err == FD_ERR_ERASED) {
			/* nothing of an erased subject is kept; the column still says which values are gone */
			drop = true;
			err = FD_OK;
		} else if (err == FD_ERR_NOKEY) {
			if (any)
				fd_log_fields(FD_LOG_ERROR, "a saga's personal values are not kept: no master key",
					      json_pack("{s:s, s:s}", "saga_id", st->id, "type", st->type->name));
			drop = true;
			err = FD_OK;
			json_decref(decl);
			decl = NULL;
		}
	}
	for (size_t i = 0; !err && drop && i < json_array_size(paths); i++)
		if (!fd_json_pointer_set(copy, json_string_value(json_array_get(paths, i)), json_null()))
			err = FD_ERR_NOMEM;
	if (err)
		goto done;
	*data = json_dumps(copy, JSON_COMPACT);
	*personal = decl ? json_dumps(decl, JSON_COMPACT) : NULL;
	if (!*data || (decl && !*personal))
		err = FD_ERR_NOMEM;
done:
	json_decref(copy);
	json_decref(paths);
	json_decref(decl);
	if (err) {
		free(*data);
		free(*personal);
		*data = *personal = NULL;
	}
	return err;
}

/* Replace each occurrence of needle (of 3 bytes or more) in text by "[personal]", within cap. */
static void redact_one(char *text, size_t cap, const char *needle)
{
	static const char mark[] = "[personal]";
	size_t nl = strlen(needle), ml = sizeof mark - 1;
	if (nl < 3)
		return;
	char *at = text;
	while ((at = strstr(at, needle))) {
		size_t tail = strlen(at + nl);
		size_t used = (size_t)(at - text);
		if (used + ml + tail + 1 > cap)
			tail = cap > used + ml + 1 ? cap - used - ml - 1 : 0;
		if (used + ml + 1 > cap) { /* no room for the mark: cut the text here */
			*at = '\0';
			return;
		}
		memmove(at + ml, at + nl, tail);
		at[ml + tail] = '\0';
		memcpy(at, mark, ml);
		at += ml;
	}
}

/* Every string within v (the value itself, members, elements). */
static void redact_value(char *text, size_t cap, const json_t *v, int depth)
{
	if (depth > 32)
		return;
	if (json_is_string(v)) {
		redact_one(text, cap, json_string_value(v));
	} else if (json_is_object(v)) {
		const char *k;
		json_t *m;
		json_object_foreach((json_t *)v, k, m)
			redact_value(text, cap, m, depth + 1);
	} else if (json_is_array(v)) {
		size_t i;
		json_t *m;
		json_array_foreach(v, i, m)
			redact_value(text, cap, m, depth + 1);
	}
}

void fd_saga_redact(const struct fd_saga_state *st, char *text, size_t cap)
{
	const struct fd_personal_decl *d = st->type ? st->type->personal : NULL;
	if (!d || !d->paths || !text || !*text || st->unopened)
		return;
	for (size_t i = 0; d->paths[i]; i++)
		redact_value(text, cap, fd_json_pointer_get(st->data, d->paths[i]), 0);
}

void fd_saga_redact_state(struct fd_saga_state *st)
{
	if (!st->type || !st->type->personal)
		return;
	fd_saga_redact(st, st->error, sizeof st->error);
	size_t i;
	json_t *n;
	json_array_foreach(st->notes, i, n) {
		const char *e = json_string_value(json_object_get(n, "error"));
		if (!e)
			continue;
		size_t cap = strlen(e) + 1 > 1024 ? strlen(e) + 1 : 1024;
		char *buf = malloc(cap);
		if (!buf)
			continue;
		snprintf(buf, cap, "%s", e);
		fd_saga_redact(st, buf, cap);
		json_object_set_new(n, "error", json_string(buf));
		free(buf);
	}
}

/* A state's columns as statement parameters.  False on NOMEM; release with row_text_free either way. */
struct row_text {
	char step[16], attempts[16];
	char due[24];  /* "keep", "none" or milliseconds from now */
	char *completed, *seen, *data, *personal;
};

static enum fd_err row_text(struct fd_pool *pool, const struct fd_saga_state *st, struct row_text *t)
{
	memset(t, 0, sizeof *t);
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
	if (!t->completed || !t->seen)
		return FD_ERR_NOMEM;
	return stored_data(pool, st, &t->data, &t->personal);
}

static void row_text_free(struct row_text *t)
{
	free(t->completed);
	free(t->seen);
	free(t->data);
	free(t->personal);
}

/* The row's columns from a state: $2 to $12 of the statements below ($1 is the id). */
#define ROW_SET                                                                                              \
	"status = $2, current_step = $3::int, phase = $4, completed_steps = $5::jsonb, attempts = $6::int,"   \
	" due_at = CASE $7 WHEN 'keep' THEN due_at WHEN 'none' THEN NULL"                                      \
	" ELSE now() + $7::bigint * interval '1 millisecond' END,"                                             \
	" lease_token = CASE WHEN $8::boolean THEN NULL ELSE lease_token END,"                                 \
	" seen = $9::jsonb, data = $10::jsonb, error = $11, personal = $12::jsonb, version = version + 1,"    \
	" updated_at = now()"

static void row_params(const struct fd_saga_state *st, const struct row_text *t, const char **p)
{
	const char *v[] = { st->id, fd_saga_status_name(st->status), t->step, fd_saga_phase_name(st->phase),
			    t->completed, t->attempts, t->due, st->clear_lease ? "t" : "f", t->seen, t->data,
			    st->error[0] ? st->error : NULL, t->personal };
	memcpy(p, v, sizeof v);
}

/* Write st's row; only if its version is still st->row_version when `checked`. */
static enum fd_err save(PGconn *conn, struct fd_pool *pool, struct fd_saga_state *st, bool checked)
{
	struct row_text t;
	enum fd_err err = row_text(pool, st, &t);
	if (!err) {
		char version[24];
		snprintf(version, sizeof version, "%lld", (long long)st->row_version);
		const char *p[13];
		row_params(st, &t, p);
		p[12] = checked ? version : NULL;
		PGresult *res = fd_saga_sql(conn,
					    "UPDATE sagas SET " ROW_SET " WHERE id = $1::uuid"
					    " AND ($13::bigint IS NULL OR version = $13::bigint) RETURNING version",
					    13, p);
		err = !res ? FD_ERR_IO : PQntuples(res) != 1 && checked ? FD_ERR_CONFLICT : FD_OK;
		if (!err && PQntuples(res) == 1)
			st->row_version = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		PQclear(res);
	}
	row_text_free(&t);
	return err;
}

enum fd_err fd_saga_row_save(PGconn *conn, struct fd_pool *pool, struct fd_saga_state *st)
{
	return save(conn, pool, st, false);
}

enum fd_err fd_saga_row_save_if(PGconn *conn, struct fd_pool *pool, struct fd_saga_state *st)
{
	return save(conn, pool, st, true);
}

enum fd_err fd_saga_row_finish(PGconn *conn, struct fd_pool *pool, struct fd_saga_state *st,
			       const struct fd_saga_finish *f, char next_seq[16])
{
	next_seq[0] = '\0';
	struct row_text t;
	enum fd_err err = row_text(pool, st, &t);
	if (!err) {
		char version[24], attempt[16];
		snprintf(version, sizeof version, "%lld", (long long)st->row_version);
		snprintf(attempt, sizeof attempt, "%u", f->next_attempt);
		const char *p[22];
		row_params(st, &t, p);
		p[12] = f->token;
		p[13] = version;
		p[14] = f->outcome;
		p[15] = f->error && *f->error ? f->error : NULL;
		p[16] = f->seq;
		p[17] = f->next_step;
		p[18] = f->next_kind;
		p[19] = attempt;
		p[20] = f->worker;
		/*
		 * One statement, so one round trip and its own transaction: the
		 * row (only while this claim holds it and nothing else wrote it
		 * since it was read), the finished run's history row, and the next
		 * run's when the claim goes on with it.  The claim holds the saga,
		 * so its run is the newest history row and the next one follows it.
		 */
		PGresult *res = fd_saga_sql(
			conn,
			"WITH s AS (UPDATE sagas SET " ROW_SET " WHERE id = $1::uuid AND lease_token = $13::uuid"
			" AND version = $14::bigint RETURNING version),"
			" h AS (UPDATE saga_steps SET outcome = $15, error = $16, finished_at = now()"
			" WHERE saga_id = $1::uuid AND seq = $17::int AND EXISTS (SELECT 1 FROM s)),"
			" n AS (INSERT INTO saga_steps (saga_id, seq, step, kind, attempt, worker)"
			" SELECT $1::uuid, $17::int + 1, $18, $19, $20::int, $21 FROM s WHERE $18::text IS NOT NULL"
			" RETURNING seq)"
			" SELECT s.version, (SELECT n.seq::text FROM n) FROM s",
			21, p);
		err = !res ? FD_ERR_IO : PQntuples(res) != 1 ? FD_ERR_CONFLICT : FD_OK;
		if (!err) {
			st->row_version = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
			if (!PQgetisnull(res, 0, 1))
				snprintf(next_seq, 16, "%s", PQgetvalue(res, 0, 1));
		}
		PQclear(res);
	}
	row_text_free(&t);
	return err;
}

enum fd_err fd_saga_row_insert(PGconn *conn, struct fd_pool *pool, const struct fd_saga_state *st, const char *key)
{
	struct row_text t;
	enum fd_err err = row_text(pool, st, &t);
	if (!err) {
		char *notes = st->notes ? json_dumps(st->notes, JSON_COMPACT) : strdup("[]");
		const char *p[] = { st->id, st->type->name, key, fd_saga_status_name(st->status), t.step,
				    fd_saga_phase_name(st->phase), t.completed, t.due, t.seen, t.data,
				    st->error[0] ? st->error : NULL, t.attempts, t.personal, notes ? notes : "[]" };
		/*
		 * Not when the retention job removed an ended saga of this type and
		 * key: the business process ran already (docs/design.md, "Saga
		 * cleanup").  The intake runs this holding its checkpoint row, which
		 * the removal takes first too, so the statement sees every tombstone
		 * committed before its batch began.
		 */
		PGresult *res = !notes ? NULL : fd_saga_sql(
			conn,
			"WITH t AS (SELECT 1 FROM saga_tombstones WHERE type = $2 AND correlation_key = $3),"
			" i AS (INSERT INTO sagas (id, type, correlation_key, status, current_step, phase, completed_steps,"
			" due_at, seen, data, error, attempts, created_at, personal)"
			" SELECT $1::uuid, $2, $3, $4, $5::int, $6, $7::jsonb,"
			" CASE WHEN $8 IN ('keep', 'none') THEN NULL ELSE now() + $8::bigint * interval '1 millisecond' END,"
			" $9::jsonb, $10::jsonb, $11, $12::int, clock_timestamp(), $13::jsonb WHERE NOT EXISTS (SELECT 1 FROM t)"
			" ON CONFLICT (id) DO NOTHING RETURNING id),"
			" n AS (INSERT INTO saga_steps (saga_id, seq, step, kind, attempt, outcome, error, started_at, finished_at)"
			" SELECT i.id, x.o, x.n->>'step', x.n->>'kind', 1, x.n->>'outcome', x.n->>'error', now(), now()"
			" FROM i CROSS JOIN jsonb_array_elements($14::jsonb) WITH ORDINALITY AS x(n, o))"
			" SELECT EXISTS (SELECT 1 FROM t)",
			14, p);
		err = !res ? FD_ERR_IO : strcmp(PQgetvalue(res, 0, 0), "t") == 0 ? FD_ERR_GONE : FD_OK;
		PQclear(res);
		free(notes);
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
