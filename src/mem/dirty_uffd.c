/* Dirty backend "uffd-wp": userfaultfd asynchronous write-protect (the kernel
 * resolves WP faults itself and just clears the PTE's uffd-wp bit) read back
 * and re-armed with one PAGEMAP_SCAN ioctl per region. Needs Linux 6.7+.
 * Sees writes made through this process's mappings only. Used by dirty.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "dirty_i.h"

#define UFFD_WANT (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | \
		   UFFD_FEATURE_WP_HUGETLBFS_SHMEM)
#define VEC_MAX 65536u

int mv_uffd_open(uint64_t features)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	/* With vm.unprivileged_userfaultfd=0, unprivileged callers may still
	 * handle user-mode faults, which is all a guest workload produces. */
	if (fd < 0 && errno == EPERM)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		return -errno;
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	/* Kernels without one of the features refuse the whole request (EINVAL). */
	int e = ioctl(fd, UFFDIO_API, &api) < 0 ? -errno : 0;
	if (e == 0 && (api.features & features) != features)
		e = -EOPNOTSUPP;
	if (e < 0) {
		close(fd);
		return e == -EINVAL ? -EOPNOTSUPP : e;
	}
	return fd;
}

/* Registers [addr, addr+len) for WP tracking and write-protects it all,
 * populated or not (shmem/hugetlb use PTE markers for holes). */
static int uffd_arm(int uffd, void *addr, uint64_t len)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	if (!(reg.ioctls & (1ULL << _UFFDIO_WRITEPROTECT)))
		return -EOPNOTSUPP;
	struct uffdio_writeprotect wp = {
		.range = { .start = (uintptr_t)addr, .len = len },
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,
	};
	if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
		return -errno;
	return 0;
}

/* Reports the pages of [base, base+len) written since the last scan into bm
 * (bit p = page p from base) and write-protects them again, atomically per
 * PTE, so a write racing with the scan lands in this scan or the next. */
static int uffd_scan(int pagemap_fd, uint8_t *base, uint64_t len, struct page_region *vec,
		     uint64_t vec_len, uint64_t *bm)
{
	uint64_t start = (uintptr_t)base, end = start + len;
	/* No PM_SCAN_CHECK_WPASYNC: a fused page is a read-only mapping of the
	 * fusion pool that cannot be registered (its fd is read-only), and a
	 * copy-on-write remaps a page before re-registering it; the scan skips
	 * such VMAs, which cannot have been written through. Arming checked
	 * every region's registration at start. */
	struct pm_scan_arg a = {
		.size = sizeof(a),
		.flags = PM_SCAN_WP_MATCHING,
		.start = start,
		.end = end,
		.vec = (uintptr_t)vec,
		.vec_len = vec_len,
		.category_mask = PAGE_IS_WRITTEN,
		.return_mask = PAGE_IS_WRITTEN,
	};
	for (;;) {
		/* No retry on EINTR: pages already re-armed might not have
		 * reached vec, so the caller must treat the sync as failed. */
		long n = ioctl(pagemap_fd, PAGEMAP_SCAN, &a);
		if (n < 0)
			return -errno;
		for (long i = 0; i < n; i++) {
			uint64_t s = vec[i].start < start ? start : vec[i].start;
			uint64_t e = vec[i].end > end ? end : vec[i].end;
			if (e > s)
				mv_bitmap_set_range(bm, (s - start) / MV_PAGE_SIZE, (e - s) / MV_PAGE_SIZE);
		}
		/* The walk stops early when vec fills: resume where it ended. */
		if (a.walk_end >= end)
			return 0;
		if (a.walk_end < a.start)
			return -EIO;
		a.start = a.walk_end;
	}
}

