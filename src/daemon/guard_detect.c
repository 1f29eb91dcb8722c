/* memvisord's side-channel guard, detection and response. Signals: the
 * write probe (fuse_call in fusion.c hands over every FUSE reply's broken
 * pages: a break counts when another VM shared the page and it had been
 * fused less than fresh_ms), sampled accesses (the VMM runs short trapped
 * windows on the pages of each VM that share another tenant's sensitive
 * range, the list from the guard's check; a thread of fusion.c collects them
 * every SAMPLE_MS: SAMPLE), and the deny list (known probe pages by content hash, checked with
 * the co-residency check). A detection is an event (kept for GET
 * /v1/guard/events, counted in /metrics, logged) and queues the policy's
 * response, applied at the end of the tick (the fusion thread may be in the
 * middle of a VM's batch): unfuse (copy back and exclude the suspect from
 * fusion), throttle, pause or stop the suspect, or move the victim's
 * sensitive ranges to fresh frames (guard_move()). Lock held throughout (the
 * manager's). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "memvisor/util.h"
#include "daemon_i.h"

#define EVENTS_MAX 256
#define CALL_MS 5000
/* Sampled-access windows, run by the VMM back to back; the daemon collects
 * them every SAMPLE_MS (fusion.c). Short windows let a steady prober fill
 * the rule's windows in tens of ms; a benign guest touching the page now and
 * then leaves most of them empty. */
#define SAMPLE_WINDOW_US 1000

struct detect {
	struct mv_guard_policy pol;
	struct mv_guard_event_info ev[EVENTS_MAX];   /* ring */
	size_t nev, head;
	uint64_t next_id;
	uint64_t count[MV_SIG__COUNT][MV_ACT__COUNT];
	uint64_t windows, trapped;                   /* SAMPLE bookkeeping, for /metrics */
};

static struct detect *det(struct vmmgr *m)
{
	return m->detect;
}

static uint64_t now_ms(void)
{
	return mv_now_ns() / 1000000;
}

static struct dvm *by_key(struct vmmgr *m, uint64_t key)
{
	for (size_t i = 0; key && i < m->nvms; i++)
		if (m->vms[i]->fkey == key)
			return m->vms[i];
	return NULL;
}

void detect_init(struct vmmgr *m)
{
	struct detect *d = calloc(1, sizeof(*d));
	if (!d)
		abort();
	mv_guard_policy_default(&d->pol);
	d->next_id = 1;
	m->detect = d;
	if (state_policy_load(m, &d->pol) > 0)
		mv_log(MV_LOG_INFO, "guard: policy restored from the state database (detect %s, "
		       "action %s)", d->pol.detect ? "on" : "off", mv_guard_action_name(d->pol.action));
}

void detect_fini(struct vmmgr *m)
{
	free(m->detect);
	m->detect = NULL;
}

static struct mv_guard_event_info *event_new(struct detect *d)
{
	size_t slot = (d->head + d->nev) % EVENTS_MAX;
	if (d->nev == EVENTS_MAX)
		d->head = (d->head + 1) % EVENTS_MAX;
	else
		d->nev++;
	struct mv_guard_event_info *e = &d->ev[slot];
	memset(e, 0, sizeof(*e));
	e->id = d->next_id++;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	e->time_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	return e;
}

static struct mv_guard_event_info *event_by_id(struct detect *d, uint64_t id)
{
	for (size_t i = 0; i < d->nev; i++) {
		struct mv_guard_event_info *e = &d->ev[(d->head + i) % EVENTS_MAX];
		if (e->id == id)
			return e;
	}
	return NULL;
}

static void event_restore(struct vmmgr *m, const struct mv_guard_event_info *in)
{
	struct detect *d = det(m);
	struct mv_guard_event_info *e = event_new(d);
	*e = *in;
	if (in->id >= d->next_id)
		d->next_id = in->id + 1;
}

void detect_restore(struct vmmgr *m)
{
	detect_record_load(m, event_restore);
}

