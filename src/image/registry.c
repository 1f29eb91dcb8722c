/* OCI distribution client over libcurl: manifests (indexes followed for a
 * platform, at most 2 levels), whole blobs with digest checks, byte ranges of
 * blobs, and the bearer-token flow (401 + WWW-Authenticate: Bearer → token
 * endpoint → retry). Counts the bytes it receives so callers can report what
 * a lazy read cost. Used by the image probe and tests, later the daemon. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>
#include "memvisor/image.h"
#include "memvisor/util.h"

#define MT_OCI_MANIFEST_ACCEPT "application/vnd.oci.image.manifest.v1+json"

struct mv_registry {
	CURL *curl;
	char *base, *repo, *token;
	uint64_t bytes, requests;
};

struct req {
	struct mv_registry *r;
	mv_blob_sink sink;
	void *ctx;
	int sink_rc;
	char content_type[128];
	char www_auth[2048];
	char location[2048];
};

struct membuf {
	uint8_t *p;
	size_t len, max;
};

static int mem_sink(void *ctx, const void *data, size_t len)
{
	struct membuf *m = ctx;
	if (len > m->max - m->len)
		return -EFBIG;
	uint8_t *n = realloc(m->p, m->len + len + 1);
	if (!n)
		return -ENOMEM;
	m->p = n;
	memcpy(m->p + m->len, data, len);
	m->len += len;
	return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	struct req *q = ud;
	size_t n = size * nmemb;
	long status = 0;
	q->r->bytes += n;
	curl_easy_getinfo(q->r->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 300)
		return n;   /* error bodies (401, 404...) are not the caller's data */
	if (q->sink && (q->sink_rc = q->sink(q->ctx, data, n)) < 0)
		return 0;   /* aborts the transfer */
	return n;
}

static void header_value(const char *line, size_t n, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	if (n <= nl || strncasecmp(line, name, nl))
		return;
	line += nl;
	n -= nl;
	while (n && (*line == ' ' || *line == '\t'))
		line++, n--;
	while (n && (line[n - 1] == '\r' || line[n - 1] == '\n' || line[n - 1] == ' '))
		n--;
	if (n >= cap)
		n = cap - 1;
	memcpy(out, line, n);
	out[n] = 0;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *ud)
{
	struct req *q = ud;
	size_t n = size * nmemb;
	if (n >= 5 && !strncmp(line, "HTTP/", 5)) {   /* a new response (redirect, retry) */
		q->content_type[0] = 0;
		q->www_auth[0] = 0;
		q->location[0] = 0;
	}
	header_value(line, n, "content-type:", q->content_type, sizeof(q->content_type));
	header_value(line, n, "location:", q->location, sizeof(q->location));
	header_value(line, n, "www-authenticate:", q->www_auth, sizeof(q->www_auth));
	return n;
}

static int valid_repo(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > 255 || s[0] == '/' || s[n - 1] == '/' || strstr(s, "..") || strstr(s, "//"))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
		      strchr("._-/", s[i])))
			return 0;
	return 1;
}

static int valid_ref(const char *s)
{
	struct mv_digest d;
	if (mv_digest_parse(s, &d) == 0)
		return 1;
	size_t n = strlen(s);
	if (!n || n > 128 || s[0] == '.' || s[0] == '-')
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || strchr("._-", s[i])))
			return 0;
	return 1;
}

int mv_registry_open(const char *base, const char *repo, struct mv_registry **out,
		     struct mv_error **err)
{
	*out = NULL;
	if (strncmp(base, "http://", 7) && strncmp(base, "https://", 8))
		return mv_err_field(err, -EINVAL, "registry", "registry URL must be http(s)://");
	if (!valid_repo(repo))
		return mv_err_field(err, -EINVAL, "repository", "bad repository name \"%.100s\"", repo);
	struct mv_registry *r = calloc(1, sizeof(*r));
	if (!r || !(r->curl = curl_easy_init()) || !(r->base = strdup(base)) ||
	    !(r->repo = strdup(repo))) {
		mv_registry_close(r);
		return -ENOMEM;
	}
	size_t bl = strlen(r->base);
	while (bl && r->base[bl - 1] == '/')
		r->base[--bl] = 0;
	*out = r;
	return 0;
}

