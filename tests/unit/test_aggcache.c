/* test_aggcache.c - the aggregate-state cache: take and put, versions, LRU bound, ownership, threads. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "bus/aggcache.h"

/* Values are heap ints; every free is counted, so leaks and double frees show. */
static atomic_long freed;

static void free_int(void *p)
{
	atomic_fetch_add(&freed, 1);
	free(p);
}

static long *int_new(long v)
{
	long *p = malloc(sizeof *p);
	cr_assert_not_null(p);
	*p = v;
	return p;
}

static struct fd_aggcache *cache_new(size_t capacity)
{
	struct fd_aggcache *c;
	atomic_store(&freed, 0);
	cr_assert_eq(fd_aggcache_new(capacity, free_int, &c), FD_OK);
	return c;
}

Test(aggcache, miss_then_hit_with_version)
{
	struct fd_aggcache *c = cache_new(100);
	int64_t v = -1;
	cr_assert_null(fd_aggcache_take(c, "order-1", &v));
	fd_aggcache_put(c, "order-1", 3, int_new(3));
	long *s = fd_aggcache_take(c, "order-1", &v);
	cr_assert_not_null(s);
	cr_assert_eq(v, 3);
	cr_assert_eq(*s, 3);
	struct fd_aggcache_stats st;
	fd_aggcache_stats(c, &st);
	cr_assert_eq(st.hits, 1);
	cr_assert_eq(st.misses, 1);
	cr_assert_eq(st.entries, 0, "a taken value is no longer cached");
	cr_assert_null(fd_aggcache_take(c, "order-1", &v), "one command at a time holds a state");
	fd_aggcache_put(c, "order-1", 4, s); /* back, as a command does after appending */
	fd_aggcache_stats(c, &st);
	cr_assert_eq(st.entries, 1);
	fd_aggcache_free(c);
	cr_assert_eq(atomic_load(&freed), 1, "freeing the cache frees what it holds");
}

Test(aggcache, an_older_version_never_replaces_a_newer_one)
{
	struct fd_aggcache *c = cache_new(100);
	fd_aggcache_put(c, "s", 5, int_new(5));
	fd_aggcache_put(c, "s", 4, int_new(4));
	cr_assert_eq(atomic_load(&freed), 1, "the older value is freed, not kept");
	int64_t v;
	long *s = fd_aggcache_take(c, "s", &v);
	cr_assert_eq(v, 5);
	cr_assert_eq(*s, 5);
	fd_aggcache_put(c, "s", 5, s);
	fd_aggcache_put(c, "s", 6, int_new(6));
	cr_assert_eq(atomic_load(&freed), 2, "the replaced value is freed");
	s = fd_aggcache_take(c, "s", &v);
	cr_assert_eq(v, 6);
	cr_assert_eq(*s, 6);
	fd_aggcache_put(c, "s", 6, s);
	fd_aggcache_drop(c, "s");
	cr_assert_eq(atomic_load(&freed), 3, "a dropped value is freed");
	cr_assert_null(fd_aggcache_take(c, "s", &v));
	fd_aggcache_free(c);
	cr_assert_eq(atomic_load(&freed), 3);
}

Test(aggcache, bounded_by_capacity_evicting_least_recent)
{
	struct fd_aggcache *c = cache_new(160);
	char name[32];
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof name, "order-%d", i);
		fd_aggcache_put(c, name, i + 1, int_new(i));
	}
	struct fd_aggcache_stats st;
	fd_aggcache_stats(c, &st);
	cr_assert_leq(st.entries, 160);
	cr_assert_geq(st.evictions, 5000 - 160);
	cr_assert_eq(atomic_load(&freed), (long)st.evictions, "every evicted value is freed");
	int64_t v;
	long *recent = fd_aggcache_take(c, "order-4999", &v);
	cr_assert_not_null(recent, "the most recent entry survives");
	free(recent);
	cr_assert_null(fd_aggcache_take(c, "order-0", &v), "the oldest entry was evicted");
	fd_aggcache_free(c);
	cr_assert_eq(atomic_load(&freed), 5000 - 1);
}

Test(aggcache, zero_capacity_disables)
{
	struct fd_aggcache *c = cache_new(0);
	fd_aggcache_put(c, "s", 1, int_new(1));
	cr_assert_eq(atomic_load(&freed), 1, "a value the cache will not keep is freed");
	int64_t v;
	cr_assert_null(fd_aggcache_take(c, "s", &v));
	fd_aggcache_free(c);
}

static void *hammer(void *arg)
{
	struct fd_aggcache *c = arg;
	char name[32];
	for (int i = 0; i < 20000; i++) {
		snprintf(name, sizeof name, "s-%d", i % 300);
		int64_t v;
		long *s = fd_aggcache_take(c, name, &v);
		if (s) {
			cr_assert_eq(*s, v, "value and version travel together");
			free(s);
		}
		fd_aggcache_put(c, name, i, int_new(i));
		if (i % 97 == 0)
			fd_aggcache_drop(c, name);
	}
	return NULL;
}

Test(aggcache, threads_share_it_safely)
{
	struct fd_aggcache *c = cache_new(128);
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, hammer, c);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	struct fd_aggcache_stats st;
	fd_aggcache_stats(c, &st);
	cr_assert_leq(st.entries, 128 + 16);
	cr_assert_eq(st.hits + st.misses, 80000);
	fd_aggcache_free(c);
}
