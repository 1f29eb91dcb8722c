/* memvisord's page-fusion thread: every tick it attaches the VMs that opted
 * in (and run) to the scanner (src/guard/fusion.c), scans a rate-limited
 * budget of pages WITHOUT the manager lock (pread on dup'ed memfds), then,
 * under the lock, sends each VM's proposals to its VMM (FUSE; the read-only
 * pool fd rides along once per VMM) and books the answers and the pages
 * guest writes broke. Hand-over, outgoing migration and re-adoption first
 * copy fused pages back (UNFUSE): their readers see the memfds only. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "memvisor/fusion.h"
#include "memvisor/util.h"
#include "daemon_i.h"

#define TICK_MS 100
#define PROPS_MAX (1u << 20)  /* proposals per tick at most (24 MiB) */
#define SAMPLE_MS 10
#define CALL_MS 10000
#define UNFUSE_MS 60000
#define WANT_MAP_COUNT 1048576ULL
#define MAPS_RESERVED 16384ULL   /* VMAs left for the VMM's own use */

/* Each fused page is its own VMA in its VMM (up to two more by splitting):
 * raise vm.max_map_count when it is low (we are root) and size the cap by it. */
static uint64_t map_count_limit(void)
{
	uint64_t cur = 65530;
	char buf[32];
	int fd = open("/proc/sys/vm/max_map_count", O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return cur;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	if (n > 0) {
		buf[n] = '\0';
		cur = strtoull(buf, NULL, 10);
	}
	if (cur < WANT_MAP_COUNT) {
		int len = snprintf(buf, sizeof(buf), "%llu\n", WANT_MAP_COUNT);
		if (pwrite(fd, buf, (size_t)len, 0) == len) {
			mv_log(MV_LOG_INFO, "fusion: vm.max_map_count raised from %llu to %llu",
			       (unsigned long long)cur, WANT_MAP_COUNT);
			cur = WANT_MAP_COUNT;
		}
	}
	close(fd);
	return cur;
}

static bool eligible(const struct dvm *vm)
{
	return vm->info.fusion && !vm->info.fusion_excluded && vm->ctl >= 0 && vm->mem.n > 0 &&
	       (vm->info.state == MV_VM_RUNNING || vm->info.state == MV_VM_PAUSED);
}

static struct dvm *by_key(struct vmmgr *m, uint64_t key)
{
	for (size_t i = 0; i < m->nvms; i++)
		if (m->vms[i]->fkey == key)
			return m->vms[i];
	return NULL;
}

/* One FUSE round trip: n entries from e (may be 0). Books results and broken
 * pages; returns the reply's "more" (1), 0, or -errno. */
static int fuse_call(struct vmmgr *m, struct dvm *vm, const struct mv_fusion_merge *e, uint32_t n)
{
	static struct mv_ctl_fuse req;   /* 8 KiB; the manager lock serializes us */
	memset(&req, 0, sizeof(req));
	req.n = n;
	for (uint32_t i = 0; i < n; i++)
		req.e[i] = (struct mv_ctl_fuse_entry){.gpa = e[i].gpa, .pool_off = e[i].pool_off};
	int fd = -1;
	if (!vm->fusion_pool_sent) {
		fd = mv_fusion_pool_fd_ro(m->fusion);
		if (fd < 0)
			return fd;
		req.pool_size = mv_fusion_pool_size(m->fusion);
	}
	struct mv_ctl_msg reply;
	struct mv_error *err = NULL;
	int r = vmm_call(vm, MV_CTL_FUSE, &req, sizeof(req), fd >= 0 ? &fd : NULL, fd >= 0,
			 &reply, CALL_MS, &err);
	if (fd >= 0)
		close(fd);
	if (r < 0) {
		if (r != -EAGAIN)
			mv_log(MV_LOG_WARN, "vm %s: FUSE: %s", vm->info.name, mv_error_msg(err, r));
		mv_error_free(err);
		return r;
	}
	vm->fusion_pool_sent = true;
	static struct mv_ctl_fuse_reply out;
	memcpy(&out, reply.payload, sizeof(out));
	for (uint32_t i = 0; i < n && i < out.n; i++)
		mv_fusion_commit(m->fusion, &e[i], out.result[i] == MV_FUSE_DONE);
	for (uint32_t i = out.n; i < n; i++)
		mv_fusion_commit(m->fusion, &e[i], false);
	/* The write-probe signal: breaks of pages shared with another tenant's
	 * sensitive page, fused shortly before, at the times the VMM saw them. */
	static uint64_t at[MV_CTL_BROKEN_MAX];
	uint32_t fresh = 0, fresh_ms = detect_fresh_ms(m);
	uint64_t victim = 0, gpa = 0, now = mv_now_ns() / 1000000;
	for (uint32_t i = 0; i < out.nbroken; i++) {
		uint64_t owner = out.age_ms[i] < fresh_ms && out.ago_ms[i] <= now
				 ? guard_sensitive_sharer(m, vm->fkey, out.broken[i]) : 0;
		(void)mv_fusion_broken(m->fusion, vm->fkey, out.broken[i], NULL);
		if (owner) {
			at[fresh++] = now - out.ago_ms[i];
			victim = owner;
			gpa = out.broken[i];
		}
	}
	detect_breaks(m, vm, at, fresh, victim, gpa);
	vm->info.fused_pages = out.fused;
	vm->info.cow_breaks = out.cow_breaks;
	return out.more ? 1 : 0;
}

static void collect_broken(struct vmmgr *m, struct dvm *vm)
{
	for (int i = 0; i < 64 && fuse_call(m, vm, NULL, 0) == 1; i++)
		;
}

/* Lock held: sends the proposals of one VM (all with e[0].key) in batches,
 * letting the lock go between them: a big tick's merges would otherwise
 * hold off the guard's 10 ms sampling and the API. The VM is looked up
 * again after each gap; one handed over, migrated or gone in it has been
 * detached (its proposals dropped) and gets no more. */
static void apply(struct vmmgr *m, struct mv_fusion_merge *e, size_t n)
{
	size_t done = 0;
	while (done < n) {
		struct dvm *vm = by_key(m, e[0].key);
		if (!vm || !eligible(vm) || !mv_fusion_vm_attached(m->fusion, vm->fkey))
			break;
		uint32_t k = n - done > MV_CTL_FUSE_MAX ? MV_CTL_FUSE_MAX : (uint32_t)(n - done);
		int r = fuse_call(m, vm, e + done, k);
		if (r < 0)
			break;
		done += k;
		if (r == 1)
			collect_broken(m, vm);
		pthread_mutex_unlock(&m->lock);
		sched_yield();
		pthread_mutex_lock(&m->lock);
	}
	for (; done < n; done++)
		mv_fusion_commit(m->fusion, &e[done], false);
}

/* By VM, then guest address: a VM's proposals go out together, and pages
 * merged in scan order onto pool pages allocated in that order form runs
 * the VMM maps with one call each. */
static int by_key_cmp(const void *a, const void *b)
{
	const struct mv_fusion_merge *x = a, *y = b;
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	return x->gpa < y->gpa ? -1 : x->gpa > y->gpa;
}

/* Lock held: attaches VMs that became eligible, detaches the others. */
static void attach_all(struct vmmgr *m)
{
	for (size_t i = 0; i < m->nvms; i++) {
		struct dvm *vm = m->vms[i];
		bool att = mv_fusion_vm_attached(m->fusion, vm->fkey);
		if (eligible(vm) && !att) {
			struct mv_error *err = NULL;
			int r = mv_fusion_vm_add(m->fusion, vm->fkey, &vm->mem, &err);
			if (r < 0)
				mv_log(MV_LOG_WARN, "vm %s: fusion: %s", vm->info.name, mv_error_msg(err, r));
			mv_error_free(err);
			vm->fusion_pool_sent = false;
			if (r == 0)
				guard_keep_attached(m, vm);   /* pages the guard moved stay out */
		} else if (!eligible(vm) && att) {
			(void)fusion_vm_unfuse(m, vm, NULL);
		} else if (att && vm->info.fused_pages) {
			collect_broken(m, vm);
		}
	}
}

/* The guard's sampled windows, collected every SAMPLE_MS on a thread of
 * their own: a scan tick (lock released) may take most of TICK_MS, and the
 * detection latency target is under 100 ms. */
static void *sample_main(void *arg)
{
	struct vmmgr *m = arg;
	pthread_mutex_lock(&m->lock);
	while (!m->fusion_quit) {
		struct timespec ts;
		mv_deadline_ms(&ts, CLOCK_REALTIME, SAMPLE_MS);
		pthread_cond_timedwait(&m->quit_cv, &m->lock, &ts);
		if (m->fusion_quit)
			break;
		uint64_t t0 = mv_thread_cpu_ns();
		detect_sample_tick(m);
		/* A sharer of sensitive pages gets its breaks collected here too:
		 * a write probe then shows within a window, not a scan tick. */
		for (size_t i = 0; m->fusion && i < m->nvms; i++)
			if (detect_watched(m, m->vms[i]) &&
			    mv_fusion_vm_attached(m->fusion, m->vms[i]->fkey))
				collect_broken(m, m->vms[i]);
		detect_respond(m);
		guard_charge(m, t0);
	}
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

static void *fusion_main(void *arg)
{
	struct vmmgr *m = arg;
	/* Like ksmd's pages_to_scan per sleep_millisecs: a fixed budget per
	 * tick, the sleep after the tick's work. A budget from the elapsed time
	 * (work included) was tried: no faster convergence in the bench, but a
	 * scanner that falls behind then runs flat out. */
	uint64_t budget = m->cfg.fusion_rate * TICK_MS / 1000;
	budget = budget ? budget : 1;
	size_t cap = budget * 2 + 2 < PROPS_MAX ? budget * 2 + 2 : PROPS_MAX;
	struct mv_fusion_merge *props = calloc(cap, sizeof(*props));
	if (!props)
		abort();
	pthread_mutex_lock(&m->lock);
	while (!m->fusion_quit) {
		struct timespec ts;
		mv_deadline_ms(&ts, CLOCK_REALTIME, TICK_MS);
		pthread_cond_timedwait(&m->quit_cv, &m->lock, &ts);
		if (m->fusion_quit)
			break;
		attach_all(m);
		pthread_mutex_unlock(&m->lock);
		size_t n = 0;
		(void)mv_fusion_scan(m->fusion, budget, props, cap, &n);
		qsort(props, n, sizeof(*props), by_key_cmp);
		pthread_mutex_lock(&m->lock);
		for (size_t i = 0, j; i < n; i = j) {
			for (j = i; j < n && props[j].key == props[i].key; j++)
				;
			apply(m, props + i, j - i);
		}
		detect_respond(m);
	}
	pthread_mutex_unlock(&m->lock);
	free(props);
	return NULL;
}

static void fusion_stop_thread(struct vmmgr *m)
{
	pthread_mutex_lock(&m->lock);
	m->fusion_quit = true;
	pthread_cond_broadcast(&m->quit_cv);
	pthread_mutex_unlock(&m->lock);
	pthread_join(m->fusion_thread, NULL);
}

int fusion_start(struct vmmgr *m, struct mv_error **err)
{
	if (m->cfg.fusion_rate == 0)
		return 0;
	uint64_t maps = map_count_limit();
	struct mv_fusion_cfg cfg = {
		.pool_pages = m->cfg.mem_capacity / MV_PAGE_SIZE,
		.max_fused_per_vm = maps > 4 * MAPS_RESERVED ? (maps - MAPS_RESERVED) / 2 : maps / 4,
	};
	if (cfg.pool_pages >= UINT32_MAX)
		cfg.pool_pages = UINT32_MAX - 1;
	int r = mv_fusion_create(&cfg, &m->fusion, err);
	if (r < 0)
		return r;
	m->fusion_quit = false;
	r = -pthread_create(&m->fusion_thread, NULL, fusion_main, m);
	if (r < 0) {
		mv_fusion_destroy(m->fusion);
		m->fusion = NULL;
		return mv_err(err, r, "fusion thread: %s", strerror(-r));
	}
	r = -pthread_create(&m->sample_thread, NULL, sample_main, m);
	if (r < 0) {
		fusion_stop_thread(m);
		mv_fusion_destroy(m->fusion);
		m->fusion = NULL;
		return mv_err(err, r, "guard sampling thread: %s", strerror(-r));
	}
	m->fusion_running = true;
	mv_log(MV_LOG_INFO, "fusion: scanning up to %llu pages/s, %llu fused pages per VM at most",
	       (unsigned long long)m->cfg.fusion_rate, (unsigned long long)cfg.max_fused_per_vm);
	return 0;
}

void fusion_stop(struct vmmgr *m)
{
	if (!m->fusion_running)
		return;
	fusion_stop_thread(m);
	pthread_join(m->sample_thread, NULL);
	m->fusion_running = false;
}

void fusion_fini(struct vmmgr *m)
{
	mv_fusion_destroy(m->fusion);
	m->fusion = NULL;
}

int fusion_vm_unfuse(struct vmmgr *m, struct dvm *vm, struct mv_error **err)
{
	if (!m->fusion || !mv_fusion_vm_attached(m->fusion, vm->fkey))
		return 0;
	int r = 0;
	if (vm->ctl >= 0 && (vm->fusion_pool_sent || mv_fusion_vm_fused(m->fusion, vm->fkey))) {
		struct mv_ctl_msg reply;
		r = vmm_call(vm, MV_CTL_UNFUSE, NULL, 0, NULL, 0, &reply, UNFUSE_MS, err);
		if (r < 0) {
			mv_err_prefix(err, "copying fused pages back");
			return r;
		}
		struct mv_ctl_unfuse u;
		memcpy(&u, reply.payload, sizeof(u));
		mv_fusion_vm_unfused(m->fusion, vm->fkey, u.unfused);
		vm->info.cow_breaks = u.cow_breaks;
		if (u.unfused)
			mv_log(MV_LOG_INFO, "vm %s: %llu fused page(s) copied back", vm->info.name,
			       (unsigned long long)u.unfused);
	}
	mv_fusion_vm_remove(m->fusion, vm->fkey);
	vm->info.fused_pages = 0;
	vm->fusion_pool_sent = false;
	return 0;
}

void fusion_vm_forget(struct vmmgr *m, struct dvm *vm)
{
	if (m->fusion)
		mv_fusion_vm_remove(m->fusion, vm->fkey);
	vm->info.fused_pages = 0;
	vm->fusion_pool_sent = false;
}

int fusion_info(struct vmmgr *m, struct mv_fusion_info *out)
{
	memset(out, 0, sizeof(*out));
	out->enabled = m->fusion != NULL;
	out->rate = m->cfg.fusion_rate;
	if (!m->fusion)
		return 0;
	struct mv_fusion_stats st;
	mv_fusion_get_stats(m->fusion, &st);
	out->shared = st.shared;
	out->sharing = st.sharing;
	out->unshared = st.unshared;
	out->full_scans = st.full_scans;
	out->pages_scanned = st.pages_scanned;
	out->merges = st.merges;
	out->misses = st.misses;
	out->cow_breaks = st.cow_breaks;
	out->unfused = st.unfused;
	out->saved_bytes = st.sharing > st.shared ? (st.sharing - st.shared) * MV_PAGE_SIZE : 0;
	out->vms = st.vms;
	return 0;
}

void fusion_metrics(struct vmmgr *m, FILE *f)
{
	struct mv_fusion_info fi;
	fusion_info(m, &fi);
	fprintf(f, "# HELP memvisor_fusion_pages Page fusion: pool pages in use (shared), guest pages "
		   "mapped to them (sharing), unique pages in the last full scan (unshared).\n"
		   "# TYPE memvisor_fusion_pages gauge\n");
	fprintf(f, "memvisor_fusion_pages{kind=\"shared\"} %llu\n", (unsigned long long)fi.shared);
	fprintf(f, "memvisor_fusion_pages{kind=\"sharing\"} %llu\n", (unsigned long long)fi.sharing);
	fprintf(f, "memvisor_fusion_pages{kind=\"unshared\"} %llu\n", (unsigned long long)fi.unshared);
	fprintf(f, "# HELP memvisor_fusion_saved_bytes Guest memory page fusion saves.\n"
		   "# TYPE memvisor_fusion_saved_bytes gauge\nmemvisor_fusion_saved_bytes %llu\n",
		(unsigned long long)fi.saved_bytes);
	fprintf(f, "# HELP memvisor_fusion_events_total Page fusion: full scans, pages scanned, "
		   "merges, misses, copy-on-write breaks, pages copied back.\n"
		   "# TYPE memvisor_fusion_events_total counter\n");
	const struct { const char *k; uint64_t v; } ev[] = {
		{"full_scan", fi.full_scans}, {"page_scanned", fi.pages_scanned},
		{"merge", fi.merges}, {"miss", fi.misses}, {"cow_break", fi.cow_breaks},
		{"unfused", fi.unfused},
	};
	for (size_t i = 0; i < MV_ARRAY_SIZE(ev); i++)
		fprintf(f, "memvisor_fusion_events_total{event=\"%s\"} %llu\n", ev[i].k,
			(unsigned long long)ev[i].v);
}
