/* memvisord's side-channel guard: the sensitive ranges tenants mark (API
 * backend, SQLite tables `sensitive` and `protected_frames`), their host
 * frames (each check asks the VMM to mlock the range again and reads the
 * frames from its /proc/PID/pagemap: mlock keeps them resident, but a fusion
 * swap, a copy-on-write break or page migration can still move one), and the
 * co-residency check (src/guard/sidechannel.c) over every other VM's resident
 * frames and the fusion library's sharers. The watcher runs a check every
 * second while ranges exist; GET /v1/guard runs one at once. A finding that
 * newly appears is an event: logged and counted in /metrics. Lock held
 * throughout (the manager's). Cost of a check: one pagemap read over each
 * VM's resident RAM (memfd data extents); fused pages of other VMs (memfd
 * holes) are seen through the fusion library, not their frames. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "memvisor/guard.h"
#include "memvisor/util.h"
#include "daemon_i.h"

#define CALL_MS 10000
#define PFN_MASK ((1ULL << 55) - 1)
#define PM_CHUNK 4096   /* pagemap entries per read */

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS sensitive(id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" vm_id TEXT NOT NULL, gpa INTEGER NOT NULL, len INTEGER NOT NULL,"
	" created_at INTEGER NOT NULL);"
	"CREATE TABLE IF NOT EXISTS protected_frames(range_id INTEGER NOT NULL,"
	" gpa INTEGER NOT NULL, pfn INTEGER NOT NULL, pages INTEGER NOT NULL);";

struct grange {
	uint64_t id;
	char vm_id[MV_ID_LEN + 1];
	uint64_t gpa, len, created_at;
	bool locked;
	uint64_t resident;
	uint64_t runs_sig;           /* of the runs last written to SQLite */
	struct mv_guard_page *pages; /* len / page size entries */
};

struct guard {
	struct mv_guard_cfg cfg;
	uint32_t llc;
	struct grange *r;
	size_t n, cap;
	uint64_t checks, events, ev_kind[MV_GUARD__KINDS];
	uint64_t cpu_ns;                /* guard_charge */
	struct mv_guard_finding *last;
	size_t nlast;
	struct mv_guard_page *others;   /* scratch of every VM's resident pages */
	size_t nothers, cothers;
};

static struct dvm *by_id(struct vmmgr *m, const char *id)
{
	for (size_t i = 0; i < m->nvms; i++)
		if (!strcmp(m->vms[i]->info.id, id))
			return m->vms[i];
	return NULL;
}

static const char *name_of_key(struct vmmgr *m, uint64_t key)
{
	for (size_t i = 0; i < m->nvms; i++)
		if (m->vms[i]->fkey == key)
			return m->vms[i]->info.name;
	return "?";
}

static bool live(const struct dvm *vm)
{
	return vm && vm->ctl >= 0 && vm->mem.n > 0 && vm->info.pid > 0 &&
	       (vm->info.state == MV_VM_RUNNING || vm->info.state == MV_VM_PAUSED);
}

static void range_free(struct grange *g)
{
	free(g->pages);
}

static struct grange *range_push(struct guard *gd)
{
	gd->r = mv_grow(gd->r, gd->n, &gd->cap, sizeof(*gd->r), 8);
	struct grange *g = &gd->r[gd->n++];
	memset(g, 0, sizeof(*g));
	return g;
}

static int range_pages_alloc(struct grange *g)
{
	g->pages = calloc(g->len / MV_PAGE_SIZE, sizeof(*g->pages));
	if (!g->pages)
		abort();
	for (uint64_t i = 0; i < g->len / MV_PAGE_SIZE; i++)
		g->pages[i].gpa = g->gpa + i * MV_PAGE_SIZE;
	return 0;
}

int guard_init(struct vmmgr *m, struct mv_error **err)
{
	struct guard *gd = calloc(1, sizeof(*gd));
	if (!gd)
		abort();
	gd->cfg = (struct mv_guard_cfg){.colours = m->cfg.guard_colours,
					.row_shift = m->cfg.guard_row_shift};
	gd->llc = mv_guard_llc_colours();
	m->guard = gd;
	int r = mv_guard_cfg_check(&gd->cfg, err);
	if (r < 0)
		return r;
	r = state_schema(m->db, schema, "guard", err);
	if (r < 0)
		return r;
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(m->db, "SELECT id, vm_id, gpa, len, created_at FROM sensitive ORDER BY id",
			       -1, &s, NULL) != SQLITE_OK)
		return mv_err(err, -EIO, "guard state: %s", sqlite3_errmsg(m->db));
	while (sqlite3_step(s) == SQLITE_ROW) {
		struct grange *g = range_push(gd);
		g->id = (uint64_t)sqlite3_column_int64(s, 0);
		const unsigned char *id = sqlite3_column_text(s, 1);
		snprintf(g->vm_id, sizeof(g->vm_id), "%s", id ? (const char *)id : "");
		g->gpa = (uint64_t)sqlite3_column_int64(s, 2);
		g->len = (uint64_t)sqlite3_column_int64(s, 3);
		g->created_at = (uint64_t)sqlite3_column_int64(s, 4);
		if (g->len == 0 || g->len % MV_PAGE_SIZE || g->len > (1ULL << 30))
			gd->n--;   /* a row we would never have written */
		else
			range_pages_alloc(g);
	}
	sqlite3_finalize(s);
	return 0;
}

