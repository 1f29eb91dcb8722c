/* The side-channel guard's commands: `memvisor vm sensitive add|ls|rm` marks,
 * lists and unmarks sensitive guest ranges of a VM (POST/GET/DELETE
 * /v1/vms/{vm}/sensitive), `memvisor guard status` shows the co-residency
 * findings (GET /v1/guard). */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/util.h"
#include "cli_i.h"

static const char sensitive_usage[] =
	"Usage: memvisor vm sensitive add VM --gpa ADDR --len SIZE [--json]\n"
	"       memvisor vm sensitive ls VM [--json]\n"
	"       memvisor vm sensitive rm VM ID\n"
	"\n"
	"Marks a guest range of a VM as sensitive: the daemon locks its pages in the\n"
	"VMM, records the host frames behind them, and its side-channel guard reports\n"
	"other VMs' data found on those frames, their fused pages, cache colours or\n"
	"DRAM rows (memvisor guard status). ADDR and SIZE are page aligned; ADDR is\n"
	"a number (0x... for hex) or a size (16M), SIZE a size (64K, 2M).\n"
	"  --gpa ADDR  guest-physical start\n"
	"  --len SIZE  length\n"
	"  --json      print the daemon's answer as JSON\n";

static const char guard_usage[] =
	"Usage: memvisor guard status [--json]\n"
	"       memvisor guard events [--json]\n"
	"       memvisor guard policy [set OPTIONS] [--json]\n"
	"\n"
	"Runs a co-residency check of every sensitive range now and shows its\n"
	"findings: which other VM's data sits on a range's frames (frame), shares\n"
	"its fused pages (fused), its cache colours (colour) or DRAM rows (row).\n"
	"  --json  print the daemon's answer as JSON\n";

static bool parse_addr(const char *s, uint64_t *out)
{
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		char *end;
		errno = 0;
		*out = strtoull(s + 2, &end, 16);
		return !errno && end != s + 2 && !*end;
	}
	return mv_parse_size(s, out) == 0;
}

static int sens_add(const struct mv_cli *cli, const char *ref, const char *gpa, const char *len,
		    bool json)
{
	uint64_t g, l;
	if (!gpa || !len)
		return mv_cli_usage_err("vm sensitive", "add needs --gpa and --len");
	if (!parse_addr(gpa, &g))
		return mv_cli_usage_err("vm sensitive", "--gpa: '%s' is not an address", gpa);
	if (!parse_addr(len, &l))
		return mv_cli_usage_err("vm sensitive", "--len: '%s' is not a size", len);
	json_t *body = json_pack("{s:I, s:I}", "gpa", (json_int_t)g, "len", (json_int_t)l);
	char *path = mv_cli_vm_path(ref, "/sensitive");
	struct mv_cli_resp r = {0};
	int ret = MV_CLI_FAIL;
	if (body && path && !mv_cli_call(cli, "POST", path, body, MV_CLI_TIMEOUT_SHORT, true, &r)) {
		long long id = 0, res = 0, runs = 0;
		mv_cli_jint(r.json, "id", &id);
		mv_cli_jint(r.json, "resident_pages", &res);
		mv_cli_jint(r.json, "runs_total", &runs);
		ret = json ? mv_cli_print_json(r.json) : MV_CLI_OK;
		if (!json)
			printf("sensitive range %lld of %s: %lld page(s) locked on %lld run(s) of frames\n",
			       id, ref, res, runs);
	}
	mv_cli_resp_free(&r);
	json_decref(body);
	free(path);
	return ret;
}

static void range_row(const json_t *o, const char **cells, char (*c)[MV_TABLE_CELL])
{
	long long id = 0, gpa = 0, res = 0, runs = 0, pfn = -1;
	mv_cli_jint(o, "id", &id);
	mv_cli_jint(o, "gpa", &gpa);
	mv_cli_jint(o, "resident_pages", &res);
	mv_cli_jint(o, "runs_total", &runs);
	const json_t *r0 = json_array_get(json_object_get(o, "runs"), 0);
	if (r0)
		mv_cli_jint(r0, "pfn", &pfn);
	snprintf(c[1], sizeof(c[1]), "0x%llx", gpa);
	snprintf(c[6], sizeof(c[6]), "0x%llx", pfn);
	cells[0] = mv_table_num(c[0], id);
	cells[1] = c[1];
	cells[2] = mv_cli_jsize(o, "len", c[2], sizeof(c[2]));
	cells[3] = mv_table_num(c[3], res);
	cells[4] = json_is_true(json_object_get(o, "locked")) ? "yes" : "no";
	cells[5] = mv_table_num(c[5], runs);
	cells[6] = pfn >= 0 ? c[6] : NULL;
}

