/* Live migrations between two guest memories in this process over a
 * socketpair: each workload running under load, with zstd, post-copy, a
 * bandwidth cap that forces auto-converge; and the fault cases: the peer
 * closes mid-stream, a byte is corrupted on the wire, the destination
 * refuses, the destination stops reading. After a failure the source VM
 * must be running and verify; after success the destination must verify. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "memvisor/migrate.h"
#include "memvisor/util.h"
#include "test_migrate.h"
#include "migrate_i.h"

#define MiB (1ULL << 20)

struct vm {
	struct mv_mem_layout l;
	struct mv_guest_mem *m;
	struct mv_dirty_log *log;
	struct mv_vcpus *v;
	struct mv_wl_params p;
	uint32_t n;
};

static void die(const char *what, int r, struct mv_error *e)
{
	fail_msg("%s: %s", what, mv_error_msg(e, r));
}

static enum mv_mem_backing backing = MV_MEM_BACKING_4K;   /* of the next VM's RAM */

static void vm_mem(struct vm *vm, uint64_t ram)
{
	struct mv_error *e = NULL;
	int r = mv_mem_layout_create(ram, "test-mig", backing, &vm->l, &e);
	if (r < 0)
		die("layout", r, e);
	r = mv_guest_mem_map(&vm->l, &vm->m, &e);
	if (r < 0)
		die("map", r, e);
}

/* A running source VM with a dirty log. */
static void vm_source(struct vm *vm, uint64_t ram, const struct mv_wl_params *p, uint32_t n)
{
	struct mv_error *e = NULL;
	struct mv_wl_state st[MV_MAX_VCPUS];
	memset(vm, 0, sizeof(*vm));
	vm_mem(vm, ram);
	vm->p = *p;
	vm->n = n;
	int r = mv_wl_states_init(p, &vm->l, n, st, &e);
	for (uint32_t i = 0; i < n && r == 0; i++)
		r = mv_wl_ops_of(p->kind)->init(&st[i], vm->m, &e);
	if (r < 0)
		die("workload init", r, e);
	r = mv_dirty_start(vm->m, MV_DIRTY_AUTO, &vm->log, &e);
	if (r < 0)
		die("dirty log", r, e);
	r = mv_vcpus_start(vm->m, mv_exec_native(), st, n, false, &vm->v, &e);
	if (r < 0)
		die("vcpus", r, e);
}

static void vm_close(struct vm *vm)
{
	mv_vcpus_stop(vm->v);
	if (vm->log)
		mv_dirty_stop(vm->log);
	mv_guest_mem_unmap(vm->m);
	mv_mem_layout_close(&vm->l);
}

