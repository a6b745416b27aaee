/*
 * test_router.c - path matching against the application's route table and
 * against small custom tables: literals, {param} captures, empty segments,
 * 405 with Allow, HEAD on GET routes and the path length limit.  No database.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "factd/router.h"

static void h_a(struct fd_req *req, struct fd_resp *resp) { (void)req; (void)resp; }
static void h_b(struct fd_req *req, struct fd_resp *resp) { (void)req; (void)resp; }
static void h_c(struct fd_req *req, struct fd_resp *resp) { (void)req; (void)resp; }

/* One match attempt with its outputs; params are freed by result_release. */
struct result {
	enum fd_match m;
	const struct fd_route *route;
	char *params[FD_ROUTE_MAX_PARAMS];
	size_t nparams;
	char allow[128];
};

static void match_in(const struct fd_route *routes, size_t n, const char *method, const char *path, struct result *r)
{
	memset(r, 0, sizeof *r);
	r->m = fd_router_match(routes, n, method, path, &r->route, r->params, &r->nparams, r->allow, sizeof r->allow);
}

static void match(const char *method, const char *path, struct result *r)
{
	match_in(fd_routes, fd_routes_count, method, path, r);
}

static void result_release(struct result *r)
{
	for (size_t i = 0; i < FD_ROUTE_MAX_PARAMS; i++)
		free(r->params[i]);
	memset(r, 0, sizeof *r);
}

static const struct fd_route *app_route(const char *method, const char *pattern)
{
	for (size_t i = 0; i < fd_routes_count; i++)
		if (strcmp(fd_routes[i].method, method) == 0 && strcmp(fd_routes[i].pattern, pattern) == 0)
			return &fd_routes[i];
	cr_assert_fail("no route %s %s in fd_routes", method, pattern);
	return NULL;
}

/* Is `method` one of the comma-separated entries of allow? */
static int allow_has(const char *allow, const char *method)
{
	size_t n = strlen(method);
	for (const char *p = allow; *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		size_t len = strcspn(p, ", ");
		if (len == n && strncmp(p, method, n) == 0)
			return 1;
		p += len;
	}
	return 0;
}

static int allow_count(const char *allow)
{
	int n = 0;
	for (const char *p = allow; *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		size_t len = strcspn(p, ", ");
		n += len > 0;
		p += len;
	}
	return n;
}

/* ---- the application's table ------------------------------------------ */

Test(router_app, literal_routes)
{
	struct result r;
	match("GET", "/healthz", &r);
	cr_assert_eq(r.m, FD_MATCH_OK);
	cr_assert_eq(r.route, app_route("GET", "/healthz"));
	cr_assert_eq(r.nparams, 0);
	result_release(&r);

	match("GET", "/readyz", &r);
	cr_assert_eq(r.m, FD_MATCH_OK);
	cr_assert_eq(r.route, app_route("GET", "/readyz"));
	result_release(&r);

	match("GET", "/events", &r);
	cr_assert_eq(r.m, FD_MATCH_OK);
	cr_assert_eq(r.route, app_route("GET", "/events"));
	cr_assert_eq(r.nparams, 0);
	result_release(&r);
}

Test(router_app, stream_parameter_captured_for_get_and_post)
{
	struct result r;
	match("GET", "/streams/order-1842/events", &r);
	cr_assert_eq(r.m, FD_MATCH_OK);
	cr_assert_eq(r.route, app_route("GET", "/streams/{stream}/events"));
	cr_assert_eq(r.nparams, 1);
	cr_assert_str_eq(r.params[0], "order-1842");
	cr_assert_null(r.params[1]);
	result_release(&r);

	match("POST", "/streams/a:b.c_d-e/events", &r);
	cr_assert_eq(r.m, FD_MATCH_OK);
	cr_assert_eq(r.route, app_route("POST", "/streams/{stream}/events"));
	cr_assert(r.route->json_body, "the append route must require a JSON body");
	cr_assert_eq(r.nparams, 1);
	cr_assert_str_eq(r.params[0], "a:b.c_d-e");
	result_release(&r);
}

