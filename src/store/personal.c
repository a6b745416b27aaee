/*
 * personal.c - sealing, opening and erasing personal data (personal.h).
 *
 * Cryptography is libsodium's: XChaCha20-Poly1305 (IETF) for both the
 * values under a subject key and the subject keys under the master key,
 * each with a random 24-byte nonce.  Associated data binds a wrapped key to
 * its subject and a sealed value to its subject and pointer, so no
 * ciphertext opens anywhere but where it was written.
 *
 * No cache of subject keys: a reader fetches the keys of the subjects on its
 * page or batch in one statement, so an erasure committed by any process
 * takes effect on the next read everywhere (docs/design.md says what that
 * costs).
 *
 * Threading: thread-safe; the keyring's check flag is atomic.
 */
#include "store/personal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "factd/buf.h"
#include "factd/log.h"
#include "factd/sql.h"
#include "internal.h"

#define TOKEN_PREFIX "fdp1:"
#define TOKEN_PREFIX_LEN (sizeof TOKEN_PREFIX - 1)
#define NONCE_BYTES crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
#define TAG_BYTES crypto_aead_xchacha20poly1305_ietf_ABYTES
#define KEY_BYTES crypto_aead_xchacha20poly1305_ietf_KEYBYTES
#define WRAPPED_BYTES (NONCE_BYTES + KEY_BYTES + TAG_BYTES)
#define CHECK_TEXT "factd master key check v1"

_Static_assert(KEY_BYTES == FD_MASTER_KEY_BYTES, "master and subject keys are AEAD keys");

/* ---- pure ------------------------------------------------------------------------ */

bool fd_personal_subject_valid(const char *s)
{
	return fd_subject_id_valid(s);
}

bool fd_json_pointer_valid(const char *p)
{
	if (!p || p[0] != '/' || strlen(p) > 1024)
		return false;
	for (const char *c = p; *c; c++)
		if (*c == '~' && c[1] != '0' && c[1] != '1')
			return false;
	return true;
}

/* The next reference token of p (after its '/') unescaped into tok; returns the rest or NULL. */
static const char *next_token(const char *p, char *tok, size_t len)
{
	if (*p != '/')
		return NULL;
	p++;
	size_t n = 0;
	while (*p && *p != '/') {
		char c = *p++;
		if (c == '~') {
			c = *p == '0' ? '~' : *p == '1' ? '/' : 0;
			if (!c)
				return NULL;
			p++;
		}
		if (n + 1 >= len)
			return NULL;
		tok[n++] = c;
	}
	tok[n] = '\0';
	return p;
}

/* An array index token: "0" or digits without a leading zero. */
static bool array_index(const char *tok, size_t *out)
{
	if (!*tok || (tok[0] == '0' && tok[1]) || strlen(tok) > 9)
		return false;
	size_t v = 0;
	for (const char *c = tok; *c; c++) {
		if (*c < '0' || *c > '9')
			return false;
		v = v * 10 + (size_t)(*c - '0');
	}
	*out = v;
	return true;
}

json_t *fd_json_pointer_get(const json_t *root, const char *p)
{
	char tok[1025];
	json_t *cur = (json_t *)root;
	if (!fd_json_pointer_valid(p))
		return NULL;
	while (cur && *p) {
		if (!(p = next_token(p, tok, sizeof tok)))
			return NULL;
		size_t i;
		if (json_is_object(cur))
			cur = json_object_get(cur, tok);
		else if (json_is_array(cur) && array_index(tok, &i))
			cur = json_array_get(cur, i);
		else
			return NULL;
	}
	return cur;
}

/* Replace the value at p (which exists) by v (stolen).  False when it cannot. */
static bool pointer_set(json_t *root, const char *p, json_t *v)
{
	if (!fd_json_pointer_valid(p)) {
		json_decref(v);
		return false;
	}
	const char *last = strrchr(p, '/');
	char parent_ptr[1025], tok[1025];
	size_t plen = (size_t)(last - p);
	if (plen >= sizeof parent_ptr || !next_token(last, tok, sizeof tok)) {
		json_decref(v);
		return false;
	}
	memcpy(parent_ptr, p, plen);
	parent_ptr[plen] = '\0';
	json_t *parent = plen ? fd_json_pointer_get(root, parent_ptr) : root;
	size_t i;
	if (json_is_object(parent) && json_object_get(parent, tok))
		return json_object_set_new(parent, tok, v) == 0;
	if (json_is_array(parent) && array_index(tok, &i) && i < json_array_size(parent))
		return json_array_set_new(parent, i, v) == 0;
	json_decref(v);
	return false;
}

