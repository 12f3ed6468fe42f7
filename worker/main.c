/*
 * media-ingest-worker - the daemon: claims BullMQ jobs {messageId, providerMediaId},
 * stores the media durably and records where it lives on the "Message" row.
 */
#include "media.h"

int main(int argc, char **argv)
{
    return worker_main(argc, argv, &media_ops);
}
