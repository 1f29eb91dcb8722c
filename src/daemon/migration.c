/* Live migration between hosts, the daemons' part (the stream itself is
 * src/migrate/, run by the VMMs).
 * Source: connect to the destination daemon's migration address, hand the
 * socket to the VM's VMM (MIGRATE_OUT) and follow its progress from the
 * watcher; on success the VM is marked migrated and its VMM stopped, on
 * failure it runs on here.
 * Destination: a listener thread accepts a stream, reads its CONFIG, admits
 * the VM against this host's capacity, allocates its memfds, starts a VMM and
 * hands it the memfds and the socket (MIGRATE_IN), which answers once the VM
 * runs here. The manager lock is not held while pages flow. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "daemon_i.h"

#define CONNECT_MS 5000
#define CONFIG_MS 10000
#define INCOMING_MS (30 * 60 * 1000)

/* Splits "host:port" / "[v6]:port" and resolves it. */
static int resolve(const char *hostport, bool passive, struct addrinfo **out, struct mv_error **err)
{
	char host[128];
	snprintf(host, sizeof(host), "%s", hostport);
	char *colon = strrchr(host, ':');
	if (!colon || colon == host)
		return mv_err_field(err, -EINVAL, "to", "'%s' is not HOST:PORT", hostport);
	*colon = '\0';
	char *h = host;
	if (h[0] == '[' && colon[-1] == ']') {
		h++;
		colon[-1] = '\0';
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0};
	int r = getaddrinfo(h, colon + 1, &hints, out);
	if (r != 0)
		return mv_err_field(err, -EHOSTUNREACH, "to", "cannot resolve %s: %s", hostport,
				    gai_strerror(r));
	return 0;
}

static int tcp_connect(const char *hostport, struct mv_error **err)
{
	struct addrinfo *ai;
	int r = resolve(hostport, false, &ai, err);
	if (r < 0)
		return r;
	int s = -1;
	r = -ECONNREFUSED;
	for (struct addrinfo *a = ai; a && s < 0; a = a->ai_next) {
		s = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (s < 0)
			continue;
		if (connect(s, a->ai_addr, a->ai_addrlen) < 0 && errno == EINPROGRESS) {
			struct pollfd p = {.fd = s, .events = POLLOUT};
			int e = 0;
			socklen_t el = sizeof(e);
			if (poll(&p, 1, CONNECT_MS) == 1 &&
			    getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el) == 0 && e == 0)
				errno = 0;
			else
				errno = e ? e : ETIMEDOUT;
		}
		if (errno) {
			r = -errno;
			close(s);
			s = -1;
		}
	}
	freeaddrinfo(ai);
	if (s < 0)
		return mv_err_field(err, r, "to", "cannot reach the destination at %s: %s", hostport,
				    strerror(-r));
	int fl = fcntl(s, F_GETFL);
	fcntl(s, F_SETFL, fl & ~O_NONBLOCK);
	int one = 1;
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return s;
}

/* What the destination's daemon must keep about the VM: its fusion opt-in,
 * its sensitive ranges and the pages the guard moved. */
static int tenant_fill(struct vmmgr *m, struct dvm *vm, struct mv_migrate_tenant *t,
		       struct mv_error **err)
{
	memset(t, 0, sizeof(*t));
	t->flags = vm->info.fusion ? MV_MIGRATE_TENANT_FUSION : 0;
	if (guard_spans(m, vm->info.id, t->sensitive, MV_MIGRATE_MAX_SENSITIVE, &t->nsensitive) < 0)
		return mv_err(err, -E2BIG, "vm %s has more than %u sensitive ranges, more than a "
			      "migration carries", vm->info.name, MV_MIGRATE_MAX_SENSITIVE);
	if (guard_keep_spans(m, vm->info.id, t->keep, MV_MIGRATE_MAX_KEEP, &t->nkeep) < 0)
		return mv_err(err, -E2BIG, "vm %s has more than %u spans of moved pages, more than a "
			      "migration carries", vm->info.name, MV_MIGRATE_MAX_KEEP);
	return 0;
}

