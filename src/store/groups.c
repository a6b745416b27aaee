/*
 * groups.c - consumer groups over the SQL functions of
 * migrations/0010_consumer_groups_webhooks.sql (groups.h).
 *
 * Events go out rendered by the store's own renderer (render.c), the bytes
 * GET /events answers.  Serialization failures and deadlocks are retried; a
 * lost connection is not (a pull that may have committed leaves leases that
 * run out and are delivered again; a settle may be sent again by the
 * consumer).
 *
 * Threading: as groups.h.
 */
#include "store/groups.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/buf.h"
#include "factd/sql.h"
#include "store/internal.h"
#include "store/personal.h"

enum { G_PUT, G_DELETE, G_LIST, G_PULL, G_SETTLE, G_PARKED, G_EXISTS, G_REPLAY, G_COUNT };

#define FEED_HEAD                                                                                             \
	"(SELECT e.tx_id, e.seq FROM events e WHERE e.tx_id < pg_snapshot_xmin(pg_current_snapshot())"          \
	" ORDER BY e.tx_id DESC, e.seq DESC LIMIT 1)"

static const struct fd_stmt group_stmts[G_COUNT] = {
	/* $8/$9: the start position (tx, seq) when start is one */
	[G_PUT] = { "fd_group_put",
		    "WITH w AS (SELECT CASE $4 WHEN 'beginning' THEN '0'::xid8 WHEN 'end' THEN coalesce(h.tx_id, '0'::xid8)"
		    "   ELSE $8::xid8 END AS tx_id,"
		    "   CASE $4 WHEN 'beginning' THEN 0 WHEN 'end' THEN coalesce(h.seq, 0) ELSE $9::bigint END AS seq"
		    "   FROM (SELECT 1) one LEFT JOIN LATERAL " FEED_HEAD " h ON true),"
		    " g AS (INSERT INTO consumer_groups AS c (name, categories, types, start, ack_timeout_ms,"
		    "   max_deliveries, ordering, tx_id, seq)"
		    "   SELECT $1, $2::text[], $3::text[], $4, $5::int, $6::int, $7, w.tx_id, w.seq FROM w"
		    "   ON CONFLICT (name) DO UPDATE SET categories = EXCLUDED.categories, types = EXCLUDED.types,"
		    "   ack_timeout_ms = EXCLUDED.ack_timeout_ms, max_deliveries = EXCLUDED.max_deliveries,"
		    "   ordering = EXCLUDED.ordering, updated_at = now() WHERE c.start = EXCLUDED.start"
		    "   RETURNING c.name, (c.xmax = 0) AS created),"
		    " s AS (INSERT INTO consumer_group_stats (group_name) SELECT g.name FROM g ON CONFLICT DO NOTHING)"
		    " SELECT g.created FROM g",
		    9, false },
	[G_DELETE] = { "fd_group_delete", "DELETE FROM consumer_groups WHERE name = $1 RETURNING 1", 1, false },
	[G_LIST] = { "fd_group_list",
		     "SELECT json_build_object('name', g.name, 'categories', g.categories, 'types', g.types,"
		     " 'start', g.start, 'ack_timeout_ms', g.ack_timeout_ms, 'max_deliveries', g.max_deliveries,"
		     " 'ordering', g.ordering, 'position', g.tx_id::text || '-' || g.seq,"
		     " 'lag_events', d.pending + b.n,"
		     " 'lag_seconds', coalesce(round(extract(epoch FROM now() - least(d.oldest, b.oldest))::numeric, 3), 0),"
		     " 'in_flight', d.in_flight, 'parked', d.parked,"
		     " 'deliveries', json_build_object('delivered', s.delivered, 'acked', s.acked, 'retried', s.retried,"
		     "   'skipped', s.skipped, 'parked', s.parked, 'expired', s.expired, 'replayed', s.replayed),"
		     " 'created_at', to_char(g.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))::text"
		     " FROM consumer_groups g JOIN consumer_group_stats s ON s.group_name = g.name"
		     " CROSS JOIN LATERAL (SELECT count(*) FILTER (WHERE x.state <> 'parked') AS pending,"
		     "   count(*) FILTER (WHERE x.state = 'leased' AND x.lease_until > now()) AS in_flight,"
		     "   count(*) FILTER (WHERE x.state = 'parked') AS parked,"
		     "   min(e.recorded_at) FILTER (WHERE x.state <> 'parked') AS oldest"
		     "   FROM group_deliveries x JOIN events e ON e.seq = x.seq WHERE x.group_name = g.name) d"
		     " CROSS JOIN LATERAL (SELECT count(*) AS n, min(e.recorded_at) AS oldest FROM events e"
		     "   WHERE (e.tx_id, e.seq) > (g.tx_id, g.seq)"
		     "   AND (g.categories IS NULL OR e.category = ANY (g.categories))"
		     "   AND (g.types IS NULL OR e.type = ANY (g.types))) b"
		     " WHERE ($1::text IS NULL OR g.name = $1) ORDER BY g.name",
		     1, false },
	[G_PULL] = { "fd_group_pull",
		     "SELECT p.delivery_id::text, p.delivery_count::text, p.e_event_id, p.e_stream_id, p.e_version,"
		     " p.e_type, p.e_data, p.e_metadata, p.e_recorded_at, p.tx_id, p.seq"
		     " FROM fd_group_pull($1, $2, $3::int) p ORDER BY p.tx_id, p.seq",
		     3, true },
	[G_SETTLE] = { "fd_group_settle", "SELECT fd_group_settle($1, $2::uuid[], $3, $4::int)", 4, false },
	[G_PARKED] = { "fd_group_parked",
		       "SELECT d.delivery_id::text, d.delivery_count::text,"
		       " to_char(d.parked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
		       " coalesce(d.park_reason, ''), " FD_EVENT_COLS
		       " FROM group_deliveries d JOIN events e ON e.seq = d.seq"
		       " WHERE d.group_name = $1 AND d.state = 'parked' AND (d.tx_id, d.seq) > ($2::xid8, $3::bigint)"
		       " ORDER BY d.tx_id, d.seq LIMIT $4::int",
		       4, true },
	[G_EXISTS] = { "fd_group_exists", "SELECT 1 FROM consumer_groups WHERE name = $1", 1, false },
	[G_REPLAY] = { "fd_group_replay", "SELECT fd_group_replay($1, $2::uuid[])", 2, false },
};

