/* Integration probe for src/image against a real registry: pulls a tag with
 * mv_image_pull (config, every layer's index built in one streaming pass,
 * digest-checked, or taken from the registry), reloads the indexes, then reads one file lazily by
 * Range requests, stores it as chunks and reads it again from the chunk
 * store, and finally prints every member of every layer with the SHA-256 of
 * its content (read lazily) for tests/integration/image_lazy.sh to compare.
 * With two mount points it then builds the image's mapping table
 * (STORE/map.db), mounts containers "a" and "b" of the image there over FUSE
 * (writable dirs STORE/upper-a, -b), creates STORE/mounted, rewrites
 * STORE/stats.json (each mount's fetch counters) every 20 ms, and unmounts
 * and exits when its stdin closes.
 *   image_probe URL REPO TAG STORE FILE [MNT_A MNT_B]   (FILE: in layer 0)
 * Subcommands for tests/integration/image_pull.sh: pull (mv_image_pull, then
 * mv_image_config; prints JSON), prepopulate (the shared cache), mount (one
 * container over FUSE with or without the cache, counters in
 * STORE/stats.json, until stdin closes) and rm (mv_image_remove). */
#include <errno.h>
#include <poll.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/image.h"
#include "memvisor/util.h"

struct fetchctx {
	struct mv_registry *r;
	struct mv_digest blob;
};

static int reg_fetch(void *ctx, uint64_t off, void *buf, size_t len, size_t *got)
{
	struct fetchctx *f = ctx;
	return mv_registry_read_range(f->r, &f->blob, off, buf, len, got, NULL);
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
		len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s\"%c\": ", i ? ", " : "{",
					'a' + i);
		len += (size_t)mv_image_fs_stats_json(&st, buf + len, sizeof(buf) - len);
	}
	len += (size_t)snprintf(buf + len, sizeof(buf) - len, "}\n");
	snprintf(path, sizeof(path), "%s/stats.json", store);
	if (mv_write_file_atomic(path, buf, len) < 0)
		die("stats", -EIO, NULL);
}

