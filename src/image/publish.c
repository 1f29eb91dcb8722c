/* Published layer indexes (docs/formats/layer-index.md, "Published in the
 * registry"): after a host builds an image's layer indexes it pushes them
 * next to the image as an OCI artifact (one blob per index, a manifest whose
 * subject is the image manifest) under the tag "sha256-<hex>.mvidx", so other
 * hosts start the image without streaming its layers. Fetching validates
 * the manifest field by field, checks every blob's digest and decodes it
 * with the index codec's full validation; anything wrong means "not
 * published" and the caller builds the index itself. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "image_i.h"
#include "memvisor/util.h"

#define MT_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_EMPTY "application/vnd.oci.empty.v1+json"
#define EMPTY_DIGEST "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
#define ANN_LAYER "dev.memvisor.layer.digest"
#define INDEX_MAX_BYTES (512u << 20)

void mvp_published_tag(const struct mv_digest *md, char out[MVP_TAG_LEN])
{
	char hex[MV_DIGEST_STRLEN];
	snprintf(out, MVP_TAG_LEN, "sha256-%s.mvidx", mv_digest_format(md, hex) + 7);
}

static int str_is(json_t *o, const char *key, const char *want)
{
	json_t *v = json_object_get(o, key);
	return json_is_string(v) && !strcmp(json_string_value(v), want);
}

static int get_digest(json_t *o, const char *key, struct mv_digest *d)
{
	json_t *v = json_object_get(o, key);
	return json_is_string(v) && mv_digest_parse(json_string_value(v), d) == 0 ? 0 : -1;
}

static int get_size(json_t *o, uint64_t max, uint64_t *out)
{
	json_t *v = json_object_get(o, "size");
	if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

int mvp_published_parse(const void *json, size_t len, const struct mv_digest *md,
			const struct mv_manifest *m, struct mvp_published *out, struct mv_error **err)
{
	json_error_t je;
	memset(out, 0, sizeof(*out));
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	int rc = -EBADMSG;
	struct mv_digest d;
	uint64_t size;
	if (!root || !json_is_object(root)) {
		mv_err_field(err, rc, "manifest", "published index: not a JSON object");
		goto out;
	}
	json_t *sv = json_object_get(root, "schemaVersion"), *cfg = json_object_get(root, "config");
	json_t *subj = json_object_get(root, "subject"), *layers = json_object_get(root, "layers");
	if (!json_is_integer(sv) || json_integer_value(sv) != 2 || !str_is(root, "mediaType", MT_MANIFEST) ||
	    !str_is(root, "artifactType", MVP_ARTIFACT_TYPE)) {
		mv_err_field(err, rc, "artifactType", "published index: not a %s manifest", MVP_ARTIFACT_TYPE);
		goto out;
	}
	if (!json_is_object(cfg) || !str_is(cfg, "mediaType", MT_EMPTY) ||
	    !str_is(cfg, "digest", EMPTY_DIGEST) || get_size(cfg, 2, &size) || size != 2) {
		mv_err_field(err, rc, "config", "published index: config must be the empty descriptor");
		goto out;
	}
	if (!json_is_object(subj) || !str_is(subj, "mediaType", m->media_type) ||
	    get_digest(subj, "digest", &d) || !mv_digest_equal(&d, md) ||
	    get_size(subj, MV_MANIFEST_MAX_BYTES, &size)) {
		mv_err_field(err, rc, "subject", "published index: subject is not this image's manifest");
		goto out;
	}
	if (!json_is_array(layers) || json_array_size(layers) == 0 ||
	    json_array_size(layers) > m->n_items) {
		mv_err_field(err, rc, "layers", "published index: 1..%u layers expected", m->n_items);
		goto out;
	}
	for (size_t i = 0; i < json_array_size(layers); i++) {
		json_t *l = json_array_get(layers, i), *ann;
		struct mv_digest layer;
		if (!json_is_object(l) || !str_is(l, "mediaType", MVP_ARTIFACT_TYPE) ||
		    get_digest(l, "digest", &d) || get_size(l, INDEX_MAX_BYTES, &size) || size == 0 ||
		    !json_is_object(ann = json_object_get(l, "annotations")) ||
		    get_digest(ann, ANN_LAYER, &layer)) {
			mv_err_field(err, rc, "layers", "published index: bad layer %zu", i);
			goto out;
		}
		unsigned k = 0;
		while (k < m->n_items && !mv_digest_equal(&m->items[k].digest, &layer))
			k++;
		if (k == m->n_items) {
			mv_err_field(err, rc, "layers", "published index: layer %zu indexes a blob "
				     "the image does not have", i);
			goto out;
		}
		/* Repeated layers share one index: the first wins, later ones must agree. */
		for (unsigned j = 0; j < m->n_items; j++)
			if (mv_digest_equal(&m->items[j].digest, &layer) && !out->have[j]) {
				out->have[j] = 1;
				out->blob[j] = d;
				out->size[j] = size;
			}
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}

