/* The control channel between memvisord and a memvisor-vmm process: typed,
 * checksummed frames over a Unix stream socket, memfds riding along with
 * SCM_RIGHTS. The daemon connects to the socket the VMM listens on, so a
 * restarted daemon can reconnect and re-adopt the VM. Wire format:
 * docs/formats/control-channel.md. */
#ifndef MEMVISOR_CTL_H
#define MEMVISOR_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "memvisor/error.h"
#include "memvisor/mem.h"
#include "memvisor/migrate.h"
#include "memvisor/vm.h"

#define MV_CTL_MAGIC 0x4343564dU   /* "MVCC" */
#define MV_CTL_VERSION 1
#define MV_CTL_TRAILER 0x21444e45U /* "END!" */
#define MV_CTL_MAX_PAYLOAD 16384
#define MV_CTL_MAX_FDS (MV_MEM_MAX_REGIONS + 1)   /* RAM regions + a migration socket */

enum mv_ctl_type {
	MV_CTL_HELLO = 1,     /* vmm -> daemon on accept: who am I */
	MV_CTL_SETUP,         /* daemon -> vmm: RAM layout (+fds), vCPUs, workload */
	MV_CTL_STATUS,        /* state and stats */
	MV_CTL_PAUSE,
	MV_CTL_RESUME,
	MV_CTL_STOP,          /* vCPUs stop, the VMM exits 0 after replying */
	MV_CTL_VERIFY,
	MV_CTL_GET_MEM,       /* reply carries the layout and its fds (re-adoption) */
	MV_CTL_SAVE_STATE,    /* pauses the vCPUs and returns their states (hand-over) */
	MV_CTL_MIGRATE_OUT,   /* fd: a connected stream to the destination; starts sending */
	MV_CTL_MIGRATE_IN,    /* fds: RAM regions + the stream; replies once the VM runs */
	MV_CTL_MIGRATE_CANCEL,
	MV_CTL_FUSE,          /* map pool pages over guest pages; reply: results, broken pages */
	MV_CTL_UNFUSE,        /* copy every fused page back into guest RAM */
	MV_CTL_GUARD,         /* mlock/munlock a sensitive guest range; reply: region HVAs */
	MV_CTL_SAMPLE,        /* watch fused pages in short trapped windows; reply: windows since the last call */
	MV_CTL_THROTTLE,      /* hold the vCPUs back (the guard's response to a suspect) */
	MV_CTL_RELOCATE,      /* move a guest range's pages to fresh frames; reply: pages moved */
	MV_CTL__COUNT
};

#define MV_CTL_F_REPLY 1u

/* 32-byte frame header, little-endian; payload, then a u32 trailer follow. */
struct mv_ctl_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t seq;
	int32_t status;        /* replies: 0 or -errno */
	uint32_t payload_len;
	uint16_t nfds;
	uint16_t flags;        /* MV_CTL_F_REPLY */
	uint32_t payload_crc;  /* crc32c of the payload */
	uint32_t hdr_crc;      /* crc32c of the 28 bytes above */
};

enum mv_vmm_state { MV_VMM_WAITING = 0, MV_VMM_RUNNING, MV_VMM_PAUSED, MV_VMM_STOPPING };

struct mv_ctl_hello {
	char vm_id[24];
	int32_t pid;
	uint32_t state;        /* enum mv_vmm_state */
	uint32_t ready;        /* 1 once SETUP was applied */
	uint32_t pad;
};

struct mv_ctl_region {
	uint64_t gpa;
	uint64_t size;
	uint32_t flags;
	uint32_t pad;
};

struct mv_ctl_setup {
	uint32_t nregions;     /* == frame nfds */
	uint32_t nvcpus;
	uint32_t start_paused;
	uint32_t dirty_tracking;
	struct mv_wl_params wl;
	struct mv_ctl_region regions[MV_MEM_MAX_REGIONS];
	uint32_t resume;       /* 1: continue from states[] over RAM as it is (hand-over) */
	uint32_t no_thp;       /* 1: 4 KiB pages only (page fusion merges 4 KiB pages) */
	struct mv_wl_state states[MV_MAX_VCPUS];
};

/* SAVE_STATE reply: the paused vCPUs' workload states. */
struct mv_ctl_states {
	uint32_t nvcpus;
	uint32_t pad;
	struct mv_wl_state states[MV_MAX_VCPUS];
};

