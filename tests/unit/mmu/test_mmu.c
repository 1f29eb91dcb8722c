/* Unit tests for src/mmu page tables and walker: hand-checked SDM vectors for
 * 4- and 5-level paging, bad input, A/D atomicity, and a randomized
 * differential test against tests/unit/mmu/ref_model.h over millions of
 * translations (scaled down under sanitizers or with MV_MMU_TEST_SCALE). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "memvisor/mmu.h"
#include "ref_model.h"
#include "test_common.h"

/* ---- hand-built tables: the SDM layout checked bit by bit ---------------- */

struct hand {
	struct mv_mmu_pool *pool;
	struct mv_mmu_pt *pt;
	uint64_t t[6];       /* table pa per level (t[levels] = root) */
};

static uint64_t *slot(struct hand *h, unsigned level, unsigned idx)
{
	return (uint64_t *)mv_mmu_pool_ptr(h->pool, h->t[level] + idx * 8ULL);
}

/* Builds root..PT for va by hand: every non-leaf entry P|RW|US. */
static void hand_build(struct hand *h, unsigned levels, unsigned maxphy, const unsigned *idx)
{
	struct mv_mmu_pool_config pc = { .pages_per_node = 64, .nodes = 1 };
	assert_int_equal(mv_mmu_pool_create(&pc, &h->pool, NULL), 0);
	const struct mv_mmu_phys_ops *ops = mv_mmu_pool_ops();
	for (unsigned l = 1; l <= levels; l++)
		assert_int_equal(ops->alloc_table(h->pool, 0, &h->t[l]), 0);
	for (unsigned l = levels; l > 1; l--)
		*slot(h, l, idx[l]) = h->t[l - 1] | 0x7;  /* P RW US */
	struct mv_mmu_pt_config c = { .levels = levels, .maxphyaddr = maxphy, .ops = ops,
				      .ops_ctx = h->pool, .root = h->t[levels] };
	assert_int_equal(mv_mmu_pt_create(&c, &h->pt, NULL), 0);
}

static void hand_free(struct hand *h)
{
	mv_mmu_pt_destroy(h->pt);
	mv_mmu_pool_destroy(h->pool);
}

#define U MV_MMU_ACC_USER
#define W MV_MMU_ACC_WRITE
#define X MV_MMU_ACC_EXEC
#define DEF MV_MMU_CTL_DEFAULT

static void expect_fault(struct mv_mmu_pt *pt, uint64_t va, unsigned acc,
			 enum mv_mmu_fault_kind kind, unsigned level, uint32_t pf)
{
	struct mv_mmu_xlat x;
	struct mv_mmu_fault f;
	assert_int_equal(mv_mmu_walk(pt, 0, va, acc, &x, &f), -EFAULT);
	assert_int_equal(f.kind, kind);
	if (kind != MV_MMU_FAULT_NON_CANONICAL)
		assert_int_equal(f.level, level);
	assert_int_equal(f.pf_error, pf);
	assert_int_equal(f.stage, 1);
}

