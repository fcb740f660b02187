/*
 * transport.c - handing a rendered message over: to an SMTP server with
 * libcurl (plain, STARTTLS or implicit TLS, with AUTH), or to a
 * sendmail-style command on its standard input.
 *
 * Runs on the sender thread and blocks there, each exchange capped by
 * connect_timeout_s and timeout_s. The outcome names what went wrong in a
 * sentence for the API and the log (the server's last reply, never what
 * we sent: an AUTH exchange carries the password), and says whether to
 * retry. The master's stop flag is watched throughout: a stop abandons
 * the exchange unless the message is already with the server.
 */
#include "mail/mail_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "clock.h"
#include "email.h"
#include "log.h"
#include "tf_err.h"

extern char **environ;

#define CMD_OUT_MAX 2048 /* what a sendmail command says, kept */

static bool stopping(const atomic_bool *stop)
{
    return stop && atomic_load(stop);
}

__attribute__((format(printf, 3, 4))) static void
fail_with(tf__mail_outcome_t *o, tf__mail_outcome_kind_t kind,
          const char *fmt, ...)
{
    va_list ap;
    o->kind = kind;
    va_start(ap, fmt);
    vsnprintf(o->error, sizeof(o->error), fmt, ap);
    va_end(ap);
}

typedef struct smtp_io {
    const uint8_t *data;
    size_t len;
    size_t pos;
    char last[TF__MAIL_REPLY_MAX]; /* the server's last reply before QUIT */
    char cmd[16];          /* the verb of our last command before QUIT */
    bool quitting;         /* QUIT sent: what follows explains nothing */
    const atomic_bool *stop; /* the master is stopping; may be NULL */
    int64_t stop_seen_ms;  /* when the progress callback saw the stop */
} smtp_io_t;

static size_t smtp_read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
    smtp_io_t *io = arg;
    size_t room = size * nitems, left = io->len - io->pos;
    size_t n = left < room ? left : room;
    memcpy(buf, io->data + io->pos, n);
    io->pos += n;
    return n;
}

/* Keeps the server's last reply and the verb of our last command, never
 * its arguments (an AUTH exchange carries the password), up to QUIT: curl
 * says QUIT after a failure too, and "221 Bye" explains nothing. */
static int smtp_debug_cb(CURL *h, curl_infotype type, char *data, size_t size,
                         void *arg)
{
    static const char *const verbs[] = {"EHLO", "HELO", "STARTTLS", "AUTH",
                                        "MAIL", "RCPT", "DATA", "QUIT",
                                        "RSET", NULL};
    smtp_io_t *io = arg;
    (void)h;
    if (io->quitting)
        return 0;
    if (type == CURLINFO_HEADER_IN) {
        while (size > 0 && (data[size - 1] == '\n' || data[size - 1] == '\r'))
            size--;
        if (size == 0)
            return 0;
        size_t n = size < sizeof(io->last) - 1 ? size : sizeof(io->last) - 1;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)data[i];
            io->last[i] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
        }
        io->last[n] = '\0';
    } else if (type == CURLINFO_HEADER_OUT) {
        for (size_t i = 0; verbs[i]; i++) {
            size_t vl = strlen(verbs[i]);
            if (size >= vl && strncasecmp(data, verbs[i], vl) == 0 &&
                (size == vl || data[vl] == ' ' || data[vl] == '\r')) {
                if (strcmp(verbs[i], "QUIT") == 0)
                    io->quitting = true;
                else
                    snprintf(io->cmd, sizeof(io->cmd), "%s", verbs[i]);
                break;
            }
        }
    }
    return 0;
}

/* Aborts the exchange when the master stops, unless the whole message is
 * already with the server: its answer usually follows at once, and
 * aborting then would send the mail again after the restart. A server
 * slower than STOP_GRACE_MS is cut off all the same. */
#define STOP_GRACE_MS 5000
static int smtp_progress_cb(void *arg, curl_off_t dt, curl_off_t dn,
                            curl_off_t ut, curl_off_t un)
{
    smtp_io_t *io = arg;
    (void)dt, (void)dn, (void)ut, (void)un;
    if (!stopping(io->stop))
        return 0;
    if (io->pos < io->len)
        return 1;
    if (!io->stop_seen_ms)
        io->stop_seen_ms = tf_mono_ms();
    return tf_mono_ms() - io->stop_seen_ms > STOP_GRACE_MS ? 1 : 0;
}

/* "SMTP server HOST:PORT" for messages. */
static void smtp_name(const tf_cfg_mail_t *m, char *out, size_t n)
{
    bool v6 = strchr(m->smtp_host, ':') != NULL;
    snprintf(out, n, "%s%s%s:%u", v6 ? "[" : "", m->smtp_host, v6 ? "]" : "",
             (unsigned)m->smtp_port);
}

