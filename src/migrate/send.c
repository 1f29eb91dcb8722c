/* The source side of a live migration (mv_migrate_send): HEADER and CONFIG,
 * then pre-copy passes over guest RAM with bandwidth and dirty-rate
 * estimates, auto-converge, the stop-copy (or a switch to post-copy, whose
 * page pushing lives in send_post.c), and the rule that any failure before
 * the switch-over leaves the VM running here. Used by memvisor-vmm. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>
#include "memvisor/ctl.h"
#include "memvisor/util.h"
#include "send_i.h"

#define BW_MIN_SAMPLE (1ULL << 20)   /* passes smaller than this keep the old bandwidth */
#define CB_PERIOD_NS (100ULL * 1000000)

static void apply_defaults(struct mv_migrate_opts *o)
{
	if (!o->downtime_ms)
		o->downtime_ms = MV_MIGRATE_DEFAULT_DOWNTIME_MS;
	if (!o->max_passes)
		o->max_passes = MV_MIGRATE_DEFAULT_MAX_PASSES;
	if (!o->postcopy_after)
		o->postcopy_after = 1;
	if (!o->zstd_level)
		o->zstd_level = 1;
	if (!o->timeout_ms)
		o->timeout_ms = MV_MIGRATE_DEFAULT_TIMEOUT_MS;
}

int src_progress(struct src *s, bool force)
{
	uint64_t now = mv_now_ns();
	if (!force && now - s->t_cb < CB_PERIOD_NS)
		return 0;
	s->t_cb = now;
	s->pr.bytes_sent = s->c.tx_bytes;
	if (s->pr.pass <= 1 && now > s->t_start)   /* no pass measured yet: the rate so far */
		s->pr.bandwidth = s->pr.bytes_sent * 1000000ULL / ((now - s->t_start) / 1000 + 1);
	s->pr.total_us = (now - s->t_start) / 1000;
	if (!s->cb || s->cb(&s->pr, s->ctx) == 0 || s->switched)
		return 0;
	return mv_err(s->err, -ECANCELED, "migration cancelled");
}

/* A frame from the destination arrived mid-stream: a NACK (its error),
 * post-copy requests (queued), RUNNING; anything else is a protocol error. */
int src_handle_incoming(struct src *s)
{
	int r = mig_recv(&s->c, s->o.timeout_ms, s->err);
	if (r < 0)
		return r;
	const struct mig_hdr *h = &s->c.rx_hdr;
	switch (h->type) {
	case MIG_NACK: {
		int code;
		char msg[MIG_NACK_MAX_MSG + 1];
		r = mig_nack_get(s->c.rx_buf, h->len, &code, msg, sizeof(msg), s->err);
		s->peer_gone = true;
		return r < 0 ? r : mv_err(s->err, code, "destination refused: %s", msg);
	}
	case MIG_PAGE_REQ:
		if (s->phase_post)
			return src_post_queue(s);
		break;
	case MIG_RUNNING:
		if (s->phase_post && !s->pr.downtime_us) {
			r = mig_empty_get(h->type, s->c.rx_buf, h->len, s->err);
			s->pr.downtime_us = (mv_now_ns() - s->t_pause) / 1000;
			return r;
		}
		break;
	case MIG_SYNCED:
		if (s->awaiting_sync) {
			uint32_t pass;
			r = mig_sync_get(s->c.rx_buf, h->len, &pass, s->err);
			if (r == 0 && pass != s->pr.pass)
				r = mv_err(s->err, -EPROTO, "SYNCED for pass %u during pass %u", pass,
					   s->pr.pass);
			s->awaiting_sync = false;
			return r;
		}
		break;
	case MIG_ACK:
		if (s->awaiting_ack) {
			s->acked = true;
			return mig_empty_get(h->type, s->c.rx_buf, h->len, s->err);
		}
		break;
	default:
		break;
	}
	return mv_err(s->err, -EPROTO, "unexpected %s frame from the destination",
		      mig_type_name(h->type));
}

/* A send failed: if the destination left a NACK behind before it closed,
 * its reason beats our "broken pipe". */
