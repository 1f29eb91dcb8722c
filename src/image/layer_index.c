/* Gzip layer indexes, built in one pass: the blob is hashed, inflated and its
 * tar parsed while it streams in; every ~span bytes of output at a deflate
 * block boundary we save a resume point (compressed offset, bit offset and
 * the last 32 KiB of output, as zlib's examples/zran.c does), so a later read
 * of one file inflates from the nearest point instead of the blob's start.
 * Used by the image tools and tests; the file format is in index_codec.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "layer_index_i.h"

struct mv_layer_builder {
	int gzip;
	uint32_t span;
	z_stream zs;
	int z_init, z_end;        /* z_end: a gzip member just ended */
	struct mv_sha256 *h;
	uint64_t in_total, out_total, last_point;
	int have_point;
	uint8_t window[MV_INDEX_WINDOW];
	struct mv_tar *tar;
	struct mv_layer_index *idx;
	int failed;
	struct mv_error **cb_err;
};

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return p;
	size_t n = *cap ? *cap * 2 : 64;
	while (n < need)
		n *= 2;
	p = realloc(p, n * elem);
	if (!p)
		abort();
	*cap = n;
	return p;
}

static uint32_t add_string(struct mv_layer_index *idx, const char *s, uint32_t *len)
{
	size_t l = strlen(s);
	idx->strings = grow(idx->strings, &idx->cap_strings, idx->strings_len + l + 1, 1);
	uint32_t off = (uint32_t)idx->strings_len;
	memcpy(idx->strings + off, s, l + 1);
	idx->strings_len += l + 1;
	*len = (uint32_t)l;
	return off;
}

static int on_entry(void *ctx, const struct mv_tar_entry *e)
{
	struct mv_layer_builder *b = ctx;
	struct mv_layer_index *idx = b->idx;
	if (idx->n_entries >= LX_MAX_ENTRIES ||
	    idx->strings_len + strlen(e->path) + strlen(e->link) + 2 > LX_MAX_STRINGS)
		return mv_err(b->cb_err, -EFBIG, "layer has too many members");
	idx->entries = grow(idx->entries, &idx->cap_entries, idx->n_entries + 1, sizeof(struct lx_entry));
	struct lx_entry *x = &idx->entries[idx->n_entries++];
	*x = (struct lx_entry){ .data_off = e->data_off, .size = e->size, .mtime = e->mtime,
				.mode = e->mode, .uid = e->uid, .gid = e->gid,
				.devmajor = e->devmajor, .devminor = e->devminor,
				.type = (uint8_t)e->type };
	x->path_off = add_string(idx, e->path, &x->path_len);
	x->link_off = add_string(idx, e->link, &x->link_len);
	return 0;
}

struct mv_layer_builder *mv_layer_builder_new(int gzip, uint32_t span)
{
	struct mv_layer_builder *b = calloc(1, sizeof(*b));
	if (!b || !(b->idx = calloc(1, sizeof(*b->idx))))
		abort();
	b->gzip = gzip;
	b->span = span ? span : MV_INDEX_SPAN;
	b->idx->span = b->span;
	b->idx->flags = gzip ? LX_FLAG_GZIP : 0;
	b->h = mv_sha256_new();
	b->tar = mv_tar_new(on_entry, b);
	if (gzip) {
		/* 15 + 32: zlib or gzip header, auto-detected. */
		if (inflateInit2(&b->zs, 47) != Z_OK)
			abort();
		b->z_init = 1;
	}
	return b;
}

void mv_layer_builder_free(struct mv_layer_builder *b)
{
	if (!b)
		return;
	if (b->z_init)
		inflateEnd(&b->zs);
	mv_sha256_free(b->h);
	mv_tar_free(b->tar);
	mv_layer_index_free(b->idx);
	free(b);
}

static void add_point(struct mv_layer_builder *b)
{
	struct mv_layer_index *idx = b->idx;
	idx->points = grow(idx->points, &idx->cap_points, idx->n_points + 1, sizeof(struct lx_point));
	size_t cap = idx->cap_points;
	idx->windows = realloc(idx->windows, cap * MV_INDEX_WINDOW);
	if (!idx->windows)
		abort();
	struct lx_point *p = &idx->points[idx->n_points];
	p->in = b->in_total - b->zs.avail_in;
	p->out = b->out_total;
	p->bits = (uint8_t)(b->zs.data_type & 7);
	/* The window is circular: the oldest output starts at next_out. */
	uint8_t *w = idx->windows + idx->n_points * MV_INDEX_WINDOW;
	size_t left = b->zs.avail_out;
	memcpy(w, b->window + MV_INDEX_WINDOW - left, left);
	memcpy(w + left, b->window, MV_INDEX_WINDOW - left);
	idx->n_points++;
	b->last_point = b->out_total;
	b->have_point = 1;
}

