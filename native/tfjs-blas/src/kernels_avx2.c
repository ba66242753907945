/* Kernel table "avx2": kern.h compiled with this file's ISA flags (binding.gyp). */
#define SFX(n) n##_avx2
#define SFX_NAME "avx2"
#include "kern.h"
