/* Dirty backend "soft-dirty": clear the PTE soft-dirty bits through
 * /proc/self/clear_refs and read them back from /proc/self/pagemap (bit 55).
 * Needs CONFIG_MEM_SOFT_DIRTY, hence a functional probe. Used by dirty.c.
 *
 * Limits (why it ranks below uffd-wp): clear_refs acts on the whole process,
 * so two soft-dirty logs in one process disturb each other; and reading and
 * clearing are two steps, so a write landing on an already-read page before
 * the clear is lost. It is exact only when writers pause during a sync. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "dirty_i.h"

#define PM_SOFT_DIRTY (1ULL << 55)
#define BUF_ENTRIES 65536u

static int clear_soft_dirty(int clear_refs_fd)
{
	return pwrite(clear_refs_fd, "4", 1, 0) == 1 ? 0 : -errno;
}

static int read_entry(int pm, const void *addr, uint64_t *out)
{
	off_t off = (off_t)((uintptr_t)addr / MV_PAGE_SIZE * sizeof(uint64_t));
	return pread(pm, out, sizeof(*out), off) == (ssize_t)sizeof(*out) ? 0 : -EIO;
}

static bool sd_probe(void)
{
	bool ok = false;
	uint64_t e1 = 0, e2 = 0;
	volatile uint8_t *p = MAP_FAILED;
	int pm = -1, cr = -1, mfd = memfd_create("mv-sd-probe", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, MV_PAGE_SIZE) < 0)
		goto out;
	p = mmap(NULL, MV_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (p == MAP_FAILED)
		goto out;
	p[0] = 1;
	pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	cr = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	if (pm < 0 || cr < 0 || clear_soft_dirty(cr) < 0 || read_entry(pm, (void *)p, &e1) < 0)
		goto unmap;
	p[0] = 2;
	if (read_entry(pm, (void *)p, &e2) < 0)
		goto unmap;
	/* Without CONFIG_MEM_SOFT_DIRTY the clear "succeeds" and bit 55 never moves. */
	ok = !(e1 & PM_SOFT_DIRTY) && (e2 & PM_SOFT_DIRTY);
unmap:
	munmap((void *)p, MV_PAGE_SIZE);
out:
	if (cr >= 0)
		close(cr);
	if (pm >= 0)
		close(pm);
	if (mfd >= 0)
		close(mfd);
	return ok;
}

static void sd_stop(struct mv_dirty_log *log)
{
	if (log->sd.pagemap_fd >= 0)
		close(log->sd.pagemap_fd);
	if (log->sd.clear_refs_fd >= 0)
		close(log->sd.clear_refs_fd);
	free(log->sd.buf);
}

static int sd_start(struct mv_dirty_log *log, struct mv_error **err)
{
	int ret;
	log->sd.pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	log->sd.clear_refs_fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	if (log->sd.pagemap_fd < 0 || log->sd.clear_refs_fd < 0) {
		ret = mv_err(err, -errno, "opening /proc/self/pagemap or clear_refs: %s", strerror(errno));
		goto fail;
	}
	log->sd.buf_len = BUF_ENTRIES;
	log->sd.buf = malloc(BUF_ENTRIES * sizeof(uint64_t));
	if (!log->sd.buf)
		abort();
	ret = clear_soft_dirty(log->sd.clear_refs_fd);
	if (ret < 0) {
		mv_err(err, ret, "clearing soft-dirty bits: %s", strerror(-ret));
		goto fail;
	}
	return 0;
fail:
	sd_stop(log);
	log->sd.pagemap_fd = log->sd.clear_refs_fd = -1;
	log->sd.buf = NULL;
	return ret;
}

static int sd_read_region(struct mv_dirty_log *log, unsigned i)
{
	const struct mv_mem_region *r = &log->m->r[i];
	uint64_t npages = log->npages[i];
	off_t base = (off_t)((uintptr_t)r->hva / MV_PAGE_SIZE * sizeof(uint64_t));
	for (uint64_t p = 0; p < npages;) {
		uint64_t want = npages - p < log->sd.buf_len ? npages - p : log->sd.buf_len;
		ssize_t got = pread(log->sd.pagemap_fd, log->sd.buf, want * sizeof(uint64_t),
				    base + (off_t)(p * sizeof(uint64_t)));
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return got < 0 ? -errno : -EIO;
		uint64_t n = (uint64_t)got / sizeof(uint64_t);
		for (uint64_t k = 0; k < n; k++)
			if (log->sd.buf[k] & PM_SOFT_DIRTY)
				log->bitmap[i][(p + k) / 64] |= 1ULL << ((p + k) & 63);
		p += n;
	}
	return 0;
}

static int sd_sync(struct mv_dirty_log *log, struct mv_error **err)
{
	for (unsigned i = 0; i < log->m->n; i++) {
		int ret = sd_read_region(log, i);
		if (ret < 0)
			return mv_err(err, ret, "reading pagemap of region %u: %s", i, strerror(-ret));
	}
	int ret = clear_soft_dirty(log->sd.clear_refs_fd);
	if (ret < 0)
		return mv_err(err, ret, "clearing soft-dirty bits: %s", strerror(-ret));
	return 0;
}

const struct mv_dirty_ops mv_dirty_softdirty_ops = {
	.backend = MV_DIRTY_SOFT_DIRTY,
	.probe = sd_probe,
	.start = sd_start,
	.sync = sd_sync,
	.stop = sd_stop,
};
