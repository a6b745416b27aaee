/*
 * live.h - what the server and the live feed (api_sse.c) share beyond the
 * public http.h: the worker pool and the event-stream hub.
 *
 * The hub is one thread per server that follows the global feed for every
 * open GET /events/stream at once: it reads each new page once, keeps the
 * recent events as ready-made frames in a bounded ring, and resumes the
 * suspended streams, whose content readers copy the frames their filter
 * wants (on libmicrohttpd's polling thread, never touching the database).
 * A stream behind the ring catches up with feed reads of its own, run on
 * the worker pool.
 */
#ifndef FACTD_HTTP_LIVE_H
#define FACTD_HTTP_LIVE_H

#include "factd/http.h"
#include "http/workers.h"

struct fd_sse_hub;

/* The server's worker pool and hub (borrowed; they live as long as the server). */
struct fd_workers *fd_server_workers(struct fd_server *srv);
struct fd_sse_hub *fd_server_sse_hub(struct fd_server *srv);
/* Requests parked now (fd_req_park), for tests and metrics. */
unsigned fd_server_parked(struct fd_server *srv);

/* Start the hub's thread for ctx (borrowed).  Caller owns *out. */
FD_MUST_USE enum fd_err fd_sse_hub_start(struct fd_ctx *ctx, struct fd_workers *workers, struct fd_sse_hub **out);
/*
 * The server is stopping: every stream ends at its next read; suspended
 * ones are resumed now so that they can.
 */
void fd_sse_hub_stopping(struct fd_sse_hub *hub);
/* Join the thread and free; no stream may be open any more.  NULL is a no-op. */
void fd_sse_hub_free(struct fd_sse_hub *hub);
/* Open streams (for tests and metrics). */
size_t fd_sse_hub_streams(struct fd_sse_hub *hub);

#endif
