/* The migration stream codec: frame headers and every section's encoder and
 * validating decoder, over byte buffers, plus the section order a receiver
 * accepts. Used by send.c, recv.c and check.c (and so the fuzz target); the
 * format is written down in docs/formats/migration.md. Every decoder checks
 * every field: lengths against the payload, enums, reserved zeros, and
 * guest addresses against the VM's regions. */
#include <errno.h>
#include <string.h>
#include <zstd.h>
#include "memvisor/ctl.h"
#include "memvisor/util.h"
#include "stream_i.h"

static const char *const type_names[] = {
	[MIG_HEADER] = "HEADER", [MIG_CONFIG] = "CONFIG", [MIG_RAM] = "RAM",
	[MIG_VCPU] = "VCPU", [MIG_DEVICE] = "DEVICE", [MIG_DISCARD] = "DISCARD",
	[MIG_POSTCOPY] = "POSTCOPY", [MIG_COMPLETE] = "COMPLETE", [MIG_READY] = "READY",
	[MIG_PAGE_REQ] = "PAGE_REQ", [MIG_RUNNING] = "RUNNING", [MIG_ACK] = "ACK",
	[MIG_NACK] = "NACK", [MIG_SYNC] = "SYNC", [MIG_SYNCED] = "SYNCED",
};

const char *mig_type_name(uint16_t type)
{
	if (type < MV_ARRAY_SIZE(type_names) && type_names[type])
		return type_names[type];
	return "?";
}

bool mig_type_from_source(uint16_t type)
{
	return type >= MIG_HEADER && type <= MIG_SYNC;
}

static bool type_known(uint16_t type)
{
	return mig_type_from_source(type) || (type >= MIG_READY && type <= MIG_SYNCED);
}

void mig_hdr_put(uint8_t *o, uint16_t type, uint32_t len, uint32_t seq, uint32_t payload_crc)
{
	mig_put32(o, MV_MIGRATE_MAGIC);
	mig_put16(o + 4, MV_MIGRATE_VERSION);
	mig_put16(o + 6, type);
	mig_put32(o + 8, 0);
	mig_put32(o + 12, len);
	mig_put32(o + 16, seq);
	mig_put32(o + 20, payload_crc);
	mig_put32(o + 24, mv_crc32c(0, o, 24));
}

int mig_hdr_get(const uint8_t *in, struct mig_hdr *h, struct mv_error **err)
{
	if (mig_get32(in) != MV_MIGRATE_MAGIC)
		return mv_err(err, -EPROTO, "bad frame magic 0x%08x (not a migration stream)",
			      mig_get32(in));
	if (mig_get32(in + 24) != mv_crc32c(0, in, 24))
		return mv_err(err, -EBADMSG, "frame header checksum mismatch");
	uint16_t ver = mig_get16(in + 4);
	if (ver != MV_MIGRATE_VERSION)
		return mv_err(err, -EPROTONOSUPPORT, "stream version %u, this host speaks %u",
			      ver, MV_MIGRATE_VERSION);
	h->type = mig_get16(in + 6);
	h->flags = mig_get32(in + 8);
	h->len = mig_get32(in + 12);
	h->seq = mig_get32(in + 16);
	h->payload_crc = mig_get32(in + 20);
	if (!type_known(h->type))
		return mv_err(err, -EPROTO, "unknown frame type %u", h->type);
	if (h->flags != 0)
		return mv_err(err, -EPROTO, "%s frame has unknown flags 0x%x",
			      mig_type_name(h->type), h->flags);
	if (h->len > MV_MIGRATE_MAX_PAYLOAD)
		return mv_err(err, -EMSGSIZE, "%s frame payload of %u bytes is over the %u limit",
			      mig_type_name(h->type), h->len, MV_MIGRATE_MAX_PAYLOAD);
	return 0;
}

