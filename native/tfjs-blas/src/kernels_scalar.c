/* Kernel table "scalar": kern.h compiled with this file's ISA flags (binding.gyp). */
#define SFX(n) n##_scalar
#define SFX_NAME "scalar"
#include "kern.h"
