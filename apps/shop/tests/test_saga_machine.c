/*
 * test_saga_machine.c - the saga state machine without a database: starting
 * on the first event, waiting for the next step's event, retry delays with
 * backoff, retries running out, timeouts, compensation in reverse order, a
 * failing event while a step is in flight, operator abort and retry, a
 * compensation that cannot complete, and a completed saga undoing its steps
 * when the order is cancelled late.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "saga/machine.h"
#include "shop.h"

#define ORDER_ID "01a21bf6-767c-7a23-a5e9-dcf988685d3f"
#define SAGA_ID "c4bea602-ab61-8017-b18f-ffddd044873f"

struct ev {
	struct fd_feed_event e;
	json_t *data, *md;
};

static void make(struct ev *x, const char *stream, const char *category, const char *type, json_t *data,
		 const char *correlation)
{
	x->data = data ? data : json_object();
	x->md = correlation ? json_pack("{s:s}", "correlation_id", correlation) : json_object();
	x->e = (struct fd_feed_event){ .event_id = "e", .stream = stream, .category = category, .version = 1,
				       .type = type, .data = x->data, .metadata = x->md,
				       .recorded_at = "2026-01-01T00:00:00Z" };
}

static void drop(struct ev *x)
{
	json_decref(x->data);
	json_decref(x->md);
}

static const struct fd_saga_type *T = &fd_order_fulfillment_saga;

static int step_index(const char *name)
{
	for (size_t i = 0; i < T->nsteps; i++)
		if (strcmp(T->steps[i].name, name) == 0)
			return (int)i;
	cr_assert_fail("no step %s", name);
	return -1;
}

/* A saga started by OrderPlaced with two lines: sku-a x2, sku-b x1, total 2900. */
static void started(struct fd_saga_state *st)
{
	cr_assert_eq(fd_saga_state_init(st, T, SAGA_ID, 100), FD_OK);
	struct ev x;
	make(&x, "order-" ORDER_ID, "order", "OrderPlaced",
	     json_pack("{s:[{s:s, s:i, s:i}, {s:s, s:i, s:i}], s:i}", "lines", "product_id", "sku-a", "quantity", 2,
		       "unit_price_cents", 1250, "product_id", "sku-b", "quantity", 1, "unit_price_cents", 400,
		       "total_cents", 2900),
	     NULL);
	bool changed = false;
	cr_assert_eq(fd_saga_on_event(st, &x.e, true, &changed), FD_OK);
	cr_assert(changed);
	drop(&x);
}

static void event(struct fd_saga_state *st, const char *stream, const char *category, const char *type, json_t *data,
		  const char *corr)
{
	struct ev x;
	make(&x, stream, category, type, data, corr);
	bool changed = false;
	fd_saga_state_reset_outputs(st);
	cr_assert_eq(fd_saga_on_event(st, &x.e, false, &changed), FD_OK);
	drop(&x);
}

static void outcome(struct fd_saga_state *st, enum fd_step_result r, const char *error)
{
	struct fd_saga_job j = fd_saga_next_job(st);
	fd_saga_state_reset_outputs(st);
	fd_saga_on_outcome(st, &j, r, error);
}

static void reserved_both(struct fd_saga_state *st)
{
	event(st, "product-sku-a", "product", "StockReserved", json_pack("{s:s, s:i}", "order_id", ORDER_ID, "quantity", 2),
	      SAGA_ID);
	event(st, "product-sku-b", "product", "StockReserved", json_pack("{s:s, s:i}", "order_id", ORDER_ID, "quantity", 1),
	      SAGA_ID);
}

Test(saga_machine, the_first_event_starts_the_saga_and_runs_the_step_without_action)
{
	struct fd_saga_state st;
	started(&st);
	cr_assert_eq(st.status, FD_SAGA_RUNNING);
	cr_assert_eq(st.current, step_index("reserve_inventory"), "accept_order has no action: done at once");
	cr_assert_eq(st.phase, FD_PHASE_PENDING);
	cr_assert_eq(st.due, FD_DUE_IN);
	cr_assert_eq(st.due_ms, 0, "due now");
	cr_assert_eq(json_array_size(st.notes), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(st.notes, 0), "step")), "accept_order");
	cr_assert_str_eq(json_string_value(json_object_get(st.data, "order_id")), ORDER_ID);
	cr_assert_eq(json_integer_value(json_object_get(st.data, "total_cents")), 2900);
	cr_assert_eq(json_array_size(st.completed), 1, "accept_order can be undone (cancel)");
	struct fd_saga_job j = fd_saga_next_job(&st);
	cr_assert_eq(j.kind, FD_JOB_ACTION);
	cr_assert_eq(j.step, step_index("reserve_inventory"));
	cr_assert_eq(j.attempt, 1);
	fd_saga_state_release(&st);
}

