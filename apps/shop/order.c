/*
 * order.c - the order aggregate: a draft collects lines, is placed,
 * confirmed and shipped, and may be cancelled until it ships.
 *
 * apply() accepts exactly the events decide() can produce from the current
 * state; anything else with a known type is FD_ERR_INVAL and leaves the
 * state unchanged.  Pure; thread-safe (each state has one owner).
 */
#include "shop.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[] = {
	[FD_ORDER_NONE] = "none",
	[FD_ORDER_DRAFT] = "draft",
	[FD_ORDER_PLACED] = "placed",
	[FD_ORDER_CONFIRMED] = "confirmed",
	[FD_ORDER_SHIPPED] = "shipped",
	[FD_ORDER_CANCELLED] = "cancelled",
};

#define NSTATUS (sizeof status_names / sizeof status_names[0])

const char *fd_order_status_name(enum fd_order_status s)
{
	if ((unsigned)s < NSTATUS)
		return status_names[s];
	return "unknown";
}

static bool status_from_name(const char *name, enum fd_order_status *out)
{
	for (size_t i = 0; i < NSTATUS; i++) {
		if (strcmp(status_names[i], name) == 0) {
			*out = (enum fd_order_status)i;
			return true;
		}
	}
	return false;
}

/* ---- lines and totals --------------------------------------------------------- */

static bool lines_total(const struct fd_order_line *lines, size_t n, int64_t *out)
{
	int64_t total = 0, amount;
	for (size_t i = 0; i < n; i++)
		if (__builtin_mul_overflow(lines[i].quantity, lines[i].unit_price_cents, &amount) ||
		    __builtin_add_overflow(total, amount, &total))
			return false;
	*out = total;
	return true;
}

int64_t fd_order_total_cents(const struct fd_order *o)
{
	int64_t total;
	return lines_total(o->lines, o->nlines, &total) ? total : -1;
}

static struct fd_order_line *find_line(const struct fd_order *o, const char *product_id)
{
	for (size_t i = 0; i < o->nlines; i++)
		if (strcmp(o->lines[i].product_id, product_id) == 0)
			return &o->lines[i];
	return NULL;
}

/* The total after adding quantity of product_id at price; false on overflow. */
static bool total_after_add(const struct fd_order *o, const char *product_id, int64_t quantity, int64_t price,
			    int64_t *out)
{
	int64_t total = 0, amount;
	bool merged = false;
	for (size_t i = 0; i < o->nlines; i++) {
		int64_t q = o->lines[i].quantity;
		if (strcmp(o->lines[i].product_id, product_id) == 0) {
			if (__builtin_add_overflow(q, quantity, &q))
				return false;
			merged = true;
		}
		if (__builtin_mul_overflow(q, o->lines[i].unit_price_cents, &amount) ||
		    __builtin_add_overflow(total, amount, &total))
			return false;
	}
	if (!merged && (__builtin_mul_overflow(quantity, price, &amount) || __builtin_add_overflow(total, amount, &total)))
		return false;
	*out = total;
	return true;
}

/* The product_id field: a product's id (fd_aggregate_id_valid). */
static bool read_sku(const json_t *obj, const char **out, struct fd_decision *d)
{
	if (!fd_payload_string(obj, "product_id", 1, FD_SKU_MAX, false, out, d))
		return false;
	if (!fd_aggregate_id_valid(&fd_product_type, *out)) {
		fd_decide_invalid(d, "/product_id", "product_id may hold only letters, digits and _ . : -");
		return false;
	}
	return true;
}

bool shop_currency_valid(const char *s)
{
	return s && strlen(s) == FD_CURRENCY_LEN && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z' &&
	       s[2] >= 'A' && s[2] <= 'Z';
}

/* The currency member `key` of obj (three upper-case letters) into out; absent and optional: out untouched. */
static bool read_currency(const json_t *obj, const char *key, bool optional, char out[FD_CURRENCY_LEN + 1],
			  struct fd_decision *d)
{
	const char *c = NULL;
	if (!fd_payload_string(obj, key, FD_CURRENCY_LEN, FD_CURRENCY_LEN, optional, &c, d))
		return false;
	if (!c)
		return true;
	if (!shop_currency_valid(c)) {
		fd_decide_invalid(d, "/currency", "currency must be an ISO 4217 code: three upper-case letters");
		return false;
	}
	memcpy(out, c, FD_CURRENCY_LEN + 1);
	return true;
}

