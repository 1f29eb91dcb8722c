/* Per-container mapping tables in SQLite: an image's rows (the merged tree of
 * its layers: attributes plus where each file's bytes are) shared by all its
 * containers, and each container's own rows (copy-ups, new files, deletion
 * markers) that shadow them. Rows are keyed (image, ctr, parent, name) so a
 * lookup is one index probe and a readdir one index range; a second index on
 * ino serves getattr (named in the queries: without statistics the planner
 * would rather scan the primary key). Used by src/image/fusefs.c and the image tests.
 * Building and dropping an image's rows: mapping_build.c. */
#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mapping_i.h"

#define CTR_INO_BASE (1ull << 40)   /* container-created inodes start here */

#define COLS "ino, parent, name, deleted, type, mode, uid, gid, nlink, rdev, size, mtime, " \
	     "link, hardlink, layer, data_off, chunks IS NOT NULL, upper, ctr"

static const char *const sql_text[S_COUNT] = {
	[S_LOOKUP] = "SELECT " COLS " FROM nodes WHERE image=?1 AND ctr IN (0, ?2) AND parent=?3 "
		     "AND name=?4 ORDER BY ctr DESC LIMIT 1",
	[S_GET] = "SELECT " COLS " FROM nodes INDEXED BY nodes_ino WHERE image=?1 AND ctr IN (0, ?2) AND ino=?3 "
		  "AND deleted=0 ORDER BY ctr DESC LIMIT 1",
	[S_READDIR] = "SELECT name, ino, type FROM nodes WHERE image=?1 AND ctr=?2 AND ?2<>0 "
		      "AND parent=?3 AND deleted=0 UNION ALL SELECT name, ino, type FROM nodes n "
		      "WHERE image=?1 AND ctr=0 AND parent=?3 AND (?2=0 OR NOT EXISTS (SELECT 1 "
		      "FROM nodes c WHERE c.image=?1 AND c.ctr=?2 AND c.parent=?3 AND "
		      "c.name=n.name)) ORDER BY 1",
	[S_CHUNKS] = "SELECT chunks, size FROM nodes INDEXED BY nodes_ino WHERE image=?1 AND ctr IN (0, ?2) AND ino=?3 "
		     "AND deleted=0 AND chunks IS NOT NULL ORDER BY ctr DESC LIMIT 1",
	[S_SETCHUNKS] = "UPDATE nodes INDEXED BY nodes_ino SET chunks=?4 WHERE image=?1 AND ctr IN (0, ?2) AND ino=?3 "
			"AND deleted=0 AND upper=0",
	[S_CTRCHUNK] = "INSERT OR IGNORE INTO ctr_chunks(ctr, digest) VALUES (?1, ?2)",
	[S_PUT] = "INSERT OR REPLACE INTO nodes(image, ctr, parent, name, ino, deleted, type, mode, "
		  "uid, gid, nlink, rdev, size, mtime, link, hardlink, layer, data_off, chunks, "
		  "upper) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
		  "?15, ?16, ?17, (SELECT chunks FROM nodes INDEXED BY nodes_ino WHERE image=?1 AND ctr IN (0, ?2) AND "
		  "ino=?5 AND chunks IS NOT NULL AND ?18=0 LIMIT 1), ?18)",
	[S_DEL] = "DELETE FROM nodes WHERE image=?1 AND ctr=?2 AND parent=?3 AND name=?4",
	[S_IMGROW] = "SELECT 1 FROM nodes WHERE image=?1 AND ctr=0 AND parent=?2 AND name=?3",
	[S_MARK] = "INSERT OR REPLACE INTO nodes(image, ctr, parent, name, ino, deleted, type, mode, "
		   "uid, gid, nlink, rdev, size, mtime, link, hardlink, layer, data_off, upper) "
		   "VALUES (?1, ?2, ?3, ?4, NULL, 1, 0, 0, 0, 0, 0, 0, 0, 0, '', '', -1, 0, 0)",
	[S_NEWINO] = "UPDATE containers SET next_ino=next_ino+1 WHERE id=?1 RETURNING next_ino-1",
};

