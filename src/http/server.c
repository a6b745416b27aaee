/*
 * server.c - libmicrohttpd glue: per-request context, bounded body
 * accumulation, routing, response queuing, request logging and graceful stop.
 *
 * Threading: event-driven.  MHD's polling threads (cfg->http_threads, epoll)
 * accept connections, parse requests, read bodies and write responses; they
 * never wait on the database.  Once a request's body is in, its connection is
 * suspended and the handler runs on one of cfg->workers worker threads
 * (workers.c); the worker leaves the response in the request and resumes the
 * connection, and MHD calls the access handler once more to queue it.  An
 * idle keep-alive connection costs a socket and its MHD memory, no thread.
 * A request's struct fd_req is allocated on the first access-handler call
 * and freed only in the completion callback (which MHD also calls for
 * clients that abort mid-upload); while a worker has it, the connection is
 * suspended, so MHD neither touches nor frees it.  The in-flight, stream-slot
 * and parked-request state is guarded by a mutex, plus an atomic stopping
 * flag; request metrics go to the app's registry (atomic counters).
 *
 * Parking (fd_req_park): a handler that waits for new events returns
 * without an answer; its request goes on the parked list, and the parker
 * thread hands it back to the workers when app->notifier's generation moves
 * past the one seen before the handler's run, when its timeout passes, or
 * when the server stops.  No worker is held while a request is parked.
 *
 * A streamed response (fd_resp.stream_read) is sent chunked from a content
 * reader that MHD calls on its polling thread and that suspends the
 * connection while it has nothing to send (api_sse.c).  fd_server_stop sets
 * the stopping flag, resumes every stream and parked request so that they
 * end, and waits for the workers before it stops MHD (which must not stop
 * with a connection suspended).
 *
 * RFC 9112 framing: an HTTP/1.1 request without Host, one with more than one
 * Host, and one with a field name that is not a token (whitespace before the
 * colon: "Content-Length : 5" would otherwise be ignored and its body read as
 * the next request) get 400 malformed-request and the connection is closed.
 *
 * Access and limits, in the order a request meets them: a connection past
 * cfg->max_connections gets one 503 and is closed (MHD's own limit is set a
 * little higher so that it can be answered rather than refused); a request
 * line and headers past FD_MAX_HEADER_BYTES get 431 (MHD's own memory for a
 * connection sits above that, see MHD_POOL_BYTES); a CORS
 * preflight is answered without a key; the API key must carry the route's
 * role (401/403); then media type, body size and, before the handler parses
 * it, the body's JSON nesting depth.  A connection that stays silent for
 * cfg->request_timeout_s (also mid-request) is closed by MHD; one whose body
 * is still arriving that long after its headers is closed here.
 *
 * A request is counted in the metrics when its response is queued, labelled
 * with its route template, and timed from its first access-handler call:
 * before the client can see the response, so a scrape that follows a
 * response always includes it.  A request that never got a response (the
 * client went away first) is not counted.
 */
#include "factd/http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "factd/auth.h"
#include "core/limits.h"
#include "factd/log.h"
#include "factd/metrics.h"
#include "factd/notify.h"
#include "http/live.h"
#include "http/problem.h"
#include "http/workers.h"
#include "factd/router.h"
#include "factd/uuid.h"

struct fd_server {
	struct MHD_Daemon *daemon;
	struct fd_ctx *ctx;
	uint16_t port;
	pthread_mutex_t lock;
	pthread_cond_t idle;
	unsigned inflight;
	unsigned streams;      /* stream slots taken (fd_req_stream_slot), under lock */
	unsigned conns;        /* open connections, under lock */
	atomic_bool stopping;  /* set by fd_server_stop; read by stream readers */
	char *tls_cert;        /* PEM text of cfg->tls_cert / tls_key, NULL without TLS */
	char *tls_key;
	struct fd_workers *workers;  /* run the handlers */
	struct fd_sse_hub *hub;      /* follows the feed for the event streams */
	/* parked requests (fd_req_park), under lock */
	struct server_req *parked;
	pthread_t parker;
	bool parker_started;
	bool parker_quit;
	pthread_cond_t park_cond;    /* a request was parked, or quit (without a notifier: also timeouts) */
};

_Static_assert(sizeof((struct fd_req *)0)->caller > FD_API_KEY_ID_LEN, "fd_req.caller is too small");

/* A connection's socket context: whether it was accepted past cfg->max_connections. */
static char over_limit_mark;

/*
 * Request line and headers: factd answers 431 headers-too-large past
 * FD_MAX_HEADER_BYTES.  MHD keeps them in the connection's memory pool and
 * answers its own plain 431 (414 for the request line alone) when they do
 * not fit; the pool is twice as large so that factd's own check is what
 * a client normally meets, and leaves room to send its answer.
 *
 * The pool is what a connection costs while it stays open: libmicrohttpd
 * zeroes all of it between the requests of a kept-alive connection and lends
 * all that is free to a streamed response's write buffer, so every open
 * connection (an idle keep-alive one, a live event stream) soon holds the
 * whole pool resident.  16 KiB of headers (Node.js's default; nginx allows
 * 4 x 8 KiB) keeps that at 32 KiB: 5,000 event streams in about 160 MiB
 * where a 128 KiB pool took about 640 MiB.
 */
#define FD_MAX_HEADER_BYTES (16 * 1024)
#define MHD_POOL_BYTES (2 * FD_MAX_HEADER_BYTES)

/*
 * A request as the server keeps it: the handlers' fd_req first, then what
 * only the server needs.  Allocated by on_uri (MHD calls it once per request,
 * before the headers are parsed), freed in on_completed.
 */
enum run_phase {
	RUN_NONE = 0,    /* the handler has not been handed to a worker */
	RUN_ARMED,       /* the request is complete; the next call hands it to a worker (see on_request) */
	RUN_BUSY,        /* a worker runs it, or it is parked: the connection is suspended */
	RUN_DONE,        /* sr->resp holds the answer; the connection was resumed */
};

