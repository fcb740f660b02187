/*
 * mail.h (api) - the mail outbox's endpoints (docs/api.md, "Mail").
 */
#ifndef TF_API_MAIL_H
#define TF_API_MAIL_H

#include "api/handlers.h"

/* GET /api/v1/mail, GET /api/v1/mail/{id}, GET /api/v1/mail/{id}/message.
 * The route table lets only a token's holder in (mail metadata shows
 * addresses) and has parsed {id}. */
void tf_api_mail_list(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_mail_one(tf_http_req_t *r, const tf_route_args_t *a);
void tf_api_mail_message(tf_http_req_t *r, const tf_route_args_t *a);

#endif
