/* A container's root over FUSE (libfuse3 low-level API), served from its
 * mapping table (mapping.c): lookup, getattr, readdir and readlink are table
 * queries and fetch nothing; opening a regular file finds its chunks
 * (fetch.c: local store, host-wide cache, else the layer by Range requests)
 * and reads are served from them.
 * Writes go to the container's writable directory (files named by inode,
 * copied up on first write) and its own table rows. Mapping inodes are FUSE
 * inodes, so there is no inode table to keep and forget is free. One session
 * thread per mount; used by the image probe, later by the daemon. */
#include "fusefs_i.h"   /* first: it sets FUSE_USE_VERSION */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <linux/fs.h>   /* RENAME_NOREPLACE */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include "memvisor/util.h"

#define TIMEOUT 1.0

struct dirlist {
	struct mv_map_dirent *ents;
	size_t n;
};

static void upper_name(uint64_t ino, char out[32]) { snprintf(out, 32, "%llx", (unsigned long long)ino); }

static void node_stat(struct mv_image_fs *fs, const struct mv_map_node *n, struct stat *st)
{
	static const mode_t fmt[] = { [MV_FT_REG] = S_IFREG, [MV_FT_DIR] = S_IFDIR,
				      [MV_FT_SYMLINK] = S_IFLNK, [MV_FT_CHAR] = S_IFCHR,
				      [MV_FT_BLOCK] = S_IFBLK, [MV_FT_FIFO] = S_IFIFO };
	memset(st, 0, sizeof(*st));
	st->st_ino = n->ino;
	st->st_mode = fmt[n->type] | n->mode;
	st->st_nlink = n->nlink;
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_rdev = makedev(n->devmajor, n->devminor);
	st->st_size = (off_t)(n->type == MV_FT_SYMLINK ? strlen(n->link) : n->size);
	st->st_mtime = st->st_ctime = st->st_atime = n->mtime;
	st->st_blksize = 4096;
	if (n->upper) {
		char nm[32];
		struct stat u;
		upper_name(n->ino, nm);
		if (!fstatat(fs->upper_fd, nm, &u, 0)) {
			st->st_size = u.st_size;
			st->st_mtim = st->st_ctim = u.st_mtim;
		}
	}
	st->st_blocks = (st->st_size + 511) / 512;
}

static void reply_node(fuse_req_t req, struct mv_image_fs *fs, const struct mv_map_node *n)
{
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	e.ino = n->ino;
	e.attr_timeout = e.entry_timeout = TIMEOUT;
	node_stat(fs, n, &e.attr);
	fuse_reply_entry(req, &e);
}

/* Gives ino a file in the writable directory with its current bytes (none
 * when truncating) and makes the container's row point there. */
static int copy_up(struct mv_image_fs *fs, struct mv_map_node *n, int truncate)
{
	if (n->upper)
		return 0;
	if (n->type != MV_FT_REG)
		return -EISDIR;
	char nm[32], tmp[48];
	upper_name(n->ino, nm);
	snprintf(tmp, sizeof(tmp), "%s.tmp", nm);
	struct handle h = { .fd = -1 };
	int rc = truncate ? 0 : fsf_file_chunks(fs, n, &h);
	if (rc < 0)
		return rc;
	int fd = openat(fs->upper_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		free(h.chunks);
		return -errno;
	}
	for (size_t i = 0; i < h.n && !rc; i++) {
		void *data;
		size_t len;
		if ((rc = fsf_chunk_data(fs, &h, i, &data, &len)) < 0)
			break;
		if (pwrite(fd, data, len, (off_t)(i * MV_MAPPING_CHUNK)) != (ssize_t)len)
			rc = -EIO;
		free(data);
	}
	free(h.chunks);
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	close(fd);
	if (!rc && renameat(fs->upper_fd, tmp, fs->upper_fd, nm) < 0)
		rc = -errno;
	if (rc < 0) {
		unlinkat(fs->upper_fd, tmp, 0);
		return rc;
	}
	n->upper = 1;
	n->layer = -1;
	if ((rc = mv_mapping_put(fs->map, fs->ctr, n)) < 0)
		return rc;
	bump(&fs->copy_ups, 1);
	return 0;
}

/* ---- operations ---- */

