/* Unix stream sockets by path: the VMM's control socket and the daemon's
 * connections to it. (The API server adds stale-socket rules of its own.) */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "memvisor/util.h"

static int unix_addr(const char *path, struct sockaddr_un *a)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(a->sun_path))
		return -ENAMETOOLONG;
	strcpy(a->sun_path, path);
	return 0;
}

/* A stream socket for path (filled into *a), or -errno. */
static int unix_socket(const char *path, struct sockaddr_un *a)
{
	int r = unix_addr(path, a);
	if (r < 0)
		return r;
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	return s < 0 ? -errno : s;
}

int mv_unix_connect(const char *path)
{
	struct sockaddr_un a;
	int s = unix_socket(path, &a);
	if (s < 0)
		return s;
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
		int e = -errno;
		close(s);
		return e;
	}
	return s;
}

int mv_unix_listen(const char *path, unsigned mode, int backlog)
{
	struct sockaddr_un a;
	int s = unix_socket(path, &a);
	if (s < 0)
		return s;
	unlink(path);
	/* chmod before listen(): nobody connects while the mode is the umask's. */
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || chmod(path, mode) < 0 ||
	    listen(s, backlog) < 0) {
		int e = -errno;
		close(s);
		unlink(path);
		return e;
	}
	return s;
}
