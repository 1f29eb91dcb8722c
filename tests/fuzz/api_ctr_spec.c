/* libFuzzer target over the image/container/cache request decoders
 * (src/api/codec_ctr.c) and the container log route's query parameters
 * (src/api/routes_ctr.c). The first byte picks what the rest is:
 *   0: POST /v1/containers body       (mv_api_decode_ctr_spec)
 *   1: POST /v1/images body           (mv_api_decode_image_pull)
 *   2: POST /v1/cache/prepopulate body (mv_api_decode_prepopulate)
 *   3: a method byte (GET, POST, DELETE by value mod 3), "PATH[?QUERY]\n",
 *      then a body, routed (api_route) to a backend that answers every image,
 *      container and cache call: covers ?offset=&wait_ms= of .../logs and
 *      the ref/name checks of those routes.
 * Besides "never crash": every rejection is 400 naming a field, and what is
 * accepted honours the limits the daemon and the shim rely on.
 * Seeds: tests/fuzz/corpus/api_ctr_spec/. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../src/api/api_i.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "invariant broken: %s\n", what);
		abort();
	}
}

static void check_rejection(int r, struct mv_error *err)
{
	check(err != NULL && err->code == r, "a rejection carries its error");
	check(r == -EINVAL && mv_api_http_status(r) == 400, "rejections are 400");
	check(err->field[0] != '\0', "a rejection names a field");
	check(err->msg[0] != '\0', "a rejection says why");
	char *e = mv_api_encode_error(400, err, r);
	check(e != NULL, "encode_error returned NULL");
	free(e);
	mv_error_free(err);
}

static void fuzz_ctr_spec(const char *body, size_t len)
{
	struct mv_ctr_spec s;
	struct mv_error *err = NULL;
	int r = mv_api_decode_ctr_spec(body, len, &s, &err);
	if (r < 0) {
		check_rejection(r, err);
		return;
	}
	check(err == NULL, "no error on success");
	check(mv_api_image_name_valid(s.image), "image valid");
	check(!s.name[0] || mv_api_name_valid(s.name), "name empty or valid");
	check(s.ncmd <= MV_CTR_ARGS_MAX && s.nenv <= 256, "vector sizes");
	/* "cmd": [] is an empty vector: the daemon goes by ncmd (0: the image's command). */
	check((s.ncmd == 0 || s.cmd) && (s.nenv == 0 || s.env), "vectors set");
	for (size_t i = 0; i < s.ncmd; i++)
		check(strlen(s.cmd[i]) < MV_CTR_ARG_MAX, "cmd entry length");
	check(!s.cmd || s.cmd[s.ncmd] == NULL, "cmd NULL-terminated");
	check(!s.env || s.env[s.nenv] == NULL, "env NULL-terminated");
	for (size_t i = 0; i < s.nenv; i++) {
		check(strlen(s.env[i]) < MV_CTR_ARG_MAX, "env entry length");
		check(s.env[i][0] != '=' && strchr(s.env[i], '=') != NULL, "env is KEY=VALUE");
	}
	mv_api_ctr_spec_free(&s);
	check(s.cmd == NULL && s.env == NULL && s.ncmd == 0 && s.nenv == 0, "free resets");
}

static void fuzz_image_pull(const char *body, size_t len)
{
	char ref[MV_IMAGE_NAME_MAX + 1];
	struct mv_error *err = NULL;
	int r = mv_api_decode_image_pull(body, len, ref, sizeof(ref), &err);
	if (r < 0) {
		check_rejection(r, err);
		return;
	}
	check(err == NULL && mv_api_image_name_valid(ref), "pulled ref valid");
}

static void fuzz_prepopulate(const char *body, size_t len)
{
	char **refs = (char **)1;
	size_t n = 7;
	struct mv_error *err = NULL;
	int r = mv_api_decode_prepopulate(body, len, &refs, &n, &err);
	if (r < 0) {
		check(refs == NULL && n == 0, "nothing returned on rejection");
		check_rejection(r, err);
		return;
	}
	check(err == NULL && n >= 1 && n <= 64 && refs && !refs[n], "1..64 refs");
	for (size_t i = 0; i < n; i++) {
		check(mv_api_image_name_valid(refs[i]), "prepopulate ref valid");
		free(refs[i]);
	}
	free(refs);
}

/* ---- mode 3: routed requests against a backend that always succeeds ---- */

struct query {
	const char *s;   /* "k=v&k&..." */
	size_t len;
};

/* Like MHD's: the first k, its value after '=' (NULL for a bare "k"). */
static bool q_get(void *qctx, const char *key, const char **val)
{
	struct query *q = qctx;
	static char buf[256];
	size_t kl = strlen(key);
	const char *p = q->s, *end = q->s + q->len;
	*val = NULL;
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		if (!amp)
			amp = end;
		const char *eq = memchr(p, '=', (size_t)(amp - p));
		const char *kend = eq ? eq : amp;
		if ((size_t)(kend - p) == kl && !memcmp(p, key, kl)) {
			if (eq) {
				size_t vl = (size_t)(amp - eq - 1);
				if (vl >= sizeof(buf))
					vl = sizeof(buf) - 1;
				memcpy(buf, eq + 1, vl);
				buf[vl] = '\0';
				*val = buf;
			}
			return true;
		}
		p = amp + 1;
	}
	return false;
}

static uint64_t last_offset;
static uint32_t last_wait;

