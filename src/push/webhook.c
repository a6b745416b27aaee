/*
 * webhook.c - the webhook dispatcher, the URL rules and the signature
 * (webhook.h).
 *
 * Threading: one dispatcher thread per process owns its PostgreSQL session
 * (which holds the advisory locks of the webhooks it delivers) and its curl
 * handle.  The API handlers only read and write rows (api_webhooks.c).
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

struct fd_webhooks {
	struct fd_webhooks_config cfg;
	char *conninfo;
	pthread_t thread;
	atomic_bool stop;
	PGconn *conn;
	CURL *curl;
	char *held[MAX_HELD];   /* names whose advisory lock this session holds */
	size_t nheld;
	bool blocked;           /* the last connection attempt was refused by the address rule */
	char blocked_addr[64];
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

static void drop_session(struct fd_webhooks *w)
{
	PQfinish(w->conn);
	w->conn = NULL;
	for (size_t i = 0; i < w->nheld; i++)
		free(w->held[i]);
	w->nheld = 0;
}

static curl_socket_t open_socket(void *cls, curlsocktype purpose, struct curl_sockaddr *addr)
{
	struct fd_webhooks *w = cls;
	(void)purpose;
	if (!w->cfg.allow_private && fd_webhook_addr_private(&addr->addr)) {
		w->blocked = true;
		char host[INET6_ADDRSTRLEN] = "?";
		if (addr->family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&addr->addr)->sin_addr, host, sizeof host);
		else if (addr->family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&addr->addr)->sin6_addr, host, sizeof host);
		snprintf(w->blocked_addr, sizeof w->blocked_addr, "%s", host);
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
	return atomic_load(&((struct fd_webhooks *)cls)->stop) ? 1 : 0;
}

/*
 * POST one event.  *status: the HTTP status (0 when none came back); error:
 * why it failed, when it did.  True for a 2xx.
 */
