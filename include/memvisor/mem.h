/* Guest memory: guest RAM as memfd regions ("host physical" memory) that the
 * daemon allocates and owns, mapped by a VMM process; GPA->HVA translation;
 * dirty-page tracking. Used by memvisord (allocation), memvisor-vmm (mapping,
 * workloads, dirty log), migration and the page-fusion guard. */
#ifndef MEMVISOR_MEM_H
#define MEMVISOR_MEM_H

#include <stdbool.h>
#include <stdint.h>
#include "memvisor/error.h"

#define MV_MEM_MAX_REGIONS 8
#define MV_HUGE_PAGE_SIZE (2ULL << 20)   /* hugetlb and THP pages */
/* Guest RAM above this GPA is relocated past 4 GiB, as on a PC (the hole holds MMIO). */
#define MV_MEM_LOW_LIMIT (3ULL << 30)
#define MV_MEM_HIGH_BASE (4ULL << 30)
#define MV_MEM_MAX_RAM (1ULL << 40)

enum mv_mem_flags {
	MV_MEM_HUGETLB = 1u << 0,   /* region is backed by 2 MiB hugetlbfs pages */
};

struct mv_mem_region_desc {
	uint64_t gpa;
	uint64_t size;
	uint32_t flags;      /* enum mv_mem_flags */
	int fd;              /* memfd; owner documented by the holder */
};

/* The RAM layout of one VM: regions sorted by gpa, non-overlapping, page
 * aligned (2 MiB aligned for hugetlb). Plain data: copy freely. */
struct mv_mem_layout {
	uint32_t n;
	struct mv_mem_region_desc r[MV_MEM_MAX_REGIONS];
};

enum mv_mem_backing {
	MV_MEM_BACKING_AUTO,     /* hugetlb when enough 2 MiB pages are free, else 4 KiB + THP */
	MV_MEM_BACKING_4K,
	MV_MEM_BACKING_HUGETLB,  /* fails with -ENOMEM if the pages are not reserved */
};

/* The pages guest RAM lives on. */
enum mv_mem_pages {
	MV_MEM_PAGES_4K,       /* 4 KiB shmem: shmem THP is off on this host */
	MV_MEM_PAGES_THP,      /* shmem with 2 MiB transparent huge pages (MADV_HUGEPAGE) */
	MV_MEM_PAGES_HUGETLB,  /* 2 MiB hugetlbfs pages (a reserved pool) */
};
/* Does this host give madvised shmem mappings 2 MiB pages (sysfs
 * transparent_hugepage/shmem_enabled advise, always, within_size or force;
 * scripts/host-setup sets advise)? Read afresh on each call. */
bool mv_mem_shmem_thp(void);
/* Free 2 MiB hugetlb pages not reserved by a mapping yet (what backing
 * "auto" checks a new VM against). */
uint64_t mv_mem_hugepages_available(void);
/* "4k", "thp" or "hugetlb". */
const char *mv_mem_pages_name(enum mv_mem_pages p);

/* Creates the memfds for ram_size bytes of guest RAM (sparse: nothing is
 * touched). The caller owns the fds in *out and closes them with
 * mv_mem_layout_close(). name labels the memfds (visible in /proc).
 * RAM below MV_MEM_LOW_LIMIT goes to region 0 at gpa 0, the rest to region 1
 * at MV_MEM_HIGH_BASE. The memfds are close-on-exec and sealed against
 * shrinking and growing. ram_size must be a non-zero multiple of 4 KiB (2 MiB
 * for hugetlb), at most MV_MEM_MAX_RAM: else -EINVAL naming field "memory". */
int mv_mem_layout_create(uint64_t ram_size, const char *name, enum mv_mem_backing backing,
			 struct mv_mem_layout *out, struct mv_error **err) MV_MUST_CHECK;
void mv_mem_layout_close(struct mv_mem_layout *l);
/* Checks a layout received from elsewhere: count, order, overlap, alignment,
 * sizes, and (when check_fds) that each fd is a memfd at least size long. */
int mv_mem_layout_validate(const struct mv_mem_layout *l, bool check_fds,
			   struct mv_error **err) MV_MUST_CHECK;
uint64_t mv_mem_layout_ram_size(const struct mv_mem_layout *l);

/* Guest RAM mapped into this process (MAP_SHARED on the region fds). */
struct mv_guest_mem;

struct mv_mem_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *hva;
	uint32_t flags;
	int fd;              /* owned by the mv_guest_mem (a dup of the layout's) */
	enum mv_mem_pages pages;   /* what faults in here allocate (decided at map time) */
};

/* Maps every region of l (validated first, fds included). The fds are
 * dup'ed: the layout keeps its own. Returns a handle freed by
 * mv_guest_mem_unmap(). 4 KiB regions are MAP_NORESERVE; hugetlb regions are
 * reserved at map time, so a short pool fails here rather than with SIGBUS. */
