/* Container images: digests, OCI manifests, the registry client, the
 * content-addressed chunk store, tar parsing and gzip layer indexes (files'
 * offsets plus resume points, for lazy fetches by Range request).
 * Implemented in src/image/; used by the image tests and tools, later by the
 * daemon. Builds and tests with no daemon running. Formats:
 * docs/formats/chunk-store.md, docs/formats/layer-index.md (also the indexes
 * published in the registry), docs/formats/image-store.md (pulled images),
 * docs/formats/image-cache.md (the host-wide cache). */
#ifndef MEMVISOR_IMAGE_H
#define MEMVISOR_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include "memvisor/error.h"

/* ---- digests (src/image/digest.c) ---- */

#define MV_DIGEST_LEN 32
#define MV_DIGEST_STRLEN 72   /* "sha256:" + 64 hex + NUL */

struct mv_digest {
	uint8_t b[MV_DIGEST_LEN];
};

/* Strict parse of "sha256:" + 64 lowercase hex. -EINVAL otherwise. */
int mv_digest_parse(const char *s, struct mv_digest *out) MV_MUST_CHECK;
/* Writes "sha256:<hex>" into out (MV_DIGEST_STRLEN bytes); returns out. */
const char *mv_digest_format(const struct mv_digest *d, char out[MV_DIGEST_STRLEN]);
void mv_digest_of(const void *data, size_t len, struct mv_digest *out);
int mv_digest_equal(const struct mv_digest *a, const struct mv_digest *b);

/* Incremental SHA-256 (opaque; OpenSSL underneath). */
struct mv_sha256;
struct mv_sha256 *mv_sha256_new(void);   /* aborts on OOM */
void mv_sha256_update(struct mv_sha256 *h, const void *data, size_t len);
/* Writes the digest and frees h. */
void mv_sha256_final(struct mv_sha256 *h, struct mv_digest *out);
void mv_sha256_free(struct mv_sha256 *h);

/* ---- manifests and indexes (src/image/manifest.c) ---- */

#define MV_MANIFEST_MAX_BYTES (4u << 20)
#define MV_MANIFEST_MAX_LAYERS 256
#define MV_MANIFEST_MAX_ENTRIES 1024
#define MV_BLOB_MAX_SIZE (1ULL << 40)   /* 1 TiB: larger sizes are refused */

enum mv_manifest_kind { MV_MANIFEST_IMAGE = 1, MV_MANIFEST_INDEX = 2 };

enum mv_layer_compression {
	MV_LAYER_TAR = 0,
	MV_LAYER_GZIP = 1,
	MV_LAYER_ZSTD = 2,   /* parsed, not lazily readable yet */
};

struct mv_descriptor {
	char media_type[128];
	struct mv_digest digest;
	uint64_t size;
	/* Index entries only ("" when absent). */
	char os[32];
	char arch[32];
	char variant[32];
	/* Layers only. */
	enum mv_layer_compression compression;
};

/* A parsed manifest (kind IMAGE: config + layers) or index (kind INDEX:
 * entries in items). Plain data owned by the caller: mv_manifest_free(). */
struct mv_manifest {
	enum mv_manifest_kind kind;
	char media_type[128];
	struct mv_descriptor config;   /* IMAGE only */
	unsigned n_items;              /* layers (IMAGE) or manifests (INDEX) */
	struct mv_descriptor *items;
};

/* Validates every field of a manifest or index JSON document (media types
 * known, sizes in [0, MV_BLOB_MAX_SIZE], digests sha256:64hex, counts
 * bounded). content_type (the HTTP Content-Type, may be NULL) is used when the
 * document has no mediaType; when both are given they must agree. */
int mv_manifest_parse(const void *json, size_t len, const char *content_type,
		      struct mv_manifest **out, struct mv_error **err) MV_MUST_CHECK;
