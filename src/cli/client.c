/* HTTP client of the memvisor CLI: one libcurl request over memvisord's Unix
 * socket, turning transport failures and API errors into one-line messages on
 * stderr. Used by every command that talks to the daemon (cmd_*.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <curl/curl.h>
#include "cli_i.h"

#define MV_CLI_CONNECT_TIMEOUT 5
/* Far above any real answer (a VM list is a few hundred bytes per VM); stops
 * a misbehaving peer from making us buffer without bound. */
#define MV_CLI_MAX_RESPONSE (16u << 20)

struct sink {
	char *buf;
	size_t len;
	bool overflow;
};

static size_t sink_write(char *data, size_t size, size_t nmemb, void *opaque)
{
	struct sink *s = opaque;
	size_t n = size * nmemb;
	if (s->len + n > MV_CLI_MAX_RESPONSE) {
		s->overflow = true;
		return 0; /* makes curl fail with CURLE_WRITE_ERROR */
	}
	char *nb = realloc(s->buf, s->len + n + 1);
	if (!nb)
		return 0;
	memcpy(nb + s->len, data, n);
	s->len += n;
	nb[s->len] = '\0';
	s->buf = nb;
	return n;
}

static void start_hint(void)
{
	mv_cli_hint("start it with `memvisor daemon`, or point --socket/" MV_CLI_SOCKET_ENV
		    " at the socket it listens on");
}

/* Explains a failed transfer; returns the -errno the caller passes up. */
static int report_transport(const struct mv_cli *cli, CURL *h, CURLcode rc,
			    const struct sink *s, long timeout_s, const char *errbuf)
{
	long oserr = 0;
	curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &oserr);
	const char *detail = errbuf[0] ? errbuf : curl_easy_strerror(rc);

	switch (rc) {
	case CURLE_COULDNT_CONNECT:
		if (oserr == EACCES || oserr == EPERM) {
			mv_cli_err("permission denied connecting to memvisord at %s", cli->socket);
			mv_cli_hint("run as root or as a member of the socket's group");
			return -EACCES;
		}
		struct stat st;
		if (stat(cli->socket, &st) == 0 && !S_ISSOCK(st.st_mode)) {
			mv_cli_err("%s is not a socket, so memvisord is not running there",
				   cli->socket);
			start_hint();
			return -ENOTSOCK;
		}
		mv_cli_err("memvisord is not running at %s (connect: %s)", cli->socket,
			   oserr ? strerror((int)oserr) : detail);
		start_hint();
		return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT:
		mv_cli_err("no answer from memvisord at %s within %ld s", cli->socket, timeout_s);
		return -ETIMEDOUT;
	case CURLE_WRITE_ERROR:
		if (s->overflow) {
			mv_cli_err("response from memvisord is larger than %u MiB; giving up",
				   MV_CLI_MAX_RESPONSE >> 20);
			return -EFBIG;
		}
		mv_cli_err("out of memory reading the response");
		return -ENOMEM;
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
		mv_cli_err("memvisord at %s closed the connection before a complete answer (%s)",
			   cli->socket, detail);
		return -EPROTO;
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_UNSUPPORTED_PROTOCOL:
		mv_cli_err("%s does not speak HTTP like memvisord does (%s)", cli->socket, detail);
		return -EPROTO;
	default:
		mv_cli_err("request to memvisord at %s failed: %s", cli->socket, detail);
		return -EIO;
	}
}

int mv_cli_request(const struct mv_cli *cli, const char *method, const char *path,
		   const json_t *body, long timeout_s, struct mv_cli_resp *out)
{
	struct sink s = {0};
	char errbuf[CURL_ERROR_SIZE] = "";
	char url[1024];
	char *payload = NULL;
	struct curl_slist *hdrs = NULL;
	CURL *h = NULL;
	int ret;

	memset(out, 0, sizeof(*out));
	/* curl would report an overlong path as an obscure resolve error. */
	if (strlen(cli->socket) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		mv_cli_err("socket path is too long for a Unix socket: %s", cli->socket);
		return -ENAMETOOLONG;
	}
	if (snprintf(url, sizeof(url), "http://localhost%s", path) >= (int)sizeof(url)) {
		mv_cli_err("request path too long");
		return -ENAMETOOLONG;
	}
	h = curl_easy_init();
	if (!h) {
		mv_cli_err("cannot initialise libcurl");
		return -ENOMEM;
	}
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	if (body) {
		payload = json_dumps(body, JSON_COMPACT);
		if (!payload) {
			ret = -ENOMEM;
			mv_cli_err("out of memory encoding the request");
			goto out;
		}
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
	} else if (strcmp(method, "POST") == 0) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
	}
	/* Drop curl's "Expect: 100-continue": the daemon answers in one go. */
	hdrs = curl_slist_append(hdrs, "Expect:");
	if (!hdrs) {
		ret = -ENOMEM;
		mv_cli_err("out of memory building the request");
		goto out;
	}
	curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, cli->socket);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "memvisor/" MV_VERSION);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)MV_CLI_CONNECT_TIMEOUT);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout_s);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
	/* Never pick up http_proxy & co. for a local socket. */
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");

	CURLcode rc = curl_easy_perform(h);
	if (rc != CURLE_OK) {
		ret = report_transport(cli, h, rc, &s, timeout_s, errbuf);
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
	if (!s.buf) {
		s.buf = calloc(1, 1);
		if (!s.buf) {
			ret = -ENOMEM;
			goto out;
		}
	}
	out->body = s.buf;
	out->len = s.len;
	s.buf = NULL;
	ret = 0;
out:
	free(s.buf);
	free(payload);
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(h);
	return ret;
}

