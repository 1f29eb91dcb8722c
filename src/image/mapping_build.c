/* An image's rows in the mapping database (mapping.c): built once from its
 * layer indexes, dropped when the image is removed.
 *
 * The overlay is merged bottom-up in a temp table keyed by full path: a
 * whiteout or opaque marker deletes a lower subtree with one index range
 * (paths under "d/" sort in ["d/", "d0")), and a hard link copies its target
 * as the link's layer saw it. The result is the same as a top-down merge. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mapping_i.h"

struct build {
	struct mv_mapping *m;
	sqlite3_stmt *find, *ins, *upd, *del_one, *del_sub, *del_all;
	struct mv_error **err;
};

static const char *const build_sql[] = {
	"CREATE TEMP TABLE b(id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL UNIQUE, "
	"  dir TEXT NOT NULL, name TEXT NOT NULL, grp INTEGER NOT NULL, type INTEGER NOT NULL, "
	"  mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL, rdev INTEGER NOT NULL, "
	"  size INTEGER NOT NULL, mtime INTEGER NOT NULL, link TEXT NOT NULL, "
	"  hardlink TEXT NOT NULL, layer INTEGER NOT NULL, dlayer INTEGER NOT NULL, "
	"  data_off INTEGER NOT NULL)",
	"CREATE INDEX temp.b_grp ON b(grp)",
};

/* Splits a normalized path into its directory ("" at the top) and name. */
static void split(const char *path, char *dir, const char **name)
{
	const char *slash = strrchr(path, '/');
	if (!slash) {
		dir[0] = 0;
		*name = path;
		return;
	}
	memcpy(dir, path, (size_t)(slash - path));
	dir[slash - path] = 0;
	*name = slash + 1;
}

/* Deletes path's subtree (not path) of layers below `below`; path "" is the
 * root, whose subtree is everything else. */
static int del_subtree(struct build *b, const char *path, int below)
{
	char lo[MV_TAR_MAX_PATH + 2], hi[MV_TAR_MAX_PATH + 2];
	sqlite3_stmt *s = b->del_sub;
	sqlite3_reset(s);
	if (!path[0]) {
		lo[0] = 0;
		strcpy(hi, "\xff\xff\xff\xff");   /* above every UTF-8 and raw byte path */
	} else {
		snprintf(lo, sizeof(lo), "%s/", path);
		snprintf(hi, sizeof(hi), "%s0", path);   /* '0' follows '/' */
	}
	sqlite3_bind_text(s, 1, lo, -1, SQLITE_STATIC);
	sqlite3_bind_blob(s, 2, hi, (int)strlen(hi), SQLITE_STATIC);
	sqlite3_bind_int(s, 3, below);
	int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : mapping_db_err(b->m, b->err, "whiteout");
	sqlite3_reset(s);
	return rc;
}

static int del_one(struct build *b, const char *path, int below)
{
	sqlite3_stmt *s = b->del_one;
	sqlite3_reset(s);
	sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 2, below);
	int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : mapping_db_err(b->m, b->err, "delete");
	sqlite3_reset(s);
	return rc;
}

/* Type of the entry at path, 0 if none; *grp gets its link group. */
static int find(struct build *b, const char *path, int64_t *grp)
{
	sqlite3_stmt *s = b->find;
	sqlite3_reset(s);
	sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
	int type = 0;
	if (sqlite3_step(s) == SQLITE_ROW) {
		type = sqlite3_column_int(s, 0);
		if (grp)
			*grp = sqlite3_column_int64(s, 1);
	}
	sqlite3_reset(s);
	return type;
}

/* layer: the layer that wrote path (whiteouts and opaque dirs go by it);
 * dlayer: the layer holding its bytes (a hard link's target's). */
static int insert(struct build *b, const char *path, const struct mv_tar_entry *e, int layer,
		  int dlayer, int64_t grp, const char *hardlink)
{
	char dir[MV_TAR_MAX_PATH];
	const char *name;
	split(path, dir, &name);
	if (strlen(name) > MV_MAPPING_NAME_MAX)
		return mv_err(b->err, -ENAMETOOLONG, "layer %d: name too long in %s", layer, path);
	sqlite3_stmt *s = b->ins;
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);   /* ?4 stays NULL unless a link */
	sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, dir, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
	if (grp)
		sqlite3_bind_int64(s, 4, grp);
	sqlite3_bind_int(s, 5, e->type);
	sqlite3_bind_int(s, 6, (int)(e->mode & 07777));
	sqlite3_bind_int64(s, 7, e->uid);
	sqlite3_bind_int64(s, 8, e->gid);
	sqlite3_bind_int64(s, 9, (int64_t)e->devmajor << 32 | e->devminor);
	sqlite3_bind_int64(s, 10, e->type == MV_FT_REG ? (int64_t)e->size : 0);
	sqlite3_bind_int64(s, 11, e->mtime);
	sqlite3_bind_text(s, 12, e->type == MV_FT_SYMLINK ? e->link : "", -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 13, hardlink, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 14, layer);
	sqlite3_bind_int(s, 15, e->type == MV_FT_REG ? dlayer : -1);
	sqlite3_bind_int64(s, 16, (int64_t)e->data_off);
	int rc = sqlite3_step(s) == SQLITE_DONE ? 0 : mapping_db_err(b->m, b->err, "insert");
	sqlite3_reset(s);
	return rc;
}

