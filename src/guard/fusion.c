/* The page-fusion scanner and fused pool (see include/memvisor/fusion.h).
 * Like KSM it keeps two indexes by content hash (XXH3): "stable" for pool
 * pages (content already fused) and "unstable" for candidates seen once in
 * the current full scan, rebuilt every scan since candidates change under us.
 * A hash hit is only a hint: contents are compared byte for byte before a
 * proposal, and the VMM compares again under write protection before it
 * maps anything. Guest RAM is read with pread() on the daemon's memfds, never
 * mmap: a read fault on a shmem hole would allocate the page. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>
#include "memvisor/fusion.h"
#include "memvisor/util.h"
#include "fusion_i.h"

#define PS MV_PAGE_SIZE
#define CHUNK_PAGES 16u
#define NONE UINT32_MAX

struct pool_page {
	uint64_t hash;
	uint32_t refs;
	uint32_t head;            /* first mapping sharing it, NONE when none */
};

/* One guest page mapped (or proposed to map) to a pool page. */
struct mapping {
	uint64_t gpa;
	uint32_t vm;              /* slot in f->vms */
	uint32_t pool;
	uint32_t prev, next;      /* the pool page's sharers; next also links free entries */
	bool confirmed;
};

struct fvm {
	uint64_t key;
	struct mv_mem_layout l;   /* dup'ed fds */
	struct u64map map;        /* gpa + 1 -> mapping index */
	uint64_t nfused;
	struct u64map keep;       /* gpa + 1: never proposed (mv_fusion_vm_keep) */
};

struct cand {
	uint32_t vm;
	uint64_t key, gpa;
};

struct mv_fusion {
	pthread_mutex_t lock;
	struct mv_fusion_cfg cfg;
	int pool_fd;
	struct pool_page *pool;
	uint32_t pool_hwm, pool_cap, *pool_free;
	size_t nfree;
	struct mapping *maps;
	size_t nmaps, capmaps;
	uint32_t map_free;
	struct fvm **vms;
	size_t nvms;
	struct u64map stable;     /* hash -> pool index */
	struct u64map unstable;   /* hash -> index in cands */
	struct cand *cands;
	size_t ncands, capcands;
	uint32_t cur_vm, cur_region;
	uint64_t cur_off;
	struct mv_fusion_stats st;
	uint64_t zero_hash;       /* content_hash of a page of zeros (or of a hole) */
	uint8_t buf[CHUNK_PAGES * PS];
	uint8_t cmp[PS];
};

static uint64_t content_hash(const void *p)
{
	uint64_t h = XXH3_64bits(p, PS);
	return h ? h : 1;   /* 0 is the maps' empty key */
}

int mv_fusion_create(const struct mv_fusion_cfg *cfg, struct mv_fusion **out, struct mv_error **err)
{
	*out = NULL;
	if (cfg->pool_pages == 0 || cfg->pool_pages >= NONE || cfg->max_fused_per_vm == 0)
		return mv_err(err, -EINVAL, "fusion: pool of %llu pages, %llu per VM",
			      (unsigned long long)cfg->pool_pages,
			      (unsigned long long)cfg->max_fused_per_vm);
	int fd = memfd_create("mv-fusion-pool", MFD_CLOEXEC);
	if (fd < 0)
		return mv_err(err, -errno, "fusion pool memfd: %s", strerror(errno));
	if (ftruncate(fd, (off_t)(cfg->pool_pages * PS)) < 0) {
		int e = -errno;
		close(fd);
		return mv_err(err, e, "sizing the fusion pool: %s", strerror(-e));
	}
	struct mv_fusion *f = calloc(1, sizeof(*f));
	if (!f)
		abort();
	pthread_mutex_init(&f->lock, NULL);
	f->cfg = *cfg;
	f->pool_fd = fd;
	f->map_free = NONE;
	memset(f->cmp, 0, PS);
	f->zero_hash = content_hash(f->cmp);
	*out = f;
	return 0;
}

static void vm_free(struct fvm *v)
{
	mv_mem_layout_close(&v->l);
	u64map_free(&v->map);
	u64map_free(&v->keep);
	free(v);
}

void mv_fusion_destroy(struct mv_fusion *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->nvms; i++)
		if (f->vms[i])
			vm_free(f->vms[i]);
	free(f->vms);
	free(f->pool);
	free(f->pool_free);
	free(f->maps);
	free(f->cands);
	u64map_free(&f->stable);
	u64map_free(&f->unstable);
	close(f->pool_fd);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

int mv_fusion_pool_fd(const struct mv_fusion *f)
{
	return f->pool_fd;
}