Test(router_app, store_routes_json_body_flags)
{
	cr_assert(app_route("POST", "/streams/{stream}/events")->json_body);
	cr_assert_not(app_route("GET", "/streams/{stream}/events")->json_body);
	cr_assert_not(app_route("GET", "/events")->json_body);
	cr_assert_not(app_route("GET", "/healthz")->json_body);
	cr_assert_not(app_route("GET", "/readyz")->json_body);
	for (size_t i = 0; i < fd_routes_count; i++) {
		cr_assert_not_null(fd_routes[i].handler, "%s %s", fd_routes[i].method, fd_routes[i].pattern);
		cr_assert_eq(fd_routes[i].pattern[0], '/', "%s", fd_routes[i].pattern);
		/* No two rows share a method and pattern: the second could never match. */
		for (size_t j = i + 1; j < fd_routes_count; j++)
			cr_assert(strcmp(fd_routes[i].method, fd_routes[j].method) != 0 ||
					  strcmp(fd_routes[i].pattern, fd_routes[j].pattern) != 0,
				  "duplicate route %s %s", fd_routes[i].method, fd_routes[i].pattern);
	}
}

Test(router_app, unknown_paths_not_found)
{
	static const char *const paths[] = {
		"/", "/nope", "/healthzz", "/health", "/stream", "/streams/x/event",
		"/streams/x/events/1", "/events/1", "/Events", "/HEALTHZ", "healthz", "", "/streams/x/y/events",
	};
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		struct result r;
		match("GET", paths[i], &r);
		cr_assert_eq(r.m, FD_MATCH_NOT_FOUND, "path \"%s\"", paths[i]);
		cr_assert_null(r.route, "path \"%s\"", paths[i]);
		cr_assert_eq(r.nparams, 0);
		cr_assert_null(r.params[0]);
		result_release(&r);
	}
}

Test(router_app, null_path_not_found)
{
	struct result r;
	match("GET", NULL, &r);
	cr_assert_eq(r.m, FD_MATCH_NOT_FOUND);
	cr_assert_null(r.route);
	result_release(&r);
}

Test(router_app, empty_segment_trailing_and_double_slash_not_found)
{
	static const char *const paths[] = {
		"/streams//events",  /* empty parameter */
		"/healthz/",         /* trailing slash */
		"/events/",
		"/streams/x/events/",
		"//healthz",         /* double slash */
		"/streams//x/events",
		"/streams/x//events",
		"//streams/x/events",
		"/streams/x/events//",
	};
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		struct result r;
		match("GET", paths[i], &r);
		cr_assert_eq(r.m, FD_MATCH_NOT_FOUND, "path \"%s\" gave %d", paths[i], (int)r.m);
		cr_assert_null(r.route);
		cr_assert_null(r.params[0], "no parameter may leak from a failed match of \"%s\"", paths[i]);
		result_release(&r);
		match("POST", paths[i], &r);
		cr_assert_eq(r.m, FD_MATCH_NOT_FOUND, "POST \"%s\"", paths[i]);
		result_release(&r);
	}
}

Test(router_app, method_not_allowed_on_stream_lists_get_head_post)
{
	struct result r;
	match("DELETE", "/streams/x/events", &r);
	cr_assert_eq(r.m, FD_MATCH_METHOD);
	cr_assert_null(r.route);
	cr_assert_eq(r.nparams, 0);
	cr_assert_null(r.params[0]);
	cr_assert(allow_has(r.allow, "GET"), "allow: %s", r.allow);
	cr_assert(allow_has(r.allow, "HEAD"), "allow: %s", r.allow);
	cr_assert(allow_has(r.allow, "POST"), "allow: %s", r.allow);
	cr_assert_eq(allow_count(r.allow), 3, "allow: %s", r.allow);
	cr_assert(!allow_has(r.allow, "DELETE"));
	result_release(&r);
}

Test(router_app, method_not_allowed_on_feed_lists_get_head)
{
	static const char *const methods[] = { "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "get" };
	for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
		struct result r;
		match(methods[i], "/events", &r);
		cr_assert_eq(r.m, FD_MATCH_METHOD, "%s /events", methods[i]);
		cr_assert_str_eq(r.allow, "GET, HEAD", "%s /events", methods[i]);
		result_release(&r);
	}
}

