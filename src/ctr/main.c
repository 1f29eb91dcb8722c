/* memvisor-ctr: one per container, the conmon pattern. memvisord starts it in
 * a session of its own, so it outlives a daemon restart, and it keeps the
 * container's FUSE root alive for as long as the container runs: it mounts
 * the root (mv_image_fs_mount), writes the OCI bundle, runs `crun run` with
 * the output appended to <dir>/log, writes its fs counters to
 * <dir>/stats.json every second, turns SIGTERM into `crun kill` (KILL after
 * a grace period) and, when the container ends, records `code N` or
 * `signal N` in <dir>/exit, deletes the crun container and unmounts.
 *   memvisor-ctr --dir DIR      (DIR/ctr.json written by memvisord) */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "memvisor/image.h"
#include "memvisor/util.h"
#include "ctr_i.h"

static char dir[PATH_MAX];

static void path_of(const char *what, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", dir, what);
}

static void write_stats(struct mv_image_fs *fs)
{
	struct mv_image_fs_stats st = {0};
	if (fs)
		mv_image_fs_stats(fs, &st);
	char buf[1024], path[PATH_MAX + 32];
	int n = mv_image_fs_stats_json(&st, buf, sizeof(buf));
	path_of("stats.json", path, sizeof(path));
	if (mv_write_file_atomic(path, buf, (size_t)n) < 0)
		mv_log(MV_LOG_WARN, "cannot write %s", path);
}

static void write_exit(const char *text)
{
	char path[PATH_MAX + 32];
	path_of("exit", path, sizeof(path));
	if (mv_write_file_atomic(path, text, strlen(text)) < 0)
		mv_log(MV_LOG_ERROR, "cannot write %s: %s", path, strerror(errno));
}

/* crun cannot run on a hybrid cgroup layout whose v2 hierarchy has controllers
 * ("cgroups in hybrid mode not supported"): such hosts get the v2 mount
 * hidden in crun's own mount namespace, so crun uses the v1 hierarchies. */
static void hide_hybrid_cgroup2(void)
{
	char buf[256] = "";
	int fd = open("/sys/fs/cgroup/unified/cgroup.controllers", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n > 0 && buf[0] != '\n')
		(void)umount2("/sys/fs/cgroup/unified", MNT_DETACH);
}

/* Whether "/" is a mount point here. Under chroot(2) it is not (mountinfo
 * lists only mounts inside the root), and crun's first step, making "/"
 * private, fails with EINVAL ("set propagation for `/`"). */
static bool root_is_mount(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return true;
	char line[4096];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f)) {
		/* "id parent major:minor root mountpoint ..." */
		char mp[8];
		found = sscanf(line, "%*s %*s %*s %*s %7s", mp) == 1 && strcmp(mp, "/") == 0;
	}
	fclose(f);
	return found;
}

/* Runs crun with args; out_fd gets its stdout and stderr (-1: /dev/null).
 * Returns the child's pid (wait=false) or its wait status (wait=true). */
static pid_t run_crun(const struct ctr_spec *s, const char *const *args, int out_fd, bool own_ns,
		      bool wait)
{
	const char *argv[16];
	size_t n = 0;
	argv[n++] = "crun";
	for (size_t i = 0; args[i] && n < 15; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);
		dup2(nul, 0);
		dup2(out_fd >= 0 ? out_fd : nul, 1);
		dup2(out_fd >= 0 ? out_fd : nul, 2);
		syscall(SYS_close_range, 3U, ~0U, 0U);
		if (own_ns) {
			if (unshare(CLONE_NEWNS) == 0) {
				/* Under chroot, re-root (in this namespace only) at a
				 * recursive bind of "/" so it is a mount point. */
				char nr[PATH_MAX + 16];
				path_of("hostroot", nr, sizeof(nr));
				if (!root_is_mount() && (mkdir(nr, 0700) == 0 || errno == EEXIST) &&
				    mount("/", nr, NULL, MS_BIND | MS_REC, NULL) == 0 &&
				    chroot(nr) == 0)
					(void)chdir("/");
				if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0)
					hide_hybrid_cgroup2();
			}
		}
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execv(s->crun, (char *const *)argv);
		dprintf(2, "memvisor-ctr: exec %s: %s\n", s->crun, strerror(errno));
		_exit(127);
	}
	if (!wait)
		return pid;
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return st;
}

static void crun_kill(const struct ctr_spec *s, const char *sig)
{
	const char *a[] = {"kill", s->id, sig, NULL};
	int st = run_crun(s, a, -1, false, true);
	mv_log(MV_LOG_INFO, "crun kill %s %s: status %d", s->id, sig, st);
}