/* Books a detection of suspect and queues the response. */
static void detected(struct vmmgr *m, struct dvm *suspect, struct dvm *victim,
		     enum mv_guard_signal sig, uint64_t evidence, uint64_t of, uint64_t gpa,
		     double latency_ms, const char *rule)
{
	struct detect *d = det(m);
	suspect->det.flagged[sig] = true;
	struct mv_guard_event_info *e = event_new(d);
	snprintf(e->suspect, sizeof(e->suspect), "%s", suspect->info.name);
	snprintf(e->victim, sizeof(e->victim), "%s", victim ? victim->info.name : "");
	snprintf(e->signal, sizeof(e->signal), "%s", mv_guard_signal_name(sig));
	snprintf(e->action, sizeof(e->action), "%s", mv_guard_action_name(d->pol.action));
	snprintf(e->rule, sizeof(e->rule), "%s", rule ? rule : "");
	snprintf(e->outcome, sizeof(e->outcome), "pending");
	e->evidence = evidence;
	e->evidence_of = of;
	e->gpa = gpa;
	e->latency_ms = latency_ms;
	d->count[sig][d->pol.action]++;
	mv_log(MV_LOG_WARN, "guard: detected %s by vm %s%s%s: %llu of %llu, gpa 0x%llx, %.1f ms "
	       "after the first sign; action %s", e->signal, e->suspect, victim ? " against vm " : "",
	       e->victim, (unsigned long long)evidence, (unsigned long long)of,
	       (unsigned long long)gpa, latency_ms, e->action);
	detect_record_event(m, e, EVENTS_MAX);
	detect_record_suspect(m, suspect);
	if (!suspect->det.pending) {
		suspect->det.pending = (int)d->pol.action + 1;
		suspect->det.pending_event = e->id;
		suspect->det.pending_victim = victim ? victim->fkey : 0;
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

void detect_breaks(struct vmmgr *m, struct dvm *vm, uint64_t *at_ms, uint32_t n,
		   uint64_t victim_key, uint64_t gpa)
{
	struct detect *d = det(m);
	if (!d->pol.detect || vm->det.flagged[MV_SIG_WRITE_PROBE] || n == 0)
		return;
	qsort(at_ms, n, sizeof(*at_ms), cmp_u64);
	vm->det.wp_victim = victim_key;
	vm->det.wp_gpa = gpa;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t count, first;
		if (!mv_guard_wprobe_add(&vm->det.wp, &d->pol, at_ms[i], 1, &count, &first))
			continue;
		/* A burst that is a small part of what the VM shares is a guest
		 * rewriting its data, not probing (see the policy). */
		uint64_t fused = m->fusion ? mv_fusion_vm_fused(m->fusion, vm->fkey) : 0;
		if (count * 100 < (uint64_t)d->pol.wp_min_pct * (count + fused))
			continue;
		uint64_t now = now_ms();
		detected(m, vm, by_key(m, vm->det.wp_victim), MV_SIG_WRITE_PROBE, count,
			 d->pol.wp_window_ms, vm->det.wp_gpa, (double)(now - first), NULL);
		mv_guard_wprobe_reset(&vm->det.wp);
		return;
	}
}

uint32_t detect_fresh_ms(struct vmmgr *m)
{
	return det(m)->pol.wp_fresh_ms;
}

/* ---- sampled access ---- */

void detect_watch_begin(struct vmmgr *m)
{
	for (size_t i = 0; i < m->nvms; i++)
		for (uint32_t j = 0; j < m->vms[i]->det.nwatch; j++)
			m->vms[i]->det.watch[j].seen = false;
}

void detect_watch(struct vmmgr *m, uint64_t other_key, uint64_t other_gpa, uint64_t owner_key,
		  uint64_t owner_gpa)
{
	struct dvm *vm = by_key(m, other_key);
	if (!vm)
		return;
	struct gdet *g = &vm->det;
	for (uint32_t j = 0; j < g->nwatch; j++) {
		if (g->watch[j].gpa == other_gpa) {
			g->watch[j].seen = true;
			g->watch[j].owner_key = owner_key;
			g->watch[j].owner_gpa = owner_gpa;
			return;
		}
	}
	if (g->nwatch == MV_CTL_SAMPLE_MAX)
		return;   /* enough pages to judge a VM by */
	g->watch[g->nwatch++] = (struct gwatch){.gpa = other_gpa, .owner_key = owner_key,
						.owner_gpa = owner_gpa, .seen = true};
}

/* Pages no longer co-resident leave the list (their history with them). */
void detect_watch_end(struct vmmgr *m)
{
	for (size_t i = 0; i < m->nvms; i++) {
		struct gdet *g = &m->vms[i]->det;
		uint32_t k = 0;
		for (uint32_t j = 0; j < g->nwatch; j++)
			if (g->watch[j].seen)
				g->watch[k++] = g->watch[j];
		g->nwatch = k;
	}
}

static struct gwatch *watch_of(struct gdet *g, uint64_t gpa)
{
	for (uint32_t j = 0; j < g->nwatch; j++)
		if (g->watch[j].gpa == gpa)
			return &g->watch[j];
	return NULL;
}

/* One SAMPLE round trip: the windows that ended since the last, and the
 * pages to watch from now on. */
static void sample_vm(struct vmmgr *m, struct dvm *vm, bool arm)
{
	struct detect *d = det(m);
	static struct mv_ctl_sample req;
	memset(&req, 0, sizeof(req));
	req.window_us = SAMPLE_WINDOW_US;
	for (uint32_t j = 0; arm && j < vm->det.nwatch; j++)
		req.gpa[req.n++] = vm->det.watch[j].gpa;
	struct mv_ctl_msg reply;
	if (vmm_call(vm, MV_CTL_SAMPLE, &req, sizeof(req), NULL, 0, &reply, CALL_MS, NULL) < 0)
		return;
	static struct mv_ctl_sample_reply out;
	memcpy(&out, reply.payload, sizeof(out));
	vm->det.sampling = req.n > 0;
	uint64_t now = mv_now_ns(), win_ns = (uint64_t)out.window_us * 1000;
	for (uint32_t i = 0; i < out.n; i++) {
		struct gwatch *w = watch_of(&vm->det, out.gpa[i]);
		if (!w)
			continue;
		/* Oldest window first; window k ended about k windows ago. */
		for (uint32_t k = out.nwin[i]; k-- > 0;) {
			bool touched = (out.bits[i] >> k & 1) != 0;
			uint64_t end = now - k * win_ns;
			d->windows++;
			d->trapped += touched;
			if (touched && (w->s.bits & 1) == 0 && w->s.first_ns == 0)
				w->s.first_ns = end - win_ns;
			uint32_t hits;
			bool hit = mv_guard_sampled_add(&w->s, &d->pol, touched, &hits);
			if (hits == 0)
				w->s.first_ns = 0;   /* a stray touch long ago is no first sign */
			if (hit && !vm->det.flagged[MV_SIG_SAMPLED_ACCESS]) {
				detected(m, vm, by_key(m, w->owner_key), MV_SIG_SAMPLED_ACCESS, hits,
					 d->pol.sa_windows, w->gpa,
					 w->s.first_ns ? (double)(now - w->s.first_ns) / 1e6 : 0, NULL);
				break;
			}
		}
	}
}

static bool samplable(const struct dvm *vm)
{
	return vm->ctl >= 0 && vm->info.state == MV_VM_RUNNING && vm->info.fusion &&
	       !vm->info.fusion_excluded;
}

bool detect_watched(struct vmmgr *m, const struct dvm *vm)
{
	return det(m)->pol.detect && samplable(vm) && vm->det.nwatch > 0 &&
	       !vm->det.flagged[MV_SIG_WRITE_PROBE];
}

void detect_sample_tick(struct vmmgr *m)
{
	struct detect *d = det(m);
	for (size_t i = 0; i < m->nvms; i++) {
		struct dvm *vm = m->vms[i];
		bool want = d->pol.detect && samplable(vm) && vm->det.nwatch > 0 &&
			    !vm->det.flagged[MV_SIG_SAMPLED_ACCESS];
		if (want || (vm->det.sampling && vm->ctl >= 0))
			sample_vm(m, vm, want);
	}
}

/* ---- deny list ---- */

static bool in_ranges(const struct mv_guard_range *rs, size_t n, uint64_t key, uint64_t gpa)
{
	for (size_t i = 0; i < n; i++)
		if (rs[i].key == key && rs[i].n && gpa >= rs[i].pages[0].gpa &&
		    gpa < rs[i].pages[0].gpa + rs[i].n * MV_PAGE_SIZE)
			return true;
	return false;
}

struct deny_ctx {
	const struct mv_guard_range *rs;
	size_t n;
	uint64_t keys[8], gpas[8], pages[8];
	size_t nk;
	uint64_t sharers[8];   /* every VM mapping the page, in a range first */
	bool in_range[8];
	size_t ns;
};

static void sharer_add(struct deny_ctx *c, uint64_t key, bool in_range)
{
	for (size_t i = 0; i < c->ns; i++)
		if (c->sharers[i] == key) {
			c->in_range[i] = c->in_range[i] || in_range;
			return;
		}
	if (c->ns < 8) {
		c->sharers[c->ns] = key;
		c->in_range[c->ns++] = in_range;
	}
}

static bool has_range(const struct mv_guard_range *rs, size_t n, uint64_t key)
{
	for (size_t i = 0; key && i < n; i++)
		if (rs[i].key == key)
			return true;
	return false;
}

/* A deny-list hit's victims: the VMs whose pages the suspect's denied page is
 * fused with and that have a sensitive range (those sharing it from inside
 * one first). None: the move response falls back to unfuse. */
static void deny_victims(const struct deny_ctx *c, uint64_t suspect, uint64_t out[4])
{
	size_t k = 0;
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < c->ns && k < 4; i++)
			if (c->sharers[i] != suspect && c->in_range[i] == (pass == 0) &&
			    has_range(c->rs, c->n, c->sharers[i]))
				out[k++] = c->sharers[i];
}