int mig_payload_check(const struct mig_hdr *h, const uint8_t *payload, struct mv_error **err)
{
	if (mv_crc32c(0, payload, h->len) != h->payload_crc)
		return mv_err(err, -EBADMSG, "%s frame (seq %u) payload checksum mismatch",
			      mig_type_name(h->type), h->seq);
	return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

static int want_len(const char *what, size_t len, size_t want, struct mv_error **err)
{
	if (len != want)
		return mv_err(err, -EPROTO, "%s payload is %zu bytes, expected %zu", what, len, want);
	return 0;
}

size_t mig_header_put(uint8_t *o, const struct mig_header *h)
{
	mig_put32(o, h->page_size);
	mig_put32(o + 4, h->features);
	mig_put32(o + 8, h->downtime_ms);
	mig_put32(o + 12, h->postcopy_after);
	return MIG_HEADER_LEN;
}

int mig_header_get(const uint8_t *p, size_t len, struct mig_header *h, struct mv_error **err)
{
	int r = want_len("HEADER", len, MIG_HEADER_LEN, err);
	if (r < 0)
		return r;
	h->page_size = mig_get32(p);
	h->features = mig_get32(p + 4);
	h->downtime_ms = mig_get32(p + 8);
	h->postcopy_after = mig_get32(p + 12);
	if (h->page_size != MV_MIGRATE_PAGE_SIZE)
		return mv_err(err, -EPROTO, "page size %u, expected %u", h->page_size,
			      MV_MIGRATE_PAGE_SIZE);
	if (h->features & ~MV_MIGRATE_F_ALL)
		return mv_err(err, -EPROTONOSUPPORT, "unsupported stream features 0x%x",
			      h->features & ~MV_MIGRATE_F_ALL);
	if (h->downtime_ms == 0 || h->downtime_ms > 3600000)
		return mv_err(err, -EPROTO, "downtime target %u ms out of range", h->downtime_ms);
	if (h->postcopy_after > 1000)
		return mv_err(err, -EPROTO, "postcopy_after %u out of range", h->postcopy_after);
	return 0;
}

static bool tenant_empty(const struct mv_migrate_tenant *t)
{
	return !t->flags && !t->nsensitive && !t->nkeep;
}

static size_t tenant_len(uint32_t nsensitive, uint32_t nkeep)
{
	return MIG_TENANT_HDR + ((size_t)nsensitive + nkeep) * MIG_SPAN_LEN;
}

size_t mig_config_len(const struct mv_migrate_config *cfg)
{
	const struct mv_migrate_tenant *t = &cfg->tenant;
	return MIG_CONFIG_LEN + (tenant_empty(t) ? 0 : tenant_len(t->nsensitive, t->nkeep));
}

size_t mig_config_put(uint8_t *o, const struct mv_migrate_config *cfg)
{
	memset(o, 0, MIG_CONFIG_LEN);
	size_t nl = strnlen(cfg->vm_name, sizeof(cfg->vm_name) - 1);
	memcpy(o, cfg->vm_name, nl);
	mig_put32(o + 64, cfg->nregions);
	mig_put32(o + 68, cfg->nvcpus);
	uint8_t *r = o + 72;
	for (uint32_t i = 0; i < cfg->nregions && i < MV_MEM_MAX_REGIONS; i++, r += 24) {
		mig_put64(r, cfg->regions[i].gpa);
		mig_put64(r + 8, cfg->regions[i].size);
		mig_put32(r + 16, cfg->regions[i].flags);
	}
	uint8_t *w = o + 72 + MV_MEM_MAX_REGIONS * 24;
	mig_put32(w, cfg->wl.kind);
	mig_put32(w + 4, cfg->wl.pattern);
	mig_put64(w + 8, cfg->wl.seed);
	mig_put64(w + 16, cfg->wl.wss_bytes);
	mig_put64(w + 24, cfg->wl.rate);
	mig_put32(w + 32, cfg->wl.put_pct);
	mig_put32(w + 36, cfg->wl.hot_pct);
	/* The tenant block; counts are within bounds (mig_config_validate). */
	const struct mv_migrate_tenant *t = &cfg->tenant;
	if (tenant_empty(t))
		return MIG_CONFIG_LEN;
	uint8_t *b = o + MIG_CONFIG_LEN;
	mig_put32(b, t->flags);
	mig_put32(b + 4, t->nsensitive);
	mig_put32(b + 8, t->nkeep);
	mig_put32(b + 12, 0);
	b += MIG_TENANT_HDR;
	for (uint32_t i = 0; i < t->nsensitive + t->nkeep; i++, b += MIG_SPAN_LEN) {
		const struct mv_migrate_span *sp =
			i < t->nsensitive ? &t->sensitive[i] : &t->keep[i - t->nsensitive];
		mig_put64(b, sp->gpa);
		mig_put64(b + 8, sp->len);
	}
	return (size_t)(b - o);
}

int mig_config_validate(const struct mv_migrate_config *cfg, struct mv_error **err)
{
	if (cfg->tenant.nsensitive > MV_MIGRATE_MAX_SENSITIVE || cfg->tenant.nkeep > MV_MIGRATE_MAX_KEEP)
		return mv_err_field(err, -E2BIG, "tenant", "%u sensitive ranges, %u kept spans "
				    "(at most %u, %u travel)", cfg->tenant.nsensitive, cfg->tenant.nkeep,
				    MV_MIGRATE_MAX_SENSITIVE, MV_MIGRATE_MAX_KEEP);
	if (cfg->nregions == 0 || cfg->nregions > MV_MEM_MAX_REGIONS)
		return mv_err_field(err, -EPROTO, "regions", "%u RAM regions (1..%u)",
				    cfg->nregions, MV_MEM_MAX_REGIONS);
	uint64_t total = 0, end = 0;
	for (uint32_t i = 0; i < cfg->nregions; i++) {
		const struct mv_migrate_region *r = &cfg->regions[i];
		uint64_t align = (r->flags & MV_MEM_HUGETLB) ? (2ULL << 20) : MV_MIGRATE_PAGE_SIZE;
		if (r->flags & ~(uint32_t)MV_MEM_HUGETLB)
			return mv_err_field(err, -EPROTO, "regions", "region %u: unknown flags 0x%x",
					    i, r->flags);
		if (r->size == 0 || !MV_IS_ALIGNED(r->gpa, align) || !MV_IS_ALIGNED(r->size, align))
			return mv_err_field(err, -EPROTO, "regions",
					    "region %u: gpa 0x%llx size 0x%llx not %llu-aligned or empty",
					    i, (unsigned long long)r->gpa, (unsigned long long)r->size,
					    (unsigned long long)align);
		if (r->size > MV_MEM_MAX_RAM || r->gpa > UINT64_MAX - r->size ||
		    (i > 0 && r->gpa < end))
			return mv_err_field(err, -EPROTO, "regions",
					    "region %u: unsorted, overlapping or wrapping", i);
		end = r->gpa + r->size;
		total += r->size;
		if (total > MV_MEM_MAX_RAM)
			return mv_err_field(err, -EPROTO, "regions", "guest RAM over %llu bytes",
					    (unsigned long long)MV_MEM_MAX_RAM);
	}
	return 0;
}

/* Region of cfg holding [gpa, gpa+len), or -1. */
static int region_of(const struct mv_migrate_config *cfg, uint64_t gpa, uint64_t len)
{
	for (uint32_t i = 0; i < cfg->nregions; i++) {
		const struct mv_migrate_region *r = &cfg->regions[i];
		if (gpa >= r->gpa && gpa - r->gpa < r->size && len <= r->size - (gpa - r->gpa))
			return (int)i;
	}
	return -1;
}

/* A span of the tenant block: page aligned, non-empty, inside one region. */
static int span_get(const uint8_t *b, const struct mv_migrate_config *cfg, const char *field,
		    uint32_t i, struct mv_migrate_span *out, struct mv_error **err)
{
	out->gpa = mig_get64(b);
	out->len = mig_get64(b + 8);
	if (!out->len || !MV_IS_ALIGNED(out->gpa, MV_MIGRATE_PAGE_SIZE) ||
	    !MV_IS_ALIGNED(out->len, MV_MIGRATE_PAGE_SIZE) || region_of(cfg, out->gpa, out->len) < 0)
		return mv_err_field(err, -EPROTO, field, "%s %u: 0x%llx+0x%llx is not a page-aligned "
				    "span inside one RAM region", field, i, (unsigned long long)out->gpa,
				    (unsigned long long)out->len);
	return 0;
}

/* CONFIG's tenant block: flags u32, nsensitive u32, nkeep u32, pad u32, then
 * that many spans (gpa u64, len u64), sensitive ones first. */
static int tenant_get(const uint8_t *b, size_t len, struct mv_migrate_config *cfg,
		      struct mv_error **err)
{
	struct mv_migrate_tenant *t = &cfg->tenant;
	t->flags = mig_get32(b);
	t->nsensitive = mig_get32(b + 4);
	t->nkeep = mig_get32(b + 8);
	if (t->flags & ~MV_MIGRATE_TENANT_FUSION)
		return mv_err_field(err, -EPROTO, "tenant.flags", "unknown tenant flags 0x%x", t->flags);
	if (mig_get32(b + 12))
		return mv_err_field(err, -EPROTO, "tenant.pad", "tenant block padding not zero");
	if (t->nsensitive > MV_MIGRATE_MAX_SENSITIVE || t->nkeep > MV_MIGRATE_MAX_KEEP)
		return mv_err_field(err, -EPROTO, "tenant", "%u sensitive ranges, %u kept spans "
				    "(at most %u, %u)", t->nsensitive, t->nkeep,
				    MV_MIGRATE_MAX_SENSITIVE, MV_MIGRATE_MAX_KEEP);
	if (len != tenant_len(t->nsensitive, t->nkeep))
		return mv_err_field(err, -EPROTO, "tenant", "tenant block of %zu bytes for %u + %u spans",
				    len, t->nsensitive, t->nkeep);
	b += MIG_TENANT_HDR;
	for (uint32_t i = 0; i < t->nsensitive; i++, b += MIG_SPAN_LEN) {
		int r = span_get(b, cfg, "tenant.sensitive", i, &t->sensitive[i], err);
		for (uint32_t j = 0; r == 0 && j < i; j++)
			if (t->sensitive[i].gpa < t->sensitive[j].gpa + t->sensitive[j].len &&
			    t->sensitive[j].gpa < t->sensitive[i].gpa + t->sensitive[i].len)
				r = mv_err_field(err, -EPROTO, "tenant.sensitive",
						 "sensitive ranges %u and %u overlap", j, i);
		if (r < 0)
			return r;
	}
	for (uint32_t i = 0; i < t->nkeep; i++, b += MIG_SPAN_LEN) {
		int r = span_get(b, cfg, "tenant.keep", i, &t->keep[i], err);
		if (r < 0)
			return r;
	}
	return 0;
}

int mig_config_get(const uint8_t *p, size_t len, struct mv_migrate_config *cfg,
		   struct mv_error **err)
{
	if (len != MIG_CONFIG_LEN && len < MIG_CONFIG_LEN + MIG_TENANT_HDR)
		return mv_err(err, -EPROTO, "CONFIG payload of %zu bytes (want %u, or more with a "
			      "tenant block)", len, MIG_CONFIG_LEN);
	memset(cfg, 0, sizeof(*cfg));
	size_t nl = strnlen((const char *)p, 64);
	if (nl == 64 || !all_zero(p + nl, 64 - nl))
		return mv_err_field(err, -EPROTO, "vm_name", "VM name not NUL-padded");
	for (size_t i = 0; i < nl; i++)
		if (p[i] < 0x20 || p[i] > 0x7e)
			return mv_err_field(err, -EPROTO, "vm_name", "VM name has a non-printable byte");
	memcpy(cfg->vm_name, p, nl);
	cfg->nregions = mig_get32(p + 64);
	cfg->nvcpus = mig_get32(p + 68);
	if (cfg->nregions == 0 || cfg->nregions > MV_MEM_MAX_REGIONS)
		return mv_err_field(err, -EPROTO, "regions", "%u RAM regions (1..%u)",
				    cfg->nregions, MV_MEM_MAX_REGIONS);
	const uint8_t *rp = p + 72;
	for (uint32_t i = 0; i < MV_MEM_MAX_REGIONS; i++, rp += 24) {
		if (i >= cfg->nregions) {
			if (!all_zero(rp, 24))
				return mv_err_field(err, -EPROTO, "regions", "unused region %u not zero", i);
			continue;
		}
		cfg->regions[i].gpa = mig_get64(rp);
		cfg->regions[i].size = mig_get64(rp + 8);
		cfg->regions[i].flags = mig_get32(rp + 16);
		if (mig_get32(rp + 20) != 0)
			return mv_err_field(err, -EPROTO, "regions", "region %u padding not zero", i);
	}
	int r = mig_config_validate(cfg, err);
	if (r < 0)
		return r;
	const uint8_t *w = p + 72 + MV_MEM_MAX_REGIONS * 24;
	cfg->wl.kind = mig_get32(w);
	cfg->wl.pattern = mig_get32(w + 4);
	cfg->wl.seed = mig_get64(w + 8);
	cfg->wl.wss_bytes = mig_get64(w + 16);
	cfg->wl.rate = mig_get64(w + 24);
	cfg->wl.put_pct = mig_get32(w + 32);
	cfg->wl.hot_pct = mig_get32(w + 36);
	r = mv_wl_params_validate(&cfg->wl, mv_migrate_config_ram_size(cfg), cfg->nvcpus, err);
	if (r < 0)
		return r == -EINVAL ? -EPROTO : r;
	return len == MIG_CONFIG_LEN ? 0 : tenant_get(p + MIG_CONFIG_LEN, len - MIG_CONFIG_LEN, cfg, err);
}

static int check_gpa(const struct mv_migrate_config *cfg, const char *what, uint64_t gpa,
		     struct mv_error **err)
{
	if (!MV_IS_ALIGNED(gpa, MV_MIGRATE_PAGE_SIZE))
		return mv_err(err, -EPROTO, "%s: gpa 0x%llx not page aligned", what,
			      (unsigned long long)gpa);
	if (region_of(cfg, gpa, MV_MIGRATE_PAGE_SIZE) < 0)
		return mv_err(err, -EPROTO, "%s: gpa 0x%llx outside guest RAM", what,
			      (unsigned long long)gpa);
	return 0;
}

/* The table has room for a full batch; data starts after it and moves
 * down behind the used entries at finish (not at all for a full batch). */
#define RAM_DATA_OFF (8u + MV_MIGRATE_MAX_BATCH * MIG_PAGE_ENTRY_LEN)

void mig_ram_reset(struct mig_ram_enc *e)
{
	e->len = 8;
	e->count = 0;
	e->data_len = 0;
}

uint8_t *mig_ram_add(struct mig_ram_enc *e, uint64_t gpa, uint8_t enc, uint32_t len)
{
	mig_ram_entry_put(e->buf + 8 + (size_t)e->count * MIG_PAGE_ENTRY_LEN, gpa, enc, len);
	uint8_t *data = e->buf + RAM_DATA_OFF + e->data_len;
	e->count++;
	e->data_len += len;
	e->len = 8 + (size_t)e->count * MIG_PAGE_ENTRY_LEN + e->data_len;
	return data;
}

size_t mig_ram_finish(struct mig_ram_enc *e)
{
	mig_put32(e->buf, e->count);
	mig_put32(e->buf + 4, 0);
	size_t table = 8 + (size_t)e->count * MIG_PAGE_ENTRY_LEN;
	if (table != RAM_DATA_OFF && e->data_len)
		memmove(e->buf + table, e->buf + RAM_DATA_OFF, e->data_len);
	return e->len;
}

void mig_ram_entry_put(uint8_t *h, uint64_t gpa, uint8_t enc, uint32_t len)
{
	mig_put64(h, gpa);
	h[8] = enc;
	h[9] = h[10] = h[11] = 0;
	mig_put32(h + 12, len);
}

int mig_ram_count_get(const uint8_t *p, uint32_t *count, struct mv_error **err)
{
	uint32_t n = mig_get32(p);
	if (n == 0 || n > MV_MIGRATE_MAX_BATCH)
		return mv_err(err, -EPROTO, "RAM frame with %u pages (1..%u)", n, MV_MIGRATE_MAX_BATCH);
	if (mig_get32(p + 4) != 0)
		return mv_err(err, -EPROTO, "RAM frame padding not zero");
	*count = n;
	return 0;
}

int mig_ram_table_get(const uint8_t *t, uint32_t n, const struct mv_migrate_config *cfg,
		      struct mig_page *pages, uint64_t *data_len, struct mv_error **err)
{
	uint64_t total = 0;
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *h = t + (size_t)i * MIG_PAGE_ENTRY_LEN;
		struct mig_page *pg = &pages[i];
		pg->gpa = mig_get64(h);
		pg->enc = h[8];
		pg->len = mig_get32(h + 12);
		pg->data = NULL;
		int r = check_gpa(cfg, "RAM entry", pg->gpa, err);
		if (r < 0)
			return r;
		if (h[9] || h[10] || h[11])
			return mv_err(err, -EPROTO, "RAM entry %u padding not zero", i);
		if (pg->enc >= MIG_ENC__COUNT)
			return mv_err(err, -EPROTO, "RAM entry %u: unknown encoding %u", i, pg->enc);
		bool ok = (pg->enc == MIG_ENC_ZERO && pg->len == 0) ||
			  (pg->enc == MIG_ENC_RAW && pg->len == MV_MIGRATE_PAGE_SIZE) ||
			  (pg->enc == MIG_ENC_ZSTD && pg->len > 0 && pg->len < MV_MIGRATE_PAGE_SIZE);
		if (!ok)
			return mv_err(err, -EPROTO, "RAM entry %u: length %u wrong for encoding %u",
				      i, pg->len, pg->enc);
		total += pg->len;
	}
	*data_len = total;
	return 0;
}

