// nifti2_io.h includes <znzlib.h>; forward it to where Debian installs it.
#include <nifti/znzlib.h>