Test(router_app, head_matches_get_routes)
{
	struct result r;
	match("HEAD", "/healthz", &r);
	cr_assert_eq(r.m, FD_MATCH_OK);
	cr_assert_eq(r.route, app_route("GET", "/healthz"));
	result_release(&r);

	match("HEAD", "/streams/s-1/events", &r);
	cr_assert_eq(r.m, FD_MATCH_OK);
	cr_assert_eq(r.route, app_route("GET", "/streams/{stream}/events"), "HEAD must pick the GET route, not POST");
	cr_assert_eq(r.nparams, 1);
	cr_assert_str_eq(r.params[0], "s-1");
	result_release(&r);
}

Test(router_app, overlong_path_not_found)
{
	/* "/streams/" + name + "/events": exactly 2048 bytes matches, 2049 does not. */
	size_t fixed = strlen("/streams/") + strlen("/events");
	char *path = malloc(4096);
	cr_assert_not_null(path);
	for (size_t total = 2047; total <= 2049; total++) {
		size_t name = total - fixed;
		memcpy(path, "/streams/", 9);
		memset(path + 9, 'a', name);
		strcpy(path + 9 + name, "/events");
		cr_assert_eq(strlen(path), total);
		struct result r;
		match("GET", path, &r);
		if (total <= 2048) {
			cr_assert_eq(r.m, FD_MATCH_OK, "a %zu-byte path must match", total);
			cr_assert_eq(strlen(r.params[0]), name);
		} else {
			cr_assert_eq(r.m, FD_MATCH_NOT_FOUND, "a %zu-byte path must not match", total);
			cr_assert_null(r.params[0]);
		}
		result_release(&r);
	}
	/* Far longer: also not a 405 for a known method mismatch. */
	char *huge = malloc(70000);
	cr_assert_not_null(huge);
	memcpy(huge, "/streams/", 9);
	memset(huge + 9, 'b', 65536);
	strcpy(huge + 9 + 65536, "/events");
	struct result r;
	match("DELETE", huge, &r);
	cr_assert_eq(r.m, FD_MATCH_NOT_FOUND);
	cr_assert_str_eq(r.allow, "");
	result_release(&r);
	free(huge);
	free(path);
}

/* ---- custom tables ------------------------------------------------------ */

static const struct fd_route custom[] = {
	{ .method = "GET", .pattern = "/a/{x}/b/{y}", .handler = h_a },
	{ .method = "PUT", .pattern = "/a/{x}/b/{y}", .handler = h_b },
	{ .method = "GET", .pattern = "/a/literal/b/{y}", .handler = h_c }, /* shadowed by the first row */
	{ .method = "POST", .pattern = "/p/{one}", .handler = h_c },
	{ .method = "GET", .pattern = "/four/{a}/{b}/{c}/{d}", .handler = h_a },
	{ .method = "GET", .pattern = "/five/{a}/{b}/{c}/{d}/{e}", .handler = h_b },
	{ .method = "DELETE", .pattern = "/x", .handler = h_a },
	{ .method = "PATCH", .pattern = "/x", .handler = h_b },
};
#define NCUSTOM (sizeof custom / sizeof custom[0])

Test(router_custom, two_parameters_captured_in_order)
{
	struct result r;
	match_in(custom, NCUSTOM, "GET", "/a/first/b/second", &r);
	cr_assert_eq(r.m, FD_MATCH_OK);
	cr_assert_eq(r.route, &custom[0]);
	cr_assert_eq(r.nparams, 2);
	cr_assert_str_eq(r.params[0], "first");
	cr_assert_str_eq(r.params[1], "second");
	result_release(&r);

	match_in(custom, NCUSTOM, "PUT", "/a/1/b/2", &r);
	cr_assert_eq(r.m, FD_MATCH_OK);
	cr_assert_eq(r.route, &custom[1]);
	cr_assert_eq(r.route->handler, h_b);
	cr_assert_str_eq(r.params[0], "1");
	cr_assert_str_eq(r.params[1], "2");
	result_release(&r);
}

Test(router_custom, first_matching_row_wins)
{
	struct result r;
	match_in(custom, NCUSTOM, "GET", "/a/literal/b/z", &r);
	cr_assert_eq(r.m, FD_MATCH_OK);
	cr_assert_eq(r.route, &custom[0]);
	cr_assert_str_eq(r.params[0], "literal");
	cr_assert_str_eq(r.params[1], "z");
	result_release(&r);
}

