/* Page-table editing: create/destroy, map, unmap, protect, query and A/D
 * clearing over a physical-memory provider, in the x86-64 long-mode format.
 * Edits walk replica 0 and write every replica through replica.c. Used by
 * every mmu caller that builds tables (device MMU, tests, fuzzer, bench). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "mmu_i.h"

#define TABLE_FLAGS (MV_MMU_PTE_P | MV_MMU_PTE_RW | MV_MMU_PTE_US)

bool mv_mmu_canonical(uint64_t va, unsigned levels)
{
	unsigned bits = levels == 5 ? 57 : 48;
	int64_t s = (int64_t)(va << (64 - bits)) >> (64 - bits);
	return (uint64_t)s == va;
}

static uint64_t va_mask(const struct mv_mmu_pt *pt)
{
	return pt->levels == 5 ? (1ULL << 57) - 1 : (1ULL << 48) - 1;
}

int mv_mmu_pt_create(const struct mv_mmu_pt_config *cfg, struct mv_mmu_pt **out,
		     struct mv_error **err)
{
	*out = NULL;
	if (!cfg || (cfg->levels != 4 && cfg->levels != 5))
		return mv_err_field(err, -EINVAL, "levels", "paging levels must be 4 or 5");
	unsigned maxphy = cfg->maxphyaddr ? cfg->maxphyaddr : 52;
	if (maxphy < 36 || maxphy > 52)
		return mv_err_field(err, -EINVAL, "maxphyaddr", "MAXPHYADDR must be 36..52");
	if (!cfg->ops || !cfg->ops->alloc_table || !cfg->ops->free_table)
		return mv_err_field(err, -EINVAL, "ops", "provider needs alloc_table/free_table");
	if (!cfg->stage2 && (!cfg->ops->read || !cfg->ops->write || !cfg->ops->cmpxchg))
		return mv_err_field(err, -EINVAL, "ops", "provider needs read/write/cmpxchg");
	unsigned nrep = cfg->replicas ? cfg->replicas : 1;
	if (nrep > MV_MMU_MAX_REPLICAS)
		return mv_err_field(err, -EINVAL, "replicas", "at most %d replicas", MV_MMU_MAX_REPLICAS);
	if (nrep > 1 && (cfg->stage2 || cfg->root))
		return mv_err_field(err, -EINVAL, "replicas",
				    "replication is for host tables built here (no stage2, no adopted root)");
	if (cfg->stage2 && cfg->stage2->stage2)
		return mv_err_field(err, -EINVAL, "stage2", "stage 2 cannot itself be nested");
	struct mv_mmu_pt *pt = calloc(1, sizeof(*pt));
	if (!pt)
		abort();
	pt->levels = cfg->levels;
	pt->maxphy = maxphy;
	pt->rsvd_pa = MV_MMU_PTE_ADDR & ~((1ULL << maxphy) - 1);
	pt->ops = cfg->ops;
	pt->ctx = cfg->ops_ctx;
	pt->stage2 = cfg->stage2;
	pt->nrep = nrep;
	if (nrep > 1)
		rep_map_init(&pt->rmap);
	if (cfg->root) {
		if (cfg->root & ~MV_MMU_PTE_ADDR) {
			free(pt);
			return mv_err_field(err, -EINVAL, "root", "root must be 4 KiB aligned");
		}
		pt->root[0] = cfg->root;
		pt->adopted = true;
	} else {
		int rc = rep_alloc_table(pt, &pt->root[0]);
		if (rc < 0) {
			rep_map_free(&pt->rmap);
			free(pt);
			return mv_err(err, rc, "cannot allocate the root table");
		}
		for (unsigned r = 1; r < nrep; r++)
			pt->root[r] = rep_of(pt, pt->root[0], r);
	}
	*out = pt;
	return 0;
}

static void free_tree(struct mv_mmu_pt *pt, uint64_t t, unsigned level)
{
	if (level > 1) {
		for (unsigned i = 0; i < PT_ENTRIES; i++) {
			uint64_t e;
			if (mmu_mem_read(pt, t + i * 8ULL, &e, NULL) < 0)
				continue;
			if ((e & MV_MMU_PTE_P) && !(e & MV_MMU_PTE_PS))
				free_tree(pt, e & MV_MMU_PTE_ADDR, level - 1);
		}
	}
	rep_free_table(pt, t);
}

void mv_mmu_pt_destroy(struct mv_mmu_pt *pt)
{
	if (!pt)
		return;
	if (!pt->adopted)
		free_tree(pt, pt->root[0], pt->levels);
	rep_map_free(&pt->rmap);
	free(pt);
}

uint64_t mv_mmu_pt_root(const struct mv_mmu_pt *pt, unsigned r)
{
	return r < pt->nrep ? pt->root[r] : 0;
}
unsigned mv_mmu_pt_levels(const struct mv_mmu_pt *pt) { return pt->levels; }
unsigned mv_mmu_pt_replicas(const struct mv_mmu_pt *pt) { return pt->nrep; }
uint64_t mv_mmu_pt_tables(const struct mv_mmu_pt *pt) { return pt->ntables; }

/* 4K-layout flags -> leaf bits for a leaf at level (PAT moves to bit 12 in large leaves). */
static uint64_t leaf_bits(uint64_t flags, unsigned level)
{
	uint64_t v = (flags & PTE_FLAGS_4K) | MV_MMU_PTE_P;
	if (level > 1) {
		if (v & MV_MMU_PTE_PAT)
			v = (v & ~MV_MMU_PTE_PAT) | MV_MMU_PTE_PAT_LARGE;
		v |= MV_MMU_PTE_PS;
	}
	return v;
}

