/* NUMA-replicated page tables: each logical table page has one copy per
 * replica (replica r lives on node r), linked in a ring kept in a hash map
 * beside the tables. Every entry write goes to all copies; a non-leaf entry in
 * replica r points at replica r of the child, so a walker on node r stays on
 * its node. Also the invariant checker. Used by pt.c (edits) and walk.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "mmu_i.h"

static uint64_t hash64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

int rep_map_init(struct rep_map *m)
{
	m->cap = 64;
	m->n = 0;
	m->slots = calloc(m->cap, sizeof(*m->slots));
	if (!m->slots)
		abort();
	return 0;
}

void rep_map_free(struct rep_map *m)
{
	free(m->slots);
	m->slots = NULL;
}

static void rep_grow(struct rep_map *m)
{
	struct rep_map nm = { .cap = m->cap * 2 };
	nm.slots = calloc(nm.cap, sizeof(*nm.slots));
	if (!nm.slots)
		abort();
	for (uint64_t i = 0; i < m->cap; i++)
		if (m->slots[i].key)
			(void)rep_put(&nm, m->slots[i].key - 1, m->slots[i].next, m->slots[i].node);
	free(m->slots);
	*m = nm;
}

int rep_put(struct rep_map *m, uint64_t pa, uint64_t next, unsigned node)
{
	if ((m->n + 1) * 4 > m->cap * 3)
		rep_grow(m);
	uint64_t i = hash64(pa) & (m->cap - 1);
	while (m->slots[i].key && m->slots[i].key != pa + 1)
		i = (i + 1) & (m->cap - 1);
	if (!m->slots[i].key)
		m->n++;
	m->slots[i] = (struct rep_slot){ .key = pa + 1, .next = next, .node = node };
	return 0;
}

struct rep_slot *rep_get(const struct rep_map *m, uint64_t pa)
{
	uint64_t i = hash64(pa) & (m->cap - 1);
	while (m->slots[i].key) {
		if (m->slots[i].key == pa + 1)
			return &m->slots[i];
		i = (i + 1) & (m->cap - 1);
	}
	return NULL;
}

void rep_del(struct rep_map *m, uint64_t pa)
{
	uint64_t mask = m->cap - 1, i = hash64(pa) & mask;
	while (m->slots[i].key && m->slots[i].key != pa + 1)
		i = (i + 1) & mask;
	if (!m->slots[i].key)
		return;
	/* backward-shift deletion keeps probe chains intact without tombstones */
	uint64_t j = i;
	for (;;) {
		j = (j + 1) & mask;
		if (!m->slots[j].key)
			break;
		uint64_t h = hash64(m->slots[j].key - 1) & mask;
		bool between = (i <= j) ? (i < h && h <= j) : (i < h || h <= j);
		if (between)
			continue;
		m->slots[i] = m->slots[j];
		i = j;
	}
	m->slots[i].key = 0;
	m->n--;
}

uint64_t rep_of(struct mv_mmu_pt *pt, uint64_t t0, unsigned r)
{
	uint64_t t = t0;
	for (unsigned i = 0; i < r; i++) {
		struct rep_slot *s = rep_get(&pt->rmap, t);
		if (!s)
			abort(); /* broken invariant: table without its ring */
		t = s->next;
	}
	return t;
}

int rep_alloc_table(struct mv_mmu_pt *pt, uint64_t *pa0)
{
	uint64_t pa[MV_MMU_MAX_REPLICAS];
	for (unsigned r = 0; r < pt->nrep; r++) {
		int rc = pt->ops->alloc_table(pt->ctx, r, &pa[r]);
		if (rc < 0 || (pa[r] & (MV_MMU_4K - 1)) || (pa[r] & ~MV_MMU_PTE_ADDR) ||
		    (pa[r] & pt->rsvd_pa)) {
			if (rc == 0)
				pt->ops->free_table(pt->ctx, pa[r]);
			while (r--)
				pt->ops->free_table(pt->ctx, pa[r]);
			return rc < 0 ? rc : -ERANGE;
		}
	}
	if (pt->nrep > 1)
		for (unsigned r = 0; r < pt->nrep; r++)
			rep_put(&pt->rmap, pa[r], pa[(r + 1) % pt->nrep], r);
	pt->ntables++;
	*pa0 = pa[0];
	return 0;
}

void rep_free_table(struct mv_mmu_pt *pt, uint64_t pa0)
{
	uint64_t t = pa0;
	for (unsigned r = 0; r < pt->nrep; r++) {
		uint64_t next = t;
		if (pt->nrep > 1) {
			next = rep_get(&pt->rmap, t)->next;
			rep_del(&pt->rmap, t);
		}
		pt->ops->free_table(pt->ctx, t);
		t = next;
	}
	pt->ntables--;
}

