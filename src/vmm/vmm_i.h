/* memvisor-vmm internals: one VM per process. The control server (ctl_server.c)
 * drives the VM state (vm_state.c); main.c wires flags and the exit monitor. */
#ifndef MEMVISOR_VMM_I_H
#define MEMVISOR_VMM_I_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include "memvisor/ctl.h"
#include "memvisor/mem.h"
#include "memvisor/vm.h"

struct vmm {
	char id[24];
	const char *ctl_path;
	pthread_mutex_t lock;            /* guards everything below against the sampler */
	enum mv_vmm_state state;
	bool ready;                      /* SETUP applied */
	uint32_t nvcpus;
	struct mv_wl_params wl;
	struct mv_guest_mem *mem;
	struct mv_vcpus *vcpus;
	struct mv_dirty_log *dirty;
	pthread_t sampler;
	bool sampler_running;
	bool sampler_quit;
	pthread_cond_t sampler_cv;
	uint64_t dirty_total;
	uint64_t dirty_rate_milli;
};

/* vm_state.c */
int vmm_setup(struct vmm *v, const struct mv_ctl_setup *s, const int *fds, unsigned nfds,
	      struct mv_error **err);
void vmm_status(struct vmm *v, struct mv_ctl_status *out);
/* Pauses the vCPUs and copies their states: the first half of a hand-over. */
int vmm_save_state(struct vmm *v, struct mv_ctl_states *out);
int vmm_pause(struct vmm *v);
int vmm_resume(struct vmm *v);
void vmm_verify(struct vmm *v, struct mv_ctl_verify *out);
int vmm_get_mem(struct vmm *v, struct mv_ctl_mem *out, int *fds, unsigned *nfds);
void vmm_teardown(struct vmm *v);

/* ctl_server.c: serves daemon connections until STOP; returns the exit code. */
int vmm_serve(struct vmm *v);

#endif
