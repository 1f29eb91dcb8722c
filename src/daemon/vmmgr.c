/* The VM manager behind the API: admits VMs against the host's memory,
 * allocates their guest RAM, starts and re-adopts VMM processes, and keeps
 * SQLite in step. One lock serializes it; control calls run under it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "daemon_i.h"

#define SETUP_TIMEOUT_MS 15000
#define CALL_TIMEOUT_MS 10000
#define VERIFY_TIMEOUT_MS (10 * 60 * 1000)

static bool holds_memory(enum mv_vm_state s)
{
	return s == MV_VM_CREATING || s == MV_VM_RUNNING || s == MV_VM_PAUSED ||
	       s == MV_VM_MIGRATING || s == MV_VM_INCOMING;
}

uint64_t vmmgr_used(struct vmmgr *m)
{
	uint64_t used = 0;
	for (size_t i = 0; i < m->nvms; i++)
		if (holds_memory(m->vms[i]->info.state))
			used += m->vms[i]->info.memory;
	return used;
}

/* An id wins over a name that happens to look like one. */
static struct dvm *find(struct vmmgr *m, const char *ref)
{
	for (size_t i = 0; i < m->nvms; i++)
		if (!strcmp(m->vms[i]->info.id, ref))
			return m->vms[i];
	for (size_t i = 0; i < m->nvms; i++)
		if (!strcmp(m->vms[i]->info.name, ref))
			return m->vms[i];
	return NULL;
}

static struct dvm *find_or_err(struct vmmgr *m, const char *ref, struct mv_error **err)
{
	struct dvm *vm = find(m, ref);
	if (!vm)
		mv_err(err, -ENOENT, "no VM with id or name '%s'", ref);
	return vm;
}

struct dvm *vmmgr_find(struct vmmgr *m, const char *ref, struct mv_error **err)
{
	return find_or_err(m, ref, err);
}

struct dvm *vmmgr_vm_new(struct vmmgr *m, const struct mv_vm_info *info)
{
	struct dvm *vm = calloc(1, sizeof(*vm));
	if (!vm)
		abort();
	vm->info = *info;
	vm->ctl = -1;
	vm->fkey = ++m->next_fkey;
	snprintf(vm->dir, sizeof(vm->dir), "%s/vms/%s", m->cfg.state_dir, info->id);
	m->vms = mv_grow(m->vms, m->nvms, &m->cap, sizeof(*m->vms), 16);
	m->vms[m->nvms++] = vm;
	return vm;
}

static void vm_release(struct dvm *vm)
{
	if (vm->ctl >= 0)
		close(vm->ctl);
	vm->ctl = -1;
	mv_mem_layout_close(&vm->mem);
	memset(&vm->mem, 0, sizeof(vm->mem));
	vm->info.ops_done = vm->info.resident_bytes = 0;
	vm->info.dirty_rate = 0;
}

void vmmgr_vm_free(struct vmmgr *m, struct dvm *vm)
{
	fusion_vm_forget(m, vm);
	vm_release(vm);
	for (size_t i = 0; i < m->nvms; i++) {
		if (m->vms[i] == vm) {
			m->vms[i] = m->vms[--m->nvms];
			break;
		}
	}
	free(vm);
}

void vmmgr_vm_exited(struct vmmgr *m, struct dvm *vm)
{
	bool known = vmm_read_exit(vm, vm->info.vmm_gen, 2000);
	if (!known)
		snprintf(vm->info.exit_reason, sizeof(vm->info.exit_reason),
			 "VMM process vanished without an exit status");
	bool clean = vm->stop_requested;   /* we asked it to end, however it ended */
	vm->info.state = vm->migrated_out ? MV_VM_MIGRATED : clean ? MV_VM_STOPPED : MV_VM_CRASHED;
	if (!clean)
		m->vmm_crashes++;
	mv_log(clean ? MV_LOG_INFO : MV_LOG_ERROR, "vm %s (%s): VMM %s%s", vm->info.name,
	       vm->info.id, vm->info.exit_reason, clean ? "" : ": marked crashed");
	vm->info.pid = 0;
	fusion_vm_forget(m, vm);
	vm_release(vm);
	state_update(m, &vm->info);
}

