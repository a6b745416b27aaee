/*
 * log.h - structured logging: one JSON object per line on stderr.
 *
 * Thread-safe: each line is written with one write(2).  The level is set once
 * at start-up (fd_log_set_level) before threads exist.
 */
#ifndef FACTD_LOG_H
#define FACTD_LOG_H

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

enum fd_log_level { FD_LOG_DEBUG = 0, FD_LOG_INFO, FD_LOG_WARN, FD_LOG_ERROR };

/* Parse "debug", "info", "warn", "error"; returns -1 for anything else. */
int fd_log_level_parse(const char *s);
void fd_log_set_level(enum fd_log_level level);
int fd_log_enabled(enum fd_log_level level);

/*
 * Log a message with optional fields.  `fields` may be NULL; it is consumed
 * (its reference is stolen) in every case.  "ts", "level" and "msg" are added.
 */
void fd_log_fields(enum fd_log_level level, const char *msg, json_t *fields);

/* printf-style convenience wrapper without extra fields. */
void fd_log(enum fd_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif
