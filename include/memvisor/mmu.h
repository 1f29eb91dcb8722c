/* Address translation: x86-64 long-mode page tables (4-level/48-bit and
 * 5-level/57-bit), the walker, a tagged set-associative TLB, two-stage
 * (nested) translation, NUMA-replicated page tables, and a software compute
 * device whose loads and stores go through its own MMU with shared virtual
 * memory (SVM). A library: it needs no daemon. Used by devices, accelerators
 * and nested-guest code in the VMM, by tests/unit/mmu, tests/fuzz/mmu_ops and
 * bench/mmu. Design notes: docs/mmu.md.
 *
 * Threading: one writer at a time edits a page table (map/unmap/protect and
 * the other "edit" calls); walkers may run concurrently with each other and
 * with edits (entries are read and A/D-updated atomically, as hardware does).
 * A TLB belongs to one thread. The device (mv_mmu_dev) does its own locking. */
#ifndef MEMVISOR_MMU_H
#define MEMVISOR_MMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "memvisor/error.h"

/* ---- entry format (Intel SDM Vol. 3A, 4.5) ------------------------------ */
#define MV_MMU_PTE_P    (1ULL << 0)
#define MV_MMU_PTE_RW   (1ULL << 1)
#define MV_MMU_PTE_US   (1ULL << 2)
#define MV_MMU_PTE_PWT  (1ULL << 3)
#define MV_MMU_PTE_PCD  (1ULL << 4)
#define MV_MMU_PTE_A    (1ULL << 5)
#define MV_MMU_PTE_D    (1ULL << 6)
#define MV_MMU_PTE_PS   (1ULL << 7)   /* in PDPTE/PDE: leaf is a 1G/2M page */
#define MV_MMU_PTE_PAT  (1ULL << 7)   /* in a 4K PTE */
#define MV_MMU_PTE_G    (1ULL << 8)
#define MV_MMU_PTE_PAT_LARGE (1ULL << 12) /* in a 1G/2M leaf */
#define MV_MMU_PTE_NX   (1ULL << 63)
#define MV_MMU_PTE_ADDR 0x000ffffffffff000ULL  /* bits 51:12 */

#define MV_MMU_4K (1ULL << 12)
#define MV_MMU_2M (1ULL << 21)
#define MV_MMU_1G (1ULL << 30)
#define MV_MMU_MAX_REPLICAS 8

/* ---- access types and control state for one walk ------------------------
 * The low bits sit where the #PF error code has them. The control bits stand
 * for CR0.WP, EFER.NXE, CR4.SMEP, CR4.SMAP and EFLAGS.AC of the accessor. */
#define MV_MMU_ACC_READ  0u
#define MV_MMU_ACC_WRITE (1u << 1)
#define MV_MMU_ACC_USER  (1u << 2)
#define MV_MMU_ACC_EXEC  (1u << 4)
#define MV_MMU_CTL_WP    (1u << 16)
#define MV_MMU_CTL_NXE   (1u << 17)
#define MV_MMU_CTL_SMEP  (1u << 18)
#define MV_MMU_CTL_SMAP  (1u << 19)
#define MV_MMU_CTL_AC    (1u << 20)
#define MV_MMU_CTL_NO_AD (1u << 21)  /* probe: check only, never set A/D */
#define MV_MMU_CTL_DEFAULT (MV_MMU_CTL_WP | MV_MMU_CTL_NXE)

/* Effective permissions of a translation (combined over every level). */
#define MV_MMU_PERM_W (1u << 0)   /* RW=1 at every level */
#define MV_MMU_PERM_U (1u << 1)   /* US=1 at every level: a user-mode address */
#define MV_MMU_PERM_X (1u << 2)   /* NX=0 at every level */
#define MV_MMU_PERM_G (1u << 3)   /* leaf is global */
#define MV_MMU_PERM_D (1u << 4)   /* leaf dirty (after this walk's update) */

