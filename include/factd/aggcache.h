/*
 * aggcache.h - a bounded in-process cache of recently used aggregate states,
 * keyed by stream, holding each state's snapshot form and its version.
 *
 * The command bus decides on a cached state without reading the database and
 * appends with the cached version as the expected version: if another
 * process wrote meanwhile, the append reports a conflict and the bus reloads.
 * So a stale entry never changes what a command decides; it only costs a
 * retry.  Entries are immutable JSON values shared by reference.
 *
 * Threading: thread-safe; the key space is split into shards, each with its
 * own mutex and LRU list, so threads rarely contend.
 */
#ifndef FACTD_AGGCACHE_H
#define FACTD_AGGCACHE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "factd/error.h"

struct fd_aggcache;

/* A cache of at most `capacity` streams (0 = disabled: every get misses).  Caller owns *out. */
FD_MUST_USE enum fd_err fd_aggcache_new(size_t capacity, struct fd_aggcache **out);
void fd_aggcache_free(struct fd_aggcache *c);

/*
 * The cached state of `stream` (a new reference the caller must json_decref)
 * and its version, or NULL on a miss.  The value must not be modified.
 */
json_t *fd_aggcache_get(struct fd_aggcache *c, const char *stream, int64_t *version);
/* Remember `snap` (reference stolen) as the state of `stream` at `version`, unless a newer one is cached. */
void fd_aggcache_put(struct fd_aggcache *c, const char *stream, int64_t version, json_t *snap);
/* Forget `stream`. */
void fd_aggcache_drop(struct fd_aggcache *c, const char *stream);

struct fd_aggcache_stats {
	uint64_t hits, misses, evictions;
	size_t entries;
};
void fd_aggcache_stats(struct fd_aggcache *c, struct fd_aggcache_stats *out);

#endif
