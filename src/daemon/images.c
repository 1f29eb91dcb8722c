/* Images and the host-wide shared cache for memvisord: pulls run on worker
 * threads (mv_image_pull, never under any lock for long; progress lands in
 * the image's record through the callback), listing and removal, and the
 * prepopulate job that fills the shared cache (mv_image_cache_prepopulate)
 * one image after another. */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/util.h"
#include "ctrmgr_i.h"

struct pull_job {
	struct ctrmgr *c;
	char name[MV_IMAGE_NAME_MAX + 1];
	char **refs;                 /* prepopulate: the images, in order */
	size_t nrefs;
};

void images_paths(struct ctrmgr *c, struct mv_image_paths *p)
{
	*p = (struct mv_image_paths){.store_dir = c->store_dir, .mapping_db = c->mapping_db,
				     .cache_dir = c->cache_dir, .insecure = c->insecure};
}

struct dimage *images_find(struct ctrmgr *c, const char *name)
{
	for (size_t i = 0; i < c->nimages; i++)
		if (!strcmp(c->images[i]->st.name, name))
			return c->images[i];
	return NULL;
}

int images_normalise(const char *ref, char *out, size_t len, const char *field,
		     struct mv_error **err)
{
	struct mv_image_ref r;
	struct mv_error *e = NULL;
	int rc = mv_image_ref_parse(ref, &r, &e);
	if (rc < 0) {
		rc = mv_err_field(err, -EINVAL, field, "%s: %s", field, mv_error_msg(e, rc));
		mv_error_free(e);
		return rc;
	}
	bool digest = !strncmp(r.ref, "sha256:", 7);
	if (snprintf(out, len, "%s/%s%s%s", r.registry, r.repo, digest ? "@" : ":", r.ref) >= (int)len)
		return mv_err_field(err, -EINVAL, field, "%s is too long", field);
	return 0;
}

static struct dimage *image_add(struct ctrmgr *c, const char *name)
{
	struct dimage *im = calloc(1, sizeof(*im));
	struct dimage **v = realloc(c->images, (c->nimages + 1) * sizeof(*v));
	if (!im || !v)
		abort();
	c->images = v;
	snprintf(im->st.name, sizeof(im->st.name), "%s", name);
	c->images[c->nimages++] = im;
	return im;
}

static void progress(void *ctx, const struct mv_image_progress *p)
{
	struct pull_job *j = ctx;
	struct ctrmgr *c = j->c;
	pthread_mutex_lock(&c->lock);
	struct dimage *im = images_find(c, j->name);
	if (im) {
		snprintf(im->st.phase, sizeof(im->st.phase), "%s", p->phase ? p->phase : "");
		im->st.layer = p->layer;
		im->st.layers = p->layers;
		im->st.done_bytes = p->done_bytes;
		im->st.total_bytes = p->total_bytes;
	}
	if (j->refs) {
		snprintf(c->job.phase, sizeof(c->job.phase), "%s", p->phase ? p->phase : "");
		c->job.layer = p->layer;
		c->job.layers = p->layers;
		c->job.done_bytes = p->done_bytes;
		c->job.total_bytes = p->total_bytes;
	}
	pthread_mutex_unlock(&c->lock);
}

/* Pulls j->name (its record is marked pulling) and records the outcome. */
static int do_pull(struct pull_job *j, char *canonical, size_t len, struct mv_error **err)
{
	struct ctrmgr *c = j->c;
	struct mv_image_paths p;
	struct mv_image_info info;
	struct mv_error *e = NULL;
	images_paths(c, &p);
	memset(&info, 0, sizeof(info));
	int r = mv_image_pull(&p, j->name, progress, j, &info, &e);
	pthread_mutex_lock(&c->lock);
	struct dimage *im = images_find(c, j->name);
	if (im) {
		im->pulling = false;
		if (r == 0) {
			char ds[MV_DIGEST_STRLEN];
			snprintf(im->st.state, sizeof(im->st.state), "ready");
			snprintf(im->canonical, sizeof(im->canonical), "%s", info.name);
			snprintf(im->st.manifest, sizeof(im->st.manifest), "%s",
				 mv_digest_format(&info.manifest, ds));
			im->st.layers = info.layers;
			im->st.layers_bytes = info.layers_bytes;
			im->st.registry_bytes = info.registry_bytes;
			im->st.pulled_at = mv_wall_s();
			im->st.error[0] = '\0';
			snprintf(im->st.phase, sizeof(im->st.phase), "done");
		} else {
			snprintf(im->st.state, sizeof(im->st.state), "failed");
			snprintf(im->st.error, sizeof(im->st.error), "%s", mv_error_msg(e, r));
		}
		ctr_state_put_image(c, im);
		if (canonical)
			snprintf(canonical, len, "%s", im->canonical);
	}
	if (r == 0)
		c->pull_registry_bytes += info.registry_bytes;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lock);
	if (r < 0) {
		mv_log(MV_LOG_WARN, "pull %s: %s", j->name, mv_error_msg(e, r));
		if (err) {
			*err = e;
			e = NULL;
		}
	}
	mv_error_free(e);
	return r;
}