static int nack_reason(struct src *s, int r)
{
	if ((r != -EPIPE && r != -ECONNRESET) || !mig_readable(&s->c))
		return r;
	struct mv_error *e = NULL;
	struct mv_error **saved = s->err;
	s->err = &e;
	int r2 = src_handle_incoming(s);
	s->err = saved;
	if (s->c.rx_hdr.type == MIG_NACK && r2 < 0 && saved && e) {
		mv_error_free(*saved);
		*saved = e;
		return r2;
	}
	mv_error_free(e);
	return r;
}

#define DIRECT_BATCH 256u   /* 256 KiB: checksummed, then sent while still in cache */
#define DIRECT_IOV (2 * DIRECT_BATCH + 2)

/* Checksums a direct batch (pages hot from the zero check) and sends it
 * straight from guest RAM: [frame header][count, entry headers][pages]. */
static int flush_direct(struct src *s)
{
	mig_put32(s->meta, s->enc.count);
	mig_put32(s->meta + 4, 0);
	s->iov[1] = (struct iovec){s->meta, s->meta_len};
	uint32_t crc = 0;
	for (int i = 1; i < s->niov; i++)
		crc = mv_crc32c(crc, s->iov[i].iov_base, s->iov[i].iov_len);
	int r = mig_sendv(&s->c, MIG_RAM, s->iov, s->niov, (uint32_t)s->enc.len, crc, s->err);
	s->enc.count = 0;
	s->enc.len = 8;
	s->meta_len = 8;
	s->niov = 0;
	return r;
}

int src_flush(struct src *s)
{
	if (s->enc.count) {
		int r = s->direct ? flush_direct(s)
				  : mig_send(&s->c, MIG_RAM, s->enc.buf, (uint32_t)mig_ram_finish(&s->enc),
					     s->err);
		if (r < 0)
			return nack_reason(s, r);
		mig_ram_reset(&s->enc);
	}
	/* A destination that gave up says so with a NACK: notice it early. */
	while (mig_readable(&s->c)) {
		int r = src_handle_incoming(s);
		if (r < 0)
			return r;
		if (!s->phase_post || s->req_len + SRC_REQ_MAX > SRC_REQ_CAP)
			break;
	}
	return src_progress(s, false);
}

/* Adds an entry to a direct batch: its header in meta, data by reference
 * (pages adjacent in guest RAM share one iovec). */
static void direct_add(struct src *s, uint64_t gpa, uint8_t enc, const uint8_t *data)
{
	if (!s->niov) {
		s->niov = 2;   /* [0]: frame header; [1]: count, pad, entry headers */
		s->meta_len = 8;
	}
	uint32_t len = data ? MV_MIGRATE_PAGE_SIZE : 0;
	mig_ram_entry_put(s->meta + s->meta_len, gpa, enc, len);
	s->meta_len += MIG_PAGE_ENTRY_LEN;
	if (data) {
		struct iovec *last = &s->iov[s->niov - 1];
		if (s->niov > 2 && (const uint8_t *)last->iov_base + last->iov_len == data)
			last->iov_len += len;
		else
			s->iov[s->niov++] = (struct iovec){(void *)(uintptr_t)data, len};
	}
	s->enc.count++;
	s->enc.len += MIG_PAGE_ENTRY_LEN + len;
}

/* Adds the page at gpa (hva) to the batch. skip_zero: the destination holds
 * zeros there already (first pass onto fresh memory). */