static const char schema[] =
	"PRAGMA journal_mode=WAL;"
	"PRAGMA synchronous=NORMAL;"
	"CREATE TABLE IF NOT EXISTS images(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
	"CREATE TABLE IF NOT EXISTS layers(image INTEGER NOT NULL, pos INTEGER NOT NULL, "
	"  blob BLOB NOT NULL, PRIMARY KEY(image, pos)) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS containers(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
	"  image INTEGER NOT NULL, next_ino INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS nodes(image INTEGER NOT NULL, ctr INTEGER NOT NULL, "
	"  parent INTEGER NOT NULL, name TEXT NOT NULL, ino INTEGER, deleted INTEGER NOT NULL, "
	"  type INTEGER NOT NULL, mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL, "
	"  nlink INTEGER NOT NULL, rdev INTEGER NOT NULL, size INTEGER NOT NULL, "
	"  mtime INTEGER NOT NULL, link TEXT NOT NULL, hardlink TEXT NOT NULL, "
	"  layer INTEGER NOT NULL, data_off INTEGER NOT NULL, chunks BLOB, upper INTEGER NOT NULL, "
	"  PRIMARY KEY(image, ctr, parent, name)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS nodes_ino ON nodes(image, ctr, ino);"
	"CREATE TABLE IF NOT EXISTS ctr_chunks(ctr INTEGER NOT NULL, digest BLOB NOT NULL, "
	"  PRIMARY KEY(ctr, digest)) WITHOUT ROWID;";

int mapping_db_err(struct mv_mapping *m, struct mv_error **err, const char *what)
{
	int code = sqlite3_errcode(m->db);
	int rc = code == SQLITE_BUSY || code == SQLITE_LOCKED ? -EBUSY :
		 code == SQLITE_FULL ? -ENOSPC : code == SQLITE_NOMEM ? -ENOMEM : -EIO;
	return mv_err(err, rc, "mapping: %s: %s", what, sqlite3_errmsg(m->db));
}

static sqlite3_stmt *stmt(struct mv_mapping *m, int which)
{
	if (!m->st[which] &&
	    sqlite3_prepare_v3(m->db, sql_text[which], -1, SQLITE_PREPARE_PERSISTENT,
			       &m->st[which], NULL) != SQLITE_OK)
		return NULL;
	sqlite3_reset(m->st[which]);
	sqlite3_clear_bindings(m->st[which]);
	return m->st[which];
}

