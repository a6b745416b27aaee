/*
 * runner.c - the projector: one background thread per process that runs
 * every projection it can take the advisory lock of, applying feed events
 * and advancing each checkpoint in the same transaction; plus the status,
 * rebuild and wait functions the HTTP layer uses.
 *
 * Threading: fd_projector_* own one thread and its connections (one per
 * projection it runs, one for LISTEN).  fd_projection_status/request_rebuild/
 * wait borrow pool connections and are thread-safe.
 */
#include "factd/proj.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "factd/buf.h"
#include "factd/hash.h"
#include "factd/log.h"
#include "factd/notify.h"
#include "factd/sql.h"

#define SHADOW_SUFFIX "_next"
#define MAX_TABLE 64
#define STOP_CHECK_MS 100 /* the longest a stop waits for the projector's sleep */

/* The comment a projection's main table carries: the version of the definition that made it. */
#define VERSION_STAMP "factd projection %s version %u"

/*
 * The version a table was made by, read from its stamp (1 for tables from
 * before the stamps); NULL when the table does not exist.
 */
#define TABLE_VERSION(name)                                                                                   \
	"(SELECT coalesce(substring(obj_description(c, 'pg_class') FROM ' version ([0-9]+)$')::int, 1)"        \
	" FROM to_regclass(" name ") AS c WHERE c IS NOT NULL)"

struct worker {
	const struct fd_projection *def;
	PGconn *conn;
	bool owned;            /* this session holds the projection's advisory lock */
	bool stale;            /* the live tables are of an older version: served as they are, rebuilt */
	bool aside;            /* left to a newer factd (said once) */
	struct timespec retry_at;
	/*
	 * Rounds: one runs when a NOTIFY names one of the projection's
	 * categories (wanted), after a round that applied events (wanted: there
	 * may be more), and otherwise every idle_ms (idle_at), to notice
	 * rebuild requests, missed notifications and the advance of the feed
	 * past other categories.
	 */
	bool wanted;
	struct timespec idle_at;
	/*
	 * The last round stopped at the visible end of the feed with committed
	 * events beyond it, held back by an older transaction still running:
	 * the next round comes after held_ms (5 ms doubling to 1 s, at most
	 * idle_ms), as no NOTIFY will come for those events again.
	 */
	bool held_back;
	unsigned held_ms;
};

struct fd_projector {
	struct fd_projection_set set;    /* the projections it runs (cfg.projections points here) */
	struct fd_projector_config cfg;
	char *conninfo;
	pthread_t thread;
	atomic_bool stop;
	PGconn *listen;
	struct worker *workers;
	char owner[96];
};

/* The advisory-lock key of a projection: its name in its own namespace. */
static long long lock_key(const char *name)
{
	return fd_lock_key("factd.projection:", name);
}

static void log_pg(const char *what, const char *projection, PGconn *conn, const PGresult *res)
{
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
	fd_log_fields(FD_LOG_WARN, what, json_pack("{s:s, s:s}", "projection", projection, "error", msg ? msg : ""));
}

/* Run SQL once, unprepared (sql.h); true on success.  *out (optional) receives the result to PQclear. */
static bool run(PGconn *conn, const char *sql, int n, const char *const *params, PGresult **out)
{
	return fd_sql_once(conn, sql, n, params, out) == FD_OK;
}

/* Run parameterless SQL that may hold several statements. */
static bool run_script(PGconn *conn, const char *sql)
{
	return fd_sql_once(conn, sql, 0, NULL, NULL) == FD_OK;
}

/*
 * The statements every round runs, prepared on a connection the first time
 * they run there (sql.h; names do not collide with the handlers', which
 * are "<table>/<n>").  Generic plans are safe here: each is a lookup of one
 * row by key or a range of events_feed_idx in index order, and the session
 * has no sequential scans to choose from.  The feed itself is read by the
 * store's follower (fd_feed_follow), by the same policy.
 */
enum runner_stmt { R_LOCK, R_SAVE, R_SAVE_SHADOW, R_WAITING, R_COUNT };