static int setup(const struct ctr_spec *s, struct mv_image_fs **fs, char *bundle, size_t blen,
		 struct mv_error **err)
{
	char rootfs[PATH_MAX + 16], upper[PATH_MAX + 16], cfgpath[PATH_MAX + 32];
	struct mv_image_paths p = {.store_dir = s->store_dir, .mapping_db = s->mapping_db,
				   .cache_dir = s->cache_dir[0] ? s->cache_dir : NULL,
				   .insecure = s->insecure};
	char *icfg = NULL, *rcfg = NULL;
	size_t ilen = 0;
	path_of("rootfs", rootfs, sizeof(rootfs));
	path_of("upper", upper, sizeof(upper));
	snprintf(bundle, blen, "%s/bundle", dir);
	if (mv_mkdir_p(rootfs, 0755) < 0 || mv_mkdir_p(upper, 0700) < 0 || mv_mkdir_p(bundle, 0700) < 0)
		return mv_err(err, -errno, "mkdir in %s: %s", dir, strerror(errno));
	int r = mv_image_config(&p, s->image, &icfg, &ilen, err);
	if (r < 0)
		return r;
	struct mv_image_fs_config fc = {.mapping_db = s->mapping_db, .image = s->image,
					.container = s->id, .store_dir = s->store_dir,
					.upper_dir = upper, .registry_url = s->registry_url,
					.repo = s->repo, .cache_dir = p.cache_dir};
	/* A shim restarted over a stale mount (its predecessor was killed) first clears it. */
	(void)umount2(rootfs, MNT_DETACH);
	r = mv_image_fs_mount(rootfs, &fc, fs, err);
	if (r < 0)
		goto out;
	r = mv_ctr_bundle_config(s, icfg, ilen, rootfs, s->id, &rcfg, err);
	if (r < 0)
		goto out;
	snprintf(cfgpath, sizeof(cfgpath), "%s/config.json", bundle);
	if (mv_write_file_atomic(cfgpath, rcfg, strlen(rcfg)) < 0)
		r = mv_err(err, -errno, "write %s: %s", cfgpath, strerror(errno));
out:
	free(icfg);
	free(rcfg);
	return r;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"dir", required_argument, NULL, 'd'}, {0}};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o != 'd' || strlen(optarg) >= sizeof(dir) - 64 || optarg[0] != '/') {
			fprintf(stderr, "usage: memvisor-ctr --dir /ABSOLUTE/CONTAINER/DIR\n");
			return 2;
		}
		snprintf(dir, sizeof(dir), "%s", optarg);
	}
	if (!dir[0] || optind != argc) {
		fprintf(stderr, "usage: memvisor-ctr --dir /ABSOLUTE/CONTAINER/DIR\n");
		return 2;
	}
	mv_log_set_prog("memvisor-ctr");
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	char path[PATH_MAX + 32], bundle[PATH_MAX + 16], pidf[PATH_MAX + 16], logp[PATH_MAX + 16];
	struct ctr_spec s;
	struct mv_error *err = NULL;
	struct mv_image_fs *fs = NULL;
	path_of("ctr.json", path, sizeof(path));
	int r = mv_ctr_spec_load(path, &s, &err);
	if (r < 0) {
		mv_log(MV_LOG_ERROR, "%s", mv_error_msg(err, r));
		mv_error_free(err);
		write_exit("code -1 setup: bad ctr.json\n");
		return 1;
	}
	/* For whoever must clean up after a daemon that is gone (tests, operators). */
	char pidtext[32];
	path_of("shim.pid", path, sizeof(path));
	snprintf(pidtext, sizeof(pidtext), "%d\n", (int)getpid());
	if (mv_write_file_atomic(path, pidtext, strlen(pidtext)) < 0)
		mv_log(MV_LOG_WARN, "cannot write %s", path);
	path_of("log", logp, sizeof(logp));
	int logfd = open(logp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	r = setup(&s, &fs, bundle, sizeof(bundle), &err);
	if (r < 0) {
		char msg[600];
		snprintf(msg, sizeof(msg), "memvisor: container setup failed: %s\n", mv_error_msg(err, r));
		if (logfd >= 0 && write(logfd, msg, strlen(msg)) < 0)
			mv_log(MV_LOG_WARN, "log write failed");
		mv_log(MV_LOG_ERROR, "%s", msg);
		mv_error_free(err);
		if (fs)
			mv_image_fs_unmount(fs);
		write_stats(NULL);
		snprintf(msg, sizeof(msg), "code -1 setup failed\n");
		write_exit(msg);
		mv_ctr_spec_free(&s);
		return 1;
	}
	path_of("pid", pidf, sizeof(pidf));
	unlink(pidf);
	const char *run_args[] = {"run", "--bundle", bundle, "--pid-file", pidf, s.id, NULL};
	/* A container of the same id left behind by a killed shim would block the run. */
	const char *del_args[] = {"delete", "--force", s.id, NULL};
	(void)run_crun(&s, del_args, -1, false, true);
	pid_t crun = run_crun(&s, run_args, logfd, true, false);
	if (crun < 0) {
		mv_log(MV_LOG_ERROR, "fork: %s", strerror(-crun));
		mv_image_fs_unmount(fs);
		write_exit("code -1 fork failed\n");
		mv_ctr_spec_free(&s);
		return 1;
	}
	mv_log(MV_LOG_INFO, "container %s: crun pid %d", s.id, (int)crun);
	write_stats(fs);
	int status = 0;
	bool done = false, stopping = false;
	uint64_t kill_at = 0;
	while (!done) {
		struct timespec ts = {1, 0};
		siginfo_t si;
		int sig = sigtimedwait(&set, &si, &ts);
		if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
			if (!stopping) {
				stopping = true;
				kill_at = mv_now_ns() + (uint64_t)s.stop_grace_ms * 1000000ULL;
				crun_kill(&s, "TERM");
			}
		}
		pid_t w = waitpid(crun, &status, WNOHANG);
		if (w == crun)
			done = true;
		if (!done && stopping && kill_at && mv_now_ns() >= kill_at) {
			crun_kill(&s, "KILL");
			kill_at = 0;
		}
		write_stats(fs);
	}
	char ex[64];
	if (WIFEXITED(status))
		snprintf(ex, sizeof(ex), "code %d\n", WEXITSTATUS(status));
	else
		snprintf(ex, sizeof(ex), "signal %d\n", WTERMSIG(status));
	mv_log(MV_LOG_INFO, "container %s ended: %s", s.id, ex);
	(void)run_crun(&s, del_args, -1, false, true);
	write_stats(fs);
	mv_image_fs_unmount(fs);
	if (logfd >= 0)
		close(logfd);
	write_exit(ex);
	mv_ctr_spec_free(&s);
	return 0;
}
