/* memvisor-vmm's half of page fusion: it alone can swap a guest page for a
 * pool page atomically against its own vCPUs. FUSE: write-protect the guest
 * page, compare it with the pool page, map the pool page read-only there
 * (MAP_FIXED) and punch the guest memfd page so the memory is really freed;
 * a changed page is restored and reported as a miss. Copy-on-write: a
 * guest's first write to a fused page faults (SIGSEGV, SEGV_ACCERR); the
 * handler copies the pool page back into the guest memfd, maps the memfd
 * page read-write again, re-arms the dirty log there and returns, so the
 * write retries. Per-page state bytes (NONE/FUSED/BUSY, atomics) make two
 * vCPUs faulting on one page copy once, and keep a merge and a fault apart.
 * Faults that are not on a fused page go to the previous handler (ASan's, or
 * the default), so real crashes still crash. UNFUSE copies every fused page
 * back (before a hand-over or an outgoing migration, whose readers see only
 * the memfds). For the side-channel guard: each page remembers when it was
 * fused and when a write broke it (the write-probe signal rides on FUSE
 * replies), and SAMPLE watches chosen fused pages in short windows run by a
 * timer thread here (state TRAP, mapping PROT_NONE: the first access in a
 * window faults, is counted and gets read access back at once, so the guest
 * only sees a slow access); the daemon collects the windows on a short poll. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "vmm_i.h"

#define PS MV_PAGE_SIZE
#define RUN_MAX 64   /* pages merged by one mapping call at most */

/* ST_KEEP: moved to a fresh frame by the guard (RELOCATE): never fused again,
 * so the move is not undone by the next merge onto a shared pool page. */
enum { ST_NONE = 0, ST_FUSED, ST_BUSY, ST_TRAP, ST_KEEP };

struct fregion {
	uint8_t *hva;
	uint64_t gpa, size;
	int fd;                      /* the mapping's memfd (owned by the guest memory) */
	_Atomic uint8_t *state;      /* per page; NULL for hugetlb regions */
	_Atomic uint64_t *broken;    /* per page: COW-broken since the last FUSE reply */
	_Atomic uint64_t *touched;   /* per page: accessed while trapped (SAMPLE) */
	uint32_t *fused_ms;          /* per page: when it was fused (ms since t0) */
	_Atomic uint32_t *broke_ms;  /* per page: when a guest write broke it */
};

struct vmm_fusion {
	int pool_fd;
	uint64_t pool_size;
	unsigned n;
	struct fregion r[MV_MEM_MAX_REGIONS];
	_Atomic(struct mv_dirty_log *) log;
	atomic_uint_fast64_t fused, cow_breaks, pending_broken;
	uint64_t t0;                 /* CLOCK_MONOTONIC ns the stamps count from */
	/* SAMPLE: the watched pages and the thread running their windows */
	pthread_mutex_t tlock;
	pthread_cond_t tcv;          /* CLOCK_MONOTONIC */
	pthread_t tthread;
	bool trunning, tquit;
	uint32_t window_us, ntraps;
	uint64_t tcpu;               /* process CPU time at the last window's end */
	struct trap {
		uint64_t gpa;
		uint64_t bits;       /* touched per ended window, newest in bit 0 */
		uint8_t nwin;        /* windows ended since the last SAMPLE reply */
		bool armed;          /* trapped for the running window */
	} traps[MV_CTL_SAMPLE_MAX];
	uint8_t cmp[RUN_MAX * PS];   /* pool pages of one run, to compare */
};

/* The signal handler's only way to its context: the mutable globals a
 * SIGSEGV handler unavoidably needs. g_fusion is published (release) once its
 * arrays exist and cleared before they are freed, with the vCPUs stopped;
 * g_prev is written once, before any fusion, by vmm_fusion_install(). */
static _Atomic(struct vmm_fusion *) g_fusion;
static struct sigaction g_prev;

