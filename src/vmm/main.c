/* memvisor-vmm: one VM per process. Started by memvisord; a small monitor
 * parent records the VMM's exit status in a file so a daemon that was down
 * when the VMM died can still say how it died. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "vmm_i.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: memvisor-vmm --id ID --ctl SOCKET [--exit-file PATH]\n"
		   "Runs one VM; started by memvisord, which sends guest RAM and the\n"
		   "workload over the control socket. --exit-file: a monitor process\n"
		   "records the VMM's exit status there.\n");
}

static void write_exit(const char *path, int status)
{
	char buf[64];
	int n;
	if (WIFEXITED(status))
		n = snprintf(buf, sizeof(buf), "code %d\n", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		n = snprintf(buf, sizeof(buf), "signal %d\n", WTERMSIG(status));
	else
		n = snprintf(buf, sizeof(buf), "unknown %d\n", status);
	if (mv_write_file_atomic(path, buf, (size_t)n) < 0)
		mv_log(MV_LOG_ERROR, "cannot record exit status in %s", path);
}

/* Forks the VMM; the parent stays as its monitor and never returns. */
static void become_monitored(const char *exit_path)
{
	unlink(exit_path);
	pid_t child = fork();
	if (child < 0) {
		mv_log(MV_LOG_ERROR, "fork: %s", strerror(errno));
		exit(1);
	}
	if (child == 0) {
		prctl(PR_SET_NAME, "memvisor-vmm");
		return;
	}
	prctl(PR_SET_NAME, "mv-vmm-monitor");
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	int st;
	while (waitpid(child, &st, 0) < 0)
		if (errno != EINTR)
			exit(1);
	write_exit(exit_path, st);
	exit(0);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"id", required_argument, NULL, 'i'},
		{"ctl", required_argument, NULL, 'c'},
		{"exit-file", required_argument, NULL, 'e'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char *id = NULL, *ctl = NULL, *exit_path = NULL;
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'i': id = optarg; break;
		case 'c': ctl = optarg; break;
		case 'e': exit_path = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!id || !ctl || optind != argc || strlen(id) >= 24) {
		usage(stderr);
		return 2;
	}
	mv_log_set_prog("memvisor-vmm");
	signal(SIGPIPE, SIG_IGN);
	if (exit_path)
		become_monitored(exit_path);
	/* After the sanitizers' own handlers, which the fusion handler chains to. */
	if (vmm_fusion_install() < 0)
		mv_log(MV_LOG_WARN, "no SIGSEGV handler: page fusion unavailable");
	struct vmm v = {.ctl_path = ctl, .state = MV_VMM_WAITING};
	snprintf(v.id, sizeof(v.id), "%s", id);
	pthread_mutex_init(&v.lock, NULL);
	pthread_mutex_init(&v.mig_lock, NULL);
	v.mig_sock = -1;
	pthread_condattr_t ca;   /* the sampler sleeps on CLOCK_MONOTONIC deadlines */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&v.sampler_cv, &ca);
	pthread_cond_init(&v.sync_done, NULL);
	pthread_condattr_destroy(&ca);
	int rc = vmm_serve(&v);
	vmm_teardown(&v);
	mv_log(MV_LOG_INFO, "vm %s: exiting (%d)", v.id, rc);
	return rc;
}