struct server_req {
	struct fd_req req;
	char *raw_uri;   /* the request target as sent, before percent-decoding; owned */
	bool started;    /* on_request has seen it (and counted it in srv->inflight) */
	enum run_phase phase;
	struct fd_resp resp;        /* the worker's answer (RUN_DONE) */
	struct fd_job job;          /* runs the handler on a worker */
	/* parking */
	bool park_asked;            /* the handler's last run called fd_req_park */
	unsigned park_ms;
	uint64_t park_gen;          /* the notifier's generation before the handler's last run */
	int64_t park_until_ms;      /* CLOCK_MONOTONIC: when this park times out */
	int64_t first_run_ms;       /* CLOCK_MONOTONIC: the handler's first run began (fd_req_park's wait counts from it) */
	struct server_req *park_next;
};

static struct server_req *server_req_of(struct fd_req *req)
{
	return (struct server_req *)(void *)((char *)req - offsetof(struct server_req, req));
}

/* The request headers a browser may send cross-origin, and the response headers it may read. */
#define CORS_ALLOW_HEADERS "Authorization, Content-Type, If-Match, Idempotency-Key, Last-Event-ID, X-Request-Id"
#define CORS_EXPOSE_HEADERS "ETag, Location, Retry-After, X-Request-Id, Idempotent-Replayed, WWW-Authenticate, X-Factd-Replica"
#define CORS_MAX_AGE "600"

_Static_assert(FD_STREAM_END == MHD_CONTENT_READER_END_OF_STREAM, "stream end codes differ");
_Static_assert(FD_STREAM_ERROR == MHD_CONTENT_READER_END_WITH_ERROR, "stream error codes differ");

/* ---- request helpers ---------------------------------------------------- */

