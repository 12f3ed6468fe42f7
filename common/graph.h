/*
 * graph.h - the WhatsApp Cloud API (Graph API) media client.
 *
 * Two steps fetch one media (http-apis.md part A):
 *
 *   1. graph_lookup(): GET {base}/{version}/{media-id}[?phone_number_id=..] with the bearer
 *      token answers a JSON object with a download URL valid for 5 minutes, the mime type,
 *      the sha256 and the file size (struct graph_media).
 *   2. graph_download(): GET of that URL with the same bearer and an explicit User-Agent
 *      streams the body to the caller chunk by chunk, with backpressure (pause/resume), a
 *      byte cap, an early rejection of HTML answers and a final sha256/length check.
 *
 * Every failure is classified (enum graph_class) the way http-apis.md §A3 says a worker
 * should react: retry soon, slow down, stop the whole fleet (token or permission problem),
 * fail the job for good, or fetch a fresh URL once.
 *
 * The pure helpers (parsers, classification, URL building, usage headers) do no I/O and
 * are usable on their own. Nothing here logs. The token and the download URL are secrets:
 * they never appear in error messages.
 */
#ifndef MI_GRAPH_H
#define MI_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct mi_http;
struct graph_client;
struct graph_lookup;
struct graph_download;

/* Positive codes of this module. They do not overlap HTTP_E_* (20..29) of http.h, so one
 * int status can carry either. */
enum {
    GRAPH_PAUSE = 1,            /* from a data callback: pause until graph_download_resume() */
    GRAPH_E_BADDATA = 40,       /* malformed or wrongly typed JSON, bad id/version/base URL */
    GRAPH_E_TOOBIG = 41,        /* the body (or JSON document) exceeds its cap */
    GRAPH_E_HTTP = 42,          /* an HTTP status other than 200 (see http_status) */
    GRAPH_E_HTML = 43,          /* a text/html answer instead of media */
    GRAPH_E_SHA_MISMATCH = 44,  /* the body's sha256 differs from the announced one */
    GRAPH_E_SIZE_MISMATCH = 45, /* the body's length differs from the announced file_size */
    GRAPH_E_NOTOKEN = 46,       /* no token is configured */
    GRAPH_E_ABORTED = 47,       /* the data callback asked to abort */
};

#define GRAPH_MAX_JSON (1024 * 1024)      /* Graph JSON answers are at most 1 MiB */
#define GRAPH_MAX_ID 256                   /* media ids are short digit strings in practice */
#define GRAPH_MAX_MIME 255
#define GRAPH_DEFAULT_VERSION "v25.0"
#define GRAPH_DEFAULT_BASE "https://graph.facebook.com"

/* What the caller should do about a failure (http-apis.md §A3). */
enum graph_class {
    GRAPH_OK = 0,
    GRAPH_TRANSIENT,     /* 5xx, codes 1/2/131000/131016, transport errors, bad bodies: retry */
    GRAPH_RATELIMIT,     /* codes 4/80007/130429, HTTP 429: back off (see graph_usage) */
    GRAPH_CONFIG,        /* codes 0/190/3/10/200-299: token or permission; fleet-wide problem */
    GRAPH_PERMANENT,     /* code 100 (unknown/expired media), oversize, bad data: fail the job */
    GRAPH_REFRESH_URL,   /* download 401/403/404: the URL expired; look up a fresh one once */
};

enum graph_op { GRAPH_OP_LOOKUP = 0, GRAPH_OP_DOWNLOAD };

/* The answer of a media lookup. Embedded: graph_media_deinit() frees the strings. */
struct graph_media {
    char *url;                 /* new; a secret: never log it */
    char *mime_type;           /* new; verbatim, e.g. "audio/ogg; codecs=opus" */
    char *id;                  /* new */
    unsigned char sha256[32];
    char sha256_hex[65];       /* lowercase hex, whatever form Graph used */
    int64_t file_size;         /* -1 when absent */
};

#define GRAPH_MEDIA_NULL { NULL, NULL, NULL, { 0 }, "", -1 }

/* A Graph error object ({"error":{...}}); fixed buffers, truncated, control chars removed. */
struct graph_error {
    bool present;              /* a Graph error object was found */
    bool is_transient;
    int code;
    int subcode;               /* 0 when absent */
    char type[64];
    char message[256];
    char details[256];         /* error_data.details */
    char fbtrace_id[64];
};

/* Throttling state read from X-App-Usage / X-Business-Use-Case-Usage. */
struct graph_usage {
    int max_pct;               /* highest percentage seen, 0 when no header */
    int regain_minutes;        /* highest estimated_time_to_regain_access */
    uint64_t delay_ms;         /* suggested pause before the next Graph call, 0: none */
};

