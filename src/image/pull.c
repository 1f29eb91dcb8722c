/* Pulling an image makes it runnable on this host without fetching file
 * contents: the manifest and config (kept in the store, content-addressed),
 * one layer index per layer (from the store or the shared cache, else published in the registry
 * by an earlier pull anywhere, else built by streaming the layer once and
 * then published), and the image's rows in the mapping database under the
 * canonical name "registry/repo@sha256:<manifest hex>". Store layout
 * (docs/formats/image-store.md): indexes/<layer hex>.idx,
 * manifests/<hex>.json, configs/<hex>.json, tags/<sha256 of "reg/repo:tag">.
 * Used by the daemon, the cache prepopulator and the image probe. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "image_i.h"
#include "memvisor/util.h"

#define CONFIG_MAX (4u << 20)

void mvp_canonical(const struct mv_image_ref *ref, const struct mv_digest *md, char *buf, size_t len)
{
	char ds[MV_DIGEST_STRLEN];
	snprintf(buf, len, "%s/%s@%s", ref->registry, ref->repo, mv_digest_format(md, ds));
}

static void store_path(const char *store, const char *dir, const struct mv_digest *d,
		       const char *ext, char *out, size_t len)
{
	char ds[MV_DIGEST_STRLEN];
	snprintf(out, len, "%s/%s/%s%s", store, dir, mv_digest_format(d, ds) + 7, ext);
}

static void tag_path(const char *store, const struct mv_image_ref *ref, char *out, size_t len)
{
	char key[700];
	struct mv_digest d;
	snprintf(key, sizeof(key), "%s/%s:%s", ref->registry, ref->repo, ref->ref);
	mv_digest_of(key, strlen(key), &d);
	store_path(store, "tags", &d, "", out, len);
}

/* A content-addressed file of the store, checked against its name. */
static int read_verified(const char *path, const struct mv_digest *d, size_t max, void **buf,
			 size_t *len, struct mv_error **err)
{
	struct mv_digest got;
	int rc = mv_read_file(path, max, buf, len);
	if (rc < 0)
		return rc == -ENOENT ? -ENOENT : mv_err(err, rc, "reading %s", path);
	mv_digest_of(*buf, *len, &got);
	if (!mv_digest_equal(&got, d)) {
		free(*buf);
		*buf = NULL;
		return mv_err(err, -EBADMSG, "%s does not match its digest", path);
	}
	return 0;
}

int mvp_check_paths(const struct mv_image_paths *p, struct mv_error **err)
{
	if (!p || !p->store_dir || !p->store_dir[0])
		return mv_err_field(err, -EINVAL, "store_dir", "no image store directory");
	if (!p->mapping_db || !p->mapping_db[0])
		return mv_err_field(err, -EINVAL, "mapping_db", "no mapping database");
	return 0;
}

int mvp_resolve(const struct mv_image_paths *p, const char *name, struct mv_image_ref *ref,
		char *canonical, size_t len, struct mv_error **err)
{
	struct mv_digest md;
	int rc = mvp_check_paths(p, err);
	if (rc < 0)
		return rc;
	rc = mv_image_ref_parse(name, ref, err);
	if (rc < 0)
		return rc;
	if (mv_digest_parse(ref->ref, &md) == 0) {
		mvp_canonical(ref, &md, canonical, len);
		return 0;
	}
	char path[4096];
	void *buf;
	size_t n;
	struct mv_image_ref c;
	tag_path(p->store_dir, ref, path, sizeof(path));
	if ((rc = mv_read_file(path, 600, &buf, &n)) < 0)
		return rc == -ENOENT ? mv_err_field(err, -ENOENT, "image", "image %.300s not pulled", name)
				     : mv_err(err, rc, "reading %s", path);
	rc = mv_image_ref_parse(buf, &c, NULL);
	if (rc < 0 || strcmp(c.registry, ref->registry) || strcmp(c.repo, ref->repo) ||
	    mv_digest_parse(c.ref, &md) < 0)
		rc = mv_err(err, -EBADMSG, "%s: not a canonical name of %s/%s", path, ref->registry, ref->repo);
	else
		snprintf(canonical, len, "%s", (char *)buf);
	free(buf);
	if (!rc)
		*ref = c;
	return rc;
}

