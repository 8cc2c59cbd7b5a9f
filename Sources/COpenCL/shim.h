// Target OpenCL 1.2: every vendor implements it, and it silences deprecation warnings.
#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>
