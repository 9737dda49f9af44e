/* The setjmp/longjmp error manager around libjpeg; see include/cnnjpeg.h. */
#include "cnnjpeg.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libcnn.so links Debian's libjpeg.a, whose default message printer reads `stderr` with a
 * reference a shared library cannot hold; `make lib` renames that reference to this pointer
 * (Makefile, STATIC_DEPS). libjpeg never prints through it: `silent` replaces the printer. */
__attribute__((visibility("hidden"))) FILE *cnnjpeg_stderr;
__attribute__((constructor)) static void cnnjpeg_set_stderr(void) { cnnjpeg_stderr = stderr; }
#include <jpeglib.h>
#include <jerror.h>

typedef struct {
    struct jpeg_error_mgr base;
    jmp_buf escape;
    int strict;
    int warnings;
    int32_t max_scans;
    int64_t max_bytes;
    int over_limit;
    char message[JMSG_LENGTH_MAX + 64];
} error_manager;

static void on_error(j_common_ptr cinfo) {
    error_manager *err = (error_manager *)cinfo->err;
    if (err->base.msg_code == JERR_NO_BACKING_STORE || err->base.msg_code == JERR_OUT_OF_MEMORY) {
        /* Without a backing store, libjpeg says this when max_memory_to_use is reached. */
        snprintf(err->message, sizeof err->message, "decoding needs more than the memory limit of %lld bytes",
                 (long long)err->max_bytes);
        err->over_limit = 1;
    } else {
        (*cinfo->err->format_message)(cinfo, err->message);
    }
    longjmp(err->escape, 1);
}

/* level -1: a warning (corrupt data, premature end); levels >= 0: trace messages, ignored. */
static void on_message(j_common_ptr cinfo, int level) {
    error_manager *err = (error_manager *)cinfo->err;
    if (level >= 0) return;
    err->warnings++;
    if (err->strict) {
        (*cinfo->err->format_message)(cinfo, err->message);
        longjmp(err->escape, 1);
    }
    if (err->warnings == 1) (*cinfo->err->format_message)(cinfo, err->message);
}

static void silent(j_common_ptr cinfo) { (void)cinfo; }

/* Called between scans: stops files with absurd numbers of progressive scans, a known way to make
 * a small file take minutes to decode. */
static void on_progress(j_common_ptr cinfo) {
    error_manager *err = (error_manager *)cinfo->err;
    if (cinfo->is_decompressor) {
        int scan = ((j_decompress_ptr)cinfo)->input_scan_number;
        if (err->max_scans > 0 && scan > err->max_scans) {
            snprintf(err->message, sizeof err->message, "more than %d progressive scans", (int)err->max_scans);
            longjmp(err->escape, 2);
        }
    }
}

static void init_errors(error_manager *err, j_common_ptr cinfo, int strict, int32_t max_scans) {
    memset(err, 0, sizeof *err);
    cinfo->err = jpeg_std_error(&err->base);
    err->base.error_exit = on_error;
    err->base.emit_message = on_message;
    err->base.output_message = silent;
    err->strict = strict;
    err->max_scans = max_scans;
}

static void copy_message(char *dst, size_t size, const char *prefix, const char *msg) {
    if (dst && size) snprintf(dst, size, "%s%s", prefix, msg);
}

