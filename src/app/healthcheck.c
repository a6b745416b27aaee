/*
 * healthcheck.c - `factd healthcheck`: GET /readyz (or /healthz) of the
 * factd this process's configuration describes, for container health
 * checks that must follow FACTD_LISTEN and FACTD_TLS_CERT rather than
 * assume http://127.0.0.1:8080.
 *
 * Threading: single-threaded; curl_global_init runs here, before any other
 * thread of the process exists.
 */
#include "app/healthcheck.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>

/* The first bytes of the answer, for the message of a failed probe. */
struct body_head {
	char buf[256];
	size_t len;
};

static size_t keep_head(char *data, size_t size, size_t n, void *arg)
{
	struct body_head *h = arg;
	size_t total = size * n;
	size_t room = sizeof h->buf - 1 - h->len;
	size_t take = total < room ? total : room;
	memcpy(h->buf + h->len, data, take);
	h->len += take;
	h->buf[h->len] = '\0';
	return total;
}

enum fd_err fd_healthcheck_url(const struct fd_config *cfg, char *url, size_t urllen, char *errbuf, size_t errlen)
{
	if (cfg->port == 0) {
		snprintf(errbuf, errlen, "FACTD_LISTEN names port 0 (any free port): the port to probe is unknown");
		return FD_ERR_INVAL;
	}
	const char *host = cfg->listen_host && *cfg->listen_host ? cfg->listen_host : "0.0.0.0";
	/* A wildcard listen address is reached on the loopback address of its family. */
	if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0)
		host = "127.0.0.1";
	else if (strcmp(host, "::") == 0 || strcmp(host, "::0") == 0)
		host = "::1";
	bool v6 = strchr(host, ':') != NULL;
	int n = snprintf(url, urllen, "%s://%s%s%s:%u%s", cfg->tls_cert ? "https" : "http", v6 ? "[" : "", host,
			 v6 ? "]" : "", cfg->port, cfg->healthcheck_live ? "/healthz" : "/readyz");
	if (n < 0 || (size_t)n >= urllen) {
		snprintf(errbuf, errlen, "FACTD_LISTEN host is too long");
		return FD_ERR_INVAL;
	}
	return FD_OK;
}

enum fd_err fd_healthcheck(const struct fd_config *cfg, char *errbuf, size_t errlen)
{
	char url[600];
	enum fd_err err = fd_healthcheck_url(cfg, url, sizeof url, errbuf, errlen);
	if (err)
		return err;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(errbuf, errlen, "libcurl failed to initialise");
		return FD_ERR_INTERNAL;
	}
	CURL *c = curl_easy_init();
	if (!c) {
		curl_global_cleanup();
		snprintf(errbuf, errlen, "libcurl failed to initialise");
		return FD_ERR_NOMEM;
	}
	struct body_head head = { .len = 0 };
	char curl_err[CURL_ERROR_SIZE] = "";
	long timeout = (long)cfg->healthcheck_timeout_ms;
	CURLcode rc = CURLE_OK;
	/* Each option is checked; the first failure stops the chain. */
	if (!rc) rc = curl_easy_setopt(c, CURLOPT_URL, url);
	if (!rc) rc = curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	if (!rc) rc = curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	if (!rc) rc = curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	if (!rc) rc = curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout);
	if (!rc) rc = curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout);
	if (!rc) rc = curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	if (!rc) rc = curl_easy_setopt(c, CURLOPT_USERAGENT, "factd-healthcheck");
	if (!rc) rc = curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_err);
	if (!rc) rc = curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep_head);
	if (!rc) rc = curl_easy_setopt(c, CURLOPT_WRITEDATA, &head);
	if (!rc && cfg->tls_cert) {
		rc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		if (!rc) rc = curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (!rc)
		rc = curl_easy_perform(c);
	long status = 0;
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	if (rc != CURLE_OK) {
		snprintf(errbuf, errlen, "GET %s: %s", url, curl_err[0] ? curl_err : curl_easy_strerror(rc));
		err = FD_ERR_UNAVAILABLE;
	} else if (status != 200) {
		/* One line: the body's control characters become spaces. */
		for (size_t i = 0; i < head.len; i++)
			if (iscntrl((unsigned char)head.buf[i]))
				head.buf[i] = ' ';
		snprintf(errbuf, errlen, "GET %s answered %ld: %s", url, status, head.buf);
		err = FD_ERR_UNAVAILABLE;
	} else {
		snprintf(errbuf, errlen, "GET %s answered 200", url);
	}
	curl_easy_cleanup(c);
	curl_global_cleanup();
	return err;
}
