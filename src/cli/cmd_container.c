/* `memvisor container run|ls|show|stop|rm|logs`: containers from images, run
 * by the daemon under a memvisor-ctr shim with crun. `run` streams the
 * container's output back by following the logs route and exits with the
 * container's exit code. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <curl/curl.h>
#include "memvisor/util.h"
#include "cli_i.h"

#define FOLLOW_WAIT_MS 5000
#define RUN_TIMEOUT_S 900   /* create pulls the image first when needed */

static const char ctr_usage[] =
	"Usage: memvisor container COMMAND [ARGS...]\n"
	"\n"
	"Commands:\n"
	"  run [--name N] [-d|--detach] [--rm] [-e K=V]... IMAGE [CMD...]\n"
	"                        run CMD (default: the image's entrypoint and command) in a new\n"
	"                        container, stream its output and exit with its exit code\n"
	"  ls [--json]           list containers\n"
	"  show CTR [--json]     one container: state, exit, root filesystem counters\n"
	"  stop CTR              stop it (SIGTERM, SIGKILL after 10 s)\n"
	"  rm CTR [--force]      remove an exited container (--force stops it first)\n"
	"  logs CTR [-f]         its output so far (-f: follow until it exits)\n"
	"\n"
	"CTR is a container id or name. The image is pulled first when it is not here.\n";

static char *ctr_path(const char *ref, const char *suffix)
{
	char *esc = curl_easy_escape(NULL, ref, 0), *p = NULL;
	if (esc && asprintf(&p, "/v1/containers/%s%s", esc, suffix ? suffix : "") < 0)
		p = NULL;
	curl_free(esc);
	return p;
}

static int b64val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Decodes base64 in place; returns the byte count or -1. */
static long b64decode(char *s)
{
	size_t n = strlen(s), o = 0;
	if (n % 4)
		return -1;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		for (int k = 0; k < 4; k++)
			v[k] = s[i + k] == '=' ? 0 : b64val(s[i + k]);
		if (v[0] < 0 || v[1] < 0 || v[2] < 0 || v[3] < 0)
			return -1;
		uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
		s[o++] = (char)(x >> 16);
		if (s[i + 2] != '=')
			s[o++] = (char)(x >> 8);
		if (s[i + 3] != '=')
			s[o++] = (char)x;
	}
	return (long)o;
}

/* Copies the log to stdout from *offset; follow: until the container exits. */
static int stream_logs(const struct mv_cli *cli, const char *ref, bool follow)
{
	uint64_t offset = 0;
	for (;;) {
		char suffix[96];
		snprintf(suffix, sizeof(suffix), "/logs?offset=%llu&wait_ms=%d",
			 (unsigned long long)offset, follow ? FOLLOW_WAIT_MS : 0);
		char *path = ctr_path(ref, suffix);
		struct mv_cli_resp r;
		int ret = path ? mv_cli_call(cli, "GET", path, NULL, MV_CLI_TIMEOUT_SHORT, true, &r) : -ENOMEM;
		free(path);
		if (ret) {
			mv_cli_resp_free(&r);
			return -EIO;
		}
		char *data = strdup(mv_cli_jstr(r.json, "data", ""));
		long n = data ? b64decode(data) : -1;
		long long next = 0;
		mv_cli_jint(r.json, "next_offset", &next);
		bool exited = json_is_true(json_object_get(r.json, "exited"));
		mv_cli_resp_free(&r);
		if (n < 0) {
			free(data);
			mv_cli_err("malformed log data from memvisord");
			return -EPROTO;
		}
		if (n > 0 && fwrite(data, 1, (size_t)n, stdout) != (size_t)n) {
			free(data);
			return -EIO;
		}
		free(data);
		fflush(stdout);
		offset = (uint64_t)next;
		if (n == 0 && (exited || !follow))
			return 0;
	}
}

static int get_ctr(const struct mv_cli *cli, const char *ref, const char *suffix,
		   const char *method, long timeout, struct mv_cli_resp *r)
{
	char *path = ctr_path(ref, suffix);
	int ret = path ? mv_cli_call(cli, method, path, NULL, timeout, true, r) : -ENOMEM;
	free(path);
	if (ret && r->status == 404)
		mv_cli_hint("`memvisor container ls` lists the containers");
	return ret;
}

/* The container's exit as a process exit status: its code, 128+signal. */
static int exit_status(const json_t *c)
{
	const json_t *ex = json_object_get(c, "exit");
	long long code = -1, sig = 0;
	mv_cli_jint(ex, "code", &code);
	mv_cli_jint(ex, "signal", &sig);
	if (sig > 0)
		return 128 + (int)(sig & 127);
	return code >= 0 && code <= 255 ? (int)code : MV_CLI_FAIL;
}