bool fd_json_pointer_set(json_t *root, const char *p, json_t *v)
{
	return pointer_set(root, p, v);
}

/* Is a a proper prefix of b as pointers ("/a" of "/a/b")? */
static bool pointer_inside(const char *a, const char *b)
{
	size_t n = strlen(a);
	return strncmp(a, b, n) == 0 && b[n] == '/';
}

bool fd_personal_check(const json_t *decl, const json_t *data, char *where, size_t wlen, char *detail,
		       size_t dlen)
{
#define FAIL(w, ...)                                   \
	do {                                           \
		snprintf(where, wlen, "%s", w);        \
		snprintf(detail, dlen, __VA_ARGS__);   \
		return false;                          \
	} while (0)
	if (!json_is_object(decl))
		FAIL("", "personal must be an object {subject, paths}");
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)decl, key, v) {
		if (strcmp(key, "subject") != 0 && strcmp(key, "paths") != 0) {
			char w[300];
			snprintf(w, sizeof w, "/%.200s", key);
			FAIL(w, "unknown member; personal has only subject and paths");
		}
	}
	const json_t *subject = json_object_get(decl, "subject");
	if (!json_is_string(subject) || !fd_personal_subject_valid(json_string_value(subject)))
		FAIL("/subject", "subject must be a string of 1 to %d characters of A-Z a-z 0-9 _ . : @ + -",
		     FD_SUBJECT_MAX);
	const json_t *paths = json_object_get(decl, "paths");
	size_t n = json_array_size(paths);
	if (!json_is_array(paths) || n < 1 || n > FD_PERSONAL_MAX_PATHS)
		FAIL("/paths", "paths must be an array of 1 to %d JSON pointers into data", FD_PERSONAL_MAX_PATHS);
	for (size_t i = 0; i < n; i++) {
		char w[32];
		snprintf(w, sizeof w, "/paths/%zu", i);
		const char *p = json_string_value(json_array_get(paths, i));
		if (!p || !fd_json_pointer_valid(p))
			FAIL(w, "each path must be a JSON pointer (RFC 6901) into data, such as \"/email\"");
		if (!fd_json_pointer_get(data, p))
			FAIL(w, "the path names no value in data");
		for (size_t j = 0; j < i; j++) {
			const char *q = json_string_value(json_array_get(paths, j));
			if (strcmp(p, q) == 0)
				FAIL(w, "the path is listed twice");
			if (pointer_inside(p, q) || pointer_inside(q, p))
				FAIL(w, "one path lies inside another; declare the outer one only");
		}
	}
	return true;
#undef FAIL
}

const char *fd_personal_subject_of(const json_t *metadata)
{
	return json_string_value(json_object_get(json_object_get(metadata, FD_PERSONAL_KEY), "subject"));
}

/* ---- the master key ---------------------------------------------------------------- */

struct fd_keyring {
	unsigned char key[KEY_BYTES];
	atomic_bool checked;
};

static enum fd_err sodium_ready(void)
{
	return sodium_init() < 0 ? FD_ERR_INTERNAL : FD_OK;
}

enum fd_err fd_keyring_new(const unsigned char key[FD_MASTER_KEY_BYTES], struct fd_keyring **out)
{
	*out = NULL;
	if (sodium_ready())
		return FD_ERR_INTERNAL;
	struct fd_keyring *kr = calloc(1, sizeof *kr);
	if (!kr)
		return FD_ERR_NOMEM;
	memcpy(kr->key, key, KEY_BYTES);
	atomic_init(&kr->checked, false);
	*out = kr;
	return FD_OK;
}

void fd_keyring_free(struct fd_keyring *kr)
{
	if (!kr)
		return;
	sodium_memzero(kr->key, sizeof kr->key);
	free(kr);
}

