/* Route handlers of the side-channel guard: a VM's sensitive ranges (POST,
 * GET /v1/vms/{vm}/sensitive, DELETE /v1/vms/{vm}/sensitive/{id}) and the
 * guard's co-residency findings (GET /v1/guard), its detections (GET
 * /v1/guard/events) and policy (GET, POST /v1/guard/policy). Called by
 * router.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "api_i.h"

void api_sensitive_add(const struct mv_api_backend *be, void *ctx, const char *ref,
		       const struct api_req *rq, struct api_resp *out)
{
	uint64_t gpa, len;
	struct mv_error *e = NULL;
	int r = mv_api_decode_sensitive(rq->body, rq->len, &gpa, &len, &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	API_NEED(be, sensitive_add, out);
	struct mv_sensitive_range *sr = api_calloc(sizeof(*sr), out);
	if (!sr)
		return;
	r = be->sensitive_add(ctx, ref, gpa, len, sr, &e);
	api_reply(out, r, e, 201, r < 0 ? NULL : mv_api_encode_sensitive(sr));
	free(sr);
}

void api_sensitive_list(const struct mv_api_backend *be, void *ctx, const char *ref,
			struct api_resp *out)
{
	struct mv_sensitive_range *v = NULL;
	size_t n = 0;
	struct mv_error *e = NULL;
	API_NEED(be, sensitive_list, out);
	int r = be->sensitive_list(ctx, ref, &v, &n, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : mv_api_encode_sensitive_list(v, n));
	free(v);
}

void api_sensitive_remove(const struct mv_api_backend *be, void *ctx, const char *ref,
			  const char *id, struct api_resp *out)
{
	size_t n = strlen(id);
	uint64_t v = 0;
	bool ok = n > 0 && n <= 18;
	for (size_t i = 0; ok && i < n; i++) {
		ok = id[i] >= '0' && id[i] <= '9';
		v = v * 10 + (uint64_t)(id[i] - '0');
	}
	if (!ok) {
		api_resp_error(out, 400, -EINVAL, "id", "\"%.32s\" is not a sensitive range id", id);
		return;
	}
	struct mv_error *e = NULL;
	API_NEED(be, sensitive_remove, out);
	int r = be->sensitive_remove(ctx, ref, v, &e);
	api_reply_empty(out, r, e);
}

void api_guard_events(const struct mv_api_backend *be, void *ctx, struct api_resp *out)
{
	struct mv_guard_event_info *v = NULL;
	size_t n = 0;
	struct mv_error *e = NULL;
	API_NEED(be, guard_events, out);
	int r = be->guard_events(ctx, &v, &n, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : mv_api_encode_guard_events(v, n));
	free(v);
}

void api_guard_policy(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
		      bool set, struct api_resp *out)
{
	struct mv_guard_policy p;
	struct mv_error *e = NULL;
	API_NEED(be, guard_policy_get, out);
	API_NEED(be, guard_policy_set, out);
	int r = be->guard_policy_get(ctx, &p, &e);
	if (r == 0 && set) {
		r = mv_api_decode_guard_policy(rq->body, rq->len, &p, &e);
		if (r < 0) {
			api_fail(out, r, e);
			return;
		}
		r = be->guard_policy_set(ctx, &p, &e);
	}
	api_reply(out, r, e, 200, r < 0 ? NULL : mv_api_encode_guard_policy(&p));
}

void api_guard_get(const struct mv_api_backend *be, void *ctx, struct api_resp *out)
{
	struct mv_guard_info g;
	struct mv_error *e = NULL;
	API_NEED(be, guard_get, out);
	memset(&g, 0, sizeof(g));
	int r = be->guard_get(ctx, &g, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : mv_api_encode_guard(&g));
	free(g.findings);
}