const char *fd_req_query(const struct fd_req *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *fd_req_header(const struct fd_req *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

bool fd_req_stream_slot(struct fd_req *req)
{
	struct fd_server *srv = req->server;
	if (req->stream_slot)
		return true;
	pthread_mutex_lock(&srv->lock);
	if (!atomic_load(&srv->stopping) && srv->streams < req->ctx->cfg->max_streams) {
		srv->streams++;
		req->stream_slot = true;
	}
	pthread_mutex_unlock(&srv->lock);
	return req->stream_slot;
}

bool fd_request_id_valid(const char *s)
{
	size_t n = 0;
	if (!s)
		return false;
	for (; s[n]; n++) {
		char c = s[n];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
			  c == '_' || c == ':' || c == '-';
		if (!ok || n >= FD_REQUEST_ID_MAX)
			return false;
	}
	return n > 0;
}

/* ---- response helpers --------------------------------------------------- */

void fd_resp_json(struct fd_resp *resp, unsigned status, char *body)
{
	free(resp->body);
	if (!body) {
		static const char oom[] = "{\"type\":\"" FD_PROBLEM_BASE "internal\",\"title\":\"Out of memory\",\"status\":500}";
		resp->status = 500;
		resp->body = strdup(oom);
		resp->body_len = resp->body ? sizeof oom - 1 : 0;
		resp->content_type = "application/problem+json";
		return;
	}
	resp->status = status;
	resp->body = body;
	resp->body_len = strlen(body);
	resp->content_type = "application/json";
}

void fd_resp_json_doc(struct fd_resp *resp, unsigned status, json_t *doc)
{
	char *body = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(doc);
	fd_resp_json(resp, status, body);
}

void fd_resp_header(struct fd_resp *resp, const char *name, const char *value)
{
	if (resp->nheaders >= FD_RESP_MAX_HEADERS)
		return;
	char *copy = strdup(value);
	if (!copy)
		return;
	resp->headers[resp->nheaders].name = name;
	resp->headers[resp->nheaders].value = copy;
	resp->nheaders++;
}

void fd_resp_release(struct fd_resp *resp)
{
	free(resp->body);
	for (size_t i = 0; i < resp->nheaders; i++)
		free(resp->headers[i].value);
	if (resp->stream_free && resp->stream_cls)
		resp->stream_free(resp->stream_cls);
	memset(resp, 0, sizeof *resp);
}

/* ---- request lifecycle -------------------------------------------------- */

static void req_free(struct fd_req *req)
{
	struct server_req *sr = server_req_of(req);
	fd_resp_release(&sr->resp);
	if (req->park_free && req->park_state)
		req->park_free(req->park_state);
	for (size_t i = 0; i < req->nparams; i++)
		free(req->params[i]);
	fd_buf_release(&req->body);
	free(sr->raw_uri);
	free(sr);
}

static void count_request(const struct fd_req *req)
{
	struct fd_metrics *m = req->ctx->metrics;
	if (!m)
		return;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t ns = (int64_t)(now.tv_sec - req->start.tv_sec) * 1000000000 + (now.tv_nsec - req->start.tv_nsec);
	size_t route = req->route ? (size_t)(req->route - req->ctx->routes) : FD_METRICS_UNMATCHED;
	fd_metrics_http_request(m, route, req->method, req->status, ns > 0 ? (uint64_t)ns : 0);
}

static enum MHD_Result queue(struct fd_req *req, struct fd_resp *resp)
{
	struct MHD_Response *r;
	bool streamed = resp->stream_read != NULL;
	if (streamed) {
		/* The reader writes into the connection's own buffer; the block is MHD's advice only. */
		r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4 * 1024, resp->stream_read, resp->stream_cls,
						      resp->stream_free);
		if (r)
			resp->stream_cls = NULL; /* now owned by MHD */
		/*
		 * MHD closes a connection that saw no I/O for its timeout: a stream
		 * may be silent for a heartbeat interval on top of the usual idle
		 * timeout.
		 */
		MHD_set_connection_option(req->conn, MHD_CONNECTION_OPTION_TIMEOUT,
					  req->ctx->cfg->request_timeout_s + req->ctx->cfg->sse_heartbeat_s);
	} else if (resp->body) {
		r = MHD_create_response_from_buffer_with_free_callback(resp->body_len, resp->body, free);
		resp->body = NULL; /* now owned by MHD */
	} else {
		r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	}
	if (!r) {
		fd_resp_release(resp);
		return MHD_NO;
	}
	if (resp->content_type && (resp->body_len || streamed))
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, resp->content_type);
	MHD_add_response_header(r, "X-Request-Id", req->request_id);
	if (req->read_pool && req->read_pool != req->ctx->pool && req->replica >= 0) {
		char idx[16];
		snprintf(idx, sizeof idx, "%d", req->replica);
		MHD_add_response_header(r, "X-Factd-Replica", idx);
	}
	bool own_cache_control = false; /* the console's files are revalidated by their ETag instead */
	for (size_t i = 0; i < resp->nheaders; i++)
		own_cache_control = own_cache_control || strcasecmp(resp->headers[i].name, "Cache-Control") == 0;
	if (!own_cache_control)
		MHD_add_response_header(r, "Cache-Control", "no-store");
	if (req->ctx->cfg->cors_origins) {
		const char *origin = fd_req_header(req, "Origin");
		MHD_add_response_header(r, "Vary", "Origin");
		if (fd_config_cors_allowed(req->ctx->cfg, origin)) {
			MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
			MHD_add_response_header(r, "Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS);
		}
	}
	for (size_t i = 0; i < resp->nheaders; i++)
		MHD_add_response_header(r, resp->headers[i].name, resp->headers[i].value);
	req->status = resp->status;
	count_request(req);
	enum MHD_Result ret = MHD_queue_response(req->conn, resp->status, r);
	MHD_destroy_response(r);
	fd_resp_release(resp);
	return ret;
}

static bool content_type_is_json(const char *ct)
{
	if (!ct)
		return false;
	while (*ct == ' ')
		ct++;
	static const char want[] = "application/json";
	if (strncasecmp(ct, want, sizeof want - 1) != 0)
		return false;
	const char *rest = ct + sizeof want - 1;
	while (*rest == ' ')
		rest++;
	return *rest == '\0' || *rest == ';';
}

/*
 * With API keys configured, check the request's key against the role `need`.
 * True when rejected: a 401 or 403 problem with its WWW-Authenticate (RFC
 * 6750) is in resp.  The key itself is never logged or echoed.
 */
static bool unauthorized(struct fd_req *req, struct fd_resp *resp, enum fd_role need)
{
	const struct fd_api_keys *keys = &req->ctx->cfg->api_keys;
	if (!keys->n || need == FD_ROLE_OPEN)
		return false;
	size_t len;
	const char *token = fd_auth_bearer(fd_req_header(req, MHD_HTTP_HEADER_AUTHORIZATION), &len);
	if (!token) {
		fd_problem(resp, req, 401, "unauthorized", "Authentication required",
			   "this endpoint needs an API key: Authorization: Bearer <key>", NULL);
		fd_resp_header(resp, "WWW-Authenticate", "Bearer realm=\"factd\"");
		return true;
	}
	enum fd_role has = fd_api_keys_lookup(keys, token, len);
	if (has == FD_ROLE_DEFAULT) {
		fd_problem(resp, req, 401, "unauthorized", "Authentication required", "the API key is not valid",
			   NULL);
		fd_resp_header(resp, "WWW-Authenticate",
			       "Bearer realm=\"factd\", error=\"invalid_token\", error_description=\"unknown API key\"");
		return true;
	}
	if (has < need) {
		char detail[128], challenge[128];
		snprintf(detail, sizeof detail, "this operation needs a key with the %s role; this key has %s",
			 fd_role_name(need), fd_role_name(has));
		fd_problem(resp, req, 403, "forbidden", "Role too small", detail,
			   json_pack("{s:s, s:s}", "required_role", fd_role_name(need), "key_role", fd_role_name(has)));
		snprintf(challenge, sizeof challenge, "Bearer realm=\"factd\", error=\"insufficient_scope\", scope=\"%s\"",
			 fd_role_name(need));
		fd_resp_header(resp, "WWW-Authenticate", challenge);
		return true;
	}
	fd_api_key_id(token, len, req->caller);
	return false;
}

/*
 * A CORS preflight (OPTIONS with Origin and Access-Control-Request-Method):
 * answered here, without a key, since browsers send none.  An allowed origin
 * on a known path gets 204 with the path's methods; a disallowed origin gets
 * a 403 problem without CORS headers, so the browser stops there.
 */
static void preflight(struct fd_req *req, struct fd_resp *resp)
{
	char allow[64];
	const char *origin = fd_req_header(req, "Origin");
	if (!fd_config_cors_allowed(req->ctx->cfg, origin)) {
		fd_problem(resp, req, 403, "cors-origin-not-allowed", "Origin not allowed",
			   "this origin is not in FACTD_CORS_ORIGINS", NULL);
		return;
	}
	if (!fd_router_methods(req->ctx->routes, req->ctx->nroutes, req->path, allow, sizeof allow)) {
		fd_problem(resp, req, 404, "not-found", "Not found", "no such endpoint", NULL);
		return;
	}
	resp->status = 204;
	fd_resp_header(resp, "Access-Control-Allow-Methods", allow);
	fd_resp_header(resp, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
	fd_resp_header(resp, "Access-Control-Max-Age", CORS_MAX_AGE);
}

/* Does the path of the raw request target (before any '?') contain %2F? */
static bool encoded_slash(const char *raw_uri)
{
	for (const char *p = raw_uri; p && *p && *p != '?' && *p != '#'; p++)
		if (p[0] == '%' && p[1] == '2' && (p[2] == 'F' || p[2] == 'f'))
			return true;
	return false;
}

/*
 * Does the path of the raw request target contain %00?  libmicrohttpd's
 * decoded path ends at the NUL, so /streams/a%00b would be routed as
 * /streams/a: such a path names nothing.
 */
static bool encoded_nul(const char *raw_uri)
{
	for (const char *p = raw_uri; p && *p && *p != '?' && *p != '#'; p++)
		if (p[0] == '%' && p[1] == '0' && p[2] == '0')
			return true;
	return false;
}

/* What one pass over the request's header fields finds. */
struct header_scan {
	size_t bytes;         /* request line and headers, as sent less optional whitespace */
	unsigned hosts;       /* Host fields */
	const char *bad_name; /* the first field name that is not a token (borrowed), or NULL */
};

/* RFC 9110 tchar: what a field name is made of (no whitespace, no separators). */
static bool is_token(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  (c && strchr("!#$%&'*+-.^_`|~", c));
		if (!ok)
			return false;
	}
	return true;
}

static enum MHD_Result scan_field(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct header_scan *h = cls;
	(void)kind;
	h->bytes += strlen(key) + 2 + (value ? strlen(value) : 0) + 2; /* "name: value\r\n" */
	if (strcasecmp(key, "Host") == 0)
		h->hosts++;
	if (!h->bad_name && !is_token(key))
		h->bad_name = key;
	return MHD_YES;
}

static void scan_headers(struct fd_req *req, const char *version, struct header_scan *h)
{
	const char *target = server_req_of(req)->raw_uri;
	memset(h, 0, sizeof *h);
	h->bytes = strlen(req->method) + 1 + strlen(target ? target : req->path) + 1 + strlen(version) + 2 + 2;
	MHD_get_connection_values(req->conn, MHD_HEADER_KIND, scan_field, h);
}

/*
 * RFC 9112 sections 3.2 and 5.1: exactly one Host in HTTP/1.1, field names
 * without whitespace before the colon.  True when rejected (a 400 problem in
 * resp; the connection is to be closed, since what follows on it cannot be
 * framed with confidence).
 */
static bool malformed(struct fd_req *req, const char *version, const struct header_scan *h, struct fd_resp *resp)
{
	char detail[160];
	json_t *ext = NULL;
	if (h->bad_name) {
		char shown[64];
		size_t n = 0;
		for (const char *p = h->bad_name; *p && n < sizeof shown - 1; p++)
			if ((unsigned char)*p > ' ' && (unsigned char)*p < 0x7f)
				shown[n++] = *p;
		shown[n] = '\0';
		snprintf(detail, sizeof detail,
			 "a header field name must be a token, with no whitespace before its colon (RFC 9112, 5.1)");
		ext = json_pack("{s:s}", "header", shown);
	} else if (h->hosts > 1) {
		snprintf(detail, sizeof detail, "a request must carry one Host header; this one has %u (RFC 9112, 3.2)",
			 h->hosts);
		ext = json_pack("{s:s}", "header", "Host");
	} else if (h->hosts == 0 && strcmp(version, MHD_HTTP_VERSION_1_1) == 0) {
		snprintf(detail, sizeof detail, "an HTTP/1.1 request must carry a Host header (RFC 9112, 3.2)");
		ext = json_pack("{s:s}", "header", "Host");
	} else {
		return false;
	}
	fd_problem(resp, req, 400, "malformed-request", "Malformed request", detail, ext);
	fd_resp_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	return true;
}

/* Decide on the first call whether the request can be answered before its body. */
static bool early_reject(struct fd_req *req, struct fd_resp *resp)
{
	char allow[64];
	const struct fd_route *route = NULL;
	enum fd_match m = fd_router_match(req->ctx->routes, req->ctx->nroutes, req->method, req->path, &route, req->params,
					  &req->nparams, allow, sizeof allow);
	/* Without a valid key, unknown paths are not told apart from known ones. */
	if (unauthorized(req, resp, m == FD_MATCH_OK ? fd_role_required(route->role, req->method) : FD_ROLE_READ))
		return true;
	if (encoded_slash(server_req_of(req)->raw_uri)) {
		/* The router sees the decoded path, where it would split the segment in two. */
		fd_problem(resp, req, 400, "encoded-slash", "Encoded slash in the path",
			   "the path has %2F, an encoded '/': no path segment (a stream name, an id) may contain '/'",
			   NULL);
		return true;
	}
	if (m == FD_MATCH_NOT_FOUND || encoded_nul(server_req_of(req)->raw_uri)) {
		fd_problem(resp, req, 404, "not-found", "Not found", "no such endpoint", NULL);
		return true;
	}
	if (m == FD_MATCH_METHOD) {
		char detail[128];
		snprintf(detail, sizeof detail, "%s is not allowed here; allowed: %s", req->method, allow);
		fd_problem(resp, req, 405, "method-not-allowed", "Method not allowed", detail, NULL);
		fd_resp_header(resp, "Allow", allow);
		return true;
	}
	req->route = route;
	if (route->json_body && !content_type_is_json(fd_req_header(req, MHD_HTTP_HEADER_CONTENT_TYPE))) {
		fd_problem(resp, req, 415, "unsupported-media-type", "Unsupported media type",
			   "the body must be application/json", NULL);
		fd_resp_header(resp, "Accept-Post", "application/json");
		return true;
	}
	const char *cl = fd_req_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (cl) {
		char *end;
		errno = 0;
		unsigned long long n = strtoull(cl, &end, 10);
		if (errno || *end || n > req->ctx->cfg->max_body) {
			char detail[96];
			snprintf(detail, sizeof detail, "the body may be at most %zu bytes", req->ctx->cfg->max_body);
			fd_problem(resp, req, 413, "body-too-large", "Request body too large", detail, NULL);
			return true;
		}
	}
	return false;
}

static void run_handler(struct fd_job *job);

/*
 * True once a request's body has taken longer than cfg->request_timeout_s
 * since its headers arrived.  MHD's own timeout only closes silent
 * connections; this also stops a client that trickles its body.
 */
static bool body_overdue(const struct fd_req *req)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec - req->start.tv_sec > (time_t)req->ctx->cfg->request_timeout_s;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
				  const char *version, const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
{
	struct fd_server *srv = cls;
	struct server_req *sr = *con_cls;
	struct fd_resp resp = { 0 };

	if (!sr) /* on_uri ran out of memory */
		return MHD_NO;
	struct fd_req *req = &sr->req;
	if (!sr->started) {
		sr->started = true;
		sr->job.run = run_handler;
		clock_gettime(CLOCK_MONOTONIC, &req->start);
		req->ctx = srv->ctx;
		req->replica = -1;
		req->server = srv;
		req->conn = conn;
		req->method = method;
		/* the console's start page is its index.html (a route segment is never empty) */
		req->path = strcmp(url, "/console/") == 0 ? "/console/index.html" : url;
		const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
		if (fd_request_id_valid(rid)) {
			snprintf(req->request_id, sizeof req->request_id, "%s", rid);
		} else {
			struct fd_uuid u;
			if (fd_uuid_v7(&u) == FD_OK)
				fd_uuid_format(&u, req->request_id);
		}
		pthread_mutex_lock(&srv->lock);
		srv->inflight++;
		pthread_mutex_unlock(&srv->lock);
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
		if (ci && ci->socket_context == &over_limit_mark) {
			char detail[96];
			snprintf(detail, sizeof detail, "the server is at its limit of %u connections; try again",
				 req->ctx->cfg->max_connections);
			fd_problem(&resp, req, 503, "too-many-connections", "Too many connections", detail, NULL);
			fd_resp_header(&resp, MHD_HTTP_HEADER_CONNECTION, "close");
			return queue(req, &resp);
		}
		struct header_scan scan;
		scan_headers(req, version, &scan);
		if (scan.bytes > FD_MAX_HEADER_BYTES) {
			char detail[96];
			snprintf(detail, sizeof detail, "the request line and headers may be at most %d bytes",
				 FD_MAX_HEADER_BYTES);
			fd_problem(&resp, req, 431, "headers-too-large", "Request headers too large", detail, NULL);
			fd_resp_header(&resp, MHD_HTTP_HEADER_CONNECTION, "close");
			return queue(req, &resp);
		}
		if (malformed(req, version, &scan, &resp))
			return queue(req, &resp);
		if (strcmp(method, MHD_HTTP_METHOD_OPTIONS) == 0 && fd_req_header(req, "Origin") &&
		    fd_req_header(req, "Access-Control-Request-Method")) {
			preflight(req, &resp);
			return queue(req, &resp);
		}
		if (early_reject(req, &resp))
			return queue(req, &resp);
		return MHD_YES;
	}

	if (*upload_data_size) {
		if (body_overdue(req)) {
			/* MHD cannot queue a response mid-upload: closing is the only answer. */
			fd_log_fields(FD_LOG_WARN, "request body not received in time; closing the connection",
				      json_pack("{s:s, s:s, s:i}", "path", req->path, "request_id", req->request_id,
						"timeout_s", (int)req->ctx->cfg->request_timeout_s));
			return MHD_NO;
		}
		if (!req->body_too_large) {
			if (req->body.len + *upload_data_size > req->ctx->cfg->max_body) {
				req->body_too_large = true;
				fd_buf_release(&req->body);
			} else if (fd_buf_append(&req->body, upload_data, *upload_data_size) != FD_OK) {
				return MHD_NO;
			}
		}
		*upload_data_size = 0;
		return MHD_YES;
	}

	if (req->status) /* answered early; MHD is draining */
		return MHD_YES;
	if (sr->phase == RUN_DONE) /* back from a worker */
		return queue(req, &sr->resp);
	if (sr->phase == RUN_BUSY) /* resumed without an answer: cannot happen, but never run twice */
		return MHD_YES;
	if (req->body_too_large) {
		char detail[96];
		snprintf(detail, sizeof detail, "the body may be at most %zu bytes", req->ctx->cfg->max_body);
		fd_problem(&resp, req, 413, "body-too-large", "Request body too large", detail, NULL);
		return queue(req, &resp);
	}
	unsigned max_depth = req->ctx->cfg->max_json_depth;
	if (req->body.len && !fd_json_depth_within(req->body.data, req->body.len, max_depth)) {
		char detail[96];
		snprintf(detail, sizeof detail, "arrays and objects in the body may nest at most %u levels", max_depth);
		fd_problem(&resp, req, 400, "json-too-deep", "JSON nested too deeply", detail, NULL);
		return queue(req, &resp);
	}
	/*
	 * The handler may block on the database: a worker runs it while the
	 * connection waits suspended.  Not on this call but on the next (MHD
	 * calls again at once): libmicrohttpd 0.9.75 does not update what it
	 * waits for on a suspended connection, so one suspended straight from
	 * reading would read again when resumed, and a client that has
	 * half-closed its end after the request would be cut off unanswered.
	 */
	if (sr->phase == RUN_NONE) {
		sr->phase = RUN_ARMED;
		return MHD_YES;
	}
	sr->phase = RUN_BUSY;
	MHD_suspend_connection(conn);
	if (!fd_workers_submit(srv->workers, &sr->job)) {
		fd_problem(&sr->resp, req, 503, "shutting-down", "Shutting down", "the server is stopping; try again", NULL);
		fd_resp_header(&sr->resp, "Retry-After", "1");
		sr->phase = RUN_DONE;
		MHD_resume_connection(conn);
	}
	return MHD_YES;
}

static int64_t mono_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Hand the answer in sr->resp back to MHD's polling thread. */
static void finish_run(struct server_req *sr)
{
	sr->phase = RUN_DONE;
	MHD_resume_connection(sr->req.conn);
}

/* A worker's job: run the handler; answer, or park the request. */
static void run_handler(struct fd_job *job)
{
	struct server_req *sr = (struct server_req *)(void *)((char *)job - offsetof(struct server_req, job));
	struct fd_req *req = &sr->req;
	struct fd_server *srv = req->server;
	struct fd_notifier *n = req->ctx->notifier;
	fd_resp_release(&sr->resp);
	sr->park_asked = false;
	sr->park_gen = n ? fd_notifier_generation(n) : 0;
	if (req->runs == 0)
		sr->first_run_ms = mono_ms();
	req->route->handler(req, &sr->resp);
	req->runs++;
	if (sr->park_asked && !sr->resp.status && !sr->resp.stream_read) {
		pthread_mutex_lock(&srv->lock);
		bool stopping = atomic_load(&srv->stopping);
		if (!stopping) {
			sr->park_until_ms = mono_ms() + sr->park_ms;
			sr->park_next = srv->parked;
			srv->parked = sr;
			pthread_cond_signal(&srv->park_cond);
		}
		pthread_mutex_unlock(&srv->lock);
		if (!stopping)
			return; /* the parker hands it back */
		fd_problem(&sr->resp, req, 503, "shutting-down", "Shutting down", "the server is stopping; try again",
			   NULL);
		fd_resp_header(&sr->resp, "Retry-After", "1");
	}
	if (!sr->resp.status)
		fd_problem(&sr->resp, req, 500, "internal", "Internal server error", "handler gave no response", NULL);
	finish_run(sr);
}

bool fd_req_park(struct fd_req *req, unsigned wait_ms, unsigned slice_ms)
{
	struct server_req *sr = server_req_of(req);
	int64_t left = sr->first_run_ms + (int64_t)wait_ms - mono_ms();
	if (left <= 0 || req->wake == FD_WAKE_STOPPING || atomic_load(&req->server->stopping))
		return false;
	sr->park_asked = true;
	sr->park_ms = slice_ms && slice_ms < left ? slice_ms : (unsigned)left;
	return true;
}

/* Hand parked requests whose wake-up has come back to the workers (under srv->lock). */
static void unpark_due(struct fd_server *srv, uint64_t gen, bool have_notifier, int64_t now)
{
	bool stopping = atomic_load(&srv->stopping);
	for (struct server_req **pp = &srv->parked; *pp;) {
		struct server_req *sr = *pp;
		enum fd_wake why = stopping				  ? FD_WAKE_STOPPING
				   : have_notifier && gen != sr->park_gen ? FD_WAKE_NOTIFIED
				   : now >= sr->park_until_ms		  ? FD_WAKE_TIMEOUT
									  : FD_WAKE_NONE;
		if (why == FD_WAKE_NONE) {
			pp = &sr->park_next;
			continue;
		}
		*pp = sr->park_next;
		sr->park_next = NULL;
		sr->req.wake = why;
		if (!fd_workers_submit(srv->workers, &sr->job)) {
			fd_problem(&sr->resp, &sr->req, 503, "shutting-down", "Shutting down",
				   "the server is stopping; try again", NULL);
			fd_resp_header(&sr->resp, "Retry-After", "1");
			finish_run(sr);
		}
	}
}

/* The parker thread: wakes parked requests (see the header comment). */
static void *parker_main(void *arg)
{
	struct fd_server *srv = arg;
	struct fd_notifier *n = srv->ctx->notifier;
	pthread_mutex_lock(&srv->lock);
	while (!srv->parker_quit) {
		if (!srv->parked) {
			pthread_cond_wait(&srv->park_cond, &srv->lock);
			continue;
		}
		int64_t now = mono_ms(), until = now + 50; /* a new park's earlier deadline is met within 50 ms */
		for (struct server_req *sr = srv->parked; sr; sr = sr->park_next)
			if (sr->park_until_ms < until)
				until = sr->park_until_ms;
		unsigned wait = until > now ? (unsigned)(until - now) : 0;
		uint64_t gen = 0;
		if (n) {
			/* Wait past the oldest generation any parked request has seen. */
			uint64_t seen = UINT64_MAX;
			for (struct server_req *sr = srv->parked; sr; sr = sr->park_next)
				if (sr->park_gen < seen)
					seen = sr->park_gen;
			pthread_mutex_unlock(&srv->lock);
			gen = wait ? fd_notifier_wait(n, seen, wait) : fd_notifier_generation(n);
			pthread_mutex_lock(&srv->lock);
		} else if (wait) {
			struct timespec t;
			clock_gettime(CLOCK_REALTIME, &t);
			t.tv_nsec += (long)wait * 1000000L;
			t.tv_sec += t.tv_nsec / 1000000000L;
			t.tv_nsec %= 1000000000L;
			pthread_cond_timedwait(&srv->park_cond, &srv->lock, &t);
		}
		unpark_due(srv, gen, n != NULL, mono_ms());
	}
	/* quitting: nobody may stay parked */
	unpark_due(srv, 0, false, INT64_MAX);
	pthread_mutex_unlock(&srv->lock);
	return NULL;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct fd_server *srv = cls;
	struct server_req *sr = *con_cls;
	if (!sr)
		return;
	struct fd_req *req = &sr->req;
	if (!sr->started) {
		/* MHD answered it itself (say, 431 past its memory pool) or the client left before its headers. */
		req_free(req);
		*con_cls = NULL;
		return;
	}
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	double ms = (double)(now.tv_sec - req->start.tv_sec) * 1e3 + (double)(now.tv_nsec - req->start.tv_nsec) / 1e6;
	if (fd_log_enabled(FD_LOG_INFO)) {
		json_t *f = json_pack("{s:s, s:s, s:s, s:i, s:f, s:s}", "method", req->method, "path", req->path,
				      "route", req->route ? req->route->pattern : "", "status", (int)req->status,
				      "duration_ms", ms, "request_id", req->request_id);
		if (f && req->caller[0])
			json_object_set_new(f, "caller", json_string(req->caller));
		if (f && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
			json_object_set_new(f, "aborted", json_true());
		fd_log_fields(FD_LOG_INFO, "request", f);
	}
	bool slot = req->stream_slot;
	req_free(req);
	*con_cls = NULL;
	pthread_mutex_lock(&srv->lock);
	if (slot)
		srv->streams--;
	if (--srv->inflight == 0)
		pthread_cond_broadcast(&srv->idle);
	pthread_mutex_unlock(&srv->lock);
}

/*
 * MHD's URI log callback: called once per request with the request target
 * as sent, before it is split at '?' and percent-decoded.  Allocates the
 * request (its address becomes the request's context); on_completed frees
 * it, also when on_request never runs.
 */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct server_req *sr = calloc(1, sizeof *sr);
	if (sr && uri && !(sr->raw_uri = strdup(uri))) {
		free(sr);
		sr = NULL;
	}
	return sr;
}

/* Count connections; mark those past cfg->max_connections for a 503 (see on_request). */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct fd_server *srv = cls;
	pthread_mutex_lock(&srv->lock);
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		srv->conns++;
		*socket_context = srv->conns > srv->ctx->cfg->max_connections ? &over_limit_mark : NULL;
	} else if (srv->conns) {
		srv->conns--;
	}
	pthread_mutex_unlock(&srv->lock);
}

