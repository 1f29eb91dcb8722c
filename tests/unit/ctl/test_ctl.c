/* Unit tests for the control-channel codec and socket I/O (src/ctl). With
 * MV_WRITE_CORPUS=DIR set, also writes valid frames as fuzz seeds. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include "memvisor/ctl.h"

#define FRAME_MAX (32 + MV_CTL_MAX_PAYLOAD + 4)

static void save_seed(const char *name, const uint8_t *buf, int n)
{
	const char *dir = getenv("MV_WRITE_CORPUS");
	if (!dir)
		return;
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
}

static struct mv_ctl_setup sample_setup(void)
{
	struct mv_ctl_setup s = {.nregions = 2, .nvcpus = 2, .dirty_tracking = 1,
				 .wl = {.kind = MV_WL_MEMTOUCH, .seed = 7, .wss_bytes = 1 << 20}};
	s.regions[0] = (struct mv_ctl_region){.gpa = 0, .size = 3ULL << 30};
	s.regions[1] = (struct mv_ctl_region){.gpa = 4ULL << 30, .size = 1ULL << 30};
	return s;
}

static void test_roundtrip_every_type(void **st)
{
	struct mv_ctl_hello h = {.pid = 42, .state = MV_VMM_RUNNING, .ready = 1};
	strcpy(h.vm_id, "0123456789abcdef");
	struct mv_ctl_setup s = sample_setup();
	struct mv_ctl_status status = {.state = MV_VMM_PAUSED, .nvcpus = 4, .ops_done = 99};
	strcpy(status.dirty_backend, "uffd-wp");
	struct mv_ctl_verify v = {.ok = 1, .ops_done = 5};
	struct mv_ctl_relocate rl = {.gpa = 1 << 20, .len = 1 << 20};
	struct mv_ctl_relocate_reply rr = {.moved = 256, .elapsed_us = 900};
	struct {
		const char *name;
		uint16_t type, flags;
		const void *p;
		uint32_t len;
		unsigned nfds;
	} cases[] = {
		{"hello", MV_CTL_HELLO, 0, &h, sizeof(h), 0},
		{"setup", MV_CTL_SETUP, 0, &s, sizeof(s), 2},
		{"status-req", MV_CTL_STATUS, 0, NULL, 0, 0},
		{"status-reply", MV_CTL_STATUS, MV_CTL_F_REPLY, &status, sizeof(status), 0},
		{"pause", MV_CTL_PAUSE, 0, NULL, 0, 0},
		{"verify-reply", MV_CTL_VERIFY, MV_CTL_F_REPLY, &v, sizeof(v), 0},
		{"stop", MV_CTL_STOP, 0, NULL, 0, 0},
		{"relocate", MV_CTL_RELOCATE, 0, &rl, sizeof(rl), 0},
		{"relocate-reply", MV_CTL_RELOCATE, MV_CTL_F_REPLY, &rr, sizeof(rr), 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct mv_ctl_msg m, d;
		mv_ctl_msg_init(&m, cases[i].type, cases[i].p, cases[i].len);
		m.flags = cases[i].flags;
		m.seq = (uint32_t)i + 1;
		m.nfds = cases[i].nfds;
		uint8_t buf[FRAME_MAX];
		int n = mv_ctl_encode(&m, buf, sizeof(buf));
		assert_true(n > 0);
		save_seed(cases[i].name, buf, n);
		struct mv_error *err = NULL;
		assert_int_equal(mv_ctl_decode(buf, (size_t)n, &d, &err), 0);
		assert_null(err);
		assert_int_equal(d.type, m.type);
		assert_int_equal(d.seq, m.seq);
		assert_int_equal(d.payload_len, m.payload_len);
		assert_memory_equal(d.payload, m.payload, m.payload_len);
	}
}

static int decode_mutated(size_t off, uint8_t xor_mask, size_t trim)
{
	struct mv_ctl_setup s = sample_setup();
	struct mv_ctl_msg m, d;
	mv_ctl_msg_init(&m, MV_CTL_SETUP, &s, sizeof(s));
	m.nfds = 2;
	uint8_t buf[FRAME_MAX];
	int n = mv_ctl_encode(&m, buf, sizeof(buf));
	if (off < (size_t)n)
		buf[off] ^= xor_mask;
	struct mv_error *err = NULL;
	int r = mv_ctl_decode(buf, (size_t)n - trim, &d, &err);
	if (r < 0) {
		assert_non_null(err);
		assert_true(err->msg[0] != '\0');
	}
	mv_error_free(err);
	return r;
}

static void test_rejects_corruption(void **st)
{
	assert_int_equal(decode_mutated(0, 0xff, 0), -EPROTO);         /* magic */
	assert_int_equal(decode_mutated(4, 0x01, 0), -EBADMSG);        /* version: header crc */
	assert_int_equal(decode_mutated(40, 0x10, 0), -EBADMSG);       /* payload crc */
	assert_int_equal(decode_mutated(0, 0, 1), -EPROTO);            /* truncated */
	assert_int_equal(decode_mutated(0, 0, 200), -EPROTO);
	/* Every single-bit flip anywhere is refused. */
	for (size_t off = 0; off < 32 + sizeof(struct mv_ctl_setup) + 4; off += 7)
		assert_true(decode_mutated(off, 0x04, 0) < 0);
}

