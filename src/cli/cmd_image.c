/* `memvisor image pull|ls|rm` and `memvisor cache prepopulate|status`: image
 * pulls and the shared cache fill run on the daemon's workers; these
 * commands start them and follow their progress (a bar on a terminal). */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include "memvisor/util.h"
#include "cli_i.h"

#define POLL_US 200000

static const char image_usage[] =
	"Usage: memvisor image COMMAND [ARGS...]\n"
	"\n"
	"Commands:\n"
	"  pull REF [--json]     pull an image (manifest, config, layer indexes; no file data)\n"
	"  ls [--json]           list images\n"
	"  rm NAME               remove an image no container uses\n"
	"\n"
	"REF is host[:port]/repository[:tag|@sha256:...], e.g. 127.0.0.1:5000/test/busybox:v1.\n";

static const char cache_usage[] =
	"Usage: memvisor cache COMMAND [ARGS...]\n"
	"\n"
	"Commands:\n"
	"  prepopulate IMAGE... [--json]  fill the host-wide shared cache with these images'\n"
	"                                 files, so every container on the host reads them locally\n"
	"  status [--json]                the cache's size, hits and misses, the last fill\n";

/* "/v1/images/<escaped name>", malloc'ed. */
static char *image_path(const char *name)
{
	char *esc = curl_easy_escape(NULL, name, 0), *p = NULL;
	if (esc && asprintf(&p, "/v1/images/%s", esc) < 0)
		p = NULL;
	curl_free(esc);
	return p;
}

void mv_cli_progress(const char *label, const json_t *p, bool tty)
{
	long long done = 0, total = 0, layer = 0, layers = 0;
	mv_cli_jint(p, "done_bytes", &done);
	mv_cli_jint(p, "total_bytes", &total);
	mv_cli_jint(p, "layer", &layer);
	mv_cli_jint(p, "layers", &layers);
	const char *phase = mv_cli_jstr(p, "phase", "");
	if (!tty)
		return;
	char a[32], b[32], bar[31];
	int pct = total > 0 ? (int)(100 * done / total) : 0;
	if (pct > 100)
		pct = 100;
	memset(bar, ' ', 30);
	memset(bar, '=', (size_t)(pct * 30 / 100));
	bar[30] = '\0';
	fprintf(stderr, "\r%-.40s %-8s [%s] %3d%% layer %lld/%lld %s/%s   ", label,
		phase[0] ? phase : "queued", bar, pct, layers ? layer + 1 : 0, layers,
		mv_fmt_size((uint64_t)(done > 0 ? done : 0), a, sizeof(a)),
		mv_fmt_size((uint64_t)(total > 0 ? total : 0), b, sizeof(b)));
	fflush(stderr);
}

static int image_pull(const struct mv_cli *cli, const char *ref, bool json)
{
	json_t *body = json_pack("{s:s}", "ref", ref);
	struct mv_cli_resp r;
	int ret = mv_cli_call(cli, "POST", "/v1/images", body, MV_CLI_TIMEOUT_SHORT, true, &r);
	json_decref(body);
	if (ret) {
		mv_cli_resp_free(&r);
		return MV_CLI_FAIL;
	}
	char *path = image_path(mv_cli_jstr(r.json, "name", ref));
	mv_cli_resp_free(&r);
	bool tty = !json && isatty(2);
	for (;;) {
		if (!path || mv_cli_call(cli, "GET", path, NULL, MV_CLI_TIMEOUT_SHORT, true, &r)) {
			mv_cli_resp_free(&r);
			free(path);
			return MV_CLI_FAIL;
		}
		const char *st = mv_cli_jstr(r.json, "state", "");
		if (strcmp(st, "pulling"))
			break;
		mv_cli_progress(ref, json_object_get(r.json, "progress"), tty);
		mv_cli_resp_free(&r);
		usleep(POLL_US);
	}
	free(path);
	if (tty)
		fputc('\n', stderr);
	bool ok = !strcmp(mv_cli_jstr(r.json, "state", ""), "ready");
	if (json) {
		ret = mv_cli_print_json(r.json);
	} else if (ok) {
		long long layers = 0, fetched = 0;
		char a[32];
		mv_cli_jint(r.json, "layers", &layers);
		mv_cli_jint(r.json, "registry_bytes", &fetched);
		printf("pulled %s: %s, %lld layers, %s fetched\n", mv_cli_jstr(r.json, "name", ref),
		       mv_cli_jstr(r.json, "manifest", "?"), layers,
		       mv_fmt_size((uint64_t)(fetched > 0 ? fetched : 0), a, sizeof(a)));
	}
	if (!ok)
		mv_cli_err("pull %s failed: %s", ref, mv_cli_jstr(r.json, "error", "?"));
	mv_cli_resp_free(&r);
	return ok && ret == 0 ? MV_CLI_OK : MV_CLI_FAIL;
}

