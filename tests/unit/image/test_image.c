/* Unit tests for src/image: digests, manifest validation, auth challenges,
 * the tar parser (hostile names, long names, PAX), gzip layer indexes (build,
 * random reads from resume points, save/load, corruption, truncation, wrong
 * digests) and the chunk store (verify on read, refs, gc). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include "memvisor/image.h"
#include "memvisor/util.h"
#include "tar_gen.h"
#include "../../../src/image/image_i.h"   /* the published-index parser */

#define D1 "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_digest(void **s)
{
	struct mv_digest d, e;
	char buf[MV_DIGEST_STRLEN];
	assert_int_equal(mv_digest_parse(D1, &d), 0);
	assert_string_equal(mv_digest_format(&d, buf), D1);
	assert_int_equal(mv_digest_parse("sha256:0123", &d), -EINVAL);
	assert_int_equal(mv_digest_parse("sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", &d), -EINVAL);
	assert_int_equal(mv_digest_parse("sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", &d), -EINVAL);
	mv_digest_of("", 0, &e);
	assert_string_equal(mv_digest_format(&e, buf),
		"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static const char *good_manifest =
	"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
	"\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"" D1 "\",\"size\":7},"
	"\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"" D1 "\",\"size\":100},"
	"{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\",\"digest\":\"" D1 "\",\"size\":0}]}";

static int parse(const char *j, const char *ct, struct mv_manifest **m)
{
	struct mv_error *e = NULL;
	int rc = mv_manifest_parse(j, strlen(j), ct, m, &e);
	if (rc < 0) {
		assert_non_null(e);
		assert_true(e->msg[0] != 0);
		mv_error_free(e);
	}
	return rc;
}

static void test_manifest(void **s)
{
	struct mv_manifest *m;
	assert_int_equal(parse(good_manifest, NULL, &m), 0);
	assert_int_equal(m->kind, MV_MANIFEST_IMAGE);
	assert_int_equal(m->n_items, 2);
	assert_int_equal(m->items[0].size, 100);
	assert_int_equal(m->items[1].compression, MV_LAYER_GZIP);
	mv_manifest_free(m);
	assert_int_equal(parse(good_manifest, "application/vnd.docker.distribution.manifest.v2+json", &m), -EBADMSG);

	const char *idx = "{\"schemaVersion\":2,\"manifests\":["
		"{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D1 "\",\"size\":5,"
		"\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\"}},"
		"{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D1 "\",\"size\":5,"
		"\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}}]}";
	assert_int_equal(parse(idx, "application/vnd.oci.image.index.v1+json", &m), 0);
	assert_int_equal(m->kind, MV_MANIFEST_INDEX);
	assert_int_equal(mv_manifest_pick(m, "linux", "amd64"), 1);
	assert_int_equal(mv_manifest_pick(m, "linux", "s390x"), -ENOENT);
	mv_manifest_free(m);

	static const char *bad[] = {
		"[]", "{\"schemaVersion\":1}", "not json",
		"{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"layers\":[]}",
		"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"" D1 "\",\"size\":-1},\"layers\":[]}",
		"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:00\",\"size\":1},\"layers\":[]}",
		"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"text/plain\",\"digest\":\"" D1 "\",\"size\":1},\"layers\":[]}",
		"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"" D1 "\",\"size\":1},"
		"\"layers\":[{\"mediaType\":\"application/x-evil\",\"digest\":\"" D1 "\",\"size\":1}]}",
		"{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"" D1 "\",\"size\":1},"
		"\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"" D1 "\",\"size\":99999999999999999}]}",
		"{\"schemaVersion\":2,\"schemaVersion\":2}",
	};
	for (size_t i = 0; i < MV_ARRAY_SIZE(bad); i++)
		assert_int_not_equal(parse(bad[i], NULL, &m), 0);
	/* Too many layers. */
	char *big = malloc(1 << 20);
	size_t o = (size_t)sprintf(big, "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"" D1 "\",\"size\":1},\"layers\":[");
	for (int i = 0; i <= MV_MANIFEST_MAX_LAYERS; i++)
		o += (size_t)sprintf(big + o, "%s{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"" D1 "\",\"size\":1}", i ? "," : "");
	sprintf(big + o, "]}");
	assert_int_equal(parse(big, NULL, &m), -EBADMSG);
	free(big);
}

static void test_auth(void **s)
{
	struct mv_auth_challenge c;
	assert_int_equal(mv_auth_parse_challenge(
		"Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\","
		"scope=\"repository:library/busybox:pull\"", &c), 0);
	assert_string_equal(c.scheme, "Bearer");
	assert_string_equal(c.realm, "https://auth.docker.io/token");
	assert_string_equal(c.service, "registry.docker.io");
	assert_string_equal(c.scope, "repository:library/busybox:pull");
	assert_int_equal(mv_auth_parse_challenge("bearer realm=\"http://r/t\", scope=\"a\\\"b\", error=insufficient_scope", &c), 0);
	assert_string_equal(c.scope, "a\"b");
	assert_int_equal(mv_auth_parse_challenge("Basic realm=\"x\"", &c), 0);
	assert_int_equal(mv_auth_parse_challenge("Bearer realm=\"file:///etc/passwd\"", &c), -EINVAL);
	assert_int_equal(mv_auth_parse_challenge("Bearer realm=\"https://x", &c), -EINVAL);
	assert_int_equal(mv_auth_parse_challenge("Negotiate abc", &c), -EINVAL);
	assert_int_equal(mv_auth_parse_challenge("Bearer realm", &c), -EINVAL);
	assert_int_equal(mv_auth_parse_challenge("", &c), -EINVAL);

	char *tok;
	const char *j1 = "{\"token\":\"abc.def\",\"expires_in\":300}";
	assert_int_equal(mv_auth_parse_token(j1, strlen(j1), &tok, NULL), 0);
	assert_string_equal(tok, "abc.def");
	free(tok);
	const char *j2 = "{\"access_token\":\"xyz\"}";
	assert_int_equal(mv_auth_parse_token(j2, strlen(j2), &tok, NULL), 0);
	assert_string_equal(tok, "xyz");
	free(tok);
	assert_int_equal(mv_auth_parse_token("{}", 2, &tok, NULL), -EBADMSG);
}

struct collect {
	int n;
	char paths[64][256];
	char links[64][256];
	struct mv_tar_entry e[64];
};

static int collect_cb(void *ctx, const struct mv_tar_entry *e)
{
	struct collect *c = ctx;
	if (c->n >= 64)
		return -E2BIG;
	snprintf(c->paths[c->n], 256, "%s", e->path);
	snprintf(c->links[c->n], 256, "%s", e->link);
	c->e[c->n++] = *e;
	return 0;
}

static int tar_run(const struct tgen *t, struct collect *c, size_t step)
{
	struct mv_error *err = NULL;
	struct mv_tar *p = mv_tar_new(collect_cb, c);
	int rc = 0;
	for (size_t o = 0; o < t->len && !rc; o += step)
		rc = mv_tar_feed(p, t->p + o, t->len - o < step ? t->len - o : step, &err);
	if (!rc)
		rc = mv_tar_finish(p, &err);
	mv_tar_free(p);
	mv_error_free(err);
	return rc;
}

static void test_tar(void **s)
{
	struct tgen t = { 0 };
	char longname[300];
	memset(longname, 'n', sizeof(longname));
	memcpy(longname, "dir/", 4);
	longname[299] = 0;
	tg_header(&t, "./", '5', 0, NULL, 0755);
	tg_header(&t, "./dir/", '5', 0, NULL, 0755);
	tg_file(&t, "dir//a.txt", "hello", 5);
	tg_header(&t, "dir/sym", '2', 0, "../../../../etc/shadow", 0777);
	tg_header(&t, "dir/hard", '1', 0, "./dir/a.txt", 0644);
	tg_gnu_long(&t, 'L', longname);
	tg_file(&t, "ignored", "xy", 2);
	tg_pax(&t, "path", "dir/pax-name");
	tg_file(&t, "short", "z", 1);
	tg_header(&t, "dir/.wh.gone", '0', 0, NULL, 0);
	tg_end(&t);
	for (size_t step = 1; step <= 4096; step = step * 7 + 1) {
		struct collect c = { 0 };
		assert_int_equal(tar_run(&t, &c, step), 0);
		assert_int_equal(c.n, 7);   /* "./" is the root: not reported */
		assert_string_equal(c.paths[0], "dir");
		assert_string_equal(c.paths[1], "dir/a.txt");
		assert_int_equal(c.e[1].size, 5);
		assert_memory_equal(t.p + c.e[1].data_off, "hello", 5);
		assert_string_equal(c.links[2], "../../../../etc/shadow");   /* recorded, not resolved */
		assert_int_equal(c.e[2].type, MV_FT_SYMLINK);
		assert_string_equal(c.links[3], "dir/a.txt");
		assert_int_equal(c.e[4].size, 2);
		assert_int_equal(strlen(c.paths[4]) + 0, 255);   /* truncated copy in the test only */
		assert_string_equal(c.paths[5], "dir/pax-name");
		assert_memory_equal(t.p + c.e[5].data_off, "z", 1);
		assert_string_equal(c.paths[6], "dir/.wh.gone");
	}
	/* Truncated in the middle of a member. */
	struct tgen tr = { .p = t.p, .len = 512 * 3 + 100 };
	struct collect c = { 0 };
	assert_int_equal(tar_run(&tr, &c, 512), -EBADMSG);
	free(t.p);

	static const char *hostile[] = { "../x", "a/../../x", "/etc/passwd", "a/..", "" };
	for (size_t i = 0; i < MV_ARRAY_SIZE(hostile); i++) {
		struct tgen h = { 0 };
		tg_file(&h, hostile[i], "x", 1);
		tg_end(&h);
		struct collect hc = { 0 };
		assert_int_equal(tar_run(&h, &hc, 512), -EINVAL);
		free(h.p);
	}
	struct tgen h = { 0 };
	tg_header(&h, "link", '1', 0, "../escape", 0644);
	tg_end(&h);
	assert_int_equal(tar_run(&h, &c, 512), -EINVAL);
	free(h.p);
	/* Absurd size (PAX), bad checksum, unknown type. */
	h = (struct tgen){ 0 };
	tg_pax(&h, "size", "999999999999999999");
	tg_file(&h, "big", "x", 1);
	assert_int_equal(tar_run(&h, &c, 512), -EFBIG);
	free(h.p);
	h = (struct tgen){ 0 };
	tg_file(&h, "f", "x", 1);
	h.p[0] ^= 1;
	assert_int_equal(tar_run(&h, &c, 512), -EBADMSG);
	free(h.p);
	h = (struct tgen){ 0 };
	tg_header(&h, "sparse", 'S', 0, NULL, 0644);
	assert_int_equal(tar_run(&h, &c, 512), -ENOTSUP);
	free(h.p);
}

/* A layer of ~1.5 MiB with files of many sizes, half compressible. */
static struct tgen make_layer(void)
{
	struct tgen t = { 0 };
	uint8_t *buf = malloc(600000);
	uint32_t x = 12345;
	tg_header(&t, "data", '5', 0, NULL, 0755);
	size_t sizes[] = { 0, 1, 511, 512, 4097, 100000, 600000, 300000, 7 };
	for (size_t i = 0; i < MV_ARRAY_SIZE(sizes); i++) {
		for (size_t k = 0; k < sizes[i]; k++) {
			x = x * 1103515245 + 12345;
			buf[k] = i % 2 ? (uint8_t)(x >> 16) : (uint8_t)("abcdefgh"[(x >> 16) & 7]);
		}
		char name[64];
		snprintf(name, sizeof(name), "data/f%zu", i);
		tg_file(&t, name, buf, sizes[i]);
	}
	tg_end(&t);
	free(buf);
	return t;
}

struct memblob {
	const uint8_t *p;
	size_t len;
	uint64_t fetched;
};

static int mem_fetch(void *ctx, uint64_t off, void *buf, size_t len, size_t *got)
{
	struct memblob *m = ctx;
	if (off > m->len)
		return -EINVAL;
	*got = len < m->len - off ? len : m->len - off;
	memcpy(buf, m->p + off, *got);
	m->fetched += *got;
	return 0;
}

static struct mv_layer_index *build(const uint8_t *gz, size_t n, size_t step, int gzip,
				    const struct mv_digest *want, int *rcp)
{
	struct mv_layer_builder *b = mv_layer_builder_new(gzip, 65536);
	struct mv_layer_index *idx = NULL;
	struct mv_error *err = NULL;
	int rc = 0;
	for (size_t o = 0; o < n && !rc; o += step)
		rc = mv_layer_builder_feed(b, gz + o, n - o < step ? n - o : step, &err);
	if (rc)
		mv_layer_builder_free(b);
	else
		rc = mv_layer_builder_finish(b, want, &idx, &err);
	if (rc) {
		assert_non_null(err);
		mv_error_free(err);
	}
	*rcp = rc;
	return idx;
}

static void check_reads(struct mv_layer_index *idx, const struct tgen *t, struct memblob *mb)
{
	for (size_t i = 0; i < mv_layer_index_count(idx); i++) {
		struct mv_tar_entry e;
		mv_layer_index_entry(idx, i, &e);
		if (e.type != MV_FT_REG)
			continue;
		uint8_t *got = malloc(e.size + 1);
		assert_int_equal(mv_layer_index_read(idx, mem_fetch, mb, e.data_off, got, e.size, NULL), 0);
		assert_memory_equal(got, t->p + e.data_off, e.size);
		free(got);
	}
}

static void test_layer_index(void **s)
{
	struct tgen t = make_layer();
	size_t gzlen;
	uint8_t *gz = tg_gzip(t.p, t.len, &gzlen);
	struct mv_digest dg, wrong;
	mv_digest_of(gz, gzlen, &dg);
	int rc;
	struct mv_layer_index *idx = build(gz, gzlen, 3000, 1, &dg, &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(mv_layer_index_count(idx), 10);
	assert_true(mv_layer_index_points(idx) >= 4);
	assert_int_equal(mv_layer_index_tar_size(idx), t.len);
	assert_int_equal(mv_layer_index_blob_size(idx), gzlen);
	assert_int_equal(mv_layer_index_find(idx, "data/f6"), 7);
	assert_int_equal(mv_layer_index_find(idx, "data/nope"), -ENOENT);

	struct memblob mb = { gz, gzlen, 0 };
	check_reads(idx, &t, &mb);
	/* The last small file costs far less than the blob. */
	struct mv_tar_entry e;
	mv_layer_index_entry(idx, 9, &e);
	uint8_t small[16];
	mb.fetched = 0;
	assert_int_equal(mv_layer_index_read(idx, mem_fetch, &mb, e.data_off, small, e.size, NULL), 0);
	assert_true(mb.fetched < gzlen / 3);

	/* Save, load, same answers; every single-byte corruption is caught. */
	void *enc;
	size_t elen;
	assert_int_equal(mv_layer_index_encode(idx, &enc, &elen), 0);
	struct mv_layer_index *idx2;
	assert_int_equal(mv_layer_index_decode(enc, elen, &idx2, NULL), 0);
	check_reads(idx2, &t, &mb);
	mv_layer_index_free(idx2);
	for (size_t off = 0; off < elen; off += elen / 97 + 1) {
		((uint8_t *)enc)[off] ^= 0x40;
		struct mv_error *err = NULL;
		assert_int_not_equal(mv_layer_index_decode(enc, elen, &idx2, &err), 0);
		mv_error_free(err);
		((uint8_t *)enc)[off] ^= 0x40;
	}
	assert_int_not_equal(mv_layer_index_decode(enc, elen - 1, &idx2, NULL), 0);
	char dir[] = "/tmp/mvimg.XXXXXX", path[256];
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/layer.idx", dir);
	assert_int_equal(mv_layer_index_save(idx, path, NULL), 0);
	assert_int_equal(mv_layer_index_load(path, &idx2, NULL), 0);
	assert_int_equal(mv_layer_index_count(idx2), 10);
	mv_layer_index_free(idx2);
	unlink(path);
	rmdir(dir);
	free(enc);
	mv_layer_index_free(idx);

	/* Truncated gzip, corrupt gzip, wrong digest. */
	assert_null(build(gz, gzlen - 100, 4096, 1, NULL, &rc));
	assert_int_equal(rc, -EBADMSG);
	wrong = dg;
	wrong.b[0] ^= 1;
	assert_null(build(gz, gzlen, 4096, 1, &wrong, &rc));
	assert_int_equal(rc, -EBADMSG);
	gz[gzlen / 2] ^= 0xff;
	gz[gzlen / 2 + 1] ^= 0xff;
	idx = build(gz, gzlen, 4096, 1, NULL, &rc);
	assert_int_not_equal(rc, 0);
	mv_layer_index_free(idx);

	/* Uncompressed layer: no points, reads are direct. */
	idx = build(t.p, t.len, 10000, 0, NULL, &rc);
	assert_int_equal(rc, 0);
	assert_int_equal(mv_layer_index_points(idx), 0);
	struct memblob raw = { t.p, t.len, 0 };
	check_reads(idx, &t, &raw);
	mv_layer_index_free(idx);
	free(gz);
	free(t.p);
}

static void test_chunkstore(void **s)
{
	char dir[] = "/tmp/mvcs.XXXXXX", p[512];
	assert_non_null(mkdtemp(dir));
	struct mv_chunkstore *cs;
	assert_int_equal(mv_chunkstore_open(dir, &cs, NULL), 0);
	struct mv_digest a, b, c;
	assert_int_equal(mv_chunkstore_put(cs, "alpha", 5, &a, NULL), 0);
	assert_int_equal(mv_chunkstore_put(cs, "alpha", 5, &a, NULL), 0);
	assert_int_equal(mv_chunkstore_put(cs, "beta", 4, &b, NULL), 0);
	assert_int_equal(mv_chunkstore_put(cs, "", 0, &c, NULL), 0);
	assert_true(mv_chunkstore_has(cs, &a));
	void *d;
	size_t n;
	assert_int_equal(mv_chunkstore_get(cs, &a, &d, &n, NULL), 0);
	assert_int_equal(n, 5);
	assert_memory_equal(d, "alpha", 5);
	free(d);
	/* Corrupt b on disk: detected, removed. */
	char hex[MV_DIGEST_STRLEN];
	mv_digest_format(&b, hex);
	snprintf(p, sizeof(p), "%s/chunks/%.2s/%s", dir, hex + 7, hex + 9);
	FILE *f = fopen(p, "w");
	fputs("BETA", f);
	fclose(f);
	struct mv_error *err = NULL;
	assert_int_equal(mv_chunkstore_get(cs, &b, &d, &n, &err), -EBADMSG);
	mv_error_free(err);
	assert_false(mv_chunkstore_has(cs, &b));
	assert_int_equal(mv_chunkstore_get(cs, &b, &d, &n, NULL), -ENOENT);
	/* Refs and gc. */
	assert_int_equal(mv_chunkstore_put(cs, "beta", 4, &b, NULL), 0);
	assert_int_equal(mv_chunkstore_ref_set(cs, "container-1", &a, 1, NULL), 0);
	assert_int_equal(mv_chunkstore_ref_set(cs, "../evil", &a, 1, NULL), -EINVAL);
	uint64_t fc, fb;
	assert_int_equal(mv_chunkstore_gc(cs, 3600, &fc, &fb, NULL), 0);
	assert_int_equal(fc, 0);   /* everything is young */
	assert_int_equal(mv_chunkstore_gc(cs, 0, &fc, &fb, NULL), 0);
	assert_int_equal(fc, 2);
	assert_int_equal(fb, 4);
	assert_true(mv_chunkstore_has(cs, &a));
	assert_false(mv_chunkstore_has(cs, &b));
	/* A damaged reference set stops gc instead of losing data. */
	snprintf(p, sizeof(p), "%s/refs/container-1", dir);
	f = fopen(p, "r+");
	fputc('X', f);
	fclose(f);
	err = NULL;
	assert_int_equal(mv_chunkstore_gc(cs, 0, &fc, &fb, &err), -EBADMSG);
	mv_error_free(err);
	assert_true(mv_chunkstore_has(cs, &a));
	assert_int_equal(mv_chunkstore_ref_drop(cs, "container-1", NULL), 0);
	assert_int_equal(mv_chunkstore_gc(cs, 0, &fc, &fb, NULL), 0);
	assert_int_equal(fc, 1);
	assert_false(mv_chunkstore_has(cs, &a));
	mv_chunkstore_close(cs);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}


/* Image references: every field checked, the field named in the error. */
static void test_image_ref(void **s)
{
	(void)s;
	struct mv_image_ref r;
	struct mv_error *e = NULL;
	char url[512];
	assert_int_equal(mv_image_ref_parse("127.0.0.1:5000/test/busybox", &r, NULL), 0);
	assert_string_equal(r.registry, "127.0.0.1:5000");
	assert_string_equal(r.repo, "test/busybox");
	assert_string_equal(r.ref, "latest");
	mv_image_ref_url(&r, 0, url, sizeof(url));
	assert_string_equal(url, "http://127.0.0.1:5000");
	assert_int_equal(mv_image_ref_parse("registry.example.com/a.b/c__d/e-f--g:V1.2_x-y", &r, NULL), 0);
	assert_string_equal(r.registry, "registry.example.com");
	assert_string_equal(r.repo, "a.b/c__d/e-f--g");
	assert_string_equal(r.ref, "V1.2_x-y");
	mv_image_ref_url(&r, 0, url, sizeof(url));
	assert_string_equal(url, "https://registry.example.com");
	mv_image_ref_url(&r, 1, url, sizeof(url));
	assert_string_equal(url, "http://registry.example.com");
	assert_int_equal(mv_image_ref_parse("localhost/x:" "_tag", &r, NULL), 0);
	assert_int_equal(mv_image_ref_parse("[::1]:5000/x@" D1, &r, NULL), 0);
	assert_string_equal(r.registry, "[::1]:5000");
	assert_string_equal(r.ref, D1);
	mv_image_ref_url(&r, 0, url, sizeof(url));
	assert_string_equal(url, "http://[::1]:5000");
	/* tag and digest: the digest wins */
	assert_int_equal(mv_image_ref_parse("h.io/x:v1@" D1, &r, NULL), 0);
	assert_string_equal(r.ref, D1);
	/* a name that only looks like loopback is not */
	assert_int_equal(mv_image_ref_parse("127.example.com/x", &r, NULL), 0);
	mv_image_ref_url(&r, 0, url, sizeof(url));
	assert_string_equal(url, "https://127.example.com");

	static const struct { const char *ref, *field; } bad[] = {
		{ "", "image" }, { "busybox", "image" }, { "library/busybox:1", "image" },
		{ "h.io/", "repository" }, { "h.io/Upper", "repository" }, { "h.io/a//b", "repository" },
		{ "h.io/a/", "repository" }, { "h.io/-a", "repository" }, { "h.io/a-", "repository" },
		{ "h.io/a..b", "repository" }, { "h.io/a___b", "repository" }, { "h.io/a b", "repository" },
		{ "h.io/a:", "tag" }, { "h.io/a:-x", "tag" }, { "h.io/a:.x", "tag" }, { "h.io/a:x/y", "repository" },
		{ "h.io/a:x!y", "tag" }, { "h.io/a@sha256:abc", "digest" }, { "h.io/a@" D1 "x", "digest" },
		{ "h.io/a@sha512:00", "digest" }, { "h.io:0/a", "registry" }, { "h.io:65536/a", "registry" },
		{ "h.io:/a", "registry" }, { "h.io:05/a", "registry" }, { "-h.io/a", "registry" },
		{ "h-.io/a", "registry" }, { "h..io/a", "registry" }, { "h_x.io/a", "registry" },
		{ "[::1/a", "registry" }, { "h.io/a/../b", "repository" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e = NULL;
		int rc = mv_image_ref_parse(bad[i].ref, &r, &e);
		if (rc != -EINVAL || !e || strcmp(e->field, bad[i].field))
			fail_msg("%s: rc %d field %s", bad[i].ref, rc, e ? e->field : "(none)");
		mv_error_free(e);
	}
	/* pull, config and remove check their paths and names before any I/O */
	struct mv_image_info info;
	struct mv_image_paths none = { 0 }, paths = { .store_dir = "/nonexistent/mv-store",
						      .mapping_db = "/nonexistent/mv-map.db" };
	e = NULL;
	assert_int_equal(mv_image_pull(&none, "h.io/x", NULL, NULL, &info, &e), -EINVAL);
	assert_string_equal(e->field, "store_dir");
	mv_error_free(e);
	e = NULL;
	assert_int_equal(mv_image_pull(&paths, "h.io/X", NULL, NULL, &info, &e), -EINVAL);
	assert_string_equal(e->field, "repository");
	mv_error_free(e);
	e = NULL;
	assert_int_equal(mv_image_remove(&paths, "nohost", &e), -EINVAL);
	assert_string_equal(e->field, "image");
	mv_error_free(e);
	char *json;
	size_t jlen;
	e = NULL;
	assert_int_equal(mv_image_config(&paths, "h.io/x:v1", &json, &jlen, &e), -ENOENT);
	assert_string_equal(e->field, "image");
	mv_error_free(e);
	struct mv_image_cache_stats cst;
	e = NULL;
	assert_int_equal(mv_image_cache_prepopulate(&paths, "h.io/x", NULL, NULL, &cst, &e), -EINVAL);
	assert_string_equal(e->field, "cache_dir");
	mv_error_free(e);
	assert_int_equal(access("/nonexistent/mv-store", F_OK), -1);

	char tag[200];
	memset(tag, 'a', sizeof(tag));
	memcpy(tag, "h.io/x:", 7);
	tag[7 + 128] = 0;
	assert_int_equal(mv_image_ref_parse(tag, &r, NULL), 0);
	tag[7 + 128] = 'a';
	tag[7 + 129] = 0;
	assert_int_equal(mv_image_ref_parse(tag, &r, NULL), -EINVAL);
}

/* The published layer-index manifest (publish.c): every field checked. */
#define D2 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D3 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define DI "sha256:3333333333333333333333333333333333333333333333333333333333333333"
#define EMPTY "{\"mediaType\": \"application/vnd.oci.empty.v1+json\", \"digest\": " \
	"\"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a\", \"size\": 2}"
#define OCI_MT "application/vnd.oci.image.manifest.v1+json"

static int parse_pub(const char *artifact, const char *config, const char *subject, const char *layer,
		     struct mvp_published *pub)
{
	char json[4096];
	struct mv_manifest m = { .kind = MV_MANIFEST_IMAGE, .n_items = 2 };
	struct mv_descriptor items[2];
	struct mv_digest md;
	struct mv_error *e = NULL;
	strcpy(m.media_type, OCI_MT);
	memset(items, 0, sizeof(items));
	assert_int_equal(mv_digest_parse(D2, &items[0].digest), 0);
	assert_int_equal(mv_digest_parse(D3, &items[1].digest), 0);
	m.items = items;
	assert_int_equal(mv_digest_parse(D1, &md), 0);
	snprintf(json, sizeof(json), "{\"schemaVersion\": 2, \"mediaType\": \"" OCI_MT "\", "
		 "\"artifactType\": \"%s\", \"config\": %s, \"subject\": %s, \"layers\": [%s]}",
		 artifact, config, subject, layer);
	int rc = mvp_published_parse(json, strlen(json), &md, &m, pub, &e);
	if (rc < 0)
		assert_true(e && e->field[0]);
	mv_error_free(e);
	return rc;
}

static void test_published(void **s)
{
	(void)s;
	static struct mvp_published pub;
	const char *art = MVP_ARTIFACT_TYPE;
	const char *subj = "{\"mediaType\": \"" OCI_MT "\", \"digest\": \"" D1 "\", \"size\": 500}";
	const char *lay = "{\"mediaType\": \"" MVP_ARTIFACT_TYPE "\", \"digest\": \"" DI "\", \"size\": 99, "
			  "\"annotations\": {\"dev.memvisor.layer.digest\": \"" D3 "\"}}";
	char tag[MVP_TAG_LEN];
	struct mv_digest md;
	assert_int_equal(mv_digest_parse(D1, &md), 0);
	mvp_published_tag(&md, tag);
	assert_string_equal(tag, "sha256-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.mvidx");
	assert_int_equal(parse_pub(art, EMPTY, subj, lay, &pub), 0);
	assert_false(pub.have[0]);
	assert_true(pub.have[1]);
	assert_int_equal(pub.size[1], 99);
	assert_int_equal(parse_pub("application/x", EMPTY, subj, lay, &pub), -EBADMSG);
	assert_int_equal(parse_pub(art, "{\"mediaType\": \"application/vnd.oci.empty.v1+json\", "
				   "\"digest\": \"" D2 "\", \"size\": 2}", subj, lay, &pub), -EBADMSG);
	assert_int_equal(parse_pub(art, EMPTY, "{\"mediaType\": \"" OCI_MT "\", \"digest\": \"" D2 "\", "
				   "\"size\": 500}", lay, &pub), -EBADMSG);
	assert_int_equal(parse_pub(art, EMPTY, "{\"mediaType\": \"" OCI_MT "\", \"digest\": \"" D1 "\", "
				   "\"size\": -1}", lay, &pub), -EBADMSG);
	assert_int_equal(parse_pub(art, EMPTY, subj, "", &pub), -EBADMSG);
	char bad[1024];
	static const char *const layers[] = {
		/* a layer the image does not have */
		"{\"mediaType\": \"" MVP_ARTIFACT_TYPE "\", \"digest\": \"" DI "\", \"size\": 99, "
		"\"annotations\": {\"dev.memvisor.layer.digest\": \"" D1 "\"}}",
		/* size 0, too big, a string */
		"{\"mediaType\": \"" MVP_ARTIFACT_TYPE "\", \"digest\": \"" DI "\", \"size\": 0, "
		"\"annotations\": {\"dev.memvisor.layer.digest\": \"" D3 "\"}}",
		"{\"mediaType\": \"" MVP_ARTIFACT_TYPE "\", \"digest\": \"" DI "\", \"size\": 9999999999, "
		"\"annotations\": {\"dev.memvisor.layer.digest\": \"" D3 "\"}}",
		"{\"mediaType\": \"" MVP_ARTIFACT_TYPE "\", \"digest\": \"" DI "\", \"size\": \"99\", "
		"\"annotations\": {\"dev.memvisor.layer.digest\": \"" D3 "\"}}",
		/* wrong media type, bad digest, no annotation */
		"{\"mediaType\": \"application/octet-stream\", \"digest\": \"" DI "\", \"size\": 99, "
		"\"annotations\": {\"dev.memvisor.layer.digest\": \"" D3 "\"}}",
		"{\"mediaType\": \"" MVP_ARTIFACT_TYPE "\", \"digest\": \"sha256:00\", \"size\": 99, "
		"\"annotations\": {\"dev.memvisor.layer.digest\": \"" D3 "\"}}",
		"{\"mediaType\": \"" MVP_ARTIFACT_TYPE "\", \"digest\": \"" DI "\", \"size\": 99}",
	};
	for (size_t i = 0; i < sizeof(layers) / sizeof(layers[0]); i++)
		if (parse_pub(art, EMPTY, subj, layers[i], &pub) != -EBADMSG)
			fail_msg("layer %zu accepted", i);
	/* more entries than the image has layers */
	snprintf(bad, sizeof(bad), "%s, %s, %s", lay, lay, lay);
	assert_int_equal(parse_pub(art, EMPTY, subj, bad, &pub), -EBADMSG);
}

/* Two handles on one store in one process, writing at once: their temp
 * names must never collide (they did when each handle counted from 0). */
struct put_job {
	const char *dir;
	int who, failed;
};

static void *put_many(void *arg)
{
	struct put_job *j = arg;
	struct mv_chunkstore *cs;
	if (mv_chunkstore_open(j->dir, &cs, NULL) < 0) {
		j->failed = 1;
		return NULL;
	}
	for (int i = 0; i < 300; i++) {
		char buf[64];
		struct mv_digest d;
		int n = snprintf(buf, sizeof(buf), "chunk %d of writer %d", i, j->who);
		if (mv_chunkstore_put(cs, buf, (size_t)n, &d, NULL) < 0 || !mv_chunkstore_has(cs, &d))
			j->failed = 1;
	}
	mv_chunkstore_close(cs);
	return NULL;
}

static void test_chunkstore_two_handles(void **s)
{
	(void)s;
	char dir[] = "/tmp/mvcs2.XXXXXX";
	assert_non_null(mkdtemp(dir));
	struct put_job j[2] = { { dir, 0, 0 }, { dir, 1, 0 } };
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, put_many, &j[i]), 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	assert_false(j[0].failed);
	assert_false(j[1].failed);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_digest),
		cmocka_unit_test(test_image_ref),
		cmocka_unit_test(test_published),
		cmocka_unit_test(test_manifest),
		cmocka_unit_test(test_auth),
		cmocka_unit_test(test_tar),
		cmocka_unit_test(test_layer_index),
		cmocka_unit_test(test_chunkstore),
		cmocka_unit_test(test_chunkstore_two_handles),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
