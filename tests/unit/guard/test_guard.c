/* Unit tests of the side-channel guard's co-residency check
 * (src/guard/sidechannel.c) with synthetic frame numbers, and of its fused
 * kind over a real fusion library (memfds, the test playing the VMMs). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "memvisor/guard.h"
#include "memvisor/util.h"

#define PS MV_PAGE_SIZE

static const struct mv_guard_finding *find(const struct mv_guard_finding *v, size_t n,
					   uint64_t other, enum mv_guard_kind k)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].other == other && v[i].kind == k)
			return &v[i];
	return NULL;
}

/* VM 1 protects gpas 0..3 on frames 100..103. */
static const struct mv_guard_page prot[] = {
	{1, 0 * PS, 100}, {1, 1 * PS, 101}, {1, 2 * PS, 0 /* not resident */}, {1, 3 * PS, 103},
};

static void test_frames_only(void **state)
{
	(void)state;
	struct mv_guard_cfg cfg = {0};
	struct mv_guard_range r = {.id = 7, .key = 1, .pages = prot, .n = 4};
	const struct mv_guard_page others[] = {
		{1, 9 * PS, 101},        /* its own VM: never a finding */
		{2, 5 * PS, 101},        /* VM 2 on a protected frame */
		{2, 6 * PS, 103},
		{3, 0, 102},             /* frame of the non-resident page: no finding */
		{3, PS, 0},              /* not resident */
		{4, PS, 5000},
	};
	struct mv_guard_finding *f;
	size_t n;
	assert_int_equal(mv_guard_check(&cfg, &r, 1, others, 6, NULL, &f, &n, NULL), 0);
	assert_int_equal(n, 1);
	assert_int_equal(f[0].range_id, 7);
	assert_int_equal(f[0].owner, 1);
	assert_int_equal(f[0].other, 2);
	assert_int_equal(f[0].kind, MV_GUARD_FRAME);
	assert_int_equal(f[0].pages, 2);
	assert_int_equal(f[0].other_gpa, 5 * PS);
	assert_int_equal(f[0].pfn, 101);
	free(f);
}

static void test_colour_and_row(void **state)
{
	(void)state;
	/* 16 colours: protected colours {4, 5, 7}; rows (>> 4): {6}. */
	struct mv_guard_cfg cfg = {.colours = 16, .row_shift = 4};
	struct mv_guard_range r = {.id = 1, .key = 1, .pages = prot, .n = 4};
	const struct mv_guard_page others[] = {
		{2, 0, 100 + 16 * 50},   /* colour 4, far row */
		{2, PS, 6 * 16 + 15},    /* row 6 (colour 15: not protected) */
		{3, 0, 6 * 16 + 6},      /* frame 102 (not resident in the range): row 6, colour 6 */
		{4, 0, 16 * 1000 + 3},   /* colour 3, row 1000: nothing */
	};
	struct mv_guard_finding *f;
	size_t n;
	assert_int_equal(mv_guard_check(&cfg, &r, 1, others, 4, NULL, &f, &n, NULL), 0);
	assert_non_null(find(f, n, 2, MV_GUARD_COLOUR));
	assert_int_equal(find(f, n, 2, MV_GUARD_COLOUR)->pages, 1);
	assert_int_equal(find(f, n, 2, MV_GUARD_COLOUR)->gpa, 0);   /* frame 100 has colour 4 */
	assert_non_null(find(f, n, 2, MV_GUARD_ROW));
	assert_non_null(find(f, n, 3, MV_GUARD_ROW));
	assert_null(find(f, n, 3, MV_GUARD_COLOUR));
	assert_null(find(f, n, 4, MV_GUARD_COLOUR));
	assert_null(find(f, n, 4, MV_GUARD_ROW));
	assert_null(find(f, n, 2, MV_GUARD_FRAME));
	assert_int_equal(n, 3);
	/* Sorted by other VM, then kind. */
	assert_int_equal(f[0].other, 2);
	assert_int_equal(f[2].other, 3);
	free(f);
	assert_int_equal(mv_guard_colour(&cfg, 0x1234), 4);
	assert_int_equal(mv_guard_row(&cfg, 0x1234), 0x123);
}