/* The EHLO name: this machine's host name when it is a plain one. */
static void ehlo_name(char *out, size_t n)
{
    char h[256] = "";
    if (gethostname(h, sizeof(h) - 1) != 0 || !h[0])
        snprintf(h, sizeof(h), "localhost");
    for (const char *p = h; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
            snprintf(h, sizeof(h), "localhost");
    snprintf(out, n, "%s", h);
}

static void smtp_outcome(const tf_cfg_mail_t *m, CURLcode cc, long code,
                         const smtp_io_t *io, const char *errbuf,
                         tf__mail_outcome_t *o)
{
    char srv[300];
    const char *reply = io->last[0] ? io->last : "no reply";
    smtp_name(m, srv, sizeof(srv));
    switch (cc) {
    case CURLE_OK:
        o->kind = TF__OUT_SENT;
        snprintf(o->reply, sizeof(o->reply), "%s", reply);
        return;
    case CURLE_ABORTED_BY_CALLBACK:
        fail_with(o, TF__OUT_ABORTED, "interrupted: the master is stopping");
        return;
    case CURLE_LOGIN_DENIED:
        fail_with(o, TF__OUT_RETRY, "SMTP server %s refused authentication for "
                  "user %s: %s", srv, m->smtp_username ? m->smtp_username
                                                       : "(none)", reply);
        return;
    case CURLE_COULDNT_RESOLVE_HOST:
        fail_with(o, TF__OUT_RETRY, "cannot resolve the SMTP server's name %s: "
                  "%s", m->smtp_host, errbuf);
        return;
    case CURLE_COULDNT_CONNECT:
        fail_with(o, TF__OUT_RETRY, "cannot connect to SMTP server %s: %s", srv,
                  errbuf);
        return;
    case CURLE_OPERATION_TIMEDOUT:
        fail_with(o, TF__OUT_RETRY, "SMTP server %s timed out "
                  "(connect_timeout_s %u, timeout_s %u) after %s: %s", srv,
                  (unsigned)m->connect_timeout_s, (unsigned)m->timeout_s,
                  io->cmd[0] ? io->cmd : "connecting", errbuf);
        return;
    case CURLE_USE_SSL_FAILED:
        fail_with(o, TF__OUT_RETRY, "SMTP server %s does not offer STARTTLS "
                  "(smtp.security is \"starttls\"): %s", srv, reply);
        return;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        fail_with(o, TF__OUT_RETRY, "TLS with SMTP server %s failed: %s (check "
                  "smtp.ca_file%s%s)", srv, errbuf,
                  m->smtp_ca_file ? ": " : "",
                  m->smtp_ca_file ? m->smtp_ca_file : " or the system CAs");
        return;
    default:
        break;
    }
    if (code >= 400) {
        /* 5xx refusals of the envelope or the data are final; an
         * authentication problem (530, 534, 535, 538) is the admin's to
         * fix, so it is retried until the horizon. */
        bool final = code >= 500 && code != 530 && code != 534 &&
                     code != 535 && code != 538 &&
                     (strcmp(io->cmd, "MAIL") == 0 ||
                      strcmp(io->cmd, "RCPT") == 0 ||
                      strcmp(io->cmd, "DATA") == 0);
        fail_with(o, final ? TF__OUT_FAILED : TF__OUT_RETRY,
                  "SMTP server %s refused the mail at %s: %s", srv,
                  io->cmd[0] ? io->cmd : "the start", reply);
        return;
    }
    fail_with(o, TF__OUT_RETRY, "SMTP delivery to %s failed: %s%s%s (last "
              "reply: %s)", srv, curl_easy_strerror(cc), errbuf[0] ? ": " : "",
              errbuf, reply);
}

static void smtp_deliver(const atomic_bool *stop, const tf__mail_settings_t *s,
                         const char *const *rcpt, size_t nrcpt,
                         const uint8_t *data, size_t len, tf__mail_outcome_t *o)
{
    const tf_cfg_mail_t *m = &s->mail;
    char url[600], from[300], ehlo[260], errbuf[CURL_ERROR_SIZE] = "";
    struct curl_slist *to = NULL;
    smtp_io_t io = {.data = data, .len = len, .stop = stop};
    CURL *h = curl_easy_init();
    bool v6 = strchr(m->smtp_host, ':') != NULL;

    if (!h) {
        fail_with(o, TF__OUT_RETRY, "cannot start libcurl");
        return;
    }
    ehlo_name(ehlo, sizeof(ehlo));
    snprintf(url, sizeof(url), "%s://%s%s%s:%u/%s",
             m->smtp_security == TF_MAIL_SEC_TLS ? "smtps" : "smtp",
             v6 ? "[" : "", m->smtp_host, v6 ? "]" : "",
             (unsigned)m->smtp_port, ehlo);
    snprintf(from, sizeof(from), "<%s>", m->from);
    for (size_t i = 0; i < nrcpt; i++) {
        char a[300];
        snprintf(a, sizeof(a), "<%s>", rcpt[i]);
        struct curl_slist *n = curl_slist_append(to, a);
        if (!n) {
            fail_with(o, TF__OUT_RETRY, "out of memory");
            goto out;
        }
        to = n;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, to);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, smtp_read_cb);
    curl_easy_setopt(h, CURLOPT_READDATA, &io);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);
    curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, smtp_debug_cb);
    curl_easy_setopt(h, CURLOPT_DEBUGDATA, &io);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, smtp_progress_cb);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &io);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)m->connect_timeout_s * 1000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)m->timeout_s * 1000L);
    if (m->smtp_security != TF_MAIL_SEC_NONE)
        curl_easy_setopt(h, CURLOPT_USE_SSL, (long)CURLUSESSL_ALL);
    if (m->smtp_ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, m->smtp_ca_file);
    if (m->smtp_username) {
        curl_easy_setopt(h, CURLOPT_USERNAME, m->smtp_username);
        curl_easy_setopt(h, CURLOPT_PASSWORD,
                         m->smtp_password ? m->smtp_password : "");
    }
    CURLcode cc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    smtp_outcome(m, cc, code, &io, errbuf, o);
