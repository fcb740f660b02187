/*
 * wsscan.c - WebSocket client frame headers, followed byte by byte (see
 * wsscan.h). Payload is skipped in one step per piece, so the cost is a
 * few comparisons per frame, not per byte.
 */
#include "wsscan.h"

#include <string.h>

void tf_wsscan_init(tf_wsscan_t *s)
{
    memset(s, 0, sizeof(*s));
    s->mode = TF_WSSCAN_HTTP;
}

static void http_byte(tf_wsscan_t *s, uint8_t c)
{
    static const uint8_t end[4] = {'\r', '\n', '\r', '\n'};
    if (s->tail_len < TF_WSSCAN_TAIL)
        s->tail[s->tail_len] = c;
    s->tail_len++;
    if (c == end[s->crlf]) {
        if (++s->crlf == 4) {
            s->crlf = 0;
            s->tail_len = 0; /* a new request's headers ended here */
        }
    } else {
        s->crlf = c == '\r' ? 1 : 0;
    }
}

bool tf_wsscan_feed(tf_wsscan_t *s, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        switch (s->mode) {
        case TF_WSSCAN_BAD:
            return false;
        case TF_WSSCAN_HTTP:
            http_byte(s, c);
            i++;
            break;
        case TF_WSSCAN_HDR0:
            s->mode = TF_WSSCAN_HDR1;
            i++;
            break;
        case TF_WSSCAN_HDR1:
            i++;
            if (!(c & 0x80)) {
                s->mode = TF_WSSCAN_BAD;
                return false;
            }
            c &= 0x7f;
            s->left = c < 126 ? c : 0;
            s->need = c == 126 ? 2 : c == 127 ? 8 : 4;
            s->mode = c < 126 ? TF_WSSCAN_KEY : TF_WSSCAN_EXTLEN;
            break;
        case TF_WSSCAN_EXTLEN:
            if (s->need == 8 && (c & 0x80)) {
                s->mode = TF_WSSCAN_BAD; /* RFC 6455: the top bit is 0 */
                return false;
            }
            s->left = (s->left << 8) | c;
            i++;
            if (--s->need == 0) {
                s->mode = TF_WSSCAN_KEY;
                s->need = 4;
            }
            break;
        case TF_WSSCAN_KEY:
            i++;
            if (--s->need == 0)
                s->mode = s->left ? TF_WSSCAN_PAYLOAD : TF_WSSCAN_HDR0;
            break;
        case TF_WSSCAN_PAYLOAD: {
            size_t take = n - i;
            if ((uint64_t)take > s->left)
                take = (size_t)s->left;
            s->left -= take;
            i += take;
            if (s->left == 0)
                s->mode = TF_WSSCAN_HDR0;
            break;
        }
        }
    }
    return s->mode != TF_WSSCAN_BAD;
}

bool tf_wsscan_upgraded(tf_wsscan_t *s)
{
    if (s->mode != TF_WSSCAN_HTTP)
        return s->mode != TF_WSSCAN_BAD;
    uint64_t n = s->tail_len;
    uint8_t tail[TF_WSSCAN_TAIL];
    memcpy(tail, s->tail, sizeof(tail));
    s->mode = TF_WSSCAN_HDR0;
    s->left = 0;
    s->need = 0;
    if (n > TF_WSSCAN_TAIL) {
        s->mode = TF_WSSCAN_BAD;
        return false;
    }
    return tf_wsscan_feed(s, tail, (size_t)n);
}
