/* The daemon's watcher thread: notices a VMM that died (its control socket
 * closes), records how from its monitor's exit file, reaps spawned monitors,
 * and refreshes live stats (ops, dirty rate, faults, resident memory). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "daemon_i.h"

#define TICK_MS 250
#define STATS_EVERY 4     /* ticks */

static void read_faults(struct dvm *vm)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", vm->info.pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return;
	buf[n] = '\0';
	char *p = strrchr(buf, ')');   /* comm may hold spaces */
	unsigned long long minflt, majflt;
	if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %llu %*u %llu", &minflt, &majflt) == 2) {
		vm->minflt = minflt;
		vm->majflt = majflt;
	}
}

void watch_refresh(struct vmmgr *m, struct dvm *vm)
{
	uint64_t resident = 0;
	for (uint32_t i = 0; i < vm->mem.n; i++) {
		struct stat st;
		if (fstat(vm->mem.r[i].fd, &st) == 0)
			resident += (uint64_t)st.st_blocks * 512;
	}
	vm->info.resident_bytes = resident;
	read_faults(vm);
	struct mv_ctl_msg reply;
	if (vmm_call(vm, MV_CTL_STATUS, NULL, 0, NULL, 0, &reply, 2000, NULL) < 0)
		return;
	static struct mv_ctl_status st;   /* watcher thread only */
	memcpy(&st, reply.payload, sizeof(st));
	vm->info.ops_done = st.ops_done;
	memcpy(vm->info.wl_aux, st.wl_aux, sizeof(vm->info.wl_aux));
	vm->info.throttle_pct = st.throttle_pct;
	vm->info.dirty_pages_total = st.dirty_pages_total;
	vm->info.dirty_rate = (double)st.dirty_rate_milli / 1000.0;
	snprintf(vm->info.dirty_backend, sizeof(vm->info.dirty_backend), "%s", st.dirty_backend);
	migration_poll(m, vm, &st);
}

static bool peer_gone(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	/* The VMM never speaks unprompted, so anything readable here is EOF. */
	return poll(&p, 1, 0) > 0;
}

static void *watch_main(void *arg)
{
	struct vmmgr *m = arg;
	unsigned tick = 0;
	pthread_mutex_lock(&m->lock);
	while (!m->quit) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		for (size_t i = 0; i < m->nvms; i++) {
			struct dvm *vm = m->vms[i];
			if (vm->ctl < 0)
				continue;
			if (peer_gone(vm->ctl)) {
				vmmgr_vm_exited(m, vm);
				continue;
			}
			/* A migration is followed closely: its end retires the VMM. */
			if (tick % STATS_EVERY == 0 || vm->info.state == MV_VM_MIGRATING)
				watch_refresh(m, vm);
		}
		if (tick % STATS_EVERY == 0) {
			uint64_t t0 = mv_thread_cpu_ns();
			guard_tick(m);
			detect_respond(m);
			guard_charge(m, t0);
		}
		tick++;
		struct timespec ts;
		mv_deadline_ms(&ts, CLOCK_REALTIME, TICK_MS);
		pthread_cond_timedwait(&m->quit_cv, &m->lock, &ts);
	}
	pthread_mutex_unlock(&m->lock);
	return NULL;
}

int watch_start(struct vmmgr *m)
{
	return -pthread_create(&m->watcher, NULL, watch_main, m);
}

void watch_stop(struct vmmgr *m)
{
	pthread_mutex_lock(&m->lock);
	m->quit = true;
	pthread_cond_broadcast(&m->quit_cv);   /* the fusion threads wait on it too */
	pthread_mutex_unlock(&m->lock);
	pthread_join(m->watcher, NULL);
}