int vmmgr_send_setup(struct dvm *vm, int sock, uint32_t *seq, const struct mv_wl_state *states,
		     bool start_paused, struct mv_error **err)
{
	/* Static: 8 KiB of vCPU states; calls are serialized by the manager lock. */
	static struct mv_ctl_setup s;
	memset(&s, 0, sizeof(s));
	s.nregions = vm->mem.n;
	s.nvcpus = vm->info.vcpus;
	s.dirty_tracking = 1;
	s.start_paused = start_paused;
	s.no_thp = vm->info.fusion;
	s.wl = vm->info.workload;
	if (states) {
		s.resume = 1;
		memcpy(s.states, states, sizeof(s.states[0]) * vm->info.vcpus);
	}
	int fds[MV_MEM_MAX_REGIONS];
	for (uint32_t i = 0; i < vm->mem.n; i++) {
		s.regions[i] = (struct mv_ctl_region){.gpa = vm->mem.r[i].gpa,
						      .size = vm->mem.r[i].size,
						      .flags = vm->mem.r[i].flags};
		fds[i] = vm->mem.r[i].fd;
	}
	struct mv_ctl_msg reply;
	return vmm_call_on(sock, seq, MV_CTL_SETUP, &s, sizeof(s), fds, vm->mem.n, &reply,
			   SETUP_TIMEOUT_MS, err);
}

void vm_dir_clean(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.')
			unlinkat(dirfd(d), e->d_name, 0);
	if (d)
		closedir(d);
	rmdir(dir);
}