int mv_fusion_pool_fd_ro(const struct mv_fusion *f)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", f->pool_fd);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

uint64_t mv_fusion_pool_size(const struct mv_fusion *f)
{
	return f->cfg.pool_pages * PS;
}

static int slot_of_key(struct mv_fusion *f, uint64_t key)
{
	for (size_t i = 0; i < f->nvms; i++)
		if (f->vms[i] && f->vms[i]->key == key)
			return (int)i;
	return -1;
}

int mv_fusion_vm_add(struct mv_fusion *f, uint64_t key, const struct mv_mem_layout *l,
		     struct mv_error **err)
{
	struct fvm *v = calloc(1, sizeof(*v));
	if (!v)
		abort();
	v->key = key;
	for (uint32_t i = 0; i < l->n; i++) {
		v->l.r[i] = l->r[i];
		v->l.r[i].fd = fcntl(l->r[i].fd, F_DUPFD_CLOEXEC, 3);
		if (v->l.r[i].fd < 0) {
			int e = -errno;
			vm_free(v);
			return mv_err(err, e, "fusion: dup of region %u: %s", i, strerror(-e));
		}
		v->l.n = i + 1;
	}
	pthread_mutex_lock(&f->lock);
	if (slot_of_key(f, key) >= 0) {
		pthread_mutex_unlock(&f->lock);
		vm_free(v);
		return mv_err(err, -EEXIST, "fusion: VM %llu already attached", (unsigned long long)key);
	}
	size_t s = 0;
	while (s < f->nvms && f->vms[s])
		s++;
	if (s == f->nvms) {
		f->vms = realloc(f->vms, (f->nvms + 1) * sizeof(*f->vms));
		if (!f->vms)
			abort();
		f->nvms++;
	}
	f->vms[s] = v;
	f->st.vms++;
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static void pool_put(struct mv_fusion *f, uint32_t p)
{
	struct pool_page *pp = &f->pool[p];
	if (--pp->refs)
		return;
	uint64_t cur;
	if (u64map_get(&f->stable, pp->hash, &cur) && cur == p)
		u64map_del(&f->stable, pp->hash);
	/* Give the memory back; the slot is reused for another content. */
	(void)fallocate(f->pool_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)p * PS, PS);
	f->pool_free[f->nfree++] = p;
	f->st.shared--;
}

static int pool_get_new(struct mv_fusion *f, uint64_t hash, const void *content, uint32_t *out)
{
	uint32_t p;
	if (f->nfree) {
		p = f->pool_free[--f->nfree];
	} else {
		if (f->pool_hwm >= f->cfg.pool_pages)
			return -ENOSPC;
		if (f->pool_hwm == f->pool_cap) {
			f->pool_cap = f->pool_cap ? f->pool_cap * 2 : 64;
			f->pool = realloc(f->pool, f->pool_cap * sizeof(*f->pool));
			f->pool_free = realloc(f->pool_free, f->pool_cap * sizeof(*f->pool_free));
			if (!f->pool || !f->pool_free)
				abort();
		}
		p = f->pool_hwm++;
	}
	if (pwrite(f->pool_fd, content, PS, (off_t)p * PS) != (ssize_t)PS) {
		f->pool_free[f->nfree++] = p;
		return -EIO;
	}
	f->pool[p] = (struct pool_page){.hash = hash, .refs = 0, .head = NONE};
	u64map_put(&f->stable, hash, p);
	f->st.shared++;
	*out = p;
	return 0;
}

static uint32_t map_new(struct mv_fusion *f)
{
	if (f->map_free != NONE) {
		uint32_t i = f->map_free;
		f->map_free = f->maps[i].next;
		return i;
	}
	if (f->nmaps == f->capmaps) {
		f->capmaps = f->capmaps ? f->capmaps * 2 : 256;
		f->maps = realloc(f->maps, f->capmaps * sizeof(*f->maps));
		if (!f->maps)
			abort();
	}
	return (uint32_t)f->nmaps++;
}

static void propose(struct mv_fusion *f, uint32_t slot, uint64_t gpa, uint32_t p,
		    struct mv_fusion_merge *out, size_t *n)
{
	struct fvm *v = f->vms[slot];
	uint32_t i = map_new(f);
	struct pool_page *pp = &f->pool[p];
	f->maps[i] = (struct mapping){.gpa = gpa, .vm = slot, .pool = p, .prev = NONE,
				      .next = pp->head};
	if (pp->head != NONE)
		f->maps[pp->head].prev = i;
	pp->head = i;
	pp->refs++;
	u64map_put(&v->map, gpa + 1, i);
	v->nfused++;
	out[(*n)++] = (struct mv_fusion_merge){.key = v->key, .gpa = gpa, .pool_off = (uint64_t)p * PS};
}

