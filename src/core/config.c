/*
 * config.c - FACTD_ environment variables and the command line.
 *
 * Threading: called once at start-up; the result is read-only afterwards.
 */
#include "factd/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "factd/log.h"
#include "factd/pool.h"

static const char usage[] =
	"  serve      apply pending migrations (unless --no-migrate) and serve HTTP (default)\n"
	"  migrate    apply pending migrations and exit\n"
	"  healthcheck  ask the factd that this configuration describes (FACTD_LISTEN, FACTD_TLS_CERT)\n"
	"             whether it is ready: GET /readyz, or /healthz with --live; exit 0 on 200, else 1\n"
	"  archive-restore FILE  load the events of a retention archive back, then exit\n"
	"\n"
	"environment:\n"
	"  FACTD_DATABASE_URL       PostgreSQL conninfo or URI (required)\n"
	"  FACTD_LISTEN             host:port to listen on (default 127.0.0.1:8080)\n"
	"  FACTD_WORKERS            threads running request handlers; also the default pool size (default 16)\n"
	"  FACTD_POOL_SIZE          PostgreSQL connections (default = FACTD_WORKERS)\n"
	"  FACTD_APPEND_BATCHES     appends of concurrent requests share a transaction, at most this many\n"
	"                           such transactions at once; 0 = every append alone (default 1)\n"
	"  FACTD_POOL_TIMEOUT_MS    wait for a free connection before 503 (default 5000)\n"
	"  FACTD_MAX_BODY           largest request body in bytes (default 1048576)\n"
	"  FACTD_MAX_APPEND_EVENTS  events in one append (default 1000)\n"
	"  FACTD_MAX_READ_LIMIT     largest ?limit= on reads (default 1000)\n"
	"  FACTD_MAX_CONNECTIONS    concurrent HTTP connections; more get 503 (default 1024)\n"
	"  FACTD_REQUEST_TIMEOUT    seconds a connection may stay silent, and a body may take (default 30)\n"
	"  FACTD_LOG_LEVEL          debug|info|warn|error (default info)\n"
	"  FACTD_MIGRATE            0 to skip migrations at start (default 1)\n"
	"  FACTD_COMMAND_RETRIES    reload-and-decide rounds after a version conflict (default 10)\n"
	"  FACTD_SNAPSHOT_EVERY     snapshot every N events; 0 = never (default: 100 per aggregate type)\n"
	"  FACTD_AGGREGATE_CACHE    aggregate states kept in memory for commands; 0 = off (default 4096)\n"
	"  FACTD_PROJECTIONS        0 = this process runs no projections (default 1)\n"
	"  FACTD_MIN_POSITION_WAIT_MS longest wait of a read for ?min_position= before 503 (default 5000)\n"
	"  FACTD_MAX_STREAMS        concurrent GET /events/stream clients; more get 503 (default 256)\n"
	"  FACTD_SSE_HEARTBEAT_S    seconds of silence before a live stream sends a heartbeat (default 15)\n"
	"  FACTD_SSE_NOTIFY         0 = live streams poll the feed instead of LISTEN (default 1)\n"
	"  FACTD_SAGAS              0 = this process runs no saga steps or intake (default 1)\n"
	"  FACTD_SAGA_WORKERS       threads running saga steps (default 8)\n"
	"  FACTD_SAGA_POLL_MS       how often idle saga workers look for due steps (default 100)\n"
	"  FACTD_SAGA_LEASE_MS      a worker's claim on a step; a crashed worker's step reruns after it (default 30000)\n"
	"  FACTD_SAGA_TIME_PERCENT  scales every saga timeout and retry delay, in percent (default 100)\n"
	"  FACTD_MAX_JSON_DEPTH     deepest nesting of arrays and objects in a request body (default 128)\n"
	"  FACTD_HEALTHCHECK_TIMEOUT_MS longest `factd healthcheck` may take, connect to answer (default 2500)\n"
	"  FACTD_HTTP_THREADS       threads doing the HTTP network I/O (epoll); handlers run on the workers (default 2)\n"
	"\n"
	"read replicas and poolers (see README, \"Read replicas and poolers\"):\n"
	"  FACTD_READ_DATABASE_URL  comma-separated postgresql:// URLs of streaming standbys that serve reads\n"
	"                           (streams, feed, live-feed catch-up, aggregates, read models, lists)\n"
	"  FACTD_READ_POOL_SIZE     connections per replica (default = FACTD_POOL_SIZE)\n"
	"  FACTD_REPLICA_WAIT_MS    wait for a replica to replay a read's min_position or version before\n"
	"                           reading from the primary instead (default 200)\n"
	"  FACTD_REPLICA_MAX_LAG_MS replicas lagging more than this are skipped (default 5000)\n"
	"  FACTD_REPLICA_PROBE_MS   how often each replica's state and lag are probed (default 200)\n"
	"  FACTD_SESSION_DATABASE_URL direct connection (no transaction pooler) for work that needs a session:\n"
	"                           projector and saga leases, LISTEN, migrations (default FACTD_DATABASE_URL)\n"
	"  FACTD_POOLER             auto|none|transaction: what FACTD_DATABASE_URL goes through; auto probes\n"
	"                           for a transaction-mode pooler at start (default auto)\n"
	"\n"
	"data lifecycle (see README, \"Data lifecycle\"):\n"
	"  FACTD_RETENTION          0 = this process never runs the retention job (default 1; one process runs it)\n"
	"  FACTD_RETENTION_INTERVAL_S seconds between retention rounds (default 30)\n"
	"  FACTD_RETENTION_BATCH    events or sagas removed per transaction (default 1000)\n"
	"  FACTD_ARCHIVE_DIR        directory where removed events are first written, gzipped JSON lines, fsynced\n"
	"                           (default: none = removed events are not archived)\n"
	"  FACTD_SAGA_RETENTION_S   ended sagas are removed this many seconds after they ended; 0 = kept\n"
	"                           forever (default 2592000, 30 days)\n"
	"  FACTD_WEBHOOKS           0 = this process delivers no webhooks (default 1)\n"
	"  FACTD_WEBHOOK_ALLOW_PRIVATE 1 = webhooks may target private, loopback and link-local addresses (default 0)\n"
	"  FACTD_WEBHOOK_POLL_MS    how often the webhook dispatcher looks for due deliveries (default 200)\n"
	"  FACTD_WEBHOOK_BACKOFF_MS the first retry's delay after a failed delivery, doubled per attempt up to\n"
	"                           5 minutes, with jitter (default 1000)\n"
	"\n"
	"access (see README, \"Security\"):\n"
	"  FACTD_API_KEYS           comma-separated role:key entries, role read|write|admin; a key may be\n"
	"                           given hashed as role:sha256:<64 hex> (default: none = no authentication)\n"
	"  FACTD_API_KEYS_FILE      file of the same entries, one per line ('#' comments); adds to FACTD_API_KEYS\n"
	"  FACTD_ALLOW_INSECURE     1 = listen beyond loopback without API keys (refused otherwise)\n"
	"  FACTD_TLS_CERT           PEM certificate file: serve HTTPS (needs FACTD_TLS_KEY)\n"
	"  FACTD_TLS_KEY            PEM private key file of FACTD_TLS_CERT\n"
	"  FACTD_CORS_ORIGINS       comma-separated browser origins allowed by CORS, or * (default: none)\n"
	"personal data:\n"
	"  FACTD_MASTER_KEY_FILE    file holding the master key (64 hex digits or 32 bytes) that wraps the\n"
	"                           per-subject keys personal data is sealed with (default: none = events\n"
	"                           declaring personal data are refused, 422)\n";

