/* CRC-32C (Castagnoli): frame checksums for the control channel and the
 * migration stream. With SSE4.2, long buffers run three independent crc32
 * instruction streams (the instruction's latency, not its throughput, bounds
 * one stream) and splice them with precomputed "append N zero bytes"
 * operators; migration checksums every byte it moves, so this is hot. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include "memvisor/ctl.h"

#define POLY 0x82f63b78U   /* reflected Castagnoli polynomial */
#define LANE 4096u          /* bytes per stream in one three-stream block */

/* shift[s][k][b]: the CRC register after appending (s + 1) * LANE zero bytes
 * to a register holding byte b in byte position k. Computed once (it is a
 * constant of the polynomial; only its computation is deferred). */
static uint32_t shift_tab[2][4][256];
static pthread_once_t shift_once = PTHREAD_ONCE_INIT;

static uint32_t zeros_bitwise(uint32_t v, size_t nbytes)
{
	for (size_t i = 0; i < nbytes * 8; i++)
		v = (v >> 1) ^ (POLY & (0U - (v & 1)));
	return v;
}

static void shift_init(void)
{
	for (unsigned s = 0; s < 2; s++) {
		uint32_t basis[32];
		for (unsigned j = 0; j < 32; j++)
			basis[j] = zeros_bitwise(1U << j, (s + 1) * LANE);
		/* The operator is linear: a byte's image is the XOR of its bits' images. */
		for (unsigned k = 0; k < 4; k++)
			for (unsigned b = 0; b < 256; b++) {
				uint32_t v = 0;
				for (unsigned j = 0; j < 8; j++)
					if (b & (1U << j))
						v ^= basis[8 * k + j];
				shift_tab[s][k][b] = v;
			}
	}
}

static inline uint32_t shift(uint32_t v, unsigned s)
{
	return shift_tab[s][0][v & 0xff] ^ shift_tab[s][1][(v >> 8) & 0xff] ^
	       shift_tab[s][2][(v >> 16) & 0xff] ^ shift_tab[s][3][v >> 24];
}

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t len)
{
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (POLY & (0U - (crc & 1)));
	}
	return crc;
}

static inline uint64_t load64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
							       size_t len)
{
	uint64_t c = crc;
	if (len >= 3 * LANE)
		pthread_once(&shift_once, shift_init);
	while (len >= 3 * LANE) {
		/* Register algebra: reg(A|B|C, r) = Z2L(reg(A, r)) ^ ZL(reg(B, 0)) ^ reg(C, 0). */
		uint64_t c1 = 0, c2 = 0;
		for (unsigned i = 0; i < LANE; i += 8) {
			c = __builtin_ia32_crc32di(c, load64(p + i));
			c1 = __builtin_ia32_crc32di(c1, load64(p + LANE + i));
			c2 = __builtin_ia32_crc32di(c2, load64(p + 2 * LANE + i));
		}
		c = shift((uint32_t)c, 1) ^ shift((uint32_t)c1, 0) ^ (uint32_t)c2;
		p += 3 * LANE;
		len -= 3 * LANE;
	}
	while (len >= 8) {
		c = __builtin_ia32_crc32di(c, load64(p));
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

uint32_t mv_crc32c_portable(uint32_t crc, const void *buf, size_t len)
{
	return ~crc32c_sw(~crc, buf, len);
}
