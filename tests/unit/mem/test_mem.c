/* Unit tests of guest-memory layouts and mappings: sizes, the PC hole,
 * seals, validation of received layouts, GPA->HVA edge cases, and a 64 GiB
 * sparse guest that must cost nothing until touched. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "memvisor/mem.h"
#include "memvisor/util.h"

#define GiB (1ULL << 30)
#define MiB (1ULL << 20)

static void check_bad_size(uint64_t size)
{
	struct mv_mem_layout l;
	struct mv_error *err = NULL;
	assert_int_equal(mv_mem_layout_create(size, "t", MV_MEM_BACKING_AUTO, &l, &err), -EINVAL);
	assert_non_null(err);
	assert_string_equal(err->field, "memory");
	mv_error_free(err);
}

static void test_layout_bad_sizes(void **state)
{
	check_bad_size(0);
	check_bad_size(4095);
	check_bad_size(16 * MiB + 1);
	check_bad_size(MV_MEM_MAX_RAM + MV_PAGE_SIZE);
	check_bad_size(UINT64_MAX & ~(MV_PAGE_SIZE - 1));

	struct mv_mem_layout l;
	struct mv_error *err = NULL;
	/* hugetlb needs 2 MiB multiples, whatever the pool holds */
	assert_int_equal(mv_mem_layout_create(2 * MiB + 4096, "t", MV_MEM_BACKING_HUGETLB, &l, &err),
			 -EINVAL);
	mv_error_free(err);
}

static void test_layout_small_sealed(void **state)
{
	struct mv_mem_layout l;
	struct mv_error *err = NULL;
	assert_int_equal(mv_mem_layout_create(16 * MiB, "small", MV_MEM_BACKING_4K, &l, &err), 0);
	assert_int_equal(l.n, 1);
	assert_int_equal(l.r[0].gpa, 0);
	assert_int_equal(l.r[0].size, 16 * MiB);
	assert_int_equal(l.r[0].flags, 0);
	assert_true(l.r[0].fd >= 0);
	assert_int_equal(mv_mem_layout_ram_size(&l), 16 * MiB);
	int seals = fcntl(l.r[0].fd, F_GET_SEALS);
	assert_true(seals & F_SEAL_SHRINK);
	assert_true(seals & F_SEAL_GROW);
	assert_int_equal(ftruncate(l.r[0].fd, 4096), -1);
	assert_int_equal(errno, EPERM);
	assert_int_equal(mv_mem_layout_validate(&l, true, &err), 0);
	assert_true(fcntl(l.r[0].fd, F_GETFD) & FD_CLOEXEC);
	mv_mem_layout_close(&l);
	assert_int_equal(l.r[0].fd, -1);
}

static void test_layout_pc_hole(void **state)
{
	struct mv_mem_layout l;
	assert_int_equal(mv_mem_layout_create(3 * GiB, "exact", MV_MEM_BACKING_4K, &l, NULL), 0);
	assert_int_equal(l.n, 1);
	mv_mem_layout_close(&l);

	assert_int_equal(mv_mem_layout_create(4 * GiB, "split", MV_MEM_BACKING_AUTO, &l, NULL), 0);
	assert_int_equal(l.n, 2);
	assert_int_equal(l.r[0].gpa, 0);
	assert_int_equal(l.r[0].size, 3 * GiB);
	assert_int_equal(l.r[1].gpa, MV_MEM_HIGH_BASE);
	assert_int_equal(l.r[1].size, 1 * GiB);
	assert_int_equal(mv_mem_layout_ram_size(&l), 4 * GiB);
	assert_int_equal(mv_mem_layout_validate(&l, true, NULL), 0);
	mv_mem_layout_close(&l);
}

static uint64_t rss_kib(void)
{
	FILE *f = fopen("/proc/self/statm", "re");
	unsigned long long size = 0, res = 0;
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%llu %llu", &size, &res), 2);
	fclose(f);
	return res * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
}