int rep_write(struct mv_mmu_pt *pt, uint64_t t0, unsigned idx, uint64_t v, bool nonleaf)
{
	if (pt->nrep == 1)
		return mmu_mem_write(pt, t0 + idx * 8ULL, v, NULL);
	uint64_t t = t0, child = v & MV_MMU_PTE_ADDR;
	for (unsigned r = 0; r < pt->nrep; r++) {
		uint64_t vr = nonleaf ? ((v & ~MV_MMU_PTE_ADDR) | child) : v;
		int rc = mmu_mem_write(pt, t + idx * 8ULL, vr, NULL);
		if (rc < 0)
			return rc;
		t = rep_get(&pt->rmap, t)->next;
		if (nonleaf)
			child = rep_get(&pt->rmap, child)->next;
	}
	return 0;
}

/* ---- invariant checker ------------------------------------------------- */

static int check_table(struct mv_mmu_pt *pt, uint64_t t0, unsigned level, uint64_t *count,
		       struct mv_error **err)
{
	uint64_t tr[MV_MMU_MAX_REPLICAS];
	(*count)++;
	tr[0] = t0;
	if (pt->nrep > 1) {
		uint64_t t = t0;
		for (unsigned r = 0; r < pt->nrep; r++) {
			struct rep_slot *s = rep_get(&pt->rmap, t);
			if (!s || s->node != r)
				return mv_err(err, -EUCLEAN, "table %#llx: replica %u missing or on node %u",
					      (unsigned long long)t, r, s ? s->node : ~0u);
			tr[r] = t;
			t = s->next;
		}
		if (t != t0)
			return mv_err(err, -EUCLEAN, "table %#llx: ring does not close",
				      (unsigned long long)t0);
	}
	for (unsigned i = 0; i < PT_ENTRIES; i++) {
		uint64_t e0;
		if (mmu_mem_read(pt, t0 + i * 8ULL, &e0, NULL) < 0)
			return mv_err(err, -EUCLEAN, "table %#llx unreadable", (unsigned long long)t0);
		bool present = e0 & MV_MMU_PTE_P;
		bool nonleaf = present && level > 1 && !(e0 & MV_MMU_PTE_PS);
		if (present && (e0 & pt->rsvd_pa))
			return mv_err(err, -EUCLEAN, "level %u entry %u has reserved address bits",
				      level, i);
		for (unsigned r = 1; r < pt->nrep; r++) {
			uint64_t er;
			if (mmu_mem_read(pt, tr[r] + i * 8ULL, &er, NULL) < 0)
				return -EUCLEAN;
			uint64_t ign = MV_MMU_PTE_A | MV_MMU_PTE_D; /* set per replica by walkers */
			if (nonleaf) {
				uint64_t want = rep_of(pt, e0 & MV_MMU_PTE_ADDR, r);
				if ((er & MV_MMU_PTE_ADDR) != want ||
				    ((er ^ e0) & ~MV_MMU_PTE_ADDR & ~ign))
					return mv_err(err, -EUCLEAN,
						      "level %u entry %u: replica %u differs (%#llx vs %#llx)",
						      level, i, r, (unsigned long long)er,
						      (unsigned long long)e0);
			} else if ((er ^ e0) & ~ign) {
				return mv_err(err, -EUCLEAN,
					      "level %u entry %u: replica %u leaf differs (%#llx vs %#llx)",
					      level, i, r, (unsigned long long)er, (unsigned long long)e0);
			}
		}
		if (nonleaf) {
			int rc = check_table(pt, e0 & MV_MMU_PTE_ADDR, level - 1, count, err);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

int mv_mmu_pt_check(struct mv_mmu_pt *pt, struct mv_error **err)
{
	uint64_t count = 0;
	int rc = check_table(pt, pt->root[0], pt->levels, &count, err);
	if (rc < 0)
		return rc;
	if (!pt->adopted && count != pt->ntables)
		return mv_err(err, -EUCLEAN, "%llu reachable tables, %llu allocated",
			      (unsigned long long)count, (unsigned long long)pt->ntables);
	if (pt->nrep > 1 && pt->rmap.n != pt->ntables * pt->nrep)
		return mv_err(err, -EUCLEAN, "ring map holds %llu pages, expected %llu",
			      (unsigned long long)pt->rmap.n,
			      (unsigned long long)(pt->ntables * pt->nrep));
	return 0;
}
