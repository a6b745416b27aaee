/*
 * test_metrics.c - the metrics registry without a database: counting into
 * fixed label slots, the exact exposition text, its format line by line
 * (HELP and TYPE per family, sample syntax, histogram buckets cumulative
 * with +Inf equal to _count), label escaping, NULL registries and
 * concurrent recording.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "factd/metrics.h"

/* ---- helpers ------------------------------------------------------------------ */

static char *render(const struct fd_metrics *m, const struct fd_metrics_pool *pool)
{
	struct fd_buf b = FD_BUF_INIT;
	cr_assert_eq(fd_metrics_render(m, pool, &b), FD_OK);
	return fd_buf_detach(&b);
}

static struct fd_metrics *new_registry(const char *version, const char *const *routes, size_t nroutes,
				       const char *const *aggregates, size_t naggregates)
{
	struct fd_metrics_config cfg = { .version = version, .routes = routes, .nroutes = nroutes,
					 .aggregates = aggregates, .naggregates = naggregates };
	struct fd_metrics *m = NULL;
	cr_assert_eq(fd_metrics_new(&cfg, &m), FD_OK);
	cr_assert_not_null(m);
	return m;
}

#define MAX_LABELS 4

/* One parsed sample line: name, labels (values unescaped) and the value text. */
struct sample {
	char name[128];
	size_t nlabels;
	char keys[MAX_LABELS][32];
	char values[MAX_LABELS][256];
	char value[64];
};

static bool name_char(char c, bool first, bool colon)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':') ||
	       (!first && c >= '0' && c <= '9');
}

/* Copy a metric or label name from *p; false if there is none or it is too long. */
static bool take_name(const char **p, char *out, size_t len, bool colon)
{
	size_t n = 0;
	while (name_char((*p)[n], n == 0, colon))
		n++;
	if (n == 0 || n >= len)
		return false;
	memcpy(out, *p, n);
	out[n] = '\0';
	*p += n;
	return true;
}

/* Parse a sample line strictly (the 0.0.4 text format, no timestamps). */
static bool parse_sample(const char *line, struct sample *s)
{
	const char *p = line;
	memset(s, 0, sizeof *s);
	if (!take_name(&p, s->name, sizeof s->name, true))
		return false;
	if (*p == '{') {
		p++;
		for (;;) {
			if (s->nlabels == MAX_LABELS)
				return false;
			char *key = s->keys[s->nlabels], *val = s->values[s->nlabels];
			if (!take_name(&p, key, sizeof s->keys[0], false) || *p++ != '=' || *p++ != '"')
				return false;
			size_t n = 0;
			while (*p != '"') {
				char c = *p++;
				if (c == '\0' || c == '\n')
					return false;
				if (c == '\\') {
					char e = *p++;
					if (e == 'n')
						c = '\n';
					else if (e == '\\' || e == '"')
						c = e;
					else
						return false;
				}
				if (n + 1 >= sizeof s->values[0])
					return false;
				val[n++] = c;
			}
			val[n] = '\0';
			p++;
			s->nlabels++;
			if (*p == ',') {
				p++;
				continue;
			}
			if (*p++ != '}')
				return false;
			break;
		}
	}
	if (*p++ != ' ')
		return false;
	size_t vlen = strlen(p);
	if (vlen == 0 || vlen >= sizeof s->value || strchr(p, ' '))
		return false;
	memcpy(s->value, p, vlen + 1);
	if (strcmp(p, "+Inf") != 0 && strcmp(p, "-Inf") != 0 && strcmp(p, "NaN") != 0) {
		char *end;
		(void)strtod(p, &end);
		if (*end)
			return false;
	}
	return true;
}

