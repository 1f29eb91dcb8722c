/* Test helper: writes tar streams in memory (ustar members, GNU long names,
 * PAX records) and gzips them, so the image tests and fuzz seeds need no
 * external tools. Used by tests/unit/image/test_image.c. */
#ifndef MV_TEST_TAR_GEN_H
#define MV_TEST_TAR_GEN_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct tgen {
	uint8_t *p;
	size_t len, cap;
};

static inline void tg_put(struct tgen *t, const void *d, size_t n)
{
	if (t->len + n > t->cap) {
		t->cap = (t->len + n) * 2 + 4096;
		t->p = realloc(t->p, t->cap);
		if (!t->p)
			abort();
	}
	memcpy(t->p + t->len, d, n);
	t->len += n;
}

static inline void tg_pad(struct tgen *t)
{
	static const uint8_t z[512];
	if (t->len % 512)
		tg_put(t, z, 512 - t->len % 512);
}

/* One raw header block; name/link truncated to their fields. */
static inline void tg_header(struct tgen *t, const char *name, char type, uint64_t size,
			     const char *link, unsigned mode)
{
	uint8_t h[512];
	memset(h, 0, sizeof(h));
	snprintf((char *)h, 100, "%s", name);
	snprintf((char *)h + 100, 8, "%07o", mode);
	snprintf((char *)h + 108, 8, "%07o", 1000u);
	snprintf((char *)h + 116, 8, "%07o", 1000u);
	snprintf((char *)h + 124, 12, "%011llo", (unsigned long long)size);
	snprintf((char *)h + 136, 12, "%011o", 1700000000u);
	h[156] = (uint8_t)type;
	if (link)
		snprintf((char *)h + 157, 100, "%s", link);
	memcpy(h + 257, "ustar\0" "00", 8);
	memset(h + 148, ' ', 8);
	unsigned sum = 0;
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	tg_put(t, h, 512);
}

static inline void tg_file(struct tgen *t, const char *name, const void *data, size_t n)
{
	tg_header(t, name, '0', n, NULL, 0644);
	tg_put(t, data, n);
	tg_pad(t);
}

static inline void tg_gnu_long(struct tgen *t, char type, const char *s)
{
	tg_header(t, "././@LongLink", type, strlen(s) + 1, NULL, 0);
	tg_put(t, s, strlen(s) + 1);
	tg_pad(t);
}

static inline void tg_pax(struct tgen *t, const char *key, const char *val)
{
	char rec[8192];
	size_t body = strlen(key) + strlen(val) + 3, len = body + 1;
	while (snprintf(NULL, 0, "%zu", len) + body != len)
		len++;
	snprintf(rec, sizeof(rec), "%zu %s=%s\n", len, key, val);
	tg_header(t, "PaxHeader", 'x', strlen(rec), NULL, 0644);
	tg_put(t, rec, strlen(rec));
	tg_pad(t);
}

static inline void tg_end(struct tgen *t)
{
	static const uint8_t z[1024];
	tg_put(t, z, sizeof(z));
}

static inline uint8_t *tg_gzip(const uint8_t *in, size_t n, size_t *out_len)
{
	z_stream zs;
	memset(&zs, 0, sizeof(zs));
	if (deflateInit2(&zs, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		abort();
	size_t cap = deflateBound(&zs, n) + 64;
	uint8_t *o = malloc(cap);
	zs.next_in = (Bytef *)(uintptr_t)in;
	zs.avail_in = (uInt)n;
	zs.next_out = o;
	zs.avail_out = (uInt)cap;
	if (deflate(&zs, Z_FINISH) != Z_STREAM_END)
		abort();
	*out_len = cap - zs.avail_out;
	deflateEnd(&zs);
	return o;
}

#endif
