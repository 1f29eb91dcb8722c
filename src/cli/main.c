/* memvisor: the command-line client of memvisord. Resolves the global flags
 * (--socket anywhere on the line, $MEMVISOR_SOCKET, --help, --version) and
 * dispatches to the command files. Exit status: 0 ok, 1 failure, 2 usage. */
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include "cli_i.h"

static const char usage[] =
	"Usage: memvisor [--socket PATH] COMMAND [ARGS...]\n"
	"\n"
	"Client of memvisord, the memvisor host daemon.\n"
	"\n"
	"Commands:\n"
	"  daemon [ARGS...]         run memvisord in the foreground\n"
	"  vm create NAME ...       create a VM and start its workload\n"
	"  vm ls                    list VMs\n"
	"  vm show VM               show one VM (VM is an id or a name)\n"
	"  vm pause|resume|stop VM  change a VM's run state\n"
	"  vm rm VM [--force]       remove a stopped VM\n"
	"  vm verify VM             check guest RAM against the workload's expected state\n"
	"  vm migrate VM --local    hand a VM to a new VMM process, zero-copy\n"
	"  vm migrate VM --to HOST:PORT  live-migrate a VM to another host's memvisord\n"
	"  upgrade --vmm PATH       move every VM to a new VMM binary\n"
	"  host                     this host's capacity and usage\n"
	"  vm sensitive add|ls|rm VM  mark guest ranges sensitive (side-channel guard)\n"
	"  fusion status            page fusion: pages shared, memory saved\n"
	"  guard status             side-channel guard: other VMs' data in sensitive ranges\n"
	"  image pull|ls|rm ...     container images (pulled lazily: no file data up front)\n"
	"  container run IMAGE [CMD...]  run a command in a new container, stream its output\n"
	"  container ls|show|stop|rm|logs ...  manage containers\n"
	"  cache prepopulate IMAGE...  fill the host-wide shared cache; cache status\n"
	"  guard events             side-channel guard: suspected attackers detected\n"
	"  guard policy [set ...]   side-channel guard: thresholds, deny list, response\n"
	"  metrics                  Prometheus metrics, raw\n"
	"  help [COMMAND]           show help for a command\n"
	"\n"
	"Global options:\n"
	"  --socket PATH  daemon socket (default $" MV_CLI_SOCKET_ENV ", else "
	MV_CLI_DEFAULT_SOCKET ")\n"
	"  -h, --help     show this help\n"
	"  --version      show the version\n"
	"\n"
	"Most commands take --json for machine-readable output and -h for their own help.\n"
	"Exit status: 0 ok, 1 failure, 2 usage error.\n";

static int dispatch(const struct mv_cli *cli, int argc, char **argv)
{
	const char *cmd = argv[0];
	if (strcmp(cmd, "vm") == 0)
		return mv_cli_cmd_vm(cli, argc, argv);
	if (strcmp(cmd, "host") == 0)
		return mv_cli_cmd_host(cli, argc, argv);
	if (strcmp(cmd, "fusion") == 0)
		return mv_cli_cmd_fusion(cli, argc, argv);
	if (strcmp(cmd, "guard") == 0)
		return mv_cli_cmd_guard(cli, argc, argv);
	if (strcmp(cmd, "metrics") == 0)
		return mv_cli_cmd_metrics(cli, argc, argv);
	if (strcmp(cmd, "daemon") == 0)
		return mv_cli_cmd_daemon(cli, argc, argv);
	if (strcmp(cmd, "upgrade") == 0)
		return mv_cli_cmd_upgrade(cli, argc, argv);
	if (strcmp(cmd, "image") == 0)
		return mv_cli_cmd_image(cli, argc, argv);
	if (strcmp(cmd, "container") == 0)
		return mv_cli_cmd_container(cli, argc, argv);
	if (strcmp(cmd, "cache") == 0)
		return mv_cli_cmd_cache(cli, argc, argv);
	if (strcmp(cmd, "help") == 0) {
		if (argc < 2) {
			fputs(usage, stdout);
			return MV_CLI_OK;
		}
		/* "help vm create" == "vm create --help" */
		char *sub[4] = {argv[1], NULL, NULL, NULL};
		int n = 1;
		if (argc > 2)
			sub[n++] = argv[2];
		sub[n++] = (char *)"--help";
		if (strcmp(argv[1], "help") == 0) {
			fputs(usage, stdout);
			return MV_CLI_OK;
		}
		return dispatch(cli, n, sub);
	}
	mv_cli_err("unknown command '%s'", cmd);
	fputs("Try 'memvisor --help' for the list of commands.\n", stderr);
	return MV_CLI_USAGE;
}

/* Pulls --socket PATH / --socket=PATH out of argv wherever it appears (up to
 * a "--"), so commands never see it. Returns 0 or MV_CLI_USAGE. */
static int take_socket_flag(int *argc, char **argv, const char **sock)
{
	int n = 1;
	bool scanning = true;
	for (int i = 1; i < *argc; i++) {
		const char *a = argv[i];
		if (scanning && strcmp(a, "--") == 0)
			scanning = false;
		if (scanning && strcmp(a, "--socket") == 0) {
			if (i + 1 >= *argc || argv[i + 1][0] == '\0') {
				mv_cli_err("option '--socket' needs a path");
				return MV_CLI_USAGE;
			}
			*sock = argv[++i];
			continue;
		}
		if (scanning && strncmp(a, "--socket=", 9) == 0) {
			if (a[9] == '\0') {
				mv_cli_err("option '--socket' needs a path");
				return MV_CLI_USAGE;
			}
			*sock = a + 9;
			continue;
		}
		argv[n++] = argv[i];
	}
	argv[n] = NULL;
	*argc = n;
	return 0;
}

int main(int argc, char **argv)
{
	struct mv_cli cli = {.socket = MV_CLI_DEFAULT_SOCKET};
	const char *sock = NULL;
	int ret;

	if (take_socket_flag(&argc, argv, &sock))
		return MV_CLI_USAGE;
	const char *env = getenv(MV_CLI_SOCKET_ENV);
	if (!sock && env && env[0])
		sock = env;
	if (sock) {
		cli.socket = sock;
		cli.socket_explicit = true;
	}

	if (argc < 2) {
		fputs(usage, stderr);
		return MV_CLI_USAGE;
	}
	const char *first = argv[1];
	if (strcmp(first, "-h") == 0 || strcmp(first, "--help") == 0) {
		fputs(usage, stdout);
		return MV_CLI_OK;
	}
	if (strcmp(first, "--version") == 0) {
		printf("memvisor %s\n", MV_VERSION);
		return MV_CLI_OK;
	}
	if (first[0] == '-') {
		mv_cli_err("unknown option '%s'", first);
		fputs("Try 'memvisor --help' for more information.\n", stderr);
		return MV_CLI_USAGE;
	}

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		mv_cli_err("cannot initialise libcurl");
		return MV_CLI_FAIL;
	}
	ret = dispatch(&cli, argc - 1, argv + 1);
	curl_global_cleanup();

	/* A full disk or closed pipe must not look like success. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		mv_cli_err("error writing output");
		if (ret == MV_CLI_OK)
			ret = MV_CLI_FAIL;
	}
	return ret;
}
