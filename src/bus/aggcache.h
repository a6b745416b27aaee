/*
 * aggcache.h - a bounded in-process cache of recently used aggregate states,
 * keyed by stream, holding each state and its version.
 *
 * The command bus decides on a cached state without reading the database and
 * appends with the cached version as the expected version: if another
 * process wrote meanwhile, the append reports a conflict and the bus reloads.
 * So a stale entry never changes what a command decides; it only costs a
 * retry.  A value is used by one command at a time: fd_aggcache_take removes
 * it, and the command puts its new state back after appending, so the state
 * moves between commands without being copied or converted.  A second
 * command on the same stream meanwhile misses and loads from the database.
 *
 * Threading: thread-safe; the key space is split into shards, each with its
 * own mutex and LRU list, so threads rarely contend.
 */
#ifndef FACTD_AGGCACHE_H
#define FACTD_AGGCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "factd/error.h"

struct fd_aggcache;

/* Frees a value the cache owns (evicted, dropped, replaced, or refused by put). */
typedef void (*fd_aggcache_free_fn)(void *value);

/* A cache of at most `capacity` streams (0 = disabled: every take misses).  Caller owns *out. */
FD_MUST_USE enum fd_err fd_aggcache_new(size_t capacity, fd_aggcache_free_fn free_value, struct fd_aggcache **out);
void fd_aggcache_free(struct fd_aggcache *c);

/*
 * Remove the cached value of `stream` and return it (caller owns) with its
 * version, or NULL on a miss.
 */
void *fd_aggcache_take(struct fd_aggcache *c, const char *stream, int64_t *version);
/*
 * Cache `value` (ownership passes to the cache) as the state of `stream` at
 * `version`, unless a newer one is cached, in which case value is freed.
 */
void fd_aggcache_put(struct fd_aggcache *c, const char *stream, int64_t version, void *value);
/* Forget `stream`. */
void fd_aggcache_drop(struct fd_aggcache *c, const char *stream);

struct fd_aggcache_stats {
	uint64_t hits, misses, evictions;
	size_t entries;
};
void fd_aggcache_stats(struct fd_aggcache *c, struct fd_aggcache_stats *out);

#endif
