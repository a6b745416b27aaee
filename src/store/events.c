/*
 * events.c - the generic event store over the connection pool: append with
 * an expected version, read one stream, read the gap-safe global feed.
 *
 * Every call is one round trip to a statement prepared on each pooled
 * connection.  fd_store_statements below is the store's one statement table:
 * it also holds the statements of snapshots.c, whose ids and the fd_store_run
 * helper are shared through internal.h.  Appends take the events as parallel
 * arrays passed as PostgreSQL array literals: the common cases (no client
 * ids; the next version of an existing stream, or a new stream) in one plain
 * statement, everything else and every conflict through the PL/pgSQL
 * function fd_append (migrations/0001_event_store.sql, 0005_append_speed.sql).
 * Reads fetch the events' plain columns in binary format and render them in
 * render.c, as the SQL function fd_event_json would but compact, into the
 * JSON text handed to the caller.
 *
 * Retries: serialization failures and deadlocks are retried up to three
 * times; a lost connection is retried once on a fresh one.  Retrying an
 * append is safe because event ids are fixed before the first attempt and the
 * retry asks fd_append to check them, so a repeat of a committed attempt is
 * recognised instead of written twice.
 *
 * Metrics: every append is counted here, whoever calls it (the HTTP append,
 * the command bus), in the registry the pool carries: one place sees all
 * event writes.
 *
 * Threading: thread-safe; each call borrows one pool connection.
 */
#include "factd/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "factd/buf.h"
#include "factd/log.h"
#include "factd/metrics.h"
#include "factd/notify.h"
#include "internal.h"
#include "store/personal.h"

/*
 * The feed: events after the cursor whose writing transaction is older than
 * every transaction still running (so nothing can still appear before them),
 * plus one row flagged as the head: the cursor of the newest such event
 * overall, which becomes `next` when the page is short.  The filters get
 * statements of their own so that each has a plan that fits it
 * (events_category_feed_idx with a category, events_feed_idx otherwise);
 * both parts read the same statement snapshot, so they agree on the horizon.
 * UNION ALL does not promise an order, so fd_store_read_feed puts the events
 * in feed order itself (they arrive in it, and a sort on the server would
 * copy every row once more).  Binary results, rendered by fd_render_event.
 */
#define FEED_SQL(filters)                                                                            \
	"(SELECT false AS head, " FD_EVENT_COLS " FROM events e"                                      \
	" WHERE (e.tx_id, e.seq) > ($1::xid8, $2::bigint)"                                          \
	" AND e.tx_id < pg_snapshot_xmin(pg_current_snapshot())" filters                            \
	" ORDER BY e.tx_id, e.seq LIMIT $3::bigint)"                                                 \
	" UNION ALL (SELECT true, NULL::uuid, NULL::text, NULL::bigint, NULL::text, NULL::jsonb,"     \
	"  NULL::jsonb, NULL::timestamptz, t.tx_id, t.seq FROM events t"                              \
	"  WHERE t.tx_id < pg_snapshot_xmin(pg_current_snapshot())"                                  \
	"  ORDER BY t.tx_id DESC, t.seq DESC LIMIT 1)"

/*
 * The common appends in one plain statement, without fd_append: s writes the
 * stream row (the next version of an existing stream, or a new stream), and
 * only when it did are the events inserted after it.  No row back means
 * nothing was written: fd_append then decides with the row locked.  $1
 * stream, $2 category, $3..$6 the event arrays, $7 their length, $8 the
 * expected version (< 0: any).  The stream row is the statement's first
 * write, as in fd_append: the events' source reads s.
 */
#define APPEND_FAST_SQL(stream_write)                                                                \
	"WITH s AS (" stream_write "),"                                                               \
	" ins AS (INSERT INTO events (event_id, stream_id, category, version, type, data, metadata)"  \
	"  SELECT i.id, $1::text, $2::text, s.cur + i.ord, i.type, i.data, i.meta FROM s,"            \
	"  unnest($3::uuid[], $4::text[], $5::jsonb[], $6::jsonb[]) WITH ORDINALITY"                   \
	"  AS i(id, type, data, meta, ord) RETURNING seq)"                                             \
	" SELECT s.cur, (SELECT max(ins.seq) FROM ins), pg_current_xact_id()::text FROM s"

/*
 * Appends of several requests in one statement (batch.c).  Per request:
 * $1 stream, $2 category, $3 expected version (< 0: any), $4 event count; per
 * event: $5..$8 id, type, data, metadata, $9 its request (1-based), $10 its
 * place in the request (1-based).  The streams must be distinct.  l takes
 * the rows of the streams nobody else holds, without waiting (batch.c says
 * why); the requests whose version matches are written (an event id
 * stored already fails the statement: unique_violation).  One row per
 * request, in order: its number, the version it appended after (NULL: not
 * written), its last seq, the stream's version under lock (NULL: missing or
 * held elsewhere), the transaction id.
 */
