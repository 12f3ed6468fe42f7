/*
 * bfutil.h - the pure parts of media-backfill: time arguments, deterministic job ids
 * and the cursor's filter fingerprint. No I/O, so they are unit-tested directly.
 */
#ifndef MI_BFUTIL_H
#define MI_BFUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

/* Room for any id bf_job_id() writes, including the NUL. */
#define BF_JOB_ID_MAX 208

/* Longest readable id ("media-<messageId>-<providerMediaId>"); longer ones are hashed. */
#define BF_JOB_ID_READABLE_MAX 200

/**
 * bf_parse_time() - parse a --since/--until argument into epoch milliseconds (UTC).
 * @s: one of
 *     - "now";
 *     - a duration, optionally followed by " ago": "30d", "30d ago", "12h ago", "90m",
 *       "45s", "1500ms" (all mean that long before @now_ms);
 *     - an ISO 8601 date "2024-05-01" (midnight UTC) or date-time
 *       "2024-05-01T13:45", "2024-05-01T13:45:10", "2024-05-01 13:45:10.250", with an
 *       optional zone "Z", "+02:00", "-0530"; without a zone the time is UTC, as Prisma
 *       stores DateTime.
 * @now_ms: the current time, for relative forms.
 * @out: receives the time.
 * @err: says what is wrong (code 2).
 * Return: 0, or 2 with @err filled.
 */
int bf_parse_time(const char *s, int64_t now_ms, int64_t *out, struct mi_err *err);

/**
 * bf_job_id() - the deterministic BullMQ job id of message @mid's media @pmid.
 *
 * "media-<mid>-<pmid>" when @mid is made of [A-Za-z0-9._-], @pmid of [A-Za-z0-9._]
 * (no '-', so the last '-' separates the two and different pairs never share an id) and
 * the id has at most BF_JOB_ID_READABLE_MAX characters. Otherwise
 * "media_<sha256 hex of '<len(mid)>:' mid pmid>" (the '_' keeps the two forms apart).
 * Both forms are valid BullMQ custom ids: never an integer, never a ':'.
 * @out: at least BF_JOB_ID_MAX bytes.
 * Return: 0 for the readable form, 1 for the hash form, -ENOMEM when OpenSSL could not
 *         hash (then @out is "").
 */
int bf_job_id(const char *mid, const char *pmid, char out[BF_JOB_ID_MAX]);

/**
 * bf_filters() - the fingerprint of the options that decide which rows a run enqueues:
 * "since=<arg>;until=<arg>;max_age=<ms>;include_expired=<0|1>" ("-" for an unset time).
 * The arguments are kept as typed ("30d ago"), so a nightly run with the same flags
 * matches the cursor an interrupted run left. Return: false when @out is too small.
 */
bool bf_filters(char *out, size_t n, const char *since, const char *until, int64_t max_age_ms,
                bool include_expired);

#endif