const char *fd_config_usage(void)
{
	return usage;
}

enum fd_err fd_config_defaults(struct fd_config *cfg)
{
	memset(cfg, 0, sizeof *cfg);
	cfg->command = FD_CMD_SERVE;
	cfg->listen_host = strdup("127.0.0.1");
	cfg->port = 8080;
	cfg->workers = 16;
	cfg->http_threads = 2;
	cfg->pool_size = 0;
	cfg->append_batches = FD_POOL_APPEND_BATCHES;
	cfg->pool_timeout_ms = 5000;
	cfg->max_body = 1024 * 1024;
	cfg->max_append_events = 1000;
	cfg->max_read_limit = 1000;
	cfg->max_connections = 1024;
	cfg->request_timeout_s = 30;
	cfg->log_level = FD_LOG_INFO;
	cfg->migrate_on_start = true;
	cfg->command_retries = 10;
	cfg->snapshot_every = -1;
	cfg->aggregate_cache = 4096;
	cfg->projections = 1;
	cfg->min_position_wait_ms = 5000;
	cfg->max_streams = 256;
	cfg->sse_heartbeat_s = 15;
	cfg->sse_notify = 1;
	cfg->sagas = 1;
	cfg->saga_workers = 8;
	cfg->saga_poll_ms = 100;
	cfg->saga_lease_ms = 30000;
	cfg->saga_time_pct = 100;
	cfg->max_json_depth = 128;
	cfg->healthcheck_timeout_ms = 2500;
	cfg->replica_wait_ms = 200;
	cfg->replica_max_lag_ms = 5000;
	cfg->replica_probe_ms = 200;
	cfg->pooler = FD_POOLER_AUTO;
	cfg->retention = 1;
	cfg->retention_interval_s = 30;
	cfg->retention_batch = 1000;
	cfg->saga_retention_s = 30u * 24 * 3600;
	cfg->webhooks = 1;
	cfg->webhook_poll_ms = 200;
	cfg->webhook_backoff_ms = 1000;
	return cfg->listen_host ? FD_OK : FD_ERR_NOMEM;
}

