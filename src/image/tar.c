/* Streaming tar parser for OCI layers: ustar, GNU long names/links ('L',
 * 'K'), base-256 sizes and PAX extended headers (path, linkpath, size, uid,
 * gid, mtime). Fed the uncompressed stream in pieces of any size, it reports
 * each member with the offset of its data. Hostile input is refused with a
 * clear error: bad checksums, ".." or absolute paths, absurd sizes,
 * oversized extended headers, unknown member types, truncation. Used by
 * layer_index.c and the image_tar fuzz target. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "memvisor/image.h"

#define BLK 512
#define MAX_EXT (1u << 20)   /* PAX / GNU long-name payloads */

enum tar_state { ST_HEADER, ST_DATA, ST_EXT, ST_END };

struct mv_tar {
	mv_tar_cb cb;
	void *ctx;
	enum tar_state st;
	uint64_t off;            /* bytes consumed so far */
	uint8_t hdr[BLK];
	size_t hdr_have;
	uint64_t skip;           /* ST_DATA: bytes left to skip (data + padding) */
	char ext_type;           /* ST_EXT: 'x', 'g', 'L' or 'K' */
	char *ext;
	size_t ext_have, ext_size, ext_pad;
	unsigned zero_blocks;
	/* Overrides for the next member from PAX / GNU headers. */
	char *long_path, *long_link;
	int has_size, has_uid, has_gid, has_mtime;
	uint64_t pax_size, pax_uid, pax_gid;
	int64_t pax_mtime;
	char path[MV_TAR_MAX_PATH + 1];
	char link[MV_TAR_MAX_PATH + 1];
};

struct mv_tar *mv_tar_new(mv_tar_cb cb, void *ctx)
{
	struct mv_tar *t = calloc(1, sizeof(*t));
	if (!t)
		abort();
	t->cb = cb;
	t->ctx = ctx;
	return t;
}

static void clear_overrides(struct mv_tar *t)
{
	free(t->long_path);
	free(t->long_link);
	t->long_path = t->long_link = NULL;
	t->has_size = t->has_uid = t->has_gid = t->has_mtime = 0;
}

void mv_tar_free(struct mv_tar *t)
{
	if (!t)
		return;
	clear_overrides(t);
	free(t->ext);
	free(t);
}

int mv_tar_normalize_path(char *path)
{
	char *w = path;
	const char *r = path;
	if (*r == '/')
		return -EINVAL;
	while (*r) {
		while (*r == '/')
			r++;
		const char *e = r;
		while (*e && *e != '/')
			e++;
		size_t n = (size_t)(e - r);
		if (n == 2 && r[0] == '.' && r[1] == '.')
			return -EINVAL;
		if (n && !(n == 1 && r[0] == '.')) {
			if (w != path)
				*w++ = '/';
			memmove(w, r, n);
			w += n;
		}
		r = e;
	}
	*w = 0;
	return 0;
}

/* Octal (NUL/space terminated, leading spaces) or GNU base-256. */
static int num_field(const uint8_t *f, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;
	if (f[0] & 0x80) {
		if (f[0] != 0x80)
			return -EINVAL;   /* negative or > 2^63: absurd either way */
		for (i = 1; i < n; i++) {
			if (v >> 55)
				return -EINVAL;
			v = (v << 8) | f[i];
		}
		*out = v;
		return 0;
	}
	while (i < n && f[i] == ' ')
		i++;
	size_t digits = 0;
	for (; i < n && f[i] >= '0' && f[i] <= '7'; i++, digits++) {
		if (v >> 60)
			return -EINVAL;
		v = v * 8 + (uint64_t)(f[i] - '0');
	}
	for (; i < n; i++)
		if (f[i] != ' ' && f[i] != 0)
			return -EINVAL;
	*out = v;
	return 0;
}

static int all_zero(const uint8_t *b)
{
	for (size_t i = 0; i < BLK; i++)
		if (b[i])
			return 0;
	return 1;
}

