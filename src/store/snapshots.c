/*
 * snapshots.c - what the command bus and the point-in-time reads need from
 * the store: a stream loaded from its newest usable snapshot plus the events
 * after it, snapshot upserts, the version of a stream as of a moment, and
 * single stored events by id or by version.
 *
 * Each call is one round trip to a statement of the store's statement table
 * (the SQL and its reasoning are in events.c, the ids in internal.h), run
 * through fd_store_run with the store's retry policy.  Results come back as
 * text built by PostgreSQL and are handed over without parsing.
 *
 * Snapshot writes are counted in the pool's metrics registry.
 *
 * Threading: thread-safe; each call borrows one pool connection.
 */
#include "store/snapshots.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/log.h"
#include "factd/metrics.h"
#include "internal.h"

/*
 * The earliest moment a PostgreSQL timestamptz can hold (4714-11-24 00:00:00
 * BC, Julian day 0), in microseconds since the Unix epoch.  Nothing can be
 * recorded before it, so earlier moments are read as this one.
 */
static const int64_t pg_min_unix_us = -210866803200000000LL;

/* A copy of a text column; NULL stays NULL.  False on NOMEM. */
static bool dup_col(const PGresult *res, int col, char **out)
{
	*out = NULL;
	if (PQgetisnull(res, 0, col))
		return true;
	*out = strdup(PQgetvalue(res, 0, col));
	return *out != NULL;
}

enum fd_err fd_store_load_stream(struct fd_pool *pool, const char *stream, int schema, int64_t max_version,
				 struct fd_stream_load *out)
{
	enum fd_err err = FD_OK;
	PGresult *res = NULL;
	char schema_s[16], max_s[24];
	const char *params[3] = { stream, schema_s, max_s };

	memset(out, 0, sizeof *out);
	if (!fd_stream_name_valid(stream) || max_version < 0) {
		err = FD_ERR_INVAL;
		goto done;
	}
	snprintf(schema_s, sizeof schema_s, "%d", schema < 0 ? -1 : schema);
	snprintf(max_s, sizeof max_s, "%" PRId64, max_version);
	if ((err = fd_store_run(pool, ST_LOAD_STREAM, params, -1, &res)))
		goto done;
	if (PQntuples(res) == 0) {
		/* No stream: nothing to load, which is not an error here. */
		if (!(out->events_json = strdup("[]")))
			err = FD_ERR_NOMEM;
		goto done;
	}
	if (PQntuples(res) != 1 || PQnfields(res) != 8 || PQgetisnull(res, 0, 4)) {
		fd_log(FD_LOG_ERROR, "fd_store_load_stream: unexpected result shape");
		err = FD_ERR_INTERNAL;
		goto done;
	}
	if (strcmp(PQgetvalue(res, 0, 7), "t") == 0) {
		err = FD_ERR_GONE;
		goto done;
	}
	if (strcmp(PQgetvalue(res, 0, 6), "t") == 0) {
		err = FD_ERR_DELETED;
		goto done;
	}
	out->life_start = fd_store_int(res, 0, 5);
	out->stream_version = fd_store_int(res, 0, 0);
	out->snapshot_version = fd_store_int(res, 0, 1);
	out->count = (size_t)fd_store_int(res, 0, 3);
	if (!dup_col(res, 2, &out->snapshot_json) || !dup_col(res, 4, &out->events_json))
		err = FD_ERR_NOMEM;
done:
	if (err)
		fd_stream_load_release(out);
	PQclear(res);
	return err;
}

void fd_stream_load_release(struct fd_stream_load *l)
{
	if (!l)
		return;
	free(l->snapshot_json);
	free(l->events_json);
	memset(l, 0, sizeof *l);
}

enum fd_err fd_store_version_at(struct fd_pool *pool, const char *stream, int64_t unix_us, int64_t *version)
{
	enum fd_err err = FD_OK;
	PGresult *res = NULL;
	char at[24];
	const char *params[2] = { stream, at };

	*version = 0;
	if (!fd_stream_name_valid(stream)) {
		err = FD_ERR_INVAL;
		goto done;
	}
	snprintf(at, sizeof at, "%" PRId64, unix_us < pg_min_unix_us ? pg_min_unix_us : unix_us);
	if ((err = fd_store_run(pool, ST_VERSION_AT, params, -1, &res)))
		goto done;
	if (PQntuples(res) != 1 || PQnfields(res) != 1) {
		fd_log(FD_LOG_ERROR, "fd_store_version_at: unexpected result shape");
		err = FD_ERR_INTERNAL;
		goto done;
	}
	*version = fd_store_int(res, 0, 0);
done:
	PQclear(res);
	return err;
}