/*
 * Run one statement on a pooled connection, retrying serialization failures
 * and deadlocks.  P0002 is FD_ERR_NOTFOUND, FD409 FD_ERR_CONFLICT with its
 * DETAIL in *detail (caller frees; detail may be NULL), 22023 FD_ERR_INVAL.
 */
static enum fd_err run(struct fd_pool *pool, int id, const char *const *params, PGresult **out, char **detail)
{
	enum fd_err err = FD_ERR_RETRY;
	*out = NULL;
	for (int attempt = 0; attempt < 4 && err == FD_ERR_RETRY; attempt++) {
		PGconn *conn = NULL;
		PGresult *res = NULL;
		if ((err = fd_pool_acquire(pool, &conn)))
			return err;
		err = fd_sql_exec(conn, &group_stmts[id], params, &res);
		if (err) {
			const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
			if (state && strcmp(state, "P0002") == 0) {
				err = FD_ERR_NOTFOUND;
			} else if (state && strcmp(state, "FD409") == 0) {
				err = FD_ERR_CONFLICT;
				const char *d = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
				if (detail && !(*detail = strdup(d ? d : "")))
					err = FD_ERR_NOMEM;
			} else if (state && strcmp(state, "22023") == 0) {
				err = FD_ERR_INVAL;
			}
			PQclear(res);
			res = NULL;
		}
		fd_pool_release(pool, conn, fd_pg_conn_broken(conn, err));
		*out = res;
	}
	return err;
}

static enum fd_err uuid_array(struct fd_buf *b, const struct fd_uuid *ids, size_t n)
{
	enum fd_err err = fd_buf_append(b, "{", 1);
	for (size_t i = 0; i < n && !err; i++) {
		char s[FD_UUID_STRLEN + 1];
		fd_uuid_format(&ids[i], s);
		err = fd_buf_appendf(b, "%s%s", i ? "," : "", s);
	}
	return err ? err : fd_buf_append(b, "}", 1);
}

