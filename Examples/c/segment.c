/*
 * Segments a NIfTI image with a CascadeSeg model through the C API and writes the label map.
 *
 *   cc -Iinclude Examples/c/segment.c -L.build/debug -lcseg -Wl,-rpath,$PWD/.build/debug -o segment
 *   ./segment MODEL.cseg INPUT.nii.gz OUTPUT.nii.gz [--memory-budget BYTES] [--device INDEX] [--report R.json]
 *
 * `make example` builds and runs it on the test fixture.
 */
#include <cascadeseg.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int progress(const char *message, void *user_data) {
    (void)user_data;
    fprintf(stderr, "  %s\n", message);
    return 0; /* non-zero would cancel */
}

static int check(int status, const char *what) {
    if (status != CSEG_OK) fprintf(stderr, "segment: %s failed (status %d): %s\n", what, status, cseg_last_error());
    return status;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.cseg INPUT.nii.gz OUTPUT.nii.gz [--memory-budget BYTES] [--device INDEX] [--report R.json]\n", argv[0]);
        return 2;
    }
    long long budget = 0;
    int device = -1;
    const char *report_path = NULL;
    for (int i = 4; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--memory-budget") == 0) budget = atoll(argv[i + 1]);
        else if (strcmp(argv[i], "--device") == 0) device = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--report") == 0) report_path = argv[i + 1];
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }

    printf("CascadeSeg %s (header %s)\n", cseg_version(), CSEG_VERSION);
    int count = 0;
    if (check(cseg_device_count(&count), "listing devices")) return 1;
    for (int i = 0; i < count; i++) {
        size_t length = 0;
        if (check(cseg_device_name(i, NULL, 0, &length), "asking a device name's length")) return 1;
        char *name = malloc(length + 1);
        if (!name || check(cseg_device_name(i, name, length + 1, &length), "reading a device name")) { free(name); return 1; }
        printf("device %d: %s\n", i, name);
        free(name);
    }

    cseg_model *model = NULL;
    cseg_options *options = NULL;
    int status = check(cseg_model_load(argv[1], &model), "loading the model");
    if (!status) status = check(cseg_options_create(&options), "creating options");
    if (!status) status = check(cseg_options_set_memory_budget(options, budget), "setting the memory budget");
    if (!status) status = check(cseg_options_set_device(options, device), "choosing the device");
    if (!status) status = check(cseg_options_set_progress(options, progress, NULL), "setting the progress callback");
    if (!status) status = check(cseg_segment_file(model, argv[2], argv[3], options), "segmenting");
    if (!status) {
        size_t length = 0;
        char *report = NULL;
        status = check(cseg_last_report(NULL, 0, &length), "asking the report's length");
        if (!status && (report = malloc(length + 1)) != NULL) {
            status = check(cseg_last_report(report, length + 1, &length), "reading the report");
            if (!status && report_path) {
                FILE *f = fopen(report_path, "w");
                if (f) { fwrite(report, 1, length, f); fclose(f); } else { perror(report_path); status = 1; }
            }
        }
        free(report);
        if (!status) printf("wrote %s (report: %zu bytes of JSON)\n", argv[3], length);
    }
    cseg_options_free(options);
    cseg_model_free(model);
    return status == CSEG_OK ? 0 : 1;
}
