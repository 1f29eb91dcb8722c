/* Error mapping for the API: negative errno -> HTTP status, and the error
 * JSON body {"error":{"status","code","field","message"}}. Used by the router
 * and handlers, and by the CLI to show the daemon's errors. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "api_i.h"

int mv_api_http_status(int code)
{
	switch (code) {
	case 0: return 200;
	case -EINVAL: return 400;
	case -ENOENT: return 404;
	case -EEXIST: case -EBUSY: return 409;
	case -E2BIG: return 413;
	case -ENOSPC: return 422;
	case -EHOSTUNREACH: case -ECONNREFUSED: case -ETIMEDOUT: case -ENETUNREACH: return 503;
	default: return 500;
	}
}

/* "EINVAL" for -EINVAL; strerrorname_np is glibc >= 2.32 (Debian 12 has 2.36). */
static const char *code_name(int code, char *buf, size_t len)
{
	int c = code < 0 ? -code : code;
	if (c == 0)
		return "";
	const char *n = strerrorname_np(c);
	if (n)
		return n;
	snprintf(buf, len, "E%d", c);
	return buf;
}

char *mv_api_encode_error(int http_status, const struct mv_error *e, int code)
{
	char nb[16];
	if (e && code == 0)
		code = e->code;
	json_t *in = json_pack("{s:i, s:s, s:o, s:o}", "status", http_status,
			       "code", code_name(code, nb, sizeof(nb)),
			       "field", api_jstr(e ? e->field : "", e ? sizeof(e->field) : 1),
			       "message", api_jstr(mv_error_msg(e, code ? code : -EIO),
						   e ? sizeof(e->msg) : 256));
	if (!in)
		return NULL;
	json_t *o = json_pack("{s:o}", "error", in);
	if (!o)
		return NULL;
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

void api_resp_json(struct api_resp *out, int status, char *text)
{
	out->content_type = "application/json";
	if (!text) {
		/* Out of memory while encoding: a fixed body still says why. */
		static const char oom[] = "{\"error\":{\"status\":500,\"code\":\"ENOMEM\","
					  "\"field\":\"\",\"message\":\"out of memory\"}}";
		out->status = 500;
		out->body = strdup(oom);
		out->len = out->body ? strlen(out->body) : 0;
		return;
	}
	out->status = status;
	out->body = text;
	out->len = strlen(text);
}

void api_resp_from_err(struct api_resp *out, int code, const struct mv_error *e)
{
	int st = mv_api_http_status(code);
	if (st < 400)  /* a backend that failed without saying why */
		st = 500;
	api_resp_json(out, st, mv_api_encode_error(st, e, code));
}

void api_resp_error(struct api_resp *out, int status, int code, const char *field,
		    const char *fmt, ...)
{
	struct mv_error e = {.code = code};
	va_list ap;
	snprintf(e.field, sizeof(e.field), "%s", field ? field : "");
	va_start(ap, fmt);
	vsnprintf(e.msg, sizeof(e.msg), fmt, ap);
	va_end(ap);
	api_resp_json(out, status, mv_api_encode_error(status, &e, code));
}
