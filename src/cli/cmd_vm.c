/* `memvisor vm ...`: dispatch of the vm subcommands and every one of them
 * except create (cmd_vm_create.c): ls, show, pause, resume, stop, rm, verify.
 * Each maps onto one /v1/vms request and renders the answer as text or JSON. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "memvisor/util.h"
#include "cli_i.h"

static const char vm_usage[] =
	"Usage: memvisor vm COMMAND [ARGS...]\n"
	"\n"
	"Commands:\n"
	"  create NAME --memory SIZE --workload KIND [...]  create a VM (see vm create --help)\n"
	"  ls [--json]                 list VMs\n"
	"  show VM [--json]            everything about one VM\n"
	"  pause VM [--json]           park every vCPU at a consistent point\n"
	"  resume VM [--json]          resume a paused VM\n"
	"  stop VM [--json]            stop the VM's VMM process, releasing guest RAM\n"
	"  rm VM [--force]             remove a stopped or crashed VM (--force stops it first)\n"
	"  verify VM [--json]          check guest RAM; exit 1 when it does not match\n"
	"  migrate VM --local [--vmm PATH]  hand over to a new VMM process (zero-copy)\n"
	"  sensitive add|ls|rm VM ...  sensitive guest ranges (see vm sensitive --help)\n"
	"\n"
	"VM is a VM id or name.\n";

static const char ls_usage[] =
	"Usage: memvisor vm ls [--json]\n"
	"\n"
	"Lists VMs: ID NAME STATE MEMORY VCPUS WORKLOAD OPS DIRTY/S PID.\n"
	"  --json  print the daemon's answer as JSON\n";

static const char show_usage[] =
	"Usage: memvisor vm show VM [--json]\n"
	"\n"
	"Shows everything about a VM: spec, process, exit reason, live stats.\n"
	"  --json  print the daemon's answer as JSON\n";

static const char pause_usage[] =
	"Usage: memvisor vm pause VM [--json]\n\nParks every vCPU of VM at a consistent point.\n";
static const char resume_usage[] =
	"Usage: memvisor vm resume VM [--json]\n\nResumes a paused VM.\n";
static const char stop_usage[] =
	"Usage: memvisor vm stop VM [--json]\n\n"
	"Stops the VM's VMM process; its guest RAM is released.\n";

static const char rm_usage[] =
	"Usage: memvisor vm rm VM [--force]\n"
	"\n"
	"Removes a stopped or crashed VM.\n"
	"  -f, --force  stop a running VM first\n";

static const char verify_usage[] =
	"Usage: memvisor vm verify VM [--json]\n"
	"\n"
	"Checks guest RAM against what the workload must have written so far.\n"
	"Exit status 0 when it matches, 1 when it does not (or on error).\n"
	"  --json  print the result as JSON (the exit status still tells the outcome)\n";

struct ref_args {
	const char *ref;
	bool json;
	bool force;
};

enum { OPT_JSON = 0x100 };

enum { ARG_REF = 1, ARG_JSON = 2, ARG_FORCE = 4 };

/* Parses "[VM] [--json] [--force]" as allowed by `what` (ARG_* bits);
 * returns -1 to go on, else an exit status. */
static int parse_ref_args(int argc, char **argv, const char *cmd, const char *usage,
			  unsigned what, struct ref_args *a)
{
	bool allow_json = what & ARG_JSON, allow_force = what & ARG_FORCE;
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"json", no_argument, NULL, OPT_JSON},
		{"force", no_argument, NULL, 'f'},
		{NULL, 0, NULL, 0},
	};
	int c;

	memset(a, 0, sizeof(*a));
	optind = 0; /* glibc: full re-initialisation between commands */
	opterr = 0;
	while ((c = getopt_long(argc, argv, allow_force ? ":hf" : ":h", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(usage, stdout);
			return MV_CLI_OK;
		case OPT_JSON:
			if (!allow_json)
				return mv_cli_usage_err(cmd, "unknown option '--json'");
			a->json = true;
			break;
		case 'f':
			if (!allow_force)
				return mv_cli_usage_err(cmd, "unknown option '--force'");
			a->force = true;
			break;
		default:
			return mv_cli_getopt_err(cmd, c, argv);
		}
	}
	if (!(what & ARG_REF)) {
		if (optind < argc)
			return mv_cli_usage_err(cmd, "unexpected argument '%s'", argv[optind]);
		return -1;
	}
	if (optind >= argc)
		return mv_cli_usage_err(cmd, "missing VM (an id or a name)");
	if (optind + 1 < argc)
		return mv_cli_usage_err(cmd, "unexpected argument '%s'", argv[optind + 1]);
	if (argv[optind][0] == '\0')
		return mv_cli_usage_err(cmd, "VM must not be empty");
	a->ref = argv[optind];
	return -1;
}