static void map_remove(struct mv_fusion *f, uint32_t i)
{
	struct mapping *mp = &f->maps[i];
	struct fvm *v = f->vms[mp->vm];
	struct pool_page *pp = &f->pool[mp->pool];
	if (mp->prev != NONE)
		f->maps[mp->prev].next = mp->next;
	else
		pp->head = mp->next;
	if (mp->next != NONE)
		f->maps[mp->next].prev = mp->prev;
	if (mp->confirmed)
		f->st.sharing--;
	u64map_del(&v->map, mp->gpa + 1);
	v->nfused--;
	uint32_t p = mp->pool;
	mp->next = f->map_free;
	f->map_free = i;
	pool_put(f, p);
}

/* Drops every mapping of slot s; returns how many. */
static uint64_t drop_all(struct mv_fusion *f, int s)
{
	struct fvm *v = f->vms[s];
	uint64_t n = 0;
	for (size_t i = 0; i < v->map.cap; i++) {
		while (v->map.k[i]) {   /* deletion may shift another key into slot i */
			map_remove(f, (uint32_t)v->map.v[i]);
			n++;
		}
	}
	return n;
}

void mv_fusion_vm_remove(struct mv_fusion *f, uint64_t key)
{
	pthread_mutex_lock(&f->lock);
	int s = slot_of_key(f, key);
	if (s >= 0) {
		drop_all(f, s);
		vm_free(f->vms[s]);
		f->vms[s] = NULL;
		f->st.vms--;
	}
	pthread_mutex_unlock(&f->lock);
}

bool mv_fusion_vm_attached(struct mv_fusion *f, uint64_t key)
{
	pthread_mutex_lock(&f->lock);
	bool r = slot_of_key(f, key) >= 0;
	pthread_mutex_unlock(&f->lock);
	return r;
}

uint64_t mv_fusion_vm_fused(struct mv_fusion *f, uint64_t key)
{
	pthread_mutex_lock(&f->lock);
	int s = slot_of_key(f, key);
	uint64_t n = s >= 0 ? f->vms[s]->nfused : 0;
	pthread_mutex_unlock(&f->lock);
	return n;
}

void mv_fusion_vm_unfused(struct mv_fusion *f, uint64_t key, uint64_t count)
{
	pthread_mutex_lock(&f->lock);
	int s = slot_of_key(f, key);
	if (s >= 0)
		drop_all(f, s);
	f->st.unfused += count;
	pthread_mutex_unlock(&f->lock);
}

static bool region_page(const struct fvm *v, uint64_t gpa, int *fd, uint64_t *off)
{
	for (uint32_t i = 0; i < v->l.n; i++) {
		const struct mv_mem_region_desc *r = &v->l.r[i];
		if (gpa >= r->gpa && gpa - r->gpa < r->size && !(r->flags & MV_MEM_HUGETLB)) {
			*fd = r->fd;
			*off = gpa - r->gpa;
			return true;
		}
	}
	return false;
}

/* Reads the page at gpa of slot s into f->cmp and compares it with page. */
static bool same_as(struct mv_fusion *f, uint32_t s, uint64_t gpa, const uint8_t *page)
{
	int fd;
	uint64_t off;
	if (!region_page(f->vms[s], gpa, &fd, &off))
		return false;
	return pread(fd, f->cmp, PS, (off_t)off) == (ssize_t)PS && memcmp(f->cmp, page, PS) == 0;
}

/* The guard's skip hook: pages it moved to fresh frames stay out of fusion. */
static bool kept(const struct fvm *v, uint64_t gpa)
{
	return v->keep.n && u64map_get(&v->keep, gpa + 1, NULL);
}

int mv_fusion_vm_keep(struct mv_fusion *f, uint64_t key, uint64_t gpa, uint64_t len)
{
	pthread_mutex_lock(&f->lock);
	int s = slot_of_key(f, key);
	for (uint64_t o = 0; s >= 0 && o < len; o += PS)
		u64map_put(&f->vms[s]->keep, gpa + o + 1, 1);
	pthread_mutex_unlock(&f->lock);
	return s < 0 ? -ENOENT : 0;
}

