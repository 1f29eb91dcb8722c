/* The vCPU threads of one VM: one pthread per vCPU runs its workload through
 * an execution backend, paced by a token bucket (rate) and a duty cycle
 * (throttle), and parks between ops on request. Used by memvisor-vmm: pause
 * and resume for migration, stats for status/metrics, verify for checks.
 *
 * Locking: v->lock guards pause_req, quit, nparked and each vCPU's parked and
 * error. A vCPU owns its state while running; others read it only after a
 * pause handshake (nparked == n under the lock) which orders the accesses.
 * pause_req, quit, throttle and ops are also read without the lock through
 * __atomic loads, so a running vCPU polls them cheaply between batches. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "memvisor/util.h"
#include "memvisor/vm.h"

#define BATCH_MAX 64                 /* ops between pause checks at full speed: ~50 us */
#define PACE_HZ 100                  /* rate-limited vCPUs wake about this often */
#define BURST_NS (50ULL * 1000000)   /* catch-up allowed after falling behind */
#define SLICE_NS (10ULL * 1000000)   /* throttle duty-cycle period */
#define NS 1000000000ULL

enum { RUN_PAUSED = 0, RUN_IDLE = 1 };

struct mv_vcpu {
	struct mv_vcpus *v;
	pthread_t th;
	struct mv_wl_state st;
	uint64_t ops;    /* mirror of st.ops_done for stats; __atomic */
	uint64_t aux[4]; /* mirror of st.aux (workload results); __atomic */
	int error;       /* backend failure; the vCPU stays parked */
	bool parked;
};

struct mv_vcpus {
	struct mv_guest_mem *m;
	const struct mv_exec_backend *be;
	pthread_mutex_t ctl;      /* serializes the control calls */
	pthread_mutex_t lock;
	pthread_cond_t wake;      /* to vCPUs: pause_req or quit changed */
	pthread_cond_t parked_cv; /* to the controller: a vCPU parked or unparked */
	bool pause_req;
	bool quit;
	uint32_t nparked;
	uint32_t nfailed;         /* vCPUs parked for good after a backend error */
	unsigned throttle;
	uint32_t n;
	struct mv_vcpu c[];
};

static bool stop_requested(struct mv_vcpus *v)
{
	return __atomic_load_n(&v->pause_req, __ATOMIC_ACQUIRE) ||
	       __atomic_load_n(&v->quit, __ATOMIC_ACQUIRE);
}

/* Sleeps until deadline (CLOCK_MONOTONIC ns) unless a pause or stop comes first. */
static void sleep_until(struct mv_vcpus *v, uint64_t deadline)
{
	struct timespec ts = {.tv_sec = (time_t)(deadline / NS), .tv_nsec = (long)(deadline % NS)};
	pthread_mutex_lock(&v->lock);
	while (!v->pause_req && !v->quit && mv_now_ns() < deadline)
		if (pthread_cond_timedwait(&v->wake, &v->lock, &ts) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&v->lock);
}

/* Runs batches until a pause or stop is requested. Returns RUN_PAUSED,
 * RUN_IDLE when the workload has nothing to do, or the backend's -errno. */
static int run_until_paused(struct mv_vcpu *c)
{
	struct mv_vcpus *v = c->v;
	uint64_t now = mv_now_ns(), next = now, slice_start = now;
	while (!stop_requested(v)) {
		unsigned thr = __atomic_load_n(&v->throttle, __ATOMIC_RELAXED);
		uint64_t batch = BATCH_MAX, rate = c->st.p.rate;
		if (rate) {
			/* Throttling a paced vCPU lowers its rate. */
			rate = rate * (100 - thr) / 100;
			rate = rate ? rate : 1;
			batch = rate / PACE_HZ;
			batch = batch < 1 ? 1 : batch > BATCH_MAX ? BATCH_MAX : batch;
			now = mv_now_ns();
			if (now < next) {
				sleep_until(v, next);
				continue;
			}
		}
		int64_t r = v->be->run(&c->st, v->m, batch);
		if (r < 0)
			return (int)r;
		__atomic_store_n(&c->ops, c->st.ops_done, __ATOMIC_RELAXED);
		for (int k = 0; k < 4; k++)
			__atomic_store_n(&c->aux[k], c->st.aux[k], __ATOMIC_RELAXED);
		if (r == 0)
			return RUN_IDLE;
		now = mv_now_ns();
		if (rate) {
			next += (uint64_t)r * NS / rate;
			if (next + BURST_NS < now)
				next = now - BURST_NS;
		} else if (thr && now - slice_start >= SLICE_NS * (100 - thr) / 100) {
			/* Full speed under throttle: run (100-thr)% of each slice. */
			sleep_until(v, now + SLICE_NS * thr / 100);
			slice_start = mv_now_ns();
		}
	}
	return RUN_PAUSED;
}

