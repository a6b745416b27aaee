/*
 * problem.h - RFC 9457 problem+json responses and the one table mapping
 * enum fd_err to an HTTP status and problem type.
 */
#ifndef FACTD_PROBLEM_H
#define FACTD_PROBLEM_H

#include <jansson.h>
#include "factd/error.h"
#include "factd/handlers.h"
#include "factd/http.h"

/* The status the table gives an error. */
unsigned fd_problem_status(enum fd_err err);

#endif
