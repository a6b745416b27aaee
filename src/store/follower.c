/*
 * follower.c - the one reader of feed batches past a follower's own cursor
 * (the projector's projections and the saga intake; contract in events.h).
 *
 * A batch is three statements on the caller's connection, inside its
 * transaction: the visible end (pg_snapshot_xmin), the events past the
 * cursor below it, and, when the batch is short of the limit (caught up),
 * the newest visible event of any category and whether committed events lie
 * beyond the visible end.  The head statement reads with the visible end of
 * the batch, so the two agree even though they are separate statements.
 *
 * Threading: runs on the caller's connection; no state of its own.
 */
#include "factd/events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/buf.h"
#include "factd/log.h"
#include "factd/sql.h"
#include "internal.h"
#include "store/personal.h"

/* A batch of events past a cursor ($1, $2) below the visible end ($3); $4 is a category, or an array of them. */
#define BATCH_SQL(filter)                                                                                     \
	"SELECT event_id::text, stream_id, category, version, type, data::text, metadata::text,"              \
	" to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), tx_id::text, seq"      \
	" FROM events WHERE (tx_id, seq) > ($1::xid8, $2::bigint) AND tx_id < $3::xid8"                       \
	" AND " filter " ORDER BY events.tx_id, events.seq LIMIT $5::bigint"
enum { C_ID, C_STREAM, C_CATEGORY, C_VERSION, C_TYPE, C_DATA, C_METADATA, C_AT, C_TX, C_SEQ };

/*
 * Prepared: each is a lookup or a range of events_feed_idx or
 * events_category_feed_idx read in index order, a plan that fits every
 * cursor.  (The projector's sessions, which keep generic plans, also have
 * no sequential scans to choose from.)
 */
static const struct fd_stmt xmin_stmt = { "fd_feed_xmin", "SELECT pg_snapshot_xmin(pg_current_snapshot())::text", 0,
					  false };
static const struct fd_stmt one_category_stmt = { "fd_feed_batch1", BATCH_SQL("category = $4::text"), 5, false };
/*
 * The newest visible event past the cursor (tx_id and seq as text; NULL when
 * there is none) and whether committed events lie beyond the visible end,
 * held back by an older transaction still running.  $1 the visible end, $2
 * and $3 the cursor.  Both are reads of events_feed_idx from one end.
 */
static const struct fd_stmt head_stmt = {
	"fd_feed_head",
	"SELECT h.tx_id::text, h.seq::text,"
	" coalesce((SELECT tx_id FROM events ORDER BY tx_id DESC LIMIT 1) >= $1::xid8, false)"
	" FROM (SELECT) one LEFT JOIN LATERAL (SELECT tx_id, seq FROM events WHERE tx_id < $1::xid8"
	" AND (tx_id, seq) > ($2::xid8, $3::bigint) ORDER BY events.tx_id DESC, events.seq DESC LIMIT 1) h"
	" ON true",
	3, false
};
/* Unprepared: a generic plan of "= ANY (array)" could sort every event of the categories past the cursor. */
static const char several_sql[] = BATCH_SQL("category = ANY ($4::text[])");
static const char typed_sql[] = BATCH_SQL("category = ANY ($4::text[]) AND type = ANY ($6::text[])");

static void log_failure(const struct fd_follow *f, const char *what, PGconn *conn, const PGresult *res)
{
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
	fd_log_fields(FD_LOG_WARN, "feed follower failed",
		      json_pack("{s:s, s:s, s:s}", "follower", f->name, "statement", what, "error", msg ? msg : ""));
}

/* A NULL-terminated list as a PostgreSQL array literal. */
static enum fd_err array_literal(struct fd_buf *b, const char *const *list)
{
	enum fd_err err = fd_buf_append(b, "{", 1);
	for (size_t i = 0; !err && list && list[i]; i++)
		err = fd_store_array_elem(b, list[i], i == 0);
	return err ? err : fd_buf_append(b, "}", 1);
}

/*
 * An event's data or metadata.  jsonb keeps integers of any size, jansson
 * only 64-bit ones, and the stream API stores a client's numbers as
 * written: such a document is read with its integers as reals rather than
 * not at all.
 */