int src_put_page(struct src *s, uint64_t gpa, const uint8_t *hva, bool skip_zero)
{
	if (s->enc.count == 0)
		/* While the vCPUs are paused (the VMM refuses to resume them
		 * during a migration) guest RAM cannot change under the
		 * checksum: no private copy needed. */
		s->direct = !s->zc && s->vcpus && mv_vcpus_paused(s->vcpus);
	if (mig_page_is_zero(hva)) {
		if (skip_zero)
			return 0;
		if (s->direct)
			direct_add(s, gpa, MIG_ENC_ZERO, NULL);
		else
			mig_ram_add(&s->enc, gpa, MIG_ENC_ZERO, 0);
		s->pr.pages_zero++;
	} else if (s->direct) {
		direct_add(s, gpa, MIG_ENC_RAW, hva);
	} else if (s->zc) {
		/* Compress a private copy: a racing guest write must not feed
		 * the compressor two versions of one byte. */
		memcpy(s->page, hva, MV_MIGRATE_PAGE_SIZE);
		size_t n = ZSTD_compressCCtx(s->zc, s->zbuf, s->zcap, s->page, MV_MIGRATE_PAGE_SIZE,
					     s->o.zstd_level);
		if (!ZSTD_isError(n) && n < MV_MIGRATE_PAGE_SIZE) {
			memcpy(mig_ram_add(&s->enc, gpa, MIG_ENC_ZSTD, (uint32_t)n), s->zbuf, n);
			s->pr.pages_compressed++;
		} else {
			memcpy(mig_ram_add(&s->enc, gpa, MIG_ENC_RAW, MV_MIGRATE_PAGE_SIZE), s->page,
			       MV_MIGRATE_PAGE_SIZE);
		}
	} else {
		memcpy(mig_ram_add(&s->enc, gpa, MIG_ENC_RAW, MV_MIGRATE_PAGE_SIZE), hva,
		       MV_MIGRATE_PAGE_SIZE);
	}
	s->pr.pages_sent++;
	s->tot_pages++;
	return s->enc.count == (s->direct ? DIRECT_BATCH : MV_MIGRATE_MAX_BATCH) ? src_flush(s) : 0;
}

/* Pages the memfds hold (st_blocks): what pass 1 has to look at. */
static uint64_t allocated_pages(struct src *s)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < s->nregions; i++) {
		struct stat st;
		if (fstat(mv_guest_mem_region(s->mem, i)->fd, &st) == 0)
			n += (uint64_t)st.st_blocks * 512 / MV_MIGRATE_PAGE_SIZE;
	}
	return n;
}

/* Pass 1: every page holding data. Holes are skipped without reading them
 * (extents.c). Until the first dirty sync, the pages it has yet to look at
 * are what the progress reports as remaining. */
static int send_all(struct src *s)
{
	s->pr.pages_remaining = allocated_pages(s);
	for (unsigned i = 0; i < s->nregions; i++) {
		const struct mv_mem_region *g = mv_guest_mem_region(s->mem, i);
		struct mig_extents x;
		uint64_t d, h;
		int r = 0;
		mig_extents_init(&x, g);
		while (r == 0 && mig_extents_next(&x, &d, &h))
			for (uint64_t p = d; p < h && r == 0; p += MV_MIGRATE_PAGE_SIZE) {
				s->pr.pages_remaining -= s->pr.pages_remaining > 0;
				r = src_put_page(s, g->gpa + p, g->hva + p, true);
			}
		mig_extents_fini(&x);
		if (r < 0)
			return r;
	}
	return src_flush(s);
}

/* Syncs the dirty log into the pending bitmaps; returns the pending count. */
int src_sync_pending(struct src *s, uint64_t *ndirty, uint64_t *npending)
{
	*ndirty = 0;
	if (s->log) {
		int r = mv_dirty_sync(s->log, ndirty, s->err);
		if (r < 0)
			return r;
	}
	uint64_t cnt = 0;
	for (unsigned i = 0; i < s->nregions; i++) {
		uint64_t np = 0;
		const uint64_t *bm = s->log ? mv_dirty_bitmap(s->log, i, &np) : NULL;
		for (uint64_t w = 0; w < (s->npages[i] + 63) / 64; w++) {
			if (bm && w < (np + 63) / 64)
				s->pending[i][w] |= bm[w];
			cnt += (uint64_t)__builtin_popcountll(s->pending[i][w]);
		}
	}
	*npending = cnt;
	return 0;
}

/* Sends (and clears) every pending page. */
static int send_pending(struct src *s)
{
	for (unsigned i = 0; i < s->nregions; i++) {
		const struct mv_mem_region *g = mv_guest_mem_region(s->mem, i);
		for (uint64_t w = 0; w < (s->npages[i] + 63) / 64; w++) {
			while (s->pending[i][w]) {
				uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(s->pending[i][w]);
				s->pending[i][w] &= s->pending[i][w] - 1;
				int r = src_put_page(s, g->gpa + p * MV_MIGRATE_PAGE_SIZE,
						     g->hva + p * MV_MIGRATE_PAGE_SIZE, false);
				if (r < 0)
					return r;
			}
		}
	}
	return src_flush(s);
}

