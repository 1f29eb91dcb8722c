/* Codec tests: every rejection class of mv_api_decode_vm_spec (field path and
 * HTTP status), defaults, and the encoders round-tripped through jansson. */
#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "memvisor/api.h"
#include "test_api.h"

#define WL_IDLE "\"workload\":{\"kind\":\"idle\"}"

static int decode(const char *json, struct mv_vm_spec *spec, struct mv_error **err)
{
	return mv_api_decode_vm_spec(json, strlen(json), spec, err);
}

struct bad { const char *json; const char *field; };

static const struct bad bad_specs[] = {
	/* malformed / not an object / duplicates: the body as a whole */
	{"", "body"},
	{"{\"name\":", "body"},
	{"{\"name\":\"a\"} trailing", "body"},
	{"[]", "body"},
	{"\"vm\"", "body"},
	{"42", "body"},
	{"null", "body"},
	{"{\"name\":\"a\",\"name\":\"b\",\"memory\":4096," WL_IDLE "}", "body"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"idle\",\"kind\":\"idle\"}}", "body"},
	{"{\"name\":\"a\\u0000b\",\"memory\":4096," WL_IDLE "}", "body"},
	/* unknown fields at any level */
	{"{\"name\":\"a\",\"memory\":4096," WL_IDLE ",\"extra\":1}", "extra"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"idle\",\"speed\":1}}", "workload.speed"},
	{"{\"\":1,\"name\":\"a\",\"memory\":4096," WL_IDLE "}", "body"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"idle\",\"\":1}}", "workload"},
	/* required fields */
	{"{\"memory\":4096," WL_IDLE "}", "name"},
	{"{\"name\":\"a\"," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":4096}", "workload"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{}}", "workload.kind"},
	/* names */
	{"{\"name\":\"\",\"memory\":4096," WL_IDLE "}", "name"},
	{"{\"name\":\"Web\",\"memory\":4096," WL_IDLE "}", "name"},
	{"{\"name\":\"-a\",\"memory\":4096," WL_IDLE "}", "name"},
	{"{\"name\":\"a b\",\"memory\":4096," WL_IDLE "}", "name"},
	{"{\"name\":\"a/b\",\"memory\":4096," WL_IDLE "}", "name"},
	{"{\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",\"memory\":4096," WL_IDLE "}", "name"},
	{"{\"name\":1,\"memory\":4096," WL_IDLE "}", "name"},
	{"{\"name\":null,\"memory\":4096," WL_IDLE "}", "name"},
	/* memory */
	{"{\"name\":\"a\",\"memory\":0," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":4095," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":-4096," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":4096.0," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":true," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":null," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":{}," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":\"1.5K\"," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":\"nan\"," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":\"inf\"," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":\"0x1000\"," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":\" 4096\"," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":\"-4K\"," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":\"4e3\"," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":\"64MM\"," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":\"\"," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":\"2T\"," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":1099511631872," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":\"99999999999999999999999T\"," WL_IDLE "}", "memory"},
	{"{\"name\":\"a\",\"memory\":99999999999999999999," WL_IDLE "}", "body"},
	/* vcpus */
	{"{\"name\":\"a\",\"memory\":4096,\"vcpus\":0," WL_IDLE "}", "vcpus"},
	{"{\"name\":\"a\",\"memory\":4096,\"vcpus\":65," WL_IDLE "}", "vcpus"},
	{"{\"name\":\"a\",\"memory\":4096,\"vcpus\":-1," WL_IDLE "}", "vcpus"},
	{"{\"name\":\"a\",\"memory\":4096,\"vcpus\":\"2\"," WL_IDLE "}", "vcpus"},
	{"{\"name\":\"a\",\"memory\":4096,\"vcpus\":2.5," WL_IDLE "}", "vcpus"},
	{"{\"name\":\"a\",\"memory\":4096,\"vcpus\":false," WL_IDLE "}", "vcpus"},
	/* backing */
	{"{\"name\":\"a\",\"memory\":4096,\"backing\":\"2m\"," WL_IDLE "}", "backing"},
	{"{\"name\":\"a\",\"memory\":4096,\"backing\":\"AUTO\"," WL_IDLE "}", "backing"},
	{"{\"name\":\"a\",\"memory\":4096,\"backing\":0," WL_IDLE "}", "backing"},
	/* workload */
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":[]}", "workload"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":null}", "workload"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"fork\"}}", "workload.kind"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":1}}", "workload.kind"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"Idle\"}}", "workload.kind"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"idle\",\"seed\":-1}}", "workload.seed"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"idle\",\"seed\":1.0}}", "workload.seed"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"idle\",\"seed\":\"1\"}}", "workload.seed"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"memtouch\",\"rate\":-1}}", "workload.rate"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"memtouch\",\"rate\":0.5}}", "workload.rate"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"memtouch\",\"rate\":true}}", "workload.rate"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"memtouch\",\"rate\":null}}", "workload.rate"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"memtouch\",\"pattern\":\"zigzag\"}}", "workload.pattern"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"memtouch\",\"pattern\":null}}", "workload.pattern"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"memtouch\",\"pattern\":\"hot-cold\"}}", "workload.pattern"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"kvstore\",\"put_pct\":101}}", "workload.put_pct"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"kvstore\",\"put_pct\":-1}}", "workload.put_pct"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"memtouch\",\"hot_pct\":200}}", "workload.hot_pct"},
	{"{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"memtouch\",\"hot_pct\":\"90\"}}", "workload.hot_pct"},
	{"{\"name\":\"a\",\"memory\":8192,\"workload\":{\"kind\":\"memtouch\",\"wss\":1000}}", "workload.wss"},
	{"{\"name\":\"a\",\"memory\":8192,\"workload\":{\"kind\":\"memtouch\",\"wss\":12288}}", "workload.wss"},
	{"{\"name\":\"a\",\"memory\":8192,\"workload\":{\"kind\":\"memtouch\",\"wss\":-4096}}", "workload.wss"},
	{"{\"name\":\"a\",\"memory\":\"1G\",\"workload\":{\"kind\":\"memtouch\",\"wss\":\"2G\"}}", "workload.wss"},
	{"{\"name\":\"a\",\"memory\":\"1G\",\"workload\":{\"kind\":\"memtouch\",\"wss\":true}}", "workload.wss"},
};

