/* Unit tests for the device MMU with shared virtual memory: kernels with
 * checked results (vector add over shared and private memory, reduction, a
 * linked list built on the host and walked on the device through the same
 * pointers), replayable faults, and the munmap/mprotect notifier. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <cmocka.h>
#include "memvisor/mmu.h"
#include "test_common.h"

#define N 20000

struct vadd {
	uint64_t a, b, c;   /* device addresses of int32 arrays */
	unsigned n;
};

static int k_vadd(struct mv_mmu_lane *l, void *arg)
{
	struct vadd *v = arg;
	for (unsigned i = mv_mmu_lane_id(l); i < v->n; i += mv_mmu_lane_count(l)) {
		int32_t x = 0, y = 0, z;
		int rc = mv_mmu_lane_load(l, v->a + 4ULL * i, &x, 4);
		if (!rc) rc = mv_mmu_lane_load(l, v->b + 4ULL * i, &y, 4);
		z = x + y;
		if (!rc) rc = mv_mmu_lane_store(l, v->c + 4ULL * i, &z, 4);
		if (rc)
			return rc;
	}
	return 0;
}

static struct mv_mmu_dev *mkdev(unsigned workers)
{
	struct mv_mmu_dev *d;
	struct mv_mmu_dev_config c = { .workers = workers };
	assert_int_equal(mv_mmu_dev_create(&c, &d, NULL), 0);
	return d;
}