static int b_ctr_logs(void *ctx, const char *ref, uint64_t offset, uint32_t wait_ms,
		      struct mv_ctr_logs *out, struct mv_error **err)
{
	check(mv_api_name_valid(ref), "logs ref valid");
	check(offset <= INT64_MAX && wait_ms <= 60000, "logs query in range");
	last_offset = offset;
	last_wait = wait_ms;
	out->data = strdup("hi\n");
	out->len = 3;
	out->offset = offset;
	out->next_offset = offset + 3;
	out->size = offset + 3;
	return 0;
}

static int b_ctr_create(void *ctx, const struct mv_ctr_spec *spec, struct mv_ctr_info *out,
			struct mv_error **err)
{
	check(mv_api_image_name_valid(spec->image), "create image valid");
	snprintf(out->name, sizeof(out->name), "%s", spec->name[0] ? spec->name : "gen");
	snprintf(out->image, sizeof(out->image), "%s", spec->image);
	return 0;
}

static int b_ctr_get(void *ctx, const char *ref, struct mv_ctr_info *out, struct mv_error **err)
{
	check(mv_api_name_valid(ref), "ctr ref valid");
	snprintf(out->name, sizeof(out->name), "%s", ref);
	return 0;
}

static int b_ctr_delete(void *ctx, const char *ref, bool force, struct mv_error **err)
{
	check(mv_api_name_valid(ref), "delete ref valid");
	return 0;
}

static int b_ctr_list(void *ctx, struct mv_ctr_info **out, size_t *n, struct mv_error **err)
{
	*out = calloc(1, sizeof(**out));
	*n = *out ? 1 : 0;
	return 0;
}

static int b_image_pull(void *ctx, const char *ref, struct mv_image_status *out,
			struct mv_error **err)
{
	check(mv_api_image_name_valid(ref), "pull ref valid");
	snprintf(out->name, sizeof(out->name), "%s", ref);
	return 0;
}

static int b_image_get(void *ctx, const char *name, struct mv_image_status *out,
		       struct mv_error **err)
{
	check(mv_api_image_name_valid(name), "image name valid");
	snprintf(out->name, sizeof(out->name), "%s", name);
	return 0;
}

static int b_image_remove(void *ctx, const char *name, struct mv_error **err)
{
	check(mv_api_image_name_valid(name), "image name valid");
	return 0;
}

static int b_image_list(void *ctx, struct mv_image_status **out, size_t *n, struct mv_error **err)
{
	*out = NULL;
	*n = 0;
	return 0;
}

static int b_cache_prepopulate(void *ctx, char *const *refs, size_t n, struct mv_cache_info *out,
			       struct mv_error **err)
{
	check(n >= 1 && n <= 64, "prepopulate count");
	out->job = true;
	return 0;
}

static int b_cache_get(void *ctx, struct mv_cache_info *out, struct mv_error **err)
{
	return 0;
}

static const struct mv_api_backend backend = {
	.ctr_logs = b_ctr_logs, .ctr_create = b_ctr_create, .ctr_get = b_ctr_get,
	.ctr_stop = b_ctr_get, .ctr_delete = b_ctr_delete, .ctr_list = b_ctr_list,
	.image_pull = b_image_pull, .image_get = b_image_get, .image_remove = b_image_remove,
	.image_list = b_image_list, .cache_prepopulate = b_cache_prepopulate,
	.cache_get = b_cache_get,
};

static void fuzz_route(const uint8_t *data, size_t size)
{
	if (size < 1)
		return;
	static const char *const methods[] = {"GET", "POST", "DELETE"};
	const char *method = methods[data[0] % 3];
	data++, size--;
	const uint8_t *nl = memchr(data, '\n', size);
	size_t plen = nl ? (size_t)(nl - data) : size;
	char path[1024];
	if (plen >= sizeof(path) || memchr(data, '\0', plen))
		return;
	memcpy(path, data, plen);
	path[plen] = '\0';
	/* Only the routes of codec_ctr.c / routes_ctr.c: the VM routes have targets of their own. */
	if (strncmp(path, "/v1/containers", 14) && strncmp(path, "/v1/images", 10) &&
	    strncmp(path, "/v1/cache", 9))
		return;
	struct query q = {"", 0};
	char *qm = strchr(path, '?');
	if (qm) {
		*qm = '\0';
		q.s = qm + 1;
		q.len = strlen(q.s);
	}
	size_t blen = nl ? size - plen - 1 : 0;
	char *body = malloc(blen + 1);   /* the server NUL-terminates bodies */
	if (!body)
		return;
	memcpy(body, nl ? (const char *)nl + 1 : "", blen);
	body[blen] = '\0';
	struct api_req rq = {.method = method, .path = path, .body = body, .len = blen,
			     .query = q_get, .qctx = &q};
	struct api_resp out;
	memset(&out, 0, sizeof(out));
	last_offset = UINT64_MAX;
	api_route(&backend, NULL, &rq, &out);
	check(out.status >= 200 && out.status < 600, "a status");
	if (out.status >= 400) {
		json_t *o = json_loadb(out.body, out.len, 0, NULL);
		json_t *e = json_object_get(o, "error");
		check(json_is_object(e), "an error body");
		if (out.status == 400)
			check(json_string_length(json_object_get(e, "field")) > 0,
			      "a 400 names its field");
		json_decref(o);
	} else if (out.body) {
		json_t *o = json_loadb(out.body, out.len, 0, NULL);
		check(json_is_object(o), "a JSON answer");
		json_decref(o);
	}
	free(out.body);
	free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *body = (const char *)data + 1;
	size_t len = size - 1;
	switch (data[0]) {
	case 0: fuzz_ctr_spec(body, len); break;
	case 1: fuzz_image_pull(body, len); break;
	case 2: fuzz_prepopulate(body, len); break;
	case 3: fuzz_route(data + 1, size - 1); break;
	default: break;
	}
	return 0;
}
