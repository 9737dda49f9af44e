/* The C shim between SwiftCNN and libpng. No stable API: internal to SwiftCNN.
 *
 * libpng reports errors through a callback that must not return; the default one prints and
 * longjmps, and without a jump buffer aborts. This shim installs handlers that record libpng's
 * message and longjmp back here, counts every byte libpng allocates against a limit, checks the
 * header's size before any image memory is taken, and returns libpng's own message. Warnings
 * (bad CRCs of ancillary chunks, bad ancillary data) are counted; in strict mode the first one is
 * an error. Nothing is ever printed. */
#ifndef CNNPNG_H
#define CNNPNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct cnnpng_limits {
    int64_t max_pixels;      /* width * height, checked after the header, before any allocation */
    int64_t max_bytes;       /* > 0: libpng's own allocations (chunks, rows, zlib) plus the output
                                buffer may not exceed it */
    int32_t strict;          /* 1: a libpng warning is an error, and the file must end properly */
} cnnpng_limits;

typedef struct cnnpng_image {
    size_t buffer_bytes;     /* bytes the output buffer of cnnpng_read needs */
    int32_t width, height;
    int32_t channels;        /* 1 (gray, gray + alpha) or 3 (RGB, RGBA, palette): alpha is dropped,
                                16-bit samples are scaled to 8, palettes and low bit depths expanded */
    int32_t warnings;        /* libpng warnings in lenient mode */
    int32_t over_limit;      /* set on an error: decoding needed more than limits->max_bytes */
    int32_t interlaced;
} cnnpng_image;

typedef struct cnnpng_decoder cnnpng_decoder;

/* As cnnjpeg_open / _read / _close: open reads the header, checks the limits and sets up the
 * transformations (filling info); read writes height rows of width * channels bytes into out
 * (buffer_bytes long) and frees the decoder whatever happens. NULL / non-zero on error, with a
 * message in error (NUL-terminated, at most error_size bytes). */
cnnpng_decoder *cnnpng_open(const uint8_t *data, size_t size, const cnnpng_limits *limits,
                              cnnpng_image *info, char *error, size_t error_size);
int cnnpng_read(cnnpng_decoder *decoder, uint8_t *out, cnnpng_image *info, char *error, size_t error_size);
void cnnpng_close(cnnpng_decoder *decoder);

/* Encodes interleaved 8-bit pixels (channels 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA) as PNG, for
 * tests and tools; bit_depth 8 or 16 (16: each sample v is written as v * 257); interlace 0 or 1
 * (Adam7); palette 1 writes an indexed PNG (channels 3, at most 256 colors). Returns 0 or non-zero
 * with a message; *out (free with cnnpng_free) holds *out_size bytes. */
int cnnpng_encode(const uint8_t *pixels, int32_t width, int32_t height, int32_t channels, int32_t bit_depth,
                   int32_t interlace, int32_t palette, uint8_t **out, size_t *out_size, char *error, size_t error_size);

void cnnpng_free(void *p);

#endif
