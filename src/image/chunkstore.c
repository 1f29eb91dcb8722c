/* Content-addressed chunk store (docs/formats/chunk-store.md): chunks named
 * by the SHA-256 of their content under <store>/chunks/ab/<62 hex>, written
 * crash-safely (temp file, fsync, rename, fsync dir), verified on every read;
 * reference sets under <store>/refs/<name> say which chunks are live, and gc
 * sweeps the rest. Used by the lazy readers (image probe, later FUSE). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include "memvisor/image.h"
#include "memvisor/util.h"

#define REFS_MAGIC "MVCREFS1"
#define REFS_END "MVRE"
#define REFS_VERSION 1
#define REFS_MAX (1u << 24)

struct mv_chunkstore {
	char *dir;
};

int mv_chunkstore_open(const char *dir, struct mv_chunkstore **out, struct mv_error **err)
{
	char p[4096];
	static const char *const sub[] = { "chunks", "refs", "tmp" };
	*out = NULL;
	for (size_t i = 0; i < MV_ARRAY_SIZE(sub); i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, sub[i]);
		int rc = mv_mkdir_p(p, 0700);
		if (rc < 0)
			return mv_err(err, rc, "chunk store: creating %s", p);
	}
	struct mv_chunkstore *cs = calloc(1, sizeof(*cs));
	if (!cs || !(cs->dir = strdup(dir))) {
		free(cs);
		return -ENOMEM;
	}
	*out = cs;
	return 0;
}

void mv_chunkstore_close(struct mv_chunkstore *cs)
{
	if (!cs)
		return;
	free(cs->dir);
	free(cs);
}

static void chunk_path(const struct mv_chunkstore *cs, const struct mv_digest *d, char *p,
		       size_t n, int dir_only)
{
	char s[MV_DIGEST_STRLEN];
	mv_digest_format(d, s);
	if (dir_only)
		snprintf(p, n, "%s/chunks/%.2s", cs->dir, s + 7);
	else
		snprintf(p, n, "%s/chunks/%.2s/%s", cs->dir, s + 7, s + 9);
}

static int fsync_dir(const char *p)
{
	int fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return rc;
}

int mv_chunkstore_has(struct mv_chunkstore *cs, const struct mv_digest *d)
{
	char p[4096];
	chunk_path(cs, d, p, sizeof(p), 0);
	return access(p, F_OK) == 0;
}

int mv_chunkstore_put(struct mv_chunkstore *cs, const void *data, size_t len,
		      struct mv_digest *out, struct mv_error **err)
{
	char p[4096], dirp[4096], tmp[4096];
	if (len > MV_CHUNK_MAX_SIZE)
		return mv_err(err, -EFBIG, "chunk of %zu bytes (limit %u)", len, MV_CHUNK_MAX_SIZE);
	mv_digest_of(data, len, out);
	chunk_path(cs, out, p, sizeof(p), 0);
	if (utimensat(AT_FDCWD, p, NULL, 0) == 0)
		return 0;   /* present: refresh its age for gc's grace period */
	chunk_path(cs, out, dirp, sizeof(dirp), 1);
	int rc = mv_mkdir_p(dirp, 0700);
	if (rc < 0)
		return mv_err(err, rc, "chunk store: creating %s", dirp);
	/* pid + a process-wide counter: unique among this process's handles;
	 * the random part covers a pid reused while an old temp file lingers. */
	static uint64_t seq;
	uint64_t salt;
	if (getrandom(&salt, sizeof(salt), 0) != sizeof(salt))
		salt = mv_now_ns();
	snprintf(tmp, sizeof(tmp), "%s/tmp/%d.%llu.%016llx", cs->dir, (int)getpid(),
		 (unsigned long long)__atomic_fetch_add(&seq, 1, __ATOMIC_RELAXED),
		 (unsigned long long)salt);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return mv_err(err, -errno, "chunk store: creating %s", tmp);
	const uint8_t *b = data;
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, b + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = mv_err(err, n < 0 ? -errno : -EIO, "chunk store: writing %s", tmp);
			goto fail;
		}
		done += (size_t)n;
	}
	if (fsync(fd) < 0) {
		rc = mv_err(err, -errno, "chunk store: fsync %s", tmp);
		goto fail;
	}
	close(fd);
	fd = -1;
	if (rename(tmp, p) < 0) {
		rc = mv_err(err, -errno, "chunk store: rename to %s", p);
		goto fail;
	}
	if ((rc = fsync_dir(dirp)) < 0)
		return mv_err(err, rc, "chunk store: fsync %s", dirp);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return rc;
}

