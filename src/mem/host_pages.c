/* Which pages guest RAM gets on this host: 2 MiB hugetlbfs pages (a memfd
 * flag, decided per VM at allocation), 2 MiB shmem THP (the kernel's shmem
 * THP policy honours the MADV_HUGEPAGE every guest RAM mapping carries), or
 * 4 KiB. Read from sysfs each time: an administrator (scripts/host-setup)
 * may change it while memvisord runs. Used by memvisord (/v1/host,
 * /metrics, the start-up warning), guest_mem.c and migration. */
#include <stdio.h>
#include <string.h>
#include "memvisor/mem.h"

#define THP_DIR "/sys/kernel/mm/transparent_hugepage/"

/* The bracketed word of a sysfs choice file ("always [advise] never"). */
static bool sysfs_choice(const char *path, char *out, size_t cap)
{
	char line[256];
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	bool ok = fgets(line, sizeof(line), f) != NULL;
	fclose(f);
	char *a = ok ? strchr(line, '[') : NULL;
	char *b = a ? strchr(a, ']') : NULL;
	if (!b || (size_t)(b - a - 1) >= cap)
		return false;
	memcpy(out, a + 1, (size_t)(b - a - 1));
	out[b - a - 1] = 0;
	return true;
}

bool mv_mem_shmem_thp(void)
{
	char top[32], pmd[32];
	if (!sysfs_choice(THP_DIR "shmem_enabled", top, sizeof(top)))
		return false;
	/* Multi-size THP kernels (6.11+): a per-size switch, "inherit" by default. */
	if (sysfs_choice(THP_DIR "hugepages-2048kB/shmem_enabled", pmd, sizeof(pmd)) &&
	    strcmp(pmd, "inherit") != 0)
		return strcmp(top, "deny") != 0 &&
		       (strcmp(top, "force") == 0 || strcmp(pmd, "always") == 0 ||
			strcmp(pmd, "within_size") == 0 || strcmp(pmd, "advise") == 0);
	return strcmp(top, "always") == 0 || strcmp(top, "within_size") == 0 ||
	       strcmp(top, "advise") == 0 || strcmp(top, "force") == 0;
}

const char *mv_mem_pages_name(enum mv_mem_pages p)
{
	switch (p) {
	case MV_MEM_PAGES_HUGETLB: return "hugetlb";
	case MV_MEM_PAGES_THP: return "thp";
	default: return "4k";
	}
}
