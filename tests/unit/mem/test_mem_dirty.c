/* Unit tests of dirty-page tracking, run against every backend (skipped
 * where the kernel lacks it): exact page sets, idle syncs, never-touched
 * pages, random rounds against a reference, concurrent writers, and 4 KiB
 * granularity over a THP-backed region (when the host's shmem THP allows). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "memvisor/mem.h"
#include "memvisor/util.h"

#define R0_PAGES 512u   /* 2 MiB at gpa 0 */
#define R1_PAGES 256u   /* 1 MiB at 4 GiB */
#define NPAGES (R0_PAGES + R1_PAGES)

struct fixture {
	enum mv_dirty_backend backend;
	struct mv_mem_layout l;
	struct mv_guest_mem *m;
	struct mv_dirty_log *log;
};

/* Page index (0..NPAGES) across both regions -> gpa. */
static uint64_t page_gpa(unsigned p)
{
	return p < R0_PAGES ? p * MV_PAGE_SIZE : MV_MEM_HIGH_BASE + (p - R0_PAGES) * MV_PAGE_SIZE;
}

static volatile uint64_t *page_ptr(struct fixture *f, unsigned p, unsigned slot)
{
	uint8_t *hva = mv_gpa_to_hva(f->m, page_gpa(p), MV_PAGE_SIZE);
	assert_non_null(hva);
	return (volatile uint64_t *)(hva + slot * 8);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	f->backend = *(enum mv_dirty_backend *)*state;
	if (!mv_dirty_backend_available(f->backend)) {
		free(f);
		*state = NULL;
		return 0;
	}
	f->l.n = 2;
	f->l.r[0] = (struct mv_mem_region_desc){ .gpa = 0, .size = R0_PAGES * MV_PAGE_SIZE };
	f->l.r[1] = (struct mv_mem_region_desc){ .gpa = MV_MEM_HIGH_BASE, .size = R1_PAGES * MV_PAGE_SIZE };
	for (unsigned i = 0; i < 2; i++) {
		f->l.r[i].fd = memfd_create("dirty-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		assert_true(f->l.r[i].fd >= 0);
		assert_int_equal(ftruncate(f->l.r[i].fd, (off_t)f->l.r[i].size), 0);
	}
	assert_int_equal(mv_guest_mem_map(&f->l, &f->m, NULL), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	if (!f)
		return 0;
	mv_dirty_stop(f->log);
	mv_guest_mem_unmap(f->m);
	mv_mem_layout_close(&f->l);
	free(f);
	return 0;
}

static struct fixture *get(void **state)
{
	struct fixture *f = *state;
	if (!f)
		skip();  /* backend not available on this kernel */
	return f;
}

static void start(struct fixture *f)
{
	struct mv_error *err = NULL;
	int ret = mv_dirty_start(f->m, f->backend, &f->log, &err);
	if (ret < 0)
		fail_msg("start %s: %s", mv_dirty_backend_name(f->backend), mv_error_msg(err, ret));
	assert_int_equal(mv_dirty_backend_of(f->log), f->backend);
}

/* Syncs and returns the dirty pages as a bool array of NPAGES. */
static uint64_t sync_pages(struct fixture *f, bool *dirty)
{
	uint64_t n = 0, np0 = 0, np1 = 0;
	struct mv_error *err = NULL;
	int ret = mv_dirty_sync(f->log, &n, &err);
	if (ret < 0)
		fail_msg("sync: %s", mv_error_msg(err, ret));
	const uint64_t *b0 = mv_dirty_bitmap(f->log, 0, &np0), *b1 = mv_dirty_bitmap(f->log, 1, &np1);
	assert_int_equal(np0, R0_PAGES);
	assert_int_equal(np1, R1_PAGES);
	assert_null(mv_dirty_bitmap(f->log, 2, NULL));
	uint64_t count = 0;
	for (unsigned p = 0; p < NPAGES; p++) {
		const uint64_t *b = p < R0_PAGES ? b0 : b1;
		unsigned q = p < R0_PAGES ? p : p - R0_PAGES;
		dirty[p] = (b[q / 64] >> (q % 64)) & 1;
		count += dirty[p];
	}
	assert_int_equal(count, n);
	return n;
}

static void expect_exact(struct fixture *f, const bool *want)
{
	bool got[NPAGES];
	sync_pages(f, got);
	for (unsigned p = 0; p < NPAGES; p++)
		if (got[p] != want[p])
			fail_msg("%s: page %u dirty=%d, expected %d", mv_dirty_backend_name(f->backend),
				 p, got[p], want[p]);
}

static void test_known_set(void **state)
{
	struct fixture *f = get(state);
	bool want[NPAGES] = { 0 };
	for (unsigned p = 0; p < 16; p++)
		*page_ptr(f, p, 0) = 0x1000 + p;  /* populated before arming */
	start(f);
	expect_exact(f, want);
	/* Both populated pages and never-touched ones, region edges included. */
	unsigned set[] = { 0, 5, 15, 63, 64, 100, 200, R0_PAGES - 1, R0_PAGES, R0_PAGES + 77, NPAGES - 1 };
	for (unsigned i = 0; i < MV_ARRAY_SIZE(set); i++) {
		*page_ptr(f, set[i], 3) = 0xabc0 + i;
		want[set[i]] = true;
	}
	/* Reads alone never count, even of untouched pages. */
	uint64_t sum = 0;
	for (unsigned p = 300; p < 310; p++)
		sum += *page_ptr(f, p, 0);
	assert_int_equal(sum, 0);
	expect_exact(f, want);
	memset(want, 0, sizeof(want));
	expect_exact(f, want);  /* nothing written since */
	*page_ptr(f, 5, 9) = 77;
	want[5] = true;
	expect_exact(f, want);
}

static void test_random_rounds(void **state)
{
	struct fixture *f = get(state);
	unsigned seed = 12345;
	uint64_t stamp = 1;
	for (unsigned p = 0; p < NPAGES; p += 3)
		*page_ptr(f, p, 0) = stamp++;
	start(f);
	for (unsigned round = 0; round < 300; round++) {
		bool want[NPAGES] = { 0 };
		unsigned k = (unsigned)rand_r(&seed) % (round % 10 == 0 ? NPAGES : 40);
		for (unsigned i = 0; i < k; i++) {
			unsigned p = (unsigned)rand_r(&seed) % NPAGES;
			*page_ptr(f, p, (unsigned)rand_r(&seed) % 512) = stamp++;  /* unique: hash sees it */
			want[p] = true;
		}
		(void)*page_ptr(f, (unsigned)rand_r(&seed) % NPAGES, 1);
		expect_exact(f, want);
	}
}

/* Concurrent writers: each write is logged with the sync epoch seen before
 * and after it; it must show up in one of syncs [before, after + 1]. */
#define WRITERS 2
#define WRITES_PER_THREAD 200000
#define MAX_SYNCS 4096

struct wlog { uint32_t page, e1, e2; };

struct mt {
	struct fixture *f;
	atomic_uint *epoch;     /* index of the sync running or next to run */
	atomic_uint *finished;  /* writers done */
	unsigned id;
	struct wlog *log;
	unsigned nlog;
};

static void *writer(void *arg)
{
	struct mt *t = arg;
	unsigned seed = 777 + t->id;
	for (unsigned i = 0; i < WRITES_PER_THREAD; i++) {
		unsigned p = (unsigned)rand_r(&seed) % NPAGES;
		volatile uint64_t *w = page_ptr(t->f, p, t->id);
		uint32_t e1 = atomic_load(t->epoch);
		*w = ((uint64_t)t->id << 48) | (i + 1);  /* never 0: the hash must see a change */
		atomic_thread_fence(memory_order_seq_cst);  /* the store lands before we read e2 */
		uint32_t e2 = atomic_load(t->epoch);
		t->log[t->nlog++] = (struct wlog){ p, e1, e2 };
	}
	atomic_fetch_add(t->finished, 1);
	return NULL;
}

static void test_concurrent_writers(void **state)
{
	struct fixture *f = get(state);
	if (f->backend == MV_DIRTY_SOFT_DIRTY)
		skip();  /* read-then-clear is racy by design: see dirty_softdirty.c */
	start(f);
	struct mt t[WRITERS];
	pthread_t th[WRITERS];
	/* bitmaps[s] = pages reported by sync s */
	uint8_t (*seen)[NPAGES / 8] = calloc(MAX_SYNCS, NPAGES / 8);
	assert_non_null(seen);
	atomic_uint epoch = 0, finished = 0;
	for (unsigned i = 0; i < WRITERS; i++) {
		t[i] = (struct mt){ .f = f, .id = i, .epoch = &epoch, .finished = &finished };
		t[i].log = calloc(WRITES_PER_THREAD, sizeof(struct wlog));
	}
	for (unsigned i = 0; i < WRITERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, writer, &t[i]), 0);
	unsigned s = 0;
	while (atomic_load(&finished) < WRITERS) {
		if (s + 2 >= MAX_SYNCS)
			fail_msg("too many syncs");
		atomic_store(&epoch, s);  /* sync s starts after this */
		bool d[NPAGES];
		sync_pages(f, d);
		for (unsigned p = 0; p < NPAGES; p++)
			if (d[p])
				seen[s][p / 8] |= (uint8_t)(1u << (p % 8));
		s++;
		usleep(200);
	}
	for (unsigned i = 0; i < WRITERS; i++)
		pthread_join(th[i], NULL);
	/* One more sync after every writer is gone covers the last writes. */
	atomic_store(&epoch, s);
	bool d[NPAGES];
	sync_pages(f, d);
	for (unsigned p = 0; p < NPAGES; p++)
		if (d[p])
			seen[s][p / 8] |= (uint8_t)(1u << (p % 8));
	unsigned nsyncs = s + 1;
	uint64_t checked = 0;
	for (unsigned i = 0; i < WRITERS; i++) {
		for (unsigned k = 0; k < t[i].nlog; k++) {
			struct wlog w = t[i].log[k];
			bool ok = false;
			for (unsigned e = w.e1; e <= w.e2 + 1 && e < nsyncs && !ok; e++)
				ok = seen[e][w.page / 8] & (1u << (w.page % 8));
			if (!ok)
				fail_msg("write %u of thread %u to page %u (epochs %u..%u) was lost",
					 k, i, w.page, w.e1, w.e2);
			checked++;
		}
		free(t[i].log);
	}
	print_message("%s: %llu writes over %u syncs, none lost\n", mv_dirty_backend_name(f->backend),
		      (unsigned long long)checked, nsyncs);
	free(seen);
}

/* kB of the mapping at hva mapped by PMDs (a 2 MiB THP), from smaps. */
static unsigned long pmd_mapped_kb(const void *hva)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[256];
	bool in = false;
	unsigned long kb = 0, v;
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = lo == (uintptr_t)hva;
		else if (in && (sscanf(line, "ShmemPmdMapped: %lu kB", &v) == 1 ||
				sscanf(line, "FilePmdMapped: %lu kB", &v) == 1))
			kb += v;
	}
	fclose(f);
	return kb;
}

