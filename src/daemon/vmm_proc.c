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
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "daemon_i.h"

int vmm_spawn(struct vmmgr *m, struct dvm *vm, struct mv_error **err)
{
	char ctl[PATH_MAX + 16], exitf[PATH_MAX + 16], logf[PATH_MAX + 16];
	snprintf(ctl, sizeof(ctl), "%s/ctl.sock", vm->dir);
	snprintf(exitf, sizeof(exitf), "%s/exit", vm->dir);
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
		execl(m->cfg.vmm_path, "memvisor-vmm", "--id", vm->info.id, "--ctl", ctl,
		      "--exit-file", exitf, (char *)NULL);
		dprintf(2, "exec %s: %s\n", m->cfg.vmm_path, strerror(errno));
		_exit(127);
	}
	return 0;
}

static int connect_once(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	strcpy(a.sun_path, path);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -errno;
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = -errno;
		close(s);
		return e;
	}
	return s;
}

int vmm_connect(struct dvm *vm, int timeout_ms, struct mv_ctl_hello *hello, struct mv_error **err)
{
	char ctl[PATH_MAX + 16];
	snprintf(ctl, sizeof(ctl), "%s/ctl.sock", vm->dir);
	uint64_t deadline = mv_now_ns() + (uint64_t)timeout_ms * 1000000ULL;
	int s;
	for (;;) {
		s = connect_once(ctl);
		if (s >= 0 || mv_now_ns() > deadline)
			break;
		usleep(10000);
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
	if (vm->ctl >= 0)
		close(vm->ctl);
	vm->ctl = s;
	return 0;
}

int vmm_call(struct dvm *vm, uint16_t type, const void *payload, uint32_t len, const int *fds,
	     unsigned nfds, struct mv_ctl_msg *reply, int timeout_ms, struct mv_error **err)
{
	if (vm->ctl < 0)
		return mv_err(err, -ENOTCONN, "VM %s has no running VMM", vm->info.name);
	struct mv_ctl_msg req;
	mv_ctl_msg_init(&req, type, payload, len);
	req.seq = ++vm->seq;
	if (nfds) {
		memcpy(req.fds, fds, sizeof(int) * nfds);
		req.nfds = nfds;
	}
	return mv_ctl_call(vm->ctl, &req, reply, timeout_ms, err);
}

bool vmm_read_exit(struct dvm *vm, int wait_ms)
{
	char path[PATH_MAX + 16], buf[64] = {0};
	snprintf(path, sizeof(path), "%s/exit", vm->dir);
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

void vmm_kill(struct dvm *vm)
{
	if (vm->info.pid > 0)
		kill(vm->info.pid, SIGKILL);
}
