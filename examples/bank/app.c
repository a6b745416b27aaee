/* app.c - the bank app's definition: its aggregate types, routes, saga, read model and migrations. */
#include "bank.h"

static const struct fd_aggregate_type *const aggregates[] = { &bank_account_type, &bank_transfer_type };
static const struct fd_saga_type *const sagas[] = { &bank_transfer_saga };
static const struct fd_projection *const projections[] = { &bank_account_summaries };

const struct fd_app bank_app = {
	.name = "bank",
	.version = "1.0.0",
	.aggregates = aggregates,
	.naggregates = FD_COUNT(aggregates),
	.routes = bank_routes,
	.sagas = sagas,
	.nsagas = FD_COUNT(sagas),
	.projections = projections,
	.nprojections = FD_COUNT(projections),
	.migrations = &bank_migrations,
};