static const struct fd_stmt runner_stmts[R_COUNT] = {
	[R_LOCK] = { "fd_proj_lock",
		     "SELECT tx_id::text, seq, rebuild_requested, rebuilding, rebuild_tx_id::text, rebuild_seq"
		     " FROM projections WHERE name = $1 FOR UPDATE",
		     1, false },
	[R_SAVE] = { "fd_proj_save",
		     "UPDATE projections SET tx_id = $2::xid8, seq = $3, last_event_at = coalesce($4::timestamptz,"
		     " last_event_at), updated_at = now() WHERE name = $1",
		     4, false },
	[R_SAVE_SHADOW] = { "fd_proj_save_shadow",
			    "UPDATE projections SET rebuild_tx_id = $2::xid8, rebuild_seq = $3, updated_at = now()"
			    " WHERE name = $1",
			    3, false },
	/*
	 * Is there anything for a round to do (a rebuild to start or run, or
	 * visible events past the checkpoint, of any category), and are
	 * committed events held back beyond the visible end?
	 */
	[R_WAITING] = { "fd_proj_waiting",
			"SELECT p.rebuild_requested OR p.rebuilding OR (SELECT e.tx_id FROM events e"
			" WHERE (e.tx_id, e.seq) > (p.tx_id, p.seq) AND e.tx_id < x.xmin ORDER BY e.tx_id, e.seq LIMIT 1)"
			" IS NOT NULL,"
			" coalesce((SELECT e.tx_id FROM events e ORDER BY e.tx_id DESC LIMIT 1) >= x.xmin, false)"
			" FROM projections p, (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) x WHERE p.name = $1",
			1, false },
};

/* run() for one of the runner's statements, prepared on first use. */
static bool run_stmt(PGconn *conn, enum runner_stmt id, const char *const *params, PGresult **out)
{
	return fd_sql_exec(conn, &runner_stmts[id], params, out) == FD_OK;
}

static void drop_conn(struct worker *w)
{
	PQfinish(w->conn);
	w->conn = NULL;
	w->owned = false;
	clock_gettime(CLOCK_MONOTONIC, &w->retry_at);
	w->retry_at.tv_sec += 1;
}

/* The suffix of a projection's i-th table: "" for the main one, then its companions; NULL past the last. */
static const char *table_suffix(const struct fd_projection *d, size_t i)
{
	if (i == 0)
		return "";
	return d->companions ? d->companions[i - 1] : NULL;
}

/* Append "DROP TABLE IF EXISTS" for every table of the projection under the name `base`. */
static enum fd_err append_drop(struct fd_buf *sql, const struct fd_projection *d, const char *base)
{
	enum fd_err err = FD_OK;
	const char *sfx;
	for (size_t i = 0; !err && (sfx = table_suffix(d, i)); i++)
		err = fd_buf_appendf(sql, "%s%s%s", i ? ", " : "DROP TABLE IF EXISTS ", base, sfx);
	return err;
}

/*
 * Make the projection's tables under the name `base` (live or shadow) in the
 * open transaction, dropping what an earlier copy left under that name, and
 * stamp the main table with the definition's version.
 */
static bool create_tables(PGconn *conn, const struct fd_projection *d, const char *base)
{
	struct fd_buf sql = FD_BUF_INIT;
	char *create = fd_projection_sql(d->create_sql, base);
	bool ok = create && !append_drop(&sql, d, base) &&
		  !fd_buf_appendf(&sql, "; %s; COMMENT ON TABLE %s IS '" VERSION_STAMP "'", create, base, d->name,
				  d->version) &&
		  run_script(conn, sql.data);
	free(create);
	fd_buf_release(&sql);
	return ok;
}

/* Put the shadow tables in place of the live ones, in the open transaction. */
static bool swap_tables(PGconn *conn, const struct fd_projection *d, const char *shadow)
{
	struct fd_buf sql = FD_BUF_INIT;
	enum fd_err err = append_drop(&sql, d, d->table);
	const char *sfx;
	for (size_t i = 0; !err && (sfx = table_suffix(d, i)); i++)
		err = fd_buf_appendf(&sql, "; ALTER TABLE %s%s RENAME TO %s%s", shadow, sfx, d->table, sfx);
	bool ok = !err && run_script(conn, sql.data);
	fd_buf_release(&sql);
	return ok;
}

/*
 * Take the projection if no other session has it: lock, make sure its row
 * and tables exist, and compare the tables' version with the definition's.
 * Live tables of an older version are marked stale (step() rebuilds them);
 * a shadow copy of another version is started over; tables of a newer
 * version belong to a newer factd, and this process leaves the projection
 * to it.
 */
