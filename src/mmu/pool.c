/* Host-side physical-memory provider: a pool of 4 KiB table pages per NUMA
 * node behind mv_mmu_phys_ops. Used by the device MMU, tests, the fuzzer and
 * the benchmark; guest-RAM providers live with their callers. Chunks are
 * placed with libnuma when the machine has more than one node, else the node
 * count is simulated and placement is a no-op. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include "mmu_i.h"
#ifdef HAVE_LIBNUMA
#include <numa.h>
#endif

struct mv_mmu_pool {
	unsigned nodes;
	uint64_t pages;            /* per node */
	uint64_t chunk_bytes;
	unsigned stride_shift;     /* node n's pages start at BASE + (n << stride_shift) */
	uint8_t *chunk[MV_MMU_MAX_REPLICAS];
	bool numa_placed[MV_MMU_MAX_REPLICAS];
	/* per-node free stack of page indices; allocation is by the (single) editor */
	uint32_t *free_stack[MV_MMU_MAX_REPLICAS];
	uint64_t nfree[MV_MMU_MAX_REPLICAS];
	_Atomic uint64_t used;
};

unsigned mv_mmu_numa_nodes(void)
{
#ifdef HAVE_LIBNUMA
	if (numa_available() >= 0) {
		int n = numa_num_configured_nodes();
		return n > 0 ? (unsigned)n : 1;
	}
#endif
	return 1;
}

static void *chunk_alloc(struct mv_mmu_pool *p, unsigned node, uint64_t bytes)
{
#ifdef HAVE_LIBNUMA
	unsigned real = mv_mmu_numa_nodes();
	if (real > 1) {
		void *m = numa_alloc_onnode(bytes, (int)(node % real));
		if (m) {
			p->numa_placed[node] = true;
			memset(m, 0, bytes);
			return m;
		}
	}
#endif
	void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return m == MAP_FAILED ? NULL : m;
}

static void chunk_free(struct mv_mmu_pool *p, unsigned node)
{
	if (!p->chunk[node])
		return;
#ifdef HAVE_LIBNUMA
	if (p->numa_placed[node]) {
		numa_free(p->chunk[node], p->chunk_bytes);
		return;
	}
#endif
	munmap(p->chunk[node], p->chunk_bytes);
}

void mv_mmu_pool_destroy(struct mv_mmu_pool *p)
{
	if (!p)
		return;
	for (unsigned n = 0; n < p->nodes; n++) {
		chunk_free(p, n);
		free(p->free_stack[n]);
	}
	free(p);
}

int mv_mmu_pool_create(const struct mv_mmu_pool_config *cfg, struct mv_mmu_pool **out,
		       struct mv_error **err)
{
	*out = NULL;
	if (!cfg || cfg->nodes < 1 || cfg->nodes > MV_MMU_MAX_REPLICAS)
		return mv_err_field(err, -EINVAL, "nodes", "pool nodes must be 1..%d",
				    MV_MMU_MAX_REPLICAS);
	if (cfg->pages_per_node < 1 || cfg->pages_per_node > (1ULL << 28))
		return mv_err_field(err, -EINVAL, "pages_per_node", "pool pages per node out of range");
	struct mv_mmu_pool *p = calloc(1, sizeof(*p));
	if (!p)
		abort();
	p->nodes = cfg->nodes;
	p->pages = cfg->pages_per_node;
	p->chunk_bytes = p->pages * MV_MMU_4K;
	/* power-of-two stride: the hot read path finds the node with a shift, not a divide */
	p->stride_shift = 12;
	while ((1ULL << p->stride_shift) < p->chunk_bytes)
		p->stride_shift++;
	for (unsigned n = 0; n < p->nodes; n++) {
		p->chunk[n] = chunk_alloc(p, n, p->chunk_bytes);
		p->free_stack[n] = malloc(p->pages * sizeof(uint32_t));
		if (!p->chunk[n] || !p->free_stack[n]) {
			mv_mmu_pool_destroy(p);
			return mv_err(err, -ENOMEM, "cannot allocate %llu table pages on node %u",
				      (unsigned long long)p->pages, n);
		}
		/* pop order: lowest page first, which keeps addresses readable */
		for (uint64_t i = 0; i < p->pages; i++)
			p->free_stack[n][i] = (uint32_t)(p->pages - 1 - i);
		p->nfree[n] = p->pages;
	}
	*out = p;
	return 0;
}

