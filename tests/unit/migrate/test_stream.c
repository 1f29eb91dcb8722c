/* Unit tests for the migration stream codec (src/migrate/stream.c) through
 * mv_migrate_stream_check: a hand-built valid stream passes, and one
 * mutation per class of bad field (frame header, each section's fields,
 * order, totals, truncation) is refused with an error message. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>
#include "memvisor/ctl.h"
#include "memvisor/migrate.h"
#include "memvisor/util.h"
#include "test_migrate.h"
#include "stream_i.h"

#define MAXF 10
#define MAXP (64 * 1024)

struct frame {
	uint16_t type;
	size_t len;
	uint8_t p[MAXP];
};

struct stream {
	unsigned n;
	struct frame f[MAXF];
	uint32_t features;
	uint8_t out[MAXF * (MAXP + 28)];
	size_t out_len;
};

static void cfg_default(struct mv_migrate_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	strcpy(cfg->vm_name, "vm1");
	cfg->nregions = 1;
	cfg->regions[0].size = 16 << 20;
	cfg->nvcpus = 2;
	cfg->wl = (struct mv_wl_params){.kind = MV_WL_MEMTOUCH, .seed = 1, .wss_bytes = 1 << 20};
	/* CONFIG's tenant block at 304: flags, counts, pad, then spans from 320:
	 * sensitive 320 and 336, keep 352. */
	cfg->tenant.flags = MV_MIGRATE_TENANT_FUSION;
	cfg->tenant.nsensitive = 2;
	cfg->tenant.sensitive[0] = (struct mv_migrate_span){0x100000, 0x40000};
	cfg->tenant.sensitive[1] = (struct mv_migrate_span){0x800000, 0x10000};
	cfg->tenant.nkeep = 1;
	cfg->tenant.keep[0] = (struct mv_migrate_span){0x200000, 0x200000};
}

/* HEADER CONFIG RAM(zero, raw, zstd) VCPU DEVICE COMPLETE. */
static void build(struct stream *s)
{
	memset(s, 0, sizeof(*s));
	s->features = MV_MIGRATE_F_ZSTD;
	struct mig_header h = {.page_size = 4096, .features = s->features, .downtime_ms = 300};
	s->f[0].type = MIG_HEADER;
	s->f[0].len = mig_header_put(s->f[0].p, &h);
	struct mv_migrate_config cfg;
	cfg_default(&cfg);
	s->f[1].type = MIG_CONFIG;
	s->f[1].len = mig_config_put(s->f[1].p, &cfg);
	struct mig_ram_enc e = {.buf = s->f[2].p};
	mig_ram_reset(&e);
	mig_ram_add(&e, 0, MIG_ENC_ZERO, 0);
	memset(mig_ram_add(&e, 4096, MIG_ENC_RAW, 4096), 0xab, 4096);
	uint8_t page[4096], z[4096];
	memset(page, 7, sizeof(page));
	size_t zn = ZSTD_compress(z, sizeof(z), page, sizeof(page), 1);
	memcpy(mig_ram_add(&e, 8192, MIG_ENC_ZSTD, (uint32_t)zn), z, zn);
	s->f[2].type = MIG_RAM;
	s->f[2].len = mig_ram_finish(&e);
	struct mv_wl_state st[2];
	assert_int_equal(mv_wl_states_init(&cfg.wl, &(struct mv_mem_layout){.n = 1, .r = {{.size = 16 << 20}}},
					   2, st, NULL), 0);
	s->f[3].type = MIG_VCPU;
	s->f[3].len = mig_vcpu_put(s->f[3].p, st, 2);
	uint8_t blob[5] = {1, 2, 3, 4, 5};
	struct mig_device d[2] = {{.id = 1, .len = 5, .data = blob}, {.id = 2, .len = 0, .data = blob}};
	s->f[4].type = MIG_DEVICE;
	s->f[4].len = mig_device_put(s->f[4].p, d, 2);
	s->n = 6;
	s->f[5].type = MIG_COMPLETE;
}

