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
#include <stdlib.h>
#include <string.h>

#include "factd/buf.h"
#include "factd/jsonspan.h"
#include "factd/timeutil.h"
#include "internal.h"
#include "store/personal.h"

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

static const char personal_member[] = "\"" FD_PERSONAL_KEY "\"";

bool fd_render_is_personal(const PGresult *res, int row, int col)
{
	int mcol = col + 5; /* metadata */
	if (PQgetisnull(res, row, mcol) || PQgetlength(res, row, mcol) < 1)
		return false;
	return memmem(PQgetvalue(res, row, mcol), (size_t)PQgetlength(res, row, mcol), personal_member,
		      sizeof personal_member - 1) != NULL;
}

/* A jsonb column in binary format, parsed; NULL when it does not parse. */
static json_t *jsonb_col(const PGresult *res, int row, int col)
{
	int len = PQgetlength(res, row, col);
	if (PQgetisnull(res, row, col) || len < 1 || PQgetvalue(res, row, col)[0] != 1)
		return NULL;
	json_t *v = json_loadb(PQgetvalue(res, row, col) + 1, (size_t)len - 1, 0, NULL);
	if (!v)
		v = json_loadb(PQgetvalue(res, row, col) + 1, (size_t)len - 1, JSON_DECODE_INT_AS_REAL, NULL);
	return v;
}

enum fd_err fd_render_keys(struct fd_pool *pool, const PGresult *res, const int *rows, int from, int to, int col,
			   struct fd_subject_keys **out)
{
	*out = NULL;
	json_t *subjects = NULL;
	enum fd_err err = FD_OK;
	for (int i = from; i < to && !err; i++) {
		int row = rows ? rows[i] : i;
		if (!fd_render_is_personal(res, row, col))
			continue;
		json_t *md = jsonb_col(res, row, col + 5);
		const char *subject = fd_personal_subject_of(md);
		if (subject) {
			if (!subjects && !(subjects = json_array()))
				err = FD_ERR_NOMEM;
			else if (json_array_append_new(subjects, json_string(subject)) != 0)
				err = FD_ERR_NOMEM;
		}
		json_decref(md);
	}
	if (!err && subjects)
		err = fd_subject_keys_fetch_pool(pool, subjects, out);
	json_decref(subjects);
	return err;
}

/* The event's data with its personal values opened (or erased, listed in *erased); text the caller frees. */
static enum fd_err open_personal(const PGresult *res, int row, int col, const struct fd_subject_keys *keys,
				 char **data_out, char **erased_out)
{
	json_t *data = jsonb_col(res, row, col + 4), *md = jsonb_col(res, row, col + 5), *erased = json_array();
	enum fd_err err = data && md && erased ? FD_OK : FD_ERR_INTERNAL;
	*data_out = *erased_out = NULL;
	if (!err && json_object_get(md, FD_PERSONAL_KEY))
		err = fd_personal_unseal(keys, md, data, erased);
	if (!err && !(*data_out = json_dumps(data, JSON_COMPACT)))
		err = FD_ERR_NOMEM;
	if (!err && json_array_size(erased) && !(*erased_out = json_dumps(erased, JSON_COMPACT)))
		err = FD_ERR_NOMEM;
	json_decref(data);
	json_decref(md);
	json_decref(erased);
	return err;
}

static enum fd_err render_event(struct fd_buf *b, const PGresult *res, int row, int col,
				const struct fd_subject_keys *keys, bool open)
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

	char *opened = NULL, *erased = NULL;
	if (open && fd_render_is_personal(res, row, col)) {
		enum fd_err perr = open_personal(res, row, col, keys, &opened, &erased);
		if (perr)
			return perr;
	}
	size_t data_room = opened ? strlen(opened) : len[DATA], erased_room = erased ? strlen(erased) + 16 : 0;
	enum fd_err err = fd_buf_reserve(b, FIXED_BYTES + 6 * (len[STREAM] + len[TYPE]) + data_room + len[METADATA] +
					     erased_room);
	if (err) {
		free(opened);
		free(erased);
		return err;
	}
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
	if (opened)
		p = put_lit(p, opened, data_room);
	else
		p += fd_json_compact(p, v[DATA] + 1, len[DATA] - 1);
	p = PUT(p, ",\"metadata\":");
	p += fd_json_compact(p, v[METADATA] + 1, len[METADATA] - 1);
	p = PUT(p, ",\"recorded_at\":\"");
	p = put_time(p, (int64_t)be64(v[RECORDED_AT]));
	p = PUT(p, "\",\"position\":\"");
	p = put_u64(p, be64(v[TX]));
	*p++ = '-';
	p = put_i64(p, (int64_t)be64(v[SEQ]));
	*p++ = '"';
	if (erased) {
		p = PUT(p, ",\"erased\":");
		p = put_lit(p, erased, strlen(erased));
	}
	*p++ = '}';
	b->len += (size_t)(p - start);
	b->data[b->len] = '\0';
	free(opened);
	free(erased);
	return FD_OK;
}

enum fd_err fd_render_event(struct fd_buf *b, const PGresult *res, int row, int col,
			    const struct fd_subject_keys *keys)
{
	return render_event(b, res, row, col, keys, true);
}

enum fd_err fd_render_event_stored(struct fd_buf *b, const PGresult *res, int row, int col)
{
	return render_event(b, res, row, col, NULL, false);
}