static void chain(int sig, siginfo_t *si, void *uc)
{
	if (g_prev.sa_flags & SA_SIGINFO) {
		if (g_prev.sa_sigaction) {
			g_prev.sa_sigaction(sig, si, uc);
			return;
		}
	} else if (g_prev.sa_handler != SIG_DFL && g_prev.sa_handler != SIG_IGN) {
		g_prev.sa_handler(sig);
		return;
	}
	/* Default action: reset it and let the access fault again. */
	struct sigaction dfl = {.sa_handler = SIG_DFL};
	sigemptyset(&dfl.sa_mask);
	sigaction(sig, &dfl, NULL);
}

/* Copies fused page p of r back into the guest memfd and maps it read-write.
 * The caller holds the page's BUSY state; async-signal-safe. */
static uint32_t now_ms(const struct vmm_fusion *f)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);   /* async-signal-safe */
	uint64_t ns = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	return (uint32_t)((ns - f->t0) / 1000000);
}

static bool cow(struct vmm_fusion *f, struct fregion *r, uint64_t p, bool guest)
{
	uint8_t *hva = r->hva + p * PS;
	if (pwrite(r->fd, hva, PS, (off_t)(p * PS)) != (ssize_t)PS)
		return false;
	if (mmap(hva, PS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, r->fd,
		 (off_t)(p * PS)) == MAP_FAILED)
		return false;
	(void)mv_dirty_rearm_range(atomic_load_explicit(&f->log, memory_order_acquire), hva, PS);
	atomic_store_explicit(&r->broke_ms[p], now_ms(f), memory_order_relaxed);
	atomic_fetch_or(&r->broken[p / 64], 1ULL << (p % 64));
	atomic_fetch_add(&f->pending_broken, 1);
	atomic_fetch_sub(&f->fused, 1);
	if (guest)
		atomic_fetch_add(&f->cow_breaks, 1);
	atomic_store_explicit(&r->state[p], ST_NONE, memory_order_release);
	return true;
}

static struct fregion *region_of(struct vmm_fusion *f, const uint8_t *a, uint64_t *page)
{
	for (unsigned i = 0; i < f->n; i++) {
		struct fregion *r = &f->r[i];
		if (r->state && a >= r->hva && (uint64_t)(a - r->hva) < r->size) {
			*page = (uint64_t)(a - r->hva) / PS;
			return r;
		}
	}
	return NULL;
}

/* True when the fault was ours and the access may retry. */
static bool fault(struct vmm_fusion *f, const void *addr)
{
	uint64_t p;
	struct fregion *r = region_of(f, addr, &p);
	if (!r)
		return false;
	for (;;) {
		uint8_t s = atomic_load_explicit(&r->state[p], memory_order_acquire);
		if (s == ST_NONE)
			return true;   /* another vCPU broke it, or a merge backed out: retry */
		if (s == ST_BUSY) {
			sched_yield();
			continue;
		}
		if (s == ST_TRAP) {
			/* A sampled access: count it, give read access back at once. */
			uint8_t t = ST_TRAP;
			if (!atomic_compare_exchange_strong(&r->state[p], &t, ST_BUSY))
				continue;
			bool ok = mprotect(r->hva + p * PS, PS, PROT_READ) == 0;
			atomic_fetch_or(&r->touched[p / 64], 1ULL << (p % 64));
			atomic_store_explicit(&r->state[p], ok ? ST_FUSED : ST_TRAP,
					      memory_order_release);
			return ok;
		}
		uint8_t want = ST_FUSED;
		if (atomic_compare_exchange_strong(&r->state[p], &want, ST_BUSY)) {
			if (cow(f, r, p, true))
				return true;
			atomic_store(&r->state[p], ST_FUSED);
			return false;  /* out of memory: let the fault kill us loudly */
		}
	}
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
	int saved = errno;
	struct vmm_fusion *f = atomic_load_explicit(&g_fusion, memory_order_acquire);
	bool ours = f && si->si_code == SEGV_ACCERR && fault(f, si->si_addr);
	errno = saved;
	if (!ours)
		chain(sig, si, uc);
}

int vmm_fusion_install(void)
{
	struct sigaction sa = {.sa_sigaction = on_segv, .sa_flags = SA_SIGINFO | SA_ONSTACK};
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGSEGV, &sa, &g_prev) < 0 ? -errno : 0;
}

