/*
 * webhook.c - the webhook dispatcher, the URL rules and the signature
 * (webhook.h).
 *
 * Threading: one dispatcher thread per process owns its PostgreSQL session
 * (which holds the advisory locks of the webhooks it delivers) and a curl
 * multi handle through which the POSTs of all its webhooks run at once, one
 * at a time per webhook.  The API handlers only read and write rows
 * (api_webhooks.c).
 */
#include "push/webhook.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "factd/buf.h"
#include "factd/hash.h"
#include "factd/log.h"
#include "factd/notify.h"
#include "factd/pool.h"
#include "factd/sql.h"
#include "store/internal.h"
#include "store/personal.h"

#define BATCH 100
#define MAX_HELD 1024
#define BACKOFF_CAP_MS (5 * 60 * 1000)

/* ---- addresses and URLs ----------------------------------------------------- */

static bool v4_private(uint32_t a) /* host order */
{
	return (a >> 24) == 0 ||                 /* 0.0.0.0/8 "this network" */
	       (a >> 24) == 10 ||                /* 10/8 */
	       (a >> 22) == (100u << 2 | 1) ||   /* 100.64/10 shared (CGNAT) */
	       (a >> 24) == 127 ||               /* loopback */
	       (a >> 16) == (169u << 8 | 254) || /* link-local */
	       (a >> 20) == (172u << 4 | 1) ||   /* 172.16/12 */
	       (a >> 8) == (192u << 16) ||       /* 192.0.0/24 protocol assignments */
	       (a >> 8) == (192u << 16 | 2) ||   /* 192.0.2/24 documentation */
	       (a >> 16) == (192u << 8 | 168) || /* 192.168/16 */
	       (a >> 17) == (198u << 7 | 9) ||   /* 198.18/15 benchmarking */
	       (a >> 8) == (198u << 16 | 51 << 8 | 100) || /* 198.51.100/24 documentation */
	       (a >> 8) == (203u << 16 | 0 << 8 | 113) ||  /* 203.0.113/24 documentation */
	       (a >> 28) >= 14;                  /* 224/4 multicast, 240/4 reserved, broadcast */
}

bool fd_webhook_addr_private(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return v4_private(ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr));
	if (sa->sa_family != AF_INET6)
		return true;
	const uint8_t *b = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	static const uint8_t nat64[12] = { 0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0 };
	if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0) /* an IPv4 address inside */
		return v4_private((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 | (uint32_t)b[14] << 8 | b[15]);
	bool zero10 = true;
	for (int i = 0; i < 10; i++)
		zero10 = zero10 && b[i] == 0;
	if (zero10) /* ::, ::1 and the old IPv4-compatible ::a.b.c.d */
		return true;
	return (b[0] & 0xfe) == 0xfc ||                  /* fc00::/7 unique local */
	       (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || /* fe80::/10 link-local */
	       (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) || /* fec0::/10 site-local (deprecated) */
	       b[0] == 0xff ||                            /* multicast */
	       (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8) || /* 2001:db8::/32 documentation */
	       (b[0] == 0x01 && b[1] == 0 && b[2] == 0 && b[3] == 0 && b[4] == 0 && b[5] == 0 && b[6] == 0 &&
		b[7] == 0); /* 100::/64 discard */
}

enum fd_err fd_webhook_url_check(const char *url, bool allow_private, char *why, size_t whylen)
{
	enum fd_err err = FD_ERR_INVAL;
	char *scheme = NULL, *host = NULL, *user = NULL, *password = NULL;
	struct addrinfo *ai = NULL;
	CURLU *u = curl_url();
	if (!u)
		return FD_ERR_NOMEM;
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
		snprintf(why, whylen, "url is not a valid absolute URL");
		goto done;
	}
	if (strcmp(scheme, "http") && strcmp(scheme, "https")) {
		snprintf(why, whylen, "url must use http or https");
		goto done;
	}
	if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PASSWORD, &password, 0) == CURLUE_OK) {
		snprintf(why, whylen, "url must not carry a user name or password (the signature authenticates factd)");
		goto done;
	}
	if (allow_private) {
		err = FD_OK;
		goto done;
	}
	/* an IPv6 literal comes back in brackets */
	size_t hl = strlen(host);
	if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	if (strcasecmp(host, "localhost") == 0 || (hl > 10 && strcasecmp(host + hl - 10, ".localhost") == 0)) {
		snprintf(why, whylen, "url points to a loopback address; private targets need FACTD_WEBHOOK_ALLOW_PRIVATE=1");
		goto done;
	}
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
	int rc = getaddrinfo(host, NULL, &hints, &ai);
	if (rc != 0) {
		/* it may resolve later; each connection's address is checked when it opens */
		err = FD_OK;
		goto done;
	}
	for (struct addrinfo *p = ai; p; p = p->ai_next)
		if (fd_webhook_addr_private(p->ai_addr)) {
			snprintf(why, whylen,
				 "url points to a private, loopback or link-local address; private targets need "
				 "FACTD_WEBHOOK_ALLOW_PRIVATE=1");
			goto done;
		}
	err = FD_OK;