void fd_config_release(struct fd_config *cfg)
{
	free(cfg->listen_host);
	free(cfg->database_url);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	free(cfg->cors_origins);
	free(cfg->read_database_urls);
	free(cfg->session_database_url);
	cfg->read_database_urls = cfg->session_database_url = NULL;
	free(cfg->archive_dir);
	free(cfg->restore_file);
	cfg->archive_dir = cfg->restore_file = NULL;
	free(cfg->master_key_file);
	cfg->master_key_file = NULL;
	fd_api_keys_release(&cfg->api_keys);
	cfg->listen_host = cfg->database_url = cfg->tls_cert = cfg->tls_key = cfg->cors_origins = NULL;
}

static bool parse_uint(const char *s, unsigned long long min, unsigned long long max, unsigned long long *out)
{
	if (!s || !*s || *s == '-' || *s == '+')
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* Each numeric setting is one row. */
struct num_opt {
	const char *env;
	size_t offset;
	size_t size;
	unsigned long long min, max;
};

#define NUM(env, field, lo, hi) { env, offsetof(struct fd_config, field), sizeof(((struct fd_config *)0)->field), lo, hi }
static const struct num_opt num_opts[] = {
	NUM("FACTD_WORKERS", workers, 1, 1024),
	NUM("FACTD_POOL_SIZE", pool_size, 1, 1024),
	NUM("FACTD_APPEND_BATCHES", append_batches, 0, 1024),
	NUM("FACTD_POOL_TIMEOUT_MS", pool_timeout_ms, 1, 600000),
	NUM("FACTD_MAX_BODY", max_body, 1024, 1ULL << 30),
	NUM("FACTD_MAX_APPEND_EVENTS", max_append_events, 1, 100000),
	NUM("FACTD_MAX_READ_LIMIT", max_read_limit, 1, 100000),
	NUM("FACTD_MAX_CONNECTIONS", max_connections, 1, 65536),
	NUM("FACTD_REQUEST_TIMEOUT", request_timeout_s, 1, 3600),
	NUM("FACTD_COMMAND_RETRIES", command_retries, 0, 1000),
	NUM("FACTD_SNAPSHOT_EVERY", snapshot_every, 0, 1000000),
	NUM("FACTD_AGGREGATE_CACHE", aggregate_cache, 0, 10000000),
	NUM("FACTD_PROJECTIONS", projections, 0, 1),
	NUM("FACTD_MIN_POSITION_WAIT_MS", min_position_wait_ms, 0, 600000),
	NUM("FACTD_MAX_STREAMS", max_streams, 1, 65536),
	NUM("FACTD_SSE_HEARTBEAT_S", sse_heartbeat_s, 1, 3600),
	NUM("FACTD_SSE_NOTIFY", sse_notify, 0, 1),
	NUM("FACTD_SAGAS", sagas, 0, 1),
	NUM("FACTD_SAGA_WORKERS", saga_workers, 0, 64),
	NUM("FACTD_SAGA_POLL_MS", saga_poll_ms, 10, 60000),
	NUM("FACTD_SAGA_LEASE_MS", saga_lease_ms, 100, 3600000),
	NUM("FACTD_SAGA_TIME_PERCENT", saga_time_pct, 1, 100000),
	NUM("FACTD_MAX_JSON_DEPTH", max_json_depth, 1, 1000),
	NUM("FACTD_HEALTHCHECK_TIMEOUT_MS", healthcheck_timeout_ms, 1, 600000),
	NUM("FACTD_HTTP_THREADS", http_threads, 1, 64),
	NUM("FACTD_READ_POOL_SIZE", read_pool_size, 1, 1024),
	NUM("FACTD_REPLICA_WAIT_MS", replica_wait_ms, 0, 600000),
	NUM("FACTD_REPLICA_MAX_LAG_MS", replica_max_lag_ms, 0, 86400000),
	NUM("FACTD_REPLICA_PROBE_MS", replica_probe_ms, 10, 60000),
	NUM("FACTD_RETENTION", retention, 0, 1),
	NUM("FACTD_RETENTION_INTERVAL_S", retention_interval_s, 1, 3600),
	NUM("FACTD_RETENTION_BATCH", retention_batch, 1, 100000),
	NUM("FACTD_SAGA_RETENTION_S", saga_retention_s, 0, 100u * 365 * 24 * 3600),
	NUM("FACTD_WEBHOOKS", webhooks, 0, 1),
	NUM("FACTD_WEBHOOK_ALLOW_PRIVATE", webhook_allow_private, 0, 1),
	NUM("FACTD_WEBHOOK_POLL_MS", webhook_poll_ms, 10, 60000),
	NUM("FACTD_WEBHOOK_BACKOFF_MS", webhook_backoff_ms, 1, 3600000),
};
#undef NUM

static enum fd_err parse_listen(struct fd_config *cfg, const char *s, char *errbuf, size_t errlen)
{
	const char *colon = strrchr(s, ':');
	unsigned long long port;
	if (!colon || !parse_uint(colon + 1, 0, 65535, &port)) {
		snprintf(errbuf, errlen, "FACTD_LISTEN must be host:port, got \"%s\"", s);
		return FD_ERR_INVAL;
	}
	size_t hlen = (size_t)(colon - s);
	if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') { /* [::1]:8080 */
		s++;
		hlen -= 2;
	}
	char *host = strndup(s, hlen);
	if (!host)
		return FD_ERR_NOMEM;
	if (!*host) {
		free(host);
		host = strdup("0.0.0.0");
		if (!host)
			return FD_ERR_NOMEM;
	}
	free(cfg->listen_host);
	cfg->listen_host = host;
	cfg->port = (unsigned)port;
	return FD_OK;
}

