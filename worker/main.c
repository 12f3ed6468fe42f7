/*
 * media-ingest-worker - the daemon: claims BullMQ jobs {messageId, providerMediaId},
 * stores the media durably and records where it lives on the "Message" row.
 */
#include "wmain.h"

static int setup(void **hctx, struct wloop_handler *h, uv_loop_t *loop,
                 const struct mi_config *cfg, const struct mi_log *log, struct mi_err *err)
{
    /* The media pipeline (Graph API → storage → Message row) is wired in by issue 4;
     * until then the daemon refuses to start rather than burn real jobs. */
    return mi_err_set(err, 2, "this build has no media pipeline yet; use a build that "
                      "includes it");
}

int main(int argc, char **argv)
{
    static const struct wmain_ops ops = {
        .prog = "media-ingest-worker",
        .summary = "Make WhatsApp media durable: BullMQ jobs → Graph API → S3/R2/local → "
                   "\"Message\" row.",
        .setup = setup,
    };
    return worker_main(argc, argv, &ops);
}