static void *vcpu_main(void *arg)
{
	struct mv_vcpu *c = arg;
	struct mv_vcpus *v = c->v;
	pthread_mutex_lock(&v->lock);
	for (;;) {
		while (!v->quit && (v->pause_req || c->error)) {
			if (!c->parked) {
				c->parked = true;
				v->nparked++;
				pthread_cond_broadcast(&v->parked_cv);
			}
			pthread_cond_wait(&v->wake, &v->lock);
		}
		if (c->parked) {
			c->parked = false;
			v->nparked--;
			pthread_cond_broadcast(&v->parked_cv);
		}
		if (v->quit)
			break;
		pthread_mutex_unlock(&v->lock);
		int r = run_until_paused(c);
		pthread_mutex_lock(&v->lock);
		if (r < 0) {
			c->error = r;
			v->nfailed++;
		} else if (r == RUN_IDLE)
			while (!v->pause_req && !v->quit)
				pthread_cond_wait(&v->wake, &v->lock);
	}
	pthread_mutex_unlock(&v->lock);
	return NULL;
}

static void pause_locked(struct mv_vcpus *v);

static void quit_and_join(struct mv_vcpus *v, uint32_t started)
{
	pthread_mutex_lock(&v->lock);
	__atomic_store_n(&v->quit, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&v->wake);
	pthread_mutex_unlock(&v->lock);
	for (uint32_t i = 0; i < started; i++)
		pthread_join(v->c[i].th, NULL);
}

static void destroy(struct mv_vcpus *v)
{
	pthread_cond_destroy(&v->parked_cv);
	pthread_cond_destroy(&v->wake);
	pthread_mutex_destroy(&v->lock);
	pthread_mutex_destroy(&v->ctl);
	free(v);
}

int mv_vcpus_start(struct mv_guest_mem *m, const struct mv_exec_backend *be,
		   const struct mv_wl_state *states, uint32_t n, bool start_paused,
		   struct mv_vcpus **out, struct mv_error **err)
{
	if (n == 0 || n > MV_MAX_VCPUS)
		return mv_err_field(err, -EINVAL, "vcpus", "vcpus must be 1..%d, got %u",
				    MV_MAX_VCPUS, n);
	if (!m || !be || !be->run || !states)
		return mv_err(err, -EINVAL, "starting vcpus: missing guest memory, backend or states");
	for (uint32_t i = 0; i < n; i++)
		if (!mv_wl_ops_of(states[i].kind))
			return mv_err(err, -EINVAL, "vcpu %u: unknown workload kind %u", i,
				      states[i].kind);
	struct mv_vcpus *v = calloc(1, sizeof(*v) + n * sizeof(v->c[0]));
	if (!v)
		return mv_err(err, -ENOMEM, "no memory for %u vcpus", n);
	v->m = m;
	v->be = be;
	v->n = n;
	v->pause_req = start_paused;
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&v->ctl, NULL);
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->wake, &ca);
	pthread_cond_init(&v->parked_cv, &ca);
	pthread_condattr_destroy(&ca);

	/* vCPU threads take no asynchronous signals: the program's main loop
	 * handles them. Synchronous faults stay unblocked: a blocked SIGSEGV kills
	 * the process outright, and the VMM's copy-on-write of fused pages (and
	 * ASan's reports) need their handlers to run on the faulting vCPU. */
	sigset_t all, old;
	sigfillset(&all);
	sigdelset(&all, SIGSEGV);
	sigdelset(&all, SIGBUS);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	uint32_t i;
	int r = 0;
	for (i = 0; i < n; i++) {
		v->c[i].v = v;
		v->c[i].st = states[i];
		v->c[i].ops = states[i].ops_done;
		memcpy(v->c[i].aux, states[i].aux, sizeof(v->c[i].aux));
		r = -pthread_create(&v->c[i].th, NULL, vcpu_main, &v->c[i]);
		if (r < 0)
			break;
		/* Named, so a benchmark can charge ops to vCPU CPU time. */
		char name[16];
		snprintf(name, sizeof(name), "mv-vcpu%u", i);
		(void)pthread_setname_np(v->c[i].th, name);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0) {
		quit_and_join(v, i);
		destroy(v);
		return mv_err(err, r, "creating vcpu thread %u: %s", i, strerror(-r));
	}
	if (start_paused)
		pause_locked(v); /* returns once all have parked: stats read 0 running */
	*out = v;
	return 0;
}