/* Whether a line object carries its currency. */
enum line_currency {
	LINE_NO_CURRENCY,       /* OrderPlaced's lines: cents only */
	LINE_OPTIONAL_CURRENCY, /* add_line's payload: SHOP_DEFAULT_CURRENCY when absent */
	LINE_CURRENCY,          /* a snapshot's lines */
};

/* One line object {product_id, quantity (1..qmax), unit_price_cents, currency per rule}. */
static bool read_line(const json_t *obj, int64_t qmax, enum line_currency rule, struct fd_order_line *out,
		      struct fd_decision *d)
{
	static const char *const keys[] = {"product_id", "quantity", "unit_price_cents", "currency"};
	const char *sku;
	int64_t quantity, price;
	memset(out, 0, sizeof *out);
	memcpy(out->currency, SHOP_DEFAULT_CURRENCY, FD_CURRENCY_LEN + 1);
	if (!fd_payload_only(obj, keys, rule == LINE_NO_CURRENCY ? 3 : 4, d) || !read_sku(obj, &sku, d) ||
	    !fd_payload_int(obj, "quantity", 1, qmax, false, &quantity, d) ||
	    !fd_payload_int(obj, "unit_price_cents", 0, FD_PRICE_MAX, false, &price, d) ||
	    (rule != LINE_NO_CURRENCY && !read_currency(obj, "currency", rule == LINE_OPTIONAL_CURRENCY, out->currency, d)))
		return false;
	memcpy(out->product_id, sku, strlen(sku));
	out->quantity = quantity;
	out->unit_price_cents = price;
	return true;
}

/* OrderLineAdded's data (version 2): {product_id, quantity, unit_price: {amount_cents, currency}}. */
static bool read_added_line(const json_t *data, struct fd_order_line *out, struct fd_decision *d)
{
	static const char *const keys[] = {"product_id", "quantity", "unit_price"};
	static const char *const price_keys[] = {"amount_cents", "currency"};
	const json_t *price = json_object_get(data, "unit_price");
	const char *sku;
	int64_t quantity, cents;
	memset(out, 0, sizeof *out);
	if (!fd_payload_only(data, keys, 3, d) || !read_sku(data, &sku, d) ||
	    !fd_payload_int(data, "quantity", 1, FD_QUANTITY_MAX, false, &quantity, d) || !json_is_object(price) ||
	    !fd_payload_only(price, price_keys, 2, d) ||
	    !fd_payload_int(price, "amount_cents", 0, FD_PRICE_MAX, false, &cents, d) ||
	    !read_currency(price, "currency", false, out->currency, d))
		return false;
	memcpy(out->product_id, sku, strlen(sku));
	out->quantity = quantity;
	out->unit_price_cents = cents;
	return true;
}

/*
 * OrderLineAdded version 1 -> 2: unit_price_cents becomes unit_price
 * {amount_cents, currency}, in the default currency: every line recorded
 * before currencies was in it.  Data without unit_price_cents is no
 * version-1 line.
 */
static enum fd_err line_added_v2(json_t *data, const void *services)
{
	json_t *cents = json_object_get(data, "unit_price_cents");
	if (!cents)
		return FD_ERR_INVAL;
	json_t *price = json_pack("{s:O, s:s}", "amount_cents", cents, "currency", shop_default_currency(services));
	if (!price || json_object_set_new(data, "unit_price", price) != 0)
		return FD_ERR_NOMEM;
	json_object_del(data, "unit_price_cents");
	return FD_OK;
}

/* The lines as JSON; with_currency adds each line's currency (OrderPlaced's lines have none). */
static json_t *lines_json(const struct fd_order_line *lines, size_t n, bool with_currency)
{
	json_t *arr = json_array();
	if (!arr)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		json_t *line = json_pack("{s:s, s:I, s:I}", "product_id", lines[i].product_id, "quantity",
					 (json_int_t)lines[i].quantity, "unit_price_cents",
					 (json_int_t)lines[i].unit_price_cents);
		if (line && with_currency && json_object_set_new(line, "currency", json_string(lines[i].currency)) != 0) {
			json_decref(line);
			line = NULL;
		}
		if (json_array_append_new(arr, line) != 0) {
			json_decref(arr);
			return NULL;
		}
	}
	return arr;
}

