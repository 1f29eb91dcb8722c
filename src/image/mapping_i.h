/* Private to src/image: the mapping database handle shared by mapping.c
 * (open, queries, container rows) and mapping_build.c (image rows). */
#ifndef MV_IMAGE_MAPPING_I_H
#define MV_IMAGE_MAPPING_I_H

#include <sqlite3.h>
#include "memvisor/image.h"

enum {
	S_LOOKUP, S_GET, S_READDIR, S_CHUNKS, S_SETCHUNKS, S_CTRCHUNK, S_PUT, S_DEL, S_IMGROW,
	S_MARK, S_NEWINO, S_COUNT
};

struct mv_mapping {
	sqlite3 *db;
	sqlite3_stmt *st[S_COUNT];
	int64_t image_of_ctr_id, image_of_ctr;   /* last container resolved */
};

/* An SQLite failure as a negative errno with the database's message. */
int mapping_db_err(struct mv_mapping *m, struct mv_error **err, const char *what);
int mapping_exec(struct mv_mapping *m, const char *sql, struct mv_error **err);

#endif
