/* memvisord's durable state: one SQLite database (WAL) in the state dir with a
 * row per VM, so a restarted daemon knows which VMMs to re-adopt. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/api.h"
#include "memvisor/util.h"
#include "daemon_i.h"

static const char schema[] =
	"PRAGMA journal_mode=WAL;"
	"PRAGMA synchronous=NORMAL;"
	"CREATE TABLE IF NOT EXISTS vms("
	" id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, memory INTEGER NOT NULL,"
	" vcpus INTEGER NOT NULL, backing INTEGER NOT NULL, wl_kind INTEGER NOT NULL,"
	" wl_pattern INTEGER NOT NULL, wl_seed INTEGER NOT NULL, wl_wss INTEGER NOT NULL,"
	" wl_rate INTEGER NOT NULL, wl_put_pct INTEGER NOT NULL, wl_hot_pct INTEGER NOT NULL,"
	" state INTEGER NOT NULL, pid INTEGER NOT NULL, created_at INTEGER NOT NULL,"
	" exit_code INTEGER NOT NULL, exit_signal INTEGER NOT NULL, exit_reason TEXT NOT NULL,"
	" vmm_gen INTEGER NOT NULL, fusion INTEGER NOT NULL DEFAULT 0);"
	/* The guard policy, as GET /v1/guard/policy shows it (one row). */
	"CREATE TABLE IF NOT EXISTS guard_policy(id INTEGER PRIMARY KEY CHECK(id = 1),"
	" json TEXT NOT NULL);";
/* Version 1 databases lack the fusion column; adding it twice fails harmlessly. */
static const char upgrade_v2[] =
	"ALTER TABLE vms ADD COLUMN fusion INTEGER NOT NULL DEFAULT 0;";

int state_schema(sqlite3 *db, const char *sql, const char *what, struct mv_error **err)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK)
		return 0;
	int r = mv_err(err, -EIO, "%s schema: %s", what, msg ? msg : "?");
	sqlite3_free(msg);
	return r;
}

int state_open(struct vmmgr *m, struct mv_error **err)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/memvisor.db", m->cfg.state_dir);
	if (sqlite3_open_v2(path, &m->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			    SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
		int r = mv_err(err, -EIO, "open %s: %s", path, sqlite3_errmsg(m->db));
		sqlite3_close(m->db);
		m->db = NULL;
		return r;
	}
	sqlite3_busy_timeout(m->db, 5000);
	int r = state_schema(m->db, schema, path, err);
	if (r < 0) {
		state_close(m);
		return r;
	}
	(void)sqlite3_exec(m->db, upgrade_v2, NULL, NULL, NULL);
	(void)sqlite3_exec(m->db, "PRAGMA user_version=2;", NULL, NULL, NULL);
	return 0;
}

void state_close(struct vmmgr *m)
{
	sqlite3_close(m->db);
	m->db = NULL;
}

static int bind_vm(sqlite3_stmt *s, const struct mv_vm_info *vm)
{
	int i = 1;
	sqlite3_bind_text(s, i++, vm->id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, i++, vm->name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, i++, (sqlite3_int64)vm->memory);
	sqlite3_bind_int(s, i++, (int)vm->vcpus);
	sqlite3_bind_int(s, i++, (int)vm->backing);
	sqlite3_bind_int(s, i++, (int)vm->workload.kind);
	sqlite3_bind_int(s, i++, (int)vm->workload.pattern);
	sqlite3_bind_int64(s, i++, (sqlite3_int64)vm->workload.seed);
	sqlite3_bind_int64(s, i++, (sqlite3_int64)vm->workload.wss_bytes);
	sqlite3_bind_int64(s, i++, (sqlite3_int64)vm->workload.rate);
	sqlite3_bind_int(s, i++, (int)vm->workload.put_pct);
	sqlite3_bind_int(s, i++, (int)vm->workload.hot_pct);
	sqlite3_bind_int(s, i++, (int)vm->state);
	sqlite3_bind_int(s, i++, vm->pid);
	sqlite3_bind_int64(s, i++, (sqlite3_int64)vm->created_at);
	sqlite3_bind_int(s, i++, vm->exit_code);
	sqlite3_bind_int(s, i++, vm->exit_signal);
	sqlite3_bind_text(s, i++, vm->exit_reason, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, i++, vm->vmm_gen);
	sqlite3_bind_int(s, i++, vm->fusion);
	return i;
}

static int exec_vm(struct vmmgr *m, const char *sql, const struct mv_vm_info *vm,
		   struct mv_error **err)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(m->db, sql, -1, &s, NULL) != SQLITE_OK)
		return mv_err(err, -EIO, "state: %s", sqlite3_errmsg(m->db));
	bind_vm(s, vm);
	int rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if (rc == SQLITE_CONSTRAINT)
		return mv_err_field(err, -EEXIST, "name", "a VM named '%s' exists", vm->name);
	if (rc != SQLITE_DONE)
		return mv_err(err, -EIO, "state: %s", sqlite3_errmsg(m->db));
	return 0;
}

int state_insert(struct vmmgr *m, const struct mv_vm_info *vm, struct mv_error **err)
{
	return exec_vm(m, "INSERT INTO vms VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", vm, err);
}

int state_update(struct vmmgr *m, const struct mv_vm_info *vm)
{
	return exec_vm(m, "REPLACE INTO vms VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", vm, NULL);
}