static struct mv_image_fs *FS(fuse_req_t req) { return fuse_req_userdata(req); }

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct mv_map_node n;
	int rc = mv_mapping_lookup(FS(req)->map, FS(req)->ctr, parent, name, &n);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_node(req, FS(req), &n);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	struct mv_map_node n;
	struct stat st;
	int rc = mv_mapping_get(FS(req)->map, FS(req)->ctr, ino, &n);
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	node_stat(FS(req), &n, &st);
	fuse_reply_attr(req, &st, TIMEOUT);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct mv_map_node n;
	int rc = mv_mapping_get(FS(req)->map, FS(req)->ctr, ino, &n);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else if (n.type != MV_FT_SYMLINK)
		fuse_reply_err(req, EINVAL);
	else
		fuse_reply_readlink(req, n.link);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dirlist *dl = calloc(1, sizeof(*dl));
	int rc = dl ? mv_mapping_readdir(FS(req)->map, FS(req)->ctr, ino, &dl->ents, &dl->n) : -ENOMEM;
	if (rc < 0) {
		free(dl);
		fuse_reply_err(req, -rc);
		return;
	}
	fi->fh = (uintptr_t)dl;
	fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	static const mode_t fmt[] = { [MV_FT_REG] = S_IFREG, [MV_FT_DIR] = S_IFDIR,
				      [MV_FT_SYMLINK] = S_IFLNK, [MV_FT_CHAR] = S_IFCHR,
				      [MV_FT_BLOCK] = S_IFBLK, [MV_FT_FIFO] = S_IFIFO };
	struct dirlist *dl = (struct dirlist *)(uintptr_t)fi->fh;
	char *buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	size_t used = 0;
	for (size_t i = (size_t)off; i < dl->n + 2; i++) {
		struct stat st;
		memset(&st, 0, sizeof(st));
		const char *name = i == 0 ? "." : i == 1 ? ".." : dl->ents[i - 2].name;
		st.st_ino = i < 2 ? ino : dl->ents[i - 2].ino;
		st.st_mode = i < 2 ? S_IFDIR : fmt[dl->ents[i - 2].type];
		size_t need = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)(i + 1));
		if (need > size - used)
			break;
		used += need;
	}
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct dirlist *dl = (struct dirlist *)(uintptr_t)fi->fh;
	free(dl->ents);
	free(dl);
	fuse_reply_err(req, 0);
}

