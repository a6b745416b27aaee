/*
 * product.c - the product (inventory) aggregate: stock is created and
 * restocked, reserved for an order all or nothing, and a reservation is
 * either released back to available stock or committed (sold).
 *
 * Invariant after every apply and restore:
 *   available + reserved + committed == stocked, all non-negative, and
 *   reserved == the sum of the open reservations (one per order at most).
 * apply() accepts exactly the events decide() can produce from the current
 * state; anything else with a known type is FD_ERR_INVAL and leaves the
 * state unchanged.  Pure; thread-safe (each state has one owner).
 */
#include "shop.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------ */

static struct fd_reservation *find_reservation(const struct fd_product *p, const char *order_id)
{
	for (size_t i = 0; i < p->nres; i++)
		if (strcmp(p->reservations[i].order_id, order_id) == 0)
			return &p->reservations[i];
	return NULL;
}

static void remove_reservation(struct fd_product *p, struct fd_reservation *r)
{
	size_t i = (size_t)(r - p->reservations);
	memmove(&p->reservations[i], &p->reservations[i + 1], (p->nres - i - 1) * sizeof *r);
	p->nres--;
}

static enum fd_err reserve_slots(struct fd_product *p, size_t need)
{
	if (need <= p->cap)
		return FD_OK;
	size_t cap = p->cap ? p->cap * 2 : 4;
	if (cap < need)
		cap = need;
	struct fd_reservation *r = realloc(p->reservations, cap * sizeof *r);
	if (!r)
		return FD_ERR_NOMEM;
	p->reservations = r;
	p->cap = cap;
	return FD_OK;
}

