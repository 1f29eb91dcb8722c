/* Unit tests of the container shim's input parsers (src/ctr/spec.c): ctr.json
 * and the runtime config built from an image's OCI config, in particular the
 * User lookup in the image's /etc/passwd (empty fields, a symlink pointing
 * out of the root, a FIFO) and that every rejection names its field. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../../../src/ctr/ctr_i.h"

static char root[64], rootfs[128], passwd[160], host[160];

static int setup(void **state)
{
	snprintf(root, sizeof(root), "/tmp/test-ctr-spec.XXXXXX");
	if (!mkdtemp(root))
		return -1;
	snprintf(rootfs, sizeof(rootfs), "%s/rootfs", root);
	snprintf(passwd, sizeof(passwd), "%s/etc/passwd", rootfs);
	snprintf(host, sizeof(host), "%s/host-passwd", root);
	char etc[160];
	snprintf(etc, sizeof(etc), "%s/etc", rootfs);
	return mkdir(rootfs, 0755) || mkdir(etc, 0755) ? -1 : 0;
}

static int teardown(void **state)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	return system(cmd) == 0 ? 0 : -1;
}

static void put(const char *path, const char *text)
{
	unlink(path);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* Builds the runtime config for an image config whose User is user; returns
 * the error (caller frees), or NULL with the uid and gid set. */
static struct mv_error *with_user(const char *user, long *uid, long *gid)
{
	char cfg[512];
	snprintf(cfg, sizeof(cfg), "{\"config\":{\"Cmd\":[\"true\"],\"User\":\"%s\"}}", user);
	struct ctr_spec s = {.id = "mv-1"};
	struct mv_error *err = NULL;
	char *out = NULL;
	if (mv_ctr_bundle_config(&s, cfg, strlen(cfg), rootfs, "h", &out, &err) < 0) {
		assert_non_null(err);
		return err;
	}
	json_t *o = json_loads(out, 0, NULL), *u = json_object_get(json_object_get(o, "process"), "user");
	*uid = (long)json_integer_value(json_object_get(u, "uid"));
	*gid = (long)json_integer_value(json_object_get(u, "gid"));
	json_decref(o);
	free(out);
	return NULL;
}

static void test_user_lookup(void **state)
{
	long uid = -1, gid = -1;
	put(passwd, "root::0:0:root:/root:/bin/sh\n"
		    "app::1000:1001::/home/app:/bin/sh\n"
		    "web:x:33:34:www:/var/www:/usr/sbin/nologin\n"
		    "bad:x:12x:1:::\n");
	assert_null(with_user("web", &uid, &gid));
	assert_int_equal(uid, 33);
	assert_int_equal(gid, 34);
	/* An empty password field is a field: app's gid is 1001, not its (empty) GECOS. */
	assert_null(with_user("app", &uid, &gid));
	assert_int_equal(uid, 1000);
	assert_int_equal(gid, 1001);
	assert_null(with_user("app:5", &uid, &gid));
	assert_int_equal(gid, 5);
	assert_null(with_user("77", &uid, &gid));
	assert_int_equal(uid, 77);
	assert_int_equal(gid, 0);   /* no entry for 77: group 0, as runc */
	assert_null(with_user("33", &uid, &gid));
	assert_int_equal(gid, 34);  /* the uid's entry gives its group */
	assert_null(with_user("33:7", &uid, &gid));
	assert_int_equal(gid, 7);
	struct mv_error *e;
	const char *bad[] = {"ghost", "bad", "web:staff", ":1", "4294967296", "app:-1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		e = with_user(bad[i], &uid, &gid);
		if (!e)
			fail_msg("User %s accepted", bad[i]);
		assert_int_equal(e->code, -EBADMSG);
		assert_string_equal(e->field, "User");
		mv_error_free(e);
	}
}

/* The image's /etc/passwd is a symlink to a host file: the lookup stays in the root. */
static void test_user_symlink_escape(void **state)
{
	long uid = -1, gid = -1;
	put(host, "evil:x:4242:4242::/:/bin/sh\n");
	unlink(passwd);
	assert_int_equal(symlink(host, passwd), 0);
	struct mv_error *e = with_user("evil", &uid, &gid);
	assert_non_null(e);
	assert_string_equal(e->field, "User");
	mv_error_free(e);
	/* A relative symlink inside the image still works. */
	char real[192];
	snprintf(real, sizeof(real), "%s/etc/passwd.real", rootfs);
	put(real, "evil:x:4242:4243::/:/bin/sh\n");
	unlink(passwd);
	assert_int_equal(symlink("passwd.real", passwd), 0);
	assert_null(with_user("evil", &uid, &gid));
	assert_int_equal(gid, 4243);
	unlink(real);
	unlink(passwd);
}

