/* What HttpProtocol and HttpServer call in ws_protocol.c: hand over an upgrade request, feed
 * input, report loss and graceful shutdown. Internal to the asgi layer. */
#ifndef CC_ASGI_WS_ASGI_H
#define CC_ASGI_WS_ASGI_H

#include "asgi/asgi.h"

/* Validates the upgrade request (answers 400/426 itself), builds the websocket scope and starts
 * the app; on success p->ws is set and owns the connection from then on. 0 / -1. */
int cc_asgi_ws_start(cc_asgi_proto_t *p, const cc_http_request_t *req);
/* Parse buffered input (p->in) into frames. 0 / -1. */
int cc_asgi_ws_feed(cc_asgi_ws_t *ws);
/* connection_lost: the app hears websocket.disconnect (1006 unless a close came first). */
void cc_asgi_ws_lost(cc_asgi_ws_t *ws);
/* HttpServer.shutdown(): close 1001 after what is already queued. */
void cc_asgi_ws_shutdown(cc_asgi_ws_t *ws);

#endif