void mv_manifest_free(struct mv_manifest *m);
/* Index of the entry for os/arch (variant ignored), or -ENOENT. */
int mv_manifest_pick(const struct mv_manifest *idx, const char *os, const char *arch) MV_MUST_CHECK;
/* The Accept header value for manifest requests. */
const char *mv_manifest_accept(void);

/* ---- registry client (src/image/registry.c, auth.c) ---- */

/* A parsed `WWW-Authenticate: Bearer realm=...,service=...,scope=...`. */
struct mv_auth_challenge {
	char scheme[16];      /* "Bearer" or "Basic" */
	char realm[512];
	char service[256];
	char scope[512];
};
/* Parses one challenge header value; -EINVAL on malformed input. */
int mv_auth_parse_challenge(const char *hdr, struct mv_auth_challenge *out) MV_MUST_CHECK;
/* Extracts "token" (or "access_token") from a token endpoint's JSON reply
 * into a malloc'ed string owned by the caller. */
int mv_auth_parse_token(const void *json, size_t len, char **token,
			struct mv_error **err) MV_MUST_CHECK;

struct mv_registry;   /* opaque; one repository on one registry; not thread-safe */

/* base: "http://127.0.0.1:5000" or "https://host"; repo: "library/busybox". */
int mv_registry_open(const char *base, const char *repo, struct mv_registry **out,
		     struct mv_error **err) MV_MUST_CHECK;
void mv_registry_close(struct mv_registry *r);
/* Fetches the image manifest for ref (a tag or a digest). Indexes are
 * followed for os/arch, at most 2 levels deep (loops are refused). Digests
 * of manifests fetched by digest are verified. *digest_out (may be NULL) is
 * the digest of the image manifest returned; *out is the caller's. */
int mv_registry_get_manifest(struct mv_registry *r, const char *ref, const char *os,
			     const char *arch, struct mv_manifest **out,
			     struct mv_digest *digest_out, struct mv_error **err) MV_MUST_CHECK;
/* Reads a whole blob into memory (at most max bytes) and verifies its
 * digest. *data is malloc'ed and the caller's. */
int mv_registry_get_blob(struct mv_registry *r, const struct mv_digest *d, size_t max,
			 void **data, size_t *len, struct mv_error **err) MV_MUST_CHECK;
/* Streams a blob, or bytes [off, off+len) of it (len 0: to the end), to
 * sink. A Range reply must be 206 with the asked range. No digest check for
 * partial reads; a sink returning < 0 aborts with that code. */
typedef int (*mv_blob_sink)(void *ctx, const void *data, size_t len);
int mv_registry_read_blob(struct mv_registry *r, const struct mv_digest *d, uint64_t off,
			  uint64_t len, mv_blob_sink sink, void *ctx,
			  struct mv_error **err) MV_MUST_CHECK;
/* Reads bytes [off, off+len) of a blob (len > 0) into buf; *got is how
 * many arrived (short only at the blob's end), also on failure. The
 * registry side of an mv_blob_fetch (lazy reads through a layer index). */
int mv_registry_read_range(struct mv_registry *r, const struct mv_digest *d, uint64_t off,
			   void *buf, size_t len, size_t *got, struct mv_error **err) MV_MUST_CHECK;
/* One manifest as the registry stores it, by tag or digest (digest
 * checked), not parsed and no index followed (for artifacts such as the
 * published layer indexes). content_type (may be NULL) gets the reply's. */
int mv_registry_get_raw_manifest(struct mv_registry *r, const char *ref, void **data, size_t *len,
				 char *content_type, size_t ct_cap, struct mv_error **err) MV_MUST_CHECK;
/* Uploads a blob (HEAD first: nothing is sent when the registry has it;
 * else POST /blobs/uploads/ then one PUT ?digest=). *out gets its digest.
 * -EACCES when the registry refuses the push. */
int mv_registry_put_blob(struct mv_registry *r, const void *data, size_t len, struct mv_digest *out,
			 struct mv_error **err) MV_MUST_CHECK;