static void test_many_ranges_and_empty(void **state)
{
	(void)state;
	struct mv_guard_cfg cfg = {0};
	const struct mv_guard_page p2[] = {{2, 0, 500}};
	struct mv_guard_range rs[] = {
		{.id = 1, .key = 1, .pages = prot, .n = 4},
		{.id = 2, .key = 2, .pages = p2, .n = 1},
		{.id = 3, .key = 3, .pages = NULL, .n = 0},
	};
	const struct mv_guard_page others[] = {{1, 0, 500}, {2, 0, 100}, {2, PS, 500}};
	struct mv_guard_finding *f;
	size_t n;
	assert_int_equal(mv_guard_check(&cfg, rs, 3, others, 3, NULL, &f, &n, NULL), 0);
	assert_int_equal(n, 2);
	assert_int_equal(f[0].range_id, 1);
	assert_int_equal(f[0].other, 2);
	assert_int_equal(f[1].range_id, 2);
	assert_int_equal(f[1].other, 1);
	free(f);
	/* Nothing to check, nothing found, no allocation. */
	assert_int_equal(mv_guard_check(&cfg, NULL, 0, NULL, 0, NULL, &f, &n, NULL), 0);
	assert_int_equal(n, 0);
	assert_null(f);
	assert_int_equal(mv_guard_check(&cfg, rs, 1, NULL, 0, NULL, &f, &n, NULL), 0);
	assert_int_equal(n, 0);
}

static void test_cfg(void **state)
{
	(void)state;
	struct mv_error *e = NULL;
	struct mv_guard_cfg bad = {.colours = 12};
	assert_int_equal(mv_guard_cfg_check(&bad, &e), -EINVAL);
	assert_string_equal(e->field, "colours");
	mv_error_free(e);
	e = NULL;
	bad = (struct mv_guard_cfg){.row_shift = MV_GUARD_MAX_ROW_SHIFT + 1};
	assert_int_equal(mv_guard_cfg_check(&bad, &e), -EINVAL);
	assert_string_equal(e->field, "row_shift");
	mv_error_free(e);
	struct mv_guard_finding *f;
	size_t n;
	assert_int_equal(mv_guard_check(&bad, NULL, 0, NULL, 0, NULL, &f, &n, NULL), -EINVAL);
	assert_string_equal(mv_guard_kind_name(MV_GUARD_COLOUR), "colour");
	assert_string_equal(mv_guard_kind_name(MV_GUARD__KINDS), "unknown");
	uint32_t c = mv_guard_llc_colours();
	assert_true(c == 0 || (c & (c - 1)) == 0);
}

/* Two VMs with one identical page: the fusion library pairs them and the
 * guard reports the other VM as fused with the protected page. */
static void test_fused(void **state)
{
	(void)state;
	struct mv_fusion *f;
	struct mv_fusion_cfg fc = {.pool_pages = 16, .max_fused_per_vm = 16};
	assert_int_equal(mv_fusion_create(&fc, &f, NULL), 0);
	struct mv_mem_layout l[3];
	uint8_t page[PS];
	for (int v = 0; v < 3; v++) {
		assert_int_equal(mv_mem_layout_create(4 * PS, "guard-test", MV_MEM_BACKING_4K, &l[v], NULL), 0);
		memset(page, 0x40 + (v == 2 ? 9 : 0), PS);   /* VMs 1 and 2 alike at gpa PS; VM 3 not */
		assert_int_equal(pwrite(l[v].r[0].fd, page, PS, PS), (ssize_t)PS);
		assert_int_equal(mv_fusion_vm_add(f, (uint64_t)v + 1, &l[v], NULL), 0);
	}
	struct mv_fusion_merge m[64];
	for (int i = 0; i < 8; i++) {
		size_t n;
		assert_int_equal(mv_fusion_scan(f, 16, m, 64, &n), 0);
		for (size_t k = 0; k < n; k++)
			mv_fusion_commit(f, &m[k], true);
	}
	const struct mv_guard_page p[] = {{1, 0, 0}, {1, PS, 0}};
	struct mv_guard_range r = {.id = 1, .key = 1, .pages = p, .n = 2};
	struct mv_guard_cfg cfg = {0};
	struct mv_guard_finding *out;
	size_t n;
	assert_int_equal(mv_guard_check(&cfg, &r, 1, NULL, 0, f, &out, &n, NULL), 0);
	assert_int_equal(n, 2);   /* fused, and so the same frame */
	assert_int_equal(out[0].kind, MV_GUARD_FUSED);
	assert_int_equal(out[0].other, 2);
	assert_int_equal(out[0].gpa, PS);
	assert_int_equal(out[0].other_gpa, PS);
	assert_int_equal(out[1].kind, MV_GUARD_FRAME);
	assert_int_equal(out[1].pages, 1);
	free(out);
	mv_fusion_destroy(f);
	for (int v = 0; v < 3; v++)
		mv_mem_layout_close(&l[v]);
}

/* Write-probe window: breaks count within window_ms only; the earliest
 * break of the window is reported for the detection latency. */
/* Write-probe window: breaks count within window_ms of the newest break
 * only; the earliest break of the window is reported for the latency. */
