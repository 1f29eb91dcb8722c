/* The API server: owns the Unix socket (stale-file handling, mode 0660) and
 * the libmicrohttpd daemon that serves it with one thread per connection, so
 * a slow backend call (VM creation) never stalls other clients. Accumulates
 * request bodies up to MV_API_MAX_BODY and hands complete requests to
 * router.c. Used by memvisord (mv_api_server_start/stop) and the tests. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <microhttpd.h>
#include "api_i.h"
#include "memvisor/util.h"

#define API_MAX_CONNS 64
#define API_CONN_TIMEOUT_S 30
#define API_CONN_MEMORY (32 * 1024)  /* per connection: request line, headers, read buffer */
#define API_LISTEN_BACKLOG 64
/* Past the limit we read and drop the body so the client gets its 413; a
 * client that keeps sending after this much more is cut off. */
#define API_MAX_DISCARD (4 * MV_API_MAX_BODY)

struct mv_api_server {
	struct MHD_Daemon *mhd;
	const struct mv_api_backend *be;
	void *ctx;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t dev;                   /* the socket file we created, so stop */
	ino_t ino;                   /* unlinks only that one */
};

/* Per-request state, from the first callback to MHD's completion notice. */
struct conn_req {
	char *body;
	size_t len, cap;
	size_t dropped;
	bool too_big;
	bool answered;               /* answered early (Content-Length over the limit) */
};

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	char buf[512];
	vsnprintf(buf, sizeof(buf), fmt, ap);
	size_t n = strlen(buf);
	while (n && buf[n - 1] == '\n')
		buf[--n] = '\0';
	/* libmicrohttpd 0.9.75 says this even when the logger is the first option. */
	if (strstr(buf, "EXTERNAL_LOGGER is not the first option"))
		return;
	mv_log(MV_LOG_WARN, "api: %s", buf);
}

static bool query_get(void *qctx, const char *key, const char **val)
{
	size_t vlen;
	*val = NULL;
	return MHD_lookup_connection_value_n(qctx, MHD_GET_ARGUMENT_KIND, key, strlen(key), val,
					     &vlen) == MHD_YES;
}

static enum MHD_Result send_resp(struct MHD_Connection *c, struct api_resp *rs)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(rs->len, rs->body,
								 MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(rs->body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
				rs->content_type ? rs->content_type : "application/json");
	if (rs->allow[0])
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, rs->allow);
	enum MHD_Result ret = MHD_queue_response(c, (unsigned)rs->status, r);
	MHD_destroy_response(r);
	return ret;
}

static bool content_length_over(const char *cl)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(cl, &end, 10);
	/* MHD has already refused a malformed Content-Length; be safe anyway. */
	return errno || end == cl || v > MV_API_MAX_BODY;
}

static enum MHD_Result send_413(struct MHD_Connection *c)
{
	struct api_resp rs = {0};
	api_resp_error(&rs, 413, -E2BIG, "body", "request body exceeds %d bytes", MV_API_MAX_BODY);
	return send_resp(c, &rs);
}

static int body_append(struct conn_req *q, const char *data, size_t n)
{
	if (q->len + n + 1 > q->cap) {
		size_t cap = q->cap ? q->cap : 4096;
		while (cap < q->len + n + 1)
			cap *= 2;
		if (cap > MV_API_MAX_BODY + 1)
			cap = MV_API_MAX_BODY + 1;
		char *b = realloc(q->body, cap);
		if (!b)
			return -ENOMEM;
		q->body = b;
		q->cap = cap;
	}
	memcpy(q->body + q->len, data, n);
	q->len += n;
	q->body[q->len] = '\0';
	return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version, const char *data,
				  size_t *data_size, void **con_cls)
{
	struct mv_api_server *s = cls;
	struct conn_req *q = *con_cls;

	if (!q) {
		q = calloc(1, sizeof(*q));
		if (!q)
			return MHD_NO;
		*con_cls = q;
		const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							     MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (cl && content_length_over(cl)) {
			q->answered = true;
			return send_413(c);
		}
		return MHD_YES;
	}
	if (q->answered) {
		*data_size = 0;
		return MHD_YES;
	}
	if (*data_size) {
		size_t n = *data_size;
		*data_size = 0;
		if (q->too_big || q->len + n > MV_API_MAX_BODY) {
			q->too_big = true;
			q->dropped += n;
			return q->dropped > API_MAX_DISCARD ? MHD_NO : MHD_YES;
		}
		return body_append(q, data, n) < 0 ? MHD_NO : MHD_YES;
	}
	if (q->too_big)
		return send_413(c);

	struct api_req rq = {
		.method = method, .path = url, .body = q->body ? q->body : "", .len = q->len,
		.content_type = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							    MHD_HTTP_HEADER_CONTENT_TYPE),
		.query = query_get, .qctx = c,
	};
	struct api_resp rs = {0};
	api_route(s->be, s->ctx, &rq, &rs);
	return send_resp(c, &rs);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
		    enum MHD_RequestTerminationCode toe)
{
	struct conn_req *q = *con_cls;
	if (q) {
		free(q->body);
		free(q);
		*con_cls = NULL;
	}
}

