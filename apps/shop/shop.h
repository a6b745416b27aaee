/*
 * shop.h - the shop app: orders, products (inventory), payments, the order
 * fulfillment and shipping sagas, the order_summaries and product_stock read
 * models, the payment gateway, and the app definition that binds them
 * (shop_app, app.c).
 *
 * Pure code over the aggregate framework (aggregate.h).  Amounts are integer
 * minor units (cents).  The states are plain structs so sagas, projections
 * and tests can read them directly.
 *
 * Common rules for the three aggregates:
 * - Existence is read from the state (status NONE / !exists): a stream that
 *   holds only foreign event types has not created the aggregate.  Every
 *   command but the creating one is refused "<name>-not-found" on an
 *   aggregate that does not exist; the creating one "<name>-exists" on one
 *   that does.
 * - Checks run in this order: "<name>-not-found", then the payload
 *   (FD_INVALID), then the state rules (FD_REFUSED, "<name>-exists"
 *   included).  Payloads with unknown fields are invalid.
 * - apply() accepts exactly the events decide() could have produced from
 *   the current state (same field rules, legal transition); any other event
 *   of a known type is FD_ERR_INVAL and leaves the state unchanged.
 * - snapshot() is the full state; restore() accepts only a snapshot that
 *   describes a reachable state and is FD_ERR_INVAL otherwise.
 * - UUID fields (order_id) are stored and emitted in canonical lower case.
 */
#ifndef SHOP_H
#define SHOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "factd/aggregate.h"
#include "factd/app.h"
#include "factd/http.h"

#define FD_SKU_MAX 64
#define FD_CUSTOMER_MAX 128
#define FD_REASON_MAX 500
#define FD_NAME_MAX 200
#define FD_ORDER_MAX_LINES 1000
#define FD_QUANTITY_MAX 1000000
#define FD_PRICE_MAX 100000000000LL /* 1e9 in major units */
#define FD_STOCK_MAX 1000000000000LL /* initial stock and one restock, in units */
#define FD_AUTHORISATION_MAX 128     /* a gateway's authorisation code, in characters */

/* ---- Order ------------------------------------------------------------- */

enum fd_order_status {
	FD_ORDER_NONE = 0, FD_ORDER_DRAFT, FD_ORDER_PLACED, FD_ORDER_CONFIRMED, FD_ORDER_SHIPPED, FD_ORDER_CANCELLED,
};

/* An ISO 4217 currency code: three upper-case letters ("EUR"). */
#define FD_CURRENCY_LEN 3
/* The currency of lines added without one, and of lines recorded before currencies (FACTD_DEFAULT_CURRENCY). */
#define SHOP_DEFAULT_CURRENCY "EUR"

struct fd_order_line {
	char product_id[FD_SKU_MAX + 1];
	int64_t quantity;
	int64_t unit_price_cents;
	char currency[FD_CURRENCY_LEN + 1];
};

struct fd_order {
	enum fd_order_status status;
	char *customer_id;            /* owned */
	struct fd_order_line *lines;  /* owned, nlines used, in the order added */
	size_t nlines, cap;
	char *cancel_reason;          /* owned, NULL unless cancelled */
	/*
	 * Personal data of the customer (OrderCreated's personal declaration):
	 * owned JSON, NULL when not given, JSON null once the customer was
	 * erased.
	 */
	json_t *email;                /* a string */
	json_t *shipping_address;     /* {name, street, city, postal_code, country} */
};