/* Two FUSE mounts of the pulled image, counters until stdin closes. */
static void serve(char **argv, const char *name)
{
	struct mv_error *e = NULL;
	char db[4096], upper[4096];
	int rc;
	snprintf(db, sizeof(db), "%s/map.db", argv[4]);
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

/* ---- subcommands for the pull, published-index and cache tests ---- */

static void paths_of(const char *store, const char *cache, struct mv_image_paths *p, char *db, size_t len)
{
	snprintf(db, len, "%s/map.db", store);
	*p = (struct mv_image_paths){ .store_dir = store, .mapping_db = db,
				      .cache_dir = cache && strcmp(cache, "-") ? cache : NULL };
}

/* pull STORE REF: prints what mv_image_pull did as JSON. */
static int cmd_pull(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	struct mv_image_paths p;
	struct mv_image_info info;
	struct mv_error *e = NULL;
	char db[4096], ds[MV_DIGEST_STRLEN];
	paths_of(argv[2], NULL, &p, db, sizeof(db));
	int rc = mv_image_pull(&p, argv[3], NULL, NULL, &info, &e);
	if (rc < 0)
		die("pull", rc, e);
	char *cfg;
	size_t cfglen;
	if ((rc = mv_image_config(&p, info.name, &cfg, &cfglen, &e)) < 0)
		die("config", rc, e);
	printf("{\"name\": \"%s\", \"manifest\": \"%s\", \"layers\": %u, \"layers_bytes\": %llu, "
	       "\"registry_bytes\": %llu, \"layer_bytes\": %llu, \"indexes_from_registry\": %d, "
	       "\"config_bytes\": %zu}\n", info.name, mv_digest_format(&info.manifest, ds), info.layers,
	       (unsigned long long)info.layers_bytes, (unsigned long long)info.registry_bytes,
	       (unsigned long long)info.layer_bytes, info.indexes_from_registry, cfglen);
	free(cfg);
	return 0;
}

/* prepopulate STORE CACHE REF */
static int cmd_prepopulate(int argc, char **argv)
{
	if (argc != 5)
		return 2;
	struct mv_image_paths p;
	struct mv_image_cache_stats st;
	struct mv_error *e = NULL;
	char db[4096];
	paths_of(argv[2], argv[3], &p, db, sizeof(db));
	int rc = mv_image_cache_prepopulate(&p, argv[4], NULL, NULL, &st, &e);
	if (rc < 0)
		die("prepopulate", rc, e);
	printf("{\"files\": %llu, \"bytes\": %llu, \"registry_bytes\": %llu}\n",
	       (unsigned long long)st.files, (unsigned long long)st.bytes,
	       (unsigned long long)st.registry_bytes);
	return 0;
}

/* rm STORE NAME */
static int cmd_rm(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	struct mv_image_paths p;
	struct mv_error *e = NULL;
	char db[4096];
	paths_of(argv[2], NULL, &p, db, sizeof(db));
	int rc = mv_image_remove(&p, argv[3], &e);
	if (rc < 0)
		die("rm", rc, e);
	return 0;
}

static void write_one_stats(const char *store, struct mv_image_fs *fs)
{
	struct mv_image_fs_stats st;
	char path[4096], buf[1024];
	mv_image_fs_stats(fs, &st);
	int len = mv_image_fs_stats_json(&st, buf, sizeof(buf));
	snprintf(path, sizeof(path), "%s/stats.json", store);
	if (mv_write_file_atomic(path, buf, (size_t)len) < 0)
		die("stats", -EIO, NULL);
}

/* mount STORE CACHE|- REF MNT: pulls (idempotent), mounts container "c" of
 * the image at MNT, rewrites STORE/stats.json every 20 ms, creates
 * STORE/mounted, and unmounts when stdin closes. */
static int cmd_mount(int argc, char **argv)
{
	if (argc != 6)
		return 2;
	struct mv_image_paths p;
	struct mv_image_info info;
	struct mv_image_ref ref;
	struct mv_error *e = NULL;
	char db[4096], url[512], upper[4096];
	paths_of(argv[2], argv[3], &p, db, sizeof(db));
	int rc = mv_image_pull(&p, argv[4], NULL, NULL, &info, &e);
	if (rc < 0 || (rc = mv_image_ref_parse(argv[4], &ref, &e)) < 0)
		die("pull", rc, e);
	mv_image_ref_url(&ref, 0, url, sizeof(url));
	snprintf(upper, sizeof(upper), "%s/upper-c", argv[2]);
	struct mv_image_fs_config cfg = { .mapping_db = db, .image = info.name, .container = "c",
					  .store_dir = argv[2], .upper_dir = upper, .registry_url = url,
					  .repo = ref.repo, .cache_dir = p.cache_dir };
	struct mv_image_fs *fs;
	if ((rc = mv_image_fs_mount(argv[5], &cfg, &fs, &e)) < 0)
		die("mount", rc, e);
	write_one_stats(argv[2], fs);
	snprintf(upper, sizeof(upper), "%s/mounted", argv[2]);
	if (mv_write_file_atomic(upper, "1\n", 2) < 0)
		die("mounted", -EIO, NULL);
	for (;;) {
		struct pollfd pf = { .fd = 0, .events = POLLIN };
		char c[64];
		if (poll(&pf, 1, 20) > 0 && read(0, c, sizeof(c)) <= 0)
			break;
		write_one_stats(argv[2], fs);
	}
	write_one_stats(argv[2], fs);
	mv_image_fs_unmount(fs);
	return 0;
}

/* Pulls URL/REPO:TAG into STORE (mapping database STORE/map.db) with
 * mv_image_pull and loads the layer indexes it kept. */
static struct mv_layer_index **pull(const char *url, const char *repo, const char *tag,
				    const char *store, struct mv_image_info *info, size_t *n,
				    struct mv_digest **blobs)
{
	struct mv_error *e = NULL;
	char ref[1024], db[4096], path[4096], hex[MV_DIGEST_STRLEN];
	int rc;
	snprintf(ref, sizeof(ref), "%s/%s:%s", strstr(url, "://") ? strstr(url, "://") + 3 : url, repo, tag);
	snprintf(db, sizeof(db), "%s/map.db", store);
	struct mv_image_paths p = { .store_dir = store, .mapping_db = db };
	if ((rc = mv_image_pull(&p, ref, NULL, NULL, info, &e)) < 0)
		die("pull", rc, e);
	struct mv_mapping *map;
	int64_t id;
	if ((rc = mv_mapping_open(db, &map, &e)) < 0 || (rc = mv_mapping_find_image(map, info->name, &id)) < 0 ||
	    (rc = mv_mapping_image_layers(map, id, blobs, n, &e)) < 0)
		die("mapping", rc, e);
	mv_mapping_close(map);
	struct mv_layer_index **idx = calloc(*n ? *n : 1, sizeof(*idx));
	for (size_t i = 0; i < *n; i++) {
		snprintf(path, sizeof(path), "%s/indexes/%s.idx", store, mv_digest_format(&(*blobs)[i], hex) + 7);
		if ((rc = mv_layer_index_load(path, &idx[i], &e)) < 0)
			die("load index", rc, e);
	}
	return idx;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "pull"))
		return cmd_pull(argc, argv);
	if (argc > 1 && !strcmp(argv[1], "prepopulate"))
		return cmd_prepopulate(argc, argv);
	if (argc > 1 && !strcmp(argv[1], "rm"))
		return cmd_rm(argc, argv);
	if (argc > 1 && !strcmp(argv[1], "mount"))
		return cmd_mount(argc, argv);
	if (argc != 6 && argc != 8) {
		fprintf(stderr, "usage: image_probe URL REPO TAG STORE FILE [MNT_A MNT_B]\n"
			"       image_probe pull STORE REF\n"
			"       image_probe prepopulate STORE CACHE REF\n"
			"       image_probe mount STORE CACHE|- REF MNT\n"
			"       image_probe rm STORE NAME\n");
		return 2;
	}
	struct mv_error *e = NULL;
	struct mv_registry *r;
	struct mv_image_info info;
	size_t n_layers;
	struct mv_digest *blobs;
	int rc;
	struct mv_chunkstore *cs;
	uint64_t t0 = mv_now_ns();
	struct mv_layer_index **idx = pull(argv[1], argv[2], argv[3], argv[4], &info, &n_layers, &blobs);
	uint64_t index_bytes = info.layer_bytes, index_ns = mv_now_ns() - t0;
	if ((rc = mv_registry_open(argv[1], argv[2], &r, &e)) < 0)
		die("open", rc, e);
	if ((rc = mv_chunkstore_open(argv[4], &cs, &e)) < 0)
		die("store", rc, e);
	uint64_t before;

	/* One lazy read, then the same file from the chunk store. */
	int fi = mv_layer_index_find(idx[0], argv[5]);
	if (fi < 0)
		die(argv[5], fi, NULL);
	struct mv_tar_entry fe;
	mv_layer_index_entry(idx[0], (size_t)fi, &fe);
	struct fetchctx fc = { r, blobs[0] };
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
	for (unsigned i = 0; i < n_layers; i++) {
		fc.blob = blobs[i];
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
		(unsigned long long)mv_layer_index_blob_size(idx[0]), mv_layer_index_points(idx[0]), argv[5],
		(unsigned long long)fe.size, (unsigned long long)lazy_bytes,
		(unsigned long long)lazy_reqs, (unsigned long long)second_bytes,
		(unsigned long long)index_bytes, index_ns / 1e6);
	if (argc == 8)
		serve(argv, info.name);
	for (unsigned i = 0; i < n_layers; i++)
		mv_layer_index_free(idx[i]);
	free(idx);
	free(blobs);
	mv_chunkstore_close(cs);
	mv_registry_close(r);
	return 0;
}