int mvp_load_index(const char *store_dir, const struct mv_descriptor *l,
		   struct mv_layer_index **out, struct mv_error **err)
{
	char path[4096];
	struct mv_layer_index *x;
	store_path(store_dir, "indexes", &l->digest, ".idx", path, sizeof(path));
	if (access(path, F_OK) < 0)
		return -ENOENT;
	int rc = mv_layer_index_load(path, &x, err);
	if (rc < 0)
		return rc;
	if (!mv_digest_equal(mv_layer_index_blob_digest(x), &l->digest) ||
	    mv_layer_index_blob_size(x) != l->size) {
		mv_layer_index_free(x);
		return mv_err(err, -EBADMSG, "%s describes another blob", path);
	}
	*out = x;
	return 0;
}

struct progress {
	mv_image_progress_cb cb;
	void *ctx;
	struct mv_image_progress p;
	uint64_t last;
};

static void report(struct progress *pr, const char *phase)
{
	pr->p.phase = phase;
	if (pr->cb)
		pr->cb(pr->ctx, &pr->p);
}

struct build_ctx {
	struct mv_layer_builder *b;
	struct progress *pr;
};

static int build_sink(void *ctx, const void *d, size_t n)
{
	struct build_ctx *c = ctx;
	c->pr->p.done_bytes += n;
	if (c->pr->p.done_bytes - c->pr->last >= (4u << 20)) {
		c->pr->last = c->pr->p.done_bytes;
		report(c->pr, "index");
	}
	return mv_layer_builder_feed(c->b, d, n, NULL);
}

/* Streams layer i once and builds its index. */
static int build_index(struct mv_registry *r, const struct mv_descriptor *l, struct progress *pr,
		       struct mv_layer_index **out, struct mv_error **err)
{
	if (l->compression == MV_LAYER_ZSTD)
		return mv_err_field(err, -ENOTSUP, "layers",
				    "zstd layers cannot be read lazily yet (gzip or plain tar only)");
	struct build_ctx c = { mv_layer_builder_new(l->compression == MV_LAYER_GZIP, 0), pr };
	struct mv_error *e = NULL;
	int rc = mv_registry_read_blob(r, &l->digest, 0, 0, build_sink, &c, err);
	if (rc < 0) {
		/* The builder's own error explains a refused sink best. */
		mv_layer_builder_free(c.b);
		return rc;
	}
	rc = mv_layer_builder_finish(c.b, &l->digest, out, &e);
	if (rc < 0) {
		mv_err(err, rc, "layer %s: %s", "index", mv_error_msg(e, rc));
		mv_error_free(e);
	}
	return rc;
}

static int ensure_dirs(const char *store, struct mv_error **err)
{
	static const char *const sub[] = { "indexes", "manifests", "configs", "tags" };
	char path[4096];
	for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", store, sub[i]);
		int rc = mv_mkdir_p(path, 0700);
		if (rc < 0)
			return mv_err(err, rc, "creating %s", path);
	}
	return 0;
}

/* Keeps a blob (manifest or config) in the store unless already there. */
static int keep_blob(struct mv_registry *r, const char *store, const char *dir,
		     const struct mv_digest *d, int manifest, uint64_t *size, struct mv_error **err)
{
	char path[4096], ds[MV_DIGEST_STRLEN];
	void *buf = NULL;
	size_t len = 0;
	store_path(store, dir, d, ".json", path, sizeof(path));
	int rc = read_verified(path, d, manifest ? MV_MANIFEST_MAX_BYTES : CONFIG_MAX, &buf, &len, NULL);
	if (rc < 0) {
		rc = manifest ? mv_registry_get_raw_manifest(r, mv_digest_format(d, ds), &buf, &len, NULL, 0, err)
			      : mv_registry_get_blob(r, d, CONFIG_MAX, &buf, &len, err);
		if (!rc && (rc = mv_write_file_atomic(path, buf, len)) < 0)
			mv_err(err, rc, "writing %s", path);
	}
	free(buf);
	if (size)
		*size = len;
	return rc;
}