/*
 * Events (type: data):
 *   OrderCreated      {customer_id, email?, shipping_address?: {name, street, city, postal_code, country}}
 *                     (email and shipping_address are personal data of the subject customer_id: stored
 *                     sealed, null once the customer is erased)
 *   OrderLineAdded    {product_id, quantity, unit_price: {amount_cents, currency}}   (schema version 2;
 *                     same product again adds quantity; price and currency must match.  Version 1 had
 *                     unit_price_cents and no currency: it is upcast with the default currency)
 *   OrderLineRemoved  {product_id}
 *   OrderPlaced       {lines: [...], total_cents}
 *   OrderConfirmed    {}
 *   OrderShipped      {}
 *   OrderCancelled    {reason}
 * Commands: create {customer_id}, add_line {product_id, quantity, unit_price_cents, currency?}
 *   (currency: an ISO 4217 code, three upper-case letters; without one the
 *   route fills in the default currency, code that sends the command gets
 *   SHOP_DEFAULT_CURRENCY), remove_line {product_id}, place {}, confirm {},
 *   ship {}, cancel {reason}.
 * Limits: customer_id 1-FD_CUSTOMER_MAX characters; product_id a product id
 *   (fd_aggregate_id_valid for fd_product_type); quantity 1-FD_QUANTITY_MAX
 *   per add (a merged line may grow past it); unit_price_cents 0-FD_PRICE_MAX;
 *   at most FD_ORDER_MAX_LINES lines; the total fits in int64; reason
 *   1-FD_REASON_MAX characters.
 * Refusals: order-exists, order-not-found, order-not-draft, price-mismatch,
 *   too-many-lines, amount-too-large, line-not-found, order-empty, mixed-currency (place),
 *   order-not-placed, order-not-confirmed, order-shipped, order-cancelled.
 * View: {customer_id, status, lines: [{product_id, quantity, unit_price_cents, currency}],
 *   total_cents, currency (when every line has the same one), cancel_reason (only when cancelled)}.
 */
extern const struct fd_aggregate_type fd_order_type;
/* "none", "draft", "placed", "confirmed", "shipped", "cancelled"; "unknown" otherwise. */
const char *fd_order_status_name(enum fd_order_status s);
/* Sum of quantity * unit price over the lines; -1 if it would overflow (never for a state built by apply/restore). */
int64_t fd_order_total_cents(const struct fd_order *o);

/* ---- Product (inventory) ---------------------------------------------- */

struct fd_reservation {
	char order_id[40];
	int64_t quantity;
};

struct fd_product {
	bool exists;
	char *name;                        /* owned */
	int64_t available, reserved, committed;
	int64_t stocked;                   /* everything ever stocked: available+reserved+committed */
	struct fd_reservation *reservations; /* open reservations by order, owned */
	size_t nres, cap;
};

/*
 * Events:
 *   ProductCreated       {name, stock}
 *   ProductRestocked     {quantity}
 *   StockReserved        {order_id, quantity}
 *   ReservationReleased  {order_id, quantity}
 *   ReservationCommitted {order_id, quantity}
 * Commands: create {name, stock}, restock {quantity}, reserve {order_id, quantity}
 *   (all or nothing; refused when available < quantity or the order already holds
 *   a reservation), release {order_id}, commit {order_id}.
 * Limits: name 1-FD_NAME_MAX characters; stock 0-FD_STOCK_MAX; restock
 *   quantity 1-FD_STOCK_MAX; reserve quantity >= 1; order_id a UUID.
 *   release and commit close the order's whole reservation.
 * Refusals: product-exists, product-not-found, stock-too-large,
 *   already-reserved, insufficient-stock, reservation-not-found.
 * Invariant: available + reserved + committed == stocked, reserved is the
 *   sum of the open reservations, at most one per order.
 * View: {name, available, reserved, committed, stocked,
 *   reservations: [{order_id, quantity}]}.
 */
extern const struct fd_aggregate_type fd_product_type;

/* ---- Payment ----------------------------------------------------------- */

enum fd_payment_status {
	FD_PAYMENT_NONE = 0, FD_PAYMENT_REQUESTED, FD_PAYMENT_AUTHORISED, FD_PAYMENT_DECLINED, FD_PAYMENT_REFUNDED,
};

struct fd_payment {
	enum fd_payment_status status;
	char order_id[40];
	int64_t amount_cents;
	int64_t refunded_cents;
	char *decline_reason;  /* owned */
	unsigned attempts;     /* gateway attempts recorded */
};

/*
 * Events:
 *   PaymentRequested  {order_id, amount_cents}
 *   PaymentAttemptFailed {error}          (a transient gateway failure; counts attempts)
 *   PaymentAuthorised {authorisation}
 *   PaymentDeclined   {reason}
 *   PaymentRefunded   {amount_cents}
 * Commands: request {order_id, amount_cents>0}, record_failure {error},
 *   authorise {authorisation}, decline {reason}, refund {amount_cents?} (default: all).
 * Limits: amount_cents 1-FD_PRICE_MAX; error and reason 1-FD_REASON_MAX
 *   characters; authorisation 1-FD_AUTHORISATION_MAX characters.
 * record_failure, authorise and decline need a requested payment; refund an
 *   authorised one, which becomes refunded once refunds reach the amount.
 * Refusals: payment-exists, payment-not-found, payment-not-pending,
 *   too-many-attempts, payment-not-authorised, refund-exceeds-payment.
 * View: {order_id, amount_cents, status, refunded_cents, attempts,
 *   decline_reason (only when declined)}.
 */
