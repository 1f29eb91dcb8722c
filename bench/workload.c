/* bench-workload: speed of the workloads run natively (one vCPU, rate 0,
 * step() called in a loop as the vCPU thread does), against anchors measured
 * in the same run on the same guest RAM: memset of whole 4 KiB pages (for
 * memtouch) and 64-byte stores to random buckets (for kvstore). Also times
 * verify. Prints one JSON object on stdout.
 * Usage: bench-workload [--quick] [--wss 64M] */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/mem.h"
#include "memvisor/util.h"
#include "memvisor/vm.h"

#define BATCH 64

struct run {
	double ops_s, verify_ms;
	bool verified;
};

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static int run_workload(struct mv_guest_mem *m, const struct mv_mem_layout *l,
			const struct mv_wl_params *p, double secs, struct run *out)
{
	struct mv_wl_state st;
	struct mv_error *e = NULL;
	const struct mv_wl_ops *ops = mv_wl_ops_of(p->kind);
	int r = mv_wl_states_init(p, l, 1, &st, &e);
	if (r == 0)
		r = ops->init(&st, m, &e);
	if (r < 0) {
		fprintf(stderr, "bench-workload: %s\n", mv_error_msg(e, r));
		mv_error_free(e);
		return r;
	}
	/* Warm up: fault the slice in so the figure is the steady state. */
	if (ops->step(&st, m, st.gpa_len / 4096) < 0)
		return -EIO;
	uint64_t t0 = mv_now_ns(), end = t0 + (uint64_t)(secs * 1e9), n0 = st.ops_done, now;
	do {
		for (int k = 0; k < 16; k++)
			if (ops->step(&st, m, BATCH) < 0)
				return -EIO;
		now = mv_now_ns();
	} while (now < end);
	out->ops_s = (double)(st.ops_done - n0) * 1e9 / (double)(now - t0);
	t0 = mv_now_ns();
	r = ops->verify(&st, m, &e);
	out->verify_ms = (double)(mv_now_ns() - t0) / 1e6;
	out->verified = r == 0;
	if (r < 0) {
		fprintf(stderr, "bench-workload: verify: %s\n", mv_error_msg(e, r));
		mv_error_free(e);
	}
	return 0;
}

/* Writes of `unit` bytes at random unit-aligned offsets of [hva, hva+len). */
static double anchor_writes(uint8_t *hva, uint64_t len, size_t unit, double secs)
{
	uint64_t rng = 0x9E3779B97F4A7C15ULL, n = 0, units = len / unit, now;
	uint64_t t0 = mv_now_ns(), end = t0 + (uint64_t)(secs * 1e9);
	do {
		for (int k = 0; k < 16 * BATCH; k++, n++)
			memset(hva + (xorshift(&rng) % units) * unit, (int)n, unit);
		now = mv_now_ns();
	} while (now < end);
	return (double)n * 1e9 / (double)(now - t0);
}

int main(int argc, char **argv)
{
	double secs = 1.0;
	uint64_t wss = 64ULL << 20;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--quick") == 0)
			secs = 0.3;
		else if (strcmp(argv[i], "--wss") == 0 && i + 1 < argc &&
			 mv_parse_size(argv[i + 1], &wss) == 0)
			i++;
		else {
			fprintf(stderr, "usage: bench-workload [--quick] [--wss 64M]\n");
			return 2;
		}
	}
	struct mv_mem_layout l;
	struct mv_guest_mem *m;
	struct mv_error *e = NULL;
	int r = mv_mem_layout_create(wss + (1ULL << 20), "bench-workload", MV_MEM_BACKING_AUTO, &l, &e);
	if (r == 0)
		r = mv_guest_mem_map(&l, &m, &e);
	if (r < 0) {
		fprintf(stderr, "bench-workload: %s\n", mv_error_msg(e, r));
		return 1;
	}
	static const uint32_t pats[] = {MV_PAT_SEQ, MV_PAT_RANDOM, MV_PAT_HOTCOLD};
	struct run mt[3], kv;
	for (int i = 0; i < 3; i++) {
		struct mv_wl_params p = {.kind = MV_WL_MEMTOUCH, .pattern = pats[i], .seed = 7,
					 .wss_bytes = wss};
		if (run_workload(m, &l, &p, secs, &mt[i]) < 0)
			return 1;
	}
	struct mv_wl_params kp = {.kind = MV_WL_KVSTORE, .seed = 7, .wss_bytes = wss};
	if (run_workload(m, &l, &kp, secs, &kv) < 0)
		return 1;
	uint8_t *hva = mv_gpa_to_hva(m, 0, wss);
	double page_anchor = anchor_writes(hva, wss, 4096, secs);
	double bucket_anchor = anchor_writes(hva, wss, 64, secs);

	printf("{\"bench\":\"workload\",\"wss_bytes\":%llu,\"seconds\":%.1f,\n",
	       (unsigned long long)wss, secs);
	printf(" \"anchor\":{\"memset_4k_pages_per_s\":%.0f,\"store_64b_random_per_s\":%.0f},\n",
	       page_anchor, bucket_anchor);
	printf(" \"memtouch\":{");
	for (int i = 0; i < 3; i++)
		printf("%s\"%s\":{\"ops_per_s\":%.0f,\"ratio_to_anchor\":%.3f,\"verify_ms\":%.1f,"
		       "\"verified\":%s}", i ? "," : "", mv_wl_pattern_name(pats[i]), mt[i].ops_s,
		       mt[i].ops_s / page_anchor, mt[i].verify_ms, mt[i].verified ? "true" : "false");
	printf("},\n \"kvstore\":{\"ops_per_s\":%.0f,\"ratio_to_anchor\":%.3f,\"verify_ms\":%.1f,"
	       "\"verified\":%s}}\n", kv.ops_s, kv.ops_s / bucket_anchor, kv.verify_ms,
	       kv.verified ? "true" : "false");
	mv_guest_mem_unmap(m);
	mv_mem_layout_close(&l);
	bool ok = kv.verified && mt[0].verified && mt[1].verified && mt[2].verified;
	return ok ? 0 : 1;
}
