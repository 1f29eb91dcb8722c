/* The "flushreload" workload: a Flush+Reload attacker. Its slice holds the
 * public page (page 0, the same bytes as the "secret" victim's page 1, so
 * fusion maps both VMs onto one physical page), a private calibration page
 * (page 1) and a control page. Before its first round it measures reload
 * times of a cached and of a flushed line on the private page (cycles,
 * rdtscp) and puts the hit/miss threshold between the medians. A round (one
 * op) repeats REPS times: clflush every line of the public page, let the
 * victim run a moment, reload each line timed and count hits per line; then
 * guesses secret bit i as "line 2i+1 was hit more often than line 2i" (ties:
 * a coin from the seed). While the page is shared the victim's accesses
 * show; once it is not, every reload misses and guesses are coins.
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
#endif

#define FR_MAGIC 0x31444c5248535546ULL   /* "FUSHRLD1" */
#define LINES 64
#define LINE 64
#define REPS 2000
#define CALIB 2001
#define COIN_STREAM 0x434f494e53545231ULL

struct fr_ctl {
	uint64_t magic;
	uint64_t thr;          /* cycles: a reload faster than this hit the cache */
	uint64_t round;
	uint32_t hits[LINES];
};

#if defined(__x86_64__)
static uint64_t reload(const volatile uint8_t *p)
{
	unsigned aux;
	_mm_mfence();
	uint64_t t0 = __rdtscp(&aux);
	(void)*p;
	uint64_t t1 = __rdtscp(&aux);
	_mm_lfence();
	return t1 - t0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void calibrate(struct mv_wl_state *st, struct fr_ctl *c, const volatile uint8_t *priv)
{
	static _Thread_local uint64_t hit[CALIB], miss[CALIB];
	for (unsigned i = 0; i < CALIB; i++) {
		(void)*priv;
		hit[i] = reload(priv);
	}
	for (unsigned i = 0; i < CALIB; i++) {
		_mm_clflush((const void *)priv);
		_mm_mfence();
		miss[i] = reload(priv);
	}
	qsort(hit, CALIB, sizeof(hit[0]), cmp_u64);
	qsort(miss, CALIB, sizeof(miss[0]), cmp_u64);
	uint64_t h = hit[CALIB / 2], m = miss[CALIB / 2];
	c->thr = h < m ? (h + m) / 2 : 0;   /* 0: no usable gap, every reload a miss */
	st->aux[3] = (h << 32) | (m & 0xffffffffu);
}

static void round_once(struct mv_wl_state *st, struct fr_ctl *c, const volatile uint8_t *pub)
{
	memset(c->hits, 0, sizeof(c->hits));
	for (unsigned r = 0; r < REPS; r++) {
		for (unsigned l = 0; l < LINES; l++)
			_mm_clflush((const void *)(pub + l * LINE));
		_mm_mfence();
		for (volatile unsigned s = 0; s < 300; s++)
			;
		for (unsigned k = 0; k < LINES; k++) {
			unsigned l = (k * 37) % LINES;   /* defeat the prefetcher's stride */
			if (reload(pub + l * LINE) < c->thr)
				c->hits[l]++;
		}
	}
	uint32_t bits = mv_secret_bits(st->p.seed);
	uint64_t correct = 0;
	for (unsigned i = 0; i < MV_SECRET_BITS; i++) {
		uint32_t h0 = c->hits[2 * i], h1 = c->hits[2 * i + 1];
		unsigned guess = h1 > h0 ? 1
			       : h0 > h1 ? 0
			       : (unsigned)(mv_mix3(st->p.seed ^ COIN_STREAM, c->round, i) & 1);
		correct += guess == ((bits >> i) & 1);
	}
	st->aux[0]++;
	st->aux[1] += MV_SECRET_BITS;
	st->aux[2] += correct;
	c->round++;
}
#endif

static struct fr_ctl *ctl_of(uint8_t *hva)
{
	return (struct fr_ctl *)(hva + 2 * MV_WL_PAGE);
}

static int fr_init(struct mv_wl_state *st, struct mv_guest_mem *m, struct mv_error **err)
{
#if !defined(__x86_64__)
	return mv_err(err, -ENOTSUP, "flushreload needs x86-64 (clflush, rdtscp)");
#endif
	uint8_t *hva = mv_wl_slice(st, m);
	if (!hva || st->gpa_len < 3 * MV_WL_PAGE)
		return mv_err(err, -EINVAL, "vcpu %u: flushreload needs 3 pages of working set",
			      st->vcpu);
	mv_wl_zero(hva, st->gpa_len);
	mv_public_page_fill((uint64_t *)hva);
	uint64_t *priv = (uint64_t *)(hva + MV_WL_PAGE);
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
		calibrate(st, c, hva + MV_WL_PAGE);
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
	if (st->kind != MV_WL_FLUSHRELOAD || !hva || st->gpa_len < 3 * MV_WL_PAGE ||
	    ctl_of(hva)->magic != FR_MAGIC || st->aux[2] > st->aux[1] ||
	    st->aux[1] != st->aux[0] * MV_SECRET_BITS)
		return mv_err(err, -EIO, "vcpu %u: flushreload state is corrupt", st->vcpu);
	static _Thread_local uint64_t want[MV_WL_PAGE / 8];
	mv_public_page_fill(want);
	if (memcmp(hva, want, MV_WL_PAGE) != 0)
		return mv_err(err, -EIO, "vcpu %u: the public page changed", st->vcpu);
	return 0;
}

const struct mv_wl_ops mv_wl_flushreload_ops = {
	.name = "flushreload",
	.init = fr_init,
	.step = fr_step,
	.verify = fr_verify,
};