/* The currency every line has, or NULL when there are none or they differ. */
static const char *order_currency(const struct fd_order *o)
{
	for (size_t i = 1; i < o->nlines; i++)
		if (strcmp(o->lines[i].currency, o->lines[0].currency) != 0)
			return NULL;
	return o->nlines ? o->lines[0].currency : NULL;
}

static enum fd_err reserve_lines(struct fd_order *o, size_t need)
{
	if (need <= o->cap)
		return FD_OK;
	size_t cap = o->cap ? o->cap * 2 : 8;
	if (cap < need)
		cap = need;
	struct fd_order_line *p = realloc(o->lines, cap * sizeof *p);
	if (!p)
		return FD_ERR_NOMEM;
	o->lines = p;
	o->cap = cap;
	return FD_OK;
}

/* ---- state -------------------------------------------------------------------- */

static void order_init(void *state)
{
	memset(state, 0, sizeof(struct fd_order));
}

static void order_release(void *state)
{
	struct fd_order *o = state;
	free(o->customer_id);
	free(o->lines);
	free(o->cancel_reason);
	json_decref(o->email);
	json_decref(o->shipping_address);
	memset(o, 0, sizeof *o);
}

/* ---- apply -------------------------------------------------------------------- */

/* ---- the customer's personal data ------------------------------------------------ */

#define EMAIL_MAX 254
#define ADDRESS_PART_MAX 200

/* An e-mail address as the shop takes it: 3-254 characters with an @ neither first nor last. */
static bool email_valid(const json_t *v)
{
	const char *s = json_string_value(v);
	size_t n = s ? strlen(s) : 0;
	const char *at = s ? strchr(s, '@') : NULL;
	if (!s || n < 3 || n > EMAIL_MAX || !at || at == s || at == s + n - 1)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f)
			return false;
	return true;
}

/*
 * {name, street, city, postal_code, country}: every member a non-blank
 * string (postal_code at most 20 characters), country two capital letters
 * (ISO 3166-1 alpha-2).  False with out set to the offending field.
 */
static bool address_valid(const json_t *v, struct fd_decision *out)
{
	static const char *const keys[] = {"name", "street", "city", "postal_code", "country"};
	static const size_t max[] = {ADDRESS_PART_MAX, ADDRESS_PART_MAX, ADDRESS_PART_MAX, 20, 2};
	if (!json_is_object(v)) {
		fd_decide_invalid(out, "/shipping_address", "shipping_address must be an object {name, street, city, "
							  "postal_code, country}");
		return false;
	}
	const char *key;
	json_t *m;
	json_object_foreach((json_t *)v, key, m) {
		bool known = false;
		for (size_t i = 0; i < 5 && !known; i++)
			known = strcmp(key, keys[i]) == 0;
		if (!known) {
			fd_decide_invalid(out, "/shipping_address", "unknown field in shipping_address: %.64s", key);
			return false;
		}
	}
	for (size_t i = 0; i < 5; i++) {
		const char *s = json_string_value(json_object_get(v, keys[i]));
		size_t n = s ? strlen(s) : 0;
		bool ok = s && n >= 1 && n <= max[i] && strspn(s, " ") < n;
		if (ok && i == 4)
			ok = n == 2 && s[0] >= 'A' && s[0] <= 'Z' && s[1] >= 'A' && s[1] <= 'Z';
		if (!ok) {
			char field[48];
			snprintf(field, sizeof field, "/shipping_address/%s", keys[i]);
			if (i == 4)
				fd_decide_invalid(out, field, "country must be two capital letters (ISO 3166-1 alpha-2)");
			else
				fd_decide_invalid(out, field, "%s must be a non-blank string of at most %zu characters",
						  keys[i], max[i]);
			return false;
		}
	}
	return true;
}

