/*
 * live.c - the load of bench/run's live-connection cases, in one epoll thread
 * so that the client is not what limits them.
 *
 *   live sse  HOST PORT SUBSCRIBERS RATE SECONDS
 *       Opens SUBSCRIBERS GET /events/stream connections (after the feed's
 *       head), then appends RATE events per second for SECONDS over a few
 *       keep-alive connections, one event per request, each carrying the
 *       wall-clock microsecond it was sent in its data ({"t":...}).  Every
 *       frame a subscriber receives is timed against that: the delivery
 *       latency, append included.  Prints
 *       BENCH subscribers=.. connected=.. appended=.. append_errors=..
 *             expected=.. delivered=.. p50_ms=.. p99_ms=.. max_ms=..
 *       where expected = appended x connected.
 *
 *   live idle HOST PORT CONNECTIONS
 *       Opens CONNECTIONS keep-alive connections, each answered one
 *       GET /healthz, prints "READY ok=<n>" and holds them, silent, until
 *       SIGTERM; then asks each once more and prints
 *       BENCH connections=.. ok=.. alive=..   (alive: answered 200 again).
 *
 * Built by bench/run with cc -O2; Linux only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in addr;
static const char *host;

static int64_t wall_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static int64_t mono_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static void die(const char *what)
{
	fprintf(stderr, "live: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* A blocking connection (set non-blocking by the caller when it wants). */
static int dial(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
		die("connect");
	return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("send");
		p += w;
		n -= (size_t)w;
	}
}

/* One blocking request; the response's status and body (caller frees) of a Content-Length answer. */
static int request(int fd, const char *req, char **body)
{
	char buf[65536];
	size_t n = 0;
	send_all(fd, req, strlen(req));
	for (;;) {
		ssize_t r = recv(fd, buf + n, sizeof buf - 1 - n, 0);
		if (r <= 0)
			return 0;
		n += (size_t)r;
		buf[n] = '\0';
		char *end = strstr(buf, "\r\n\r\n");
		if (!end)
			continue;
		char *cl = strcasestr(buf, "\r\nContent-Length:");
		size_t want = cl ? strtoul(cl + 17, NULL, 10) : 0;
		if (n - (size_t)(end + 4 - buf) < want)
			continue;
		if (body)
			*body = strndup(end + 4, want);
		return atoi(buf + 9);
	}
}

/* ---- sse ------------------------------------------------------------------------ */

#define CARRY 32
struct sub {
	int fd;
	bool ok;          /* 200 and headers seen */
	size_t carry_len; /* bytes kept from the last read (a "t": split across reads) */
	char carry[CARRY];
};

enum { APPENDERS = 8 };
struct appender {
	int fd;
	bool busy;
	size_t got;
	char in[8192];
};

static uint32_t *lat_ms_hist; /* per millisecond, up to 60 s */
#define HIST_MS 60000
static uint64_t delivered;

static void record(int64_t sent_us, int64_t now)
{
	int64_t ms = (now - sent_us) / 1000;
	if (ms < 0)
		ms = 0;
	if (ms >= HIST_MS)
		ms = HIST_MS - 1;
	lat_ms_hist[ms]++;
	delivered++;
}

static double percentile(double p)
{
	uint64_t want = (uint64_t)(p * (double)delivered), seen = 0;
	for (int i = 0; i < HIST_MS; i++) {
		seen += lat_ms_hist[i];
		if (seen > want || (seen == delivered && seen))
			return i;
	}
	return 0;
}

