/* Facts about this host that admission control and /v1/host need. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include "daemon_i.h"

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

/* What a new VM's RAM gets (backing "auto"): hugetlb while the pool has
 * free pages (a VM that fits takes them), else shmem THP if the host's
 * policy honours MADV_HUGEPAGE, else 4 KiB. */
enum mv_mem_pages host_guest_ram_pages(void)
{
	if (mv_mem_hugepages_available() > 0)
		return MV_MEM_PAGES_HUGETLB;
	return mv_mem_shmem_thp() ? MV_MEM_PAGES_THP : MV_MEM_PAGES_4K;
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