static struct vmm_fusion *fusion_new(struct vmm *v)
{
	struct vmm_fusion *f = calloc(1, sizeof(*f));
	if (!f)
		abort();
	f->pool_fd = -1;
	f->t0 = mv_now_ns();
	pthread_mutex_init(&f->tlock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&f->tcv, &ca);
	pthread_condattr_destroy(&ca);
	f->n = mv_guest_mem_nregions(v->mem);
	for (unsigned i = 0; i < f->n; i++) {
		const struct mv_mem_region *mr = mv_guest_mem_region(v->mem, i);
		struct fregion *r = &f->r[i];
		*r = (struct fregion){.hva = mr->hva, .gpa = mr->gpa, .size = mr->size, .fd = mr->fd};
		if (mr->flags & MV_MEM_HUGETLB)
			continue;
		uint64_t np = mr->size / PS;
		r->state = calloc(np, 1);
		r->broken = calloc((np + 63) / 64, sizeof(uint64_t));
		r->touched = calloc((np + 63) / 64, sizeof(uint64_t));
		r->fused_ms = calloc(np, sizeof(uint32_t));
		r->broke_ms = calloc(np, sizeof(uint32_t));
		if (!r->state || !r->broken || !r->touched || !r->fused_ms || !r->broke_ms)
			abort();
	}
	atomic_store_explicit(&f->log, v->dirty, memory_order_release);
	return f;
}

static struct fregion *region_of_gpa(struct vmm_fusion *f, uint64_t gpa, uint64_t *page)
{
	for (unsigned i = 0; i < f->n; i++) {
		struct fregion *r = &f->r[i];
		if (r->state && gpa >= r->gpa && gpa - r->gpa < r->size) {
			*page = (gpa - r->gpa) / PS;
			return r;
		}
	}
	return NULL;
}

void vmm_fusion_ensure(struct vmm *v)
{
	if (!v->fusion) {
		v->fusion = fusion_new(v);
		atomic_store_explicit(&g_fusion, v->fusion, memory_order_release);
	}
}

bool vmm_fusion_hold(struct vmm *v, uint64_t gpa)
{
	uint64_t p = 0;
	struct fregion *r = v->fusion ? region_of_gpa(v->fusion, gpa, &p) : NULL;
	if (!r)
		return true;
	uint8_t want = ST_NONE;
	if (atomic_compare_exchange_strong(&r->state[p], &want, ST_BUSY))
		return true;
	want = ST_KEEP;
	return atomic_compare_exchange_strong(&r->state[p], &want, ST_BUSY);
}

int vmm_fusion_unfuse_page(struct vmm *v, uint64_t gpa)
{
	uint64_t p = 0;
	struct vmm_fusion *f = v->fusion;
	struct fregion *r = f ? region_of_gpa(f, gpa, &p) : NULL;
	if (!r)
		return 0;
	for (;;) {
		uint8_t s = atomic_load_explicit(&r->state[p], memory_order_acquire);
		if (s == ST_NONE || s == ST_KEEP)
			return 0;
		if (s == ST_BUSY) {
			sched_yield();
			continue;
		}
		if (!atomic_compare_exchange_strong(&r->state[p], &s, ST_BUSY))
			continue;
		if (s == ST_TRAP && mprotect(r->hva + p * PS, PS, PROT_READ) < 0) {
			atomic_store_explicit(&r->state[p], ST_TRAP, memory_order_release);
			return -errno;
		}
		/* The daemon learns of it as a broken page (it drops the pool
		 * reference), but this is no guest write: an age no write-probe
		 * window counts as fresh keeps the victim from looking like a prober. */
		r->fused_ms[p] = now_ms(f) - 0x7fffffffu;
		if (cow(f, r, p, false)) {
			atomic_store_explicit(&r->state[p], ST_KEEP, memory_order_release);
			return 1;
		}
		int e = errno ? -errno : -EIO;
		atomic_store_explicit(&r->state[p], s, memory_order_release);
		return e;
	}
}

void vmm_fusion_unhold(struct vmm *v, uint64_t gpa)
{
	uint64_t p = 0;
	struct fregion *r = v->fusion ? region_of_gpa(v->fusion, gpa, &p) : NULL;
	if (r)
		atomic_store_explicit(&r->state[p], ST_KEEP, memory_order_release);
}