/* Find every "t": in the bytes (with the carried tail before them) and time it. */
static void scan(struct sub *s, const char *data, size_t n, int64_t now)
{
	static char joined[CARRY + 262144];
	static const char key[] = "\"t\":";
	size_t len = s->carry_len;
	memcpy(joined, s->carry, len);
	memcpy(joined + len, data, n);
	len += n;
	char *p = joined, *end = joined + len, *keep_from = NULL, *last = joined;
	while ((p = memmem(p, (size_t)(end - p), key, sizeof key - 1)) != NULL) {
		char *q = p + sizeof key - 1;
		while (q < end && *q >= '0' && *q <= '9')
			q++;
		if (q == end) { /* the number may go on in the next read */
			keep_from = p;
			break;
		}
		record(strtoll(p + sizeof key - 1, NULL, 10), now);
		p = last = q;
	}
	if (!keep_from) {
		/* a key split across reads: keep the last few bytes, never a match already counted */
		keep_from = len > sizeof key - 2 ? end - (sizeof key - 2) : joined;
		if (keep_from < last)
			keep_from = last;
	}
	s->carry_len = (size_t)(end - keep_from);
	if (s->carry_len > CARRY)
		s->carry_len = 0; /* cannot happen: a number is at most 20 digits */
	memcpy(s->carry, keep_from, s->carry_len);
}

static void set_nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int run_sse(int nsubs, int rate, int seconds)
{
	int ep = epoll_create1(0);
	if (ep < 0)
		die("epoll_create1");
	lat_ms_hist = calloc(HIST_MS, sizeof *lat_ms_hist);
	/* where the subscribers start: after the head */
	char head[128] = "0";
	{
		int fd = dial();
		char req[256], *body = NULL;
		snprintf(req, sizeof req, "GET /events/head HTTP/1.1\r\nHost: %s\r\n\r\n", host);
		if (request(fd, req, &body) == 200) {
			char *h = strstr(body, "\"head\":\"");
			if (h)
				sscanf(h + 8, "%127[^\"]", head);
		}
		free(body);
		close(fd);
	}
	struct sub *subs = calloc((size_t)nsubs, sizeof *subs);
	char req[512];
	snprintf(req, sizeof req, "GET /events/stream?after=%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n",
		 head, host);
	for (int i = 0; i < nsubs; i++) {
		subs[i].fd = dial();
		send_all(subs[i].fd, req, strlen(req));
		set_nonblock(subs[i].fd);
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)i };
		epoll_ctl(ep, EPOLL_CTL_ADD, subs[i].fd, &ev);
	}
	struct appender ap[APPENDERS] = { 0 };
	for (int i = 0; i < APPENDERS; i++) {
		ap[i].fd = dial();
		set_nonblock(ap[i].fd);
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = (uint64_t)(nsubs + i) };
		epoll_ctl(ep, EPOLL_CTL_ADD, ap[i].fd, &ev);
	}
	static char buf[262144];
	struct epoll_event evs[512];
	int connected = 0;
	uint64_t appended = 0, append_errors = 0, sent = 0;
	/* wait until every subscriber has its headers (or 60 s) */
	int64_t t0 = mono_us();
	while (connected < nsubs && mono_us() - t0 < 60000000) {
		int n = epoll_wait(ep, evs, 512, 100);
		for (int k = 0; k < n; k++) {
			uint64_t id = evs[k].data.u64;
			if (id >= (uint64_t)nsubs)
				continue;
			struct sub *s = &subs[id];
			ssize_t r = recv(s->fd, buf, sizeof buf - 1, 0);
			if (r <= 0)
				continue;
			buf[r] = '\0';
			if (!s->ok && strncmp(buf, "HTTP/1.1 200", 12) == 0) {
				s->ok = true;
				connected++;
			}
		}
	}
	fprintf(stderr, "live: %d of %d subscribers connected\n", connected, nsubs);
	int64_t start = mono_us(), stop = start + (int64_t)seconds * 1000000, drain_until = stop + 5000000;
	char body[128], post[512];
	for (;;) {
		int64_t now = mono_us();
		if (now >= drain_until)
			break;
		if (now < stop) {
			uint64_t due = (uint64_t)((double)(now - start) * rate / 1e6);
			for (int i = 0; i < APPENDERS && sent < due; i++) {
				if (ap[i].busy)
					continue;
				int bl = snprintf(body, sizeof body, "{\"expected_version\":\"any\",\"events\":[{\"type\":\"LiveBench\",\"data\":{\"t\":%lld}}]}",
						  (long long)wall_us());
				int pl = snprintf(post, sizeof post,
						  "POST /streams/livebench-%d/events HTTP/1.1\r\nHost: %s\r\n"
						  "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
						  i, host, bl, body);
				send_all(ap[i].fd, post, (size_t)pl);
				ap[i].busy = true;
				ap[i].got = 0;
				sent++;
			}
		} else if (appended + append_errors == sent && delivered >= appended * (uint64_t)connected) {
			break;
		}
		int n = epoll_wait(ep, evs, 512, 1);
		now = wall_us();
		for (int k = 0; k < n; k++) {
			uint64_t id = evs[k].data.u64;
			if (id >= (uint64_t)nsubs) {
				struct appender *a = &ap[id - (uint64_t)nsubs];
				ssize_t r = recv(a->fd, a->in + a->got, sizeof a->in - 1 - a->got, 0);
				if (r <= 0)
					continue;
				a->got += (size_t)r;
				a->in[a->got] = '\0';
				char *end = strstr(a->in, "\r\n\r\n");
				char *cl = strcasestr(a->in, "\r\nContent-Length:");
				if (!end || !cl || a->got - (size_t)(end + 4 - a->in) < strtoul(cl + 17, NULL, 10))
					continue;
				if (strncmp(a->in, "HTTP/1.1 201", 12) == 0)
					appended++;
				else
					append_errors++;
				a->busy = false;
				continue;
			}
			struct sub *s = &subs[id];
			for (;;) {
				ssize_t r = recv(s->fd, buf, sizeof buf, 0);
				if (r <= 0)
					break;
				scan(s, buf, (size_t)r, now);
				if ((size_t)r < sizeof buf)
					break;
			}
		}
	}
	uint64_t expected = appended * (uint64_t)connected;
	printf("BENCH subscribers=%d connected=%d appended=%llu append_errors=%llu expected=%llu delivered=%llu "
	       "p50_ms=%.0f p99_ms=%.0f max_ms=%.0f rate=%d seconds=%d\n",
	       nsubs, connected, (unsigned long long)appended, (unsigned long long)append_errors,
	       (unsigned long long)expected, (unsigned long long)delivered, percentile(0.50), percentile(0.99),
	       percentile(1.0), rate, seconds);
	return 0;
}

