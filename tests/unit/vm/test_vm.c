/* Unit tests for src/vm: workload determinism, resumability and verify
 * (including detecting corruption), parameter validation, state split, and
 * the vCPU threads (pause/resume, rate, throttle, verify). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include "memvisor/util.h"
#include "memvisor/vm.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

struct vm {
	struct mv_mem_layout l;
	struct mv_guest_mem *m;
	uint32_t n;
	struct mv_wl_state st[MV_MAX_VCPUS];
};

static void vm_open(struct vm *vm, uint64_t ram)
{
	memset(vm, 0, sizeof(*vm));
	struct mv_error *e = NULL;
	int r = mv_mem_layout_create(ram, "test-vm", MV_MEM_BACKING_4K, &vm->l, &e);
	if (r < 0)
		fail_msg("layout: %s", mv_error_msg(e, r));
	r = mv_guest_mem_map(&vm->l, &vm->m, &e);
	if (r < 0)
		fail_msg("map: %s", mv_error_msg(e, r));
}

static void vm_close(struct vm *vm)
{
	mv_guest_mem_unmap(vm->m);
	mv_mem_layout_close(&vm->l);
}

/* Splits p over n vCPUs and runs each workload's init. */
static void vm_workload(struct vm *vm, const struct mv_wl_params *p, uint32_t n)
{
	struct mv_error *e = NULL;
	vm->n = n;
	int r = mv_wl_states_init(p, &vm->l, n, vm->st, &e);
	if (r < 0)
		fail_msg("states_init: %s", mv_error_msg(e, r));
	for (uint32_t i = 0; i < n; i++) {
		r = mv_wl_ops_of(p->kind)->init(&vm->st[i], vm->m, &e);
		if (r < 0)
			fail_msg("init: %s", mv_error_msg(e, r));
	}
}

static void vm_step(struct vm *vm, uint64_t ops)
{
	for (uint32_t i = 0; i < vm->n; i++) {
		const struct mv_wl_ops *o = mv_wl_ops_of(vm->st[i].kind);
		int64_t want = vm->st[i].kind == MV_WL_IDLE ? 0 : (int64_t)ops;
		assert_int_equal(o->step(&vm->st[i], vm->m, ops), want);
	}
}

/* Verifies every vCPU; returns the first error (message in *e). */
static int vm_verify(struct vm *vm, struct mv_error **e)
{
	for (uint32_t i = 0; i < vm->n; i++) {
		int r = mv_wl_ops_of(vm->st[i].kind)->verify(&vm->st[i], vm->m, e);
		if (r < 0)
			return r;
	}
	return 0;
}

static void assert_verify_ok(struct vm *vm)
{
	struct mv_error *e = NULL;
	int r = vm_verify(vm, &e);
	if (r < 0)
		fail_msg("verify: %s", mv_error_msg(e, r));
}

/* Asserts verify fails with -EIO and a message containing want. */
static void assert_verify_fails(struct vm *vm, const char *want)
{
	struct mv_error *e = NULL;
	int r = vm_verify(vm, &e);
	assert_int_equal(r, -EIO);
	assert_non_null(e);
	if (!strstr(e->msg, want))
		fail_msg("verify message \"%s\" lacks \"%s\"", e->msg, want);
	mv_error_free(e);
}

static uint8_t *hva(struct vm *vm, uint64_t gpa)
{
	uint8_t *p = mv_gpa_to_hva(vm->m, gpa, 1);
	assert_non_null(p);
	return p;
}

static bool slices_equal(struct vm *a, struct vm *b)
{
	for (uint32_t i = 0; i < a->n; i++) {
		assert_int_equal(a->st[i].gpa_base, b->st[i].gpa_base);
		if (memcmp(hva(a, a->st[i].gpa_base), hva(b, b->st[i].gpa_base), a->st[i].gpa_len))
			return false;
	}
	return true;
}

static struct mv_wl_params params(uint32_t kind, uint32_t pattern, uint64_t wss)
{
	struct mv_wl_params p = {.kind = kind, .pattern = pattern, .seed = 42, .wss_bytes = wss,
				 .put_pct = 70, .hot_pct = 90};
	return p;
}

