/* Reference model of an address space: a deliberately simple sorted array of
 * leaf mappings {va, size, pa, flags} with the SDM permission rules written
 * out plainly. It shares no code with src/mmu. Used by tests/unit/mmu (random
 * differential tests) and tests/fuzz/mmu_ops.c. Header-only so both link it. */
#ifndef MV_MMU_REF_MODEL_H
#define MV_MMU_REF_MODEL_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/mmu.h"

#define REF_FLAGS (MV_MMU_PTE_RW | MV_MMU_PTE_US | MV_MMU_PTE_PWT | MV_MMU_PTE_PCD | \
		   MV_MMU_PTE_A | MV_MMU_PTE_D | MV_MMU_PTE_PAT | MV_MMU_PTE_G | MV_MMU_PTE_NX)

struct ref_map {
	uint64_t va, size, pa, flags;  /* va in the truncated (VA-width) space */
};
struct ref_model {
	struct ref_map *m;
	size_t n, cap;
	unsigned levels, maxphy;
};

static inline uint64_t ref_vmask(const struct ref_model *r)
{
	return r->levels == 5 ? (1ULL << 57) - 1 : (1ULL << 48) - 1;
}

static inline bool ref_canon(const struct ref_model *r, uint64_t va)
{
	unsigned top = r->levels == 5 ? 56 : 47;
	uint64_t hi = va >> top;  /* bits 63..top must be all 0 or all 1 */
	return hi == 0 || hi == (~0ULL >> top);
}

/* index of the first mapping with va + size > a (binary search) */
static inline size_t ref_lower(const struct ref_model *r, uint64_t a)
{
	size_t lo = 0, hi = r->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (r->m[mid].va + r->m[mid].size <= a)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static inline bool ref_overlaps(const struct ref_model *r, uint64_t a, uint64_t len)
{
	size_t i = ref_lower(r, a);
	return i < r->n && r->m[i].va < a + len;
}

static inline void ref_insert_at(struct ref_model *r, size_t i, struct ref_map m)
{
	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 256;
		r->m = realloc(r->m, r->cap * sizeof(*r->m));
		if (!r->m)
			abort();
	}
	memmove(&r->m[i + 1], &r->m[i], (r->n - i) * sizeof(*r->m));
	r->m[i] = m;
	r->n++;
}

static inline void ref_remove_at(struct ref_model *r, size_t i)
{
	memmove(&r->m[i], &r->m[i + 1], (r->n - i - 1) * sizeof(*r->m));
	r->n--;
}

static inline int ref_check_range(const struct ref_model *r, uint64_t va, uint64_t size,
				  uint64_t align)
{
	if (!size || (va & (align - 1)) || (size & (align - 1)))
		return -EINVAL;
	uint64_t last = va + size - 1;
	if (last < va || !ref_canon(r, va) || !ref_canon(r, last) || ((va ^ last) >> 63))
		return -EINVAL;
	return 0;
}

static inline int ref_map(struct ref_model *r, uint64_t va, uint64_t pa, uint64_t size,
			  uint64_t ps, uint64_t flags)
{
	if (ps != MV_MMU_4K && ps != MV_MMU_2M && ps != MV_MMU_1G)
		return -EINVAL;
	if (flags & ~REF_FLAGS)
		return -EINVAL;
	if (ref_check_range(r, va, size, ps))
		return -EINVAL;
	if ((pa & (ps - 1)) || pa + size - 1 < pa || ((pa + size - 1) >> r->maxphy))
		return -EINVAL;
	uint64_t tv = va & ref_vmask(r);
	if (ref_overlaps(r, tv, size))
		return -EEXIST;
	size_t i = ref_lower(r, tv);
	for (uint64_t off = 0; off < size; off += ps)
		ref_insert_at(r, i++, (struct ref_map){ tv + off, ps, pa + off, flags });
	return 0;
}

/* Splits the mapping strictly containing a (not starting at it) until a is a
 * boundary, one page-size step at a time as the hardware format forces. */
static inline void ref_split_at(struct ref_model *r, uint64_t a)
{
	for (;;) {
		size_t i = ref_lower(r, a);
		if (i >= r->n || r->m[i].va >= a)
			return;
		struct ref_map big = r->m[i];
		uint64_t sub = big.size / 512;
		ref_remove_at(r, i);
		for (unsigned k = 0; k < 512; k++)
			ref_insert_at(r, i + k, (struct ref_map){ big.va + k * sub, sub,
								   big.pa + k * sub, big.flags });
	}
}