static void deny_sharer(uint64_t key, uint64_t gpa, void *arg)
{
	struct deny_ctx *c = arg;
	bool inr = in_ranges(c->rs, c->n, key, gpa);
	sharer_add(c, key, inr);
	if (inr)
		return;   /* the tenant's own protected copy: it is the victim */
	for (size_t i = 0; i < c->nk; i++)
		if (c->keys[i] == key) {
			c->pages[i]++;
			return;
		}
	if (c->nk < 8) {
		c->keys[c->nk] = key;
		c->gpas[c->nk] = gpa;
		c->pages[c->nk++] = 1;
	}
}

void detect_deny_check(struct vmmgr *m, const struct mv_guard_range *rs, size_t n)
{
	struct detect *d = det(m);
	if (!d->pol.detect || !m->fusion)
		return;
	for (uint32_t i = 0; i < d->pol.ndeny; i++) {
		uint64_t off;
		if (mv_fusion_find_hash(m->fusion, d->pol.deny[i].xxh3, &off) < 0)
			continue;
		struct deny_ctx c = {.rs = rs, .n = n};
		mv_fusion_sharers(m->fusion, off, deny_sharer, &c);
		for (size_t k = 0; k < c.nk; k++) {
			struct dvm *vm = by_key(m, c.keys[k]);
			if (!vm || vm->det.flagged[MV_SIG_DENY_HASH])
				continue;
			uint64_t v[4] = {0};
			deny_victims(&c, vm->fkey, v);
			bool queued = vm->det.pending == 0;
			detected(m, vm, by_key(m, v[0]), MV_SIG_DENY_HASH, c.pages[k], 0, c.gpas[k], 0,
				 d->pol.deny[i].name);
			if (queued)
				memcpy(vm->det.pending_more, v + 1, sizeof(vm->det.pending_more));
		}
	}
}