static void test_sdm_4level(void **s)
{
	/* VA 0x00007f1234567abc: PML4 254, PDPT 72, PD 418, PT 359, offset 0xabc */
	const uint64_t va = 0x00007f1234567abcULL;
	const unsigned idx[6] = { 0, 359, 418, 72, 254, 0 };
	struct hand h;
	hand_build(&h, 4, 52, idx);
	struct mv_mmu_xlat x;
	struct mv_mmu_fault f;

	/* not present at level 1: user write -> error code U|W, P=0 */
	expect_fault(h.pt, va, U | W | DEF, MV_MMU_FAULT_NOT_PRESENT, 1, 0x6);

	*slot(&h, 1, 359) = 0x0000001234567000ULL | 0x7;  /* P RW US */
	assert_int_equal(mv_mmu_walk(h.pt, 0, va, U | DEF, &x, &f), 0);
	assert_int_equal(x.pa, 0x1234567abcULL);
	assert_int_equal(x.page_size, MV_MMU_4K);
	assert_int_equal(x.level, 1);
	assert_int_equal(x.perms, MV_MMU_PERM_W | MV_MMU_PERM_U | MV_MMU_PERM_X);
	/* read: A in all four entries, no D */
	assert_int_equal(*slot(&h, 4, 254), h.t[3] | 0x27);
	assert_int_equal(*slot(&h, 3, 72), h.t[2] | 0x27);
	assert_int_equal(*slot(&h, 2, 418), h.t[1] | 0x27);
	assert_int_equal(*slot(&h, 1, 359), 0x1234567000ULL | 0x27);
	/* write: D only in the leaf */
	assert_int_equal(mv_mmu_walk(h.pt, 0, va, U | W | DEF, &x, &f), 0);
	assert_int_equal(*slot(&h, 1, 359), 0x1234567000ULL | 0x67);
	assert_int_equal(*slot(&h, 2, 418), h.t[1] | 0x27);
	assert_true(x.perms & MV_MMU_PERM_D);

	/* NX in the PDE: exec faults (P|I), read fine; with NXE=0 bit 63 is reserved */
	*slot(&h, 2, 418) |= MV_MMU_PTE_NX;
	expect_fault(h.pt, va, X | DEF, MV_MMU_FAULT_PERMISSION, 1, 0x11);
	assert_int_equal(mv_mmu_walk(h.pt, 0, va, DEF, &x, &f), 0);
	assert_false(x.perms & MV_MMU_PERM_X);
	expect_fault(h.pt, va, MV_MMU_CTL_WP, MV_MMU_FAULT_RESERVED, 2, 0x9);
	*slot(&h, 2, 418) &= ~MV_MMU_PTE_NX;

	/* U/S=0 in the PML4E: user access faults, supervisor fine */
	*slot(&h, 4, 254) &= ~MV_MMU_PTE_US;
	expect_fault(h.pt, va, U | DEF, MV_MMU_FAULT_PERMISSION, 1, 0x5);
	assert_int_equal(mv_mmu_walk(h.pt, 0, va, DEF, &x, &f), 0);
	assert_false(x.perms & MV_MMU_PERM_U);
	*slot(&h, 4, 254) |= MV_MMU_PTE_US;

	/* R/W=0 in the PDPTE: WP decides supervisor writes */
	*slot(&h, 3, 72) &= ~MV_MMU_PTE_RW;
	expect_fault(h.pt, va, U | W | DEF, MV_MMU_FAULT_PERMISSION, 1, 0x7);
	expect_fault(h.pt, va, W | DEF, MV_MMU_FAULT_PERMISSION, 1, 0x3);
	assert_int_equal(mv_mmu_walk(h.pt, 0, va, W | MV_MMU_CTL_NXE, &x, &f), 0);
	*slot(&h, 3, 72) |= MV_MMU_PTE_RW;

	/* SMAP / SMEP on a user page, supervisor access */
	expect_fault(h.pt, va, DEF | MV_MMU_CTL_SMAP, MV_MMU_FAULT_PERMISSION, 1, 0x1);
	assert_int_equal(mv_mmu_walk(h.pt, 0, va, DEF | MV_MMU_CTL_SMAP | MV_MMU_CTL_AC, &x, &f), 0);
	expect_fault(h.pt, va, X | DEF | MV_MMU_CTL_SMEP, MV_MMU_FAULT_PERMISSION, 1, 0x11);
	assert_int_equal(mv_mmu_walk(h.pt, 0, va, X | DEF, &x, &f), 0);

	/* 2 MiB page in the PDE; bits 20:13 reserved; PAT at bit 12 */
	*slot(&h, 2, 418) = 0x0000000040000000ULL | MV_MMU_PTE_PS | MV_MMU_PTE_PAT_LARGE | 0x3;
	assert_int_equal(mv_mmu_walk(h.pt, 0, va, DEF, &x, &f), 0);
	assert_int_equal(x.pa, 0x40000000ULL + (va & 0x1fffff));
	assert_int_equal(x.page_size, MV_MMU_2M);
	assert_int_equal(x.level, 2);
	assert_true(x.flags & MV_MMU_PTE_PAT);
	*slot(&h, 2, 418) |= 1ULL << 13;
	expect_fault(h.pt, va, DEF, MV_MMU_FAULT_RESERVED, 2, 0x9);

	/* 1 GiB page in the PDPTE; bits 29:13 reserved */
	*slot(&h, 3, 72) = 0x0000000080000000ULL | MV_MMU_PTE_PS | 0x7;
	assert_int_equal(mv_mmu_walk(h.pt, 0, va, U | DEF, &x, &f), 0);
	assert_int_equal(x.pa, 0x80000000ULL + (va & 0x3fffffff));
	assert_int_equal(x.page_size, MV_MMU_1G);
	*slot(&h, 3, 72) |= 1ULL << 20;
	expect_fault(h.pt, va, U | DEF, MV_MMU_FAULT_RESERVED, 3, 0xd);

	/* PS in a PML4E is reserved */
	uint64_t keep = *slot(&h, 4, 254);
	*slot(&h, 4, 254) |= MV_MMU_PTE_PS;
	expect_fault(h.pt, va, DEF, MV_MMU_FAULT_RESERVED, 4, 0x9);
	*slot(&h, 4, 254) = keep;

	/* not present at level 4 */
	expect_fault(h.pt, 0x1000, U | DEF, MV_MMU_FAULT_NOT_PRESENT, 4, 0x4);
	/* non-canonical in 48 bits (canonical in 57) */
	expect_fault(h.pt, 0x0000800000000000ULL, DEF, MV_MMU_FAULT_NON_CANONICAL, 0, 0);
	expect_fault(h.pt, 0xfff0000000000000ULL, DEF, MV_MMU_FAULT_NON_CANONICAL, 0, 0);
	hand_free(&h);

	/* MAXPHYADDR 36: address bit 40 in a PTE is reserved */
	hand_build(&h, 4, 36, idx);
	*slot(&h, 1, 359) = (1ULL << 40) | 0x1000 | 0x7;
	expect_fault(h.pt, va, U | DEF, MV_MMU_FAULT_RESERVED, 1, 0xd);
	*slot(&h, 1, 359) = (1ULL << 35) | 0x1000 | 0x7;
	assert_int_equal(mv_mmu_walk(h.pt, 0, va, U | DEF, &x, &f), 0);
	assert_int_equal(x.pa, (1ULL << 35) | 0x1abc);
	hand_free(&h);
}

