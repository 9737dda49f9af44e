/* The error and memory discipline around libpng; see include/cnnpng.h. */
#include "cnnpng.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every allocation libpng makes goes through these: a size header before each block lets free
 * give the bytes back, and a request past the limit fails as libpng's own out-of-memory. */
typedef struct {
    int64_t used, limit;
    int over_limit;
    int strict;
    int warnings;
    char message[256];
    /* The input in memory. */
    const uint8_t *data;
    size_t size, pos;
} state;

static png_voidp on_malloc(png_structp png, png_alloc_size_t n) {
    state *s = png_get_mem_ptr(png);
    if (s->limit > 0 && (int64_t)n > s->limit - s->used) {
        s->over_limit = 1;
        return NULL; /* libpng then reports out of memory through on_error */
    }
    size_t *block = malloc(sizeof(size_t) * 2 + n);
    if (!block) return NULL;
    block[0] = n;
    s->used += (int64_t)n;
    return block + 2;
}

static void on_free(png_structp png, png_voidp p) {
    if (!p) return;
    state *s = png_get_mem_ptr(png);
    size_t *block = (size_t *)p - 2;
    s->used -= (int64_t)block[0];
    free(block);
}

static void on_error(png_structp png, png_const_charp message) {
    state *s = png_get_error_ptr(png);
    if (s->over_limit)
        snprintf(s->message, sizeof s->message, "decoding needs more than the memory limit of %lld bytes", (long long)s->limit);
    else
        snprintf(s->message, sizeof s->message, "%s", message ? message : "libpng error");
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp message) {
    state *s = png_get_error_ptr(png);
    s->warnings++;
    if (s->warnings == 1 || s->strict) snprintf(s->message, sizeof s->message, "%s", message ? message : "libpng warning");
    if (s->strict) png_longjmp(png, 1);
}

static void on_read(png_structp png, png_bytep out, size_t n) {
    state *s = png_get_io_ptr(png);
    if (n > s->size - s->pos) png_error(png, "premature end of PNG data");
    memcpy(out, s->data + s->pos, n);
    s->pos += n;
}

struct cnnpng_decoder {
    png_structp png;
    png_infop info;
    state s;
    png_bytep *rows;
};

static void copy_message(char *dst, size_t size, const char *msg) {
    if (dst && size) snprintf(dst, size, "%s", msg);
}

void cnnpng_close(cnnpng_decoder *d) {
    if (!d) return;
    if (d->rows) on_free(d->png, d->rows);
    png_destroy_read_struct(&d->png, &d->info, NULL);
    free(d);
}

cnnpng_decoder *cnnpng_open(const uint8_t *data, size_t size, const cnnpng_limits *limits,
                              cnnpng_image *info, char *error, size_t error_size) {
    memset(info, 0, sizeof *info);
    if (!data || size < 8 || png_sig_cmp(data, 0, 8) != 0) {
        copy_message(error, error_size, "not a PNG file (no PNG signature)");
        return NULL;
    }
    cnnpng_decoder *d = calloc(1, sizeof *d);
    if (!d) {
        copy_message(error, error_size, "out of memory");
        return NULL;
    }
    d->s.limit = limits->max_bytes;
    d->s.strict = limits->strict;
    d->s.data = data;
    d->s.size = size;
    d->png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, &d->s, on_error, on_warning, &d->s, on_malloc, on_free);
    if (!d->png) {
        copy_message(error, error_size, "libpng could not start");
        free(d);
        return NULL;
    }
    if (setjmp(png_jmpbuf(d->png))) {
        copy_message(error, error_size, d->s.message);
        info->over_limit = d->s.over_limit;
        cnnpng_close(d);
        return NULL;
    }
    d->info = png_create_info_struct(d->png);
    if (!d->info) png_error(d->png, "out of memory");
    png_set_read_fn(d->png, &d->s, on_read);
    /* Ancillary chunks: each at most the memory limit, at most 128 of the cached kinds. */
    png_set_chunk_malloc_max(d->png, limits->max_bytes > 0 ? (png_alloc_size_t)limits->max_bytes : 0);
    png_set_chunk_cache_max(d->png, 128);
    png_set_user_limits(d->png, 1u << 24, 1u << 24);
    png_read_info(d->png, d->info);

    png_uint_32 w = 0, h = 0;
    int depth = 0, color = 0, interlace = 0;
    png_get_IHDR(d->png, d->info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    if (w == 0 || h == 0 || (limits->max_pixels > 0 && (int64_t)w * (int64_t)h > limits->max_pixels)) {
        snprintf(d->s.message, sizeof d->s.message, "image of %lldx%lld pixels exceeds the limit of %lld pixels",
                 (long long)w, (long long)h, (long long)limits->max_pixels);
        png_longjmp(d->png, 2);
    }
    /* Everything to 8-bit gray or RGB: palettes and low bit depths expanded, 16 bits scaled,
     * alpha (and tRNS) dropped, as PIL's convert("RGB") / ("L") does. */
    png_set_expand(d->png);
    png_set_scale_16(d->png);
    png_set_strip_alpha(d->png);
    png_set_interlace_handling(d->png);
    png_read_update_info(d->png, d->info);
    int channels = png_get_channels(d->png, d->info);
    size_t rowbytes = png_get_rowbytes(d->png, d->info);
    if ((channels != 1 && channels != 3) || rowbytes != (size_t)w * (size_t)channels) {
        snprintf(d->s.message, sizeof d->s.message, "unexpected PNG layout: %d channels, %zu bytes per row", channels, rowbytes);
        png_longjmp(d->png, 2);
    }
    int64_t bytes = (int64_t)rowbytes * (int64_t)h;
    if (limits->max_bytes > 0 && bytes + (int64_t)h * (int64_t)sizeof(png_bytep) > limits->max_bytes - d->s.used) {
        d->s.over_limit = 1;
        snprintf(d->s.message, sizeof d->s.message, "decoding needs more than the memory limit of %lld bytes",
                 (long long)limits->max_bytes);
        png_longjmp(d->png, 2);
    }
    info->width = (int32_t)w;
    info->height = (int32_t)h;
    info->channels = channels;
    info->interlaced = interlace != PNG_INTERLACE_NONE;
    info->buffer_bytes = (size_t)bytes;
    return d;
}

