/* `memvisor vm create`: turns flags into a POST /v1/vms VmSpec. Sizes go to
 * the daemon exactly as typed ("512M") because the daemon owns size parsing
 * and validation; here we only catch what is plainly a usage error (missing
 * flags, non-numbers, values outside an enum) and exit 2 for it. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include "cli_i.h"

static const char create_usage[] =
	"Usage: memvisor vm create NAME --memory SIZE --workload KIND [OPTIONS]\n"
	"\n"
	"Creates a VM and starts its VMM process running the workload; prints its id.\n"
	"\n"
	"  -m, --memory SIZE       guest RAM: bytes or a size like 512M, 2G (page aligned)\n"
	"  -w, --workload KIND     idle | memtouch | kvstore\n"
	"      --vcpus N           vCPUs (default 1)\n"
	"      --backing B         auto | 4k | hugetlb (default auto)\n"
	"      --seed N            workload seed (default 1)\n"
	"      --wss SIZE          working set (memtouch) or table size (kvstore)\n"
	"      --rate N            pages/s (memtouch) or ops/s (kvstore); 0 = unlimited\n"
	"      --pattern P         seq | random | hotcold (memtouch, default random)\n"
	"      --put-pct N         share of puts, 0-100 (kvstore, default 70)\n"
	"      --hot-pct N         share of accesses to the hot set, 0-100 (default 90)\n"
	"      --fusion            let page fusion share this VM's identical pages\n"
	"      --json              print the created VM as JSON instead of its id\n"
	"  -h, --help              show this help\n";

static const char *const workloads[] = {"idle", "memtouch", "kvstore", "secret", "writeprobe",
					    "flushreload", NULL};
static const char *const backings[] = {"auto", "4k", "hugetlb", NULL};
static const char *const patterns[] = {"seq", "random", "hotcold", NULL};

enum {
	OPT_VCPUS = 0x100, OPT_BACKING, OPT_SEED, OPT_WSS, OPT_RATE, OPT_PATTERN,
	OPT_PUT_PCT, OPT_HOT_PCT, OPT_JSON, OPT_FUSION,
};

#define CMD "vm create"

/* Strict decimal: digits only, no sign, no junk, value <= max. */
static int parse_uint(const char *s, unsigned long long max, unsigned long long *out)
{
	if (s[0] < '0' || s[0] > '9')
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

/* Adds key: N to obj after checking the flag's value; returns -1 or an exit status. */
static int put_uint(json_t *obj, const char *key, const char *flag, const char *val,
		    unsigned long long min, unsigned long long max)
{
	unsigned long long v;
	if (parse_uint(val, max, &v) || v < min)
		return mv_cli_usage_err(CMD, "%s: expected an integer from %llu to %llu (got '%s')",
					flag, min, max, val);
	if (json_object_set_new(obj, key, json_integer((json_int_t)v))) {
		mv_cli_err("out of memory");
		return MV_CLI_FAIL;
	}
	return -1;
}

static int put_enum(json_t *obj, const char *key, const char *flag, const char *val,
		    const char *const *allowed)
{
	for (const char *const *a = allowed; *a; a++)
		if (strcmp(val, *a) == 0) {
			if (json_object_set_new(obj, key, json_string(val))) {
				mv_cli_err("out of memory");
				return MV_CLI_FAIL;
			}
			return -1;
		}
	char list[64] = "";
	for (const char *const *a = allowed; *a; a++) {
		strncat(list, *a, sizeof(list) - strlen(list) - 1);
		if (a[1])
			strncat(list, ", ", sizeof(list) - strlen(list) - 1);
	}
	return mv_cli_usage_err(CMD, "%s: expected one of %s (got '%s')", flag, list, val);
}

static int put_size(json_t *obj, const char *key, const char *flag, const char *val)
{
	if (val[0] == '\0')
		return mv_cli_usage_err(CMD, "%s: needs a size such as 512M", flag);
	if (json_object_set_new(obj, key, json_string(val))) {
		mv_cli_err("out of memory");
		return MV_CLI_FAIL;
	}
	return -1;
}

/* Fills spec/wl from the flags; returns -1 to go on, else an exit status. */
static int parse_flags(int argc, char **argv, json_t *spec, json_t *wl, bool *json_out)
{
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'},
		{"memory", required_argument, NULL, 'm'},
		{"workload", required_argument, NULL, 'w'},
		{"vcpus", required_argument, NULL, OPT_VCPUS},
		{"backing", required_argument, NULL, OPT_BACKING},
		{"seed", required_argument, NULL, OPT_SEED},
		{"wss", required_argument, NULL, OPT_WSS},
		{"rate", required_argument, NULL, OPT_RATE},
		{"pattern", required_argument, NULL, OPT_PATTERN},
		{"put-pct", required_argument, NULL, OPT_PUT_PCT},
		{"hot-pct", required_argument, NULL, OPT_HOT_PCT},
		{"json", no_argument, NULL, OPT_JSON},
		{"fusion", no_argument, NULL, OPT_FUSION},
		{NULL, 0, NULL, 0},
	};
	int c, r = -1;

	optind = 0;
	opterr = 0;
	while (r < 0 && (c = getopt_long(argc, argv, ":hm:w:", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			fputs(create_usage, stdout);
			return MV_CLI_OK;
		case 'm':
			r = put_size(spec, "memory", "--memory", optarg);
			break;
		case 'w':
			r = put_enum(wl, "kind", "--workload", optarg, workloads);
			break;
		case OPT_VCPUS:
			/* The upper bound is the daemon's (MV_MAX_VCPUS may grow). */
			r = put_uint(spec, "vcpus", "--vcpus", optarg, 1, INT32_MAX);
			break;
		case OPT_BACKING:
			r = put_enum(spec, "backing", "--backing", optarg, backings);
			break;
		case OPT_SEED:
			r = put_uint(wl, "seed", "--seed", optarg, 0, INT64_MAX);
			break;
		case OPT_WSS:
			r = put_size(wl, "wss", "--wss", optarg);
			break;
		case OPT_RATE:
			r = put_uint(wl, "rate", "--rate", optarg, 0, INT64_MAX);
			break;
		case OPT_PATTERN:
			r = put_enum(wl, "pattern", "--pattern", optarg, patterns);
			break;
		case OPT_PUT_PCT:
			r = put_uint(wl, "put_pct", "--put-pct", optarg, 0, 100);
			break;
		case OPT_HOT_PCT:
			r = put_uint(wl, "hot_pct", "--hot-pct", optarg, 0, 100);
			break;
		case OPT_JSON:
			*json_out = true;
			break;
		case OPT_FUSION:
			json_object_set_new(spec, "fusion", json_true());
			break;
		default:
			return mv_cli_getopt_err(CMD, c, argv);
		}
	}
	if (r >= 0)
		return r;
	if (optind >= argc)
		return mv_cli_usage_err(CMD, "missing NAME");
	if (optind + 1 < argc)
		return mv_cli_usage_err(CMD, "unexpected argument '%s' (one NAME only)",
					argv[optind + 1]);
	if (argv[optind][0] == '\0')
		return mv_cli_usage_err(CMD, "NAME must not be empty");
	if (!json_object_get(spec, "memory"))
		return mv_cli_usage_err(CMD, "missing --memory SIZE");
	if (!json_object_get(wl, "kind"))
		return mv_cli_usage_err(CMD, "missing --workload idle|memtouch|kvstore");
	if (json_object_set_new(spec, "name", json_string(argv[optind]))) {
		mv_cli_err("NAME is not valid UTF-8 or out of memory");
		return MV_CLI_USAGE;
	}
	return -1;
}

int mv_cli_cmd_vm_create(const struct mv_cli *cli, int argc, char **argv)
{
	struct mv_cli_resp r = {0};
	bool json = false;
	json_t *spec = json_object(), *wl = json_object();
	int ret = MV_CLI_FAIL;

	if (!spec || !wl) {
		mv_cli_err("out of memory");
		goto out;
	}
	ret = parse_flags(argc, argv, spec, wl, &json);
	if (ret >= 0)
		goto out;
	if (json_object_set(spec, "workload", wl)) {
		mv_cli_err("out of memory");
		ret = MV_CLI_FAIL;
		goto out;
	}

	ret = MV_CLI_FAIL;
	if (mv_cli_call(cli, "POST", "/v1/vms", spec, MV_CLI_TIMEOUT_LONG, true, &r)) {
		if (r.status == 409)
			mv_cli_hint("`memvisor vm ls` lists the VMs that exist");
		else if (r.status == 422)
			mv_cli_hint("`memvisor host` shows the memory still free");
		goto out;
	}
	if (json) {
		ret = mv_cli_print_json(r.json);
		goto out;
	}
	const char *id = mv_cli_jstr(r.json, "id", NULL);
	if (!id) {
		mv_cli_err("VM created but the daemon's answer has no \"id\"");
		goto out;
	}
	printf("%s\n", id);
	ret = MV_CLI_OK;
out:
	mv_cli_resp_free(&r);
	json_decref(wl);
	json_decref(spec);
	return ret;
}
