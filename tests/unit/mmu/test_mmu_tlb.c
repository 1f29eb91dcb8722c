/* Unit tests for the TLB (tags, sizes, flushes, counters) and two-stage
 * translation (stage-1 tables in guest memory translated by stage 2,
 * combined TLB entries, stage-2 faults during the stage-1 walk), with a
 * randomized check of nested walks against two composed reference models. */
#include <errno.h>
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

#define DEF MV_MMU_CTL_DEFAULT

static void test_tlb_basic(void **s)
{
	struct mv_mmu_tlb *t;
	struct mv_mmu_tlb_config c = { .sets = 16, .ways = 2 };
	assert_int_equal(mv_mmu_tlb_create(&c, &t, NULL), 0);
	struct mv_mmu_xlat x = { .pa = 0x5000, .gpa = 0x5000, .page_size = MV_MMU_4K,
				 .perms = MV_MMU_PERM_W | MV_MMU_PERM_U | MV_MMU_PERM_X, .level = 1 };
	struct mv_mmu_xlat o;
	mv_mmu_tlb_insert(t, 1, 0x7000, &x);
	assert_true(mv_mmu_tlb_lookup(t, 1, 0x7123, DEF, &o));
	assert_int_equal(o.pa, 0x5123);
	assert_false(mv_mmu_tlb_lookup(t, 2, 0x7123, DEF, &o));        /* other PASID */
	assert_false(mv_mmu_tlb_lookup(t, 1, 0x8000, DEF, &o));
	assert_false(mv_mmu_tlb_lookup(t, 1, 0x7000, MV_MMU_ACC_WRITE | DEF, &o)); /* D clear */
	x.perms |= MV_MMU_PERM_D;
	mv_mmu_tlb_insert(t, 1, 0x7000, &x);  /* refresh, not a duplicate */
	assert_true(mv_mmu_tlb_lookup(t, 1, 0x7000, MV_MMU_ACC_WRITE | DEF, &o));
	/* 2M entry covers its whole page; a read-only one misses on write */
	struct mv_mmu_xlat big = { .pa = 0x40000000, .gpa = 0x40000000, .page_size = MV_MMU_2M,
				   .perms = MV_MMU_PERM_U | MV_MMU_PERM_D, .level = 2 };
	mv_mmu_tlb_insert(t, 1, 0x600000, &big);
	assert_true(mv_mmu_tlb_lookup(t, 1, 0x7fffff, MV_MMU_ACC_USER | DEF, &o));
	assert_int_equal(o.pa, 0x401fffff);
	assert_int_equal(o.page_size, MV_MMU_2M);
	assert_false(mv_mmu_tlb_lookup(t, 1, 0x7fffff, MV_MMU_ACC_USER | MV_MMU_ACC_WRITE | DEF, &o));
	assert_false(mv_mmu_tlb_lookup(t, 1, 0x600000, MV_MMU_ACC_EXEC | DEF, &o));
	/* global entries match every PASID and survive a PASID flush */
	struct mv_mmu_xlat g = x;
	g.perms |= MV_MMU_PERM_G;
	mv_mmu_tlb_insert(t, 3, 0xffff800000001000ULL, &g);
	assert_true(mv_mmu_tlb_lookup(t, 9, 0xffff800000001000ULL, DEF, &o));
	mv_mmu_tlb_flush_pasid(t, 1);
	assert_false(mv_mmu_tlb_lookup(t, 1, 0x7000, DEF, &o));
	assert_false(mv_mmu_tlb_lookup(t, 1, 0x600000, MV_MMU_ACC_USER | DEF, &o));
	assert_true(mv_mmu_tlb_lookup(t, 1, 0xffff800000001000ULL, DEF, &o));
	/* range flush by overlap */
	mv_mmu_tlb_insert(t, 1, 0x7000, &x);
	mv_mmu_tlb_insert(t, 1, 0x600000, &big);
	mv_mmu_tlb_flush_range(t, 1, 0x7fe000, 0x1000);   /* hits the 2M page only */
	assert_true(mv_mmu_tlb_lookup(t, 1, 0x7000, DEF, &o));
	assert_false(mv_mmu_tlb_lookup(t, 1, 0x600000, MV_MMU_ACC_USER | DEF, &o));
	mv_mmu_tlb_flush_all(t);
	assert_false(mv_mmu_tlb_lookup(t, 1, 0xffff800000001000ULL, DEF, &o));
	/* capacity: more pages than entries evict */
	for (uint64_t i = 0; i < 200; i++)
		mv_mmu_tlb_insert(t, 1, i << 12, &x);
	struct mv_mmu_tlb_stats st;
	mv_mmu_tlb_get_stats(t, &st);
	assert_true(st.evictions >= 200 - 32);
	assert_int_equal(st.hits, 6);
	unsigned hits = 0;
	for (uint64_t i = 0; i < 200; i++)
		hits += mv_mmu_tlb_lookup(t, 1, i << 12, DEF, &o);
	assert_true(hits <= 32 && hits > 0);
	mv_mmu_tlb_destroy(t);
	c.sets = 3;
	assert_int_equal(mv_mmu_tlb_create(&c, &t, NULL), -EINVAL);
}