/* Makes every ancestor of path a directory (layers may omit them). */
static int ensure_parents(struct build *b, const char *path, int layer)
{
	char p[MV_TAR_MAX_PATH];
	snprintf(p, sizeof(p), "%s", path);
	for (char *c = strchr(p, '/'); c; c = strchr(c + 1, '/')) {
		*c = 0;
		int t = find(b, p, NULL), rc;
		if (t != MV_FT_DIR) {
			struct mv_tar_entry d = { .path = p, .link = "", .type = MV_FT_DIR, .mode = 0755 };
			if ((t && (rc = del_one(b, p, INT_MAX)) < 0) || (rc = insert(b, p, &d, layer, layer, 0, "")) < 0)
				return rc;
		}
		*c = '/';
	}
	return 0;
}

static int apply(struct build *b, int layer, struct mv_tar_entry *e)
{
	char dir[MV_TAR_MAX_PATH], target[MV_TAR_MAX_PATH];
	const char *name;
	int rc;
	split(e->path, dir, &name);
	if (!strncmp(name, ".wh.", 4)) {
		if (!strcmp(name, ".wh..wh..opq"))
			return del_subtree(b, dir, layer);
		if (!strncmp(name, ".wh..wh.", 8))
			return 0;   /* aufs bookkeeping, not content */
		if (!name[4])
			return mv_err(b->err, -EINVAL, "layer %d: empty whiteout in %s", layer, e->path);
		if (snprintf(target, sizeof(target), "%s%s%s", dir, dir[0] ? "/" : "", name + 4) >=
		    (int)sizeof(target))
			return -ENAMETOOLONG;   /* cannot happen: target is shorter than path */
		if ((rc = del_one(b, target, layer)) < 0)
			return rc;
		return del_subtree(b, target, layer);
	}
	if (!e->path[0])
		return 0;
	if ((rc = ensure_parents(b, e->path, layer)) < 0)
		return rc;
	int old = find(b, e->path, NULL);
	if (old == MV_FT_DIR && e->type == MV_FT_DIR) {
		sqlite3_stmt *s = b->upd;   /* keep the children */
		sqlite3_reset(s);
		sqlite3_bind_text(s, 1, e->path, -1, SQLITE_STATIC);
		sqlite3_bind_int(s, 2, (int)(e->mode & 07777));
		sqlite3_bind_int64(s, 3, e->uid);
		sqlite3_bind_int64(s, 4, e->gid);
		sqlite3_bind_int64(s, 5, e->mtime);
		sqlite3_bind_int(s, 6, layer);
		rc = sqlite3_step(s) == SQLITE_DONE ? 0 : mapping_db_err(b->m, b->err, "update");
		sqlite3_reset(s);
		return rc;
	}
	if (old == MV_FT_DIR && (rc = del_subtree(b, e->path, INT_MAX)) < 0)
		return rc;
	if (old && (rc = del_one(b, e->path, INT_MAX)) < 0)
		return rc;
	if (e->type != MV_FT_HARDLINK)
		return insert(b, e->path, e, layer, layer, 0, "");
	/* A hard link: a copy of its target as of this layer, sharing its inode. */
	int64_t grp = 0;
	int t = find(b, e->link, &grp);
	if (!t || t == MV_FT_DIR)
		return mv_err(b->err, -EINVAL, "layer %d: hard link %s to %s %s", layer, e->path,
			      t ? "directory" : "missing", e->link);
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(b->m->db, "SELECT type, mode, uid, gid, rdev, size, mtime, link, "
			       "dlayer, data_off FROM b WHERE path=?1", -1, &s, NULL) != SQLITE_OK)
		return mapping_db_err(b->m, b->err, "hard link");
	sqlite3_bind_text(s, 1, e->link, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_ROW) {
		sqlite3_finalize(s);
		return mapping_db_err(b->m, b->err, "hard link");
	}
	char link[MV_TAR_MAX_PATH];
	snprintf(link, sizeof(link), "%s", (const char *)sqlite3_column_text(s, 7));
	int64_t rdev = sqlite3_column_int64(s, 4);
	struct mv_tar_entry x = {
		.path = e->path, .link = link, .type = (enum mv_file_type)sqlite3_column_int(s, 0),
		.mode = (uint32_t)sqlite3_column_int(s, 1), .uid = (uint32_t)sqlite3_column_int64(s, 2),
		.gid = (uint32_t)sqlite3_column_int64(s, 3), .devmajor = (uint32_t)(rdev >> 32),
		.devminor = (uint32_t)rdev, .size = (uint64_t)sqlite3_column_int64(s, 5),
		.mtime = sqlite3_column_int64(s, 6), .data_off = (uint64_t)sqlite3_column_int64(s, 9),
	};
	int tlayer = sqlite3_column_int(s, 8);
	sqlite3_finalize(s);
	return insert(b, e->path, &x, layer, tlayer, grp, e->link);
}