int cnnjpeg_header(const uint8_t *data, size_t size, int32_t *width, int32_t *height,
                    int32_t *components, char *error, size_t error_size) {
    struct jpeg_decompress_struct cinfo;
    error_manager err;
    if (!data || size == 0) {
        copy_message(error, error_size, "", "empty data");
        return 1;
    }
    init_errors(&err, (j_common_ptr)&cinfo, 0, 0);
    if (setjmp(err.escape)) {
        jpeg_destroy_decompress(&cinfo);
        copy_message(error, error_size, "", err.message);
        return 1;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    *width = (int32_t)cinfo.image_width;
    *height = (int32_t)cinfo.image_height;
    *components = cinfo.num_components;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

struct cnnjpeg_decoder {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_progress_mgr progress;
    error_manager err;
    int cmyk;
};

cnnjpeg_decoder *cnnjpeg_open(const uint8_t *data, size_t size, const cnnjpeg_limits *limits,
                                cnnjpeg_image *info, char *error, size_t error_size) {
    memset(info, 0, sizeof *info);
    if (!data || size == 0) {
        copy_message(error, error_size, "", "empty data");
        return NULL;
    }
    cnnjpeg_decoder *d = calloc(1, sizeof *d);
    if (!d) {
        copy_message(error, error_size, "", "out of memory");
        return NULL;
    }
    j_decompress_ptr cinfo = &d->cinfo;
    init_errors(&d->err, (j_common_ptr)cinfo, limits->strict, limits->max_scans);
    if (setjmp(d->err.escape)) {
        copy_message(error, error_size, "", d->err.message);
        info->over_limit = d->err.over_limit;
        jpeg_destroy_decompress(cinfo);
        free(d);
        return NULL;
    }
    jpeg_create_decompress(cinfo);
    d->err.max_bytes = limits->max_bytes;
    if (limits->max_bytes > 0) cinfo->mem->max_memory_to_use = (long)limits->max_bytes;
    d->progress.progress_monitor = on_progress;
    cinfo->progress = &d->progress;
    jpeg_mem_src(cinfo, data, (unsigned long)size);
    jpeg_read_header(cinfo, TRUE);

    int64_t w = cinfo->image_width, h = cinfo->image_height;
    if (w <= 0 || h <= 0 || (limits->max_pixels > 0 && w * h > limits->max_pixels)) {
        snprintf(d->err.message, sizeof d->err.message, "image of %lldx%lld pixels exceeds the limit of %lld pixels",
                 (long long)w, (long long)h, (long long)limits->max_pixels);
        longjmp(d->err.escape, 2);
    }
    info->full_width = (int32_t)w;
    info->full_height = (int32_t)h;
    d->cmyk = cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK;
    if (d->cmyk) cinfo->out_color_space = JCS_CMYK;  /* libjpeg converts YCCK to CMYK; RGB is ours */
    else if (cinfo->num_components == 1) cinfo->out_color_space = JCS_GRAYSCALE;
    else cinfo->out_color_space = JCS_RGB;
    /* DCT scaling: the smallest of 1/8, 1/4, 1/2 that keeps the requested size. */
    cinfo->scale_num = 1;
    cinfo->scale_denom = 1;
    if (limits->min_width > 0 && limits->min_height > 0) {
        for (int denom = 8; denom >= 2; denom /= 2) {
            if ((w + denom - 1) / denom >= limits->min_width && (h + denom - 1) / denom >= limits->min_height) {
                cinfo->scale_denom = (unsigned)denom;
                break;
            }
        }
    }
    cinfo->dct_method = JDCT_ISLOW;
    jpeg_calc_output_dimensions(cinfo);
    size_t out_bytes = (size_t)cinfo->output_width * cinfo->output_height * (size_t)cinfo->output_components;
    if (limits->max_bytes > 0 && (int64_t)out_bytes > limits->max_bytes) {
        snprintf(d->err.message, sizeof d->err.message, "the decoded image of %ux%u needs %zu bytes, more than the memory limit of %lld bytes",
                 (unsigned)cinfo->output_width, (unsigned)cinfo->output_height, out_bytes, (long long)limits->max_bytes);
        d->err.over_limit = 1;
        longjmp(d->err.escape, 2);
    }
    /* libjpeg's own buffers share the limit with the output the caller will allocate. */
    if (limits->max_bytes > 0) cinfo->mem->max_memory_to_use = (long)(limits->max_bytes - (int64_t)out_bytes);
    jpeg_start_decompress(cinfo);
    info->width = (int32_t)cinfo->output_width;
    info->height = (int32_t)cinfo->output_height;
    info->channels = d->cmyk ? 3 : cinfo->output_components;
    info->buffer_bytes = (size_t)cinfo->output_width * cinfo->output_height * (size_t)cinfo->output_components;
    return d;
}

int cnnjpeg_read(cnnjpeg_decoder *d, uint8_t *out, cnnjpeg_image *info, char *error, size_t error_size) {
    if (!d) return 1;
    j_decompress_ptr cinfo = &d->cinfo;
    if (setjmp(d->err.escape)) {
        copy_message(error, error_size, "", d->err.message);
        info->over_limit = d->err.over_limit;
        jpeg_destroy_decompress(cinfo);
        free(d);
        return 1;
    }
    size_t ow = cinfo->output_width, oh = cinfo->output_height;
    size_t row_bytes = ow * (size_t)cinfo->output_components;
    while (cinfo->output_scanline < cinfo->output_height) {
        JSAMPROW rows[4];
        JDIMENSION n = cinfo->rec_outbuf_height > 4 ? 4 : cinfo->rec_outbuf_height;
        for (JDIMENSION i = 0; i < n; i++) {
            size_t line = cinfo->output_scanline + i < oh ? cinfo->output_scanline + i : oh - 1;
            rows[i] = out + line * row_bytes;
        }
        if (jpeg_read_scanlines(cinfo, rows, n) == 0) break;
    }
    info->scans = cinfo->input_scan_number;
    jpeg_finish_decompress(cinfo);
    if (d->cmyk) {
        /* Adobe writes CMYK inverted (0 = full ink); plain CMYK is not. */
        int inverted = cinfo->saw_Adobe_marker;
        for (size_t p = 0; p < ow * oh; p++) {
            const uint8_t *s = out + p * 4;
            int c = s[0], m = s[1], y = s[2], k = s[3];
            if (!inverted) { c = 255 - c; m = 255 - m; y = 255 - y; k = 255 - k; }
            uint8_t *t = out + p * 3;  /* in place: pixel p is read whole before it is written, and
                                        * writes (up to 3p+2) never reach later reads (from 4p+4) */
            t[0] = (uint8_t)((c * k + 127) / 255);
            t[1] = (uint8_t)((m * k + 127) / 255);
            t[2] = (uint8_t)((y * k + 127) / 255);
        }
    }
    info->warnings = d->err.warnings;
    if (d->err.warnings) copy_message(error, error_size, "", d->err.message);
    jpeg_destroy_decompress(cinfo);
    free(d);
    return 0;
}

void cnnjpeg_close(cnnjpeg_decoder *d) {
    if (!d) return;
    jpeg_destroy_decompress(&d->cinfo);
    free(d);
}

int cnnjpeg_encode(const uint8_t *pixels, int32_t width, int32_t height, int32_t channels,
                    int32_t quality, int32_t progressive, int32_t restart_rows, int32_t subsampling,
                    int32_t ycck, uint8_t **out, size_t *out_size, char *error, size_t error_size) {
    struct jpeg_compress_struct cinfo;
    error_manager err;
    unsigned char *volatile buffer = NULL;
    unsigned long buffer_size = 0;
    *out = NULL;
    *out_size = 0;
    if (!pixels || width <= 0 || height <= 0 || (channels != 1 && channels != 3 && channels != 4)) {
        copy_message(error, error_size, "", "invalid image to encode");
        return 1;
    }
    init_errors(&err, (j_common_ptr)&cinfo, 1, 0);
    if (setjmp(err.escape)) {
        jpeg_destroy_compress(&cinfo);
        free(buffer);
        copy_message(error, error_size, "", err.message);
        return 1;
    }
    jpeg_create_compress(&cinfo);
    unsigned char *dest = NULL;
    jpeg_mem_dest(&cinfo, &dest, &buffer_size);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = channels;
    cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : channels == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&cinfo);
    if (channels == 4) jpeg_set_colorspace(&cinfo, ycck ? JCS_YCCK : JCS_CMYK);
    jpeg_set_quality(&cinfo, quality, TRUE);
    if (channels == 3) {
        int h = subsampling == 444 ? 1 : 2, v = subsampling == 420 ? 2 : 1;
        cinfo.comp_info[0].h_samp_factor = h;
        cinfo.comp_info[0].v_samp_factor = v;
    }
    if (progressive) jpeg_simple_progression(&cinfo);
    if (restart_rows > 0) cinfo.restart_in_rows = restart_rows;
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)cinfo.next_scanline * (size_t)width * (size_t)channels);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    buffer = dest;
    *out = buffer;
    *out_size = buffer_size;
    jpeg_destroy_compress(&cinfo);
    return 0;
}

void cnnjpeg_free(void *p) { free(p); }
