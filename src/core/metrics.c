/*
 * metrics.c - the metrics registry and its text exposition format.
 *
 * Each labelled family is a plain array of atomic counters indexed by its
 * label slots, allocated once in fd_metrics_new.  A histogram keeps one
 * counter per bucket (not cumulative) and its sum in nanoseconds; a scrape
 * adds the buckets up, so the +Inf bucket and _count are the same number by
 * construction.  Durations stay integers and are printed as exact decimal
 * seconds, so nothing depends on floating point or the locale.
 *
 * Threading: relaxed atomics throughout.  Every slot is an independent
 * monotonic counter; no reader needs an order between two of them.
 */
#include "factd/metrics.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Request methods with a label of their own; anything else is "other" (the last row). */
static const char *const methods[] = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other" };
#define NMETHODS (sizeof methods / sizeof methods[0])

/* The statuses factd answers with; anything else is "other" (one slot past the table). */
static const struct {
	unsigned code;
	const char *label;
} statuses[] = {
	{ 200, "200" }, { 201, "201" }, { 202, "202" }, { 400, "400" }, { 401, "401" },
	{ 403, "403" }, { 404, "404" }, { 405, "405" }, { 409, "409" }, { 412, "412" },
	{ 413, "413" }, { 415, "415" }, { 422, "422" }, { 500, "500" }, { 503, "503" },
};
#define NSTATUSES (sizeof statuses / sizeof statuses[0] + 1)

/* Duration buckets: the upper bound compared (nanoseconds, inclusive) and its le label. */
static const struct {
	uint64_t ns;
	const char *le;
} buckets[] = {
	{ 500000ULL, "0.0005" },   { 1000000ULL, "0.001" },   { 2500000ULL, "0.0025" },
	{ 5000000ULL, "0.005" },   { 10000000ULL, "0.01" },   { 25000000ULL, "0.025" },
	{ 50000000ULL, "0.05" },   { 100000000ULL, "0.1" },   { 250000000ULL, "0.25" },
	{ 500000000ULL, "0.5" },   { 1000000000ULL, "1" },    { 2500000000ULL, "2.5" },
	{ 5000000000ULL, "5" },    { 10000000000ULL, "10" },
};
/* Counters per histogram: the buckets plus one for observations above the last bound. */
#define NCELLS (sizeof buckets / sizeof buckets[0] + 1)

static const char *const append_results[] = {
	[FD_METRICS_APPEND_OK] = "ok",
	[FD_METRICS_APPEND_DUPLICATE] = "duplicate",
	[FD_METRICS_APPEND_CONFLICT] = "conflict",
	[FD_METRICS_APPEND_ERROR] = "error",
};
_Static_assert(sizeof append_results / sizeof append_results[0] == FD_METRICS_APPEND_COUNT,
	       "a label per append result");

static const char *const command_results[] = {
	[FD_METRICS_COMMAND_OK] = "ok",
	[FD_METRICS_COMMAND_REPLAYED] = "replayed",
	[FD_METRICS_COMMAND_INVALID] = "invalid",
	[FD_METRICS_COMMAND_REJECTED] = "rejected",
	[FD_METRICS_COMMAND_PRECONDITION] = "precondition",
	[FD_METRICS_COMMAND_CONFLICT] = "conflict",
	[FD_METRICS_COMMAND_IDEMPOTENCY] = "idempotency",
	[FD_METRICS_COMMAND_ERROR] = "error",
};
_Static_assert(sizeof command_results / sizeof command_results[0] == FD_METRICS_COMMAND_COUNT,
	       "a label per command result");

static const char unmatched_label[] = "unmatched";
static const char other_label[] = "other";

struct fd_metrics {
	const char *version;
	struct timespec started;          /* CLOCK_REALTIME at creation */

	size_t nroutes;
	size_t *route_slot;               /* route index -> template slot */
	const char **templates;           /* label of each slot; the last is "unmatched" */
	size_t nslots;
	_Atomic uint64_t *requests;       /* [slot][method][status] */
	_Atomic uint64_t *durations;      /* [slot][cell] */
	_Atomic uint64_t *duration_ns;    /* [slot] */

	const char **aggregates;          /* names; slot naggregates is "other" */
	size_t naggregates;
	_Atomic uint64_t *commands;       /* [aggregate slot][result] */
	_Atomic uint64_t *conflicts;      /* [aggregate slot] */