static void test_rejections(void **st)
{
	for (size_t i = 0; i < sizeof(bad_specs) / sizeof(bad_specs[0]); i++) {
		struct mv_vm_spec spec;
		struct mv_error *err = NULL;
		int r = decode(bad_specs[i].json, &spec, &err);
		if (r != -EINVAL || !err || strcmp(err->field, bad_specs[i].field) != 0)
			fail_msg("case %zu %s: r=%d field=\"%s\" (want \"%s\") msg=%s", i, bad_specs[i].json,
				 r, err ? err->field : "(no err)", bad_specs[i].field,
				 err ? err->msg : "");
		assert_int_equal(mv_api_http_status(r), 400);
		assert_true(err->msg[0] != '\0');
		mv_error_free(err);
	}
}

static void test_malformed_position(void **st)
{
	struct mv_vm_spec spec;
	struct mv_error *err = NULL;
	assert_int_equal(decode("{\n  \"name\": \"a\",\n  \"memory\": 4096,\n  oops\n}", &spec, &err),
			 -EINVAL);
	assert_string_equal(err->field, "body");
	assert_non_null(strstr(err->msg, "line 4"));
	assert_non_null(strstr(err->msg, "column"));
	mv_error_free(err);
	/* NULL error pointer is allowed */
	assert_int_equal(decode("nope", &spec, NULL), -EINVAL);
	assert_int_equal(mv_api_decode_vm_spec(NULL, 0, &spec, NULL), -EINVAL);
}

