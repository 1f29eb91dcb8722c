/* The shim's inputs and the bundle it writes: ctr.json (from memvisord) is
 * read strictly, and the OCI runtime config for crun is built from it and
 * the image's OCI config (Entrypoint, Cmd, Env, WorkingDir, User), which is
 * validated here too: it comes from a registry. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "ctr_i.h"

#define CTR_SPEC_MAX (1u << 20)
#define ARG_MAX_LEN 65536

static int get_str(json_t *o, const char *key, bool required, bool abs_path, char *buf,
		   size_t cap, struct mv_error **err)
{
	json_t *v = json_object_get(o, key);
	buf[0] = '\0';
	if (!v || json_is_null(v)) {
		if (required)
			return mv_err_field(err, -EINVAL, key, "%s is required", key);
		return 0;
	}
	if (!json_is_string(v) || json_string_length(v) >= cap ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return mv_err_field(err, -EINVAL, key, "%s must be a string under %zu bytes", key, cap);
	if (abs_path && json_string_value(v)[0] != '/')
		return mv_err_field(err, -EINVAL, key, "%s must be an absolute path", key);
	memcpy(buf, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

/* A JSON array of strings (no NULs, each < ARG_MAX_LEN) into a NULL-terminated vector. */
static int get_strv(json_t *v, const char *field, size_t max, char ***out, size_t *n,
		    struct mv_error **err)
{
	*out = NULL;
	*n = 0;
	if (!v || json_is_null(v))
		v = NULL;
	if (v && (!json_is_array(v) || json_array_size(v) > max))
		return mv_err_field(err, -EINVAL, field, "%s must be an array of at most %zu strings",
				    field, max);
	size_t cnt = v ? json_array_size(v) : 0;
	char **vec = calloc(cnt + 1, sizeof(*vec));
	if (!vec)
		return mv_err(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < cnt; i++) {
		json_t *s = json_array_get(v, i);
		if (!json_is_string(s) || json_string_length(s) >= ARG_MAX_LEN ||
		    strlen(json_string_value(s)) != json_string_length(s)) {
			for (size_t j = 0; j < i; j++)
				free(vec[j]);
			free(vec);
			return mv_err_field(err, -EINVAL, field, "%s[%zu] must be a string without NUL",
					    field, i);
		}
		vec[i] = strdup(json_string_value(s));
		if (!vec[i])
			abort();
	}
	*out = vec;
	*n = cnt;
	return 0;
}

int mv_ctr_spec_load(const char *path, struct ctr_spec *out, struct mv_error **err)
{
	void *buf = NULL;
	size_t len = 0;
	int r = mv_read_file(path, CTR_SPEC_MAX, &buf, &len);
	if (r < 0)
		return mv_err(err, r, "read %s: %s", path, strerror(-r));
	r = mv_ctr_spec_parse(buf, len, out, err);
	free(buf);
	if (r < 0)
		mv_err_prefix(err, "%s", path);
	return r;
}

