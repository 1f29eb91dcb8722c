/* The kvstore workload: an open-addressing hash table (linear probing,
 * backward-shift deletion, so no tombstones) living in the vCPU's slice of
 * guest RAM. Op i draws a key from (seed, i) out of ~capacity/2 keys and puts
 * it (put_pct %) or deletes it. Values are derived from (seed, key, version)
 * with version a function of i, so verify can rebuild the expected table by
 * replaying op choices only. Used through mv_wl_ops_of(MV_WL_KVSTORE).
 *
 * aux[0] live entries, aux[1] running checksum of ops, aux[2] puts, aux[3] deletes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "prng.h"
#include "vm_i.h"

#define KV_MAGIC 0x31564b5253564d4dULL /* "MMVSRKV1" */
#define KV_LIVE 0x4556494cu           /* "LIVE"; 0 = empty */
#define KV_VAL_WORDS 6
#define KV_VAL_STEP 0xD6E8FEB86659FD93ULL

struct kv_header {
	uint64_t magic;
	uint64_t capacity;
	uint64_t count;
	uint64_t keyspace;
	uint64_t seed;
	uint64_t reserved[3];
};

struct kv_bucket {
	uint64_t key;
	uint32_t version;
	uint32_t flags;
	uint64_t val[KV_VAL_WORDS];
};

_Static_assert(sizeof(struct kv_header) == 64, "header is one cache line");
_Static_assert(sizeof(struct kv_bucket) == 64, "bucket is one cache line");

struct kv_geom {
	uint64_t cap;
	uint64_t keys;
};

static struct kv_geom geom_of(const struct mv_wl_state *st)
{
	struct kv_geom g = {0, 0};
	if (st->gpa_len >= sizeof(struct kv_header) + sizeof(struct kv_bucket)) {
		g.cap = (st->gpa_len - sizeof(struct kv_header)) / sizeof(struct kv_bucket);
		g.keys = g.cap / 2 ? g.cap / 2 : 1;
	}
	return g;
}

struct kv_op {
	uint64_t key;
	uint32_t version;
	bool put;
};

/* The choice op i makes: a pure function of (seed, i). */
static struct kv_op op_of(const struct mv_wl_state *st, const struct kv_geom *g, uint64_t i)
{
	uint64_t r = mv_prng_at(st->seed ^ MV_STREAM_KEY, i);
	struct kv_op o;
	o.key = mv_prng_below(r, g->keys);
	o.put = mv_prng_below(mv_mix64(r), 100) < st->p.put_pct;
	/* Never 0, which the verifier's shadow uses for "absent". */
	o.version = (uint32_t)(i % 0xFFFFFFFFull) + 1;
	return o;
}

static uint64_t op_sum(const struct kv_op *o)
{
	return mv_mix64(o->key * MV_GOLDEN ^ ((uint64_t)o->version << 1 | o->put));
}

static uint64_t home_of(const struct mv_wl_state *st, const struct kv_geom *g, uint64_t key)
{
	return mv_prng_below(mv_mix64(st->seed ^ MV_STREAM_HASH ^ key * MV_GOLDEN), g->cap);
}

static uint64_t val_base(const struct mv_wl_state *st, uint64_t key, uint32_t version)
{
	return mv_mix3(st->seed ^ MV_STREAM_FILL, key, version);
}

static void fill_value(struct kv_bucket *b, const struct mv_wl_state *st)
{
	uint64_t v = val_base(st, b->key, b->version);
	for (unsigned j = 0; j < KV_VAL_WORDS; j++)
		b->val[j] = v + j * KV_VAL_STEP;
}

/* Slot holding key, or the empty slot ending its probe sequence (*found false). */
static uint64_t probe(const struct mv_wl_state *st, const struct kv_geom *g,
		      const struct kv_bucket *t, uint64_t key, bool *found)
{
	uint64_t s = home_of(st, g, key);
	for (uint64_t n = 0; n < g->cap; n++) {
		if (t[s].flags != KV_LIVE) {
			*found = false;
			return s;
		}
		if (t[s].key == key) {
			*found = true;
			return s;
		}
		s = s + 1 == g->cap ? 0 : s + 1;
	}
	*found = false; /* full: cannot happen with at most cap/2 keys */
	return g->cap;
}

/* Backward-shift deletion: pulls later entries of the cluster into the hole
 * so every key stays reachable from its home without tombstones. */
static void remove_slot(const struct mv_wl_state *st, const struct kv_geom *g,
			struct kv_bucket *t, uint64_t hole)
{
	uint64_t j = hole;
	for (;;) {
		j = j + 1 == g->cap ? 0 : j + 1;
		if (t[j].flags != KV_LIVE)
			break;
		uint64_t h = home_of(st, g, t[j].key);
		/* Movable when its home is not cyclically inside (hole, j]. */
		bool inside = hole <= j ? (hole < h && h <= j) : (hole < h || h <= j);
		if (inside)
			continue;
		t[hole] = t[j];
		hole = j;
	}
	memset(&t[hole], 0, sizeof(t[hole]));
}

