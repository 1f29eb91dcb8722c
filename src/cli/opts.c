/* Option parsing the CLI's simple commands share: just --help and --json
 * (host, metrics, fusion, guard status/events, image, cache). Commands with
 * options of their own keep their own getopt loop. */
#include <getopt.h>
#include <string.h>
#include "cli_i.h"

int mv_cli_json_opts(const char *cmd, const char *usage, int argc, char **argv, bool *json)
{
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"json", no_argument, NULL, 'j'},
		{NULL, 0, NULL, 0},
	};
	int c;
	if (json)
		*json = false;
	optind = 0; /* glibc: full re-initialisation between commands */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(usage, stdout);
			return MV_CLI_OK;
		}
		if (c == 'j' && json)
			*json = true;
		else if (c == 'j')
			return mv_cli_usage_err(cmd, "unknown option '--json'");
		else
			return mv_cli_getopt_err(cmd, c, argv);
	}
	return -1;
}

int mv_cli_only_sub(const char *cmd, const char *sub, const char *subs, int argc, char **argv)
{
	if (optind >= argc)
		return mv_cli_usage_err(cmd, "missing subcommand (%s)", subs);
	if (strcmp(argv[optind], sub) != 0)
		return mv_cli_usage_err(cmd, "unknown subcommand '%s'", argv[optind]);
	if (optind + 1 < argc)
		return mv_cli_usage_err(cmd, "unexpected argument '%s'", argv[optind + 1]);
	return -1;
}
