/* The destination side of a live migration (mv_migrate_recv): READY, then
 * every source frame validated in order and applied to guest RAM, the vCPU states,
 * the totals cross-check at COMPLETE, the vCPUs started from the received
 * states, ACK. Pre-copy pages land straight in huge-page guest RAM
 * (recv_ram.c) or are written by the applier thread (apply.c) for 4 KiB
 * RAM. Post-copy hands page placement to postcopy.c. On any error
 * nothing keeps running here and the source hears why (NACK). Used by
 * memvisor-vmm. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>
#include "memvisor/util.h"
#include "migrate_i.h"

struct dst {
	struct mig_conn c;
	struct mv_guest_mem *mem;
	const struct mv_migrate_config *cfg;
	struct mv_migrate_opts o;
	struct mv_error **err;
	struct mig_order order;
	struct mig_page pages[MV_MIGRATE_MAX_BATCH];
	uint8_t *scratch;          /* post-copy: decompressed pages of one frame */
	ZSTD_DCtx *zd;
	struct mv_wl_state st[MV_MAX_VCPUS];
	bool have_state;
	struct mig_postcopy *pc;   /* set once post-copy began */
	struct mv_vcpus *vcpus;
	int (*cb)(const struct mv_migrate_progress *p, void *ctx);
	void *ctx;
	struct mv_migrate_progress pr;
	uint64_t t_start, t_cb;
	struct mig_applier *ap;    /* writes pre-copy pages while we read on */
	bool direct;               /* pre-copy RAM frames go straight into guest RAM */
	uint64_t dropped_huge;     /* gpa of the huge page DISCARD dropped last; UINT64_MAX: none */
};

static int progress(struct dst *d, bool force)
{
	uint64_t now = mv_now_ns();
	if (!d->cb || (!force && now - d->t_cb < 100000000ULL))
		return 0;
	d->t_cb = now;
	d->pr.bytes_sent = d->c.rx_bytes;
	d->pr.total_us = (now - d->t_start) / 1000;
	if (d->pc)
		d->pr.pages_requested = mig_postcopy_faults(d->pc);
	if (d->cb(&d->pr, d->ctx) != 0 && !d->pc && !d->vcpus)
		return mv_err(d->err, -ECANCELED, "migration cancelled at the destination");
	return 0;
}

static void count_pages(struct dst *d, uint32_t n)
{
	d->order.seen.pages += n;
	d->pr.pages_sent += n;
	for (uint32_t i = 0; i < n; i++) {
		d->pr.pages_compressed += d->pages[i].enc == MIG_ENC_ZSTD;
		d->pr.pages_zero += d->pages[i].enc == MIG_ENC_ZERO;
	}
}

/* A RAM frame whose header is read: straight into guest RAM. */
static int on_ram_direct(struct dst *d)
{
	uint32_t n;
	int r = mig_order_next(&d->order, MIG_RAM, d->c.rx_hdr.len, d->err);
	if (r == 0)
		r = mig_ram_recv_direct(&d->c, d->mem, d->cfg, d->order.features, d->zd, d->pages, &n,
					d->o.timeout_ms, d->err);
	if (r == 0)
		count_pages(d, n);
	return r;
}

static int on_ram(struct dst *d)
{
	uint32_t n;
	int r = mig_ram_get(d->c.rx_buf, d->c.rx_hdr.len, d->cfg, d->pages, &n, d->err);
	if (r < 0)
		return r;
	for (uint32_t i = 0; i < n; i++)
		if (d->pages[i].enc == MIG_ENC_ZSTD && !(d->order.features & MV_MIGRATE_F_ZSTD))
			return mv_err(d->err, -EPROTO, "zstd page in a stream without zstd");
	count_pages(d, n);
	if (!d->pc)
		return mig_applier_submit(d->ap, &d->c.rx_buf, d->pages, n, d->err);
	for (uint32_t i = 0; i < n && r == 0; i++) {
		const struct mig_page *pg = &d->pages[i];
		const uint8_t *data = pg->enc == MIG_ENC_ZERO ? NULL : pg->data;
		if (pg->enc == MIG_ENC_ZSTD) {
			uint8_t *out = d->scratch + (size_t)i * MV_MIGRATE_PAGE_SIZE;
			r = mig_page_inflate(pg, d->zd, out, d->err);
			data = out;
		}
		if (r == 0)
			r = mig_postcopy_place(d->pc, pg->gpa, data, d->err);
	}
	return r;
}

/* Drops the stale page at gpa so that it faults (post-copy) until the
 * source's copy arrives. hugetlbfs cannot drop 4 KiB of a huge page (it
 * zeroes them in place, and the vCPU would read zeros instead of faulting):
 * the whole huge page goes, and the source resends it whole. The source
 * lists gpas in order, so the next ones in a huge page just dropped are
 * skipped rather than punched up to 511 more times. */
