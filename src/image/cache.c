/* The host-wide shared cache (docs/formats/image-cache.md): a chunk store of
 * its own under <cache>/store plus an SQLite index <cache>/cache.db mapping
 * (layer blob digest, member data offset) to the member's 1 MiB chunks, so
 * any image that shares a layer hits it. mv_image_cache_prepopulate pulls an
 * image and streams each layer not yet cached once, cutting its regular
 * files into chunks; a layer's rows and its "done" row commit together after
 * its chunks are durable, so a crash leaves the cache as it was (plus
 * unreferenced chunks that gc sweeps) and a rerun fetches only what is
 * missing. Containers open it read-only (fusefs.c through mvc_cache_*). */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include "image_i.h"
#include "memvisor/util.h"

static const char schema[] =
	"PRAGMA journal_mode=DELETE;"   /* read-only openers need no -shm file */
	"PRAGMA synchronous=FULL;"
	"CREATE TABLE IF NOT EXISTS files(blob BLOB NOT NULL, data_off INTEGER NOT NULL, "
	"  size INTEGER NOT NULL, chunks BLOB NOT NULL, PRIMARY KEY(blob, data_off)) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS layers(blob BLOB PRIMARY KEY, files INTEGER NOT NULL, "
	"  bytes INTEGER NOT NULL) WITHOUT ROWID;";

struct mvc_cache {
	sqlite3 *db;
	sqlite3_stmt *get;
	struct mv_chunkstore *cs;
};

