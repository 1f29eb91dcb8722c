/* memvisor-vmm's part of the side-channel guard (control message GUARD):
 * mlocks a sensitive guest range so its pages get frames that stay resident
 * (mlock populates them), and tells the daemon where guest RAM is mapped so it
 * can read the frames from /proc/PID/pagemap. mlock keeps pages resident, not
 * in place: the kernel may still migrate them (compaction of unevictable
 * pages, NUMA balancing), and a fusion swap or copy-on-write break replaces
 * the page's mapping with an unlocked one; the daemon therefore re-locks and
 * re-reads the frames on every guard check. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "vmm_i.h"

/* KEEP: the daemon's record of pages the guard moved, sent to every new VMM
 * (hand-over, restart): they stay out of fusion as in the VMM that moved
 * them. A page fused meanwhile is copied back first (the daemon learns of it
 * as broken, with an age no write-probe window counts). */
static int guard_keep(struct vmm *v, uint64_t gpa, uint64_t len, uint32_t *kept,
		      struct mv_error **err)
{
	vmm_fusion_ensure(v);
	for (uint64_t o = 0; o < len; o += MV_PAGE_SIZE) {
		int u = vmm_fusion_unfuse_page(v, gpa + o);
		if (u < 0)
			return mv_err(err, u, "unfusing gpa 0x%llx: %s",
				      (unsigned long long)(gpa + o), strerror(-u));
		/* Busy only for the instant a merge or fault holds it. */
		while (u == 0 && !vmm_fusion_hold(v, gpa + o)) {
			sched_yield();
			u = vmm_fusion_unfuse_page(v, gpa + o);
			if (u < 0)
				return mv_err(err, u, "unfusing gpa 0x%llx: %s",
					      (unsigned long long)(gpa + o), strerror(-u));
		}
		if (u == 0)
			vmm_fusion_unhold(v, gpa + o);   /* leaves it KEEP */
		(*kept)++;
	}
	return 0;
}

/* The raw syscalls: sanitizer runtimes turn mlock() into a silent no-op.
 * mlock fails with ENOMEM when a page of the range cannot be populated: a
 * fused page the sampled-access signal traps (PROT_NONE) while this VM was
 * watched as a sharer of another tenant's range, until the next check drops
 * it. Such a page is resident already (the pool's): lock it on fault
 * (mlock2 MLOCK_ONFAULT, which populates nothing), page by page. */
#define LOCK_CHUNK (2u << 20)

static long lock_pages(uint8_t *hva, uint64_t len)
{
	long r = 0;
	for (uint64_t o = 0; r == 0 && o < len; o += MV_PAGE_SIZE) {
		r = syscall(SYS_mlock, hva + o, MV_PAGE_SIZE);
		if (r < 0 && errno == ENOMEM)
			r = syscall(SYS_mlock2, hva + o, MV_PAGE_SIZE, 1 /* MLOCK_ONFAULT */);
	}
	return r;
}

static long lock_range(long nr, void *hva, uint64_t len)
{
	long r = syscall(nr, hva, len);
	if (r == 0 || errno != ENOMEM || nr != SYS_mlock)
		return r;
	/* 2 MiB at a time; page by page only where that fails. */
	r = 0;
	for (uint64_t c = 0; r == 0 && c < len; c += LOCK_CHUNK) {
		uint64_t n = len - c < LOCK_CHUNK ? len - c : LOCK_CHUNK;
		r = syscall(SYS_mlock, (uint8_t *)hva + c, n);
		if (r < 0 && errno == ENOMEM)
			r = lock_pages((uint8_t *)hva + c, n);
	}
	return r;
}

int vmm_guard(struct vmm *v, const struct mv_ctl_guard *req, struct mv_ctl_guard_reply *out,
	      struct mv_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!v->ready || !v->mem)
		return mv_err(err, -ENODEV, "VM not set up");
	unsigned n = mv_guest_mem_nregions(v->mem);
	for (unsigned i = 0; i < n; i++) {
		const struct mv_mem_region *r = mv_guest_mem_region(v->mem, i);
		out->gpa[i] = r->gpa;
		out->size[i] = r->size;
		out->hva[i] = (uint64_t)(uintptr_t)r->hva;
	}
	out->nregions = n;
	if (req->op == MV_GUARD_OP_QUERY)
		return 0;
	void *hva = mv_gpa_to_hva(v->mem, req->gpa, req->len);
	if (!hva)
		return mv_err(err, -EINVAL, "range 0x%llx+0x%llx is not inside one RAM region",
			      (unsigned long long)req->gpa, (unsigned long long)req->len);
	if (req->op == MV_GUARD_OP_KEEP)
		return guard_keep(v, req->gpa, req->len, &out->kept, err);
	long r = lock_range(req->op == MV_GUARD_OP_LOCK ? SYS_mlock : SYS_munlock, hva, req->len);
	if (r < 0)
		return mv_err(err, -errno, "%s: %s", req->op == MV_GUARD_OP_LOCK ? "mlock" : "munlock",
			      strerror(errno));
	return 0;
}

