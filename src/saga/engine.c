/*
 * engine.c - the saga engine: the intake (a checkpointed subscription that
 * folds feed events into saga rows) and the workers (claim due rows, run the
 * step, record its outcome).  See saga.h for the guarantees.
 *
 * Threading: one intake thread and cfg->workers worker threads per engine,
 * each with its own PostgreSQL connection.  Workers sleep on a condition
 * variable that the intake signals when it made work due now, and poll every
 * poll_ms for work made due by time or by other processes.
 */
#include "factd/saga.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "factd/hash.h"
#include "factd/log.h"
#include "factd/notify.h"
#include "factd/uuid.h"
#include "machine.h"
#include "rows.h"

#define SUBSCRIPTION FD_SAGA_SUBSCRIPTION
#define IDLE_REST_MS 50  /* after an intake round with nothing for sagas */
#define CLAIM_BATCH 1  /* a worker runs one saga at a time: others' due work goes to other workers */

struct fd_saga_engine {
	struct fd_saga_set types;        /* the saga types it runs (cfg.types points here) */
	struct fd_saga_config cfg;
	char *conninfo;
	atomic_bool stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t kicks;          /* bumped when work became due now */
	atomic_uint next_worker; /* numbers the workers: worker 0 polls, the others mostly wait to be kicked */
	pthread_t intake;
	bool intake_started;
	pthread_t *workers;
	unsigned nworkers;
	char owner[96];
	/* What the intake reads and wakes for: every saga type's categories and the event types they fold. */
	const char *category_list[129];
	const char *type_list[129];
};

/* ---- saga types -------------------------------------------------------- */

const struct fd_saga_type *fd_saga_set_find(const struct fd_saga_set *set, const char *name)
{
	for (size_t i = 0; set && name && i < set->n; i++)
		if (strcmp(set->items[i]->name, name) == 0)
			return set->items[i];
	return NULL;
}

void fd_saga_id_for(const char *type, const char *key, char out[37])
{
	char name[512];
	int n = snprintf(name, sizeof name, "%s\n%s", type, key);
	struct fd_uuid u;
	fd_uuid_from_name("factd.saga", name, n < 0 ? 0 : (size_t)n < sizeof name ? (size_t)n : sizeof name - 1, &u);
	fd_uuid_format(&u, out);
}

void fd_saga_meta(const struct fd_saga_ctx *ctx, struct fd_cmd_meta *meta)
{
	*meta = (struct fd_cmd_meta){
		.correlation_id = ctx->saga_id,
		.causation_id = ctx->saga_id,
		.caller = "saga",
	};
}

enum fd_err fd_saga_send(struct fd_saga_ctx *ctx, const struct fd_aggregate_type *t, const char *id,
			 const char *command, json_t *payload, const char *sub, struct fd_cmd_result *out)
{
	char key[256], hash[65];
	snprintf(key, sizeof key, "saga:%s:%s:%s%s", ctx->saga_id, ctx->step, ctx->compensating ? "undo:" : "", sub);
	char *body = json_dumps(payload, JSON_COMPACT | JSON_SORT_KEYS);
	if (!body) {
		memset(out, 0, sizeof *out);
		return FD_ERR_NOMEM;
	}
	struct fd_sha256 c;
	unsigned char d[32];
	fd_sha256_init(&c);
	fd_sha256_update(&c, t->name, strlen(t->name));
	fd_sha256_update(&c, "\n", 1);
	fd_sha256_update(&c, command, strlen(command));
	fd_sha256_update(&c, "\n", 1);
	fd_sha256_update(&c, body, strlen(body));
	fd_sha256_final(&c, d);
	free(body);
	for (int i = 0; i < 32; i++)
		snprintf(hash + 2 * i, 3, "%02x", d[i]);
	struct fd_cmd_meta meta;
	fd_saga_meta(ctx, &meta);
	meta.idempotency_key = key;
	meta.request_hash = hash;
	meta.repeat_rare = true; /* a step's commands repeat only when the step runs again */
	return fd_bus_send(ctx->bus, t, id, command, payload, &meta, out);
}

/* ---- helpers ------------------------------------------------------------- */

static void kick(struct fd_saga_engine *e)
{
	pthread_mutex_lock(&e->mu);
	e->kicks++;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

/* Sleep up to ms unless kicked (workers) or stopped. */
static void nap(struct fd_saga_engine *e, uint64_t *seen, unsigned ms)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&e->mu);
	while (!atomic_load(&e->stop) && e->kicks == *seen)
		if (pthread_cond_timedwait(&e->cv, &e->mu, &until) != 0)
			break;
	*seen = e->kicks;
	pthread_mutex_unlock(&e->mu);
}

/*
 * The engine's own connections commit asynchronously.  Everything they write
 * (claims, outcomes, folded events with their checkpoint) can be redone if a
 * crash loses the last moments of it: a lost claim or outcome makes the step
 * run again, and every step's commands are idempotent; a lost intake
 * transaction loses its checkpoint advance with it, so the same events are
 * folded again into the same older rows.  WAL is flushed in order, so a saga
 * command that committed durably also made every earlier saga write durable.
 * The commands themselves go through the pool and commit synchronously.
 */
