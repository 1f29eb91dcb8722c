/* Live-server tests: mv_api_server_start on a temp Unix socket with a fake
 * backend (static functions below), driven with libcurl. Checks every route
 * of docs/api/openapi.yaml answers, unknown paths 404, wrong methods 405,
 * limits (413), error bodies, the socket file rules and concurrency. */
#include <ctype.h>
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>
#include "memvisor/api.h"
#include "test_api.h"

/* ---- fake backend ---- */

struct fake {
	atomic_int calls;
	atomic_int last_force;          /* -1 none, 0/1 */
	atomic_int last_action;
};

static void fake_vm(struct mv_vm_info *vm, const char *name)
{
	memset(vm, 0, sizeof(*vm));
	strcpy(vm->id, "0123456789abcdef");
	snprintf(vm->name, sizeof(vm->name), "%s", name);
	vm->state = MV_VM_RUNNING;
	vm->memory = 64ULL << 20;
	vm->vcpus = 1;
	vm->workload.kind = MV_WL_IDLE;
	vm->workload.seed = 1;
	vm->pid = 100;
}

static int known(const char *ref, struct mv_error **err)
{
	if (strcmp(ref, "vm1") == 0 || strcmp(ref, "0123456789abcdef") == 0 ||
	    strcmp(ref, "running") == 0)
		return 0;
	return mv_err(err, -ENOENT, "no VM %s", ref);
}

static int f_create(void *ctx, const struct mv_vm_spec *spec, struct mv_vm_info *out,
		    struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	if (strcmp(spec->name, "exists") == 0)
		return mv_err_field(err, -EEXIST, "name", "a VM named exists already exists");
	if (strcmp(spec->name, "huge") == 0)
		return mv_err_field(err, -ENOSPC, "memory", "does not fit");
	fake_vm(out, spec->name);
	out->memory = spec->memory;
	out->workload = spec->workload;
	return 0;
}