/* After a pass: estimates, auto-converge; true when it is time to stop. */
static bool pass_done(struct src *s, uint64_t pass_bytes, uint64_t pass_pages, uint64_t pass_ns,
		      uint64_t ndirty, uint64_t since_sync_ns, uint64_t npending)
{
	uint64_t ns = pass_ns ? pass_ns : 1;
	/* Estimates run in pages/s, not bytes/s: with zstd or zero pages the
	 * wire is not what limits us, the per-page work is. */
	if (pass_bytes >= BW_MIN_SAMPLE || !s->page_rate) {
		s->pr.bandwidth = pass_bytes * 1000000000ULL / ns;
		s->page_rate = pass_pages * 1000000000ULL / ns;
	}
	s->pr.dirty_rate = ndirty * 1000000000ULL / (since_sync_ns ? since_sync_ns : 1);
	s->pr.pages_remaining = npending;
	uint64_t rate = s->page_rate ? s->page_rate : 1;
	s->pr.expected_downtime_us = npending * 1000000ULL / rate;
	/* The guest dirties more than half of what we can send: it will not
	 * converge on its own. Two such passes in a row raise the throttle. */
	if (s->pr.dirty_rate > rate / 2)
		s->outrun++;
	else
		s->outrun = 0;
	if (s->outrun >= 2 && s->vcpus && !(s->o.flags & MV_MIGRATE_NO_AUTOCONVERGE) &&
	    s->pr.throttle_pct < 90) {
		s->pr.throttle_pct = s->pr.throttle_pct >= 80 ? 90 : s->pr.throttle_pct + 20;
		mv_vcpus_set_throttle(s->vcpus, s->pr.throttle_pct);
		s->outrun = 0;
	}
	if (s->pr.expected_downtime_us <= (uint64_t)s->o.downtime_ms * 1000)
		return true;
	if (s->pr.pass >= s->o.max_passes)
		return true;
	return (s->o.features & MV_MIGRATE_F_POSTCOPY) && s->pr.pass >= s->o.postcopy_after;
}

/* Waits until the destination has applied the pass: the pass time then
 * measures the whole pipe, not how fast the socket buffer filled (a deep
 * buffer of zstd pages would otherwise land in the downtime). */
static int pass_barrier(struct src *s)
{
	uint8_t buf[MIG_SYNC_LEN];
	int r = mig_send(&s->c, MIG_SYNC, buf, (uint32_t)mig_sync_put(buf, s->pr.pass), s->err);
	if (r < 0)
		return r;
	s->awaiting_sync = true;
	while (s->awaiting_sync && r == 0)
		r = src_handle_incoming(s);
	return r;
}

static int precopy(struct src *s)
{
	uint64_t ndirty, npending, t_sync = mv_now_ns();
	s->pr.phase = MV_MIGRATE_PRECOPY;
	s->pr.pass = 1;
	/* Clear what the log gathered before now: pass 1 reads everything. */
	int r = src_sync_pending(s, &ndirty, &npending);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < s->nregions; i++)
		memset(s->pending[i], 0, (s->npages[i] + 63) / 64 * 8);
	for (;;) {
		uint64_t t0 = mv_now_ns(), b0 = s->c.tx_bytes, p0 = s->pr.pages_sent;
		r = src_progress(s, true);
		if (r < 0)
			return r;
		r = s->pr.pass == 1 ? send_all(s) : send_pending(s);
		if (r == 0 && s->log)
			r = pass_barrier(s);
		if (r < 0)
			return r;
		uint64_t t1 = mv_now_ns();
		if (!s->log)
			return 0;
		r = src_sync_pending(s, &ndirty, &npending);
		if (r < 0)
			return r;
		bool stop = pass_done(s, s->c.tx_bytes - b0, s->pr.pages_sent - p0, t1 - t0, ndirty,
				      t1 - t_sync, npending);
		t_sync = t1;
		if (stop)
			return 0;
		s->pr.pass++;
	}
}

