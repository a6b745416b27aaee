/* uuid.c - RFC 9562 version-7 generation, parsing and formatting.  Thread-safe. */
#include "factd/uuid.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

enum fd_err fd_uuid_v7(struct fd_uuid *out)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	unsigned long long ms = (unsigned long long)ts.tv_sec * 1000ULL + (unsigned long long)ts.tv_nsec / 1000000ULL;
	unsigned char rnd[10];
	size_t got = 0;
	while (got < sizeof rnd) {
		ssize_t n = getrandom(rnd + got, sizeof rnd - got, 0);
		if (n < 0)
			return FD_ERR_IO;
		got += (size_t)n;
	}
	for (int i = 0; i < 6; i++)
		out->b[i] = (unsigned char)(ms >> (8 * (5 - i)));
	memcpy(out->b + 6, rnd, 10);
	out->b[6] = (unsigned char)(0x70 | (out->b[6] & 0x0f)); /* version 7 */
	out->b[8] = (unsigned char)(0x80 | (out->b[8] & 0x3f)); /* variant 10 */
	return FD_OK;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool fd_uuid_parse(const char *s, struct fd_uuid *out)
{
	if (!s || strlen(s) != FD_UUID_STRLEN)
		return false;
	int j = 0;
	for (int i = 0; i < FD_UUID_STRLEN;) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return false;
			i++;
			continue;
		}
		int hi = hexval(s[i]), lo = hexval(s[i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		out->b[j++] = (unsigned char)(hi << 4 | lo);
		i += 2;
	}
	return true;
}

void fd_uuid_format(const struct fd_uuid *u, char out[FD_UUID_STRLEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	int o = 0;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[u->b[i] >> 4];
		out[o++] = hex[u->b[i] & 15];
	}
	out[o] = '\0';
}