static void test_sdm_5level(void **s)
{
	/* VA 0xff00123456789abc: PML5 256, PML4 36, PDPT 209, PD 179, PT 393 */
	const uint64_t va = 0xff00123456789abcULL;
	const unsigned idx[6] = { 0, 393, 179, 209, 36, 256 };
	struct hand h;
	hand_build(&h, 5, 52, idx);
	struct mv_mmu_xlat x;
	struct mv_mmu_fault f;
	expect_fault(h.pt, va, DEF, MV_MMU_FAULT_NOT_PRESENT, 1, 0);
	*slot(&h, 1, 393) = 0x000fffffff000000ULL | MV_MMU_PTE_G | 0x3; /* top of 52-bit PA */
	assert_int_equal(mv_mmu_walk(h.pt, 0, va, W | DEF, &x, &f), 0);
	assert_int_equal(x.pa, 0x000fffffff000abcULL);
	assert_int_equal(x.perms & (MV_MMU_PERM_U | MV_MMU_PERM_G), MV_MMU_PERM_G);
	assert_int_equal(*slot(&h, 5, 256), h.t[4] | 0x27);
	assert_int_equal(*slot(&h, 1, 393), 0x000fffffff000000ULL | MV_MMU_PTE_G | 0x63);
	/* supervisor-only page: user read faults at the leaf's walk end */
	expect_fault(h.pt, va, U | DEF, MV_MMU_FAULT_PERMISSION, 1, 0x5);
	/* PS in the PML5E is reserved */
	*slot(&h, 5, 256) |= MV_MMU_PTE_PS;
	expect_fault(h.pt, va, DEF, MV_MMU_FAULT_RESERVED, 5, 0x9);
	*slot(&h, 5, 256) &= ~MV_MMU_PTE_PS;
	/* canonical in 57 bits, not present at level 5 */
	expect_fault(h.pt, 0x0000800000000000ULL, DEF, MV_MMU_FAULT_NOT_PRESENT, 5, 0);
	expect_fault(h.pt, 0x0100000000000000ULL, DEF, MV_MMU_FAULT_NON_CANONICAL, 0, 0);
	expect_fault(h.pt, 0xfe00000000000000ULL, DEF, MV_MMU_FAULT_NON_CANONICAL, 0, 0);
	hand_free(&h);
}

/* ---- map/unmap/protect over the builder, and bad input ------------------ */

