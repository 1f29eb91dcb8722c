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
extern const struct mv_wl_ops mv_wl_secret_ops;
extern const struct mv_wl_ops mv_wl_writeprobe_ops;
extern const struct mv_wl_ops mv_wl_flushreload_ops;

/* The side-channel attack workloads' common ground (wl_secret.c): the
 * victim's secret page (content from its seed), the public page victim and
 * Flush+Reload attacker both hold (same bytes in every VM, so fusion merges
 * them) and the secret bits the victim's accesses to them leak: bit i selects
 * cache line 2j or 2j+1 (j = i % 16) of public page i / 16; lines 32-63 of
 * each page are never touched (an attacker's baseline). An attacker is told
 * the victim's seed only to score its guesses. */
#define MV_SECRET_BITS 32
#define MV_PUBLIC_PAGES 2
#define MV_BITS_PER_PAGE 16
void mv_secret_page_fill(uint64_t *w, uint64_t seed);
void mv_public_page_fill(uint64_t *w, unsigned idx);
uint32_t mv_secret_bits(uint64_t seed);
/* How long an attack round waits for the fusion scanner to merge its pages. */
#define MV_ATTACK_WAIT_NS (2500ULL * 1000000)

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