static void image_row(const json_t *im, const char **cells, char (*buf)[MV_TABLE_CELL])
{
	long long layers = 0, ctrs = 0;
	mv_cli_jint(im, "layers", &layers);
	mv_cli_jint(im, "containers", &ctrs);
	snprintf(buf[5], sizeof(buf[5]), "%.19s", mv_cli_jstr(im, "manifest", ""));
	cells[0] = mv_cli_jstr(im, "name", "?");
	cells[1] = mv_cli_jstr(im, "state", "?");
	cells[2] = mv_table_num(buf[2], layers);
	cells[3] = mv_cli_jsize(im, "layers_bytes", buf[3], sizeof(buf[3]));
	cells[4] = mv_table_num(buf[4], ctrs);
	cells[5] = buf[5][0] ? buf[5] : NULL;
}

static int image_ls(const struct mv_cli *cli, bool json)
{
	static const char *const hdr[] = {"NAME", "STATE", "LAYERS", "SIZE", "CONTAINERS", "MANIFEST"};
	static const bool right[] = {false, false, true, true, true, false};
	struct mv_cli_resp r;
	int ret = mv_cli_get_or_print(cli, "/v1/images", json, &r);
	if (ret >= 0)
		return ret;
	ret = mv_table_print_json(json_object_get(r.json, "images"), 6, hdr, right, image_row);
	mv_cli_resp_free(&r);
	return ret;
}

static int image_rm(const struct mv_cli *cli, const char *name)
{
	char *path = image_path(name);
	struct mv_cli_resp r;
	int ret = path ? mv_cli_call(cli, "DELETE", path, NULL, MV_CLI_TIMEOUT_LONG, false, &r) : -ENOMEM;
	free(path);
	if (ret == 0)
		printf("removed %s\n", name);
	else if (r.status == 409)
		mv_cli_hint("`memvisor container ls` shows the containers using it");
	mv_cli_resp_free(&r);
	return ret ? MV_CLI_FAIL : MV_CLI_OK;
}

/* Parses [--json] and positional arguments (at least min, at most max). */
static int parse(int argc, char **argv, const char *cmd, const char *usage, int min, int max,
		 bool *json)
{
	int ret = mv_cli_json_opts(cmd, usage, argc, argv, json);
	if (ret >= 0)
		return ret;
	int n = argc - optind;
	if (n < min)
		return mv_cli_usage_err(cmd, "missing argument");
	if (n > max)
		return mv_cli_usage_err(cmd, "unexpected argument '%s'", argv[optind + max]);
	for (int i = optind; i < argc; i++)
		if (!argv[i][0])
			return mv_cli_usage_err(cmd, "arguments must not be empty");
	return -1;
}

int mv_cli_cmd_image(const struct mv_cli *cli, int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		fputs(image_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? MV_CLI_USAGE : MV_CLI_OK;
	}
	const char *sub = argv[1];
	bool json;
	int ret;
	if (!strcmp(sub, "pull")) {
		if ((ret = parse(argc - 1, argv + 1, "image pull", image_usage, 1, 1, &json)) >= 0)
			return ret;
		return image_pull(cli, argv[argc - 1], json);
	}
	if (!strcmp(sub, "ls")) {
		if ((ret = parse(argc - 1, argv + 1, "image ls", image_usage, 0, 0, &json)) >= 0)
			return ret;
		return image_ls(cli, json);
	}
	if (!strcmp(sub, "rm")) {
		if ((ret = parse(argc - 1, argv + 1, "image rm", image_usage, 1, 1, &json)) >= 0)
			return ret;
		return image_rm(cli, argv[optind + 1]);
	}
	return mv_cli_usage_err("image", "unknown subcommand '%s'", sub);
}