enum fd_err fd_keyring_load(const char *path, struct fd_keyring **out, char *errbuf, size_t errlen)
{
	unsigned char raw[200], key[KEY_BYTES];
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(errbuf, errlen, "FACTD_MASTER_KEY_FILE: cannot open %s: %s", path, strerror(errno));
		return FD_ERR_INVAL;
	}
	ssize_t n = read(fd, raw, sizeof raw);
	close(fd);
	if (n < 0) {
		snprintf(errbuf, errlen, "FACTD_MASTER_KEY_FILE: cannot read %s: %s", path, strerror(errno));
		return FD_ERR_INVAL;
	}
	size_t len = (size_t)n, start = 0, end = len;
	bool ok = false;
	if (len == KEY_BYTES) {
		/* 32 raw bytes, unless they happen to be the start of a hex text */
		memcpy(key, raw, KEY_BYTES);
		ok = true;
	}
	while (start < end && (raw[start] == ' ' || raw[start] == '\n' || raw[start] == '\r' || raw[start] == '\t'))
		start++;
	while (end > start && (raw[end - 1] == ' ' || raw[end - 1] == '\n' || raw[end - 1] == '\r' || raw[end - 1] == '\t'))
		end--;
	if (!ok && end - start == 2 * KEY_BYTES) {
		size_t got = 0;
		ok = sodium_hex2bin(key, sizeof key, (const char *)raw + start, end - start, NULL, &got, NULL) == 0 &&
		     got == KEY_BYTES;
	}
	sodium_memzero(raw, sizeof raw);
	if (!ok) {
		snprintf(errbuf, errlen,
			 "FACTD_MASTER_KEY_FILE: %s must hold 64 hexadecimal digits or 32 raw bytes (make one with "
			 "`head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`)",
			 path);
		return FD_ERR_INVAL;
	}
	enum fd_err err = fd_keyring_new(key, out);
	sodium_memzero(key, sizeof key);
	if (err)
		snprintf(errbuf, errlen, "FACTD_MASTER_KEY_FILE: %s", fd_err_name(err));
	return err;
}

/* AEAD with a fresh nonce: out gets nonce || ciphertext || tag (NONCE_BYTES + mlen + TAG_BYTES). */
static void seal_bytes(const unsigned char *key, const unsigned char *m, size_t mlen, const unsigned char *ad,
		       size_t adlen, unsigned char *out)
{
	randombytes_buf(out, NONCE_BYTES);
	crypto_aead_xchacha20poly1305_ietf_encrypt(out + NONCE_BYTES, NULL, m, mlen, ad, adlen, NULL, out, key);
}

/* The inverse; false when it does not open (wrong key, other associated data, tampering). */
static bool open_bytes(const unsigned char *key, const unsigned char *c, size_t clen, const unsigned char *ad,
		       size_t adlen, unsigned char *out)
{
	if (clen < NONCE_BYTES + TAG_BYTES)
		return false;
	return crypto_aead_xchacha20poly1305_ietf_decrypt(out, NULL, NULL, c + NONCE_BYTES, clen - NONCE_BYTES, ad,
							  adlen, c, key) == 0;
}

/* "factd.subject-key\0<subject>": what a wrapped key is bound to. */
static size_t wrap_ad(const char *subject, unsigned char *ad, size_t len)
{
	static const char tag[] = "factd.subject-key";
	size_t n = strlen(subject);
	if (sizeof tag + n > len)
		return 0;
	memcpy(ad, tag, sizeof tag);
	memcpy(ad + sizeof tag, subject, n);
	return sizeof tag + n;
}

/* bytea's text input form of b: "\x" and hex digits. */
static void bytea_hex(const unsigned char *b, size_t n, char *out, size_t len)
{
	memcpy(out, "\\x", 2);
	sodium_bin2hex(out + 2, len - 2, b, n);
}

/* The bytes of a bytea column of a text-format result ("\x..."); false when malformed or too long. */
static bool bytea_of(const PGresult *res, int row, int col, unsigned char *out, size_t len, size_t *n)
{
	const char *v = PQgetvalue(res, row, col);
	if (strncmp(v, "\\x", 2) != 0)
		return false;
	return sodium_hex2bin(out, len, v + 2, strlen(v + 2), NULL, n, NULL) == 0;
}

static const struct fd_stmt check_get = {
	.name = "fd_master_key_check_get",
	.sql = "SELECT sealed FROM master_key_check WHERE id = 1",
	.nparams = 0,
};
static const struct fd_stmt check_put = {
	.name = "fd_master_key_check_put",
	.sql = "INSERT INTO master_key_check (id, sealed) VALUES (1, $1::bytea) ON CONFLICT (id) DO NOTHING"
	       " RETURNING 1",
	.nparams = 1,
};