/* ---- physical-memory provider -------------------------------------------
 * Page tables live behind these callbacks, so one walker runs over guest RAM,
 * a host-side pool, or device memory. read/write/cmpxchg act on one aligned
 * 64-bit entry at physical address pa and must be atomic with respect to each
 * other. cmpxchg returns 0 on success or -EAGAIN (and *expected = current).
 * alloc_table returns a zeroed 4 KiB page preferably on NUMA node `node`.
 * All return 0 or a negative errno (-EFAULT: no memory at pa). */
struct mv_mmu_phys_ops {
	int (*read)(void *ctx, uint64_t pa, uint64_t *val);
	int (*write)(void *ctx, uint64_t pa, uint64_t val);
	int (*cmpxchg)(void *ctx, uint64_t pa, uint64_t *expected, uint64_t desired);
	int (*alloc_table)(void *ctx, unsigned node, uint64_t *pa);
	void (*free_table)(void *ctx, uint64_t pa);
};

/* A host-side pool of 4 KiB pages per (simulated) NUMA node, addressed by
 * "physical" addresses [MV_MMU_POOL_BASE, ...). On a multi-node machine with
 * libnuma each node's chunk is placed on that node; otherwise placement is a
 * no-op and the node count is simulated. */
#define MV_MMU_POOL_BASE 0x100000ULL
struct mv_mmu_pool;
struct mv_mmu_pool_config {
	uint64_t pages_per_node;  /* >= 1 */
	unsigned nodes;           /* 1..MV_MMU_MAX_REPLICAS */
};
/* *out is owned by the caller; free with mv_mmu_pool_destroy() after every
 * page table using it is destroyed. */
int mv_mmu_pool_create(const struct mv_mmu_pool_config *cfg, struct mv_mmu_pool **out,
		       struct mv_error **err) MV_MUST_CHECK;
void mv_mmu_pool_destroy(struct mv_mmu_pool *pool);
/* Static callbacks; pass the pool itself as ctx. */
const struct mv_mmu_phys_ops *mv_mmu_pool_ops(void);
uint64_t mv_mmu_pool_used(const struct mv_mmu_pool *pool);   /* pages in use */
/* Host pointer of pool memory at pa (for tests and hand-built tables), NULL if outside. */
void *mv_mmu_pool_ptr(struct mv_mmu_pool *pool, uint64_t pa);
/* Number of NUMA nodes libnuma reports (1 without libnuma). */
unsigned mv_mmu_numa_nodes(void);

/* ---- page tables ------------------------------------------------------- */
struct mv_mmu_pt;
struct mv_mmu_pt_config {
	unsigned levels;        /* 4 (48-bit VA) or 5 (57-bit VA, LA57) */
	unsigned maxphyaddr;    /* 36..52; 0 means 52 */
	const struct mv_mmu_phys_ops *ops;
	void *ops_ctx;
	unsigned replicas;      /* 0 or 1: one copy; 2..MV_MMU_MAX_REPLICAS: node-replicated */
	uint64_t root;          /* nonzero: adopt this existing root table (not freed; replicas must be <= 1) */
	/* Two-stage translation: when set, every table address of this (stage-1)
	 * table is guest-physical and each access to it is translated by stage2
	 * (as user accesses, like AMD NPT); ops->read/write/cmpxchg are unused
	 * (stage2's provider reaches the memory) and ops->alloc_table must return
	 * a GPA that stage2 maps. Walks then return the final host address.
	 * stage2 must outlive this table and must not itself have a stage2. */
	struct mv_mmu_pt *stage2;
};
int mv_mmu_pt_create(const struct mv_mmu_pt_config *cfg, struct mv_mmu_pt **out,
		     struct mv_error **err) MV_MUST_CHECK;
/* Frees every table page it allocated (not the leaves' target memory). */
void mv_mmu_pt_destroy(struct mv_mmu_pt *pt);
uint64_t mv_mmu_pt_root(const struct mv_mmu_pt *pt, unsigned replica);
unsigned mv_mmu_pt_levels(const struct mv_mmu_pt *pt);
unsigned mv_mmu_pt_replicas(const struct mv_mmu_pt *pt);
uint64_t mv_mmu_pt_tables(const struct mv_mmu_pt *pt);  /* table pages per replica */

