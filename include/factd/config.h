/*
 * config.h - process configuration from the environment and the command line.
 *
 * Every setting is a FACTD_ environment variable; `factd --help` lists them.
 * The struct is filled once at start-up and then only read (shared by all
 * threads without locking).
 */
#ifndef FACTD_CONFIG_H
#define FACTD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include "factd/auth.h"
#include "factd/error.h"

#ifdef __cplusplus
extern "C" {
#endif

enum fd_command { FD_CMD_SERVE, FD_CMD_MIGRATE, FD_CMD_HELP, FD_CMD_VERSION, FD_CMD_HEALTHCHECK,
		  FD_CMD_ARCHIVE_RESTORE };

/*
 * FACTD_POOLER: auto (default) probes FACTD_DATABASE_URL at start for a
 * transaction-pooling PgBouncer; none and transaction say what it is.
 */
enum fd_pooler { FD_POOLER_AUTO, FD_POOLER_NONE, FD_POOLER_TRANSACTION };

struct fd_config {
	enum fd_command command;
	char *listen_host;        /* FACTD_LISTEN host part, default 127.0.0.1 */
	unsigned port;            /* FACTD_LISTEN port part, default 8080; 0 = ephemeral */
	char *database_url;       /* FACTD_DATABASE_URL, libpq conninfo or URI */
	unsigned workers;         /* FACTD_WORKERS: threads running HTTP handlers */
	unsigned pool_size;       /* FACTD_POOL_SIZE: PostgreSQL connections, default = workers */
	unsigned append_batches;  /* FACTD_APPEND_BATCHES: group-committed append batches at once; 0 = off */
	unsigned pool_timeout_ms; /* FACTD_POOL_TIMEOUT_MS: wait for a free connection */
	size_t max_body;          /* FACTD_MAX_BODY bytes, default 1 MiB */
	unsigned max_append_events; /* FACTD_MAX_APPEND_EVENTS per request */
	unsigned max_read_limit;  /* FACTD_MAX_READ_LIMIT: cap for ?limit= */
	unsigned max_connections; /* FACTD_MAX_CONNECTIONS */
	unsigned request_timeout_s; /* FACTD_REQUEST_TIMEOUT: silent-connection timeout and body deadline */
	int log_level;            /* FACTD_LOG_LEVEL */
	bool migrate_on_start;    /* FACTD_MIGRATE=0 or --no-migrate turns it off */
	unsigned command_retries; /* FACTD_COMMAND_RETRIES: reload-and-decide rounds after a conflict */
	int snapshot_every;       /* FACTD_SNAPSHOT_EVERY: -1 = each aggregate type's default, 0 = off */
	size_t aggregate_cache;   /* FACTD_AGGREGATE_CACHE: aggregate states kept in memory; 0 = off */
	unsigned max_streams;     /* FACTD_MAX_STREAMS: concurrent live-feed (SSE) streams */
	unsigned sse_heartbeat_s; /* FACTD_SSE_HEARTBEAT_S: a comment frame after this many idle seconds */
	unsigned sse_notify;      /* FACTD_SSE_NOTIFY: 1 = LISTEN for new events, 0 = only poll the feed */
	unsigned projections;     /* FACTD_PROJECTIONS: 1 = this process may run projections */
	unsigned min_position_wait_ms; /* FACTD_MIN_POSITION_WAIT_MS: longest wait of a ?min_position= read */
	unsigned sagas;           /* FACTD_SAGAS: 1 = this process runs sagas (intake and workers) */
	unsigned saga_workers;    /* FACTD_SAGA_WORKERS: threads running saga steps */
	unsigned saga_poll_ms;    /* FACTD_SAGA_POLL_MS: how often idle saga workers look for due work */
	unsigned saga_lease_ms;   /* FACTD_SAGA_LEASE_MS: a worker's claim on a saga step */
	unsigned saga_time_pct;   /* FACTD_SAGA_TIME_PERCENT: scales every saga timeout and retry delay */
	/* access and limits */
	struct fd_api_keys api_keys; /* FACTD_API_KEYS and FACTD_API_KEYS_FILE; none = no authentication */
	bool allow_insecure;      /* FACTD_ALLOW_INSECURE=1: serve beyond loopback without keys */
	char *tls_cert;           /* FACTD_TLS_CERT: PEM certificate (chain) file, NULL = plain HTTP */
	char *tls_key;            /* FACTD_TLS_KEY: PEM private key file; set with tls_cert or not at all */
	char *cors_origins;       /* FACTD_CORS_ORIGINS: comma-separated exact origins or "*", NULL = none */
	unsigned max_json_depth;  /* FACTD_MAX_JSON_DEPTH: deepest nesting of arrays/objects in a body */
	unsigned http_threads;    /* FACTD_HTTP_THREADS: libmicrohttpd polling threads (network I/O only) */
	/* read replicas and connection poolers (README, "Read replicas and poolers") */
	char *read_database_urls; /* FACTD_READ_DATABASE_URL: comma-separated standby URLs; NULL = reads on the primary */
	unsigned read_pool_size;  /* FACTD_READ_POOL_SIZE: connections per replica, default = pool_size */
	unsigned replica_wait_ms; /* FACTD_REPLICA_WAIT_MS: wait for a replica to replay a read's position */
	unsigned replica_max_lag_ms; /* FACTD_REPLICA_MAX_LAG_MS: replicas lagging more are skipped */
	unsigned replica_probe_ms; /* FACTD_REPLICA_PROBE_MS: how often each replica's state and lag are probed */
	char *session_database_url; /* FACTD_SESSION_DATABASE_URL: direct connection for session work; NULL = database_url */
	enum fd_pooler pooler;    /* FACTD_POOLER: what sits behind FACTD_DATABASE_URL */
	/* `factd healthcheck` */
	unsigned healthcheck_timeout_ms; /* FACTD_HEALTHCHECK_TIMEOUT_MS: the whole probe, connect to answer */
	bool healthcheck_live;    /* --live: probe /healthz (the process) instead of /readyz (and the database) */
	/* data lifecycle */
	unsigned retention;       /* FACTD_RETENTION: 1 = this process may run the retention job */
	unsigned retention_interval_s; /* FACTD_RETENTION_INTERVAL_S: seconds between retention rounds */
	unsigned retention_batch; /* FACTD_RETENTION_BATCH: events (or sagas) per retention transaction */
	unsigned saga_retention_s; /* FACTD_SAGA_RETENTION_S: ended sagas are removed after it; 0 = kept */
	char *archive_dir;        /* FACTD_ARCHIVE_DIR: removed events are archived here first; NULL = not */
	char *restore_file;       /* `archive-restore FILE`: the archive to load */
	/* personal data */
	char *master_key_file;    /* FACTD_MASTER_KEY_FILE: the master key of personal data, NULL = none */
	/* webhooks */
	unsigned webhooks;        /* FACTD_WEBHOOKS: 1 = this process may deliver webhooks */
	unsigned webhook_allow_private; /* FACTD_WEBHOOK_ALLOW_PRIVATE=1: targets in private/loopback ranges allowed */
	unsigned webhook_poll_ms; /* FACTD_WEBHOOK_POLL_MS: how often the dispatcher looks for due deliveries */
	unsigned webhook_backoff_ms; /* FACTD_WEBHOOK_BACKOFF_MS: the first retry's delay, doubled per attempt */
};

/*
 * The session URL: the connection background work uses (leases, LISTEN,
 * advisory locks, migrations): FACTD_SESSION_DATABASE_URL, else
 * FACTD_DATABASE_URL.  Borrowed from cfg.
 */
const char *fd_config_session_url(const struct fd_config *cfg);

/*
 * Fill cfg from the environment, then argv (argv[1] may be "serve", "migrate",
 * "healthcheck"; flags --help, --version, --no-migrate, --live).  On FD_ERR_INVAL a message is in
 * errbuf.  cfg owns its strings; release with fd_config_release.
 */
FD_MUST_USE enum fd_err fd_config_load(struct fd_config *cfg, int argc, char **argv,
				       char *errbuf, size_t errlen);
/* Defaults only (no environment), for tests and embedding. */
FD_MUST_USE enum fd_err fd_config_defaults(struct fd_config *cfg);
void fd_config_release(struct fd_config *cfg);
/*
 * Refuse to serve beyond loopback without API keys: FD_ERR_INVAL with a
 * message when cfg->listen_host is not a loopback address, no key is
 * configured and cfg->allow_insecure is false.  fd_config_load runs it for
 * `serve`.
 */
FD_MUST_USE enum fd_err fd_config_check_exposure(const struct fd_config *cfg, char *errbuf, size_t errlen);
/* True for 127.0.0.0/8, ::1, ::ffff:127.0.0.0/104 and "localhost". */
bool fd_config_host_is_loopback(const char *host);
/* True when `origin` (exactly, as sent in an Origin header) is in cfg->cors_origins or that is "*". */
bool fd_config_cors_allowed(const struct fd_config *cfg, const char *origin);
/* The --help text after its "usage:" line: the commands and the framework's settings. */
const char *fd_config_usage(void);
/*
 * An integer setting from the environment (for an app's own settings):
 * `name` unset or empty leaves *out at its preset default; anything but a
 * decimal integer in [min, max] is FD_ERR_INVAL with a message in errbuf.
 */
FD_MUST_USE enum fd_err fd_env_int(const char *name, long long min, long long max, long long *out, char *errbuf,
				   size_t errlen);
/*
 * A string setting from the environment (for an app's own settings): `name`
 * unset or empty leaves *out at its preset default; a value that `valid`
 * (may be NULL) refuses, or longer than max bytes, is FD_ERR_INVAL with a
 * message naming `what` it must be in errbuf.  *out borrows the environment.
 */
FD_MUST_USE enum fd_err fd_env_string(const char *name, size_t max, bool (*valid)(const char *), const char *what,
				      const char **out, char *errbuf, size_t errlen);
/*
 * Split a FACTD_READ_DATABASE_URL list into its URLs: entries are separated
 * by commas followed by a new postgresql:// (or postgres://) URL or a
 * key=value conninfo, so a libpq multi-host URI stays one entry.  With out,
 * up to max copies (caller owns, free()) are stored.  Returns the number of
 * entries, 0 when the list is empty or an entry is not a URL (nothing
 * stored then) or on NOMEM.
 */
size_t fd_config_split_urls(const char *list, char **out, size_t max);
/* database_url with any password replaced by "***" (caller owns, free()). */
char *fd_config_redact_url(const char *url);

#ifdef __cplusplus
}
#endif

#endif