enum fd_err fd_keyring_check(struct fd_pool *pool, struct fd_keyring *kr)
{
	if (atomic_load(&kr->checked))
		return FD_OK;
	PGconn *conn = NULL;
	PGresult *res = NULL;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	static const unsigned char ad[] = "factd.master-key-check";
	for (int round = 0; round < 2 && !err; round++) {
		PQclear(res);
		res = NULL;
		if ((err = fd_sql_exec(conn, &check_get, NULL, &res)))
			break;
		if (PQntuples(res) == 1) {
			unsigned char c[128], m[sizeof CHECK_TEXT];
			size_t n = 0;
			if (!bytea_of(res, 0, 0, c, sizeof c, &n) || n != NONCE_BYTES + sizeof CHECK_TEXT + TAG_BYTES ||
			    !open_bytes(kr->key, c, n, ad, sizeof ad, m) || memcmp(m, CHECK_TEXT, sizeof CHECK_TEXT) != 0)
				err = FD_ERR_CONFLICT;
			else
				atomic_store(&kr->checked, true);
			break;
		}
		/* the first key this database sees: record it (a concurrent first wins; read it back) */
		unsigned char c[NONCE_BYTES + sizeof CHECK_TEXT + TAG_BYTES];
		char hex[2 * sizeof c + 3];
		seal_bytes(kr->key, (const unsigned char *)CHECK_TEXT, sizeof CHECK_TEXT, ad, sizeof ad, c);
		bytea_hex(c, sizeof c, hex, sizeof hex);
		const char *p[] = { hex };
		PQclear(res);
		res = NULL;
		err = fd_sql_exec(conn, &check_put, p, &res);
	}
	if (!err && !atomic_load(&kr->checked))
		err = FD_ERR_INTERNAL;
	PQclear(res);
	fd_pool_release(pool, conn, fd_pg_conn_broken(conn, err));
	return err;
}

/* ---- subject keys --------------------------------------------------------------------- */

struct subject_key {
	char *subject;
	bool erased;          /* no key: erased (or never made) */
	unsigned char key[KEY_BYTES];
};

struct fd_subject_keys {
	const struct fd_keyring *kr;
	size_t n;
	struct subject_key items[];
};

static const struct fd_stmt keys_get = {
	.name = "fd_subject_keys_get",
	.sql = "SELECT subject, wrapped FROM subject_keys WHERE subject = ANY ($1::text[])",
	.nparams = 1,
};
static const struct fd_stmt key_get = {
	.name = "fd_subject_key_get",
	.sql = "SELECT wrapped FROM subject_keys WHERE subject = $1::text",
	.nparams = 1,
};
static const struct fd_stmt key_put = {
	.name = "fd_subject_key_put",
	.sql = "INSERT INTO subject_keys (subject, wrapped) VALUES ($1::text, $2::bytea)"
	       " ON CONFLICT (subject) DO NOTHING RETURNING wrapped",
	.nparams = 2,
};

/* Unwrap a wrapped key column; false (logged, without key material) when it does not open. */
static bool unwrap(const struct fd_keyring *kr, const char *subject, const PGresult *res, int row, int col,
		   unsigned char *key)
{
	unsigned char c[WRAPPED_BYTES + 8], ad[FD_SUBJECT_MAX + 32];
	size_t n = 0, adlen = wrap_ad(subject, ad, sizeof ad);
	if (adlen && bytea_of(res, row, col, c, sizeof c, &n) && n == WRAPPED_BYTES &&
	    open_bytes(kr->key, c, n, ad, adlen, key))
		return true;
	fd_log_fields(FD_LOG_ERROR, "a subject key does not open under the master key (another master key, or a "
				    "tampered row); nothing of the subject is read",
		      json_pack("{s:s}", "subject", subject));
	return false;
}