/* Serializes with correct crcs and COMPLETE totals (unless keep_complete). */
static void serialize(struct stream *s, bool keep_complete)
{
	uint64_t bytes = 0, pages = 0;
	s->out_len = 0;
	for (unsigned i = 0; i < s->n; i++) {
		struct frame *f = &s->f[i];
		if (f->type == MIG_COMPLETE && !keep_complete) {
			struct mig_complete c = {.pages = pages, .bytes = bytes, .frames = i};
			f->len = mig_complete_put(f->p, &c);
		}
		if (f->type == MIG_RAM && f->len >= 4)
			pages += mig_get32(f->p);
		mig_hdr_put(s->out + s->out_len, f->type, (uint32_t)f->len, i, mv_crc32c(0, f->p, f->len));
		memcpy(s->out + s->out_len + 28, f->p, f->len);
		s->out_len += 28 + f->len;
		bytes += 28 + f->len;
	}
}

static int check(struct stream *s, const char *what)
{
	struct mv_error *e = NULL;
	int r = mv_migrate_stream_check(s->out, s->out_len, &e);
	if (r < 0)
		print_message("      %-28s -> %s\n", what, mv_error_msg(e, r));
	mv_error_free(e);
	return r;
}

static void test_valid(void **state)
{
	struct stream *s = malloc(sizeof(*s));
	build(s);
	serialize(s, false);
	assert_int_equal(check(s, "valid"), 0);
	/* MV_WRITE_SEED=PATH: this stream as a fuzz seed (tests/fuzz/corpus/migrate_stream/tenant). */
	const char *seed = getenv("MV_WRITE_SEED");
	FILE *f = seed ? fopen(seed, "wb") : NULL;
	if (f) {
		assert_int_equal(fwrite(s->out, 1, s->out_len, f), s->out_len);
		fclose(f);
	}
	free(s);
}

/* Mutations of a payload field, applied before serializing. */
struct pmut {
	const char *name;
	unsigned frame;
	size_t off;
	int width;        /* 1, 4, 8 bytes; 0 = truncate the payload to off */
	uint64_t value;
};

/* RAM layout: 8 bytes count+pad, entry headers 0 at 8 (zero), 1 at 24 (raw), 2 at 40
 * (zstd), then data: raw 56..4152, zstd from 4152. VCPU: 8 + 112 per state. */
static const struct pmut pmuts[] = {
	{"header page size", 0, 0, 4, 8192},
	{"header unknown feature", 0, 4, 4, 1u << 7},
	{"header downtime 0", 0, 8, 4, 0},
	{"config name not padded", 1, 10, 1, 'x'},
	{"config name control byte", 1, 1, 1, 0x01},
	{"config 0 regions", 1, 64, 4, 0},
	{"config 9 regions", 1, 64, 4, 9},
	{"config region unaligned", 1, 72, 8, 100},
	{"config region size 0", 1, 80, 8, 0},
	{"config region flags", 1, 88, 4, 4},
	{"config region pad", 1, 92, 4, 1},
	{"config unused region", 1, 96, 8, 1},
	{"config 0 vcpus", 1, 68, 4, 0},
	{"config 65 vcpus", 1, 68, 4, 65},
	{"config wl kind", 1, 72 + 192, 4, 9},
	{"config wl wss > ram", 1, 72 + 192 + 16, 8, 1ULL << 40},
	{"config tenant flags", 1, 304, 4, 2},
	{"config tenant pad", 1, 316, 4, 1},
	{"config tenant 65 ranges", 1, 308, 4, 65},
	{"config tenant count vs length", 1, 308, 4, 1},
	{"config sensitive outside", 1, 320, 8, 16 << 20},
	{"config sensitive unaligned", 1, 328, 8, 100},
	{"config sensitive overlap", 1, 336, 8, 0x110000},
	{"config keep empty", 1, 360, 8, 0},
	{"config tenant truncated", 1, 330, 0, 0},
	{"config short", 1, 310, 0, 0},
	{"ram count 0", 2, 0, 4, 0},
	{"ram count > batch", 2, 0, 4, 257},
	{"ram count > entries", 2, 0, 4, 4},
	{"ram pad", 2, 4, 4, 1},
	{"ram gpa unaligned", 2, 8, 8, 100},
	{"ram gpa outside", 2, 8, 8, 16 << 20},
	{"ram gpa huge", 2, 8, 8, UINT64_MAX & ~4095ULL},
	{"ram encoding", 2, 16, 1, 3},
	{"ram entry pad", 2, 17, 1, 1},
	{"ram zero with length", 2, 20, 4, 16},
	{"ram raw short", 2, 36, 4, 4095},
	{"ram zstd garbage", 2, 4152, 4, 0xdeadbeef},
	{"ram zstd length", 2, 40 + 12, 4, 4096},
	{"ram zstd longer than data", 2, 40 + 12, 4, 4000},
	{"ram truncated", 2, 4100, 0, 0},
	{"ram table truncated", 2, 30, 0, 0},
	{"vcpu count", 3, 0, 4, 3},
	{"vcpu state size", 3, 4, 4, 111},
	{"vcpu index", 3, 8 + 4, 4, 5},
	{"vcpu kind", 3, 8, 4, 2},
	{"vcpu pattern", 3, 8 + 12, 4, 9},
	{"vcpu slice outside", 3, 8 + 56, 8, (16 << 20) - 4096},
	{"vcpu truncated", 3, 100, 0, 0},
	{"device count", 3 + 1, 0, 4, 65},
	{"device duplicate id", 3 + 1, 24, 4, 1},
	{"device blob length", 3 + 1, 12, 4, 1000},
	{"device padding", 3 + 1, 8 + 8 + 6, 1, 9},
	{"device trailing", 3 + 1, 33, 0, 0},
	{"complete pages", 5, 0, 8, 99},
	{"complete bytes", 5, 8, 8, 1},
	{"complete frames", 5, 16, 4, 2},
	{"complete pad", 5, 20, 4, 1},
};

