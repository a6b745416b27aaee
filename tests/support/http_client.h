/*
 * http_client.h - a minimal blocking HTTP/1.1 client for tests: one request
 * per connection (Connection: close), the whole response read into memory.
 */
#ifndef FACTD_TEST_HTTP_CLIENT_H
#define FACTD_TEST_HTTP_CLIENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct fd_test_resp {
	int status;        /* 0 when no response came back */
	char *head;        /* status line and headers, NUL-terminated */
	char *body;        /* NUL-terminated */
	size_t body_len;
	json_t *json;      /* parsed body when it is JSON, else NULL */
	size_t raw_len;    /* bytes received in all (0: the connection closed without a byte) */
};

/*
 * Send a request to 127.0.0.1:port.  extra_headers: "Name: value\r\n" lines or
 * NULL.  With a body, Content-Type defaults to application/json unless
 * extra_headers has one.  Returns 0 on success, -1 on a socket error.
 */
int fd_test_http(uint16_t port, const char *method, const char *path, const char *extra_headers,
		 const char *body, size_t body_len, struct fd_test_resp *out);
/* Send raw bytes as the whole request and read the response. */
int fd_test_http_raw(uint16_t port, const char *raw, size_t len, struct fd_test_resp *out);
/* A response header's value copied into buf, or NULL when absent (case-insensitive name). */
const char *fd_test_header(const struct fd_test_resp *r, const char *name, char *buf, size_t len);
void fd_test_resp_free(struct fd_test_resp *r);

/*
 * True when a response arrived whole: a status line, and when the head has a
 * Content-Length, exactly that many body bytes.
 */
int fd_test_resp_complete(const struct fd_test_resp *r);
/* A string / integer member of the parsed JSON body, or NULL / -1 when absent or of another type. */
const char *fd_test_json_str(const struct fd_test_resp *r, const char *key);
long long fd_test_json_int(const struct fd_test_resp *r, const char *key);

/* Shorthands; the body is a NUL-terminated string. */
int fd_test_get(uint16_t port, const char *path, struct fd_test_resp *out);
int fd_test_post(uint16_t port, const char *path, const char *json_body, struct fd_test_resp *out);

#endif
