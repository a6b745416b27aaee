/*
 * fuzz_router.c - request paths through fd_router_match over the real route
 * table (src/http/routes.c).
 *
 * Input: one byte choosing the method, one byte the size of the Allow
 * buffer (1-64; the server passes 64), then the path.  Properties: a match
 * captures exactly the pattern's parameters, each a non-empty segment
 * without '/'; a 405 names only methods of the table in an Allow that fits
 * its buffer; nothing leaks (params are freed here as the server does).
 */
#include <stdlib.h>

#include "factd/router.h"
#include "shop.h"
#include "fuzz_common.h"

static const char *const methods[] = { "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
				       "get", "" };

static size_t count_params(const char *pattern)
{
	size_t n = 0;
	for (const char *p = pattern; *p; p++)
		n += *p == '{';
	return n;
}

/* The table the shop's server serves: the framework's routes, then the shop's. */
static struct fd_ctx served;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	if (fd_ctx_init(&served, &shop_app) != FD_OK)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	const char *method = methods[data[0] % (sizeof methods / sizeof methods[0])];
	size_t allow_len = (size_t)(data[1] % 64) + 1;
	char *path = fuzz_cstr(data + 2, size - 2);
	char *allow = malloc(allow_len); /* exact size, so an overflow is caught */
	if (!path || !allow)
		goto done;
	const struct fd_route *route = (const void *)1;
	char *params[FD_ROUTE_MAX_PARAMS] = { 0 };
	size_t nparams = 99;
	enum fd_match m = fd_router_match(served.routes, served.nroutes, method, path, &route, params, &nparams, allow,
					  allow_len);
	switch (m) {
	case FD_MATCH_OK:
		FUZZ_CHECK(route != NULL && nparams == count_params(route->pattern));
		for (size_t i = 0; i < nparams; i++) {
			FUZZ_CHECK(params[i] && params[i][0] && !strchr(params[i], '/'));
			free(params[i]);
		}
		break;
	case FD_MATCH_METHOD:
		FUZZ_CHECK(route == NULL && nparams == 0);
		FUZZ_CHECK(memchr(allow, '\0', allow_len) != NULL);
		break;
	case FD_MATCH_NOT_FOUND:
		FUZZ_CHECK(route == NULL && nparams == 0);
		break;
	default:
		FUZZ_CHECK(!"unknown match result");
	}
	for (size_t i = 0; i < FD_ROUTE_MAX_PARAMS; i++)
		FUZZ_CHECK(m == FD_MATCH_OK || params[i] == NULL);
done:
	free(allow);
	free(path);
	return 0;
}
