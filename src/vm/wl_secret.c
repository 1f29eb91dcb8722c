/* The "secret" workload: the victim of the side-channel attack tests. Its
 * slice holds the secret page (page 0, content from the seed: what a dedup
 * write-probe attacker guesses) and two public pages (pages 1-2, the same
 * bytes in every VM, so fusion merges them with an attacker's copies). Each
 * op reads, for every secret bit i, cache line 2(i % 16) + bit of public
 * page i / 16: secret-dependent accesses a Flush+Reload attacker sharing the
 * pages can observe.
 * Reads only, so the fused pages stay fused. aux[0] counts sweeps. */
#include <errno.h>
#include <string.h>
#include "prng.h"
#include "vm_i.h"

#define SECRET_STREAM 0x5345435245545047ULL  /* "SECRETPG" */
#define BITS_STREAM 0x5345435245544249ULL    /* "SECRETBI" */
#define PUBLIC_SEED 0x5055424c49435047ULL    /* "PUBLICPG": the same in every VM */
#define LINE 64

void mv_secret_page_fill(uint64_t *w, uint64_t seed)
{
	for (uint64_t j = 0; j < MV_WL_PAGE / 8; j++)
		w[j] = mv_prng_at(seed ^ SECRET_STREAM, j);
}

void mv_public_page_fill(uint64_t *w, unsigned idx)
{
	for (uint64_t j = 0; j < MV_WL_PAGE / 8; j++)
		w[j] = mv_prng_at(PUBLIC_SEED + idx, j);
}

uint32_t mv_secret_bits(uint64_t seed)
{
	return (uint32_t)mv_mix64(seed ^ BITS_STREAM);
}

static int secret_init(struct mv_wl_state *st, struct mv_guest_mem *m, struct mv_error **err)
{
	uint8_t *hva = mv_wl_slice(st, m);
	if (!hva || st->gpa_len < (1 + MV_PUBLIC_PAGES) * MV_WL_PAGE)
		return mv_err(err, -EINVAL, "vcpu %u: secret needs 3 pages of working set", st->vcpu);
	mv_wl_zero(hva, st->gpa_len);
	mv_secret_page_fill((uint64_t *)hva, st->p.seed);
	for (unsigned k = 0; k < MV_PUBLIC_PAGES; k++)
		mv_public_page_fill((uint64_t *)(hva + (1 + k) * MV_WL_PAGE), k);
	st->ops_done = 0;
	memset(st->aux, 0, sizeof(st->aux));
	return 0;
}

static int64_t secret_step(struct mv_wl_state *st, struct mv_guest_mem *m, uint64_t max_ops)
{
	const volatile uint8_t *pub = mv_wl_slice(st, m);
	if (!pub)
		return -EINVAL;
	pub += MV_WL_PAGE;
	uint32_t bits = mv_secret_bits(st->p.seed);
	for (uint64_t op = 0; op < max_ops; op++) {
		for (unsigned i = 0; i < MV_SECRET_BITS; i++)
			(void)pub[(i / MV_BITS_PER_PAGE) * MV_WL_PAGE +
				  (2 * (i % MV_BITS_PER_PAGE) + ((bits >> i) & 1)) * LINE];
		st->ops_done++;
		st->aux[0]++;
	}
	return (int64_t)max_ops;
}

static int secret_verify(const struct mv_wl_state *st, struct mv_guest_mem *m,
			 struct mv_error **err)
{
	const uint8_t *hva = mv_wl_slice(st, m);
	if (st->kind != MV_WL_SECRET || !hva || st->gpa_len < (1 + MV_PUBLIC_PAGES) * MV_WL_PAGE)
		return mv_err(err, -EIO, "vcpu %u: secret state is corrupt", st->vcpu);
	static _Thread_local uint64_t want[MV_WL_PAGE / 8];
	mv_secret_page_fill(want, st->p.seed);
	if (memcmp(hva, want, MV_WL_PAGE) != 0)
		return mv_err(err, -EIO, "vcpu %u: the secret page changed", st->vcpu);
	for (unsigned k = 0; k < MV_PUBLIC_PAGES; k++) {
		mv_public_page_fill(want, k);
		if (memcmp(hva + (1 + k) * MV_WL_PAGE, want, MV_WL_PAGE) != 0)
			return mv_err(err, -EIO, "vcpu %u: public page %u changed", st->vcpu, k);
	}
	return 0;
}

const struct mv_wl_ops mv_wl_secret_ops = {
	.name = "secret",
	.init = secret_init,
	.step = secret_step,
	.verify = secret_verify,
};