static uint64_t ops_of(struct mv_vcpus *v)
{
	struct mv_vcpus_stats s;
	mv_vcpus_get_stats(v, &s);
	return s.ops_done;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* The source VM must still be alive: running, making progress, intact. */
static void assert_source_alive(struct vm *src)
{
	struct mv_error *e = NULL;
	assert_false(mv_vcpus_paused(src->v));
	struct mv_vcpus_stats s;
	mv_vcpus_get_stats(src->v, &s);
	assert_int_equal(s.throttle_pct, 0);
	uint64_t before = ops_of(src->v);
	sleep_ms(50);
	if (src->p.kind != MV_WL_IDLE)
		assert_true(ops_of(src->v) > before);
	int r = mv_vcpus_verify(src->v, &e);
	if (r < 0)
		die("source verify after failed migration", r, e);
}

struct dst_args {
	int sock;
	struct vm *vm;
	struct mv_migrate_opts opts_extra;
	struct mv_vcpus *out;
	int ret;
	char msg[512];
	struct mv_migrate_progress last;
	unsigned ncb;
};

static int dst_cb(const struct mv_migrate_progress *p, void *ctx)
{
	struct dst_args *a = ctx;
	a->last = *p;
	a->ncb++;
	return 0;
}

static void *dst_main(void *arg)
{
	struct dst_args *a = arg;
	struct mv_migrate_config cfg;
	struct mv_migrate_opts o;
	struct mv_error *e = NULL;
	a->ret = mv_migrate_recv_config(a->sock, &cfg, &o, 5000, &e);
	if (a->ret == 0) {
		o.flags = a->opts_extra.flags;
		o.timeout_ms = a->opts_extra.timeout_ms;
		a->ret = mv_migrate_recv(a->sock, a->vm->m, &cfg, &o, &a->out, dst_cb, a, &e);
	}
	if (a->ret < 0)
		snprintf(a->msg, sizeof(a->msg), "%s", mv_error_msg(e, a->ret));
	mv_error_free(e);
	return NULL;
}

struct src_stats {
	struct mv_migrate_progress last;
	unsigned ncb;
	uint32_t max_throttle;
	bool saw_phase[MV_MIGRATE_FAILED + 1];
};

static int src_cb(const struct mv_migrate_progress *p, void *ctx)
{
	struct src_stats *s = ctx;
	s->last = *p;
	s->ncb++;
	if (p->throttle_pct > s->max_throttle)
		s->max_throttle = p->throttle_pct;
	if (p->phase <= MV_MIGRATE_FAILED)
		s->saw_phase[p->phase] = true;
	return 0;
}

static void socks(int sv[2])
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

/* Migrates src into a fresh VM and checks the result; returns the source's
 * progress. The destination VM is left in *dst (running) for the caller. */
static void migrate_ok(struct vm *src, struct vm *dst, const struct mv_migrate_opts *opts,
		       struct src_stats *st)
{
	struct mv_error *e = NULL;
	int sv[2];
	socks(sv);
	memset(dst, 0, sizeof(*dst));
	vm_mem(dst, mv_mem_layout_ram_size(&src->l));
	dst->p = src->p;
	dst->n = src->n;
	struct dst_args a = {.sock = sv[1], .vm = dst, .opts_extra = *opts};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, dst_main, &a), 0);
	struct mv_migrate_config cfg;
	mv_migrate_config_init(&cfg, src->m, src->n, &src->p, "vm-test");
	memset(st, 0, sizeof(*st));
	int r = mv_migrate_send(sv[0], src->m, src->log, src->v, &cfg, opts, src_cb, st, &e);
	pthread_join(th, NULL);
	if (r < 0)
		die("mv_migrate_send", r, e);
	if (a.ret < 0)
		fail_msg("mv_migrate_recv: %s", a.msg);
	close(sv[0]);
	close(sv[1]);
	dst->v = a.out;
	assert_non_null(dst->v);
	assert_true(mv_vcpus_paused(src->v));
	assert_int_equal(st->last.phase, MV_MIGRATE_DONE);
	assert_true(st->saw_phase[MV_MIGRATE_SETUP] || st->saw_phase[MV_MIGRATE_PRECOPY]);
	assert_int_equal(a.last.phase, MV_MIGRATE_DONE);
	/* The destination continues from where the source stopped. */
	uint64_t src_ops = ops_of(src->v);
	r = mv_vcpus_verify(dst->v, &e);
	if (r < 0)
		die("destination verify", r, e);
	assert_true(ops_of(dst->v) >= src_ops);
	if (!(opts->flags & MV_MIGRATE_DEST_PAUSED) && src->p.kind != MV_WL_IDLE) {
		uint64_t before = ops_of(dst->v);
		sleep_ms(50);
		assert_true(ops_of(dst->v) > before);
	}
	print_message("      pass %u, %llu pages (%llu zero, %llu zstd, %llu requested), %.1f MiB, "
		      "downtime %llu us, total %llu us, throttle max %u%%\n",
		      st->last.pass, (unsigned long long)st->last.pages_sent,
		      (unsigned long long)st->last.pages_zero,
		      (unsigned long long)st->last.pages_compressed,
		      (unsigned long long)st->last.pages_requested,
		      (double)st->last.bytes_sent / MiB, (unsigned long long)st->last.downtime_us,
		      (unsigned long long)st->last.total_us, st->max_throttle);
}

static struct mv_wl_params memtouch(uint64_t wss, uint64_t rate)
{
	return (struct mv_wl_params){.kind = MV_WL_MEMTOUCH, .pattern = MV_PAT_RANDOM, .seed = 7,
				     .wss_bytes = wss, .rate = rate};
}

static struct mv_wl_params kvstore(uint64_t wss, uint64_t rate)
{
	return (struct mv_wl_params){.kind = MV_WL_KVSTORE, .seed = 11, .wss_bytes = wss, .rate = rate};
}