void guard_fini(struct vmmgr *m)
{
	struct guard *gd = m->guard;
	if (!gd)
		return;
	for (size_t i = 0; i < gd->n; i++)
		range_free(&gd->r[i]);
	free(gd->r);
	free(gd->last);
	free(gd->others);
	free(gd);
	m->guard = NULL;
}

/* pfn[i] for the n pages at hva of pid; 0 where none is resident. */
static int read_pfns(pid_t pid, uint64_t hva, uint64_t n, uint64_t *pfn)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	uint64_t done = 0;
	while (done < n) {
		uint64_t k = n - done > PM_CHUNK ? PM_CHUNK : n - done;
		off_t off = (off_t)((hva / MV_PAGE_SIZE + done) * 8);
		ssize_t got = pread(fd, pfn + done, k * 8, off);
		if (got < (ssize_t)(k * 8)) {
			close(fd);
			return got < 0 ? -errno : -EIO;
		}
		for (uint64_t i = done; i < done + k; i++)
			pfn[i] = (pfn[i] >> 63) ? (pfn[i] & PFN_MASK) : 0;
		done += k;
	}
	close(fd);
	return 0;
}

static int guard_call(struct dvm *vm, uint32_t op, uint64_t gpa, uint64_t len,
		      struct mv_ctl_guard_reply *out, struct mv_error **err)
{
	struct mv_ctl_guard req = {.op = op, .gpa = gpa, .len = len};
	struct mv_ctl_msg reply;
	int r = vmm_call(vm, MV_CTL_GUARD, &req, sizeof(req), NULL, 0, &reply, CALL_MS, err);
	if (r == 0)
		memcpy(out, reply.payload, sizeof(*out));
	return r;
}

static uint64_t hva_of(const struct mv_ctl_guard_reply *gr, uint64_t gpa)
{
	for (uint32_t i = 0; i < gr->nregions; i++)
		if (gpa >= gr->gpa[i] && gpa - gr->gpa[i] < gr->size[i])
			return gr->hva[i] + (gpa - gr->gpa[i]);
	return 0;
}

/* Runs of contiguous gpa -> contiguous pfn; calls fn for each (may be NULL). */
static uint64_t runs_each(const struct grange *g, struct mv_sensitive_run *out, uint32_t cap,
			  uint64_t *sig)
{
	uint64_t n = 0, npages = g->len / MV_PAGE_SIZE;
	*sig = 1469598103934665603ULL;
	for (uint64_t i = 0; i < npages;) {
		if (!g->pages[i].pfn) {
			i++;
			continue;
		}
		uint64_t j = i + 1;
		while (j < npages && g->pages[j].pfn == g->pages[i].pfn + (j - i))
			j++;
		if (out && n < cap)
			out[n] = (struct mv_sensitive_run){.gpa = g->pages[i].gpa,
							   .pfn = g->pages[i].pfn, .pages = j - i};
		*sig = (*sig ^ (g->pages[i].pfn * 31 + i * 7 + (j - i))) * 1099511628211ULL;
		n++;
		i = j;
	}
	return n;
}

