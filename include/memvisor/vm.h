/* Inside a VMM: workloads (deterministic guest programs) and the vCPU threads
 * that run them through an execution backend. Used by memvisor-vmm and by
 * migration (workload state is part of the stream). */
#ifndef MEMVISOR_VM_H
#define MEMVISOR_VM_H

#include <stdbool.h>
#include <stdint.h>
#include "memvisor/error.h"
#include "memvisor/mem.h"

#define MV_MAX_VCPUS 64

/* secret, writeprobe, flushreload: the side-channel attack tests' victim and
 * attackers (src/vm/wl_secret.c and the others; results in aux). */
enum mv_wl_kind {
	MV_WL_IDLE = 0, MV_WL_MEMTOUCH = 1, MV_WL_KVSTORE = 2,
	MV_WL_SECRET = 3, MV_WL_WRITEPROBE = 4, MV_WL_FLUSHRELOAD = 5, MV_WL__COUNT
};
enum mv_wl_pattern { MV_PAT_SEQ = 0, MV_PAT_RANDOM = 1, MV_PAT_HOTCOLD = 2, MV_PAT__COUNT };

/* What a workload does; chosen at VM creation. Fixed-width: it crosses the
 * control channel and the migration stream as is (little-endian hosts). */
struct mv_wl_params {
	uint32_t kind;        /* enum mv_wl_kind */
	uint32_t pattern;     /* memtouch: enum mv_wl_pattern */
	uint64_t seed;
	uint64_t wss_bytes;   /* memtouch: working set per VM (split across vCPUs); kvstore: table bytes per VM */
	uint64_t rate;        /* memtouch: pages dirtied/s per VM; kvstore: ops/s per VM; 0 = as fast as possible */
	uint32_t put_pct;     /* kvstore: puts out of 100 ops (the rest are deletes); 0 = default */
	uint32_t hot_pct;     /* memtouch hot-cold: % of accesses hitting the hot 10 %; 0 = default */
};

/* Applied by mv_wl_states_init when put_pct / hot_pct are 0. */
#define MV_WL_DEFAULT_PUT_PCT 70
#define MV_WL_DEFAULT_HOT_PCT 90

/* One vCPU's resumable workload state: small, fixed-size, serializable. */
struct mv_wl_state {
	uint32_t kind;
	uint32_t vcpu;
	struct mv_wl_params p;   /* per-vCPU share of rate and wss already applied */
	uint64_t seed;           /* p.seed mixed with the vcpu index */
	uint64_t gpa_base;       /* this vCPU's slice of guest RAM */
	uint64_t gpa_len;
	uint64_t ops_done;       /* completed ops; an op is atomic w.r.t. pause */
	uint64_t aux[4];         /* workload-private (e.g. kvstore live count) */
};

struct mv_wl_ops {
	const char *name;
	/* Prepares guest RAM for a fresh start (ops_done = 0). */
	int (*init)(struct mv_wl_state *st, struct mv_guest_mem *m, struct mv_error **err);
	/* Runs up to max_ops ops; returns the number done (>= 0) or -errno. */
	int64_t (*step)(struct mv_wl_state *st, struct mv_guest_mem *m, uint64_t max_ops);
	/* Checks guest RAM is exactly what ops_done ops must have left. */
	int (*verify)(const struct mv_wl_state *st, struct mv_guest_mem *m, struct mv_error **err);
};

const struct mv_wl_ops *mv_wl_ops_of(uint32_t kind);   /* NULL for unknown */
const char *mv_wl_kind_name(uint32_t kind);
int mv_wl_kind_parse(const char *name);                  /* -1 if unknown */
const char *mv_wl_pattern_name(uint32_t pattern);
int mv_wl_pattern_parse(const char *name);
/* Validates params against a VM of ram_size bytes and nvcpus: kind, pattern,
 * 0 < wss <= ram with at least a 4 KiB page per vCPU, rate 0 or >= nvcpus,
 * put_pct and hot_pct <= 100 (idle checks only kind and nvcpus). Errors name
 * the field: "workload.kind", "workload.wss", "workload.rate", ... */
int mv_wl_params_validate(const struct mv_wl_params *p, uint64_t ram_size, uint32_t nvcpus,
			  struct mv_error **err) MV_MUST_CHECK;
/* Splits the VM's workload into per-vCPU states over disjoint slices of guest
 * RAM (wss/nvcpus rounded down to pages, each inside one region, never in
 * the 3G-4G hole), per-vCPU seeds and rate shares. Validates p first; fails
 * with -ENOSPC ("workload.wss") when the slices do not fit the regions.
 * Call ops->init on each state before the first run. */
int mv_wl_states_init(const struct mv_wl_params *p, const struct mv_mem_layout *l, uint32_t nvcpus,
		      struct mv_wl_state *states, struct mv_error **err) MV_MUST_CHECK;

/* Execution backend: how a vCPU executes guest code. The built-in "native"
 * backend runs workload steps as host code on guest RAM; a KVM backend would
 * enter the guest with KVM_RUN instead. */
struct mv_exec_backend {
	const char *name;
	/* Runs the vCPU for up to max_ops units; returns units done or -errno. */
	int64_t (*run)(struct mv_wl_state *st, struct mv_guest_mem *m, uint64_t max_ops);
};
const struct mv_exec_backend *mv_exec_native(void);

/* The vCPU threads of one VM. */
struct mv_vcpus;

struct mv_vcpus_stats {
	uint64_t ops_done;       /* sum over vCPUs */
	uint32_t running;        /* vCPUs not parked */
	uint64_t throttle_pct;   /* 0..99: share of time vCPUs are held back */
	uint64_t aux[4];         /* workload results (state aux), summed over vCPUs */
};

/* Starts n vCPU threads, each running states[i] (copied). With start_paused
 * the threads park before their first op. m and be must outlive the handle.
 * The threads block all signals. Control calls (pause, resume, stop,
 * get_states, verify) are serialized internally; get_stats and paused are
 * cheap and callable from any thread. */
int mv_vcpus_start(struct mv_guest_mem *m, const struct mv_exec_backend *be,
		   const struct mv_wl_state *states, uint32_t n, bool start_paused,
		   struct mv_vcpus **out, struct mv_error **err) MV_MUST_CHECK;
/* Parks every vCPU between two ops and returns once all are parked. */
void mv_vcpus_pause(struct mv_vcpus *v);
void mv_vcpus_resume(struct mv_vcpus *v);
/* Joins the threads (pausing first); frees v. */
void mv_vcpus_stop(struct mv_vcpus *v);
bool mv_vcpus_paused(const struct mv_vcpus *v);
/* Copies the current states; pauses around the copy when running, so the
 * copy is always consistent (use it while paused for a state that stays current). */
void mv_vcpus_get_states(struct mv_vcpus *v, struct mv_wl_state *states);
void mv_vcpus_get_stats(struct mv_vcpus *v, struct mv_vcpus_stats *out);
/* Throttles vCPUs to (100 - pct)% of their speed (auto-converge); 0 = off,
 * capped at 99. Full-speed vCPUs sleep pct% of each 10 ms slice; paced vCPUs
 * get their rate scaled by (100 - pct)%. */
void mv_vcpus_set_throttle(struct mv_vcpus *v, unsigned pct);
/* Verifies every vCPU's workload; pauses around the check when running.
 * Returns 0 when all match, -EIO with a message naming the first bad page/key. */
int mv_vcpus_verify(struct mv_vcpus *v, struct mv_error **err) MV_MUST_CHECK;

#endif
