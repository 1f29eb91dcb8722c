/* Rich errors: every fallible call returns 0 or a negative errno and may fill
 * an optional `struct mv_error **` with a message (and the offending field, for
 * API input). Used by every module; the caller frees with mv_error_free(). */
#ifndef MEMVISOR_ERROR_H
#define MEMVISOR_ERROR_H

#include <stddef.h>

#define MV_MUST_CHECK __attribute__((warn_unused_result))

struct mv_error {
	int code;        /* negative errno */
	char field[64];  /* offending input field, "" when not about input */
	char msg[448];
};

/* Records an error in *err (if err and *err is still NULL: the first error
 * wins) and returns code, so callers write `return mv_err(err, -EINVAL, ...)`. */
int mv_err(struct mv_error **err, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Same, naming the input field at fault. */
int mv_err_field(struct mv_error **err, int code, const char *field,
		 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Prefixes context to an existing message ("starting vmm: <old>"). */
void mv_err_prefix(struct mv_error **err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void mv_error_free(struct mv_error *e);
/* Message of e, or strerror(-code) when e is NULL. */
const char *mv_error_msg(const struct mv_error *e, int code);

#endif