static const char *label_of(const struct sample *s, const char *key)
{
	for (size_t i = 0; i < s->nlabels; i++)
		if (strcmp(s->keys[i], key) == 0)
			return s->values[i];
	return NULL;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Labels other than le, as one comparable string. */
static void series_key(const struct sample *s, char *out, size_t len)
{
	out[0] = '\0';
	for (size_t i = 0; i < s->nlabels; i++) {
		if (strcmp(s->keys[i], "le") == 0)
			continue;
		size_t used = strlen(out);
		snprintf(out + used, len - used, "%s=%s;", s->keys[i], s->values[i]);
	}
}

static double le_value(const char *le)
{
	if (strcmp(le, "+Inf") == 0)
		return 1e300;
	char *end;
	double v = strtod(le, &end);
	cr_assert_eq(*end, '\0', "le=\"%s\" is not a number", le);
	return v;
}

static unsigned long long count_value(const struct sample *s)
{
	char *end;
	unsigned long long v = strtoull(s->value, &end, 10);
	cr_assert(*end == '\0' && s->value[0] >= '0' && s->value[0] <= '9', "%s: %s is not a count", s->name,
		  s->value);
	return v;
}

/* State of the histogram series being read. */
struct hist_state {
	bool open;
	char key[512];
	double last_le;
	unsigned long long last_count, inf_count;
	bool saw_inf, saw_sum;
};

static void hist_close(struct hist_state *h, const char *family)
{
	if (h->open)
		cr_assert(h->saw_inf && h->saw_sum, "%s{%s}: buckets without +Inf or _sum", family, h->key);
	memset(h, 0, sizeof *h);
}

/*
 * Check the whole exposition text line by line: every line ends in "\n";
 * each family starts with "# HELP name text" and "# TYPE name type" (once per
 * name); samples belong to the family above them with the suffixes its type
 * allows; counters end in _total and count in whole numbers; histogram series
 * have strictly increasing le ending in +Inf, cumulative non-decreasing
 * buckets, then _sum and a _count equal to the +Inf bucket.  Returns the
 * number of sample lines.
 */
static size_t check_format(const char *text)
{
	char family[128] = "", type[16] = "", seen[64][128];
	size_t nseen = 0, samples = 0;
	struct hist_state h = { 0 };
	cr_assert(text[0] != '\0', "empty exposition");
	cr_assert_eq(text[strlen(text) - 1], '\n', "the text must end with a line feed");
	for (const char *p = text; *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = (size_t)(nl - p);
		char line[1024];
		cr_assert_lt(n, sizeof line);
		memcpy(line, p, n);
		line[n] = '\0';
		p = nl + 1;
		cr_assert_neq(n, 0, "empty line in the exposition");
		if (strncmp(line, "# HELP ", 7) == 0) {
			hist_close(&h, family);
			const char *q = line + 7;
			cr_assert(take_name(&q, family, sizeof family, true), "bad HELP line: %s", line);
			cr_assert(q[0] == ' ' && q[1] != '\0', "HELP without text: %s", line);
			cr_assert_null(strchr(q, '\\'), "unescaped help text: %s", line);
			for (size_t i = 0; i < nseen; i++)
				cr_assert_str_neq(seen[i], family, "family %s appears twice", family);
			cr_assert_lt(nseen, 64);
			snprintf(seen[nseen++], sizeof seen[0], "%s", family);
			/* The TYPE line follows at once. */
			nl = strchr(p, '\n');
			cr_assert_not_null(nl);
			char want[256];
			int w = snprintf(want, sizeof want, "# TYPE %s ", family);
			cr_assert(strncmp(p, want, (size_t)w) == 0, "HELP %s not followed by its TYPE", family);
			size_t tlen = (size_t)(nl - p) - (size_t)w;
			cr_assert_lt(tlen, sizeof type);
			memcpy(type, p + w, tlen);
			type[tlen] = '\0';
			cr_assert(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
					  strcmp(type, "histogram") == 0,
				  "%s: type %s", family, type);
			if (strcmp(type, "counter") == 0)
				cr_assert(ends_with(family, "_total"), "counter %s does not end in _total", family);
			if (strcmp(type, "histogram") == 0)
				cr_assert(ends_with(family, "_seconds"), "histogram %s is not in seconds", family);
			p = nl + 1;
			continue;
		}
		cr_assert_neq(line[0], '#', "unexpected comment: %s", line);
		cr_assert_neq(family[0], '\0', "sample before any HELP: %s", line);
		struct sample s;
		cr_assert(parse_sample(line, &s), "malformed sample line: %s", line);
		samples++;
		if (strcmp(type, "histogram") != 0) {
			cr_assert_str_eq(s.name, family, "sample %s under family %s", s.name, family);
			if (strcmp(type, "counter") == 0)
				(void)count_value(&s);
			continue;
		}
		char key[512];
		series_key(&s, key, sizeof key);
		char bucket[160], sum[160], count[160];
		snprintf(bucket, sizeof bucket, "%s_bucket", family);
		snprintf(sum, sizeof sum, "%s_sum", family);
		snprintf(count, sizeof count, "%s_count", family);
		if (strcmp(s.name, bucket) == 0) {
			const char *le = label_of(&s, "le");
			cr_assert_not_null(le, "bucket without le: %s", line);
			cr_assert_str_eq(s.keys[s.nlabels - 1], "le", "le is not the last label: %s", line);
			if (h.open && strcmp(h.key, key) != 0)
				hist_close(&h, family);
			if (!h.open) {
				h.open = true;
				snprintf(h.key, sizeof h.key, "%s", key);
				h.last_le = -1;
			}
			cr_assert_not(h.saw_inf, "a bucket after +Inf: %s", line);
			double v = le_value(le);
			unsigned long long c = count_value(&s);
			cr_assert_gt(v, h.last_le, "le not increasing: %s", line);
			cr_assert_geq(c, h.last_count, "buckets not cumulative: %s", line);
			h.last_le = v;
			h.last_count = c;
			if (strcmp(le, "+Inf") == 0) {
				h.saw_inf = true;
				h.inf_count = c;
			}
		} else if (strcmp(s.name, sum) == 0) {
			cr_assert(h.open && h.saw_inf && strcmp(h.key, key) == 0, "_sum without its buckets: %s", line);
			cr_assert_null(label_of(&s, "le"));
			char *end;
			cr_assert_geq(strtod(s.value, &end), 0.0);
			h.saw_sum = true;
		} else if (strcmp(s.name, count) == 0) {
			cr_assert(h.open && h.saw_sum && strcmp(h.key, key) == 0, "_count before _sum: %s", line);
			cr_assert_eq(count_value(&s), h.inf_count, "+Inf bucket %llu but _count %s", h.inf_count, s.value);
			memset(&h, 0, sizeof h);
		} else {
			cr_assert_fail("sample %s under histogram %s", s.name, family);
		}
	}
	cr_assert_not(h.open, "histogram %s{%s} left without _count", family, h.key);
	return samples;
}

/* The value of the sample whose line starts with `series` (name and labels exactly); -1 when absent. */
static long long value_of(const char *text, const char *series)
{
	size_t n = strlen(series);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, series, n) == 0 && p[n] == ' ')
			return strtoll(p + n + 1, NULL, 10);
	return -1;
}