int mv_layer_builder_feed(struct mv_layer_builder *b, const void *data, size_t len,
			  struct mv_error **err)
{
	int rc;
	if (b->failed)
		return -EINVAL;
	b->cb_err = err;
	mv_sha256_update(b->h, data, len);
	b->in_total += len;
	if (!b->gzip) {
		b->out_total += len;
		if ((rc = mv_tar_feed(b->tar, data, len, err)) < 0)
			goto fail;
		return 0;
	}
	b->zs.next_in = (Bytef *)(uintptr_t)data;
	b->zs.avail_in = (uInt)len;
	while (b->zs.avail_in) {
		if (b->z_end) {
			/* Another gzip member follows (concatenated gzip is legal). */
			if (inflateReset(&b->zs) != Z_OK)
				abort();
			b->z_end = 0;
		}
		if (b->zs.avail_out == 0) {
			b->zs.next_out = b->window;
			b->zs.avail_out = MV_INDEX_WINDOW;
		}
		uint8_t *start = b->zs.next_out;
		int zr = inflate(&b->zs, Z_BLOCK);
		size_t got = (size_t)(b->zs.next_out - start);
		b->out_total += got;
		if (got && (rc = mv_tar_feed(b->tar, start, got, err)) < 0)
			goto fail;
		if (zr == Z_NEED_DICT || zr == Z_DATA_ERROR || zr == Z_MEM_ERROR) {
			rc = mv_err(err, -EBADMSG, "gzip: corrupt data near compressed offset %llu: %s",
				    (unsigned long long)(b->in_total - b->zs.avail_in),
				    b->zs.msg ? b->zs.msg : "error");
			goto fail;
		}
		if (zr == Z_STREAM_END) {
			b->z_end = 1;
			continue;
		}
		/* At the end of a block header but not the last block: a resume point. */
		if ((b->zs.data_type & 128) && !(b->zs.data_type & 64) &&
		    (!b->have_point || b->out_total - b->last_point >= b->span)) {
			if (b->idx->n_points >= LX_MAX_POINTS) {
				rc = mv_err(err, -EFBIG, "gzip: too many resume points");
				goto fail;
			}
			add_point(b);
		}
		if (zr == Z_BUF_ERROR && got == 0 && b->zs.avail_out)
			break;   /* needs more input */
	}
	return 0;
fail:
	b->failed = 1;
	return rc;
}

int mv_layer_builder_finish(struct mv_layer_builder *b, const struct mv_digest *expected,
			    struct mv_layer_index **out, struct mv_error **err)
{
	int rc = 0;
	struct mv_digest d;
	*out = NULL;
	if (b->failed) {
		rc = mv_err(err, -EINVAL, "layer index: build already failed");
		goto done;
	}
	if (b->gzip && !b->z_end) {
		rc = mv_err(err, -EBADMSG, "gzip: truncated stream (%llu bytes)",
			    (unsigned long long)b->in_total);
		goto done;
	}
	if ((rc = mv_tar_finish(b->tar, err)) < 0)
		goto done;
	mv_sha256_final(b->h, &d);
	b->h = NULL;
	if (expected && !mv_digest_equal(expected, &d)) {
		char want[MV_DIGEST_STRLEN], got[MV_DIGEST_STRLEN];
		rc = mv_err(err, -EBADMSG, "layer digest mismatch: expected %s, got %s",
			    mv_digest_format(expected, want), mv_digest_format(&d, got));
		goto done;
	}
	b->idx->blob = d;
	b->idx->blob_size = b->in_total;
	b->idx->tar_size = b->out_total;
	if ((rc = lx_finalize(b->idx)) < 0)
		goto done;
	*out = b->idx;
	b->idx = NULL;
done:
	mv_layer_builder_free(b);
	return rc;
}

void mv_layer_index_free(struct mv_layer_index *idx)
{
	if (!idx)
		return;
	free(idx->points);
	free(idx->windows);
	free(idx->entries);
	free(idx->strings);
	free(idx->by_path);
	free(idx);
}

static int cmp_path(const void *a, const void *b, void *ctx)
{
	const struct mv_layer_index *sort_idx = ctx;
	const struct lx_entry *x = &sort_idx->entries[*(const uint32_t *)a];
	const struct lx_entry *y = &sort_idx->entries[*(const uint32_t *)b];
	int c = strcmp(sort_idx->strings + x->path_off, sort_idx->strings + y->path_off);
	if (c)
		return c;
	return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1;
}

int lx_finalize(struct mv_layer_index *idx)
{
	free(idx->by_path);
	idx->by_path = malloc((idx->n_entries ? idx->n_entries : 1) * sizeof(uint32_t));
	if (!idx->by_path)
		return -ENOMEM;
	for (size_t i = 0; i < idx->n_entries; i++)
		idx->by_path[i] = (uint32_t)i;
	qsort_r(idx->by_path, idx->n_entries, sizeof(uint32_t), cmp_path, idx);
	return 0;
}

size_t mv_layer_index_count(const struct mv_layer_index *idx) { return idx->n_entries; }
const struct mv_digest *mv_layer_index_blob_digest(const struct mv_layer_index *idx) { return &idx->blob; }
uint64_t mv_layer_index_blob_size(const struct mv_layer_index *idx) { return idx->blob_size; }
uint64_t mv_layer_index_tar_size(const struct mv_layer_index *idx) { return idx->tar_size; }
size_t mv_layer_index_points(const struct mv_layer_index *idx) { return idx->n_points; }

void mv_layer_index_entry(const struct mv_layer_index *idx, size_t i, struct mv_tar_entry *out)
{
	const struct lx_entry *x = &idx->entries[i];
	*out = (struct mv_tar_entry){ .path = idx->strings + x->path_off,
				      .link = idx->strings + x->link_off,
				      .type = (enum mv_file_type)x->type, .mode = x->mode,
				      .uid = x->uid, .gid = x->gid, .devmajor = x->devmajor,
				      .devminor = x->devminor, .mtime = x->mtime, .size = x->size,
				      .data_off = x->data_off };
}

int mv_layer_index_find(const struct mv_layer_index *idx, const char *path)
{
	size_t lo = 0, hi = idx->n_entries;
	int found = -ENOENT;
	while (lo < hi) {   /* last entry whose path <= path */
		size_t mid = lo + (hi - lo) / 2;
		const struct lx_entry *x = &idx->entries[idx->by_path[mid]];
		if (strcmp(idx->strings + x->path_off, path) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0) {
		uint32_t e = idx->by_path[lo - 1];
		if (!strcmp(idx->strings + idx->entries[e].path_off, path))
			found = (int)e;
	}
	return found;
}
