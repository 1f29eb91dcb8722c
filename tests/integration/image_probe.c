/* Integration probe for src/image against a real registry: resolves a tag,
 * fetches the config, builds every layer's index in one streaming pass
 * (digest-checked), saves and reloads it, then reads one file lazily by
 * Range requests, stores it as chunks and reads it again from the chunk
 * store, and finally prints every member of every layer with the SHA-256 of
 * its content (read lazily) for tests/integration/image_lazy.sh to compare.
 * With two mount points it then builds the image's mapping table
 * (STORE/map.db), mounts containers "a" and "b" of the image there over FUSE
 * (writable dirs STORE/upper-a, -b), creates STORE/mounted, rewrites
 * STORE/stats.json (each mount's fetch counters) every 20 ms, and unmounts
 * and exits when its stdin closes.
 *   image_probe URL REPO TAG STORE FILE [MNT_A MNT_B]   (FILE: in layer 0) */
#include <errno.h>
#include <poll.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/image.h"
#include "memvisor/util.h"

struct rangebuf {
	uint8_t *p;
	size_t have, cap;
};

static int range_sink(void *ctx, const void *d, size_t n)
{
	struct rangebuf *b = ctx;
	if (n > b->cap - b->have)
		return -EFBIG;
	memcpy(b->p + b->have, d, n);
	b->have += n;
	return 0;
}

struct fetchctx {
	struct mv_registry *r;
	struct mv_digest blob;
};

static int reg_fetch(void *ctx, uint64_t off, void *buf, size_t len, size_t *got)
{
	struct fetchctx *f = ctx;
	struct rangebuf b = { buf, 0, len };
	int rc = mv_registry_read_blob(f->r, &f->blob, off, len, range_sink, &b, NULL);
	*got = b.have;
	return rc;
}

static int build_sink(void *ctx, const void *d, size_t n)
{
	return mv_layer_builder_feed(ctx, d, n, NULL);
}

static void die(const char *what, int rc, struct mv_error *e)
{
	fprintf(stderr, "image_probe: %s: %s\n", what, mv_error_msg(e, rc));
	exit(1);
}

static void write_stats(const char *store, struct mv_image_fs *const fs[2])
{
	char path[4096], buf[1024];
	size_t len = 0;
	for (int i = 0; i < 2; i++) {
		struct mv_image_fs_stats st;
		mv_image_fs_stats(fs[i], &st);
		len += (size_t)snprintf(buf + len, sizeof(buf) - len,
			"%s\"%c\": {\"registry_bytes\": %llu, \"registry_requests\": %llu, "
			"\"files_fetched\": %llu, \"chunk_reads\": %llu, \"copy_ups\": %llu}",
			i ? ", " : "{", 'a' + i, (unsigned long long)st.registry_bytes,
			(unsigned long long)st.registry_requests, (unsigned long long)st.files_fetched,
			(unsigned long long)st.chunk_reads, (unsigned long long)st.copy_ups);
	}
	len += (size_t)snprintf(buf + len, sizeof(buf) - len, "}\n");
	snprintf(path, sizeof(path), "%s/stats.json", store);
	if (mv_write_file_atomic(path, buf, len) < 0)
		die("stats", -EIO, NULL);
}