static void test_payload_mutations(void **state)
{
	struct stream *s = malloc(sizeof(*s));
	for (size_t i = 0; i < MV_ARRAY_SIZE(pmuts); i++) {
		const struct pmut *m = &pmuts[i];
		build(s);
		serialize(s, false);   /* COMPLETE totals for the unmutated stream */
		struct frame *f = &s->f[m->frame];
		if (m->width == 0)
			f->len = m->off;
		else if (m->width == 1)
			f->p[m->off] = (uint8_t)m->value;
		else if (m->width == 4)
			mig_put32(f->p + m->off, (uint32_t)m->value);
		else
			mig_put64(f->p + m->off, m->value);
		serialize(s, f->type == MIG_COMPLETE);
		if (check(s, m->name) == 0) {
			free(s);
			fail_msg("mutation '%s' was accepted", m->name);
		}
	}
	free(s);
}

static void test_header_mutations(void **state)
{
	struct stream *s = malloc(sizeof(*s));
	/* offset in the 2nd frame's header, value, recompute the header crc? */
	static const struct { const char *name; size_t off; int width; uint32_t v; bool fix; } hm[] = {
		{"magic", 0, 4, 0x12345678, true},
		{"version", 4, 2, MV_MIGRATE_VERSION + 1, true},
		{"version 1 (RAM data interleaved)", 4, 2, 1, true},
		{"type unknown", 6, 2, 99, true},
		{"type dest-only", 6, 2, MIG_ACK, true},
		{"flags", 8, 4, 1, true},
		{"length over max", 12, 4, MV_MIGRATE_MAX_PAYLOAD + 1, true},
		{"length past end", 12, 4, 1 << 20, true},
		{"sequence", 16, 4, 5, true},
		{"payload crc", 20, 4, 1, true},
		{"header crc", 8, 4, 0, false},
	};
	for (size_t i = 0; i < MV_ARRAY_SIZE(hm); i++) {
		build(s);
		serialize(s, false);
		uint8_t *h = s->out + 28 + s->f[0].len;
		if (hm[i].width == 2)
			mig_put16(h + hm[i].off, (uint16_t)hm[i].v);
		else
			mig_put32(h + hm[i].off, hm[i].v);
		if (hm[i].off == 8 && !hm[i].fix)
			h[24] ^= 1;
		else
			mig_put32(h + 24, mv_crc32c(0, h, 24));
		if (check(s, hm[i].name) == 0)
			fail_msg("header mutation '%s' was accepted", hm[i].name);
	}
	free(s);
}

