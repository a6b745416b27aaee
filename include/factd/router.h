/*
 * router.h - the static route table and path matching.
 *
 * Patterns are literal segments and {name} parameters ("/streams/{stream}/events").
 * A parameter matches one non-empty segment.  Pure functions; thread-safe.
 */
#ifndef FACTD_ROUTER_H
#define FACTD_ROUTER_H

#include <stddef.h>
#include "factd/auth.h"
#include "factd/http.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fd_route {
	const char *method;      /* "GET", "POST", ... */
	const char *pattern;     /* also the route label in logs and metrics */
	fd_handler_fn handler;
	bool json_body;          /* requires Content-Type: application/json */
	const void *arg;         /* handler-specific row data (e.g. which command), borrowed */
	/*
	 * The API-key role a request needs (when keys are configured).  Left
	 * unset (FD_ROLE_DEFAULT) it follows the method: GET needs read, other
	 * methods write.  FD_ROLE_ADMIN for operations on the service itself
	 * (rebuilds, saga retry/abort), FD_ROLE_OPEN for probes without a key.
	 */
	enum fd_role role;
};

enum fd_match {
	FD_MATCH_OK,
	FD_MATCH_NOT_FOUND,
	FD_MATCH_METHOD,  /* the path exists, the method does not: see allow */
};

/*
 * Match method+path against `routes`.  On FD_MATCH_OK *route is set and the
 * parameters are written to params (each a malloc'd copy; caller frees) with
 * their count in *nparams.  On FD_MATCH_METHOD, `allow` receives the
 * comma-separated methods the path supports.  HEAD matches GET routes.
 * A path with an empty segment, or longer than 2048 bytes, never matches.
 */
enum fd_match fd_router_match(const struct fd_route *routes, size_t nroutes, const char *method,
			      const char *path, const struct fd_route **route,
			      char *params[FD_ROUTE_MAX_PARAMS], size_t *nparams, char *allow,
			      size_t allow_len);

/*
 * The methods that `path` supports in `routes` (as for FD_MATCH_METHOD's
 * allow: "GET, HEAD, POST"), written to allow; false when no route has it.
 */
bool fd_router_methods(const struct fd_route *routes, size_t nroutes, const char *path, char *allow,
		       size_t allow_len);

/* The framework's own routes (src/http/routes.c); a server serves ctx->routes (these, then the app's). */
extern const struct fd_route fd_routes[];
extern const size_t fd_routes_count;

#ifdef __cplusplus
}
#endif

#endif
