/* Request routing: method + path -> handler, per docs/api/openapi.yaml.
 * Unknown paths answer 404, a known path with another method 405 with an
 * Allow header, a malformed VM reference 400. Also the per-route body and
 * Content-Type rules. Called by server.c once a request is fully received. */
#include <errno.h>
#include <string.h>
#include <strings.h>
#include "api_i.h"

enum route_id {
	R_HOST, R_VMS, R_VM, R_VM_PAUSE, R_VM_RESUME, R_VM_STOP, R_VM_VERIFY, R_VM_MIGRATE,
	R_VM_SENSITIVE, R_VM_SENSITIVE_ONE, R_UPGRADE, R_METRICS, R_FUSION, R_GUARD,
	R_IMAGES, R_IMAGE, R_CACHE, R_CACHE_PREPOP, R_CTRS, R_CTR, R_CTR_STOP, R_CTR_LOGS,
	R_GUARD_EVENTS, R_GUARD_POLICY,
};

/* Methods as a bit set; HEAD rides along with GET (MHD drops the body). */
enum { M_GET = 1, M_POST = 2, M_DELETE = 4 };

struct route {
	unsigned methods;
	unsigned body_methods;       /* methods that take a request body */
};

static const struct route routes[] = {
	[R_HOST] = {M_GET, 0},
	[R_VMS] = {M_GET | M_POST, M_POST},
	[R_VM] = {M_GET | M_DELETE, 0},
	[R_VM_PAUSE] = {M_POST, 0},
	[R_VM_RESUME] = {M_POST, 0},
	[R_VM_STOP] = {M_POST, 0},
	[R_VM_VERIFY] = {M_POST, 0},
	[R_VM_MIGRATE] = {M_POST, M_POST},
	[R_VM_SENSITIVE] = {M_GET | M_POST, M_POST},
	[R_VM_SENSITIVE_ONE] = {M_DELETE, 0},
	[R_UPGRADE] = {M_POST, M_POST},
	[R_METRICS] = {M_GET, 0},
	[R_FUSION] = {M_GET, 0},
	[R_GUARD] = {M_GET, 0},
	[R_IMAGES] = {M_GET | M_POST, M_POST},
	[R_IMAGE] = {M_GET | M_DELETE, 0},
	[R_CACHE] = {M_GET, 0},
	[R_CACHE_PREPOP] = {M_POST, M_POST},
	[R_CTRS] = {M_GET | M_POST, M_POST},
	[R_CTR] = {M_GET | M_DELETE, 0},
	[R_CTR_STOP] = {M_POST, 0},
	[R_CTR_LOGS] = {M_GET, 0},
	[R_GUARD_EVENTS] = {M_GET, 0},
	[R_GUARD_POLICY] = {M_GET | M_POST, M_POST},
};

static const char *const vm_actions[] = {
	[R_VM_PAUSE] = "pause", [R_VM_RESUME] = "resume", [R_VM_STOP] = "stop",
	[R_VM_VERIFY] = "verify", [R_VM_MIGRATE] = "migrate",
};

/* Path templates as docs/api/openapi.yaml writes them. */
static const char *const templates[] = {
	[R_HOST] = "/v1/host", [R_VMS] = "/v1/vms", [R_VM] = "/v1/vms/{vm}",
	[R_VM_PAUSE] = "/v1/vms/{vm}/pause", [R_VM_RESUME] = "/v1/vms/{vm}/resume",
	[R_VM_STOP] = "/v1/vms/{vm}/stop", [R_VM_VERIFY] = "/v1/vms/{vm}/verify",
	[R_VM_MIGRATE] = "/v1/vms/{vm}/migrate", [R_UPGRADE] = "/v1/upgrade",
	[R_METRICS] = "/metrics", [R_FUSION] = "/v1/fusion",
	[R_VM_SENSITIVE] = "/v1/vms/{vm}/sensitive", [R_VM_SENSITIVE_ONE] = "/v1/vms/{vm}/sensitive/{id}",
	[R_GUARD] = "/v1/guard",
	[R_IMAGES] = "/v1/images", [R_IMAGE] = "/v1/images/{name}", [R_CACHE] = "/v1/cache",
	[R_CACHE_PREPOP] = "/v1/cache/prepopulate", [R_CTRS] = "/v1/containers",
	[R_CTR] = "/v1/containers/{ctr}", [R_CTR_STOP] = "/v1/containers/{ctr}/stop",
	[R_CTR_LOGS] = "/v1/containers/{ctr}/logs",
	[R_GUARD_EVENTS] = "/v1/guard/events", [R_GUARD_POLICY] = "/v1/guard/policy",
};

void mv_api_routes_each(void (*fn)(const char *method, const char *path, void *arg), void *arg)
{
	static const char *const names[] = {"GET", "POST", "DELETE"};
	for (size_t r = 0; r < sizeof(routes) / sizeof(routes[0]); r++)
		for (unsigned b = 0; b < 3; b++)
			if (routes[r].methods & (1u << b))
				fn(names[b], templates[r], arg);
}