static void test_layout_64g_sparse(void **state)
{
	struct mv_mem_layout l;
	struct mv_guest_mem *m = NULL;
	struct mv_error *err = NULL;
	uint64_t rss0 = rss_kib(), t0 = mv_now_ns();
	assert_int_equal(mv_mem_layout_create(64 * GiB, "sparse", MV_MEM_BACKING_4K, &l, &err), 0);
	assert_int_equal(mv_guest_mem_map(&l, &m, &err), 0);
	assert_int_equal(mv_guest_mem_ram_size(m), 64 * GiB);
	assert_int_equal(mv_guest_mem_nregions(m), 2);
	/* Touch one page at each end of each region. */
	uint64_t gpas[] = { 0, 3 * GiB - 4096, 4 * GiB, 4 * GiB + 61 * GiB - 4096 };
	for (unsigned i = 0; i < MV_ARRAY_SIZE(gpas); i++) {
		uint64_t *p = mv_gpa_to_hva(m, gpas[i], 8);
		assert_non_null(p);
		*p = gpas[i] | 1;
	}
	uint64_t dt_ms = (mv_now_ns() - t0) / 1000000;
	uint64_t rss1 = rss_kib();
	struct stat st;
	uint64_t blocks = 0;
	for (unsigned i = 0; i < l.n; i++) {
		assert_int_equal(fstat(l.r[i].fd, &st), 0);
		blocks += (uint64_t)st.st_blocks * 512;
	}
	/* Only the four touched pages exist (a 2 MiB page each where shmem THP
	 * backs guest RAM), and RSS grew by about that much. */
	uint64_t granule = mv_guest_mem_region(m, 0)->pages == MV_MEM_PAGES_THP ? 2 << 20 : 4096;
	assert_true(blocks <= 4 * granule);
	assert_true(rss1 < rss0 + 4 * granule / 1024 + 8 * 1024);
	assert_true(dt_ms < 2000);
	for (unsigned i = 0; i < MV_ARRAY_SIZE(gpas); i++)
		assert_int_equal(*(uint64_t *)mv_gpa_to_hva(m, gpas[i], 8), gpas[i] | 1);
	mv_guest_mem_unmap(m);
	mv_mem_layout_close(&l);
}

/* A valid two-region layout of small memfds for the validation tests. */
static void small_layout(struct mv_mem_layout *l)
{
	memset(l, 0, sizeof(*l));
	l->n = 2;
	l->r[0] = (struct mv_mem_region_desc){ .gpa = 0, .size = 1 * MiB, .fd = -1 };
	l->r[1] = (struct mv_mem_region_desc){ .gpa = 4 * GiB, .size = 2 * MiB, .fd = -1 };
	for (unsigned i = 0; i < 2; i++) {
		l->r[i].fd = memfd_create("v", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		assert_true(l->r[i].fd >= 0);
		assert_int_equal(ftruncate(l->r[i].fd, (off_t)l->r[i].size), 0);
	}
}

static void expect_invalid(const struct mv_mem_layout *l, bool fds)
{
	struct mv_error *err = NULL;
	assert_int_not_equal(mv_mem_layout_validate(l, fds, &err), 0);
	assert_non_null(err);
	assert_true(err->field[0] != '\0');
	mv_error_free(err);
}

static void test_layout_validate(void **state)
{
	struct mv_mem_layout l, b;
	small_layout(&l);
	assert_int_equal(mv_mem_layout_validate(&l, true, NULL), 0);

	b = l; b.n = 0; expect_invalid(&b, false);
	b = l; b.n = MV_MEM_MAX_REGIONS + 1; expect_invalid(&b, false);
	b = l; b.r[0].size = 0; expect_invalid(&b, false);
	b = l; b.r[0].gpa = 100; expect_invalid(&b, false);
	b = l; b.r[1].size = 4097; expect_invalid(&b, false);
	b = l; b.r[1].gpa = 512 * 1024; expect_invalid(&b, false);            /* overlap */
	b = l; b.r[0].gpa = 8 * GiB; expect_invalid(&b, false);               /* unsorted */
	b = l; b.r[1].flags = 0x80; expect_invalid(&b, false);                /* unknown flag */
	b = l; b.r[1].flags = MV_MEM_HUGETLB; b.r[1].gpa = 4 * GiB + 4096;
	expect_invalid(&b, false);                                            /* 2 MiB alignment */
	b = l; b.r[1].gpa = UINT64_MAX - 4095 - 4096; b.r[1].size = 2 * 4096;
	expect_invalid(&b, false);                                            /* wraps */
	b = l; b.r[1].size = MV_MEM_MAX_RAM; expect_invalid(&b, false);       /* too much RAM */

	/* fd checks */
	b = l; b.r[1].fd = -1; expect_invalid(&b, true);
	assert_int_equal(mv_mem_layout_validate(&b, false, NULL), 0);
	b = l; b.r[1].size = 4 * MiB; expect_invalid(&b, true);               /* memfd too small */
	b = l; b.r[1].fd = l.r[0].fd; b.r[1].size = 1 * MiB; expect_invalid(&b, true); /* shared fd */
	b = l; b.r[1].flags = MV_MEM_HUGETLB; expect_invalid(&b, true);       /* not hugetlbfs */
	int disk = open("/var/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (disk >= 0) {
		assert_int_equal(ftruncate(disk, 4 * MiB), 0);
		b = l; b.r[1].fd = disk; expect_invalid(&b, true);            /* not a memfd */
		close(disk);
	}
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);
	b = l; b.r[1].fd = pfd[0]; expect_invalid(&b, true);
	close(pfd[0]);
	close(pfd[1]);
	mv_mem_layout_close(&l);
}