int migration_start(struct vmmgr *m, struct dvm *vm, const struct mv_migrate_req *req,
		    struct mv_error **err)
{
	static struct mv_ctl_migrate_out o;   /* 5 KiB; the manager lock serializes us */
	memset(&o, 0, sizeof(o));
	int r = tenant_fill(m, vm, &o.tenant, err);
	if (r < 0)
		return r;
	int s = tcp_connect(req->to, err);
	if (s < 0)
		return s;
	o.opts = (struct mv_ctl_migrate_opts){
		.features = (req->compress ? MV_MIGRATE_F_ZSTD : 0) |
			    (req->postcopy ? MV_MIGRATE_F_POSTCOPY : 0),
		.downtime_ms = req->downtime_ms, .max_bandwidth = req->max_bandwidth};
	snprintf(o.opts.vm_name, sizeof(o.opts.vm_name), "%s", vm->info.name);
	struct mv_ctl_msg reply;
	r = vmm_call(vm, MV_CTL_MIGRATE_OUT, &o, sizeof(o), &s, 1, &reply, 10000, err);
	close(s);   /* the VMM has its own copy now */
	if (r < 0)
		return r;
	struct mv_migration_info *mg = &vm->info.migration;
	memset(mg, 0, sizeof(*mg));
	mg->active = true;
	snprintf(mg->to, sizeof(mg->to), "%s", req->to);
	snprintf(mg->phase, sizeof(mg->phase), "setup");
	vm->state_before_migration = vm->info.state;
	vm->info.state = MV_VM_MIGRATING;
	state_update(m, &vm->info);
	mv_log(MV_LOG_INFO, "vm %s: migrating to %s%s%s", vm->info.name, req->to,
	       req->postcopy ? " (post-copy)" : "", req->compress ? " (zstd)" : "");
	return 0;
}

void migration_poll(struct vmmgr *m, struct dvm *vm, const struct mv_ctl_status *st)
{
	struct mv_migration_info *mg = &vm->info.migration;
	if (vm->info.state != MV_VM_MIGRATING || !st->migrating)
		return;
	snprintf(mg->phase, sizeof(mg->phase), "%s", mv_migrate_phase_name(st->mig.phase));
	mg->pass = st->mig.pass;
	mg->throttle_pct = st->mig.throttle_pct;
	mg->bytes_sent = st->mig.bytes_sent;
	mg->pages_sent = st->mig.pages_sent;
	mg->pages_remaining = st->mig.pages_remaining;
	mg->pages_requested = st->mig.pages_requested;
	mg->dirty_rate = st->mig.dirty_rate;
	mg->bandwidth = st->mig.bandwidth;
	mg->downtime_us = st->mig.downtime_us;
	mg->total_us = st->mig.total_us;
	if (st->mig_result == 2) {
		snprintf(mg->error, sizeof(mg->error), "%s", st->mig_error);
		vm->info.state = vm->state_before_migration;
		state_update(m, &vm->info);
		mv_log(MV_LOG_WARN, "vm %s: migration to %s failed; it runs on here: %s",
		       vm->info.name, mg->to, mg->error);
	} else if (st->mig_result == 1) {
		/* The destination runs the VM: retire this copy. */
		struct mv_ctl_msg reply;
		vm->migrated_out = true;
		vm->stop_requested = true;
		if (vmm_call(vm, MV_CTL_STOP, NULL, 0, NULL, 0, &reply, 10000, NULL) < 0)
			vmm_kill(vm->info.pid);
		vmmgr_vm_exited(m, vm);
		mv_log(MV_LOG_INFO, "vm %s: now runs at %s (downtime %llu us, %llu bytes sent)",
		       vm->info.name, mg->to, (unsigned long long)mg->downtime_us,
		       (unsigned long long)mg->bytes_sent);
	}
}

