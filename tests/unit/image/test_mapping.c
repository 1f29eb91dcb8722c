/* Mapping-table tests (src/image/mapping.c): every overlay rule against
 * hand-built layers (whiteouts, opaque dirs, file<->dir replacement, hard
 * links, implicit parents), containers' own rows over shared image rows,
 * chunk records, durability across reopen, and validation of rows read back. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include "memvisor/image.h"
#if defined(__GNUC__) && !defined(__clang__)
/* tar_gen.h's size field: gcc sees every inlined width, not the small sizes used. */
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif
#include "tar_gen.h"

static void dir(struct tgen *t, const char *name) { tg_header(t, name, '5', 0, NULL, 0755); }
static void file(struct tgen *t, const char *name, const char *s) { tg_file(t, name, s, strlen(s)); }
static void sym(struct tgen *t, const char *name, const char *to) { tg_header(t, name, '2', 0, to, 0777); }
static void hard(struct tgen *t, const char *name, const char *to) { tg_header(t, name, '1', 0, to, 0644); }

static struct mv_layer_index *finish(struct tgen *t)
{
	tg_end(t);
	struct mv_layer_builder *b = mv_layer_builder_new(0, 0);
	struct mv_layer_index *idx;
	assert_int_equal(mv_layer_builder_feed(b, t->p, t->len, NULL), 0);
	assert_int_equal(mv_layer_builder_finish(b, NULL, &idx, NULL), 0);
	free(t->p);
	memset(t, 0, sizeof(*t));
	return idx;
}

/* Looks a path up component by component, as the kernel does. */
static int resolve(struct mv_mapping *m, int64_t ctr, const char *path, struct mv_map_node *n)
{
	char p[512];
	snprintf(p, sizeof(p), "%s", path);
	uint64_t at = MV_MAPPING_ROOT;
	int rc = mv_mapping_get(m, ctr, at, n);
	for (char *s = p, *c; !rc && s && *s; s = c) {
		if ((c = strchr(s, '/')))
			*c++ = 0;
		if (!(rc = mv_mapping_lookup(m, ctr, at, s, n)))
			at = n->ino;
	}
	return rc;
}

static void names(struct mv_mapping *m, int64_t ctr, const char *path, const char *want)
{
	struct mv_map_node n;
	struct mv_map_dirent *e;
	size_t k;
	char got[512] = "";
	assert_int_equal(resolve(m, ctr, path, &n), 0);
	assert_int_equal(mv_mapping_readdir(m, ctr, n.ino, &e, &k), 0);
	for (size_t i = 0; i < k; i++)
		snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", i ? " " : "", e[i].name);
	free(e);
	assert_string_equal(got, want);
}

static void build_layers(struct mv_layer_index *l[3])
{
	struct tgen t = { 0 };
	dir(&t, "a/");
	file(&t, "a/f1", "one");
	file(&t, "a/f2", "two");
	dir(&t, "a/sub/");
	file(&t, "a/sub/x", "x");
	dir(&t, "b/");
	file(&t, "b/y", "y");
	file(&t, "c", "a file, later a dir");
	dir(&t, "d/");
	file(&t, "d/z", "z");
	dir(&t, "opq/");
	file(&t, "opq/old", "hidden");
	dir(&t, "opq/sub/");
	file(&t, "opq/sub/deep", "hidden too");
	file(&t, "t", "old t");
	hard(&t, "t-link", "t");
	file(&t, "u", "shared");
	hard(&t, "u-link", "u");
	sym(&t, "s", "a/f2");
	l[0] = finish(&t);

	file(&t, "a/.wh.f1", "");
	file(&t, "a/.wh.sub", "");
	dir(&t, "opq/");
	file(&t, "opq/.wh..wh..opq", "");
	file(&t, "opq/new", "new");
	dir(&t, "c/");
	file(&t, "c/inner", "in");
	file(&t, "d", "d is a file now");
	file(&t, "t", "new t");
	file(&t, "imp/x/y", "implicit parents");
	file(&t, ".wh..wh.plnk", "");
	file(&t, "a/.wh.never-existed", "");
	l[1] = finish(&t);

	file(&t, "a/f1", "back");
	file(&t, ".wh.b", "");
	l[2] = finish(&t);
}

