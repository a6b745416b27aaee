/*
 * fuzz_common.h - helpers shared by the libFuzzer harnesses: a NUL-terminated
 * copy of the input and a check that aborts (so libFuzzer records a crash)
 * when a property of the code under test does not hold.
 */
#ifndef FACTD_FUZZ_COMMON_H
#define FACTD_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_CHECK(cond)                                                                        \
	do {                                                                                    \
		if (!(cond)) {                                                                  \
			fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                \
		}                                                                               \
	} while (0)

/* data[0..size) as a malloc'd C string (cut at the first NUL, as the HTTP layer sees it); NULL on OOM. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return NULL;
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