int mig_ram_get(const uint8_t *p, size_t len, const struct mv_migrate_config *cfg,
		struct mig_page *pages, uint32_t *count, struct mv_error **err)
{
	if (len < 8)
		return mv_err(err, -EPROTO, "RAM payload of %zu bytes is too short", len);
	uint32_t n;
	int r = mig_ram_count_get(p, &n, err);
	if (r < 0)
		return r;
	size_t table = 8 + (size_t)n * MIG_PAGE_ENTRY_LEN;
	if (len < table)
		return mv_err(err, -EPROTO, "RAM frame of %u entries truncated in its table", n);
	uint64_t data_len;
	r = mig_ram_table_get(p + 8, n, cfg, pages, &data_len, err);
	if (r < 0)
		return r;
	if (data_len != len - table)
		return mv_err(err, -EPROTO, "RAM frame data is %zu bytes, its entries say %llu",
			      len - table, (unsigned long long)data_len);
	const uint8_t *d = p + table;
	for (uint32_t i = 0; i < n; i++) {
		pages[i].data = d;
		d += pages[i].len;
	}
	*count = n;
	return 0;
}

int mig_page_inflate(const struct mig_page *pg, void *dctx, uint8_t *out, struct mv_error **err)
{
	size_t r = ZSTD_decompressDCtx(dctx, out, MV_MIGRATE_PAGE_SIZE, pg->data, pg->len);
	if (ZSTD_isError(r))
		return mv_err(err, -EPROTO, "page 0x%llx: zstd: %s", (unsigned long long)pg->gpa,
			      ZSTD_getErrorName(r));
	if (r != MV_MIGRATE_PAGE_SIZE)
		return mv_err(err, -EPROTO, "page 0x%llx: zstd gave %zu bytes, not a page",
			      (unsigned long long)pg->gpa, r);
	return 0;
}