done:
	if (ai)
		freeaddrinfo(ai);
	curl_free(scheme);
	curl_free(host);
	curl_free(user);
	curl_free(password);
	curl_url_cleanup(u);
	return err;
}

enum fd_err fd_webhook_sign(const char *secret, long long t, const char *body, size_t len, char *out, size_t outlen)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	char ts[24];
	int tl = snprintf(ts, sizeof ts, "%lld.", t);
	/* HMAC over "<t>." then the body, without copying the body */
	EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = m ? EVP_MAC_CTX_new(m) : NULL;
	OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0), OSSL_PARAM_construct_end() };
	size_t ml = 0;
	bool ok = ctx && EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret), params) &&
		  EVP_MAC_update(ctx, (const unsigned char *)ts, (size_t)tl) &&
		  EVP_MAC_update(ctx, (const unsigned char *)body, len) && EVP_MAC_final(ctx, mac, &ml, sizeof mac);
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(m);
	maclen = (unsigned)ml;
	if (!ok || maclen != 32 || outlen < 96)
		return FD_ERR_INTERNAL;
	int n = snprintf(out, outlen, "t=%lld,v1=", t);
	for (unsigned i = 0; i < maclen; i++)
		n += snprintf(out + n, outlen - (size_t)n, "%02x", mac[i]);
	return FD_OK;
}

/* ---- the dispatcher ------------------------------------------------------------ */

enum wh_stmt { W_ACTIVE, W_LOCK, W_UNLOCK, W_ROW, W_EVENTS, W_OK, W_FAIL, W_HEAD, W_COUNT };

static const struct fd_stmt wh_stmts[W_COUNT] = {
	[W_ACTIVE] = { "fd_wh_active", "SELECT name, next_attempt_at <= now() FROM webhooks WHERE status = 'active'"
				       " ORDER BY name", 0, false },
	[W_LOCK] = { "fd_wh_lock", "SELECT pg_try_advisory_lock($1::bigint)", 1, false },
	[W_UNLOCK] = { "fd_wh_unlock", "SELECT pg_advisory_unlock($1::bigint)", 1, false },
	[W_ROW] = { "fd_wh_row",
		    "SELECT url, secret, categories::text, types::text, timeout_ms, tx_id::text, seq, attempts,"
		    " pg_snapshot_xmin(pg_current_snapshot())::text FROM webhooks"
		    " WHERE name = $1 AND status = 'active' AND next_attempt_at <= now()",
		    1, false },
	[W_EVENTS] = { "fd_wh_events",
		       "SELECT e.event_id::text, " FD_EVENT_COLS " FROM events e"
		       " WHERE (e.tx_id, e.seq) > ($1::xid8, $2::bigint) AND e.tx_id < $3::xid8"
		       " AND ($4::text[] IS NULL OR e.category = ANY ($4::text[]))"
		       " AND ($5::text[] IS NULL OR e.type = ANY ($5::text[]))"
		       " ORDER BY e.tx_id, e.seq LIMIT 100",
		       5, true },
	[W_OK] = { "fd_wh_ok",
		   "UPDATE webhooks SET tx_id = $2::xid8, seq = $3::bigint, attempts = 0, delivered = delivered + 1,"
		   " last_attempt_at = now(), last_status = $4::int, last_error = NULL, next_attempt_at = now()"
		   " WHERE name = $1",
		   4, false },
	[W_FAIL] = { "fd_wh_fail",
		     "UPDATE webhooks SET attempts = attempts + 1, failures = failures + 1, last_attempt_at = now(),"
		     " last_status = nullif($2::int, 0), last_error = $3,"
		     " next_attempt_at = now() + $4::int * interval '1 millisecond',"
		     " status = CASE WHEN attempts + 1 >= max_attempts THEN 'disabled' ELSE status END"
		     " WHERE name = $1 RETURNING status",
		     4, false },
	/* caught up: everything up to the newest final event is delivered or filtered out */
	[W_HEAD] = { "fd_wh_head",
		     "UPDATE webhooks w SET tx_id = h.tx_id, seq = h.seq FROM (SELECT e.tx_id, e.seq FROM events e"
		     " WHERE e.tx_id < $2::xid8 ORDER BY e.tx_id DESC, e.seq DESC LIMIT 1) h"
		     " WHERE w.name = $1 AND (h.tx_id, h.seq) > (w.tx_id, w.seq)",
		     2, false },
};