static void test_defaults(void **st)
{
	struct mv_vm_spec s;
	struct mv_error *err = NULL;
	assert_int_equal(decode("{\"name\":\"web-1\",\"memory\":\"32M\",\"workload\":{\"kind\":\"memtouch\"}}",
				&s, &err), 0);
	assert_null(err);
	assert_string_equal(s.name, "web-1");
	assert_int_equal(s.memory, 32ULL << 20);
	assert_int_equal(s.vcpus, 1);
	assert_int_equal(s.backing, MV_MEM_BACKING_AUTO);
	assert_int_equal(s.workload.kind, MV_WL_MEMTOUCH);
	assert_int_equal(s.workload.seed, 1);
	assert_int_equal(s.workload.wss_bytes, 32ULL << 20);   /* capped at memory */
	assert_int_equal(s.workload.rate, 0);
	assert_int_equal(s.workload.pattern, MV_PAT_RANDOM);
	assert_int_equal(s.workload.put_pct, 70);
	assert_int_equal(s.workload.hot_pct, 90);

	assert_int_equal(decode("{\"name\":\"a\",\"memory\":\"1G\",\"workload\":{\"kind\":\"memtouch\"}}", &s, NULL), 0);
	assert_int_equal(s.workload.wss_bytes, 64ULL << 20);
	assert_int_equal(decode("{\"name\":\"a\",\"memory\":\"1G\",\"workload\":{\"kind\":\"kvstore\"}}", &s, NULL), 0);
	assert_int_equal(s.workload.wss_bytes, 16ULL << 20);
	assert_int_equal(decode("{\"name\":\"a\",\"memory\":\"16M\",\"workload\":{\"kind\":\"kvstore\"}}", &s, NULL), 0);
	assert_int_equal(s.workload.wss_bytes, 8ULL << 20);    /* memory / 2 */
	assert_int_equal(decode("{\"name\":\"a\",\"memory\":12288,\"workload\":{\"kind\":\"kvstore\"}}", &s, NULL), 0);
	assert_int_equal(s.workload.wss_bytes, 4096);          /* memory / 2, page aligned down */
	assert_int_equal(decode("{\"name\":\"a\",\"memory\":4096," WL_IDLE "}", &s, NULL), 0);
	assert_int_equal(s.workload.wss_bytes, 0);
	/* the idle echo ("wss":0) decodes back */
	assert_int_equal(decode("{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"idle\",\"wss\":0}}", &s, NULL), 0);
}

static void test_full_spec(void **st)
{
	struct mv_vm_spec s;
	const char *j = "{\"name\":\"0123456789abcdef\",\"memory\":\"1.5G\",\"vcpus\":64,"
			"\"backing\":\"hugetlb\",\"workload\":{\"kind\":\"kvstore\",\"seed\":0,"
			"\"wss\":\"256MiB\",\"rate\":1000000,\"pattern\":\"hotcold\",\"put_pct\":0,"
			"\"hot_pct\":100}}";
	assert_int_equal(decode(j, &s, NULL), 0);
	assert_int_equal(s.memory, 3ULL << 29);
	assert_int_equal(s.vcpus, 64);
	assert_int_equal(s.backing, MV_MEM_BACKING_HUGETLB);
	assert_int_equal(s.workload.kind, MV_WL_KVSTORE);
	assert_int_equal(s.workload.seed, 0);
	assert_int_equal(s.workload.wss_bytes, 256ULL << 20);
	assert_int_equal(s.workload.rate, 1000000);
	assert_int_equal(s.workload.pattern, MV_PAT_HOTCOLD);
	assert_int_equal(s.workload.put_pct, 0);
	assert_int_equal(s.workload.hot_pct, 100);
	/* upper bounds are inclusive: 1 TiB, 63-char name, integer sizes */
	assert_int_equal(decode("{\"name\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
				"\"memory\":1099511627776,\"backing\":\"4k\"," WL_IDLE "}", &s, NULL), 0);
	assert_int_equal(s.memory, 1ULL << 40);
	assert_int_equal(strlen(s.name), 63);
	assert_int_equal(s.backing, MV_MEM_BACKING_4K);
	/* a failed decode leaves *out alone */
	struct mv_vm_spec before = s;
	assert_int_equal(decode("{\"name\":\"b\"}", &s, NULL), -EINVAL);
	assert_memory_equal(&before, &s, sizeof(s));
}