void mv_registry_close(struct mv_registry *r)
{
	if (!r)
		return;
	if (r->curl)
		curl_easy_cleanup(r->curl);
	free(r->base);
	free(r->repo);
	free(r->token);
	free(r);
}

uint64_t mv_registry_bytes_received(const struct mv_registry *r) { return r->bytes; }
uint64_t mv_registry_requests(const struct mv_registry *r) { return r->requests; }

/* A body to send (PUT, POST) and its type; NULL for GET. */
struct body {
	const char *method;   /* "PUT", "POST", "HEAD" */
	const void *data;
	size_t len;
	const char *type;
};

/* One request; fills *status. Range "a-b" or NULL. */
static int do_req(struct mv_registry *r, const char *url, const char *accept, const char *range,
		  const struct body *bd, struct req *q, long *status, struct mv_error **err)
{
	CURL *c = r->curl;
	struct curl_slist *h = NULL;
	char line[16384 + 64];
	const char *method = bd ? bd->method : "GET";
	curl_easy_reset(c);
	if (accept) {
		snprintf(line, sizeof(line), "Accept: %s", accept);
		h = curl_slist_append(h, line);
	}
	if (r->token) {
		snprintf(line, sizeof(line), "Authorization: Bearer %s", r->token);
		h = curl_slist_append(h, line);
	}
	if (bd && bd->type) {
		snprintf(line, sizeof(line), "Content-Type: %s", bd->type);
		h = curl_slist_append(h, line);
	}
	if (bd)
		h = curl_slist_append(h, "Expect:");   /* no 100-continue round trip */
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	/* Blobs may live on a CDN; uploads are answered, never redirected. */
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, bd ? 0L : 1L);
	curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
	curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, q);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, q);
	if (range)
		curl_easy_setopt(c, CURLOPT_RANGE, range);
	if (bd && !strcmp(bd->method, "HEAD")) {
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	} else if (bd) {
		static const char empty[1];
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, bd->len ? bd->data : (const void *)empty);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)bd->len);
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, bd->method);
	}
	r->requests++;
	CURLcode cr = curl_easy_perform(c);
	curl_slist_free_all(h);
	if (cr == CURLE_WRITE_ERROR && q->sink_rc < 0)
		return mv_err(err, q->sink_rc, "%s %s: receiver refused the data", method, url);
	if (cr != CURLE_OK)
		return mv_err(err, -EIO, "%s %s: %s", method, url, curl_easy_strerror(cr));
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	return 0;
}

static int do_get(struct mv_registry *r, const char *url, const char *accept, const char *range,
		  struct req *q, long *status, struct mv_error **err)
{
	return do_req(r, url, accept, range, NULL, q, status, err);
}

static int fetch_token(struct mv_registry *r, const char *challenge, struct mv_error **err)
{
	struct mv_auth_challenge ch;
	if (mv_auth_parse_challenge(challenge, &ch) < 0 || strcasecmp(ch.scheme, "Bearer"))
		return mv_err(err, -EACCES, "registry wants unsupported auth: %.200s", challenge);
	char url[2048];
	char *svc = curl_easy_escape(r->curl, ch.service, 0);
	char *scope = curl_easy_escape(r->curl, ch.scope, 0);
	snprintf(url, sizeof(url), "%s%sservice=%s&scope=%s", ch.realm,
		 strchr(ch.realm, '?') ? "&" : "?", svc ? svc : "", scope ? scope : "");
	curl_free(svc);
	curl_free(scope);
	struct membuf m = { .max = 1 << 16 };
	struct req q = { .r = r, .sink = mem_sink, .ctx = &m };
	long status = 0;
	free(r->token);
	r->token = NULL;
	int rc = do_get(r, url, "application/json", NULL, &q, &status, err);
	if (!rc && status != 200)
		rc = mv_err(err, -EACCES, "token endpoint answered %ld", status);
	if (!rc && !(rc = mv_auth_parse_token(m.p, m.len, &r->token, err))) {
		for (const char *t = r->token; *t; t++)
			if (*t <= ' ' || *t > '~') {   /* it goes into a header line */
				free(r->token);
				r->token = NULL;
				rc = mv_err(err, -EBADMSG, "token has characters not allowed in a header");
				break;
			}
	}
	free(m.p);
	return rc;
}