static bool uffd_probe(void)
{
	bool ok = false;
	uint64_t bm = 0;
	struct page_region vec[4];
	uint8_t *p = MAP_FAILED;
	int pm = -1, uffd = -1, mfd = memfd_create("mv-uffd-probe", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, 2 * MV_PAGE_SIZE) < 0)
		goto out;
	p = mmap(NULL, 2 * MV_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (p == MAP_FAILED)
		goto out;
	p[0] = 1;  /* page 0 populated before arming, page 1 never touched */
	pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	uffd = mv_uffd_open(UFFD_WANT);
	if (pm < 0 || uffd < 0 || uffd_arm(uffd, p, 2 * MV_PAGE_SIZE) < 0)
		goto unmap;
	if (uffd_scan(pm, p, 2 * MV_PAGE_SIZE, vec, 4, &bm) < 0 || bm != 0)
		goto unmap;
	p[0] = 2;
	p[MV_PAGE_SIZE] = 2;
	if (uffd_scan(pm, p, 2 * MV_PAGE_SIZE, vec, 4, &bm) < 0 || bm != 3)
		goto unmap;
	bm = 0;
	ok = uffd_scan(pm, p, 2 * MV_PAGE_SIZE, vec, 4, &bm) == 0 && bm == 0;
unmap:
	munmap(p, 2 * MV_PAGE_SIZE);
out:
	if (uffd >= 0)
		close(uffd);
	if (pm >= 0)
		close(pm);
	if (mfd >= 0)
		close(mfd);
	return ok;
}

static void uffd_stop(struct mv_dirty_log *log)
{
	/* Closing the uffd unregisters the ranges and drops the WP bits. */
	if (log->uffd.uffd >= 0)
		close(log->uffd.uffd);
	if (log->uffd.pagemap_fd >= 0)
		close(log->uffd.pagemap_fd);
	free(log->uffd.vec);
}

static int uffd_start(struct mv_dirty_log *log, struct mv_error **err)
{
	struct mv_guest_mem *m = log->m;
	uint64_t most = 0;
	int ret;
	log->uffd.pagemap_fd = -1;
	log->uffd.uffd = mv_uffd_open(UFFD_WANT);
	if (log->uffd.uffd < 0) {
		ret = mv_err(err, log->uffd.uffd, "userfaultfd with async WP: %s", strerror(-log->uffd.uffd));
		log->uffd.uffd = -1;
		goto fail;
	}
	log->uffd.pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (log->uffd.pagemap_fd < 0) {
		ret = mv_err(err, -errno, "opening /proc/self/pagemap: %s", strerror(errno));
		goto fail;
	}
	for (unsigned i = 0; i < m->n; i++)
		most = log->npages[i] > most ? log->npages[i] : most;
	/* Worst case is every other page dirty; past VEC_MAX runs we loop. */
	log->uffd.vec_len = most / 2 + 1 < VEC_MAX ? most / 2 + 1 : VEC_MAX;
	log->uffd.vec = calloc(log->uffd.vec_len, sizeof(struct page_region));
	if (!log->uffd.vec)
		abort();
	for (unsigned i = 0; i < m->n; i++) {
		ret = uffd_arm(log->uffd.uffd, m->r[i].hva, m->r[i].size);
		if (ret < 0) {
			mv_err(err, ret, "write-protecting region %u: %s", i, strerror(-ret));
			goto fail;
		}
	}
	return 0;
fail:
	uffd_stop(log);
	log->uffd.uffd = log->uffd.pagemap_fd = -1;
	log->uffd.vec = NULL;
	return ret;
}

static int uffd_sync(struct mv_dirty_log *log, struct mv_error **err)
{
	struct mv_guest_mem *m = log->m;
	for (unsigned i = 0; i < m->n; i++) {
		int ret = uffd_scan(log->uffd.pagemap_fd, m->r[i].hva, m->r[i].size,
				    log->uffd.vec, log->uffd.vec_len, log->bitmap[i]);
		if (ret < 0)
			return mv_err(err, ret, "PAGEMAP_SCAN of region %u: %s", i, strerror(-ret));
	}
	return 0;
}

int mv_dirty_uffd_rearm(struct mv_dirty_log *log, void *addr, uint64_t len)
{
	return uffd_arm(log->uffd.uffd, addr, len);
}

const struct mv_dirty_ops mv_dirty_uffd_ops = {
	.backend = MV_DIRTY_UFFD_WP,
	.probe = uffd_probe,
	.start = uffd_start,
	.sync = uffd_sync,
	.stop = uffd_stop,
};