static char *tmp_db(char *dirbuf)
{
	strcpy(dirbuf, "/tmp/mvmap.XXXXXX");
	assert_non_null(mkdtemp(dirbuf));
	strcat(dirbuf, "/map.db");
	return dirbuf;
}

static void rm_db(char *path)
{
	char p[600];
	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);
	unlink(path);
	*strrchr(path, '/') = 0;
	rmdir(path);
}

static void test_overlay(void **s)
{
	(void)s;
	char db[64];
	struct mv_layer_index *l[3];
	struct mv_mapping *m;
	struct mv_map_node n, n2;
	int64_t img, ctr;
	build_layers(l);
	assert_int_equal(mv_mapping_open(tmp_db(db), &m, NULL), 0);
	assert_int_equal(mv_mapping_add_image(m, "img", l, 3, &img, NULL), 0);
	assert_int_equal(mv_mapping_add_container(m, img, "c1", &ctr, NULL), 0);

	names(m, ctr, "", "a c d imp opq s t t-link u u-link");   /* .wh.b removed b */
	/* Whiteouts: a/f1 deleted by layer 1, back in layer 2; a/sub and below gone. */
	names(m, ctr, "a", "f1 f2");
	assert_int_equal(resolve(m, ctr, "a/f1", &n), 0);
	assert_int_equal(n.layer, 2);
	assert_int_equal(n.size, 4);
	assert_int_equal(resolve(m, ctr, "a/sub", &n), -ENOENT);
	assert_int_equal(resolve(m, ctr, "b/y", &n), -ENOENT);
	/* Opaque: only the upper layer's children. */
	names(m, ctr, "opq", "new");
	/* A file replaced by a directory, a directory by a file. */
	assert_int_equal(resolve(m, ctr, "c", &n), 0);
	assert_int_equal(n.type, MV_FT_DIR);
	names(m, ctr, "c", "inner");
	assert_int_equal(resolve(m, ctr, "d", &n), 0);
	assert_int_equal(n.type, MV_FT_REG);
	assert_int_equal(n.layer, 1);
	assert_int_equal(n.size, strlen("d is a file now"));
	/* Hard links share their target's inode and bytes as of their layer. */
	assert_int_equal(resolve(m, ctr, "u", &n), 0);
	assert_int_equal(resolve(m, ctr, "u-link", &n2), 0);
	assert_int_equal(n.ino, n2.ino);
	assert_int_equal(n.nlink, 2);
	assert_int_equal(n2.data_off, n.data_off);
	assert_string_equal(n2.hardlink, "u");
	assert_int_equal(resolve(m, ctr, "t", &n), 0);
	assert_int_equal(resolve(m, ctr, "t-link", &n2), 0);
	assert_int_not_equal(n.ino, n2.ino);
	assert_int_equal(n.layer, 1);
	assert_int_equal(n2.layer, 0);
	assert_int_equal(n2.size, 5);
	assert_int_equal(n2.nlink, 1);
	/* Symlinks keep their raw target; implicit parents are directories. */
	assert_int_equal(resolve(m, ctr, "s", &n), 0);
	assert_int_equal(n.type, MV_FT_SYMLINK);
	assert_string_equal(n.link, "a/f2");
	assert_int_equal(resolve(m, ctr, "imp/x", &n), 0);
	assert_int_equal(n.type, MV_FT_DIR);
	assert_int_equal(n.mode, 0755);
	/* The file's bytes are where the index says. */
	assert_int_equal(resolve(m, ctr, "a/f2", &n), 0);
	struct mv_tar_entry e;
	mv_layer_index_entry(l[0], (size_t)mv_layer_index_find(l[0], "a/f2"), &e);
	assert_int_equal(n.data_off, e.data_off);
	assert_int_equal(n.owner, 0);
	/* Inode numbers are stable and resolve back. */
	assert_int_equal(mv_mapping_get(m, ctr, n.ino, &n2), 0);
	assert_string_equal(n2.name, "f2");

	/* Built once: adding again returns the same image. */
	int64_t again;
	assert_int_equal(mv_mapping_add_image(m, "img", l, 3, &again, NULL), 0);
	assert_int_equal(again, img);
	struct mv_digest *blobs;
	size_t nb;
	assert_int_equal(mv_mapping_image_layers(m, img, &blobs, &nb, NULL), 0);
	assert_int_equal(nb, 3);
	assert_true(mv_digest_equal(&blobs[1], mv_layer_index_blob_digest(l[1])));
	free(blobs);
	mv_mapping_close(m);
	for (int i = 0; i < 3; i++)
		mv_layer_index_free(l[i]);
	rm_db(db);
}

