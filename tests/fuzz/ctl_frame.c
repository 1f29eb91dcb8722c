/* libFuzzer target: the control-channel frame decoder (src/ctl/ctl_proto.c).
 * Every input either decodes into a message that re-encodes to the same bytes
 * or is refused with an error; nothing else may happen. */
#include <stdlib.h>
#include <string.h>
#include "memvisor/ctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mv_ctl_msg *m = calloc(1, sizeof(*m));
	struct mv_error *err = NULL;
	if (!m)
		return 0;
	/* A real receiver learns nfds from SCM_RIGHTS; here the header's claim stands. */
	if (mv_ctl_decode(data, size, m, &err) == 0) {
		static uint8_t out[32 + MV_CTL_MAX_PAYLOAD + 4];
		int n = mv_ctl_encode(m, out, sizeof(out));
		if (n != (int)size || memcmp(out, data, size) != 0)
			abort();
	} else if (!err) {
		abort();   /* every refusal must say why */
	}
	mv_error_free(err);
	free(m);
	return 0;
}
