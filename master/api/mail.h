/*
 * mail.h (api) - the mail outbox's endpoints (docs/api.md, "Mail").
 */
#ifndef TF_API_MAIL_H
#define TF_API_MAIL_H

#include <stddef.h>

#include "net/http.h"

/* GET /api/v1/mail, GET /api/v1/mail/{id}, GET /api/v1/mail/{id}/message;
 * segs are the path segments after "mail". Needs a token: mail metadata
 * shows addresses. */
void tf_api_mail(tf_http_req_t *r, char **segs, size_t nsegs);

#endif
