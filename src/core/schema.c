/* schema.c - versioned event types and upcaster chains (schema.h).  Pure; thread-safe. */
#include "factd/schema.h"

#include <stdio.h>
#include <string.h>

/* No chain is longer than this many steps; a longer one is a loop of renames. */
#define MAX_STEPS 1000

static int declared_version(const struct fd_event_type *t)
{
	return t->version > 0 ? t->version : 1;
}

static const struct fd_event_type *find_type(const struct fd_event_schema *s, const char *type)
{
	for (size_t i = 0; s && type && i < s->ntypes; i++)
		if (s->types[i].type && strcmp(s->types[i].type, type) == 0)
			return &s->types[i];
	return NULL;
}

static const struct fd_upcaster *find_step(const struct fd_event_schema *s, const char *type, int from)
{
	for (size_t i = 0; s && type && i < s->nupcasters; i++)
		if (s->upcasters[i].from == from && s->upcasters[i].type && strcmp(s->upcasters[i].type, type) == 0)
			return &s->upcasters[i];
	return NULL;
}

/* The name a step leaves its data under. */
static const char *step_target(const struct fd_upcaster *u)
{
	return u->renamed_to ? u->renamed_to : u->type;
}

int fd_event_schema_version(const struct fd_event_schema *s, const char *type)
{
	const struct fd_event_type *t = find_type(s, type);
	return t ? declared_version(t) : 0;
}

enum fd_err fd_event_schema_upcast(const struct fd_event_schema *s, const void *services, const char **type,
				   int *version, json_t *data)
{
	if (!s || !*type)
		return FD_OK;
	const char *name = *type;
	int v = *version;
	for (int steps = 0; steps <= MAX_STEPS; steps++) {
		const struct fd_event_type *t = find_type(s, name);
		int current = t ? declared_version(t) : 0;
		if (t && v == current)
			break;
		if (t && v > current)
			return FD_ERR_SCHEMA;
		const struct fd_upcaster *u = find_step(s, name, v);
		if (!u) {
			if (t)
				return FD_ERR_INVAL; /* a declared type below its version with no way on */
			break;                       /* neither declared nor upcast: not this schema's */
		}
		if (!json_is_object(data) || !u->up)
			return FD_ERR_INVAL;
		enum fd_err err = u->up(data, services);
		if (err)
			return err;
		if (!json_is_object(data))
			return FD_ERR_INVAL;
		name = step_target(u);
		v++;
	}
	*type = name;
	*version = v;
	return FD_OK;
}

size_t fd_event_schema_names(const struct fd_event_schema *s, const char *type, const char **out, size_t n)
{
	const char *found[64];
	size_t count = 0;
	found[count++] = type;
	/* Breadth-first over the names that rename into one already found. */
	for (size_t k = 0; k < count; k++) {
		for (size_t i = 0; s && i < s->nupcasters; i++) {
			const struct fd_upcaster *u = &s->upcasters[i];
			if (!u->renamed_to || !u->type || strcmp(u->renamed_to, found[k]) != 0)
				continue;
			bool seen = false;
			for (size_t j = 0; j < count; j++)
				seen = seen || strcmp(found[j], u->type) == 0;
			if (!seen && count < sizeof found / sizeof found[0])
				found[count++] = u->type;
		}
	}
	for (size_t i = 0; i < count && i < n; i++)
		out[i] = found[i];
	return count;
}

