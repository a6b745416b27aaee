/*
 * saga.h - process managers (sagas): long-running workflows that react to
 * committed events by sending commands, with durable retries, timeouts and
 * compensation in reverse order.
 *
 * A saga type is a static const table of steps, the C form of
 *   step("reserve_inventory").whenEvent("OrderPlaced").then(reserve)
 *       .compensateWith(release).withTimeout(30 s).withRetry(5, 500 ms, x2)
 * Step 0 is the starting step: an event of its on_event type for a
 * correlation key that has no saga yet creates one.  Every later step starts
 * when its on_event has been seen by the saga (NULL: no event needed) and its
 * ready() condition holds on the saga's data (NULL: always), and only after
 * the step before it ran.  The data is what the type's fold() made of the
 * events so far, merged with what steps reported (ctx->set).  The last
 * step's success completes the saga.
 *
 * Where things live (see migrations/0004_sagas.sql):
 * - Events reach sagas through a checkpointed subscription to the durable
 *   feed ("intake"): folding an event into a saga row and advancing the
 *   checkpoint happen in one transaction, so a crash neither loses nor
 *   repeats an event.  One process at a time runs the intake (advisory lock,
 *   taken over when its holder dies).
 * - Actions and compensations run in worker threads of every process, never
 *   in the intake's transaction.  A worker claims due saga rows with
 *   FOR UPDATE SKIP LOCKED and pushes their due time forward by a lease while
 *   it runs the step; the outcome is recorded only if the claim still holds.
 *   Retries and timeouts are due times in the row, so they survive restarts
 *   and fire once across processes.
 * - Actions only send commands through the command bus.  Each command carries
 *   the saga id as correlation id and an idempotency key derived from saga
 *   id, step and a per-step sub-key, so running a step again after a crash or
 *   a lost lease records nothing twice.
 *
 * Threading: the engine owns its threads and connections; fd_saga_* query and
 * operation functions borrow pool connections and are thread-safe.
 */
#ifndef FACTD_SAGA_H
#define FACTD_SAGA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "factd/bus.h"
#include "factd/error.h"
#include "factd/pool.h"
#include "factd/proj.h"
#include "factd/schema.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How one run of an action or compensation turned out. */
enum fd_step_result {
	FD_STEP_OK,     /* done; the saga moves on */
	FD_STEP_WAIT,   /* started; the outcome will arrive as an event (the step's timeout applies) */
	FD_STEP_RETRY,  /* a transient failure: run again after the retry delay */
	FD_STEP_FAIL,   /* a permanent failure: compensate (or, for a compensation, the saga fails) */
};

/* What an action or compensation sees.  Strings are borrowed for the call. */
struct fd_saga_ctx {
	struct fd_bus *bus;
	void *services;            /* the app's outside systems (struct fd_app_services) */
	const char *saga_id;
	const char *correlation_key;
	const char *step;          /* the step's name */
	bool compensating;         /* running the step's compensation */
	unsigned attempt;          /* 1 for the first run */
	const json_t *data;        /* the saga's data as claimed */
	const char *reason;        /* why the saga compensates (NULL while running forward) */
	json_t *set;               /* members to merge into the saga's data with the outcome (an object) */
	char error[256];           /* RETRY/FAIL: why */
};

struct fd_saga_retry {
	unsigned max_attempts;     /* runs in all, including the first (0 or 1: no retry) */
	unsigned delay_ms;         /* before the second run */
	unsigned backoff_pct;      /* each later delay is this percent of the one before (200 = doubling) */
};

typedef enum fd_step_result (*fd_saga_action_fn)(struct fd_saga_ctx *ctx);

struct fd_saga_step {
	const char *name;
	const char *on_event;               /* event type that starts the step; NULL: none needed */
	bool (*ready)(const json_t *data);  /* extra condition on the saga's data; NULL: none */
	fd_saga_action_fn action;           /* NULL: the step only waits for its event */
	fd_saga_action_fn compensate;       /* NULL: nothing to undo */
	unsigned timeout_ms;                /* after the step ran, how long to wait for the next step; 0 = forever */
	struct fd_saga_retry retry;         /* for the action and the compensation */
};

/* An event folded into a saga: what the type's fold function may do. */
struct fd_saga_fold {
	const char *saga_id;
	bool fail;                 /* set: the event makes the saga compensate */
	char reason[256];          /* why, when fail */
};

struct fd_saga_type {
	const char *name;                        /* "order_fulfillment" */
	const char *const *categories;           /* stream categories it reads; NULL-terminated */
	const char *const *event_types;          /* event types it folds (the intake reads no others); NULL-terminated */
	/*
	 * The correlation key of an event, or false when the event is not for
	 * this type.  A key names one saga for good (its id is derived from type
	 * and key): a key that has had a saga never starts another, so a
	 * workflow that can happen twice for one thing (a second loan of a
	 * book) needs a key of its own each time (the loan's id, not the book's).
	 */
	bool (*correlate)(const struct fd_feed_event *ev, char *key, size_t len);
	/* Fold an event into the saga's data (object, owned by the caller); NULL: keep nothing. */
	enum fd_err (*fold)(json_t *data, const struct fd_feed_event *ev, struct fd_saga_fold *out);
	const struct fd_saga_step *steps;        /* steps[0] starts the saga */
	size_t nsteps;
	/*
	 * A completed saga goes on reading its events: one that fails it (fold
	 * sets fail) makes it compensate every step it ran, newest first, like a
	 * running saga.  false: a completed saga ignores every event.
	 */
	bool compensate_when_completed;
	/*
	 * Personal data in the saga's data, or NULL: none.  `subject` is a JSON
	 * pointer into the data to the subject's id ("/customer_id"), `paths`
	 * the pointers of the values that are personal data of that subject
	 * ("/email").  The engine stores those values sealed under the subject's
	 * key (as events hold theirs) and opens them for fold, steps and
	 * GET /sagas/{id}; once the subject is erased they read as null and the
	 * saga's view lists them in "erased".  A value present without a valid
	 * subject id is not kept (stored as null).  Step errors and compensation
	 * reasons have the declared values' text replaced by "[personal]" before
	 * they are stored or logged.
	 */
	const struct fd_personal_decl *personal;
};