static void test_name_valid(void **st)
{
	assert_true(mv_api_name_valid("a"));
	assert_true(mv_api_name_valid("0"));
	assert_true(mv_api_name_valid("web_1.prod-x"));
	assert_false(mv_api_name_valid(NULL));
	assert_false(mv_api_name_valid(""));
	assert_false(mv_api_name_valid("_a"));
	assert_false(mv_api_name_valid(".a"));
	assert_false(mv_api_name_valid("a%b"));
	assert_false(mv_api_name_valid("\xc3\xa9"));
	char n[80];
	memset(n, 'a', sizeof(n));
	n[63] = '\0';
	assert_true(mv_api_name_valid(n));
	n[63] = 'a';
	n[64] = '\0';
	assert_false(mv_api_name_valid(n));
}

static void test_http_status(void **st)
{
	assert_int_equal(mv_api_http_status(0), 200);
	assert_int_equal(mv_api_http_status(-EINVAL), 400);
	assert_int_equal(mv_api_http_status(-ENOENT), 404);
	assert_int_equal(mv_api_http_status(-EEXIST), 409);
	assert_int_equal(mv_api_http_status(-EBUSY), 409);
	assert_int_equal(mv_api_http_status(-ENOSPC), 422);
	assert_int_equal(mv_api_http_status(-E2BIG), 413);
	assert_int_equal(mv_api_http_status(-EIO), 500);
	assert_int_equal(mv_api_http_status(-ENOMEM), 500);
	assert_int_equal(mv_api_http_status(-12345), 500);
}

static json_t *parse(char *text)
{
	assert_non_null(text);
	json_error_t je;
	json_t *o = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	if (!o)
		fail_msg("encoder produced bad JSON: %s: %s", je.text, text);
	free(text);
	return o;
}

static long long iget(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	if (!json_is_integer(v))
		fail_msg("%s is not an integer", k);
	return json_integer_value(v);
}

static const char *sget(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	if (!json_is_string(v))
		fail_msg("%s is not a string", k);
	return json_string_value(v);
}

static void sample_vm(struct mv_vm_info *vm, enum mv_vm_state state)
{
	memset(vm, 0, sizeof(*vm));
	strcpy(vm->id, "0123456789abcdef");
	strcpy(vm->name, "web");
	vm->state = state;
	vm->memory = 1ULL << 30;
	vm->vcpus = 2;
	vm->backing = MV_MEM_BACKING_4K;
	vm->workload = (struct mv_wl_params){.kind = MV_WL_MEMTOUCH, .pattern = MV_PAT_HOTCOLD,
		.seed = 7, .wss_bytes = 64ULL << 20, .rate = 5000, .put_pct = 70, .hot_pct = 80};
	vm->pid = 4242;
	vm->created_at = 1700000000;
	vm->exit_code = -1;
	vm->exit_signal = 9;
	strcpy(vm->exit_reason, "killed by signal 9 (Killed)");
	vm->ops_done = 123456;
	vm->resident_bytes = 1ULL << 29;
	vm->dirty_pages_total = 999;
	vm->dirty_rate = 12.5;
	strcpy(vm->dirty_backend, "uffd-wp");
}

