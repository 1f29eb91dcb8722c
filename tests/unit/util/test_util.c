/* Unit tests for src/util: sizes, errors, fd passing, atomic files. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include "memvisor/util.h"

static void test_parse_size(void **s)
{
	uint64_t v;
	assert_int_equal(mv_parse_size("4096", &v), 0);
	assert_int_equal(v, 4096);
	assert_int_equal(mv_parse_size("64M", &v), 0);
	assert_int_equal(v, 64ULL << 20);
	assert_int_equal(mv_parse_size("1.5GiB", &v), 0);
	assert_int_equal(v, 3ULL << 29);
	assert_int_equal(mv_parse_size("2T", &v), 0);
	assert_int_equal(v, 2ULL << 40);
	assert_int_equal(mv_parse_size("", &v), -EINVAL);
	assert_int_equal(mv_parse_size("12Q", &v), -EINVAL);
	assert_int_equal(mv_parse_size("-1", &v), -EINVAL);
	assert_int_equal(mv_parse_size("nan", &v), -EINVAL);
	assert_int_equal(mv_parse_size("inf", &v), -EINVAL);
	assert_int_equal(mv_parse_size("0x10", &v), -EINVAL);
	assert_int_equal(mv_parse_size("1e3", &v), -EINVAL);
	assert_int_equal(mv_parse_size(" 5", &v), -EINVAL);
	assert_int_equal(mv_parse_size("1.2.3", &v), -EINVAL);
	assert_int_equal(mv_parse_size("99999999999T", &v), -ERANGE);
}

static void test_error_first_wins(void **s)
{
	struct mv_error *e = NULL;
	assert_int_equal(mv_err_field(&e, -EINVAL, "memory", "must be page aligned"), -EINVAL);
	assert_int_equal(mv_err(&e, -ENOMEM, "second"), -ENOMEM);
	mv_err_prefix(&e, "creating vm");
	assert_string_equal(e->field, "memory");
	assert_string_equal(e->msg, "creating vm: must be page aligned");
	assert_int_equal(e->code, -EINVAL);
	mv_error_free(e);
	assert_string_equal(mv_error_msg(NULL, -ENOENT), strerror(ENOENT));
	assert_int_equal(mv_err(NULL, -EIO, "ignored"), -EIO);
}

static void test_fd_passing(void **s)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	int p[2];
	assert_int_equal(pipe(p), 0);
	const char msg[] = "hello fds";
	assert_int_equal(mv_send_fds(sv[0], msg, sizeof(msg), p, 2), 0);
	char buf[sizeof(msg)];
	int fds[1];
	unsigned n = 1; /* room for one: the other must be closed, not leaked */
	assert_int_equal(mv_recv_fds(sv[1], buf, sizeof(buf), fds, &n, 1000), 0);
	assert_int_equal(n, 1);
	assert_string_equal(buf, msg);
	assert_int_equal(write(p[1], "x", 1), 1);
	char c;
	assert_int_equal(read(fds[0], &c, 1), 1);
	close(fds[0]);
	assert_int_equal(mv_recv_fds(sv[1], buf, 1, NULL, NULL, 10), -ETIMEDOUT);
	close(sv[0]);
	assert_int_equal(mv_recv_fds(sv[1], buf, 1, NULL, NULL, 1000), -EPIPE);
	close(sv[1]);
	close(p[0]);
	close(p[1]);
}

static void test_atomic_file(void **s)
{
	char dir[] = "/tmp/mvutilXXXXXX";
	assert_non_null(mkdtemp(dir));
	char sub[256], path[300];
	snprintf(sub, sizeof(sub), "%s/a/b/c", dir);
	assert_int_equal(mv_mkdir_p(sub, 0700), 0);
	snprintf(path, sizeof(path), "%s/f", sub);
	assert_int_equal(mv_write_file_atomic(path, "abc", 3), 0);
	char buf[8] = {0};
	int fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, sizeof(buf)), 3);
	close(fd);
	assert_string_equal(buf, "abc");
	void *data;
	size_t len;
	assert_int_equal(mv_read_file(path, 16, &data, &len), 0);
	assert_int_equal(len, 3);
	assert_string_equal(data, "abc");   /* NUL-terminated */
	free(data);
	assert_int_equal(mv_read_file(path, 2, &data, &len), -EFBIG);
	assert_null(data);
	assert_int_equal(mv_read_file(sub, 16, &data, &len), -EBADMSG);   /* a directory */
	int pfd[2];
	assert_int_equal(pipe(pfd), 0);   /* a FIFO would block: refused, not read */
	assert_int_equal(mv_read_fd(pfd[0], 16, &data, &len), -EBADMSG);
	close(pfd[0]);
	close(pfd[1]);
	char link[320];
	snprintf(link, sizeof(link), "%s/l", sub);
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(mv_read_file(link, 16, &data, &len), -ELOOP);
	snprintf(link, sizeof(link), "%s/missing", sub);
	assert_int_equal(mv_read_file(link, 16, &data, &len), -ENOENT);
	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_unix_sockets(void **s)
{
	char dir[] = "/tmp/mvsockXXXXXX";
	assert_non_null(mkdtemp(dir));
	char path[128];
	snprintf(path, sizeof(path), "%s/x.sock", dir);
	assert_int_equal(mv_unix_connect(path), -ENOENT);
	int l = mv_unix_listen(path, 0600, 1);
	assert_true(l >= 0);
	int c = mv_unix_connect(path);
	assert_true(c >= 0);
	close(c);
	close(l);
	/* A stale file is replaced by the next listener. */
	l = mv_unix_listen(path, 0600, 1);
	assert_true(l >= 0);
	close(l);
	char longp[200];
	memset(longp, 'a', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = '\0';
	assert_int_equal(mv_unix_listen(longp, 0600, 1), -ENAMETOOLONG);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_error_first_wins),
		cmocka_unit_test(test_fd_passing),
		cmocka_unit_test(test_atomic_file),
		cmocka_unit_test(test_unix_sockets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