static bool try_own(struct fd_projector *p, struct worker *w)
{
	const struct fd_projection *d = w->def;
	char key[24];
	snprintf(key, sizeof key, "%lld", lock_key(d->name));
	const char *kp[] = { key };
	PGresult *res = NULL;
	if (!run(w->conn, "SELECT pg_try_advisory_lock($1::bigint)", 1, kp, &res)) {
		log_pg("projection lock failed", d->name, w->conn, res);
		PQclear(res);
		return false;
	}
	bool got = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!got)
		return false;
	char shadow[MAX_TABLE + 8];
	snprintf(shadow, sizeof shadow, "%s%s", d->table, SHADOW_SUFFIX);
	const char *np[] = { d->name, d->table, shadow };
	res = NULL;
	bool ok = run(w->conn, "BEGIN", 0, NULL, NULL) &&
		  run(w->conn, "INSERT INTO projections (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", 1, np,
		      NULL) &&
		  run(w->conn,
		      "SELECT " TABLE_VERSION("$2") ", " TABLE_VERSION("$3") ", rebuilding FROM projections WHERE name = $1",
		      3, np, &res);
	/* -1: no such table */
	long live = ok && !PQgetisnull(res, 0, 0) ? atol(PQgetvalue(res, 0, 0)) : -1;
	bool rebuilding = ok && strcmp(PQgetvalue(res, 0, 2), "t") == 0;
	long copy = rebuilding && !PQgetisnull(res, 0, 1) ? atol(PQgetvalue(res, 0, 1)) : -1;
	PQclear(res);
	long mine = (long)d->version;
	if (ok && (live > mine || copy > mine)) {
		if (!w->aside)
			fd_log_fields(FD_LOG_WARN, "projection left to a newer factd",
				      json_pack("{s:s, s:i, s:i}", "projection", d->name, "version", (int)mine,
						"table_version", (int)(live > copy ? live : copy)));
		w->aside = true;
		drop_conn(w); /* rolls back and releases the lock */
		return false;
	}
	if (ok && live < 0)
		ok = create_tables(w->conn, d, d->table) &&
		     run(w->conn, "UPDATE projections SET tx_id = '0', seq = 0, last_event_at = NULL WHERE name = $1", 1,
			 np, NULL);
	if (ok && rebuilding && copy != mine)
		ok = run(w->conn,
			 "UPDATE projections SET rebuilding = false, rebuild_requested = true, updated_at = now()"
			 " WHERE name = $1",
			 1, np, NULL);
	const char *op[] = { d->name, p->owner };
	ok = ok && run(w->conn, "UPDATE projections SET owner = $2, updated_at = now() WHERE name = $1", 2, op, NULL) &&
	     run(w->conn, "COMMIT", 0, NULL, NULL);
	if (!ok) {
		log_pg("projection set-up failed", d->name, w->conn, NULL);
		drop_conn(w);
		return false;
	}
	w->aside = false;
	w->stale = live >= 0 && live < mine;
	fd_log_fields(FD_LOG_INFO, "projection taken", json_pack("{s:s, s:s}", "projection", d->name, "owner", p->owner));
	if (w->stale)
		fd_log_fields(FD_LOG_INFO, "projection tables are of an older version; rebuilding them",
			      json_pack("{s:s, s:i, s:i}", "projection", d->name, "version", (int)mine, "table_version",
					(int)live));
	return true;
}

/*
 * Prepare on the worker's connection those of the handler's statements for
 * `table` (the live one or the shadow) that are not prepared there yet.
 * Runs in the open transaction, before the batch's pipeline, inside which
 * nothing can be prepared; a statement that fails to prepare fails the
 * batch, and the next one tries it again.  A prepared statement outlives
 * the transaction it was made in, rolled back or not; sql.h remembers it
 * for as long as the connection lives.
 *
 * A statement is prepared for a table name, not a table: PostgreSQL parses
 * and plans it again, looking the names up afresh, whenever a table it uses
 * is dropped, renamed or altered.  So the statements prepared for
 * "order_summaries" write the shadow copy once a swap has renamed it into
 * place, and those prepared for "order_summaries_next" the new copy that
 * the next rebuild creates, never the table that was swapped in (the tests
 * hold PostgreSQL to this).
 */
static bool prepare_statements(struct worker *w, const char *table)
{
	const struct fd_projection *d = w->def;
	for (unsigned i = 0; d->statements && d->statements[i]; i++) {
		char name[FD_PROJECTION_STATEMENT_NAME];
		bool named = i < FD_PROJECTION_STATEMENTS_MAX && fd_projection_statement_name(table, i, name);
		if (named && fd_sql_is_prepared(w->conn, name))
			continue;
		char *sql = named ? fd_projection_sql(d->statements[i], table) : NULL;
		if (!sql) {
			fd_log_fields(FD_LOG_ERROR, "projection statement not prepared",
				      json_pack("{s:s, s:s, s:i}", "projection", d->name, "table", table, "statement", (int)i));
			return false;
		}
		PGresult *res = NULL;
		bool ok = fd_sql_prepare(w->conn, &(struct fd_stmt){ .name = name, .sql = sql }, &res) == FD_OK;
		free(sql);
		if (!ok)
			log_pg("projection statement not prepared", d->name, w->conn, res);
		PQclear(res);
		if (!ok)
			return false;
	}
	return true;
}