struct mv_ctl_status {
	uint32_t state;        /* enum mv_vmm_state */
	uint32_t nvcpus;
	uint64_t ops_done;
	uint64_t dirty_pages_total;
	uint64_t dirty_rate_milli;   /* pages/s * 1000 */
	char dirty_backend[16];
	uint32_t migrating;    /* 1 while an outgoing migration runs or has ended unreported */
	uint32_t mig_result;   /* 0 running, 1 done (VM lives at the destination), 2 failed */
	struct mv_migrate_progress mig;
	char mig_error[256];
	uint64_t wl_aux[4];    /* workload results, summed over vCPUs (struct mv_wl_state aux) */
	uint32_t throttle_pct;
	uint32_t pad;
};

/* Migration options as they cross the control channel. */
struct mv_ctl_migrate_opts {
	char vm_name[64];         /* MIGRATE_OUT: the name the destination will know it by */
	uint32_t features;        /* enum mv_migrate_feature */
	uint32_t downtime_ms;
	uint32_t max_passes;
	uint32_t postcopy_after;
	int32_t zstd_level;
	uint32_t pad;
	uint64_t max_bandwidth;
};

/* MIGRATE_OUT request: how to send, and what the destination must keep
 * about the VM (CONFIG's tenant block). */
struct mv_ctl_migrate_out {
	struct mv_ctl_migrate_opts opts;
	struct mv_migrate_tenant tenant;
};

/* MIGRATE_IN request: the VM as the stream's CONFIG described it. */
struct mv_ctl_migrate_in {
	struct mv_ctl_migrate_opts opts;
	struct mv_migrate_config cfg;
};

struct mv_ctl_verify {
	uint32_t ok;
	uint32_t pad;
	uint64_t ops_done;
	uint64_t elapsed_us;
	char message[256];
};

/* FUSE request: map pool page pool_off read-only at gpa, if the guest page
 * still holds the same bytes. The pool fd (read-only) rides along once per
 * VMM (nfds 1); n may be 0 to just collect broken pages. */
#define MV_CTL_FUSE_MAX 512
#define MV_CTL_BROKEN_MAX 512
struct mv_ctl_fuse_entry {
	uint64_t gpa;
	uint64_t pool_off;
};

struct mv_ctl_fuse {
	uint32_t n;
	uint32_t pad;
	uint64_t pool_size;    /* with the fd: its size in bytes */
	struct mv_ctl_fuse_entry e[MV_CTL_FUSE_MAX];
};

enum mv_ctl_fuse_result { MV_FUSE_MISS = 0, MV_FUSE_DONE, MV_FUSE_SKIP };

/* FUSE reply: one result per entry, and fused pages a guest write broke
 * since the last reply (their pool page is no longer mapped). */
struct mv_ctl_fuse_reply {
	uint32_t n;
	uint32_t nbroken;
	uint32_t more;         /* 1: more broken pages wait for the next call */
	uint32_t pad;
	uint64_t fused;        /* pages fused now */
	uint64_t cow_breaks;   /* total */
	uint8_t result[MV_CTL_FUSE_MAX];   /* enum mv_ctl_fuse_result */
	uint64_t broken[MV_CTL_BROKEN_MAX];
	/* Per broken page, for the guard's write-probe signal: how long it had
	 * been fused when the write came, and how long before this reply. */
	uint32_t age_ms[MV_CTL_BROKEN_MAX];
	uint32_t ago_ms[MV_CTL_BROKEN_MAX];
};

/* SAMPLE request: the fused guest pages to watch (n may be 0: stop). The
 * VMM runs the trapped windows itself, back to back on its own timer thread,
 * each window_us long: a page's mapping is made PROT_NONE, the first access
 * in the window faults, is counted and gets read access back at once; an
 * untouched page simply stays trapped. The reply reports, per page of the
 * previous call, the windows that ended since then (a short poll sees many
 * short windows: detection need not wait for the poll period). */
#define MV_CTL_SAMPLE_MAX 64
#define MV_CTL_SAMPLE_WINDOW_MIN_US 500
#define MV_CTL_SAMPLE_WINDOW_MAX_US 1000000
struct mv_ctl_sample {
	uint32_t n;
	uint32_t window_us;    /* MIN..MAX when n > 0 */
	uint64_t gpa[MV_CTL_SAMPLE_MAX];
};

struct mv_ctl_sample_reply {
	uint32_t n;
	uint32_t window_us;    /* the windows' length */
	uint64_t gpa[MV_CTL_SAMPLE_MAX];
	uint64_t bits[MV_CTL_SAMPLE_MAX];   /* touched per window, newest in bit 0 */
	uint8_t nwin[MV_CTL_SAMPLE_MAX];    /* windows (armed: page still fused) that ended since the last call, <= 64 */
};

