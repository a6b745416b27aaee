/*
 * app.c - the library app's definition: its routes (served after the
 * framework's own) and the one value that names everything it adds.
 */
#include "library.h"

#include <factd/handlers.h>
#include <factd/router.h>

static const struct fd_route routes[] = {
	{ .method = "POST", .pattern = "/books", .handler = fd_api_command, .json_body = true,
	  .arg = FD_COMMAND(book_type, "add", .creates = true) },
	{ .method = "GET", .pattern = "/books", .handler = library_list_books },
	{ .method = "GET", .pattern = "/books/{id}", .handler = fd_api_get_aggregate, .arg = &book_type },
	{ .method = "GET", .pattern = "/books/{id}/events", .handler = fd_api_aggregate_events, .arg = &book_type },
	{ .method = "POST", .pattern = "/books/{id}/lend", .handler = fd_api_command, .json_body = true,
	  .arg = FD_COMMAND(book_type, "lend") },
	{ .method = "POST", .pattern = "/books/{id}/return", .handler = fd_api_command,
	  .arg = FD_COMMAND(book_type, "return") },
};

static const struct fd_aggregate_type *const aggregates[] = { &book_type };
static const struct fd_projection *const projections[] = { &shelf_projection };
static const struct fd_saga_type *const sagas[] = { &loan_receipt_saga };

const struct fd_app library_app = {
	.name = "library",
	.version = "1.0.0",
	.aggregates = aggregates,
	.naggregates = FD_COUNT(aggregates),
	.routes = routes,
	.nroutes = FD_COUNT(routes),
	.projections = projections,
	.nprojections = FD_COUNT(projections),
	.sagas = sagas,
	.nsagas = FD_COUNT(sagas),
	.migrations = &library_migrations,
	.services = &mailroom_services,
};
