#include <stddef.h>
#include <stdint.h>
/* Decodes a JPEG from memory with plain libjpeg into out (width*height*components bytes, which the
 * caller provides); returns 0 on success. The baseline for decode throughput. */
int baseline_decode(const uint8_t *data, size_t size, uint8_t *out, size_t capacity);