/* Hints that help after a failed VM request; status is the HTTP status. */
static void vm_hint(long status, const struct ref_args *a, bool rm)
{
	if (status == 404)
		mv_cli_hint("`memvisor vm ls` lists the VMs by id and name");
	else if (status == 409 && rm && !a->force)
		mv_cli_hint("stop it first (`memvisor vm stop %s`) or use --force", a->ref);
	else if (status == 409)
		mv_cli_hint("`memvisor vm show %s` shows its state", a->ref);
}

/* METHOD /v1/vms/VM<suffix> (no body); a failure is reported with a hint
 * and returns nonzero. The caller frees *r in every case. */
static int vm_call(const struct mv_cli *cli, const char *method, const struct ref_args *a,
		   const char *suffix, long timeout_s, bool want_json, struct mv_cli_resp *r)
{
	char *path = mv_cli_vm_path(a->ref, suffix);
	if (!path) {
		memset(r, 0, sizeof(*r));
		mv_cli_err("out of memory");
		return -ENOMEM;
	}
	int ret = mv_cli_call(cli, method, path, NULL, timeout_s, want_json, r);
	free(path);
	if (ret)
		vm_hint(r->status, a, strcmp(method, "DELETE") == 0);
	return ret;
}

/* One VM of `vm ls`; a missing figure prints "-". */
static void vm_row(const json_t *vm, const char **cells, char (*buf)[MV_TABLE_CELL])
{
	const json_t *st = json_object_get(vm, "stats");
	long long v;
	double d;
	cells[0] = mv_cli_jstr(vm, "id", "-");
	cells[1] = mv_cli_jstr(vm, "name", "-");
	cells[2] = mv_cli_jstr(vm, "state", "-");
	cells[3] = mv_cli_jsize(vm, "memory", buf[3], sizeof(buf[3]));
	if (mv_cli_jint(vm, "vcpus", &v))
		cells[4] = mv_table_num(buf[4], v);
	cells[5] = mv_cli_jstr(json_object_get(vm, "workload"), "kind", "-");
	if (mv_cli_jint(st, "ops_done", &v))
		cells[6] = mv_table_num(buf[6], v);
	if (mv_cli_jnum(st, "dirty_rate", &d)) {
		snprintf(buf[7], sizeof(buf[7]), "%.0f", d);
		cells[7] = buf[7];
	}
	if (mv_cli_jint(vm, "pid", &v) && v > 0)
		cells[8] = mv_table_num(buf[8], v);
}

static int vm_ls(const struct mv_cli *cli, int argc, char **argv)
{
	static const char *const hdr[] = {"ID", "NAME", "STATE", "MEMORY", "VCPUS",
					  "WORKLOAD", "OPS", "DIRTY/S", "PID"};
	static const bool right[] = {false, false, false, true, true, false, true, true, true};
	struct mv_cli_resp r;
	struct ref_args a;
	int ret = parse_ref_args(argc, argv, "vm ls", ls_usage, ARG_JSON, &a);
	if (ret >= 0)
		return ret;
	ret = MV_CLI_FAIL;
	if (mv_cli_call(cli, "GET", "/v1/vms", NULL, MV_CLI_TIMEOUT_SHORT, true, &r) == 0) {
		const json_t *vms = json_object_get(r.json, "vms");
		if (!json_is_array(vms))
			mv_cli_err("unexpected answer to GET /v1/vms: no \"vms\" array");
		else if (a.json)
			ret = mv_cli_print_json(r.json);
		else
			ret = mv_table_print_json(vms, MV_ARRAY_SIZE(hdr), hdr, right, vm_row);
	}
	mv_cli_resp_free(&r);
	return ret;
}

#define KV_W 18

/* "memtouch (seed 1, wss 64.0 MiB, rate unlimited, pattern random)" */
static void show_workload(const json_t *wl)
{
	char buf[512], sz[32];
	long long v;
	int n = snprintf(buf, sizeof(buf), "%s", mv_cli_jstr(wl, "kind", "-"));
	const char *sep = " (";
#define ADD(...) do { \
		if (n >= 0 && (size_t)n < sizeof(buf)) \
			n += snprintf(buf + n, sizeof(buf) - (size_t)n, __VA_ARGS__); \
		sep = ", "; \
	} while (0)
	if (mv_cli_jint(wl, "seed", &v))
		ADD("%sseed %lld", sep, v);
	if (json_object_get(wl, "wss"))
		ADD("%swss %s", sep, mv_cli_jsize(wl, "wss", sz, sizeof(sz)));
	if (mv_cli_jint(wl, "rate", &v)) {
		if (v == 0)
			ADD("%srate unlimited", sep);
		else
			ADD("%srate %lld/s", sep, v);
	}
	if (json_is_string(json_object_get(wl, "pattern")))
		ADD("%spattern %s", sep, mv_cli_jstr(wl, "pattern", ""));
	if (mv_cli_jint(wl, "put_pct", &v))
		ADD("%sput %lld%%", sep, v);
	if (mv_cli_jint(wl, "hot_pct", &v))
		ADD("%shot %lld%%", sep, v);
	if (strcmp(sep, ", ") == 0)
		ADD(")");