size_t mig_vcpu_len(uint32_t n)
{
	return 8 + (size_t)n * MIG_WL_STATE_LEN;
}

size_t mig_vcpu_put(uint8_t *o, const struct mv_wl_state *st, uint32_t n)
{
	mig_put32(o, n);
	mig_put32(o + 4, MIG_WL_STATE_LEN);
	uint8_t *s = o + 8;
	for (uint32_t i = 0; i < n; i++, s += MIG_WL_STATE_LEN) {
		mig_put32(s, st[i].kind);
		mig_put32(s + 4, st[i].vcpu);
		mig_put32(s + 8, st[i].p.kind);
		mig_put32(s + 12, st[i].p.pattern);
		mig_put64(s + 16, st[i].p.seed);
		mig_put64(s + 24, st[i].p.wss_bytes);
		mig_put64(s + 32, st[i].p.rate);
		mig_put32(s + 40, st[i].p.put_pct);
		mig_put32(s + 44, st[i].p.hot_pct);
		mig_put64(s + 48, st[i].seed);
		mig_put64(s + 56, st[i].gpa_base);
		mig_put64(s + 64, st[i].gpa_len);
		mig_put64(s + 72, st[i].ops_done);
		for (int k = 0; k < 4; k++)
			mig_put64(s + 80 + 8 * k, st[i].aux[k]);
	}
	return mig_vcpu_len(n);
}

