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
	/* The raw syscalls: sanitizer runtimes turn mlock() into a silent no-op. */
	long r = syscall(req->op == MV_GUARD_OP_LOCK ? SYS_mlock : SYS_munlock, hva, req->len);
	if (r < 0)
		return mv_err(err, -errno, "%s: %s", req->op == MV_GUARD_OP_LOCK ? "mlock" : "munlock",
			      strerror(errno));
	return 0;
}

/* RELOCATE: moves the resident pages of a guest range to fresh frames (the
 * guard's "move" response: an attacker who learned where the victim's data
 * sits in physical memory loses it). With the vCPUs paused, per page: a
 * splice into a pipe takes a reference on the old frame (so the kernel
 * cannot hand the same frame straight back), the bytes are copied aside,
 * the memfd page is punched and the copy written back through the guest
 * mapping, which faults in a new frame. The write goes through the mapping
 * so every dirty-log backend records the page as written; the range is
 * mlocked again (raw syscall: sanitizers make mlock() a no-op). The old
 * frames are released when the pipe closes, after all the new ones exist.
 * A fused page (on a pool page, not in the memfd) is copied back into the
 * memfd instead, as a guest write would: a new frame of its own. Moved pages
 * stay out of fusion from then on (a merge would put them back on a shared
 * pool frame). */
#define RELOC_CHUNK 256   /* pages whose old frames one pipe holds */

static int reloc_chunk(struct vmm *v, const struct mv_mem_region *mr, uint64_t first,
		       uint64_t npages, uint8_t *buf, uint64_t *moved, uint64_t *skipped,
		       uint64_t *handled, struct mv_error **err)
{
	*handled = npages;
	int pp[2];
	if (pipe2(pp, O_CLOEXEC | O_NONBLOCK) < 0)
		return mv_err(err, -errno, "pipe: %s", strerror(errno));
	(void)fcntl(pp[1], F_SETPIPE_SZ, (int)(npages * MV_PAGE_SIZE));
	int r = 0;
	unsigned char vec[RELOC_CHUNK];
	uint8_t *base = mr->hva + first * MV_PAGE_SIZE;
	if (mincore(base, npages * MV_PAGE_SIZE, vec) < 0) {
		r = mv_err(err, -errno, "mincore: %s", strerror(errno));
		goto out;
	}
	for (uint64_t i = 0; i < npages; i++) {
		if (!(vec[i] & 1))
			continue;   /* no frame to move */
		uint64_t gpa = mr->gpa + (first + i) * MV_PAGE_SIZE;
		/* A fused page sits on a pool frame other VMs map too: copying it
		 * back into the memfd gives it a frame of its own, a fresh one. */
		int u = vmm_fusion_unfuse_page(v, gpa);
		if (u < 0) {
			r = mv_err(err, u, "unfusing gpa 0x%llx: %s", (unsigned long long)gpa,
				   strerror(-u));
			goto out;
		}
		if (u > 0) {
			(*moved)++;
			continue;
		}
		if (!vmm_fusion_hold(v, gpa)) {
			(*skipped)++;
			continue;
		}
		uint8_t *hva = base + i * MV_PAGE_SIZE;
		loff_t at = (loff_t)((first + i) * MV_PAGE_SIZE), off = at;
		ssize_t s = splice(mr->fd, &off, pp[1], NULL, MV_PAGE_SIZE, SPLICE_F_NONBLOCK);
		if (s != (ssize_t)MV_PAGE_SIZE) {
			vmm_fusion_unhold(v, gpa);
			if (s < 0 && errno == EAGAIN && i > 0) {
				*handled = i;   /* the pipe is full: the caller goes on from here */
				break;
			}
			r = mv_err(err, s < 0 ? -errno : -EIO, "splice gpa 0x%llx: %s",
				   (unsigned long long)gpa, s < 0 ? strerror(errno) : "short");
			goto out;
		}
		memcpy(buf, hva, MV_PAGE_SIZE);
		if (fallocate(mr->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)at,
			      MV_PAGE_SIZE) < 0) {
			r = mv_err(err, -errno, "punching gpa 0x%llx: %s", (unsigned long long)gpa,
				   strerror(errno));
			vmm_fusion_unhold(v, gpa);
			goto out;
		}
		memcpy(hva, buf, MV_PAGE_SIZE);   /* faults in the new frame, marks it dirty */
		vmm_fusion_unhold(v, gpa);
		(*moved)++;
	}
out:
	close(pp[0]);
	close(pp[1]);
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
	uint8_t *buf = malloc(MV_PAGE_SIZE);
	if (!buf)
		abort();
	vmm_fusion_ensure(v);   /* the moved pages are marked: never fused again */
	uint64_t t0 = mv_now_ns();
	bool running = v->state == MV_VMM_RUNNING;
	if (running)
		mv_vcpus_pause(v->vcpus);
	int r = 0;
	uint64_t first = (req->gpa - mr->gpa) / MV_PAGE_SIZE, end = first + req->len / MV_PAGE_SIZE;
	for (uint64_t p = first; p < end && r == 0;) {
		uint64_t n = end - p > RELOC_CHUNK ? RELOC_CHUNK : end - p;
		uint64_t done = n;
		/* A full pipe stops a chunk early: go on after the last page handled. */
		r = reloc_chunk(v, mr, p, n, buf, &out->moved, &out->skipped, &done, err);
		p += done;
	}
	if (r == 0 && syscall(SYS_mlock, mr->hva + (req->gpa - mr->gpa), req->len) < 0)
		r = mv_err(err, -errno, "mlock: %s", strerror(errno));
	if (running)
		mv_vcpus_resume(v->vcpus);
	out->elapsed_us = (mv_now_ns() - t0) / 1000;
	free(buf);
	return r;
}