static inline uint64_t *pool_slot(struct mv_mmu_pool *p, uint64_t pa)
{
	uint64_t off = pa - MV_MMU_POOL_BASE;
	if (pa < MV_MMU_POOL_BASE || (pa & 7))
		return NULL;
	uint64_t node = off >> p->stride_shift, in = off & ((1ULL << p->stride_shift) - 1);
	if (node >= p->nodes || in >= p->chunk_bytes)
		return NULL;
	return (uint64_t *)(p->chunk[node] + in);
}

void *mv_mmu_pool_ptr(struct mv_mmu_pool *p, uint64_t pa)
{
	return pool_slot(p, pa & ~7ULL);
}

uint64_t mv_mmu_pool_used(const struct mv_mmu_pool *p)
{
	return atomic_load(&p->used);
}

static int pool_read(void *ctx, uint64_t pa, uint64_t *v)
{
	uint64_t *s = pool_slot(ctx, pa);
	if (!s)
		return -EFAULT;
	*v = __atomic_load_n(s, __ATOMIC_ACQUIRE);
	return 0;
}

static int pool_write(void *ctx, uint64_t pa, uint64_t v)
{
	uint64_t *s = pool_slot(ctx, pa);
	if (!s)
		return -EFAULT;
	__atomic_store_n(s, v, __ATOMIC_RELEASE);
	return 0;
}

static int pool_cmpxchg(void *ctx, uint64_t pa, uint64_t *exp, uint64_t des)
{
	uint64_t *s = pool_slot(ctx, pa);
	if (!s)
		return -EFAULT;
	return __atomic_compare_exchange_n(s, exp, des, false, __ATOMIC_ACQ_REL,
					   __ATOMIC_ACQUIRE) ? 0 : -EAGAIN;
}

static int pool_alloc(void *ctx, unsigned node, uint64_t *pa)
{
	struct mv_mmu_pool *p = ctx;
	unsigned n = node % p->nodes;
	if (!p->nfree[n])
		return -ENOMEM;
	uint64_t idx = p->free_stack[n][--p->nfree[n]];
	uint8_t *page = p->chunk[n] + idx * MV_MMU_4K;
	memset(page, 0, MV_MMU_4K);
	*pa = MV_MMU_POOL_BASE + ((uint64_t)n << p->stride_shift) + idx * MV_MMU_4K;
	atomic_fetch_add(&p->used, 1);
	return 0;
}

static void pool_free(void *ctx, uint64_t pa)
{
	struct mv_mmu_pool *p = ctx;
	if (!pool_slot(p, pa) || (pa & (MV_MMU_4K - 1)))
		abort(); /* broken invariant: freeing a page we never gave out */
	uint64_t off = pa - MV_MMU_POOL_BASE;
	unsigned n = (unsigned)(off >> p->stride_shift);
	uint64_t in = off & ((1ULL << p->stride_shift) - 1);
	p->free_stack[n][p->nfree[n]++] = (uint32_t)(in / MV_MMU_4K);
	atomic_fetch_sub(&p->used, 1);
}

static const struct mv_mmu_phys_ops pool_ops = {
	.read = pool_read,
	.write = pool_write,
	.cmpxchg = pool_cmpxchg,
	.alloc_table = pool_alloc,
	.free_table = pool_free,
};

const struct mv_mmu_phys_ops *mv_mmu_pool_ops(void)
{
	return &pool_ops;
}
