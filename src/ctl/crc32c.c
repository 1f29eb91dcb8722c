/* CRC-32C (Castagnoli): frame checksums for the control channel and the
 * migration stream. With SSE4.2, long buffers run three independent crc32
 * instruction streams (the instruction's latency, not its throughput, bounds
 * one stream) and splice them with precomputed "append N zero bytes"
 * operators (long lanes for long buffers, short ones for single pages);
 * migration checksums every byte it moves, so this is hot. */
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include "memvisor/ctl.h"

#define POLY 0x82f63b78U   /* reflected Castagnoli polynomial */
#define LANE 4096u          /* bytes per stream in one three-stream block */
/* Short lanes for page-sized buffers (migration checksums 4 KiB pages one
 * at a time): three of them cover 4080 of a page's 4096 bytes. */
#define LANE_S 1360u

/* shift[s][k][b]: the CRC register after appending n zero bytes to a
 * register holding byte b in byte position k, n = LANE, 2 LANE, LANE_S,
 * 2 LANE_S for s = 0..3. Computed once (a constant of the polynomial; only
 * its computation is deferred). */
static uint32_t shift_tab[4][4][256];
static pthread_once_t shift_once = PTHREAD_ONCE_INIT;

/* The "append zero bytes" operator as a 32x32 GF(2) matrix: column j is the
 * image of bit j. Built by squaring, so the tables cost microseconds to make
 * (the bit-at-a-time way took milliseconds, paid by every new process's
 * first long checksum, e.g. a destination VMM's first migration frame). */
static uint32_t mat_apply(const uint32_t *m, uint32_t v)
{
	uint32_t r = 0;
	for (unsigned j = 0; v; j++, v >>= 1)
		if (v & 1)
			r ^= m[j];
	return r;
}

static void mat_mul(uint32_t *out, const uint32_t *a, const uint32_t *b)
{
	uint32_t t[32];
	for (unsigned j = 0; j < 32; j++)
		t[j] = mat_apply(a, b[j]);
	memcpy(out, t, sizeof(t));
}

/* m = the operator appending n zero bytes. */
static void zeros_op(uint32_t *m, size_t n)
{
	uint32_t p[32];   /* appending one zero bit, then squared up to one byte */
	p[0] = POLY;
	for (unsigned j = 1; j < 32; j++)
		p[j] = 1U << (j - 1);
	for (int k = 0; k < 3; k++)
		mat_mul(p, p, p);
	for (unsigned j = 0; j < 32; j++)
		m[j] = 1U << j;
	for (; n; n >>= 1) {
		if (n & 1)
			mat_mul(m, p, m);
		mat_mul(p, p, p);
	}
}

static void shift_init(void)
{
	for (unsigned s = 0; s < 4; s++) {
		uint32_t basis[32];
		zeros_op(basis, (s % 2 + 1) * (s < 2 ? LANE : LANE_S));
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

/* One three-stream block of 3 * lane bytes; s picks the lane's operators.
 * Register algebra: reg(A|B|C, r) = Z2L(reg(A, r)) ^ ZL(reg(B, 0)) ^ reg(C, 0). */
__attribute__((target("sse4.2"), always_inline)) static inline uint64_t
block3(uint64_t c, const uint8_t *p, unsigned lane, unsigned s)
{
	uint64_t c1 = 0, c2 = 0;
	for (unsigned i = 0; i < lane; i += 8) {
		c = __builtin_ia32_crc32di(c, load64(p + i));
		c1 = __builtin_ia32_crc32di(c1, load64(p + lane + i));
		c2 = __builtin_ia32_crc32di(c2, load64(p + 2 * lane + i));
	}
	return shift((uint32_t)c, s + 1) ^ shift((uint32_t)c1, s) ^ (uint32_t)c2;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
							       size_t len)
{
	uint64_t c = crc;
	if (len >= 3 * LANE_S)
		pthread_once(&shift_once, shift_init);
	for (; len >= 3 * LANE; p += 3 * LANE, len -= 3 * LANE)
		c = block3(c, p, LANE, 0);
	for (; len >= 3 * LANE_S; p += 3 * LANE_S, len -= 3 * LANE_S)
		c = block3(c, p, LANE_S, 2);
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