static int sens_ls(const struct mv_cli *cli, const char *ref, bool json)
{
	static const char *const hdr[] = {"ID", "GPA", "LEN", "RESIDENT", "LOCKED", "RUNS", "FIRST PFN"};
	static const bool right[] = {true, false, true, true, false, true, false};
	char *path = mv_cli_vm_path(ref, "/sensitive");
	struct mv_cli_resp r;
	int ret = path ? mv_cli_get_or_print(cli, path, json, &r) : MV_CLI_FAIL;
	free(path);
	if (ret >= 0)
		return ret;
	ret = mv_table_print_json(json_object_get(r.json, "ranges"), 7, hdr, right, range_row);
	mv_cli_resp_free(&r);
	return ret;
}

static int sens_rm(const struct mv_cli *cli, const char *ref, const char *id)
{
	size_t n = strlen(id);
	char suffix[48];
	if (n == 0 || n > 18 || strspn(id, "0123456789") != n)
		return mv_cli_usage_err("vm sensitive", "'%s' is not a range id", id);
	snprintf(suffix, sizeof(suffix), "/sensitive/%s", id);
	char *path = mv_cli_vm_path(ref, suffix);
	struct mv_cli_resp r = {0};
	int ret = path && !mv_cli_call(cli, "DELETE", path, NULL, MV_CLI_TIMEOUT_SHORT, false, &r)
			  ? MV_CLI_OK : MV_CLI_FAIL;
	mv_cli_resp_free(&r);
	free(path);
	return ret;
}

int mv_cli_cmd_vm_sensitive(const struct mv_cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'}, {"json", no_argument, NULL, 'j'},
		{"gpa", required_argument, NULL, 'g'}, {"len", required_argument, NULL, 'l'},
		{NULL, 0, NULL, 0},
	};
	const char *gpa = NULL, *len = NULL;
	bool json = false;
	int c;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (c == 'h') {
			fputs(sensitive_usage, stdout);
			return MV_CLI_OK;
		} else if (c == 'j') {
			json = true;
		} else if (c == 'g') {
			gpa = optarg;
		} else if (c == 'l') {
			len = optarg;
		} else {
			return mv_cli_getopt_err("vm sensitive", c, argv);
		}
	}
	if (optind >= argc)
		return mv_cli_usage_err("vm sensitive", "missing subcommand (add, ls, rm)");
	const char *sub = argv[optind];
	int left = argc - optind - 1;
	char **args = argv + optind + 1;
	if (strcmp(sub, "add") == 0 && left == 1)
		return sens_add(cli, args[0], gpa, len, json);
	if ((strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0) && left == 1)
		return sens_ls(cli, args[0], json);
	if (strcmp(sub, "rm") == 0 && left == 2)
		return sens_rm(cli, args[0], args[1]);
	if (strcmp(sub, "add") && strcmp(sub, "ls") && strcmp(sub, "list") && strcmp(sub, "rm"))
		return mv_cli_usage_err("vm sensitive", "unknown subcommand '%s'", sub);
	return mv_cli_usage_err("vm sensitive", "wrong number of arguments for %s", sub);
}

int mv_cli_cmd_guard(const struct mv_cli *cli, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (argv[i][0] == '-')
			continue;
		if (!strcmp(argv[i], "events") || !strcmp(argv[i], "policy"))
			return mv_cli_cmd_guard_detect(cli, argv[i], argc, argv);
		break;
	}
	bool json;
	int ret = mv_cli_json_opts("guard", guard_usage, argc, argv, &json);
	if (ret >= 0 ||
	    (ret = mv_cli_only_sub("guard", "status", "status, events, policy", argc, argv)) >= 0)
		return ret;
	struct mv_cli_resp r;
	if ((ret = mv_cli_get_or_print(cli, "/v1/guard", json, &r)) >= 0)
		return ret;
	long long v;
	static const char *const keys[][2] = {
		{"ranges", "ranges"}, {"protected_pages", "protected pages"}, {"checks", "checks"},
		{"events", "events"}, {"colours", "colours"}, {"llc_colours", "LLC colours"},
		{"row_shift", "row shift"},
	};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (mv_cli_jint(r.json, keys[i][0], &v))
			mv_cli_kv(16, keys[i][1], "%lld", v);
	const json_t *arr = json_object_get(r.json, "findings");
	size_t i;
	const json_t *o;
	if (json_array_size(arr) == 0)
		printf("no other VM's data found within a sensitive range\n");
	json_array_foreach(arr, i, o) {
		long long range = 0, pages = 0;
		mv_cli_jint(o, "range", &range);
		mv_cli_jint(o, "pages", &pages);
		printf("range %lld of %s: %s co-resident (%s), %lld page(s)\n", range,
		       mv_cli_jstr(o, "vm", "?"), mv_cli_jstr(o, "other_vm", "?"),
		       mv_cli_jstr(o, "kind", "?"), pages);
	}
	mv_cli_resp_free(&r);
	return MV_CLI_OK;
}
