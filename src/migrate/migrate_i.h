/* Internals shared by the migration files: a connection (one socket, frame
 * sequence numbers each way, byte counts, timeouts, an optional bandwidth
 * cap) and the page helpers. wire.c implements the connection; send.c,
 * recv.c, postcopy.c and config.c use it. */
#ifndef MV_MIGRATE_I_H
#define MV_MIGRATE_I_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include "memvisor/migrate.h"
#include "stream_i.h"

struct mig_conn {
	int fd;
	int timeout_ms;            /* < 0: wait forever */
	uint32_t tx_seq, rx_seq;
	uint64_t tx_bytes, rx_bytes;
	uint64_t bw_cap;           /* bytes/s, 0 = none */
	uint64_t bw_t0, bw_b0;     /* pacing reference point */
	pthread_mutex_t wlock;     /* post-copy: two threads send on the destination */
	struct mig_hdr rx_hdr;     /* last frame received */
	uint8_t *rx_buf;           /* MV_MIGRATE_MAX_PAYLOAD bytes */
};

/* Sets up c over fd (not owned). rx_seq starts at first_rx_seq. */
void mig_conn_init(struct mig_conn *c, int fd, int timeout_ms, uint32_t first_rx_seq);
void mig_conn_fini(struct mig_conn *c);
/* Sends one frame (header + payload) whole; thread-safe. */
int mig_send(struct mig_conn *c, uint16_t type, const void *payload, uint32_t len,
	     struct mv_error **err) MV_MUST_CHECK;
/* Sends one frame whose payload (len bytes, CRC-32C crc) is iov[1..niov-1];
 * iov[0] is filled with the frame header. iov is modified. Thread-safe. */
int mig_sendv(struct mig_conn *c, uint16_t type, struct iovec *iov, int niov, uint32_t len,
	      uint32_t crc, struct mv_error **err) MV_MUST_CHECK;
/* Receives one frame into c->rx_hdr / c->rx_buf, reading no byte past it:
 * header checks, sequence number, payload checksum. timeout_ms < 0: forever.
 * -EPIPE when the peer closed between frames. */
int mig_recv(struct mig_conn *c, int timeout_ms, struct mv_error **err) MV_MUST_CHECK;
/* mig_recv in two steps: the header (checked, sequence number too) into
 * c->rx_hdr, then the payload. A caller that reads the payload itself (with
 * mig_readv) checks its checksum and calls mig_recv_done. */
int mig_recv_hdr(struct mig_conn *c, int timeout_ms, struct mv_error **err) MV_MUST_CHECK;
int mig_recv_payload(struct mig_conn *c, int timeout_ms, struct mv_error **err) MV_MUST_CHECK;
void mig_recv_done(struct mig_conn *c);
/* Reads exactly what iov describes (consuming iov), adding its CRC-32C to
 * *crc (may be NULL) a chunk at a time as it arrives. -EPIPE on EOF,
 * -ETIMEDOUT. */
int mig_readv(struct mig_conn *c, struct iovec *iov, int niov, int timeout_ms,
	      uint32_t *crc) MV_MUST_CHECK;
/* Is a frame (or EOF) waiting? */
bool mig_readable(struct mig_conn *c);
/* Sends NACK(code, msg) best effort. */
void mig_send_nack(struct mig_conn *c, int code, const char *msg);
/* After a failure: sends our NACK, stops writing, and drains the peer's
 * input for a short while so it reads the NACK rather than a reset. */
void mig_fail_peer(struct mig_conn *c, int code, const char *msg);

bool mig_page_is_zero(const uint8_t *p);

/* extents.c: the stretches of a region that may hold data, holes skipped
 * without reading (and so allocating) them. */
struct mig_extents {
	const struct mv_mem_region *g;
	uint64_t off;              /* where the next search starts */
	bool probe;                /* hugetlb pages exist that we have not mapped */
	uint8_t *bounce;           /* 2 MiB: pread of an unmapped hugetlb page */
};
void mig_extents_init(struct mig_extents *x, const struct mv_mem_region *g);
/* The next stretch [*d, *h) that may hold data; false past the end. */
bool mig_extents_next(struct mig_extents *x, uint64_t *d, uint64_t *h);
void mig_extents_fini(struct mig_extents *x);

/* Accumulates a bitmap of n bits (64 per word). */
static inline bool mig_bit_test(const uint64_t *bm, uint64_t i) { return bm[i / 64] >> (i % 64) & 1; }
static inline void mig_bit_set(uint64_t *bm, uint64_t i) { bm[i / 64] |= 1ULL << (i % 64); }
static inline void mig_bit_clear(uint64_t *bm, uint64_t i) { bm[i / 64] &= ~(1ULL << (i % 64)); }

/* Destination page applier (apply.c): a thread writing validated pre-copy
 * RAM frames into guest RAM. submit hands *buf (holding pages' data) to it
 * and gives back a free buffer of MV_MIGRATE_MAX_PAYLOAD bytes in *buf;
 * submit and drain report an earlier write failure. */
struct mig_applier;
int mig_applier_start(struct mv_guest_mem *mem, struct mig_applier **out,
		      struct mv_error **err) MV_MUST_CHECK;
int mig_applier_submit(struct mig_applier *a, uint8_t **buf, const struct mig_page *pages,
		       uint32_t n, struct mv_error **err) MV_MUST_CHECK;
int mig_applier_drain(struct mig_applier *a, struct mv_error **err) MV_MUST_CHECK;
void mig_applier_stop(struct mig_applier *a);

/* Direct receive (recv_ram.c): is every region huge-page backed? */
bool mig_ram_direct_ok(struct mv_guest_mem *mem);
/* Reads the payload of the RAM frame whose header is in c->rx_hdr straight
 * into guest RAM, validating the table first (cfg, features) and the
 * checksum after; applies ZERO and ZSTD entries; fills pages[]/count. */
int mig_ram_recv_direct(struct mig_conn *c, struct mv_guest_mem *mem,
			const struct mv_migrate_config *cfg, uint32_t features, void *zd,
			struct mig_page *pages, uint32_t *count, int timeout_ms,
			struct mv_error **err) MV_MUST_CHECK;

/* Post-copy destination (postcopy.c): userfaultfd over guest RAM, a fault
 * thread that asks the source for missing pages, and page placement. */
struct mig_postcopy;
int mig_postcopy_start(struct mv_guest_mem *mem, const struct mv_migrate_config *cfg,
		       struct mig_conn *c, struct mig_postcopy **out,
		       struct mv_error **err) MV_MUST_CHECK;
/* Places one page (data NULL = zero page); a page already present is left.
 * On hugetlb RAM the page waits until its whole huge page has arrived. */
int mig_postcopy_place(struct mig_postcopy *pc, uint64_t gpa, const uint8_t *data,
		       struct mv_error **err) MV_MUST_CHECK;
/* At the end of the stream: -EPROTO if a huge page is still incomplete. */
int mig_postcopy_check_done(struct mig_postcopy *pc, struct mv_error **err) MV_MUST_CHECK;
/* Fault-thread failure (send error), 0 when none. */
int mig_postcopy_error(struct mig_postcopy *pc);
uint64_t mig_postcopy_faults(struct mig_postcopy *pc);
/* Stops the fault thread and unregisters guest RAM (waking any faulting vCPU). */
void mig_postcopy_stop(struct mig_postcopy *pc);

#endif