static void job_done(struct ctrmgr *c, struct pull_job *j)
{
	pthread_mutex_lock(&c->lock);
	c->workers--;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lock);
	for (size_t i = 0; i < j->nrefs; i++)
		free(j->refs[i]);
	free(j->refs);
	free(j);
}

static void *pull_worker(void *arg)
{
	struct pull_job *j = arg;
	(void)do_pull(j, NULL, 0, NULL);
	job_done(j->c, j);
	return NULL;
}

static int start_worker(struct ctrmgr *c, struct pull_job *j, void *(*fn)(void *),
			struct mv_error **err)
{
	pthread_t t;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	c->workers++;   /* lock held by the caller */
	int r = pthread_create(&t, &a, fn, j);
	pthread_attr_destroy(&a);
	if (r != 0) {
		c->workers--;
		return mv_err(err, -r, "cannot start a worker thread: %s", strerror(r));
	}
	return 0;
}

int image_pull(void *ctx, const char *ref, struct mv_image_status *out, struct mv_error **err)
{
	struct vmmgr *m = ctx;
	struct ctrmgr *c = m->ctr;
	struct pull_job *j = calloc(1, sizeof(*j));
	if (!j)
		return mv_err(err, -ENOMEM, "out of memory");
	j->c = c;
	int r = images_normalise(ref, j->name, sizeof(j->name), "ref", err);
	if (r < 0) {
		free(j);
		return r;
	}
	pthread_mutex_lock(&c->lock);
	struct dimage *im = images_find(c, j->name);
	if (im && im->pulling) {
		*out = im->st;   /* one pull at a time per image: report the running one */
		pthread_mutex_unlock(&c->lock);
		free(j);
		return 0;
	}
	if (!im)
		im = image_add(c, j->name);
	im->pulling = true;
	snprintf(im->st.state, sizeof(im->st.state), "pulling");
	im->st.phase[0] = im->st.error[0] = '\0';
	im->st.done_bytes = im->st.total_bytes = 0;
	ctr_state_put_image(c, im);
	r = start_worker(c, j, pull_worker, err);
	if (r < 0) {
		im->pulling = false;
		snprintf(im->st.state, sizeof(im->st.state), "failed");
		free(j);
	}
	*out = im->st;
	pthread_mutex_unlock(&c->lock);
	return r;
}