static void run_case(const struct mv_wl_params *p, const struct mv_migrate_opts *o, uint64_t ram,
		     struct src_stats *st)
{
	struct vm src, dst;
	vm_source(&src, ram, p, 2);
	sleep_ms(100);
	migrate_ok(&src, &dst, o, st);
	vm_close(&dst);
	vm_close(&src);
}

static void test_precopy_memtouch(void **state)
{
	struct mv_wl_params p = memtouch(16 * MiB, 20000);
	struct mv_migrate_opts o = {0};
	struct src_stats st;
	run_case(&p, &o, 64 * MiB, &st);
	assert_true(st.last.downtime_us > 0);
}

static void test_precopy_kvstore(void **state)
{
	struct mv_wl_params p = kvstore(8 * MiB, 50000);
	struct mv_migrate_opts o = {0};
	struct src_stats st;
	run_case(&p, &o, 64 * MiB, &st);
}

static void test_precopy_idle_paused_compare(void **state)
{
	/* Idle guest with data written outside any workload, destination
	 * started paused: guest RAM must match byte for byte. */
	struct mv_wl_params p = {.kind = MV_WL_IDLE};
	struct mv_migrate_opts o = {.flags = MV_MIGRATE_DEST_PAUSED};
	struct vm src, dst;
	struct src_stats st;
	vm_source(&src, 32 * MiB, &p, 1);
	uint8_t *h = mv_gpa_to_hva(src.m, 0, 32 * MiB);
	for (uint64_t off = 0; off < 32 * MiB; off += 3 * MV_PAGE_SIZE + 8)
		h[off] = (uint8_t)(off >> 12 | 1);
	memset(h + 5 * MiB, 0, MV_PAGE_SIZE);   /* a populated zero page */
	migrate_ok(&src, &dst, &o, &st);
	assert_true(mv_vcpus_paused(dst.v));
	assert_memory_equal(h, mv_gpa_to_hva(dst.m, 0, 32 * MiB), 32 * MiB);
	assert_int_equal(st.last.pass, 1);
	vm_close(&dst);
	vm_close(&src);
}

static void test_precopy_zstd(void **state)
{
	struct mv_wl_params p = kvstore(8 * MiB, 50000);
	struct mv_migrate_opts o = {.features = MV_MIGRATE_F_ZSTD};
	struct src_stats st;
	run_case(&p, &o, 64 * MiB, &st);
	assert_true(st.last.pages_compressed > 0);
}

static void test_autoconverge(void **state)
{
	/* A 20 MiB/s link and a guest dirtying ~40 MiB/s (10k pages/s):
	 * without throttling it never fits a 50 ms downtime. */
	struct mv_wl_params p = memtouch(16 * MiB, 10000);
	struct mv_migrate_opts o = {.max_bandwidth = 20 * MiB, .downtime_ms = 50, .max_passes = 12};
	struct src_stats st;
	run_case(&p, &o, 32 * MiB, &st);
	assert_true(st.max_throttle >= 20);
	assert_true(st.last.pass > 2);
}

static void test_postcopy(void **state)
{
	struct mv_wl_params p = memtouch(16 * MiB, 50000);
	struct mv_migrate_opts o = {.features = MV_MIGRATE_F_POSTCOPY, .downtime_ms = 1};
	struct src_stats st;
	run_case(&p, &o, 64 * MiB, &st);
	assert_true(st.saw_phase[MV_MIGRATE_POSTCOPY]);
}

static void test_postcopy_kvstore_zstd(void **state)
{
	struct mv_wl_params p = kvstore(8 * MiB, 0);
	struct mv_migrate_opts o = {.features = MV_MIGRATE_F_POSTCOPY | MV_MIGRATE_F_ZSTD,
				    .downtime_ms = 1};
	struct src_stats st;
	run_case(&p, &o, 64 * MiB, &st);
}

/* hugetlb RAM moves whole 2 MiB pages in post-copy (a host without a
 * reserved pool skips: the integration test reserves one). */