/*
 * Send what a batch's handlers queued, read every result, and leave pipeline
 * mode.  False when a statement failed (logged) or the connection broke;
 * the transaction is then aborted and the round fails.
 */
static bool end_pipeline(PGconn *conn, const char *projection)
{
	if (PQpipelineSync(conn) != 1)
		return false; /* the round's clean-up closes the connection */
	bool ok = true, logged = false;
	for (;;) {
		PGresult *r = PQgetResult(conn);
		if (!r) {
			if (PQstatus(conn) != CONNECTION_OK)
				break;
			continue; /* the end of one statement's results */
		}
		ExecStatusType st = PQresultStatus(r);
		if (st == PGRES_PIPELINE_SYNC) {
			PQclear(r);
			break;
		}
		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
			if (!logged && st != PGRES_PIPELINE_ABORTED) {
				log_pg("projection handler failed", projection, conn, r);
				logged = true;
			}
			ok = false;
		}
		PQclear(r);
	}
	return PQexitPipelineMode(conn) == 1 && ok;
}

/*
 * Apply one batch to `table` from cursor (tx, seq) inside the open
 * transaction, then write the new cursor to the given checkpoint columns.
 * *count receives the events applied; *caught_up whether the batch reached
 * the visible end of the feed.
 */
static bool apply_batch(struct fd_projector *p, struct worker *w, const char *table, const char *tx, const char *seq,
			bool shadow, size_t *count, bool *caught_up)
{
	const struct fd_projection *d = w->def;
	struct fd_cursor after = { strtoull(tx, NULL, 10), strtoll(seq, NULL, 10) };
	const struct fd_follow follow = { .name = d->name, .categories = d->categories, .limit = p->cfg.batch,
					  .schemas = p->cfg.schemas };
	struct fd_follow_batch b;
	bool ok = false;
	*count = 0;
	*caught_up = false;
	if (fd_feed_follow(w->conn, after, &follow, &b))
		goto done;
	/* The handlers' statements go out as one pipeline; results are read after the loop. */
	if (b.count > 0 && (!prepare_statements(w, table) || !PQenterPipelineMode(w->conn)))
		goto done;
	if (d->handle_batch && b.count > 0) {
		/* A batch handler writes the whole batch with set-based statements. */
		enum fd_err err = d->handle_batch(w->conn, table, b.events, b.count);
		if (err) {
			end_pipeline(w->conn, d->name);
			fd_log_fields(FD_LOG_ERROR, "projection handler failed",
				      json_pack("{s:s, s:s, s:I, s:s}", "projection", d->name, "first_stream",
						b.events[0].stream, "events", (json_int_t)b.count, "error", fd_err_name(err)));
			goto done;
		}
	}
	for (size_t i = 0; !d->handle_batch && i < b.count; i++) {
		const struct fd_feed_event *ev = &b.events[i];
		enum fd_err err = d->handle(w->conn, table, ev);
		if (err) {
			end_pipeline(w->conn, d->name);
			fd_log_fields(FD_LOG_ERROR, "projection handler failed",
				      json_pack("{s:s, s:s, s:I, s:s}", "projection", d->name, "stream", ev->stream,
						"version", (json_int_t)ev->version, "error", fd_err_name(err)));
			goto done;
		}
	}
	if (b.count > 0 && !end_pipeline(w->conn, d->name))
		goto done;
	*count = b.count;
	*caught_up = b.caught_up;
	/* Committed events past the visible end: an older transaction still runs. */
	w->held_back = w->held_back || b.held_back;
	if (fd_cursor_cmp(&b.next, &after) == 0) {
		ok = true; /* nothing moved: no checkpoint write */
		goto done;
	}
	char next_tx[24], next_seq[24];
	snprintf(next_tx, sizeof next_tx, "%llu", (unsigned long long)b.next.tx);
	snprintf(next_seq, sizeof next_seq, "%lld", (long long)b.next.seq);
	const char *cp[] = { d->name, next_tx, next_seq, b.count ? b.events[b.count - 1].recorded_at : NULL };
	ok = run_stmt(w->conn, shadow ? R_SAVE_SHADOW : R_SAVE, cp, NULL);
done:
	fd_follow_batch_release(&b);
	return ok;
}