static bool is_leaf(uint64_t e, unsigned level)
{
	return level == 1 || (e & MV_MMU_PTE_PS);
}

static uint64_t leaf_addr(uint64_t e, unsigned level)
{
	return e & MV_MMU_PTE_ADDR & ~(level_size(level) - 1);
}

/* Walks replica 0 from the root down to the table holding level-`to` entries
 * for va. -ENOENT when a table is missing and !create, -EEXIST when a leaf
 * sits above `to` (*leaf_level says where). */
static int descend(struct mv_mmu_pt *pt, uint64_t va, unsigned to, bool create,
		   uint64_t *table, unsigned *leaf_level)
{
	uint64_t t = pt->root[0];
	for (unsigned l = pt->levels; l > to; l--) {
		unsigned idx = pt_index(va, l);
		uint64_t e;
		int rc = mmu_mem_read(pt, t + idx * 8ULL, &e, NULL);
		if (rc < 0)
			return rc;
		if (!(e & MV_MMU_PTE_P)) {
			if (!create)
				return -ENOENT;
			uint64_t child;
			rc = rep_alloc_table(pt, &child);
			if (rc < 0)
				return rc;
			rc = rep_write(pt, t, idx, child | TABLE_FLAGS, true);
			if (rc < 0)
				return rc;
			t = child;
			continue;
		}
		if (is_leaf(e, l)) {
			if (leaf_level)
				*leaf_level = l;
			*table = t;
			return -EEXIST;
		}
		t = e & MV_MMU_PTE_ADDR;
	}
	*table = t;
	return 0;
}

static int size_level(uint64_t page_size)
{
	switch (page_size) {
	case MV_MMU_4K: return 1;
	case MV_MMU_2M: return 2;
	case MV_MMU_1G: return 3;
	default: return -1;
	}
}

static int check_range(struct mv_mmu_pt *pt, uint64_t va, uint64_t size, uint64_t align,
		       struct mv_error **err)
{
	if (!size)
		return mv_err_field(err, -EINVAL, "size", "empty range");
	if (!MV_IS_ALIGNED(va, align) || !MV_IS_ALIGNED(size, align))
		return mv_err(err, -EINVAL, "range %#llx+%#llx not aligned to %#llx",
			      (unsigned long long)va, (unsigned long long)size,
			      (unsigned long long)align);
	uint64_t last = va + size - 1;
	if (last < va || !mv_mmu_canonical(va, pt->levels) || !mv_mmu_canonical(last, pt->levels) ||
	    ((va ^ last) >> 63))
		return mv_err_field(err, -EINVAL, "va", "range %#llx+%#llx is not canonical for %u levels",
				    (unsigned long long)va, (unsigned long long)size, pt->levels);
	return 0;
}

/* Reads the A/D bits of entry idx of logical table t0, ORed over replicas. */
static uint64_t ad_or(struct mv_mmu_pt *pt, uint64_t t0, unsigned idx)
{
	uint64_t ad = 0;
	for (unsigned r = 0; r < pt->nrep; r++) {
		uint64_t e = 0;
		(void)mmu_mem_read(pt, rep_of(pt, t0, r) + idx * 8ULL, &e, NULL);
		ad |= e & (MV_MMU_PTE_A | MV_MMU_PTE_D);
	}
	return ad;
}

