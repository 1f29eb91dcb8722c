/* Private interface between the dirty-log front end (dirty.c) and its
 * backends (dirty_uffd.c, dirty_softdirty.c, dirty_hash.c). A backend fills
 * log->bitmap[] on sync and re-arms; the front end owns the bitmaps. */
#ifndef MV_MEM_DIRTY_I_H
#define MV_MEM_DIRTY_I_H

#include <stdbool.h>
#include <stdint.h>
#include "memvisor/mem.h"
#include "memvisor/util.h"
#include "mem_i.h"
#include "uffd_abi_i.h"

struct mv_dirty_log;

struct mv_dirty_ops {
	enum mv_dirty_backend backend;
	/* Does the backend work on this kernel? Called once per process. */
	bool (*probe)(void);
	/* Allocates backend state and arms tracking over every region. */
	int (*start)(struct mv_dirty_log *log, struct mv_error **err);
	/* Bitmaps are zeroed by the caller; set the pages written and re-arm. */
	int (*sync)(struct mv_dirty_log *log, struct mv_error **err);
	void (*stop)(struct mv_dirty_log *log);
};

struct mv_dirty_log {
	struct mv_guest_mem *m;
	const struct mv_dirty_ops *ops;
	uint64_t npages[MV_MEM_MAX_REGIONS];
	uint64_t *bitmap[MV_MEM_MAX_REGIONS];
	union {
		struct {
			int uffd;
			int pagemap_fd;
			struct page_region *vec;
			uint64_t vec_len;
		} uffd;
		struct {
			int pagemap_fd;
			int clear_refs_fd;
			uint64_t *buf;
			uint64_t buf_len;
		} sd;
		struct {
			uint64_t *hashes[MV_MEM_MAX_REGIONS];
			int fd[MV_MEM_MAX_REGIONS];  /* own file description, for SEEK_DATA */
			uint64_t zero_hash;
		} hash;
	};
};

extern const struct mv_dirty_ops mv_dirty_uffd_ops;
extern const struct mv_dirty_ops mv_dirty_softdirty_ops;
extern const struct mv_dirty_ops mv_dirty_hash_ops;
/* dirty_uffd.c: mv_dirty_rearm_range() for the uffd-wp backend. */
int mv_dirty_uffd_rearm(struct mv_dirty_log *log, void *addr, uint64_t len);

static inline uint64_t mv_bitmap_words(uint64_t npages)
{
	return (npages + 63) / 64;
}

/* Sets bits [first, first + count) of bm. */
static inline void mv_bitmap_set_range(uint64_t *bm, uint64_t first, uint64_t count)
{
	uint64_t end = first + count;
	while (first < end && (first & 63)) {
		bm[first / 64] |= 1ULL << (first & 63);
		first++;
	}
	for (; first + 64 <= end; first += 64)
		bm[first / 64] = ~0ULL;
	for (; first < end; first++)
		bm[first / 64] |= 1ULL << (first & 63);
}

#endif