static char *dup_field(const uint8_t *f, size_t n)
{
	size_t l = strnlen((const char *)f, n);
	char *s = malloc(l + 1);
	if (!s)
		abort();
	memcpy(s, f, l);
	s[l] = 0;
	return s;
}

static int parse_pax(struct mv_tar *t, struct mv_error **err)
{
	size_t p = 0;
	while (p < t->ext_size) {
		size_t len = 0, q = p;
		while (q < t->ext_size && t->ext[q] >= '0' && t->ext[q] <= '9' && len < MAX_EXT)
			len = len * 10 + (size_t)(t->ext[q++] - '0');
		if (q == p || q >= t->ext_size || t->ext[q] != ' ' || len < 5 || len > t->ext_size - p ||
		    t->ext[p + len - 1] != '\n')
			return mv_err(err, -EBADMSG, "tar: malformed PAX record at %zu", p);
		char *kv = t->ext + q + 1, *end = t->ext + p + len - 1;
		char *eq = memchr(kv, '=', (size_t)(end - kv));
		if (!eq)
			return mv_err(err, -EBADMSG, "tar: PAX record without '='");
		*eq = 0;
		*end = 0;
		const char *val = eq + 1;
		size_t vlen = (size_t)(end - val);
		if (t->ext_type == 'x') {
			if (!strcmp(kv, "path") || !strcmp(kv, "linkpath")) {
				if (strlen(val) != vlen || vlen > MV_TAR_MAX_PATH)
					return mv_err(err, -EBADMSG, "tar: PAX %s too long or has NUL", kv);
				char **dst = kv[0] == 'p' ? &t->long_path : &t->long_link;
				free(*dst);
				if (!(*dst = strdup(val)))
					abort();
			} else if (!strcmp(kv, "size") || !strcmp(kv, "uid") || !strcmp(kv, "gid") ||
				   !strcmp(kv, "mtime")) {
				uint64_t v = 0;
				const char *c = val;
				for (; *c >= '0' && *c <= '9'; c++) {
					if (v > (UINT64_MAX - 9) / 10)
						return mv_err(err, -EBADMSG, "tar: PAX %s overflows", kv);
					v = v * 10 + (uint64_t)(*c - '0');
				}
				if (c == val || (*c && !(kv[0] == 'm' && *c == '.')))
					return mv_err(err, -EBADMSG, "tar: PAX %s is not a number", kv);
				if (kv[0] == 's')
					t->has_size = 1, t->pax_size = v;
				else if (kv[0] == 'u')
					t->has_uid = 1, t->pax_uid = v;
				else if (kv[0] == 'g')
					t->has_gid = 1, t->pax_gid = v;
				else
					t->has_mtime = 1, t->pax_mtime = (int64_t)(v > INT64_MAX ? INT64_MAX : v);
			}
			/* Other keys (atime, xattrs, charset...) do not change the tree. */
		}
		p += len;
	}
	return 0;
}

static int finish_ext(struct mv_tar *t, struct mv_error **err)
{
	t->ext[t->ext_size] = 0;
	if (t->ext_type == 'L' || t->ext_type == 'K') {
		size_t l = strnlen(t->ext, t->ext_size);
		if (l == 0 || l > MV_TAR_MAX_PATH)
			return mv_err(err, -EBADMSG, "tar: GNU long %s empty or too long",
				      t->ext_type == 'L' ? "name" : "link");
		char **dst = t->ext_type == 'L' ? &t->long_path : &t->long_link;
		free(*dst);
		if (!(*dst = strdup(t->ext)))
			abort();
		return 0;
	}
	return parse_pax(t, err);
}

