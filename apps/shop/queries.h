/*
 * queries.h - reads of the read models (order_summaries, product_stock).
 *
 * Each query is one parameterised statement whose answer PostgreSQL renders
 * as JSON text, so a page goes from the table to the client without being
 * parsed here.  Pages are keyset-paginated by the table's primary key: a
 * page holds up to `limit` rows after the `after` key, in key order, and
 * "next" is the key of its last row when more rows follow (null otherwise).
 * Nothing here replays events: a query answers what the projection has
 * applied so far (see fd_projection_wait for read-your-writes).
 *
 * Thread-safe: each call borrows one pool connection for its duration.
 */
#ifndef FACTD_QUERIES_H
#define FACTD_QUERIES_H

#include <stdbool.h>

#include "factd/error.h"
#include "factd/pool.h"

#define FD_QUERY_CUSTOMER_MAX 128 /* characters of a customer_id filter */
#define FD_QUERY_SKU_MAX 64       /* characters of a product id */

/* One of draft, placed, confirmed, shipped, cancelled. */
bool fd_query_order_status_valid(const char *s);
/* 1..FD_QUERY_CUSTOMER_MAX characters of valid UTF-8. */
bool fd_query_customer_valid(const char *s);
/* A product id: 1..FD_QUERY_SKU_MAX characters of [A-Za-z0-9_.:-]. */
bool fd_query_sku_valid(const char *s);

/*
 * A page of order summaries:
 *   {"orders": [{order_id, customer_id, status, line_count, total_cents,
 *                created_at, placed_at, confirmed_at, shipped_at,
 *                cancelled_at, cancel_reason, version}, ...],
 *    "next": "<order_id>" | null}
 * in order_id order, timestamps RFC 3339 UTC with microseconds (null when
 * the step has not happened).  status and customer_id filter when not NULL;
 * after_order_id (a UUID, any case) starts the page after that id.
 * limit >= 1.  *json is the caller's (free()).
 *
 * FD_ERR_INVAL: an argument breaks the rules above.  FD_ERR_UNAVAILABLE:
 * the database cannot be reached, or the read model does not exist yet (the
 * projector creates it at start).  FD_ERR_DB otherwise.
 */
FD_MUST_USE enum fd_err fd_query_orders(struct fd_pool *pool, const char *status, const char *customer_id,
					const char *after_order_id, unsigned limit, char **json);

/*
 * A page of product stock:
 *   {"products": [{product_id, name, available, reserved, committed,
 *                  version}, ...],
 *    "next": "<product_id>" | null}
 * in product_id order after after_product_id (a product id, or NULL).
 * Errors as fd_query_orders.
 */
FD_MUST_USE enum fd_err fd_query_products(struct fd_pool *pool, const char *after_product_id, unsigned limit,
					  char **json);

#endif