/* Records the protected physical ranges when they changed. */
static void store_runs(struct vmmgr *m, struct grange *g)
{
	uint64_t sig;
	uint64_t n = runs_each(g, NULL, 0, &sig);
	if (sig == g->runs_sig)
		return;
	struct mv_sensitive_run *runs = calloc(n + 1, sizeof(*runs));
	if (!runs)
		abort();
	runs_each(g, runs, (uint32_t)(n > UINT32_MAX ? UINT32_MAX : n), &sig);
	sqlite3_exec(m->db, "BEGIN", NULL, NULL, NULL);
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(m->db, "DELETE FROM protected_frames WHERE range_id=?", -1, &s, NULL) ==
	    SQLITE_OK) {
		sqlite3_bind_int64(s, 1, (sqlite3_int64)g->id);
		sqlite3_step(s);
	}
	sqlite3_finalize(s);
	s = NULL;
	if (sqlite3_prepare_v2(m->db, "INSERT INTO protected_frames VALUES(?,?,?,?)", -1, &s, NULL) ==
	    SQLITE_OK) {
		for (uint64_t i = 0; i < n; i++) {
			sqlite3_bind_int64(s, 1, (sqlite3_int64)g->id);
			sqlite3_bind_int64(s, 2, (sqlite3_int64)runs[i].gpa);
			sqlite3_bind_int64(s, 3, (sqlite3_int64)runs[i].pfn);
			sqlite3_bind_int64(s, 4, (sqlite3_int64)runs[i].pages);
			sqlite3_step(s);
			sqlite3_reset(s);
		}
	}
	sqlite3_finalize(s);
	if (sqlite3_exec(m->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
		g->runs_sig = sig;
	free(runs);
}

/* Locks the range in its VMM and reads its frames. */
static int resolve(struct vmmgr *m, struct grange *g, struct dvm *vm, struct mv_error **err)
{
	uint64_t npages = g->len / MV_PAGE_SIZE;
	g->locked = false;
	g->resident = 0;
	for (uint64_t i = 0; i < npages; i++) {
		g->pages[i].pfn = 0;
		g->pages[i].key = vm ? vm->fkey : 0;
	}
	if (!live(vm))
		return 0;
	struct mv_ctl_guard_reply gr;
	int r = guard_call(vm, MV_GUARD_OP_LOCK, g->gpa, g->len, &gr, err);
	if (r < 0)
		return r;
	g->locked = true;
	uint64_t hva = hva_of(&gr, g->gpa);
	uint64_t *pfn = calloc(npages, sizeof(*pfn));
	if (!pfn)
		abort();
	r = hva ? read_pfns(vm->info.pid, hva, npages, pfn) : -EFAULT;
	if (r < 0) {
		free(pfn);
		return mv_err(err, r, "reading frames of vm %s: %s", vm->info.name, strerror(-r));
	}
	for (uint64_t i = 0; i < npages; i++) {
		g->pages[i].pfn = pfn[i];
		g->resident += pfn[i] != 0;
	}
	free(pfn);
	store_runs(m, g);
	return 0;
}

int guard_move(struct vmmgr *m, struct dvm *victim, uint64_t *moved, uint64_t *us,
	       struct mv_error **err)
{
	struct guard *gd = m->guard;
	*moved = 0;
	*us = 0;
	if (!live(victim))
		return mv_err(err, -ESRCH, "victim vm is not running");
	unsigned ranges = 0;
	for (size_t i = 0; gd && i < gd->n; i++) {
		struct grange *g = &gd->r[i];
		if (strcmp(g->vm_id, victim->info.id))
			continue;
		struct mv_ctl_relocate req = {.gpa = g->gpa, .len = g->len};
		struct mv_ctl_msg reply;
		int r = vmm_call(victim, MV_CTL_RELOCATE, &req, sizeof(req), NULL, 0, &reply, CALL_MS,
				 err);
		if (r < 0)
			return r;
		struct mv_ctl_relocate_reply rr;
		memcpy(&rr, reply.payload, sizeof(rr));
		*moved += rr.moved;
		if (rr.elapsed_us > *us)
			*us = rr.elapsed_us;
		ranges++;
		/* Never fused again, whichever VMM runs the VM from now on. */
		r = guard_keep_add(m, victim, g->gpa, g->len, err);
		if (r < 0)
			return r;
		/* The frames changed: read them again and record the new ones. */
		r = resolve(m, g, victim, err);
		if (r < 0)
			return r;
		mv_log(MV_LOG_INFO, "guard: range %llu of vm %s moved: %llu pages to new frames in "
		       "%llu us, %llu resident", (unsigned long long)g->id, victim->info.name,
		       (unsigned long long)rr.moved, (unsigned long long)rr.elapsed_us,
		       (unsigned long long)g->resident);
	}
	if (!ranges)
		return mv_err(err, -ENOENT, "vm %s has no sensitive range", victim->info.name);
	return 0;
}

static void others_push(struct guard *gd, uint64_t key, uint64_t gpa, uint64_t pfn)
{
	if (gd->nothers == gd->cothers) {
		gd->cothers = gd->cothers ? gd->cothers * 2 : 4096;
		gd->others = realloc(gd->others, gd->cothers * sizeof(*gd->others));
		if (!gd->others)
			abort();
	}
	gd->others[gd->nothers++] = (struct mv_guard_page){.key = key, .gpa = gpa, .pfn = pfn};
}

/* Every resident page of vm (memfd data extents) with its frame. */
static void gather_vm(struct guard *gd, struct dvm *vm)
{
	struct mv_ctl_guard_reply gr;
	if (guard_call(vm, MV_GUARD_OP_QUERY, 0, 0, &gr, NULL) < 0)
		return;
	static uint64_t pfn[PM_CHUNK];   /* the manager lock serializes us */
	for (uint32_t i = 0; i < vm->mem.n; i++) {
		const struct mv_mem_region_desc *rd = &vm->mem.r[i];
		uint64_t hva = hva_of(&gr, rd->gpa);
		if (!hva)
			continue;
		off_t pos = 0;
		while ((uint64_t)pos < rd->size) {
			off_t data = lseek(rd->fd, pos, SEEK_DATA);
			if (data < 0)
				break;
			off_t hole = lseek(rd->fd, data, SEEK_HOLE);
			if (hole < 0 || (uint64_t)hole > rd->size)
				hole = (off_t)rd->size;
			for (uint64_t o = (uint64_t)data & ~(uint64_t)(MV_PAGE_SIZE - 1); o < (uint64_t)hole;) {
				uint64_t k = ((uint64_t)hole - o + MV_PAGE_SIZE - 1) / MV_PAGE_SIZE;
				k = k > PM_CHUNK ? PM_CHUNK : k;
				if (read_pfns(vm->info.pid, hva + o, k, pfn) < 0)
					return;
				for (uint64_t j = 0; j < k; j++)
					if (pfn[j])
						others_push(gd, vm->fkey, rd->gpa + o + j * MV_PAGE_SIZE, pfn[j]);
				o += k * MV_PAGE_SIZE;
			}
			pos = hole;
		}
	}
}

/* Is a VM (fusion key) another tenant to some range? Only such VMs' pages are
 * compared; reading a range owner's own pagemap every check was most of the
 * guard's cost when one VM protects part of its own memory. */
static bool other_to_some(const struct mv_guard_range *rs, size_t n, uint64_t key)
{
	for (size_t i = 0; i < n; i++)
		if (rs[i].key != key)
			return true;
	return false;
}

static bool seen(const struct mv_guard_finding *v, size_t n, const struct mv_guard_finding *f)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].range_id == f->range_id && v[i].other == f->other && v[i].kind == f->kind)
			return true;
	return false;
}