static PGconn *connect_db(struct fd_saga_engine *e, bool intake)
{
	PGconn *c = PQconnectdb(e->conninfo);
	fd_pg_log_notices(c, "saga engine");
	if (PQstatus(c) != CONNECTION_OK) {
		fd_log_fields(FD_LOG_WARN, "saga engine cannot connect",
			      json_pack("{s:s}", "error", PQerrorMessage(c)));
		PQfinish(c);
		return NULL;
	}
	/*
	 * The intake's prepared statements keep their parse, not their plan: a
	 * generic plan of its range queries over events, made without the
	 * cursor's values, can scan the whole table (seen: 16 ms a round instead
	 * of 0.03).  A worker's statements each find their rows by key (a saga's
	 * id, the due index), so they keep generic plans and are not planned
	 * again on every run of every step; like the projector's sessions
	 * (FD_PROJECTION_SESSION_SQL), a worker's has no sequential scans to
	 * choose from, so a plan made while the tables were tiny stays an index
	 * lookup as they grow.
	 */
	const char *plans = intake ? "SET plan_cache_mode = force_custom_plan" : "SET enable_seqscan = off";
	if (!fd_saga_exec(c, "SET synchronous_commit = off") || !fd_saga_exec(c, plans)) {
		PQfinish(c);
		return NULL;
	}
	return c; /* a new session: its statements are prepared as they first run (sql.h) */
}

static bool in_list(const char *const *list, const char *s)
{
	for (size_t i = 0; list && list[i]; i++)
		if (strcmp(list[i], s) == 0)
			return true;
	return false;
}

/* ---- intake ---------------------------------------------------------------- */

/*
 * One intake batch works in three phases, so that a batch costs a few round
 * trips rather than a few per event: read every saga row the batch's events
 * may touch with one query, fold the events into those states in memory in
 * feed order (creating sagas as their starting events come), then write back
 * the rows that changed, the history notes and the checkpoint, and commit.
 *
 * The rows are read without a lock.  Most events change nothing (a step's
 * own StockReserved, say), and a lock on every row of a batch, held for the
 * whole batch, made the workers finishing those sagas wait for it, and the
 * intake for them (seen: a third of the database's time under the saga
 * bench was these waits).  A changed row is written only while its version
 * is still the one read; when a worker or an operator wrote it meanwhile,
 * the row is read again under a lock and this batch's events for it are
 * folded again into what it holds now.
 */
struct held {
	struct fd_saga_state st;
	char key[256];
	bool is_new, dirty;
	size_t *evs, nevs, evcap; /* the batch's events folded into it, by index, in feed order */
};

struct batch_sagas {
	struct held *v;
	size_t n, cap;
};

static void batch_release(struct batch_sagas *b)
{
	for (size_t i = 0; i < b->n; i++) {
		fd_saga_state_release(&b->v[i].st);
		free(b->v[i].evs);
	}
	free(b->v);
	memset(b, 0, sizeof *b);
}

static struct held *batch_add(struct batch_sagas *b)
{
	if (b->n == b->cap) {
		size_t cap = b->cap ? 2 * b->cap : 16;
		struct held *v = realloc(b->v, cap * sizeof *v);
		if (!v)
			return NULL;
		b->v = v;
		b->cap = cap;
	}
	struct held *h = &b->v[b->n++];
	memset(h, 0, sizeof *h);
	return h;
}

static struct held *by_id(struct batch_sagas *b, const char *id)
{
	for (size_t i = 0; i < b->n; i++)
		if (strcmp(b->v[i].st.id, id) == 0)
			return &b->v[i];
	return NULL;
}

static struct held *by_key(struct batch_sagas *b, const struct fd_saga_type *t, const char *key)
{
	for (size_t i = 0; i < b->n; i++)
		if (b->v[i].st.type == t && strcmp(b->v[i].key, key) == 0)
			return &b->v[i];
	return NULL;
}

static bool is_uuid(const char *s)
{
	struct fd_uuid u;
	return s && fd_uuid_parse(s, &u);
}

/* Load every saga the events may belong to (by correlation id, and by each type's key). */
static bool load_batch_sagas(struct fd_saga_engine *e, PGconn *conn, const struct fd_feed_event *evs, size_t n,
			     struct batch_sagas *b)
{
	json_t *ids = json_array(), *keys = json_array();
	bool ok = ids && keys;
	for (size_t i = 0; ok && i < n; i++) {
		const char *corr = json_string_value(json_object_get(evs[i].metadata, "correlation_id"));
		if (is_uuid(corr))
			json_array_append_new(ids, json_string(corr));
		for (size_t k = 0; k < e->cfg.types->n; k++) {
			const struct fd_saga_type *t = e->cfg.types->items[k];
			char key[256];
			if (in_list(t->categories, evs[i].category) && t->correlate(&evs[i], key, sizeof key))
				json_array_append_new(keys, json_pack("{s:s, s:s}", "t", t->name, "k", key));
		}
	}
	char *ids_text = ok ? json_dumps(ids, JSON_COMPACT) : NULL;
	char *keys_text = ok ? json_dumps(keys, JSON_COMPACT) : NULL;
	json_decref(ids);
	json_decref(keys);
	PGresult *res = NULL;
	if (ids_text && keys_text) {
		const char *p[] = { ids_text, keys_text };
		/*
		 * Index lookups only: the ids, then each key's row through the
		 * unique (type, correlation_key) index (LIMIT 1 keeps it a nested
		 * loop).  "id IN (...) OR (type, key) IN (...)" was planned as a
		 * scan of the whole table, every batch.
		 */
		res = fd_saga_sql(conn,
				  "SELECT " FD_SAGA_COLS("") " FROM sagas WHERE id = ANY (ARRAY("
				  "SELECT (jsonb_array_elements_text($1::jsonb))::uuid UNION ALL"
				  " SELECT s.id FROM jsonb_to_recordset($2::jsonb) AS x(t text, k text) CROSS JOIN LATERAL"
				  " (SELECT id FROM sagas WHERE type = x.t AND correlation_key = x.k LIMIT 1) s))",
				  2, p);
	}
	free(ids_text);
	free(keys_text);
	ok = res != NULL;
	for (int i = 0; ok && i < PQntuples(res); i++) {
		struct held *h = batch_add(b);
		if (!h) {
			ok = false;
			break;
		}
		if (fd_saga_row_parse(e->cfg.types, res, i, e->cfg.time_pct, &h->st, NULL) != FD_OK) {
			b->n--; /* a type this build does not know, or a broken row: leave it alone */
			continue;
		}
		snprintf(h->key, sizeof h->key, "%s", PQgetvalue(res, i, 2));
		/* its personal values open (a statement only for a row that has any); the batch waits when they cannot */
		if (fd_saga_row_open(conn, e->cfg.pool, &h->st) != FD_OK) {
			ok = false;
			break;
		}
	}
	PQclear(res);
	return ok;
}

