/*
 * integ.c - the consumer group and webhook benchmark client of bench/run
 * (not part of CI).  Plain sockets, HTTP/1.1 keep-alive, no libraries.
 *
 *   integ PORT groups EVENTS ROUNDS
 *     Appends EVENTS events (100 per request, 100 streams), then per round:
 *     reads them all through GET /events?limit=100 with one client (the
 *     baseline), and through a fresh consumer group (start "beginning",
 *     ordering "none") with 4 consumer threads that pull max=100 and ack
 *     each batch in one request.  Prints the median events/s of each and
 *     their ratio.
 *   integ PORT webhooks EVENTS ROUNDS
 *     Starts a receiver on 127.0.0.1 that answers 204 to every POST, then
 *     per round appends EVENTS events and times a fresh webhook (created
 *     before the appends) until the receiver has them all.  Prints the
 *     median events/s.  factd needs FACTD_WEBHOOK_ALLOW_PRIVATE=1.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port;

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void die(const char *m)
{
	fprintf(stderr, "integ: %s\n", m);
	exit(1);
}

static int dial(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
		die("cannot connect to factd");
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

struct conn {
	int fd;
	char *buf;
	size_t cap, len;
};

/* One request on a kept-alive connection; the body of the answer in c->buf (NUL-terminated); the status. */
static int request(struct conn *c, const char *method, const char *path, const char *body)
{
	char head[512];
	size_t blen = body ? strlen(body) : 0;
	int n = snprintf(head, sizeof head,
			 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
			 method, path, blen);
	if (write(c->fd, head, (size_t)n) != n || (blen && write(c->fd, body, blen) != (ssize_t)blen))
		die("write failed");
	c->len = 0;
	size_t hend = 0, clen = 0;
	for (;;) {
		if (c->len + 65536 > c->cap) {
			c->cap = (c->len + 65536) * 2;
			if (!(c->buf = realloc(c->buf, c->cap)))
				die("out of memory");
		}
		ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len - 1);
		if (r <= 0)
			{ fprintf(stderr, "integ: %s %s: ", method, path); die("connection closed"); }
		c->len += (size_t)r;
		c->buf[c->len] = '\0';
		if (!hend) {
			char *e = strstr(c->buf, "\r\n\r\n");
			if (!e)
				continue;
			hend = (size_t)(e - c->buf) + 4;
			char *cl = strcasestr(c->buf, "\r\nContent-Length:");
			clen = cl && cl < e ? strtoul(cl + 17, NULL, 10) : 0; /* none on a 204 */
		}
		if (c->len >= hend + clen)
			break;
	}
	int status = atoi(c->buf + 9);
	memmove(c->buf, c->buf + hend, clen);
	c->buf[clen] = '\0';
	return status;
}

/* A fresh connection: factd closes one that stayed idle for FACTD_REQUEST_TIMEOUT. */
static void redial(struct conn *c)
{
	if (c->fd > 0)
		close(c->fd);
	c->fd = dial();
}

