/* Kernel table "avx512" (AVX-512F/BW/VL + VNNI): kern.h compiled with this file's ISA flags. Only built when
 * the compiler accepts -mavx512vnni (binding.gyp defines NW_HAVE_AVX512 then). */
#define SFX(n) n##_avx512
#define SFX_NAME "avx512"
#include "kern.h"
