/* memvisord's SQLite record of the guard's detections: the recent events
 * (guard_events, the API's history) and each suspect's flagged signals and
 * fusion exclusion (guard_suspects). A restarted daemon (crash, upgrade)
 * re-adopts running VMs; without this it would forget who was caught,
 * re-admit an excluded attacker to fusion, and detect it again. Rows are
 * checked as they load: a malformed one is skipped with a warning. Lock held. */
#include <errno.h>
#include <string.h>
#include "memvisor/util.h"
#include "daemon_i.h"

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS guard_events(id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL,"
	" suspect TEXT NOT NULL, victim TEXT NOT NULL, signal TEXT NOT NULL, action TEXT NOT NULL,"
	" outcome TEXT NOT NULL, rule TEXT NOT NULL, evidence INTEGER NOT NULL,"
	" evidence_of INTEGER NOT NULL, gpa INTEGER NOT NULL, latency_ms REAL NOT NULL);"
	"CREATE TABLE IF NOT EXISTS guard_suspects(vm_id TEXT PRIMARY KEY,"
	" flagged INTEGER NOT NULL, excluded INTEGER NOT NULL);";

int detect_record_init(struct vmmgr *m, struct mv_error **err)
{
	return state_schema(m->db, schema, "guard record", err);
}

static void step(struct vmmgr *m, sqlite3_stmt *s, const char *what)
{
	if (!s || sqlite3_step(s) != SQLITE_DONE)
		mv_log(MV_LOG_WARN, "guard: recording %s: %s", what, sqlite3_errmsg(m->db));
	sqlite3_finalize(s);
}

void detect_record_event(struct vmmgr *m, const struct mv_guard_event_info *e, size_t keep)
{
	sqlite3_stmt *s = NULL;
	sqlite3_prepare_v2(m->db, "INSERT OR REPLACE INTO guard_events(id, time_ms, suspect, victim, "
			   "signal, action, outcome, rule, evidence, evidence_of, gpa, latency_ms) "
			   "VALUES(?,?,?,?,?,?,?,?,?,?,?,?)", -1, &s, NULL);
	if (s) {
		const char *txt[] = {e->suspect, e->victim, e->signal, e->action, e->outcome, e->rule};
		sqlite3_bind_int64(s, 1, (sqlite3_int64)e->id);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)e->time_ms);
		for (int i = 0; i < 6; i++)
			sqlite3_bind_text(s, 3 + i, txt[i], -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 9, (sqlite3_int64)e->evidence);
		sqlite3_bind_int64(s, 10, (sqlite3_int64)e->evidence_of);
		sqlite3_bind_int64(s, 11, (sqlite3_int64)e->gpa);
		sqlite3_bind_double(s, 12, e->latency_ms);
	}
	step(m, s, "an event");
	if (e->id <= keep)
		return;
	s = NULL;
	sqlite3_prepare_v2(m->db, "DELETE FROM guard_events WHERE id <= ?", -1, &s, NULL);
	if (s)
		sqlite3_bind_int64(s, 1, (sqlite3_int64)(e->id - keep));
	step(m, s, "the event history");
}

void detect_record_suspect(struct vmmgr *m, const struct dvm *vm)
{
	uint32_t flagged = 0;
	for (int i = 0; i < MV_SIG__COUNT; i++)
		flagged |= (uint32_t)vm->det.flagged[i] << i;
	sqlite3_stmt *s = NULL;
	sqlite3_prepare_v2(m->db, "INSERT OR REPLACE INTO guard_suspects VALUES(?,?,?)", -1, &s, NULL);
	if (s) {
		sqlite3_bind_text(s, 1, vm->info.id, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, flagged);
		sqlite3_bind_int(s, 3, vm->info.fusion_excluded);
	}
	step(m, s, "a suspect");
}

void detect_record_forget(struct vmmgr *m, const char *vm_id)
{
	sqlite3_stmt *s = NULL;
	sqlite3_prepare_v2(m->db, "DELETE FROM guard_suspects WHERE vm_id = ?", -1, &s, NULL);
	if (s)
		sqlite3_bind_text(s, 1, vm_id, -1, SQLITE_STATIC);
	step(m, s, "a removed VM");
}

static bool text(sqlite3_stmt *s, int col, char *out, size_t cap)
{
	const unsigned char *t = sqlite3_column_text(s, col);
	if (!t || strlen((const char *)t) >= cap)
		return false;
	memcpy(out, t, strlen((const char *)t) + 1);
	return true;
}

/* Events oldest first, through add (which fills the ring and its ids). */
void detect_record_load(struct vmmgr *m, void (*add)(struct vmmgr *m,
						     const struct mv_guard_event_info *e))
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(m->db, "SELECT id, time_ms, suspect, victim, signal, action, outcome, rule, evidence, "
			       "evidence_of, gpa, latency_ms FROM guard_events ORDER BY id", -1, &s, NULL) ==
	    SQLITE_OK) {
		while (sqlite3_step(s) == SQLITE_ROW) {
			struct mv_guard_event_info e = {0};
			bool ok = sqlite3_column_int64(s, 0) > 0 && sqlite3_column_int64(s, 1) >= 0 &&
				  text(s, 2, e.suspect, sizeof(e.suspect)) &&
				  text(s, 3, e.victim, sizeof(e.victim)) &&
				  text(s, 4, e.signal, sizeof(e.signal)) &&
				  text(s, 5, e.action, sizeof(e.action)) &&
				  text(s, 6, e.outcome, sizeof(e.outcome)) &&
				  text(s, 7, e.rule, sizeof(e.rule));
			if (!ok) {
				mv_log(MV_LOG_WARN, "guard: ignoring a malformed guard_events row");
				continue;
			}
			e.id = (uint64_t)sqlite3_column_int64(s, 0);
			e.time_ms = (uint64_t)sqlite3_column_int64(s, 1);
			e.evidence = (uint64_t)sqlite3_column_int64(s, 8);
			e.evidence_of = (uint64_t)sqlite3_column_int64(s, 9);
			e.gpa = (uint64_t)sqlite3_column_int64(s, 10);
			e.latency_ms = sqlite3_column_double(s, 11);
			add(m, &e);
		}
	}
	sqlite3_finalize(s);
	s = NULL;
	if (sqlite3_prepare_v2(m->db, "SELECT vm_id, flagged, excluded FROM guard_suspects", -1, &s,
			       NULL) != SQLITE_OK)
		return;
	while (sqlite3_step(s) == SQLITE_ROW) {
		const unsigned char *id = sqlite3_column_text(s, 0);
		struct dvm *vm = id ? vmmgr_find(m, (const char *)id, NULL) : NULL;
		if (!vm)
			continue;   /* removed while we were down */
		uint64_t flagged = (uint64_t)sqlite3_column_int64(s, 1);
		for (int i = 0; i < MV_SIG__COUNT; i++)
			vm->det.flagged[i] = (flagged >> i) & 1;
		vm->info.fusion_excluded = sqlite3_column_int(s, 2) != 0;
	}
	sqlite3_finalize(s);
}