static void test_translate_tlb(void **s)
{
	struct mv_mmu_pool *pool;
	struct mv_mmu_pt *pt;
	struct mv_mmu_tlb *t;
	struct mv_mmu_pool_config pc = { .pages_per_node = 64, .nodes = 1 };
	assert_int_equal(mv_mmu_pool_create(&pc, &pool, NULL), 0);
	struct mv_mmu_pt_config c = { .levels = 5, .ops = mv_mmu_pool_ops(), .ops_ctx = pool };
	assert_int_equal(mv_mmu_pt_create(&c, &pt, NULL), 0);
	struct mv_mmu_tlb_config tc = { .sets = 64, .ways = 4 };
	assert_int_equal(mv_mmu_tlb_create(&tc, &t, NULL), 0);
	assert_int_equal(mv_mmu_map(pt, 0x10000, 0x90000, 0x4000, MV_MMU_4K,
				    MV_MMU_PTE_RW | MV_MMU_PTE_US, NULL), 0);
	struct mv_mmu_xlat x;
	struct mv_mmu_fault f;
	assert_int_equal(mv_mmu_translate(t, 7, pt, 0, 0x10008, MV_MMU_ACC_USER | DEF, &x, &f), 0);
	assert_int_equal(mv_mmu_translate(t, 7, pt, 0, 0x10010, MV_MMU_ACC_USER | DEF, &x, &f), 0);
	assert_int_equal(x.pa, 0x90010);
	/* first write misses (D clear in the entry), walks, sets D, then hits */
	assert_int_equal(mv_mmu_translate(t, 7, pt, 0, 0x10010, MV_MMU_ACC_WRITE | DEF, &x, &f), 0);
	assert_int_equal(mv_mmu_translate(t, 7, pt, 0, 0x10018, MV_MMU_ACC_WRITE | DEF, &x, &f), 0);
	struct mv_mmu_tlb_stats st;
	mv_mmu_tlb_get_stats(t, &st);
	assert_int_equal(st.hits, 2);
	assert_int_equal(st.misses, 2);
	/* stale entry until invalidated, as on hardware */
	assert_int_equal(mv_mmu_unmap(pt, 0x10000, 0x1000, NULL), 0);
	assert_int_equal(mv_mmu_translate(t, 7, pt, 0, 0x10000, DEF, &x, &f), 0);
	mv_mmu_tlb_flush_range(t, 7, 0x10000, 0x1000);
	assert_int_equal(mv_mmu_translate(t, 7, pt, 0, 0x10000, DEF, &x, &f), -EFAULT);
	assert_int_equal(f.kind, MV_MMU_FAULT_NOT_PRESENT);
	assert_int_equal(f.level, 1);
	mv_mmu_tlb_destroy(t);
	mv_mmu_pt_destroy(pt);
	mv_mmu_pool_destroy(pool);
}

