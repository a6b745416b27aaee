/*
 * router.c - match a method and path against a static route table.
 * Pure; thread-safe.
 */
#include "factd/router.h"

#include <stdlib.h>
#include <string.h>

#define MAX_PATH 2048

/* Compare the next segment of pattern and path; capture {param} segments. */
static bool match_path(const char *pattern, const char *path, char *params[], size_t *nparams)
{
	size_t n = 0;
	const char *p = pattern, *s = path;
	bool ok = false;
	while (*p == '/' && *s == '/') {
		p++;
		s++;
		const char *pe = strchr(p, '/'), *se = strchr(s, '/');
		size_t plen = pe ? (size_t)(pe - p) : strlen(p);
		size_t slen = se ? (size_t)(se - s) : strlen(s);
		if (slen == 0)
			goto done;
		if (plen >= 2 && p[0] == '{' && p[plen - 1] == '}') {
			if (n >= FD_ROUTE_MAX_PARAMS)
				goto done;
			if (params) {
				params[n] = strndup(s, slen);
				if (!params[n])
					goto done;
			}
			n++;
		} else if (plen != slen || memcmp(p, s, plen) != 0) {
			goto done;
		}
		p += plen;
		s += slen;
	}
	ok = *p == '\0' && *s == '\0';
done:
	if (!ok && params)
		for (size_t i = 0; i < n; i++) {
			free(params[i]);
			params[i] = NULL;
		}
	if (ok)
		*nparams = n;
	return ok;
}

static bool method_matches(const char *route_method, const char *method)
{
	return strcmp(route_method, method) == 0 ||
	       (strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0);
}

enum fd_match fd_router_match(const struct fd_route *routes, size_t nroutes, const char *method,
			      const char *path, const struct fd_route **route,
			      char *params[FD_ROUTE_MAX_PARAMS], size_t *nparams, char *allow,
			      size_t allow_len)
{
	*route = NULL;
	*nparams = 0;
	if (allow_len)
		allow[0] = '\0';
	if (!path || path[0] != '/' || strlen(path) > MAX_PATH)
		return FD_MATCH_NOT_FOUND;
	bool path_known = false;
	for (size_t i = 0; i < nroutes; i++) {
		size_t np = 0;
		if (!match_path(routes[i].pattern, path, NULL, &np))
			continue;
		if (method_matches(routes[i].method, method)) {
			if (!match_path(routes[i].pattern, path, params, nparams))
				return FD_MATCH_NOT_FOUND; /* out of memory copying parameters */
			*route = &routes[i];
			return FD_MATCH_OK;
		}
		path_known = true;
		size_t used = strlen(allow);
		if (!strstr(allow, routes[i].method) && used + strlen(routes[i].method) + 3 < allow_len) {
			snprintf(allow + used, allow_len - used, "%s%s", used ? ", " : "", routes[i].method);
			if (strcmp(routes[i].method, "GET") == 0 && used + 12 < allow_len)
				strcat(allow, ", HEAD");
		}
	}
	return path_known ? FD_MATCH_METHOD : FD_MATCH_NOT_FOUND;
}

bool fd_router_methods(const struct fd_route *routes, size_t nroutes, const char *path, char *allow,
		       size_t allow_len)
{
	const struct fd_route *route = NULL;
	char *params[FD_ROUTE_MAX_PARAMS];
	size_t nparams = 0;
	/* No route has this method, so a known path yields FD_MATCH_METHOD and its list. */
	enum fd_match m = fd_router_match(routes, nroutes, " ", path, &route, params, &nparams, allow, allow_len);
	return m == FD_MATCH_METHOD;
}
