/*
 * auth.h - API keys and roles.
 *
 * A key is a bearer secret with a role.  Keys are kept only as SHA-256
 * digests and a presented key is compared against every digest in constant
 * time.  Pure functions over caller-owned values; thread-safe once built.
 *
 * Key list syntax (FACTD_API_KEYS and each line of FACTD_API_KEYS_FILE):
 *   role:secret              a plaintext key (16..512 visible ASCII, no ',')
 *   role:sha256:<64 hex>     a key given as the SHA-256 of its secret
 * role is read, write or admin.  FACTD_API_KEYS separates entries with ','.
 * In the file, an entry per line; "role secret" (a space instead of the
 * colon) is accepted too, and blank lines and lines starting '#' are skipped.
 */
#ifndef FACTD_AUTH_H
#define FACTD_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "factd/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * What a route requires, and what a key grants.  Ordered: a larger role
 * implies every smaller one (admin > write > read).  FD_ROLE_DEFAULT on a
 * route means "derived from the method": GET and HEAD need read, anything
 * else write.  FD_ROLE_OPEN routes need no key at all.
 */
enum fd_role {
	FD_ROLE_DEFAULT = 0,
	FD_ROLE_OPEN,
	FD_ROLE_READ,
	FD_ROLE_WRITE,
	FD_ROLE_ADMIN,
};

#define FD_API_KEY_MIN 16
#define FD_API_KEY_MAX 512

struct fd_api_key {
	unsigned char digest[32]; /* SHA-256 of the secret */
	enum fd_role role;        /* read, write or admin */
};

/* A set of keys.  Owns `keys`; release with fd_api_keys_release. */
struct fd_api_keys {
	struct fd_api_key *keys;
	size_t n;
};

/* "read", "write", "admin" (and "open", "default") for logs and problems. */
const char *fd_role_name(enum fd_role role);

/*
 * Add the entries of `list` to `set`.  `sep` separates entries (',' for the
 * environment, '\n' for a file's contents; a file also accepts "role secret"
 * and '#' comments).  `origin` names the source in errors.  FD_ERR_INVAL with
 * a message in errbuf (never quoting a secret); FD_ERR_NOMEM.
 */
FD_MUST_USE enum fd_err fd_api_keys_parse(struct fd_api_keys *set, const char *list, char sep,
					  const char *origin, char *errbuf, size_t errlen);
/* Read a key file (format above) into `set`; FD_ERR_INVAL when unreadable or malformed. */
FD_MUST_USE enum fd_err fd_api_keys_load_file(struct fd_api_keys *set, const char *path, char *errbuf,
					      size_t errlen);
void fd_api_keys_release(struct fd_api_keys *set);

/*
 * The role of the presented secret (`len` bytes), or FD_ROLE_DEFAULT when no
 * key matches.  Every stored digest is compared, in constant time each, so the
 * time taken does not depend on which key (if any) matched.
 */
enum fd_role fd_api_keys_lookup(const struct fd_api_keys *set, const char *secret, size_t len);

/*
 * The token of an "Authorization: Bearer <token>" header value (scheme
 * case-insensitive, surrounding spaces ignored), or NULL when the header is
 * absent or of another scheme.  *len receives the token's length.
 */
const char *fd_auth_bearer(const char *header, size_t *len);

/*
 * A key's public name for logs and event metadata: "key:" and the first 12
 * hex digits of its SHA-256 (what an operator sees in a hashed key list).
 */
#define FD_API_KEY_ID_LEN 16
void fd_api_key_id(const char *secret, size_t len, char out[FD_API_KEY_ID_LEN + 1]);

/* The role a route needs: `declared` unless FD_ROLE_DEFAULT, else read for GET/HEAD, write otherwise. */
enum fd_role fd_role_required(enum fd_role declared, const char *method);

#ifdef __cplusplus
}
#endif

#endif
