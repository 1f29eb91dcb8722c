/* Guest RAM layout: creates the memfds that back a VM's RAM (PC-style split
 * around the 3-4 GiB MMIO hole), and validates layouts received from other
 * processes. Used by memvisord (create) and memvisor-vmm (validate). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <linux/magic.h>
#include <linux/memfd.h>
#include "memvisor/util.h"
#include "mem_i.h"

#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)  /* log2(2 MiB) << MFD_HUGE_SHIFT */
#endif
#define HUGEPAGES_DIR "/sys/kernel/mm/hugepages/hugepages-2048kB/"

static uint64_t read_count(const char *path)
{
	FILE *f = fopen(path, "re");
	unsigned long long v = 0;
	if (!f)
		return 0;
	if (fscanf(f, "%llu", &v) != 1)
		v = 0;
	fclose(f);
	return v;
}

/* 2 MiB pages a new mapping can reserve right now; 0 when the pool is
 * absent or unreadable. free_hugepages still counts pages other mappings
 * reserved but have not faulted in yet. */
uint64_t mv_mem_hugepages_available(void)
{
	uint64_t free = read_count(HUGEPAGES_DIR "free_hugepages");
	uint64_t resv = read_count(HUGEPAGES_DIR "resv_hugepages");
	return free > resv ? free - resv : 0;
}

static int region_memfd(const char *name, unsigned idx, uint64_t size, bool huge,
			int *out, struct mv_error **err)
{
	char label[64];
	unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
	snprintf(label, sizeof(label), "%s-ram%u", name ? name : "memvisor", idx);
	if (huge)
		flags |= MFD_HUGETLB | MFD_HUGE_2MB;
	int fd = memfd_create(label, flags);
	if (fd < 0)
		return mv_err(err, -errno, "memfd_create(%s): %s", label, strerror(errno));
	if (ftruncate(fd, (off_t)size) < 0) {
		int e = -errno;
		close(fd);
		return mv_err(err, e, "sizing %s to %llu bytes: %s", label,
			      (unsigned long long)size, strerror(-e));
	}
	/* Another mapper (a VMM) must never be able to truncate RAM under us:
	 * a shrunk memfd turns guest accesses into SIGBUS. */
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0) {
		int e = -errno;
		close(fd);
		return mv_err(err, e, "sealing %s: %s", label, strerror(-e));
	}
	*out = fd;
	return 0;
}

int mv_mem_layout_create(uint64_t ram_size, const char *name, enum mv_mem_backing backing,
			 struct mv_mem_layout *out, struct mv_error **err)
{
	memset(out, 0, sizeof(*out));
	for (unsigned i = 0; i < MV_MEM_MAX_REGIONS; i++)
		out->r[i].fd = -1;
	if (ram_size == 0 || !MV_IS_ALIGNED(ram_size, MV_PAGE_SIZE) || ram_size > MV_MEM_MAX_RAM)
		return mv_err_field(err, -EINVAL, "memory",
				    "memory size %llu must be a non-zero multiple of 4 KiB, at most 1 TiB",
				    (unsigned long long)ram_size);

	bool huge_ok = MV_IS_ALIGNED(ram_size, MV_HUGE_PAGE_SIZE) &&
		       mv_mem_hugepages_available() >= ram_size / MV_HUGE_PAGE_SIZE;
	bool huge;
	switch (backing) {
	case MV_MEM_BACKING_AUTO:
		huge = huge_ok;
		break;
	case MV_MEM_BACKING_4K:
		huge = false;
		break;
	case MV_MEM_BACKING_HUGETLB:
		if (!MV_IS_ALIGNED(ram_size, MV_HUGE_PAGE_SIZE))
			return mv_err_field(err, -EINVAL, "memory",
					    "hugetlb memory size must be a multiple of 2 MiB");
		if (!huge_ok)
			return mv_err_field(err, -ENOMEM, "memory",
					    "not enough free 2 MiB huge pages for %llu MiB",
					    (unsigned long long)(ram_size >> 20));
		huge = true;
		break;
	default:
		return mv_err_field(err, -EINVAL, "backing", "unknown memory backing %d", (int)backing);
	}

	uint64_t low = ram_size < MV_MEM_LOW_LIMIT ? ram_size : MV_MEM_LOW_LIMIT;
	out->r[0] = (struct mv_mem_region_desc){ .gpa = 0, .size = low,
						 .flags = huge ? MV_MEM_HUGETLB : 0, .fd = -1 };
	out->n = 1;
	if (ram_size > low) {
		out->r[1] = (struct mv_mem_region_desc){ .gpa = MV_MEM_HIGH_BASE, .size = ram_size - low,
							 .flags = out->r[0].flags, .fd = -1 };
		out->n = 2;
	}
	for (unsigned i = 0; i < out->n; i++) {
		int ret = region_memfd(name, i, out->r[i].size, huge, &out->r[i].fd, err);
		if (ret < 0) {
			mv_mem_layout_close(out);
			return ret;
		}
	}
	return 0;
}