/* Destination: admits the VM the stream describes, under the manager lock. */
static struct dvm *admit(struct vmmgr *m, const struct mv_migrate_config *cfg, const char *peer,
			 struct mv_error **err)
{
	uint64_t ram = mv_migrate_config_ram_size(cfg);
	if (!mv_api_name_valid(cfg->vm_name)) {
		mv_err(err, -EINVAL, "the VM's name '%.64s' is not valid here", cfg->vm_name);
		return NULL;
	}
	for (size_t i = 0; i < m->nvms; i++) {
		if (!strcmp(m->vms[i]->info.name, cfg->vm_name)) {
			mv_err(err, -EEXIST, "a VM named '%s' already exists on the destination",
			       cfg->vm_name);
			return NULL;
		}
	}
	uint64_t used = vmmgr_used(m);
	if (used > m->cfg.mem_capacity || ram > m->cfg.mem_capacity - used) {
		char a[32], b[32];
		mv_err(err, -ENOSPC, "the destination has %s of guest memory left; the VM needs %s",
		       mv_fmt_size(m->cfg.mem_capacity - used, a, sizeof(a)),
		       mv_fmt_size(ram, b, sizeof(b)));
		return NULL;
	}
	struct mv_vm_info info = {.state = MV_VM_INCOMING, .memory = ram, .vcpus = cfg->nvcpus,
				  .workload = cfg->wl, .created_at = mv_wall_s(),
				  .backing = (cfg->regions[0].flags & MV_MEM_HUGETLB)
						     ? MV_MEM_BACKING_HUGETLB : MV_MEM_BACKING_4K};
	snprintf(info.name, sizeof(info.name), "%s", cfg->vm_name);
	info.fusion = (cfg->tenant.flags & MV_MIGRATE_TENANT_FUSION) != 0;
	info.migration.active = true;
	snprintf(info.migration.from, sizeof(info.migration.from), "%s", peer);
	snprintf(info.migration.phase, sizeof(info.migration.phase), "incoming");
	if (host_random_id(info.id, sizeof(info.id)) < 0) {
		mv_err(err, -EIO, "no randomness for an id");
		return NULL;
	}
	struct dvm *vm = vmmgr_vm_new(m, &info);
	char label[80];
	snprintf(label, sizeof(label), "mv-%s", info.name);
	int r = mv_mkdir_p(vm->dir, 0700);
	if (r < 0)
		mv_err(err, r, "state dir %s: %s", vm->dir, strerror(-r));
	if (r == 0)
		r = mv_mem_layout_create(ram, label, info.backing, &vm->mem, err);
	for (uint32_t i = 0; r == 0 && i < cfg->nregions; i++)
		if (vm->mem.n != cfg->nregions || vm->mem.r[i].gpa != cfg->regions[i].gpa ||
		    vm->mem.r[i].size != cfg->regions[i].size)
			r = mv_err(err, -EINVAL, "this host lays out %s of RAM differently", label);
	if (r == 0)
		r = state_insert(m, &vm->info, err);
	/* Moved pages stay out of fusion from the first scan that sees the VM. */
	for (uint32_t i = 0; r == 0 && i < cfg->tenant.nkeep; i++)
		r = guard_keep_add(m, vm, cfg->tenant.keep[i].gpa, cfg->tenant.keep[i].len, err);
	if (r < 0) {
		guard_keep_vm_removed(m, vm->info.id);
		state_delete(m, vm->info.id);
		vm_dir_clean(vm->dir);
		vmmgr_vm_free(m, vm);
		return NULL;
	}
	return vm;
}

/* The arrived VM's sensitive ranges, registered (locked, frames read) as on
 * the source; one that fails is logged, the VM runs on. Takes the lock. */
static void protect(struct vmmgr *m, const char *vm_id, const struct mv_migrate_tenant *t)
{
	for (uint32_t i = 0; i < t->nsensitive; i++) {
		struct mv_sensitive_range out;
		struct mv_error *err = NULL;
		int r = guard_sensitive_add(m, vm_id, t->sensitive[i].gpa, t->sensitive[i].len, &out,
					    &err);
		if (r < 0)
			mv_log(MV_LOG_ERROR, "vm %s: sensitive range 0x%llx+0x%llx from the source not "
			       "registered here: %s", vm_id, (unsigned long long)t->sensitive[i].gpa,
			       (unsigned long long)t->sensitive[i].len, mv_error_msg(err, r));
		mv_error_free(err);
	}
}

