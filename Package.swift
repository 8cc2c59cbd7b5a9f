// swift-tools-version:6.0
// CascadeSeg: a two-stage 3D segmentation inference engine on hand-written OpenCL kernels.
import PackageDescription

let package = Package(
    name: "CascadeSeg",
    products: [
        .library(name: "CascadeSeg", targets: ["CascadeSeg"]),
        .executable(name: "cascadeseg", targets: ["cascadeseg"]),
        // The C API (include/cascadeseg.h): libcseg.so / libcseg.dylib.
        .library(name: "cseg", type: .dynamic, targets: ["CascadeSegC"]),
    ],
    targets: [
        // System libraries, each behind its own small module.
        .systemLibrary(name: "COpenCL", path: "Sources/COpenCL", pkgConfig: "OpenCL",
                       providers: [.apt(["ocl-icd-opencl-dev", "opencl-headers", "pocl-opencl-icd"])]),
        .systemLibrary(name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        // libnifti2's header includes <znzlib.h> with angle brackets, which a plain
        // system-library module cannot satisfy; a tiny C target with a forwarding header can.
        .target(name: "CNifti", path: "Sources/CNifti",
                linkerSettings: [.linkedLibrary("nifti2"), .linkedLibrary("znz"),
                                 .linkedLibrary("z"), .linkedLibrary("m")]),

        // Turns Kernels/*.cl into a Swift source at build time, so binaries carry their kernels.
        .executableTarget(name: "KernelEmbedder", path: "Sources/KernelEmbedder"),
        .plugin(name: "EmbedKernels", capability: .buildTool(),
                dependencies: ["KernelEmbedder"], path: "Plugins/EmbedKernels"),

        .target(name: "CascadeSeg",
                dependencies: ["COpenCL", "CZstd", "CZlib", "CNifti"],
                path: "Sources/CascadeSeg",
                plugins: ["EmbedKernels"]),
        .executableTarget(name: "cascadeseg", dependencies: ["CascadeSeg"], path: "Sources/cascadeseg"),
        // The C API's implementation: `@_cdecl` functions over the Swift API, declared in include/cascadeseg.h.
        .target(name: "CascadeSegC", dependencies: ["CascadeSeg"], path: "Sources/CascadeSegC"),
        // libFuzzer target for the model reader: `make fuzz`. A plain build gives a seed/replay tool.
        .executableTarget(name: "FuzzModelReader", dependencies: ["CascadeSeg"], path: "Sources/FuzzModelReader"),
        .testTarget(name: "CascadeSegTests", dependencies: ["CascadeSeg", "CascadeSegC"],
                    path: "Tests/CascadeSegTests",
                    resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v5]
)
