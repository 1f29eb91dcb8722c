/* The memtouch workload: each op overwrites one whole 4 KiB page of the
 * vCPU's slice with content derived from (seed, page, version), version
 * being how many times the page has been written. Pages are chosen
 * sequentially, uniformly, or hot-cold (hot_pct % of ops on the first 10 %
 * of the slice). It is the dirty-page generator that migration tests and
 * benchmarks use, through mv_wl_ops_of(MV_WL_MEMTOUCH). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "prng.h"
#include "vm_i.h"

#define MT_MAGIC 0x3148435554544d4dULL /* "MMTTUCH1" */
#define MT_WORDS (MV_WL_PAGE / 8)
#define MT_HDR_WORDS 8
#define MT_STEP 0xD1342543DE82EF95ULL /* odd: consecutive words always differ */

/* Header words at the start of every written page. */
enum { H_MAGIC, H_GPA, H_VERSION, H_OP, H_SUM };

static uint64_t npages_of(const struct mv_wl_state *st)
{
	return st->gpa_len / MV_WL_PAGE;
}

/* The page op i writes: a pure function of (seed, i), so verify can replay it. */
static uint64_t page_of(const struct mv_wl_state *st, uint64_t npages, uint64_t i)
{
	if (st->p.pattern == MV_PAT_SEQ)
		return i % npages;
	uint64_t r = mv_prng_at(st->seed ^ MV_STREAM_PAGE, i);
	if (st->p.pattern == MV_PAT_RANDOM)
		return mv_prng_below(r, npages);
	uint64_t hot = npages / 10 ? npages / 10 : 1;
	uint64_t r2 = mv_mix64(r);
	if (mv_prng_below(r, 100) < st->p.hot_pct || npages == hot)
		return mv_prng_below(r2, hot);
	return hot + mv_prng_below(r2, npages - hot);
}

static uint64_t body_base(const struct mv_wl_state *st, uint64_t gpa, uint64_t version)
{
	return mv_mix3(st->seed ^ MV_STREAM_FILL, gpa / MV_WL_PAGE, version);
}

static uint64_t header_sum(const uint64_t *w)
{
	return mv_mix64(w[H_MAGIC] ^ mv_mix64(w[H_GPA] ^ mv_mix64(w[H_VERSION] ^ mv_mix64(w[H_OP]))));
}

static void fill_page(uint64_t *w, const struct mv_wl_state *st, uint64_t gpa, uint64_t version,
		      uint64_t op)
{
	w[H_MAGIC] = MT_MAGIC;
	w[H_GPA] = gpa;
	w[H_VERSION] = version;
	w[H_OP] = op;
	w[H_SUM] = header_sum(w);
	w[5] = w[6] = w[7] = 0;
	/* An arithmetic sequence: vectorizes, so a page costs about a memset. */
	uint64_t v = body_base(st, gpa, version);
	for (uint64_t j = MT_HDR_WORDS; j < MT_WORDS; j++)
		w[j] = v + j * MT_STEP;
}

static int mt_init(struct mv_wl_state *st, struct mv_guest_mem *m, struct mv_error **err)
{
	uint8_t *hva = mv_wl_slice(st, m);
	if (!hva || npages_of(st) == 0)
		return mv_err(err, -EFAULT, "vcpu %u: slice gpa 0x%llx+0x%llx is not mapped guest RAM",
			      st->vcpu, (unsigned long long)st->gpa_base,
			      (unsigned long long)st->gpa_len);
	mv_wl_zero(hva, st->gpa_len);
	st->ops_done = 0;
	memset(st->aux, 0, sizeof(st->aux));
	return 0;
}

static int64_t mt_step(struct mv_wl_state *st, struct mv_guest_mem *m, uint64_t max_ops)
{
	uint8_t *hva = mv_wl_slice(st, m);
	uint64_t npages = npages_of(st);
	if (!hva || npages == 0)
		return -EFAULT;
	uint64_t next = page_of(st, npages, st->ops_done);
	for (uint64_t k = 0; k < max_ops; k++) {
		uint64_t i = st->ops_done;
		uint64_t p = next;
		/* The version read is a cache miss on random pages: start the next early. */
		next = page_of(st, npages, i + 1);
		__builtin_prefetch(hva + next * MV_WL_PAGE, 1);
		uint64_t *w = (uint64_t *)(hva + p * MV_WL_PAGE);
		uint64_t gpa = st->gpa_base + p * MV_WL_PAGE;
		/* The current version lives in guest RAM, not in the state. */
		uint64_t version = (w[H_MAGIC] == MT_MAGIC ? w[H_VERSION] : 0) + 1;
		fill_page(w, st, gpa, version, i);
		st->ops_done = i + 1;
	}
	return (int64_t)max_ops;
}