static const struct mv_wl_params all_workloads[] = {
	{.kind = MV_WL_MEMTOUCH, .pattern = MV_PAT_SEQ, .seed = 1, .wss_bytes = 2 * MiB},
	{.kind = MV_WL_MEMTOUCH, .pattern = MV_PAT_RANDOM, .seed = 2, .wss_bytes = 2 * MiB},
	{.kind = MV_WL_MEMTOUCH, .pattern = MV_PAT_HOTCOLD, .seed = 3, .wss_bytes = 2 * MiB,
	 .hot_pct = 80},
	{.kind = MV_WL_KVSTORE, .seed = 4, .wss_bytes = 1 * MiB, .put_pct = 70},
	{.kind = MV_WL_KVSTORE, .seed = 5, .wss_bytes = 64 * 1024, .put_pct = 95},
};

static void test_names(void **s)
{
	for (uint32_t k = 0; k < MV_WL__COUNT; k++) {
		assert_int_equal(mv_wl_kind_parse(mv_wl_kind_name(k)), (int)k);
		assert_non_null(mv_wl_ops_of(k));
		assert_string_equal(mv_wl_ops_of(k)->name, mv_wl_kind_name(k));
	}
	for (uint32_t p = 0; p < MV_PAT__COUNT; p++)
		assert_int_equal(mv_wl_pattern_parse(mv_wl_pattern_name(p)), (int)p);
	assert_int_equal(mv_wl_kind_parse("bogus"), -1);
	assert_int_equal(mv_wl_pattern_parse(NULL), -1);
	assert_null(mv_wl_ops_of(MV_WL__COUNT));
	assert_string_equal(mv_exec_native()->name, "native");
}

static void expect_field(struct mv_wl_params p, uint64_t ram, uint32_t n, const char *field)
{
	struct mv_error *e = NULL;
	assert_int_equal(mv_wl_params_validate(&p, ram, n, &e), -EINVAL);
	assert_non_null(e);
	assert_string_equal(e->field, field);
	mv_error_free(e);
}

static void test_validate(void **s)
{
	struct mv_wl_params ok = params(MV_WL_MEMTOUCH, MV_PAT_RANDOM, 16 * MiB);
	struct mv_error *e = NULL;
	assert_int_equal(mv_wl_params_validate(&ok, 64 * MiB, 4, &e), 0);
	assert_null(e);
	struct mv_wl_params p = ok;
	p.kind = 9;
	expect_field(p, 64 * MiB, 1, "workload.kind");
	p = ok;
	p.pattern = 3;
	expect_field(p, 64 * MiB, 1, "workload.pattern");
	p = ok;
	p.wss_bytes = 0;
	expect_field(p, 64 * MiB, 1, "workload.wss");
	p.wss_bytes = 65 * MiB;
	expect_field(p, 64 * MiB, 1, "workload.wss");
	p.wss_bytes = 3 * 4096;
	expect_field(p, 64 * MiB, 4, "workload.wss");
	p = ok;
	p.put_pct = 101;
	expect_field(p, 64 * MiB, 1, "workload.put_pct");
	p = ok;
	p.hot_pct = 200;
	expect_field(p, 64 * MiB, 1, "workload.hot_pct");
	p = ok;
	p.rate = 3;
	expect_field(p, 64 * MiB, 4, "workload.rate");
	expect_field(ok, 64 * MiB, 0, "vcpus");
	expect_field(ok, 64 * MiB, MV_MAX_VCPUS + 1, "vcpus");
	/* kvstore: same wss rule, pattern ignored only if valid. */
	p = params(MV_WL_KVSTORE, 0, 4096);
	assert_int_equal(mv_wl_params_validate(&p, 64 * MiB, 1, NULL), 0);
	expect_field(p, 64 * MiB, 2, "workload.wss");
	/* idle ignores everything but the kind. */
	struct mv_wl_params idle = {.kind = MV_WL_IDLE, .pattern = 77, .put_pct = 500};
	assert_int_equal(mv_wl_params_validate(&idle, 64 * MiB, 3, NULL), 0);
}

