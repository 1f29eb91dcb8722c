/* The migration stream codec (private to src/migrate, reached by its unit
 * test): frame headers, every section's payload encoder and validating
 * decoder over byte buffers, and the order of sections a receiver accepts.
 * No I/O here: wire.c moves frames over a socket; send.c, recv.c and
 * check.c drive the codec. Format: docs/formats/migration.md. */
#ifndef MV_MIGRATE_STREAM_I_H
#define MV_MIGRATE_STREAM_I_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "memvisor/migrate.h"

enum mig_type {
	/* source -> destination */
	MIG_HEADER = 1,
	MIG_CONFIG = 2,
	MIG_RAM = 3,
	MIG_VCPU = 4,
	MIG_DEVICE = 5,
	MIG_DISCARD = 6,   /* post-copy: pages the destination must drop */
	MIG_POSTCOPY = 7,  /* switch-over: the destination starts the vCPUs */
	MIG_COMPLETE = 8,  /* end marker with totals */
	MIG_SYNC = 9,      /* pre-copy pass barrier: answer with SYNCED once applied */
	/* destination -> source */
	MIG_READY = 16,
	MIG_PAGE_REQ = 17,
	MIG_RUNNING = 18,  /* post-copy: vCPUs started at the destination */
	MIG_ACK = 19,
	MIG_NACK = 20,
	MIG_SYNCED = 21,   /* every page before SYNC is in guest RAM */
};

enum mig_enc { MIG_ENC_ZERO = 0, MIG_ENC_RAW = 1, MIG_ENC_ZSTD = 2, MIG_ENC__COUNT };

#define MIG_HEADER_LEN 16u
#define MIG_CONFIG_LEN (64u + 8u + MV_MEM_MAX_REGIONS * 24u + 40u)   /* without a tenant block */
#define MIG_TENANT_HDR 16u
#define MIG_SPAN_LEN 16u   /* a tenant block span: gpa u64, len u64 */
#define MIG_CONFIG_MAX (MIG_CONFIG_LEN + MIG_TENANT_HDR + \
			(MV_MIGRATE_MAX_SENSITIVE + MV_MIGRATE_MAX_KEEP) * MIG_SPAN_LEN)
#define MIG_WL_STATE_LEN 112u
#define MIG_PAGE_ENTRY_LEN 16u
#define MIG_COMPLETE_LEN 24u
#define MIG_READY_LEN 8u
#define MIG_SYNC_LEN 8u
#define MIG_NACK_MAX_MSG 440u
#define MIG_MAX_GPAS ((MV_MIGRATE_MAX_PAYLOAD - 8u) / 8u)   /* DISCARD / PAGE_REQ */
#define MIG_MAX_DEVICE_BLOB (1u << 20)
/* Worst-case RAM payload: a full batch of raw pages. */
#define MIG_RAM_MAX_PAYLOAD (8u + MV_MIGRATE_MAX_BATCH * (MIG_PAGE_ENTRY_LEN + MV_MIGRATE_PAGE_SIZE))

struct mig_hdr {
	uint16_t type;
	uint32_t flags;
	uint32_t len;
	uint32_t seq;
	uint32_t payload_crc;
};

struct mig_header {
	uint32_t page_size;
	uint32_t features;
	uint32_t downtime_ms;
	uint32_t postcopy_after;
};

struct mig_page {
	uint64_t gpa;
	uint8_t enc;
	uint32_t len;
	const uint8_t *data;
};

struct mig_device {
	uint32_t id;
	uint32_t len;
	const uint8_t *data;
};

struct mig_complete {
	uint64_t pages;    /* page entries in RAM frames */
	uint64_t bytes;    /* wire bytes of every frame before COMPLETE */
	uint32_t frames;   /* frames before COMPLETE */
	uint32_t pad;
};

/* Little-endian field access (the stream is LE on every host). */
static inline void mig_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void mig_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void mig_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t mig_get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t mig_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t mig_get64(const uint8_t *p)
{
	return (uint64_t)mig_get32(p) | (uint64_t)mig_get32(p + 4) << 32;
}

const char *mig_type_name(uint16_t type);
bool mig_type_from_source(uint16_t type);

/* Frame header: writes 28 bytes (crcs included). */
void mig_hdr_put(uint8_t *out, uint16_t type, uint32_t len, uint32_t seq, uint32_t payload_crc);
/* Checks magic, version, known type, flags 0, length cap, header crc. */
int mig_hdr_get(const uint8_t *in, struct mig_hdr *h, struct mv_error **err) MV_MUST_CHECK;
/* Checks the payload crc against the header. */
int mig_payload_check(const struct mig_hdr *h, const uint8_t *payload,
		      struct mv_error **err) MV_MUST_CHECK;

size_t mig_header_put(uint8_t *out, const struct mig_header *h);
int mig_header_get(const uint8_t *p, size_t len, struct mig_header *h,
		   struct mv_error **err) MV_MUST_CHECK;
/* Encodes CONFIG into out (MIG_CONFIG_MAX bytes); returns its length: the
 * tenant block only when the tenant has anything to say. */
size_t mig_config_put(uint8_t *out, const struct mv_migrate_config *cfg);
size_t mig_config_len(const struct mv_migrate_config *cfg);
/* Decodes and validates a CONFIG (regions, vCPUs, workload, tenant block). */
int mig_config_get(const uint8_t *p, size_t len, struct mv_migrate_config *cfg,
		   struct mv_error **err) MV_MUST_CHECK;
/* Region layout check shared by the decoder and mv_migrate_config_match. */
int mig_config_validate(const struct mv_migrate_config *cfg, struct mv_error **err) MV_MUST_CHECK;

