/* The TLB: set-associative, entries tagged by PASID and page size (4K/2M/1G
 * probed in that order), caching the effective permissions and dirty state of
 * a translation (one or two stages combined). Invalidate all, by PASID, by
 * range; hit/miss counters. One TLB per thread (no locking: it is the hot
 * path). Used by mv_mmu_translate, the device workers and the benchmark. */
#include <errno.h>
#include <stdlib.h>
#include "mmu_i.h"

#define TAG_INVALID (~0ULL)

struct tlb_entry {
	uint64_t tag;     /* (va >> shift) << 2 | size class */
	uint64_t pa;      /* page base */
	uint64_t gpa;     /* page base of the stage-1 output */
	uint64_t flags;
	uint32_t pasid;
	uint16_t perms;
	uint16_t level;
	uint32_t ok_acc;  /* last access type found allowed: skips the check next time */
};

#define ACC_NONE (~0u)   /* no access type cached */

struct mv_mmu_tlb {
	unsigned sets, ways;
	uint64_t set_mask;
	struct tlb_entry *e;     /* sets * ways */
	uint8_t *victim;         /* round-robin pointer per set */
	struct mv_mmu_tlb_stats st;
};

static const unsigned cls_shift[3] = { 12, 21, 30 };

int mv_mmu_tlb_create(const struct mv_mmu_tlb_config *cfg, struct mv_mmu_tlb **out,
		      struct mv_error **err)
{
	*out = NULL;
	if (!cfg || !cfg->sets || cfg->sets > 65536 || (cfg->sets & (cfg->sets - 1)))
		return mv_err_field(err, -EINVAL, "sets", "TLB sets must be a power of two <= 65536");
	if (!cfg->ways || cfg->ways > 16)
		return mv_err_field(err, -EINVAL, "ways", "TLB ways must be 1..16");
	struct mv_mmu_tlb *t = calloc(1, sizeof(*t));
	if (!t)
		abort();
	t->sets = cfg->sets;
	t->ways = cfg->ways;
	t->set_mask = cfg->sets - 1;
	t->e = calloc((size_t)t->sets * t->ways, sizeof(*t->e));
	t->victim = calloc(t->sets, 1);
	if (!t->e || !t->victim)
		abort();
	for (size_t i = 0; i < (size_t)t->sets * t->ways; i++)
		t->e[i].tag = TAG_INVALID;
	*out = t;
	return 0;
}

void mv_mmu_tlb_destroy(struct mv_mmu_tlb *t)
{
	if (!t)
		return;
	free(t->e);
	free(t->victim);
	free(t);
}

static inline struct tlb_entry *set_of(struct mv_mmu_tlb *t, uint64_t vpn, unsigned c)
{
	/* spread the three size classes over different sets */
	uint64_t s = (vpn ^ (vpn >> 11) ^ ((uint64_t)c * 0x9e5)) & t->set_mask;
	return &t->e[s * t->ways];
}


static void fill(const struct tlb_entry *e, unsigned c, uint64_t va, struct mv_mmu_xlat *out)
{
	uint64_t off = va & ((1ULL << cls_shift[c]) - 1);
	out->pa = e->pa | off;
	out->gpa = e->gpa | off;
	out->page_size = 1ULL << cls_shift[c];
	out->flags = e->flags;
	out->perms = e->perms;
	out->level = e->level;
}

/* Every size class, and the permission check for an access type not seen on
 * the entry before. */
__attribute__((noinline)) static bool lookup_slow(struct mv_mmu_tlb *t, uint32_t pasid, uint64_t va,
						  unsigned acc, struct mv_mmu_xlat *out)
{
	for (unsigned c = 0; c < 3; c++) {
		uint64_t vpn = va >> cls_shift[c], tag = (vpn << 2) | c;
		struct tlb_entry *s = set_of(t, vpn, c);
		for (unsigned w = 0; w < t->ways; w++) {
			struct tlb_entry *e = &s[w];
			if (e->tag != tag || (e->pasid != pasid && !(e->perms & MV_MMU_PERM_G)))
				continue;
			/* An entry's perms only change by re-insertion, which clears the
			 * cache: the same access type needs no second permission check. */
			if (e->ok_acc != acc) {
				if (!mmu_perm_ok(e->perms, acc) ||
				    ((acc & MV_MMU_ACC_WRITE) && !(e->perms & MV_MMU_PERM_D)))
					goto miss; /* let the walker fault precisely or set D */
				e->ok_acc = acc;
			}
			fill(e, c, va, out);
			t->st.hits++;
			return true;
		}
	}
miss:
	t->st.misses++;
	return false;
}