/* Maps [va, va+size) to [pa, pa+size) with pages of page_size (4K, 2M or 1G).
 * flags: any of RW US PWT PCD A D PAT(bit 7) G NX; P (and PS) are implied.
 * va, pa and size must be page_size-aligned, va canonical, pa below
 * 2^maxphyaddr. Intermediate tables are created P|RW|US, so the leaf decides.
 * -EEXIST if any part is already mapped (nothing is changed then), -EINVAL on
 * bad input, -ENOMEM when the provider has no table page. */
int mv_mmu_map(struct mv_mmu_pt *pt, uint64_t va, uint64_t pa, uint64_t size,
	       uint64_t page_size, uint64_t flags, struct mv_error **err) MV_MUST_CHECK;
/* Removes every mapping in [va, va+size) (4K aligned); holes are fine. Large
 * pages that straddle an edge are split first. Empty tables are freed. */
int mv_mmu_unmap(struct mv_mmu_pt *pt, uint64_t va, uint64_t size,
		 struct mv_error **err) MV_MUST_CHECK;
/* Replaces the flag bits (as for map) of every leaf in [va, va+size),
 * keeping A/D. -ENOENT (nothing changed) if any page in the range is unmapped. */
int mv_mmu_protect(struct mv_mmu_pt *pt, uint64_t va, uint64_t size, uint64_t flags,
		   struct mv_error **err) MV_MUST_CHECK;
/* Caller must invalidate TLBs after unmap/protect, as software does on hardware. */

/* ---- walker ------------------------------------------------------------- */
struct mv_mmu_xlat {
	uint64_t pa;         /* translated address, offset included (host PA for two stages) */
	uint64_t gpa;        /* two stages: stage-1 output; else == pa */
	uint64_t page_size;  /* two stages: the smaller of both leaves */
	uint64_t flags;      /* stage-1 leaf flags in 4K layout (PAT at bit 7), no address */
	unsigned perms;      /* MV_MMU_PERM_* */
	unsigned level;      /* stage-1 leaf level: 1 = PTE, 2 = PDE, 3 = PDPTE */
};

enum mv_mmu_fault_kind {
	MV_MMU_FAULT_NONE,
	MV_MMU_FAULT_NOT_PRESENT,   /* P=0 in the entry at `level` */
	MV_MMU_FAULT_PERMISSION,    /* translation exists, access not allowed */
	MV_MMU_FAULT_RESERVED,      /* reserved bit set in the entry at `level` */
	MV_MMU_FAULT_NON_CANONICAL, /* #GP on hardware */
	MV_MMU_FAULT_BUS,           /* provider could not reach a table (bad pa) */
};
struct mv_mmu_fault {
	enum mv_mmu_fault_kind kind;
	unsigned level;      /* 5..1 for NOT_PRESENT/RESERVED/BUS */
	unsigned stage;      /* 1, or 2 for a stage-2 fault */
	bool in_s1_walk;     /* stage 2 faulted while reading/updating a stage-1 table */
	uint32_t pf_error;   /* x86 #PF error code (P W U RSVD I/D) */
	uint64_t addr;       /* faulting VA (stage 1) or GPA (stage 2) */
};
const char *mv_mmu_fault_str(enum mv_mmu_fault_kind k);

/* Translates va for an access acc (MV_MMU_ACC_* | MV_MMU_CTL_*) using the
 * replica of NUMA node `node` (ignored when not replicated). Sets A in every
 * entry used and D in the leaf on a write, atomically with cmpxchg; A/D are
 * only set when the access is allowed. Returns 0 and fills *out, -EFAULT and
 * fills *fault (when non-NULL) on a translation fault, another negative errno
 * on bad arguments. No mv_error: this is the hot path and *fault is the detail. */
int mv_mmu_walk(struct mv_mmu_pt *pt, unsigned node, uint64_t va, unsigned acc,
		struct mv_mmu_xlat *out, struct mv_mmu_fault *fault) MV_MUST_CHECK;
/* Looks up va without checks or A/D updates; A/D read as the OR over every
 * replica. 0, or -ENOENT when unmapped. Single stage only (the table's own output). */