/* Replaces the leaf at (t0, idx, level) with a table of 512 smaller leaves
 * carrying the same flags (A/D ORed over replicas). */
static int split_leaf(struct mv_mmu_pt *pt, uint64_t t0, unsigned idx, unsigned level)
{
	uint64_t e;
	int rc = mmu_mem_read(pt, t0 + idx * 8ULL, &e, NULL);
	if (rc < 0)
		return rc;
	uint64_t flags = e & PTE_FLAGS_4K & ~MV_MMU_PTE_PAT;
	if (e & MV_MMU_PTE_PAT_LARGE)
		flags |= MV_MMU_PTE_PAT;
	flags |= ad_or(pt, t0, idx);
	uint64_t child;
	rc = rep_alloc_table(pt, &child);
	if (rc < 0)
		return rc;
	uint64_t base = leaf_addr(e, level), sub = level_size(level - 1);
	uint64_t bits = leaf_bits(flags, level - 1);
	for (unsigned i = 0; i < PT_ENTRIES && rc == 0; i++)
		rc = rep_write(pt, child, i, (base + i * sub) | bits, false);
	if (rc == 0)
		rc = rep_write(pt, t0, idx, child | TABLE_FLAGS, true);
	return rc;
}

/* Makes va a boundary: no leaf straddles it (splitting as needed). */
static int split_at(struct mv_mmu_pt *pt, uint64_t va)
{
	for (;;) {
		uint64_t t;
		unsigned l = 0;
		int rc = descend(pt, va, 1, false, &t, &l);
		if (rc != -EEXIST)
			return rc == -ENOENT ? 0 : rc;
		if (MV_IS_ALIGNED(va, level_size(l)))
			return 0;
		rc = split_leaf(pt, t, pt_index(va, l), l);
		if (rc < 0)
			return rc;
	}
}

static bool table_empty(struct mv_mmu_pt *pt, uint64_t t)
{
	for (unsigned i = 0; i < PT_ENTRIES; i++) {
		uint64_t e;
		if (mmu_mem_read(pt, t + i * 8ULL, &e, NULL) < 0 || (e & MV_MMU_PTE_P))
			return false;
	}
	return true;
}

/* Clears leaves inside [start, end) (no leaf straddles an edge after
 * split_at) under table t at level; frees tables left empty. */
