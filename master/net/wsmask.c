/*
 * wsmask.c - closes a websocket whose client sends an unmasked frame.
 *
 * RFC 6455, section 5.1: "The server MUST close the connection upon
 * receiving a frame that is not masked", with status 1002. libwebsockets
 * 4.1 (Debian 12's) does not check it (later versions close with "client
 * unmasked"), and it tells a callback nothing about the mask of the frame
 * it just parsed. So the master looks at the bytes itself, on their way
 * into lws.
 *
 * lws reads its sockets with recv(), or with SSL_read() under TLS. This
 * file defines both: ELF symbol interposition makes lws's calls (and
 * anyone else's in the process) land here first; each calls the C
 * library's (or OpenSSL's) function, and when the call comes from the
 * loop thread on a descriptor we watch, feeds the bytes that arrived to a
 * frame-header scanner (common/wsscan.c: a few bytes of state, no
 * copies). Every other call (curl's SMTP in the mail thread, sqlite,
 * anything on a descriptor we do not watch) passes straight through.
 *
 * Which descriptors: every accepted connection from its first byte, in
 * HTTP mode (the scanner only keeps what follows the last blank line).
 * A plain HTTP request stops the watch (tf__wsmask_unwatch); a websocket
 * upgrade switches the scanner to frames (tf__wsmask_upgraded), first
 * scanning whatever the client sent behind its handshake. The protocol
 * callbacks ask tf__wsmask_bad before handling a message and close with
 * 1002 when it says so; control frames lws handles itself are caught on
 * the next message or by the once-a-second sweep.
 *
 * When lws grows its own check, this file goes.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "map.h"
#include "net/net.h"
#include "wsscan.h"

typedef ssize_t (*recv_fn)(int fd, void *buf, size_t len, int flags);
typedef int (*ssl_read_fn)(SSL *ssl, void *buf, int num);

static recv_fn next_recv;
static ssl_read_fn next_ssl_read;
static pthread_t loop_thread;
static tf_map_t *watched; /* fd -> tf_wsscan_t, loop thread only */

static void *next_symbol(void *volatile *slot, const char *name)
{
    void *f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (!f) {
        f = dlsym(RTLD_NEXT, name);
        __atomic_store_n(slot, f, __ATOMIC_RELEASE);
    }
    return f;
}

/* Feeds what fd received, when it is ours to look at. */
static void scan(int fd, const void *buf, ssize_t n)
{
    if (n <= 0 || !watched || !pthread_equal(pthread_self(), loop_thread))
        return;
    tf_wsscan_t *s = tf_map_get_id(watched, (uint64_t)fd);
    if (s)
        tf_wsscan_feed(s, buf, (size_t)n);
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    recv_fn f = (recv_fn)(uintptr_t)next_symbol(
        (void *volatile *)&next_recv, "recv");
    ssize_t n = f(fd, buf, len, flags);
    if (!(flags & MSG_PEEK))
        scan(fd, buf, n);
    return n;
}

int SSL_read(SSL *ssl, void *buf, int num)
{
    ssl_read_fn f = (ssl_read_fn)(uintptr_t)next_symbol(
        (void *volatile *)&next_ssl_read, "SSL_read");
    int n = f(ssl, buf, num);
    if (n > 0 && watched)
        scan(SSL_get_fd(ssl), buf, n);
    return n;
}

void tf__wsmask_start(void)
{
    loop_thread = pthread_self();
    if (!watched)
        watched = tf_map_new();
}

void tf__wsmask_stop(void)
{
    if (!watched)
        return;
    size_t pos = 0;
    void *v;
    while (tf_map_next(watched, &pos, NULL, NULL, &v) == 0)
        free(v);
    tf_map_free(watched);
    watched = NULL;
}

void tf__wsmask_watch(int fd)
{
    if (!watched || fd < 0)
        return;
    tf_wsscan_t *s = tf_map_get_id(watched, (uint64_t)fd);
    if (!s) {
        s = malloc(sizeof(*s));
        if (!s || tf_map_put_id(watched, (uint64_t)fd, s) != 0) {
            free(s);
            return;
        }
    }
    tf_wsscan_init(s);
}

void tf__wsmask_unwatch(int fd)
{
    if (watched && fd >= 0)
        free(tf_map_del_id(watched, (uint64_t)fd));
}

static tf_wsscan_t *scanner(int fd)
{
    return watched && fd >= 0 ? tf_map_get_id(watched, (uint64_t)fd) : NULL;
}

bool tf__wsmask_upgraded(int fd)
{
    tf_wsscan_t *s = scanner(fd);
    return s ? tf_wsscan_upgraded(s) : true;
}

bool tf__wsmask_bad(int fd)
{
    tf_wsscan_t *s = scanner(fd);
    return s && s->mode == TF_WSSCAN_BAD;
}