/* A request with one bearer-auth retry. A 401's body is dropped by on_body
 * (it checks the status) so the caller's sink only sees the real reply. */
static int req_authed(struct mv_registry *r, const char *url, const char *accept,
		      const char *range, const struct body *bd, struct req *q, long *status,
		      struct mv_error **err)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		int rc = do_req(r, url, accept, range, bd, q, status, err);
		if (rc < 0)
			return rc;
		if (*status != 401 || attempt == 1 || !q->www_auth[0])
			return 0;
		if ((rc = fetch_token(r, q->www_auth, err)) < 0)
			return rc;
	}
	return 0;
}

static int get_authed(struct mv_registry *r, const char *url, const char *accept,
		      const char *range, struct req *q, long *status, struct mv_error **err)
{
	return req_authed(r, url, accept, range, NULL, q, status, err);
}

int mv_registry_read_blob(struct mv_registry *r, const struct mv_digest *d, uint64_t off,
			  uint64_t len, mv_blob_sink sink, void *ctx, struct mv_error **err)
{
	char url[1024], ds[MV_DIGEST_STRLEN], range[64];
	snprintf(url, sizeof(url), "%s/v2/%s/blobs/%s", r->base, r->repo, mv_digest_format(d, ds));
	int ranged = off || len;
	if (len)
		snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)off,
			 (unsigned long long)(off + len - 1));
	else
		snprintf(range, sizeof(range), "%llu-", (unsigned long long)off);
	struct req q = { .r = r, .sink = sink, .ctx = ctx };
	long status = 0;
	int rc = get_authed(r, url, NULL, ranged ? range : NULL, &q, &status, err);
	if (rc < 0)
		return rc;
	if (status == (ranged ? 206 : 200))
		return 0;
	if (status == 404)
		return mv_err(err, -ENOENT, "blob %s not found in %s", ds, r->repo);
	if (status == 416)
		return mv_err(err, -EINVAL, "range %s outside blob %s", range, ds);
	return mv_err(err, -EIO, "GET blob %s: HTTP %ld%s", ds, status,
		      ranged && status == 200 ? " (registry ignored the Range)" : "");
}

struct rangebuf {
	uint8_t *p;
	size_t have, cap;
};

static int range_sink(void *ctx, const void *d, size_t n)
{
	struct rangebuf *b = ctx;
	if (n > b->cap - b->have)
		return -EFBIG;
	if (n)
		memcpy(b->p + b->have, d, n);
	b->have += n;
	return 0;
}

int mv_registry_read_range(struct mv_registry *r, const struct mv_digest *d, uint64_t off,
			   void *buf, size_t len, size_t *got, struct mv_error **err)
{
	struct rangebuf b = { buf, 0, len };
	int rc = mv_registry_read_blob(r, d, off, len, range_sink, &b, err);
	*got = b.have;
	return rc;
}

int mv_registry_get_blob(struct mv_registry *r, const struct mv_digest *d, size_t max,
			 void **data, size_t *len, struct mv_error **err)
{
	struct membuf m = { .max = max };
	struct mv_digest got;
	*data = NULL;
	*len = 0;
	int rc = mv_registry_read_blob(r, d, 0, 0, mem_sink, &m, err);
	if (rc < 0) {
		free(m.p);
		return rc;
	}
	mv_digest_of(m.p, m.len, &got);
	if (!mv_digest_equal(&got, d)) {
		char a[MV_DIGEST_STRLEN], b[MV_DIGEST_STRLEN];
		free(m.p);
		return mv_err(err, -EBADMSG, "blob digest mismatch: asked %s, got %s",
			      mv_digest_format(d, a), mv_digest_format(&got, b));
	}
	*data = m.p ? m.p : malloc(1);
	*len = m.len;
	return *data ? 0 : -ENOMEM;
}

