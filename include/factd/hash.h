/*
 * hash.h - SHA-256 (FIPS 180-4) for request fingerprints and name-based
 * UUIDs.  Pure; thread-safe.
 */
#ifndef FACTD_HASH_H
#define FACTD_HASH_H

#include <stddef.h>
#include <stdint.h>

#include "factd/uuid.h"

#ifdef __cplusplus
extern "C" {
#endif

struct fd_sha256 {
	uint32_t h[8];
	uint64_t len;
	unsigned char buf[64];
	size_t used;
};

void fd_sha256_init(struct fd_sha256 *c);
void fd_sha256_update(struct fd_sha256 *c, const void *data, size_t len);
void fd_sha256_final(struct fd_sha256 *c, unsigned char out[32]);
/* One-shot digest as 64 lower-case hex digits and a NUL. */
void fd_sha256_hex(const void *data, size_t len, char out[65]);

/*
 * A name-based UUID (RFC 9562 version 8): the first 16 bytes of
 * SHA-256(namespace || 0x00 || name), with version and variant bits set.
 * Same inputs, same UUID.
 */
void fd_uuid_from_name(const char *namespace_, const void *name, size_t len, struct fd_uuid *out);

/*
 * 64-bit FNV-1a of the string s, continuing from h (FD_FNV1A_BASIS to start):
 * a fast, stable, platform-independent hash for tables and keys.
 */
#define FD_FNV1A_BASIS 1469598103934665603ULL
uint64_t fd_fnv1a(uint64_t h, const char *s);

/*
 * A PostgreSQL advisory-lock key: 64-bit FNV-1a of namespace_ then name,
 * with the sign bit cleared.  Stable across versions (processes of different
 * builds must agree on it).
 */
long long fd_lock_key(const char *namespace_, const char *name);

#ifdef __cplusplus
}
#endif

#endif
