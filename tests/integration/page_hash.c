/* page_hash: prints the XXH3-64 the fusion scanner files a 4 KiB page under
 * (mv_guard_page_hash), for the page read from stdin: how guard_attacks.sh
 * puts a known probe page on the guard's deny list. */
#include <stdio.h>
#include "memvisor/guard.h"

int main(void)
{
	unsigned char page[4096];
	if (fread(page, 1, sizeof(page), stdin) != sizeof(page)) {
		fprintf(stderr, "page_hash: want 4096 bytes on stdin\n");
		return 2;
	}
	printf("%016llx\n", (unsigned long long)mv_guard_page_hash(page));
	return 0;
}