static enum fd_err parse_bool(const char *env, bool *out, char *errbuf, size_t errlen)
{
	const char *v = getenv(env);
	if (!v || !*v)
		return FD_OK;
	if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0)
		*out = false;
	else if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)
		*out = true;
	else {
		snprintf(errbuf, errlen, "%s must be 0 or 1, got \"%s\"", env, v);
		return FD_ERR_INVAL;
	}
	return FD_OK;
}

static enum fd_err dup_env(const char *env, char **out)
{
	const char *v = getenv(env);
	if (!v || !*v)
		return FD_OK;
	free(*out);
	*out = strdup(v);
	return *out ? FD_OK : FD_ERR_NOMEM;
}

/* Each entry "*" or scheme://host[:port], the form browsers send in Origin. */
static enum fd_err check_cors_origins(const char *list, char *errbuf, size_t errlen)
{
	for (const char *p = list; p;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		const char *s = p;
		p = end ? end + 1 : NULL;
		while (n && *s == ' ') {
			s++;
			n--;
		}
		while (n && s[n - 1] == ' ')
			n--;
		if (n == 1 && *s == '*')
			continue;
		const char *sep = n ? memchr(s, ':', n) : NULL;
		bool ok = sep && sep + 3 < s + n && sep[1] == '/' && sep[2] == '/' && s[n - 1] != '/';
		for (size_t i = 0; ok && i < n; i++)
			ok = (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f;
		if (ok && memchr(sep + 3, '/', (size_t)(s + n - sep - 3)))
			ok = false;
		if (!ok) {
			snprintf(errbuf, errlen,
				 "FACTD_CORS_ORIGINS entries must be * or scheme://host[:port] without a path, got \"%.*s\"",
				 (int)(n > 100 ? 100 : n), s);
			return FD_ERR_INVAL;
		}
	}
	return FD_OK;
}

static enum fd_err load_access(struct fd_config *cfg, char *errbuf, size_t errlen)
{
	enum fd_err err;
	const char *v;
	if ((v = getenv("FACTD_API_KEYS")) && *v &&
	    (err = fd_api_keys_parse(&cfg->api_keys, v, ',', "FACTD_API_KEYS", errbuf, errlen)))
		return err;
	if ((v = getenv("FACTD_API_KEYS_FILE")) && *v &&
	    (err = fd_api_keys_load_file(&cfg->api_keys, v, errbuf, errlen)))
		return err;
	if ((err = parse_bool("FACTD_ALLOW_INSECURE", &cfg->allow_insecure, errbuf, errlen)))
		return err;
	if ((err = dup_env("FACTD_TLS_CERT", &cfg->tls_cert)) || (err = dup_env("FACTD_TLS_KEY", &cfg->tls_key)))
		return err;
	if (!cfg->tls_cert != !cfg->tls_key) {
		snprintf(errbuf, errlen, "FACTD_TLS_CERT and FACTD_TLS_KEY go together: set both or neither");
		return FD_ERR_INVAL;
	}
	if ((err = dup_env("FACTD_CORS_ORIGINS", &cfg->cors_origins)))
		return err;
	if (cfg->cors_origins && (err = check_cors_origins(cfg->cors_origins, errbuf, errlen)))
		return err;
	if ((err = dup_env("FACTD_MASTER_KEY_FILE", &cfg->master_key_file)))
		return err;
	return FD_OK;
}

bool fd_config_host_is_loopback(const char *host)
{
	if (!host)
		return false;
	if (strcmp(host, "localhost") == 0)
		return true;
	unsigned char a[16];
	if (inet_pton(AF_INET, host, a) == 1)
		return a[0] == 127;
	if (inet_pton(AF_INET6, host, a) == 1) {
		static const unsigned char loop6[16] = { [15] = 1 };
		static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
		return memcmp(a, loop6, 16) == 0 || (memcmp(a, mapped, 12) == 0 && a[12] == 127);
	}
	return false;
}

enum fd_err fd_config_check_exposure(const struct fd_config *cfg, char *errbuf, size_t errlen)
{
	if (cfg->api_keys.n || cfg->allow_insecure || fd_config_host_is_loopback(cfg->listen_host))
		return FD_OK;
	snprintf(errbuf, errlen,
		 "refusing to listen on %s without API keys: anyone who can reach it could write events. "
		 "Set FACTD_API_KEYS or FACTD_API_KEYS_FILE, listen on 127.0.0.1, or set FACTD_ALLOW_INSECURE=1",
		 cfg->listen_host ? cfg->listen_host : "?");
	return FD_ERR_INVAL;
}

bool fd_config_cors_allowed(const struct fd_config *cfg, const char *origin)
{
	if (!cfg->cors_origins || !origin || !*origin)
		return false;
	size_t olen = strlen(origin);
	for (const char *p = cfg->cors_origins; p;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		const char *s = p;
		p = end ? end + 1 : NULL;
		while (n && *s == ' ') {
			s++;
			n--;
		}
		while (n && s[n - 1] == ' ')
			n--;
		if ((n == 1 && *s == '*') || (n == olen && memcmp(s, origin, n) == 0))
			return true;
	}
	return false;
}

const char *fd_config_session_url(const struct fd_config *cfg)
{
	return cfg->session_database_url ? cfg->session_database_url : cfg->database_url;
}

/* FACTD_READ_DATABASE_URL, FACTD_SESSION_DATABASE_URL and FACTD_POOLER. */
static enum fd_err load_replicas(struct fd_config *cfg, char *errbuf, size_t errlen)
{
	const char *v;
	if ((v = getenv("FACTD_READ_DATABASE_URL")) && *v) {
		if (!fd_config_split_urls(v, NULL, 0)) {
			snprintf(errbuf, errlen, "FACTD_READ_DATABASE_URL must be one or more comma-separated "
						 "postgresql:// URLs (or key=value conninfo strings)");
			return FD_ERR_INVAL;
		}
		if (!(cfg->read_database_urls = strdup(v)))
			return FD_ERR_NOMEM;
	}
	if ((v = getenv("FACTD_SESSION_DATABASE_URL")) && *v && !(cfg->session_database_url = strdup(v)))
		return FD_ERR_NOMEM;
	if ((v = getenv("FACTD_POOLER")) && *v) {
		if (strcmp(v, "auto") == 0)
			cfg->pooler = FD_POOLER_AUTO;
		else if (strcmp(v, "none") == 0 || strcmp(v, "session") == 0)
			cfg->pooler = FD_POOLER_NONE;
		else if (strcmp(v, "transaction") == 0)
			cfg->pooler = FD_POOLER_TRANSACTION;
		else {
			snprintf(errbuf, errlen, "FACTD_POOLER must be auto, none, session or transaction, got \"%s\"", v);
			return FD_ERR_INVAL;
		}
	}
	return FD_OK;
}

/* Does an entry of a URL list start at s (after blanks): a URI, or a conninfo's first keyword= ? */
static bool url_starts(const char *s)
{
	while (*s == ' ')
		s++;
	if (strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0)
		return true;
	size_t k = strspn(s, "abcdefghijklmnopqrstuvwxyz_");
	return k > 0 && s[k] == '=';
}

/*
 * Where the entry starting at s ends: a URI at the first comma after its
 * authority (where a libpq multi-host list keeps its commas), a key=value
 * conninfo at a comma that starts another entry.
 */
static const char *entry_end(const char *s)
{
	const char *scheme = strstr(s, "://");
	const char *comma = strchr(s, ',');
	if (scheme && (!comma || scheme < comma)) {
		const char *path = scheme + 3 + strcspn(scheme + 3, "/?#");
		return strchr(path, ',');
	}
	for (const char *end = comma; end; end = strchr(end + 1, ','))
		if (url_starts(end + 1))
			return end;
	return NULL;
}

size_t fd_config_split_urls(const char *list, char **out, size_t max)
{
	size_t n = 0;
	const char *p = list;
	if (!list)
		return 0;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *start = p, *end = entry_end(p);
		size_t len = end ? (size_t)(end - start) : strlen(start);
		while (len && start[len - 1] == ' ')
			len--;
		if (!len || !url_starts(start) || (out && n < max && !(out[n] = strndup(start, len)))) {
			for (size_t i = 0; out && i < n && i < max; i++) {
				free(out[i]);
				out[i] = NULL;
			}
			return 0;
		}
		n++;
		p = end ? end + 1 : start + strlen(start);
	}
	return n;
}