static enum fd_err parse_json(const struct fd_follow *f, const PGresult *res, int row, int col, json_t **out)
{
	json_error_t e;
	const char *text = PQgetvalue(res, row, col);
	if ((*out = json_loads(text, 0, NULL)) || (*out = json_loads(text, JSON_DECODE_INT_AS_REAL, &e)))
		return FD_OK;
	enum fd_err err = json_error_code(&e) == json_error_out_of_memory ? FD_ERR_NOMEM : FD_ERR_INVAL;
	char position[FD_CURSOR_STRLEN];
	snprintf(position, sizeof position, "%s-%s", PQgetvalue(res, row, C_TX), PQgetvalue(res, row, C_SEQ));
	fd_log_fields(FD_LOG_ERROR, "feed follower cannot read an event; it stops before it",
		      json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "follower", f->name, "event_id",
				PQgetvalue(res, row, C_ID), "stream", PQgetvalue(res, row, C_STREAM), "version",
				PQgetvalue(res, row, C_VERSION), "type", PQgetvalue(res, row, C_TYPE), "position",
				position, "column", col == C_DATA ? "data" : "metadata", "error", e.text));
	return err;
}

/*
 * The type filter as an array literal: f->types, and with schemas every
 * earlier name that upcasters rename into one of them in the follower's
 * categories (a stored ProductStocked is read as the StockReceived asked for).
 */
static enum fd_err types_literal(struct fd_buf *b, const struct fd_follow *f)
{
	enum fd_err err = fd_buf_append(b, "{", 1);
	size_t k = 0;
	for (size_t i = 0; !err && f->types[i]; i++) {
		err = fd_store_array_elem(b, f->types[i], k++ == 0);
		for (size_t c = 0; !err && f->schemas && f->categories[c]; c++) {
			const char *names[16];
			size_t n = fd_event_schema_names(fd_schemas_find(f->schemas, f->categories[c]), f->types[i], names,
							 16);
			for (size_t j = 1; !err && j < n && j < 16; j++)
				err = fd_store_array_elem(b, names[j], k++ == 0);
		}
	}
	return err ? err : fd_buf_append(b, "}", 1);
}

/* Bring a parsed event to the current version of its type; logged (with the event) when it cannot be. */
static enum fd_err upcast(const struct fd_follow *f, const PGresult *res, int row, struct fd_feed_event *ev)
{
	const char *stored_type = ev->type;
	int stored = 1;
	enum fd_err err = fd_event_schema_version_of(ev->metadata, &stored);
	ev->schema_version = stored;
	if (!err && f->schemas)
		err = fd_schemas_upcast(f->schemas, ev->category, ev->metadata, &ev->type, &ev->schema_version, ev->data);
	if (!err || err == FD_ERR_NOMEM)
		return err;
	if (err != FD_ERR_SCHEMA)
		err = FD_ERR_INVAL;
	char position[FD_CURSOR_STRLEN];
	snprintf(position, sizeof position, "%s-%s", PQgetvalue(res, row, C_TX), PQgetvalue(res, row, C_SEQ));
	fd_log_fields(FD_LOG_ERROR,
		      err == FD_ERR_SCHEMA ? "feed follower met an event of a newer schema version; it stops before it"
					   : "feed follower cannot upcast an event; it stops before it",
		      json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:O?, s:i}", "follower", f->name, "event_id",
				PQgetvalue(res, row, C_ID), "stream", PQgetvalue(res, row, C_STREAM), "version",
				PQgetvalue(res, row, C_VERSION), "type", stored_type, "position", position,
				"schema_version", json_object_get(ev->metadata, FD_SCHEMA_VERSION_KEY), "known_version",
				fd_event_schema_version(fd_schemas_find(f->schemas, ev->category), stored_type)));
	return err;
}

static enum fd_err read_events(PGconn *conn, const struct fd_follow *f, struct fd_follow_batch *b)
{
	int n = PQntuples(b->res);
	if (n == 0)
		return FD_OK;
	if (!(b->events = calloc((size_t)n, sizeof *b->events)))
		return FD_ERR_NOMEM;
	for (int i = 0; i < n; i++) {
		struct fd_feed_event *ev = &b->events[i];
		*ev = (struct fd_feed_event){
			.event_id = PQgetvalue(b->res, i, C_ID),
			.stream = PQgetvalue(b->res, i, C_STREAM),
			.category = PQgetvalue(b->res, i, C_CATEGORY),
			.version = strtoll(PQgetvalue(b->res, i, C_VERSION), NULL, 10),
			.type = PQgetvalue(b->res, i, C_TYPE),
			.recorded_at = PQgetvalue(b->res, i, C_AT),
			.position = { strtoull(PQgetvalue(b->res, i, C_TX), NULL, 10),
				      strtoll(PQgetvalue(b->res, i, C_SEQ), NULL, 10) },
		};
		b->count++; /* from here on released with the batch */
		enum fd_err err = parse_json(f, b->res, i, C_DATA, &ev->data);
		if (!err)
			err = parse_json(f, b->res, i, C_METADATA, &ev->metadata);
		if (err)
			return err;
	}
	/* personal values: opened, or null when their subject was erased, before anything reads them */
	json_t *subjects = NULL;
	struct fd_subject_keys *keys = NULL;
	enum fd_err err = FD_OK;
	for (int i = 0; i < n && !err; i++) {
		const char *s = fd_personal_subject_of(b->events[i].metadata);
		if (s && ((!subjects && !(subjects = json_array())) || json_array_append_new(subjects, json_string(s))))
			err = FD_ERR_NOMEM;
	}
	if (!err && subjects)
		err = fd_subject_keys_fetch(conn, f->schemas ? f->schemas->keyring : NULL, subjects, &keys);
	json_decref(subjects);
	for (int i = 0; i < n && !err; i++) {
		struct fd_feed_event *ev = &b->events[i];
		if (keys && (err = fd_personal_unseal(keys, ev->metadata, ev->data, NULL))) {
			fd_log_fields(FD_LOG_ERROR, "feed follower cannot open an event's personal data; it stops before it",
				      json_pack("{s:s, s:s, s:s, s:s, s:s}", "follower", f->name, "event_id", ev->event_id,
						"stream", ev->stream, "version", PQgetvalue(b->res, i, C_VERSION), "error",
						fd_err_name(err)));
			break;
		}
		err = upcast(f, b->res, i, ev);
	}
	fd_subject_keys_free(keys);
	return err;
}

