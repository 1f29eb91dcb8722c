/* Strict decoders and encoders of the image, container and cache routes
 * (Image, ContainerSpec, Container, ContainerLogs, Cache in
 * docs/api/openapi.yaml). Every rejection is -EINVAL naming the field. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "api_i.h"

#define CTR_ENV_MAX 256

bool mv_api_image_name_valid(const char *s)
{
	if (!s)
		return false;
	size_t n = strnlen(s, MV_IMAGE_NAME_MAX + 1);
	if (n == 0 || n > MV_IMAGE_NAME_MAX || s[0] == '/' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= 0x20 || s[i] >= 0x7f || s[i] == '"' || s[i] == '\\' || s[i] == '?' ||
		    s[i] == '#')
			return false;
	return strstr(s, "..") == NULL;
}

static json_t *load(const char *body, size_t len, struct mv_error **err)
{
	if (!body || !len) {
		mv_err_field(err, -EINVAL, "body", "request body is empty");
		return NULL;
	}
	return api_parse_object(body, len, err);
}

/* v must be an image reference (a string under cap bytes); field names it. */
static int check_image(const json_t *v, const char *field, size_t cap, struct mv_error **err)
{
	if (!json_is_string(v) || json_string_length(v) >= cap ||
	    strlen(json_string_value(v)) != json_string_length(v) ||
	    !mv_api_image_name_valid(json_string_value(v)))
		return mv_err_field(err, -EINVAL, field,
				    "%s must be an image reference like host:port/repo:tag (1..%d printable characters)",
				    field, MV_IMAGE_NAME_MAX);
	return 0;
}

static int get_image(json_t *o, const char *field, char *out, size_t cap, struct mv_error **err)
{
	json_t *v = json_object_get(o, field);
	if (!v)
		return mv_err_field(err, -EINVAL, field, "%s is required", field);
	int r = check_image(v, field, cap, err);
	if (r == 0)
		memcpy(out, json_string_value(v), json_string_length(v) + 1);
	return r;
}