/*
 * Is there anything for a round to do: a rebuild to start or run, or events
 * past the checkpoint, of any category?  One read-only statement, so a
 * quiet projection's timed rounds neither lock nor write (a round's
 * SELECT ... FOR UPDATE would take a transaction id, and its commit would
 * wait for a WAL flush).  True on error: the round reports it.
 */
static bool work_waiting(struct worker *w)
{
	if (w->stale)
		return true;
	const char *np[] = { w->def->name };
	PGresult *res = NULL;
	bool ok = run_stmt(w->conn, R_WAITING, np, &res);
	bool waiting = !ok || PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "f") != 0;
	w->held_back = ok && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	PQclear(res);
	return waiting;
}

/*
 * One round for an owned projection: a live batch, a rebuild batch, or a
 * swap.  A timed round (no NOTIFY asked for it) first checks that there is
 * anything to do.  Returns events applied, -1 on error.
 */
static long step(struct fd_projector *p, struct worker *w, bool timed)
{
	const struct fd_projection *d = w->def;
	const char *np[] = { d->name };
	PGresult *row = NULL;
	char shadow[MAX_TABLE + 8];
	snprintf(shadow, sizeof shadow, "%s%s", d->table, SHADOW_SUFFIX);
	long applied = 0;
	w->held_back = false;
	if (timed && !work_waiting(w))
		return 0;
	if (!run(w->conn, "BEGIN", 0, NULL, NULL) || !run_stmt(w->conn, R_LOCK, np, &row) || PQntuples(row) != 1)
		goto fail;
	bool requested = strcmp(PQgetvalue(row, 0, 2), "t") == 0;
	bool rebuilding = strcmp(PQgetvalue(row, 0, 3), "t") == 0;
	if ((requested || w->stale) && !rebuilding) {
		if (!create_tables(w->conn, d, shadow) ||
		    !run(w->conn,
			 "UPDATE projections SET rebuild_requested = false, rebuilding = true, rebuild_tx_id = '0',"
			 " rebuild_seq = 0, updated_at = now() WHERE name = $1",
			 1, np, NULL) ||
		    !run(w->conn, "COMMIT", 0, NULL, NULL))
			goto fail;
		fd_log_fields(FD_LOG_INFO, "projection rebuild started", json_pack("{s:s}", "projection", d->name));
		PQclear(row);
		return 1;
	}
	size_t n = 0;
	bool caught_up = false, swapped = false;
	if (!w->stale) {
		if (!apply_batch(p, w, d->table, PQgetvalue(row, 0, 0), PQgetvalue(row, 0, 1), false, &n, &caught_up))
			goto fail;
		applied += (long)n;
	}
	if (rebuilding) {
		size_t m = 0;
		bool shadow_done = false;
		if (!apply_batch(p, w, shadow, PQgetvalue(row, 0, 4), PQgetvalue(row, 0, 5), true, &m, &shadow_done))
			goto fail;
		applied += (long)m;
		if (shadow_done) {
			/*
			 * The copy has reached the visible end: swap it in and carry its
			 * checkpoint over, in a transaction of its own.  A reader queued
			 * behind the swap keeps the snapshot it started with; had the
			 * copy's last rows been written in the same transaction, that
			 * reader would find the new table without them.
			 */
			if (!run(w->conn, "COMMIT", 0, NULL, NULL) || !run(w->conn, "BEGIN", 0, NULL, NULL) ||
			    !run(w->conn, "SELECT 1 FROM projections WHERE name = $1 FOR UPDATE", 1, np, NULL) ||
			    !swap_tables(w->conn, d, shadow) ||
			    !run(w->conn,
				 "UPDATE projections SET tx_id = rebuild_tx_id, seq = rebuild_seq, rebuilding = false,"
				 " rebuild_tx_id = '0', rebuild_seq = 0, updated_at = now() WHERE name = $1",
				 1, np, NULL))
				goto fail;
			fd_log_fields(FD_LOG_INFO, "projection rebuilt", json_pack("{s:s}", "projection", d->name));
			applied++;
			swapped = true;
		}
	}
	if (!run(w->conn, "COMMIT", 0, NULL, NULL))
		goto fail;
	if (swapped)
		w->stale = false;
	PQclear(row);
	return applied;
fail:
	log_pg("projection round failed", d->name, w->conn, NULL);
	PQclear(row);
	if (PQstatus(w->conn) != CONNECTION_OK || PQpipelineStatus(w->conn) != PQ_PIPELINE_OFF) {
		drop_conn(w);
	} else {
		PGresult *rb = PQexec(w->conn, "ROLLBACK");
		PQclear(rb);
	}
	return -1;
}

