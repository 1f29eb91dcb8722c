/* The destination's page applier: a worker thread that writes validated RAM
 * frames into guest RAM while the receive loop reads and checks the next
 * frame (two payload buffers swap between them). 4 KiB regions are written
 * through the memfd with pwritev runs (no page faults on our mapping; zero
 * pages are punched out), huge-page regions (hugetlb, shmem THP) through the
 * mapping; zstd pages
 * are inflated here. Used by recv.c for pre-copy frames (post-copy pages go
 * through postcopy.c instead). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <zstd.h>
#include "memvisor/util.h"
#include "migrate_i.h"

struct mig_applier {
	struct mv_guest_mem *mem;
	pthread_t th;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	bool busy;                 /* a job is queued or running */
	bool quit;
	struct mv_error *err;      /* first failure, kept until drained */
	int error;
	/* The job (owned by the worker while busy). */
	uint8_t *buf;
	struct mig_page pages[MV_MIGRATE_MAX_BATCH];
	uint32_t n;
	/* Worker-private. */
	uint8_t *scratch;          /* inflated zstd pages */
	ZSTD_DCtx *zd;
	struct iovec iov[MV_MIGRATE_MAX_BATCH];
	int niov;
	int run_fd;
	uint64_t run_off;
};

static int flush_run(struct mig_applier *a)
{
	int i = 0;
	while (i < a->niov) {
		ssize_t n = pwritev(a->run_fd, a->iov + i, a->niov - i, (off_t)a->run_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return mv_err(&a->err, n < 0 ? -errno : -EIO, "writing guest RAM: %s",
				      n < 0 ? strerror(errno) : "short write");
		a->run_off += (uint64_t)n;
		while (i < a->niov && (size_t)n >= a->iov[i].iov_len)
			n -= (ssize_t)a->iov[i++].iov_len;
		if (n > 0) {
			a->iov[i].iov_base = (uint8_t *)a->iov[i].iov_base + n;
			a->iov[i].iov_len -= (size_t)n;
		}
	}
	a->niov = 0;
	return 0;
}

/* One page: data NULL = zero. Consecutive pages of a region join a run. */
static int apply_page(struct mig_applier *a, uint64_t gpa, const uint8_t *data)
{
	int ri = mv_guest_mem_find(a->mem, gpa);
	const struct mv_mem_region *g = mv_guest_mem_region(a->mem, (unsigned)ri);
	uint64_t off = gpa - g->gpa;
	if (g->pages != MV_MEM_PAGES_4K) {
		/* hugetlbfs has no write(), and write() to shmem allocates 4 KiB
		 * pages (THP only serves madvised mappings); punching would drop
		 * or split 2 MiB. A huge fault is cheaper than 512 small ones. */
		if (data)
			memcpy(g->hva + off, data, MV_MIGRATE_PAGE_SIZE);
		else
			memset(g->hva + off, 0, MV_MIGRATE_PAGE_SIZE);
		return 0;
	}
	bool extends = a->niov && a->run_fd == g->fd &&
		       a->run_off + (uint64_t)a->niov * MV_MIGRATE_PAGE_SIZE == off;
	if (a->niov && (!extends || !data)) {
		int r = flush_run(a);
		if (r < 0)
			return r;
	}
	if (!data) {
		if (fallocate(g->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off,
			      MV_MIGRATE_PAGE_SIZE) < 0)
			return mv_err(&a->err, -errno, "zeroing gpa 0x%llx: %s",
				      (unsigned long long)gpa, strerror(errno));
		return 0;
	}
	if (!a->niov) {
		a->run_fd = g->fd;
		a->run_off = off;
	}
	a->iov[a->niov].iov_base = (void *)(uintptr_t)data;
	a->iov[a->niov++].iov_len = MV_MIGRATE_PAGE_SIZE;
	return 0;
}

static int apply_job(struct mig_applier *a)
{
	int r = 0;
	for (uint32_t i = 0; i < a->n && r == 0; i++) {
		const struct mig_page *pg = &a->pages[i];
		const uint8_t *data = pg->enc == MIG_ENC_ZERO ? NULL : pg->data;
		if (pg->enc == MIG_ENC_ZSTD) {
			uint8_t *out = a->scratch + (size_t)i * MV_MIGRATE_PAGE_SIZE;
			r = mig_page_inflate(pg, a->zd, out, &a->err);
			data = out;
		}
		if (r == 0)
			r = apply_page(a, pg->gpa, data);
	}
	if (r == 0 && a->niov)
		r = flush_run(a);
	a->niov = 0;
	return r;
}

static void *worker(void *arg)
{
	struct mig_applier *a = arg;
	pthread_mutex_lock(&a->lock);
	for (;;) {
		while (!a->busy && !a->quit)
			pthread_cond_wait(&a->cv, &a->lock);
		if (a->quit)
			break;
		pthread_mutex_unlock(&a->lock);
		/* After a failure jobs are dropped: the migration is over. */
		int r = a->error ? 0 : apply_job(a);
		pthread_mutex_lock(&a->lock);
		if (r < 0)
			a->error = r;
		a->busy = false;
		pthread_cond_broadcast(&a->cv);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

int mig_applier_start(struct mv_guest_mem *mem, struct mig_applier **out, struct mv_error **err)
{
	struct mig_applier *a = calloc(1, sizeof(*a));
	if (!a)
		abort();
	a->mem = mem;
	a->buf = malloc(MV_MIGRATE_MAX_PAYLOAD);
	a->scratch = malloc((size_t)MV_MIGRATE_MAX_BATCH * MV_MIGRATE_PAGE_SIZE);
	a->zd = ZSTD_createDCtx();
	if (!a->buf || !a->scratch || !a->zd)
		abort();
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cv, NULL);
	int r = -pthread_create(&a->th, NULL, worker, a);
	if (r < 0) {
		mv_err(err, r, "starting the page applier: %s", strerror(-r));
		pthread_cond_destroy(&a->cv);
		pthread_mutex_destroy(&a->lock);
		ZSTD_freeDCtx(a->zd);
		free(a->scratch);
		free(a->buf);
		free(a);
		return r;
	}
	*out = a;
	return 0;
}

/* Waits for the worker to go idle; returns (and hands over) its error. */
static int wait_idle(struct mig_applier *a, struct mv_error **err)
{
	pthread_mutex_lock(&a->lock);
	while (a->busy)
		pthread_cond_wait(&a->cv, &a->lock);
	int r = a->error;
	pthread_mutex_unlock(&a->lock);
	if (r < 0 && a->err) {
		mv_err(err, r, "%s", a->err->msg);
		mv_error_free(a->err);
		a->err = NULL;
	}
	return r;
}

int mig_applier_submit(struct mig_applier *a, uint8_t **buf, const struct mig_page *pages,
		       uint32_t n, struct mv_error **err)
{
	int r = wait_idle(a, err);
	if (r < 0)
		return r;
	/* The worker's finished buffer becomes the caller's next receive buffer. */
	uint8_t *done = a->buf;
	a->buf = *buf;
	*buf = done;
	memcpy(a->pages, pages, n * sizeof(*pages));
	a->n = n;
	pthread_mutex_lock(&a->lock);
	a->busy = true;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->lock);
	return 0;
}

int mig_applier_drain(struct mig_applier *a, struct mv_error **err)
{
	return wait_idle(a, err);
}

void mig_applier_stop(struct mig_applier *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	while (a->busy)
		pthread_cond_wait(&a->cv, &a->lock);
	a->quit = true;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->lock);
	pthread_join(a->th, NULL);
	pthread_cond_destroy(&a->cv);
	pthread_mutex_destroy(&a->lock);
	mv_error_free(a->err);
	ZSTD_freeDCtx(a->zd);
	free(a->scratch);
	free(a->buf);
	free(a);
}
