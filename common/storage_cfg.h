/*
 * storage_cfg.h - the storage_config of the executables' settings (contract.md).
 *
 * The worker and media-queue both build their storage backend from the same settings
 * table (config.h); this is the one place that maps MEDIA_STORAGE_BACKEND and the
 * AWS_* / R2_* / MEDIA_LOCAL_DIR settings onto struct storage_config.
 */
#ifndef MI_STORAGE_CFG_H
#define MI_STORAGE_CFG_H

#include "config.h"
#include "err.h"
#include "storage.h"

/**
 * storage_cfg_from_config() - fill @sc from @cfg for MEDIA_STORAGE_BACKEND.
 * Strings in @sc are borrowed from @cfg. Request deadline 120 s, 4 retries.
 * Return: 0, or 2 with @err naming the variables an s3/r2 backend still needs.
 */
int storage_cfg_from_config(const struct mi_config *cfg, struct storage_config *sc,
                            struct mi_err *err) MI_MUSTCHECK;

#endif