static const char *line_starting(const char *text, const char *prefix, char *out, size_t len)
{
	size_t n = strlen(prefix);
	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (strncmp(p, prefix, n) == 0) {
			size_t l = strcspn(p, "\n");
			cr_assert_lt(l, len);
			memcpy(out, p, l);
			out[l] = '\0';
			return out;
		}
	return NULL;
}

/* ---- the exact text ----------------------------------------------------------- */

static const char expected_text[] =
	"# HELP factd_http_requests_total HTTP requests answered, by route template, method and status code.\n"
	"# TYPE factd_http_requests_total counter\n"
	"factd_http_requests_total{route=\"/a\",method=\"GET\",status=\"200\"} 1\n"
	"factd_http_requests_total{route=\"/a\",method=\"POST\",status=\"201\"} 1\n"
	"factd_http_requests_total{route=\"/b/{id}\",method=\"GET\",status=\"404\"} 1\n"
	"factd_http_requests_total{route=\"unmatched\",method=\"other\",status=\"other\"} 1\n"
	"# HELP factd_http_request_duration_seconds Time from a request's arrival to its response, by route template.\n"
	"# TYPE factd_http_request_duration_seconds histogram\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.0005\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.001\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.0025\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.005\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.01\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.025\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.05\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.1\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.25\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.5\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"1\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"2.5\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"5\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"10\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/a\",le=\"+Inf\"} 2\n"
	"factd_http_request_duration_seconds_sum{route=\"/a\"} 0.000900000\n"
	"factd_http_request_duration_seconds_count{route=\"/a\"} 2\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"0.0005\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"0.001\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"0.0025\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"0.005\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"0.01\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"0.025\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"0.05\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"0.1\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"0.25\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"0.5\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"1\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"2.5\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"5\"} 1\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"10\"} 1\n"
	"factd_http_request_duration_seconds_bucket{route=\"/b/{id}\",le=\"+Inf\"} 1\n"
	"factd_http_request_duration_seconds_sum{route=\"/b/{id}\"} 3.000000001\n"
	"factd_http_request_duration_seconds_count{route=\"/b/{id}\"} 1\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"0.0005\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"0.001\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"0.0025\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"0.005\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"0.01\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"0.025\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"0.05\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"0.1\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"0.25\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"0.5\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"1\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"2.5\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"5\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"10\"} 0\n"
	"factd_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"+Inf\"} 1\n"
	"factd_http_request_duration_seconds_sum{route=\"unmatched\"} 20.000000000\n"
	"factd_http_request_duration_seconds_count{route=\"unmatched\"} 1\n"
	"# HELP factd_appends_total Appends to the event store, by result.\n"
	"# TYPE factd_appends_total counter\n"
	"factd_appends_total{result=\"ok\"} 2\n"
	"factd_appends_total{result=\"duplicate\"} 1\n"
	"factd_appends_total{result=\"conflict\"} 1\n"
	"factd_appends_total{result=\"error\"} 0\n"
	"# HELP factd_events_appended_total Events written to the event store.\n"
	"# TYPE factd_events_appended_total counter\n"
	"factd_events_appended_total 4\n"
	"# HELP factd_snapshots_written_total Aggregate snapshots written.\n"
	"# TYPE factd_snapshots_written_total counter\n"
	"factd_snapshots_written_total 1\n"
	"# HELP factd_append_batches_total Transactions that carried the appends of concurrent requests together (group "
	"commit).\n"
	"# TYPE factd_append_batches_total counter\n"
	"factd_append_batches_total 2\n"
	"# HELP factd_append_batched_total Appends sent in those transactions.\n"
	"# TYPE factd_append_batched_total counter\n"
	"factd_append_batched_total 7\n"
	"# HELP factd_commands_total Commands handled by the command bus, by aggregate type and result.\n"
	"# TYPE factd_commands_total counter\n"
	"factd_commands_total{aggregate=\"order\",result=\"ok\"} 1\n"
	"factd_commands_total{aggregate=\"order\",result=\"replayed\"} 0\n"
	"factd_commands_total{aggregate=\"order\",result=\"invalid\"} 0\n"
	"factd_commands_total{aggregate=\"order\",result=\"rejected\"} 1\n"
	"factd_commands_total{aggregate=\"order\",result=\"precondition\"} 0\n"
	"factd_commands_total{aggregate=\"order\",result=\"conflict\"} 0\n"
	"factd_commands_total{aggregate=\"order\",result=\"idempotency\"} 0\n"
	"factd_commands_total{aggregate=\"order\",result=\"error\"} 0\n"
	"factd_commands_total{aggregate=\"other\",result=\"ok\"} 1\n"
	"factd_commands_total{aggregate=\"other\",result=\"replayed\"} 0\n"
	"factd_commands_total{aggregate=\"other\",result=\"invalid\"} 0\n"
	"factd_commands_total{aggregate=\"other\",result=\"rejected\"} 0\n"
	"factd_commands_total{aggregate=\"other\",result=\"precondition\"} 0\n"
	"factd_commands_total{aggregate=\"other\",result=\"conflict\"} 0\n"
	"factd_commands_total{aggregate=\"other\",result=\"idempotency\"} 0\n"
	"factd_commands_total{aggregate=\"other\",result=\"error\"} 0\n"
	"# HELP factd_command_conflicts_total Version conflicts the command bus met when appending, by aggregate "
	"type.\n"
	"# TYPE factd_command_conflicts_total counter\n"
	"factd_command_conflicts_total{aggregate=\"order\"} 2\n"
	"# HELP factd_retention_runs_total Rounds of the retention job this process ran (the one holding its lock).\n"
	"# TYPE factd_retention_runs_total counter\n"
	"factd_retention_runs_total 2\n"
	"# HELP factd_retention_errors_total Rounds of the retention job that stopped on an error.\n"
	"# TYPE factd_retention_errors_total counter\n"
	"factd_retention_errors_total 1\n"
	"# HELP factd_retention_events_removed_total Events removed by retention policies.\n"
	"# TYPE factd_retention_events_removed_total counter\n"
	"factd_retention_events_removed_total 7\n"
	"# HELP factd_retention_events_archived_total Events written to retention archives before their removal.\n"
	"# TYPE factd_retention_events_archived_total counter\n"
	"factd_retention_events_archived_total 6\n"
	"# HELP factd_retention_archive_files_total Retention archive files written.\n"
	"# TYPE factd_retention_archive_files_total counter\n"
	"factd_retention_archive_files_total 2\n"
	"# HELP factd_retention_sagas_removed_total Ended sagas removed by the retention job.\n"
	"# TYPE factd_retention_sagas_removed_total counter\n"
	"factd_retention_sagas_removed_total 1\n"
	"# HELP factd_retention_last_run_timestamp_seconds When this process last ended a round of the retention "
	"job (unix time; 0: never).\n"
	"# TYPE factd_retention_last_run_timestamp_seconds gauge\n"
	"factd_retention_last_run_timestamp_seconds 1700000100\n"
	"# HELP factd_db_pool_connections PostgreSQL pool connections handed out (in_use), established (open) and "
	"configured (size).\n"
	"# TYPE factd_db_pool_connections gauge\n"
	"factd_db_pool_connections{state=\"in_use\"} 1\n"
	"factd_db_pool_connections{state=\"open\"} 2\n"
	"factd_db_pool_connections{state=\"size\"} 4\n"
	"# HELP factd_db_pool_waiting Threads waiting for a free PostgreSQL pool connection.\n"
	"# TYPE factd_db_pool_waiting gauge\n"
	"factd_db_pool_waiting 3\n"
	"# HELP factd_append_queue Appends waiting to join a group-committed batch.\n"
	"# TYPE factd_append_queue gauge\n"
	"factd_append_queue 5\n"
	"# HELP factd_process_start_time_seconds Start time of the process since the Unix epoch in seconds.\n"
	"# TYPE factd_process_start_time_seconds gauge\n"
	"factd_process_start_time_seconds @START@\n"
	"# HELP factd_build_info The running factd's version, as a label; always 1.\n"
	"# TYPE factd_build_info gauge\n"
	"factd_build_info{version=\"1.2.3\"} 1\n";

