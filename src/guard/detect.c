/* The side-channel guard's detection logic (see include/memvisor/guard.h):
 * names, the policy and its validation, and the two windows that turn raw
 * signals into a suspect: fresh cross-VM copy-on-write breaks over time
 * (a dedup write-prober breaks many pages right after they were fused) and
 * the trapped-window history of a co-resident page (a Flush+Reload attacker
 * reloads it all the time). Pure: the daemon feeds it what the VMMs report,
 * tests feed it numbers. */
#include <errno.h>
#include <string.h>
#include <xxhash.h>
#include "memvisor/guard.h"

static const char *const sig_names[MV_SIG__COUNT] = {"write_probe", "sampled_access", "deny_hash"};
static const char *const act_names[MV_ACT__COUNT] = {"log", "unfuse", "throttle", "pause", "stop",
							  "move"};

const char *mv_guard_signal_name(unsigned s)
{
	return s < MV_SIG__COUNT ? sig_names[s] : "unknown";
}

int mv_guard_signal_parse(const char *s)
{
	for (int i = 0; s && i < MV_SIG__COUNT; i++)
		if (!strcmp(s, sig_names[i]))
			return i;
	return -1;
}

const char *mv_guard_action_name(unsigned a)
{
	return a < MV_ACT__COUNT ? act_names[a] : "unknown";
}

int mv_guard_action_parse(const char *s)
{
	for (int i = 0; s && i < MV_ACT__COUNT; i++)
		if (!strcmp(s, act_names[i]))
			return i;
	return -1;
}

void mv_guard_policy_default(struct mv_guard_policy *p)
{
	memset(p, 0, sizeof(*p));
	p->detect = true;
	p->action = MV_ACT_UNFUSE;
	p->throttle_pct = 90;
	p->wp_min_pages = 32;
	p->wp_fresh_ms = 10000;
	p->wp_window_ms = 10;
	p->wp_min_pct = 50;
	p->sa_windows = 10;
	p->sa_min_pct = 70;
}

int mv_guard_policy_check(const struct mv_guard_policy *p, struct mv_error **err)
{
	if ((unsigned)p->action >= MV_ACT__COUNT)
		return mv_err_field(err, -EINVAL, "action", "unknown action %u", p->action);
	if (p->throttle_pct < 1 || p->throttle_pct > 99)
		return mv_err_field(err, -EINVAL, "throttle_pct", "throttle_pct must be 1..99, got %u",
				    p->throttle_pct);
	if (p->wp_min_pages < 2 || p->wp_min_pages > 1000000)
		return mv_err_field(err, -EINVAL, "write_probe.min_pages",
				    "write_probe.min_pages must be 2..1000000, got %u", p->wp_min_pages);
	if (p->wp_fresh_ms < 100 || p->wp_fresh_ms > 3600000)
		return mv_err_field(err, -EINVAL, "write_probe.fresh_ms",
				    "write_probe.fresh_ms must be 100..3600000, got %u", p->wp_fresh_ms);
	if (p->wp_window_ms < 1 || p->wp_window_ms > 600000)
		return mv_err_field(err, -EINVAL, "write_probe.window_ms",
				    "write_probe.window_ms must be 1..600000, got %u", p->wp_window_ms);
	if (p->wp_min_pct > 100)
		return mv_err_field(err, -EINVAL, "write_probe.min_pct",
				    "write_probe.min_pct must be 0..100, got %u", p->wp_min_pct);
	if (p->sa_windows < 2 || p->sa_windows > 64)
		return mv_err_field(err, -EINVAL, "sampled_access.windows",
				    "sampled_access.windows must be 2..64, got %u", p->sa_windows);
	if (p->sa_min_pct < 1 || p->sa_min_pct > 100)
		return mv_err_field(err, -EINVAL, "sampled_access.min_pct",
				    "sampled_access.min_pct must be 1..100, got %u", p->sa_min_pct);
	if (p->ndeny > MV_GUARD_DENY_MAX)
		return mv_err_field(err, -EINVAL, "deny", "at most %d deny entries, got %u",
				    MV_GUARD_DENY_MAX, p->ndeny);
	for (uint32_t i = 0; i < p->ndeny; i++) {
		const struct mv_guard_deny *d = &p->deny[i];
		size_t len = strnlen(d->name, sizeof(d->name));
		if (len == 0 || len > MV_GUARD_NAME_MAX)
			return mv_err_field(err, -EINVAL, "deny.name",
					    "deny entry %u: name must be 1..%d characters", i,
					    MV_GUARD_NAME_MAX);
		for (size_t k = 0; k < len; k++)
			if ((unsigned char)d->name[k] < 0x20 || d->name[k] == 0x7f)
				return mv_err_field(err, -EINVAL, "deny.name",
						    "deny entry %u: control character in name", i);
		for (uint32_t j = 0; j < i; j++)
			if (p->deny[j].xxh3 == d->xxh3)
				return mv_err_field(err, -EINVAL, "deny.xxh3",
						    "deny entry %u repeats hash %016llx", i,
						    (unsigned long long)d->xxh3);
	}
	return 0;
}