static void test_bad_input(void **s)
{
	struct mv_mmu_pool *pool;
	struct mv_mmu_pt *pt;
	struct mv_error *e = NULL;
	struct mv_mmu_pool_config pc = { .pages_per_node = 256, .nodes = 1 };
	assert_int_equal(mv_mmu_pool_create(&pc, &pool, NULL), 0);
	struct mv_mmu_pt_config c = { .levels = 3, .ops = mv_mmu_pool_ops(), .ops_ctx = pool };
	assert_int_equal(mv_mmu_pt_create(&c, &pt, &e), -EINVAL);
	assert_string_equal(e->field, "levels");
	mv_error_free(e);
	e = NULL;
	c.levels = 4;
	c.maxphyaddr = 60;
	assert_int_equal(mv_mmu_pt_create(&c, &pt, NULL), -EINVAL);
	c.maxphyaddr = 40;
	assert_int_equal(mv_mmu_pt_create(&c, &pt, NULL), 0);
	uint64_t rw = MV_MMU_PTE_RW;
	assert_int_equal(mv_mmu_map(pt, 0x1000, 0x2000, 0x1000, 8192, rw, NULL), -EINVAL);
	assert_int_equal(mv_mmu_map(pt, 0x1001, 0x2000, 0x1000, MV_MMU_4K, rw, NULL), -EINVAL);
	assert_int_equal(mv_mmu_map(pt, 0x200000, 0x1000, MV_MMU_2M, MV_MMU_2M, rw, NULL), -EINVAL);
	assert_int_equal(mv_mmu_map(pt, 0x1000, 0x2000, 0, MV_MMU_4K, rw, NULL), -EINVAL);
	assert_int_equal(mv_mmu_map(pt, 0x0000800000000000ULL, 0, 0x1000, MV_MMU_4K, rw, NULL), -EINVAL);
	assert_int_equal(mv_mmu_map(pt, 0x00007ffffffff000ULL, 0, 0x2000, MV_MMU_4K, rw, NULL), -EINVAL);
	assert_int_equal(mv_mmu_map(pt, 0x1000, 1ULL << 40, 0x1000, MV_MMU_4K, rw, NULL), -EINVAL);
	assert_int_equal(mv_mmu_map(pt, 0x1000, 0x2000, 0x1000, MV_MMU_4K, MV_MMU_PTE_PS | 1, NULL), -EINVAL);
	assert_int_equal(mv_mmu_map(pt, 0xfffffffffffff000ULL, 0x2000, 0x1000, MV_MMU_4K, rw, NULL), 0);
	assert_int_equal(mv_mmu_map(pt, 0x200000, 0x400000, MV_MMU_2M, MV_MMU_2M, rw, NULL), 0);
	/* overlap: a 4K inside the 2M, and a 2M over existing 4K: nothing changes */
	uint64_t before = mv_mmu_pt_tables(pt);
	assert_int_equal(mv_mmu_map(pt, 0x201000, 0x1000, 0x1000, MV_MMU_4K, rw, &e), -EEXIST);
	assert_non_null(e);
	mv_error_free(e);
	assert_int_equal(mv_mmu_map(pt, 0x0, 0x1000, 0x400000, MV_MMU_4K, rw, NULL), -EEXIST);
	assert_int_equal(mv_mmu_pt_tables(pt), before);
	assert_int_equal(mv_mmu_protect(pt, 0x200000, 0x201000, rw, NULL), -ENOENT);
	assert_int_equal(mv_mmu_unmap(pt, 0x200800, 0x1000, NULL), -EINVAL);
	/* protect half of the 2M page: it splits into 4K pages */
	assert_int_equal(mv_mmu_protect(pt, 0x300000, 0x100000, MV_MMU_PTE_NX, NULL), 0);
	struct mv_mmu_xlat x;
	assert_int_equal(mv_mmu_query(pt, 0x300000, &x), 0);
	assert_int_equal(x.page_size, MV_MMU_4K);
	assert_int_equal(x.pa, 0x500000);
	assert_int_equal(x.flags & (MV_MMU_PTE_NX | MV_MMU_PTE_RW), MV_MMU_PTE_NX);
	assert_int_equal(mv_mmu_query(pt, 0x2ff000, &x), 0);
	assert_int_equal(x.flags & MV_MMU_PTE_RW, MV_MMU_PTE_RW);
	assert_int_equal(mv_mmu_pt_check(pt, NULL), 0);
	assert_int_equal(mv_mmu_unmap(pt, 0, 1ULL << 47, NULL), 0);
	assert_int_equal(mv_mmu_unmap(pt, 0xffff800000000000ULL, 1ULL << 47, NULL), 0);
	assert_int_equal(mv_mmu_pt_tables(pt), 1);
	assert_int_equal(mv_mmu_pt_check(pt, NULL), 0);
	mv_mmu_pt_destroy(pt);
	assert_int_equal(mv_mmu_pool_used(pool), 0);
	/* out of table pages: map fails cleanly and leaves no table behind */
	struct mv_mmu_pool *tiny;
	pc.pages_per_node = 3;
	assert_int_equal(mv_mmu_pool_create(&pc, &tiny, NULL), 0);
	c.ops_ctx = tiny;
	assert_int_equal(mv_mmu_pt_create(&c, &pt, NULL), 0);
	assert_int_equal(mv_mmu_map(pt, 0x1000, 0x1000, 0x1000, MV_MMU_4K, rw, NULL), -ENOMEM);
	assert_int_equal(mv_mmu_pool_used(tiny), 1);
	assert_int_equal(mv_mmu_pt_check(pt, NULL), 0);
	mv_mmu_pt_destroy(pt);
	mv_mmu_pool_destroy(tiny);
	mv_mmu_pool_destroy(pool);
}