/* Mapping table, two FUSE mounts, counters until stdin closes. */
static void serve(char **argv, struct mv_layer_index **idx, unsigned n, const struct mv_digest *md)
{
	struct mv_error *e = NULL;
	struct mv_mapping *map;
	char db[4096], name[MV_DIGEST_STRLEN], upper[4096];
	int64_t image;
	int rc;
	snprintf(db, sizeof(db), "%s/map.db", argv[4]);
	mv_digest_format(md, name);
	uint64_t t0 = mv_now_ns();
	if ((rc = mv_mapping_open(db, &map, &e)) < 0 ||
	    (rc = mv_mapping_add_image(map, name, idx, n, &image, &e)) < 0)
		die("mapping table", rc, e);
	fprintf(stderr, "{\"mapping_build_ms\": %.1f}\n", (mv_now_ns() - t0) / 1e6);
	mv_mapping_close(map);
	struct mv_image_fs *fs[2];
	for (int i = 0; i < 2; i++) {
		char ctr[2] = { (char)('a' + i), 0 };
		snprintf(upper, sizeof(upper), "%s/upper-%s", argv[4], ctr);
		struct mv_image_fs_config cfg = { .mapping_db = db, .image = name, .container = ctr,
						  .store_dir = argv[4], .upper_dir = upper,
						  .registry_url = argv[1], .repo = argv[2] };
		if ((rc = mv_image_fs_mount(argv[6 + i], &cfg, &fs[i], &e)) < 0)
			die("mount", rc, e);
	}
	write_stats(argv[4], fs);
	fflush(stdout);
	snprintf(upper, sizeof(upper), "%s/mounted", argv[4]);
	if (mv_write_file_atomic(upper, "1\n", 2) < 0)
		die("mounted", -EIO, NULL);
	for (;;) {
		struct pollfd p = { .fd = 0, .events = POLLIN };
		int r = poll(&p, 1, 20);
		char c[64];
		if (r > 0 && read(0, c, sizeof(c)) <= 0)
			break;
		write_stats(argv[4], fs);
	}
	for (int i = 0; i < 2; i++)
		mv_image_fs_unmount(fs[i]);
}