/* RELOCATE: moves the resident pages of a guest range to fresh frames (the
 * guard's "move" response: an attacker who learned where the victim's data
 * sits in physical memory loses it). With the vCPUs paused, per 2 MiB block
 * of the memfd: a fused page is first copied back into the memfd, as a guest
 * write would; then a splice of every resident page into a pipe takes a
 * reference on its old frame (so the kernel cannot hand it straight back),
 * the bytes are copied aside, the block is punched out of the memfd and the
 * copy written back through the guest mapping, which faults in new frames
 * and records the pages as written in every dirty-log backend. Whole blocks:
 * guest RAM may sit on large folios (THP, up to 2 MiB, never across a 2 MiB
 * boundary), and punching part of a folio the pipe holds cannot split it,
 * so the kernel would zero the page in place and the rewrite land on the old
 * frame. Pages of a block outside the range move along. The old frames go
 * when the pipes close, after every new one of the range exists (the kernel
 * reuses the frames it freed last). The range is mlocked again (raw
 * syscall: sanitizers make mlock() a no-op); moved pages stay out of fusion
 * from then on (a merge would put them back on a shared pool frame). */
#define BLOCK_PAGES 512          /* 2 MiB: the largest shmem folio */
#define RELOC_PIPE (16 << 20)    /* bytes of old frames a pipe asks to hold */

/* Holds old frames of one relocation: pipes kept open until it ends. */
struct reloc_hold {
	int wr;            /* the pipe being filled, -1 none */
	int *rd;           /* read ends of every pipe, open until the end */
	size_t n, cap;
};

static int hold_pipe(struct reloc_hold *h, struct mv_error **err)
{
	if (h->wr >= 0)
		return 0;
	int pp[2];
	if (pipe2(pp, O_CLOEXEC | O_NONBLOCK) < 0)
		return mv_err(err, -errno, "pipe: %s", strerror(errno));
	/* As large as allowed (pipe-max-size, more as root): fewer descriptors. */
	for (int sz = RELOC_PIPE; sz > (int)MV_PAGE_SIZE * 16; sz /= 2)
		if (fcntl(pp[1], F_SETPIPE_SZ, sz) >= 0)
			break;
	h->rd = mv_grow(h->rd, h->n, &h->cap, sizeof(*h->rd), 16);
	h->rd[h->n++] = pp[0];
	h->wr = pp[1];
	return 0;
}

static void hold_release(struct reloc_hold *h)
{
	if (h->wr >= 0)
		close(h->wr);
	for (size_t i = 0; i < h->n; i++)
		close(h->rd[i]);
	free(h->rd);
}

/* A reference on the frame behind memfd offset at, in a pipe. */
static int hold_frame(struct reloc_hold *h, int fd, uint64_t at, struct mv_error **err)
{
	for (int tries = 0; tries < 2; tries++) {
		int r = hold_pipe(h, err);
		if (r < 0)
			return r;
		loff_t off = (loff_t)at;
		ssize_t s = splice(fd, &off, h->wr, NULL, MV_PAGE_SIZE, SPLICE_F_NONBLOCK);
		if (s == (ssize_t)MV_PAGE_SIZE)
			return 0;
		if (s >= 0 || errno != EAGAIN)
			return mv_err(err, s < 0 ? -errno : -EIO, "splice at 0x%llx: %s",
				      (unsigned long long)at, s < 0 ? strerror(errno) : "short");
		close(h->wr);   /* full: its frames stay held; take a new pipe */
		h->wr = -1;
	}
	return mv_err(err, -ENOSPC, "a new pipe holds no page");
}

/* Moves the resident pages of block [bs, be) (page indexes in mr); counts
 * those inside [first, end). */