/* ---- responses ---- */

/* Not the suspect: the victims' data leaves the frames it may know. With no
 * victim that has a sensitive range (a deny-list page shared only with VMs
 * that protect nothing) there is nothing to move: the suspect is unfused
 * instead, and the outcome says so. */
static int respond_move(struct vmmgr *m, struct dvm *vm, char *note, size_t cap,
			struct mv_error **err)
{
	uint64_t keys[4] = {vm->det.pending_victim};
	memcpy(keys + 1, vm->det.pending_more, sizeof(vm->det.pending_more));
	memset(vm->det.pending_more, 0, sizeof(vm->det.pending_more));
	size_t len = 0, nvict = 0;
	for (size_t i = 0; i < 4; i++) {
		struct dvm *victim = keys[i] ? by_key(m, keys[i]) : NULL;
		if (!victim)
			continue;
		uint64_t moved, us;
		int r = guard_move(m, victim, &moved, &us, err);
		if (r < 0)
			return r;
		nvict++;
		if (len < cap)
			len += (size_t)snprintf(note + len, cap - len, "%s%llu pages of vm %s moved to new "
						"frames in %llu us", len ? "; " : "ok: ",
						(unsigned long long)moved, victim->info.name,
						(unsigned long long)us);
	}
	if (nvict)
		return 0;
	vm->info.fusion_excluded = true;
	int r = fusion_vm_unfuse(m, vm, err);
	if (r == 0 && snprintf(note, cap, "ok: no victim with a sensitive range to move; "
			       "unfused the suspect instead") >= (int)cap)
		note[cap - 1] = '\0';
	return r;
}

