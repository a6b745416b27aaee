/*
 * catalog.c - streams, categories and the feed head for operators (catalog.h).
 *
 * Names compare in byte order (COLLATE "C"), whatever the database's
 * collation, so that ranges are prefixes and match streams_name_c_idx.  A
 * statement is put together from fixed fragments (the filters present) and
 * planned with its parameters, so each shape gets an index range scan.
 */
#include "store/catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/events.h"

#define NAME "stream_id COLLATE \"C\""
#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* Run one statement with text parameters; FD_OK with *out (caller clears) or a classified error. */
static enum fd_err query(struct fd_pool *pool, const char *sql, int n, const char *const *params, PGresult **out)
{
	PGconn *conn = NULL;
	*out = NULL;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	PGresult *res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK) {
		*out = res;
	} else {
		err = fd_pg_classify(conn, res);
		PQclear(res);
	}
	fd_pool_release(pool, conn, err && fd_pg_conn_broken(conn, err));
	return err;
}

/* The first name after every name that starts with prefix (stream names are ASCII below 0x7f). */
static void upper_bound(const char *prefix, char *out, size_t len)
{
	snprintf(out, len, "%s", prefix);
	size_t n = strlen(out);
	if (n)
		out[n - 1]++;
}

enum fd_err fd_catalog_streams(struct fd_pool *pool, const struct fd_stream_query *q, json_t **out)
{
	char sql[1024], cat_hi[FD_STREAM_MAX + 2], pre_hi[FD_STREAM_MAX + 2], limit[16];
	const char *params[6];
	int n = 0;
	size_t o = (size_t)snprintf(sql, sizeof sql,
				    "SELECT stream_id, category, version::text, " TS("updated_at") ","
				    " CASE WHEN tombstoned THEN 'tombstoned' WHEN deleted THEN 'deleted' ELSE 'live' END"
				    " FROM streams WHERE %s",
				    q->deleted ? "true" : "NOT deleted AND NOT tombstoned");
	*out = NULL;
	if (q->category) {
		/* a category's streams are the names in [category, category || '.') */
		snprintf(cat_hi, sizeof cat_hi, "%s.", q->category);
		params[n] = q->category;
		params[n + 1] = cat_hi;
		o += (size_t)snprintf(sql + o, sizeof sql - o,
				      " AND " NAME " >= $%d::text AND " NAME " < $%d::text AND category = $%d::text", n + 1,
				      n + 2, n + 1);
		n += 2;
	}
	if (q->prefix) {
		upper_bound(q->prefix, pre_hi, sizeof pre_hi);
		params[n] = q->prefix;
		params[n + 1] = pre_hi;
		o += (size_t)snprintf(sql + o, sizeof sql - o, " AND " NAME " >= $%d::text AND " NAME " < $%d::text",
				      n + 1, n + 2);
		n += 2;
	}
	if (q->after) {
		params[n++] = q->after;
		o += (size_t)snprintf(sql + o, sizeof sql - o, " AND " NAME " > $%d::text", n);
	}
	snprintf(limit, sizeof limit, "%u", q->limit + 1);
	params[n++] = limit;
	snprintf(sql + o, sizeof sql - o, " ORDER BY " NAME " LIMIT $%d::int", n);

	PGresult *res = NULL;
	enum fd_err err = query(pool, sql, n, params, &res);
	if (err)
		return err;
	int rows = PQntuples(res);
	int shown = rows > (int)q->limit ? (int)q->limit : rows;
	json_t *list = json_array();
	for (int i = 0; list && i < shown; i++) {
		json_t *row = json_pack("{s:s, s:s, s:I, s:s}", "stream", PQgetvalue(res, i, 0), "category",
					PQgetvalue(res, i, 1), "version", (json_int_t)strtoll(PQgetvalue(res, i, 2), NULL, 10),
					"updated_at", PQgetvalue(res, i, 3));
		if (row && q->deleted && json_object_set_new(row, "state", json_string(PQgetvalue(res, i, 4)))) {
			json_decref(row);
			row = NULL;
		}
		if (!row || json_array_append_new(list, row)) {
			json_decref(list);
			list = NULL;
		}
	}
	json_t *next = rows > (int)q->limit ? json_string(PQgetvalue(res, shown - 1, 0)) : json_null();
	PQclear(res);
	*out = list && next ? json_pack("{s:o, s:o}", "streams", list, "next", next) : NULL;
	if (!*out) {
		json_decref(list);
		json_decref(next);
		return FD_ERR_NOMEM;
	}
	return FD_OK;
}