static json_t *reservations_json(const struct fd_product *p)
{
	json_t *arr = json_array();
	if (!arr)
		return NULL;
	for (size_t i = 0; i < p->nres; i++) {
		json_t *r = json_pack("{s:s, s:I}", "order_id", p->reservations[i].order_id, "quantity",
				      (json_int_t)p->reservations[i].quantity);
		if (json_array_append_new(arr, r) != 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

/* ---- state -------------------------------------------------------------------- */

static void product_init(void *state)
{
	memset(state, 0, sizeof(struct fd_product));
}

static void product_release(void *state)
{
	struct fd_product *p = state;
	free(p->name);
	free(p->reservations);
	memset(p, 0, sizeof *p);
}

/* ---- apply -------------------------------------------------------------------- */

static enum fd_err on_created(struct fd_product *p, const json_t *data)
{
	static const char *const keys[] = {"name", "stock"};
	struct fd_decision d;
	const char *name;
	int64_t stock;
	if (p->exists || !fd_payload_only(data, keys, 2, &d) ||
	    !fd_payload_string(data, "name", 1, FD_NAME_MAX, false, &name, &d) ||
	    !fd_payload_int(data, "stock", 0, FD_STOCK_MAX, false, &stock, &d))
		return FD_ERR_INVAL;
	char *copy = strdup(name);
	if (!copy)
		return FD_ERR_NOMEM;
	p->exists = true;
	p->name = copy;
	p->available = p->stocked = stock;
	return FD_OK;
}

static enum fd_err on_restocked(struct fd_product *p, const json_t *data)
{
	static const char *const keys[] = {"quantity"};
	struct fd_decision d;
	int64_t quantity, stocked;
	if (!p->exists || !fd_payload_only(data, keys, 1, &d) ||
	    !fd_payload_int(data, "quantity", 1, FD_STOCK_MAX, false, &quantity, &d) ||
	    __builtin_add_overflow(p->stocked, quantity, &stocked))
		return FD_ERR_INVAL;
	p->stocked = stocked;
	p->available += quantity;
	return FD_OK;
}

static enum fd_err on_reserved(struct fd_product *p, const json_t *data)
{
	static const char *const keys[] = {"order_id", "quantity"};
	struct fd_decision d;
	struct fd_reservation r = {{0}, 0};
	if (!p->exists || !fd_payload_only(data, keys, 2, &d) || !fd_payload_uuid(data, "order_id", r.order_id, &d) ||
	    !fd_payload_int(data, "quantity", 1, INT64_MAX, false, &r.quantity, &d) || r.quantity > p->available ||
	    find_reservation(p, r.order_id))
		return FD_ERR_INVAL;
	enum fd_err err = reserve_slots(p, p->nres + 1);
	if (err)
		return err;
	p->reservations[p->nres++] = r;
	p->available -= r.quantity;
	p->reserved += r.quantity;
	return FD_OK;
}

/* ReservationReleased and ReservationCommitted: the whole open reservation. */
static struct fd_reservation *closing(struct fd_product *p, const json_t *data)
{
	static const char *const keys[] = {"order_id", "quantity"};
	struct fd_decision d;
	char order_id[40];
	int64_t quantity;
	if (!p->exists || !fd_payload_only(data, keys, 2, &d) || !fd_payload_uuid(data, "order_id", order_id, &d) ||
	    !fd_payload_int(data, "quantity", 1, INT64_MAX, false, &quantity, &d))
		return NULL;
	struct fd_reservation *r = find_reservation(p, order_id);
	return r && r->quantity == quantity ? r : NULL;
}

static enum fd_err on_released(struct fd_product *p, const json_t *data)
{
	struct fd_reservation *r = closing(p, data);
	if (!r)
		return FD_ERR_INVAL;
	p->reserved -= r->quantity;
	p->available += r->quantity;
	remove_reservation(p, r);
	return FD_OK;
}

static enum fd_err on_committed(struct fd_product *p, const json_t *data)
{
	struct fd_reservation *r = closing(p, data);
	if (!r)
		return FD_ERR_INVAL;
	p->reserved -= r->quantity;
	p->committed += r->quantity;
	remove_reservation(p, r);
	return FD_OK;
}

static const struct {
	const char *type;
	enum fd_err (*apply)(struct fd_product *p, const json_t *data);
} event_types[] = {
	{.type = "ProductCreated", .apply = on_created},
	{.type = "ProductRestocked", .apply = on_restocked},
	{.type = "StockReserved", .apply = on_reserved},
	{.type = "ReservationReleased", .apply = on_released},
	{.type = "ReservationCommitted", .apply = on_committed},
};

static enum fd_err product_apply(void *state, const char *type, const json_t *data)
{
	if (!type)
		return FD_ERR_INVAL;
	for (size_t i = 0; i < sizeof event_types / sizeof event_types[0]; i++)
		if (strcmp(event_types[i].type, type) == 0)
			return event_types[i].apply(state, data);
	return FD_OK;
}

/* ---- snapshot, restore, view ------------------------------------------------- */

static json_t *product_view(const void *state)
{
	const struct fd_product *p = state;
	return json_pack("{s:s?, s:I, s:I, s:I, s:I, s:o}", "name", p->name, "available", (json_int_t)p->available,
			 "reserved", (json_int_t)p->reserved, "committed", (json_int_t)p->committed, "stocked",
			 (json_int_t)p->stocked, "reservations", reservations_json(p));
}

/* The view's fields plus "exists"; a product not yet created is {"exists": false}. */
static json_t *product_snapshot(const void *state)
{
	const struct fd_product *p = state;
	if (!p->exists)
		return json_pack("{s:b}", "exists", 0);
	json_t *snap = product_view(state);
	if (snap && json_object_set_new(snap, "exists", json_true()) != 0) {
		json_decref(snap);
		return NULL;
	}
	return snap;
}

/* Strict: every field present and well-typed, the invariant holding exactly. */
static enum fd_err product_restore(void *state, const json_t *snap)
{
	static const char *const keys[] = {
		"exists", "name", "available", "reserved", "committed", "stocked", "reservations",
	};
	static const char *const res_keys[] = {"order_id", "quantity"};
	struct fd_product t = {0};
	struct fd_decision d;
	const char *name;
	const json_t *exists = json_object_get(snap, "exists");
	const json_t *res = json_object_get(snap, "reservations");
	size_t n = json_array_size(res);
	int64_t sum = 0, total;
	enum fd_err err = FD_ERR_INVAL;

	if (!fd_payload_only(snap, keys, 7, &d) || !json_is_boolean(exists))
		goto done;
	if (!json_is_true(exists)) {
		err = json_object_size(snap) == 1 ? FD_OK : FD_ERR_INVAL;
		goto done;
	}
	if (!fd_payload_string(snap, "name", 1, FD_NAME_MAX, false, &name, &d) ||
	    !fd_payload_int(snap, "available", 0, INT64_MAX, false, &t.available, &d) ||
	    !fd_payload_int(snap, "reserved", 0, INT64_MAX, false, &t.reserved, &d) ||
	    !fd_payload_int(snap, "committed", 0, INT64_MAX, false, &t.committed, &d) ||
	    !fd_payload_int(snap, "stocked", 0, INT64_MAX, false, &t.stocked, &d) || !json_is_array(res) ||
	    __builtin_add_overflow(t.available, t.reserved, &total) ||
	    __builtin_add_overflow(total, t.committed, &total) || total != t.stocked)
		goto done;
	if (reserve_slots(&t, n) != FD_OK) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *r = json_array_get(res, i);
		struct fd_reservation *slot = &t.reservations[t.nres];
		memset(slot, 0, sizeof *slot);
		if (!fd_payload_only(r, res_keys, 2, &d) || !fd_payload_uuid(r, "order_id", slot->order_id, &d) ||
		    !fd_payload_int(r, "quantity", 1, INT64_MAX, false, &slot->quantity, &d) ||
		    find_reservation(&t, slot->order_id) || __builtin_add_overflow(sum, slot->quantity, &sum))
			goto done;
		t.nres++;
	}
	if (sum != t.reserved)
		goto done;
	t.name = strdup(name);
	t.exists = true;
	err = t.name ? FD_OK : FD_ERR_NOMEM;
done:
	if (err == FD_OK) {
		product_release(state);
		*(struct fd_product *)state = t;
	} else {
		product_release(&t);
	}
	return err;
}

/* ---- commands ----------------------------------------------------------------- */

static bool found(const struct fd_product *p, struct fd_decision *out)
{
	if (p->exists)
		return true;
	fd_decide_refuse(out, "product-not-found", "Product not found", "the product has not been created");
	return false;
}

static bool reservation_found(const struct fd_reservation *r, const char *order_id, struct fd_decision *out)
{
	if (r)
		return true;
	fd_decide_refuse(out, "reservation-not-found", "Reservation not found",
			 "order %s holds no reservation on this product", order_id);
	return false;
}

static enum fd_err decide_create(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const keys[] = {"name", "stock"};
	const struct fd_product *p = state;
	const char *name;
	int64_t stock;
	if (!fd_payload_only(payload, keys, 2, out) ||
	    !fd_payload_string(payload, "name", 1, FD_NAME_MAX, false, &name, out) ||
	    !fd_payload_int(payload, "stock", 0, FD_STOCK_MAX, false, &stock, out))
		return FD_OK;
	if (p->exists) {
		fd_decide_refuse(out, "product-exists", "Product already exists", "the product was created before");
		return FD_OK;
	}
	return fd_decide_event(out, "ProductCreated", json_pack("{s:s, s:I}", "name", name, "stock", (json_int_t)stock));
}

static enum fd_err decide_restock(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const keys[] = {"quantity"};
	const struct fd_product *p = state;
	int64_t quantity, stocked;
	if (!found(p, out) || !fd_payload_only(payload, keys, 1, out) ||
	    !fd_payload_int(payload, "quantity", 1, FD_STOCK_MAX, false, &quantity, out))
		return FD_OK;
	if (__builtin_add_overflow(p->stocked, quantity, &stocked)) {
		fd_decide_refuse(out, "stock-too-large", "Stock too large", "the stock would not fit in 64 bits");
		return FD_OK;
	}
	return fd_decide_event(out, "ProductRestocked", json_pack("{s:I}", "quantity", (json_int_t)quantity));
}

static enum fd_err decide_reserve(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const keys[] = {"order_id", "quantity"};
	const struct fd_product *p = state;
	char order_id[40];
	int64_t quantity;
	if (!found(p, out) || !fd_payload_only(payload, keys, 2, out) ||
	    !fd_payload_uuid(payload, "order_id", order_id, out) ||
	    !fd_payload_int(payload, "quantity", 1, INT64_MAX, false, &quantity, out))
		return FD_OK;
	if (find_reservation(p, order_id)) {
		fd_decide_refuse(out, "already-reserved", "Order already holds a reservation",
				 "order %s already holds a reservation on this product", order_id);
		return FD_OK;
	}
	if (quantity > p->available) {
		fd_decide_refuse(out, "insufficient-stock", "Insufficient stock",
				 "%" PRId64 " requested, %" PRId64 " available", quantity, p->available);
		return FD_OK;
	}
	return fd_decide_event(out, "StockReserved",
			       json_pack("{s:s, s:I}", "order_id", order_id, "quantity", (json_int_t)quantity));
}

/* release and commit: close the order's whole reservation with `type`. */
static enum fd_err decide_close(const struct fd_product *p, const json_t *payload, const char *type,
				struct fd_decision *out)
{
	static const char *const keys[] = {"order_id"};
	char order_id[40];
	if (!found(p, out) || !fd_payload_only(payload, keys, 1, out) || !fd_payload_uuid(payload, "order_id", order_id, out))
		return FD_OK;
	const struct fd_reservation *r = find_reservation(p, order_id);
	if (!reservation_found(r, order_id, out))
		return FD_OK;
	return fd_decide_event(out, type,
			       json_pack("{s:s, s:I}", "order_id", order_id, "quantity", (json_int_t)r->quantity));
}

static enum fd_err decide_release(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	return decide_close(state, payload, "ReservationReleased", out);
}

static enum fd_err decide_commit(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	return decide_close(state, payload, "ReservationCommitted", out);
}

static const struct fd_command_type commands[] = {
	{.name = "create", .decide = decide_create},
	{.name = "restock", .decide = decide_restock},
	{.name = "reserve", .decide = decide_reserve},
	{.name = "release", .decide = decide_release},
	{.name = "commit", .decide = decide_commit},
};

static bool product_exists(const void *state)
{
	return ((const struct fd_product *)state)->exists;
}

/* The product's events, each at schema version 1 so far (schema.h). */
static const struct fd_event_type product_event_types[] = {
	{ .type = "ProductCreated" },
	{ .type = "ProductRestocked" },
	{ .type = "StockReserved" },
	{ .type = "ReservationReleased" },
	{ .type = "ReservationCommitted" },
};

const struct fd_aggregate_type fd_product_type = {
	.name = "product",
	.category = "product",
	.id_field = "product_id",
	.id_is_uuid = false,
	.schema_version = 1,
	.snapshot_every = 100,
	.state_size = sizeof(struct fd_product),
	.init = product_init,
	.release = product_release,
	.apply = product_apply,
	.snapshot = product_snapshot,
	.restore = product_restore,
	.view = product_view,
	.exists = product_exists,
	.commands = commands,
	.ncommands = sizeof commands / sizeof commands[0],
	.events = { .types = product_event_types, .ntypes = FD_COUNT(product_event_types) },
};