Test(saga_machine, next_step_waits_for_its_event_and_condition)
{
	struct fd_saga_state st;
	started(&st);
	outcome(&st, FD_STEP_OK, NULL);
	cr_assert_eq(st.phase, FD_PHASE_WAITING);
	cr_assert_eq(st.due, FD_DUE_IN);
	cr_assert_eq(st.due_ms, 30000, "the reservation step's timeout");
	event(&st, "product-sku-a", "product", "StockReserved", json_pack("{s:s, s:i}", "order_id", ORDER_ID, "quantity", 2),
	      SAGA_ID);
	cr_assert_eq(st.phase, FD_PHASE_WAITING, "one of two lines reserved: not ready");
	cr_assert_eq(st.current, step_index("reserve_inventory"));
	event(&st, "product-sku-b", "product", "StockReserved", json_pack("{s:s, s:i}", "order_id", ORDER_ID, "quantity", 1),
	      SAGA_ID);
	cr_assert_eq(st.current, step_index("take_payment"));
	cr_assert_eq(st.phase, FD_PHASE_PENDING);
	cr_assert(st.clear_lease, "a pending timeout claim must lose to the event");
	fd_saga_state_release(&st);
}

Test(saga_machine, an_event_that_arrives_while_the_step_runs_is_kept)
{
	struct fd_saga_state st;
	started(&st);
	st.leased = true; /* the worker is reserving */
	reserved_both(&st);
	cr_assert_eq(st.current, step_index("reserve_inventory"));
	cr_assert_eq(st.phase, FD_PHASE_PENDING);
	outcome(&st, FD_STEP_OK, NULL);
	cr_assert_eq(st.current, step_index("take_payment"), "the events seen earlier start the next step");
	fd_saga_state_release(&st);
}

Test(saga_machine, retries_back_off_and_run_out)
{
	const struct fd_saga_step *pay = &T->steps[step_index("take_payment")];
	cr_assert_eq(fd_saga_retry_delay_ms(&pay->retry, 1, 100), 1000);
	cr_assert_eq(fd_saga_retry_delay_ms(&pay->retry, 2, 100), 2000);
	cr_assert_eq(fd_saga_retry_delay_ms(&pay->retry, 3, 100), 4000);
	cr_assert_eq(fd_saga_retry_delay_ms(&pay->retry, 3, 10), 400, "scaled by the time percent");

	struct fd_saga_state st;
	started(&st);
	outcome(&st, FD_STEP_OK, NULL);
	reserved_both(&st);
	for (unsigned a = 1; a < pay->retry.max_attempts; a++) {
		outcome(&st, FD_STEP_RETRY, "gateway down");
		cr_assert_eq(st.status, FD_SAGA_RUNNING);
		cr_assert_eq(st.attempts, a);
		cr_assert_eq(st.due, FD_DUE_IN);
		cr_assert_eq(st.due_ms, fd_saga_retry_delay_ms(&pay->retry, a, 100));
		cr_assert_eq(fd_saga_next_job(&st).attempt, a + 1);
	}
	outcome(&st, FD_STEP_RETRY, "gateway down");
	cr_assert_eq(st.status, FD_SAGA_COMPENSATING);
	cr_assert(strstr(st.error, "take_payment failed after 4 attempts: gateway down"), "%s", st.error);
	fd_saga_state_release(&st);
}

Test(saga_machine, compensation_runs_in_reverse_order)
{
	struct fd_saga_state st;
	started(&st);
	outcome(&st, FD_STEP_OK, NULL);
	reserved_both(&st);
	outcome(&st, FD_STEP_FAIL, "payment declined");
	cr_assert_eq(st.status, FD_SAGA_COMPENSATING);
	const char *order[] = { "take_payment", "reserve_inventory", "accept_order" };
	for (size_t i = 0; i < 3; i++) {
		struct fd_saga_job j = fd_saga_next_job(&st);
		cr_assert_eq(j.kind, FD_JOB_COMPENSATION);
		cr_assert_str_eq(T->steps[j.step].name, order[i]);
		outcome(&st, FD_STEP_OK, NULL);
	}
	cr_assert_eq(st.status, FD_SAGA_COMPENSATED);
	cr_assert_eq(st.phase, FD_PHASE_DONE);
	cr_assert_eq(st.due, FD_DUE_NONE);
	fd_saga_state_release(&st);
}

Test(saga_machine, a_step_that_never_ran_is_not_compensated)
{
	struct fd_saga_state st;
	started(&st);
	cr_assert(fd_saga_abort_state(&st, "stop"));
	cr_assert_eq(st.status, FD_SAGA_COMPENSATING);
	struct fd_saga_job j = fd_saga_next_job(&st);
	cr_assert_str_eq(T->steps[j.step].name, "accept_order", "reserve_inventory never ran");
	fd_saga_state_release(&st);
}