int mig_vcpu_get(const uint8_t *p, size_t len, const struct mv_migrate_config *cfg,
		 struct mv_wl_state *st, struct mv_error **err)
{
	if (len < 8)
		return mv_err(err, -EPROTO, "VCPU payload too short");
	uint32_t n = mig_get32(p);
	if (n != cfg->nvcpus)
		return mv_err(err, -EPROTO, "VCPU section has %u states, the VM has %u vCPUs",
			      n, cfg->nvcpus);
	if (mig_get32(p + 4) != MIG_WL_STATE_LEN)
		return mv_err(err, -EPROTO, "VCPU state size %u, expected %u", mig_get32(p + 4),
			      MIG_WL_STATE_LEN);
	int r = want_len("VCPU", len, mig_vcpu_len(n), err);
	if (r < 0)
		return r;
	const uint8_t *s = p + 8;
	for (uint32_t i = 0; i < n; i++, s += MIG_WL_STATE_LEN) {
		struct mv_wl_state *w = &st[i];
		memset(w, 0, sizeof(*w));
		w->kind = mig_get32(s);
		w->vcpu = mig_get32(s + 4);
		w->p.kind = mig_get32(s + 8);
		w->p.pattern = mig_get32(s + 12);
		w->p.seed = mig_get64(s + 16);
		w->p.wss_bytes = mig_get64(s + 24);
		w->p.rate = mig_get64(s + 32);
		w->p.put_pct = mig_get32(s + 40);
		w->p.hot_pct = mig_get32(s + 44);
		w->seed = mig_get64(s + 48);
		w->gpa_base = mig_get64(s + 56);
		w->gpa_len = mig_get64(s + 64);
		w->ops_done = mig_get64(s + 72);
		for (int k = 0; k < 4; k++)
			w->aux[k] = mig_get64(s + 80 + 8 * k);
		if (w->vcpu != i || w->kind != cfg->wl.kind || w->p.kind != w->kind)
			return mv_err(err, -EPROTO, "vCPU %u state: index %u or kind %u/%u wrong",
				      i, w->vcpu, w->kind, w->p.kind);
		if (w->p.pattern >= MV_PAT__COUNT || w->p.put_pct > 100 || w->p.hot_pct > 100)
			return mv_err(err, -EPROTO, "vCPU %u state: workload parameter out of range", i);
		if (w->gpa_len > w->p.wss_bytes && w->kind != MV_WL_IDLE)
			return mv_err(err, -EPROTO, "vCPU %u state: slice longer than its working set", i);
		if (w->gpa_len != 0 && (!MV_IS_ALIGNED(w->gpa_base | w->gpa_len, MV_MIGRATE_PAGE_SIZE) ||
					region_of(cfg, w->gpa_base, w->gpa_len) < 0))
			return mv_err(err, -EPROTO, "vCPU %u state: slice 0x%llx+0x%llx outside guest RAM",
				      i, (unsigned long long)w->gpa_base, (unsigned long long)w->gpa_len);
		if (w->kind != MV_WL_IDLE && w->gpa_len == 0)
			return mv_err(err, -EPROTO, "vCPU %u state: empty slice", i);
	}
	return 0;
}