/* RAM payload: count u32, pad u32, count entry headers, then the entries'
 * data in entry order (a receiver learns where every page goes before its
 * data arrives, so it can read pages straight into guest RAM).
 * An encoder builds one in a buffer of MIG_RAM_MAX_PAYLOAD bytes. */
struct mig_ram_enc {
	uint8_t *buf;
	size_t len;        /* payload length once finished */
	uint32_t count;
	size_t data_len;
};
void mig_ram_reset(struct mig_ram_enc *e);
/* Adds an entry for gpa and returns where its len bytes of data go. */
uint8_t *mig_ram_add(struct mig_ram_enc *e, uint64_t gpa, uint8_t enc, uint32_t len);
/* Lays the payload out in buf[0..len) and returns len. */
size_t mig_ram_finish(struct mig_ram_enc *e);
/* Writes one 16-byte entry header. */
void mig_ram_entry_put(uint8_t *h, uint64_t gpa, uint8_t enc, uint32_t len);
/* The payload's first 8 bytes: count (1..MV_MIGRATE_MAX_BATCH), zero pad. */
int mig_ram_count_get(const uint8_t *p, uint32_t *count, struct mv_error **err) MV_MUST_CHECK;
/* Decodes n entry headers at t into pages[] (data NULL): encodings,
 * lengths, gpa alignment and region membership (cfg); *data_len = the
 * data bytes they announce. */
int mig_ram_table_get(const uint8_t *t, uint32_t n, const struct mv_migrate_config *cfg,
		      struct mig_page *pages, uint64_t *data_len, struct mv_error **err) MV_MUST_CHECK;
/* Decodes a whole RAM payload into pages[] (MV_MIGRATE_MAX_BATCH): the
 * above, and the data must use the payload exactly. ZSTD data is
 * decompressed by the caller with mig_page_inflate. */
int mig_ram_get(const uint8_t *p, size_t len, const struct mv_migrate_config *cfg,
		struct mig_page *pages, uint32_t *count, struct mv_error **err) MV_MUST_CHECK;
/* Decompresses a ZSTD page into out (exactly one page, all input used). */
int mig_page_inflate(const struct mig_page *pg, void *dctx, uint8_t *out,
		     struct mv_error **err) MV_MUST_CHECK;

/* VCPU: nvcpus states, each field LE. */
size_t mig_vcpu_len(uint32_t n);
size_t mig_vcpu_put(uint8_t *out, const struct mv_wl_state *st, uint32_t n);
int mig_vcpu_get(const uint8_t *p, size_t len, const struct mv_migrate_config *cfg,
		 struct mv_wl_state *st, struct mv_error **err) MV_MUST_CHECK;

/* DEVICE: count, then {id, len, data padded to 8}. */
size_t mig_device_put(uint8_t *out, const struct mig_device *d, uint32_t n);
int mig_device_get(const uint8_t *p, size_t len, struct mig_device *d, uint32_t *n,
		   struct mv_error **err) MV_MUST_CHECK;

/* DISCARD / PAGE_REQ: count, then gpas (page aligned, inside cfg's regions). */
size_t mig_gpas_put(uint8_t *out, const uint64_t *gpas, uint32_t n);
int mig_gpas_get(const uint8_t *p, size_t len, const struct mv_migrate_config *cfg,
		 uint32_t max, uint32_t *n, struct mv_error **err) MV_MUST_CHECK;
static inline uint64_t mig_gpas_at(const uint8_t *p, uint32_t i) { return mig_get64(p + 8 + 8 * (size_t)i); }

size_t mig_complete_put(uint8_t *out, const struct mig_complete *c);
int mig_complete_get(const uint8_t *p, size_t len, struct mig_complete *c,
		     struct mv_error **err) MV_MUST_CHECK;
size_t mig_nack_put(uint8_t *out, int code, const char *msg);
int mig_nack_get(const uint8_t *p, size_t len, int *code, char *msg, size_t cap,
		 struct mv_error **err) MV_MUST_CHECK;
/* SYNC / SYNCED: pass u32, pad u32. */
size_t mig_sync_put(uint8_t *out, uint32_t pass);
int mig_sync_get(const uint8_t *p, size_t len, uint32_t *pass, struct mv_error **err) MV_MUST_CHECK;
/* Payloads that must be empty (POSTCOPY, RUNNING, ACK) or reserved zeros (READY). */
int mig_empty_get(uint16_t type, const uint8_t *p, size_t len, struct mv_error **err) MV_MUST_CHECK;

/* The order a destination accepts source frames in, and running totals:
 *   HEADER CONFIG (RAM|SYNC)* ( VCPU DEVICE COMPLETE
 *                      | VCPU DEVICE DISCARD* POSTCOPY RAM* COMPLETE ) */
enum mig_stage { MIG_ST_START, MIG_ST_CONFIG, MIG_ST_RAM, MIG_ST_VCPU, MIG_ST_DEVICE,
		 MIG_ST_POSTCOPY, MIG_ST_DONE };
struct mig_order {
	enum mig_stage stage;
	uint32_t features;
	struct mig_complete seen;
};
/* Accepts the next frame type or fails naming what was expected. Counts the frame. */
int mig_order_next(struct mig_order *o, uint16_t type, uint32_t payload_len,
		   struct mv_error **err) MV_MUST_CHECK;
/* Checks COMPLETE's totals against what was seen. */
int mig_order_check_totals(const struct mig_order *o, const struct mig_complete *c,
			   struct mv_error **err) MV_MUST_CHECK;

#endif
