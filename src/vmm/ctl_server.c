/* memvisor-vmm's side of the control channel: listens on its socket, greets
 * each daemon connection with HELLO, answers requests one at a time. A daemon
 * that goes away only closes its connection; the VM runs on until the next. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "vmm_i.h"

static void reply(int c, const struct mv_ctl_msg *req, int status, const void *payload, uint32_t len,
		  const int *fds, unsigned nfds)
{
	struct mv_ctl_msg m;
	mv_ctl_msg_init(&m, req->type, status == 0 ? payload : NULL, status == 0 ? len : 0);
	m.seq = req->seq;
	m.flags = MV_CTL_F_REPLY;
	m.status = status;
	if (status == 0 && nfds) {
		memcpy(m.fds, fds, sizeof(int) * nfds);
		m.nfds = nfds;
	}
	if (mv_ctl_send(c, &m) < 0)
		mv_log(MV_LOG_WARN, "control reply type %u not sent", req->type);
}

/* Requests that touch the vCPUs wait while an outgoing migration owns them. */
static bool needs_vcpus(uint16_t type)
{
	return type == MV_CTL_PAUSE || type == MV_CTL_RESUME || type == MV_CTL_VERIFY ||
	       type == MV_CTL_SAVE_STATE || type == MV_CTL_STOP || type == MV_CTL_MIGRATE_OUT ||
	       type == MV_CTL_FUSE;
}

/* Handles one request; returns 1 when the VMM must exit. */
static int handle(struct vmm *v, int c, struct mv_ctl_msg *req)
{
	struct mv_error *err = NULL;
	int r = 0;
	if (needs_vcpus(req->type) && vmm_migrate_busy(v)) {
		reply(c, req, -EBUSY, NULL, 0, NULL, 0);
		return 0;
	}
	switch (req->type) {
	case MV_CTL_SETUP: {
		static struct mv_ctl_setup s;
		memcpy(&s, req->payload, sizeof(s));
		r = vmm_setup(v, &s, req->fds, req->nfds, &err);
		if (r < 0)
			mv_log(MV_LOG_ERROR, "setup refused: %s", mv_error_msg(err, r));
		mv_error_free(err);
		mv_ctl_msg_close_fds(req);    /* the mapping holds its own dups */
		reply(c, req, r, NULL, 0, NULL, 0);
#ifdef MV_VMM_TEST_CRASH_AFTER_SETUP
		/* Test build only: a VMM that dies right after taking a VM over. */
		if (r == 0 && s.resume)
			abort();
#endif
		return 0;
	}
	case MV_CTL_MIGRATE_OUT: {
		static struct mv_ctl_migrate_out o;   /* 5 KiB: off the stack */
		memcpy(&o, req->payload, sizeof(o));
		r = vmm_migrate_out(v, &o, req->fds[0], &err);
		if (r < 0) {
			mv_log(MV_LOG_WARN, "migration refused: %s", mv_error_msg(err, r));
			mv_ctl_msg_close_fds(req);
		}
		mv_error_free(err);
		reply(c, req, r, NULL, 0, NULL, 0);
		return 0;
	}
	case MV_CTL_MIGRATE_IN: {
		static struct mv_ctl_migrate_in in;
		memcpy(&in, req->payload, sizeof(in));
		r = vmm_migrate_in(v, &in, req->fds, req->nfds, &err);
		if (r < 0)
			mv_log(MV_LOG_ERROR, "incoming migration failed: %s", mv_error_msg(err, r));
		mv_error_free(err);
		mv_ctl_msg_close_fds(req);    /* the mapping holds its own dups */
		reply(c, req, r, NULL, 0, NULL, 0);
		return 0;
	}
	case MV_CTL_FUSE: {
		static struct mv_ctl_fuse f;          /* 8 KiB each: off the stack */
		static struct mv_ctl_fuse_reply out;
		memcpy(&f, req->payload, sizeof(f));
		r = vmm_fusion_fuse(v, &f, req->nfds ? req->fds[0] : -1, &out, &err);
		if (r < 0 && r != -EAGAIN)
			mv_log(MV_LOG_WARN, "fuse refused: %s", mv_error_msg(err, r));
		mv_error_free(err);
		reply(c, req, r, &out, sizeof(out), NULL, 0);
		return 0;
	}
	case MV_CTL_UNFUSE: {
		struct mv_ctl_unfuse out;
		r = vmm_fusion_unfuse_all(v, &out);
		reply(c, req, r, &out, sizeof(out), NULL, 0);
		return 0;
	}
	case MV_CTL_GUARD: {
		struct mv_ctl_guard g;
		struct mv_ctl_guard_reply out;
		memcpy(&g, req->payload, sizeof(g));
		pthread_mutex_lock(&v->lock);
		r = vmm_guard(v, &g, &out, &err);
		pthread_mutex_unlock(&v->lock);
		if (r < 0)
			mv_log(MV_LOG_WARN, "guard: %s", mv_error_msg(err, r));
		mv_error_free(err);
		reply(c, req, r, &out, sizeof(out), NULL, 0);
		return 0;
	}
	case MV_CTL_SAMPLE: {
		static struct mv_ctl_sample sreq;
		static struct mv_ctl_sample_reply out;
		memcpy(&sreq, req->payload, sizeof(sreq));
		r = v->ready ? vmm_fusion_sample(v, &sreq, &out) : -ENODEV;
		reply(c, req, r, &out, sizeof(out), NULL, 0);
		return 0;
	}
	case MV_CTL_THROTTLE: {
		struct mv_ctl_throttle t;
		memcpy(&t, req->payload, sizeof(t));
		r = v->ready && v->vcpus ? 0 : -ENODEV;
		if (r == 0) {
			mv_vcpus_set_throttle(v->vcpus, t.pct);
			mv_log(MV_LOG_INFO, "vCPUs throttled to %u%%", 100 - t.pct);
		}
		reply(c, req, r, NULL, 0, NULL, 0);
		return 0;
	}
	case MV_CTL_RELOCATE: {
		struct mv_ctl_relocate rl;
		struct mv_ctl_relocate_reply out;
		memcpy(&rl, req->payload, sizeof(rl));
		r = vmm_relocate(v, &rl, &out, &err);
		if (r < 0)
			mv_log(MV_LOG_WARN, "relocate: %s", mv_error_msg(err, r));
		else
			mv_log(MV_LOG_INFO, "relocate: gpa 0x%llx+0x%llx: %llu pages moved to new "
			       "frames (fused ones copied back), %llu left busy, vCPUs paused %llu us",
			       (unsigned long long)rl.gpa, (unsigned long long)rl.len,
			       (unsigned long long)out.moved, (unsigned long long)out.skipped,
			       (unsigned long long)out.elapsed_us);
		mv_error_free(err);
		reply(c, req, r, &out, sizeof(out), NULL, 0);
		return 0;
	}
	case MV_CTL_MIGRATE_CANCEL:
		vmm_migrate_cancel(v);
		reply(c, req, 0, NULL, 0, NULL, 0);
		return 0;
	case MV_CTL_SAVE_STATE: {
		static struct mv_ctl_states out;   /* 8 KiB: keep it off the stack */
		r = vmm_save_state(v, &out);
		reply(c, req, r, &out, sizeof(out), NULL, 0);
		return 0;
	}
	case MV_CTL_STATUS: {
		struct mv_ctl_status st;
		vmm_status(v, &st);
		vmm_migrate_status(v, &st);
		reply(c, req, 0, &st, sizeof(st), NULL, 0);
		return 0;
	}
	case MV_CTL_PAUSE:
		reply(c, req, vmm_pause(v), NULL, 0, NULL, 0);
		return 0;
	case MV_CTL_RESUME:
		reply(c, req, vmm_resume(v), NULL, 0, NULL, 0);
		return 0;
	case MV_CTL_VERIFY: {
		struct mv_ctl_verify out;
		vmm_verify(v, &out);
		reply(c, req, 0, &out, sizeof(out), NULL, 0);
		return 0;
	}
	case MV_CTL_GET_MEM: {
		struct mv_ctl_mem out;
		int fds[MV_MEM_MAX_REGIONS];
		unsigned n = 0;
		r = vmm_get_mem(v, &out, fds, &n);
		reply(c, req, r, &out, sizeof(out), fds, n);
		return 0;
	}
	case MV_CTL_STOP:
		v->state = MV_VMM_STOPPING;
		vmm_teardown(v);
		reply(c, req, 0, NULL, 0, NULL, 0);
		return 1;
	default:
		reply(c, req, -EOPNOTSUPP, NULL, 0, NULL, 0);
		return 0;
	}
}

