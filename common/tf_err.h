/*
 * tf_err.h - TestFarm's error codes.
 *
 * Every function in the project returns 0 on success or a negative code.
 * Codes from libuv (negative errno values) pass through unchanged; TestFarm's
 * own codes live far below the errno range so the two never collide.
 * tf_strerror() names both kinds.
 */
#ifndef TF_ERR_H
#define TF_ERR_H

#define TF_OK 0
#define TF_EBASE (-20000)
#define TF_EINVAL (TF_EBASE - 1)    /* malformed input */
#define TF_ENOMEM (TF_EBASE - 2)    /* allocation failed */
#define TF_EIO (TF_EBASE - 3)       /* I/O error (errno logged where seen) */
#define TF_EPROTO (TF_EBASE - 4)    /* protocol violation */
#define TF_E2BIG (TF_EBASE - 5)     /* over a size cap */
#define TF_ENOENT (TF_EBASE - 6)    /* no such thing */
#define TF_EEXIST (TF_EBASE - 7)    /* already exists */
#define TF_EAUTH (TF_EBASE - 8)     /* authentication failed */
#define TF_EFULL (TF_EBASE - 9)     /* queue full: try later */
#define TF_ECONFIG (TF_EBASE - 10)  /* configuration error */
#define TF_EVERSION (TF_EBASE - 11) /* protocol or schema version mismatch */
#define TF_ETYPE (TF_EBASE - 12)    /* a JSON value has the wrong type */
#define TF_ESTORE (TF_EBASE - 13)   /* sqlite error */
#define TF_ESTATE (TF_EBASE - 14)   /* operation not valid in this state */
#define TF_ETRUNC (TF_EBASE - 15)   /* frame shorter than it says */
#define TF_ECORRUPT (TF_EBASE - 16) /* stored data is damaged */

/* Returns a static string naming rc: a TF_E* code, a negative errno, or 0. */
const char *tf_strerror(int rc);

#endif