int mv_image_pull(const struct mv_image_paths *p, const char *refstr, mv_image_progress_cb cb,
		  void *ctx, struct mv_image_info *out, struct mv_error **err)
{
	struct mv_image_ref ref;
	struct mv_registry *r = NULL;
	struct mv_manifest *m = NULL;
	struct mv_layer_index **idx = NULL;
	struct mv_mapping *map = NULL;
	struct progress pr = { .cb = cb, .ctx = ctx };
	char url[512], path[4096];
	uint64_t md_size = 0;
	int rc;
	memset(out, 0, sizeof(*out));
	if ((rc = mvp_check_paths(p, err)) < 0 || (rc = mv_image_ref_parse(refstr, &ref, err)) < 0)
		return rc;
	mv_image_ref_url(&ref, p->insecure, url, sizeof(url));
	if ((rc = ensure_dirs(p->store_dir, err)) < 0 ||
	    (rc = mv_registry_open(url, ref.repo, &r, err)) < 0)
		return rc;
	report(&pr, "manifest");
	if ((rc = mv_registry_get_manifest(r, ref.ref, "linux", "amd64", &m, &out->manifest, err)) < 0 ||
	    (rc = keep_blob(r, p->store_dir, "manifests", &out->manifest, 1, &md_size, err)) < 0 ||
	    (rc = keep_blob(r, p->store_dir, "configs", &m->config.digest, 0, NULL, err)) < 0)
		goto out;
	mvp_canonical(&ref, &out->manifest, out->name, sizeof(out->name));
	out->layers = m->n_items;
	pr.p.layers = m->n_items;
	for (unsigned i = 0; i < m->n_items; i++)
		out->layers_bytes += m->items[i].size;
	if (!(idx = calloc(m->n_items ? m->n_items : 1, sizeof(*idx)))) {
		rc = -ENOMEM;
		goto out;
	}
	unsigned missing = 0;
	for (unsigned i = 0; i < m->n_items; i++) {
		rc = mvp_load_index(p->store_dir, &m->items[i], &idx[i], NULL);
		/* The shared cache keeps the indexes of the layers it holds. */
		if (rc < 0 && p->cache_dir &&
		    mvp_load_index(p->cache_dir, &m->items[i], &idx[i], NULL) == 0) {
			store_path(p->store_dir, "indexes", &m->items[i].digest, ".idx", path, sizeof(path));
			rc = mv_layer_index_save(idx[i], path, err);
			if (rc < 0)
				goto out;
		}
		missing += rc < 0;
	}
	if (missing) {
		struct mv_error *e = NULL;
		unsigned got = 0;
		report(&pr, "index");
		rc = mvp_published_fetch(r, &out->manifest, m, idx, &got, &e);
		if (rc < 0 && rc != -ENOENT)
			mv_log(MV_LOG_WARN, "image %s: published layer indexes unusable, building them: %s",
			       out->name, mv_error_msg(e, rc));
		mv_error_free(e);
		out->indexes_from_registry = got > 0;
		pr.p.total_bytes = 0;
		for (unsigned i = 0; i < m->n_items; i++)
			if (!idx[i])
				pr.p.total_bytes += m->items[i].size;
		int built = 0;
		for (unsigned i = 0; i < m->n_items; i++) {
			if (idx[i]) {
				if (got) {   /* fetched: keep it for later containers */
					store_path(p->store_dir, "indexes", &m->items[i].digest, ".idx", path, sizeof(path));
					if (access(path, F_OK) < 0 && (rc = mv_layer_index_save(idx[i], path, err)) < 0)
						goto out;
				}
				continue;
			}
			pr.p.layer = i;
			uint64_t b0 = mv_registry_bytes_received(r);
			if ((rc = build_index(r, &m->items[i], &pr, &idx[i], err)) < 0)
				goto out;
			out->layer_bytes += mv_registry_bytes_received(r) - b0;
			store_path(p->store_dir, "indexes", &m->items[i].digest, ".idx", path, sizeof(path));
			if ((rc = mv_layer_index_save(idx[i], path, err)) < 0)
				goto out;
			built = 1;
		}
		if (built) {
			e = NULL;
			rc = mvp_published_push(r, &out->manifest, md_size, m, idx, &e);
			if (rc < 0)
				mv_log(MV_LOG_INFO, "image %s: layer indexes not published: %s", out->name,
				       mv_error_msg(e, rc));
			mv_error_free(e);
		}
	}
	int64_t image_id;
	if ((rc = mv_mapping_open(p->mapping_db, &map, err)) < 0 ||
	    (rc = mv_mapping_add_image(map, out->name, idx, m->n_items, &image_id, err)) < 0)
		goto out;
	if (mv_digest_parse(ref.ref, &(struct mv_digest){ 0 }) < 0) {
		tag_path(p->store_dir, &ref, path, sizeof(path));
		if ((rc = mv_write_file_atomic(path, out->name, strlen(out->name))) < 0) {
			mv_err(err, rc, "writing %s", path);
			goto out;
		}
	}
	pr.p.done_bytes = pr.p.total_bytes;
	report(&pr, "done");
	rc = 0;
out:
	out->registry_bytes = r ? mv_registry_bytes_received(r) : 0;
	for (unsigned i = 0; idx && i < m->n_items; i++)
		mv_layer_index_free(idx[i]);
	free(idx);
	mv_mapping_close(map);
	mv_manifest_free(m);
	mv_registry_close(r);
	return rc;
}