static int vm_create(void *ctx, const struct mv_vm_spec *spec, struct mv_vm_info *out,
		     struct mv_error **err)
{
	struct vmmgr *m = ctx;
	int r;
	pthread_mutex_lock(&m->lock);
	if (find(m, spec->name)) {
		r = mv_err_field(err, -EEXIST, "name", "a VM named '%s' already exists", spec->name);
		goto out;
	}
	uint64_t used = vmmgr_used(m);
	if (spec->memory > m->cfg.mem_capacity - used || used > m->cfg.mem_capacity) {
		char a[32], b[32], c[32];
		r = mv_err_field(err, -ENOSPC, "memory",
				 "VM needs %s but only %s of this host's %s guest memory is left",
				 mv_fmt_size(spec->memory, a, sizeof(a)),
				 mv_fmt_size(m->cfg.mem_capacity - used, b, sizeof(b)),
				 mv_fmt_size(m->cfg.mem_capacity, c, sizeof(c)));
		goto out;
	}
	r = mv_wl_params_validate(&spec->workload, spec->memory, spec->vcpus, err);
	if (r < 0)
		goto out;
	struct mv_vm_info info = {.state = MV_VM_CREATING, .memory = spec->memory,
				  .vcpus = spec->vcpus, .backing = spec->backing,
				  .workload = spec->workload, .created_at = mv_wall_s(),
				  .fusion = spec->fusion};
	snprintf(info.name, sizeof(info.name), "%s", spec->name);
	r = host_random_id(info.id, sizeof(info.id));
	if (r < 0) {
		mv_err(err, r, "no randomness for an id");
		goto out;
	}
	struct dvm *vm = vmmgr_vm_new(m, &info);
	r = mv_mkdir_p(vm->dir, 0700);
	if (r < 0) {
		mv_err(err, r, "state dir %s: %s", vm->dir, strerror(-r));
		goto fail_free;
	}
	char label[80];
	snprintf(label, sizeof(label), "mv-%s", spec->name);
	r = mv_mem_layout_create(spec->memory, label, spec->backing, &vm->mem, err);
	if (r < 0)
		goto fail_dir;
	r = state_insert(m, &vm->info, err);
	if (r < 0)
		goto fail_dir;
	pid_t pgid = 0;
	r = vmm_spawn(m->cfg.vmm_path, vm, 0, &pgid, err);
	struct mv_ctl_hello hello;
	if (r == 0)
		r = vmm_connect(vm, 0, pgid, SETUP_TIMEOUT_MS, &hello, &vm->ctl, err);
	if (r == 0)
		r = vmmgr_send_setup(vm, vm->ctl, &vm->seq, NULL, false, err);
	if (r < 0) {
		mv_err_prefix(err, "starting the VMM");
		vmm_kill_group(pgid);
		state_delete(m, vm->info.id);
		guard_vm_removed(m, vm->info.id);
		goto fail_dir;
	}
	vm->info.pid = hello.pid;
	vm->info.state = MV_VM_RUNNING;
	state_update(m, &vm->info);
	mv_log(MV_LOG_INFO, "vm %s (%s): running %s on %u vCPU(s), VMM pid %d", vm->info.name,
	       vm->info.id, mv_wl_kind_name(vm->info.workload.kind), vm->info.vcpus, vm->info.pid);
	*out = vm->info;
	r = 0;
	goto out;
fail_dir:
	vm_dir_clean(vm->dir);
fail_free:
	vmmgr_vm_free(m, vm);
out:
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int by_age_then_name(const void *a, const void *b)
{
	const struct mv_vm_info *x = a, *y = b;
	if (x->created_at != y->created_at)
		return x->created_at < y->created_at ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int vm_list(void *ctx, struct mv_vm_info **out, size_t *n, struct mv_error **err)
{
	struct vmmgr *m = ctx;
	pthread_mutex_lock(&m->lock);
	*n = m->nvms;
	*out = calloc(m->nvms ? m->nvms : 1, sizeof(**out));
	if (!*out)
		abort();
	for (size_t i = 0; i < m->nvms; i++)
		(*out)[i] = m->vms[i]->info;
	pthread_mutex_unlock(&m->lock);
	qsort(*out, *n, sizeof(**out), by_age_then_name);
	return 0;
}

static int vm_get(void *ctx, const char *ref, struct mv_vm_info *out, struct mv_error **err)
{
	struct vmmgr *m = ctx;
	pthread_mutex_lock(&m->lock);
	struct dvm *vm = find_or_err(m, ref, err);
	if (vm)
		*out = vm->info;
	pthread_mutex_unlock(&m->lock);
	return vm ? 0 : -ENOENT;
}

static int need_live(struct dvm *vm, struct mv_error **err)
{
	if (vm->info.state == MV_VM_RUNNING || vm->info.state == MV_VM_PAUSED)
		return 0;
	return mv_err(err, -EBUSY, "VM %s is %s", vm->info.name, mv_vm_state_name(vm->info.state));
}

/* Asks the VMM to stop and waits for its monitor to record the exit. */
int vmmgr_stop_vm(struct vmmgr *m, struct dvm *vm, struct mv_error **err)
{
	struct mv_ctl_msg reply;
	vm->stop_requested = true;
	int r = vmm_call(vm, MV_CTL_STOP, NULL, 0, NULL, 0, &reply, CALL_TIMEOUT_MS, err);
	if (r < 0) {
		mv_log(MV_LOG_WARN, "vm %s: STOP failed (%s); killing the VMM", vm->info.name,
		       mv_error_msg(err ? *err : NULL, r));
		if (err) {
			mv_error_free(*err);
			*err = NULL;
		}
		vmm_kill(vm->info.pid);
	}
	vmmgr_vm_exited(m, vm);
	return 0;
}

static int vm_action(void *ctx, const char *ref, enum mv_vm_action a, struct mv_vm_info *out,
		     struct mv_error **err)
{
	struct vmmgr *m = ctx;
	pthread_mutex_lock(&m->lock);
	struct dvm *vm = find_or_err(m, ref, err);
	int r = vm ? need_live(vm, err) : -ENOENT;
	if (r < 0)
		goto out;
	struct mv_ctl_msg reply;
	switch (a) {
	case MV_VM_PAUSE:
		if (vm->info.state == MV_VM_PAUSED) {
			r = mv_err(err, -EBUSY, "VM %s is already paused", vm->info.name);
			break;
		}
		r = vmm_call(vm, MV_CTL_PAUSE, NULL, 0, NULL, 0, &reply, CALL_TIMEOUT_MS, err);
		if (r == 0)
			vm->info.state = MV_VM_PAUSED;
		break;
	case MV_VM_RESUME:
		if (vm->info.state == MV_VM_RUNNING) {
			r = mv_err(err, -EBUSY, "VM %s is not paused", vm->info.name);
			break;
		}
		r = vmm_call(vm, MV_CTL_RESUME, NULL, 0, NULL, 0, &reply, CALL_TIMEOUT_MS, err);
		if (r == 0)
			vm->info.state = MV_VM_RUNNING;
		break;
	case MV_VM_STOP:
		r = vmmgr_stop_vm(m, vm, err);
		break;
	}
	if (r == 0) {
		state_update(m, &vm->info);
		*out = vm->info;
	}
out:
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int vm_verify(void *ctx, const char *ref, struct mv_verify_result *out, struct mv_error **err)
{
	struct vmmgr *m = ctx;
	pthread_mutex_lock(&m->lock);
	struct dvm *vm = find_or_err(m, ref, err);
	int r = vm ? need_live(vm, err) : -ENOENT;
	struct mv_ctl_msg reply;
	if (r == 0)
		r = vmm_call(vm, MV_CTL_VERIFY, NULL, 0, NULL, 0, &reply, VERIFY_TIMEOUT_MS, err);
	if (r == 0) {
		struct mv_ctl_verify v;
		memcpy(&v, reply.payload, sizeof(v));
		*out = (struct mv_verify_result){.ok = v.ok, .ops_done = v.ops_done,
						 .elapsed_us = v.elapsed_us};
		snprintf(out->message, sizeof(out->message), "%s", v.message);
		mv_log(v.ok ? MV_LOG_INFO : MV_LOG_ERROR, "vm %s: verify %s after %llu ops%s%s",
		       vm->info.name, v.ok ? "ok" : "FAILED", (unsigned long long)v.ops_done,
		       v.ok ? "" : ": ", v.message);
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int vm_delete(void *ctx, const char *ref, bool force, struct mv_error **err)
{
	struct vmmgr *m = ctx;
	pthread_mutex_lock(&m->lock);
	struct dvm *vm = find_or_err(m, ref, err);
	int r = vm ? 0 : -ENOENT;
	if (vm && vm->info.state == MV_VM_INCOMING) {
		r = mv_err(err, -EBUSY, "VM %s is arriving from another host; remove it once it runs",
			   vm->info.name);
	} else if (vm && holds_memory(vm->info.state)) {
		if (!force)
			r = mv_err(err, -EBUSY, "VM %s is %s; stop it first or delete with force",
				   vm->info.name, mv_vm_state_name(vm->info.state));
		else
			r = vmmgr_stop_vm(m, vm, err);
	}
	if (r == 0) {
		vm_dir_clean(vm->dir);
		state_delete(m, vm->info.id);
		mv_log(MV_LOG_INFO, "vm %s (%s): removed", vm->info.name, vm->info.id);
		vmmgr_vm_free(m, vm);
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int host_get(void *ctx, struct mv_host_info *out, struct mv_error **err)
{
	struct vmmgr *m = ctx;
	memset(out, 0, sizeof(*out));
	snprintf(out->version, sizeof(out->version), "%s", MEMVISOR_VERSION);
	gethostname(out->hostname, sizeof(out->hostname) - 1);
	snprintf(out->state_dir, sizeof(out->state_dir), "%s", m->cfg.state_dir);
	out->hugepages_free = mv_mem_hugepages_available();
	snprintf(out->guest_ram_pages, sizeof(out->guest_ram_pages), "%s",
		 mv_mem_pages_name(host_guest_ram_pages()));
	enum mv_dirty_backend bes[] = {MV_DIRTY_UFFD_WP, MV_DIRTY_SOFT_DIRTY, MV_DIRTY_HASH};
	for (size_t i = 0; i < MV_ARRAY_SIZE(bes); i++) {
		if (mv_dirty_backend_available(bes[i])) {
			snprintf(out->dirty_backend, sizeof(out->dirty_backend), "%s",
				 mv_dirty_backend_name(bes[i]));
			break;
		}
	}
	pthread_mutex_lock(&m->lock);
	out->memory_capacity = m->cfg.mem_capacity;
	out->memory_used = vmmgr_used(m);
	out->vms = (uint32_t)m->nvms;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static int check_vmm_binary(const char *bin, struct mv_error **err)
{
	struct stat st;
	if (stat(bin, &st) < 0 || !S_ISREG(st.st_mode) || access(bin, X_OK) < 0)
		return mv_err_field(err, -EINVAL, "vmm", "%s is not an executable file", bin);
	return 0;
}

static int vm_migrate(void *ctx, const char *ref, const struct mv_migrate_req *req,
		      struct mv_handover_result *out, struct mv_vm_info *info,
		      struct mv_error **err)
{
	struct vmmgr *m = ctx;
	const char *bin = req->vmm[0] ? req->vmm : m->cfg.vmm_path;
	int r = req->local ? check_vmm_binary(bin, err) : 0;
	if (r < 0)
		return r;
	pthread_mutex_lock(&m->lock);
	struct dvm *vm = find_or_err(m, ref, err);
	r = vm ? need_live(vm, err) : -ENOENT;
	if (r == 0 && req->local && handover_vm(m, vm, bin, out) < 0)
		r = mv_err(err, -EIO, "%s", out->message);
	/* The stream reads the memfds: fused pages go back into them first. */
	if (r == 0 && !req->local)
		r = fusion_vm_unfuse(m, vm, err);
	if (r == 0 && !req->local)
		r = migration_start(m, vm, req, err);
	if (r == 0)
		*info = vm->info;
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int upgrade(void *ctx, const char *bin, struct mv_handover_result **out, size_t *n,
		   struct mv_error **err)
{
	struct vmmgr *m = ctx;
	int r = check_vmm_binary(bin, err);
	if (r < 0)
		return r;
	pthread_mutex_lock(&m->lock);
	*out = calloc(m->nvms ? m->nvms : 1, sizeof(**out));
	if (!*out)
		abort();
	*n = 0;
	bool all_ok = true;
	for (size_t i = 0; i < m->nvms; i++) {
		struct dvm *vm = m->vms[i];
		if (need_live(vm, NULL) < 0)
			continue;
		/* One at a time: a bad binary stops the roll-out at the first VM. */
		if (handover_vm(m, vm, bin, &(*out)[(*n)++]) < 0) {
			all_ok = false;
			break;
		}
	}
	if (all_ok) {
		snprintf(m->vmm_path_buf, sizeof(m->vmm_path_buf), "%s", bin);
		m->cfg.vmm_path = m->vmm_path_buf;
		mv_log(MV_LOG_INFO, "upgrade: %zu VM(s) now on %s; new VMs start it too", *n, bin);
	}
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static int fusion_get(void *ctx, struct mv_fusion_info *out, struct mv_error **err)
{
	struct vmmgr *m = ctx;
	pthread_mutex_lock(&m->lock);
	int r = fusion_info(m, out);
	pthread_mutex_unlock(&m->lock);
	return r;
}

static int metrics(void *ctx, char **text, struct mv_error **err)
{
	*text = metrics_render(ctx);
	return 0;
}

const struct mv_api_backend vmmgr_backend = {
	.vm_create = vm_create, .vm_list = vm_list, .vm_get = vm_get, .vm_action = vm_action,
	.vm_verify = vm_verify, .vm_delete = vm_delete, .host_get = host_get, .metrics = metrics,
	.vm_migrate = vm_migrate, .upgrade = upgrade, .fusion_get = fusion_get,
	.sensitive_add = guard_sensitive_add, .sensitive_list = guard_sensitive_list,
	.sensitive_remove = guard_sensitive_remove, .guard_get = guard_get,
	.image_pull = image_pull, .image_list = image_list, .image_get = image_get,
	.image_remove = image_remove, .cache_prepopulate = cache_prepopulate, .cache_get = cache_get,
	.ctr_create = ctr_create, .ctr_list = ctr_list, .ctr_get = ctr_get, .ctr_stop = ctr_stop,
	.ctr_delete = ctr_delete, .ctr_logs = ctr_logs,
	.guard_events = detect_events, .guard_policy_get = detect_policy_get,
	.guard_policy_set = detect_policy_set,
};

/* Re-adopts a VM whose VMM kept running while the daemon was down: reconnect,
 * take back its guest RAM fds, resume watching it. */
static void adopt(struct vmmgr *m, struct dvm *vm)
{
	struct mv_ctl_hello hello;
	struct mv_error *err = NULL;
	int r = vmm_connect(vm, vm->info.vmm_gen, 0, 1000, &hello, &vm->ctl, &err);
	if (r == 0 && !hello.ready) {
		r = mv_err(&err, -EPROTO, "VMM was never set up (daemon died while creating it)");
		vmm_kill(hello.pid);
	}
	struct mv_ctl_msg reply;
	if (r == 0)
		r = vmm_call(vm, MV_CTL_GET_MEM, NULL, 0, NULL, 0, &reply, CALL_TIMEOUT_MS, &err);
	if (r == 0) {
		struct mv_ctl_mem g;
		memcpy(&g, reply.payload, sizeof(g));
		vm->mem.n = g.nregions;
		for (uint32_t i = 0; i < g.nregions; i++)
			vm->mem.r[i] = (struct mv_mem_region_desc){.gpa = g.regions[i].gpa,
								   .size = g.regions[i].size,
								   .flags = g.regions[i].flags,
								   .fd = reply.fds[i]};
		r = mv_mem_layout_validate(&vm->mem, true, &err);
	}
	/* A restarted daemon has a new, empty fusion pool: the VMM copies pages
	 * it fused from the old one back (an older VMM knows no fusion: fine). */
	if (r == 0 && vm->info.fusion &&
	    vmm_call(vm, MV_CTL_UNFUSE, NULL, 0, NULL, 0, &reply, 60000, NULL) < 0)
		mv_log(MV_LOG_WARN, "vm %s: could not copy fused pages back", vm->info.name);
	if (r < 0) {
		mv_log(MV_LOG_WARN, "vm %s (%s): cannot re-adopt: %s", vm->info.name, vm->info.id,
		       mv_error_msg(err, r));
		mv_error_free(err);
		vmmgr_vm_exited(m, vm);
		return;
	}
	vm->info.pid = hello.pid;
	vm->info.state = hello.state == MV_VMM_PAUSED ? MV_VM_PAUSED : MV_VM_RUNNING;
	state_update(m, &vm->info);
	mv_log(MV_LOG_INFO, "vm %s (%s): re-adopted VMM pid %d (%s)", vm->info.name, vm->info.id,
	       vm->info.pid, mv_vm_state_name(vm->info.state));
}

int vmmgr_init(struct vmmgr *m, const struct daemon_cfg *cfg, struct mv_error **err)
{
	memset(m, 0, sizeof(*m));
	m->cfg = *cfg;
	m->mig_listen = -1;
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->quit_cv, NULL);
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/vms", cfg->state_dir);
	int r = mv_mkdir_p(dir, 0700);
	if (r < 0)
		return mv_err(err, r, "state dir %s: %s", dir, strerror(-r));
	r = state_open(m, err);
	if (r < 0)
		return r;
	detect_init(m);
	r = detect_record_init(m, err);
	if (r == 0)
		r = guard_init(m, err);
	if (r == 0)
		r = guard_keep_init(m, err);
	if (r < 0)
		return r;
	struct mv_vm_info *rows;
	size_t n;
	r = state_load(m, &rows, &n, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		struct dvm *vm = vmmgr_vm_new(m, &rows[i]);
		if (holds_memory(vm->info.state))
			adopt(m, vm);
	}
	free(rows);
	detect_restore(m);
	return 0;
}

void vmmgr_fini(struct vmmgr *m)
{
	/* VMMs run on: only the daemon's handles go. */
	while (m->nvms)
		vmmgr_vm_free(m, m->vms[m->nvms - 1]);
	free(m->vms);
	guard_fini(m);
	guard_keep_fini(m);
	detect_fini(m);
	state_close(m);
}