static void test_encode_vm(void **st)
{
	struct mv_vm_info vm;
	sample_vm(&vm, MV_VM_RUNNING);
	json_t *o = parse(mv_api_encode_vm(&vm));
	assert_string_equal(sget(o, "id"), "0123456789abcdef");
	assert_string_equal(sget(o, "name"), "web");
	assert_string_equal(sget(o, "state"), "running");
	assert_int_equal(iget(o, "memory"), 1LL << 30);
	assert_int_equal(iget(o, "vcpus"), 2);
	assert_string_equal(sget(o, "backing"), "4k");
	assert_int_equal(iget(o, "pid"), 4242);
	assert_int_equal(iget(o, "created_at"), 1700000000);
	assert_null(json_object_get(o, "exit"));     /* only when stopped/crashed */
	json_t *w = json_object_get(o, "workload");
	assert_string_equal(sget(w, "kind"), "memtouch");
	assert_string_equal(sget(w, "pattern"), "hotcold");
	assert_int_equal(iget(w, "seed"), 7);
	assert_int_equal(iget(w, "wss"), 64LL << 20);
	assert_int_equal(iget(w, "rate"), 5000);
	assert_int_equal(iget(w, "put_pct"), 70);
	assert_int_equal(iget(w, "hot_pct"), 80);
	json_t *s = json_object_get(o, "stats");
	assert_int_equal(iget(s, "ops_done"), 123456);
	assert_int_equal(iget(s, "resident_bytes"), 1LL << 29);
	assert_int_equal(iget(s, "dirty_pages_total"), 999);
	assert_true(json_real_value(json_object_get(s, "dirty_rate")) == 12.5);
	assert_string_equal(sget(s, "dirty_backend"), "uffd-wp");

	/* The workload echo is itself a valid VmSpec workload: decode it back. */
	json_t *spec = json_pack("{s:s, s:I, s:O}", "name", "web", "memory", (json_int_t)vm.memory,
				 "workload", w);
	char *txt = json_dumps(spec, 0);
	struct mv_vm_spec back;
	struct mv_error *err = NULL;
	assert_int_equal(mv_api_decode_vm_spec(txt, strlen(txt), &back, &err), 0);
	assert_memory_equal(&back.workload, &vm.workload, sizeof(vm.workload));
	free(txt);
	json_decref(spec);
	json_decref(o);

	for (int stt = MV_VM_STOPPED; stt <= MV_VM_CRASHED; stt++) {
		sample_vm(&vm, (enum mv_vm_state)stt);
		o = parse(mv_api_encode_vm(&vm));
		assert_string_equal(sget(o, "state"), stt == MV_VM_STOPPED ? "stopped" : "crashed");
		json_t *ex = json_object_get(o, "exit");
		assert_non_null(ex);
		assert_int_equal(iget(ex, "code"), -1);
		assert_int_equal(iget(ex, "signal"), 9);
		assert_string_equal(sget(ex, "reason"), "killed by signal 9 (Killed)");
		json_decref(o);
	}
}

/* Backend text is not trusted: unterminated arrays, invalid UTF-8, NaN. */
static void test_encode_hostile(void **st)
{
	struct mv_vm_info vm;
	sample_vm(&vm, MV_VM_CRASHED);
	memset(vm.name, 'x', sizeof(vm.name));         /* no NUL */
	memset(vm.exit_reason, 0xff, sizeof(vm.exit_reason));
	vm.dirty_rate = 0.0 / 0.0;
	vm.state = (enum mv_vm_state)77;
	vm.workload.kind = 99;
	vm.ops_done = UINT64_MAX;
	json_t *o = parse(mv_api_encode_vm(&vm));
	assert_int_equal(strlen(sget(o, "name")), sizeof(vm.name));
	assert_string_equal(sget(o, "state"), "unknown");
	assert_int_equal(iget(json_object_get(o, "stats"), "ops_done"), INT64_MAX);
	json_decref(o);
	assert_string_equal(mv_vm_state_name(MV_VM_PAUSED), "paused");
	assert_string_equal(mv_vm_state_name(MV_VM_CREATING), "creating");
}

