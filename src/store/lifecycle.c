/*
 * lifecycle.c - deleting and truncating streams, retention policies, the
 * retention round with its archives, and archive restore.
 *
 * The stream operations are one call each of a PL/pgSQL function
 * (migrations/0008_lifecycle.sql) that locks the stream row before it
 * writes, like every append, so a deletion or truncation and an append to
 * the same stream are serialised and the feed stays in version order.
 *
 * A retention batch is read, archived and fsynced, and only then deleted, by
 * event id: a crash between the two leaves an archive of events that are
 * still stored, and the next round writes the same batch (same name, same
 * bytes) again before deleting it.  Nothing is deleted that is not archived.
 *
 * Threading: thread-safe; the round and the restore use the caller's connection.
 */
#include "store/lifecycle.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "factd/buf.h"
#include "factd/jsonspan.h"
#include "factd/log.h"
#include "factd/notify.h"
#include "factd/sql.h"
#include "factd/uuid.h"
#include "internal.h"

/* ---- deleting and truncating a stream ----------------------------------- */

static const struct fd_stmt delete_stmt = {
	"fd_lifecycle_delete",
	"SELECT status, current_version, deleted_version, tx_id, last_seq, removed"
	" FROM fd_delete_stream($1::text, $2::bigint, $3::boolean, $4::uuid, $5::jsonb)",
	5, false,
};

static const struct fd_stmt truncate_stmt = {
	"fd_lifecycle_truncate",
	"SELECT status, current_version, removed FROM fd_truncate_stream($1::text, $2::bigint, $3::int)",
	3, false,
};

/* One statement on a pooled connection, with one retry after a lost connection. */
static enum fd_err run_pooled(struct fd_pool *pool, const struct fd_stmt *st, const char *const *params,
			      PGresult **out)
{
	*out = NULL;
	for (int attempt = 0;; attempt++) {
		PGconn *conn = NULL;
		enum fd_err err = fd_pool_acquire(pool, &conn);
		if (err)
			return err;
		PGresult *res = NULL;
		err = fd_sql_exec(conn, st, params, &res);
		bool broken = fd_pg_conn_broken(conn, err);
		if (err) {
			const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
			if (err == FD_ERR_DB && state && strncmp(state, "22", 2) == 0)
				err = FD_ERR_INVAL;
			fd_log_fields(err == FD_ERR_DB ? FD_LOG_ERROR : FD_LOG_DEBUG, "lifecycle statement failed",
				      json_pack("{s:s, s:s, s:s}", "statement", st->name, "error", fd_err_name(err),
						"detail", res ? PQresultErrorMessage(res) : PQerrorMessage(conn)));
			PQclear(res);
			res = NULL;
		}
		fd_pool_release(pool, conn, broken);
		/* a deletion whose connection broke may have committed: a repeat then answers "already deleted" */
		if (err && broken && attempt == 0 && st != &delete_stmt)
			continue;
		*out = res;
		return err;
	}
}

static enum fd_err status_err(const char *status)
{
	if (strcmp(status, "ok") == 0)
		return FD_OK;
	if (strcmp(status, "notfound") == 0)
		return FD_ERR_NOTFOUND;
	if (strcmp(status, "deleted") == 0)
		return FD_ERR_DELETED;
	if (strcmp(status, "tombstoned") == 0)
		return FD_ERR_GONE;
	if (strcmp(status, "conflict") == 0)
		return FD_ERR_CONFLICT;
	return FD_ERR_REJECTED;
}

