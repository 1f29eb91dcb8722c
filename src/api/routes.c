/* The route handlers: decode what the request carries, call the daemon's
 * backend (struct mv_api_backend), encode its answer. Called by router.c.
 * A missing backend callback answers 500 (ENOSYS) instead of crashing. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "api_i.h"

static json_t *vm_elem(const void *vm)
{
	return api_vm_json(vm);
}

void api_vm_list(const struct mv_api_backend *be, void *ctx, struct api_resp *out)
{
	struct mv_vm_info *vms = NULL;
	size_t n = 0;
	struct mv_error *e = NULL;
	API_NEED(be, vm_list, out);
	int r = be->vm_list(ctx, &vms, &n, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : api_encode_list("vms", vms, n, sizeof(*vms), vm_elem));
	free(vms);
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
	api_reply(out, r, e, 201, r < 0 ? NULL : mv_api_encode_vm(&vm));
}

void api_vm_get(const struct mv_api_backend *be, void *ctx, const char *ref, struct api_resp *out)
{
	struct mv_vm_info vm;
	struct mv_error *e = NULL;
	API_NEED(be, vm_get, out);
	memset(&vm, 0, sizeof(vm));
	int r = be->vm_get(ctx, ref, &vm, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : mv_api_encode_vm(&vm));
}

void api_vm_delete(const struct mv_api_backend *be, void *ctx, const char *ref,
		   const struct api_req *rq, struct api_resp *out)
{
	api_delete_forced(be->vm_delete, "vm_delete", ctx, ref, rq, out);
}

void api_vm_action(const struct mv_api_backend *be, void *ctx, const char *ref,
		   enum mv_vm_action a, struct api_resp *out)
{
	struct mv_vm_info vm;
	struct mv_error *e = NULL;
	API_NEED(be, vm_action, out);
	memset(&vm, 0, sizeof(vm));
	int r = be->vm_action(ctx, ref, a, &vm, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : mv_api_encode_vm(&vm));
}

void api_vm_verify(const struct mv_api_backend *be, void *ctx, const char *ref,
		   struct api_resp *out)
{
	struct mv_verify_result vr;
	struct mv_error *e = NULL;
	API_NEED(be, vm_verify, out);
	memset(&vr, 0, sizeof(vr));
	int r = be->vm_verify(ctx, ref, &vr, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : mv_api_encode_verify(&vr));
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
	/* Local: the handover's figures; remote: the VM, now migrating. */
	char *json = r < 0 ? NULL : req.local ? mv_api_encode_handover(&res) : mv_api_encode_vm(&vm);
	api_reply(out, r, e, req.local ? 200 : 202, json);
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
	api_reply(out, r, e, 200, r < 0 ? NULL : api_encode_upgrade(vmm, res, n));
	free(res);
}

void api_host_get(const struct mv_api_backend *be, void *ctx, struct api_resp *out)
{
	struct mv_host_info h;
	struct mv_error *e = NULL;
	API_NEED(be, host_get, out);
	memset(&h, 0, sizeof(h));
	int r = be->host_get(ctx, &h, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : mv_api_encode_host(&h));
}

void api_fusion_get(const struct mv_api_backend *be, void *ctx, struct api_resp *out)
{
	struct mv_fusion_info f;
	struct mv_error *e = NULL;
	API_NEED(be, fusion_get, out);
	memset(&f, 0, sizeof(f));
	int r = be->fusion_get(ctx, &f, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : mv_api_encode_fusion(&f));
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