enum fd_err fd_group_put(struct fd_pool *pool, const struct fd_group_spec *spec, bool *created)
{
	struct fd_buf cats = FD_BUF_INIT, types = FD_BUF_INIT;
	PGresult *res = NULL;
	char ack[16], maxd[16], tx[24] = "0", seq[24] = "0";
	enum fd_err err = FD_OK;
	*created = false;
	if (spec->categories && (err = fd_store_text_array(&cats, spec->categories, spec->ncategories)))
		goto done;
	if (spec->types && (err = fd_store_text_array(&types, spec->types, spec->ntypes)))
		goto done;
	struct fd_cursor at;
	if (strcmp(spec->start, "beginning") && strcmp(spec->start, "end")) {
		if (!fd_cursor_parse(spec->start, &at)) {
			err = FD_ERR_INVAL;
			goto done;
		}
		snprintf(tx, sizeof tx, "%llu", (unsigned long long)at.tx);
		snprintf(seq, sizeof seq, "%lld", (long long)at.seq);
	}
	snprintf(ack, sizeof ack, "%u", spec->ack_timeout_ms);
	snprintf(maxd, sizeof maxd, "%u", spec->max_deliveries);
	const char *params[9] = { spec->name, spec->categories ? cats.data : NULL, spec->types ? types.data : NULL,
				  spec->start, ack, maxd, spec->ordering_stream ? "stream" : "none", tx, seq };
	if ((err = run(pool, G_PUT, params, &res, NULL)))
		goto done;
	if (PQntuples(res) == 0)
		err = FD_ERR_CONFLICT;  /* it exists, with another start */
	else
		*created = PQgetvalue(res, 0, 0)[0] == 't';
done:
	PQclear(res);
	fd_buf_release(&cats);
	fd_buf_release(&types);
	return err;
}

enum fd_err fd_group_delete(struct fd_pool *pool, const char *name)
{
	PGresult *res = NULL;
	const char *params[1] = { name };
	enum fd_err err = run(pool, G_DELETE, params, &res, NULL);
	if (!err && PQntuples(res) == 0)
		err = FD_ERR_NOTFOUND;
	PQclear(res);
	return err;
}

enum fd_err fd_group_list(struct fd_pool *pool, const char *name, json_t **out)
{
	PGresult *res = NULL;
	const char *params[1] = { name };
	*out = NULL;
	enum fd_err err = run(pool, G_LIST, params, &res, NULL);
	if (err)
		return err;
	json_t *list = json_array();
	for (int i = 0; list && i < PQntuples(res); i++) {
		json_t *g = json_loads(PQgetvalue(res, i, 0), 0, NULL);
		if (!g || json_array_append_new(list, g)) {
			json_decref(list);
			list = NULL;
		}
	}
	if (!list)
		err = FD_ERR_NOMEM;
	else if (name && json_array_size(list) == 0)
		err = FD_ERR_NOTFOUND;
	PQclear(res);
	if (err)
		json_decref(list);
	else
		*out = list;
	return err;
}

/* One rendered delivery: {"delivery_id":..,"delivery_count":N,[extra,]"event":{...}}. */
static enum fd_err render_delivery(struct fd_buf *b, const PGresult *res, int row, bool parked,
				   const struct fd_subject_keys *keys)
{
	enum fd_err err = fd_buf_appendf(b, "{\"delivery_id\":\"%s\",\"delivery_count\":%s,", PQgetvalue(res, row, 0),
					 PQgetvalue(res, row, 1));
	int col = 2;
	if (!err && parked) {
		err = fd_buf_appendf(b, "\"parked_at\":\"%s\",\"reason\":", PQgetvalue(res, row, 2));
		if (!err)
			err = fd_buf_append_json_str(b, PQgetvalue(res, row, 3));
		if (!err)
			err = fd_buf_append(b, ",", 1);
		col = 4;
	}
	if (!err)
		err = fd_buf_append(b, "\"event\":", 8);
	if (!err)
		err = fd_render_event(b, res, row, col, keys);
	return err ? err : fd_buf_append(b, "}", 1);
}

static enum fd_err render_list(struct fd_pool *pool, const PGresult *res, bool parked, char **json)
{
	struct fd_buf b = FD_BUF_INIT;
	struct fd_subject_keys *keys = NULL;
	/* personal values opened (or null when erased), as the feed shows them */
	enum fd_err err = fd_render_keys(pool, res, NULL, 0, PQntuples(res), parked ? 4 : 2, &keys);
	if (!err)
		err = fd_buf_append(&b, "[", 1);
	for (int i = 0; i < PQntuples(res) && !err; i++) {
		if (i)
			err = fd_buf_append(&b, ",", 1);
		if (!err)
			err = render_delivery(&b, res, i, parked, keys);
	}
	if (!err)
		err = fd_buf_append(&b, "]", 1);
	if (!err && !(*json = fd_buf_detach(&b)))
		err = FD_ERR_NOMEM;
	fd_buf_release(&b);
	fd_subject_keys_free(keys);
	return err;
}