int images_ensure(struct ctrmgr *c, const char *name, char *canonical, size_t len,
		  struct mv_error **err)
{
	pthread_mutex_lock(&c->lock);
	struct dimage *im;
	while ((im = images_find(c, name)) && im->pulling && !c->quit)
		pthread_cond_wait(&c->cv, &c->lock);
	if (im && !strcmp(im->st.state, "ready")) {
		snprintf(canonical, len, "%s", im->canonical);
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	if (!im)
		im = image_add(c, name);
	im->pulling = true;
	snprintf(im->st.state, sizeof(im->st.state), "pulling");
	im->st.error[0] = '\0';
	pthread_mutex_unlock(&c->lock);
	struct pull_job j = {.c = c};
	snprintf(j.name, sizeof(j.name), "%s", name);
	struct mv_error *e = NULL;
	int r = do_pull(&j, canonical, len, &e);
	if (r < 0)
		mv_err_field(err, r, "image", "pulling %.300s: %.300s", name, mv_error_msg(e, r));
	mv_error_free(e);
	return r;
}

int image_list(void *ctx, struct mv_image_status **out, size_t *n, struct mv_error **err)
{
	struct ctrmgr *c = ((struct vmmgr *)ctx)->ctr;
	pthread_mutex_lock(&c->lock);
	*out = calloc(c->nimages + 1, sizeof(**out));
	if (!*out)
		abort();
	for (size_t i = 0; i < c->nimages; i++) {
		(*out)[i] = c->images[i]->st;
		(*out)[i].containers = 0;
		for (size_t k = 0; k < c->nctrs; k++)
			(*out)[i].containers += !strcmp(c->ctrs[k]->info.image, c->images[i]->st.name);
	}
	*n = c->nimages;
	pthread_mutex_unlock(&c->lock);
	(void)err;
	return 0;
}

/* Lock held: the image by name as given or normalised; -ENOENT naming "name". */
static struct dimage *lookup(struct ctrmgr *c, const char *name, struct mv_error **err)
{
	char norm[MV_IMAGE_NAME_MAX + 1];
	struct dimage *im = images_find(c, name);
	if (!im && images_normalise(name, norm, sizeof(norm), "name", NULL) == 0)
		im = images_find(c, norm);
	if (!im)
		mv_err_field(err, -ENOENT, "name", "no image %.300s (memvisor image ls lists them)", name);
	return im;
}

int image_get(void *ctx, const char *name, struct mv_image_status *out, struct mv_error **err)
{
	struct ctrmgr *c = ((struct vmmgr *)ctx)->ctr;
	pthread_mutex_lock(&c->lock);
	struct dimage *im = lookup(c, name, err);
	if (im) {
		*out = im->st;
		for (size_t k = 0; k < c->nctrs; k++)
			out->containers += !strcmp(c->ctrs[k]->info.image, im->st.name);
	}
	pthread_mutex_unlock(&c->lock);
	return im ? 0 : -ENOENT;
}

int image_remove(void *ctx, const char *name, struct mv_error **err)
{
	struct ctrmgr *c = ((struct vmmgr *)ctx)->ctr;
	pthread_mutex_lock(&c->lock);
	struct dimage *im = lookup(c, name, err);
	if (!im) {
		pthread_mutex_unlock(&c->lock);
		return -ENOENT;
	}
	unsigned users = 0;
	for (size_t k = 0; k < c->nctrs; k++)
		users += !strcmp(c->ctrs[k]->info.image, im->st.name);
	if (im->pulling || users) {
		int r = mv_err_field(err, -EBUSY, "name", "image %.300s is %s", im->st.name,
				     im->pulling ? "being pulled" : "used by containers (remove them first)");
		pthread_mutex_unlock(&c->lock);
		return r;
	}
	bool pulled = !strcmp(im->st.state, "ready");
	char nm[MV_IMAGE_NAME_MAX + 1];
	snprintf(nm, sizeof(nm), "%s", im->st.name);
	im->pulling = true;   /* busy: creations wait */
	pthread_mutex_unlock(&c->lock);
	int r = 0;
	if (pulled) {
		struct mv_image_paths p;
		images_paths(c, &p);
		r = mv_image_remove(&p, nm, err);
		if (r == -ENOENT)
			r = 0;   /* gone from the store already: drop our record too */
	}
	pthread_mutex_lock(&c->lock);
	im = images_find(c, nm);
	if (im && r == 0) {
		for (size_t i = 0; i < c->nimages; i++)
			if (c->images[i] == im) {
				c->images[i] = c->images[--c->nimages];
				break;
			}
		free(im);
		ctr_state_delete_image(c, nm);
	} else if (im) {
		im->pulling = false;
	}
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->lock);
	return r;
}

/* ---- the shared cache ---- */

