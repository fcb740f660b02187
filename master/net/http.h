/*
 * http.h - net's side of an HTTP request: http.c implements the request
 * interface the API declares (api/request.h), and lws calls
 * tf_http_callback (declared with the other protocol callbacks in
 * core/master.h).
 */
#ifndef TF_HTTP_H
#define TF_HTTP_H

#include "api/request.h"

#endif
