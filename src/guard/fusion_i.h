/* Private pieces of the fusion library (src/guard/): the u64 hash map
 * (u64map.c) the scanner (fusion.c) indexes pages with. */
#ifndef MV_GUARD_FUSION_I_H
#define MV_GUARD_FUSION_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Keys must be non-zero (0 marks an empty slot). Zero-initialised is empty. */
struct u64map {
	uint64_t *k, *v;
	size_t cap, n;
};

bool u64map_get(const struct u64map *m, uint64_t k, uint64_t *v);
void u64map_put(struct u64map *m, uint64_t k, uint64_t v);
bool u64map_del(struct u64map *m, uint64_t k);
void u64map_clear(struct u64map *m);
void u64map_free(struct u64map *m);

#endif