Test(saga_machine, timeout_while_waiting_compensates)
{
	struct fd_saga_state st;
	started(&st);
	outcome(&st, FD_STEP_OK, NULL);
	reserved_both(&st);
	outcome(&st, FD_STEP_WAIT, NULL); /* the gateway did not answer */
	cr_assert_eq(st.phase, FD_PHASE_WAITING);
	cr_assert_eq(st.due_ms, 30000);
	struct fd_saga_job j = fd_saga_next_job(&st);
	cr_assert_eq(j.kind, FD_JOB_TIMEOUT);
	outcome(&st, FD_STEP_OK, NULL);
	cr_assert_eq(st.status, FD_SAGA_COMPENSATING);
	cr_assert(strstr(st.error, "take_payment timed out after 30000 ms waiting for confirm_order"), "%s", st.error);
	cr_assert_eq(json_array_size(st.notes), 1);
	cr_assert_str_eq(json_string_value(json_object_get(json_array_get(st.notes, 0), "outcome")), "timed_out");
	cr_assert_str_eq(T->steps[fd_saga_next_job(&st).step].name, "take_payment");
	fd_saga_state_release(&st);
}

Test(saga_machine, a_failing_event_during_a_step_waits_for_the_worker)
{
	struct fd_saga_state st;
	started(&st);
	outcome(&st, FD_STEP_OK, NULL);
	reserved_both(&st);
	st.leased = true; /* take_payment is running */
	event(&st, "order-" ORDER_ID, "order", "OrderCancelled", json_pack("{s:s}", "reason", "changed my mind"), NULL);
	cr_assert_eq(st.status, FD_SAGA_COMPENSATING);
	cr_assert_str_eq(st.error, "order cancelled: changed my mind");
	cr_assert_eq(st.due, FD_DUE_KEEP, "the worker in flight hands over; no compensation runs beside it");
	cr_assert_not(st.clear_lease);
	/* the worker reports: its step may have had effects, so it is compensated first */
	struct fd_saga_job j = { .kind = FD_JOB_ACTION, .step = step_index("take_payment"), .attempt = 1 };
	fd_saga_state_reset_outputs(&st);
	fd_saga_on_outcome(&st, &j, FD_STEP_OK, NULL);
	cr_assert_eq(st.due, FD_DUE_IN);
	cr_assert_eq(st.due_ms, 0);
	cr_assert_str_eq(T->steps[fd_saga_next_job(&st).step].name, "take_payment");
	fd_saga_state_release(&st);
}

Test(saga_machine, the_saga_own_cancel_does_not_fail_it_again)
{
	struct fd_saga_state st;
	started(&st);
	outcome(&st, FD_STEP_OK, NULL);
	event(&st, "order-" ORDER_ID, "order", "OrderCancelled", json_pack("{s:s}", "reason", "x"), SAGA_ID);
	cr_assert_eq(st.status, FD_SAGA_RUNNING, "an OrderCancelled the saga caused is not a failure");
	fd_saga_state_release(&st);
}

Test(saga_machine, a_compensation_that_cannot_complete_fails_the_saga_and_retry_resumes_it)
{
	struct fd_saga_state st;
	started(&st);
	outcome(&st, FD_STEP_FAIL, "insufficient stock");
	cr_assert_eq(st.status, FD_SAGA_COMPENSATING);
	cr_assert_str_eq(T->steps[fd_saga_next_job(&st).step].name, "reserve_inventory");
	outcome(&st, FD_STEP_OK, NULL);
	outcome(&st, FD_STEP_FAIL, "order-shipped");
	cr_assert_eq(st.status, FD_SAGA_FAILED);
	cr_assert_eq(st.due, FD_DUE_NONE);
	cr_assert(strstr(st.error, "compensation of accept_order failed"), "%s", st.error);
	cr_assert_not(fd_saga_abort_state(&st, "x"), "a failed saga cannot be aborted");
	cr_assert(fd_saga_retry_state(&st));
	cr_assert_eq(st.status, FD_SAGA_COMPENSATING);
	cr_assert_str_eq(T->steps[fd_saga_next_job(&st).step].name, "accept_order", "resumes where it stopped");
	cr_assert_eq(fd_saga_next_job(&st).attempt, 1);
	cr_assert_not(fd_saga_retry_state(&st), "only a failed saga can be retried");
	fd_saga_state_release(&st);
}

