/* Where a guest RAM region may hold data, found without touching its holes:
 * reading a hole through the mapping allocates it (and on hugetlbfs zeroes
 * a whole 2 MiB page). shmem answers SEEK_DATA/SEEK_HOLE. hugetlbfs does not
 * (everything is "data") and has no cachestat, so mincore tells which 2 MiB
 * pages this process has mapped; if the file holds more pages than that
 * (st_blocks; e.g. right after a hand-over to a new VMM), an unmapped page is
 * read with pread, which gives zeros for a hole without allocating it. */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "migrate_i.h"

#define HUGE (2ULL << 20)
#define HUGE_RUN (256ULL << 20)   /* longest extent reported at once */

static bool mapped(const struct mv_mem_region *g, uint64_t off)
{
	unsigned char v[HUGE / 4096];
	return mincore(g->hva + off, HUGE, v) == 0 && (v[0] & 1);
}

void mig_extents_init(struct mig_extents *x, const struct mv_mem_region *g)
{
	*x = (struct mig_extents){.g = g};
	if (g->pages != MV_MEM_PAGES_HUGETLB)
		return;
	struct stat st;
	uint64_t n = 0;
	for (uint64_t off = 0; off < g->size; off += HUGE)
		n += mapped(g, off);
	x->probe = fstat(g->fd, &st) < 0 || (uint64_t)st.st_blocks * 512 > n * HUGE;
}

/* A 2 MiB page nobody here has mapped: data unless pread says all zeros. */
static bool unmapped_has_data(struct mig_extents *x, uint64_t off)
{
	if (!x->bounce && !(x->bounce = malloc(HUGE)))
		return true;   /* cannot tell: treat as data */
	ssize_t n = pread(x->g->fd, x->bounce, HUGE, (off_t)off);
	if (n != (ssize_t)HUGE)
		return true;
	for (uint64_t p = 0; p < HUGE; p += MV_MIGRATE_PAGE_SIZE)
		if (!mig_page_is_zero(x->bounce + p))
			return true;
	return false;
}

static bool next_huge(struct mig_extents *x, uint64_t *d, uint64_t *h)
{
	const struct mv_mem_region *g = x->g;
	for (uint64_t off = x->off & ~(HUGE - 1); off < g->size; off += HUGE) {
		if (mapped(g, off)) {
			uint64_t end = off + HUGE;
			while (end < g->size && end - off < HUGE_RUN && mapped(g, end))
				end += HUGE;
			*d = off;
			*h = end < g->size ? end : g->size;
			x->off = *h;
			return true;
		}
		if (x->probe && unmapped_has_data(x, off)) {
			*d = off;
			*h = off + HUGE < g->size ? off + HUGE : g->size;
			x->off = *h;
			return true;
		}
	}
	x->off = g->size;
	return false;
}

bool mig_extents_next(struct mig_extents *x, uint64_t *d, uint64_t *h)
{
	const struct mv_mem_region *g = x->g;
	if (x->off >= g->size)
		return false;
	if (g->pages == MV_MEM_PAGES_HUGETLB)
		return next_huge(x, d, h);
	off_t dd = lseek(g->fd, (off_t)x->off, SEEK_DATA);
	off_t hh = dd >= 0 ? lseek(g->fd, dd, SEEK_HOLE) : -1;
	if (dd < 0 && errno == ENXIO) {
		x->off = g->size;
		return false;
	}
	if (dd < 0 || hh < 0) {   /* no SEEK_DATA here: everything is data */
		dd = (off_t)x->off;
		hh = (off_t)g->size;
	}
	*d = (uint64_t)dd & ~(MV_MIGRATE_PAGE_SIZE - 1ULL);
	*h = (uint64_t)hh < g->size ? (uint64_t)hh : g->size;
	x->off = MV_ALIGN_UP(*h, MV_MIGRATE_PAGE_SIZE);
	return true;
}

void mig_extents_fini(struct mig_extents *x)
{
	free(x->bounce);
	x->bounce = NULL;
}
