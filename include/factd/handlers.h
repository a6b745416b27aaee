/*
 * handlers.h - what an app's route table and handlers use: the framework's
 * generic handlers for an app's aggregates (commands, state, history, the
 * aggregate's saga), the row data they take, and helpers for an app's own
 * handlers (command metadata and answers, list parameters, problem+json).
 *
 * A route row names one of these handlers and its row data:
 *
 *     { .method = "POST", .pattern = "/orders/{id}/lines", .handler = fd_api_command,
 *       .json_body = true, .arg = FD_COMMAND(fd_order_type, "add_line") },
 *
 * Threading: handlers run on libmicrohttpd's worker threads; everything here
 * is thread-safe.
 */
#ifndef FACTD_HANDLERS_H
#define FACTD_HANDLERS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "factd/aggregate.h"
#include "factd/error.h"
#include "factd/http.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A command route's row data (struct fd_route.arg of fd_api_command). */
struct fd_aggregate_type;
struct fd_command_route {
	const struct fd_aggregate_type *type;
	const char *command;
	bool creates;            /* POST to the collection: id from the body or made here; 201 */
	const char *param_field; /* payload field filled from the second path parameter */
	/*
	 * The success status; 0: 201 when creates, else 200.  202 for a command
	 * that starts work finishing later (a saga), whose outcome is read elsewhere.
	 */
	unsigned status;
	/*
	 * Complete the payload (an object) from the app's settings before the
	 * command is decided, e.g. a default the request left out; services is
	 * the app's services object (may be NULL).  NULL: the payload as sent.
	 * FD_ERR_NOMEM is answered 500; nothing else should be returned.
	 */
	enum fd_err (*complete)(json_t *payload, const void *services);
};

/* A command route's row data, in an app's route table: FD_COMMAND(fd_order_type, "add_line"). */
#define FD_COMMAND(agg, name, ...) (&(const struct fd_command_route){ .type = &(agg), .command = (name), __VA_ARGS__ })

/* Run the route's command on the aggregate named by the first path parameter. */
void fd_api_command(struct fd_req *req, struct fd_resp *resp);
/* GET an aggregate's state (route arg: its type), latest or ?version= / ?at=. */
void fd_api_get_aggregate(struct fd_req *req, struct fd_resp *resp);
/* GET an aggregate's events (route arg: its type). */
void fd_api_aggregate_events(struct fd_req *req, struct fd_resp *resp);

/* An aggregate's saga route's row data (struct fd_route.arg of fd_api_aggregate_saga). */
struct fd_aggregate_saga_route {
	const struct fd_aggregate_type *type;  /* whose id is the first path parameter */
	const char *saga;                      /* the saga type correlated by that id */
	const char *missing;                   /* the 404's detail when the aggregate has none */
};
/* GET /<aggregate>/{id}/saga: the saga of the route's type whose correlation key is the id. */
void fd_api_aggregate_saga(struct fd_req *req, struct fd_resp *resp);

/* Helpers for an app's command handlers (api_domain.c). */
struct fd_cmd_meta;
struct fd_cmd_result;
/* The id as factd stores it (UUIDs in lower-case canonical form) into out.  False when invalid for t. */
bool fd_api_canonical_id(const struct fd_aggregate_type *t, const char *given, char *out, size_t len);
/* An If-Match header's version ("\"N\"" or N) into *out; false when it is not one. */
bool fd_api_if_match(const char *header, int64_t *out);
/* ETag: "<version>". */
void fd_api_set_etag(struct fd_resp *resp, int64_t version);
/* The request's metadata for a command: request, correlation and causation ids, caller (borrowed from req). */
void fd_api_cmd_meta(const struct fd_req *req, struct fd_cmd_meta *meta);
/* Answer a command bus error (fd_bus_send's contract) on aggregate type t with its problem. */
void fd_api_command_problem(struct fd_req *req, struct fd_resp *resp, const struct fd_aggregate_type *t,
			    enum fd_err err, const struct fd_cmd_result *r);

/*
 * Helpers for an app's list endpoints, which read its projections' tables
 * (api_query.c).  Each returns false after answering a problem.
 */
/* 400 invalid-parameter naming the parameter. */
void fd_api_bad_param(struct fd_resp *resp, const struct fd_req *req, const char *name, const char *detail);
/* ?limit=: 1..FACTD_MAX_READ_LIMIT, default 100 (capped). */
bool fd_api_list_limit(struct fd_req *req, struct fd_resp *resp, unsigned *out);
/*
 * ?min_position=<cursor>: wait (up to FACTD_MIN_POSITION_WAIT_MS) until
 * `projection` has applied the feed up to it; 503 projection-behind with
 * Retry-After when the wait runs out.  True at once without the parameter.
 * The wait runs on the request's read pool (fd_req_read_pool, chosen here
 * with the position as its need): query the list with that pool too.
 */
bool fd_api_list_min_position(struct fd_req *req, struct fd_resp *resp, const char *projection);
/* 200 with json (owned, already a JSON document), or the problem of err. */
void fd_api_list_answer(struct fd_req *req, struct fd_resp *resp, enum fd_err err, char *json);
/* ---- problem+json (RFC 9457) ---------------------------------------------- */

#define FD_PROBLEM_BASE "https://factd.dev/problems/"

/*
 * Fill `resp` with a problem document.  `slug` names the type
 * (FD_PROBLEM_BASE + slug), `detail` may be NULL, `extra` (may be NULL, its
 * reference is stolen) adds extension members such as "field".
 */
void fd_problem(struct fd_resp *resp, const struct fd_req *req, unsigned status, const char *slug,
		const char *title, const char *detail, json_t *extra);

/* A problem for an error enum, using the table: status, slug and title. */
void fd_problem_err(struct fd_resp *resp, const struct fd_req *req, enum fd_err err, const char *detail,
		    json_t *extra);

#ifdef __cplusplus
}
#endif

#endif
