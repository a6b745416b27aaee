/*
 * machine.h - the saga state machine: how a saga row changes when an event
 * is folded in, when a worker reports a step's outcome, and on operator
 * actions.  Pure (no I/O, no clock): the engine loads a row, calls these, and
 * saves the row with the due time and history notes they leave.
 */
#ifndef FACTD_SAGA_MACHINE_H
#define FACTD_SAGA_MACHINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "factd/saga.h"

enum fd_saga_status {
	FD_SAGA_RUNNING, FD_SAGA_COMPLETED, FD_SAGA_COMPENSATING, FD_SAGA_COMPENSATED, FD_SAGA_FAILED,
};
enum fd_saga_phase { FD_PHASE_PENDING, FD_PHASE_WAITING, FD_PHASE_DONE };

/* What to do with the row's due time when it is saved. */
enum fd_due { FD_DUE_KEEP, FD_DUE_NONE, FD_DUE_IN };

struct fd_saga_state {
	const struct fd_saga_type *type;
	char id[37];
	enum fd_saga_status status;
	int current;             /* index of the current step */
	enum fd_saga_phase phase;
	json_t *completed;       /* array of step indexes to compensate, in the order they ran (owned) */
	unsigned attempts;
	bool leased;             /* a worker holds a claim on the row right now */
	json_t *seen;            /* array of event type names (owned) */
	json_t *data;            /* object (owned); personal values open (plaintext) in memory */
	/*
	 * Personal data (fd_saga_type.personal): the row's "personal" column as
	 * read (owned; NULL: no sealed value), whether data still holds its
	 * tokens (fd_saga_row_open has not run: such a state is never saved), and
	 * the pointers that read as null because the subject was erased (owned
	 * array, NULL when none).
	 */
	json_t *sealed;
	bool unopened;
	json_t *erased;
	char error[512];         /* why it compensates / failed; "" when none */
	/* set by the machine, read by the engine when saving */
	enum fd_due due;
	int64_t due_ms;          /* FD_DUE_IN: from now */
	bool clear_lease;
	json_t *notes;           /* array of {step, kind, outcome, error} history rows to add (owned) */
	unsigned time_pct;       /* scale of timeouts and delays (100 = as declared) */
	int64_t row_version;     /* the row's version as read (sagas.version; every write adds one), 0: none */
};

/* What a worker ran. */
enum fd_job_kind { FD_JOB_NONE, FD_JOB_ACTION, FD_JOB_COMPENSATION, FD_JOB_TIMEOUT, FD_JOB_FINISH };
struct fd_saga_job {
	enum fd_job_kind kind;
	int step;                /* index into type->steps */
	unsigned attempt;        /* 1-based */
};

const char *fd_saga_status_name(enum fd_saga_status s);
bool fd_saga_status_parse(const char *s, enum fd_saga_status *out);
const char *fd_saga_phase_name(enum fd_saga_phase p);
bool fd_saga_phase_parse(const char *s, enum fd_saga_phase *out);

/* A new saga of `type` (not yet started: call fd_saga_on_event with its first event).  FD_ERR_NOMEM. */
FD_MUST_USE enum fd_err fd_saga_state_init(struct fd_saga_state *st, const struct fd_saga_type *type,
					   const char *id, unsigned time_pct);
void fd_saga_state_release(struct fd_saga_state *st);
/* Clear the outputs (due, clear_lease, notes) before another round. */
void fd_saga_state_reset_outputs(struct fd_saga_state *st);

/*
 * Fold an event into the saga.  `created`: the saga was just made for this
 * event (it starts).  Terminal sagas are left alone (*changed false).
 */
FD_MUST_USE enum fd_err fd_saga_on_event(struct fd_saga_state *st, const struct fd_feed_event *ev, bool created,
					 bool *changed);

/* The job a claimed row asks for. */
struct fd_saga_job fd_saga_next_job(const struct fd_saga_state *st);

/* Record the outcome of `job` (error: why, for RETRY/FAIL; may be NULL). */
void fd_saga_on_outcome(struct fd_saga_state *st, const struct fd_saga_job *job, enum fd_step_result r,
			const char *error);

/* Operator actions: false (nothing changed) when the status forbids them. */
bool fd_saga_abort_state(struct fd_saga_state *st, const char *reason);
bool fd_saga_retry_state(struct fd_saga_state *st);

/* The retry delay after `attempts` failed runs of a step, scaled by time_pct. */
int64_t fd_saga_retry_delay_ms(const struct fd_saga_retry *r, unsigned attempts, unsigned time_pct);

#endif
