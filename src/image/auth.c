/* Registry authentication helpers: the parser for `WWW-Authenticate`
 * challenges (RFC 7235 auth-params, quoted strings with escapes) and for the
 * token endpoint's JSON reply. Pure functions: used by registry.c's bearer
 * flow and unit-tested on their own (the test registry has no auth). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <jansson.h>
#include "memvisor/image.h"

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

static int is_token_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Copies a token or quoted-string value at *pp into out (size n). */
static int take_value(const char **pp, char *out, size_t n)
{
	const char *p = *pp;
	size_t o = 0;
	if (*p == '"') {
		for (p++; *p != '"'; p++) {
			if (!*p)
				return -EINVAL;   /* unterminated */
			if (*p == '\\' && p[1])
				p++;
			if (o + 1 >= n)
				return -EINVAL;
			out[o++] = *p;
		}
		p++;
	} else {
		for (; *p && is_token_char(*p); p++) {
			if (o + 1 >= n)
				return -EINVAL;
			out[o++] = *p;
		}
		if (!o)
			return -EINVAL;
	}
	out[o] = 0;
	*pp = p;
	return 0;
}

int mv_auth_parse_challenge(const char *hdr, struct mv_auth_challenge *out)
{
	memset(out, 0, sizeof(*out));
	if (!hdr)
		return -EINVAL;
	const char *p = skip_ws(hdr);
	size_t n = 0;
	while (is_token_char(p[n]))
		n++;
	if (!n || n >= sizeof(out->scheme))
		return -EINVAL;
	memcpy(out->scheme, p, n);
	if (strcasecmp(out->scheme, "Bearer") && strcasecmp(out->scheme, "Basic"))
		return -EINVAL;
	p = skip_ws(p + n);
	while (*p) {
		char name[32], junk[1024];
		size_t k = 0;
		while (is_token_char(p[k]))
			k++;
		if (!k || k >= sizeof(name))
			return -EINVAL;
		memcpy(name, p, k);
		name[k] = 0;
		p = skip_ws(p + k);
		if (*p++ != '=')
			return -EINVAL;
		p = skip_ws(p);
		char *dst = junk;
		size_t cap = sizeof(junk);
		if (!strcasecmp(name, "realm"))
			dst = out->realm, cap = sizeof(out->realm);
		else if (!strcasecmp(name, "service"))
			dst = out->service, cap = sizeof(out->service);
		else if (!strcasecmp(name, "scope"))
			dst = out->scope, cap = sizeof(out->scope);
		if (take_value(&p, dst, cap) < 0)
			return -EINVAL;
		p = skip_ws(p);
		if (*p == ',')
			p = skip_ws(p + 1);
		else if (*p)
			return -EINVAL;
	}
	if (!strcasecmp(out->scheme, "Bearer")) {
		/* The realm is where we send our request: only absolute http(s). */
		if (strncmp(out->realm, "https://", 8) && strncmp(out->realm, "http://", 7))
			return -EINVAL;
	}
	return 0;
}

int mv_auth_parse_token(const void *json, size_t len, char **token, struct mv_error **err)
{
	json_error_t je;
	*token = NULL;
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	if (!root)
		return mv_err(err, -EBADMSG, "token reply: %s", je.text);
	int rc = 0;
	json_t *t = json_object_get(root, "token");
	if (!json_is_string(t))
		t = json_object_get(root, "access_token");
	if (!json_is_object(root) || !json_is_string(t) || json_string_length(t) == 0 ||
	    json_string_length(t) > 16384) {
		rc = mv_err_field(err, -EBADMSG, "token", "token reply has no usable token");
	} else if (!(*token = strdup(json_string_value(t)))) {
		rc = -ENOMEM;
	}
	json_decref(root);
	return rc;
}
