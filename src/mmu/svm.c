/* Shared virtual memory for the device MMU: the registration table of host
 * ranges a context shares (mv_mmu_svm_alloc/register), the replayable-fault
 * resolver that mirrors a host page into the device's shared tables, and the
 * notifier the host calls before munmap/mprotect, which unmaps device entries
 * and shoots down every worker's TLB. Used by dev.c and SVM callers. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "dev_i.h"

#define FAULT_AROUND 16   /* pages mirrored per fault, as drivers prefault */

static struct svm_region *region_find(struct mv_mmu_ctx *c, uint64_t va)
{
	for (size_t i = 0; i < c->nrg; i++)
		if (c->rg[i].start <= va && va < c->rg[i].end)
			return &c->rg[i];
	return NULL;
}

static void region_add(struct mv_mmu_ctx *c, struct svm_region r)
{
	if (c->nrg == c->cap_rg) {
		c->cap_rg = c->cap_rg ? 2 * c->cap_rg : 16;
		c->rg = realloc(c->rg, c->cap_rg * sizeof(*c->rg));
		if (!c->rg)
			abort();
	}
	size_t i = 0;
	while (i < c->nrg && c->rg[i].start < r.start)
		i++;
	memmove(&c->rg[i + 1], &c->rg[i], (c->nrg - i) * sizeof(*c->rg));
	c->rg[i] = r;
	c->nrg++;
}

static bool region_overlaps(struct mv_mmu_ctx *c, uint64_t start, uint64_t end)
{
	for (size_t i = 0; i < c->nrg; i++)
		if (c->rg[i].start < end && start < c->rg[i].end)
			return true;
	return false;
}

/* Applies prot (<0: remove) to [start, end) of every region, splitting edges. */
static void region_apply(struct mv_mmu_ctx *c, uint64_t start, uint64_t end, int prot)
{
	struct svm_region *mids = NULL;
	size_t nmid = 0;
	for (size_t i = 0; i < c->nrg;) {
		struct svm_region r = c->rg[i];
		if (r.end <= start || end <= r.start) {
			i++;
			continue;
		}
		memmove(&c->rg[i], &c->rg[i + 1], (c->nrg - i - 1) * sizeof(*c->rg));
		c->nrg--;
		struct svm_region lo = r, mid = r, hi = r;
		lo.end = start;
		mid.start = r.start > start ? r.start : start;
		mid.end = r.end < end ? r.end : end;
		mid.prot = prot;
		hi.start = end;
		if (r.start < start)
			region_add(c, lo);
		if (end < r.end)
			region_add(c, hi);
		if (prot >= 0) {  /* re-added after the scan so it is not split again */
			mids = realloc(mids, (nmid + 1) * sizeof(*mids));
			if (!mids)
				abort();
			mids[nmid++] = mid;
		}
		i = 0; /* the array moved: rescan (ranges are few) */
	}
	for (size_t i = 0; i < nmid; i++)
		region_add(c, mids[i]);
	free(mids);
}

static bool shared_va_ok(struct mv_mmu_ctx *c, uint64_t start, uint64_t len)
{
	uint64_t end = start + len;
	return len && end > start && end <= VRAM_PA && MV_IS_ALIGNED(start, MV_MMU_4K) &&
	       MV_IS_ALIGNED(len, MV_MMU_4K) && mv_mmu_canonical(end - 1, mv_mmu_pt_levels(c->shared));
}

int svm_resolve(struct mv_mmu_ctx *c, uint64_t va, bool write)
{
	struct mv_mmu_dev *d = c->dev;
	int rc = 0;
	pthread_rwlock_wrlock(&d->pt_lock);
	struct svm_region *r = region_find(c, va);
	if (!r || !(r->prot & PROT_READ))
		rc = -EFAULT;
	else if (write && !(r->prot & PROT_WRITE))
		rc = -EACCES;
	if (rc == 0) {
		uint64_t flags = MV_MMU_PTE_US | MV_MMU_PTE_NX |
				 ((r->prot & PROT_WRITE) ? MV_MMU_PTE_RW : 0);
		uint64_t page = va & ~(MV_MMU_4K - 1);
		for (unsigned i = 0; i < FAULT_AROUND && page < r->end; i++, page += MV_MMU_4K) {
			/* identity: the device's "physical" address is the host address */
			int mrc = mv_mmu_map(c->shared, page, page, MV_MMU_4K, MV_MMU_4K, flags, NULL);
			if (mrc == -EEXIST)
				continue;   /* another worker got there first */
			if (mrc < 0) {
				rc = i ? 0 : mrc;
				break;
			}
		}
	}
	pthread_rwlock_unlock(&d->pt_lock);
	return rc;
}

