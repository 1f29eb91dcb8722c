/* The VM inside memvisor-vmm: maps guest RAM from the daemon's memfds, runs the
 * vCPUs, samples the dirty log once a second for the dirty-page rate. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "vmm_i.h"

#define SAMPLE_NS 1000000000ULL

/* Arms and syncs the dirty log without holding v->lock: arming write-protects
 * every mapped page (~100 ms for 4 GiB) and a sync takes milliseconds, and
 * neither may delay SETUP or a hand-over's health check (STATUS) - that
 * would be downtime growing with guest size. */
static void *sampler_main(void *arg)
{
	struct vmm *v = arg;
	struct mv_dirty_log *log = NULL;
	struct mv_error *err = NULL;
	int r = mv_dirty_start(v->mem, MV_DIRTY_AUTO, &log, &err);
	pthread_mutex_lock(&v->lock);
	v->dirty = r == 0 ? log : NULL;
	v->sampler_armed = true;
	pthread_cond_broadcast(&v->sync_done);
	vmm_fusion_set_log(v, v->dirty);
	if (r < 0) {
		mv_log(MV_LOG_WARN, "vm %s: no dirty log: %s", v->id, mv_error_msg(err, r));
		mv_error_free(err);
		pthread_mutex_unlock(&v->lock);
		return NULL;
	}
	mv_log(MV_LOG_INFO, "vm %s: dirty log: %s", v->id,
	       mv_dirty_backend_name(mv_dirty_backend_of(v->dirty)));
	uint64_t last = mv_now_ns();
	while (!v->sampler_quit) {
		struct timespec ts;
		mv_deadline_ms(&ts, CLOCK_MONOTONIC, SAMPLE_NS / 1000000);
		pthread_cond_timedwait(&v->sampler_cv, &v->lock, &ts);
		if (v->sampler_quit)
			break;
		if (v->migrating)
			continue;   /* the migration owns the dirty log now */
		uint64_t n = 0, now = mv_now_ns();
		err = NULL;
		v->syncing = true;
		pthread_mutex_unlock(&v->lock);
		r = mv_dirty_sync(v->dirty, &n, &err);
		pthread_mutex_lock(&v->lock);
		v->syncing = false;
		pthread_cond_broadcast(&v->sync_done);
		if (r < 0) {
			mv_log(MV_LOG_WARN, "dirty sync: %s", mv_error_msg(err, r));
			mv_error_free(err);
			continue;
		}
		uint64_t dt = now - last > 0 ? now - last : 1;
		last = now;
		v->dirty_total += n;
		v->dirty_rate_milli = n * 1000ULL * SAMPLE_NS / dt;
	}
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

void vmm_dirty_claim(struct vmm *v)
{
	pthread_mutex_lock(&v->lock);
	v->migrating = true;
	while (v->syncing || (v->sampler_running && !v->sampler_armed))
		pthread_cond_wait(&v->sync_done, &v->lock);
	pthread_mutex_unlock(&v->lock);
}

void vmm_start_sampler(struct vmm *v)
{
	v->sampler_quit = false;
	if (pthread_create(&v->sampler, NULL, sampler_main, v) == 0)
		v->sampler_running = true;
}

/* Each vCPU's slice must lie in guest RAM: states may come from elsewhere. */
static int check_states(struct vmm *v, const struct mv_wl_state *st, uint32_t n,
			struct mv_error **err)
{
	for (uint32_t i = 0; i < n; i++)
		if (st[i].gpa_len && !mv_gpa_to_hva(v->mem, st[i].gpa_base, st[i].gpa_len))
			return mv_err(err, -EINVAL, "vCPU %u state: slice 0x%llx+0x%llx is not guest RAM",
				      i, (unsigned long long)st[i].gpa_base,
				      (unsigned long long)st[i].gpa_len);
	return 0;
}

int vmm_setup(struct vmm *v, const struct mv_ctl_setup *s, const int *fds, unsigned nfds,
	      struct mv_error **err)
{
	if (v->ready)
		return mv_err(err, -EALREADY, "VM is already set up");
	struct mv_mem_layout l = {.n = s->nregions};
	for (unsigned i = 0; i < s->nregions && i < nfds; i++) {
		l.r[i].gpa = s->regions[i].gpa;
		l.r[i].size = s->regions[i].size;
		l.r[i].flags = s->regions[i].flags;
		l.r[i].fd = fds[i];
	}
	int r = mv_mem_layout_validate(&l, true, err);
	if (r < 0)
		return r;
	r = mv_wl_params_validate(&s->wl, mv_mem_layout_ram_size(&l), s->nvcpus, err);
	if (r < 0)
		return r;
	r = mv_guest_mem_map(&l, &v->mem, err);
	if (r < 0)
		return r;
	if (s->no_thp)
		mv_guest_mem_no_thp(v->mem);
	/* Static: 64 vCPU states are too big for the control thread's stack frame. */
	static struct mv_wl_state states[MV_MAX_VCPUS];
	if (s->resume) {
		memcpy(states, s->states, sizeof(states[0]) * s->nvcpus);
		r = check_states(v, states, s->nvcpus, err);
	} else {
		r = mv_wl_states_init(&s->wl, &l, s->nvcpus, states, err);
		const struct mv_wl_ops *ops = mv_wl_ops_of(s->wl.kind);
		for (uint32_t i = 0; r == 0 && i < s->nvcpus; i++)
			r = ops->init(&states[i], v->mem, err);
	}
	if (r < 0)
		goto fail_mem;
	r = mv_vcpus_start(v->mem, mv_exec_native(), states, s->nvcpus, s->start_paused, &v->vcpus,
			   err);
	if (r < 0)
		goto fail_mem;
	v->nvcpus = s->nvcpus;
	v->wl = s->wl;
	v->state = s->start_paused ? MV_VMM_PAUSED : MV_VMM_RUNNING;
	v->ready = true;
	if (s->dirty_tracking)
		vmm_start_sampler(v);
	char sz[32];
	mv_log(MV_LOG_INFO, "vm %s: %s of guest RAM in %u region(s), %u vCPU(s) %s %s", v->id,
	       mv_fmt_size(mv_guest_mem_ram_size(v->mem), sz, sizeof(sz)), l.n, s->nvcpus,
	       s->resume ? "resuming" : "starting", mv_wl_kind_name(s->wl.kind));
	return 0;
fail_mem:
	mv_guest_mem_unmap(v->mem);
	v->mem = NULL;
	return r;
}

int vmm_save_state(struct vmm *v, struct mv_ctl_states *out)
{
	memset(out, 0, sizeof(*out));
	if (!v->ready)
		return -ENODEV;
	enum mv_vmm_state before = v->state;
	mv_vcpus_pause(v->vcpus);
	v->state = MV_VMM_PAUSED;
	/* The next VMM maps only the memfds: fused pages must be in them. */
	struct mv_ctl_unfuse u;
	if (vmm_fusion_unfuse_all(v, &u) < 0) {
		if (before == MV_VMM_RUNNING) {
			mv_vcpus_resume(v->vcpus);
			v->state = MV_VMM_RUNNING;
		}
		return -EIO;
	}
	mv_vcpus_get_states(v->vcpus, out->states);
	out->nvcpus = v->nvcpus;
	return 0;
}

void vmm_status(struct vmm *v, struct mv_ctl_status *out)
{
	memset(out, 0, sizeof(*out));
	out->state = v->state;
	out->nvcpus = v->nvcpus;
	if (v->vcpus) {
		struct mv_vcpus_stats st;
		mv_vcpus_get_stats(v->vcpus, &st);
		out->ops_done = st.ops_done;
		memcpy(out->wl_aux, st.aux, sizeof(out->wl_aux));
		out->throttle_pct = (uint32_t)st.throttle_pct;
	}
	pthread_mutex_lock(&v->lock);
	out->dirty_pages_total = v->dirty_total;
	out->dirty_rate_milli = v->dirty_rate_milli;
	if (v->dirty)
		snprintf(out->dirty_backend, sizeof(out->dirty_backend), "%s",
			 mv_dirty_backend_name(mv_dirty_backend_of(v->dirty)));
	pthread_mutex_unlock(&v->lock);
}

int vmm_pause(struct vmm *v)
{
	if (!v->ready)
		return -ENODEV;
	if (v->state == MV_VMM_PAUSED)
		return -EALREADY;
	mv_vcpus_pause(v->vcpus);
	v->state = MV_VMM_PAUSED;
	return 0;
}

int vmm_resume(struct vmm *v)
{
	if (!v->ready)
		return -ENODEV;
	if (v->state == MV_VMM_RUNNING)
		return -EALREADY;
	mv_vcpus_resume(v->vcpus);
	v->state = MV_VMM_RUNNING;
	return 0;
}

void vmm_verify(struct vmm *v, struct mv_ctl_verify *out)
{
	memset(out, 0, sizeof(*out));
	if (!v->ready) {
		snprintf(out->message, sizeof(out->message), "VM not set up");
		return;
	}
	uint64_t t0 = mv_now_ns();
	struct mv_error *err = NULL;
	int r = mv_vcpus_verify(v->vcpus, &err);
	out->elapsed_us = (mv_now_ns() - t0) / 1000;
	struct mv_vcpus_stats st;
	mv_vcpus_get_stats(v->vcpus, &st);
	out->ops_done = st.ops_done;
	out->ok = r == 0;
	if (r < 0)
		snprintf(out->message, sizeof(out->message), "%s", mv_error_msg(err, r));
	mv_error_free(err);
}

int vmm_get_mem(struct vmm *v, struct mv_ctl_mem *out, int *fds, unsigned *nfds)
{
	memset(out, 0, sizeof(*out));
	if (!v->ready)
		return -ENODEV;
	unsigned n = mv_guest_mem_nregions(v->mem);
	for (unsigned i = 0; i < n; i++) {
		const struct mv_mem_region *r = mv_guest_mem_region(v->mem, i);
		out->regions[i] = (struct mv_ctl_region){.gpa = r->gpa, .size = r->size, .flags = r->flags};
		fds[i] = r->fd;
	}
	out->nregions = n;
	*nfds = n;
	return 0;
}

void vmm_teardown(struct vmm *v)
{
	vmm_migrate_join(v);
	if (v->sampler_running) {
		pthread_mutex_lock(&v->lock);
		v->sampler_quit = true;
		pthread_cond_signal(&v->sampler_cv);
		pthread_mutex_unlock(&v->lock);
		pthread_join(v->sampler, NULL);
		v->sampler_running = false;
	}
	if (v->vcpus)
		mv_vcpus_stop(v->vcpus);
	v->vcpus = NULL;
	vmm_fusion_set_log(v, NULL);
	if (v->dirty)
		mv_dirty_stop(v->dirty);
	v->dirty = NULL;
	vmm_fusion_teardown(v);
	if (v->mem)
		mv_guest_mem_unmap(v->mem);
	v->mem = NULL;
	v->ready = false;
}