static unsigned method_bit(const char *m)
{
	if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0)
		return M_GET;
	if (strcmp(m, "POST") == 0)
		return M_POST;
	if (strcmp(m, "DELETE") == 0)
		return M_DELETE;
	return 0;
}

static void allow_header(unsigned methods, char *buf, size_t len)
{
	buf[0] = '\0';
	if (methods & M_GET)
		strncat(buf, "GET, HEAD", len - strlen(buf) - 1);
	if (methods & M_POST)
		strncat(buf, *buf ? ", POST" : "POST", len - strlen(buf) - 1);
	if (methods & M_DELETE)
		strncat(buf, *buf ? ", DELETE" : "DELETE", len - strlen(buf) - 1);
}

/* Copies the path segment at seg (up to '/' or the end) into ref, bounded
 * (*ref_ok false when it is too long to be valid); false when it is empty. */
static bool take_segment(const char *seg, const char *slash, char *ref, size_t reflen,
			 bool *ref_ok)
{
	size_t n = slash ? (size_t)(slash - seg) : strlen(seg);
	if (n == 0)
		return false;
	if (n >= reflen) {
		*ref_ok = false;
		n = reflen - 1;
	}
	memcpy(ref, seg, n);
	ref[n] = '\0';
	return true;
}

/* Images, cache and containers: -2 when path is none of theirs. An image
 * name is the rest of the path (it holds '/' and ':'; clients escape them),
 * pointed at by *sub; a container ref is copied into ref like a VM's. */
static int match_ctr(const char *path, char *ref, size_t reflen, bool *ref_ok, const char **sub)
{
	static const char images[] = "/v1/images/", ctrs[] = "/v1/containers/";
	if (strcmp(path, "/v1/images") == 0)
		return R_IMAGES;
	if (strcmp(path, "/v1/cache") == 0)
		return R_CACHE;
	if (strcmp(path, "/v1/cache/prepopulate") == 0)
		return R_CACHE_PREPOP;
	if (strcmp(path, "/v1/containers") == 0)
		return R_CTRS;
	if (strncmp(path, images, sizeof(images) - 1) == 0) {
		*sub = path + sizeof(images) - 1;
		return **sub ? R_IMAGE : -1;
	}
	if (strncmp(path, ctrs, sizeof(ctrs) - 1) != 0)
		return -2;
	const char *seg = path + sizeof(ctrs) - 1;
	const char *slash = strchr(seg, '/');
	if (!take_segment(seg, slash, ref, reflen, ref_ok))
		return -1;
	if (!slash)
		return R_CTR;
	if (strcmp(slash, "/stop") == 0)
		return R_CTR_STOP;
	if (strcmp(slash, "/logs") == 0)
		return R_CTR_LOGS;
	return -1;
}

/* Matches path; on /v1/vms/{vm}[/action] stores the ref segment (bounded copy;
 * ref_ok false when it is too long to be valid), on .../sensitive/{id} points
 * *sub at the id. Returns -1 when no route. */
static int match(const char *path, char *ref, size_t reflen, bool *ref_ok, const char **sub)
{
	static const char sens[] = "sensitive/";
	static const char vms[] = "/v1/vms/";
	*ref_ok = true;
	if (strcmp(path, "/v1/host") == 0)
		return R_HOST;
	if (strcmp(path, "/v1/vms") == 0)
		return R_VMS;
	if (strcmp(path, "/metrics") == 0)
		return R_METRICS;
	if (strcmp(path, "/v1/upgrade") == 0)
		return R_UPGRADE;
	if (strcmp(path, "/v1/fusion") == 0)
		return R_FUSION;
	if (strcmp(path, "/v1/guard") == 0)
		return R_GUARD;
	int c = match_ctr(path, ref, reflen, ref_ok, sub);
	if (c != -2)
		return c;
	if (strcmp(path, "/v1/guard/events") == 0)
		return R_GUARD_EVENTS;
	if (strcmp(path, "/v1/guard/policy") == 0)
		return R_GUARD_POLICY;
	if (strncmp(path, vms, sizeof(vms) - 1) != 0)
		return -1;
	const char *seg = path + sizeof(vms) - 1;
	const char *slash = strchr(seg, '/');
	if (!take_segment(seg, slash, ref, reflen, ref_ok))
		return -1;
	if (!slash)
		return R_VM;
	for (int r = R_VM_PAUSE; r <= R_VM_MIGRATE; r++)
		if (strcmp(slash + 1, vm_actions[r]) == 0)
			return r;
	if (strcmp(slash + 1, "sensitive") == 0)
		return R_VM_SENSITIVE;
	if (strncmp(slash + 1, sens, sizeof(sens) - 1) == 0 && slash[sizeof(sens)] &&
	    !strchr(slash + sizeof(sens), '/')) {
		*sub = slash + sizeof(sens);
		return R_VM_SENSITIVE_ONE;
	}
	return -1;
}

/* True when Content-Type is application/json, parameters (charset) allowed. */
static bool is_json(const char *ct)
{
	static const char j[] = "application/json";
	while (*ct == ' ' || *ct == '\t')
		ct++;
	if (strncasecmp(ct, j, sizeof(j) - 1) != 0)
		return false;
	ct += sizeof(j) - 1;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	return *ct == '\0' || *ct == ';';
}

