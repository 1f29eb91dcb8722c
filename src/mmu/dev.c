/* The software compute device: contexts (PASID + private and shared address
 * spaces), device-private memory, worker threads running kernel lanes, and
 * the lane load/store path through TLB -> walker -> replayable fault. TLB
 * shootdown uses an epoch every active worker acknowledges. Used by
 * accelerator emulation and tests/unit/mmu/test_mmu_dev.c. SVM: svm.c. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "dev_i.h"

#define ACC_DEV (MV_MMU_ACC_USER | MV_MMU_CTL_DEFAULT)
#define MAX_REPLAYS 1000

int mv_mmu_dev_create(const struct mv_mmu_dev_config *cfg_in, struct mv_mmu_dev **out,
		      struct mv_error **err)
{
	*out = NULL;
	struct mv_mmu_dev_config cfg = cfg_in ? *cfg_in : (struct mv_mmu_dev_config){ 0 };
	if (!cfg.workers) cfg.workers = 2;
	if (!cfg.vram_bytes) cfg.vram_bytes = 64ULL << 20;
	if (!cfg.private_levels) cfg.private_levels = 4;
	if (!cfg.shared_levels) cfg.shared_levels = 5;
	if (!cfg.tlb_sets) cfg.tlb_sets = 64;
	if (!cfg.tlb_ways) cfg.tlb_ways = 4;
	if (!cfg.table_pages) cfg.table_pages = 4096;
	if (cfg.workers > 256)
		return mv_err_field(err, -EINVAL, "workers", "at most 256 workers");
	if ((cfg.private_levels != 4 && cfg.private_levels != 5) ||
	    (cfg.shared_levels != 4 && cfg.shared_levels != 5))
		return mv_err_field(err, -EINVAL, "levels", "address spaces need 4 or 5 levels");
	if (cfg.vram_bytes > (1ULL << 36) || !MV_IS_ALIGNED(cfg.vram_bytes, MV_MMU_4K))
		return mv_err_field(err, -EINVAL, "vram_bytes", "vram must be 4K-aligned and <= 64 GiB");
	struct mv_mmu_dev *d = calloc(1, sizeof(*d));
	if (!d)
		abort();
	d->cfg = cfg;
	d->next_pasid = 1;
	pthread_rwlock_init(&d->pt_lock, NULL);
	pthread_mutex_init(&d->launch_lock, NULL);
	struct mv_mmu_pool_config pc = { .pages_per_node = cfg.table_pages, .nodes = 1 };
	int rc = mv_mmu_pool_create(&pc, &d->pool, err);
	if (rc < 0)
		goto fail;
	d->vram_pages = cfg.vram_bytes / MV_MMU_4K;
	d->vram = mmap(NULL, cfg.vram_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS |
		       MAP_NORESERVE, -1, 0);
	d->vram_used = calloc(d->vram_pages, 1);
	d->w = calloc(cfg.workers, sizeof(*d->w));
	if (d->vram == MAP_FAILED || !d->vram_used || !d->w) {
		if (d->vram == MAP_FAILED)
			d->vram = NULL;
		rc = mv_err(err, -ENOMEM, "cannot allocate device memory");
		goto fail;
	}
	struct mv_mmu_tlb_config tc = { .sets = cfg.tlb_sets, .ways = cfg.tlb_ways };
	for (unsigned i = 0; i < cfg.workers; i++) {
		rc = mv_mmu_tlb_create(&tc, &d->w[i].tlb, err);
		if (rc < 0)
			goto fail;
	}
	*out = d;
	return 0;
fail:
	mv_mmu_dev_destroy(d);
	return rc;
}

void mv_mmu_dev_destroy(struct mv_mmu_dev *d)
{
	if (!d)
		return;
	while (d->ctxs)
		mv_mmu_ctx_destroy(d->ctxs);
	for (unsigned i = 0; d->w && i < d->cfg.workers; i++)
		mv_mmu_tlb_destroy(d->w[i].tlb);
	free(d->w);
	free(d->vram_used);
	if (d->vram)
		munmap(d->vram, d->cfg.vram_bytes);
	mv_mmu_pool_destroy(d->pool);
	pthread_rwlock_destroy(&d->pt_lock);
	pthread_mutex_destroy(&d->launch_lock);
	free(d);
}

void mv_mmu_dev_get_stats(struct mv_mmu_dev *d, struct mv_mmu_dev_stats *st)
{
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&d->launch_lock);  /* TLB counters are owned by idle workers now */
	for (unsigned i = 0; i < d->cfg.workers; i++) {
		struct mv_mmu_tlb_stats ts;
		mv_mmu_tlb_get_stats(d->w[i].tlb, &ts);
		st->tlb_hits += ts.hits;
		st->tlb_misses += ts.misses;
	}
	pthread_mutex_unlock(&d->launch_lock);
	st->faults_replayed = atomic_load(&d->faults_replayed);
	st->faults_fatal = atomic_load(&d->faults_fatal);
	st->shootdowns = atomic_load(&d->shootdowns);
}

