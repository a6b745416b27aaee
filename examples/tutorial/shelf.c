/*
 * shelf.c - the "shelf" read model: one row per book, kept current from the
 * book events by the projector, and GET /books, which pages through it.
 */
#include "library.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <factd/handlers.h>
#include <factd/jsonspan.h>
#include <factd/pool.h>
#include <factd/proj.h>
#include <factd/sql.h>

/* ---- the projection ---------------------------------------------------------- */

static const char *const book_category[] = { "book", NULL };

enum { ADDED, LENT, RETURNED };

/* "{table}" is the live table or a rebuild's copy; "version < $n" makes a replayed event harmless. */
static const char *const statements[] = {
	[ADDED] = "INSERT INTO {table} (book_id, title, status, loans, version)"
		  " VALUES ($1, $2, 'available', 0, $3) ON CONFLICT (book_id) DO NOTHING",
	[LENT] = "UPDATE {table} SET status = 'on_loan', member = $2, loans = loans + 1, version = $3"
		 " WHERE book_id = $1 AND version < $3",
	[RETURNED] = "UPDATE {table} SET status = 'available', member = NULL, version = $2"
		     " WHERE book_id = $1 AND version < $2",
	NULL,
};

static enum fd_err shelf_handle(PGconn *conn, const char *table, const struct fd_feed_event *ev)
{
	const char *id = ev->stream + strlen("book-");
	char version[24];
	snprintf(version, sizeof version, "%lld", (long long)ev->version);
	if (strcmp(ev->type, "BookAdded") == 0) {
		const char *p[] = { id, json_string_value(json_object_get(ev->data, "title")), version };
		return fd_projection_exec(conn, table, ADDED, 3, p);
	}
	if (strcmp(ev->type, "BookLent") == 0) {
		const char *p[] = { id, json_string_value(json_object_get(ev->data, "member")), version };
		return fd_projection_exec(conn, table, LENT, 3, p);
	}
	if (strcmp(ev->type, "BookReturned") == 0) {
		const char *p[] = { id, version };
		return fd_projection_exec(conn, table, RETURNED, 2, p);
	}
	return FD_OK;
}

const struct fd_projection shelf_projection = {
	.name = "shelf",
	.table = "shelf",
	.categories = book_category,
	.create_sql = "CREATE TABLE {table} (book_id text PRIMARY KEY, title text NOT NULL, status text NOT NULL,"
		      " member text, loans bigint NOT NULL, version bigint NOT NULL)",
	.version = 1,
	.statements = statements,
	.handle = shelf_handle,
};

/* ---- GET /books?status=&after=&limit=&min_position= --------------------------- */

/* One page, rendered as JSON by PostgreSQL: {"books": [...], "next": "<book_id>"|null}. */
static const char page_sql[] =
	"SELECT json_build_object('books', coalesce(json_agg(json_build_object('book_id', book_id, 'title', title,"
	"   'status', status, 'member', member, 'loans', loans) ORDER BY book_id) FILTER (WHERE n <= $1), '[]'),"
	" 'next', CASE WHEN count(*) > $1 THEN max(book_id) FILTER (WHERE n = $1) END)::text"
	" FROM (SELECT *, row_number() OVER (ORDER BY book_id) AS n FROM shelf"
	"  WHERE ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR book_id > $3)"
	"  ORDER BY book_id LIMIT $1::int + 1) page";

/* One page from the pool the read seam chose (a replica or the primary); FD_ERR_UNAVAILABLE
 * while the shelf table is not there (yet), on which a replica's read is retried on the primary. */
static enum fd_err query_page(struct fd_pool *pool, const char *const params[3], char **json)
{
	PGconn *conn = NULL;
	*json = NULL;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	/*
	 * A rebuild swaps the table in (DROP and RENAME): lock it first, in a
	 * statement of its own, so the page is read with a snapshot taken
	 * after any swap it waited for.  The page's filters are optional, so
	 * it runs unprepared (sql.h): each is planned for the filters given.
	 */
	PGresult *res = NULL;
	err = fd_sql_once(conn, "BEGIN; LOCK TABLE shelf IN ACCESS SHARE MODE", 0, NULL, &res);
	if (!err) {
		PQclear(res);
		err = fd_sql_once(conn, page_sql, 3, params, &res);
	}
	if (err) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (state && strcmp(state, "42P01") == 0)
			err = FD_ERR_UNAVAILABLE; /* the projector has not made the table yet: 503 */
	} else if (PQntuples(res) != 1) {
		err = FD_ERR_INTERNAL;
	} else if ((*json = strdup(PQgetvalue(res, 0, 0)))) {
		(*json)[fd_json_compact(*json, *json, strlen(*json))] = '\0'; /* compact, like every response */
	} else {
		err = FD_ERR_NOMEM;
	}
	PQclear(res);
	PQclear(PQexec(conn, "ROLLBACK"));
	fd_pool_release(pool, conn, fd_pg_conn_broken(conn, err));
	return err;
}

void library_list_books(struct fd_req *req, struct fd_resp *resp)
{
	const char *status = fd_req_query(req, "status"), *after = fd_req_query(req, "after");
	unsigned limit;
	if (status && strcmp(status, "available") != 0 && strcmp(status, "on_loan") != 0) {
		fd_api_bad_param(resp, req, "status", "status must be available or on_loan");
		return;
	}
	if (after && !fd_aggregate_id_valid(&book_type, after)) {
		fd_api_bad_param(resp, req, "after", "after must be a book id from a previous page");
		return;
	}
	if (!fd_api_list_limit(req, resp, &limit) || !fd_api_list_min_position(req, resp, "shelf"))
		return;

	char lim[16], *json = NULL;
	snprintf(lim, sizeof lim, "%u", limit);
	const char *params[] = { lim, status, after };
	/* From a replica when one has what ?min_position= needs, else from the primary (the read seam). */
	enum fd_err err = FD_OK;
	for (struct fd_pool *pool = fd_req_read_pool(req, NULL); pool; pool = fd_req_read_retry(req, err))
		err = query_page(pool, params, &json);
	fd_api_list_answer(req, resp, err, json);
}