int mapping_exec(struct mv_mapping *m, const char *sql, struct mv_error **err)
{
	return sqlite3_exec(m->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : mapping_db_err(m, err, sql);
}

int mv_mapping_open(const char *path, struct mv_mapping **out, struct mv_error **err)
{
	struct mv_mapping *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->image_of_ctr_id = -1;
	int rc;
	if (sqlite3_open_v2(path, &m->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		rc = mv_err(err, -EIO, "mapping: opening %s: %s", path,
			    m->db ? sqlite3_errmsg(m->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(m->db, 10000);
	if ((rc = mapping_exec(m, schema, err)) < 0)
		goto fail;
	*out = m;
	return 0;
fail:
	mv_mapping_close(m);
	return rc;
}

void mv_mapping_close(struct mv_mapping *m)
{
	if (!m)
		return;
	for (int i = 0; i < S_COUNT; i++)
		sqlite3_finalize(m->st[i]);
	sqlite3_close(m->db);
	free(m);
}

/* The image a container belongs to (cached: containers never move). */
static int image_of(struct mv_mapping *m, int64_t ctr, int64_t *image)
{
	if (ctr == m->image_of_ctr_id) {
		*image = m->image_of_ctr;
		return 0;
	}
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(m->db, "SELECT image FROM containers WHERE id=?1", -1, &s, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_int64(s, 1, ctr);
	int rc = sqlite3_step(s) == SQLITE_ROW ? 0 : -ENOENT;
	if (!rc) {
		*image = sqlite3_column_int64(s, 0);
		m->image_of_ctr_id = ctr;
		m->image_of_ctr = *image;
	}
	sqlite3_finalize(s);
	return rc;
}

int mv_mapping_image_layers(struct mv_mapping *m, int64_t image_id, struct mv_digest **blobs,
			    size_t *n, struct mv_error **err)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(m->db, "SELECT pos, blob FROM layers WHERE image=?1 ORDER BY pos",
			       -1, &s, NULL) != SQLITE_OK)
		return mapping_db_err(m, err, "layers");
	sqlite3_bind_int64(s, 1, image_id);
	struct mv_digest *d = calloc(MV_MANIFEST_MAX_LAYERS, sizeof(*d));
	size_t k = 0;
	int rc = 0, r;
	while (d && (r = sqlite3_step(s)) == SQLITE_ROW) {
		if (k >= MV_MANIFEST_MAX_LAYERS || sqlite3_column_int64(s, 0) != (int64_t)k ||
		    sqlite3_column_bytes(s, 1) != MV_DIGEST_LEN) {
			rc = mv_err(err, -EBADMSG, "mapping: bad layer row %zu", k);
			break;
		}
		memcpy(d[k++].b, sqlite3_column_blob(s, 1), MV_DIGEST_LEN);
	}
	sqlite3_finalize(s);
	if (!d)
		return -ENOMEM;
	if (rc < 0) {
		free(d);
		return rc;
	}
	*blobs = d;
	*n = k;
	return 0;
}

int mv_mapping_add_container(struct mv_mapping *m, int64_t image_id, const char *name,
			     int64_t *ctr_id, struct mv_error **err)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(m->db, "INSERT INTO containers(name, image, next_ino) VALUES (?1, ?2, ?3) "
			       "ON CONFLICT(name) DO UPDATE SET name=name RETURNING id, image",
			       -1, &s, NULL) != SQLITE_OK)
		return mapping_db_err(m, err, "container");
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, image_id);
	sqlite3_bind_int64(s, 3, (int64_t)CTR_INO_BASE);
	int rc = 0;
	if (sqlite3_step(s) != SQLITE_ROW)
		rc = mapping_db_err(m, err, "container");
	else if (sqlite3_column_int64(s, 1) != image_id)
		rc = mv_err(err, -EEXIST, "mapping: container %s belongs to another image", name);
	else
		*ctr_id = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return rc;
}

int mv_mapping_drop_container(struct mv_mapping *m, int64_t ctr_id, struct mv_error **err)
{
	char sql[256];
	snprintf(sql, sizeof(sql), "BEGIN; DELETE FROM nodes WHERE ctr=%lld; DELETE FROM ctr_chunks "
		 "WHERE ctr=%lld; DELETE FROM containers WHERE id=%lld; COMMIT;",
		 (long long)ctr_id, (long long)ctr_id, (long long)ctr_id);
	m->image_of_ctr_id = -1;
	int rc = mapping_exec(m, sql, err);
	if (rc < 0)
		sqlite3_exec(m->db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

/* ---- queries ---- */

static int copy_text(char *dst, size_t cap, sqlite3_stmt *s, int col)
{
	const unsigned char *t = sqlite3_column_text(s, col);
	int len = sqlite3_column_bytes(s, col);
	if (!t || len < 0 || (size_t)len >= cap || memchr(t, 0, (size_t)len))
		return -EBADMSG;
	memcpy(dst, t, (size_t)len);
	dst[len] = 0;
	return 0;
}

/* Decodes and validates one row (columns COLS). -ENOENT for a deletion. */
static int read_row(sqlite3_stmt *s, struct mv_map_node *n)
{
	if (sqlite3_column_int64(s, 3))
		return -ENOENT;
	int64_t ino = sqlite3_column_int64(s, 0), parent = sqlite3_column_int64(s, 1);
	int64_t type = sqlite3_column_int64(s, 4), mode = sqlite3_column_int64(s, 5);
	int64_t uid = sqlite3_column_int64(s, 6), gid = sqlite3_column_int64(s, 7);
	int64_t nlink = sqlite3_column_int64(s, 8), rdev = sqlite3_column_int64(s, 9);
	int64_t size = sqlite3_column_int64(s, 10), layer = sqlite3_column_int64(s, 14);
	int64_t off = sqlite3_column_int64(s, 15), upper = sqlite3_column_int64(s, 17);
	if (ino <= 0 || parent < 0 || (type < MV_FT_REG || type > MV_FT_FIFO || type == MV_FT_HARDLINK) ||
	    mode < 0 || mode > 07777 || uid < 0 || uid > UINT32_MAX || gid < 0 || gid > UINT32_MAX ||
	    nlink < 1 || nlink > UINT32_MAX || rdev < 0 || size < 0 || (uint64_t)size > MV_TAR_MAX_FILE ||
	    layer < -1 || layer >= MV_MANIFEST_MAX_LAYERS || off < 0 || (upper != 0 && upper != 1) ||
	    (type != MV_FT_REG && (size || upper || layer != -1)) ||
	    (type == MV_FT_REG && !upper && layer < 0 && size && !sqlite3_column_int(s, 16)))
		return -EBADMSG;
	if (copy_text(n->name, sizeof(n->name), s, 2) < 0 || copy_text(n->link, sizeof(n->link), s, 12) < 0 ||
	    copy_text(n->hardlink, sizeof(n->hardlink), s, 13) < 0 || strchr(n->name, '/') ||
	    (!n->name[0] && ino != MV_MAPPING_ROOT) || (n->name[0] && !parent) ||
	    (type == MV_FT_SYMLINK && !n->link[0]))
		return -EBADMSG;
	n->ino = (uint64_t)ino;
	n->parent = (uint64_t)parent;
	n->type = (enum mv_file_type)type;
	n->mode = (uint32_t)mode;
	n->uid = (uint32_t)uid;
	n->gid = (uint32_t)gid;
	n->nlink = (uint32_t)nlink;
	n->devmajor = (uint32_t)(rdev >> 32);
	n->devminor = (uint32_t)rdev;
	n->size = (uint64_t)size;
	n->mtime = sqlite3_column_int64(s, 11);
	n->layer = (int)layer;
	n->data_off = (uint64_t)off;
	n->has_chunks = sqlite3_column_int(s, 16) != 0;
	n->upper = (int)upper;
	n->owner = sqlite3_column_int64(s, 18);
	return 0;
}

static int node_query(struct mv_mapping *m, int which, int64_t ctr, uint64_t key,
		      const char *name, struct mv_map_node *out)
{
	int64_t image;
	int rc;
	if ((rc = image_of(m, ctr, &image)) < 0)
		return rc;
	sqlite3_stmt *s = stmt(m, which);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, image);
	sqlite3_bind_int64(s, 2, ctr);
	sqlite3_bind_int64(s, 3, (int64_t)key);
	if (name)
		sqlite3_bind_text(s, 4, name, -1, SQLITE_STATIC);
	int r = sqlite3_step(s);
	rc = r == SQLITE_ROW ? read_row(s, out) : r == SQLITE_DONE ? -ENOENT : -EIO;
	sqlite3_reset(s);
	return rc;
}

int mv_mapping_lookup(struct mv_mapping *m, int64_t ctr, uint64_t parent, const char *name,
		      struct mv_map_node *out)
{
	return node_query(m, S_LOOKUP, ctr, parent, name, out);
}

int mv_mapping_get(struct mv_mapping *m, int64_t ctr, uint64_t ino, struct mv_map_node *out)
{
	return node_query(m, S_GET, ctr, ino, NULL, out);
}

int mv_mapping_readdir(struct mv_mapping *m, int64_t ctr, uint64_t parent,
		       struct mv_map_dirent **ents, size_t *n)
{
	int64_t image;
	if (image_of(m, ctr, &image) < 0)
		return -ENOENT;
	sqlite3_stmt *s = stmt(m, S_READDIR);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, image);
	sqlite3_bind_int64(s, 2, ctr);
	sqlite3_bind_int64(s, 3, (int64_t)parent);
	struct mv_map_dirent *v = NULL;
	size_t k = 0, cap = 0;
	int rc = 0, r;
	while ((r = sqlite3_step(s)) == SQLITE_ROW) {
		if (k == cap) {
			cap = cap ? cap * 2 : 16;
			struct mv_map_dirent *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
		}
		int64_t ino = sqlite3_column_int64(s, 1), type = sqlite3_column_int64(s, 2);
		if (copy_text(v[k].name, sizeof(v[k].name), s, 0) < 0 || !v[k].name[0] ||
		    strchr(v[k].name, '/') || ino <= 0 || type < MV_FT_REG || type > MV_FT_FIFO) {
			rc = -EBADMSG;
			break;
		}
		v[k].ino = (uint64_t)ino;
		v[k].type = (enum mv_file_type)type;
		k++;
	}
	if (!rc && r != SQLITE_DONE)
		rc = -EIO;
	sqlite3_reset(s);
	if (rc < 0) {
		free(v);
		return rc;
	}
	*ents = v;
	*n = k;
	return 0;
}

int mv_mapping_chunks(struct mv_mapping *m, int64_t ctr, uint64_t ino, struct mv_digest **d, size_t *n)
{
	int64_t image;
	if (image_of(m, ctr, &image) < 0)
		return -ENOENT;
	sqlite3_stmt *s = stmt(m, S_CHUNKS);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, image);
	sqlite3_bind_int64(s, 2, ctr);
	sqlite3_bind_int64(s, 3, (int64_t)ino);
	int rc = -ENOENT;
	if (sqlite3_step(s) == SQLITE_ROW) {
		int len = sqlite3_column_bytes(s, 0);
		int64_t size = sqlite3_column_int64(s, 1);
		uint64_t want = size > 0 ? ((uint64_t)size + MV_MAPPING_CHUNK - 1) / MV_MAPPING_CHUNK : 0;
		if (len < 0 || len % MV_DIGEST_LEN || (uint64_t)len / MV_DIGEST_LEN != want) {
			rc = -EBADMSG;
		} else if (!(*d = malloc(len ? (size_t)len : 1))) {
			rc = -ENOMEM;
		} else {
			if (len)
				memcpy(*d, sqlite3_column_blob(s, 0), (size_t)len);
			*n = (size_t)len / MV_DIGEST_LEN;
			rc = 0;
		}
	}
	sqlite3_reset(s);
	return rc;
}