static enum fd_err on_created(struct fd_order *o, const json_t *data)
{
	static const char *const keys[] = {"customer_id", "email", "shipping_address"};
	struct fd_decision d;
	const char *customer;
	/* personal values are null once their subject was erased */
	const json_t *email = json_object_get(data, "email"), *address = json_object_get(data, "shipping_address");
	if (o->status != FD_ORDER_NONE || !fd_payload_only(data, keys, 3, &d) ||
	    !fd_payload_string(data, "customer_id", 1, FD_CUSTOMER_MAX, false, &customer, &d) ||
	    (email && !json_is_null(email) && !email_valid(email)) ||
	    (address && !json_is_null(address) && !address_valid(address, &d)))
		return FD_ERR_INVAL;
	char *copy = strdup(customer);
	if (!copy)
		return FD_ERR_NOMEM;
	o->customer_id = copy;
	o->email = email ? json_deep_copy(email) : NULL;
	o->shipping_address = address ? json_deep_copy(address) : NULL;
	o->status = FD_ORDER_DRAFT;
	return FD_OK;
}

static enum fd_err on_line_added(struct fd_order *o, const json_t *data)
{
	struct fd_decision d;
	struct fd_order_line line;
	int64_t total;
	if (o->status != FD_ORDER_DRAFT || !read_added_line(data, &line, &d))
		return FD_ERR_INVAL;
	struct fd_order_line *have = find_line(o, line.product_id);
	if (have && (have->unit_price_cents != line.unit_price_cents || strcmp(have->currency, line.currency) != 0))
		return FD_ERR_INVAL;
	if (!have && o->nlines >= FD_ORDER_MAX_LINES)
		return FD_ERR_INVAL;
	if (!total_after_add(o, line.product_id, line.quantity, line.unit_price_cents, &total))
		return FD_ERR_INVAL;
	if (have) {
		have->quantity += line.quantity;
		return FD_OK;
	}
	enum fd_err err = reserve_lines(o, o->nlines + 1);
	if (err)
		return err;
	o->lines[o->nlines++] = line;
	return FD_OK;
}

static enum fd_err on_line_removed(struct fd_order *o, const json_t *data)
{
	static const char *const keys[] = {"product_id"};
	struct fd_decision d;
	const char *sku;
	if (o->status != FD_ORDER_DRAFT || !fd_payload_only(data, keys, 1, &d) || !read_sku(data, &sku, &d))
		return FD_ERR_INVAL;
	struct fd_order_line *line = find_line(o, sku);
	if (!line)
		return FD_ERR_INVAL;
	size_t i = (size_t)(line - o->lines);
	memmove(&o->lines[i], &o->lines[i + 1], (o->nlines - i - 1) * sizeof *line);
	o->nlines--;
	return FD_OK;
}

/* The event repeats the order's lines and total; both must match the state. */
static enum fd_err on_placed(struct fd_order *o, const json_t *data)
{
	static const char *const keys[] = {"lines", "total_cents"};
	struct fd_decision d;
	int64_t total, expected;
	if (o->status != FD_ORDER_DRAFT || o->nlines == 0 || !fd_payload_only(data, keys, 2, &d) ||
	    !fd_payload_int(data, "total_cents", 0, INT64_MAX, false, &total, &d))
		return FD_ERR_INVAL;
	const json_t *lines = json_object_get(data, "lines");
	if (!json_is_array(lines) || json_array_size(lines) != o->nlines)
		return FD_ERR_INVAL;
	for (size_t i = 0; i < o->nlines; i++) {
		struct fd_order_line line;
		if (!read_line(json_array_get(lines, i), INT64_MAX, LINE_NO_CURRENCY, &line, &d))
			return FD_ERR_INVAL;
		if (strcmp(line.product_id, o->lines[i].product_id) != 0 || line.quantity != o->lines[i].quantity ||
		    line.unit_price_cents != o->lines[i].unit_price_cents)
			return FD_ERR_INVAL;
	}
	if (!lines_total(o->lines, o->nlines, &expected) || total != expected || !order_currency(o))
		return FD_ERR_INVAL;
	o->status = FD_ORDER_PLACED;
	return FD_OK;
}