static int ctr_run(const struct mv_cli *cli, int argc, char **argv)
{
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'}, {"name", required_argument, NULL, 'n'},
		{"detach", no_argument, NULL, 'd'}, {"rm", no_argument, NULL, 'r'},
		{"env", required_argument, NULL, 'e'}, {0},
	};
	const char *name = NULL;
	bool detach = false, rm = false;
	json_t *env = json_array(), *cmd = json_array();
	int c;
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:hde:", opts, NULL)) != -1) {
		switch (c) {
		case 'h': fputs(ctr_usage, stdout); json_decref(env); json_decref(cmd); return MV_CLI_OK;
		case 'n': name = optarg; break;
		case 'd': detach = true; break;
		case 'r': rm = true; break;
		case 'e':
			if (!strchr(optarg, '=') || optarg[0] == '=') {
				json_decref(env);
				json_decref(cmd);
				return mv_cli_usage_err("container run", "-e wants KEY=VALUE, not '%s'", optarg);
			}
			json_array_append_new(env, json_string(optarg));
			break;
		default:
			json_decref(env);
			json_decref(cmd);
			return mv_cli_getopt_err("container run", c, argv);
		}
	}
	if (optind >= argc) {
		json_decref(env);
		json_decref(cmd);
		return mv_cli_usage_err("container run", "missing IMAGE");
	}
	if (detach && rm) {
		json_decref(env);
		json_decref(cmd);
		return mv_cli_usage_err("container run", "--rm needs the command to wait: not with --detach");
	}
	const char *image = argv[optind];
	for (int i = optind + 1; i < argc; i++)
		json_array_append_new(cmd, json_string(argv[i]));
	json_t *body = json_pack("{s:s, s:o, s:o}", "image", image, "cmd", cmd, "env", env);
	if (name)
		json_object_set_new(body, "name", json_string(name));
	struct mv_cli_resp r;
	int ret = mv_cli_call(cli, "POST", "/v1/containers", body, RUN_TIMEOUT_S, true, &r);
	json_decref(body);
	if (ret) {
		mv_cli_resp_free(&r);
		return MV_CLI_FAIL;
	}
	char id[64];
	snprintf(id, sizeof(id), "%s", mv_cli_jstr(r.json, "id", ""));
	mv_cli_resp_free(&r);
	if (detach) {
		printf("%s\n", id);
		return MV_CLI_OK;
	}
	if (stream_logs(cli, id, true) < 0)
		return MV_CLI_FAIL;
	if (get_ctr(cli, id, NULL, "GET", MV_CLI_TIMEOUT_SHORT, &r)) {
		mv_cli_resp_free(&r);
		return MV_CLI_FAIL;
	}
	int st = exit_status(r.json);
	mv_cli_resp_free(&r);
	if (rm) {
		char *path = ctr_path(id, NULL);
		if (!path || mv_cli_call(cli, "DELETE", path, NULL, MV_CLI_TIMEOUT_LONG, false, &r))
			st = st ? st : MV_CLI_FAIL;
		mv_cli_resp_free(&r);
		free(path);
	}
	return st;
}

static void print_ctr(const json_t *c)
{
	long long v;
	char a[32];
	mv_cli_kv(14, "id", "%s", mv_cli_jstr(c, "id", "?"));
	mv_cli_kv(14, "name", "%s", mv_cli_jstr(c, "name", "?"));
	mv_cli_kv(14, "image", "%s", mv_cli_jstr(c, "image", "?"));
	mv_cli_kv(14, "command", "%s", mv_cli_jstr(c, "command", ""));
	mv_cli_kv(14, "state", "%s", mv_cli_jstr(c, "state", "?"));
	if (mv_cli_jint(c, "pid", &v) && v > 0)
		mv_cli_kv(14, "pid", "%lld", v);
	const json_t *ex = json_object_get(c, "exit");
	if (ex)
		mv_cli_kv(14, "exit", "%s", mv_cli_jstr(ex, "reason", "?"));
	const json_t *fs = json_object_get(c, "fs");
	mv_cli_kv(14, "fetched", "%s", mv_cli_jsize(fs, "registry_bytes", a, sizeof(a)));
	if (mv_cli_jint(fs, "cache_hits", &v))
		mv_cli_kv(14, "cache hits", "%lld", v);
	if (mv_cli_jint(fs, "cache_misses", &v))
		mv_cli_kv(14, "cache misses", "%lld", v);
	if (mv_cli_jint(fs, "copy_ups", &v))
		mv_cli_kv(14, "copy-ups", "%lld", v);
}

