/* How a container's FUSE root (fusefs.c) gets a layer file's bytes: chunks
 * its local store already has (recorded in the mapping table, maybe by
 * another container of the image), else the host-wide cache's chunks served
 * in place (cache.c; a hit copies nothing), else the layer blob by Range
 * requests through its gzip index (layer_read.c): files of up to
 * LAZY_MIN_CHUNKS chunks whole at open, larger ones chunk by chunk as reads
 * reach them (sequential runs fetch ahead). Fetched chunks go to the local
 * store, the mapping table (zero digests mark the ones still missing) and
 * the container's chunk reference set. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fusefs_i.h"
#include "memvisor/util.h"

struct fetchctx {
	struct mv_image_fs *fs;
	const struct mv_digest *blob;
};

static int reg_fetch(void *ctx, uint64_t off, void *buf, size_t len, size_t *got)
{
	struct fetchctx *f = ctx;
	uint64_t b0 = mv_registry_bytes_received(f->fs->reg), r0 = mv_registry_requests(f->fs->reg);
	int rc = mv_registry_read_range(f->fs->reg, f->blob, off, buf, len, got, NULL);
	bump(&f->fs->reg_bytes, mv_registry_bytes_received(f->fs->reg) - b0);
	bump(&f->fs->reg_reqs, mv_registry_requests(f->fs->reg) - r0);
	return rc;
}

static int update_refs(struct mv_image_fs *fs)
{
	struct mv_digest *all = NULL;
	size_t n = 0;
	int rc = mv_mapping_ctr_chunks(fs->map, fs->ctr, &all, &n);
	if (!rc)
		rc = mv_chunkstore_ref_set(fs->cs, fs->refname, all, n, NULL);
	free(all);
	return rc;
}

static int is_zero(const struct mv_digest *d)
{
	static const struct mv_digest zero;
	return mv_digest_equal(d, &zero);
}

/* Fetches chunks [c0, c1) of regular file n from its layer (FETCH_GROUP
 * chunks per layer read: fewer inflate restarts) into the local store. */
static int fetch_chunks(struct mv_image_fs *fs, const struct handle *h, size_t c0, size_t c1)
{
	size_t group = (size_t)FETCH_GROUP * MV_MAPPING_CHUNK;
	uint64_t from = (uint64_t)c0 * MV_MAPPING_CHUNK;
	uint64_t to = (uint64_t)c1 * MV_MAPPING_CHUNK < h->size ? (uint64_t)c1 * MV_MAPPING_CHUNK : h->size;
	uint8_t *buf = malloc(to - from < group ? (size_t)(to - from) + 1 : group);
	int rc = 0;
	if (!buf)
		return -ENOMEM;
	struct fetchctx fc = { fs, &fs->blobs[h->layer] };
	for (uint64_t off = from; off < to && !rc; off += group) {
		size_t len = to - off < group ? (size_t)(to - off) : group;
		struct mv_error *e = NULL;
		if ((rc = mv_layer_index_read(fs->idx[h->layer], reg_fetch, &fc, h->data_off + off, buf,
					      len, &e)) < 0) {
			mv_log(MV_LOG_WARN, "image fs: fetching inode %llu: %s",
			       (unsigned long long)h->ino, mv_error_msg(e, rc));
			mv_error_free(e);
			break;
		}
		for (size_t c = 0; c * MV_MAPPING_CHUNK < len && !rc; c++) {
			size_t cl = len - c * MV_MAPPING_CHUNK < MV_MAPPING_CHUNK ? len - c * MV_MAPPING_CHUNK
										 : MV_MAPPING_CHUNK;
			rc = mv_chunkstore_put(fs->cs, buf + c * MV_MAPPING_CHUNK, cl,
					       &h->chunks[off / MV_MAPPING_CHUNK + c], NULL);
		}
	}
	free(buf);
	/* Recorded as they arrive: the table lists fetched chunks, zeros the rest. */
	if (!rc && (rc = mv_mapping_set_chunks(fs->map, fs->ctr, h->ino, h->chunks, h->n)) == 0)
		rc = update_refs(fs);
	return rc < 0 ? rc : 0;
}