/* THROTTLE request: vCPUs run (100 - pct)% of the time; 0 = off, <= 99. */
struct mv_ctl_throttle {
	uint32_t pct;
	uint32_t pad;
};

/* RELOCATE request: move every resident page of guest range [gpa, gpa+len)
 * (page aligned, inside one region) to a fresh frame, contents unchanged, the
 * range mlocked after. The vCPUs are paused around it. */
struct mv_ctl_relocate {
	uint64_t gpa;
	uint64_t len;
};

/* RELOCATE reply. */
struct mv_ctl_relocate_reply {
	uint64_t moved;        /* pages now in new frames */
	uint64_t skipped;      /* resident pages left where they were (busy in fusion) */
	uint64_t elapsed_us;   /* vCPUs paused for this long */
};

/* UNFUSE reply. */
struct mv_ctl_unfuse {
	uint64_t unfused;
	uint64_t cow_breaks;
};

/* GUARD request: op 1 mlocks guest range [gpa, gpa+len) in the VMM (which
 * populates it: every page gets a frame that stays resident), op 2 munlocks
 * it, op 0 does neither, op 3 marks its pages never to be fused (a fused one
 * is copied back first: the guard moved them, and a new VMM after a hand-over
 * must not undo that). The range lies in one region, page aligned. The reply
 * says where each RAM region is mapped, so the daemon can read the frames
 * from /proc/PID/pagemap. */
enum mv_ctl_guard_op { MV_GUARD_OP_QUERY = 0, MV_GUARD_OP_LOCK, MV_GUARD_OP_UNLOCK,
		       MV_GUARD_OP_KEEP };
struct mv_ctl_guard {
	uint32_t op;
	uint32_t pad;
	uint64_t gpa;
	uint64_t len;
};

struct mv_ctl_guard_reply {
	uint32_t nregions;
	uint32_t kept;         /* op 3: pages of the range marked (all of them) */
	uint64_t gpa[MV_MEM_MAX_REGIONS];
	uint64_t size[MV_MEM_MAX_REGIONS];
	uint64_t hva[MV_MEM_MAX_REGIONS];
};

struct mv_ctl_mem {
	uint32_t nregions;
	uint32_t pad;
	struct mv_ctl_region regions[MV_MEM_MAX_REGIONS];
};

/* A decoded frame. */
struct mv_ctl_msg {
	uint16_t type;
	uint16_t flags;
	uint32_t seq;
	int32_t status;
	uint32_t payload_len;
	uint8_t payload[MV_CTL_MAX_PAYLOAD];
	unsigned nfds;
	int fds[MV_CTL_MAX_FDS];     /* owned by the message once received */
};

uint32_t mv_crc32c(uint32_t crc, const void *buf, size_t len);
/* The same CRC, bit by bit: the reference the fast path is tested against. */
uint32_t mv_crc32c_portable(uint32_t crc, const void *buf, size_t len);

/* Encodes header+payload+trailer into buf (cap bytes); returns the length or -errno. */
int mv_ctl_encode(const struct mv_ctl_msg *m, uint8_t *buf, size_t cap);
/* Validates a header (magic, version, type, length, fd count, crc). */
int mv_ctl_decode_hdr(const uint8_t *buf, size_t len, struct mv_ctl_hdr *out,
		      struct mv_error **err) MV_MUST_CHECK;
/* Decodes a whole frame (header, payload, trailer, payload size per type). */
int mv_ctl_decode(const uint8_t *buf, size_t len, struct mv_ctl_msg *out,
		  struct mv_error **err) MV_MUST_CHECK;
/* Checks the payload of a decoded message against its type: exact size,
 * enums in range, NUL-terminated strings, region counts matching nfds. */
int mv_ctl_validate_payload(const struct mv_ctl_msg *m, struct mv_error **err) MV_MUST_CHECK;

/* Socket I/O: one frame each way. recv owns any fds it returns (closes them on error). */
int mv_ctl_send(int sock, const struct mv_ctl_msg *m) MV_MUST_CHECK;
int mv_ctl_recv(int sock, struct mv_ctl_msg *m, int timeout_ms, struct mv_error **err) MV_MUST_CHECK;
/* Sends a request and waits for its reply (matching seq). */
int mv_ctl_call(int sock, struct mv_ctl_msg *req, struct mv_ctl_msg *reply, int timeout_ms,
		struct mv_error **err) MV_MUST_CHECK;
void mv_ctl_msg_close_fds(struct mv_ctl_msg *m);
/* Fills m as a request/reply of type with a payload copy. */
void mv_ctl_msg_init(struct mv_ctl_msg *m, uint16_t type, const void *payload, uint32_t len);

#endif