static void *prepop_worker(void *arg)
{
	struct pull_job *j = arg;
	struct ctrmgr *c = j->c;
	struct mv_image_paths p;
	images_paths(c, &p);
	int r = 0;
	struct mv_error *e = NULL;
	for (size_t i = 0; i < j->nrefs && r == 0; i++) {
		snprintf(j->name, sizeof(j->name), "%s", j->refs[i]);
		pthread_mutex_lock(&c->lock);
		c->job.image_index = (uint32_t)i;
		snprintf(c->job.current, sizeof(c->job.current), "%s", j->name);
		pthread_mutex_unlock(&c->lock);
		struct mv_image_cache_stats st = {0};
		r = mv_image_cache_prepopulate(&p, j->name, progress, j, &st, &e);
		pthread_mutex_lock(&c->lock);
		c->job.job_files += st.files;
		c->job.job_bytes += st.bytes;
		c->job.job_registry_bytes += st.registry_bytes;
		c->pull_registry_bytes += st.registry_bytes;
		pthread_mutex_unlock(&c->lock);
		if (r == 0) {
			/* The cache pulled the image too: register it (a no-op pull). */
			pthread_mutex_lock(&c->lock);
			struct dimage *im = images_find(c, j->name);
			bool busy = im && im->pulling;
			if (!busy) {
				if (!im)
					im = image_add(c, j->name);
				im->pulling = true;
			}
			pthread_mutex_unlock(&c->lock);
			if (!busy && (r = do_pull(j, NULL, 0, &e)) < 0)
				break;
		}
	}
	pthread_mutex_lock(&c->lock);
	snprintf(c->job.state, sizeof(c->job.state), "%s", r == 0 ? "done" : "failed");
	if (r < 0)
		snprintf(c->job.error, sizeof(c->job.error), "%.100s: %.150s", j->name, mv_error_msg(e, r));
	else
		snprintf(c->job.phase, sizeof(c->job.phase), "done");
	pthread_mutex_unlock(&c->lock);
	mv_error_free(e);
	job_done(c, j);
	return NULL;
}

static uint64_t walk_files, walk_bytes;
static pthread_mutex_t walk_lock = PTHREAD_MUTEX_INITIALIZER;

static int walk_one(const char *path, const struct stat *st, int type, struct FTW *f)
{
	(void)path;
	(void)f;
	if (type == FTW_F && S_ISREG(st->st_mode)) {
		walk_files++;
		walk_bytes += (uint64_t)st->st_size;
	}
	return 0;
}

int cache_prepopulate(void *ctx, char *const *refs, size_t n, struct mv_cache_info *out,
		      struct mv_error **err)
{
	struct ctrmgr *c = ((struct vmmgr *)ctx)->ctr;
	struct pull_job *j = calloc(1, sizeof(*j));
	if (!j || !(j->refs = calloc(n + 1, sizeof(char *))))
		abort();
	j->c = c;
	int r = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		char f[32], norm[MV_IMAGE_NAME_MAX + 1];
		snprintf(f, sizeof(f), "images[%zu]", i);
		r = images_normalise(refs[i], norm, sizeof(norm), f, err);
		if (r == 0 && !(j->refs[j->nrefs++] = strdup(norm)))
			abort();
	}
	pthread_mutex_lock(&c->lock);
	if (r == 0 && c->job.job && !strcmp(c->job.state, "running"))
		r = mv_err_field(err, -EBUSY, "images", "a prepopulate job is running (memvisor cache status)");
	if (r == 0) {
		memset(&c->job, 0, sizeof(c->job));
		c->job.job = true;
		c->job.images = (uint32_t)n;
		snprintf(c->job.state, sizeof(c->job.state), "running");
		snprintf(c->job.current, sizeof(c->job.current), "%s", j->refs[0]);
		r = start_worker(c, j, prepop_worker, err);
		if (r < 0)
			snprintf(c->job.state, sizeof(c->job.state), "failed");
		*out = c->job;
		snprintf(out->dir, sizeof(out->dir), "%.*s", (int)sizeof(out->dir) - 1, c->cache_dir);
	}
	pthread_mutex_unlock(&c->lock);
	if (r < 0) {
		for (size_t i = 0; i < j->nrefs; i++)
			free(j->refs[i]);
		free(j->refs);
		free(j);
	}
	return r;
}

int cache_get(void *ctx, struct mv_cache_info *out, struct mv_error **err)
{
	struct ctrmgr *c = ((struct vmmgr *)ctx)->ctr;
	(void)err;
	pthread_mutex_lock(&walk_lock);
	walk_files = walk_bytes = 0;
	(void)nftw(c->cache_dir, walk_one, 16, FTW_PHYS);
	uint64_t files = walk_files, bytes = walk_bytes;
	pthread_mutex_unlock(&walk_lock);
	struct mv_ctr_fs_stats sum;
	ctr_fs_sum(c, &sum);
	pthread_mutex_lock(&c->lock);
	*out = c->job;
	pthread_mutex_unlock(&c->lock);
	snprintf(out->dir, sizeof(out->dir), "%.*s", (int)sizeof(out->dir) - 1, c->cache_dir);
	out->files = files;
	out->bytes = bytes;
	out->hits = sum.cache_hits;
	out->misses = sum.cache_misses;
	out->hit_bytes = sum.cache_hit_bytes;
	return 0;
}
