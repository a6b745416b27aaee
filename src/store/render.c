/*
 * render.c - events as the JSON objects the HTTP API returns, rendered from
 * the plain columns of a binary-format result.
 *
 * The members are those of the SQL function fd_event_json
 * (migrations/0001_event_store.sql) in its order, written compactly like
 * every other response: no whitespace between tokens, strings escaped as
 * PostgreSQL's escape_json does, data and metadata as jsonb's own text
 * (which jsonb's binary send format carries after a version byte) without
 * the spaces jsonb puts after ':' and ',', and recorded_at as
 * to_char(... AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"').
 * Rendering here instead of in PostgreSQL moves that work off the database,
 * which every request shares.  tests/integration/test_store.c compares the
 * rendering byte for byte with fd_event_json's, made compact.
 *
 * Threading: no shared state.
 */
#include <stdint.h>
#include <string.h>

#include "factd/buf.h"
#include "factd/jsonspan.h"
#include "factd/timeutil.h"
#include "internal.h"

/* PostgreSQL timestamps count microseconds from 2000-01-01 00:00:00 UTC. */
#define PG_EPOCH_UNIX_US INT64_C(946684800000000)

static uint64_t be64(const char *p)
{
	const unsigned char *u = (const unsigned char *)p;
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | u[i];
	return v;
}

bool fd_bin_u64(const PGresult *res, int row, int col, uint64_t *out)
{
	if (PQgetisnull(res, row, col) || PQgetlength(res, row, col) != 8)
		return false;
	*out = be64(PQgetvalue(res, row, col));
	return true;
}

/* Decimal digits of v at p; returns the end. */
static char *put_u64(char *p, uint64_t v)
{
	char tmp[20];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = tmp[--n];
	return p;
}

static char *put_i64(char *p, int64_t v)
{
	if (v < 0) {
		*p++ = '-';
		return put_u64(p, (uint64_t)0 - (uint64_t)v);
	}
	return put_u64(p, (uint64_t)v);
}

static char *put_fixed(char *p, unsigned v, int digits)
{
	for (int i = digits - 1; i >= 0; i--) {
		p[i] = (char)('0' + v % 10);
		v /= 10;
	}
	return p + digits;
}

/* Days since 1970-01-01 to a civil date (proleptic Gregorian). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

/* "YYYY-MM-DDTHH:MI:SS.USZ" of a PostgreSQL timestamptz; returns the end. */
static char *put_time(char *p, int64_t pg_us)
{
	int64_t unix_us = pg_us + PG_EPOCH_UNIX_US;
	int64_t secs = unix_us / 1000000, us = unix_us % 1000000;
	if (us < 0) {
		us += 1000000;
		secs--;
	}
	int64_t days = secs / 86400, sod = secs % 86400;
	if (sod < 0) {
		sod += 86400;
		days--;
	}
	int64_t y;
	unsigned m, d;
	civil_from_days(days, &y, &m, &d);
	if (y < 0 || y > 9999) {
		char buf[48];
		fd_time_format_rfc3339(unix_us, buf, sizeof buf);
		size_t n = strlen(buf);
		memcpy(p, buf, n);
		return p + n;
	}
	p = put_fixed(p, (unsigned)y, 4);
	*p++ = '-';
	p = put_fixed(p, m, 2);
	*p++ = '-';
	p = put_fixed(p, d, 2);
	*p++ = 'T';
	p = put_fixed(p, (unsigned)(sod / 3600), 2);
	*p++ = ':';
	p = put_fixed(p, (unsigned)(sod / 60 % 60), 2);
	*p++ = ':';
	p = put_fixed(p, (unsigned)(sod % 60), 2);
	*p++ = '.';
	p = put_fixed(p, (unsigned)us, 6);
	*p++ = 'Z';
	return p;
}

/* s as a JSON string the way PostgreSQL's escape_json writes it; returns the end. */
static char *put_json_str(char *p, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	*p++ = '"';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		switch (c) {
		case '\b': *p++ = '\\'; *p++ = 'b'; break;
		case '\f': *p++ = '\\'; *p++ = 'f'; break;
		case '\n': *p++ = '\\'; *p++ = 'n'; break;
		case '\r': *p++ = '\\'; *p++ = 'r'; break;
		case '\t': *p++ = '\\'; *p++ = 't'; break;
		case '"': *p++ = '\\'; *p++ = '"'; break;
		case '\\': *p++ = '\\'; *p++ = '\\'; break;
		default:
			if (c < ' ') {
				memcpy(p, "\\u00", 4);
				p[4] = hex[c >> 4];
				p[5] = hex[c & 15];
				p += 6;
			} else {
				*p++ = (char)c;
			}
		}
	}
	*p++ = '"';
	return p;
}

static char *put_lit(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}
#define PUT(p, lit) put_lit(p, lit, sizeof lit - 1)

/* Room for the names, separators, id, numbers and time of one object (about 260 bytes at most). */
enum { FIXED_BYTES = 512 };

enum fd_err fd_render_event(struct fd_buf *b, const PGresult *res, int row, int col)
{
	enum { ID, STREAM, VERSION, TYPE, DATA, METADATA, RECORDED_AT, TX, SEQ, NCOLS };
	static const int fixed_len[NCOLS] = { [ID] = 16, [VERSION] = 8, [RECORDED_AT] = 8, [TX] = 8, [SEQ] = 8 };
	const char *v[NCOLS];
	size_t len[NCOLS];
	for (int i = 0; i < NCOLS; i++) {
		if (PQgetisnull(res, row, col + i))
			return FD_ERR_INTERNAL;
		v[i] = PQgetvalue(res, row, col + i);
		len[i] = (size_t)PQgetlength(res, row, col + i);
		if (fixed_len[i] && len[i] != (size_t)fixed_len[i])
			return FD_ERR_INTERNAL;
	}
	/* jsonb's binary format: version 1, then the text. */
	if (len[DATA] < 1 || v[DATA][0] != 1 || len[METADATA] < 1 || v[METADATA][0] != 1)
		return FD_ERR_INTERNAL;

	enum fd_err err = fd_buf_reserve(b, FIXED_BYTES + 6 * (len[STREAM] + len[TYPE]) + len[DATA] + len[METADATA]);
	if (err)
		return err;
	char *start = b->data + b->len, *p = start;
	static const char hex[] = "0123456789abcdef";
	const unsigned char *id = (const unsigned char *)v[ID];

	p = PUT(p, "{\"event_id\":\"");
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[id[i] >> 4];
		*p++ = hex[id[i] & 15];
	}
	p = PUT(p, "\",\"stream\":");
	p = put_json_str(p, v[STREAM], len[STREAM]);
	p = PUT(p, ",\"version\":");
	p = put_i64(p, (int64_t)be64(v[VERSION]));
	p = PUT(p, ",\"type\":");
	p = put_json_str(p, v[TYPE], len[TYPE]);
	p = PUT(p, ",\"data\":");
	p += fd_json_compact(p, v[DATA] + 1, len[DATA] - 1);
	p = PUT(p, ",\"metadata\":");
	p += fd_json_compact(p, v[METADATA] + 1, len[METADATA] - 1);
	p = PUT(p, ",\"recorded_at\":\"");
	p = put_time(p, (int64_t)be64(v[RECORDED_AT]));
	p = PUT(p, "\",\"position\":\"");
	p = put_u64(p, be64(v[TX]));
	*p++ = '-';
	p = put_i64(p, (int64_t)be64(v[SEQ]));
	p = PUT(p, "\"}");
	b->len += (size_t)(p - start);
	b->data[b->len] = '\0';
	return FD_OK;
}
