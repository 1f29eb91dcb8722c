/* Unit tests of the page-fusion scanner and pool (src/guard/fusion.c) over
 * real memfds, with the test playing the VMM's part (commit, broken). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "memvisor/fusion.h"
#include "memvisor/util.h"
#include "../../../src/guard/fusion_i.h"

#define PS MV_PAGE_SIZE
#define NPAGES 64

static void fill(uint8_t *p, uint64_t tag)
{
	for (size_t i = 0; i < PS / 8; i++)
		memcpy(p + i * 8, &(uint64_t){tag * 0x9E3779B97F4A7C15ULL + i}, 8);
}

/* A VM of NPAGES pages; page i gets content tags[i] (0: left a hole). */
static void make_vm(struct mv_mem_layout *l, const uint64_t *tags)
{
	assert_int_equal(mv_mem_layout_create(NPAGES * PS, "fusion-test", MV_MEM_BACKING_4K, l, NULL), 0);
	uint8_t page[PS];
	for (int i = 0; i < NPAGES; i++) {
		if (!tags[i])
			continue;
		fill(page, tags[i]);
		assert_int_equal(pwrite(l->r[0].fd, page, PS, (off_t)i * PS), (ssize_t)PS);
	}
}

static struct mv_fusion *new_fusion(uint64_t pool, uint64_t per_vm)
{
	struct mv_fusion *f;
	struct mv_fusion_cfg cfg = {.pool_pages = pool, .max_fused_per_vm = per_vm};
	assert_int_equal(mv_fusion_create(&cfg, &f, NULL), 0);
	return f;
}

/* Scans until a full scan passes; answers every proposal with ok. */
static size_t scan_all(struct mv_fusion *f, bool ok)
{
	struct mv_fusion_merge m[512];
	size_t total = 0, n;
	struct mv_fusion_stats st;
	mv_fusion_get_stats(f, &st);
	uint64_t scans = st.full_scans;
	for (int i = 0; i < 100; i++) {
		assert_int_equal(mv_fusion_scan(f, 16, m, 512, &n), 0);
		for (size_t k = 0; k < n; k++)
			mv_fusion_commit(f, &m[k], ok);
		total += n;
		mv_fusion_get_stats(f, &st);
		if (st.full_scans >= scans + 2)
			break;
	}
	return total;
}

static void test_two_vms_share(void **state)
{
	uint64_t a[NPAGES] = {0}, b[NPAGES] = {0};
	for (int i = 0; i < 32; i++)
		a[i] = b[i] = 100 + (uint64_t)i;     /* 32 identical pages */
	for (int i = 32; i < 40; i++) {
		a[i] = 1000 + (uint64_t)i;           /* unique in each */
		b[i] = 2000 + (uint64_t)i;
	}
	struct mv_mem_layout la, lb;
	make_vm(&la, a);
	make_vm(&lb, b);
	struct mv_fusion *f = new_fusion(1024, 1024);
	assert_int_equal(mv_fusion_vm_add(f, 1, &la, NULL), 0);
	assert_int_equal(mv_fusion_vm_add(f, 2, &lb, NULL), 0);
	assert_int_equal(mv_fusion_vm_add(f, 2, &lb, NULL), -EEXIST);
	assert_int_equal(scan_all(f, true), 64);
	struct mv_fusion_stats st;
	mv_fusion_get_stats(f, &st);
	assert_int_equal(st.shared, 32);
	assert_int_equal(st.sharing, 64);
	assert_int_equal(st.unshared, 16);
	assert_int_equal(st.merges, 64);
	/* The pool holds the content; both VMs' pages point at one pool page. */
	uint64_t oa, ob;
	assert_int_equal(mv_fusion_lookup(f, 1, 5 * PS, &oa), 0);
	assert_int_equal(mv_fusion_lookup(f, 2, 5 * PS, &ob), 0);
	assert_int_equal(oa, ob);
	assert_int_equal(mv_fusion_lookup(f, 1, 35 * PS, &oa), -ENOENT);
	uint8_t want[PS], got[PS];
	fill(want, 105);
	assert_int_equal(pread(mv_fusion_pool_fd(f), got, PS, (off_t)ob), (ssize_t)PS);
	assert_memory_equal(want, got, PS);
	assert_int_equal(mv_fusion_sharers(f, ob, NULL, NULL), 2);
	/* A read-only descriptor for VMMs. */
	int ro = mv_fusion_pool_fd_ro(f);
	assert_true(ro >= 0);
	assert_int_equal(pwrite(ro, want, PS, 0), -1);
	close(ro);
	/* A write breaks one side: the pool page lives on for the other. */
	uint64_t other = 0;
	assert_int_equal(mv_fusion_broken(f, 1, 5 * PS, &other), 1);   /* VM 2 shared it */
	assert_int_equal(other, 2);
	mv_fusion_get_stats(f, &st);
	assert_int_equal(st.sharing, 63);
	assert_int_equal(st.shared, 32);
	assert_int_equal(mv_fusion_broken(f, 2, 5 * PS, NULL), 0);     /* alone by now */
	mv_fusion_get_stats(f, &st);
	assert_int_equal(st.shared, 31);
	assert_int_equal(st.cow_breaks, 2);
	/* Removing a VM drops its references; the lone pool pages stay referenced by b. */
	mv_fusion_vm_remove(f, 1);
	mv_fusion_get_stats(f, &st);
	assert_int_equal(st.sharing, 31);
	assert_int_equal(st.vms, 1);
	mv_fusion_vm_unfused(f, 2, 31);
	mv_fusion_get_stats(f, &st);
	assert_int_equal(st.sharing, 0);
	assert_int_equal(st.shared, 0);
	assert_int_equal(st.unfused, 31);
	struct stat sb;
	assert_int_equal(fstat(mv_fusion_pool_fd(f), &sb), 0);
	assert_int_equal(sb.st_blocks, 0);   /* freed pool pages are punched */
	mv_fusion_destroy(f);
	mv_mem_layout_close(&la);
	mv_mem_layout_close(&lb);
}