int mv_chunkstore_get(struct mv_chunkstore *cs, const struct mv_digest *d, void **data,
		      size_t *len, struct mv_error **err)
{
	char p[4096];
	struct mv_digest got;
	void *buf;
	size_t have;
	*data = NULL;
	*len = 0;
	chunk_path(cs, d, p, sizeof(p), 0);
	int rc = mv_read_file(p, MV_CHUNK_MAX_SIZE, &buf, &have);
	if (rc == -ENOENT)
		return rc;
	if (rc == -ENOMEM || (rc < 0 && rc != -EBADMSG && rc != -EFBIG && rc != -EIO))
		return mv_err(err, rc, "chunk store: reading %s", p);
	if (rc == 0) {
		mv_digest_of(buf, have, &got);
		if (mv_digest_equal(&got, d)) {
			*data = buf;
			*len = have;
			return 0;
		}
		free(buf);
	}
	/* A corrupt chunk is worse than a missing one: drop it so it is refetched. */
	unlink(p);
	return mv_err(err, -EBADMSG, "chunk store: %s is corrupt (removed)", p);
}

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

int mv_chunkrefs_encode(const struct mv_digest *d, size_t n, void **bufp, size_t *lenp)
{
	if (n > REFS_MAX)
		return -EFBIG;
	size_t len = 16 + n * MV_DIGEST_LEN + 8;
	uint8_t *b = malloc(len);
	if (!b)
		return -ENOMEM;
	memcpy(b, REFS_MAGIC, 8);
	put32(b + 8, REFS_VERSION);
	put32(b + 12, (uint32_t)n);
	for (size_t i = 0; i < n; i++)
		memcpy(b + 16 + i * MV_DIGEST_LEN, d[i].b, MV_DIGEST_LEN);
	put32(b + len - 8, (uint32_t)crc32(0, b, (uInt)(len - 8)));
	memcpy(b + len - 4, REFS_END, 4);
	*bufp = b;
	*lenp = len;
	return 0;
}

int mv_chunkrefs_decode(const void *buf, size_t len, struct mv_digest **d, size_t *n,
			struct mv_error **err)
{
	const uint8_t *b = buf;
	*d = NULL;
	*n = 0;
	if (len < 24 || memcmp(b, REFS_MAGIC, 8))
		return mv_err(err, -EBADMSG, "chunk refs: bad magic or too short");
	if (get32(b + 8) != REFS_VERSION)
		return mv_err(err, -EPROTO, "chunk refs: version %u unsupported", get32(b + 8));
	uint32_t cnt = get32(b + 12);
	if (cnt > REFS_MAX || len != 16 + (size_t)cnt * MV_DIGEST_LEN + 8)
		return mv_err(err, -EBADMSG, "chunk refs: count %u does not match the size", cnt);
	if (memcmp(b + len - 4, REFS_END, 4) ||
	    get32(b + len - 8) != (uint32_t)crc32(0, b, (uInt)(len - 8)))
		return mv_err(err, -EBADMSG, "chunk refs: checksum or end marker mismatch");
	struct mv_digest *out = malloc((cnt ? cnt : 1) * sizeof(*out));
	if (!out)
		return -ENOMEM;
	for (uint32_t i = 0; i < cnt; i++)
		memcpy(out[i].b, b + 16 + (size_t)i * MV_DIGEST_LEN, MV_DIGEST_LEN);
	*d = out;
	*n = cnt;
	return 0;
}

static int valid_ref_name(const char *s)
{
	size_t n = strlen(s);
	if (!n || n > 128 || s[0] == '.' || strstr(s, ".tmp."))
		return 0;   /* ".tmp.": mv_write_file_atomic's temp files */
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '.' || s[i] == '_' || s[i] == '-'))
			return 0;
	return 1;
}

int mv_chunkstore_ref_set(struct mv_chunkstore *cs, const char *name,
			  const struct mv_digest *digests, size_t n, struct mv_error **err)
{
	char p[4096];
	void *buf;
	size_t len;
	if (!valid_ref_name(name))
		return mv_err_field(err, -EINVAL, "name", "bad reference set name \"%.140s\"", name);
	int rc = mv_chunkrefs_encode(digests, n, &buf, &len);
	if (rc < 0)
		return mv_err(err, rc, "encoding reference set %s", name);
	snprintf(p, sizeof(p), "%s/refs/%s", cs->dir, name);
	rc = mv_write_file_atomic(p, buf, len);
	free(buf);
	return rc < 0 ? mv_err(err, rc, "writing %s", p) : 0;
}

