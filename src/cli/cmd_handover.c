/* `memvisor vm migrate VM --local [--vmm PATH]` (POST /v1/vms/VM/migrate) and
 * `memvisor upgrade --vmm PATH` (POST /v1/upgrade): move VMs to a new VMM
 * process on this host without copying guest RAM. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include "cli_i.h"

static const char migrate_usage[] =
	"Usage: memvisor vm migrate VM --local [--vmm PATH] [--json]\n"
	"\n"
	"Hot migration on this host: a new memvisor-vmm process maps the same guest\n"
	"RAM (same physical pages, nothing copied), takes over the vCPU state and\n"
	"resumes; the old process exits. If the new VMM fails, the VM stays on the old.\n"
	"  --local     hand over to a new VMM process on this host\n"
	"  --vmm PATH  binary for the new VMM (default: the daemon's current one)\n"
	"  --json      print the daemon's answer as JSON\n";

static const char upgrade_usage[] =
	"Usage: memvisor upgrade --vmm PATH [--json]\n"
	"\n"
	"VMM live upgrade: moves every running or paused VM, one at a time, to a new\n"
	"memvisor-vmm binary by handing its memory and state to a new process. A VM\n"
	"whose new VMM does not start or fails its health check stays on the old one,\n"
	"and the roll-out stops there.\n"
	"  --vmm PATH  the new VMM binary (absolute path)\n"
	"  --json      print the daemon's answer as JSON\n";

struct opts {
	bool local, json;
	const char *vmm;
	int argi;   /* first non-option argument */
};

/* Returns -1 to go on, else an exit status. */
static int parse(int argc, char **argv, const char *cmd, const char *usage, struct opts *o)
{
	static const struct option lo[] = {
		{"help", no_argument, NULL, 'h'},
		{"json", no_argument, NULL, 'j'},
		{"local", no_argument, NULL, 'l'},
		{"vmm", required_argument, NULL, 'v'},
		{NULL, 0, NULL, 0},
	};
	int c;
	optind = 0;
	opterr = 0;
	memset(o, 0, sizeof(*o));
	while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		switch (c) {
		case 'h': fputs(usage, stdout); return MV_CLI_OK;
		case 'j': o->json = true; break;
		case 'l': o->local = true; break;
		case 'v': o->vmm = optarg; break;
		default: return mv_cli_getopt_err(cmd, c, argv);
		}
	}
	if (o->vmm && o->vmm[0] != '/')
		return mv_cli_usage_err(cmd, "--vmm needs an absolute path, not '%s'", o->vmm);
	o->argi = optind;
	return -1;
}

static void print_result(const json_t *r)
{
	long long old_pid = 0, new_pid = 0, down = 0;
	mv_cli_jint(r, "old_pid", &old_pid);
	mv_cli_jint(r, "new_pid", &new_pid);
	mv_cli_jint(r, "downtime_us", &down);
	const char *vm = mv_cli_jstr(r, "vm", "?");
	if (json_is_true(json_object_get(r, "ok")))
		printf("%s: VMM pid %lld -> %lld, downtime %.3f ms\n", vm, old_pid, new_pid,
		       (double)down / 1000.0);
	else
		printf("%s: %s\n", vm, mv_cli_jstr(r, "message", "failed"));
}

int mv_cli_cmd_vm_migrate(const struct mv_cli *cli, int argc, char **argv)
{
	struct opts o;
	int ret = parse(argc, argv, "vm migrate", migrate_usage, &o);
	if (ret >= 0)
		return ret;
	if (o.argi != argc - 1)
		return mv_cli_usage_err("vm migrate", "expected exactly one VM");
	if (!o.local)
		return mv_cli_usage_err("vm migrate", "say where: --local");
	json_t *body = json_pack("{s:b}", "local", 1);
	if (o.vmm)
		json_object_set_new(body, "vmm", json_string(o.vmm));
	char *path = mv_cli_vm_path(argv[o.argi], "/migrate");
	struct mv_cli_resp resp;
	int r = path ? mv_cli_call(cli, "POST", path, body, MV_CLI_TIMEOUT_LONG, true, &resp) : -1;
	free(path);
	json_decref(body);
	if (r == 0)
		o.json ? mv_cli_print_json(resp.json) : (print_result(resp.json), 0);
	mv_cli_resp_free(&resp);
	return r == 0 ? MV_CLI_OK : MV_CLI_FAIL;
}

int mv_cli_cmd_upgrade(const struct mv_cli *cli, int argc, char **argv)
{
	struct opts o;
	int ret = parse(argc, argv, "upgrade", upgrade_usage, &o);
	if (ret >= 0)
		return ret;
	if (o.local || o.argi != argc)
		return mv_cli_usage_err("upgrade", "takes only --vmm PATH [--json]");
	if (!o.vmm)
		return mv_cli_usage_err("upgrade", "--vmm PATH is required");
	json_t *body = json_pack("{s:s}", "vmm", o.vmm);
	struct mv_cli_resp resp;
	/* Each VM's hand-over is quick; the roll-out may cover many VMs. */
	int r = mv_cli_call(cli, "POST", "/v1/upgrade", body, MV_CLI_TIMEOUT_VERIFY, true, &resp);
	json_decref(body);
	bool ok = r == 0 && json_is_true(json_object_get(resp.json, "ok"));
	if (r == 0 && o.json) {
		mv_cli_print_json(resp.json);
	} else if (r == 0) {
		json_t *vms = json_object_get(resp.json, "vms");
		size_t i;
		json_t *v;
		json_array_foreach(vms, i, v)
			print_result(v);
		printf("%s\n", ok ? "upgrade complete" : "upgrade stopped: a VM could not be moved");
	}
	mv_cli_resp_free(&resp);
	return ok ? MV_CLI_OK : MV_CLI_FAIL;
}
