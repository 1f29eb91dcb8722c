/* Image references "host[:port]/path/name[:tag][@sha256:<hex>]" parsed with
 * the distribution spec's grammar (every field checked, errors name the
 * field), and the registry URL they map to. The registry is never implied:
 * a first component that is not a host (no '.' or ':', not "localhost") is
 * refused rather than sent to a default registry. Used by pull.c, the
 * daemon and the CLI; fuzzed by tests/fuzz/image_ref.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/image.h"

static int is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
static int is_alnum(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

/* host: DNS labels ([A-Za-z0-9] with inner '-') joined by '.', or
 * "[v6 address]", then an optional ":port" (1..65535, no leading zeros). */
static int valid_host(const char *s, size_t n)
{
	size_t i = 0;
	if (n && s[0] == '[') {
		while (i < n && s[i] != ']')
			i++;
		if (i == n || i < 3)
			return 0;
		for (size_t k = 1; k < i; k++)
			if (!(is_alnum(s[k]) || s[k] == ':' || s[k] == '.'))
				return 0;
		i++;
	} else {
		size_t label = 0;
		for (; i < n && s[i] != ':'; i++) {
			if (s[i] == '.') {
				if (!label || s[i - 1] == '-')
					return 0;
				label = 0;
			} else if (is_alnum(s[i]) || (s[i] == '-' && label)) {
				if (++label > 63)
					return 0;
			} else {
				return 0;
			}
		}
		if (!label || s[i - 1] == '-')
			return 0;
	}
	if (i == n)
		return 1;
	if (s[i] != ':' || n - i < 2 || n - i > 6 || s[i + 1] == '0')
		return 0;
	unsigned long port = 0;
	for (size_t k = i + 1; k < n; k++) {
		if (s[k] < '0' || s[k] > '9')
			return 0;
		port = port * 10 + (unsigned long)(s[k] - '0');
	}
	return port >= 1 && port <= 65535;
}

/* One path component: [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* */
static int valid_component(const char *s, size_t n)
{
	if (!n || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
		return 0;
	for (size_t i = 1; i < n;) {
		if (is_lower_alnum(s[i])) {
			i++;
			continue;
		}
		size_t sep = i;
		if (s[i] == '.')
			i++;
		else if (s[i] == '_')
			i += i + 1 < n && s[i + 1] == '_' ? 2 : 1;
		else if (s[i] == '-')
			while (i < n && s[i] == '-')
				i++;
		else
			return 0;
		if (i == sep || i >= n || !is_lower_alnum(s[i]))
			return 0;
	}
	return 1;
}

static int valid_tag(const char *s, size_t n)
{
	if (!n || n > 128 || !(is_alnum(s[0]) || s[0] == '_'))
		return 0;
	for (size_t i = 1; i < n; i++)
		if (!(is_alnum(s[i]) || strchr("._-", s[i])))
			return 0;
	return 1;
}

int mv_image_ref_parse(const char *s, struct mv_image_ref *out, struct mv_error **err)
{
	memset(out, 0, sizeof(*out));
	if (!s || !s[0])
		return mv_err_field(err, -EINVAL, "image", "image reference is empty");
	size_t len = strlen(s);
	if (len > 600)
		return mv_err_field(err, -EINVAL, "image", "image reference longer than 600 bytes");
	const char *slash = strchr(s, '/');
	if (!slash)
		return mv_err_field(err, -EINVAL, "image",
				    "\"%.100s\" names no registry: write host[:port]/repository[:tag]", s);
	size_t hl = (size_t)(slash - s);
	int hostlike = memchr(s, '.', hl) || memchr(s, ':', hl) || (hl == 9 && !memcmp(s, "localhost", 9));
	if (!hostlike)
		return mv_err_field(err, -EINVAL, "image",
				    "\"%.*s\" is not a registry host: write host[:port]/repository[:tag]",
				    (int)(hl > 100 ? 100 : hl), s);
	if (hl >= sizeof(out->registry) || !valid_host(s, hl))
		return mv_err_field(err, -EINVAL, "registry", "bad registry host \"%.*s\"",
				    (int)(hl > 100 ? 100 : hl), s);
	memcpy(out->registry, s, hl);
	const char *rest = slash + 1, *at = strchr(rest, '@');
	size_t rl = at ? (size_t)(at - rest) : strlen(rest);
	if (at) {
		struct mv_digest d;
		if (mv_digest_parse(at + 1, &d) < 0)
			return mv_err_field(err, -EINVAL, "digest",
					    "digest must be sha256: and 64 lowercase hex digits");
		snprintf(out->ref, sizeof(out->ref), "%s", at + 1);
	}
	/* A tag follows the last ':' after the last '/'. */
	const char *colon = NULL;
	for (const char *c = rest + rl; c > rest; c--)
		if (c[-1] == '/')
			break;
		else if (c[-1] == ':') {
			colon = c - 1;
			break;
		}
	if (colon) {
		size_t tl = (size_t)(rest + rl - colon - 1);
		if (!valid_tag(colon + 1, tl))
			return mv_err_field(err, -EINVAL, "tag",
					    "tag must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}");
		if (!at)
			memcpy(out->ref, colon + 1, tl);   /* with a digest, the digest wins */
		rl = (size_t)(colon - rest);
	} else if (!at) {
		strcpy(out->ref, "latest");
	}
	if (!rl || rl >= sizeof(out->repo))
		return mv_err_field(err, -EINVAL, "repository", "repository name must be 1-255 bytes");
	for (size_t i = 0; i < rl;) {
		size_t j = i;
		while (j < rl && rest[j] != '/')
			j++;
		if (!valid_component(rest + i, j - i))
			return mv_err_field(err, -EINVAL, "repository",
					    "bad repository component \"%.*s\": lowercase letters and "
					    "digits, separated by '.', '_', '__' or dashes",
					    (int)(j - i > 100 ? 100 : j - i), rest + i);
		i = j + 1;
		if (j < rl && i == rl)
			return mv_err_field(err, -EINVAL, "repository", "repository ends with '/'");
	}
	memcpy(out->repo, rest, rl);
	return 0;
}

static int loopback(const char *host)
{
	size_t n = strcspn(host, ":");
	if (host[0] == '[')
		return !strncmp(host, "[::1]", 5);
	if (n == 9 && !strncmp(host, "localhost", 9))
		return 1;
	if (n < 7 || strncmp(host, "127.", 4))
		return 0;
	return strspn(host, "0123456789.") == n;   /* 127.x.y.z, not a name such as 127.example */
}

void mv_image_ref_url(const struct mv_image_ref *r, int insecure, char *buf, size_t len)
{
	snprintf(buf, len, "%s://%s", insecure || loopback(r->registry) ? "http" : "https", r->registry);
}