static void test_postcopy_hugetlb(void **state)
{
	if (mv_mem_hugepages_available() < 2 * 64 * MiB / MV_HUGE_PAGE_SIZE) {
		print_message("      skipped: fewer than 64 free 2 MiB hugetlb pages\n");
		skip();
	}
	/* The cap slows the push so that the running guest faults first. */
	struct mv_wl_params p = kvstore(8 * MiB, 50000);
	struct mv_migrate_opts o = {.features = MV_MIGRATE_F_POSTCOPY, .downtime_ms = 1,
				    .max_bandwidth = 32 * MiB};
	struct src_stats st;
	backing = MV_MEM_BACKING_HUGETLB;
	run_case(&p, &o, 64 * MiB, &st);
	backing = MV_MEM_BACKING_4K;
	assert_true(st.saw_phase[MV_MIGRATE_POSTCOPY]);
	assert_true(st.last.pages_requested > 0);
}

/* The destination's huge-page assembly: a page is placed (and readable)
 * only once all 512 of its 4 KiB pages are in; a page of another huge page
 * before that, or the end of the stream then, is a protocol error. */
static void test_postcopy_hugetlb_staging(void **state)
{
	if (mv_mem_hugepages_available() < 8 * MiB / MV_HUGE_PAGE_SIZE) {
		print_message("      skipped: fewer than 4 free 2 MiB hugetlb pages\n");
		skip();
	}
	struct mv_error *e = NULL;
	struct vm vm;
	int sv[2];
	socks(sv);
	backing = MV_MEM_BACKING_HUGETLB;
	vm_mem(&vm, 8 * MiB);
	backing = MV_MEM_BACKING_4K;
	struct mig_conn c;
	mig_conn_init(&c, sv[0], 1000, 0);
	struct mig_postcopy *pc;
	int r = mig_postcopy_start(vm.m, NULL, &c, &pc, &e);
	if (r < 0)
		die("post-copy start", r, e);
	uint8_t page[MV_PAGE_SIZE];
	const uint64_t per = MV_HUGE_PAGE_SIZE / MV_PAGE_SIZE;
	for (uint64_t i = 0; i < per; i++) {   /* huge page 1, ZERO entries every 8th */
		memset(page, (int)(i % 251 + 1), sizeof(page));
		assert_int_equal(mig_postcopy_place(pc, MV_HUGE_PAGE_SIZE + i * MV_PAGE_SIZE,
						    i % 8 ? page : NULL, &e), 0);
		if (i == per - 2)   /* not complete yet: huge page 2 may not start */
			assert_int_equal(mig_postcopy_place(pc, 2 * MV_HUGE_PAGE_SIZE, page, &e),
					 -EPROTO);
	}
	mv_error_free(e);
	e = NULL;
	assert_int_equal(mig_postcopy_check_done(pc, &e), 0);
	const uint8_t *h = mv_gpa_to_hva(vm.m, MV_HUGE_PAGE_SIZE, MV_HUGE_PAGE_SIZE);
	for (uint64_t i = 0; i < per; i++)
		assert_int_equal(h[i * MV_PAGE_SIZE + 17], i % 8 ? (uint8_t)(i % 251 + 1) : 0);
	assert_int_equal(mig_postcopy_place(pc, 3 * MV_HUGE_PAGE_SIZE, page, &e), 0);
	assert_int_equal(mig_postcopy_check_done(pc, &e), -EPROTO);
	print_message("      %s\n", mv_error_msg(e, -EPROTO));
	mv_error_free(e);
	mig_postcopy_stop(pc);
	mig_conn_fini(&c);
	close(sv[0]);
	close(sv[1]);
	mv_guest_mem_unmap(vm.m);
	mv_mem_layout_close(&vm.l);
}

/* ---- fault cases ---- */

/* A fake destination: admits the VM, says READY, then does `act`. */
enum fake_act { FAKE_CLOSE_AFTER, FAKE_NACK_AFTER, FAKE_STOP_READING, FAKE_NACK_CONFIG };
struct fake_args {
	int sock;
	enum fake_act act;
	size_t after;    /* bytes of RAM stream to read first */
};