/**
 * graph_media_parse() - parse the JSON answer of a media lookup.
 * @m: filled on success (caller frees with graph_media_deinit()); cleared on failure.
 * @json, @len: the body (need not be NUL-terminated).
 * @expect_id: the id that was looked up (an answer for another id is bad data), or NULL.
 * @err: filled on failure with a message naming the field (never the URL).
 * Return: 0; GRAPH_E_TOOBIG when @len > GRAPH_MAX_JSON; GRAPH_E_BADDATA for invalid JSON,
 * a missing or wrongly typed field, an unusable sha256, file_size or mime type; -ENOMEM.
 *
 * url must be an http(s) URL, mime_type a short string without control characters (it
 * becomes a Content-Type header), sha256 64 hex or 43/44 base64 characters, file_size a
 * non-negative integer or a string of digits (absent allowed).
 */
int graph_media_parse(struct graph_media *m, const char *json, size_t len, const char *expect_id,
                      struct mi_err *err) MI_MUSTCHECK;

/** graph_media_deinit() - free the strings of @m and reset it; idempotent; NULL is a no-op. */
void graph_media_deinit(struct graph_media *m);

/**
 * graph_media_move() - move @src into @dst (which must be deinitialised or NULL-initialised);
 * @src is left empty. Lets a lookup callback keep the answer past the callback.
 */
void graph_media_move(struct graph_media *dst, struct graph_media *src);

/**
 * graph_sha256_parse() - decode a sha256 given as 64 hex digits (either case) or as base64
 * (43 or 44 characters, standard or URL-safe alphabet).
 * @s: NUL-terminated text. @out: the 32 bytes.
 * Return: 0 or GRAPH_E_BADDATA.
 */
int graph_sha256_parse(const char *s, unsigned char out[32]) MI_MUSTCHECK;

/** graph_sha256_hex() - write the 64 lowercase hex digits of @sha and a NUL into @out. */
void graph_sha256_hex(const unsigned char sha[32], char out[65]);

/**
 * graph_error_parse() - read the Graph error object of an error answer.
 * @e: always filled; e->present is false when @body is not a Graph error (HTML, empty...).
 * Return: true when a Graph error object was found.
 */
bool graph_error_parse(struct graph_error *e, const char *body, size_t len);

/**
 * graph_classify() - the class of a finished (or failed) request.
 * @op: lookup or download (download 401/403/404 means "fetch a fresh URL").
 * @status: 0 when a complete answer arrived, else an HTTP_E_* of http.h, a GRAPH_E_* of
 *          this module or a negative -errno.
 * @http_status: the HTTP status (0 when none).
 * @ge: the parsed Graph error or NULL. Graph codes win over HTTP statuses, as Meta advises.
 * Return: the class; GRAPH_OK only for @status 0 with a 2xx status.
 */
enum graph_class graph_classify(enum graph_op op, int status, long http_status,
                                const struct graph_error *ge);

/** graph_class_name() - "ok", "transient", "ratelimit", "config", "permanent", "refresh-url". */
const char *graph_class_name(enum graph_class c);

/**
 * graph_usage_parse() - turn the throttle headers into a suggested delay.
 * @u: filled (zeroes when both headers are absent or unreadable).
 * @app_usage: X-App-Usage value or NULL. @buc_usage: X-Business-Use-Case-Usage or NULL.
 * @threshold_pct: percentage from which to slow down (0 means 80).
 *
 * The delay is estimated_time_to_regain_access minutes when that is positive; else, once the
 * highest percentage reaches @threshold_pct, it grows linearly from 1 s to 60 s at 100 %.
 * Unreadable headers are ignored (they are advisory).
 */
void graph_usage_parse(struct graph_usage *u, const char *app_usage, const char *buc_usage,
                       int threshold_pct);

/**
 * graph_lookup_url() - build {base}/{version}/{media-id}[?phone_number_id=PNID].
 * @out: receives a new string (caller frees).
 * @base: http(s) URL without query; trailing slashes are dropped.
 * @version: "vNN.N". @media_id: 1..GRAPH_MAX_ID bytes, percent-encoded here; "." and ".."
 * are refused. @phone_number_id: NULL or "" for none, else percent-encoded.
 * Return: 0, GRAPH_E_BADDATA with @err filled, or -ENOMEM.
 */
int graph_lookup_url(char **out, const char *base, const char *version, const char *media_id,
                     const char *phone_number_id, struct mi_err *err) MI_MUSTCHECK;

/* ---- the client on the loop (needs common/http.h) ------------------------------------ */

/*
 * Token getter: returns the current token (borrowed; it must stay valid until the call
 * returns, and is copied at once) or NULL when none is available. Called once per request,
 * so a token file that was re-read is picked up by the next request.
 */
typedef const char *(*graph_token_fn)(void *ctx);

struct graph_client_opts {
    const char *base_url;        /* NULL: GRAPH_DEFAULT_BASE */
    const char *version;         /* NULL: GRAPH_DEFAULT_VERSION */
    const char *phone_number_id; /* NULL or "": not sent */
    const char *user_agent;      /* NULL: "media-ingest-worker/<project version>" */
    uint64_t lookup_timeout_ms;  /* 0: 30 s */
    uint64_t download_timeout_ms; /* 0: 10 min; the whole download's deadline */
    uint64_t download_idle_ms;   /* 0: 60 s; a download that moves no byte that long (not
                                    counting the caller's pauses) is cut: transient */
    int usage_threshold_pct;     /* 0: 80 */
    graph_token_fn token_fn;     /* NULL: use graph_client_set_token() */
    void *token_ctx;
};

