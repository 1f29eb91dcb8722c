/* libFuzzer target over the container shim's input parsers (src/ctr/spec.c):
 *   first byte 0: the rest is ctr.json (mv_ctr_spec_parse);
 *   otherwise:    the rest is an image's OCI config JSON, optionally followed
 *                 by "\n\x00PASSWD\n" and the image's /etc/passwd, turned
 *                 into a runtime config (mv_ctr_bundle_config) for a
 *                 ctr.json without cmd/env (byte & 1), or with both.
 * Invariants: a rejection carries its error, naming the field whenever the
 * input was a JSON object; an accepted runtime config has a non-empty
 * program, KEY=VALUE env with unique keys, an absolute cwd and uid/gid in
 * range. Seeds: tests/fuzz/corpus/ctr_image_config/. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../../src/ctr/ctr_i.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant broken: %s\n", what);
		abort();
	}
}

/* flags: as the parser loads it (ctr.json rejects duplicate keys). */
static bool is_object(const char *t, size_t n, size_t flags)
{
	json_t *o = json_loadb(t, n, flags, NULL);
	bool ok = json_is_object(o);
	json_decref(o);
	return ok;
}

static void check_rejection(int r, struct mv_error *err, const char *t, size_t n, size_t flags)
{
	check(err != NULL && err->code == r && err->msg[0], "a rejection carries its error");
	if (is_object(t, n, flags))
		check(err->field[0] != '\0', "a rejection of an object names a field");
	mv_error_free(err);
}

static void fuzz_spec(const char *t, size_t n)
{
	struct ctr_spec s;
	struct mv_error *err = NULL;
	int r = mv_ctr_spec_parse(t, n, &s, &err);
	if (r < 0) {
		check(r == -EINVAL, "ctr.json rejections are EINVAL");
		check(s.cmd == NULL && s.env == NULL, "nothing kept on rejection");
		check_rejection(r, err, t, n, JSON_REJECT_DUPLICATES);
		return;
	}
	check(err == NULL && s.id[0] && s.crun[0] == '/' && s.mapping_db[0] == '/' &&
	      s.store_dir[0] == '/', "ctr.json fields");
	check(strspn(s.id, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(s.id), "id charset");
	check(s.cmd && !s.cmd[s.ncmd] && s.env && !s.env[s.nenv], "vectors NULL-terminated");
	check(s.ncmd <= CTR_ARGS_MAX && s.nenv <= CTR_ENV_MAX && s.stop_grace_ms <= 3600000,
	      "limits");
	mv_ctr_spec_free(&s);
}

static char rootfs[64];

/* The image's /etc/passwd, or none. */
static void put_passwd(const char *p, size_t n, bool have)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/etc/passwd", rootfs);
	unlink(path);
	if (!have)
		return;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	check(fd >= 0, "create passwd");
	check(write(fd, p, n) == (ssize_t)n, "write passwd");
	close(fd);
}

static void check_runtime(const char *out)
{
	json_t *o = json_loads(out, 0, NULL);
	check(json_is_object(o), "runtime config is JSON");
	json_t *p = json_object_get(o, "process");
	json_t *args = json_object_get(p, "args"), *env = json_object_get(p, "env");
	check(json_array_size(args) >= 1, "args non-empty");
	check(json_string_length(json_array_get(args, 0)) > 0, "a program");
	size_t i, j;
	json_t *v, *w;
	json_array_foreach(env, i, v) {
		const char *e = json_string_value(v), *eq = e ? strchr(e, '=') : NULL;
		check(eq && eq != e, "env KEY=VALUE");
		json_array_foreach(env, j, w) {
			if (j < i && !strncmp(json_string_value(w), e, (size_t)(eq - e) + 1))
				check(0, "env keys unique");
		}
	}
	const char *cwd = json_string_value(json_object_get(p, "cwd"));
	check(cwd && cwd[0] == '/', "cwd absolute");
	json_t *u = json_object_get(p, "user");
	json_int_t uid = json_integer_value(json_object_get(u, "uid"));
	json_int_t gid = json_integer_value(json_object_get(u, "gid"));
	check(uid >= 0 && uid < 0x7fffffff && gid >= 0 && gid < 0x7fffffff, "uid/gid in range");
	json_decref(o);
}

static void fuzz_bundle(uint8_t sel, const char *t, size_t n)
{
	static const char sep[] = "\n\0PASSWD\n";
	const char *pw = NULL;
	for (size_t i = 0; i + sizeof(sep) - 1 <= n; i++)
		if (!memcmp(t + i, sep, sizeof(sep) - 1)) {
			pw = t + i + sizeof(sep) - 1;
			put_passwd(pw, n - i - (sizeof(sep) - 1), true);
			n = i;
			break;
		}
	if (!pw)
		put_passwd(NULL, 0, false);
	static char *cmd[] = {"/bin/echo", "hi", NULL};
	static char *env[] = {"PATH=/opt/bin", "A=1", "A=2", NULL};
	struct ctr_spec s = {.id = "mv-fuzz"};
	if (!(sel & 1)) {
		s.cmd = cmd, s.ncmd = 2;
		s.env = env, s.nenv = 3;
	}
	s.net_none = sel & 2;
	char *out = NULL;
	struct mv_error *err = NULL;
	int r = mv_ctr_bundle_config(&s, t, n, rootfs, "mv-fuzz", &out, &err);
	if (r < 0) {
		check(out == NULL, "no output on rejection");
		check(r == -EINVAL || r == -EBADMSG, "rejections are EINVAL or EBADMSG");
		check_rejection(r, err, t, n, 0);
		return;
	}
	check(err == NULL && out != NULL, "output on success");
	check_runtime(out);
	free(out);
}

static void cleanup(void)
{
	char path[128];
	put_passwd(NULL, 0, false);
	snprintf(path, sizeof(path), "%s/etc", rootfs);
	rmdir(path);
	rmdir(rootfs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!rootfs[0]) {
		char path[128];
		snprintf(rootfs, sizeof(rootfs), "/tmp/fuzz-ctr-rootfs.XXXXXX");
		check(mkdtemp(rootfs) != NULL, "mkdtemp");
		snprintf(path, sizeof(path), "%s/etc", rootfs);
		check(mkdir(path, 0755) == 0, "mkdir etc");
		atexit(cleanup);
	}
	if (size < 1)
		return 0;
	if (data[0] == 0)
		fuzz_spec((const char *)data + 1, size - 1);
	else
		fuzz_bundle(data[0], (const char *)data + 1, size - 1);
	return 0;
}