static void test_states_split(void **s)
{
	struct vm vm;
	vm_open(&vm, 5 * GiB); /* [0, 3G) and [4G, 6G), sparse */
	struct mv_wl_params p = params(MV_WL_MEMTOUCH, MV_PAT_SEQ, 4 * GiB + 5);
	p.rate = 5;
	p.put_pct = 0;
	p.hot_pct = 0;
	struct mv_wl_state st[2];
	assert_int_equal(mv_wl_states_init(&p, &vm.l, 2, st, NULL), 0);
	assert_int_equal(st[0].gpa_base, 0);
	assert_int_equal(st[0].gpa_len, 2 * GiB);
	assert_int_equal(st[1].gpa_base, 4 * GiB); /* skipped the rest of region 0 and the hole */
	assert_int_equal(st[1].gpa_len, 2 * GiB);
	assert_int_equal(st[0].p.rate + st[1].p.rate, 5);
	assert_int_equal(st[0].p.rate, 3);
	assert_int_equal(st[0].p.put_pct, MV_WL_DEFAULT_PUT_PCT);
	assert_int_equal(st[0].p.hot_pct, MV_WL_DEFAULT_HOT_PCT);
	assert_int_not_equal(st[0].seed, st[1].seed);
	assert_int_equal(st[1].vcpu, 1);
	assert_int_equal(st[1].ops_done, 0);

	/* Four 1 GiB slices: two in [0, 3G), none across the hole. */
	p.wss_bytes = 4 * GiB;
	struct mv_wl_state st4[4];
	assert_int_equal(mv_wl_states_init(&p, &vm.l, 4, st4, NULL), 0);
	for (int i = 0; i < 4; i++) {
		uint64_t a = st4[i].gpa_base, b = a + st4[i].gpa_len;
		assert_true(b <= MV_MEM_LOW_LIMIT || a >= MV_MEM_HIGH_BASE);
		for (int j = 0; j < i; j++)
			assert_true(b <= st4[j].gpa_base || a >= st4[j].gpa_base + st4[j].gpa_len);
	}

	/* 2.5 GiB slices: the second cannot fit one region. */
	struct mv_error *e = NULL;
	p.wss_bytes = 5 * GiB;
	assert_int_equal(mv_wl_states_init(&p, &vm.l, 2, st, &e), -ENOSPC);
	assert_string_equal(e->field, "workload.wss");
	mv_error_free(e);
	vm_close(&vm);
}

static void test_determinism(void **s)
{
	for (size_t w = 0; w < MV_ARRAY_SIZE(all_workloads); w++) {
		struct vm a, b, c;
		struct mv_wl_params p = all_workloads[w];
		vm_open(&a, 32 * MiB);
		vm_open(&b, 32 * MiB);
		vm_open(&c, 32 * MiB);
		vm_workload(&a, &p, 2);
		vm_workload(&b, &p, 2);
		p.seed ^= 0x1234;
		vm_workload(&c, &p, 2);
		vm_step(&a, 3000);
		vm_step(&b, 3000);
		vm_step(&c, 3000);
		assert_true(slices_equal(&a, &b));
		assert_memory_equal(a.st, b.st, 2 * sizeof(a.st[0]));
		assert_false(slices_equal(&a, &c));
		vm_close(&a);
		vm_close(&b);
		vm_close(&c);
	}
}

static void test_resume(void **s)
{
	for (size_t w = 0; w < MV_ARRAY_SIZE(all_workloads); w++) {
		struct vm a, b;
		vm_open(&a, 32 * MiB);
		vm_open(&b, 32 * MiB);
		vm_workload(&a, &all_workloads[w], 1);
		vm_workload(&b, &all_workloads[w], 1);
		vm_step(&a, 1500);
		vm_step(&b, 1000);
		struct mv_wl_state copy = b.st[0];
		memset(&b.st[0], 0xee, sizeof(b.st[0]));
		b.st[0] = copy;
		vm_step(&b, 500);
		assert_true(slices_equal(&a, &b));
		assert_memory_equal(&a.st[0], &b.st[0], sizeof(a.st[0]));
		assert_int_equal(b.st[0].ops_done, 1500);
		vm_close(&a);
		vm_close(&b);
	}
}