static int f_list(void *ctx, struct mv_vm_info **out, size_t *n, struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	*out = calloc(2, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	fake_vm(&(*out)[0], "vm1");
	fake_vm(&(*out)[1], "vm2");
	(*out)[1].state = MV_VM_STOPPED;
	*n = 2;
	return 0;
}

static int f_get(void *ctx, const char *ref, struct mv_vm_info *out, struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	int r = known(ref, err);
	if (r == 0)
		fake_vm(out, ref);
	return r;
}

static int f_action(void *ctx, const char *ref, enum mv_vm_action a, struct mv_vm_info *out,
		    struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	f->last_action = (int)a;
	int r = known(ref, err);
	if (r == 0) {
		fake_vm(out, ref);
		out->state = a == MV_VM_PAUSE ? MV_VM_PAUSED : a == MV_VM_STOP ? MV_VM_STOPPED
									   : MV_VM_RUNNING;
	}
	return r;
}

static int f_verify(void *ctx, const char *ref, struct mv_verify_result *out, struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	int r = known(ref, err);
	if (r == 0)
		*out = (struct mv_verify_result){.ok = true, .ops_done = 5, .elapsed_us = 6};
	return r;
}

static int f_delete(void *ctx, const char *ref, bool force, struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	f->last_force = force;
	int r = known(ref, err);
	if (r == 0 && strcmp(ref, "running") == 0 && !force)
		return mv_err(err, -EBUSY, "VM running is running");
	return r;
}

static int f_host(void *ctx, struct mv_host_info *out, struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	strcpy(out->version, "0.1.0");
	out->memory_capacity = 1ULL << 30;
	return 0;
}

static int f_metrics(void *ctx, char **text, struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	*text = strdup("# TYPE memvisor_vms gauge\nmemvisor_vms{state=\"running\"} 1\n");
	return *text ? 0 : -ENOMEM;
}

static int f_migrate(void *ctx, const char *ref, const struct mv_migrate_req *req,
		     struct mv_handover_result *out, struct mv_vm_info *vm, struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	int r = known(ref, err);
	if (r == 0) {
		snprintf(out->vm, sizeof(out->vm), "%s", ref);
		out->ok = true;
		out->old_pid = 10;
		out->new_pid = 11;
	}
	return r;
}

static int f_upgrade(void *ctx, const char *vmm, struct mv_handover_result **out, size_t *n,
		     struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	*out = calloc(1, sizeof(**out));
	*n = 1;
	snprintf((*out)->vmm, sizeof((*out)->vmm), "%s", vmm);
	(*out)->ok = true;
	return 0;
}

static int f_fusion(void *ctx, struct mv_fusion_info *out, struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	*out = (struct mv_fusion_info){.enabled = true, .rate = 100, .shared = 1, .sharing = 2};
	return 0;
}

static int f_sens_add(void *ctx, const char *ref, uint64_t gpa, uint64_t len,
		      struct mv_sensitive_range *out, struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	if (known(ref, err) < 0)
		return -ENOENT;
	*out = (struct mv_sensitive_range){.id = 1, .gpa = gpa, .len = len, .locked = true,
					   .resident_pages = len / 4096, .runs_total = 1, .nruns = 1};
	out->runs[0] = (struct mv_sensitive_run){.gpa = gpa, .pfn = 0x1234, .pages = len / 4096};
	snprintf(out->vm, sizeof(out->vm), "%s", ref);
	return 0;
}

static int f_sens_list(void *ctx, const char *ref, struct mv_sensitive_range **out, size_t *n,
		       struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	*out = NULL;
	*n = 0;
	return known(ref, err);
}

static int f_sens_rm(void *ctx, const char *ref, uint64_t id, struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	if (known(ref, err) < 0)
		return -ENOENT;
	return id == 1 ? 0 : mv_err_field(err, -ENOENT, "id", "no range %llu", (unsigned long long)id);
}

static int f_guard(void *ctx, struct mv_guard_info *out, struct mv_error **err)
{
	struct fake *f = ctx;
	f->calls++;
	out->checks = 1;
	out->findings = calloc(1, sizeof(*out->findings));
	if (!out->findings)
		return -ENOMEM;
	out->nfindings = 1;
	snprintf(out->findings[0].kind, sizeof(out->findings[0].kind), "fused");
	snprintf(out->findings[0].vm, sizeof(out->findings[0].vm), "vm1");
	return 0;
}

static int f_img(void *ctx, const char *name, struct mv_image_status *out, struct mv_error **err)
{
	((struct fake *)ctx)->calls++;
	snprintf(out->name, sizeof(out->name), "%s", name);
	snprintf(out->state, sizeof(out->state), "ready");
	return 0;
}

static int f_img_list(void *ctx, struct mv_image_status **out, size_t *n, struct mv_error **err)
{
	((struct fake *)ctx)->calls++;
	*out = calloc(1, sizeof(**out));
	*n = 1;
	return *out ? f_img(ctx, "reg.io/repo:v1", *out, err) : -ENOMEM;
}

static int f_img_rm(void *ctx, const char *name, struct mv_error **err)
{
	((struct fake *)ctx)->calls++;
	return 0;
}

static int f_prepop(void *ctx, char *const *refs, size_t n, struct mv_cache_info *out,
		    struct mv_error **err)
{
	((struct fake *)ctx)->calls++;
	out->job = true;
	out->images = (uint32_t)n;
	snprintf(out->state, sizeof(out->state), "running");
	return 0;
}

static int f_cache(void *ctx, struct mv_cache_info *out, struct mv_error **err)
{
	((struct fake *)ctx)->calls++;
	return 0;
}

static int f_ctr(void *ctx, const char *ref, struct mv_ctr_info *out, struct mv_error **err)
{
	((struct fake *)ctx)->calls++;
	snprintf(out->name, sizeof(out->name), "%s", ref);
	out->state = MV_CTR_EXITED;
	return 0;
}

static int f_ctr_create(void *ctx, const struct mv_ctr_spec *spec, struct mv_ctr_info *out,
			struct mv_error **err)
{
	return f_ctr(ctx, spec->name[0] ? spec->name : "c1", out, err);
}

static int f_ctr_list(void *ctx, struct mv_ctr_info **out, size_t *n, struct mv_error **err)
{
	*out = calloc(1, sizeof(**out));
	*n = 1;
	return *out ? f_ctr(ctx, "c1", *out, err) : -ENOMEM;
}

static int f_ctr_rm(void *ctx, const char *ref, bool force, struct mv_error **err)
{
	((struct fake *)ctx)->calls++;
	return 0;
}

static int f_ctr_logs(void *ctx, const char *ref, uint64_t offset, uint32_t wait_ms,
		      struct mv_ctr_logs *out, struct mv_error **err)
{
	((struct fake *)ctx)->calls++;
	out->data = strdup("hi\n");
	out->len = 3;
	out->offset = offset;
	out->next_offset = offset + 3;
	return out->data ? 0 : -ENOMEM;
}

static int f_events(void *ctx, struct mv_guard_event_info **out, size_t *n, struct mv_error **err)
{
	*out = calloc(1, sizeof(**out));
	if (!*out)
		return -ENOMEM;
	*n = 1;
	(*out)[0].id = 7;
	snprintf((*out)[0].suspect, sizeof((*out)[0].suspect), "vm2");
	snprintf((*out)[0].signal, sizeof((*out)[0].signal), "write_probe");
	return 0;
}

static struct mv_guard_policy g_policy;

static int f_policy_get(void *ctx, struct mv_guard_policy *out, struct mv_error **err)
{
	if (g_policy.wp_min_pages == 0)
		mv_guard_policy_default(&g_policy);
	*out = g_policy;
	return 0;
}

static int f_policy_set(void *ctx, const struct mv_guard_policy *in, struct mv_error **err)
{
	g_policy = *in;
	return 0;
}

static const struct mv_api_backend fake_backend = {
	.vm_create = f_create, .vm_list = f_list, .vm_get = f_get, .vm_action = f_action,
	.vm_verify = f_verify, .vm_delete = f_delete, .host_get = f_host, .metrics = f_metrics,
	.vm_migrate = f_migrate, .upgrade = f_upgrade, .fusion_get = f_fusion,
	.sensitive_add = f_sens_add, .sensitive_list = f_sens_list, .sensitive_remove = f_sens_rm,
	.guard_get = f_guard,
	.image_pull = f_img, .image_list = f_img_list, .image_get = f_img, .image_remove = f_img_rm,
	.cache_prepopulate = f_prepop, .cache_get = f_cache, .ctr_create = f_ctr_create,
	.ctr_list = f_ctr_list, .ctr_get = f_ctr, .ctr_stop = f_ctr, .ctr_delete = f_ctr_rm,
	.ctr_logs = f_ctr_logs,
	.guard_events = f_events, .guard_policy_get = f_policy_get,
	.guard_policy_set = f_policy_set,
};

/* ---- HTTP client ---- */

struct res {
	long status;
	char *body;
	size_t len;
	char ctype[128];
	char allow[128];
};

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
	struct res *r = ud;
	char *b = realloc(r->body, r->len + sz * n + 1);
	if (!b)
		return 0;
	memcpy(b + r->len, p, sz * n);
	r->body = b;
	r->len += sz * n;
	b[r->len] = '\0';
	return sz * n;
}