Test(metrics_text, exact_exposition)
{
	static const char *const routes[] = { "/a", "/b/{id}", "/a" }; /* "/a" twice: GET and POST */
	static const char *const aggregates[] = { "order" };
	time_t before = time(NULL);
	struct fd_metrics *m = new_registry("1.2.3", routes, 3, aggregates, 1);
	time_t after = time(NULL);

	fd_metrics_http_request(m, 0, "GET", 200, 400000);            /* 0.0004 s */
	fd_metrics_http_request(m, 2, "POST", 201, 500000);           /* exactly 0.0005 s: le is inclusive */
	fd_metrics_http_request(m, 1, "GET", 404, 3000000001ULL);     /* 3.000000001 s */
	fd_metrics_http_request(m, FD_METRICS_UNMATCHED, "BREW", 418, 20000000000ULL); /* past every bound */
	fd_metrics_append(m, FD_METRICS_APPEND_OK, 3);
	fd_metrics_append(m, FD_METRICS_APPEND_OK, 1);
	fd_metrics_append(m, FD_METRICS_APPEND_DUPLICATE, 0);
	fd_metrics_append(m, FD_METRICS_APPEND_CONFLICT, 0);
	fd_metrics_command(m, "order", FD_METRICS_COMMAND_OK);
	fd_metrics_command(m, "order", FD_METRICS_COMMAND_REJECTED);
	fd_metrics_command(m, "invoice", FD_METRICS_COMMAND_OK);    /* not configured: "other" */
	fd_metrics_command_conflict(m, "order");
	fd_metrics_command_conflict(m, "order");
	fd_metrics_snapshot_written(m);
	fd_metrics_append_batch(m, 3);
	fd_metrics_append_batch(m, 4);
	fd_metrics_retention_round(m, &(struct fd_metrics_retention){ .events_removed = 6, .events_archived = 6,
								       .archive_files = 2, .sagas_removed = 1 },
				   1700000000);
	fd_metrics_retention_round(m, &(struct fd_metrics_retention){ .events_removed = 1, .failed = true }, 1700000100);

	struct fd_metrics_pool pool = { .size = 4, .open = 2, .in_use = 1, .waiting = 3, .append_queue = 5 };
	char *text = render(m, &pool);

	/* Everything but the start time is fixed; the start time is checked on its own. */
	char start_line[128];
	cr_assert_not_null(line_starting(text, "factd_process_start_time_seconds ", start_line, sizeof start_line));
	const char *start = start_line + strlen("factd_process_start_time_seconds ");
	size_t digits = strspn(start, "0123456789");
	cr_assert(digits > 0 && start[digits] == '.' && strlen(start + digits + 1) == 6 &&
			  strspn(start + digits + 1, "0123456789") == 6,
		  "start time %s is not seconds.micros", start);
	long long secs = strtoll(start, NULL, 10);
	cr_assert(secs >= (long long)before && secs <= (long long)after, "start time %lld outside [%lld, %lld]", secs,
		  (long long)before, (long long)after);

	char *want = malloc(sizeof expected_text + 64);
	const char *at = strstr(expected_text, "@START@");
	int n = snprintf(want, sizeof expected_text + 64, "%.*s%s%s", (int)(at - expected_text), expected_text, start,
			 at + strlen("@START@"));
	cr_assert_gt(n, 0);
	cr_assert_str_eq(text, want);
	cr_assert_eq(check_format(text), 94);
	free(want);
	free(text);
	fd_metrics_free(m);
}