#define APPEND_BATCH_SQL                                                                             \
	"WITH r AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[])"           \
	"  WITH ORDINALITY AS r(stream, category, expected, n, i)),"                                  \
	" l AS (SELECT s.stream_id, CASE WHEN s.deleted OR s.tombstoned THEN NULL ELSE s.version END" \
	"  AS version FROM streams s WHERE s.stream_id = ANY ($1::text[]) FOR UPDATE SKIP LOCKED),"   \
	" ok AS (SELECT r.i, r.stream, r.category, r.n, l.version AS cur FROM r"                      \
	"  JOIN l ON l.stream_id = r.stream WHERE l.version IS NOT NULL"                              \
	"  AND (r.expected < 0 OR r.expected = l.version)),"                                          \
	" u AS (UPDATE streams s SET version = ok.cur + ok.n, updated_at = now() FROM ok"             \
	"  WHERE s.stream_id = ok.stream),"                                                           \
	" ins AS (INSERT INTO events (event_id, stream_id, category, version, type, data, metadata)" \
	"  SELECT e.id, ok.stream, ok.category, ok.cur + e.ord, e.type, e.data, e.meta"               \
	"  FROM unnest($5::uuid[], $6::text[], $7::jsonb[], $8::jsonb[], $9::int[], $10::int[])"      \
	"  AS e(id, type, data, meta, req, ord) JOIN ok ON ok.i = e.req RETURNING seq, stream_id)"    \
	" SELECT r.i, ok.cur, (SELECT max(ins.seq) FROM ins WHERE ins.stream_id = r.stream),"         \
	"  l.version, pg_current_xact_id()::text"                                                     \
	" FROM r LEFT JOIN ok ON ok.i = r.i LEFT JOIN l ON l.stream_id = r.stream ORDER BY r.i"

/*
 * snapshots.c: load a stream for an aggregate.  $1 stream, $2 snapshot schema
 * (< 0: use none), $3 max version (0: latest).  One row when the stream
 * exists: its version, the chosen snapshot's version and state (NULL when
 * none), then the count and the events after the snapshot up to the limit as
 * [version, type, data, schema version (null: 1), personal-data declaration
 * (null: none)] arrays.  Both index scans are ranges of a primary or
 * unique key: snapshots_pkey backwards for one row, events_stream_version_key
 * forwards from the snapshot.
 */
#define LOAD_STREAM_SQL                                                                              \
	"SELECT st.version, sn.version, sn.state::text, ev.n, ev.j::text, st.life_start,"           \
	" st.deleted, st.tombstoned FROM streams st"                                                  \
	" CROSS JOIN LATERAL (SELECT CASE WHEN $3::bigint > 0 AND $3::bigint < st.version"          \
	"  THEN $3::bigint ELSE st.version END AS upto) u"                                            \
	" LEFT JOIN LATERAL ("                                                                        \
	"  SELECT s.version, s.state FROM snapshots s"                                                \
	"  WHERE $2::int >= 0 AND s.stream_id = st.stream_id AND s.schema_version = $2::int"         \
	"  AND s.version <= u.upto AND s.version > st.life_start"                                    \
	"  ORDER BY s.version DESC LIMIT 1) sn ON true"                                                \
	" CROSS JOIN LATERAL ("                                                                       \
	"  SELECT count(*) AS n, coalesce(json_agg(json_build_array(e.version, e.type, e.data,"      \
	"   e.metadata -> 'schema_version', e.metadata -> 'personal')"                                 \
	"   ORDER BY e.version), '[]'::json) AS j FROM events e"                                       \
	"  WHERE e.stream_id = st.stream_id AND e.version > coalesce(sn.version, st.life_start)"      \
	"  AND e.version <= u.upto) ev"                                                               \
	" WHERE st.stream_id = $1::text"

/*
 * snapshots.c: the highest version of stream $1 recorded at or before $2
 * microseconds since the epoch, 0 when none.  The moment is built from whole
 * seconds plus microseconds because interval * bigint goes through double
 * precision: both products stay exact that way from 4714 BC to well past
 * the year 9999.  A backward walk of events_stream_version_key, which carries
 * recorded_at (migrations/0005_append_speed.sql), from the newest version to
 * the first one recorded at or before $2, without visiting the table.
 */
