/* The route handlers: decode what the request carries, call the daemon's
 * backend (struct mv_api_backend), encode its answer. Called by router.c.
 * A missing backend callback answers 500 (ENOSYS) instead of crashing. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "api_i.h"

void api_vm_list(const struct mv_api_backend *be, void *ctx, struct api_resp *out)
{
	struct mv_vm_info *vms = NULL;
	size_t n = 0;
	struct mv_error *e = NULL;
	API_NEED(be, vm_list, out);
	int r = be->vm_list(ctx, &vms, &n, &e);
	if (r < 0) {
		free(vms);
		api_fail(out, r, e);
		return;
	}
	mv_error_free(e);
	json_t *arr = json_array();
	for (size_t i = 0; arr && vms && i < n; i++) {
		if (json_array_append_new(arr, api_vm_json(&vms[i])) < 0) {
			json_decref(arr);
			arr = NULL;
		}
	}
	free(vms);
	json_t *o = arr ? json_pack("{s:o}", "vms", arr) : NULL;
	api_resp_json(out, 200, o ? json_dumps(o, JSON_COMPACT) : NULL);
	json_decref(o);
}

void api_vm_create(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
		   struct api_resp *out)
{
	struct mv_vm_spec spec;
	struct mv_vm_info vm;
	struct mv_error *e = NULL;
	int r = mv_api_decode_vm_spec(rq->body, rq->len, &spec, &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	API_NEED(be, vm_create, out);
	memset(&vm, 0, sizeof(vm));
	r = be->vm_create(ctx, &spec, &vm, &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	mv_error_free(e);
	api_resp_json(out, 201, mv_api_encode_vm(&vm));
}

void api_vm_get(const struct mv_api_backend *be, void *ctx, const char *ref, struct api_resp *out)
{
	struct mv_vm_info vm;
	struct mv_error *e = NULL;
	API_NEED(be, vm_get, out);
	memset(&vm, 0, sizeof(vm));
	int r = be->vm_get(ctx, ref, &vm, &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	mv_error_free(e);
	api_resp_json(out, 200, mv_api_encode_vm(&vm));
}

/* ?force=true|false|1|0; absent means false; anything else is a 400. */
int api_parse_force(const struct api_req *rq, bool *force, struct api_resp *out)
{
	const char *v = NULL;
	*force = false;
	if (!rq->query || !rq->query(rq->qctx, "force", &v))
		return 0;
	if (v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)) {
		*force = true;
		return 0;
	}
	if (v && (strcmp(v, "false") == 0 || strcmp(v, "0") == 0))
		return 0;
	api_resp_error(out, 400, -EINVAL, "force", "force must be true, false, 1 or 0");
	return -EINVAL;
}

void api_vm_delete(const struct mv_api_backend *be, void *ctx, const char *ref,
		   const struct api_req *rq, struct api_resp *out)
{
	bool force;
	struct mv_error *e = NULL;
	if (api_parse_force(rq, &force, out) < 0)
		return;
	API_NEED(be, vm_delete, out);
	int r = be->vm_delete(ctx, ref, force, &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	mv_error_free(e);
	out->status = 204;
	out->content_type = "application/json";
	out->body = NULL;
	out->len = 0;
}

void api_vm_action(const struct mv_api_backend *be, void *ctx, const char *ref,
		   enum mv_vm_action a, struct api_resp *out)
{
	struct mv_vm_info vm;
	struct mv_error *e = NULL;
	API_NEED(be, vm_action, out);
	memset(&vm, 0, sizeof(vm));
	int r = be->vm_action(ctx, ref, a, &vm, &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	mv_error_free(e);
	api_resp_json(out, 200, mv_api_encode_vm(&vm));
}

void api_vm_verify(const struct mv_api_backend *be, void *ctx, const char *ref,
		   struct api_resp *out)
{
	struct mv_verify_result vr;
	struct mv_error *e = NULL;
	API_NEED(be, vm_verify, out);
	memset(&vr, 0, sizeof(vr));
	int r = be->vm_verify(ctx, ref, &vr, &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	mv_error_free(e);
	api_resp_json(out, 200, mv_api_encode_verify(&vr));
}

void api_vm_migrate(const struct mv_api_backend *be, void *ctx, const char *ref,
		    const struct api_req *rq, struct api_resp *out)
{
	struct mv_migrate_req req;
	struct mv_handover_result res;
	struct mv_error *e = NULL;
	int r = mv_api_decode_migrate(rq->body, rq->len, &req, &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	API_NEED(be, vm_migrate, out);
	memset(&res, 0, sizeof(res));
	struct mv_vm_info vm;
	memset(&vm, 0, sizeof(vm));
	r = be->vm_migrate(ctx, ref, &req, &res, &vm, &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	mv_error_free(e);
	if (req.local)
		api_resp_json(out, 200, mv_api_encode_handover(&res));
	else
		api_resp_json(out, 202, mv_api_encode_vm(&vm));
}

void api_upgrade(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
		 struct api_resp *out)
{
	char vmm[MV_PATH_MAX];
	struct mv_handover_result *res = NULL;
	size_t n = 0;
	struct mv_error *e = NULL;
	int r = mv_api_decode_upgrade(rq->body, rq->len, vmm, sizeof(vmm), &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	API_NEED(be, upgrade, out);
	r = be->upgrade(ctx, vmm, &res, &n, &e);
	if (r < 0) {
		free(res);
		api_fail(out, r, e);
		return;
	}
	mv_error_free(e);
	api_resp_json(out, 200, api_encode_upgrade(vmm, res, n));
	free(res);
}

void api_host_get(const struct mv_api_backend *be, void *ctx, struct api_resp *out)
{
	struct mv_host_info h;
	struct mv_error *e = NULL;
	API_NEED(be, host_get, out);
	memset(&h, 0, sizeof(h));
	int r = be->host_get(ctx, &h, &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	mv_error_free(e);
	api_resp_json(out, 200, mv_api_encode_host(&h));
}

void api_fusion_get(const struct mv_api_backend *be, void *ctx, struct api_resp *out)
{
	struct mv_fusion_info f;
	struct mv_error *e = NULL;
	API_NEED(be, fusion_get, out);
	memset(&f, 0, sizeof(f));
	int r = be->fusion_get(ctx, &f, &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	mv_error_free(e);
	api_resp_json(out, 200, mv_api_encode_fusion(&f));
}

void api_metrics(const struct mv_api_backend *be, void *ctx, struct api_resp *out)
{
	char *text = NULL;
	struct mv_error *e = NULL;
	API_NEED(be, metrics, out);
	int r = be->metrics(ctx, &text, &e);
	if (r < 0 || !text) {
		free(text);
		api_fail(out, r < 0 ? r : -ENOMEM, e);
		return;
	}
	mv_error_free(e);
	out->status = 200;
	out->content_type = "text/plain; version=0.0.4; charset=utf-8";
	out->body = text;
	out->len = strlen(text);
}