static int build_stmts(struct build *b)
{
	static const char *const q[] = {
		"SELECT type, grp FROM b WHERE path=?1",
		"INSERT INTO b(path, dir, name, grp, type, mode, uid, gid, rdev, size, mtime, link, "
		"hardlink, layer, dlayer, data_off) VALUES (?1, ?2, ?3, coalesce(?4, (SELECT "
		"coalesce(max(id), 0) + 1 FROM b), 1), ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
		"?15, ?16)",
		"UPDATE b SET mode=?2, uid=?3, gid=?4, mtime=?5, layer=?6 WHERE path=?1",
		"DELETE FROM b WHERE path=?1 AND layer<?2",
		"DELETE FROM b WHERE path>=?1 AND path<CAST(?2 AS TEXT) AND layer<?3",
	};
	sqlite3_stmt **dst[] = { &b->find, &b->ins, &b->upd, &b->del_one, &b->del_sub };
	for (size_t i = 0; i < sizeof(q) / sizeof(q[0]); i++)
		if (sqlite3_prepare_v2(b->m->db, q[i], -1, dst[i], NULL) != SQLITE_OK)
			return mapping_db_err(b->m, b->err, "prepare");
	return 0;
}

int mv_mapping_find_image(struct mv_mapping *m, const char *name, int64_t *image_id)
{
	sqlite3_stmt *s;
	if (sqlite3_prepare_v2(m->db, "SELECT id FROM images WHERE name=?1", -1, &s, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s) == SQLITE_ROW ? 0 : -ENOENT;
	if (!rc)
		*image_id = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return rc;
}

int mv_mapping_add_image(struct mv_mapping *m, const char *name,
			 struct mv_layer_index *const *layers, size_t n, int64_t *image_id,
			 struct mv_error **err)
{
	if (n > MV_MANIFEST_MAX_LAYERS)
		return mv_err(err, -EINVAL, "mapping: %zu layers", n);
	int rc;
	if ((rc = mapping_exec(m, "BEGIN IMMEDIATE", err)) < 0)
		return rc;
	if (!mv_mapping_find_image(m, name, image_id))
		return mapping_exec(m, "COMMIT", err);
	struct build b = { .m = m, .err = err };
	sqlite3_stmt *s = NULL;
	for (size_t i = 0; i < sizeof(build_sql) / sizeof(build_sql[0]); i++)
		if ((rc = mapping_exec(m, build_sql[i], err)) < 0)
			goto out;
	if ((rc = build_stmts(&b)) < 0)
		goto out;
	struct mv_tar_entry root = { .path = "", .link = "", .type = MV_FT_DIR, .mode = 0755 };
	if ((rc = insert(&b, "", &root, -1, -1, 0, "")) < 0)
		goto out;
	for (size_t l = 0; l < n; l++)
		for (size_t i = 0; i < mv_layer_index_count(layers[l]); i++) {
			struct mv_tar_entry e;
			mv_layer_index_entry(layers[l], i, &e);
			if ((rc = apply(&b, (int)l, &e)) < 0)
				goto out;
		}
	if (sqlite3_prepare_v2(m->db, "INSERT INTO images(name) VALUES (?1)", -1, &s, NULL) != SQLITE_OK)
		goto dberr;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE)
		goto dberr;
	sqlite3_finalize(s);
	*image_id = sqlite3_last_insert_rowid(m->db);
	if (sqlite3_prepare_v2(m->db, "INSERT INTO layers(image, pos, blob) VALUES (?1, ?2, ?3)",
			       -1, &s, NULL) != SQLITE_OK)
		goto dberr;
	for (size_t l = 0; l < n; l++) {
		sqlite3_reset(s);
		sqlite3_bind_int64(s, 1, *image_id);
		sqlite3_bind_int(s, 2, (int)l);
		sqlite3_bind_blob(s, 3, mv_layer_index_blob_digest(layers[l])->b, MV_DIGEST_LEN, SQLITE_STATIC);
		if (sqlite3_step(s) != SQLITE_DONE)
			goto dberr;
	}
	sqlite3_finalize(s);
	/* Inodes are link groups (grp <= id, so a new row's max(id)+1 is fresh; the
	 * root's is 1); directories report nlink 1,
	 * which tells find(1) not to count subdirectories from it. */
	if (sqlite3_prepare_v2(m->db, "INSERT INTO nodes(image, ctr, parent, name, ino, deleted, type, "
			       "mode, uid, gid, nlink, rdev, size, mtime, link, hardlink, layer, data_off, "
			       "upper) SELECT ?1, 0, coalesce(p.grp, 0), c.name, c.grp, 0, c.type, c.mode, "
			       "c.uid, c.gid, CASE WHEN c.type=2 THEN 1 ELSE (SELECT count(*) FROM b h "
			       "WHERE h.grp=c.grp) END, c.rdev, c.size, c.mtime, c.link, c.hardlink, "
			       "c.dlayer, c.data_off, 0 FROM b c LEFT JOIN b p ON c.path<>'' AND "
			       "p.path=c.dir", -1, &s, NULL) != SQLITE_OK)
		goto dberr;
	sqlite3_bind_int64(s, 1, *image_id);
	if (sqlite3_step(s) != SQLITE_DONE)
		goto dberr;
	rc = 0;
	goto out;
dberr:
	rc = mapping_db_err(m, err, "building the image's rows");
out:
	sqlite3_finalize(s);
	sqlite3_finalize(b.find);
	sqlite3_finalize(b.ins);
	sqlite3_finalize(b.upd);
	sqlite3_finalize(b.del_one);
	sqlite3_finalize(b.del_sub);
	sqlite3_exec(m->db, "DROP TABLE IF EXISTS temp.b", NULL, NULL, NULL);
	if (rc < 0) {
		sqlite3_exec(m->db, "ROLLBACK", NULL, NULL, NULL);
		return rc;
	}
	return mapping_exec(m, "COMMIT", err);
}