void dev_shootdown(struct mv_mmu_dev *d)
{
	uint64_t target = atomic_fetch_add(&d->epoch, 1) + 1;
	for (unsigned i = 0; i < d->cfg.workers; i++) {
		struct worker *w = &d->w[i];
		/* an idle worker flushes when it next looks at the epoch */
		while (atomic_load(&w->active) && atomic_load(&w->seen) < target)
			sched_yield();
	}
	atomic_fetch_add(&d->shootdowns, 1);
}

int mv_mmu_ctx_create(struct mv_mmu_dev *d, struct mv_mmu_ctx **out, struct mv_error **err)
{
	struct mv_mmu_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		abort();
	c->dev = d;
	struct mv_mmu_pt_config pc = { .levels = d->cfg.private_levels, .ops = mv_mmu_pool_ops(),
				       .ops_ctx = d->pool };
	pthread_rwlock_wrlock(&d->pt_lock);
	int rc = mv_mmu_pt_create(&pc, &c->priv, err);
	pc.levels = d->cfg.shared_levels;
	if (rc == 0)
		rc = mv_mmu_pt_create(&pc, &c->shared, err);
	if (rc < 0) {
		mv_mmu_pt_destroy(c->priv);
		pthread_rwlock_unlock(&d->pt_lock);
		free(c);
		return rc;
	}
	/* private VAs live in the upper canonical half: never a host user pointer */
	c->priv_next = d->cfg.private_levels == 5 ? 0xff00000000000000ULL : 0xffff800000000000ULL;
	c->pasid = d->next_pasid++;
	c->next = d->ctxs;
	d->ctxs = c;
	pthread_rwlock_unlock(&d->pt_lock);
	*out = c;
	return 0;
}

uint32_t mv_mmu_ctx_pasid(const struct mv_mmu_ctx *c)
{
	return c->pasid;
}

static void flush_pasid_all(struct mv_mmu_dev *d, uint32_t pasid)
{
	/* callers hold launch_lock, so no worker runs and the TLBs are ours */
	for (unsigned i = 0; i < d->cfg.workers; i++)
		mv_mmu_tlb_flush_pasid(d->w[i].tlb, pasid);
}

void mv_mmu_ctx_destroy(struct mv_mmu_ctx *c)
{
	if (!c)
		return;
	struct mv_mmu_dev *d = c->dev;
	pthread_mutex_lock(&d->launch_lock);
	svm_release_all(c);
	pthread_rwlock_wrlock(&d->pt_lock);
	for (size_t i = 0; i < c->npa; i++)
		memset(d->vram_used + c->pa[i].vram_off / MV_MMU_4K, 0, c->pa[i].size / MV_MMU_4K);
	free(c->pa);
	mv_mmu_pt_destroy(c->priv);
	mv_mmu_pt_destroy(c->shared);
	for (struct mv_mmu_ctx **pp = &d->ctxs; *pp; pp = &(*pp)->next)
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	pthread_rwlock_unlock(&d->pt_lock);
	flush_pasid_all(d, c->pasid);
	pthread_mutex_unlock(&d->launch_lock);
	free(c);
}

/* ---- device-private memory ------------------------------------------------ */

int mv_mmu_dev_alloc(struct mv_mmu_ctx *c, uint64_t size, uint64_t *dva, struct mv_error **err)
{
	struct mv_mmu_dev *d = c->dev;
	if (!size || size > d->cfg.vram_bytes)
		return mv_err_field(err, -EINVAL, "size", "bad device allocation size");
	uint64_t pages = MV_ALIGN_UP(size, MV_MMU_4K) / MV_MMU_4K, run = 0, first = 0;
	pthread_rwlock_wrlock(&d->pt_lock);
	for (uint64_t i = 0; i < d->vram_pages && run < pages; i++) {
		if (d->vram_used[i]) {
			run = 0;
			continue;
		}
		if (!run)
			first = i;
		run++;
	}
	int rc = -ENOMEM;
	if (run == pages) {
		uint64_t va = c->priv_next;
		rc = mv_mmu_map(c->priv, va, VRAM_PA + first * MV_MMU_4K, pages * MV_MMU_4K, MV_MMU_4K,
				MV_MMU_PTE_RW | MV_MMU_PTE_US | MV_MMU_PTE_NX, err);
		if (rc == 0) {
			if (c->npa == c->cap_pa) {
				c->cap_pa = c->cap_pa ? 2 * c->cap_pa : 16;
				c->pa = realloc(c->pa, c->cap_pa * sizeof(*c->pa));
				if (!c->pa)
					abort();
			}
			c->pa[c->npa++] = (struct priv_alloc){ va, pages * MV_MMU_4K, first * MV_MMU_4K };
			memset(d->vram_used + first, 1, pages);
			memset(d->vram + first * MV_MMU_4K, 0, pages * MV_MMU_4K);
			c->priv_next += (pages + 1) * MV_MMU_4K;   /* guard page between allocations */
			*dva = va;
		}
	} else {
		mv_err(err, rc, "device memory exhausted (%llu pages wanted)", (unsigned long long)pages);
	}
	pthread_rwlock_unlock(&d->pt_lock);
	return rc;
}

