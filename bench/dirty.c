/* bench-dirty: cost of dirty-page tracking on a fully populated guest.
 * For 0.1 %, 1 % and 10 % of pages dirtied at random between syncs, the
 * median time of one collect+re-arm per backend (uffd-wp PAGEMAP_SCAN,
 * soft-dirty where the kernel has it, xxh3 hashing), and the cost of the
 * first write to a page after re-arming, against a write to an unprotected
 * page measured in the same run. Prints one JSON object on stdout.
 * Usage: bench-dirty [--size 4G] [--quick] [--reps N] */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include "memvisor/mem.h"
#include "memvisor/util.h"

#define NFRAC 3
#define WRITE_SAMPLE 16384u  /* pages per first-write measurement */

static const double fracs[NFRAC] = { 0.001, 0.01, 0.10 };
static const char *const frac_names[NFRAC] = { "0.1%", "1%", "10%" };

struct ctx {
	struct mv_guest_mem *m;
	uint64_t npages;
	uint8_t **page;      /* hva of every page, in gpa order */
	uint32_t *perm;      /* scratch permutation for random picks */
	uint64_t rng;
	unsigned reps;
	uint64_t stamp;
};

struct result {
	bool available;
	double arm_ms, idle_ms, sync_ms[NFRAC], first_write_ns;
	bool counts_ok;
};

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* Moves k fresh random pages to perm[0..k) (partial Fisher-Yates). */
static void pick(struct ctx *c, uint64_t k)
{
	for (uint64_t i = 0; i < k; i++) {
		uint64_t j = i + xorshift(&c->rng) % (c->npages - i);
		uint32_t t = c->perm[i];
		c->perm[i] = c->perm[j];
		c->perm[j] = t;
	}
}

