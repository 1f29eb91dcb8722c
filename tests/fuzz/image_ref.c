/* libFuzzer target: image references (src/image/ref.c). A parsed reference
 * must have a registry, a repository without "..", "//" or upper case, and a
 * tag or sha256 digest; a refused one must name a field. Built by
 * tests/fuzz/meson.build. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	if (size)
		memcpy(s, data, size);
	s[size] = 0;
	struct mv_image_ref r;
	struct mv_error *err = NULL;
	if (mv_image_ref_parse(s, &r, &err) == 0) {
		struct mv_digest d;
		char url[512];
		if (!r.registry[0] || !r.repo[0] || !r.ref[0] || strstr(r.repo, "..") ||
		    strstr(r.repo, "//") || strpbrk(r.repo, "ABCDEFGHIJKLMNOPQRSTUVWXYZ:@") ||
		    strpbrk(r.registry, "/@") || strpbrk(r.ref, "/@ ") ||
		    (strchr(r.ref, ':') && mv_digest_parse(r.ref, &d) < 0))
			abort();
		mv_image_ref_url(&r, 0, url, sizeof(url));
		if (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))
			abort();
	} else if (!err || !err->field[0]) {
		abort();
	}
	mv_error_free(err);
	free(s);
	return 0;
}