#define VERSION_AT_SQL                                                                               \
	"SELECT coalesce((SELECT e.version FROM events e"                                             \
	" WHERE e.stream_id = $1::text AND e.recorded_at <= timestamptz 'epoch'"                      \
	" + ($2::bigint / 1000000) * interval '1 second'"                                             \
	" + ($2::bigint % 1000000) * interval '1 microsecond'"                                        \
	" ORDER BY e.version DESC LIMIT 1), 0)"

/*
 * snapshots.c: upsert a snapshot ($1 stream, $2 version, $3 schema, $4
 * state) unless the stream does not exist or is shorter than $2, or holds a
 * $SubjectErased event (migrations/0009_personal_data.sql says why).  Always
 * one row: the stream's version (NULL when missing) and 1 (written), 0
 * (shorter) or -1 (erased).
 */
#define SAVE_SNAPSHOT_SQL                                                                            \
	"SELECT stream_version, written FROM fd_save_snapshot($1::text, $2::bigint, $3::int, $4::jsonb)"

/* snapshots.c: what struct fd_stored_event holds, in its order. */
#define STORED_EVENT_COLS "e.stream_id, e.version, e.tx_id::text || '-' || e.seq, e.metadata::text"

const struct fd_stmt fd_store_statements[] = {
	[ST_APPEND] = {
		.name = "fd_store_append",
		.sql = "SELECT status, first_version, last_version, current_version, tx_id, last_seq"
		       " FROM fd_append($1::text, $2::text, $3::text, $4::bigint, $5::uuid[], $6::text[],"
		       " $7::jsonb[], $8::jsonb[], $9::boolean)",
		.nparams = 9,
	},
	[ST_APPEND_NEXT] = {
		.name = "fd_store_append_next",
		.sql = APPEND_FAST_SQL(
			"UPDATE streams SET version = version + $7::bigint, updated_at = now()"
			" WHERE stream_id = $1::text AND ($8::bigint < 0 OR version = $8::bigint)"
			" AND NOT deleted AND NOT tombstoned"
			" RETURNING version - $7::bigint AS cur"),
		.nparams = 8,
	},
	[ST_APPEND_CREATE] = {
		.name = "fd_store_append_create",
		.sql = APPEND_FAST_SQL(
			"INSERT INTO streams (stream_id, category, version) VALUES ($1::text, $2::text, $7::bigint)"
			" ON CONFLICT (stream_id) DO NOTHING RETURNING 0::bigint AS cur"),
		.nparams = 7,
	},
	[ST_APPEND_BATCH] = {
		.name = "fd_store_append_batch",
		.sql = APPEND_BATCH_SQL,
		.nparams = 10,
	},
	[ST_READ_STREAM] = {
		.name = "fd_store_read_stream",
		.sql = "SELECT s.version, " FD_EVENT_COLS ", s.deleted, s.tombstoned FROM streams s"
		       " LEFT JOIN LATERAL (SELECT * FROM events e"
		       "  WHERE e.stream_id = s.stream_id AND e.version >= $2::bigint"
		       "  AND e.version > s.life_start"
		       "  ORDER BY e.version LIMIT $3::bigint) e ON true"
		       " WHERE s.stream_id = $1::text ORDER BY e.version",
		.nparams = 3,
		.binary = true,
	},
	[ST_FEED] = { .name = "fd_store_feed", .sql = FEED_SQL(""), .nparams = 3, .binary = true },
	[ST_FEED_CAT] = {
		.name = "fd_store_feed_cat",
		.sql = FEED_SQL(" AND e.category = $4::text"),
		.nparams = 4,
		.binary = true,
	},
	[ST_FEED_TYPES] = {
		.name = "fd_store_feed_types",
		.sql = FEED_SQL(" AND e.type = ANY ($4::text[])"),
		.nparams = 4,
		.binary = true,
	},
	[ST_FEED_CAT_TYPES] = {
		.name = "fd_store_feed_cat_types",
		.sql = FEED_SQL(" AND e.category = $4::text AND e.type = ANY ($5::text[])"),
		.nparams = 5,
		.binary = true,
	},
	[ST_LOAD_STREAM] = {
		.name = "fd_store_load_stream",
		.sql = LOAD_STREAM_SQL,
		.nparams = 3,
	},
	[ST_VERSION_AT] = {
		.name = "fd_store_version_at",
		.sql = VERSION_AT_SQL,
		.nparams = 2,
	},
	[ST_SAVE_SNAPSHOT] = {
		.name = "fd_store_save_snapshot",
		.sql = SAVE_SNAPSHOT_SQL,
		.nparams = 4,
	},
	[ST_FIND_EVENT] = {
		.name = "fd_store_find_event",
		.sql = "SELECT " STORED_EVENT_COLS " FROM events e WHERE e.event_id = $1::uuid",
		.nparams = 1,
	},
	[ST_EVENT_AT] = {
		.name = "fd_store_event_at",
		.sql = "SELECT " STORED_EVENT_COLS " FROM events e"
		       " WHERE e.stream_id = $1::text AND e.version = $2::bigint",
		.nparams = 2,
	},
};
const unsigned fd_store_statements_count = ST_COUNT;

