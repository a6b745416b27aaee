/*
 * personal.h - personal data in events, sealed per data subject, and its
 * erasure by crypto-shredding (docs/design.md, "Personal data and erasure").
 *
 * An event declares values of its data personal with the metadata member
 * "personal": {"subject": "<id>", "paths": ["/email", ...]} (JSON pointers
 * into data).  Each such value is stored as a token "fdp1:<base64>": its JSON
 * text sealed with XChaCha20-Poly1305 (libsodium) under the subject's own
 * random key, the subject and the pointer bound as associated data.  Subject
 * keys live in the table subject_keys wrapped under the master key
 * (FACTD_MASTER_KEY_FILE), itself never stored.  Erasure drops the wrapped
 * key: from then on every reader hands the values over as null and lists
 * their pointers in "erased".
 *
 * Nothing here logs a personal value, sealed or not.
 *
 * Threading: a keyring is immutable after fd_keyring_new/_load (its
 * "checked" flag is atomic); everything else is per call.
 */
#ifndef FACTD_STORE_PERSONAL_H
#define FACTD_STORE_PERSONAL_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "factd/error.h"
#include "factd/events.h"
#include "factd/pool.h"
#include "factd/schema.h"

#define FD_PERSONAL_KEY "personal"            /* the metadata member */
#define FD_SUBJECT_ERASED_TYPE FD_EVENT_SUBJECT_ERASED /* the event erasure appends to each of the subject's streams */
#define FD_PERSONAL_MAX_PATHS 64
#define FD_SUBJECT_MAX 200
#define FD_MASTER_KEY_BYTES 32

/* ---- pure: declarations and JSON pointers ------------------------------------ */

/* A subject id (fd_subject_id_valid): 1..200 characters of A-Z a-z 0-9 _ . : @ + - */
bool fd_personal_subject_valid(const char *s);
/* An RFC 6901 pointer other than "" (the whole document): "/a/b~1c". */
bool fd_json_pointer_valid(const char *p);
/* The value at pointer p in root, borrowed; NULL when there is none. */
json_t *fd_json_pointer_get(const json_t *root, const char *p);
/* Replace the value at pointer p, which must exist, by v (stolen either way).  False when it cannot. */
bool fd_json_pointer_set(json_t *root, const char *p, json_t *v);

/*
 * Is decl a valid declaration for data?  An object of exactly "subject" (a
 * valid subject id) and "paths" (1..64 distinct valid pointers, none inside
 * another, each naming a value present in data).  False with where (a
 * pointer relative to decl: "/paths/1") and detail filled.
 */
bool fd_personal_check(const json_t *decl, const json_t *data, char *where, size_t wlen, char *detail,
		       size_t dlen);

/* ---- the master key ------------------------------------------------------------ */

struct fd_keyring;

/*
 * Read the master key from a file: 64 hexadecimal digits (surrounding
 * whitespace allowed) or exactly 32 raw bytes.  FD_ERR_INVAL with the reason
 * in errbuf (unreadable, wrong length, not hex); FD_ERR_NOMEM.
 */
FD_MUST_USE enum fd_err fd_keyring_load(const char *path, struct fd_keyring **out, char *errbuf, size_t errlen);
FD_MUST_USE enum fd_err fd_keyring_new(const unsigned char key[FD_MASTER_KEY_BYTES], struct fd_keyring **out);
void fd_keyring_free(struct fd_keyring *kr);

/*
 * Does the master key match the database?  The first process with a key
 * records a value sealed under it (master_key_check); every later one must
 * open it.  FD_ERR_CONFLICT: another key; FD_ERR_UNAVAILABLE/DB otherwise.
 * Sealing checks once per keyring before it makes a subject key.
 */
FD_MUST_USE enum fd_err fd_keyring_check(struct fd_pool *pool, struct fd_keyring *kr);

/* ---- write: sealing --------------------------------------------------------------- */

/*
 * Seal the values decl (checked with fd_personal_check) names in data, in
 * place, under the subject's key, made on first use.  The pool's keyring
 * (fd_pool_keyring).  FD_ERR_NOKEY: no master key is configured;
 * FD_ERR_ERASED: the subject was erased; FD_ERR_CONFLICT: the master key
 * does not match the database's; FD_ERR_INVAL: decl does not fit data.
 */
FD_MUST_USE enum fd_err fd_personal_seal(struct fd_pool *pool, const json_t *decl, json_t *data);

/* ---- read: unsealing ----------------------------------------------------------------- */

/* The keys of some subjects, unwrapped (or known erased). */
struct fd_subject_keys;

/*
 * Fetch the keys of `subjects` (an array of strings; repeats allowed) in one
 * statement on conn (or a connection of pool with the _pool variant).  A
 * subject whose key is gone counts as erased.  kr may be NULL: then only
 * erased subjects can be read.  FD_ERR_INTERNAL: a wrapped key does not open
 * under kr (logged; tampering or a wrong key).
 */
FD_MUST_USE enum fd_err fd_subject_keys_fetch(PGconn *conn, const struct fd_keyring *kr, const json_t *subjects,
					      struct fd_subject_keys **out);
FD_MUST_USE enum fd_err fd_subject_keys_fetch_pool(struct fd_pool *pool, const json_t *subjects,
						   struct fd_subject_keys **out);
void fd_subject_keys_free(struct fd_subject_keys *k);

/* The subject of metadata's declaration (borrowed), or NULL when it has none. */
const char *fd_personal_subject_of(const json_t *metadata);

/*
 * Open the values metadata's declaration names in data, in place.  A value
 * of an erased subject becomes null and its pointer is appended to erased
 * (an array; may be NULL).  Nothing to do without a declaration.
 * FD_ERR_NOKEY: the subject is live and keys has no master key;
 * FD_ERR_INTERNAL: a value is not a token that opens (logged without it).
 */
FD_MUST_USE enum fd_err fd_personal_unseal(const struct fd_subject_keys *keys, const json_t *metadata,
					   json_t *data, json_t *erased);

/* ---- erasure ------------------------------------------------------------------------------ */

/*
 * Erase a subject: drop its key (making its sealed values unreadable
 * everywhere), append a $SubjectErased event {"subject"} to each of its
 * streams that has personal data of it after its last such event, and delete
 * the snapshots of its streams.  Idempotent: a repeat only reaches streams
 * written since.  *last is the position of the last event appended
 * ({0, 0} when none).  request_id goes into the events' metadata.
 */
FD_MUST_USE enum fd_err fd_subject_erase(struct fd_pool *pool, const char *subject, const char *request_id,
					 struct fd_cursor *last);

/*
 * What the store knows of a subject: whether it has (had) a key, whether it
 * was erased, and its streams with personal data (an array of names, caller
 * owns).  *known is false for a subject never seen.
 */
FD_MUST_USE enum fd_err fd_subject_status(struct fd_pool *pool, const char *subject, bool *known, bool *erased,
					  json_t **streams);

#endif
