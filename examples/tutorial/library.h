/*
 * library.h - the library app of docs/extending.md: books that members
 * borrow and return, the "shelf" read model with GET /books, the
 * loan_receipt saga, and the mailroom that receipts are posted to.
 */
#ifndef LIBRARY_H
#define LIBRARY_H

#include <stdbool.h>
#include <stdint.h>

#include <factd/app.h>
#include <factd/http.h>

#define LIBRARY_TITLE_MAX 200  /* characters */
#define LIBRARY_MEMBER_MAX 64

/* One book's state, folded from its events (book.c). */
struct book {
	bool exists;
	char *title;   /* owned */
	char *member;  /* owned; who has it, NULL while it is on the shelf */
	int64_t loans; /* how many times it was lent */
};

/*
 * Events:    BookAdded {title}, BookLent {member, loan}, BookReturned {member, loan}
 * Commands:  add {title}, lend {member}, return {}
 * Refusals:  book-exists, book-not-found, book-on-loan, book-not-on-loan
 */
extern const struct fd_aggregate_type book_type;
extern const struct fd_projection shelf_projection;   /* shelf.c */
void library_list_books(struct fd_req *req, struct fd_resp *resp);
extern const struct fd_saga_type loan_receipt_saga;   /* receipts.c */
extern const struct fd_app_services mailroom_services; /* mailroom.c */
/* Post a letter (idempotent: a key already posted is not posted again). */
FD_MUST_USE enum fd_err mailroom_post(void *services, const char *key, const char *to, const char *text);
extern const struct fd_migration_set library_migrations; /* made by factd-embed-migrations */

extern const struct fd_app library_app; /* app.c */

#endif
