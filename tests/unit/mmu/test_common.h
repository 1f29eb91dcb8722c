/* Shared by the mmu unit tests: a seeded PRNG (splitmix64) and the work
 * scale: 1 normally, 3 under sanitizers, or $MV_MMU_TEST_SCALE. */
#ifndef MV_MMU_TEST_COMMON_H
#define MV_MMU_TEST_COMMON_H

#include <stdint.h>
#include <stdlib.h>

struct rng {
	uint64_t s;
};

static inline uint64_t rng_next(struct rng *g)
{
	uint64_t z = (g->s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

#if defined(__SANITIZE_ADDRESS__)
#define MV_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MV_TEST_SANITIZED 1
#endif
#endif

static inline unsigned test_scale(void)
{
	const char *e = getenv("MV_MMU_TEST_SCALE");
	if (e && atoi(e) > 0)
		return (unsigned)atoi(e);
#ifdef MV_TEST_SANITIZED
	return 3;
#else
	return 1;
#endif
}

#endif
