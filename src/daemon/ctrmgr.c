/* Containers for memvisord. Each runs under its own memvisor-ctr shim
 * (src/ctr/), started in a session of its own so it outlives the daemon; the
 * daemon keeps only the SQLite row and reads the shim's files in
 * <state>/containers/<id>/: pid (the container's init, from crun), log,
 * stats.json (fs counters, every second) and exit (`code N` / `signal N`).
 * A restarted daemon re-adopts every shim that still runs; one that died
 * while it was down is marked exited with what its exit file says. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "ctrmgr_i.h"

#define WATCH_MS 250
#define START_WAIT_MS 60000
#define STOP_GRACE_MS 10000
#define LOGS_CHUNK (1u << 20)

static void ctr_file(const struct dctr *ct, const char *what, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s", ct->dir, what);
}

/* The shim is alive: the pid runs memvisor-ctr for this very directory (a
 * reused pid or a zombie is not). */
static bool shim_alive(const struct dctr *ct)
{
	if (ct->info.shim_pid <= 0 || kill(ct->info.shim_pid, 0) < 0)
		return false;
	char path[64], buf[PATH_MAX + 64];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", ct->info.shim_pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	for (ssize_t i = 0; i < n; i++)
		if (!buf[i])
			buf[i] = ' ';
	return strstr(buf, "memvisor-ctr") && strstr(buf, ct->dir);
}

static void read_stats(struct dctr *ct)
{
	char path[PATH_MAX + 16];
	ctr_file(ct, "stats.json", path, sizeof(path));
	json_t *j = json_load_file(path, 0, NULL);
	if (!json_is_object(j)) {
		json_decref(j);
		return;
	}
	struct mv_ctr_fs_stats *f = &ct->info.fs;
	struct { const char *k; uint64_t *v; } fields[] = {
		{"registry_bytes", &f->registry_bytes}, {"registry_requests", &f->registry_requests},
		{"files_fetched", &f->files_fetched}, {"chunk_reads", &f->chunk_reads},
		{"copy_ups", &f->copy_ups}, {"cache_hits", &f->cache_hits},
		{"cache_misses", &f->cache_misses}, {"cache_hit_bytes", &f->cache_hit_bytes},
	};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		json_t *v = json_object_get(j, fields[i].k);
		if (json_is_integer(v) && json_integer_value(v) >= 0)
			*fields[i].v = (uint64_t)json_integer_value(v);
	}
	json_decref(j);
}

static int read_small(const struct dctr *ct, const char *what, char *buf, size_t len)
{
	char path[PATH_MAX + 16];
	ctr_file(ct, what, path, sizeof(path));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

/* Runs `crun ARGS...` and waits: status, or -errno when it cannot start. */
static int crun_wait(const struct ctrmgr *c, const char *const *args)
{
	const char *argv[8] = {"crun"};
	size_t n = 1;
	while (args[n - 1] && n < 7) {
		argv[n] = args[n - 1];
		n++;
	}
	argv[n] = NULL;
	pid_t pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int nul = open("/dev/null", O_RDWR);
		dup2(nul, 0);
		dup2(nul, 1);
		dup2(nul, 2);
		syscall(SYS_close_range, 3U, ~0U, 0U);
		execv(c->crun, (char *const *)argv);
		_exit(127);
	}
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	return st;
}

/* Lock held: a shim that died without recording an exit left its crun
 * container running on a root nobody serves (every read: ENOTCONN) and its
 * FUSE mount behind; end both, as the shim would have. */
static void reap_orphan(struct ctrmgr *c, const struct dctr *ct)
{
	char crun_id[64], rootfs[PATH_MAX + 16];
	snprintf(crun_id, sizeof(crun_id), "mv-%s", ct->info.id);
	const char *kill_args[] = {"kill", crun_id, "KILL", NULL};
	const char *del_args[] = {"delete", "--force", crun_id, NULL};
	int k = crun_wait(c, kill_args);
	int d = crun_wait(c, del_args);
	ctr_file(ct, "rootfs", rootfs, sizeof(rootfs));
	int u = umount2(rootfs, MNT_DETACH) == 0 ? 0 : -errno;
	mv_log(MV_LOG_INFO, "container %s: orphan cleanup: crun kill %d, delete %d, unmount %s",
	       ct->info.name, k, d, u == 0 ? "done" : strerror(-u));
}

