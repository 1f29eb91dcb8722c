/* libFuzzer target: arbitrary bytes as a recorded source->destination
 * migration stream, through every frame and section decoder
 * (mv_migrate_stream_check). Each input runs twice: as is, and with every
 * frame's checksums recomputed so mutations get past the CRCs into the
 * section decoders. Must never crash; a refusal always carries a message. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/ctl.h"
#include "memvisor/migrate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void run(const uint8_t *buf, size_t size)
{
	struct mv_error *e = NULL;
	int r = mv_migrate_stream_check(buf, size, &e);
	if (r < 0 && (!e || !e->msg[0]))
		__builtin_trap();
	mv_error_free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run(data, size);
	uint8_t *copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	for (size_t off = 0; size - off >= MV_MIGRATE_HDR_SIZE;) {
		uint8_t *h = copy + off;
		uint32_t len = get32(h + 12);
		if (len > size - off - MV_MIGRATE_HDR_SIZE)
			break;
		put32(h + 20, mv_crc32c(0, h + MV_MIGRATE_HDR_SIZE, len));
		put32(h + 24, mv_crc32c(0, h, 24));
		off += MV_MIGRATE_HDR_SIZE + len;
	}
	run(copy, size);
	free(copy);
	return 0;
}