static int open_upper(struct mv_image_fs *fs, uint64_t ino, int flags)
{
	char nm[32];
	upper_name(ino, nm);
	int fd = openat(fs->upper_fd, nm, (flags & (O_ACCMODE | O_TRUNC | O_APPEND)) | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* After an open or create that made h: on rc < 0 frees it and answers the
 * error (false); else makes it fi's handle, its chunk slots empty. */
static bool handle_attach(fuse_req_t req, struct fuse_file_info *fi, struct handle *h, int rc)
{
	if (rc < 0) {
		free(h);
		fuse_reply_err(req, -rc);
		return false;
	}
	for (int i = 0; i < HANDLE_SLOTS; i++)
		h->slot[i].idx = SIZE_MAX;
	fi->fh = (uintptr_t)h;
	return true;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mv_image_fs *fs = FS(req);
	struct mv_map_node n;
	struct handle *h = calloc(1, sizeof(*h));
	int rc = h ? mv_mapping_get(fs->map, fs->ctr, ino, &n) : -ENOMEM;
	if (!rc && n.type != MV_FT_REG)
		rc = -EINVAL;
	int writing = (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);
	if (!rc && writing)
		rc = copy_up(fs, &n, fi->flags & O_TRUNC);
	if (!rc) {
		h->fd = -1;
		h->size = n.size;
		if (n.upper)
			rc = h->fd = open_upper(fs, n.ino, fi->flags);
		else
			rc = fsf_file_chunks(fs, &n, h);
	}
	if (!handle_attach(req, fi, h, rc))
		return;
	fi->keep_cache = h->fd < 0;   /* a layer file's bytes never change */
	fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)ino;
	struct mv_image_fs *fs = FS(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ssize_t got = 0;
	if (h->fd >= 0) {
		got = pread(h->fd, buf, size, off);
		if (got < 0)
			got = -errno;
	} else {
		uint64_t end = (uint64_t)off + size < h->size ? (uint64_t)off + size : h->size;
		for (uint64_t pos = (uint64_t)off; pos < end;) {
			size_t ci = (size_t)(pos / MV_MAPPING_CHUNK);
			struct slot *sl = &h->slot[0];
			for (int i = 0; i < HANDLE_SLOTS; i++) {
				if (h->slot[i].idx == ci) {
					sl = &h->slot[i];
					break;
				}
				if (h->slot[i].used < sl->used)
					sl = &h->slot[i];
			}
			if (sl->idx != ci) {
				free(sl->data);
				sl->data = NULL;
				sl->idx = SIZE_MAX;
				int rc = fsf_chunk_data(fs, h, ci, &sl->data, &sl->len);
				if (rc < 0) {
					got = rc;
					break;
				}
				bump(&fs->chunk_reads, 1);
				if (h->src != fs->cs)
					bump(&fs->cache_hit_bytes, sl->len);
				sl->idx = ci;
			}
			sl->used = ++h->tick;
			size_t in = (size_t)(pos % MV_MAPPING_CHUNK);
			if (in >= sl->len) {
				got = -EIO;
				break;
			}
			size_t n = end - pos < sl->len - in ? (size_t)(end - pos) : sl->len - in;
			memcpy(buf + (pos - (uint64_t)off), (uint8_t *)sl->data + in, n);
			pos += n;
			got += (ssize_t)n;
		}
	}
	if (got < 0)
		fuse_reply_err(req, (int)-got);
	else
		fuse_reply_buf(req, (char *)buf, (size_t)got);
	free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	ssize_t n = h->fd >= 0 ? pwrite(h->fd, buf, size, off) : (errno = EBADF, -1);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, (size_t)n);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	if (h->fd >= 0)
		close(h->fd);
	free(h->chunks);
	for (int i = 0; i < HANDLE_SLOTS; i++)
		free(h->slot[i].data);
	free(h);
	fuse_reply_err(req, 0);
}

/* A new node of ctr's own in parent (fresh inode number). */
static int new_node(fuse_req_t req, fuse_ino_t parent, const char *name, enum mv_file_type type,
		    mode_t mode, struct mv_map_node *n)
{
	struct mv_image_fs *fs = FS(req);
	const struct fuse_ctx *cx = fuse_req_ctx(req);
	if (strlen(name) > MV_MAPPING_NAME_MAX)
		return -ENAMETOOLONG;
	int rc = mv_mapping_lookup(fs->map, fs->ctr, parent, name, n);
	if (rc != -ENOENT)
		return rc < 0 ? rc : -EEXIST;
	memset(n, 0, sizeof(*n));
	if ((rc = mv_mapping_new_ino(fs->map, fs->ctr, &n->ino)) < 0)
		return rc;
	n->parent = parent;
	snprintf(n->name, sizeof(n->name), "%s", name);
	n->type = type;
	n->mode = mode & 07777 & ~cx->umask;
	n->uid = cx->uid;
	n->gid = cx->gid;
	n->nlink = 1;
	n->mtime = (int64_t)mv_wall_s();
	n->layer = -1;
	n->upper = type == MV_FT_REG;
	return 0;
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct mv_image_fs *fs = FS(req);
	struct mv_map_node n;
	struct handle *h = calloc(1, sizeof(*h));
	int rc = h ? new_node(req, parent, name, MV_FT_REG, mode, &n) : -ENOMEM;
	char nm[32];
	if (!rc) {
		upper_name(n.ino, nm);
		int fd = openat(fs->upper_fd, nm, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		rc = fd < 0 ? -errno : 0;
		h->fd = fd;
	}
	if (!rc && (rc = mv_mapping_put(fs->map, fs->ctr, &n)) < 0)
		close(h->fd);
	if (!handle_attach(req, fi, h, rc))
		return;
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	e.ino = n.ino;
	e.attr_timeout = e.entry_timeout = TIMEOUT;
	node_stat(fs, &n, &e.attr);
	fuse_reply_create(req, &e, fi);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct mv_map_node n;
	int rc = new_node(req, parent, name, MV_FT_DIR, mode, &n);
	if (!rc)
		rc = mv_mapping_put(FS(req)->map, FS(req)->ctr, &n);
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_node(req, FS(req), &n);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct mv_map_node n;
	int rc = strlen(link) >= sizeof(n.link) ? -ENAMETOOLONG :
		 new_node(req, parent, name, MV_FT_SYMLINK, 0777, &n);
	if (!rc) {
		n.mode = 0777;
		snprintf(n.link, sizeof(n.link), "%s", link);
		rc = mv_mapping_put(FS(req)->map, FS(req)->ctr, &n);
	}
	if (rc < 0)
		fuse_reply_err(req, -rc);
	else
		reply_node(req, FS(req), &n);
}

/* Drops parent/name from the view; an own upper file with no other name goes. */
static int remove_node(struct mv_image_fs *fs, fuse_ino_t parent, const char *name,
		       const struct mv_map_node *n)
{
	int rc = mv_mapping_remove(fs->map, fs->ctr, parent, name);
	if (!rc && n->upper && n->nlink <= 1) {
		char nm[32];
		upper_name(n->ino, nm);
		unlinkat(fs->upper_fd, nm, 0);
	}
	return rc;
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct mv_map_node n;
	int rc = mv_mapping_lookup(FS(req)->map, FS(req)->ctr, parent, name, &n);
	if (!rc)
		rc = n.type == MV_FT_DIR ? -EISDIR : remove_node(FS(req), parent, name, &n);
	fuse_reply_err(req, -rc);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct mv_image_fs *fs = FS(req);
	struct mv_map_node n;
	struct mv_map_dirent *ents = NULL;
	size_t k = 0;
	int rc = mv_mapping_lookup(fs->map, fs->ctr, parent, name, &n);
	if (!rc && n.type != MV_FT_DIR)
		rc = -ENOTDIR;
	if (!rc && !(rc = mv_mapping_readdir(fs->map, fs->ctr, n.ino, &ents, &k)) && k)
		rc = -ENOTEMPTY;
	free(ents);
	if (!rc)
		rc = remove_node(fs, parent, name, &n);
	fuse_reply_err(req, -rc);
}

/* Is dir an ancestor of (or equal to) ino? A directory cannot move under
 * itself. Rows name their parent's inode, so the walk is one get per level. */
static int is_ancestor(struct mv_image_fs *fs, uint64_t dir, uint64_t ino)
{
	for (int depth = 0; depth < MV_TAR_MAX_PATH; depth++) {
		struct mv_map_node p;
		if (ino == dir)
			return 1;
		if (ino == MV_MAPPING_ROOT || mv_mapping_get(fs->map, fs->ctr, ino, &p) < 0)
			return 0;
		ino = p.parent;
	}
	return 1;   /* a loop in the table: refuse the move */
}

/* Moves one row: children point at their directory's inode, not its path,
 * so renaming a directory moves its whole subtree with it. */
static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct mv_image_fs *fs = FS(req);
	struct mv_map_node n, old;
	struct mv_map_dirent *ents = NULL;
	size_t k = 0;
	int rc = flags & ~RENAME_NOREPLACE ? -EINVAL : mv_mapping_lookup(fs->map, fs->ctr, parent, name, &n);
	if (!rc && strlen(newname) > MV_MAPPING_NAME_MAX)
		rc = -ENAMETOOLONG;
	if (!rc && n.type == MV_FT_DIR && is_ancestor(fs, n.ino, newparent))
		rc = -EINVAL;
	if (!rc && !(rc = mv_mapping_lookup(fs->map, fs->ctr, newparent, newname, &old))) {
		if (flags & RENAME_NOREPLACE)
			rc = -EEXIST;
		else if (old.ino == n.ino) {
			fuse_reply_err(req, 0);   /* two links of one file: rename does nothing */
			return;
		} else if (old.type == MV_FT_DIR && n.type != MV_FT_DIR)
			rc = -EISDIR;
		else if (old.type != MV_FT_DIR && n.type == MV_FT_DIR)
			rc = -ENOTDIR;
		else if (old.type == MV_FT_DIR &&
			 !(rc = mv_mapping_readdir(fs->map, fs->ctr, old.ino, &ents, &k)) && k)
			rc = -ENOTEMPTY;
		if (!rc)
			rc = remove_node(fs, newparent, newname, &old);
	} else if (rc == -ENOENT) {
		rc = 0;
	}
	free(ents);
	if (!rc) {
		n.parent = newparent;
		snprintf(n.name, sizeof(n.name), "%s", newname);
		if (!(rc = mv_mapping_put(fs->map, fs->ctr, &n)))
			rc = mv_mapping_remove(fs->map, fs->ctr, parent, name);
	}
	fuse_reply_err(req, -rc);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct mv_image_fs *fs = FS(req);
	struct mv_map_node n;
	char nm[32];
	int rc = mv_mapping_get(fs->map, fs->ctr, ino, &n);
	if (!rc && (to_set & FUSE_SET_ATTR_SIZE)) {
		if (n.type != MV_FT_REG)
			rc = -EISDIR;
		else if (!(rc = copy_up(fs, &n, attr->st_size == 0))) {
			upper_name(n.ino, nm);
			struct handle *h = fi ? (struct handle *)(uintptr_t)fi->fh : NULL;
			int fd = h && h->fd >= 0 ? h->fd : openat(fs->upper_fd, nm, O_WRONLY | O_CLOEXEC);
			if (fd < 0 || ftruncate(fd, attr->st_size) < 0)
				rc = -errno;
			if (fd >= 0 && !(h && h->fd == fd))
				close(fd);
		}
	}
	if (!rc && (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
			      FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW))) {
		if (to_set & FUSE_SET_ATTR_MODE)
			n.mode = attr->st_mode & 07777;
		if (to_set & FUSE_SET_ATTR_UID)
			n.uid = attr->st_uid;
		if (to_set & FUSE_SET_ATTR_GID)
			n.gid = attr->st_gid;
		if (to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) {
			n.mtime = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? (int64_t)mv_wall_s() : attr->st_mtime;
			if (n.upper) {
				struct timespec ts[2] = { { 0, UTIME_OMIT }, { n.mtime, 0 } };
				upper_name(n.ino, nm);
				utimensat(fs->upper_fd, nm, ts, 0);
			}
		}
		rc = mv_mapping_put(fs->map, fs->ctr, &n);   /* a metadata-only copy-up */
	}
	struct stat st;
	if (rc < 0) {
		fuse_reply_err(req, -rc);
		return;
	}
	node_stat(fs, &n, &st);
	fuse_reply_attr(req, &st, TIMEOUT);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = op_lookup, .getattr = op_getattr, .readlink = op_readlink,
	.opendir = op_opendir, .readdir = op_readdir, .releasedir = op_releasedir,
	.open = op_open, .read = op_read, .write = op_write, .release = op_release,
	.create = op_create, .mkdir = op_mkdir, .symlink = op_symlink, .unlink = op_unlink,
	.rmdir = op_rmdir, .rename = op_rename, .setattr = op_setattr,
};

