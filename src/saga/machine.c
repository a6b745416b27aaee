/*
 * machine.c - the saga state machine (see machine.h).  Pure.
 *
 * Running forward: a step is "pending" until a worker has run its action,
 * then "waiting" until the next step's event and condition hold (or its
 * timeout fires).  Steps that may have had effects are pushed on the
 * `completed` stack; compensation pops it, so compensations run in reverse
 * order.  A step whose action failed part way is pushed too: compensations
 * must accept "nothing to undo".  A completed saga keeps its stack, so a type
 * that compensates when completed can still undo every step.
 */
#include "machine.h"

#include <stdio.h>
#include <string.h>

static const char *const status_names[] = { "running", "completed", "compensating", "compensated", "failed" };
static const char *const phase_names[] = { "pending", "waiting", "done" };

const char *fd_saga_status_name(enum fd_saga_status s)
{
	return (unsigned)s < sizeof status_names / sizeof *status_names ? status_names[s] : "unknown";
}

bool fd_saga_status_parse(const char *s, enum fd_saga_status *out)
{
	for (size_t i = 0; s && i < sizeof status_names / sizeof *status_names; i++)
		if (strcmp(s, status_names[i]) == 0) {
			*out = (enum fd_saga_status)i;
			return true;
		}
	return false;
}

const char *fd_saga_phase_name(enum fd_saga_phase p)
{
	return (unsigned)p < sizeof phase_names / sizeof *phase_names ? phase_names[p] : "unknown";
}

bool fd_saga_phase_parse(const char *s, enum fd_saga_phase *out)
{
	for (size_t i = 0; s && i < sizeof phase_names / sizeof *phase_names; i++)
		if (strcmp(s, phase_names[i]) == 0) {
			*out = (enum fd_saga_phase)i;
			return true;
		}
	return false;
}

enum fd_err fd_saga_state_init(struct fd_saga_state *st, const struct fd_saga_type *type, const char *id,
			       unsigned time_pct)
{
	memset(st, 0, sizeof *st);
	st->type = type;
	snprintf(st->id, sizeof st->id, "%s", id);
	st->status = FD_SAGA_RUNNING;
	st->phase = FD_PHASE_PENDING;
	st->time_pct = time_pct ? time_pct : 100;
	st->completed = json_array();
	st->seen = json_array();
	st->data = json_object();
	st->notes = json_array();
	if (!st->completed || !st->seen || !st->data || !st->notes) {
		fd_saga_state_release(st);
		return FD_ERR_NOMEM;
	}
	return FD_OK;
}

void fd_saga_state_release(struct fd_saga_state *st)
{
	json_decref(st->completed);
	json_decref(st->seen);
	json_decref(st->data);
	json_decref(st->notes);
	json_decref(st->sealed);
	json_decref(st->erased);
	st->completed = st->seen = st->data = st->notes = st->sealed = st->erased = NULL;
	st->unopened = false;
}

void fd_saga_state_reset_outputs(struct fd_saga_state *st)
{
	st->due = FD_DUE_KEEP;
	st->due_ms = 0;
	st->clear_lease = false;
	json_array_clear(st->notes);
}

static int64_t scaled(const struct fd_saga_state *st, int64_t ms)
{
	return ms * (int64_t)st->time_pct / 100;
}

int64_t fd_saga_retry_delay_ms(const struct fd_saga_retry *r, unsigned attempts, unsigned time_pct)
{
	double d = r->delay_ms;
	double f = (r->backoff_pct ? r->backoff_pct : 100) / 100.0;
	for (unsigned i = 1; i < attempts && d < 86400000.0; i++)
		d *= f;
	if (d > 86400000.0)
		d = 86400000.0;
	return (int64_t)d * (int64_t)(time_pct ? time_pct : 100) / 100;
}

static void due_in(struct fd_saga_state *st, int64_t ms)
{
	st->due = FD_DUE_IN;
	st->due_ms = ms < 0 ? 0 : ms;
}