static void incoming(struct vmmgr *m, int sock, const char *peer)
{
	static _Thread_local struct mv_migrate_config cfg;   /* 5 KiB */
	char arrived[MV_ID_LEN + 1] = "";
	struct mv_migrate_opts opts;
	struct mv_error *err = NULL;
	int r = mv_migrate_recv_config(sock, &cfg, &opts, CONFIG_MS, &err);
	if (r < 0) {
		mv_log(MV_LOG_WARN, "incoming migration from %s refused: %s", peer, mv_error_msg(err, r));
		mv_error_free(err);
		return;
	}
	pthread_mutex_lock(&m->lock);
	struct dvm *vm = admit(m, &cfg, peer, &err);
	pid_t pgid = 0;
	struct mv_ctl_hello hello = {0};
	int ctl = -1;
	uint32_t seq = 0;
	if (!vm)
		r = err ? err->code : -EIO;
	if (vm)
		r = vmm_spawn(m->cfg.vmm_path, vm, 0, &pgid, &err);
	if (vm && r == 0)
		r = vmm_connect(vm, 0, pgid, 10000, &hello, &ctl, &err);
	struct mv_mem_layout mem = vm ? vm->mem : (struct mv_mem_layout){0};
	pthread_mutex_unlock(&m->lock);
	if (r == 0) {
		/* Pages flow now, without the manager lock. */
		static _Thread_local struct mv_ctl_migrate_in in;
		memset(&in, 0, sizeof(in));
		in.cfg = cfg;
		in.opts.features = opts.features;
		in.opts.downtime_ms = opts.downtime_ms;
		int fds[MV_CTL_MAX_FDS];
		for (uint32_t i = 0; i < mem.n; i++)
			fds[i] = mem.r[i].fd;
		fds[mem.n] = sock;
		struct mv_ctl_msg reply;
		r = vmm_call_on(ctl, &seq, MV_CTL_MIGRATE_IN, &in, sizeof(in), fds, mem.n + 1, &reply,
				INCOMING_MS, &err);
	} else if (mv_migrate_send_nack(sock, r, mv_error_msg(err, r)) < 0) {
		mv_log(MV_LOG_WARN, "incoming migration from %s: NACK not sent", peer);
	}
	pthread_mutex_lock(&m->lock);
	if (vm && r == 0) {
		vm->ctl = ctl;
		vm->seq = seq;
		vm->info.pid = hello.pid;
		vm->info.state = MV_VM_RUNNING;
		snprintf(vm->info.migration.phase, sizeof(vm->info.migration.phase), "done");
		state_update(m, &vm->info);
		mv_log(MV_LOG_INFO, "vm %s (%s): arrived from %s, VMM pid %d", vm->info.name,
		       vm->info.id, peer, hello.pid);
		snprintf(arrived, sizeof(arrived), "%s", vm->info.id);
	} else {
		mv_log(MV_LOG_WARN, "incoming migration of '%s' from %s failed: %s", cfg.vm_name, peer,
		       mv_error_msg(err, r));
		if (vm) {
			vmm_kill_group(pgid);
			if (ctl >= 0)
				close(ctl);
			guard_keep_vm_removed(m, vm->info.id);
			state_delete(m, vm->info.id);
			vm_dir_clean(vm->dir);
			vmmgr_vm_free(m, vm);
		}
	}
	pthread_mutex_unlock(&m->lock);
	if (arrived[0])
		protect(m, arrived, &cfg.tenant);
	mv_error_free(err);
}

static void *listen_main(void *arg)
{
	struct vmmgr *m = arg;
	for (;;) {
		struct pollfd p = {.fd = m->mig_listen, .events = POLLIN};
		int n = poll(&p, 1, 200);
		pthread_mutex_lock(&m->lock);
		bool quit = m->quit;
		pthread_mutex_unlock(&m->lock);
		if (quit)
			break;
		if (n <= 0)
			continue;
		struct sockaddr_storage sa;
		socklen_t sl = sizeof(sa);
		int s = accept4(m->mig_listen, (struct sockaddr *)&sa, &sl, SOCK_CLOEXEC);
		if (s < 0)
			continue;
		char host[64] = "?", port[16] = "?", peer[96];
		getnameinfo((struct sockaddr *)&sa, sl, host, sizeof(host), port, sizeof(port),
			    NI_NUMERICHOST | NI_NUMERICSERV);
		snprintf(peer, sizeof(peer), "%s:%s", host, port);
		int one = 1;
		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		incoming(m, s, peer);   /* one at a time: each gets the host's whole bandwidth */
		close(s);
	}
	return NULL;
}

int migration_listen_start(struct vmmgr *m, const char *addr, struct mv_error **err)
{
	struct addrinfo *ai;
	int r = resolve(addr, true, &ai, err);
	if (r < 0)
		return r;
	int s = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(s, ai->ai_addr, ai->ai_addrlen) < 0 || listen(s, 8) < 0) {
		r = mv_err(err, -errno, "migration listener on %s: %s", addr, strerror(errno));
		if (s >= 0)
			close(s);
		freeaddrinfo(ai);
		return r;
	}
	freeaddrinfo(ai);
	m->mig_listen = s;
	r = pthread_create(&m->mig_thread, NULL, listen_main, m);
	if (r != 0) {
		close(s);
		m->mig_listen = -1;
		return mv_err(err, -r, "migration listener thread: %s", strerror(r));
	}
	return 0;
}

void migration_listen_stop(struct vmmgr *m)
{
	if (m->mig_listen < 0)
		return;
	pthread_join(m->mig_thread, NULL);   /* m->quit is set by watch_stop() first */
	close(m->mig_listen);
	m->mig_listen = -1;
}