struct sens_ctx {
	struct vmmgr *m;
	uint64_t self, owner;
};

static void sens_sharer(uint64_t key, uint64_t gpa, void *arg)
{
	struct sens_ctx *c = arg;
	struct guard *gd = c->m->guard;
	if (key == c->self || c->owner)
		return;
	for (size_t i = 0; i < gd->n; i++) {
		const struct grange *g = &gd->r[i];
		if (gpa >= g->gpa && gpa - g->gpa < g->len) {
			struct dvm *vm = by_id(c->m, g->vm_id);
			if (vm && vm->fkey == key) {
				c->owner = key;
				return;
			}
		}
	}
}

uint64_t guard_sensitive_sharer(struct vmmgr *m, uint64_t key, uint64_t gpa)
{
	uint64_t off;
	struct sens_ctx c = {m, key, 0};
	if (m->guard && m->guard->n && m->fusion && mv_fusion_lookup(m->fusion, key, gpa, &off) == 0)
		mv_fusion_sharers(m->fusion, off, sens_sharer, &c);
	return c.owner;
}

struct watch_ctx {
	struct vmmgr *m;
	uint64_t owner, gpa;
};

static void watch_sharer(uint64_t key, uint64_t gpa, void *arg)
{
	struct watch_ctx *c = arg;
	if (key != c->owner)
		detect_watch(c->m, key, gpa, c->owner, c->gpa);
}

