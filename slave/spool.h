/*
 * spool.h - a build's events on disk, in the order they were produced.
 *
 * Every event of a build (a control message's JSON text or a binary output
 * frame) is appended to BASEDIR/.spool/BUILDID.spool before it is sent, and
 * everything sent to the master is read back from that file. So the memory
 * the slave needs does not depend on how much output is waiting, and a
 * dropped link, a master restart or a crash of the slave process loses
 * nothing: the master's acknowledgements say where to resume.
 *
 * A record is a 16-byte header, big-endian like the wire format:
 *   u32 kind (1 = text frame, 2 = binary frame), u32 length, u64 seq,
 * followed by exactly the frame bytes. Sequence numbers start at 1 and
 * increase by one per record. Records are written with write() and never
 * fsync'd: they survive the slave process dying, not the machine losing
 * power (then the build is lost anyway and the master retries it).
 *
 * BUILDID.meta (a small JSON object with builder, number and the farm of
 * the master that started the build) is written next to it; the spool
 * file alone is authoritative for the events. The farm (docs/protocol.md,
 * hello.running[].farm) lets a master of another farm tell that build id
 * N here is not its build N; a meta file without it (older slaves, a
 * torn write) reports no farm, as older slaves do.
 */
#ifndef TF_SPOOL_H
#define TF_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "proto.h"

#define TF_SPOOL_REC_HDR 16
/* The largest frame a record holds: a full binary output frame. Our own
 * control events are far smaller (step text is capped at 4096 bytes). */
#define TF_SPOOL_MAX_FRAME (TF_PROTO_OUT_HDR + TF_PROTO_MAX_CHUNK)
#define TF_SPOOL_MAX_FILES 100000

typedef enum {
    TF_REC_TEXT = 1,
    TF_REC_BINARY = 2,
} tf_rec_kind_t;

typedef struct tf_spool {
    uint64_t build_id;
    int fd;
    char *path;
    char *meta_path;
    uint64_t end;      /* file size: where the next record goes */
    uint64_t last_seq; /* seq of the last record, 0 when empty */
    uint64_t send_off; /* offset of the next record to send */
} tf_spool_t;

/* Called for each record by tf_spool_open. For text records data holds the
 * frame (NUL-terminated); for binary records data is NULL (payloads are not
 * read back at startup). */
typedef void (*tf_spool_scan_cb)(void *arg, tf_rec_kind_t kind, uint64_t seq,
                                 const char *data, size_t len);

/* Creates DIR/ID.spool (which must not exist) and DIR/ID.meta; farm is the
 * id of the starting master's farm ("" or NULL: not known). The caller
 * owns *out and ends it with tf_spool_close or tf_spool_remove. Returns 0
 * or a negated errno / TF_ENOMEM. */
int tf_spool_create(const char *dir, uint64_t build_id, const char *builder,
                    uint64_t number, const char *farm, tf_spool_t **out);

/* Opens an existing DIR/ID.spool after a restart and calls cb (may be NULL)
 * for each record. A torn last record (the process died mid-write) or a
 * break in the sequence is cut off with ftruncate, keeping the consistent
 * prefix; *truncated (may be NULL) says so. The send cursor starts at the
 * first record. */
int tf_spool_open(const char *dir, uint64_t build_id, tf_spool_scan_cb cb,
                  void *arg, bool *truncated, tf_spool_t **out);

/* Appends one record with seq == last_seq + 1 whose frame is the
 * concatenation of iov[0..n). On failure the file is cut back to where it
 * was, so a failed append leaves no partial record. Returns 0, TF_E2BIG
 * (frame over TF_SPOOL_MAX_FRAME), TF_EINVAL (wrong seq) or a negated
 * errno (ENOSPC...). */
int tf_spool_append(tf_spool_t *s, tf_rec_kind_t kind, uint64_t seq,
                    const struct iovec *iov, int n);

/* Reads the record at the send cursor into buf[cap] without moving the
 * cursor. Returns 1 and fills *len, *kind, *seq; 0 when everything was
 * sent; or a negative code (TF_EIO for a corrupt record). */
int tf_spool_peek(tf_spool_t *s, uint8_t *buf, size_t cap, size_t *len,
                  tf_rec_kind_t *kind, uint64_t *seq);

/* Moves the send cursor past the record tf_spool_peek returned (len). */
void tf_spool_advance(tf_spool_t *s, size_t len);

/* Moves the send cursor to the first record with a seq above `seq` (the end
 * when there is none): what welcome.resume asks for. */
int tf_spool_seek_after(tf_spool_t *s, uint64_t seq);

/* Bytes written but not yet sent. */
uint64_t tf_spool_unsent(const tf_spool_t *s);

/* Closes the file and frees s, keeping the files; s may be NULL. */
void tf_spool_close(tf_spool_t *s);

/* Closes, deletes both files and frees s; s may be NULL. */
void tf_spool_remove(tf_spool_t *s);

/* Lists the build ids of DIR/ *.spool files in ascending order into a
 * malloc'd array (caller frees). At most TF_SPOOL_MAX_FILES. Also deletes
 * .meta files without a spool. Returns 0 or a negative code. */
int tf_spool_list(const char *dir, uint64_t **ids, size_t *n);

/* Reads builder (malloc'd, caller frees), number and farm (into farm,
 * TF_PROTO_FARM_MAX + 1 bytes; "" when the meta names none or a malformed
 * one) from DIR/ID.meta. Returns 0 or a negative code; *builder is NULL
 * on failure. */
int tf_spool_read_meta(const char *dir, uint64_t build_id, char **builder,
                       uint64_t *number, char farm[TF_PROTO_FARM_MAX + 1]);

#endif
