/* libFuzzer target: the layer index loader (src/image/index_codec.c). Any
 * input either fails with a message or loads into an index whose entries,
 * lookups and re-encoding are consistent (encode(decode(x)) == x). Built by
 * tests/fuzz/meson.build. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mv_layer_index *idx;
	struct mv_error *err = NULL;
	if (mv_layer_index_decode(data, size, &idx, &err) < 0) {
		if (!err)
			abort();
		mv_error_free(err);
		return 0;
	}
	for (size_t i = 0; i < mv_layer_index_count(idx); i++) {
		struct mv_tar_entry e;
		mv_layer_index_entry(idx, i, &e);
		int f = mv_layer_index_find(idx, e.path);
		if (f < 0 || e.data_off + e.size > mv_layer_index_tar_size(idx))
			abort();
	}
	void *buf;
	size_t len;
	if (mv_layer_index_encode(idx, &buf, &len) < 0)
		abort();
	if (len != size || memcmp(buf, data, size))
		abort();
	free(buf);
	mv_layer_index_free(idx);
	return 0;
}