/**
 * graph_client_new() - make a client using @http (borrowed; must outlive the client).
 * @opts: copied. Return: 0, -ENOMEM, or GRAPH_E_BADDATA (bad base URL or version) with @err.
 */
int graph_client_new(struct graph_client **cp, struct mi_http *http,
                     const struct graph_client_opts *opts, struct mi_err *err) MI_MUSTCHECK;

/**
 * graph_client_free() - free the client. Lookups and downloads still running must have been
 * cancelled and completed first (the client is only referenced, never owned, by them; a
 * running operation keeps its own copies, so freeing early is safe but their callbacks still
 * run). NULL is a no-op. The token copy is wiped.
 */
void graph_client_free(struct graph_client *c);

/**
 * graph_client_set_token() - set the token used when no getter was given (copied; the old
 * copy is wiped). NULL or "" clears it. Return: 0 or -ENOMEM.
 */
int graph_client_set_token(struct graph_client *c, const char *token) MI_MUSTCHECK;

/* The outcome of a lookup; valid during the callback only (steal media with
 * graph_media_move()). */
struct graph_lookup_result {
    enum graph_class cls;
    int status;                 /* 0 or HTTP_E_* / GRAPH_E_* / -errno, like graph_classify() */
    long http_status;
    struct graph_media media;   /* filled when cls == GRAPH_OK */
    struct graph_error gerr;
    struct graph_usage usage;
};

/* Called exactly once, from the loop; @err carries a message when cls != GRAPH_OK. */
typedef void (*graph_lookup_cb)(void *ctx, struct graph_lookup_result *res,
                                const struct mi_err *err);

/**
 * graph_lookup() - start the metadata request for @media_id.
 * @lkp: receives a handle for graph_lookup_cancel() (valid until @cb returns), or NULL.
 * Return: 0 and @cb runs later exactly once; or GRAPH_E_BADDATA / GRAPH_E_NOTOKEN / -ENOMEM
 * / an HTTP_E_* code with @err filled, and then @cb is never called.
 */
int graph_lookup(struct graph_client *c, const char *media_id, graph_lookup_cb cb, void *ctx,
                 struct graph_lookup **lkp, struct mi_err *err) MI_MUSTCHECK;

/** graph_lookup_cancel() - stop a lookup; its callback runs later with HTTP_E_CANCELED. */
void graph_lookup_cancel(struct graph_lookup *lk);

/*
 * Data callback of a download: @len > 0 bytes of the body. Return 0 (consumed), GRAPH_PAUSE
 * (not consumed: the same bytes come again after graph_download_resume()) or any other value
 * to abort (the download then ends with GRAPH_E_ABORTED).
 */
typedef int (*graph_data_cb)(void *ctx, const char *buf, size_t len);

struct graph_download_result {
    enum graph_class cls;
    int status;                 /* as in graph_lookup_result */
    long http_status;
    uint64_t bytes;             /* bytes given to the data callback and consumed */
    unsigned char sha256[32];   /* of those bytes; all zero when no expected_sha256 was given */
    char sha256_hex[65];
    struct graph_error gerr;    /* when an error body was a Graph error */
};

typedef void (*graph_done_cb)(void *ctx, const struct graph_download_result *res,
                              const struct mi_err *err);

/**
 * graph_download() - stream the media at @url (from graph_lookup) to @data_cb.
 * @url: copied; a secret, never put into messages.
 * @max_bytes: hard cap on the body (0: no cap beyond @expected_size); a bigger answer ends
 *             with GRAPH_E_TOOBIG (permanent), checked on Content-Length and while writing.
 * @expected_size: the announced file_size or -1; a different length is GRAPH_E_SIZE_MISMATCH.
 * @expected_sha256: 32 bytes or NULL (then the body is not hashed at all, for callers that
 *                   verify it themselves); a different digest is GRAPH_E_SHA_MISMATCH (both
 *                   transient: the caller decides when a repeated mismatch becomes final).
 * @dlp: receives a handle for resume/cancel (valid until @done_cb returns), or NULL.
 * Return: 0 and @done_cb runs later exactly once; else an error with @err filled, and
 * neither callback is called.
 *
 * Only a 200 answer reaches @data_cb; text/html answers are refused before any byte is
 * delivered. Redirects are followed (at most 3); curl drops the Authorization header
 * when the host or port changes.
 */
int graph_download(struct graph_client *c, const char *url, uint64_t max_bytes,
                   int64_t expected_size, const unsigned char *expected_sha256,
                   graph_data_cb data_cb, graph_done_cb done_cb, void *ctx,
                   struct graph_download **dlp, struct mi_err *err) MI_MUSTCHECK;

/** graph_download_resume() - continue after GRAPH_PAUSE; @data_cb may run inside this call. */
void graph_download_resume(struct graph_download *dl);

/** graph_download_cancel() - stop; @done_cb runs later with HTTP_E_CANCELED. */
void graph_download_cancel(struct graph_download *dl);

#endif
