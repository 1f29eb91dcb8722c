/* Live migration: moves a running VM's guest RAM, vCPU (workload) state and
 * device state to another VMM over a stream socket (TCP between hosts, or a
 * Unix socket), pre-copy with optional post-copy (userfaultfd) and optional
 * zstd page compression. Used by memvisor-vmm on both ends, and by memvisord
 * on the destination to read the VM's configuration (and admit it, allocate
 * its memfds) before it hands the socket to a new VMM.
 * Wire format: docs/formats/migration.md.
 *
 * Flow:  source VMM                          destination
 *        mv_migrate_send()  HEADER, CONFIG ->  daemon: mv_migrate_recv_config()
 *                                              (or mv_migrate_send_nack())
 *                                              VMM: mv_migrate_recv()
 *                           <- READY
 *                           RAM... (passes), VCPU, DEVICE, COMPLETE ->
 *                           <- ACK             (the VM now runs here)
 *        returns 0: the caller stops its vCPUs and frees the VM.
 * Any failure before ACK (peer gone, timeout, NACK, corrupt frame, cancel):
 * the source resumes its vCPUs and returns the error; the VM runs on there. */
#ifndef MEMVISOR_MIGRATE_H
#define MEMVISOR_MIGRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "memvisor/error.h"
#include "memvisor/mem.h"
#include "memvisor/vm.h"

#define MV_MIGRATE_MAGIC 0x474d564dU    /* "MVMG" as little-endian bytes */
#define MV_MIGRATE_VERSION 2   /* 2: RAM entry headers before the data */
#define MV_MIGRATE_PAGE_SIZE 4096u
#define MV_MIGRATE_HDR_SIZE 28u          /* frame header bytes */
#define MV_MIGRATE_MAX_PAYLOAD (2u << 20)
#define MV_MIGRATE_MAX_BATCH 256u        /* pages per RAM frame */
#define MV_MIGRATE_MAX_DEVICES 64u
#define MV_MIGRATE_DEFAULT_DOWNTIME_MS 300u
#define MV_MIGRATE_DEFAULT_MAX_PASSES 30u
#define MV_MIGRATE_DEFAULT_TIMEOUT_MS 30000

/* Features the source asks for in HEADER (the destination refuses unknown bits). */
enum mv_migrate_feature {
	MV_MIGRATE_F_ZSTD = 1u << 0,      /* pages may be zstd-compressed */
	MV_MIGRATE_F_POSTCOPY = 1u << 1,  /* switch to post-copy (see opts.postcopy_after) */
};
#define MV_MIGRATE_F_ALL (MV_MIGRATE_F_ZSTD | MV_MIGRATE_F_POSTCOPY)

/* Local behaviour flags (not on the wire). */
enum mv_migrate_flag {
	MV_MIGRATE_NO_AUTOCONVERGE = 1u << 0,  /* source: never throttle vCPUs */
	MV_MIGRATE_DEST_PAUSED = 1u << 1,      /* dest: start the vCPUs paused (pre-copy only) */
};

/* One RAM region of the VM: sizes only, no fds. */
struct mv_migrate_region {
	uint64_t gpa;
	uint64_t size;
	uint32_t flags;        /* enum mv_mem_flags */
	uint32_t pad;
};

#define MV_MIGRATE_MAX_SENSITIVE 64
#define MV_MIGRATE_MAX_KEEP 256
#define MV_MIGRATE_TENANT_FUSION 1u   /* the VM takes part in page fusion */

struct mv_migrate_span {
	uint64_t gpa;
	uint64_t len;
};

/* What the source host's daemon keeps about the VM beyond RAM and vCPUs, so
 * the destination's keeps protecting it: fusion opt-in, the guard's
 * sensitive ranges and the pages it moved (never to be fused again). */
struct mv_migrate_tenant {
	uint32_t flags;        /* MV_MIGRATE_TENANT_* */
	uint32_t nsensitive;
	uint32_t nkeep;
	uint32_t pad;
	struct mv_migrate_span sensitive[MV_MIGRATE_MAX_SENSITIVE];
	struct mv_migrate_span keep[MV_MIGRATE_MAX_KEEP];
};

/* The VM as the destination must rebuild it before pages arrive. Plain data. */
struct mv_migrate_config {
	char vm_name[64];      /* NUL-terminated, informative (may be "") */
	uint32_t nregions;
	uint32_t nvcpus;
	struct mv_migrate_region regions[MV_MEM_MAX_REGIONS];
	struct mv_wl_params wl;
	struct mv_migrate_tenant tenant;   /* CONFIG's optional tenant block */
};

struct mv_migrate_opts {
	uint32_t features;        /* enum mv_migrate_feature; recv_config fills it from HEADER */
	uint32_t flags;           /* enum mv_migrate_flag */
	uint32_t downtime_ms;     /* stop-copy target; 0 = 300 (travels in HEADER) */
	uint32_t max_passes;      /* pre-copy passes before a forced stop; 0 = 30 */
	uint32_t postcopy_after;  /* with F_POSTCOPY: pre-copy passes before switching; 0 = 1 */
	int zstd_level;           /* 0 = 1 */
	int timeout_ms;           /* peer silent / not reading this long fails; 0 = 30000, < 0 = never */
	uint64_t max_bandwidth;   /* source: bytes/s cap; 0 = unlimited */
	const struct mv_exec_backend *backend;  /* dest: NULL = mv_exec_native() */
};