void mv_mem_layout_close(struct mv_mem_layout *l)
{
	if (!l)
		return;
	for (unsigned i = 0; i < l->n && i < MV_MEM_MAX_REGIONS; i++) {
		if (l->r[i].fd >= 0)
			close(l->r[i].fd);
		l->r[i].fd = -1;
	}
}

uint64_t mv_mem_layout_ram_size(const struct mv_mem_layout *l)
{
	uint64_t s = 0;
	for (unsigned i = 0; i < l->n && i < MV_MEM_MAX_REGIONS; i++)
		s += l->r[i].size;
	return s;
}

static int check_fd(const struct mv_mem_layout *l, unsigned i, struct mv_error **err)
{
	const struct mv_mem_region_desc *r = &l->r[i];
	char field[32];
	struct stat st;
	struct statfs sfs;
	snprintf(field, sizeof(field), "regions[%u].fd", i);

	if (r->fd < 0 || fstat(r->fd, &st) < 0)
		return mv_err_field(err, -EBADF, field, "region %u has no usable fd", i);
	if (!S_ISREG(st.st_mode))
		return mv_err_field(err, -EINVAL, field, "region %u fd is not a memfd", i);
	if ((uint64_t)st.st_size < r->size)
		return mv_err_field(err, -EINVAL, field, "region %u memfd holds %lld bytes, needs %llu",
				    i, (long long)st.st_size, (unsigned long long)r->size);
	/* Only shmem and hugetlbfs files carry seals: F_GET_SEALS tells a memfd
	 * from a regular file that could live on disk. */
	if (fcntl(r->fd, F_GET_SEALS) < 0)
		return mv_err_field(err, -EINVAL, field, "region %u fd is not a memfd", i);
	bool is_huge = fstatfs(r->fd, &sfs) == 0 && sfs.f_type == HUGETLBFS_MAGIC;
	if (is_huge != !!(r->flags & MV_MEM_HUGETLB))
		return mv_err_field(err, -EINVAL, field, "region %u fd %s hugetlbfs but flags say otherwise",
				    i, is_huge ? "is" : "is not");
	for (unsigned j = 0; j < i; j++) {
		struct stat o;
		if (fstat(l->r[j].fd, &o) == 0 && o.st_dev == st.st_dev && o.st_ino == st.st_ino)
			return mv_err_field(err, -EINVAL, field, "regions %u and %u share one memfd", j, i);
	}
	return 0;
}

int mv_mem_layout_validate(const struct mv_mem_layout *l, bool check_fds, struct mv_error **err)
{
	if (!l || l->n == 0 || l->n > MV_MEM_MAX_REGIONS)
		return mv_err_field(err, -EINVAL, "regions", "a layout needs 1 to %d regions, has %u",
				    MV_MEM_MAX_REGIONS, l ? l->n : 0);
	uint64_t total = 0;
	for (unsigned i = 0; i < l->n; i++) {
		const struct mv_mem_region_desc *r = &l->r[i];
		uint64_t align = (r->flags & MV_MEM_HUGETLB) ? MV_HUGE_PAGE_SIZE : MV_PAGE_SIZE;
		char field[32];
		snprintf(field, sizeof(field), "regions[%u]", i);
		if (r->flags & ~(uint32_t)MV_MEM_HUGETLB)
			return mv_err_field(err, -EINVAL, field, "region %u has unknown flags %#x", i, r->flags);
		if (r->size == 0 || !MV_IS_ALIGNED(r->gpa, align) || !MV_IS_ALIGNED(r->size, align))
			return mv_err_field(err, -EINVAL, field,
					    "region %u [%#llx +%#llx] must be non-empty and %llu-byte aligned", i,
					    (unsigned long long)r->gpa, (unsigned long long)r->size,
					    (unsigned long long)align);
		if (r->gpa + r->size < r->gpa)
			return mv_err_field(err, -EINVAL, field, "region %u wraps past the top of the GPA space", i);
		if (i > 0 && r->gpa < l->r[i - 1].gpa + l->r[i - 1].size)
			return mv_err_field(err, -EINVAL, field, "region %u overlaps or precedes region %u",
					    i, i - 1);
		if (r->size > MV_MEM_MAX_RAM - total)
			return mv_err_field(err, -EINVAL, field, "layout exceeds %llu bytes of RAM",
					    (unsigned long long)MV_MEM_MAX_RAM);
		total += r->size;
	}
	if (check_fds) {
		for (unsigned i = 0; i < l->n; i++) {
			int ret = check_fd(l, i, err);
			if (ret < 0)
				return ret;
		}
	}
	return 0;
}