static void note(struct fd_saga_state *st, int step, const char *kind, const char *outcome, const char *error)
{
	json_t *n = json_pack("{s:s, s:s, s:s}", "step", st->type->steps[step].name, "kind", kind, "outcome", outcome);
	if (n && error && *error)
		json_object_set_new(n, "error", json_string(error));
	if (n)
		json_array_append_new(st->notes, n);
}

static bool has_seen(const struct fd_saga_state *st, const char *type)
{
	size_t i;
	json_t *v;
	json_array_foreach(st->seen, i, v)
		if (strcmp(json_string_value(v), type) == 0)
			return true;
	return false;
}

static void push_completed(struct fd_saga_state *st, int step)
{
	if (!st->type->steps[step].compensate)
		return;
	size_t i;
	json_t *v;
	json_array_foreach(st->completed, i, v)
		if (json_integer_value(v) == step)
			return;
	json_array_append_new(st->completed, json_integer(step));
}

static void finish(struct fd_saga_state *st, enum fd_saga_status s)
{
	st->status = s;
	st->phase = FD_PHASE_DONE;
	st->attempts = 0;
	st->due = FD_DUE_NONE;
}

static void advance(struct fd_saga_state *st);

/* The current step has run (or needs no run): wait for the next one. */
static void step_done(struct fd_saga_state *st)
{
	const struct fd_saga_step *s = &st->type->steps[st->current];
	push_completed(st, st->current);
	if ((size_t)st->current + 1 >= st->type->nsteps) {
		finish(st, FD_SAGA_COMPLETED);
		return;
	}
	st->phase = FD_PHASE_WAITING;
	st->attempts = 0;
	if (s->timeout_ms)
		due_in(st, scaled(st, s->timeout_ms));
	else
		st->due = FD_DUE_NONE;
	advance(st);
}

static void enter_step(struct fd_saga_state *st, int step)
{
	st->current = step;
	st->attempts = 0;
	if (!st->type->steps[step].action) {
		note(st, step, "action", "succeeded", NULL);
		step_done(st);
		return;
	}
	st->phase = FD_PHASE_PENDING;
	due_in(st, 0);
}

/* Start the next step when its event and condition hold. */
static void advance(struct fd_saga_state *st)
{
	if (st->status != FD_SAGA_RUNNING || st->phase != FD_PHASE_WAITING)
		return;
	size_t next = (size_t)st->current + 1;
	if (next >= st->type->nsteps)
		return;
	const struct fd_saga_step *s = &st->type->steps[next];
	if (s->on_event && !has_seen(st, s->on_event))
		return;
	if (s->ready && !s->ready(st->data))
		return;
	st->clear_lease = true; /* a waiting row is claimed only to time it out; the event wins */
	enter_step(st, (int)next);
}

static void begin_compensation(struct fd_saga_state *st, const char *reason)
{
	bool in_flight = st->leased && st->phase == FD_PHASE_PENDING;
	if (st->phase == FD_PHASE_WAITING || st->attempts > 0 || in_flight)
		push_completed(st, st->current);
	st->status = FD_SAGA_COMPENSATING;
	snprintf(st->error, sizeof st->error, "%s", reason ? reason : "compensating");
	st->attempts = 0;
	if (st->phase == FD_PHASE_WAITING)
		st->clear_lease = true; /* at most a timeout is in flight */
	st->phase = FD_PHASE_PENDING;
	if (in_flight)
		st->due = FD_DUE_KEEP; /* the worker in flight hands over when its step returns */
	else
		due_in(st, 0);
}

/*
 * A completed saga of a type that compensates when completed: an event that
 * fails it (the order cancelled after it was confirmed, say) reopens it to
 * undo everything it did; any other event leaves the row as it is.
 */
