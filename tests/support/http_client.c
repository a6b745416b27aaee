/* http_client.c - a tiny HTTP/1.1 client for tests. */
#include "http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static void parse_response(char *raw, size_t len, struct fd_test_resp *out)
{
	char *sep = strstr(raw, "\r\n\r\n");
	if (!sep || strncmp(raw, "HTTP/1.", 7) != 0) {
		out->head = strdup("");
		out->body = strdup("");
		return;
	}
	out->status = atoi(raw + 9);
	out->head = strndup(raw, (size_t)(sep - raw));
	char *body = sep + 4;
	out->body_len = len - (size_t)(body - raw);
	out->body = malloc(out->body_len + 1);
	memcpy(out->body, body, out->body_len);
	out->body[out->body_len] = '\0';
	out->json = json_loadb(out->body, out->body_len, 0, NULL);
}

int fd_test_http_raw(uint16_t port, const char *raw, size_t len, struct fd_test_resp *out)
{
	memset(out, 0, sizeof *out);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	struct timeval tv = { .tv_sec = 60 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		close(fd);
		return -1;
	}
	/* A server may answer and close before reading everything; keep what it said. */
	(void)send_all(fd, raw, len);
	shutdown(fd, SHUT_WR);
	size_t cap = 65536, n = 0;
	char *buf = malloc(cap);
	for (;;) {
		if (n + 1 >= cap)
			buf = realloc(buf, cap *= 2);
		ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	buf[n] = '\0';
	close(fd);
	parse_response(buf, n, out);
	out->raw_len = n;
	free(buf);
	return 0;
}

int fd_test_http(uint16_t port, const char *method, const char *path, const char *extra_headers,
		 const char *body, size_t body_len, struct fd_test_resp *out)
{
	const char *h = extra_headers ? extra_headers : "";
	bool has_ct = strcasestr(h, "content-type:") != NULL;
	size_t cap = strlen(method) + strlen(path) + strlen(h) + 256 + body_len;
	char *req = malloc(cap);
	int n = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n%s%s", method, path,
			 (unsigned)port, h, body && !has_ct ? "Content-Type: application/json\r\n" : "");
	if (body)
		n += snprintf(req + n, cap - (size_t)n, "Content-Length: %zu\r\n", body_len);
	n += snprintf(req + n, cap - (size_t)n, "\r\n");
	if (body) {
		memcpy(req + n, body, body_len);
		n += (int)body_len;
	}
	int rc = fd_test_http_raw(port, req, (size_t)n, out);
	free(req);
	return rc;
}

const char *fd_test_header(const struct fd_test_resp *r, const char *name, char *buf, size_t len)
{
	size_t nlen = strlen(name);
	for (const char *line = r->head; line && *line;) {
		const char *eol = strstr(line, "\r\n");
		size_t llen = eol ? (size_t)(eol - line) : strlen(line);
		if (llen > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
			const char *v = line + nlen + 1;
			while (*v == ' ')
				v++;
			snprintf(buf, len, "%.*s", (int)(llen - (size_t)(v - line)), v);
			return buf;
		}
		line = eol ? eol + 2 : NULL;
	}
	return NULL;
}

int fd_test_resp_complete(const struct fd_test_resp *r)
{
	char cl[32];
	if (r->status <= 0 || !r->head)
		return 0;
	if (!fd_test_header(r, "Content-Length", cl, sizeof cl))
		return 1;
	return strtoull(cl, NULL, 10) == (unsigned long long)r->body_len;
}

const char *fd_test_json_str(const struct fd_test_resp *r, const char *key)
{
	return json_string_value(json_object_get(r->json, key));
}

long long fd_test_json_int(const struct fd_test_resp *r, const char *key)
{
	json_t *v = json_object_get(r->json, key);
	return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}

void fd_test_resp_free(struct fd_test_resp *r)
{
	free(r->head);
	free(r->body);
	json_decref(r->json);
	memset(r, 0, sizeof *r);
}

int fd_test_get(uint16_t port, const char *path, struct fd_test_resp *out)
{
	return fd_test_http(port, "GET", path, NULL, NULL, 0, out);
}

int fd_test_post(uint16_t port, const char *path, const char *json_body, struct fd_test_resp *out)
{
	return fd_test_http(port, "POST", path, NULL, json_body, strlen(json_body), out);
}