Test(metrics_text, fresh_registry_zeros_and_no_http_series)
{
	static const char *const routes[] = { "/x" };
	static const char *const aggregates[] = { "order", "product" };
	struct fd_metrics *m = new_registry("0.1.0", routes, 1, aggregates, 2);
	char *text = render(m, NULL);
	check_format(text);
	cr_assert_null(strstr(text, "factd_http_requests_total{"), "no request series before a request");
	cr_assert_null(strstr(text, "factd_http_request_duration_seconds_bucket"), "no histogram series yet");
	cr_assert(strstr(text, "# TYPE factd_http_requests_total counter\n"));
	cr_assert(strstr(text, "# TYPE factd_http_request_duration_seconds histogram\n"));
	static const char *const results[] = { "ok", "duplicate", "conflict", "error" };
	for (size_t i = 0; i < 4; i++) {
		char series[64];
		snprintf(series, sizeof series, "factd_appends_total{result=\"%s\"}", results[i]);
		cr_assert_eq(value_of(text, series), 0, "%s", series);
	}
	cr_assert_eq(value_of(text, "factd_events_appended_total"), 0);
	cr_assert_eq(value_of(text, "factd_snapshots_written_total"), 0);
	cr_assert_eq(value_of(text, "factd_commands_total{aggregate=\"product\",result=\"error\"}"), 0);
	cr_assert_eq(value_of(text, "factd_command_conflicts_total{aggregate=\"order\"}"), 0);
	cr_assert_eq(value_of(text, "factd_command_conflicts_total{aggregate=\"product\"}"), 0);
	cr_assert_null(strstr(text, "aggregate=\"other\""), "\"other\" shows only once used");
	cr_assert_null(strstr(text, "factd_db_pool"), "no pool gauges without a pool");
	cr_assert_eq(value_of(text, "factd_build_info{version=\"0.1.0\"}"), 1);
	cr_assert_eq(value_of(text, "factd_retention_runs_total"), 0);
	cr_assert_eq(value_of(text, "factd_retention_last_run_timestamp_seconds"), 0);
	free(text);
	fd_metrics_free(m);
}

