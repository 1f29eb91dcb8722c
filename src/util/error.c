/* mv_error: the first error wins; see include/memvisor/error.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/error.h"

static int set_v(struct mv_error **err, int code, const char *field, const char *fmt, va_list ap)
{
	if (!err || *err)
		return code;
	struct mv_error *e = calloc(1, sizeof(*e));
	if (!e)
		abort();
	e->code = code;
	if (field)
		snprintf(e->field, sizeof(e->field), "%s", field);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	*err = e;
	return code;
}

int mv_err(struct mv_error **err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	set_v(err, code, NULL, fmt, ap);
	va_end(ap);
	return code;
}

int mv_err_field(struct mv_error **err, int code, const char *field, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	set_v(err, code, field, fmt, ap);
	va_end(ap);
	return code;
}

void mv_err_prefix(struct mv_error **err, const char *fmt, ...)
{
	if (!err || !*err)
		return;
	char pre[256], old[sizeof((*err)->msg)];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(pre, sizeof(pre), fmt, ap);
	va_end(ap);
	memcpy(old, (*err)->msg, sizeof(old));
	size_t n = strlen(pre);
	if (n > sizeof(old) - 3)
		n = sizeof(old) - 3;
	memcpy((*err)->msg, pre, n);
	memcpy((*err)->msg + n, ": ", 2);
	size_t rest = sizeof(old) - n - 3;
	size_t m = strnlen(old, rest);
	memcpy((*err)->msg + n + 2, old, m);
	(*err)->msg[n + 2 + m] = '\0';
}

void mv_error_free(struct mv_error *e)
{
	free(e);
}

const char *mv_error_msg(const struct mv_error *e, int code)
{
	if (e && e->msg[0])
		return e->msg;
	return strerror(code < 0 ? -code : code);
}