int src_send_state(struct src *s)
{
	struct mv_wl_state st[MV_MAX_VCPUS];
	mv_vcpus_get_states(s->vcpus, st);
	size_t n = mig_vcpu_put(s->enc.buf, st, s->cfg->nvcpus);
	int r = mig_send(&s->c, MIG_VCPU, s->enc.buf, (uint32_t)n, s->err);
	if (r < 0)
		return r;
	/* No device carries state yet; the section exists so the stream has
	 * the shape devices will fill. */
	n = mig_device_put(s->enc.buf, NULL, 0);
	r = mig_send(&s->c, MIG_DEVICE, s->enc.buf, (uint32_t)n, s->err);
	mig_ram_reset(&s->enc);
	return r;
}

int src_send_complete(struct src *s)
{
	struct mig_complete c = {.pages = s->tot_pages, .bytes = s->c.tx_bytes, .frames = s->c.tx_seq};
	uint8_t buf[MIG_COMPLETE_LEN];
	mig_complete_put(buf, &c);
	return mig_send(&s->c, MIG_COMPLETE, buf, sizeof(buf), s->err);
}

/* Waits for the destination's ACK, serving nothing further. */
int src_wait_ack(struct src *s)
{
	s->awaiting_ack = true;
	while (!s->acked) {
		int r = src_handle_incoming(s);
		if (r < 0)
			return r;
	}
	return 0;
}

static int stopcopy(struct src *s)
{
	uint64_t ndirty, npending;
	s->pr.phase = MV_MIGRATE_STOPCOPY;
	if (!s->t_pause) {
		s->t_pause = mv_now_ns();
		mv_vcpus_pause(s->vcpus);
	}
	int r = src_sync_pending(s, &ndirty, &npending);
	if (r == 0) {
		s->pr.pages_remaining = npending;
		r = src_progress(s, true);
	}
	if (r == 0)
		r = send_pending(s);
	if (r == 0)
		r = src_send_state(s);
	if (r == 0)
		r = src_send_complete(s);
	if (r == 0)
		r = src_wait_ack(s);
	if (r == 0)
		s->pr.downtime_us = (mv_now_ns() - s->t_pause) / 1000;
	return r;
}

static int setup(struct src *s)
{
	struct mig_header h = {.page_size = MV_MIGRATE_PAGE_SIZE, .features = s->o.features,
			       .downtime_ms = s->o.downtime_ms, .postcopy_after = s->o.postcopy_after};
	uint8_t buf[MIG_CONFIG_MAX];
	int r = mv_migrate_config_match(s->cfg, s->mem, s->err);
	if (r < 0)
		return r;
	if (s->o.features & ~MV_MIGRATE_F_ALL)
		return mv_err_field(s->err, -EINVAL, "features", "unknown features 0x%x", s->o.features);
	if (s->cfg->nvcpus == 0 || s->cfg->nvcpus > MV_MAX_VCPUS)
		return mv_err_field(s->err, -EINVAL, "nvcpus", "%u vCPUs", s->cfg->nvcpus);
	r = mig_send(&s->c, MIG_HEADER, buf, (uint32_t)mig_header_put(buf, &h), s->err);
	if (r == 0)
		r = mig_send(&s->c, MIG_CONFIG, buf, (uint32_t)mig_config_put(buf, s->cfg), s->err);
	if (r < 0)
		return r;
	/* The destination may take a while to admit the VM and map its RAM. */
	r = src_progress(s, true);
	if (r == 0)
		r = mig_recv(&s->c, s->o.timeout_ms, s->err);
	if (r < 0)
		return r;
	if (s->c.rx_hdr.type == MIG_NACK) {
		int code;
		char msg[MIG_NACK_MAX_MSG + 1];
		r = mig_nack_get(s->c.rx_buf, s->c.rx_hdr.len, &code, msg, sizeof(msg), s->err);
		s->peer_gone = true;
		return r < 0 ? r : mv_err(s->err, code, "destination refused: %s", msg);
	}
	if (s->c.rx_hdr.type != MIG_READY)
		return mv_err(s->err, -EPROTO, "expected READY, got %s", mig_type_name(s->c.rx_hdr.type));
	return mig_empty_get(MIG_READY, s->c.rx_buf, s->c.rx_hdr.len, s->err);
}

