/* Output conventions of the memvisor CLI: "memvisor: ..." errors and hints on
 * stderr, usage errors, JSON printing, lenient accessors for daemon answers
 * and "key: value" blocks. Used by every command file. */
#include <stdarg.h>
#include <string.h>
#include <unistd.h>
#include "memvisor/util.h"
#include "cli_i.h"

void mv_cli_err(const char *fmt, ...)
{
	va_list ap;
	fputs("memvisor: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void mv_cli_hint(const char *fmt, ...)
{
	va_list ap;
	fputs("memvisor: hint: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int mv_cli_usage_err(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fprintf(stderr, "memvisor: %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'memvisor %s --help' for more information.\n", cmd);
	return MV_CLI_USAGE;
}

int mv_cli_getopt_err(const char *cmd, int c, char *const argv[])
{
	/* With a leading ':' in optstring getopt returns ':' for a missing
	 * argument and '?' for an unknown option; optopt is 0 for long ones. */
	const char *arg = argv[optind - 1];
	if (c == ':')
		return mv_cli_usage_err(cmd, "option '%s' needs a value", arg);
	if (optopt)
		return mv_cli_usage_err(cmd, "unknown option '-%c'", optopt);
	return mv_cli_usage_err(cmd, "unknown option '%s'", arg);
}

int mv_cli_print_json(const json_t *j)
{
	if (json_dumpf(j, stdout, JSON_INDENT(2)) < 0 || fputc('\n', stdout) == EOF) {
		mv_cli_err("cannot write output");
		return MV_CLI_FAIL;
	}
	return MV_CLI_OK;
}

const char *mv_cli_jstr(const json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : dflt;
}

bool mv_cli_jint(const json_t *o, const char *key, long long *out)
{
	const json_t *v = json_object_get(o, key);
	if (!json_is_integer(v))
		return false;
	*out = json_integer_value(v);
	return true;
}

bool mv_cli_jnum(const json_t *o, const char *key, double *out)
{
	const json_t *v = json_object_get(o, key);
	if (!json_is_number(v))
		return false;
	*out = json_number_value(v);
	return true;
}

const char *mv_cli_jsize(const json_t *o, const char *key, char *buf, size_t len)
{
	const json_t *v = json_object_get(o, key);
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		return mv_fmt_size((uint64_t)json_integer_value(v), buf, len);
	if (json_is_string(v))
		snprintf(buf, len, "%s", json_string_value(v));
	else
		snprintf(buf, len, "-");
	return buf;
}

void mv_cli_kv(int width, const char *label, const char *fmt, ...)
{
	va_list ap;
	int pad = width - (int)strlen(label);
	printf("%s:%*s", label, pad < 1 ? 1 : pad, "");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}
