// Intentionally empty: the module exists to expose libnifti2 with its header path fixed.
#include "CNifti.h"
