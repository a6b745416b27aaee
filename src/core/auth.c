/*
 * auth.c - API key lists: parsing, SHA-256 digests and constant-time lookup.
 *
 * Threading: parsing happens once at start-up; lookups only read the set.
 * Secrets are hashed as soon as they are parsed and never copied elsewhere
 * or quoted in error messages.
 */
#include "factd/auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "factd/hash.h"

#define KEY_FILE_MAX (1024 * 1024)

const char *fd_role_name(enum fd_role role)
{
	switch (role) {
	case FD_ROLE_OPEN:
		return "open";
	case FD_ROLE_READ:
		return "read";
	case FD_ROLE_WRITE:
		return "write";
	case FD_ROLE_ADMIN:
		return "admin";
	case FD_ROLE_DEFAULT:
		break;
	}
	return "default";
}

enum fd_role fd_role_required(enum fd_role declared, const char *method)
{
	if (declared != FD_ROLE_DEFAULT)
		return declared;
	if (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0)
		return FD_ROLE_READ;
	return FD_ROLE_WRITE;
}

static enum fd_role role_parse(const char *s, size_t n)
{
	if (n == 4 && strncmp(s, "read", 4) == 0)
		return FD_ROLE_READ;
	if (n == 5 && strncmp(s, "write", 5) == 0)
		return FD_ROLE_WRITE;
	if (n == 5 && strncmp(s, "admin", 5) == 0)
		return FD_ROLE_ADMIN;
	return FD_ROLE_DEFAULT;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool visible(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e || s[i] == ',')
			return false;
	return true;
}

/* One entry s[0..n), already trimmed.  `file` accepts a space after the role. */
static enum fd_err add_entry(struct fd_api_keys *set, const char *s, size_t n, bool file, const char *origin,
			     size_t index, char *errbuf, size_t errlen)
{
	size_t rlen = 0;
	while (rlen < n && s[rlen] != ':' && !(file && (s[rlen] == ' ' || s[rlen] == '\t')))
		rlen++;
	enum fd_role role = role_parse(s, rlen);
	if (rlen == n || role == FD_ROLE_DEFAULT) {
		snprintf(errbuf, errlen, "%s: entry %zu must be role:key with role read, write or admin", origin,
			 index);
		return FD_ERR_INVAL;
	}
	const char *secret = s + rlen + 1;
	size_t slen = n - rlen - 1;
	while (slen && (*secret == ' ' || *secret == '\t')) {
		secret++;
		slen--;
	}
	struct fd_api_key key = { .role = role };
	static const char pre[] = "sha256:";
	if (slen >= sizeof pre - 1 && strncmp(secret, pre, sizeof pre - 1) == 0) {
		const char *hex = secret + sizeof pre - 1;
		bool ok = slen - (sizeof pre - 1) == 64;
		for (size_t i = 0; ok && i < 32; i++) {
			int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
			ok = hi >= 0 && lo >= 0;
			if (ok)
				key.digest[i] = (unsigned char)(hi << 4 | lo);
		}
		if (!ok) {
			snprintf(errbuf, errlen, "%s: entry %zu: sha256: must be followed by 64 hex digits", origin,
				 index);
			return FD_ERR_INVAL;
		}
	} else {
		if (slen < FD_API_KEY_MIN || slen > FD_API_KEY_MAX || !visible(secret, slen)) {
			snprintf(errbuf, errlen,
				 "%s: entry %zu: a key must be %d to %d visible ASCII characters without ','", origin,
				 index, FD_API_KEY_MIN, FD_API_KEY_MAX);
			return FD_ERR_INVAL;
		}
		struct fd_sha256 c;
		fd_sha256_init(&c);
		fd_sha256_update(&c, secret, slen);
		fd_sha256_final(&c, key.digest);
	}
	for (size_t i = 0; i < set->n; i++)
		if (memcmp(set->keys[i].digest, key.digest, sizeof key.digest) == 0) {
			snprintf(errbuf, errlen, "%s: entry %zu repeats a key already listed", origin, index);
			return FD_ERR_INVAL;
		}
	struct fd_api_key *grown = realloc(set->keys, (set->n + 1) * sizeof *grown);
	if (!grown)
		return FD_ERR_NOMEM;
	set->keys = grown;
	set->keys[set->n++] = key;
	return FD_OK;
}