static int header(struct mv_tar *t, struct mv_error **err)
{
	const uint8_t *h = t->hdr;
	uint64_t data_off = t->off;   /* t->off already counts this header */
	if (all_zero(h)) {
		if (++t->zero_blocks == 2)
			t->st = ST_END;
		return 0;
	}
	if (t->zero_blocks)
		return mv_err(err, -EBADMSG, "tar: lone zero block before offset %llu",
			      (unsigned long long)data_off);
	uint64_t sum = 0, want;
	long ssum = 0;
	for (size_t i = 0; i < BLK; i++) {
		uint8_t c = (i >= 148 && i < 156) ? ' ' : h[i];
		sum += c;
		ssum += (signed char)c;
	}
	if (num_field(h + 148, 8, &want) < 0 || (want != sum && (long)want != ssum))
		return mv_err(err, -EBADMSG, "tar: bad header checksum at offset %llu",
			      (unsigned long long)(data_off - BLK));
	uint64_t size, mode, uid, gid, mtime, dmaj = 0, dmin = 0;
	if (num_field(h + 124, 12, &size) < 0 || num_field(h + 100, 8, &mode) < 0 ||
	    num_field(h + 108, 8, &uid) < 0 || num_field(h + 116, 8, &gid) < 0 ||
	    num_field(h + 136, 12, &mtime) < 0)
		return mv_err(err, -EBADMSG, "tar: bad numeric field at offset %llu",
			      (unsigned long long)(data_off - BLK));
	char type = (char)h[156];
	int ustar = !memcmp(h + 257, "ustar", 5);
	if (type == 'x' || type == 'g' || type == 'L' || type == 'K') {
		if (size > MAX_EXT)
			return mv_err(err, -EFBIG, "tar: extended header of %llu bytes",
				      (unsigned long long)size);
		free(t->ext);
		if (!(t->ext = malloc(size + 1)))
			abort();
		t->ext_type = type;
		t->ext_size = size;
		t->ext_have = 0;
		t->ext_pad = (size_t)((((size) + 511) & ~(uint64_t)511) - size);
		t->st = ST_EXT;
		return 0;
	}
	if (t->has_size)
		size = t->pax_size;
	enum mv_file_type ft;
	switch (type) {
	case '0': case '\0': case '7': ft = MV_FT_REG; break;
	case '1': ft = MV_FT_HARDLINK; break;
	case '2': ft = MV_FT_SYMLINK; break;
	case '3': ft = MV_FT_CHAR; break;
	case '4': ft = MV_FT_BLOCK; break;
	case '5': ft = MV_FT_DIR; break;
	case '6': ft = MV_FT_FIFO; break;
	default:
		return mv_err(err, -ENOTSUP, "tar: unsupported member type '%c' (0x%02x)",
			      type >= 32 && type < 127 ? type : '?', (unsigned char)type);
	}
	if (ft == MV_FT_REG && size > MV_TAR_MAX_FILE)
		return mv_err(err, -EFBIG, "tar: member of %llu bytes (limit %llu)",
			      (unsigned long long)size, (unsigned long long)MV_TAR_MAX_FILE);
	if ((ft == MV_FT_CHAR || ft == MV_FT_BLOCK) && ustar &&
	    (num_field(h + 329, 8, &dmaj) < 0 || num_field(h + 337, 8, &dmin) < 0))
		return mv_err(err, -EBADMSG, "tar: bad device numbers");
	/* Path: PAX/GNU override, else ustar prefix + name. */
	if (t->long_path) {
		snprintf(t->path, sizeof(t->path), "%s", t->long_path);
	} else {
		char *name = dup_field(h, 100), *prefix = ustar ? dup_field(h + 345, 155) : NULL;
		if (prefix && *prefix && !memcmp(h + 257, "ustar\0", 6))
			snprintf(t->path, sizeof(t->path), "%s/%s", prefix, name);
		else
			snprintf(t->path, sizeof(t->path), "%s", name);
		free(name);
		free(prefix);
	}
	if (t->long_link) {
		snprintf(t->link, sizeof(t->link), "%s", t->long_link);
	} else {
		char *l = dup_field(h + 157, 100);
		snprintf(t->link, sizeof(t->link), "%s", l);
		free(l);
	}
	size_t plen = strlen(t->path);
	if (ft == MV_FT_REG && type != '7' && plen && t->path[plen - 1] == '/')
		ft = MV_FT_DIR;   /* old tars mark directories only by the slash */
	if (mv_tar_normalize_path(t->path) < 0)
		return mv_err(err, -EINVAL, "tar: refused path \"%.200s\" (absolute or has \"..\")",
			      t->path);
	if (ft == MV_FT_HARDLINK && (mv_tar_normalize_path(t->link) < 0 || !t->link[0]))
		return mv_err(err, -EINVAL, "tar: hard link \"%.200s\" to a refused target",
			      t->path);
	if (ft == MV_FT_SYMLINK && !t->link[0])
		return mv_err(err, -EINVAL, "tar: symlink \"%.200s\" with an empty target", t->path);
	if (ft != MV_FT_SYMLINK && ft != MV_FT_HARDLINK)
		t->link[0] = 0;
	if (ft != MV_FT_REG)
		size = 0;   /* as tar readers do: only regular members carry data */
	struct mv_tar_entry e = {
		.path = t->path, .link = t->link, .type = ft, .mode = (uint32_t)(mode & 07777),
		.uid = (uint32_t)(t->has_uid ? t->pax_uid : uid),
		.gid = (uint32_t)(t->has_gid ? t->pax_gid : gid),
		.devmajor = (uint32_t)dmaj, .devminor = (uint32_t)dmin,
		.mtime = t->has_mtime ? t->pax_mtime : (int64_t)mtime, .size = size,
		.data_off = data_off,
	};
	clear_overrides(t);
	int rc = 0;
	if (!t->path[0]) {
		if (ft != MV_FT_DIR)
			return mv_err(err, -EINVAL, "tar: non-directory member with an empty path");
	} else if ((rc = t->cb(t->ctx, &e)) < 0) {
		return rc;
	}
	t->skip = (((size) + 511) & ~(uint64_t)511);
	t->st = t->skip ? ST_DATA : ST_HEADER;
	return 0;
}