static void *fake_main(void *arg)
{
	struct fake_args *a = arg;
	struct mv_migrate_config cfg;
	struct mv_migrate_opts o;
	if (mv_migrate_recv_config(a->sock, &cfg, &o, 5000, NULL) < 0)
		return NULL;
	if (a->act == FAKE_NACK_CONFIG) {
		if (mv_migrate_send_nack(a->sock, -ENOMEM, "not enough memory on this host") < 0)
			fail_msg("nack");
		return NULL;
	}
	struct mig_conn c;
	mig_conn_init(&c, a->sock, 5000, 2);
	uint8_t ready[MIG_READY_LEN] = {0};
	if (mig_send(&c, MIG_READY, ready, sizeof(ready), NULL) < 0)
		fail_msg("ready");
	if (a->act == FAKE_STOP_READING) {
		sleep_ms(1500);
		mig_conn_fini(&c);
		return NULL;
	}
	size_t got = 0;
	static uint8_t buf[1 << 16];
	while (got < a->after) {
		ssize_t n = read(a->sock, buf, sizeof(buf));
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (a->act == FAKE_NACK_AFTER)
		mig_fail_peer(&c, -EIO, "disk on fire");
	if (a->act == FAKE_CLOSE_AFTER)
		close(a->sock);
	mig_conn_fini(&c);
	return NULL;
}

static int fake_run(struct vm *src, enum fake_act act, size_t after, int timeout_ms,
		    struct mv_error **e)
{
	int sv[2];
	socks(sv);
	struct fake_args a = {.sock = sv[1], .act = act, .after = after};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, fake_main, &a), 0);
	struct mv_migrate_config cfg;
	mv_migrate_config_init(&cfg, src->m, src->n, &src->p, "vm-fault");
	struct mv_migrate_opts o = {.timeout_ms = timeout_ms};
	int r = mv_migrate_send(sv[0], src->m, src->log, src->v, &cfg, &o, NULL, NULL, e);
	pthread_join(th, NULL);
	close(sv[0]);
	if (act != FAKE_CLOSE_AFTER)   /* the fake closed its end itself */
		close(sv[1]);
	return r;
}

static void test_fault_peer_closes(void **state)
{
	struct vm src;
	struct mv_wl_params p = memtouch(16 * MiB, 20000);
	vm_source(&src, 64 * MiB, &p, 2);
	/* The fake reads 0 bytes, or 3 MiB of the stream, then the socket closes. */
	size_t at[] = {0, 3 * MiB};
	for (size_t i = 0; i < MV_ARRAY_SIZE(at); i++) {
		struct mv_error *e = NULL;
		int r = fake_run(&src, FAKE_CLOSE_AFTER, at[i], 5000, &e);
		assert_true(r == -EPIPE || r == -ECONNRESET);
		print_message("      closed after %zu: %s\n", at[i], mv_error_msg(e, r));
		mv_error_free(e);
		assert_source_alive(&src);
	}
	vm_close(&src);
}

static void test_fault_nack(void **state)
{
	struct vm src;
	struct mv_wl_params p = kvstore(8 * MiB, 20000);
	vm_source(&src, 64 * MiB, &p, 2);
	struct mv_error *e = NULL;
	int r = fake_run(&src, FAKE_NACK_CONFIG, 0, 5000, &e);
	assert_int_equal(r, -ENOMEM);
	assert_non_null(strstr(mv_error_msg(e, r), "not enough memory"));
	mv_error_free(e);
	assert_source_alive(&src);
	e = NULL;
	r = fake_run(&src, FAKE_NACK_AFTER, 2 * MiB, 5000, &e);
	assert_int_equal(r, -EIO);
	assert_non_null(strstr(mv_error_msg(e, r), "disk on fire"));
	mv_error_free(e);
	assert_source_alive(&src);
	vm_close(&src);
}

static void test_fault_timeout(void **state)
{
	struct vm src;
	struct mv_wl_params p = memtouch(16 * MiB, 20000);
	vm_source(&src, 64 * MiB, &p, 2);
	struct mv_error *e = NULL;
	int r = fake_run(&src, FAKE_STOP_READING, 0, 300, &e);
	assert_int_equal(r, -ETIMEDOUT);
	mv_error_free(e);
	assert_source_alive(&src);
	vm_close(&src);
}

/* A man in the middle forwarding both ways, flipping one byte of the
 * source's stream at offset `flip`. */
struct mitm {
	int a, b;    /* a: source side, b: destination side */
	size_t flip;
	bool cut_after_running;   /* cut both ways once the destination's RUNNING went by */
};

/* Reads whole frames from the destination into buf at *len and forwards
 * them; returns true once a RUNNING frame was forwarded. */
