/* memvisord's record of the guest pages the guard moved to fresh frames (the
 * "move" response): they must never be fused again, or the next merge would
 * put them back on a shared pool frame. The VMM that moved them marks them,
 * but a new VMM (hand-over: `memvisor upgrade`, `vm migrate --local`; a
 * restart after a crash) starts without marks and a restarted daemon with a
 * new scanner; so the daemon keeps them in SQLite (`guard_kept`), tells the
 * fusion scanner to skip them, and sends them to every VMM it attaches to
 * fusion (control message GUARD, op KEEP). Lock held throughout. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/fusion.h"
#include "memvisor/util.h"
#include "daemon_i.h"

#define CALL_MS 10000

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS guard_kept(vm_id TEXT NOT NULL, gpa INTEGER NOT NULL,"
	" len INTEGER NOT NULL, PRIMARY KEY(vm_id, gpa, len));";

struct kept {
	char vm_id[MV_ID_LEN + 1];
	uint64_t gpa, len;
};

struct guard_keep {
	struct kept *k;
	size_t n, cap;
};

static void push(struct guard_keep *gk, const char *vm_id, uint64_t gpa, uint64_t len)
{
	for (size_t i = 0; i < gk->n; i++)
		if (!strcmp(gk->k[i].vm_id, vm_id) && gk->k[i].gpa == gpa && gk->k[i].len == len)
			return;
	gk->k = mv_grow(gk->k, gk->n, &gk->cap, sizeof(*gk->k), 8);
	struct kept *k = &gk->k[gk->n++];
	snprintf(k->vm_id, sizeof(k->vm_id), "%s", vm_id);
	k->gpa = gpa;
	k->len = len;
}

int guard_keep_init(struct vmmgr *m, struct mv_error **err)
{
	struct guard_keep *gk = calloc(1, sizeof(*gk));
	if (!gk)
		abort();
	m->keep = gk;
	int r = state_schema(m->db, schema, "guard_kept", err);
	if (r < 0)
		return r;
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(m->db, "SELECT vm_id, gpa, len FROM guard_kept", -1, &s, NULL) !=
	    SQLITE_OK)
		return mv_err(err, -EIO, "guard_kept: %s", sqlite3_errmsg(m->db));
	while (sqlite3_step(s) == SQLITE_ROW) {
		const unsigned char *id = sqlite3_column_text(s, 0);
		uint64_t gpa = (uint64_t)sqlite3_column_int64(s, 1);
		uint64_t len = (uint64_t)sqlite3_column_int64(s, 2);
		/* Only rows guard_keep_add() could have written. */
		if (id && strlen((const char *)id) <= MV_ID_LEN && len && len <= (1ULL << 30) &&
		    gpa % MV_PAGE_SIZE == 0 && len % MV_PAGE_SIZE == 0 && gpa + len > gpa)
			push(gk, (const char *)id, gpa, len);
		else
			mv_log(MV_LOG_WARN, "guard: ignoring a malformed guard_kept row");
	}
	sqlite3_finalize(s);
	return 0;
}

void guard_keep_fini(struct vmmgr *m)
{
	if (!m->keep)
		return;
	free(m->keep->k);
	free(m->keep);
	m->keep = NULL;
}

/* Marks [gpa, gpa+len) of vm in its VMM (copying fused pages back). */
static int send_keep(struct dvm *vm, uint64_t gpa, uint64_t len, uint32_t *kept,
		     struct mv_error **err)
{
	struct mv_ctl_guard req = {.op = MV_GUARD_OP_KEEP, .gpa = gpa, .len = len};
	struct mv_ctl_msg reply;
	int r = vmm_call(vm, MV_CTL_GUARD, &req, sizeof(req), NULL, 0, &reply, CALL_MS, err);
	if (r == 0) {
		struct mv_ctl_guard_reply gr;
		memcpy(&gr, reply.payload, sizeof(gr));
		*kept = gr.kept;
	}
	return r;
}

int guard_keep_add(struct vmmgr *m, struct dvm *vm, uint64_t gpa, uint64_t len,
		   struct mv_error **err)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(m->db, "INSERT OR IGNORE INTO guard_kept VALUES(?,?,?)", -1, &s,
			       NULL) != SQLITE_OK)
		return mv_err(err, -EIO, "guard_kept: %s", sqlite3_errmsg(m->db));
	sqlite3_bind_text(s, 1, vm->info.id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)gpa);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)len);
	int rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE)
		return mv_err(err, -EIO, "guard_kept: %s", sqlite3_errmsg(m->db));
	push(m->keep, vm->info.id, gpa, len);
	if (m->fusion)
		(void)mv_fusion_vm_keep(m->fusion, vm->fkey, gpa, len);   /* -ENOENT: not attached */
	return 0;
}

void guard_keep_attached(struct vmmgr *m, struct dvm *vm)
{
	for (size_t i = 0; m->keep && i < m->keep->n; i++) {
		const struct kept *k = &m->keep->k[i];
		if (strcmp(k->vm_id, vm->info.id))
			continue;
		(void)mv_fusion_vm_keep(m->fusion, vm->fkey, k->gpa, k->len);
		struct mv_error *err = NULL;
		uint32_t n = 0;
		int r = vm->ctl >= 0 ? send_keep(vm, k->gpa, k->len, &n, &err) : -ESRCH;
		if (r < 0)
			mv_log(MV_LOG_WARN, "vm %s: guard: marking moved pages 0x%llx+0x%llx in its "
			       "VMM: %s (the scanner skips them anyway)", vm->info.name,
			       (unsigned long long)k->gpa, (unsigned long long)k->len,
			       mv_error_msg(err, r));
		else
			mv_log(MV_LOG_INFO, "vm %s: guard: %u moved page(s) at gpa 0x%llx kept out of "
			       "fusion in VMM pid %d", vm->info.name, n, (unsigned long long)k->gpa,
			       vm->info.pid);
		mv_error_free(err);
	}
}

int guard_keep_spans(struct vmmgr *m, const char *vm_id, struct mv_migrate_span *out,
		     uint32_t cap, uint32_t *n)
{
	*n = 0;
	for (size_t i = 0; m->keep && i < m->keep->n; i++) {
		const struct kept *k = &m->keep->k[i];
		if (strcmp(k->vm_id, vm_id))
			continue;
		if (*n == cap)
			return -E2BIG;
		out[(*n)++] = (struct mv_migrate_span){.gpa = k->gpa, .len = k->len};
	}
	return 0;
}

uint64_t guard_keep_pages(struct vmmgr *m, const char *vm_id)
{
	uint64_t n = 0;
	for (size_t i = 0; m->keep && i < m->keep->n; i++)
		if (!strcmp(m->keep->k[i].vm_id, vm_id))
			n += m->keep->k[i].len / MV_PAGE_SIZE;
	return n;
}

void guard_keep_vm_removed(struct vmmgr *m, const char *vm_id)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(m->db, "DELETE FROM guard_kept WHERE vm_id=?", -1, &s, NULL) ==
	    SQLITE_OK) {
		sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_TRANSIENT);
		sqlite3_step(s);
	}
	sqlite3_finalize(s);
	struct guard_keep *gk = m->keep;
	size_t k = 0;
	for (size_t i = 0; gk && i < gk->n; i++)
		if (strcmp(gk->k[i].vm_id, vm_id))
			gk->k[k++] = gk->k[i];
	if (gk)
		gk->n = k;
}