static int respond(struct vmmgr *m, struct dvm *vm, enum mv_guard_action a, char *note,
		   size_t cap, struct mv_error **err)
{
	struct detect *d = det(m);
	struct mv_ctl_msg reply;
	switch (a) {
	case MV_ACT_LOG:
		return 0;
	case MV_ACT_UNFUSE:
		vm->info.fusion_excluded = true;
		return fusion_vm_unfuse(m, vm, err);
	case MV_ACT_THROTTLE: {
		struct mv_ctl_throttle t = {.pct = d->pol.throttle_pct};
		return vmm_call(vm, MV_CTL_THROTTLE, &t, sizeof(t), NULL, 0, &reply, CALL_MS, err);
	}
	case MV_ACT_PAUSE: {
		if (vm->info.state != MV_VM_RUNNING)
			return 0;
		int r = vmm_call(vm, MV_CTL_PAUSE, NULL, 0, NULL, 0, &reply, CALL_MS, err);
		if (r == 0) {
			vm->info.state = MV_VM_PAUSED;
			state_update(m, &vm->info);
		}
		return r;
	}
	case MV_ACT_STOP:
		return vmmgr_stop_vm(m, vm, err);
	case MV_ACT_MOVE:
		return respond_move(m, vm, note, cap, err);
	default:
		return -EINVAL;
	}
}

void detect_respond(struct vmmgr *m)
{
	struct detect *d = det(m);
	for (size_t i = 0; i < m->nvms; i++) {
		struct dvm *vm = m->vms[i];
		if (!vm->det.pending)
			continue;
		enum mv_guard_action a = (enum mv_guard_action)(vm->det.pending - 1);
		vm->det.pending = 0;
		struct mv_error *err = NULL;
		char note[128] = "ok";
		int r = vm->ctl >= 0 ? respond(m, vm, a, note, sizeof(note), &err)
				     : mv_err(&err, -ESRCH, "VMM gone");
		vm->det.pending_victim = 0;
		memset(vm->det.pending_more, 0, sizeof(vm->det.pending_more));
		struct mv_guard_event_info *e = event_by_id(d, vm->det.pending_event);
		if (e) {
			snprintf(e->outcome, sizeof(e->outcome), "%s", r < 0 ? mv_error_msg(err, r) : note);
			detect_record_event(m, e, EVENTS_MAX);
		}
		detect_record_suspect(m, vm);   /* excluded from fusion now, perhaps */
		mv_log(r < 0 ? MV_LOG_ERROR : MV_LOG_WARN, "guard: vm %s: %s: %s", vm->info.name,
		       mv_guard_action_name(a), r < 0 ? mv_error_msg(err, r) : note);
		mv_error_free(err);
	}
}

