/*
 * book.c - the book aggregate: added once, then lent and returned, again
 * and again.  Pure: no I/O, no clock; the command bus loads and appends.
 */
#include "library.h"

#include <stdlib.h>
#include <string.h>

#include <factd/aggregate.h>

/* ---- state: init, release, apply ------------------------------------------ */

static void book_init(void *state)
{
	memset(state, 0, sizeof(struct book));
}

static void book_release(void *state)
{
	struct book *b = state;
	free(b->title);
	free(b->member);
	memset(b, 0, sizeof *b);
}

static enum fd_err set_string(char **field, const json_t *data, const char *key)
{
	const char *s = json_string_value(json_object_get(data, key));
	char *copy = s ? strdup(s) : NULL;
	if (!s)
		return FD_ERR_INVAL;
	if (!copy)
		return FD_ERR_NOMEM;
	free(*field);
	*field = copy;
	return FD_OK;
}

/* Replays stored events and folds new ones; an event that could not have been decided is FD_ERR_INVAL. */
static enum fd_err book_apply(void *state, const char *type, const json_t *data)
{
	struct book *b = state;
	enum fd_err err;
	if (strcmp(type, "BookAdded") == 0) {
		if (b->exists)
			return FD_ERR_INVAL;
		if ((err = set_string(&b->title, data, "title")))
			return err;
		b->exists = true;
	} else if (strcmp(type, "BookLent") == 0) {
		if (!b->exists || b->member)
			return FD_ERR_INVAL;
		if ((err = set_string(&b->member, data, "member")))
			return err;
		b->loans++;
	} else if (strcmp(type, "BookReturned") == 0) {
		if (!b->member)
			return FD_ERR_INVAL;
		free(b->member);
		b->member = NULL;
	}
	return FD_OK; /* other types (written through the generic stream API) change nothing */
}

/* ---- snapshot, restore, view, exists ---------------------------------------- */

static json_t *book_snapshot(const void *state)
{
	const struct book *b = state;
	return json_pack("{s:b, s:s*, s:s*, s:I}", "exists", b->exists, "title", b->title, "member", b->member,
			 "loans", (json_int_t)b->loans);
}

static enum fd_err book_restore(void *state, const json_t *snap)
{
	struct book *b = state;
	int exists = 0;
	const char *title = NULL, *member = NULL;
	json_int_t loans = 0;
	if (json_unpack((json_t *)snap, "{s:b, s?s, s?s, s:I}", "exists", &exists, "title", &title, "member", &member,
			"loans", &loans) != 0 || loans < 0 || (exists && !title))
		return FD_ERR_INVAL;
	b->exists = exists;
	b->loans = loans;
	b->title = title ? strdup(title) : NULL;
	b->member = member ? strdup(member) : NULL;
	return (title && !b->title) || (member && !b->member) ? FD_ERR_NOMEM : FD_OK;
}

/* GET /books/{id}: {book_id, title, status, member?, loans, version}; the framework adds the id and version. */
static json_t *book_view(const void *state)
{
	const struct book *b = state;
	return json_pack("{s:s, s:s, s:s*, s:I}", "title", b->title, "status", b->member ? "on_loan" : "available",
			 "member", b->member, "loans", (json_int_t)b->loans);
}

static bool book_exists(const void *state)
{
	return ((const struct book *)state)->exists;
}

/* ---- commands: decide ------------------------------------------------------- */

static enum fd_err decide_add(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	static const char *const fields[] = { "title" };
	const char *title;
	if (!fd_payload_only(payload, fields, 1, out) ||
	    !fd_payload_string(payload, "title", 1, LIBRARY_TITLE_MAX, false, &title, out))
		return FD_OK;
	if (book_exists(state)) {
		fd_decide_refuse(out, "book-exists", "Book exists", "a book with this id is in the catalogue already");
		return FD_OK;
	}
	return fd_decide_event(out, "BookAdded", json_pack("{s:s}", "title", title));
}

static enum fd_err decide_lend(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct book *b = state;
	static const char *const fields[] = { "member" };
	const char *member;
	if (!b->exists) {
		fd_decide_refuse(out, "book-not-found", "Book not found", "no book has this id");
		return FD_OK;
	}
	if (!fd_payload_only(payload, fields, 1, out) ||
	    !fd_payload_string(payload, "member", 1, LIBRARY_MEMBER_MAX, false, &member, out))
		return FD_OK;
	if (b->member) {
		fd_decide_refuse(out, "book-on-loan", "Book is on loan", "%s has it", b->member);
		return FD_OK;
	}
	return fd_decide_event(out, "BookLent", json_pack("{s:s, s:I}", "member", member, "loan", (json_int_t)b->loans + 1));
}

static enum fd_err decide_return(const void *state, bool exists, const json_t *payload, struct fd_decision *out)
{
	const struct book *b = state;
	if (!b->exists) {
		fd_decide_refuse(out, "book-not-found", "Book not found", "no book has this id");
		return FD_OK;
	}
	if (!fd_payload_only(payload, NULL, 0, out))
		return FD_OK;
	if (!b->member) {
		fd_decide_refuse(out, "book-not-on-loan", "Book is not on loan", "the book is on the shelf");
		return FD_OK;
	}
	return fd_decide_event(out, "BookReturned", json_pack("{s:s, s:I}", "member", b->member, "loan", (json_int_t)b->loans));
}

static const struct fd_command_type book_commands[] = {
	{ "add", decide_add },
	{ "lend", decide_lend },
	{ "return", decide_return },
};

const struct fd_aggregate_type book_type = {
	.name = "book",
	.category = "book",          /* streams book-<id> */
	.id_field = "book_id",
	.id_is_uuid = false,         /* ids are the library's own: "moby-dick" */
	.schema_version = 1,
	.snapshot_every = 100,
	.state_size = sizeof(struct book),
	.init = book_init,
	.release = book_release,
	.apply = book_apply,
	.snapshot = book_snapshot,
	.restore = book_restore,
	.view = book_view,
	.exists = book_exists,
	.commands = book_commands,
	.ncommands = FD_COUNT(book_commands),
};
