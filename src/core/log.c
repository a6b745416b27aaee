/*
 * log.c - JSON-lines logging to stderr.
 *
 * Threading: the level is written once before threads start; each line is
 * emitted with a single write(2) so lines from different threads never mix.
 */
#include "factd/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int min_level = FD_LOG_INFO;

static const char *const level_names[] = {
	[FD_LOG_DEBUG] = "debug", [FD_LOG_INFO] = "info", [FD_LOG_WARN] = "warn", [FD_LOG_ERROR] = "error",
};

int fd_log_level_parse(const char *s)
{
	for (int i = 0; i < (int)(sizeof level_names / sizeof level_names[0]); i++)
		if (s && strcasecmp(s, level_names[i]) == 0)
			return i;
	if (s && strcasecmp(s, "warning") == 0)
		return FD_LOG_WARN;
	return -1;
}

void fd_log_set_level(enum fd_log_level level)
{
	min_level = (int)level;
}

int fd_log_enabled(enum fd_log_level level)
{
	return (int)level >= min_level;
}

void fd_log_fields(enum fd_log_level level, const char *msg, json_t *fields)
{
	if (!fd_log_enabled(level)) {
		json_decref(fields);
		return;
	}
	json_t *line = json_object();
	if (!line) {
		json_decref(fields);
		return;
	}
	struct timespec ts;
	struct tm tm;
	char when[40];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + n, sizeof when - n, ".%03ldZ", ts.tv_nsec / 1000000);
	json_object_set_new(line, "ts", json_string(when));
	json_object_set_new(line, "level", json_string(level_names[level]));
	json_object_set_new(line, "msg", json_string(msg ? msg : ""));
	if (fields)
		json_object_update_missing(line, fields);
	json_decref(fields);
	char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
	json_decref(line);
	if (!text)
		return;
	size_t len = strlen(text);
	text[len] = '\n'; /* json_dumps leaves room: replace NUL, write len+1 */
	ssize_t w = write(STDERR_FILENO, text, len + 1);
	(void)w;
	free(text);
}

void fd_log(enum fd_log_level level, const char *fmt, ...)
{
	if (!fd_log_enabled(level))
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fd_log_fields(level, msg, NULL);
}
