/*
 * test_slave_spool.c - the slave's spool files: append and read back
 * exactly, resume positioning, unsent accounting, torn-tail repair, and
 * the directory listing used at startup.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool.h"
#include "tf_err.h"
#include "tf_test.h"

static char dir[256];

static void setup(void)
{
    if (dir[0])
        return;
    snprintf(dir, sizeof dir, "/tmp/tf-slave-spool-XXXXXX");
    if (!mkdtemp(dir))
        abort();
}

static int append_text(tf_spool_t *s, uint64_t seq, const char *text)
{
    struct iovec iov = {(void *)text, strlen(text)};
    return tf_spool_append(s, TF_REC_TEXT, seq, &iov, 1);
}

typedef struct {
    int texts, binaries;
    uint64_t last;
} scan_t;

static void scan_cb(void *arg, tf_rec_kind_t kind, uint64_t seq,
                    const char *data, size_t len)
{
    scan_t *sc = arg;
    (void)len;
    if (kind == TF_REC_TEXT) {
        sc->texts++;
        TF_CHECK(data != NULL && data[0] == '{');
    } else
        sc->binaries++;
    sc->last = seq;
}

TF_TEST(append_peek_advance)
{
    tf_spool_t *s;
    uint8_t buf[TF_SPOOL_MAX_FRAME];
    static uint8_t big[TF_SPOOL_MAX_FRAME];
    size_t len;
    tf_rec_kind_t kind;
    uint64_t seq;
    setup();
    TF_CHECK_INT(tf_spool_create(dir, 1, "b", 3, NULL, &s), 0);
    TF_CHECK_INT(append_text(s, 1, "{\"a\":1}"), 0);
    TF_CHECK_INT(append_text(s, 3, "{}"), TF_EINVAL); /* gap */
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    struct iovec iov[2] = {{big, 24}, {big + 24, sizeof big - 24}};
    TF_CHECK_INT(tf_spool_append(s, TF_REC_BINARY, 2, iov, 2), 0);
    uint8_t one = 0;
    struct iovec too[2] = {{big, sizeof big}, {&one, 1}};
    TF_CHECK_INT(tf_spool_append(s, TF_REC_BINARY, 3, too, 2), TF_E2BIG);
    TF_CHECK_INT(append_text(s, 3, "{\"z\":3}"), 0);
    TF_CHECK(tf_spool_unsent(s) == 3 * 16 + 7 + sizeof big + 7);

    TF_CHECK_INT(tf_spool_peek(s, buf, sizeof buf, &len, &kind, &seq), 1);
    TF_CHECK_INT(seq, 1);
    TF_CHECK_INT(kind, TF_REC_TEXT);
    TF_CHECK(len == 7 && memcmp(buf, "{\"a\":1}", 7) == 0);
    tf_spool_advance(s, len);
    TF_CHECK_INT(tf_spool_peek(s, buf, sizeof buf, &len, &kind, &seq), 1);
    TF_CHECK_INT(seq, 2);
    TF_CHECK(len == sizeof big && memcmp(buf, big, len) == 0);
    tf_spool_advance(s, len);
    TF_CHECK_INT(tf_spool_peek(s, buf, sizeof buf, &len, &kind, &seq), 1);
    TF_CHECK_INT(seq, 3);
    tf_spool_advance(s, len);
    TF_CHECK_INT(tf_spool_peek(s, buf, sizeof buf, &len, &kind, &seq), 0);
    TF_CHECK(tf_spool_unsent(s) == 0);

    /* Resume: after seq 1 means the binary record comes next. */
    TF_CHECK_INT(tf_spool_seek_after(s, 1), 0);
    TF_CHECK_INT(tf_spool_peek(s, buf, sizeof buf, &len, &kind, &seq), 1);
    TF_CHECK_INT(seq, 2);
    TF_CHECK_INT(tf_spool_seek_after(s, 0), 0);
    TF_CHECK_INT(tf_spool_peek(s, buf, sizeof buf, &len, &kind, &seq), 1);
    TF_CHECK_INT(seq, 1);
    TF_CHECK_INT(tf_spool_seek_after(s, 99), 0);
    TF_CHECK(tf_spool_unsent(s) == 0);
    tf_spool_close(s);

    scan_t sc = {0};
    bool truncated = true;
    TF_CHECK_INT(tf_spool_open(dir, 1, scan_cb, &sc, &truncated, &s), 0);
    TF_CHECK(!truncated);
    TF_CHECK_INT(sc.texts, 2);
    TF_CHECK_INT(sc.binaries, 1);
    TF_CHECK_INT(s->last_seq, 3);
    char *builder = NULL;
    char farm[TF_PROTO_FARM_MAX + 1] = "x";
    uint64_t number = 0;
    TF_CHECK_INT(tf_spool_read_meta(dir, 1, &builder, &number, farm), 0);
    TF_CHECK_STR(builder, "b");
    TF_CHECK_INT(number, 3);
    TF_CHECK_STR(farm, ""); /* none given: none reported */
    free(builder);
    tf_spool_remove(s);
    char path[512];
    snprintf(path, sizeof path, "%s/1.spool", dir);
    TF_CHECK(access(path, F_OK) != 0);
}

