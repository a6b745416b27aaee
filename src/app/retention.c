/*
 * retention.c - the retention job (retention.h).
 *
 * Every process with FACTD_RETENTION=1 runs the thread; each round it tries
 * the advisory lock "factd.retention" on its own connection, and only the
 * session holding it works: a round runs in exactly one process, and when
 * that process dies its session ends, the lock is freed and another takes
 * over at its next round.  A round removes, per category policy, what falls
 * out in batches of FACTD_RETENTION_BATCH (each batch its own transaction,
 * archived first when FACTD_ARCHIVE_DIR is set), then the sagas that ended
 * more than FACTD_SAGA_RETENTION_S ago, likewise in batches.  Rounds run
 * every FACTD_RETENTION_INTERVAL_S seconds.
 *
 * Threading: one thread; start and stop from the owner's thread.
 */
#include "app/retention.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <libpq-fe.h>

#include "factd/hash.h"
#include "factd/log.h"
#include "factd/pool.h"
#include "factd/sql.h"
#include "saga/rows.h"
#include "store/lifecycle.h"

struct fd_retention_job {
	const struct fd_config *cfg;
	struct fd_retention_aggregate *aggs;
	size_t naggs;
	pthread_t thread;
	atomic_bool stop;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	PGconn *conn;
	bool holder;
	struct fd_metrics *metrics;   /* may be NULL */
};

static PGconn *connect_db(const char *conninfo)
{
	PGconn *c = PQconnectdb(conninfo);
	fd_pg_log_notices(c, "retention");
	if (PQstatus(c) != CONNECTION_OK) {
		fd_log_fields(FD_LOG_WARN, "retention job cannot connect", json_pack("{s:s}", "error", PQerrorMessage(c)));
		PQfinish(c);
		return NULL;
	}
	/* each batch's plan should fit its values (cut-offs, categories) */
	if (fd_sql_once(c, "SET plan_cache_mode = force_custom_plan", 0, NULL, NULL)) {
		PQfinish(c);
		return NULL;
	}
	return c;
}

/* Hold the lock (taking it if free); false when another process holds it or the database is away. */
static bool hold_lock(struct fd_retention_job *j)
{
	if (j->conn && PQstatus(j->conn) != CONNECTION_OK) {
		PQfinish(j->conn);
		j->conn = NULL;
		j->holder = false;
	}
	if (!j->conn && !(j->conn = connect_db(fd_config_session_url(j->cfg))))
		return false;
	if (j->holder)
		return true;
	char key[24];
	snprintf(key, sizeof key, "%lld", fd_lock_key("factd.retention", ""));
	const char *p[] = { key };
	PGresult *res = NULL;
	if (fd_sql_once(j->conn, "SELECT pg_try_advisory_lock($1::bigint)", 1, p, &res) == FD_OK)
		j->holder = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (j->holder)
		fd_log(FD_LOG_INFO, "retention job taken by this process");
	return j->holder;
}

static void round_once(struct fd_retention_job *j)
{
	if (!hold_lock(j))
		return;
	int64_t removed = 0, sagas = 0, archived = 0, files = 0;
	struct fd_retention_config rc = { .archive_dir = j->cfg->archive_dir, .batch = j->cfg->retention_batch,
					  .aggregates = j->aggs, .naggregates = j->naggs, .stop = &j->stop,
					  .archived = &archived, .files = &files };
	enum fd_err err = fd_retention_round(j->conn, &rc, &removed);
	if (err)
		fd_log_fields(FD_LOG_WARN, "retention round failed; the rest waits for the next round",
			      json_pack("{s:s, s:I}", "error", fd_err_name(err), "removed", (json_int_t)removed));
	if (!err && j->cfg->saga_retention_s > 0) {
		for (;;) {
			int64_t n = 0;
			if ((err = fd_saga_cleanup_batch(j->conn, j->cfg->saga_retention_s, j->cfg->retention_batch, &n))) {
				fd_log_fields(FD_LOG_WARN, "saga cleanup failed", json_pack("{s:s}", "error", fd_err_name(err)));
				break;
			}
			sagas += n;
			if (n < (int64_t)j->cfg->retention_batch || atomic_load(&j->stop))
				break;
		}
	}
	fd_metrics_retention_round(j->metrics,
				   &(struct fd_metrics_retention){ .events_removed = (uint64_t)removed,
								   .events_archived = (uint64_t)archived,
								   .archive_files = (uint64_t)files,
								   .sagas_removed = (uint64_t)sagas, .failed = err != FD_OK },
				   (int64_t)time(NULL));
	if (removed || sagas)
		fd_log_fields(FD_LOG_INFO, "retention round",
			      json_pack("{s:I, s:I}", "events_removed", (json_int_t)removed, "sagas_removed",
					(json_int_t)sagas));
	if (err && PQstatus(j->conn) != CONNECTION_OK) {
		PQfinish(j->conn);
		j->conn = NULL;
		j->holder = false;
	}
}

static void *job_main(void *arg)
{
	struct fd_retention_job *j = arg;
	while (!atomic_load(&j->stop)) {
		round_once(j);
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += j->cfg->retention_interval_s;
		pthread_mutex_lock(&j->lock);
		while (!atomic_load(&j->stop) &&
		       pthread_cond_timedwait(&j->wake, &j->lock, &until) == 0)
			;
		pthread_mutex_unlock(&j->lock);
	}
	PQfinish(j->conn);
	j->conn = NULL;
	return NULL;
}

enum fd_err fd_retention_start(const struct fd_config *cfg, const struct fd_app *app, const struct fd_bus *bus,
			       struct fd_metrics *metrics, struct fd_retention_job **out)
{
	*out = NULL;
	struct fd_retention_job *j = calloc(1, sizeof *j);
	if (!j)
		return FD_ERR_NOMEM;
	j->cfg = cfg;
	j->metrics = metrics;
	if (app->naggregates && !(j->aggs = calloc(app->naggregates, sizeof *j->aggs))) {
		free(j);
		return FD_ERR_NOMEM;
	}
	for (size_t i = 0; i < app->naggregates; i++)
		j->aggs[i] = (struct fd_retention_aggregate){ app->aggregates[i]->category,
							      fd_bus_snapshot_schema(bus, app->aggregates[i]) };
	j->naggs = app->naggregates;
	atomic_init(&j->stop, false);
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->wake, NULL);
	if (pthread_create(&j->thread, NULL, job_main, j) != 0) {
		pthread_mutex_destroy(&j->lock);
		pthread_cond_destroy(&j->wake);
		free(j->aggs);
		free(j);
		return FD_ERR_NOMEM;
	}
	*out = j;
	return FD_OK;
}

void fd_retention_stop(struct fd_retention_job *j)
{
	if (!j)
		return;
	pthread_mutex_lock(&j->lock);
	atomic_store(&j->stop, true);
	pthread_cond_broadcast(&j->wake);
	pthread_mutex_unlock(&j->lock);
	pthread_join(j->thread, NULL);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->wake);
	free(j->aggs);
	free(j);
}
