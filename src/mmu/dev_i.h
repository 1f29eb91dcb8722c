/* Private to the device MMU (dev.c, svm.c): the software compute device, its
 * contexts, workers and the SVM registration table of host ranges. */
#ifndef MV_MMU_DEV_I_H
#define MV_MMU_DEV_I_H

#include <pthread.h>
#include "mmu_i.h"

/* Device "physical" space: below VRAM_PA a PA is a host address (shared
 * memory mirrors the host 1:1); from VRAM_PA up it is device memory. */
#define VRAM_PA (1ULL << 51)

struct svm_region {
	uint64_t start, end;   /* host VA == device VA */
	int prot;              /* PROT_READ | PROT_WRITE */
	bool owned;            /* from mv_mmu_svm_alloc: munmapped by us */
	uint64_t alloc_start, alloc_len; /* the whole owned mapping (for munmap) */
};

struct priv_alloc {
	uint64_t dva, size, vram_off;
};

struct mv_mmu_ctx {
	struct mv_mmu_dev *dev;
	uint32_t pasid;
	struct mv_mmu_pt *priv, *shared;
	uint64_t priv_next;                    /* bump pointer in the private VA space */
	struct priv_alloc *pa; size_t npa, cap_pa;
	struct svm_region *rg; size_t nrg, cap_rg;  /* sorted by start; under dev->pt_lock */
	struct mv_mmu_ctx *next;
};

struct worker {
	struct mv_mmu_tlb *tlb;
	_Atomic uint64_t seen;     /* last shootdown epoch this worker acted on */
	_Atomic int active;
	pthread_t th;
	struct mv_mmu_ctx *ctx;
	mv_mmu_kernel_fn fn;
	void *arg;
	unsigned id, nlanes;
	int rc;
	struct mv_mmu_fault fault;
	uint64_t fault_va;
};

struct mv_mmu_lane {
	struct worker *w;
	unsigned id, count;
};

struct mv_mmu_dev {
	struct mv_mmu_dev_config cfg;
	struct mv_mmu_pool *pool;
	uint8_t *vram;
	uint8_t *vram_used;        /* one byte per 4K page */
	uint64_t vram_pages;
	pthread_rwlock_t pt_lock;  /* walkers read, fault handler/notifier/alloc write */
	pthread_mutex_t launch_lock;
	_Atomic uint64_t epoch;
	_Atomic uint64_t faults_replayed, faults_fatal, shootdowns;
	uint32_t next_pasid;
	struct mv_mmu_ctx *ctxs;
	struct worker *w;
};

/* svm.c: resolves a replayable fault on a shared VA (under no lock). 0 when
 * the page is now mapped, -EFAULT/-EACCES when the host has no such mapping. */
int svm_resolve(struct mv_mmu_ctx *ctx, uint64_t va, bool write);
void svm_release_all(struct mv_mmu_ctx *ctx);
/* dev.c: bumps the epoch and waits until every active worker flushed its TLB. */
void dev_shootdown(struct mv_mmu_dev *dev);

#endif