static bool forward_back(struct mitm *m, uint8_t *buf, size_t *len, bool *dead)
{
	ssize_t n = read(m->b, buf + *len, (1 << 16) - *len);
	if (n <= 0) {
		*dead = true;
		return false;
	}
	*len += (size_t)n;
	bool running = false;
	size_t off = 0;
	while (*len - off >= MV_MIGRATE_HDR_SIZE) {
		uint16_t type = (uint16_t)(buf[off + 6] | buf[off + 7] << 8);
		uint32_t plen = (uint32_t)buf[off + 12] | (uint32_t)buf[off + 13] << 8 |
				(uint32_t)buf[off + 14] << 16 | (uint32_t)buf[off + 15] << 24;
		size_t flen = MV_MIGRATE_HDR_SIZE + plen;
		if (*len - off < flen)
			break;
		if (write(m->a, buf + off, flen) != (ssize_t)flen) {
			*dead = true;
			return false;
		}
		off += flen;
		if (type == MIG_RUNNING) {
			running = true;
			break;
		}
	}
	memmove(buf, buf + off, *len - off);
	*len -= off;
	return running;
}

static void *mitm_main(void *arg)
{
	struct mitm *m = arg;
	static uint8_t buf[1 << 16], bbuf[1 << 16];
	size_t off = 0, blen = 0;
	for (;;) {
		struct pollfd p[2] = {{.fd = m->a, .events = POLLIN}, {.fd = m->b, .events = POLLIN}};
		if (poll(p, 2, 10000) <= 0)
			break;
		if (p[0].revents) {
			ssize_t n = read(m->a, buf, sizeof(buf));
			if (n <= 0)
				break;
			if (!m->cut_after_running && m->flip >= off && m->flip < off + (size_t)n)
				buf[m->flip - off] ^= 0x40;
			off += (size_t)n;
			if (write(m->b, buf, (size_t)n) != n)
				break;
		}
		if (p[1].revents && m->cut_after_running) {
			bool dead = false;
			if (forward_back(m, bbuf, &blen, &dead) || dead)
				break;
		} else if (p[1].revents) {
			ssize_t n = read(m->b, buf, sizeof(buf));
			if (n <= 0 || write(m->a, buf, (size_t)n) != n)
				break;
		}
	}
	shutdown(m->a, SHUT_RDWR);
	shutdown(m->b, SHUT_RDWR);
	return NULL;
}

static void test_fault_corrupt(void **state)
{
	struct vm src;
	struct mv_wl_params p = memtouch(16 * MiB, 20000);
	vm_source(&src, 64 * MiB, &p, 2);
	/* In a header, in CONFIG, deep in RAM. */
	size_t at[] = {5, 28 + 16 + 28 + 70, 2 * MiB + 12345};
	for (size_t i = 0; i < MV_ARRAY_SIZE(at); i++) {
		int s1[2], s2[2];
		socks(s1);
		socks(s2);
		struct vm dst;
		memset(&dst, 0, sizeof(dst));
		vm_mem(&dst, 64 * MiB);
		struct dst_args a = {.sock = s2[1], .vm = &dst};
		struct mitm m = {.a = s1[1], .b = s2[0], .flip = at[i]};
		pthread_t td, tm;
		assert_int_equal(pthread_create(&td, NULL, dst_main, &a), 0);
		assert_int_equal(pthread_create(&tm, NULL, mitm_main, &m), 0);
		struct mv_migrate_config cfg;
		mv_migrate_config_init(&cfg, src.m, src.n, &src.p, "vm-corrupt");
		struct mv_migrate_opts o = {.timeout_ms = 5000};
		struct mv_error *e = NULL;
		int r = mv_migrate_send(s1[0], src.m, src.log, src.v, &cfg, &o, NULL, NULL, &e);
		shutdown(s1[0], SHUT_RDWR);   /* lets the man in the middle see the end */
		pthread_join(td, NULL);
		pthread_join(tm, NULL);
		assert_true(r < 0);
		assert_true(a.ret < 0);
		assert_null(a.out);
		print_message("      flip at %zu: source: %s\n      destination: %s\n", at[i],
			      mv_error_msg(e, r), a.msg);
		mv_error_free(e);
		assert_source_alive(&src);
		for (int k = 0; k < 2; k++) {
			close(s1[k]);
			close(s2[k]);
		}
		mv_guest_mem_unmap(dst.m);
		mv_mem_layout_close(&dst.l);
	}
	vm_close(&src);
}

static bool read_full(int fd, uint8_t *b, size_t n)
{
	for (size_t off = 0; off < n;) {
		ssize_t k = read(fd, b + off, n - off);
		if (k <= 0)
			return false;
		off += (size_t)k;
	}
	return true;
}