static void test_gpa_to_hva(void **state)
{
	struct mv_mem_layout l;
	struct mv_guest_mem *m = NULL;
	assert_int_equal(mv_mem_layout_create(3 * GiB + 8 * MiB, "gpa", MV_MEM_BACKING_4K, &l, NULL), 0);
	assert_int_equal(mv_guest_mem_map(&l, &m, NULL), 0);
	const struct mv_mem_region *r0 = mv_guest_mem_region(m, 0), *r1 = mv_guest_mem_region(m, 1);
	assert_non_null(r1);
	assert_null(mv_guest_mem_region(m, 2));
	assert_int_not_equal(r0->fd, l.r[0].fd);  /* dup'ed */
	uint64_t top = 4 * GiB + 8 * MiB;

	assert_ptr_equal(mv_gpa_to_hva(m, 0, 1), r0->hva);
	assert_ptr_equal(mv_gpa_to_hva(m, 3 * GiB - 1, 1), r0->hva + 3 * GiB - 1);
	assert_ptr_equal(mv_gpa_to_hva(m, 0, 3 * GiB), r0->hva);
	assert_null(mv_gpa_to_hva(m, 0, 3 * GiB + 1));
	assert_null(mv_gpa_to_hva(m, 3 * GiB - 1, 2));       /* runs into the hole */
	assert_null(mv_gpa_to_hva(m, 3 * GiB, 1));           /* the hole */
	assert_null(mv_gpa_to_hva(m, 4 * GiB - 1, 1));
	assert_null(mv_gpa_to_hva(m, 4 * GiB - 1, 2));       /* straddles hole and region 1 */
	assert_ptr_equal(mv_gpa_to_hva(m, 4 * GiB, 1), r1->hva);
	assert_ptr_equal(mv_gpa_to_hva(m, top - 4096, 4096), r1->hva + 8 * MiB - 4096);
	assert_null(mv_gpa_to_hva(m, top - 4096, 4097));
	assert_null(mv_gpa_to_hva(m, top, 1));
	assert_null(mv_gpa_to_hva(m, top, 0));
	assert_ptr_equal(mv_gpa_to_hva(m, 5, 0), r0->hva + 5);
	assert_null(mv_gpa_to_hva(m, UINT64_MAX, 1));
	assert_null(mv_gpa_to_hva(m, UINT64_MAX, UINT64_MAX));
	assert_null(mv_gpa_to_hva(m, 4096, UINT64_MAX));      /* gpa + len wraps */
	assert_null(mv_gpa_to_hva(m, 4 * GiB + 4096, UINT64_MAX - 4095));
	/* Alternate regions so the last-hit cache both hits and misses. */
	for (unsigned i = 0; i < 1000; i++) {
		uint64_t g = (i & 1) ? 4 * GiB + (i * 4096ULL) % (8 * MiB) : (i * 7919ULL * 4096) % (3 * GiB);
		uint8_t *p = mv_gpa_to_hva(m, g, 8);
		assert_non_null(p);
		assert_ptr_equal(p, (i & 1) ? r1->hva + (g - 4 * GiB) : r0->hva + g);
	}
	assert_int_equal(mv_guest_mem_find(m, 0), 0);
	assert_int_equal(mv_guest_mem_find(m, 3 * GiB - 1), 0);
	assert_int_equal(mv_guest_mem_find(m, 3 * GiB), -1);
	assert_int_equal(mv_guest_mem_find(m, 4 * GiB), 1);
	assert_int_equal(mv_guest_mem_find(m, top - 1), 1);
	assert_int_equal(mv_guest_mem_find(m, top), -1);
	assert_int_equal(mv_guest_mem_find(m, UINT64_MAX), -1);
	/* Same memory seen through the layout fd (another mapper). */
	*(uint32_t *)mv_gpa_to_hva(m, 4 * GiB + 8192, 4) = 0xfeedf00d;
	uint32_t v = 0;
	assert_int_equal(pread(l.r[1].fd, &v, 4, 8192), 4);
	assert_int_equal(v, 0xfeedf00d);
	mv_guest_mem_unmap(m);
	mv_mem_layout_close(&l);
}

static void test_map_rejects_bad_layout(void **state)
{
	struct mv_mem_layout l;
	struct mv_guest_mem *m = (void *)1;
	struct mv_error *err = NULL;
	small_layout(&l);
	l.r[1].size = 64 * MiB;  /* larger than its memfd */
	assert_int_equal(mv_guest_mem_map(&l, &m, &err), -EINVAL);
	assert_null(m);
	mv_error_free(err);
	mv_mem_layout_close(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout_bad_sizes),
		cmocka_unit_test(test_layout_small_sealed),
		cmocka_unit_test(test_layout_pc_hole),
		cmocka_unit_test(test_layout_64g_sparse),
		cmocka_unit_test(test_layout_validate),
		cmocka_unit_test(test_gpa_to_hva),
		cmocka_unit_test(test_map_rejects_bad_layout),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
