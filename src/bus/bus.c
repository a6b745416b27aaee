/*
 * bus.c - the command bus: load, decide, append under the loaded version,
 * reload and retry on conflicts; idempotent commands; background snapshots.
 *
 * Metrics: each command's outcome and each version conflict go to the
 * registry in the bus configuration; appends and snapshot writes are counted
 * by the store itself.
 *
 * Threading: fd_bus_send/fd_bus_load run on request threads and share only
 * the pool, the snapshot queue (mutex + condvars) and the metrics registry
 * (atomic counters).  One writer thread drains the queue.
 */
#include "factd/bus.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/aggcache.h"
#include "factd/hash.h"
#include "factd/jsonspan.h"
#include "factd/log.h"
#include "factd/metrics.h"
#include "store/snapshots.h"
#include "store/personal.h"
#include "factd/uuid.h"
#include "gate.h"

#define IDEMPOTENCY_NS "factd.command"

struct snap_job {
	struct snap_job *next;
	char *stream;
	int64_t version;
	int schema;
	char *state_json;
};

struct fd_bus {
	struct fd_pool *pool;
	struct fd_aggcache *cache;
	struct fd_gates *gates;  /* one command at a time per stream (gate.h) */
	struct fd_bus_config cfg;
	pthread_t writer;
	pthread_mutex_t lock;
	pthread_cond_t work;     /* a job was queued or stop was asked */
	pthread_cond_t drained;  /* the queue emptied and the writer is idle */
	struct snap_job *head, *tail;
	unsigned queued;
	bool busy;
	bool stop;
	/* the installation's secret, read once (under lock; never changed once set) */
	bool have_secret;
	char secret[FD_INSTALLATION_SECRET_MAX + 1];
};

/* ---- snapshots ---------------------------------------------------------- */

static void job_free(struct snap_job *j)
{
	if (!j)
		return;
	free(j->stream);
	free(j->state_json);
	free(j);
}

static void *snapshot_writer(void *arg)
{
	struct fd_bus *bus = arg;
	pthread_mutex_lock(&bus->lock);
	for (;;) {
		while (!bus->head && !bus->stop)
			pthread_cond_wait(&bus->work, &bus->lock);
		if (!bus->head)
			break;
		struct snap_job *j = bus->head;
		bus->head = j->next;
		if (!bus->head)
			bus->tail = NULL;
		bus->queued--;
		bus->busy = true;
		pthread_mutex_unlock(&bus->lock);
		enum fd_err err = fd_store_save_snapshot(bus->pool, j->stream, j->version, j->schema, j->state_json);
		if (err)
			fd_log_fields(FD_LOG_WARN, "snapshot not written",
				      json_pack("{s:s, s:I, s:s}", "stream", j->stream, "version", (json_int_t)j->version,
						"error", fd_err_name(err)));
		job_free(j);
		pthread_mutex_lock(&bus->lock);
		bus->busy = false;
		if (!bus->head)
			pthread_cond_broadcast(&bus->drained);
	}
	bus->busy = false;
	pthread_cond_broadcast(&bus->drained);
	pthread_mutex_unlock(&bus->lock);
	return NULL;
}

/* Every how many events to snapshot t; 0 for a type that cannot be snapshotted (no snapshot or restore). */
static unsigned snapshot_every(const struct fd_bus *bus, const struct fd_aggregate_type *t)
{
	if (!t->snapshot || !t->restore)
		return 0;
	return bus->cfg.snapshot_every < 0 ? t->snapshot_every : (unsigned)bus->cfg.snapshot_every;
}

/* Queue a snapshot of `state` at `version`; dropped (logged) when the queue is full. */
static void snapshot_enqueue(struct fd_bus *bus, const struct fd_aggregate_type *t, const char *stream,
			     const void *state, int64_t version)
{
	json_t *snap = t->snapshot(state);
	char *text = snap ? json_dumps(snap, JSON_COMPACT) : NULL;
	json_decref(snap);
	struct snap_job *j = text ? calloc(1, sizeof *j) : NULL;
	if (j)
		j->stream = strdup(stream);
	if (!j || !j->stream) {
		free(text);
		job_free(j);
		return;
	}
	j->state_json = text;
	j->version = version;
	j->schema = fd_aggregate_snapshot_schema(t);
	pthread_mutex_lock(&bus->lock);
	if (bus->queued >= bus->cfg.snapshot_queue || bus->stop) {
		pthread_mutex_unlock(&bus->lock);
		fd_log(FD_LOG_DEBUG, "snapshot queue full; skipped %s@%" PRId64, stream, version);
		job_free(j);
		return;
	}
	if (bus->tail)
		bus->tail->next = j;
	else
		bus->head = j;
	bus->tail = j;
	bus->queued++;
	pthread_cond_signal(&bus->work);
	pthread_mutex_unlock(&bus->lock);
}

void fd_bus_flush(struct fd_bus *bus)
{
	pthread_mutex_lock(&bus->lock);
	while (bus->head || bus->busy)
		pthread_cond_wait(&bus->drained, &bus->lock);
	pthread_mutex_unlock(&bus->lock);
}

/* ---- cached states ------------------------------------------------------ */

/*
 * A state in one allocation with its type, so that the aggregate cache can
 * hold states of every type and free them.  The state is used in place.
 */
