/*
 * app.c - lookups in an app's definition.  Pure; thread-safe.
 */
#include "factd/app.h"

#include <string.h>

const struct fd_aggregate_type *fd_app_aggregate(const struct fd_app *app, const char *name)
{
	for (size_t i = 0; app && name && i < app->naggregates; i++)
		if (strcmp(app->aggregates[i]->name, name) == 0)
			return app->aggregates[i];
	return NULL;
}

const struct fd_saga_type *fd_app_saga(const struct fd_app *app, const char *name)
{
	struct fd_saga_set set = { app ? app->sagas : NULL, app ? app->nsagas : 0 };
	return fd_saga_set_find(&set, name);
}

const struct fd_projection *fd_app_projection(const struct fd_app *app, const char *name)
{
	struct fd_projection_set set = { app ? app->projections : NULL, app ? app->nprojections : 0 };
	return fd_projection_set_find(&set, name);
}

const struct fd_aggregate_type *fd_app_aggregate_of_stream(const struct fd_app *app, const char *stream,
							   const char **id)
{
	for (size_t i = 0; app && stream && i < app->naggregates; i++) {
		const struct fd_aggregate_type *t = app->aggregates[i];
		size_t n = strlen(t->category);
		if (strncmp(stream, t->category, n) == 0 && stream[n] == '-' && fd_aggregate_id_valid(t, stream + n + 1)) {
			*id = stream + n + 1;
			return t;
		}
	}
	return NULL;
}
