/* `memvisor daemon [ARGS...]`: replaces this process with memvisord in the
 * foreground, passing ARGS (and the CLI's --socket) through, so one binary on
 * PATH is enough to start the whole stack. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "cli_i.h"

static const char daemon_usage[] =
	"Usage: memvisor [--socket PATH] daemon [ARGS...]\n"
	"\n"
	"Runs memvisord in the foreground with ARGS (see `memvisord --help`).\n"
	"--socket (or $" MV_CLI_SOCKET_ENV ") is passed on so the CLI and the daemon agree.\n"
	"memvisord is looked up next to this memvisor binary, then in $PATH.\n";

/* Tries dir/rel; returns only when exec fails. */
static void try_exec(const char *dir, const char *rel, char **args)
{
	char path[PATH_MAX];
	if (snprintf(path, sizeof(path), "%s/%s", dir, rel) >= (int)sizeof(path))
		return;
	if (access(path, X_OK) == 0)
		execv(path, args);
}

int mv_cli_cmd_daemon(const struct mv_cli *cli, int argc, char **argv)
{
	if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		fputs(daemon_usage, stdout);
		return MV_CLI_OK;
	}
	/* "memvisord" [--socket PATH] ARGS... NULL */
	char **args = calloc((size_t)argc + 3, sizeof(*args));
	if (!args) {
		mv_cli_err("out of memory");
		return MV_CLI_FAIL;
	}
	int n = 0;
	args[n++] = (char *)"memvisord";
	if (cli->socket_explicit) {
		args[n++] = (char *)"--socket";
		args[n++] = (char *)cli->socket;
	}
	for (int i = 1; i < argc; i++)
		args[n++] = argv[i];
	args[n] = NULL;
	fflush(NULL);

	char self[PATH_MAX];
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (len > 0) {
		self[len] = '\0';
		char *slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			try_exec(self, "memvisord", args);
			/* Build tree: build/src/cli/memvisor next to build/src/daemon/. */
			try_exec(self, "../daemon/memvisord", args);
		}
	}
	execvp("memvisord", args);
	int e = errno;
	if (e == ENOENT)
		mv_cli_err("cannot find memvisord next to %s or in $PATH",
			   len > 0 ? self : "this binary");
	else
		mv_cli_err("cannot run memvisord: %s", strerror(e));
	free(args);
	return MV_CLI_FAIL;
}
