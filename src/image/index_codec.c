/* On-disk layer index (docs/formats/layer-index.md): encoder and validating
 * loader. Every field is checked on load: counts against the file size,
 * offsets and lengths against their sections, paths re-validated, resume
 * points ordered, CRC-32 over the whole file. Used by layer_index users to
 * keep indexes in the store, and by the image_index fuzz target. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include "memvisor/util.h"
#include "layer_index_i.h"

#define MAGIC "MVLYRIDX"
#define END_MAGIC "MVIE"
#define VERSION 1
#define HDR_SIZE 96
#define POINT_SIZE 24
#define ENTRY_SIZE 64
#define TRAILER_SIZE 8

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = (v << 8) | p[i]; return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = (v << 8) | p[i]; return v; }

static int size_of(uint64_t np, uint64_t ne, uint64_t sl, uint64_t *total)
{
	*total = HDR_SIZE + np * (POINT_SIZE + MV_INDEX_WINDOW) + ne * ENTRY_SIZE + sl + TRAILER_SIZE;
	return 0;
}

int mv_layer_index_encode(const struct mv_layer_index *idx, void **bufp, size_t *lenp)
{
	uint64_t total;
	size_of(idx->n_points, idx->n_entries, idx->strings_len, &total);
	uint8_t *b = calloc(1, total), *p = b;
	if (!b)
		return -ENOMEM;
	memcpy(p, MAGIC, 8);
	put32(p + 8, VERSION);
	put32(p + 12, idx->flags);
	memcpy(p + 16, idx->blob.b, 32);
	put64(p + 48, idx->blob_size);
	put64(p + 56, idx->tar_size);
	put32(p + 64, idx->span);
	put32(p + 68, (uint32_t)idx->n_points);
	put32(p + 72, (uint32_t)idx->n_entries);
	put32(p + 76, (uint32_t)idx->strings_len);
	p += HDR_SIZE;
	for (size_t i = 0; i < idx->n_points; i++, p += POINT_SIZE) {
		put64(p, idx->points[i].in);
		put64(p + 8, idx->points[i].out);
		p[16] = idx->points[i].bits;
	}
	if (idx->n_points)   /* memcpy from NULL is undefined even for 0 bytes */
		memcpy(p, idx->windows, idx->n_points * MV_INDEX_WINDOW);
	p += idx->n_points * MV_INDEX_WINDOW;
	for (size_t i = 0; i < idx->n_entries; i++, p += ENTRY_SIZE) {
		const struct lx_entry *e = &idx->entries[i];
		put64(p, e->data_off);
		put64(p + 8, e->size);
		put64(p + 16, (uint64_t)e->mtime);
		put32(p + 24, e->mode);
		put32(p + 28, e->uid);
		put32(p + 32, e->gid);
		put32(p + 36, e->devmajor);
		put32(p + 40, e->devminor);
		put32(p + 44, e->path_off);
		put32(p + 48, e->path_len);
		put32(p + 52, e->link_off);
		put32(p + 56, e->link_len);
		p[60] = e->type;
	}
	if (idx->strings_len)
		memcpy(p, idx->strings, idx->strings_len);
	p += idx->strings_len;
	put32(p, (uint32_t)crc32(0, b, (uInt)(p - b)));
	memcpy(p + 4, END_MAGIC, 4);
	*bufp = b;
	*lenp = total;
	return 0;
}

static int check_str(const struct mv_layer_index *idx, uint32_t off, uint32_t len)
{
	return (uint64_t)off + len < idx->strings_len && idx->strings[off + len] == 0 &&
	       strlen(idx->strings + off) == len;
}