	_Atomic uint64_t appends[FD_METRICS_APPEND_COUNT];
	_Atomic uint64_t events;
	_Atomic uint64_t snapshots;
	_Atomic uint64_t batches;          /* group-committed append batches run */
	_Atomic uint64_t batched;          /* appends those batches carried */

	/* the retention job's rounds in this process */
	_Atomic uint64_t ret_runs, ret_errors, ret_removed, ret_archived, ret_files, ret_sagas;
	_Atomic int64_t ret_last_run;      /* unix seconds; 0: never */
};

static void add(_Atomic uint64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t get(const _Atomic uint64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

/* A zeroed counter array of n cells, or NULL. */
static _Atomic uint64_t *counters_new(size_t n)
{
	_Atomic uint64_t *c = malloc(n * sizeof *c);
	for (size_t i = 0; c && i < n; i++)
		atomic_init(&c[i], 0);
	return c;
}

static bool strings_valid(const char *const *s, size_t n)
{
	if (n && !s)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!s[i])
			return false;
	return true;
}

void fd_metrics_free(struct fd_metrics *m)
{
	if (!m)
		return;
	free(m->route_slot);
	free(m->templates);
	free(m->requests);
	free(m->durations);
	free(m->duration_ns);
	free(m->aggregates);
	free(m->commands);
	free(m->conflicts);
	free(m);
}

enum fd_err fd_metrics_new(const struct fd_metrics_config *cfg, struct fd_metrics **out)
{
	struct fd_metrics *m = NULL;
	enum fd_err err = FD_OK;

	*out = NULL;
	if (!cfg || !cfg->version || !strings_valid(cfg->routes, cfg->nroutes) ||
	    !strings_valid(cfg->aggregates, cfg->naggregates))
		return FD_ERR_INVAL;
	if (!(m = calloc(1, sizeof *m))) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	m->version = cfg->version;
	clock_gettime(CLOCK_REALTIME, &m->started);
	m->nroutes = cfg->nroutes;
	m->naggregates = cfg->naggregates;
	m->route_slot = malloc((cfg->nroutes ? cfg->nroutes : 1) * sizeof *m->route_slot);
	m->templates = malloc((cfg->nroutes + 1) * sizeof *m->templates);
	m->aggregates = malloc((cfg->naggregates + 1) * sizeof *m->aggregates);
	if (!m->route_slot || !m->templates || !m->aggregates) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	/* One slot per distinct template, in the order they first appear. */
	for (size_t i = 0; i < cfg->nroutes; i++) {
		size_t s = 0;
		while (s < m->nslots && strcmp(m->templates[s], cfg->routes[i]) != 0)
			s++;
		if (s == m->nslots)
			m->templates[m->nslots++] = cfg->routes[i];
		m->route_slot[i] = s;
	}
	m->templates[m->nslots++] = unmatched_label;
	for (size_t i = 0; i < cfg->naggregates; i++)
		m->aggregates[i] = cfg->aggregates[i];
	m->aggregates[cfg->naggregates] = other_label;

	m->requests = counters_new(m->nslots * NMETHODS * NSTATUSES);
	m->durations = counters_new(m->nslots * NCELLS);
	m->duration_ns = counters_new(m->nslots);
	m->commands = counters_new((m->naggregates + 1) * FD_METRICS_COMMAND_COUNT);
	m->conflicts = counters_new(m->naggregates + 1);
	if (!m->requests || !m->durations || !m->duration_ns || !m->commands || !m->conflicts) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	for (size_t i = 0; i < FD_METRICS_APPEND_COUNT; i++)
		atomic_init(&m->appends[i], 0);
	atomic_init(&m->events, 0);
	atomic_init(&m->snapshots, 0);
	atomic_init(&m->batches, 0);
	atomic_init(&m->batched, 0);
	*out = m;
	m = NULL;
done:
	fd_metrics_free(m);
	return err;
}

/* ---- recording ---------------------------------------------------------- */

static size_t method_index(const char *method)
{
	for (size_t i = 0; method && i < NMETHODS - 1; i++)
		if (strcmp(method, methods[i]) == 0)
			return i;
	return NMETHODS - 1;
}

static size_t status_index(unsigned status)
{
	for (size_t i = 0; i < NSTATUSES - 1; i++)
		if (statuses[i].code == status)
			return i;
	return NSTATUSES - 1;
}

static size_t cell_index(uint64_t ns)
{
	size_t i = 0;
	while (i < NCELLS - 1 && ns > buckets[i].ns)
		i++;
	return i;
}

static size_t aggregate_index(const struct fd_metrics *m, const char *aggregate)
{
	for (size_t i = 0; aggregate && i < m->naggregates; i++)
		if (strcmp(aggregate, m->aggregates[i]) == 0)
			return i;
	return m->naggregates;
}

void fd_metrics_http_request(struct fd_metrics *m, size_t route, const char *method, unsigned status,
			     uint64_t duration_ns)
{
	if (!m)
		return;
	size_t slot = route < m->nroutes ? m->route_slot[route] : m->nslots - 1;
	add(&m->requests[(slot * NMETHODS + method_index(method)) * NSTATUSES + status_index(status)], 1);
	add(&m->durations[slot * NCELLS + cell_index(duration_ns)], 1);
	add(&m->duration_ns[slot], duration_ns);
}

void fd_metrics_append(struct fd_metrics *m, enum fd_metrics_append result, size_t events_written)
{
	if (!m || (unsigned)result >= FD_METRICS_APPEND_COUNT)
		return;
	add(&m->appends[result], 1);
	if (events_written)
		add(&m->events, events_written);
}

void fd_metrics_command(struct fd_metrics *m, const char *aggregate, enum fd_metrics_command result)
{
	if (!m || (unsigned)result >= FD_METRICS_COMMAND_COUNT)
		return;
	add(&m->commands[aggregate_index(m, aggregate) * FD_METRICS_COMMAND_COUNT + result], 1);
}

void fd_metrics_command_conflict(struct fd_metrics *m, const char *aggregate)
{
	if (!m)
		return;
	add(&m->conflicts[aggregate_index(m, aggregate)], 1);
}

void fd_metrics_snapshot_written(struct fd_metrics *m)
{
	if (m)
		add(&m->snapshots, 1);
}

void fd_metrics_retention_round(struct fd_metrics *m, const struct fd_metrics_retention *r, int64_t at)
{
	if (!m || !r)
		return;
	add(&m->ret_removed, r->events_removed);
	add(&m->ret_archived, r->events_archived);
	add(&m->ret_files, r->archive_files);
	add(&m->ret_sagas, r->sagas_removed);
	if (r->failed)
		add(&m->ret_errors, 1);
	add(&m->ret_runs, 1);
	atomic_store_explicit(&m->ret_last_run, at, memory_order_relaxed);
}

void fd_metrics_append_batch(struct fd_metrics *m, size_t appends)
{
	if (m) {
		add(&m->batches, 1);
		add(&m->batched, appends);
	}
}

/* ---- exposition --------------------------------------------------------- */

static enum fd_err family(struct fd_buf *b, const char *name, const char *type, const char *help)
{
	return fd_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value with backslash, double quote and line feed escaped. */
static enum fd_err label_value(struct fd_buf *b, const char *s)
{
	enum fd_err err = FD_OK;
	while (!err && *s) {
		size_t run = strcspn(s, "\\\"\n");
		if (run)
			err = fd_buf_append(b, s, run);
		s += run;
		if (!err && *s) {
			const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : "\\n";
			err = fd_buf_append(b, esc, 2);
			s++;
		}
	}
	return err;
}

/* `name{key="value"` (the caller closes the brace or adds labels). */
static enum fd_err series_start(struct fd_buf *b, const char *name, const char *key, const char *value)
{
	enum fd_err err = fd_buf_appendf(b, "%s{%s=\"", name, key);
	if (!err)
		err = label_value(b, value);
	return err ? err : fd_buf_append(b, "\"", 1);
}

static enum fd_err label(struct fd_buf *b, const char *key, const char *value)
{
	enum fd_err err = fd_buf_appendf(b, ",%s=\"", key);
	if (!err)
		err = label_value(b, value);
	return err ? err : fd_buf_append(b, "\"", 1);
}

/* `name{key="value"} n` on a line of its own. */
static enum fd_err labelled(struct fd_buf *b, const char *name, const char *key, const char *value, uint64_t n)
{
	enum fd_err err = series_start(b, name, key, value);
	return err ? err : fd_buf_appendf(b, "} %" PRIu64 "\n", n);
}

static enum fd_err render_requests(const struct fd_metrics *m, struct fd_buf *b)
{
	static const char name[] = "factd_http_requests_total";
	enum fd_err err = family(b, name, "counter",
				 "HTTP requests answered, by route template, method and status code.");
	for (size_t s = 0; !err && s < m->nslots; s++)
		for (size_t me = 0; !err && me < NMETHODS; me++)
			for (size_t st = 0; !err && st < NSTATUSES; st++) {
				uint64_t n = get(&m->requests[(s * NMETHODS + me) * NSTATUSES + st]);
				if (!n)
					continue;
				err = series_start(b, name, "route", m->templates[s]);
				if (!err)
					err = label(b, "method", methods[me]);
				if (!err)
					err = label(b, "status", st < NSTATUSES - 1 ? statuses[st].label : other_label);
				if (!err)
					err = fd_buf_appendf(b, "} %" PRIu64 "\n", n);
			}
	return err;
}

static enum fd_err render_durations(const struct fd_metrics *m, struct fd_buf *b)
{
	static const char name[] = "factd_http_request_duration_seconds";
	enum fd_err err = family(b, name, "histogram",
				 "Time from a request's arrival to its response, by route template.");
	for (size_t s = 0; !err && s < m->nslots; s++) {
		uint64_t cells[NCELLS], count = 0;
		for (size_t c = 0; c < NCELLS; c++)
			count += cells[c] = get(&m->durations[s * NCELLS + c]);
		if (!count)
			continue;
		uint64_t cumulative = 0;
		for (size_t c = 0; !err && c < NCELLS; c++) {
			cumulative += cells[c];
			err = series_start(b, "factd_http_request_duration_seconds_bucket", "route", m->templates[s]);
			if (!err)
				err = label(b, "le", c < NCELLS - 1 ? buckets[c].le : "+Inf");
			if (!err)
				err = fd_buf_appendf(b, "} %" PRIu64 "\n", cumulative);
		}
		uint64_t ns = get(&m->duration_ns[s]);
		if (!err)
			err = series_start(b, "factd_http_request_duration_seconds_sum", "route", m->templates[s]);
		if (!err)
			err = fd_buf_appendf(b, "} %" PRIu64 ".%09" PRIu64 "\n", ns / 1000000000u, ns % 1000000000u);
		if (!err)
			err = labelled(b, "factd_http_request_duration_seconds_count", "route", m->templates[s], count);
	}
	return err;
}

static enum fd_err render_store(const struct fd_metrics *m, struct fd_buf *b)
{
	enum fd_err err = family(b, "factd_appends_total", "counter", "Appends to the event store, by result.");
	for (size_t r = 0; !err && r < FD_METRICS_APPEND_COUNT; r++)
		err = labelled(b, "factd_appends_total", "result", append_results[r], get(&m->appends[r]));
	if (!err)
		err = family(b, "factd_events_appended_total", "counter", "Events written to the event store.");
	if (!err)
		err = fd_buf_appendf(b, "factd_events_appended_total %" PRIu64 "\n", get(&m->events));
	if (!err)
		err = family(b, "factd_snapshots_written_total", "counter", "Aggregate snapshots written.");
	if (!err)
		err = fd_buf_appendf(b, "factd_snapshots_written_total %" PRIu64 "\n", get(&m->snapshots));
	if (!err)
		err = family(b, "factd_append_batches_total", "counter",
			     "Transactions that carried the appends of concurrent requests together (group commit).");
	if (!err)
		err = fd_buf_appendf(b, "factd_append_batches_total %" PRIu64 "\n", get(&m->batches));
	if (!err)
		err = family(b, "factd_append_batched_total", "counter", "Appends sent in those transactions.");
	if (!err)
		err = fd_buf_appendf(b, "factd_append_batched_total %" PRIu64 "\n", get(&m->batched));
	return err;
}

static enum fd_err render_retention(const struct fd_metrics *m, struct fd_buf *b)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} counters[] = {
		{ "factd_retention_runs_total", "Rounds of the retention job this process ran (the one holding its lock).",
		  offsetof(struct fd_metrics, ret_runs) },
		{ "factd_retention_errors_total", "Rounds of the retention job that stopped on an error.",
		  offsetof(struct fd_metrics, ret_errors) },
		{ "factd_retention_events_removed_total", "Events removed by retention policies.",
		  offsetof(struct fd_metrics, ret_removed) },
		{ "factd_retention_events_archived_total", "Events written to retention archives before their removal.",
		  offsetof(struct fd_metrics, ret_archived) },
		{ "factd_retention_archive_files_total", "Retention archive files written.",
		  offsetof(struct fd_metrics, ret_files) },
		{ "factd_retention_sagas_removed_total", "Ended sagas removed by the retention job.",
		  offsetof(struct fd_metrics, ret_sagas) },
	};
	enum fd_err err = FD_OK;
	for (size_t i = 0; !err && i < sizeof counters / sizeof counters[0]; i++) {
		const _Atomic uint64_t *c = (const _Atomic uint64_t *)((const char *)m + counters[i].off);
		err = family(b, counters[i].name, "counter", counters[i].help);
		if (!err)
			err = fd_buf_appendf(b, "%s %" PRIu64 "\n", counters[i].name, get(c));
	}
	if (!err)
		err = family(b, "factd_retention_last_run_timestamp_seconds", "gauge",
			     "When this process last ended a round of the retention job (unix time; 0: never).");
	if (!err)
		err = fd_buf_appendf(b, "factd_retention_last_run_timestamp_seconds %" PRId64 "\n",
				     (int64_t)atomic_load_explicit(&m->ret_last_run, memory_order_relaxed));
	return err;
}

