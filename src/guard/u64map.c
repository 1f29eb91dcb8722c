/* A small open-addressing hash map from non-zero u64 keys to u64 values
 * (linear probing, backward-shift deletion: no tombstones). The fusion
 * scanner's content-hash indexes and per-VM fused-page sets use it. */
#include <stdlib.h>
#include <string.h>
#include "fusion_i.h"

static size_t slot_of(const struct u64map *m, uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	return (size_t)k & (m->cap - 1);
}

void u64map_free(struct u64map *m)
{
	free(m->k);
	free(m->v);
	memset(m, 0, sizeof(*m));
}

void u64map_clear(struct u64map *m)
{
	if (m->cap)
		memset(m->k, 0, m->cap * sizeof(*m->k));
	m->n = 0;
}

static void grow(struct u64map *m)
{
	struct u64map old = *m;
	m->cap = old.cap ? old.cap * 2 : 64;
	m->n = 0;
	m->k = calloc(m->cap, sizeof(*m->k));
	m->v = calloc(m->cap, sizeof(*m->v));
	if (!m->k || !m->v)
		abort();
	for (size_t i = 0; i < old.cap; i++)
		if (old.k[i])
			u64map_put(m, old.k[i], old.v[i]);
	free(old.k);
	free(old.v);
}

bool u64map_get(const struct u64map *m, uint64_t k, uint64_t *v)
{
	if (!m->cap)
		return false;
	for (size_t i = slot_of(m, k);; i = (i + 1) & (m->cap - 1)) {
		if (m->k[i] == k) {
			if (v)
				*v = m->v[i];
			return true;
		}
		if (!m->k[i])
			return false;
	}
}

void u64map_put(struct u64map *m, uint64_t k, uint64_t v)
{
	if ((m->n + 1) * 4 > m->cap * 3)   /* keep the load under 3/4 */
		grow(m);
	size_t i = slot_of(m, k);
	while (m->k[i] && m->k[i] != k)
		i = (i + 1) & (m->cap - 1);
	if (!m->k[i])
		m->n++;
	m->k[i] = k;
	m->v[i] = v;
}

bool u64map_del(struct u64map *m, uint64_t k)
{
	if (!m->cap)
		return false;
	size_t i = slot_of(m, k);
	while (m->k[i] != k) {
		if (!m->k[i])
			return false;
		i = (i + 1) & (m->cap - 1);
	}
	/* Shift later members of the probe run back into the gap. */
	for (size_t j = i;;) {
		m->k[i] = 0;
		for (;;) {
			j = (j + 1) & (m->cap - 1);
			if (!m->k[j]) {
				m->n--;
				return true;
			}
			size_t home = slot_of(m, m->k[j]);
			/* Movable when home is not cyclically in (i, j]. */
			if (i <= j ? (home <= i || home > j) : (home <= i && home > j))
				break;
		}
		m->k[i] = m->k[j];
		m->v[i] = m->v[j];
		i = j;
	}
}