static void print_cache(const json_t *c)
{
	char a[32];
	long long v;
	mv_cli_kv(14, "dir", "%s", mv_cli_jstr(c, "dir", "?"));
	if (mv_cli_jint(c, "files", &v))
		mv_cli_kv(14, "files", "%lld", v);
	mv_cli_kv(14, "size", "%s", mv_cli_jsize(c, "bytes", a, sizeof(a)));
	if (mv_cli_jint(c, "hits", &v))
		mv_cli_kv(14, "hits", "%lld", v);
	if (mv_cli_jint(c, "misses", &v))
		mv_cli_kv(14, "misses", "%lld", v);
	mv_cli_kv(14, "hit bytes", "%s", mv_cli_jsize(c, "hit_bytes", a, sizeof(a)));
	const json_t *j = json_object_get(c, "prepopulate");
	if (j) {
		mv_cli_kv(14, "last fill", "%s", mv_cli_jstr(j, "state", "?"));
		const char *e = mv_cli_jstr(j, "error", "");
		if (e[0])
			mv_cli_kv(14, "error", "%s", e);
	}
}

static int cache_prepopulate(const struct mv_cli *cli, int n, char **images, bool json)
{
	json_t *arr = json_array();
	for (int i = 0; i < n; i++)
		json_array_append_new(arr, json_string(images[i]));
	json_t *body = json_pack("{s:o}", "images", arr);
	struct mv_cli_resp r;
	int ret = mv_cli_call(cli, "POST", "/v1/cache/prepopulate", body, MV_CLI_TIMEOUT_SHORT, true, &r);
	json_decref(body);
	mv_cli_resp_free(&r);
	if (ret)
		return MV_CLI_FAIL;
	bool tty = !json && isatty(2);
	for (;;) {
		if (mv_cli_call(cli, "GET", "/v1/cache", NULL, MV_CLI_TIMEOUT_SHORT, true, &r)) {
			mv_cli_resp_free(&r);
			return MV_CLI_FAIL;
		}
		const json_t *j = json_object_get(r.json, "prepopulate");
		if (strcmp(mv_cli_jstr(j, "state", ""), "running"))
			break;
		mv_cli_progress(mv_cli_jstr(j, "current", ""), j, tty);
		mv_cli_resp_free(&r);
		usleep(POLL_US);
	}
	if (tty)
		fputc('\n', stderr);
	const json_t *j = json_object_get(r.json, "prepopulate");
	bool ok = !strcmp(mv_cli_jstr(j, "state", ""), "done");
	if (json)
		ret = mv_cli_print_json(r.json);
	else if (ok) {
		long long files = 0, fetched = 0;
		char a[32], b[32];
		mv_cli_jint(j, "files", &files);
		mv_cli_jint(j, "registry_bytes", &fetched);
		printf("cached %d image(s): %lld files, %s; %s fetched\n", n, files,
		       mv_cli_jsize(j, "bytes", a, sizeof(a)),
		       mv_fmt_size((uint64_t)(fetched > 0 ? fetched : 0), b, sizeof(b)));
	}
	if (!ok)
		mv_cli_err("cache prepopulate failed: %s", mv_cli_jstr(j, "error", "?"));
	mv_cli_resp_free(&r);
	return ok && !ret ? MV_CLI_OK : MV_CLI_FAIL;
}

int mv_cli_cmd_cache(const struct mv_cli *cli, int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		fputs(cache_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? MV_CLI_USAGE : MV_CLI_OK;
	}
	bool json;
	int ret;
	if (!strcmp(argv[1], "prepopulate")) {
		if ((ret = parse(argc - 1, argv + 1, "cache prepopulate", cache_usage, 1, 64, &json)) >= 0)
			return ret;
		return cache_prepopulate(cli, argc - 1 - optind, argv + 1 + optind, json);
	}
	if (!strcmp(argv[1], "status")) {
		if ((ret = parse(argc - 1, argv + 1, "cache status", cache_usage, 0, 0, &json)) >= 0)
			return ret;
		struct mv_cli_resp r;
		if ((ret = mv_cli_get_or_print(cli, "/v1/cache", json, &r)) >= 0)
			return ret;
		print_cache(r.json);
		mv_cli_resp_free(&r);
		return MV_CLI_OK;
	}
	return mv_cli_usage_err("cache", "unknown subcommand '%s'", argv[1]);
}
