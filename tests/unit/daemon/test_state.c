/* Unit tests for memvisord's SQLite state (src/daemon/state.c): round trip
 * of every field, unique names, delete, reopen after a crash-like close. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "daemon_i.h"

static char dir[] = "/tmp/mvstateXXXXXX";

static struct mv_vm_info sample(const char *id, const char *name)
{
	struct mv_vm_info v = {.state = MV_VM_RUNNING, .memory = 64ULL << 30, .vcpus = 8,
			       .backing = MV_MEM_BACKING_4K, .pid = 4242, .created_at = 1700000000,
			       .exit_code = -1, .exit_signal = 9};
	snprintf(v.id, sizeof(v.id), "%s", id);
	snprintf(v.name, sizeof(v.name), "%s", name);
	snprintf(v.exit_reason, sizeof(v.exit_reason), "killed by signal 9 (Killed)");
	v.workload = (struct mv_wl_params){.kind = MV_WL_KVSTORE, .pattern = MV_PAT_HOTCOLD,
					   .seed = UINT64_MAX - 5, .wss_bytes = 1ULL << 33,
					   .rate = 123456, .put_pct = 70, .hot_pct = 90};
	return v;
}

static void open_mgr(struct vmmgr *m)
{
	memset(m, 0, sizeof(*m));
	m->cfg.state_dir = dir;
	struct mv_error *err = NULL;
	assert_int_equal(state_open(m, &err), 0);
}

static void test_roundtrip(void **st)
{
	struct vmmgr m;
	open_mgr(&m);
	struct mv_vm_info a = sample("00000000000000aa", "alpha"), b = sample("00000000000000bb", "beta");
	b.created_at++;
	struct mv_error *err = NULL;
	assert_int_equal(state_insert(&m, &a, &err), 0);
	assert_int_equal(state_insert(&m, &b, &err), 0);
	struct mv_vm_info dup = sample("00000000000000cc", "alpha");
	assert_int_equal(state_insert(&m, &dup, &err), -EEXIST);
	assert_string_equal(err->field, "name");
	mv_error_free(err);
	err = NULL;
	a.state = MV_VM_CRASHED;
	assert_int_equal(state_update(&m, &a), 0);
	state_close(&m);

	open_mgr(&m);
	struct mv_vm_info *rows;
	size_t n;
	assert_int_equal(state_load(&m, &rows, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(rows[0].name, "alpha");
	assert_int_equal(rows[0].state, MV_VM_CRASHED);
	struct mv_vm_info want = sample("00000000000000aa", "alpha");
	want.state = MV_VM_CRASHED;
	assert_memory_equal(&rows[0].workload, &want.workload, sizeof(want.workload));
	assert_int_equal(rows[0].memory, want.memory);
	assert_int_equal(rows[0].exit_signal, 9);
	assert_string_equal(rows[0].exit_reason, want.exit_reason);
	free(rows);
	assert_int_equal(state_delete(&m, "00000000000000aa"), 0);
	assert_int_equal(state_load(&m, &rows, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(rows[0].id, "00000000000000bb");
	free(rows);
	state_close(&m);
}

static void test_unwritable_dir(void **st)
{
	struct vmmgr m = {.cfg.state_dir = "/proc/definitely/not/here"};
	struct mv_error *err = NULL;
	assert_int_equal(state_open(&m, &err), -EIO);
	assert_non_null(strstr(err->msg, "memvisor.db"));
	mv_error_free(err);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_unwritable_dir),
	};
	int r = cmocka_run_group_tests(tests, NULL, NULL);
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		r = 1;
	return r;
}
