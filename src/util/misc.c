/* Time, human sizes and crash-safe file writes shared by every program. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "memvisor/util.h"

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t mv_now_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

uint64_t mv_thread_cpu_ns(void)
{
	return clock_ns(CLOCK_THREAD_CPUTIME_ID);
}

uint64_t mv_wall_s(void)
{
	return (uint64_t)time(NULL);
}

void mv_deadline_ms(struct timespec *ts, int clk, unsigned ms)
{
	clock_gettime((clockid_t)clk, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

int mv_parse_size(const char *s, uint64_t *out)
{
	/* Plain decimal only: strtold alone would take "nan", "0x10", "1e3", " 5". */
	if (!s || !(*s >= '0' && *s <= '9'))
		return -EINVAL;
	size_t digits = strspn(s, "0123456789.");
	char *end;
	errno = 0;
	long double v = strtold(s, &end);
	if (errno || end != s + digits || v < 0)
		return -EINVAL;
	long double mul = 1;
	switch (*end) {
	case 'k': case 'K': mul = 1024.0L; end++; break;
	case 'm': case 'M': mul = 1024.0L * 1024; end++; break;
	case 'g': case 'G': mul = 1024.0L * 1024 * 1024; end++; break;
	case 't': case 'T': mul = 1024.0L * 1024 * 1024 * 1024; end++; break;
	default: break;
	}
	if (*end == 'i' && mul > 1)
		end++;
	if ((*end == 'B' || *end == 'b') && end[1] == '\0')
		end++;
	if (*end)
		return -EINVAL;
	v *= mul;
	if (v >= 18446744073709551615.0L)
		return -ERANGE;
	*out = (uint64_t)v;
	return 0;
}

const char *mv_fmt_size(uint64_t b, char *buf, size_t len)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	double v = (double)b;
	unsigned u = 0;
	while (v >= 1024 && u + 1 < MV_ARRAY_SIZE(units)) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)b);
	else
		snprintf(buf, len, "%.1f %s", v, units[u]);
	return buf;
}

int mv_write_file_atomic(const char *path, const void *data, size_t len)
{
	/* Unique per call, not just per process: two threads writing the same
	 * path (two pulls of one image) must not rename each other's file. */
	static _Atomic unsigned long seq;
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d.%lu", path, (int)getpid(), ++seq) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int e = -errno;
			close(fd);
			unlink(tmp);
			return e;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		int e = -errno;
		unlink(tmp);
		return e;
	}
	if (rename(tmp, path) < 0) {
		int e = -errno;
		unlink(tmp);
		return e;
	}
	return 0;
}

int mv_mkdir_p(const char *path, unsigned mode)
{
	char buf[4096];
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int mv_read_fd(int fd, size_t max, void **buf, size_t *len)
{
	struct stat st;
	uint8_t *b = NULL;
	size_t have = 0;
	*buf = NULL;
	*len = 0;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return -EBADMSG;
	if ((uint64_t)st.st_size > max)
		return -EFBIG;
	b = malloc((size_t)st.st_size + 1);
	if (!b)
		return -ENOMEM;
	while (have < (size_t)st.st_size) {
		ssize_t n = read(fd, b + have, (size_t)st.st_size - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int rc = n < 0 ? -errno : -EIO;   /* shrank under us */
			free(b);
			return rc;
		}
		have += (size_t)n;
	}
	b[have] = 0;
	*buf = b;
	*len = have;
	return 0;
}

int mv_read_file(const char *path, size_t max, void **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	int rc = mv_read_fd(fd, max, buf, len);
	close(fd);
	return rc;
}

void *mv_grow(void *p, size_t n, size_t *cap, size_t elem, size_t first)
{
	if (n < *cap)
		return p;
	size_t c = *cap ? *cap * 2 : first;
	p = realloc(p, c * elem);
	if (!p)
		abort();
	*cap = c;
	return p;
}