static enum fd_err on_confirmed(struct fd_order *o, const json_t *data)
{
	struct fd_decision d;
	if (o->status != FD_ORDER_PLACED || !fd_payload_only(data, NULL, 0, &d))
		return FD_ERR_INVAL;
	o->status = FD_ORDER_CONFIRMED;
	return FD_OK;
}

static enum fd_err on_shipped(struct fd_order *o, const json_t *data)
{
	struct fd_decision d;
	if (o->status != FD_ORDER_CONFIRMED || !fd_payload_only(data, NULL, 0, &d))
		return FD_ERR_INVAL;
	o->status = FD_ORDER_SHIPPED;
	return FD_OK;
}

static bool cancellable(enum fd_order_status s)
{
	return s == FD_ORDER_DRAFT || s == FD_ORDER_PLACED || s == FD_ORDER_CONFIRMED;
}

static enum fd_err on_cancelled(struct fd_order *o, const json_t *data)
{
	static const char *const keys[] = {"reason"};
	struct fd_decision d;
	const char *reason;
	if (!cancellable(o->status) || !fd_payload_only(data, keys, 1, &d) ||
	    !fd_payload_string(data, "reason", 1, FD_REASON_MAX, false, &reason, &d))
		return FD_ERR_INVAL;
	char *copy = strdup(reason);
	if (!copy)
		return FD_ERR_NOMEM;
	o->cancel_reason = copy;
	o->status = FD_ORDER_CANCELLED;
	return FD_OK;
}

static const struct {
	const char *type;
	enum fd_err (*apply)(struct fd_order *o, const json_t *data);
} event_types[] = {
	{.type = "OrderCreated", .apply = on_created},
	{.type = "OrderLineAdded", .apply = on_line_added},
	{.type = "OrderLineRemoved", .apply = on_line_removed},
	{.type = "OrderPlaced", .apply = on_placed},
	{.type = "OrderConfirmed", .apply = on_confirmed},
	{.type = "OrderShipped", .apply = on_shipped},
	{.type = "OrderCancelled", .apply = on_cancelled},
};

static enum fd_err order_apply(void *state, const char *type, const json_t *data)
{
	if (!type)
		return FD_ERR_INVAL;
	for (size_t i = 0; i < sizeof event_types / sizeof event_types[0]; i++)
		if (strcmp(event_types[i].type, type) == 0)
			return event_types[i].apply(state, data);
	return FD_OK;
}

/* ---- snapshot, restore, view ------------------------------------------------- */

static json_t *order_snapshot(const void *state)
{
	const struct fd_order *o = state;
	if (o->status == FD_ORDER_NONE)
		return json_pack("{s:s}", "status", fd_order_status_name(o->status));
	json_t *snap = json_pack("{s:s, s:s, s:o}", "status", fd_order_status_name(o->status), "customer_id",
				 o->customer_id, "lines", lines_json(o->lines, o->nlines, true));
	if (snap && ((o->email && json_object_set(snap, "email", o->email)) ||
		     (o->shipping_address && json_object_set(snap, "shipping_address", o->shipping_address)))) {
		json_decref(snap);
		return NULL;
	}
	if (snap && o->cancel_reason && json_object_set_new(snap, "cancel_reason", json_string(o->cancel_reason)) != 0) {
		json_decref(snap);
		return NULL;
	}
	return snap;
}

static bool placed_or_later(enum fd_order_status s)
{
	return s == FD_ORDER_PLACED || s == FD_ORDER_CONFIRMED || s == FD_ORDER_SHIPPED;
}

/*
 * A snapshot must describe a state apply() could have reached: known
 * status, valid customer, distinct valid lines whose total fits in int64,
 * at least one line once placed, and a cancel reason exactly when cancelled.
 */
static enum fd_err order_restore(void *state, const json_t *snap)
{
	static const char *const keys[] = {"status", "customer_id", "lines", "cancel_reason", "email",
					   "shipping_address"};
	struct fd_order t = {0};
	struct fd_decision d;
	const char *status, *customer = NULL, *reason = NULL;
	const json_t *lines = json_object_get(snap, "lines");
	size_t n = json_array_size(lines);
	enum fd_err err = FD_ERR_INVAL;
	int64_t total;

