/* Private to src/image: a mounted container root (fusefs.c: mount and the
 * FUSE operations) and how an open layer file gets its bytes (fetch.c). */
#ifndef MV_IMAGE_FUSEFS_I_H
#define MV_IMAGE_FUSEFS_I_H

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <pthread.h>
#include "image_i.h"

#define FETCH_GROUP 8   /* chunks inflated per layer read: fewer restarts */
#define HANDLE_SLOTS 4   /* chunks an open file keeps in memory */
#define LAZY_MIN_CHUNKS 4   /* larger files are fetched chunk by chunk, on demand */

struct mv_image_fs {
	struct fuse_session *se;
	pthread_t thread;
	int running;
	struct mv_mapping *map;
	int64_t ctr;
	char refname[64];
	struct mv_chunkstore *cs;
	struct mv_registry *reg;
	size_t n_layers;
	struct mv_layer_index **idx;
	struct mv_digest *blobs;
	int upper_fd;
	struct mvc_cache *cache;   /* host-wide shared cache, read only; NULL: none */
	/* Counters read by other threads (atomics). */
	uint64_t reg_bytes, reg_reqs, fetched, chunk_reads, copy_ups;
	uint64_t cache_hits, cache_misses, cache_hit_bytes;
};

/* An open file: an upper file's fd, or a layer file's chunks (zero digests:
 * not fetched yet) in src (the local store or the shared cache's). */
struct handle {
	int fd;
	struct mv_digest *chunks;
	size_t n, last_fetched, ahead;
	uint64_t size, ino, data_off;
	int layer;
	struct mv_chunkstore *src;
	/* The last chunks read (an mmap'ed binary faults pages of a few
	 * chunks in turn: one slot would reload and re-verify each time). */
	struct slot {
		void *data;
		size_t len, idx;
		uint64_t used;
	} slot[HANDLE_SLOTS];
	uint64_t tick;
};

static inline void bump(uint64_t *c, uint64_t by) { __atomic_add_fetch(c, by, __ATOMIC_RELAXED); }

/* Fills h with regular file n's chunks: the local store's, else the shared
 * cache's, else fetched from the layer (whole when small, else on demand). */
int fsf_file_chunks(struct mv_image_fs *fs, const struct mv_map_node *n, struct handle *h);
/* Chunk ci of h's file, fetched first if need be; *data is the caller's. */
int fsf_chunk_data(struct mv_image_fs *fs, struct handle *h, size_t ci, void **data, size_t *len);

#endif
