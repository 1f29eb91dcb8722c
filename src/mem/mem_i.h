/* Private layout of a mapped guest memory, shared by guest_mem.c (mapping,
 * GPA->HVA) and the dirty-tracking backends, which walk its regions. */
#ifndef MV_MEM_I_H
#define MV_MEM_I_H

#include <stdatomic.h>
#include "memvisor/mem.h"

struct mv_guest_mem {
	unsigned n;
	/* Last region hit by mv_gpa_to_hva(): a hint only, so relaxed is enough. */
	atomic_uint last;
	uint64_t ram_size;
	struct mv_mem_region r[MV_MEM_MAX_REGIONS];
};

#endif