_Static_assert(sizeof fd_store_statements / sizeof fd_store_statements[0] == ST_COUNT,
	       "one statement per stmt_id");

enum { MAX_SERIALIZATION_RETRIES = 3, MAX_RECONNECT_RETRIES = 1 };

/* fd_append's names for the expected-version kinds. */
static const char *const expected_kind_sql[] = {
	[FD_EXPECT_EXACT] = "exact",
	[FD_EXPECT_ANY] = "any",
	[FD_EXPECT_NO_STREAM] = "no_stream",
	[FD_EXPECT_EXISTS] = "exists",
};

/* Input PostgreSQL rejects as malformed data is the caller's fault, not the database's. */
static bool invalid_input_state(const char *state)
{
	return state && (strncmp(state, "22", 2) == 0 || strcmp(state, "23514") == 0);
}

static void backoff(int attempt)
{
	struct timespec ts = { .tv_sec = 0, .tv_nsec = (1L << attempt) * 1000000L };
	nanosleep(&ts, NULL);
}

/* The retry policy is in the file header; the contract in internal.h. */
enum fd_err fd_store_run(struct fd_pool *pool, enum fd_stmt_id id, const char **params, int recheck_param,
			 PGresult **out)
{
	return fd_store_run_ex(pool, id, params, recheck_param, NULL, out);
}

enum fd_err fd_store_run_ex(struct fd_pool *pool, enum fd_stmt_id id, const char **params, int recheck_param,
			    bool *lost, PGresult **out)
{
	const struct fd_stmt *st = &fd_store_statements[id];
	int serialization_retries = 0, reconnects = 0;

	*out = NULL;
	if (lost)
		*lost = false;
	for (;;) {
		PGconn *conn = NULL;
		enum fd_err err = fd_pool_acquire(pool, &conn);
		if (err)
			return err;
		PGresult *res = NULL;
		err = fd_sql_exec(conn, st, params, &res);
		if (!err && PQresultStatus(res) == PGRES_TUPLES_OK) {
			fd_pool_release(pool, conn, false);
			*out = res;
			return FD_OK;
		}
		if (!err)
			err = FD_ERR_INTERNAL; /* every store statement returns rows */
		bool broken = fd_pg_conn_broken(conn, err);
		const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		if (err == FD_ERR_DB && invalid_input_state(state))
			err = FD_ERR_INVAL;
		/* a batch holding a repeat (an event id stored already): each of its requests goes alone (batch.c) */
		if (err == FD_ERR_DB && id == ST_APPEND_BATCH && state && strcmp(state, "23505") == 0)
			err = FD_ERR_DUPLICATE;
		enum fd_log_level level = err == FD_ERR_DB ? FD_LOG_ERROR
					: err == FD_ERR_UNAVAILABLE ? FD_LOG_WARN
					: FD_LOG_DEBUG;
		if (fd_log_enabled(level)) {
			const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
			fd_log_fields(level, "store statement failed",
				      json_pack("{s:s, s:s, s:s?, s:s}", "statement", st->name, "error",
						fd_err_name(err), "sqlstate", state, "detail", msg ? msg : ""));
		}
		PQclear(res);
		fd_pool_release(pool, conn, broken);
		if (broken && lost) {
			*lost = true;
			return err;
		}
		if (broken && reconnects < MAX_RECONNECT_RETRIES) {
			reconnects++;
			if (recheck_param >= 0)
				params[recheck_param] = "t";
			continue;
		}
		if (err == FD_ERR_RETRY && serialization_retries < MAX_SERIALIZATION_RETRIES) {
			backoff(serialization_retries++);
			continue;
		}
		return err;
	}
}

/* The contract is in internal.h. */
enum fd_err fd_store_array_elem(struct fd_buf *b, const char *s, bool first)
{
	enum fd_err err = fd_buf_append(b, first ? "\"" : ",\"", first ? 1 : 2);
	while (!err && *s) {
		size_t run_len = strcspn(s, "\"\\");
		if (run_len)
			err = fd_buf_append(b, s, run_len);
		s += run_len;
		if (!err && *s) {
			char esc[2] = { '\\', *s++ };
			err = fd_buf_append(b, esc, 2);
		}
	}
	return err ? err : fd_buf_append(b, "\"", 1);
}