/* First line of a body, trimmed and with control characters replaced, for
 * quoting an unexpected answer without flooding the terminal. */
static void snippet(const struct mv_cli_resp *r, char *buf, size_t len)
{
	size_t n = 0, i = 0;
	for (; i < r->len && r->body[i] != '\n' && n + 4 < len; i++) {
		unsigned char c = (unsigned char)r->body[i];
		buf[n++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	bool more = i < r->len && !(r->body[i] == '\n' && i + 1 == r->len);
	if (more) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
}

static void report_api_error(const struct mv_cli_resp *r)
{
	json_error_t jerr;
	json_t *j = r->len ? json_loadb(r->body, r->len, 0, &jerr) : NULL;
	const json_t *e = json_object_get(j, "error");
	const char *msg = mv_cli_jstr(e, "message", "");
	const char *field = mv_cli_jstr(e, "field", "");
	const char *code = mv_cli_jstr(e, "code", "");

	if (msg[0] && field[0])
		mv_cli_err("%s: %s", field, msg);
	else if (msg[0])
		mv_cli_err("%s", msg);
	else if (code[0])
		mv_cli_err("memvisord answered HTTP %ld (%s)", r->status, code);
	else if (r->len) {
		char snip[96];
		snippet(r, snip, sizeof(snip));
		mv_cli_err("memvisord answered HTTP %ld: %s", r->status, snip);
	} else
		mv_cli_err("memvisord answered HTTP %ld with no details", r->status);
	json_decref(j);
}

int mv_cli_call(const struct mv_cli *cli, const char *method, const char *path,
		const json_t *body, long timeout_s, bool want_json, struct mv_cli_resp *out)
{
	int ret = mv_cli_request(cli, method, path, body, timeout_s, out);
	if (ret)
		return ret;
	if (out->status < 200 || out->status > 299) {
		report_api_error(out);
		return -EREMOTEIO;
	}
	if (!want_json)
		return 0;

	json_error_t jerr;
	out->json = json_loadb(out->body, out->len, 0, &jerr);
	if (!out->json || !json_is_object(out->json)) {
		char snip[96];
		snippet(out, snip, sizeof(snip));
		if (out->len == 0)
			mv_cli_err("empty response from memvisord (HTTP %ld) to %s %s",
				   out->status, method, path);
		else if (!out->json)
			mv_cli_err("malformed JSON from memvisord (HTTP %ld) to %s %s: %s "
				   "at byte %d; got: %s", out->status, method, path, jerr.text,
				   jerr.position, snip);
		else
			mv_cli_err("unexpected JSON from memvisord to %s %s: not an object",
				   method, path);
		json_decref(out->json);
		out->json = NULL;
		return -EPROTO;
	}
	return 0;
}

void mv_cli_resp_free(struct mv_cli_resp *r)
{
	free(r->body);
	json_decref(r->json);
	memset(r, 0, sizeof(*r));
}

int mv_cli_get_or_print(const struct mv_cli *cli, const char *path, bool json,
			struct mv_cli_resp *r)
{
	int ret = MV_CLI_FAIL;
	if (mv_cli_call(cli, "GET", path, NULL, MV_CLI_TIMEOUT_SHORT, true, r) == 0) {
		if (!json)
			return -1;
		ret = mv_cli_print_json(r->json);
	}
	mv_cli_resp_free(r);
	return ret;
}

char *mv_cli_vm_path(const char *ref, const char *suffix)
{
	/* A ref is a name or an id, but it comes from the user: escape it so
	 * "../host" or "a?b" cannot address another route. */
	char *esc = curl_easy_escape(NULL, ref, 0);
	if (!esc)
		return NULL;
	char *p = NULL;
	if (asprintf(&p, "/v1/vms/%s%s", esc, suffix ? suffix : "") < 0)
		p = NULL;
	curl_free(esc);
	return p;
}