static bool due(const struct timespec *at)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > at->tv_sec || (now.tv_sec == at->tv_sec && now.tv_nsec >= at->tv_nsec);
}

/* When the worker's next timed round is due: idle_ms from now, or sooner while events are held back. */
static void set_idle_at(struct fd_projector *p, struct worker *w)
{
	unsigned ms = p->cfg.idle_ms;
	if (w->held_back) {
		w->held_ms = w->held_ms ? w->held_ms * 2 : 5;
		if (w->held_ms > 1000)
			w->held_ms = 1000;
		if (w->held_ms < ms)
			ms = w->held_ms;
	} else {
		w->held_ms = 0;
	}
	clock_gettime(CLOCK_MONOTONIC, &w->idle_at);
	w->idle_at.tv_nsec += (long)(ms % 1000) * 1000000L;
	w->idle_at.tv_sec += ms / 1000 + w->idle_at.tv_nsec / 1000000000L;
	w->idle_at.tv_nsec %= 1000000000L;
}

/* Milliseconds until the earliest timed round or reconnect (0 when one is due). */
static int next_timed_ms(struct fd_projector *p)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long best = (long)p->cfg.idle_ms;
	for (size_t i = 0; i < p->cfg.projections->n; i++) {
		const struct worker *w = &p->workers[i];
		const struct timespec *at = w->conn ? &w->idle_at : &w->retry_at;
		long ms = (at->tv_sec - now.tv_sec) * 1000 + (at->tv_nsec - now.tv_nsec) / 1000000;
		if (ms < best)
			best = ms < 0 ? 0 : ms;
	}
	return (int)best;
}

/* Mark the projections a notification's payload concerns; true when any was. */
static bool wake_for(struct fd_projector *p, const char *payload)
{
	bool any = false;
	for (size_t i = 0; i < p->cfg.projections->n; i++) {
		struct worker *w = &p->workers[i];
		if (w->owned && fd_notify_payload_matches(payload, w->def->categories)) {
			w->wanted = true;
			any = true;
		}
	}
	return any;
}

/*
 * Sleep until a NOTIFY names a category of a projection this process runs,
 * or the next timed round is due.  Notifications of other categories are
 * read and let go: an append load the projections do not read costs them
 * no rounds.
 */
static void wait_for_events(struct fd_projector *p)
{
	if (!p->listen || PQstatus(p->listen) != CONNECTION_OK) {
		PQfinish(p->listen);
		p->listen = PQconnectdb(p->conninfo);
		fd_pg_log_notices(p->listen, "projector");
		PGresult *r = PQstatus(p->listen) == CONNECTION_OK ? PQexec(p->listen, "LISTEN factd_events") : NULL;
		bool ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
		PQclear(r);
		if (!ok) {
			PQfinish(p->listen);
			p->listen = NULL;
			usleep(p->cfg.idle_ms * 1000);
			return;
		}
	}
	bool woken = false;
	int left;
	while (!woken && !atomic_load(&p->stop) && (left = next_timed_ms(p)) > 0) {
		struct pollfd pfd = { .fd = PQsocket(p->listen), .events = POLLIN };
		int r = poll(&pfd, 1, left < STOP_CHECK_MS ? left : STOP_CHECK_MS);
		if (r < 0 && errno != EINTR)
			return;
		if (r <= 0)
			continue;
		if (!PQconsumeInput(p->listen))
			return; /* the connection is checked on the next wait */
		PGnotify *n;
		while ((n = PQnotifies(p->listen))) {
			woken = wake_for(p, n->extra) || woken;
			PQfreemem(n);
		}
	}
}

static void *projector_main(void *arg)
{
	struct fd_projector *p = arg;
	while (!atomic_load(&p->stop)) {
		bool progressed = false;
		for (size_t i = 0; i < p->cfg.projections->n && !atomic_load(&p->stop); i++) {
			struct worker *w = &p->workers[i];
			if (!w->conn) {
				if (!due(&w->retry_at))
					continue;
				w->conn = PQconnectdb(p->conninfo); /* a new session: nothing prepared on it */
				fd_pg_log_notices(w->conn, "projector");
				if (PQstatus(w->conn) != CONNECTION_OK || !run_script(w->conn, FD_PROJECTION_SESSION_SQL)) {
					drop_conn(w);
					continue;
				}
			}
			bool timed = !w->wanted;
			if (timed && !due(&w->idle_at))
				continue;
			w->wanted = false;
			if (!w->owned && !(w->owned = try_own(p, w))) {
				w->held_back = false;
				set_idle_at(p, w);
				continue;
			}
			long n = step(p, w, timed);
			set_idle_at(p, w);
			w->wanted = n > 0; /* go on until a round finds nothing */
			progressed = progressed || n > 0;
		}
		if (!progressed && !atomic_load(&p->stop))
			wait_for_events(p);
	}
	return NULL;
}

