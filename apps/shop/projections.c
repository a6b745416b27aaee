/*
 * projections.c - the shop's read models.
 *
 *   order_summaries  one row per order: customer, status, line count, total,
 *                    placed/confirmed/shipped/cancelled times, the customer's
 *                    e-mail and shipping address (personal data: set to
 *                    null by the $SubjectErased event that erasing the
 *                    customer appends to the order's stream); its lines
 *                    (product, quantity, price) in order_summaries_lines.
 *   product_stock    one row per product: available, reserved, committed.
 *
 * Handlers run inside the projector's transaction; every statement names the
 * table it is given (live or shadow), and its companions by their suffixes.
 * A projection lists its statements, and its handler runs them by index:
 * the projector prepares them once per connection and table (see proj.h).
 * Each summary and stock row records the stream version it reflects, and a
 * handler skips an event at or below it (an order's lines are written only
 * when its summary takes the event), so a replay over existing rows is
 * harmless.
 */
#include "shop.h"

#include "factd/proj.h"
#include "factd/uuid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *str(json_t *data, const char *key)
{
	const char *s = json_string_value(json_object_get(data, key));
	return s ? s : "";
}

static void int_text(json_t *data, const char *key, char buf[24])
{
	snprintf(buf, 24, "%lld", (long long)json_integer_value(json_object_get(data, key)));
}

/* ---- order_summaries ---------------------------------------------------- */

/*
 * The lines are rows of their own, {table}_lines, rather than a document in
 * the summary row: a line event then writes one small line row and the
 * summary's counters, whatever the size of the order, where rewriting the
 * order's whole lines document cost more with every line it held.
 */
static const char order_summaries_sql[] =
	"CREATE TABLE {table} ("
	" order_id uuid PRIMARY KEY,"
	" customer_id text NOT NULL,"
	" status text NOT NULL,"
	" line_count int NOT NULL DEFAULT 0,"
	" total_cents bigint NOT NULL DEFAULT 0,"
	" created_at timestamptz NOT NULL,"
	" placed_at timestamptz, confirmed_at timestamptz, shipped_at timestamptz, cancelled_at timestamptz,"
	" cancel_reason text,"
	" email text, shipping_address jsonb,"
	" version bigint NOT NULL,"
	" updated_at timestamptz NOT NULL);"
	"CREATE INDEX ON {table} (status, order_id);"
	"CREATE INDEX ON {table} (customer_id, order_id);"
	"CREATE TABLE {table}_lines ("
	" order_id uuid NOT NULL,"
	" product_id text NOT NULL,"
	" quantity bigint NOT NULL,"
	" unit_price_cents bigint NOT NULL,"
	" PRIMARY KEY (order_id, product_id))";

static const char *const order_summaries_companions[] = { "_lines", NULL };

/* A status change: the status, the time it happened, and a cancellation's reason when it has one. */
#define ORDER_TRANSITION(status, column)                                                                          \
	"UPDATE {table} SET status = '" status "', " column " = $2, cancel_reason = coalesce($4, cancel_reason),"  \
	" version = $3, updated_at = $2 WHERE order_id = $1 AND version < $3"

enum {
	ORDER_CREATED,
	ORDER_LINE_ADDED,
	ORDER_LINE_REMOVED,
	ORDER_PLACED,
	ORDER_CONFIRMED,
	ORDER_SHIPPED,
	ORDER_CANCELLED,
	ORDER_SUBJECT_ERASED,
};

