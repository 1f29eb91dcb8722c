/* The page walker: translates a VA through 4- or 5-level x86-64 tables as the
 * SDM (Vol. 3A, 4.5-4.8) describes: reserved-bit and canonical checks, U/S,
 * R/W and NX combined over every level, WP/SMEP/SMAP/AC, A/D set atomically
 * with cmpxchg, precise faults with the #PF error code. With a stage-2 table,
 * every access to a stage-1 table is itself translated (nested walk). Also
 * mv_mmu_translate (TLB + walk). Used by every translating caller. */
#include <errno.h>
#include <string.h>
#include "mmu_i.h"

#define STAGE2_CTL (MV_MMU_CTL_WP | MV_MMU_CTL_NXE)
#define PF_P    (1u << 0)
#define PF_RSVD (1u << 3)
#define PF_ACC  (MV_MMU_ACC_WRITE | MV_MMU_ACC_USER | MV_MMU_ACC_EXEC)
#define MAX_RETRY 64

const char *mv_mmu_fault_str(enum mv_mmu_fault_kind k)
{
	switch (k) {
	case MV_MMU_FAULT_NONE: return "none";
	case MV_MMU_FAULT_NOT_PRESENT: return "not-present";
	case MV_MMU_FAULT_PERMISSION: return "permission";
	case MV_MMU_FAULT_RESERVED: return "reserved-bit";
	case MV_MMU_FAULT_NON_CANONICAL: return "non-canonical";
	case MV_MMU_FAULT_BUS: return "bus";
	}
	return "?";
}

static int fault(struct mv_mmu_fault *f, enum mv_mmu_fault_kind kind, unsigned level,
		 unsigned stage, uint64_t addr, unsigned acc, uint32_t extra)
{
	if (f) {
		uint32_t pf = acc & (MV_MMU_ACC_WRITE | MV_MMU_ACC_USER);
		/* I/D is reported only when SMEP or NXE make fetches checkable (SDM 4.7) */
		if ((acc & MV_MMU_ACC_EXEC) && (acc & (MV_MMU_CTL_SMEP | MV_MMU_CTL_NXE)))
			pf |= MV_MMU_ACC_EXEC;
		*f = (struct mv_mmu_fault){ .kind = kind, .level = level, .stage = stage,
					    .addr = addr,
					    .pf_error = kind == MV_MMU_FAULT_NON_CANONICAL ? 0 : pf | extra };
	}
	return -EFAULT;
}

static int walk_one(struct mv_mmu_pt *pt, unsigned node, uint64_t va, unsigned acc,
		    struct mv_mmu_xlat *out, struct mv_mmu_fault *f);

/* Stage-2 translation of a stage-1 table address. */
static int s2_addr(struct mv_mmu_pt *pt, uint64_t gpa, bool write, uint64_t *hpa,
		   struct mv_mmu_fault *f)
{
	struct mv_mmu_xlat x;
	struct mv_mmu_fault f2;
	unsigned acc = MV_MMU_ACC_USER | STAGE2_CTL | (write ? MV_MMU_ACC_WRITE : 0);
	int rc = walk_one(pt->stage2, 0, gpa, acc, &x, &f2);
	if (rc == -EFAULT && f) {
		*f = f2;
		f->stage = 2;
		f->in_s1_walk = true;
	}
	if (rc == 0)
		*hpa = x.pa;
	return rc;
}

int mmu_mem_read(struct mv_mmu_pt *pt, uint64_t pa, uint64_t *v, struct mv_mmu_fault *f)
{
	if (pt->stage2) {
		int rc = s2_addr(pt, pa, false, &pa, f);
		if (rc < 0)
			return rc;
		pt = pt->stage2;
	}
	return pt->ops->read(pt->ctx, pa, v);
}

int mmu_mem_write(struct mv_mmu_pt *pt, uint64_t pa, uint64_t v, struct mv_mmu_fault *f)
{
	if (pt->stage2) {
		int rc = s2_addr(pt, pa, true, &pa, f);
		if (rc < 0)
			return rc;
		pt = pt->stage2;
	}
	return pt->ops->write(pt->ctx, pa, v);
}