int mv_mmu_dev_free(struct mv_mmu_ctx *c, uint64_t dva)
{
	struct mv_mmu_dev *d = c->dev;
	pthread_mutex_lock(&d->launch_lock);
	pthread_rwlock_wrlock(&d->pt_lock);
	int rc = -ENOENT;
	for (size_t i = 0; i < c->npa; i++) {
		struct priv_alloc a = c->pa[i];
		if (a.dva != dva)
			continue;
		rc = mv_mmu_unmap(c->priv, a.dva, a.size, NULL);
		memset(d->vram_used + a.vram_off / MV_MMU_4K, 0, a.size / MV_MMU_4K);
		c->pa[i] = c->pa[--c->npa];
		for (unsigned w = 0; w < d->cfg.workers; w++)
			mv_mmu_tlb_flush_range(d->w[w].tlb, c->pasid, a.dva, a.size);
		break;
	}
	pthread_rwlock_unlock(&d->pt_lock);
	pthread_mutex_unlock(&d->launch_lock);
	return rc;
}

/* Host copy to/from device memory, page by page through the private tables. */
static int dev_copy(struct mv_mmu_ctx *c, uint64_t dva, void *host, size_t len, bool to_dev,
		    struct mv_error **err)
{
	struct mv_mmu_dev *d = c->dev;
	int rc = 0;
	pthread_rwlock_rdlock(&d->pt_lock);
	for (size_t done = 0; done < len;) {
		struct mv_mmu_xlat x;
		uint64_t va = dva + done;
		if (mv_mmu_query(c->priv, va, &x) < 0 || x.pa < VRAM_PA) {
			rc = mv_err(err, -EFAULT, "device address %#llx is not device memory",
				    (unsigned long long)va);
			break;
		}
		size_t n = (size_t)(x.page_size - (va & (x.page_size - 1)));
		if (n > len - done)
			n = len - done;
		uint8_t *p = d->vram + (x.pa - VRAM_PA);
		if (to_dev)
			memcpy(p, (uint8_t *)host + done, n);
		else
			memcpy((uint8_t *)host + done, p, n);
		done += n;
	}
	pthread_rwlock_unlock(&d->pt_lock);
	return rc;
}

int mv_mmu_dev_write(struct mv_mmu_ctx *c, uint64_t dva, const void *src, size_t len,
		     struct mv_error **err)
{
	return dev_copy(c, dva, (void *)(uintptr_t)src, len, true, err);
}

int mv_mmu_dev_read(struct mv_mmu_ctx *c, uint64_t dva, void *dst, size_t len,
		    struct mv_error **err)
{
	return dev_copy(c, dva, dst, len, false, err);
}

/* ---- lanes: every access through TLB and tables ---------------------------- */

unsigned mv_mmu_lane_id(const struct mv_mmu_lane *l) { return l->id; }
unsigned mv_mmu_lane_count(const struct mv_mmu_lane *l) { return l->count; }