static void header_value(const char *line, size_t n, const char *name, char *dst, size_t dlen)
{
	size_t k = strlen(name);
	if (n <= k || strncasecmp(line, name, k) != 0)
		return;
	const char *v = line + k;
	size_t vl = n - k;
	while (vl && (*v == ' '))
		v++, vl--;
	while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
		vl--;
	snprintf(dst, dlen, "%.*s", (int)vl, v);
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
	struct res *r = ud;
	header_value(p, sz * n, "Content-Type:", r->ctype, sizeof(r->ctype));
	header_value(p, sz * n, "Allow:", r->allow, sizeof(r->allow));
	return sz * n;
}

struct chunked { const char *data; size_t len, off; };

static size_t on_read(char *buf, size_t sz, size_t n, void *ud)
{
	struct chunked *c = ud;
	size_t k = c->len - c->off < sz * n ? c->len - c->off : sz * n;
	if (k > 1000)
		k = 1000;
	memcpy(buf, c->data + c->off, k);
	c->off += k;
	return k;
}

/* One request; ctype NULL sends no Content-Type. Returns the CURLcode. */
static int http_ex(CURL *h, const char *sock, const char *method, const char *path,
		   const char *body, size_t blen, const char *ctype, bool chunked, struct res *r)
{
	char url[1024], ct[160];
	struct chunked ck = {body, blen, 0};
	memset(r, 0, sizeof(*r));
	curl_easy_reset(h);
	snprintf(url, sizeof(url), "http://localhost%s", path);
	struct curl_slist *hd = curl_slist_append(NULL, "Expect:");
	snprintf(ct, sizeof(ct), "Content-Type:%s%s", ctype ? " " : "", ctype ? ctype : "");
	hd = curl_slist_append(hd, ct);
	if (chunked)
		hd = curl_slist_append(hd, "Transfer-Encoding: chunked");
	curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, sock);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
	if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (chunked) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(h, CURLOPT_READDATA, &ck);
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	} else if (body) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	} else {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	}
	int rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	curl_slist_free_all(hd);
	return rc;
}

struct srv {
	char dir[64];
	char sock[128];
	struct fake fake;
	struct mv_api_server *s;
	CURL *h;
};

static int srv_setup(void **st)
{
	struct srv *v = calloc(1, sizeof(*v));
	strcpy(v->dir, "/tmp/mv-api-test.XXXXXX");
	if (!v || !mkdtemp(v->dir))
		return -1;
	snprintf(v->sock, sizeof(v->sock), "%s/api.sock", v->dir);
	v->fake.last_force = -1;
	struct mv_error *err = NULL;
	if (mv_api_server_start(v->sock, &fake_backend, &v->fake, &v->s, &err) < 0) {
		fprintf(stderr, "server start: %s\n", mv_error_msg(err, -1));
		return -1;
	}
	v->h = curl_easy_init();
	*st = v;
	return 0;
}