enum fd_err fd_store_delete_stream(struct fd_pool *pool, const char *stream, int64_t expected, bool hard,
				   const char *metadata_json, struct fd_delete_result *out)
{
	memset(out, 0, sizeof *out);
	if (!fd_stream_name_valid(stream))
		return FD_ERR_INVAL;
	struct fd_uuid id;
	char id_s[FD_UUID_STRLEN + 1], exp_s[24];
	enum fd_err err = fd_uuid_v7(&id);
	if (err)
		return err;
	fd_uuid_format(&id, id_s);
	snprintf(exp_s, sizeof exp_s, "%" PRId64, expected < 0 ? (int64_t)-1 : expected);
	const char *params[5] = { stream, exp_s, hard ? "t" : "f", id_s, metadata_json ? metadata_json : "{}" };
	PGresult *res = NULL;
	if ((err = run_pooled(pool, &delete_stmt, params, &res)))
		return err;
	if (PQntuples(res) != 1 || PQnfields(res) != 6 || PQgetisnull(res, 0, 0)) {
		PQclear(res);
		return FD_ERR_INTERNAL;
	}
	err = status_err(PQgetvalue(res, 0, 0));
	out->current_version = fd_store_int(res, 0, 1);
	if (!err) {
		out->deleted_version = fd_store_int(res, 0, 2);
		out->position.tx = strtoull(PQgetvalue(res, 0, 3), NULL, 10);
		out->position.seq = fd_store_int(res, 0, 4);
		out->removed = fd_store_int(res, 0, 5);
		char category[FD_STREAM_MAX + 1];
		fd_stream_category(stream, category, sizeof category);
		fd_notifier_announce(fd_pool_notifier(pool), category);
	}
	PQclear(res);
	return err;
}

enum fd_err fd_store_truncate_stream(struct fd_pool *pool, const char *stream, int64_t before, int schema,
				     struct fd_truncate_result *out)
{
	memset(out, 0, sizeof *out);
	if (!fd_stream_name_valid(stream) || before < 1)
		return FD_ERR_INVAL;
	char before_s[24], schema_s[16];
	snprintf(before_s, sizeof before_s, "%" PRId64, before);
	snprintf(schema_s, sizeof schema_s, "%d", schema < 0 ? -1 : schema);
	const char *params[3] = { stream, before_s, schema_s };
	PGresult *res = NULL;
	enum fd_err err = run_pooled(pool, &truncate_stmt, params, &res);
	if (err)
		return err;
	if (PQntuples(res) != 1 || PQnfields(res) != 3 || PQgetisnull(res, 0, 0)) {
		PQclear(res);
		return FD_ERR_INTERNAL;
	}
	const char *status = PQgetvalue(res, 0, 0);
	err = status_err(status);
	out->current_version = fd_store_int(res, 0, 1);
	out->removed = fd_store_int(res, 0, 2);
	if (err == FD_ERR_REJECTED)
		out->refusal = strcmp(status, "beyond") == 0 ? FD_TRUNCATE_BEYOND : FD_TRUNCATE_NEEDS_SNAPSHOT;
	PQclear(res);
	return err;
}

/* ---- retention policies ------------------------------------------------- */

#define POLICY_JSON                                                                                  \
	"json_strip_nulls(json_build_object('category', category, 'max_age_days', max_age_days,"     \
	" 'max_count_per_stream', max_count_per_stream, 'updated_at',"                                 \
	" to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')))"

static const struct fd_stmt policy_put_stmt = {
	"fd_retention_put",
	"INSERT INTO retention_policies (category, max_age_days, max_count_per_stream)"
	" VALUES ($1::text, nullif($2::int, 0), nullif($3::bigint, 0))"
	" ON CONFLICT (category) DO UPDATE SET max_age_days = EXCLUDED.max_age_days,"
	" max_count_per_stream = EXCLUDED.max_count_per_stream, updated_at = now()",
	3, false,
};
static const struct fd_stmt policy_list_stmt = {
	"fd_retention_list",
	"SELECT coalesce(json_agg(" POLICY_JSON " ORDER BY category COLLATE \"C\"), '[]')::text"
	" FROM retention_policies",
	0, false,
};
static const struct fd_stmt policy_get_stmt = {
	"fd_retention_get",
	"SELECT " POLICY_JSON "::text FROM retention_policies WHERE category = $1::text",
	1, false,
};
static const struct fd_stmt policy_delete_stmt = {
	"fd_retention_delete",
	"DELETE FROM retention_policies WHERE category = $1::text",
	1, false,
};

