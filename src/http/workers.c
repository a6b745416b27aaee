/*
 * workers.c - the handler thread pool (see workers.h).
 *
 * Threading: one mutex guards the FIFO queue and the counters; workers sleep
 * on `ready`, fd_workers_close sleeps on `idle`.
 */
#include "http/workers.h"

#include <pthread.h>
#include <stdlib.h>

struct fd_workers {
	pthread_mutex_t lock;
	pthread_cond_t ready;    /* a job was queued, or the pool is stopping */
	pthread_cond_t idle;     /* nothing queued or running */
	struct fd_job *head, *tail;
	unsigned queued, running;
	bool closed;             /* refuse new jobs */
	bool quit;               /* threads exit once the queue is empty */
	unsigned nthreads;
	pthread_t *threads;
};

static void *worker_main(void *arg)
{
	struct fd_workers *w = arg;
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (!w->head && !w->quit)
			pthread_cond_wait(&w->ready, &w->lock);
		if (!w->head)
			break;
		struct fd_job *job = w->head;
		w->head = job->next;
		if (!w->head)
			w->tail = NULL;
		w->queued--;
		w->running++;
		pthread_mutex_unlock(&w->lock);
		job->next = NULL;
		job->run(job);
		pthread_mutex_lock(&w->lock);
		w->running--;
		if (!w->running && !w->queued)
			pthread_cond_broadcast(&w->idle);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

enum fd_err fd_workers_start(unsigned n, struct fd_workers **out)
{
	struct fd_workers *w = calloc(1, sizeof *w);
	if (n == 0)
		n = 1;
	if (!w || !(w->threads = calloc(n, sizeof *w->threads))) {
		free(w);
		return FD_ERR_NOMEM;
	}
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->ready, NULL);
	pthread_cond_init(&w->idle, NULL);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 512 * 1024);
	for (; w->nthreads < n; w->nthreads++)
		if (pthread_create(&w->threads[w->nthreads], &attr, worker_main, w) != 0)
			break;
	pthread_attr_destroy(&attr);
	if (w->nthreads < n) {
		fd_workers_stop(w);
		return FD_ERR_IO;
	}
	*out = w;
	return FD_OK;
}

bool fd_workers_submit(struct fd_workers *w, struct fd_job *job)
{
	pthread_mutex_lock(&w->lock);
	bool ok = !w->closed;
	if (ok) {
		job->next = NULL;
		if (w->tail)
			w->tail->next = job;
		else
			w->head = job;
		w->tail = job;
		w->queued++;
		pthread_cond_signal(&w->ready);
	}
	pthread_mutex_unlock(&w->lock);
	return ok;
}

unsigned fd_workers_busy(struct fd_workers *w)
{
	pthread_mutex_lock(&w->lock);
	unsigned n = w->queued + w->running;
	pthread_mutex_unlock(&w->lock);
	return n;
}

void fd_workers_close(struct fd_workers *w)
{
	pthread_mutex_lock(&w->lock);
	w->closed = true;
	while (w->queued || w->running)
		pthread_cond_wait(&w->idle, &w->lock);
	pthread_mutex_unlock(&w->lock);
}

void fd_workers_stop(struct fd_workers *w)
{
	if (!w)
		return;
	fd_workers_close(w);
	pthread_mutex_lock(&w->lock);
	w->quit = true;
	pthread_cond_broadcast(&w->ready);
	pthread_mutex_unlock(&w->lock);
	for (unsigned i = 0; i < w->nthreads; i++)
		pthread_join(w->threads[i], NULL);
	pthread_cond_destroy(&w->idle);
	pthread_cond_destroy(&w->ready);
	pthread_mutex_destroy(&w->lock);
	free(w->threads);
	free(w);
}