static void test_containers(void **s)
{
	(void)s;
	char db[64];
	struct mv_layer_index *l[3];
	struct mv_mapping *m;
	struct mv_map_node n, n2;
	int64_t img, c1, c2;
	build_layers(l);
	assert_int_equal(mv_mapping_open(tmp_db(db), &m, NULL), 0);
	assert_int_equal(mv_mapping_add_image(m, "img", l, 3, &img, NULL), 0);
	assert_int_equal(mv_mapping_add_container(m, img, "c1", &c1, NULL), 0);
	assert_int_equal(mv_mapping_add_container(m, img, "c2", &c2, NULL), 0);
	assert_int_not_equal(c1, c2);

	/* c1: copy-up of a/f2, a deletion, a new directory, a rename. */
	assert_int_equal(resolve(m, c1, "a/f2", &n), 0);
	n.upper = 1;
	assert_int_equal(mv_mapping_put(m, c1, &n), 0);
	assert_int_equal(resolve(m, c1, "a", &n2), 0);
	assert_int_equal(mv_mapping_remove(m, c1, n2.ino, "f1"), 0);
	struct mv_map_node d = { .parent = MV_MAPPING_ROOT, .name = "newdir", .type = MV_FT_DIR,
				 .mode = 0700, .nlink = 1, .layer = -1 };
	assert_int_equal(mv_mapping_new_ino(m, c1, &d.ino), 0);
	assert_true(d.ino > 1000000);
	assert_int_equal(mv_mapping_put(m, c1, &d), 0);
	assert_int_equal(resolve(m, c1, "u", &n), 0);
	uint64_t u_ino = n.ino;
	n.parent = d.ino;
	strcpy(n.name, "moved-u");
	assert_int_equal(mv_mapping_put(m, c1, &n), 0);
	assert_int_equal(mv_mapping_remove(m, c1, MV_MAPPING_ROOT, "u"), 0);

	names(m, c1, "a", "f2");
	names(m, c1, "newdir", "moved-u");
	names(m, c1, "", "a c d imp newdir opq s t t-link u-link");
	assert_int_equal(resolve(m, c1, "a/f2", &n), 0);
	assert_int_equal(n.upper, 1);
	assert_int_equal(n.owner, c1);
	assert_int_equal(mv_mapping_get(m, c1, u_ino, &n), 0);
	assert_string_equal(n.name, "moved-u");
	assert_int_equal(n.layer, 0);

	/* c2 still sees the image. */
	names(m, c2, "a", "f1 f2");
	names(m, c2, "", "a c d imp opq s t t-link u u-link");
	assert_int_equal(resolve(m, c2, "a/f2", &n), 0);
	assert_int_equal(n.upper, 0);
	assert_int_equal(n.owner, 0);
	assert_int_equal(resolve(m, c2, "newdir", &n), -ENOENT);

	/* A created-then-removed own row leaves nothing behind. */
	assert_int_equal(mv_mapping_remove(m, c1, MV_MAPPING_ROOT, "newdir"), 0);
	assert_int_equal(resolve(m, c1, "newdir", &n), -ENOENT);

	/* Chunks fetched by c1 for an image file are found by c2; only c1's
	 * chunk list names them. */
	struct mv_digest dg[2], *got;
	size_t k;
	mv_digest_of("x", 1, &dg[0]);
	mv_digest_of("y", 1, &dg[1]);
	assert_int_equal(resolve(m, c1, "t", &n), 0);
	assert_int_equal(mv_mapping_chunks(m, c1, n.ino, &got, &k), -ENOENT);
	assert_int_equal(mv_mapping_set_chunks(m, c1, n.ino, dg, 1), 0);
	assert_int_equal(mv_mapping_chunks(m, c2, n.ino, &got, &k), 0);
	assert_int_equal(k, 1);
	assert_true(mv_digest_equal(&got[0], &dg[0]));
	free(got);
	assert_int_equal(resolve(m, c2, "t", &n2), 0);
	assert_int_equal(n2.has_chunks, 1);
	assert_int_equal(mv_mapping_ctr_chunks(m, c1, &got, &k), 0);
	assert_int_equal(k, 1);
	free(got);
	assert_int_equal(mv_mapping_ctr_chunks(m, c2, &got, &k), 0);
	assert_int_equal(k, 0);
	free(got);
	/* A chunk count that does not match the size is refused. */
	assert_int_equal(mv_mapping_set_chunks(m, c1, n.ino, dg, 2), 0);
	assert_int_equal(mv_mapping_chunks(m, c1, n.ino, &got, &k), -EBADMSG);

	/* Durable: reopen and see c1's view again. */
	mv_mapping_close(m);
	assert_int_equal(mv_mapping_open(db, &m, NULL), 0);
	names(m, c1, "a", "f2");
	names(m, c2, "a", "f1 f2");
	/* Rows read back are validated. */
	sqlite3 *raw;
	assert_int_equal(sqlite3_open(db, &raw), SQLITE_OK);
	assert_int_equal(sqlite3_exec(raw, "UPDATE nodes SET mode=99999 WHERE name='d' AND ctr=0",
				      NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(raw, "UPDATE nodes SET type=4 WHERE name='s' AND ctr=0",
				      NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(raw, "UPDATE nodes SET name='x/y' WHERE name='imp' AND ctr=0",
				      NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(raw);
	assert_int_equal(mv_mapping_lookup(m, c2, MV_MAPPING_ROOT, "d", &n), -EBADMSG);
	assert_int_equal(mv_mapping_lookup(m, c2, MV_MAPPING_ROOT, "s", &n), -EBADMSG);
	struct mv_map_dirent *ents;
	assert_int_equal(mv_mapping_readdir(m, c2, MV_MAPPING_ROOT, &ents, &k), -EBADMSG);
	/* Dropping a container leaves the image's rows. */
	assert_int_equal(mv_mapping_drop_container(m, c1, NULL), 0);
	assert_int_equal(mv_mapping_lookup(m, c1, MV_MAPPING_ROOT, "a", &n), -ENOENT);
	assert_int_equal(mv_mapping_lookup(m, c2, MV_MAPPING_ROOT, "a", &n), 0);
	mv_mapping_close(m);
	for (int i = 0; i < 3; i++)
		mv_layer_index_free(l[i]);
	rm_db(db);
}

static void test_bad_layers(void **s)
{
	(void)s;
	char db[64];
	struct mv_mapping *m;
	struct mv_error *e = NULL;
	int64_t img;
	struct tgen t = { 0 };
	file(&t, "a", "x");
	hard(&t, "b", "missing");
	struct mv_layer_index *l = finish(&t);
	assert_int_equal(mv_mapping_open(tmp_db(db), &m, NULL), 0);
	assert_int_equal(mv_mapping_add_image(m, "bad", &l, 1, &img, &e), -EINVAL);
	assert_non_null(strstr(mv_error_msg(e, -EINVAL), "missing"));
	mv_error_free(e);
	assert_int_equal(mv_mapping_find_image(m, "bad", &img), -ENOENT);   /* rolled back */
	mv_layer_index_free(l);
	/* A name longer than a directory entry can hold. */
	char longname[300];
	memset(longname, 'n', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	tg_pax(&t, "path", longname);
	file(&t, "ignored-by-pax", "x");
	l = finish(&t);
	e = NULL;
	assert_int_equal(mv_mapping_add_image(m, "long", &l, 1, &img, &e), -ENAMETOOLONG);
	mv_error_free(e);
	mv_layer_index_free(l);
	mv_mapping_close(m);
	rm_db(db);
}

/* Dropping an image: refused while it has containers; the layers no other
 * image lists are reported; partial chunk lists (zeros) round-trip. */
static void test_drop_image(void **s)
{
	(void)s;
	char db[64];
	struct mv_layer_index *l[3];
	struct mv_mapping *m;
	struct mv_map_node n;
	struct mv_digest *unused, *d, part[2];
	size_t k;
	int64_t a, b, c;
	build_layers(l);
	assert_int_equal(mv_mapping_open(tmp_db(db), &m, NULL), 0);
	assert_int_equal(mv_mapping_add_image(m, "a", l, 3, &a, NULL), 0);
	assert_int_equal(mv_mapping_add_image(m, "b", l, 1, &b, NULL), 0);   /* shares layer 0 */
	assert_int_equal(mv_mapping_add_container(m, a, "c", &c, NULL), 0);
	/* A large file's chunks arrive one by one: a zero digest is "not yet". */
	assert_int_equal(resolve(m, c, "a/f2", &n), 0);
	memset(part, 0, sizeof(part));
	mv_digest_of("x", 1, &part[0]);
	assert_int_equal(mv_mapping_set_chunks(m, c, n.ino, part, n.size ? 1 : 0), 0);
	if (n.size) {
		assert_int_equal(mv_mapping_chunks(m, c, n.ino, &d, &k), 0);
		assert_int_equal(k, 1);
		assert_memory_equal(d, part, sizeof(part[0]));
		free(d);
	}
	assert_int_equal(mv_mapping_ctr_chunks(m, c, &d, &k), 0);
	assert_int_equal(k, n.size ? 1 : 0);
	free(d);
	struct mv_error *e = NULL;
	assert_int_equal(mv_mapping_drop_image(m, a, &unused, &k, &e), -EBUSY);
	assert_non_null(e);
	mv_error_free(e);
	assert_int_equal(mv_mapping_drop_container(m, c, NULL), 0);
	assert_int_equal(mv_mapping_drop_image(m, a, &unused, &k, NULL), 0);
	assert_int_equal(k, 2);   /* layers 1 and 2; layer 0 is b's too */
	for (size_t i = 0; i < k; i++)
		assert_false(mv_digest_equal(&unused[i], mv_layer_index_blob_digest(l[0])));
	free(unused);
	assert_int_equal(mv_mapping_find_image(m, "a", &a), -ENOENT);
	assert_int_equal(mv_mapping_find_image(m, "b", &b), 0);
	assert_int_equal(mv_mapping_drop_image(m, b, &unused, &k, NULL), 0);
	assert_int_equal(k, 1);
	free(unused);
	mv_mapping_close(m);
	for (int i = 0; i < 3; i++)
		mv_layer_index_free(l[i]);
	rm_db(db);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_overlay),
		cmocka_unit_test(test_containers),
		cmocka_unit_test(test_drop_image),
		cmocka_unit_test(test_bad_layers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