static int srv_teardown(void **st)
{
	struct srv *v = *st;
	curl_easy_cleanup(v->h);
	mv_api_server_stop(v->s);
	assert_int_equal(access(v->sock, F_OK), -1);   /* stop removes its socket file */
	rmdir(v->dir);
	free(v);
	return 0;
}

static void req(struct srv *v, const char *method, const char *path, const char *body,
		const char *ctype, struct res *r)
{
	int rc = http_ex(v->h, v->sock, method, path, body, body ? strlen(body) : 0, ctype, false, r);
	if (rc != CURLE_OK)
		fail_msg("%s %s: curl: %s", method, path, curl_easy_strerror(rc));
	if (!r->ctype[0])
		fail_msg("%s %s: %ld without Content-Type", method, path, r->status);
}

/* The error body's field, checked to be a well-formed error for status. */
static void check_error(const struct res *r, long status, const char *field)
{
	if (r->status != status)
		fail_msg("status %ld, want %ld: %s", r->status, status, r->body ? r->body : "");
	assert_string_equal(r->ctype, "application/json");
	json_t *o = json_loads(r->body, 0, NULL);
	assert_non_null(o);
	json_t *e = json_object_get(o, "error");
	assert_int_equal(json_integer_value(json_object_get(e, "status")), status);
	assert_true(json_string_length(json_object_get(e, "code")) > 0);
	assert_true(json_string_length(json_object_get(e, "message")) > 0);
	if (field)
		assert_string_equal(json_string_value(json_object_get(e, "field")), field);
	json_decref(o);
}

#define SPEC_OK "{\"name\":\"new\",\"memory\":\"64M\",\"workload\":{\"kind\":\"memtouch\"}}"

struct served {
	char spec[65536];
	int missing;
};

static void check_served(const char *method, const char *path, void *arg)
{
	struct served *sv = arg;
	char key[300], lower[8];
	for (size_t i = 0; i <= strlen(method) && i < sizeof(lower); i++)
		lower[i] = (char)tolower((unsigned char)method[i]);
	lower[sizeof(lower) - 1] = '\0';
	snprintf(key, sizeof(key), "\n  %s:\n", path);
	char *at = strstr(sv->spec, key);
	/* The method must appear under this path, before the next path. */
	char *next = at ? strstr(at + strlen(key), "\n  /") : NULL;
	char mkey[32];
	snprintf(mkey, sizeof(mkey), "\n    %s:", lower);
	char *m = at ? strstr(at, mkey) : NULL;
	if (!at || !m || (next && m > next)) {
		print_error("served but not in the spec: %s %s\n", method, path);
		sv->missing++;
	}
}

/* Every route the router serves is in docs/api/openapi.yaml. */
static void test_served_routes_in_spec(void **st)
{
	static struct served sv;
	FILE *f = fopen(MV_SOURCE_ROOT "/docs/api/openapi.yaml", "r");
	assert_non_null(f);
	sv.spec[0] = '\n';
	size_t n = fread(sv.spec + 1, 1, sizeof(sv.spec) - 2, f);
	fclose(f);
	assert_true(n > 0 && n < sizeof(sv.spec) - 2);
	sv.spec[n + 1] = '\0';
	sv.missing = 0;
	mv_api_routes_each(check_served, &sv);
	assert_int_equal(sv.missing, 0);
}

