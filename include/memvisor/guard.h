/* Side-channel guard: answers "is another tenant's data within this protected
 * range?" for ranges of host frames a tenant marked sensitive. Co-residency
 * kinds: a fused page the range's VM shares with another VM (asked of the
 * fusion library), the same frame, and, when configured, the same cache
 * colour (PFN modulo the LLC's colours: frames that compete for the same LLC
 * sets) or the same DRAM-row neighbourhood (PFN >> row_shift). A pure library
 * over frame numbers the caller supplies (memvisord reads them from each
 * VMM's /proc/PID/pagemap), so tests drive it with synthetic PFNs. */
#ifndef MEMVISOR_GUARD_H
#define MEMVISOR_GUARD_H

#include <stddef.h>
#include <stdint.h>
#include "memvisor/error.h"
#include "memvisor/fusion.h"

enum mv_guard_kind { MV_GUARD_FUSED, MV_GUARD_FRAME, MV_GUARD_COLOUR, MV_GUARD_ROW, MV_GUARD__KINDS };
/* "fused", "frame", "colour", "row"; "unknown" out of range. Static string. */
const char *mv_guard_kind_name(enum mv_guard_kind k);

#define MV_GUARD_MAX_COLOURS (1u << 20)
#define MV_GUARD_MAX_ROW_SHIFT 40

struct mv_guard_cfg {
	uint32_t colours;     /* LLC colours, a power of two <= MV_GUARD_MAX_COLOURS; 0: off */
	uint32_t row_shift;   /* frames with equal PFN >> row_shift share a DRAM-row
			       * neighbourhood; 1..MV_GUARD_MAX_ROW_SHIFT, 0: off */
};

/* A guest page of VM key and the host frame behind it (pfn 0: none resident). */
struct mv_guard_page {
	uint64_t key;
	uint64_t gpa;
	uint64_t pfn;
};

/* A protected range: the pages of VM key it covers (borrowed for the call). */
struct mv_guard_range {
	uint64_t id;
	uint64_t key;
	const struct mv_guard_page *pages;
	size_t n;
};

/* Co-residency of VM other with range range_id, of one kind, aggregated:
 * pages counts the other VM's pages found that way; one example pair is kept. */
struct mv_guard_finding {
	uint64_t range_id;
	uint64_t owner;        /* the range's VM */
	uint64_t other;        /* the co-resident VM */
	enum mv_guard_kind kind;
	uint64_t pages;
	uint64_t gpa;          /* example: the protected page ... */
	uint64_t pfn;          /* ... its frame ... */
	uint64_t other_gpa;    /* ... and the other VM's page */
	uint64_t other_pfn;
};

/* Validates cfg (-EINVAL naming "colours" or "row_shift"). */
int mv_guard_cfg_check(const struct mv_guard_cfg *cfg, struct mv_error **err) MV_MUST_CHECK;
/* The LLC's page colours on this host: LLC size / (ways * 4 KiB), from sysfs
 * (cpu0's highest cache level); 0 when unknown. */
uint32_t mv_guard_llc_colours(void);
/* A frame's colour and row neighbourhood under cfg (0 when that check is off). */
uint64_t mv_guard_colour(const struct mv_guard_cfg *cfg, uint64_t pfn);
uint64_t mv_guard_row(const struct mv_guard_cfg *cfg, uint64_t pfn);

/* Checks every range against pages (all VMs' resident pages; those of the
 * range's own VM and pfn 0 are ignored) and, when f is not NULL, against the
 * fusion library's sharers of each protected page (each counted as fused
 * and as the same frame; pass the sharers' own frames in pages only if they
 * are not fused, or they count twice). *out (malloc'ed, the
 * caller frees it; NULL when *n is 0) gets one finding per (range, other VM,
 * kind), sorted by range, other VM, kind. */
int mv_guard_check(const struct mv_guard_cfg *cfg, const struct mv_guard_range *ranges,
		   size_t nranges, const struct mv_guard_page *pages, size_t npages,
		   struct mv_fusion *f, struct mv_guard_finding **out, size_t *n,
		   struct mv_error **err) MV_MUST_CHECK;


/* Detection and response (src/guard/detect.c): the signals the guard
 * observes, its policy, and the windows that turn signals into suspects. */