/* Region 0 filled before arming: on a host whose shmem THP serves madvised
 * mappings it is one 2 MiB page mapped by a PMD. Writes must still be seen
 * one 4 KiB page at a time (uffd-wp splits the PMD mapping, not the folio). */
static void test_huge_backed(void **state)
{
	struct fixture *f = get(state);
	const struct mv_mem_region *r0 = mv_guest_mem_region(f->m, 0);
	assert_int_equal(r0->pages, mv_mem_shmem_thp() ? MV_MEM_PAGES_THP : MV_MEM_PAGES_4K);
	for (unsigned p = 0; p < R0_PAGES; p++)
		*page_ptr(f, p, 1) = 0x5000 + p;
	unsigned long kb = pmd_mapped_kb(r0->hva);
	print_message("%s: region 0 is %s, %lu kB PMD-mapped\n", mv_dirty_backend_name(f->backend),
		      mv_mem_pages_name(r0->pages), kb);
	if (r0->pages == MV_MEM_PAGES_4K)
		assert_int_equal(kb, 0);
	start(f);
	bool want[NPAGES] = { 0 };
	expect_exact(f, want);
	unsigned set[] = { 0, 7, 8, 255, 256, R0_PAGES - 1, R0_PAGES + 3 };
	for (unsigned i = 0; i < MV_ARRAY_SIZE(set); i++) {
		*page_ptr(f, set[i], 2) = 0xbee0 + i;
		want[set[i]] = true;
	}
	expect_exact(f, want);
	memset(want, 0, sizeof(want));
	*page_ptr(f, 300, 0) = 1;
	want[300] = true;
	expect_exact(f, want);
	for (unsigned p = 0; p < R0_PAGES; p++)   /* nothing lost across the split */
		assert_int_equal(*page_ptr(f, p, 1), 0x5000 + p);
}

