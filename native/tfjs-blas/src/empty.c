/* placeholder when the compiler cannot build the AVX-512 kernels */
typedef int nw_empty_translation_unit;