static const char *const order_statements[] = {
	[ORDER_CREATED] = "INSERT INTO {table} (order_id, customer_id, status, created_at, version, updated_at, email,"
			  " shipping_address) VALUES ($1, $2, 'draft', $3, $4, $3, $5, $6::jsonb)"
			  " ON CONFLICT (order_id) DO NOTHING",
	/*
	 * A line event moves line_count and total_cents by the one line that
	 * changes, as it was before the event (old) and after, and writes that
	 * line only when the summary takes the event (its version check).
	 */
	[ORDER_LINE_ADDED] =
		"WITH old AS (SELECT quantity, unit_price_cents FROM {table}_lines"
		"   WHERE order_id = $1 AND product_id = $2::text),"
		" s AS (UPDATE {table} SET"
		"   line_count = line_count + 1 - (SELECT count(*) FROM old)::int,"
		"   total_cents = total_cents - coalesce((SELECT quantity * unit_price_cents FROM old), 0)"
		"     + (coalesce((SELECT quantity FROM old), 0) + $3::bigint) * $4::bigint,"
		"   version = $5, updated_at = $6"
		"   WHERE order_id = $1 AND version < $5 RETURNING order_id)"
		" INSERT INTO {table}_lines AS l (order_id, product_id, quantity, unit_price_cents)"
		" SELECT order_id, $2::text, $3::bigint, $4::bigint FROM s"
		" ON CONFLICT (order_id, product_id) DO UPDATE"
		"   SET quantity = l.quantity + excluded.quantity, unit_price_cents = excluded.unit_price_cents",
	[ORDER_LINE_REMOVED] =
		"WITH old AS (DELETE FROM {table}_lines AS l USING {table} AS s"
		"   WHERE l.order_id = $1 AND l.product_id = $2::text AND s.order_id = $1 AND s.version < $3"
		"   RETURNING l.quantity * l.unit_price_cents AS amount)"
		" UPDATE {table} SET line_count = line_count - (SELECT count(*) FROM old)::int,"
		" total_cents = total_cents - coalesce((SELECT amount FROM old), 0),"
		" version = $3, updated_at = $4"
		" WHERE order_id = $1 AND version < $3",
	[ORDER_PLACED] = ORDER_TRANSITION("placed", "placed_at"),
	[ORDER_CONFIRMED] = ORDER_TRANSITION("confirmed", "confirmed_at"),
	[ORDER_SHIPPED] = ORDER_TRANSITION("shipped", "shipped_at"),
	[ORDER_CANCELLED] = ORDER_TRANSITION("cancelled", "cancelled_at"),
	/* the customer's personal data goes; the rest of the summary stays */
	[ORDER_SUBJECT_ERASED] = "UPDATE {table} SET email = NULL, shipping_address = NULL, version = $2, updated_at = $3"
				 " WHERE order_id = $1 AND version < $2 AND customer_id = $4",
	NULL,
};

static enum fd_err order_handle(PGconn *conn, const char *table, const struct fd_feed_event *ev)
{
	const char *id = ev->stream + strlen("order-");
	char version[24], q[24], p[24];
	struct fd_uuid u;
	if (!fd_uuid_parse(id, &u))
		return FD_OK; /* not an order the domain made (the generic API can write anything) */
	snprintf(version, sizeof version, "%lld", (long long)ev->version);
	const char *t = ev->type;
	if (strcmp(t, "OrderCreated") == 0) {
		/* null (absent, or erased since) stays NULL */
		char *address = json_is_object(json_object_get(ev->data, "shipping_address"))
					? json_dumps(json_object_get(ev->data, "shipping_address"), JSON_COMPACT)
					: NULL;
		if (json_is_object(json_object_get(ev->data, "shipping_address")) && !address)
			return FD_ERR_NOMEM;
		const char *params[] = { id, str(ev->data, "customer_id"), ev->recorded_at, version,
					 json_string_value(json_object_get(ev->data, "email")), address };
		enum fd_err err = fd_projection_exec(conn, table, ORDER_CREATED, 6, params);
		free(address);
		return err;
	}
	if (strcmp(t, "$SubjectErased") == 0) {
		const char *params[] = { id, version, ev->recorded_at, str(ev->data, "subject") };
		return fd_projection_exec(conn, table, ORDER_SUBJECT_ERASED, 4, params);
	}
	if (strcmp(t, "OrderLineAdded") == 0) {
		int_text(ev->data, "quantity", q);
		int_text(json_object_get(ev->data, "unit_price"), "amount_cents", p); /* version 2 (order.c) */
		const char *params[] = { id, str(ev->data, "product_id"), q, p, version, ev->recorded_at };
		return fd_projection_exec(conn, table, ORDER_LINE_ADDED, 6, params);
	}
	if (strcmp(t, "OrderLineRemoved") == 0) {
		const char *params[] = { id, str(ev->data, "product_id"), version, ev->recorded_at };
		return fd_projection_exec(conn, table, ORDER_LINE_REMOVED, 4, params);
	}
	static const struct {
		const char *type;
		unsigned statement;
	} transitions[] = {
		{ "OrderPlaced", ORDER_PLACED },
		{ "OrderConfirmed", ORDER_CONFIRMED },
		{ "OrderShipped", ORDER_SHIPPED },
		{ "OrderCancelled", ORDER_CANCELLED },
	};
	for (size_t i = 0; i < sizeof transitions / sizeof transitions[0]; i++) {
		if (strcmp(t, transitions[i].type) != 0)
			continue;
		const char *reason = json_string_value(json_object_get(ev->data, "reason"));
		const char *params[] = { id, ev->recorded_at, version, reason };
		return fd_projection_exec(conn, table, transitions[i].statement, 4, params);
	}
	return FD_OK; /* other types do not change the summary */
}