/* The hot path: a 4 KiB entry already checked for this access type. Kept
 * small so the compiler needs few registers (no prologue spills). */
bool mv_mmu_tlb_lookup(struct mv_mmu_tlb *t, uint32_t pasid, uint64_t va, unsigned acc,
		       struct mv_mmu_xlat *out)
{
	uint64_t vpn = va >> 12, tag = vpn << 2;
	const struct tlb_entry *s = set_of(t, vpn, 0);
	for (unsigned w = 0; w < t->ways; w++) {
		const struct tlb_entry *e = &s[w];
		if (e->tag == tag && e->ok_acc == acc &&
		    (e->pasid == pasid || (e->perms & MV_MMU_PERM_G))) {
			fill(e, 0, va, out);
			t->st.hits++;
			return true;
		}
	}
	return lookup_slow(t, pasid, va, acc, out);
}

void mv_mmu_tlb_insert(struct mv_mmu_tlb *t, uint32_t pasid, uint64_t va,
		       const struct mv_mmu_xlat *x)
{
	unsigned c = x->page_size >= MV_MMU_1G ? 2 : x->page_size >= MV_MMU_2M ? 1 : 0;
	uint64_t vpn = va >> cls_shift[c], tag = (vpn << 2) | c, mask = (1ULL << cls_shift[c]) - 1;
	struct tlb_entry *s = set_of(t, vpn, c), *slot = NULL;
	uint64_t sidx = (uint64_t)(s - t->e) / t->ways;
	for (unsigned w = 0; w < t->ways && !slot; w++)
		if (s[w].tag == tag && s[w].pasid == pasid)
			slot = &s[w];   /* refresh in place: no duplicates */
	for (unsigned w = 0; w < t->ways && !slot; w++)
		if (s[w].tag == TAG_INVALID)
			slot = &s[w];
	if (!slot) {
		slot = &s[t->victim[sidx]];
		t->victim[sidx] = (uint8_t)((t->victim[sidx] + 1) % t->ways);
		t->st.evictions++;
	}
	*slot = (struct tlb_entry){ .tag = tag, .pa = x->pa & ~mask, .gpa = x->gpa & ~mask,
				    .flags = x->flags, .pasid = pasid,
				    .perms = (uint16_t)x->perms, .level = (uint16_t)x->level,
				    .ok_acc = ACC_NONE };
	t->st.inserts++;
}

void mv_mmu_tlb_flush_all(struct mv_mmu_tlb *t)
{
	for (size_t i = 0; i < (size_t)t->sets * t->ways; i++)
		t->e[i].tag = TAG_INVALID;
	t->st.flushes++;
}

void mv_mmu_tlb_flush_pasid(struct mv_mmu_tlb *t, uint32_t pasid)
{
	for (size_t i = 0; i < (size_t)t->sets * t->ways; i++)
		if (t->e[i].pasid == pasid && !(t->e[i].perms & MV_MMU_PERM_G))
			t->e[i].tag = TAG_INVALID;
	t->st.flushes++;
}

void mv_mmu_tlb_flush_range(struct mv_mmu_tlb *t, uint32_t pasid, uint64_t va, uint64_t len)
{
	if (!len)
		return;
	uint64_t last = va + len - 1;
	for (size_t i = 0; i < (size_t)t->sets * t->ways; i++) {
		struct tlb_entry *e = &t->e[i];
		if (e->tag == TAG_INVALID || (e->pasid != pasid && !(e->perms & MV_MMU_PERM_G)))
			continue;
		unsigned sh = cls_shift[e->tag & 3];
		uint64_t base = (e->tag >> 2) << sh, end = base + ((1ULL << sh) - 1);
		if (base <= last && va <= end)
			e->tag = TAG_INVALID;
	}
	t->st.flushes++;
}

void mv_mmu_tlb_get_stats(const struct mv_mmu_tlb *t, struct mv_mmu_tlb_stats *st)
{
	*st = t->st;
}