/* Forwards whole frames from the source and cuts both ways just before the
 * first frame of type cut_type. */
struct cutter {
	int a, b;
	uint16_t cut_type;
};

static void *cutter_main(void *arg)
{
	struct cutter *m = arg;
	static uint8_t buf[MV_MIGRATE_MAX_PAYLOAD + MV_MIGRATE_HDR_SIZE];
	for (;;) {
		struct pollfd p[2] = {{.fd = m->a, .events = POLLIN}, {.fd = m->b, .events = POLLIN}};
		if (poll(p, 2, 10000) <= 0)
			break;
		if (p[0].revents) {
			if (!read_full(m->a, buf, MV_MIGRATE_HDR_SIZE) || mig_get16(buf + 6) == m->cut_type)
				break;
			uint32_t len = mig_get32(buf + 12);
			if (len > MV_MIGRATE_MAX_PAYLOAD || !read_full(m->a, buf + MV_MIGRATE_HDR_SIZE, len))
				break;
			if (write(m->b, buf, MV_MIGRATE_HDR_SIZE + len) != (ssize_t)(MV_MIGRATE_HDR_SIZE + len))
				break;
		}
		if (p[1].revents) {
			ssize_t n = read(m->b, buf, 65536);
			if (n <= 0 || write(m->a, buf, (size_t)n) != n)
				break;
		}
	}
	shutdown(m->a, SHUT_RDWR);
	shutdown(m->b, SHUT_RDWR);
	return NULL;
}

/* The link dies in the stop-copy, with the VM paused at the source: before
 * VCPU, and before COMPLETE (everything but the end marker delivered). The
 * source resumes; the destination never starts the vCPUs. */
static void test_fault_cut_in_stopcopy(void **state)
{
	struct vm src;
	struct mv_wl_params p = kvstore(8 * MiB, 20000);
	vm_source(&src, 64 * MiB, &p, 2);
	uint16_t at[] = {MIG_VCPU, MIG_COMPLETE};
	for (size_t i = 0; i < MV_ARRAY_SIZE(at); i++) {
		int s1[2], s2[2];
		socks(s1);
		socks(s2);
		struct vm dst;
		memset(&dst, 0, sizeof(dst));
		vm_mem(&dst, 64 * MiB);
		struct dst_args a = {.sock = s2[1], .vm = &dst};
		struct cutter m = {.a = s1[1], .b = s2[0], .cut_type = at[i]};
		pthread_t td, tm;
		assert_int_equal(pthread_create(&td, NULL, dst_main, &a), 0);
		assert_int_equal(pthread_create(&tm, NULL, cutter_main, &m), 0);
		struct mv_migrate_config cfg;
		mv_migrate_config_init(&cfg, src.m, src.n, &src.p, "vm-cut");
		struct mv_error *e = NULL;
		int r = mv_migrate_send(s1[0], src.m, src.log, src.v, &cfg, NULL, NULL, NULL, &e);
		shutdown(s1[0], SHUT_RDWR);
		pthread_join(td, NULL);
		pthread_join(tm, NULL);
		print_message("      cut before %s: source: %s\n      destination: %s\n",
			      mig_type_name(at[i]), mv_error_msg(e, r), a.msg);
		mv_error_free(e);
		assert_true(r < 0);
		assert_true(a.ret < 0);
		assert_null(a.out);
		assert_source_alive(&src);
		for (int k = 0; k < 2; k++) {
			close(s1[k]);
			close(s2[k]);
		}
		mv_guest_mem_unmap(dst.m);
		mv_mem_layout_close(&dst.l);
	}
	vm_close(&src);
}

/* The link dies right after the switch-over of a post-copy: the source
 * cannot know whether the destination ran, so it keeps the VM paused and
 * says so; the destination stops its vCPUs. Once the destination is known
 * dead the source VM resumes intact. */
