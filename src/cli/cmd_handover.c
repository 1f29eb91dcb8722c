/* `memvisor vm migrate VM --local [--vmm PATH]` and `memvisor vm migrate VM
 * --to HOST:PORT` (POST /v1/vms/VM/migrate), and `memvisor upgrade --vmm PATH`
 * (POST /v1/upgrade): move VMs to a new VMM process on this host without
 * copying guest RAM, or live to another host with a progress bar. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "cli_i.h"

static const char migrate_usage[] =
	"Usage: memvisor vm migrate VM --local [--vmm PATH] [--json]\n"
	"       memvisor vm migrate VM --to HOST:PORT [--downtime MS] [--postcopy]\n"
	"                              [--compress] [--max-bandwidth BYTES/S] [--json]\n"
	"\n"
	"--local: hot migration on this host. A new memvisor-vmm process maps the same\n"
	"guest RAM (same physical pages, nothing copied), takes over the vCPU state and\n"
	"resumes; the old process exits. If the new VMM fails, the VM stays on the old.\n"
	"--to: live migration to the memvisord listening for migrations at HOST:PORT\n"
	"(memvisord --migrate-listen). Pre-copy until what is left fits the downtime\n"
	"target, then a short pause; with --postcopy the VM resumes there early and\n"
	"pulls missing pages. If anything fails before the switch-over, the VM runs on\n"
	"here with its memory intact and the error says what happened.\n"
	"  --local                hand over to a new VMM process on this host\n"
	"  --vmm PATH             binary for the new VMM (default: the daemon's current one)\n"
	"  --to HOST:PORT         the destination's migration address\n"
	"  --downtime MS          stop-copy target (default 300)\n"
	"  --postcopy             resume at the destination after the first pass\n"
	"  --compress             zstd-compress pages\n"
	"  --max-bandwidth BYTES  cap the stream (bytes/s, units allowed: 100M)\n"
	"  --json                 print the final answer as JSON (no progress bar)\n";

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
	bool local, json, postcopy, compress;
	const char *vmm, *to, *downtime, *bandwidth;
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
		{"to", required_argument, NULL, 't'},
		{"downtime", required_argument, NULL, 'd'},
		{"postcopy", no_argument, NULL, 'p'},
		{"compress", no_argument, NULL, 'z'},
		{"max-bandwidth", required_argument, NULL, 'b'},
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
		case 't': o->to = optarg; break;
		case 'd': o->downtime = optarg; break;
		case 'p': o->postcopy = true; break;
		case 'z': o->compress = true; break;
		case 'b': o->bandwidth = optarg; break;
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

static void progress_bar(const json_t *mg)
{
	long long pass = 0, sent = 0, left = 0, rate = 0, bw = 0, pages = 0, thr = 0, req = 0;
	mv_cli_jint(mg, "pass", &pass);
	mv_cli_jint(mg, "bytes_sent", &sent);
	mv_cli_jint(mg, "pages_sent", &pages);
	mv_cli_jint(mg, "pages_remaining", &left);
	mv_cli_jint(mg, "dirty_rate", &rate);
	mv_cli_jint(mg, "bandwidth", &bw);
	mv_cli_jint(mg, "throttle_pct", &thr);
	mv_cli_jint(mg, "pages_requested", &req);
	char extra[64] = "";
	if (thr)
		snprintf(extra, sizeof(extra), "  throttle %lld%%", thr);
	else if (req)   /* post-copy: pages the running guest faulted on */
		snprintf(extra, sizeof(extra), "  faults %lld", req);
	int pct = pages + left > 0 ? (int)(100 * pages / (pages + left)) : 0;
	char bar[21], a[32], b[32], c[32];
	for (int i = 0; i < 20; i++)
		bar[i] = i < pct / 5 ? '#' : '.';
	bar[20] = '\0';
	fprintf(stderr, "\r[%s] %3d%% %-9s pass %lld  sent %s  left %s  dirty %lld p/s  %s/s%s   ",
		bar, pct, mv_cli_jstr(mg, "phase", "?"), pass,
		mv_fmt_size((uint64_t)sent, a, sizeof(a)),
		mv_fmt_size((uint64_t)left * 4096, b, sizeof(b)), rate,
		mv_fmt_size((uint64_t)bw, c, sizeof(c)), extra);
	fflush(stderr);
}