size_t mig_device_put(uint8_t *o, const struct mig_device *d, uint32_t n)
{
	mig_put32(o, n);
	mig_put32(o + 4, 0);
	size_t off = 8;
	for (uint32_t i = 0; i < n; i++) {
		mig_put32(o + off, d[i].id);
		mig_put32(o + off + 4, d[i].len);
		memcpy(o + off + 8, d[i].data, d[i].len);
		size_t padded = MV_ALIGN_UP(d[i].len, 8);
		memset(o + off + 8 + d[i].len, 0, padded - d[i].len);
		off += 8 + padded;
	}
	return off;
}

int mig_device_get(const uint8_t *p, size_t len, struct mig_device *d, uint32_t *n,
		   struct mv_error **err)
{
	if (len < 8)
		return mv_err(err, -EPROTO, "DEVICE payload too short");
	uint32_t cnt = mig_get32(p);
	if (cnt > MV_MIGRATE_MAX_DEVICES || mig_get32(p + 4) != 0)
		return mv_err(err, -EPROTO, "DEVICE section: %u devices (max %u) or bad padding",
			      cnt, MV_MIGRATE_MAX_DEVICES);
	size_t off = 8;
	for (uint32_t i = 0; i < cnt; i++) {
		if (len - off < 8)
			return mv_err(err, -EPROTO, "device %u header truncated", i);
		d[i].id = mig_get32(p + off);
		d[i].len = mig_get32(p + off + 4);
		for (uint32_t k = 0; k < i; k++)
			if (d[k].id == d[i].id)
				return mv_err(err, -EPROTO, "device id %u appears twice", d[i].id);
		size_t padded = MV_ALIGN_UP((uint64_t)d[i].len, 8);
		if (d[i].len > MIG_MAX_DEVICE_BLOB || len - off - 8 < padded)
			return mv_err(err, -EPROTO, "device %u blob of %u bytes truncated or too big",
				      d[i].id, d[i].len);
		d[i].data = p + off + 8;
		if (!all_zero(d[i].data + d[i].len, padded - d[i].len))
			return mv_err(err, -EPROTO, "device %u padding not zero", d[i].id);
		off += 8 + padded;
	}
	if (off != len)
		return mv_err(err, -EPROTO, "DEVICE section has %zu trailing bytes", len - off);
	*n = cnt;
	return 0;
}