struct state_box {
	const struct fd_aggregate_type *t;
	bool live;             /* state holds something for t->release */
	max_align_t state[];   /* t->state_size bytes */
};

static struct state_box *box_new(const struct fd_aggregate_type *t)
{
	struct state_box *b = malloc(sizeof *b + t->state_size);
	if (b) {
		b->t = t;
		b->live = false;
	}
	return b;
}

/* Release the state, keep the memory. */
static void box_clear(struct state_box *b)
{
	if (b->live)
		b->t->release(b->state);
	b->live = false;
}

static void box_free(void *p)
{
	struct state_box *b = p;
	if (b) {
		box_clear(b);
		free(b);
	}
}

/* ---- lifecycle ---------------------------------------------------------- */

/*
 * The installation's secret (fd_store_installation_secret) in *out, read
 * from the database the first time and kept: it never changes.
 */
static enum fd_err installation_secret(struct fd_bus *bus, const char **out)
{
	pthread_mutex_lock(&bus->lock);
	bool have = bus->have_secret;
	pthread_mutex_unlock(&bus->lock);
	if (!have) {
		char s[FD_INSTALLATION_SECRET_MAX + 1];
		enum fd_err err = fd_store_installation_secret(bus->pool, s, sizeof s);
		if (err)
			return err;
		pthread_mutex_lock(&bus->lock);
		if (!bus->have_secret) {
			memcpy(bus->secret, s, sizeof s);
			bus->have_secret = true;
		}
		pthread_mutex_unlock(&bus->lock);
	}
	*out = bus->secret;
	return FD_OK;
}

enum fd_err fd_bus_new(struct fd_pool *pool, const struct fd_bus_config *cfg, struct fd_bus **out)
{
	struct fd_bus *bus = calloc(1, sizeof *bus);
	if (!bus)
		return FD_ERR_NOMEM;
	bus->pool = pool;
	bus->cfg = *cfg;
	if (!bus->cfg.snapshot_queue)
		bus->cfg.snapshot_queue = 1024;
	if (fd_aggcache_new(cfg->cache_entries, box_free, &bus->cache) != FD_OK) {
		free(bus);
		return FD_ERR_NOMEM;
	}
	if (fd_gates_new(&bus->gates) != FD_OK) {
		fd_aggcache_free(bus->cache);
		free(bus);
		return FD_ERR_NOMEM;
	}
	pthread_mutex_init(&bus->lock, NULL);
	pthread_cond_init(&bus->work, NULL);
	pthread_cond_init(&bus->drained, NULL);
	/* Read at start when the database is there; else on the first command with a key. */
	const char *secret;
	if (installation_secret(bus, &secret) != FD_OK)
		fd_log(FD_LOG_WARN, "the installation secret is not readable yet; commands with an Idempotency-Key "
				    "read it when they first need it");
	if (pthread_create(&bus->writer, NULL, snapshot_writer, bus) != 0) {
		pthread_cond_destroy(&bus->drained);
		pthread_cond_destroy(&bus->work);
		pthread_mutex_destroy(&bus->lock);
		fd_gates_free(bus->gates);
		fd_aggcache_free(bus->cache);
		free(bus);
		return FD_ERR_NOMEM;
	}
	*out = bus;
	return FD_OK;
}

void fd_bus_free(struct fd_bus *bus)
{
	if (!bus)
		return;
	pthread_mutex_lock(&bus->lock);
	bus->stop = true;
	pthread_cond_signal(&bus->work);
	pthread_mutex_unlock(&bus->lock);
	pthread_join(bus->writer, NULL);
	pthread_cond_destroy(&bus->drained);
	pthread_cond_destroy(&bus->work);
	pthread_mutex_destroy(&bus->lock);
	fd_gates_free(bus->gates);
	fd_aggcache_free(bus->cache);
	free(bus);
}

/* ---- loading ------------------------------------------------------------ */

void fd_bus_stream_name(const struct fd_aggregate_type *t, const char *id, char *buf, size_t len)
{
	snprintf(buf, len, "%s-%s", t->category, id);
}

/*
 * The stored rows [version, type, data] as a JSON array.  jsonb keeps
 * integers of any size and jansson only 64-bit ones, and the stream API
 * stores a client's numbers as written; when the whole text does not load,
 * each row is loaded on its own and one that needs it has the integers of
 * its data read as reals.  Only that event is affected: apply ignores an
 * unknown type and refuses a known one with such data, as it should.
 */