#undef ADD
	mv_cli_kv(KV_W, "workload", "%s", buf);
}

static void show_vm(const json_t *vm)
{
	char sz[32], when[64] = "-";
	long long v;
	double d;

	mv_cli_kv(KV_W, "id", "%s", mv_cli_jstr(vm, "id", "-"));
	mv_cli_kv(KV_W, "name", "%s", mv_cli_jstr(vm, "name", "-"));
	mv_cli_kv(KV_W, "state", "%s", mv_cli_jstr(vm, "state", "-"));
	if (mv_cli_jint(vm, "memory", &v) && v >= 0)
		mv_cli_kv(KV_W, "memory", "%s (%lld bytes)",
			  mv_fmt_size((uint64_t)v, sz, sizeof(sz)), v);
	else
		mv_cli_kv(KV_W, "memory", "-");
	if (mv_cli_jint(vm, "vcpus", &v))
		mv_cli_kv(KV_W, "vcpus", "%lld", v);
	mv_cli_kv(KV_W, "backing", "%s", mv_cli_jstr(vm, "backing", "-"));
	show_workload(json_object_get(vm, "workload"));
	if (mv_cli_jint(vm, "pid", &v) && v > 0)
		mv_cli_kv(KV_W, "pid", "%lld", v);
	else
		mv_cli_kv(KV_W, "pid", "-");
	if (mv_cli_jint(vm, "created_at", &v) && v > 0) {
		time_t tt = (time_t)v;
		struct tm tm;
		if (localtime_r(&tt, &tm))
			strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %z", &tm);
	}
	mv_cli_kv(KV_W, "created", "%s", when);

	/* Only a VM whose VMM is gone has an exit worth showing; a daemon may
	 * send zeroes for running ones. */
	const char *state = mv_cli_jstr(vm, "state", "");
	const json_t *ex = json_object_get(vm, "exit");
	if (json_is_object(ex) && (!strcmp(state, "stopped") || !strcmp(state, "crashed"))) {
		long long code = -1, sig = 0;
		bool has_code = mv_cli_jint(ex, "code", &code);
		mv_cli_jint(ex, "signal", &sig);
		if (sig > 0)
			mv_cli_kv(KV_W, "exit", "signal %lld", sig);
		else if (has_code && code >= 0)
			mv_cli_kv(KV_W, "exit", "code %lld", code);
		const char *why = mv_cli_jstr(ex, "reason", "");
		if (why[0])
			mv_cli_kv(KV_W, "exit reason", "%s", why);
	}

	const json_t *st = json_object_get(vm, "stats");
	if (json_is_object(st)) {
		if (mv_cli_jint(st, "ops_done", &v))
			mv_cli_kv(KV_W, "ops done", "%lld", v);
		if (mv_cli_jint(st, "resident_bytes", &v) && v >= 0)
			mv_cli_kv(KV_W, "resident", "%s (%lld bytes)",
				  mv_fmt_size((uint64_t)v, sz, sizeof(sz)), v);
		if (mv_cli_jint(st, "dirty_pages_total", &v))
			mv_cli_kv(KV_W, "dirty pages", "%lld", v);
		if (mv_cli_jnum(st, "dirty_rate", &d))
			mv_cli_kv(KV_W, "dirty rate", "%.1f pages/s", d);
		const char *be = mv_cli_jstr(st, "dirty_backend", "");
		mv_cli_kv(KV_W, "dirty backend", "%s", be[0] ? be : "-");
	}
}

static int vm_show(const struct mv_cli *cli, int argc, char **argv)
{
	struct ref_args a;
	struct mv_cli_resp r;
	int ret = parse_ref_args(argc, argv, "vm show", show_usage, ARG_REF | ARG_JSON, &a);
	if (ret >= 0)
		return ret;
	if (vm_call(cli, "GET", &a, NULL, MV_CLI_TIMEOUT_SHORT, true, &r))
		ret = MV_CLI_FAIL;
	else if (a.json)
		ret = mv_cli_print_json(r.json);
	else {
		show_vm(r.json);
		ret = MV_CLI_OK;
	}
	mv_cli_resp_free(&r);
	return ret;
}