int mv_api_decode_image_pull(const char *body, size_t len, char *ref, size_t cap,
			     struct mv_error **err)
{
	static const char *const keys[] = {"ref", NULL};
	json_t *o = load(body, len, err);
	if (!o)
		return -EINVAL;
	int r = api_check_keys(o, keys, "", "body", err);
	if (r == 0)
		r = get_image(o, "ref", ref, cap, err);
	json_decref(o);
	return r;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

/* An array of at most max strings, each under MV_CTR_ARG_MAX bytes without
 * NUL (kv: KEY=VALUE with a non-empty KEY). */
static int get_strv(json_t *v, const char *field, size_t max, bool kv, char ***out, size_t *n,
		    struct mv_error **err)
{
	*out = NULL;
	*n = 0;
	if (!v)
		return 0;
	if (!json_is_array(v) || json_array_size(v) > max)
		return mv_err_field(err, -EINVAL, field, "%s must be an array of at most %zu strings",
				    field, max);
	size_t cnt = json_array_size(v);
	char **vec = calloc(cnt + 1, sizeof(*vec));
	if (!vec)
		return mv_err(err, -ENOMEM, "out of memory");
	for (size_t i = 0; i < cnt; i++) {
		json_t *s = json_array_get(v, i);
		char f[48];
		snprintf(f, sizeof(f), "%s[%zu]", field, i);
		const char *str = json_string_value(s);
		if (!json_is_string(s) || json_string_length(s) >= MV_CTR_ARG_MAX ||
		    strlen(str) != json_string_length(s) || (kv && (!strchr(str, '=') || str[0] == '='))) {
			strv_free(vec, i);
			return mv_err_field(err, -EINVAL, f, kv ?
					    "%s must be a KEY=VALUE string (non-empty KEY) without NUL under %d bytes"
					    : "%s must be a string without NUL under %d bytes", f,
					    MV_CTR_ARG_MAX);
		}
		vec[i] = strdup(str);
		if (!vec[i])
			abort();
	}
	*out = vec;
	*n = cnt;
	return 0;
}

void mv_api_ctr_spec_free(struct mv_ctr_spec *s)
{
	strv_free(s->cmd, s->ncmd);
	strv_free(s->env, s->nenv);
	s->cmd = s->env = NULL;
	s->ncmd = s->nenv = 0;
}

int mv_api_decode_ctr_spec(const char *body, size_t len, struct mv_ctr_spec *out,
			   struct mv_error **err)
{
	static const char *const keys[] = {"image", "cmd", "name", "env", NULL};
	struct mv_ctr_spec s;
	memset(&s, 0, sizeof(s));
	json_t *o = load(body, len, err), *v;
	if (!o)
		return -EINVAL;
	int r = api_check_keys(o, keys, "", "body", err);
	if (r < 0 || (r = get_image(o, "image", s.image, sizeof(s.image), err)) < 0)
		goto out;
	if ((v = json_object_get(o, "name"))) {
		if (!json_is_string(v) || json_string_length(v) > MV_NAME_MAX ||
		    strlen(json_string_value(v)) != json_string_length(v) ||
		    !mv_api_name_valid(json_string_value(v))) {
			r = mv_err_field(err, -EINVAL, "name", "name must match ^[a-z0-9][a-z0-9_.-]{0,62}$");
			goto out;
		}
		memcpy(s.name, json_string_value(v), json_string_length(v) + 1);
	}
	if ((r = get_strv(json_object_get(o, "cmd"), "cmd", MV_CTR_ARGS_MAX, false, &s.cmd, &s.ncmd,
			  err)) < 0)
		goto out;
	if ((r = get_strv(json_object_get(o, "env"), "env", CTR_ENV_MAX, true, &s.env, &s.nenv,
			  err)) < 0)
		goto out;
	*out = s;
	memset(&s, 0, sizeof(s));
	r = 0;
out:
	mv_api_ctr_spec_free(&s);
	json_decref(o);
	return r;
}

int mv_api_decode_prepopulate(const char *body, size_t len, char ***refs, size_t *n,
			      struct mv_error **err)
{
	static const char *const keys[] = {"images", NULL};
	json_t *o = load(body, len, err);
	*refs = NULL;
	*n = 0;
	if (!o)
		return -EINVAL;
	int r = api_check_keys(o, keys, "", "body", err);
	json_t *v = json_object_get(o, "images");
	if (r == 0 && !v)
		r = mv_err_field(err, -EINVAL, "images", "images is required");
	if (r == 0 && (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 64))
		r = mv_err_field(err, -EINVAL, "images", "images must be an array of 1..64 image references");
	size_t cnt = r == 0 ? json_array_size(v) : 0;
	char **vec = r == 0 ? calloc(cnt + 1, sizeof(*vec)) : NULL;
	if (r == 0 && !vec)
		r = mv_err(err, -ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < cnt; i++) {
		json_t *s = json_array_get(v, i);
		char f[32];
		snprintf(f, sizeof(f), "images[%zu]", i);
		r = check_image(s, f, MV_IMAGE_NAME_MAX + 1, err);
		if (r == 0 && !(vec[i] = strdup(json_string_value(s))))
			r = mv_err(err, -ENOMEM, "out of memory");
		if (r < 0) {
			strv_free(vec, i);
			vec = NULL;
		}
	}
	json_decref(o);
	if (r == 0) {
		*refs = vec;
		*n = cnt;
	}
	return r;
}

json_t *api_image_json(const struct mv_image_status *im)
{
	json_t *o = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:I}",
			      "name", JSTR(im->name), "state", JSTR(im->state),
			      "manifest", JSTR(im->manifest), "layers", api_ju(im->layers),
			      "layers_bytes", api_ju(im->layers_bytes),
			      "registry_bytes", api_ju(im->registry_bytes), "pulled_at", api_ju(im->pulled_at),
			      "error", JSTR(im->error), "containers", (json_int_t)im->containers);
	json_t *p = json_pack("{s:o, s:I, s:I, s:o, s:o}", "phase", JSTR(im->phase),
			      "layer", (json_int_t)im->layer, "layers", (json_int_t)im->layers,
			      "done_bytes", api_ju(im->done_bytes), "total_bytes", api_ju(im->total_bytes));
	if (!o || !p || json_object_set_new(o, "progress", p) < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

char *mv_api_encode_image(const struct mv_image_status *im)
{
	return api_dump(api_image_json(im));
}

static const char *const ctr_states[MV_CTR__COUNT] = {
	[MV_CTR_CREATED] = "created", [MV_CTR_RUNNING] = "running", [MV_CTR_EXITED] = "exited",
};

const char *mv_ctr_state_name(enum mv_ctr_state s)
{
	return (unsigned)s < MV_CTR__COUNT ? ctr_states[s] : "unknown";
}

json_t *api_ctr_json(const struct mv_ctr_info *c)
{
	const struct mv_ctr_fs_stats *f = &c->fs;
	json_t *o = json_pack("{s:o, s:o, s:o, s:o, s:s, s:I, s:I, s:o, s:o}",
			      "id", JSTR(c->id), "name", JSTR(c->name), "image", JSTR(c->image),
			      "command", JSTR(c->command), "state", mv_ctr_state_name(c->state),
			      "pid", (json_int_t)c->pid, "shim_pid", (json_int_t)c->shim_pid,
			      "created_at", api_ju(c->created_at), "finished_at", api_ju(c->finished_at));
	json_t *fs = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
			       "registry_bytes", api_ju(f->registry_bytes),
			       "registry_requests", api_ju(f->registry_requests),
			       "files_fetched", api_ju(f->files_fetched), "chunk_reads", api_ju(f->chunk_reads),
			       "copy_ups", api_ju(f->copy_ups), "cache_hits", api_ju(f->cache_hits),
			       "cache_misses", api_ju(f->cache_misses), "cache_hit_bytes", api_ju(f->cache_hit_bytes));
	if (!o || !fs || json_object_set_new(o, "fs", fs) < 0) {
		json_decref(o);
		return NULL;
	}
	if (c->state == MV_CTR_EXITED) {
		json_t *ex = json_pack("{s:I, s:I, s:o}", "code", (json_int_t)c->exit_code,
				       "signal", (json_int_t)c->exit_signal,
				       "reason", JSTR(c->exit_reason));
		if (json_object_set_new(o, "exit", ex) < 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

char *mv_api_encode_ctr(const struct mv_ctr_info *c)
{
	return api_dump(api_ctr_json(c));
}

char *mv_api_encode_cache(const struct mv_cache_info *c)
{
	json_t *o = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}", "dir", JSTR(c->dir),
			      "files", api_ju(c->files), "bytes", api_ju(c->bytes), "hits", api_ju(c->hits),
			      "misses", api_ju(c->misses), "hit_bytes", api_ju(c->hit_bytes));
	if (o && c->job) {
		json_t *j = json_pack("{s:o, s:I, s:I, s:o, s:o, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o}",
				      "state", JSTR(c->state), "image_index", (json_int_t)c->image_index,
				      "images", (json_int_t)c->images, "current", JSTR(c->current),
				      "phase", JSTR(c->phase), "layer", (json_int_t)c->layer,
				      "layers", (json_int_t)c->layers, "done_bytes", api_ju(c->done_bytes),
				      "total_bytes", api_ju(c->total_bytes), "files", api_ju(c->job_files),
				      "bytes", api_ju(c->job_bytes), "registry_bytes", api_ju(c->job_registry_bytes),
				      "error", JSTR(c->error));
		if (json_object_set_new(o, "prepopulate", j) < 0) {
			json_decref(o);
			o = NULL;
		}
	}
	return api_dump(o);
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64(const unsigned char *d, size_t n)
{
	char *out = malloc(4 * ((n + 2) / 3) + 1), *p = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) |
			     (i + 2 < n ? d[i + 2] : 0);
		*p++ = b64[v >> 18];
		*p++ = b64[(v >> 12) & 63];
		*p++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
		*p++ = i + 2 < n ? b64[v & 63] : '=';
	}
	*p = '\0';
	return out;
}

char *api_encode_ctr_logs(const struct mv_ctr_logs *l)
{
	char *d = base64((const unsigned char *)(l->data ? l->data : ""), l->data ? l->len : 0);
	if (!d)
		return NULL;
	json_t *o = json_pack("{s:s, s:o, s:o, s:o, s:o, s:b}", "data", d, "length", api_ju(l->len),
			      "offset", api_ju(l->offset), "next_offset", api_ju(l->next_offset),
			      "size", api_ju(l->size), "exited", l->exited);
	free(d);
	return api_dump(o);
}