enum fd_err fd_store_save_snapshot(struct fd_pool *pool, const char *stream, int64_t version, int schema,
				   const char *state_json)
{
	enum fd_err err = FD_OK;
	PGresult *res = NULL;
	char version_s[24], schema_s[16];
	const char *params[4] = { stream, version_s, schema_s, state_json };

	if (!fd_stream_name_valid(stream) || version < 1 || schema < 0 || !state_json) {
		err = FD_ERR_INVAL;
		goto done;
	}
	snprintf(version_s, sizeof version_s, "%" PRId64, version);
	snprintf(schema_s, sizeof schema_s, "%d", schema);
	/* Invalid JSON, or JSON that is not an object, comes back as FD_ERR_INVAL. */
	if ((err = fd_store_run(pool, ST_SAVE_SNAPSHOT, params, -1, &res)))
		goto done;
	if (PQntuples(res) != 1 || PQnfields(res) != 2) {
		fd_log(FD_LOG_ERROR, "fd_store_save_snapshot: unexpected result shape");
		err = FD_ERR_INTERNAL;
		goto done;
	}
	if (PQgetisnull(res, 0, 0))
		err = FD_ERR_NOTFOUND;      /* no such stream */
	else if (fd_store_int(res, 0, 1) == -1)
		err = FD_OK;                /* a stream whose subject was erased keeps no snapshots */
	else if (fd_store_int(res, 0, 1) != 1)
		err = FD_ERR_INVAL;         /* the stream has not reached `version` */
	else
		fd_metrics_snapshot_written(fd_pool_metrics(pool));
done:
	PQclear(res);
	return err;
}

/* Fill *out from a row of STORED_EVENT_COLS; FD_ERR_NOTFOUND for no row. */
static enum fd_err stored_event_from(const PGresult *res, struct fd_stored_event *out)
{
	if (PQntuples(res) == 0)
		return FD_ERR_NOTFOUND;
	if (PQntuples(res) != 1 || PQnfields(res) != 4 || PQgetisnull(res, 0, 0) || PQgetisnull(res, 0, 2)) {
		fd_log(FD_LOG_ERROR, "stored event lookup: unexpected result shape");
		return FD_ERR_INTERNAL;
	}
	const char *stream = PQgetvalue(res, 0, 0);
	if (strlen(stream) > FD_STREAM_MAX) {
		fd_log(FD_LOG_ERROR, "stored event lookup: stream name longer than %d bytes", FD_STREAM_MAX);
		return FD_ERR_INTERNAL;
	}
	strcpy(out->stream, stream);
	out->version = fd_store_int(res, 0, 1);
	if (!fd_cursor_parse(PQgetvalue(res, 0, 2), &out->position)) {
		fd_log(FD_LOG_ERROR, "stored event lookup: bad position \"%s\"", PQgetvalue(res, 0, 2));
		return FD_ERR_INTERNAL;
	}
	return dup_col(res, 3, &out->metadata_json) ? FD_OK : FD_ERR_NOMEM;
}

enum fd_err fd_store_find_event(struct fd_pool *pool, const struct fd_uuid *id, struct fd_stored_event *out)
{
	enum fd_err err = FD_OK;
	PGresult *res = NULL;
	char id_s[FD_UUID_STRLEN + 1];
	const char *params[1] = { id_s };

	memset(out, 0, sizeof *out);
	if (!id) {
		err = FD_ERR_INVAL;
		goto done;
	}
	fd_uuid_format(id, id_s);
	if ((err = fd_store_run(pool, ST_FIND_EVENT, params, -1, &res)))
		goto done;
	err = stored_event_from(res, out);
done:
	if (err)
		fd_stored_event_release(out);
	PQclear(res);
	return err;
}

enum fd_err fd_store_event_at(struct fd_pool *pool, const char *stream, int64_t version,
			      struct fd_stored_event *out)
{
	enum fd_err err = FD_OK;
	PGresult *res = NULL;
	char version_s[24];
	const char *params[2] = { stream, version_s };

	memset(out, 0, sizeof *out);
	if (!fd_stream_name_valid(stream) || version < 1) {
		err = FD_ERR_INVAL;
		goto done;
	}
	snprintf(version_s, sizeof version_s, "%" PRId64, version);
	if ((err = fd_store_run(pool, ST_EVENT_AT, params, -1, &res)))
		goto done;
	err = stored_event_from(res, out);
done:
	if (err)
		fd_stored_event_release(out);
	PQclear(res);
	return err;
}

void fd_stored_event_release(struct fd_stored_event *e)
{
	if (!e)
		return;
	free(e->metadata_json);
	memset(e, 0, sizeof *e);
}

enum fd_err fd_store_installation_secret(struct fd_pool *pool, char *out, size_t len)
{
	PGconn *conn = NULL;
	if (len)
		out[0] = '\0';
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	/* Not a prepared statement: every pool connection prepares those, and a
	 * database one migration behind must still serve everything else. */
	PGresult *res = PQexec(conn, "SELECT secret FROM installation_secret");
	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
		size_t n = (size_t)PQgetlength(res, 0, 0);
		if (n >= 32 && n < len)
			memcpy(out, PQgetvalue(res, 0, 0), n + 1);
		else
			err = FD_ERR_INTERNAL;
	} else if (PQresultStatus(res) == PGRES_TUPLES_OK) {
		err = FD_ERR_INTERNAL; /* the migration inserts the one row */
	} else {
		err = fd_pg_classify(conn, res);
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (state && strcmp(state, "42P01") == 0)
			err = FD_ERR_UNAVAILABLE; /* not migrated yet */
		fd_log_fields(FD_LOG_WARN, "cannot read the installation secret",
			      json_pack("{s:s?, s:s}", "sqlstate", state, "error", PQresultErrorMessage(res)));
	}
	PQclear(res);
	fd_pool_release(pool, conn, fd_pg_conn_broken(conn, err));
	return err;
}
