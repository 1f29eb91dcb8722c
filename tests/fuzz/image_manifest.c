/* libFuzzer target: the OCI manifest/index parser (src/image/manifest.c),
 * plus the WWW-Authenticate challenge parser on the same bytes. A parsed
 * manifest must satisfy its documented bounds. Built by tests/fuzz/meson.build. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mv_manifest *m;
	struct mv_error *err = NULL;
	if (mv_manifest_parse(data, size, NULL, &m, &err) == 0) {
		unsigned max = m->kind == MV_MANIFEST_IMAGE ? MV_MANIFEST_MAX_LAYERS : MV_MANIFEST_MAX_ENTRIES;
		if (m->n_items > max)
			abort();
		for (unsigned i = 0; i < m->n_items; i++)
			if (m->items[i].size > MV_BLOB_MAX_SIZE)
				abort();
		(void)mv_manifest_pick(m, "linux", "amd64");
		mv_manifest_free(m);
	} else {
		if (!err)
			abort();
		mv_error_free(err);
	}
	char *s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = 0;
	struct mv_auth_challenge c;
	(void)mv_auth_parse_challenge(s, &c);
	free(s);
	return 0;
}
