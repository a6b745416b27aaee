/*
 * queries.c - pages of the read models, rendered as JSON by PostgreSQL.
 *
 * Each page is one statement: the rows after the keyset cursor (one more
 * than the limit, to know whether another page follows), numbered, then
 * aggregated into {"<rows>": [...], "next": ...} and made compact.  Filters are appended to
 * the statement only when given, each as a parameter, so PostgreSQL plans
 * the statement for the filters actually in use (order_summaries has
 * indexes on (status, order_id) and (customer_id, order_id)).
 *
 * Rebuilds swap a projection's table in one transaction; a statement that
 * meets the swap waits for it and then reads the new table, so no retry is
 * needed here beyond the one for a lost connection.
 *
 * Threading: thread-safe; each call borrows one pool connection.
 */
#include "queries.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "factd/buf.h"
#include "factd/jsonspan.h"
#include "factd/log.h"
#include "factd/uuid.h"

/* RFC 3339 UTC with microseconds, as fd_event_json renders recorded_at. */
#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

static const char orders_head[] =
	"SELECT json_build_object("
	" 'orders', coalesce(json_agg(json_build_object("
	"   'order_id', p.order_id, 'customer_id', p.customer_id, 'status', p.status,"
	"   'line_count', p.line_count, 'total_cents', p.total_cents,"
	"   'created_at', " TS("p.created_at") ", 'placed_at', " TS("p.placed_at") ","
	"   'confirmed_at', " TS("p.confirmed_at") ", 'shipped_at', " TS("p.shipped_at") ","
	"   'cancelled_at', " TS("p.cancelled_at") ", 'cancel_reason', p.cancel_reason,"
	"   'email', p.email, 'shipping_address', p.shipping_address,"
	"   'version', p.version) ORDER BY p.order_id) FILTER (WHERE p.n <= $1::int), '[]'::json),"
	" 'next', CASE WHEN count(*) > $1::int THEN max(p.order_id::text) FILTER (WHERE p.n = $1::int) END)::text"
	" FROM (SELECT s.*, row_number() OVER (ORDER BY s.order_id) AS n FROM ("
	"  SELECT order_id, customer_id, status, line_count, total_cents, created_at, placed_at, confirmed_at,"
	"   shipped_at, cancelled_at, cancel_reason, email, shipping_address, version FROM order_summaries WHERE true";
static const char orders_tail[] = " ORDER BY order_id LIMIT $1::int + 1) s) p";

static const char products_sql[] =
	"SELECT json_build_object("
	" 'products', coalesce(json_agg(json_build_object("
	"   'product_id', p.product_id, 'name', p.name, 'available', p.available, 'reserved', p.reserved,"
	"   'committed', p.committed, 'version', p.version) ORDER BY p.product_id) FILTER (WHERE p.n <= $1::int),"
	"   '[]'::json),"
	" 'next', CASE WHEN count(*) > $1::int THEN max(p.product_id) FILTER (WHERE p.n = $1::int) END)::text"
	" FROM (SELECT s.*, row_number() OVER (ORDER BY s.product_id) AS n FROM ("
	"  SELECT product_id, name, available, reserved, committed, version FROM product_stock"
	"  WHERE $2::text IS NULL OR product_id > $2::text"
	"  ORDER BY product_id LIMIT $1::int + 1) s) p";

static const char *const order_statuses[] = { "draft", "placed", "confirmed", "shipped", "cancelled" };

bool fd_query_order_status_valid(const char *s)
{
	if (!s)
		return false;
	for (size_t i = 0; i < sizeof order_statuses / sizeof order_statuses[0]; i++)
		if (strcmp(s, order_statuses[i]) == 0)
			return true;
	return false;
}

bool fd_query_customer_valid(const char *s)
{
	if (!s)
		return false;
	size_t len = strlen(s), chars = 0;
	if (len == 0 || !fd_utf8_valid(s, len))
		return false;
	for (size_t i = 0; i < len; i++)
		chars += ((unsigned char)s[i] & 0xC0) != 0x80;
	return chars <= FD_QUERY_CUSTOMER_MAX;
}

bool fd_query_sku_valid(const char *s)
{
	if (!s)
		return false;
	size_t n = 0;
	for (; s[n]; n++) {
		char c = s[n];
		bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
			  c == '.' || c == ':' || c == '-';
		if (!ok || n >= FD_QUERY_SKU_MAX)
			return false;
	}
	return n > 0;
}