enum fd_err fd_projector_start(const struct fd_projector_config *cfg, struct fd_projector **out)
{
	struct fd_projector *p = calloc(1, sizeof *p);
	if (!p)
		return FD_ERR_NOMEM;
	p->cfg = *cfg;
	p->set = *cfg->projections; /* the caller's set may move; its items are the app's, static */
	p->cfg.projections = &p->set;
	if (!p->cfg.batch)
		p->cfg.batch = 500;
	if (!p->cfg.idle_ms)
		p->cfg.idle_ms = 200;
	p->conninfo = strdup(cfg->conninfo);
	p->workers = calloc(p->cfg.projections->n, sizeof *p->workers);
	if (!p->conninfo || !p->workers) {
		free(p->conninfo);
		free(p->workers);
		free(p);
		return FD_ERR_NOMEM;
	}
	char host[64] = "";
	gethostname(host, sizeof host - 1);
	snprintf(p->owner, sizeof p->owner, "%s:%ld", host, (long)getpid());
	for (size_t i = 0; i < p->cfg.projections->n; i++)
		p->workers[i].def = p->cfg.projections->items[i];
	atomic_init(&p->stop, false);
	if (pthread_create(&p->thread, NULL, projector_main, p) != 0) {
		free(p->conninfo);
		free(p->workers);
		free(p);
		return FD_ERR_NOMEM;
	}
	*out = p;
	return FD_OK;
}

void fd_projector_stop(struct fd_projector *p)
{
	if (!p)
		return;
	atomic_store(&p->stop, true);
	pthread_join(p->thread, NULL);
	for (size_t i = 0; i < p->cfg.projections->n; i++)
		PQfinish(p->workers[i].conn); /* closing the session releases its advisory lock */
	PQfinish(p->listen);
	free(p->workers);
	free(p->conninfo);
	free(p);
}

/* ---- status, rebuild, wait ---------------------------------------------- */