static void test_encode_host_verify_error(void **st)
{
	struct mv_host_info h = {.memory_capacity = 8ULL << 30, .memory_used = 3ULL << 30,
				 .hugepages_free = 12, .vms = 3};
	strcpy(h.version, "0.1.0");
	strcpy(h.hostname, "node1");
	strcpy(h.state_dir, "/var/lib/memvisor");
	strcpy(h.dirty_backend, "soft-dirty");
	strcpy(h.guest_ram_pages, "thp");
	json_t *o = parse(mv_api_encode_host(&h));
	assert_string_equal(sget(o, "version"), "0.1.0");
	assert_string_equal(sget(o, "hostname"), "node1");
	assert_string_equal(sget(o, "state_dir"), "/var/lib/memvisor");
	assert_int_equal(iget(o, "memory_capacity"), 8LL << 30);
	assert_int_equal(iget(o, "memory_used"), 3LL << 30);
	assert_int_equal(iget(o, "memory_free"), 5LL << 30);
	assert_int_equal(iget(o, "hugepages_free"), 12);
	assert_string_equal(sget(o, "dirty_backend"), "soft-dirty");
	assert_string_equal(sget(o, "guest_ram_pages"), "thp");
	assert_int_equal(iget(o, "vms"), 3);
	json_decref(o);
	h.memory_used = h.memory_capacity + 1;       /* overcommitted: free is 0, not huge */
	o = parse(mv_api_encode_host(&h));
	assert_int_equal(iget(o, "memory_free"), 0);
	json_decref(o);

	struct mv_verify_result vr = {.ok = false, .ops_done = 10, .elapsed_us = 20};
	strcpy(vr.message, "page 0x1000 differs");
	o = parse(mv_api_encode_verify(&vr));
	assert_true(json_is_false(json_object_get(o, "ok")));
	assert_int_equal(iget(o, "ops_done"), 10);
	assert_int_equal(iget(o, "elapsed_us"), 20);
	assert_string_equal(sget(o, "message"), "page 0x1000 differs");
	json_decref(o);

	struct mv_error *e = NULL;
	mv_err_field(&e, -EINVAL, "workload.rate", "workload.rate must be an integer");
	o = parse(mv_api_encode_error(400, e, -EINVAL));
	json_t *in = json_object_get(o, "error");
	assert_int_equal(iget(in, "status"), 400);
	assert_string_equal(sget(in, "code"), "EINVAL");
	assert_string_equal(sget(in, "field"), "workload.rate");
	assert_string_equal(sget(in, "message"), "workload.rate must be an integer");
	json_decref(o);
	mv_error_free(e);
	o = parse(mv_api_encode_error(404, NULL, -ENOENT));
	in = json_object_get(o, "error");
	assert_string_equal(sget(in, "code"), "ENOENT");
	assert_string_equal(sget(in, "field"), "");
	assert_true(strlen(sget(in, "message")) > 0);
	json_decref(o);
}

