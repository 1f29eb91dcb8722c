/* Dirty-page log front end: picks a backend at run time (probing each once
 * per process), owns the per-region bitmaps and counts what a sync found.
 * Used by memvisor-vmm (migration pre-copy, live upgrade) and the benches. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "dirty_i.h"

/* In order of preference for MV_DIRTY_AUTO. */
static const struct mv_dirty_ops *const backends[] = {
	&mv_dirty_uffd_ops,
	&mv_dirty_softdirty_ops,
	&mv_dirty_hash_ops,
};

/* Once-probe results: the only mutable globals here, written once under pthread_once. */
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static bool probed_ok[MV_ARRAY_SIZE(backends)];

static void probe_all(void)
{
	for (unsigned i = 0; i < MV_ARRAY_SIZE(backends); i++)
		probed_ok[i] = backends[i]->probe();
}

static int backend_index(enum mv_dirty_backend b)
{
	for (unsigned i = 0; i < MV_ARRAY_SIZE(backends); i++)
		if (backends[i]->backend == b)
			return (int)i;
	return -1;
}

bool mv_dirty_backend_available(enum mv_dirty_backend b)
{
	pthread_once(&probe_once, probe_all);
	if (b == MV_DIRTY_AUTO)
		return true;  /* hashing always works */
	int i = backend_index(b);
	return i >= 0 && probed_ok[i];
}

const char *mv_dirty_backend_name(enum mv_dirty_backend b)
{
	switch (b) {
	case MV_DIRTY_AUTO: return "auto";
	case MV_DIRTY_UFFD_WP: return "uffd-wp";
	case MV_DIRTY_SOFT_DIRTY: return "soft-dirty";
	case MV_DIRTY_HASH: return "hash";
	}
	return "unknown";
}

int mv_dirty_start(struct mv_guest_mem *m, enum mv_dirty_backend want,
		   struct mv_dirty_log **out, struct mv_error **err)
{
	*out = NULL;
	pthread_once(&probe_once, probe_all);
	const struct mv_dirty_ops *ops = NULL;
	if (want == MV_DIRTY_AUTO) {
		for (unsigned i = 0; i < MV_ARRAY_SIZE(backends) && !ops; i++)
			if (probed_ok[i])
				ops = backends[i];
	} else {
		int i = backend_index(want);
		if (i < 0)
			return mv_err_field(err, -EINVAL, "backend", "unknown dirty backend %d", (int)want);
		if (!probed_ok[i])
			return mv_err_field(err, -EOPNOTSUPP, "backend",
					    "dirty backend %s does not work on this kernel",
					    mv_dirty_backend_name(want));
		ops = backends[i];
	}
	if (!ops)
		return mv_err(err, -EOPNOTSUPP, "no dirty-tracking backend works here");

	struct mv_dirty_log *log = calloc(1, sizeof(*log));
	if (!log)
		abort();
	log->m = m;
	log->ops = ops;
	for (unsigned i = 0; i < m->n; i++) {
		log->npages[i] = m->r[i].size / MV_PAGE_SIZE;
		log->bitmap[i] = calloc(mv_bitmap_words(log->npages[i]), sizeof(uint64_t));
		if (!log->bitmap[i])
			abort();
	}
	int ret = ops->start(log, err);
	if (ret < 0) {
		mv_err_prefix(err, "starting %s dirty log", mv_dirty_backend_name(ops->backend));
		for (unsigned i = 0; i < m->n; i++)
			free(log->bitmap[i]);
		free(log);
		return ret;
	}
	*out = log;
	return 0;
}

void mv_dirty_stop(struct mv_dirty_log *log)
{
	if (!log)
		return;
	log->ops->stop(log);
	for (unsigned i = 0; i < log->m->n; i++)
		free(log->bitmap[i]);
	free(log);
}

enum mv_dirty_backend mv_dirty_backend_of(const struct mv_dirty_log *log)
{
	return log->ops->backend;
}

int mv_dirty_sync(struct mv_dirty_log *log, uint64_t *ndirty, struct mv_error **err)
{
	for (unsigned i = 0; i < log->m->n; i++)
		memset(log->bitmap[i], 0, mv_bitmap_words(log->npages[i]) * sizeof(uint64_t));
	int ret = log->ops->sync(log, err);
	uint64_t n = 0;
	if (ret == 0) {
		for (unsigned i = 0; i < log->m->n; i++) {
			uint64_t words = mv_bitmap_words(log->npages[i]);
			for (uint64_t w = 0; w < words; w++)
				n += (uint64_t)__builtin_popcountll(log->bitmap[i][w]);
		}
	}
	if (ndirty)
		*ndirty = n;
	return ret;
}

const uint64_t *mv_dirty_bitmap(const struct mv_dirty_log *log, unsigned region, uint64_t *npages)
{
	if (region >= log->m->n) {
		if (npages)
			*npages = 0;
		return NULL;
	}
	if (npages)
		*npages = log->npages[region];
	return log->bitmap[region];
}

int mv_dirty_rearm_range(struct mv_dirty_log *log, void *addr, uint64_t len)
{
	if (!log || log->ops->backend != MV_DIRTY_UFFD_WP)
		return 0;
	return mv_dirty_uffd_rearm(log, addr, len);
}
