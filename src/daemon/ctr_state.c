/* Durable state of images and containers: two tables in memvisord's SQLite
 * database, so a restarted daemon knows which images it has and which
 * container shims to re-adopt. Live counters are not stored: they are read
 * again from each shim's stats.json. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/util.h"
#include "ctrmgr_i.h"

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS images("
	" name TEXT PRIMARY KEY, canonical TEXT NOT NULL, state TEXT NOT NULL,"
	" manifest TEXT NOT NULL, layers INTEGER NOT NULL, layers_bytes INTEGER NOT NULL,"
	" registry_bytes INTEGER NOT NULL, pulled_at INTEGER NOT NULL, error TEXT NOT NULL);"
	"CREATE TABLE IF NOT EXISTS containers("
	" id TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, image TEXT NOT NULL,"
	" canonical TEXT NOT NULL, command TEXT NOT NULL, state INTEGER NOT NULL,"
	" shim_pid INTEGER NOT NULL, created_at INTEGER NOT NULL, finished_at INTEGER NOT NULL,"
	" exit_code INTEGER NOT NULL, exit_signal INTEGER NOT NULL, exit_reason TEXT NOT NULL);";

int ctr_state_open(struct ctrmgr *c, struct mv_error **err)
{
	char *msg = NULL;
	if (sqlite3_exec(c->db, schema, NULL, NULL, &msg) != SQLITE_OK) {
		int r = mv_err(err, -EIO, "container state schema: %s", msg ? msg : "?");
		sqlite3_free(msg);
		return r;
	}
	return 0;
}

static void run(struct ctrmgr *c, sqlite3_stmt *s)
{
	if (sqlite3_step(s) != SQLITE_DONE)
		mv_log(MV_LOG_WARN, "container state: %s", sqlite3_errmsg(c->db));
	sqlite3_finalize(s);
}

void ctr_state_put_image(struct ctrmgr *c, const struct dimage *im)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(c->db, "REPLACE INTO images VALUES(?,?,?,?,?,?,?,?,?)", -1, &s,
			       NULL) != SQLITE_OK)
		return;
	const struct mv_image_status *st = &im->st;
	sqlite3_bind_text(s, 1, st->name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 2, im->canonical, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 3, st->state, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 4, st->manifest, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int64(s, 5, st->layers);
	sqlite3_bind_int64(s, 6, (sqlite3_int64)st->layers_bytes);
	sqlite3_bind_int64(s, 7, (sqlite3_int64)st->registry_bytes);
	sqlite3_bind_int64(s, 8, (sqlite3_int64)st->pulled_at);
	sqlite3_bind_text(s, 9, st->error, -1, SQLITE_TRANSIENT);
	run(c, s);
}

static void delete_row(struct ctrmgr *c, const char *sql, const char *key)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(c->db, sql, -1, &s, NULL) != SQLITE_OK)
		return;
	sqlite3_bind_text(s, 1, key, -1, SQLITE_TRANSIENT);
	run(c, s);
}

void ctr_state_delete_image(struct ctrmgr *c, const char *name)
{
	delete_row(c, "DELETE FROM images WHERE name=?", name);
}

void ctr_state_put_ctr(struct ctrmgr *c, const struct dctr *ct)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(c->db, "REPLACE INTO containers VALUES(?,?,?,?,?,?,?,?,?,?,?,?)", -1,
			       &s, NULL) != SQLITE_OK)
		return;
	const struct mv_ctr_info *i = &ct->info;
	sqlite3_bind_text(s, 1, i->id, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 2, i->name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 3, i->image, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 4, ct->canonical, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(s, 5, i->command, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(s, 6, (int)i->state);
	sqlite3_bind_int(s, 7, i->shim_pid);
	sqlite3_bind_int64(s, 8, (sqlite3_int64)i->created_at);
	sqlite3_bind_int64(s, 9, (sqlite3_int64)i->finished_at);
	sqlite3_bind_int(s, 10, i->exit_code);
	sqlite3_bind_int(s, 11, i->exit_signal);
	sqlite3_bind_text(s, 12, i->exit_reason, -1, SQLITE_TRANSIENT);
	run(c, s);
}

void ctr_state_delete_ctr(struct ctrmgr *c, const char *id)
{
	delete_row(c, "DELETE FROM containers WHERE id=?", id);
}

static void text(char *dst, size_t cap, sqlite3_stmt *s, int col)
{
	const unsigned char *t = sqlite3_column_text(s, col);
	snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

int ctr_state_load(struct ctrmgr *c, struct mv_error **err)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(c->db, "SELECT * FROM images ORDER BY name", -1, &s, NULL) != SQLITE_OK)
		return mv_err(err, -EIO, "state: %s", sqlite3_errmsg(c->db));
	while (sqlite3_step(s) == SQLITE_ROW) {
		struct dimage *im = calloc(1, sizeof(*im));
		struct dimage **v = realloc(c->images, (c->nimages + 1) * sizeof(*v));
		if (!im || !v)
			abort();
		c->images = v;
		text(im->st.name, sizeof(im->st.name), s, 0);
		text(im->canonical, sizeof(im->canonical), s, 1);
		text(im->st.state, sizeof(im->st.state), s, 2);
		text(im->st.manifest, sizeof(im->st.manifest), s, 3);
		im->st.layers = (uint32_t)sqlite3_column_int64(s, 4);
		im->st.layers_bytes = (uint64_t)sqlite3_column_int64(s, 5);
		im->st.registry_bytes = (uint64_t)sqlite3_column_int64(s, 6);
		im->st.pulled_at = (uint64_t)sqlite3_column_int64(s, 7);
		text(im->st.error, sizeof(im->st.error), s, 8);
		if (!strcmp(im->st.state, "pulling")) {
			/* Its worker died with the old daemon. */
			snprintf(im->st.state, sizeof(im->st.state), "failed");
			snprintf(im->st.error, sizeof(im->st.error), "pull interrupted by a daemon restart");
		}
		c->images[c->nimages++] = im;
	}
	sqlite3_finalize(s);
	if (sqlite3_prepare_v2(c->db, "SELECT * FROM containers ORDER BY created_at, id", -1, &s,
			       NULL) != SQLITE_OK)
		return mv_err(err, -EIO, "state: %s", sqlite3_errmsg(c->db));
	while (sqlite3_step(s) == SQLITE_ROW) {
		struct dctr *ct = calloc(1, sizeof(*ct));
		struct dctr **v = realloc(c->ctrs, (c->nctrs + 1) * sizeof(*v));
		if (!ct || !v)
			abort();
		c->ctrs = v;
		struct mv_ctr_info *i = &ct->info;
		text(i->id, sizeof(i->id), s, 0);
		text(i->name, sizeof(i->name), s, 1);
		text(i->image, sizeof(i->image), s, 2);
		text(ct->canonical, sizeof(ct->canonical), s, 3);
		text(i->command, sizeof(i->command), s, 4);
		int st = sqlite3_column_int(s, 5);
		i->state = st >= 0 && st < MV_CTR__COUNT ? (enum mv_ctr_state)st : MV_CTR_EXITED;
		i->shim_pid = sqlite3_column_int(s, 6);
		i->created_at = (uint64_t)sqlite3_column_int64(s, 7);
		i->finished_at = (uint64_t)sqlite3_column_int64(s, 8);
		i->exit_code = sqlite3_column_int(s, 9);
		i->exit_signal = sqlite3_column_int(s, 10);
		text(i->exit_reason, sizeof(i->exit_reason), s, 11);
		snprintf(ct->dir, sizeof(ct->dir), "%.*s/%s", PATH_MAX - 64, c->ctr_root, i->id);
		c->ctrs[c->nctrs++] = ct;
	}
	sqlite3_finalize(s);
	return 0;
}