static enum fd_err on_event_completed(struct fd_saga_state *st, const struct fd_feed_event *ev, bool *changed)
{
	struct fd_saga_fold f = { .saga_id = st->id };
	if (!st->type->fold)
		return FD_OK;
	json_t *data = json_deep_copy(st->data);
	if (!data)
		return FD_ERR_NOMEM;
	enum fd_err err = st->type->fold(data, ev, &f);
	if (err || !f.fail) {
		json_decref(data);
		return err;
	}
	json_decref(st->data);
	st->data = data;
	if (!has_seen(st, ev->type))
		json_array_append_new(st->seen, json_string(ev->type));
	*changed = true;
	begin_compensation(st, f.reason);
	return FD_OK;
}

enum fd_err fd_saga_on_event(struct fd_saga_state *st, const struct fd_feed_event *ev, bool created, bool *changed)
{
	*changed = false;
	if (st->status == FD_SAGA_COMPLETED && st->type->compensate_when_completed && !created)
		return on_event_completed(st, ev, changed);
	if (st->status != FD_SAGA_RUNNING && st->status != FD_SAGA_COMPENSATING)
		return FD_OK;
	struct fd_saga_fold f = { .saga_id = st->id };
	if (st->type->fold) {
		enum fd_err err = st->type->fold(st->data, ev, &f);
		if (err)
			return err;
	}
	if (!has_seen(st, ev->type))
		json_array_append_new(st->seen, json_string(ev->type));
	*changed = true;
	if (created) {
		enter_step(st, 0);
		if (f.fail && st->status == FD_SAGA_RUNNING)
			begin_compensation(st, f.reason);
		return FD_OK;
	}
	if (st->status != FD_SAGA_RUNNING)
		return FD_OK;
	if (f.fail)
		begin_compensation(st, f.reason);
	else
		advance(st);
	return FD_OK;
}

struct fd_saga_job fd_saga_next_job(const struct fd_saga_state *st)
{
	struct fd_saga_job j = { .kind = FD_JOB_NONE, .step = st->current, .attempt = st->attempts + 1 };
	if (st->status == FD_SAGA_RUNNING) {
		if (st->phase == FD_PHASE_PENDING)
			j.kind = FD_JOB_ACTION;
		else if (st->phase == FD_PHASE_WAITING)
			j.kind = FD_JOB_TIMEOUT;
	} else if (st->status == FD_SAGA_COMPENSATING) {
		size_t n = json_array_size(st->completed);
		if (n == 0) {
			j.kind = FD_JOB_FINISH;
		} else {
			j.kind = FD_JOB_COMPENSATION;
			j.step = (int)json_integer_value(json_array_get(st->completed, n - 1));
		}
	}
	return j;
}

static void action_outcome(struct fd_saga_state *st, const struct fd_saga_job *job, enum fd_step_result r,
			   const char *error)
{
	const struct fd_saga_step *s = &st->type->steps[job->step];
	char reason[512];
	if (st->status == FD_SAGA_COMPENSATING) {
		/* compensation began while the action ran: it may have had effects */
		push_completed(st, job->step);
		st->attempts = 0;
		due_in(st, 0);
		return;
	}
	if (st->status != FD_SAGA_RUNNING || st->phase != FD_PHASE_PENDING || st->current != job->step)
		return;
	switch (r) {
	case FD_STEP_OK:
	case FD_STEP_WAIT:
		if (r == FD_STEP_WAIT && (size_t)job->step + 1 >= st->type->nsteps) {
			push_completed(st, job->step);
			st->phase = FD_PHASE_WAITING;
			st->attempts = 0;
			st->due = s->timeout_ms ? FD_DUE_IN : FD_DUE_NONE;
			st->due_ms = scaled(st, s->timeout_ms);
			return;
		}
		step_done(st);
		return;
	case FD_STEP_RETRY:
		st->attempts = job->attempt;
		if (st->attempts < s->retry.max_attempts) {
			due_in(st, fd_saga_retry_delay_ms(&s->retry, st->attempts, st->time_pct));
			return;
		}
		snprintf(reason, sizeof reason, "%s failed after %u attempts: %s", s->name, st->attempts,
			 error && *error ? error : "transient failure");
		begin_compensation(st, reason);
		return;
	case FD_STEP_FAIL:
		st->attempts = job->attempt;
		snprintf(reason, sizeof reason, "%s failed: %s", s->name, error && *error ? error : "refused");
		begin_compensation(st, reason);
		return;
	}
}

