/* Counter-based pseudo-random numbers for workloads: splitmix64 evaluated at
 * an index, so the choice made by op i is a pure function of (seed, i) and
 * verify can recompute any op without replaying generator state.
 * Used by the workload files of src/vm only. */
#ifndef MV_VM_PRNG_H
#define MV_VM_PRNG_H

#include <stdint.h>

#define MV_GOLDEN 0x9E3779B97F4A7C15ULL

/* Independent streams drawn from one seed: xored into the seed. */
#define MV_STREAM_PAGE 0x5041474553545231ULL
#define MV_STREAM_FILL 0x46494c4c53545232ULL
#define MV_STREAM_KEY 0x4b45595354524d33ULL
#define MV_STREAM_HASH 0x4841534853545234ULL

/* splitmix64's output function: a bijective 64-bit mixer. */
static inline uint64_t mv_mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* The index-th output of splitmix64 started at seed. */
static inline uint64_t mv_prng_at(uint64_t seed, uint64_t index)
{
	return mv_mix64(seed + (index + 1) * MV_GOLDEN);
}

/* Maps r uniformly onto [0, n) without a division (Lemire's reduction). */
static inline uint64_t mv_prng_below(uint64_t r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)r * n) >> 64);
}

/* Hash of a pair, for content derived from (seed, a, b). */
static inline uint64_t mv_mix3(uint64_t seed, uint64_t a, uint64_t b)
{
	return mv_mix64(seed ^ mv_mix64(a * MV_GOLDEN + mv_mix64(b + 0x632BE59BD9B4E019ULL)));
}

#endif