size_t mig_gpas_put(uint8_t *o, const uint64_t *gpas, uint32_t n)
{
	mig_put32(o, n);
	mig_put32(o + 4, 0);
	for (uint32_t i = 0; i < n; i++)
		mig_put64(o + 8 + 8 * (size_t)i, gpas[i]);
	return 8 + 8 * (size_t)n;
}

int mig_gpas_get(const uint8_t *p, size_t len, const struct mv_migrate_config *cfg, uint32_t max,
		 uint32_t *n, struct mv_error **err)
{
	if (len < 8)
		return mv_err(err, -EPROTO, "page list too short");
	uint32_t cnt = mig_get32(p);
	if (cnt == 0 || cnt > max || mig_get32(p + 4) != 0)
		return mv_err(err, -EPROTO, "page list of %u entries (1..%u) or bad padding", cnt, max);
	int r = want_len("page list", len, 8 + 8 * (size_t)cnt, err);
	for (uint32_t i = 0; i < cnt && r == 0; i++)
		r = check_gpa(cfg, "page list", mig_gpas_at(p, i), err);
	if (r == 0)
		*n = cnt;
	return r;
}

size_t mig_complete_put(uint8_t *o, const struct mig_complete *c)
{
	mig_put64(o, c->pages);
	mig_put64(o + 8, c->bytes);
	mig_put32(o + 16, c->frames);
	mig_put32(o + 20, 0);
	return MIG_COMPLETE_LEN;
}

int mig_complete_get(const uint8_t *p, size_t len, struct mig_complete *c, struct mv_error **err)
{
	int r = want_len("COMPLETE", len, MIG_COMPLETE_LEN, err);
	if (r < 0)
		return r;
	c->pages = mig_get64(p);
	c->bytes = mig_get64(p + 8);
	c->frames = mig_get32(p + 16);
	c->pad = mig_get32(p + 20);
	if (c->pad != 0)
		return mv_err(err, -EPROTO, "COMPLETE padding not zero");
	return 0;
}