uint64_t mv_guard_page_hash(const void *page)
{
	uint64_t h = XXH3_64bits(page, 4096);
	return h ? h : 1;   /* as src/guard/fusion.c files it */
}

const struct mv_guard_deny *mv_guard_denied(const struct mv_guard_policy *p, uint64_t xxh3)
{
	for (uint32_t i = 0; i < p->ndeny && i < MV_GUARD_DENY_MAX; i++)
		if (p->deny[i].xxh3 == xxh3)
			return &p->deny[i];
	return NULL;
}

void mv_guard_wprobe_reset(struct mv_guard_wprobe *w)
{
	memset(w, 0, sizeof(*w));
}

bool mv_guard_wprobe_add(struct mv_guard_wprobe *w, const struct mv_guard_policy *p,
			 uint64_t at_ms, uint32_t n, uint64_t *count, uint64_t *first_ms)
{
	uint32_t last = (w->head + w->used + MV_GUARD_WP_SLOTS - 1) % MV_GUARD_WP_SLOTS;
	if (n && w->used && w->at_ms[last] == at_ms) {
		w->n[last] += n;   /* a burst: many breaks in one millisecond */
	} else if (n) {
		/* A full ring drops its oldest entry: the window is short. */
		uint32_t slot = (w->head + w->used) % MV_GUARD_WP_SLOTS;
		if (w->used == MV_GUARD_WP_SLOTS) {
			w->head = (w->head + 1) % MV_GUARD_WP_SLOTS;
			w->used--;
		}
		w->at_ms[slot] = at_ms;
		w->n[slot] = n;
		w->used++;
	}
	uint64_t from = at_ms >= p->wp_window_ms ? at_ms - p->wp_window_ms + 1 : 0;
	while (w->used && w->at_ms[w->head] < from) {
		w->head = (w->head + 1) % MV_GUARD_WP_SLOTS;
		w->used--;
	}
	uint64_t c = 0, first = UINT64_MAX;
	for (uint32_t i = 0; i < w->used; i++) {
		uint32_t s = (w->head + i) % MV_GUARD_WP_SLOTS;
		c += w->n[s];
		first = w->at_ms[s] < first ? w->at_ms[s] : first;
	}
	*count = c;
	*first_ms = c ? first : at_ms;
	return c >= p->wp_min_pages;
}

bool mv_guard_sampled_add(struct mv_guard_sampled *s, const struct mv_guard_policy *p,
			  bool touched, uint32_t *hits)
{
	s->bits = s->bits << 1 | (touched ? 1 : 0);
	if (s->windows < 64)
		s->windows++;
	uint64_t mask = p->sa_windows >= 64 ? ~0ULL : (1ULL << p->sa_windows) - 1;
	*hits = (uint32_t)__builtin_popcountll(s->bits & mask);
	return s->windows >= p->sa_windows && *hits * 100 >= p->sa_min_pct * p->sa_windows;
}