int mv_mmu_svm_register(struct mv_mmu_ctx *c, void *addr, size_t len, int prot,
			struct mv_error **err)
{
	uint64_t a = (uint64_t)(uintptr_t)addr;
	if (!shared_va_ok(c, a, len))
		return mv_err(err, -EINVAL, "shared range %p+%zu is not page aligned or too high", addr, len);
	if (prot & ~(PROT_READ | PROT_WRITE))
		return mv_err_field(err, -EINVAL, "prot", "only PROT_READ|PROT_WRITE");
	pthread_rwlock_wrlock(&c->dev->pt_lock);
	int rc = 0;
	if (region_overlaps(c, a, a + len))
		rc = mv_err(err, -EEXIST, "range %p+%zu is already shared", addr, len);
	else
		region_add(c, (struct svm_region){ .start = a, .end = a + len, .prot = prot });
	pthread_rwlock_unlock(&c->dev->pt_lock);
	return rc;
}

int mv_mmu_svm_alloc(struct mv_mmu_ctx *c, size_t size, void **out, struct mv_error **err)
{
	*out = NULL;
	if (!size || size > (1ULL << 40))
		return mv_err_field(err, -EINVAL, "size", "bad shared allocation size");
	size_t len = MV_ALIGN_UP(size, MV_MMU_4K);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return mv_err(err, -ENOMEM, "cannot map %zu shared bytes", len);
	uint64_t a = (uint64_t)(uintptr_t)p;
	if (!shared_va_ok(c, a, len)) {
		munmap(p, len);
		return mv_err(err, -ERANGE, "host address %p is outside the device's shared space", p);
	}
	pthread_rwlock_wrlock(&c->dev->pt_lock);
	region_add(c, (struct svm_region){ .start = a, .end = a + len, .prot = PROT_READ | PROT_WRITE,
					   .owned = true, .alloc_start = a, .alloc_len = len });
	pthread_rwlock_unlock(&c->dev->pt_lock);
	*out = p;
	return 0;
}

int mv_mmu_svm_notify(struct mv_mmu_ctx *c, void *addr, size_t len, int prot)
{
	uint64_t a = (uint64_t)(uintptr_t)addr & ~(MV_MMU_4K - 1);
	len = MV_ALIGN_UP(len + ((uint64_t)(uintptr_t)addr - a), MV_MMU_4K);
	if (!shared_va_ok(c, a, len))
		return -EINVAL;
	struct mv_mmu_dev *d = c->dev;
	pthread_rwlock_wrlock(&d->pt_lock);
	region_apply(c, a, a + len, prot < 0 ? -1 : prot & (PROT_READ | PROT_WRITE));
	/* drop the device's copy; allowed accesses refault with the new rights */
	int rc = mv_mmu_unmap(c->shared, a, len, NULL);
	pthread_rwlock_unlock(&d->pt_lock);
	dev_shootdown(d);
	return rc;
}

int mv_mmu_svm_free(struct mv_mmu_ctx *c, void *p)
{
	uint64_t a = (uint64_t)(uintptr_t)p;
	uint64_t start = 0, len = 0;
	pthread_rwlock_rdlock(&c->dev->pt_lock);
	struct svm_region *r = region_find(c, a);
	if (r && r->owned && r->alloc_start == a) {
		start = r->alloc_start;
		len = r->alloc_len;
	}
	pthread_rwlock_unlock(&c->dev->pt_lock);
	if (!len)
		return -ENOENT;
	int rc = mv_mmu_svm_notify(c, p, len, -1);   /* device first, then the host mapping */
	munmap((void *)(uintptr_t)start, len);
	return rc;
}

void svm_release_all(struct mv_mmu_ctx *c)
{
	/* called with launch_lock held: no worker runs */
	for (size_t i = 0; i < c->nrg; i++)
		if (c->rg[i].owned)  /* pieces left after mprotect/munmap notifications */
			munmap((void *)(uintptr_t)c->rg[i].start, c->rg[i].end - c->rg[i].start);
	free(c->rg);
	c->rg = NULL;
	c->nrg = c->cap_rg = 0;
}
