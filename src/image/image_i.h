/* Private to src/image: published layer indexes (publish.c) and the shared
 * helpers of pull.c and cache.c. */
#ifndef MV_IMAGE_I_H
#define MV_IMAGE_I_H

#include "memvisor/image.h"

#define MVP_ARTIFACT_TYPE "application/vnd.memvisor.layer-index.v1"
#define MVP_TAG_LEN 96

/* What a published-index manifest lists, per image layer. */
struct mvp_published {
	int have[MV_MANIFEST_MAX_LAYERS];
	struct mv_digest blob[MV_MANIFEST_MAX_LAYERS];
	uint64_t size[MV_MANIFEST_MAX_LAYERS];
};

/* "sha256-<hex of the image manifest digest>.mvidx" */
void mvp_published_tag(const struct mv_digest *md, char out[MVP_TAG_LEN]);
/* Validates a published-index manifest for image manifest md / m. */
int mvp_published_parse(const void *json, size_t len, const struct mv_digest *md,
			const struct mv_manifest *m, struct mvp_published *out,
			struct mv_error **err) MV_MUST_CHECK;
/* Fills the NULL entries of idx[0..m->n_items) from the registry's published
 * indexes; *got says how many. -ENOENT when none are published. */
int mvp_published_fetch(struct mv_registry *r, const struct mv_digest *md,
			const struct mv_manifest *m, struct mv_layer_index **idx, unsigned *got,
			struct mv_error **err) MV_MUST_CHECK;
/* Pushes every layer's index and the manifest tying them to image md
 * (md_size: the image manifest's length). */
int mvp_published_push(struct mv_registry *r, const struct mv_digest *md, uint64_t md_size,
		       const struct mv_manifest *m, struct mv_layer_index *const *idx,
		       struct mv_error **err) MV_MUST_CHECK;

/* Canonical image name "registry/repo@sha256:<hex>" (buf: 600 bytes). */
void mvp_canonical(const struct mv_image_ref *ref, const struct mv_digest *md, char *buf, size_t len);
/* store_dir and mapping_db are set (-EINVAL naming the field otherwise). */
int mvp_check_paths(const struct mv_image_paths *p, struct mv_error **err) MV_MUST_CHECK;
/* Resolves a name (canonical, or a ref pulled before on this host) to the
 * canonical name and the parsed reference of it. */
int mvp_resolve(const struct mv_image_paths *p, const char *name, struct mv_image_ref *ref,
		char *canonical, size_t len, struct mv_error **err) MV_MUST_CHECK;
/* Loads layer i's index from store_dir/indexes (-ENOENT when absent). */
int mvp_load_index(const char *store_dir, const struct mv_descriptor *l,
		   struct mv_layer_index **out, struct mv_error **err) MV_MUST_CHECK;

/* The host-wide cache (cache.c) as containers see it: read only. */
struct mvc_cache;
int mvc_cache_open_ro(const char *dir, struct mvc_cache **out, struct mv_error **err) MV_MUST_CHECK;
void mvc_cache_close(struct mvc_cache *c);
/* Chunks of the member at data_off of layer blob, if cached with this size
 * (-ENOENT otherwise); *d is the caller's. */
int mvc_cache_lookup(struct mvc_cache *c, const struct mv_digest *blob, uint64_t data_off,
		     uint64_t size, struct mv_digest **d, size_t *n) MV_MUST_CHECK;
struct mv_chunkstore *mvc_cache_store(struct mvc_cache *c);

#endif