static void test_rejects_bad_payloads(void **st)
{
	struct mv_error *err = NULL;
	struct mv_ctl_setup s = sample_setup();
	struct mv_ctl_msg m;
	mv_ctl_msg_init(&m, MV_CTL_SETUP, &s, sizeof(s));
	m.nfds = 1;   /* 2 regions, 1 fd */
	assert_int_equal(mv_ctl_validate_payload(&m, &err), -EPROTO);
	mv_error_free(err);
	err = NULL;
	s.regions[1].gpa = 1ULL << 30;   /* overlaps region 0 */
	mv_ctl_msg_init(&m, MV_CTL_SETUP, &s, sizeof(s));
	m.nfds = 2;
	assert_true(mv_ctl_validate_payload(&m, &err) < 0);
	mv_error_free(err);
	err = NULL;
	s = sample_setup();
	s.nvcpus = 0;
	mv_ctl_msg_init(&m, MV_CTL_SETUP, &s, sizeof(s));
	m.nfds = 2;
	assert_int_equal(mv_ctl_validate_payload(&m, &err), -EPROTO);
	mv_error_free(err);
	err = NULL;
	mv_ctl_msg_init(&m, MV_CTL_PAUSE, &s, 8);   /* PAUSE carries nothing */
	assert_int_equal(mv_ctl_validate_payload(&m, &err), -EPROTO);
	mv_error_free(err);
	err = NULL;
	struct mv_ctl_hello h = {.pid = 1};
	memset(h.vm_id, 'x', sizeof(h.vm_id));       /* no NUL */
	mv_ctl_msg_init(&m, MV_CTL_HELLO, &h, sizeof(h));
	assert_int_equal(mv_ctl_validate_payload(&m, &err), -EPROTO);
	mv_error_free(err);
	/* RELOCATE: page-aligned, non-empty, no wrap-around. */
	struct mv_ctl_relocate rl[] = {{.gpa = 4096, .len = 8192}, {.gpa = 1, .len = 4096},
				       {.gpa = 0, .len = 0}, {.gpa = 0, .len = 100},
				       {.gpa = ~0ULL << 12, .len = 8192}};
	for (size_t i = 0; i < sizeof(rl) / sizeof(rl[0]); i++) {
		err = NULL;
		mv_ctl_msg_init(&m, MV_CTL_RELOCATE, &rl[i], sizeof(rl[i]));
		assert_int_equal(mv_ctl_validate_payload(&m, &err), i == 0 ? 0 : -EPROTO);
		mv_error_free(err);
	}
	/* GUARD: ops 0..3 (3 = keep out of fusion), a range for all but query. */
	struct mv_ctl_guard g[] = {{.op = MV_GUARD_OP_KEEP, .gpa = 4096, .len = 8192},
				   {.op = MV_GUARD_OP_QUERY}, {.op = MV_GUARD_OP_KEEP + 1, .len = 4096},
				   {.op = MV_GUARD_OP_KEEP, .gpa = 0, .len = 0},
				   {.op = MV_GUARD_OP_KEEP, .gpa = 4096, .len = 100}};
	for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
		err = NULL;
		mv_ctl_msg_init(&m, MV_CTL_GUARD, &g[i], sizeof(g[i]));
		assert_int_equal(mv_ctl_validate_payload(&m, &err), i < 2 ? 0 : -EPROTO);
		mv_error_free(err);
	}
}