size_t mig_nack_put(uint8_t *o, int code, const char *msg)
{
	size_t n = msg ? strnlen(msg, MIG_NACK_MAX_MSG) : 0;
	mig_put32(o, (uint32_t)code);
	mig_put32(o + 4, (uint32_t)n);
	memcpy(o + 8, msg ? msg : "", n);
	return 8 + n;
}

int mig_nack_get(const uint8_t *p, size_t len, int *code, char *msg, size_t cap,
		 struct mv_error **err)
{
	if (len < 8)
		return mv_err(err, -EPROTO, "NACK payload too short");
	int32_t c = (int32_t)mig_get32(p);
	uint32_t n = mig_get32(p + 4);
	if (c >= 0 || c < -4095)
		return mv_err(err, -EPROTO, "NACK code %d is not a negative errno", c);
	if (n > MIG_NACK_MAX_MSG || len != 8 + (size_t)n)
		return mv_err(err, -EPROTO, "NACK message length %u does not match", n);
	for (uint32_t i = 0; i < n; i++)
		if (p[8 + i] < 0x20 && p[8 + i] != '\t')
			return mv_err(err, -EPROTO, "NACK message has a control byte");
	size_t k = n < cap - 1 ? n : cap - 1;
	memcpy(msg, p + 8, k);
	msg[k] = 0;
	*code = c;
	return 0;
}

size_t mig_sync_put(uint8_t *o, uint32_t pass)
{
	mig_put32(o, pass);
	mig_put32(o + 4, 0);
	return MIG_SYNC_LEN;
}

int mig_sync_get(const uint8_t *p, size_t len, uint32_t *pass, struct mv_error **err)
{
	int r = want_len("SYNC", len, MIG_SYNC_LEN, err);
	if (r < 0)
		return r;
	if (mig_get32(p + 4) != 0)
		return mv_err(err, -EPROTO, "SYNC padding not zero");
	*pass = mig_get32(p);
	return 0;
}

int mig_empty_get(uint16_t type, const uint8_t *p, size_t len, struct mv_error **err)
{
	size_t want = type == MIG_READY ? MIG_READY_LEN : 0;
	int r = want_len(mig_type_name(type), len, want, err);
	if (r == 0 && !all_zero(p, len))
		r = mv_err(err, -EPROTO, "%s reserved bytes not zero", mig_type_name(type));
	return r;
}

int mig_order_next(struct mig_order *o, uint16_t type, uint32_t payload_len, struct mv_error **err)
{
	enum mig_stage s = o->stage, next = s;
	bool ok = false;
	switch (type) {
	case MIG_HEADER: ok = s == MIG_ST_START; next = MIG_ST_CONFIG; break;
	case MIG_CONFIG: ok = s == MIG_ST_CONFIG; next = MIG_ST_RAM; break;
	case MIG_RAM: ok = s == MIG_ST_RAM || s == MIG_ST_POSTCOPY; break;
	case MIG_SYNC: ok = s == MIG_ST_RAM; break;
	case MIG_VCPU: ok = s == MIG_ST_RAM; next = MIG_ST_VCPU; break;
	case MIG_DEVICE: ok = s == MIG_ST_VCPU; next = MIG_ST_DEVICE; break;
	case MIG_DISCARD:
		ok = s == MIG_ST_DEVICE && (o->features & MV_MIGRATE_F_POSTCOPY);
		break;
	case MIG_POSTCOPY:
		ok = s == MIG_ST_DEVICE && (o->features & MV_MIGRATE_F_POSTCOPY);
		next = MIG_ST_POSTCOPY;
		break;
	case MIG_COMPLETE: ok = s == MIG_ST_DEVICE || s == MIG_ST_POSTCOPY; next = MIG_ST_DONE; break;
	default: break;
	}
	if (!ok)
		return mv_err(err, -EPROTO, "unexpected %s frame (type %u) at stream stage %d",
			      mig_type_name(type), type, (int)s);
	o->stage = next;
	if (type != MIG_COMPLETE) {
		o->seen.frames++;
		o->seen.bytes += MV_MIGRATE_HDR_SIZE + (uint64_t)payload_len;
	}
	return 0;
}

int mig_order_check_totals(const struct mig_order *o, const struct mig_complete *c,
			   struct mv_error **err)
{
	if (c->pages != o->seen.pages || c->bytes != o->seen.bytes || c->frames != o->seen.frames)
		return mv_err(err, -EPROTO,
			      "COMPLETE totals (%llu pages, %llu bytes, %u frames) differ from "
			      "received (%llu pages, %llu bytes, %u frames)",
			      (unsigned long long)c->pages, (unsigned long long)c->bytes, c->frames,
			      (unsigned long long)o->seen.pages, (unsigned long long)o->seen.bytes,
			      o->seen.frames);
	return 0;
}