/* Every path+method in docs/api/openapi.yaml answers with a non-404/405. */
static void test_spec_routes(void **st)
{
	struct srv *v = *st;
	FILE *f = fopen(MV_SOURCE_ROOT "/docs/api/openapi.yaml", "r");
	assert_non_null(f);
	char line[512], path[256] = "";
	bool in_paths = false;
	int routes = 0;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "paths:", 6) == 0) {
			in_paths = true;
			continue;
		}
		if (in_paths && line[0] != ' ' && line[0] != '\n')
			break;                     /* next top-level key */
		if (!in_paths)
			continue;
		if (strncmp(line, "  /", 3) == 0) {
			/* "  /v1/vms/{vm}/pause:" -> "/v1/vms/vm1/pause" */
			char *p = line + 2, *o = path;
			while (*p && *p != ':' && o < path + sizeof(path) - 16) {
				if (strncmp(p, "{vm}", 4) == 0) {
					strcpy(o, "vm1");
					o += 3;
					p += 4;
				} else if (strncmp(p, "{id}", 4) == 0) {
					*o++ = '1';
					p += 4;
				} else if (strncmp(p, "{ctr}", 5) == 0) {
					strcpy(o, "c1");
					o += 2;
					p += 5;
				} else if (strncmp(p, "{name}", 6) == 0) {
					strcpy(o, "reg.io/repo:v1");
					o += 14;
					p += 6;
				} else {
					*o++ = *p++;
				}
			}
			*o = '\0';
			continue;
		}
		static const char *const methods[] = {"get", "post", "delete", "put", "patch"};
		for (size_t i = 0; i < 5; i++) {
			char key[16], meth[16];
			snprintf(key, sizeof(key), "    %s:", methods[i]);
			if (strncmp(line, key, strlen(key)) != 0)
				continue;
			for (size_t j = 0; j <= strlen(methods[i]); j++)
				meth[j] = (char)toupper((unsigned char)methods[i][j]);
			bool post = strcmp(meth, "POST") == 0;
			const char *body = NULL;
			if (post && strcmp(path, "/v1/vms") == 0)
				body = SPEC_OK;
			else if (post && strstr(path, "/migrate"))
				body = "{\"local\":true}";
			else if (post && strcmp(path, "/v1/upgrade") == 0)
				body = "{\"vmm\":\"/usr/bin/true\"}";
			else if (post && strcmp(path, "/v1/guard/policy") == 0)
				body = "{\"action\":\"unfuse\"}";
			else if (post && strstr(path, "/sensitive"))
				body = "{\"gpa\":4096,\"len\":8192}";
			else if (post && strcmp(path, "/v1/images") == 0)
				body = "{\"ref\":\"reg.io/repo:v1\"}";
			else if (post && strcmp(path, "/v1/containers") == 0)
				body = "{\"image\":\"reg.io/repo:v1\",\"cmd\":[\"true\"]}";
			else if (post && strcmp(path, "/v1/cache/prepopulate") == 0)
				body = "{\"images\":[\"reg.io/repo:v1\"]}";
			struct res r;
			req(v, meth, path, body, body ? "application/json" : NULL, &r);
			if (r.status == 404 || r.status == 405 || r.status >= 300)
				fail_msg("%s %s -> %ld %s", meth, path, r.status, r.body ? r.body : "");
			routes++;
			free(r.body);
		}
	}
	fclose(f);
	assert_true(routes >= 10);
}

static void test_unknown_paths(void **st)
{
	struct srv *v = *st;
	static const char *const paths[] = {
		"/", "/v1", "/v1/", "/v2/vms", "/v1/hosts", "/v1/vms/", "/v1/vms/vm1/",
		"/v1/vms/vm1/reboot", "/v1/vms/vm1/pause/now", "/v1/vms//pause", "/metrics/",
		"/V1/VMS", "/v1/host/x", "/favicon.ico", "/v1/vms/vm1/verify/",
	};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		struct res r;
		req(v, "GET", paths[i], NULL, NULL, &r);
		if (r.status != 404)
			fail_msg("GET %s -> %ld", paths[i], r.status);
		check_error(&r, 404, "");
		free(r.body);
	}
}

