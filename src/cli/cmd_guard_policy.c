/* The guard's detection commands: `memvisor guard events` lists suspected
 * side-channel attackers the guard detected (GET /v1/guard/events) and
 * `memvisor guard policy [set OPTIONS]` shows or changes its thresholds, deny
 * list and response (GET, POST /v1/guard/policy; the daemon validates). */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include "cli_i.h"

static const char events_usage[] =
	"Usage: memvisor guard events [--json]\n"
	"\n"
	"Lists the guard's detections, oldest first: the suspect VM, its victim, the\n"
	"signal (write_probe, sampled_access, deny_hash), the evidence, the action\n"
	"taken and how long after the first sign it was detected.\n"
	"  --json  print the daemon's answer as JSON\n";

static const char policy_usage[] =
	"Usage: memvisor guard policy [--json]\n"
	"       memvisor guard policy set [OPTIONS] [--json]\n"
	"\n"
	"Shows or changes the side-channel guard's policy. Options left out keep\n"
	"their value.\n"
	"  --detect on|off        evaluate the signals at all\n"
	"  --action A             log, unfuse, throttle, pause or stop the suspect, or move\n"
	"                         the victim's sensitive ranges to fresh frames\n"
	"  --throttle-pct N       throttle: hold the suspect's vCPUs back N %% (1-99)\n"
	"  --wp-min-pages N       write probe: N cross-VM breaks of freshly fused pages ...\n"
	"  --wp-fresh-ms N        ... each fused less than N ms before ...\n"
	"  --wp-window-ms N       ... within N ms, and they are ...\n"
	"  --wp-min-pct N         ... at least N %% of the VM's fused pages\n"
	"  --sa-windows N         sampled access: of the last N trapped windows ...\n"
	"  --sa-min-pct N         ... at least N %% touched\n"
	"  --deny NAME=XXH3       add a known probe page (XXH3-64 of its 4 KiB, 16 hex digits)\n"
	"  --clear-deny           empty the deny list first\n"
	"  --json                 print the daemon's answer as JSON\n";

static int events(const struct mv_cli *cli, bool json)
{
	struct mv_cli_resp r;
	int ret = mv_cli_get_or_print(cli, "/v1/guard/events", json, &r);
	if (ret >= 0)
		return ret;
	const json_t *arr = json_object_get(r.json, "events");
	if (json_array_size(arr) == 0)
		printf("no detections\n");
	size_t i;
	const json_t *o;
	json_array_foreach(arr, i, o) {
		long long id = 0, count = 0, of = 0;
		const json_t *ev = json_object_get(o, "evidence");
		mv_cli_jint(o, "id", &id);
		mv_cli_jint(ev, "count", &count);
		mv_cli_jint(ev, "of", &of);
		const char *victim = mv_cli_jstr(o, "victim", "");
		printf("%lld: %s by %s%s%s (%lld of %lld), %.1f ms after the first sign; %s: %s\n", id,
		       mv_cli_jstr(o, "signal", "?"), mv_cli_jstr(o, "suspect", "?"),
		       *victim ? " against " : "", victim, count, of,
		       json_real_value(json_object_get(o, "latency_ms")),
		       mv_cli_jstr(o, "action", "?"), mv_cli_jstr(o, "outcome", "?"));
	}
	mv_cli_resp_free(&r);
	return MV_CLI_OK;
}

static void show(const json_t *p)
{
	const json_t *wp = json_object_get(p, "write_probe"), *sa = json_object_get(p, "sampled_access");
	long long a = 0, b = 0, c = 0;
	mv_cli_kv(16, "detect", "%s", json_is_true(json_object_get(p, "detect")) ? "on" : "off");
	mv_cli_kv(16, "action", "%s", mv_cli_jstr(p, "action", "?"));
	mv_cli_jint(p, "throttle_pct", &a);
	mv_cli_kv(16, "throttle", "%lld %%", a);
	mv_cli_jint(wp, "min_pages", &a);
	mv_cli_jint(wp, "fresh_ms", &b);
	mv_cli_jint(wp, "window_ms", &c);
	long long pct = 0;
	mv_cli_jint(wp, "min_pct", &pct);
	mv_cli_kv(16, "write probe", "%lld pages fused < %lld ms broken within %lld ms (>= %lld %% "
		  "of the fused)", a, b, c, pct);
	mv_cli_jint(sa, "min_pct", &a);
	mv_cli_jint(sa, "windows", &b);
	mv_cli_kv(16, "sampled access", "touched in %lld %% of %lld windows", a, b);
	const json_t *deny = json_object_get(p, "deny");
	size_t i;
	const json_t *d;
	mv_cli_kv(16, "deny list", "%zu entr%s", json_array_size(deny),
		  json_array_size(deny) == 1 ? "y" : "ies");
	json_array_foreach(deny, i, d)
		printf("  %s %s\n", mv_cli_jstr(d, "xxh3", "?"), mv_cli_jstr(d, "name", "?"));
}

static int num_opt(json_t *obj, const char *key, const char *opt, const char *s)
{
	char *end;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < 0)
		return mv_cli_usage_err("guard policy", "%s: '%s' is not a number", opt, s);
	json_object_set_new(obj, key, json_integer(v));
	return 0;
}

static json_t *sub_obj(json_t *body, const char *key)
{
	json_t *o = json_object_get(body, key);
	if (!o) {
		o = json_object();
		json_object_set_new(body, key, o);
	}
	return o;
}