/* Pages [a, b) of a claimed run (BUSY, read-only) hold the bytes of the
 * pool pages at pool_off + a * PS on: map them there with one call and free
 * the private copies with one punch. */
static void map_run(struct vmm_fusion *f, struct fregion *r, uint64_t p0, uint64_t pool_off,
		    uint32_t a, uint32_t b, uint8_t *res)
{
	uint8_t *hva = r->hva + (p0 + a) * PS;
	size_t len = (size_t)(b - a) * PS;
	bool ok = mmap(hva, len, PROT_READ, MAP_SHARED | MAP_FIXED, f->pool_fd,
		       (off_t)(pool_off + a * PS)) != MAP_FAILED;
	if (ok)   /* the guest reads the pool pages now */
		(void)fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)((p0 + a) * PS), (off_t)len);
	else
		(void)mprotect(hva, len, PROT_READ | PROT_WRITE);
	uint32_t now = now_ms(f);
	for (uint32_t j = a; j < b; j++) {
		res[j] = ok ? MV_FUSE_DONE : MV_FUSE_MISS;
		if (ok)
			r->fused_ms[p0 + j] = now;
		atomic_store_explicit(&r->state[p0 + j], ok ? ST_FUSED : ST_NONE,
				      memory_order_release);
	}
	if (ok)
		atomic_fetch_add(&f->fused, b - a);
}

/* Merges the entries from e on that form a run (consecutive guest pages of
 * one region onto consecutive pool pages, as the scanner allocates them for
 * pages merged in order): one mprotect, one pread, one mmap and one punch per
 * run instead of per page (each of those syscalls also splits a VMA and
 * flushes the TLB). Returns the entries done; results in res. */
static uint32_t fuse_run(struct vmm_fusion *f, const struct mv_ctl_fuse_entry *e, uint32_t n,
			 uint8_t *res)
{
	uint64_t p0 = 0, pool_off = e[0].pool_off;
	struct fregion *r = region_of_gpa(f, e[0].gpa, &p0);
	if (!r || e[0].gpa % PS || pool_off % PS || f->pool_size < PS ||
	    pool_off > f->pool_size - PS) {
		res[0] = MV_FUSE_SKIP;
		return 1;
	}
	uint64_t np = r->size / PS;
	uint32_t k = 1;
	while (k < n && k < RUN_MAX && p0 + k < np && e[k].gpa == e[0].gpa + k * PS &&
	       e[k].pool_off == pool_off + k * PS && e[k].pool_off <= f->pool_size - PS)
		k++;
	/* Claim the pages; a page busy or fused already ends the run there. */
	for (uint32_t j = 0; j < k; j++) {
		uint8_t want = ST_NONE;
		if (!atomic_compare_exchange_strong(&r->state[p0 + j], &want, ST_BUSY)) {
			if (j == 0) {
				res[0] = MV_FUSE_SKIP;
				return 1;
			}
			k = j;
			break;
		}
	}
	uint8_t *hva = r->hva + p0 * PS;
	size_t len = (size_t)k * PS;
	/* From here a vCPU's write faults and waits for the outcome. */
	bool prot = mprotect(hva, len, PROT_READ) == 0;
	if (!prot || pread(f->pool_fd, f->cmp, len, (off_t)pool_off) != (ssize_t)len) {
		if (prot)
			(void)mprotect(hva, len, PROT_READ | PROT_WRITE);
		for (uint32_t j = 0; j < k; j++) {
			res[j] = MV_FUSE_MISS;
			atomic_store_explicit(&r->state[p0 + j], ST_NONE, memory_order_release);
		}
		return k;
	}
	uint32_t a = 0;
	for (uint32_t j = 0; j < k; j++) {
		if (memcmp(hva + (size_t)j * PS, f->cmp + (size_t)j * PS, PS) == 0)
			continue;
		if (a < j)
			map_run(f, r, p0, pool_off, a, j, res);
		/* Changed since the scan: a miss, writable again. */
		(void)mprotect(hva + (size_t)j * PS, PS, PROT_READ | PROT_WRITE);
		res[j] = MV_FUSE_MISS;
		atomic_store_explicit(&r->state[p0 + j], ST_NONE, memory_order_release);
		a = j + 1;
	}
	if (a < k)
		map_run(f, r, p0, pool_off, a, k, res);
	return k;
}