static void test_methods(void **st)
{
	struct srv *v = *st;
	static const struct { const char *m, *path, *allow; } cases[] = {
		{"DELETE", "/v1/vms", "GET, HEAD, POST"},
		{"PUT", "/v1/host", "GET, HEAD"},
		{"POST", "/metrics", "GET, HEAD"},
		{"GET", "/v1/vms/vm1/pause", "POST"},
		{"DELETE", "/v1/vms/vm1/verify", "POST"},
		{"POST", "/v1/vms/vm1", "GET, HEAD, DELETE"},
		{"PATCH", "/v1/vms/vm1", "GET, HEAD, DELETE"},
		{"BREW", "/v1/vms", "GET, HEAD, POST"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct res r;
		req(v, cases[i].m, cases[i].path, NULL, NULL, &r);
		check_error(&r, 405, "");
		assert_string_equal(r.allow, cases[i].allow);
		free(r.body);
	}
	struct res r;
	req(v, "HEAD", "/v1/host", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	free(r.body);
}

static void test_refs_and_bodies(void **st)
{
	struct srv *v = *st;
	struct res r;
	req(v, "GET", "/v1/vms/BAD", NULL, NULL, &r);
	check_error(&r, 400, "vm");
	free(r.body);
	req(v, "GET", "/v1/vms/%ff%fe%00x", NULL, NULL, &r);   /* not UTF-8: still JSON */
	check_error(&r, 400, "vm");
	free(r.body);
	req(v, "POST", "/v1/vms/a%20b/pause", NULL, NULL, &r);
	check_error(&r, 400, "vm");
	free(r.body);
	req(v, "GET", "/v1/vms/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL, NULL, &r);
	check_error(&r, 400, "vm");
	free(r.body);
	req(v, "GET", "/v1/vms/nosuch", NULL, NULL, &r);
	check_error(&r, 404, "");
	assert_non_null(strstr(r.body, "\"ENOENT\""));
	free(r.body);
	req(v, "GET", "/v1/vms/0123456789abcdef", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	free(r.body);
	/* a body where none is taken: empty is fine, anything else is a 400 */
	req(v, "POST", "/v1/vms/vm1/pause", "", NULL, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"paused\""));
	free(r.body);
	req(v, "POST", "/v1/vms/vm1/stop", "{}", "application/json", &r);
	check_error(&r, 400, "body");
	free(r.body);
	/* create: content type, malformed JSON, backend errors */
	req(v, "POST", "/v1/vms", SPEC_OK, "text/plain", &r);
	check_error(&r, 415, "Content-Type");
	free(r.body);
	req(v, "POST", "/v1/vms", SPEC_OK, "application/json; charset=utf-8", &r);
	assert_int_equal(r.status, 201);
	free(r.body);
	req(v, "POST", "/v1/vms", SPEC_OK, NULL, &r);
	assert_int_equal(r.status, 201);
	free(r.body);
	req(v, "POST", "/v1/vms", "{\"name\": \"x\",", "application/json", &r);
	check_error(&r, 400, "body");
	assert_non_null(strstr(r.body, "line 1"));
	free(r.body);
	req(v, "POST", "/v1/vms", "", "application/json", &r);
	check_error(&r, 400, "body");
	free(r.body);
	req(v, "POST", "/v1/vms", "{\"name\":\"a\",\"memory\":4096,\"workload\":{\"kind\":\"idle\",\"rate\":-1}}",
	    "application/json", &r);
	check_error(&r, 400, "workload.rate");
	free(r.body);
	req(v, "POST", "/v1/vms", "{\"name\":\"exists\",\"memory\":4096,\"workload\":{\"kind\":\"idle\"}}",
	    "application/json", &r);
	check_error(&r, 409, "name");
	free(r.body);
	req(v, "POST", "/v1/vms", "{\"name\":\"huge\",\"memory\":4096,\"workload\":{\"kind\":\"idle\"}}",
	    "application/json", &r);
	check_error(&r, 422, "memory");
	free(r.body);
}

static void test_delete_force(void **st)
{
	struct srv *v = *st;
	static const struct { const char *q; long status; int force; } cases[] = {
		{"", 204, 0}, {"?force=true", 204, 1}, {"?force=1", 204, 1},
		{"?force=false", 204, 0}, {"?force=0", 204, 0}, {"?force=yes", 400, -1},
		{"?force", 400, -1}, {"?force=", 400, -1}, {"?force=TRUE", 400, -1},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char path[128];
		struct res r;
		v->fake.last_force = -1;
		snprintf(path, sizeof(path), "/v1/vms/vm1%s", cases[i].q);
		req(v, "DELETE", path, NULL, NULL, &r);
		if (r.status != cases[i].status || v->fake.last_force != cases[i].force)
			fail_msg("DELETE %s -> %ld force %d", path, r.status, (int)v->fake.last_force);
		if (r.status == 400)
			check_error(&r, 400, "force");
		else
			assert_int_equal(r.len, 0);
		free(r.body);
	}
	struct res r;
	req(v, "DELETE", "/v1/vms/running", NULL, NULL, &r);
	check_error(&r, 409, "");
	free(r.body);
	req(v, "DELETE", "/v1/vms/running?force=true", NULL, NULL, &r);
	assert_int_equal(r.status, 204);
	free(r.body);
}

static void test_payloads(void **st)
{
	struct srv *v = *st;
	struct res r;
	req(v, "GET", "/metrics", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.ctype, "text/plain"));
	assert_non_null(strstr(r.ctype, "version=0.0.4"));
	assert_non_null(strstr(r.body, "memvisor_vms"));
	free(r.body);
	req(v, "GET", "/v1/vms", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	json_t *o = json_loads(r.body, 0, NULL);
	assert_int_equal(json_array_size(json_object_get(o, "vms")), 2);
	json_t *vm2 = json_array_get(json_object_get(o, "vms"), 1);
	assert_non_null(json_object_get(vm2, "exit"));
	json_decref(o);
	free(r.body);
	req(v, "POST", "/v1/vms/vm1/verify", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	o = json_loads(r.body, 0, NULL);
	assert_true(json_is_true(json_object_get(o, "ok")));
	json_decref(o);
	free(r.body);
	req(v, "POST", "/v1/vms/vm1/resume", NULL, NULL, &r);
	assert_int_equal(v->fake.last_action, MV_VM_RESUME);
	free(r.body);
	/* The guard's events and policy: a partial update keeps the rest. */
	req(v, "GET", "/v1/guard/events", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"signal\":\"write_probe\""));
	free(r.body);
	req(v, "POST", "/v1/guard/policy", "{\"action\":\"pause\",\"write_probe\":{\"min_pages\":40},"
	    "\"deny\":[{\"name\":\"probe\",\"xxh3\":\"00112233aabbccdd\"}]}", "application/json", &r);
	assert_int_equal(r.status, 200);
	o = json_loads(r.body, 0, NULL);
	assert_string_equal(json_string_value(json_object_get(o, "action")), "pause");
	json_t *wp = json_object_get(o, "write_probe");
	assert_int_equal(json_integer_value(json_object_get(wp, "min_pages")), 40);
	assert_int_equal(json_integer_value(json_object_get(wp, "window_ms")), 10);
	json_t *d0 = json_array_get(json_object_get(o, "deny"), 0);
	assert_string_equal(json_string_value(json_object_get(d0, "xxh3")), "00112233aabbccdd");
	json_decref(o);
	free(r.body);
	static const struct { const char *body, *field; } bad[] = {
		{"{\"action\":\"nuke\"}", "action"},
		{"{\"detect\":1}", "detect"},
		{"{\"throttle_pct\":100}", "throttle_pct"},
		{"{\"write_probe\":{\"min_pages\":1}}", "write_probe.min_pages"},
		{"{\"write_probe\":{\"bogus\":1}}", "write_probe.bogus"},
		{"{\"sampled_access\":{\"windows\":65}}", "sampled_access.windows"},
		{"{\"sampled_access\":[]}", "sampled_access"},
		{"{\"deny\":[{\"name\":\"x\",\"xxh3\":\"123\"}]}", "deny.xxh3"},
		{"{\"deny\":[{\"name\":\"\",\"xxh3\":\"0011223344556677\"}]}", "deny.name"},
		{"{\"deny\":[{\"name\":\"a\",\"xxh3\":\"0011223344556677\"},"
		 "{\"name\":\"b\",\"xxh3\":\"0011223344556677\"}]}", "deny.xxh3"},
		{"{\"extra\":true}", "extra"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		req(v, "POST", "/v1/guard/policy", bad[i].body, "application/json", &r);
		assert_int_equal(r.status, 400);
		o = json_loads(r.body, 0, NULL);
		const char *field = json_string_value(
			json_object_get(json_object_get(o, "error"), "field"));
		if (!field || strcmp(field, bad[i].field) != 0)
			fail_msg("%s -> %s (want field %s)", bad[i].body, r.body, bad[i].field);
		json_decref(o);
		free(r.body);
	}
	req(v, "GET", "/v1/guard/policy", NULL, NULL, &r);
	assert_non_null(strstr(r.body, "\"action\":\"pause\""));   /* the bad ones changed nothing */
	free(r.body);
}

static void test_too_big(void **st)
{
	struct srv *v = *st;
	size_t n = MV_API_MAX_BODY + 1;
	char *big = malloc(n + 1);
	memset(big, ' ', n);
	big[n] = '\0';
	struct res r;
	/* with a Content-Length: refused before the body is read. The server may
	 * answer and close while curl is still sending: then curl reports a send
	 * error instead of the 413, and the refusal is all we can see. */
	int rc = http_ex(v->h, v->sock, "POST", "/v1/vms", big, n, "application/json", false, &r);
	assert_true(rc == CURLE_OK || rc == CURLE_SEND_ERROR);
	if (rc == CURLE_OK)
		check_error(&r, 413, "body");
	free(r.body);
	r.body = NULL;
	/* chunked: read up to the limit, then refused */
	rc = http_ex(v->h, v->sock, "POST", "/v1/vms", big, n, "application/json", true, &r);
	assert_true(rc == CURLE_OK || rc == CURLE_SEND_ERROR);
	if (rc == CURLE_OK)
		check_error(&r, 413, "body");
	free(r.body);
	/* exactly at the limit is read (and is not JSON) */
	rc = http_ex(v->h, v->sock, "POST", "/v1/vms", big, n - 1, "application/json", false, &r);
	assert_int_equal(rc, CURLE_OK);
	check_error(&r, 400, "body");
	free(r.body);
	free(big);
	/* the server still answers */
	req(v, "GET", "/v1/host", NULL, NULL, &r);
	assert_int_equal(r.status, 200);
	free(r.body);
}

struct worker { struct srv *v; int ok; };

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	CURL *h = curl_easy_init();
	for (int i = 0; h && i < 50; i++) {
		struct res r;
		int rc;
		if (i % 2)
			rc = http_ex(h, w->v->sock, "GET", "/v1/vms/vm1", NULL, 0, NULL, false, &r);
		else
			rc = http_ex(h, w->v->sock, "POST", "/v1/vms", SPEC_OK, strlen(SPEC_OK),
				     "application/json", false, &r);
		if (rc == CURLE_OK && r.status == (i % 2 ? 200 : 201) && r.body && strstr(r.body, "\"id\""))
			w->ok++;
		free(r.body);
	}
	curl_easy_cleanup(h);
	return NULL;
}

static void test_concurrent(void **st)
{
	struct srv *v = *st;
	struct worker w[4];
	pthread_t t[4];
	for (int i = 0; i < 4; i++) {
		w[i] = (struct worker){v, 0};
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].ok, 50);
	}
}

/* ---- socket file rules (own servers) ---- */

static int count_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void test_socket_file(void **st)
{
	char dir[] = "/tmp/mv-api-sock.XXXXXX", path[128];
	struct fake f = {.last_force = -1};
	struct mv_api_server *a, *b;
	struct mv_error *err = NULL;
	struct stat sb;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/s", dir);
	int fds0 = count_fds();

	assert_int_equal(mv_api_server_start(path, &fake_backend, &f, &a, &err), 0);
	assert_int_equal(stat(path, &sb), 0);
	assert_true(S_ISSOCK(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0660);
	/* a live socket is not stolen */
	assert_int_equal(mv_api_server_start(path, &fake_backend, &f, &b, &err), -EADDRINUSE);
	assert_non_null(err);
	mv_error_free(err);
	err = NULL;
	mv_api_server_stop(a);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(count_fds(), fds0);

	/* a stale socket file (bound, nobody listening) is replaced */
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	strcpy(sa.sun_path, path);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(s);
	assert_int_equal(mv_api_server_start(path, &fake_backend, &f, &a, &err), 0);
	mv_api_server_stop(a);

	/* a regular file is never removed */
	FILE *fp = fopen(path, "w");
	fclose(fp);
	assert_int_equal(mv_api_server_start(path, &fake_backend, &f, &a, &err), -EEXIST);
	mv_error_free(err);
	err = NULL;
	assert_int_equal(access(path, F_OK), 0);
	unlink(path);

	/* a path longer than sun_path */
	char longp[200];
	memset(longp, 'x', sizeof(longp));
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	assert_int_equal(mv_api_server_start(longp, &fake_backend, &f, &a, NULL), -ENAMETOOLONG);
	assert_int_equal(count_fds(), fds0);
	rmdir(dir);
}

/* A backend missing callbacks answers 500, never crashes. */
static void test_empty_backend(void **st)
{
	static const struct mv_api_backend none = {0};
	char dir[] = "/tmp/mv-api-none.XXXXXX", path[128];
	struct mv_api_server *a;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/s", dir);
	assert_int_equal(mv_api_server_start(path, &none, NULL, &a, NULL), 0);
	CURL *h = curl_easy_init();
	struct res r;
	assert_int_equal(http_ex(h, path, "GET", "/v1/vms", NULL, 0, NULL, false, &r), CURLE_OK);
	check_error(&r, 500, "");
	free(r.body);
	assert_int_equal(http_ex(h, path, "POST", "/v1/vms", SPEC_OK, strlen(SPEC_OK), NULL, false, &r),
			 CURLE_OK);
	check_error(&r, 500, "");
	free(r.body);
	curl_easy_cleanup(h);
	mv_api_server_stop(a);
	rmdir(dir);
}

int api_server_tests(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_spec_routes),
		cmocka_unit_test(test_served_routes_in_spec),
		cmocka_unit_test(test_unknown_paths),
		cmocka_unit_test(test_methods),
		cmocka_unit_test(test_refs_and_bodies),
		cmocka_unit_test(test_delete_force),
		cmocka_unit_test(test_payloads),
		cmocka_unit_test(test_too_big),
		cmocka_unit_test(test_concurrent),
	};
	const struct CMUnitTest solo[] = {
		cmocka_unit_test(test_socket_file),
		cmocka_unit_test(test_empty_backend),
	};
	int r = cmocka_run_group_tests_name("api_server", tests, srv_setup, srv_teardown);
	return r | cmocka_run_group_tests_name("api_socket", solo, NULL, NULL);
}