enum fd_err fd_event_schema_check(const struct fd_event_schema *s, const char *owner, char *errbuf, size_t errlen)
{
	if (!s)
		return FD_OK;
	if (s->ntypes && !s->types)
		goto bad_table;
	if (s->nupcasters && !s->upcasters)
		goto bad_table;
	for (size_t i = 0; i < s->ntypes; i++) {
		const struct fd_event_type *t = &s->types[i];
		if (!t->type || !*t->type || t->version < 0 || t->version > FD_SCHEMA_VERSION_MAX) {
			snprintf(errbuf, errlen, "%s: event type row %zu needs a name and a version in 1..%d", owner, i,
				 FD_SCHEMA_VERSION_MAX);
			return FD_ERR_INVAL;
		}
		if (find_type(s, t->type) != t) {
			snprintf(errbuf, errlen, "%s: event type %s is declared twice", owner, t->type);
			return FD_ERR_INVAL;
		}
		/* Walk back from the current version: each version below it needs its one step. */
		const char *name = t->type;
		for (int v = declared_version(t) - 1; v >= 1; v--) {
			const struct fd_upcaster *u = NULL;
			for (size_t k = 0; k < s->nupcasters; k++) {
				const struct fd_upcaster *c = &s->upcasters[k];
				if (c->from == v && c->type && strcmp(step_target(c), name) == 0) {
					if (u) {
						snprintf(errbuf, errlen, "%s: two upcasters lead to %s version %d", owner,
							 name, v + 1);
						return FD_ERR_INVAL;
					}
					u = c;
				}
			}
			if (!u) {
				snprintf(errbuf, errlen,
					 "%s: event type %s is at version %d, but no upcaster leads from version %d "
					 "to %d (of %s)",
					 owner, t->type, declared_version(t), v, v + 1, name);
				return FD_ERR_INVAL;
			}
			name = u->type;
		}
	}
	for (size_t i = 0; i < s->nupcasters; i++) {
		const struct fd_upcaster *u = &s->upcasters[i];
		if (!u->type || !*u->type || !u->up || u->from < 1 || u->from >= FD_SCHEMA_VERSION_MAX ||
		    (u->renamed_to && !*u->renamed_to)) {
			snprintf(errbuf, errlen, "%s: upcaster row %zu needs a type, a function and from >= 1", owner, i);
			return FD_ERR_INVAL;
		}
		if (find_step(s, u->type, u->from) != u) {
			snprintf(errbuf, errlen, "%s: two upcasters from %s version %d", owner, u->type, u->from);
			return FD_ERR_INVAL;
		}
		/* Where the chain from this step ends must be a declared type at its current version. */
		const char *name = step_target(u);
		int v = u->from + 1;
		const struct fd_upcaster *next;
		int steps = 0;
		while ((next = find_step(s, name, v)) && steps++ < MAX_STEPS) {
			name = step_target(next);
			v++;
		}
		const struct fd_event_type *t = find_type(s, name);
		if (!t || declared_version(t) != v) {
			snprintf(errbuf, errlen, "%s: the upcaster from %s version %d leads to %s version %d, which is not "
						 "a declared type at its current version", owner, u->type, u->from, name, v);
			return FD_ERR_INVAL;
		}
	}
	return FD_OK;
bad_table:
	snprintf(errbuf, errlen, "%s: an event table's count is set without its rows", owner);
	return FD_ERR_INVAL;
}

int fd_event_schema_weight(const struct fd_event_schema *s)
{
	int w = 0;
	for (size_t i = 0; s && i < s->ntypes; i++)
		w += declared_version(&s->types[i]) - 1;
	return w;
}

enum fd_err fd_event_schema_version_of(const json_t *metadata, int *out)
{
	*out = 1;
	const json_t *v = json_is_object(metadata) ? json_object_get(metadata, FD_SCHEMA_VERSION_KEY) : NULL;
	if (!v)
		return FD_OK;
	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > FD_SCHEMA_VERSION_MAX)
		return FD_ERR_INVAL;
	*out = (int)json_integer_value(v);
	return FD_OK;
}

const struct fd_event_schema *fd_schemas_find(const struct fd_schemas *set, const char *category)
{
	for (size_t i = 0; set && category && i < set->n; i++)
		if (strcmp(set->items[i].category, category) == 0)
			return set->items[i].schema;
	return NULL;
}

enum fd_err fd_schemas_upcast(const struct fd_schemas *set, const char *category, const json_t *metadata,
			      const char **type, int *version, json_t *data)
{
	enum fd_err err = fd_event_schema_version_of(metadata, version);
	if (err)
		return err;
	const struct fd_event_schema *s = fd_schemas_find(set, category);
	return s ? fd_event_schema_upcast(s, set->services, type, version, data) : FD_OK;
}

const struct fd_personal_decl *fd_event_schema_personal(const struct fd_event_schema *s, const char *type)
{
	for (size_t i = 0; s && type && i < s->ntypes; i++)
		if (strcmp(s->types[i].type, type) == 0)
			return s->types[i].personal;
	return NULL;
}

bool fd_subject_id_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;
	if (n < 1 || n > FD_SUBJECT_ID_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("_.:@+-", c)))
			return false;
	}
	return true;
}