/* Fold one event (the batch's idx-th) into a held saga.  False on NOMEM. */
static bool fold_held(struct held *h, const struct fd_feed_event *ev, size_t idx, bool created)
{
	struct fd_saga_state *st = &h->st;
	if (idx != SIZE_MAX) {
		if (h->nevs == h->evcap) {
			size_t cap = h->evcap ? 2 * h->evcap : 8;
			size_t *v = realloc(h->evs, cap * sizeof *v);
			if (!v)
				return false;
			h->evs = v;
			h->evcap = cap;
		}
		h->evs[h->nevs++] = idx;
	}
	if (!created && !in_list(st->type->categories, ev->category))
		return true;
	json_t *before = json_deep_copy(st->data);
	if (!before)
		return false;
	size_t nseen = json_array_size(st->seen), nnotes = json_array_size(st->notes);
	enum fd_saga_status status = st->status;
	int current = st->current;
	enum fd_saga_phase phase = st->phase;
	bool changed = false;
	enum fd_err err = fd_saga_on_event(st, ev, created, &changed);
	fd_saga_redact_state(st); /* a compensation reason made of a personal value */
	/* an event a step already reported (its own StockReserved, say) changes nothing: no write */
	if (!err && changed &&
	    (created || !json_equal(before, st->data) || nseen != json_array_size(st->seen) || status != st->status ||
	     current != st->current || phase != st->phase || nnotes != json_array_size(st->notes)))
		h->dirty = true;
	if (st->clear_lease)
		st->leased = false;
	json_decref(before);
	return err == FD_OK;
}

static bool route_event(struct fd_saga_engine *e, struct batch_sagas *b, const struct fd_feed_event *evs, size_t idx)
{
	const struct fd_feed_event *ev = &evs[idx];
	const struct fd_saga_type *routed = NULL;
	const char *corr = json_string_value(json_object_get(ev->metadata, "correlation_id"));
	struct held *h = is_uuid(corr) ? by_id(b, corr) : NULL;
	if (h) {
		routed = h->st.type;
		if (!fold_held(h, ev, idx, false))
			return false;
	}
	for (size_t i = 0; i < e->cfg.types->n; i++) {
		const struct fd_saga_type *t = e->cfg.types->items[i];
		char key[256];
		if (t == routed || !in_list(t->categories, ev->category) || !t->correlate(ev, key, sizeof key))
			continue;
		if ((h = by_key(b, t, key))) {
			if (!fold_held(h, ev, idx, false))
				return false;
		} else if (t->steps[0].on_event && strcmp(t->steps[0].on_event, ev->type) == 0) {
			char id[37];
			fd_saga_id_for(t->name, key, id);
			if (!(h = batch_add(b)))
				return false;
			if (fd_saga_state_init(&h->st, t, id, e->cfg.time_pct) != FD_OK) {
				b->n--;
				return false;
			}
			snprintf(h->key, sizeof h->key, "%s", key);
			h->is_new = true;
			if (!fold_held(h, ev, idx, true))
				return false;
			fd_log_fields(FD_LOG_DEBUG, "saga started",
				      json_pack("{s:s, s:s, s:s}", "saga_id", id, "type", t->name, "key", key));
		}
	}
	return true;
}

/*
 * Lock saga `id` (only while `token` holds its lease, when given), read it
 * into st and open its personal values.  FD_ERR_NOTFOUND: no such row (or
 * not under that lease); FD_ERR_IO: a database error or a row that does not
 * read (nothing to release then).
 */
static enum fd_err lock_row(struct fd_saga_engine *e, PGconn *conn, const char *id, const char *token,
			    struct fd_saga_state *st)
{
	const char *p[] = { id, token };
	PGresult *res = fd_saga_sql(conn,
				    "SELECT " FD_SAGA_COLS("") " FROM sagas WHERE id = $1::uuid"
				    " AND ($2::uuid IS NULL OR lease_token = $2::uuid) FOR UPDATE",
				    2, p);
	if (!res)
		return FD_ERR_IO;
	bool found = PQntuples(res) == 1;
	enum fd_err err = found ? fd_saga_row_parse(e->cfg.types, res, 0, e->cfg.time_pct, st, NULL) : FD_ERR_NOTFOUND;
	PQclear(res);
	if (err)
		return found ? FD_ERR_IO : FD_ERR_NOTFOUND;
	if (fd_saga_row_open(conn, e->cfg.pool, st) != FD_OK) {
		fd_saga_state_release(st);
		return FD_ERR_IO;
	}
	return FD_OK;
}

/*
 * A held saga's row was written since the batch read it: read it again, now
 * locked, and fold this batch's events for it into what it holds now.
 * FD_ERR_NOTFOUND when the row is gone; FD_ERR_IO on a database error.
 */
