/*
 * app.c - the shop app's definition: its aggregate types, routes, sagas and
 * read models, and its services (the payment gateway, configured from
 * FACTD_PAYMENT_*).
 */
#include "shop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char services_usage[] =
	"  FACTD_PAYMENT_LIMIT_CENTS  the payment simulator declines larger amounts (default 100000)\n"
	"  FACTD_PAYMENT_FAIL_FIRST   the simulator fails the first K attempts transiently (default 0)\n"
	"  FACTD_PAYMENT_NEVER_ANSWER 1 = the simulator never answers (default 0)\n"
	"  FACTD_DEFAULT_CURRENCY     ISO 4217 code of lines added without a currency and of lines\n"
	"                             recorded before currencies (default EUR; keep it once set)\n";

static enum fd_err services_start(const struct fd_config *cfg, void **out, char *errbuf, size_t errlen)
{
	long long limit = 100000, fail_first = 0, never_answer = 0;
	const char *currency = SHOP_DEFAULT_CURRENCY;
	enum fd_err err;
	(void)cfg;
	*out = NULL;
	if ((err = fd_env_int("FACTD_PAYMENT_LIMIT_CENTS", 0, 1000000000000000LL, &limit, errbuf, errlen)) ||
	    (err = fd_env_int("FACTD_PAYMENT_FAIL_FIRST", 0, 1000000, &fail_first, errbuf, errlen)) ||
	    (err = fd_env_int("FACTD_PAYMENT_NEVER_ANSWER", 0, 1, &never_answer, errbuf, errlen)) ||
	    (err = fd_env_string("FACTD_DEFAULT_CURRENCY", FD_CURRENCY_LEN, shop_currency_valid,
				 "an ISO 4217 code (three upper-case letters)", &currency, errbuf, errlen)))
		return err;
	struct shop_services *s = calloc(1, sizeof *s);
	if (!s)
		return FD_ERR_NOMEM;
	fd_gateway_sim_init(&s->sim, limit, (unsigned)fail_first, never_answer != 0);
	s->gateway = &s->sim.base;
	memcpy(s->currency, currency, FD_CURRENCY_LEN + 1);
	*out = s;
	return FD_OK;
}

static void services_stop(void *services)
{
	free(services);
}

struct fd_gateway *shop_gateway(void *services)
{
	return services ? ((struct shop_services *)services)->gateway : NULL;
}

const char *shop_default_currency(const void *services)
{
	return services ? ((const struct shop_services *)services)->currency : SHOP_DEFAULT_CURRENCY;
}

enum fd_err shop_line_defaults(json_t *payload, const void *services)
{
	if (!json_is_object(payload) || json_object_get(payload, "currency"))
		return FD_OK;
	return json_object_set_new(payload, "currency", json_string(shop_default_currency(services))) == 0 ? FD_OK
													: FD_ERR_NOMEM;
}

static const struct fd_app_services shop_services_def = {
	.start = services_start,
	.stop = services_stop,
	.usage = services_usage,
};

static const struct fd_aggregate_type *const aggregates[] = { &fd_order_type, &fd_product_type, &fd_payment_type };
static const struct fd_saga_type *const sagas[] = { &fd_order_fulfillment_saga, &fd_order_shipping_saga };
static const struct fd_projection *const projections[] = { &shop_order_summaries, &shop_product_stock };

const struct fd_app shop_app = {
	.name = "shop",
	.aggregates = aggregates,
	.naggregates = FD_COUNT(aggregates),
	.routes = shop_routes,
	.sagas = sagas,
	.nsagas = FD_COUNT(sagas),
	.projections = projections,
	.nprojections = FD_COUNT(projections),
	.services = &shop_services_def,
};