/* POST /v1/vms/{vm}/sensitive: strict, every rejection names its field. */
static void test_sensitive(void **state)
{
	(void)state;
	static const struct { const char *body, *field; } bad[] = {
		{"", "body"}, {"[]", "body"}, {"{\"gpa\":0}", "len"}, {"{\"len\":4096}", "gpa"},
		{"{\"gpa\":1,\"len\":4096}", "gpa"}, {"{\"gpa\":0,\"len\":100}", "len"},
		{"{\"gpa\":0,\"len\":0}", "len"}, {"{\"gpa\":-4096,\"len\":4096}", "gpa"},
		{"{\"gpa\":\"0\",\"len\":4096}", "gpa"}, {"{\"gpa\":0,\"len\":4096.0}", "len"},
		{"{\"gpa\":0,\"len\":4096,\"x\":1}", "x"}, {"{\"gpa\":0,\"len\":2147483648}", "len"},
		{"{\"gpa\":0,\"gpa\":0,\"len\":4096}", "body"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct mv_error *e = NULL;
		uint64_t g = 7, l = 7;
		assert_int_equal(mv_api_decode_sensitive(bad[i].body, strlen(bad[i].body), &g, &l, &e),
				 -EINVAL);
		assert_non_null(e);
		if (strcmp(e->field, bad[i].field) != 0)
			fail_msg("%s: field %s, want %s", bad[i].body, e->field, bad[i].field);
		assert_int_equal(g, 7);
		mv_error_free(e);
	}
	uint64_t g, l;
	const char *ok = "{\"len\":65536,\"gpa\":8192}";
	assert_int_equal(mv_api_decode_sensitive(ok, strlen(ok), &g, &l, NULL), 0);
	assert_int_equal(g, 8192);
	assert_int_equal(l, 65536);
}

/* The list bodies (one encoder with an element callback): every element in
 * order, an empty list for none, the deny list capped at its maximum. */
static void test_encode_lists(void **state)
{
	(void)state;
	struct mv_sensitive_range r[2];
	memset(r, 0, sizeof(r));
	r[0].id = 5;
	r[1].id = 9;
	snprintf(r[1].vm, sizeof(r[1].vm), "g1");
	char *s = mv_api_encode_sensitive_list(r, 2);
	json_t *j = json_loads(s, 0, NULL);
	json_t *a = json_object_get(j, "ranges");
	assert_int_equal(json_array_size(a), 2);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(a, 0), "id")), 5);
	assert_string_equal(json_string_value(json_object_get(json_array_get(a, 1), "vm")), "g1");
	json_decref(j);
	free(s);
	s = mv_api_encode_guard_events(NULL, 0);
	assert_string_equal(s, "{\"events\":[]}");
	free(s);
	struct mv_guard_policy *p = calloc(1, sizeof(*p));
	assert_non_null(p);
	p->ndeny = MV_GUARD_DENY_MAX + 3;   /* a corrupt count never reads past deny[] */
	s = mv_api_encode_guard_policy(p);
	j = json_loads(s, 0, NULL);
	assert_int_equal(json_array_size(json_object_get(j, "deny")), MV_GUARD_DENY_MAX);
	json_decref(j);
	free(s);
	free(p);
}

/* Image, container and prepopulate bodies: good ones decode, every bad one
 * is -EINVAL naming its field. */