static bool post(struct fd_webhooks *w, const char *url, const char *secret, const char *event_id, const char *body,
		 size_t len, long timeout_ms, long *status, char *error, size_t errlen)
{
	char sig[128], h_sig[160], h_id[96];
	struct curl_slist *hdrs = NULL;
	*status = 0;
	error[0] = '\0';
	if (fd_webhook_sign(secret, (long long)time(NULL), body, len, sig, sizeof sig)) {
		snprintf(error, errlen, "cannot sign the request");
		return false;
	}
	snprintf(h_sig, sizeof h_sig, "Factd-Signature: %s", sig);
	snprintf(h_id, sizeof h_id, "Factd-Event-Id: %s", event_id);
	struct curl_slist *t;
	const char *lines[] = { "Content-Type: application/json", "Expect:", h_id, h_sig };
	for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
		if (!(t = curl_slist_append(hdrs, lines[i]))) {
			curl_slist_free_all(hdrs);
			snprintf(error, errlen, "out of memory");
			return false;
		}
		hdrs = t;
	}
	CURL *c = w->curl;
	w->blocked = false;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
	CURLcode rc = curl_easy_perform(c);
	curl_slist_free_all(hdrs);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
	if (rc != CURLE_OK) {
		if (w->blocked)
			snprintf(error, errlen, "refused to connect to %s: a private address (FACTD_WEBHOOK_ALLOW_PRIVATE=1 allows it)",
				 w->blocked_addr);
		else if (rc == CURLE_OPERATION_TIMEDOUT)
			snprintf(error, errlen, "timed out after %ld ms", timeout_ms);
		else
			snprintf(error, errlen, "%s", curl_easy_strerror(rc));
		return false;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	if (*status >= 200 && *status < 300)
		return true;
	snprintf(error, errlen, "the receiver answered %ld", *status);
	return false;
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

/* Deliver what is due of one webhook whose lock this session holds.  False: the session broke. */
static bool deliver(struct fd_webhooks *w, const char *name)
{
	PGresult *row = NULL, *ev = NULL;
	bool ok = true;
	struct fd_buf body = FD_BUF_INIT;
	struct fd_subject_keys *keys = NULL;
	const char *p1[1] = { name };
	if (!exec(w, W_ROW, p1, &row))
		return false;
	if (PQntuples(row) != 1)
		goto done; /* gone, disabled, or not due */
	const char *url = PQgetvalue(row, 0, 0), *secret = PQgetvalue(row, 0, 1);
	long timeout_ms = strtol(PQgetvalue(row, 0, 4), NULL, 10);
	long attempts = strtol(PQgetvalue(row, 0, 7), NULL, 10);
	const char *xmin = PQgetvalue(row, 0, 8);
	const char *pe[5] = { PQgetvalue(row, 0, 5), PQgetvalue(row, 0, 6), xmin,
			      PQgetisnull(row, 0, 2) ? NULL : PQgetvalue(row, 0, 2),
			      PQgetisnull(row, 0, 3) ? NULL : PQgetvalue(row, 0, 3) };
	if (!(ok = exec(w, W_EVENTS, pe, &ev)))
		goto done;
	int n = PQntuples(ev);
	/* personal values are pushed opened (or null when erased), as the feed shows them */
	if (w->cfg.pool && fd_render_keys(w->cfg.pool, ev, NULL, 0, n, 1, &keys) != FD_OK) {
		fd_log_fields(FD_LOG_ERROR, "webhook: cannot fetch the keys of personal data", json_pack("{s:s}", "webhook", name));
		ok = false;
		goto done;
	}
	for (int i = 0; i < n && !atomic_load(&w->stop); i++) {
		uint64_t tx, seq;
		fd_buf_reset(&body);
		if (fd_render_event(&body, ev, i, 1, keys) || !fd_bin_u64(ev, i, FD_EVENT_NCOLS - 1, &tx) ||
		    !fd_bin_u64(ev, i, FD_EVENT_NCOLS, &seq)) {
			fd_log_fields(FD_LOG_ERROR, "webhook: cannot render an event", json_pack("{s:s}", "webhook", name));
			goto done;
		}
		long status = 0;
		char error[256], st[16], txs[24], seqs[24], delay[16];
		bool sent = post(w, url, secret, PQgetvalue(ev, i, 0), body.data, body.len, timeout_ms, &status, error,
				 sizeof error);
		snprintf(st, sizeof st, "%ld", status);
		if (sent) {
			snprintf(txs, sizeof txs, "%llu", (unsigned long long)tx);
			snprintf(seqs, sizeof seqs, "%llu", (unsigned long long)seq);
			const char *po[4] = { name, txs, seqs, st };
			if (!(ok = exec(w, W_OK, po, NULL)))
				goto done;
			attempts = 0;
			continue;
		}
		if (atomic_load(&w->stop))
			goto done; /* cut short by the stop, not the receiver's fault */
		snprintf(delay, sizeof delay, "%u", backoff(w, attempts));
		const char *pf[4] = { name, st, error, delay };
		PGresult *fr = NULL;
		if (!(ok = exec(w, W_FAIL, pf, &fr)))
			goto done;
		bool disabled = PQntuples(fr) == 1 && strcmp(PQgetvalue(fr, 0, 0), "disabled") == 0;
		PQclear(fr);
		fd_log_fields(disabled ? FD_LOG_WARN : FD_LOG_INFO,
			      disabled ? "webhook disabled after its last attempt" : "webhook delivery failed",
			      json_pack("{s:s, s:s, s:I}", "webhook", name, "error", error, "attempt", (json_int_t)attempts + 1));
		goto done;
	}
	if (n < BATCH && !atomic_load(&w->stop)) {
		const char *ph[2] = { name, xmin };
		ok = exec(w, W_HEAD, ph, NULL);
	}
done:
	fd_subject_keys_free(keys);
	fd_buf_release(&body);
	PQclear(ev);
	PQclear(row);
	return ok;
}

static bool is_held(struct fd_webhooks *w, const char *name)
{
	for (size_t i = 0; i < w->nheld; i++)
		if (strcmp(w->held[i], name) == 0)
			return true;
	return false;
}

/* One round: let go of webhooks that are gone or disabled, take free ones, deliver what is due. */
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
			active = strcmp(PQgetvalue(act, r, 0), w->held[i]) == 0;
		if (active) {
			i++;
			continue;
		}
		snprintf(key, sizeof key, "%lld", lock_key(w->held[i]));
		const char *pk[1] = { key };
		if (!exec(w, W_UNLOCK, pk, NULL)) {
			PQclear(act);
			return false;
		}
		free(w->held[i]);
		w->held[i] = w->held[--w->nheld];
	}
	bool ok = true;
	for (int r = 0; r < n && ok && !atomic_load(&w->stop); r++) {
		const char *name = PQgetvalue(act, r, 0);
		if (!is_held(w, name)) {
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
			if (!(w->held[w->nheld] = strdup(name))) {
				ok = false;
				break;
			}
			w->nheld++;
			fd_log_fields(FD_LOG_INFO, "webhook taken", json_pack("{s:s}", "webhook", name));
		}
		if (PQgetvalue(act, r, 1)[0] == 't')
			ok = deliver(w, name);
	}
	PQclear(act);
	return ok;
}