enum fd_err fd_subject_keys_fetch(PGconn *conn, const struct fd_keyring *kr, const json_t *subjects,
				  struct fd_subject_keys **out)
{
	struct fd_buf lit = FD_BUF_INIT;
	PGresult *res = NULL;
	size_t n = json_array_size(subjects);
	struct fd_subject_keys *k = calloc(1, sizeof *k + n * sizeof k->items[0]);
	enum fd_err err = k ? sodium_ready() : FD_ERR_NOMEM;
	*out = NULL;
	if (err)
		goto done;
	k->kr = kr;
	err = fd_buf_append(&lit, "{", 1);
	for (size_t i = 0; i < n && !err; i++) {
		const char *s = json_string_value(json_array_get(subjects, i));
		if (!s) {
			err = FD_ERR_INVAL;
			break;
		}
		bool seen = false;
		for (size_t j = 0; j < k->n && !seen; j++)
			seen = strcmp(k->items[j].subject, s) == 0;
		if (seen)
			continue;
		if (!(k->items[k->n].subject = strdup(s))) {
			err = FD_ERR_NOMEM;
			break;
		}
		k->items[k->n].erased = true;
		err = fd_store_array_elem(&lit, s, k->n == 0);
		k->n++;
	}
	if (!err)
		err = fd_buf_append(&lit, "}", 1);
	if (err || k->n == 0)
		goto done;
	const char *p[] = { lit.data };
	if ((err = fd_sql_exec(conn, &keys_get, p, &res)))
		goto done;
	for (int r = 0; r < PQntuples(res); r++) {
		const char *s = PQgetvalue(res, r, 0);
		for (size_t j = 0; j < k->n; j++) {
			if (strcmp(k->items[j].subject, s) != 0 || PQgetisnull(res, r, 1))
				continue;
			if (!kr) {
				/* live, but no master key here: opening its values is FD_ERR_NOKEY */
				k->items[j].erased = false;
				memset(k->items[j].key, 0, KEY_BYTES);
				continue;
			}
			if (!unwrap(kr, s, res, r, 1, k->items[j].key)) {
				err = FD_ERR_INTERNAL;
				goto done;
			}
			k->items[j].erased = false;
		}
	}
done:
	PQclear(res);
	fd_buf_release(&lit);
	if (err)
		fd_subject_keys_free(k);
	else
		*out = k;
	return err;
}

enum fd_err fd_subject_keys_fetch_pool(struct fd_pool *pool, const json_t *subjects, struct fd_subject_keys **out)
{
	PGconn *conn = NULL;
	*out = NULL;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	err = fd_subject_keys_fetch(conn, fd_pool_keyring(pool), subjects, out);
	fd_pool_release(pool, conn, fd_pg_conn_broken(conn, err));
	return err;
}

void fd_subject_keys_free(struct fd_subject_keys *k)
{
	if (!k)
		return;
	for (size_t i = 0; i < k->n; i++)
		free(k->items[i].subject);
	sodium_memzero(k->items, k->n * sizeof k->items[0]);
	free(k);
}

/* "factd.personal\0<subject>\0<pointer>": what a sealed value is bound to; 0 when too long. */
static size_t value_ad(const char *subject, const char *path, unsigned char *ad, size_t len)
{
	static const char tag[] = "factd.personal";
	size_t s = strlen(subject) + 1, p = strlen(path);
	if (sizeof tag + s + p > len)
		return 0;
	memcpy(ad, tag, sizeof tag);
	memcpy(ad + sizeof tag, subject, s);
	memcpy(ad + sizeof tag + s, path, p);
	return sizeof tag + s + p;
}

/* ---- sealing -------------------------------------------------------------------------- */

/* The subject's key, made and stored on first use. */
static enum fd_err subject_key(struct fd_pool *pool, struct fd_keyring *kr, const char *subject, unsigned char *key)
{
	PGconn *conn = NULL;
	PGresult *res = NULL;
	enum fd_err err = fd_keyring_check(pool, kr);
	if (err)
		return err;
	if ((err = fd_pool_acquire(pool, &conn)))
		return err;
	const char *p1[] = { subject };
	for (int round = 0; round < 3; round++) {
		PQclear(res);
		res = NULL;
		if ((err = fd_sql_exec(conn, &key_get, p1, &res)))
			goto done;
		if (PQntuples(res) == 0) {
			unsigned char fresh[KEY_BYTES], c[WRAPPED_BYTES], ad[FD_SUBJECT_MAX + 32];
			char hex[2 * WRAPPED_BYTES + 3];
			size_t adlen = wrap_ad(subject, ad, sizeof ad);
			if (!adlen) {
				err = FD_ERR_INVAL;
				goto done;
			}
			crypto_aead_xchacha20poly1305_ietf_keygen(fresh);
			seal_bytes(kr->key, fresh, KEY_BYTES, ad, adlen, c);
			sodium_memzero(fresh, sizeof fresh);
			bytea_hex(c, sizeof c, hex, sizeof hex);
			const char *p2[] = { subject, hex };
			PQclear(res);
			res = NULL;
			if ((err = fd_sql_exec(conn, &key_put, p2, &res)))
				goto done;
			if (PQntuples(res) == 0)
				continue; /* another writer made it first: read theirs */
		}
		if (PQgetisnull(res, 0, 0)) {
			err = FD_ERR_ERASED;
			goto done;
		}
		err = unwrap(kr, subject, res, 0, 0, key) ? FD_OK : FD_ERR_INTERNAL;
		goto done;
	}
	err = FD_ERR_RETRY;
done:
	PQclear(res);
	fd_pool_release(pool, conn, fd_pg_conn_broken(conn, err));
	return err;
}

