/* test_aggcache.c - the aggregate-state cache: hits, versions, LRU bound, threads. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>

#include "factd/aggcache.h"

Test(aggcache, miss_then_hit_with_version)
{
	struct fd_aggcache *c;
	cr_assert_eq(fd_aggcache_new(100, &c), FD_OK);
	int64_t v = -1;
	cr_assert_null(fd_aggcache_get(c, "order-1", &v));
	fd_aggcache_put(c, "order-1", 3, json_pack("{s:i}", "n", 3));
	json_t *s = fd_aggcache_get(c, "order-1", &v);
	cr_assert_not_null(s);
	cr_assert_eq(v, 3);
	cr_assert_eq(json_integer_value(json_object_get(s, "n")), 3);
	json_decref(s);
	struct fd_aggcache_stats st;
	fd_aggcache_stats(c, &st);
	cr_assert_eq(st.hits, 1);
	cr_assert_eq(st.misses, 1);
	cr_assert_eq(st.entries, 1);
	fd_aggcache_free(c);
}

Test(aggcache, an_older_version_never_replaces_a_newer_one)
{
	struct fd_aggcache *c;
	cr_assert_eq(fd_aggcache_new(100, &c), FD_OK);
	fd_aggcache_put(c, "s", 5, json_pack("{s:i}", "n", 5));
	fd_aggcache_put(c, "s", 4, json_pack("{s:i}", "n", 4));
	int64_t v;
	json_t *s = fd_aggcache_get(c, "s", &v);
	cr_assert_eq(v, 5);
	cr_assert_eq(json_integer_value(json_object_get(s, "n")), 5);
	json_decref(s);
	fd_aggcache_put(c, "s", 6, json_pack("{s:i}", "n", 6));
	s = fd_aggcache_get(c, "s", &v);
	cr_assert_eq(v, 6);
	json_decref(s);
	fd_aggcache_drop(c, "s");
	cr_assert_null(fd_aggcache_get(c, "s", &v));
	fd_aggcache_free(c);
}

Test(aggcache, bounded_by_capacity_evicting_least_recent)
{
	struct fd_aggcache *c;
	cr_assert_eq(fd_aggcache_new(160, &c), FD_OK);
	char name[32];
	for (int i = 0; i < 5000; i++) {
		snprintf(name, sizeof name, "order-%d", i);
		fd_aggcache_put(c, name, i + 1, json_integer(i));
	}
	struct fd_aggcache_stats st;
	fd_aggcache_stats(c, &st);
	cr_assert_leq(st.entries, 160);
	cr_assert_geq(st.evictions, 5000 - 160);
	int64_t v;
	json_t *recent = fd_aggcache_get(c, "order-4999", &v);
	cr_assert_not_null(recent, "the most recent entry survives");
	json_decref(recent);
	cr_assert_null(fd_aggcache_get(c, "order-0", &v), "the oldest entry was evicted");
	fd_aggcache_free(c);
}

Test(aggcache, zero_capacity_disables)
{
	struct fd_aggcache *c;
	cr_assert_eq(fd_aggcache_new(0, &c), FD_OK);
	fd_aggcache_put(c, "s", 1, json_integer(1));
	int64_t v;
	cr_assert_null(fd_aggcache_get(c, "s", &v));
	fd_aggcache_free(c);
}

static void *hammer(void *arg)
{
	struct fd_aggcache *c = arg;
	char name[32];
	for (int i = 0; i < 20000; i++) {
		snprintf(name, sizeof name, "s-%d", i % 300);
		int64_t v;
		json_t *s = fd_aggcache_get(c, name, &v);
		if (s) {
			cr_assert_eq(json_integer_value(s), v, "value and version travel together");
			json_decref(s);
		}
		fd_aggcache_put(c, name, i, json_integer(i));
		if (i % 97 == 0)
			fd_aggcache_drop(c, name);
	}
	return NULL;
}

Test(aggcache, threads_share_it_safely)
{
	struct fd_aggcache *c;
	cr_assert_eq(fd_aggcache_new(128, &c), FD_OK);
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