/* PUTs a manifest of media_type under ref (a tag or its digest). */
int mv_registry_put_manifest(struct mv_registry *r, const char *ref, const char *media_type,
			     const void *data, size_t len, struct mv_error **err) MV_MUST_CHECK;
/* Body bytes received from the registry so far (all requests). */
uint64_t mv_registry_bytes_received(const struct mv_registry *r);
uint64_t mv_registry_requests(const struct mv_registry *r);

/* ---- chunk store (src/image/chunkstore.c; docs/formats/chunk-store.md) ---- */

#define MV_CHUNK_MAX_SIZE (16u << 20)

struct mv_chunkstore;   /* opaque; one process at a time writes refs */

/* Opens (creating if needed) a store rooted at dir. */
int mv_chunkstore_open(const char *dir, struct mv_chunkstore **out,
		       struct mv_error **err) MV_MUST_CHECK;
void mv_chunkstore_close(struct mv_chunkstore *cs);
/* Stores data (≤ MV_CHUNK_MAX_SIZE) under its SHA-256, crash-safely; a chunk
 * already present is not rewritten. */
int mv_chunkstore_put(struct mv_chunkstore *cs, const void *data, size_t len,
		      struct mv_digest *out, struct mv_error **err) MV_MUST_CHECK;
/* Reads and verifies a chunk; *data is malloc'ed and the caller's. A chunk
 * whose content does not match its name is removed and -EBADMSG returned;
 * a missing one is -ENOENT. */
int mv_chunkstore_get(struct mv_chunkstore *cs, const struct mv_digest *d, void **data,
		      size_t *len, struct mv_error **err) MV_MUST_CHECK;
int mv_chunkstore_has(struct mv_chunkstore *cs, const struct mv_digest *d);
/* Replaces the reference set called name ([A-Za-z0-9._-], 1..128 chars, not
 * starting with '.') with digests[0..n). Chunks named by any reference set
 * survive mv_chunkstore_gc(). */
int mv_chunkstore_ref_set(struct mv_chunkstore *cs, const char *name,
			  const struct mv_digest *digests, size_t n,
			  struct mv_error **err) MV_MUST_CHECK;
int mv_chunkstore_ref_drop(struct mv_chunkstore *cs, const char *name,
			   struct mv_error **err) MV_MUST_CHECK;
/* Deletes every chunk no reference set names and that was not written (or
 * re-put) in the last grace_s seconds, and temp files older than that: the
 * grace period covers writers between their puts and their ref_set. */
int mv_chunkstore_gc(struct mv_chunkstore *cs, uint64_t grace_s, uint64_t *freed_chunks,
		     uint64_t *freed_bytes, struct mv_error **err) MV_MUST_CHECK;
/* Reference-set file codec (exposed for tests and the fuzz target). */
int mv_chunkrefs_encode(const struct mv_digest *d, size_t n, void **buf, size_t *len) MV_MUST_CHECK;
int mv_chunkrefs_decode(const void *buf, size_t len, struct mv_digest **d, size_t *n,
			struct mv_error **err) MV_MUST_CHECK;

/* ---- tar (src/image/tar.c) ---- */

enum mv_file_type {
	MV_FT_REG = 1, MV_FT_DIR, MV_FT_SYMLINK, MV_FT_HARDLINK,
	MV_FT_CHAR, MV_FT_BLOCK, MV_FT_FIFO,
};

#define MV_TAR_MAX_PATH 4096
#define MV_TAR_MAX_FILE (1ULL << 36)   /* 64 GiB per file */

/* One member of a layer. path is normalized ("a/b": no leading "./" or
 * "/", no "." or ".." components); link is the raw symlink target (never
 * resolved) or the normalized hard-link target path. */
struct mv_tar_entry {
	const char *path;
	const char *link;      /* "" when none */
	enum mv_file_type type;
	uint32_t mode;         /* permission bits incl. suid/sgid/sticky */
	uint32_t uid, gid;
	uint32_t devmajor, devminor;
	int64_t mtime;
	uint64_t size;         /* bytes of data (regular files only) */
	uint64_t data_off;     /* offset of the data in the uncompressed stream */
};