/* ---- randomized differential test against the reference model ---------- */

static uint64_t rand_va(struct rng *g, unsigned levels, uint64_t ps)
{
	static const uint64_t b4[] = { 0, 0x00007fff00000000ULL, 0xffff800000000000ULL,
				       0xfffffff000000000ULL };
	static const uint64_t b5[] = { 0, 0x00ffff0000000000ULL, 0xff00000000000000ULL,
				       0xfffffff000000000ULL };
	const uint64_t *b = levels == 5 ? b5 : b4;
	uint64_t v = b[rng_next(g) % 4] + (rng_next(g) % (8ULL << 30));
	if (rng_next(g) % 64 == 0)
		v = rng_next(g);    /* anything, mostly non-canonical */
	return v & ~(ps - 1);
}

static uint64_t rand_flags(struct rng *g)
{
	uint64_t f = rng_next(g) & REF_FLAGS;
	if (rng_next(g) % 4)
		f &= ~MV_MMU_PTE_NX;  /* NX mostly off so NXE=0 walks still succeed */
	return f;
}

static unsigned rand_acc(struct rng *g)
{
	unsigned a = 0, r = (unsigned)rng_next(g);
	if (r & 1) a |= MV_MMU_ACC_WRITE;
	else if (r & 2) a |= MV_MMU_ACC_EXEC;
	if (r & 4) a |= MV_MMU_ACC_USER;
	if (r & 8) a |= MV_MMU_CTL_WP;
	if (r & 16) a |= MV_MMU_CTL_NXE;
	if ((r & 0x60) == 0x60) a |= MV_MMU_CTL_NXE;
	if (r & 0x80) a |= MV_MMU_CTL_SMEP;
	if (r & 0x100) a |= MV_MMU_CTL_SMAP;
	if (r & 0x200) a |= MV_MMU_CTL_AC;
	return a;
}