int mv_tar_feed(struct mv_tar *t, const void *data, size_t len, struct mv_error **err)
{
	const uint8_t *p = data;
	int rc;
	while (len) {
		size_t n;
		switch (t->st) {
		case ST_END:
			t->off += len;   /* trailing padding after the end blocks */
			return 0;
		case ST_HEADER:
			n = BLK - t->hdr_have < len ? BLK - t->hdr_have : len;
			memcpy(t->hdr + t->hdr_have, p, n);
			t->hdr_have += n;
			t->off += n;
			p += n;
			len -= n;
			if (t->hdr_have == BLK) {
				t->hdr_have = 0;
				if ((rc = header(t, err)) < 0)
					return rc;
			}
			break;
		case ST_DATA:
			n = t->skip < len ? (size_t)t->skip : len;
			t->skip -= n;
			t->off += n;
			p += n;
			len -= n;
			if (!t->skip)
				t->st = ST_HEADER;
			break;
		case ST_EXT:
			if (t->ext_have < t->ext_size) {
				n = t->ext_size - t->ext_have < len ? t->ext_size - t->ext_have : len;
				memcpy(t->ext + t->ext_have, p, n);
				t->ext_have += n;
			} else {
				n = t->ext_pad < len ? t->ext_pad : len;
				t->ext_pad -= n;
			}
			t->off += n;
			p += n;
			len -= n;
			if (t->ext_have == t->ext_size && !t->ext_pad) {
				t->st = ST_HEADER;
				if ((rc = finish_ext(t, err)) < 0)
					return rc;
			}
			break;
		}
	}
	return 0;
}

int mv_tar_finish(struct mv_tar *t, struct mv_error **err)
{
	/* EOF right after a member (no end blocks) is accepted, as GNU tar does. */
	if (t->st == ST_END || (t->st == ST_HEADER && t->hdr_have == 0 && !t->long_path &&
				!t->long_link && !t->has_size))
		return 0;
	return mv_err(err, -EBADMSG, "tar: stream truncated at offset %llu",
		      (unsigned long long)t->off);
}