/* Follows a remote migration until the VM has left or failed to. */
static int follow(const struct mv_cli *cli, const char *id, bool json)
{
	char *path = mv_cli_vm_path(id, "");
	bool tty = !json && isatty(2);
	int ret = MV_CLI_FAIL;
	for (;;) {
		struct mv_cli_resp resp;
		if (!path || mv_cli_call(cli, "GET", path, NULL, MV_CLI_TIMEOUT_SHORT, true, &resp) < 0)
			break;
		const char *state = mv_cli_jstr(resp.json, "state", "?");
		const json_t *mg = json_object_get(resp.json, "migration");
		if (strcmp(state, "migrating") == 0) {
			if (tty)
				progress_bar(mg);
			mv_cli_resp_free(&resp);
			nanosleep(&(struct timespec){.tv_nsec = 200 * 1000000L}, NULL);
			continue;
		}
		if (tty)
			fputc('\n', stderr);
		long long down = 0, total = 0, sent = 0;
		mv_cli_jint(mg, "downtime_us", &down);
		mv_cli_jint(mg, "total_us", &total);
		mv_cli_jint(mg, "bytes_sent", &sent);
		char a[32];
		if (json)
			mv_cli_print_json(resp.json);
		if (strcmp(state, "migrated") == 0) {
			if (!json)
				printf("%s: now runs at %s (%s sent in %.2f s, downtime %.1f ms)\n",
				       mv_cli_jstr(resp.json, "name", id), mv_cli_jstr(mg, "to", "?"),
				       mv_fmt_size((uint64_t)sent, a, sizeof(a)), (double)total / 1e6,
				       (double)down / 1e3);
			ret = MV_CLI_OK;
		} else {
			mv_cli_err("migration failed; the VM is %s here: %s", state,
				   mv_cli_jstr(mg, "error", "(no reason given)"));
		}
		mv_cli_resp_free(&resp);
		break;
	}
	free(path);
	return ret;
}

int mv_cli_cmd_vm_migrate(const struct mv_cli *cli, int argc, char **argv)
{
	struct opts o;
	int ret = parse(argc, argv, "vm migrate", migrate_usage, &o);
	if (ret >= 0)
		return ret;
	if (o.argi != argc - 1)
		return mv_cli_usage_err("vm migrate", "expected exactly one VM");
	if (o.local == !!o.to)
		return mv_cli_usage_err("vm migrate", "say where: --local or --to HOST:PORT");
	if (o.local && (o.downtime || o.postcopy || o.compress || o.bandwidth))
		return mv_cli_usage_err("vm migrate", "--local takes only --vmm");
	if (o.to && o.vmm)
		return mv_cli_usage_err("vm migrate", "--vmm applies to --local only");
	uint64_t bw = 0;
	if (o.bandwidth && mv_parse_size(o.bandwidth, &bw) < 0)
		return mv_cli_usage_err("vm migrate", "--max-bandwidth: '%s' is not a rate", o.bandwidth);
	char *end = NULL;
	long down = o.downtime ? strtol(o.downtime, &end, 10) : 0;
	if (o.downtime && (*end || down < 1 || down > 60000))
		return mv_cli_usage_err("vm migrate", "--downtime: '%s' is not 1..60000 ms", o.downtime);
	json_t *body = o.local ? json_pack("{s:b}", "local", 1) : json_pack("{s:s}", "to", o.to);
	if (o.vmm)
		json_object_set_new(body, "vmm", json_string(o.vmm));
	if (o.downtime)
		json_object_set_new(body, "downtime_ms", json_integer(down));
	if (o.postcopy)
		json_object_set_new(body, "postcopy", json_true());
	if (o.compress)
		json_object_set_new(body, "compress", json_true());
	if (o.bandwidth)
		json_object_set_new(body, "max_bandwidth", json_integer((json_int_t)bw));
	char *path = mv_cli_vm_path(argv[o.argi], "/migrate");
	struct mv_cli_resp resp;
	int r = path ? mv_cli_call(cli, "POST", path, body, MV_CLI_TIMEOUT_LONG, true, &resp) : -1;
	free(path);
	json_decref(body);
	if (r == 0 && o.local)
		o.json ? mv_cli_print_json(resp.json) : (print_result(resp.json), 0);
	if (r == 0 && o.to) {
		char id[64];
		snprintf(id, sizeof(id), "%s", mv_cli_jstr(resp.json, "id", argv[o.argi]));
		mv_cli_resp_free(&resp);
		return follow(cli, id, o.json);
	}
	mv_cli_resp_free(&resp);
	return r == 0 ? MV_CLI_OK : MV_CLI_FAIL;
}

int mv_cli_cmd_upgrade(const struct mv_cli *cli, int argc, char **argv)
{
	struct opts o;
	int ret = parse(argc, argv, "upgrade", upgrade_usage, &o);
	if (ret >= 0)
		return ret;
	if (o.local || o.to || o.downtime || o.postcopy || o.compress || o.bandwidth || o.argi != argc)
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