int mv_chunkstore_ref_drop(struct mv_chunkstore *cs, const char *name, struct mv_error **err)
{
	char p[4096];
	if (!valid_ref_name(name))
		return mv_err_field(err, -EINVAL, "name", "bad reference set name \"%.140s\"", name);
	snprintf(p, sizeof(p), "%s/refs/%s", cs->dir, name);
	if (unlink(p) < 0)
		return mv_err(err, -errno, "removing %s", p);
	return 0;
}

static int cmp_digest(const void *a, const void *b)
{
	return memcmp(a, b, MV_DIGEST_LEN);
}


/* Mark: every digest named by any reference set, sorted. A set that does not
 * load stops gc: deleting what it may name would lose data. */
static int mark(struct mv_chunkstore *cs, struct mv_digest **live, size_t *n_live,
		struct mv_error **err)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s/refs", cs->dir);
	DIR *dir = opendir(p);
	if (!dir)
		return mv_err(err, -errno, "opening %s", p);
	struct mv_digest *all = NULL;
	size_t n = 0;
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (!valid_ref_name(de->d_name))
			continue;   /* ".", "..", temp files of atomic writes */
		void *buf = NULL;
		size_t len = 0, cnt;
		struct mv_digest *d;
		snprintf(p, sizeof(p), "%s/refs/%s", cs->dir, de->d_name);
		if ((rc = mv_read_file(p, (size_t)1 << 30, &buf, &len)) < 0) {
			rc = mv_err(err, rc, "gc: reading %s", p);
			break;
		}
		rc = mv_chunkrefs_decode(buf, len, &d, &cnt, err);
		free(buf);
		if (rc < 0) {
			mv_err_prefix(err, "gc: %s", p);
			break;
		}
		struct mv_digest *g = realloc(all, (n + cnt + 1) * sizeof(*all));
		if (!g) {
			free(d);
			rc = -ENOMEM;
			break;
		}
		all = g;
		if (cnt)   /* d may be NULL for an empty set */
			memcpy(all + n, d, cnt * sizeof(*d));
		n += cnt;
		free(d);
	}
	closedir(dir);
	if (rc < 0) {
		free(all);
		return rc;
	}
	if (n)   /* qsort(NULL, 0) is undefined */
		qsort(all, n, sizeof(*all), cmp_digest);
	*live = all;
	*n_live = n;
	return 0;
}

int mv_chunkstore_gc(struct mv_chunkstore *cs, uint64_t grace_s, uint64_t *freed_chunks,
		     uint64_t *freed_bytes, struct mv_error **err)
{
	struct mv_digest *live = NULL;
	size_t n_live = 0;
	uint64_t fc = 0, fb = 0;
	time_t cutoff = time(NULL) - (time_t)grace_s;
	char p[4096], name[MV_DIGEST_STRLEN];
	int rc = mark(cs, &live, &n_live, err);
	if (rc < 0)
		return rc;
	for (unsigned hi = 0; hi < 256; hi++) {
		snprintf(p, sizeof(p), "%s/chunks/%02x", cs->dir, hi);
		DIR *dir = opendir(p);
		if (!dir)
			continue;
		struct dirent *de;
		while ((de = readdir(dir))) {
			struct mv_digest d;
			struct stat st;
			snprintf(name, sizeof(name), "sha256:%02x%.62s", hi, de->d_name);
			if (strlen(de->d_name) != 62 || mv_digest_parse(name, &d) < 0)
				continue;   /* not a chunk: leave it for a human */
			if (n_live && bsearch(&d, live, n_live, sizeof(d), cmp_digest))
				continue;
			if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
			    st.st_mtime > cutoff)
				continue;
			if (unlinkat(dirfd(dir), de->d_name, 0) == 0) {
				fc++;
				fb += (uint64_t)st.st_size;
			}
		}
		closedir(dir);
	}
	snprintf(p, sizeof(p), "%s/tmp", cs->dir);
	DIR *dir = opendir(p);
	if (dir) {
		struct dirent *de;
		struct stat st;
		while ((de = readdir(dir)))
			if (de->d_name[0] != '.' &&
			    fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
			    st.st_mtime <= cutoff)
				unlinkat(dirfd(dir), de->d_name, 0);
		closedir(dir);
	}
	free(live);
	if (freed_chunks)
		*freed_chunks = fc;
	if (freed_bytes)
		*freed_bytes = fb;
	return 0;
}