/* ---- idle ------------------------------------------------------------------------ */

static volatile sig_atomic_t stop_flag;
static void on_term(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static int run_idle(int nconns)
{
	int *fds = calloc((size_t)nconns, sizeof *fds);
	char req[256];
	snprintf(req, sizeof req, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", host);
	int ok = 0;
	for (int i = 0; i < nconns; i++) {
		fds[i] = dial();
		struct timeval tv = { .tv_sec = 30 };
		setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
		if (request(fds[i], req, NULL) == 200)
			ok++;
	}
	printf("READY ok=%d\n", ok);
	fflush(stdout);
	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	while (!stop_flag)
		pause();
	int alive = 0;
	for (int i = 0; i < nconns; i++)
		if (request(fds[i], req, NULL) == 200)
			alive++;
	printf("BENCH connections=%d ok=%d alive=%d\n", nconns, ok, alive);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 5) {
		fprintf(stderr, "usage: live sse HOST PORT SUBSCRIBERS RATE SECONDS | live idle HOST PORT CONNECTIONS\n");
		return 2;
	}
	raise_nofile();
	host = argv[2];
	addr.sin_family = AF_INET;
	addr.sin_port = htons((uint16_t)atoi(argv[3]));
	if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
		fprintf(stderr, "live: HOST must be an IPv4 address\n");
		return 2;
	}
	if (strcmp(argv[1], "sse") == 0 && argc == 7)
		return run_sse(atoi(argv[4]), atoi(argv[5]), atoi(argv[6]));
	if (strcmp(argv[1], "idle") == 0 && argc == 5)
		return run_idle(atoi(argv[4]));
	fprintf(stderr, "live: bad arguments\n");
	return 2;
}