/* pause, resume, stop: POST /v1/vms/VM/<verb>, answer is the VM. */
static int vm_action(const struct mv_cli *cli, int argc, char **argv, const char *cmd,
		     const char *usage, long timeout_s)
{
	struct ref_args a;
	struct mv_cli_resp r;
	char suffix[16];
	int ret = parse_ref_args(argc, argv, cmd, usage, ARG_REF | ARG_JSON, &a);
	if (ret >= 0)
		return ret;
	snprintf(suffix, sizeof(suffix), "/%s", argv[0]);
	if (vm_call(cli, "POST", &a, suffix, timeout_s, true, &r))
		ret = MV_CLI_FAIL;
	else if (a.json)
		ret = mv_cli_print_json(r.json);
	else {
		printf("%s: %s\n", mv_cli_jstr(r.json, "name", a.ref),
		       mv_cli_jstr(r.json, "state", "?"));
		ret = MV_CLI_OK;
	}
	mv_cli_resp_free(&r);
	return ret;
}

static int vm_rm(const struct mv_cli *cli, int argc, char **argv)
{
	struct ref_args a;
	struct mv_cli_resp r;
	int ret = parse_ref_args(argc, argv, "vm rm", rm_usage, ARG_REF | ARG_FORCE, &a);
	if (ret >= 0)
		return ret;
	ret = vm_call(cli, "DELETE", &a, a.force ? "?force=true" : NULL,
		      a.force ? MV_CLI_TIMEOUT_LONG : MV_CLI_TIMEOUT_SHORT, false, &r);
	mv_cli_resp_free(&r);
	return ret ? MV_CLI_FAIL : MV_CLI_OK;
}

static int vm_verify(const struct mv_cli *cli, int argc, char **argv)
{
	struct ref_args a;
	struct mv_cli_resp r = {0};
	int ret = parse_ref_args(argc, argv, "vm verify", verify_usage, ARG_REF | ARG_JSON, &a);
	if (ret >= 0)
		return ret;
	ret = MV_CLI_FAIL;
	if (vm_call(cli, "POST", &a, "/verify", MV_CLI_TIMEOUT_VERIFY, true, &r))
		goto out;
	const json_t *okv = json_object_get(r.json, "ok");
	if (!json_is_boolean(okv)) {
		mv_cli_err("unexpected answer to verify: no boolean \"ok\"");
		goto out;
	}
	bool ok = json_is_true(okv);
	long long ops = 0, us = 0;
	mv_cli_jint(r.json, "ops_done", &ops);
	mv_cli_jint(r.json, "elapsed_us", &us);
	if (a.json) {
		if (mv_cli_print_json(r.json) != MV_CLI_OK)
			goto out;
	} else if (ok) {
		printf("%s: ok (%lld ops verified in %.3f s)\n", a.ref, ops, (double)us / 1e6);
	}
	if (!ok) {
		const char *msg = mv_cli_jstr(r.json, "message", "");
		mv_cli_err("%s: verification failed after %lld ops: %s", a.ref, ops,
			   msg[0] ? msg : "(no details)");
		goto out;
	}
	ret = MV_CLI_OK;
out:
	mv_cli_resp_free(&r);
	return ret;
}

int mv_cli_cmd_vm(const struct mv_cli *cli, int argc, char **argv)
{
	if (argc < 2) {
		fputs(vm_usage, stderr);
		return MV_CLI_USAGE;
	}
	const char *sub = argv[1];
	argc--;
	argv++;
	if (strcmp(sub, "-h") == 0 || strcmp(sub, "--help") == 0) {
		fputs(vm_usage, stdout);
		return MV_CLI_OK;
	}
	if (strcmp(sub, "create") == 0)
		return mv_cli_cmd_vm_create(cli, argc, argv);
	if (strcmp(sub, "ls") == 0 || strcmp(sub, "list") == 0)
		return vm_ls(cli, argc, argv);
	if (strcmp(sub, "show") == 0)
		return vm_show(cli, argc, argv);
	if (strcmp(sub, "pause") == 0)
		return vm_action(cli, argc, argv, "vm pause", pause_usage, MV_CLI_TIMEOUT_SHORT);
	if (strcmp(sub, "resume") == 0)
		return vm_action(cli, argc, argv, "vm resume", resume_usage, MV_CLI_TIMEOUT_SHORT);
	if (strcmp(sub, "stop") == 0)
		return vm_action(cli, argc, argv, "vm stop", stop_usage, MV_CLI_TIMEOUT_LONG);
	if (strcmp(sub, "rm") == 0)
		return vm_rm(cli, argc, argv);
	if (strcmp(sub, "verify") == 0)
		return vm_verify(cli, argc, argv);
	if (strcmp(sub, "migrate") == 0)
		return mv_cli_cmd_vm_migrate(cli, argc, argv);
	if (strcmp(sub, "sensitive") == 0)
		return mv_cli_cmd_vm_sensitive(cli, argc, argv);
	return mv_cli_usage_err("vm", "unknown command '%s'", sub);
}