/*
 * A webhook whose advisory lock this session holds.  Each has its own curl
 * handle (its connections to the receiver are reused) and at most one POST
 * in flight; the dispatcher drives every webhook's POST at once through one
 * curl multi handle, so a slow or hanging receiver holds up only its own
 * webhook.
 */
struct hook {
	struct fd_webhooks *w;
	char *name;
	CURL *easy;
	bool busy;              /* its POST is in the multi handle */
	bool blocked;           /* its last connection attempt was refused by the address rule */
	char blocked_addr[64];
	/* the batch being delivered (row and events NULL when none) */
	PGresult *row, *ev;
	struct fd_subject_keys *keys;
	int next, n;            /* the event being posted, and how many the batch has */
	long attempts, timeout_ms;
	uint64_t tx, seq;       /* the position of the event being posted */
	struct curl_slist *hdrs;
	struct fd_buf body;
};

struct fd_webhooks {
	struct fd_webhooks_config cfg;
	char *conninfo;
	pthread_t thread;
	atomic_bool stop;
	PGconn *conn;
	CURLM *multi;
	struct hook *held[MAX_HELD];
	size_t nheld;
	unsigned seed;
};

static long long lock_key(const char *name)
{
	return fd_lock_key("factd.webhook:", name);
}

static bool exec(struct fd_webhooks *w, enum wh_stmt id, const char *const *params, PGresult **out)
{
	PGresult *res = NULL;
	enum fd_err err = fd_sql_exec(w->conn, &wh_stmts[id], params, &res);
	if (err) {
		fd_log_fields(FD_LOG_WARN, "webhook dispatcher: database error",
			      json_pack("{s:s, s:s}", "statement", wh_stmts[id].name, "error",
					res ? PQresultErrorMessage(res) : PQerrorMessage(w->conn)));
		PQclear(res);
		return false;
	}
	if (out)
		*out = res;
	else
		PQclear(res);
	return true;
}

static curl_socket_t open_socket(void *cls, curlsocktype purpose, struct curl_sockaddr *addr)
{
	struct hook *h = cls;
	(void)purpose;
	if (!h->w->cfg.allow_private && fd_webhook_addr_private(&addr->addr)) {
		h->blocked = true;
		char host[INET6_ADDRSTRLEN] = "?";
		if (addr->family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&addr->addr)->sin_addr, host, sizeof host);
		else if (addr->family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&addr->addr)->sin6_addr, host, sizeof host);
		snprintf(h->blocked_addr, sizeof h->blocked_addr, "%s", host);
		return CURL_SOCKET_BAD;
	}
	return socket(addr->family, addr->socktype, addr->protocol);
}

static size_t discard(char *ptr, size_t size, size_t n, void *cls)
{
	(void)ptr;
	(void)cls;
	return size * n;
}

static int progress(void *cls, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	(void)dt;
	(void)dn;
	(void)ut;
	(void)un;
	return atomic_load(&((struct hook *)cls)->w->stop) ? 1 : 0;
}

/* Drop the batch (and any POST in flight: it is aborted). */
static void hook_idle(struct hook *h)
{
	if (h->busy) {
		curl_multi_remove_handle(h->w->multi, h->easy);
		h->busy = false;
	}
	curl_slist_free_all(h->hdrs);
	h->hdrs = NULL;
	fd_subject_keys_free(h->keys);
	h->keys = NULL;
	PQclear(h->ev);
	PQclear(h->row);
	h->ev = h->row = NULL;
	h->next = h->n = 0;
}

