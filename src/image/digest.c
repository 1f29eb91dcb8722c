/* SHA-256 digests: the "sha256:<hex>" names of blobs and chunks, and
 * incremental hashing over OpenSSL's EVP API. Used by every image file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include "memvisor/image.h"

struct mv_sha256 {
	EVP_MD_CTX *ctx;
};

int mv_digest_parse(const char *s, struct mv_digest *out)
{
	if (!s || strncmp(s, "sha256:", 7) != 0 || strlen(s) != 7 + 64)
		return -EINVAL;
	for (unsigned i = 0; i < 32; i++) {
		unsigned v = 0;
		for (unsigned j = 0; j < 2; j++) {
			char c = s[7 + 2 * i + j];
			unsigned x;
			if (c >= '0' && c <= '9')
				x = (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f')
				x = (unsigned)(c - 'a' + 10);
			else
				return -EINVAL;   /* uppercase too: the spec says lowercase */
			v = v * 16 + x;
		}
		out->b[i] = (uint8_t)v;
	}
	return 0;
}

const char *mv_digest_format(const struct mv_digest *d, char out[MV_DIGEST_STRLEN])
{
	static const char hex[] = "0123456789abcdef";
	memcpy(out, "sha256:", 7);
	for (unsigned i = 0; i < 32; i++) {
		out[7 + 2 * i] = hex[d->b[i] >> 4];
		out[8 + 2 * i] = hex[d->b[i] & 15];
	}
	out[71] = 0;
	return out;
}

int mv_digest_equal(const struct mv_digest *a, const struct mv_digest *b)
{
	return memcmp(a->b, b->b, MV_DIGEST_LEN) == 0;
}

struct mv_sha256 *mv_sha256_new(void)
{
	struct mv_sha256 *h = malloc(sizeof(*h));
	if (!h || !(h->ctx = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL))
		abort();
	return h;
}

void mv_sha256_update(struct mv_sha256 *h, const void *data, size_t len)
{
	if (len && !EVP_DigestUpdate(h->ctx, data, len))
		abort();
}

void mv_sha256_final(struct mv_sha256 *h, struct mv_digest *out)
{
	unsigned n = 0;
	if (!EVP_DigestFinal_ex(h->ctx, out->b, &n) || n != MV_DIGEST_LEN)
		abort();
	mv_sha256_free(h);
}

void mv_sha256_free(struct mv_sha256 *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->ctx);
	free(h);
}

void mv_digest_of(const void *data, size_t len, struct mv_digest *out)
{
	struct mv_sha256 *h = mv_sha256_new();
	mv_sha256_update(h, data, len);
	mv_sha256_final(h, out);
}