int mv_mmu_query(struct mv_mmu_pt *pt, uint64_t va, struct mv_mmu_xlat *out) MV_MUST_CHECK;
/* Clears the A and/or D bits given in bits of the leaf mapping va, in every replica. */
int mv_mmu_clear_ad(struct mv_mmu_pt *pt, uint64_t va, uint64_t bits) MV_MUST_CHECK;
/* Invariant checker: every replica has the same shape and leaves, each
 * replica's tables live on its node and point only to tables of the same
 * replica, rings are complete, no reserved bits are set. 0 or -EUCLEAN. */
int mv_mmu_pt_check(struct mv_mmu_pt *pt, struct mv_error **err) MV_MUST_CHECK;
bool mv_mmu_canonical(uint64_t va, unsigned levels);

/* ---- TLB --------------------------------------------------------------- */
struct mv_mmu_tlb;
struct mv_mmu_tlb_config {
	unsigned sets;   /* power of two, 1..65536 */
	unsigned ways;   /* 1..16 */
};
struct mv_mmu_tlb_stats {
	uint64_t hits, misses, inserts, evictions, flushes;
};
/* One thread's TLB; owned by the caller, free with mv_mmu_tlb_destroy(). */
int mv_mmu_tlb_create(const struct mv_mmu_tlb_config *cfg, struct mv_mmu_tlb **out,
		      struct mv_error **err) MV_MUST_CHECK;
void mv_mmu_tlb_destroy(struct mv_mmu_tlb *tlb);
/* Entries are tagged by pasid and page size. A hit also requires the access to
 * be allowed by the cached permissions (and D set for a write); otherwise it
 * is a miss so the caller walks and gets the precise fault or sets D. */
bool mv_mmu_tlb_lookup(struct mv_mmu_tlb *tlb, uint32_t pasid, uint64_t va, unsigned acc,
		       struct mv_mmu_xlat *out);
void mv_mmu_tlb_insert(struct mv_mmu_tlb *tlb, uint32_t pasid, uint64_t va,
		       const struct mv_mmu_xlat *x);
void mv_mmu_tlb_flush_all(struct mv_mmu_tlb *tlb);
/* Drops pasid's non-global entries (global entries match every pasid). */
void mv_mmu_tlb_flush_pasid(struct mv_mmu_tlb *tlb, uint32_t pasid);
/* Drops pasid's entries overlapping [va, va+len), global ones included. */
void mv_mmu_tlb_flush_range(struct mv_mmu_tlb *tlb, uint32_t pasid, uint64_t va, uint64_t len);
void mv_mmu_tlb_get_stats(const struct mv_mmu_tlb *tlb, struct mv_mmu_tlb_stats *st);
/* TLB lookup, then walk and fill on a miss. tlb may be NULL. Returns as mv_mmu_walk. */
int mv_mmu_translate(struct mv_mmu_tlb *tlb, uint32_t pasid, struct mv_mmu_pt *pt,
		     unsigned node, uint64_t va, unsigned acc, struct mv_mmu_xlat *out,
		     struct mv_mmu_fault *fault) MV_MUST_CHECK;

/* ---- device MMU with shared virtual memory ------------------------------
 * A software compute device: kernels run as lanes on worker threads, and
 * every lane load/store goes through the context's page tables and the
 * worker's TLB. Each context has two address spaces:
 *  - private: device memory, `private_levels` (default 4: 48-bit) VA, handed
 *    out in the upper canonical half so it never collides with host pointers;
 *  - shared: the host's VA size (`shared_levels`, default 5: 57-bit), where a
 *    host pointer is also the device pointer. Shared pages are mirrored on
 *    demand: a miss raises a replayable fault that the device resolves from
 *    its registration table of host ranges, then the access retries. */
struct mv_mmu_dev;
struct mv_mmu_ctx;
struct mv_mmu_lane;
struct mv_mmu_dev_config {
	unsigned workers;         /* threads; 0 means 2 */
	uint64_t vram_bytes;      /* device-private memory; 0 means 64 MiB */
	unsigned private_levels;  /* 4 or 5; 0 means 4 */
	unsigned shared_levels;   /* 4 or 5; 0 means 5 */
	unsigned tlb_sets, tlb_ways;  /* per worker; 0 means 64 x 4 */
	uint64_t table_pages;     /* page-table pool size; 0 means 4096 */
};
struct mv_mmu_dev_stats {
	uint64_t tlb_hits, tlb_misses, faults_replayed, faults_fatal, shootdowns;
};
int mv_mmu_dev_create(const struct mv_mmu_dev_config *cfg, struct mv_mmu_dev **out,
		      struct mv_error **err) MV_MUST_CHECK;
