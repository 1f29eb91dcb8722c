/* OCI / Docker v2 manifest and index parser: validates every field of the
 * JSON (media types, digests, sizes, counts) into a plain struct
 * mv_manifest. Used by registry.c and the image_manifest fuzz target. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "memvisor/image.h"
#include "memvisor/util.h"

#define MT_OCI_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define MT_OCI_INDEX "application/vnd.oci.image.index.v1+json"
#define MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define MT_DOCKER_LIST "application/vnd.docker.distribution.manifest.list.v2+json"

static const struct {
	const char *mt;
	enum mv_layer_compression c;
} layer_types[] = {
	{ "application/vnd.oci.image.layer.v1.tar", MV_LAYER_TAR },
	{ "application/vnd.oci.image.layer.v1.tar+gzip", MV_LAYER_GZIP },
	{ "application/vnd.oci.image.layer.v1.tar+zstd", MV_LAYER_ZSTD },
	{ "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", MV_LAYER_GZIP },
	{ "application/vnd.docker.image.rootfs.diff.tar.gzip", MV_LAYER_GZIP },
	{ "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", MV_LAYER_GZIP },
};

static const char *const config_types[] = {
	"application/vnd.oci.image.config.v1+json",
	"application/vnd.docker.container.image.v1+json",
};

const char *mv_manifest_accept(void)
{
	return MT_OCI_MANIFEST ", " MT_OCI_INDEX ", " MT_DOCKER_MANIFEST ", " MT_DOCKER_LIST;
}

static int copy_str(json_t *o, const char *key, char *out, size_t n, int required,
		    const char *field, struct mv_error **err)
{
	json_t *v = json_object_get(o, key);
	out[0] = 0;
	if (!v)
		return required ? mv_err_field(err, -EBADMSG, field, "%s missing", field) : 0;
	if (!json_is_string(v) || json_string_length(v) >= n ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return mv_err_field(err, -EBADMSG, field, "%s: not a string of < %zu bytes", field, n);
	memcpy(out, json_string_value(v), json_string_length(v) + 1);
	return 0;
}

/* kind: 0 config, 1 layer, 2 index entry. */
static int parse_desc(json_t *o, int kind, const char *field, struct mv_descriptor *d,
		      struct mv_error **err)
{
	char dg[MV_DIGEST_STRLEN + 8];
	int rc;
	memset(d, 0, sizeof(*d));
	if (!json_is_object(o))
		return mv_err_field(err, -EBADMSG, field, "%s: not an object", field);
	if ((rc = copy_str(o, "mediaType", d->media_type, sizeof(d->media_type), 1, field, err)) ||
	    (rc = copy_str(o, "digest", dg, sizeof(dg), 1, field, err)))
		return rc;
	if (mv_digest_parse(dg, &d->digest) < 0)
		return mv_err_field(err, -EBADMSG, field, "%s: digest is not sha256:<64 hex>", field);
	json_t *sz = json_object_get(o, "size");
	if (!json_is_integer(sz) || json_integer_value(sz) < 0 ||
	    (uint64_t)json_integer_value(sz) > MV_BLOB_MAX_SIZE)
		return mv_err_field(err, -EBADMSG, field, "%s: size missing, negative or too large",
				    field);
	d->size = (uint64_t)json_integer_value(sz);
	int ok = 0;
	if (kind == 0) {
		for (size_t i = 0; i < MV_ARRAY_SIZE(config_types); i++)
			ok |= !strcmp(d->media_type, config_types[i]);
		if (d->size > MV_MANIFEST_MAX_BYTES)
			return mv_err_field(err, -EBADMSG, field, "config larger than %u bytes",
					    MV_MANIFEST_MAX_BYTES);
	} else if (kind == 1) {
		for (size_t i = 0; i < MV_ARRAY_SIZE(layer_types); i++) {
			if (!strcmp(d->media_type, layer_types[i].mt)) {
				ok = 1;
				d->compression = layer_types[i].c;
			}
		}
	} else {
		ok = !strcmp(d->media_type, MT_OCI_MANIFEST) || !strcmp(d->media_type, MT_OCI_INDEX) ||
		     !strcmp(d->media_type, MT_DOCKER_MANIFEST) || !strcmp(d->media_type, MT_DOCKER_LIST);
		if (d->size > MV_MANIFEST_MAX_BYTES)
			return mv_err_field(err, -EBADMSG, field, "manifest larger than %u bytes",
					    MV_MANIFEST_MAX_BYTES);
		json_t *p = json_object_get(o, "platform");
		if (p) {
			if (!json_is_object(p))
				return mv_err_field(err, -EBADMSG, field, "%s: platform not an object", field);
			if ((rc = copy_str(p, "os", d->os, sizeof(d->os), 1, field, err)) ||
			    (rc = copy_str(p, "architecture", d->arch, sizeof(d->arch), 1, field, err)) ||
			    (rc = copy_str(p, "variant", d->variant, sizeof(d->variant), 0, field, err)))
				return rc;
		}
	}
	if (!ok)
		return mv_err_field(err, -EBADMSG, field, "%s: unsupported mediaType \"%s\"", field,
				    d->media_type);
	return 0;
}

