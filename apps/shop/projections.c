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
 * harmless.  A $StreamDeleted event (the stream deleted, soft or for good)
 * drops the rows of its order or product, lines included; if the stream
 * starts again, its new creation event makes them anew.
 */
#include "shop.h"

#include "factd/proj.h"
#include "factd/uuid.h"

#include <stdint.h>
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

/* ---- batch handlers: shared ------------------------------------------------- */

/*
 * A batch handler writes a batch as runs: within one run every event of a
 * kind goes into one set-based statement.  That gives the per-event result
 * only while the statements' order (creations, lines, status changes) is
 * each key's own order in the run, so an event that would break it (a
 * second creation, a line event after a status change, a line touched
 * again after its removal) ends the run: the statements so far are queued
 * and a new run starts.  Events of the domain never do (an order takes
 * lines only while a draft); the split keeps anything else exact.
 *
 * What a run has seen of each key: open addressing over string pairs
 * borrowed from the batch's events.
 */
struct seen_slot {
	const char *a, *b;  /* b: NULL for a key of one part */
	int state;
};

struct seen {
	struct seen_slot *slots;
	size_t cap;
};

static enum fd_err seen_init(struct seen *s, size_t events)
{
	s->cap = 64;
	while (s->cap < 4 * events)
		s->cap *= 2;
	s->slots = calloc(s->cap, sizeof *s->slots);
	return s->slots ? FD_OK : FD_ERR_NOMEM;
}

static void seen_reset(struct seen *s)
{
	memset(s->slots, 0, s->cap * sizeof *s->slots);
}