static void hook_free(struct hook *h)
{
	if (!h)
		return;
	hook_idle(h);
	if (h->easy)
		curl_easy_cleanup(h->easy);
	fd_buf_release(&h->body);
	free(h->name);
	free(h);
}

static struct hook *hook_new(struct fd_webhooks *w, const char *name)
{
	struct hook *h = calloc(1, sizeof *h);
	if (!h)
		return NULL;
	h->w = w;
	h->body = (struct fd_buf)FD_BUF_INIT;
	if (!(h->name = strdup(name)) || !(h->easy = curl_easy_init())) {
		hook_free(h);
		return NULL;
	}
	CURL *c = h->easy;
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_PROXY, "");
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "factd/" FACTD_VERSION);
	curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, h);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, h);
	curl_easy_setopt(c, CURLOPT_PRIVATE, h);
	return h;
}

static void drop_session(struct fd_webhooks *w)
{
	for (size_t i = 0; i < w->nheld; i++)
		hook_free(w->held[i]);
	w->nheld = 0;
	PQfinish(w->conn);
	w->conn = NULL;
}

static unsigned backoff(struct fd_webhooks *w, long attempts)
{
	unsigned long long d = w->cfg.backoff_ms ? w->cfg.backoff_ms : 1000;
	for (long i = 0; i < attempts && d < BACKOFF_CAP_MS; i++)
		d *= 2;
	if (d > BACKOFF_CAP_MS)
		d = BACKOFF_CAP_MS;
	/* half fixed, half random ("equal jitter"): retries of many webhooks spread out */
	return (unsigned)(d / 2 + (unsigned long long)rand_r(&w->seed) % (d / 2 + 1));
}

/*
 * Start the POST of the batch's event h->next: render and sign it, hand it
 * to the multi handle.  False when it cannot be rendered (the batch is
 * dropped and tried again at the next round).
 */
static bool post_start(struct hook *h)
{
	struct fd_webhooks *w = h->w;
	int i = h->next;
	char sig[128], h_sig[160], h_id[96];
	fd_buf_reset(&h->body);
	if (fd_render_event(&h->body, h->ev, i, 1, h->keys) || !fd_bin_u64(h->ev, i, FD_EVENT_NCOLS - 1, &h->tx) ||
	    !fd_bin_u64(h->ev, i, FD_EVENT_NCOLS, &h->seq) ||
	    fd_webhook_sign(PQgetvalue(h->row, 0, 1), (long long)time(NULL), h->body.data, h->body.len, sig,
			    sizeof sig)) {
		fd_log_fields(FD_LOG_ERROR, "webhook: cannot render or sign an event", json_pack("{s:s}", "webhook", h->name));
		hook_idle(h);
		return false;
	}
	snprintf(h_sig, sizeof h_sig, "Factd-Signature: %s", sig);
	snprintf(h_id, sizeof h_id, "Factd-Event-Id: %s", PQgetvalue(h->ev, i, 0));
	curl_slist_free_all(h->hdrs);
	h->hdrs = NULL;
	const char *lines[] = { "Content-Type: application/json", "Expect:", h_id, h_sig };
	for (size_t k = 0; k < sizeof lines / sizeof lines[0]; k++) {
		struct curl_slist *t = curl_slist_append(h->hdrs, lines[k]);
		if (!t) {
			hook_idle(h);
			return false;
		}
		h->hdrs = t;
	}
	CURL *c = h->easy;
	h->blocked = false;
	curl_easy_setopt(c, CURLOPT_URL, PQgetvalue(h->row, 0, 0));
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h->hdrs);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, h->body.data);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)h->body.len);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, h->timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, h->timeout_ms);
	if (curl_multi_add_handle(w->multi, c) != CURLM_OK) {
		hook_idle(h);
		return false;
	}
	h->busy = true;
	return true;
}

/*
 * Load what is due of a held, idle webhook and start its first POST.
 * False: the session broke.
 */