/* Tells detection which pages of other VMs are fused with protected pages:
 * their accesses get sampled. */
static void watch_fused(struct vmmgr *m, const struct mv_guard_range *rs, size_t n)
{
	detect_watch_begin(m);
	for (size_t i = 0; m->fusion && i < n; i++) {
		for (size_t j = 0; rs[i].key && j < rs[i].n; j++) {
			uint64_t off;
			struct watch_ctx c = {m, rs[i].key, rs[i].pages[j].gpa};
			if (mv_fusion_lookup(m->fusion, rs[i].key, c.gpa, &off) == 0)
				mv_fusion_sharers(m->fusion, off, watch_sharer, &c);
		}
	}
	detect_watch_end(m);
}

/* Lock held: one co-residency check over every range. */
static int check(struct vmmgr *m, struct mv_error **err)
{
	struct guard *gd = m->guard;
	struct mv_guard_range *rs = calloc(gd->n + 1, sizeof(*rs));
	if (!rs)
		abort();
	for (size_t i = 0; i < gd->n; i++) {
		struct grange *g = &gd->r[i];
		struct dvm *vm = by_id(m, g->vm_id);
		struct mv_error *e = NULL;
		int r = resolve(m, g, vm, &e);
		if (r < 0)
			mv_log(MV_LOG_WARN, "guard: range %llu: %s", (unsigned long long)g->id,
			       mv_error_msg(e, r));
		mv_error_free(e);
		rs[i] = (struct mv_guard_range){.id = g->id, .key = vm ? vm->fkey : 0,
						.pages = g->pages, .n = g->len / MV_PAGE_SIZE};
	}
	/* Other tenants' frames matter only for the neighbourhood kinds: two
	 * VMs' memfds never share a frame except through fusion, and fused
	 * pages (memfd holes) are found through the fusion library. */
	gd->nothers = 0;
	bool neighbours = gd->cfg.colours || gd->cfg.row_shift;
	for (size_t i = 0; neighbours && gd->n && i < m->nvms; i++)
		if (live(m->vms[i]) && other_to_some(rs, gd->n, m->vms[i]->fkey))
			gather_vm(gd, m->vms[i]);
	watch_fused(m, rs, gd->n);
	detect_deny_check(m, rs, gd->n);
	struct mv_guard_finding *f = NULL;
	size_t nf = 0;
	int r = mv_guard_check(&gd->cfg, rs, gd->n, gd->others, gd->nothers, m->fusion, &f, &nf, err);
	free(rs);
	if (r < 0)
		return r;
	gd->checks++;
	for (size_t i = 0; i < nf; i++) {
		if (seen(gd->last, gd->nlast, &f[i]))
			continue;
		gd->events++;
		gd->ev_kind[f[i].kind]++;
		mv_log(MV_LOG_WARN, "guard: vm %s's data is co-resident (%s) with sensitive range %llu "
		       "of vm %s: %llu page(s), e.g. gpa 0x%llx on pfn 0x%llx",
		       name_of_key(m, f[i].other), mv_guard_kind_name(f[i].kind),
		       (unsigned long long)f[i].range_id, name_of_key(m, f[i].owner),
		       (unsigned long long)f[i].pages, (unsigned long long)f[i].other_gpa,
		       (unsigned long long)f[i].other_pfn);
	}
	free(gd->last);
	gd->last = f;
	gd->nlast = nf;
	return 0;
}