int mvp_published_fetch(struct mv_registry *r, const struct mv_digest *md,
			const struct mv_manifest *m, struct mv_layer_index **idx, unsigned *got,
			struct mv_error **err)
{
	char tag[MVP_TAG_LEN];
	void *json = NULL;
	size_t len = 0;
	struct mvp_published *pub = calloc(1, sizeof(*pub));
	*got = 0;
	if (!pub)
		return -ENOMEM;
	mvp_published_tag(md, tag);
	int rc = mv_registry_get_raw_manifest(r, tag, &json, &len, NULL, 0, err);
	if (!rc)
		rc = mvp_published_parse(json, len, md, m, pub, err);
	free(json);
	for (unsigned i = 0; !rc && i < m->n_items; i++) {
		if (idx[i] || !pub->have[i])
			continue;
		void *buf;
		size_t blen;
		struct mv_layer_index *x;
		if ((rc = mv_registry_get_blob(r, &pub->blob[i], pub->size[i], &buf, &blen, err)) < 0)
			break;
		if (blen != pub->size[i])
			rc = mv_err(err, -EBADMSG, "published index %u: size differs from its descriptor", i);
		else
			rc = mv_layer_index_decode(buf, blen, &x, err);
		free(buf);
		if (rc < 0)
			break;
		if (!mv_digest_equal(mv_layer_index_blob_digest(x), &m->items[i].digest) ||
		    mv_layer_index_blob_size(x) != m->items[i].size) {
			mv_layer_index_free(x);
			rc = mv_err(err, -EBADMSG, "published index %u describes another blob", i);
			break;
		}
		idx[i] = x;
		(*got)++;
	}
	free(pub);
	return rc;
}

int mvp_published_push(struct mv_registry *r, const struct mv_digest *md, uint64_t md_size,
		       const struct mv_manifest *m, struct mv_layer_index *const *idx,
		       struct mv_error **err)
{
	struct mv_digest d;
	char ds[MV_DIGEST_STRLEN], tag[MVP_TAG_LEN];
	int rc = mv_registry_put_blob(r, "{}", 2, &d, err);
	if (rc < 0)
		return rc;
	json_t *layers = json_array();
	for (unsigned i = 0; i < m->n_items && !rc; i++) {
		int dup = 0;
		for (unsigned j = 0; j < i; j++)
			dup |= mv_digest_equal(&m->items[j].digest, &m->items[i].digest);
		if (dup)
			continue;
		void *buf;
		size_t len;
		if ((rc = mv_layer_index_encode(idx[i], &buf, &len)) < 0)
			break;
		rc = mv_registry_put_blob(r, buf, len, &d, err);
		free(buf);
		if (rc < 0)
			break;
		char ls[MV_DIGEST_STRLEN];
		json_array_append_new(layers, json_pack("{s:s, s:s, s:I, s:{s:s}}",
			"mediaType", MVP_ARTIFACT_TYPE, "digest", mv_digest_format(&d, ds),
			"size", (json_int_t)len, "annotations", ANN_LAYER,
			mv_digest_format(&m->items[i].digest, ls)));
	}
	if (rc < 0) {
		json_decref(layers);
		return rc;
	}
	json_t *doc = json_pack("{s:i, s:s, s:s, s:{s:s, s:s, s:i}, s:o, s:{s:s, s:s, s:I}}",
		"schemaVersion", 2, "mediaType", MT_MANIFEST, "artifactType", MVP_ARTIFACT_TYPE,
		"config", "mediaType", MT_EMPTY, "digest", EMPTY_DIGEST, "size", 2,
		"layers", layers,
		"subject", "mediaType", m->media_type, "digest", mv_digest_format(md, ds),
		"size", (json_int_t)md_size);
	char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (!text)
		return -ENOMEM;
	mvp_published_tag(md, tag);
	rc = mv_registry_put_manifest(r, tag, MT_MANIFEST, text, strlen(text), err);
	free(text);
	return rc;
}