int mv_mapping_drop_image(struct mv_mapping *m, int64_t image_id, struct mv_digest **unused,
			  size_t *n_unused, struct mv_error **err)
{
	sqlite3_stmt *s = NULL;
	struct mv_digest *v = NULL;
	size_t k = 0;
	int rc;
	*unused = NULL;
	*n_unused = 0;
	if ((rc = mapping_exec(m, "BEGIN IMMEDIATE", err)) < 0)
		return rc;
	if (sqlite3_prepare_v2(m->db, "SELECT count(*) FROM containers WHERE image=?1", -1, &s,
			       NULL) != SQLITE_OK)
		goto dberr;
	sqlite3_bind_int64(s, 1, image_id);
	if (sqlite3_step(s) != SQLITE_ROW)
		goto dberr;
	if (sqlite3_column_int64(s, 0) > 0) {
		rc = mv_err(err, -EBUSY, "mapping: image has %lld container(s)",
			    (long long)sqlite3_column_int64(s, 0));
		goto out;
	}
	sqlite3_finalize(s);
	/* Layers no other image lists: their indexes may go too. */
	if (sqlite3_prepare_v2(m->db, "SELECT DISTINCT blob FROM layers l WHERE image=?1 AND NOT "
			       "EXISTS (SELECT 1 FROM layers o WHERE o.blob=l.blob AND o.image<>?1)",
			       -1, &s, NULL) != SQLITE_OK)
		goto dberr;
	sqlite3_bind_int64(s, 1, image_id);
	v = calloc(MV_MANIFEST_MAX_LAYERS, sizeof(*v));
	if (!v) {
		rc = -ENOMEM;
		goto out;
	}
	while (sqlite3_step(s) == SQLITE_ROW)
		if (k < MV_MANIFEST_MAX_LAYERS && sqlite3_column_bytes(s, 0) == MV_DIGEST_LEN)
			memcpy(v[k++].b, sqlite3_column_blob(s, 0), MV_DIGEST_LEN);
	sqlite3_finalize(s);
	s = NULL;
	char sql[256];
	snprintf(sql, sizeof(sql), "DELETE FROM nodes WHERE image=%lld; DELETE FROM layers WHERE "
		 "image=%lld; DELETE FROM images WHERE id=%lld;", (long long)image_id,
		 (long long)image_id, (long long)image_id);
	if ((rc = mapping_exec(m, sql, err)) < 0)
		goto out;
	if ((rc = mapping_exec(m, "COMMIT", err)) < 0)
		goto out;
	*unused = v;
	*n_unused = k;
	return 0;
dberr:
	rc = mapping_db_err(m, err, "dropping an image");
out:
	sqlite3_finalize(s);
	free(v);
	sqlite3_exec(m->db, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}