static void test_order_and_framing(void **state)
{
	struct stream *s = malloc(sizeof(*s));
	/* Truncated anywhere: refused. */
	build(s);
	serialize(s, false);
	size_t full = s->out_len;
	for (size_t cut = 0; cut < full; cut += 97) {
		s->out_len = cut;
		assert_true(mv_migrate_stream_check(s->out, s->out_len, NULL) < 0);
	}
	/* Trailing bytes after COMPLETE. */
	s->out_len = full + 1;
	assert_true(check(s, "trailing byte") < 0);
	/* Swapped sections. */
	build(s);
	struct frame tmp = s->f[3];
	s->f[3] = s->f[4];
	s->f[4] = tmp;
	serialize(s, false);
	assert_true(check(s, "device before vcpu") < 0);
	/* zstd page in a stream without the feature. */
	build(s);
	mig_put32(s->f[0].p + 4, 0);
	serialize(s, false);
	assert_true(check(s, "zstd not negotiated") < 0);
	/* DISCARD/POSTCOPY without the post-copy feature. */
	build(s);
	s->f[5].type = MIG_POSTCOPY;
	s->f[5].len = 0;
	s->f[6].type = MIG_COMPLETE;
	s->n = 7;
	serialize(s, false);
	assert_true(check(s, "postcopy not negotiated") < 0);
	/* ... and accepted with it. */
	mig_put32(s->f[0].p + 4, MV_MIGRATE_F_ZSTD | MV_MIGRATE_F_POSTCOPY);
	serialize(s, false);
	assert_int_equal(check(s, "postcopy"), 0);
	/* SYNC between RAM frames is fine, after DEVICE it is not. */
	build(s);
	memmove(&s->f[4], &s->f[3], 3 * sizeof(s->f[0]));
	s->f[3].type = MIG_SYNC;
	s->f[3].len = mig_sync_put(s->f[3].p, 1);
	s->n = 7;
	serialize(s, false);
	assert_int_equal(check(s, "sync in pre-copy"), 0);
	mig_put32(s->f[3].p + 4, 1);
	serialize(s, false);
	assert_true(check(s, "sync padding") < 0);
	build(s);
	s->f[6] = s->f[5];
	s->f[5].type = MIG_SYNC;
	s->f[5].len = mig_sync_put(s->f[5].p, 1);
	s->n = 7;
	serialize(s, false);
	assert_true(check(s, "sync after device") < 0);
	/* NACK from the source aborts; a positive code is malformed. */
	build(s);
	s->f[2].type = MIG_NACK;
	s->f[2].len = mig_nack_put(s->f[2].p, -EIO, "bye");
	serialize(s, false);
	assert_int_equal(check(s, "source NACK"), -EIO);
	mig_put32(s->f[2].p, 5);
	serialize(s, false);
	assert_int_equal(check(s, "NACK positive code"), -EPROTO);
	free(s);
}

static void test_small_codecs(void **state)
{
	struct mv_migrate_config cfg;
	cfg_default(&cfg);
	uint8_t buf[256];
	uint64_t g[2] = {0, 4096};
	uint32_t n;
	size_t len = mig_gpas_put(buf, g, 2);
	assert_int_equal(mig_gpas_get(buf, len, &cfg, 64, &n, NULL), 0);
	assert_int_equal(n, 2);
	assert_true(mig_gpas_get(buf, len, &cfg, 1, &n, NULL) < 0);       /* over max */
	assert_true(mig_gpas_get(buf, len - 1, &cfg, 64, &n, NULL) < 0);  /* length */
	g[1] = 16 << 20;
	len = mig_gpas_put(buf, g, 2);
	assert_true(mig_gpas_get(buf, len, &cfg, 64, &n, NULL) < 0);      /* outside */
	char msg[64];
	int code;
	len = mig_nack_put(buf, -ENOSPC, "full");
	assert_int_equal(mig_nack_get(buf, len, &code, msg, sizeof(msg), NULL), 0);
	assert_int_equal(code, -ENOSPC);
	assert_string_equal(msg, "full");
	assert_true(mig_empty_get(MIG_READY, (const uint8_t *)"\0\0\0\0\0\0\0\1", 8, NULL) < 0);
	assert_int_equal(mig_empty_get(MIG_ACK, buf, 0, NULL), 0);
	assert_true(mig_empty_get(MIG_ACK, buf, 1, NULL) < 0);
	assert_string_equal(mv_migrate_phase_name(MV_MIGRATE_POSTCOPY), "postcopy");
}

const struct CMUnitTest mig_stream_tests[] = {
	cmocka_unit_test(test_valid),
	cmocka_unit_test(test_payload_mutations),
	cmocka_unit_test(test_header_mutations),
	cmocka_unit_test(test_order_and_framing),
	cmocka_unit_test(test_small_codecs),
};
const size_t mig_stream_ntests = MV_ARRAY_SIZE(mig_stream_tests);