static void hello(struct vmm *v, int c)
{
	struct mv_ctl_hello h = {.pid = (int32_t)getpid(), .state = v->state, .ready = v->ready};
	snprintf(h.vm_id, sizeof(h.vm_id), "%s", v->id);
	struct mv_ctl_msg m;
	mv_ctl_msg_init(&m, MV_CTL_HELLO, &h, sizeof(h));
	if (mv_ctl_send(c, &m) < 0)
		mv_log(MV_LOG_WARN, "HELLO not sent");
}

int vmm_serve(struct vmm *v)
{
	int ls = mv_unix_listen(v->ctl_path, 0600, 4);
	if (ls < 0) {
		mv_log(MV_LOG_ERROR, "listen on %s: %s", v->ctl_path, strerror(-ls));
		return 1;
	}
	mv_log(MV_LOG_INFO, "vm %s: control channel on %s", v->id, v->ctl_path);
	for (;;) {
		int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0) {
			if (errno == EINTR)
				continue;
			mv_log(MV_LOG_ERROR, "accept: %s", strerror(errno));
			return 1;
		}
		hello(v, c);
		for (;;) {
			/* A newer daemon connection replaces this one (the old daemon died). */
			struct pollfd p[2] = {{.fd = c, .events = POLLIN}, {.fd = ls, .events = POLLIN}};
			if (poll(p, 2, -1) < 0) {
				if (errno == EINTR)
					continue;
				break;
			}
			if (p[1].revents & POLLIN && !(p[0].revents & POLLIN))
				break;
			struct mv_ctl_msg req;
			struct mv_error *err = NULL;
			int r = mv_ctl_recv(c, &req, 5000, &err);
			if (r < 0) {
				if (r != -EPIPE)
					mv_log(MV_LOG_WARN, "control channel: %s", mv_error_msg(err, r));
				mv_error_free(err);
				break;
			}
			if (req.flags & MV_CTL_F_REPLY) {
				mv_ctl_msg_close_fds(&req);
				continue;
			}
			if (handle(v, c, &req)) {
				close(c);
				close(ls);
				unlink(v->ctl_path);
				return 0;
			}
		}
		close(c);
	}
}
