/* memvisor-vmm's ends of a live migration between hosts (the stream itself is
 * src/migrate/). Outgoing: a thread runs mv_migrate_send over the socket the
 * daemon connected, using the VM's own dirty log; STATUS reports its progress.
 * Incoming: MIGRATE_IN maps the daemon's fresh memfds and receives the VM. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "vmm_i.h"

static int progress(const struct mv_migrate_progress *p, void *ctx)
{
	struct vmm *v = ctx;
	pthread_mutex_lock(&v->mig_lock);
	v->mig = *p;
	int cancel = v->mig_cancel;
	pthread_mutex_unlock(&v->mig_lock);
	return cancel;
}

static void *send_main(void *arg)
{
	struct vmm *v = arg;
	struct mv_migrate_config cfg;
	struct mv_error *err = NULL;
	mv_migrate_config_init(&cfg, v->mem, v->nvcpus, &v->wl, v->mig_name);
	cfg.tenant = v->mig_tenant;
	int r = mv_migrate_send(v->mig_sock, v->mem, v->dirty, v->vcpus, &cfg, &v->mig_opts,
				progress, v, &err);
	close(v->mig_sock);
	v->mig_sock = -1;
	pthread_mutex_lock(&v->mig_lock);
	v->mig_result = r == 0 ? 1 : 2;
	v->mig.phase = r == 0 ? MV_MIGRATE_DONE : MV_MIGRATE_FAILED;
	if (r < 0)
		snprintf(v->mig_error, sizeof(v->mig_error), "%s", mv_error_msg(err, r));
	pthread_mutex_unlock(&v->mig_lock);
	if (r == 0) {
		/* The VM lives at the destination now; its vCPUs stay parked here. */
		v->state = MV_VMM_PAUSED;
		mv_log(MV_LOG_INFO, "vm %s: migrated out, downtime %llu us", v->id,
		       (unsigned long long)v->mig.downtime_us);
	} else {
		mv_log(MV_LOG_WARN, "vm %s: migration failed, VM runs on here: %s", v->id,
		       v->mig_error);
		pthread_mutex_lock(&v->lock);
		v->migrating = false;   /* the sampler may use the dirty log again */
		pthread_mutex_unlock(&v->lock);
	}
	mv_error_free(err);
	return NULL;
}

int vmm_migrate_out(struct vmm *v, const struct mv_ctl_migrate_out *out, int sock,
		    struct mv_error **err)
{
	if (!v->ready)
		return mv_err(err, -ENODEV, "VM not set up");
	if (vmm_migrate_busy(v) || v->mig_result == 1)
		return mv_err(err, -EBUSY, "a migration is already under way or done");
	vmm_migrate_join(v);
	/* The stream reads the memfds (holes skipped): fused pages must be in them. */
	struct mv_ctl_unfuse u;
	if (vmm_fusion_unfuse_all(v, &u) < 0)
		return mv_err(err, -EIO, "cannot copy fused pages back before migrating");
	vmm_dirty_claim(v);
	const struct mv_ctl_migrate_opts *o = &out->opts;
	v->mig_tenant = out->tenant;
	v->mig_opts = (struct mv_migrate_opts){
		.features = o->features, .downtime_ms = o->downtime_ms, .max_passes = o->max_passes,
		.postcopy_after = o->postcopy_after, .zstd_level = o->zstd_level,
		.max_bandwidth = o->max_bandwidth};
	snprintf(v->mig_name, sizeof(v->mig_name), "%s", o->vm_name);
	pthread_mutex_lock(&v->mig_lock);
	memset(&v->mig, 0, sizeof(v->mig));
	v->mig_result = 0;
	v->mig_error[0] = '\0';
	v->mig_cancel = false;
	pthread_mutex_unlock(&v->mig_lock);
	v->mig_sock = sock;
	int r = pthread_create(&v->mig_thread, NULL, send_main, v);
	if (r != 0) {
		v->migrating = false;
		return mv_err(err, -r, "migration thread: %s", strerror(r));
	}
	v->mig_thread_live = true;
	return 0;
}

bool vmm_migrate_busy(struct vmm *v)
{
	pthread_mutex_lock(&v->mig_lock);
	bool busy = v->mig_thread_live && v->mig_result == 0;
	pthread_mutex_unlock(&v->mig_lock);
	return busy;
}

void vmm_migrate_cancel(struct vmm *v)
{
	pthread_mutex_lock(&v->mig_lock);
	v->mig_cancel = true;
	pthread_mutex_unlock(&v->mig_lock);
}

void vmm_migrate_join(struct vmm *v)
{
	if (!v->mig_thread_live)
		return;
	vmm_migrate_cancel(v);
	pthread_join(v->mig_thread, NULL);
	v->mig_thread_live = false;
}

void vmm_migrate_status(struct vmm *v, struct mv_ctl_status *out)
{
	pthread_mutex_lock(&v->mig_lock);
	out->migrating = v->mig_thread_live;
	out->mig_result = v->mig_result;
	out->mig = v->mig;
	snprintf(out->mig_error, sizeof(out->mig_error), "%s", v->mig_error);
	pthread_mutex_unlock(&v->mig_lock);
}

int vmm_migrate_in(struct vmm *v, const struct mv_ctl_migrate_in *in, const int *fds,
		   unsigned nfds, struct mv_error **err)
{
	if (v->ready)
		return mv_err(err, -EALREADY, "VM is already set up");
	const struct mv_migrate_config *cfg = &in->cfg;
	struct mv_mem_layout l = {.n = cfg->nregions};
	for (uint32_t i = 0; i < cfg->nregions && i + 1 < nfds; i++)
		l.r[i] = (struct mv_mem_region_desc){.gpa = cfg->regions[i].gpa,
						     .size = cfg->regions[i].size,
						     .flags = cfg->regions[i].flags, .fd = fds[i]};
	int sock = fds[nfds - 1];
	int r = mv_mem_layout_validate(&l, true, err);
	if (r == 0)
		r = mv_wl_params_validate(&cfg->wl, mv_mem_layout_ram_size(&l), cfg->nvcpus, err);
	if (r == 0)
		r = mv_guest_mem_map(&l, &v->mem, err);
	if (r == 0 && (cfg->tenant.flags & MV_MIGRATE_TENANT_FUSION))
		mv_guest_mem_no_thp(v->mem);   /* as SETUP does: fusion merges 4 KiB pages */
	if (r < 0) {
		if (mv_migrate_send_nack(sock, r, err && *err ? (*err)->msg : "refused") < 0)
			mv_log(MV_LOG_WARN, "vm %s: NACK not sent", v->id);
		return r;
	}
	struct mv_migrate_opts o = {.features = in->opts.features,
				    .downtime_ms = in->opts.downtime_ms};
	uint64_t t0 = mv_now_ns();
	r = mv_migrate_recv(sock, v->mem, cfg, &o, &v->vcpus, NULL, NULL, err);
	if (r < 0) {
		mv_guest_mem_unmap(v->mem);
		v->mem = NULL;
		return r;
	}
	v->nvcpus = cfg->nvcpus;
	v->wl = cfg->wl;
	v->state = MV_VMM_RUNNING;
	v->ready = true;
	vmm_start_sampler(v);
	char sz[32];
	mv_log(MV_LOG_INFO, "vm %s: migrated in (%s of guest RAM, %u vCPUs) in %llu ms", v->id,
	       mv_fmt_size(mv_guest_mem_ram_size(v->mem), sz, sizeof(sz)), cfg->nvcpus,
	       (unsigned long long)((mv_now_ns() - t0) / 1000000));
	return 0;
}