/* Push parser: feed the uncompressed tar stream in pieces of any size. The
 * callback sees each member once its header is complete (data follows). */
typedef int (*mv_tar_cb)(void *ctx, const struct mv_tar_entry *e);
struct mv_tar;   /* opaque */
struct mv_tar *mv_tar_new(mv_tar_cb cb, void *ctx);   /* aborts on OOM */
void mv_tar_free(struct mv_tar *t);
int mv_tar_feed(struct mv_tar *t, const void *data, size_t len,
		struct mv_error **err) MV_MUST_CHECK;
/* Checks the stream ended at a member boundary (end blocks or EOF). */
int mv_tar_finish(struct mv_tar *t, struct mv_error **err) MV_MUST_CHECK;
/* Normalizes a member name in place; -EINVAL for "..", absolute paths, empty. */
int mv_tar_normalize_path(char *path) MV_MUST_CHECK;

/* ---- gzip layer index (src/image/layer_index.c, zindex.c;
 *      docs/formats/layer-index.md) ---- */

#define MV_INDEX_SPAN (1u << 20)   /* resume point every ~1 MiB of output */
#define MV_INDEX_WINDOW 32768u

struct mv_layer_index;     /* opaque, immutable once built or loaded */
struct mv_layer_builder;   /* opaque */

/* Builds an index in one pass over a gzip'ed (or, gzip 0, plain) tar blob
 * fed in pieces. span 0 means MV_INDEX_SPAN. */
struct mv_layer_builder *mv_layer_builder_new(int gzip, uint32_t span);   /* aborts on OOM */
int mv_layer_builder_feed(struct mv_layer_builder *b, const void *data, size_t len,
			  struct mv_error **err) MV_MUST_CHECK;
/* Checks the stream ended cleanly and its digest equals expected (may be
 * NULL: no check), then hands the index to *out. Frees b either way. */
int mv_layer_builder_finish(struct mv_layer_builder *b, const struct mv_digest *expected,
			    struct mv_layer_index **out, struct mv_error **err) MV_MUST_CHECK;
void mv_layer_builder_free(struct mv_layer_builder *b);

void mv_layer_index_free(struct mv_layer_index *idx);
int mv_layer_index_encode(const struct mv_layer_index *idx, void **buf, size_t *len) MV_MUST_CHECK;
int mv_layer_index_decode(const void *buf, size_t len, struct mv_layer_index **out,
			  struct mv_error **err) MV_MUST_CHECK;
int mv_layer_index_save(const struct mv_layer_index *idx, const char *path,
			struct mv_error **err) MV_MUST_CHECK;
int mv_layer_index_load(const char *path, struct mv_layer_index **out,
			struct mv_error **err) MV_MUST_CHECK;

size_t mv_layer_index_count(const struct mv_layer_index *idx);
/* Entry i; its strings live as long as idx. */
void mv_layer_index_entry(const struct mv_layer_index *idx, size_t i, struct mv_tar_entry *out);
/* Entry by normalized path (the last one if repeated), or -ENOENT. */
int mv_layer_index_find(const struct mv_layer_index *idx, const char *path) MV_MUST_CHECK;
const struct mv_digest *mv_layer_index_blob_digest(const struct mv_layer_index *idx);
uint64_t mv_layer_index_blob_size(const struct mv_layer_index *idx);
uint64_t mv_layer_index_tar_size(const struct mv_layer_index *idx);
size_t mv_layer_index_points(const struct mv_layer_index *idx);

/* Random access: reads compressed bytes [off, off+len) of the blob into buf;
 * sets *got (short only at the blob's end). */
typedef int (*mv_blob_fetch)(void *ctx, uint64_t off, void *buf, size_t len, size_t *got);
/* Reads len bytes at uncompressed offset off, starting decompression at the
 * nearest resume point before off and fetching compressed input in growing
 * pieces (from 64 KiB) through fetch. */