static void scan_page(struct mv_fusion *f, uint32_t s, uint64_t gpa, const uint8_t *page,
		      uint64_t h, struct mv_fusion_merge *out, size_t *n)
{
	struct fvm *v = f->vms[s];
	if (u64map_get(&v->map, gpa + 1, NULL) || v->nfused >= f->cfg.max_fused_per_vm ||
	    kept(v, gpa))
		return;
	uint64_t x;
	if (u64map_get(&f->stable, h, &x)) {
		uint32_t p = (uint32_t)x;
		if (pread(f->pool_fd, f->cmp, PS, (off_t)p * PS) == (ssize_t)PS &&
		    memcmp(f->cmp, page, PS) == 0) {
			propose(f, s, gpa, p, out, n);
			return;
		}
	}
	if (u64map_get(&f->unstable, h, &x)) {
		struct cand c = f->cands[x];
		bool live = c.vm < f->nvms && f->vms[c.vm] && f->vms[c.vm]->key == c.key &&
			    !(c.vm == s && c.gpa == gpa) &&
			    !u64map_get(&f->vms[c.vm]->map, c.gpa + 1, NULL) && !kept(f->vms[c.vm], c.gpa) &&
			    f->vms[c.vm]->nfused < f->cfg.max_fused_per_vm;
		uint32_t p;
		if (live && same_as(f, c.vm, c.gpa, page) && pool_get_new(f, h, page, &p) == 0) {
			u64map_del(&f->unstable, h);
			propose(f, c.vm, c.gpa, p, out, n);
			propose(f, s, gpa, p, out, n);
			return;
		}
		f->cands[x] = (struct cand){.vm = s, .key = v->key, .gpa = gpa};
		return;
	}
	f->cands = mv_grow(f->cands, f->ncands, &f->capcands, sizeof(*f->cands), 1024);
	f->cands[f->ncands] = (struct cand){.vm = s, .key = v->key, .gpa = gpa};
	u64map_put(&f->unstable, h, f->ncands++);
}

/* Moves the cursor to the next scannable region; false when none exists. */
static bool next_region(struct mv_fusion *f)
{
	for (size_t tries = 0; tries <= f->nvms * MV_MEM_MAX_REGIONS + 1; tries++) {
		f->cur_off = 0;
		f->cur_region++;
		if (f->cur_vm >= f->nvms || !f->vms[f->cur_vm] ||
		    f->cur_region >= f->vms[f->cur_vm]->l.n) {
			f->cur_region = 0;
			if (++f->cur_vm >= f->nvms) {
				/* A full scan ends: what is still a lone candidate was unique. */
				f->cur_vm = 0;
				f->st.full_scans++;
				f->st.unshared = f->unstable.n;
				u64map_clear(&f->unstable);
				f->ncands = 0;
			}
		}
		struct fvm *v = f->cur_vm < f->nvms ? f->vms[f->cur_vm] : NULL;
		if (v && f->cur_region < v->l.n && !(v->l.r[f->cur_region].flags & MV_MEM_HUGETLB))
			return true;
	}
	return false;
}

int mv_fusion_scan(struct mv_fusion *f, uint64_t budget, struct mv_fusion_merge *out, size_t cap,
		   size_t *n)
{
	*n = 0;
	pthread_mutex_lock(&f->lock);
	uint64_t scanned = 0;
	/* Start at the cursor; re-validate it since VMs come and go. */
	struct fvm *v = f->cur_vm < f->nvms ? f->vms[f->cur_vm] : NULL;
	bool ok = v && f->cur_region < v->l.n && !(v->l.r[f->cur_region].flags & MV_MEM_HUGETLB);
	if (!ok)
		ok = next_region(f);
	/* At most two passes over every region per call: when all attached RAM
	 * is holes (every page fused), nothing is scanned and the budget alone
	 * would never end the loop. */
	size_t hops = 0, max_hops = 2 * (f->nvms + 1) * MV_MEM_MAX_REGIONS;
	while (ok && scanned < budget && *n + 2 <= cap) {
		v = f->vms[f->cur_vm];
		const struct mv_mem_region_desc *r = &v->l.r[f->cur_region];
		if (f->cur_off >= r->size) {
			ok = ++hops <= max_hops && next_region(f);
			continue;
		}
		off_t d = lseek(r->fd, (off_t)f->cur_off, SEEK_DATA);
		if (d < 0) {   /* ENXIO: only holes up to the end */
			f->cur_off = r->size;
			continue;
		}
		/* No SEEK_HOLE: on shmem it walks every page of the populated
		 * extent (milliseconds per call on a large, full region). Holes
		 * inside the chunk read as zeros and are told apart below. */
		uint64_t start = (uint64_t)d & ~(uint64_t)(PS - 1);
		uint64_t want = CHUNK_PAGES;
		if ((budget - scanned) < want)
			want = budget - scanned;
		uint64_t len = r->size - start < want * PS ? r->size - start : want * PS;
		if ((cap - *n) / 2 < len / PS)
			len = (cap - *n) / 2 * PS;
		len &= ~(uint64_t)(PS - 1);
		if (len == 0) {
			f->cur_off = start + PS;
			continue;
		}
		ssize_t got = pread(r->fd, f->buf, len, (off_t)start);
		if (got < (ssize_t)PS) {
			f->cur_off = start + PS;
			continue;
		}
		uint64_t pages = (uint64_t)got / PS, data = 0;
		for (uint64_t i = 0; i < pages; i++) {
			const uint8_t *pg = f->buf + i * PS;
			uint64_t h = content_hash(pg);
			/* Only a zero page can be a hole: SEEK_DATA answers at once
			 * when the page is there. */
			off_t at = (off_t)(start + i * PS);
			if (i && h == f->zero_hash && lseek(r->fd, at, SEEK_DATA) != at)
				continue;
			scan_page(f, f->cur_vm, r->gpa + start + i * PS, pg, h, out, n);
			data++;
		}
		scanned += data;
		f->st.pages_scanned += data;
		f->cur_off = start + pages * PS;
	}
	pthread_mutex_unlock(&f->lock);
	return 0;
}