Test(metrics_text, empty_label_sets_render)
{
	struct fd_metrics *m = new_registry("v", NULL, 0, NULL, 0);
	fd_metrics_http_request(m, 0, "GET", 200, 1);  /* no routes: every index is unmatched */
	fd_metrics_command(m, "order", FD_METRICS_COMMAND_OK);
	char *text = render(m, NULL);
	check_format(text);
	cr_assert_eq(value_of(text, "factd_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"200\"}"), 1);
	cr_assert_eq(value_of(text, "factd_commands_total{aggregate=\"other\",result=\"ok\"}"), 1);
	free(text);
	fd_metrics_free(m);
}

/* ---- counting ----------------------------------------------------------------- */

Test(metrics_count, methods_statuses_and_routes_are_bounded)
{
	static const char *const routes[] = { "/s/{id}", "/s/{id}", "/t" };
	struct fd_metrics *m = new_registry("v", routes, 3, NULL, 0);
	static const unsigned known[] = { 200, 201, 202, 400, 401, 403, 404, 405, 409, 412, 413, 415, 422, 500, 503 };
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
		fd_metrics_http_request(m, 2, "GET", known[i], 1000);
	fd_metrics_http_request(m, 2, "GET", 302, 1000);
	fd_metrics_http_request(m, 2, "GET", 0, 1000);
	fd_metrics_http_request(m, 2, "GET", 999, 1000);
	static const char *const methods[] = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" };
	for (size_t i = 0; i < 7; i++)
		fd_metrics_http_request(m, 0, methods[i], 200, 1000);
	fd_metrics_http_request(m, 1, "get", 200, 1000);       /* methods are case-sensitive */
	fd_metrics_http_request(m, 1, "PROPFIND", 200, 1000);
	fd_metrics_http_request(m, 1, NULL, 200, 1000);
	fd_metrics_http_request(m, 3, "GET", 200, 1000);       /* past the table: unmatched */
	fd_metrics_http_request(m, FD_METRICS_UNMATCHED, "GET", 404, 1000);

	char *text = render(m, NULL);
	check_format(text);
	char series[160];
	for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
		snprintf(series, sizeof series, "factd_http_requests_total{route=\"/t\",method=\"GET\",status=\"%u\"}",
			 known[i]);
		cr_assert_eq(value_of(text, series), 1, "%s", series);
	}
	cr_assert_eq(value_of(text, "factd_http_requests_total{route=\"/t\",method=\"GET\",status=\"other\"}"), 3);
	for (size_t i = 0; i < 7; i++) {
		snprintf(series, sizeof series,
			 "factd_http_requests_total{route=\"/s/{id}\",method=\"%s\",status=\"200\"}", methods[i]);
		cr_assert_eq(value_of(text, series), 1, "%s", series);
	}
	cr_assert_eq(value_of(text, "factd_http_requests_total{route=\"/s/{id}\",method=\"other\",status=\"200\"}"), 3);
	cr_assert_eq(value_of(text, "factd_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"200\"}"), 1);
	cr_assert_eq(value_of(text, "factd_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}"), 1);
	/* One template, one histogram, however many routes share it. */
	cr_assert_eq(value_of(text, "factd_http_request_duration_seconds_count{route=\"/s/{id}\"}"), 10);
	cr_assert_eq(value_of(text, "factd_http_request_duration_seconds_count{route=\"/t\"}"), 18);
	cr_assert_eq(value_of(text, "factd_http_request_duration_seconds_count{route=\"unmatched\"}"), 2);
	cr_assert_null(strstr(text, "PROPFIND"));
	cr_assert_null(strstr(text, "\"get\""));
	cr_assert_null(strstr(text, "\"302\""));
	free(text);
	fd_metrics_free(m);
}

Test(metrics_count, bucket_bounds_are_inclusive)
{
	static const char *const routes[] = { "/h" };
	struct fd_metrics *m = new_registry("v", routes, 1, NULL, 0);
	static const struct {
		unsigned long long ns;
		const char *first_le;  /* the smallest bucket that holds it */
	} cases[] = {
		{ 0, "0.0005" },
		{ 500000, "0.0005" },
		{ 500001, "0.001" },
		{ 1000000, "0.001" },
		{ 99999999, "0.1" },
		{ 1000000000, "1" },
		{ 10000000000ULL, "10" },
		{ 10000000001ULL, "+Inf" },
	};
	static const char *const les[] = { "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
					   "0.25",   "0.5",   "1",      "2.5",   "5",    "10",    "+Inf" };
	for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
		struct fd_metrics *one = new_registry("v", routes, 1, NULL, 0);
		fd_metrics_http_request(one, 0, "GET", 200, cases[c].ns);
		fd_metrics_http_request(m, 0, "GET", 200, cases[c].ns);
		char *text = render(one, NULL);
		check_format(text);
		bool in = false;
		for (size_t i = 0; i < sizeof les / sizeof les[0]; i++) {
			in = in || strcmp(les[i], cases[c].first_le) == 0;
			char series[128];
			snprintf(series, sizeof series, "factd_http_request_duration_seconds_bucket{route=\"/h\",le=\"%s\"}",
				 les[i]);
			cr_assert_eq(value_of(text, series), in ? 1 : 0, "%llu ns in le=%s", cases[c].ns, les[i]);
		}
		free(text);
		fd_metrics_free(one);
	}
	char *text = render(m, NULL);
	check_format(text);
	cr_assert_eq(value_of(text, "factd_http_request_duration_seconds_count{route=\"/h\"}"), 8);
	char sum[128];
	cr_assert_not_null(line_starting(text, "factd_http_request_duration_seconds_sum{route=\"/h\"} ", sum, sizeof sum));
	/* 0 + 500000 + 500001 + 1000000 + 99999999 + 1e9 + 1e10 + 10000000001 ns */
	cr_assert_str_eq(strchr(sum, ' ') + 1, "21.102000001");
	free(text);
	fd_metrics_free(m);
}

