/* Kernel ABI for userfaultfd async write-protect and the PAGEMAP_SCAN ioctl
 * (Linux 6.7+), which Debian 12's headers predate. Values follow the kernel's
 * include/uapi/linux/{fs,userfaultfd}.h; each is guarded so newer headers win.
 * Used only by the guest-memory dirty backends (dirty_uffd.c, dirty.c). */
#ifndef MV_MEM_UFFD_ABI_I_H
#define MV_MEM_UFFD_ABI_I_H

#include <stdint.h>
#include <linux/fs.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

#ifndef PAGEMAP_SCAN
/* Categories, both as filters (pm_scan_arg masks) and as output. */
#define PAGE_IS_WPALLOWED  (1 << 0)
#define PAGE_IS_WRITTEN    (1 << 1)
#define PAGE_IS_FILE       (1 << 2)
#define PAGE_IS_PRESENT    (1 << 3)
#define PAGE_IS_SWAPPED    (1 << 4)
#define PAGE_IS_PFNZERO    (1 << 5)
#define PAGE_IS_HUGE       (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)

/* One output run: [start, end) with the same categories. */
struct page_region {
	uint64_t start;
	uint64_t end;
	uint64_t categories;
};

#define PM_SCAN_WP_MATCHING   (1 << 0)  /* write-protect the pages reported */
#define PM_SCAN_CHECK_WPASYNC (1 << 1)  /* fail if a page lacks async uffd-wp */

struct pm_scan_arg {
	uint64_t size;              /* sizeof(struct pm_scan_arg) */
	uint64_t flags;
	uint64_t start;
	uint64_t end;
	uint64_t walk_end;          /* out: where the walk stopped */
	uint64_t vec;               /* struct page_region * */
	uint64_t vec_len;
	uint64_t max_pages;         /* 0: no limit */
	uint64_t category_inverted;
	uint64_t category_mask;
	uint64_t category_anyof_mask;
	uint64_t return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

#endif