static void test_verify_ok(void **s)
{
	for (size_t w = 0; w < MV_ARRAY_SIZE(all_workloads); w++) {
		struct vm vm;
		vm_open(&vm, 32 * MiB);
		vm_workload(&vm, &all_workloads[w], 3);
		assert_verify_ok(&vm);
		for (int k = 0; k < 4; k++) {
			vm_step(&vm, 777);
			assert_verify_ok(&vm);
		}
		vm_close(&vm);
	}
	struct vm vm;
	vm_open(&vm, 32 * MiB);
	struct mv_wl_params idle = {.kind = MV_WL_IDLE};
	vm_workload(&vm, &idle, 2);
	vm_step(&vm, 100);
	assert_verify_ok(&vm);
	vm.st[1].ops_done = 3;
	assert_verify_fails(&vm, "idle");
	vm_close(&vm);
}

static void test_verify_memtouch_corruption(void **s)
{
	struct vm vm;
	vm_open(&vm, 32 * MiB);
	struct mv_wl_params p = params(MV_WL_MEMTOUCH, MV_PAT_SEQ, 16 * 4096);
	vm_workload(&vm, &p, 1);
	vm_step(&vm, 16 + 5); /* pages 0-4 at version 2, the rest at 1 */
	assert_verify_ok(&vm);

	uint8_t *pg = hva(&vm, vm.st[0].gpa_base + 7 * 4096);
	pg[3000] ^= 0x10;
	assert_verify_fails(&vm, "content differs at offset 3000");
	pg[3000] ^= 0x10;
	assert_verify_ok(&vm);

	/* Revert page 2 to its version-1 copy. */
	uint8_t old[4096], *p2 = hva(&vm, vm.st[0].gpa_base + 2 * 4096);
	struct vm ref;
	vm_open(&ref, 32 * MiB);
	vm_workload(&ref, &p, 1);
	vm_step(&ref, 16);
	memcpy(old, hva(&ref, ref.st[0].gpa_base + 2 * 4096), 4096);
	vm_close(&ref);
	uint8_t cur[4096];
	memcpy(cur, p2, 4096);
	memcpy(p2, old, 4096);
	char want[96];
	snprintf(want, sizeof(want), "vcpu 0 page gpa 0x%llx: version 1 expected 2",
		 (unsigned long long)(vm.st[0].gpa_base + 2 * 4096));
	assert_verify_fails(&vm, want);
	memcpy(p2, cur, 4096);
	assert_verify_ok(&vm);

	/* A lost op (state says more ops than RAM shows). */
	vm.st[0].ops_done++;
	snprintf(want, sizeof(want), "vcpu 0 page gpa 0x%llx: version 1 expected 2",
		 (unsigned long long)(vm.st[0].gpa_base + 5 * 4096));
	assert_verify_fails(&vm, want);
	vm.st[0].ops_done--;

	/* A never-written page must stay zero. */
	struct vm r;
	vm_open(&r, 32 * MiB);
	p = params(MV_WL_MEMTOUCH, MV_PAT_RANDOM, 8 * MiB);
	vm_workload(&r, &p, 2);
	vm_step(&r, 10);
	assert_verify_ok(&r);
	uint64_t gpa = r.st[1].gpa_base;
	for (;; gpa += 4096)
		if (*(uint64_t *)hva(&r, gpa) == 0)
			break;
	hva(&r, gpa)[100] = 1;
	assert_verify_fails(&r, "never written but not zero at offset 100");
	vm_close(&r);
	vm_close(&vm);
}

/* kvstore layout, mirrored from wl_kvstore.c: 64-byte header, 64-byte buckets
 * {key u64, version u32, flags u32 ("LIVE"), value 48 bytes}. */