enum fd_err fd_projection_status(struct fd_pool *pool, const struct fd_projection_set *set, json_t **out)
{
	PGconn *conn = NULL;
	PGresult *res = NULL;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	json_t *arr = json_array();
	/* Index ranges only (see the statement); the setting ends with the transaction. */
	res = PQexec(conn, "BEGIN READ ONLY; SET LOCAL enable_seqscan = off");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		err = fd_pg_classify(conn, res);
	PQclear(res);
	res = NULL;
	for (size_t i = 0; i < set->n && arr && !err; i++) {
		const struct fd_projection *d = set->items[i];
		char key[24];
		snprintf(key, sizeof key, "%lld", lock_key(d->name));
		const char *params[] = { d->name, key };
		/*
		 * The lag is a range of events_feed_idx from the checkpoint to the
		 * visible end: the statement runs without sequential scans (see
		 * below), which the planner otherwise picks for a range whose
		 * bounds it cannot see, reading the whole table on every
		 * /projections and /metrics request.
		 */
		res = PQexecParams(conn,
			"WITH x AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin),"
			" p AS (SELECT * FROM projections WHERE name = $1),"
			" c AS (SELECT coalesce((SELECT tx_id FROM p), '0'::xid8) AS tx, coalesce((SELECT seq FROM p), 0) AS seq),"
			" h AS (SELECT e.tx_id, e.seq FROM events e, x WHERE e.tx_id < x.xmin"
			"       ORDER BY e.tx_id DESC, e.seq DESC LIMIT 1),"
			" l AS (SELECT count(*) AS n, min(e.recorded_at) AS oldest FROM c, x, events e"
			"       WHERE (e.tx_id, e.seq) > (c.tx, c.seq) AND e.tx_id < x.xmin)"
			" SELECT coalesce((SELECT tx_id::text || '-' || seq FROM p), '0-0'),"
			"  coalesce((SELECT tx_id::text || '-' || seq FROM h), '0-0'),"
			"  (SELECT n FROM l),"
			"  coalesce(extract(epoch FROM clock_timestamp() - (SELECT oldest FROM l)), 0)::float8,"
			"  coalesce((SELECT rebuilding FROM p), false), coalesce((SELECT rebuild_requested FROM p), false),"
			"  (SELECT rebuild_tx_id::text || '-' || rebuild_seq FROM p),"
			"  (SELECT owner FROM p),"
			"  EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
			"     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
			"     AND classid::bigint = ($2::bigint >> 32) AND objid::bigint = ($2::bigint & 4294967295)),"
			"  (SELECT to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM p)",
			2, NULL, params, NULL, NULL, 0);
		if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
			err = fd_pg_classify(conn, res);
			break;
		}
		bool rebuilding = strcmp(PQgetvalue(res, 0, 4), "t") == 0;
		bool requested = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
		bool running = strcmp(PQgetvalue(res, 0, 8), "t") == 0;
		long long lag = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
		const char *status = !running ? "stopped" : rebuilding ? "rebuilding" : requested ? "rebuild_requested"
							    : lag ? "catching_up" : "live";
		json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:f, s:s, s:s?, s:s?}", "name", d->name, "checkpoint",
				      PQgetvalue(res, 0, 0), "head", PQgetvalue(res, 0, 1), "lag_events", (json_int_t)lag,
				      "lag_seconds", strtod(PQgetvalue(res, 0, 3), NULL), "status", status, "owner",
				      PQgetisnull(res, 0, 7) ? NULL : PQgetvalue(res, 0, 7), "updated_at",
				      PQgetisnull(res, 0, 9) ? NULL : PQgetvalue(res, 0, 9));
		if (o)
			json_object_set_new(o, "rebuild",
					    rebuilding ? json_pack("{s:s}", "checkpoint", PQgetvalue(res, 0, 6)) : json_null());
		json_array_append_new(arr, o);
		PQclear(res);
		res = NULL;
	}
	PQclear(res);
	if (PQtransactionStatus(conn) != PQTRANS_IDLE && PQstatus(conn) == CONNECTION_OK) {
		res = PQexec(conn, err ? "ROLLBACK" : "COMMIT");
		if (!err && PQresultStatus(res) != PGRES_COMMAND_OK)
			err = fd_pg_classify(conn, res);
		PQclear(res);
	}
	fd_pool_release(pool, conn, fd_pg_conn_broken(conn, err) || PQtransactionStatus(conn) != PQTRANS_IDLE);
	if (err || !arr) {
		json_decref(arr);
		return err ? err : FD_ERR_NOMEM;
	}
	*out = arr;
	return FD_OK;
}

enum fd_err fd_projection_request_rebuild(struct fd_pool *pool, const struct fd_projection_set *set, const char *name)
{
	if (!fd_projection_set_find(set, name))
		return FD_ERR_NOTFOUND;
	PGconn *conn = NULL;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	const char *params[] = { name };
	PGresult *res = PQexecParams(conn,
				     "INSERT INTO projections (name, rebuild_requested) VALUES ($1, true)"
				     " ON CONFLICT (name) DO UPDATE SET rebuild_requested = true, updated_at = now()",
				     1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		err = fd_pg_classify(conn, res);
	PQclear(res);
	fd_pool_release(pool, conn, fd_pg_conn_broken(conn, err));
	return err;
}

enum fd_err fd_projection_wait(struct fd_pool *pool, const char *name, struct fd_cursor pos, unsigned timeout_ms)
{
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (unsigned delay_ms = 2;; delay_ms = delay_ms < 50 ? delay_ms * 2 : 50) {
		PGconn *conn = NULL;
		enum fd_err err = fd_pool_acquire(pool, &conn);
		if (err)
			return err;
		const char *params[] = { name };
		PGresult *res = PQexecParams(conn, "SELECT tx_id::text, seq FROM projections WHERE name = $1", 1, NULL,
					     params, NULL, NULL, 0);
		bool reached = false;
		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			err = fd_pg_classify(conn, res);
		} else if (PQntuples(res) == 1) {
			struct fd_cursor at = { strtoull(PQgetvalue(res, 0, 0), NULL, 10),
						strtoll(PQgetvalue(res, 0, 1), NULL, 10) };
			reached = fd_cursor_cmp(&at, &pos) >= 0;
		}
		PQclear(res);
		fd_pool_release(pool, conn, fd_pg_conn_broken(conn, err));
		if (err)
			return err;
		if (reached)
			return FD_OK;
		clock_gettime(CLOCK_MONOTONIC, &now);
		long elapsed = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
		if (elapsed >= (long)timeout_ms)
			return FD_ERR_RETRY;
		usleep(delay_ms * 1000);
	}
}
