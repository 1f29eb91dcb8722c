/* libFuzzer target: the streaming tar parser (src/image/tar.c) over arbitrary
 * bytes, fed in pieces whose sizes come from the input, with every reported
 * path checked to be normalized (no "..", not absolute). Built by
 * tests/fuzz/meson.build. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int check(void *ctx, const struct mv_tar_entry *e)
{
	(void)ctx;
	if (!e->path[0] || e->path[0] == '/' || strstr(e->path, "//"))
		abort();
	if (!strcmp(e->path, "..") || !strncmp(e->path, "../", 3) || strstr(e->path, "/../") ||
	    (strlen(e->path) >= 3 && !strcmp(e->path + strlen(e->path) - 3, "/..")))
		abort();
	if (e->type != MV_FT_REG && e->size)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size)
		return 0;
	size_t step = (size_t)data[0] * 7 + 1;
	data++, size--;
	struct mv_tar *t = mv_tar_new(check, NULL);
	struct mv_error *err = NULL;
	int rc = 0;
	for (size_t o = 0; o < size && !rc; o += step)
		rc = mv_tar_feed(t, data + o, size - o < step ? size - o : step, &err);
	if (!rc)
		rc = mv_tar_finish(t, &err);
	if (rc && !err)
		abort();   /* every failure says why */
	mv_error_free(err);
	mv_tar_free(t);
	return 0;
}
