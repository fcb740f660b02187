/*
 * err.c - names for TestFarm's error codes.
 *
 * TestFarm's own codes sit at TF_EBASE and below; anything else negative is
 * a negated errno (libuv's codes on Unix are exactly that, plus a few of its
 * own that we name here). Every returned string is static and immutable, so
 * tf_strerror() is safe to call from any thread.
 */
#include <string.h>

#include "tf_err.h"

/* libuv's codes that are not negated errno values (see uv/errno.h). */
#define TF__UV_EOF (-4095)
#define TF__UV_UNKNOWN (-4094)
#define TF__UV_EAI_FIRST (-3014)
#define TF__UV_EAI_LAST (-3000)

static const char *tf_err_own_name(int rc)
{
    switch (rc) {
    case TF_EINVAL: return "malformed input";
    case TF_ENOMEM: return "out of memory";
    case TF_EIO: return "input/output error";
    case TF_EPROTO: return "protocol violation";
    case TF_E2BIG: return "over a size limit";
    case TF_ENOENT: return "not found";
    case TF_EEXIST: return "already exists";
    case TF_EAUTH: return "authentication failed";
    case TF_EFULL: return "queue full, try later";
    case TF_ECONFIG: return "configuration error";
    case TF_EVERSION: return "version mismatch";
    case TF_ETYPE: return "wrong JSON type";
    case TF_ESTORE: return "database error";
    case TF_ESTATE: return "not valid in this state";
    case TF_ETRUNC: return "truncated frame";
    case TF_ECORRUPT: return "stored data is damaged";
    default: return NULL;
    }
}

const char *tf_strerror(int rc)
{
    if (rc == 0)
        return "success";
    if (rc > 0)
        return "unknown error (positive code)";
    const char *own = tf_err_own_name(rc);
    if (own)
        return own;
    if (rc == TF__UV_EOF)
        return "end of file";
    if (rc == TF__UV_UNKNOWN)
        return "unknown system error";
    if (rc >= TF__UV_EAI_FIRST && rc <= TF__UV_EAI_LAST)
        return "name resolution error";
    /* strerrordesc_np returns a static string (or NULL), unlike strerror,
     * which may format unknown codes into a shared buffer. */
    const char *desc = strerrordesc_np(-rc);
    return desc ? desc : "unknown error";
}