	const json_t *email = json_object_get(snap, "email"), *address = json_object_get(snap, "shipping_address");
	if (!fd_payload_only(snap, keys, 6, &d) || !fd_payload_string(snap, "status", 1, 16, false, &status, &d) ||
	    !status_from_name(status, &t.status))
		goto done;
	if (t.status == FD_ORDER_NONE) {
		err = json_object_size(snap) == 1 ? FD_OK : FD_ERR_INVAL;
		goto done;
	}
	if (!fd_payload_string(snap, "customer_id", 1, FD_CUSTOMER_MAX, false, &customer, &d) ||
	    !fd_payload_string(snap, "cancel_reason", 1, FD_REASON_MAX, true, &reason, &d) ||
	    (reason != NULL) != (t.status == FD_ORDER_CANCELLED) || !json_is_array(lines) ||
	    n > FD_ORDER_MAX_LINES || (n == 0 && placed_or_later(t.status)) ||
	    (email && !json_is_null(email) && !email_valid(email)) ||
	    (address && !json_is_null(address) && !address_valid(address, &d)))
		goto done;
	if (reserve_lines(&t, n) != FD_OK) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		struct fd_order_line line;
		if (!read_line(json_array_get(lines, i), INT64_MAX, LINE_CURRENCY, &line, &d) ||
		    find_line(&t, line.product_id))
			goto done;
		t.lines[t.nlines++] = line;
	}
	if (!lines_total(t.lines, t.nlines, &total) || (placed_or_later(t.status) && !order_currency(&t)))
		goto done;
	t.customer_id = strdup(customer);
	t.cancel_reason = reason ? strdup(reason) : NULL;
	t.email = email ? json_deep_copy(email) : NULL;
	t.shipping_address = address ? json_deep_copy(address) : NULL;
	err = !t.customer_id || (reason && !t.cancel_reason) || (email && !t.email) || (address && !t.shipping_address)
		      ? FD_ERR_NOMEM
		      : FD_OK;
done:
	if (err == FD_OK) {
		order_release(state);
		*(struct fd_order *)state = t;
	} else {
		order_release(&t);
	}
	return err;
}

static json_t *order_view(const void *state)
{
	const struct fd_order *o = state;
	json_t *view = json_pack("{s:s?, s:s, s:o, s:I}", "customer_id", o->customer_id, "status",
				 fd_order_status_name(o->status), "lines", lines_json(o->lines, o->nlines, true),
				 "total_cents", (json_int_t)fd_order_total_cents(o));
	const char *currency = order_currency(o);
	if (view && currency && json_object_set_new(view, "currency", json_string(currency)) != 0) {
		json_decref(view);
		return NULL;
	}
	if (view && o->cancel_reason && json_object_set_new(view, "cancel_reason", json_string(o->cancel_reason)) != 0) {
		json_decref(view);
		return NULL;
	}
	if (view && ((o->email && json_object_set(view, "email", o->email)) ||
		     (o->shipping_address && json_object_set(view, "shipping_address", o->shipping_address)))) {
		json_decref(view);
		return NULL;
	}
	return view;
}

/* ---- commands ----------------------------------------------------------------- */

static bool found(const struct fd_order *o, struct fd_decision *out)
{
	if (o->status != FD_ORDER_NONE)
		return true;
	fd_decide_refuse(out, "order-not-found", "Order not found", "the order has not been created");
	return false;
}

static bool draft(const struct fd_order *o, struct fd_decision *out)
{
	if (o->status == FD_ORDER_DRAFT)
		return true;
	fd_decide_refuse(out, "order-not-draft", "Order is not a draft", "the order is %s",
			 fd_order_status_name(o->status));
	return false;
}

