/* Guest RAM mapped into this process: one MAP_SHARED mapping per layout
 * region, and the GPA->HVA translation that workloads, devices and migration
 * call on every guest access. Used by memvisor-vmm and the tests. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "mem_i.h"

int mv_guest_mem_map(const struct mv_mem_layout *l, struct mv_guest_mem **out,
		     struct mv_error **err)
{
	*out = NULL;
	int ret = mv_mem_layout_validate(l, true, err);
	if (ret < 0)
		return ret;
	struct mv_guest_mem *m = calloc(1, sizeof(*m));
	if (!m)
		abort();
	bool thp = mv_mem_shmem_thp();
	for (unsigned i = 0; i < l->n; i++) {
		const struct mv_mem_region_desc *d = &l->r[i];
		struct mv_mem_region *r = &m->r[i];
		bool huge = d->flags & MV_MEM_HUGETLB;
		r->gpa = d->gpa;
		r->size = d->size;
		r->flags = d->flags;
		r->fd = fcntl(d->fd, F_DUPFD_CLOEXEC, 3);
		if (r->fd < 0) {
			ret = mv_err(err, -errno, "dup of region %u fd: %s", i, strerror(errno));
			goto fail;
		}
		m->n = i + 1;
		/* 4 KiB shmem: NORESERVE keeps a sparse 64 GiB guest out of the
		 * overcommit accounting. hugetlb: reserve now so a short pool fails
		 * here with ENOMEM instead of a SIGBUS in the guest later. */
		void *p = mmap(NULL, d->size, PROT_READ | PROT_WRITE,
			       MAP_SHARED | (huge ? 0 : MAP_NORESERVE), r->fd, 0);
		if (p == MAP_FAILED) {
			ret = mv_err(err, -errno, "mapping region %u (%llu bytes): %s", i,
				     (unsigned long long)d->size, strerror(errno));
			goto fail;
		}
		r->hva = p;
		/* Every fault here allocates guest RAM: 2 MiB at a time where the
		 * host's shmem THP policy honours the hint (scripts/host-setup). A
		 * region under 2 MiB cannot hold a PMD mapping. */
		r->pages = huge ? MV_MEM_PAGES_HUGETLB : MV_MEM_PAGES_4K;
		if (!huge && madvise(p, d->size, MADV_HUGEPAGE) == 0 && thp &&
		    d->size >= MV_HUGE_PAGE_SIZE)
			r->pages = MV_MEM_PAGES_THP;
		/* A forked helper must not share (or COW-pin) guest RAM. */
		(void)madvise(p, d->size, MADV_DONTFORK);
		m->ram_size += d->size;
	}
	*out = m;
	return 0;
fail:
	mv_guest_mem_unmap(m);
	return ret;
}

void mv_guest_mem_unmap(struct mv_guest_mem *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < m->n; i++) {
		if (m->r[i].hva)
			munmap(m->r[i].hva, m->r[i].size);
		if (m->r[i].fd >= 0)
			close(m->r[i].fd);
	}
	free(m);
}

void mv_guest_mem_no_thp(struct mv_guest_mem *m)
{
	for (unsigned i = 0; i < m->n; i++) {
		struct mv_mem_region *r = &m->r[i];
		if (r->pages != MV_MEM_PAGES_THP)
			continue;
		(void)madvise(r->hva, r->size, MADV_NOHUGEPAGE);
		r->pages = MV_MEM_PAGES_4K;
	}
}

unsigned mv_guest_mem_nregions(const struct mv_guest_mem *m)
{
	return m->n;
}

const struct mv_mem_region *mv_guest_mem_region(const struct mv_guest_mem *m, unsigned i)
{
	return i < m->n ? &m->r[i] : NULL;
}

uint64_t mv_guest_mem_ram_size(const struct mv_guest_mem *m)
{
	return m->ram_size;
}

static inline bool region_holds(const struct mv_mem_region *r, uint64_t gpa, uint64_t len)
{
	/* Written so that neither gpa + len nor gpa - r->gpa can wrap. */
	return gpa >= r->gpa && len <= r->size && gpa - r->gpa <= r->size - len;
}

/* Last region whose gpa <= gpa, or -1. Regions are sorted (validated at map). */
static inline int region_search(const struct mv_guest_mem *m, uint64_t gpa)
{
	int lo = 0, hi = (int)m->n - 1, found = -1;
	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		if (m->r[mid].gpa <= gpa) {
			found = mid;
			lo = mid + 1;
		} else {
			hi = mid - 1;
		}
	}
	return found;
}

void *mv_gpa_to_hva(struct mv_guest_mem *m, uint64_t gpa, uint64_t len)
{
	len += !len;  /* an empty access still needs its first byte mapped */
	unsigned last = atomic_load_explicit(&m->last, memory_order_relaxed);
	const struct mv_mem_region *r = &m->r[last];
	if (__builtin_expect(region_holds(r, gpa, len), 1))
		return r->hva + (gpa - r->gpa);
	int i = region_search(m, gpa);
	if (i < 0 || !region_holds(&m->r[i], gpa, len))
		return NULL;
	atomic_store_explicit(&m->last, (unsigned)i, memory_order_relaxed);
	return m->r[i].hva + (gpa - m->r[i].gpa);
}

int mv_guest_mem_find(struct mv_guest_mem *m, uint64_t gpa)
{
	int i = region_search(m, gpa);
	if (i < 0 || gpa - m->r[i].gpa >= m->r[i].size)
		return -1;
	return i;
}