int mv_layer_index_read(const struct mv_layer_index *idx, mv_blob_fetch fetch, void *ctx,
			uint64_t off, void *buf, size_t len, struct mv_error **err) MV_MUST_CHECK;

/* ---- per-container mapping tables (src/image/mapping.c) ---- */

/* One SQLite database holds every image's mapping rows (path tree with
 * attributes and where each file's bytes are) and each container's own rows
 * (copy-ups, new files, deletions) layered over its image's rows, which every
 * container of that image shares. Handles are not thread-safe: one per
 * thread (several handles, processes included, may share a database). */
struct mv_mapping;

#define MV_MAPPING_CHUNK (1u << 20)   /* files are stored as chunks of this size */
#define MV_MAPPING_ROOT 1u            /* inode number of "/" */
#define MV_MAPPING_NAME_MAX 255

struct mv_map_node {
	uint64_t ino, parent;
	char name[MV_MAPPING_NAME_MAX + 1];   /* "" for the root */
	enum mv_file_type type;      /* never MV_FT_HARDLINK: links share ino */
	uint32_t mode, uid, gid, nlink, devmajor, devminor;
	uint64_t size;
	int64_t mtime;
	char link[MV_TAR_MAX_PATH];       /* symlink target */
	char hardlink[MV_TAR_MAX_PATH];   /* path the layer linked to, "" if none */
	/* Where the bytes are: `upper` (the container's writable dir, file named
	 * by ino), else chunks (mv_mapping_chunks) once fetched, else bytes
	 * [data_off, +size) of layer `layer`'s uncompressed tar (-1: none). */
	int layer;
	uint64_t data_off;
	int has_chunks, upper;
	int64_t owner;   /* 0: an image row; else the container's own row */
};

struct mv_map_dirent {
	uint64_t ino;
	enum mv_file_type type;
	char name[MV_MAPPING_NAME_MAX + 1];
};

/* Opens (creating if needed) the database at path. */
int mv_mapping_open(const char *path, struct mv_mapping **out, struct mv_error **err) MV_MUST_CHECK;
void mv_mapping_close(struct mv_mapping *m);
/* Builds image `name`'s rows from its layers (layers[0] at the bottom) with
 * overlay semantics: `.wh.X` deletes X of lower layers, `.wh..wh..opq` hides
 * a directory's lower children, a non-directory replaces a lower directory
 * and its subtree and vice versa, hard links share their target's inode.
 * An image already built is not rebuilt. *image_id gets its id. */
int mv_mapping_add_image(struct mv_mapping *m, const char *name,
			 struct mv_layer_index *const *layers, size_t n, int64_t *image_id,
			 struct mv_error **err) MV_MUST_CHECK;
int mv_mapping_find_image(struct mv_mapping *m, const char *name, int64_t *image_id) MV_MUST_CHECK;
/* Deletes an image's rows (-EBUSY while it has containers). *unused (the
 * caller's) gets the layer blobs no other image lists. */
int mv_mapping_drop_image(struct mv_mapping *m, int64_t image_id, struct mv_digest **unused,
			  size_t *n_unused, struct mv_error **err) MV_MUST_CHECK;
/* The image's layer blob digests, bottom first; *blobs is the caller's. */
int mv_mapping_image_layers(struct mv_mapping *m, int64_t image_id, struct mv_digest **blobs,
			    size_t *n, struct mv_error **err) MV_MUST_CHECK;
/* Finds or creates container `name` of image_id (-EEXIST if it belongs to
 * another image). Container id 0 is never used: it names the image's rows. */
int mv_mapping_add_container(struct mv_mapping *m, int64_t image_id, const char *name,
			     int64_t *ctr_id, struct mv_error **err) MV_MUST_CHECK;
/* Deletes a container's rows and chunk list (not its chunks' reference set). */
int mv_mapping_drop_container(struct mv_mapping *m, int64_t ctr_id,
			      struct mv_error **err) MV_MUST_CHECK;