enum mv_migrate_phase {
	MV_MIGRATE_SETUP = 0,     /* config sent, waiting for READY */
	MV_MIGRATE_PRECOPY,       /* VM running, passes over the dirty set */
	MV_MIGRATE_STOPCOPY,      /* VM paused, last pages and state */
	MV_MIGRATE_POSTCOPY,      /* VM running at the destination, pages pulled/pushed */
	MV_MIGRATE_DONE,
	MV_MIGRATE_FAILED,
};
const char *mv_migrate_phase_name(uint32_t phase);

struct mv_migrate_progress {
	uint32_t phase;           /* enum mv_migrate_phase */
	uint32_t pass;            /* 1-based pre-copy pass */
	uint64_t bytes_sent;      /* wire bytes (destination: received) */
	uint64_t pages_sent;      /* page entries (zero pages included) */
	uint64_t pages_remaining; /* dirty / not yet sent, as of the last sync */
	uint64_t dirty_rate;      /* pages/s over the last pass */
	uint64_t bandwidth;       /* bytes/s over the last pass */
	uint32_t throttle_pct;    /* auto-converge */
	uint32_t pad;
	uint64_t expected_downtime_us;  /* remaining bytes / bandwidth */
	uint64_t downtime_us;     /* pause -> ACK (post-copy: pause -> RUNNING); 0 until known */
	uint64_t total_us;        /* since the call began */
	uint64_t pages_zero;      /* zero pages sent as ZERO entries */
	uint64_t pages_compressed;
	uint64_t pages_requested; /* post-copy faults served */
};

/* Progress callbacks (cb may be NULL) run on the calling thread at least
 * once per pass and about every 100 ms. A non-zero return cancels the
 * migration (-ECANCELED) while that is still possible (before the switch-over). */

/* Fills cfg from a mapped guest memory and the VM's workload. */
void mv_migrate_config_init(struct mv_migrate_config *cfg, struct mv_guest_mem *m, uint32_t nvcpus,
			    const struct mv_wl_params *wl, const char *vm_name);
uint64_t mv_migrate_config_ram_size(const struct mv_migrate_config *cfg);
/* Does the mapped memory have exactly cfg's regions (gpa, size, hugetlb flag)? */
int mv_migrate_config_match(const struct mv_migrate_config *cfg, struct mv_guest_mem *m,
			    struct mv_error **err) MV_MUST_CHECK;

/* Source. Sends HEADER and CONFIG, waits for READY, then pre-copies: pass 1
 * sends every page holding data (memfd holes are skipped with SEEK_DATA,
 * all-zero pages are elided), later passes the dirty set from log (the
 * caller's log, already started; NULL = no pre-copy: pause and send all).
 * Stops iterating when what is left fits downtime_ms at the measured
 * bandwidth (or after max_passes), pauses vcpus, sends the rest, VCPU,
 * DEVICE and COMPLETE, and waits for ACK.
 * Returns 0 once the destination runs the VM: vcpus are left paused and the
 * caller stops them and frees the VM. On any error before the switch-over
 * the throttle is cleared, vcpus are resumed (if they were running at the
 * call) and the error says what happened. Post-copy only: a failure after
 * the switch-over returns -ENOTRECOVERABLE with vcpus paused (the
 * destination may have run the VM: resume here only once it is known dead).
 * sock must be a connected stream socket; it is not closed. */
int mv_migrate_send(int sock, struct mv_guest_mem *mem, struct mv_dirty_log *log,
		    struct mv_vcpus *vcpus, const struct mv_migrate_config *cfg,
		    const struct mv_migrate_opts *opts,
		    int (*cb)(const struct mv_migrate_progress *p, void *ctx), void *ctx,
		    struct mv_error **err) MV_MUST_CHECK;

/* Destination, step 1 (daemon): reads and validates HEADER and CONFIG,
 * reading no byte past them (the socket can then go to another process).
 * opts gets features, downtime_ms and postcopy_after from HEADER; other
 * fields are zeroed. A malformed start is answered with a NACK. */
int mv_migrate_recv_config(int sock, struct mv_migrate_config *cfg, struct mv_migrate_opts *opts,
			   int timeout_ms, struct mv_error **err) MV_MUST_CHECK;
/* Destination, refusing (admission failed, no memory, ...): sends a NACK
 * frame with the message; the source fails with it. */
int mv_migrate_send_nack(int sock, int code, const char *msg) MV_MUST_CHECK;

/* Destination, step 2 (VMM): mem is the VM's freshly mapped RAM matching cfg
 * (any data already in it is discarded). Sends READY, receives pages and
 * state, starts the vCPUs from the received states (workload init is not
 * run), sends ACK and returns the running vCPUs in *out (caller owns them;
 * mem must outlive them). On error nothing is left running, a NACK with the
 * reason is sent when the link still works, and the memory content is
 * undefined. With post-copy the vCPUs start at the switch-over, and guest RAM
 * is registered with userfaultfd until every page is in: start a dirty log
 * on mem only after this returns. */
int mv_migrate_recv(int sock, struct mv_guest_mem *mem, const struct mv_migrate_config *cfg,
		    const struct mv_migrate_opts *opts, struct mv_vcpus **out,
		    int (*cb)(const struct mv_migrate_progress *p, void *ctx), void *ctx,
		    struct mv_error **err) MV_MUST_CHECK;

/* Validates a whole recorded source->destination byte stream (every frame,
 * every field, decompression, totals at COMPLETE) without applying it.
 * Returns 0 for a complete valid stream. For tests and the fuzz target. */
int mv_migrate_stream_check(const uint8_t *buf, size_t len, struct mv_error **err) MV_MUST_CHECK;

#endif