/* A whole PEM file as a NUL-terminated string (caller frees), or NULL with the reason logged. */
static char *read_pem(const char *path, const char *what)
{
	char *text = NULL;
	size_t n = 0;
	FILE *f = fopen(path, "r");
	if (!f) {
		fd_log(FD_LOG_ERROR, "cannot open %s %s: %s", what, path, strerror(errno));
		return NULL;
	}
	text = malloc(1024 * 1024 + 1);
	if (text) {
		n = fread(text, 1, 1024 * 1024 + 1, f);
		if (ferror(f) || n == 0 || n > 1024 * 1024) {
			fd_log(FD_LOG_ERROR, "cannot read %s %s (empty, unreadable or over 1 MiB)", what, path);
			free(text);
			text = NULL;
		} else {
			text[n] = '\0';
		}
	}
	fclose(f);
	return text;
}

static void free_secret(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
	free(s);
}

/* fmt is libmicrohttpd's own printf format for ap. */
__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[512];
	vsnprintf(msg, sizeof msg, fmt, ap);
	size_t n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	fd_log_fields(FD_LOG_WARN, "libmicrohttpd", json_pack("{s:s}", "detail", msg));
}

/* ---- lifecycle ---------------------------------------------------------- */

/*
 * Each connection is a file descriptor: raise the soft RLIMIT_NOFILE towards
 * what `conns` connections need (plus the pool, the notifier and files),
 * within the hard limit, and warn when the hard limit is short.
 */
