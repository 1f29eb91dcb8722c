/* The source side of post-copy: at the switch-over the VM stops here, its
 * state and the list of pages the destination holds stale copies of
 * (DISCARD) go out, then POSTCOPY; from then on the destination runs the VM
 * and asks for the pages it faults on (PAGE_REQ), which go out first, while
 * the rest are pushed in the background. On hugetlb RAM the unit is the
 * 2 MiB page: the destination drops a whole huge page for a stale 4 KiB
 * one and places a page only whole, so each huge page with anything
 * pending, or asked for, goes out whole, once, its 512 entries in a row.
 * Used by send.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/util.h"
#include "send_i.h"

#define POST_BATCH 32u   /* small background frames keep fault latency low */
#define BLOCK_PAGES (MV_HUGE_PAGE_SIZE / MV_MIGRATE_PAGE_SIZE)

static bool huge(const struct mv_mem_region *g)
{
	return g->pages == MV_MEM_PAGES_HUGETLB;
}

/* Sends huge page b of region ri whole, unless it went out already since
 * the switch-over (the VM is paused here: what went is final). */
static int send_block(struct src *s, unsigned ri, uint64_t b)
{
	if (mig_bit_test(s->post_sent[ri], b))
		return 0;
	mig_bit_set(s->post_sent[ri], b);
	const struct mv_mem_region *g = mv_guest_mem_region(s->mem, ri);
	int r = 0;
	for (uint64_t p = b * BLOCK_PAGES; p < (b + 1) * BLOCK_PAGES && r == 0; p++) {
		if (mig_bit_test(s->pending[ri], p)) {
			mig_bit_clear(s->pending[ri], p);
			s->pr.pages_remaining--;
		}
		r = src_put_page(s, g->gpa + p * MV_MIGRATE_PAGE_SIZE,
				 g->hva + p * MV_MIGRATE_PAGE_SIZE, false);
	}
	return r;
}

int src_post_queue(struct src *s)
{
	uint32_t n;
	int r = mig_gpas_get(s->c.rx_buf, s->c.rx_hdr.len, s->cfg, SRC_REQ_MAX, &n, s->err);
	if (r < 0 || s->awaiting_ack)
		return r;   /* after COMPLETE every page is there: late requests are moot */
	if (s->req_len + n > SRC_REQ_CAP)
		return mv_err(s->err, -ENOBUFS, "post-copy request queue overflow");
	for (uint32_t i = 0; i < n; i++)
		s->req[(s->req_head + s->req_len++) % SRC_REQ_CAP] = mig_gpas_at(s->c.rx_buf, i);
	return 0;
}

static int send_discards(struct src *s)
{
	uint8_t *buf = s->enc.buf;
	uint32_t n = 0;
	for (unsigned i = 0; i < s->nregions; i++) {
		const struct mv_mem_region *g = mv_guest_mem_region(s->mem, i);
		for (uint64_t p = 0; p < s->npages[i]; p++) {
			if (!mig_bit_test(s->pending[i], p))
				continue;
			mig_put64(buf + 8 + 8 * (size_t)n++, g->gpa + p * MV_MIGRATE_PAGE_SIZE);
			if (n == MIG_MAX_GPAS) {
				mig_put32(buf, n);
				mig_put32(buf + 4, 0);
				int r = mig_send(&s->c, MIG_DISCARD, buf, 8 + 8 * n, s->err);
				if (r < 0)
					return r;
				n = 0;
			}
		}
	}
	int r = 0;
	if (n) {
		mig_put32(buf, n);
		mig_put32(buf + 4, 0);
		r = mig_send(&s->c, MIG_DISCARD, buf, 8 + 8 * n, s->err);
	}
	mig_ram_reset(&s->enc);
	return r;
}

/* Sends the page at gpa now (requested), whether pending or not: the
 * destination may fault on a page it never got because it was zero. */