/* ---- two stages ----------------------------------------------------------- */

/* The guest's table allocator: a host pool page, mapped into stage 2 at the
 * next free GPA of the guest's page-table area. */
struct guest {
	struct mv_mmu_pool *pool;
	struct mv_mmu_pt *s2;
	uint64_t next_gpa;
};

static int guest_alloc(void *ctx, unsigned node, uint64_t *gpa)
{
	struct guest *g = ctx;
	uint64_t hpa;
	int rc = mv_mmu_pool_ops()->alloc_table(g->pool, 0, &hpa);
	if (rc < 0)
		return rc;
	rc = mv_mmu_map(g->s2, g->next_gpa, hpa, MV_MMU_4K, MV_MMU_4K,
			MV_MMU_PTE_RW | MV_MMU_PTE_US, NULL);
	if (rc < 0) {
		mv_mmu_pool_ops()->free_table(g->pool, hpa);
		return rc;
	}
	*gpa = g->next_gpa;
	g->next_gpa += MV_MMU_4K;
	return 0;
}

static void guest_free(void *ctx, uint64_t gpa)
{
	struct guest *g = ctx;
	struct mv_mmu_xlat x;
	if (mv_mmu_query(g->s2, gpa, &x) == 0) {
		if (mv_mmu_unmap(g->s2, gpa, MV_MMU_4K, NULL) == 0)
			mv_mmu_pool_ops()->free_table(g->pool, x.pa);
	}
}

static const struct mv_mmu_phys_ops guest_ops = { .alloc_table = guest_alloc,
						  .free_table = guest_free };

#define GUEST_PT_GPA 0x7f000000ULL     /* where the guest keeps its tables */

static void nested_setup(struct guest *g, struct mv_mmu_pt **s1, unsigned s1_levels)
{
	struct mv_mmu_pool_config pc = { .pages_per_node = 8192, .nodes = 1 };
	assert_int_equal(mv_mmu_pool_create(&pc, &g->pool, NULL), 0);
	struct mv_mmu_pt_config c2 = { .levels = 4, .ops = mv_mmu_pool_ops(), .ops_ctx = g->pool };
	assert_int_equal(mv_mmu_pt_create(&c2, &g->s2, NULL), 0);
	g->next_gpa = GUEST_PT_GPA;
	struct mv_mmu_pt_config c1 = { .levels = s1_levels, .ops = &guest_ops, .ops_ctx = g,
				       .stage2 = g->s2 };
	assert_int_equal(mv_mmu_pt_create(&c1, s1, NULL), 0);
}

static void nested_teardown(struct guest *g, struct mv_mmu_pt *s1)
{
	mv_mmu_pt_destroy(s1);
	mv_mmu_pt_destroy(g->s2);
	assert_int_equal(mv_mmu_pool_used(g->pool), 0);
	mv_mmu_pool_destroy(g->pool);
}