void guard_tick(struct vmmgr *m)
{
	if (m->guard && m->guard->n == 0) {
		watch_fused(m, NULL, 0);   /* no range: nothing to sample */
		return;
	}
	if (!m->guard)
		return;
	struct mv_error *e = NULL;
	int r = check(m, &e);
	if (r < 0)
		mv_log(MV_LOG_WARN, "guard: check failed: %s", mv_error_msg(e, r));
	mv_error_free(e);
}

static void range_info(struct vmmgr *m, const struct grange *g, struct mv_sensitive_range *out)
{
	memset(out, 0, sizeof(*out));
	struct dvm *vm = by_id(m, g->vm_id);
	out->id = g->id;
	snprintf(out->vm, sizeof(out->vm), "%s", vm ? vm->info.name : g->vm_id);
	out->gpa = g->gpa;
	out->len = g->len;
	out->created_at = g->created_at;
	out->locked = g->locked;
	out->resident_pages = g->resident;
	uint64_t sig;
	uint64_t n = runs_each(g, out->runs, MV_SENSITIVE_RUNS_MAX, &sig);
	out->runs_total = (uint32_t)(n > UINT32_MAX ? UINT32_MAX : n);
	out->nruns = n < MV_SENSITIVE_RUNS_MAX ? (uint32_t)n : MV_SENSITIVE_RUNS_MAX;
}

static void db_delete_range(struct vmmgr *m, uint64_t id)
{
	static const char *const sql[] = {"DELETE FROM sensitive WHERE id=?",
					  "DELETE FROM protected_frames WHERE range_id=?"};
	for (size_t i = 0; i < MV_ARRAY_SIZE(sql); i++) {
		sqlite3_stmt *s = NULL;
		if (sqlite3_prepare_v2(m->db, sql[i], -1, &s, NULL) == SQLITE_OK) {
			sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
			sqlite3_step(s);
		}
		sqlite3_finalize(s);
	}
}

static void range_drop(struct vmmgr *m, size_t i)
{
	struct guard *gd = m->guard;
	db_delete_range(m, gd->r[i].id);
	range_free(&gd->r[i]);
	memmove(&gd->r[i], &gd->r[i + 1], (gd->n - i - 1) * sizeof(*gd->r));
	gd->n--;
}

int guard_spans(struct vmmgr *m, const char *vm_id, struct mv_migrate_span *out, uint32_t cap,
		uint32_t *n)
{
	*n = 0;
	for (size_t i = 0; m->guard && i < m->guard->n; i++) {
		const struct grange *g = &m->guard->r[i];
		if (strcmp(g->vm_id, vm_id))
			continue;
		if (*n == cap)
			return -E2BIG;
		out[(*n)++] = (struct mv_migrate_span){.gpa = g->gpa, .len = g->len};
	}
	return 0;
}

void guard_vm_removed(struct vmmgr *m, const char *vm_id)
{
	guard_keep_vm_removed(m, vm_id);
	detect_record_forget(m, vm_id);
	for (size_t i = m->guard ? m->guard->n : 0; i-- > 0;)
		if (!strcmp(m->guard->r[i].vm_id, vm_id))
			range_drop(m, i);
}