int main(int argc, char **argv)
{
	if (argc != 6 && argc != 8) {
		fprintf(stderr, "usage: image_probe URL REPO TAG STORE FILE [MNT_A MNT_B]\n");
		return 2;
	}
	struct mv_error *e = NULL;
	struct mv_registry *r;
	struct mv_manifest *m;
	struct mv_digest md;
	int rc;
	if ((rc = mv_registry_open(argv[1], argv[2], &r, &e)) < 0)
		die("open", rc, e);
	if ((rc = mv_registry_get_manifest(r, argv[3], "linux", "amd64", &m, &md, &e)) < 0)
		die("manifest", rc, e);
	void *cfg;
	size_t cfglen;
	if ((rc = mv_registry_get_blob(r, &m->config.digest, 1 << 20, &cfg, &cfglen, &e)) < 0)
		die("config", rc, e);
	free(cfg);
	struct mv_chunkstore *cs;
	if ((rc = mv_chunkstore_open(argv[4], &cs, &e)) < 0)
		die("store", rc, e);
	char path[4096], hex[MV_DIGEST_STRLEN];
	snprintf(path, sizeof(path), "%s/indexes", argv[4]);
	if (mv_mkdir_p(path, 0700) < 0)
		die("mkdir", -EIO, NULL);
	struct mv_layer_index **idx = calloc(m->n_items, sizeof(*idx));
	uint64_t t0 = mv_now_ns(), before = mv_registry_bytes_received(r);
	for (unsigned i = 0; i < m->n_items; i++) {
		const struct mv_descriptor *l = &m->items[i];
		struct mv_layer_builder *b = mv_layer_builder_new(l->compression == MV_LAYER_GZIP, 0);
		if ((rc = mv_registry_read_blob(r, &l->digest, 0, 0, build_sink, b, &e)) < 0)
			die("streaming layer", rc, e);
		struct mv_layer_index *built;
		if ((rc = mv_layer_builder_finish(b, &l->digest, &built, &e)) < 0)
			die("layer index", rc, e);
		snprintf(path, sizeof(path), "%s/indexes/%s.idx", argv[4], mv_digest_format(&l->digest, hex) + 7);
		if ((rc = mv_layer_index_save(built, path, &e)) < 0 ||
		    (rc = mv_layer_index_load(path, &idx[i], &e)) < 0)
			die("save/load index", rc, e);
		mv_layer_index_free(built);
	}
	uint64_t index_bytes = mv_registry_bytes_received(r) - before, index_ns = mv_now_ns() - t0;

	/* One lazy read, then the same file from the chunk store. */
	int fi = mv_layer_index_find(idx[0], argv[5]);
	if (fi < 0)
		die(argv[5], fi, NULL);
	struct mv_tar_entry fe;
	mv_layer_index_entry(idx[0], (size_t)fi, &fe);
	struct fetchctx fc = { r, m->items[0].digest };
	uint8_t *data = malloc(fe.size + 1);
	before = mv_registry_bytes_received(r);
	uint64_t req0 = mv_registry_requests(r);
	if ((rc = mv_layer_index_read(idx[0], reg_fetch, &fc, fe.data_off, data, fe.size, &e)) < 0)
		die("lazy read", rc, e);
	uint64_t lazy_bytes = mv_registry_bytes_received(r) - before;
	uint64_t lazy_reqs = mv_registry_requests(r) - req0;
	size_t nchunks = (fe.size + MV_CHUNK_MAX_SIZE - 1) / MV_CHUNK_MAX_SIZE;
	struct mv_digest *chunks = calloc(nchunks ? nchunks : 1, sizeof(*chunks));
	for (size_t c = 0; c < nchunks; c++) {
		size_t off = c * MV_CHUNK_MAX_SIZE, n = fe.size - off < MV_CHUNK_MAX_SIZE ? fe.size - off : MV_CHUNK_MAX_SIZE;
		if ((rc = mv_chunkstore_put(cs, data + off, n, &chunks[c], &e)) < 0)
			die("chunk put", rc, e);
	}
	if ((rc = mv_chunkstore_ref_set(cs, "probe", chunks, nchunks, &e)) < 0)
		die("ref set", rc, e);
	before = mv_registry_bytes_received(r);
	for (size_t c = 0; c < nchunks; c++) {
		void *cd;
		size_t cl;
		if ((rc = mv_chunkstore_get(cs, &chunks[c], &cd, &cl, &e)) < 0)
			die("chunk get", rc, e);
		if (memcmp(cd, data + c * MV_CHUNK_MAX_SIZE, cl))
			die("chunk content differs", -EIO, NULL);
		free(cd);
	}
	uint64_t second_bytes = mv_registry_bytes_received(r) - before;
	free(chunks);
	free(data);

	/* Every member, content read lazily from its layer. */
	for (unsigned i = 0; i < m->n_items; i++) {
		fc.blob = m->items[i].digest;
		for (size_t k = 0; k < mv_layer_index_count(idx[i]); k++) {
			struct mv_tar_entry x;
			mv_layer_index_entry(idx[i], k, &x);
			char sum[MV_DIGEST_STRLEN] = "-";
			if (x.type == MV_FT_REG) {
				uint8_t *buf = malloc(x.size + 1);
				struct mv_digest d;
				if ((rc = mv_layer_index_read(idx[i], reg_fetch, &fc, x.data_off, buf, x.size, &e)) < 0)
					die(x.path, rc, e);
				mv_digest_of(buf, x.size, &d);
				mv_digest_format(&d, sum);
				free(buf);
			}
			printf("%u\t%s\t%d\t%o\t%llu\t%s\t%s\n", i, x.path, x.type, x.mode,
			       (unsigned long long)x.size, x.link[0] ? x.link : "-", sum);
		}
	}
	fprintf(stderr, "{\"layer0_blob_bytes\": %llu, \"layer0_points\": %zu, \"file\": \"%s\", "
		"\"file_bytes\": %llu, \"lazy_fetched_bytes\": %llu, \"lazy_requests\": %llu, "
		"\"second_read_fetched_bytes\": %llu, \"index_all_layers_bytes\": %llu, "
		"\"index_all_layers_ms\": %.1f}\n",
		(unsigned long long)m->items[0].size, mv_layer_index_points(idx[0]), argv[5],
		(unsigned long long)fe.size, (unsigned long long)lazy_bytes,
		(unsigned long long)lazy_reqs, (unsigned long long)second_bytes,
		(unsigned long long)index_bytes, index_ns / 1e6);
	if (argc == 8)
		serve(argv, idx, m->n_items, &md);
	for (unsigned i = 0; i < m->n_items; i++)
		mv_layer_index_free(idx[i]);
	free(idx);
	mv_chunkstore_close(cs);
	mv_manifest_free(m);
	mv_registry_close(r);
	return 0;
}
