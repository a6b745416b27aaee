/*
 * http.h - the HTTP server: request/response values, the handler signature
 * and the server lifecycle.
 *
 * Threading: libmicrohttpd's polling thread(s) do the network I/O (epoll);
 * a handler runs on one of cfg->workers worker threads, and may block on the
 * database there.  A handler that would wait for new events parks its
 * request instead (fd_req_park) and holds no thread meanwhile.
 * struct fd_ctx is shared and read-only after start (its pool is thread-safe).
 */
#ifndef FACTD_HTTP_H
#define FACTD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "factd/buf.h"
#include "factd/config.h"
#include "factd/error.h"
#include "factd/pool.h"
#include "factd/proj.h"
#include "factd/saga.h"
#include "factd/schema.h"
#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FD_ROUTE_MAX_PARAMS 4
#define FD_REQUEST_ID_MAX 128
#define FD_RESP_MAX_HEADERS 8

/*
 * Everything the handlers share: the app and what the process made for it.
 * Borrowed by the server; the caller owns it.  fd_ctx_init fills the parts
 * derived from the app (route table, saga and projection sets).
 */
struct fd_app;
struct fd_bus;
struct fd_metrics;
struct fd_notifier;
struct fd_route;
struct fd_ctx {
	const struct fd_config *cfg;
	const struct fd_app *app;
	void *services;              /* the app's outside systems (struct fd_app_services), may be NULL */
	struct fd_pool *pool;
	struct fd_bus *bus;          /* command bus (may be NULL in store-only tests) */
	struct fd_metrics *metrics;  /* requests are counted here and GET /metrics shows it; may be NULL */
	struct fd_notifier *notifier; /* wakes live streams when events commit; NULL: they poll */
	/* derived from app by fd_ctx_init */
	struct fd_route *routes;     /* the framework's routes, then the app's (owned) */
	size_t nroutes;
	struct fd_saga_set sagas;
	struct fd_projection_set projections;
	/* the event schemas of the app's aggregate categories (items owned); services: the caller's to set */
	struct fd_schemas schemas;
	struct fd_replicas *replicas; /* read replicas (store/replicas.h); NULL: every read on pool */
};
/*
 * Fill ctx's derived members from app (borrowed; must outlive ctx): the
 * route table, the saga and projection sets and the event schemas.  The other members are the
 * caller's to set.  FD_ERR_NOMEM; release with fd_ctx_release.
 */
FD_MUST_USE enum fd_err fd_ctx_init(struct fd_ctx *ctx, const struct fd_app *app);
void fd_ctx_release(struct fd_ctx *ctx);

struct MHD_Connection;
struct fd_route;
struct fd_server;

/* Why a parked handler runs again (struct fd_req.wake; see fd_req_park). */
enum fd_wake {
	FD_WAKE_NONE = 0,   /* the first run */
	FD_WAKE_NOTIFIED,   /* app->notifier announced appends since the last run began */
	FD_WAKE_TIMEOUT,    /* the park's timeout passed */
	FD_WAKE_STOPPING,   /* the server is stopping: answer now */
};

/* One request.  Owned by the server; freed in libmicrohttpd's completion callback. */
struct fd_req {
	struct fd_ctx *ctx;
	struct MHD_Connection *conn;
	const char *method;
	const char *path;                  /* borrowed from libmicrohttpd, no query string */
	const struct fd_route *route;      /* matched route, NULL when none */
	char *params[FD_ROUTE_MAX_PARAMS]; /* path parameters in pattern order (owned) */
	size_t nparams;
	struct fd_buf body;
	bool body_too_large;
	char request_id[FD_REQUEST_ID_MAX + 1];
	struct timespec start;
	unsigned status;                   /* status of the queued response, 0 until then */
	struct fd_server *server;          /* borrowed; outlives the request */
	bool stream_slot;                  /* holds one of cfg->max_streams (fd_req_stream_slot) */
	char caller[24];                   /* "key:<12 hex of its SHA-256>" of the API key used, else "" */
	/* parking (fd_req_park) */
	enum fd_wake wake;                 /* why this run of the handler happens */
	unsigned runs;                     /* runs of the handler before this one */
	void *park_state;                  /* the handler's own, kept between runs */
	void (*park_free)(void *state);    /* frees park_state when the request ends (may be NULL) */
	struct fd_pool *read_pool;         /* fd_req_read_pool's choice, NULL until asked */
	int replica;                       /* the replica of read_pool, -1 the primary */
};

struct fd_resp_header {
	const char *name;  /* static string */
	char *value;       /* owned */
};

/*
 * A streamed body's reader (libmicrohttpd's content-reader contract): called
 * on libmicrohttpd's polling thread, it writes up to `max` bytes at `buf` and
 * returns how many, or FD_STREAM_END / FD_STREAM_ERROR.  It must not block:
 * with nothing to send it suspends the connection (MHD_suspend_connection)
 * and returns 0, and whoever has more resumes it (the live feed's hub, see
 * src/http/live.h).  It should return FD_STREAM_END once
 * fd_server_stopping becomes true, and must not stay suspended past then.
 */
typedef ssize_t (*fd_stream_read_fn)(void *cls, uint64_t pos, char *buf, size_t max);
#define FD_STREAM_END ((ssize_t)-1)
#define FD_STREAM_ERROR ((ssize_t)-2)