static void pause_locked(struct mv_vcpus *v)
{
	pthread_mutex_lock(&v->lock);
	__atomic_store_n(&v->pause_req, true, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&v->wake);
	while (v->nparked < v->n)
		pthread_cond_wait(&v->parked_cv, &v->lock);
	pthread_mutex_unlock(&v->lock);
}

/* Returns once every vCPU that can run has left its parking spot. */
static void resume_locked(struct mv_vcpus *v)
{
	pthread_mutex_lock(&v->lock);
	__atomic_store_n(&v->pause_req, false, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&v->wake);
	while (v->nparked > v->nfailed)
		pthread_cond_wait(&v->parked_cv, &v->lock);
	pthread_mutex_unlock(&v->lock);
}

void mv_vcpus_pause(struct mv_vcpus *v)
{
	pthread_mutex_lock(&v->ctl);
	pause_locked(v);
	pthread_mutex_unlock(&v->ctl);
}

void mv_vcpus_resume(struct mv_vcpus *v)
{
	pthread_mutex_lock(&v->ctl);
	resume_locked(v);
	pthread_mutex_unlock(&v->ctl);
}

void mv_vcpus_stop(struct mv_vcpus *v)
{
	if (!v)
		return;
	pthread_mutex_lock(&v->ctl);
	pause_locked(v);
	quit_and_join(v, v->n);
	pthread_mutex_unlock(&v->ctl);
	destroy(v);
}

bool mv_vcpus_paused(const struct mv_vcpus *v)
{
	return __atomic_load_n(&v->pause_req, __ATOMIC_ACQUIRE);
}

void mv_vcpus_get_states(struct mv_vcpus *v, struct mv_wl_state *states)
{
	/* Pausing around the copy keeps it race-free even when running. */
	pthread_mutex_lock(&v->ctl);
	bool was_paused = mv_vcpus_paused(v);
	if (!was_paused)
		pause_locked(v);
	for (uint32_t i = 0; i < v->n; i++)
		states[i] = v->c[i].st;
	if (!was_paused)
		resume_locked(v);
	pthread_mutex_unlock(&v->ctl);
}

void mv_vcpus_get_stats(struct mv_vcpus *v, struct mv_vcpus_stats *out)
{
	memset(out, 0, sizeof(*out));
	for (uint32_t i = 0; i < v->n; i++) {
		out->ops_done += __atomic_load_n(&v->c[i].ops, __ATOMIC_RELAXED);
		for (int k = 0; k < 4; k++)
			out->aux[k] += __atomic_load_n(&v->c[i].aux[k], __ATOMIC_RELAXED);
	}
	pthread_mutex_lock(&v->lock);
	out->running = v->n - v->nparked;
	pthread_mutex_unlock(&v->lock);
	out->throttle_pct = __atomic_load_n(&v->throttle, __ATOMIC_RELAXED);
}

void mv_vcpus_set_throttle(struct mv_vcpus *v, unsigned pct)
{
	__atomic_store_n(&v->throttle, pct > 99 ? 99 : pct, __ATOMIC_RELAXED);
}

int mv_vcpus_verify(struct mv_vcpus *v, struct mv_error **err)
{
	pthread_mutex_lock(&v->ctl);
	bool was_paused = mv_vcpus_paused(v);
	if (!was_paused)
		pause_locked(v);
	int r = 0;
	for (uint32_t i = 0; i < v->n && r == 0; i++) {
		const struct mv_vcpu *c = &v->c[i];
		if (c->error)
			r = mv_err(err, -EIO, "vcpu %u stopped after %llu ops: %s", i,
				   (unsigned long long)c->st.ops_done, strerror(-c->error));
		else
			r = mv_wl_ops_of(c->st.kind)->verify(&c->st, v->m, err);
	}
	if (!was_paused)
		resume_locked(v);
	pthread_mutex_unlock(&v->ctl);
	return r;
}
