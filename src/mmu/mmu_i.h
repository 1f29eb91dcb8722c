/* Private to src/mmu: the page-table object, entry-format helpers, the
 * replica ring map, and table-memory access (direct or through stage 2).
 * Used by pt.c, replica.c, walk.c, tlb.c and the device files. */
#ifndef MV_MMU_I_H
#define MV_MMU_I_H

#include <stdatomic.h>
#include "memvisor/mmu.h"
#include "memvisor/util.h"

#define PTE_FLAGS_4K (MV_MMU_PTE_RW | MV_MMU_PTE_US | MV_MMU_PTE_PWT | MV_MMU_PTE_PCD | \
		      MV_MMU_PTE_A | MV_MMU_PTE_D | MV_MMU_PTE_PAT | MV_MMU_PTE_G | MV_MMU_PTE_NX)
#define PT_ENTRIES 512

static inline unsigned level_shift(unsigned level) { return 12 + 9 * (level - 1); }
static inline unsigned pt_index(uint64_t va, unsigned level)
{
	return (unsigned)(va >> level_shift(level)) & 511;
}
static inline uint64_t level_size(unsigned level) { return 1ULL << level_shift(level); }

/* Replica ring: table pa -> next replica's pa and the node it lives on.
 * Open addressing, linear probing, backward-shift deletion. */
struct rep_slot {
	uint64_t key;   /* pa + 1; 0 = empty */
	uint64_t next;
	unsigned node;
};
struct rep_map {
	struct rep_slot *slots;
	uint64_t cap, n;
};

struct mv_mmu_pt {
	unsigned levels;
	unsigned maxphy;
	uint64_t rsvd_pa;      /* bits 51:maxphyaddr */
	const struct mv_mmu_phys_ops *ops;
	void *ctx;
	struct mv_mmu_pt *stage2;
	unsigned nrep;
	bool adopted;
	uint64_t root[MV_MMU_MAX_REPLICAS];
	uint64_t ntables;      /* per replica */
	struct rep_map rmap;
};

/* Table memory access for pt: direct, or via stage 2 (write=true: the access
 * is an update). On a stage-2 fault fills *f (stage 2, in_s1_walk) and
 * returns -EFAULT. */
int mmu_mem_read(struct mv_mmu_pt *pt, uint64_t pa, uint64_t *v, struct mv_mmu_fault *f);
int mmu_mem_write(struct mv_mmu_pt *pt, uint64_t pa, uint64_t v, struct mv_mmu_fault *f);
int mmu_mem_cmpxchg(struct mv_mmu_pt *pt, uint64_t pa, uint64_t *exp, uint64_t des,
		    struct mv_mmu_fault *f);

/* Permission decision shared by walker and TLB (perms: MV_MMU_PERM_*). */
static inline bool mmu_perm_ok(unsigned perms, unsigned acc)
{
	bool upage = perms & MV_MMU_PERM_U;
	if (acc & MV_MMU_ACC_USER) {
		if (!upage)
			return false;
		if ((acc & MV_MMU_ACC_WRITE) && !(perms & MV_MMU_PERM_W))
			return false;
		if ((acc & MV_MMU_ACC_EXEC) && !(perms & MV_MMU_PERM_X))
			return false;
		return true;
	}
	if (acc & MV_MMU_ACC_EXEC) {
		if (upage && (acc & MV_MMU_CTL_SMEP))
			return false;
		return perms & MV_MMU_PERM_X;
	}
	if (upage && (acc & MV_MMU_CTL_SMAP) && !(acc & MV_MMU_CTL_AC))
		return false;
	if ((acc & MV_MMU_ACC_WRITE) && (acc & MV_MMU_CTL_WP) && !(perms & MV_MMU_PERM_W))
		return false;
	return true;
}

/* replica.c */
int rep_map_init(struct rep_map *m);
void rep_map_free(struct rep_map *m);
int rep_put(struct rep_map *m, uint64_t pa, uint64_t next, unsigned node);
struct rep_slot *rep_get(const struct rep_map *m, uint64_t pa);
void rep_del(struct rep_map *m, uint64_t pa);
/* Allocates one table page per replica, linked in a ring; *pa0 is replica 0's. */
int rep_alloc_table(struct mv_mmu_pt *pt, uint64_t *pa0);
void rep_free_table(struct mv_mmu_pt *pt, uint64_t pa0);
/* Writes entry idx of the logical table whose replica-0 page is t0, in every
 * replica; a non-leaf value is rewritten to point at each node's child replica. */
int rep_write(struct mv_mmu_pt *pt, uint64_t t0, unsigned idx, uint64_t v, bool nonleaf);
/* Replica r's page of the logical table t0. */
uint64_t rep_of(struct mv_mmu_pt *pt, uint64_t t0, unsigned r);

#endif
