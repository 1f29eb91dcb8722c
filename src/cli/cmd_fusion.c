/* `memvisor fusion status`: the page-fusion scanner's figures (GET /v1/fusion):
 * pages shared and sharing, memory saved, scans, merges, copy-on-write breaks. */
#include "memvisor/util.h"
#include "cli_i.h"

static const char fusion_usage[] =
	"Usage: memvisor fusion status [--json]\n"
	"\n"
	"Shows page fusion across the VMs that opted in (vm create --fusion): pool\n"
	"pages in use (shared), guest pages mapped to them (sharing), unique pages in\n"
	"the last full scan (unshared), memory saved, scans, merges and the pages\n"
	"guest writes un-shared again (copy-on-write breaks).\n"
	"  --json  print the daemon's answer as JSON\n";

#define KV_W 16

static void kv_num(const json_t *o, const char *key, const char *label)
{
	long long v;
	if (mv_cli_jint(o, key, &v))
		mv_cli_kv(KV_W, label, "%lld", v);
}

int mv_cli_cmd_fusion(const struct mv_cli *cli, int argc, char **argv)
{
	bool json;
	int ret = mv_cli_json_opts("fusion", fusion_usage, argc, argv, &json);
	if (ret >= 0 || (ret = mv_cli_only_sub("fusion", "status", "status", argc, argv)) >= 0)
		return ret;
	struct mv_cli_resp r;
	if ((ret = mv_cli_get_or_print(cli, "/v1/fusion", json, &r)) >= 0)
		return ret;
	const json_t *o = r.json;
	const json_t *en = json_object_get(o, "enabled");
	mv_cli_kv(KV_W, "enabled", "%s", json_is_true(en) ? "yes" : "no");
	kv_num(o, "rate", "rate (pages/s)");
	kv_num(o, "vms", "vms");
	kv_num(o, "shared", "shared");
	kv_num(o, "sharing", "sharing");
	kv_num(o, "unshared", "unshared");
	long long v;
	char sz[32];
	if (mv_cli_jint(o, "saved_bytes", &v) && v >= 0)
		mv_cli_kv(KV_W, "saved", "%s (%lld bytes)", mv_fmt_size((uint64_t)v, sz, sizeof(sz)), v);
	kv_num(o, "full_scans", "full scans");
	kv_num(o, "pages_scanned", "pages scanned");
	kv_num(o, "merges", "merges");
	kv_num(o, "misses", "misses");
	kv_num(o, "cow_breaks", "cow breaks");
	kv_num(o, "unfused", "unfused");
	mv_cli_resp_free(&r);
	return MV_CLI_OK;
}