/* The view of container ctr (a bare image is seen through a container with
 * no rows of its own). -ENOENT when absent or
 * deleted. Every field read back is validated (-EBADMSG otherwise). */
int mv_mapping_lookup(struct mv_mapping *m, int64_t ctr, uint64_t parent, const char *name,
		      struct mv_map_node *out) MV_MUST_CHECK;
int mv_mapping_get(struct mv_mapping *m, int64_t ctr, uint64_t ino,
		   struct mv_map_node *out) MV_MUST_CHECK;
/* Children of parent sorted by name; *ents is the caller's (NULL if none). */
int mv_mapping_readdir(struct mv_mapping *m, int64_t ctr, uint64_t parent,
		       struct mv_map_dirent **ents, size_t *n) MV_MUST_CHECK;
/* A file's chunk digests (*d the caller's; an all-zero digest is a chunk
 * not fetched yet: large files arrive chunk by chunk), -ENOENT if none. */
int mv_mapping_chunks(struct mv_mapping *m, int64_t ctr, uint64_t ino, struct mv_digest **d,
		      size_t *n) MV_MUST_CHECK;
/* Records a file's chunks (zero digests: not fetched yet) on the rows ctr
 * sees for ino (the image's rows too, so other containers find them) and the
 * fetched ones in ctr's chunk list. */
int mv_mapping_set_chunks(struct mv_mapping *m, int64_t ctr, uint64_t ino,
			  const struct mv_digest *d, size_t n) MV_MUST_CHECK;
/* Every chunk ctr recorded (for its chunk-store reference set). */
int mv_mapping_ctr_chunks(struct mv_mapping *m, int64_t ctr, struct mv_digest **d,
			  size_t *n) MV_MUST_CHECK;
/* Writes container ctr's own row for (node->parent, node->name). */
int mv_mapping_put(struct mv_mapping *m, int64_t ctr, const struct mv_map_node *node) MV_MUST_CHECK;
/* Removes parent/name from ctr's view (a deletion row hides an image row). */
int mv_mapping_remove(struct mv_mapping *m, int64_t ctr, uint64_t parent,
		      const char *name) MV_MUST_CHECK;
/* A fresh inode number for a file ctr creates. */
int mv_mapping_new_ino(struct mv_mapping *m, int64_t ctr, uint64_t *ino) MV_MUST_CHECK;

/* ---- FUSE root of a container (src/image/fusefs.c) ---- */

struct mv_image_fs;   /* opaque: one mounted container root and its thread */

struct mv_image_fs_config {
	const char *mapping_db;     /* mv_mapping database holding the image */
	const char *image;          /* image name in it */
	const char *container;      /* container name (created when missing) */
	const char *store_dir;      /* chunk store; layer indexes in indexes/<hex>.idx */
	const char *upper_dir;      /* the container's writable directory */
	const char *registry_url;   /* where the layer blobs are */
	const char *repo;
	const char *cache_dir;      /* host-wide shared cache, read only here; NULL: none */
};

struct mv_image_fs_stats {
	uint64_t registry_bytes, registry_requests;   /* lazy layer reads */
	uint64_t files_fetched, chunk_reads, copy_ups;
	/* Files opened from the host-wide cache / not in it; bytes of the
	 * cache's chunks read. */
	uint64_t cache_hits, cache_misses, cache_hit_bytes;
};

/* Mounts the container's root at dir (default_permissions, not allow_other)
 * and serves it from a thread of its own until mv_image_fs_unmount. */
int mv_image_fs_mount(const char *dir, const struct mv_image_fs_config *cfg,
		      struct mv_image_fs **out, struct mv_error **err) MV_MUST_CHECK;
/* Unmounts (if still mounted), stops the thread and frees fs. */
void mv_image_fs_unmount(struct mv_image_fs *fs);
/* Counters so far (safe from any thread). */
void mv_image_fs_stats(struct mv_image_fs *fs, struct mv_image_fs_stats *out);
/* st as one line of JSON ({"registry_bytes":N,...}\n, the shim's
 * stats.json) into buf; returns its length as snprintf does. */