enum fd_err fd_retention_put(struct fd_pool *pool, const char *category, int max_age_days, int64_t max_count)
{
	if (!fd_stream_name_valid(category) || strchr(category, '-') || max_age_days < 0 || max_count < 0 ||
	    (max_age_days == 0 && max_count == 0))
		return FD_ERR_INVAL;
	char age_s[16], count_s[24];
	snprintf(age_s, sizeof age_s, "%d", max_age_days);
	snprintf(count_s, sizeof count_s, "%" PRId64, max_count);
	const char *params[3] = { category, age_s, count_s };
	PGresult *res = NULL;
	enum fd_err err = run_pooled(pool, &policy_put_stmt, params, &res);
	PQclear(res);
	return err;
}

/* The first column of the first row, copied; FD_ERR_NOTFOUND for no row. */
static enum fd_err first_text(PGresult *res, char **out)
{
	if (PQntuples(res) == 0)
		return FD_ERR_NOTFOUND;
	return (*out = strdup(PQgetvalue(res, 0, 0))) ? FD_OK : FD_ERR_NOMEM;
}

enum fd_err fd_retention_list(struct fd_pool *pool, char **json_out)
{
	*json_out = NULL;
	PGresult *res = NULL;
	enum fd_err err = run_pooled(pool, &policy_list_stmt, NULL, &res);
	if (!err)
		err = first_text(res, json_out);
	PQclear(res);
	return err;
}

enum fd_err fd_retention_get(struct fd_pool *pool, const char *category, char **json_out)
{
	*json_out = NULL;
	const char *params[1] = { category };
	PGresult *res = NULL;
	enum fd_err err = run_pooled(pool, &policy_get_stmt, params, &res);
	if (!err)
		err = first_text(res, json_out);
	PQclear(res);
	return err;
}

enum fd_err fd_retention_delete(struct fd_pool *pool, const char *category)
{
	const char *params[1] = { category };
	PGresult *res = NULL;
	enum fd_err err = run_pooled(pool, &policy_delete_stmt, params, &res);
	if (!err && strcmp(PQcmdTuples(res), "0") == 0)
		err = FD_ERR_NOTFOUND;
	PQclear(res);
	return err;
}

/* ---- the retention round ------------------------------------------------ */

static const struct fd_stmt by_age_stmt = {
	"fd_retention_by_age",
	"SELECT " FD_EVENT_COLS " FROM fd_retention_by_age($1::text,"
	" now() - $2::int * interval '1 day', $3::int, $4::int, $5::int) e",
	5, true,
};
static const struct fd_stmt by_count_stmt = {
	"fd_retention_by_count",
	"SELECT " FD_EVENT_COLS " FROM fd_retention_by_count($1::text, $2::bigint, $3::int, $4::text, $5::int) e",
	5, true,
};
static const struct fd_stmt remove_stmt = {
	"fd_retention_remove",
	"DELETE FROM events WHERE event_id = ANY ($1::uuid[])",
	1, false,
};
static const struct fd_stmt policies_stmt = {
	"fd_retention_policies",
	"SELECT category, coalesce(max_age_days, 0), coalesce(max_count_per_stream, 0) FROM retention_policies"
	" ORDER BY category COLLATE \"C\"",
	0, false,
};

struct feed_pos {
	struct fd_cursor pos;
	int row;
};

static int feed_pos_cmp(const void *a, const void *b)
{
	return fd_cursor_cmp(&((const struct feed_pos *)a)->pos, &((const struct feed_pos *)b)->pos);
}

/* Write all of buf to fd. */
static bool write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		len -= (size_t)w;
	}
	return true;
}

/*
 * Compress text into a gzip member (no name, no time: the same events give
 * the same bytes) and write it to `path` durably: a temporary file, fsync,
 * rename, fsync of the directory.
 */