int mv_ctr_spec_parse(const char *text, size_t len, struct ctr_spec *out, struct mv_error **err)
{
	json_error_t je;
	int r;
	memset(out, 0, sizeof(*out));
	json_t *o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (!o)
		return mv_err(err, -EINVAL, "malformed JSON at line %d, column %d: %s", je.line,
			      je.column, je.text);
	if (!json_is_object(o)) {
		json_decref(o);
		return mv_err(err, -EINVAL, "not a JSON object");
	}
	static const char *const keys[] = {"id", "image", "mapping_db", "store_dir", "cache_dir",
					   "registry_url", "repo", "crun", "insecure", "network",
					   "stop_grace_ms", "cmd", "env", NULL};
	const char *k;
	json_t *v;
	json_object_foreach(o, k, v) {
		const char *const *a = keys;
		while (*a && strcmp(*a, k))
			a++;
		if (!*a) {
			r = mv_err_field(err, -EINVAL, *k ? k : "ctr.json", "unknown field \"%.64s\"", k);
			goto out;
		}
	}
	char net[16];
	if ((r = get_str(o, "id", true, false, out->id, sizeof(out->id), err)) < 0 ||
	    (r = get_str(o, "image", true, false, out->image, sizeof(out->image), err)) < 0 ||
	    (r = get_str(o, "mapping_db", true, true, out->mapping_db, sizeof(out->mapping_db), err)) < 0 ||
	    (r = get_str(o, "store_dir", true, true, out->store_dir, sizeof(out->store_dir), err)) < 0 ||
	    (r = get_str(o, "cache_dir", false, true, out->cache_dir, sizeof(out->cache_dir), err)) < 0 ||
	    (r = get_str(o, "registry_url", true, false, out->registry_url, sizeof(out->registry_url), err)) < 0 ||
	    (r = get_str(o, "repo", true, false, out->repo, sizeof(out->repo), err)) < 0 ||
	    (r = get_str(o, "crun", true, true, out->crun, sizeof(out->crun), err)) < 0 ||
	    (r = get_str(o, "network", true, false, net, sizeof(net), err)) < 0)
		goto out;
	for (const char *c = out->id; *c || c == out->id; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-')) {
			r = mv_err_field(err, -EINVAL, "id", "id must be 1..63 of [a-z0-9-]");
			goto out;
		}
	if (strcmp(net, "host") && strcmp(net, "none")) {
		r = mv_err_field(err, -EINVAL, "network", "network must be host or none");
		goto out;
	}
	out->net_none = !strcmp(net, "none");
	v = json_object_get(o, "insecure");
	if (v && !json_is_boolean(v)) {
		r = mv_err_field(err, -EINVAL, "insecure", "insecure must be a boolean");
		goto out;
	}
	out->insecure = json_is_true(v);
	v = json_object_get(o, "stop_grace_ms");
	out->stop_grace_ms = 10000;
	if (v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > 3600000) {
			r = mv_err_field(err, -EINVAL, "stop_grace_ms", "stop_grace_ms must be 0..3600000");
			goto out;
		}
		out->stop_grace_ms = (unsigned)json_integer_value(v);
	}
	if ((r = get_strv(json_object_get(o, "cmd"), "cmd", CTR_ARGS_MAX, &out->cmd, &out->ncmd, err)) < 0)
		goto out;
	if ((r = get_strv(json_object_get(o, "env"), "env", CTR_ENV_MAX, &out->env, &out->nenv, err)) < 0)
		goto out;
	r = 0;
out:
	json_decref(o);
	if (r < 0)
		mv_ctr_spec_free(out);
	return r;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

void mv_ctr_spec_free(struct ctr_spec *s)
{
	strv_free(s->cmd);
	strv_free(s->env);
	s->cmd = s->env = NULL;
	s->ncmd = s->nenv = 0;
}

/* Appends every string of arr (validated) to args. */
static int add_strings(json_t *args, json_t *arr, const char *field, struct mv_error **err)
{
	if (!arr || json_is_null(arr))
		return 0;
	if (!json_is_array(arr) || json_array_size(arr) > CTR_ARGS_MAX)
		return mv_err_field(err, -EBADMSG, field,
				    "image config %s must be an array of at most %d strings", field,
				    CTR_ARGS_MAX);
	size_t i;
	json_t *s;
	json_array_foreach(arr, i, s) {
		if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s))
			return mv_err_field(err, -EBADMSG, field, "image config %s[%zu] is not a string",
					    field, i);
		json_array_append(args, s);
	}
	return 0;
}

/* KEY=VALUE with a non-empty key without '='. */
static bool env_ok(const char *e)
{
	const char *eq = strchr(e, '=');
	return eq && eq != e;
}

/* Sets KEY=... in env (an array), replacing an earlier KEY. */
static void env_set(json_t *env, const char *kv)
{
	size_t klen = (size_t)(strchr(kv, '=') - kv), i;
	json_t *s;
	json_array_foreach(env, i, s) {
		const char *e = json_string_value(s);
		if (!strncmp(e, kv, klen) && e[klen] == '=') {
			json_array_set_new(env, i, json_string(kv));
			return;
		}
	}
	json_array_append_new(env, json_string(kv));
}

/* A uid or gid: 1..10 decimal digits below 0x7fffffff. */
static bool id_num(const char *p, size_t n, long *out)
{
	long v = 0;
	if (n == 0 || n > 10)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (p[i] - '0');
	}
	if (v >= 0x7fffffff)
		return false;
	*out = v;
	return true;
}