static void ctr_row(const json_t *c, const char **cells, char (*buf)[MV_TABLE_CELL])
{
	long long v;
	cells[0] = mv_cli_jstr(c, "id", "?");
	cells[1] = mv_cli_jstr(c, "name", "?");
	cells[2] = mv_cli_jstr(c, "image", "?");
	cells[3] = mv_cli_jstr(c, "state", "?");
	if (json_object_get(c, "exit"))
		cells[4] = mv_table_num(buf[4], exit_status(c));
	if (mv_cli_jint(c, "pid", &v) && v > 0)
		cells[5] = mv_table_num(buf[5], v);
	cells[6] = mv_cli_jstr(c, "command", "");
}

static int ctr_ls(const struct mv_cli *cli, bool json)
{
	static const char *const hdr[] = {"ID", "NAME", "IMAGE", "STATE", "EXIT", "PID", "COMMAND"};
	static const bool right[] = {false, false, false, false, true, true, false};
	struct mv_cli_resp r;
	int ret = mv_cli_get_or_print(cli, "/v1/containers", json, &r);
	if (ret >= 0)
		return ret;
	ret = mv_table_print_json(json_object_get(r.json, "containers"), 7, hdr, right, ctr_row);
	mv_cli_resp_free(&r);
	return ret;
}

int mv_cli_cmd_container(const struct mv_cli *cli, int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		fputs(ctr_usage, argc < 2 ? stderr : stdout);
		return argc < 2 ? MV_CLI_USAGE : MV_CLI_OK;
	}
	const char *sub = argv[1];
	if (!strcmp(sub, "run"))
		return ctr_run(cli, argc - 1, argv + 1);
	static const struct option opts[] = {
		{"help", no_argument, NULL, 'h'}, {"json", no_argument, NULL, 'j'},
		{"force", no_argument, NULL, 'f'}, {"follow", no_argument, NULL, 'F'}, {0},
	};
	bool json = false, force = false, follow = false;
	int c;
	char cmd[32];
	snprintf(cmd, sizeof(cmd), "container %.16s", sub);
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc - 1, argv + 1, ":hf", opts, NULL)) != -1) {
		switch (c) {
		case 'h': fputs(ctr_usage, stdout); return MV_CLI_OK;
		case 'j': json = true; break;
		case 'f':
			if (!strcmp(sub, "logs"))
				follow = true;
			else
				force = true;
			break;
		case 'F': follow = true; break;
		default: return mv_cli_getopt_err(cmd, c, argv + 1);
		}
	}
	int npos = argc - 1 - optind;
	char **pos = argv + 1 + optind;
	if (!strcmp(sub, "ls")) {
		if (npos)
			return mv_cli_usage_err(cmd, "unexpected argument '%s'", pos[0]);
		return ctr_ls(cli, json);
	}
	if (strcmp(sub, "show") && strcmp(sub, "stop") && strcmp(sub, "rm") && strcmp(sub, "logs"))
		return mv_cli_usage_err("container", "unknown subcommand '%s'", sub);
	if (npos < 1 || !pos[0][0])
		return mv_cli_usage_err(cmd, "missing CTR (a container id or name)");
	if (npos > 1)
		return mv_cli_usage_err(cmd, "unexpected argument '%s'", pos[1]);
	if ((force && strcmp(sub, "rm")) || (follow && strcmp(sub, "logs")))
		return mv_cli_usage_err(cmd, "option not valid here");
	struct mv_cli_resp r = {0};
	int ret;
	if (!strcmp(sub, "logs"))
		return stream_logs(cli, pos[0], follow) < 0 ? MV_CLI_FAIL : MV_CLI_OK;
	if (!strcmp(sub, "rm")) {
		char *path = ctr_path(pos[0], force ? "?force=1" : NULL);
		ret = path ? mv_cli_call(cli, "DELETE", path, NULL, MV_CLI_TIMEOUT_LONG, false, &r) : -ENOMEM;
		free(path);
		if (ret == 0)
			printf("removed %s\n", pos[0]);
		else if (r.status == 409)
			mv_cli_hint("`memvisor container stop %s` first, or use --force", pos[0]);
		mv_cli_resp_free(&r);
		return ret ? MV_CLI_FAIL : MV_CLI_OK;
	}
	bool stop = !strcmp(sub, "stop");
	ret = get_ctr(cli, pos[0], stop ? "/stop" : NULL, stop ? "POST" : "GET",
		      stop ? MV_CLI_TIMEOUT_LONG : MV_CLI_TIMEOUT_SHORT, &r);
	if (ret == 0) {
		if (json)
			ret = mv_cli_print_json(r.json);
		else if (stop)
			printf("%s %s\n", mv_cli_jstr(r.json, "name", pos[0]),
			       mv_cli_jstr(json_object_get(r.json, "exit"), "reason", "stopped"));
		else
			print_ctr(r.json);
	}
	mv_cli_resp_free(&r);
	return ret ? MV_CLI_FAIL : MV_CLI_OK;
}
