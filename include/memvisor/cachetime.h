/* Timing one load, as Flush+Reload does: the flushreload workload and
 * tests/integration/cache_probe (its native yardstick) measure the same way.
 * x86-64 only (rdtscp, clflush). */
#ifndef MEMVISOR_CACHETIME_H
#define MEMVISOR_CACHETIME_H

#if defined(__x86_64__)
#include <stdint.h>
#include <x86intrin.h>

/* Cycles one read of *p takes, fenced so nothing else overlaps it. */
static inline uint64_t mv_reload_cycles(const volatile uint8_t *p)
{
	unsigned aux;
	_mm_mfence();
	uint64_t t0 = __rdtscp(&aux);
	(void)*p;
	uint64_t t1 = __rdtscp(&aux);
	_mm_lfence();
	return t1 - t0;
}

/* qsort comparator for uint64_t (medians of timings). */
static inline int mv_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}
#endif

#endif
