/* `memvisor host` (GET /v1/host: capacity, usage, kernel features) and
 * `memvisor metrics` (GET /metrics, Prometheus text passed through raw). */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "cli_i.h"

static const char host_usage[] =
	"Usage: memvisor host [--json]\n"
	"\n"
	"Shows this host's guest-memory capacity and usage, free huge pages, the\n"
	"dirty-tracking backend the kernel allows and the number of VMs.\n"
	"  --json  print the daemon's answer as JSON\n";

static const char metrics_usage[] =
	"Usage: memvisor metrics\n"
	"\n"
	"Prints memvisord's Prometheus metrics (text exposition format) as served.\n";

#define HUGEPAGE_2M (2ULL << 20)
#define KV_W 16

/* Parses [--json] (when json != NULL) and --help; -1 to go on, else exit status. */
static int parse_simple(int argc, char **argv, const char *cmd, const char *usage, bool *json)
{
	int ret = mv_cli_json_opts(cmd, usage, argc, argv, json);
	if (ret < 0 && optind < argc)
		return mv_cli_usage_err(cmd, "unexpected argument '%s'", argv[optind]);
	return ret;
}

static void kv_size(const json_t *h, const char *key, const char *label)
{
	char sz[32];
	long long v;
	if (mv_cli_jint(h, key, &v) && v >= 0)
		mv_cli_kv(KV_W, label, "%s (%lld bytes)", mv_fmt_size((uint64_t)v, sz, sizeof(sz)), v);
}

int mv_cli_cmd_host(const struct mv_cli *cli, int argc, char **argv)
{
	struct mv_cli_resp r;
	bool json;
	long long v, cap, used;
	char sz[32];
	int ret = parse_simple(argc, argv, "host", host_usage, &json);
	if (ret >= 0 || (ret = mv_cli_get_or_print(cli, "/v1/host", json, &r)) >= 0)
		return ret;
	const json_t *h = r.json;
	mv_cli_kv(KV_W, "version", "%s", mv_cli_jstr(h, "version", "-"));
	mv_cli_kv(KV_W, "hostname", "%s", mv_cli_jstr(h, "hostname", "-"));
	mv_cli_kv(KV_W, "state dir", "%s", mv_cli_jstr(h, "state_dir", "-"));
	mv_cli_kv(KV_W, "socket", "%s", cli->socket);
	kv_size(h, "memory_capacity", "memory capacity");
	kv_size(h, "memory_used", "memory used");
	if (json_object_get(h, "memory_free"))
		kv_size(h, "memory_free", "memory free");
	else if (mv_cli_jint(h, "memory_capacity", &cap) && mv_cli_jint(h, "memory_used", &used) &&
		 cap >= used && used >= 0) /* older daemons: api.h has no memory_free */
		mv_cli_kv(KV_W, "memory free", "%s (%lld bytes)",
			  mv_fmt_size((uint64_t)(cap - used), sz, sizeof(sz)), cap - used);
	if (mv_cli_jint(h, "hugepages_free", &v) && v >= 0)
		mv_cli_kv(KV_W, "hugepages free", "%lld x 2 MiB (%s)", v,
			  mv_fmt_size((uint64_t)v * HUGEPAGE_2M, sz, sizeof(sz)));
	mv_cli_kv(KV_W, "guest ram pages", "%s", mv_cli_jstr(h, "guest_ram_pages", "-"));
	mv_cli_kv(KV_W, "dirty backend", "%s", mv_cli_jstr(h, "dirty_backend", "-"));
	if (mv_cli_jint(h, "vms", &v))
		mv_cli_kv(KV_W, "vms", "%lld", v);
	mv_cli_resp_free(&r);
	return MV_CLI_OK;
}

int mv_cli_cmd_metrics(const struct mv_cli *cli, int argc, char **argv)
{
	struct mv_cli_resp r = {0};
	int ret = parse_simple(argc, argv, "metrics", metrics_usage, NULL);
	if (ret >= 0)
		return ret;
	ret = MV_CLI_FAIL;
	if (mv_cli_call(cli, "GET", "/metrics", NULL, MV_CLI_TIMEOUT_SHORT, false, &r))
		goto out;
	/* One write(2), not stdio's 4 KiB pieces: the text (a few KiB) then sits
	 * in the pipe at once, so `memvisor metrics | grep -q X` never makes us
	 * write to a reader that already left (EPIPE). */
	fflush(stdout);
	for (size_t off = 0; off < r.len;) {
		ssize_t n = write(STDOUT_FILENO, r.body + off, r.len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			mv_cli_err("error writing output: %s", strerror(errno));
			goto out;
		}
		off += (size_t)n;
	}
	ret = MV_CLI_OK;
out:
	mv_cli_resp_free(&r);
	return ret;
}