/* The saga types of an app (struct fd_app.sagas). */
struct fd_saga_set {
	const struct fd_saga_type *const *items;
	size_t n;
};
/* The type named `name` in set, or NULL. */
const struct fd_saga_type *fd_saga_set_find(const struct fd_saga_set *set, const char *name);

/* The id of the saga of `type` for `key`: a name-based UUID, so creation is idempotent. */
void fd_saga_id_for(const char *type, const char *key, char out[37]);

/*
 * Send a command on behalf of a saga: correlation id = saga id, causation id
 * = saga id, idempotency key "saga:<id>:<step>[:c]:<sub>".  Same contract as
 * fd_bus_send.  `payload` stays the caller's (borrowed; release it after).
 */
FD_MUST_USE enum fd_err fd_saga_send(struct fd_saga_ctx *ctx, const struct fd_aggregate_type *t, const char *id,
				     const char *command, json_t *payload, const char *sub, struct fd_cmd_result *out);
/* fd_cmd_meta for a saga's commands without an idempotency key (the caller owns nothing). */
void fd_saga_meta(const struct fd_saga_ctx *ctx, struct fd_cmd_meta *meta);

/* ---- the engine ---------------------------------------------------------- */

struct fd_saga_engine;
struct fd_notifier;
struct fd_metrics;

struct fd_saga_config {
	const char *conninfo;        /* the engine opens its own connections */
	const struct fd_saga_set *types; /* the saga types it runs; borrowed */
	struct fd_bus *bus;          /* borrowed */
	void *services;              /* the app's outside systems, handed to steps; borrowed */
	struct fd_notifier *notifier; /* borrowed, may be NULL (then the intake polls) */
	struct fd_metrics *metrics;  /* may be NULL */
	const struct fd_schemas *schemas; /* the intake folds events upcast with these (schema.h); NULL: as stored */
	struct fd_pool *pool;        /* for subject keys (a type with .personal); borrowed; NULL: the bus's pool */
	unsigned workers;            /* worker threads (FACTD_SAGA_WORKERS, default 8); 0 = run no steps */
	bool intake;                 /* take part in running the intake (default true) */
	unsigned poll_ms;            /* how often idle workers look for due work (default 100) */
	unsigned lease_ms;           /* a claim's lease (FACTD_SAGA_LEASE_MS, default 30000) */
	unsigned time_pct;           /* percent applied to every timeout and retry delay (default 100) */
	unsigned batch;              /* events per intake transaction (default 100) */
};

FD_MUST_USE enum fd_err fd_saga_engine_start(const struct fd_saga_config *cfg, struct fd_saga_engine **out);
/* Stop: let steps in flight finish, release connections.  NULL is a no-op. */
void fd_saga_engine_stop(struct fd_saga_engine *e);

/* ---- operations (HTTP) ----------------------------------------------------- */

struct fd_saga_filter {
	const char *type;     /* NULL: any */
	const char *status;   /* NULL: any */
	const char *after;    /* a saga id: list the ones created before it (keyset); NULL: from the newest */
	unsigned limit;
};

/* {items: [saga summary...], next: id|null}.  FD_ERR_NOTFOUND when `after` is unknown. */
FD_MUST_USE enum fd_err fd_saga_list(struct fd_pool *pool, const struct fd_saga_set *types, const struct fd_saga_filter *f,
				      json_t **out);
/* The full view of one saga, with its steps and history.  FD_ERR_NOTFOUND when unknown. */
FD_MUST_USE enum fd_err fd_saga_get(struct fd_pool *pool, const struct fd_saga_set *types, const char *id, json_t **out);
/* The id of the saga of `type` for `key` when it exists (FD_ERR_NOTFOUND otherwise). */
FD_MUST_USE enum fd_err fd_saga_find(struct fd_pool *pool, const char *type, const char *key, char id[37]);

/*
 * For /metrics: {live: [{type, status, count}] for running, compensating and
 * failed sagas (every type and status, zeros included), overdue: sagas whose
 * due time passed more than a second ago (workers are behind or down)}.
 */
FD_MUST_USE enum fd_err fd_saga_stats(struct fd_pool *pool, const struct fd_saga_set *types, json_t **out);

/*
 * Operator actions.  retry: a failed saga runs its remaining compensations
 * again from where it stopped.  abort: a running saga starts compensating.
 * FD_ERR_NOTFOUND for an unknown id; FD_ERR_CONFLICT (status in *status) when
 * the saga's status does not allow it.
 */
FD_MUST_USE enum fd_err fd_saga_retry(struct fd_pool *pool, const struct fd_saga_set *types, const char *id,
				       char status[16]);
FD_MUST_USE enum fd_err fd_saga_abort(struct fd_pool *pool, const struct fd_saga_set *types, const char *id,
				       const char *reason, char status[16]);

#ifdef __cplusplus
}
#endif

#endif