static enum fd_err refold_locked(struct fd_saga_engine *e, PGconn *conn, struct held *h,
				 const struct fd_feed_event *evs)
{
	struct fd_saga_state st;
	enum fd_err err = lock_row(e, conn, h->st.id, NULL, &st);
	if (err)
		return err;
	fd_saga_state_release(&h->st);
	h->st = st;
	h->dirty = false;
	for (size_t k = 0; k < h->nevs; k++)
		if (!fold_held(h, &evs[h->evs[k]], SIZE_MAX, false))
			return FD_ERR_NOMEM;
	return FD_OK;
}

/*
 * Are there events past the intake's checkpoint, of any category?  One
 * read-only statement, so a timed round on a quiet feed neither locks nor
 * writes.  True on error: the round reports it.
 */
static bool intake_waiting(PGconn *conn, bool *held_back)
{
	const char *np[] = { SUBSCRIPTION };
	PGresult *res = fd_saga_sql(conn,
				    "SELECT (SELECT e.tx_id FROM events e WHERE (e.tx_id, e.seq) > (s.tx_id, s.seq)"
				    " AND e.tx_id < x.xmin ORDER BY e.tx_id, e.seq LIMIT 1) IS NOT NULL,"
				    " coalesce((SELECT e.tx_id FROM events e ORDER BY e.tx_id DESC LIMIT 1) >= x.xmin, false)"
				    " FROM subscriptions s, (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin) x"
				    " WHERE s.name = $1",
				    1, np);
	bool waiting = !res || PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), "f") != 0;
	*held_back = res && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	PQclear(res);
	return waiting;
}

/*
 * One intake transaction; a timed one (no notification asked for it) first
 * checks there is anything to read.  *held_back tells whether it stopped at
 * the visible end of the feed with committed events beyond it (an older
 * transaction still runs; no notification will come for them again).
 * Returns events handled, or -1 on a database error.
 */
static int intake_batch(struct fd_saga_engine *e, PGconn *conn, bool timed, bool *held_back)
{
	*held_back = false;
	if (timed && !intake_waiting(conn, held_back))
		return 0;
	PGresult *cp = NULL;
	struct fd_follow_batch fb = { 0 };
	struct batch_sagas b = { 0 };
	int n = -1;
	bool due_now = false;
	if (!fd_saga_exec(conn, "BEGIN"))
		return -1;
	const char *np[] = { SUBSCRIPTION };
	cp = fd_saga_sql(conn, "SELECT tx_id::text, seq::text FROM subscriptions WHERE name = $1 FOR UPDATE", 1, np);
	if (!cp || PQntuples(cp) != 1)
		goto done;
	const struct fd_cursor after = { strtoull(PQgetvalue(cp, 0, 0), NULL, 10), strtoll(PQgetvalue(cp, 0, 1), NULL, 10) };
	const struct fd_follow follow = { .name = "saga intake", .categories = e->category_list, .types = e->type_list,
					  .limit = e->cfg.batch, .schemas = e->cfg.schemas };
	if (fd_feed_follow(conn, after, &follow, &fb))
		goto done;
	const struct fd_feed_event *evs = fb.events;
	if (fb.count > 0 && !load_batch_sagas(e, conn, evs, fb.count, &b))
		goto done;
	for (size_t i = 0; i < fb.count; i++)
		if (!route_event(e, &b, evs, i)) {
			fd_log_fields(FD_LOG_WARN, "saga intake failed on an event",
				      json_pack("{s:s, s:s}", "event_id", evs[i].event_id, "type", evs[i].type));
			goto done;
		}
	for (size_t i = 0; i < b.n; i++) {
		struct held *h = &b.v[i];
		if (!h->dirty)
			continue;
		enum fd_err err = h->is_new ? fd_saga_row_insert(conn, e->cfg.pool, &h->st, h->key)
					 : fd_saga_row_save_if(conn, e->cfg.pool, &h->st);
		if (err == FD_ERR_CONFLICT) {
			/* written meanwhile: fold again under the lock (the row cannot go: removal takes our checkpoint first) */
			if ((err = refold_locked(e, conn, h, evs)) == FD_OK && !h->dirty)
				continue;
			if (!err)
				err = fd_saga_row_save(conn, e->cfg.pool, &h->st);
		}
		if (err == FD_ERR_GONE) {
			/* a late event for a business process that ended and was cleaned up: no second saga */
			fd_log_fields(FD_LOG_INFO, "saga not started again after its removal",
				      json_pack("{s:s, s:s}", "type", h->st.type->name, "correlation_key", h->key));
			continue;
		}
		if (!err && !h->is_new) /* a new row's notes went in with it */
			err = fd_saga_notes_write(conn, &h->st);
		if (err)
			goto done;
		due_now = due_now || (h->st.due == FD_DUE_IN && h->st.due_ms == 0);
	}
	/*
	 * Caught up, the follower's next cursor is the newest visible event even
	 * when it is of no interest to sagas, or every later round would scan the
	 * same run of other events again (an append-heavy load of other
	 * categories would make each round slower than the last).
	 */
	*held_back = fb.held_back;
	if (fd_cursor_cmp(&fb.next, &after) != 0) {
		char to_tx[24], to_seq[24];
		snprintf(to_tx, sizeof to_tx, "%llu", (unsigned long long)fb.next.tx);
		snprintf(to_seq, sizeof to_seq, "%lld", (long long)fb.next.seq);
		const char *up[] = { SUBSCRIPTION, to_tx, to_seq, e->owner };
		PGresult *u = fd_saga_sql(conn,
					  "UPDATE subscriptions SET tx_id = $2::xid8, seq = $3::bigint, owner = $4,"
					  " updated_at = now() WHERE name = $1",
					  4, up);
		if (!u)
			goto done;
		PQclear(u);
	}
	if (!fd_saga_exec(conn, "COMMIT"))
		goto done;
	n = (int)fb.count;
	if (due_now)
		kick(e);
done:
	if (n < 0)
		fd_saga_exec(conn, "ROLLBACK");
	fd_follow_batch_release(&fb);
	batch_release(&b);
	PQclear(cp);
	return n;
}

