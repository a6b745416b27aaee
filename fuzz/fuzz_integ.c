/*
 * fuzz_integ.c - the bodies and names of the consumer-group and webhook
 * endpoints (src/http/input_integ.c), and the webhook URL rule
 * (src/push/webhook.c; with private targets allowed, so no name is looked
 * up).  The first byte picks the parser, the rest is its input.
 *
 * Properties: a refusal is a 400 with a slug, a title and a detail, and its
 * field a JSON pointer; an accepted body holds only values in their
 * documented ranges (lists of 1 to 64 distinct items, delivery ids parsed,
 * numbers in range, a URL of http or https); names and consumers accepted
 * hold only their characters.
 */
#include <jansson.h>

#include "http/input_integ.h"
#include "push/webhook.h"
#include "fuzz_common.h"

static void check_refusal(const struct fd_input_error *e)
{
	FUZZ_CHECK(e->status == 400);
	FUZZ_CHECK(e->slug && e->title && e->detail[0]);
	FUZZ_CHECK(!e->has_field || e->field[0] == '\0' || e->field[0] == '/');
}

static void check_filter(const struct fd_integ_filter *f)
{
	FUZZ_CHECK(!f->categories || (f->ncategories >= 1 && f->ncategories <= FD_INTEG_MAX_FILTER &&
				      !f->categories[f->ncategories]));
	FUZZ_CHECK(!f->types || (f->ntypes >= 1 && f->ntypes <= FD_INTEG_MAX_FILTER && !f->types[f->ntypes]));
	for (size_t i = 0; i < f->ncategories; i++) {
		FUZZ_CHECK(fd_stream_name_valid(f->categories[i]) && !strchr(f->categories[i], '-'));
		for (size_t j = 0; j < i; j++)
			FUZZ_CHECK(strcmp(f->categories[i], f->categories[j]) != 0);
	}
	for (size_t i = 0; i < f->ntypes; i++)
		FUZZ_CHECK(f->types[i][0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *body = (const char *)data + 1;
	size_t len = size - 1;
	struct fd_input_error e;
	switch (data[0] % 6) {
	case 0: {
		struct fd_group_def d;
		enum fd_err err = fd_group_def_parse(body, len, &d, &e);
		if (err == FD_ERR_INVAL) {
			check_refusal(&e);
			return 0;
		}
		FUZZ_CHECK(err == FD_OK || err == FD_ERR_NOMEM);
		if (err)
			return 0;
		check_filter(&d.filter);
		FUZZ_CHECK(d.ack_timeout_ms >= 100 && d.ack_timeout_ms <= 86400000);
		FUZZ_CHECK(d.max_deliveries >= 1 && d.max_deliveries <= 1000);
		FUZZ_CHECK(d.start_text != NULL);
		FUZZ_CHECK(d.start != FD_GROUP_START_POSITION || d.start_at.seq >= 0);
		fd_group_def_release(&d);
		return 0;
	}
	case 1:
	case 2:
	case 3: {
		static const char *const kinds[] = { "ack", "nack", "replay" };
		const char *kind = kinds[data[0] % 6 - 1];
		struct fd_settle_body b;
		enum fd_err err = fd_settle_parse(kind, body, len, &b, &e);
		if (err == FD_ERR_INVAL) {
			check_refusal(&e);
			return 0;
		}
		FUZZ_CHECK(err == FD_OK || err == FD_ERR_NOMEM);
		if (err)
			return 0;
		FUZZ_CHECK(b.n <= FD_INTEG_MAX_IDS);
		FUZZ_CHECK(b.n >= 1 || strcmp(kind, "replay") == 0);
		FUZZ_CHECK(b.delay_ms <= 86400000);
		FUZZ_CHECK(strcmp(kind, "nack") == 0 || b.action == FD_SETTLE_ACK);
		fd_settle_body_release(&b);
		return 0;
	}
	case 4: {
		struct fd_webhook_def d;
		enum fd_err err = fd_webhook_def_parse(body, len, &d, &e);
		if (err == FD_ERR_INVAL) {
			check_refusal(&e);
			return 0;
		}
		FUZZ_CHECK(err == FD_OK || err == FD_ERR_NOMEM);
		if (err)
			return 0;
		check_filter(&d.filter);
		FUZZ_CHECK(strncmp(d.url, "http://", 7) == 0 || strncmp(d.url, "https://", 8) == 0);
		FUZZ_CHECK(strlen(d.url) <= FD_INTEG_URL_MAX);
		FUZZ_CHECK(strlen(d.secret) >= FD_INTEG_SECRET_MIN && strlen(d.secret) <= FD_INTEG_SECRET_MAX);
		FUZZ_CHECK(d.max_attempts >= 1 && d.max_attempts <= 100);
		FUZZ_CHECK(d.timeout_ms >= 100 && d.timeout_ms <= 60000);
		char why[256] = "";
		enum fd_err u = fd_webhook_url_check(d.url, true, why, sizeof why);
		FUZZ_CHECK(u == FD_OK || (u == FD_ERR_INVAL && why[0]) || u == FD_ERR_NOMEM);
		fd_webhook_def_release(&d);
		return 0;
	}
	default: {
		char *s = fuzz_cstr((const uint8_t *)body, len);
		if (!s)
			return 0;
		if (fd_integ_name_valid(s)) {
			FUZZ_CHECK(strlen(s) >= 1 && strlen(s) <= FD_INTEG_NAME_MAX && s[0] != '.');
			FUZZ_CHECK(strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == strlen(s));
		}
		if (fd_integ_consumer_valid(s))
			FUZZ_CHECK(strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:@-") ==
				   strlen(s));
		free(s);
		return 0;
	}
	}
}