/* A FIFO as /etc/passwd is refused at once instead of blocking the shim. */
static void test_user_fifo(void **state)
{
	long uid, gid;
	unlink(passwd);
	assert_int_equal(mkfifo(passwd, 0644), 0);
	struct mv_error *e = with_user("app", &uid, &gid);
	assert_non_null(e);
	assert_string_equal(e->field, "User");
	mv_error_free(e);
	unlink(passwd);
}

/* Every rejected image config field is named. */
static void test_image_config_fields(void **state)
{
	static const struct {
		const char *cfg, *field;
	} bad[] = {
		{"{\"config\":[]}", "config"},
		{"{\"config\":{\"Entrypoint\":\"sh\"}}", "Entrypoint"},
		{"{\"config\":{\"Cmd\":[\"sh\",1]}}", "Cmd"},
		{"{\"config\":{\"Entrypoint\":[\"\"],\"Cmd\":[\"x\"]}}", "Entrypoint"},
		{"{\"config\":{\"Cmd\":[\"\"]}}", "Cmd"},
		{"{\"config\":{}}", "cmd"},
		{"{\"config\":{\"Cmd\":[\"x\"],\"Env\":[\"=x\"]}}", "Env"},
		{"{\"config\":{\"Cmd\":[\"x\"],\"Env\":{}}}", "Env"},
		{"{\"config\":{\"Cmd\":[\"x\"],\"WorkingDir\":\"tmp\"}}", "WorkingDir"},
		{"{\"config\":{\"Cmd\":[\"x\"],\"WorkingDir\":1}}", "WorkingDir"},
		{"{\"config\":{\"Cmd\":[\"x\"],\"User\":[]}}", "User"},
	};
	struct ctr_spec s = {.id = "mv-1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct mv_error *e = NULL;
		char *out = NULL;
		assert_true(mv_ctr_bundle_config(&s, bad[i].cfg, strlen(bad[i].cfg), rootfs, "h", &out,
						 &e) < 0);
		assert_null(out);
		if (strcmp(e->field, bad[i].field))
			fail_msg("%s: field '%s', want %s (%s)", bad[i].cfg, e->field, bad[i].field, e->msg);
		mv_error_free(e);
	}
}

static void test_spec_parse(void **state)
{
	static const char ok[] = "{\"id\":\"mv-1a\",\"image\":\"r.io/a\",\"mapping_db\":\"/m\","
				 "\"store_dir\":\"/s\",\"registry_url\":\"http://r\",\"repo\":\"a\","
				 "\"crun\":\"/c\",\"network\":\"none\",\"cmd\":[\"sh\"],\"env\":[\"A=1\"]}";
	struct ctr_spec s;
	struct mv_error *e = NULL;
	assert_int_equal(mv_ctr_spec_parse(ok, strlen(ok), &s, &e), 0);
	assert_true(s.net_none);
	assert_int_equal(s.ncmd, 1);
	assert_int_equal(s.stop_grace_ms, 10000);
	mv_ctr_spec_free(&s);
	static const struct {
		const char *from, *to, *field;
	} bad[] = {
		{"\"mv-1a\"", "\"\"", "id"}, {"\"mv-1a\"", "\"MV\"", "id"}, {"\"/m\"", "\"m\"", "mapping_db"},
		{"\"none\"", "\"bridge\"", "network"}, {"[\"sh\"]", "[1]", "cmd"}, {"\"a\",", "\"a\",\"x\":1,", "x"},
		{"\"a\",", "\"a\",\"\":1,", "ctr.json"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char buf[512];
		const char *at = strstr(ok, bad[i].from);
		snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - ok), ok, bad[i].to, at + strlen(bad[i].from));
		e = NULL;
		assert_int_equal(mv_ctr_spec_parse(buf, strlen(buf), &s, &e), -EINVAL);
		if (strcmp(e->field, bad[i].field))
			fail_msg("%s: field '%s', want %s", buf, e->field, bad[i].field);
		mv_error_free(e);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_user_lookup),
		cmocka_unit_test(test_user_symlink_escape),
		cmocka_unit_test(test_user_fifo),
		cmocka_unit_test(test_image_config_fields),
		cmocka_unit_test(test_spec_parse),
	};
	return cmocka_run_group_tests_name("ctr_spec", tests, setup, teardown);
}
