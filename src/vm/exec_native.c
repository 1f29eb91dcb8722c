/* The native execution backend: a vCPU "executes" by running its workload's
 * step() as host code directly on guest RAM. A KVM backend would provide the
 * same run() entering the guest with KVM_RUN. Used by memvisor-vmm. */
#include <errno.h>
#include "memvisor/vm.h"

static int64_t native_run(struct mv_wl_state *st, struct mv_guest_mem *m, uint64_t max_ops)
{
	const struct mv_wl_ops *ops = mv_wl_ops_of(st->kind);
	if (!ops)
		return -EINVAL;
	return ops->step(st, m, max_ops);
}

static const struct mv_exec_backend native_backend = {
	.name = "native",
	.run = native_run,
};

const struct mv_exec_backend *mv_exec_native(void)
{
	return &native_backend;
}
