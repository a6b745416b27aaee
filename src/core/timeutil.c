/*
 * timeutil.c - RFC 3339 date-times to and from microseconds since the Unix
 * epoch.  Calendar arithmetic is the proleptic Gregorian days-from-civil
 * algorithm (H. Hinnant, "chrono-Compatible Low-Level Date Algorithms"), so
 * neither the process time zone nor the locale matters.
 *
 * Threading: pure functions.
 */
#include "factd/timeutil.h"

#include <inttypes.h>
#include <stdio.h>

enum { US_PER_SEC = 1000000, SEC_PER_DAY = 86400 };

/* Days from 1970-01-01 to y-m-d (m 1..12, d 1..31), negative before it. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);                        /* [0, 399] */
	unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;  /* [0, 365] */
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;            /* [0, 146096] */
	return era * 146097 + (int64_t)doe - 719468;
}

/* The inverse of days_from_civil. */
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

static bool leap_year(unsigned y)
{
	return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
}

static unsigned days_in_month(unsigned y, unsigned m)
{
	static const unsigned char days[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	return m == 2 && leap_year(y) ? 29 : days[m - 1];
}

/* Exactly n decimal digits at *p, advancing it.  False if any is not a digit. */
static bool digits(const char **p, int n, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < n; i++) {
		char c = (*p)[i];
		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (unsigned)(c - '0');
	}
	*p += n;
	*out = v;
	return true;
}

static bool expect(const char **p, char c)
{
	if (**p != c)
		return false;
	(*p)++;
	return true;
}

bool fd_time_parse_rfc3339(const char *s, int64_t *unix_us)
{
	unsigned year, month, day, hour, minute, second, frac_us = 0, off_h = 0, off_m = 0;
	int off_sign = 0;
	const char *p = s;

	if (!s || !unix_us)
		return false;
	/* full-date */
	if (!digits(&p, 4, &year) || !expect(&p, '-') || !digits(&p, 2, &month) || !expect(&p, '-') ||
	    !digits(&p, 2, &day))
		return false;
	if (year < 1 || month < 1 || month > 12 || day < 1 || day > days_in_month(year, month))
		return false;
	if (*p != 'T' && *p != 't' && *p != ' ')
		return false;
	p++;
	/* partial-time */
	if (!digits(&p, 2, &hour) || !expect(&p, ':') || !digits(&p, 2, &minute) || !expect(&p, ':') ||
	    !digits(&p, 2, &second))
		return false;
	if (hour > 23 || minute > 59 || second > 60)
		return false;
	if (second == 60)
		second = 59;  /* a leap second */
	if (*p == '.') {
		int n = 0;
		for (p++; *p >= '0' && *p <= '9'; p++, n++) {
			if (n >= 9)
				return false;
			if (n < 6)
				frac_us = frac_us * 10 + (unsigned)(*p - '0');
		}
		if (n == 0)
			return false;
		for (; n < 6; n++)
			frac_us *= 10;
	}
	/* time-offset */
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		off_sign = *p++ == '+' ? 1 : -1;
		if (!digits(&p, 2, &off_h) || !expect(&p, ':') || !digits(&p, 2, &off_m) || off_h > 23 ||
		    off_m > 59)
			return false;
	} else {
		return false;
	}
	if (*p != '\0')
		return false;

	int64_t secs = days_from_civil(year, month, day) * SEC_PER_DAY + (int64_t)hour * 3600 +
		       (int64_t)minute * 60 + second;
	secs -= off_sign * ((int64_t)off_h * 3600 + (int64_t)off_m * 60);
	*unix_us = secs * US_PER_SEC + frac_us;
	return true;
}

void fd_time_format_rfc3339(int64_t unix_us, char *buf, size_t len)
{
	if (!buf || !len)
		return;
	/* Floor divisions, so moments before 1970 still get a fraction in [0, 1 s). */
	int64_t secs = unix_us / US_PER_SEC, us = unix_us % US_PER_SEC;
	if (us < 0) {
		us += US_PER_SEC;
		secs--;
	}
	int64_t days = secs / SEC_PER_DAY, sod = secs % SEC_PER_DAY;
	if (sod < 0) {
		sod += SEC_PER_DAY;
		days--;
	}
	int64_t y;
	unsigned m, d;
	civil_from_days(days, &y, &m, &d);
	snprintf(buf, len, "%04" PRId64 "-%02u-%02uT%02u:%02u:%02u.%06uZ", y, m, d, (unsigned)(sod / 3600),
		 (unsigned)(sod / 60 % 60), (unsigned)(sod % 60), (unsigned)us);
}
