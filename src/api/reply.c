/* How route handlers answer what the backend did: its error mapped to a
 * status, else a JSON body or 204 No Content; and the one DELETE shape with
 * ?force= (VMs, containers). Used by routes.c, routes_ctr.c, routes_guard.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "api_i.h"

void *api_calloc(size_t size, struct api_resp *out)
{
	void *p = calloc(1, size);
	if (!p)
		api_resp_error(out, 500, -ENOMEM, "", "out of memory");
	return p;
}

void api_reply(struct api_resp *out, int r, struct mv_error *e, int status, char *json)
{
	if (r < 0) {
		free(json);
		api_fail(out, r, e);
		return;
	}
	mv_error_free(e);
	api_resp_json(out, status, json);
}

void api_reply_empty(struct api_resp *out, int r, struct mv_error *e)
{
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

void api_delete_forced(api_delete_fn del, const char *fn, void *ctx, const char *ref,
		       const struct api_req *rq, struct api_resp *out)
{
	bool force;
	struct mv_error *e = NULL;
	if (api_parse_force(rq, &force, out) < 0)
		return;
	if (!del) {
		api_resp_error(out, 500, -ENOSYS, "", "backend has no %s", fn);
		return;
	}
	int r = del(ctx, ref, force, &e);
	api_reply_empty(out, r, e);
}