/* The state kept for (a, b), created as 0. */
static int *seen_at(struct seen *s, const char *a, const char *b)
{
	uint64_t h = 1469598103934665603ull;
	for (const char *p = a; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	h = (h ^ 0xffu) * 1099511628211ull;
	for (const char *p = b ? b : ""; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		struct seen_slot *slot = &s->slots[i];
		if (!slot->a) {
			slot->a = a;
			slot->b = b;
			return &slot->state;
		}
		if (strcmp(slot->a, a) == 0 && ((!slot->b && !b) || (slot->b && b && strcmp(slot->b, b) == 0)))
			return &slot->state;
	}
}

/* The most array parameters a batch statement takes (ORDERS_FOLDED: 19). */
#define MAX_COLS 24

/* Queue statement i with the columns of one kind of event, when the run has any. */
static enum fd_err exec_columns(PGconn *conn, const char *table, unsigned i, struct fd_pg_array *cols, int ncols)
{
	if (cols[0].n == 0)
		return FD_OK;
	const char *params[MAX_COLS];
	if (ncols > MAX_COLS)
		return FD_ERR_INTERNAL;
	for (int k = 0; k < ncols; k++)
		if (!(params[k] = fd_pg_array_text(&cols[k])))
			return FD_ERR_NOMEM;
	enum fd_err err = fd_projection_exec(conn, table, i, ncols, params);
	for (int k = 0; k < ncols; k++)
		fd_pg_array_reset(&cols[k]);
	return err;
}

static void release_columns(struct fd_pg_array *cols, int ncols)
{
	for (int k = 0; k < ncols; k++)
		fd_pg_array_release(&cols[k]);
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
	ORDERS_CREATED,
	ORDERS_LINES_REMOVED,
	ORDERS_LINES_ADDED,
	ORDERS_LINES_SUMMARY,
	ORDERS_TRANSITIONS,
	ORDER_DELETED,
	ORDER_SUBJECT_ERASED,
	ORDERS_FOLDED,
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
	/*
	 * The batch handler's statements: each takes one array per column
	 * (fd_pg_array) and writes every event of a kind in the batch at once.
	 * Each joins the events with the summaries and keeps those above the
	 * summary's version, as the per-event statements do one by one; the
	 * summary's version moves last, so every statement of a run sees the
	 * versions the run started from.
	 */
	[ORDERS_CREATED] =
		"INSERT INTO {table} (order_id, customer_id, status, created_at, version, updated_at, email, shipping_address)"
		" SELECT u.order_id, u.customer_id, 'draft', u.at, u.version, u.at, u.email, u.address"
		" FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::bigint[], $5::text[], $6::jsonb[])"
		"   AS u(order_id, customer_id, at, version, email, address)"
		" ON CONFLICT (order_id) DO NOTHING",
	/* Lines removed: at most one event per line in a run (order_handle_batch). */
	[ORDERS_LINES_REMOVED] =
		"DELETE FROM {table}_lines AS l USING"
		" (SELECT u.order_id, u.product_id"
		"   FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS u(order_id, product_id, version)"
		"   JOIN {table} AS s ON s.order_id = u.order_id AND s.version < u.version) AS r"
		" WHERE l.order_id = r.order_id AND l.product_id = r.product_id",
	/* Lines added: the quantities of a line's events summed, its last price. */
	[ORDERS_LINES_ADDED] =
		"INSERT INTO {table}_lines AS l (order_id, product_id, quantity, unit_price_cents)"
		" SELECT u.order_id, u.product_id, sum(u.quantity)::bigint, (array_agg(u.price ORDER BY u.version DESC))[1]"
		" FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])"
		"   AS u(order_id, product_id, version, quantity, price)"
		" JOIN {table} AS s ON s.order_id = u.order_id AND s.version < u.version"
		" GROUP BY u.order_id, u.product_id"
		" ON CONFLICT (order_id, product_id) DO UPDATE"
		"   SET quantity = l.quantity + excluded.quantity, unit_price_cents = excluded.unit_price_cents",
	/*
	 * After the line rows: each order's line_count and total_cents are
	 * those of its line rows (what the per-event statements keep them at,
	 * line by line), with the version and time of its last line event.
	 */
	[ORDERS_LINES_SUMMARY] =
		"UPDATE {table} AS s SET line_count = c.n, total_cents = c.total, version = x.version, updated_at = x.at"
		" FROM (SELECT u.order_id, max(u.version) AS version, (array_agg(u.at ORDER BY u.version DESC))[1] AS at"
		"   FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) AS u(order_id, version, at)"
		"   GROUP BY u.order_id) AS x"
		" CROSS JOIN LATERAL (SELECT count(*)::int AS n,"
		"   coalesce(sum(l.quantity * l.unit_price_cents), 0)::bigint AS total"
		"   FROM {table}_lines AS l WHERE l.order_id = x.order_id) AS c"
		" WHERE s.order_id = x.order_id AND s.version < x.version",
	/* Status changes: the last one's status, each its own time, the last reason given. */
	[ORDERS_TRANSITIONS] =
		"UPDATE {table} AS s SET status = x.status,"
		" placed_at = coalesce(x.placed_at, s.placed_at), confirmed_at = coalesce(x.confirmed_at, s.confirmed_at),"
		" shipped_at = coalesce(x.shipped_at, s.shipped_at), cancelled_at = coalesce(x.cancelled_at, s.cancelled_at),"
		" cancel_reason = coalesce(x.reason, s.cancel_reason), version = x.version, updated_at = x.at"
		" FROM (SELECT u.order_id, (array_agg(u.status ORDER BY u.version DESC))[1] AS status,"
		"   (array_agg(u.at ORDER BY u.version DESC) FILTER (WHERE u.status = 'placed'))[1] AS placed_at,"
		"   (array_agg(u.at ORDER BY u.version DESC) FILTER (WHERE u.status = 'confirmed'))[1] AS confirmed_at,"
		"   (array_agg(u.at ORDER BY u.version DESC) FILTER (WHERE u.status = 'shipped'))[1] AS shipped_at,"
		"   (array_agg(u.at ORDER BY u.version DESC) FILTER (WHERE u.status = 'cancelled'))[1] AS cancelled_at,"
		"   (array_agg(u.reason ORDER BY u.version DESC) FILTER (WHERE u.reason IS NOT NULL))[1] AS reason,"
		"   max(u.version) AS version, (array_agg(u.at ORDER BY u.version DESC))[1] AS at"
		"   FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::bigint[], $5::text[])"
		"     AS u(order_id, status, at, version, reason)"
		"   JOIN {table} AS t ON t.order_id = u.order_id AND t.version < u.version"
		"   GROUP BY u.order_id) AS x"
		" WHERE s.order_id = x.order_id",
	[ORDER_DELETED] = "WITH s AS (DELETE FROM {table} WHERE order_id = $1 AND version < $2 RETURNING order_id)"
			  " DELETE FROM {table}_lines WHERE order_id IN (SELECT order_id FROM s)",
	/* the customer's personal data goes; the rest of the summary stays */
	[ORDER_SUBJECT_ERASED] = "UPDATE {table} SET email = NULL, shipping_address = NULL, version = $2, updated_at = $3"
				 " WHERE order_id = $1 AND version < $2 AND customer_id = $4",
	/*
	 * Orders created in the batch, folded in C (order_fold): each summary
	 * row written once as it ends the batch, with its lines.  The batch
	 * holds every event of such an order from its creation to its version
	 * in the batch, so the fold is the row at that version: a row there
	 * already (a replay over existing rows) at an older version is replaced,
	 * its lines too, and one at that version or later is left alone.  The
	 * run's statements then skip these orders' events.
	 */
	[ORDERS_FOLDED] =
		"WITH old AS (SELECT order_id FROM {table} WHERE order_id = ANY ($1::uuid[])),"
		" up AS (INSERT INTO {table} AS t (order_id, customer_id, status, line_count, total_cents, created_at,"
		"   placed_at, confirmed_at, shipped_at, cancelled_at, cancel_reason, email, shipping_address, version, updated_at)"
		" SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::bigint[], $6::timestamptz[],"
		"   $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::text[],"
		"   $13::jsonb[], $14::bigint[], $15::timestamptz[])"
		" ON CONFLICT (order_id) DO UPDATE SET customer_id = EXCLUDED.customer_id, status = EXCLUDED.status,"
		"   line_count = EXCLUDED.line_count, total_cents = EXCLUDED.total_cents, created_at = EXCLUDED.created_at,"
		"   placed_at = EXCLUDED.placed_at, confirmed_at = EXCLUDED.confirmed_at, shipped_at = EXCLUDED.shipped_at,"
		"   cancelled_at = EXCLUDED.cancelled_at, cancel_reason = EXCLUDED.cancel_reason, email = EXCLUDED.email,"
		"   shipping_address = EXCLUDED.shipping_address, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at"
		"   WHERE t.version < EXCLUDED.version"
		" RETURNING order_id),"
		" u AS (SELECT * FROM unnest($16::uuid[], $17::text[], $18::bigint[], $19::bigint[])"
		"   AS u(order_id, product_id, quantity, price) WHERE u.order_id IN (SELECT order_id FROM up)),"
		" gone AS (DELETE FROM {table}_lines AS l"
		"   WHERE l.order_id IN (SELECT order_id FROM up WHERE order_id IN (SELECT order_id FROM old))"
		"   AND NOT EXISTS (SELECT 1 FROM u WHERE u.order_id = l.order_id AND u.product_id = l.product_id))"
		" INSERT INTO {table}_lines AS l (order_id, product_id, quantity, unit_price_cents)"
		" SELECT u.order_id, u.product_id, u.quantity, u.price FROM u"
		" ON CONFLICT (order_id, product_id) DO UPDATE SET quantity = EXCLUDED.quantity,"
		"   unit_price_cents = EXCLUDED.unit_price_cents",
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
	if (strcmp(t, FD_EVENT_STREAM_DELETED) == 0) {
		const char *params[] = { id, version };
		return fd_projection_exec(conn, table, ORDER_DELETED, 2, params);
	}
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


/* The columns of one run of order events, one array each (the batch statements' parameters). */
enum { CREATED_COLS = 6, REMOVED_COLS = 3, ADDED_COLS = 5, LINES_COLS = 3, MOVES_COLS = 5 };
struct order_run {
	struct fd_pg_array created[CREATED_COLS]; /* order_id, customer_id, at, version, email, shipping_address */
	struct fd_pg_array removed[REMOVED_COLS]; /* order_id, product_id, version */
	struct fd_pg_array added[ADDED_COLS];     /* order_id, product_id, version, quantity, price */
	struct fd_pg_array lines[LINES_COLS];     /* order_id, version, at: every line event, for the counters */
	struct fd_pg_array moves[MOVES_COLS];     /* order_id, status, at, version, reason */
};

static enum fd_err order_run_flush(PGconn *conn, const char *table, struct order_run *r)
{
	enum fd_err err = exec_columns(conn, table, ORDERS_CREATED, r->created, CREATED_COLS);
	if (!err)
		err = exec_columns(conn, table, ORDERS_LINES_REMOVED, r->removed, REMOVED_COLS);
	if (!err)
		err = exec_columns(conn, table, ORDERS_LINES_ADDED, r->added, ADDED_COLS);
	if (!err)
		err = exec_columns(conn, table, ORDERS_LINES_SUMMARY, r->lines, LINES_COLS);
	if (!err)
		err = exec_columns(conn, table, ORDERS_TRANSITIONS, r->moves, MOVES_COLS);
	return err;
}

/* An order event's place in an order's life: created 1, a line 2, a status change 3; 0: not for the summary. */
static int order_phase(const char *type, const char **status)
{
	static const struct {
		const char *type, *status;
		int phase;
	} kinds[] = {
		{ "OrderCreated", NULL, 1 },	   { "OrderLineAdded", NULL, 2 },  { "OrderLineRemoved", NULL, 2 },
		{ "OrderPlaced", "placed", 3 },	   { "OrderConfirmed", "confirmed", 3 },
		{ "OrderShipped", "shipped", 3 }, { "OrderCancelled", "cancelled", 3 },
	};
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
		if (strcmp(type, kinds[i].type) == 0) {
			*status = kinds[i].status;
			return kinds[i].phase;
		}
	return 0;
}

/*
 * Folding (replays): an order whose OrderCreated is in the batch is built
 * in C from its events and written once, instead of a creation, its lines
 * and then its counters and status rewritten by each later statement of the
 * batch (three writes of the summary row for an order placed in the
 * batch).  It follows the per-event statements exactly: events before the
 * creation change nothing, a second creation changes nothing, a line added
 * adds its quantity and takes the new price, a line removed goes, a status
 * change sets its status, its time and a reason when given, and every event
 * that changes the summary moves its version and time.  An order whose
 * events hold anything unexpected is left to the run's statements.  Its
 * events still go to the run as well: once the folded row is there they
 * are all at or below its version and change nothing.
 */
struct fold_line {
	const char *sku;
	long long quantity, price;
};

struct fold_order {
	const char *id, *customer, *created_at, *email, *status, *reason, *updated_at;
	const char *at[4]; /* placed, confirmed, shipped, cancelled */
	json_t *address;
	long long version;
	struct fold_line *lines;
	size_t nlines, cap;
	bool broken;
};

enum { FOLD_COLS = 15, FOLD_LINE_COLS = 4 };

static int status_slot(const char *status)
{
	static const char *const kinds[] = { "placed", "confirmed", "shipped", "cancelled" };
	for (int i = 0; i < 4; i++)
		if (strcmp(status, kinds[i]) == 0)
			return i;
	return -1;
}

static bool fold_line_event(struct fold_order *o, const struct fd_feed_event *ev, bool removed)
{
	const char *sku = json_string_value(json_object_get(ev->data, "product_id"));
	if (!sku)
		return false;
	size_t i = 0;
	while (i < o->nlines && strcmp(o->lines[i].sku, sku) != 0)
		i++;
	if (removed) {
		if (i < o->nlines)
			o->lines[i] = o->lines[--o->nlines]; /* the rows are unordered */
		return true;
	}
	json_t *q = json_object_get(ev->data, "quantity");
	json_t *p = json_object_get(json_object_get(ev->data, "unit_price"), "amount_cents");
	if (!json_is_integer(q) || !json_is_integer(p))
		return false;
	if (i == o->nlines) {
		if (o->nlines == o->cap) {
			size_t cap = o->cap ? 2 * o->cap : 4;
			struct fold_line *l = realloc(o->lines, cap * sizeof *l);
			if (!l)
				return false;
			o->lines = l;
			o->cap = cap;
		}
		o->lines[o->nlines++] = (struct fold_line){ sku, 0, 0 };
	}
	o->lines[i].quantity += json_integer_value(q);
	o->lines[i].price = json_integer_value(p);
	return true;
}

/* Queue the folded orders (those not broken), each marked in `folded`; the caller frees them. */
static enum fd_err fold_write(PGconn *conn, const char *table, struct fold_order *orders, size_t norders,
			      struct seen *folded)
{
	struct fd_pg_array cols[FOLD_COLS + FOLD_LINE_COLS];
	for (int k = 0; k < FOLD_COLS + FOLD_LINE_COLS; k++)
		cols[k] = (struct fd_pg_array)FD_PG_ARRAY_INIT;
	struct fd_pg_array *lc = cols + FOLD_COLS;
	enum fd_err err = FD_OK;
	for (size_t i = 0; i < norders && !err; i++) {
		struct fold_order *o = &orders[i];
		if (o->broken)
			continue;
		*seen_at(folded, o->id, NULL) = 1;
		long long total = 0;
		for (size_t l = 0; l < o->nlines; l++) {
			total += o->lines[l].quantity * o->lines[l].price;
			fd_pg_array_add(&lc[0], o->id);
			fd_pg_array_add(&lc[1], o->lines[l].sku);
			fd_pg_array_add_int(&lc[2], o->lines[l].quantity);
			fd_pg_array_add_int(&lc[3], o->lines[l].price);
		}
		char *address = json_is_object(o->address) ? json_dumps(o->address, JSON_COMPACT) : NULL;
		if (json_is_object(o->address) && !address) {
			err = FD_ERR_NOMEM;
			break;
		}
		fd_pg_array_add(&cols[0], o->id);
		fd_pg_array_add(&cols[1], o->customer);
		fd_pg_array_add(&cols[2], o->status);
		fd_pg_array_add_int(&cols[3], (long long)o->nlines);
		fd_pg_array_add_int(&cols[4], total);
		fd_pg_array_add(&cols[5], o->created_at);
		for (int k = 0; k < 4; k++)
			fd_pg_array_add(&cols[6 + k], o->at[k]);
		fd_pg_array_add(&cols[10], o->reason);
		fd_pg_array_add(&cols[11], o->email);
		fd_pg_array_add(&cols[12], address);
		fd_pg_array_add_int(&cols[13], o->version);
		fd_pg_array_add(&cols[14], o->updated_at);
		free(address);
	}
	if (!err) /* nothing when no order was folded (no rows in cols[0]) */
		err = exec_columns(conn, table, ORDERS_FOLDED, cols, FOLD_COLS + FOLD_LINE_COLS);
	release_columns(cols, FOLD_COLS + FOLD_LINE_COLS);
	return err;
}

/*
 * Fold the orders created in this batch and queue their rows; each order
 * folded is marked in `folded` (made for n events).  Not with a system event
 * in the batch ($StreamDeleted, $SubjectErased): those batches go through
 * the runs alone.
 */
static enum fd_err order_fold(PGconn *conn, const char *table, const struct fd_feed_event *evs, size_t n,
			      struct seen *folded)
{
	size_t candidates = 0;
	for (size_t i = 0; i < n; i++) {
		if (evs[i].type[0] == '$')
			return FD_OK;
		candidates += strcmp(evs[i].type, "OrderCreated") == 0;
	}
	if (candidates == 0)
		return FD_OK;
	struct fold_order *orders = calloc(candidates, sizeof *orders);
	struct seen index;
	if (!orders || seen_init(&index, candidates) != FD_OK) {
		free(orders);
		return FD_ERR_NOMEM;
	}
	size_t norders = 0;
	for (size_t i = 0; i < n; i++) {
		const struct fd_feed_event *ev = &evs[i];
		const char *id = ev->stream + strlen("order-"), *status = NULL;
		int phase = order_phase(ev->type, &status);
		struct fd_uuid u;
		if (!phase || !fd_uuid_parse(id, &u))
			continue;
		int *slot = seen_at(&index, id, NULL);
		if (!*slot) {
			if (phase != 1)
				continue; /* no row to change yet: as the per-event statements */
			struct fold_order *o = &orders[norders];
			*slot = (int)++norders;
			o->id = id;
			o->customer = str(ev->data, "customer_id");
			o->created_at = o->updated_at = ev->recorded_at;
			o->email = json_string_value(json_object_get(ev->data, "email"));
			o->address = json_object_get(ev->data, "shipping_address");
			o->status = "draft";
			o->version = ev->version;
			o->broken = !json_is_string(json_object_get(ev->data, "customer_id"));
			continue;
		}
		struct fold_order *o = &orders[*slot - 1];
		if (o->broken || phase == 1 || ev->version <= o->version)
			continue; /* a second creation, or not above the row: unchanged */
		if (phase == 2) {
			if (!fold_line_event(o, ev, strcmp(ev->type, "OrderLineRemoved") == 0)) {
				o->broken = true;
				continue;
			}
		} else {
			o->status = status;
			o->at[status_slot(status)] = ev->recorded_at;
			const char *reason = json_string_value(json_object_get(ev->data, "reason"));
			if (reason)
				o->reason = reason;
		}
		o->version = ev->version;
		o->updated_at = ev->recorded_at;
	}
	enum fd_err err = fold_write(conn, table, orders, norders, folded);
	for (size_t i = 0; i < norders; i++)
		free(orders[i].lines);
	free(orders);
	free(index.slots);
	return err;
}

static enum fd_err order_handle_batch(PGconn *conn, const char *table, const struct fd_feed_event *evs, size_t n)
{
	struct order_run r;
	memset(&r, 0, sizeof r);
	struct seen seen = { 0 }, folded = { 0 };
	enum fd_err err = seen_init(&folded, n);
	if (!err)
		err = order_fold(conn, table, evs, n, &folded);
	if (!err)
		err = seen_init(&seen, n);
	for (size_t i = 0; !err && i < n; i++) {
		const struct fd_feed_event *ev = &evs[i];
		const char *id = ev->stream + strlen("order-"), *status = NULL;
		struct fd_uuid u;
		if (ev->type[0] != '$' && *seen_at(&folded, id, NULL))
			continue; /* its row is written whole by the fold */
		if (ev->type[0] == '$') {
			/* a system event ($StreamDeleted, $SubjectErased): after the run so far, on its own */
			if (!(err = order_run_flush(conn, table, &r)))
				err = order_handle(conn, table, ev);
			seen_reset(&seen);
			continue;
		}
		int phase = order_phase(ev->type, &status);
		if (!phase || !fd_uuid_parse(id, &u))
			continue; /* as order_handle: nothing for the summary */
		bool removed = strcmp(ev->type, "OrderLineRemoved") == 0;
		const char *sku = phase == 2 ? str(ev->data, "product_id") : NULL;
		int *order = seen_at(&seen, id, NULL), *line = sku ? seen_at(&seen, id, sku) : NULL;
		/* line states: 1 added in this run, 2 removed in it */
		if ((*order && (phase == 1 || phase < *order)) || (line && (*line == 2 || (removed && *line == 1)))) {
			if ((err = order_run_flush(conn, table, &r)))
				break;
			seen_reset(&seen);
			order = seen_at(&seen, id, NULL);
			line = sku ? seen_at(&seen, id, sku) : NULL;
		}
		*order = phase;
		if (line)
			*line = removed ? 2 : 1;
		if (phase == 1) {
			fd_pg_array_add(&r.created[0], id);
			fd_pg_array_add(&r.created[1], str(ev->data, "customer_id"));
			fd_pg_array_add(&r.created[2], ev->recorded_at);
			fd_pg_array_add_int(&r.created[3], ev->version);
			/* personal data: null (absent, or erased since) stays NULL */
			fd_pg_array_add(&r.created[4], json_string_value(json_object_get(ev->data, "email")));
			json_t *address = json_object_get(ev->data, "shipping_address");
			char *text = json_is_object(address) ? json_dumps(address, JSON_COMPACT) : NULL;
			if (json_is_object(address) && !text) {
				err = FD_ERR_NOMEM;
				break;
			}
			fd_pg_array_add(&r.created[5], text);
			free(text);
		} else if (phase == 2) {
			if (removed) {
				fd_pg_array_add(&r.removed[0], id);
				fd_pg_array_add(&r.removed[1], sku);
				fd_pg_array_add_int(&r.removed[2], ev->version);
			} else {
				fd_pg_array_add(&r.added[0], id);
				fd_pg_array_add(&r.added[1], sku);
				fd_pg_array_add_int(&r.added[2], ev->version);
				fd_pg_array_add_int(&r.added[3], json_integer_value(json_object_get(ev->data, "quantity")));
				fd_pg_array_add_int(&r.added[4], json_integer_value(json_object_get(
									 json_object_get(ev->data, "unit_price"), "amount_cents")));
			}
			fd_pg_array_add(&r.lines[0], id);
			fd_pg_array_add_int(&r.lines[1], ev->version);
			fd_pg_array_add(&r.lines[2], ev->recorded_at);
		} else {
			fd_pg_array_add(&r.moves[0], id);
			fd_pg_array_add(&r.moves[1], status);
			fd_pg_array_add(&r.moves[2], ev->recorded_at);
			fd_pg_array_add_int(&r.moves[3], ev->version);
			fd_pg_array_add(&r.moves[4], json_string_value(json_object_get(ev->data, "reason")));
		}
	}
	if (!err)
		err = order_run_flush(conn, table, &r);
	release_columns(r.created, CREATED_COLS);
	release_columns(r.removed, REMOVED_COLS);
	release_columns(r.added, ADDED_COLS);
	release_columns(r.lines, LINES_COLS);
	release_columns(r.moves, MOVES_COLS);
	free(seen.slots);
	free(folded.slots);
	return err;
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
	PRODUCTS_CREATED,
	PRODUCTS_MOVED,
	PRODUCT_DELETED,
};

static const char *const product_statements[] = {
	[PRODUCT_CREATED] = "INSERT INTO {table} (product_id, name, available, version, updated_at)"
			    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (product_id) DO NOTHING",
	[PRODUCT_RESTOCKED] = STOCK_MOVE("available = available + $2"),
	[STOCK_RESERVED] = STOCK_MOVE("available = available - $2, reserved = reserved + $2"),
	[RESERVATION_RELEASED] = STOCK_MOVE("available = available + $2, reserved = reserved - $2"),
	[RESERVATION_COMMITTED] = STOCK_MOVE("reserved = reserved - $2, committed = committed + $2"),
	/* The batch handler's: every product created in a run, then each product's moves summed. */
	[PRODUCTS_CREATED] =
		"INSERT INTO {table} (product_id, name, available, version, updated_at)"
		" SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::timestamptz[])"
		" ON CONFLICT (product_id) DO NOTHING",
	[PRODUCTS_MOVED] =
		"UPDATE {table} AS s SET available = s.available + x.available, reserved = s.reserved + x.reserved,"
		" committed = s.committed + x.committed, version = x.version, updated_at = x.at"
		" FROM (SELECT u.product_id, sum(u.available)::bigint AS available, sum(u.reserved)::bigint AS reserved,"
		"   sum(u.committed)::bigint AS committed, max(u.version) AS version,"
		"   (array_agg(u.at ORDER BY u.version DESC))[1] AS at"
		"   FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::timestamptz[])"
		"     AS u(product_id, available, reserved, committed, version, at)"
		"   JOIN {table} AS t ON t.product_id = u.product_id AND t.version < u.version"
		"   GROUP BY u.product_id) AS x"
		" WHERE s.product_id = x.product_id",
	[PRODUCT_DELETED] = "DELETE FROM {table} WHERE product_id = $1 AND version < $2",
	NULL,
};

static enum fd_err product_handle(PGconn *conn, const char *table, const struct fd_feed_event *ev)
{
	const char *id = ev->stream + strlen("product-");
	char version[24], q[24];
	snprintf(version, sizeof version, "%lld", (long long)ev->version);
	const char *t = ev->type;
	if (strcmp(t, FD_EVENT_STREAM_DELETED) == 0) {
		const char *params[] = { id, version };
		return fd_projection_exec(conn, table, PRODUCT_DELETED, 2, params);
	}
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


enum { PCREATED_COLS = 5, PMOVED_COLS = 6 };

static enum fd_err product_run_flush(PGconn *conn, const char *table, struct fd_pg_array *created,
				     struct fd_pg_array *moved)
{
	enum fd_err err = exec_columns(conn, table, PRODUCTS_CREATED, created, PCREATED_COLS);
	return err ? err : exec_columns(conn, table, PRODUCTS_MOVED, moved, PMOVED_COLS);
}

static enum fd_err product_handle_batch(PGconn *conn, const char *table, const struct fd_feed_event *evs, size_t n)
{
	/* How each type moves available, reserved and committed by its quantity. */
	static const struct {
		const char *type;
		int available, reserved, committed;
	} moves[] = {
		{ "ProductRestocked", 1, 0, 0 },
		{ "StockReserved", -1, 1, 0 },
		{ "ReservationReleased", 1, -1, 0 },
		{ "ReservationCommitted", 0, -1, 1 },
	};
	struct fd_pg_array created[PCREATED_COLS], moved[PMOVED_COLS]; /* product_id, name, stock, version, at; */
	memset(created, 0, sizeof created);                            /* product_id, the three moves, version, at */
	memset(moved, 0, sizeof moved);
	struct seen seen;
	enum fd_err err = seen_init(&seen, n);
	for (size_t i = 0; !err && i < n; i++) {
		const struct fd_feed_event *ev = &evs[i];
		const char *id = ev->stream + strlen("product-");
		if (ev->type[0] == '$') {
			/* a system event ($StreamDeleted): after the run so far, on its own */
			if (!(err = product_run_flush(conn, table, created, moved)))
				err = product_handle(conn, table, ev);
			seen_reset(&seen);
			continue;
		}
		bool create = strcmp(ev->type, "ProductCreated") == 0;
		size_t m = 0;
		while (!create && m < sizeof moves / sizeof moves[0] && strcmp(ev->type, moves[m].type) != 0)
			m++;
		if (!create && m == sizeof moves / sizeof moves[0])
			continue; /* as product_handle: nothing for the stock */
		int *state = seen_at(&seen, id, NULL);
		if (create && *state) {
			/* a product created again after events of it in this run: a run of its own */
			if ((err = product_run_flush(conn, table, created, moved)))
				break;
			seen_reset(&seen);
			state = seen_at(&seen, id, NULL);
		}
		*state = 1;
		long long q = json_integer_value(json_object_get(ev->data, create ? "stock" : "quantity"));
		if (create) {
			fd_pg_array_add(&created[0], id);
			fd_pg_array_add(&created[1], str(ev->data, "name"));
			fd_pg_array_add_int(&created[2], q);
			fd_pg_array_add_int(&created[3], ev->version);
			fd_pg_array_add(&created[4], ev->recorded_at);
		} else {
			fd_pg_array_add(&moved[0], id);
			fd_pg_array_add_int(&moved[1], q * moves[m].available);
			fd_pg_array_add_int(&moved[2], q * moves[m].reserved);
			fd_pg_array_add_int(&moved[3], q * moves[m].committed);
			fd_pg_array_add_int(&moved[4], ev->version);
			fd_pg_array_add(&moved[5], ev->recorded_at);
		}
	}
	if (!err)
		err = product_run_flush(conn, table, created, moved);
	release_columns(created, PCREATED_COLS);
	release_columns(moved, PMOVED_COLS);
	free(seen.slots);
	return err;
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
	.handle_batch = order_handle_batch,
};

const struct fd_projection shop_product_stock = {
	.name = "product_stock",
	.table = "product_stock",
	.categories = product_categories,
	.create_sql = product_stock_sql,
	.version = 1,
	.statements = product_statements,
	.handle = product_handle,
	.handle_batch = product_handle_batch,
};