enum fd_err fd_api_keys_parse(struct fd_api_keys *set, const char *list, char sep, const char *origin,
			      char *errbuf, size_t errlen)
{
	bool file = sep == '\n';
	size_t index = 0;
	for (const char *p = list; p && *p;) {
		const char *end = strchr(p, sep);
		size_t n = end ? (size_t)(end - p) : strlen(p);
		const char *s = p;
		p = end ? end + 1 : NULL;
		index++;
		while (n && (*s == ' ' || *s == '\t')) {
			s++;
			n--;
		}
		while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
			n--;
		if (n == 0 || (file && *s == '#'))
			continue;
		enum fd_err err = add_entry(set, s, n, file, origin, index, errbuf, errlen);
		if (err)
			return err;
	}
	return FD_OK;
}

enum fd_err fd_api_keys_load_file(struct fd_api_keys *set, const char *path, char *errbuf, size_t errlen)
{
	enum fd_err err = FD_ERR_INVAL;
	char *text = NULL;
	size_t n = 0;
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(errbuf, errlen, "FACTD_API_KEYS_FILE: cannot open %s: %s", path, strerror(errno));
		goto done;
	}
	text = malloc(KEY_FILE_MAX + 1);
	if (!text) {
		err = FD_ERR_NOMEM;
		goto done;
	}
	n = fread(text, 1, KEY_FILE_MAX + 1, f);
	if (ferror(f) || n > KEY_FILE_MAX) {
		snprintf(errbuf, errlen, "FACTD_API_KEYS_FILE: cannot read %s (or it exceeds %d bytes)", path,
			 KEY_FILE_MAX);
		goto done;
	}
	text[n] = '\0';
	if (memchr(text, '\0', n)) {
		snprintf(errbuf, errlen, "FACTD_API_KEYS_FILE: %s is not a text file", path);
		goto done;
	}
	err = fd_api_keys_parse(set, text, '\n', "FACTD_API_KEYS_FILE", errbuf, errlen);
done:
	if (text)
		explicit_bzero(text, n); /* the file may hold plaintext secrets */
	free(text);
	if (f)
		fclose(f);
	return err;
}

void fd_api_keys_release(struct fd_api_keys *set)
{
	free(set->keys);
	set->keys = NULL;
	set->n = 0;
}

enum fd_role fd_api_keys_lookup(const struct fd_api_keys *set, const char *secret, size_t len)
{
	unsigned char digest[32];
	struct fd_sha256 c;
	fd_sha256_init(&c);
	fd_sha256_update(&c, secret, len);
	fd_sha256_final(&c, digest);
	unsigned found = 0;
	for (size_t i = 0; i < set->n; i++) {
		unsigned char diff = 0;
		for (size_t j = 0; j < sizeof digest; j++)
			diff |= (unsigned char)(digest[j] ^ set->keys[i].digest[j]);
		/* 1 when diff == 0, else 0, without a branch on the secret. */
		unsigned eq = (unsigned)((((unsigned)diff) - 1u) >> 8) & 1u;
		unsigned mask = 0u - (eq & (found == 0));
		found |= mask & (unsigned)set->keys[i].role;
	}
	return (enum fd_role)found;
}

const char *fd_auth_bearer(const char *header, size_t *len)
{
	*len = 0;
	if (!header)
		return NULL;
	while (*header == ' ' || *header == '\t')
		header++;
	if (strncasecmp(header, "Bearer", 6) != 0 || (header[6] != ' ' && header[6] != '\t'))
		return NULL;
	const char *t = header + 7;
	while (*t == ' ' || *t == '\t')
		t++;
	size_t n = strlen(t);
	while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
		n--;
	if (n == 0)
		return NULL;
	*len = n;
	return t;
}

void fd_api_key_id(const char *secret, size_t len, char out[FD_API_KEY_ID_LEN + 1])
{
	char hex[65];
	fd_sha256_hex(secret, len, hex);
	snprintf(out, FD_API_KEY_ID_LEN + 1, "key:%.12s", hex);
}
