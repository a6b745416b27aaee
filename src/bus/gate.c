/*
 * gate.c - per-stream gates for the command bus (see gate.h).
 *
 * A fixed table of buckets, each with a mutex and a list of the streams that
 * have a command running or waiting.  An entry counts its users; the last to
 * leave frees it.  Waiters sleep on the entry's condition variable.
 */
#include "gate.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "factd/hash.h"

enum { BUCKETS = 256 };

struct fd_gate {
	struct fd_gate *next;
	unsigned bucket;
	unsigned users;   /* the holder and the waiters */
	bool held;
	pthread_cond_t free;
	char stream[];
};

struct bucket {
	pthread_mutex_t mu;
	struct fd_gate *head;
};

struct fd_gates {
	struct bucket buckets[BUCKETS];
};

enum fd_err fd_gates_new(struct fd_gates **out)
{
	struct fd_gates *g = calloc(1, sizeof *g);
	*out = NULL;
	if (!g)
		return FD_ERR_NOMEM;
	for (unsigned i = 0; i < BUCKETS; i++) {
		if (pthread_mutex_init(&g->buckets[i].mu, NULL) != 0) {
			while (i-- > 0)
				pthread_mutex_destroy(&g->buckets[i].mu);
			free(g);
			return FD_ERR_INTERNAL;
		}
	}
	*out = g;
	return FD_OK;
}

void fd_gates_free(struct fd_gates *g)
{
	if (!g)
		return;
	for (unsigned i = 0; i < BUCKETS; i++)
		pthread_mutex_destroy(&g->buckets[i].mu);
	free(g);
}

struct fd_gate *fd_gate_enter(struct fd_gates *g, const char *stream)
{
	unsigned bi = (unsigned)(fd_fnv1a(FD_FNV1A_BASIS, stream) % BUCKETS);
	struct bucket *b = &g->buckets[bi];
	pthread_mutex_lock(&b->mu);
	struct fd_gate *e = b->head;
	while (e && strcmp(e->stream, stream) != 0)
		e = e->next;
	if (!e) {
		size_t len = strlen(stream);
		e = malloc(sizeof *e + len + 1);
		if (!e || pthread_cond_init(&e->free, NULL) != 0) {
			free(e);
			pthread_mutex_unlock(&b->mu);
			return NULL;
		}
		memcpy(e->stream, stream, len + 1);
		e->bucket = bi;
		e->users = 0;
		e->held = false;
		e->next = b->head;
		b->head = e;
	}
	e->users++;
	while (e->held)
		pthread_cond_wait(&e->free, &b->mu);
	e->held = true;
	pthread_mutex_unlock(&b->mu);
	return e;
}

void fd_gate_leave(struct fd_gates *g, struct fd_gate *e)
{
	if (!e)
		return;
	struct bucket *b = &g->buckets[e->bucket];
	pthread_mutex_lock(&b->mu);
	e->held = false;
	if (--e->users > 0) {
		pthread_cond_signal(&e->free);
		pthread_mutex_unlock(&b->mu);
		return;
	}
	struct fd_gate **link = &b->head;
	while (*link != e)
		link = &(*link)->next;
	*link = e->next;
	pthread_mutex_unlock(&b->mu);
	pthread_cond_destroy(&e->free);
	free(e);
}