int mmu_mem_cmpxchg(struct mv_mmu_pt *pt, uint64_t pa, uint64_t *exp, uint64_t des,
		    struct mv_mmu_fault *f)
{
	if (pt->stage2) {
		int rc = s2_addr(pt, pa, true, &pa, f);
		if (rc < 0)
			return rc;
		pt = pt->stage2;
	}
	return pt->ops->cmpxchg(pt->ctx, pa, exp, des);
}

/* Reserved bits of a present entry at level (SDM 4.5, tables 4-15..4-20). */
static bool reserved(const struct mv_mmu_pt *pt, uint64_t e, unsigned level, unsigned acc)
{
	if (e & pt->rsvd_pa)
		return true;
	if ((e & MV_MMU_PTE_NX) && !(acc & MV_MMU_CTL_NXE))
		return true;
	if (e & MV_MMU_PTE_PS) {
		if (level >= 4)
			return true;                            /* PML5E/PML4E bit 7 */
		if (level == 3 && (e & 0x3fffe000ULL))
			return true;                            /* 1G leaf: bits 29:13 */
		if (level == 2 && (e & 0x1fe000ULL))
			return true;                            /* 2M leaf: bits 20:13 */
	}
	return false;
}

/* Sets `bits` in the entry at ea whose last read value was e. Returns 0,
 * 1 when the entry changed underneath (the walk must restart), or <0. */
static int set_bits(struct mv_mmu_pt *pt, uint64_t ea, uint64_t e, uint64_t bits,
		    struct mv_mmu_fault *f)
{
	uint64_t cur = e;
	while ((cur & bits) != bits) {
		int rc = mmu_mem_cmpxchg(pt, ea, &cur, cur | bits, f);
		if (rc == 0)
			return 0;
		if (rc != -EAGAIN)
			return rc;
		/* another walker setting A/D is harmless; anything else restarts */
		if ((cur ^ e) & ~(MV_MMU_PTE_A | MV_MMU_PTE_D))
			return 1;
	}
	return 0;
}

