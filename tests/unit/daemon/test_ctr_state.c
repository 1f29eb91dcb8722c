/* Unit tests for the container side of memvisord's SQLite state
 * (src/daemon/ctr_state.c): images and containers round trip every field,
 * a pull cut short by a restart loads as failed, deletes stick. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "ctrmgr_i.h"

static char dir[] = "/tmp/mvctrstateXXXXXX";

static void open_db(struct ctrmgr *c)
{
	char path[PATH_MAX];
	memset(c, 0, sizeof(*c));
	snprintf(path, sizeof(path), "%s/memvisor.db", dir);
	assert_int_equal(sqlite3_open(path, &c->db), SQLITE_OK);
	snprintf(c->ctr_root, sizeof(c->ctr_root), "%s/containers", dir);
	struct mv_error *err = NULL;
	assert_int_equal(ctr_state_open(c, &err), 0);
}

static void close_db(struct ctrmgr *c)
{
	for (size_t i = 0; i < c->nimages; i++)
		free(c->images[i]);
	for (size_t i = 0; i < c->nctrs; i++)
		free(c->ctrs[i]);
	free(c->images);
	free(c->ctrs);
	sqlite3_close(c->db);
}

static void test_roundtrip(void **st)
{
	struct ctrmgr c;
	open_db(&c);
	struct dimage a = {0}, b = {0};
	snprintf(a.st.name, sizeof(a.st.name), "127.0.0.1:5000/test/a:v1");
	snprintf(a.canonical, sizeof(a.canonical), "127.0.0.1:5000/test/a@sha256:%064d", 1);
	snprintf(a.st.state, sizeof(a.st.state), "ready");
	snprintf(a.st.manifest, sizeof(a.st.manifest), "sha256:%064d", 1);
	a.st.layers = 3;
	a.st.layers_bytes = 1ULL << 40;
	a.st.registry_bytes = 12345;
	a.st.pulled_at = 1700000000;
	snprintf(b.st.name, sizeof(b.st.name), "r.io/b:latest");
	snprintf(b.st.state, sizeof(b.st.state), "pulling");
	ctr_state_put_image(&c, &a);
	ctr_state_put_image(&c, &b);
	struct dctr x = {0};
	snprintf(x.info.id, sizeof(x.info.id), "0123456789abcdef");
	snprintf(x.info.name, sizeof(x.info.name), "web");
	snprintf(x.info.image, sizeof(x.info.image), "%s", a.st.name);
	snprintf(x.canonical, sizeof(x.canonical), "%s", a.canonical);
	snprintf(x.info.command, sizeof(x.info.command), "sh -c 'echo hi'");
	x.info.state = MV_CTR_EXITED;
	x.info.shim_pid = 4242;
	x.info.created_at = 1700000001;
	x.info.finished_at = 1700000002;
	x.info.exit_code = 137;
	snprintf(x.info.exit_reason, sizeof(x.info.exit_reason), "exited with code 137");
	ctr_state_put_ctr(&c, &x);
	x.info.exit_code = 7;   /* REPLACE: the row follows */
	ctr_state_put_ctr(&c, &x);
	close_db(&c);

	open_db(&c);
	struct mv_error *err = NULL;
	assert_int_equal(ctr_state_load(&c, &err), 0);
	assert_int_equal(c.nimages, 2);
	assert_int_equal(c.nctrs, 1);
	struct dimage *ia = c.images[0], *ib = c.images[1];
	assert_string_equal(ia->st.name, a.st.name);
	assert_string_equal(ia->canonical, a.canonical);
	assert_string_equal(ia->st.state, "ready");
	assert_string_equal(ia->st.manifest, a.st.manifest);
	assert_int_equal(ia->st.layers, 3);
	assert_true(ia->st.layers_bytes == 1ULL << 40);
	assert_int_equal(ia->st.registry_bytes, 12345);
	assert_int_equal(ia->st.pulled_at, 1700000000);
	/* Its puller died with the old daemon. */
	assert_string_equal(ib->st.state, "failed");
	assert_non_null(strstr(ib->st.error, "restart"));
	struct dctr *cx = c.ctrs[0];
	assert_string_equal(cx->info.id, x.info.id);
	assert_string_equal(cx->info.name, "web");
	assert_string_equal(cx->info.image, a.st.name);
	assert_string_equal(cx->canonical, a.canonical);
	assert_string_equal(cx->info.command, x.info.command);
	assert_int_equal(cx->info.state, MV_CTR_EXITED);
	assert_int_equal(cx->info.shim_pid, 4242);
	assert_int_equal(cx->info.exit_code, 7);
	assert_string_equal(cx->info.exit_reason, x.info.exit_reason);
	char want[PATH_MAX + 32];
	snprintf(want, sizeof(want), "%s/containers/%s", dir, x.info.id);
	assert_string_equal(cx->dir, want);
	ctr_state_delete_ctr(&c, x.info.id);
	ctr_state_delete_image(&c, b.st.name);
	close_db(&c);

	open_db(&c);
	assert_int_equal(ctr_state_load(&c, &err), 0);
	assert_int_equal(c.nimages, 1);
	assert_int_equal(c.nctrs, 0);
	close_db(&c);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		r = r ? r : 1;
	return r;
}
