/* Private: the in-memory layer index shared by layer_index.c (build, read,
 * lookups) and index_codec.c (the on-disk format). */
#ifndef MV_IMAGE_LAYER_INDEX_I_H
#define MV_IMAGE_LAYER_INDEX_I_H

#include <stdint.h>
#include "memvisor/image.h"

#define LX_FLAG_GZIP 1u
#define LX_MAX_ENTRIES (1u << 22)
#define LX_MAX_POINTS (1u << 20)
#define LX_MAX_STRINGS (1u << 30)

struct lx_point {
	uint64_t in;     /* compressed offset of the first full byte */
	uint64_t out;    /* uncompressed offset */
	uint8_t bits;    /* bits of the byte before `in` still to use (0..7) */
};

struct lx_entry {
	uint64_t data_off, size;
	int64_t mtime;
	uint32_t mode, uid, gid, devmajor, devminor;
	uint32_t path_off, path_len, link_off, link_len;
	uint8_t type;
};

struct mv_layer_index {
	uint32_t flags, span;
	struct mv_digest blob;
	uint64_t blob_size, tar_size;
	size_t n_points, cap_points;
	struct lx_point *points;
	uint8_t *windows;          /* n_points * MV_INDEX_WINDOW */
	size_t n_entries, cap_entries;
	struct lx_entry *entries;
	char *strings;
	size_t strings_len, cap_strings;
	uint32_t *by_path;         /* entry numbers sorted by (path, number) */
};

/* Sorts by_path; call once entries are final. 0 or -ENOMEM. */
int lx_finalize(struct mv_layer_index *idx);

#endif