static enum fd_err decide_create(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const keys[] = {"customer_id", "email", "shipping_address"};
	const struct fd_order *o = state;
	const char *customer;
	const json_t *email = json_object_get(payload, "email"), *address = json_object_get(payload, "shipping_address");
	if (!fd_payload_only(payload, keys, 3, out) ||
	    !fd_payload_string(payload, "customer_id", 1, FD_CUSTOMER_MAX, false, &customer, out))
		return FD_OK;
	if (email && !email_valid(email)) {
		fd_decide_invalid(out, "/email", "email must be an e-mail address of at most %d characters", EMAIL_MAX);
		return FD_OK;
	}
	if (address && !address_valid(address, out))
		return FD_OK;
	if ((email || address) && !fd_subject_id_valid(customer)) {
		/* the customer is the data subject of them: erasure finds them by this id */
		fd_decide_invalid(out, "/customer_id", "an order with an email or shipping_address needs a customer_id of "
						       "1 to %d characters of A-Z a-z 0-9 _ . : @ + -",
				  FD_SUBJECT_ID_MAX);
		return FD_OK;
	}
	if (o->status != FD_ORDER_NONE) {
		fd_decide_refuse(out, "order-exists", "Order already exists", "the order is %s",
				 fd_order_status_name(o->status));
		return FD_OK;
	}
	json_t *data = json_pack("{s:s}", "customer_id", customer);
	if (data && ((email && json_object_set(data, "email", (json_t *)email)) ||
		     (address && json_object_set(data, "shipping_address", (json_t *)address)))) {
		json_decref(data);
		return FD_ERR_NOMEM;
	}
	return fd_decide_event(out, "OrderCreated", data);
}

static enum fd_err decide_add_line(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct fd_order *o = state;
	struct fd_order_line line;
	int64_t total;
	if (!found(o, out) || !read_line(payload, FD_QUANTITY_MAX, LINE_OPTIONAL_CURRENCY, &line, out) ||
	    !draft(o, out))
		return FD_OK;
	const struct fd_order_line *have = find_line(o, line.product_id);
	if (have && (have->unit_price_cents != line.unit_price_cents || strcmp(have->currency, line.currency) != 0)) {
		fd_decide_refuse(out, "price-mismatch", "Price differs from the order's line",
				 "%s is on the order at %" PRId64 " cents %s, not %" PRId64 " %s", line.product_id,
				 have->unit_price_cents, have->currency, line.unit_price_cents, line.currency);
		return FD_OK;
	}
	if (!have && o->nlines >= FD_ORDER_MAX_LINES) {
		fd_decide_refuse(out, "too-many-lines", "Order has too many lines", "an order holds at most %d lines",
				 FD_ORDER_MAX_LINES);
		return FD_OK;
	}
	if (!total_after_add(o, line.product_id, line.quantity, line.unit_price_cents, &total)) {
		fd_decide_refuse(out, "amount-too-large", "Amount too large",
				 "the order's total would not fit in 64 bits");
		return FD_OK;
	}
	return fd_decide_event(out, "OrderLineAdded",
			       json_pack("{s:s, s:I, s:{s:I, s:s}}", "product_id", line.product_id, "quantity",
					 (json_int_t)line.quantity, "unit_price", "amount_cents",
					 (json_int_t)line.unit_price_cents, "currency", line.currency));
}

static enum fd_err decide_remove_line(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const keys[] = {"product_id"};
	const struct fd_order *o = state;
	const char *sku;
	if (!found(o, out) || !fd_payload_only(payload, keys, 1, out) || !read_sku(payload, &sku, out) ||
	    !draft(o, out))
		return FD_OK;
	if (!find_line(o, sku)) {
		fd_decide_refuse(out, "line-not-found", "Line not found", "%s is not on the order", sku);
		return FD_OK;
	}
	return fd_decide_event(out, "OrderLineRemoved", json_pack("{s:s}", "product_id", sku));
}

static enum fd_err decide_place(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct fd_order *o = state;
	int64_t total;
	if (!found(o, out) || !fd_payload_only(payload, NULL, 0, out) || !draft(o, out))
		return FD_OK;
	if (o->nlines == 0) {
		fd_decide_refuse(out, "order-empty", "Order has no lines", "add a line before placing the order");
		return FD_OK;
	}
	if (!order_currency(o)) {
		fd_decide_refuse(out, "mixed-currency", "Order lines have different currencies",
				 "every line of an order must be in one currency; remove the lines in the others");
		return FD_OK;
	}
	if (!lines_total(o->lines, o->nlines, &total)) {
		fd_decide_refuse(out, "amount-too-large", "Amount too large", "the order's total does not fit in 64 bits");
		return FD_OK;
	}
	return fd_decide_event(out, "OrderPlaced",
			       json_pack("{s:o, s:I}", "lines", lines_json(o->lines, o->nlines, false), "total_cents",
					 (json_int_t)total));
}