int guard_sensitive_add(void *ctx, const char *ref, uint64_t gpa, uint64_t len,
			struct mv_sensitive_range *out, struct mv_error **err)
{
	struct vmmgr *m = ctx;
	struct guard *gd = m->guard;
	pthread_mutex_lock(&m->lock);
	struct dvm *vm = vmmgr_find(m, ref, err);
	int r = vm ? 0 : -ENOENT;
	bool inside = false;
	for (uint32_t i = 0; vm && i < vm->mem.n; i++)
		inside = inside || (gpa >= vm->mem.r[i].gpa && gpa - vm->mem.r[i].gpa < vm->mem.r[i].size &&
				    len <= vm->mem.r[i].size - (gpa - vm->mem.r[i].gpa));
	if (r == 0 && !live(vm))
		r = mv_err(err, -EBUSY, "VM %s is %s; sensitive ranges are marked on a running VM",
			   vm->info.name, mv_vm_state_name(vm->info.state));
	if (r == 0 && !inside)
		r = mv_err_field(err, -EINVAL, "gpa", "0x%llx+0x%llx is not inside one RAM region of %s",
				 (unsigned long long)gpa, (unsigned long long)len, vm->info.name);
	for (size_t i = 0; r == 0 && i < gd->n; i++)
		if (!strcmp(gd->r[i].vm_id, vm->info.id) && gpa < gd->r[i].gpa + gd->r[i].len &&
		    gd->r[i].gpa < gpa + len)
			r = mv_err_field(err, -EEXIST, "gpa", "overlaps sensitive range %llu",
					 (unsigned long long)gd->r[i].id);
	sqlite3_stmt *s = NULL;
	if (r == 0 && sqlite3_prepare_v2(m->db, "INSERT INTO sensitive(vm_id, gpa, len, created_at) "
				       "VALUES(?,?,?,?)", -1, &s, NULL) != SQLITE_OK)
		r = mv_err(err, -EIO, "state: %s", sqlite3_errmsg(m->db));
	if (r == 0) {
		uint64_t now = (uint64_t)time(NULL);
		sqlite3_bind_text(s, 1, vm->info.id, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)gpa);
		sqlite3_bind_int64(s, 3, (sqlite3_int64)len);
		sqlite3_bind_int64(s, 4, (sqlite3_int64)now);
		if (sqlite3_step(s) != SQLITE_DONE) {
			r = mv_err(err, -EIO, "state: %s", sqlite3_errmsg(m->db));
		} else {
			struct grange *g = range_push(gd);
			g->id = (uint64_t)sqlite3_last_insert_rowid(m->db);
			snprintf(g->vm_id, sizeof(g->vm_id), "%s", vm->info.id);
			g->gpa = gpa;
			g->len = len;
			g->created_at = now;
			range_pages_alloc(g);
			r = resolve(m, g, vm, err);
			if (r < 0)
				range_drop(m, gd->n - 1);
			else
				range_info(m, g, out);
			if (r == 0)
				mv_log(MV_LOG_INFO, "vm %s: sensitive range %llu: gpa 0x%llx + %llu KiB, "
				       "%llu resident page(s) locked in %llu run(s) of frames",
				       vm->info.name, (unsigned long long)g->id, (unsigned long long)gpa,
				       (unsigned long long)(len >> 10), (unsigned long long)g->resident,
				       (unsigned long long)out->runs_total);
		}
	}
	sqlite3_finalize(s);
	pthread_mutex_unlock(&m->lock);
	return r;
}

int guard_sensitive_list(void *ctx, const char *ref, struct mv_sensitive_range **out, size_t *n,
			 struct mv_error **err)
{
	struct vmmgr *m = ctx;
	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&m->lock);
	struct dvm *vm = vmmgr_find(m, ref, err);
	int r = vm ? 0 : -ENOENT;
	for (size_t i = 0; r == 0 && i < m->guard->n; i++) {
		if (strcmp(m->guard->r[i].vm_id, vm->info.id))
			continue;
		*out = realloc(*out, (*n + 1) * sizeof(**out));
		if (!*out)
			abort();
		range_info(m, &m->guard->r[i], &(*out)[(*n)++]);
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

int guard_sensitive_remove(void *ctx, const char *ref, uint64_t id, struct mv_error **err)
{
	struct vmmgr *m = ctx;
	pthread_mutex_lock(&m->lock);
	struct dvm *vm = vmmgr_find(m, ref, err);
	int r = -ENOENT;
	for (size_t i = 0; vm && i < m->guard->n; i++) {
		struct grange *g = &m->guard->r[i];
		if (g->id != id || strcmp(g->vm_id, vm->info.id))
			continue;
		struct mv_ctl_guard_reply gr;
		if (live(vm))
			(void)guard_call(vm, MV_GUARD_OP_UNLOCK, g->gpa, g->len, &gr, NULL);
		mv_log(MV_LOG_INFO, "vm %s: sensitive range %llu removed", vm->info.name,
		       (unsigned long long)id);
		range_drop(m, i);
		r = 0;
		break;
	}
	if (vm && r < 0)
		mv_err_field(err, r, "id", "vm %s has no sensitive range %llu", vm->info.name,
			     (unsigned long long)id);
	pthread_mutex_unlock(&m->lock);
	return r;
}

int guard_get(void *ctx, struct mv_guard_info *out, struct mv_error **err)
{
	struct vmmgr *m = ctx;
	struct guard *gd = m->guard;
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&m->lock);
	uint64_t t0 = mv_thread_cpu_ns();
	int r = gd->n ? check(m, err) : 0;
	guard_charge(m, t0);
	if (gd->n == 0) {
		free(gd->last);
		gd->last = NULL;
		gd->nlast = 0;
	}
	out->colours = gd->cfg.colours;
	out->row_shift = gd->cfg.row_shift;
	out->llc_colours = gd->llc;
	out->checks = gd->checks;
	out->cpu_ns = gd->cpu_ns;
	out->ranges = gd->n;
	for (size_t i = 0; i < gd->n; i++)
		out->protected_pages += gd->r[i].resident;
	out->events = gd->events;
	if (r == 0 && gd->nlast) {
		out->findings = calloc(gd->nlast, sizeof(*out->findings));
		if (!out->findings)
			abort();
		out->nfindings = gd->nlast;
		for (size_t i = 0; i < gd->nlast; i++) {
			const struct mv_guard_finding *f = &gd->last[i];
			struct mv_guard_finding_info *o = &out->findings[i];
			o->range_id = f->range_id;
			snprintf(o->vm, sizeof(o->vm), "%s", name_of_key(m, f->owner));
			snprintf(o->other_vm, sizeof(o->other_vm), "%s", name_of_key(m, f->other));
			snprintf(o->kind, sizeof(o->kind), "%s", mv_guard_kind_name(f->kind));
			o->pages = f->pages;
			o->gpa = f->gpa;
			o->pfn = f->pfn;
			o->other_gpa = f->other_gpa;
			o->other_pfn = f->other_pfn;
		}
	}
	pthread_mutex_unlock(&m->lock);
	return r;
}