/*
 * Run sql with n text parameters and hand over the one text value it
 * returns.  A lost connection is retried once on a fresh one (reads are
 * safe to repeat).  An undefined table (42P01) means the projector has not
 * created the read model yet: FD_ERR_UNAVAILABLE.
 */
static enum fd_err run_json(struct fd_pool *pool, const char *table, const char *sql, int n,
			    const char *const *params, char **json)
{
	*json = NULL;
	/*
	 * Lock the read model first, then query in a statement of its own: a
	 * rebuild swaps the table in by DROP and RENAME, and a statement that
	 * waited for that swap would otherwise read the new table with the
	 * snapshot it took before the wait.
	 */
	char lock[128];
	snprintf(lock, sizeof lock, "BEGIN; LOCK TABLE %s IN ACCESS SHARE MODE", table);
	for (int attempt = 0;; attempt++) {
		PGconn *conn = NULL;
		enum fd_err err = fd_pool_acquire(pool, &conn);
		if (err)
			return err;
		PGresult *res = PQexec(conn, lock);
		if (PQresultStatus(res) == PGRES_COMMAND_OK) {
			PQclear(res);
			res = PQexecParams(conn, sql, n, NULL, params, NULL, NULL, 0);
		}
		if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 1 &&
		    !PQgetisnull(res, 0, 0)) {
			/* json_build_object writes " : " and ", ": compact it like every other response */
			*json = strdup(PQgetvalue(res, 0, 0));
			if (*json)
				(*json)[fd_json_compact(*json, *json, strlen(*json))] = '\0';
			err = *json ? FD_OK : FD_ERR_NOMEM;
		} else if (PQresultStatus(res) == PGRES_TUPLES_OK) {
			err = FD_ERR_INTERNAL;
		} else {
			err = fd_pg_classify(conn, res);
			const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
			if (state && strcmp(state, "42P01") == 0)
				err = FD_ERR_UNAVAILABLE;
			else if (err == FD_ERR_DB)
				fd_log_fields(FD_LOG_ERROR, "read model query failed",
					      json_pack("{s:s?, s:s}", "sqlstate", state, "error",
							PQresultErrorMessage(res)));
		}
		PQclear(res);
		res = PQexec(conn, PQtransactionStatus(conn) == PQTRANS_INERROR ? "ROLLBACK" : "COMMIT");
		bool broken = PQstatus(conn) != CONNECTION_OK;
		PQclear(res);
		fd_pool_release(pool, conn, broken);
		if (!broken || attempt > 0)
			return err;
	}
}

enum fd_err fd_query_orders(struct fd_pool *pool, const char *status, const char *customer_id,
			    const char *after_order_id, unsigned limit, char **json)
{
	char lim[16], after[FD_UUID_STRLEN + 1];
	const char *params[4];
	int n = 0;
	struct fd_buf sql = FD_BUF_INIT;
	enum fd_err err = FD_OK;

	*json = NULL;
	if (limit < 1 || limit > 1000000 || (status && !fd_query_order_status_valid(status)) ||
	    (customer_id && !fd_query_customer_valid(customer_id)))
		return FD_ERR_INVAL;
	if (after_order_id) {
		struct fd_uuid u;
		if (!fd_uuid_parse(after_order_id, &u))
			return FD_ERR_INVAL;
		fd_uuid_format(&u, after);
	}
	snprintf(lim, sizeof lim, "%u", limit);
	params[n++] = lim;
	err = fd_buf_append(&sql, orders_head, strlen(orders_head));
	if (!err && status) {
		params[n++] = status;
		err = fd_buf_appendf(&sql, " AND status = $%d::text", n);
	}
	if (!err && customer_id) {
		params[n++] = customer_id;
		err = fd_buf_appendf(&sql, " AND customer_id = $%d::text", n);
	}
	if (!err && after_order_id) {
		params[n++] = after;
		err = fd_buf_appendf(&sql, " AND order_id > $%d::uuid", n);
	}
	if (!err)
		err = fd_buf_append(&sql, orders_tail, strlen(orders_tail));
	if (!err)
		err = run_json(pool, "order_summaries", sql.data, n, params, json);
	fd_buf_release(&sql);
	return err;
}

enum fd_err fd_query_products(struct fd_pool *pool, const char *after_product_id, unsigned limit, char **json)
{
	char lim[16];
	*json = NULL;
	if (limit < 1 || limit > 1000000 || (after_product_id && !fd_query_sku_valid(after_product_id)))
		return FD_ERR_INVAL;
	snprintf(lim, sizeof lim, "%u", limit);
	const char *params[] = { lim, after_product_id };
	return run_json(pool, "product_stock", products_sql, 2, params, json);
}
