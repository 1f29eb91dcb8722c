/* VMM processes from the daemon's side: spawn memvisor-vmm (its monitor parent
 * records the exit status in <vmdir>/exit), connect to its control socket,
 * make calls, read how it ended. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "daemon_i.h"

/* A VMM incarnation's files: its control socket and its monitor's exit record. */
void vmm_path(const struct dvm *vm, uint32_t gen, const char *what, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s.%u%s", vm->dir, what, gen, strcmp(what, "ctl") ? "" : ".sock");
}

int vmm_spawn(const char *bin, struct dvm *vm, uint32_t gen, pid_t *pgid, struct mv_error **err)
{
	char ctl[PATH_MAX + 32], exitf[PATH_MAX + 32], logf[PATH_MAX + 16];
	vmm_path(vm, gen, "ctl", ctl, sizeof(ctl));
	vmm_path(vm, gen, "exit", exitf, sizeof(exitf));
	snprintf(logf, sizeof(logf), "%s/vmm.log", vm->dir);
	unlink(exitf);
	pid_t pid = fork();
	if (pid < 0)
		return mv_err(err, -errno, "fork: %s", strerror(errno));
	if (pid == 0) {
		/* Own session: the VMM must outlive the daemon and its terminal. */
		setsid();
		int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
		int nul = open("/dev/null", O_RDONLY);
		if (fd >= 0) {
			dup2(nul, 0);
			dup2(fd, 1);
			dup2(fd, 2);
		}
		syscall(SYS_close_range, 3U, ~0U, 0U);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execl(bin, "memvisor-vmm", "--id", vm->info.id, "--ctl", ctl, "--exit-file", exitf,
		      (char *)NULL);
		dprintf(2, "exec %s: %s\n", bin, strerror(errno));
		_exit(127);
	}
	*pgid = pid;   /* setsid(): the monitor leads a group that holds the VMM too */
	return 0;
}

int vmm_connect(struct dvm *vm, uint32_t gen, pid_t child, int timeout_ms,
		struct mv_ctl_hello *hello, int *sock, struct mv_error **err)
{
	char ctl[PATH_MAX + 32];
	vmm_path(vm, gen, "ctl", ctl, sizeof(ctl));
	uint64_t deadline = mv_now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	int s;
	for (;;) {
		s = mv_unix_connect(ctl);
		if (s >= 0 || mv_now_ns() > deadline)
			break;
		int st;
		/* A binary that died before listening fails now, not at the deadline. */
		if (child > 0 && waitpid(child, &st, WNOHANG) == child)
			return mv_err(err, -ECHILD, "the VMM process %s before it listened",
				      WIFEXITED(st) ? "exited" : "was killed");
		usleep(5000);
	}
	if (s < 0)
		return mv_err(err, s, "VMM control socket %s: %s", ctl, strerror(-s));
	struct mv_ctl_msg m;
	int r = mv_ctl_recv(s, &m, timeout_ms, err);
	if (r < 0) {
		close(s);
		return r;
	}
	if (m.type != MV_CTL_HELLO || (m.flags & MV_CTL_F_REPLY)) {
		mv_ctl_msg_close_fds(&m);
		close(s);
		return mv_err(err, -EPROTO, "VMM did not greet with HELLO");
	}
	memcpy(hello, m.payload, sizeof(*hello));
	if (strcmp(hello->vm_id, vm->info.id) != 0) {
		close(s);
		return mv_err(err, -EPROTO, "VMM at %s is VM %s, not %s", ctl, hello->vm_id, vm->info.id);
	}
	*sock = s;
	return 0;
}

int vmm_call_on(int sock, uint32_t *seq, uint16_t type, const void *payload, uint32_t len,
		const int *fds, unsigned nfds, struct mv_ctl_msg *reply, int timeout_ms,
		struct mv_error **err)
{
	/* Off the stack: a frame is 16 KiB. Per thread: incoming migrations call
	 * without the manager lock. */
	static _Thread_local struct mv_ctl_msg req;
	mv_ctl_msg_init(&req, type, payload, len);
	req.seq = ++*seq;
	if (nfds) {
		memcpy(req.fds, fds, sizeof(int) * nfds);
		req.nfds = nfds;
	}
	return mv_ctl_call(sock, &req, reply, timeout_ms, err);
}

int vmm_call(struct dvm *vm, uint16_t type, const void *payload, uint32_t len, const int *fds,
	     unsigned nfds, struct mv_ctl_msg *reply, int timeout_ms, struct mv_error **err)
{
	if (vm->ctl < 0)
		return mv_err(err, -ENOTCONN, "VM %s has no running VMM", vm->info.name);
	return vmm_call_on(vm->ctl, &vm->seq, type, payload, len, fds, nfds, reply, timeout_ms, err);
}

bool vmm_read_exit(struct dvm *vm, uint32_t gen, int wait_ms)
{
	char path[PATH_MAX + 32], buf[64] = {0};
	vmm_path(vm, gen, "exit", path, sizeof(path));
	uint64_t deadline = mv_now_ns() + (uint64_t)wait_ms * 1000000ULL;
	int fd;
	while ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 && mv_now_ns() < deadline)
		usleep(10000);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	int v;
	if (n > 0 && sscanf(buf, "code %d", &v) == 1) {
		vm->info.exit_code = v;
		vm->info.exit_signal = 0;
		snprintf(vm->info.exit_reason, sizeof(vm->info.exit_reason), "exited with code %d", v);
	} else if (n > 0 && sscanf(buf, "signal %d", &v) == 1) {
		vm->info.exit_code = -1;
		vm->info.exit_signal = v;
		snprintf(vm->info.exit_reason, sizeof(vm->info.exit_reason), "killed by signal %d (%s)",
			 v, strsignal(v));
	} else {
		return false;
	}
	return true;
}

void vmm_kill(pid_t pid)
{
	if (pid > 0)
		kill(pid, SIGKILL);
}

void vmm_kill_group(pid_t pgid)
{
	if (pgid > 0)
		kill(-pgid, SIGKILL);
}