static bool intake_take(struct fd_saga_engine *e, PGconn *conn)
{
	char key[24];
	snprintf(key, sizeof key, "%lld", fd_lock_key("factd.saga.intake", ""));
	const char *kp[] = { key };
	PGresult *res = fd_saga_sql(conn, "SELECT pg_try_advisory_lock($1::bigint)", 1, kp);
	bool got = res && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!got)
		return false;
	const char *np[] = { SUBSCRIPTION };
	res = fd_saga_sql(conn, "INSERT INTO subscriptions (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", 1, np);
	PQclear(res);
	if (res)
		fd_log_fields(FD_LOG_INFO, "saga intake taken", json_pack("{s:s}", "owner", e->owner));
	return res != NULL;
}

static void *intake_main(void *arg)
{
	struct fd_saga_engine *e = arg;
	PGconn *conn = NULL;
	bool owned = false;
	uint64_t gen = e->cfg.notifier ? fd_notifier_generation(e->cfg.notifier) : 0;
	bool timed = false; /* the first round, and those after a wake-up, read the feed at once */
	unsigned held_ms = 0;
	while (!atomic_load(&e->stop)) {
		if (!conn) {
			conn = connect_db(e, true);
			owned = false;
			if (!conn) {
				sleep(1);
				continue;
			}
		}
		if (!owned && !(owned = intake_take(e, conn))) {
			if (PQstatus(conn) != CONNECTION_OK) {
				PQfinish(conn);
				conn = NULL;
			}
			/* another process runs the intake; check again later (it may die) */
			for (int i = 0; i < 10 && !atomic_load(&e->stop); i++)
				usleep(100000);
			continue;
		}
		bool held_back;
		int n = intake_batch(e, conn, timed, &held_back);
		timed = false;
		if (n < 0) {
			if (PQstatus(conn) != CONNECTION_OK) {
				PQfinish(conn);
				conn = NULL;
			}
			usleep(200000);
			continue;
		}
		if ((unsigned)n >= e->cfg.batch)
			continue;
		/*
		 * A round that found nothing for sagas: under a load of appends to
		 * their categories that they do not read (order lines, say) every
		 * append would wake another empty round, so rest a little first (a
		 * saga's first step may start up to this much later).  Appends to
		 * other categories do not wake the intake at all.
		 */
		if (n == 0)
			usleep(IDLE_REST_MS * 1000u);
		/* Events held back by an older transaction: look again soon, 5 ms doubling to the poll interval. */
		held_ms = held_back ? (held_ms ? held_ms * 2 : 5) : 0;
		if (held_ms > e->cfg.poll_ms)
			held_ms = e->cfg.poll_ms;
		if (e->cfg.notifier) {
			uint64_t g = fd_notifier_wait_for(e->cfg.notifier, gen, e->category_list,
							  held_ms ? held_ms : e->cfg.poll_ms);
			timed = g == gen;
			gen = g;
		} else {
			usleep((held_ms ? held_ms : e->cfg.poll_ms) * 1000u);
			timed = true;
		}
	}
	PQfinish(conn);
	return NULL;
}

/* ---- workers --------------------------------------------------------------- */

struct claimed {
	struct fd_saga_state st;
	char key[256];
	struct fd_saga_job job;
	char seq[16];  /* its saga_steps row, "" when none */
};

static const char *job_kind_name(enum fd_job_kind k)
{
	return k == FD_JOB_COMPENSATION ? "compensation" : "action";
}

/*
 * After a claim, or inside a completion's transaction: work out the job the
 * row asks for, mark runs a dead worker left behind as interrupted, and open
 * its history row.
 */
static bool start_job(struct fd_saga_engine *e, PGconn *conn, struct claimed *c)
{
	c->job = fd_saga_next_job(&c->st);
	c->seq[0] = '\0';
	PGresult *u;
	if (c->job.kind == FD_JOB_ACTION || c->job.kind == FD_JOB_COMPENSATION) {
		/* one statement: the runs left behind marked, the new one opened */
		char attempt[16];
		snprintf(attempt, sizeof attempt, "%u", c->job.attempt);
		const char *hp[] = { c->st.id, c->st.type->steps[c->job.step].name, job_kind_name(c->job.kind), attempt,
				     e->owner };
		u = fd_saga_sql(conn,
				"WITH left_behind AS (UPDATE saga_steps SET outcome = 'interrupted', finished_at = now()"
				" WHERE saga_id = $1::uuid AND outcome = 'running')"
				" INSERT INTO saga_steps (saga_id, seq, step, kind, attempt, worker)"
				" SELECT $1::uuid, coalesce(max(seq), 0) + 1, $2, $3, $4::int, $5"
				" FROM saga_steps WHERE saga_id = $1::uuid RETURNING seq::text",
				5, hp);
		if (u)
			snprintf(c->seq, sizeof c->seq, "%s", PQgetvalue(u, 0, 0));
	} else {
		const char *ip[] = { c->st.id };
		u = fd_saga_sql(conn,
				"UPDATE saga_steps SET outcome = 'interrupted', finished_at = now()"
				" WHERE saga_id = $1::uuid AND outcome = 'running'",
				1, ip);
	}
	bool ok = u != NULL;
	PQclear(u);
	return ok;
}

