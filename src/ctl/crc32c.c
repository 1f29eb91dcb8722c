/* CRC-32C (Castagnoli): frame checksums for the control channel and other
 * wire formats. Uses the SSE4.2 instruction when the CPU has it. */
#include <stdint.h>
#include <string.h>
#include "memvisor/ctl.h"

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82f63b78U & (0U - (crc & 1)));
	}
	return crc;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
							       size_t len)
{
	uint64_t c = crc;
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		len -= 8;
	}
	uint32_t c32 = (uint32_t)c;
	while (len--)
		c32 = __builtin_ia32_crc32qi(c32, *p++);
	return c32;
}

uint32_t mv_crc32c(uint32_t crc, const void *buf, size_t len)
{
	crc = ~crc;
	if (__builtin_cpu_supports("sse4.2"))
		crc = crc32c_hw(crc, buf, len);
	else
		crc = crc32c_sw(crc, buf, len);
	return ~crc;
}