static void dirty_k(struct ctx *c, uint64_t k)
{
	pick(c, k);
	for (uint64_t i = 0; i < k; i++)
		*(volatile uint64_t *)c->page[c->perm[i]] = ++c->stamp;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ns per page for one write to each of WRITE_SAMPLE random pages. */
static double time_writes(struct ctx *c)
{
	uint64_t k = c->npages < WRITE_SAMPLE ? c->npages : WRITE_SAMPLE;
	pick(c, k);
	uint64_t t0 = mv_now_ns();
	for (uint64_t i = 0; i < k; i++)
		*(volatile uint64_t *)c->page[c->perm[i]] = ++c->stamp;
	return (double)(mv_now_ns() - t0) / (double)k;
}

static int sync_ms(struct mv_dirty_log *log, double *ms, uint64_t *n)
{
	struct mv_error *err = NULL;
	uint64_t t0 = mv_now_ns();
	int ret = mv_dirty_sync(log, n, &err);
	*ms = (double)(mv_now_ns() - t0) / 1e6;
	if (ret < 0) {
		fprintf(stderr, "bench-dirty: sync: %s\n", mv_error_msg(err, ret));
		mv_error_free(err);
	}
	return ret;
}

/* One write per page: populates, and undoes any protection a previous
 * backend left behind (PTEs stay read-only after a uffd is closed). */
static void touch_all(struct ctx *c)
{
	for (uint64_t i = 0; i < c->npages; i++)
		*(volatile uint64_t *)c->page[i] = ++c->stamp;
}

static int run_backend(struct ctx *c, enum mv_dirty_backend b, struct result *r)
{
	struct mv_dirty_log *log = NULL;
	struct mv_error *err = NULL;
	double v[64], ms;
	uint64_t n;
	memset(r, 0, sizeof(*r));
	r->available = mv_dirty_backend_available(b);
	if (!r->available)
		return 0;
	r->counts_ok = true;
	touch_all(c);
	uint64_t t0 = mv_now_ns();
	int ret = mv_dirty_start(c->m, b, &log, &err);
	if (ret < 0) {
		fprintf(stderr, "bench-dirty: start %s: %s\n", mv_dirty_backend_name(b), mv_error_msg(err, ret));
		mv_error_free(err);
		return ret;
	}
	r->arm_ms = (double)(mv_now_ns() - t0) / 1e6;
	for (unsigned rep = 0; rep < c->reps; rep++) {
		if ((ret = sync_ms(log, &ms, &n)) < 0)
			goto out;
		v[rep] = ms;
	}
	r->idle_ms = median(v, c->reps);
	for (unsigned f = 0; f < NFRAC; f++) {
		uint64_t k = (uint64_t)((double)c->npages * fracs[f]);
		k = k ? k : 1;
		for (unsigned rep = 0; rep < c->reps; rep++) {
			dirty_k(c, k);
			if ((ret = sync_ms(log, &ms, &n)) < 0)
				goto out;
			r->counts_ok &= n == k;
			v[rep] = ms;
		}
		r->sync_ms[f] = median(v, c->reps);
	}
	for (unsigned rep = 0; rep < c->reps; rep++) {
		if ((ret = sync_ms(log, &ms, &n)) < 0)  /* everything re-armed */
			goto out;
		v[rep] = time_writes(c);
	}
	r->first_write_ns = median(v, c->reps);
out:
	mv_dirty_stop(log);
	return ret;
}

static void print_backend(const char *name, const struct result *r, bool last)
{
	printf("    \"%s\": {\"available\": %s", name, r->available ? "true" : "false");
	if (r->available) {
		printf(", \"arm_ms\": %.3f, \"idle_sync_ms\": %.3f, \"sync_ms\": {", r->arm_ms, r->idle_ms);
		for (unsigned f = 0; f < NFRAC; f++)
			printf("\"%s\": %.3f%s", frac_names[f], r->sync_ms[f], f + 1 < NFRAC ? ", " : "");
		printf("}, \"first_write_ns_per_page\": %.1f, \"dirty_counts_exact\": %s",
		       r->first_write_ns, r->counts_ok ? "true" : "false");
	}
	printf("}%s\n", last ? "" : ",");
}

static void print_ratio(const char *name, const struct result *num, const struct result *den)
{
	printf("    \"%s\": {", name);
	for (unsigned f = 0; f < NFRAC; f++)
		printf("\"%s\": %.2f%s", frac_names[f], num->sync_ms[f] / den->sync_ms[f],
		       f + 1 < NFRAC ? ", " : "");
	printf("},\n");
}

int main(int argc, char **argv)
{
	uint64_t size = 4ULL << 30;
	unsigned reps = 5;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--quick")) {
			size = 256ULL << 20;
		} else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
			if (mv_parse_size(argv[++i], &size) < 0) {
				fprintf(stderr, "bench-dirty: bad --size %s\n", argv[i]);
				return 2;
			}
		} else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
			reps = (unsigned)atoi(argv[++i]);
		} else {
			fprintf(stderr, "usage: bench-dirty [--size 4G] [--quick] [--reps N]\n");
			return 2;
		}
	}
	if (reps < 5 || reps > 64)
		reps = reps < 5 ? 5 : 64;

	struct mv_mem_layout l;
	struct mv_error *err = NULL;
	struct ctx c = { .reps = reps, .rng = 0x9e3779b97f4a7c15ULL };
	/* 4 KiB pages: the common case, and hugetlb would report 2 MiB at a time. */
	int ret = mv_mem_layout_create(size, "bench-dirty", MV_MEM_BACKING_4K, &l, &err);
	if (ret == 0)
		ret = mv_guest_mem_map(&l, &c.m, &err);
	if (ret < 0) {
		fprintf(stderr, "bench-dirty: %s\n", mv_error_msg(err, ret));
		return 1;
	}
	c.npages = size / MV_PAGE_SIZE;
	c.page = malloc(c.npages * sizeof(*c.page));
	c.perm = malloc(c.npages * sizeof(*c.perm));
	if (!c.page || !c.perm)
		return 1;
	uint64_t p = 0;
	for (unsigned i = 0; i < mv_guest_mem_nregions(c.m); i++) {
		const struct mv_mem_region *r = mv_guest_mem_region(c.m, i);
		for (uint64_t off = 0; off < r->size; off += MV_PAGE_SIZE)
			c.page[p++] = r->hva + off;
	}
	for (uint64_t i = 0; i < c.npages; i++) {
		c.perm[i] = (uint32_t)i;
		memset(c.page[i], (int)(i & 0xff) | 1, MV_PAGE_SIZE);  /* populate, non-zero */
	}

	/* Anchor: the same random writes with no tracking armed. */
	double v[64];
	for (unsigned rep = 0; rep < reps; rep++)
		v[rep] = time_writes(&c);
	double anchor_ns = median(v, reps);

	struct result uffd, sd, hash;
	if (run_backend(&c, MV_DIRTY_UFFD_WP, &uffd) < 0 ||
	    run_backend(&c, MV_DIRTY_SOFT_DIRTY, &sd) < 0 ||
	    run_backend(&c, MV_DIRTY_HASH, &hash) < 0)
		return 1;

	struct utsname u;
	uname(&u);
	printf("{\n  \"bench\": \"dirty\",\n  \"kernel\": \"%s\",\n  \"guest_bytes\": %llu,\n"
	       "  \"pages\": %llu,\n  \"reps\": %u,\n  \"statistic\": \"median\",\n",
	       u.release, (unsigned long long)size, (unsigned long long)c.npages, reps);
	printf("  \"anchor\": {\"unprotected_write_ns_per_page\": %.1f},\n", anchor_ns);
	printf("  \"backends\": {\n");
	print_backend("uffd-wp", &uffd, false);
	print_backend("soft-dirty", &sd, false);
	print_backend("hash", &hash, true);
	printf("  },\n  \"ratios\": {\n");
	if (uffd.available && hash.available)
		print_ratio("hash_ms_over_uffd_ms", &hash, &uffd);
	if (uffd.available && sd.available)
		print_ratio("soft_dirty_ms_over_uffd_ms", &sd, &uffd);
	printf("    \"first_write_over_anchor\": {");
	const char *sep = "";
	const struct { const char *n; const struct result *r; } all[] = {
		{ "uffd-wp", &uffd }, { "soft-dirty", &sd }, { "hash", &hash } };
	for (unsigned i = 0; i < 3; i++) {
		if (!all[i].r->available)
			continue;
		printf("%s\"%s\": %.2f", sep, all[i].n, all[i].r->first_write_ns / anchor_ns);
		sep = ", ";
	}
	printf("}\n  }\n}\n");

	free(c.page);
	free(c.perm);
	mv_guest_mem_unmap(c.m);
	mv_mem_layout_close(&l);
	return 0;
}