/* ---- mount, thread, unmount ---- */

static void *loop(void *arg)
{
	struct mv_image_fs *fs = arg;
	fuse_session_loop(fs->se);
	return NULL;
}

static void fs_free(struct mv_image_fs *fs)
{
	if (fs->se)
		fuse_session_destroy(fs->se);
	for (size_t i = 0; fs->idx && i < fs->n_layers; i++)
		mv_layer_index_free(fs->idx[i]);
	free(fs->idx);
	free(fs->blobs);
	if (fs->upper_fd >= 0)
		close(fs->upper_fd);
	mv_mapping_close(fs->map);
	mv_chunkstore_close(fs->cs);
	mvc_cache_close(fs->cache);
	if (fs->reg)
		mv_registry_close(fs->reg);
	free(fs);
}

int mv_image_fs_mount(const char *dir, const struct mv_image_fs_config *cfg,
		      struct mv_image_fs **out, struct mv_error **err)
{
	struct mv_image_fs *fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->upper_fd = -1;
	int64_t image;
	int rc;
	char path[4096], hex[MV_DIGEST_STRLEN];
	if ((rc = mv_mapping_open(cfg->mapping_db, &fs->map, err)) < 0)
		goto fail;
	if ((rc = mv_mapping_find_image(fs->map, cfg->image, &image)) < 0) {
		rc = mv_err(err, rc, "image fs: no image %s in the mapping table", cfg->image);
		goto fail;
	}
	if ((rc = mv_mapping_add_container(fs->map, image, cfg->container, &fs->ctr, err)) < 0 ||
	    (rc = mv_mapping_image_layers(fs->map, image, &fs->blobs, &fs->n_layers, err)) < 0 ||
	    (rc = mv_chunkstore_open(cfg->store_dir, &fs->cs, err)) < 0 ||
	    (rc = mv_registry_open(cfg->registry_url, cfg->repo, &fs->reg, err)) < 0)
		goto fail;
	snprintf(fs->refname, sizeof(fs->refname), "container-%lld", (long long)fs->ctr);
	fs->idx = calloc(fs->n_layers ? fs->n_layers : 1, sizeof(*fs->idx));
	if (!fs->idx) {
		rc = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < fs->n_layers; i++) {
		snprintf(path, sizeof(path), "%s/indexes/%s.idx", cfg->store_dir,
			 mv_digest_format(&fs->blobs[i], hex) + 7);
		if ((rc = mv_layer_index_load(path, &fs->idx[i], err)) < 0)
			goto fail;
		if (!mv_digest_equal(mv_layer_index_blob_digest(fs->idx[i]), &fs->blobs[i])) {
			rc = mv_err(err, -EBADMSG, "image fs: index %s is for another blob", path);
			goto fail;
		}
	}
	if (cfg->cache_dir) {
		struct mv_error *e = NULL;
		if ((rc = mvc_cache_open_ro(cfg->cache_dir, &fs->cache, &e)) < 0)
			mv_log(MV_LOG_INFO, "image fs: no shared cache: %s", mv_error_msg(e, rc));
		mv_error_free(e);
	}
	if ((rc = mv_mkdir_p(cfg->upper_dir, 0700)) < 0 ||
	    (fs->upper_fd = open(cfg->upper_dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC)) < 0) {
		rc = mv_err(err, rc < 0 ? rc : -errno, "image fs: writable dir %s", cfg->upper_dir);
		goto fail;
	}
	char *argv[] = { "memvisor-image", "-o", "default_permissions,fsname=memvisor,subtype=memvisor", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, argv);
	fs->se = fuse_session_new(&args, &ops, sizeof(ops), fs);
	fuse_opt_free_args(&args);   /* parsing may have copied argv */
	if (!fs->se) {
		rc = mv_err(err, -EINVAL, "image fs: fuse_session_new failed");
		goto fail;
	}
	if (fuse_session_mount(fs->se, dir) != 0) {
		rc = mv_err(err, -EIO, "image fs: mounting on %s failed (is /dev/fuse usable?)", dir);
		goto fail;
	}
	if ((rc = -pthread_create(&fs->thread, NULL, loop, fs)) < 0) {
		fuse_session_unmount(fs->se);
		rc = mv_err(err, rc, "image fs: thread");
		goto fail;
	}
	fs->running = 1;
	*out = fs;
	return 0;
fail:
	fs_free(fs);
	return rc;
}