static void raise_fd_limit(unsigned conns)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)conns + 256;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return;
	rlim_t to = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
	if (to > rl.rlim_cur) {
		rl.rlim_cur = to;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			to = 0;
	}
	if (to < want)
		fd_log_fields(FD_LOG_WARN, "the open-file limit is below what FACTD_MAX_CONNECTIONS needs",
			      json_pack("{s:I, s:I}", "needed", (json_int_t)want, "limit", (json_int_t)rl.rlim_cur));
}

/* Stop the parker, the hub and the workers (MHD has stopped, or never started). */
static void stop_threads(struct fd_server *srv)
{
	if (srv->parker_started) {
		pthread_mutex_lock(&srv->lock);
		srv->parker_quit = true;
		pthread_cond_broadcast(&srv->park_cond);
		pthread_mutex_unlock(&srv->lock);
		if (srv->ctx->notifier)
			fd_notifier_wake(srv->ctx->notifier);
		pthread_join(srv->parker, NULL);
		srv->parker_started = false;
	}
	fd_sse_hub_free(srv->hub);
	srv->hub = NULL;
	fd_workers_stop(srv->workers);
	srv->workers = NULL;
}

struct fd_workers *fd_server_workers(struct fd_server *srv)
{
	return srv->workers;
}

struct fd_sse_hub *fd_server_sse_hub(struct fd_server *srv)
{
	return srv->hub;
}