void api_route(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
	       struct api_resp *out)
{
	char ref[MV_NAME_MAX + 2];
	bool ref_ok;
	const char *sub = "";
	int id = match(rq->path, ref, sizeof(ref), &ref_ok, &sub);
	if (id < 0) {
		api_resp_error(out, 404, -ENOENT, "", "no such path: %.200s", rq->path);
		return;
	}
	const struct route *rt = &routes[id];
	unsigned m = method_bit(rq->method);
	if (!(rt->methods & m)) {
		allow_header(rt->methods, out->allow, sizeof(out->allow));
		api_resp_error(out, 405, -EOPNOTSUPP, "", "method %.16s not allowed on %.200s (allowed: %s)",
			       rq->method, rq->path, out->allow);
		return;
	}
	if (id >= R_VM && id <= R_VM_SENSITIVE_ONE && (!ref_ok || !mv_api_name_valid(ref))) {
		api_resp_error(out, 400, -EINVAL, "vm", "\"%.64s\" is not a valid VM id or name", ref);
		return;
	}
	if (id >= R_CTR && id <= R_CTR_LOGS && (!ref_ok || !mv_api_name_valid(ref))) {
		api_resp_error(out, 400, -EINVAL, "ctr", "\"%.64s\" is not a valid container id or name", ref);
		return;
	}
	if (id == R_IMAGE && !mv_api_image_name_valid(sub)) {
		api_resp_error(out, 400, -EINVAL, "name", "\"%.64s\" is not a valid image name", sub);
		return;
	}
	if ((rt->body_methods & m) && rq->content_type && !is_json(rq->content_type)) {
		api_resp_error(out, 415, -EINVAL, "Content-Type",
			       "Content-Type must be application/json, not \"%.64s\"", rq->content_type);
		return;
	}
	if (!(rt->body_methods & m) && rq->len > 0) {
		api_resp_error(out, 400, -EINVAL, "body", "%s %s takes no request body",
			       rq->method, rq->path);
		return;
	}

	switch ((enum route_id)id) {
	case R_HOST:
		api_host_get(be, ctx, out);
		return;
	case R_VMS:
		if (m == M_GET) {
			api_vm_list(be, ctx, out);
			return;
		}
		api_vm_create(be, ctx, rq, out);
		return;
	case R_VM:
		if (m == M_GET)
			api_vm_get(be, ctx, ref, out);
		else
			api_vm_delete(be, ctx, ref, rq, out);
		return;
	case R_VM_PAUSE:
		api_vm_action(be, ctx, ref, MV_VM_PAUSE, out);
		return;
	case R_VM_RESUME:
		api_vm_action(be, ctx, ref, MV_VM_RESUME, out);
		return;
	case R_VM_STOP:
		api_vm_action(be, ctx, ref, MV_VM_STOP, out);
		return;
	case R_VM_VERIFY:
		api_vm_verify(be, ctx, ref, out);
		return;
	case R_VM_MIGRATE:
		api_vm_migrate(be, ctx, ref, rq, out);
		return;
	case R_UPGRADE:
		api_upgrade(be, ctx, rq, out);
		return;
	case R_METRICS:
		api_metrics(be, ctx, out);
		return;
	case R_FUSION:
		api_fusion_get(be, ctx, out);
		return;
	case R_VM_SENSITIVE:
		if (m == M_GET)
			api_sensitive_list(be, ctx, ref, out);
		else
			api_sensitive_add(be, ctx, ref, rq, out);
		return;
	case R_VM_SENSITIVE_ONE:
		api_sensitive_remove(be, ctx, ref, sub, out);
		return;
	case R_GUARD:
		api_guard_get(be, ctx, out);
		return;
	case R_IMAGES:
		if (m == M_GET)
			api_image_list(be, ctx, out);
		else
			api_image_pull(be, ctx, rq, out);
		return;
	case R_IMAGE:
		if (m == M_GET)
			api_image_get(be, ctx, sub, out);
		else
			api_image_remove(be, ctx, sub, out);
		return;
	case R_CACHE:
		api_cache_get(be, ctx, out);
		return;
	case R_CACHE_PREPOP:
		api_cache_prepopulate(be, ctx, rq, out);
		return;
	case R_CTRS:
		if (m == M_GET)
			api_ctr_list(be, ctx, out);
		else
			api_ctr_create(be, ctx, rq, out);
		return;
	case R_CTR:
		if (m == M_GET)
			api_ctr_get(be, ctx, ref, false, out);
		else
			api_ctr_delete(be, ctx, ref, rq, out);
		return;
	case R_CTR_STOP:
		api_ctr_get(be, ctx, ref, true, out);
		return;
	case R_CTR_LOGS:
		api_ctr_logs(be, ctx, ref, rq, out);
		return;
	case R_GUARD_EVENTS:
		api_guard_events(be, ctx, out);
		return;
	case R_GUARD_POLICY:
		api_guard_policy(be, ctx, rq, m == M_POST, out);
		return;
	}
}