static void test_vadd_shared(void **s)
{
	struct mv_mmu_dev *d = mkdev(2);
	struct mv_mmu_ctx *c;
	assert_int_equal(mv_mmu_ctx_create(d, &c, NULL), 0);
	int32_t *a, *b, *r;
	assert_int_equal(mv_mmu_svm_alloc(c, N * 4, (void **)&a, NULL), 0);
	assert_int_equal(mv_mmu_svm_alloc(c, N * 4, (void **)&b, NULL), 0);
	assert_int_equal(mv_mmu_svm_alloc(c, N * 4, (void **)&r, NULL), 0);
	for (int i = 0; i < N; i++) {
		a[i] = i;
		b[i] = 3 * i + 1;
	}
	/* the same pointers on the device */
	struct vadd v = { (uintptr_t)a, (uintptr_t)b, (uintptr_t)r, N };
	assert_int_equal(mv_mmu_dev_launch(c, k_vadd, &v, 64, NULL), 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(r[i], 4 * i + 1);
	struct mv_mmu_dev_stats st;
	mv_mmu_dev_get_stats(d, &st);
	assert_true(st.faults_replayed > 0);    /* mirrored on demand */
	assert_true(st.tlb_hits > st.tlb_misses);
	assert_int_equal(st.faults_fatal, 0);
	assert_int_equal(mv_mmu_svm_free(c, a), 0);
	assert_int_equal(mv_mmu_svm_free(c, a), -ENOENT);
	mv_mmu_ctx_destroy(c);  /* frees b and r */
	mv_mmu_dev_destroy(d);
}

static void test_vadd_private(void **s)
{
	struct mv_mmu_dev *d = mkdev(3);
	struct mv_mmu_ctx *c;
	assert_int_equal(mv_mmu_ctx_create(d, &c, NULL), 0);
	static int32_t a[N], b[N], r[N];
	for (int i = 0; i < N; i++) {
		a[i] = -i;
		b[i] = 7;
	}
	uint64_t da, db, dc;
	assert_int_equal(mv_mmu_dev_alloc(c, sizeof(a), &da, NULL), 0);
	assert_int_equal(mv_mmu_dev_alloc(c, sizeof(b), &db, NULL), 0);
	assert_int_equal(mv_mmu_dev_alloc(c, sizeof(r), &dc, NULL), 0);
	assert_true(da >> 63);   /* private space: upper half, never a host pointer */
	assert_int_equal(mv_mmu_dev_write(c, da, a, sizeof(a), NULL), 0);
	assert_int_equal(mv_mmu_dev_write(c, db, b, sizeof(b), NULL), 0);
	struct vadd v = { da, db, dc, N };
	assert_int_equal(mv_mmu_dev_launch(c, k_vadd, &v, 7, NULL), 0);
	assert_int_equal(mv_mmu_dev_read(c, dc, r, sizeof(r), NULL), 0);
	for (int i = 0; i < N; i++)
		assert_int_equal(r[i], 7 - i);
	/* after free the device faults (not replayable: private space) */
	assert_int_equal(mv_mmu_dev_free(c, da), 0);
	struct mv_error *e = NULL;
	assert_int_equal(mv_mmu_dev_launch(c, k_vadd, &v, 2, &e), -EFAULT);
	assert_non_null(strstr(e->msg, "not-present"));
	mv_error_free(e);
	/* a second context cannot see the first one's private memory */
	struct mv_mmu_ctx *c2;
	assert_int_equal(mv_mmu_ctx_create(d, &c2, NULL), 0);
	assert_int_not_equal(mv_mmu_ctx_pasid(c), mv_mmu_ctx_pasid(c2));
	struct vadd v2 = { db, db, dc, N };
	assert_int_equal(mv_mmu_dev_launch(c2, k_vadd, &v2, 2, NULL), -EFAULT);
	mv_mmu_dev_destroy(d);
}

struct reduce {
	uint64_t in, partial;
	unsigned n;
};

static int k_reduce(struct mv_mmu_lane *l, void *arg)
{
	struct reduce *r = arg;
	uint64_t sum = 0;
	for (unsigned i = mv_mmu_lane_id(l); i < r->n; i += mv_mmu_lane_count(l)) {
		uint32_t x;
		int rc = mv_mmu_lane_load(l, r->in + 4ULL * i, &x, 4);
		if (rc)
			return rc;
		sum += x;
	}
	return mv_mmu_lane_store(l, r->partial + 8ULL * mv_mmu_lane_id(l), &sum, 8);
}

static void test_reduce(void **s)
{
	struct mv_mmu_dev *d = mkdev(2);
	struct mv_mmu_ctx *c;
	assert_int_equal(mv_mmu_ctx_create(d, &c, NULL), 0);
	const unsigned n = 100000, lanes = 16;
	uint32_t *in;
	uint64_t *part;
	assert_int_equal(mv_mmu_svm_alloc(c, n * 4, (void **)&in, NULL), 0);
	assert_int_equal(mv_mmu_svm_alloc(c, lanes * 8, (void **)&part, NULL), 0);
	uint64_t want = 0;
	for (unsigned i = 0; i < n; i++) {
		in[i] = i * 2654435761u;
		want += in[i];
	}
	struct reduce r = { (uintptr_t)in, (uintptr_t)part, n };
	assert_int_equal(mv_mmu_dev_launch(c, k_reduce, &r, lanes, NULL), 0);
	uint64_t got = 0;
	for (unsigned i = 0; i < lanes; i++)
		got += part[i];
	assert_int_equal(got, want);
	mv_mmu_dev_destroy(d);
}

struct node {
	struct node *next;
	uint64_t val;
};

struct walk {
	uint64_t head, out;
};

static int k_list(struct mv_mmu_lane *l, void *arg)
{
	struct walk *w = arg;
	uint64_t p = w->head, sum = 0, count = 0;
	while (p) {
		uint64_t v, next;
		int rc = mv_mmu_lane_load(l, p + offsetof(struct node, val), &v, 8);
		if (!rc) rc = mv_mmu_lane_load(l, p + offsetof(struct node, next), &next, 8);
		if (rc)
			return rc;
		sum += v;
		count++;
		p = next;
	}
	uint64_t res[2] = { sum, count };
	int rc = mv_mmu_lane_store(l, w->out + 16ULL * mv_mmu_lane_id(l), &res[0], 8);
	return rc ? rc : mv_mmu_lane_store(l, w->out + 16ULL * mv_mmu_lane_id(l) + 8, &res[1], 8);
}

static void test_linked_list(void **s)
{
	struct mv_mmu_dev *d = mkdev(2);
	struct mv_mmu_ctx *c;
	assert_int_equal(mv_mmu_ctx_create(d, &c, NULL), 0);
	const unsigned n = 5000;
	struct node *pool;
	uint64_t *out;
	assert_int_equal(mv_mmu_svm_alloc(c, n * sizeof(*pool), (void **)&pool, NULL), 0);
	assert_int_equal(mv_mmu_svm_alloc(c, 4 * 16, (void **)&out, NULL), 0);
	/* host builds the list in shuffled order with plain pointers */
	unsigned *perm = malloc(n * sizeof(*perm));
	struct rng g = { 42 };
	for (unsigned i = 0; i < n; i++)
		perm[i] = i;
	for (unsigned i = n - 1; i > 0; i--) {
		unsigned j = (unsigned)(rng_next(&g) % (i + 1)), t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
	uint64_t want = 0;
	for (unsigned i = 0; i < n; i++) {
		pool[perm[i]].val = i * 3ULL;
		pool[perm[i]].next = i + 1 < n ? &pool[perm[i + 1]] : NULL;
		want += i * 3ULL;
	}
	struct walk w = { (uintptr_t)&pool[perm[0]], (uintptr_t)out };
	assert_int_equal(mv_mmu_dev_launch(c, k_list, &w, 4, NULL), 0);
	for (unsigned i = 0; i < 4; i++) {
		assert_int_equal(out[2 * i], want);
		assert_int_equal(out[2 * i + 1], n);
	}
	free(perm);
	mv_mmu_dev_destroy(d);
}

static int k_touch(struct mv_mmu_lane *l, void *arg)
{
	uint64_t p = *(uint64_t *)arg + 4096ULL * mv_mmu_lane_id(l), v = 0;
	int rc = mv_mmu_lane_load(l, p, &v, 8);
	if (rc == 0) {
		v++;
		rc = mv_mmu_lane_store(l, p, &v, 8);
	}
	return rc;
}

static int k_read(struct mv_mmu_lane *l, void *arg)
{
	uint64_t p = *(uint64_t *)arg + 4096ULL * mv_mmu_lane_id(l), v;
	return mv_mmu_lane_load(l, p, &v, 8);
}

static void test_notifier(void **s)
{
	struct mv_mmu_dev *d = mkdev(2);
	struct mv_mmu_ctx *c;
	assert_int_equal(mv_mmu_ctx_create(d, &c, NULL), 0);
	/* a host range the caller owns, registered read-write */
	uint64_t *buf = mmap(NULL, 8 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(buf != MAP_FAILED);
	assert_int_equal(mv_mmu_svm_register(c, buf, 8 * 4096, PROT_READ | PROT_WRITE, NULL), 0);
	assert_int_equal(mv_mmu_svm_register(c, buf + 512, 4096, PROT_READ, NULL), -EEXIST);
	uint64_t base = (uintptr_t)buf;
	assert_int_equal(mv_mmu_dev_launch(c, k_touch, &base, 8, NULL), 0);
	assert_int_equal(buf[0], 1);
	assert_int_equal(buf[512 * 7], 1);
	/* host mprotects page 2 read-only: device writes there fault, reads work */
	assert_int_equal(mv_mmu_svm_notify(c, buf + 512 * 2, 4096, PROT_READ), 0);
	assert_int_equal(mprotect(buf + 512 * 2, 4096, PROT_READ), 0);
	struct mv_error *e = NULL;
	assert_int_equal(mv_mmu_dev_launch(c, k_touch, &base, 8, &e), -EFAULT);
	assert_non_null(strstr(e->msg, "permission"));
	mv_error_free(e);
	assert_int_equal(mv_mmu_dev_launch(c, k_read, &base, 8, NULL), 0);
	/* host munmaps the top half: device reads there fault instead of touching freed memory */
	assert_int_equal(mv_mmu_svm_notify(c, buf + 512 * 4, 4 * 4096, -1), 0);
	assert_int_equal(munmap(buf + 512 * 4, 4 * 4096), 0);
	assert_int_equal(mv_mmu_dev_launch(c, k_read, &base, 4, NULL), 0);
	assert_int_equal(mv_mmu_dev_launch(c, k_read, &base, 8, NULL), -EFAULT);
	struct mv_mmu_dev_stats st;
	mv_mmu_dev_get_stats(d, &st);
	assert_true(st.shootdowns >= 2);
	assert_true(st.faults_fatal >= 2);
	/* bad input */
	assert_int_equal(mv_mmu_svm_register(c, (char *)buf + 1, 4096, PROT_READ, NULL), -EINVAL);
	assert_int_equal(mv_mmu_svm_register(c, buf, 4096, PROT_EXEC, NULL), -EINVAL);
	munmap(buf, 4 * 4096);
	mv_mmu_dev_destroy(d);
}

/* Shootdowns while lanes run: the host keeps invalidating the shared range
 * (as an mprotect to the same rights would); lanes keep refaulting and must
 * always read correct data, and the notifier must never hang. */
struct storm {
	struct mv_mmu_ctx *c;
	uint64_t *buf;
	_Atomic int stop;
	unsigned notifies;
};

static void *storm_host(void *p)
{
	struct storm *st = p;
	while (!atomic_load(&st->stop)) {
		if (mv_mmu_svm_notify(st->c, st->buf, 64 * 4096, PROT_READ | PROT_WRITE))
			return (void *)1;
		st->notifies++;
	}
	return NULL;
}

static int k_sum(struct mv_mmu_lane *l, void *arg)
{
	uint64_t base = *(uint64_t *)arg;
	for (unsigned rep = 0; rep < 200; rep++) {
		for (unsigned i = 0; i < 64; i++) {
			uint64_t v;
			int rc = mv_mmu_lane_load(l, base + i * 4096ULL, &v, 8);
			if (rc)
				return rc;
			if (v != i + 1000)
				return -EIO;
		}
	}
	return 0;
}

static void test_shootdown_storm(void **s)
{
	struct mv_mmu_dev *d = mkdev(2);
	struct storm st = { 0 };
	assert_int_equal(mv_mmu_ctx_create(d, &st.c, NULL), 0);
	assert_int_equal(mv_mmu_svm_alloc(st.c, 64 * 4096, (void **)&st.buf, NULL), 0);
	for (unsigned i = 0; i < 64; i++)
		st.buf[i * 512] = i + 1000;
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, storm_host, &st), 0);
	uint64_t base = (uintptr_t)st.buf;
	for (unsigned i = 0; i < 5; i++)
		assert_int_equal(mv_mmu_dev_launch(st.c, k_sum, &base, 4, NULL), 0);
	atomic_store(&st.stop, 1);
	void *r;
	pthread_join(th, &r);
	assert_null(r);
	struct mv_mmu_dev_stats ds;
	mv_mmu_dev_get_stats(d, &ds);
	print_message("storm: %u notifies, %llu replayed faults\n", st.notifies,
		      (unsigned long long)ds.faults_replayed);
	assert_true(ds.shootdowns >= st.notifies);
	mv_mmu_dev_destroy(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vadd_shared),
		cmocka_unit_test(test_vadd_private),
		cmocka_unit_test(test_reduce),
		cmocka_unit_test(test_linked_list),
		cmocka_unit_test(test_notifier),
		cmocka_unit_test(test_shootdown_storm),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