static bool batch_start(struct hook *h)
{
	struct fd_webhooks *w = h->w;
	const char *p1[1] = { h->name };
	if (!exec(w, W_ROW, p1, &h->row))
		return false;
	if (PQntuples(h->row) != 1) {
		hook_idle(h); /* gone, disabled, or not due */
		return true;
	}
	h->timeout_ms = strtol(PQgetvalue(h->row, 0, 4), NULL, 10);
	h->attempts = strtol(PQgetvalue(h->row, 0, 7), NULL, 10);
	const char *pe[5] = { PQgetvalue(h->row, 0, 5), PQgetvalue(h->row, 0, 6), PQgetvalue(h->row, 0, 8),
			      PQgetisnull(h->row, 0, 2) ? NULL : PQgetvalue(h->row, 0, 2),
			      PQgetisnull(h->row, 0, 3) ? NULL : PQgetvalue(h->row, 0, 3) };
	if (!exec(w, W_EVENTS, pe, &h->ev)) {
		hook_idle(h);
		return false;
	}
	h->n = PQntuples(h->ev);
	h->next = 0;
	/* personal values are pushed opened (or null when erased), as the feed shows them */
	if (w->cfg.pool && fd_render_keys(w->cfg.pool, h->ev, NULL, 0, h->n, 1, &h->keys) != FD_OK) {
		fd_log_fields(FD_LOG_ERROR, "webhook: cannot fetch the keys of personal data",
			      json_pack("{s:s}", "webhook", h->name));
		hook_idle(h);
		return false;
	}
	if (h->n == 0) {
		/* caught up: the watermark moves past what the filter leaves out */
		const char *ph[2] = { h->name, PQgetvalue(h->row, 0, 8) };
		bool ok = exec(w, W_HEAD, ph, NULL);
		hook_idle(h);
		return ok;
	}
	post_start(h);
	return true;
}

/* A POST ended (rc, and the receiver's status).  False: the session broke. */
static bool post_done(struct hook *h, CURLcode rc)
{
	struct fd_webhooks *w = h->w;
	curl_multi_remove_handle(w->multi, h->easy);
	h->busy = false;
	long status = 0;
	char error[256] = "", st[16];
	if (rc == CURLE_OK) {
		curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
		if (status < 200 || status >= 300)
			snprintf(error, sizeof error, "the receiver answered %ld", status);
	} else if (h->blocked) {
		snprintf(error, sizeof error,
			 "refused to connect to %s: a private address (FACTD_WEBHOOK_ALLOW_PRIVATE=1 allows it)",
			 h->blocked_addr);
	} else if (rc == CURLE_OPERATION_TIMEDOUT) {
		snprintf(error, sizeof error, "timed out after %ld ms", h->timeout_ms);
	} else {
		snprintf(error, sizeof error, "%s", curl_easy_strerror(rc));
	}
	snprintf(st, sizeof st, "%ld", status);
	if (!error[0]) {
		char txs[24], seqs[24];
		snprintf(txs, sizeof txs, "%llu", (unsigned long long)h->tx);
		snprintf(seqs, sizeof seqs, "%llu", (unsigned long long)h->seq);
		const char *po[4] = { h->name, txs, seqs, st };
		if (!exec(w, W_OK, po, NULL))
			return false;
		h->attempts = 0;
		if (++h->next < h->n) {
			post_start(h);
			return true;
		}
		bool full = h->n >= BATCH;
		hook_idle(h);
		return full ? batch_start(h) : true; /* a full batch: the next one at once */
	}
	if (atomic_load(&w->stop)) {
		hook_idle(h);
		return true; /* cut short by the stop, not the receiver's fault */
	}
	char delay[16];
	snprintf(delay, sizeof delay, "%u", backoff(w, h->attempts));
	const char *pf[4] = { h->name, st, error, delay };
	PGresult *fr = NULL;
	if (!exec(w, W_FAIL, pf, &fr))
		return false;
	bool disabled = PQntuples(fr) == 1 && strcmp(PQgetvalue(fr, 0, 0), "disabled") == 0;
	PQclear(fr);
	fd_log_fields(disabled ? FD_LOG_WARN : FD_LOG_INFO,
		      disabled ? "webhook disabled after its last attempt" : "webhook delivery failed",
		      json_pack("{s:s, s:s, s:I}", "webhook", h->name, "error", error, "attempt",
				(json_int_t)h->attempts + 1));
	hook_idle(h);
	return true;
}