/* The stored manifest of a canonical name (digest-checked, parsed). */
static int stored_manifest(const struct mv_image_paths *p, const struct mv_image_ref *ref,
			   struct mv_manifest **m, struct mv_error **err)
{
	struct mv_digest md;
	char path[4096];
	void *buf;
	size_t len;
	if (mv_digest_parse(ref->ref, &md) < 0)
		return -EINVAL;
	store_path(p->store_dir, "manifests", &md, ".json", path, sizeof(path));
	int rc = read_verified(path, &md, MV_MANIFEST_MAX_BYTES, &buf, &len, err);
	if (rc == -ENOENT)
		return mv_err_field(err, -ENOENT, "image", "image %s/%s@%s not pulled", ref->registry,
				    ref->repo, ref->ref);
	if (rc < 0)
		return rc;
	rc = mv_manifest_parse(buf, len, NULL, m, err);
	free(buf);
	if (!rc && (*m)->kind != MV_MANIFEST_IMAGE) {
		mv_manifest_free(*m);
		rc = mv_err(err, -EBADMSG, "%s: not an image manifest", path);
	}
	return rc;
}

int mv_image_config(const struct mv_image_paths *p, const char *name, char **json, size_t *len,
		    struct mv_error **err)
{
	struct mv_image_ref ref;
	struct mv_manifest *m;
	char canon[600], path[4096];
	*json = NULL;
	*len = 0;
	int rc = mvp_resolve(p, name, &ref, canon, sizeof(canon), err);
	if (rc < 0 || (rc = stored_manifest(p, &ref, &m, err)) < 0)
		return rc;
	void *buf;
	store_path(p->store_dir, "configs", &m->config.digest, ".json", path, sizeof(path));
	rc = read_verified(path, &m->config.digest, CONFIG_MAX, &buf, len, err);
	mv_manifest_free(m);
	if (rc == -ENOENT)
		return mv_err(err, -ENOENT, "config of %s missing from the store", canon);
	if (!rc)
		*json = buf;   /* mv_read_file NUL-terminates */
	return rc;
}

int mv_image_remove(const struct mv_image_paths *p, const char *name, struct mv_error **err)
{
	struct mv_image_ref ref;
	struct mv_mapping *map = NULL;
	struct mv_digest *unused = NULL, md;
	size_t n = 0;
	char canon[600], path[4096];
	int64_t id;
	int rc = mvp_resolve(p, name, &ref, canon, sizeof(canon), err);
	if (rc < 0 || (rc = mv_mapping_open(p->mapping_db, &map, err)) < 0)
		return rc;
	if ((rc = mv_mapping_find_image(map, canon, &id)) < 0) {
		rc = mv_err_field(err, -ENOENT, "image", "no image %s", canon);
		goto out;
	}
	if ((rc = mv_mapping_drop_image(map, id, &unused, &n, err)) < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		store_path(p->store_dir, "indexes", &unused[i], ".idx", path, sizeof(path));
		unlink(path);
	}
	if (mv_digest_parse(ref.ref, &md) == 0) {
		store_path(p->store_dir, "manifests", &md, ".json", path, sizeof(path));
		unlink(path);   /* configs are tiny and may be shared: kept */
	}
	struct mv_image_ref asked;
	if (mv_image_ref_parse(name, &asked, NULL) == 0 && mv_digest_parse(asked.ref, &md) < 0) {
		tag_path(p->store_dir, &asked, path, sizeof(path));
		unlink(path);
	}
out:
	free(unused);
	mv_mapping_close(map);
	return rc;
}