/* Fills h with regular file n's chunks: the ones the table lists that the
 * local store still has (another container may have fetched them), else the
 * shared cache's (a hit copies nothing), else from the layer: the whole file
 * now when small, chunk by chunk as reads need them when large. */
int fsf_file_chunks(struct mv_image_fs *fs, const struct mv_map_node *n, struct handle *h)
{
	struct mv_digest *d = NULL;
	size_t k = (size_t)((n->size + MV_MAPPING_CHUNK - 1) / MV_MAPPING_CHUNK), got = 0;
	int rc = mv_mapping_chunks(fs->map, fs->ctr, n->ino, &d, &got);
	if (rc < 0 && rc != -ENOENT)
		return rc;
	h->ino = n->ino;
	h->size = n->size;
	h->layer = n->layer;
	h->data_off = n->data_off;
	h->src = fs->cs;
	h->last_fetched = SIZE_MAX;
	size_t present = 0;
	for (size_t i = 0; d && i < got; i++) {
		if (!is_zero(&d[i]) && !mv_chunkstore_has(fs->cs, &d[i]))
			memset(&d[i], 0, sizeof(d[i]));   /* collected since: fetch again */
		present += !is_zero(&d[i]);
	}
	if (!k) {   /* empty: nothing to find anywhere */
		free(d);
		h->chunks = NULL;
		h->n = 0;
		return 0;
	}
	if (d && present == k) {
		h->chunks = d;
		h->n = k;
		return 0;
	}
	if (n->layer < 0 || (size_t)n->layer >= fs->n_layers) {
		free(d);
		return -EIO;
	}
	if (fs->cache && !present) {
		struct mv_digest *cd;
		size_t ck, i = 0;
		if (!mvc_cache_lookup(fs->cache, &fs->blobs[n->layer], n->data_off, n->size, &cd, &ck)) {
			while (i < ck && mv_chunkstore_has(mvc_cache_store(fs->cache), &cd[i]))
				i++;
			if (i == ck) {
				free(d);
				h->chunks = cd;
				h->n = ck;
				h->src = mvc_cache_store(fs->cache);
				bump(&fs->cache_hits, 1);
				return 0;
			}
			free(cd);
		}
		bump(&fs->cache_misses, 1);
	}
	if (!d && !(d = calloc(k ? k : 1, sizeof(*d))))
		return -ENOMEM;
	h->chunks = d;
	h->n = k;
	if (!present)
		bump(&fs->fetched, 1);
	if (k > LAZY_MIN_CHUNKS)
		return 0;   /* op_read fetches what it needs */
	if ((rc = fetch_chunks(fs, h, 0, k)) < 0) {
		free(d);
		h->chunks = NULL;
	}
	return rc;
}

/* Chunk ci of h's file (fetched first if need be); *data is the caller's. */
int fsf_chunk_data(struct mv_image_fs *fs, struct handle *h, size_t ci, void **data, size_t *len)
{
	if (ci >= h->n)
		return -EIO;
	if (is_zero(&h->chunks[ci])) {
		/* Random reads fetch one chunk; a sequential run fetches ahead,
		 * twice as far each time up to FETCH_GROUP chunks. */
		size_t end = ci + 1;
		if (h->last_fetched != SIZE_MAX && h->last_fetched + 1 == ci) {
			h->ahead = h->ahead ? (h->ahead * 2 < FETCH_GROUP ? h->ahead * 2 : FETCH_GROUP) : 2;
			end = ci + h->ahead < h->n ? ci + h->ahead : h->n;
		} else {
			h->ahead = 0;
		}
		while (end > ci + 1 && !is_zero(&h->chunks[end - 1]))
			end--;
		int rc = fetch_chunks(fs, h, ci, end);
		if (rc < 0)
			return rc;
		h->last_fetched = end - 1;
	}
	return mv_chunkstore_get(h->src, &h->chunks[ci], data, len, NULL);
}