static int find_map(struct mv_fusion *f, uint64_t key, uint64_t gpa, uint32_t *idx)
{
	int s = slot_of_key(f, key);
	uint64_t x;
	if (s < 0 || !u64map_get(&f->vms[s]->map, gpa + 1, &x))
		return -ENOENT;
	*idx = (uint32_t)x;
	return 0;
}

void mv_fusion_commit(struct mv_fusion *f, const struct mv_fusion_merge *m, bool fused)
{
	pthread_mutex_lock(&f->lock);
	uint32_t i;
	if (find_map(f, m->key, m->gpa, &i) == 0 && !f->maps[i].confirmed) {
		if (fused) {
			f->maps[i].confirmed = true;
			f->st.sharing++;
			f->st.merges++;
		} else {
			map_remove(f, i);
			f->st.misses++;
		}
	}
	pthread_mutex_unlock(&f->lock);
}

size_t mv_fusion_broken(struct mv_fusion *f, uint64_t key, uint64_t gpa, uint64_t *other)
{
	size_t n = 0;
	pthread_mutex_lock(&f->lock);
	uint32_t i;
	if (find_map(f, key, gpa, &i) == 0) {
		for (uint32_t j = f->pool[f->maps[i].pool].head; j != NONE; j = f->maps[j].next) {
			uint64_t k = f->vms[f->maps[j].vm]->key;
			if (k != key && f->maps[j].confirmed) {
				if (other && n == 0)
					*other = k;
				n++;
			}
		}
		map_remove(f, i);
		f->st.cow_breaks++;
	}
	pthread_mutex_unlock(&f->lock);
	return n;
}

void mv_fusion_get_stats(struct mv_fusion *f, struct mv_fusion_stats *out)
{
	pthread_mutex_lock(&f->lock);
	*out = f->st;
	pthread_mutex_unlock(&f->lock);
}

int mv_fusion_lookup(struct mv_fusion *f, uint64_t key, uint64_t gpa, uint64_t *pool_off)
{
	pthread_mutex_lock(&f->lock);
	uint32_t i;
	int r = find_map(f, key, gpa, &i);
	if (r == 0)
		*pool_off = (uint64_t)f->maps[i].pool * PS;
	pthread_mutex_unlock(&f->lock);
	return r;
}

int mv_fusion_find_hash(struct mv_fusion *f, uint64_t xxh3, uint64_t *pool_off)
{
	pthread_mutex_lock(&f->lock);
	uint64_t x;
	int r = u64map_get(&f->stable, xxh3, &x) ? 0 : -ENOENT;
	if (r == 0)
		*pool_off = x * PS;
	pthread_mutex_unlock(&f->lock);
	return r;
}

size_t mv_fusion_sharers(struct mv_fusion *f, uint64_t pool_off,
			 void (*fn)(uint64_t key, uint64_t gpa, void *arg), void *arg)
{
	size_t n = 0;
	pthread_mutex_lock(&f->lock);
	uint64_t p = pool_off / PS;
	if (pool_off % PS == 0 && p < f->pool_hwm) {
		for (uint32_t i = f->pool[p].head; i != NONE; i = f->maps[i].next, n++)
			if (fn)
				fn(f->vms[f->maps[i].vm]->key, f->maps[i].gpa, arg);
	}
	pthread_mutex_unlock(&f->lock);
	return n;
}