static enum fd_err decide_confirm(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct fd_order *o = state;
	if (!found(o, out) || !fd_payload_only(payload, NULL, 0, out))
		return FD_OK;
	if (o->status != FD_ORDER_PLACED) {
		fd_decide_refuse(out, "order-not-placed", "Order is not placed", "the order is %s",
				 fd_order_status_name(o->status));
		return FD_OK;
	}
	return fd_decide_event(out, "OrderConfirmed", json_object());
}

static enum fd_err decide_ship(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct fd_order *o = state;
	if (!found(o, out) || !fd_payload_only(payload, NULL, 0, out))
		return FD_OK;
	if (o->status != FD_ORDER_CONFIRMED) {
		fd_decide_refuse(out, "order-not-confirmed", "Order is not confirmed", "the order is %s",
				 fd_order_status_name(o->status));
		return FD_OK;
	}
	return fd_decide_event(out, "OrderShipped", json_object());
}

static enum fd_err decide_cancel(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const keys[] = {"reason"};
	const struct fd_order *o = state;
	const char *reason;
	if (!found(o, out) || !fd_payload_only(payload, keys, 1, out) ||
	    !fd_payload_string(payload, "reason", 1, FD_REASON_MAX, false, &reason, out))
		return FD_OK;
	if (o->status == FD_ORDER_SHIPPED) {
		fd_decide_refuse(out, "order-shipped", "Order has already shipped", "a shipped order cannot be cancelled");
		return FD_OK;
	}
	if (o->status == FD_ORDER_CANCELLED) {
		fd_decide_refuse(out, "order-cancelled", "Order is already cancelled", "the order was cancelled before");
		return FD_OK;
	}
	return fd_decide_event(out, "OrderCancelled", json_pack("{s:s}", "reason", reason));
}

static const struct fd_command_type commands[] = {
	{.name = "create", .decide = decide_create},
	{.name = "add_line", .decide = decide_add_line},
	{.name = "remove_line", .decide = decide_remove_line},
	{.name = "place", .decide = decide_place},
	{.name = "confirm", .decide = decide_confirm},
	{.name = "ship", .decide = decide_ship},
	{.name = "cancel", .decide = decide_cancel},
};

/*
 * The order's events with their schema versions, and the upcasters from
 * older versions: changing an event's shape is one more upcaster row and
 * its function, and the type's version raised.
 */
/* An order's e-mail and shipping address are personal data of its customer. */
static const char *const order_created_personal_paths[] = { "/email", "/shipping_address", NULL };
static const struct fd_personal_decl order_created_personal = {
	.subject = "/customer_id",
	.paths = order_created_personal_paths,
};

static const struct fd_event_type order_event_types[] = {
	{ .type = "OrderCreated", .personal = &order_created_personal },
	{ .type = "OrderLineAdded", .version = 2 },
	{ .type = "OrderLineRemoved" },
	{ .type = "OrderPlaced" },
	{ .type = "OrderConfirmed" },
	{ .type = "OrderShipped" },
	{ .type = "OrderCancelled" },
};

static const struct fd_upcaster order_upcasters[] = {
	{ .type = "OrderLineAdded", .from = 1, .up = line_added_v2 },
};

static bool order_exists(const void *state)
{
	return ((const struct fd_order *)state)->status != FD_ORDER_NONE;
}

const struct fd_aggregate_type fd_order_type = {
	.name = "order",
	.category = "order",
	.id_field = "order_id",
	.id_is_uuid = true,
	.schema_version = 1,
	.snapshot_every = 100,
	.state_size = sizeof(struct fd_order),
	.init = order_init,
	.release = order_release,
	.apply = order_apply,
	.snapshot = order_snapshot,
	.restore = order_restore,
	.view = order_view,
	.exists = order_exists,
	.commands = commands,
	.ncommands = sizeof commands / sizeof commands[0],
	.events = { .types = order_event_types, .ntypes = FD_COUNT(order_event_types),
		    .upcasters = order_upcasters, .nupcasters = FD_COUNT(order_upcasters) },
};