/* The image's /etc/passwd (NUL-terminated, *len bytes). It is opened inside
 * rootfs (openat2 RESOLVE_IN_ROOT), so an absolute symlink or ".." in the
 * image resolves within it rather than to a host file; without openat2 no
 * component may be a symlink. Only a regular file of at most PASSWD_MAX is
 * read: a FIFO or a device would hang or flood the shim. */
#define PASSWD_MAX (1u << 20)
static int read_passwd(const char *rootfs, char **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	int root = open(rootfs, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return -errno;
	struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
			       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	int fd = (int)syscall(SYS_openat2, root, "etc/passwd", &how, sizeof(how));
	if (fd < 0 && errno == ENOSYS) {
		int etc = openat(root, "etc", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		fd = etc < 0 ? -1 : openat(etc, "passwd", O_RDONLY | O_CLOEXEC | O_NOCTTY |
					   O_NONBLOCK | O_NOFOLLOW);
		int e = errno;
		if (etc >= 0)
			close(etc);
		errno = e;
	}
	int r = fd < 0 ? -errno : 0;
	close(root);
	if (r < 0)
		return r;
	void *b;
	r = mv_read_fd(fd, PASSWD_MAX, &b, len);
	close(fd);
	*buf = b;
	return r == -EFBIG ? -EBADMSG : r;
}

/* name's entry in passwd text ("name:pw:uid:gid:..."; empty fields are
 * fields), or with name NULL the first entry whose uid is *uid: 1 found, 0
 * absent, -EBADMSG its uid or gid is not a number. */
static int passwd_lookup(const char *t, size_t len, const char *name, long *uid, long *gid)
{
	size_t nl = name ? strlen(name) : 0;
	const char *end = t + len;
	while (t < end) {
		const char *eol = memchr(t, '\n', (size_t)(end - t));
		if (!eol)
			eol = end;
		const char *f[4];
		size_t fl[4];
		int nf = 0;
		for (const char *p = t; nf < 4;) {
			const char *c = memchr(p, ':', (size_t)(eol - p));
			f[nf] = p;
			fl[nf++] = (size_t)((c ? c : eol) - p);
			if (!c)
				break;
			p = c + 1;
		}
		long u;
		if (nf == 4 && !name && id_num(f[2], fl[2], &u) && u == *uid)
			return id_num(f[3], fl[3], gid) ? 1 : -EBADMSG;
		if (nf == 4 && name && fl[0] == nl && !memcmp(f[0], name, nl))
			return id_num(f[2], fl[2], uid) && id_num(f[3], fl[3], gid) ? 1 : -EBADMSG;
		t = eol + 1;
	}
	return 0;
}

/* "uid[:gid]" numbers, or a name looked up in the image's /etc/passwd. */
#define USER_MAX 255
static int parse_user(const char *user, const char *rootfs, long *uid, long *gid,
		      struct mv_error **err)
{
	*uid = *gid = 0;
	if (!user || !*user)
		return 0;
	if (strlen(user) > USER_MAX)
		return mv_err_field(err, -EBADMSG, "User", "image User is longer than %d bytes",
				    USER_MAX);
	char u[USER_MAX + 1], *colon;
	snprintf(u, sizeof(u), "%s", user);
	colon = strchr(u, ':');
	if (colon)
		*colon++ = '\0';
	if (id_num(u, strlen(u), uid)) {
		/* As runc: the group of the uid's passwd entry, else 0. */
		char *pw;
		size_t plen;
		if (!colon && read_passwd(rootfs, &pw, &plen) == 0) {
			if (passwd_lookup(pw, plen, NULL, uid, gid) != 1)
				*gid = 0;
			free(pw);
		}
	} else if (!strcmp(u, "root")) {
		*uid = *gid = 0;
	} else if (!*u) {
		return mv_err_field(err, -EBADMSG, "User", "image User '%.64s' has an empty user name",
				    user);
	} else {
		char *pw;
		size_t plen;
		int r = read_passwd(rootfs, &pw, &plen);
		if (r < 0)
			return mv_err_field(err, -EBADMSG, "User",
					    "image user '%.64s' needs the image's /etc/passwd: %s", u,
					    r == -EBADMSG ? "not a regular file of at most 1 MiB"
							  : strerror(-r));
		r = passwd_lookup(pw, plen, u, uid, gid);
		free(pw);
		if (r == 0)
			return mv_err_field(err, -EBADMSG, "User",
					    "image user '%.64s' is not in its /etc/passwd", u);
		if (r < 0)
			return mv_err_field(err, -EBADMSG, "User",
					    "image user '%.64s' has a bad uid or gid in its /etc/passwd", u);
	}
	if (colon && !id_num(colon, strlen(colon), gid))
		return mv_err_field(err, -EBADMSG, "User",
				    "image group '%.64s' must be a number below 2147483647", colon);
	return 0;
}

static json_t *mount_j(const char *dest, const char *type, const char *src, const char *opts)
{
	json_t *o = json_array();
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", opts);
	for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
		json_array_append_new(o, json_string(t));
	return json_pack("{s:s, s:s, s:s, s:o}", "destination", dest, "type", type, "source", src,
			 "options", o);
}

int mv_ctr_bundle_config(const struct ctr_spec *s, const char *image_config, size_t len,
			 const char *rootfs, const char *hostname, char **out, struct mv_error **err)
{
	json_error_t je;
	json_t *img = json_loadb(image_config, len, 0, &je);
	json_t *args = json_array(), *env = json_array(), *spec = NULL;
	int r;
	if (!img) {
		r = mv_err(err, -EBADMSG, "image config is malformed JSON at line %d, column %d: %s",
			   je.line, je.column, je.text);
		goto out;
	}
	if (!json_is_object(img)) {
		r = mv_err(err, -EBADMSG, "image config is not a JSON object");
		goto out;
	}
	json_t *c = json_object_get(img, "config");
	if (c && !json_is_null(c) && !json_is_object(c)) {
		r = mv_err_field(err, -EBADMSG, "config", "image config's config is not an object");
		goto out;
	}
	if (!json_is_object(c))
		c = NULL;
	if (s->ncmd) {
		for (size_t i = 0; i < s->ncmd; i++)
			json_array_append_new(args, json_string(s->cmd[i]));
	} else if ((r = add_strings(args, json_object_get(c, "Entrypoint"), "Entrypoint", err)) < 0 ||
		   (r = add_strings(args, json_object_get(c, "Cmd"), "Cmd", err)) < 0) {
		goto out;
	}
	if (json_array_size(args) == 0) {
		r = mv_err_field(err, -EINVAL, "cmd", "no command given and the image has no Entrypoint or Cmd");
		goto out;
	}
	/* crun would only say it cannot exec "": name where the empty program came from. */
	if (json_string_length(json_array_get(args, 0)) == 0) {
		json_t *ep = json_object_get(c, "Entrypoint");
		const char *f = s->ncmd ? "cmd" : json_array_size(ep) ? "Entrypoint" : "Cmd";
		r = mv_err_field(err, s->ncmd ? -EINVAL : -EBADMSG, f,
				 "%s%s[0], the program to run, is empty", s->ncmd ? "" : "image config ", f);
		goto out;
	}
	json_array_append_new(env, json_string("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
	json_t *ie = json_object_get(c, "Env");
	if (ie && !json_is_null(ie)) {
		size_t i;
		json_t *e;
		if (!json_is_array(ie) || json_array_size(ie) > CTR_ENV_MAX) {
			r = mv_err_field(err, -EBADMSG, "Env",
					 "image config Env must be an array of at most %d strings", CTR_ENV_MAX);
			goto out;
		}
		json_array_foreach(ie, i, e) {
			if (!json_is_string(e) || strlen(json_string_value(e)) != json_string_length(e) ||
			    !env_ok(json_string_value(e))) {
				r = mv_err_field(err, -EBADMSG, "Env", "image config Env[%zu] is not KEY=VALUE", i);
				goto out;
			}
			env_set(env, json_string_value(e));
		}
	}
	for (size_t i = 0; i < s->nenv; i++) {
		if (!env_ok(s->env[i])) {
			r = mv_err_field(err, -EINVAL, "env", "env[%zu] is not KEY=VALUE", i);
			goto out;
		}
		env_set(env, s->env[i]);
	}
	const char *cwd = "/";
	json_t *wd = json_object_get(c, "WorkingDir");
	if (json_is_string(wd) && json_string_length(wd) > 0) {
		cwd = json_string_value(wd);
		if (cwd[0] != '/' || strlen(cwd) != json_string_length(wd) || strlen(cwd) > 4096) {
			r = mv_err_field(err, -EBADMSG, "WorkingDir", "image WorkingDir must be an absolute path");
			goto out;
		}
	} else if (wd && !json_is_null(wd) && !json_is_string(wd)) {
		r = mv_err_field(err, -EBADMSG, "WorkingDir", "image WorkingDir must be a string");
		goto out;
	}
	json_t *uj = json_object_get(c, "User");
	if (uj && !json_is_null(uj) &&
	    (!json_is_string(uj) || strlen(json_string_value(uj)) != json_string_length(uj))) {
		r = mv_err_field(err, -EBADMSG, "User", "image User must be a string without NUL");
		goto out;
	}
	long uid, gid;
	if ((r = parse_user(json_string_value(uj), rootfs, &uid, &gid, err)) < 0)
		goto out;

	static const char *const caps[] = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID",
		"CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP",
		"CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
		NULL};
	json_t *capl = json_array();
	for (const char *const *p = caps; *p; p++)
		json_array_append_new(capl, json_string(*p));
	json_t *ns = json_pack("[{s:s},{s:s},{s:s},{s:s}]", "type", "pid", "type", "ipc",
			       "type", "uts", "type", "mount");
	if (s->net_none)
		json_array_append_new(ns, json_pack("{s:s}", "type", "network"));
	json_t *mounts = json_pack("[o,o,o,o,o,o]",
		mount_j("/proc", "proc", "proc", "nosuid,noexec,nodev"),
		mount_j("/dev", "tmpfs", "tmpfs", "nosuid,strictatime,mode=755,size=65536k"),
		mount_j("/dev/pts", "devpts", "devpts", "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620"),
		mount_j("/dev/shm", "tmpfs", "shm", "nosuid,noexec,nodev,mode=1777,size=65536k"),
		mount_j("/dev/mqueue", "mqueue", "mqueue", "nosuid,noexec,nodev"),
		mount_j("/sys", "sysfs", "sysfs", "nosuid,noexec,nodev,ro"));
	json_t *masked = json_pack("[s,s,s,s,s,s,s,s]", "/proc/acpi", "/proc/kcore", "/proc/keys",
				   "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
				   "/proc/sched_debug", "/sys/firmware");
	json_t *ro = json_pack("[s,s,s,s,s,s]", "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq",
			       "/proc/sys", "/proc/sysrq-trigger");
	spec = json_pack("{s:s, s:{s:b, s:{s:I, s:I}, s:O, s:O, s:s, s:{s:O, s:O, s:O, s:O},"
			 " s:[{s:s, s:I, s:I}], s:b},"
			 " s:{s:s, s:b}, s:s, s:o, s:{s:o, s:o, s:o}}",
			 "ociVersion", "1.0.2",
			 "process", "terminal", 0, "user", "uid", (json_int_t)uid, "gid", (json_int_t)gid,
			 "args", args, "env", env, "cwd", cwd,
			 "capabilities", "bounding", capl, "effective", capl, "permitted", capl,
			 "ambient", capl,
			 "rlimits", "type", "RLIMIT_NOFILE", "hard", (json_int_t)1024, "soft", (json_int_t)1024,
			 "noNewPrivileges", 1,
			 "root", "path", rootfs, "readonly", 0,
			 "hostname", hostname,
			 "mounts", mounts,
			 "linux", "namespaces", ns, "maskedPaths", masked, "readonlyPaths", ro);
	json_decref(capl);
	if (!spec) {
		r = mv_err(err, -ENOMEM, "building the runtime config failed");
		goto out;
	}
	*out = json_dumps(spec, JSON_INDENT(1));
	r = *out ? 0 : mv_err(err, -ENOMEM, "out of memory");
out:
	json_decref(spec);
	json_decref(args);
	json_decref(env);
	json_decref(img);
	return r;
}