void guard_charge(struct vmmgr *m, uint64_t t0)
{
	if (m->guard)
		m->guard->cpu_ns += mv_thread_cpu_ns() - t0;
}

void guard_metrics(struct vmmgr *m, FILE *f)
{
	struct guard *gd = m->guard;
	if (!gd)
		return;
	uint64_t prot = 0, cur[MV_GUARD__KINDS] = {0};
	for (size_t i = 0; i < gd->n; i++)
		prot += gd->r[i].resident;
	for (size_t i = 0; i < gd->nlast; i++)
		cur[gd->last[i].kind]++;
	fprintf(f, "# HELP memvisor_guard_ranges Sensitive ranges and their resident (locked) pages.\n"
		   "# TYPE memvisor_guard_ranges gauge\nmemvisor_guard_ranges %zu\n"
		   "# HELP memvisor_guard_protected_pages Resident pages of sensitive ranges.\n"
		   "# TYPE memvisor_guard_protected_pages gauge\n"
		   "memvisor_guard_protected_pages %llu\n", gd->n, (unsigned long long)prot);
	fprintf(f, "# HELP memvisor_guard_checks_total Co-residency checks run.\n"
		   "# TYPE memvisor_guard_checks_total counter\nmemvisor_guard_checks_total %llu\n",
		(unsigned long long)gd->checks);
	fprintf(f, "# HELP memvisor_guard_cpu_seconds_total Daemon CPU time spent on the guard "
		   "(checks, sampled windows, responses).\n"
		   "# TYPE memvisor_guard_cpu_seconds_total counter\n"
		   "memvisor_guard_cpu_seconds_total %.6f\n", (double)gd->cpu_ns / 1e9);
	fprintf(f, "# HELP memvisor_guard_findings Co-residency findings of the last check "
		   "(range, other VM, kind).\n# TYPE memvisor_guard_findings gauge\n");
	for (int k = 0; k < MV_GUARD__KINDS; k++)
		fprintf(f, "memvisor_guard_findings{kind=\"%s\"} %llu\n",
			mv_guard_kind_name((enum mv_guard_kind)k), (unsigned long long)cur[k]);
	fprintf(f, "# HELP memvisor_guard_events_total Co-residency findings that newly appeared.\n"
		   "# TYPE memvisor_guard_events_total counter\n");
	for (int k = 0; k < MV_GUARD__KINDS; k++)
		fprintf(f, "memvisor_guard_events_total{kind=\"%s\"} %llu\n",
			mv_guard_kind_name((enum mv_guard_kind)k), (unsigned long long)gd->ev_kind[k]);
}