static int walk_one(struct mv_mmu_pt *pt, unsigned node, uint64_t va, unsigned acc,
		    struct mv_mmu_xlat *out, struct mv_mmu_fault *f)
{
	if (!mv_mmu_canonical(va, pt->levels))
		return fault(f, MV_MMU_FAULT_NON_CANONICAL, pt->levels, 1, va, acc, 0);
	uint64_t ea[5], ent[5];
	for (unsigned tries = 0; tries < MAX_RETRY; tries++) {
		uint64_t t = pt->root[node < pt->nrep ? node : 0];
		unsigned perms = MV_MMU_PERM_W | MV_MMU_PERM_U | MV_MMU_PERM_X;
		unsigned l = pt->levels, n = 0;
		uint64_t e = 0;
		for (;; l--) {
			ea[n] = t + pt_index(va, l) * 8ULL;
			int rc = mmu_mem_read(pt, ea[n], &e, f);
			if (rc == -EFAULT && pt->stage2)
				return rc; /* stage-2 fault, already described */
			if (rc < 0)
				return fault(f, MV_MMU_FAULT_BUS, l, 1, va, acc, 0);
			if (!(e & MV_MMU_PTE_P))
				return fault(f, MV_MMU_FAULT_NOT_PRESENT, l, 1, va, acc, 0);
			if (reserved(pt, e, l, acc))
				return fault(f, MV_MMU_FAULT_RESERVED, l, 1, va, acc, PF_P | PF_RSVD);
			if (!(e & MV_MMU_PTE_RW))
				perms &= ~MV_MMU_PERM_W;
			if (!(e & MV_MMU_PTE_US))
				perms &= ~MV_MMU_PERM_U;
			if (e & MV_MMU_PTE_NX)
				perms &= ~MV_MMU_PERM_X;
			ent[n++] = e;
			if (l == 1 || (e & MV_MMU_PTE_PS))
				break;
			t = e & MV_MMU_PTE_ADDR;
		}
		if (!mmu_perm_ok(perms, acc))
			return fault(f, MV_MMU_FAULT_PERMISSION, l, 1, va, acc, PF_P);
		bool write = acc & MV_MMU_ACC_WRITE;
		int restart = 0;
		if (!(acc & MV_MMU_CTL_NO_AD)) {
			for (unsigned i = 0; i < n && !restart; i++) {
				uint64_t bits = MV_MMU_PTE_A;
				if (i == n - 1 && write)
					bits |= MV_MMU_PTE_D;
				restart = set_bits(pt, ea[i], ent[i], bits, f);
				if (restart < 0)
					return restart == -EFAULT && pt->stage2 ? restart :
						fault(f, MV_MMU_FAULT_BUS, l, 1, va, acc, 0);
			}
			if (restart)
				continue;
			e |= MV_MMU_PTE_A | (write ? MV_MMU_PTE_D : 0);
		}
		uint64_t sz = level_size(l);
		out->pa = (e & MV_MMU_PTE_ADDR & ~(sz - 1)) | (va & (sz - 1));
		out->gpa = out->pa;
		out->page_size = sz;
		out->level = l;
		out->flags = e & (MV_MMU_PTE_RW | MV_MMU_PTE_US | MV_MMU_PTE_PWT | MV_MMU_PTE_PCD |
				  MV_MMU_PTE_A | MV_MMU_PTE_D | MV_MMU_PTE_G | MV_MMU_PTE_NX);
		if (l == 1 ? (e & MV_MMU_PTE_PAT) : (e & MV_MMU_PTE_PAT_LARGE))
			out->flags |= MV_MMU_PTE_PAT;
		out->perms = perms | ((e & MV_MMU_PTE_G) ? MV_MMU_PERM_G : 0) |
			     ((e & MV_MMU_PTE_D) ? MV_MMU_PERM_D : 0);
		return 0;
	}
	return -EAGAIN; /* tables churned under us MAX_RETRY times */
}

int mv_mmu_walk(struct mv_mmu_pt *pt, unsigned node, uint64_t va, unsigned acc,
		struct mv_mmu_xlat *out, struct mv_mmu_fault *f)
{
	if (!pt || !out)
		return -EINVAL;
	int rc = walk_one(pt, node, va, acc, out, f);
	if (rc < 0 || !pt->stage2)
		return rc;
	/* final GPA -> HPA: a guest access is a user access to stage 2 */
	struct mv_mmu_xlat x2;
	struct mv_mmu_fault f2;
	unsigned acc2 = (acc & (MV_MMU_ACC_WRITE | MV_MMU_ACC_EXEC | MV_MMU_CTL_NO_AD)) |
			MV_MMU_ACC_USER | STAGE2_CTL;
	rc = walk_one(pt->stage2, 0, out->pa, acc2, &x2, &f2);
	if (rc < 0) {
		if (rc == -EFAULT && f) {
			*f = f2;
			f->stage = 2;
			f->in_s1_walk = false;
		}
		return rc;
	}
	out->gpa = out->pa;
	out->pa = x2.pa;
	if (x2.page_size < out->page_size)
		out->page_size = x2.page_size;
	/* dirty only when both stages are: a TLB write hit must not skip stage-2 D */
	out->perms &= x2.perms | MV_MMU_PERM_U | MV_MMU_PERM_G;
	return 0;
}

int mv_mmu_translate(struct mv_mmu_tlb *tlb, uint32_t pasid, struct mv_mmu_pt *pt,
		     unsigned node, uint64_t va, unsigned acc, struct mv_mmu_xlat *out,
		     struct mv_mmu_fault *f)
{
	if (tlb && mv_mmu_tlb_lookup(tlb, pasid, va, acc, out))
		return 0;
	int rc = mv_mmu_walk(pt, node, va, acc, out, f);
	if (rc == 0 && tlb && !(acc & MV_MMU_CTL_NO_AD))
		mv_mmu_tlb_insert(tlb, pasid, va, out);
	return rc;
}
