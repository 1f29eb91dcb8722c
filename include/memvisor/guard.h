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

#endif