static void test_ctr_codecs(void **state)
{
	static const struct bad bad_ctr[] = {
		{"", "body"}, {"[]", "body"}, {"{}", "image"}, {"{\"image\":7}", "image"},
		{"{\"image\":\"a b/c\"}", "image"}, {"{\"image\":\"../x\"}", "image"},
		{"{\"image\":\"r.io/a\",\"cmd\":\"ls\"}", "cmd"},
		{"{\"image\":\"r.io/a\",\"cmd\":[\"ls\",1]}", "cmd[1]"},
		{"{\"image\":\"r.io/a\",\"cmd\":[\"a\\u0000b\"]}", "body"},
		{"{\"image\":\"r.io/a\",\"env\":[\"NOEQ\"]}", "env[0]"},
		{"{\"image\":\"r.io/a\",\"env\":[\"=v\"]}", "env[0]"},
		{"{\"image\":\"r.io/a\",\"name\":\"Bad\"}", "name"},
		{"{\"image\":\"r.io/a\",\"tty\":true}", "tty"},
	};
	struct mv_error *e = NULL;
	struct mv_ctr_spec spec;
	for (size_t i = 0; i < sizeof(bad_ctr) / sizeof(bad_ctr[0]); i++) {
		assert_int_equal(mv_api_decode_ctr_spec(bad_ctr[i].json, strlen(bad_ctr[i].json), &spec, &e),
				 -EINVAL);
		assert_string_equal(e->field, bad_ctr[i].field);
		mv_error_free(e);
		e = NULL;
	}
	const char *ok = "{\"image\":\"r.io/a:v1\",\"name\":\"c1\",\"cmd\":[\"sh\",\"-c\",\"echo hi\"],"
			 "\"env\":[\"A=1\",\"B=\"]}";
	assert_int_equal(mv_api_decode_ctr_spec(ok, strlen(ok), &spec, &e), 0);
	assert_string_equal(spec.image, "r.io/a:v1");
	assert_string_equal(spec.name, "c1");
	assert_int_equal(spec.ncmd, 3);
	assert_string_equal(spec.cmd[2], "echo hi");
	assert_int_equal(spec.nenv, 2);
	assert_string_equal(spec.env[1], "B=");
	mv_api_ctr_spec_free(&spec);

	char ref[MV_IMAGE_NAME_MAX + 1];
	const char *pull = "{\"ref\":\"r.io/a:v1\"}";
	assert_int_equal(mv_api_decode_image_pull(pull, strlen(pull), ref, sizeof(ref), &e), 0);
	assert_string_equal(ref, "r.io/a:v1");
	pull = "{\"ref\":\"\"}";
	assert_int_equal(mv_api_decode_image_pull(pull, strlen(pull), ref, sizeof(ref), &e), -EINVAL);
	assert_string_equal(e->field, "ref");
	mv_error_free(e);
	e = NULL;

	char **refs;
	size_t n;
	const char *pp = "{\"images\":[\"r.io/a\",\"r.io/b:v2\"]}";
	assert_int_equal(mv_api_decode_prepopulate(pp, strlen(pp), &refs, &n, &e), 0);
	assert_int_equal(n, 2);
	assert_string_equal(refs[1], "r.io/b:v2");
	for (size_t i = 0; i < n; i++)
		free(refs[i]);
	free(refs);
	static const struct bad bad_pp[] = {
		{"{}", "images"}, {"{\"images\":[]}", "images"}, {"{\"images\":\"r.io/a\"}", "images"},
		{"{\"images\":[\"ok.io/a\",\" bad\"]}", "images[1]"}, {"{\"images\":[1]}", "images[0]"},
	};
	for (size_t i = 0; i < sizeof(bad_pp) / sizeof(bad_pp[0]); i++) {
		assert_int_equal(mv_api_decode_prepopulate(bad_pp[i].json, strlen(bad_pp[i].json), &refs,
							   &n, &e), -EINVAL);
		assert_string_equal(e->field, bad_pp[i].field);
		mv_error_free(e);
		e = NULL;
	}
	/* Encoders: a backend string without its NUL still gives valid JSON. */
	struct mv_ctr_info c;
	memset(&c, 0, sizeof(c));
	memset(c.name, 'x', sizeof(c.name));
	c.state = MV_CTR_EXITED;
	c.exit_code = 3;
	char *j = mv_api_encode_ctr(&c);
	assert_non_null(j);
	json_t *o = json_loads(j, 0, NULL);
	assert_non_null(o);
	assert_string_equal(json_string_value(json_object_get(o, "state")), "exited");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "exit"), "code")), 3);
	json_decref(o);
	free(j);
	assert_true(mv_api_image_name_valid("127.0.0.1:5000/test/busybox@sha256:00"));
	assert_false(mv_api_image_name_valid("a/../b"));
	assert_false(mv_api_image_name_valid("/abs"));
	assert_false(mv_api_image_name_valid("a\"b"));
}

int api_codec_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rejections),
		cmocka_unit_test(test_malformed_position),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_full_spec),
		cmocka_unit_test(test_name_valid),
		cmocka_unit_test(test_http_status),
		cmocka_unit_test(test_encode_vm),
		cmocka_unit_test(test_encode_hostile),
		cmocka_unit_test(test_encode_host_verify_error),
		cmocka_unit_test(test_sensitive),
		cmocka_unit_test(test_encode_lists),
		cmocka_unit_test(test_ctr_codecs),
	};
	return cmocka_run_group_tests_name("api_codec", tests, NULL, NULL);
}