static enum fd_err write_archive(const char *dir, const char *name, const char *text, size_t len)
{
	char path[4096], tmp[4096];
	if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path ||
	    (size_t)snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name) >= sizeof tmp)
		return FD_ERR_INVAL;
	enum fd_err err = FD_ERR_IO;
	unsigned char *out = NULL;
	int fd = -1, dfd = -1;
	z_stream zs = { 0 };
	if (deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return FD_ERR_NOMEM;
	uLong cap = deflateBound(&zs, (uLong)len);
	if (!(out = malloc(cap))) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	zs.next_in = (Bytef *)text;
	zs.avail_in = (uInt)len;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
		goto done;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640)) < 0)
		goto done;
	if (!write_all(fd, out, zs.total_out) || fsync(fd) != 0)
		goto done;
	if (close(fd) != 0) {
		fd = -1;
		goto done;
	}
	fd = -1;
	if (rename(tmp, path) != 0)
		goto done;
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || fsync(dfd) != 0)
		goto done;
	err = FD_OK;
done:
	if (err == FD_ERR_IO)
		fd_log_fields(FD_LOG_ERROR, "cannot write a retention archive",
			      json_pack("{s:s, s:s}", "path", path, "error", strerror(errno)));
	if (fd >= 0) {
		close(fd);
		unlink(tmp);
	}
	if (dfd >= 0)
		close(dfd);
	deflateEnd(&zs);
	free(out);
	return err;
}

/*
 * Archive (when configured) and remove the events of one candidate result.
 * *n: how many there were.
 */
static enum fd_err archive_and_remove(PGconn *conn, const struct fd_retention_config *cfg, const char *category,
				      PGresult *res, int64_t *n)
{
	int rows = PQntuples(res);
	*n = 0;
	if (rows == 0)
		return FD_OK;
	if (PQnfields(res) != FD_EVENT_NCOLS)
		return FD_ERR_INTERNAL;
	enum fd_err err = FD_OK;
	struct feed_pos *order = malloc((size_t)rows * sizeof *order);
	struct fd_buf ids = FD_BUF_INIT, lines = FD_BUF_INIT;
	if (!order)
		return FD_ERR_NOMEM;
	for (int i = 0; i < rows; i++) {
		uint64_t tx, seq;
		if (PQgetlength(res, i, 0) != 16 || !fd_bin_u64(res, i, FD_EVENT_NCOLS - 2, &tx) ||
		    !fd_bin_u64(res, i, FD_EVENT_NCOLS - 1, &seq)) {
			err = FD_ERR_INTERNAL;
			goto done;
		}
		order[i] = (struct feed_pos){ { tx, (int64_t)seq }, i };
	}
	qsort(order, (size_t)rows, sizeof *order, feed_pos_cmp);
	err = fd_buf_append(&ids, "{", 1);
	for (int i = 0; i < rows && !err; i++) {
		struct fd_uuid id;
		char id_s[FD_UUID_STRLEN + 1];
		memcpy(id.b, PQgetvalue(res, order[i].row, 0), 16);
		fd_uuid_format(&id, id_s);
		err = fd_store_array_elem(&ids, id_s, i == 0);
		if (!err && cfg->archive_dir) {
			err = fd_render_event_stored(&lines, res, order[i].row, 0);
			if (!err)
				err = fd_buf_append(&lines, "\n", 1);
		}
	}
	if (!err)
		err = fd_buf_append(&ids, "}", 1);
	if (err)
		goto done;
	if (cfg->archive_dir) {
		char first[FD_CURSOR_STRLEN], last[FD_CURSOR_STRLEN], name[FD_STREAM_MAX + 2 * FD_CURSOR_STRLEN + 16];
		fd_cursor_format(&order[0].pos, first, sizeof first);
		fd_cursor_format(&order[rows - 1].pos, last, sizeof last);
		snprintf(name, sizeof name, "%s.%s.%s.jsonl.gz", category, first, last);
		if ((err = write_archive(cfg->archive_dir, name, lines.data, lines.len)))
			goto done;
		if (cfg->archived)
			*cfg->archived += rows;
		if (cfg->files)
			*cfg->files += 1;
	}
	const char *params[1] = { ids.data };
	PGresult *d = NULL;
	if ((err = fd_sql_exec(conn, &remove_stmt, params, &d)) == FD_OK)
		*n = strtoll(PQcmdTuples(d), NULL, 10);
	PQclear(d);
done:
	free(order);
	fd_buf_release(&ids);
	fd_buf_release(&lines);
	return err;
}

