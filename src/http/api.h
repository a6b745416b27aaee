/*
 * api.h - the framework's own HTTP handlers, one per route (what an app's
 * route table uses is in factd/handlers.h).  Each parses and validates its
 * input, calls the store, and fills the response; none writes to the
 * database except through the store's functions.
 */
#ifndef FACTD_API_H
#define FACTD_API_H

#include "factd/events.h"
#include "factd/handlers.h"
#include "factd/http.h"
#include "http/input.h"

void fd_api_healthz(struct fd_req *req, struct fd_resp *resp);
void fd_api_readyz(struct fd_req *req, struct fd_resp *resp);
/* GET /metrics: the registry in the Prometheus text format, pool gauges read now. */
void fd_api_metrics(struct fd_req *req, struct fd_resp *resp);
void fd_api_append(struct fd_req *req, struct fd_resp *resp);
void fd_api_read_stream(struct fd_req *req, struct fd_resp *resp);
void fd_api_read_feed(struct fd_req *req, struct fd_resp *resp);
/* GET /events/stream: the feed as Server-Sent Events, caught up from the log and then live (api_sse.c). */
void fd_api_event_stream(struct fd_req *req, struct fd_resp *resp);

/* The feed filter of ?category= and ?types= (GET /events and GET /events/stream). */
#define FD_API_MAX_TYPES FD_INPUT_MAX_TYPES
struct fd_api_feed_filter {
	struct fd_feed_filter filter;           /* points into the members below */
	const char *types[FD_API_MAX_TYPES];
	char *category;                         /* owned copy, NULL when absent */
	char *types_copy;                       /* owned, split in place */
};
/*
 * Parse the request's ?category= and ?types= into f (which owns copies, so it
 * may outlive the request; f->filter points into f, so f must not move).
 * False: a 400 problem is in resp.  Release with fd_api_feed_filter_release
 * in either case.
 */
bool fd_api_feed_filter_parse(struct fd_req *req, struct fd_resp *resp, struct fd_api_feed_filter *f);
void fd_api_feed_filter_release(struct fd_api_feed_filter *f);

/* Answer a stream read of `stream` with ?from_version= and ?limit= (shared by aggregate history). */
void fd_api_stream_page(struct fd_req *req, struct fd_resp *resp, const char *stream);

/* GET /schema/events: the app's event types, their versions and upcasters (api_schema.c). */
void fd_api_schema_events(struct fd_req *req, struct fd_resp *resp);
/*
 * ?upcast=true: true in *out; absent or false: false.  False (a 400 problem
 * answered) for any other value.
 */
bool fd_api_upcast_param(struct fd_req *req, struct fd_resp *resp, bool *out);
/*
 * A JSON array of events as the store renders them, with every event of an
 * app's category upcast to the current version of its type (type, data
 * and metadata's schema_version); others keep their bytes.  *out: the new
 * text (caller frees).  FD_ERR_SCHEMA for an event newer than the code,
 * FD_ERR_INTERNAL (logged) for one that does not upcast.
 */
FD_MUST_USE enum fd_err fd_api_upcast_events(const struct fd_ctx *ctx, const char *events_json, char **out);
/*
 * f's types and the names their events were stored under before renames,
 * in every schema (or the filter's category's), into *out (caller frees;
 * f->types then points into it).  False when out of memory.
 */
bool fd_api_widen_types(const struct fd_schemas *set, struct fd_feed_filter *f, const char ***out);

/* GET /projections: each projection's checkpoint, lag and status. */
void fd_api_projections(struct fd_req *req, struct fd_resp *resp);
/* POST /projections/{name}/rebuild: 202 once the rebuild is requested. */
void fd_api_rebuild_projection(struct fd_req *req, struct fd_resp *resp);

/* Data lifecycle (api_lifecycle.c): stream deletion and truncation, retention policies; admin only. */
void fd_api_delete_stream(struct fd_req *req, struct fd_resp *resp);
void fd_api_truncate_stream(struct fd_req *req, struct fd_resp *resp);
void fd_api_list_retention(struct fd_req *req, struct fd_resp *resp);
void fd_api_get_retention(struct fd_req *req, struct fd_resp *resp);
void fd_api_put_retention(struct fd_req *req, struct fd_resp *resp);
void fd_api_delete_retention(struct fd_req *req, struct fd_resp *resp);

/* Sagas (api_saga.c): list, show, operator retry and abort. */
void fd_api_list_sagas(struct fd_req *req, struct fd_resp *resp);
void fd_api_get_saga(struct fd_req *req, struct fd_resp *resp);
void fd_api_retry_saga(struct fd_req *req, struct fd_resp *resp);
void fd_api_abort_saga(struct fd_req *req, struct fd_resp *resp);

/* What the store holds (api_catalog.c): GET /streams, GET /categories, GET /events/head. */
void fd_api_list_streams(struct fd_req *req, struct fd_resp *resp);
void fd_api_categories(struct fd_req *req, struct fd_resp *resp);
void fd_api_feed_head(struct fd_req *req, struct fd_resp *resp);

/* api_subjects.c: data subjects and their erasure */
void fd_api_get_subject(struct fd_req *req, struct fd_resp *resp);
void fd_api_erase_subject(struct fd_req *req, struct fd_resp *resp);

/* The operator console (api_console.c): its files, GET /whoami, GET /app. */
void fd_api_console_asset(struct fd_req *req, struct fd_resp *resp);
void fd_api_whoami(struct fd_req *req, struct fd_resp *resp);
void fd_api_app(struct fd_req *req, struct fd_resp *resp);


/* Consumer groups (api_groups.c): define, list, delete, pull, ack, nack, parked, replay. */
void fd_api_put_group(struct fd_req *req, struct fd_resp *resp);
void fd_api_list_groups(struct fd_req *req, struct fd_resp *resp);
void fd_api_get_group(struct fd_req *req, struct fd_resp *resp);
void fd_api_delete_group(struct fd_req *req, struct fd_resp *resp);
void fd_api_group_pull(struct fd_req *req, struct fd_resp *resp);
void fd_api_group_ack(struct fd_req *req, struct fd_resp *resp);
void fd_api_group_nack(struct fd_req *req, struct fd_resp *resp);
void fd_api_group_parked(struct fd_req *req, struct fd_resp *resp);
void fd_api_group_replay(struct fd_req *req, struct fd_resp *resp);

/* The consumer groups' and webhooks' gauges and counters for GET /metrics, read from the database. */
void fd_api_integ_metrics(struct fd_pool *pool, struct fd_buf *out);

/* Webhooks (api_webhooks.c): define, list, show, delete, resume. */
void fd_api_put_webhook(struct fd_req *req, struct fd_resp *resp);
void fd_api_list_webhooks(struct fd_req *req, struct fd_resp *resp);
void fd_api_get_webhook(struct fd_req *req, struct fd_resp *resp);
void fd_api_delete_webhook(struct fd_req *req, struct fd_resp *resp);
void fd_api_resume_webhook(struct fd_req *req, struct fd_resp *resp);

#endif