Test(metrics_count, appends_events_commands_snapshots)
{
	static const char *const aggregates[] = { "order", "product" };
	struct fd_metrics *m = new_registry("v", NULL, 0, aggregates, 2);
	fd_metrics_append(m, FD_METRICS_APPEND_OK, 5);
	fd_metrics_append(m, FD_METRICS_APPEND_ERROR, 0);
	fd_metrics_append(m, FD_METRICS_APPEND_COUNT, 7);   /* out of range: ignored */
	fd_metrics_command(m, "product", FD_METRICS_COMMAND_CONFLICT);
	fd_metrics_command(m, "product", FD_METRICS_COMMAND_IDEMPOTENCY);
	fd_metrics_command(m, NULL, FD_METRICS_COMMAND_ERROR);
	fd_metrics_command(m, "order", FD_METRICS_COMMAND_COUNT); /* out of range: ignored */
	for (int i = 0; i < 3; i++)
		fd_metrics_command_conflict(m, "product");
	fd_metrics_command_conflict(m, "saga");
	fd_metrics_snapshot_written(m);
	fd_metrics_snapshot_written(m);
	char *text = render(m, NULL);
	check_format(text);
	cr_assert_eq(value_of(text, "factd_appends_total{result=\"ok\"}"), 1);
	cr_assert_eq(value_of(text, "factd_appends_total{result=\"error\"}"), 1);
	cr_assert_eq(value_of(text, "factd_events_appended_total"), 5);
	cr_assert_eq(value_of(text, "factd_commands_total{aggregate=\"product\",result=\"conflict\"}"), 1);
	cr_assert_eq(value_of(text, "factd_commands_total{aggregate=\"product\",result=\"idempotency\"}"), 1);
	cr_assert_eq(value_of(text, "factd_commands_total{aggregate=\"other\",result=\"error\"}"), 1);
	cr_assert_eq(value_of(text, "factd_commands_total{aggregate=\"order\",result=\"ok\"}"), 0);
	cr_assert_eq(value_of(text, "factd_command_conflicts_total{aggregate=\"product\"}"), 3);
	cr_assert_eq(value_of(text, "factd_command_conflicts_total{aggregate=\"order\"}"), 0);
	cr_assert_eq(value_of(text, "factd_command_conflicts_total{aggregate=\"other\"}"), 1);
	cr_assert_eq(value_of(text, "factd_snapshots_written_total"), 2);
	free(text);
	fd_metrics_free(m);
}

Test(metrics_count, null_registry_records_nothing)
{
	fd_metrics_http_request(NULL, 0, "GET", 200, 1);
	fd_metrics_append(NULL, FD_METRICS_APPEND_OK, 1);
	fd_metrics_command(NULL, "order", FD_METRICS_COMMAND_OK);
	fd_metrics_command_conflict(NULL, "order");
	fd_metrics_snapshot_written(NULL);
	fd_metrics_retention_round(NULL, &(struct fd_metrics_retention){ .events_removed = 1 }, 1);
	fd_metrics_free(NULL);
}

Test(metrics_count, invalid_configurations)
{
	static const char *const with_null[] = { "/a", NULL };
	struct fd_metrics *m = (struct fd_metrics *)1;
	struct fd_metrics_config cfg = { .version = NULL };
	cr_assert_eq(fd_metrics_new(&cfg, &m), FD_ERR_INVAL);
	cr_assert_null(m);
	cfg = (struct fd_metrics_config){ .version = "v", .routes = NULL, .nroutes = 1 };
	cr_assert_eq(fd_metrics_new(&cfg, &m), FD_ERR_INVAL);
	cfg = (struct fd_metrics_config){ .version = "v", .routes = with_null, .nroutes = 2 };
	cr_assert_eq(fd_metrics_new(&cfg, &m), FD_ERR_INVAL);
	cfg = (struct fd_metrics_config){ .version = "v", .aggregates = with_null, .naggregates = 2 };
	cr_assert_eq(fd_metrics_new(&cfg, &m), FD_ERR_INVAL);
	cr_assert_eq(fd_metrics_new(NULL, &m), FD_ERR_INVAL);
}

