/*
 * media.h - the media job handler: {messageId, providerMediaId} → Graph API → storage →
 * "Message" row → BullMQ completed, as an explicit per-job state machine.
 */
#ifndef MI_MEDIA_H
#define MI_MEDIA_H

#include "wmain.h"

/** media_ops - the handler's hooks for worker_main(). */
extern const struct wmain_ops media_ops;

#endif
