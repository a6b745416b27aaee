/*
 * projections.c - what every projection shares: "{table}" substitution in its
 * SQL, the names its statements are prepared under, running one of them, and
 * finding a projection of an app by name, and the array literals batch
 * handlers pass their columns in.  The read models themselves belong
 * to the apps (apps/shop/projections.c).  Pure or on the caller's connection.
 */
#include "factd/proj.h"
#include "factd/sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *fd_projection_sql(const char *sql, const char *table)
{
	size_t tl = strlen(table), n = 0;
	for (const char *p = sql; (p = strstr(p, "{table}")); p += 7)
		n++;
	char *out = malloc(strlen(sql) + n * tl + 1);
	if (!out)
		return NULL;
	char *o = out;
	for (const char *p = sql;;) {
		const char *m = strstr(p, "{table}");
		size_t k = m ? (size_t)(m - p) : strlen(p);
		memcpy(o, p, k);
		o += k;
		if (!m)
			break;
		memcpy(o, table, tl);
		o += tl;
		p = m + 7;
	}
	*o = '\0';
	return out;
}

bool fd_projection_statement_name(const char *table, unsigned i, char name[FD_PROJECTION_STATEMENT_NAME])
{
	int n = snprintf(name, FD_PROJECTION_STATEMENT_NAME, "%s/%u", table, i);
	return n > 0 && n < FD_PROJECTION_STATEMENT_NAME;
}

enum fd_err fd_projection_exec(PGconn *conn, const char *table, unsigned i, int n, const char *const *params)
{
	char name[FD_PROJECTION_STATEMENT_NAME];
	if (!fd_projection_statement_name(table, i, name))
		return FD_ERR_INVAL;
	/* Prepared beforehand (the projector prepares a table's statements before its batches): run by name. */
	return fd_sql_exec(conn, &(struct fd_stmt){ .name = name, .nparams = n }, params, NULL);
}

const struct fd_projection *fd_projection_set_find(const struct fd_projection_set *set, const char *name)
{
	for (size_t i = 0; set && name && i < set->n; i++)
		if (strcmp(set->items[i]->name, name) == 0)
			return set->items[i];
	return NULL;
}

void fd_pg_array_add(struct fd_pg_array *a, const char *value)
{
	if (a->failed)
		return;
	struct fd_buf *b = &a->buf;
	size_t need = value ? 2 * strlen(value) + 4 : 6;
	if (fd_buf_reserve(b, need + 2) != FD_OK) {
		a->failed = true;
		return;
	}
	b->data[b->len++] = a->n ? ',' : '{';
	if (!value) {
		memcpy(b->data + b->len, "NULL", 4);
		b->len += 4;
	} else {
		b->data[b->len++] = '"';
		for (const char *p = value; *p; p++) {
			if (*p == '"' || *p == '\\')
				b->data[b->len++] = '\\';
			b->data[b->len++] = *p;
		}
		b->data[b->len++] = '"';
	}
	a->n++;
}

void fd_pg_array_add_int(struct fd_pg_array *a, long long value)
{
	char text[24];
	snprintf(text, sizeof text, "%lld", value);
	fd_pg_array_add(a, text);
}

const char *fd_pg_array_text(struct fd_pg_array *a)
{
	if (a->failed || fd_buf_reserve(&a->buf, 3) != FD_OK)
		return NULL;
	struct fd_buf *b = &a->buf;
	if (a->n == 0) {
		memcpy(b->data, "{}", 3);
		return b->data;
	}
	/* close it without counting the brace as content: the next add overwrites it */
	b->data[b->len] = '}';
	b->data[b->len + 1] = '\0';
	return b->data;
}

void fd_pg_array_reset(struct fd_pg_array *a)
{
	a->buf.len = 0;
	a->n = 0;
	a->failed = false;
}

void fd_pg_array_release(struct fd_pg_array *a)
{
	fd_buf_release(&a->buf);
	a->n = 0;
	a->failed = false;
}
