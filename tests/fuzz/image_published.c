/* libFuzzer target: the published layer-index manifest parser
 * (src/image/publish.c) for a fixed two-layer image. What it accepts must
 * only name that image's layers with bounded sizes. Built by
 * tests/fuzz/meson.build. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "../../src/image/image_i.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct mvp_published pub;
	struct mv_manifest m = { .kind = MV_MANIFEST_IMAGE, .n_items = 2 };
	struct mv_descriptor items[2];
	struct mv_digest md;
	struct mv_error *err = NULL;
	memset(items, 0, sizeof(items));
	memset(&md, 0x01, sizeof(md));
	memset(&items[0].digest, 0x11, sizeof(items[0].digest));
	memset(&items[1].digest, 0x22, sizeof(items[1].digest));
	strcpy(m.media_type, "application/vnd.oci.image.manifest.v1+json");
	m.items = items;
	if (mvp_published_parse(data, size, &md, &m, &pub, &err) == 0) {
		for (int i = 2; i < MV_MANIFEST_MAX_LAYERS; i++)
			if (pub.have[i])
				abort();
		for (int i = 0; i < 2; i++)
			if (pub.have[i] && (pub.size[i] == 0 || pub.size[i] > (512u << 20)))
				abort();
	} else if (!err || !err->field[0]) {
		abort();
	}
	mv_error_free(err);
	return 0;
}