/* One manifest by tag or digest; checks the digest when ref is one. */
static int get_one(struct mv_registry *r, const char *ref, struct mv_manifest **out,
		   struct mv_digest *dg, struct mv_error **err)
{
	char url[1024];
	struct membuf m = { .max = MV_MANIFEST_MAX_BYTES };
	struct req q = { .r = r, .sink = mem_sink, .ctx = &m };
	long status = 0;
	struct mv_digest want;
	snprintf(url, sizeof(url), "%s/v2/%s/manifests/%s", r->base, r->repo, ref);
	int rc = get_authed(r, url, mv_manifest_accept(), NULL, &q, &status, err);
	if (rc < 0)
		goto out;
	if (status != 200) {
		rc = mv_err(err, status == 404 ? -ENOENT : -EIO, "GET manifest %s:%s: HTTP %ld",
			    r->repo, ref, status);
		goto out;
	}
	mv_digest_of(m.p, m.len, dg);
	if (mv_digest_parse(ref, &want) == 0 && !mv_digest_equal(&want, dg)) {
		rc = mv_err(err, -EBADMSG, "manifest %s: content does not match its digest", ref);
		goto out;
	}
	rc = mv_manifest_parse(m.p ? (const void *)m.p : "", m.len, q.content_type, out, err);
out:
	free(m.p);
	return rc;
}

int mv_registry_get_manifest(struct mv_registry *r, const char *ref, const char *os,
			     const char *arch, struct mv_manifest **out,
			     struct mv_digest *digest_out, struct mv_error **err)
{
	char cur[MV_DIGEST_STRLEN + 128];
	struct mv_digest seen[3], dg;
	*out = NULL;
	if (!valid_ref(ref))
		return mv_err_field(err, -EINVAL, "reference", "bad tag or digest \"%.130s\"", ref);
	snprintf(cur, sizeof(cur), "%s", ref);
	for (int depth = 0; depth < 3; depth++) {
		struct mv_manifest *m;
		int rc = get_one(r, cur, &m, &dg, err);
		if (rc < 0)
			return rc;
		for (int i = 0; i < depth; i++)
			if (mv_digest_equal(&seen[i], &dg)) {
				mv_manifest_free(m);
				return mv_err(err, -ELOOP, "manifest loop at %s", cur);
			}
		seen[depth] = dg;
		if (m->kind == MV_MANIFEST_IMAGE) {
			if (digest_out)
				*digest_out = dg;
			*out = m;
			return 0;
		}
		if (depth == 2) {
			mv_manifest_free(m);
			break;
		}
		int i = mv_manifest_pick(m, os, arch);
		if (i < 0) {
			mv_manifest_free(m);
			return mv_err(err, -ENOENT, "no %s/%s image in index %s", os, arch, cur);
		}
		mv_digest_format(&m->items[i].digest, cur);
		mv_manifest_free(m);
	}
	return mv_err(err, -ELOOP, "indexes nested more than 2 deep under %s", ref);
}

int mv_registry_get_raw_manifest(struct mv_registry *r, const char *ref, void **data, size_t *len,
				 char *content_type, size_t ct_cap, struct mv_error **err)
{
	char url[1024];
	struct membuf m = { .max = MV_MANIFEST_MAX_BYTES };
	struct req q = { .r = r, .sink = mem_sink, .ctx = &m };
	long status = 0;
	struct mv_digest want, got;
	*data = NULL;
	*len = 0;
	if (!valid_ref(ref))
		return mv_err_field(err, -EINVAL, "reference", "bad tag or digest \"%.130s\"", ref);
	snprintf(url, sizeof(url), "%s/v2/%s/manifests/%s", r->base, r->repo, ref);
	int rc = get_authed(r, url, MT_OCI_MANIFEST_ACCEPT, NULL, &q, &status, err);
	if (!rc && status != 200)
		rc = mv_err(err, status == 404 ? -ENOENT : -EIO, "GET manifest %s:%s: HTTP %ld",
			    r->repo, ref, status);
	if (!rc && mv_digest_parse(ref, &want) == 0) {
		mv_digest_of(m.p, m.len, &got);
		if (!mv_digest_equal(&want, &got))
			rc = mv_err(err, -EBADMSG, "manifest %s: content does not match its digest", ref);
	}
	if (rc < 0) {
		free(m.p);
		return rc;
	}
	if (content_type && ct_cap)
		snprintf(content_type, ct_cap, "%s", q.content_type);
	*data = m.p ? m.p : calloc(1, 1);
	*len = m.len;
	return *data ? 0 : -ENOMEM;
}