static uint8_t *kv_live_bucket(struct vm *vm, int nth)
{
	uint8_t *t = hva(vm, vm->st[0].gpa_base);
	for (uint64_t o = 64; o + 64 <= vm->st[0].gpa_len; o += 64) {
		uint32_t flags;
		memcpy(&flags, t + o + 12, 4);
		if (flags == 0x4556494cu && nth-- == 0)
			return t + o;
	}
	fail_msg("no live bucket");
	return NULL;
}

static void test_verify_kvstore_corruption(void **s)
{
	struct vm vm;
	vm_open(&vm, 32 * MiB);
	struct mv_wl_params p = params(MV_WL_KVSTORE, 0, 256 * 1024);
	vm_workload(&vm, &p, 1);
	vm_step(&vm, 20000);
	assert_verify_ok(&vm);
	uint64_t *count = (uint64_t *)hva(&vm, vm.st[0].gpa_base + 16);
	assert_true(*count > 100);
	assert_int_equal(*count, vm.st[0].aux[0]);

	uint8_t saved[64], *b = kv_live_bucket(&vm, 5);
	memcpy(saved, b, 64);
	b[40] ^= 1;
	assert_verify_fails(&vm, "value differs");
	b[40] ^= 1;
	assert_verify_ok(&vm);

	/* Drop the entry, with or without fixing up the count. */
	uint64_t key;
	memcpy(&key, b, 8);
	char want[64];
	snprintf(want, sizeof(want), "vcpu 0 kvstore key %llu", (unsigned long long)key);
	memset(b, 0, 64);
	assert_verify_fails(&vm, want);
	(*count)--;
	assert_verify_fails(&vm, "missing");
	(*count)++;
	memcpy(b, saved, 64);
	assert_verify_ok(&vm);
	(*count)++;
	assert_verify_fails(&vm, "header count");
	(*count)--;
	assert_verify_ok(&vm);

	/* An older version of the entry. */
	uint32_t ver;
	memcpy(&ver, b + 8, 4);
	ver--;
	memcpy(b + 8, &ver, 4);
	assert_verify_fails(&vm, "expected");
	memcpy(b, saved, 64);

	/* Header damage. */
	uint8_t *h = hva(&vm, vm.st[0].gpa_base);
	h[0] ^= 0xff;
	assert_verify_fails(&vm, "header");
	h[0] ^= 0xff;
	assert_verify_ok(&vm);
	vm_close(&vm);
}

static void test_sparse_8g(void **s)
{
	struct vm vm;
	vm_open(&vm, 8 * GiB);
	struct mv_wl_params p = params(MV_WL_MEMTOUCH, MV_PAT_HOTCOLD, 8 * MiB);
	vm_workload(&vm, &p, 2);
	vm_step(&vm, 5000);
	assert_verify_ok(&vm);
	vm_close(&vm);
	vm_open(&vm, 8 * GiB);
	p = params(MV_WL_KVSTORE, 0, 4 * MiB);
	vm_workload(&vm, &p, 4);
	vm_step(&vm, 5000);
	assert_verify_ok(&vm);
	vm_close(&vm);
}

static uint64_t cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static struct mv_vcpus *start(struct vm *vm, bool paused)
{
	struct mv_vcpus *v = NULL;
	struct mv_error *e = NULL;
	int r = mv_vcpus_start(vm->m, mv_exec_native(), vm->st, vm->n, paused, &v, &e);
	if (r < 0)
		fail_msg("vcpus_start: %s", mv_error_msg(e, r));
	return v;
}

static uint64_t ops_of(struct mv_vcpus *v)
{
	struct mv_vcpus_stats st;
	mv_vcpus_get_stats(v, &st);
	return st.ops_done;
}

static void vcpus_verify_ok(struct mv_vcpus *v)
{
	struct mv_error *e = NULL;
	int r = mv_vcpus_verify(v, &e);
	if (r < 0)
		fail_msg("vcpus verify: %s", mv_error_msg(e, r));
}

