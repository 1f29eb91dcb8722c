/* The source side's state, shared by send.c (setup, pre-copy, stop-copy)
 * and send_post.c (post-copy push and page requests). Private to src/migrate. */
#ifndef MV_MIGRATE_SEND_I_H
#define MV_MIGRATE_SEND_I_H

#include <zstd.h>
#include "migrate_i.h"

#define SRC_REQ_CAP 4096u    /* queued post-copy page requests */
#define SRC_REQ_MAX 64u      /* gpas per PAGE_REQ frame */

struct src {
	struct mig_conn c;
	struct mv_guest_mem *mem;
	struct mv_dirty_log *log;
	struct mv_vcpus *vcpus;
	const struct mv_migrate_config *cfg;
	struct mv_migrate_opts o;
	int (*cb)(const struct mv_migrate_progress *p, void *ctx);
	void *ctx;
	struct mv_error **err;
	struct mv_migrate_progress pr;
	uint64_t t_start, t_cb, t_pause;
	struct mig_ram_enc enc;
	/* Direct batches (guest paused, no zstd): pages go from guest RAM to
	 * the socket by reference; only entry headers are built, in meta. */
	bool direct;               /* the current batch is direct */
	uint8_t *meta;             /* count, pad, entry headers */
	size_t meta_len;
	struct iovec *iov;         /* [0] frame header, [1] meta, then runs of pages */
	int niov;
	uint8_t *page;             /* one page: compression input */
	ZSTD_CCtx *zc;
	uint8_t *zbuf;
	size_t zcap;
	unsigned nregions;
	uint64_t npages[MV_MEM_MAX_REGIONS];
	uint64_t *pending[MV_MEM_MAX_REGIONS];   /* pages the destination lacks or has stale */
	uint64_t tot_pages;        /* page entries sent, for COMPLETE */
	uint64_t page_rate;        /* pages/s we managed in the last sizeable pass */
	unsigned outrun;           /* passes in a row the guest outran the link */
	bool phase_post;           /* post-copy pushing: PAGE_REQ and RUNNING expected */
	bool switched;             /* past the point of no return */
	bool awaiting_ack;
	bool awaiting_sync;
	bool acked;
	bool peer_gone;            /* it sent NACK: no point answering */
	uint64_t *post_sent[MV_MEM_MAX_REGIONS];   /* post-copy: huge pages sent whole */
	uint64_t *req;             /* post-copy request ring */
	uint32_t req_head, req_len;
};

int src_progress(struct src *s, bool force) MV_MUST_CHECK;
int src_handle_incoming(struct src *s) MV_MUST_CHECK;
int src_flush(struct src *s) MV_MUST_CHECK;
int src_put_page(struct src *s, uint64_t gpa, const uint8_t *hva, bool skip_zero) MV_MUST_CHECK;
int src_sync_pending(struct src *s, uint64_t *ndirty, uint64_t *npending) MV_MUST_CHECK;
int src_send_state(struct src *s) MV_MUST_CHECK;
int src_send_complete(struct src *s) MV_MUST_CHECK;
int src_wait_ack(struct src *s) MV_MUST_CHECK;
/* send_post.c */
int src_post_queue(struct src *s) MV_MUST_CHECK;
int src_postcopy(struct src *s) MV_MUST_CHECK;

#endif
