/* Workload registry: kind and pattern names, parameter validation and the
 * split of a VM's workload into per-vCPU states (slices of guest RAM, seeds,
 * rate shares). Used by memvisor-vmm at VM setup and by the unit tests. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include "memvisor/vm.h"
#include "prng.h"
#include "vm_i.h"

static const char *const kind_names[MV_WL__COUNT] = {"idle", "memtouch", "kvstore",
								"secret", "writeprobe", "flushreload"};
static const char *const pattern_names[MV_PAT__COUNT] = {"seq", "random", "hotcold"};

const struct mv_wl_ops *mv_wl_ops_of(uint32_t kind)
{
	switch (kind) {
	case MV_WL_IDLE:
		return &mv_wl_idle_ops;
	case MV_WL_MEMTOUCH:
		return &mv_wl_memtouch_ops;
	case MV_WL_KVSTORE:
		return &mv_wl_kvstore_ops;
	case MV_WL_SECRET:
		return &mv_wl_secret_ops;
	case MV_WL_WRITEPROBE:
		return &mv_wl_writeprobe_ops;
	case MV_WL_FLUSHRELOAD:
		return &mv_wl_flushreload_ops;
	default:
		return NULL;
	}
}

const char *mv_wl_kind_name(uint32_t kind)
{
	return kind < MV_WL__COUNT ? kind_names[kind] : "unknown";
}

int mv_wl_kind_parse(const char *name)
{
	for (int i = 0; name && i < MV_WL__COUNT; i++)
		if (strcmp(name, kind_names[i]) == 0)
			return i;
	return -1;
}

const char *mv_wl_pattern_name(uint32_t pattern)
{
	return pattern < MV_PAT__COUNT ? pattern_names[pattern] : "unknown";
}

int mv_wl_pattern_parse(const char *name)
{
	if (name && strcmp(name, "hot-cold") == 0)
		return MV_PAT_HOTCOLD;
	for (int i = 0; name && i < MV_PAT__COUNT; i++)
		if (strcmp(name, pattern_names[i]) == 0)
			return i;
	return -1;
}

int mv_wl_params_validate(const struct mv_wl_params *p, uint64_t ram_size, uint32_t nvcpus,
			  struct mv_error **err)
{
	if (nvcpus == 0 || nvcpus > MV_MAX_VCPUS)
		return mv_err_field(err, -EINVAL, "vcpus", "vcpus must be 1..%d, got %u",
				    MV_MAX_VCPUS, nvcpus);
	if (p->kind >= MV_WL__COUNT)
		return mv_err_field(err, -EINVAL, "workload.kind",
				    "unknown workload kind %u (idle, memtouch, kvstore, secret, writeprobe, flushreload)", p->kind);
	if (p->kind == MV_WL_IDLE)
		return 0;
	if (p->pattern >= MV_PAT__COUNT)
		return mv_err_field(err, -EINVAL, "workload.pattern",
				    "unknown pattern %u (seq, random, hotcold)", p->pattern);
	if (p->wss_bytes == 0 || p->wss_bytes > ram_size)
		return mv_err_field(err, -EINVAL, "workload.wss",
				    "working set of %llu bytes must be > 0 and <= guest RAM (%llu)",
				    (unsigned long long)p->wss_bytes, (unsigned long long)ram_size);
	/* Every vCPU needs a page of its own (kvstore: header + 63 buckets). */
	if (p->wss_bytes / nvcpus < MV_WL_PAGE)
		return mv_err_field(err, -EINVAL, "workload.wss",
				    "working set of %llu bytes is less than one 4 KiB page per vCPU (%u)",
				    (unsigned long long)p->wss_bytes, nvcpus);
	/* A vCPU with a zero share would run unlimited. */
	if (p->rate != 0 && p->rate < nvcpus)
		return mv_err_field(err, -EINVAL, "workload.rate",
				    "rate %llu/s is below one op/s per vCPU (%u); use 0 for unlimited",
				    (unsigned long long)p->rate, nvcpus);
	/* The attack workloads pace themselves (rounds), and need a few pages. */
	bool attack = p->kind >= MV_WL_SECRET;
	if (attack && p->rate != 0)
		return mv_err_field(err, -EINVAL, "workload.rate",
				    "%s runs in rounds of its own; rate must be 0", kind_names[p->kind]);
	if (attack && (nvcpus != 1 || p->wss_bytes < 4 * MV_WL_PAGE))
		return mv_err_field(err, -EINVAL, "workload.wss",
				    "%s needs 1 vCPU and at least 4 pages of working set",
				    kind_names[p->kind]);
	if (p->put_pct > 100)
		return mv_err_field(err, -EINVAL, "workload.put_pct",
				    "put_pct %u is over 100", p->put_pct);
	if (p->hot_pct > 100)
		return mv_err_field(err, -EINVAL, "workload.hot_pct",
				    "hot_pct %u is over 100", p->hot_pct);
	return 0;
}

/* Places a slice of len bytes at or after (*ri, *off) inside one region and
 * outside the 3G-4G hole; advances the cursor past it. */
static int place_slice(const struct mv_mem_layout *l, uint64_t len, unsigned *ri, uint64_t *off,
		       uint64_t *gpa)
{
	for (; *ri < l->n; (*ri)++, *off = 0) {
		const struct mv_mem_region_desc *r = &l->r[*ri];
		uint64_t start = r->gpa + *off, end = r->gpa + r->size;
		if (start < MV_MEM_HIGH_BASE && start + len > MV_MEM_LOW_LIMIT)
			start = MV_MEM_HIGH_BASE;
		if (start >= end || end - start < len)
			continue;
		*gpa = start;
		*off = start + len - r->gpa;
		return 0;
	}
	return -ENOSPC;
}

int mv_wl_states_init(const struct mv_wl_params *p, const struct mv_mem_layout *l, uint32_t nvcpus,
		      struct mv_wl_state *states, struct mv_error **err)
{
	int r = mv_wl_params_validate(p, mv_mem_layout_ram_size(l), nvcpus, err);
	if (r < 0)
		return r;
	uint64_t share = (p->wss_bytes / nvcpus) & ~(MV_WL_PAGE - 1);
	unsigned ri = 0;
	uint64_t off = 0;
	for (uint32_t i = 0; i < nvcpus; i++) {
		struct mv_wl_state *st = &states[i];
		memset(st, 0, sizeof(*st));
		st->kind = p->kind;
		st->vcpu = i;
		st->p = *p;
		st->seed = mv_mix64(p->seed ^ mv_mix64((uint64_t)i + 1));
		if (p->kind == MV_WL_IDLE) {
			st->p.wss_bytes = 0;
			st->p.rate = 0;
			continue;
		}
		if (st->p.put_pct == 0)
			st->p.put_pct = MV_WL_DEFAULT_PUT_PCT;
		if (st->p.hot_pct == 0)
			st->p.hot_pct = MV_WL_DEFAULT_HOT_PCT;
		st->p.wss_bytes = share;
		st->p.rate = p->rate / nvcpus + (i < p->rate % nvcpus);
		st->gpa_len = share;
		if (place_slice(l, share, &ri, &off, &st->gpa_base) < 0)
			return mv_err_field(err, -ENOSPC, "workload.wss",
					    "working set slice %u of %llu bytes does not fit in one "
					    "RAM region", i, (unsigned long long)share);
	}
	return 0;
}

void mv_wl_zero(uint8_t *hva, uint64_t len)
{
	/* MADV_REMOVE frees shared memfd pages; they read back as zeros. */
	if (madvise(hva, len, MADV_REMOVE) == 0)
		return;
	memset(hva, 0, len);
}
