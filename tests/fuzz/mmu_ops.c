/* libFuzzer target: random sequences of map/unmap/protect/walk/query on
 * 4- or 5-level, optionally replicated page tables, each checked against the
 * reference model (tests/unit/mmu/ref_model.h) and the replica invariant
 * checker. Any divergence aborts. Built by tests/fuzz/meson.build. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/mmu.h"
#include "../unit/mmu/ref_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct in {
	const uint8_t *p;
	size_t n;
};

static uint64_t take(struct in *in, unsigned bytes)
{
	uint64_t v = 0;
	for (unsigned i = 0; i < bytes && in->n; i++, in->p++, in->n--)
		v |= (uint64_t)*in->p << (8 * i);
	return v;
}

static uint64_t pick_va(struct in *in, unsigned levels)
{
	static const uint64_t b4[] = { 0, 0x00007fffc0000000ULL, 0xffff800000000000ULL,
				       0xffffffffc0000000ULL, 0x0000800000000000ULL };
	static const uint64_t b5[] = { 0, 0x00ffffffc0000000ULL, 0xff00000000000000ULL,
				       0xffffffffc0000000ULL, 0x0100000000000000ULL };
	unsigned sel = (unsigned)take(in, 1);
	uint64_t off = take(in, 4) << 12;   /* up to 16 TiB of offsets, 4K granular */
	if (sel == 0xff)
		return take(in, 8);             /* raw: misaligned, non-canonical, anything */
	return (levels == 5 ? b5 : b4)[sel % 5] + (off % (4ULL << 30));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in in = { data, size };
	unsigned hdr = (unsigned)take(&in, 1);
	unsigned levels = hdr & 1 ? 5 : 4, replicas = 1 + (hdr >> 1) % 3;
	unsigned maxphy = 36 + (unsigned)(take(&in, 1) % 17);
	struct mv_mmu_pool *pool;
	struct mv_mmu_pt *pt;
	struct mv_mmu_pool_config pc = { .pages_per_node = 4096, .nodes = replicas };
	if (mv_mmu_pool_create(&pc, &pool, NULL))
		abort();
	struct mv_mmu_pt_config c = { .levels = levels, .maxphyaddr = maxphy, .replicas = replicas,
				      .ops = mv_mmu_pool_ops(), .ops_ctx = pool };
	if (mv_mmu_pt_create(&c, &pt, NULL))
		abort();
	struct ref_model ref = { .levels = levels, .maxphy = maxphy };
	static const uint64_t ps_tab[] = { MV_MMU_4K, MV_MMU_2M, MV_MMU_1G, 0x3000 };
	for (unsigned ops = 0; in.n && ops < 64; ops++) {
		unsigned op = (unsigned)take(&in, 1);
		uint64_t va = pick_va(&in, levels);
		int got, want;
		switch (op % 4) {
		case 0: {
			uint64_t ps = ps_tab[take(&in, 1) % 4];
			uint64_t n = 1 + take(&in, 1) % 16;
			uint64_t pa = take(&in, 7) & ~0xfffULL;
			uint64_t fl = take(&in, 8) & (REF_FLAGS | (op & 0x80 ? MV_MMU_PTE_PS : 0));
			if (ps != 0x3000 && !(op & 0x40))
				va &= ~(ps - 1), pa &= ~(ps - 1);
			want = ref_map(&ref, va, pa, n * ps, ps, fl);
			got = mv_mmu_map(pt, va, pa, n * ps, ps, fl, NULL);
			break;
		}
		case 1: {
			uint64_t len = (take(&in, 2) % 1024) << 12;
			want = ref_unmap(&ref, va, len);
			got = mv_mmu_unmap(pt, va, len, NULL);
			break;
		}
		case 2: {
			uint64_t len = (take(&in, 2) % 1024) << 12;
			uint64_t fl = take(&in, 8) & (REF_FLAGS | (op & 0x80 ? 1 : 0));
			want = ref_protect(&ref, va, len, fl);
			got = mv_mmu_protect(pt, va, len, fl, NULL);
			break;
		}
		default: {
			unsigned acc = (unsigned)take(&in, 4) & (MV_MMU_ACC_WRITE | MV_MMU_ACC_USER |
				MV_MMU_ACC_EXEC | MV_MMU_CTL_WP | MV_MMU_CTL_NXE | MV_MMU_CTL_SMEP |
				MV_MMU_CTL_SMAP | MV_MMU_CTL_AC | MV_MMU_CTL_NO_AD);
			va += take(&in, 2);
			struct ref_result rr = ref_walk(&ref, va, acc);
			struct mv_mmu_xlat x;
			struct mv_mmu_fault f = { 0 };
			got = mv_mmu_walk(pt, (unsigned)(op >> 2) % replicas, va, acc, &x, &f);
			if (rr.kind == MV_MMU_FAULT_NONE ? (got || x.pa != rr.pa || x.page_size != rr.size)
			    : (got != -EFAULT || f.kind != rr.kind ||
			       (rr.kind != MV_MMU_FAULT_NON_CANONICAL && f.level != rr.level)))
				abort();
			struct ref_map *m = ref_canon(&ref, va) ? ref_find(&ref, va) : NULL;
			if (m && (mv_mmu_query(pt, va, &x) || x.flags != m->flags))
				abort();
			want = got;
			break;
		}
		}
		if (got != want)
			abort();
		if (mv_mmu_pt_check(pt, NULL))
			abort();
	}
	ref_free(&ref);
	mv_mmu_pt_destroy(pt);
	if (mv_mmu_pool_used(pool))
		abort();   /* every table page came back */
	mv_mmu_pool_destroy(pool);
	return 0;
}
