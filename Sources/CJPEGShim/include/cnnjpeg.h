/* The C shim between SwiftCNN and libjpeg. No stable API: internal to SwiftCNN.
 *
 * libjpeg reports errors by calling error_exit, which by default calls exit(). Swift cannot
 * setjmp, so this shim installs an error manager that longjmps back here, cleans up, and returns
 * libjpeg's own message. Warnings (e.g. a premature end of data) are counted; in strict mode the
 * first one is an error. Nothing is ever printed. */
#ifndef CNNJPEG_H
#define CNNJPEG_H

#include <stddef.h>
#include <stdint.h>

typedef struct cnnjpeg_limits {
    int64_t max_pixels;      /* width * height, checked after the header, before any allocation */
    int32_t max_scans;       /* progressive scans */
    int32_t strict;          /* 1: a libjpeg warning is an error */
    int32_t min_width;       /* > 0: decode with DCT scaling at the smallest 1/2, 1/4 or 1/8 that */
    int32_t min_height;      /*      still gives at least min_width x min_height; 0: full size */
    int64_t max_bytes;       /* > 0: libjpeg's working memory (max_memory_to_use) plus the output
                                buffer may not exceed it; checked before they are allocated */
} cnnjpeg_limits;

typedef struct cnnjpeg_image {
    size_t buffer_bytes;     /* bytes the output buffer of cnnjpeg_read needs (CMYK decodes 4 bytes a pixel) */
    int32_t width, height;   /* as decoded (after DCT scaling) */
    int32_t full_width, full_height; /* as the header declares */
    int32_t channels;        /* 1 (grayscale) or 3 (RGB; CMYK and YCCK are converted) */
    int32_t warnings;        /* libjpeg warnings in lenient mode (e.g. corrupt or truncated data) */
    int32_t scans;
    int32_t over_limit;      /* set on an error: decoding needed more than limits->max_bytes */
} cnnjpeg_image;

typedef struct cnnjpeg_decoder cnnjpeg_decoder;

/* Decoding in two steps, so that the caller allocates the pixels: cnnjpeg_open reads the header,
 * checks the limits and starts decompressing (filling width, height, channels, buffer_bytes);
 * cnnjpeg_read writes height * width * channels interleaved bytes into out (buffer_bytes long)
 * and frees the decoder whatever happens. Both return NULL / non-zero on error, with a message in
 * error (NUL-terminated, at most error_size bytes). cnnjpeg_close frees a decoder not read. */
cnnjpeg_decoder *cnnjpeg_open(const uint8_t *data, size_t size, const cnnjpeg_limits *limits,
                                cnnjpeg_image *info, char *error, size_t error_size);
int cnnjpeg_read(cnnjpeg_decoder *decoder, uint8_t *out, cnnjpeg_image *info, char *error, size_t error_size);
void cnnjpeg_close(cnnjpeg_decoder *decoder);

/* Reads only the header: width, height, channels of the source. Same return convention. */
int cnnjpeg_header(const uint8_t *data, size_t size, int32_t *width, int32_t *height,
                    int32_t *components, char *error, size_t error_size);

/* Encodes interleaved pixels (1: grayscale, 3: RGB, 4: CMYK) to JPEG. progressive: 0/1;
 * restart_rows: restart interval in MCU rows (0: none); subsampling: 444, 422 or 420;
 * ycck: 1 writes 4-channel data as YCCK instead of CMYK. Returns 0 or non-zero with a message;
 * on success *out (free with cnnjpeg_free) holds *out_size bytes. */
int cnnjpeg_encode(const uint8_t *pixels, int32_t width, int32_t height, int32_t channels,
                    int32_t quality, int32_t progressive, int32_t restart_rows, int32_t subsampling,
                    int32_t ycck, uint8_t **out, size_t *out_size, char *error, size_t error_size);

void cnnjpeg_free(void *p);

#endif
