/* Random access into a gzip layer through its index: start inflating at the
 * nearest resume point before the wanted offset (raw deflate, primed with the
 * point's leftover bits and 32 KiB window) and fetch compressed input in
 * growing pieces, so reading one file costs roughly its compressed size plus
 * up to one span. Used by the lazy readers (the image probe, later FUSE). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "layer_index_i.h"

#define FETCH_MIN (64u << 10)
#define FETCH_MAX (1u << 20)

static int fetch_exact(mv_blob_fetch fetch, void *ctx, uint64_t off, void *buf, size_t len,
		       size_t *got, struct mv_error **err)
{
	int rc = fetch(ctx, off, buf, len, got);
	if (rc < 0)
		return mv_err(err, rc, "fetching %zu bytes at %llu of the layer blob", len,
			      (unsigned long long)off);
	if (*got > len)
		return mv_err(err, -EIO, "layer fetch returned too much");
	return 0;
}

int mv_layer_index_read(const struct mv_layer_index *idx, mv_blob_fetch fetch, void *ctx,
			uint64_t off, void *buf, size_t len, struct mv_error **err)
{
	if (off > idx->tar_size || len > idx->tar_size - off)
		return mv_err(err, -EINVAL, "read [%llu, +%zu) beyond the layer's %llu bytes",
			      (unsigned long long)off, len, (unsigned long long)idx->tar_size);
	if (!len)
		return 0;
	size_t got;
	int rc;
	if (!(idx->flags & LX_FLAG_GZIP)) {
		if ((rc = fetch_exact(fetch, ctx, off, buf, len, &got, err)) < 0)
			return rc;
		return got == len ? 0 : mv_err(err, -EIO, "short read from an uncompressed layer");
	}
	if (!idx->n_points)
		return mv_err(err, -EINVAL, "layer index has no resume point");
	size_t lo = 0, hi = idx->n_points;   /* last point with out <= off */
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		if (idx->points[mid].out <= off)
			lo = mid;
		else
			hi = mid;
	}
	const struct lx_point *p = &idx->points[lo];
	if (p->out > off)
		return mv_err(err, -EINVAL, "layer index: first point after offset 0");
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, -15) != Z_OK)
		return -ENOMEM;
	uint8_t *in = malloc(FETCH_MAX), *discard = malloc(MV_INDEX_WINDOW);
	if (!in || !discard) {
		rc = -ENOMEM;
		goto out;
	}
	uint64_t cin = p->in;
	if (p->bits) {
		uint8_t byte;
		if ((rc = fetch_exact(fetch, ctx, p->in - 1, &byte, 1, &got, err)) < 0)
			goto out;
		if (got != 1) {
			rc = mv_err(err, -EIO, "short fetch at a resume point");
			goto out;
		}
		inflatePrime(&zs, p->bits, byte >> (8 - p->bits));
	}
	inflateSetDictionary(&zs, idx->windows + lo * MV_INDEX_WINDOW, MV_INDEX_WINDOW);
	uint64_t skip = off - p->out;
	uint8_t *dst = buf;
	size_t want = len, piece = FETCH_MIN;
	/* Input past the first point at or beyond the read's end is never
	 * needed: do not fetch beyond it (plus the byte holding its bits). */
	uint64_t limit = idx->blob_size;
	for (size_t nx = lo + 1; nx < idx->n_points; nx++)
		if (idx->points[nx].out >= off + len) {
			limit = idx->points[nx].in + 1;
			break;
		}
	int member_end = 0;
	while (want) {
		if (!zs.avail_in) {
			if (cin >= idx->blob_size) {
				rc = mv_err(err, -EBADMSG, "gzip: layer ended before offset %llu",
					    (unsigned long long)(off + len));
				goto out;
			}
			size_t n = piece < FETCH_MAX ? piece : FETCH_MAX;   /* the size of `in` */
			uint64_t end = cin < limit ? limit : idx->blob_size;
			if (end > idx->blob_size)
				end = idx->blob_size;
			if (n > end - cin)
				n = (size_t)(end - cin);
			if ((rc = fetch_exact(fetch, ctx, cin, in, n, &got, err)) < 0)
				goto out;
			if (!got) {
				rc = mv_err(err, -EIO, "layer fetch returned nothing at %llu",
					    (unsigned long long)cin);
				goto out;
			}
			cin += got;
			zs.next_in = in;
			zs.avail_in = (uInt)got;
			if (piece < FETCH_MIN)
				piece = FETCH_MIN;
			else if (piece < FETCH_MAX)
				piece = piece * 2 < FETCH_MAX ? piece * 2 : FETCH_MAX;   /* large files: fewer, bigger requests */
		}
		if (member_end) {
			/* Skip the 8-byte gzip trailer, then parse the next member's header. */
			size_t t = zs.avail_in < (uInt)member_end ? zs.avail_in : (size_t)member_end;
			zs.next_in += t;
			zs.avail_in -= (uInt)t;
			member_end -= (int)t;
			if (!member_end && inflateReset2(&zs, 31) != Z_OK) {
				rc = -EIO;
				goto out;
			}
			continue;
		}
		if (skip) {
			zs.next_out = discard;
			zs.avail_out = skip < MV_INDEX_WINDOW ? (uInt)skip : MV_INDEX_WINDOW;
		} else {
			zs.next_out = dst;
			zs.avail_out = want < (1u << 30) ? (uInt)want : (1u << 30);
		}
		uInt before = zs.avail_out;
		int zr = inflate(&zs, Z_NO_FLUSH);
		size_t made = before - zs.avail_out;
		if (skip) {
			skip -= made;
		} else {
			dst += made;
			want -= made;
		}
		if (zr == Z_STREAM_END) {
			member_end = 8;
		} else if (zr != Z_OK && zr != Z_BUF_ERROR) {
			rc = mv_err(err, -EBADMSG, "gzip: corrupt data reading the layer: %s",
				    zs.msg ? zs.msg : "error");
			goto out;
		}
	}
	rc = 0;
out:
	inflateEnd(&zs);
	free(in);
	free(discard);
	return rc;
}