TF_TEST(torn_tail_is_cut)
{
    tf_spool_t *s;
    char path[512];
    setup();
    TF_CHECK_INT(tf_spool_create(dir, 2, "b", 1, NULL, &s), 0);
    TF_CHECK_INT(append_text(s, 1, "{\"a\":1}"), 0);
    TF_CHECK_INT(append_text(s, 2, "{\"b\":2}"), 0);
    off_t good = (off_t)s->end;
    tf_spool_close(s);
    /* A record header promising more bytes than follow. */
    snprintf(path, sizeof path, "%s/2.spool", dir);
    int fd = open(path, O_WRONLY | O_APPEND);
    uint8_t torn[20] = {0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3, '{'};
    TF_CHECK(write(fd, torn, sizeof torn) == (ssize_t)sizeof torn);
    close(fd);

    scan_t sc = {0};
    bool truncated = false;
    TF_CHECK_INT(tf_spool_open(dir, 2, scan_cb, &sc, &truncated, &s), 0);
    TF_CHECK(truncated);
    TF_CHECK_INT(sc.texts, 2);
    TF_CHECK_INT(s->last_seq, 2);
    struct stat st;
    TF_CHECK(stat(path, &st) == 0 && st.st_size == good);
    TF_CHECK_INT(append_text(s, 3, "{\"c\":3}"), 0);
    tf_spool_remove(s);
}

/* The farm of the master that started a build survives in the meta file
 * (a slave restart reports it in hello.running); a malformed one is
 * dropped, as if the slave were older. */
TF_TEST(meta_keeps_the_farm)
{
    tf_spool_t *s;
    char *builder = NULL;
    char farm[TF_PROTO_FARM_MAX + 1];
    uint64_t number = 0;
    setup();
    TF_CHECK_INT(tf_spool_create(dir, 5, "b", 2,
                                 "0123456789abcdef0123456789abcdef", &s), 0);
    TF_CHECK_INT(tf_spool_read_meta(dir, 5, &builder, &number, farm), 0);
    TF_CHECK_STR(farm, "0123456789abcdef0123456789abcdef");
    free(builder);
    tf_spool_remove(s);
    char path[512];
    snprintf(path, sizeof path, "%s/6.meta", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"build_id\":6,\"builder\":\"b\",\"number\":1,"
          "\"farm\":\"NOT-HEX\"}", f);
    fclose(f);
    TF_CHECK_INT(tf_spool_read_meta(dir, 6, &builder, &number, farm), 0);
    TF_CHECK_STR(farm, "");
    free(builder);
    unlink(path);
}

TF_TEST(list_sorted_and_orphan_meta_removed)
{
    tf_spool_t *a, *b;
    uint64_t *ids;
    size_t n;
    char path[512];
    setup();
    TF_CHECK_INT(tf_spool_create(dir, 20, "x", 1, NULL, &a), 0);
    TF_CHECK_INT(tf_spool_create(dir, 9, "x", 1, NULL, &b), 0);
    tf_spool_t *dup = NULL;
    TF_CHECK(tf_spool_create(dir, 9, "x", 1, NULL, &dup) != 0 && dup == NULL);
    snprintf(path, sizeof path, "%s/77.meta", dir);
    FILE *f = fopen(path, "w");
    fputs("{}", f);
    fclose(f);
    TF_CHECK_INT(tf_spool_list(dir, &ids, &n), 0);
    TF_CHECK_INT(n, 2);
    if (n == 2) {
        TF_CHECK_INT(ids[0], 9);
        TF_CHECK_INT(ids[1], 20);
    }
    free(ids);
    TF_CHECK(access(path, F_OK) != 0);
    tf_spool_remove(a);
    tf_spool_remove(b);
}

TF_TEST_MAIN()
