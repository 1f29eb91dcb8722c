/* The idle workload: a vCPU that never runs an op. step() returns 0 so the
 * vCPU thread parks on its condition variable instead of spinning. Used
 * through mv_wl_ops_of(MV_WL_IDLE). */
#include <errno.h>
#include "vm_i.h"

static int idle_init(struct mv_wl_state *st, struct mv_guest_mem *m, struct mv_error **err)
{
	st->ops_done = 0;
	return 0;
}

static int64_t idle_step(struct mv_wl_state *st, struct mv_guest_mem *m, uint64_t max_ops)
{
	return 0;
}

static int idle_verify(const struct mv_wl_state *st, struct mv_guest_mem *m,
		       struct mv_error **err)
{
	if (st->kind != MV_WL_IDLE || st->ops_done != 0)
		return mv_err(err, -EIO, "vcpu %u: idle state is corrupt (kind %u, %llu ops done)",
			      st->vcpu, st->kind, (unsigned long long)st->ops_done);
	return 0;
}

const struct mv_wl_ops mv_wl_idle_ops = {
	.name = "idle",
	.init = idle_init,
	.step = idle_step,
	.verify = idle_verify,
};