static int category_schema(const struct fd_retention_config *cfg, const char *category, bool *aggregate)
{
	*aggregate = false;
	for (size_t i = 0; i < cfg->naggregates; i++)
		if (strcmp(cfg->aggregates[i].category, category) == 0) {
			*aggregate = true;
			return cfg->aggregates[i].snapshot_schema;
		}
	return -1;
}

static bool stopping(const struct fd_retention_config *cfg)
{
	return cfg->stop && atomic_load(cfg->stop);
}

enum fd_err fd_retention_round(PGconn *conn, const struct fd_retention_config *cfg, int64_t *removed)
{
	*removed = 0;
	PGresult *pol = NULL;
	enum fd_err err = fd_sql_exec(conn, &policies_stmt, NULL, &pol);
	if (err) {
		PQclear(pol); /* the failed statement's result, when there is one */
		return err;
	}
	char batch_s[16], scan_s[16];
	unsigned batch = cfg->batch ? cfg->batch : 1000;
	snprintf(batch_s, sizeof batch_s, "%u", batch);
	snprintf(scan_s, sizeof scan_s, "%u", batch * 10);
	for (int p = 0; p < PQntuples(pol) && !err && !stopping(cfg); p++) {
		const char *category = PQgetvalue(pol, p, 0);
		const char *age = PQgetvalue(pol, p, 1), *count = PQgetvalue(pol, p, 2);
		bool aggregate;
		int schema = category_schema(cfg, category, &aggregate);
		char schema_s[16];
		/* An aggregate without snapshots (-1) keeps everything of its current lives: no snapshot covers it. */
		snprintf(schema_s, sizeof schema_s, "%d", aggregate ? (schema < 0 ? INT32_MAX : schema) : -1);
		if (strcmp(age, "0") != 0) {
			for (;;) {
				const char *params[5] = { category, age, schema_s, batch_s, scan_s };
				PGresult *res = NULL;
				int64_t n = 0;
				if ((err = fd_sql_exec(conn, &by_age_stmt, params, &res)) == FD_OK)
					err = archive_and_remove(conn, cfg, category, res, &n);
				PQclear(res);
				*removed += n;
				if (err || n < (int64_t)batch || stopping(cfg))
					break;
			}
		}
		if (!err && strcmp(count, "0") != 0) {
			char after[FD_STREAM_MAX + 1] = "";
			for (;;) {
				const char *params[5] = { category, count, schema_s, after, batch_s };
				PGresult *res = NULL;
				int64_t n = 0;
				if ((err = fd_sql_exec(conn, &by_count_stmt, params, &res)) == FD_OK && PQntuples(res) > 0)
					snprintf(after, sizeof after, "%s", PQgetvalue(res, PQntuples(res) - 1, 1));
				if (!err)
					err = archive_and_remove(conn, cfg, category, res, &n);
				bool full = res && PQntuples(res) >= (int)batch;
				PQclear(res);
				*removed += n;
				if (err || !full || stopping(cfg))
					break;
			}
		}
	}
	PQclear(pol);
	return err;
}

/* ---- restore ------------------------------------------------------------ */