static int lane_xlat(struct mv_mmu_lane *l, uint64_t va, bool write, void **p)
{
	struct worker *w = l->w;
	struct mv_mmu_ctx *c = w->ctx;
	struct mv_mmu_dev *d = c->dev;
	uint64_t e = atomic_load(&d->epoch);
	if (e != atomic_load_explicit(&w->seen, memory_order_relaxed)) {
		mv_mmu_tlb_flush_all(w->tlb);
		atomic_store(&w->seen, e);
	}
	/* sign bit picks the space: private VAs are upper-half, host pointers lower */
	struct mv_mmu_pt *pt = (va >> 63) ? c->priv : c->shared;
	unsigned acc = ACC_DEV | (write ? MV_MMU_ACC_WRITE : 0);
	struct mv_mmu_xlat x;
	struct mv_mmu_fault f = { 0 };
	int rc = 0;
	for (unsigned tries = 0;; tries++) {
		if (mv_mmu_tlb_lookup(w->tlb, c->pasid, va, acc, &x))
			break;
		pthread_rwlock_rdlock(&d->pt_lock);
		rc = mv_mmu_walk(pt, 0, va, acc, &x, &f);
		pthread_rwlock_unlock(&d->pt_lock);
		if (rc == 0) {
			mv_mmu_tlb_insert(w->tlb, c->pasid, va, &x);
			break;
		}
		/* a notifier may unmap again between resolve and replay: retry, bounded */
		bool replayable = rc == -EFAULT && pt == c->shared && tries < MAX_REPLAYS &&
				  (f.kind == MV_MMU_FAULT_NOT_PRESENT || f.kind == MV_MMU_FAULT_PERMISSION);
		if (replayable && svm_resolve(c, va, write) == 0) {
			atomic_fetch_add(&d->faults_replayed, 1);
			continue;    /* replay the access */
		}
		atomic_fetch_add(&d->faults_fatal, 1);
		if (rc == -EFAULT && !w->fault.kind) {
			w->fault = f;
			w->fault_va = va;
		}
		return rc;
	}
	if (x.pa >= VRAM_PA) {
		if (x.pa - VRAM_PA >= d->cfg.vram_bytes)
			return -EFAULT;
		*p = d->vram + (x.pa - VRAM_PA);
	} else {
		*p = (void *)(uintptr_t)x.pa;   /* shared: the host's own address */
	}
	return 0;
}

static bool size_ok(uint64_t va, unsigned size)
{
	return (size == 1 || size == 2 || size == 4 || size == 8) && !(va & (size - 1));
}

int mv_mmu_lane_load(struct mv_mmu_lane *l, uint64_t va, void *dst, unsigned size)
{
	if (!size_ok(va, size))
		return -EINVAL;
	void *p;
	int rc = lane_xlat(l, va, false, &p);
	if (rc == 0)
		memcpy(dst, p, size);
	return rc;
}

int mv_mmu_lane_store(struct mv_mmu_lane *l, uint64_t va, const void *src, unsigned size)
{
	if (!size_ok(va, size))
		return -EINVAL;
	void *p;
	int rc = lane_xlat(l, va, true, &p);
	if (rc == 0)
		memcpy(p, src, size);
	return rc;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct mv_mmu_dev *d = w->ctx->dev;
	atomic_store(&w->active, 1);   /* before reading the epoch: pairs with dev_shootdown */
	for (unsigned lane = w->id; lane < w->nlanes && w->rc == 0; lane += d->cfg.workers) {
		struct mv_mmu_lane l = { .w = w, .id = lane, .count = w->nlanes };
		w->rc = w->fn(&l, w->arg);
	}
	atomic_store(&w->active, 0);
	return NULL;
}

int mv_mmu_dev_launch(struct mv_mmu_ctx *c, mv_mmu_kernel_fn fn, void *arg, unsigned nlanes,
		      struct mv_error **err)
{
	struct mv_mmu_dev *d = c->dev;
	if (!fn || !nlanes)
		return mv_err(err, -EINVAL, "launch needs a kernel and at least one lane");
	pthread_mutex_lock(&d->launch_lock);
	unsigned started = 0;
	int rc = 0;
	for (unsigned i = 0; i < d->cfg.workers && i < nlanes; i++) {
		struct worker *w = &d->w[i];
		w->ctx = c;
		w->fn = fn;
		w->arg = arg;
		w->id = i;
		w->nlanes = nlanes;
		w->rc = 0;
		w->fault = (struct mv_mmu_fault){ 0 };
		if (pthread_create(&w->th, NULL, worker_main, w) != 0) {
			rc = mv_err(err, -EAGAIN, "cannot start device worker %u", i);
			break;
		}
		started++;
	}
	for (unsigned i = 0; i < started; i++) {
		struct worker *w = &d->w[i];
		pthread_join(w->th, NULL);
		if (w->rc && !rc) {
			if (w->fault.kind)
				rc = mv_err(err, w->rc, "device fault: %s at %#llx (pasid %u, level %u)",
					    mv_mmu_fault_str(w->fault.kind),
					    (unsigned long long)w->fault_va, c->pasid, w->fault.level);
			else
				rc = mv_err(err, w->rc, "kernel lane failed: %d", w->rc);
		}
	}
	pthread_mutex_unlock(&d->launch_lock);
	return rc;
}