static void collect_broken(struct vmm_fusion *f, struct mv_ctl_fuse_reply *out)
{
	if (!atomic_load(&f->pending_broken))
		return;
	uint32_t now = now_ms(f);
	for (unsigned i = 0; i < f->n; i++) {
		struct fregion *r = &f->r[i];
		uint64_t words = r->broken ? (r->size / PS + 63) / 64 : 0;
		for (uint64_t w = 0; w < words; w++) {
			if (!atomic_load_explicit(&r->broken[w], memory_order_relaxed))
				continue;
			uint64_t bits = atomic_exchange(&r->broken[w], 0);
			while (bits) {
				if (out->nbroken == MV_CTL_BROKEN_MAX) {
					atomic_fetch_or(&r->broken[w], bits);   /* next reply */
					out->more = 1;
					return;
				}
				unsigned b = (unsigned)__builtin_ctzll(bits);
				bits &= bits - 1;
				uint64_t p = w * 64 + b;
				uint32_t at = atomic_load_explicit(&r->broke_ms[p], memory_order_relaxed);
				out->age_ms[out->nbroken] = at - r->fused_ms[p];
				out->ago_ms[out->nbroken] = now - at;
				out->broken[out->nbroken++] = r->gpa + p * PS;
				atomic_fetch_sub(&f->pending_broken, 1);
			}
		}
	}
}

int vmm_fusion_fuse(struct vmm *v, const struct mv_ctl_fuse *req, int pool_fd,
		    struct mv_ctl_fuse_reply *out, struct mv_error **err)
{
	memset(out, 0, sizeof(*out));
	int r = 0;
	if (!v->ready) {
		r = mv_err(err, -ENODEV, "VM not set up");
		goto fail;
	}
	pthread_mutex_lock(&v->lock);
	bool arming = v->sampler_running && !v->sampler_armed;
	pthread_mutex_unlock(&v->lock);
	if (arming) {
		/* Arming registers whole regions, which a pool mapping would refuse. */
		r = mv_err(err, -EAGAIN, "dirty log is being armed");
		goto fail;
	}
	if (!v->fusion) {
		v->fusion = fusion_new(v);
		atomic_store_explicit(&g_fusion, v->fusion, memory_order_release);
	}
	struct vmm_fusion *f = v->fusion;
	if (pool_fd >= 0) {
		struct stat st;
		if (fstat(pool_fd, &st) < 0 || (uint64_t)st.st_size < req->pool_size) {
			r = mv_err(err, -EINVAL, "fusion pool fd is smaller than %llu bytes",
				   (unsigned long long)req->pool_size);
			goto fail;
		}
		if (f->pool_fd < 0 || atomic_load(&f->fused) == 0) {
			if (f->pool_fd >= 0)
				close(f->pool_fd);
			f->pool_fd = pool_fd;
			f->pool_size = req->pool_size;
		} else {
			close(pool_fd);   /* pages still map the old pool */
		}
		pool_fd = -1;
	}
	for (uint32_t i = 0; i < req->n;) {
		if (f->pool_fd < 0)
			out->result[i++] = MV_FUSE_SKIP;
		else
			i += fuse_run(f, req->e + i, req->n - i, out->result + i);
	}
	out->n = req->n;
	collect_broken(f, out);
	out->fused = atomic_load(&f->fused);
	out->cow_breaks = atomic_load(&f->cow_breaks);
	return 0;
fail:
	if (pool_fd >= 0)
		close(pool_fd);
	return r;
}

/* Arms a trap on a fused page: PROT_NONE, state TRAP. A page still trapped
 * (untouched in the last window) stays armed without a syscall. */
static bool arm(struct vmm_fusion *f, uint64_t gpa)
{
	uint64_t p;
	struct fregion *r = region_of_gpa(f, gpa, &p);
	if (!r)
		return false;
	uint8_t want = ST_FUSED;
	if (!atomic_compare_exchange_strong(&r->state[p], &want, ST_BUSY))
		return want == ST_TRAP;
	atomic_fetch_and(&r->touched[p / 64], ~(1ULL << (p % 64)));
	bool ok = mprotect(r->hva + p * PS, PS, PROT_NONE) == 0;
	atomic_store_explicit(&r->state[p], ok ? ST_TRAP : ST_FUSED, memory_order_release);
	return ok;
}

