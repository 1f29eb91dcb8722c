/* mv_migrate_stream_check: validates a recorded source->destination stream
 * held in memory, frame by frame, with the same codec and order rules as
 * the destination but without applying anything. Used by the unit tests
 * and the fuzz target (tests/fuzz/migrate_stream.c). */
#include <errno.h>
#include <stdlib.h>
#include <zstd.h>
#include "memvisor/util.h"
#include "migrate_i.h"

struct checker {
	struct mig_order order;
	struct mv_migrate_config cfg;
	struct mig_page pages[MV_MIGRATE_MAX_BATCH];
	struct mig_device dev[MV_MIGRATE_MAX_DEVICES];
	struct mv_wl_state st[MV_MAX_VCPUS];
	uint8_t page[MV_MIGRATE_PAGE_SIZE];
	ZSTD_DCtx *zd;
};

static int check_frame(struct checker *k, const struct mig_hdr *h, const uint8_t *p,
		       struct mv_error **err)
{
	if (h->type == MIG_NACK) {
		int code;
		char msg[MIG_NACK_MAX_MSG + 1];
		int r = mig_nack_get(p, h->len, &code, msg, sizeof(msg), err);
		return r < 0 ? r : mv_err(err, code, "source aborted: %s", msg);
	}
	int r = mig_order_next(&k->order, h->type, h->len, err);
	if (r < 0)
		return r;
	uint32_t n;
	switch (h->type) {
	case MIG_HEADER: {
		struct mig_header hd;
		r = mig_header_get(p, h->len, &hd, err);
		k->order.features = hd.features;
		return r;
	}
	case MIG_CONFIG:
		return mig_config_get(p, h->len, &k->cfg, err);
	case MIG_RAM:
		r = mig_ram_get(p, h->len, &k->cfg, k->pages, &n, err);
		for (uint32_t i = 0; i < n && r == 0; i++) {
			if (k->pages[i].enc != MIG_ENC_ZSTD)
				continue;
			if (!(k->order.features & MV_MIGRATE_F_ZSTD))
				return mv_err(err, -EPROTO, "zstd page in a stream without zstd");
			r = mig_page_inflate(&k->pages[i], k->zd, k->page, err);
		}
		if (r == 0)
			k->order.seen.pages += n;
		return r;
	case MIG_VCPU:
		return mig_vcpu_get(p, h->len, &k->cfg, k->st, err);
	case MIG_DEVICE:
		return mig_device_get(p, h->len, k->dev, &n, err);
	case MIG_DISCARD:
		return mig_gpas_get(p, h->len, &k->cfg, MIG_MAX_GPAS, &n, err);
	case MIG_POSTCOPY:
		return mig_empty_get(h->type, p, h->len, err);
	case MIG_SYNC:
		return mig_sync_get(p, h->len, &n, err);
	case MIG_COMPLETE: {
		struct mig_complete c;
		r = mig_complete_get(p, h->len, &c, err);
		return r < 0 ? r : mig_order_check_totals(&k->order, &c, err);
	}
	default:
		return mv_err(err, -EPROTO, "%s frame in the source's stream", mig_type_name(h->type));
	}
}

int mv_migrate_stream_check(const uint8_t *buf, size_t len, struct mv_error **err)
{
	struct checker *k = calloc(1, sizeof(*k));
	if (!k)
		abort();
	k->zd = ZSTD_createDCtx();
	if (!k->zd)
		abort();
	size_t off = 0;
	uint32_t seq = 0;
	int r = 0;
	while (r == 0 && k->order.stage != MIG_ST_DONE) {
		struct mig_hdr h;
		if (len - off < MV_MIGRATE_HDR_SIZE) {
			r = mv_err(err, -EPROTO, "stream ends at byte %zu without COMPLETE", off);
			break;
		}
		r = mig_hdr_get(buf + off, &h, err);
		if (r < 0)
			break;
		off += MV_MIGRATE_HDR_SIZE;
		if (h.seq != seq++) {
			r = mv_err(err, -EPROTO, "frame sequence %u, expected %u", h.seq, seq - 1);
			break;
		}
		if (len - off < h.len) {
			r = mv_err(err, -EPROTO, "%s frame truncated", mig_type_name(h.type));
			break;
		}
		r = mig_payload_check(&h, buf + off, err);
		if (r == 0)
			r = check_frame(k, &h, buf + off, err);
		off += h.len;
	}
	if (r == 0 && off != len)
		r = mv_err(err, -EPROTO, "%zu bytes after COMPLETE", len - off);
	ZSTD_freeDCtx(k->zd);
	free(k);
	return r;
}