/*
 * A skip scan finds the page's categories: each category's first stream is
 * the first name at or after the previous category || '.', one index probe
 * each.  Their streams are then one range of the index, [first category,
 * last category || '.'), counted in one pass.
 */
static const char categories_sql[] =
	"WITH RECURSIVE c(cat) AS ("
	"  (SELECT category FROM streams WHERE " NAME " >= $1::text ORDER BY " NAME " LIMIT 1)"
	"  UNION ALL"
	"  SELECT (SELECT s.category FROM streams s WHERE s." NAME " >= (c.cat || '.') COLLATE \"C\""
	"          ORDER BY s." NAME " LIMIT 1)"
	"  FROM c WHERE c.cat IS NOT NULL),"
	" page AS MATERIALIZED (SELECT cat FROM c WHERE cat IS NOT NULL LIMIT $2::int)"
	" SELECT s.category, count(*) FILTER (WHERE NOT s.deleted AND NOT s.tombstoned)::text,"
	"  coalesce(sum(s.version) FILTER (WHERE NOT s.deleted AND NOT s.tombstoned), 0)::text FROM streams s"
	" WHERE s." NAME " >= (SELECT min(cat COLLATE \"C\") FROM page)"
	"   AND s." NAME " < (SELECT max(cat COLLATE \"C\") || '.' FROM page) COLLATE \"C\""
	" GROUP BY s.category ORDER BY s.category COLLATE \"C\"";

enum fd_err fd_catalog_categories(struct fd_pool *pool, const char *after, unsigned limit, json_t **out)
{
	char from[FD_STREAM_MAX + 2], lim[16];
	/* the page after category X starts at the first name past X's range */
	snprintf(from, sizeof from, "%s%s", after ? after : "", after ? "." : "");
	snprintf(lim, sizeof lim, "%u", limit + 1);
	const char *params[] = { from, lim };
	PGresult *res = NULL;
	*out = NULL;
	enum fd_err err = query(pool, categories_sql, 2, params, &res);
	if (err)
		return err;
	int rows = PQntuples(res);
	int shown = rows > (int)limit ? (int)limit : rows;
	json_t *list = json_array();
	for (int i = 0; list && i < shown; i++) {
		if (strcmp(PQgetvalue(res, i, 1), "0") == 0)
			continue; /* every stream of it deleted: not listed; the keyset still moves past it */
		json_t *row = json_pack("{s:s, s:I, s:I}", "category", PQgetvalue(res, i, 0), "streams",
					(json_int_t)strtoll(PQgetvalue(res, i, 1), NULL, 10), "events",
					(json_int_t)strtoll(PQgetvalue(res, i, 2), NULL, 10));
		if (!row || json_array_append_new(list, row)) {
			json_decref(list);
			list = NULL;
		}
	}
	json_t *next = rows > (int)limit ? json_string(PQgetvalue(res, shown - 1, 0)) : json_null();
	PQclear(res);
	*out = list && next ? json_pack("{s:o, s:o}", "categories", list, "next", next) : NULL;
	if (!*out) {
		json_decref(list);
		json_decref(next);
		return FD_ERR_NOMEM;
	}
	return FD_OK;
}

enum fd_err fd_catalog_head(struct fd_pool *pool, char *out, size_t len)
{
	/* as the feed sees it: only transactions older than every one still running */
	static const char sql[] =
		"SELECT coalesce((SELECT tx_id::text || '-' || seq::text FROM events"
		" WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY tx_id DESC, seq DESC LIMIT 1), '0')";
	PGresult *res = NULL;
	enum fd_err err = query(pool, sql, 0, NULL, &res);
	if (err)
		return err;
	snprintf(out, len, "%s", PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "0");
	PQclear(res);
	return FD_OK;
}