static int reloc_block(struct vmm *v, const struct mv_mem_region *mr, uint64_t bs, uint64_t be,
		       uint64_t first, uint64_t end, uint8_t *buf, struct reloc_hold *h,
		       struct mv_ctl_relocate_reply *out, struct mv_error **err)
{
	static unsigned char vec[BLOCK_PAGES];
	static bool held[BLOCK_PAGES];   /* RELOCATE calls are serialized */
	uint64_t n = be - bs;
	uint8_t *base = mr->hva + bs * MV_PAGE_SIZE;
	memset(held, 0, sizeof(held));
	if (mincore(base, n * MV_PAGE_SIZE, vec) < 0)
		return mv_err(err, -errno, "mincore: %s", strerror(errno));
	int r = 0;
	for (uint64_t i = 0; i < n && r == 0; i++) {
		if (!(vec[i] & 1))
			continue;   /* no frame to move */
		uint64_t gpa = mr->gpa + (bs + i) * MV_PAGE_SIZE;
		bool in = bs + i >= first && bs + i < end;
		/* A fused page sits on a pool frame other VMs map too: back into
		 * the memfd first (a frame of its own), then moved with the rest. */
		int u = vmm_fusion_unfuse_page(v, gpa);
		if (u < 0) {
			r = mv_err(err, u, "unfusing gpa 0x%llx: %s", (unsigned long long)gpa,
				   strerror(-u));
			break;
		}
		if (!vmm_fusion_hold(v, gpa)) {
			out->skipped += in;   /* busy in a merge or a fault this instant */
			continue;
		}
		held[i] = true;
		r = hold_frame(h, mr->fd, (bs + i) * MV_PAGE_SIZE, err);
		if (r == 0)
			memcpy(buf + i * MV_PAGE_SIZE, base + i * MV_PAGE_SIZE, MV_PAGE_SIZE);
	}
	/* Punch runs of held pages (the whole block when none was busy). */
	for (uint64_t i = 0; i < n && r == 0;) {
		if (!held[i]) {
			i++;
			continue;
		}
		uint64_t j = i;
		while (j < n && held[j])
			j++;
		if (fallocate(mr->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)((bs + i) * MV_PAGE_SIZE), (off_t)((j - i) * MV_PAGE_SIZE)) < 0)
			r = mv_err(err, -errno, "punching gpa 0x%llx: %s",
				   (unsigned long long)(mr->gpa + (bs + i) * MV_PAGE_SIZE),
				   strerror(errno));
		for (uint64_t k = i; k < j && r == 0; k++) {
			/* Faults in the new frame, marks the page dirty. */
			memcpy(base + k * MV_PAGE_SIZE, buf + k * MV_PAGE_SIZE, MV_PAGE_SIZE);
			out->moved += bs + k >= first && bs + k < end;
		}
		i = j;
	}
	for (uint64_t i = 0; i < n; i++)
		if (held[i])
			vmm_fusion_unhold(v, mr->gpa + (bs + i) * MV_PAGE_SIZE);
	return r;
}

int vmm_relocate(struct vmm *v, const struct mv_ctl_relocate *req,
		 struct mv_ctl_relocate_reply *out, struct mv_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!v->ready || !v->mem || !v->vcpus)
		return mv_err(err, -ENODEV, "VM not set up");
	pthread_mutex_lock(&v->lock);
	bool migrating = v->migrating;
	pthread_mutex_unlock(&v->lock);
	if (migrating)
		return mv_err(err, -EBUSY, "an outgoing migration owns guest memory");
	const struct mv_mem_region *mr = NULL;
	for (unsigned i = 0; i < mv_guest_mem_nregions(v->mem); i++) {
		const struct mv_mem_region *c = mv_guest_mem_region(v->mem, i);
		if (req->gpa >= c->gpa && req->gpa - c->gpa < c->size &&
		    req->len <= c->size - (req->gpa - c->gpa))
			mr = c;
	}
	if (!mr)
		return mv_err(err, -EINVAL, "range 0x%llx+0x%llx is not inside one RAM region",
			      (unsigned long long)req->gpa, (unsigned long long)req->len);
	if (mr->flags & MV_MEM_HUGETLB)
		return mv_err(err, -EOPNOTSUPP, "range 0x%llx is in a hugetlb region",
			      (unsigned long long)req->gpa);
	uint8_t *buf = malloc(BLOCK_PAGES * MV_PAGE_SIZE);
	if (!buf)
		abort();
	vmm_fusion_ensure(v);   /* the moved pages are marked: never fused again */
	uint64_t t0 = mv_now_ns();
	bool running = v->state == MV_VMM_RUNNING;
	if (running)
		mv_vcpus_pause(v->vcpus);
	int r = 0;
	struct reloc_hold h = {.wr = -1};
	uint64_t first = (req->gpa - mr->gpa) / MV_PAGE_SIZE, end = first + req->len / MV_PAGE_SIZE;
	uint64_t rpages = mr->size / MV_PAGE_SIZE;
	for (uint64_t bs = first & ~(uint64_t)(BLOCK_PAGES - 1); bs < end && r == 0;
	     bs += BLOCK_PAGES)
		r = reloc_block(v, mr, bs, bs + BLOCK_PAGES < rpages ? bs + BLOCK_PAGES : rpages, first,
				end, buf, &h, out, err);
	if (r == 0 && lock_range(SYS_mlock, mr->hva + (req->gpa - mr->gpa), req->len) < 0)
		r = mv_err(err, -errno, "mlock: %s", strerror(errno));
	hold_release(&h);   /* the old frames go: every new one exists */
	if (running)
		mv_vcpus_resume(v->vcpus);
	out->elapsed_us = (mv_now_ns() - t0) / 1000;
	free(buf);
	return r;
}
