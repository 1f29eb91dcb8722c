/* Hand-over: moves a live VM to a new VMM process on this host without
 * copying guest RAM. The new VMM maps the daemon's memfds (a new HVA onto the
 * same physical pages) and continues from the old vCPUs' states. Serves both
 * hot migration and VMM live upgrade. Called with the manager lock held.
 *
 *   1. start the new VMM (outside the pause: start-up is not downtime)
 *   2. old VMM: SAVE_STATE (vCPUs parked at an op boundary)      <- pause
 *   3. new VMM: SETUP with the memfds and states, paused; STATUS health check
 *   4. new VMM: RESUME                                           <- resumed
 *   5. old VMM: STOP
 * A failure in 1-4 kills the new VMM and resumes the old one: the guest RAM was
 * never written by the new one, so the VM is unharmed. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "daemon_i.h"

#define CONNECT_MS 10000
#define CALL_MS 10000

static int health_check(int sock, uint32_t *seq, struct mv_error **err)
{
	struct mv_ctl_msg reply;
	int r = vmm_call_on(sock, seq, MV_CTL_STATUS, NULL, 0, NULL, 0, &reply, 2000, err);
	if (r < 0)
		return r;
	struct mv_ctl_status st;
	memcpy(&st, reply.payload, sizeof(st));
	if (st.state != MV_VMM_PAUSED)
		return mv_err(err, -EPROTO, "new VMM reports state %u after SETUP, not paused", st.state);
	return 0;
}

static void remove_gen_files(struct dvm *vm, uint32_t gen)
{
	char p[PATH_MAX + 32];
	vmm_path(vm, gen, "ctl", p, sizeof(p));
	unlink(p);
	vmm_path(vm, gen, "exit", p, sizeof(p));
	unlink(p);
}

int handover_vm(struct vmmgr *m, struct dvm *vm, const char *bin, struct mv_handover_result *res)
{
	memset(res, 0, sizeof(*res));
	snprintf(res->vm, sizeof(res->vm), "%s", vm->info.name);
	snprintf(res->vmm, sizeof(res->vmm), "%s", bin);
	res->old_pid = vm->info.pid;
	uint64_t t0 = mv_now_ns(), t_pause = 0;
	uint32_t gen = vm->info.vmm_gen + 1, seq = 0;
	bool was_running = vm->info.state == MV_VM_RUNNING, paused_old = false;
	struct mv_ctl_hello hello = {0};
	struct mv_ctl_msg reply;
	struct mv_error *err = NULL;
	pid_t pgid = 0;
	int sock = -1;

	/* The new VMM maps only the memfds: fused pages go back into them first. */
	int r = fusion_vm_unfuse(m, vm, &err);
	if (r == 0)
		r = vmm_spawn(bin, vm, gen, &pgid, &err);
	if (r == 0)
		r = vmm_connect(vm, gen, pgid, CONNECT_MS, &hello, &sock, &err);
	if (r < 0)
		goto rollback;
	t_pause = mv_now_ns();
	r = vmm_call(vm, MV_CTL_SAVE_STATE, NULL, 0, NULL, 0, &reply, CALL_MS, &err);
	paused_old = true;
	if (r < 0)
		goto rollback;
	static struct mv_ctl_states states;   /* 8 KiB; the manager lock serializes us */
	memcpy(&states, reply.payload, sizeof(states));
	if (states.nvcpus != vm->info.vcpus) {
		r = mv_err(&err, -EPROTO, "old VMM saved %u vCPUs, the VM has %u", states.nvcpus,
			   vm->info.vcpus);
		goto rollback;
	}
	r = vmmgr_send_setup(vm, sock, &seq, states.states, true, &err);
	if (r == 0)
		r = health_check(sock, &seq, &err);
	if (r == 0 && was_running)
		r = vmm_call_on(sock, &seq, MV_CTL_RESUME, NULL, 0, NULL, 0, &reply, CALL_MS, &err);
	if (r < 0)
		goto rollback;
	res->downtime_us = (mv_now_ns() - t_pause) / 1000;

	/* Committed: the new VMM runs the VM. Retire the old one. */
	uint32_t old_gen = vm->info.vmm_gen;
	vm->stop_requested = true;
	if (vmm_call(vm, MV_CTL_STOP, NULL, 0, NULL, 0, &reply, CALL_MS, NULL) < 0)
		vmm_kill(vm->info.pid);
	vm->stop_requested = false;
	close(vm->ctl);
	vm->ctl = sock;
	vm->seq = seq;
	vm->info.pid = hello.pid;
	vm->info.vmm_gen = gen;
	state_update(m, &vm->info);
	if (!vmm_read_exit(vm, old_gen, 2000))
		mv_log(MV_LOG_WARN, "vm %s: old VMM pid %d left no exit record", vm->info.name,
		       res->old_pid);
	memset(vm->info.exit_reason, 0, sizeof(vm->info.exit_reason));
	vm->info.exit_code = vm->info.exit_signal = 0;
	remove_gen_files(vm, old_gen);
	res->ok = true;
	res->new_pid = hello.pid;
	res->total_us = (mv_now_ns() - t0) / 1000;
	m->handovers++;
	mv_log(MV_LOG_INFO, "vm %s: handed over from VMM pid %d to pid %d (%s), downtime %llu us",
	       vm->info.name, res->old_pid, res->new_pid, bin,
	       (unsigned long long)res->downtime_us);
	return 0;

rollback:
	vmm_kill_group(pgid);
	if (sock >= 0)
		close(sock);
	remove_gen_files(vm, gen);
	if (paused_old && was_running &&
	    vmm_call(vm, MV_CTL_RESUME, NULL, 0, NULL, 0, &reply, CALL_MS, NULL) < 0)
		mv_log(MV_LOG_ERROR, "vm %s: old VMM did not resume after a failed hand-over",
		       vm->info.name);
	snprintf(res->message, sizeof(res->message),
		 "hand-over to %s failed: %s; the VM stays on VMM pid %d", bin,
		 mv_error_msg(err, r), vm->info.pid);
	mv_error_free(err);
	res->total_us = (mv_now_ns() - t0) / 1000;
	m->handover_failures++;
	mv_log(MV_LOG_ERROR, "vm %s: %s", vm->info.name, res->message);
	return -EIO;
}
