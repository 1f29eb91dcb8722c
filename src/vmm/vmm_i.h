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
	bool sampler_armed;              /* the sampler tried to arm the dirty log */
	struct vmm_fusion *fusion;       /* fusion.c; NULL until the first FUSE */
	pthread_cond_t sampler_cv;
	uint64_t dirty_total;
	uint64_t dirty_rate_milli;
	bool migrating;                  /* an outgoing migration owns vCPUs and dirty log */
	bool syncing;                    /* the sampler is in a dirty sync (outside lock) */
	pthread_cond_t sync_done;
	/* Outgoing migration (migration.c); mig_lock guards the progress fields. */
	pthread_mutex_t mig_lock;
	pthread_t mig_thread;
	bool mig_thread_live;
	int mig_sock;
	struct mv_migrate_opts mig_opts;
	char mig_name[64];
	struct mv_migrate_tenant mig_tenant;   /* goes out in CONFIG */
	struct mv_migrate_progress mig;
	uint32_t mig_result;             /* 0 running, 1 done, 2 failed (as in STATUS) */
	char mig_error[256];
	bool mig_cancel;
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

/* vm_state.c: starts the dirty-log sampler (which arms the log first). */
void vmm_start_sampler(struct vmm *v);
/* Takes the dirty log from the sampler for a migration (waits out a sync). */
void vmm_dirty_claim(struct vmm *v);

/* migration.c */
int vmm_migrate_out(struct vmm *v, const struct mv_ctl_migrate_out *o, int sock,
		    struct mv_error **err);
int vmm_migrate_in(struct vmm *v, const struct mv_ctl_migrate_in *in, const int *fds,
		   unsigned nfds, struct mv_error **err);
void vmm_migrate_cancel(struct vmm *v);
/* Fills the migration part of STATUS. */
void vmm_migrate_status(struct vmm *v, struct mv_ctl_status *out);
/* True while an outgoing migration runs: other requests must wait. */
bool vmm_migrate_busy(struct vmm *v);
void vmm_migrate_join(struct vmm *v);

/* fusion.c: page fusion's merges and copy-on-write (see there). */
struct vmm_fusion;
/* Installs the SIGSEGV handler (chaining to the one before it): once, early. */
int vmm_fusion_install(void);
/* pool_fd: -1 or a read-only pool descriptor, consumed either way. */
int vmm_fusion_fuse(struct vmm *v, const struct mv_ctl_fuse *req, int pool_fd,
		    struct mv_ctl_fuse_reply *out, struct mv_error **err);
/* Copies every fused page back into guest RAM; 0 when none is left. */
int vmm_fusion_unfuse_all(struct vmm *v, struct mv_ctl_unfuse *out);
/* SAMPLE: ends the trapped window (reports it), arms the next. */
int vmm_fusion_sample(struct vmm *v, const struct mv_ctl_sample *req, struct mv_ctl_sample_reply *out);
void vmm_fusion_set_log(struct vmm *v, struct mv_dirty_log *log);
/* Creates the per-page fusion state if no FUSE came yet. */
void vmm_fusion_ensure(struct vmm *v);
/* Claims guest page gpa against fusion (state NONE or KEEP -> BUSY): false
 * when it is fused or busy; true (nothing to release) when fusion never ran
 * there. Unhold leaves it KEEP: moved by the guard, never fused again. */
bool vmm_fusion_hold(struct vmm *v, uint64_t gpa);
void vmm_fusion_unhold(struct vmm *v, uint64_t gpa);
/* Copies fused guest page gpa back into its memfd (a new frame there) and
 * maps it read-write: 1 done, 0 it was not fused, -errno. */
int vmm_fusion_unfuse_page(struct vmm *v, uint64_t gpa);
/* With the vCPUs stopped: frees the fusion state. */
void vmm_fusion_teardown(struct vmm *v);

/* ctl_server.c: serves daemon connections until STOP; returns the exit code. */
/* guard.c: GUARD (mlock/munlock a sensitive range, region HVAs). */
int vmm_guard(struct vmm *v, const struct mv_ctl_guard *req, struct mv_ctl_guard_reply *out,
	      struct mv_error **err);
/* Moves the resident pages of a guest range to fresh frames (RELOCATE). */
int vmm_relocate(struct vmm *v, const struct mv_ctl_relocate *req,
		 struct mv_ctl_relocate_reply *out, struct mv_error **err);

int vmm_serve(struct vmm *v);

#endif