enum fd_err fd_personal_seal(struct fd_pool *pool, const json_t *decl, json_t *data)
{
	struct fd_keyring *kr = fd_pool_keyring(pool);
	unsigned char key[KEY_BYTES];
	const char *subject = json_string_value(json_object_get(decl, "subject"));
	const json_t *paths = json_object_get(decl, "paths");
	if (!kr)
		return FD_ERR_NOKEY;
	if (!subject || !json_is_array(paths))
		return FD_ERR_INVAL;
	enum fd_err err = sodium_ready();
	if (!err)
		err = subject_key(pool, kr, subject, key);
	for (size_t i = 0; !err && i < json_array_size(paths); i++) {
		const char *path = json_string_value(json_array_get(paths, i));
		json_t *v = path ? fd_json_pointer_get(data, path) : NULL;
		char *text = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		unsigned char ad[FD_SUBJECT_MAX + 1100];
		size_t adlen = path ? value_ad(subject, path, ad, sizeof ad) : 0;
		if (!v || !adlen) {
			free(text);
			err = FD_ERR_INVAL;
			break;
		}
		if (!text) {
			err = FD_ERR_NOMEM;
			break;
		}
		size_t mlen = strlen(text), clen = NONCE_BYTES + mlen + TAG_BYTES;
		size_t tlen = TOKEN_PREFIX_LEN + sodium_base64_ENCODED_LEN(clen, sodium_base64_VARIANT_ORIGINAL);
		unsigned char *c = malloc(clen);
		char *token = malloc(tlen);
		if (c && token) {
			seal_bytes(key, (const unsigned char *)text, mlen, ad, adlen, c);
			memcpy(token, TOKEN_PREFIX, TOKEN_PREFIX_LEN);
			sodium_bin2base64(token + TOKEN_PREFIX_LEN, tlen - TOKEN_PREFIX_LEN, c, clen,
					  sodium_base64_VARIANT_ORIGINAL);
			if (!pointer_set(data, path, json_string(token)))
				err = FD_ERR_NOMEM;
		} else {
			err = FD_ERR_NOMEM;
		}
		sodium_memzero(text, mlen);
		free(text);
		free(c);
		free(token);
	}
	sodium_memzero(key, sizeof key);
	return err;
}

/* ---- opening ----------------------------------------------------------------------------- */

