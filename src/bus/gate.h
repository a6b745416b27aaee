/*
 * gate.h - one command at a time per stream, within this process.
 *
 * Commands on one aggregate decide on its current state and append with that
 * state's version: two at once in the same process both decide on the same
 * version and one of them conflicts, reloads and decides again.  Under a hot
 * aggregate that loop can starve a command (the winner keeps the cached state
 * and is always quicker than a loser that reloads).  Holding the stream's gate
 * across load, decide and append queues them instead: each takes the state
 * its predecessor left in the aggregate cache, and conflicts remain only
 * between processes, where the optimistic retry handles them as before.
 *
 * Entries exist only while a stream has a command running or waiting, so the
 * memory is bounded by the number of threads.
 *
 * Threading: enter/leave from any thread; a thread holds at most one gate
 * (a command touches one stream), so gates cannot deadlock.
 */
#ifndef FACTD_BUS_GATE_H
#define FACTD_BUS_GATE_H

#include "factd/error.h"

struct fd_gates;
struct fd_gate;

FD_MUST_USE enum fd_err fd_gates_new(struct fd_gates **out);
/* No gate may be held. */
void fd_gates_free(struct fd_gates *g);
/* Wait until no other thread holds `stream`'s gate, and take it.  NULL: out of memory (go on ungated). */
struct fd_gate *fd_gate_enter(struct fd_gates *g, const char *stream);
/* Give the gate back (NULL is a no-op). */
void fd_gate_leave(struct fd_gates *g, struct fd_gate *gate);

#endif