/* Ends a trap: read access back, FUSED again (unless a fault already did). */
static void untrap(struct vmm_fusion *f, uint64_t gpa)
{
	uint64_t p;
	struct fregion *r = region_of_gpa(f, gpa, &p);
	uint8_t want = ST_TRAP;
	if (!r || !atomic_compare_exchange_strong(&r->state[p], &want, ST_BUSY))
		return;
	bool ok = mprotect(r->hva + p * PS, PS, PROT_READ) == 0;
	atomic_store_explicit(&r->state[p], ok ? ST_FUSED : ST_TRAP, memory_order_release);
}

/* Was the page touched in the window that ends now? -1: not known yet (a
 * vCPU is in the handler, or a copy is under way): never wait for it with
 * tlock held, the control thread may need tlock next. */
static int touched(struct vmm_fusion *f, uint64_t gpa)
{
	uint64_t p;
	struct fregion *r = region_of_gpa(f, gpa, &p);
	if (!r)
		return 0;
	if (atomic_load_explicit(&r->state[p], memory_order_acquire) == ST_BUSY)
		return -1;
	uint64_t bit = 1ULL << (p % 64);
	return (atomic_fetch_and(&r->touched[p / 64], ~bit) & bit) != 0;
}

static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* A window counts when the page was touched, or when the VM ran (this
 * process used a quarter of a window of CPU) and did not touch it: on a
 * busy host a vCPU descheduled for a whole window says nothing either way. */
static void window_end(struct vmm_fusion *f)
{
	uint64_t cpu = cpu_ns();
	bool ran = cpu - f->tcpu >= (uint64_t)f->window_us * 250;
	f->tcpu = cpu;
	for (uint32_t i = 0; i < f->ntraps; i++) {
		struct trap *t = &f->traps[i];
		if (t->armed) {
			int hit = touched(f, t->gpa);
			if (hit < 0)
				continue;   /* judged at the next window's end */
			if (hit || ran) {
				t->bits = t->bits << 1 | (hit ? 1 : 0);
				if (t->nwin < 64)
					t->nwin++;
			}
		}
		t->armed = arm(f, t->gpa);
	}
}

/* Back-to-back windows while pages are watched: a trap costs a syscall only
 * when the guest touched the page, so idle pages are nearly free. */
static void *trap_main(void *arg)
{
	struct vmm_fusion *f = arg;
	pthread_mutex_lock(&f->tlock);
	while (!f->tquit) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)(f->ntraps ? f->window_us : 100000) * 1000;
		ts.tv_sec += (time_t)(ns / 1000000000ULL);
		ts.tv_nsec = (long)(ns % 1000000000ULL);
		pthread_cond_timedwait(&f->tcv, &f->tlock, &ts);
		if (!f->tquit && f->ntraps)
			window_end(f);
	}
	pthread_mutex_unlock(&f->tlock);
	return NULL;
}

static void untrap_all(struct vmm_fusion *f)
{
	pthread_mutex_lock(&f->tlock);
	for (uint32_t i = 0; i < f->ntraps; i++)
		untrap(f, f->traps[i].gpa);
	f->ntraps = 0;
	pthread_mutex_unlock(&f->tlock);
}