unsigned fd_server_parked(struct fd_server *srv)
{
	unsigned n = 0;
	pthread_mutex_lock(&srv->lock);
	for (struct server_req *sr = srv->parked; sr; sr = sr->park_next)
		n++;
	pthread_mutex_unlock(&srv->lock);
	return n;
}

enum fd_err fd_server_start(struct fd_ctx *ctx, struct fd_server **out)
{
	const struct fd_config *cfg = ctx->cfg;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	struct fd_server *srv = NULL;
	enum fd_err err = FD_ERR_IO;
	char port[8];
	snprintf(port, sizeof port, "%u", cfg->port);
	int gai = getaddrinfo(cfg->listen_host, port, &hints, &ai);
	if (gai != 0 || !ai) {
		fd_log(FD_LOG_ERROR, "cannot resolve listen address %s: %s", cfg->listen_host, gai_strerror(gai));
		err = FD_ERR_INVAL;
		goto done;
	}
	srv = calloc(1, sizeof *srv);
	if (!srv) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	srv->ctx = ctx;
	pthread_mutex_init(&srv->lock, NULL);
	pthread_cond_init(&srv->idle, NULL);
	pthread_cond_init(&srv->park_cond, NULL);
	if ((err = fd_workers_start(cfg->workers, &srv->workers)) != FD_OK ||
	    (err = fd_sse_hub_start(ctx, srv->workers, &srv->hub)) != FD_OK)
		goto done;
	if (pthread_create(&srv->parker, NULL, parker_main, srv) != 0) {
		err = FD_ERR_IO;
		goto done;
	}
	srv->parker_started = true;
	err = FD_ERR_IO;
	struct MHD_OptionItem tls_opts[3] = { { MHD_OPTION_END, 0, NULL } };
	if (cfg->tls_cert) {
		if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
			fd_log(FD_LOG_ERROR, "FACTD_TLS_CERT is set but this libmicrohttpd has no TLS support");
			err = FD_ERR_INVAL;
			goto done;
		}
		if (!(srv->tls_cert = read_pem(cfg->tls_cert, "FACTD_TLS_CERT")) ||
		    !(srv->tls_key = read_pem(cfg->tls_key, "FACTD_TLS_KEY"))) {
			err = FD_ERR_INVAL;
			goto done;
		}
		tls_opts[0] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0, srv->tls_cert };
		tls_opts[1] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0, srv->tls_key };
		tls_opts[2] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };
	}
	/*
	 * MHD refuses connections past its limit by closing them unanswered; keep
	 * it above ours so that the first few past cfg->max_connections are told
	 * 503 with Retry-After (on_connection marks them).
	 */
	unsigned mhd_limit = cfg->max_connections + cfg->max_connections / 8 + 8;
	raise_fd_limit(mhd_limit);
	/*
	 * Event-driven: epoll on MHD's polling threads, handlers on the workers
	 * (suspend and resume), no thread per connection.
	 */
	unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
			 MHD_USE_ERROR_LOG;
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	if (cfg->tls_cert)
		flags |= MHD_USE_TLS;
	srv->daemon = MHD_start_daemon(
		flags, 0, NULL, NULL, on_request, srv,
		MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,
		MHD_OPTION_SOCK_ADDR, ai->ai_addr,
		MHD_OPTION_THREAD_STACK_SIZE, (size_t)(256 * 1024),
		MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->http_threads ? cfg->http_threads : 1),
		MHD_OPTION_CONNECTION_LIMIT, mhd_limit,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->request_timeout_s,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MHD_POOL_BYTES,
		MHD_OPTION_URI_LOG_CALLBACK, on_uri, srv,
		MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
		MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
		MHD_OPTION_ARRAY, tls_opts,
		MHD_OPTION_END);
	if (!srv->daemon) {
		fd_log(FD_LOG_ERROR, "cannot listen on %s:%u%s", cfg->listen_host, cfg->port,
		       cfg->tls_cert ? " (or the TLS certificate and key do not load)" : "");
		goto done;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
	srv->port = info ? info->port : (uint16_t)cfg->port;
	*out = srv;
	srv = NULL;
	err = FD_OK;
done:
	if (srv) {
		stop_threads(srv);
		pthread_cond_destroy(&srv->park_cond);
		pthread_cond_destroy(&srv->idle);
		pthread_mutex_destroy(&srv->lock);
		free_secret(srv->tls_cert);
		free_secret(srv->tls_key);
		free(srv);
	}
	if (ai)
		freeaddrinfo(ai);
	return err;
}