/*
 * Claim up to CLAIM_BATCH due sagas under `token`.  Returns how many (into
 * out), -1 on error.  The claim is a statement of its own, and so is each
 * run's history row after it, with no transaction around them: a claim
 * whose history row never opened (the process died in between) ran nothing,
 * and its lease runs out like any other.
 */
static int claim(struct fd_saga_engine *e, PGconn *conn, const char *token, struct claimed *out)
{
	char lease[24], limit[8];
	snprintf(lease, sizeof lease, "%u", e->cfg.lease_ms);
	snprintf(limit, sizeof limit, "%d", CLAIM_BATCH);
	const char *p[] = { token, lease, limit };
	PGresult *res = fd_saga_sql(
		conn,
		/*
		 * The due rows are picked once (MATERIALIZED): as a subquery in FROM,
		 * a plan may rescan it for each row of sagas, and every rescan locks
		 * and claims another row (seen with generic plans: more rows than
		 * the limit, each with this claim's lease).
		 */
		"WITH d AS MATERIALIZED (SELECT id FROM sagas WHERE due_at <= now() ORDER BY due_at LIMIT $3::int"
		" FOR UPDATE SKIP LOCKED)"
		" UPDATE sagas s SET lease_token = $1::uuid, due_at = now() + $2::bigint * interval '1 millisecond',"
		" version = s.version + 1, updated_at = now()"
		" FROM d WHERE s.id = d.id RETURNING " FD_SAGA_COLS("s."),
		3, p);
	if (!res)
		return -1;
	int n = 0;
	for (int i = 0; i < PQntuples(res) && n < CLAIM_BATCH; i++) {
		struct claimed *c = &out[n];
		if (fd_saga_row_parse(e->cfg.types, res, i, e->cfg.time_pct, &c->st, NULL) != FD_OK) {
			/* unknown type or broken row: park it so it is not claimed forever */
			const char *ip[] = { PQgetvalue(res, i, 0) };
			PGresult *u = fd_saga_sql(conn, "UPDATE sagas SET due_at = NULL WHERE id = $1::uuid", 1, ip);
			PQclear(u);
			continue;
		}
		snprintf(c->key, sizeof c->key, "%s", PQgetvalue(res, i, 2));
		if (fd_saga_row_open(conn, e->cfg.pool, &c->st) != FD_OK) {
			/* logged; the claim's lease holds it back until it is tried again, other work goes on */
			fd_saga_state_release(&c->st);
			continue;
		}
		bool ok = start_job(e, conn, c);
		if (!ok) {
			/* its lease runs out and it is claimed again */
			fd_saga_state_release(&c->st);
			for (int k = 0; k < n; k++)
				fd_saga_state_release(&out[k].st);
			PQclear(res);
			return -1;
		}
		n++;
	}
	PQclear(res);
	return n;
}

static const char *outcome_name(enum fd_step_result r)
{
	switch (r) {
	case FD_STEP_OK:
		return "succeeded";
	case FD_STEP_WAIT:
		return "waiting";
	case FD_STEP_RETRY:
		return "retry";
	case FD_STEP_FAIL:
		return "failed";
	}
	return "failed";
}

/*
 * Apply a run's outcome to st (the step's `set` merged into its data, then
 * the machine's rules).  *due_now: more work is due at once.  True when the
 * claim goes on with it: the lease is kept and pushed forward.
 */
static bool apply_outcome(struct fd_saga_engine *e, struct fd_saga_state *st, const struct fd_saga_job *job,
			  enum fd_step_result r, const char *error, json_t *set, bool *due_now)
{
	if (set && json_object_size(set))
		json_object_update(st->data, set);
	fd_saga_on_outcome(st, job, r, error);
	bool live = st->status == FD_SAGA_RUNNING || st->status == FD_SAGA_COMPENSATING;
	*due_now = st->due == FD_DUE_IN && st->due_ms == 0;
	if (!(live && *due_now && st->phase == FD_PHASE_PENDING && !atomic_load(&e->stop)))
		return false;
	st->clear_lease = false;
	st->due_ms = e->cfg.lease_ms;
	return true;
}

static void log_if_finished(const struct fd_saga_state *st)
{
	if (st->phase == FD_PHASE_DONE)
		fd_log_fields(FD_LOG_INFO, "saga finished",
			      json_pack("{s:s, s:s, s:s, s:s}", "saga_id", st->id, "type", st->type->name, "status",
					fd_saga_status_name(st->status), "error", st->error));
}

/*
 * The common end of a run, in one statement: nothing wrote the saga's row
 * since the claim read it (or this worker last wrote it), so the outcome is
 * recorded on the state the worker holds.  1: done; 0: a database error;
 * -1: the row moved on, or the outcome adds history notes, so complete()
 * reads the row under a lock instead.  c->st is changed either way: on -1,
 * only its id, c->job and c->seq count.
 */