/* ---- product_stock ------------------------------------------------------ */

static const char product_stock_sql[] =
	"CREATE TABLE {table} ("
	" product_id text PRIMARY KEY,"
	" name text NOT NULL,"
	" available bigint NOT NULL,"
	" reserved bigint NOT NULL DEFAULT 0,"
	" committed bigint NOT NULL DEFAULT 0,"
	" version bigint NOT NULL,"
	" updated_at timestamptz NOT NULL)";

/* A stock movement: the columns it moves by the event's quantity ($2). */
#define STOCK_MOVE(set) \
	"UPDATE {table} SET " set ", version = $3, updated_at = $4 WHERE product_id = $1 AND version < $3"

enum {
	PRODUCT_CREATED,
	PRODUCT_RESTOCKED,
	STOCK_RESERVED,
	RESERVATION_RELEASED,
	RESERVATION_COMMITTED,
};

static const char *const product_statements[] = {
	[PRODUCT_CREATED] = "INSERT INTO {table} (product_id, name, available, version, updated_at)"
			    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (product_id) DO NOTHING",
	[PRODUCT_RESTOCKED] = STOCK_MOVE("available = available + $2"),
	[STOCK_RESERVED] = STOCK_MOVE("available = available - $2, reserved = reserved + $2"),
	[RESERVATION_RELEASED] = STOCK_MOVE("available = available + $2, reserved = reserved - $2"),
	[RESERVATION_COMMITTED] = STOCK_MOVE("reserved = reserved - $2, committed = committed + $2"),
	NULL,
};

static enum fd_err product_handle(PGconn *conn, const char *table, const struct fd_feed_event *ev)
{
	const char *id = ev->stream + strlen("product-");
	char version[24], q[24];
	snprintf(version, sizeof version, "%lld", (long long)ev->version);
	const char *t = ev->type;
	if (strcmp(t, "ProductCreated") == 0) {
		int_text(ev->data, "stock", q);
		const char *params[] = { id, str(ev->data, "name"), q, version, ev->recorded_at };
		return fd_projection_exec(conn, table, PRODUCT_CREATED, 5, params);
	}
	static const struct {
		const char *type;
		unsigned statement;
	} moves[] = {
		{ "ProductRestocked", PRODUCT_RESTOCKED },
		{ "StockReserved", STOCK_RESERVED },
		{ "ReservationReleased", RESERVATION_RELEASED },
		{ "ReservationCommitted", RESERVATION_COMMITTED },
	};
	for (size_t i = 0; i < sizeof moves / sizeof moves[0]; i++) {
		if (strcmp(t, moves[i].type) != 0)
			continue;
		int_text(ev->data, "quantity", q);
		const char *params[] = { id, q, version, ev->recorded_at };
		return fd_projection_exec(conn, table, moves[i].statement, 4, params);
	}
	return FD_OK;
}

/* ---- the table ---------------------------------------------------------- */

static const char *const order_categories[] = { "order", NULL };
static const char *const product_categories[] = { "product", NULL };

const struct fd_projection shop_order_summaries = {
	.name = "order_summaries",
	.table = "order_summaries",
	.categories = order_categories,
	.create_sql = order_summaries_sql,
	.companions = order_summaries_companions,
	.version = 3,
	.statements = order_statements,
	.handle = order_handle,
};

const struct fd_projection shop_product_stock = {
	.name = "product_stock",
	.table = "product_stock",
	.categories = product_categories,
	.create_sql = product_stock_sql,
	.version = 1,
	.statements = product_statements,
	.handle = product_handle,
};