uint16_t fd_server_port(const struct fd_server *srv)
{
	return srv->port;
}

bool fd_server_stopping(const struct fd_server *srv)
{
	return atomic_load(&srv->stopping);
}

void fd_server_stop(struct fd_server *srv, unsigned grace_ms)
{
	if (!srv)
		return;
	MHD_socket lsock = MHD_quiesce_daemon(srv->daemon);
	if (lsock != MHD_INVALID_SOCKET)
		close(lsock);
	atomic_store(&srv->stopping, true);
	fd_sse_hub_stopping(srv->hub);
	pthread_mutex_lock(&srv->lock);
	pthread_cond_broadcast(&srv->park_cond);
	pthread_mutex_unlock(&srv->lock);
	fd_notifier_wake(srv->ctx->notifier);
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += grace_ms / 1000;
	deadline.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	/*
	 * Wait for in-flight requests; then give connections accepted just before
	 * the quiesce a moment to deliver their request line, and wait again, so
	 * a request already on the wire is answered rather than cut off.
	 */
	unsigned left;
	for (int settle = 0;; settle++) {
		pthread_mutex_lock(&srv->lock);
		bool timed_out = false;
		while (srv->inflight > 0 && !timed_out)
			timed_out = pthread_cond_timedwait(&srv->idle, &srv->lock, &deadline) == ETIMEDOUT;
		left = srv->inflight;
		pthread_mutex_unlock(&srv->lock);
		if (left || timed_out || settle == 3)
			break;
		struct timespec pause = { .tv_sec = 0, .tv_nsec = 50 * 1000000L };
		nanosleep(&pause, NULL);
		pthread_mutex_lock(&srv->lock);
		bool idle = srv->inflight == 0;
		pthread_mutex_unlock(&srv->lock);
		if (idle && settle >= 1)
			break;
	}
	if (left)
		fd_log(FD_LOG_WARN, "stopping with %u requests still in flight", left);
	/*
	 * MHD must not stop with a connection suspended: let the parked requests
	 * go (answered as the server stops) and wait for every handler to return.
	 */
	pthread_mutex_lock(&srv->lock);
	srv->parker_quit = true;
	pthread_cond_broadcast(&srv->park_cond);
	pthread_mutex_unlock(&srv->lock);
	if (srv->ctx->notifier)
		fd_notifier_wake(srv->ctx->notifier);
	pthread_join(srv->parker, NULL);
	srv->parker_started = false;
	fd_workers_close(srv->workers);
	MHD_stop_daemon(srv->daemon);
	stop_threads(srv);
	pthread_cond_destroy(&srv->park_cond);
	pthread_cond_destroy(&srv->idle);
	pthread_mutex_destroy(&srv->lock);
	free_secret(srv->tls_cert);
	free_secret(srv->tls_key);
	free(srv);
}