/* Pages the guard moved (kept) are never proposed, on either side of a
 * match, while their identical twins elsewhere still are. */
static void test_keep(void **state)
{
	uint64_t a[NPAGES] = {0}, b[NPAGES] = {0};
	for (int i = 0; i < 16; i++)
		a[i] = b[i] = 300 + (uint64_t)i;
	b[20] = 300;   /* b's own twin of page 0 */
	struct mv_mem_layout la, lb;
	make_vm(&la, a);
	make_vm(&lb, b);
	struct mv_fusion *f = new_fusion(1024, 1024);
	assert_int_equal(mv_fusion_vm_keep(f, 1, 0, 8 * PS), -ENOENT);   /* not attached */
	assert_int_equal(mv_fusion_vm_add(f, 1, &la, NULL), 0);
	assert_int_equal(mv_fusion_vm_add(f, 2, &lb, NULL), 0);
	assert_int_equal(mv_fusion_vm_keep(f, 1, 0, 8 * PS), 0);
	/* a's pages 8..15 pair with b's; a's 0..7 never; b's 0 with its own 20. */
	assert_int_equal(scan_all(f, true), 16 + 2);
	uint64_t off;
	for (uint64_t i = 0; i < 8; i++)
		assert_int_equal(mv_fusion_lookup(f, 1, i * PS, &off), -ENOENT);
	assert_int_equal(mv_fusion_lookup(f, 1, 8 * PS, &off), 0);
	assert_int_equal(mv_fusion_lookup(f, 2, 0, &off), 0);
	assert_int_equal(mv_fusion_sharers(f, off, NULL, NULL), 2);   /* b's 0 and 20 */
	/* Detaching forgets the marks (the daemon sends them again on attach). */
	mv_fusion_vm_remove(f, 1);
	assert_int_equal(mv_fusion_vm_add(f, 1, &la, NULL), 0);
	/* a's 16 pages, and b's 1..7 which had no twin until now */
	assert_int_equal(scan_all(f, true), 16 + 7);
	assert_int_equal(mv_fusion_lookup(f, 1, 0, &off), 0);
	mv_fusion_destroy(f);
	mv_mem_layout_close(&la);
	mv_mem_layout_close(&lb);
}

static void test_misses_and_holes(void **state)
{
	uint64_t a[NPAGES] = {0};
	a[0] = a[10] = a[20] = 7;   /* intra-VM duplicates; the rest holes */
	struct mv_mem_layout la;
	make_vm(&la, a);
	struct mv_fusion *f = new_fusion(1024, 1024);
	assert_int_equal(mv_fusion_vm_add(f, 9, &la, NULL), 0);
	/* The VMM refuses everything (pages changed): nothing stays booked. */
	size_t n = scan_all(f, false);
	assert_true(n >= 3);
	struct mv_fusion_stats st;
	mv_fusion_get_stats(f, &st);
	assert_int_equal(st.sharing, 0);
	assert_int_equal(st.shared, 0);
	assert_int_equal(st.merges, 0);
	assert_true(st.pages_scanned < 64 * 100);   /* holes are not read */
	assert_int_equal(scan_all(f, true), 3);
	mv_fusion_get_stats(f, &st);
	assert_int_equal(st.sharing, 3);
	assert_int_equal(st.shared, 1);
	mv_fusion_destroy(f);
	mv_mem_layout_close(&la);
}