/*
 * Up to RESTORE_BATCH events in one statement.  Streams missing are created
 * at the highest version restored (raised to it when lower), events of
 * tombstoned streams are skipped, and events already stored (by id, or by
 * stream and version) are left alone.  The events keep their position
 * (tx_id, seq): a follower past it has seen them when they were first
 * written, one from the start reads them in their place.
 */
static const struct fd_stmt restore_stmt = {
	"fd_archive_restore",
	"WITH r AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::jsonb[],"
	"  $6::jsonb[], $7::timestamptz[], $8::text[], $9::bigint[])"
	"  AS r(id, stream, version, type, data, meta, at, tx, seq)),"
	" s AS (INSERT INTO streams (stream_id, category, version)"
	"  SELECT r.stream, split_part(r.stream, '-', 1), max(r.version) FROM r GROUP BY r.stream"
	"  ON CONFLICT (stream_id) DO UPDATE SET version = greatest(streams.version, EXCLUDED.version)"
	"  RETURNING stream_id, tombstoned),"
	" ins AS (INSERT INTO events (seq, tx_id, event_id, stream_id, category, version, type, data, metadata,"
	"  recorded_at) OVERRIDING SYSTEM VALUE"
	"  SELECT r.seq, r.tx::xid8, r.id, r.stream, split_part(r.stream, '-', 1), r.version, r.type, r.data,"
	"  r.meta, r.at FROM r JOIN s ON s.stream_id = r.stream WHERE NOT s.tombstoned"
	"  ON CONFLICT DO NOTHING RETURNING 1)"
	" SELECT count(*) FROM ins",
	9, false,
};

enum { RESTORE_BATCH = 500, RESTORE_COLS = 9 };

struct restore_batch {
	struct fd_buf col[RESTORE_COLS];
	size_t n;
};

static void restore_batch_reset(struct restore_batch *b)
{
	for (int i = 0; i < RESTORE_COLS; i++) {
		fd_buf_release(&b->col[i]);
		b->col[i] = (struct fd_buf)FD_BUF_INIT;
	}
	b->n = 0;
}

/*
 * Add one archived line (doc: it parsed) to the batch; false when it is not
 * an archived event.  data and metadata go to PostgreSQL as their text in
 * the line, so numbers keep their digits.
 */
static bool restore_add(struct restore_batch *b, const json_t *doc, const char *line, size_t len, enum fd_err *err)
{
	struct fd_span whole = { 0, len }, data, meta;
	const char *id = json_string_value(json_object_get(doc, "event_id"));
	const char *stream = json_string_value(json_object_get(doc, "stream"));
	const char *type = json_string_value(json_object_get(doc, "type"));
	const char *at = json_string_value(json_object_get(doc, "recorded_at"));
	const char *pos = json_string_value(json_object_get(doc, "position"));
	json_t *jv = json_object_get(doc, "version");
	struct fd_uuid uuid;
	struct fd_cursor cursor;
	if (!id || !fd_uuid_parse(id, &uuid) || !fd_stream_name_valid(stream) || !type || !at || !pos ||
	    !fd_cursor_parse(pos, &cursor) || !json_is_number(jv) || json_number_value(jv) < 1 ||
	    !json_is_object(json_object_get(doc, "data")) || !json_is_object(json_object_get(doc, "metadata")) ||
	    !fd_json_member(line, len, whole, "data", &data) || !fd_json_member(line, len, whole, "metadata", &meta))
		return false;
	char version[24], tx[24], seq[24];
	snprintf(version, sizeof version, "%.0f", json_number_value(jv));
	snprintf(tx, sizeof tx, "%" PRIu64, cursor.tx);
	snprintf(seq, sizeof seq, "%" PRId64, cursor.seq);
	char *data_s = strndup(line + data.start, data.end - data.start);
	char *meta_s = strndup(line + meta.start, meta.end - meta.start);
	const char *vals[RESTORE_COLS] = { id, stream, version, type, data_s, meta_s, at, tx, seq };
	if (!data_s || !meta_s)
		*err = FD_ERR_NOMEM;
	for (int i = 0; i < RESTORE_COLS && !*err; i++) {
		if (b->n == 0)
			*err = fd_buf_append(&b->col[i], "{", 1);
		if (!*err)
			*err = fd_store_array_elem(&b->col[i], vals[i], b->n == 0);
	}
	free(data_s);
	free(meta_s);
	b->n++;
	return true;
}