int mv_mapping_set_chunks(struct mv_mapping *m, int64_t ctr, uint64_t ino,
			  const struct mv_digest *d, size_t n)
{
	int64_t image;
	if (image_of(m, ctr, &image) < 0)
		return -ENOENT;
	static const uint8_t none;
	int rc = sqlite3_exec(m->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK ? 0 : -EBUSY;
	if (rc < 0)
		return rc;
	static const struct mv_digest zero;
	/* Chunks another container recorded meanwhile are kept, not zeroed. */
	struct mv_digest *cur = NULL, *merged = NULL;
	size_t k = 0;
	if (n && mv_mapping_chunks(m, ctr, ino, &cur, &k) == 0 && k == n &&
	    (merged = malloc(n * sizeof(*merged)))) {
		for (size_t i = 0; i < n; i++)
			merged[i] = mv_digest_equal(&d[i], &zero) ? cur[i] : d[i];
	}
	free(cur);
	sqlite3_stmt *s = stmt(m, S_SETCHUNKS);
	if (!s) {
		free(merged);
		goto fail;
	}
	sqlite3_bind_int64(s, 1, image);
	sqlite3_bind_int64(s, 2, ctr);
	sqlite3_bind_int64(s, 3, (int64_t)ino);
	sqlite3_bind_blob(s, 4, n ? (const void *)(merged ? merged : d) : &none,
			  (int)(n * MV_DIGEST_LEN), SQLITE_STATIC);
	int r = sqlite3_step(s);
	sqlite3_reset(s);
	free(merged);
	if (r != SQLITE_DONE)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		if (mv_digest_equal(&d[i], &zero))
			continue;   /* a chunk not fetched yet */
		if (!(s = stmt(m, S_CTRCHUNK)))
			goto fail;
		sqlite3_bind_int64(s, 1, ctr);
		sqlite3_bind_blob(s, 2, d[i].b, MV_DIGEST_LEN, SQLITE_STATIC);
		if (sqlite3_step(s) != SQLITE_DONE)
			goto fail;
		sqlite3_reset(s);
	}
	return sqlite3_exec(m->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
fail:
	if (s)
		sqlite3_reset(s);
	sqlite3_exec(m->db, "ROLLBACK", NULL, NULL, NULL);
	return -EIO;
}

int mv_mapping_ctr_chunks(struct mv_mapping *m, int64_t ctr, struct mv_digest **d, size_t *n)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(m->db, "SELECT digest FROM ctr_chunks WHERE ctr=?1", -1, &s, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_int64(s, 1, ctr);
	struct mv_digest *v = NULL;
	size_t k = 0, cap = 0;
	int rc = 0;
	while (sqlite3_step(s) == SQLITE_ROW) {
		if (sqlite3_column_bytes(s, 0) != MV_DIGEST_LEN) {
			rc = -EBADMSG;
			break;
		}
		if (k == cap) {
			cap = cap ? cap * 2 : 64;
			struct mv_digest *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
		}
		memcpy(v[k++].b, sqlite3_column_blob(s, 0), MV_DIGEST_LEN);
	}
	sqlite3_finalize(s);
	if (rc < 0) {
		free(v);
		return rc;
	}
	*d = v;
	*n = k;
	return 0;
}

int mv_mapping_put(struct mv_mapping *m, int64_t ctr, const struct mv_map_node *n)
{
	int64_t image;
	if (!ctr || image_of(m, ctr, &image) < 0)
		return -ENOENT;
	if (!n->ino || strchr(n->name, '/') || !n->name[0] || n->type < MV_FT_REG ||
	    n->type > MV_FT_FIFO || n->type == MV_FT_HARDLINK || n->mode > 07777)
		return -EINVAL;
	sqlite3_stmt *s = stmt(m, S_PUT);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, image);
	sqlite3_bind_int64(s, 2, ctr);
	sqlite3_bind_int64(s, 3, (int64_t)n->parent);
	sqlite3_bind_text(s, 4, n->name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, (int64_t)n->ino);
	sqlite3_bind_int(s, 6, n->type);
	sqlite3_bind_int(s, 7, (int)n->mode);
	sqlite3_bind_int64(s, 8, n->uid);
	sqlite3_bind_int64(s, 9, n->gid);
	sqlite3_bind_int64(s, 10, n->nlink ? n->nlink : 1);
	sqlite3_bind_int64(s, 11, (int64_t)n->devmajor << 32 | n->devminor);
	sqlite3_bind_int64(s, 12, n->type == MV_FT_REG ? (int64_t)n->size : 0);
	sqlite3_bind_int64(s, 13, n->mtime);
	sqlite3_bind_text(s, 14, n->link, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 15, n->hardlink, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 16, n->type == MV_FT_REG && !n->upper ? n->layer : -1);
	sqlite3_bind_int64(s, 17, (int64_t)n->data_off);
	sqlite3_bind_int(s, 18, n->upper ? 1 : 0);
	int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : -EIO;
	sqlite3_reset(s);
	return rc;
}