static void test_nested(void **s)
{
	struct guest g;
	struct mv_mmu_pt *s1;
	nested_setup(&g, &s1, 4);
	const uint64_t rw_us = MV_MMU_PTE_RW | MV_MMU_PTE_US;
	/* guest RAM: GPA 0..64M -> HPA 1G.. with 2M pages; guest maps a 2M page at GVA 0x40000000 */
	assert_int_equal(mv_mmu_map(g.s2, 0, 1ULL << 30, 64ULL << 20, MV_MMU_2M, rw_us, NULL), 0);
	assert_int_equal(mv_mmu_map(s1, 0x40000000, 0x200000, MV_MMU_2M, MV_MMU_2M, rw_us, NULL), 0);
	struct mv_mmu_xlat x;
	struct mv_mmu_fault f;
	assert_int_equal(mv_mmu_walk(s1, 0, 0x40012345, MV_MMU_ACC_USER | DEF, &x, &f), 0);
	assert_int_equal(x.gpa, 0x212345);
	assert_int_equal(x.pa, (1ULL << 30) + 0x212345);
	assert_int_equal(x.page_size, MV_MMU_2M);
	/* guest 2M over host 4K: the combined page is 4K */
	assert_int_equal(mv_mmu_unmap(g.s2, 0x200000, MV_MMU_2M, NULL), 0);
	assert_int_equal(mv_mmu_map(g.s2, 0x200000, 0x10000000, MV_MMU_2M, MV_MMU_4K, MV_MMU_PTE_US, NULL), 0);
	assert_int_equal(mv_mmu_walk(s1, 0, 0x40012345, MV_MMU_ACC_USER | DEF, &x, &f), 0);
	assert_int_equal(x.pa, 0x10012345);
	assert_int_equal(x.page_size, MV_MMU_4K);
	assert_false(x.perms & MV_MMU_PERM_W);
	/* a write is allowed by stage 1 but not stage 2: stage-2 permission fault on the GPA */
	assert_int_equal(mv_mmu_walk(s1, 0, 0x40012345, MV_MMU_ACC_USER | MV_MMU_ACC_WRITE | DEF, &x, &f), -EFAULT);
	assert_int_equal(f.kind, MV_MMU_FAULT_PERMISSION);
	assert_int_equal(f.stage, 2);
	assert_false(f.in_s1_walk);
	assert_int_equal(f.addr, 0x212345);
	/* stage-1 A/D updates write guest tables: stage 2 marks those pages dirty */
	struct mv_mmu_xlat q;
	assert_int_equal(mv_mmu_query(g.s2, GUEST_PT_GPA, &q), 0);
	assert_true(q.flags & MV_MMU_PTE_D);
	/* remove the stage-2 mapping of the guest's PML4 page: stage-2 fault during the stage-1 walk */
	assert_int_equal(mv_mmu_query(g.s2, GUEST_PT_GPA, &q), 0);
	uint64_t hpa = q.pa;
	assert_int_equal(mv_mmu_unmap(g.s2, GUEST_PT_GPA, MV_MMU_4K, NULL), 0);
	assert_int_equal(mv_mmu_walk(s1, 0, 0x40012345, MV_MMU_ACC_USER | DEF, &x, &f), -EFAULT);
	assert_int_equal(f.kind, MV_MMU_FAULT_NOT_PRESENT);
	assert_int_equal(f.stage, 2);
	assert_true(f.in_s1_walk);
	assert_int_equal(f.addr, mv_mmu_pt_root(s1, 0));
	assert_int_equal(mv_mmu_map(g.s2, GUEST_PT_GPA, hpa, MV_MMU_4K, MV_MMU_4K, rw_us, NULL), 0);
	/* combined TLB entry: GVA -> HPA in one hit */
	struct mv_mmu_tlb *t;
	struct mv_mmu_tlb_config tc = { .sets = 64, .ways = 4 };
	assert_int_equal(mv_mmu_tlb_create(&tc, &t, NULL), 0);
	assert_int_equal(mv_mmu_translate(t, 1, s1, 0, 0x40001008, MV_MMU_ACC_USER | DEF, &x, &f), 0);
	assert_int_equal(mv_mmu_translate(t, 1, s1, 0, 0x40001010, MV_MMU_ACC_USER | DEF, &x, &f), 0);
	assert_int_equal(x.pa, 0x10001010);
	assert_int_equal(x.gpa, 0x201010);
	struct mv_mmu_tlb_stats st;
	mv_mmu_tlb_get_stats(t, &st);
	assert_int_equal(st.hits, 1);
	mv_mmu_tlb_destroy(t);
	nested_teardown(&g, s1);
}

/* Random nested: guest maps GVA->GPA (model 1), host maps GPA->HPA (model 2);
 * every walk must equal the composition. */