static void test_vcpus_pause_resume(void **s)
{
	struct vm vm;
	vm_open(&vm, 64 * MiB);
	struct mv_wl_params p = params(MV_WL_MEMTOUCH, MV_PAT_RANDOM, 16 * MiB);
	vm_workload(&vm, &p, 4);
	struct mv_vcpus *v = start(&vm, true);
	struct mv_vcpus_stats st;
	mv_vcpus_get_stats(v, &st);
	assert_true(mv_vcpus_paused(v));
	assert_int_equal(st.running, 0);
	assert_int_equal(st.ops_done, 0);
	for (int round = 0; round < 5; round++) {
		mv_vcpus_resume(v);
		assert_false(mv_vcpus_paused(v));
		usleep(30000);
		uint64_t t0 = mv_now_ns();
		mv_vcpus_pause(v);
		uint64_t lat = mv_now_ns() - t0;
		/* A liveness bound, not a speed target (bench-workload measures speed):
		 * pause must not wait out a rate-limit sleep or hang. */
		assert_true(lat < 2000 * 1000000ULL);
		mv_vcpus_get_stats(v, &st);
		assert_int_equal(st.running, 0);
		uint64_t ops = st.ops_done;
		assert_true(ops > 0);
		usleep(10000);
		assert_int_equal(ops_of(v), ops);
		struct mv_wl_state got[4];
		mv_vcpus_get_states(v, got);
		uint64_t sum = 0;
		for (int i = 0; i < 4; i++)
			sum += got[i].ops_done;
		assert_int_equal(sum, ops);
		vcpus_verify_ok(v);
	}
	/* Verify while running pauses around the check and resumes. */
	mv_vcpus_resume(v);
	usleep(10000);
	vcpus_verify_ok(v);
	assert_false(mv_vcpus_paused(v));
	mv_vcpus_get_stats(v, &st);
	assert_int_equal(st.running, 4);
	/* Corruption is reported through the handle, naming the vCPU. */
	mv_vcpus_pause(v);
	struct mv_wl_state got[4];
	mv_vcpus_get_states(v, got);
	uint64_t ops_before = ops_of(v);
	uint64_t gpa = got[2].gpa_base;
	while (*(uint64_t *)hva(&vm, gpa) == 0)
		gpa += 4096;
	hva(&vm, gpa)[2000] ^= 0x80;
	struct mv_error *e = NULL;
	assert_int_equal(mv_vcpus_verify(v, &e), -EIO);
	assert_non_null(strstr(e->msg, "vcpu 2 page gpa"));
	mv_error_free(e);
	assert_true(mv_vcpus_paused(v));
	assert_int_equal(ops_of(v), ops_before);
	mv_vcpus_stop(v);
	vm_close(&vm);
}

/* Runs for ms milliseconds and returns the ops done meanwhile. */
static uint64_t ops_in(struct mv_vcpus *v, unsigned ms)
{
	uint64_t a = ops_of(v);
	usleep(ms * 1000);
	return ops_of(v) - a;
}

static void test_vcpus_rate(void **s)
{
	struct vm vm;
	vm_open(&vm, 64 * MiB);
	struct mv_wl_params p = params(MV_WL_MEMTOUCH, MV_PAT_RANDOM, 16 * MiB);
	p.rate = 2000;
	vm_workload(&vm, &p, 3);
	struct mv_vcpus *v = start(&vm, false);
	uint64_t c0 = cpu_ns();
	uint64_t n = ops_in(v, 1000);
	uint64_t cpu = cpu_ns() - c0;
	print_message("memtouch rate 2000/s over 3 vCPUs: %llu ops in 1 s, %.1f ms CPU\n",
		      (unsigned long long)n, cpu / 1e6);
	/* Pacing must never overshoot; a loaded machine may starve it, so the
	 * floor only proves the vCPUs run (bench-workload measures speed). */
	assert_true(n >= 600 && n <= 2600);
	assert_true(cpu < 300 * 1000000ULL); /* paced by sleeping, not spinning */
	/* Throttle scales a paced vCPU's rate. */
	mv_vcpus_set_throttle(v, 50);
	usleep(100000);
	n = ops_in(v, 1000);
	print_message("  throttled 50 %%: %llu ops in 1 s\n", (unsigned long long)n);
	assert_true(n >= 300 && n <= 1300);
	mv_vcpus_stop(v);
	vm_close(&vm);

	vm_open(&vm, 64 * MiB);
	p = params(MV_WL_KVSTORE, 0, 4 * MiB);
	p.rate = 5000;
	vm_workload(&vm, &p, 2);
	v = start(&vm, false);
	n = ops_in(v, 1000);
	print_message("kvstore rate 5000/s over 2 vCPUs: %llu ops in 1 s\n", (unsigned long long)n);
	assert_true(n >= 3500 && n <= 6500);
	vcpus_verify_ok(v);
	mv_vcpus_stop(v);
	vm_close(&vm);
}