static int kv_init(struct mv_wl_state *st, struct mv_guest_mem *m, struct mv_error **err)
{
	uint8_t *hva = mv_wl_slice(st, m);
	struct kv_geom g = geom_of(st);
	if (!hva || g.cap == 0)
		return mv_err(err, -EFAULT, "vcpu %u: slice gpa 0x%llx+0x%llx is not mapped guest RAM",
			      st->vcpu, (unsigned long long)st->gpa_base,
			      (unsigned long long)st->gpa_len);
	mv_wl_zero(hva, st->gpa_len);
	struct kv_header *h = (struct kv_header *)hva;
	h->magic = KV_MAGIC;
	h->capacity = g.cap;
	h->count = 0;
	h->keyspace = g.keys;
	h->seed = st->seed;
	st->ops_done = 0;
	memset(st->aux, 0, sizeof(st->aux));
	return 0;
}

static int64_t kv_step(struct mv_wl_state *st, struct mv_guest_mem *m, uint64_t max_ops)
{
	uint8_t *hva = mv_wl_slice(st, m);
	struct kv_geom g = geom_of(st);
	if (!hva || g.cap == 0)
		return -EFAULT;
	struct kv_header *h = (struct kv_header *)hva;
	struct kv_bucket *t = (struct kv_bucket *)(h + 1);
	if (h->magic != KV_MAGIC || h->capacity != g.cap)
		return -EUCLEAN;
	struct kv_op o, next = op_of(st, &g, st->ops_done);
	for (uint64_t k = 0; k < max_ops; k++) {
		o = next;
		/* Probes miss the cache on big tables: fetch the next home early. */
		next = op_of(st, &g, st->ops_done + 1);
		__builtin_prefetch(&t[home_of(st, &g, next.key)], 1);
		bool found;
		uint64_t s = probe(st, &g, t, o.key, &found);
		if (o.put) {
			if (s == g.cap)
				return -ENOSPC;
			if (!found) {
				h->count++;
				st->aux[0]++;
			}
			t[s].key = o.key;
			t[s].version = o.version;
			t[s].flags = KV_LIVE;
			fill_value(&t[s], st);
			st->aux[2]++;
		} else {
			if (found) {
				remove_slot(st, &g, t, s);
				h->count--;
				st->aux[0]--;
			}
			st->aux[3]++;
		}
		st->aux[1] += op_sum(&o);
		st->ops_done++;
	}
	return (int64_t)max_ops;
}

/* Replays op choices into shadow[key] = version (0 = absent); checks aux. */
static int replay(const struct mv_wl_state *st, const struct kv_geom *g, uint32_t *shadow,
		  uint64_t *live, struct mv_error **err)
{
	uint64_t n = 0, sum = 0, puts = 0;
	for (uint64_t i = 0; i < st->ops_done; i++) {
		struct kv_op o = op_of(st, g, i);
		if (o.put) {
			n += shadow[o.key] == 0;
			shadow[o.key] = o.version;
			puts++;
		} else {
			n -= shadow[o.key] != 0;
			shadow[o.key] = 0;
		}
		sum += op_sum(&o);
	}
	*live = n;
	if (st->aux[0] != n || st->aux[1] != sum || st->aux[2] != puts ||
	    st->aux[3] != st->ops_done - puts)
		return mv_err(err, -EIO, "vcpu %u: kvstore counters (live %llu, checksum 0x%llx) "
			      "disagree with %llu replayed ops (live %llu, checksum 0x%llx)",
			      st->vcpu, (unsigned long long)st->aux[0],
			      (unsigned long long)st->aux[1], (unsigned long long)st->ops_done,
			      (unsigned long long)n, (unsigned long long)sum);
	return 0;
}

static bool bucket_empty(const struct kv_bucket *b)
{
	const uint64_t *w = (const uint64_t *)b;
	for (size_t j = 0; j < sizeof(*b) / 8; j++)
		if (w[j])
			return false;
	return true;
}