/* A saga that ran every step: confirmed. */
static void completed(struct fd_saga_state *st)
{
	started(st);
	outcome(st, FD_STEP_OK, NULL);
	reserved_both(st);
	outcome(st, FD_STEP_OK, NULL);
	event(st, "payment-x", "payment", "PaymentAuthorised", json_pack("{s:s}", "authorisation", "A"), SAGA_ID);
	cr_assert_eq(st->current, step_index("confirm_order"));
	outcome(st, FD_STEP_OK, NULL);
	cr_assert_eq(st->status, FD_SAGA_COMPLETED);
	cr_assert_eq(st->due, FD_DUE_NONE);
}

Test(saga_machine, a_late_cancel_makes_a_completed_saga_undo_every_step)
{
	struct fd_saga_state st;
	completed(&st);
	event(&st, "order-" ORDER_ID, "order", "OrderCancelled", json_pack("{s:s}", "reason", "changed my mind"), NULL);
	cr_assert_eq(st.status, FD_SAGA_COMPENSATING);
	cr_assert_str_eq(st.error, "order cancelled: changed my mind");
	cr_assert_eq(st.due, FD_DUE_IN);
	cr_assert_eq(st.due_ms, 0, "due now");
	cr_assert_str_eq(json_string_value(json_object_get(st.data, "order_status")), "cancelled");
	const char *order[] = { "take_payment", "reserve_inventory", "accept_order" };
	for (size_t i = 0; i < 3; i++) {
		struct fd_saga_job j = fd_saga_next_job(&st);
		cr_assert_eq(j.kind, FD_JOB_COMPENSATION);
		cr_assert_str_eq(T->steps[j.step].name, order[i]);
		cr_assert_eq(j.attempt, 1);
		outcome(&st, FD_STEP_OK, NULL);
	}
	cr_assert_eq(st.status, FD_SAGA_COMPENSATED);
	cr_assert_eq(st.due, FD_DUE_NONE);
	/* compensated is final: the saga's own cancel coming back, or anything else, changes nothing */
	struct ev x;
	make(&x, "order-" ORDER_ID, "order", "OrderCancelled", json_pack("{s:s}", "reason", "again"), NULL);
	bool changed = true;
	cr_assert_eq(fd_saga_on_event(&st, &x.e, false, &changed), FD_OK);
	cr_assert_not(changed);
	cr_assert_eq(st.status, FD_SAGA_COMPENSATED);
	drop(&x);
	fd_saga_state_release(&st);
}

Test(saga_machine, a_completed_saga_ignores_events_that_do_not_fail_it)
{
	struct fd_saga_state st;
	completed(&st);
	json_t *before = json_deep_copy(st.data);
	const char *types[] = { "OrderConfirmed", "PaymentRefunded", "ReservationReleased" };
	const char *streams[] = { ("order-" ORDER_ID), "payment-x", "product-sku-a" };
	const char *cats[] = { "order", "payment", "product" };
	for (size_t i = 0; i < 3; i++) {
		struct ev x;
		make(&x, streams[i], cats[i], types[i], json_pack("{s:s, s:i}", "order_id", ORDER_ID, "amount_cents", 1), NULL);
		bool changed = true;
		cr_assert_eq(fd_saga_on_event(&st, &x.e, false, &changed), FD_OK);
		cr_assert_not(changed, "%s", types[i]);
		drop(&x);
	}
	cr_assert(json_equal(before, st.data), "the row is left as it was");
	cr_assert_eq(st.status, FD_SAGA_COMPLETED);
	/* nor does the saga's own cancel (correlated to it) */
	event(&st, "order-" ORDER_ID, "order", "OrderCancelled", json_pack("{s:s}", "reason", "x"), SAGA_ID);
	cr_assert_eq(st.status, FD_SAGA_COMPLETED);
	cr_assert_not(fd_saga_abort_state(&st, "x"), "an operator cannot abort a completed saga");
	cr_assert_eq(st.status, FD_SAGA_COMPLETED);
	json_decref(before);
	fd_saga_state_release(&st);
}

Test(saga_machine, completed_sagas_of_other_types_ignore_events)
{
	/* the fulfillment saga's steps and fold, without compensate_when_completed */
	struct fd_saga_type plain = *T;
	plain.compensate_when_completed = false;
	struct fd_saga_state st;
	completed(&st);
	st.type = &plain;
	struct ev x;
	make(&x, "order-" ORDER_ID, "order", "OrderCancelled", json_pack("{s:s}", "reason", "late"), NULL);
	bool changed = true;
	cr_assert_eq(fd_saga_on_event(&st, &x.e, false, &changed), FD_OK);
	cr_assert_not(changed);
	cr_assert_eq(st.status, FD_SAGA_COMPLETED);
	drop(&x);
	fd_saga_state_release(&st);
}