static int unmap_rec(struct mv_mmu_pt *pt, uint64_t t, unsigned level, uint64_t tbase,
		     uint64_t start, uint64_t end)
{
	uint64_t sz = level_size(level);
	unsigned first = start > tbase ? (unsigned)((start - tbase) / sz) : 0;
	for (unsigned i = first; i < PT_ENTRIES; i++) {
		uint64_t s = tbase + i * sz;
		if (s >= end)
			break;
		uint64_t e;
		int rc = mmu_mem_read(pt, t + i * 8ULL, &e, NULL);
		if (rc < 0)
			return rc;
		if (!(e & MV_MMU_PTE_P))
			continue;
		if (is_leaf(e, level)) {
			rc = rep_write(pt, t, i, 0, false);
		} else {
			uint64_t child = e & MV_MMU_PTE_ADDR;
			rc = unmap_rec(pt, child, level - 1, s, start, end);
			if (rc == 0 && table_empty(pt, child)) {
				rc = rep_write(pt, t, i, 0, false);
				if (rc == 0)
					rep_free_table(pt, child);
			}
		}
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int unmap_range(struct mv_mmu_pt *pt, uint64_t va, uint64_t size)
{
	uint64_t m = va_mask(pt);
	int rc = split_at(pt, va);
	if (rc == 0)
		rc = split_at(pt, va + size);
	if (rc == 0)
		rc = unmap_rec(pt, pt->root[0], pt->levels, 0, va & m, ((va + size - 1) & m) + 1);
	return rc;
}

int mv_mmu_unmap(struct mv_mmu_pt *pt, uint64_t va, uint64_t size, struct mv_error **err)
{
	int rc = check_range(pt, va, size, MV_MMU_4K, err);
	if (rc < 0)
		return rc;
	rc = unmap_range(pt, va, size);
	return rc < 0 ? mv_err(err, rc, "unmap %#llx+%#llx failed", (unsigned long long)va,
			       (unsigned long long)size) : 0;
}

int mv_mmu_map(struct mv_mmu_pt *pt, uint64_t va, uint64_t pa, uint64_t size,
	       uint64_t page_size, uint64_t flags, struct mv_error **err)
{
	int lvl = size_level(page_size);
	if (lvl < 0)
		return mv_err_field(err, -EINVAL, "page_size", "page size must be 4K, 2M or 1G");
	if (flags & ~PTE_FLAGS_4K)
		return mv_err_field(err, -EINVAL, "flags", "unsupported flag bits %#llx",
				    (unsigned long long)(flags & ~PTE_FLAGS_4K));
	int rc = check_range(pt, va, size, page_size, err);
	if (rc < 0)
		return rc;
	if (!MV_IS_ALIGNED(pa, page_size) || pa + size - 1 < pa ||
	    ((pa + size - 1) >> pt->maxphy))
		return mv_err_field(err, -EINVAL, "pa", "pa %#llx+%#llx misaligned or above MAXPHYADDR %u",
				    (unsigned long long)pa, (unsigned long long)size, pt->maxphy);
	uint64_t n = size / page_size;
	/* pass 1: nothing may be mapped yet, so failure leaves no trace */
	for (uint64_t i = 0; i < n; i++) {
		uint64_t v = va + i * page_size, t, e;
		rc = descend(pt, v, (unsigned)lvl, false, &t, NULL);
		if (rc == -ENOENT)
			continue;
		if (rc == 0)
			rc = mmu_mem_read(pt, t + pt_index(v, (unsigned)lvl) * 8ULL, &e, NULL);
		if (rc == 0 && (e & MV_MMU_PTE_P))
			rc = -EEXIST;
		if (rc < 0)
			return mv_err(err, rc, "%#llx is already mapped", (unsigned long long)v);
	}
	uint64_t bits = leaf_bits(flags, (unsigned)lvl);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t v = va + i * page_size, t;
		rc = descend(pt, v, (unsigned)lvl, true, &t, NULL);
		if (rc == 0)
			rc = rep_write(pt, t, pt_index(v, (unsigned)lvl), (pa + i * page_size) | bits, false);
		if (rc < 0) {
			(void)unmap_range(pt, va, (i + 1) * page_size); /* also frees fresh empty tables */
			return mv_err(err, rc, "map %#llx: cannot build tables", (unsigned long long)v);
		}
	}
	return 0;
}

/* Visits every leaf in [va, va+size) (replica 0). fn returns 0 to go on. */
typedef int (*leaf_fn)(struct mv_mmu_pt *pt, uint64_t t0, unsigned idx, unsigned level, void *arg);
static int for_each_leaf(struct mv_mmu_pt *pt, uint64_t va, uint64_t size, leaf_fn fn, void *arg)
{
	uint64_t v = va, done = 0;
	while (done < size) {
		uint64_t t;
		unsigned l = 1;
		int rc = descend(pt, v, 1, false, &t, &l);
		if (rc == -ENOENT)
			return -ENOENT;
		if (rc < 0 && rc != -EEXIST)
			return rc;
		unsigned idx = pt_index(v, l);
		if (rc == 0) {
			uint64_t e;
			rc = mmu_mem_read(pt, t + idx * 8ULL, &e, NULL);
			if (rc < 0)
				return rc;
			if (!(e & MV_MMU_PTE_P))
				return -ENOENT;
		}
		rc = fn(pt, t, idx, l, arg);
		if (rc < 0)
			return rc;
		uint64_t step = level_size(l) - (v & (level_size(l) - 1));
		v += step;   /* a leaf may run past the end: count, don't compare */
		done += step;
	}
	return 0;
}

static int leaf_nop(struct mv_mmu_pt *pt, uint64_t t0, unsigned idx, unsigned level, void *arg)
{
	return 0;
}

/* Rewrites one leaf in every replica with cmpxchg so A/D set concurrently
 * by walkers survive: new = (old & keep) | set. */
static int update_leaf(struct mv_mmu_pt *pt, uint64_t t0, unsigned idx, uint64_t keep, uint64_t set)
{
	for (unsigned r = 0; r < pt->nrep; r++) {
		uint64_t pa = rep_of(pt, t0, r) + idx * 8ULL, old;
		int rc = mmu_mem_read(pt, pa, &old, NULL);
		while (rc == 0) {
			rc = mmu_mem_cmpxchg(pt, pa, &old, (old & keep) | set, NULL);
			if (rc == -EAGAIN)
				rc = 0;
			else
				break;
		}
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int leaf_protect(struct mv_mmu_pt *pt, uint64_t t0, unsigned idx, unsigned level, void *arg)
{
	uint64_t flags = *(uint64_t *)arg;
	uint64_t keep = (MV_MMU_PTE_ADDR & ~(level_size(level) - 1)) | MV_MMU_PTE_A | MV_MMU_PTE_D;
	return update_leaf(pt, t0, idx, keep,
			   leaf_bits(flags & ~(MV_MMU_PTE_A | MV_MMU_PTE_D), level));
}

int mv_mmu_protect(struct mv_mmu_pt *pt, uint64_t va, uint64_t size, uint64_t flags,
		   struct mv_error **err)
{
	if (flags & ~PTE_FLAGS_4K)
		return mv_err_field(err, -EINVAL, "flags", "unsupported flag bits");
	int rc = check_range(pt, va, size, MV_MMU_4K, err);
	if (rc < 0)
		return rc;
	rc = for_each_leaf(pt, va, size, leaf_nop, NULL);
	if (rc == -ENOENT)
		return mv_err(err, -ENOENT, "protect: range %#llx+%#llx has unmapped pages",
			      (unsigned long long)va, (unsigned long long)size);
	if (rc == 0)
		rc = split_at(pt, va);
	if (rc == 0)
		rc = split_at(pt, va + size);
	if (rc == 0)
		rc = for_each_leaf(pt, va, size, leaf_protect, &flags);
	return rc < 0 ? mv_err(err, rc, "protect %#llx failed", (unsigned long long)va) : 0;
}

int mv_mmu_query(struct mv_mmu_pt *pt, uint64_t va, struct mv_mmu_xlat *out)
{
	if (!mv_mmu_canonical(va, pt->levels))
		return -EINVAL;
	uint64_t t, e;
	unsigned l = 1;
	int rc = descend(pt, va, 1, false, &t, &l);
	if (rc < 0 && rc != -EEXIST)
		return rc;
	unsigned idx = pt_index(va, l);
	rc = mmu_mem_read(pt, t + idx * 8ULL, &e, NULL);
	if (rc < 0)
		return rc;
	if (!(e & MV_MMU_PTE_P))
		return -ENOENT;
	e |= ad_or(pt, t, idx);
	uint64_t sz = level_size(l);
	memset(out, 0, sizeof(*out));
	out->pa = leaf_addr(e, l) | (va & (sz - 1));
	out->gpa = out->pa;
	out->page_size = sz;
	out->level = l;
	out->flags = e & PTE_FLAGS_4K & ~MV_MMU_PTE_PAT;
	if (l == 1 ? (e & MV_MMU_PTE_PAT) : (e & MV_MMU_PTE_PAT_LARGE))
		out->flags |= MV_MMU_PTE_PAT;
	out->perms = ((e & MV_MMU_PTE_RW) ? MV_MMU_PERM_W : 0) |
		     ((e & MV_MMU_PTE_US) ? MV_MMU_PERM_U : 0) |
		     ((e & MV_MMU_PTE_NX) ? 0 : MV_MMU_PERM_X) |
		     ((e & MV_MMU_PTE_G) ? MV_MMU_PERM_G : 0) |
		     ((e & MV_MMU_PTE_D) ? MV_MMU_PERM_D : 0);
	return 0;
}

static int leaf_clear(struct mv_mmu_pt *pt, uint64_t t0, unsigned idx, unsigned level, void *arg)
{
	return update_leaf(pt, t0, idx, ~*(uint64_t *)arg, 0);
}

int mv_mmu_clear_ad(struct mv_mmu_pt *pt, uint64_t va, uint64_t bits)
{
	if (bits & ~(MV_MMU_PTE_A | MV_MMU_PTE_D))
		return -EINVAL;
	if (!mv_mmu_canonical(va, pt->levels))
		return -EINVAL;
	return for_each_leaf(pt, va & ~(MV_MMU_4K - 1), MV_MMU_4K, leaf_clear, &bits);
}