static void random_run(unsigned levels, unsigned replicas, unsigned maxphy, uint64_t seed,
		       uint64_t rounds, unsigned per_round)
{
	struct rng g = { seed };
	struct mv_mmu_pool *pool;
	struct mv_mmu_pt *pt;
	struct mv_mmu_pool_config pc = { .pages_per_node = 16384, .nodes = replicas };
	assert_int_equal(mv_mmu_pool_create(&pc, &pool, NULL), 0);
	struct mv_mmu_pt_config c = { .levels = levels, .maxphyaddr = maxphy, .replicas = replicas,
				      .ops = mv_mmu_pool_ops(), .ops_ctx = pool };
	assert_int_equal(mv_mmu_pt_create(&c, &pt, NULL), 0);
	struct ref_model ref = { .levels = levels, .maxphy = maxphy };
	uint64_t translations = 0;
	for (uint64_t round = 0; round < rounds; round++) {
		unsigned op = (unsigned)(rng_next(&g) % 10);
		static const uint64_t sizes[] = { MV_MMU_4K, MV_MMU_2M, MV_MMU_1G };
		uint64_t ps = sizes[rng_next(&g) % 10 < 7 ? 0 : rng_next(&g) % 3];
		uint64_t va = rand_va(&g, levels, ps);
		uint64_t n = ps == MV_MMU_4K ? 1 + rng_next(&g) % 48 : 1 + rng_next(&g) % 2;
		int got, want;
		if (op < 5 || ref.n < 8) {
			uint64_t pa = (rng_next(&g) % (1ULL << (maxphy + (rng_next(&g) % 50 == 0))))
				      & ~(ps - 1);
			uint64_t fl = rand_flags(&g);
			want = ref_map(&ref, va, pa, n * ps, ps, fl);
			got = mv_mmu_map(pt, va, pa, n * ps, ps, fl, NULL);
		} else {
			/* target an existing mapping most of the time */
			struct ref_map *m = &ref.m[rng_next(&g) % ref.n];
			uint64_t sext = levels == 5 ? 56 : 47;
			uint64_t base = m->va >> sext ? m->va | ~ref_vmask(&ref) : m->va;
			uint64_t off = (rng_next(&g) % (m->size / MV_MMU_4K)) * MV_MMU_4K;
			uint64_t len = (1 + rng_next(&g) % 600) * MV_MMU_4K;
			if (op < 8) {
				want = ref_unmap(&ref, base + off, len);
				got = mv_mmu_unmap(pt, base + off, len, NULL);
			} else {
				uint64_t fl = rand_flags(&g);
				want = ref_protect(&ref, base + off, len, fl);
				got = mv_mmu_protect(pt, base + off, len, fl, NULL);
			}
		}
		if (got != want)
			fail_msg("round %llu op %u: got %d want %d", (unsigned long long)round, op, got, want);
		if (replicas > 1 || round % 64 == 0) {
			struct mv_error *e = NULL;
			int rc = mv_mmu_pt_check(pt, &e);
			if (rc)
				fail_msg("invariant: %s", e->msg);
		}
		for (unsigned k = 0; k < per_round && ref.n; k++) {
			uint64_t va2;
			struct ref_map *m = &ref.m[rng_next(&g) % ref.n];
			unsigned sext = levels == 5 ? 56 : 47;
			uint64_t base = m->va >> sext ? m->va | ~ref_vmask(&ref) : m->va;
			switch (rng_next(&g) % 8) {
			case 0: va2 = rand_va(&g, levels, 1); break;
			case 1: va2 = base + m->size + rng_next(&g) % (4ULL << 20); break;
			default: va2 = base + rng_next(&g) % m->size; break;
			}
			unsigned acc = rand_acc(&g);
			unsigned node = (unsigned)(rng_next(&g) % replicas);
			struct mv_mmu_xlat x;
			struct mv_mmu_fault f = { 0 };
			struct ref_result rr = ref_walk(&ref, va2, acc);
			int rc = mv_mmu_walk(pt, node, va2, acc, &x, &f);
			translations++;
			if (rr.kind == MV_MMU_FAULT_NONE) {
				if (rc != 0 || x.pa != rr.pa || x.page_size != rr.size)
					fail_msg("va %#llx acc %#x: rc %d pa %#llx/%#llx size %#llx/%#llx (%s)",
						 (unsigned long long)va2, acc, rc, (unsigned long long)x.pa,
						 (unsigned long long)rr.pa, (unsigned long long)x.page_size,
						 (unsigned long long)rr.size, mv_mmu_fault_str(f.kind));
			} else if (rc != -EFAULT || f.kind != rr.kind ||
				   (rr.kind != MV_MMU_FAULT_NON_CANONICAL && f.level != rr.level)) {
				fail_msg("va %#llx acc %#x: rc %d kind %s/%s level %u/%u",
					 (unsigned long long)va2, acc, rc, mv_mmu_fault_str(f.kind),
					 mv_mmu_fault_str(rr.kind), f.level, rr.level);
			}
			if (k % 16 == 0) {  /* flags incl. A/D (OR over replicas) */
				struct ref_map *mm = ref_find(&ref, va2);
				int qr = mv_mmu_query(pt, va2, &x);
				if (!ref_canon(&ref, va2))
					continue;
				assert_int_equal(qr, mm ? 0 : -ENOENT);
				if (mm && x.flags != mm->flags)
					fail_msg("va %#llx flags %#llx want %#llx", (unsigned long long)va2,
						 (unsigned long long)x.flags, (unsigned long long)mm->flags);
			}
		}
	}
	assert_int_equal(mv_mmu_pt_check(pt, NULL), 0);
	print_message("levels %u replicas %u: %llu ops, %llu translations, %zu leaves\n", levels,
		      replicas, (unsigned long long)rounds, (unsigned long long)translations, ref.n);
	ref_free(&ref);
	mv_mmu_pt_destroy(pt);
	assert_int_equal(mv_mmu_pool_used(pool), 0);
	mv_mmu_pool_destroy(pool);
}