int cnnpng_read(cnnpng_decoder *d, uint8_t *out, cnnpng_image *info, char *error, size_t error_size) {
    if (setjmp(png_jmpbuf(d->png))) {
        copy_message(error, error_size, d->s.message);
        info->over_limit = d->s.over_limit;
        cnnpng_close(d);
        return 1;
    }
    size_t rowbytes = (size_t)info->width * (size_t)info->channels;
    d->rows = on_malloc(d->png, sizeof(png_bytep) * (size_t)info->height);
    if (!d->rows) png_error(d->png, "out of memory");
    for (int32_t y = 0; y < info->height; y++) d->rows[y] = out + (size_t)y * rowbytes;
    png_read_image(d->png, d->rows);
    /* The chunks after the image: checked in strict mode; a lenient decode has its pixels. */
    if (d->s.strict) png_read_end(d->png, NULL);
    info->warnings = d->s.warnings;
    if (d->s.warnings > 0) copy_message(error, error_size, d->s.message);
    cnnpng_close(d);
    return 0;
}

/* ---- Encoding (tests and tools) ---- */

typedef struct {
    uint8_t *data;
    size_t size, capacity;
    int failed;
} sink;

static void on_write(png_structp png, png_bytep bytes, size_t n) {
    sink *s = png_get_io_ptr(png);
    if (s->size + n > s->capacity) {
        size_t capacity = (s->capacity + n) * 2;
        uint8_t *grown = realloc(s->data, capacity);
        if (!grown) {
            s->failed = 1;
            png_error(png, "out of memory");
        }
        s->data = grown;
        s->capacity = capacity;
    }
    memcpy(s->data + s->size, bytes, n);
    s->size += n;
}

static void on_flush(png_structp png) { (void)png; }

static void on_encode_error(png_structp png, png_const_charp message) {
    char *buffer = png_get_error_ptr(png);
    snprintf(buffer, 256, "%s", message ? message : "libpng error");
    png_longjmp(png, 1);
}

int cnnpng_encode(const uint8_t *pixels, int32_t width, int32_t height, int32_t channels, int32_t bit_depth,
                   int32_t interlace, int32_t palette, uint8_t **out, size_t *out_size, char *error, size_t error_size) {
    static const int colors[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    if (!pixels || width <= 0 || height <= 0 || channels < 1 || channels > 4 || (bit_depth != 8 && bit_depth != 16) ||
        (palette && (channels != 3 || bit_depth != 8))) {
        copy_message(error, error_size, "cannot encode these pixels as PNG");
        return 1;
    }
    char message[256] = "";
    sink s = {0};
    /* Set after setjmp and freed after a longjmp: volatile, so they are read from memory. */
    png_bytep volatile row = NULL;
    uint8_t *volatile indices = NULL;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, message, on_encode_error, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        copy_message(error, error_size, "libpng could not start");
        return 1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(s.data);
        free(row);
        free(indices);
        copy_message(error, error_size, message);
        return 1;
    }
    png_set_write_fn(png, &s, on_write, on_flush);
    png_color table[256];
    int entries = 0;
    size_t n = (size_t)width * (size_t)height;
    if (palette) {
        indices = malloc(n);
        if (!indices) png_error(png, "out of memory");
        for (size_t i = 0; i < n; i++) {
            const uint8_t *p = pixels + 3 * i;
            int k = 0;
            while (k < entries && !(table[k].red == p[0] && table[k].green == p[1] && table[k].blue == p[2])) k++;
            if (k == entries) {
                if (entries == 256) png_error(png, "more than 256 colors for a palette");
                table[entries++] = (png_color){p[0], p[1], p[2]};
            }
            indices[i] = (uint8_t)k;
        }
        png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_PALETTE,
                     interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
        png_set_PLTE(png, info, table, entries);
    } else {
        png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, bit_depth, colors[channels],
                     interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    }
    png_write_info(png, info);
    int passes = png_set_interlace_handling(png);
    size_t samples = palette ? (size_t)width : (size_t)width * (size_t)channels;
    row = malloc(samples * (bit_depth == 16 ? 2 : 1));
    if (!row) png_error(png, "out of memory");
    for (int pass = 0; pass < passes; pass++) {
        for (int32_t y = 0; y < height; y++) {
            for (size_t i = 0; i < samples; i++) {
                uint8_t v = palette ? indices[(size_t)y * (size_t)width + i] : pixels[(size_t)y * samples + i];
                if (bit_depth == 16) { row[2 * i] = v; row[2 * i + 1] = v; }
                else row[i] = v;
            }
            png_write_row(png, row);
        }
    }
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(row);
    free(indices);
    *out = s.data;
    *out_size = s.size;
    return 0;
}

void cnnpng_free(void *p) { free(p); }
