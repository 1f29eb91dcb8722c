/* The side-channel guard's co-residency check (include/memvisor/guard.h): for
 * each protected range, which other VMs' pages sit on its frames, its cache
 * colours or its DRAM-row neighbourhoods, and which of its pages are fused
 * with another VM's. Per range it sorts the protected frames and rows once
 * and keeps a colour table, then looks every other page up: O((R + P) log R)
 * per range for R protected and P other pages. Called by memvisord's guard. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/guard.h"
#include "memvisor/util.h"

#define NO_EXAMPLE UINT64_MAX

const char *mv_guard_kind_name(enum mv_guard_kind k)
{
	static const char *const names[] = {"fused", "frame", "colour", "row"};
	return (unsigned)k < MV_GUARD__KINDS ? names[k] : "unknown";
}

int mv_guard_cfg_check(const struct mv_guard_cfg *cfg, struct mv_error **err)
{
	if (cfg->colours > MV_GUARD_MAX_COLOURS || (cfg->colours & (cfg->colours - 1)))
		return mv_err_field(err, -EINVAL, "colours",
				    "colours must be 0 or a power of two up to %u", MV_GUARD_MAX_COLOURS);
	if (cfg->row_shift > MV_GUARD_MAX_ROW_SHIFT)
		return mv_err_field(err, -EINVAL, "row_shift", "row_shift must be 0..%u",
				    MV_GUARD_MAX_ROW_SHIFT);
	return 0;
}

static uint64_t read_sys(const char *path)
{
	char buf[64];
	FILE *f = fopen(path, "re");
	if (!f)
		return 0;
	uint64_t v = 0;
	if (fgets(buf, sizeof(buf), f)) {
		char *end;
		v = strtoull(buf, &end, 10);
		if (*end == 'K')
			v <<= 10;
		else if (*end == 'M')
			v <<= 20;
	}
	fclose(f);
	return v;
}

uint32_t mv_guard_llc_colours(void)
{
	uint64_t size = 0, ways = 0;
	for (int i = 0; i < 8; i++) {
		char p[96];
		snprintf(p, sizeof(p), "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
		uint64_t s = read_sys(p);
		if (!s)
			continue;
		snprintf(p, sizeof(p), "/sys/devices/system/cpu/cpu0/cache/index%d/ways_of_associativity", i);
		uint64_t w = read_sys(p);
		if (s > size && w) {
			size = s;
			ways = w;
		}
	}
	if (!size || !ways)
		return 0;
	uint64_t c = size / ways / MV_PAGE_SIZE;
	uint32_t pow = 1;   /* round down to a power of two: colours are PFN bits */
	while ((uint64_t)pow * 2 <= c && pow < MV_GUARD_MAX_COLOURS)
		pow *= 2;
	return c ? pow : 0;
}

uint64_t mv_guard_colour(const struct mv_guard_cfg *cfg, uint64_t pfn)
{
	return cfg->colours ? pfn & (cfg->colours - 1) : 0;
}

uint64_t mv_guard_row(const struct mv_guard_cfg *cfg, uint64_t pfn)
{
	return cfg->row_shift ? pfn >> cfg->row_shift : 0;
}

/* A protected page by a sort key (its frame or its row). */
struct keyed {
	uint64_t k;
	uint64_t gpa;
	uint64_t pfn;
};

static int keyed_cmp(const void *a, const void *b)
{
	const struct keyed *x = a, *y = b;
	return x->k < y->k ? -1 : x->k > y->k;
}

static const struct keyed *keyed_find(const struct keyed *v, size_t n, uint64_t k)
{
	if (n == 0)
		return NULL;
	struct keyed probe = {.k = k};
	return bsearch(&probe, v, n, sizeof(*v), keyed_cmp);
}

struct findings {
	struct mv_guard_finding *v;
	size_t n, cap;
};

static void note(struct findings *fs, const struct mv_guard_range *r, uint64_t other,
		 enum mv_guard_kind kind, uint64_t gpa, uint64_t pfn, uint64_t ogpa, uint64_t opfn)
{
	for (size_t i = fs->n; i-- > 0;) {
		struct mv_guard_finding *x = &fs->v[i];
		if (x->range_id != r->id)
			break;   /* this range's findings are the tail */
		if (x->other == other && x->kind == kind) {
			x->pages++;
			return;
		}
	}
	fs->v = mv_grow(fs->v, fs->n, &fs->cap, sizeof(*fs->v), 16);
	fs->v[fs->n++] = (struct mv_guard_finding){
		.range_id = r->id, .owner = r->key, .other = other, .kind = kind, .pages = 1,
		.gpa = gpa, .pfn = pfn, .other_gpa = ogpa, .other_pfn = opfn};
}

struct fused_arg {
	struct findings *fs;
	const struct mv_guard_range *r;
	const struct mv_guard_page *p;
};