enum fd_err fd_config_load(struct fd_config *cfg, int argc, char **argv, char *errbuf, size_t errlen)
{
	enum fd_err err = fd_config_defaults(cfg);
	if (err)
		return err;
	const char *v;
	if ((v = getenv("FACTD_LISTEN")) && *v && (err = parse_listen(cfg, v, errbuf, errlen)))
		return err;
	if ((v = getenv("FACTD_DATABASE_URL")) && *v && !(cfg->database_url = strdup(v)))
		return FD_ERR_NOMEM;
	for (size_t i = 0; i < sizeof num_opts / sizeof num_opts[0]; i++) {
		const struct num_opt *o = &num_opts[i];
		unsigned long long n;
		if (!(v = getenv(o->env)) || !*v)
			continue;
		if (!parse_uint(v, o->min, o->max, &n)) {
			snprintf(errbuf, errlen, "%s must be an integer in %llu..%llu, got \"%s\"", o->env, o->min,
				 o->max, v);
			return FD_ERR_INVAL;
		}
		char *field = (char *)cfg + o->offset;
		if (o->size == sizeof(uint32_t)) {
			uint32_t v32 = (uint32_t)n; /* every 4-byte field's range fits */
			memcpy(field, &v32, sizeof v32);
		} else {
			uint64_t v64 = (uint64_t)n;
			memcpy(field, &v64, sizeof v64);
		}
	}
	if ((v = getenv("FACTD_LOG_LEVEL")) && *v) {
		int lvl = fd_log_level_parse(v);
		if (lvl < 0) {
			snprintf(errbuf, errlen, "FACTD_LOG_LEVEL must be debug, info, warn or error, got \"%s\"", v);
			return FD_ERR_INVAL;
		}
		cfg->log_level = lvl;
	}
	if ((err = load_access(cfg, errbuf, errlen)))
		return err;
	if ((err = load_replicas(cfg, errbuf, errlen)))
		return err;
	if ((v = getenv("FACTD_MIGRATE")) && *v) {
		if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0)
			cfg->migrate_on_start = false;
		else if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)
			cfg->migrate_on_start = true;
		else {
			snprintf(errbuf, errlen, "FACTD_MIGRATE must be 0 or 1, got \"%s\"", v);
			return FD_ERR_INVAL;
		}
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "serve") == 0)
			cfg->command = FD_CMD_SERVE;
		else if (strcmp(a, "migrate") == 0)
			cfg->command = FD_CMD_MIGRATE;
		else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "help") == 0)
			cfg->command = FD_CMD_HELP;
		else if (strcmp(a, "--version") == 0)
			cfg->command = FD_CMD_VERSION;
		else if (strcmp(a, "--no-migrate") == 0)
			cfg->migrate_on_start = false;
		else if (strcmp(a, "healthcheck") == 0)
			cfg->command = FD_CMD_HEALTHCHECK;
		else if (strcmp(a, "--live") == 0)
			cfg->healthcheck_live = true;
		else if (strcmp(a, "archive-restore") == 0) {
			if (i + 1 >= argc || !*argv[i + 1]) {
				snprintf(errbuf, errlen, "archive-restore needs the archive's file name");
				return FD_ERR_INVAL;
			}
			cfg->command = FD_CMD_ARCHIVE_RESTORE;
			free(cfg->restore_file);
			if (!(cfg->restore_file = strdup(argv[++i])))
				return FD_ERR_NOMEM;
		}
		else {
			snprintf(errbuf, errlen, "unknown argument \"%s\" (see factd --help)", a);
			return FD_ERR_INVAL;
		}
	}
	if (!cfg->pool_size)
		cfg->pool_size = cfg->workers;
	if (!cfg->read_pool_size)
		cfg->read_pool_size = cfg->pool_size;
	if ((err = dup_env("FACTD_ARCHIVE_DIR", &cfg->archive_dir)))
		return err;
	if (cfg->archive_dir && cfg->command == FD_CMD_SERVE && access(cfg->archive_dir, W_OK | X_OK) != 0) {
		snprintf(errbuf, errlen, "FACTD_ARCHIVE_DIR \"%s\" is not a writable directory: %s", cfg->archive_dir,
			 strerror(errno));
		return FD_ERR_INVAL;
	}
	if ((cfg->command == FD_CMD_SERVE || cfg->command == FD_CMD_MIGRATE || cfg->command == FD_CMD_ARCHIVE_RESTORE) &&
	    !cfg->database_url) {
		snprintf(errbuf, errlen, "FACTD_DATABASE_URL is not set (see factd --help)");
		return FD_ERR_INVAL;
	}
	if (cfg->command == FD_CMD_SERVE)
		return fd_config_check_exposure(cfg, errbuf, errlen);
	return FD_OK;
}