/* Destroys every context first. */
void mv_mmu_dev_destroy(struct mv_mmu_dev *dev);
void mv_mmu_dev_get_stats(struct mv_mmu_dev *dev, struct mv_mmu_dev_stats *st);

/* A context (its own PASID and both address spaces); owned by dev. */
int mv_mmu_ctx_create(struct mv_mmu_dev *dev, struct mv_mmu_ctx **out,
		      struct mv_error **err) MV_MUST_CHECK;
/* Frees the context's private memory and SVM allocations. */
void mv_mmu_ctx_destroy(struct mv_mmu_ctx *ctx);
uint32_t mv_mmu_ctx_pasid(const struct mv_mmu_ctx *ctx);

/* Device-private memory: *dva is a device VA (not a host pointer). */
int mv_mmu_dev_alloc(struct mv_mmu_ctx *ctx, uint64_t size, uint64_t *dva,
		     struct mv_error **err) MV_MUST_CHECK;
int mv_mmu_dev_free(struct mv_mmu_ctx *ctx, uint64_t dva) MV_MUST_CHECK;
/* Host <-> device-private copies (the host's "DMA"). */
int mv_mmu_dev_write(struct mv_mmu_ctx *ctx, uint64_t dva, const void *src, size_t len,
		     struct mv_error **err) MV_MUST_CHECK;
int mv_mmu_dev_read(struct mv_mmu_ctx *ctx, uint64_t dva, void *dst, size_t len,
		    struct mv_error **err) MV_MUST_CHECK;

/* Shared allocation: host memory whose pointer also works on the device.
 * Free with mv_mmu_svm_free() (which notifies the device, then unmaps). */
int mv_mmu_svm_alloc(struct mv_mmu_ctx *ctx, size_t size, void **out,
		     struct mv_error **err) MV_MUST_CHECK;
int mv_mmu_svm_free(struct mv_mmu_ctx *ctx, void *p) MV_MUST_CHECK;
/* Makes an existing host range (page aligned) shared with protection prot
 * (PROT_READ/PROT_WRITE); the caller keeps ownership of the memory. */
int mv_mmu_svm_register(struct mv_mmu_ctx *ctx, void *addr, size_t len, int prot,
			struct mv_error **err) MV_MUST_CHECK;
/* Notifier: the host is about to munmap (prot < 0) or mprotect to prot the
 * range. Device entries for it are removed and every worker's TLB is shot
 * down before this returns, so the host may then change its mapping. */
int mv_mmu_svm_notify(struct mv_mmu_ctx *ctx, void *addr, size_t len, int prot) MV_MUST_CHECK;

/* A kernel runs once per lane; it returns 0 or a negative errno. */
typedef int (*mv_mmu_kernel_fn)(struct mv_mmu_lane *lane, void *arg);
/* Runs nlanes lanes over the workers and waits. Returns the first lane error
 * (-EFAULT with the fault in *err for an unresolvable device fault). */
int mv_mmu_dev_launch(struct mv_mmu_ctx *ctx, mv_mmu_kernel_fn fn, void *arg,
		      unsigned nlanes, struct mv_error **err) MV_MUST_CHECK;
unsigned mv_mmu_lane_id(const struct mv_mmu_lane *lane);
unsigned mv_mmu_lane_count(const struct mv_mmu_lane *lane);
/* Device loads/stores of 1, 2, 4 or 8 bytes (naturally aligned) at device VA va. */
int mv_mmu_lane_load(struct mv_mmu_lane *lane, uint64_t va, void *dst, unsigned size) MV_MUST_CHECK;
int mv_mmu_lane_store(struct mv_mmu_lane *lane, uint64_t va, const void *src,
		      unsigned size) MV_MUST_CHECK;

#endif