/* ---- API ---- */

int detect_events(void *ctx, struct mv_guard_event_info **out, size_t *n, struct mv_error **err)
{
	struct vmmgr *m = ctx;
	pthread_mutex_lock(&m->lock);
	struct detect *d = det(m);
	*n = d->nev;
	*out = calloc(d->nev + 1, sizeof(**out));
	if (!*out)
		abort();
	for (size_t i = 0; i < d->nev; i++)
		(*out)[i] = d->ev[(d->head + i) % EVENTS_MAX];
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int detect_policy_get(void *ctx, struct mv_guard_policy *out, struct mv_error **err)
{
	struct vmmgr *m = ctx;
	pthread_mutex_lock(&m->lock);
	*out = det(m)->pol;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int detect_policy_set(void *ctx, const struct mv_guard_policy *in, struct mv_error **err)
{
	struct vmmgr *m = ctx;
	int r = mv_guard_policy_check(in, err);
	if (r < 0)
		return r;
	pthread_mutex_lock(&m->lock);
	/* Durable first: a policy a restart would lose is not applied. */
	r = state_policy_save(m, in);
	if (r < 0) {
		pthread_mutex_unlock(&m->lock);
		return mv_err(err, r, "guard policy: the state database refused it");
	}
	det(m)->pol = *in;
	/* A new policy judges afresh: windows restart, suspects stay excluded. */
	for (size_t i = 0; i < m->nvms; i++) {
		struct gdet *g = &m->vms[i]->det;
		mv_guard_wprobe_reset(&g->wp);
		bool was = memchr(g->flagged, true, sizeof(g->flagged)) != NULL;
		memset(g->flagged, 0, sizeof(g->flagged));
		if (was)
			detect_record_suspect(m, m->vms[i]);
		for (uint32_t j = 0; j < g->nwatch; j++)
			g->watch[j].s = (struct mv_guard_sampled){0};
	}
	pthread_mutex_unlock(&m->lock);
	mv_log(MV_LOG_INFO, "guard: policy: detect %s, action %s, write probe %u pages fused < %u ms "
	       "within %u ms and %u%% of the fused, sampled access %u%% of %u windows, %u deny "
	       "entries", in->detect ? "on" : "off", mv_guard_action_name(in->action),
	       in->wp_min_pages, in->wp_fresh_ms, in->wp_window_ms, in->wp_min_pct, in->sa_min_pct,
	       in->sa_windows, in->ndeny);
	return 0;
}

void detect_metrics(struct vmmgr *m, FILE *f)
{
	struct detect *d = det(m);
	fprintf(f, "# HELP memvisor_guard_detections_total Suspected side-channel attackers detected, "
		   "by signal and the action taken.\n# TYPE memvisor_guard_detections_total counter\n");
	for (int s = 0; s < MV_SIG__COUNT; s++)
		for (int a = 0; a < MV_ACT__COUNT; a++)
			fprintf(f, "memvisor_guard_detections_total{signal=\"%s\",action=\"%s\"} %llu\n",
				mv_guard_signal_name((unsigned)s), mv_guard_action_name((unsigned)a),
				(unsigned long long)d->count[s][a]);
	fprintf(f, "# HELP memvisor_guard_sampled_windows_total Trapped windows on co-resident "
		   "pages, and those the sharing VM touched.\n"
		   "# TYPE memvisor_guard_sampled_windows_total counter\n"
		   "memvisor_guard_sampled_windows_total{touched=\"any\"} %llu\n"
		   "memvisor_guard_sampled_windows_total{touched=\"yes\"} %llu\n",
		(unsigned long long)d->windows, (unsigned long long)d->trapped);
	fprintf(f, "# HELP memvisor_guard_policy_detect 1 when the guard evaluates its signals.\n"
		   "# TYPE memvisor_guard_policy_detect gauge\nmemvisor_guard_policy_detect %d\n",
		d->pol.detect ? 1 : 0);
}