static enum fd_err restore_flush(PGconn *conn, struct restore_batch *b, size_t *restored, size_t *skipped)
{
	if (b->n == 0)
		return FD_OK;
	enum fd_err err = FD_OK;
	const char *params[RESTORE_COLS];
	for (int i = 0; i < RESTORE_COLS && !err; i++) {
		err = fd_buf_append(&b->col[i], "}", 1);
		params[i] = b->col[i].data;
	}
	PGresult *res = NULL;
	if (!err && (err = fd_sql_exec(conn, &restore_stmt, params, &res)) == FD_OK) {
		size_t w = (size_t)strtoull(PQgetvalue(res, 0, 0), NULL, 10);
		*restored += w;
		*skipped += b->n - w;
	} else if (res) {
		fd_log_fields(FD_LOG_ERROR, "archive restore failed",
			      json_pack("{s:s}", "detail", PQresultErrorMessage(res)));
	}
	PQclear(res);
	restore_batch_reset(b);
	return err;
}

enum fd_err fd_archive_restore(PGconn *conn, const char *path, size_t *restored, size_t *skipped, char *errbuf,
			       size_t errlen)
{
	*restored = *skipped = 0;
	gzFile gz = gzopen(path, "rb");
	if (!gz) {
		snprintf(errbuf, errlen, "cannot open %s: %s", path, strerror(errno));
		return FD_ERR_IO;
	}
	struct restore_batch b;
	for (int i = 0; i < RESTORE_COLS; i++)
		b.col[i] = (struct fd_buf)FD_BUF_INIT;
	b.n = 0;
	struct fd_buf line = FD_BUF_INIT;
	enum fd_err err = FD_OK;
	size_t lineno = 0;
	char chunk[65536];
	bool eof = false;
	while (!err && !eof) {
		/* read one line, however long */
		line.len = 0;
		for (;;) {
			if (!gzgets(gz, chunk, sizeof chunk)) {
				int zerr;
				const char *msg = gzerror(gz, &zerr);
				if (zerr != Z_OK) {
					snprintf(errbuf, errlen, "%s is not a readable gzip file: %s", path, msg);
					err = FD_ERR_IO;
				}
				eof = true;
				break;
			}
			size_t cl = strlen(chunk);
			if ((err = fd_buf_append(&line, chunk, cl)))
				break;
			if (cl > 0 && chunk[cl - 1] == '\n')
				break;
		}
		if (err || line.len == 0)
			continue;
		lineno++;
		if (line.data[line.len - 1] == '\n')
			line.data[--line.len] = '\0';
		json_t *doc = json_loadb(line.data, line.len, JSON_REJECT_DUPLICATES, NULL);
		if (!doc) /* integers past 64 bits in data */
			doc = json_loadb(line.data, line.len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, NULL);
		bool ok = json_is_object(doc) && restore_add(&b, doc, line.data, line.len, &err);
		json_decref(doc);
		if (!ok && !err) {
			snprintf(errbuf, errlen, "%s line %zu is not an archived event", path, lineno);
			err = FD_ERR_INVAL;
		}
		if (!err && b.n >= RESTORE_BATCH)
			err = restore_flush(conn, &b, restored, skipped);
	}
	if (!err)
		err = restore_flush(conn, &b, restored, skipped);
	if (err && errbuf[0] == '\0')
		snprintf(errbuf, errlen, "restoring %s failed: %s", path, fd_err_name(err));
	restore_batch_reset(&b);
	fd_buf_release(&line);
	gzclose(gz);
	return err;
}