static json_t *load_rows(const char *text)
{
	json_t *arr = json_loads(text, 0, NULL);
	if (arr)
		return arr;
	size_t len = strlen(text), pos = 0;
	struct fd_span whole = { 0, len }, sp;
	if (!(arr = json_array()))
		return NULL;
	while (fd_json_next_element(text, len, whole, &pos, &sp)) {
		json_t *row = json_loadb(text + sp.start, sp.end - sp.start, 0, NULL);
		if (!row) {
			row = json_loadb(text + sp.start, sp.end - sp.start, JSON_DECODE_INT_AS_REAL, NULL);
			json_t *jv = json_array_get(row, 0);
			if (json_is_real(jv))
				json_array_set_new(row, 0, json_integer((json_int_t)json_real_value(jv)));
		}
		if (!row || json_array_append_new(arr, row) != 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

/*
 * An event's stored schema version: the load's fourth column, the
 * metadata's schema_version (null when absent: version 1).  False for
 * anything else, which no writer that checks it stores.
 */
static bool row_schema_version(const json_t *jsv, int *out)
{
	*out = 1;
	if (!jsv || json_is_null(jsv))
		return true;
	if (!json_is_integer(jsv) || json_integer_value(jsv) < 1 || json_integer_value(jsv) > FD_SCHEMA_VERSION_MAX)
		return false;
	*out = (int)json_integer_value(jsv);
	return true;
}

/*
 * Fold a JSON array of [version, type, data, schema_version] into state,
 * each event upcast to the current version of its type first, checking
 * versions run on from `from`.  An event newer than t knows is
 * FD_ERR_SCHEMA; one that does not upcast or apply FD_ERR_INTERNAL (a
 * stored event this code cannot fold is not the caller's fault); both are
 * logged with the event.
 */
static enum fd_err fold_events(const struct fd_bus *bus, const struct fd_aggregate_type *t, void *state,
			       const char *stream, const char *events_json, int64_t from, int64_t *last,
			       json_t *erased)
{
	json_t *arr = load_rows(events_json), *subjects = NULL, *md = NULL, *gone = NULL;
	struct fd_subject_keys *keys = NULL;
	enum fd_err err = FD_OK;
	if (!json_is_array(arr)) {
		err = FD_ERR_INTERNAL;
		goto done;
	}
	size_t i;
	json_t *row;
	int64_t v = from;
	/* personal values (store/personal.h): the keys of their subjects, in one statement */
	json_array_foreach(arr, i, row) {
		const char *s = json_string_value(json_object_get(json_array_get(row, 4), "subject"));
		if (s && ((!subjects && !(subjects = json_array())) || json_array_append_new(subjects, json_string(s)))) {
			err = FD_ERR_NOMEM;
			goto done;
		}
	}
	if (subjects && ((err = fd_subject_keys_fetch_pool(bus->pool, subjects, &keys)) ||
			 !(md = json_object()) || !(gone = json_array()))) {
		err = err ? err : FD_ERR_NOMEM;
		goto done;
	}
	json_array_foreach(arr, i, row) {
		json_t *decl = json_array_get(row, 4);
		if (keys && json_is_object(decl)) {
			json_array_clear(gone);
			if (json_object_set(md, FD_PERSONAL_KEY, decl) ||
			    (err = fd_personal_unseal(keys, md, json_array_get(row, 2), gone)))
				goto done;
			size_t k;
			json_t *p;
			json_array_foreach(gone, k, p) {
				bool seen = false;
				for (size_t j = 0; erased && j < json_array_size(erased) && !seen; j++)
					seen = json_equal(json_array_get(erased, j), p);
				if (erased && !seen && json_array_append(erased, p)) {
					err = FD_ERR_NOMEM;
					goto done;
				}
			}
		}
	}
	json_array_foreach(arr, i, row) {
		json_t *jv = json_array_get(row, 0), *jt = json_array_get(row, 1), *jd = json_array_get(row, 2);
		int schema = 1;
		if (!json_is_integer(jv) || !json_is_string(jt) || !jd || json_integer_value(jv) != v + 1) {
			err = FD_ERR_INTERNAL;
			goto done;
		}
		v++;
		const char *type = json_string_value(jt), *stored_type = type;
		const char *failed = "event does not apply";
		int stored = 1;
		if (!row_schema_version(json_array_get(row, 3), &schema)) {
			err = FD_ERR_INTERNAL;
			failed = "event has a malformed schema_version";
		} else {
			stored = schema;
			err = fd_event_schema_upcast(&t->events, bus->cfg.services, &type, &schema, jd);
			if (err == FD_ERR_SCHEMA)
				failed = "event is of a newer schema version than this code knows";
			else if (err == FD_ERR_NOMEM)
				failed = NULL;
			else if (err) {
				err = FD_ERR_INTERNAL;
				failed = "event does not upcast";
			} else if ((err = t->apply(state, type, jd)) != FD_OK) {
				err = FD_ERR_INTERNAL;
			}
		}
		if (err) {
			if (failed)
				fd_log_fields(FD_LOG_ERROR, failed,
					      json_pack("{s:s, s:s, s:s, s:I, s:i, s:i}", "aggregate", t->name, "stream",
							stream, "type", stored_type, "version", (json_int_t)v,
							"schema_version", stored, "known_version",
							fd_event_schema_version(&t->events, stored_type)));
			goto done;
		}
	}
	*last = v;
done:
	fd_subject_keys_free(keys);
	json_decref(subjects);
	json_decref(md);
	json_decref(gone);
	json_decref(arr);
	return err;
}

/*
 * Load into an uninitialised state.  *replayed receives how many events were
 * folded, so the caller can snapshot a stream that had no usable snapshot
 * (replayed >= 2N: a stale schema, or snapshots switched on late; the 2N
 * margin leaves room for a snapshot still queued in the writer).
 */
static enum fd_err load(struct fd_bus *bus, const struct fd_aggregate_type *t, const char *stream,
			const struct fd_load_target *target, void *state, int64_t *version, size_t *replayed,
			json_t *erased)
{
	struct fd_stream_load l = { 0 };
	int64_t max_version = 0;
	enum fd_err err;

	struct fd_pool *pool = target && target->pool ? target->pool : bus->pool;
	t->init(state);
	*version = 0;
	*replayed = 0;
	if (target && target->at_time) {
		if ((err = fd_store_version_at(pool, stream, target->unix_us, &max_version)))
			return err;
		if (max_version == 0)
			return FD_OK; /* did not exist then */
	} else if (target && target->version > 0) {
		max_version = target->version;
	}
	bool use_snapshot = !(target && target->no_snapshot) && snapshot_every(bus, t) > 0;
	if ((err = fd_store_load_stream(pool, stream, use_snapshot ? fd_aggregate_snapshot_schema(t) : -1, max_version, &l)))
		goto done;
	if (target && target->version > 0 && target->version > l.stream_version) {
		err = FD_ERR_NOTFOUND;
		goto done;
	}
	if (l.snapshot_json) {
		json_t *snap = json_loads(l.snapshot_json, 0, NULL);
		err = snap ? t->restore(state, snap) : FD_ERR_INVAL;
		json_decref(snap);
		if (err) {
			/* A snapshot this code cannot read is ignored: replay everything instead. */
			fd_log_fields(FD_LOG_WARN, "snapshot unreadable, replaying",
				      json_pack("{s:s, s:I}", "stream", stream, "version", (json_int_t)l.snapshot_version));
			fd_stream_load_release(&l);
			t->release(state);
			t->init(state);
			if ((err = fd_store_load_stream(pool, stream, -1, max_version, &l)))
				goto done;
		}
	}
	/* A snapshot is always of the stream's current life; without one the life's first event comes first. */
	int64_t from = l.snapshot_version > l.life_start ? l.snapshot_version : l.life_start, last = from;
	if (l.count > 0 && strncmp(l.events_json, "[[", 2) == 0 && strtoll(l.events_json + 2, NULL, 10) != from + 1) {
		/* The events after `from` were truncated and no snapshot covers them. */
		fd_log_fields(FD_LOG_WARN, "events needed to load the aggregate were removed",
			      json_pack("{s:s, s:I, s:I}", "stream", stream, "from", (json_int_t)from, "snapshot_version",
					(json_int_t)l.snapshot_version));
		err = max_version > 0 ? FD_ERR_NOTFOUND : FD_ERR_INTERNAL;
		goto done;
	}
	if ((err = fold_events(bus, t, state, stream, l.events_json, from, &last, erased)))
		goto done;
	*version = last;
	*replayed = l.count;
done:
	fd_stream_load_release(&l);
	return err;
}

enum fd_err fd_bus_load(struct fd_bus *bus, const struct fd_aggregate_type *t, const char *id,
			const struct fd_load_target *target, void *state, int64_t *version)
{
	return fd_bus_load_ex(bus, t, id, target, state, version, NULL);
}

enum fd_err fd_bus_load_ex(struct fd_bus *bus, const struct fd_aggregate_type *t, const char *id,
			   const struct fd_load_target *target, void *state, int64_t *version, json_t **erased)
{
	char stream[FD_STREAM_MAX + 1];
	size_t replayed = 0;
	json_t *gone = json_array();
	if (erased)
		*erased = NULL;
	if (!gone || !fd_aggregate_id_valid(t, id)) {
		json_decref(gone);
		t->init(state);
		*version = 0;
		return gone ? FD_ERR_INVAL : FD_ERR_NOMEM;
	}
	fd_bus_stream_name(t, id, stream, sizeof stream);
	enum fd_err err = load(bus, t, stream, target, state, version, &replayed, gone);
	unsigned every = snapshot_every(bus, t);
	bool latest = !target || (!target->at_time && target->version == 0 && !target->no_snapshot);
	/* a stream with erased values keeps no snapshots (migrations/0009_personal_data.sql) */
	if (!err && latest && every && replayed >= 2 * (size_t)every && json_array_size(gone) == 0)
		snapshot_enqueue(bus, t, stream, state, *version);
	if (!err && erased && json_array_size(gone))
		*erased = json_incref(gone);
	json_decref(gone);
	return err;
}

/* ---- commands ----------------------------------------------------------- */

void fd_cmd_result_release(struct fd_cmd_result *r)
{
	fd_decision_release(&r->decision);
}

/*
 * The id of the i-th event a command with idempotency key `key` records.
 * The installation's secret is part of the namespace, so no client can
 * compute the id and take it first with an append of its own.
 */
static enum fd_err event_id_for(struct fd_bus *bus, const char *key, size_t i, struct fd_uuid *out)
{
	const char *secret;
	enum fd_err err = installation_secret(bus, &secret);
	if (err)
		return err;
	char ns[sizeof IDEMPOTENCY_NS + FD_INSTALLATION_SECRET_MAX + 1], name[300];
	snprintf(ns, sizeof ns, "%s\n%s", IDEMPOTENCY_NS, secret);
	int n = snprintf(name, sizeof name, "%s#%zu", key, i);
	fd_uuid_from_name(ns, name, (size_t)n < sizeof name ? (size_t)n : sizeof name - 1, out);
	return FD_OK;
}

/*
 * Has this idempotency key recorded events already?  FD_OK with *found set
 * and out filled (replayed) when it has and the request matches;
 * FD_ERR_IDEMPOTENCY when the request differs; FD_ERR_DUPLICATE when an
 * event with the key's first id is stored but was not recorded by a command
 * with this key (nothing to replay, and the command cannot record its
 * events under those ids either).
 */
static enum fd_err idempotent_replay(struct fd_bus *bus, const struct fd_cmd_meta *meta, bool *found,
				     struct fd_cmd_result *out)
{
	struct fd_uuid first;
	struct fd_stored_event ev = { 0 }, last = { 0 };
	json_t *md = NULL;
	*found = false;
	enum fd_err err = event_id_for(bus, meta->idempotency_key, 0, &first);
	if (err)
		return err;
	err = fd_store_find_event(bus->pool, &first, &ev);
	if (err == FD_ERR_NOTFOUND)
		return FD_OK;
	if (err)
		return err;
	md = json_loads(ev.metadata_json ? ev.metadata_json : "{}", 0, NULL);
	json_t *idem = json_object_get(md, "idempotency");
	const char *hash = json_string_value(json_object_get(idem, "request_hash"));
	const char *key = json_string_value(json_object_get(idem, "key"));
	json_int_t n = json_integer_value(json_object_get(idem, "events"));
	if (!hash || !key || strcmp(key, meta->idempotency_key) != 0 || n < 1) {
		err = FD_ERR_DUPLICATE;
		goto done;
	}
	if (!meta->request_hash || strcmp(hash, meta->request_hash) != 0) {
		err = FD_ERR_IDEMPOTENCY;
		goto done;
	}
	if ((err = fd_store_event_at(bus->pool, ev.stream, ev.version + n - 1, &last)))
		goto done;
	*found = true;
	out->replayed = true;
	out->first_version = ev.version;
	out->version = last.version;
	out->position = last.position;
done:
	json_decref(md);
	fd_stored_event_release(&ev);
	fd_stored_event_release(&last);
	return err;
}

static json_t *event_metadata(const struct fd_cmd_meta *meta, const char *command, size_t nevents)
{
	json_t *m = json_object();
	if (!m)
		return NULL;
	if (meta->correlation_id)
		json_object_set_new(m, "correlation_id", json_string(meta->correlation_id));
	if (meta->causation_id)
		json_object_set_new(m, "causation_id", json_string(meta->causation_id));
	if (meta->request_id)
		json_object_set_new(m, "request_id", json_string(meta->request_id));
	if (meta->caller)
		json_object_set_new(m, "caller", json_string(meta->caller));
	json_object_set_new(m, "command", json_string(command));
	if (meta->idempotency_key)
		json_object_set_new(m, "idempotency",
				    json_pack("{s:s, s:s, s:I}", "key", meta->idempotency_key, "request_hash",
					      meta->request_hash ? meta->request_hash : "", "events",
					      (json_int_t)nevents));
	return m;
}

/*
 * An event's personal data as t declares it for `type`: the values present
 * in data, of the subject whose id data holds.  None (both NULL) when the
 * type declares none or data holds none of them; else *personal is the
 * metadata's declaration and *sealed a copy of data with them sealed
 * (store/personal.h): data itself stays as decided, for apply.
 */
static enum fd_err personal_of(struct fd_bus *bus, const struct fd_aggregate_type *t, const char *type,
			       const json_t *data, json_t **personal, json_t **sealed)
{
	const struct fd_personal_decl *d = fd_event_schema_personal(&t->events, type);
	*personal = *sealed = NULL;
	if (!d || !d->paths)
		return FD_OK;
	json_t *paths = json_array();
	if (!paths)
		return FD_ERR_NOMEM;
	for (size_t i = 0; d->paths[i]; i++)
		if (fd_json_pointer_get(data, d->paths[i]) && json_array_append_new(paths, json_string(d->paths[i]))) {
			json_decref(paths);
			return FD_ERR_NOMEM;
		}
	if (json_array_size(paths) == 0) {
		json_decref(paths);
		return FD_OK;
	}
	const char *subject = json_string_value(d->subject ? fd_json_pointer_get(data, d->subject) : NULL);
	if (!fd_personal_subject_valid(subject)) {
		/* the declaration's promise broken by decide: refuse rather than store the values in the clear */
		fd_log_fields(FD_LOG_ERROR, "an event with personal data has no valid subject id; not recorded",
			      json_pack("{s:s, s:s, s:s?}", "aggregate", t->name, "type", type, "subject_path", d->subject));
		json_decref(paths);
		return FD_ERR_INTERNAL;
	}
	*personal = json_pack("{s:s, s:o}", "subject", subject, "paths", paths);
	*sealed = json_deep_copy(data);
	enum fd_err err = *personal && *sealed ? fd_personal_seal(bus->pool, *personal, *sealed) : FD_ERR_NOMEM;
	if (err) {
		json_decref(*personal);
		json_decref(*sealed);
		*personal = *sealed = NULL;
	}
	return err;
}

/*
 * Append the decided events; on FD_OK the result fields are set.  An event
 * of a type whose schema version is above 1 carries it in its metadata
 * (schema.h); the others' metadata is the same text for all.
 */
static enum fd_err record(struct fd_bus *bus, const struct fd_aggregate_type *t, const char *stream,
			  int64_t expected, const char *command, json_t *events, const struct fd_cmd_meta *meta,
			  struct fd_append_result *res)
{
	size_t n = json_array_size(events);
	struct fd_event_in *evs = calloc(n, sizeof *evs);
	char **texts = calloc(2 * n, sizeof *texts);
	json_t *md = event_metadata(meta, command, n);
	char *md_text = md ? json_dumps(md, JSON_COMPACT) : NULL;
	enum fd_err err = FD_OK;
	if (!evs || !texts || !md_text) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_array_get(events, i);
		const char *type = json_string_value(json_object_get(e, "type"));
		json_t *data = json_object_get(e, "data");
		if (!type || !json_is_object(data)) {
			err = FD_ERR_INTERNAL;
			goto done;
		}
		if (meta->idempotency_key) {
			if ((err = event_id_for(bus, meta->idempotency_key, i, &evs[i].event_id)))
				goto done;
			evs[i].id_given = true;
		} else if ((err = fd_uuid_v7(&evs[i].event_id))) {
			goto done;
		}
		json_t *personal = NULL, *sealed = NULL;
		if ((err = personal_of(bus, t, type, data, &personal, &sealed)))
			goto done;
		texts[i] = json_dumps(sealed ? sealed : data, JSON_COMPACT);
		json_decref(sealed);
		if (!texts[i]) {
			json_decref(personal);
			err = FD_ERR_NOMEM;
			goto done;
		}
		evs[i].type = type;
		evs[i].data_json = texts[i];
		evs[i].metadata_json = md_text;
		int version = fd_event_schema_version(&t->events, type);
		if (version > 1 || personal) {
			json_t *vmd = json_copy(md);
			if (!vmd || (version > 1 && json_object_set_new(vmd, FD_SCHEMA_VERSION_KEY, json_integer(version))) ||
			    (personal && json_object_set(vmd, FD_PERSONAL_KEY, personal)) ||
			    !(texts[n + i] = json_dumps(vmd, JSON_COMPACT))) {
				json_decref(vmd);
				json_decref(personal);
				err = FD_ERR_NOMEM;
				goto done;
			}
			json_decref(vmd);
			evs[i].metadata_json = texts[n + i];
		}
		json_decref(personal);
	}
	err = fd_store_append(bus->pool, stream, (struct fd_expected){ FD_EXPECT_EXACT, expected }, evs, n, res);
done:
	if (texts)
		for (size_t i = 0; i < 2 * n; i++)
			free(texts[i]);
	free(texts);
	free(evs);
	free(md_text);
	json_decref(md);
	return err;
}

/* ---- one command: check, load, decide, record ------------------------------- */

/* What one command works with, from its first attempt to its last. */
struct command_run {
	struct fd_bus *bus;
	const struct fd_aggregate_type *t;
	const struct fd_command_type *cmd;
	const char *command;
	const json_t *payload;
	const struct fd_cmd_meta *meta;
	const char *stream;
	struct state_box *box;   /* the state decided on; NULL once the cache took it */
	struct fd_cmd_result *out;
};

/* How an attempt ended. */
enum attempt_end {
	ATTEMPT_DONE,     /* answered (success or error in *err) */
	ATTEMPT_STALE,    /* decided on the cached state, which may be stale: try the stored one */
	ATTEMPT_CONFLICT, /* the stored state changed under the decision: try again if attempts are left */
};

/* The command of type t by name, for a valid id and an object payload; NULL (out says why) otherwise. */
static const struct fd_command_type *check_command(const struct fd_aggregate_type *t, const char *id,
						   const char *command, const json_t *payload, struct fd_cmd_result *out)
{
	const struct fd_command_type *cmd = fd_aggregate_command(t, command);
	if (cmd && fd_aggregate_id_valid(t, id) && json_is_object(payload))
		return cmd;
	snprintf(out->decision.detail, sizeof out->decision.detail, "%s",
		 !cmd ? "unknown command" : !json_is_object(payload) ? "the payload must be an object" : "invalid id");
	out->decision.outcome = FD_INVALID;
	return NULL;
}

/*
 * Take the stream's state from the aggregate cache into r->box when it is
 * there, of this type, and at the version an If-Match asks for; *version
 * gets its version.  A cached state that does not fit goes back.
 */
static bool take_cached(struct command_run *r, int64_t *version)
{
	struct state_box *hit = fd_aggcache_take(r->bus->cache, r->stream, version);
	if (hit && hit->t == r->t && hit->live && (!r->meta->has_if_match || *version == r->meta->if_match)) {
		box_free(r->box);
		r->box = hit;
		return true;
	}
	if (hit)
		fd_aggcache_put(r->bus->cache, r->stream, *version, hit); /* not for this command: leave it */
	return false;
}

/*
 * A twin request with the same idempotency key committed first: answer with
 * its replay when it was the same request.  When nothing with the key can
 * be replayed, `none` (FD_ERR_DUPLICATE when the key's ids are taken by
 * events no such command recorded, FD_ERR_CONFLICT when our ids were
 * stored under us).
 */
static enum fd_err replay_twin(struct command_run *r, enum fd_err none)
{
	bool found = false;
	enum fd_err err = idempotent_replay(r->bus, r->meta, &found, r->out);
	return !err && !found ? none : err;
}

/*
 * The domain refused the command.  With an idempotency key, a twin may have
 * committed since the first check, and this refusal be the state it left
 * ("order exists"): then the answer is its replay, else the refusal.
 */
static enum fd_err answer_refusal(struct command_run *r)
{
	if (!r->meta->idempotency_key)
		return FD_ERR_REJECTED;
	struct fd_decision refusal = r->out->decision;
	r->out->decision = (struct fd_decision){ 0 };
	bool found = false;
	enum fd_err err = idempotent_replay(r->bus, r->meta, &found, r->out);
	if (err || found) {
		fd_decision_release(&refusal);
		return err;
	}
	r->out->decision = refusal;
	return FD_ERR_REJECTED;
}

/*
 * After a write: fold what was recorded into the state with the same apply
 * used for replay, snapshot when the version crossed a multiple of N (or
 * the load replayed too much), and hand the state to the cache for the
 * stream's next command.  The cache forgets a state it cannot trust.
 */
static void keep_state(struct command_run *r, json_t *events, int64_t version, size_t replayed,
		       const struct fd_append_result *res)
{
	struct fd_bus *bus = r->bus;
	if (res->duplicate) {
		fd_aggcache_drop(bus->cache, r->stream);
		return;
	}
	size_t i;
	json_t *e;
	bool folded = true;
	json_array_foreach(events, i, e) {
		if (r->t->apply(r->box->state, json_string_value(json_object_get(e, "type")), json_object_get(e, "data")) !=
		    FD_OK)
			folded = false;
	}
	if (!folded) {
		fd_aggcache_drop(bus->cache, r->stream);
		return;
	}
	unsigned every = snapshot_every(bus, r->t);
	if (every && ((uint64_t)res->last_version / every > (uint64_t)version / every || replayed >= 2 * (size_t)every))
		snapshot_enqueue(bus, r->t, r->stream, r->box->state, res->last_version);
	/* The state moves into the cache as it is: the next command takes it over. */
	fd_aggcache_put(bus->cache, r->stream, res->last_version, r->box);
	r->box = NULL;
}

/* Record the decided events at `version` and answer; a version conflict is left to the caller. */
static enum attempt_end record_decision(struct command_run *r, bool cached, int64_t version, size_t replayed,
					enum fd_err *err)
{
	struct fd_cmd_result *out = r->out;
	json_t *events = out->decision.events;
	if (!json_is_array(events) || json_array_size(events) == 0) {
		*err = FD_ERR_INTERNAL;
		return ATTEMPT_DONE;
	}
	struct fd_append_result res;
	*err = record(r->bus, r->t, r->stream, version, r->command, events, r->meta, &res);
	if (*err == FD_ERR_CONFLICT) {
		fd_aggcache_drop(r->bus->cache, r->stream);
		fd_metrics_command_conflict(r->bus->cfg.metrics, r->t->name);
		if (r->meta->has_if_match) {
			*err = FD_ERR_PRECONDITION;
			return ATTEMPT_DONE;
		}
		return cached ? ATTEMPT_STALE : ATTEMPT_CONFLICT;
	}
	if (*err == FD_ERR_DUPLICATE && r->meta->idempotency_key) {
		/* the twin committed after our first check, or the key's ids are taken by other events */
		*err = replay_twin(r, FD_ERR_DUPLICATE);
		return ATTEMPT_DONE;
	}
	if (*err)
		return ATTEMPT_DONE;
	if (res.duplicate && r->meta->idempotency_key) {
		/* Our event ids were already stored: a twin with this key won the race. */
		fd_aggcache_drop(r->bus->cache, r->stream);
		*err = replay_twin(r, FD_ERR_CONFLICT);
		return ATTEMPT_DONE;
	}
	out->replayed = res.duplicate;
	out->first_version = res.first_version;
	out->version = res.last_version;
	out->position = res.position;
	keep_state(r, events, version, replayed, &res);
	return ATTEMPT_DONE;
}

/* One attempt: the state (cached, or loaded), If-Match, decide, record. */
static enum attempt_end attempt_command(struct command_run *r, bool try_cache, enum fd_err *err)
{
	int64_t version = 0;
	size_t replayed = 0;
	box_clear(r->box);
	bool cached = try_cache && take_cached(r, &version);
	if (!cached) {
		r->box->live = true; /* load() initialises the state first */
		if ((*err = load(r->bus, r->t, r->stream, NULL, r->box->state, &version, &replayed, NULL)))
			return ATTEMPT_DONE;
	}
	if (r->meta->has_if_match && version != r->meta->if_match) {
		*err = FD_ERR_PRECONDITION;
		return ATTEMPT_DONE;
	}
	fd_decision_release(&r->out->decision);
	if ((*err = r->cmd->decide(r->box->state, version > 0, r->payload, &r->out->decision)))
		return ATTEMPT_DONE;
	switch (r->out->decision.outcome) {
	case FD_DECIDED:
		return record_decision(r, cached, version, replayed, err);
	case FD_INVALID:
		if (cached)
			return ATTEMPT_STALE;
		/* without the check up front, a repeat can meet a state its first run left: answer that run */
		*err = r->meta->repeat_rare ? answer_refusal(r) : FD_ERR_INVAL;
		if (*err == FD_ERR_REJECTED)
			*err = FD_ERR_INVAL;
		return ATTEMPT_DONE;
	case FD_REFUSED:
		if (cached)
			return ATTEMPT_STALE;
		*err = answer_refusal(r);
		return ATTEMPT_DONE;
	}
	*err = FD_ERR_INTERNAL;
	return ATTEMPT_DONE;
}

/*
 * The command with its retries.  The first attempt may decide on the cached
 * state; when that leads nowhere (no decision, or a version conflict) the
 * stored state gets an attempt of its own, not counted.  Version conflicts
 * on the stored state are retried up to max_retries times.
 */
static enum fd_err send_command(struct fd_bus *bus, const struct fd_aggregate_type *t, const char *id,
				const char *command, const json_t *payload, const struct fd_cmd_meta *meta,
				struct fd_cmd_result *out)
{
	static const struct fd_cmd_meta no_meta = { 0 };
	char stream[FD_STREAM_MAX + 1];
	enum fd_err err = FD_OK;

	memset(out, 0, sizeof *out);
	if (!meta)
		meta = &no_meta;
	const struct fd_command_type *cmd = check_command(t, id, command, payload, out);
	if (!cmd)
		return FD_ERR_INVAL;
	fd_bus_stream_name(t, id, stream, sizeof stream);
	if (meta->idempotency_key && !meta->repeat_rare) {
		bool found = false;
		if ((err = idempotent_replay(bus, meta, &found, out)) || found)
			return err;
	}
	struct command_run r = { .bus = bus, .t = t, .cmd = cmd, .command = command, .payload = payload,
				 .meta = meta, .stream = stream, .box = box_new(t), .out = out };
	if (!r.box)
		return FD_ERR_NOMEM;
	struct fd_gate *gate = fd_gate_enter(bus->gates, stream);
	unsigned max_attempts = bus->cfg.max_retries + 1;
	bool try_cache = true;
	err = FD_ERR_CONFLICT; /* when every attempt conflicts */
	for (unsigned attempt = 1; attempt <= max_attempts;) {
		out->attempts = attempt;
		enum attempt_end end = attempt_command(&r, try_cache, &err);
		try_cache = false;
		if (end == ATTEMPT_DONE)
			break;
		if (end == ATTEMPT_CONFLICT) {
			fd_log_fields(FD_LOG_DEBUG, "version conflict, retrying",
				      json_pack("{s:s, s:i}", "stream", stream, "attempt", (int)attempt));
			attempt++;
			err = FD_ERR_CONFLICT;
		}
	}
	fd_gate_leave(bus->gates, gate);
	box_free(r.box);
	return err;
}

static enum fd_metrics_command command_result(enum fd_err err, const struct fd_cmd_result *r)
{
	switch (err) {
	case FD_OK:
		return r->replayed ? FD_METRICS_COMMAND_REPLAYED : FD_METRICS_COMMAND_OK;
	case FD_ERR_INVAL:
		return FD_METRICS_COMMAND_INVALID;
	case FD_ERR_REJECTED:
		return FD_METRICS_COMMAND_REJECTED;
	case FD_ERR_PRECONDITION:
		return FD_METRICS_COMMAND_PRECONDITION;
	case FD_ERR_CONFLICT:
		return FD_METRICS_COMMAND_CONFLICT;
	case FD_ERR_IDEMPOTENCY:
	case FD_ERR_DUPLICATE: /* the key's event ids are taken by other events */
		return FD_METRICS_COMMAND_IDEMPOTENCY;
	default:
		return FD_METRICS_COMMAND_ERROR;
	}
}

enum fd_err fd_bus_send(struct fd_bus *bus, const struct fd_aggregate_type *t, const char *id,
			const char *command, const json_t *payload, const struct fd_cmd_meta *meta,
			struct fd_cmd_result *out)
{
	enum fd_err err = send_command(bus, t, id, command, payload, meta, out);
	fd_metrics_command(bus->cfg.metrics, t->name, command_result(err, out));
	return err;
}

/* ---- snapshots on demand (truncation) ------------------------------------ */

int fd_bus_snapshot_schema(const struct fd_bus *bus, const struct fd_aggregate_type *t)
{
	return snapshot_every(bus, t) > 0 ? fd_aggregate_snapshot_schema(t) : -1;
}

enum fd_err fd_bus_snapshot_now(struct fd_bus *bus, const struct fd_aggregate_type *t, const char *id,
				int64_t *version)
{
	char stream[FD_STREAM_MAX + 1];
	*version = 0;
	if (snapshot_every(bus, t) == 0)
		return FD_ERR_REJECTED;
	if (!fd_aggregate_id_valid(t, id))
		return FD_ERR_INVAL;
	fd_bus_stream_name(t, id, stream, sizeof stream);
	void *state = malloc(t->state_size);
	if (!state)
		return FD_ERR_NOMEM;
	size_t replayed = 0;
	enum fd_err err = load(bus, t, stream, NULL, state, version, &replayed, NULL);
	json_t *snap = NULL;
	char *text = NULL;
	if (!err && *version == 0)
		err = FD_ERR_NOTFOUND;
	if (!err && (!(snap = t->snapshot(state)) || !(text = json_dumps(snap, JSON_COMPACT))))
		err = FD_ERR_NOMEM;
	if (!err)
		err = fd_store_save_snapshot(bus->pool, stream, *version, fd_aggregate_snapshot_schema(t), text);
	json_decref(snap);
	free(text);
	t->release(state);
	free(state);
	return err;
}