int state_delete(struct vmmgr *m, const char *id)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(m->db, "DELETE FROM vms WHERE id=?", -1, &s, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(s, 1, id, -1, SQLITE_TRANSIENT);
	int rc = sqlite3_step(s);
	sqlite3_finalize(s);
	return rc == SQLITE_DONE ? 0 : -EIO;
}

static void copy_text(char *dst, size_t cap, const unsigned char *src)
{
	snprintf(dst, cap, "%s", src ? (const char *)src : "");
}

int state_load(struct vmmgr *m, struct mv_vm_info **out, size_t *n, struct mv_error **err)
{
	sqlite3_stmt *s = NULL;
	*out = NULL;
	*n = 0;
	if (sqlite3_prepare_v2(m->db, "SELECT * FROM vms ORDER BY created_at, id", -1, &s, NULL) !=
	    SQLITE_OK)
		return mv_err(err, -EIO, "state: %s", sqlite3_errmsg(m->db));
	size_t cap = 0;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		*out = mv_grow(*out, *n, &cap, sizeof(**out), 16);
		struct mv_vm_info *vm = &(*out)[(*n)++];
		memset(vm, 0, sizeof(*vm));
		int i = 0;
		copy_text(vm->id, sizeof(vm->id), sqlite3_column_text(s, i++));
		copy_text(vm->name, sizeof(vm->name), sqlite3_column_text(s, i++));
		vm->memory = (uint64_t)sqlite3_column_int64(s, i++);
		vm->vcpus = (uint32_t)sqlite3_column_int(s, i++);
		vm->backing = (enum mv_mem_backing)sqlite3_column_int(s, i++);
		vm->workload.kind = (uint32_t)sqlite3_column_int(s, i++);
		vm->workload.pattern = (uint32_t)sqlite3_column_int(s, i++);
		vm->workload.seed = (uint64_t)sqlite3_column_int64(s, i++);
		vm->workload.wss_bytes = (uint64_t)sqlite3_column_int64(s, i++);
		vm->workload.rate = (uint64_t)sqlite3_column_int64(s, i++);
		vm->workload.put_pct = (uint32_t)sqlite3_column_int(s, i++);
		vm->workload.hot_pct = (uint32_t)sqlite3_column_int(s, i++);
		int st = sqlite3_column_int(s, i++);
		vm->state = st >= 0 && st < MV_VM__COUNT ? (enum mv_vm_state)st : MV_VM_CRASHED;
		vm->pid = sqlite3_column_int(s, i++);
		vm->created_at = (uint64_t)sqlite3_column_int64(s, i++);
		vm->exit_code = sqlite3_column_int(s, i++);
		vm->exit_signal = sqlite3_column_int(s, i++);
		copy_text(vm->exit_reason, sizeof(vm->exit_reason), sqlite3_column_text(s, i++));
		vm->vmm_gen = (uint32_t)sqlite3_column_int64(s, i++);
		vm->fusion = sqlite3_column_int(s, i++) != 0;
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		free(*out);
		*out = NULL;
		*n = 0;
		return mv_err(err, -EIO, "state: %s", sqlite3_errmsg(m->db));
	}
	return 0;
}

int state_policy_save(struct vmmgr *m, const struct mv_guard_policy *p)
{
	char *json = mv_api_encode_guard_policy(p);
	sqlite3_stmt *s = NULL;
	int rc = SQLITE_ERROR;
	if (json && sqlite3_prepare_v2(m->db, "INSERT OR REPLACE INTO guard_policy(id, json) "
				       "VALUES(1, ?)", -1, &s, NULL) == SQLITE_OK) {
		sqlite3_bind_text(s, 1, json, -1, SQLITE_TRANSIENT);
		rc = sqlite3_step(s);
	}
	sqlite3_finalize(s);
	free(json);
	if (rc != SQLITE_DONE) {
		mv_log(MV_LOG_ERROR, "state: save guard policy: %s", sqlite3_errmsg(m->db));
		return -EIO;
	}
	return 0;
}

/* The saved policy over the defaults in *p; 0 when none was saved. A row
 * that no longer decodes (or validates) is reported and ignored. */
int state_policy_load(struct vmmgr *m, struct mv_guard_policy *p)
{
	sqlite3_stmt *s = NULL;
	int r = 0;
	if (sqlite3_prepare_v2(m->db, "SELECT json FROM guard_policy WHERE id = 1", -1, &s,
			       NULL) != SQLITE_OK) {
		mv_log(MV_LOG_ERROR, "state: load guard policy: %s", sqlite3_errmsg(m->db));
		return -EIO;
	}
	if (sqlite3_step(s) == SQLITE_ROW) {
		const char *json = (const char *)sqlite3_column_text(s, 0);
		struct mv_guard_policy n = *p;
		struct mv_error *err = NULL;
		r = json ? mv_api_decode_guard_policy(json, strlen(json), &n, &err) : -EINVAL;
		if (r == 0)
			r = mv_guard_policy_check(&n, &err);
		if (r == 0) {
			*p = n;
			r = 1;
		} else {
			mv_log(MV_LOG_ERROR, "state: saved guard policy ignored: %s",
			       mv_error_msg(err, r));
		}
		mv_error_free(err);
	}
	sqlite3_finalize(s);
	return r;
}
