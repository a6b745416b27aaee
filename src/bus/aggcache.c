/*
 * aggcache.c - sharded LRU cache of aggregate states.
 *
 * Each shard: a chained hash table (FNV-1a on the stream name) and a doubly
 * linked LRU list, guarded by one mutex.  Capacity is split evenly between
 * shards.  Values are owned by the cache while cached and handed over whole
 * by fd_aggcache_take, so eviction never frees a value in use.
 */
#include "bus/aggcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "factd/hash.h"

#define SHARDS 16

struct entry {
	struct entry *hnext;          /* hash chain */
	struct entry *prev, *next;    /* LRU list, most recent first */
	uint64_t hash;
	int64_t version;
	void *value;
	char stream[];
};

struct shard {
	pthread_mutex_t lock;
	struct entry **buckets;
	size_t nbuckets;
	struct entry *head, *tail;
	size_t count, capacity;
	uint64_t hits, misses, evictions;
};

struct fd_aggcache {
	size_t capacity;
	fd_aggcache_free_fn free_value;
	struct shard shards[SHARDS];
};

enum fd_err fd_aggcache_new(size_t capacity, fd_aggcache_free_fn free_value, struct fd_aggcache **out)
{
	struct fd_aggcache *c = calloc(1, sizeof *c);
	if (!c)
		return FD_ERR_NOMEM;
	c->capacity = capacity;
	c->free_value = free_value;
	for (int i = 0; i < SHARDS; i++) {
		struct shard *s = &c->shards[i];
		pthread_mutex_init(&s->lock, NULL);
		s->capacity = capacity ? (capacity + SHARDS - 1) / SHARDS : 0;
		s->nbuckets = 16;
		while (s->nbuckets < s->capacity)
			s->nbuckets *= 2;
		s->buckets = calloc(s->nbuckets, sizeof *s->buckets);
		if (!s->buckets) {
			for (int j = 0; j <= i; j++) {
				free(c->shards[j].buckets);
				pthread_mutex_destroy(&c->shards[j].lock);
			}
			free(c);
			return FD_ERR_NOMEM;
		}
	}
	*out = c;
	return FD_OK;
}

void fd_aggcache_free(struct fd_aggcache *c)
{
	if (!c)
		return;
	for (int i = 0; i < SHARDS; i++) {
		struct shard *s = &c->shards[i];
		for (struct entry *e = s->head, *n; e; e = n) {
			n = e->next;
			c->free_value(e->value);
			free(e);
		}
		free(s->buckets);
		pthread_mutex_destroy(&s->lock);
	}
	free(c);
}

static struct shard *shard_for(struct fd_aggcache *c, uint64_t h)
{
	return &c->shards[h % SHARDS];
}

static struct entry **slot(struct shard *s, uint64_t h, const char *stream)
{
	struct entry **p = &s->buckets[(h / SHARDS) & (s->nbuckets - 1)];
	while (*p && ((*p)->hash != h || strcmp((*p)->stream, stream) != 0))
		p = &(*p)->hnext;
	return p;
}

static void lru_unlink(struct shard *s, struct entry *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		s->head = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		s->tail = e->prev;
	e->prev = e->next = NULL;
}

static void lru_push_front(struct shard *s, struct entry *e)
{
	e->prev = NULL;
	e->next = s->head;
	if (s->head)
		s->head->prev = e;
	s->head = e;
	if (!s->tail)
		s->tail = e;
}

/* Unlink e from its hash chain and the LRU list and free it, returning its value.  Lock held. */
static void *unlink_entry(struct shard *s, struct entry *e)
{
	struct entry **p = slot(s, e->hash, e->stream);
	if (*p == e)
		*p = e->hnext;
	lru_unlink(s, e);
	s->count--;
	void *value = e->value;
	free(e);
	return value;
}

void *fd_aggcache_take(struct fd_aggcache *c, const char *stream, int64_t *version)
{
	if (!c || !c->capacity)
		return NULL;
	uint64_t h = fd_fnv1a(FD_FNV1A_BASIS, stream);
	struct shard *s = shard_for(c, h);
	void *value = NULL;
	pthread_mutex_lock(&s->lock);
	struct entry *e = *slot(s, h, stream);
	if (e) {
		*version = e->version;
		value = unlink_entry(s, e);
		s->hits++;
	} else {
		s->misses++;
	}
	pthread_mutex_unlock(&s->lock);
	return value;
}

void fd_aggcache_put(struct fd_aggcache *c, const char *stream, int64_t version, void *value)
{
	if (!value)
		return;
	if (!c || !c->capacity) {
		if (c)
			c->free_value(value);
		return;
	}
	uint64_t h = fd_fnv1a(FD_FNV1A_BASIS, stream);
	struct shard *s = shard_for(c, h);
	size_t len = strlen(stream);
	pthread_mutex_lock(&s->lock);
	struct entry **p = slot(s, h, stream);
	if (*p) {
		struct entry *e = *p;
		if (e->version < version) {
			void *old = e->value;
			e->value = value;
			e->version = version;
			value = old;
		}
		lru_unlink(s, e);
		lru_push_front(s, e);
	} else {
		struct entry *e = malloc(sizeof *e + len + 1);
		if (e) {
			memcpy(e->stream, stream, len + 1);
			e->hash = h;
			e->version = version;
			e->value = value;
			value = NULL;
			e->hnext = NULL;
			*p = e;
			lru_push_front(s, e);
			s->count++;
			while (s->count > s->capacity && s->tail) {
				/* Freed under the lock: rare, and the entry is no one else's. */
				c->free_value(unlink_entry(s, s->tail));
				s->evictions++;
			}
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (value)
		c->free_value(value);
}

void fd_aggcache_drop(struct fd_aggcache *c, const char *stream)
{
	if (!c || !c->capacity)
		return;
	uint64_t h = fd_fnv1a(FD_FNV1A_BASIS, stream);
	struct shard *s = shard_for(c, h);
	pthread_mutex_lock(&s->lock);
	struct entry *e = *slot(s, h, stream);
	void *value = e ? unlink_entry(s, e) : NULL;
	pthread_mutex_unlock(&s->lock);
	if (value)
		c->free_value(value);
}

void fd_aggcache_stats(struct fd_aggcache *c, struct fd_aggcache_stats *out)
{
	memset(out, 0, sizeof *out);
	if (!c)
		return;
	for (int i = 0; i < SHARDS; i++) {
		struct shard *s = &c->shards[i];
		pthread_mutex_lock(&s->lock);
		out->hits += s->hits;
		out->misses += s->misses;
		out->evictions += s->evictions;
		out->entries += s->count;
		pthread_mutex_unlock(&s->lock);
	}
}