/* Lock held: the shim is gone; record how the container ended. */
static void mark_exited(struct ctrmgr *c, struct dctr *ct)
{
	char buf[128];
	int v;
	struct mv_ctr_info *i = &ct->info;
	i->exit_code = -1;
	i->exit_signal = 0;
	if (read_small(ct, "exit", buf, sizeof(buf)) == 0 && sscanf(buf, "code %d", &v) == 1) {
		i->exit_code = v;
		if (v >= 0)
			snprintf(i->exit_reason, sizeof(i->exit_reason), "exited with code %d", v);
		else
			snprintf(i->exit_reason, sizeof(i->exit_reason), "did not start (see its log)");
	} else if (read_small(ct, "exit", buf, sizeof(buf)) == 0 && sscanf(buf, "signal %d", &v) == 1) {
		i->exit_signal = v;
		snprintf(i->exit_reason, sizeof(i->exit_reason), "killed by signal %d", v);
	} else {
		snprintf(i->exit_reason, sizeof(i->exit_reason),
			 "memvisor-ctr died without recording an exit");
		reap_orphan(c, ct);
	}
	char *nl = strchr(i->exit_reason, '\n');
	if (nl)
		*nl = '\0';
	i->state = MV_CTR_EXITED;
	i->finished_at = mv_wall_s();
	i->shim_pid = 0;
	i->pid = 0;
	read_stats(ct);
	ctr_state_put_ctr(c, ct);
	mv_log(MV_LOG_INFO, "container %s (%s): %s", i->name, i->id, i->exit_reason);
}

/* Lock held: brings a live container's state up to date. */
static void refresh(struct ctrmgr *c, struct dctr *ct)
{
	if (ct->info.state == MV_CTR_EXITED || ct->info.shim_pid <= 0)
		return;
	if (!shim_alive(ct)) {
		mark_exited(c, ct);
		return;
	}
	char buf[32];
	int pid;
	if (read_small(ct, "pid", buf, sizeof(buf)) == 0 && sscanf(buf, "%d", &pid) == 1 && pid > 0) {
		ct->info.pid = pid;
		if (ct->info.state != MV_CTR_RUNNING) {
			ct->info.state = MV_CTR_RUNNING;
			ctr_state_put_ctr(c, ct);
		}
	}
	read_stats(ct);
}

static struct dctr *find(struct ctrmgr *c, const char *ref, struct mv_error **err)
{
	for (size_t i = 0; i < c->nctrs; i++)
		if (!strcmp(c->ctrs[i]->info.id, ref))
			return c->ctrs[i];
	for (size_t i = 0; i < c->nctrs; i++)
		if (!strcmp(c->ctrs[i]->info.name, ref))
			return c->ctrs[i];
	mv_err_field(err, -ENOENT, "ctr", "no container %.64s (memvisor container ls lists them)", ref);
	return NULL;
}

static void unlink_ctr(struct ctrmgr *c, struct dctr *ct)
{
	for (size_t i = 0; i < c->nctrs; i++)
		if (c->ctrs[i] == ct) {
			memmove(&c->ctrs[i], &c->ctrs[i + 1], (c->nctrs - i - 1) * sizeof(*c->ctrs));
			c->nctrs--;
			break;
		}
}

void ctr_fs_sum(struct ctrmgr *c, struct mv_ctr_fs_stats *s)
{
	pthread_mutex_lock(&c->lock);
	*s = c->retired;
	for (size_t i = 0; i < c->nctrs; i++) {
		struct dctr *ct = c->ctrs[i];
		refresh(c, ct);
		const struct mv_ctr_fs_stats *f = &ct->info.fs;
		s->registry_bytes += f->registry_bytes;
		s->registry_requests += f->registry_requests;
		s->files_fetched += f->files_fetched;
		s->chunk_reads += f->chunk_reads;
		s->copy_ups += f->copy_ups;
		s->cache_hits += f->cache_hits;
		s->cache_misses += f->cache_misses;
		s->cache_hit_bytes += f->cache_hit_bytes;
	}
	pthread_mutex_unlock(&c->lock);
}