int mv_manifest_parse(const void *buf, size_t len, const char *content_type,
		      struct mv_manifest **out, struct mv_error **err)
{
	json_error_t je;
	int rc = 0;
	*out = NULL;
	if (len > MV_MANIFEST_MAX_BYTES)
		return mv_err(err, -EFBIG, "manifest is %zu bytes (limit %u)", len, MV_MANIFEST_MAX_BYTES);
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return mv_err(err, -EBADMSG, "manifest: bad JSON at line %d: %s", je.line, je.text);
	struct mv_manifest *m = calloc(1, sizeof(*m));
	if (!m) {
		rc = -ENOMEM;
		goto fail;
	}
	if (!json_is_object(root)) {
		rc = mv_err(err, -EBADMSG, "manifest: not a JSON object");
		goto fail;
	}
	json_t *sv = json_object_get(root, "schemaVersion");
	if (!json_is_integer(sv) || json_integer_value(sv) != 2) {
		rc = mv_err_field(err, -EBADMSG, "schemaVersion", "schemaVersion must be 2");
		goto fail;
	}
	if ((rc = copy_str(root, "mediaType", m->media_type, sizeof(m->media_type), 0,
			   "mediaType", err)))
		goto fail;
	if (content_type && *content_type) {
		/* Ignore parameters ("; charset=utf-8"). */
		size_t ctl = strcspn(content_type, "; ");
		if (!m->media_type[0]) {
			if (ctl >= sizeof(m->media_type))
				ctl = sizeof(m->media_type) - 1;
			memcpy(m->media_type, content_type, ctl);
			m->media_type[ctl] = 0;
		} else if (strlen(m->media_type) != ctl || strncmp(m->media_type, content_type, ctl)) {
			rc = mv_err_field(err, -EBADMSG, "mediaType",
					  "mediaType \"%s\" disagrees with Content-Type", m->media_type);
			goto fail;
		}
	}
	json_t *layers = json_object_get(root, "layers");
	json_t *mans = json_object_get(root, "manifests");
	if (!m->media_type[0])   /* OCI allows omitting it: infer from the shape */
		strcpy(m->media_type, mans && !layers ? MT_OCI_INDEX : MT_OCI_MANIFEST);
	if (!strcmp(m->media_type, MT_OCI_MANIFEST) || !strcmp(m->media_type, MT_DOCKER_MANIFEST)) {
		m->kind = MV_MANIFEST_IMAGE;
		if (mans) {
			rc = mv_err_field(err, -EBADMSG, "manifests", "image manifest with manifests");
			goto fail;
		}
		if ((rc = parse_desc(json_object_get(root, "config"), 0, "config", &m->config, err)))
			goto fail;
		if (!json_is_array(layers) || json_array_size(layers) > MV_MANIFEST_MAX_LAYERS) {
			rc = mv_err_field(err, -EBADMSG, "layers", "layers: not an array of at most %d",
					  MV_MANIFEST_MAX_LAYERS);
			goto fail;
		}
	} else if (!strcmp(m->media_type, MT_OCI_INDEX) || !strcmp(m->media_type, MT_DOCKER_LIST)) {
		m->kind = MV_MANIFEST_INDEX;
		if (layers) {
			rc = mv_err_field(err, -EBADMSG, "layers", "index with layers");
			goto fail;
		}
		if (!json_is_array(mans) || json_array_size(mans) > MV_MANIFEST_MAX_ENTRIES) {
			rc = mv_err_field(err, -EBADMSG, "manifests",
					  "manifests: not an array of at most %d", MV_MANIFEST_MAX_ENTRIES);
			goto fail;
		}
		layers = mans;
	} else {
		rc = mv_err_field(err, -EBADMSG, "mediaType", "unsupported manifest mediaType \"%s\"",
				  m->media_type);
		goto fail;
	}
	size_t n = json_array_size(layers);
	m->items = calloc(n ? n : 1, sizeof(*m->items));
	if (!m->items) {
		rc = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		char field[32];
		snprintf(field, sizeof(field), "%s[%zu]", m->kind == MV_MANIFEST_IMAGE ? "layers" :
			 "manifests", i);
		if ((rc = parse_desc(json_array_get(layers, i), m->kind == MV_MANIFEST_IMAGE ? 1 : 2,
				     field, &m->items[i], err)))
			goto fail;
		m->n_items++;
	}
	json_decref(root);
	*out = m;
	return 0;
fail:
	json_decref(root);
	mv_manifest_free(m);
	return rc;
}

void mv_manifest_free(struct mv_manifest *m)
{
	if (!m)
		return;
	free(m->items);
	free(m);
}

int mv_manifest_pick(const struct mv_manifest *idx, const char *os, const char *arch)
{
	if (idx->kind != MV_MANIFEST_INDEX)
		return -EINVAL;
	for (unsigned i = 0; i < idx->n_items; i++)
		if (!strcmp(idx->items[i].os, os) && !strcmp(idx->items[i].arch, arch))
			return (int)i;
	return -ENOENT;
}