static void test_nested_random(void **s)
{
	struct guest g;
	struct mv_mmu_pt *s1;
	nested_setup(&g, &s1, 5);
	struct rng r = { 0x2222 };
	struct ref_model m1 = { .levels = 5, .maxphy = 52 }, m2 = { .levels = 4, .maxphy = 52 };
	const uint64_t ram = 256ULL << 20;
	const uint64_t rw_us = MV_MMU_PTE_RW | MV_MMU_PTE_US;
	/* guest RAM 0..256M (below the guest's table area), mixed page sizes */
	for (uint64_t gpa = 0; gpa < ram; gpa += MV_MMU_2M) {
		uint64_t hpa = (1ULL << 32) + ((gpa * 7) % (1ULL << 32));
		hpa &= ~(MV_MMU_2M - 1);
		bool big = rng_next(&r) % 2;
		uint64_t fl = rw_us | (rng_next(&r) % 8 == 0 ? 0 : 0);
		assert_int_equal(ref_map(&m2, gpa, hpa, MV_MMU_2M, big ? MV_MMU_2M : MV_MMU_4K, fl), 0);
		assert_int_equal(mv_mmu_map(g.s2, gpa, hpa, MV_MMU_2M, big ? MV_MMU_2M : MV_MMU_4K, fl, NULL), 0);
	}
	for (unsigned i = 0; i < 400; i++) {
		uint64_t ps = rng_next(&r) % 4 ? MV_MMU_4K : MV_MMU_2M;
		uint64_t gva = (rng_next(&r) % (1ULL << 40)) & ~(ps - 1);
		uint64_t gpa = (rng_next(&r) % ram) & ~(ps - 1);
		uint64_t n = ps == MV_MMU_4K ? 1 + rng_next(&r) % 16 : 1;
		if (gpa + n * ps > ram)
			continue;
		uint64_t fl = rw_us | (rng_next(&r) % 3 ? 0 : MV_MMU_PTE_NX);
		int want = ref_map(&m1, gva, gpa, n * ps, ps, fl);
		assert_int_equal(mv_mmu_map(s1, gva, gpa, n * ps, ps, fl, NULL), want);
	}
	uint64_t iters = 200000 / test_scale();
	for (uint64_t i = 0; i < iters; i++) {
		struct ref_map *m = &m1.m[rng_next(&r) % m1.n];
		uint64_t gva = m->va + rng_next(&r) % (m->size + MV_MMU_4K);
		unsigned acc = MV_MMU_ACC_USER | DEF | (rng_next(&r) % 2 ? MV_MMU_ACC_WRITE : 0);
		struct ref_result r1 = ref_walk(&m1, gva, acc);
		struct mv_mmu_xlat x;
		struct mv_mmu_fault f = { 0 };
		int rc = mv_mmu_walk(s1, 0, gva, acc, &x, &f);
		if (r1.kind != MV_MMU_FAULT_NONE) {
			assert_int_equal(rc, -EFAULT);
			assert_int_equal(f.kind, r1.kind);
			assert_int_equal(f.stage, 1);
			continue;
		}
		struct ref_result r2 = ref_walk(&m2, r1.pa, acc);
		assert_int_equal(r2.kind, MV_MMU_FAULT_NONE);
		assert_int_equal(rc, 0);
		assert_int_equal(x.gpa, r1.pa);
		assert_int_equal(x.pa, r2.pa);
		assert_int_equal(x.page_size, r1.size < r2.size ? r1.size : r2.size);
	}
	assert_int_equal(mv_mmu_pt_check(s1, NULL), 0);
	assert_int_equal(mv_mmu_pt_check(g.s2, NULL), 0);
	ref_free(&m1);
	ref_free(&m2);
	nested_teardown(&g, s1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tlb_basic),
		cmocka_unit_test(test_translate_tlb),
		cmocka_unit_test(test_nested),
		cmocka_unit_test(test_nested_random),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