static void test_fds_over_socket(void **st)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	int fds[2];
	for (int i = 0; i < 2; i++) {
		fds[i] = memfd_create("test", MFD_CLOEXEC);
		assert_true(fds[i] >= 0);
	}
	struct mv_ctl_setup s = sample_setup();
	struct mv_ctl_msg m, d;
	mv_ctl_msg_init(&m, MV_CTL_SETUP, &s, sizeof(s));
	m.seq = 9;
	m.nfds = 2;
	memcpy(m.fds, fds, sizeof(fds));
	assert_int_equal(mv_ctl_send(sv[0], &m), 0);
	struct mv_error *err = NULL;
	assert_int_equal(mv_ctl_recv(sv[1], &d, 1000, &err), 0);
	assert_int_equal(d.nfds, 2);
	assert_int_equal(d.seq, 9);
	/* The received fd is the same memfd: a write through one shows in the other. */
	assert_int_equal(write(fds[0], "abc", 3), 3);
	char buf[4] = {0};
	assert_int_equal(pread(d.fds[0], buf, 3, 0), 3);
	assert_string_equal(buf, "abc");
	mv_ctl_msg_close_fds(&d);
	/* Garbage on the wire is refused with a message, not a crash. */
	assert_int_equal(write(sv[0], "GARBAGE-GARBAGE-GARBAGE-GARBAGE-", 32), 32);
	assert_true(mv_ctl_recv(sv[1], &d, 1000, &err) < 0);
	assert_non_null(err);
	mv_error_free(err);
	close(sv[0]);
	close(sv[1]);
	close(fds[0]);
	close(fds[1]);
}

static void test_crc32c_known_vector(void **st)
{
	/* RFC 3720 B.4: 32 bytes of zeros -> 0x8a9136aa. */
	uint8_t z[32] = {0};
	assert_int_equal(mv_crc32c(0, z, sizeof(z)), 0x8a9136aaU);
	assert_int_equal(mv_crc32c(0, "123456789", 9), 0xe3069283U);
}

/* The three-stream path against the bitwise reference, across block edges
 * and with a running CRC carried between calls. */
static void test_crc32c_long_buffers(void **st)
{
	enum { MAX = 3 * 4096 * 3 + 77 };
	uint8_t *b = malloc(MAX);
	assert_non_null(b);
	uint64_t s = 0x9e3779b97f4a7c15ULL;
	for (size_t i = 0; i < MAX; i++) {
		s ^= s << 13, s ^= s >> 7, s ^= s << 17;
		b[i] = (uint8_t)s;
	}
	size_t lens[] = {0, 1, 7, 8, 4079, 4080, 4081, 4095, 4096, 4112, 8160 + 3, 12287, 12288,
			 12289, 12288 + 4080, 24576 + 5, 30000, MAX};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		assert_int_equal(mv_crc32c(0, b, lens[i]), mv_crc32c_portable(0, b, lens[i]));
		uint32_t part = mv_crc32c(0, b, lens[i] / 3);
		assert_int_equal(mv_crc32c(part, b + lens[i] / 3, lens[i] - lens[i] / 3),
				 mv_crc32c_portable(0, b, lens[i]));
	}
	free(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_every_type),
		cmocka_unit_test(test_rejects_corruption),
		cmocka_unit_test(test_rejects_bad_payloads),
		cmocka_unit_test(test_fds_over_socket),
		cmocka_unit_test(test_crc32c_known_vector),
		cmocka_unit_test(test_crc32c_long_buffers),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