static enum fd_err render_commands(const struct fd_metrics *m, struct fd_buf *b)
{
	enum fd_err err = family(b, "factd_commands_total", "counter",
				 "Commands handled by the command bus, by aggregate type and result.");
	for (size_t a = 0; !err && a <= m->naggregates; a++) {
		const _Atomic uint64_t *row = &m->commands[a * FD_METRICS_COMMAND_COUNT];
		uint64_t any = 0;
		for (size_t r = 0; r < FD_METRICS_COMMAND_COUNT; r++)
			any |= get(&row[r]);
		if (a == m->naggregates && !any)
			continue;
		for (size_t r = 0; !err && r < FD_METRICS_COMMAND_COUNT; r++) {
			err = series_start(b, "factd_commands_total", "aggregate", m->aggregates[a]);
			if (!err)
				err = label(b, "result", command_results[r]);
			if (!err)
				err = fd_buf_appendf(b, "} %" PRIu64 "\n", get(&row[r]));
		}
	}
	if (!err)
		err = family(b, "factd_command_conflicts_total", "counter",
			     "Version conflicts the command bus met when appending, by aggregate type.");
	for (size_t a = 0; !err && a <= m->naggregates; a++) {
		uint64_t n = get(&m->conflicts[a]);
		if (a < m->naggregates || n)
			err = labelled(b, "factd_command_conflicts_total", "aggregate", m->aggregates[a], n);
	}
	return err;
}