/* Move every POST in flight along and settle those that ended.  False: the session broke. */
static bool drive(struct fd_webhooks *w)
{
	int running = 0, left = 0;
	curl_multi_perform(w->multi, &running);
	CURLMsg *m;
	while ((m = curl_multi_info_read(w->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		struct hook *h = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&h);
		if (h && !post_done(h, m->data.result))
			return false;
	}
	return true;
}

static size_t busy_count(struct fd_webhooks *w)
{
	size_t k = 0;
	for (size_t i = 0; i < w->nheld; i++)
		k += w->held[i]->busy;
	return k;
}

static struct hook *find_held(struct fd_webhooks *w, const char *name)
{
	for (size_t i = 0; i < w->nheld; i++)
		if (strcmp(w->held[i]->name, name) == 0)
			return w->held[i];
	return NULL;
}

/*
 * One round: let go of webhooks that are gone or disabled (aborting a POST
 * in flight), take free ones, and start what is due of those not busy.
 */
static bool round_once(struct fd_webhooks *w)
{
	PGresult *act = NULL;
	char key[24];
	if (!exec(w, W_ACTIVE, NULL, &act))
		return false;
	int n = PQntuples(act);
	for (size_t i = 0; i < w->nheld;) {
		bool active = false;
		for (int r = 0; r < n && !active; r++)
			active = strcmp(PQgetvalue(act, r, 0), w->held[i]->name) == 0;
		if (active) {
			i++;
			continue;
		}
		snprintf(key, sizeof key, "%lld", lock_key(w->held[i]->name));
		const char *pk[1] = { key };
		hook_free(w->held[i]);
		w->held[i] = w->held[--w->nheld];
		if (!exec(w, W_UNLOCK, pk, NULL)) {
			PQclear(act);
			return false;
		}
	}
	bool ok = true;
	for (int r = 0; r < n && ok && !atomic_load(&w->stop); r++) {
		const char *name = PQgetvalue(act, r, 0);
		struct hook *h = find_held(w, name);
		if (!h) {
			if (w->nheld == MAX_HELD)
				continue;
			PGresult *lr = NULL;
			snprintf(key, sizeof key, "%lld", lock_key(name));
			const char *pk[1] = { key };
			if (!(ok = exec(w, W_LOCK, pk, &lr)))
				break;
			bool got = PQgetvalue(lr, 0, 0)[0] == 't';
			PQclear(lr);
			if (!got)
				continue;
			if (!(h = hook_new(w, name))) {
				/* the lock stays with the session; the next round tries again */
				fd_log(FD_LOG_ERROR, "webhook dispatcher: out of memory");
				continue;
			}
			w->held[w->nheld++] = h;
			fd_log_fields(FD_LOG_INFO, "webhook taken", json_pack("{s:s}", "webhook", name));
		}
		if (!h->busy && PQgetvalue(act, r, 1)[0] == 't')
			ok = batch_start(h);
	}
	PQclear(act);
	return ok;
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *run(void *arg)
{
	struct fd_webhooks *w = arg;
	uint64_t seen = w->cfg.notifier ? fd_notifier_generation(w->cfg.notifier) : 0;
	unsigned poll = w->cfg.poll_ms ? w->cfg.poll_ms : 200;
	long long last_round = 0;
	bool round_due = true;
	while (!atomic_load(&w->stop)) {
		if (!w->conn) {
			w->conn = PQconnectdb(w->conninfo);
			fd_pg_log_notices(w->conn, "webhooks");
			/*
			 * Its prepared feed reads keep generic plans; none may scan events
			 * whole.  Its writes (a position after each delivery) need no flush
			 * of their own: one lost in a crash only sends that event again,
			 * which at-least-once delivery allows.
			 */
			if (PQstatus(w->conn) != CONNECTION_OK ||
			    fd_sql_once(w->conn, "SET enable_seqscan = off; SET synchronous_commit = off", 0, NULL, NULL) !=
				    FD_OK) {
				drop_session(w);
				for (int i = 0; i < 10 && !atomic_load(&w->stop); i++) {
					struct timespec ts = { 0, 100000000L };
					nanosleep(&ts, NULL);
				}
				continue;
			}
			round_due = true;
		}
		bool ok = true;
		if (round_due) {
			ok = round_once(w);
			last_round = mono_ms();
		}
		ok = ok && drive(w);
		if (!ok) {
			drop_session(w); /* its locks go with it; the next round takes them again, or another process does */
			continue;
		}
		if (atomic_load(&w->stop))
			break;
		if (busy_count(w)) {
			/* POSTs in flight: wait on their sockets, and look for new work every poll interval */
			curl_multi_poll(w->multi, NULL, 0, 50, NULL);
			uint64_t g = w->cfg.notifier ? fd_notifier_generation(w->cfg.notifier) : seen;
			round_due = g != seen || mono_ms() - last_round >= poll;
			seen = g;
		} else {
			if (w->cfg.notifier) {
				seen = fd_notifier_wait(w->cfg.notifier, seen, poll);
			} else {
				struct timespec ts = { poll / 1000, (long)(poll % 1000) * 1000000L };
				nanosleep(&ts, NULL);
			}
			round_due = true;
		}
	}
	drop_session(w);
	return NULL;
}

enum fd_err fd_webhooks_start(const struct fd_webhooks_config *cfg, struct fd_webhooks **out)
{
	*out = NULL;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return FD_ERR_INTERNAL;
	struct fd_webhooks *w = calloc(1, sizeof *w);
	if (!w)
		return FD_ERR_NOMEM;
	w->cfg = *cfg;
	w->seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)w;
	atomic_init(&w->stop, false);
	if (!(w->conninfo = strdup(cfg->conninfo)) || !(w->multi = curl_multi_init())) {
		free(w->conninfo);
		free(w);
		return FD_ERR_NOMEM;
	}
	if (pthread_create(&w->thread, NULL, run, w) != 0) {
		curl_multi_cleanup(w->multi);
		free(w->conninfo);
		free(w);
		return FD_ERR_IO;
	}
	*out = w;
	return FD_OK;
}

void fd_webhooks_stop(struct fd_webhooks *w)
{
	if (!w)
		return;
	atomic_store(&w->stop, true);
	if (w->cfg.notifier)
		fd_notifier_wake(w->cfg.notifier);
	if (w->multi)
		curl_multi_wakeup(w->multi);
	pthread_join(w->thread, NULL);
	curl_multi_cleanup(w->multi);
	free(w->conninfo);
	free(w);
}

/* ---- rows for the HTTP API -------------------------------------------------------- */

enum { R_PUT, R_LIST, R_DELETE, R_RESUME, R_COUNT };

static const struct fd_stmt row_stmts[R_COUNT] = {
	[R_PUT] = { "fd_wh_put",
		    "INSERT INTO webhooks AS w (name, url, secret, categories, types, max_attempts, timeout_ms, tx_id, seq)"
		    " SELECT $1, $2, $3, $4::text[], $5::text[], $6::int, $7::int, coalesce(h.tx_id, '0'::xid8),"
		    " coalesce(h.seq, 0) FROM (SELECT 1) one LEFT JOIN LATERAL (SELECT e.tx_id, e.seq FROM events e"
		    "   WHERE e.tx_id < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY e.tx_id DESC, e.seq DESC LIMIT 1)"
		    " h ON true"
		    " ON CONFLICT (name) DO UPDATE SET url = EXCLUDED.url, secret = EXCLUDED.secret,"
		    " categories = EXCLUDED.categories, types = EXCLUDED.types, max_attempts = EXCLUDED.max_attempts,"
		    " timeout_ms = EXCLUDED.timeout_ms, updated_at = now()"
		    " RETURNING (w.xmax = 0)",
		    7, false },
	[R_LIST] = { "fd_wh_list",
		     "SELECT json_build_object('name', w.name, 'url', w.url, 'categories', w.categories, 'types', w.types,"
		     " 'max_attempts', w.max_attempts, 'timeout_ms', w.timeout_ms, 'status', w.status,"
		     " 'position', w.tx_id::text || '-' || w.seq, 'lag_events', b.n,"
		     " 'lag_seconds', coalesce(round(extract(epoch FROM now() - b.oldest)::numeric, 3), 0),"
		     " 'delivered', w.delivered, 'failures', w.failures, 'attempts', w.attempts,"
		     " 'next_attempt_at', CASE WHEN w.status = 'active' AND w.attempts > 0 THEN"
		     "   to_char(w.next_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END,"
		     " 'last_delivery', CASE WHEN w.last_attempt_at IS NOT NULL THEN json_build_object("
		     "   'at', to_char(w.last_attempt_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
		     "   'status', w.last_status, 'error', w.last_error) END,"
		     " 'created_at', to_char(w.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))::text"
		     " FROM webhooks w CROSS JOIN LATERAL (SELECT count(*) AS n, min(e.recorded_at) AS oldest FROM events e"
		     "   WHERE (e.tx_id, e.seq) > (w.tx_id, w.seq)"
		     "   AND (w.categories IS NULL OR e.category = ANY (w.categories))"
		     "   AND (w.types IS NULL OR e.type = ANY (w.types))) b"
		     " WHERE ($1::text IS NULL OR w.name = $1) ORDER BY w.name",
		     1, false },
	[R_DELETE] = { "fd_wh_delete", "DELETE FROM webhooks WHERE name = $1 RETURNING 1", 1, false },
	[R_RESUME] = { "fd_wh_resume",
		       "UPDATE webhooks SET status = 'active', attempts = 0, next_attempt_at = now(), updated_at = now()"
		       " WHERE name = $1 RETURNING 1",
		       1, false },
};

static enum fd_err row_run(struct fd_pool *pool, int id, const char *const *params, PGresult **out)
{
	PGconn *conn = NULL;
	PGresult *res = NULL;
	*out = NULL;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	err = fd_sql_exec(conn, &row_stmts[id], params, &res);
	fd_pool_release(pool, conn, fd_pg_conn_broken(conn, err));
	if (err)
		PQclear(res);
	else
		*out = res;
	return err;
}

enum fd_err fd_webhook_put(struct fd_pool *pool, const struct fd_webhook_spec *spec, bool *created)
{
	struct fd_buf cats = FD_BUF_INIT, types = FD_BUF_INIT;
	PGresult *res = NULL;
	char ma[16], to[16];
	enum fd_err err = FD_OK;
	*created = false;
	if (spec->categories && (err = fd_store_text_array(&cats, spec->categories, spec->ncategories)))
		goto done;
	if (spec->types && (err = fd_store_text_array(&types, spec->types, spec->ntypes)))
		goto done;
	snprintf(ma, sizeof ma, "%u", spec->max_attempts);
	snprintf(to, sizeof to, "%u", spec->timeout_ms);
	const char *params[7] = { spec->name, spec->url, spec->secret, spec->categories ? cats.data : NULL,
				  spec->types ? types.data : NULL, ma, to };
	if ((err = row_run(pool, R_PUT, params, &res)))
		goto done;
	*created = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
done:
	PQclear(res);
	fd_buf_release(&cats);
	fd_buf_release(&types);
	return err;
}

enum fd_err fd_webhook_list(struct fd_pool *pool, const char *name, json_t **out)
{
	PGresult *res = NULL;
	const char *params[1] = { name };
	*out = NULL;
	enum fd_err err = row_run(pool, R_LIST, params, &res);
	if (err)
		return err;
	json_t *list = json_array();
	for (int i = 0; list && i < PQntuples(res); i++) {
		json_t *h = json_loads(PQgetvalue(res, i, 0), 0, NULL);
		if (!h || json_array_append_new(list, h)) {
			json_decref(list);
			list = NULL;
		}
	}
	PQclear(res);
	if (!list)
		return FD_ERR_NOMEM;
	if (name && json_array_size(list) == 0) {
		json_decref(list);
		return FD_ERR_NOTFOUND;
	}
	*out = list;
	return FD_OK;
}

static enum fd_err row_change(struct fd_pool *pool, int id, const char *name)
{
	PGresult *res = NULL;
	const char *params[1] = { name };
	enum fd_err err = row_run(pool, id, params, &res);
	if (!err && PQntuples(res) == 0)
		err = FD_ERR_NOTFOUND;
	PQclear(res);
	return err;
}

enum fd_err fd_webhook_delete(struct fd_pool *pool, const char *name)
{
	return row_change(pool, R_DELETE, name);
}

enum fd_err fd_webhook_resume(struct fd_pool *pool, const char *name)
{
	return row_change(pool, R_RESUME, name);
}