static void test_vcpus_throttle(void **s)
{
	struct vm vm;
	vm_open(&vm, 64 * MiB);
	struct mv_wl_params p = params(MV_WL_KVSTORE, 0, 8 * MiB);
	vm_workload(&vm, &p, 1);
	struct mv_vcpus *v = start(&vm, false);
	usleep(20000);
	uint64_t full = ops_in(v, 300);
	/* 10 % duty cycle: well under half even if a busy host starves the unthrottled run. */
	mv_vcpus_set_throttle(v, 90);
	struct mv_vcpus_stats st;
	mv_vcpus_get_stats(v, &st);
	assert_int_equal(st.throttle_pct, 90);
	usleep(20000);
	uint64_t thr = ops_in(v, 300);
	print_message("kvstore full speed %llu ops/0.3 s, throttled 90 %%: %llu\n",
		      (unsigned long long)full, (unsigned long long)thr);
	assert_true(thr * 2 < full);
	mv_vcpus_set_throttle(v, 0);
	vcpus_verify_ok(v);
	mv_vcpus_stop(v);
	vm_close(&vm);
}

static void test_vcpus_idle(void **s)
{
	struct vm vm;
	vm_open(&vm, 64 * MiB);
	struct mv_wl_params p = {.kind = MV_WL_IDLE};
	vm_workload(&vm, &p, 4);
	struct mv_vcpus *v = start(&vm, false);
	uint64_t c0 = cpu_ns();
	usleep(200000);
	assert_true(cpu_ns() - c0 < 50 * 1000000ULL);
	struct mv_vcpus_stats st;
	mv_vcpus_get_stats(v, &st);
	assert_int_equal(st.running, 4);
	assert_int_equal(st.ops_done, 0);
	mv_vcpus_pause(v);
	mv_vcpus_get_stats(v, &st);
	assert_int_equal(st.running, 0);
	vcpus_verify_ok(v);
	mv_vcpus_resume(v);
	mv_vcpus_stop(v);
	/* Stop straight after start, and while paused. */
	v = start(&vm, true);
	mv_vcpus_stop(v);
	vm_close(&vm);
}

static void test_vcpus_bad_args(void **s)
{
	struct vm vm;
	vm_open(&vm, 64 * MiB);
	struct mv_wl_params p = {.kind = MV_WL_IDLE};
	vm_workload(&vm, &p, 1);
	struct mv_vcpus *v = NULL;
	struct mv_error *e = NULL;
	assert_int_equal(mv_vcpus_start(vm.m, mv_exec_native(), vm.st, 0, false, &v, &e), -EINVAL);
	assert_string_equal(e->field, "vcpus");
	mv_error_free(e);
	vm.st[0].kind = 99;
	assert_int_equal(mv_vcpus_start(vm.m, mv_exec_native(), vm.st, 1, false, &v, NULL), -EINVAL);
	assert_null(v);
	vm_close(&vm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_validate),
		cmocka_unit_test(test_states_split),
		cmocka_unit_test(test_determinism),
		cmocka_unit_test(test_resume),
		cmocka_unit_test(test_verify_ok),
		cmocka_unit_test(test_verify_memtouch_corruption),
		cmocka_unit_test(test_verify_kvstore_corruption),
		cmocka_unit_test(test_sparse_8g),
		cmocka_unit_test(test_vcpus_pause_resume),
		cmocka_unit_test(test_vcpus_rate),
		cmocka_unit_test(test_vcpus_throttle),
		cmocka_unit_test(test_vcpus_idle),
		cmocka_unit_test(test_vcpus_bad_args),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
