/* Private to src/api: the pieces server.c, router.c, routes.c and the codecs
 * share. Nothing outside src/api includes this. */
#ifndef MEMVISOR_API_I_H
#define MEMVISOR_API_I_H

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "memvisor/api.h"

/* One request as the router sees it, after the body is fully received. */
struct api_req {
	const char *method;          /* "GET", "POST", ... (HEAD is routed as GET) */
	const char *path;
	const char *body;            /* NUL-terminated; len bytes */
	size_t len;
	const char *content_type;    /* NULL when absent */
	/* Query lookup: returns true if the key is present; *val is NULL for "?k". */
	bool (*query)(void *qctx, const char *key, const char **val);
	void *qctx;
};

/* A u64 as a JSON integer (saturating at INT64_MAX: jansson's is signed). */
static inline json_t *api_ju(uint64_t v)
{
	return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v);
}

/* Compact JSON text of o, which it consumes; NULL for NULL or OOM. */
static inline char *api_dump(json_t *o)
{
	if (!o)
		return NULL;
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

/* What to answer. body is malloc'ed (or NULL for an empty body). */
struct api_resp {
	int status;
	const char *content_type;    /* static string */
	char *body;
	size_t len;
	char allow[64];              /* Allow header for 405, "" otherwise */
};

/* router.c: turns a request into a response; never fails (errors become JSON). */
void api_route(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
	       struct api_resp *out);
/* Fills out with an error JSON body for status (e.g. 404) and errno code. */
void api_resp_error(struct api_resp *out, int status, int code, const char *field,
		    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* Fills out from an mv_error (status from mv_api_http_status(code)). */
void api_resp_from_err(struct api_resp *out, int code, const struct mv_error *e);
/* Takes ownership of a malloc'ed JSON text (NULL means out of memory: 500). */
void api_resp_json(struct api_resp *out, int status, char *text);

/* Route handlers: a missing backend callback answers 500 (ENOSYS) instead of
 * crashing; a backend error is mapped to its status and freed. */
#define API_NEED(be, fn, out)                                                     \
	do {                                                                      \
		if (!(be)->fn) {                                                  \
			api_resp_error(out, 500, -ENOSYS, "", "backend has no " #fn); \
			return;                                                   \
		}                                                                 \
	} while (0)

static inline void api_fail(struct api_resp *out, int r, struct mv_error *e)
{
	api_resp_from_err(out, r, e);
	mv_error_free(e);
}

/* reply.c: zeroed memory for a backend's answer, or NULL with a 500 given. */
void *api_calloc(size_t size, struct api_resp *out);
/* r < 0 answers the backend's error e; else status with json
 * (consumed; NULL is out of memory: 500). e is freed either way. */
void api_reply(struct api_resp *out, int r, struct mv_error *e, int status, char *json);
/* The same with 204 and no body on success. */
void api_reply_empty(struct api_resp *out, int r, struct mv_error *e);
/* ?force=true|false|1|0 (absent: false); a bad value answers 400 and returns -EINVAL. */
int api_parse_force(const struct api_req *rq, bool *force, struct api_resp *out);
/* DELETE of ref with ?force=: del is the backend's callback (fn names it
 * for the 500 when it is missing); answers 204. */
typedef int (*api_delete_fn)(void *ctx, const char *ref, bool force, struct mv_error **err);
void api_delete_forced(api_delete_fn del, const char *fn, void *ctx, const char *ref,
		       const struct api_req *rq, struct api_resp *out);

/* routes.c: the handlers; ref already validated. */
void api_vm_list(const struct mv_api_backend *be, void *ctx, struct api_resp *out);
void api_vm_create(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
		   struct api_resp *out);
void api_vm_get(const struct mv_api_backend *be, void *ctx, const char *ref, struct api_resp *out);
void api_vm_delete(const struct mv_api_backend *be, void *ctx, const char *ref,
		   const struct api_req *rq, struct api_resp *out);
void api_vm_action(const struct mv_api_backend *be, void *ctx, const char *ref,
		   enum mv_vm_action a, struct api_resp *out);
void api_vm_verify(const struct mv_api_backend *be, void *ctx, const char *ref,
		   struct api_resp *out);
void api_vm_migrate(const struct mv_api_backend *be, void *ctx, const char *ref,
		    const struct api_req *rq, struct api_resp *out);
void api_upgrade(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
		 struct api_resp *out);
void api_host_get(const struct mv_api_backend *be, void *ctx, struct api_resp *out);
void api_fusion_get(const struct mv_api_backend *be, void *ctx, struct api_resp *out);
/* routes_guard.c: sensitive ranges and the guard's status. */
void api_sensitive_add(const struct mv_api_backend *be, void *ctx, const char *ref,
		       const struct api_req *rq, struct api_resp *out);
void api_sensitive_list(const struct mv_api_backend *be, void *ctx, const char *ref,
			struct api_resp *out);
void api_sensitive_remove(const struct mv_api_backend *be, void *ctx, const char *ref,
			  const char *id, struct api_resp *out);
void api_guard_get(const struct mv_api_backend *be, void *ctx, struct api_resp *out);
void api_guard_events(const struct mv_api_backend *be, void *ctx, struct api_resp *out);
/* GET (set false) or POST (set true) /v1/guard/policy. */
void api_guard_policy(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
		      bool set, struct api_resp *out);
void api_metrics(const struct mv_api_backend *be, void *ctx, struct api_resp *out);
/* routes_ctr.c: images, containers and the shared cache. */
void api_image_pull(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
		    struct api_resp *out);
void api_image_list(const struct mv_api_backend *be, void *ctx, struct api_resp *out);
void api_image_get(const struct mv_api_backend *be, void *ctx, const char *name,
		   struct api_resp *out);
void api_image_remove(const struct mv_api_backend *be, void *ctx, const char *name,
		      struct api_resp *out);
void api_cache_prepopulate(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
			   struct api_resp *out);
void api_cache_get(const struct mv_api_backend *be, void *ctx, struct api_resp *out);
void api_ctr_create(const struct mv_api_backend *be, void *ctx, const struct api_req *rq,
		    struct api_resp *out);
void api_ctr_list(const struct mv_api_backend *be, void *ctx, struct api_resp *out);
/* stop: POST .../stop, else GET. */
void api_ctr_get(const struct mv_api_backend *be, void *ctx, const char *ref, bool stop,
		 struct api_resp *out);
void api_ctr_delete(const struct mv_api_backend *be, void *ctx, const char *ref,
		    const struct api_req *rq, struct api_resp *out);
void api_ctr_logs(const struct mv_api_backend *be, void *ctx, const char *ref,
		  const struct api_req *rq, struct api_resp *out);

/* codec_vm.c, shared by the other decoders: rejects keys of o not in allowed
 * (NULL-terminated) naming prefix+key; reads an integer within [min, max]. */
int api_check_keys(json_t *o, const char *const *allowed, const char *prefix, const char *where,
		   struct mv_error **err);
int api_get_uint(json_t *v, const char *field, uint64_t min, uint64_t max, uint64_t *out,
		 struct mv_error **err);
/* codec_migrate.c: parses body as a JSON object (errors name "body"). */
json_t *api_parse_object(const char *body, size_t len, struct mv_error **err);

/* codec_ctr.c */
json_t *api_image_json(const struct mv_image_status *im);
json_t *api_ctr_json(const struct mv_ctr_info *c);
/* {"data": base64 of the bytes, "offset", "next_offset", "size", "exited"} */
char *api_encode_ctr_logs(const struct mv_ctr_logs *l);

/* encode.c: a JSON array of elem(v[i]) for n elements of size bytes each
 * (NULL on OOM), and {"key": that array} as compact text. */
typedef json_t *(*api_elem_fn)(const void *elem);
json_t *api_json_list(const void *v, size_t n, size_t size, api_elem_fn elem);
char *api_encode_list(const char *key, const void *v, size_t n, size_t size, api_elem_fn elem);
/* encode.c */
json_t *api_vm_json(const struct mv_vm_info *vm);
char *api_encode_upgrade(const char *vmm, const struct mv_handover_result *r, size_t n);
/* A JSON string from at most max bytes of s; bytes that are not printable
 * ASCII become '?' when s is not valid UTF-8 (backend text is not trusted). */
json_t *api_jstr(const char *s, size_t max);
/* api_jstr of a fixed-size char array member. */
#define JSTR(field) api_jstr((field), sizeof(field))
const char *api_backing_name(unsigned b);
int api_backing_parse(const char *s);

/* wl_names.c: canonical workload kind/pattern names (vm.h); parse returns -1 if unknown. */
const char *api_wl_kind_name(uint32_t kind);
int api_wl_kind_parse(const char *s);
const char *api_wl_pattern_name(uint32_t pattern);
int api_wl_pattern_parse(const char *s);

#endif
