// Forwards libnifti2 (reads and writes NIfTI-1 and NIfTI-2) into Swift.
#ifndef CNIFTI_H
#define CNIFTI_H
#include <nifti/nifti2_io.h>
#endif