char *fd_config_redact_url(const char *url)
{
	if (!url)
		return strdup("");
	/* URI form: scheme://user:password@host... */
	const char *scheme = strstr(url, "://");
	if (scheme) {
		const char *auth = scheme + 3;
		/* The authority ends at the path or query; a password may hold an unencoded '@'. */
		size_t alen = strcspn(auth, "/?#");
		const char *at = NULL;
		for (size_t i = 0; i < alen; i++)
			if (auth[i] == '@')
				at = auth + i;
		const char *colon = memchr(auth, ':', alen);
		if (at && colon && colon < at) {
			size_t head = (size_t)(colon + 1 - url);
			size_t len = head + 3 + strlen(at) + 1;
			char *out = malloc(len);
			if (out)
				snprintf(out, len, "%.*s***%s", (int)head, url, at);
			return out;
		}
	}
	/* URI query (?password=secret&...) or keyword form (password = 'secret'). */
	for (const char *pw = strstr(url, "password"); pw; pw = strstr(pw + 1, "password")) {
		bool at_token = pw == url || pw[-1] == ' ' || pw[-1] == '\t' || pw[-1] == '?' || pw[-1] == '&';
		const char *v = pw + 8;
		while (*v == ' ' || *v == '\t')
			v++;
		if (!at_token || *v != '=')
			continue;
		v++;
		bool query = pw != url && (pw[-1] == '?' || pw[-1] == '&');
		while (!query && (*v == ' ' || *v == '\t'))
			v++;
		const char *end = v;
		if (!query && *end == '\'') {
			end++;
			while (*end && *end != '\'')
				end += (*end == '\\' && end[1]) ? 2 : 1;
			if (*end)
				end++;
		} else {
			while (*end && *end != ' ' && *end != '\t' && !(query && *end == '&'))
				end++;
		}
		size_t head = (size_t)(v - url);
		size_t len = head + 3 + strlen(end) + 1;
		char *out = malloc(len);
		if (out)
			snprintf(out, len, "%.*s***%s", (int)head, url, end);
		return out;
	}
	return strdup(url);
}

enum fd_err fd_env_int(const char *name, long long min, long long max, long long *out, char *errbuf, size_t errlen)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return FD_OK;
	char *end;
	errno = 0;
	long long n = strtoll(v, &end, 10);
	if (errno || *end || n < min || n > max || (*v == '+')) {
		snprintf(errbuf, errlen, "%s must be an integer in %lld..%lld, got \"%s\"", name, min, max, v);
		return FD_ERR_INVAL;
	}
	*out = n;
	return FD_OK;
}

enum fd_err fd_env_string(const char *name, size_t max, bool (*valid)(const char *), const char *what,
			  const char **out, char *errbuf, size_t errlen)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return FD_OK;
	if (strlen(v) > max || (valid && !valid(v))) {
		snprintf(errbuf, errlen, "%s must be %s, got \"%.64s\"", name, what, v);
		return FD_ERR_INVAL;
	}
	*out = v;
	return FD_OK;
}