static void test_caps(void **state)
{
	uint64_t a[NPAGES] = {0}, b[NPAGES] = {0};
	for (int i = 0; i < NPAGES; i++)
		a[i] = b[i] = 500 + (uint64_t)i;
	struct mv_mem_layout la, lb;
	make_vm(&la, a);
	make_vm(&lb, b);
	struct mv_fusion *f = new_fusion(8, 1024);   /* 8 pool pages */
	assert_int_equal(mv_fusion_vm_add(f, 1, &la, NULL), 0);
	assert_int_equal(mv_fusion_vm_add(f, 2, &lb, NULL), 0);
	scan_all(f, true);
	struct mv_fusion_stats st;
	mv_fusion_get_stats(f, &st);
	assert_int_equal(st.shared, 8);
	assert_int_equal(st.sharing, 16);
	mv_fusion_destroy(f);
	f = new_fusion(1024, 5);   /* 5 fused pages per VM */
	assert_int_equal(mv_fusion_vm_add(f, 1, &la, NULL), 0);
	assert_int_equal(mv_fusion_vm_add(f, 2, &lb, NULL), 0);
	scan_all(f, true);
	assert_true(mv_fusion_vm_fused(f, 1) <= 5);
	assert_true(mv_fusion_vm_fused(f, 2) <= 5);
	mv_fusion_destroy(f);
	mv_mem_layout_close(&la);
	mv_mem_layout_close(&lb);
}

/* Holes inside a chunk read as zeros: they are neither proposed nor counted
 * as scanned, while pages of real zeros are fused like any other content. */
static void test_holes_are_not_zero_pages(void **state)
{
	(void)state;
	uint64_t tags[NPAGES] = {0};
	for (int i = 0; i < 16; i += 2)
		tags[i] = 300 + (uint64_t)i;        /* odd pages: holes */
	struct mv_mem_layout la, lb;
	make_vm(&la, tags);
	make_vm(&lb, tags);
	static const uint8_t zero[PS];
	for (int i = 20; i <= 22; i += 2) {        /* real zero pages, a hole between */
		assert_int_equal(pwrite(la.r[0].fd, zero, PS, (off_t)i * PS), (ssize_t)PS);
		assert_int_equal(pwrite(lb.r[0].fd, zero, PS, (off_t)i * PS), (ssize_t)PS);
	}
	struct mv_fusion *f = new_fusion(1024, 1024);
	assert_int_equal(mv_fusion_vm_add(f, 1, &la, NULL), 0);
	assert_int_equal(mv_fusion_vm_add(f, 2, &lb, NULL), 0);
	/* A budget of exactly the 20 data pages reaches every one of them
	 * only if the 22 holes among them are not counted. */
	struct mv_fusion_merge m[512];
	size_t n;
	assert_int_equal(mv_fusion_scan(f, 20, m, 512, &n), 0);
	assert_int_equal(n, 20);
	for (size_t i = 0; i < n; i++) {
		uint64_t pg = m[i].gpa / PS;
		assert_true(pg == 20 || pg == 22 || (pg < 16 && tags[pg]));
		mv_fusion_commit(f, &m[i], true);
	}
	struct mv_fusion_stats st;
	mv_fusion_get_stats(f, &st);
	assert_int_equal(st.pages_scanned, 20);
	assert_int_equal(st.sharing, 20);
	assert_int_equal(st.shared, 9);            /* 8 contents + zeros */
	mv_fusion_destroy(f);
	mv_mem_layout_close(&la);
	mv_mem_layout_close(&lb);
}

/* Only holes attached (every page fused, say): a scan must still return. */
static void test_all_holes(void **state)
{
	(void)state;
	struct mv_fusion *f = new_fusion(16, 16);
	struct mv_mem_layout l;
	uint64_t tags[NPAGES] = {0};
	make_vm(&l, tags);
	assert_int_equal(mv_fusion_vm_add(f, 1, &l, NULL), 0);
	struct mv_fusion_merge m[8];
	size_t n = 1;
	assert_int_equal(mv_fusion_scan(f, 1000, m, 8, &n), 0);
	assert_int_equal(n, 0);
	mv_fusion_destroy(f);
	mv_mem_layout_close(&l);
}

static void test_u64map(void **state)
{
	struct u64map m = {0};
	uint64_t v;
	for (uint64_t k = 1; k <= 5000; k++)
		u64map_put(&m, k * 7919, k);
	assert_int_equal(m.n, 5000);
	for (uint64_t k = 1; k <= 5000; k += 2)
		assert_true(u64map_del(&m, k * 7919));
	for (uint64_t k = 1; k <= 5000; k++) {
		bool has = u64map_get(&m, k * 7919, &v);
		assert_int_equal(has, k % 2 == 0);
		if (has)
			assert_int_equal(v, k);
	}
	assert_false(u64map_del(&m, 3));
	u64map_clear(&m);
	assert_false(u64map_get(&m, 2 * 7919, NULL));
	u64map_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_two_vms_share),
		cmocka_unit_test(test_misses_and_holes),
		cmocka_unit_test(test_caps),
		cmocka_unit_test(test_holes_are_not_zero_pages),
		cmocka_unit_test(test_all_holes),
		cmocka_unit_test(test_u64map),
		cmocka_unit_test(test_keep),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