out:
    curl_slist_free_all(to);
    curl_easy_cleanup(h);
}

/* Writes data to fd (non-blocking) and collects what the child prints on
 * rfd until both are done, the deadline passes or the master stops.
 * Returns 0, or 1 for a timeout, 2 for a stop. */
static int cmd_exchange(const atomic_bool *stop, int *wfdp, int *rfdp,
                        const uint8_t *data, size_t len, int64_t deadline,
                        char *err, size_t errcap)
{
    size_t pos = 0, elen = 0;
    int rc = 0;
    for (;;) {
        int wfd = *wfdp, rfd = *rfdp;
        if (wfd < 0 && rfd < 0)
            break;
        struct pollfd p[2];
        int n = 0;
        if (wfd >= 0)
            p[n++] = (struct pollfd){.fd = wfd, .events = POLLOUT};
        if (rfd >= 0)
            p[n++] = (struct pollfd){.fd = rfd, .events = POLLIN};
        if (stopping(stop)) {
            rc = 2;
            break;
        }
        int64_t left = deadline - tf_mono_ms();
        if (left <= 0) {
            rc = 1;
            break;
        }
        if (poll(p, (nfds_t)n, left < 200 ? (int)left : 200) < 0) {
            if (errno == EINTR)
                continue;
            rc = 1;
            break;
        }
        for (int i = 0; i < n; i++) {
            if (p[i].fd == wfd && (p[i].revents & (POLLOUT | POLLERR |
                                                   POLLHUP))) {
                ssize_t w = write(wfd, data + pos, len - pos);
                if (w > 0)
                    pos += (size_t)w;
                if ((w < 0 && errno != EAGAIN && errno != EINTR) ||
                    pos == len) {
                    close(wfd);
                    *wfdp = -1;
                }
            } else if (p[i].fd == rfd && (p[i].revents & (POLLIN | POLLERR |
                                                          POLLHUP))) {
                char buf[1024];
                ssize_t r = read(rfd, buf, sizeof(buf));
                if (r > 0) {
                    size_t take = (size_t)r < errcap - 1 - elen
                                      ? (size_t)r
                                      : errcap - 1 - elen;
                    memcpy(err + elen, buf, take);
                    elen += take;
                    err[elen] = '\0';
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    close(rfd);
                    *rfdp = -1;
                }
            }
        }
    }
    return rc;
}

/* Runs the configured command with the recipients appended to its argv
 * and the message on its standard input; exit status 0 means accepted. */
