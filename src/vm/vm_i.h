/* Private glue of src/vm: the workload op tables and helpers shared by
 * workload.c (registry) and the wl_*.c files. Not for other modules. */
#ifndef MV_VM_I_H
#define MV_VM_I_H

#include <stdint.h>
#include "memvisor/vm.h"

#define MV_WL_PAGE 4096ULL

extern const struct mv_wl_ops mv_wl_idle_ops;
extern const struct mv_wl_ops mv_wl_memtouch_ops;
extern const struct mv_wl_ops mv_wl_kvstore_ops;

/* HVA of the vCPU's whole slice (it lies inside one region), or NULL. */
static inline uint8_t *mv_wl_slice(const struct mv_wl_state *st, struct mv_guest_mem *m)
{
	if (st->gpa_len == 0)
		return NULL;
	return mv_gpa_to_hva(m, st->gpa_base, st->gpa_len);
}

/* Gives the slice back as zero pages (punches the memfd when possible, so a
 * fresh start costs no RSS), else writes zeros. */
void mv_wl_zero(uint8_t *hva, uint64_t len);

#endif
