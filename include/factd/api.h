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
void fd_api_append(struct fd_req *req, struct fd_resp *resp);
void fd_api_read_stream(struct fd_req *req, struct fd_resp *resp);
void fd_api_read_feed(struct fd_req *req, struct fd_resp *resp);

#endif