void mv_image_fs_unmount(struct mv_image_fs *fs)
{
	if (!fs)
		return;
	if (fs->running) {
		/* Unmounting ends the kernel connection, which ends the loop (it
		 * may have ended already after fusermount3 -u). */
		fuse_session_exit(fs->se);
		fuse_session_unmount(fs->se);
		pthread_join(fs->thread, NULL);
	}
	fs_free(fs);
}

void mv_image_fs_stats(struct mv_image_fs *fs, struct mv_image_fs_stats *out)
{
	out->registry_bytes = __atomic_load_n(&fs->reg_bytes, __ATOMIC_RELAXED);
	out->registry_requests = __atomic_load_n(&fs->reg_reqs, __ATOMIC_RELAXED);
	out->files_fetched = __atomic_load_n(&fs->fetched, __ATOMIC_RELAXED);
	out->chunk_reads = __atomic_load_n(&fs->chunk_reads, __ATOMIC_RELAXED);
	out->copy_ups = __atomic_load_n(&fs->copy_ups, __ATOMIC_RELAXED);
	out->cache_hits = __atomic_load_n(&fs->cache_hits, __ATOMIC_RELAXED);
	out->cache_misses = __atomic_load_n(&fs->cache_misses, __ATOMIC_RELAXED);
	out->cache_hit_bytes = __atomic_load_n(&fs->cache_hit_bytes, __ATOMIC_RELAXED);
}

int mv_image_fs_stats_json(const struct mv_image_fs_stats *st, char *buf, size_t len)
{
	return snprintf(buf, len,
			"{\"registry_bytes\":%llu,\"registry_requests\":%llu,\"files_fetched\":%llu,"
			"\"chunk_reads\":%llu,\"copy_ups\":%llu,\"cache_hits\":%llu,"
			"\"cache_misses\":%llu,\"cache_hit_bytes\":%llu}\n",
			(unsigned long long)st->registry_bytes, (unsigned long long)st->registry_requests,
			(unsigned long long)st->files_fetched, (unsigned long long)st->chunk_reads,
			(unsigned long long)st->copy_ups, (unsigned long long)st->cache_hits,
			(unsigned long long)st->cache_misses, (unsigned long long)st->cache_hit_bytes);
}