int mv_mapping_remove(struct mv_mapping *m, int64_t ctr, uint64_t parent, const char *name)
{
	int64_t image;
	if (!ctr || image_of(m, ctr, &image) < 0)
		return -ENOENT;
	sqlite3_stmt *s = stmt(m, S_IMGROW);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, image);
	sqlite3_bind_int64(s, 2, (int64_t)parent);
	sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
	int r = sqlite3_step(s), in_image = r == SQLITE_ROW;
	sqlite3_reset(s);
	if (r != SQLITE_ROW && r != SQLITE_DONE)
		return -EIO;
	if (!(s = stmt(m, in_image ? S_MARK : S_DEL)))
		return -EIO;
	sqlite3_bind_int64(s, 1, image);
	sqlite3_bind_int64(s, 2, ctr);
	sqlite3_bind_int64(s, 3, (int64_t)parent);
	sqlite3_bind_text(s, 4, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : -EIO;
	sqlite3_reset(s);
	return rc;
}

int mv_mapping_new_ino(struct mv_mapping *m, int64_t ctr, uint64_t *ino)
{
	sqlite3_stmt *s = stmt(m, S_NEWINO);
	if (!s)
		return -EIO;
	sqlite3_bind_int64(s, 1, ctr);
	int rc = -ENOENT;
	if (sqlite3_step(s) == SQLITE_ROW) {
		int64_t v = sqlite3_column_int64(s, 0);
		rc = v >= (int64_t)CTR_INO_BASE ? 0 : -EBADMSG;
		*ino = (uint64_t)v;
	}
	while (sqlite3_step(s) == SQLITE_ROW)
		;
	sqlite3_reset(s);
	return rc;
}