static void cmd_deliver(const atomic_bool *stop, const tf__mail_settings_t *s,
                        const char *const *rcpt, size_t nrcpt,
                        const uint8_t *data, size_t len, tf__mail_outcome_t *o)
{
    const tf_cfg_mail_t *m = &s->mail;
    int in[2] = {-1, -1}, outp[2] = {-1, -1};
    char **argv = calloc(m->nsendmail + nrcpt + 1, sizeof(char *));
    char err[CMD_OUT_MAX] = "";
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    bool fa_ok = false, attr_ok = false;
    pid_t pid = -1;

    if (!argv) {
        fail_with(o, TF__OUT_RETRY, "out of memory");
        return;
    }
    for (size_t i = 0; i < m->nsendmail; i++)
        argv[i] = m->sendmail[i];
    for (size_t i = 0; i < nrcpt; i++)
        argv[m->nsendmail + i] = (char *)rcpt[i];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(outp, O_CLOEXEC) != 0) {
        fail_with(o, TF__OUT_RETRY, "cannot make a pipe: %s", strerror(errno));
        goto out;
    }
    fa_ok = posix_spawn_file_actions_init(&fa) == 0;
    attr_ok = posix_spawnattr_init(&attr) == 0;
    sigset_t def, none;
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    sigemptyset(&none);
    if (!fa_ok || !attr_ok ||
        posix_spawn_file_actions_adddup2(&fa, in[0], 0) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, outp[1], 1) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, outp[1], 2) != 0 ||
        posix_spawnattr_setsigdefault(&attr, &def) != 0 ||
        posix_spawnattr_setsigmask(&attr, &none) != 0 ||
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF |
                                            POSIX_SPAWN_SETSIGMASK) != 0) {
        fail_with(o, TF__OUT_RETRY, "cannot prepare to run %s", argv[0]);
        goto out;
    }
    int src = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
    if (src != 0) {
        pid = -1;
        fail_with(o, TF__OUT_RETRY, "cannot run the sendmail command %s: %s",
                  argv[0], strerror(src));
        goto out;
    }
    close(in[0]);
    close(outp[1]);
    in[0] = outp[1] = -1;
    fcntl(in[1], F_SETFL, fcntl(in[1], F_GETFL) | O_NONBLOCK);
    fcntl(outp[0], F_SETFL, fcntl(outp[0], F_GETFL) | O_NONBLOCK);
    int x = cmd_exchange(stop, &in[1], &outp[0], data, len,
                         tf_mono_ms() + (int64_t)m->timeout_s * 1000, err,
                         sizeof(err));
    if (x != 0)
        kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    pid = -1;
    /* The first line of what it said, for the message. */
    err[strcspn(err, "\r\n")] = '\0';
    if (x == 2)
        fail_with(o, TF__OUT_ABORTED, "interrupted: the master is stopping");
    else if (x == 1)
        fail_with(o, TF__OUT_RETRY, "the sendmail command %s did not finish "
                  "within timeout_s (%u s) and was killed", argv[0],
                  (unsigned)m->timeout_s);
    else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        o->kind = TF__OUT_SENT;
        snprintf(o->reply, sizeof(o->reply), "%s exited with status 0",
                 argv[0]);
    } else if (WIFEXITED(status))
        fail_with(o, TF__OUT_RETRY, "the sendmail command %s exited with "
                  "status %d%s%s", argv[0], WEXITSTATUS(status),
                  err[0] ? ": " : "", err);
    else
        fail_with(o, TF__OUT_RETRY, "the sendmail command %s was killed by "
                  "signal %d", argv[0],
                  WIFSIGNALED(status) ? WTERMSIG(status) : 0);
out:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0)
            close(in[i]);
        if (outp[i] >= 0)
            close(outp[i]);
    }
    if (fa_ok)
        posix_spawn_file_actions_destroy(&fa);
    if (attr_ok)
        posix_spawnattr_destroy(&attr);
    free(argv);
}

void tf__mail_deliver(const atomic_bool *stop, const tf__mail_settings_t *s,
                      json_t *rcpt, const uint8_t *data, size_t len,
                      tf__mail_outcome_t *o)
{
    const char *addrs[TF__MAIL_MAX_RCPT];
    size_t n = 0, i;
    json_t *v;
    memset(o, 0, sizeof(*o));
    json_array_foreach(rcpt, i, v)
    {
        const char *a = json_string_value(v);
        if (a && tf_email_valid(a) && n < TF__MAIL_MAX_RCPT)
            addrs[n++] = a;
    }
    if (n == 0) {
        fail_with(o, TF__OUT_FAILED, "no valid recipient");
        return;
    }
    if (s->mail.sendmail)
        cmd_deliver(stop, s, addrs, n, data, len, o);
    else
        smtp_deliver(stop, s, addrs, n, data, len, o);
}

void tf__mail_log_transport(const tf__mail_settings_t *s)
{
    const tf_cfg_mail_t *m = &s->mail;
    if (m->sendmail) {
        tf_info(TF__MAIL_SUB, "mail from %s goes through the command %s",
                m->from,
                m->sendmail[0]);
        return;
    }
    char srv[300];
    smtp_name(m, srv, sizeof(srv));
    tf_info(TF__MAIL_SUB, "mail from %s goes to SMTP server %s (%s%s%s)",
            m->from, srv,
            m->smtp_security == TF_MAIL_SEC_TLS        ? "implicit TLS"
            : m->smtp_security == TF_MAIL_SEC_STARTTLS ? "STARTTLS"
                                                       : "plain",
            m->smtp_username ? ", AUTH as " : "",
            m->smtp_username ? m->smtp_username : "");
}