/* Expected version of every page after ops_done ops. */
static uint64_t *expected_versions(const struct mv_wl_state *st, uint64_t npages)
{
	/* 64-bit counts: a one-page slice can pass 2^32 writes in minutes. */
	uint64_t *ver = calloc(npages, sizeof(*ver));
	if (!ver)
		return NULL;
	if (st->p.pattern == MV_PAT_SEQ) {
		uint64_t full = st->ops_done / npages, rest = st->ops_done % npages;
		for (uint64_t p = 0; p < npages; p++)
			ver[p] = full + (p < rest);
		return ver;
	}
	for (uint64_t i = 0; i < st->ops_done; i++)
		ver[page_of(st, npages, i)]++;
	return ver;
}

static const uint64_t *first_nonzero(const uint64_t *w, uint64_t n)
{
	for (uint64_t j = 0; j < n; j++)
		if (w[j])
			return &w[j];
	return NULL;
}

static int check_page(const struct mv_wl_state *st, const uint64_t *w, uint64_t p,
		      uint64_t npages, uint64_t want, struct mv_error **err)
{
	unsigned long long gpa = st->gpa_base + p * MV_WL_PAGE;
	if (want == 0) {
		const uint64_t *nz = first_nonzero(w, MT_WORDS);
		if (!nz)
			return 0;
		return mv_err(err, -EIO,
			      "vcpu %u page gpa 0x%llx: never written but not zero at offset %zu",
			      st->vcpu, gpa, (size_t)(nz - w) * 8 + (size_t)__builtin_ctzll(*nz) / 8);
	}
	if (w[H_MAGIC] != MT_MAGIC)
		return mv_err(err, -EIO, "vcpu %u page gpa 0x%llx: bad magic 0x%llx (version %llu expected)",
			      st->vcpu, gpa, (unsigned long long)w[H_MAGIC], (unsigned long long)want);
	if (w[H_VERSION] != want)
		return mv_err(err, -EIO, "vcpu %u page gpa 0x%llx: version %llu expected %llu",
			      st->vcpu, gpa, (unsigned long long)w[H_VERSION],
			      (unsigned long long)want);
	if (w[H_GPA] != gpa || w[H_SUM] != header_sum(w) || w[5] || w[6] || w[7])
		return mv_err(err, -EIO, "vcpu %u page gpa 0x%llx: header corrupt", st->vcpu, gpa);
	if (w[H_OP] >= st->ops_done || page_of(st, npages, w[H_OP]) != p)
		return mv_err(err, -EIO, "vcpu %u page gpa 0x%llx: op %llu did not write this page",
			      st->vcpu, gpa, (unsigned long long)w[H_OP]);
	uint64_t v = body_base(st, gpa, want);
	for (uint64_t j = MT_HDR_WORDS; j < MT_WORDS; j++) {
		if (w[j] == v + j * MT_STEP)
			continue;
		uint64_t x = w[j] ^ (v + j * MT_STEP);
		size_t off = j * 8 + (size_t)__builtin_ctzll(x) / 8;
		return mv_err(err, -EIO,
			      "vcpu %u page gpa 0x%llx (version %llu): content differs at offset %zu",
			      st->vcpu, gpa, (unsigned long long)want, off);
	}
	return 0;
}

static int mt_verify(const struct mv_wl_state *st, struct mv_guest_mem *m, struct mv_error **err)
{
	const uint8_t *hva = mv_wl_slice(st, m);
	uint64_t npages = npages_of(st);
	if (st->kind != MV_WL_MEMTOUCH || !hva || npages == 0)
		return mv_err(err, -EIO, "vcpu %u: memtouch state is corrupt (kind %u, slice 0x%llx+0x%llx)",
			      st->vcpu, st->kind, (unsigned long long)st->gpa_base,
			      (unsigned long long)st->gpa_len);
	uint64_t *ver = expected_versions(st, npages);
	if (!ver)
		return mv_err(err, -ENOMEM, "vcpu %u: no memory for %llu page versions", st->vcpu,
			      (unsigned long long)npages);
	int r = 0;
	for (uint64_t p = 0; p < npages && r == 0; p++)
		r = check_page(st, (const uint64_t *)(hva + p * MV_WL_PAGE), p, npages, ver[p], err);
	free(ver);
	return r;
}

const struct mv_wl_ops mv_wl_memtouch_ops = {
	.name = "memtouch",
	.init = mt_init,
	.step = mt_step,
	.verify = mt_verify,
};
