// Example TensorFlow Lite Micro application for a tinyprec firmware bundle.
//
// It loads the model from model_data.cc, registers exactly the ops in op_resolver.h, allocates
// the tensor arena sized by model_settings.h, checks the golden vectors (the outputs TFLM's
// reference kernels gave on the host must come out bit for bit), then classifies one raw input
// with the preprocessing from model_settings.h. See README.md for building it in a firmware project.
//
// Built with -DTINYPREC_MCU_HARNESS (as `tinyprec mcu` does, for QEMU's Cortex-M boards) it also
// counts instructions per inference and per op and streams test samples in and outputs back over
// Arm semihosting (tinyprec_harness.h); without it, nothing of that is compiled.

#include <cstdint>
#include <cstring>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/schema/schema_generated.h"

#include "golden_vectors.h"
#include "model_data.h"
#include "model_settings.h"
#include "op_resolver.h"

#ifdef TINYPREC_MCU_HARNESS
#include "tinyprec_harness.h"
#endif

namespace {

constexpr uint32_t kFlatbufferSchemaVersion = 3;  // the .tflite schema version TFLM reads

// The arena holds every activation, the interpreter's bookkeeping and per-op data.
alignas(16) uint8_t tensor_arena[kTensorArenaSize];

// Runs every golden input and counts output elements that differ from the expected ones.
int CheckGoldenVectors(tflite::MicroInterpreter& interpreter) {
  TfLiteTensor* input = interpreter.input(0);
  TfLiteTensor* output = interpreter.output(0);
  int mismatches = 0;
  for (int i = 0; i < kGoldenCount; ++i) {
    std::memcpy(input->data.raw, kGoldenInputs[i], sizeof(kGoldenInputs[i]));
    if (interpreter.Invoke() != kTfLiteOk) {
      MicroPrintf("golden vector %d: Invoke failed", i);
      return -1;
    }
    const ModelOutputType* got = reinterpret_cast<const ModelOutputType*>(output->data.raw);
    for (int j = 0; j < kGoldenOutputElements; ++j) {
      if (got[j] != kGoldenOutputs[i][j]) ++mismatches;
    }
  }
  return mismatches;
}

// Quantizes a raw (un-normalized) NHWC input, runs the model and returns the top class.
int Classify(tflite::MicroInterpreter& interpreter, const float* raw) {
  TfLiteTensor* input = interpreter.input(0);
  if (kInputIsQuantized) {
    QuantizeInputBuffer(raw, reinterpret_cast<int8_t*>(input->data.raw));
  } else {
    float* x = reinterpret_cast<float*>(input->data.raw);
    for (int i = 0; i < kInputElements; ++i) x[i] = NormalizeInput(raw[i], i % kInputShape[kInputDims - 1]);
  }
  if (interpreter.Invoke() != kTfLiteOk) return -1;
  const ModelOutputType* scores = reinterpret_cast<const ModelOutputType*>(interpreter.output(0)->data.raw);
  int best = 0;
  for (int k = 1; k < kOutputElements; ++k) {
    if (scores[k] > scores[best]) best = k;
  }
  return best;
}

}  // namespace

int main() {
#ifdef TINYPREC_MCU_HARNESS
  tinyprec_harness::Init();
#endif
  const tflite::Model* model = tflite::GetModel(g_model_data);
  if (model->version() != kFlatbufferSchemaVersion) {
    MicroPrintf("model schema version %d, expected %d", static_cast<int>(model->version()),
                static_cast<int>(kFlatbufferSchemaVersion));
    return 1;
  }
  static ModelOpResolver resolver;
  if (RegisterModelOps(resolver) != kTfLiteOk) {
    MicroPrintf("registering the model's ops failed");
    return 1;
  }
#ifdef TINYPREC_MCU_HARNESS
  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, kTensorArenaSize, nullptr,
                                              &tinyprec_harness::Profiler());
#else
  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, kTensorArenaSize);
#endif
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("AllocateTensors failed with a %d-byte arena", kTensorArenaSize);
    return 1;
  }
  MicroPrintf("model: %u bytes; arena: %u of %d bytes used", g_model_data_len,
              static_cast<unsigned>(interpreter.arena_used_bytes()), kTensorArenaSize);
  if (interpreter.input(0)->bytes != sizeof(ModelInputType) * kInputElements ||
      interpreter.output(0)->bytes != sizeof(ModelOutputType) * kOutputElements) {
    MicroPrintf("model_settings.h does not describe this model's input/output");
    return 1;
  }

  const int mismatches = CheckGoldenVectors(interpreter);
  MicroPrintf("golden vectors: %d checked, %d output elements differ -> %s", kGoldenCount, mismatches,
              mismatches == 0 ? "PASS" : "FAIL");
#ifdef TINYPREC_MCU_HARNESS
  tinyprec_harness::Say("arena %u %d", static_cast<unsigned>(interpreter.arena_used_bytes()), kTensorArenaSize);
  tinyprec_harness::Say("golden %d %d", kGoldenCount, mismatches);
  if (kGoldenCount > 0) tinyprec_harness::ProfileOnce(interpreter, kGoldenInputs[0], sizeof(kGoldenInputs[0]));
  const int streamed = tinyprec_harness::Stream(interpreter, model, resolver);
  tinyprec_harness::Say("samples %d", streamed);
  if (streamed < 0) return 4;
#endif

  // A raw input equal to the per-channel mean normalizes to zero: a neutral smoke test. Replace it
  // with a sensor frame laid out NHWC (kInputElements floats).
  static float raw[kInputElements];
  for (int i = 0; i < kInputElements; ++i) raw[i] = kInputMean[kNormChannels == 1 ? 0 : i % kNormChannels];
  const int top = Classify(interpreter, raw);
  if (top >= 0 && top < kCategoryCount) {
    MicroPrintf("neutral input -> class %d (%s)", top, kCategoryLabels[top]);
  } else if (top >= 0) {
    MicroPrintf("neutral input -> output element %d is the largest", top);
  }
#ifdef TINYPREC_MCU_HARNESS
  tinyprec_harness::Finish();
#endif
  return mismatches == 0 ? 0 : 2;
}