int mv_layer_index_decode(const void *buf, size_t len, struct mv_layer_index **out,
			  struct mv_error **err)
{
	const uint8_t *b = buf, *p;
	uint64_t total;
	int rc;
	*out = NULL;
	if (len < HDR_SIZE + TRAILER_SIZE || memcmp(b, MAGIC, 8))
		return mv_err(err, -EBADMSG, "layer index: bad magic or too short");
	if (get32(b + 8) != VERSION)
		return mv_err(err, -EPROTO, "layer index: version %u unsupported", get32(b + 8));
	uint32_t flags = get32(b + 12), span = get32(b + 64);
	uint64_t np = get32(b + 68), ne = get32(b + 72), sl = get32(b + 76);
	if (flags & ~LX_FLAG_GZIP)
		return mv_err(err, -EBADMSG, "layer index: unknown flags 0x%x", flags);
	for (int i = 80; i < HDR_SIZE; i++)
		if (b[i])
			return mv_err(err, -EBADMSG, "layer index: reserved header bytes set");
	if (np > LX_MAX_POINTS || ne > LX_MAX_ENTRIES || sl > LX_MAX_STRINGS || span < 4096)
		return mv_err(err, -EBADMSG, "layer index: counts out of range");
	size_of(np, ne, sl, &total);
	if (total != len)
		return mv_err(err, -EBADMSG, "layer index: %zu bytes, header says %llu", len,
			      (unsigned long long)total);
	if (memcmp(b + len - 4, END_MAGIC, 4) ||
	    get32(b + len - 8) != (uint32_t)crc32(0, b, (uInt)(len - 8)))
		return mv_err(err, -EBADMSG, "layer index: checksum or end marker mismatch");
	struct mv_layer_index *idx = calloc(1, sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	idx->flags = flags;
	idx->span = span;
	memcpy(idx->blob.b, b + 16, 32);
	idx->blob_size = get64(b + 48);
	idx->tar_size = get64(b + 56);
	idx->n_points = np;
	idx->n_entries = ne;
	idx->strings_len = sl;
	idx->points = calloc(np ? np : 1, sizeof(*idx->points));
	idx->windows = malloc(np ? np * MV_INDEX_WINDOW : 1);
	idx->entries = calloc(ne ? ne : 1, sizeof(*idx->entries));
	idx->strings = malloc(sl ? sl : 1);
	if (!idx->points || !idx->windows || !idx->entries || !idx->strings) {
		rc = -ENOMEM;
		goto fail;
	}
	if (idx->blob_size > MV_BLOB_MAX_SIZE || idx->tar_size > (MV_BLOB_MAX_SIZE << 4)) {
		rc = mv_err(err, -EBADMSG, "layer index: absurd blob or tar size");
		goto fail;
	}
	if ((flags & LX_FLAG_GZIP) ? np == 0 : np != 0) {
		rc = mv_err(err, -EBADMSG, "layer index: resume points do not match the flags");
		goto fail;
	}
	p = b + HDR_SIZE;
	for (size_t i = 0; i < np; i++, p += POINT_SIZE) {
		struct lx_point *pt = &idx->points[i];
		pt->in = get64(p);
		pt->out = get64(p + 8);
		pt->bits = p[16];
		for (int k = 17; k < POINT_SIZE; k++)
			if (p[k]) {
				rc = mv_err(err, -EBADMSG, "layer index: point %zu padding set", i);
				goto fail;
			}
		if (pt->bits > 7 || (pt->bits && pt->in == 0) || pt->in > idx->blob_size ||
		    pt->out > idx->tar_size ||
		    (i && (pt->out <= idx->points[i - 1].out || pt->in <= idx->points[i - 1].in)) ||
		    (i == 0 && pt->out != 0)) {
			rc = mv_err(err, -EBADMSG, "layer index: resume point %zu out of order or range", i);
			goto fail;
		}
	}
	if (np)
		memcpy(idx->windows, p, np * MV_INDEX_WINDOW);
	p += np * MV_INDEX_WINDOW;
	if (sl)
		memcpy(idx->strings, p + ne * ENTRY_SIZE, sl);
	if (sl && idx->strings[sl - 1]) {
		rc = mv_err(err, -EBADMSG, "layer index: string table not terminated");
		goto fail;
	}
	for (size_t i = 0; i < ne; i++, p += ENTRY_SIZE) {
		struct lx_entry *e = &idx->entries[i];
		e->data_off = get64(p);
		e->size = get64(p + 8);
		e->mtime = (int64_t)get64(p + 16);
		e->mode = get32(p + 24);
		e->uid = get32(p + 28);
		e->gid = get32(p + 32);
		e->devmajor = get32(p + 36);
		e->devminor = get32(p + 40);
		e->path_off = get32(p + 44);
		e->path_len = get32(p + 48);
		e->link_off = get32(p + 52);
		e->link_len = get32(p + 56);
		e->type = p[60];
		int bad = p[61] || p[62] || p[63] || e->type < MV_FT_REG || e->type > MV_FT_FIFO ||
			  e->mode > 07777 || e->size > MV_TAR_MAX_FILE ||
			  e->data_off > idx->tar_size || e->size > idx->tar_size - e->data_off ||
			  (e->type != MV_FT_REG && e->size) ||
			  !check_str(idx, e->path_off, e->path_len) ||
			  !check_str(idx, e->link_off, e->link_len) || e->path_len == 0 ||
			  e->path_len > MV_TAR_MAX_PATH || e->link_len > MV_TAR_MAX_PATH ||
			  ((e->type == MV_FT_SYMLINK || e->type == MV_FT_HARDLINK) ? !e->link_len : e->link_len);
		if (!bad) {
			/* Paths must already be in normal form: re-normalizing changes nothing. */
			char tmp[MV_TAR_MAX_PATH + 1];
			memcpy(tmp, idx->strings + e->path_off, e->path_len + 1);
			bad = mv_tar_normalize_path(tmp) < 0 || strcmp(tmp, idx->strings + e->path_off);
			if (!bad && e->type == MV_FT_HARDLINK) {
				memcpy(tmp, idx->strings + e->link_off, e->link_len + 1);
				bad = mv_tar_normalize_path(tmp) < 0 || strcmp(tmp, idx->strings + e->link_off);
			}
		}
		if (bad) {
			rc = mv_err(err, -EBADMSG, "layer index: entry %zu invalid", i);
			goto fail;
		}
	}
	if ((rc = lx_finalize(idx)) < 0)
		goto fail;
	*out = idx;
	return 0;
fail:
	mv_layer_index_free(idx);
	return rc;
}

int mv_layer_index_save(const struct mv_layer_index *idx, const char *path, struct mv_error **err)
{
	void *buf;
	size_t len;
	int rc = mv_layer_index_encode(idx, &buf, &len);
	if (rc < 0)
		return mv_err(err, rc, "encoding layer index");
	rc = mv_write_file_atomic(path, buf, len);
	free(buf);
	return rc < 0 ? mv_err(err, rc, "writing %s", path) : 0;
}

int mv_layer_index_load(const char *path, struct mv_layer_index **out, struct mv_error **err)
{
	void *buf;
	size_t len;
	int rc = mv_read_file(path, (size_t)1 << 34, &buf, &len);
	if (rc < 0)
		return mv_err(err, rc, "reading %s: %s", path, strerror(-rc));
	rc = mv_layer_index_decode(buf, len, out, err);
	free(buf);
	return rc;
}