static void src_free(struct src *s)
{
	for (unsigned i = 0; i < s->nregions; i++) {
		free(s->pending[i]);
		free(s->post_sent[i]);
	}
	free(s->enc.buf);
	free(s->meta);
	free(s->iov);
	free(s->page);
	free(s->zbuf);
	free(s->req);
	ZSTD_freeCCtx(s->zc);
	mig_conn_fini(&s->c);
}

int mv_migrate_send(int sock, struct mv_guest_mem *mem, struct mv_dirty_log *log,
		    struct mv_vcpus *vcpus, const struct mv_migrate_config *cfg,
		    const struct mv_migrate_opts *opts,
		    int (*cb)(const struct mv_migrate_progress *p, void *ctx), void *ctx,
		    struct mv_error **err)
{
	struct src s_, *s = &s_;
	memset(s, 0, sizeof(*s));
	if (opts)
		s->o = *opts;
	apply_defaults(&s->o);
	s->mem = mem;
	s->log = log;
	s->vcpus = vcpus;
	s->cfg = cfg;
	s->cb = cb;
	s->ctx = ctx;
	s->err = err;
	s->t_start = mv_now_ns();
	mig_conn_init(&s->c, sock, s->o.timeout_ms, 0);
	s->c.bw_cap = s->o.max_bandwidth;
	s->nregions = mv_guest_mem_nregions(mem);
	s->enc.buf = malloc(MIG_RAM_MAX_PAYLOAD);
	s->page = malloc(MV_MIGRATE_PAGE_SIZE);
	s->meta = malloc(8 + DIRECT_BATCH * MIG_PAGE_ENTRY_LEN);
	s->iov = calloc(DIRECT_IOV, sizeof(*s->iov));
	if (!s->enc.buf || !s->page || !s->meta || !s->iov)
		abort();
	mig_ram_reset(&s->enc);
	for (unsigned i = 0; i < s->nregions; i++) {
		s->npages[i] = mv_guest_mem_region(mem, i)->size / MV_MIGRATE_PAGE_SIZE;
		s->pending[i] = calloc((s->npages[i] + 63) / 64, 8);
		if (!s->pending[i])
			abort();
	}
	if (s->o.features & MV_MIGRATE_F_ZSTD) {
		s->zc = ZSTD_createCCtx();
		s->zcap = ZSTD_compressBound(MV_MIGRATE_PAGE_SIZE);
		s->zbuf = malloc(s->zcap);
		if (!s->zc || !s->zbuf)
			abort();
	}
	bool was_running = vcpus && !mv_vcpus_paused(vcpus);
	int r = vcpus ? 0 : mv_err_field(err, -EINVAL, "vcpus", "no vCPUs to migrate");
	if (r == 0)
		r = setup(s);
	if (r == 0 && !log) {
		/* No dirty log: nothing to iterate on; copy with the VM stopped. */
		s->t_pause = mv_now_ns();
		mv_vcpus_pause(vcpus);
	}
	if (r == 0)
		r = precopy(s);
	if (r == 0)
		r = (s->o.features & MV_MIGRATE_F_POSTCOPY) && log ? src_postcopy(s) : stopcopy(s);
	if (vcpus)
		mv_vcpus_set_throttle(vcpus, 0);
	s->pr.throttle_pct = 0;
	if (r < 0 && !s->switched) {
		/* The VM never left: run it here again and tell the destination. */
		if (was_running)
			mv_vcpus_resume(vcpus);
		if (r != -EPIPE && r != -ECONNRESET && !s->peer_gone)
			mig_send_nack(&s->c, r, err && *err ? (*err)->msg : strerror(-r));
	} else if (r < 0) {
		mv_err(err, r, "%s", strerror(-r));
		mv_err_prefix(err, "post-copy failed after the switch-over, the VM is paused here");
		r = -ENOTRECOVERABLE;
		if (err && *err)
			(*err)->code = r;
	}
	s->pr.phase = r < 0 ? MV_MIGRATE_FAILED : MV_MIGRATE_DONE;
	s->switched = true;   /* the final report cannot cancel */
	if (src_progress(s, true) < 0)
		mv_log(MV_LOG_DEBUG, "migrate: final progress report failed");
	if (r < 0)
		mv_err_prefix(err, "migration");
	src_free(s);
	return r;
}