static int check_bucket(const struct mv_wl_state *st, const struct kv_geom *g,
			const struct kv_bucket *t, uint64_t s, const uint32_t *shadow,
			uint8_t *seen, struct mv_error **err)
{
	const struct kv_bucket *b = &t[s];
	unsigned long long gpa = st->gpa_base + sizeof(struct kv_header) + s * sizeof(*b);
	if (b->flags != KV_LIVE) {
		if (bucket_empty(b))
			return 0;
		return mv_err(err, -EIO, "vcpu %u kvstore slot %llu (gpa 0x%llx): garbage in empty slot",
			      st->vcpu, (unsigned long long)s, gpa);
	}
	unsigned long long key = b->key;
	if (b->key >= g->keys || shadow[b->key] == 0)
		return mv_err(err, -EIO, "vcpu %u kvstore key %llu (slot gpa 0x%llx): present but "
			      "should be absent", st->vcpu, key, gpa);
	if (seen[b->key])
		return mv_err(err, -EIO, "vcpu %u kvstore key %llu (slot gpa 0x%llx): duplicate",
			      st->vcpu, key, gpa);
	seen[b->key] = 1;
	if (b->version != shadow[b->key])
		return mv_err(err, -EIO, "vcpu %u kvstore key %llu (slot gpa 0x%llx): version %u "
			      "expected %u", st->vcpu, key, gpa, b->version, shadow[b->key]);
	uint64_t v = val_base(st, b->key, b->version);
	for (unsigned j = 0; j < KV_VAL_WORDS; j++)
		if (b->val[j] != v + j * KV_VAL_STEP)
			return mv_err(err, -EIO, "vcpu %u kvstore key %llu (slot gpa 0x%llx): value "
				      "differs at byte %u", st->vcpu, key, gpa, 16 + j * 8);
	/* Lookups stop at the first empty slot: the key must be reachable. */
	for (uint64_t p = home_of(st, g, b->key); p != s; p = p + 1 == g->cap ? 0 : p + 1)
		if (t[p].flags != KV_LIVE)
			return mv_err(err, -EIO, "vcpu %u kvstore key %llu (slot gpa 0x%llx): "
				      "unreachable from its home slot", st->vcpu, key, gpa);
	return 0;
}

static int kv_verify(const struct mv_wl_state *st, struct mv_guest_mem *m, struct mv_error **err)
{
	const uint8_t *hva = mv_wl_slice(st, m);
	struct kv_geom g = geom_of(st);
	if (st->kind != MV_WL_KVSTORE || !hva || g.cap == 0)
		return mv_err(err, -EIO, "vcpu %u: kvstore state is corrupt (kind %u, slice 0x%llx+0x%llx)",
			      st->vcpu, st->kind, (unsigned long long)st->gpa_base,
			      (unsigned long long)st->gpa_len);
	const struct kv_header *h = (const struct kv_header *)hva;
	const struct kv_bucket *t = (const struct kv_bucket *)(h + 1);
	if (h->magic != KV_MAGIC || h->capacity != g.cap || h->keyspace != g.keys ||
	    h->seed != st->seed || h->reserved[0] || h->reserved[1] || h->reserved[2])
		return mv_err(err, -EIO, "vcpu %u kvstore header at gpa 0x%llx is corrupt", st->vcpu,
			      (unsigned long long)st->gpa_base);
	uint32_t *shadow = calloc(g.keys, sizeof(*shadow));
	uint8_t *seen = calloc(g.keys, 1);
	int r = -ENOMEM;
	uint64_t live = 0;
	if (!shadow || !seen) {
		mv_err(err, r, "vcpu %u: no memory for a %llu-key shadow", st->vcpu,
		       (unsigned long long)g.keys);
		goto out;
	}
	r = replay(st, &g, shadow, &live, err);
	if (r < 0)
		goto out;
	/* Entries first, so a lost or stale entry is named by its key. */
	for (uint64_t s = 0; s < g.cap && r == 0; s++)
		r = check_bucket(st, &g, t, s, shadow, seen, err);
	for (uint64_t k = 0; k < g.keys && r == 0; k++)
		if (shadow[k] && !seen[k])
			r = mv_err(err, -EIO, "vcpu %u kvstore key %llu (version %u): missing",
				   st->vcpu, (unsigned long long)k, shadow[k]);
	if (r == 0 && h->count != live)
		r = mv_err(err, -EIO, "vcpu %u kvstore: header count %llu expected %llu", st->vcpu,
			   (unsigned long long)h->count, (unsigned long long)live);
	/* Slack after the last bucket must stay zero too. */
	uint64_t used = sizeof(*h) + g.cap * sizeof(*t);
	for (uint64_t o = used; o < st->gpa_len && r == 0; o++)
		if (hva[o])
			r = mv_err(err, -EIO, "vcpu %u kvstore: garbage after the table at gpa 0x%llx",
				   st->vcpu, (unsigned long long)(st->gpa_base + o));
out:
	free(shadow);
	free(seen);
	return r;
}

const struct mv_wl_ops mv_wl_kvstore_ops = {
	.name = "kvstore",
	.init = kv_init,
	.step = kv_step,
	.verify = kv_verify,
};