static void *watcher(void *arg)
{
	struct ctrmgr *c = arg;
	pthread_mutex_lock(&c->lock);
	while (!c->quit) {
		bool changed = false;
		for (size_t i = 0; i < c->nctrs; i++) {
			enum mv_ctr_state before = c->ctrs[i]->info.state;
			refresh(c, c->ctrs[i]);
			changed |= before != c->ctrs[i]->info.state;
		}
		if (changed)
			pthread_cond_broadcast(&c->cv);
		struct timespec ts;
		mv_deadline_ms(&ts, CLOCK_REALTIME, WATCH_MS);
		pthread_cond_timedwait(&c->cv, &c->lock, &ts);
	}
	pthread_mutex_unlock(&c->lock);
	return NULL;
}

/* Next to memvisord when installed, ../ctr/ in the build tree. */
static void default_ctr(char *path, size_t len)
{
	char self[PATH_MAX - 64];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0) {
		snprintf(path, len, "memvisor-ctr");
		return;
	}
	self[n] = '\0';
	char *slash = strrchr(self, '/');
	if (slash)
		*slash = '\0';
	snprintf(path, len, "%s/memvisor-ctr", self);
	if (access(path, X_OK) == 0)
		return;
	snprintf(path, len, "%s/../ctr/memvisor-ctr", self);
}

int ctr_init(struct vmmgr *m, struct mv_error **err)
{
	struct ctrmgr *c = calloc(1, sizeof(*c));
	if (!c)
		return mv_err(err, -ENOMEM, "out of memory");
	m->ctr = c;
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_REALTIME);
	pthread_cond_init(&c->cv, &ca);
	pthread_condattr_destroy(&ca);
	c->db = m->db;
	c->insecure = m->cfg.insecure_registry;
	const char *sd = m->cfg.state_dir;
	snprintf(c->store_dir, sizeof(c->store_dir), "%s/images/store", sd);
	snprintf(c->mapping_db, sizeof(c->mapping_db), "%s/images/mapping.db", sd);
	snprintf(c->ctr_root, sizeof(c->ctr_root) - 64, "%s/containers", sd);
	if (m->cfg.image_cache)
		snprintf(c->cache_dir, sizeof(c->cache_dir), "%s", m->cfg.image_cache);
	else
		snprintf(c->cache_dir, sizeof(c->cache_dir), "%s/cache", sd);
	if (m->cfg.ctr_path)
		snprintf(c->ctr_bin, sizeof(c->ctr_bin), "%s", m->cfg.ctr_path);
	else
		default_ctr(c->ctr_bin, sizeof(c->ctr_bin));
	snprintf(c->crun, sizeof(c->crun), "%s", m->cfg.crun_path ? m->cfg.crun_path : "/usr/bin/crun");
	/* Absolute: the shim runs in a directory of its own and checks them. */
	char *dirs[] = {c->store_dir, c->ctr_root, c->cache_dir};
	for (size_t i = 0; i < 3; i++) {
		char abs[PATH_MAX];
		int r = mv_mkdir_p(dirs[i], 0700);
		if (r < 0)
			return mv_err(err, r, "%s: %s", dirs[i], strerror(-r));
		if (!realpath(dirs[i], abs))
			return mv_err(err, -errno, "%s: %s", dirs[i], strerror(errno));
		if (strlen(abs) >= PATH_MAX - 64)
			return mv_err(err, -ENAMETOOLONG, "%s: path too long", dirs[i]);
		memcpy(dirs[i], abs, strlen(abs) + 1);
	}
	size_t dl = (size_t)(strrchr(c->store_dir, '/') - c->store_dir);   /* <state>/images */
	memcpy(c->mapping_db, c->store_dir, dl);
	memcpy(c->mapping_db + dl, "/mapping.db", sizeof("/mapping.db"));
	int r = ctr_state_open(c, err);
	if (r < 0 || (r = ctr_state_load(c, err)) < 0)
		return r;
	unsigned adopted = 0;
	for (size_t i = 0; i < c->nctrs; i++) {
		struct dctr *ct = c->ctrs[i];
		if (ct->info.state == MV_CTR_EXITED)
			continue;
		refresh(c, ct);
		adopted += ct->info.state != MV_CTR_EXITED;
	}
	for (size_t i = 0; i < c->nimages; i++)
		ctr_state_put_image(c, c->images[i]);   /* interrupted pulls are failed now */
	if (c->nctrs)
		mv_log(MV_LOG_INFO, "containers: %zu known, %u re-adopted running", c->nctrs, adopted);
	r = pthread_create(&c->watcher, NULL, watcher, c);
	if (r != 0)
		return mv_err(err, -r, "container watcher: %s", strerror(r));
	c->watcher_running = true;
	return 0;
}

