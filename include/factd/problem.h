/*
 * problem.h - RFC 9457 problem+json responses and the one table mapping
 * enum fd_err to an HTTP status and problem type.
 */
#ifndef FACTD_PROBLEM_H
#define FACTD_PROBLEM_H

#include <jansson.h>
#include "factd/error.h"
#include "factd/http.h"

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

/* The status the table gives an error. */
unsigned fd_problem_status(enum fd_err err);

#endif
