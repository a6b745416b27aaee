/*
 * sql.c - named statements prepared once per connection on first use, and
 * one-off SQL (the policy is in sql.h).
 *
 * The names a connection has prepared are a small open-addressing set kept
 * as libpq instance data of an event procedure registered on the
 * connection: libpq frees it with the connection (PGEVT_CONNDESTROY) and
 * this module empties it when the connection is reset (PGEVT_CONNRESET), so
 * the bookkeeping can never outlive the session it describes.
 *
 * Threading: a connection and its set are used by one thread at a time.
 */
#include "factd/sql.h"

#include <libpq-events.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/pool.h"

struct prepared_set {
	bool unnamed; /* fd_sql_set_unnamed: nothing is prepared by name on this connection */
	size_t cap; /* a power of two; 0 before the first name */
	size_t n;
	char **names;
};

static uint64_t fnv1a(const char *s)
{
	uint64_t h = UINT64_C(14695981039346656037);
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= UINT64_C(1099511628211);
	}
	return h;
}

static void set_clear(struct prepared_set *s)
{
	for (size_t i = 0; i < s->cap; i++)
		free(s->names[i]);
	free(s->names);
	s->names = NULL;
	s->cap = s->n = 0;
}

static bool set_has(const struct prepared_set *s, const char *name)
{
	if (!s || !s->cap)
		return false;
	for (size_t i = fnv1a(name) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (!s->names[i])
			return false;
		if (strcmp(s->names[i], name) == 0)
			return true;
	}
}

static void set_put(char **names, size_t cap, char *name)
{
	size_t i = fnv1a(name) & (cap - 1);
	while (names[i])
		i = (i + 1) & (cap - 1);
	names[i] = name;
}

/* Add a name (not present yet).  False on NOMEM: the statement is then prepared again next time. */
static bool set_add(struct prepared_set *s, const char *name)
{
	if (2 * (s->n + 1) > s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 32;
		char **names = calloc(cap, sizeof *names);
		if (!names)
			return false;
		for (size_t i = 0; i < s->cap; i++)
			if (s->names[i])
				set_put(names, cap, s->names[i]);
		free(s->names);
		s->names = names;
		s->cap = cap;
	}
	char *copy = strdup(name);
	if (!copy)
		return false;
	set_put(s->names, s->cap, copy);
	s->n++;
	return true;
}

static int on_event(PGEventId id, void *info, void *pass)
{
	(void)pass;
	if (id == PGEVT_CONNRESET) {
		PGconn *conn = ((PGEventConnReset *)info)->conn;
		struct prepared_set *s = PQinstanceData(conn, on_event);
		if (s)
			set_clear(s);
	} else if (id == PGEVT_CONNDESTROY) {
		PGconn *conn = ((PGEventConnDestroy *)info)->conn;
		struct prepared_set *s = PQinstanceData(conn, on_event);
		if (s) {
			set_clear(s);
			free(s);
		}
	}
	return 1;
}

/* The connection's set, made on first use; NULL on NOMEM (then nothing is remembered). */
static struct prepared_set *set_of(PGconn *conn)
{
	struct prepared_set *s = PQinstanceData(conn, on_event);
	if (s)
		return s;
	/* Registering twice fails harmlessly: only the data was missing then. */
	(void)PQregisterEventProc(conn, on_event, "factd prepared statements", NULL);
	s = calloc(1, sizeof *s);
	if (s && !PQsetInstanceData(conn, on_event, s)) {
		free(s);
		s = NULL;
	}
	return s;
}

bool fd_sql_set_unnamed(PGconn *conn)
{
	struct prepared_set *s = set_of(conn);
	if (s)
		s->unnamed = true;
	return s != NULL;
}

bool fd_sql_unnamed(const PGconn *conn)
{
	const struct prepared_set *s = PQinstanceData(conn, on_event);
	return s && s->unnamed;
}

bool fd_sql_is_prepared(const PGconn *conn, const char *name)
{
	return set_has(PQinstanceData(conn, on_event), name);
}

static enum fd_err outcome(PGconn *conn, PGresult *res, PGresult **out)
{
	ExecStatusType st = PQresultStatus(res);
	enum fd_err err = res && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? FD_OK : fd_pg_classify(conn, res);
	if (out)
		*out = res;
	else
		PQclear(res);
	return err;
}

enum fd_err fd_sql_prepare(PGconn *conn, const struct fd_stmt *st, PGresult **out)
{
	if (out)
		*out = NULL;
	if (!st->sql)
		return FD_ERR_INTERNAL;
	if (fd_sql_unnamed(conn))
		return FD_OK; /* runs unnamed, parsed with every execution */
	if (fd_sql_is_prepared(conn, st->name))
		return FD_OK;
	if (PQpipelineStatus(conn) != PQ_PIPELINE_OFF)
		return FD_ERR_INTERNAL;
	PGresult *res = PQprepare(conn, st->name, st->sql, st->nparams, NULL);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		return outcome(conn, res, out);
	PQclear(res);
	struct prepared_set *s = set_of(conn);
	if (s)
		(void)set_add(s, st->name);
	return FD_OK;
}

enum fd_err fd_sql_exec(PGconn *conn, const struct fd_stmt *st, const char *const *params, PGresult **out)
{
	if (out)
		*out = NULL;
	bool pipeline = PQpipelineStatus(conn) != PQ_PIPELINE_OFF;
	if (fd_sql_unnamed(conn)) {
		/* Parse, bind and execute in one message sequence: the unnamed statement lives only until the
		 * next Sync, so a transaction pooler handing the next one to another server loses nothing. */
		if (!st->sql)
			return FD_ERR_INTERNAL;
		if (pipeline)
			return PQsendQueryParams(conn, st->sql, st->nparams, NULL, params, NULL, NULL, st->binary)
				       ? FD_OK
				       : fd_pg_classify(conn, NULL);
		return outcome(conn, PQexecParams(conn, st->sql, st->nparams, NULL, params, NULL, NULL, st->binary),
			       out);
	}
	if (st->sql && !fd_sql_is_prepared(conn, st->name)) {
		if (pipeline)
			return FD_ERR_INTERNAL; /* prepare it before the pipeline */
		enum fd_err err = fd_sql_prepare(conn, st, out);
		if (err)
			return err;
	}
	if (pipeline)
		return PQsendQueryPrepared(conn, st->name, st->nparams, params, NULL, NULL, st->binary)
			       ? FD_OK
			       : fd_pg_classify(conn, NULL);
	return outcome(conn, PQexecPrepared(conn, st->name, st->nparams, params, NULL, NULL, st->binary), out);
}

enum fd_err fd_sql_once(PGconn *conn, const char *sql, int n, const char *const *params, PGresult **out)
{
	if (out)
		*out = NULL;
	PGresult *res = n > 0 ? PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0) : PQexec(conn, sql);
	return outcome(conn, res, out);
}

void fd_sql_text_name(const char *sql, char name[FD_SQL_NAME_MAX])
{
	snprintf(name, FD_SQL_NAME_MAX, "fd_%016llx", (unsigned long long)fnv1a(sql));
}