/* A socket file left by a dead daemon is removed; a live one (connect works)
 * is not ours to take: -EADDRINUSE. A non-socket file is never removed. */
static int clear_stale(const struct sockaddr_un *sa, struct mv_error **err)
{
	struct stat st;
	if (lstat(sa->sun_path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return mv_err(err, -errno, "%s: %s", sa->sun_path, strerror(errno));
	}
	if (!S_ISSOCK(st.st_mode))
		return mv_err(err, -EEXIST, "%s exists and is not a socket", sa->sun_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return mv_err(err, -errno, "socket: %s", strerror(errno));
	int r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	int e = errno;
	close(fd);
	if (r == 0)
		return mv_err(err, -EADDRINUSE, "%s: another daemon is listening there",
			      sa->sun_path);
	if (e != ECONNREFUSED)
		return mv_err(err, -e, "probing %s: %s", sa->sun_path, strerror(e));
	if (unlink(sa->sun_path) < 0 && errno != ENOENT)
		return mv_err(err, -errno, "removing stale %s: %s", sa->sun_path, strerror(errno));
	return 0;
}

static int listen_unix(struct mv_api_server *s, struct mv_error **err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int r, fd;

	if (strlen(s->path) >= sizeof(sa.sun_path))
		return mv_err(err, -ENAMETOOLONG, "socket path too long: %.200s", s->path);
	memcpy(sa.sun_path, s->path, strlen(s->path) + 1);
	if ((r = clear_stale(&sa, err)) < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return mv_err(err, -errno, "socket: %s", strerror(errno));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = mv_err(err, -errno, "bind %s: %s", s->path, strerror(errno));
		goto out_close;
	}
	/* Before listen(): nobody can connect while the mode is still the umask's. */
	if (chmod(s->path, 0660) < 0 || stat(s->path, &st) < 0) {
		r = mv_err(err, -errno, "chmod %s: %s", s->path, strerror(errno));
		goto out_unlink;
	}
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	if (listen(fd, API_LISTEN_BACKLOG) < 0) {
		r = mv_err(err, -errno, "listen %s: %s", s->path, strerror(errno));
		goto out_unlink;
	}
	return fd;
out_unlink:
	unlink(s->path);
out_close:
	close(fd);
	return r;
}

/* Removes the socket file if it is still the one we bound. */
static void unlink_ours(const struct mv_api_server *s)
{
	struct stat st;
	if (stat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
		unlink(s->path);
}

int mv_api_server_start(const char *sock_path, const struct mv_api_backend *be, void *ctx,
			struct mv_api_server **out, struct mv_error **err)
{
	if (!sock_path || !*sock_path || !be || !out)
		return mv_err(err, -EINVAL, "mv_api_server_start: missing argument");
	struct mv_api_server *s = calloc(1, sizeof(*s));
	if (!s)
		return mv_err(err, -ENOMEM, "out of memory");
	s->be = be;
	s->ctx = ctx;
	if (strlen(sock_path) >= sizeof(s->path)) {
		free(s);
		return mv_err(err, -ENAMETOOLONG, "socket path too long: %.200s", sock_path);
	}
	memcpy(s->path, sock_path, strlen(sock_path) + 1);
	int fd = listen_unix(s, err);
	if (fd < 0) {
		free(s);
		return fd;
	}
	s->mhd = MHD_start_daemon(
		MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO |
			MHD_USE_ERROR_LOG,
		0, NULL, NULL, on_request, s,
		/* the logger first, or MHD logs the options before it to stderr */
		MHD_OPTION_EXTERNAL_LOGGER, mhd_log, s,
		MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
		MHD_OPTION_CONNECTION_LIMIT, (unsigned)API_MAX_CONNS,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)API_CONN_TIMEOUT_S,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)API_CONN_MEMORY,
		MHD_OPTION_NOTIFY_COMPLETED, on_done, s,
		MHD_OPTION_END);
	if (!s->mhd) {
		int r = mv_err(err, -EIO, "cannot start the HTTP server on %s", sock_path);
		unlink_ours(s);
		close(fd);
		free(s);
		return r;
	}
	*out = s;
	return 0;
}

void mv_api_server_stop(struct mv_api_server *s)
{
	if (!s)
		return;
	/* Waits for the connection threads; closes the listening socket too. */
	MHD_stop_daemon(s->mhd);
	unlink_ours(s);
	free(s);
}