static void test_random_4level(void **s)
{
	random_run(4, 1, 46, 0x4a11, 2000 / test_scale(), 1000);
}

static void test_random_5level(void **s)
{
	random_run(5, 1, 52, 0x5b22, 2000 / test_scale(), 1000);
}

static void test_random_replicated(void **s)
{
	random_run(4, 3, 52, 0x7c33, 600 / test_scale(), 500);
	random_run(5, 2, 40, 0x8d44, 300 / test_scale(), 500);
}

/* ---- A/D under concurrency: cmpxchg never loses a bit -------------------- */

struct ad_arg {
	struct mv_mmu_pt *pt;
	uint64_t base;
	unsigned id;
};

static void *ad_worker(void *p)
{
	struct ad_arg *a = p;
	for (unsigned i = 0; i < 20000; i++) {
		struct mv_mmu_xlat x;
		uint64_t va = a->base + ((i * 7 + a->id) % 64) * MV_MMU_4K;
		if (mv_mmu_walk(a->pt, a->id % 2, va, MV_MMU_ACC_WRITE | DEF, &x, NULL) != 0)
			return (void *)1;
	}
	return NULL;
}

static void test_ad_concurrent(void **s)
{
	struct mv_mmu_pool *pool;
	struct mv_mmu_pt *pt;
	struct mv_mmu_pool_config pc = { .pages_per_node = 64, .nodes = 2 };
	assert_int_equal(mv_mmu_pool_create(&pc, &pool, NULL), 0);
	struct mv_mmu_pt_config c = { .levels = 4, .replicas = 2, .ops = mv_mmu_pool_ops(),
				      .ops_ctx = pool };
	assert_int_equal(mv_mmu_pt_create(&c, &pt, NULL), 0);
	const uint64_t base = 0x40000000;
	assert_int_equal(mv_mmu_map(pt, base, 0x1000000, 64 * MV_MMU_4K, MV_MMU_4K, MV_MMU_PTE_RW, NULL), 0);
	pthread_t th[3];
	struct ad_arg a[3];
	for (unsigned i = 0; i < 3; i++) {
		a[i] = (struct ad_arg){ pt, base, i };
		assert_int_equal(pthread_create(&th[i], NULL, ad_worker, &a[i]), 0);
	}
	/* meanwhile the editor flips protections (keeping A/D) and clears A */
	for (unsigned i = 0; i < 2000; i++) {
		assert_int_equal(mv_mmu_protect(pt, base, 64 * MV_MMU_4K,
						 MV_MMU_PTE_RW | (i % 2 ? MV_MMU_PTE_PCD : 0), NULL), 0);
		assert_int_equal(mv_mmu_clear_ad(pt, base + (i % 64) * MV_MMU_4K, MV_MMU_PTE_A), 0);
	}
	for (unsigned i = 0; i < 3; i++) {
		void *r;
		pthread_join(th[i], &r);
		assert_null(r);
	}
	for (unsigned i = 0; i < 64; i++) {
		struct mv_mmu_xlat x;
		assert_int_equal(mv_mmu_query(pt, base + i * MV_MMU_4K, &x), 0);
		assert_true(x.flags & MV_MMU_PTE_D);  /* written by a worker, never cleared */
	}
	/* A/D is node-local in replicas and read as the OR */
	assert_int_equal(mv_mmu_clear_ad(pt, base, MV_MMU_PTE_A | MV_MMU_PTE_D), 0);
	struct mv_mmu_xlat x;
	assert_int_equal(mv_mmu_walk(pt, 1, base, MV_MMU_ACC_WRITE | DEF, &x, NULL), 0);
	assert_int_equal(mv_mmu_query(pt, base, &x), 0);
	assert_int_equal(x.flags & (MV_MMU_PTE_A | MV_MMU_PTE_D), MV_MMU_PTE_A | MV_MMU_PTE_D);
	assert_int_equal(mv_mmu_pt_check(pt, NULL), 0);
	mv_mmu_pt_destroy(pt);
	mv_mmu_pool_destroy(pool);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sdm_4level),
		cmocka_unit_test(test_sdm_5level),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_ad_concurrent),
		cmocka_unit_test(test_random_4level),
		cmocka_unit_test(test_random_5level),
		cmocka_unit_test(test_random_replicated),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
