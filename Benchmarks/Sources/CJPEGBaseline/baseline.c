#include "baseline.h"
#include <setjmp.h>
#include <stdio.h>
#include <jpeglib.h>

typedef struct { struct jpeg_error_mgr base; jmp_buf escape; } error_manager;
static void on_error(j_common_ptr cinfo) { longjmp(((error_manager *)cinfo->err)->escape, 1); }

int baseline_decode(const uint8_t *data, size_t size, uint8_t *out, size_t capacity) {
    struct jpeg_decompress_struct cinfo;
    error_manager err;
    cinfo.err = jpeg_std_error(&err.base);
    err.base.error_exit = on_error;
    if (setjmp(err.escape)) { jpeg_destroy_decompress(&cinfo); return 1; }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    cinfo.dct_method = JDCT_ISLOW;
    jpeg_start_decompress(&cinfo);
    size_t row = (size_t)cinfo.output_width * (size_t)cinfo.output_components;
    if (row * cinfo.output_height > capacity) { jpeg_destroy_decompress(&cinfo); return 2; }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW r = out + (size_t)cinfo.output_scanline * row;
        jpeg_read_scanlines(&cinfo, &r, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    return 0;
}