/* Open one token into a JSON value (new reference); NULL when it does not open. */
static json_t *open_token(const unsigned char *key, const char *subject, const char *path, const char *token)
{
	unsigned char ad[FD_SUBJECT_MAX + 1100];
	size_t adlen = value_ad(subject, path, ad, sizeof ad), tlen = strlen(token);
	if (!adlen || tlen <= TOKEN_PREFIX_LEN || strncmp(token, TOKEN_PREFIX, TOKEN_PREFIX_LEN) != 0)
		return NULL;
	size_t cap = tlen, clen = 0;
	unsigned char *c = malloc(cap), *m = malloc(cap);
	json_t *v = NULL;
	if (c && m &&
	    sodium_base642bin(c, cap, token + TOKEN_PREFIX_LEN, tlen - TOKEN_PREFIX_LEN, NULL, &clen, NULL,
			      sodium_base64_VARIANT_ORIGINAL) == 0 &&
	    clen >= NONCE_BYTES + TAG_BYTES && open_bytes(key, c, clen, ad, adlen, m)) {
		size_t mlen = clen - NONCE_BYTES - TAG_BYTES;
		v = json_loadb((const char *)m, mlen, JSON_DECODE_ANY, NULL);
		if (!v)
			v = json_loadb((const char *)m, mlen, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
		sodium_memzero(m, mlen);
	}
	free(c);
	free(m);
	return v;
}

enum fd_err fd_personal_unseal(const struct fd_subject_keys *keys, const json_t *metadata, json_t *data,
			       json_t *erased)
{
	const json_t *decl = json_object_get(metadata, FD_PERSONAL_KEY);
	if (!decl)
		return FD_OK;
	const char *subject = json_string_value(json_object_get(decl, "subject"));
	const json_t *paths = json_object_get(decl, "paths");
	const struct subject_key *sk = NULL;
	for (size_t i = 0; keys && subject && i < keys->n && !sk; i++)
		if (strcmp(keys->items[i].subject, subject) == 0)
			sk = &keys->items[i];
	if (!sk || !json_is_array(paths)) {
		fd_log_fields(FD_LOG_ERROR, "an event's personal declaration is malformed or its subject's key was not "
					    "fetched",
			      json_pack("{s:s?}", "subject", subject));
		return FD_ERR_INTERNAL;
	}
	if (!sk->erased && !keys->kr)
		return FD_ERR_NOKEY;
	for (size_t i = 0; i < json_array_size(paths); i++) {
		const char *path = json_string_value(json_array_get(paths, i));
		json_t *v = path ? fd_json_pointer_get(data, path) : NULL;
		if (!v) {
			fd_log_fields(FD_LOG_ERROR, "a declared personal path names no value in the event's data",
				      json_pack("{s:s, s:s?}", "subject", subject, "path", path));
			return FD_ERR_INTERNAL;
		}
		if (sk->erased) {
			if (!pointer_set(data, path, json_null()) ||
			    (erased && json_array_append_new(erased, json_string(path)) != 0))
				return FD_ERR_NOMEM;
			continue;
		}
		json_t *plain = json_is_string(v) ? open_token(sk->key, subject, path, json_string_value(v)) : NULL;
		if (!plain) {
			fd_log_fields(FD_LOG_ERROR, "a sealed personal value does not open under its subject's key "
						    "(tampered, or moved from elsewhere)",
				      json_pack("{s:s, s:s}", "subject", subject, "path", path));
			return FD_ERR_INTERNAL;
		}
		if (!pointer_set(data, path, plain))
			return FD_ERR_NOMEM;
	}
	return FD_OK;
}

/* ---- erasure ---------------------------------------------------------------------------------- */

static const struct fd_stmt erase_key = {
	.name = "fd_subject_erase_key",
	.sql = "INSERT INTO subject_keys (subject, wrapped, erased_at) VALUES ($1::text, NULL, now())"
	       " ON CONFLICT (subject) DO UPDATE SET wrapped = NULL,"
	       " erased_at = coalesce(subject_keys.erased_at, now()) RETURNING 1",
	.nparams = 1,
};
/* The subject's streams with personal data of it after their last $SubjectErased of it. */
static const struct fd_stmt erase_streams = {
	.name = "fd_subject_erase_streams",
	.sql = "SELECT p.stream_id FROM (SELECT e.stream_id, max(e.version) AS v FROM events e"
	       "  WHERE e.metadata ? 'personal' AND (e.metadata -> 'personal' ->> 'subject') = $1::text"
	       "  GROUP BY e.stream_id) p"
	       " WHERE NOT EXISTS (SELECT 1 FROM events x WHERE x.stream_id = p.stream_id"
	       "  AND x.type = '" FD_SUBJECT_ERASED_TYPE "' AND x.version > p.v"
	       "  AND x.data ->> 'subject' = $1::text)"
	       /* a deleted stream stays deleted: an append would start it again (0008) */
	       " AND NOT EXISTS (SELECT 1 FROM streams s WHERE s.stream_id = p.stream_id AND (s.deleted OR s.tombstoned))"
	       " ORDER BY p.stream_id",
	.nparams = 1,
};
static const struct fd_stmt all_streams = {
	.name = "fd_subject_streams",
	.sql = "SELECT DISTINCT e.stream_id FROM events e"
	       " WHERE e.metadata ? 'personal' AND (e.metadata -> 'personal' ->> 'subject') = $1::text"
	       " ORDER BY 1",
	.nparams = 1,
};
static const struct fd_stmt purge_snapshots = {
	.name = "fd_subject_purge_snapshots",
	.sql = "SELECT fd_subject_purge_snapshots($1::text[])",
	.nparams = 1,
};
static const struct fd_stmt subject_row = {
	.name = "fd_subject_row",
	.sql = "SELECT erased_at IS NOT NULL FROM subject_keys WHERE subject = $1::text",
	.nparams = 1,
};

/* Run one statement on a pooled connection; *out holds the rows. */
static enum fd_err run1(struct fd_pool *pool, const struct fd_stmt *st, const char *const *p, PGresult **out)
{
	PGconn *conn = NULL;
	*out = NULL;
	enum fd_err err = fd_pool_acquire(pool, &conn);
	if (err)
		return err;
	err = fd_sql_exec(conn, st, p, out);
	if (err) {
		fd_log_fields(FD_LOG_ERROR, "personal data statement failed",
			      json_pack("{s:s, s:s, s:s}", "statement", st->name, "error", fd_err_name(err), "detail",
					*out ? PQresultErrorMessage(*out) : PQerrorMessage(conn)));
		PQclear(*out);
		*out = NULL;
	}
	fd_pool_release(pool, conn, fd_pg_conn_broken(conn, err));
	return err;
}

enum fd_err fd_subject_erase(struct fd_pool *pool, const char *subject, const char *request_id,
			     struct fd_cursor *last)
{
	PGresult *res = NULL;
	struct fd_buf lit = FD_BUF_INIT;
	json_t *data = NULL, *md = NULL;
	char *data_text = NULL, *md_text = NULL;
	const char *p[] = { subject };
	*last = (struct fd_cursor){ 0, 0 };
	if (!fd_personal_subject_valid(subject))
		return FD_ERR_INVAL;
	/* 1. the key: from this commit on, nothing of the subject opens anywhere */
	enum fd_err err = run1(pool, &erase_key, p, &res);
	if (err)
		goto done;
	PQclear(res);
	/* 2. a $SubjectErased in each stream, so that every reader of the stream learns of it */
	if ((err = run1(pool, &erase_streams, p, &res)))
		goto done;
	data = json_pack("{s:s}", "subject", subject);
	md = json_pack("{s:s?}", "request_id", request_id);
	data_text = data ? json_dumps(data, JSON_COMPACT) : NULL;
	md_text = md ? json_dumps(md, JSON_COMPACT) : NULL;
	if (!data_text || !md_text) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	for (int r = 0; r < PQntuples(res); r++) {
		struct fd_event_in ev = { .type = FD_SUBJECT_ERASED_TYPE, .data_json = data_text, .metadata_json = md_text };
		struct fd_append_result ar;
		if ((err = fd_uuid_v7(&ev.event_id)))
			goto done;
		if ((err = fd_store_append(pool, PQgetvalue(res, r, 0), (struct fd_expected){ FD_EXPECT_ANY, 0 }, &ev, 1,
					   &ar)))
			goto done;
		if (fd_cursor_cmp(&ar.position, last) > 0)
			*last = ar.position;
	}
	PQclear(res);
	/* 3. the snapshots of every stream of the subject (states folded before the erasure) */
	if ((err = run1(pool, &all_streams, p, &res)))
		goto done;
	err = fd_buf_append(&lit, "{", 1);
	for (int r = 0; r < PQntuples(res) && !err; r++)
		err = fd_store_array_elem(&lit, PQgetvalue(res, r, 0), r == 0);
	if (!err)
		err = fd_buf_append(&lit, "}", 1);
	PQclear(res);
	res = NULL;
	if (err)
		goto done;
	const char *ps[] = { lit.data };
	err = run1(pool, &purge_snapshots, ps, &res);
done:
	PQclear(res);
	fd_buf_release(&lit);
	json_decref(data);
	json_decref(md);
	free(data_text);
	free(md_text);
	return err;
}

enum fd_err fd_subject_status(struct fd_pool *pool, const char *subject, bool *known, bool *erased,
			      json_t **streams)
{
	PGresult *res = NULL;
	const char *p[] = { subject };
	*known = *erased = false;
	*streams = NULL;
	if (!fd_personal_subject_valid(subject))
		return FD_ERR_INVAL;
	enum fd_err err = run1(pool, &subject_row, p, &res);
	if (err)
		return err;
	if (PQntuples(res) == 1) {
		*known = true;
		*erased = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	}
	PQclear(res);
	if ((err = run1(pool, &all_streams, p, &res)))
		return err;
	json_t *arr = json_array();
	for (int r = 0; arr && r < PQntuples(res); r++)
		if (json_array_append_new(arr, json_string(PQgetvalue(res, r, 0))) != 0) {
			json_decref(arr);
			arr = NULL;
		}
	PQclear(res);
	if (!arr)
		return FD_ERR_NOMEM;
	*known = *known || json_array_size(arr) > 0;
	*streams = arr;
	return FD_OK;
}
