/* cache_probe: can a reload on one CPU see what another CPU just read, right
 * now? Native Flush+Reload between two threads of this process on a shared
 * page: the victim on CPU A reads lines 0 and 5 over and over, the prober on
 * CPU B flushes lines 0-7, waits a moment and times their reloads (random
 * order: a stride prefetcher would learn a fixed one). On a VM host whose CPUs
 * are hypervisor vCPUs the answer changes with where the hypervisor runs them
 * (on AMD, whether they share an L3), so guard_attacks.sh asks this at the
 * time it scores its Flush+Reload attacker. Prints the hit rate of each
 * touched line, the median of the untouched ones and "visible" = the largest
 * |touched - untouched|. Usage: cache_probe CPU_A CPU_B MS */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#include "memvisor/cachetime.h"

#define LINES 8
static volatile uint8_t *page;
static volatile int stop;

static int pin(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	return sched_setaffinity(0, sizeof(s), &s);
}

static void *victim(void *arg)
{
	if (pin((int)(intptr_t)arg) < 0)
		return NULL;
	while (!stop) {
		(void)page[0];
		(void)page[5 * 64];
	}
	return NULL;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Threshold between a cached and a flushed reload of a private line. */
static uint64_t calibrate(const volatile uint8_t *p)
{
	static uint64_t hit[1001], miss[1001];
	for (int i = 0; i < 1001; i++) {
		(void)*p;
		hit[i] = mv_reload_cycles(p);
	}
	for (int i = 0; i < 1001; i++) {
		_mm_clflush((const void *)p);
		_mm_mfence();
		miss[i] = mv_reload_cycles(p);
	}
	qsort(hit, 1001, sizeof(hit[0]), mv_cmp_u64);
	qsort(miss, 1001, sizeof(miss[0]), mv_cmp_u64);
	return (hit[500] + miss[500]) / 2;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: cache_probe CPU_A CPU_B MS\n");
		return 2;
	}
	int a = atoi(argv[1]), b = atoi(argv[2]), ms = atoi(argv[3]);
	uint8_t *mem = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED || pin(b) < 0) {
		perror("cache_probe");
		return 1;
	}
	for (int i = 0; i < 8192; i++)
		mem[i] = (uint8_t)i;
	page = mem;
	uint64_t thr = calibrate(mem + 4096);
	pthread_t t;
	if (pthread_create(&t, NULL, victim, (void *)(intptr_t)a) != 0)
		return 1;
	uint64_t hits[LINES] = {0}, reps = 0, seed = 88172645463325252ULL;
	uint64_t end = now_ms() + (uint64_t)ms;
	while (now_ms() < end) {
		for (int r = 0; r < 1000; r++, reps++) {
			unsigned order[LINES];
			for (unsigned k = 0; k < LINES; k++)
				order[k] = k;
			for (unsigned k = LINES - 1; k > 0; k--) {
				seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
				unsigned j = (unsigned)(seed % (k + 1)), x = order[k];
				order[k] = order[j];
				order[j] = x;
			}
			for (unsigned l = 0; l < LINES; l++)
				_mm_clflush((const void *)(page + l * 64));
			_mm_mfence();
			for (volatile int s = 0; s < 300; s++)
				;
			for (unsigned k = 0; k < LINES; k++)
				hits[order[k]] += mv_reload_cycles(page + order[k] * 64) < thr;
		}
	}
	stop = 1;
	pthread_join(t, NULL);
	double rate[LINES], quiet[LINES - 2];
	int n = 0;
	for (int l = 0; l < LINES; l++) {
		rate[l] = (double)hits[l] / (double)reps;
		if (l != 0 && l != 5)
			quiet[n++] = rate[l];
	}
	for (int i = 1; i < n; i++)
		for (int k = i; k > 0 && quiet[k - 1] > quiet[k]; k--) {
			double x = quiet[k];
			quiet[k] = quiet[k - 1];
			quiet[k - 1] = x;
		}
	double base = quiet[n / 2], d0 = rate[0] - base, d5 = rate[5] - base;
	d0 = d0 < 0 ? -d0 : d0;
	d5 = d5 < 0 ? -d5 : d5;
	printf("{\"touched\": [%.3f, %.3f], \"untouched\": %.3f, \"visible\": %.3f, \"reps\": %llu}\n",
	       rate[0], rate[5], base, d0 > d5 ? d0 : d5, (unsigned long long)reps);
	return 0;
}
#else
int main(void)
{
	fprintf(stderr, "cache_probe: x86-64 only\n");
	return 77;
}
#endif
