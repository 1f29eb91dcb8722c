/* Dirty backend "hash": remembers an XXH3-64 of every page and reports the
 * pages whose hash changed since the last sync. Slow (reads all of populated
 * RAM each sync) but needs nothing from the kernel and also sees writes made
 * by other processes. File holes (SEEK_DATA) are never read, so a sparse
 * guest stays sparse. Last resort of dirty.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include "dirty_i.h"

static bool hash_probe(void)
{
	return true;
}

/* Hashes pages [first, first+count) of region i; marks and records changes. */
static void hash_pages(struct mv_dirty_log *log, unsigned i, uint64_t first, uint64_t count)
{
	const uint8_t *hva = log->m->r[i].hva;
	uint64_t *h = log->hash.hashes[i], *bm = log->bitmap[i];
	for (uint64_t p = first; p < first + count; p++) {
		uint64_t v = XXH3_64bits(hva + p * MV_PAGE_SIZE, MV_PAGE_SIZE);
		if (v != h[p]) {
			h[p] = v;
			bm[p / 64] |= 1ULL << (p & 63);
		}
	}
}

/* A hole reads as zeros without being touched: compare with the zero hash. */
static void hole_pages(struct mv_dirty_log *log, unsigned i, uint64_t first, uint64_t count)
{
	uint64_t *h = log->hash.hashes[i], *bm = log->bitmap[i], z = log->hash.zero_hash;
	for (uint64_t p = first; p < first + count; p++) {
		if (h[p] != z) {
			h[p] = z;
			bm[p / 64] |= 1ULL << (p & 63);
		}
	}
}

static void hash_region(struct mv_dirty_log *log, unsigned i)
{
	uint64_t size = log->m->r[i].size, off = 0;
	int fd = log->hash.fd[i];
	while (off < size) {
		off_t data = lseek(fd, (off_t)off, SEEK_DATA);
		if (data < 0 && errno != ENXIO) {
			hash_pages(log, i, off / MV_PAGE_SIZE, (size - off) / MV_PAGE_SIZE);
			return;  /* no SEEK_DATA here: treat it all as data */
		}
		uint64_t d = data < 0 || (uint64_t)data > size ? size : (uint64_t)data;
		d &= ~(MV_PAGE_SIZE - 1);
		hole_pages(log, i, off / MV_PAGE_SIZE, (d - off) / MV_PAGE_SIZE);
		if (d >= size)
			return;
		off_t hole = lseek(fd, (off_t)d, SEEK_HOLE);
		uint64_t e = hole < 0 || (uint64_t)hole > size ? size : (uint64_t)hole;
		e = MV_ALIGN_UP(e, MV_PAGE_SIZE);
		if (e <= d)
			e = d + MV_PAGE_SIZE;  /* always progress */
		hash_pages(log, i, d / MV_PAGE_SIZE, (e - d) / MV_PAGE_SIZE);
		off = e;
	}
}

static void hash_stop(struct mv_dirty_log *log)
{
	for (unsigned i = 0; i < log->m->n; i++) {
		free(log->hash.hashes[i]);
		log->hash.hashes[i] = NULL;
		if (log->hash.fd[i] >= 0)
			close(log->hash.fd[i]);
		log->hash.fd[i] = -1;
	}
}

static int hash_start(struct mv_dirty_log *log, struct mv_error **err)
{
	static const uint8_t zero[MV_PAGE_SIZE];
	struct mv_guest_mem *m = log->m;
	log->hash.zero_hash = XXH3_64bits(zero, sizeof(zero));
	for (unsigned i = 0; i < MV_MEM_MAX_REGIONS; i++)
		log->hash.fd[i] = -1;
	for (unsigned i = 0; i < m->n; i++) {
		char path[64];
		/* A fresh open file description: lseek must not move the offset
		 * that the layout's owner shares through dup'ed fds. */
		snprintf(path, sizeof(path), "/proc/self/fd/%d", m->r[i].fd);
		log->hash.fd[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (log->hash.fd[i] < 0) {
			int ret = mv_err(err, -errno, "reopening region %u memfd: %s", i, strerror(errno));
			hash_stop(log);
			return ret;
		}
		log->hash.hashes[i] = malloc(log->npages[i] * sizeof(uint64_t));
		if (!log->hash.hashes[i])
			abort();
		for (uint64_t p = 0; p < log->npages[i]; p++)
			log->hash.hashes[i][p] = log->hash.zero_hash;
		hash_region(log, i);  /* baseline; what it marks is discarded */
	}
	return 0;
}

static int hash_sync(struct mv_dirty_log *log, struct mv_error **err)
{
	for (unsigned i = 0; i < log->m->n; i++)
		hash_region(log, i);
	return 0;
}

const struct mv_dirty_ops mv_dirty_hash_ops = {
	.backend = MV_DIRTY_HASH,
	.probe = hash_probe,
	.start = hash_start,
	.sync = hash_sync,
	.stop = hash_stop,
};