static void append_events(struct conn *c, int events, int round)
{
	char *body = malloc(100 * 64 + 64);
	for (int done = 0; done < events; done += 100) {
		char *p = body + sprintf(body, "{\"expected_version\":\"any\",\"events\":[");
		for (int i = 0; i < 100; i++)
			p += sprintf(p, "%s{\"type\":\"Bench\",\"data\":{\"i\":%d}}", i ? "," : "", done + i);
		strcpy(p, "]}");
		char path[64];
		snprintf(path, sizeof path, "/streams/bench%d-%d/events", round, (done / 100) % 100);
		int st = request(c, "POST", path, body);
		if (st != 200 && st != 201)
			die("append failed");
	}
	free(body);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* ---- groups ------------------------------------------------------------------ */

struct pull_arg {
	const char *group;
	int id;
	atomic_int *acked;
	int total;
};

static void *consumer(void *p)
{
	struct pull_arg *a = p;
	struct conn c = { .fd = dial() };
	char path[160], *ack = malloc(100 * 48 + 64);
	while (atomic_load(a->acked) < a->total) {
		snprintf(path, sizeof path, "/subscriptions/%s/events?consumer=c%d&max=100&wait_ms=200", a->group, a->id);
		if (request(&c, "GET", path, NULL) != 200)
			die("pull failed");
		char *q = ack + sprintf(ack, "{\"delivery_ids\":[");
		int n = 0;
		for (char *s = c.buf; (s = strstr(s, "\"delivery_id\":\"")); s += 15 + 36) {
			q += sprintf(q, "%s\"%.36s\"", n ? "," : "", s + 15);
			n++;
		}
		strcpy(q, "]}");
		if (!n)
			continue;
		snprintf(path, sizeof path, "/subscriptions/%s/ack", a->group);
		int st = request(&c, "POST", path, ack);
		if (st != 200) {
			fprintf(stderr, "integ: ack answered %d: %.300s\n", st, c.buf);
			die("ack failed");
		}
		atomic_fetch_add(a->acked, n);
	}
	free(ack);
	free(c.buf);
	close(c.fd);
	return NULL;
}

static double feed_rate(struct conn *c, int events, const char *after0)
{
	char path[128], after[64];
	snprintf(after, sizeof after, "%s", after0);
	int read_n = 0;
	double t0 = now_s();
	while (read_n < events) {
		snprintf(path, sizeof path, "/events?limit=100&after=%s", after);
		if (request(c, "GET", path, NULL) != 200)
			die("feed read failed");
		int n = 0;
		for (char *s = c->buf; (s = strstr(s, "\"event_id\":")); s += 11)
			n++;
		char *nx = strstr(c->buf, "\"next\":\"");
		if (!nx || !n)
			die("feed page without events");
		snprintf(after, sizeof after, "%.*s", (int)strcspn(nx + 8, "\""), nx + 8);
		read_n += n;
	}
	return read_n / (now_s() - t0);
}

static void groups(int events, int rounds)
{
	struct conn c = { .fd = dial() };
	double g[16], f[16];
	for (int r = 0; r < rounds; r++) {
		redial(&c);
		/* this round's events sit after the feed's head as it is now */
		if (request(&c, "GET", "/events/head", NULL) != 200)
			die("no head");
		char head[64] = "0";
		char *h = strstr(c.buf, "\"head\":\"");
		if (h)
			snprintf(head, sizeof head, "%.*s", (int)strcspn(h + 8, "\""), h + 8);
		append_events(&c, events, r);
		f[r] = feed_rate(&c, events, head);
		char name[32], path[64], body[160];
		snprintf(name, sizeof name, "bench-%d-%d", getpid(), r);
		snprintf(path, sizeof path, "/subscriptions/%s", name);
		snprintf(body, sizeof body, "{\"start\":\"%s\",\"categories\":[\"bench%d\"],\"ordering\":\"none\"}", head, r);
		if (request(&c, "PUT", path, body) != 201)
			die("cannot create the group");
		atomic_int acked = 0;
		pthread_t t[4];
		struct pull_arg a[4];
		double t0 = now_s();
		for (int i = 0; i < 4; i++) {
			a[i] = (struct pull_arg){ name, i, &acked, events };
			pthread_create(&t[i], NULL, consumer, &a[i]);
		}
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		g[r] = atomic_load(&acked) / (now_s() - t0);
		fprintf(stderr, "integ: round %d: group %.0f events/s, feed %.0f events/s\n", r + 1, g[r], f[r]);
	}
	qsort(g, (size_t)rounds, sizeof g[0], cmp_double);
	qsort(f, (size_t)rounds, sizeof f[0], cmp_double);
	printf("group_events_per_s %.0f\nfeed_events_per_s %.0f\nratio %.3f\n", g[rounds / 2], f[rounds / 2],
	       g[rounds / 2] / f[rounds / 2]);
}

/* ---- webhooks ------------------------------------------------------------------- */

static atomic_int received;

static void *serve_conn(void *p)
{
	int fd = (int)(intptr_t)p;
	char buf[65536];
	size_t len = 0;
	for (;;) {
		ssize_t r = read(fd, buf + len, sizeof buf - len - 1);
		if (r <= 0)
			break;
		len += (size_t)r;
		buf[len] = '\0';
		for (;;) {
			char *e = strstr(buf, "\r\n\r\n");
			if (!e)
				break;
			size_t hend = (size_t)(e - buf) + 4;
			char *cl = strcasestr(buf, "\r\nContent-Length:");
			size_t clen = cl && cl < e ? strtoul(cl + 17, NULL, 10) : 0;
			if (len < hend + clen)
				break;
			atomic_fetch_add(&received, 1);
			static const char ok[] = "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n";
			if (write(fd, ok, sizeof ok - 1) < 0)
				break;
			memmove(buf, buf + hend + clen, len - hend - clen);
			len -= hend + clen;
			buf[len] = '\0';
		}
	}
	close(fd);
	return NULL;
}

static void *accept_loop(void *p)
{
	int ls = (int)(intptr_t)p;
	for (;;) {
		int fd = accept(ls, NULL, NULL);
		if (fd < 0)
			continue;
		pthread_t t;
		pthread_create(&t, NULL, serve_conn, (void *)(intptr_t)fd);
		pthread_detach(t);
	}
	return NULL;
}

static void webhooks(int events, int rounds)
{
	int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	struct sockaddr_in a = { .sin_family = AF_INET };
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t alen = sizeof a;
	if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 64) || getsockname(ls, (struct sockaddr *)&a, &alen))
		die("cannot listen");
	pthread_t t;
	pthread_create(&t, NULL, accept_loop, (void *)(intptr_t)ls);
	struct conn c = { .fd = dial() };
	double w[16];
	for (int r = 0; r < rounds; r++) {
		char path[64], body[256];
		redial(&c);
		snprintf(path, sizeof path, "/webhooks/bench-%d-%d", getpid(), r);
		snprintf(body, sizeof body,
			 "{\"url\":\"http://127.0.0.1:%u/hook\",\"secret\":\"bench-secret-0123456789\",\"categories\":[\"wbench%d\"]}",
			 ntohs(a.sin_port), r);
		if (request(&c, "PUT", path, body) != 201)
			die("cannot create the webhook (FACTD_WEBHOOK_ALLOW_PRIVATE=1?)");
		atomic_store(&received, 0);
		/* append first, then time the delivery of all of them */
		char *ev = malloc(100 * 64 + 64);
		for (int done = 0; done < events; done += 100) {
			char *q = ev + sprintf(ev, "{\"expected_version\":\"any\",\"events\":[");
			for (int i = 0; i < 100; i++)
				q += sprintf(q, "%s{\"type\":\"Bench\",\"data\":{\"i\":%d}}", i ? "," : "", done + i);
			strcpy(q, "]}");
			char sp[64];
			snprintf(sp, sizeof sp, "/streams/wbench%d-%d/events", r, (done / 100) % 100);
			if (request(&c, "POST", sp, ev) / 100 != 2)
				die("append failed");
		}
		free(ev);
		double t0 = now_s();
		int start = atomic_load(&received);
		while (atomic_load(&received) < events) {
			if (now_s() - t0 > 600)
				die("the webhook did not deliver everything within 600 s");
			usleep(2000);
		}
		w[r] = (events - start) / (now_s() - t0);
		redial(&c);
		request(&c, "DELETE", path, NULL);
		fprintf(stderr, "integ: round %d: webhook %.0f events/s\n", r + 1, w[r]);
	}
	qsort(w, (size_t)rounds, sizeof w[0], cmp_double);
	printf("webhook_events_per_s %.0f\n", w[rounds / 2]);
}

int main(int argc, char **argv)
{
	if (argc != 5)
		die("usage: integ PORT groups|webhooks EVENTS ROUNDS");
	port = atoi(argv[1]);
	int events = atoi(argv[3]) / 100 * 100, rounds = atoi(argv[4]);
	if (events < 100 || rounds < 1 || rounds > 15)
		die("EVENTS >= 100, ROUNDS 1..15");
	if (strcmp(argv[2], "groups") == 0)
		groups(events, rounds);
	else if (strcmp(argv[2], "webhooks") == 0)
		webhooks(events, rounds);
	else
		die("mode: groups or webhooks");
	return 0;
}
