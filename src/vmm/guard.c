/* memvisor-vmm's part of the side-channel guard (control message GUARD):
 * mlocks a sensitive guest range so its pages get frames that stay resident
 * (mlock populates them), and tells the daemon where guest RAM is mapped so it
 * can read the frames from /proc/PID/pagemap. mlock keeps pages resident, not
 * in place: the kernel may still migrate them (compaction of unevictable
 * pages, NUMA balancing), and a fusion swap or copy-on-write break replaces
 * the page's mapping with an unlocked one; the daemon therefore re-locks and
 * re-reads the frames on every guard check. */
#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "vmm_i.h"

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
	/* The raw syscalls: sanitizer runtimes turn mlock() into a silent no-op. */
	long r = syscall(req->op == MV_GUARD_OP_LOCK ? SYS_mlock : SYS_munlock, hva, req->len);
	if (r < 0)
		return mv_err(err, -errno, "%s: %s", req->op == MV_GUARD_OP_LOCK ? "mlock" : "munlock",
			      strerror(errno));
	return 0;
}
