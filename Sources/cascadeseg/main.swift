// The `cascadeseg` command-line tool.
import CascadeSeg
import Foundation

let usage = """
usage: cascadeseg COMMAND [options]

commands:
  devices                         list OpenCL devices
  info MODEL.cseg                 metadata, graphs, parameters and sizes of a model
  run MODEL.cseg --input X.npy --output Y.npy [--stage 1|2] [--memory-budget BYTES] [--device D] [--profile]
                                  run one network on a float32 .npy tensor (1xCxDxHxW or CxDxHxW)
                                  or a NIfTI volume (z-scored, zero-padded to the network's multiple)
  segment MODEL.cseg INPUT.nii.gz -o OUTPUT.nii.gz [--single-stage | --stage1-only] [--no-prior]
          [--memory-budget BYTES] [--overlay O.png] [--report R.json] [--device D] [--quiet]
                                  the two-stage cascade (or one network over the whole image with a
                                  mode flag or a one-stage model); writes labels with the input's geometry
  segment MODEL.cseg --input-dir DIR --output-dir DIR [--shard I/N] [--devices D0,D1,...] [--summary S.json]
          [mode flags, --memory-budget BYTES, --quiet as above]
                                  every .nii/.nii.gz of a folder, the model loaded once; existing outputs
                                  skipped; exit status = failed cases (docs/SCALING.md)
  bench kernels [--device D] [--quick]
                                  GFLOP/s of the convolution kernels against the device's FMA peak
  bench unet [--base 32] [--size N|DxHxW | --input X.nii.gz] [--memory-budget BYTES] [--profile]
                                  time and peak memory of a whole nnU-Net-like U-Net (random weights)
  bench cascade MODEL.cseg IMAGE.nii.gz [--memory-budget BYTES] [--reference LABELS.nii.gz] [--json OUT]
                                  cascade against single-stage on one image: time, peak memory, Dice
  tune [--device D]               find the fastest convolution block sizes and cache them
  convert --onnx NET.onnx -o NET.cseg [--weights float16] [--name N] [--labels 0=background,1=...]
                                  convert an ONNX network (exported from PyTorch) to a model file
  evaluate --pred P.nii.gz --ref R.nii.gz [--labels 1,2,...] [--json OUT.json]
                                  Dice, IoU, HD95 (mm) and volumes per label against a reference

--device picks a device by index, `cpu`, `gpu` or a name substring (see `cascadeseg devices`).
"""

func standardError(_ text: String) {
    FileHandle.standardError.write((text + "\n").data(using: .utf8)!)
}

let arguments = Array(CommandLine.arguments.dropFirst())
guard let command = arguments.first, !["-h", "--help", "help"].contains(command) else {
    print(usage)
    exit(arguments.isEmpty ? 2 : 0)
}
do {
    let rest = Array(arguments.dropFirst())
    switch command {
    case "devices": try DevicesCommand.run(rest)
    case "info": try InfoCommand.run(rest)
    case "run": try RunCommand.run(rest)
    case "segment": try SegmentCommand.run(rest)
    case "bench": try BenchCommand.run(rest)
    case "tune": try TuneCommand.run(rest)
    case "convert": try ConvertCommand.run(rest)
    case "evaluate": try EvaluateCommand.run(rest)
    default: throw CascadeSegError.usage("unknown command '\(command)'\n\n\(usage)")
    }
} catch let error as CascadeSegError {
    if case .usage = error { standardError("cascadeseg: \(error)"); exit(2) }
    standardError("cascadeseg: error: \(error)")
    exit(1)
} catch {
    standardError("cascadeseg: error: \(error)")
    exit(1)
}