static int open_cache(const char *dir, int rw, struct mvc_cache **out, struct mv_error **err)
{
	char path[4096];
	struct mvc_cache *c = calloc(1, sizeof(*c));
	int rc;
	if (!c)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/cache.db", dir);
	if (rw && (rc = mv_mkdir_p(dir, 0755)) < 0) {
		rc = mv_err(err, rc, "cache: creating %s", dir);
		goto fail;
	}
	if (sqlite3_open_v2(path, &c->db, rw ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
					    : SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		rc = mv_err(err, rw ? -EIO : -ENOENT, "cache: opening %s: %s", path,
			    c->db ? sqlite3_errmsg(c->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(c->db, 10000);
	if (rw && sqlite3_exec(c->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
		rc = mv_err(err, -EIO, "cache: schema: %s", sqlite3_errmsg(c->db));
		goto fail;
	}
	if (sqlite3_prepare_v2(c->db, "SELECT size, chunks FROM files WHERE blob=?1 AND data_off=?2",
			       -1, &c->get, NULL) != SQLITE_OK) {
		rc = mv_err(err, -EIO, "cache: %s: %s", path, sqlite3_errmsg(c->db));
		goto fail;
	}
	snprintf(path, sizeof(path), "%s/store", dir);
	if ((rc = mv_chunkstore_open(path, &c->cs, err)) < 0)
		goto fail;
	*out = c;
	return 0;
fail:
	mvc_cache_close(c);
	return rc;
}

int mvc_cache_open_ro(const char *dir, struct mvc_cache **out, struct mv_error **err)
{
	return open_cache(dir, 0, out, err);
}

void mvc_cache_close(struct mvc_cache *c)
{
	if (!c)
		return;
	sqlite3_finalize(c->get);
	sqlite3_close(c->db);
	mv_chunkstore_close(c->cs);
	free(c);
}

struct mv_chunkstore *mvc_cache_store(struct mvc_cache *c) { return c->cs; }

int mvc_cache_lookup(struct mvc_cache *c, const struct mv_digest *blob, uint64_t off, uint64_t size,
		     struct mv_digest **d, size_t *n)
{
	sqlite3_stmt *s = c->get;
	sqlite3_reset(s);
	sqlite3_bind_blob(s, 1, blob->b, MV_DIGEST_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (int64_t)off);
	int rc = -ENOENT, r = sqlite3_step(s);
	if (r == SQLITE_ROW) {
		int len = sqlite3_column_bytes(s, 1);
		uint64_t want = (size + MV_MAPPING_CHUNK - 1) / MV_MAPPING_CHUNK;
		if (sqlite3_column_int64(s, 0) != (int64_t)size || len < 0 || len % MV_DIGEST_LEN ||
		    (uint64_t)len / MV_DIGEST_LEN != want) {
			rc = -EBADMSG;
		} else if (!(*d = malloc(len ? (size_t)len : 1))) {
			rc = -ENOMEM;
		} else {
			if (len)
				memcpy(*d, sqlite3_column_blob(s, 1), (size_t)len);
			*n = (size_t)want;
			rc = 0;
		}
	} else if (r != SQLITE_DONE) {
		rc = -EIO;
	}
	sqlite3_reset(s);
	return rc;
}

/* ---- prepopulating ---- */

struct file {
	uint64_t off, size;
};

struct cutter {
	struct mvc_cache *c;
	mv_image_progress_cb cb;
	void *cb_ctx;
	struct mv_image_progress *pr;
	uint64_t reported;
	sqlite3_stmt *ins;
	const struct mv_digest *blob;
	struct file *files;   /* regular members with data, by data_off */
	size_t n_files, cur;
	uint64_t pos;         /* uncompressed offset of the next byte */
	uint8_t *chunk;       /* the current file's chunk being filled */
	size_t chunk_len;
	struct mv_digest *digests;   /* the current file's chunks so far */
	size_t n_digests;
	int gzip, z_end;
	z_stream zs;
	struct mv_sha256 *h;
	uint64_t files_done, bytes_done;
	struct mv_error **err;
};

static int cmp_file(const void *a, const void *b)
{
	const struct file *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

static int flush_chunk(struct cutter *t)
{
	int rc = mv_chunkstore_put(t->c->cs, t->chunk, t->chunk_len, &t->digests[t->n_digests], t->err);
	if (rc < 0)
		return rc;
	t->n_digests++;
	t->chunk_len = 0;
	return 0;
}

static int file_done(struct cutter *t)
{
	const struct file *f = &t->files[t->cur];
	sqlite3_stmt *s = t->ins;
	sqlite3_reset(s);
	sqlite3_bind_blob(s, 1, t->blob->b, MV_DIGEST_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (int64_t)f->off);
	sqlite3_bind_int64(s, 3, (int64_t)f->size);
	sqlite3_bind_blob(s, 4, t->digests, (int)(t->n_digests * MV_DIGEST_LEN), SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE)
		return mv_err(t->err, -EIO, "cache: insert: %s", sqlite3_errmsg(t->c->db));
	t->files_done++;
	t->bytes_done += f->size;
	t->n_digests = 0;
	t->cur++;
	return 0;
}

/* Uncompressed tar bytes [pos, pos+len): the parts inside regular files go
 * into their chunks. */
static int cut(struct cutter *t, const uint8_t *d, size_t len)
{
	uint64_t end = t->pos + len;
	while (t->cur < t->n_files && t->files[t->cur].off < end) {
		const struct file *f = &t->files[t->cur];
		uint64_t fend = f->off + f->size;
		if (fend <= t->pos)
			return mv_err(t->err, -EBADMSG, "cache: layer index and layer disagree");
		uint64_t from = f->off > t->pos ? f->off : t->pos, to = fend < end ? fend : end;
		while (from < to) {
			size_t room = MV_MAPPING_CHUNK - t->chunk_len;
			size_t n = to - from < room ? (size_t)(to - from) : room;
			memcpy(t->chunk + t->chunk_len, d + (from - t->pos), n);
			t->chunk_len += n;
			from += n;
			int rc;
			if ((t->chunk_len == MV_MAPPING_CHUNK || from == fend) && (rc = flush_chunk(t)) < 0)
				return rc;
		}
		if (to < fend)
			break;   /* the file continues in the next piece */
		int rc = file_done(t);
		if (rc < 0)
			return rc;
	}
	t->pos = end;
	return 0;
}

static int cut_sink(void *ctx, const void *data, size_t len)
{
	struct cutter *t = ctx;
	uint8_t out[65536];
	int rc;
	mv_sha256_update(t->h, data, len);
	t->pr->done_bytes += len;
	if (t->cb && t->pr->done_bytes - t->reported >= (4u << 20)) {
		t->reported = t->pr->done_bytes;
		t->cb(t->cb_ctx, t->pr);
	}
	if (!t->gzip)
		return cut(t, data, len);
	t->zs.next_in = (Bytef *)(uintptr_t)data;
	t->zs.avail_in = (uInt)len;
	/* Also loops while output filled the buffer: inflate may hold more. */
	for (int full = 0; t->zs.avail_in || full;) {
		if (t->z_end) {
			if (!t->zs.avail_in)
				break;
			if (inflateReset(&t->zs) != Z_OK)
				return -EIO;
			t->z_end = 0;
		}
		t->zs.next_out = out;
		t->zs.avail_out = sizeof(out);
		int zr = inflate(&t->zs, Z_NO_FLUSH);
		if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
			return mv_err(t->err, -EBADMSG, "cache: corrupt gzip layer");
		full = t->zs.avail_out == 0;
		if ((rc = cut(t, out, sizeof(out) - t->zs.avail_out)) < 0)
			return rc;
		if (zr == Z_STREAM_END)
			t->z_end = 1;
		else if (zr == Z_BUF_ERROR && !full)
			break;
	}
	return 0;
}

/* Streams one layer into the cache in one transaction. */
static int cache_layer(struct mvc_cache *c, struct mv_registry *r, const struct mv_layer_index *idx,
		       struct mv_image_progress *pr, mv_image_progress_cb cb, void *ctx,
		       struct mv_image_cache_stats *st, struct mv_error **err)
{
	struct cutter t = { .c = c, .blob = mv_layer_index_blob_digest(idx), .err = err,
			    .cb = cb, .cb_ctx = ctx, .pr = pr, .reported = pr->done_bytes };
	size_t n = mv_layer_index_count(idx);
	int rc = -ENOMEM;
	t.files = calloc(n ? n : 1, sizeof(*t.files));
	t.chunk = malloc(MV_MAPPING_CHUNK);
	if (!t.files || !t.chunk)
		goto out;
	uint64_t max_chunks = 0;
	for (size_t i = 0; i < n; i++) {
		struct mv_tar_entry e;
		mv_layer_index_entry(idx, i, &e);
		if (e.type == MV_FT_REG && e.size) {
			t.files[t.n_files++] = (struct file){ e.data_off, e.size };
			uint64_t k = (e.size + MV_MAPPING_CHUNK - 1) / MV_MAPPING_CHUNK;
			max_chunks = k > max_chunks ? k : max_chunks;
		}
	}
	if (!(t.digests = malloc((max_chunks ? max_chunks : 1) * sizeof(*t.digests))))
		goto out;
	qsort(t.files, t.n_files, sizeof(*t.files), cmp_file);
	for (size_t i = 1; i < t.n_files; i++)
		if (t.files[i].off < t.files[i - 1].off + t.files[i - 1].size) {
			rc = mv_err(err, -EBADMSG, "cache: overlapping members in the layer index");
			goto out;
		}
	if (sqlite3_prepare_v2(c->db, "INSERT OR REPLACE INTO files(blob, data_off, size, chunks) "
			       "VALUES (?1, ?2, ?3, ?4)", -1, &t.ins, NULL) != SQLITE_OK ||
	    sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		rc = mv_err(err, -EIO, "cache: %s", sqlite3_errmsg(c->db));
		goto out;
	}
	t.h = mv_sha256_new();
	t.gzip = mv_layer_index_points(idx) > 0;
	if (t.gzip && inflateInit2(&t.zs, 47) != Z_OK) {
		rc = -ENOMEM;
		goto rollback;
	}
	uint64_t b0 = mv_registry_bytes_received(r);
	rc = mv_registry_read_blob(r, t.blob, 0, 0, cut_sink, &t, err);
	st->registry_bytes += mv_registry_bytes_received(r) - b0;
	if (t.gzip)
		inflateEnd(&t.zs);
	struct mv_digest got;
	mv_sha256_final(t.h, &got);
	t.h = NULL;
	if (!rc && (!mv_digest_equal(&got, t.blob) || (t.gzip && !t.z_end) || t.cur != t.n_files))
		rc = mv_err(err, -EBADMSG, "cache: layer does not match its digest or index");
	if (rc < 0)
		goto rollback;
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(c->db, "INSERT OR REPLACE INTO layers(blob, files, bytes) VALUES "
			       "(?1, ?2, ?3)", -1, &s, NULL) != SQLITE_OK) {
		rc = mv_err(err, -EIO, "cache: %s", sqlite3_errmsg(c->db));
		goto rollback;
	}
	sqlite3_bind_blob(s, 1, t.blob->b, MV_DIGEST_LEN, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (int64_t)t.files_done);
	sqlite3_bind_int64(s, 3, (int64_t)t.bytes_done);
	rc = sqlite3_step(s) == SQLITE_DONE ? 0 : -EIO;
	sqlite3_finalize(s);
	if (!rc && sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		rc = -EIO;
	if (rc < 0) {
		mv_err(err, rc, "cache: commit: %s", sqlite3_errmsg(c->db));
		goto rollback;
	}
	goto out;
rollback:
	sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
out:
	mv_sha256_free(t.h);
	sqlite3_finalize(t.ins);
	free(t.files);
	free(t.chunk);
	free(t.digests);
	return rc;
}

/* The "cache" reference set: every chunk any row names. */
static int cache_refs(struct mvc_cache *c, struct mv_error **err)
{
	sqlite3_stmt *s;
	struct mv_digest *v = NULL;
	size_t k = 0, cap = 0;
	int rc = 0;
	if (sqlite3_prepare_v2(c->db, "SELECT chunks FROM files", -1, &s, NULL) != SQLITE_OK)
		return mv_err(err, -EIO, "cache: %s", sqlite3_errmsg(c->db));
	while (!rc && sqlite3_step(s) == SQLITE_ROW) {
		size_t n = (size_t)sqlite3_column_bytes(s, 0) / MV_DIGEST_LEN;
		if (k + n > cap) {
			cap = (k + n) * 2;
			struct mv_digest *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
		}
		if (n)
			memcpy(v + k, sqlite3_column_blob(s, 0), n * MV_DIGEST_LEN);
		k += n;
	}
	sqlite3_finalize(s);
	if (!rc)
		rc = mv_chunkstore_ref_set(c->cs, "cache", v, k, err);
	free(v);
	return rc;
}

static int layer_cached(struct mvc_cache *c, const struct mv_digest *blob, uint64_t *files,
			uint64_t *bytes)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(c->db, "SELECT files, bytes FROM layers WHERE blob=?1", -1, &s,
			       NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_blob(s, 1, blob->b, MV_DIGEST_LEN, SQLITE_STATIC);
	int yes = sqlite3_step(s) == SQLITE_ROW;
	if (yes) {
		*files += (uint64_t)sqlite3_column_int64(s, 0);
		*bytes += (uint64_t)sqlite3_column_int64(s, 1);
	}
	sqlite3_finalize(s);
	return yes;
}

int mv_image_cache_prepopulate(const struct mv_image_paths *p, const char *ref,
			       mv_image_progress_cb cb, void *ctx,
			       struct mv_image_cache_stats *out, struct mv_error **err)
{
	struct mv_image_info info;
	struct mv_image_ref r;
	struct mvc_cache *c = NULL;
	struct mv_registry *reg = NULL;
	struct mv_mapping *map = NULL;
	struct mv_digest *blobs = NULL;
	size_t n = 0;
	int64_t id;
	char url[512];
	memset(out, 0, sizeof(*out));
	if (mvp_check_paths(p, err) < 0)
		return -EINVAL;
	if (!p->cache_dir || !p->cache_dir[0])
		return mv_err_field(err, -EINVAL, "cache_dir", "no cache directory configured");
	int rc = mv_image_pull(p, ref, cb, ctx, &info, err);
	if (rc < 0)
		return rc;
	out->registry_bytes = info.registry_bytes;
	char idxdir[4096];
	snprintf(idxdir, sizeof(idxdir), "%s/indexes", p->cache_dir);
	if ((rc = mv_image_ref_parse(ref, &r, err)) < 0 ||
	    (rc = open_cache(p->cache_dir, 1, &c, err)) < 0 ||
	    (rc = mv_mkdir_p(idxdir, 0755)) < 0 ||
	    (rc = mv_mapping_open(p->mapping_db, &map, err)) < 0 ||
	    (rc = mv_mapping_find_image(map, info.name, &id)) < 0 ||
	    (rc = mv_mapping_image_layers(map, id, &blobs, &n, err)) < 0)
		goto out;
	mv_image_ref_url(&r, p->insecure, url, sizeof(url));
	if ((rc = mv_registry_open(url, r.repo, &reg, err)) < 0)
		goto out;
	struct mv_image_progress pr = { .phase = "fetch", .layers = (unsigned)n };
	for (size_t i = 0; i < n; i++) {   /* what is left to fetch, for the progress bar */
		uint64_t f = 0, b = 0;
		char path[4096], hex[MV_DIGEST_STRLEN];
		struct mv_layer_index *x;
		snprintf(path, sizeof(path), "%s/indexes/%s.idx", p->store_dir,
			 mv_digest_format(&blobs[i], hex) + 7);
		if (!layer_cached(c, &blobs[i], &f, &b) && mv_layer_index_load(path, &x, NULL) == 0) {
			pr.total_bytes += mv_layer_index_blob_size(x);
			mv_layer_index_free(x);
		}
	}
	for (size_t i = 0; i < n && !rc; i++) {
		pr.layer = (unsigned)i;
		if (cb)
			cb(ctx, &pr);
		struct mv_layer_index *idx;
		char path[4096], hex[MV_DIGEST_STRLEN];
		snprintf(path, sizeof(path), "%s/indexes/%s.idx", p->store_dir,
			 mv_digest_format(&blobs[i], hex) + 7);
		if ((rc = mv_layer_index_load(path, &idx, err)) < 0)
			break;
		if (!mv_digest_equal(mv_layer_index_blob_digest(idx), &blobs[i]))
			rc = mv_err(err, -EBADMSG, "%s describes another blob", path);
		else if (!layer_cached(c, &blobs[i], &out->files, &out->bytes) &&
			 !(rc = cache_layer(c, reg, idx, &pr, cb, ctx, out, err)) &&
			 !layer_cached(c, &blobs[i], &out->files, &out->bytes))
			rc = mv_err(err, -EIO, "cache: layer %zu not recorded", i);
		/* Its index too, so a host's first pull needs no registry for it. */
		snprintf(path, sizeof(path), "%s/indexes/%s.idx", p->cache_dir, hex + 7);
		if (!rc && access(path, F_OK) < 0 && (rc = mv_layer_index_save(idx, path, err)) < 0)
			mv_err(err, rc, "cache: saving %s", path);
		mv_layer_index_free(idx);
	}
	if (!rc)
		rc = cache_refs(c, err);
	if (!rc && cb) {
		pr.phase = "done";
		cb(ctx, &pr);
	}
out:
	free(blobs);
	mv_registry_close(reg);
	mv_mapping_close(map);
	mvc_cache_close(c);
	return rc;
}