static enum fd_err render_pool(const struct fd_metrics_pool *p, struct fd_buf *b)
{
	enum fd_err err = family(b, "factd_db_pool_connections", "gauge",
				 "PostgreSQL pool connections handed out (in_use), established (open) and configured (size).");
	if (!err)
		err = labelled(b, "factd_db_pool_connections", "state", "in_use", p->in_use);
	if (!err)
		err = labelled(b, "factd_db_pool_connections", "state", "open", p->open);
	if (!err)
		err = labelled(b, "factd_db_pool_connections", "state", "size", p->size);
	if (!err)
		err = family(b, "factd_db_pool_waiting", "gauge", "Threads waiting for a free PostgreSQL pool connection.");
	if (!err)
		err = fd_buf_appendf(b, "factd_db_pool_waiting %u\n", p->waiting);
	if (!err)
		err = family(b, "factd_append_queue", "gauge", "Appends waiting to join a group-committed batch.");
	if (!err)
		err = fd_buf_appendf(b, "factd_append_queue %u\n", p->append_queue);
	return err;
}

static enum fd_err render_process(const struct fd_metrics *m, struct fd_buf *b)
{
	enum fd_err err = family(b, "factd_process_start_time_seconds", "gauge",
				 "Start time of the process since the Unix epoch in seconds.");
	if (!err)
		err = fd_buf_appendf(b, "factd_process_start_time_seconds %lld.%06ld\n", (long long)m->started.tv_sec,
				     m->started.tv_nsec / 1000);
	if (!err)
		err = family(b, "factd_build_info", "gauge", "The running factd's version, as a label; always 1.");
	if (!err)
		err = series_start(b, "factd_build_info", "version", m->version);
	return err ? err : fd_buf_append(b, "} 1\n", 4);
}

enum fd_err fd_metrics_render(const struct fd_metrics *m, const struct fd_metrics_pool *pool, struct fd_buf *out)
{
	enum fd_err err = render_requests(m, out);
	if (!err)
		err = render_durations(m, out);
	if (!err)
		err = render_store(m, out);
	if (!err)
		err = render_commands(m, out);
	if (!err)
		err = render_retention(m, out);
	if (!err && pool)
		err = render_pool(pool, out);
	if (!err)
		err = render_process(m, out);
	return err;
}