static void test_postcopy_link_lost(void **state)
{
	struct vm src, dst;
	struct mv_wl_params p = memtouch(16 * MiB, 50000);
	vm_source(&src, 64 * MiB, &p, 2);
	sleep_ms(50);
	memset(&dst, 0, sizeof(dst));
	vm_mem(&dst, 64 * MiB);
	int s1[2], s2[2];
	socks(s1);
	socks(s2);
	struct dst_args a = {.sock = s2[1], .vm = &dst, .opts_extra = {.timeout_ms = 2000}};
	/* Cut once RUNNING came back: the VM runs there, however many passes ran. */
	struct mitm m = {.a = s1[1], .b = s2[0], .cut_after_running = true};
	pthread_t td, tm;
	assert_int_equal(pthread_create(&td, NULL, dst_main, &a), 0);
	assert_int_equal(pthread_create(&tm, NULL, mitm_main, &m), 0);
	struct mv_migrate_config cfg;
	mv_migrate_config_init(&cfg, src.m, src.n, &src.p, "vm-cut");
	/* A slow link keeps the push going long after RUNNING. */
	struct mv_migrate_opts o = {.features = MV_MIGRATE_F_POSTCOPY, .downtime_ms = 1,
				    .timeout_ms = 2000, .max_bandwidth = 40 * MiB};
	struct mv_error *e = NULL;
	int r = mv_migrate_send(s1[0], src.m, src.log, src.v, &cfg, &o, NULL, NULL, &e);
	shutdown(s1[0], SHUT_RDWR);
	pthread_join(td, NULL);
	pthread_join(tm, NULL);
	print_message("      source: %s\n      destination: %s\n", mv_error_msg(e, r), a.msg);
	mv_error_free(e);
	assert_int_equal(r, -ENOTRECOVERABLE);
	assert_true(mv_vcpus_paused(src.v));
	assert_true(a.ret < 0);
	assert_null(a.out);
	mv_vcpus_resume(src.v);
	assert_source_alive(&src);
	for (int k = 0; k < 2; k++) {
		close(s1[k]);
		close(s2[k]);
	}
	mv_guest_mem_unmap(dst.m);
	mv_mem_layout_close(&dst.l);
	vm_close(&src);
}

static int cancel_cb(const struct mv_migrate_progress *p, void *ctx)
{
	unsigned *calls = ctx;
	return ++*calls >= 3;
}

static void test_fault_cancel(void **state)
{
	struct vm src, dst;
	struct mv_wl_params p = memtouch(16 * MiB, 20000);
	vm_source(&src, 64 * MiB, &p, 2);
	memset(&dst, 0, sizeof(dst));
	vm_mem(&dst, 64 * MiB);
	int sv[2];
	socks(sv);
	struct dst_args a = {.sock = sv[1], .vm = &dst};
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, dst_main, &a), 0);
	struct mv_migrate_config cfg;
	mv_migrate_config_init(&cfg, src.m, src.n, &src.p, "vm-cancel");
	struct mv_error *e = NULL;
	unsigned calls = 0;
	int r = mv_migrate_send(sv[0], src.m, src.log, src.v, &cfg, NULL, cancel_cb, &calls, &e);
	pthread_join(th, NULL);
	assert_int_equal(r, -ECANCELED);
	assert_true(a.ret < 0);
	assert_null(a.out);
	print_message("      destination: %s\n", a.msg);
	mv_error_free(e);
	close(sv[0]);
	close(sv[1]);
	assert_source_alive(&src);
	mv_guest_mem_unmap(dst.m);
	mv_mem_layout_close(&dst.l);
	vm_close(&src);
}

const struct CMUnitTest mig_live_tests[] = {
	cmocka_unit_test(test_precopy_memtouch),
	cmocka_unit_test(test_precopy_kvstore),
	cmocka_unit_test(test_precopy_idle_paused_compare),
	cmocka_unit_test(test_precopy_zstd),
	cmocka_unit_test(test_autoconverge),
	cmocka_unit_test(test_postcopy),
	cmocka_unit_test(test_postcopy_kvstore_zstd),
	cmocka_unit_test(test_postcopy_hugetlb),
	cmocka_unit_test(test_postcopy_hugetlb_staging),
	cmocka_unit_test(test_fault_peer_closes),
	cmocka_unit_test(test_fault_nack),
	cmocka_unit_test(test_fault_timeout),
	cmocka_unit_test(test_fault_corrupt),
	cmocka_unit_test(test_fault_cancel),
	cmocka_unit_test(test_fault_cut_in_stopcopy),
	cmocka_unit_test(test_postcopy_link_lost),
};
const size_t mig_live_ntests = MV_ARRAY_SIZE(mig_live_tests);