int mv_image_fs_stats_json(const struct mv_image_fs_stats *st, char *buf, size_t len);

/* ---- image references, pull, remove (src/image/pull.c) ---- */

/* "host[:port]/path/name[:tag|@sha256:...]"; a missing tag is "latest".
 * The registry is required (the first component must contain '.' or ':' or
 * be "localhost"); with both a tag and a digest the digest wins. An image is
 * stored under its canonical name "host[:port]/path/name@sha256:<manifest
 * hex>" (mv_image_info.name); the other calls take that or a ref pulled here. */
struct mv_image_ref {
	char registry[256];   /* "127.0.0.1:5000" */
	char repo[256];       /* "test/busybox" */
	char ref[160];        /* tag or digest */
};
int mv_image_ref_parse(const char *s, struct mv_image_ref *out,
		       struct mv_error **err) MV_MUST_CHECK;
/* "http://HOST" for loopback/localhost or when insecure, else "https://HOST". */
void mv_image_ref_url(const struct mv_image_ref *r, int insecure, char *buf, size_t len);

/* Where one host keeps its images: the chunk store (layer indexes in
 * store_dir/indexes), the mapping database, and the shared cache. */
struct mv_image_paths {
	const char *store_dir;
	const char *mapping_db;
	const char *cache_dir;
	int insecure;   /* plain http for non-loopback registries too */
};

struct mv_image_progress {
	const char *phase;        /* "manifest", "index", "fetch", "done" */
	unsigned layer, layers;   /* layer being worked on (0-based), of how many */
	uint64_t done_bytes, total_bytes;   /* across the whole phase */
};
/* Called from the pulling thread; must not block for long. */
typedef void (*mv_image_progress_cb)(void *ctx, const struct mv_image_progress *p);

struct mv_image_info {
	char name[600];                /* the canonical ref it is stored under */
	struct mv_digest manifest;     /* image manifest digest */
	unsigned layers;
	uint64_t layers_bytes;         /* compressed, as in the manifest */
	uint64_t registry_bytes;       /* fetched by this call */
	int indexes_from_registry;     /* layer indexes fetched (1) or built here (0) */
	uint64_t layer_bytes;          /* layer blob bytes streamed to build indexes */
};

/* Makes ref runnable here without fetching file contents: manifest, config,
 * each layer's index (from the store or the shared cache, else published in
 * the registry, else built by streaming the layer once and published when
 * the registry takes it), and the image's mapping rows. Idempotent. */
int mv_image_pull(const struct mv_image_paths *p, const char *ref, mv_image_progress_cb cb,
		  void *ctx, struct mv_image_info *out, struct mv_error **err) MV_MUST_CHECK;
/* The image's OCI config JSON as pulled (digest-checked; kept in the store
 * by mv_image_pull). *json is malloc'ed, NUL-terminated and the caller's. */
int mv_image_config(const struct mv_image_paths *p, const char *name, char **json,
		    size_t *len, struct mv_error **err) MV_MUST_CHECK;
/* Drops an image's mapping rows and chunk references; -EBUSY while a
 * container of it exists. */
int mv_image_remove(const struct mv_image_paths *p, const char *name,
		    struct mv_error **err) MV_MUST_CHECK;

/* ---- host-wide prepopulated cache (src/image/cache.c) ---- */

struct mv_image_cache_stats {
	uint64_t files, bytes;            /* now in the cache for this image */
	uint64_t registry_bytes;          /* fetched by this call */
};
/* Pulls ref (as mv_image_pull) and fills p->cache_dir with every regular
 * file's content, keyed by layer blob and member so any image sharing a
 * layer hits it. Idempotent; files already cached are not fetched again. */
int mv_image_cache_prepopulate(const struct mv_image_paths *p, const char *ref,
			       mv_image_progress_cb cb, void *ctx,
			       struct mv_image_cache_stats *out,
			       struct mv_error **err) MV_MUST_CHECK;

#endif
