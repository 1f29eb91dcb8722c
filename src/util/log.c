/* One-line logging to stderr with a level threshold from $MEMVISOR_LOG. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "memvisor/util.h"

/* Process-wide log settings are set once at start-up by main(). */
static const char *log_prog = "memvisor";

void mv_log_set_prog(const char *prog)
{
	log_prog = prog;
}

static enum mv_log_level threshold(void)
{
	const char *v = getenv("MEMVISOR_LOG");
	if (!v)
		return MV_LOG_INFO;
	if (!strcmp(v, "debug"))
		return MV_LOG_DEBUG;
	if (!strcmp(v, "warn"))
		return MV_LOG_WARN;
	if (!strcmp(v, "error"))
		return MV_LOG_ERROR;
	return MV_LOG_INFO;
}

void mv_log(enum mv_log_level lvl, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	if (lvl < threshold())
		return;
	char line[1024];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03ld %-5s %s: ", tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000, names[lvl], log_prog);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s\n", line);
}