/* ---- escaping ----------------------------------------------------------------- */

Test(metrics_text, label_values_escaped)
{
	static const char *const routes[] = { "/q\"x", "/b\\s", "/n\nl" };
	static const char *const aggregates[] = { "a\"b" };
	struct fd_metrics *m = new_registry("v\"1\\\n", routes, 3, aggregates, 1);
	for (size_t i = 0; i < 3; i++)
		fd_metrics_http_request(m, i, "GET", 200, 1000);
	char *text = render(m, NULL);
	check_format(text);
	cr_assert_eq(value_of(text, "factd_http_requests_total{route=\"/q\\\"x\",method=\"GET\",status=\"200\"}"), 1);
	cr_assert_eq(value_of(text, "factd_http_requests_total{route=\"/b\\\\s\",method=\"GET\",status=\"200\"}"), 1);
	cr_assert_eq(value_of(text, "factd_http_requests_total{route=\"/n\\nl\",method=\"GET\",status=\"200\"}"), 1);
	cr_assert_eq(value_of(text, "factd_http_request_duration_seconds_count{route=\"/n\\nl\"}"), 1);
	cr_assert_eq(value_of(text, "factd_command_conflicts_total{aggregate=\"a\\\"b\"}"), 0);
	cr_assert_eq(value_of(text, "factd_build_info{version=\"v\\\"1\\\\\\n\"}"), 1);

	/* Parsed back, every label value is the original. */
	size_t found = 0;
	for (const char *p = text; *p; p = strchr(p, '\n') + 1) {
		char line[1024];
		size_t l = strcspn(p, "\n");
		memcpy(line, p, l);
		line[l] = '\0';
		struct sample s;
		if (line[0] == '#' || !parse_sample(line, &s))
			continue;
		const char *route = label_of(&s, "route");
		if (route && strcmp(s.name, "factd_http_requests_total") == 0) {
			cr_assert(strcmp(route, routes[0]) == 0 || strcmp(route, routes[1]) == 0 ||
					  strcmp(route, routes[2]) == 0,
				  "route label %s", route);
			found++;
		}
		const char *version = label_of(&s, "version");
		if (version)
			cr_assert_str_eq(version, "v\"1\\\n");
	}
	cr_assert_eq(found, 3);
	free(text);
	fd_metrics_free(m);
}

/* ---- threads ------------------------------------------------------------------ */

enum { THREADS = 8, PER_THREAD = 20000 };

static void *hammer(void *arg)
{
	struct fd_metrics *m = arg;
	for (int i = 0; i < PER_THREAD; i++) {
		fd_metrics_http_request(m, (size_t)(i % 2), i % 3 ? "GET" : "POST", 200, (uint64_t)(i % 7) * 1000000);
		fd_metrics_append(m, FD_METRICS_APPEND_OK, 2);
		fd_metrics_command(m, "order", FD_METRICS_COMMAND_OK);
		fd_metrics_command_conflict(m, "order");
	}
	return NULL;
}

Test(metrics_count, concurrent_recording_loses_nothing)
{
	static const char *const routes[] = { "/a", "/b" };
	static const char *const aggregates[] = { "order" };
	struct fd_metrics *m = new_registry("v", routes, 2, aggregates, 1);
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, hammer, m), 0);
	/* Scrapes while the counters move stay well-formed. */
	for (int i = 0; i < 20; i++) {
		char *text = render(m, NULL);
		check_format(text);
		free(text);
	}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	char *text = render(m, NULL);
	check_format(text);
	long long total = 0;
	static const char *const series[] = {
		"factd_http_requests_total{route=\"/a\",method=\"GET\",status=\"200\"}",
		"factd_http_requests_total{route=\"/a\",method=\"POST\",status=\"200\"}",
		"factd_http_requests_total{route=\"/b\",method=\"GET\",status=\"200\"}",
		"factd_http_requests_total{route=\"/b\",method=\"POST\",status=\"200\"}",
	};
	for (size_t i = 0; i < 4; i++)
		total += value_of(text, series[i]);
	cr_assert_eq(total, THREADS * PER_THREAD);
	cr_assert_eq(value_of(text, "factd_http_request_duration_seconds_count{route=\"/a\"}") +
			     value_of(text, "factd_http_request_duration_seconds_count{route=\"/b\"}"),
		     THREADS * PER_THREAD);
	cr_assert_eq(value_of(text, "factd_appends_total{result=\"ok\"}"), THREADS * PER_THREAD);
	cr_assert_eq(value_of(text, "factd_events_appended_total"), 2LL * THREADS * PER_THREAD);
	cr_assert_eq(value_of(text, "factd_commands_total{aggregate=\"order\",result=\"ok\"}"), THREADS * PER_THREAD);
	cr_assert_eq(value_of(text, "factd_command_conflicts_total{aggregate=\"order\"}"), THREADS * PER_THREAD);
	free(text);
	fd_metrics_free(m);
}