static int discard(struct dst *d, uint64_t gpa)
{
	int ri = mv_guest_mem_find(d->mem, gpa);
	const struct mv_mem_region *g = mv_guest_mem_region(d->mem, (unsigned)ri);
	uint64_t off = gpa - g->gpa, len = MV_MIGRATE_PAGE_SIZE;
	if (g->pages == MV_MEM_PAGES_HUGETLB) {
		off &= ~(MV_HUGE_PAGE_SIZE - 1);
		len = MV_HUGE_PAGE_SIZE;
		if (d->dropped_huge == g->gpa + off)
			return 0;
		d->dropped_huge = g->gpa + off;
	}
	if (fallocate(g->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
		return mv_err(d->err, -errno, "discarding gpa 0x%llx: %s", (unsigned long long)gpa,
			      strerror(errno));
	return 0;
}

static int start_vcpus(struct dst *d, bool paused)
{
	const struct mv_exec_backend *be = d->o.backend ? d->o.backend : mv_exec_native();
	int r = mv_vcpus_start(d->mem, be, d->st, d->cfg->nvcpus, paused, &d->vcpus, d->err);
	if (r < 0)
		mv_err_prefix(d->err, "starting the vCPUs");
	return r;
}

static int on_frame(struct dst *d, bool *done)
{
	const struct mig_hdr *h = &d->c.rx_hdr;
	const uint8_t *p = d->c.rx_buf;
	int r;
	if (h->type == MIG_NACK) {
		int code;
		char msg[MIG_NACK_MAX_MSG + 1];
		r = mig_nack_get(p, h->len, &code, msg, sizeof(msg), d->err);
		return r < 0 ? r : mv_err(d->err, code, "source aborted: %s", msg);
	}
	r = mig_order_next(&d->order, h->type, h->len, d->err);
	if (r < 0)
		return r;
	if (h->type == MIG_RAM)
		return on_ram(d);
	/* Everything else acts on RAM as it stands: let the writes land. */
	r = mig_applier_drain(d->ap, d->err);
	if (r < 0)
		return r;
	switch (h->type) {
	case MIG_VCPU:
		r = mig_vcpu_get(p, h->len, d->cfg, d->st, d->err);
		d->have_state = r == 0;
		return r;
	case MIG_DEVICE: {
		struct mig_device dev[MV_MIGRATE_MAX_DEVICES];
		uint32_t n;
		r = mig_device_get(p, h->len, dev, &n, d->err);
		if (r == 0 && n > 0)
			r = mv_err(d->err, -ENODEV, "device id %u has state but this VM has no such device",
				   dev[0].id);
		return r;
	}
	case MIG_DISCARD: {
		uint32_t n;
		r = mig_gpas_get(p, h->len, d->cfg, MIG_MAX_GPAS, &n, d->err);
		for (uint32_t i = 0; i < n && r == 0; i++)
			r = discard(d, mig_gpas_at(p, i));
		return r;
	}
	case MIG_POSTCOPY:
		r = mig_empty_get(h->type, p, h->len, d->err);
		if (r == 0)
			r = mig_postcopy_start(d->mem, d->cfg, &d->c, &d->pc, d->err);
		if (r == 0)
			r = start_vcpus(d, false);
		if (r == 0)
			r = mig_send(&d->c, MIG_RUNNING, NULL, 0, d->err);
		d->pr.phase = MV_MIGRATE_POSTCOPY;
		return r;
	case MIG_SYNC: {
		/* The applier is drained: every page so far is in guest RAM. */
		uint32_t pass;
		uint8_t buf[MIG_SYNC_LEN];
		r = mig_sync_get(p, h->len, &pass, d->err);
		if (r == 0)
			r = mig_send(&d->c, MIG_SYNCED, buf, (uint32_t)mig_sync_put(buf, pass), d->err);
		d->pr.pass = pass;
		return r;
	}
	case MIG_COMPLETE: {
		struct mig_complete c;
		r = mig_complete_get(p, h->len, &c, d->err);
		if (r == 0)
			r = mig_order_check_totals(&d->order, &c, d->err);
		if (r == 0 && d->pc)
			r = mig_postcopy_check_done(d->pc, d->err);
		*done = r == 0;
		return r;
	}
	default:
		return mv_err(d->err, -EPROTO, "unexpected %s frame", mig_type_name(h->type));
	}
}

/* Guest RAM must read as zeros where the source skips zero pages. */
static int make_fresh(struct dst *d)
{
	for (unsigned i = 0; i < mv_guest_mem_nregions(d->mem); i++) {
		const struct mv_mem_region *g = mv_guest_mem_region(d->mem, i);
		if (lseek(g->fd, 0, SEEK_DATA) < 0 && errno == ENXIO)
			continue;
		if (fallocate(g->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)g->size) < 0)
			return mv_err(d->err, -errno, "clearing region %u: %s", i, strerror(errno));
	}
	return 0;
}

static int setup(struct dst *d)
{
	int r = mv_migrate_config_match(d->cfg, d->mem, d->err);
	if (r < 0)
		return r;
	if (d->o.features & ~MV_MIGRATE_F_ALL)
		return mv_err(d->err, -EPROTONOSUPPORT, "unsupported features 0x%x", d->o.features);
	r = make_fresh(d);
	if (r < 0)
		return r;
	d->direct = mig_ram_direct_ok(d->mem);
	mv_log(MV_LOG_DEBUG, "migrate: guest RAM on %s pages: %s", mv_mem_pages_name(
	       mv_guest_mem_region(d->mem, 0)->pages), d->direct ? "receiving into it directly"
	       : "writing it with pwritev");
	uint8_t ready[MIG_READY_LEN] = {0};
	return mig_send(&d->c, MIG_READY, ready, sizeof(ready), d->err);
}

static int run(struct dst *d)
{
	int r = setup(d);
	bool done = false;
	while (r == 0 && !done) {
		r = mig_recv_hdr(&d->c, d->o.timeout_ms, d->err);
		if (r == 0 && d->direct && !d->pc && d->c.rx_hdr.type == MIG_RAM) {
			r = on_ram_direct(d);
		} else {
			if (r == 0)
				r = mig_recv_payload(&d->c, d->o.timeout_ms, d->err);
			if (r == 0)
				r = on_frame(d, &done);
		}
		if (r == 0 && d->pc)
			r = mig_postcopy_error(d->pc);
		if (r == 0)
			r = progress(d, false);
	}
	if (r < 0)
		return r;
	if (!d->have_state)
		return mv_err(d->err, -EPROTO, "stream ended without vCPU state");
	if (d->pc) {
		/* Every page the source holds is in; what still faults is a hole. */
		mig_postcopy_stop(d->pc);
		d->pc = NULL;
	} else {
		r = start_vcpus(d, d->o.flags & MV_MIGRATE_DEST_PAUSED);
		if (r < 0)
			return r;
	}
	return mig_send(&d->c, MIG_ACK, NULL, 0, d->err);
}

int mv_migrate_recv(int sock, struct mv_guest_mem *mem, const struct mv_migrate_config *cfg,
		    const struct mv_migrate_opts *opts, struct mv_vcpus **out,
		    int (*cb)(const struct mv_migrate_progress *p, void *ctx), void *ctx,
		    struct mv_error **err)
{
	struct dst *d = calloc(1, sizeof(*d));
	if (!d)
		abort();
	if (opts)
		d->o = *opts;
	if (!d->o.timeout_ms)
		d->o.timeout_ms = MV_MIGRATE_DEFAULT_TIMEOUT_MS;
	d->mem = mem;
	d->cfg = cfg;
	d->err = err;
	d->cb = cb;
	d->ctx = ctx;
	d->t_start = d->t_cb = mv_now_ns();
	d->dropped_huge = UINT64_MAX;
	d->pr.phase = MV_MIGRATE_PRECOPY;
	/* HEADER and CONFIG (seq 0, 1) were read by mv_migrate_recv_config. */
	mig_conn_init(&d->c, sock, d->o.timeout_ms, 2);
	d->order.stage = MIG_ST_RAM;
	d->order.features = d->o.features;
	d->order.seen.frames = 2;
	d->order.seen.bytes = 2 * MV_MIGRATE_HDR_SIZE + MIG_HEADER_LEN + mig_config_len(d->cfg);
	d->scratch = malloc((size_t)MV_MIGRATE_MAX_BATCH * MV_MIGRATE_PAGE_SIZE);
	d->zd = ZSTD_createDCtx();
	if (!d->scratch || !d->zd)
		abort();
	int r = mig_applier_start(mem, &d->ap, err);
	if (r == 0)
		r = run(d);
	mig_applier_stop(d->ap);   /* idle by now, or the migration failed */
	if (r < 0) {
		if (d->pc)
			mig_postcopy_stop(d->pc);   /* wakes vCPUs stuck on missing pages */
		mv_vcpus_stop(d->vcpus);
		d->vcpus = NULL;
		if (r != -EPIPE)
			mig_fail_peer(&d->c, r, err && *err ? (*err)->msg : strerror(-r));
		mv_err_prefix(err, "incoming migration");
	}
	d->pr.phase = r < 0 ? MV_MIGRATE_FAILED : MV_MIGRATE_DONE;
	d->vcpus = r < 0 ? NULL : d->vcpus;
	if (d->cb) {
		d->pr.bytes_sent = d->c.rx_bytes;
		d->pr.total_us = (mv_now_ns() - d->t_start) / 1000;
		(void)d->cb(&d->pr, d->ctx);
	}
	*out = d->vcpus;
	ZSTD_freeDCtx(d->zd);
	free(d->scratch);
	mig_conn_fini(&d->c);
	free(d);
	return r;
}