void ctr_fini(struct vmmgr *m)
{
	struct ctrmgr *c = m->ctr;
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->quit = true;
	pthread_cond_broadcast(&c->cv);
	/* Pull workers finish their current call (they cannot be cut short). */
	while (c->workers)
		pthread_cond_wait(&c->cv, &c->lock);
	pthread_mutex_unlock(&c->lock);
	if (c->watcher_running)
		pthread_join(c->watcher, NULL);
	for (size_t i = 0; i < c->nctrs; i++)
		free(c->ctrs[i]);
	for (size_t i = 0; i < c->nimages; i++)
		free(c->images[i]);
	free(c->ctrs);
	free(c->images);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->lock);
	free(c);
	m->ctr = NULL;
}

/* ---- API backend ---- */

static void join_cmd(const struct mv_ctr_spec *s, char *buf, size_t len)
{
	buf[0] = '\0';
	for (size_t i = 0; i < s->ncmd; i++) {
		size_t n = strlen(buf);
		snprintf(buf + n, len - n, "%s%s", i ? " " : "", s->cmd[i]);
	}
}

static int write_ctr_json(struct ctrmgr *c, const struct dctr *ct, const struct mv_ctr_spec *s,
			  struct mv_error **err)
{
	struct mv_image_ref ref;
	char url[300], crun_id[64], path[PATH_MAX + 16];
	int r = mv_image_ref_parse(ct->canonical, &ref, err);
	if (r < 0)
		return r;
	mv_image_ref_url(&ref, c->insecure, url, sizeof(url));
	snprintf(crun_id, sizeof(crun_id), "mv-%s", ct->info.id);
	json_t *cmd = json_array(), *env = json_array();
	for (size_t i = 0; i < s->ncmd; i++)
		json_array_append_new(cmd, json_string(s->cmd[i]));
	for (size_t i = 0; i < s->nenv; i++)
		json_array_append_new(env, json_string(s->env[i]));
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b, s:s, s:i, s:o, s:o}",
			      "id", crun_id, "image", ct->canonical, "mapping_db", c->mapping_db,
			      "store_dir", c->store_dir, "cache_dir", c->cache_dir,
			      "registry_url", url, "repo", ref.repo, "crun", c->crun,
			      "insecure", c->insecure, "network", "host",
			      "stop_grace_ms", STOP_GRACE_MS, "cmd", cmd, "env", env);
	char *text = o ? json_dumps(o, JSON_INDENT(1)) : NULL;
	json_decref(o);
	if (!text)
		return mv_err(err, -ENOMEM, "out of memory");
	ctr_file(ct, "ctr.json", path, sizeof(path));
	r = mv_write_file_atomic(path, text, strlen(text));
	free(text);
	return r < 0 ? mv_err(err, r, "write %s: %s", path, strerror(-r)) : 0;
}