static void test_auto_and_names(void **state)
{
	assert_true(mv_dirty_backend_available(MV_DIRTY_AUTO));
	assert_true(mv_dirty_backend_available(MV_DIRTY_HASH));
	assert_string_equal(mv_dirty_backend_name(MV_DIRTY_UFFD_WP), "uffd-wp");
	assert_string_equal(mv_dirty_backend_name(MV_DIRTY_HASH), "hash");
	struct mv_mem_layout l;
	struct mv_guest_mem *m;
	struct mv_dirty_log *log;
	assert_int_equal(mv_mem_layout_create(4 * 1024 * 1024, "auto", MV_MEM_BACKING_4K, &l, NULL), 0);
	assert_int_equal(mv_guest_mem_map(&l, &m, NULL), 0);
	assert_int_equal(mv_dirty_start(m, MV_DIRTY_AUTO, &log, NULL), 0);
	enum mv_dirty_backend b = mv_dirty_backend_of(log);
	if (mv_dirty_backend_available(MV_DIRTY_UFFD_WP))
		assert_int_equal(b, MV_DIRTY_UFFD_WP);
	print_message("auto picked %s; soft-dirty %savailable\n", mv_dirty_backend_name(b),
		      mv_dirty_backend_available(MV_DIRTY_SOFT_DIRTY) ? "" : "not ");
	mv_dirty_stop(log);
	for (enum mv_dirty_backend x = MV_DIRTY_UFFD_WP; x <= MV_DIRTY_HASH; x++) {
		if (mv_dirty_backend_available(x))
			continue;
		struct mv_error *err = NULL;
		assert_int_equal(mv_dirty_start(m, x, &log, &err), -EOPNOTSUPP);
		mv_error_free(err);
	}
	mv_guest_mem_unmap(m);
	mv_mem_layout_close(&l);
}

static enum mv_dirty_backend b_uffd = MV_DIRTY_UFFD_WP, b_sd = MV_DIRTY_SOFT_DIRTY,
			     b_hash = MV_DIRTY_HASH;

#define PER_BACKEND(fn) \
	cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &b_uffd), \
	cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &b_sd), \
	cmocka_unit_test_prestate_setup_teardown(fn, setup, teardown, &b_hash)

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_auto_and_names),
		PER_BACKEND(test_known_set),
		PER_BACKEND(test_huge_backed),
		PER_BACKEND(test_random_rounds),
		PER_BACKEND(test_concurrent_writers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
