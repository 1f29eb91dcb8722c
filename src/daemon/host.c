/* Facts about this host that admission control and /v1/host need. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include "daemon_i.h"

static uint64_t read_u64(const char *path)
{
	FILE *f = fopen(path, "re");
	unsigned long long v = 0;
	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

uint64_t host_mem_total(void)
{
	FILE *f = fopen("/proc/meminfo", "re");
	char line[128];
	unsigned long long kb = 0;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return (uint64_t)kb * 1024;
}

uint64_t host_hugepages_free(void)
{
	return read_u64("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
}

int host_random_id(char *out, size_t len)
{
	uint8_t b[MV_ID_LEN / 2];
	if (len < MV_ID_LEN + 1)
		return -EINVAL;
	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
		return -errno;
	for (size_t i = 0; i < sizeof(b); i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
	return 0;
}