static int send_requested(struct src *s, uint64_t gpa)
{
	int ri = mv_guest_mem_find(s->mem, gpa);
	if (ri < 0)
		return mv_err(s->err, -EPROTO, "page request for gpa 0x%llx outside RAM",
			      (unsigned long long)gpa);
	const struct mv_mem_region *g = mv_guest_mem_region(s->mem, (unsigned)ri);
	uint64_t p = (gpa - g->gpa) / MV_MIGRATE_PAGE_SIZE;
	if (huge(g)) {
		s->pr.pages_requested++;
		return send_block(s, (unsigned)ri, p / BLOCK_PAGES);
	}
	if (mig_bit_test(s->pending[ri], p)) {
		mig_bit_clear(s->pending[ri], p);
		s->pr.pages_remaining--;
	}
	s->pr.pages_requested++;
	return src_put_page(s, gpa, g->hva + p * MV_MIGRATE_PAGE_SIZE, false);
}

static int serve_requests(struct src *s)
{
	if (!s->req_len)
		return 0;
	while (s->req_len) {
		uint64_t gpa = s->req[s->req_head];
		s->req_head = (s->req_head + 1) % SRC_REQ_CAP;
		s->req_len--;
		int r = send_requested(s, gpa);
		if (r < 0)
			return r;
	}
	return src_flush(s);
}

/* Between background frames: out with what is built, then the requests. */
static int push_break(struct src *s)
{
	int r = src_flush(s);
	return r < 0 ? r : serve_requests(s);
}

/* Pushes every huge page of region i holding a pending page. */
static int push_blocks(struct src *s, unsigned i)
{
	const uint64_t words = BLOCK_PAGES / 64;
	for (uint64_t b = 0; b < s->npages[i] / BLOCK_PAGES; b++) {
		uint64_t any = 0;
		for (uint64_t w = 0; w < words; w++)
			any |= s->pending[i][b * words + w];
		int r = any ? send_block(s, i, b) : 0;
		if (r == 0 && any)
			r = push_break(s);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Pushes every pending page, serving requests between small batches. */
static int push(struct src *s)
{
	for (unsigned i = 0; i < s->nregions; i++) {
		const struct mv_mem_region *g = mv_guest_mem_region(s->mem, i);
		if (huge(g)) {
			int r = push_blocks(s, i);
			if (r < 0)
				return r;
			continue;
		}
		for (uint64_t w = 0; w < (s->npages[i] + 63) / 64; w++) {
			while (s->pending[i][w]) {
				uint64_t p = w * 64 + (uint64_t)__builtin_ctzll(s->pending[i][w]);
				s->pending[i][w] &= s->pending[i][w] - 1;
				s->pr.pages_remaining--;
				int r = src_put_page(s, g->gpa + p * MV_MIGRATE_PAGE_SIZE,
						     g->hva + p * MV_MIGRATE_PAGE_SIZE, false);
				if (r == 0 && s->enc.count >= POST_BATCH)
					r = src_flush(s);
				if (r == 0)
					r = serve_requests(s);
				if (r < 0)
					return r;
			}
		}
	}
	return push_break(s);
}

int src_postcopy(struct src *s)
{
	uint64_t ndirty, npending;
	s->pr.phase = MV_MIGRATE_STOPCOPY;
	s->t_pause = mv_now_ns();
	mv_vcpus_pause(s->vcpus);
	s->req = calloc(SRC_REQ_CAP, sizeof(*s->req));
	if (!s->req)
		abort();
	for (unsigned i = 0; i < s->nregions; i++) {
		s->post_sent[i] = calloc(s->npages[i] / BLOCK_PAGES / 64 + 1, 8);
		if (!s->post_sent[i])
			abort();
	}
	int r = src_sync_pending(s, &ndirty, &npending);
	if (r == 0) {
		s->pr.pages_remaining = npending;
		r = src_progress(s, true);
	}
	if (r == 0)
		r = src_send_state(s);
	if (r == 0)
		r = send_discards(s);
	if (r == 0)
		r = mig_send(&s->c, MIG_POSTCOPY, NULL, 0, s->err);
	if (r < 0)
		return r;
	/* From here the destination may be running the VM. */
	s->switched = true;
	s->phase_post = true;
	s->pr.phase = MV_MIGRATE_POSTCOPY;
	r = src_progress(s, true);
	if (r == 0)
		r = push(s);
	if (r == 0)
		r = src_send_complete(s);
	if (r == 0)
		r = src_wait_ack(s);
	return r;
}
