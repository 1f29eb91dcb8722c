/* Route handlers of container images (/v1/images), containers
 * (/v1/containers) and the host-wide shared cache (/v1/cache). Called by
 * router.c with names already validated. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "api_i.h"

#define LOGS_WAIT_MAX_MS 60000

static json_t *image_elem(const void *im)
{
	return api_image_json(im);
}

static json_t *ctr_elem(const void *c)
{
	return api_ctr_json(c);
}

void api_image_pull(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
		    struct api_resp *out)
{
	char ref[MV_IMAGE_NAME_MAX + 1];
	struct mv_error *e = NULL;
	int r = mv_api_decode_image_pull(rq->body, rq->len, ref, sizeof(ref), &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	API_NEED(be, image_pull, out);
	struct mv_image_status *im = api_calloc(sizeof(*im), out);
	if (!im)
		return;
	r = be->image_pull(ctx, ref, im, &e);
	api_reply(out, r, e, 202, r < 0 ? NULL : mv_api_encode_image(im));
	free(im);
}

void api_image_list(const struct mv_api_backend *be, void *ctx, struct api_resp *out)
{
	struct mv_image_status *v = NULL;
	size_t n = 0;
	struct mv_error *e = NULL;
	API_NEED(be, image_list, out);
	int r = be->image_list(ctx, &v, &n, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : api_encode_list("images", v, n, sizeof(*v), image_elem));
	free(v);
}

void api_image_get(const struct mv_api_backend *be, void *ctx, const char *name,
		   struct api_resp *out)
{
	struct mv_error *e = NULL;
	API_NEED(be, image_get, out);
	struct mv_image_status *im = api_calloc(sizeof(*im), out);
	if (!im)
		return;
	int r = be->image_get(ctx, name, im, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : mv_api_encode_image(im));
	free(im);
}

void api_image_remove(const struct mv_api_backend *be, void *ctx, const char *name,
		      struct api_resp *out)
{
	struct mv_error *e = NULL;
	API_NEED(be, image_remove, out);
	int r = be->image_remove(ctx, name, &e);
	api_reply_empty(out, r, e);
}

void api_cache_prepopulate(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
			   struct api_resp *out)
{
	char **refs = NULL;
	size_t n = 0;
	struct mv_error *e = NULL;
	int r = mv_api_decode_prepopulate(rq->body, rq->len, &refs, &n, &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	struct mv_cache_info *c = calloc(1, sizeof(*c));
	if (be->cache_prepopulate && c) {
		r = be->cache_prepopulate(ctx, refs, n, c, &e);
		api_reply(out, r, e, 202, r < 0 ? NULL : mv_api_encode_cache(c));
	} else {
		api_resp_error(out, 500, -ENOSYS, "", "backend has no cache_prepopulate");
	}
	for (size_t i = 0; i < n; i++)
		free(refs[i]);
	free(refs);
	free(c);
}

void api_cache_get(const struct mv_api_backend *be, void *ctx, struct api_resp *out)
{
	struct mv_error *e = NULL;
	API_NEED(be, cache_get, out);
	struct mv_cache_info *c = api_calloc(sizeof(*c), out);
	if (!c)
		return;
	int r = be->cache_get(ctx, c, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : mv_api_encode_cache(c));
	free(c);
}

void api_ctr_create(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
		    struct api_resp *out)
{
	struct mv_ctr_spec spec;
	struct mv_error *e = NULL;
	int r = mv_api_decode_ctr_spec(rq->body, rq->len, &spec, &e);
	if (r < 0) {
		api_fail(out, r, e);
		return;
	}
	struct mv_ctr_info *c = calloc(1, sizeof(*c));
	if (be->ctr_create && c) {
		r = be->ctr_create(ctx, &spec, c, &e);
		api_reply(out, r, e, 201, r < 0 ? NULL : mv_api_encode_ctr(c));
	} else {
		api_resp_error(out, 500, -ENOSYS, "", "backend has no ctr_create");
	}
	mv_api_ctr_spec_free(&spec);
	free(c);
}

void api_ctr_list(const struct mv_api_backend *be, void *ctx, struct api_resp *out)
{
	struct mv_ctr_info *v = NULL;
	size_t n = 0;
	struct mv_error *e = NULL;
	API_NEED(be, ctr_list, out);
	int r = be->ctr_list(ctx, &v, &n, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : api_encode_list("containers", v, n, sizeof(*v), ctr_elem));
	free(v);
}

void api_ctr_get(const struct mv_api_backend *be, void *ctx, const char *ref, bool stop,
		 struct api_resp *out)
{
	struct mv_error *e = NULL;
	if (stop)
		API_NEED(be, ctr_stop, out);
	else
		API_NEED(be, ctr_get, out);
	struct mv_ctr_info *c = api_calloc(sizeof(*c), out);
	if (!c)
		return;
	int r = stop ? be->ctr_stop(ctx, ref, c, &e) : be->ctr_get(ctx, ref, c, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : mv_api_encode_ctr(c));
	free(c);
}

void api_ctr_delete(const struct mv_api_backend *be, void *ctx, const char *ref,
		    const struct api_req *rq, struct api_resp *out)
{
	api_delete_forced(be->ctr_delete, "ctr_delete", ctx, ref, rq, out);
}

/* A decimal query parameter within [0, max]; absent: dflt. */
static int query_uint(const struct api_req *rq, const char *key, uint64_t max, uint64_t dflt,
		      uint64_t *v, struct api_resp *out)
{
	const char *s = NULL;
	*v = dflt;
	if (!rq->query || !rq->query(rq->qctx, key, &s))
		return 0;
	size_t n = s ? strlen(s) : 0;
	bool ok = n > 0 && n <= 19;
	uint64_t x = 0;
	for (size_t i = 0; ok && i < n; i++) {
		ok = s[i] >= '0' && s[i] <= '9';
		x = x * 10 + (uint64_t)(s[i] - '0');
	}
	if (!ok || x > max) {
		api_resp_error(out, 400, -EINVAL, key, "%s must be an integer from 0 to %llu", key,
			       (unsigned long long)max);
		return -EINVAL;
	}
	*v = x;
	return 0;
}

void api_ctr_logs(const struct mv_api_backend *be, void *ctx, const char *ref,
		  const struct api_req *rq, struct api_resp *out)
{
	uint64_t offset, wait;
	if (query_uint(rq, "offset", INT64_MAX, 0, &offset, out) < 0 ||
	    query_uint(rq, "wait_ms", LOGS_WAIT_MAX_MS, 0, &wait, out) < 0)
		return;
	API_NEED(be, ctr_logs, out);
	struct mv_ctr_logs l;
	struct mv_error *e = NULL;
	memset(&l, 0, sizeof(l));
	int r = be->ctr_logs(ctx, ref, offset, (uint32_t)wait, &l, &e);
	api_reply(out, r, e, 200, r < 0 ? NULL : api_encode_ctr_logs(&l));
	free(l.data);
}