enum fd_err fd_feed_follow(PGconn *conn, struct fd_cursor after, const struct fd_follow *f,
			   struct fd_follow_batch *out)
{
	*out = (struct fd_follow_batch){ .next = after };
	if (!f->categories || !f->categories[0] || f->limit == 0)
		return FD_ERR_INVAL;
	char tx[24], seq[24], limit[16];
	snprintf(tx, sizeof tx, "%llu", (unsigned long long)after.tx);
	snprintf(seq, sizeof seq, "%lld", (long long)after.seq);
	snprintf(limit, sizeof limit, "%u", f->limit);
	struct fd_buf cats = FD_BUF_INIT, types = FD_BUF_INIT;
	PGresult *x = NULL, *head = NULL;
	const char *what = "visible end";
	enum fd_err err = fd_sql_exec(conn, &xmin_stmt, NULL, &x);
	if (err)
		goto done;
	const char *xmin = PQgetvalue(x, 0, 0);
	what = "batch";
	if (!f->categories[1] && !f->types) {
		const char *p[] = { tx, seq, xmin, f->categories[0], limit };
		err = fd_sql_exec(conn, &one_category_stmt, p, &out->res);
	} else if ((err = array_literal(&cats, f->categories)) || (f->types && (err = types_literal(&types, f)))) {
		what = "filter";
	} else {
		const char *p[] = { tx, seq, xmin, cats.data, limit, types.data };
		err = fd_sql_once(conn, f->types ? typed_sql : several_sql, f->types ? 6 : 5, p, &out->res);
	}
	if (err)
		goto done;
	if ((err = read_events(conn, f, out))) {
		what = NULL; /* logged with the event */
		goto done;
	}
	if (out->count)
		out->next = out->events[out->count - 1].position;
	if (out->count < f->limit) {
		out->caught_up = true;
		char ntx[24], nseq[24];
		snprintf(ntx, sizeof ntx, "%llu", (unsigned long long)out->next.tx);
		snprintf(nseq, sizeof nseq, "%lld", (long long)out->next.seq);
		const char *hp[] = { xmin, ntx, nseq };
		what = "head";
		if ((err = fd_sql_exec(conn, &head_stmt, hp, &head)))
			goto done;
		if (PQntuples(head) != 1) {
			err = FD_ERR_INTERNAL;
			goto done;
		}
		out->held_back = strcmp(PQgetvalue(head, 0, 2), "t") == 0;
		if (!PQgetisnull(head, 0, 0))
			out->next = (struct fd_cursor){ strtoull(PQgetvalue(head, 0, 0), NULL, 10),
							strtoll(PQgetvalue(head, 0, 1), NULL, 10) };
	}
done:
	if (err && what)
		log_failure(f, what, conn, head ? head : out->res ? out->res : x);
	if (err) {
		fd_follow_batch_release(out);
		out->next = after;
	}
	PQclear(x);
	PQclear(head);
	fd_buf_release(&cats);
	fd_buf_release(&types);
	return err;
}

void fd_follow_batch_release(struct fd_follow_batch *b)
{
	for (size_t i = 0; i < b->count; i++) {
		json_decref(b->events[i].data);
		json_decref(b->events[i].metadata);
	}
	free(b->events);
	PQclear(b->res);
	struct fd_cursor next = b->next;
	*b = (struct fd_follow_batch){ .next = next };
}