static int complete_fast(struct fd_saga_engine *e, PGconn *conn, struct claimed *c, const char *token,
			 enum fd_step_result r, const char *error, json_t *set, bool *chain)
{
	struct fd_saga_state *st = &c->st;
	bool due_now;
	bool go_on = apply_outcome(e, st, &c->job, r, error, set, &due_now);
	if (json_array_size(st->notes) > 0)
		return -1;
	struct fd_saga_job next = go_on ? fd_saga_next_job(st) : (struct fd_saga_job){ .kind = FD_JOB_NONE };
	bool opens = next.kind == FD_JOB_ACTION || next.kind == FD_JOB_COMPENSATION;
	const struct fd_saga_finish f = {
		.token = token,
		.seq = c->seq,
		.outcome = outcome_name(r),
		.error = error,
		.next_step = opens ? st->type->steps[next.step].name : NULL,
		.next_kind = opens ? job_kind_name(next.kind) : NULL,
		.next_attempt = next.attempt,
		.worker = e->owner,
	};
	char next_seq[16];
	enum fd_err err = fd_saga_row_finish(conn, e->cfg.pool, st, &f, next_seq);
	if (err == FD_ERR_CONFLICT)
		return -1;
	if (err)
		return 0; /* its own transaction wrote nothing: the lease runs out and the row is claimed again */
	log_if_finished(st);
	if (go_on) {
		c->job = next;
		snprintf(c->seq, sizeof c->seq, "%s", next_seq);
		fd_saga_state_reset_outputs(st);
		*chain = true;
	} else if (due_now) {
		kick(e);
	}
	return 1;
}

/*
 * Record the outcome if the claim still holds.  False on a database error.
 * When the saga has more work due at once (the next step, the next
 * compensation), the claim is kept and the next job opened in the same
 * transaction: *chain is set and c holds the saga's new state and job.
 */
static bool complete(struct fd_saga_engine *e, PGconn *conn, struct claimed *c, const char *token,
		     enum fd_step_result r, const char *error, json_t *set, bool *chain)
{
	*chain = false;
	if (c->seq[0] && c->st.row_version > 0 && !c->st.unopened) {
		int fast = complete_fast(e, conn, c, token, r, error, set, chain);
		if (fast >= 0)
			return fast == 1;
	}
	if (!fd_saga_exec(conn, "BEGIN"))
		return false;
	struct fd_saga_state st;
	enum fd_err err = lock_row(e, conn, c->st.id, token, &st);
	if (err == FD_ERR_NOTFOUND) {
		/* the lease ran out or the saga moved on without us: our run is only history */
		if (c->seq[0]) {
			const char *hp[] = { c->st.id, c->seq };
			PGresult *u = fd_saga_sql(conn,
						  "UPDATE saga_steps SET outcome = 'interrupted', finished_at = now(),"
						  " error = 'the claim was lost before the outcome was recorded'"
						  " WHERE saga_id = $1::uuid AND seq = $2::int AND outcome = 'running'",
						  2, hp);
			PQclear(u);
		}
		return fd_saga_exec(conn, "COMMIT");
	}
	if (err) {
		fd_saga_exec(conn, "ROLLBACK");
		return false;
	}
	bool due_now;
	*chain = apply_outcome(e, &st, &c->job, r, error, set, &due_now); /* keep the claim and go on with the next job */
	bool ok = fd_saga_row_save(conn, e->cfg.pool, &st) == FD_OK && fd_saga_notes_write(conn, &st) == FD_OK;
	if (ok && c->seq[0]) {
		const char *hp[] = { c->st.id, c->seq, outcome_name(r), error && *error ? error : NULL };
		PGresult *u = fd_saga_sql(conn,
					  "UPDATE saga_steps SET outcome = $3, error = $4, finished_at = now()"
					  " WHERE saga_id = $1::uuid AND seq = $2::int",
					  4, hp);
		ok = u != NULL;
		PQclear(u);
	}
	log_if_finished(&st);
	if (ok && *chain) {
		fd_saga_state_release(&c->st);
		c->st = st;
		fd_saga_state_reset_outputs(&c->st);
		ok = start_job(e, conn, c);
	} else {
		fd_saga_state_release(&st);
	}
	ok = ok && fd_saga_exec(conn, "COMMIT");
	if (!ok) {
		fd_saga_exec(conn, "ROLLBACK");
		*chain = false; /* the lease runs out and the row is claimed again */
	} else if (due_now && !*chain) {
		kick(e);
	}
	return ok;
}

/* Run the claimed job, and the ones after it while the saga has more due at once. */
static bool run_claimed(struct fd_saga_engine *e, PGconn *conn, struct claimed *c, const char *token)
{
	for (;;) {
		enum fd_step_result r = FD_STEP_OK;
		struct fd_saga_ctx ctx = {
			.bus = e->cfg.bus,
			.services = e->cfg.services,
			.saga_id = c->st.id,
			.correlation_key = c->key,
			.step = c->st.type->steps[c->job.step].name,
			.compensating = c->job.kind == FD_JOB_COMPENSATION,
			.attempt = c->job.attempt,
			.data = c->st.data,
			.reason = c->st.error[0] ? c->st.error : NULL,
			.set = json_object(),
		};
		if (!ctx.set)
			return false;
		const struct fd_saga_step *s = &c->st.type->steps[c->job.step];
		if (c->job.kind == FD_JOB_ACTION && s->action)
			r = s->action(&ctx);
		else if (c->job.kind == FD_JOB_COMPENSATION && s->compensate)
			r = s->compensate(&ctx);
		/* the error goes to the saga's row, its history and the log: never a personal value */
		fd_saga_redact(&c->st, ctx.error, sizeof ctx.error);
		if (c->job.kind == FD_JOB_ACTION || c->job.kind == FD_JOB_COMPENSATION)
			fd_log_fields(r == FD_STEP_OK || r == FD_STEP_WAIT ? FD_LOG_DEBUG : FD_LOG_INFO, "saga step ran",
				      json_pack("{s:s, s:s, s:s, s:I, s:s, s:s}", "saga_id", c->st.id, "step", ctx.step,
						"kind", job_kind_name(c->job.kind), "attempt", (json_int_t)c->job.attempt,
						"outcome", outcome_name(r), "error", ctx.error));
		bool chain = false;
		bool ok = complete(e, conn, c, token, r, ctx.error, ctx.set, &chain);
		json_decref(ctx.set);
		if (!ok || !chain)
			return ok;
	}
}