int vmm_fusion_sample(struct vmm *v, const struct mv_ctl_sample *req, struct mv_ctl_sample_reply *out)
{
	memset(out, 0, sizeof(*out));
	struct vmm_fusion *f = v->fusion;
	if (!f)
		return 0;   /* nothing fused yet: nothing to trap */
	pthread_mutex_lock(&f->tlock);
	out->window_us = f->window_us;
	struct trap old[MV_CTL_SAMPLE_MAX];
	uint32_t nold = f->ntraps;
	for (uint32_t i = 0; i < nold; i++) {
		old[i] = f->traps[i];
		out->gpa[i] = old[i].gpa;
		out->bits[i] = old[i].bits;
		out->nwin[i] = old[i].nwin;
		old[i].nwin = 0;
	}
	out->n = nold;
	f->ntraps = 0;
	for (uint32_t i = 0; i < req->n && i < MV_CTL_SAMPLE_MAX; i++) {
		struct trap t = {.gpa = req->gpa[i]};
		uint32_t j;
		for (j = 0; j < nold && old[j].gpa != t.gpa; j++)
			;
		if (j < nold) {
			t = old[j];
			old[j].gpa = UINT64_MAX;   /* kept */
		} else {
			t.armed = arm(f, t.gpa);
		}
		f->traps[f->ntraps++] = t;
	}
	for (uint32_t j = 0; j < nold; j++)
		if (old[j].gpa != UINT64_MAX)
			untrap(f, old[j].gpa);
	if (req->n)
		f->window_us = req->window_us;
	int r = 0;
	if (f->ntraps && !f->trunning) {
		f->tquit = false;
		r = -pthread_create(&f->tthread, NULL, trap_main, f);
		f->trunning = r == 0;
		if (r == 0)   /* the guard's cost on this VMM, by name in /proc */
			(void)pthread_setname_np(f->tthread, "mv-guard-trap");
	}
	pthread_mutex_unlock(&f->tlock);
	return r;
}

int vmm_fusion_unfuse_all(struct vmm *v, struct mv_ctl_unfuse *out)
{
	memset(out, 0, sizeof(*out));
	struct vmm_fusion *f = v->fusion;
	if (!f)
		return 0;
	untrap_all(f);
	int r = 0;
	for (unsigned i = 0; i < f->n; i++) {
		struct fregion *rg = &f->r[i];
		uint64_t np = rg->state ? rg->size / PS : 0;
		for (uint64_t p = 0; p < np && atomic_load(&f->fused); p++) {
			uint8_t want = ST_FUSED;
			if (!atomic_compare_exchange_strong(&rg->state[p], &want, ST_BUSY))
				continue;   /* a vCPU breaking it now finishes the copy itself */
			if (cow(f, rg, p, false)) {
				out->unfused++;
			} else {
				atomic_store(&rg->state[p], ST_FUSED);
				r = errno ? -errno : -EIO;
			}
		}
		/* The daemon drops every reference of this VM: nothing to report. */
		if (rg->broken)
			memset((void *)rg->broken, 0, (np + 63) / 64 * sizeof(uint64_t));
	}
	/* A vCPU mid-copy holds BUSY; wait it out so no pool page stays mapped. */
	for (unsigned i = 0; i < f->n; i++)
		for (uint64_t p = 0; f->r[i].state && p < f->r[i].size / PS; p++)
			while (atomic_load(&f->r[i].state[p]) == ST_BUSY)
				sched_yield();
	atomic_store(&f->pending_broken, 0);
	out->cow_breaks = atomic_load(&f->cow_breaks);
	return atomic_load(&f->fused) ? (r ? r : -EIO) : 0;
}

void vmm_fusion_set_log(struct vmm *v, struct mv_dirty_log *log)
{
	if (v->fusion)
		atomic_store_explicit(&v->fusion->log, log, memory_order_release);
}

void vmm_fusion_teardown(struct vmm *v)
{
	struct vmm_fusion *f = v->fusion;
	if (!f)
		return;
	if (f->trunning) {
		pthread_mutex_lock(&f->tlock);
		f->tquit = true;
		pthread_cond_signal(&f->tcv);
		pthread_mutex_unlock(&f->tlock);
		pthread_join(f->tthread, NULL);
		f->trunning = false;
	}
	untrap_all(f);
	atomic_store_explicit(&g_fusion, NULL, memory_order_release);
	pthread_mutex_destroy(&f->tlock);
	pthread_cond_destroy(&f->tcv);
	for (unsigned i = 0; i < f->n; i++) {
		free((void *)f->r[i].state);
		free((void *)f->r[i].broken);
		free((void *)f->r[i].touched);
		free(f->r[i].fused_ms);
		free((void *)f->r[i].broke_ms);
	}
	if (f->pool_fd >= 0)
		close(f->pool_fd);
	free(f);
	v->fusion = NULL;
}
