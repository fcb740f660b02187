/*
 * fuzz_testres.c - libFuzzer driver for the test-result parsers; built
 * once per parser (TF_FUZZ_FORMAT names it: fuzz_ctest, fuzz_gtest,
 * fuzz_pytest, fuzz_unittest, fuzz_automake, fuzz_tap, fuzz_junit).
 *
 * Beyond "no crash, no leak", it checks the contract on every input:
 * console parsers give the same results however the bytes are split into
 * reads and streams; every kept result has a non-empty name, strings
 * within their caps, a log position inside the input; and the results
 * always encode as a test_results message (what the collector cleans is
 * valid for JSON), which decodes again.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "testres.h"
#include "tf_err.h"

#ifndef TF_FUZZ_FORMAT
#error "TF_FUZZ_FORMAT must name a format"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_testres: invariant violated: %s\n", what);
        abort();
    }
}

static tf_tr_collect_t *parse(const uint8_t *data, size_t size, size_t chunk)
{
    tf_tr_collect_t *c = NULL;
    if (tf_tr_collect_new(&c))
        return NULL;
    if (TF_FUZZ_FORMAT == TF_TR_FMT_JUNIT) {
        char err[512];
        err[0] = 'X';
        int rc = tf_tr_junit_parse((const char *)data, size, "f.xml",
                                   tf_tr_collect_add, c, err, sizeof err);
        check(rc == 0 || rc == TF_EINVAL || rc == TF_ENOMEM, "junit rc");
        check(rc != TF_EINVAL || (err[0] != 'X' && err[0]), "junit error");
        return c;
    }
    tf_tr_console_t *k = NULL;
    if (tf_tr_console_new(TF_FUZZ_FORMAT, tf_tr_collect_add, c, &k)) {
        tf_tr_collect_free(c);
        return NULL;
    }
    for (size_t i = 0; i < size; i += chunk)
        tf_tr_console_feed(k, 1, data + i, size - i < chunk ? size - i : chunk);
    tf_tr_console_finish(k);
    tf_tr_console_free(k);
    return c;
}

static void check_encodes(const tf_tr_collect_t *c, size_t size)
{
    size_t n = tf_tr_collect_count(c);
    tf_test_result_t *r = calloc(n ? n : 1, sizeof *r);
    if (!r)
        return;
    for (size_t i = 0; i < n; i++) {
        const tf_tr_entry_t *e = tf_tr_collect_get(c, i);
        check(e->name[0] != '\0', "empty name");
        check(strlen(e->name) <= TF_TR_MAX_NAME, "name cap");
        check(strlen(e->suite) <= TF_TR_MAX_NAME, "suite cap");
        check(!e->message || strlen(e->message) <= TF_TR_MAX_MESSAGE,
              "message cap");
        check(!e->log.has || (e->log.offset < size && e->log.lines >= 1 &&
                              e->log.line >= 1), "log position");
        check(e->attempts >= 1, "attempts");
        r[i] = (tf_test_result_t){
            .suite = e->suite, .name = e->name, .status = e->status,
            .attempts = e->attempts, .duration_ms = e->duration_ms,
            .outcome = e->outcome, .message = e->message,
            .has_log = e->log.has, .log_offset = e->log.offset,
            .log_line = e->log.line, .log_lines = e->log.lines,
        };
    }
    /* One result per message keeps every message under the cap. */
    for (size_t i = 0; i < n; i++) {
        tf_msg_t m = {.type = TF_MSG_TEST_RESULTS};
        char *text = NULL;
        size_t len = 0;
        m.u.test_results.build_id = 1;
        m.u.test_results.seq = 1;
        m.u.test_results.format = TF_FUZZ_FORMAT;
        m.u.test_results.results = &r[i];
        m.u.test_results.nresults = 1;
        m.u.test_results.last = i + 1 == n;
        int rc = tf_msg_encode(&m, &text, &len);
        check(rc == 0 || rc == TF_ENOMEM, "a result encodes");
        if (rc == 0) {
            tf_msg_t back;
            check(tf_msg_decode(text, len, &back, NULL, 0) == 0,
                  "the encoding decodes");
            tf_msg_clear(&back);
        }
        free(text);
    }
    free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tf_tr_collect_t *a = parse(data, size, size ? size : 1);
    if (!a)
        return 0;
    check_encodes(a, size);
    if (TF_FUZZ_FORMAT != TF_TR_FMT_JUNIT) {
        tf_tr_collect_t *b = parse(data, size, 3);
        if (b) {
            check(tf_tr_collect_count(a) == tf_tr_collect_count(b),
                  "same results whatever the split");
            for (size_t i = 0; i < tf_tr_collect_count(a); i++) {
                const tf_tr_entry_t *x = tf_tr_collect_get(a, i);
                const tf_tr_entry_t *y = tf_tr_collect_get(b, i);
                check(strcmp(x->name, y->name) == 0 && x->status == y->status &&
                      x->attempts == y->attempts &&
                      x->log.offset == y->log.offset,
                      "same result whatever the split");
            }
            tf_tr_collect_free(b);
        }
    }
    tf_tr_collect_free(a);
    return 0;
}