static void *worker_main(void *arg)
{
	struct fd_saga_engine *e = arg;
	PGconn *conn = NULL;
	uint64_t seen = 0;
	unsigned failures = 0; /* consecutive rounds that failed: back off, do not flood the log */
	/*
	 * An idle process should not poll the database from every worker: worker
	 * 0 looks for due work every poll_ms, the others every ten times that,
	 * and any worker that finds work wakes the rest.
	 */
	unsigned me = atomic_fetch_add(&e->next_worker, 1);
	unsigned idle_ms = me == 0 ? e->cfg.poll_ms : 10 * e->cfg.poll_ms;
	struct claimed batch[CLAIM_BATCH];
	while (!atomic_load(&e->stop)) {
		if (!conn && !(conn = connect_db(e, false))) {
			nap(e, &seen, 1000);
			continue;
		}
		struct fd_uuid u;
		char token[37];
		if (fd_uuid_v7(&u) != FD_OK) {
			nap(e, &seen, e->cfg.poll_ms);
			continue;
		}
		fd_uuid_format(&u, token);
		int n = claim(e, conn, token, batch);
		bool broken = n < 0;
		if (n > 0)
			kick(e); /* there may be more: wake the idle workers */
		for (int i = 0; i < (n > 0 ? n : 0); i++) {
			if (!broken && !run_claimed(e, conn, &batch[i], token))
				broken = true; /* the lease runs out and the row is claimed again */
			fd_saga_state_release(&batch[i].st);
		}
		if (broken && PQstatus(conn) != CONNECTION_OK) {
			PQfinish(conn);
			conn = NULL;
		}
		failures = broken ? failures + 1 : 0;
		if (broken) {
			unsigned ms = e->cfg.poll_ms << (failures < 6 ? failures : 6);
			nap(e, &seen, ms < 5000 ? ms : 5000);
		} else if (n == 0) {
			nap(e, &seen, idle_ms);
		}
	}
	PQfinish(conn);
	return NULL;
}

/* ---- start / stop ---------------------------------------------------------- */

/*
 * The distinct strings in every saga type's list (categories or event
 * types), NULL-terminated, into out (129 entries).
 */
static void union_list(const struct fd_saga_set *types, size_t list_offset, const char **out)
{
	size_t ns = 0;
	for (size_t i = 0; i < types->n; i++) {
		const char *const *list = *(const char *const *const *)(const void *)((const char *)types->items[i] +
										       list_offset);
		for (const char *const *c = list; c && *c; c++) {
			bool dup = false;
			for (size_t k = 0; k < ns; k++)
				dup = dup || strcmp(out[k], *c) == 0;
			if (dup || ns >= 128)
				continue;
			out[ns++] = *c;
		}
	}
	out[ns] = NULL;
}

enum fd_err fd_saga_engine_start(const struct fd_saga_config *cfg, struct fd_saga_engine **out)
{
	*out = NULL;
	struct fd_saga_engine *e = calloc(1, sizeof *e);
	if (!e)
		return FD_ERR_NOMEM;
	e->cfg = *cfg;
	e->types = *cfg->types; /* the caller's set may move; its items are the app's, static */
	e->cfg.types = &e->types;
	if (!e->cfg.poll_ms)
		e->cfg.poll_ms = 100;
	if (!e->cfg.lease_ms)
		e->cfg.lease_ms = 30000;
	if (!e->cfg.time_pct)
		e->cfg.time_pct = 100;
	if (!e->cfg.batch)
		e->cfg.batch = 100; /* short intake transactions: saga rows stay locked briefly */
	e->conninfo = strdup(cfg->conninfo);
	e->workers = calloc(cfg->workers ? cfg->workers : 1, sizeof *e->workers);
	if (!e->conninfo || !e->workers) {
		free(e->conninfo);
		free(e->workers);
		free(e);
		return FD_ERR_NOMEM;
	}
	char host[64] = "";
	gethostname(host, sizeof host - 1);
	snprintf(e->owner, sizeof e->owner, "%s:%ld", host, (long)getpid());
	union_list(e->cfg.types, offsetof(struct fd_saga_type, categories), e->category_list);
	union_list(e->cfg.types, offsetof(struct fd_saga_type, event_types), e->type_list);
	atomic_init(&e->stop, false);
	atomic_init(&e->next_worker, 0);
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	if (e->cfg.intake && pthread_create(&e->intake, NULL, intake_main, e) == 0)
		e->intake_started = true;
	for (unsigned i = 0; i < cfg->workers; i++)
		if (pthread_create(&e->workers[e->nworkers], NULL, worker_main, e) == 0)
			e->nworkers++;
	if ((e->cfg.intake && !e->intake_started) || e->nworkers < cfg->workers) {
		fd_saga_engine_stop(e);
		return FD_ERR_IO;
	}
	*out = e;
	return FD_OK;
}

void fd_saga_engine_stop(struct fd_saga_engine *e)
{
	if (!e)
		return;
	atomic_store(&e->stop, true);
	kick(e);
	if (e->cfg.notifier)
		fd_notifier_wake(e->cfg.notifier);
	if (e->intake_started)
		pthread_join(e->intake, NULL);
	for (unsigned i = 0; i < e->nworkers; i++)
		pthread_join(e->workers[i], NULL);
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
	free(e->workers);
	free(e->conninfo);
	free(e);
}