static inline int ref_unmap(struct ref_model *r, uint64_t va, uint64_t size)
{
	if (ref_check_range(r, va, size, MV_MMU_4K))
		return -EINVAL;
	uint64_t tv = va & ref_vmask(r), end = tv + size;
	ref_split_at(r, tv);
	ref_split_at(r, end);
	size_t i = ref_lower(r, tv);
	while (i < r->n && r->m[i].va < end)
		ref_remove_at(r, i);
	return 0;
}

static inline int ref_protect(struct ref_model *r, uint64_t va, uint64_t size, uint64_t flags)
{
	if (flags & ~REF_FLAGS)
		return -EINVAL;
	if (ref_check_range(r, va, size, MV_MMU_4K))
		return -EINVAL;
	uint64_t tv = va & ref_vmask(r), end = tv + size;
	for (uint64_t a = tv; a < end;) {  /* every byte must be covered */
		size_t i = ref_lower(r, a);
		if (i >= r->n || r->m[i].va > a)
			return -ENOENT;
		a = r->m[i].va + r->m[i].size;
	}
	ref_split_at(r, tv);
	ref_split_at(r, end);
	uint64_t ad = MV_MMU_PTE_A | MV_MMU_PTE_D;
	for (size_t i = ref_lower(r, tv); i < r->n && r->m[i].va < end; i++)
		r->m[i].flags = (flags & ~ad) | (r->m[i].flags & ad);
	return 0;
}

static inline struct ref_map *ref_find(struct ref_model *r, uint64_t va)
{
	uint64_t tv = va & ref_vmask(r);
	size_t i = ref_lower(r, tv);
	return (i < r->n && r->m[i].va <= tv) ? &r->m[i] : NULL;
}

static inline unsigned ref_level_of(uint64_t size)
{
	return size == MV_MMU_4K ? 1 : size == MV_MMU_2M ? 2 : 3;
}

/* The expected outcome of one access, written from the SDM tables directly. */
struct ref_result {
	enum mv_mmu_fault_kind kind;
	unsigned level;
	uint64_t pa, size;
};

static inline struct ref_result ref_walk(struct ref_model *r, uint64_t va, unsigned acc)
{
	struct ref_result res = { 0 };
	if (!ref_canon(r, va)) {
		res.kind = MV_MMU_FAULT_NON_CANONICAL;
		return res;
	}
	struct ref_map *m = ref_find(r, va);
	if (!m) {
		/* tables exist exactly where some mapping lies below them */
		uint64_t tv = va & ref_vmask(r);
		for (unsigned l = r->levels; l >= 1; l--) {
			uint64_t span = 1ULL << (12 + 9 * (l - 1));
			if (!ref_overlaps(r, tv & ~(span - 1), span)) {
				res.kind = MV_MMU_FAULT_NOT_PRESENT;
				res.level = l;
				return res;
			}
		}
		abort(); /* unreachable: level 1 always answers */
	}
	res.level = ref_level_of(m->size);
	bool nxe = acc & MV_MMU_CTL_NXE;
	if ((m->flags & MV_MMU_PTE_NX) && !nxe) {
		res.kind = MV_MMU_FAULT_RESERVED;
		return res;
	}
	bool user = acc & MV_MMU_ACC_USER, write = acc & MV_MMU_ACC_WRITE, exec = acc & MV_MMU_ACC_EXEC;
	bool upage = m->flags & MV_MMU_PTE_US, rw = m->flags & MV_MMU_PTE_RW;
	bool nx = m->flags & MV_MMU_PTE_NX;
	bool ok;
	if (user)
		ok = upage && (!write || rw) && (!exec || !nx);
	else if (exec)
		ok = !nx && !(upage && (acc & MV_MMU_CTL_SMEP));
	else
		ok = !(upage && (acc & MV_MMU_CTL_SMAP) && !(acc & MV_MMU_CTL_AC)) &&
		     !(write && (acc & MV_MMU_CTL_WP) && !rw);
	if (!ok) {
		res.kind = MV_MMU_FAULT_PERMISSION;
		return res;
	}
	res.pa = m->pa + ((va & ref_vmask(r)) - m->va);
	res.size = m->size;
	if (!(acc & MV_MMU_CTL_NO_AD))
		m->flags |= MV_MMU_PTE_A | (write ? MV_MMU_PTE_D : 0);
	return res;
}

static inline void ref_free(struct ref_model *r)
{
	free(r->m);
	memset(r, 0, sizeof(*r));
}

#endif
