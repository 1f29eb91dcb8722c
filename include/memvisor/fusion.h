/* Page fusion: finds identical 4 KiB guest pages across VMs (and within one)
 * and assigns each distinct shared content one page of a fused pool (a memfd
 * this library owns). The library only reads guest RAM (pread on the VMs'
 * memfds, holes skipped) and keeps the books; the merge itself is done by each
 * VM's VMM, which alone can make the swap atomic against its vCPUs, and which
 * reports back whether a proposal held and which fused pages a guest write
 * broke (copy-on-write). Driven by memvisord's fusion thread; built so the
 * side-channel guard can ask which VMs share a pool page and which pool page
 * backs a guest page. Thread-safe: one internal lock. */
#ifndef MEMVISOR_FUSION_H
#define MEMVISOR_FUSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "memvisor/error.h"
#include "memvisor/mem.h"

struct mv_fusion;

struct mv_fusion_cfg {
	uint64_t pool_pages;          /* distinct fused contents at most (pool memfd size) */
	uint64_t max_fused_per_vm;    /* each fused page costs its VMM a mapping (VMA) */
};

/* A merge the scanner proposes: map pool page pool_off read-only at gpa of VM
 * key. It holds a reference on the pool page until mv_fusion_commit(). */
struct mv_fusion_merge {
	uint64_t key;
	uint64_t gpa;
	uint64_t pool_off;
};

struct mv_fusion_stats {
	uint64_t shared;          /* pool pages in use (each distinct fused content) */
	uint64_t sharing;         /* guest pages mapped to pool pages */
	uint64_t unshared;        /* pages scanned in the last full scan whose content was unique */
	uint64_t full_scans;      /* passes over every attached VM's RAM */
	uint64_t pages_scanned;
	uint64_t merges;          /* proposals the VMMs carried out */
	uint64_t misses;          /* proposals a VMM refused (the page changed meanwhile) */
	uint64_t cow_breaks;      /* fused pages un-shared by a guest write (as reported) */
	uint64_t unfused;         /* fused pages copied back on request (hand-over, migration) */
	uint32_t vms;             /* VMs attached */
};

/* Creates the pool (a sparse memfd of cfg->pool_pages pages). Free with
 * mv_fusion_destroy(). */
int mv_fusion_create(const struct mv_fusion_cfg *cfg, struct mv_fusion **out,
		     struct mv_error **err) MV_MUST_CHECK;
void mv_fusion_destroy(struct mv_fusion *f);
/* The pool memfd (read-write, owned by f) and a new read-only descriptor of
 * it for a VMM (the caller closes it): a VMM must not be able to write a
 * page other tenants map. */
int mv_fusion_pool_fd(const struct mv_fusion *f);
int mv_fusion_pool_fd_ro(const struct mv_fusion *f);
uint64_t mv_fusion_pool_size(const struct mv_fusion *f);

/* Attaches a VM's RAM for scanning under key (the caller's unique id). The
 * layout's fds are dup'ed; hugetlb regions are not scanned. -EEXIST when the
 * key is attached. */
int mv_fusion_vm_add(struct mv_fusion *f, uint64_t key, const struct mv_mem_layout *l,
		     struct mv_error **err) MV_MUST_CHECK;
/* Detaches a VM, dropping all its references: call it only once its VMM maps
 * no pool page any more (it unfused everything, or it is gone). */
void mv_fusion_vm_remove(struct mv_fusion *f, uint64_t key);
bool mv_fusion_vm_attached(struct mv_fusion *f, uint64_t key);
/* Fused pages (proposed or confirmed) of a VM. */
uint64_t mv_fusion_vm_fused(struct mv_fusion *f, uint64_t key);
/* The VM's VMM copied every fused page back (UNFUSE): drop its references. */
void mv_fusion_vm_unfused(struct mv_fusion *f, uint64_t key, uint64_t count);

/* Never proposes pages [gpa, gpa+len) of VM key again (the guard moved them
 * to fresh frames); until the VM is detached. -ENOENT when not attached. */
int mv_fusion_vm_keep(struct mv_fusion *f, uint64_t key, uint64_t gpa, uint64_t len);

/* Scans up to budget pages (rate limiting is the caller's), resuming where
 * the last call stopped, and appends proposals to out[0..cap). *n gets their
 * number. Every proposal must be answered with mv_fusion_commit(). */
int mv_fusion_scan(struct mv_fusion *f, uint64_t budget, struct mv_fusion_merge *out, size_t cap,
		   size_t *n);
/* The VMM's answer to a proposal: fused, or not (the reference is dropped). */
void mv_fusion_commit(struct mv_fusion *f, const struct mv_fusion_merge *m, bool fused);
/* A guest write broke fused page gpa of VM key: drop its reference. Returns
 * how many pages of OTHER VMs shared it (the guard's write-probe signal
 * counts cross-VM breaks only); *other (may be NULL) gets one of their keys. */
size_t mv_fusion_broken(struct mv_fusion *f, uint64_t key, uint64_t gpa, uint64_t *other);

void mv_fusion_get_stats(struct mv_fusion *f, struct mv_fusion_stats *out);

/* Guard queries. The pool offset backing gpa of VM key (-ENOENT if unfused). */
int mv_fusion_lookup(struct mv_fusion *f, uint64_t key, uint64_t gpa, uint64_t *pool_off);
/* The pool page holding content of hash xxh3 (mv_guard_page_hash), or -ENOENT. */
int mv_fusion_find_hash(struct mv_fusion *f, uint64_t xxh3, uint64_t *pool_off);
/* Calls fn for each guest page mapped to pool page pool_off; returns how many. */
size_t mv_fusion_sharers(struct mv_fusion *f, uint64_t pool_off,
			 void (*fn)(uint64_t key, uint64_t gpa, void *arg), void *arg);

#endif
