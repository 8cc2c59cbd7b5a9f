/*
 * cascadeseg.h: the C API of CascadeSeg, two-stage 3D medical image segmentation on OpenCL.
 *
 * Link with -lcseg (libcseg.so, built by `swift build`: .build/debug or .build/release).
 *
 * Conventions
 *   - Every function that can fail returns an int status: CSEG_OK (0) or a CSEG_ERROR_* code.
 *     cseg_last_error() then gives a one-line message, kept per thread until that thread's next
 *     failing call.
 *   - Handles (cseg_model, cseg_options) are opaque; free each with its _free function. Freeing
 *     NULL does nothing.
 *   - Output buffers belong to the caller. Functions writing text take (buffer, capacity,
 *     &length): length receives the text's length without the terminating NUL; pass
 *     buffer = NULL, capacity = 0 to ask for it, then call again with capacity >= length + 1.
 *     A buffer that is too small gives CSEG_ERROR_BUFFER_TOO_SMALL and is left untouched.
 *   - Voxels are float32, x fastest: voxel (x, y, z) is element x + nx * (y + ny * z), as in
 *     NIfTI files. Labels come back as int32 in the same order.
 *   - Thread safety: every function may be called from any thread. One model may be used from
 *     several threads; its segmentations then run one at a time. Different models run
 *     concurrently, also on one device.
 */
#ifndef CASCADESEG_H
#define CASCADESEG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the library this header describes; cseg_version() gives the loaded library's. */
#define CSEG_VERSION "0.1.0"

/* Status codes. */
#define CSEG_OK 0
#define CSEG_ERROR_ARGUMENT 1          /* a NULL pointer or an out-of-range value */
#define CSEG_ERROR_MODEL 2             /* a malformed, truncated or unsupported model file */
#define CSEG_ERROR_INPUT 3             /* an image the model cannot take (NaN voxels, 2-D, bad spacing, corrupt file) */
#define CSEG_ERROR_DEVICE 4            /* no OpenCL platform, or no device with that index */
#define CSEG_ERROR_OPENCL 5            /* an OpenCL call or kernel build failed */
#define CSEG_ERROR_BUDGET 6            /* the memory budget is too small for the smallest tiling */
#define CSEG_ERROR_IO 7                /* reading or writing a file failed */
#define CSEG_ERROR_CANCELLED 8         /* the progress callback asked to stop */
#define CSEG_ERROR_BUFFER_TOO_SMALL 9  /* a caller buffer cannot hold the output */
#define CSEG_ERROR_INTERNAL 10         /* anything else */

/* Segmentation modes (cseg_options_set_mode). */
#define CSEG_MODE_AUTO 0          /* the cascade if the model has one, else its single stage */
#define CSEG_MODE_CASCADE 1       /* stage 1 on a coarse copy, stage 2 on the regions of interest */
#define CSEG_MODE_SINGLE_STAGE 2  /* the stage-2 network over the whole image */
#define CSEG_MODE_STAGE1_ONLY 3   /* the stage-1 network alone, labels resampled to the image */

typedef struct cseg_model cseg_model;
typedef struct cseg_options cseg_options;

/* Called with one line per step (stage 1, each stage-2 region) on the segmenting thread.
 * Return 0 to go on, non-zero to cancel: the segmentation stops before its next step and
 * returns CSEG_ERROR_CANCELLED. */
typedef int (*cseg_progress_fn)(const char *message, void *user_data);

/* The library's version, e.g. "0.1.0" (static storage). */
const char *cseg_version(void);

/* The message of the calling thread's last failure, or "" (valid until that thread's next call
 * that fails). */
const char *cseg_last_error(void);

/* Devices: the number of OpenCL devices, and the name of device `index` (0-based, the order of
 * `cascadeseg devices`). */
int cseg_device_count(int *count);
int cseg_device_name(int index, char *buffer, size_t capacity, size_t *length);

/* Models: load a .cseg file, or one held in memory (the bytes are copied). Devices are
 * attached when a segmentation first uses them. */
int cseg_model_load(const char *path, cseg_model **model);
int cseg_model_load_memory(const void *bytes, size_t size, cseg_model **model);
/* Frees the model, its networks and the device memory they hold. */
void cseg_model_free(cseg_model *model);

/* Options (a NULL options pointer means the defaults: automatic mode, priors on, no memory
 * budget, the default device, no progress callback). */
int cseg_options_create(cseg_options **options);
void cseg_options_free(cseg_options *options);
/* The most device memory the segmentation may hold at once, in bytes; 0: no limit. Networks
 * that do not fit whole run in tiles with the same labels. */
int cseg_options_set_memory_budget(cseg_options *options, int64_t bytes);
/* Use the model's prior boxes for labels stage 1 misses (1, the default) or not (0). */
int cseg_options_set_use_priors(cseg_options *options, int use_priors);
/* The device by index; -1 (the default): the first GPU, else the first device. */
int cseg_options_set_device(cseg_options *options, int device_index);
/* One of CSEG_MODE_*. */
int cseg_options_set_mode(cseg_options *options, int mode);
int cseg_options_set_progress(cseg_options *options, cseg_progress_fn callback, void *user_data);

/* Segments a volume in memory into `labels` (capacity: dims[0] * dims[1] * dims[2] values or
 * more). dims: nx, ny, nz. spacing: mm along x, y, z (used when affine is NULL). affine: the
 * voxel-to-world matrix in mm, 16 doubles, row-major (the NIfTI sform), or NULL. */
int cseg_segment_volume(cseg_model *model, const float *voxels, const int64_t dims[3], const double spacing[3],
                        const double affine[16], const cseg_options *options, int32_t *labels, size_t labels_capacity);

/* Segments the NIfTI file `input_path` (.nii or .nii.gz) and writes the label map to
 * `output_path` with exactly the input's geometry, atomically (a complete file or none). */
int cseg_segment_file(cseg_model *model, const char *input_path, const char *output_path, const cseg_options *options);

/* The JSON report (the keys of `cascadeseg segment --report`) of the calling thread's last
 * successful segmentation. */
int cseg_last_report(char *buffer, size_t capacity, size_t *length);

#ifdef __cplusplus
}
#endif

#endif /* CASCADESEG_H */