static int add_deny(const struct mv_cli *cli, json_t *body, const char *arg)
{
	const char *eq = strrchr(arg, '=');
	if (!eq || eq == arg)
		return mv_cli_usage_err("guard policy", "--deny wants NAME=XXH3, not '%s'", arg);
	json_t *deny = json_object_get(body, "deny");
	if (!deny) {
		/* Adding keeps what the daemon has: start from its list. */
		struct mv_cli_resp r = {0};
		if (mv_cli_call(cli, "GET", "/v1/guard/policy", NULL, MV_CLI_TIMEOUT_SHORT, true, &r)) {
			mv_cli_resp_free(&r);
			return MV_CLI_FAIL;
		}
		deny = json_deep_copy(json_object_get(r.json, "deny"));
		mv_cli_resp_free(&r);
		json_object_set_new(body, "deny", deny ? deny : json_array());
		deny = json_object_get(body, "deny");
	}
	json_array_append_new(deny, json_pack("{s:s%, s:s}", "name", arg, (size_t)(eq - arg),
					      "xxh3", eq + 1));
	return 0;
}

static int policy(const struct mv_cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'}, {"json", no_argument, NULL, 'j'},
		{"detect", required_argument, NULL, 'd'}, {"action", required_argument, NULL, 'a'},
		{"throttle-pct", required_argument, NULL, 't'},
		{"wp-min-pages", required_argument, NULL, 'm'},
		{"wp-fresh-ms", required_argument, NULL, 'f'},
		{"wp-window-ms", required_argument, NULL, 'w'},
		{"wp-min-pct", required_argument, NULL, 'P'},
		{"sa-windows", required_argument, NULL, 'W'},
		{"sa-min-pct", required_argument, NULL, 'p'},
		{"deny", required_argument, NULL, 'D'}, {"clear-deny", no_argument, NULL, 'C'},
		{NULL, 0, NULL, 0},
	};
	json_t *body = json_object();
	bool json = false, any = false;
	int c, ret = MV_CLI_USAGE;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		int r = 0;
		any = any || (c != 'j' && c != 'h');
		switch (c) {
		case 'h':
			fputs(policy_usage, stdout);
			json_decref(body);
			return MV_CLI_OK;
		case 'j': json = true; break;
		case 'd':
			if (strcmp(optarg, "on") && strcmp(optarg, "off"))
				r = mv_cli_usage_err("guard policy", "--detect: on or off, not '%s'", optarg);
			json_object_set_new(body, "detect", json_boolean(!strcmp(optarg, "on")));
			break;
		case 'a': json_object_set_new(body, "action", json_string(optarg)); break;
		case 't': r = num_opt(body, "throttle_pct", "--throttle-pct", optarg); break;
		case 'm': r = num_opt(sub_obj(body, "write_probe"), "min_pages", "--wp-min-pages", optarg); break;
		case 'f': r = num_opt(sub_obj(body, "write_probe"), "fresh_ms", "--wp-fresh-ms", optarg); break;
		case 'w': r = num_opt(sub_obj(body, "write_probe"), "window_ms", "--wp-window-ms", optarg); break;
		case 'P': r = num_opt(sub_obj(body, "write_probe"), "min_pct", "--wp-min-pct", optarg); break;
		case 'W': r = num_opt(sub_obj(body, "sampled_access"), "windows", "--sa-windows", optarg); break;
		case 'p': r = num_opt(sub_obj(body, "sampled_access"), "min_pct", "--sa-min-pct", optarg); break;
		case 'C': json_object_set_new(body, "deny", json_array()); break;
		case 'D': r = add_deny(cli, body, optarg); break;
		default: r = mv_cli_getopt_err("guard policy", c, argv);
		}
		if (r) {
			json_decref(body);
			return r;
		}
	}
	/* argv[optind] is "policy"; then "set" or nothing. */
	bool set = optind + 1 < argc && strcmp(argv[optind + 1], "set") == 0;
	if (optind + 1 + set < argc) {
		mv_cli_usage_err("guard policy", "unexpected argument '%s'", argv[optind + 1 + set]);
		goto out;
	}
	if (any && !set) {
		mv_cli_usage_err("guard policy", "options change the policy: use 'guard policy set'");
		goto out;
	}
	struct mv_cli_resp r = {0};
	ret = mv_cli_call(cli, set ? "POST" : "GET", "/v1/guard/policy", set ? body : NULL,
			  MV_CLI_TIMEOUT_SHORT, true, &r) ? MV_CLI_FAIL : MV_CLI_OK;
	if (ret == MV_CLI_OK) {
		if (json)
			ret = mv_cli_print_json(r.json);
		else
			show(r.json);
	}
	mv_cli_resp_free(&r);
out:
	json_decref(body);
	return ret;
}

int mv_cli_cmd_guard_detect(const struct mv_cli *cli, const char *sub, int argc, char **argv)
{
	if (strcmp(sub, "policy") == 0)
		return policy(cli, argc, argv);
	bool json;
	int ret = mv_cli_json_opts("guard events", events_usage, argc, argv, &json);
	if (ret >= 0)
		return ret;
	if (optind + 1 < argc)
		return mv_cli_usage_err("guard events", "unexpected argument '%s'", argv[optind + 1]);
	return events(cli, json);
}
