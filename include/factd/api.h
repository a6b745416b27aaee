/*
 * api.h - HTTP handlers, one per route.  Each parses and validates its input,
 * calls the store, and fills the response; none writes to the database except
 * through the store's functions.
 */
#ifndef FACTD_API_H
#define FACTD_API_H

#include "factd/http.h"

void fd_api_healthz(struct fd_req *req, struct fd_resp *resp);
void fd_api_readyz(struct fd_req *req, struct fd_resp *resp);
/* GET /metrics: the registry in the Prometheus text format, pool gauges read now. */
void fd_api_metrics(struct fd_req *req, struct fd_resp *resp);
void fd_api_append(struct fd_req *req, struct fd_resp *resp);
void fd_api_read_stream(struct fd_req *req, struct fd_resp *resp);
void fd_api_read_feed(struct fd_req *req, struct fd_resp *resp);

/* Answer a stream read of `stream` with ?from_version= and ?limit= (shared by aggregate history). */
void fd_api_stream_page(struct fd_req *req, struct fd_resp *resp, const char *stream);

/* A command route's row data (struct fd_route.arg of fd_api_command). */
struct fd_aggregate_type;
struct fd_command_route {
	const struct fd_aggregate_type *type;
	const char *command;
	bool creates;            /* POST to the collection: id from the body or made here; 201 */
	const char *param_field; /* payload field filled from the second path parameter */
};

/* Run the route's command on the aggregate named by the first path parameter. */
void fd_api_command(struct fd_req *req, struct fd_resp *resp);
/* GET an aggregate's state (route arg: its type), latest or ?version= / ?at=. */
void fd_api_get_aggregate(struct fd_req *req, struct fd_resp *resp);
/* GET an aggregate's events (route arg: its type). */
void fd_api_aggregate_events(struct fd_req *req, struct fd_resp *resp);
/* POST /payments/{id}/process: ask the gateway once about a pending payment and record the answer. */
void fd_api_process_payment(struct fd_req *req, struct fd_resp *resp);

#endif