/* A Location header made absolute against the registry's base URL. */
static int absolute_location(struct mv_registry *r, const char *loc, char *out, size_t cap)
{
	if (!strncmp(loc, "http://", 7) || !strncmp(loc, "https://", 8))
		return snprintf(out, cap, "%s", loc) < (int)cap ? 0 : -ENAMETOOLONG;
	if (loc[0] != '/')
		return -EBADMSG;
	/* base is scheme://host[:port][/prefix]: keep scheme://host[:port]. */
	const char *host = strstr(r->base, "://") + 3;
	const char *slash = strchr(host, '/');
	int blen = slash ? (int)(slash - r->base) : (int)strlen(r->base);
	return snprintf(out, cap, "%.*s%s", blen, r->base, loc) < (int)cap ? 0 : -ENAMETOOLONG;
}

int mv_registry_put_blob(struct mv_registry *r, const void *data, size_t len, struct mv_digest *out,
			 struct mv_error **err)
{
	char url[4096], ds[MV_DIGEST_STRLEN];
	struct req q = { .r = r };
	long status = 0;
	mv_digest_of(data, len, out);
	mv_digest_format(out, ds);
	snprintf(url, sizeof(url), "%s/v2/%s/blobs/%s", r->base, r->repo, ds);
	struct body head = { .method = "HEAD" };
	int rc = req_authed(r, url, NULL, NULL, &head, &q, &status, err);
	if (rc < 0 || status == 200)
		return rc;   /* already there */
	snprintf(url, sizeof(url), "%s/v2/%s/blobs/uploads/", r->base, r->repo);
	struct body post = { .method = "POST", .type = "application/octet-stream" };
	memset(&q, 0, sizeof(q));
	q.r = r;
	if ((rc = req_authed(r, url, NULL, NULL, &post, &q, &status, err)) < 0)
		return rc;
	if (status != 202 || !q.location[0])
		return mv_err(err, status == 401 || status == 403 ? -EACCES : -EIO,
			      "POST blob upload to %s: HTTP %ld", r->repo, status);
	char loc[2048 + 128];
	if (absolute_location(r, q.location, loc, sizeof(loc) - 100) < 0)
		return mv_err(err, -EBADMSG, "blob upload: bad Location \"%.200s\"", q.location);
	snprintf(url, sizeof(url), "%s%sdigest=%s", loc, strchr(loc, '?') ? "&" : "?", ds);
	struct body put = { .method = "PUT", .data = data, .len = len,
			    .type = "application/octet-stream" };
	memset(&q, 0, sizeof(q));
	q.r = r;
	if ((rc = req_authed(r, url, NULL, NULL, &put, &q, &status, err)) < 0)
		return rc;
	if (status != 201)
		return mv_err(err, status == 401 || status == 403 ? -EACCES : -EIO,
			      "PUT blob %s to %s: HTTP %ld", ds, r->repo, status);
	return 0;
}

int mv_registry_put_manifest(struct mv_registry *r, const char *ref, const char *media_type,
			     const void *data, size_t len, struct mv_error **err)
{
	char url[1024];
	struct req q = { .r = r };
	long status = 0;
	if (!valid_ref(ref))
		return mv_err_field(err, -EINVAL, "reference", "bad tag or digest \"%.130s\"", ref);
	snprintf(url, sizeof(url), "%s/v2/%s/manifests/%s", r->base, r->repo, ref);
	struct body put = { .method = "PUT", .data = data, .len = len, .type = media_type };
	int rc = req_authed(r, url, NULL, NULL, &put, &q, &status, err);
	if (rc < 0)
		return rc;
	if (status != 201)
		return mv_err(err, status == 401 || status == 403 ? -EACCES : -EIO,
			      "PUT manifest %s:%s: HTTP %ld", r->repo, ref, status);
	return 0;
}