/* A response a handler fills in; the server sends and frees it. */
struct fd_resp {
	unsigned status;
	char *body;                /* owned (malloc), may be NULL */
	size_t body_len;
	const char *content_type;  /* static string */
	struct fd_resp_header headers[FD_RESP_MAX_HEADERS];
	size_t nheaders;
	/*
	 * Set stream_read for a body of unknown length (chunked), produced by
	 * stream_read(stream_cls, ...); body must be NULL then.  The server owns
	 * stream_cls from then on and calls stream_free(stream_cls) exactly once
	 * when the response is done or cannot be sent (may be NULL).
	 */
	fd_stream_read_fn stream_read;
	void (*stream_free)(void *cls);
	void *stream_cls;
};

typedef void (*fd_handler_fn)(struct fd_req *req, struct fd_resp *resp);

/* Request helpers for handlers. */
/* A query-string argument (decoded), or NULL.  Borrowed for the request's lifetime. */
const char *fd_req_query(const struct fd_req *req, const char *name);
/* A request header, or NULL.  Borrowed for the request's lifetime. */
const char *fd_req_header(const struct fd_req *req, const char *name);
/*
 * Reserve one of the cfg->max_streams slots for long-lived responses; it is
 * given back when the request completes.  False when all are taken or the
 * server is stopping.
 */
bool fd_req_stream_slot(struct fd_req *req);

/*
 * Park the request instead of answering it now, for a long poll of at most
 * `wait_ms` counted from the start of the handler's first run (the server
 * keeps that deadline; pass the same wait_ms on every run).  True: the
 * handler returns with resp untouched, no thread waits, and the handler is
 * called again (on a worker, same req, empty resp) once app->notifier
 * announces appends made after this run began, once the deadline passes
 * (or `slice_ms`, when not 0 and sooner), or when the server stops; req->wake
 * says which (wake-ups may be spurious: check again).  False, parking
 * nothing: the wait is over (the deadline has passed, or the server is
 * stopping): answer now with what there is.  A handler keeps anything else
 * it needs between runs in req->park_state.  Without a notifier only the
 * timeouts and the stop wake it.
 */
FD_MUST_USE bool fd_req_park(struct fd_req *req, unsigned wait_ms, unsigned slice_ms);

/*
 * Read replicas: the seam every read handler goes through (struct
 * fd_read_need is in events.h).
 *
 * The pool a read request's queries go to: a read replica (FACTD_READ_DATABASE_URL)
 * that is up, lags at most FACTD_REPLICA_MAX_LAG_MS and has replayed `need`
 * (may be NULL; waits up to FACTD_REPLICA_WAIT_MS for that), else
 * ctx->pool, the primary.  Chosen on the first call and the same for the
 * rest of the request (later `need`s are ignored).  A response to a request
 * served by replica i carries X-Factd-Replica: i.  Only for reads: writes,
 * leases and anything that must see the newest state use ctx->pool.
 */
struct fd_pool *fd_req_read_pool(struct fd_req *req, const struct fd_read_need *need);
/*
 * After a read on fd_req_read_pool's pool failed with err: when that was a
 * replica and err says it could not serve (FD_ERR_UNAVAILABLE, which also
 * takes the replica out until it answers a probe again, or FD_ERR_RETRY, a
 * conflict with recovery), the primary to run the read again on; else NULL.
 *   for (pool = fd_req_read_pool(req, NULL); pool; pool = fd_req_read_retry(req, err))
 *           err = read(pool, ...);
 */
struct fd_pool *fd_req_read_retry(struct fd_req *req, enum fd_err err);
/*
 * ?min_position=<cursor> into need (has_position); true without the
 * parameter.  False after answering 400 invalid-parameter.
 */
bool fd_req_min_position(struct fd_req *req, struct fd_resp *resp, struct fd_read_need *need);

/* Response helpers. */
/* Set a JSON body (takes ownership of `body`, which may be NULL on NOMEM -> 500). */
void fd_resp_json(struct fd_resp *resp, unsigned status, char *body);
/* Serialise `doc` (reference stolen) as the JSON body. */
void fd_resp_json_doc(struct fd_resp *resp, unsigned status, json_t *doc);
/* Add a header; `value` is copied.  Silently ignored past FD_RESP_MAX_HEADERS. */
void fd_resp_header(struct fd_resp *resp, const char *name, const char *value);
void fd_resp_release(struct fd_resp *resp);

struct fd_server;

/*
 * Start serving on cfg->listen_host:cfg->port (port 0 = ephemeral) with
 * cfg->workers threads.  `app` is borrowed and must outlive the server.
 * Caller owns *out; stop it with fd_server_stop.
 */
FD_MUST_USE enum fd_err fd_server_start(struct fd_ctx *app, struct fd_server **out);
/* The port actually bound. */
uint16_t fd_server_port(const struct fd_server *srv);
/* True once fd_server_stop has begun; streamed responses then end.  Thread-safe. */
bool fd_server_stopping(const struct fd_server *srv);
/*
 * Graceful stop: stop accepting, tell streamed responses to end (and wake
 * app->notifier's waiters), let in-flight requests finish (up to `grace_ms`),
 * close remaining connections and free the server.  NULL is a no-op.
 */
void fd_server_stop(struct fd_server *srv, unsigned grace_ms);

/* The request id rule: 1..128 chars of [A-Za-z0-9._:-]. */
bool fd_request_id_valid(const char *s);

/*
 * A metrics registry labelled for this server (api_metrics.c): the route
 * table's templates of ctx (route index = index in ctx->routes) and the
 * app's aggregate types.  `version` is borrowed and must outlive it (a
 * literal).  Caller owns *out; free with fd_metrics_free.
 */
FD_MUST_USE enum fd_err fd_http_metrics_new(const struct fd_ctx *ctx, const char *version, struct fd_metrics **out);

#ifdef __cplusplus
}
#endif

#endif