static void fused_sharer(uint64_t key, uint64_t gpa, void *arg)
{
	struct fused_arg *a = arg;
	/* A fused page is one frame mapped by both: the same-frame kind too,
	 * which the caller's frame list misses (fused pages are memfd holes). */
	if (key != a->r->key) {
		note(a->fs, a->r, key, MV_GUARD_FUSED, a->p->gpa, a->p->pfn, gpa, a->p->pfn);
		note(a->fs, a->r, key, MV_GUARD_FRAME, a->p->gpa, a->p->pfn, gpa, a->p->pfn);
	}
}

static int finding_cmp(const void *a, const void *b)
{
	const struct mv_guard_finding *x = a, *y = b;
	if (x->range_id != y->range_id)
		return x->range_id < y->range_id ? -1 : 1;
	if (x->other != y->other)
		return x->other < y->other ? -1 : 1;
	return (int)x->kind - (int)y->kind;
}

static void check_range(const struct mv_guard_cfg *cfg, const struct mv_guard_range *r,
			const struct mv_guard_page *pages, size_t npages, struct mv_fusion *f,
			struct keyed *frames, struct keyed *rows, uint64_t *colour_gpa,
			struct findings *fs)
{
	size_t nf = 0;
	for (size_t i = 0; i < r->n; i++) {
		const struct mv_guard_page *p = &r->pages[i];
		if (f) {
			uint64_t off;
			struct fused_arg a = {fs, r, p};
			if (mv_fusion_lookup(f, r->key, p->gpa, &off) == 0)
				(void)mv_fusion_sharers(f, off, fused_sharer, &a);
		}
		if (!p->pfn)
			continue;
		frames[nf] = (struct keyed){.k = p->pfn, .gpa = p->gpa, .pfn = p->pfn};
		rows[nf] = (struct keyed){.k = mv_guard_row(cfg, p->pfn), .gpa = p->gpa, .pfn = p->pfn};
		nf++;
		if (cfg->colours) {
			uint64_t c = mv_guard_colour(cfg, p->pfn);
			if (colour_gpa[2 * c] == NO_EXAMPLE) {
				colour_gpa[2 * c] = p->gpa;
				colour_gpa[2 * c + 1] = p->pfn;
			}
		}
	}
	if (nf == 0)
		return;
	qsort(frames, nf, sizeof(*frames), keyed_cmp);
	if (cfg->row_shift)
		qsort(rows, nf, sizeof(*rows), keyed_cmp);
	for (size_t i = 0; i < npages; i++) {
		const struct mv_guard_page *o = &pages[i];
		if (o->key == r->key || !o->pfn)
			continue;
		const struct keyed *k = keyed_find(frames, nf, o->pfn);
		if (k)
			note(fs, r, o->key, MV_GUARD_FRAME, k->gpa, k->pfn, o->gpa, o->pfn);
		if (cfg->row_shift && (k = keyed_find(rows, nf, mv_guard_row(cfg, o->pfn))))
			note(fs, r, o->key, MV_GUARD_ROW, k->gpa, k->pfn, o->gpa, o->pfn);
		if (cfg->colours) {
			uint64_t c = mv_guard_colour(cfg, o->pfn);
			if (colour_gpa[2 * c] != NO_EXAMPLE)
				note(fs, r, o->key, MV_GUARD_COLOUR, colour_gpa[2 * c],
				     colour_gpa[2 * c + 1], o->gpa, o->pfn);
		}
	}
}

int mv_guard_check(const struct mv_guard_cfg *cfg, const struct mv_guard_range *ranges,
		   size_t nranges, const struct mv_guard_page *pages, size_t npages,
		   struct mv_fusion *f, struct mv_guard_finding **out, size_t *n,
		   struct mv_error **err)
{
	*out = NULL;
	*n = 0;
	int r = mv_guard_cfg_check(cfg, err);
	if (r < 0)
		return r;
	size_t most = 0;
	for (size_t i = 0; i < nranges; i++)
		most = ranges[i].n > most ? ranges[i].n : most;
	struct findings fs = {0};
	struct keyed *frames = calloc(most + 1, sizeof(*frames));
	struct keyed *rows = calloc(most + 1, sizeof(*rows));
	uint64_t *colour_gpa = calloc(2 * (size_t)(cfg->colours ? cfg->colours : 1), sizeof(uint64_t));
	if (!frames || !rows || !colour_gpa)
		abort();
	for (size_t i = 0; i < nranges; i++) {
		for (size_t c = 0; cfg->colours && c < 2 * (size_t)cfg->colours; c++)
			colour_gpa[c] = NO_EXAMPLE;
		check_range(cfg, &ranges[i], pages, npages, f, frames, rows, colour_gpa, &fs);
	}
	free(frames);
	free(rows);
	free(colour_gpa);
	if (fs.n)
		qsort(fs.v, fs.n, sizeof(*fs.v), finding_cmp);
	*out = fs.v;
	*n = fs.n;
	return 0;
}