static void compensation_outcome(struct fd_saga_state *st, const struct fd_saga_job *job, enum fd_step_result r,
				 const char *error)
{
	const struct fd_saga_step *s = &st->type->steps[job->step];
	size_t n = json_array_size(st->completed);
	if (st->status != FD_SAGA_COMPENSATING || n == 0 ||
	    json_integer_value(json_array_get(st->completed, n - 1)) != job->step)
		return;
	if (r == FD_STEP_OK || r == FD_STEP_WAIT) {
		json_array_remove(st->completed, n - 1);
		st->attempts = 0;
		if (n == 1)
			finish(st, FD_SAGA_COMPENSATED);
		else
			due_in(st, 0);
		return;
	}
	st->attempts = job->attempt;
	if (r == FD_STEP_RETRY && st->attempts < s->retry.max_attempts) {
		due_in(st, fd_saga_retry_delay_ms(&s->retry, st->attempts, st->time_pct));
		return;
	}
	char reason[512];
	snprintf(reason, sizeof reason, "compensation of %s failed after %u attempts: %s", s->name, st->attempts,
		 error && *error ? error : "refused");
	snprintf(st->error, sizeof st->error, "%s", reason);
	st->status = FD_SAGA_FAILED;
	st->phase = FD_PHASE_DONE;
	st->due = FD_DUE_NONE;
}

void fd_saga_on_outcome(struct fd_saga_state *st, const struct fd_saga_job *job, enum fd_step_result r,
			const char *error)
{
	st->clear_lease = true;
	char reason[512];
	switch (job->kind) {
	case FD_JOB_ACTION:
		action_outcome(st, job, r, error);
		break;
	case FD_JOB_COMPENSATION:
		compensation_outcome(st, job, r, error);
		break;
	case FD_JOB_TIMEOUT:
		if (st->status == FD_SAGA_RUNNING && st->phase == FD_PHASE_WAITING && st->current == job->step) {
			const struct fd_saga_step *s = &st->type->steps[job->step];
			const char *next = (size_t)job->step + 1 < st->type->nsteps
						   ? st->type->steps[job->step + 1].name
						   : "the end";
			snprintf(reason, sizeof reason, "%s timed out after %lld ms waiting for %s", s->name,
				 (long long)scaled(st, s->timeout_ms), next);
			note(st, job->step, "timeout", "timed_out", reason);
			begin_compensation(st, reason);
		}
		break;
	case FD_JOB_FINISH:
		if (st->status == FD_SAGA_COMPENSATING && json_array_size(st->completed) == 0)
			finish(st, FD_SAGA_COMPENSATED);
		break;
	case FD_JOB_NONE:
		if (st->status != FD_SAGA_RUNNING && st->status != FD_SAGA_COMPENSATING)
			st->due = FD_DUE_NONE;
		break;
	}
	if (st->due == FD_DUE_KEEP) {
		/* the claim's lease is not a due time: whatever is pending is due now */
		bool live = st->status == FD_SAGA_RUNNING || st->status == FD_SAGA_COMPENSATING;
		if (live && st->phase == FD_PHASE_PENDING)
			due_in(st, 0);
		else
			st->due = FD_DUE_NONE;
	}
}

bool fd_saga_abort_state(struct fd_saga_state *st, const char *reason)
{
	if (st->status != FD_SAGA_RUNNING)
		return false;
	begin_compensation(st, reason && *reason ? reason : "aborted by an operator");
	return true;
}

bool fd_saga_retry_state(struct fd_saga_state *st)
{
	if (st->status != FD_SAGA_FAILED)
		return false;
	st->status = FD_SAGA_COMPENSATING;
	st->phase = FD_PHASE_PENDING;
	st->attempts = 0;
	st->clear_lease = true;
	due_in(st, 0);
	return true;
}