extern const struct fd_aggregate_type fd_payment_type;
/* "none", "requested", "authorised", "declined", "refunded"; "unknown" otherwise. */
const char *fd_payment_status_name(enum fd_payment_status s);

/* ---- Payment gateway --------------------------------------------------- */

enum fd_gateway_result {
	FD_GATEWAY_AUTHORISED,
	FD_GATEWAY_DECLINED,
	FD_GATEWAY_TRANSIENT,  /* try again later */
	FD_GATEWAY_NO_ANSWER,  /* the gateway never answered (timed out) */
};

/*
 * A payment gateway behind a small interface.  authorise() writes a
 * NUL-terminated message into message (truncated to message_len; nothing
 * when message is NULL or message_len is 0): the authorisation code when
 * FD_GATEWAY_AUTHORISED, otherwise a reason.  attempt counts from 1.
 */
struct fd_gateway {
	enum fd_gateway_result (*authorise)(struct fd_gateway *gw, const char *payment_id, int64_t amount_cents,
					    unsigned attempt, char *message, size_t message_len);
};

/*
 * The built-in deterministic simulator: declines amounts above limit_cents;
 * fails transiently on the first `fail_first` attempts of each payment
 * (attempt numbers start at 1); never answers when never_answer is set.
 * Configured from FACTD_PAYMENT_LIMIT_CENTS (default 100000),
 * FACTD_PAYMENT_FAIL_FIRST (default 0), FACTD_PAYMENT_NEVER_ANSWER (default 0).
 * Checks in order: never_answer -> NO_ANSWER; attempt <= fail_first ->
 * TRANSIENT; amount_cents > limit_cents -> DECLINED ("amount exceeds
 * limit"); else AUTHORISED with the code "AUTH-" and 16 upper-case hex
 * digits derived from payment_id alone.  Thread-safe after init.
 */
struct fd_gateway_sim {
	struct fd_gateway base;
	int64_t limit_cents;
	unsigned fail_first;
	bool never_answer;
};
void fd_gateway_sim_init(struct fd_gateway_sim *sim, int64_t limit_cents, unsigned fail_first, bool never_answer);

/* ---- the app -------------------------------------------------------------- */

/*
 * The shop's outside systems and settings (app.c): the payment gateway, for
 * now always the simulator, and the default currency (FACTD_DEFAULT_CURRENCY).
 */
struct shop_services {
	struct fd_gateway *gateway;
	struct fd_gateway_sim sim;
	char currency[FD_CURRENCY_LEN + 1];
};
/* The default currency of a services object; SHOP_DEFAULT_CURRENCY without one. */
const char *shop_default_currency(const void *services);
/* Is s an ISO 4217 code in form (three upper-case ASCII letters)? */
bool shop_currency_valid(const char *s);
/* POST /orders/{id}/lines' payload: the default currency when it names none (struct fd_command_route.complete). */
enum fd_err shop_line_defaults(json_t *payload, const void *services);
/* The gateway of a services object (req->ctx->services, ctx->services); NULL when there is none. */
struct fd_gateway *shop_gateway(void *services);

/* Sagas (order_saga.c). */
extern const struct fd_saga_type fd_order_fulfillment_saga;
extern const struct fd_saga_type fd_order_shipping_saga;
/* Read models (projections.c). */
extern const struct fd_projection shop_order_summaries;
extern const struct fd_projection shop_product_stock;

/* The shop's own handlers (api.c): GET /orders, GET /products, POST /payments/{id}/process. */
void shop_api_list_orders(struct fd_req *req, struct fd_resp *resp);
void shop_api_list_products(struct fd_req *req, struct fd_resp *resp);
void shop_api_process_payment(struct fd_req *req, struct fd_resp *resp);
/*
 * POST /payments/{id}/refund (route arg: the refund command): 409
 * order-not-cancelled while the payment's order exists and is not cancelled
 * (refund.c), else fd_api_command.
 */
void shop_api_refund_payment(struct fd_req *req, struct fd_resp *resp);
/* The route table (routes.c), ended by a row without a method. */
extern const struct fd_route shop_routes[];

/* The app definition: everything above in one value (app.c). */
extern const struct fd_app shop_app;

#endif