/* The contract is in internal.h. */
enum fd_err fd_store_text_array(struct fd_buf *b, const char *const *items, size_t n)
{
	enum fd_err err = fd_buf_append(b, "{", 1);
	for (size_t i = 0; i < n && !err; i++)
		err = fd_store_array_elem(b, items[i], i == 0);
	return err ? err : fd_buf_append(b, "}", 1);
}

/* Characters (not bytes) in a UTF-8 string, as PostgreSQL's length() counts them. */
static size_t utf8_len(const char *s)
{
	size_t n = 0;
	for (; *s; s++)
		n += ((unsigned char)*s & 0xC0) != 0x80;
	return n;
}

static bool event_valid(const struct fd_event_in *ev)
{
	if (!ev->type || !ev->data_json)
		return false;
	size_t n = utf8_len(ev->type);
	return n >= 1 && n <= 200;
}

/* The four parallel array literals fd_append takes. */
struct append_arrays {
	struct fd_buf ids, types, data, metadata;
};

/* The contract is in internal.h. */
enum fd_err fd_store_event_elems(struct fd_buf *ids, struct fd_buf *types, struct fd_buf *data, struct fd_buf *metadata,
				 const struct fd_event_in *ev, bool first)
{
	char uuid[FD_UUID_STRLEN + 1];
	fd_uuid_format(&ev->event_id, uuid);
	enum fd_err err = fd_store_array_elem(ids, uuid, first);
	if (!err)
		err = fd_store_array_elem(types, ev->type, first);
	if (!err)
		err = fd_store_array_elem(data, ev->data_json, first);
	if (!err)
		err = fd_store_array_elem(metadata, ev->metadata_json ? ev->metadata_json : "{}", first);
	return err;
}

static enum fd_err build_arrays(const struct fd_event_in *events, size_t n, struct append_arrays *a)
{
	enum fd_err err = fd_buf_append(&a->ids, "{", 1);
	if (!err)
		err = fd_buf_append(&a->types, "{", 1);
	if (!err)
		err = fd_buf_append(&a->data, "{", 1);
	if (!err)
		err = fd_buf_append(&a->metadata, "{", 1);
	for (size_t i = 0; i < n && !err; i++)
		err = fd_store_event_elems(&a->ids, &a->types, &a->data, &a->metadata, &events[i], i == 0);
	if (!err)
		err = fd_buf_append(&a->ids, "}", 1);
	if (!err)
		err = fd_buf_append(&a->types, "}", 1);
	if (!err)
		err = fd_buf_append(&a->data, "}", 1);
	if (!err)
		err = fd_buf_append(&a->metadata, "}", 1);
	return err;
}