static void *run(void *arg)
{
	struct fd_webhooks *w = arg;
	uint64_t seen = w->cfg.notifier ? fd_notifier_generation(w->cfg.notifier) : 0;
	unsigned poll = w->cfg.poll_ms ? w->cfg.poll_ms : 200;
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
				struct timespec ts = { 1, 0 };
				for (int i = 0; i < 10 && !atomic_load(&w->stop); i++) {
					ts = (struct timespec){ 0, 100000000L };
					nanosleep(&ts, NULL);
				}
				continue;
			}
		}
		if (!round_once(w))
			drop_session(w); /* its locks go with it; the next round takes them again, or another process does */
		if (atomic_load(&w->stop))
			break;
		if (w->cfg.notifier) {
			seen = fd_notifier_wait(w->cfg.notifier, seen, poll);
		} else {
			struct timespec ts = { poll / 1000, (long)(poll % 1000) * 1000000L };
			nanosleep(&ts, NULL);
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
	if (!(w->conninfo = strdup(cfg->conninfo)) || !(w->curl = curl_easy_init())) {
		free(w->conninfo);
		free(w);
		return FD_ERR_NOMEM;
	}
	CURL *c = w->curl;
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_PROXY, "");
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "factd/" FACTD_VERSION);
	curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, w);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress);
	curl_easy_setopt(c, CURLOPT_XFERINFODATA, w);
	if (pthread_create(&w->thread, NULL, run, w) != 0) {
		curl_easy_cleanup(w->curl);
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
	pthread_join(w->thread, NULL);
	curl_easy_cleanup(w->curl);
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

static enum fd_err text_array(struct fd_buf *b, const char *const *items, size_t n)
{
	enum fd_err err = fd_buf_append(b, "{", 1);
	for (size_t i = 0; i < n && !err; i++)
		err = fd_store_array_elem(b, items[i], i == 0);
	return err ? err : fd_buf_append(b, "}", 1);
}

enum fd_err fd_webhook_put(struct fd_pool *pool, const struct fd_webhook_spec *spec, bool *created)
{
	struct fd_buf cats = FD_BUF_INIT, types = FD_BUF_INIT;
	PGresult *res = NULL;
	char ma[16], to[16];
	enum fd_err err = FD_OK;
	*created = false;
	if (spec->categories && (err = text_array(&cats, spec->categories, spec->ncategories)))
		goto done;
	if (spec->types && (err = text_array(&types, spec->types, spec->ntypes)))
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