enum fd_err fd_group_pull(struct fd_pool *pool, const char *name, const char *consumer, unsigned max, char **json,
			  size_t *count)
{
	PGresult *res = NULL;
	char lim[16];
	snprintf(lim, sizeof lim, "%u", max);
	const char *params[3] = { name, consumer, lim };
	*json = NULL;
	*count = 0;
	enum fd_err err = run(pool, G_PULL, params, &res, NULL);
	if (!err && PQnfields(res) != 2 + FD_EVENT_NCOLS)
		err = FD_ERR_INTERNAL;
	if (!err && !(err = render_list(pool, res, false, json)))
		*count = (size_t)PQntuples(res);
	PQclear(res);
	return err;
}

enum fd_err fd_group_settle(struct fd_pool *pool, const char *name, const struct fd_uuid *ids, size_t n,
			    enum fd_group_settle action, unsigned delay_ms, char **bad)
{
	static const char *const actions[] = { [FD_GROUP_ACK] = "ack", [FD_GROUP_RETRY] = "retry",
						[FD_GROUP_PARK] = "park", [FD_GROUP_SKIP] = "skip" };
	struct fd_buf arr = FD_BUF_INIT;
	PGresult *res = NULL;
	char delay[16];
	*bad = NULL;
	enum fd_err err = uuid_array(&arr, ids, n);
	if (err)
		goto done;
	snprintf(delay, sizeof delay, "%u", delay_ms);
	const char *params[4] = { name, arr.data, actions[action], delay };
	err = run(pool, G_SETTLE, params, &res, bad);
done:
	PQclear(res);
	fd_buf_release(&arr);
	return err;
}

enum fd_err fd_group_parked(struct fd_pool *pool, const char *name, struct fd_cursor after, unsigned limit,
			    char **json, size_t *count, struct fd_cursor *next)
{
	PGresult *res = NULL;
	char tx[24], seq[24], lim[16];
	*json = NULL;
	*count = 0;
	*next = after;
	const char *p1[1] = { name };
	enum fd_err err = run(pool, G_EXISTS, p1, &res, NULL);
	if (!err && PQntuples(res) == 0)
		err = FD_ERR_NOTFOUND;
	PQclear(res);
	res = NULL;
	if (err)
		return err;
	snprintf(tx, sizeof tx, "%llu", (unsigned long long)after.tx);
	snprintf(seq, sizeof seq, "%lld", (long long)after.seq);
	snprintf(lim, sizeof lim, "%u", limit);
	const char *params[4] = { name, tx, seq, lim };
	if ((err = run(pool, G_PARKED, params, &res, NULL)))
		goto done;
	int rows = PQntuples(res);
	if (PQnfields(res) != 4 + FD_EVENT_NCOLS) {
		err = FD_ERR_INTERNAL;
		goto done;
	}
	if ((err = render_list(pool, res, true, json)))
		goto done;
	*count = (size_t)rows;
	if (rows > 0) {
		uint64_t t, s;
		if (!fd_bin_u64(res, rows - 1, 4 + FD_EVENT_NCOLS - 2, &t) ||
		    !fd_bin_u64(res, rows - 1, 4 + FD_EVENT_NCOLS - 1, &s)) {
			err = FD_ERR_INTERNAL;
			goto done;
		}
		*next = (struct fd_cursor){ t, (int64_t)s };
	}
done:
	if (err) {
		free(*json);
		*json = NULL;
		*count = 0;
	}
	PQclear(res);
	return err;
}

enum fd_err fd_group_replay(struct fd_pool *pool, const char *name, const struct fd_uuid *ids, size_t n,
			    size_t *replayed, char **bad)
{
	struct fd_buf arr = FD_BUF_INIT;
	PGresult *res = NULL;
	*bad = NULL;
	*replayed = 0;
	enum fd_err err = n ? uuid_array(&arr, ids, n) : FD_OK;
	if (err)
		goto done;
	const char *params[2] = { name, n ? arr.data : NULL };
	if ((err = run(pool, G_REPLAY, params, &res, bad)))
		goto done;
	*replayed = (size_t)strtoull(PQgetvalue(res, 0, 0), NULL, 10);
done:
	PQclear(res);
	fd_buf_release(&arr);
	return err;
}