static int spawn_shim(struct ctrmgr *c, struct dctr *ct, struct mv_error **err)
{
	char logf[PATH_MAX + 16];
	ctr_file(ct, "ctr.log", logf, sizeof(logf));
	/* A close-on-exec pipe: its EOF says the child has exec'ed (until then its
	 * cmdline is ours and the watcher would take it for a dead shim). */
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return mv_err(err, -errno, "pipe: %s", strerror(errno));
	pid_t pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return mv_err(err, -errno, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		/* Own session: the shim and its container outlive the daemon. */
		setsid();
		int fd = open(logf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
		int nul = open("/dev/null", O_RDONLY);
		if (fd >= 0) {
			dup2(nul, 0);
			dup2(fd, 1);
			dup2(fd, 2);
		}
		if (pfd[1] != 3)
			dup3(pfd[1], 3, O_CLOEXEC);
		syscall(SYS_close_range, 4U, ~0U, 0U);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		execl(c->ctr_bin, "memvisor-ctr", "--dir", ct->dir, (char *)NULL);
		dprintf(2, "exec %s: %s\n", c->ctr_bin, strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	char b;
	while (read(pfd[0], &b, 1) < 0 && errno == EINTR)
		;
	close(pfd[0]);
	ct->info.shim_pid = pid;
	return 0;
}

int ctr_create(void *ctx, const struct mv_ctr_spec *spec, struct mv_ctr_info *out,
	       struct mv_error **err)
{
	struct ctrmgr *c = ((struct vmmgr *)ctx)->ctr;
	struct dctr *ct = calloc(1, sizeof(*ct));
	if (!ct)
		return mv_err(err, -ENOMEM, "out of memory");
	int r = host_random_id(ct->info.id, sizeof(ct->info.id));
	if (r == 0)
		r = images_normalise(spec->image, ct->info.image, sizeof(ct->info.image), "image", err);
	else
		r = mv_err(err, r, "random id: %s", strerror(-r));
	if (r < 0) {
		free(ct);
		return r;
	}
	if (spec->name[0])
		snprintf(ct->info.name, sizeof(ct->info.name), "%s", spec->name);
	else
		snprintf(ct->info.name, sizeof(ct->info.name), "c-%.8s", ct->info.id);
	join_cmd(spec, ct->info.command, sizeof(ct->info.command));
	ct->info.created_at = mv_wall_s();
	ct->info.state = MV_CTR_CREATED;
	snprintf(ct->dir, sizeof(ct->dir), "%.*s/%s", PATH_MAX - 64, c->ctr_root, ct->info.id);

	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->nctrs; i++)
		if (!strcmp(c->ctrs[i]->info.name, ct->info.name)) {
			pthread_mutex_unlock(&c->lock);
			free(ct);
			return mv_err_field(err, -EEXIST, "name", "a container named '%s' exists",
					    spec->name);
		}
	struct dctr **v = realloc(c->ctrs, (c->nctrs + 1) * sizeof(*v));
	if (!v)
		abort();
	c->ctrs = v;
	c->ctrs[c->nctrs++] = ct;   /* reserves the name; shim_pid 0 keeps the watcher off */
	pthread_mutex_unlock(&c->lock);

	r = images_ensure(c, ct->info.image, ct->canonical, sizeof(ct->canonical), err);
	if (r == 0 && (r = mv_mkdir_p(ct->dir, 0700)) < 0)
		r = mv_err(err, r, "%s: %s", ct->dir, strerror(-r));
	if (r == 0)
		r = write_ctr_json(c, ct, spec, err);
	pthread_mutex_lock(&c->lock);
	if (r == 0)
		r = spawn_shim(c, ct, err);
	if (r < 0) {
		unlink_ctr(c, ct);
		pthread_mutex_unlock(&c->lock);
		if (ct->dir[0])
			(void)rmdir(ct->dir);   /* only what we made; a log stays for a look */
		free(ct);
		return r;
	}
	ctr_state_put_ctr(c, ct);
	mv_log(MV_LOG_INFO, "container %s (%s) of %s: shim pid %d", ct->info.name, ct->info.id,
	       ct->info.image, ct->info.shim_pid);
	/* Answer once it runs (or ended): the shim mounts the root and starts crun. */
	struct timespec ts;
	mv_deadline_ms(&ts, CLOCK_REALTIME, START_WAIT_MS);
	refresh(c, ct);
	while (ct->info.state == MV_CTR_CREATED && !c->quit &&
	       pthread_cond_timedwait(&c->cv, &c->lock, &ts) != ETIMEDOUT)
		refresh(c, ct);
	*out = ct->info;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

int ctr_list(void *ctx, struct mv_ctr_info **out, size_t *n, struct mv_error **err)
{
	struct ctrmgr *c = ((struct vmmgr *)ctx)->ctr;
	(void)err;
	pthread_mutex_lock(&c->lock);
	*out = calloc(c->nctrs + 1, sizeof(**out));
	if (!*out)
		abort();
	for (size_t i = 0; i < c->nctrs; i++) {
		refresh(c, c->ctrs[i]);
		(*out)[i] = c->ctrs[i]->info;
	}
	*n = c->nctrs;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

int ctr_get(void *ctx, const char *ref, struct mv_ctr_info *out, struct mv_error **err)
{
	struct ctrmgr *c = ((struct vmmgr *)ctx)->ctr;
	pthread_mutex_lock(&c->lock);
	struct dctr *ct = find(c, ref, err);
	if (ct) {
		refresh(c, ct);
		*out = ct->info;
	}
	pthread_mutex_unlock(&c->lock);
	return ct ? 0 : -ENOENT;
}

/* Lock held: SIGTERM to the shim (it asks crun to stop the container, KILL
 * after its grace period) and waits for the end. */
static int stop_locked(struct ctrmgr *c, struct dctr *ct, struct mv_error **err)
{
	refresh(c, ct);
	if (ct->info.state == MV_CTR_EXITED)
		return 0;
	if (ct->info.shim_pid <= 0)
		return mv_err_field(err, -EBUSY, "ctr", "container %s is still starting", ct->info.name);
	ct->stop_requested = true;
	kill(ct->info.shim_pid, SIGTERM);
	struct timespec ts;
	mv_deadline_ms(&ts, CLOCK_REALTIME, STOP_GRACE_MS + 20000);
	while (ct->info.state != MV_CTR_EXITED &&
	       pthread_cond_timedwait(&c->cv, &c->lock, &ts) != ETIMEDOUT)
		refresh(c, ct);
	refresh(c, ct);
	if (ct->info.state != MV_CTR_EXITED)
		return mv_err(err, -ETIMEDOUT, "container %s did not stop", ct->info.name);
	return 0;
}

int ctr_stop(void *ctx, const char *ref, struct mv_ctr_info *out, struct mv_error **err)
{
	struct ctrmgr *c = ((struct vmmgr *)ctx)->ctr;
	pthread_mutex_lock(&c->lock);
	struct dctr *ct = find(c, ref, err);
	int r = ct ? stop_locked(c, ct, err) : -ENOENT;
	if (ct)
		*out = ct->info;
	pthread_mutex_unlock(&c->lock);
	return r;
}

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *f)
{
	(void)st;
	(void)f;
	if (type == FTW_DP)
		(void)rmdir(path);
	else
		(void)unlink(path);
	return 0;
}

/* The container's rows in the mapping database (its own changes over the image's). */
static void drop_mapping(struct ctrmgr *c, const struct dctr *ct)
{
	struct mv_mapping *map = NULL;
	int64_t image_id, ctr_id;
	char crun_id[64];
	snprintf(crun_id, sizeof(crun_id), "mv-%s", ct->info.id);
	if (!ct->canonical[0] || mv_mapping_open(c->mapping_db, &map, NULL) < 0)
		return;
	if (mv_mapping_find_image(map, ct->canonical, &image_id) == 0 &&
	    mv_mapping_add_container(map, image_id, crun_id, &ctr_id, NULL) == 0 &&
	    mv_mapping_drop_container(map, ctr_id, NULL) < 0)
		mv_log(MV_LOG_WARN, "container %s: mapping rows not dropped", ct->info.id);
	mv_mapping_close(map);
}

int ctr_delete(void *ctx, const char *ref, bool force, struct mv_error **err)
{
	struct ctrmgr *c = ((struct vmmgr *)ctx)->ctr;
	pthread_mutex_lock(&c->lock);
	struct dctr *ct = find(c, ref, err);
	if (!ct) {
		pthread_mutex_unlock(&c->lock);
		return -ENOENT;
	}
	refresh(c, ct);
	int r = 0;
	if (ct->info.state != MV_CTR_EXITED) {
		if (!force)
			r = mv_err_field(err, -EBUSY, "ctr", "container %s is %s: stop it or use force",
					 ct->info.name, mv_ctr_state_name(ct->info.state));
		else
			r = stop_locked(c, ct, err);
	}
	if (r < 0) {
		pthread_mutex_unlock(&c->lock);
		return r;
	}
	unlink_ctr(c, ct);
	ctr_state_delete_ctr(c, ct->info.id);
	const struct mv_ctr_fs_stats *f = &ct->info.fs;
	c->retired.registry_bytes += f->registry_bytes;
	c->retired.registry_requests += f->registry_requests;
	c->retired.files_fetched += f->files_fetched;
	c->retired.chunk_reads += f->chunk_reads;
	c->retired.copy_ups += f->copy_ups;
	c->retired.cache_hits += f->cache_hits;
	c->retired.cache_misses += f->cache_misses;
	c->retired.cache_hit_bytes += f->cache_hit_bytes;
	pthread_mutex_unlock(&c->lock);
	char rootfs[PATH_MAX + 16];
	ctr_file(ct, "rootfs", rootfs, sizeof(rootfs));
	(void)umount2(rootfs, MNT_DETACH);   /* the shim unmounted it unless it was killed */
	drop_mapping(c, ct);
	(void)nftw(ct->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
	mv_log(MV_LOG_INFO, "container %s (%s) removed", ct->info.name, ct->info.id);
	free(ct);
	return 0;
}

int ctr_logs(void *ctx, const char *ref, uint64_t offset, uint32_t wait_ms,
	     struct mv_ctr_logs *out, struct mv_error **err)
{
	struct ctrmgr *c = ((struct vmmgr *)ctx)->ctr;
	char path[PATH_MAX + 16];
	uint64_t deadline = mv_now_ns() + (uint64_t)wait_ms * 1000000ULL;
	struct stat st;
	memset(out, 0, sizeof(*out));
	for (;;) {
		pthread_mutex_lock(&c->lock);
		struct dctr *ct = find(c, ref, err);
		if (!ct) {
			pthread_mutex_unlock(&c->lock);
			return -ENOENT;
		}
		refresh(c, ct);
		out->exited = ct->info.state == MV_CTR_EXITED;
		ctr_file(ct, "log", path, sizeof(path));
		pthread_mutex_unlock(&c->lock);
		/* After the exit is seen the log is complete: the shim writes exit last. */
		out->size = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
		if (out->size > offset || out->exited || mv_now_ns() >= deadline || c->quit)
			break;
		usleep(50000);
	}
	out->offset = offset;
	out->next_offset = offset;
	if (out->size <= offset)
		return 0;
	size_t want = out->size - offset > LOGS_CHUNK ? LOGS_CHUNK : (size_t)(out->size - offset);
	out->data = malloc(want ? want : 1);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 && out->data ? pread(fd, out->data, want, (off_t)offset) : -1;
	if (fd >= 0)
		close(fd);
	if (n < 0) {
		free(out->data);
		out->data = NULL;
		return mv_err(err, -EIO, "reading the log: %s", strerror(errno));
	}
	out->len = (size_t)n;
	out->next_offset = offset + (uint64_t)n;
	return 0;
}

void ctr_metrics(struct vmmgr *m, FILE *f)
{
	struct ctrmgr *c = m->ctr;
	struct mv_ctr_fs_stats s;
	ctr_fs_sum(c, &s);
	unsigned n[MV_CTR__COUNT] = {0};
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->nctrs; i++)
		n[c->ctrs[i]->info.state]++;
	uint64_t pulls = c->pull_registry_bytes;
	pthread_mutex_unlock(&c->lock);
	fprintf(f, "# HELP memvisor_containers Containers by state.\n# TYPE memvisor_containers gauge\n");
	for (int i = 0; i < MV_CTR__COUNT; i++)
		fprintf(f, "memvisor_containers{state=\"%s\"} %u\n", mv_ctr_state_name(i), n[i]);
	fprintf(f, "# HELP memvisor_containers_running Containers running now.\n"
		   "# TYPE memvisor_containers_running gauge\nmemvisor_containers_running %u\n",
		n[MV_CTR_RUNNING]);
	struct { const char *name, *help; uint64_t v; } cs[] = {
		{"memvisor_image_cache_hits_total", "Container file reads served from the shared cache.", s.cache_hits},
		{"memvisor_image_cache_misses_total", "Container file reads the shared cache did not hold.", s.cache_misses},
		{"memvisor_image_cache_hit_bytes_total", "Bytes served from the shared cache.", s.cache_hit_bytes},
		{"memvisor_image_registry_bytes_total", "Bytes fetched from registries: pulls, prepopulates, lazy reads.", s.registry_bytes + pulls},
		{"memvisor_image_files_fetched_total", "Container files fetched on first read.", s.files_fetched},
		{"memvisor_image_copy_ups_total", "Files copied up into containers' writable layers.", s.copy_ups},
	};
	for (size_t i = 0; i < sizeof(cs) / sizeof(cs[0]); i++)
		fprintf(f, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", cs[i].name, cs[i].help,
			cs[i].name, cs[i].name, (unsigned long long)cs[i].v);
}