Test(router_custom, literal_segments_must_match_exactly)
{
	static const char *const paths[] = { "/a/1/c/2", "/a/1/bb/2", "/a/1/B/2", "/a/1/b", "/a/1/b/2/3", "/A/1/b/2" };
	for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
		struct result r;
		match_in(custom, NCUSTOM, "GET", paths[i], &r);
		cr_assert_eq(r.m, FD_MATCH_NOT_FOUND, "%s", paths[i]);
		cr_assert_null(r.params[0], "%s", paths[i]);
		cr_assert_null(r.params[1], "%s", paths[i]);
		result_release(&r);
	}
}

Test(router_custom, parameter_takes_any_non_empty_segment)
{
	struct result r;
	match_in(custom, NCUSTOM, "POST", "/p/%20;'\"", &r);
	cr_assert_eq(r.m, FD_MATCH_OK);
	cr_assert_str_eq(r.params[0], "%20;'\"");
	result_release(&r);

	match_in(custom, NCUSTOM, "POST", "/p/", &r);
	cr_assert_eq(r.m, FD_MATCH_NOT_FOUND);
	result_release(&r);
}

Test(router_custom, four_parameters_is_the_maximum)
{
	struct result r;
	match_in(custom, NCUSTOM, "GET", "/four/1/2/3/4", &r);
	cr_assert_eq(r.m, FD_MATCH_OK);
	cr_assert_eq(r.nparams, 4);
	cr_assert_str_eq(r.params[0], "1");
	cr_assert_str_eq(r.params[3], "4");
	result_release(&r);

	match_in(custom, NCUSTOM, "GET", "/five/1/2/3/4/5", &r);
	cr_assert_eq(r.m, FD_MATCH_NOT_FOUND, "a fifth parameter does not fit FD_ROUTE_MAX_PARAMS");
	cr_assert_eq(r.nparams, 0);
	for (size_t i = 0; i < FD_ROUTE_MAX_PARAMS; i++)
		cr_assert_null(r.params[i]);
	result_release(&r);
}

Test(router_custom, allow_lists_every_method_of_the_path_once)
{
	struct result r;
	match_in(custom, NCUSTOM, "POST", "/a/1/b/2", &r);
	cr_assert_eq(r.m, FD_MATCH_METHOD);
	cr_assert_str_eq(r.allow, "GET, HEAD, PUT");
	result_release(&r);

	match_in(custom, NCUSTOM, "GET", "/x", &r);
	cr_assert_eq(r.m, FD_MATCH_METHOD);
	cr_assert_str_eq(r.allow, "DELETE, PATCH", "no GET route: HEAD must not be offered");
	result_release(&r);

	match_in(custom, NCUSTOM, "HEAD", "/p/1", &r);
	cr_assert_eq(r.m, FD_MATCH_METHOD, "HEAD must not match a POST-only path");
	cr_assert_str_eq(r.allow, "POST");
	result_release(&r);
}

Test(router_custom, allow_truncation_stays_terminated)
{
	const struct fd_route *route = NULL;
	char *params[FD_ROUTE_MAX_PARAMS] = { 0 };
	size_t np = 99;
	char allow[8];
	memset(allow, 'X', sizeof allow);
	enum fd_match m = fd_router_match(custom, NCUSTOM, "POST", "/a/1/b/2", &route, params, &np, allow, sizeof allow);
	cr_assert_eq(m, FD_MATCH_METHOD);
	cr_assert_eq(np, 0);
	cr_assert_not_null(memchr(allow, '\0', sizeof allow), "allow must stay NUL-terminated within its size");
	cr_assert(strcmp(allow, "GET") == 0 || strcmp(allow, "") == 0, "allow \"%s\" overflowed or is garbled", allow);
}

Test(router_custom, empty_table)
{
	struct result r;
	match_in(custom, 0, "GET", "/x", &r);
	cr_assert_eq(r.m, FD_MATCH_NOT_FOUND);
	cr_assert_null(r.route);
	result_release(&r);
}