int mv_guest_mem_map(const struct mv_mem_layout *l, struct mv_guest_mem **out,
		     struct mv_error **err) MV_MUST_CHECK;
void mv_guest_mem_unmap(struct mv_guest_mem *m);
/* Takes shmem THP back (MADV_NOHUGEPAGE) before guest RAM is touched, for
 * VMs in page fusion: it merges and copies 4 KiB pages. */
void mv_guest_mem_no_thp(struct mv_guest_mem *m);
unsigned mv_guest_mem_nregions(const struct mv_guest_mem *m);
const struct mv_mem_region *mv_guest_mem_region(const struct mv_guest_mem *m, unsigned i);
uint64_t mv_guest_mem_ram_size(const struct mv_guest_mem *m);
/* GPA -> HVA for [gpa, gpa+len) lying inside one region, else NULL (also
 * when gpa + len wraps). len 0 is treated as 1. Binary search over the
 * regions with a last-hit cache; thread-safe, lock-free. */
void *mv_gpa_to_hva(struct mv_guest_mem *m, uint64_t gpa, uint64_t len);
/* Index of the region holding gpa, or -1. */
int mv_guest_mem_find(struct mv_guest_mem *m, uint64_t gpa);

/* A userfaultfd (O_CLOEXEC|O_NONBLOCK; user-mode-only where the sysctl
 * demands it) with the API handshake done for exactly these UFFD_FEATURE_*
 * bits: -EOPNOTSUPP when the kernel lacks one. The caller registers ranges. */
int mv_uffd_open(uint64_t features) MV_MUST_CHECK;

/* Dirty-page tracking over a mapped guest memory, at 4 KiB granularity.
 * UFFD_WP and SOFT_DIRTY see writes made through this process's mappings
 * only; HASH compares contents, so it sees every writer (and reports a page
 * rewritten with identical bytes as clean). UFFD_WP reports hugetlb regions
 * a whole 2 MiB page at a time. One thread syncs a log; guest writers may
 * run during a sync: a racing write is reported by that sync or the next
 * (not guaranteed for SOFT_DIRTY, whose read and clear are two steps; it
 * is also process-wide, so keep one soft-dirty log per process).
 * Costs: UFFD_WP arms every page, populated or not, with a PTE marker, so a
 * sparse guest pays its page tables up front (2 MiB per GiB of guest RAM,
 * freed at unmap); HASH keeps 8 bytes per page and reads all of populated
 * RAM on each sync (holes are skipped via SEEK_DATA). */
enum mv_dirty_backend {
	MV_DIRTY_AUTO,        /* best available, chosen at run time */
	MV_DIRTY_UFFD_WP,     /* userfaultfd WP async + PAGEMAP_SCAN (kernel 6.7+) */
	MV_DIRTY_SOFT_DIRTY,  /* /proc/self/clear_refs + pagemap bit 55 */
	MV_DIRTY_HASH,        /* per-page xxh3 compared with the last sync */
};

struct mv_dirty_log;

/* Arms tracking: from now on writes are recorded. m must outlive the log.
 * want MV_DIRTY_AUTO picks the first available of UFFD_WP, SOFT_DIRTY, HASH;
 * an unavailable explicit choice fails with -EOPNOTSUPP. Free with
 * mv_dirty_stop(). After stop, pages left write-protected take one cheap
 * fault on their next write. */
int mv_dirty_start(struct mv_guest_mem *m, enum mv_dirty_backend want,
		   struct mv_dirty_log **out, struct mv_error **err) MV_MUST_CHECK;
void mv_dirty_stop(struct mv_dirty_log *log);
enum mv_dirty_backend mv_dirty_backend_of(const struct mv_dirty_log *log);
const char *mv_dirty_backend_name(enum mv_dirty_backend b);
/* Is this backend usable on this kernel (probed once)? */
bool mv_dirty_backend_available(enum mv_dirty_backend b);
/* Collects the pages written since the last sync (or start) and re-arms, in
 * as few syscalls as the backend allows. *ndirty gets the total count. */
int mv_dirty_sync(struct mv_dirty_log *log, uint64_t *ndirty, struct mv_error **err) MV_MUST_CHECK;
/* Re-registers [addr, addr+len) (page aligned, inside guest RAM) for
 * tracking after the caller replaced its mapping (mmap MAP_FIXED drops the
 * userfaultfd registration with the old VMA), and write-protects it so the
 * next write is recorded. Only UFFD_WP needs it; a no-op (0) for the others
 * and for a NULL log. Async-signal-safe: one or two ioctls, no allocation,
 * so page fusion's copy-on-write fault handler may call it. */
int mv_dirty_rearm_range(struct mv_dirty_log *log, void *addr, uint64_t len);
/* The bitmap of region i from the last sync (bit p = page p of the region,
 * 64 pages per word); valid until the next sync or stop. */
const uint64_t *mv_dirty_bitmap(const struct mv_dirty_log *log, unsigned region, uint64_t *npages);

#endif