/* The contract is in internal.h. */
int64_t fd_store_int(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* How an append ended, as factd_appends_total counts it. */
static enum fd_metrics_append append_result(enum fd_err err, const struct fd_append_result *r)
{
	if (err == FD_OK)
		return r->duplicate ? FD_METRICS_APPEND_DUPLICATE : FD_METRICS_APPEND_OK;
	if (err == FD_ERR_CONFLICT || err == FD_ERR_DUPLICATE)
		return FD_METRICS_APPEND_CONFLICT;
	return FD_METRICS_APPEND_ERROR;
}

/*
 * The common cases in one plain statement (APPEND_FAST_SQL): the next events
 * of an existing stream at the expected version (or any), or the first events
 * of a new stream.  FD_ERR_NOTFOUND: nothing written, fd_append must decide
 * (conflict, missing stream, a concurrent creator).  *lost: the connection
 * broke, so the statement may have committed; it is not retried here.
 */
static enum fd_err append_fast(struct fd_pool *pool, const char *stream, const char *category,
			       struct fd_expected expected, const struct append_arrays *a, size_t n,
			       struct fd_append_result *out, bool *lost)
{
	char count[24], version[24];
	const char *params[8] = { stream, category, a->ids.data, a->types.data, a->data.data, a->metadata.data,
				  count, version };
	bool create = expected.kind == FD_EXPECT_NO_STREAM || (expected.kind == FD_EXPECT_EXACT && expected.version == 0);
	PGresult *res = NULL;

	snprintf(count, sizeof count, "%zu", n);
	snprintf(version, sizeof version, "%lld", (long long)(expected.kind == FD_EXPECT_EXACT ? expected.version : -1));
	enum fd_err err = fd_store_run_ex(pool, create ? ST_APPEND_CREATE : ST_APPEND_NEXT, params, -1, lost, &res);
	if (err)
		return err;
	if (PQntuples(res) == 0) {
		err = FD_ERR_NOTFOUND;
	} else if (PQnfields(res) != 3 || PQgetisnull(res, 0, 0) || PQgetisnull(res, 0, 1)) {
		fd_log(FD_LOG_ERROR, "the append statement returned an unexpected shape");
		err = FD_ERR_INTERNAL;
	} else {
		int64_t cur = fd_store_int(res, 0, 0);
		out->first_version = cur + 1;
		out->last_version = cur + (int64_t)n;
		out->current_version = out->last_version;
		out->position.seq = fd_store_int(res, 0, 1);
		out->position.tx = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
	}
	PQclear(res);
	return err;
}

enum fd_err fd_store_append(struct fd_pool *pool, const char *stream, struct fd_expected expected,
			    const struct fd_event_in *events, size_t n, struct fd_append_result *out)
{
	enum fd_err err = FD_OK;
	struct append_arrays arrays = { FD_BUF_INIT, FD_BUF_INIT, FD_BUF_INIT, FD_BUF_INIT };
	PGresult *res = NULL;
	char category[FD_STREAM_MAX + 1];
	char version[24];
	bool any_id_given = false;
	const char *params[9] = { NULL };

	memset(out, 0, sizeof *out);
	if (!fd_stream_name_valid(stream) || !events || n == 0 ||
	    (unsigned)expected.kind >= sizeof expected_kind_sql / sizeof expected_kind_sql[0] ||
	    (expected.kind == FD_EXPECT_EXACT && expected.version < 0)) {
		err = FD_ERR_INVAL;
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		if (!event_valid(&events[i])) {
			err = FD_ERR_INVAL;
			goto done;
		}
	}
	fd_stream_category(stream, category, sizeof category);
	snprintf(version, sizeof version, "%lld",
		 (long long)(expected.kind == FD_EXPECT_EXACT ? expected.version : 0));
	for (size_t i = 0; i < n; i++)
		any_id_given = any_id_given || events[i].id_given;

	bool lost = false;
	struct fd_batcher *batcher = fd_pool_batcher(pool);
	/*
	 * Events with ids the caller made (a command's idempotency key) are
	 * batched too: an id already stored fails the batch statement as a
	 * whole, which wrote nothing, and every request of it then goes alone
	 * below, where fd_append tells a duplicate from an id conflict.  So
	 * does such a request the batch found at another version: a repeat of
	 * one that was written is a duplicate, not a conflict.  (A check for
	 * stored ids inside the statement would cost every batch a lookup per
	 * event, and a generic plan made while the table was small scanned it.)
	 */
	if (fd_batcher_accepts(batcher, expected, n) &&
	    (err = fd_batch_append(pool, batcher, stream, category, expected, events, n, out, &lost)) != FD_ERR_NOTFOUND &&
	    !(any_id_given && err == FD_ERR_CONFLICT))
		goto done;
	if ((err = build_arrays(events, n, &arrays)))
		goto done;
	if (!any_id_given && !lost &&
	    (err = append_fast(pool, stream, category, expected, &arrays, n, out, &lost)) != FD_ERR_NOTFOUND) {
		if (!lost)
			goto done;
	}
	/* After a lost connection it may have committed: fd_append checks the ids (params[8]) and recognises it. */
	err = FD_OK;
	params[0] = stream;
	params[1] = category;
	params[2] = expected_kind_sql[expected.kind];
	params[3] = version;
	params[4] = arrays.ids.data;
	params[5] = arrays.types.data;
	params[6] = arrays.data.data;
	params[7] = arrays.metadata.data;
	params[8] = any_id_given || lost ? "t" : "f";
	if ((err = fd_store_run(pool, ST_APPEND, params, 8, &res)))
		goto done;
	if (PQntuples(res) != 1 || PQnfields(res) != 6 || PQgetisnull(res, 0, 0)) {
		fd_log(FD_LOG_ERROR, "fd_append returned an unexpected shape");
		err = FD_ERR_INTERNAL;
		goto done;
	}
	const char *status = PQgetvalue(res, 0, 0);
	out->current_version = fd_store_int(res, 0, 3);
	if (strcmp(status, "conflict") == 0) {
		err = FD_ERR_CONFLICT;
		goto done;
	}
	if (strcmp(status, "tombstoned") == 0) {
		err = FD_ERR_GONE;
		goto done;
	}
	if (strcmp(status, "id_conflict") == 0) {
		err = FD_ERR_DUPLICATE;
		goto done;
	}
	bool duplicate = strcmp(status, "duplicate") == 0;
	if (!duplicate && strcmp(status, "ok") != 0) {
		fd_log(FD_LOG_ERROR, "fd_append returned unknown status \"%s\"", status);
		err = FD_ERR_INTERNAL;
		goto done;
	}
	out->first_version = fd_store_int(res, 0, 1);
	out->last_version = fd_store_int(res, 0, 2);
	out->position.tx = PQgetisnull(res, 0, 4) ? 0 : strtoull(PQgetvalue(res, 0, 4), NULL, 10);
	out->position.seq = fd_store_int(res, 0, 5);
	/*
	 * With server-made ids nobody else knows them: a "duplicate" can only be
	 * our own earlier attempt, committed before its connection broke.
	 */
	out->duplicate = duplicate && any_id_given;
done:
	fd_metrics_append(fd_pool_metrics(pool), append_result(err, out), err == FD_OK && !out->duplicate ? n : 0);
	if (err == FD_OK && !out->duplicate)
		fd_notifier_announce(fd_pool_notifier(pool), category); /* followers need not wait for their poll */
	PQclear(res);
	fd_buf_release(&arrays.ids);
	fd_buf_release(&arrays.types);
	fd_buf_release(&arrays.data);
	fd_buf_release(&arrays.metadata);
	return err;
}

/* Rows [from, to) of res, events at column col, as a JSON array into b. */
static enum fd_err render_array(const PGresult *res, int from, int to, int col, const struct fd_subject_keys *keys,
				struct fd_buf *b)
{
	enum fd_err err = fd_buf_append(b, "[", 1);
	for (int i = from; i < to && !err; i++) {
		if (i > from)
			err = fd_buf_append(b, ",", 1);
		if (!err)
			err = fd_render_event(b, res, i, col, keys);
	}
	return err ? err : fd_buf_append(b, "]", 1);
}

/* A feed row's place: its cursor and its row in the result. */
struct feed_row {
	struct fd_cursor pos;
	int row;
};

static int feed_row_cmp(const void *a, const void *b)
{
	return fd_cursor_cmp(&((const struct feed_row *)a)->pos, &((const struct feed_row *)b)->pos);
}

enum fd_err fd_store_read_stream(struct fd_pool *pool, const char *stream, int64_t from_version,
				 unsigned limit, struct fd_stream_page *out)
{
	enum fd_err err = FD_OK;
	PGresult *res = NULL;
	struct fd_buf json = FD_BUF_INIT;
	struct fd_subject_keys *keys = NULL;
	char from[24], lim[16];
	const char *params[3] = { stream, from, lim };

	memset(out, 0, sizeof *out);
	if (!fd_stream_name_valid(stream) || from_version < 0 || limit == 0) {
		err = FD_ERR_INVAL;
		goto done;
	}
	snprintf(from, sizeof from, "%lld", (long long)from_version);
	snprintf(lim, sizeof lim, "%u", limit);
	if ((err = fd_store_run(pool, ST_READ_STREAM, params, -1, &res)))
		goto done;
	int rows = PQntuples(res);
	uint64_t version = 0;
	if (rows == 0) {
		err = FD_ERR_NOTFOUND;
		goto done;
	}
	if (PQnfields(res) != 3 + FD_EVENT_NCOLS || !fd_bin_u64(res, 0, 0, &version) ||
	    PQgetlength(res, 0, 1 + FD_EVENT_NCOLS) != 1 || PQgetlength(res, 0, 2 + FD_EVENT_NCOLS) != 1) {
		err = FD_ERR_INTERNAL;
		goto done;
	}
	if (PQgetvalue(res, 0, 2 + FD_EVENT_NCOLS)[0]) {
		err = FD_ERR_GONE;
		goto done;
	}
	if (PQgetvalue(res, 0, 1 + FD_EVENT_NCOLS)[0]) {
		err = FD_ERR_DELETED;
		goto done;
	}
	out->stream_version = (int64_t)version;
	/* A stream without events in the range is one row with NULL event columns. */
	if (rows == 1 && PQgetisnull(res, 0, 1))
		rows = 0;
	if ((err = fd_render_keys(pool, res, NULL, 0, rows, 1, &keys)))
		goto done;
	if ((err = render_array(res, 0, rows, 1, keys, &json)))
		goto done;
	out->count = (size_t)rows;
	out->events_json = fd_buf_detach(&json);
	if (!out->events_json)
		err = FD_ERR_NOMEM;
done:
	fd_subject_keys_free(keys);
	fd_buf_release(&json);
	PQclear(res);
	return err;
}

enum fd_err fd_store_read_feed(struct fd_pool *pool, struct fd_cursor after, const struct fd_feed_filter *filter,
			       unsigned limit, struct fd_feed_page *out)
{
	enum fd_err err = FD_OK;
	PGresult *res = NULL;
	struct fd_buf types = FD_BUF_INIT, json = FD_BUF_INIT;
	struct feed_row *page = NULL;
	struct fd_subject_keys *keys = NULL;
	char tx[24], seq[24], lim[16];
	const char *params[5] = { tx, seq, lim, NULL, NULL };
	const char *category = filter ? filter->category : NULL;
	size_t ntypes = filter ? filter->ntypes : 0;
	enum fd_stmt_id id;

	memset(out, 0, sizeof *out);
	out->next = after;
	if (limit == 0 || after.seq < 0 || (category && !fd_stream_name_valid(category)) ||
	    (ntypes && !filter->types)) {
		err = FD_ERR_INVAL;
		goto done;
	}
	if (ntypes)
		err = fd_buf_append(&types, "{", 1);
	for (size_t i = 0; i < ntypes && !err; i++) {
		if (!filter->types[i] || !*filter->types[i]) {
			err = FD_ERR_INVAL;
			goto done;
		}
		err = fd_store_array_elem(&types, filter->types[i], i == 0);
	}
	if (!err && ntypes)
		err = fd_buf_append(&types, "}", 1);
	if (err)
		goto done;

	snprintf(tx, sizeof tx, "%llu", (unsigned long long)after.tx);
	snprintf(seq, sizeof seq, "%lld", (long long)after.seq);
	snprintf(lim, sizeof lim, "%u", limit);
	if (category && ntypes) {
		id = ST_FEED_CAT_TYPES;
		params[3] = category;
		params[4] = types.data;
	} else if (category) {
		id = ST_FEED_CAT;
		params[3] = category;
	} else if (ntypes) {
		id = ST_FEED_TYPES;
		params[3] = types.data;
	} else {
		id = ST_FEED;
	}
	if ((err = fd_store_run(pool, id, params, -1, &res)))
		goto done;
	int rows = PQntuples(res), nev = 0;
	if (PQnfields(res) != 1 + FD_EVENT_NCOLS) {
		err = FD_ERR_INTERNAL;
		goto done;
	}
	/* Events and the head row apart, each with its cursor; the events in feed order. */
	if (rows > 0 && !(page = malloc((size_t)rows * sizeof *page))) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	struct feed_row head = { .row = -1 };
	bool sorted = true;
	for (int i = 0; i < rows; i++) {
		uint64_t row_tx, row_seq;
		if (PQgetlength(res, i, 0) != 1 || !fd_bin_u64(res, i, FD_EVENT_NCOLS - 1, &row_tx) ||
		    !fd_bin_u64(res, i, FD_EVENT_NCOLS, &row_seq)) {
			err = FD_ERR_INTERNAL;
			goto done;
		}
		struct feed_row r = { { row_tx, (int64_t)row_seq }, i };
		if (PQgetvalue(res, i, 0)[0]) {
			head = r;
			continue;
		}
		if (nev > 0 && fd_cursor_cmp(&page[nev - 1].pos, &r.pos) >= 0)
			sorted = false;
		page[nev++] = r;
	}
	if (!sorted)
		qsort(page, (size_t)nev, sizeof *page, feed_row_cmp);
	if ((err = fd_render_keys(pool, res, NULL, 0, rows, 1, &keys)))
		goto done;
	err = fd_buf_append(&json, "[", 1);
	for (int i = 0; i < nev && !err; i++) {
		if (i > 0)
			err = fd_buf_append(&json, ",", 1);
		if (!err)
			err = fd_render_event(&json, res, page[i].row, 1, keys);
	}
	if (!err)
		err = fd_buf_append(&json, "]", 1);
	if (err)
		goto done;
	out->count = (size_t)nev;
	/* A full page resumes after its last event; a short one after everything visible. */
	const struct feed_row *next = out->count == limit ? &page[nev - 1] : head.row >= 0 ? &head : NULL;
	if (next && fd_cursor_cmp(&next->pos, &after) > 0)
		out->next = next->pos;
	if (!(out->events_json = fd_buf_detach(&json)))
		err = FD_ERR_NOMEM;
done:
	if (err) {
		free(out->events_json);
		out->events_json = NULL;
		out->count = 0;
		out->next = after;
	}
	PQclear(res);
	free(page);
	fd_subject_keys_free(keys);
	fd_buf_release(&types);
	fd_buf_release(&json);
	return err;
}

enum fd_err fd_store_check_feed_horizon(struct fd_pool *pool)
{
	PGconn *conn = NULL;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	PGresult *res = PQexec(conn, "SELECT fd_feed_xid_ok()");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		err = fd_pg_classify(conn, res);
	else if (strcmp(PQgetvalue(res, 0, 0), "t") != 0)
		err = FD_ERR_CONFLICT;
	PQclear(res);
	fd_pool_release(pool, conn, fd_pg_conn_broken(conn, err));
	return err;
}