static void test_wprobe_window(void **st)
{
	struct mv_guard_policy p;
	mv_guard_policy_default(&p);
	p.wp_min_pages = 10;
	p.wp_window_ms = 10;
	struct mv_guard_wprobe w;
	mv_guard_wprobe_reset(&w);
	uint64_t c, first;
	/* A steady writer: one break a millisecond never holds 10 in 10 ms... */
	for (uint64_t t = 1000; t < 1100; t += 2)
		assert_false(mv_guard_wprobe_add(&w, &p, t, 1, &c, &first));
	assert_int_equal(c, 5);
	/* ... a burst does, and the window starts at its first break. */
	mv_guard_wprobe_reset(&w);
	assert_false(mv_guard_wprobe_add(&w, &p, 2000, 4, &c, &first));
	assert_false(mv_guard_wprobe_add(&w, &p, 2005, 5, &c, &first));
	assert_int_equal(c, 9);
	/* 2000 ages out at 2010: 5 + 3 */
	assert_false(mv_guard_wprobe_add(&w, &p, 2010, 3, &c, &first));
	assert_int_equal(c, 8);
	assert_int_equal(first, 2005);
	assert_true(mv_guard_wprobe_add(&w, &p, 2010, 2, &c, &first));   /* same ms: one slot */
	assert_int_equal(c, 10);
	assert_int_equal(first, 2005);
	/* A full ring drops the oldest instead of growing. */
	p.wp_window_ms = 100000;
	p.wp_min_pages = 1000;
	for (uint64_t t = 0; t < 3 * MV_GUARD_WP_SLOTS; t++)
		(void)mv_guard_wprobe_add(&w, &p, 10000 + t, 1, &c, &first);
	assert_int_equal(c, MV_GUARD_WP_SLOTS);
}

static void test_sampled_windows(void **st)
{
	struct mv_guard_policy p;
	mv_guard_policy_default(&p);
	p.sa_windows = 4;
	p.sa_min_pct = 75;
	struct mv_guard_sampled s = {0};
	uint32_t hits;
	/* Not before 4 windows are in, whatever they say. */
	assert_false(mv_guard_sampled_add(&s, &p, true, &hits));
	assert_false(mv_guard_sampled_add(&s, &p, true, &hits));
	assert_false(mv_guard_sampled_add(&s, &p, true, &hits));
	assert_true(mv_guard_sampled_add(&s, &p, false, &hits));   /* 3 of 4 */
	assert_int_equal(hits, 3);
	assert_false(mv_guard_sampled_add(&s, &p, false, &hits));  /* 2 of 4 */
	/* A benign single write: touched once, never most windows. */
	struct mv_guard_sampled b = {0};
	assert_false(mv_guard_sampled_add(&b, &p, true, &hits));
	for (int i = 0; i < 20; i++)
		assert_false(mv_guard_sampled_add(&b, &p, false, &hits));
}

static void test_policy(void **st)
{
	struct mv_guard_policy p;
	mv_guard_policy_default(&p);
	struct mv_error *e = NULL;
	assert_int_equal(mv_guard_policy_check(&p, &e), 0);
	p.sa_windows = 65;
	assert_int_equal(mv_guard_policy_check(&p, &e), -EINVAL);
	assert_string_equal(e->field, "sampled_access.windows");
	mv_error_free(e);
	e = NULL;
	mv_guard_policy_default(&p);
	p.ndeny = 2;
	p.deny[0] = (struct mv_guard_deny){.xxh3 = 5, .name = "a"};
	p.deny[1] = (struct mv_guard_deny){.xxh3 = 5, .name = "b"};
	assert_int_equal(mv_guard_policy_check(&p, &e), -EINVAL);
	assert_string_equal(e->field, "deny.xxh3");
	mv_error_free(e);
	p.deny[1].xxh3 = 6;
	assert_non_null(mv_guard_denied(&p, 6));
	assert_null(mv_guard_denied(&p, 7));
	for (unsigned a = 0; a < MV_ACT__COUNT; a++)
		assert_int_equal(mv_guard_action_parse(mv_guard_action_name(a)), (int)a);
	for (unsigned g = 0; g < MV_SIG__COUNT; g++)
		assert_int_equal(mv_guard_signal_parse(mv_guard_signal_name(g)), (int)g);
	assert_int_equal(mv_guard_action_parse("nuke"), -1);
	uint8_t page[4096] = {0};
	assert_true(mv_guard_page_hash(page) != 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frames_only),
		cmocka_unit_test(test_colour_and_row),
		cmocka_unit_test(test_many_ranges_and_empty),
		cmocka_unit_test(test_cfg),
		cmocka_unit_test(test_fused),
		cmocka_unit_test(test_wprobe_window),
		cmocka_unit_test(test_sampled_windows),
		cmocka_unit_test(test_policy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
