/* memvisord: the host daemon. Flags, signals and wiring only; the VM manager
 * (vmmgr.c) does the work and the api module serves it. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "memvisor/guard.h"
#include "memvisor/util.h"
#include "daemon_i.h"

#define DEFAULT_SOCKET "/run/memvisor/memvisord.sock"
#define DEFAULT_STATE "/var/lib/memvisor"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: memvisord [--socket PATH] [--state-dir DIR] [--mem-capacity SIZE] [--vmm PATH]\n"
		"The memvisor host daemon: owns guest RAM, runs one memvisor-vmm per VM and\n"
		"serves the HTTP+JSON API on a Unix socket.\n"
		"  --socket PATH        API socket (default $MEMVISOR_SOCKET or " DEFAULT_SOCKET ")\n"
		"  --state-dir DIR      SQLite state and per-VM files (default " DEFAULT_STATE ")\n"
		"  --mem-capacity SIZE  guest memory this host admits (default: MemTotal - 512M)\n"
		"  --vmm PATH           memvisor-vmm binary (default: next to memvisord)\n"
		"  --migrate-listen HOST:PORT  accept live migrations from other hosts there\n"
		"  --fusion-rate N      page fusion scans at most N pages/s (default 20000; 0: off)\n"
		"  --guard-colours N|auto  side-channel guard: flag other VMs' frames of a sensitive\n"
		"                       range's cache colours (N colours, a power of two; auto: this\n"
		"                       host's LLC; default 0: off)\n"
		"  --guard-row-shift N  ... and of its DRAM-row neighbourhoods (PFN >> N; default 0: off)\n"
		"  --image-cache DIR    host-wide shared image cache, may be shared by several daemons\n"
		"                       (default: <state-dir>/cache)\n"
		"  --insecure-registry  plain http to registries that are not on loopback\n"
		"  --ctr PATH           memvisor-ctr (container shim) binary (default: next to memvisord)\n"
		"  --crun PATH          the OCI runtime containers run with (default /usr/bin/crun)\n");
}

/* Next to memvisord when installed, ../vmm/ in the build tree. */
static const char *default_vmm(char *path, size_t len)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return "memvisor-vmm";
	self[n] = '\0';
	const char *dir = dirname(self);
	snprintf(path, len, "%s/memvisor-vmm", dir);
	if (access(path, X_OK) == 0)
		return path;
	snprintf(path, len, "%s/../vmm/memvisor-vmm", dir);
	return path;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"socket", required_argument, NULL, 's'},
		{"state-dir", required_argument, NULL, 'd'},
		{"mem-capacity", required_argument, NULL, 'm'},
		{"vmm", required_argument, NULL, 'v'},
		{"migrate-listen", required_argument, NULL, 'l'},
		{"fusion-rate", required_argument, NULL, 'f'},
		{"guard-colours", required_argument, NULL, 'c'},
		{"guard-row-shift", required_argument, NULL, 'r'},
		{"image-cache", required_argument, NULL, 'C'},
		{"insecure-registry", no_argument, NULL, 'I'},
		{"ctr", required_argument, NULL, 'T'},
		{"crun", required_argument, NULL, 'R'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	struct daemon_cfg cfg = {.socket_path = getenv("MEMVISOR_SOCKET"),
				 .state_dir = DEFAULT_STATE, .fusion_rate = 20000};
	if (!cfg.socket_path)
		cfg.socket_path = DEFAULT_SOCKET;
	const char *cap = NULL;
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 's': cfg.socket_path = optarg; break;
		case 'd': cfg.state_dir = optarg; break;
		case 'm': cap = optarg; break;
		case 'v': cfg.vmm_path = optarg; break;
		case 'l': cfg.migrate_listen = optarg; break;
		case 'f': {
			char *end;
			errno = 0;
			cfg.fusion_rate = strtoull(optarg, &end, 10);
			if (errno || end == optarg || *end || cfg.fusion_rate > 100000000ULL) {
				fprintf(stderr, "memvisord: --fusion-rate: '%s' is not a page rate\n", optarg);
				return 2;
			}
			break;
		}
		case 'c':
		case 'r': {
			char *end;
			errno = 0;
			unsigned long long v = strtoull(optarg, &end, 10);
			if (o == 'c' && !strcmp(optarg, "auto")) {
				cfg.guard_colours = mv_guard_llc_colours();
				break;
			}
			if (errno || end == optarg || *end || v > MV_GUARD_MAX_COLOURS ||
			    (o == 'c' && (v & (v - 1))) || (o == 'r' && v > MV_GUARD_MAX_ROW_SHIFT)) {
				fprintf(stderr, "memvisord: --guard-%s: '%s' is out of range\n",
					o == 'c' ? "colours" : "row-shift", optarg);
				return 2;
			}
			*(o == 'c' ? &cfg.guard_colours : &cfg.guard_row_shift) = (uint32_t)v;
			break;
		}
		case 'C': cfg.image_cache = optarg; break;
		case 'I': cfg.insecure_registry = true; break;
		case 'T': cfg.ctr_path = optarg; break;
		case 'R': cfg.crun_path = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	mv_log_set_prog("memvisord");
	if (cap) {
		if (mv_parse_size(cap, &cfg.mem_capacity) < 0 || cfg.mem_capacity == 0) {
			fprintf(stderr, "memvisord: --mem-capacity: '%s' is not a size like 16G\n", cap);
			return 2;
		}
	} else {
		uint64_t total = host_mem_total();
		cfg.mem_capacity = total > (512ULL << 20) ? total - (512ULL << 20) : total;
	}
	char vmm_buf[PATH_MAX];
	if (!cfg.vmm_path)
		cfg.vmm_path = default_vmm(vmm_buf, sizeof(vmm_buf));
	if (access(cfg.vmm_path, X_OK) < 0) {
		fprintf(stderr, "memvisord: VMM binary %s: %s (use --vmm)\n", cfg.vmm_path,
			strerror(errno));
		return 1;
	}
	char sockdir[PATH_MAX];
	snprintf(sockdir, sizeof(sockdir), "%s", cfg.socket_path);
	if (mv_mkdir_p(dirname(sockdir), 0755) < 0 || mv_mkdir_p(cfg.state_dir, 0700) < 0) {
		fprintf(stderr, "memvisord: cannot create %s or %s: %s\n", sockdir, cfg.state_dir,
			strerror(errno));
		return 1;
	}

	if (host_guest_ram_pages() == MV_MEM_PAGES_4K)
		mv_log(MV_LOG_INFO, "guest RAM gets 4 KiB pages (shmem THP off, no free 2 MiB "
		       "hugetlb pages); for 2 MiB pages reserve a hugetlb pool (vm.nr_hugepages) "
		       "or run scripts/host-setup --thp");

	/* Signals are taken synchronously by main; worker threads inherit the mask. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	struct vmmgr mgr;
	struct mv_error *err = NULL;
	int r = vmmgr_init(&mgr, &cfg, &err);
	if (r < 0) {
		fprintf(stderr, "memvisord: %s\n", mv_error_msg(err, r));
		return 1;
	}
	r = ctr_init(&mgr, &err);
	if (r < 0) {
		fprintf(stderr, "memvisord: containers: %s\n", mv_error_msg(err, r));
		return 1;
	}
	r = fusion_start(&mgr, &err);
	if (r < 0) {
		fprintf(stderr, "memvisord: %s\n", mv_error_msg(err, r));
		return 1;
	}
	r = watch_start(&mgr);
	if (r < 0) {
		fprintf(stderr, "memvisord: watcher thread: %s\n", strerror(-r));
		return 1;
	}
	if (cfg.migrate_listen && (r = migration_listen_start(&mgr, cfg.migrate_listen, &err)) < 0) {
		fprintf(stderr, "memvisord: %s\n", mv_error_msg(err, r));
		watch_stop(&mgr);
		return 1;
	}
	struct mv_api_server *api;
	r = mv_api_server_start(cfg.socket_path, &vmmgr_backend, &mgr, &api, &err);
	if (r < 0) {
		fprintf(stderr, "memvisord: API on %s: %s\n", cfg.socket_path, mv_error_msg(err, r));
		watch_stop(&mgr);
		migration_listen_stop(&mgr);
		return 1;
	}
	char a[32];
	mv_log(MV_LOG_INFO, "listening on %s; state in %s; %zu VM(s); guest memory capacity %s%s%s",
	       cfg.socket_path, cfg.state_dir, mgr.nvms, mv_fmt_size(cfg.mem_capacity, a, sizeof(a)),
	       cfg.migrate_listen ? "; migrations in on " : "",
	       cfg.migrate_listen ? cfg.migrate_listen : "");
	int sig = 0;
	while (sigwait(&set, &sig) == 0 && sig == SIGHUP)
		;
	mv_log(MV_LOG_INFO, "signal %d: shutting down; VMs keep running", sig);
	mv_api_server_stop(api);
	fusion_stop(&mgr);
	watch_stop(&mgr);
	migration_listen_stop(&mgr);
	ctr_fini(&mgr);
	vmmgr_fini(&mgr);
	fusion_fini(&mgr);
	return 0;
}