enum mv_guard_signal { MV_SIG_WRITE_PROBE, MV_SIG_SAMPLED_ACCESS, MV_SIG_DENY_HASH, MV_SIG__COUNT };
enum mv_guard_action {
	MV_ACT_LOG, MV_ACT_UNFUSE, MV_ACT_THROTTLE, MV_ACT_PAUSE, MV_ACT_STOP, MV_ACT_MOVE,
	MV_ACT__COUNT
};
/* "write_probe", "sampled_access", "deny_hash"; "log", "unfuse", "throttle",
 * "pause", "stop", "move"; "unknown" out of range. Parsers return -1 when unknown. */
const char *mv_guard_signal_name(unsigned s);
int mv_guard_signal_parse(const char *s);
const char *mv_guard_action_name(unsigned a);
int mv_guard_action_parse(const char *s);

#define MV_GUARD_DENY_MAX 64
#define MV_GUARD_NAME_MAX 63

/* A known probe page: its content's XXH3-64 (as the fusion scanner hashes). */
struct mv_guard_deny {
	uint64_t xxh3;
	char name[MV_GUARD_NAME_MAX + 1];
};

struct mv_guard_policy {
	bool detect;                 /* false: no signal is evaluated (the guard is "off") */
	enum mv_guard_action action; /* what a detection does to the suspect */
	uint32_t throttle_pct;       /* MV_ACT_THROTTLE: 1..99 */
	/* write probe: >= wp_min_pages cross-VM copy-on-write breaks of pages
	 * fused less than wp_fresh_ms before, within wp_window_ms, and they are
	 * >= wp_min_pct % of the VM's fused pages (the prober breaks all its
	 * candidates at once; a guest rewriting some of its many shared pages
	 * in a catch-up burst does not) */
	uint32_t wp_min_pages, wp_fresh_ms, wp_window_ms, wp_min_pct;
	/* sampled access: the page touched in >= sa_min_pct % of the last
	 * sa_windows trapped windows (all of them armed) */
	uint32_t sa_windows, sa_min_pct;
	uint32_t ndeny;
	struct mv_guard_deny deny[MV_GUARD_DENY_MAX];
};

/* The defaults: detect on, action unfuse, throttle 90 %, write probe 32
 * pages fused < 10 s broken within 10 ms and >= 50 % of the VM's fused pages
 * (a prober breaks all its candidates in a burst, ~30 per ms here), sampled
 * access 70 % of 10 windows (3 ms each: ~30 ms of steady probing). */
void mv_guard_policy_default(struct mv_guard_policy *p);
/* Validates every field; errors name it ("write_probe.min_pages", ...). */
int mv_guard_policy_check(const struct mv_guard_policy *p, struct mv_error **err) MV_MUST_CHECK;
/* The XXH3-64 the fusion scanner files a page under. */
uint64_t mv_guard_page_hash(const void *page);
/* The deny entry for a content hash, or NULL. */
const struct mv_guard_deny *mv_guard_denied(const struct mv_guard_policy *p, uint64_t xxh3);

/* Write-probe window of one VM: fresh cross-VM breaks over time. */
#define MV_GUARD_WP_SLOTS 64
struct mv_guard_wprobe {
	uint64_t at_ms[MV_GUARD_WP_SLOTS];   /* when (ms, any monotonic clock) */
	uint32_t n[MV_GUARD_WP_SLOTS];       /* breaks then */
	uint32_t head, used;
};
/* Books n fresh breaks that happened at at_ms (add them in time order; they
 * arrive up to a FUSE round trip late, so the window is on break times, not
 * on the caller's clock); true when the wp_window_ms up to at_ms hold >=
 * wp_min_pages breaks; *count and *first_ms (the window's earliest break)
 * describe it. Entries older than the window go. */
bool mv_guard_wprobe_add(struct mv_guard_wprobe *w, const struct mv_guard_policy *p,
			 uint64_t at_ms, uint32_t n, uint64_t *count, uint64_t *first_ms);
void mv_guard_wprobe_reset(struct mv_guard_wprobe *w);

/* Sampled-access history of one (suspect VM, page): one bit per window. */
struct mv_guard_sampled {
	uint64_t bits;      /* 1 = touched; newest in bit 0 */
	uint32_t windows;   /* windows recorded (saturates at 64) */
	uint64_t first_ns;  /* when the first touched window of the streak ended */
};
/* Books one window; true when the last sa_windows windows were all recorded
 * and >= sa_min_pct % of them touched. *touched gets that count. */
bool mv_guard_sampled_add(struct mv_guard_sampled *s, const struct mv_guard_policy *p,
			  bool touched, uint32_t *hits);

#endif
